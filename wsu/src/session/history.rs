//! A namespace's history: the broadcasts it kept, each with its offset, for replay on resume.
//!
//! Offsets are assigned, frames recorded and delivered to live members under one lock (the
//! namespace's `history` mutex), and a membership that starts (a join, a resume) takes the same
//! lock: every broadcast is then either in what a joining connection is told it missed, or
//! delivered to it live, never both, never neither.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::SocketId;

/// A client's position in a namespace's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) epoch: String,
    pub(crate) offset: u64,
}

/// Whom a recorded broadcast went to, beyond "the whole namespace".
#[derive(Debug, Default)]
pub(crate) struct EntryFilter {
    pub(crate) rooms: Vec<Arc<str>>,
    pub(crate) except: Vec<SocketId>,
    pub(crate) except_rooms: Vec<Arc<str>>,
    pub(crate) only: Vec<SocketId>,
}

impl EntryFilter {
    fn is_all(&self) -> bool {
        self.rooms.is_empty()
            && self.except.is_empty()
            && self.except_rooms.is_empty()
            && self.only.is_empty()
    }

    /// Whether a connection with this id, in these rooms, was addressed.
    fn admits(&self, id: SocketId, rooms: &[Arc<str>]) -> bool {
        (self.rooms.is_empty() || self.rooms.iter().any(|r| rooms.contains(r)))
            && !self.except.contains(&id)
            && !self.except_rooms.iter().any(|r| rooms.contains(r))
            && (self.only.is_empty() || self.only.contains(&id))
    }
}

struct Entry {
    offset: u64,
    /// The offset of the entry before it in the stream (offsets need not be contiguous when an
    /// engine assigns them).
    prev: u64,
    at: Instant,
    frame: Utf8Bytes,
    /// `None`: the whole namespace.
    filter: Option<Box<EntryFilter>>,
}

/// An entry read back from an engine's stream, ready to replay or to deliver.
pub(crate) struct Fetched {
    pub(crate) offset: u64,
    pub(crate) prev: u64,
    /// The client frame, without `offset`/`epoch`.
    pub(crate) frame: Utf8Bytes,
    pub(crate) filter: EntryFilter,
}

/// What an engine's stream holds after a client's position (read before a resume).
pub(crate) struct FetchedStream {
    pub(crate) epoch: String,
    pub(crate) entries: Vec<Fetched>,
}
/// Why nothing (or not everything) could be recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unrecovered {
    /// Nothing to recover: a fresh session, or a namespace joined for the first time.
    New,
    /// Resumed, but the client gave no position for this namespace.
    NoOffset,
    /// The client's epoch is not the current one (the history was lost).
    EpochChanged,
    /// Some missed events are older than what the history keeps.
    Trimmed,
    /// More missed events than `max_replay`.
    TooMany,
}

impl Unrecovered {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Unrecovered::New => "new",
            Unrecovered::NoOffset => "no offset",
            Unrecovered::EpochChanged => "epoch changed",
            Unrecovered::Trimmed => "trimmed",
            Unrecovered::TooMany => "too many",
        }
    }
}

/// A resumed session starting its membership: its id, its rooms at detach, the client's
/// position.
pub(crate) type Resuming<'a> = (SocketId, &'a [Arc<str>], Option<&'a Position>);

/// What a membership that starts is told.
pub(crate) struct Replay {
    pub(crate) outcome: Result<(), Unrecovered>,
    pub(crate) events: Vec<Utf8Bytes>,
    pub(crate) epoch: Arc<str>,
    pub(crate) offset: u64,
}

pub(crate) struct History {
    epoch: Arc<str>,
    /// The last offset assigned (0: none yet).
    top: u64,
    entries: VecDeque<Entry>,
    /// Bytes of the frames in `entries`.
    bytes: usize,
    /// Entries lost on the way to this node (a mirror of an engine's stream).
    gaps: u64,
    /// A mirror that knows the engine's epoch and position (from an entry or a read).
    synced: bool,
    size: usize,
    max_bytes: usize,
    ttl: Duration,
}

/// A new random epoch: 16 hex characters.
fn new_epoch() -> Arc<str> {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        use std::hash::{BuildHasher, RandomState};
        b = RandomState::new().hash_one(Instant::now()).to_le_bytes();
    }
    Arc::from(format!("{:016x}", u64::from_le_bytes(b)))
}

