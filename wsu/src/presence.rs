//! Presence: per room, who is there — each connection under its user key, with the metadata
//! its connect hook gave ([`Socket::set_presence`](crate::Socket::set_presence)) — and
//! `presence` frames to the room's members when that changes (PROTOCOL.md §13.6).
//!
//! Presence is computed from room membership itself (no second registry to keep in step): a
//! room's state is its members' identities, and every change is sent under the room's members
//! lock, so the frames of one room are totally ordered.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::SocketId;
use crate::config::SlowConsumerPolicy;
use crate::conn::ConnShared;
use crate::stats::Counters;

/// One connection in a room's presence.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PresenceEntry {
    /// The connection.
    pub id: SocketId,
    /// The metadata given with [`Socket::set_presence`](crate::Socket::set_presence) (`null`
    /// when none was).
    pub meta: serde_json::Value,
}

/// A room's presence: user key → the connections under it (one per tab or device), sorted by
/// key, then by connection id.
pub type Presence = BTreeMap<String, Vec<PresenceEntry>>;

/// A connection's presence identity.
#[derive(Debug)]
pub(crate) struct PresenceId {
    pub(crate) key: Arc<str>,
    pub(crate) meta: Box<RawValue>,
}

/// What a namespace needs to send presence frames.
pub(crate) struct PresenceCtx {
    pub(crate) counters: Arc<Counters>,
    pub(crate) slow_consumer: SlowConsumerPolicy,
    pub(crate) max_queued_bytes: usize,
    /// In a cluster: where diffs go to the other nodes, and the replica of their members.
    pub(crate) node: Option<Arc<crate::cluster::node::Node>>,
}

impl PresenceCtx {
    /// Tell the other nodes of a cluster (their members of `room`, and their replicas).
    pub(crate) fn publish(
        &self,
        namespace: &str,
        room: &str,
        except: Option<SocketId>,
        frame: &Utf8Bytes,
    ) {
        if let Some(node) = &self.node {
            node.publish_presence(namespace, room, except, frame.as_bytes());
        }
    }

    /// The other nodes' members of a room, as this node knows them.
    pub(crate) fn remote(&self, namespace: &str, room: &str) -> Vec<RemoteEntry> {
        self.node
            .as_ref()
            .map(|n| n.remote_presence.entries(namespace, room))
            .unwrap_or_default()
    }

    pub(crate) fn send(&self, to: &ConnShared, frame: &Utf8Bytes) {
        let _ = to.send_with(
            frame.clone(),
            self.max_queued_bytes,
            self.slow_consumer,
            &self.counters,
        );
    }
}

#[derive(Serialize)]
struct EntryOut<'a> {
    sid: String,
    meta: &'a RawValue,
}

type Grouped<'a> = BTreeMap<&'a str, Vec<EntryOut<'a>>>;

fn null() -> &'static RawValue {
    // A valid JSON literal; cannot fail.
    serde_json::from_str("null").unwrap_or_else(|_| unreachable!())
}

/// One connection's (key, entry).
fn entry<'a>(
    id: SocketId,
    who: Option<&'a PresenceId>,
    sid_key: &'a str,
) -> (&'a str, EntryOut<'a>) {
    match who {
        Some(p) => (
            &p.key,
            EntryOut {
                sid: id.to_string(),
                meta: &p.meta,
            },
        ),
        None => (
            sid_key,
            EntryOut {
                sid: id.to_string(),
                meta: null(),
            },
        ),
    }
}

#[derive(Serialize)]
struct Frame<'a, D> {
    #[serde(rename = "type")]
    kind: &'static str,
    namespace: &'a str,
    room: &'a str,
    data: D,
}

#[derive(Serialize)]
struct State<'a> {
    state: Grouped<'a>,
}

#[derive(Serialize)]
struct Diff<'a> {
    joins: Grouped<'a>,
    leaves: Grouped<'a>,
}

fn encode<D: Serialize>(namespace: &str, room: &str, data: D) -> Utf8Bytes {
    let frame = Frame {
        kind: "presence",
        namespace,
        room,
        data,
    };
    Utf8Bytes::from(serde_json::to_string(&frame).unwrap_or_default())
}

