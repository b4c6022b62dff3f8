//! Counters and gauges readable from the server handle.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::CloseCode;
use crate::sync::lock;

/// A snapshot of a server's counters and gauges, from [`Server::stats`](crate::Server::stats).
///
/// Counters only grow; gauges go up and down and return to their baseline when clients leave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Gauge: open connections: connection slots held, from the admission of the upgrade until
    /// the disconnect hooks have run (or until the connection's task was dropped, its hooks then
    /// running in a task of their own).
    pub connections: usize,
    /// Gauge: namespaces created on demand (through `allow_namespaces`) that currently exist.
    pub dynamic_namespaces: usize,
    /// Gauge: rooms that currently have members, over all namespaces.
    pub rooms: usize,
    /// Gauge: server→client acks waiting for an answer.
    pub pending_acks: usize,
    /// Gauge: bytes queued for sending over all connections (not yet handed to the socket).
    pub queued_bytes: usize,
    /// Counter: connections accepted (upgraded) since start.
    pub connections_total: u64,
    /// Counter: HTTP requests refused before the upgrade (bad request, origin, capacity, timeout).
    pub handshakes_refused: u64,
    /// Counter: messages received from clients (data frames).
    pub messages_in: u64,
    /// Counter: messages written to clients (data frames).
    pub messages_out: u64,
    /// Counter: messages dropped because a client's outbound queue was full.
    pub messages_dropped: u64,
    /// Counter: invalid client messages (malformed, wrong types, unknown type, bad names...).
    pub protocol_errors: u64,
    /// Counter: server→client acks that timed out.
    pub ack_timeouts: u64,
    /// Counter: acks from clients with an unknown, late or duplicate id (ignored).
    pub unknown_acks: u64,
    /// Counter: handler or hook panics that were contained.
    pub handler_panics: u64,
    /// Counter: hooks cancelled at their deadline ([`ServerBuilder::hook_timeout`](crate::ServerBuilder::hook_timeout)).
    pub hook_timeouts: u64,
    /// Counter: client requests refused for rate ([`RateLimitPolicy::Reject`](crate::RateLimitPolicy::Reject));
    /// under backpressure nothing is refused and pauses count in `backpressure_pauses`.
    pub rate_limited: u64,
    /// Counter: times a connection stopped reading its client for backpressure (its outbound
    /// queue over its bound, or out of rate-limit tokens).
    pub backpressure_pauses: u64,
    /// Counter: closed connections by close code (1006 when the peer dropped without a close frame).
    pub closes: BTreeMap<u16, u64>,
    /// Nodes in the cluster, this one included, as this node sees them (0 without an engine).
    pub cluster_nodes: usize,
    /// Whether the engine is connected to its broker (false without an engine).
    pub cluster_connected: bool,
    /// Messages (broadcasts, requests, answers, heartbeats) the broker accepted from this node.
    pub cluster_published: u64,
    /// Messages the engine could not publish (broker away, queue full, too large): broadcasts
    /// among them did not reach other nodes.
    pub cluster_publish_failed: u64,
    /// Messages received from other nodes.
    pub cluster_received: u64,
    /// Messages from other nodes dropped because this node's inbound queue was full.
    pub cluster_dropped: u64,
    /// Messages from other nodes that did not decode (or of another format version).
    pub cluster_invalid: u64,
    /// Times the engine lost its broker.
    pub cluster_outages: u64,
    /// Cluster queries in which some node did not answer in time.
    pub cluster_request_timeouts: u64,
    /// Counter: stream entries that never reached this node (with the cluster's streams: an
    /// entry's predecessor was not the last one seen). Its members missed them; a resume from
    /// before such a gap reads the engine.
    pub cluster_stream_gaps: u64,
    /// Gauge: sessions waiting for their client after their transport ended (recovery on).
    pub sessions_detached: usize,
    /// Counter: connections that resumed a session with a valid token.
    pub sessions_resumed: u64,
    /// Counter: sessions stored in the cluster's engine when their transport ended (recovery
    /// with an engine that has streams: they can be resumed on any node).
    pub sessions_parked: u64,
    /// Counter: resume attempts refused (invalid, expired, reused or unknown token): those
    /// connections got a fresh session.
    pub sessions_refused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicUsize,
    pub(crate) dynamic_namespaces: AtomicUsize,
    pub(crate) pending_acks: AtomicUsize,
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) connections_total: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) messages_dropped: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) ack_timeouts: AtomicU64,
    pub(crate) unknown_acks: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) hook_timeouts: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) backpressure_pauses: AtomicU64,
    pub(crate) sessions_resumed: AtomicU64,
    pub(crate) sessions_refused: AtomicU64,
    pub(crate) sessions_parked: AtomicU64,
    closes: Mutex<BTreeMap<u16, u64>>,
}

impl Counters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_close(&self, code: CloseCode) {
        *lock(&self.closes).entry(code.as_u16()).or_insert(0) += 1;
    }

    pub(crate) fn snapshot(&self, rooms: usize) -> Stats {
        Stats {
            connections: self.connections.load(Relaxed),
            dynamic_namespaces: self.dynamic_namespaces.load(Relaxed),
            rooms,
            pending_acks: self.pending_acks.load(Relaxed),
            queued_bytes: self.queued_bytes.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            handshakes_refused: self.handshakes_refused.load(Relaxed),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            messages_dropped: self.messages_dropped.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            ack_timeouts: self.ack_timeouts.load(Relaxed),
            unknown_acks: self.unknown_acks.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            hook_timeouts: self.hook_timeouts.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            backpressure_pauses: self.backpressure_pauses.load(Relaxed),
            sessions_resumed: self.sessions_resumed.load(Relaxed),
            sessions_refused: self.sessions_refused.load(Relaxed),
            sessions_parked: self.sessions_parked.load(Relaxed),
            closes: lock(&self.closes).clone(),
            ..Stats::default()
        }
    }
}
