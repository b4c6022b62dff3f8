//! The sessions of one server: live ones (a transport is attached) and detached ones (their
//! transport ended without the client meaning it), kept for the session TTL.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::token::{self, Secret};
use crate::SocketId;
use crate::conn::ConnShared;
use crate::sync::lock;

/// What a session keeps while detached: its namespaces and rooms.
#[derive(Debug, Default, Clone)]
pub(crate) struct Saved {
    pub(crate) namespaces: Vec<(Arc<str>, Vec<Arc<str>>)>,
}

impl Saved {
    pub(crate) fn of(memberships: &[crate::conn::Membership]) -> Saved {
        Saved {
            namespaces: memberships
                .iter()
                .map(|m| (m.ns.name.clone(), m.rooms.clone()))
                .collect(),
        }
    }
}

/// Why a resume was refused (the connection gets a fresh session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Malformed, or the secret does not match.
    InvalidToken,
    /// Expired, already used, or never existed.
    Unknown,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::InvalidToken => "invalid token",
            Refusal::Unknown => "unknown session",
        }
    }
}

/// A session handed to a resuming connection.
pub(crate) enum Claimed {
    /// Its transport had ended.
    Detached(Saved),
    /// Its transport is still open (half-open TCP, or a second tab with a copied token): the
    /// caller takes the session over from it.
    Live(Arc<ConnShared>),
    /// It is being stored in the cluster's engine: wait for that, then take it from there.
    Parking(watch::Receiver<bool>),
}

/// A session parked in the cluster's engine (streams mode).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Parked {
    pub(crate) secret: String,
    #[serde(default)]
    pub(crate) prev: Option<String>,
    /// When it expires, in milliseconds since the Unix epoch.
    pub(crate) expires_ms: u64,
    pub(crate) namespaces: Vec<(String, Vec<String>)>,
}

impl Parked {
    pub(crate) fn saved(&self) -> Saved {
        Saved {
            namespaces: self
                .namespaces
                .iter()
                .map(|(n, rooms)| {
                    (
                        Arc::from(n.as_str()),
                        rooms.iter().map(|r| Arc::from(r.as_str())).collect(),
                    )
                })
                .collect(),
        }
    }

    /// Whether `secret` is the session's current or previous secret (both compared).
    pub(crate) fn accepts(&self, secret: &Secret) -> bool {
        let cur = Secret::decode(&self.secret).is_some_and(|s| s.matches(secret));
        let prev = self
            .prev
            .as_deref()
            .and_then(Secret::decode)
            .is_some_and(|s| s.matches(secret));
        cur | prev
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

enum State {
    Live(Weak<ConnShared>),
    Detached {
        saved: Saved,
        expires: Instant,
    },
    /// Being stored in the cluster's engine (streams mode); `true` once stored (the entry is
    /// then removed: the engine has the session).
    Parking(watch::Receiver<bool>),
}

struct Entry {
    secret: Secret,
    /// The token a resumed transport was opened with, still good until the client shows it got
    /// the new one (its first frame on the new transport): a client that lost the connection
    /// before it read the new `hello` can still resume.
    prev: Option<Secret>,
    state: State,
}

#[derive(Default)]
struct Store {
    map: HashMap<SocketId, Entry>,
    /// Detached sessions by expiry (the TTL is fixed, so this is in order). Entries whose
    /// session was resumed (or detached again later) are stale and skipped.
    expiry: VecDeque<(Instant, SocketId)>,
    /// Sessions in the `Detached` state.
    detached: usize,
}

impl Store {
    /// End detached sessions that expired by `now`, and the oldest beyond `max`.
    fn sweep(&mut self, now: Instant, max: usize) {
        while let Some(&(at, id)) = self.expiry.front() {
            if at > now && self.detached <= max {
                break;
            }
            self.expiry.pop_front();
            if let Some(Entry {
                state: State::Detached { expires, .. },
                ..
            }) = self.map.get(&id)
            {
                if *expires == at {
                    self.map.remove(&id);
                    self.detached -= 1;
                }
            }
        }
    }

    /// Remove a session, keeping the count right.
    fn remove(&mut self, id: SocketId) -> Option<Entry> {
        let e = self.map.remove(&id)?;
        if matches!(e.state, State::Detached { .. }) {
            self.detached -= 1;
        }
        Some(e)
    }
}

/// Counts, for [`Stats`](crate::Stats).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SessionCounts {
    pub(crate) detached: usize,
}

pub(crate) struct Sessions {
    ttl: Duration,
    max_detached: usize,
    store: Mutex<Store>,
}

impl Sessions {
    pub(crate) fn new(recovery: &crate::Recovery) -> Sessions {
        Sessions {
            ttl: recovery.session_ttl,
            max_detached: recovery.max_detached,
            store: Mutex::new(Store::default()),
        }
    }

