//! The engine seam: publish/subscribe of already serialized frames on an existing broker.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

/// A boxed, `Send` future, as returned by [`Engine`] methods.
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message broker a cluster of wsu nodes talks through: Redis (`wsu-redis`), NATS
/// (`wsu-nats`) or, inside one process, [`MemoryBroker`](super::MemoryBroker).
///
/// An engine only moves opaque payloads between topics; the cluster layer of wsu (node ids,
/// heartbeat membership, node-directed requests and their answers, the inter-node format of
/// `PROTOCOL.md`) is written once on top of it. Delivery is **at most once**: what is published
/// while the broker is away is lost, and the engine says so with [`SinkEvent::Lost`] /
/// [`SinkEvent::Restored`].
///
/// # Contract
///
/// - [`subscribe`](Engine::subscribe) is called once per engine, with every topic the node
///   listens to; the engine delivers each message published on one of them (by any node, this
///   one included) to the sink, and **resubscribes them all by itself** after a reconnection.
/// - [`publish`](Engine::publish) never waits: the message is ordered when the method is called
///   (two publishes from one task arrive in that order on every subscriber), and the returned
///   future only reports the outcome. Dropping the future does not cancel the publish. When the
///   broker is away or the engine's own bounded queue is full it fails at once
///   ([`EngineError::Unavailable`], [`EngineError::Backlog`]), never by blocking the caller.
/// - No method panics on a broker failure; reconnection uses a backoff.
///
/// ```
/// use wsu::cluster::{Engine, EngineSink, MemoryBroker, SinkEvent};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let broker = MemoryBroker::new();
/// let engine = broker.engine();
/// let (sink, mut rx) = EngineSink::channel(16);
/// engine.subscribe(vec!["news".into()], sink).await.unwrap();
/// engine.publish("news", bytes::Bytes::from_static(b"hi")).await.unwrap();
/// match rx.recv().await {
///     Some(SinkEvent::Message { topic, payload }) => assert_eq!((&*topic, &payload[..]), ("news", &b"hi"[..])),
///     other => panic!("{other:?}"),
/// }
/// # }
/// ```
pub trait Engine: Send + Sync + 'static {
    /// A short name for logs and stats ("memory", "redis", "nats").
    fn name(&self) -> &'static str;

    /// The largest payload [`publish`](Engine::publish) accepts, in bytes.
    fn max_payload(&self) -> usize {
        1 << 20
    }

    /// Start delivering the messages of `topics` to `sink`; resolves once the subscription is
    /// in place (or failed: the engine keeps retrying in the background and reports
    /// [`SinkEvent::Restored`] when it succeeds).
    fn subscribe(
        &self,
        topics: Vec<String>,
        sink: EngineSink,
    ) -> EngineFuture<'_, Result<(), EngineError>>;

    /// Publish `payload` on `topic`. See the contract above: ordered now, never blocks.
    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> EngineFuture<'static, Result<(), EngineError>>;

    /// Flush what is queued (within a short bound), unsubscribe and drop the connections.
    fn close(&self) -> EngineFuture<'_, ()>;

    /// The engine's [`Streams`](super::Streams), if it has them: with them, recovery works
    /// across nodes (a client resumes on any node). Default: none.
    fn streams(&self) -> Option<&dyn super::Streams> {
        None
    }
}

