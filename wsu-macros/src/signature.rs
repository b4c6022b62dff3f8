//! Reading the annotated function's signature: parameters (extractors, payload, reason) and
//! return type.

use syn::spanned::Spanned;
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
    let Some(seg) = last_segment(ty) else { return (ParamKind::Payload, None) };
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
            FnArg::Receiver(r) => errors.push(syn::Error::new(
                r.span(),
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
