//! Server→client acks awaiting an answer, per connection.

use std::collections::HashMap;

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::AckError;

/// The client's answer: the `data` of its `ack` (None when it had none), or the text and `data`
/// of an `error` it sent with the same `ackId`.
pub(crate) type AckData = Result<Option<Box<RawValue>>, crate::HandlerError>;

/// Pending acks of one connection. Ids are a per-connection counter, sent as decimal strings:
/// opaque to clients, and an id of another connection can never match (each table is separate).
#[derive(Default)]
pub(crate) struct AckTable {
    closed: bool,
    next: u64,
    pending: HashMap<u64, oneshot::Sender<AckData>>,
}

impl AckTable {
    pub(crate) fn register(
        &mut self,
        max: usize,
    ) -> Result<(u64, oneshot::Receiver<AckData>), AckError> {
        if self.closed {
            return Err(AckError::Closed);
        }
        if self.pending.len() >= max {
            return Err(AckError::TooManyPending);
        }
        self.next += 1;
        let (tx, rx) = oneshot::channel();
        self.pending.insert(self.next, tx);
        Ok((self.next, rx))
    }

    /// Resolve the ack with this wire id; false when unknown, late or a duplicate.
    pub(crate) fn resolve(&mut self, id: &str, data: AckData) -> bool {
        let Some(n) = parse_id(id) else { return false };
        match self.pending.remove(&n) {
            Some(tx) => tx.send(data).is_ok(),
            None => false,
        }
    }

    pub(crate) fn cancel(&mut self, id: u64) {
        self.pending.remove(&id);
        if self.pending.is_empty() {
            self.pending = HashMap::new();
        }
    }

    /// Fail every pending ack with `Closed` and refuse new ones.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.pending = HashMap::new();
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

/// Only canonical decimal ids (no sign, no leading zeros) can match.
fn parse_id(id: &str) -> Option<u64> {
    if id.is_empty() || id.len() > 20 || (id.len() > 1 && id.starts_with('0')) {
        return None;
    }
    if !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_resolve_and_close() {
        let mut t = AckTable::default();
        let (id, mut rx) = t.register(2).unwrap();
        assert_eq!(id, 1);
        assert!(!t.resolve("01", Ok(None)));
        assert!(!t.resolve("+1", Ok(None)));
        assert!(!t.resolve("2", Ok(None)));
        assert!(t.resolve("1", Ok(None)));
        assert!(!t.resolve("1", Ok(None)), "duplicate answers are ignored");
        assert!(rx.try_recv().unwrap().unwrap().is_none());
        let _a = t.register(2).unwrap();
        let _b = t.register(2).unwrap();
        assert!(matches!(t.register(2), Err(AckError::TooManyPending)));
        t.close();
        assert_eq!(t.len(), 0);
        assert!(matches!(t.register(2), Err(AckError::Closed)));
    }
}
