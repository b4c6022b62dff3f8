//! Static registration of `#[ws_event]`, `#[ws_connect]` and `#[ws_disconnect]` functions
//! through `inventory`, and the small runtime pieces the generated code calls.
//!
//! The macros stay thin: they check the function's shape and emit one `inventory::submit!` of a
//! [`Registration`] whose fields are plain `fn` pointers (non-capturing closures); everything
//! else happens here and in the dispatcher.

use std::any::TypeId;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::Socket;
use crate::handler::{ErasedHandler, HandlerError, IntoAck, IntoErrorBody, Reply, logged};
use crate::hooks::{ConnectOutcome, DisconnectReason};
use crate::sync::BoxFuture;

/// The call of an event handler: decode, extract, run, turn the result into the ack.
pub type EventFn = for<'a> fn(Socket, Option<&'a RawValue>) -> BoxFuture<Reply>;
/// The call of a connect hook.
pub type ConnectFn = fn(Socket) -> BoxFuture<Result<(), String>>;
/// The call of a disconnect hook.
pub type DisconnectFn = fn(Socket, DisconnectReason) -> BoxFuture<()>;

/// What a registration registers.
#[derive(Clone, Copy)]
pub enum Kind {
    /// An event handler.
    Event {
        /// The event name.
        event: &'static str,
        /// The call.
        call: EventFn,
        /// The payload type name.
        payload_type: fn() -> &'static str,
        /// The ack type name.
        ack_type: fn() -> &'static str,
    },
    /// A namespace connect hook.
    Connect(ConnectFn),
    /// A namespace disconnect hook.
    Disconnect(DisconnectFn),
}

/// One annotated function, submitted to `inventory` by the macros.
pub struct Registration {
    /// The namespace.
    pub namespace: &'static str,
    /// What it registers.
    pub kind: Kind,
    /// The `TypeId` of the annotated function's item type (for explicit registration with
    /// [`ServerBuilder::handler`](crate::ServerBuilder::handler)).
    pub fn_type: fn() -> TypeId,
    /// The function's path, for messages.
    pub fn_name: fn() -> &'static str,
    /// `State<T>` types the function needs: `(TypeId of T, name of T)`.
    pub states: &'static [fn() -> (TypeId, &'static str)],
    /// Source file of the function.
    pub file: &'static str,
    /// Source line of the function.
    pub line: u32,
}

impl Registration {
    /// `file:line`.
    pub(crate) fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

inventory::collect!(Registration);

/// Every registration linked into the binary.
pub(crate) fn all() -> impl Iterator<Item = &'static Registration> {
    inventory::iter::<Registration>.into_iter()
}

/// `TypeId` of a value's type (used on the annotated fn item).
pub fn type_id_of<F: 'static>(_: &F) -> TypeId {
    TypeId::of::<F>()
}

/// Type name of a value's type.
pub fn type_name_of<F>(_: &F) -> &'static str {
    std::any::type_name::<F>()
}

/// `(TypeId, name)` of a state type.
pub fn state_type<T: 'static>() -> (TypeId, &'static str) {
    (TypeId::of::<T>(), std::any::type_name::<T>())
}

/// A future that fails at once with this error (an extractor's or the payload's): an internal
/// one is logged with `socket`'s id.
pub fn ready_err(socket: &Socket, e: HandlerError) -> BoxFuture<Reply> {
    e.log_internal(socket.id());
    Box::pin(std::future::ready(Err(e)))
}

/// Run a handler future and convert its output into the reply (an internal error is logged
/// with `socket`'s id).
pub fn reply<Fut, R>(socket: &Socket, fut: Fut) -> BoxFuture<Reply>
where
    Fut: Future<Output = R> + Send + 'static,
    R: IntoAck,
{
    let conn = *socket.id();
    Box::pin(async move { logged(&conn, fut.await.into_ack()) })
}

/// Run a connect hook future.
pub fn connect<Fut, R>(fut: Fut) -> BoxFuture<Result<(), String>>
where
    Fut: Future<Output = R> + Send + 'static,
    R: ConnectReturn,
{
    Box::pin(async move { fut.await.into_outcome() })
}

