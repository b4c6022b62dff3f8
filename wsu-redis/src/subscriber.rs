//! The subscriber task: a dedicated RESP3 connection whose push messages go straight to the
//! sinks, resubscribed after every reconnection.
//!
//! Both [`Engine::subscribe`](wsu::cluster::Engine::subscribe) (the node's topics) and
//! [`Streams::start`](wsu::cluster::Streams::start) (the channel of stream entries) join this one
//! task with their channels and their sink, in any order: the first starts the task, a later one
//! subscribes its channels on the live connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{Client, PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::{MissedTickBehavior, interval, timeout};
use tracing::{debug, info, warn};
use wsu::cluster::{EngineError, EngineSink};

use crate::conn::{self, Backoff, PING_EVERY, PING_TIMEOUT};
use crate::{Shared, SubState};

/// Where the messages of one channel go.
#[derive(Clone)]
pub(crate) enum Route {
    /// To a node's sink, as messages on this topic.
    Topic { topic: Arc<str>, sink: EngineSink },
    /// To a streams sink, decoded as stream entries ([`crate::streams::decode`]).
    Entries { sink: EngineSink },
}

/// A request to listen to more channels.
pub(crate) struct Join {
    pub(crate) routes: Vec<(String, Route)>,
    /// Gets Lost / Restored.
    pub(crate) sink: EngineSink,
    /// The outcome of the first attempt to subscribe.
    pub(crate) first: oneshot::Sender<Result<(), EngineError>>,
}

/// Routes `message` pushes to the sinks by channel.
#[derive(Default)]
struct Router {
    routes: RwLock<HashMap<Box<[u8]>, Route>>,
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
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            // Full sink: dropped and counted by the sink itself.
            match routes.get(&channel[..]) {
                Some(Route::Topic { topic, sink }) => {
                    sink.deliver(topic.clone(), Bytes::from(payload));
                }
                Some(Route::Entries { sink }) => match crate::streams::decode(payload) {
                    Some((stream, pos, payload)) => {
                        sink.entry(stream, pos, payload);
                    }
                    None => debug!("redis: undecodable stream entry dropped"),
                },
                None => {}
            }
        }
    }

    fn add(&self, routes: &[(String, Route)]) {
        let mut map = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        for (channel, route) in routes {
            map.insert(Box::from(channel.as_bytes()), route.clone());
        }
    }

    fn channels(&self) -> Vec<Vec<u8>> {
        let map = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        map.keys().map(|c| c.to_vec()).collect()
    }
}

pub(crate) struct Subscriber {
    pub(crate) client: Client,
    pub(crate) joins: mpsc::UnboundedReceiver<Join>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The task's state besides its inputs.
struct State {
    router: Arc<Router>,
    /// Sinks whose first outcome was reported: they hear Lost / Restored.
    members: Vec<EngineSink>,
    /// Joins waiting for the next connection attempt.
    pending: Vec<(EngineSink, oneshot::Sender<Result<(), EngineError>>)>,
}

impl State {
    fn join(&mut self, j: Join) {
        self.router.add(&j.routes);
        self.pending.push((j.sink, j.first));
    }

