//! Connection-state recovery: sessions that outlive their transport, resume tokens, and the
//! per-namespace history that lets a resumed session get what it missed (PROTOCOL.md §13).

pub(crate) mod history;
pub(crate) mod resume;
pub(crate) mod store;
pub(crate) mod token;

use std::time::Duration;

/// Connection-state recovery settings, for [`ServerBuilder::recovery`](crate::ServerBuilder::recovery).
///
/// With recovery on, a connection whose transport ends without the client meaning it (the TCP
/// connection dropped, a heartbeat or write timeout, a slow consumer, a server shutdown) keeps
/// its session — id, namespaces, rooms — for [`session_ttl`](Self::session_ttl). A client that
/// reconnects with the session's secret resume token (sent in the `hello` frame) gets it back,
/// and, per namespace, every broadcast it missed, in order, exactly once, as long as the
/// namespace's history still holds them. The history window ([`history_size`](Self::history_size),
/// [`history_ttl`](Self::history_ttl)) and the session window are separate: a quiet client that
/// missed nothing recovers however old its last event is.
///
/// ```
/// use std::time::Duration;
/// use wsu::{Recovery, Server};
///
/// let server = Server::builder()
///     .recovery(
///         Recovery::default()
///             .session_ttl(Duration::from_secs(60))
///             .history_size(5_000)
///             .history_ttl(Duration::from_secs(120)),
///     )
///     .build()
///     .unwrap();
/// assert!(server.config().recovery.is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// How long a detached session waits for its client. Default 2 min.
    pub session_ttl: Duration,
    /// Broadcasts kept per namespace. Default 10,000.
    pub history_size: usize,
    /// How long a broadcast is kept. Default 5 min.
    pub history_ttl: Duration,
    /// Most bytes of broadcasts kept per namespace (the oldest go first). Default 16 MiB.
    pub history_bytes: usize,
    /// Most events replayed to one namespace of a resumed session; beyond it the namespace
    /// resumes with `recovered: false` (reason `too many`); the replay is also held to the
    /// outbound queue's byte bound ([`Config::max_queued_bytes`](crate::Config::max_queued_bytes)).
    /// Default 10,000.
    pub max_replay: usize,
    /// Most sessions kept waiting for their client at once; beyond, the oldest is ended (memory
    /// stays bounded however many clients drop). Default 100,000.
    pub max_detached: usize,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            session_ttl: Duration::from_secs(120),
            history_size: 10_000,
            history_ttl: Duration::from_secs(300),
            history_bytes: 16 << 20,
            max_replay: 10_000,
            max_detached: 100_000,
        }
    }
}

impl Recovery {
    /// Set [`session_ttl`](Self::session_ttl).
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Set [`history_size`](Self::history_size).
    pub fn history_size(mut self, size: usize) -> Self {
        self.history_size = size;
        self
    }

    /// Set [`history_ttl`](Self::history_ttl).
    pub fn history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = ttl;
        self
    }

    /// Set [`history_bytes`](Self::history_bytes).
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = bytes;
        self
    }

    /// Set [`max_replay`](Self::max_replay).
    pub fn max_replay(mut self, max: usize) -> Self {
        self.max_replay = max;
        self
    }

    /// Set [`max_detached`](Self::max_detached).
    pub fn max_detached(mut self, max: usize) -> Self {
        self.max_detached = max;
        self
    }
}
