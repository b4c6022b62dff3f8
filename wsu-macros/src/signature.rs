//! Reading the annotated function's signature: parameters (extractors, payload, reason) and
//! return type.

use quote::ToTokens;
use syn::{FnArg, GenericArgument, PathArguments, ReturnType, Type};

/// What a parameter is, by the last segment of its type's path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamKind {
    /// `Socket`, `Server`, `State<T>`: built from the connection.
    Extractor,
    /// `DisconnectReason` (disconnect hooks).
    Reason,
    /// Anything else: the event's payload.
    Payload,
}

/// One parameter.
pub(crate) struct Param {
    pub(crate) ty: Type,
    pub(crate) kind: ParamKind,
    /// For `State<T>`: `T`.
    pub(crate) state: Option<Type>,
}

/// The return type, as far as the ack is concerned.
pub(crate) enum Ret {
    /// No return type, or `()`.
    Unit,
    /// A type whose last path segment is `Result`: used as the ack as is.
    Result(Type),
    /// Any other type: serialized as the ack's data.
    Plain(Type),
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

pub(crate) fn classify(ty: &Type) -> (ParamKind, Option<Type>) {
    let Some(seg) = last_segment(ty) else {
        return (ParamKind::Payload, None);
    };
    match seg.ident.to_string().as_str() {
        "Socket" | "Server" => (ParamKind::Extractor, None),
        "State" => {
            let inner = match &seg.arguments {
                PathArguments::AngleBracketed(a) => a.args.iter().find_map(|g| match g {
                    GenericArgument::Type(t) => Some(t.clone()),
                    _ => None,
                }),
                _ => None,
            };
            (ParamKind::Extractor, inner)
        }
        "DisconnectReason" => (ParamKind::Reason, None),
        _ => (ParamKind::Payload, None),
    }
}

/// The parameters, or an error under a `self` receiver.
pub(crate) fn params(sig: &syn::Signature, errors: &mut Vec<syn::Error>) -> Vec<Param> {
    let mut out = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.push(syn::Error::new_spanned(
                r,
                "handlers cannot take `self`: write a free `async fn` and reach shared data with `State<T>`",
            )),
            FnArg::Typed(pt) => {
                let ty = (*pt.ty).clone();
                let (kind, state) = classify(&ty);
                out.push(Param { ty, kind, state });
            }
        }
    }
    out
}

pub(crate) fn ret(sig: &syn::Signature) -> Ret {
    match &sig.output {
        ReturnType::Default => Ret::Unit,
        ReturnType::Type(_, ty) => match &**ty {
            Type::Tuple(t) if t.elems.is_empty() => Ret::Unit,
            other => match last_segment(other) {
                Some(seg) if seg.ident == "Result" => Ret::Result(other.clone()),
                _ => Ret::Plain(other.clone()),
            },
        },
    }
}

/// For `Result<T, E>` written with two type arguments: `(T, E)`.
pub(crate) fn result_args(ty: &Type) -> Option<(&Type, &Type)> {
    let seg = last_segment(ty)?;
    let PathArguments::AngleBracketed(a) = &seg.arguments else {
        return None;
    };
    let mut types = a.args.iter().filter_map(|g| match g {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    match (types.next(), types.next(), types.next()) {
        (Some(ok), Some(err), None) => Some((ok, err)),
        _ => None,
    }
}

/// An error under the first borrowed part of a payload type (`&str`, `Cow<'_, str>`): payloads
/// are decoded from a buffer that does not outlive the call, so they must own their data.
pub(crate) fn borrowed(ty: &Type) -> Option<syn::Error> {
    match ty {
        Type::Reference(r) => {
            let owned = match &*r.elem {
                Type::Path(p) if p.path.is_ident("str") => "`String` instead of `&str`".to_owned(),
                Type::Slice(s) => format!("`Vec<{}>` instead of a slice", s.elem.to_token_stream()),
                other => format!("`{}` instead of a reference", other.to_token_stream()),
            };
            Some(syn::Error::new_spanned(
                r,
                format!("event payloads must own their data (`serde::de::DeserializeOwned`): use {owned}"),
            ))
        }
        Type::Path(p) => p.path.segments.iter().find_map(|seg| match &seg.arguments {
            PathArguments::AngleBracketed(a) => a.args.iter().find_map(|g| match g {
                GenericArgument::Type(t) => borrowed(t),
                GenericArgument::Lifetime(l) if l.ident != "static" => Some(syn::Error::new_spanned(
                    l,
                    "event payloads must own their data (`serde::de::DeserializeOwned`): use `'static` or an owned type",
                )),
                _ => None,
            }),
            _ => None,
        }),
        Type::Tuple(t) => t.elems.iter().find_map(borrowed),
        Type::Array(a) => borrowed(&a.elem),
        Type::Slice(s) => borrowed(&s.elem),
        Type::Paren(p) => borrowed(&p.elem),
        Type::Group(g) => borrowed(&g.elem),
        _ => None,
    }
}
