//! Opaque connection ids.

use std::fmt;
use std::hash::{BuildHasher, RandomState};

/// The opaque, unique id of one connection (the seed's `Client.ID`).
///
/// Ids are 16 lowercase hex characters. They are unique within one server process and reveal
/// nothing about the peer (no address, no counter in the clear): an internal counter goes through
/// a keyed bijection chosen at random when the process starts.
///
/// ```
/// # async fn demo(socket: wsu::Socket) {
/// let id: &wsu::SocketId = socket.id();
/// println!("connection {id}");
/// # }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u64);

impl SocketId {
    /// An id no connection has (the generator never produces it).
    pub(crate) const NONE: SocketId = SocketId(u64::MAX);

    /// The id as a number (the same bits as the hex form).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Parse the 16-hex-character form produced by `Display`.
    pub fn parse(s: &str) -> Option<SocketId> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(SocketId)
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketId({self})")
    }
}

/// Produces unique opaque ids: `n -> ((n ^ k1) * odd) ^ k2` is a bijection on `u64`.
#[derive(Debug)]
pub(crate) struct IdGenerator {
    next: std::sync::atomic::AtomicU64,
    k1: u64,
    k2: u64,
    mul: u64,
}

impl IdGenerator {
    pub(crate) fn new() -> Self {
        let s = RandomState::new();
        let k1 = s.hash_one(0x5753_5531u64);
        let k2 = s.hash_one(0x5753_5532u64);
        let mul = s.hash_one(0x5753_5533u64) | 1;
        IdGenerator {
            next: std::sync::atomic::AtomicU64::new(1),
            k1,
            k2,
            mul,
        }
    }

    pub(crate) fn next(&self) -> SocketId {
        loop {
            let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = SocketId(((n ^ self.k1).wrapping_mul(self.mul)) ^ self.k2);
            if id != SocketId::NONE {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let g = IdGenerator::new();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = g.next();
            assert!(seen.insert(id));
            let text = id.to_string();
            assert_eq!(text.len(), 16);
            assert_eq!(SocketId::parse(&text), Some(id));
        }
        assert_eq!(SocketId::parse("xyz"), None);
    }
}
