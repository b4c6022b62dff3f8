//! Broadcast operators: to a namespace, to rooms, except connections or rooms; on one node or,
//! with an engine, on every node of the cluster.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Server;
use crate::cluster::node::{Handed, Node};
use crate::cluster::wire::{Filter, Op, Res};
use crate::cluster::{AckReport, ClusterError, SocketInfo};
use crate::conn::ConnShared;
use crate::protocol::envelope::Outgoing;
use crate::protocol::{MessageType, names};
use crate::registry::Targets;
use crate::session::history::EntryFilter;
use crate::{AckError, SendError, Socket, SocketId};

/// What became of a broadcast's copy for the other nodes of a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Published {
    /// No cluster (no engine), or a [`local`](Broadcast::local) broadcast.
    #[default]
    NotClustered,
    /// Handed to the engine, outcome not known yet (counted in
    /// [`Stats::cluster_published`](crate::Stats::cluster_published) or
    /// [`Stats::cluster_publish_failed`](crate::Stats::cluster_publish_failed) when it is).
    Queued,
    /// Accepted by the broker.
    Confirmed,
    /// Not published (the broker is away, the engine's queue is full, the message is too large
    /// for the engine): other nodes' connections do not get it. Logged and counted in
    /// [`Stats::cluster_publish_failed`](crate::Stats::cluster_publish_failed).
    Failed,
}

/// The outcome of a broadcast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// Local recipients the message was queued for.
    pub queued: usize,
    /// Local recipients whose outbound queue was full (counted in
    /// [`Stats::messages_dropped`](crate::Stats::messages_dropped); see
    /// [`SlowConsumerPolicy`](crate::SlowConsumerPolicy)).
    pub dropped: usize,
    /// The copy for the other nodes (see [`Published`]).
    pub published: Published,
}

/// A broadcast being addressed: a namespace, optionally some rooms, minus some connections or
/// rooms.
///
/// Made by [`Server::of`], [`Server::to`], [`Server::except`], [`Socket::broadcast`](crate::Socket::broadcast)
/// and [`Socket::to`](crate::Socket::to); sent by [`emit`](Broadcast::emit). With an
/// [engine](crate::ServerBuilder::engine), everything here addresses the connections of every
/// node: [`emit`](Broadcast::emit) publishes one copy for the other nodes without waiting,
/// and the `async` methods ask every node.
///
/// ```
/// # fn demo(server: wsu::Server, me: wsu::SocketId) -> Result<(), wsu::SendError> {
/// // Everyone in rooms "a" or "b" of namespace "/game" (each member once), except `me` and
/// // the members of room "muted".
/// server.of("/game").to("a").to("b").except(me).except_room("muted").emit("tick", &42)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a broadcast does nothing until `emit` is called"]
pub struct Broadcast {
    server: Server,
    namespace: String,
    rooms: Vec<Arc<str>>,
    except: Vec<SocketId>,
    except_rooms: Vec<Arc<str>>,
    only: Vec<SocketId>,
    local: bool,
    volatile: bool,
}

impl Broadcast {
    pub(crate) fn new(server: Server, namespace: &str) -> Self {
        let namespace = if namespace.is_empty() { "/" } else { namespace };
        Broadcast {
            server,
            namespace: namespace.to_owned(),
            rooms: Vec::new(),
            except: Vec::new(),
            except_rooms: Vec::new(),
            only: Vec::new(),
            local: false,
            volatile: false,
        }
    }

    /// Restrict to members of this room; several `to` calls address the union of the rooms,
    /// each member receiving the message once.
    pub fn to(mut self, room: &str) -> Self {
        if !self.rooms.iter().any(|r| &**r == room) {
            self.rooms.push(Arc::from(room));
        }
        self
    }

    /// Leave this connection out.
    pub fn except(mut self, id: SocketId) -> Self {
        self.except.push(id);
        self
    }

    /// Leave the members of this room out.
    pub fn except_room(mut self, room: &str) -> Self {
        if !self.except_rooms.iter().any(|r| &**r == room) {
            self.except_rooms.push(Arc::from(room));
        }
        self
    }

