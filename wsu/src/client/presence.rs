//! Presence (PROTOCOL extensions v2 §6): who is in a room, per user key, as the server reports
//! it with `presence` frames, and the client's view of each room built from them.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// One connection of a user present in a room: its session id and the metadata its connect hook
/// set with `Socket::set_presence` (`null` by default).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PresenceEntry {
    /// The connection's session id.
    pub sid: String,
    /// The metadata (`null` when none was set).
    #[serde(default)]
    pub meta: serde_json::Value,
}

/// The members of a room: user key (the sid unless the server set one) → that user's
/// connections (one per tab or device).
pub type PresenceState = BTreeMap<String, Vec<PresenceEntry>>;

/// What a `presence` frame says about a room.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceUpdate {
    /// The whole state of the room: it replaces the client's view (sent when the client joins
    /// the room, and again after a resume).
    State(PresenceState),
    /// A change: connections that joined, and connections that left (a user key with no
    /// connection left is gone).
    Diff {
        /// The connections that joined, by user key.
        joins: PresenceState,
        /// The connections that left, by user key.
        leaves: PresenceState,
    },
}

/// A `presence` frame, delivered to
/// [`ClientBuilder::on_presence`](super::ClientBuilder::on_presence).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceEvent {
    /// The room's namespace.
    pub namespace: String,
    /// The room.
    pub room: String,
    /// The state or the change.
    pub update: PresenceUpdate,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(default)]
    namespace: Option<String>,
    room: String,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    state: Option<PresenceState>,
    #[serde(default)]
    joins: Option<PresenceState>,
    #[serde(default)]
    leaves: Option<PresenceState>,
}

/// Parses a `presence` frame.
pub(crate) fn parse(bytes: &[u8]) -> Option<PresenceEvent> {
    let frame: Frame = serde_json::from_slice(bytes).ok()?;
    let namespace = match frame.namespace {
        Some(ns) if !ns.is_empty() => ns,
        _ => "/".to_owned(),
    };
    let update = match frame.data {
        Data {
            state: Some(state), ..
        } => PresenceUpdate::State(state),
        Data { joins, leaves, .. } if joins.is_some() || leaves.is_some() => PresenceUpdate::Diff {
            joins: joins.unwrap_or_default(),
            leaves: leaves.unwrap_or_default(),
        },
        _ => return None,
    };
    Some(PresenceEvent {
        namespace,
        room: frame.room,
        update,
    })
}

/// The client's view of the rooms it has presence for.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    rooms: HashMap<(String, String), PresenceState>,
}

impl Tracker {
    /// Applies a state or a diff.
    pub(crate) fn apply(&mut self, event: &PresenceEvent) {
        let key = (event.namespace.clone(), event.room.clone());
        match &event.update {
            PresenceUpdate::State(state) => {
                self.rooms.insert(key, state.clone());
            }
            PresenceUpdate::Diff { joins, leaves } => {
                let room = self.rooms.entry(key).or_default();
                for (user, entries) in joins {
                    let list = room.entry(user.clone()).or_default();
                    for entry in entries {
                        match list.iter_mut().find(|e| e.sid == entry.sid) {
                            Some(existing) => existing.meta = entry.meta.clone(),
                            None => list.push(entry.clone()),
                        }
                    }
                }
                for (user, entries) in leaves {
                    if let Some(list) = room.get_mut(user) {
                        list.retain(|e| !entries.iter().any(|gone| gone.sid == e.sid));
                        if list.is_empty() {
                            room.remove(user);
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn get(&self, namespace: &str, room: &str) -> Option<PresenceState> {
        self.rooms
            .get(&(namespace.to_owned(), room.to_owned()))
            .cloned()
    }

    /// Forgets a room (left, or its rejoin failed).
    pub(crate) fn forget_room(&mut self, namespace: &str, room: &str) {
        self.rooms.remove(&(namespace.to_owned(), room.to_owned()));
    }

    /// Forgets every room of a namespace.
    pub(crate) fn forget_namespace(&mut self, namespace: &str) {
        self.rooms.retain(|(ns, _), _| ns != namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = r#"{"type":"presence","namespace":"/chat","room":"lobby","data":{"state":{"ada":[{"sid":"0123456789abcdef","meta":{"nick":"ada"}}]}}}"#;
    const JOIN: &str = r#"{"type":"presence","namespace":"/chat","room":"lobby","data":{"joins":{"bob":[{"sid":"1111111111111111","meta":null}],"ada":[{"sid":"2222222222222222","meta":{"nick":"ada"}}]},"leaves":{}}}"#;
    const LEAVE: &str = r#"{"type":"presence","namespace":"/chat","room":"lobby","data":{"joins":{},"leaves":{"ada":[{"sid":"0123456789abcdef","meta":{"nick":"ada"}}],"bob":[{"sid":"1111111111111111","meta":null}]}}}"#;

    #[test]
    fn state_and_diffs_apply() {
        let mut t = Tracker::default();
        let state = parse(STATE.as_bytes()).unwrap();
        assert_eq!((&*state.namespace, &*state.room), ("/chat", "lobby"));
        assert!(matches!(state.update, PresenceUpdate::State(_)));
        t.apply(&state);
        t.apply(&parse(JOIN.as_bytes()).unwrap());
        let room = t.get("/chat", "lobby").unwrap();
        assert_eq!(room["ada"].len(), 2);
        assert_eq!(room["bob"][0].meta, serde_json::Value::Null);
        t.apply(&parse(LEAVE.as_bytes()).unwrap());
        let room = t.get("/chat", "lobby").unwrap();
        assert_eq!(room.keys().collect::<Vec<_>>(), ["ada"]);
        assert_eq!(room["ada"][0].sid, "2222222222222222");
        t.forget_namespace("/chat");
        assert!(t.get("/chat", "lobby").is_none());
        assert!(parse(br#"{"type":"presence","room":"r","data":{}}"#).is_none());
    }
}
