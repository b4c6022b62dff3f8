//! What the handles and the client's tasks share: options, callbacks, state, memberships and the
//! ack id counter.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{broadcast, watch};

use super::config::Config;
use super::handlers::Callbacks;
use super::memberships::Memberships;
use super::presence::Tracker;
use super::session::SessionState;
use super::{ClientError, ConnectionState, ErrorEvent, StateEvent};
use crate::sync::{lock, panic_message};

/// How many state events a slow [`Client::events`](super::Client::events) receiver may lag
/// behind before it misses some (it then gets `RecvError::Lagged`).
const STATE_EVENTS_CAPACITY: usize = 64;

pub(crate) struct Common {
    pub(crate) config: Config,
    pub(crate) callbacks: Callbacks,
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<StateEvent>,
    memberships: Mutex<Memberships>,
    session: Mutex<SessionState>,
    presence: Mutex<Tracker>,
    next_ack: AtomicU64,
}

impl Common {
    pub(crate) fn new(config: Config, callbacks: Callbacks) -> Self {
        Common {
            config,
            callbacks,
            state: watch::Sender::new(ConnectionState::Connecting),
            events: broadcast::Sender::new(STATE_EVENTS_CAPACITY),
            memberships: Mutex::new(Memberships::default()),
            session: Mutex::new(SessionState::default()),
            presence: Mutex::new(Tracker::default()),
            next_ack: AtomicU64::new(0),
        }
    }

    /// A fresh ack id: a per-client decimal counter, never reused (retries get new ones).
    pub(crate) fn next_ack_id(&self) -> String {
        (self.next_ack.fetch_add(1, Ordering::Relaxed) + 1).to_string()
    }

    pub(crate) fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    pub(crate) fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    pub(crate) fn set_state(&self, state: ConnectionState) {
        self.state.send_replace(state);
    }

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }

    /// Reports a state event to the callback, then to the subscribers.
    pub(crate) fn report(&self, event: StateEvent) {
        tracing::debug!(?event, "client state");
        if let Some(callback) = &self.callbacks.on_state {
            guard("on_state", || callback(&event));
        }
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Reports an error nobody awaits to the `on_error` callback (or the log without one).
    pub(crate) fn report_error(&self, error: ErrorEvent) {
        match &self.callbacks.on_error {
            Some(callback) => guard("on_error", || callback(error)),
            None => tracing::warn!(%error, "unhandled client error"),
        }
    }

    pub(crate) fn with_memberships<R>(&self, f: impl FnOnce(&mut Memberships) -> R) -> R {
        f(&mut lock(&self.memberships))
    }

    pub(crate) fn with_session<R>(&self, f: impl FnOnce(&mut SessionState) -> R) -> R {
        f(&mut lock(&self.session))
    }

    pub(crate) fn with_presence<R>(&self, f: impl FnOnce(&mut Tracker) -> R) -> R {
        f(&mut lock(&self.presence))
    }

    /// Refuses a message larger than the server's `maxMessageSize` (once a `hello` told it).
    pub(crate) fn check_size(&self, frame: &str) -> Result<(), ClientError> {
        match self.with_session(|s| s.max_message_size) {
            Some(limit) if frame.len() > limit => Err(ClientError::MessageTooBig {
                size: frame.len(),
                limit,
            }),
            _ => Ok(()),
        }
    }
}

/// Runs a user callback, containing (and logging) a panic so that it cannot kill a client task.
pub(crate) fn guard(what: &'static str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        let panic = panic_message(payload.as_ref());
        tracing::error!(callback = what, %panic, "a client callback panicked");
    }
}
