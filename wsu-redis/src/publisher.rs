//! The publisher task: one connection, one queue, one pipeline of PUBLISH per batch.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{Client, Pipeline, RedisResult};
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

/// One queued publish.
pub(crate) struct Outgoing {
    pub(crate) topic: Box<str>,
    pub(crate) payload: Bytes,
    pub(crate) done: oneshot::Sender<Result<(), EngineError>>,
}

impl Outgoing {
    fn finish(self, r: Result<(), EngineError>) {
        // The caller may have dropped its future: nobody to tell.
        let _ = self.done.send(r);
    }
}

/// A live publishing connection.
pub(crate) struct Conn {
    conn: MultiplexedConnection,
    dead: Arc<Notify>,
}

/// Open the publishing connection.
pub(crate) async fn open(client: &Client) -> RedisResult<Conn> {
    // Nothing is subscribed on this connection: the only push that matters is the library's
    // disconnection notice, which `conn::open` turns into `dead`.
    let (conn, dead) = conn::open(client, |_| {}).await?;
    Ok(Conn { conn, dead })
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
                    if let Err(why) = send(&mut c.conn, batch, pipe).await {
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
            if let Err(why) = send(&mut c.conn, batch, pipe).await {
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
    let mut bytes = first.payload.len();
    batch.push(first);
    while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
        match rx.try_recv() {
            Ok(o) => {
                bytes += o.payload.len();
                batch.push(o);
            }
            Err(_) => break,
        }
    }
}

/// Send `batch` as one pipeline and report each outcome; `Err` when the connection failed,
/// with the batch left for the caller to fail.
async fn send(
    conn: &mut MultiplexedConnection,
    batch: &mut Vec<Outgoing>,
    pipe: &mut Pipeline,
) -> Result<(), String> {
    pipe.clear();
    for o in batch.iter() {
        pipe.cmd("PUBLISH").arg(&*o.topic).arg(&o.payload[..]);
    }
    let result = pipe
        .query_async::<Vec<RedisResult<redis::Value>>>(conn)
        .await;
    match result {
        Ok(replies) if replies.len() == batch.len() => {
            for (o, r) in batch.drain(..).zip(replies) {
                o.finish(r.map(|_| ()).map_err(|e| EngineError::Other(e.to_string())));
            }
            Ok(())
        }
        Ok(replies) => {
            let e = format!(
                "{} replies to a pipeline of {} PUBLISH",
                replies.len(),
                batch.len()
            );
            for o in batch.drain(..) {
                o.finish(Err(EngineError::Other(e.clone())));
            }
            Ok(())
        }
        // The caller marks the broker down, then fails the batch.
        Err(e) if conn::is_connection_error(&e) => Err(e.to_string()),
        Err(e) => {
            let why = e.to_string();
            for o in batch.drain(..) {
                o.finish(Err(EngineError::Other(why.clone())));
            }
            Ok(())
        }
    }
}
