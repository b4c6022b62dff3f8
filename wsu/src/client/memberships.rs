//! The namespaces and rooms a client has joined, remembered so that they are joined again after
//! a reconnection.

/// One remembered membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Membership {
    /// A namespace joined with `join_namespace` (or through one of its rooms).
    Namespace(Box<str>),
    /// A room of a namespace.
    Room(Box<str>, Box<str>),
}

/// Memberships in the order they were first joined.
#[derive(Debug, Default)]
pub(crate) struct Memberships {
    namespaces: Vec<Box<str>>,
    rooms: Vec<(Box<str>, Box<str>)>,
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
    }

    pub(crate) fn remove(&mut self, m: &Membership) {
        match m {
            Membership::Namespace(ns) => self.remove_namespace(ns),
            Membership::Room(ns, room) => self.remove_room(ns, room),
        }
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
}