    /// Attach a session to a new transport (a fresh one, or one just claimed): a new secret,
    /// so every token is good for one resume. Returns the token, or `None` if the operating
    /// system gave no randomness (the connection then works, without resume).
    pub(crate) fn open(&self, conn: &Arc<ConnShared>, prev: Option<Secret>) -> Option<String> {
        let secret = Secret::random()?;
        let mut store = lock(&self.store);
        store.sweep(Instant::now(), self.max_detached);
        store.remove(conn.id);
        store.map.insert(
            conn.id,
            Entry {
                secret,
                prev,
                state: State::Live(Arc::downgrade(conn)),
            },
        );
        Some(secret.token(conn.id))
    }

    /// Take the session a token names, if the token is right: it is removed (a token works
    /// once; the new transport gets a new one from [`open`](Self::open)). A wrong secret for an
    /// existing session leaves that session alone.
    ///
    /// Returns the session's id, what it had, and the secret presented (the new transport's
    /// `prev`).
    pub(crate) fn claim(&self, token: &str) -> Result<(SocketId, Claimed, Secret), Refusal> {
        let (id, secret) = token::parse(token).ok_or(Refusal::InvalidToken)?;
        let now = Instant::now();
        let mut store = lock(&self.store);
        store.sweep(now, self.max_detached);
        let entry = store.map.get(&id).ok_or(Refusal::Unknown)?;
        // Both compared, always: the time taken says nothing about which one matched.
        let current = entry.secret.matches(&secret);
        let previous = entry.prev.as_ref().is_some_and(|p| p.matches(&secret));
        if !(current | previous) {
            return Err(Refusal::InvalidToken);
        }
        let entry = store.remove(id).ok_or(Refusal::Unknown)?;
        match entry.state {
            State::Detached { saved, expires } if expires > now => {
                Ok((id, Claimed::Detached(saved), secret))
            }
            State::Detached { .. } => Err(Refusal::Unknown),
            State::Parking(rx) => Ok((id, Claimed::Parking(rx), secret)),
            State::Live(weak) => match weak.upgrade() {
                Some(conn) if !conn.is_closed() => Ok((id, Claimed::Live(conn), secret)),
                _ => Err(Refusal::Unknown),
            },
        }
    }

    /// The client of this transport sent its first frame: it has the new token, the one it
    /// resumed with is no longer good.
    pub(crate) fn confirm(&self, conn: &Arc<ConnShared>) {
        let mut store = lock(&self.store);
        if let Some(e) = store.map.get_mut(&conn.id) {
            if matches!(&e.state, State::Live(w) if std::ptr::eq(w.as_ptr(), Arc::as_ptr(conn))) {
                e.prev = None;
            }
        }
    }

    /// Streams mode: a transport ended and its session goes to the engine. Returns what to
    /// store and the sender that marks it stored; `None` if the session is not this
    /// transport's.
    pub(crate) fn park(
        &self,
        conn: &Arc<ConnShared>,
        saved: &Saved,
    ) -> Option<(Parked, watch::Sender<bool>)> {
        let mut store = lock(&self.store);
        let e = store.map.get_mut(&conn.id)?;
        if !matches!(&e.state, State::Live(w) if std::ptr::eq(w.as_ptr(), Arc::as_ptr(conn))) {
            return None;
        }
        let (tx, rx) = watch::channel(false);
        e.state = State::Parking(rx);
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let parked = Parked {
            secret: e.secret.encode(),
            prev: e.prev.map(|p| p.encode()),
            expires_ms: unix_ms().saturating_add(ttl_ms),
            namespaces: saved
                .namespaces
                .iter()
                .map(|(n, rooms)| (n.to_string(), rooms.iter().map(|r| r.to_string()).collect()))
                .collect(),
        };
        Some((parked, tx))
    }

    /// Streams mode: the parked session is in the engine (or could not be stored): forget it
    /// here.
    pub(crate) fn parked(&self, id: SocketId) {
        let mut store = lock(&self.store);
        if matches!(
            store.map.get(&id),
            Some(Entry {
                state: State::Parking(_),
                ..
            })
        ) {
            store.map.remove(&id);
        }
    }

    /// The session TTL.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A transport ended: keep its session for the TTL with `saved`, or end it (`None`).
    /// Nothing happens if the session is no longer this transport's (it was taken over).
    pub(crate) fn detach(&self, conn: &Arc<ConnShared>, saved: Option<Saved>) {
        let now = Instant::now();
        let mut store = lock(&self.store);
        store.sweep(now, self.max_detached);
        let ours = matches!(
            store.map.get(&conn.id),
            Some(Entry { state: State::Live(w), .. }) if std::ptr::eq(w.as_ptr(), Arc::as_ptr(conn))
        );
        if !ours {
            return;
        }
        match saved {
            Some(saved) => {
                let expires = now + self.ttl;
                if let Some(e) = store.map.get_mut(&conn.id) {
                    e.state = State::Detached { saved, expires };
                }
                store.detached += 1;
                store.expiry.push_back((expires, conn.id));
                store.sweep(now, self.max_detached);
            }
            None => {
                store.remove(conn.id);
            }
        }
    }

    pub(crate) fn counts(&self) -> SessionCounts {
        let mut store = lock(&self.store);
        store.sweep(Instant::now(), self.max_detached);
        SessionCounts {
            detached: store.detached,
        }
    }
}
