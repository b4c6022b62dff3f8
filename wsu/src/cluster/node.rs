//! One node of a cluster: its id and topics, heartbeat membership, the inbound loop, and
//! requests to other nodes correlated by id.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::engine::{Engine, EngineError, EngineFuture, EngineSink, SinkEvent};
use super::wire::{self, Filter, Header, Kind, Op, Res, WireAck};
use super::{ClusterConfig, ClusterError};
use crate::server::{Inner, Server};
use crate::sync::lock;

/// Counters of the cluster layer, read by [`Server::stats`](crate::Server::stats).
#[derive(Default)]
pub(crate) struct ClusterCounters {
    pub(crate) published: AtomicU64,
    pub(crate) publish_failed: AtomicU64,
    pub(crate) received: AtomicU64,
    /// The inbound queue's drop counter, once the node's loop has made the queue.
    pub(crate) dropped: OnceLock<Arc<AtomicU64>>,
    pub(crate) invalid: AtomicU64,
    pub(crate) outages: AtomicU64,
    pub(crate) request_timeouts: AtomicU64,
}

/// The outcome of handing a message to the engine, as far as it is known now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handed {
    Pending,
    Confirmed,
    Failed,
}

type Responses = mpsc::Sender<(String, Res)>;
pub(crate) type Outcome = EngineFuture<'static, Result<(), EngineError>>;

pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) config: ClusterConfig,
    topic_all: String,
    prefix_node: String,
    topic_self: String,
    /// Live peers (not this node) and when each was last heard from.
    peers: Mutex<HashMap<String, Instant>>,
    pending: Mutex<HashMap<u64, Responses>>,
    next_request: AtomicU64,
    connected: AtomicBool,
    pub(crate) counters: ClusterCounters,
    /// Publish outcomes not known yet, counted by the node's loop.
    outcomes: mpsc::UnboundedSender<Outcome>,
    outcomes_rx: Mutex<Option<mpsc::UnboundedReceiver<Outcome>>>,
    stop: watch::Sender<bool>,
    started: OnceLock<()>,
    /// With recovery on and an engine that has [`Streams`](super::Streams): how much of each
    /// namespace's stream the broker keeps. Broadcasts then go through the streams.
    pub(crate) stream_limits: Option<super::StreamLimits>,
    /// The other nodes' room members (with presence on).
    pub(crate) remote_presence: crate::presence::RemotePresence,
    /// Cleared when the engine's streams could not start (for example NATS without
    /// JetStream): recovery then stays per node and broadcasts use pub/sub.
    streams_ok: AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("engine", &self.engine.name())
            .finish_non_exhaustive()
    }
}

fn random_id() -> String {
    let s = RandomState::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:016x}", s.hash_one((nanos, std::process::id())))
}

impl Node {
    pub(crate) fn new(
        engine: Arc<dyn Engine>,
        config: ClusterConfig,
        recovery: Option<crate::Recovery>,
    ) -> Arc<Node> {
        let stream_limits = recovery
            .filter(|_| engine.streams().is_some())
            .map(|r| super::StreamLimits::new(r.history_size, r.history_ttl));
        let id = random_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        Arc::new(Node {
            topic_all: format!("{}.all", config.prefix),
            prefix_node: format!("{}.node.", config.prefix),
            topic_self: format!("{}.node.{id}", config.prefix),
            id,
            engine,
            config,
            peers: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            connected: AtomicBool::new(false),
            counters: ClusterCounters::default(),
            outcomes: tx,
            outcomes_rx: Mutex::new(Some(rx)),
            stop,
            started: OnceLock::new(),
            stream_limits,
            remote_presence: crate::presence::RemotePresence::default(),
            streams_ok: AtomicBool::new(true),
        })
    }

