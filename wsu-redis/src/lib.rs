//! A Redis engine for wsu clusters: the nodes of a cluster talk through Redis pub/sub.
//!
//! [`RedisEngine`] implements [`wsu::cluster::Engine`] on two RESP3 connections to one Redis
//! server:
//!
//! - a **subscription** connection, whose push messages go straight to the node's
//!   [`EngineSink`], in the order Redis sends them. It is probed with a `PING` every second and
//!   resubscribed to every topic after a reconnection (backoff from 50 ms doubling to 2 s, with
//!   jitter); the sink hears [`SinkEvent::Lost`](wsu::cluster::SinkEvent::Lost) when it drops
//!   and [`SinkEvent::Restored`](wsu::cluster::SinkEvent::Restored) when it is back.
//! - a **publishing** connection, fed by a bounded queue that one task drains, sending all that
//!   is queued as one pipeline of `PUBLISH` commands. [`Engine::publish`] never waits on the
//!   network: it queues (or fails at once with [`EngineError::Unavailable`] while Redis is
//!   unreachable, [`EngineError::Backlog`] when the queue is full), and its future only reports
//!   the outcome.
//!
//! Delivery is at most once, as the [`Engine`] contract says: what is published while Redis is
//! away is lost.
//!
//! # Streams
//!
//! [`Engine::streams`] gives [`Streams`] (connection-state recovery across nodes), as
//! Centrifugo does it on Redis. Per stream, a meta hash `{<prefix>:s:<stream>}:m` (`e`: the
//! epoch, random when the hash is created; `s`: the top offset) and a Redis stream
//! `{<prefix>:s:<stream>}:x` whose entry IDs are the offsets (`<offset>-0`, field `d`). An
//! append is one Lua script (`EVALSHA`, sent whole after a `NOSCRIPT`) that creates the epoch
//! if there is none (deleting a leftover stream), `HINCRBY`s the offset, `XADD`s with an exact
//! `MAXLEN keep`, `PEXPIRE`s the stream to the TTL and the meta hash to at least a day, and
//! `PUBLISH`es the entry on `<prefix>:streams` — so the order of delivery is the order of
//! offsets. Appends, reads (a second script: `HMGET` + `XRANGE`), `SET … PX` and `GETDEL` go
//! through the publishing queue, ordered with publishes, failing at once like them; the
//! entries channel is subscribed on the subscription connection, with the node's topics.
//! Offsets are contiguous, so an entry's `prev` is its offset minus one. A Redis that restarts
//! without persistence loses the meta hash: the next append starts a new epoch at offset 1.
//!
//! # Failure detection
//!
//! - A server that dies or closes the connection is noticed at once (the connection reports
//!   it): the sink gets `Lost`, publishes fail with `Unavailable` from then on.
//! - A server that hangs with the connection open is noticed by a `PING` sent after every
//!   second without traffic, with a 1 s timeout: within about 2 s. A publish already sent to
//!   it fails after the 2 s response timeout.
//! - Reconnection is tried after 50 ms, then doubling up to 2 s (±25 % jitter); each attempt
//!   may take up to the 1 s connection timeout. A subscription that comes back reports
//!   `Restored` (with a server restarted after a 1 s outage: about 0.3 s after the restart in
//!   the tests, at most about 2.5 s).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use wsu_redis::RedisEngine;
//!
//! let server = wsu::Server::builder()
//!     .engine(RedisEngine::connect("redis://127.0.0.1:6379").await?)
//!     .build()?;
//! # let _ = server; Ok(()) }
//! ```
//!
//! URLs are those of the `redis` crate (`redis://[user:password@]host[:port][/db]`,
//! `rediss://` is not enabled); the engine always speaks RESP3, whatever `protocol=` says.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use redis::{Client, IntoConnectionInfo, ProtocolVersion};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use wsu::cluster::{Engine, EngineError, EngineFuture, EngineSink, Streams};

mod conn;
mod publisher;
mod streams;
mod subscriber;

use publisher::{Op, Outgoing, Publisher};
use subscriber::{Join, Route, Subscriber};

/// How long [`Engine::close`] waits for the publisher task, which flushes its queue within
/// [`publisher::CLOSE_FLUSH`].
const CLOSE_WAIT: Duration = Duration::from_millis(1200);

