//! The type-erased handler the dispatcher calls, and the adapter for typed closures.

use std::any::{Any, TypeId};
use std::future::Future;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::{HandlerError, IntoAck};
use crate::sync::BoxFuture;
use crate::{Socket, SocketId};

/// What a handler produced: the ack `data` (if any), or the error answer.
#[doc(hidden)]
pub type Reply = Result<Option<Box<RawValue>>, HandlerError>;

/// `reply`, after logging its error if it is internal (with the id of the connection it
/// answers): where a server handler's result becomes its answer.
pub(crate) fn logged(conn: &SocketId, reply: Reply) -> Reply {
    if let Err(e) = &reply {
        e.log_internal(conn);
    }
    reply
}

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
/// payloads accept it). A `Box<RawValue>` payload is a copy of `data`, which the envelope decoder
/// has already checked, not a second parse.
#[doc(hidden)]
pub fn decode_payload<T: DeserializeOwned + 'static>(
    data: Option<&RawValue>,
) -> Result<T, HandlerError> {
    if let Some(raw) = data {
        if let Some(payload) = raw_payload::<T>(raw) {
            return Ok(payload);
        }
    }
    let raw = data.map_or("null", RawValue::get);
    serde_json::from_str::<T>(raw).map_err(|e| HandlerError::new(format!("invalid payload: {e}")))
}

/// `raw` as a `T`, when `T` is `Box<RawValue>` (raw JSON relayed as it came).
fn raw_payload<T: 'static>(raw: &RawValue) -> Option<T> {
    if TypeId::of::<T>() != TypeId::of::<Box<RawValue>>() {
        return None;
    }
    let mut slot = Some(raw.to_owned());
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()?
        .take()
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
                let conn = *socket.id();
                let fut = (self.f)(socket, payload);
                Box::pin(async move { logged(&conn, fut.await.into_ack()) })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_payloads_are_copied_and_others_decoded() {
        let data = RawValue::from_string(r#"{"a": [1, 2.50]}"#.to_owned()).unwrap();
        let raw: Box<RawValue> = decode_payload(Some(&data)).unwrap();
        assert_eq!(raw.get(), data.get());
        let absent: Box<RawValue> = decode_payload(None).unwrap();
        assert_eq!(absent.get(), "null");
        let value: serde_json::Value = decode_payload(Some(&data)).unwrap();
        assert_eq!(value["a"][0], 1);
        let wrong = decode_payload::<u8>(Some(&data)).unwrap_err();
        assert!(wrong.message().starts_with("invalid payload: invalid type"));
    }
}
