//! Connect and disconnect hooks.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::sync::BoxFuture;
use crate::{CloseCode, Socket};

/// Why a connection (or a namespace membership) ended; passed to disconnect hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client sent a close frame with this code and reason.
    ClientClosed {
        /// The code the client sent (1005 when its frame had none).
        code: CloseCode,
        /// The reason the client gave.
        reason: String,
    },
    /// The connection dropped without a close frame (network failure, killed client), or its
    /// connection task was cancelled or unwound (for example a dropped `serve_connection`
    /// future), in which case the disconnect hooks run in a task of their own.
    TransportClosed,
    /// The server closed the connection with this code and reason (application close, protocol
    /// violation, heartbeat timeout, slow consumer, shutdown...).
    ServerClosed {
        /// The close code. It is sent in a close frame whenever the socket still accepts
        /// writes; after a write timeout (4002) or with a client that stopped reading it cannot
        /// be delivered.
        code: CloseCode,
        /// The close reason (sent along with the code).
        reason: String,
    },
    /// The client left the namespace (namespace disconnect hooks only).
    LeftNamespace,
}

impl DisconnectReason {
    /// Whether the connection's session lives on after this end, with
    /// [recovery](crate::ServerBuilder::recovery) on: the client did not mean to leave (the TCP
    /// connection dropped, a heartbeat or write timeout, a slow consumer, a server shutdown),
    /// so it may resume within the session TTL; or another connection resumed it (4003). An
    /// application that keys state by connection id keeps that state then (PROTOCOL.md §13.5).
    ///
    /// ```
    /// use wsu::{CloseCode, DisconnectReason};
    /// assert!(DisconnectReason::TransportClosed.session_kept());
    /// let bye = DisconnectReason::ClientClosed { code: CloseCode::NORMAL, reason: "bye".into() };
    /// assert!(!bye.session_kept());
    /// ```
    pub fn session_kept(&self) -> bool {
        match self {
            DisconnectReason::TransportClosed => true,
            DisconnectReason::ServerClosed { code, .. } => matches!(
                *code,
                CloseCode::HEARTBEAT_TIMEOUT
                    | CloseCode::SLOW_CONSUMER
                    | CloseCode::WRITE_TIMEOUT
                    | CloseCode::GOING_AWAY
                    | CloseCode::SESSION_TAKEN
            ),
            DisconnectReason::ClientClosed { .. } | DisconnectReason::LeftNamespace => false,
        }
    }

    /// The close code of the connection (1006 for a transport failure, 1000 for leaving a
    /// namespace).
    pub fn close_code(&self) -> CloseCode {
        match self {
            DisconnectReason::ClientClosed { code, .. }
            | DisconnectReason::ServerClosed { code, .. } => *code,
            DisconnectReason::TransportClosed => CloseCode::ABNORMAL,
            DisconnectReason::LeftNamespace => CloseCode::NORMAL,
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ClientClosed { code, reason } => {
                write!(f, "closed by client: {code} {reason}")
            }
            DisconnectReason::TransportClosed => f.write_str("connection lost"),
            DisconnectReason::ServerClosed { code, reason } => {
                write!(f, "closed by server: {code} {reason}")
            }
            DisconnectReason::LeftNamespace => f.write_str("left the namespace"),
        }
    }
}

/// What a connect hook returns: `()` to accept, or `Result<(), E>` where an `Err` refuses the
/// connection (or the namespace join) with `E`'s text as the reason.
pub trait ConnectOutcome {
    /// `Ok` to accept, `Err(reason)` to refuse.
    fn into_outcome(self) -> Result<(), String>;
}

impl ConnectOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> ConnectOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

pub(crate) type ConnectHook = Arc<dyn Fn(Socket) -> BoxFuture<Result<(), String>> + Send + Sync>;
pub(crate) type DisconnectHook =
    Arc<dyn Fn(Socket, DisconnectReason) -> BoxFuture<()> + Send + Sync>;

pub(crate) fn connect_hook<F, Fut, R>(f: F) -> ConnectHook
where
    F: Fn(Socket) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: ConnectOutcome,
{
    Arc::new(move |socket| {
        let fut = f(socket);
        Box::pin(async move { fut.await.into_outcome() })
    })
}

pub(crate) fn disconnect_hook<F, Fut>(f: F) -> DisconnectHook
where
    F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |socket, reason| Box::pin(f(socket, reason)))
}
