//! Event handlers: how a handler's return value becomes the ack, and the type-erased form the
//! dispatcher calls.

mod ack;
mod erased;

pub(crate) use ack::ack_value;
pub use ack::{HandlerError, IntoAck, IntoErrorBody, Json};
pub use erased::Handler;
pub use erased::{ErasedHandler, Reply, TypedHandler, decode_payload};