    /// Nobody listens any more.
    fn abandoned(&self) -> bool {
        self.pending.is_empty() && self.members.iter().all(EngineSink::is_closed)
    }
}

impl Subscriber {
    /// Subscribe what joins, report each join's first outcome, keep the subscription alive
    /// until the engine closes or every sink's receiver is gone.
    pub(crate) async fn run(mut self) {
        let mut st = State {
            router: Arc::new(Router::default()),
            members: Vec::new(),
            pending: Vec::new(),
        };
        let mut backoff = Backoff::new();
        loop {
            while let Ok(j) = self.joins.try_recv() {
                st.join(j);
            }
            let attempt = connect(&self.client, &st.router);
            let Some(attempt) = conn::unless_shutdown(&mut self.shutdown, attempt).await else {
                return;
            };
            match attempt {
                Ok((mut c, dead)) => {
                    backoff.reset();
                    self.shared.set_sub(SubState::Up);
                    if !st.members.is_empty() {
                        info!(url = %self.shared.url, "redis subscription restored");
                    }
                    for s in &st.members {
                        s.restored();
                    }
                    for (sink, first) in st.pending.drain(..) {
                        let _ = first.send(Ok(()));
                        st.members.push(sink);
                    }
                    let Some(why) = self.watch(&mut c, &dead, &mut st).await else {
                        return;
                    };
                    self.shared.set_sub(SubState::Down);
                    warn!(url = %self.shared.url, "redis subscription lost: {why}");
                    for s in &st.members {
                        s.lost(why.clone());
                    }
                }
                Err(why) => {
                    debug!(url = %self.shared.url, "redis subscription failed: {why}");
                    self.shared.set_sub(SubState::Down);
                    self.fail_pending(&mut st, &why);
                }
            }
            if st.abandoned() {
                return;
            }
            let delay = backoff.next_delay();
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            // Joins while down fail at once (and hear Restored later), as a failed first
            // attempt does.
            loop {
                tokio::select! {
                    biased;
                    () = conn::shutting_down(&mut self.shutdown) => return,
                    () = &mut sleep => break,
                    j = self.joins.recv() => match j {
                        Some(j) => {
                            st.join(j);
                            self.fail_pending(&mut st, "reconnecting");
                        }
                        None => return,
                    },
                }
            }
        }
    }

    fn fail_pending(&self, st: &mut State, why: &str) {
        for (sink, first) in st.pending.drain(..) {
            let _ = first.send(Err(EngineError::Unavailable(format!(
                "cannot subscribe on redis at {}: {why}",
                self.shared.url
            ))));
            st.members.push(sink);
        }
    }

    /// Watch a subscribed connection, and subscribe what joins on it: `Some(reason)` when it
    /// dies, `None` when the engine stops (or nobody listens any more).
    ///
    /// A connection that received nothing for a tick gets a PING; it is dead if neither the
    /// answer nor any message arrives within [`PING_TIMEOUT`] (under a flood of messages the
    /// answer queues behind them: the messages prove the connection alive).
    async fn watch(
        &mut self,
        c: &mut MultiplexedConnection,
        dead: &Notify,
        st: &mut State,
    ) -> Option<String> {
        let mut ping = interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.reset();
        let router = st.router.clone();
        let mut seen = router.seen.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                biased;
                () = conn::shutting_down(&mut self.shutdown) => return None,
                () = dead.notified() => return Some("connection closed".into()),
                j = self.joins.recv() => {
                    let j = j?;
                    let channels: Vec<String> = j.routes.iter().map(|(c, _)| c.clone()).collect();
                    st.join(j);
                    // Routes first: a message right after the subscription is not missed.
                    match c.subscribe(&channels).await {
                        Ok(()) => {
                            for (sink, first) in st.pending.drain(..) {
                                let _ = first.send(Ok(()));
                                st.members.push(sink);
                            }
                        }
                        Err(e) => {
                            let why = format!("SUBSCRIBE failed: {e}");
                            self.fail_pending(st, &why);
                            return Some(why);
                        }
                    }
                }
                _ = ping.tick() => {
                    if st.abandoned() {
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

/// A new connection with every routed channel subscribed.
async fn connect(
    client: &Client,
    router: &Arc<Router>,
) -> Result<(MultiplexedConnection, Arc<Notify>), String> {
    let r = router.clone();
    let (mut c, dead) = conn::open(client, move |info| r.route(info))
        .await
        .map_err(|e| e.to_string())?;
    let channels = router.channels();
    if !channels.is_empty() {
        c.subscribe(channels).await.map_err(|e| e.to_string())?;
    }
    Ok((c, dead))
}

impl Shared {
    fn set_sub(&self, s: SubState) {
        self.sub.store(s as u8, Ordering::SeqCst);
    }
}
