//! NATS engine for wsu clusters: core NATS publish/subscribe through [`async-nats`](async_nats).
//!
//! A [`NatsEngine`] is one node's connection to a `nats-server` (or a NATS cluster reached
//! through one URL). It implements [`wsu::cluster::Engine`]: the cluster layer of wsu publishes
//! already serialized frames on subjects such as `wsu.all` or `wsu.node.<id>` and receives what
//! the other nodes publish.
//!
//! ```no_run
//! use wsu_nats::NatsEngine;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = wsu::Server::builder()
//!     .engine(NatsEngine::connect("nats://127.0.0.1:4222").await?)
//!     .build()?;
//! # let _ = server; Ok(()) }
//! ```
//!
//! # Behaviour
//!
//! - **Delivery is at most once** (core NATS; only [`Streams`](#streams) use JetStream): what is published while the
//!   connection is down is lost, and the engine says so with
//!   [`SinkEvent::Lost`](wsu::cluster::SinkEvent::Lost) /
//!   [`SinkEvent::Restored`](wsu::cluster::SinkEvent::Restored).
//! - **Publishing never waits on the network.** [`Engine::publish`] checks the connection
//!   state and the payload size, then pushes the message into a bounded queue (8192 messages by
//!   default, see [`NatsEngineBuilder::publish_queue`]) read by one publisher task, which hands
//!   the messages to the client and flushes once per batch. The returned future only reports
//!   the outcome of that flush. While disconnected, a publish fails at once with
//!   [`EngineError::Unavailable`] (nothing is buffered for later); a full queue gives
//!   [`EngineError::Backlog`].
//! - **Order**: messages published from one engine on one subject arrive in that order at every
//!   subscriber. (Each subject is one NATS subscription with its own channel inside the client,
//!   so messages on *different* subjects may be interleaved differently.)
//! - **Reconnection**: the client reconnects with a backoff (50 ms doubling to 2 s, forever) and
//!   resubscribes every subject by itself. `Restored` is reported only once a round trip through
//!   the server proves that the subscriptions are in place again.
//! - A dead server is noticed at once when its socket closes, and otherwise within about three
//!   [`ping_interval`](NatsEngineBuilder::ping_interval)s (500 ms by default).
//!
//! # Streams
//!
//! The engine also offers [`wsu::cluster::Streams`] (so recovery works across nodes), on
//! JetStream: the server must run with JetStream enabled (`nats-server -js`; 2.9 is enough).
//!
//! - **One JetStream stream per cluster prefix**, `{PREFIX}_wsu_hist` (the prefix with anything
//!   but `[A-Za-z0-9_-]` replaced by `_`), file storage, on the subjects `{prefix}.h.>`. A wsu
//!   stream (any string) is the subject `{prefix}.h.n<hex of its bytes>`.
//! - **Offsets are JetStream stream sequences**: increasing per wsu stream, not contiguous.
//!   Each append is published with `Nats-Expected-Last-Subject-Sequence` set to the last
//!   sequence of its subject (cached per subject; on a conflict with another node the actual
//!   one is taken from the error and the append retried), and carries that same value as
//!   `prev` in the header `Wsu-Prev`. Appends to one wsu stream run one at a time in call
//!   order (one round trip each); different streams run concurrently. An append fails at once
//!   with [`EngineError::Unavailable`] while disconnected, and with [`EngineError::Backlog`]
//!   when [`publish_queue`](NatsEngineBuilder::publish_queue) appends are already queued.
//! - **Limits**: the stream's `max_msgs_per_subject` and `max_age` are the largest
//!   [`StreamLimits`] any append asked for (raised by updating the stream; never lowered).
//!   A wsu stream whose `keep` is below that is trimmed by a subject purge (`keep`) every
//!   `keep / 2` appends (so between `keep` and `1.5 × keep` entries are kept); a smaller `ttl`
//!   than the largest one is not enforced (entries may live longer, as the contract allows).
//!   If all of a stream's entries expired, its next entry has `prev` 0 and `top` is 0.
//! - **Epoch**: the JetStream stream's creation time. It survives a server restart with its
//!   store, and changes if the stream is deleted and recreated (the engine recreates it when
//!   an append finds it missing, and rereads it after every reconnection).
//! - **Delivery**: one ordered pull consumer (`DeliverPolicy::New`) on the whole stream;
//!   after a reconnection it is recreated (from the new end, entries in between are not
//!   delivered) and only then is [`SinkEvent::Restored`](wsu::cluster::SinkEvent::Restored)
//!   reported.
//! - **Reads**: a short-lived pull consumer filtered on the subject, from `after + 1`, fetched
//!   once (`limit` messages) and deleted; `top` is the subject's last sequence.
//! - **Sessions**: a key-value bucket `{PREFIX}_wsu_sess` (history 1, keys hex-encoded). Each
//!   value carries its TTL in a header and `take` ignores a value older than its TTL (by the
//!   server's timestamp against this host's clock); the bucket's `max_age` is the largest TTL
//!   asked for, which removes them eventually. `take` reads the value, then deletes it with the
//!   expected revision: of two concurrent takers, only one succeeds.
//!
//! # Known limitation
//!
//! async-nats 0.46 bounds the TCP connect of a reconnection attempt by
//! [`connection_timeout`](NatsEngineBuilder::connection_timeout) but not the wait for the
//! server's `INFO` that follows: a peer that accepts connections and then never speaks (a wedged
//! server, a black-holing proxy) stalls reconnection until that socket closes. Publishes keep
//! failing at once with [`EngineError::Unavailable`] meanwhile; nothing blocks or panics.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::timeout;
use wsu::cluster::{
    Engine, EngineError, EngineFuture, EngineSink, StreamLimits, StreamPos, StreamRead, Streams,
};

