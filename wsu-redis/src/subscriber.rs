//! The subscriber task: a dedicated RESP3 connection whose push messages go straight to the
//! sink, resubscribed after every reconnection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{Client, PushInfo, PushKind, Value};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::{MissedTickBehavior, interval, timeout};
use tracing::{debug, info, warn};
use wsu::cluster::{EngineError, EngineSink};

use crate::conn::{self, Backoff, PING_EVERY, PING_TIMEOUT};
use crate::{Shared, SubState};

/// Routes `message` pushes to the sink by channel.
struct Router {
    topics: HashMap<Box<[u8]>, Arc<str>>,
    sink: EngineSink,
    /// Pushes received: proof of life for a connection too busy to answer a PING in time.
    seen: AtomicU64,
}

impl Router {
    /// Called by the connection's reader, in the order messages arrive: must not block.
    fn route(&self, info: PushInfo) {
        self.seen.fetch_add(1, Ordering::Relaxed);
        if info.kind != PushKind::Message {
            return;
        }
        let mut data = info.data.into_iter();
        if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (data.next(), data.next())
        {
            if let Some(topic) = self.topics.get(&channel[..]) {
                // Full sink: dropped and counted by the sink itself.
                self.sink.deliver(topic.clone(), Bytes::from(payload));
            }
        }
    }
}

pub(crate) struct Subscriber {
    pub(crate) client: Client,
    pub(crate) topics: Vec<String>,
    pub(crate) sink: EngineSink,
    pub(crate) shared: Arc<Shared>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Subscriber {
    /// Subscribe, report the first outcome on `first`, then keep the subscription alive until
    /// the engine closes or the sink's receiver is gone.
    pub(crate) async fn run(mut self, first: oneshot::Sender<Result<(), EngineError>>) {
        let router = Arc::new(Router {
            topics: self
                .topics
                .iter()
                .map(|t| (Box::from(t.as_bytes()), Arc::from(t.as_str())))
                .collect(),
            sink: self.sink.clone(),
            seen: AtomicU64::new(0),
        });
        let mut first = Some(first);
        let mut backoff = Backoff::new();
        loop {
            let attempt = connect(&self.client, &self.topics, &router);
            let Some(attempt) = conn::unless_shutdown(&mut self.shutdown, attempt).await else {
                return;
            };
            match attempt {
                Ok((mut c, dead)) => {
                    backoff.reset();
                    self.shared.set_sub(SubState::Up);
                    match first.take() {
                        Some(first) => {
                            let _ = first.send(Ok(()));
                        }
                        None => {
                            info!(url = %self.shared.url, "redis subscription restored");
                            self.sink.restored();
                        }
                    }
                    let Some(why) = self.watch(&mut c, &dead, &router).await else {
                        return;
                    };
                    self.shared.set_sub(SubState::Down);
                    warn!(url = %self.shared.url, "redis subscription lost: {why}");
                    self.sink.lost(why);
                }
                Err(why) => {
                    debug!(url = %self.shared.url, "redis subscription failed: {why}");
                    if let Some(first) = first.take() {
                        self.shared.set_sub(SubState::Down);
                        let _ = first.send(Err(EngineError::Unavailable(format!(
                            "cannot subscribe on redis at {}: {why}",
                            self.shared.url
                        ))));
                    }
                }
            }
            if self.sink.is_closed() {
                return;
            }
            let delay = backoff.next_delay();
            if conn::unless_shutdown(&mut self.shutdown, tokio::time::sleep(delay))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    /// Watch a subscribed connection: `Some(reason)` when it dies, `None` when the engine stops
    /// (or nobody listens any more).
    ///
    /// A connection that received nothing for a tick gets a PING; it is dead if neither the
    /// answer nor any message arrives within [`PING_TIMEOUT`] (under a flood of messages the
    /// answer queues behind them: the messages prove the connection alive).
    async fn watch(
        &mut self,
        c: &mut MultiplexedConnection,
        dead: &Notify,
        router: &Router,
    ) -> Option<String> {
        let mut ping = interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.reset();
        let mut seen = router.seen.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                biased;
                () = conn::shutting_down(&mut self.shutdown) => return None,
                () = dead.notified() => return Some("connection closed".into()),
                _ = ping.tick() => {
                    if self.sink.is_closed() {
                        return None;
                    }
                    let now = router.seen.load(Ordering::Relaxed);
                    if now != seen {
                        seen = now;
                        continue;
                    }
                    match timeout(PING_TIMEOUT, redis::cmd("PING").query_async::<()>(c)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) if !conn::is_connection_error(&e) => {}
                        Ok(Err(e)) => return Some(format!("PING failed: {e}")),
                        Err(_) if router.seen.load(Ordering::Relaxed) != seen => {}
                        Err(_) => return Some("PING timed out".into()),
                    }
                    seen = router.seen.load(Ordering::Relaxed);
                }
            }
        }
    }
}

/// A new connection with every topic subscribed.
async fn connect(
    client: &Client,
    topics: &[String],
    router: &Arc<Router>,
) -> Result<(MultiplexedConnection, Arc<Notify>), String> {
    let r = router.clone();
    let (mut c, dead) = conn::open(client, move |info| r.route(info))
        .await
        .map_err(|e| e.to_string())?;
    c.subscribe(topics).await.map_err(|e| e.to_string())?;
    Ok((c, dead))
}

impl Shared {
    fn set_sub(&self, s: SubState) {
        self.sub.store(s as u8, Ordering::SeqCst);
    }
}
