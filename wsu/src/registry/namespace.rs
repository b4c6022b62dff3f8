//! One namespace: its handlers and hooks (fixed when the server is built) and its members and
//! rooms (changing all the time, behind one short-lived lock).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::SocketId;
use crate::conn::ConnShared;
use crate::handler::ErasedHandler;
use crate::hooks::{ConnectHook, DisconnectHook};
use crate::presence::{self, Presence, PresenceCtx, PresenceId};
use crate::registry::Group;
use crate::session::history::History;
use crate::sync::lock;

/// A registered handler with where it came from.
#[derive(Clone)]
pub(crate) struct HandlerEntry {
    pub(crate) handler: Arc<dyn ErasedHandler>,
    /// `file:line` of the registration, when known (macro registrations).
    pub(crate) location: Option<String>,
    /// The ack type name, when known (macro registrations).
    pub(crate) ack_type: Option<&'static str>,
}

/// Description of one registered event, from [`Server::events`](crate::Server::events).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespaceInfo {
    /// The namespace.
    pub namespace: String,
    /// The event name.
    pub event: String,
    /// The Rust type of the payload.
    pub payload_type: &'static str,
    /// The Rust type of the ack, when known.
    pub ack_type: Option<&'static str>,
    /// Where the handler was registered (`file:line`), when known.
    pub location: Option<String>,
}

/// Whom a broadcast goes to inside a namespace.
#[derive(Clone, Copy)]
pub(crate) enum Targets<'a> {
    /// Every member of the namespace.
    All,
    /// Members of any of these rooms (each member once).
    Rooms(&'a [Arc<str>]),
}

/// The namespace was removed (it was dynamic and became empty) while a join raced with it.
#[derive(Debug)]
pub(crate) struct Removed;

#[derive(Default)]
struct Members {
    all: Group,
    rooms: HashMap<Arc<str>, Group>,
    removed: bool,
}

pub(crate) struct Namespace {
    pub(crate) name: Arc<str>,
    /// Declared on the builder (never removed) rather than allowed on demand.
    pub(crate) declared: bool,
    pub(crate) handlers: super::HandlerMap,
    pub(crate) on_connect: Option<ConnectHook>,
    pub(crate) on_disconnect: Option<DisconnectHook>,
    members: Mutex<Members>,
    /// The broadcasts kept for resumed sessions, with recovery on. Held while a recorded
    /// broadcast is delivered and while a membership starts (see `session::history`).
    pub(crate) history: Option<Mutex<History>>,
    /// With presence on: what sending presence frames needs.
    presence: Option<PresenceCtx>,
}

/// Recipients of one broadcast.
pub(crate) enum Recipients {
    Shared(Arc<[Arc<ConnShared>]>),
    Owned(Vec<Arc<ConnShared>>),
}

impl Recipients {
    pub(crate) fn as_slice(&self) -> &[Arc<ConnShared>] {
        match self {
            Recipients::Shared(s) => s,
            Recipients::Owned(v) => v,
        }
    }
}

impl Namespace {
    pub(crate) fn new(
        name: Arc<str>,
        declared: bool,
        handlers: super::HandlerMap,
        on_connect: Option<ConnectHook>,
        on_disconnect: Option<DisconnectHook>,
        recovery: Option<&crate::Recovery>,
        presence: Option<PresenceCtx>,
    ) -> Self {
        Namespace {
            name,
            declared,
            handlers,
            on_connect,
            on_disconnect,
            members: Mutex::new(Members::default()),
            history: recovery
                .map(|r| Mutex::new(History::new(r.history_size, r.history_bytes, r.history_ttl))),
            presence,
        }
    }

    /// Add a member. Returns whether it is new.
    pub(crate) fn add(&self, conn: &Arc<ConnShared>) -> Result<bool, Removed> {
        let mut m = lock(&self.members);
        if m.removed {
            return Err(Removed);
        }
        Ok(m.all.insert(conn))
    }

    /// Remove a member from the namespace and from these rooms. Returns whether the namespace is
    /// now empty.
    pub(crate) fn remove(&self, conn: &ConnShared, rooms: &[Arc<str>]) -> bool {
        let id = conn.id;
        let mut m = lock(&self.members);
        for room in rooms {
            if let Some(g) = m.rooms.get_mut(room) {
                if g.remove(id) {
                    self.announce_leave(conn, room, g);
                }
                if g.is_empty() {
                    m.rooms.remove(room);
                }
            }
        }
        m.all.remove(id);
        m.all.is_empty()
    }