impl History {
    pub(crate) fn new(size: usize, max_bytes: usize, ttl: Duration) -> History {
        History {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            bytes: 0,
            gaps: 0,
            synced: false,
            size,
            max_bytes,
            ttl,
        }
    }

    fn evict(&mut self, now: Instant) {
        while self.entries.front().is_some_and(|e| {
            self.entries.len() > self.size
                || self.bytes > self.max_bytes
                || now.saturating_duration_since(e.at) > self.ttl
        }) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.frame.len();
            }
        }
    }

    /// The frame with `,"offset":N,"epoch":"E"` before its closing brace.
    fn splice(frame: &str, offset: u64, epoch: &str) -> Utf8Bytes {
        let body = frame.strip_suffix('}').unwrap_or(frame);
        let mut out = String::with_capacity(frame.len() + 48);
        out.push_str(body);
        out.push_str(",\"offset\":");
        let _ = write!(out, "{offset}");
        out.push_str(",\"epoch\":\"");
        out.push_str(epoch);
        out.push_str("\"}");
        Utf8Bytes::from(out)
    }

    fn keep(
        &mut self,
        offset: u64,
        prev: u64,
        frame: &Utf8Bytes,
        filter: EntryFilter,
        now: Instant,
    ) {
        if self.size > 0 {
            self.bytes += frame.len();
            self.entries.push_back(Entry {
                offset,
                prev,
                at: now,
                frame: frame.clone(),
                filter: (!filter.is_all()).then(|| Box::new(filter)),
            });
        }
        self.evict(now);
    }

    /// Assign the next offset to an encoded event frame (`{…}` without `offset`/`epoch`), keep
    /// it, and return the frame to deliver: the same with `,"offset":N,"epoch":"E"` before its
    /// closing brace.
    pub(crate) fn record(&mut self, frame: &str, filter: EntryFilter, now: Instant) -> Utf8Bytes {
        let prev = self.top;
        self.top += 1;
        let out = Self::splice(frame, self.top, &self.epoch);
        self.keep(self.top, prev, &out, filter, now);
        out
    }

    /// Keep an entry whose position an engine assigned (a node's mirror of the cluster's
    /// stream) and return the frame to deliver, or `None` if it was already seen. A new epoch
    /// starts the mirror again; an entry whose `prev` is not the last one seen means entries
    /// were lost on the way: what came before is forgotten (a resume from there reads the
    /// engine).
    pub(crate) fn record_at(
        &mut self,
        frame: &str,
        filter: EntryFilter,
        offset: u64,
        prev: u64,
        epoch: &str,
        now: Instant,
    ) -> Option<Utf8Bytes> {
        self.synced = true;
        if *self.epoch != *epoch {
            self.epoch = Arc::from(epoch);
            self.entries.clear();
            self.bytes = 0;
            self.top = prev;
        }
        if offset <= self.top {
            return None;
        }
        if prev != self.top {
            self.gaps += 1;
            self.entries.clear();
            self.bytes = 0;
        }
        self.top = offset;
        let out = Self::splice(frame, offset, &self.epoch);
        self.keep(offset, prev, &out, filter, now);
        Some(out)
    }

    /// A mirror that has not seen an entry yet learns the engine's epoch and last offset (read
    /// when the node starts or the namespace is created), so that positions given to joining
    /// connections are the cluster's.
    pub(crate) fn sync(&mut self, epoch: &str, top: u64) {
        if !self.synced && self.entries.is_empty() {
            self.epoch = Arc::from(epoch);
            self.top = top;
        }
        self.synced = true;
    }

    /// Entries lost on the way to this mirror (see [`record_at`](Self::record_at)).
    pub(crate) fn gaps(&self) -> u64 {
        self.gaps
    }

    /// What a membership starting now is told: with `from` (a resume), the events the session
    /// (`id`, in `rooms`) missed after that position, or why they cannot be given; without,
    /// just the current position. `fetched`: what the engine's stream held after that position,
    /// read just before (in a cluster with streams); the mirror then first catches up with it
    /// (`deliver` hands each entry it had not seen yet to the current members).
    ///
    /// At most `max` events and `max_bytes` bytes of them are replayed; beyond, nothing is
    /// (`TooMany`).
    pub(crate) fn replay(
        &mut self,
        resume: Option<Resuming<'_>>,
        fetched: Option<FetchedStream>,
        deliver: &mut dyn FnMut(&Fetched, Utf8Bytes),
        max: usize,
        max_bytes: usize,
        now: Instant,
    ) -> Replay {
        self.evict(now);
        let Some((id, rooms, from)) = resume else {
            return Replay {
                outcome: Err(Unrecovered::New),
                events: Vec::new(),
                epoch: self.epoch.clone(),
                offset: self.top,
            };
        };
        let outcome = match fetched {
            None => self.missed(id, rooms, from, None, max, max_bytes),
            Some(f) => self.missed_with(id, rooms, from, f, deliver, max, max_bytes, now),
        };
        let mut replay = Replay {
            outcome: Err(Unrecovered::New),
            events: Vec::new(),
            epoch: self.epoch.clone(),
            offset: self.top,
        };
        replay.outcome = outcome.map(|e| replay.events = e);
        replay
    }

    #[allow(clippy::too_many_arguments)]
    fn missed_with(
        &mut self,
        id: SocketId,
        rooms: &[Arc<str>],
        from: Option<&Position>,
        f: FetchedStream,
        deliver: &mut dyn FnMut(&Fetched, Utf8Bytes),
        max: usize,
        max_bytes: usize,
        now: Instant,
    ) -> Result<Vec<Utf8Bytes>, Unrecovered> {
        // Catch up: entries the engine has that this node has not delivered yet go to the
        // current members now (when they arrive live later they are duplicates, dropped).
        for e in &f.entries {
            let frame = if *self.epoch == *f.epoch && e.offset <= self.top {
                continue;
            } else {
                self.record_at(
                    &e.frame,
                    clone_filter(&e.filter),
                    e.offset,
                    e.prev,
                    &f.epoch,
                    now,
                )
            };
            if let Some(frame) = frame {
                deliver(e, frame);
            }
        }
        let from = from.ok_or(Unrecovered::NoOffset)?;
        // Offset 0: the client saw nothing of the stream, in whatever epoch: it missed
        // everything of the current one.
        if *from.epoch != *f.epoch && from.offset != 0 {
            return Err(Unrecovered::EpochChanged);
        }
        // What the engine had after `from`, then what this node has beyond that.
        let last = f.entries.last().map_or(from.offset, |e| e.offset);
        match f.entries.first() {
            Some(first) if first.prev != from.offset => return Err(Unrecovered::Trimmed),
            _ => {}
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in &f.entries {
            if e.filter.admits(id, rooms) {
                let frame = Self::splice(&e.frame, e.offset, &f.epoch);
                bytes += frame.len() + 1;
                if out.len() == max || bytes > max_bytes {
                    return Err(Unrecovered::TooMany);
                }
                out.push(frame);
            }
        }
        if self.top > last {
            let at = Position {
                epoch: f.epoch.clone(),
                offset: last,
            };
            let rest = self.missed(
                id,
                rooms,
                Some(&at),
                Some(out.len()),
                max,
                max_bytes - bytes.min(max_bytes),
            )?;
            out.extend(rest);
        }
        Ok(out)
    }

    fn missed(
        &self,
        id: SocketId,
        rooms: &[Arc<str>],
        from: Option<&Position>,
        already: Option<usize>,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Utf8Bytes>, Unrecovered> {
        let from = from.ok_or(Unrecovered::NoOffset)?;
        // Offset 0: the client saw nothing of the stream, in whatever epoch (see `missed_with`).
        if (*from.epoch != *self.epoch && from.offset != 0) || from.offset > self.top {
            return Err(Unrecovered::EpochChanged);
        }
        if from.offset == self.top {
            return Ok(Vec::new());
        }
        // Entries are in offset order: the first one after `from` must follow it directly.
        let start = self.entries.partition_point(|e| e.offset <= from.offset);
        match self.entries.get(start) {
            Some(e) if e.prev == from.offset => {}
            _ => return Err(Unrecovered::Trimmed),
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let max = max - already.unwrap_or(0).min(max);
        for e in self.entries.range(start..) {
            if e.filter.as_ref().is_none_or(|f| f.admits(id, rooms)) {
                bytes += e.frame.len() + 1;
                if out.len() == max || bytes > max_bytes {
                    return Err(Unrecovered::TooMany);
                }
                out.push(e.frame.clone());
            }
        }
        Ok(out)
    }
}

fn clone_filter(f: &EntryFilter) -> EntryFilter {
    EntryFilter {
        rooms: f.rooms.clone(),
        except: f.except.clone(),
        except_rooms: f.except_rooms.clone(),
        only: f.only.clone(),
    }
}

/// Encode a `recovery` frame (PROTOCOL.md §13.4).
pub(crate) fn encode_recovery(namespace: &str, replay: &Replay) -> Utf8Bytes {
    let events_len: usize = replay.events.iter().map(|e| e.len() + 1).sum();
    let mut out = String::with_capacity(128 + namespace.len() + events_len);
    out.push_str("{\"type\":\"recovery\",\"namespace\":");
    out.push_str(&serde_json::to_string(namespace).unwrap_or_else(|_| "\"/\"".to_owned()));
    out.push_str(",\"data\":{\"recovered\":");
    match replay.outcome {
        Ok(()) => out.push_str("true"),
        Err(reason) => {
            out.push_str("false,\"reason\":\"");
            out.push_str(reason.as_str());
            out.push('"');
        }
    }
    out.push_str(",\"epoch\":\"");
    out.push_str(&replay.epoch);
    out.push_str("\",\"offset\":");
    let _ = write!(out, "{}", replay.offset);
    out.push_str(",\"events\":[");
    for (i, e) in replay.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e);
    }
    out.push_str("]}}");
    Utf8Bytes::from(out)
}