/// Another node's member of a room: (id, identity).
pub(crate) type RemoteEntry = (SocketId, Arc<PresenceId>);

/// The `state` frame of a room with these members (and these of other nodes).
pub(crate) fn state_frame<'a>(
    namespace: &str,
    room: &str,
    members: impl Iterator<Item = &'a Arc<ConnShared>>,
    remote: &[RemoteEntry],
) -> Utf8Bytes {
    let ids: Vec<(SocketId, Option<Arc<PresenceId>>, String)> = members
        .map(|c| (c.id, c.presence_id(), c.id.to_string()))
        .chain(
            remote
                .iter()
                .map(|(id, p)| (*id, Some(p.clone()), id.to_string())),
        )
        .collect();
    let mut state: Grouped<'_> = BTreeMap::new();
    for (id, who, sid) in &ids {
        let (k, e) = entry(*id, who.as_deref(), sid);
        state.entry(k).or_default().push(e);
    }
    for list in state.values_mut() {
        list.sort_by(|a, b| a.sid.cmp(&b.sid));
    }
    encode(namespace, room, State { state })
}

/// A `joins`/`leaves` frame for one connection (an identity change is both).
///
/// `joined`/`left`: `Some(identity)` for a side that has the connection (`Some(None)`: the
/// default identity), `None` for an empty side.
pub(crate) fn diff_frame(
    namespace: &str,
    room: &str,
    id: SocketId,
    joined: Option<Option<&PresenceId>>,
    left: Option<Option<&PresenceId>>,
) -> Utf8Bytes {
    let sid = id.to_string();
    let mut joins: Grouped<'_> = BTreeMap::new();
    let mut leaves: Grouped<'_> = BTreeMap::new();
    if let Some(who) = joined {
        let (k, e) = entry(id, who, &sid);
        joins.entry(k).or_default().push(e);
    }
    if let Some(who) = left {
        let (k, e) = entry(id, who, &sid);
        leaves.entry(k).or_default().push(e);
    }
    encode(namespace, room, Diff { joins, leaves })
}

/// The public form of a room's presence.
pub(crate) fn snapshot<'a>(
    members: impl Iterator<Item = &'a Arc<ConnShared>>,
    remote: &[RemoteEntry],
) -> Presence {
    let mut out = Presence::new();
    let all = members
        .map(|c| (c.id, c.presence_id()))
        .chain(remote.iter().map(|(id, p)| (*id, Some(p.clone()))));
    for (id, who) in all {
        let (key, meta) = match &who {
            Some(p) => (
                p.key.to_string(),
                serde_json::from_str(p.meta.get()).unwrap_or(serde_json::Value::Null),
            ),
            None => (id.to_string(), serde_json::Value::Null),
        };
        out.entry(key).or_default().push(PresenceEntry { id, meta });
    }
    for list in out.values_mut() {
        list.sort_by_key(|e| e.id);
    }
    out
}

/// The `joins` / `leaves` of a presence frame, parsed (a diff from another node).
pub(crate) struct ParsedDiff {
    pub(crate) namespace: String,
    pub(crate) room: String,
    pub(crate) joins: Vec<RemoteEntry>,
    pub(crate) leaves: Vec<SocketId>,
}

/// Parse a presence diff frame written by [`diff_frame`] (by any node).
pub(crate) fn parse_diff(frame: &[u8]) -> Option<ParsedDiff> {
    #[derive(serde::Deserialize)]
    struct In {
        sid: String,
        meta: Box<RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        #[serde(default)]
        joins: BTreeMap<String, Vec<In>>,
        #[serde(default)]
        leaves: BTreeMap<String, Vec<In>>,
    }
    #[derive(serde::Deserialize)]
    struct F {
        namespace: String,
        room: String,
        data: Data,
    }
    let f: F = serde_json::from_slice(frame).ok()?;
    let joins = f
        .data
        .joins
        .into_iter()
        .flat_map(|(key, list)| {
            let key: Arc<str> = Arc::from(key);
            list.into_iter().filter_map(move |e| {
                Some((
                    SocketId::parse(&e.sid)?,
                    Arc::new(PresenceId {
                        key: key.clone(),
                        meta: e.meta,
                    }),
                ))
            })
        })
        .collect();
    let leaves = f
        .data
        .leaves
        .into_values()
        .flatten()
        .filter_map(|e| SocketId::parse(&e.sid))
        .collect();
    Some(ParsedDiff {
        namespace: f.namespace,
        room: f.room,
        joins,
        leaves,
    })
}

