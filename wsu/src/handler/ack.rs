//! Return values of handlers, turned into the `ack` (or `error`) answer.

use std::any::Any;
use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::SocketId;

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

/// The message of every internal error answer: the detail stays on the server.
const INTERNAL_ERROR: &str = "internal error";

/// The error answer of a failed request: a message for humans, and an optional typed body for
/// programs (sent as the error message's `data`).
///
/// An error is either **public**, made with [`new`](HandlerError::new): its message is sent to
/// the client as it is; or **internal**, made with [`internal`](HandlerError::internal): the
/// client gets `internal error`, and the wrapped error (the detail) stays on the server, where it
/// is logged and available as [`source`](std::error::Error::source).
///
/// ```
/// use wsu::HandlerError;
/// #[derive(serde::Serialize)]
/// struct Details { field: &'static str }
/// let err = HandlerError::new("nickname taken").with_data(&Details { field: "nick" });
/// assert_eq!(err.message(), "nickname taken");
/// assert!(!err.is_internal());
///
/// let err = HandlerError::internal(std::io::Error::other("disk /dev/sda2 is full"));
/// assert_eq!(err.message(), "internal error");
/// assert!(err.is_internal());
/// let detail = std::error::Error::source(&err).map(|e| e.to_string());
/// assert_eq!(detail.as_deref(), Some("disk /dev/sda2 is full"));
/// ```
#[derive(Debug, Clone)]
pub struct HandlerError {
    message: Cow<'static, str>,
    data: Option<Box<RawValue>>,
    /// The detail of an internal error (never sent).
    internal: Option<Arc<dyn Error + Send + Sync>>,
}

impl HandlerError {
    /// A public error: this message is sent to the client, with no body.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        HandlerError {
            message: message.into(),
            data: None,
            internal: None,
        }
    }

    /// An internal error: the client gets the message `internal error` and nothing of `error`.
    ///
    /// `error` is kept for the server only: it is this error's
    /// [`source`](std::error::Error::source), and it is logged at `ERROR` level (its `Display`
    /// in the field `error`, its `Debug` in `details`) once, when a handler's result becomes its
    /// answer: for a server handler with the connection id in the field `conn` (target
    /// `wsu::handler::ack`), for a `wsu::client` handler (feature `client`) with `namespace` and
    /// `event`. An error that is made but never returned logs nothing.
    ///
    /// Accepts any `E: Error + Send + Sync + 'static`, a `Box<dyn Error + Send + Sync>`, a
    /// `String` or a `&str`.
    ///
    /// ```
    /// use wsu::HandlerError;
    /// fn load() -> Result<String, HandlerError> {
    ///     std::fs::read_to_string("/nonexistent/wsu/config").map_err(HandlerError::internal)
    /// }
    /// let err = load().unwrap_err();
    /// assert_eq!(err.message(), "internal error");
    /// assert_eq!(err.to_string(), "internal error");
    /// ```
    pub fn internal(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        HandlerError {
            message: Cow::Borrowed(INTERNAL_ERROR),
            data: None,
            internal: Some(Arc::from(error.into())),
        }
    }

    /// Attach a typed body, sent as the error's `data` (also for an internal error: the body
    /// is public). A body that cannot be serialized is replaced by none.
    pub fn with_data<T: Serialize + ?Sized>(mut self, data: &T) -> Self {
        self.data = to_raw(data).ok().flatten();
        self
    }

    /// The message, as sent to the client (`internal error` for an internal error).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The body, as raw JSON.
    pub fn data(&self) -> Option<&RawValue> {
        self.data.as_deref()
    }

    /// Whether this is an internal error (made with [`internal`](HandlerError::internal)): its
    /// detail is only on the server.
    pub fn is_internal(&self) -> bool {
        self.internal.is_some()
    }

    /// Log the detail of an internal error, with the connection it answers (nothing for a
    /// public error). Called once per answer, where a handler's result becomes the answer.
    pub(crate) fn log_internal(&self, conn: &SocketId) {
        if let Some(detail) = &self.internal {
            tracing::error!(
                conn = %conn,
                error = %detail,
                details = ?detail,
                "a handler failed with an internal error; the client gets `internal error`"
            );
        }
    }
}

