//! Return values of handlers, turned into the `ack` (or `error`) answer.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use serde_json::value::RawValue;

/// Serialize `value` as the `data` of a message; `null` means "no data".
pub(crate) fn to_raw<T: Serialize + ?Sized>(
    value: &T,
) -> Result<Option<Box<RawValue>>, serde_json::Error> {
    let raw = serde_json::value::to_raw_value(value)?;
    Ok(if raw.get() == "null" { None } else { Some(raw) })
}

/// Wraps a serializable value used as an ack (or as a typed error body).
///
/// Handlers written with `#[ws_event]` return plain values and the macro wraps them; closures
/// registered with [`ServerBuilder::on`](crate::ServerBuilder::on) return `Json(value)`, `()` or a
/// `Result`.
///
/// ```
/// use wsu::Json;
/// # #[derive(serde::Serialize)] struct Status { status: &'static str }
/// let ack = Json(Status { status: "ok" });
/// # let _ = ack;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// The error answer of a failed request: a message for humans, and an optional typed body for
/// programs (sent as the error message's `data`).
///
/// ```
/// use wsu::HandlerError;
/// #[derive(serde::Serialize)]
/// struct Details { field: &'static str }
/// let err = HandlerError::new("nickname taken").with_data(&Details { field: "nick" });
/// assert_eq!(err.message(), "nickname taken");
/// ```
#[derive(Debug, Clone)]
pub struct HandlerError {
    message: Cow<'static, str>,
    data: Option<Box<RawValue>>,
}

impl HandlerError {
    /// An error with this message and no body.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        HandlerError {
            message: message.into(),
            data: None,
        }
    }

    /// Attach a typed body, sent as the error's `data`. A body that cannot be serialized is
    /// replaced by none.
    pub fn with_data<T: Serialize + ?Sized>(mut self, data: &T) -> Self {
        self.data = to_raw(data).ok().flatten();
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The body, as raw JSON.
    pub fn data(&self) -> Option<&RawValue> {
        self.data.as_deref()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

/// Types a handler may return as its error (`Err(e)`); they become the `error` answer.
///
/// Implemented for [`HandlerError`], `String`, `&'static str`, [`Json<E>`](Json) (a typed body with
/// the message `handler error`), `Box<dyn Error + Send + Sync>`, `std::io::Error`,
/// `serde_json::Error` and wsu's own [`SendError`](crate::SendError),
/// [`AckError`](crate::AckError) and [`JoinError`](crate::JoinError) (their `Display` text).
/// Implement it for your own error types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent as a handler error",
    note = "implement `wsu::IntoErrorBody` for it, wrap it in `wsu::Json(..)` to send it as a typed body, or map it to `wsu::HandlerError`"
)]
pub trait IntoErrorBody {
    /// Convert into the error answer.
    fn into_error_body(self) -> HandlerError;
}

impl IntoErrorBody for HandlerError {
    fn into_error_body(self) -> HandlerError {
        self
    }
}

impl IntoErrorBody for String {
    fn into_error_body(self) -> HandlerError {
        HandlerError::new(self)
    }
}

impl IntoErrorBody for &'static str {
    fn into_error_body(self) -> HandlerError {
        HandlerError::new(self)
    }
}

impl<E: Serialize> IntoErrorBody for Json<E> {
    fn into_error_body(self) -> HandlerError {
        HandlerError::new("handler error").with_data(&self.0)
    }
}

impl IntoErrorBody for Box<dyn std::error::Error + Send + Sync> {
    fn into_error_body(self) -> HandlerError {
        HandlerError::new(self.to_string())
    }
}

impl IntoErrorBody for std::io::Error {
    fn into_error_body(self) -> HandlerError {
        HandlerError::new(self.to_string())
    }
}

impl IntoErrorBody for serde_json::Error {
    fn into_error_body(self) -> HandlerError {
        HandlerError::new(self.to_string())
    }
}

macro_rules! display_error_body {
    ($($t:ty),*) => {$(
        impl IntoErrorBody for $t {
            fn into_error_body(self) -> HandlerError {
                HandlerError::new(self.to_string())
            }
        }
    )*};
}