mod streams;

/// Messages the publisher task takes from the queue at once (one flush each).
const BATCH: usize = 512;
/// How long the publisher task waits for one batch to be flushed before reporting failure.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the publisher task waits for the client to accept one message.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(1);
/// What [`Engine::close`] spends on flushing what is queued.
const CLOSE_FLUSH: Duration = Duration::from_millis(800);
/// What [`Engine::close`] spends on draining the client.
const CLOSE_DRAIN: Duration = Duration::from_millis(200);
/// How long the probe after a reconnection may take before `Restored` is reported anyway.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The default capacity of the publish queue.
pub const DEFAULT_PUBLISH_QUEUE: usize = 8192;

/// Settings for a [`NatsEngine`]; made by [`NatsEngine::builder`].
///
/// ```no_run
/// # async fn run() -> Result<(), wsu::cluster::EngineError> {
/// let engine = wsu_nats::NatsEngine::builder("nats://127.0.0.1:4222")
///     .publish_queue(16_384)
///     .connect()
///     .await?;
/// # let _ = engine; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NatsEngineBuilder {
    url: String,
    publish_queue: usize,
    ping_interval: Duration,
    connection_timeout: Duration,
    name: String,
}

impl NatsEngineBuilder {
    /// The capacity of the publish queue, in messages (8192 by default, at least 1). A publish
    /// that finds it full fails with [`EngineError::Backlog`].
    pub fn publish_queue(mut self, capacity: usize) -> Self {
        self.publish_queue = capacity.max(1);
        self
    }

    /// How often the client pings the server (500 ms by default); three unanswered pings
    /// count as a lost connection.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long one connection attempt may take (2 s by default).
    pub fn connection_timeout(mut self, limit: Duration) -> Self {
        self.connection_timeout = limit;
        self
    }

