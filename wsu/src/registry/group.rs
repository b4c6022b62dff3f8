//! A set of connections with a cached, shareable snapshot for broadcasting.

use std::collections::HashMap;
use std::sync::Arc;

use crate::SocketId;
use crate::conn::ConnShared;

/// Members of a namespace or a room.
///
/// Joining and leaving are O(1); a broadcast takes the cached snapshot (an `Arc` clone) and
/// only rebuilds it after membership changed, so the registry lock is never held while sending.
#[derive(Default)]
pub(crate) struct Group {
    members: HashMap<SocketId, Arc<ConnShared>>,
    snapshot: Option<Arc<[Arc<ConnShared>]>>,
}

impl Group {
    /// Add a member; false if it was already there.
    pub(crate) fn insert(&mut self, conn: &Arc<ConnShared>) -> bool {
        if self.members.contains_key(&conn.id) {
            return false;
        }
        self.members.insert(conn.id, conn.clone());
        self.snapshot = None;
        true
    }

    /// Remove a member; false if it was not there.
    pub(crate) fn remove(&mut self, id: SocketId) -> bool {
        let removed = self.members.remove(&id).is_some();
        if removed {
            self.snapshot = None;
            if self.members.is_empty() {
                // Give the memory of a large, now empty group back.
                self.members = HashMap::new();
            }
        }
        removed
    }

    pub(crate) fn contains(&self, id: SocketId) -> bool {
        self.members.contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members, as a shared snapshot.
    pub(crate) fn snapshot(&mut self) -> Arc<[Arc<ConnShared>]> {
        if let Some(s) = &self.snapshot {
            return s.clone();
        }
        let s: Arc<[Arc<ConnShared>]> = self.members.values().cloned().collect();
        self.snapshot = Some(s.clone());
        s
    }

    /// Ids of the members.
    pub(crate) fn ids(&self) -> impl Iterator<Item = SocketId> + '_ {
        self.members.keys().copied()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<ConnShared>> + '_ {
        self.members.values()
    }
}
