//! A reserved connection slot.

use super::Server;

/// One of the server's connection slots (`max_connections`), reserved by the upgrade
/// ([`Server::admit_upgrade`]) and released when dropped: whichever way an upgrade or a
/// connection ends — refused, failed, cancelled, finished or unwinding — the slot comes back
/// exactly once, and `stats().connections` and `shutdown` stay right.
pub(crate) struct Slot {
    server: Server,
}

impl Slot {
    /// Wrap a slot already counted in `connections`.
    pub(super) fn new(server: Server) -> Self {
        Slot { server }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.server.release_slot();
    }
}
