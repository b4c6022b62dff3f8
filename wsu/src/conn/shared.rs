//! The part of a connection that other tasks touch: its outbound queue, memberships and pending
//! acks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::request::Parts;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::acks::{AckData, AckTable};
use super::outbox::{Outbox, Refused};
use crate::config::{Config, SlowConsumerPolicy};
use crate::presence::PresenceId;
use crate::registry::Namespace;
use crate::session::resume::Restore;
use crate::session::store::Saved;
use crate::stats::Counters;
use crate::sync::lock;
use crate::{AckError, CloseCode, SendError, SocketId};

/// A request to close the connection, handled by its task.
#[derive(Debug, Clone)]
pub(crate) struct CloseRequest {
    pub(crate) code: CloseCode,
    pub(crate) reason: String,
    /// Send what is queued before the close frame, until this instant (graceful shutdown).
    pub(crate) drain_until: Option<Instant>,
}

impl CloseRequest {
    /// Close now, without draining the queue first.
    pub(crate) fn now(code: CloseCode, reason: impl Into<String>) -> Self {
        CloseRequest {
            code,
            reason: reason.into(),
            drain_until: None,
        }
    }
}

/// The connection's membership of one namespace.
pub(crate) struct Membership {
    pub(crate) ns: Arc<Namespace>,
    pub(crate) rooms: Vec<Arc<str>>,
}

#[derive(Default)]
struct ConnState {
    closed: bool,
    memberships: Vec<Membership>,
    /// Memberships taken over by a resuming transport ([`ConnShared::take_over`]), handed to
    /// this connection's own cleanup for its disconnect hooks.
    taken: Vec<Membership>,
}

/// Why a join did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinError {
    Closed,
    TooManyNamespaces,
    TooManyRooms,
    /// The (dynamic) namespace disappeared concurrently; look it up again.
    Removed,
}

pub(crate) struct ConnShared {
    pub(crate) id: SocketId,
    /// The one outbound queue (emits, broadcasts, answers, pings), read by the connection task.
    pub(crate) outbox: Outbox,
    closed: AtomicBool,
    state: Mutex<ConnState>,
    acks: Mutex<AckTable>,
    close_req: Mutex<Option<CloseRequest>>,
    pub(crate) close_notify: Notify,
    pub(crate) request: Parts,
    pub(crate) remote_addr: Option<SocketAddr>,
    /// This transport resumed an earlier session.
    resumed: AtomicBool,
    /// What a resumed session still has to restore, namespace by namespace.
    restore: Mutex<Option<Box<Restore>>>,
    /// The presence identity (`None`: the connection id as key, `null` metadata).
    presence: Mutex<Option<Arc<PresenceId>>>,
}

