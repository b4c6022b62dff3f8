//! Checking the annotated function and emitting its registration.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
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
            let msg = format!("{} applies to an `async fn`", which.attr());
            let err = syn::Error::new(Span::call_site(), msg).to_compile_error();
            return quote! { #item #err };
        }
    };
    let mut errors = Vec::new();
    let args = match (Parser(Accepts { name: which == Macro::Event })).parse2(attr) {
        Ok(a) => a,
        Err(e) => {
            errors.push(e);
            Args { namespace: None, name: None, krate: None }
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

fn check_and_emit(which: Macro, args: &Args, func: &ItemFn, errors: &mut Vec<syn::Error>) -> TokenStream {
    let sig = &func.sig;
    let attr = which.attr();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(sig.fn_token.span(), format!("{attr} functions must be `async fn`: add `async`")));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new(
            sig.generics.span(),
            format!("{attr} functions cannot be generic: use concrete types (each registration is one concrete handler)"),
        ));
    }
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new(c.span(), format!("{attr} functions cannot be `const`")));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new(v.span(), format!("{attr} functions cannot be variadic")));
    }

    let params = signature::params(sig, errors);
    let mut payload = None;
    let mut reason_seen = false;
    for p in &params {
        match (which, p.kind) {
            (_, ParamKind::Extractor) => {}
            (Macro::Event, _) => {
                if payload.is_some() {
                    errors.push(syn::Error::new(
                        p.ty.span(),
                        "extra payload parameter: a handler takes one payload (besides `Socket`, `Server` and `State<T>`); put the fields in one struct",
                    ));
                } else {
                    payload = Some(p.ty.clone());
                }
            }
            (Macro::Disconnect, ParamKind::Reason) if !reason_seen => reason_seen = true,
            (Macro::Disconnect, _) => errors.push(syn::Error::new(
                p.ty.span(),
                "disconnect hooks take `Socket`, `Server`, `State<T>` and at most one `DisconnectReason`",
            )),
            (Macro::Connect, _) => errors.push(syn::Error::new(
                p.ty.span(),
                "connect hooks take only `Socket`, `Server` and `State<T>` parameters",
            )),
        }
    }
    if which == Macro::Event && payload.is_none() && !params.iter().any(|p| p.kind != ParamKind::Extractor) {
        errors.push(syn::Error::new(
            sig.ident.span(),
            "missing payload parameter: add one for the event's `data`, e.g. `msg: ChatMessage` (use `_: ()` for events without data)",
        ));
    }

    let ret = signature::ret(sig);
    if which == Macro::Disconnect {
        if let Ret::Result(t) | Ret::Plain(t) = &ret {
            errors.push(syn::Error::new(t.span(), "disconnect hooks return nothing: remove the return type"));
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
    let socket = format_ident!("__wsu_socket", span = Span::mixed_site());
    let data = format_ident!("__wsu_data", span = Span::mixed_site());
    let reason = format_ident!("__wsu_reason", span = Span::mixed_site());

    let fail = match which {
        Macro::Event => quote!(#krate::__private::ready_err(e)),
        Macro::Connect => quote!(#krate::__private::connect_err(e)),
        Macro::Disconnect => quote!(#krate::__private::disconnect_skip(e)),
    };
    let mut lets = Vec::new();
    let mut call_args = Vec::new();
    let mut states = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let var = format_ident!("__wsu_arg{}", i, span = Span::mixed_site());
        let ty = &p.ty;
        match p.kind {
            ParamKind::Extractor => {
                let from = quote_spanned!(ty.span()=> <#ty as #krate::FromSocket>::from_socket);
                lets.push(quote! {
                    let #var = match #from(&#socket) {
                        ::core::result::Result::Ok(v) => v,
                        ::core::result::Result::Err(e) => return #fail,
                    };
                });
                if let Some(state) = &p.state {
                    states.push(quote_spanned!(state.span()=> || #krate::__private::state_type::<#state>()));
                }
            }
            ParamKind::Reason if which == Macro::Disconnect => {
                lets.push(quote! { let #var = #reason; });
            }
            _ => {
                let decode = quote_spanned!(ty.span()=> #krate::__private::decode::<#ty>);
                lets.push(quote! {
                    let #var = match #decode(#data) {
                        ::core::result::Result::Ok(v) => v,
                        ::core::result::Result::Err(e) => return #fail,
                    };
                });
            }
        }
        call_args.push(var);
    }
    let call = quote!(#fn_name(#(#call_args),*));
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
                Ret::Unit => (quote!(#krate::__private::reply(#call)), quote!(())),
                Ret::Result(t) => {
                    let reply = quote_spanned!(t.span()=> #krate::__private::reply);
                    (quote!(#reply(#call)), t.to_token_stream())
                }
                Ret::Plain(t) => {
                    let reply = quote_spanned!(t.span()=> #krate::__private::reply_json);
                    (quote!(#reply(#call)), t.to_token_stream())
                }
            };
            quote! {
                #krate::__private::Kind::Event {
                    event: #name,
                    call: |#socket: #krate::Socket, #data: ::core::option::Option<&#krate::__private::RawValue>|
                        -> #krate::__private::BoxFuture<#krate::__private::Reply>
                    {
                        #(#lets)*
                        #body
                    },
                    payload_type: || ::core::any::type_name::<#payload_ty>(),
                    ack_type: || ::core::any::type_name::<#ack_ty>(),
                }
            }
        }
        Macro::Connect => {
            let connect = match &ret {
                Ret::Result(t) | Ret::Plain(t) => quote_spanned!(t.span()=> #krate::__private::connect),
                Ret::Unit => quote!(#krate::__private::connect),
            };
            quote! {
                #krate::__private::Kind::Connect(
                    |#socket: #krate::Socket| -> #krate::__private::BoxFuture<::core::result::Result<(), ::std::string::String>> {
                        #(#lets)*
                        #connect(#call)
                    }
                )
            }
        }
        Macro::Disconnect => quote! {
            #krate::__private::Kind::Disconnect(
                |#socket: #krate::Socket, #reason: #krate::DisconnectReason| -> #krate::__private::BoxFuture<()> {
                    #(#lets)*
                    #krate::__private::disconnect(#call)
                }
            )
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