    /// The connection name the server shows in its monitoring (`"wsu"` by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Connect. The first attempt is not retried: an unreachable server fails with
    /// [`EngineError::Unavailable`] naming the URL. Later disconnections are retried forever.
    pub async fn connect(self) -> Result<NatsEngine, EngineError> {
        let (events_tx, events_rx) = mpsc::channel::<Event>(256);
        let options = ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(self.connection_timeout)
            .ping_interval(self.ping_interval)
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay)
            // Bounded queues inside the client: commands (publishes) and each subscription.
            .client_capacity(4096)
            .subscription_capacity(16_384)
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    if let Err(e) = tx.try_send(event) {
                        tracing::warn!(event = %e.into_inner(), "nats engine: event queue full, event dropped");
                    }
                }
            });
        let client = options.connect(self.url.as_str()).await.map_err(|e| {
            EngineError::Unavailable(format!("cannot connect to {}: {e}", self.url))
        })?;
        let max_payload = match client.server_info().max_payload {
            0 => DEFAULT_MAX_PAYLOAD,
            n => n,
        };
        // Subscribed before anything else, so that after a reconnection it is resubscribed
        // first: its probe coming back proves every other subscription is in place.
        let probe_subject = client.new_inbox();
        let probe = client
            .subscribe(probe_subject.clone())
            .await
            .map_err(|e| EngineError::Other(format!("nats subscribe: {e}")))?;
        let shared = Arc::new(Shared {
            url: self.url.clone(),
            closed: AtomicBool::new(false),
            max_payload: AtomicUsize::new(max_payload),
            slow_consumers: AtomicU64::new(0),
            link: Mutex::new(Link::default()),
            conn: watch::Sender::new(Conn {
                up: true,
                generation: 0,
            }),
        });
        let (queue_tx, queue_rx) = mpsc::channel(self.publish_queue);
        let publisher = tokio::spawn(publisher(client.clone(), queue_rx));
        let monitor = tokio::spawn(monitor(
            client.clone(),
            shared.clone(),
            events_rx,
            probe,
            probe_subject,
        ));
        tracing::info!(url = %self.url, max_payload, "nats engine connected");
        Ok(NatsEngine {
            client,
            shared,
            publish_queue: self.publish_queue,
            hist: OnceLock::new(),
            starting: tokio::sync::Mutex::new(()),
            queue: Mutex::new(Some(queue_tx)),
            publisher: Mutex::new(Some(publisher)),
            tasks: Mutex::new(vec![monitor.abort_handle()]),
        })
    }
}

const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// 50 ms, doubling up to 2 s.
fn reconnect_delay(attempts: usize) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(6);
    Duration::from_millis(50u64 << exp).min(Duration::from_secs(2))
}

/// A wsu cluster [`Engine`] on core NATS. See the [crate documentation](crate).
///
/// Dropping it stops its tasks and closes the connection (without the flush of
/// [`Engine::close`]).
pub struct NatsEngine {
    client: Client,
    shared: Arc<Shared>,
    publish_queue: usize,
    /// The streams side, once [`Streams::start`] ran.
    hist: OnceLock<Arc<streams::Hist>>,
    starting: tokio::sync::Mutex<()>,
    /// `None` once closed.
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    publisher: Mutex<Option<JoinHandle<()>>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl std::fmt::Debug for NatsEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEngine")
            .field("url", &self.shared.url)
            .field("state", &self.client.connection_state())
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

struct Shared {
    url: String,
    closed: AtomicBool,
    max_payload: AtomicUsize,
    slow_consumers: AtomicU64,
    link: Mutex<Link>,
    /// The connection as the monitor sees it, for the streams' consumer.
    conn: watch::Sender<Conn>,
}

/// Whether the connection is up, and how many times it was restored.
#[derive(Debug, Clone, Copy)]
struct Conn {
    up: bool,
    generation: u64,
}

/// The subscribers, and whether they were told the connection is lost.
#[derive(Default)]
struct Link {
    sinks: Vec<EngineSink>,
    lost: bool,
}

/// One queued publish.
struct Job {
    subject: String,
    payload: Bytes,
    done: oneshot::Sender<Result<(), EngineError>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NatsEngine {
    /// Connect to `url` (`nats://host:port`, or several URLs separated by commas) with the
    /// default settings; see [`NatsEngineBuilder::connect`].
    pub fn connect(url: &str) -> impl Future<Output = Result<NatsEngine, EngineError>> + Send {
        Self::builder(url).connect()
    }

    /// Settings for a connection to `url`.
    pub fn builder(url: impl Into<String>) -> NatsEngineBuilder {
        NatsEngineBuilder {
            url: url.into(),
            publish_queue: DEFAULT_PUBLISH_QUEUE,
            ping_interval: Duration::from_millis(500),
            connection_timeout: Duration::from_secs(2),
            name: "wsu".into(),
        }
    }

    /// Whether the connection to the server is up right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// How many times the client reported a slow consumer: messages it dropped because a
    /// subscription's channel was full.
    pub fn slow_consumer_events(&self) -> u64 {
        self.shared.slow_consumers.load(Ordering::Relaxed)
    }

    fn unavailable(&self) -> EngineError {
        EngineError::Unavailable(format!("not connected to {}", self.shared.url))
    }

    fn try_publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> Result<oneshot::Receiver<Result<(), EngineError>>, EngineError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(EngineError::Closed);
        }
        let max = self.shared.max_payload.load(Ordering::Relaxed);
        if payload.len() > max {
            return Err(EngineError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        check_subject(topic, false)?;
        if !self.is_connected() {
            return Err(self.unavailable());
        }
        let (done, rx) = oneshot::channel();
        let job = Job {
            subject: topic.to_owned(),
            payload,
            done,
        };
        let queue = lock(&self.queue);
        let Some(queue) = queue.as_ref() else {
            return Err(EngineError::Closed);
        };
        match queue.try_send(job) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => Err(EngineError::Backlog),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(EngineError::Closed),
        }
    }
}

/// A NATS subject: non-empty tokens separated by dots, no whitespace; wildcard tokens (`*`,
/// `>`) only when subscribing.
fn check_subject(subject: &str, wildcards: bool) -> Result<(), EngineError> {
    let valid = !subject.is_empty()
        && !subject.chars().any(|c| c.is_whitespace() || c.is_control())
        && subject
            .split('.')
            .all(|t| !t.is_empty() && (wildcards || (t != "*" && t != ">")));
    if valid {
        Ok(())
    } else {
        Err(EngineError::Other(format!(
            "invalid NATS subject {subject:?}"
        )))
    }
}

impl Engine for NatsEngine {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn max_payload(&self) -> usize {
        self.shared.max_payload.load(Ordering::Relaxed)
    }

