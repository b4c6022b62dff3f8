//! The namespaces and rooms a client has joined, remembered so that they are joined again after
//! a reconnection, and the joins and leaves the server may not have applied yet, sent again
//! after a resumed reconnection (the server restores the session as it knew it).

/// One remembered membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Membership {
    /// A namespace joined with `join_namespace` (or through one of its rooms).
    Namespace(Box<str>),
    /// A room of a namespace.
    Room(Box<str>, Box<str>),
}

/// A join or a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    Join,
    Leave,
}

/// Memberships in the order they were first joined.
#[derive(Debug, Default)]
pub(crate) struct Memberships {
    namespaces: Vec<Box<str>>,
    rooms: Vec<(Box<str>, Box<str>)>,
    /// Joins and leaves not answered by the server yet (requested by the application, or
    /// rejoins of a fresh session), the latest per membership, in request order. A session
    /// resumed by the server has the memberships the server last applied: these may be
    /// missing from it (a join lost with its connection, or given up in the offline buffer) or
    /// still in it (a lost leave).
    unsettled: Vec<(Membership, Intent)>,
}

impl Memberships {
    pub(crate) fn add_namespace(&mut self, namespace: &str) {
        if namespace != "/" && !self.namespaces.iter().any(|n| &**n == namespace) {
            self.namespaces.push(namespace.into());
        }
    }

    /// Remembers a room, and its namespace (joining a room joins its namespace).
    pub(crate) fn add_room(&mut self, namespace: &str, room: &str) {
        self.add_namespace(namespace);
        if !self.has_room(namespace, room) {
            self.rooms.push((namespace.into(), room.into()));
        }
    }

    fn has_room(&self, namespace: &str, room: &str) -> bool {
        self.rooms
            .iter()
            .any(|(n, r)| &**n == namespace && &**r == room)
    }

    pub(crate) fn remove_room(&mut self, namespace: &str, room: &str) {
        self.rooms
            .retain(|(n, r)| !(&**n == namespace && &**r == room));
    }

    /// Forgets a namespace and all its rooms.
    pub(crate) fn remove_namespace(&mut self, namespace: &str) {
        self.namespaces.retain(|n| &**n != namespace);
        self.rooms.retain(|(n, _)| &**n != namespace);
        // Leaving the namespace leaves its rooms: their requests are moot.
        self.unsettled.retain(|(m, _)| match m {
            Membership::Namespace(_) => true,
            Membership::Room(n, _) => &**n != namespace,
        });
    }

    pub(crate) fn remove(&mut self, m: &Membership) {
        match m {
            Membership::Namespace(ns) => self.remove_namespace(ns),
            Membership::Room(ns, room) => self.remove_room(ns, room),
        }
    }

    /// A join or leave of `m` was requested: unsettled until [`settle`](Self::settle) (it
    /// replaces an unsettled request of the other kind for `m`).
    pub(crate) fn unsettle(&mut self, m: Membership, intent: Intent) {
        self.unsettled.retain(|(u, _)| *u != m);
        self.unsettled.push((m, intent));
    }

    /// The server answered a `intent` request for `m` (applied or refused): settled, unless a
    /// request of the other kind came since.
    pub(crate) fn settle(&mut self, m: &Membership, intent: Intent) {
        self.unsettled.retain(|(u, i)| !(u == m && *i == intent));
    }

    /// What a resumed session may lack or still have: the unsettled requests, in order.
    pub(crate) fn unsettled(&self) -> Vec<(Membership, Intent)> {
        self.unsettled.clone()
    }

    /// A fresh session (nothing resumed): it is in none of the rooms, so the leaves are moot;
    /// every membership is joined again, each unsettled until its rejoin is answered. Returns
    /// what to join (see [`to_rejoin`](Self::to_rejoin)).
    pub(crate) fn fresh_session(&mut self) -> Vec<Membership> {
        let rejoin = self.to_rejoin();
        self.unsettled = rejoin.iter().map(|m| (m.clone(), Intent::Join)).collect();
        rejoin
    }

    /// What to join after reconnecting: namespaces first, then rooms, each in joining order.
    pub(crate) fn to_rejoin(&self) -> Vec<Membership> {
        self.namespaces
            .iter()
            .map(|n| Membership::Namespace(n.clone()))
            .chain(
                self.rooms
                    .iter()
                    .map(|(n, r)| Membership::Room(n.clone(), r.clone())),
            )
            .collect()
    }

    /// The rooms remembered in `namespace`.
    pub(crate) fn rooms(&self, namespace: &str) -> Vec<String> {
        self.rooms
            .iter()
            .filter(|(n, _)| &**n == namespace)
            .map(|(_, r)| r.to_string())
            .collect()
    }

    /// The namespaces remembered, `/` first (every connection is in `/`).
    pub(crate) fn namespaces(&self) -> Vec<String> {
        std::iter::once("/".to_owned())
            .chain(self.namespaces.iter().map(|n| n.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(n: &str) -> Membership {
        Membership::Namespace(n.into())
    }

    fn room(n: &str, r: &str) -> Membership {
        Membership::Room(n.into(), r.into())
    }

    #[test]
    fn rejoin_order_and_removal() {
        let mut m = Memberships::default();
        m.add_room("/", "lobby");
        m.add_room("/chat", "r1");
        m.add_namespace("/admin");
        m.add_room("/chat", "r1");
        assert_eq!(
            m.to_rejoin(),
            [
                ns("/chat"),
                ns("/admin"),
                room("/", "lobby"),
                room("/chat", "r1")
            ]
        );
        assert_eq!(m.namespaces(), ["/", "/chat", "/admin"]);
        m.remove(&room("/", "lobby"));
        m.remove_namespace("/chat");
        assert_eq!(m.to_rejoin(), [ns("/admin")]);
        assert!(m.rooms("/chat").is_empty());
    }

    #[test]
    fn unsettled_requests_keep_the_latest_intent_in_order() {
        let mut m = Memberships::default();
        m.unsettle(room("/", "a"), Intent::Join);
        m.unsettle(room("/", "b"), Intent::Leave);
        m.unsettle(room("/", "a"), Intent::Leave);
        assert_eq!(
            m.unsettled(),
            [
                (room("/", "b"), Intent::Leave),
                (room("/", "a"), Intent::Leave)
            ]
        );
        // The answer to the earlier join does not settle the later leave.
        m.settle(&room("/", "a"), Intent::Join);
        assert_eq!(m.unsettled().len(), 2);
        m.settle(&room("/", "a"), Intent::Leave);
        assert_eq!(m.unsettled(), [(room("/", "b"), Intent::Leave)]);
        // A fresh session: leaves are moot, every membership is a pending rejoin.
        m.add_room("/chat", "c");
        assert_eq!(m.fresh_session(), [ns("/chat"), room("/chat", "c")]);
        assert_eq!(
            m.unsettled(),
            [
                (ns("/chat"), Intent::Join),
                (room("/chat", "c"), Intent::Join)
            ]
        );
    }
}
