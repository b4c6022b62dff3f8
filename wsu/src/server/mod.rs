//! The server: configuration, registry of namespaces and connections, broadcast and serving.

mod broadcast;
mod builder;
mod serve;
mod sessions;
mod slot;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::{Notify, watch};

pub(crate) use broadcast::encode_event as broadcast_encode_event;
pub use broadcast::{Broadcast, Delivery, Published};
pub use builder::{NamespaceBuilder, ServerBuilder};
pub(crate) use slot::Slot;

use crate::config::Config;
use crate::conn::{ConnShared, JoinError};
use crate::hooks::{ConnectHook, DisconnectHook};
use crate::id::IdGenerator;
use crate::registry::{Namespace, NamespaceInfo};
use crate::stats::{Counters, Stats};
use crate::sync::lock;
use crate::{Socket, SocketId};

/// What a namespace needs for presence frames, with presence on.
pub(crate) fn presence_ctx(
    config: &Config,
    counters: &Arc<Counters>,
    node: Option<&Arc<crate::cluster::node::Node>>,
) -> Option<crate::presence::PresenceCtx> {
    config.presence.then(|| crate::presence::PresenceCtx {
        counters: counters.clone(),
        slow_consumer: config.slow_consumer,
        max_queued_bytes: config.max_queued_bytes,
        node: node.cloned(),
    })
}

/// A static file served by [`Server::serve`] for plain `GET` requests.
#[derive(Debug, Clone)]
pub(crate) struct Asset {
    pub(crate) content_type: String,
    pub(crate) body: std::borrow::Cow<'static, [u8]>,
}

type NamespaceFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub(crate) struct Inner {
    pub(crate) config: Config,
    namespaces: RwLock<HashMap<Arc<str>, Arc<Namespace>>>,
    allow_namespace: Option<NamespaceFilter>,
    pub(crate) on_connect: Option<ConnectHook>,
    pub(crate) on_disconnect: Option<DisconnectHook>,
    connections: Mutex<HashMap<SocketId, Arc<ConnShared>>>,
    pub(crate) counters: Arc<Counters>,
    ids: IdGenerator,
    state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub(crate) assets: HashMap<String, Asset>,
    shutdown: watch::Sender<bool>,
    /// Set at the end of the shutdown grace period: every connection task still running is
    /// dropped where it is (its cleanup guard runs).
    kill: watch::Sender<bool>,
    /// When `kill` will be set (from the first call of `shutdown`).
    kill_at: std::sync::OnceLock<tokio::time::Instant>,
    all_closed: Notify,
    /// This server's node, when it has an engine.
    pub(crate) cluster: Option<Arc<crate::cluster::node::Node>>,
    /// Sessions, with connection-state recovery on.
    pub(crate) sessions: Option<crate::session::store::Sessions>,
}