    /// Start the node's loop on the current tokio runtime.
    pub(crate) fn start(self: &Arc<Self>, server: Weak<Inner>, rt: &tokio::runtime::Handle) {
        if self.started.set(()).is_err() {
            return;
        }
        let Some(outcomes) = lock(&self.outcomes_rx).take() else {
            return;
        };
        let node = self.clone();
        rt.spawn(node.run(server, outcomes));
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    /// Live peers, sorted.
    pub(crate) fn peers(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.peers).keys().cloned().collect();
        v.sort();
        v
    }

    fn node_topic(&self, node: &str) -> String {
        format!("{}{node}", self.prefix_node)
    }

    /// Hand a message to the engine; the outcome is counted whether or not anyone waits for it.
    fn publish_counted(&self, topic: &str, payload: Bytes) -> Handed {
        let mut fut = self.engine.publish(topic, payload);
        match (&mut fut).now_or_never() {
            Some(r) => {
                self.count_outcome(&r);
                if r.is_ok() {
                    Handed::Confirmed
                } else {
                    Handed::Failed
                }
            }
            None => {
                if self.outcomes.send(fut).is_err() {
                    // The loop is gone (shut down): nobody will count it.
                    return Handed::Failed;
                }
                Handed::Pending
            }
        }
    }

    fn count_outcome(&self, r: &Result<(), EngineError>) {
        match r {
            Ok(()) => self.counters.published.fetch_add(1, Relaxed),
            Err(e) => {
                tracing::debug!(engine = self.engine.name(), error = %e, "cluster publish failed");
                self.counters.publish_failed.fetch_add(1, Relaxed)
            }
        };
    }

    /// Publish a broadcast (body: the client frame) to every other node.
    pub(crate) fn publish_broadcast(&self, filter: Filter, frame: &[u8]) -> Handed {
        let mut h = Header::new(&self.id, Kind::Broadcast);
        h.filter = Some(filter);
        self.publish_counted(&self.topic_all, wire::encode(&h, frame))
    }

    /// Publish a broadcast and wait for the engine's verdict.
    pub(crate) async fn publish_broadcast_confirmed(
        &self,
        filter: Filter,
        frame: &[u8],
    ) -> Result<(), EngineError> {
        let mut h = Header::new(&self.id, Kind::Broadcast);
        h.filter = Some(filter);
        let r = self
            .engine
            .publish(&self.topic_all, wire::encode(&h, frame))
            .await;
        self.count_outcome(&r);
        r
    }

    fn heartbeat(&self, init: bool) {
        let mut h = Header::new(&self.id, Kind::Heartbeat);
        h.init = init;
        self.publish_counted(&self.topic_all, wire::encode(&h, b""));
    }

    /// Open a request to `target` (one node) or to every live peer: responses arrive on the
    /// returned receiver until it is dropped.
    pub(crate) fn open_request(
        self: &Arc<Self>,
        target: Option<&str>,
        filter: Filter,
        op: Op,
        body: &[u8],
    ) -> Result<OpenRequest, ClusterError> {
        let expected: HashSet<String> = match target {
            Some(t) => std::iter::once(t.to_owned()).collect(),
            None => lock(&self.peers).keys().cloned().collect(),
        };
        let id = self.next_request.fetch_add(1, Relaxed);
        let (tx, rx) = mpsc::channel(2 * expected.len() + 8);
        let guard = PendingGuard {
            node: self.clone(),
            id,
        };
        if expected.is_empty() {
            return Ok(OpenRequest {
                rx,
                expected,
                _guard: guard,
            });
        }
        lock(&self.pending).insert(id, tx);
        let mut h = Header::new(&self.id, Kind::Request);
        h.id = Some(id);
        h.filter = Some(filter);
        h.op = Some(op);
        let topic = match target {
            Some(t) => self.node_topic(t),
            None => self.topic_all.clone(),
        };
        let mut fut = self.engine.publish(&topic, wire::encode(&h, body));
        if let Some(Err(e)) = (&mut fut).now_or_never() {
            self.count_outcome(&Err(e.clone()));
            return Err(ClusterError::Engine(e));
        }
        Ok(OpenRequest {
            rx,
            expected,
            _guard: guard,
        })
    }