    /// Restrict to this connection (several calls: to these connections), wherever it is in
    /// the cluster; combined with the other filters.
    pub fn socket(mut self, id: SocketId) -> Self {
        self.only.push(id);
        self
    }

    /// Only this node's connections, even in a cluster.
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }

    /// Not kept for resumed sessions: with [recovery](crate::ServerBuilder::recovery) on, the
    /// event gets no `offset` and is never replayed (for example a cursor position, stale a
    /// moment later). Without recovery this changes nothing.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    fn node(&self) -> Option<&Arc<Node>> {
        if self.local {
            None
        } else {
            self.server.inner.cluster.as_ref()
        }
    }

    fn filter(&self) -> Filter {
        Filter {
            ns: self.namespace.clone(),
            rooms: self.rooms.iter().map(|r| r.to_string()).collect(),
            except: self.except.iter().map(|id| id.to_string()).collect(),
            except_rooms: self.except_rooms.iter().map(|r| r.to_string()).collect(),
            only: self.only.iter().map(|id| id.to_string()).collect(),
        }
    }

    /// Serialize the event once and queue it to every addressed connection, without waiting;
    /// in a cluster, also hand one copy to the engine for the other nodes, without waiting.
    ///
    /// A local recipient whose queue is full does not receive it (see
    /// [`SlowConsumerPolicy`](crate::SlowConsumerPolicy)); the counts, and what became of the
    /// copy for the other nodes, are in the returned [`Delivery`]. To wait for the broker's
    /// verdict, use [`emit_confirmed`](Self::emit_confirmed).
    ///
    /// # Errors
    /// [`SendError::InvalidName`] for an invalid event name, [`SendError::Encode`] if `data`
    /// does not serialize, [`SendError::TooLarge`] if the message exceeds the outbound queue
    /// bound.
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<Delivery, SendError> {
        let frame = encode_event(&self.namespace, event, data, None)?;
        if let Some(node) = self.streamed() {
            let (handed, pending) = node.append_broadcast(self.filter(), frame.as_bytes());
            return Ok(match (handed, pending) {
                (Handed::Pending, Some(fut)) => {
                    node.track(fut);
                    Delivery {
                        published: Published::Queued,
                        ..Delivery::default()
                    }
                }
                (Handed::Confirmed, _) => Delivery {
                    published: Published::Confirmed,
                    ..Delivery::default()
                },
                _ => self.unstreamed(frame),
            });
        }
        let mut delivery = self.send_frame(frame.clone());
        if let Some(node) = self.node() {
            delivery.published = match node.publish_broadcast(self.filter(), frame.as_bytes()) {
                Handed::Pending => Published::Queued,
                Handed::Confirmed => Published::Confirmed,
                Handed::Failed => Published::Failed,
            };
        }
        Ok(delivery)
    }

    /// [`emit`](Self::emit), then wait until the engine has published the copy for the other
    /// nodes (or failed to): [`Delivery::published`] is then `Confirmed` or `Failed`.
    ///
    /// # Errors
    /// As [`emit`](Self::emit).
    pub async fn emit_confirmed<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<Delivery, SendError> {
        let frame = encode_event(&self.namespace, event, data, None)?;
        if let Some(node) = self.streamed() {
            let (handed, pending) = node.append_broadcast(self.filter(), frame.as_bytes());
            let ok = match (handed, pending) {
                (Handed::Pending, Some(fut)) => {
                    let r = fut.await;
                    node.count(&r);
                    r.is_ok()
                }
                (Handed::Confirmed, _) => true,
                _ => false,
            };
            return Ok(if ok {
                Delivery {
                    published: Published::Confirmed,
                    ..Delivery::default()
                }
            } else {
                self.unstreamed(frame)
            });
        }
        let mut delivery = self.send_frame(frame.clone());
        if let Some(node) = self.node() {
            delivery.published = match node
                .publish_broadcast_confirmed(self.filter(), frame.as_bytes())
                .await
            {
                Ok(()) => Published::Confirmed,
                Err(_) => Published::Failed,
            };
        }
        Ok(delivery)
    }

    /// The node, when this broadcast goes through the cluster's streams (recovery on, an
    /// engine with streams, a namespace with a history, not volatile, not local).
    fn streamed(&self) -> Option<&Arc<Node>> {
        let node = self.node()?;
        (node.streams_active() && !self.volatile).then_some(node)
    }

    /// A broadcast the stream refused (the broker is away): this node's members still get it,
    /// unnumbered, as without recovery; other nodes do not.
    fn unstreamed(&self, frame: Utf8Bytes) -> Delivery {
        let Some(ns) = self.server.lookup_namespace(&self.namespace) else {
            return Delivery {
                published: Published::Failed,
                ..Delivery::default()
            };
        };
        let mut d = self.deliver(&ns, frame);
        d.published = Published::Failed;
        d
    }

    /// Queue a stream entry (a broadcast numbered by the engine) to the local connections
    /// addressed, under the history lock; an entry already delivered is skipped.
    pub(crate) fn send_frame_at(
        &self,
        frame: Utf8Bytes,
        pos: &crate::cluster::StreamPos,
    ) -> Delivery {
        let Some(ns) = self.server.lookup_namespace(&self.namespace) else {
            return Delivery::default();
        };
        let Some(history) = &ns.history else {
            return self.deliver(&ns, frame);
        };
        let mut h = crate::sync::lock(history);
        let filter = self.entry_filter();
        let now = tokio::time::Instant::now();
        match h.record_at(&frame, filter, pos.offset, pos.prev, &pos.epoch, now) {
            Some(frame) => self.deliver(&ns, frame),
            None => Delivery::default(),
        }
    }

    /// The local connections addressed.
    fn local_targets(&self) -> Vec<Arc<ConnShared>> {
        let Some(ns) = self.server.lookup_namespace(&self.namespace) else {
            return Vec::new();
        };
        let targets = if self.rooms.is_empty() {
            Targets::All
        } else {
            Targets::Rooms(&self.rooms)
        };
        let excluded = self.excluded_by_rooms(&ns);
        ns.recipients(targets)
            .as_slice()
            .iter()
            .filter(|c| self.admits(c.id, &excluded))
            .cloned()
            .collect()
    }

    fn excluded_by_rooms(&self, ns: &crate::registry::Namespace) -> HashSet<SocketId> {
        self.except_rooms
            .iter()
            .flat_map(|r| ns.room_members(r))
            .collect()
    }

    fn admits(&self, id: SocketId, excluded: &HashSet<SocketId>) -> bool {
        !self.except.contains(&id)
            && !excluded.contains(&id)
            && (self.only.is_empty() || self.only.contains(&id))
    }

    /// Handles on the local connections addressed, scoped to the namespace.
    pub(crate) fn local_sockets(&self) -> Vec<Socket> {
        let ns: Arc<str> = Arc::from(self.namespace.as_str());
        self.local_targets()
            .into_iter()
            .map(|c| Socket::new(self.server.clone(), c, ns.clone()))
            .collect()
    }

    /// Queue a frame to the local connections addressed. With a history (recovery on) and
    /// unless volatile, the frame gets its offset and is kept, and is delivered under the
    /// history lock (see `session::history`).
    pub(crate) fn send_frame(&self, frame: Utf8Bytes) -> Delivery {
        let Some(ns) = self.server.lookup_namespace(&self.namespace) else {
            return Delivery::default();
        };
        // With the cluster's streams, the engine numbers broadcasts: what reaches here (volatile
        // and local broadcasts, another node's volatile ones) is not numbered.
        let streams = self
            .server
            .inner
            .cluster
            .as_ref()
            .is_some_and(|n| n.streams_active());
        match &ns.history {
            Some(history) if !self.volatile && !streams => {
                let mut h = crate::sync::lock(history);
                let filter = self.entry_filter();
                let frame = h.record(&frame, filter, tokio::time::Instant::now());
                let delivery = self.deliver(&ns, frame);
                drop(h);
                delivery
            }
            _ => self.deliver(&ns, frame),
        }
    }

    /// Whom this broadcast addresses, as a history entry records it.
    fn entry_filter(&self) -> EntryFilter {
        EntryFilter {
            rooms: self.rooms.clone(),
            except: self.except.clone(),
            except_rooms: self.except_rooms.clone(),
            only: self.only.clone(),
        }
    }

    /// The local broadcast a recorded entry's filter describes.
    pub(crate) fn from_entry(server: &Server, namespace: &str, f: &EntryFilter) -> Broadcast {
        let mut b = Broadcast::new(server.clone(), namespace).local();
        b.rooms = f.rooms.clone();
        b.except = f.except.clone();
        b.except_rooms = f.except_rooms.clone();
        b.only = f.only.clone();
        b
    }

    /// Queue a frame to the addressed members of `ns`, without recording it.
    pub(crate) fn deliver(&self, ns: &crate::registry::Namespace, frame: Utf8Bytes) -> Delivery {
        let mut delivery = Delivery::default();
        let targets = if self.rooms.is_empty() {
            Targets::All
        } else {
            Targets::Rooms(&self.rooms)
        };
        let excluded = if self.except_rooms.is_empty() {
            HashSet::new()
        } else {
            self.excluded_by_rooms(ns)
        };
        let recipients = ns.recipients(targets);
        let inner = &self.server.inner;
        let plain = self.only.is_empty() && excluded.is_empty();
        for conn in recipients.as_slice() {
            if if plain {
                self.except.contains(&conn.id)
            } else {
                !self.admits(conn.id, &excluded)
            } {
                continue;
            }
            match conn.send(frame.clone(), &inner.config, &inner.counters) {
                Ok(()) => delivery.queued += 1,
                Err(SendError::QueueFull) => delivery.dropped += 1,
                Err(_) => {}
            }
        }
        delivery
    }

    /// Run `op` here and on every other node; the local answer comes first.
    async fn everywhere(&self, op: Op) -> Result<Vec<(String, Res)>, ClusterError> {
        let filter = self.filter();
        let local = crate::cluster::local::answer(&self.server, &filter, &op);
        let here = self
            .server
            .inner
            .cluster
            .as_ref()
            .map(|n| n.id.clone())
            .unwrap_or_default();
        let mut all = vec![(here, local)];
        all.extend(crate::cluster::ask(&self.server, self.node(), filter, op).await?);
        Ok(all)
    }

    /// The addressed connections, on every node, with their rooms in this namespace (sorted by
    /// id).
    ///
    /// ```
    /// # async fn demo(server: wsu::Server) -> Result<(), wsu::cluster::ClusterError> {
    /// for s in server.to("lobby").fetch_sockets().await? {
    ///     println!("{} on node {} in {:?}", s.id, s.node, s.rooms);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClusterError::Timeout`] when a live node does not answer within the request timeout,
    /// [`ClusterError::Engine`] when the request cannot be sent. Never fails without an engine.
    pub async fn fetch_sockets(&self) -> Result<Vec<SocketInfo>, ClusterError> {
        let mut out = Vec::new();
        for (node, res) in self.everywhere(Op::Sockets).await? {
            if let Res::Sockets { sockets } = res {
                out.extend(sockets.into_iter().filter_map(|s| {
                    Some(SocketInfo {
                        id: SocketId::parse(&s.id)?,
                        node: node.clone(),
                        rooms: s.rooms,
                    })
                }));
            }
        }
        out.sort_by_key(|s| s.id);
        Ok(out)
    }

    fn count(all: Vec<(String, Res)>) -> usize {
        all.into_iter()
            .map(|(_, r)| match r {
                Res::Count { n } => n,
                _ => 0,
            })
            .sum()
    }

    /// Put the addressed connections, on every node, in `room` (of this namespace). Returns
    /// how many joined.
    ///
    /// # Errors
    /// As [`fetch_sockets`](Self::fetch_sockets).
    pub async fn sockets_join(&self, room: &str) -> Result<usize, ClusterError> {
        Ok(Self::count(
            self.everywhere(Op::Join {
                room: room.to_owned(),
            })
            .await?,
        ))
    }

    /// Take the addressed connections, on every node, out of `room`. Returns how many left.
    ///
    /// # Errors
    /// As [`fetch_sockets`](Self::fetch_sockets).
    pub async fn sockets_leave(&self, room: &str) -> Result<usize, ClusterError> {
        Ok(Self::count(
            self.everywhere(Op::Leave {
                room: room.to_owned(),
            })
            .await?,
        ))
    }

    /// Close the addressed connections, on every node (code 1000, reason `disconnected by the
    /// server`). Returns how many.
    ///
    /// # Errors
    /// As [`fetch_sockets`](Self::fetch_sockets).
    pub async fn disconnect_sockets(&self) -> Result<usize, ClusterError> {
        Ok(Self::count(self.everywhere(Op::Disconnect).await?))
    }

    /// Send `event` to every addressed connection, on every node, each with an ack, and
    /// collect the answers decoded as `R`: each connection has `timeout` to answer; nodes that
    /// do not report their count within the request timeout are listed in
    /// [`AckReport::missing_nodes`].
    ///
    /// ```
    /// # async fn demo(server: wsu::Server) -> Result<(), wsu::SendError> {
    /// let report = server.to("voters")
    ///     .emit_with_ack::<_, bool>("vote", &"pizza?", std::time::Duration::from_secs(5))
    ///     .await?;
    /// let yes = report.answers.iter().filter(|(_, r)| matches!(r, Ok(true))).count();
    /// println!("{yes} of {} said yes", report.expected);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`SendError::InvalidName`], [`SendError::Encode`]: nothing was sent.
    pub async fn emit_with_ack<T, R>(
        &self,
        event: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<AckReport<R>, SendError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        names::validate_room(event).map_err(|e| SendError::InvalidName(format!("event {e}")))?;
        let raw: Box<RawValue> =
            serde_json::value::to_raw_value(data).map_err(SendError::Encode)?;
        let filter = self.filter();
        let (local_n, local) =
            crate::cluster::local::ack_broadcast(&self.server, &filter, event, &raw, timeout);
        let remote = async {
            let Some(node) = self.node() else {
                return (0, Vec::new(), Vec::new());
            };
            let op = Op::BroadcastAck {
                event: event.to_owned(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
            let Ok(req) = node.open_request(None, filter.clone(), op, raw.get().as_bytes()) else {
                return (0, Vec::new(), node.peers());
            };
            node.collect_acks(req, timeout).await
        };
        let (local_answers, (remote_n, remote_answers, missing_nodes)) =
            tokio::join!(local, remote);
        let mut answers = Vec::with_capacity(local_answers.len() + remote_answers.len());
        for a in local_answers.into_iter().chain(remote_answers) {
            let (id, r) = crate::cluster::local::from_wire(a);
            let Some(id) = id else { continue };
            let r =
                r.and_then(|raw| serde_json::from_str::<R>(raw.get()).map_err(AckError::Decode));
            answers.push((id, r));
        }
        Ok(AckReport {
            expected: local_n + remote_n,
            answers,
            missing_nodes,
        })
    }
}

/// Encode an `event` message once.
pub(crate) fn encode_event<T: Serialize + ?Sized>(
    namespace: &str,
    event: &str,
    data: &T,
    ack_id: Option<&str>,
) -> Result<Utf8Bytes, SendError> {
    names::validate_room(event).map_err(|e| SendError::InvalidName(format!("event {e}")))?;
    let mut msg = Outgoing::<T>::new(MessageType::Event);
    msg.namespace = Some(namespace);
    msg.event = Some(event);
    msg.data = Some(data);
    msg.ack_id = ack_id;
    let text = msg.encode().map_err(SendError::Encode)?;
    Ok(Utf8Bytes::from(text))
}
