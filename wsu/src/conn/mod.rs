//! One connection: the state shared with the rest of the server, and the task that owns the
//! socket.

mod acks;
mod dispatch;
mod shared;
mod task;

pub(crate) use shared::{CloseRequest, ConnShared, JoinError, Membership};
pub(crate) use task::{after_leave, run_connection};
