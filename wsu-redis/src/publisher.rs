//! The publisher task: one connection, one queue, one pipeline per batch (PUBLISH, and the
//! commands of [`Streams`](wsu::cluster::Streams): scripts, `SET`, `GETDEL`), so that every
//! operation is ordered when it is queued.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{Client, Pipeline, RedisResult, Value};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::{MissedTickBehavior, interval, timeout};
use tracing::{debug, info, warn};
use wsu::cluster::EngineError;

use crate::Shared;
use crate::conn::{self, Backoff, PING_EVERY, PING_TIMEOUT};

/// How long the queue may take to flush when the engine closes.
pub(crate) const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Most messages in one pipeline.
const BATCH_MESSAGES: usize = 1024;
/// A batch stops growing past this many payload bytes.
const BATCH_BYTES: usize = 4 << 20;

/// One queued operation.
pub(crate) enum Op {
    Publish {
        topic: Box<str>,
        payload: Bytes,
    },
    /// `EVALSHA` (or `EVAL` when the server does not have it) of one of [`SCRIPTS`].
    Script {
        script: ScriptId,
        keys: [String; 2],
        args: Vec<Bytes>,
    },
    /// `SET key value PX ttl`.
    Put {
        key: String,
        value: Bytes,
        ttl_ms: u64,
    },
    /// `GETDEL key`.
    Take {
        key: String,
    },
}

impl Op {
    /// The payload bytes it carries, for the batch limit.
    fn size(&self) -> usize {
        match self {
            Op::Publish { payload, .. } => payload.len(),
            Op::Script { args, .. } => args.iter().map(Bytes::len).sum(),
            Op::Put { value, .. } => value.len(),
            Op::Take { .. } => 0,
        }
    }

    /// Add it to `pipe`; a script by its SHA when `shas` has it, else by its text.
    fn add_to(&self, pipe: &mut Pipeline, shas: Option<&[String; SCRIPTS.len()]>) {
        match self {
            Op::Publish { topic, payload } => {
                pipe.cmd("PUBLISH").arg(&**topic).arg(&payload[..]);
            }
            Op::Script { script, keys, args } => {
                let i = *script as usize;
                match shas {
                    Some(shas) => pipe.cmd("EVALSHA").arg(&shas[i]),
                    None => pipe.cmd("EVAL").arg(SCRIPTS[i]),
                };
                pipe.arg(2).arg(&keys[0]).arg(&keys[1]);
                for a in args {
                    pipe.arg(&a[..]);
                }
            }
            Op::Put { key, value, ttl_ms } => {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(&value[..])
                    .arg("PX")
                    .arg(*ttl_ms);
            }
            Op::Take { key } => {
                pipe.cmd("GETDEL").arg(key);
            }
        }
    }
}

/// The Lua scripts operations may run, by [`ScriptId`].
pub(crate) const SCRIPTS: [&str; 2] = [crate::streams::APPEND, crate::streams::READ];

/// An index in [`SCRIPTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScriptId {
    Append = 0,
    Read = 1,
}

/// One queued operation and who waits for its reply.
pub(crate) struct Outgoing {
    pub(crate) op: Op,
    pub(crate) done: oneshot::Sender<Result<Value, EngineError>>,
}

impl Outgoing {
    fn finish(self, r: Result<Value, EngineError>) {
        // The caller may have dropped its future: nobody to tell.
        let _ = self.done.send(r);
    }
}

/// A live publishing connection.
pub(crate) struct Conn {
    conn: MultiplexedConnection,
    dead: Arc<Notify>,
    /// The SHA1 of each of [`SCRIPTS`], loaded when the connection opened (`None`: loading
    /// failed, scripts are sent whole).
    shas: Option<[String; SCRIPTS.len()]>,
}

/// Open the publishing connection.
pub(crate) async fn open(client: &Client) -> RedisResult<Conn> {
    // Nothing is subscribed on this connection: the only push that matters is the library's
    // disconnection notice, which `conn::open` turns into `dead`.
    let (mut conn, dead) = conn::open(client, |_| {}).await?;
    let mut load = Pipeline::with_capacity(SCRIPTS.len());
    for s in SCRIPTS {
        load.cmd("SCRIPT").arg("LOAD").arg(s);
    }
    let shas = match load.query_async::<Vec<String>>(&mut conn).await {
        Ok(v) => <[String; SCRIPTS.len()]>::try_from(v).ok(),
        Err(e) if conn::is_connection_error(&e) => return Err(e),
        Err(e) => {
            // Scripting refused (an ACL, say): publishes still work, streams get the error.
            debug!("redis publisher: SCRIPT LOAD failed: {e}");
            None
        }
    };
    Ok(Conn { conn, dead, shas })
}

