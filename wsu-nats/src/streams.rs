//! [`Streams`] on JetStream: one JetStream stream per cluster prefix for every wsu stream, and a
//! key-value bucket for the session store. See the [crate documentation](crate#streams).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::{Client, HeaderMap, header};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;
use wsu::cluster::{EngineError, EngineSink, StreamLimits, StreamPos, StreamRead};

use crate::{Conn, lock};

/// The header carrying an entry's `prev`.
const PREV: &str = "Wsu-Prev";
/// The header carrying a stored value's TTL in milliseconds.
const TTL: &str = "Wsu-Ttl";
/// JetStream API calls: how long one may take.
const API_TIMEOUT: Duration = Duration::from_secs(3);
/// How often an append retries after another node appended to the same stream first.
const APPEND_RETRIES: usize = 64;
/// How long a read's consumer lives on the server if it is not deleted.
const READ_CONSUMER_IDLE: Duration = Duration::from_secs(10);
/// A stream (or bucket) created before any limits are known gets these; appends (puts) raise
/// them. Limits only ever grow: they are the largest any node asked for.
const INITIAL_KEEP: i64 = 1;
const INITIAL_AGE: Duration = Duration::from_secs(1);

/// A stream's name as a subject token: `n` + the hex of its bytes.
pub(crate) fn token(name: &str) -> String {
    let mut t = String::with_capacity(1 + 2 * name.len());
    t.push('n');
    for b in name.as_bytes() {
        t.push_str(&format!("{b:02x}"));
    }
    t
}

