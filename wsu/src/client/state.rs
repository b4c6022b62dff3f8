//! The connection state of a client and the events reporting its changes.

use std::time::Duration;

use super::Recovery;

/// Where a client stands, as seen through [`Client::state`](super::Client::state).
///
/// ```text
/// Connecting ──▶ Connected ──(drop)──▶ Reconnecting { attempt: 1, 2, … } ──▶ Connected
///                    │                         │
///                    └──(close / refusal)──────┴──(gave up / close)──▶ Closed
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// The first connection is being established ([`ClientBuilder::connect`] has not returned).
    ///
    /// [`ClientBuilder::connect`]: super::ClientBuilder::connect
    Connecting,
    /// Connected: the server accepted the connection and every tracked namespace and room was
    /// joined again. Emits are written to the socket.
    Connected,
    /// Disconnected, waiting before (or making) reconnection attempt number `attempt`. Emits go to
    /// the offline buffer.
    Reconnecting {
        /// The attempt, from 1.
        attempt: u32,
    },
    /// Closed for good: [`Client::close`](super::Client::close) was called, the client gave up
    /// reconnecting, reconnection is disabled, or the server closed with a code that forbids
    /// reconnecting. Emits fail with [`ClientError::Closed`](super::ClientError::Closed).
    Closed,
}

/// A change of connection state, delivered in order to
/// [`ClientBuilder::on_state`](super::ClientBuilder::on_state) and
/// [`Client::events`](super::Client::events).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateEvent {
    /// The connection is ready: the server accepted it and every tracked namespace and room was
    /// joined again. Reported for the first connection and after each reconnection.
    Connected,
    /// A connection ended. `code` is the close code of the server's close frame (`1005` for a
    /// close frame without one), or `None` when the connection dropped without a close frame
    /// (TCP reset, heartbeat timeout: the WebSocket `1006` case). After [`Client::close`] it is
    /// `Some(1000)` with the given reason.
    ///
    /// [`Client::close`]: super::Client::close
    Disconnected {
        /// The close code, if a close frame was received (or sent, for a client close).
        code: Option<u16>,
        /// The close reason, or a description of the failure.
        reason: String,
    },
    /// Waiting `delay` before reconnection attempt number `attempt` (from 1).
    Reconnecting {
        /// The attempt, from 1.
        attempt: u32,
        /// How long the client waits before trying.
        delay: Duration,
    },
    /// The configured [`max_attempts`](super::Reconnect::max_attempts) all failed; the client is
    /// now [`ConnectionState::Closed`].
    GaveUp,
    /// The server resumed the previous session on this new connection (session recovery, a
    /// server with `ServerBuilder::recovery`): the session id is unchanged and the server restored
    /// its namespaces and rooms, so the client does not join them again (only the joins and leaves
    /// whose answer never came are sent again). Reported when the
    /// server's `hello` arrives, before [`Connected`](StateEvent::Connected); the missed events
    /// follow, one [`Recovery`](StateEvent::Recovery) per namespace.
    Resumed {
        /// The session id (the same as before the disconnection).
        sid: String,
    },
    /// The client asked to resume its previous session and the server refused: this connection
    /// is a fresh session (a new session id), the client joins its namespaces and rooms again
    /// as after any reconnection, and the server state of the old session (rooms, presence,
    /// missed events) is lost. Reported before [`Connected`](StateEvent::Connected).
    ResumeRefused {
        /// The server's reason: `invalid token`, `unknown session` (expired or already used) or
        /// `session busy`.
        reason: String,
    },
    /// The outcome of recovering the missed events of a namespace (see [`Recovery`]).
    Recovery(Recovery),
}
