//! The outbound queue, which is also the offline buffer.
//!
//! Every message a handle sends (emits, joins, leaves, pings) goes through one bounded queue
//! drained by the connection task, so messages keep their order across reconnections. While the
//! client is connected, a full queue makes the sender wait (backpressure). While it is not, the
//! queue is not drained: messages wait in it (up to its capacity, the offline buffer size) and are
//! written after the next connection is ready, and a message that does not fit is refused with
//! [`ClientError::BufferFull`]. Nothing is dropped silently.

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{ClientAckError, ClientError, ConnectionState};

/// The answer to a request: the `data` of its `ack`, or why there is none.
pub(crate) type AckResult = Result<Option<Box<RawValue>>, ClientAckError>;

/// Who waits for the answer to a queued message.
pub(crate) enum Waiter {
    /// An `ack` (or `error`) with this `ackId`.
    Ack {
        id: Box<str>,
        tx: oneshot::Sender<AckResult>,
    },
    /// A `pong`.
    Pong(oneshot::Sender<Result<(), ClientAckError>>),
}

impl Waiter {
    /// Whether the caller stopped waiting (timed out or was cancelled).
    pub(crate) fn is_abandoned(&self) -> bool {
        match self {
            Waiter::Ack { tx, .. } => tx.is_closed(),
            Waiter::Pong(tx) => tx.is_closed(),
        }
    }
}

/// One queued message.
pub(crate) struct Outbound {
    pub(crate) frame: Utf8Bytes,
    pub(crate) waiter: Option<Waiter>,
}

/// The sending side of the queue, aware of the connection state.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outbound>,
    state: watch::Receiver<ConnectionState>,
    /// The offline buffer size (the queue holds at least one message even when it is 0).
    offline_capacity: usize,
}

impl Outbox {
    /// A queue for `offline_capacity` messages, and its receiving end.
    pub(crate) fn new(
        offline_capacity: usize,
        state: watch::Receiver<ConnectionState>,
    ) -> (Self, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(offline_capacity.max(1));
        let outbox = Outbox {
            tx,
            state,
            offline_capacity,
        };
        (outbox, rx)
    }

    /// Queues a message: waits for room while connected; refuses with `BufferFull` when
    /// disconnected and full, and with `Closed` once the client is closed.
    ///
    /// Cancel safety: if the future is dropped, the message was not queued.
    pub(crate) async fn push(&self, item: Outbound) -> Result<(), ClientError> {
        let mut state = self.state.clone();
        loop {
            let current = *state.borrow_and_update();
            match current {
                ConnectionState::Closed => return Err(ClientError::Closed),
                ConnectionState::Connected => {}
                _ if self.offline_capacity == 0 => return Err(ClientError::BufferFull),
                _ => {
                    return self.tx.try_send(item).map_err(|e| match e {
                        mpsc::error::TrySendError::Full(_) => ClientError::BufferFull,
                        mpsc::error::TrySendError::Closed(_) => ClientError::Closed,
                    });
                }
            }
            tokio::select! {
                permit = self.tx.reserve() => {
                    let permit = permit.map_err(|_| ClientError::Closed)?;
                    permit.send(item);
                    return Ok(());
                }
                changed = state.changed() => {
                    if changed.is_err() {
                        return Err(ClientError::Closed);
                    }
                }
            }
        }
    }
}