#[cfg(test)]
impl History {
    /// A replay without an engine read and without a byte bound.
    fn replay_plain(&mut self, resume: Option<Resuming<'_>>, max: usize, now: Instant) -> Replay {
        self.replay(resume, None, &mut |_, _| {}, max, usize::MAX, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> SocketId {
        SocketId::parse(&format!("{n:016x}")).unwrap()
    }

    fn at(h: &History, offset: u64) -> Position {
        Position {
            epoch: h.epoch.to_string(),
            offset,
        }
    }

    fn rec(h: &mut History, text: &str, filter: EntryFilter, now: Instant) -> String {
        let frame = format!(r#"{{"type":"event","namespace":"/","event":"e","data":"{text}"}}"#);
        h.record(&frame, filter, now).to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_are_spliced_and_replayed_in_order_with_filters() {
        let now = Instant::now();
        let mut h = History::new(100, usize::MAX, Duration::from_secs(60));
        let f = rec(&mut h, "a", EntryFilter::default(), now);
        assert_eq!(
            f,
            format!(
                r#"{{"type":"event","namespace":"/","event":"e","data":"a","offset":1,"epoch":"{}"}}"#,
                h.epoch
            )
        );
        let lobby: Arc<str> = Arc::from("lobby");
        rec(
            &mut h,
            "b",
            EntryFilter {
                rooms: vec![lobby.clone()],
                ..Default::default()
            },
            now,
        );
        rec(
            &mut h,
            "c",
            EntryFilter {
                rooms: vec![Arc::from("other")],
                ..Default::default()
            },
            now,
        );
        rec(
            &mut h,
            "d",
            EntryFilter {
                except: vec![id(7)],
                ..Default::default()
            },
            now,
        );
        rec(
            &mut h,
            "e",
            EntryFilter {
                only: vec![id(7)],
                ..Default::default()
            },
            now,
        );
        rec(
            &mut h,
            "f",
            EntryFilter {
                except_rooms: vec![lobby.clone()],
                ..Default::default()
            },
            now,
        );
        let rooms = [lobby.clone()];
        let r = h.replay_plain(Some((id(7), &rooms, Some(&at(&h, 0)))), 100, now);
        assert_eq!(r.outcome, Ok(()));
        assert_eq!(r.offset, 6);
        let data: Vec<&str> = r.events.iter().map(|e| &e[52..53]).collect();
        assert_eq!(data, ["a", "b", "e"], "{:?}", r.events);
        // From offset 2: only what came after.
        let r = h.replay_plain(Some((id(7), &rooms, Some(&at(&h, 2)))), 100, now);
        assert_eq!(r.events.len(), 1);
        // Up to date: recovered, nothing to send.
        let r = h.replay_plain(Some((id(8), &[], Some(&at(&h, 6)))), 100, now);
        assert_eq!((r.outcome, r.events.len()), (Ok(()), 0));
        // Another epoch, or a position from the future.
        let other = Position {
            epoch: "x".into(),
            offset: 1,
        };
        assert_eq!(
            h.replay_plain(Some((id(8), &[], Some(&other))), 100, now)
                .outcome,
            Err(Unrecovered::EpochChanged)
        );
        assert_eq!(
            h.replay_plain(Some((id(8), &[], Some(&at(&h, 7)))), 100, now)
                .outcome,
            Err(Unrecovered::EpochChanged)
        );
        assert_eq!(
            h.replay_plain(Some((id(8), &[], None)), 100, now).outcome,
            Err(Unrecovered::NoOffset)
        );
        assert_eq!(
            h.replay_plain(None, 100, now).outcome,
            Err(Unrecovered::New)
        );
        // More than max.
        assert_eq!(
            h.replay_plain(Some((id(9), &[], Some(&at(&h, 0)))), 2, now)
                .outcome,
            Err(Unrecovered::TooMany)
        );
        assert_eq!(
            h.replay_plain(Some((id(9), &[], Some(&at(&h, 0)))), 3, now)
                .events
                .len(),
            3
        );
    }

    #[tokio::test(start_paused = true)]
    async fn trimmed_by_size_and_age_but_quiet_clients_keep_their_place() {
        let now = Instant::now();
        let mut h = History::new(3, usize::MAX, Duration::from_secs(10));
        for i in 0..5 {
            rec(&mut h, &i.to_string(), EntryFilter::default(), now);
        }
        // Kept: 3, 4, 5. From 1 (missed 2): trimmed; from 2: complete.
        assert_eq!(
            h.replay_plain(Some((id(1), &[], Some(&at(&h, 1)))), 100, now)
                .outcome,
            Err(Unrecovered::Trimmed)
        );
        assert_eq!(
            h.replay_plain(Some((id(1), &[], Some(&at(&h, 2)))), 100, now)
                .events
                .len(),
            3
        );
        // Everything ages out; a client that saw offset 5 lost nothing.
        let later = now + Duration::from_secs(11);
        assert_eq!(
            h.replay_plain(Some((id(1), &[], Some(&at(&h, 4)))), 100, later)
                .outcome,
            Err(Unrecovered::Trimmed)
        );
        let r = h.replay_plain(Some((id(1), &[], Some(&at(&h, 5)))), 100, later);
        assert_eq!((r.outcome, r.events.len(), r.offset), (Ok(()), 0, 5));
        // Size 0: offsets are assigned, nothing is kept.
        let mut none = History::new(0, usize::MAX, Duration::from_secs(10));
        rec(&mut none, "x", EntryFilter::default(), now);
        rec(&mut none, "y", EntryFilter::default(), now);
        assert_eq!(
            none.replay_plain(Some((id(1), &[], Some(&at(&none, 1)))), 100, now)
                .outcome,
            Err(Unrecovered::Trimmed)
        );
        assert_eq!(
            none.replay_plain(Some((id(1), &[], Some(&at(&none, 2)))), 100, now)
                .outcome,
            Ok(())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_byte_bound_evicts_the_oldest() {
        let now = Instant::now();
        // Each recorded frame is 88 bytes: room for two.
        let mut h = History::new(100, 200, Duration::from_secs(10));
        for i in 0..3 {
            rec(&mut h, &i.to_string(), EntryFilter::default(), now);
        }
        assert_eq!(
            (h.entries.len(), h.bytes),
            (2, 2 * h.entries[0].frame.len())
        );
        assert_eq!(
            h.replay_plain(Some((id(1), &[], Some(&at(&h, 0)))), 100, now)
                .outcome,
            Err(Unrecovered::Trimmed)
        );
        assert_eq!(
            h.replay_plain(Some((id(1), &[], Some(&at(&h, 1)))), 100, now)
                .events
                .len(),
            2
        );
    }

    #[test]
    fn recovery_frame_shape() {
        let r = Replay {
            outcome: Ok(()),
            events: vec![
                Utf8Bytes::from_static(r#"{"a":1}"#),
                Utf8Bytes::from_static(r#"{"b":2}"#),
            ],
            epoch: Arc::from("e1"),
            offset: 9,
        };
        assert_eq!(
            encode_recovery("/chat", &r).as_str(),
            r#"{"type":"recovery","namespace":"/chat","data":{"recovered":true,"epoch":"e1","offset":9,"events":[{"a":1},{"b":2}]}}"#
        );
        let r = Replay {
            outcome: Err(Unrecovered::New),
            events: vec![],
            epoch: Arc::from("e2"),
            offset: 0,
        };
        assert_eq!(
            encode_recovery("/", &r).as_str(),
            r#"{"type":"recovery","namespace":"/","data":{"recovered":false,"reason":"new","epoch":"e2","offset":0,"events":[]}}"#
        );
    }
}
