//! The table of a namespace's event handlers, and the hash it is looked up with.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::namespace::HandlerEntry;

/// Event name → handler. Built once with the server and only read afterwards.
///
/// Looked up with a fast multiplicative hash instead of SipHash: its keys are the server's own
/// event names, fixed before any client connects, so a client cannot make it grow; a crafted
/// name can at worst collide with one of those few keys, which bounds the lookup. (SipHash was
/// 150 instructions of every request.)
pub(crate) type HandlerMap = HashMap<Box<str>, HandlerEntry, BuildHasherDefault<NameHasher>>;

/// A word-at-a-time multiply-rotate hash (the one rustc uses, FxHash) for short names.
#[derive(Default, Clone, Copy)]
pub(crate) struct NameHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl NameHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The length first: the last word is zero-padded ("a" and "a\0" differ by it).
        self.add(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn equal_names_hash_equal_and_close_names_apart() {
        let b = BuildHasherDefault::<NameHasher>::default();
        assert_eq!(b.hash_one("chat"), b.hash_one("chat"));
        let names = [
            "chat",
            "chats",
            "chat\0",
            "tahc",
            "a",
            "b",
            "",
            "a-long-event-name-1",
            "a-long-event-name-2",
        ];
        let mut hashes: Vec<u64> = names.iter().map(|n| b.hash_one(n)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), names.len());
    }
}
