//! Checking the annotated function and emitting its registration.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::Parser as _;
use syn::spanned::Spanned;
use syn::{ItemFn, LitStr};

use crate::args::{self, Accepts, Args, Parser};
use crate::signature::{self, ParamKind, Ret};

/// Which attribute is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Macro {
    Event,
    Connect,
    Disconnect,
}

impl Macro {
    fn attr(self) -> &'static str {
        match self {
            Macro::Event => "#[ws_event]",
            Macro::Connect => "#[ws_connect]",
            Macro::Disconnect => "#[ws_disconnect]",
        }
    }
}

/// Expand one attribute. On any error the user's item is emitted unchanged next to the
/// `compile_error!`s, so the rest of the crate still type-checks.
pub(crate) fn expand(which: Macro, attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = not_a_fn(which, &item).to_compile_error();
            return quote! { #item #err };
        }
    };
    let mut errors = Vec::new();
    let args = match (Parser(Accepts {
        name: which == Macro::Event,
    }))
    .parse2(attr)
    {
        Ok(a) => a,
        Err(e) => {
            errors.push(e);
            Args {
                namespace: None,
                name: None,
                krate: None,
            }
        }
    };
    let registration = check_and_emit(which, &args, &func, &mut errors);
    if let Some(first) = errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        let err = first.to_compile_error();
        return quote! { #func #err };
    }
    quote! {
        #func
        #registration
    }
}

/// The error for an attribute placed on something other than a function: under the item's
/// keyword (`struct`, `impl`, ...), naming what it is.
fn not_a_fn(which: Macro, item: &TokenStream) -> syn::Error {
    let what = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Struct(i)) => Some(("a struct", i.struct_token.span)),
        Ok(syn::Item::Enum(i)) => Some(("an enum", i.enum_token.span)),
        Ok(syn::Item::Union(i)) => Some(("a union", i.union_token.span)),
        Ok(syn::Item::Impl(i)) => Some(("an impl block", i.impl_token.span)),
        Ok(syn::Item::Trait(i)) => Some(("a trait", i.trait_token.span)),
        Ok(syn::Item::Mod(i)) => Some(("a module", i.mod_token.span)),
        Ok(syn::Item::Const(i)) => Some(("a const", i.const_token.span)),
        Ok(syn::Item::Static(i)) => Some(("a static", i.static_token.span)),
        Ok(syn::Item::Type(i)) => Some(("a type alias", i.type_token.span)),
        Ok(syn::Item::Use(i)) => Some(("a `use`", i.use_token.span)),
        Ok(syn::Item::ForeignMod(i)) => Some(("an extern block", i.abi.extern_token.span)),
        Ok(syn::Item::Macro(i)) => Some(("a macro", i.mac.path.span())),
        _ => None,
    };
    let attr = which.attr();
    match what {
        Some((what, span)) => syn::Error::new(
            span,
            format!("{attr} applies to an `async fn`, not to {what}"),
        ),
        None => syn::Error::new(
            item.clone()
                .into_iter()
                .next()
                .map_or_else(Span::call_site, |t| t.span()),
            format!("{attr} applies to an `async fn`"),
        ),
    }
}

/// A binding name for generated code that no user item can capture: with the span of the
/// macro (mixed-site hygiene: invisible to the user's code) and never equal to the annotated
/// function's name, which the generated code calls. The binding is also shadowed by a local
/// `fn` of the same name (see [`shadows`]), so a user's `const` or unit struct with that name
/// cannot turn it into a constant pattern.
fn binding(base: &str, taken: &str) -> syn::Ident {
    let name = if base == taken {
        format!("{base}_")
    } else {
        base.to_owned()
    };
    syn::Ident::new(&name, Span::mixed_site())
}

/// Local functions named like the generated bindings: inside the generated block they shadow
/// any `const`, `static` or unit struct of the user's module with the same name, so each
/// binding pattern stays a fresh binding. They live in a block, not in the user's module.
fn shadows(names: &[&syn::Ident]) -> TokenStream {
    quote! {
        #(
            #[allow(dead_code, non_snake_case, clippy::all)]
            fn #names() {}
        )*
    }
}