/// The inverse of [`token`].
pub(crate) fn untoken(token: &str) -> Option<String> {
    let hex = token.strip_prefix('n')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// `prefix` with everything but `[A-Za-z0-9_-]` replaced by `_`, for stream and bucket names.
pub(crate) fn sanitize(prefix: &str) -> String {
    prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn other(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Other(format!("nats {what}: {e}"))
}

fn timed_out(what: &str) -> EngineError {
    EngineError::Unavailable(format!("nats {what} timed out"))
}

async fn api<T, E: std::fmt::Display>(
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, EngineError> {
    match timeout(API_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(other(what, e)),
        Err(_) => Err(timed_out(what)),
    }
}

fn epoch_of(info: &stream::Info) -> String {
    format!("j{:x}", info.created.unix_timestamp_nanos())
}

/// One queued append.
struct Job {
    subject: String,
    payload: Bytes,
    limits: StreamLimits,
    done: oneshot::Sender<Result<StreamPos, EngineError>>,
}

/// What [`Hist`] caches.
struct Cache {
    stream: stream::Stream,
    epoch: String,
    /// The last sequence of each subject, as far as this node knows.
    last: HashMap<String, u64>,
    /// Appends to each subject since its last purge (for limits below the stream-wide ones).
    since_purge: HashMap<String, usize>,
}

/// The streams side of one engine, made by `start`.
pub(crate) struct Hist {
    js: Context,
    client: Client,
    url: String,
    /// `{prefix}.h.`
    subject_prefix: String,
    stream_name: String,
    bucket_name: String,
    cache: Mutex<Cache>,
    /// Serializes stream-config updates.
    config_lock: tokio::sync::Mutex<()>,
    kv: tokio::sync::Mutex<Option<kv::Store>>,
    /// The bucket's max age, once known.
    bucket_age: Mutex<Option<Duration>>,
    queue: mpsc::Sender<Job>,
}

impl Hist {
    /// Create (or find) the JetStream stream and start the appender and the live consumer.
    /// Returns the handle and the tasks to abort on close.
    pub(crate) async fn start(
        client: Client,
        url: String,
        prefix: &str,
        sink: EngineSink,
        conn: watch::Receiver<Conn>,
        queue_capacity: usize,
    ) -> Result<(Arc<Hist>, Vec<tokio::task::AbortHandle>), EngineError> {
        if client.connection_state() != State::Connected {
            return Err(EngineError::Unavailable(format!("not connected to {url}")));
        }
        let js = jetstream::new(client.clone());
        let subject_prefix = format!("{prefix}.h.");
        crate::check_subject(&format!("{subject_prefix}x"), false)?;
        let stream_name = format!("{}_wsu_hist", sanitize(prefix));
        let (stream, epoch) = ensure_stream(&js, &stream_name, &subject_prefix).await?;
        let (queue, rx) = mpsc::channel(queue_capacity);
        let hist = Arc::new(Hist {
            js,
            client,
            url,
            bucket_name: format!("{}_wsu_sess", sanitize(prefix)),
            subject_prefix,
            stream_name,
            cache: Mutex::new(Cache {
                stream,
                epoch,
                last: HashMap::new(),
                since_purge: HashMap::new(),
            }),
            config_lock: tokio::sync::Mutex::new(()),
            kv: tokio::sync::Mutex::new(None),
            bucket_age: Mutex::new(None),
            queue,
        });
        let live = hist.open_live().await?;
        let appender = tokio::spawn(appender(hist.clone(), rx));
        let live = tokio::spawn(supervise(hist.clone(), sink, conn, live));
        Ok((hist, vec![appender.abort_handle(), live.abort_handle()]))
    }

    fn connected(&self) -> Result<(), EngineError> {
        if self.client.connection_state() == State::Connected {
            Ok(())
        } else {
            Err(EngineError::Unavailable(format!(
                "not connected to {}",
                self.url
            )))
        }
    }

    fn subject(&self, name: &str) -> String {
        format!("{}{}", self.subject_prefix, token(name))
    }

    fn stream(&self) -> stream::Stream {
        lock(&self.cache).stream.clone()
    }

    fn epoch(&self) -> String {
        lock(&self.cache).epoch.clone()
    }

    /// Find (or recreate) the JetStream stream, and forget what was cached about it if it is a
    /// new one.
    async fn refresh(&self) -> Result<(), EngineError> {
        let (stream, epoch) =
            ensure_stream(&self.js, &self.stream_name, &self.subject_prefix).await?;
        let mut c = lock(&self.cache);
        if c.epoch != epoch {
            tracing::info!(stream = %self.stream_name, old = %c.epoch, new = %epoch, "nats engine: history stream has a new epoch");
            c.last.clear();
            c.since_purge.clear();
        }
        c.stream = stream;
        c.epoch = epoch;
        Ok(())
    }

    /// An ordered consumer of everything appended from now on.
    async fn open_live(&self) -> Result<pull::Ordered, EngineError> {
        let stream = self.stream();
        let consumer = api(
            "create consumer",
            stream.create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            }),
        )
        .await?;
        api("consume", consumer.messages()).await
    }

    /// The last sequence of `subject` (0: none).
    async fn last_seq(&self, subject: &str) -> Result<u64, EngineError> {
        let stream = self.stream();
        match timeout(API_TIMEOUT, stream.get_last_raw_message_by_subject(subject)).await {
            Ok(Ok(m)) => Ok(m.sequence),
            Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Ok(Err(e)) => Err(other("get last message", e)),
            Err(_) => Err(timed_out("get last message")),
        }
    }

    /// Raise the stream-wide limits to `limits` if they are below.
    async fn ensure_limits(&self, limits: StreamLimits) -> Result<(), EngineError> {
        let keep = i64::try_from(limits.keep.max(1)).unwrap_or(i64::MAX);
        let covered = |c: &stream::Config| {
            (c.max_messages_per_subject < 0 || c.max_messages_per_subject >= keep)
                && (c.max_age.is_zero() || c.max_age >= limits.ttl)
        };
        if covered(&lock(&self.cache).stream.cached_info().config) {
            return Ok(());
        }
        let _one = self.config_lock.lock().await;
        // Another node may have raised them.
        let info = api("stream info", self.stream().get_info()).await?;
        if !covered(&info.config) {
            let mut config = info.config.clone();
            if config.max_messages_per_subject >= 0 {
                config.max_messages_per_subject = config.max_messages_per_subject.max(keep);
            }
            if !config.max_age.is_zero() {
                config.max_age = config.max_age.max(limits.ttl);
            }
            api("update stream", self.js.update_stream(config)).await?;
            tracing::debug!(stream = %self.stream_name, keep, ttl = ?limits.ttl, "nats engine: history limits raised");
        }
        let stream = api("get stream", self.js.get_stream(&self.stream_name)).await?;
        let epoch = epoch_of(stream.cached_info());
        let mut c = lock(&self.cache);
        if c.epoch != epoch {
            c.last.clear();
            c.since_purge.clear();
            c.epoch = epoch;
        }
        c.stream = stream;
        Ok(())
    }

    /// One append: publish with the expected last subject sequence, retried while other nodes
    /// win the race.
    async fn append_one(&self, job: &Job) -> Result<StreamPos, EngineError> {
        self.connected()?;
        self.ensure_limits(job.limits).await?;
        let cached = lock(&self.cache).last.get(&job.subject).copied();
        let mut last = match cached {
            Some(l) => l,
            None => self.last_seq(&job.subject).await?,
        };
        let mut recreated = false;
        for _ in 0..APPEND_RETRIES {
            self.connected()?;
            let mut headers = HeaderMap::new();
            headers.insert(
                header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                last.to_string(),
            );
            headers.insert(PREV, last.to_string());
            let ack = async {
                self.js
                    .publish_with_headers(job.subject.clone(), headers, job.payload.clone())
                    .await?
                    .await
            };
            let err = match timeout(API_TIMEOUT, ack).await {
                Err(_) => return Err(timed_out("publish")),
                Ok(Ok(ack)) => {
                    let epoch = {
                        let mut c = lock(&self.cache);
                        c.last.insert(job.subject.clone(), ack.sequence);
                        c.epoch.clone()
                    };
                    self.maybe_purge(&job.subject, job.limits).await;
                    return Ok(StreamPos::new(ack.sequence, last, epoch));
                }
                Ok(Err(e)) => e,
            };
            match err.kind() {
                PublishErrorKind::WrongLastSequence => {
                    // "wrong last sequence: N" names the actual one.
                    let actual = std::error::Error::source(&err)
                        .map(|s| s.to_string())
                        .and_then(|s| s.rsplit(':').next().and_then(|n| n.trim().parse().ok()));
                    let actual = match actual {
                        Some(n) => n,
                        None => self.last_seq(&job.subject).await?,
                    };
                    if actual < last {
                        // Sequences went back: the stream was recreated.
                        self.refresh().await?;
                    }
                    last = actual;
                }
                PublishErrorKind::StreamNotFound if !recreated => {
                    recreated = true;
                    self.refresh().await?;
                    last = 0;
                }
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                    return Err(EngineError::Unavailable(format!("nats publish: {err}")));
                }
                _ => return Err(other("publish", err)),
            }
        }
        Err(EngineError::Other(format!(
            "nats append to {}: lost the race {APPEND_RETRIES} times",
            job.subject
        )))
    }

    /// When this stream's `keep` is below the stream-wide one, purge it down every `keep / 2`
    /// appends (approximate trimming: at least `keep` are kept).
    async fn maybe_purge(&self, subject: &str, limits: StreamLimits) {
        let keep = limits.keep.max(1);
        let (stream, due) = {
            let mut c = lock(&self.cache);
            let wide = c.stream.cached_info().config.max_messages_per_subject;
            if wide >= 0 && usize::try_from(wide).unwrap_or(usize::MAX) <= keep {
                return;
            }
            let n = c.since_purge.entry(subject.to_owned()).or_insert(0);
            *n += 1;
            let due = *n >= (keep / 2).max(1);
            if due {
                *n = 0;
            }
            (c.stream.clone(), due)
        };
        if due {
            let purge = stream.purge().filter(subject).keep(keep as u64);
            if let Err(e) = api("purge", purge.into_future()).await {
                tracing::debug!(subject, error = %e, "nats engine: trimming a stream failed");
            }
        }
    }

    pub(crate) fn append(
        &self,
        name: &str,
        payload: Bytes,
        limits: StreamLimits,
        max_payload: usize,
    ) -> Result<oneshot::Receiver<Result<StreamPos, EngineError>>, EngineError> {
        if payload.len() > max_payload {
            return Err(EngineError::TooLarge {
                size: payload.len(),
                max: max_payload,
            });
        }
        self.connected()?;
        let (done, rx) = oneshot::channel();
        let job = Job {
            subject: self.subject(name),
            payload,
            limits,
            done,
        };
        match self.queue.try_send(job) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => Err(EngineError::Backlog),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(EngineError::Closed),
        }
    }

    pub(crate) async fn read(
        self: Arc<Self>,
        name: String,
        after: u64,
        limit: usize,
    ) -> Result<StreamRead, EngineError> {
        self.connected()?;
        let subject = self.subject(&name);
        let top = self.last_seq(&subject).await?;
        let epoch = self.epoch();
        if top <= after || limit == 0 {
            return Ok(StreamRead::new(epoch, top, Vec::new()));
        }
        let stream = self.stream();
        let consumer = api(
            "create consumer",
            stream.create_consumer(pull::Config {
                filter_subject: subject,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ack_policy: AckPolicy::None,
                memory_storage: true,
                inactive_threshold: READ_CONSUMER_IDLE,
                ..Default::default()
            }),
        )
        .await?;
        let name_of = consumer.cached_info().name.clone();
        let collect = async {
            let mut messages = consumer
                .fetch()
                .max_messages(limit)
                .messages()
                .await
                .map_err(|e| other("fetch", e))?;
            let mut entries = Vec::new();
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| other("fetch", e))?;
                let info = m.info().map_err(|e| other("message info", e))?;
                let offset = info.stream_sequence;
                let pending = info.pending;
                if offset > top {
                    break;
                }
                let prev = prev_of(m.headers.as_ref());
                entries.push((
                    StreamPos::new(offset, prev, epoch.clone()),
                    m.payload.clone(),
                ));
                if offset == top || pending == 0 || entries.len() >= limit {
                    break;
                }
            }
            Ok::<_, EngineError>(entries)
        };
        let entries = timeout(API_TIMEOUT, collect)
            .await
            .unwrap_or_else(|_| Err(timed_out("read")));
        tokio::spawn(async move {
            let _ = timeout(API_TIMEOUT, stream.delete_consumer(&name_of)).await;
        });
        Ok(StreamRead::new(epoch, top, entries?))
    }

    async fn store(&self) -> Result<kv::Store, EngineError> {
        let mut kv = self.kv.lock().await;
        if let Some(s) = kv.as_ref() {
            return Ok(s.clone());
        }
        let store = match timeout(API_TIMEOUT, self.js.get_key_value(&self.bucket_name)).await {
            Ok(Ok(s)) => s,
            Err(_) => return Err(timed_out("get bucket")),
            Ok(Err(_)) => {
                // The stream a bucket is made of, as `create_key_value` would make it: that
                // one first asks for the account info, which async-nats 0.46 cannot parse
                // from nats-server 2.9.
                let config = stream::Config {
                    name: format!("KV_{}", self.bucket_name),
                    subjects: vec![format!("$KV.{}.>", self.bucket_name)],
                    max_messages_per_subject: 1,
                    max_age: INITIAL_AGE,
                    storage: StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: stream::DiscardPolicy::New,
                    num_replicas: 1,
                    ..Default::default()
                };
                api("create bucket", self.js.get_or_create_stream(config)).await?;
                api("get bucket", self.js.get_key_value(&self.bucket_name)).await?
            }
        };
        *kv = Some(store.clone());
        Ok(store)
    }

    /// Raise the bucket's max age to `ttl` if it is below.
    async fn ensure_ttl(&self, ttl: Duration) -> Result<(), EngineError> {
        let covered = |age: Duration| age.is_zero() || age >= ttl;
        if lock(&self.bucket_age).is_some_and(covered) {
            return Ok(());
        }
        let _one = self.config_lock.lock().await;
        let name = format!("KV_{}", self.bucket_name);
        let stream = api("get bucket stream", self.js.get_stream(&name)).await?;
        let mut config = stream.cached_info().config.clone();
        if !covered(config.max_age) {
            config.max_age = ttl;
            api("update bucket", self.js.update_stream(config.clone())).await?;
        }
        *lock(&self.bucket_age) = Some(config.max_age);
        Ok(())
    }

    pub(crate) async fn put(
        self: Arc<Self>,
        key: String,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), EngineError> {
        self.connected()?;
        self.store().await?;
        // The bucket's max age (the largest TTL asked for) removes entries eventually; each
        // entry's own TTL, in a header beside it, is checked by `take`.
        self.ensure_ttl(ttl).await?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut headers = HeaderMap::new();
        headers.insert(TTL, ttl_ms.to_string());
        let subject = format!("$KV.{}.{}", self.bucket_name, token(&key));
        let ack = async {
            self.js
                .publish_with_headers(subject, headers, value)
                .await?
                .await
        };
        match timeout(API_TIMEOUT, ack).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(other("put", e)),
            Err(_) => Err(timed_out("put")),
        }
    }

    pub(crate) async fn take(self: Arc<Self>, key: String) -> Result<Option<Bytes>, EngineError> {
        self.connected()?;
        let store = self.store().await?;
        let key = token(&key);
        let stream_name = format!("KV_{}", self.bucket_name);
        let subject = format!("$KV.{}.{}", self.bucket_name, key);
        let stream = api(
            "get bucket stream",
            self.js.get_stream_no_info(&stream_name),
        )
        .await?;
        for _ in 0..APPEND_RETRIES {
            let msg = match timeout(
                API_TIMEOUT,
                stream.get_last_raw_message_by_subject(&subject),
            )
            .await
            {
                Ok(Ok(m)) => m,
                Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(None);
                }
                Ok(Err(e)) => return Err(other("get", e)),
                Err(_) => return Err(timed_out("get")),
            };
            if msg.headers.get("KV-Operation").is_some() {
                // A delete or purge marker.
                return Ok(None);
            }
            match timeout(
                API_TIMEOUT,
                store.delete_expect_revision(&key, Some(msg.sequence)),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Ok(Err(e)) => return Err(other("delete", e)),
                Err(_) => return Err(timed_out("delete")),
            }
            let ttl = msg
                .headers
                .get(TTL)
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .map(Duration::from_millis);
            let stored_at = UNIX_EPOCH
                + Duration::from_nanos(
                    u64::try_from(msg.time.unix_timestamp_nanos()).unwrap_or_default(),
                );
            let live = ttl.is_none_or(|ttl| stored_at + ttl > SystemTime::now());
            return Ok(live.then_some(msg.payload));
        }
        Ok(None)
    }
}

