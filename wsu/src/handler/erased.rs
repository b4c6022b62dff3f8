//! The type-erased handler the dispatcher calls, and the adapter for typed closures.

use std::future::Future;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::{HandlerError, IntoAck};
use crate::Socket;
use crate::sync::BoxFuture;

/// What a handler produced: the ack `data` (if any), or the error answer.
#[doc(hidden)]
pub type Reply = Result<Option<Box<RawValue>>, HandlerError>;

/// The dispatcher's view of one event handler (used by `#[ws_event]`; not public API).
#[doc(hidden)]
pub trait ErasedHandler: Send + Sync + 'static {
    /// Decode `data` and start the handler. Decoding happens now; the returned future runs the
    /// handler when polled. A payload that does not decode gives a future that resolves to an
    /// `invalid payload` error at once.
    fn call(&self, socket: Socket, data: Option<&RawValue>) -> BoxFuture<Reply>;

    /// The Rust type name of the payload, for introspection.
    fn payload_type(&self) -> &'static str;
}

/// A typed handler: a function of `(Socket, T)` returning a future of an [`IntoAck`].
#[derive(Debug)]
#[doc(hidden)]
pub struct TypedHandler<F, T> {
    f: F,
    _payload: PhantomData<fn() -> T>,
}

impl<F, T> TypedHandler<F, T> {
    /// Wrap a typed handler function.
    pub fn new(f: F) -> Self {
        TypedHandler {
            f,
            _payload: PhantomData,
        }
    }
}

/// The payload of a message whose `data` is absent decodes from `null` (so `()` and `Option<T>`
/// payloads accept it).
#[doc(hidden)]
pub fn decode_payload<T: DeserializeOwned>(data: Option<&RawValue>) -> Result<T, HandlerError> {
    let raw = data.map_or("null", RawValue::get);
    serde_json::from_str::<T>(raw).map_err(|e| HandlerError::new(format!("invalid payload: {e}")))
}

impl<F, Fut, T, R> ErasedHandler for TypedHandler<F, T>
where
    F: Fn(Socket, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoAck,
    T: DeserializeOwned + Send + 'static,
{
    fn call(&self, socket: Socket, data: Option<&RawValue>) -> BoxFuture<Reply> {
        match decode_payload::<T>(data) {
            Ok(payload) => {
                let fut = (self.f)(socket, payload);
                Box::pin(async move { fut.await.into_ack() })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn payload_type(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

/// Marker trait documenting the closure shape accepted by
/// [`ServerBuilder::on`](crate::ServerBuilder::on): `Fn(Socket, T) -> impl Future<Output = impl
/// IntoAck>` where `T: DeserializeOwned`.
pub trait Handler<T>: Send + Sync + 'static {}

impl<F, Fut, T, R> Handler<T> for F
where
    F: Fn(Socket, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoAck,
    T: DeserializeOwned + Send + 'static,
{
}
