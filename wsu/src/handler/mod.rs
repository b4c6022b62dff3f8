//! Event handlers: how a handler's return value becomes the ack, and the type-erased form the
//! dispatcher calls.

mod ack;
mod erased;

pub(crate) use ack::ack_value;
pub use ack::{HandlerError, IntoAck, IntoErrorBody, Json, Public};
pub use erased::Handler;
pub(crate) use erased::logged;
pub use erased::{ErasedHandler, Reply, TypedHandler, decode_payload};