/// Why an engine operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// The broker is not reachable right now (the engine is reconnecting).
    Unavailable(String),
    /// The engine's bounded publish queue is full.
    Backlog,
    /// The payload is larger than [`Engine::max_payload`].
    TooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The engine was closed.
    Closed,
    /// Any other broker error.
    Other(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Unavailable(e) => write!(f, "broker unavailable: {e}"),
            EngineError::Backlog => f.write_str("engine publish queue is full"),
            EngineError::TooLarge { size, max } => {
                write!(
                    f,
                    "payload of {size} bytes exceeds the engine's limit of {max}"
                )
            }
            EngineError::Closed => f.write_str("engine closed"),
            EngineError::Other(e) => write!(f, "broker error: {e}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// What an engine hands to its subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkEvent {
    /// A message published on a subscribed topic.
    Message {
        /// The topic it was published on.
        topic: Arc<str>,
        /// Its payload, as published.
        payload: Bytes,
    },
    /// The connection to the broker was lost: messages published from now on until
    /// [`Restored`](SinkEvent::Restored) may never arrive.
    Lost(String),
    /// The subscription is in place again after a [`Lost`](SinkEvent::Lost).
    Restored,
    /// An entry appended to a stream ([`Streams`](super::Streams)).
    Entry {
        /// The stream (a namespace name, without the prefix).
        stream: Arc<str>,
        /// Its position.
        pos: super::StreamPos,
        /// Its payload, as appended.
        payload: Bytes,
    },
}

/// The bounded queue an engine delivers into. Cheap to clone.
///
/// A full queue drops the message (counted in [`EngineReceiver::dropped`]): delivery across
/// nodes is at most once, and a slow node must not make the broker buffer without bound.
#[derive(Clone)]
pub struct EngineSink {
    tx: mpsc::Sender<SinkEvent>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for EngineSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineSink")
            .field("capacity", &self.tx.max_capacity())
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

impl EngineSink {
    /// A sink holding at most `capacity` undelivered events, and its receiving end.
    pub fn channel(capacity: usize) -> (EngineSink, EngineReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        (
            EngineSink {
                tx,
                dropped: dropped.clone(),
            },
            EngineReceiver { rx, dropped },
        )
    }

    /// Hand over one message; dropped (and counted) if the queue is full. Returns whether it
    /// was queued.
    pub fn deliver(&self, topic: Arc<str>, payload: Bytes) -> bool {
        match self.tx.try_send(SinkEvent::Message { topic, payload }) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Hand over one stream entry; dropped (and counted) if the queue is full. Returns whether
    /// it was queued.
    pub fn entry(&self, stream: Arc<str>, pos: super::StreamPos, payload: Bytes) -> bool {
        match self.tx.try_send(SinkEvent::Entry {
            stream,
            pos,
            payload,
        }) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Report that the broker connection was lost. Never blocks; a full queue still gets the
    /// news through the dropped counter.
    pub fn lost(&self, why: impl Into<String>) {
        if self.tx.try_send(SinkEvent::Lost(why.into())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Report that the subscription is in place again.
    pub fn restored(&self) {
        if self.tx.try_send(SinkEvent::Restored).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the receiving end is gone (the node stopped): the engine may stop delivering.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The receiving end of an [`EngineSink`].
#[derive(Debug)]
pub struct EngineReceiver {
    rx: mpsc::Receiver<SinkEvent>,
    dropped: Arc<AtomicU64>,
}

impl EngineReceiver {
    /// The next event; `None` once every sink clone is dropped.
    pub async fn recv(&mut self) -> Option<SinkEvent> {
        self.rx.recv().await
    }

    /// How many events were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The shared drop counter (the node's stats read it).
    pub(crate) fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

impl<E: Engine + ?Sized> Engine for Box<E> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn max_payload(&self) -> usize {
        (**self).max_payload()
    }
    fn subscribe(
        &self,
        topics: Vec<String>,
        sink: EngineSink,
    ) -> EngineFuture<'_, Result<(), EngineError>> {
        (**self).subscribe(topics, sink)
    }
    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> EngineFuture<'static, Result<(), EngineError>> {
        (**self).publish(topic, payload)
    }
    fn close(&self) -> EngineFuture<'_, ()> {
        (**self).close()
    }
    fn streams(&self) -> Option<&dyn super::Streams> {
        (**self).streams()
    }
}

impl<E: Engine + ?Sized> Engine for Arc<E> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn max_payload(&self) -> usize {
        (**self).max_payload()
    }
    fn subscribe(
        &self,
        topics: Vec<String>,
        sink: EngineSink,
    ) -> EngineFuture<'_, Result<(), EngineError>> {
        (**self).subscribe(topics, sink)
    }
    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> EngineFuture<'static, Result<(), EngineError>> {
        (**self).publish(topic, payload)
    }
    fn close(&self) -> EngineFuture<'_, ()> {
        (**self).close()
    }
    fn streams(&self) -> Option<&dyn super::Streams> {
        (**self).streams()
    }
}
