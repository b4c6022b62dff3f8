//! Claiming and parking sessions: on this node, or — with the cluster's streams — in the
//! engine, so that a client resumes on any node (PROTOCOL.md §13).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Server;
use crate::SocketId;
use crate::conn::ConnShared;
use crate::session::history::{Fetched, FetchedStream};
use crate::session::resume::Restore;
use crate::session::store::{Claimed, Parked, Refusal, Saved, unix_ms};
use crate::session::token::{self, Secret};
use crate::stats::Counters;

/// A local claim: done, or to finish in the engine.
pub(crate) enum LocalClaim {
    Done(SocketId, Saved, Secret),
    /// Streams mode: the session is (being) stored in the engine.
    Engine(Option<tokio::sync::watch::Receiver<bool>>),
}

impl Server {
    /// Whether sessions and history live in the cluster's engine (recovery on, an engine with
    /// streams).
    pub(crate) fn streams_mode(&self) -> bool {
        self.inner
            .cluster
            .as_ref()
            .is_some_and(|n| n.streams_active())
    }

    /// Claim the session a resume token names on this node: a detached one's saved state, or a
    /// live one's, taken over from its transport (which is closed with 4003).
    pub(crate) fn claim_local(&self, token: &str) -> Result<LocalClaim, Refusal> {
        let sessions = self.inner.sessions.as_ref().ok_or(Refusal::Unknown)?;
        let (id, claimed, presented) = match sessions.claim(token) {
            Ok(c) => c,
            Err(Refusal::Unknown) if self.streams_mode() => return Ok(LocalClaim::Engine(None)),
            Err(e) => return Err(e),
        };
        let saved = match claimed {
            Claimed::Detached(saved) => saved,
            Claimed::Parking(rx) => return Ok(LocalClaim::Engine(Some(rx))),
            Claimed::Live(old) => {
                let saved = old.take_over();
                old.request_close(crate::conn::CloseRequest::now(
                    crate::CloseCode::SESSION_TAKEN,
                    "session resumed elsewhere",
                ));
                self.unregister_connection(&old);
                saved
            }
        };
        Ok(LocalClaim::Done(id, saved, presented))
    }

    /// Claim a session on this node (sync; without the cluster's streams).
    pub(crate) fn claim_session(&self, token: &str) -> Result<(SocketId, Saved, Secret), Refusal> {
        let r = match self.claim_local(token) {
            Ok(LocalClaim::Done(id, saved, presented)) => Ok((id, saved, presented)),
            Ok(LocalClaim::Engine(_)) => Err(Refusal::Unknown),
            Err(e) => Err(e),
        };
        self.count_claim(&r);
        r
    }

    fn count_claim<T>(&self, r: &Result<T, Refusal>) {
        let c = &self.inner.counters;
        Counters::inc(match r {
            Ok(_) => &c.sessions_resumed,
            Err(_) => &c.sessions_refused,
        });
    }

    /// Claim a session here or in the engine (streams mode), then read from the engine what
    /// each of its namespaces missed: the restore is ready to run.
    pub(crate) async fn claim_session_anywhere(
        &self,
        token: &str,
        offsets: std::collections::HashMap<String, crate::session::history::Position>,
    ) -> Result<(SocketId, Restore, Secret), Refusal> {
        let r = self.claim_in_engine(token).await;
        self.count_claim(&r);
        let (id, saved, presented) = r?;
        let mut restore = Restore::new(saved, offsets);
        self.fetch_missed(&mut restore).await;
        Ok((id, restore, presented))
    }