impl fmt::Display for HandlerError {
    /// The message, as sent to the client: an internal error's detail is its `source`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for HandlerError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.internal
            .as_deref()
            .map(|e| e as &(dyn Error + 'static))
    }
}

/// A user error whose `Display` text is sent to the client as the `error` message.
///
/// Handler errors are internal by default for the standard error types (see
/// [`IntoErrorBody`]); wrap an error in `Public` to state that its text is meant for the
/// client. `?` converts into it (`From<E>`).
///
/// ```
/// use std::fmt;
/// use wsu::{IntoErrorBody, Public};
///
/// #[derive(Debug)]
/// struct TooLong { max: usize }
/// impl fmt::Display for TooLong {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         write!(f, "at most {} characters", self.max)
///     }
/// }
///
/// fn check(text: &str) -> Result<(), Public<TooLong>> {
///     if text.len() > 8 {
///         Err(TooLong { max: 8 })?;
///     }
///     Ok(())
/// }
/// let answer = check("far too long").unwrap_err().into_error_body();
/// assert_eq!(answer.message(), "at most 8 characters");
/// assert!(!answer.is_internal());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Public<E>(pub E);

impl<E> From<E> for Public<E> {
    fn from(error: E) -> Self {
        Public(error)
    }
}

impl<E: fmt::Display> fmt::Display for Public<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: Error> Error for Public<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// Types a handler may return as its error (`Err(e)`); they become the `error` answer.
///
/// **Public**: sent to the client as they are.
/// - [`HandlerError`] made with [`HandlerError::new`]: its message (and its typed body);
/// - `String` and `&'static str`: the text;
/// - [`Json<E>`](Json): the message `handler error`, with `E` serialized as the `data`;
/// - [`Public<E>`](Public) with `E: Display`: `E`'s `Display` text;
/// - wsu's own [`SendError`](crate::SendError), [`AckError`](crate::AckError) and
///   [`JoinError`](crate::JoinError): their `Display` text (fixed texts such as
///   `outbound queue full`, never the text of an underlying error).
///
/// **Internal**: the client gets the message `internal error` (with the request's `event` and
/// `ackId`, and no `data`); the error's `Display` and `Debug` forms are logged on the server at
/// `ERROR` level with the connection id (see [`HandlerError::internal`]).
/// - `std::io::Error`, `serde_json::Error` and `Box<dyn Error + Send + Sync>`: their texts
///   name files, addresses or the inner workings of the server;
/// - [`HandlerError`] made with [`HandlerError::internal`].
///
/// Implement it for your own error types, choosing per variant between
/// [`HandlerError::new`] (public) and [`HandlerError::internal`].
///
/// ```
/// use wsu::{HandlerError, IntoErrorBody};
///
/// #[derive(Debug)]
/// enum ShopError { OutOfStock, Database(std::io::Error) }
///
/// impl IntoErrorBody for ShopError {
///     fn into_error_body(self) -> HandlerError {
///         match self {
///             ShopError::OutOfStock => HandlerError::new("out of stock"),
///             ShopError::Database(e) => HandlerError::internal(e),
///         }
///     }
/// }
/// let db = ShopError::Database(std::io::Error::other("db01.internal:5432 refused"));
/// assert_eq!(db.into_error_body().message(), "internal error");
/// assert_eq!(ShopError::OutOfStock.into_error_body().message(), "out of stock");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent as a handler error",
    note = "implement `wsu::IntoErrorBody` for it, wrap it in `wsu::Public(..)` to send its text, in `wsu::Json(..)` to send it as a typed body, or map it to `wsu::HandlerError`"
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

impl<E: fmt::Display> IntoErrorBody for Public<E> {
    fn into_error_body(self) -> HandlerError {
        HandlerError::new(self.0.to_string())
    }
}

impl IntoErrorBody for Box<dyn Error + Send + Sync> {
    fn into_error_body(self) -> HandlerError {
        HandlerError::internal(self)
    }
}

impl IntoErrorBody for std::io::Error {
    fn into_error_body(self) -> HandlerError {
        HandlerError::internal(self)
    }
}

impl IntoErrorBody for serde_json::Error {
    fn into_error_body(self) -> HandlerError {
        HandlerError::internal(self)
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

/// Serialize an ack; a value that cannot be serialized (a bug of the server, whose serde message
/// may quote its data) is an internal error.
fn encode_ack<T: Serialize + ?Sized>(value: &T) -> Result<Option<Box<RawValue>>, HandlerError> {
    to_raw(value).map_err(|e| HandlerError::internal(format!("ack could not be serialized: {e}")))
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

    /// The detail of an internal error, as kept for the server.
    fn detail(e: &HandlerError) -> String {
        e.source()
            .expect("an internal error keeps its detail")
            .to_string()
    }

    #[test]
    fn standard_errors_are_internal() {
        let io = std::io::Error::other("secret path /etc/shadow").into_error_body();
        let json = serde_json::from_str::<u8>("\"secret\"")
            .unwrap_err()
            .into_error_body();
        let boxed: Box<dyn Error + Send + Sync> = "secret token 1234".into();
        let boxed = boxed.into_error_body();
        for (e, secret) in [
            (&io, "secret path /etc/shadow"),
            (
                &json,
                "invalid type: string \"secret\", expected u8 at line 1 column 8",
            ),
            (&boxed, "secret token 1234"),
        ] {
            assert!(e.is_internal());
            assert_eq!(e.message(), "internal error");
            assert_eq!(e.to_string(), "internal error");
            assert!(e.data().is_none());
            assert_eq!(detail(e), secret);
            assert!(
                format!("{e:?}").contains("secret"),
                "Debug keeps the detail"
            );
        }
        let cloned = io.clone();
        assert_eq!(detail(&cloned), "secret path /etc/shadow");
        let r: Result<(), std::io::Error> = Err(std::io::Error::other("secret"));
        let answer = r.into_ack().unwrap_err();
        assert!(answer.is_internal());
        assert_eq!(answer.message(), "internal error");
    }

    #[test]
    fn public_errors_are_sent_as_they_are() {
        let cases = [
            HandlerError::new("nickname taken"),
            "nickname taken".into_error_body(),
            "nickname taken".to_owned().into_error_body(),
            Public(std::io::Error::other("nickname taken")).into_error_body(),
            Public(format_args!("nickname {}", "taken").to_string()).into_error_body(),
        ];
        for e in cases {
            assert!(!e.is_internal());
            assert_eq!(e.message(), "nickname taken");
            assert!(e.source().is_none());
        }
        assert_eq!(
            crate::SendError::QueueFull.into_error_body().message(),
            "outbound queue full"
        );
        assert_eq!(
            crate::AckError::Timeout.into_error_body().message(),
            "ack timed out"
        );
        let encode = serde_json::from_str::<u8>("\"secret\"").unwrap_err();
        let send = crate::SendError::Encode(encode).into_error_body();
        assert_eq!(send.message(), "payload could not be serialized");
        assert!(!send.is_internal());
        assert!(!Json(7).into_error_body().is_internal());
    }

    #[test]
    fn public_wraps_any_display_and_converts_with_question_mark() {
        fn fails() -> Result<(), Public<std::fmt::Error>> {
            Err(std::fmt::Error)?;
            Ok(())
        }
        let e = fails().unwrap_err();
        assert_eq!(
            e.to_string(),
            "an error occurred when formatting an argument"
        );
        assert_eq!(
            e.into_error_body().message(),
            "an error occurred when formatting an argument"
        );
    }

    #[test]
    fn internal_keeps_the_detail_and_may_carry_a_public_body() {
        let e = HandlerError::internal(std::io::Error::other("db01:5432 refused"))
            .with_data(&serde_json::json!({"code": "internal"}));
        assert!(e.is_internal());
        assert_eq!(e.message(), "internal error");
        assert_eq!(e.data().unwrap().get(), r#"{"code":"internal"}"#);
        assert_eq!(detail(&e), "db01:5432 refused");
        let e = HandlerError::internal(format!("retry {} failed", 3));
        assert_eq!(detail(&e), "retry 3 failed");
        // An internal error handed back through `IntoErrorBody` stays internal.
        let r: Result<(), HandlerError> = Err(HandlerError::internal("x"));
        assert!(r.into_ack().unwrap_err().is_internal());
    }

    #[test]
    fn an_ack_that_cannot_be_serialized_is_internal() {
        let mut map = std::collections::BTreeMap::new();
        map.insert((1, 2), "secret value");
        let e = ack_value(map).unwrap_err();
        assert!(e.is_internal());
        assert_eq!(e.message(), "internal error");
        assert_eq!(
            detail(&e),
            "ack could not be serialized: key must be a string"
        );
    }

    /// A subscriber that records every event as `LEVEL message field=value ...`.
    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<String>>>);

    struct Line(String);

    impl tracing::field::Visit for Line {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}{}", self.0);
            } else {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut line = Line(String::new());
            event.record(&mut line);
            let line = format!("{} {}", event.metadata().level(), line.0);
            self.0.lock().unwrap().push(line);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// Every event logged while `f` runs.
    fn logs(f: impl FnOnce()) -> Vec<String> {
        let capture = Capture::default();
        tracing::subscriber::with_default(capture.clone(), f);
        capture.0.lock().unwrap().clone()
    }

    #[test]
    fn internal_errors_are_logged_with_the_connection_and_public_ones_not() {
        let conn = SocketId::parse("00000000000000ff").unwrap();
        let lines = logs(|| {
            HandlerError::internal(std::io::Error::other("secret path /etc/shadow"))
                .log_internal(&conn);
            HandlerError::new("nickname taken").log_internal(&conn);
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(
            line.starts_with("ERROR a handler failed with an internal error"),
            "{line}"
        );
        assert!(line.contains("conn=00000000000000ff"), "{line}");
        assert!(line.contains("error=secret path /etc/shadow"), "{line}");
        assert!(
            line.contains(r#"details=Custom { kind: Other, error: "secret path /etc/shadow" }"#),
            "{line}"
        );
    }
}