/// A wsu server: a cheap, cloneable handle (an `Arc`) shared by the accept loop, every connection
/// and your code.
///
/// Build one with [`Server::builder`], run it with [`Server::serve`] (or mount it on axum with
/// the `axum` feature), broadcast with [`emit`](Server::emit), [`to`](Server::to) and
/// [`of`](Server::of), and stop it with [`shutdown`](Server::shutdown).
///
/// ```no_run
/// use wsu::{Json, Server, Socket};
///
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Chat { user: String, message: String }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder()
///     .on("chat", |socket: Socket, msg: Chat| async move {
///         socket.broadcast().emit("chat", &msg)?;
///         Ok::<_, wsu::SendError>(Json(serde_json::json!({ "status": "ok" })))
///     })
///     .build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// server.serve(listener).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("connections", &self.inner.counters.connections)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Start building a server (the seed's `NewServer`).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Broadcast `event` to every member of the default namespace `/` (the seed's `Emit`).
    ///
    /// The message is serialized once and queued to each member without waiting; see
    /// [`Broadcast::emit`].
    pub fn emit<T: serde::Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<Delivery, crate::SendError> {
        self.of("/").emit(event, data)
    }

    /// A broadcast to the members of a namespace (the seed's `Namespace(name).Emit...`).
    pub fn of(&self, namespace: &str) -> Broadcast {
        Broadcast::new(self.clone(), namespace)
    }

    /// A broadcast to a room of the default namespace (the seed's `EmitToRoom`).
    pub fn to(&self, room: &str) -> Broadcast {
        self.of("/").to(room)
    }

    /// A broadcast to the default namespace except one connection (the seed's `EmitExcept`).
    pub fn except(&self, id: SocketId) -> Broadcast {
        self.of("/").except(id)
    }

    /// The handle on an open connection, scoped to the default namespace.
    pub fn socket(&self, id: SocketId) -> Option<Socket> {
        let conn = lock(&self.inner.connections).get(&id).cloned()?;
        Some(Socket::new(self.clone(), conn, Arc::from("/")))
    }

    /// Ids of the open connections.
    pub fn sockets(&self) -> Vec<SocketId> {
        lock(&self.inner.connections).keys().copied().collect()
    }

    /// This server's place in a cluster; `None` without an
    /// [engine](crate::ServerBuilder::engine).
    pub fn cluster(&self) -> Option<crate::cluster::Cluster> {
        self.inner
            .cluster
            .as_ref()
            .map(|node| crate::cluster::Cluster {
                server: self.clone(),
                node: node.clone(),
            })
    }

    /// Members of a room of a namespace, on this node (for every node of a cluster:
    /// `server.of(ns).to(room).fetch_sockets()`).
    pub fn room_members(&self, namespace: &str, room: &str) -> Vec<SocketId> {
        self.lookup_namespace(namespace)
            .map(|ns| ns.room_members(room))
            .unwrap_or_default()
    }

    /// Who is in a room of a namespace, on this node, grouped by user key (with
    /// [`presence`](crate::ServerBuilder::presence) on or off: the keys and metadata come from
    /// [`Socket::set_presence`], a connection's id being its key otherwise).
    ///
    /// ```
    /// # fn demo(server: wsu::Server) {
    /// for (user, tabs) in server.presence("/", "lobby") {
    ///     println!("{user}: {} connection(s)", tabs.len());
    /// }
    /// # }
    /// ```
    pub fn presence(&self, namespace: &str, room: &str) -> crate::Presence {
        self.lookup_namespace(namespace)
            .map(|ns| ns.presence(room))
            .unwrap_or_default()
    }

    /// Rooms that currently have members in a namespace, on this node (for every node of a
    /// cluster: [`Cluster::rooms`](crate::cluster::Cluster::rooms)).
    pub fn rooms(&self, namespace: &str) -> Vec<String> {
        self.local_rooms(namespace)
    }

    pub(crate) fn local_rooms(&self, namespace: &str) -> Vec<String> {
        self.lookup_namespace(namespace)
            .map(|ns| ns.room_names())
            .unwrap_or_default()
    }

    /// Shared application state registered with [`ServerBuilder::state`].
    pub fn state<S: Send + Sync + 'static>(&self) -> Option<Arc<S>> {
        self.inner
            .state
            .get(&TypeId::of::<S>())
            .cloned()
            .and_then(|s| s.downcast::<S>().ok())
    }

    /// Every registered event handler with its namespace, name, payload and ack types and
    /// registration site, sorted by namespace then event.
    pub fn events(&self) -> Vec<NamespaceInfo> {
        let map = self
            .inner
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<NamespaceInfo> = map
            .values()
            .flat_map(|ns| {
                ns.handlers.iter().map(|(event, h)| NamespaceInfo {
                    namespace: ns.name.to_string(),
                    event: event.to_string(),
                    payload_type: h.handler.payload_type(),
                    ack_type: h.ack_type,
                    location: h.location.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.event).cmp(&(&b.namespace, &b.event)));
        out
    }

    /// A snapshot of the counters and gauges.
    pub fn stats(&self) -> Stats {
        let (rooms, dynamic, gaps) = {
            let map = self
                .inner
                .namespaces
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            (
                map.values().map(|ns| ns.room_count()).sum(),
                map.values().filter(|ns| !ns.declared).count(),
                map.values()
                    .filter_map(|ns| ns.history.as_ref())
                    .map(|h| lock(h).gaps())
                    .sum(),
            )
        };
        let (queued, acks) = {
            let conns = lock(&self.inner.connections);
            (
                conns.values().map(|c| c.queued_bytes()).sum(),
                conns.values().map(|c| c.pending_acks()).sum(),
            )
        };
        let mut s = self.inner.counters.snapshot(rooms);
        s.dynamic_namespaces = dynamic;
        s.queued_bytes = queued;
        s.pending_acks = acks;
        s.cluster_stream_gaps = gaps;
        if let Some(sessions) = &self.inner.sessions {
            s.sessions_detached = sessions.counts().detached;
        }
        if let Some(node) = &self.inner.cluster {
            use std::sync::atomic::Ordering::Relaxed;
            let c = &node.counters;
            s.cluster_nodes = node.peers().len() + 1;
            s.cluster_connected = node.is_connected();
            s.cluster_published = c.published.load(Relaxed);
            s.cluster_publish_failed = c.publish_failed.load(Relaxed);
            s.cluster_received = c.received.load(Relaxed);
            s.cluster_dropped = c.dropped.get().map_or(0, |d| d.load(Relaxed));
            s.cluster_invalid = c.invalid.load(Relaxed);
            s.cluster_outages = c.outages.load(Relaxed);
            s.cluster_request_timeouts = c.request_timeouts.load(Relaxed);
        }
        s
    }

    /// Whether [`shutdown`](Server::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Gracefully stop, within the [shutdown timeout](crate::ServerBuilder::shutdown_timeout)
    /// in every case: stop accepting, send every client what is already queued, close each
    /// connection with 1001 and run its disconnect hooks once, then return.
    /// [`serve`](Server::serve) returns after this completes. Calling it again waits for the
    /// same shutdown.
    ///
    /// The grace period `T` is spent in three phases: connections drain their queues and close
    /// (until `T` minus a quarter of `T`, at most 2 s less); then whatever is still open is closed
    /// without draining; at `T` minus a tenth of `T` (at most 250 ms less) every connection task
    /// still running, stuck in a hook or a write, is dropped, its guard cleaning up (rooms,
    /// registry, gauges, pending acks) without waiting for its hooks.
    ///
    /// In a cluster, the node then says goodbye to the others (they drop it from the
    /// membership at once; waiting at most 0.5 s for the broker) and closes its engine (which
    /// flushes what it has queued, within its own bound: 1 s for `wsu-redis` and `wsu-nats`).
    /// These come after the grace period.
    pub async fn shutdown(&self) {
        self.shutdown_connections().await;
        if let Some(node) = &self.inner.cluster {
            node.stop().await;
        }
    }

    async fn shutdown_connections(&self) {
        let grace = self.inner.config.shutdown_timeout;
        let start = tokio::time::Instant::now();
        let deadline = start + grace;
        let kill_at = *self
            .inner
            .kill_at
            .get_or_init(|| deadline - (grace / 10).min(std::time::Duration::from_millis(250)));
        let force_at = deadline - (grace / 4).min(std::time::Duration::from_secs(2));
        self.inner.shutdown.send_replace(true);
        self.close_all(Some(force_at));
        if tokio::time::timeout_at(force_at, self.wait_closed())
            .await
            .is_ok()
        {
            return;
        }
        // Drain deadline passed: close what is left without draining.
        self.close_all(None);
        if tokio::time::timeout_at(kill_at, self.wait_closed())
            .await
            .is_ok()
        {
            return;
        }
        self.inner.kill.send_replace(true);
        if tokio::time::timeout_at(deadline, self.wait_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self
                    .inner
                    .counters
                    .connections
                    .load(std::sync::atomic::Ordering::Relaxed),
                "shutdown: connections still open at the end of the grace period"
            );
        }
    }

    /// When connection tasks still running will be dropped, once `shutdown` was called.
    pub(crate) fn kill_at(&self) -> Option<tokio::time::Instant> {
        self.inner.kill_at.get().copied()
    }

    /// Whether the shutdown grace period is over (connection tasks are being dropped).
    pub(crate) fn is_killed(&self) -> bool {
        *self.inner.kill.borrow()
    }

    pub(crate) fn kill_signal(&self) -> watch::Receiver<bool> {
        self.inner.kill.subscribe()
    }

    /// Ask every open connection to close with 1001.
    fn close_all(&self, drain_until: Option<tokio::time::Instant>) {
        let conns: Vec<Arc<ConnShared>> = lock(&self.inner.connections).values().cloned().collect();
        for c in conns {
            c.request_close(crate::conn::CloseRequest {
                code: crate::CloseCode::GOING_AWAY,
                reason: "server shutting down".to_owned(),
                drain_until,
            });
        }
    }

    // ---- crate-internal registry operations -------------------------------------------------

    pub(crate) fn lookup_namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.inner
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The namespace a connection may join: declared, or allowed by the filter (created now).
    pub(crate) fn namespace_for_join(&self, name: &str) -> Option<Arc<Namespace>> {
        if let Some(ns) = self.lookup_namespace(name) {
            return Some(ns);
        }
        let filter = self.inner.allow_namespace.as_ref()?;
        if !filter(name) {
            return None;
        }
        let mut map = self
            .inner
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut created = false;
        let ns = map
            .entry(Arc::from(name))
            .or_insert_with(|| {
                created = true;
                Arc::new(Namespace::new(
                    Arc::from(name),
                    false,
                    crate::registry::HandlerMap::default(),
                    None,
                    None,
                    self.inner.config.recovery.as_ref(),
                    presence_ctx(
                        &self.inner.config,
                        &self.inner.counters,
                        self.inner.cluster.as_ref(),
                    ),
                ))
            })
            .clone();
        drop(map);
        if created && self.streams_mode() {
            // Its mirror learns the cluster's position in the background (joins meanwhile are
            // told this node's).
            if let (Some(node), Ok(rt)) = (
                self.inner.cluster.clone(),
                tokio::runtime::Handle::try_current(),
            ) {
                let ns = ns.clone();
                rt.spawn(async move {
                    if let Some(streams) = node.engine.streams() {
                        crate::cluster::node::sync_mirror(
                            streams,
                            &ns,
                            node.config.request_timeout,
                        )
                        .await;
                    }
                });
            }
        }
        Some(ns)
    }

    /// Every namespace (declared and dynamic).
    pub(crate) fn all_namespaces(&self) -> Vec<Arc<Namespace>> {
        self.inner
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Remove a dynamic namespace that became empty.
    pub(crate) fn release_namespace(&self, ns: &Arc<Namespace>) {
        if ns.declared || ns.member_count() > 0 {
            return;
        }
        let mut map = self
            .inner
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = map.get(&ns.name) {
            if Arc::ptr_eq(current, ns) && ns.mark_removed_if_empty() {
                map.remove(&ns.name);
            }
        }
    }

    /// Join `conn` to a namespace (and optionally a room), retrying if a dynamic namespace was
    /// removed concurrently. Returns the namespace and whether the namespace membership is new.
    pub(crate) fn join(
        &self,
        conn: &Arc<ConnShared>,
        ns_name: &str,
        room: Option<&str>,
    ) -> Result<(Arc<Namespace>, bool), crate::JoinError> {
        for _ in 0..4 {
            let ns = self
                .namespace_for_join(ns_name)
                .ok_or(crate::JoinError::UnknownNamespace)?;
            let r = match &ns.history {
                Some(history) => self.join_recorded(conn, &ns, room, history),
                None => self.join_plain(conn, &ns, room),
            };
            if !matches!(r, Ok(_) | Err(JoinError::Removed)) {
                // A dynamic namespace created for this join must not outlive its failure
                // (closed connection, per-connection caps).
                self.release_namespace(&ns);
            }
            match r {
                Ok(new) => return Ok((ns, new)),
                Err(JoinError::Removed) => continue,
                Err(JoinError::Closed) => return Err(crate::JoinError::Closed),
                Err(JoinError::TooManyNamespaces) => {
                    return Err(crate::JoinError::TooManyNamespaces);
                }
                Err(JoinError::TooManyRooms) => return Err(crate::JoinError::TooManyRooms),
            }
        }
        Err(crate::JoinError::UnknownNamespace)
    }

    fn join_plain(
        &self,
        conn: &Arc<ConnShared>,
        ns: &Arc<Namespace>,
        room: Option<&str>,
    ) -> Result<bool, JoinError> {
        match room {
            Some(room) => conn.join_room(ns, room, &self.inner.config).map(|(n, _)| n),
            None => conn.join_namespace(ns, &self.inner.config),
        }
    }

    /// A join in a namespace with a history: when the membership is new, under the history
    /// lock, restore what a resumed session had there and queue the `recovery` frame, so that
    /// every broadcast is either in it or delivered live after it.
    fn join_recorded(
        &self,
        conn: &Arc<ConnShared>,
        ns: &Arc<Namespace>,
        room: Option<&str>,
        history: &Mutex<crate::session::history::History>,
    ) -> Result<bool, JoinError> {
        let mut h = lock(history);
        let new = self.join_plain(conn, ns, room)?;
        if !new {
            return Ok(false);
        }
        let restore = conn.take_restore(&ns.name);
        let recovery = self.inner.config.recovery.unwrap_or_default();
        let now = tokio::time::Instant::now();
        let replay = match restore {
            Some(t) => {
                // Entries the engine had that this node had not delivered yet go to the
                // current members first (the resuming connection gets them in its replay).
                let mut deliver = |e: &crate::session::history::Fetched, frame| {
                    Broadcast::from_entry(self, &ns.name, &e.filter)
                        .except(conn.id)
                        .deliver(ns, frame);
                };
                let replay = h.replay(
                    Some((conn.id, &t.rooms, t.from.as_ref())),
                    t.fetched,
                    &mut deliver,
                    recovery.max_replay,
                    self.inner.config.max_queued_bytes,
                    now,
                );
                for r in &t.rooms {
                    // Per-connection caps as for any join; a room that no longer fits is lost.
                    let _ = conn.join_room(ns, r, &self.inner.config);
                }
                replay
            }
            None => h.replay(None, None, &mut |_, _| {}, 0, 0, now),
        };
        conn.send_own(crate::session::history::encode_recovery(&ns.name, &replay));
        drop(h);
        Ok(true)
    }

    pub(crate) fn next_id(&self) -> SocketId {
        self.inner.ids.next()
    }

    /// Reserve a connection slot; none when at capacity or shutting down. The slot is released
    /// when dropped.
    pub(crate) fn reserve_slot(&self) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        if self.is_shutting_down() {
            return None;
        }
        let prev = self
            .inner
            .counters
            .connections
            .fetch_add(1, Ordering::AcqRel);
        let slot = Slot::new(self.clone());
        if let Some(max) = self.inner.config.max_connections {
            if prev >= max {
                return None;
            }
        }
        Some(slot)
    }

    /// Give a slot back (only [`Slot`]'s `Drop` calls this).
    pub(crate) fn release_slot(&self) {
        use std::sync::atomic::Ordering;
        if self
            .inner
            .counters
            .connections
            .fetch_sub(1, Ordering::AcqRel)
            == 1
        {
            self.inner.all_closed.notify_waiters();
        }
    }

    pub(crate) fn register_connection(&self, conn: &Arc<ConnShared>) {
        lock(&self.inner.connections).insert(conn.id, conn.clone());
        crate::stats::Counters::inc(&self.inner.counters.connections_total);
    }

    /// Unregister `conn`, unless its id now belongs to another connection (a transport that
    /// resumed its session).
    pub(crate) fn unregister_connection(&self, conn: &Arc<ConnShared>) {
        let mut map = lock(&self.inner.connections);
        if map.get(&conn.id).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            map.remove(&conn.id);
        }
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }
}