    fn subscribe(
        &self,
        topics: Vec<String>,
        sink: EngineSink,
    ) -> EngineFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(EngineError::Closed);
            }
            for t in &topics {
                check_subject(t, true)?;
            }
            let mut subs = Vec::with_capacity(topics.len());
            for topic in topics {
                // Only waits if the client's command queue is full.
                let sub =
                    self.client.subscribe(topic.clone()).await.map_err(|e| {
                        EngineError::Other(format!("nats subscribe to {topic}: {e}"))
                    })?;
                let topic: Arc<str> = topic.into();
                subs.push(sub.map(move |m| (topic.clone(), m)));
            }
            // The subscriptions are in place once a probe published after them comes back.
            if self.is_connected() {
                let subject = self.client.new_inbox();
                match self.client.subscribe(subject.clone()).await {
                    Ok(mut barrier) => {
                        if let Err(why) = round_trip(&self.client, &mut barrier, &subject, 0).await
                        {
                            tracing::warn!(url = %self.shared.url, %why, "nats engine: subscription not confirmed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(url = %self.shared.url, error = %e, "nats engine: subscription not confirmed")
                    }
                }
            }
            {
                let mut link = lock(&self.shared.link);
                if link.lost {
                    sink.lost(format!("connection to {} lost", self.shared.url));
                }
                link.sinks.push(sink.clone());
            }
            let forward = tokio::spawn(async move {
                let mut all = futures_util::stream::select_all(subs);
                while let Some((topic, msg)) = all.next().await {
                    if sink.is_closed() {
                        break;
                    }
                    // A wildcard subscription delivers under the subject it was published on.
                    let topic = if *topic == *msg.subject {
                        topic
                    } else {
                        Arc::from(msg.subject.as_str())
                    };
                    sink.deliver(topic, msg.payload);
                }
                // Dropping the subscribers unsubscribes them.
            });
            lock(&self.tasks).push(forward.abort_handle());
            Ok(())
        })
    }

    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> EngineFuture<'static, Result<(), EngineError>> {
        match self.try_publish(topic, payload) {
            Ok(rx) => Box::pin(async move { rx.await.unwrap_or(Err(EngineError::Closed)) }),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn streams(&self) -> Option<&dyn Streams> {
        Some(self)
    }

    fn close(&self) -> EngineFuture<'_, ()> {
        Box::pin(async move {
            if self.shared.closed.swap(true, Ordering::AcqRel) {
                return;
            }
            // Dropping the sender lets the publisher task finish what is queued, then stop.
            drop(lock(&self.queue).take());
            let publisher = lock(&self.publisher).take();
            if let Some(mut publisher) = publisher {
                if timeout(CLOSE_FLUSH, &mut publisher).await.is_err() {
                    tracing::warn!(url = %self.shared.url, "nats engine: queued publishes not flushed in time, dropped");
                    publisher.abort();
                }
            }
            for task in lock(&self.tasks).drain(..) {
                task.abort();
            }
            lock(&self.shared.link).sinks.clear();
            match timeout(CLOSE_DRAIN, self.client.drain()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "nats engine: drain"),
                Err(_) => tracing::debug!("nats engine: drain timed out"),
            }
            tracing::info!(url = %self.shared.url, "nats engine closed");
        })
    }
}

