//! One connection: the state shared with the rest of the server, its outbound queue, the
//! protocol state machine, and the task that owns the socket.

mod acks;
mod frames;
#[cfg(feature = "__fuzzing")]
pub(crate) mod fuzz;
mod lifecycle;
mod machine;
mod outbox;
mod shared;
mod task;

pub(crate) use lifecycle::after_leave;
pub(crate) use shared::{CloseRequest, ConnShared, JoinError, Membership};
pub(crate) use task::run_connection;
