//! Requests written on the current connection and still waiting for their answer.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use super::ClientAckError;
use super::buffer::AckResult;
use super::memberships::Membership;

/// Below this many entries, abandoned waiters are not looked for.
const PRUNE_MIN: usize = 256;

/// Who waits for the answer with a given `ackId`.
pub(crate) enum PendingAck {
    /// A caller of `emit_with_ack`, `join`, `leave`...
    Request(oneshot::Sender<AckResult>),
    /// The connection task itself, re-joining a membership after connecting (`None`: the
    /// request that proves the server accepted the connection).
    Rejoin(Option<Membership>),
    /// The connection task, leaving again, after a resume, a membership whose leave the server
    /// may not have applied.
    Releave(Membership),
}

/// The waiters of one connection. All of them fail with
/// [`ClientAckError::Disconnected`] when it ends.
pub(crate) struct Pending {
    acks: HashMap<Box<str>, PendingAck>,
    pongs: VecDeque<oneshot::Sender<Result<(), ClientAckError>>>,
    prune_at: usize,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            acks: HashMap::new(),
            pongs: VecDeque::new(),
            prune_at: PRUNE_MIN,
        }
    }
}

impl Pending {
    pub(crate) fn insert(&mut self, id: Box<str>, ack: PendingAck) {
        if self.acks.len() >= self.prune_at {
            // Callers that timed out dropped their receivers: forget them.
            self.acks.retain(|_, w| match w {
                PendingAck::Request(tx) => !tx.is_closed(),
                PendingAck::Rejoin(_) | PendingAck::Releave(_) => true,
            });
            self.prune_at = PRUNE_MIN.max(self.acks.len() * 2);
        }
        self.acks.insert(id, ack);
    }

    pub(crate) fn take(&mut self, id: &str) -> Option<PendingAck> {
        self.acks.remove(id)
    }

    /// A ping was written; its pong resolves `tx` (pongs come back in order).
    pub(crate) fn push_ping(&mut self, tx: oneshot::Sender<Result<(), ClientAckError>>) {
        self.pongs.push_back(tx);
    }

    pub(crate) fn pong(&mut self) {
        if let Some(tx) = self.pongs.pop_front() {
            let _ = tx.send(Ok(()));
        }
    }

    /// The connection ended: every waiter fails with `Disconnected`.
    pub(crate) fn fail_all(&mut self) {
        for (_, ack) in self.acks.drain() {
            if let PendingAck::Request(tx) = ack {
                let _ = tx.send(Err(ClientAckError::Disconnected));
            }
        }
        for tx in self.pongs.drain(..) {
            let _ = tx.send(Err(ClientAckError::Disconnected));
        }
        self.acks.shrink_to(PRUNE_MIN);
        self.prune_at = PRUNE_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandoned_waiters_are_pruned_and_all_fail_on_disconnect() {
        let mut p = Pending::default();
        let mut kept = Vec::new();
        for i in 0..PRUNE_MIN {
            let (tx, rx) = oneshot::channel();
            p.insert(i.to_string().into(), PendingAck::Request(tx));
            if i % 2 == 0 {
                kept.push(rx);
            }
        }
        p.insert("rejoin".into(), PendingAck::Rejoin(None));
        assert_eq!(p.acks.len(), PRUNE_MIN / 2 + 1);
        let (tx, mut ping) = oneshot::channel();
        p.push_ping(tx);
        p.fail_all();
        for mut rx in kept {
            assert!(matches!(
                rx.try_recv(),
                Ok(Err(ClientAckError::Disconnected))
            ));
        }
        assert!(matches!(
            ping.try_recv(),
            Ok(Err(ClientAckError::Disconnected))
        ));
        assert!(p.take("rejoin").is_none());
    }
}