impl NatsEngine {
    fn hist(&self) -> Result<Arc<streams::Hist>, EngineError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(EngineError::Closed);
        }
        self.hist
            .get()
            .cloned()
            .ok_or_else(|| EngineError::Other("nats engine: Streams::start was not called".into()))
    }
}

fn failed<T: Send + 'static>(e: EngineError) -> EngineFuture<'static, Result<T, EngineError>> {
    Box::pin(std::future::ready(Err(e)))
}

impl Streams for NatsEngine {
    fn start(&self, prefix: &str, sink: EngineSink) -> EngineFuture<'_, Result<(), EngineError>> {
        let prefix = prefix.to_owned();
        Box::pin(async move {
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(EngineError::Closed);
            }
            let _one = self.starting.lock().await;
            if self.hist.get().is_some() {
                return Err(EngineError::Other(
                    "nats engine: Streams::start called twice".into(),
                ));
            }
            let (hist, tasks) = streams::Hist::start(
                self.client.clone(),
                self.shared.url.clone(),
                &prefix,
                sink,
                self.shared.conn.subscribe(),
                self.publish_queue,
            )
            .await?;
            lock(&self.tasks).extend(tasks);
            let _ = self.hist.set(hist);
            Ok(())
        })
    }

    fn append(
        &self,
        stream: &str,
        payload: Bytes,
        limits: StreamLimits,
    ) -> EngineFuture<'static, Result<StreamPos, EngineError>> {
        let queued = self
            .hist()
            .and_then(|h| h.append(stream, payload, limits, self.max_payload()));
        match queued {
            Ok(rx) => Box::pin(async move { rx.await.unwrap_or(Err(EngineError::Closed)) }),
            Err(e) => failed(e),
        }
    }

    fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> EngineFuture<'static, Result<StreamRead, EngineError>> {
        match self.hist() {
            Ok(h) => Box::pin(h.read(stream.to_owned(), after, limit)),
            Err(e) => failed(e),
        }
    }

    fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> EngineFuture<'static, Result<(), EngineError>> {
        match self.hist() {
            Ok(h) => Box::pin(h.put(key.to_owned(), value, ttl)),
            Err(e) => failed(e),
        }
    }

    fn take(&self, key: &str) -> EngineFuture<'static, Result<Option<Bytes>, EngineError>> {
        match self.hist() {
            Ok(h) => Box::pin(h.take(key.to_owned())),
            Err(e) => failed(e),
        }
    }
}

impl Drop for NatsEngine {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Some(p) = lock(&self.publisher).take() {
            p.abort();
        }
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// Takes queued messages in batches, hands them to the client and flushes once per batch.
async fn publisher(client: Client, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut sent = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        for job in batch.drain(..) {
            // Do not let the client buffer while it is reconnecting.
            if client.connection_state() != State::Connected {
                let _ = job.done.send(Err(EngineError::Unavailable(
                    "not connected to nats".into(),
                )));
                continue;
            }
            match timeout(HANDOFF_TIMEOUT, client.publish(job.subject, job.payload)).await {
                Ok(Ok(())) => sent.push(job.done),
                Ok(Err(e)) => {
                    let _ = job
                        .done
                        .send(Err(EngineError::Other(format!("nats publish: {e}"))));
                }
                Err(_) => {
                    let _ = job.done.send(Err(EngineError::Unavailable(
                        "nats client did not accept the message in time".into(),
                    )));
                }
            }
        }
        if sent.is_empty() {
            continue;
        }
        let outcome = match timeout(FLUSH_TIMEOUT, client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(EngineError::Unavailable(format!("nats flush: {e}"))),
            Err(_) => Err(EngineError::Unavailable("nats flush timed out".into())),
        };
        for done in sent.drain(..) {
            let _ = done.send(outcome.clone());
        }
    }
}