fn prev_of(headers: Option<&HeaderMap>) -> u64 {
    headers
        .and_then(|h| h.get(PREV))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// Find or create the history stream.
async fn ensure_stream(
    js: &Context,
    name: &str,
    subject_prefix: &str,
) -> Result<(stream::Stream, String), EngineError> {
    let stream = api(
        "create stream",
        js.get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{subject_prefix}>")],
            max_messages_per_subject: INITIAL_KEEP,
            max_age: INITIAL_AGE,
            storage: StorageType::File,
            allow_direct: true,
            ..Default::default()
        }),
    )
    .await?;
    let epoch = epoch_of(stream.cached_info());
    Ok((stream, epoch))
}

/// Runs the queued appends: in call order per stream, concurrently across streams.
async fn appender(hist: Arc<Hist>, mut rx: mpsc::Receiver<Job>) {
    let mut waiting: HashMap<String, VecDeque<Job>> = HashMap::new();
    let mut running = FuturesUnordered::new();
    let run = |hist: Arc<Hist>, job: Job| async move {
        let r = hist.append_one(&job).await;
        let _ = job.done.send(r);
        job.subject
    };
    let mut open = true;
    while open || !running.is_empty() {
        tokio::select! {
            job = rx.recv(), if open => match job {
                Some(job) => match waiting.get_mut(&job.subject) {
                    Some(q) => q.push_back(job),
                    None => {
                        waiting.insert(job.subject.clone(), VecDeque::new());
                        running.push(run(hist.clone(), job));
                    }
                },
                None => open = false,
            },
            Some(subject) = running.next(), if !running.is_empty() => {
                match waiting.get_mut(&subject).and_then(VecDeque::pop_front) {
                    Some(job) => running.push(run(hist.clone(), job)),
                    None => {
                        waiting.remove(&subject);
                    }
                }
            }
        }
    }
}

