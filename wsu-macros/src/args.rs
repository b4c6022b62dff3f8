//! Parsing `#[ws_event(namespace = "/", name = "chat", crate = "wsu")]`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token};

/// Parsed attribute arguments.
pub(crate) struct Args {
    pub(crate) namespace: Option<LitStr>,
    pub(crate) name: Option<LitStr>,
    pub(crate) krate: Option<syn::Path>,
}

/// Which keys a macro accepts.
#[derive(Clone, Copy)]
pub(crate) struct Accepts {
    pub(crate) name: bool,
}

mod kw {
    syn::custom_keyword!(namespace);
    syn::custom_keyword!(name);
}

impl Args {
    pub(crate) fn parse(input: ParseStream<'_>, accepts: Accepts) -> syn::Result<Args> {
        let mut args = Args {
            namespace: None,
            name: None,
            krate: None,
        };
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::namespace) {
                let key: kw::namespace = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitStr = input.parse()?;
                if args.namespace.is_some() {
                    return Err(syn::Error::new(key.span, "duplicate `namespace` argument"));
                }
                args.namespace = Some(value);
            } else if accepts.name && lookahead.peek(kw::name) {
                let key: kw::name = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitStr = input.parse()?;
                if args.name.is_some() {
                    return Err(syn::Error::new(key.span, "duplicate `name` argument"));
                }
                args.name = Some(value);
            } else if lookahead.peek(Token![crate]) {
                let key: Token![crate] = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitStr = input.parse()?;
                if args.krate.is_some() {
                    return Err(syn::Error::new(key.span, "duplicate `crate` argument"));
                }
                args.krate = Some(value.parse()?);
            } else if !accepts.name && input.peek(kw::name) {
                let key: kw::name = input.parse()?;
                return Err(syn::Error::new(
                    key.span,
                    "hooks have no `name`: expected `namespace` or `crate`",
                ));
            } else if input.peek(syn::Ident) {
                let key: syn::Ident = input.parse()?;
                let expected = if accepts.name {
                    "`namespace`, `name` or `crate`"
                } else {
                    "`namespace` or `crate`"
                };
                return Err(syn::Error::new(
                    key.span(),
                    format!("unknown argument `{key}`: expected {expected}"),
                ));
            } else {
                return Err(lookahead.error());
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

/// The attribute parser bound to the accepted keys.
pub(crate) struct Parser(pub(crate) Accepts);

impl syn::parse::Parser for Parser {
    type Output = Args;

    fn parse2(self, tokens: proc_macro2::TokenStream) -> syn::Result<Args> {
        let accepts = self.0;
        let f = move |input: ParseStream<'_>| Args::parse(input, accepts);
        syn::parse::Parser::parse2(f, tokens)
    }
}

/// Names follow the protocol's rules (checked again at run time by the builder).
pub(crate) fn check_name(value: &str, span: Span, what: &str) -> syn::Result<()> {
    const RESERVED: &[&str] = &[
        "connect",
        "disconnect",
        "error",
        "ping",
        "pong",
        "join",
        "leave",
        "ack",
    ];
    if value.is_empty() {
        return Err(syn::Error::new(span, format!("{what} name is empty")));
    }
    if value.len() > 128 {
        return Err(syn::Error::new(
            span,
            format!("{what} name is longer than 128 bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(syn::Error::new(
            span,
            format!("{what} name contains a control character"),
        ));
    }
    if what == "namespace" && !value.starts_with('/') {
        return Err(syn::Error::new(
            span,
            format!("namespace must start with `/`, as in \"/{value}\""),
        ));
    }
    if what == "event" && RESERVED.contains(&value) {
        return Err(syn::Error::new(
            span,
            format!(
                "event name `{value}` is reserved by the protocol; choose another name (reserved: {})",
                RESERVED.join(", ")
            ),
        ));
    }
    Ok(())
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Args> {
        Args::parse(input, Accepts { name: true })
    }
}
