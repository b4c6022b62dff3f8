//! Extractors: what a `#[ws_event]` handler or hook can ask for besides its payload.

use std::any::type_name;
use std::ops::Deref;
use std::sync::Arc;

use crate::{HandlerError, Server, Socket};

/// Shared application state registered with [`ServerBuilder::state`](crate::ServerBuilder::state),
/// as a handler parameter (like axum's `State`).
///
/// A server that lacks a state some handler asks for fails to build
/// ([`BuildError::MissingState`](crate::BuildError::MissingState)).
///
/// ```standalone_crate
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use wsu::{State, ws_event};
///
/// #[derive(Default)]
/// struct Counter(AtomicU64);
///
/// #[ws_event(name = "count")]
/// async fn count(State(counter): State<Counter>, _: ()) -> u64 {
///     counter.0.fetch_add(1, Ordering::Relaxed) + 1
/// }
///
/// let server = wsu::Server::builder().state(Counter::default()).build().unwrap();
/// # let _ = server;
/// ```
#[derive(Debug)]
pub struct State<T>(pub Arc<T>);

impl<T> Clone for State<T> {
    fn clone(&self) -> Self {
        State(self.0.clone())
    }
}

impl<T> Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Types a `#[ws_event]` handler or hook may take as parameters besides its payload:
/// [`Socket`], [`Server`] and [`State<T>`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be extracted from a connection",
    note = "handler parameters are `wsu::Socket`, `wsu::Server`, `wsu::State<T>`, and one payload"
)]
pub trait FromSocket: Sized {
    /// Produce the value for one call.
    ///
    /// # Errors
    /// When the value is unavailable; the request is then answered with this error.
    fn from_socket(socket: &Socket) -> Result<Self, HandlerError>;
}

impl FromSocket for Socket {
    fn from_socket(socket: &Socket) -> Result<Self, HandlerError> {
        Ok(socket.clone())
    }
}

impl FromSocket for Server {
    fn from_socket(socket: &Socket) -> Result<Self, HandlerError> {
        Ok(socket.server().clone())
    }
}

impl<T: Send + Sync + 'static> FromSocket for State<T> {
    fn from_socket(socket: &Socket) -> Result<Self, HandlerError> {
        socket.server().state::<T>().map(State).ok_or_else(|| {
            HandlerError::new(format!("state `{}` is not registered", type_name::<T>()))
        })
    }
}