    /// One answer from each expected node, until `deadline`.
    pub(crate) async fn collect(
        &self,
        mut req: OpenRequest,
        deadline: Instant,
    ) -> (Vec<(String, Res)>, Vec<String>) {
        let mut out = Vec::new();
        while !req.expected.is_empty() {
            match tokio::time::timeout_at(deadline, req.rx.recv()).await {
                Ok(Some((node, res))) => {
                    if req.expected.remove(&node) {
                        out.push((node, res));
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut missing: Vec<String> = req.expected.into_iter().collect();
        missing.sort();
        if !missing.is_empty() {
            self.counters.request_timeouts.fetch_add(1, Relaxed);
        }
        (out, missing)
    }

    /// Collect a broadcast-with-ack request: every node's count (within the request timeout),
    /// then the answers of those that counted (within the ack timeout plus the request
    /// timeout). Returns the expected count, the answers and the nodes that never counted.
    pub(crate) async fn collect_acks(
        &self,
        mut req: OpenRequest,
        timeout: std::time::Duration,
    ) -> (usize, Vec<WireAck>, Vec<String>) {
        let asked = req.expected.clone();
        let start = Instant::now();
        let count_deadline = start + self.config.request_timeout;
        let answers_deadline = start + timeout + self.config.request_timeout;
        let mut counted: HashSet<String> = HashSet::new();
        let mut done: HashSet<String> = HashSet::new();
        let mut expected = 0;
        let mut acks = Vec::new();
        loop {
            let waiting_counts = counted.len() < req.expected.len();
            if !waiting_counts && done.len() == counted.len() {
                break;
            }
            let deadline = if waiting_counts {
                count_deadline
            } else {
                answers_deadline
            };
            match tokio::time::timeout_at(deadline, req.rx.recv()).await {
                Ok(Some((from, Res::AckCount { n }))) if req.expected.contains(&from) => {
                    if counted.insert(from) {
                        expected += n;
                    }
                }
                Ok(Some((from, Res::Acks { acks: a })))
                    if counted.contains(&from) && !done.contains(&from) =>
                {
                    done.insert(from);
                    acks.extend(a);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    if !waiting_counts {
                        break;
                    }
                    // Nodes that never counted are missing; wait for the others' answers.
                    req.expected.retain(|n| counted.contains(n));
                }
            }
        }
        // A node that never reported its count is missing (its connections are in neither
        // `expected` nor the answers); one that counted but whose answers did not arrive in
        // time has its connections in `expected` without answers.
        let mut missing: Vec<String> = asked.difference(&counted).cloned().collect();
        missing.sort();
        if !missing.is_empty() || done.len() < counted.len() {
            self.counters.request_timeouts.fetch_add(1, Relaxed);
        }
        (expected, acks, missing)
    }

    fn respond(&self, to: &str, id: u64, res: Res) {
        let mut h = Header::new(&self.id, Kind::Response);
        h.id = Some(id);
        h.res = Some(res);
        self.publish_counted(&self.node_topic(to), wire::encode(&h, b""));
    }

    /// Leave the cluster: say goodbye, stop the loop, close the engine.
    pub(crate) async fn stop(&self) {
        if *self.stop.borrow() {
            return;
        }
        let h = Header::new(&self.id, Kind::Bye);
        let bye = self.engine.publish(&self.topic_all, wire::encode(&h, b""));
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), bye).await;
        self.stop.send_replace(true);
        self.engine.close().await;
    }

    async fn run(
        self: Arc<Self>,
        server: Weak<Inner>,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    ) {
        let (sink, mut rx) = EngineSink::channel(self.config.inbound_capacity);
        let _ = self.counters.dropped.set(rx.dropped_counter());
        let topics = vec![self.topic_all.clone(), self.topic_self.clone()];
        if let (Some(streams), Some(_)) = (self.engine.streams(), self.stream_limits) {
            if let Err(e) = streams.start(&self.config.prefix, sink.clone()).await {
                self.streams_ok.store(false, Relaxed);
                tracing::error!(node = %self.id, engine = self.engine.name(), error = %e,
                    "the engine's streams did not start (NATS needs JetStream, `nats-server -js`): \
                     broadcasts use pub/sub and recovery stays on each node");
            }
            if let Some(inner) = server.upgrade() {
                for ns in (Server { inner }).all_namespaces() {
                    sync_mirror(streams, &ns, self.config.request_timeout).await;
                }
            }
        }
        match self.engine.subscribe(topics, sink).await {
            Ok(()) => {
                self.connected.store(true, Relaxed);
                tracing::info!(node = %self.id, engine = self.engine.name(), "joined the cluster");
            }
            Err(e) => {
                tracing::warn!(node = %self.id, engine = self.engine.name(), error = %e,
                    "cluster subscription failed; the engine keeps retrying");
            }
        }
        self.heartbeat(true);
        let mut stop = self.stop.subscribe();
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.tick().await;
        let mut in_flight = FuturesUnordered::new();
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    let Some(inner) = server.upgrade() else { break };
                    self.on_event(Server { inner }, ev);
                }
                fut = outcomes.recv() => {
                    match fut {
                        Some(fut) => in_flight.push(fut),
                        None => break,
                    }
                }
                Some(r) = in_flight.next(), if !in_flight.is_empty() => self.count_outcome(&r),
                _ = tick.tick() => {
                    if server.strong_count() == 0 {
                        break;
                    }
                    self.heartbeat(false);
                    self.expire_peers(server.upgrade().map(|inner| Server { inner }));
                }
                _ = stop.changed() => break,
            }
        }
        // Count what is still in flight, briefly.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
            while let Some(r) = in_flight.next().await {
                self.count_outcome(&r);
            }
        })
        .await;
    }

    fn expire_peers(&self, server: Option<Server>) {
        let now = Instant::now();
        let timeout = self.config.node_timeout;
        let mut gone = Vec::new();
        lock(&self.peers).retain(|peer, seen| {
            let alive = now.duration_since(*seen) < timeout;
            if !alive {
                tracing::warn!(node = %self.id, peer = %peer, "cluster node timed out; dropped from the membership");
                gone.push(peer.clone());
            }
            alive
        });
        if let Some(server) = server {
            for peer in gone {
                self.node_gone(&server, &peer);
            }
        }
    }

    fn on_event(self: &Arc<Self>, server: Server, ev: SinkEvent) {
        match ev {
            SinkEvent::Message { payload, .. } => self.on_message(server, payload),
            SinkEvent::Lost(why) => {
                self.connected.store(false, Relaxed);
                self.counters.outages.fetch_add(1, Relaxed);
                tracing::warn!(node = %self.id, engine = self.engine.name(), reason = %why,
                    "lost the broker: broadcasts to and from other nodes are lost until it is back");
            }
            SinkEvent::Restored => {
                self.connected.store(true, Relaxed);
                tracing::info!(node = %self.id, engine = self.engine.name(), "broker connection restored");
                self.heartbeat(true);
            }
            SinkEvent::Entry {
                stream,
                pos,
                payload,
            } => self.on_entry(server, &stream, pos, payload),
        }
    }

    /// A broadcast from a stream (any node's, this one's included): delivered with its
    /// position.
    fn on_entry(&self, server: Server, stream: &str, pos: super::StreamPos, payload: Bytes) {
        match wire::decode(&payload) {
            Ok((h, body)) if h.kind == Kind::Broadcast && h.filter.is_some() => {
                self.counters.received.fetch_add(1, Relaxed);
                let filter = h.filter.as_ref().unwrap_or_else(|| unreachable!());
                if filter.ns != stream {
                    self.counters.invalid.fetch_add(1, Relaxed);
                    return;
                }
                super::local::deliver_entry(&server, filter, body, &pos);
            }
            _ => {
                self.counters.invalid.fetch_add(1, Relaxed);
                tracing::debug!(node = %self.id, "invalid stream entry dropped");
            }
        }
    }

    /// Append a broadcast to its namespace's stream (streams mode): every node, this one
    /// included, delivers it when the engine hands it back with its offset.
    pub(crate) fn append_broadcast(
        &self,
        filter: Filter,
        frame: &[u8],
    ) -> (Handed, Option<Outcome>) {
        let (Some(streams), Some(limits)) = (self.engine.streams(), self.stream_limits) else {
            return (Handed::Failed, None);
        };
        let ns = filter.ns.clone();
        let mut h = Header::new(&self.id, Kind::Broadcast);
        h.filter = Some(filter);
        let mut fut = streams.append(&ns, wire::encode(&h, frame), limits);
        match (&mut fut).now_or_never() {
            Some(r) => {
                let r = r.map(|_| ());
                self.count_outcome(&r);
                (
                    if r.is_ok() {
                        Handed::Confirmed
                    } else {
                        Handed::Failed
                    },
                    None,
                )
            }
            None => {
                let fut: Outcome = Box::pin(async move { fut.await.map(|_| ()) });
                (Handed::Pending, Some(fut))
            }
        }
    }

    /// Whether broadcasts and sessions go through the engine's streams.
    pub(crate) fn streams_active(&self) -> bool {
        self.stream_limits.is_some() && self.streams_ok.load(Relaxed)
    }

    /// Tell the other nodes about a presence change in a room.
    pub(crate) fn publish_presence(
        &self,
        ns: &str,
        room: &str,
        except: Option<crate::SocketId>,
        frame: &[u8],
    ) {
        let mut h = Header::new(&self.id, Kind::Presence);
        h.filter = Some(Filter {
            ns: ns.to_owned(),
            rooms: vec![room.to_owned()],
            except: except.map(|id| vec![id.to_string()]).unwrap_or_default(),
            ..Filter::default()
        });
        self.publish_counted(&self.topic_all, wire::encode(&h, frame));
    }

    /// A node joined: tell it who is in this node's rooms.
    fn sync_presence(&self, server: &Server, peer: &str) {
        let topic = self.node_topic(peer);
        for ns in server.all_namespaces() {
            for (room, frame) in ns.presence_sync() {
                let mut h = Header::new(&self.id, Kind::Presence);
                h.filter = Some(Filter {
                    ns: ns.name.to_string(),
                    rooms: vec![room],
                    ..Filter::default()
                });
                self.publish_counted(&topic, wire::encode(&h, frame.as_bytes()));
            }
        }
    }

    /// A node left the membership: its members leave their rooms, for this node's members.
    fn node_gone(&self, server: &Server, peer: &str) {
        for (ns, room, gone) in self.remote_presence.drop_node(peer) {
            let frame = crate::presence::leaves_frame(&ns, &room, &gone);
            server
                .of(&ns)
                .to(&room)
                .local()
                .volatile()
                .send_frame(frame);
        }
    }

    /// Count an outcome awaited elsewhere.
    pub(crate) fn count(&self, r: &Result<(), EngineError>) {
        self.count_outcome(r);
    }

    /// Count the outcome of an append in the node's loop.
    pub(crate) fn track(&self, fut: Outcome) -> bool {
        self.outcomes.send(fut).is_ok()
    }

    fn on_message(self: &Arc<Self>, server: Server, payload: Bytes) {
        let (h, body) = match wire::decode(&payload) {
            Ok(m) => m,
            Err(e) => {
                self.counters.invalid.fetch_add(1, Relaxed);
                tracing::debug!(node = %self.id, error = %e, "invalid cluster message dropped");
                return;
            }
        };
        if h.node == self.id {
            return;
        }
        self.counters.received.fetch_add(1, Relaxed);
        match h.kind {
            Kind::Broadcast => {
                if let Some(filter) = &h.filter {
                    super::local::deliver(&server, filter, body);
                }
            }
            Kind::Presence => {
                let (Some(filter), Some(diff)) = (&h.filter, crate::presence::parse_diff(&body))
                else {
                    self.counters.invalid.fetch_add(1, Relaxed);
                    return;
                };
                self.remote_presence.apply(&h.node, &diff);
                if let Ok(frame) = tokio_tungstenite::tungstenite::Utf8Bytes::try_from(body) {
                    super::local::broadcast_of(&server, filter)
                        .volatile()
                        .send_frame(frame);
                }
            }
            Kind::Heartbeat => {
                let new = lock(&self.peers)
                    .insert(h.node.clone(), Instant::now())
                    .is_none();
                if new {
                    tracing::info!(node = %self.id, peer = %h.node, "cluster node joined");
                    self.sync_presence(&server, &h.node);
                }
                if h.init {
                    self.heartbeat(false);
                }
            }
            Kind::Bye => {
                lock(&self.peers).remove(&h.node);
                self.node_gone(&server, &h.node);
                tracing::info!(node = %self.id, peer = %h.node, "cluster node left");
            }
            Kind::Request => {
                let (Some(id), Some(op), Some(filter)) = (h.id, h.op, h.filter) else {
                    self.counters.invalid.fetch_add(1, Relaxed);
                    return;
                };
                lock(&self.peers).insert(h.node.clone(), Instant::now());
                match op {
                    Op::BroadcastAck { event, timeout_ms } => {
                        let node = self.clone();
                        tokio::spawn(async move {
                            let timeout = std::time::Duration::from_millis(timeout_ms);
                            let Ok(data) = std::str::from_utf8(&body) else {
                                return;
                            };
                            let Ok(data) =
                                serde_json::value::RawValue::from_string(data.to_owned())
                            else {
                                return;
                            };
                            let run = super::local::ack_broadcast(
                                &server, &filter, &event, &data, timeout,
                            );
                            let (n, answers) = run;
                            node.respond(&h.node, id, Res::AckCount { n });
                            let acks = answers.await;
                            node.respond(&h.node, id, Res::Acks { acks });
                        });
                    }
                    op => {
                        let res = super::local::answer(&server, &filter, &op);
                        self.respond(&h.node, id, res);
                    }
                }
            }
            Kind::Response => {
                let (Some(id), Some(res)) = (h.id, h.res) else {
                    self.counters.invalid.fetch_add(1, Relaxed);
                    return;
                };
                let tx = lock(&self.pending).get(&id).cloned();
                if let Some(tx) = tx {
                    let _ = tx.try_send((h.node, res));
                }
            }
        }
    }
}

/// A request whose answers are being collected.
pub(crate) struct OpenRequest {
    pub(crate) rx: mpsc::Receiver<(String, Res)>,
    /// Nodes expected to answer.
    pub(crate) expected: HashSet<String>,
    _guard: PendingGuard,
}

/// Forgets the request when the collector ends or is dropped.
struct PendingGuard {
    node: Arc<Node>,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        lock(&self.node.pending).remove(&self.id);
    }
}

/// Give a namespace's mirror the engine's epoch and position (streams mode).
pub(crate) async fn sync_mirror(
    streams: &dyn super::Streams,
    ns: &crate::registry::Namespace,
    timeout: std::time::Duration,
) {
    let Some(history) = &ns.history else { return };
    match tokio::time::timeout(timeout, streams.read(&ns.name, 0, 1)).await {
        Ok(Ok(r)) => lock(history).sync(&r.epoch, r.top),
        Ok(Err(e)) => {
            tracing::warn!(namespace = %ns.name, error = %e, "could not read a stream's position")
        }
        Err(_) => tracing::warn!(namespace = %ns.name, "reading a stream's position timed out"),
    }
}