impl ConnShared {
    pub(crate) fn new(
        id: SocketId,
        config: &Config,
        request: Parts,
        remote_addr: Option<SocketAddr>,
    ) -> Arc<Self> {
        let conn = ConnShared {
            id,
            outbox: Outbox::new(config.max_queued_messages, config.max_queued_bytes),
            closed: AtomicBool::new(false),
            state: Mutex::new(ConnState::default()),
            acks: Mutex::new(AckTable::default()),
            close_req: Mutex::new(None),
            close_notify: Notify::new(),
            request,
            remote_addr,
            resumed: AtomicBool::new(false),
            restore: Mutex::new(None),
            presence: Mutex::new(None),
        };
        Arc::new(conn)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queue an encoded frame for this connection (an emit or a broadcast), applying the
    /// slow-consumer policy when its queue is full: the frame is dropped (counted in
    /// `messages_dropped`) and, under [`SlowConsumerPolicy::Disconnect`], the connection is asked
    /// to close with 4001.
    pub(crate) fn send(
        &self,
        frame: Utf8Bytes,
        config: &Config,
        counters: &Counters,
    ) -> Result<(), SendError> {
        self.send_with(
            frame,
            config.max_queued_bytes,
            config.slow_consumer,
            counters,
        )
    }

    /// [`send`](Self::send) with the two settings it uses given explicitly.
    pub(crate) fn send_with(
        &self,
        frame: Utf8Bytes,
        max_queued_bytes: usize,
        slow_consumer: SlowConsumerPolicy,
        counters: &Counters,
    ) -> Result<(), SendError> {
        if frame.len() > max_queued_bytes {
            return Err(SendError::TooLarge);
        }
        match self.outbox.offer(Message::Text(frame)) {
            Ok(()) => Ok(()),
            Err(Refused::Closed) => Err(SendError::Closed),
            Err(Refused::Full) => {
                Counters::inc(&counters.messages_dropped);
                if slow_consumer == SlowConsumerPolicy::Disconnect {
                    self.request_close(CloseRequest {
                        code: CloseCode::SLOW_CONSUMER,
                        reason: "outbound queue full".to_owned(),
                        drain_until: None,
                    });
                }
                Err(SendError::QueueFull)
            }
        }
    }

    /// Queue one of the connection's own answers (ack, error, pong) behind everything queued
    /// before it. Never refused while the connection is open (see [`Outbox::push`]).
    pub(crate) fn send_own(&self, frame: Utf8Bytes) {
        self.outbox.push(Message::Text(frame));
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.outbox.bytes()
    }

    /// Ask the connection task to close. The first request wins, except that a request without
    /// draining overrides a draining one (a forced shutdown after the drain deadline).
    pub(crate) fn request_close(&self, req: CloseRequest) {
        {
            let mut slot = lock(&self.close_req);
            match &*slot {
                Some(existing) if existing.drain_until.is_none() || req.drain_until.is_some() => {
                    return;
                }
                _ => *slot = Some(req),
            }
        }
        self.close_notify.notify_one();
    }

    /// Whether a close request without draining is pending.
    pub(crate) fn close_request_is_forced(&self) -> bool {
        lock(&self.close_req)
            .as_ref()
            .is_some_and(|r| r.drain_until.is_none())
    }

    pub(crate) fn take_close_request(&self) -> Option<CloseRequest> {
        lock(&self.close_req).take()
    }

    // ---- memberships -------------------------------------------------------------------------

    /// Join a namespace. Returns whether the membership is new.
    pub(crate) fn join_namespace(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        config: &Config,
    ) -> Result<bool, JoinError> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(JoinError::Closed);
        }
        if st.memberships.iter().any(|m| Arc::ptr_eq(&m.ns, ns)) {
            return Ok(false);
        }
        if st.memberships.len() >= config.max_namespaces_per_connection {
            return Err(JoinError::TooManyNamespaces);
        }
        ns.add(self).map_err(|_| JoinError::Removed)?;
        st.memberships.push(Membership {
            ns: ns.clone(),
            rooms: Vec::new(),
        });
        Ok(true)
    }

    /// Join a room of a namespace, joining the namespace too. Returns (namespace joined now,
    /// room joined now).
    pub(crate) fn join_room(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        room: &str,
        config: &Config,
    ) -> Result<(bool, bool), JoinError> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(JoinError::Closed);
        }
        let total_rooms: usize = st.memberships.iter().map(|m| m.rooms.len()).sum();
        let idx = st.memberships.iter().position(|m| Arc::ptr_eq(&m.ns, ns));
        if let Some(i) = idx {
            if st.memberships[i].rooms.iter().any(|r| &**r == room) {
                return Ok((false, false));
            }
        } else if st.memberships.len() >= config.max_namespaces_per_connection {
            return Err(JoinError::TooManyNamespaces);
        }
        if total_rooms >= config.max_rooms_per_connection {
            return Err(JoinError::TooManyRooms);
        }
        let room: Arc<str> = Arc::from(room);
        ns.join_room(self, &room).map_err(|_| JoinError::Removed)?;
        match idx {
            Some(i) => {
                st.memberships[i].rooms.push(room);
                Ok((false, true))
            }
            None => {
                st.memberships.push(Membership {
                    ns: ns.clone(),
                    rooms: vec![room],
                });
                Ok((true, true))
            }
        }
    }

    /// Leave a room. Returns whether the connection was in it.
    pub(crate) fn leave_room(&self, ns_name: &str, room: &str) -> bool {
        let mut st = lock(&self.state);
        let Some(m) = st.memberships.iter_mut().find(|m| &*m.ns.name == ns_name) else {
            return false;
        };
        let Some(pos) = m.rooms.iter().position(|r| &**r == room) else {
            return false;
        };
        m.rooms.swap_remove(pos);
        m.ns.leave_room(self, room)
    }

    /// Leave a namespace and all its rooms. Returns the membership that ended.
    pub(crate) fn leave_namespace(&self, ns_name: &str) -> Option<Membership> {
        let mut st = lock(&self.state);
        let pos = st.memberships.iter().position(|m| &*m.ns.name == ns_name)?;
        let m = st.memberships.swap_remove(pos);
        m.ns.remove(self, &m.rooms);
        Some(m)
    }

    /// The namespace of this name, if the connection is a member.
    pub(crate) fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        lock(&self.state)
            .memberships
            .iter()
            .find(|m| &*m.ns.name == name)
            .map(|m| m.ns.clone())
    }

    /// Names of the joined namespaces.
    pub(crate) fn namespace_names(&self) -> Vec<String> {
        lock(&self.state)
            .memberships
            .iter()
            .map(|m| m.ns.name.to_string())
            .collect()
    }

    /// Rooms joined in a namespace.
    pub(crate) fn rooms(&self, ns_name: &str) -> Vec<String> {
        lock(&self.state)
            .memberships
            .iter()
            .find(|m| &*m.ns.name == ns_name)
            .map(|m| m.rooms.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default()
    }

    /// Mark the connection closed: no more joins, sends or acks. Leaves every namespace and room
    /// and fails pending acks. Returns the memberships that ended (empty if already closed;
    /// after a [`take_over`](Self::take_over), the memberships it took, once).
    pub(crate) fn mark_closed(&self) -> Vec<Membership> {
        self.closed.store(true, Ordering::Release);
        self.outbox.close();
        lock(&self.acks).close();
        let memberships = {
            let mut st = lock(&self.state);
            if st.closed {
                return std::mem::take(&mut st.taken);
            }
            st.closed = true;
            std::mem::take(&mut st.memberships)
        };
        for m in &memberships {
            m.ns.remove(self, &m.rooms);
        }
        memberships
    }

    /// A resuming transport takes this connection's session: this one is closed at once (as
    /// [`mark_closed`](Self::mark_closed)) and what it was in is returned for the new one. Its
    /// own cleanup still gets these memberships, for its disconnect hooks.
    pub(crate) fn take_over(&self) -> Saved {
        self.closed.store(true, Ordering::Release);
        self.outbox.close();
        lock(&self.acks).close();
        let mut st = lock(&self.state);
        if st.closed {
            return Saved::default();
        }
        st.closed = true;
        let memberships = std::mem::take(&mut st.memberships);
        for m in &memberships {
            m.ns.remove(self, &m.rooms);
        }
        let saved = self.session_state(&memberships);
        st.taken = memberships;
        saved
    }

    // ---- presence ----------------------------------------------------------------------------

    /// The presence identity (`None`: the default one).
    pub(crate) fn presence_id(&self) -> Option<Arc<PresenceId>> {
        lock(&self.presence).clone()
    }

    /// Set the presence identity; every room this connection is in hears the change.
    pub(crate) fn set_presence_id(&self, id: PresenceId) {
        let new = Arc::new(id);
        let old = lock(&self.presence).replace(new.clone());
        let rooms: Vec<(Arc<Namespace>, Vec<Arc<str>>)> = lock(&self.state)
            .memberships
            .iter()
            .map(|m| (m.ns.clone(), m.rooms.clone()))
            .collect();
        for (ns, rooms) in rooms {
            for room in rooms {
                ns.presence_changed(self.id, &room, old.as_deref(), &new);
            }
        }
    }

    // ---- resume ------------------------------------------------------------------------------

    /// This transport resumes an earlier session; `restore` is what it still has to restore.
    pub(crate) fn set_restore(&self, restore: Restore) {
        self.resumed.store(true, Ordering::Release);
        *lock(&self.restore) = Some(Box::new(restore));
    }

    /// Whether this transport resumed an earlier session.
    pub(crate) fn is_resumed(&self) -> bool {
        self.resumed.load(Ordering::Acquire)
    }

    /// Take what is to be restored in namespace `ns` (its rooms, the client's position).
    pub(crate) fn take_restore(&self, ns: &str) -> Option<crate::session::resume::Taken> {
        if !self.is_resumed() {
            return None;
        }
        lock(&self.restore).as_mut()?.take(ns)
    }

    /// The namespaces still to be restored.
    pub(crate) fn pending_restore(&self) -> Vec<Arc<str>> {
        if !self.is_resumed() {
            return Vec::new();
        }
        lock(&self.restore)
            .as_ref()
            .map(|r| r.pending())
            .unwrap_or_default()
    }

    /// What the session keeps if this transport ends now, given the memberships that ended:
    /// those, plus what a resume had not restored yet.
    pub(crate) fn session_state(&self, memberships: &[Membership]) -> Saved {
        let mut saved = Saved::of(memberships);
        if self.is_resumed() {
            if let Some(r) = lock(&self.restore).as_ref() {
                saved.namespaces.extend(r.unrestored().iter().cloned());
            }
        }
        saved
    }

    /// Forget what was not restored (a namespace connect hook refused it, or the connect phase
    /// is over).
    pub(crate) fn drop_restore(&self, ns: Option<&str>) {
        let mut r = lock(&self.restore);
        match ns {
            Some(ns) => {
                if let Some(r) = r.as_mut() {
                    r.take(ns);
                }
            }
            None => *r = None,
        }
    }

    // ---- acks --------------------------------------------------------------------------------

    pub(crate) fn register_ack(
        &self,
        max: usize,
    ) -> Result<(u64, oneshot::Receiver<AckData>), AckError> {
        if self.is_closed() {
            return Err(AckError::Closed);
        }
        lock(&self.acks).register(max)
    }

    pub(crate) fn resolve_ack(&self, id: &str, data: AckData) -> bool {
        lock(&self.acks).resolve(id, data)
    }

    pub(crate) fn cancel_ack(&self, id: u64) {
        lock(&self.acks).cancel(id);
    }

    pub(crate) fn pending_acks(&self) -> usize {
        lock(&self.acks).len()
    }
}