pub(crate) struct Publisher {
    pub(crate) client: Client,
    pub(crate) rx: mpsc::Receiver<Outgoing>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Why serving a connection ended.
enum Served {
    /// The engine is closing (queue flushed) or dropped.
    Stop,
    /// The connection is gone.
    Lost(String),
}

impl Publisher {
    /// Run until the engine closes: publish what is queued, reconnect when the connection dies.
    pub(crate) async fn run(mut self, first: Conn) {
        let mut batch = Vec::with_capacity(BATCH_MESSAGES);
        let mut pipe = Pipeline::with_capacity(BATCH_MESSAGES);
        // One refused PUBLISH (an ACL, say) fails that message only.
        pipe.ignore_errors();
        let mut backoff = Backoff::new();
        let mut conn = Some(first);
        loop {
            let Some(c) = conn.as_mut() else {
                match self.reconnect(&mut backoff).await {
                    Some(c) => {
                        info!(url = %self.shared.url, "redis publisher connection restored");
                        conn = Some(c);
                        continue;
                    }
                    None => return,
                }
            };
            match self.serve(c, &mut batch, &mut pipe).await {
                Served::Stop => return,
                Served::Lost(why) => {
                    self.shared.pub_up.store(false, Ordering::SeqCst);
                    warn!(url = %self.shared.url, "redis publisher connection lost: {why}");
                    conn = None;
                    backoff.reset();
                }
            }
        }
    }

    /// Publish on `c` until it dies or the engine stops.
    async fn serve(
        &mut self,
        c: &mut Conn,
        batch: &mut Vec<Outgoing>,
        pipe: &mut Pipeline,
    ) -> Served {
        let mut ping = interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.reset();
        loop {
            tokio::select! {
                biased;
                () = conn::shutting_down(&mut self.shutdown) => {
                    if timeout(CLOSE_FLUSH, self.flush(c, batch, pipe)).await.is_err() {
                        warn!(url = %self.shared.url, "redis publisher: queue not flushed within {CLOSE_FLUSH:?} on close");
                        // What was being sent, or still queued, fails with `Closed` as the
                        // task ends and drops it.
                    }
                    return Served::Stop;
                }
                () = c.dead.notified() => return Served::Lost("connection closed".into()),
                first = self.rx.recv() => {
                    let Some(first) = first else { return Served::Stop };
                    fill(&mut self.rx, batch, first);
                    if let Err(why) = send(c, batch, pipe).await {
                        self.fail_batch(batch, &why);
                        return Served::Lost(why);
                    }
                    ping.reset();
                }
                _ = ping.tick() => {
                    match timeout(PING_TIMEOUT, redis::cmd("PING").query_async::<()>(&mut c.conn)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) if !conn::is_connection_error(&e) => {}
                        Ok(Err(e)) => return Served::Lost(format!("PING failed: {e}")),
                        Err(_) => return Served::Lost("PING timed out".into()),
                    }
                }
            }
        }
    }

    /// Send what is queued on closing (the caller bounds how long this may take).
    async fn flush(&mut self, c: &mut Conn, batch: &mut Vec<Outgoing>, pipe: &mut Pipeline) {
        while let Ok(first) = self.rx.try_recv() {
            fill(&mut self.rx, batch, first);
            if let Err(why) = send(c, batch, pipe).await {
                debug!("redis publisher: flush on close failed: {why}");
                self.fail_batch(batch, &why);
                self.fail_queued();
                break;
            }
        }
    }

    /// Reconnect with backoff; meanwhile every queued publish fails with `Unavailable`.
    /// `None` when the engine stops first.
    async fn reconnect(&mut self, backoff: &mut Backoff) -> Option<Conn> {
        loop {
            let client = self.client.clone();
            match self
                .failing_queue_until(async move { open(&client).await })
                .await?
            {
                Ok(c) => {
                    self.shared.pub_up.store(true, Ordering::SeqCst);
                    return Some(c);
                }
                Err(e) => {
                    debug!(url = %self.shared.url, "redis publisher: reconnection failed: {e}")
                }
            }
            let delay = backoff.next_delay();
            self.failing_queue_until(tokio::time::sleep(delay)).await?;
        }
    }