display_error_body!(crate::SendError, crate::AckError, crate::JoinError);

impl IntoErrorBody for std::convert::Infallible {
    fn into_error_body(self) -> HandlerError {
        match self {}
    }
}

/// Types a handler may return: its ack.
///
/// - `()`: an ack without `data` (sent only when the client asked for one with an `ackId`);
/// - [`Json<T>`](Json): an ack whose `data` is `T` serialized (a `null` serialization sends no `data`);
/// - `Result<T, E>` with `T: Serialize` and `E:` [`IntoErrorBody`]: the ack, or an `error` answer
///   carrying the same `ackId`.
///
/// Without an `ackId` from the client, an `Ok` value is dropped, but an error is still reported
/// (as an `error` message naming the event).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as an ack",
    note = "return `()`, `wsu::Json(value)` or `Result<T, E>` where `T: Serialize` and `E: wsu::IntoErrorBody`"
)]
pub trait IntoAck {
    /// Convert into the ack `data` (or the error answer).
    fn into_ack(self) -> Result<Option<Box<RawValue>>, HandlerError>;
}

fn encode_ack<T: Serialize + ?Sized>(value: &T) -> Result<Option<Box<RawValue>>, HandlerError> {
    to_raw(value).map_err(|e| HandlerError::new(format!("ack could not be serialized: {e}")))
}

/// The ack `data` of a handler's return value (what [`Json<T>`](Json) gives), moving a
/// `Box<RawValue>` as it is instead of serializing it again.
pub(crate) fn ack_value<T: Serialize + 'static>(
    value: T,
) -> Result<Option<Box<RawValue>>, HandlerError> {
    let mut slot = Some(value);
    if let Some(raw) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Box<RawValue>>>() {
        let raw = raw.take().expect("the slot was just filled");
        return Ok(if raw.get() == "null" { None } else { Some(raw) });
    }
    match slot {
        Some(value) => encode_ack(&value),
        None => Ok(None),
    }
}

impl IntoAck for () {
    fn into_ack(self) -> Result<Option<Box<RawValue>>, HandlerError> {
        Ok(None)
    }
}

impl<T: Serialize> IntoAck for Json<T> {
    fn into_ack(self) -> Result<Option<Box<RawValue>>, HandlerError> {
        encode_ack(&self.0)
    }
}

impl<T: Serialize, E: IntoErrorBody> IntoAck for Result<T, E> {
    fn into_ack(self) -> Result<Option<Box<RawValue>>, HandlerError> {
        match self {
            Ok(v) => encode_ack(&v),
            Err(e) => Err(e.into_error_body()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_acks_are_moved_and_others_serialized() {
        let raw = RawValue::from_string(r#"{"a": 1}"#.to_owned()).unwrap();
        let ptr = raw.get().as_ptr();
        let out = ack_value(raw).unwrap().unwrap();
        assert_eq!(out.get(), r#"{"a": 1}"#);
        assert_eq!(out.get().as_ptr(), ptr, "moved, not copied");
        let null = RawValue::from_string("null".to_owned()).unwrap();
        assert!(ack_value(null).unwrap().is_none());
        assert_eq!(ack_value(7u8).unwrap().unwrap().get(), "7");
        assert!(ack_value(()).unwrap().is_none());
        assert!(ack_value(Option::<u8>::None).unwrap().is_none());
    }

    #[test]
    fn acks() {
        assert!(().into_ack().unwrap().is_none());
        let v = Json(serde_json::json!({"status": "ok"}))
            .into_ack()
            .unwrap()
            .unwrap();
        assert_eq!(v.get(), r#"{"status":"ok"}"#);
        let r: Result<u32, &'static str> = Err("nope");
        assert_eq!(r.into_ack().unwrap_err().message(), "nope");
        let r: Result<(), String> = Ok(());
        assert!(r.into_ack().unwrap().is_none());
        let e = Json(serde_json::json!({"code": 7})).into_error_body();
        assert_eq!(e.message(), "handler error");
        assert_eq!(e.data().unwrap().get(), r#"{"code":7}"#);
    }
}