/// Turns the client's events into `Lost` / `Restored` for the sinks.
async fn monitor(
    client: Client,
    shared: Arc<Shared>,
    mut events: mpsc::Receiver<Event>,
    mut probe: Subscriber,
    probe_subject: String,
) {
    let mut probes = 0u64;
    while let Some(event) = events.recv().await {
        match event {
            Event::Disconnected => {
                tracing::warn!(url = %shared.url, "nats engine: connection lost, reconnecting");
                shared.conn.send_modify(|c| c.up = false);
                let mut link = lock(&shared.link);
                if !link.lost {
                    link.lost = true;
                    link.sinks.retain(|s| !s.is_closed());
                    let why = format!("connection to {} lost", shared.url);
                    for sink in &link.sinks {
                        sink.lost(why.clone());
                    }
                }
            }
            Event::Connected => {
                let max = client.server_info().max_payload;
                if max > 0 {
                    shared.max_payload.store(max, Ordering::Relaxed);
                }
                if !lock(&shared.link).lost {
                    continue;
                }
                probes += 1;
                match round_trip(&client, &mut probe, &probe_subject, probes).await {
                    Ok(()) => {}
                    Err(why) if client.connection_state() == State::Connected => {
                        tracing::warn!(url = %shared.url, %why, "nats engine: resubscription not confirmed, reporting restored anyway");
                    }
                    Err(why) => {
                        tracing::warn!(url = %shared.url, %why, "nats engine: connection lost again while resubscribing");
                        continue;
                    }
                }
                tracing::info!(url = %shared.url, "nats engine: connection restored");
                shared.conn.send_modify(|c| {
                    c.up = true;
                    c.generation += 1;
                });
                let mut link = lock(&shared.link);
                link.lost = false;
                link.sinks.retain(|s| !s.is_closed());
                for sink in &link.sinks {
                    sink.restored();
                }
            }
            Event::SlowConsumer(sid) => {
                shared.slow_consumers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %shared.url, sid, "nats engine: slow consumer, the client dropped messages");
            }
            // A failed reconnection attempt; the Disconnected above was already logged.
            Event::ClientError(e) => {
                tracing::debug!(url = %shared.url, error = %e, "nats engine: reconnecting");
            }
            Event::Closed | Event::Draining => {
                tracing::debug!(url = %shared.url, %event, "nats engine");
            }
            other => tracing::warn!(url = %shared.url, event = %other, "nats engine"),
        }
    }
}

/// Publish a probe on our own inbox and wait for it: the server handles one connection's
/// operations in order, and the client resubscribes everything before it sends anything
/// else, so the probe coming back means every subscription is in place again.
async fn round_trip(
    client: &Client,
    probe: &mut Subscriber,
    subject: &str,
    n: u64,
) -> Result<(), String> {
    let token = Bytes::from(n.to_string());
    let trip = async {
        client
            .publish(subject.to_owned(), token.clone())
            .await
            .map_err(|e| e.to_string())?;
        while let Some(msg) = probe.next().await {
            if msg.payload == token {
                return Ok(());
            }
        }
        Err("probe subscription ended".to_owned())
    };
    timeout(PROBE_TIMEOUT, trip)
        .await
        .unwrap_or_else(|_| Err("probe timed out".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_two_seconds() {
        let d: Vec<u64> = (1..=9)
            .map(|a| reconnect_delay(a).as_millis() as u64)
            .collect();
        assert_eq!(d, [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(reconnect_delay(0), Duration::from_millis(50));
        assert_eq!(reconnect_delay(usize::MAX), Duration::from_secs(2));
    }

    #[test]
    fn subjects() {
        assert!(check_subject("wsu.all", false).is_ok());
        assert!(check_subject("wsu.node.3fa2", false).is_ok());
        assert!(check_subject("wsu.*", true).is_ok());
        assert!(check_subject("wsu.*", false).is_err());
        assert!(check_subject("", false).is_err());
        assert!(check_subject("a..b", false).is_err());
        assert!(check_subject("a b", false).is_err());
        assert!(check_subject("a.", false).is_err());
    }
}
