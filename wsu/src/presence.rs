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
}

impl PresenceCtx {
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

/// The `state` frame of a room with these members.
pub(crate) fn state_frame<'a>(
    namespace: &str,
    room: &str,
    members: impl Iterator<Item = &'a Arc<ConnShared>>,
) -> Utf8Bytes {
    let ids: Vec<(SocketId, Option<Arc<PresenceId>>, String)> = members
        .map(|c| (c.id, c.presence_id(), c.id.to_string()))
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
pub(crate) fn snapshot<'a>(members: impl Iterator<Item = &'a Arc<ConnShared>>) -> Presence {
    let mut out = Presence::new();
    for c in members {
        let who = c.presence_id();
        let (key, meta) = match &who {
            Some(p) => (
                p.key.to_string(),
                serde_json::from_str(p.meta.get()).unwrap_or(serde_json::Value::Null),
            ),
            None => (c.id.to_string(), serde_json::Value::Null),
        };
        out.entry(key)
            .or_default()
            .push(PresenceEntry { id: c.id, meta });
    }
    for list in out.values_mut() {
        list.sort_by_key(|e| e.id);
    }
    out
}