/// One room's members on other nodes: id → (node, identity).
type RemoteRoom = BTreeMap<SocketId, (String, Arc<PresenceId>)>;

/// A node's replica of the other nodes' room members, fed by their presence diffs; a node that
/// leaves the membership takes its members with it.
#[derive(Default)]
pub(crate) struct RemotePresence {
    rooms: std::sync::Mutex<std::collections::HashMap<(String, String), RemoteRoom>>,
}

impl RemotePresence {
    /// Apply a diff from `node`.
    pub(crate) fn apply(&self, node: &str, d: &ParsedDiff) {
        let mut rooms = crate::sync::lock(&self.rooms);
        let key = (d.namespace.clone(), d.room.clone());
        let room = rooms.entry(key.clone()).or_default();
        for id in &d.leaves {
            room.remove(id);
        }
        for (id, who) in &d.joins {
            room.insert(*id, (node.to_owned(), who.clone()));
        }
        if room.is_empty() {
            rooms.remove(&key);
        }
    }

    /// The other nodes' members of a room.
    pub(crate) fn entries(&self, namespace: &str, room: &str) -> Vec<RemoteEntry> {
        crate::sync::lock(&self.rooms)
            .get(&(namespace.to_owned(), room.to_owned()))
            .map(|m| m.iter().map(|(id, (_, who))| (*id, who.clone())).collect())
            .unwrap_or_default()
    }

    /// Forget a node's members; returns them per (namespace, room).
    pub(crate) fn drop_node(&self, node: &str) -> Vec<(String, String, Vec<RemoteEntry>)> {
        let mut out = Vec::new();
        let mut rooms = crate::sync::lock(&self.rooms);
        rooms.retain(|(ns, room), members| {
            let gone: Vec<RemoteEntry> = members
                .iter()
                .filter(|(_, (n, _))| n == node)
                .map(|(id, (_, who))| (*id, who.clone()))
                .collect();
            if !gone.is_empty() {
                members.retain(|_, (n, _)| n != node);
                out.push((ns.clone(), room.clone(), gone));
            }
            !members.is_empty()
        });
        out
    }
}

/// A `leaves` frame for several connections of a room.
pub(crate) fn leaves_frame(namespace: &str, room: &str, gone: &[RemoteEntry]) -> Utf8Bytes {
    let sids: Vec<String> = gone.iter().map(|(id, _)| id.to_string()).collect();
    let mut leaves: Grouped<'_> = BTreeMap::new();
    for ((_, who), sid) in gone.iter().zip(&sids) {
        leaves.entry(&who.key).or_default().push(EntryOut {
            sid: sid.clone(),
            meta: &who.meta,
        });
    }
    encode(
        namespace,
        room,
        Diff {
            joins: BTreeMap::new(),
            leaves,
        },
    )
}

/// A `joins` frame for these local members (telling a new node who is here).
pub(crate) fn joins_frame<'a>(
    namespace: &str,
    room: &str,
    members: impl Iterator<Item = &'a Arc<ConnShared>>,
) -> Utf8Bytes {
    let ids: Vec<(SocketId, Option<Arc<PresenceId>>, String)> = members
        .map(|c| (c.id, c.presence_id(), c.id.to_string()))
        .collect();
    let mut joins: Grouped<'_> = BTreeMap::new();
    for (id, who, sid) in &ids {
        let (k, e) = entry(*id, who.as_deref(), sid);
        joins.entry(k).or_default().push(e);
    }
    encode(
        namespace,
        room,
        Diff {
            joins,
            leaves: BTreeMap::new(),
        },
    )
}
