//! Server configuration and its defaults.

use std::time::Duration;

use crate::OriginPolicy;

/// What happens when a client does not read fast enough and its outbound queue is full.
///
/// Every message that cannot be queued is counted in [`Stats::messages_dropped`](crate::Stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Close the connection with [`CloseCode::SLOW_CONSUMER`](crate::CloseCode::SLOW_CONSUMER)
    /// (4001): the client learns it missed messages and can reconnect and resynchronise. The
    /// default.
    #[default]
    Disconnect,
    /// Drop the message for that client only and keep the connection (like the seed, but counted).
    /// Use it for "volatile" data such as cursor positions, where the next message supersedes the
    /// last.
    DropMessage,
}

/// A per-connection rate limit on client requests (`event`, `join` and `leave` messages): a token
/// bucket refilled at `per_second`, holding at most `burst` tokens. What happens to a request
/// over the limit is its [`RateLimitPolicy`]; it is never counted as an invalid message.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Maximum burst size.
    pub burst: f64,
    /// What happens to requests over the limit. Default: backpressure.
    pub policy: RateLimitPolicy,
}

/// What happens to a client request over its connection's [`RateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RateLimitPolicy {
    /// Stop reading from that client until a token is due again: TCP slows the client down,
    /// every request is still served, in order, and nothing is answered with an error. The
    /// default. (Other clients are unaffected; the heartbeat does not count the pause against
    /// the client.)
    #[default]
    Backpressure,
    /// Answer the request at once with an `error` (`rate limit exceeded`, same `event` and
    /// `ackId`) and drop it. The refusal is not counted as an invalid message.
    Reject,
}

/// The effective configuration of a server (see [`ServerBuilder`](crate::ServerBuilder) for the
/// options, which set these fields).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Which `Origin`s may connect. Default: same origin, or no `Origin` header.
    pub origins: OriginPolicy,
    /// Path of the upgrade endpoint for [`Server::serve`](crate::Server::serve). Default `/ws`.
    pub path: String,
    /// tungstenite read buffer per connection, allocated up front. Default 4 KiB.
    pub read_buffer_size: usize,
    /// Bytes buffered before a write is forced (the batch size of one flush). Default 32 KiB.
    pub write_buffer_size: usize,
    /// Close a connection from which nothing (no message, no pong) arrived for this long.
    /// Default 30 s (the seed's read timeout).
    pub read_timeout: Duration,
    /// Close a connection whose write does not complete within this time. Default 10 s.
    pub write_timeout: Duration,
    /// Interval of WebSocket pings sent by the server. Default 15 s.
    pub ping_interval: Duration,
    /// Default timeout of [`Socket::emit_with_ack`](crate::Socket::emit_with_ack). Default 5 s.
    pub ack_timeout: Duration,
    /// Time allowed for the HTTP upgrade request to arrive. Default 10 s.
    pub handshake_timeout: Duration,
    /// Largest message (and frame) accepted from a client; larger ones close the connection with
    /// 1009. Default 64 KiB.
    pub max_message_size: usize,
    /// Outbound queue bound per connection, in messages. Default 1024.
    pub max_queued_messages: usize,
    /// Outbound queue bound per connection, in bytes. Default 4 MiB.
    pub max_queued_bytes: usize,
    /// What to do when a client's outbound queue is full. Default: disconnect with 4001.
    pub slow_consumer: SlowConsumerPolicy,
    /// Maximum open connections; further upgrade requests get `503`. Default: unlimited (bounded
    /// by the process's open-file limit).
    pub max_connections: Option<usize>,
    /// Client requests waiting behind a running handler, per connection. Default 64.
    pub max_pending_requests: usize,
    /// Server→client acks awaiting an answer, per connection. Default 128.
    pub max_pending_acks: usize,
    /// Rooms one connection may be in, over all namespaces. Default 256.
    pub max_rooms_per_connection: usize,
    /// Namespaces one connection may be in. Default 32.
    pub max_namespaces_per_connection: usize,
    /// Invalid messages tolerated per connection in `invalid_message_window` before closing with
    /// 1008. Default 20.
    pub max_invalid_messages: u32,
    /// Window for `max_invalid_messages`. Default 10 s.
    pub invalid_message_window: Duration,
    /// Optional rate limit on client requests. Default: none.
    pub rate_limit: Option<RateLimit>,
    /// The grace period of [`Server::shutdown`](crate::Server::shutdown): it returns within this
    /// time in every case. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Deadline of each hook run: the connect hooks of a connection (the global one and `/`'s,
    /// together), each namespace connect hook run by a `join`, each disconnect hook. A hook past
    /// it is cancelled (the connect hooks then close their connection with 1011, a namespace
    /// connect hook answers its `join` with `internal error`). Default 10 s.
    pub hook_timeout: Duration,
    /// Send the `hello` frame (connection id, resume token, versions, limits) as the first frame
    /// of every connection. Default true; seed clients that fail on a message type they do not
    /// know need it off.
    pub hello: bool,
    /// Connection-state recovery (sessions, resume tokens, history). Default: off. See
    /// [`Recovery`](crate::Recovery).
    pub recovery: Option<crate::Recovery>,
    /// Presence: per room, who is there, with `presence` frames to its members when that
    /// changes (see [`ServerBuilder::presence`](crate::ServerBuilder::presence)). Default false.
    pub presence: bool,
    /// Echo every data frame back unchanged instead of dispatching it (WebSocket conformance
    /// testing only; see `ServerBuilder::echo_mode`). Default false.
    pub(crate) echo_mode: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            origins: OriginPolicy::default(),
            path: "/ws".to_owned(),
            read_buffer_size: 4 * 1024,
            write_buffer_size: 32 * 1024,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            ack_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 64 * 1024,
            max_queued_messages: 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            max_connections: None,
            max_pending_requests: 64,
            max_pending_acks: 128,
            max_rooms_per_connection: 256,
            max_namespaces_per_connection: 32,
            max_invalid_messages: 20,
            invalid_message_window: Duration::from_secs(10),
            rate_limit: None,
            shutdown_timeout: Duration::from_secs(10),
            hook_timeout: Duration::from_secs(10),
            hello: true,
            recovery: None,
            presence: false,
            echo_mode: false,
        }
    }
}

impl Config {
    /// The tungstenite configuration derived from this one.
    pub(crate) fn websocket(&self) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            // A flush holds at most what the outbound queue may hold (messages larger than
            // `max_queued_bytes` are refused when queued) plus one batch of replies.
            .max_write_buffer_size(self.max_queued_bytes * 2 + self.write_buffer_size * 2)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}