fn check_and_emit(
    which: Macro,
    args: &Args,
    func: &ItemFn,
    errors: &mut Vec<syn::Error>,
) -> TokenStream {
    let sig = &func.sig;
    let attr = which.attr();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span(),
            format!("{attr} functions must be `async fn`: add `async`"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            format!("{attr} functions cannot be generic: use concrete types (each registration is one concrete handler)"),
        ));
    }
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new(
            c.span(),
            format!("{attr} functions cannot be `const`"),
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new(
            v.span(),
            format!("{attr} functions cannot be variadic"),
        ));
    }

    let params = signature::params(sig, errors);
    let mut payload = None;
    let mut reason_seen = false;
    for p in &params {
        match (which, p.kind) {
            (_, ParamKind::Extractor) => {}
            (Macro::Event, _) => {
                if payload.is_some() {
                    errors.push(syn::Error::new_spanned(
                        &p.ty,
                        "extra payload parameter: a handler takes one payload (besides `Socket`, `Server` and `State<T>`); put the fields in one struct",
                    ));
                } else {
                    if let Some(e) = signature::borrowed(&p.ty) {
                        errors.push(e);
                    }
                    payload = Some(p.ty.clone());
                }
            }
            (Macro::Disconnect, ParamKind::Reason) if !reason_seen => reason_seen = true,
            (Macro::Disconnect, _) => errors.push(syn::Error::new_spanned(
                &p.ty,
                "disconnect hooks take `Socket`, `Server`, `State<T>` and at most one `DisconnectReason`",
            )),
            (Macro::Connect, _) => errors.push(syn::Error::new_spanned(
                &p.ty,
                "connect hooks take only `Socket`, `Server` and `State<T>` parameters: read the client's data from `socket.query(..)` or `socket.request()`",
            )),
        }
    }
    if which == Macro::Event
        && payload.is_none()
        && !params.iter().any(|p| p.kind != ParamKind::Extractor)
    {
        errors.push(syn::Error::new(
            sig.ident.span(),
            "missing payload parameter: add one for the event's `data`, e.g. `msg: ChatMessage` (use `_: ()` for events without data)",
        ));
    }

    let ret = signature::ret(sig);
    if which == Macro::Disconnect {
        if let Ret::Result(t) | Ret::Plain(t) = &ret {
            errors.push(syn::Error::new_spanned(
                t,
                "disconnect hooks return nothing: remove the return type",
            ));
        }
    }

    let namespace = match &args.namespace {
        Some(lit) => {
            if let Err(e) = args::check_name(&lit.value(), lit.span(), "namespace") {
                errors.push(e);
            }
            lit.clone()
        }
        None => LitStr::new("/", Span::call_site()),
    };
    let name = match &args.name {
        Some(lit) => lit.clone(),
        None => LitStr::new(&sig.ident.unraw().to_string(), sig.ident.span()),
    };
    if which == Macro::Event {
        if let Err(e) = args::check_name(&name.value(), name.span(), "event") {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        return TokenStream::new();
    }

    let krate: TokenStream = match &args.krate {
        Some(p) => p.to_token_stream(),
        None => quote!(::wsu),
    };
    let fn_name = &sig.ident;
    let taken = fn_name.unraw().to_string();
    let socket = binding("__wsu_socket", &taken);
    let data = binding("__wsu_data", &taken);
    let reason = binding("__wsu_reason", &taken);
    let value = binding("__wsu_value", &taken);
    let error = binding("__wsu_error", &taken);

    let fail = match which {
        Macro::Event => quote!(#krate::__private::ready_err(&#socket, #error)),
        Macro::Connect => quote!(#krate::__private::connect_err(&#socket, #error)),
        Macro::Disconnect => quote!(#krate::__private::disconnect_skip(&#socket, #error)),
    };
    let mut lets = Vec::new();
    let mut call_args = Vec::new();
    let mut states = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let var = binding(&format!("__wsu_arg{i}"), &taken);
        let ty = &p.ty;
        match p.kind {
            ParamKind::Extractor => {
                let from = quote_spanned!(ty.span()=> <#ty as #krate::FromSocket>::from_socket);
                lets.push(quote! {
                    let #var = match #from(&#socket) {
                        ::core::result::Result::Ok(#value) => #value,
                        ::core::result::Result::Err(#error) => return #fail,
                    };
                });
                if let Some(state) = &p.state {
                    states.push(
                        quote_spanned!(state.span()=> || #krate::__private::state_type::<#state>()),
                    );
                }
            }
            ParamKind::Reason if which == Macro::Disconnect => {
                lets.push(quote! { let #var = #reason; });
            }
            _ => {
                let decode = quote_spanned!(ty.span()=> #krate::__private::decode::<#ty>);
                lets.push(quote! {
                    let #var = match #decode(#data) {
                        ::core::result::Result::Ok(#value) => #value,
                        ::core::result::Result::Err(#error) => return #fail,
                    };
                });
            }
        }
        call_args.push(var);
    }
    let mut names: Vec<&syn::Ident> = vec![&socket, &data, &reason, &value, &error];
    names.extend(call_args.iter());
    let shadows = shadows(&names);
    // Spanned at the fn's name: an error about the returned future (not `Send`, borrowing)
    // points there.
    let at = fn_name.span();
    let call = quote_spanned!(at=> #fn_name(#(#call_args),*));
    let disconnect = quote_spanned!(at=> #krate::__private::disconnect(#call));
    let line = quote_spanned!(fn_name.span()=> ::core::line!());
    let common = quote! {
        fn_type: || #krate::__private::type_id_of(&#fn_name),
        fn_name: || #krate::__private::type_name_of(&#fn_name),
        states: &[#(#states),*],
        file: ::core::file!(),
        line: #line,
    };

    let kind = match which {
        Macro::Event => {
            let payload_ty = payload.map_or_else(|| quote!(()), |t| t.to_token_stream());
            let (body, ack_ty) = match &ret {
                Ret::Unit => (
                    quote_spanned!(at=> #krate::__private::reply(&#socket, #call)),
                    quote!(()),
                ),
                Ret::Result(t) => match signature::result_args(t) {
                    // Each half checked where the user wrote it.
                    Some((ok, err)) => (
                        quote_spanned!(at=> #krate::__private::reply_result::<#ok, #err, _>(&#socket, #call)),
                        t.to_token_stream(),
                    ),
                    None => (
                        quote_spanned!(at=> #krate::__private::reply::<_, #t>(&#socket, #call)),
                        t.to_token_stream(),
                    ),
                },
                Ret::Plain(t) => (
                    quote_spanned!(at=> #krate::__private::reply_json::<_, #t>(&#socket, #call)),
                    t.to_token_stream(),
                ),
            };
            quote! {
                #krate::__private::Kind::Event {
                    event: #name,
                    call: {
                        #shadows
                        |#socket: #krate::Socket, #data: ::core::option::Option<&#krate::__private::RawValue>|
                            -> #krate::__private::BoxFuture<#krate::__private::Reply>
                        {
                            #(#lets)*
                            #body
                        }
                    },
                    payload_type: || ::core::any::type_name::<#payload_ty>(),
                    ack_type: || ::core::any::type_name::<#ack_ty>(),
                }
            }
        }
        Macro::Connect => {
            let connect = match &ret {
                Ret::Result(t) | Ret::Plain(t) => {
                    quote_spanned!(at=> #krate::__private::connect::<_, #t>)
                }
                Ret::Unit => quote_spanned!(at=> #krate::__private::connect),
            };
            quote! {
                #krate::__private::Kind::Connect({
                    #shadows
                    |#socket: #krate::Socket| -> #krate::__private::BoxFuture<::core::result::Result<(), ::std::string::String>> {
                        #(#lets)*
                        #connect(#call)
                    }
                })
            }
        }
        Macro::Disconnect => quote! {
            #krate::__private::Kind::Disconnect({
                #shadows
                |#socket: #krate::Socket, #reason: #krate::DisconnectReason| -> #krate::__private::BoxFuture<()> {
                    #(#lets)*
                    #disconnect
                }
            })
        },
    };
    // Silence "unused" on the reason variable when the hook does not take it.
    let allow = quote!(#[allow(unused_variables, clippy::redundant_closure_call)]);
    quote! {
        #allow
        const _: () = {
            #krate::__private::inventory::submit! {
                #krate::__private::Registration {
                    namespace: #namespace,
                    kind: #kind,
                    #common
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(which: Macro, attr: &str, item: &str) -> String {
        let attr: TokenStream = attr.parse().expect("attr tokens");
        let item: TokenStream = item.parse().expect("item tokens");
        expand(which, attr, item).to_string()
    }

    /// With `crate = "..."`, the generated code never names `wsu` (a renamed dependency has no
    /// `::wsu`); by default every path is absolute.
    #[test]
    fn crate_path_is_used_everywhere() {
        let cases = [
            (
                Macro::Event,
                "async fn chat(socket: r::Socket, s: r::State<u8>, text: String) -> Result<String, r::HandlerError> { Ok(text) }",
            ),
            (
                Macro::Event,
                "async fn plain(text: String) -> String { text }",
            ),
            (Macro::Event, "async fn unit(_: ()) {}"),
            (
                Macro::Connect,
                "async fn hello(socket: r::Socket) -> Result<(), String> { Ok(()) }",
            ),
            (
                Macro::Disconnect,
                "async fn bye(reason: r::DisconnectReason) {}",
            ),
        ];
        for (which, item) in cases {
            let out = expand_str(which, r#"crate = "renamed""#, item);
            assert!(!out.contains("compile_error"), "{out}");
            assert!(!out.contains("wsu ::"), "{out}");
            assert!(
                out.contains("renamed :: __private :: inventory :: submit !"),
                "{out}"
            );
            let out = expand_str(which, "", item);
            assert!(
                out.contains(":: wsu :: __private :: inventory :: submit !"),
                "{out}"
            );
            assert!(!out.contains(" renamed"), "{out}");
        }
    }

    /// On an error the function is still emitted, next to one `compile_error!`.
    #[test]
    fn errors_keep_the_item() {
        let out = expand_str(
            Macro::Event,
            r#"name = "error""#,
            "async fn report(text: String) {}",
        );
        assert!(out.contains("async fn report"), "{out}");
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(!out.contains("submit"), "{out}");
    }
}