    /// Add a member to a room (and to the namespace). Returns whether it is new in the room.
    pub(crate) fn join_room(
        &self,
        conn: &Arc<ConnShared>,
        room: &Arc<str>,
    ) -> Result<bool, Removed> {
        let mut m = lock(&self.members);
        if m.removed {
            return Err(Removed);
        }
        m.all.insert(conn);
        let g = m.rooms.entry(room.clone()).or_default();
        let new = g.insert(conn);
        if new {
            if let Some(ctx) = &self.presence {
                // The newcomer gets the state (itself included, other nodes' members too), the
                // others the join.
                let remote = ctx.remote(&self.name, room);
                ctx.send(
                    conn,
                    &presence::state_frame(&self.name, room, g.iter(), &remote),
                );
                let who = conn.presence_id();
                let diff =
                    presence::diff_frame(&self.name, room, conn.id, Some(who.as_deref()), None);
                for other in g.iter().filter(|c| c.id != conn.id) {
                    ctx.send(other, &diff);
                }
                ctx.publish(&self.name, room, Some(conn.id), &diff);
            }
        }
        Ok(new)
    }

    /// Tell a room's remaining members that `conn` left it.
    fn announce_leave(&self, conn: &ConnShared, room: &str, g: &Group) {
        if let Some(ctx) = &self.presence {
            let who = conn.presence_id();
            let diff = presence::diff_frame(&self.name, room, conn.id, None, Some(who.as_deref()));
            for other in g.iter() {
                ctx.send(other, &diff);
            }
            ctx.publish(&self.name, room, None, &diff);
        }
    }

    /// Tell a room's members (the connection included) that a member's identity changed.
    pub(crate) fn presence_changed(
        &self,
        id: SocketId,
        room: &str,
        old: Option<&PresenceId>,
        new: &PresenceId,
    ) {
        let Some(ctx) = &self.presence else { return };
        let m = lock(&self.members);
        let Some(g) = m.rooms.get(room) else { return };
        if !g.contains(id) {
            return;
        }
        let diff = presence::diff_frame(&self.name, room, id, Some(Some(new)), Some(old));
        for c in g.iter() {
            ctx.send(c, &diff);
        }
        ctx.publish(&self.name, room, None, &diff);
    }

    /// A room's presence: its members here and, in a cluster with presence on, elsewhere.
    pub(crate) fn presence(&self, room: &str) -> Presence {
        let remote = self
            .presence
            .as_ref()
            .map(|ctx| ctx.remote(&self.name, room))
            .unwrap_or_default();
        let m = lock(&self.members);
        match m.rooms.get(room) {
            Some(g) => presence::snapshot(g.iter(), &remote),
            None => presence::snapshot(std::iter::empty(), &remote),
        }
    }

    /// Every room's local members as `joins` frames (for a node that just joined the cluster).
    pub(crate) fn presence_sync(&self) -> Vec<(String, tokio_tungstenite::tungstenite::Utf8Bytes)> {
        if self.presence.is_none() {
            return Vec::new();
        }
        let m = lock(&self.members);
        m.rooms
            .iter()
            .map(|(room, g)| {
                (
                    room.to_string(),
                    presence::joins_frame(&self.name, room, g.iter()),
                )
            })
            .collect()
    }

    /// Remove a member from a room; empty rooms are deleted. Returns whether it was there.
    pub(crate) fn leave_room(&self, conn: &ConnShared, room: &str) -> bool {
        let mut m = lock(&self.members);
        let Some(g) = m.rooms.get_mut(room) else {
            return false;
        };
        let removed = g.remove(conn.id);
        if removed {
            self.announce_leave(conn, room, g);
        }
        if g.is_empty() {
            m.rooms.remove(room);
        }
        removed
    }

    /// Mark an empty dynamic namespace as removed; false if someone joined meanwhile.
    pub(crate) fn mark_removed_if_empty(&self) -> bool {
        let mut m = lock(&self.members);
        if m.all.is_empty() {
            m.removed = true;
            true
        } else {
            false
        }
    }

    pub(crate) fn recipients(&self, targets: Targets<'_>) -> Recipients {
        let mut m = lock(&self.members);
        match targets {
            Targets::All => Recipients::Shared(m.all.snapshot()),
            Targets::Rooms([room]) => match m.rooms.get_mut(&**room) {
                Some(g) => Recipients::Shared(g.snapshot()),
                None => Recipients::Owned(Vec::new()),
            },
            Targets::Rooms(rooms) => {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                for room in rooms {
                    if let Some(g) = m.rooms.get(&**room) {
                        for c in g.iter() {
                            if seen.insert(c.id) {
                                out.push(c.clone());
                            }
                        }
                    }
                }
                Recipients::Owned(out)
            }
        }
    }

    pub(crate) fn is_member(&self, id: SocketId) -> bool {
        lock(&self.members).all.contains(id)
    }

    pub(crate) fn member_count(&self) -> usize {
        lock(&self.members).all.len()
    }

    pub(crate) fn room_count(&self) -> usize {
        lock(&self.members).rooms.len()
    }

    pub(crate) fn room_names(&self) -> Vec<String> {
        lock(&self.members)
            .rooms
            .keys()
            .map(|r| r.to_string())
            .collect()
    }

    pub(crate) fn room_members(&self, room: &str) -> Vec<SocketId> {
        lock(&self.members)
            .rooms
            .get(room)
            .map(|g| g.ids().collect())
            .unwrap_or_default()
    }
}
