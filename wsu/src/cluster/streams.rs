//! The optional second half of an engine: ordered, replayable streams (one per namespace) and
//! a store of detached sessions — what connection-state recovery needs so that a client can
//! resume on any node (PROTOCOL.md §13).

use std::time::Duration;

use bytes::Bytes;

use super::engine::{EngineError, EngineFuture, EngineSink};

/// Where an appended entry landed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamPos {
    /// Its offset in the stream. Offsets increase strictly within a stream; they need not be
    /// contiguous (see `prev`).
    pub offset: u64,
    /// The offset of the entry before it in the same stream (0 for the first of an epoch).
    pub prev: u64,
    /// The stream's epoch: it changes when the broker lost the stream (and offsets restart).
    pub epoch: String,
}

impl StreamPos {
    /// A position.
    pub fn new(offset: u64, prev: u64, epoch: impl Into<String>) -> Self {
        StreamPos {
            offset,
            prev,
            epoch: epoch.into(),
        }
    }
}

/// How much of a stream the broker keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamLimits {
    /// Most entries kept (older ones are trimmed; approximate trimming is fine if it keeps at
    /// least this many).
    pub keep: usize,
    /// Entries older than this may be trimmed.
    pub ttl: Duration,
}

impl StreamLimits {
    /// Limits.
    pub fn new(keep: usize, ttl: Duration) -> Self {
        StreamLimits { keep, ttl }
    }
}

/// What [`Streams::read`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamRead {
    /// The stream's current epoch (a fresh one if the stream does not exist).
    pub epoch: String,
    /// The offset of the last entry ever appended in this epoch (0: none).
    pub top: u64,
    /// Entries after the requested offset, in order: (position, payload as appended). Each
    /// position's `prev` lets the reader check that nothing is missing between `after` and the
    /// first entry (`entries[0].0.prev == after`) and between entries.
    pub entries: Vec<(StreamPos, Bytes)>,
}

impl StreamRead {
    /// A read result.
    pub fn new(epoch: impl Into<String>, top: u64, entries: Vec<(StreamPos, Bytes)>) -> Self {
        StreamRead {
            epoch: epoch.into(),
            top,
            entries,
        }
    }
}

/// Ordered, replayable streams and a session store on a broker: Redis (a script that assigns the
/// offset, appends to a stream and publishes; `SET PX` / `GETDEL`), NATS (JetStream), or
/// [`MemoryBroker`](super::MemoryBroker). An [`Engine`](super::Engine) offers them through
/// [`Engine::streams`](super::Engine::streams); without them, recovery stays per node.
///
/// # Contract
///
/// - [`start`](Streams::start) is called once, before anything else, with the cluster's prefix
///   (every key and subject the engine uses starts with it) and a sink. From then on the engine
///   delivers **every entry appended to any stream under that prefix, by any node, this one
///   included**, to the sink with [`EngineSink::entry`], in offset order per stream. After a loss
///   of the broker connection it reports [`SinkEvent::Lost`](super::SinkEvent::Lost) /
///   [`SinkEvent::Restored`](super::SinkEvent::Restored) (entries appended in between may never
///   be delivered: the node notices the gap through `prev` and reads them when it needs them).
/// - [`append`](Streams::append) assigns the next offset of the stream atomically with storing
///   the entry and handing it to subscribers (so delivery order = offset order). It is ordered
///   at call time like [`Engine::publish`](super::Engine::publish); its future reports the
///   position. It fails at once when the broker is away.
/// - [`read`](Streams::read) returns what the broker still has after an offset.
/// - [`put`](Streams::put) / [`take`](Streams::take) store small values with a TTL; `take` is
///   atomic (of two concurrent takers, one gets the value).
pub trait Streams: Send + Sync + 'static {
    /// Start delivering every stream's entries under `prefix` to `sink` (see the contract).
    fn start(&self, prefix: &str, sink: EngineSink) -> EngineFuture<'_, Result<(), EngineError>>;

    /// Append `payload` to `stream` (a namespace name: any string), trimming to `limits`.
    fn append(
        &self,
        stream: &str,
        payload: Bytes,
        limits: StreamLimits,
    ) -> EngineFuture<'static, Result<StreamPos, EngineError>>;

    /// At most `limit` entries of `stream` after offset `after`, in order.
    fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> EngineFuture<'static, Result<StreamRead, EngineError>>;

    /// Keep `value` under `key` for `ttl`, replacing any value.
    fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> EngineFuture<'static, Result<(), EngineError>>;

    /// Return the value under `key` and delete it, atomically; `None` if there is none (or it
    /// expired).
    fn take(&self, key: &str) -> EngineFuture<'static, Result<Option<Bytes>, EngineError>>;
}