/// Run a disconnect hook future.
pub fn disconnect<Fut>(fut: Fut) -> BoxFuture<()>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::pin(fut)
}

/// Run a handler future whose output is a plain serializable value, sent as the ack's data (a
/// value that cannot be serialized is an internal error, logged with `socket`'s id).
pub fn reply_json<Fut, T>(socket: &Socket, fut: Fut) -> BoxFuture<Reply>
where
    Fut: Future<Output = T> + Send + 'static,
    T: AckValue,
{
    let conn = *socket.id();
    Box::pin(async move { logged(&conn, crate::handler::ack_value(fut.await)) })
}

/// Run a handler future whose output is `Result<T, E>`: the ack, or the error answer (an
/// internal one is logged with `socket`'s id). `T` and `E` are named by the macro where the
/// user wrote them, so a wrong type gets one error there.
pub fn reply_result<T, E, Fut>(socket: &Socket, fut: Fut) -> BoxFuture<Reply>
where
    T: AckValue,
    E: IntoErrorBody,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let conn = *socket.id();
    Box::pin(async move {
        let reply = match fut.await {
            Ok(value) => crate::handler::ack_value(value),
            Err(e) => Err(e.into_error_body()),
        };
        logged(&conn, reply)
    })
}

/// Decode the payload (bounded by [`Payload`] so a wrong type gets one clear error).
pub fn decode<T: Payload>(data: Option<&RawValue>) -> Result<T, HandlerError> {
    crate::handler::decode_payload(data)
}

/// A connect hook whose extractor failed: refuse with the error's message (`internal error`
/// for an internal one, logged with `socket`'s id).
pub fn connect_err(socket: &Socket, e: HandlerError) -> BoxFuture<Result<(), String>> {
    e.log_internal(socket.id());
    Box::pin(std::future::ready(Err(e.message().to_owned())))
}

/// A disconnect hook whose extractor failed: skip it (logged).
pub fn disconnect_skip(socket: &Socket, e: HandlerError) -> BoxFuture<()> {
    e.log_internal(socket.id());
    tracing::error!(conn = %socket.id(), error = %e, "disconnect hook skipped");
    Box::pin(std::future::ready(()))
}

/// Payload types: anything `DeserializeOwned` (checked where the user wrote the type).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an event payload",
    label = "this type must implement `serde::Deserialize` (and own its data)",
    note = "derive `serde::Deserialize` for it; use `Box<serde_json::value::RawValue>` for raw JSON or `()` for no data"
)]
pub trait Payload: DeserializeOwned + Send + 'static {}
impl<T: DeserializeOwned + Send + 'static> Payload for T {}

/// Return types of connect hooks: [`ConnectOutcome`] (checked where the user wrote the type).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a connect hook",
    label = "a connect hook returns `()` to accept or `Result<(), E>` to refuse",
    note = "return `()`, or `Result<(), E>` where `E: Display` is the reason given to the client"
)]
pub trait ConnectReturn: ConnectOutcome {}
impl<T: ConnectOutcome> ConnectReturn for T {}

/// Plain ack types: anything `Serialize`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an ack",
    label = "the return value is sent as the ack: it must implement `serde::Serialize`",
    note = "return `()`, a `Serialize` type, or `Result<T, E>` with `T: Serialize` and `E: wsu::IntoErrorBody`"
)]
pub trait AckValue: Serialize + Send + 'static {}
impl<T: Serialize + Send + 'static> AckValue for T {}

/// Adapter used for explicit registration of a plain `fn` pointer handler.
pub(crate) struct FnHandler {
    pub(crate) call: EventFn,
    pub(crate) payload_type: fn() -> &'static str,
}

impl ErasedHandler for FnHandler {
    fn call(&self, socket: Socket, data: Option<&RawValue>) -> BoxFuture<Reply> {
        (self.call)(socket, data)
    }

    fn payload_type(&self) -> &'static str {
        (self.payload_type)()
    }
}