    /// Await `fut`, failing what arrives on the queue meanwhile; `None` if the engine stops.
    async fn failing_queue_until<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                () = conn::shutting_down(&mut self.shutdown) => {
                    self.fail_queued();
                    return None;
                }
                out = &mut fut => return Some(out),
                o = self.rx.recv() => match o {
                    Some(o) => o.finish(Err(self.shared.unavailable())),
                    None => return None,
                },
            }
        }
    }

    /// The connection failed under `batch`: the broker is down from now on, and the batch lost.
    fn fail_batch(&self, batch: &mut Vec<Outgoing>, why: &str) {
        self.shared.pub_up.store(false, Ordering::SeqCst);
        for o in batch.drain(..) {
            o.finish(Err(EngineError::Unavailable(why.to_owned())));
        }
    }

    fn fail_queued(&mut self) {
        while let Ok(o) = self.rx.try_recv() {
            o.finish(Err(self.shared.unavailable()));
        }
    }
}

/// `first` and whatever else is queued right now, up to the batch limits.
fn fill(rx: &mut mpsc::Receiver<Outgoing>, batch: &mut Vec<Outgoing>, first: Outgoing) {
    let mut bytes = first.op.size();
    batch.push(first);
    while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
        match rx.try_recv() {
            Ok(o) => {
                bytes += o.op.size();
                batch.push(o);
            }
            Err(_) => break,
        }
    }
}

/// Send `batch` as one pipeline and report each outcome; `Err` when the connection failed,
/// with what was not answered left in `batch` for the caller to fail.
///
/// A script the server does not know (`NOSCRIPT`: its script cache was flushed) is sent again
/// whole, right away: every script of the batch failed the same way, so they run again in the
/// order they were queued.
async fn send(c: &mut Conn, batch: &mut Vec<Outgoing>, pipe: &mut Pipeline) -> Result<(), String> {
    let replies = run(&mut c.conn, batch, pipe, c.shas.as_ref()).await?;
    let mut retry = Vec::new();
    for (o, r) in batch.drain(..).zip(replies) {
        match r {
            Err(e) if e.code() == Some("NOSCRIPT") && matches!(o.op, Op::Script { .. }) => {
                retry.push(o)
            }
            r => o.finish(r.map_err(|e| EngineError::Other(e.to_string()))),
        }
    }
    if retry.is_empty() {
        return Ok(());
    }
    debug!("redis publisher: scripts not cached on the server, sending them whole");
    *batch = retry;
    let replies = run(&mut c.conn, batch, pipe, None).await?;
    for (o, r) in batch.drain(..).zip(replies) {
        o.finish(r.map_err(|e| EngineError::Other(e.to_string())));
    }
    Ok(())
}

/// Send `batch` as one pipeline: one reply per operation (`Ok` with `batch` untouched), or
/// `Err` when the connection failed. Any other failure of the whole pipeline fails the batch.
async fn run(
    conn: &mut MultiplexedConnection,
    batch: &mut Vec<Outgoing>,
    pipe: &mut Pipeline,
    shas: Option<&[String; SCRIPTS.len()]>,
) -> Result<Vec<RedisResult<Value>>, String> {
    pipe.clear();
    for o in batch.iter() {
        o.op.add_to(pipe, shas);
    }
    let result = pipe.query_async::<Vec<RedisResult<Value>>>(conn).await;
    match result {
        Ok(replies) if replies.len() == batch.len() => Ok(replies),
        Ok(replies) => {
            let e = format!(
                "{} replies to a pipeline of {} commands",
                replies.len(),
                batch.len()
            );
            for o in batch.drain(..) {
                o.finish(Err(EngineError::Other(e.clone())));
            }
            Ok(Vec::new())
        }
        // The caller marks the broker down, then fails the batch.
        Err(e) if conn::is_connection_error(&e) => Err(e.to_string()),
        Err(e) => {
            let why = e.to_string();
            for o in batch.drain(..) {
                o.finish(Err(EngineError::Other(why.clone())));
            }
            Ok(Vec::new())
        }
    }
}