/// Delivers the live consumer's entries to the sink, and recreates the consumer after a
/// reconnection (reporting `Lost` / `Restored`).
async fn supervise(
    hist: Arc<Hist>,
    sink: EngineSink,
    mut conn: watch::Receiver<Conn>,
    first: pull::Ordered,
) {
    let mut live = Some(first);
    let mut generation = conn.borrow_and_update().generation;
    let mut lost = false;
    loop {
        if let Some(mut messages) = live.take() {
            loop {
                tokio::select! {
                    m = messages.next() => match m {
                        Some(Ok(m)) => {
                            if sink.is_closed() {
                                return;
                            }
                            hist.deliver(&sink, &m);
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "nats engine: history consumer");
                        }
                        None => break,
                    },
                    changed = conn.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let c = *conn.borrow_and_update();
                        if !c.up || c.generation != generation {
                            break;
                        }
                    }
                }
            }
        }
        if sink.is_closed() {
            return;
        }
        if !lost {
            lost = true;
            sink.lost(format!("connection to {} lost", hist.url));
        }
        // Wait for the connection to be back.
        loop {
            let c = *conn.borrow_and_update();
            if c.up && hist.client.connection_state() == State::Connected {
                generation = c.generation;
                break;
            }
            if conn.changed().await.is_err() {
                return;
            }
        }
        let reopened = async {
            hist.refresh().await?;
            hist.open_live().await
        };
        match reopened.await {
            Ok(m) => {
                live = Some(m);
                lost = false;
                tracing::info!(stream = %hist.stream_name, "nats engine: history consumer restored");
                sink.restored();
            }
            Err(e) => {
                tracing::warn!(error = %e, "nats engine: cannot recreate the history consumer, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

impl Hist {
    fn deliver(&self, sink: &EngineSink, m: &jetstream::Message) {
        let Ok(info) = m.info() else {
            return;
        };
        let offset = info.stream_sequence;
        let Some(name) = m
            .subject
            .as_str()
            .strip_prefix(self.subject_prefix.as_str())
            .and_then(untoken)
        else {
            tracing::debug!(subject = %m.subject, "nats engine: foreign subject in the history stream");
            return;
        };
        let prev = prev_of(m.headers.as_ref());
        let epoch = self.epoch();
        sink.entry(
            Arc::from(name.as_str()),
            StreamPos::new(offset, prev, epoch),
            m.payload.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for name in ["", "/", "/chat room:ü", "a.b.*>"] {
            let t = token(name);
            assert!(t.chars().all(|c| c.is_ascii_alphanumeric()), "{t}");
            assert_eq!(untoken(&t).as_deref(), Some(name));
        }
        assert_eq!(untoken("x00"), None);
        assert_eq!(untoken("n0"), None);
        assert_eq!(sanitize("wsu.test:1"), "wsu_test_1");
    }
}