/// State shared by the engine and its tasks.
struct Shared {
    /// The URL, password redacted, for logs and errors.
    url: String,
    closed: AtomicBool,
    /// Whether the publishing connection is up.
    pub_up: AtomicBool,
    /// A [`SubState`].
    sub: AtomicU8,
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum SubState {
    /// `subscribe` was not called.
    None = 0,
    Up = 1,
    Down = 2,
}

impl Shared {
    fn unavailable(&self) -> EngineError {
        EngineError::Unavailable(format!("redis at {} is unreachable", self.url))
    }
}

/// Settings of a [`RedisEngine`], made by [`RedisEngine::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .connect().await to get the engine"]
pub struct RedisEngineBuilder {
    url: String,
    publish_queue: usize,
    max_payload: usize,
}

impl RedisEngineBuilder {
    /// How many publishes may wait to be sent (8192 by default); more fail with
    /// [`EngineError::Backlog`]. At least 1.
    pub fn publish_queue(mut self, n: usize) -> Self {
        self.publish_queue = n.max(1);
        self
    }

    /// The largest payload [`Engine::publish`] accepts, in bytes (1 MiB by default); larger
    /// ones fail with [`EngineError::TooLarge`]. Redis itself accepts up to 512 MiB.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Connect to Redis (must be called inside a Tokio runtime). Fails, naming the URL, if the
    /// URL is invalid or the first connection cannot be made; later losses are handled by
    /// reconnecting.
    pub async fn connect(self) -> Result<RedisEngine, EngineError> {
        let url = conn::redact(&self.url);
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| EngineError::Other(format!("invalid redis URL {url}: {e}")))?;
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis_settings);
        let client = Client::open(info)
            .map_err(|e| EngineError::Other(format!("invalid redis URL {url}: {e}")))?;
        let first = publisher::open(&client).await.map_err(|e| {
            EngineError::Unavailable(format!("cannot connect to redis at {url}: {e}"))
        })?;

        let shared = Arc::new(Shared {
            url,
            closed: AtomicBool::new(false),
            pub_up: AtomicBool::new(true),
            sub: AtomicU8::new(SubState::None as u8),
        });
        let (queue, rx) = mpsc::channel(self.publish_queue);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let publisher = tokio::spawn(
            Publisher {
                client: client.clone(),
                rx,
                shared: shared.clone(),
                shutdown: shutdown_rx,
            }
            .run(first),
        );
        Ok(RedisEngine {
            client,
            shared,
            queue,
            shutdown,
            max_payload: self.max_payload,
            tasks: Mutex::new(Tasks {
                publisher: Some(publisher),
                subscriber: None,
                joins: None,
                subscribed: false,
            }),
            streams: std::sync::OnceLock::new(),
        })
    }
}

struct Tasks {
    publisher: Option<JoinHandle<()>>,
    subscriber: Option<JoinHandle<()>>,
    /// Feeds the subscriber task.
    joins: Option<mpsc::UnboundedSender<Join>>,
    subscribed: bool,
}

/// A [`wsu::cluster::Engine`] on Redis pub/sub; see the [crate documentation](crate).
///
/// Made by [`RedisEngine::connect`] or [`RedisEngine::builder`]. Dropping it stops its tasks
/// and closes its connections (without the flush of [`Engine::close`]).
pub struct RedisEngine {
    client: Client,
    shared: Arc<Shared>,
    queue: mpsc::Sender<Outgoing>,
    shutdown: watch::Sender<bool>,
    max_payload: usize,
    tasks: Mutex<Tasks>,
    /// Set by [`Streams::start`].
    streams: std::sync::OnceLock<streams::Names>,
}

impl fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngine")
            .field("url", &self.shared.url)
            .field("connected", &self.is_connected())
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .field(
                "queued",
                &(self.queue.max_capacity() - self.queue.capacity()),
            )
            .finish()
    }
}

impl RedisEngine {
    /// Connect to the Redis server at `url` with the default settings; see
    /// [`RedisEngineBuilder::connect`].
    pub async fn connect(url: &str) -> Result<RedisEngine, EngineError> {
        Self::builder(url).connect().await
    }

    /// Settings for an engine on the Redis server at `url`.
    pub fn builder(url: impl Into<String>) -> RedisEngineBuilder {
        RedisEngineBuilder {
            url: url.into(),
            publish_queue: 8192,
            max_payload: 1 << 20,
        }
    }