    async fn claim_in_engine(&self, token: &str) -> Result<(SocketId, Saved, Secret), Refusal> {
        let wait = match self.claim_local(token)? {
            LocalClaim::Done(id, saved, presented) => return Ok((id, saved, presented)),
            LocalClaim::Engine(wait) => wait,
        };
        let timeout = self.request_timeout();
        if let Some(mut rx) = wait {
            // Parked on this node a moment ago: wait until the engine has it.
            let _ = tokio::time::timeout(timeout, rx.wait_for(|stored| *stored)).await;
        }
        let (id, secret) = token::parse(token).ok_or(Refusal::InvalidToken)?;
        let Some(streams) = self.engine_streams() else {
            return Err(Refusal::Unknown);
        };
        let blob = match tokio::time::timeout(timeout, streams.take(&id.to_string())).await {
            Ok(Ok(Some(blob))) => blob,
            Ok(Ok(None)) => return Err(Refusal::Unknown),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read a parked session from the engine");
                return Err(Refusal::Unknown);
            }
            Err(_) => return Err(Refusal::Unknown),
        };
        let Ok(parked) = serde_json::from_slice::<Parked>(&blob) else {
            return Err(Refusal::Unknown);
        };
        let left = parked.expires_ms.saturating_sub(unix_ms());
        if left == 0 {
            return Err(Refusal::Unknown);
        }
        if !parked.accepts(&secret) {
            // A wrong secret must not end the session: put it back for what is left of its TTL.
            let fut = streams.put(&id.to_string(), blob, Duration::from_millis(left));
            tokio::spawn(async move {
                let _ = fut.await;
            });
            return Err(Refusal::InvalidToken);
        }
        Ok((id, parked.saved(), secret))
    }

    fn engine_streams(&self) -> Option<&dyn crate::cluster::Streams> {
        self.inner.cluster.as_ref()?.engine.streams()
    }

    fn request_timeout(&self) -> Duration {
        self.inner
            .cluster
            .as_ref()
            .map_or(Duration::from_secs(5), |n| n.config.request_timeout)
    }

    /// Read, for each namespace with a position, what the engine's stream holds after it.
    async fn fetch_missed(&self, restore: &mut Restore) {
        let Some(streams) = self.engine_streams() else {
            return;
        };
        let max = self
            .inner
            .config
            .recovery
            .map_or(0, |r| r.max_replay)
            .saturating_add(1);
        for (ns, from) in restore.positions() {
            let read =
                tokio::time::timeout(self.request_timeout(), streams.read(&ns, from.offset, max));
            match read.await {
                Ok(Ok(r)) => {
                    let entries = r
                        .entries
                        .into_iter()
                        .filter_map(|(pos, payload)| {
                            decode_entry(&ns, pos.offset, pos.prev, &payload)
                        })
                        .collect();
                    restore.set_fetched(
                        ns,
                        FetchedStream {
                            epoch: r.epoch,
                            entries,
                        },
                    );
                }
                Ok(Err(e)) => {
                    tracing::warn!(namespace = %ns, error = %e, "could not read a stream")
                }
                Err(_) => tracing::warn!(namespace = %ns, "reading a stream timed out"),
            }
        }
    }

    /// Streams mode: a transport ended and its session is kept: store it in the engine.
    pub(crate) fn park_session(&self, conn: &Arc<ConnShared>, saved: &Saved) -> bool {
        let (Some(sessions), Some(streams)) = (&self.inner.sessions, self.engine_streams()) else {
            return false;
        };
        let Some((parked, done)) = sessions.park(conn, saved) else {
            return true;
        };
        let Ok(blob) = serde_json::to_vec(&parked) else {
            sessions.parked(conn.id);
            return true;
        };
        let fut = streams.put(&conn.id.to_string(), Bytes::from(blob), sessions.ttl());
        let server = self.clone();
        let id = conn.id;
        let store = async move {
            match fut.await {
                Ok(()) => Counters::inc(&server.inner.counters.sessions_parked),
                Err(e) => {
                    tracing::warn!(%id, error = %e, "could not park a session in the engine; it cannot be resumed");
                }
            }
            if let Some(s) = &server.inner.sessions {
                s.parked(id);
            }
            let _ = done.send(true);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(store);
            }
            Err(_) => sessions.parked(conn.id),
        }
        true
    }
}

/// A stream entry's payload (the inter-node broadcast format) as a replayable entry.
fn decode_entry(ns: &str, offset: u64, prev: u64, payload: &Bytes) -> Option<Fetched> {
    let (h, body) = crate::cluster::wire::decode(payload).ok()?;
    let filter = h.filter?;
    if filter.ns != ns {
        return None;
    }
    Some(Fetched {
        offset,
        prev,
        frame: tokio_tungstenite::tungstenite::Utf8Bytes::try_from(body).ok()?,
        filter: crate::cluster::local::entry_filter(&filter),
    })
}
