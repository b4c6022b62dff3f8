//! The end of a connection: disconnect hooks (contained, with a deadline) and the cleanup guard
//! that runs however the connection task ends — returned, cancelled, or unwinding from a panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::{ConnShared, Membership};
use crate::hooks::DisconnectReason;
use crate::server::Slot;
use crate::stats::Counters;
use crate::sync::{BoxFuture, CatchUnwind, panic_message};
use crate::{Server, Socket};

/// Run a hook: the call that makes its future and the future itself contain panics, and the
/// whole is cancelled at the hook deadline ([`ServerBuilder::hook_timeout`]). Both outcomes are
/// counted and logged.
///
/// [`ServerBuilder::hook_timeout`]: crate::ServerBuilder::hook_timeout
pub(crate) async fn run_hook(
    server: &Server,
    conn: crate::SocketId,
    what: &'static str,
    make: impl FnOnce() -> BoxFuture<()>,
) {
    let fut = match catch_unwind(AssertUnwindSafe(make)) {
        Ok(fut) => fut,
        Err(payload) => {
            let panic = panic_message(payload.as_ref());
            Counters::inc(&server.inner.counters.handler_panics);
            tracing::error!(%conn, %panic, hook = what, "a hook panicked");
            return;
        }
    };
    let timeout = server.inner.config.hook_timeout;
    match tokio::time::timeout(timeout, CatchUnwind::new(fut)).await {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => {
            Counters::inc(&server.inner.counters.handler_panics);
            tracing::error!(%conn, %panic, hook = what, "a hook panicked");
        }
        Err(_) => {
            Counters::inc(&server.inner.counters.hook_timeouts);
            tracing::error!(
                %conn,
                hook = what,
                ?timeout,
                "a hook overran its deadline and was cancelled"
            );
        }
    }
}

/// After a namespace membership ended: its disconnect hook, and removal of an empty dynamic
/// namespace.
pub(crate) async fn leave_hooks(
    server: &Server,
    conn: &Arc<ConnShared>,
    m: Membership,
    reason: DisconnectReason,
) {
    if let Some(hook) = m.ns.on_disconnect.clone() {
        let socket = Socket::new(server.clone(), conn.clone(), m.ns.name.clone());
        run_hook(server, conn.id, "namespace disconnect", || {
            hook(socket, reason)
        })
        .await;
    }
    server.release_namespace(&m.ns);
}

/// [`leave_hooks`] from synchronous code: the hook runs in a new task.
pub(crate) fn after_leave(
    server: &Server,
    conn: &Arc<ConnShared>,
    m: Membership,
    reason: DisconnectReason,
) {
    if m.ns.on_disconnect.is_none() {
        server.release_namespace(&m.ns);
        return;
    }
    let (server, conn) = (server.clone(), conn.clone());
    tokio::spawn(async move { leave_hooks(&server, &conn, m, reason).await });
}

/// Every disconnect hook of a connection that ended: each namespace's, then the server's.
async fn disconnect_hooks(
    server: Server,
    conn: Arc<ConnShared>,
    memberships: Vec<Membership>,
    reason: DisconnectReason,
) {
    for m in memberships {
        leave_hooks(&server, &conn, m, reason.clone()).await;
    }
    if let Some(hook) = server.inner.on_disconnect.clone() {
        let socket = Socket::new(server.clone(), conn.clone(), Arc::from("/"));
        run_hook(&server, conn.id, "disconnect", || hook(socket, reason)).await;
    }
}

/// With recovery on: keep the session for its TTL, or end it.
fn detach_session(
    server: &Server,
    conn: &Arc<ConnShared>,
    memberships: &[Membership],
    reason: &DisconnectReason,
) {
    if let Some(sessions) = &server.inner.sessions {
        // (After a takeover, 4003, the session is no longer this transport's: nothing happens.)
        let saved = reason
            .session_kept()
            .then(|| conn.session_state(memberships));
        match saved {
            // With the cluster's streams the session waits in the engine, for any node.
            Some(saved) if server.streams_mode() => {
                server.park_session(conn, &saved);
            }
            saved => sessions.detach(conn, saved),
        }
    }
}

/// Owns a connection's registration and slot. [`Cleanup::finish`] is the orderly end (hooks
/// awaited); if the task is cancelled or unwinds first, `Drop` still leaves every room and
/// namespace, fails pending acks, unregisters the connection and releases its slot, and runs
/// the disconnect hooks in a new task (unless the server is past its shutdown deadline).
pub(crate) struct Cleanup {
    server: Server,
    conn: Arc<ConnShared>,
    /// Released last, when the guard drops: `stats().connections` counts the connection until
    /// its disconnect hooks are done.
    _slot: Slot,
    /// Set once the close was recorded and the hooks were started.
    done: bool,
}

impl Cleanup {
    pub(crate) fn new(server: Server, conn: Arc<ConnShared>, slot: Slot) -> Self {
        server.register_connection(&conn);
        Cleanup {
            server,
            conn,
            _slot: slot,
            done: false,
        }
    }

    /// The orderly end: record why, leave everything, run the disconnect hooks.
    pub(crate) async fn finish(mut self, reason: DisconnectReason) {
        self.done = true;
        self.server.inner.counters.record_close(reason.close_code());
        tracing::debug!(%reason, "disconnected");
        let memberships = self.conn.mark_closed();
        self.server.unregister_connection(&self.conn);
        detach_session(&self.server, &self.conn, &memberships, &reason);
        disconnect_hooks(self.server.clone(), self.conn.clone(), memberships, reason).await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Cancelled (a killed shutdown, a dropped `serve_connection` future) or unwinding.
        let reason = DisconnectReason::TransportClosed;
        self.server.inner.counters.record_close(reason.close_code());
        let memberships = self.conn.mark_closed();
        self.server.unregister_connection(&self.conn);
        detach_session(&self.server, &self.conn, &memberships, &reason);
        let conn = self.conn.id;
        if std::thread::panicking() {
            tracing::error!(%conn, "connection task panicked; connection cleaned up");
        } else {
            tracing::debug!(%conn, "connection task cancelled; connection cleaned up");
        }
        let hooks = !memberships.is_empty() || self.server.inner.on_disconnect.is_some();
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(rt) if hooks && !self.server.is_killed() => {
                rt.spawn(disconnect_hooks(
                    self.server.clone(),
                    self.conn.clone(),
                    memberships,
                    reason,
                ));
            }
            _ => {
                for m in memberships {
                    self.server.release_namespace(&m.ns);
                }
            }
        }
    }
}