    /// Whether the engine is connected right now: the publishing connection is up and, once
    /// [`subscribe`](Engine::subscribe) was called, so is the subscription.
    pub fn is_connected(&self) -> bool {
        !self.shared.closed.load(Ordering::SeqCst)
            && self.shared.pub_up.load(Ordering::SeqCst)
            && self.shared.sub.load(Ordering::SeqCst) != SubState::Down as u8
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue one operation carrying `payload_len` bytes of payload; the receiver gets its
    /// reply. Fails at once when the engine is closed, the payload too large, Redis away or the
    /// queue full.
    fn enqueue(
        &self,
        op: Op,
        payload_len: usize,
    ) -> Result<oneshot::Receiver<Result<redis::Value, EngineError>>, EngineError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(EngineError::Closed);
        }
        if payload_len > self.max_payload {
            return Err(EngineError::TooLarge {
                size: payload_len,
                max: self.max_payload,
            });
        }
        if !self.shared.pub_up.load(Ordering::SeqCst) {
            return Err(self.shared.unavailable());
        }
        let (done, rx) = oneshot::channel();
        self.queue
            .try_send(Outgoing { op, done })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EngineError::Backlog,
                mpsc::error::TrySendError::Closed(_) => EngineError::Closed,
            })?;
        Ok(rx)
    }

    /// Queue `op` and map its reply with `f`, as a future that does not borrow the engine.
    fn request<T: Send + 'static>(
        &self,
        op: Op,
        payload_len: usize,
        f: impl FnOnce(redis::Value) -> Result<T, EngineError> + Send + 'static,
    ) -> EngineFuture<'static, Result<T, EngineError>> {
        let queued = self.enqueue(op, payload_len);
        Box::pin(async move {
            match queued?.await {
                Ok(r) => f(r?),
                // The publisher stopped (engine closed) with this operation still queued.
                Err(_) => Err(EngineError::Closed),
            }
        })
    }

    /// Have the subscriber task listen to `routes` too (starting it if need be); the receiver
    /// gets the first outcome.
    fn join(
        &self,
        routes: Vec<(String, Route)>,
        sink: EngineSink,
    ) -> Result<oneshot::Receiver<Result<(), EngineError>>, EngineError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(EngineError::Closed);
        }
        let (first, first_rx) = oneshot::channel();
        let mut j = Join {
            routes,
            sink,
            first,
        };
        let mut tasks = self.tasks();
        if let Some(joins) = &tasks.joins {
            match joins.send(j) {
                Ok(()) => return Ok(first_rx),
                // The task ended (nobody listened any more): start another.
                Err(mpsc::error::SendError(back)) => j = back,
            }
        }
        let (joins, joins_rx) = mpsc::unbounded_channel();
        let _ = joins.send(j);
        self.shared
            .sub
            .store(SubState::Down as u8, Ordering::SeqCst);
        let task = Subscriber {
            client: self.client.clone(),
            joins: joins_rx,
            shared: self.shared.clone(),
            shutdown: self.shutdown.subscribe(),
        };
        tasks.subscriber = Some(tokio::spawn(task.run()));
        tasks.joins = Some(joins);
        Ok(first_rx)
    }
}

/// The outcome of a [`RedisEngine::join`].
async fn joined(
    started: Result<oneshot::Receiver<Result<(), EngineError>>, EngineError>,
) -> Result<(), EngineError> {
    match started?.await {
        Ok(r) => r,
        // The task stopped before subscribing: the engine closed meanwhile.
        Err(_) => Err(EngineError::Closed),
    }
}

impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn subscribe(
        &self,
        topics: Vec<String>,
        sink: EngineSink,
    ) -> EngineFuture<'_, Result<(), EngineError>> {
        let started = (|| {
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(EngineError::Closed);
            }
            {
                let mut tasks = self.tasks();
                if tasks.subscribed {
                    return Err(EngineError::Other(
                        "RedisEngine::subscribe may only be called once".into(),
                    ));
                }
                tasks.subscribed = true;
            }
            let routes = topics
                .into_iter()
                .map(|t| {
                    let route = Route::Topic {
                        topic: Arc::from(t.as_str()),
                        sink: sink.clone(),
                    };
                    (t, route)
                })
                .collect();
            self.join(routes, sink)
        })();
        Box::pin(joined(started))
    }

    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> EngineFuture<'static, Result<(), EngineError>> {
        let len = payload.len();
        let op = Op::Publish {
            topic: topic.into(),
            payload,
        };
        self.request(op, len, |_| Ok(()))
    }

    fn close(&self) -> EngineFuture<'_, ()> {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
        let (publisher, subscriber) = {
            let mut tasks = self.tasks();
            (tasks.publisher.take(), tasks.subscriber.take())
        };
        Box::pin(async move {
            if let Some(p) = publisher {
                let abort = p.abort_handle();
                match tokio::time::timeout(CLOSE_WAIT, p).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!("redis publisher task failed: {e}"),
                    Err(_) => abort.abort(),
                }
            }
            if let Some(s) = subscriber {
                let abort = s.abort_handle();
                match tokio::time::timeout(Duration::from_millis(200), s).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!("redis subscriber task failed: {e}"),
                    Err(_) => abort.abort(),
                }
            }
            self.shared.pub_up.store(false, Ordering::SeqCst);
        })
    }

    fn streams(&self) -> Option<&dyn Streams> {
        Some(self)
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        let tasks = self.tasks();
        for t in [&tasks.publisher, &tasks.subscriber].into_iter().flatten() {
            t.abort();
        }
    }
}
