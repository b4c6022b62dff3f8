//! Settings shared by every server under test and the load generator.

use std::time::Duration;

/// Heartbeat: every server sends a ping this often...
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(5);
/// ...and closes a connection that has not answered (Socket.IO `pingTimeout`) within this time
/// after a ping. wsu and the raw server close a connection silent for `PING_INTERVAL +
/// PING_TIMEOUT` (their `read_timeout`), which is the same bound.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The heartbeat a server under test runs with: [`PING_INTERVAL`] and [`PING_TIMEOUT`] in
/// every wall-clock measurement; `wsu-bench counts` stretches both to an hour, so that no ping
/// (whose number would grow with the run's duration, not with its work) falls into a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    /// A ping this often.
    pub(crate) interval: Duration,
    /// Close a connection that has not answered within this time after a ping.
    pub(crate) timeout: Duration,
}

impl Heartbeat {
    /// The benchmark's heartbeat.
    pub(crate) const DEFAULT: Heartbeat = Heartbeat {
        interval: PING_INTERVAL,
        timeout: PING_TIMEOUT,
    };

    /// Silent for a run of `wsu-bench counts`: nothing is sent, nobody times out.
    pub(crate) const SILENT: Heartbeat = Heartbeat {
        interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(3600),
    };
}

/// Outbound queue per connection, in messages, for the servers that let it be set (wsu's
/// default; the raw reference uses the same).
pub(crate) const OUTBOX: usize = 1024;

/// Most frames fed into one flush by the raw reference server (as wsu).
pub(crate) const MAX_BATCH: usize = 64;

/// Read buffer per connection (tungstenite `read_buffer_size`) for the Rust servers.
pub(crate) const READ_BUFFER: usize = 4 * 1024;
