//! The chat's registry: which session has which nickname, which rooms exist, who is in them,
//! and their latest messages — what wsu's core does not know. The member lists that pages show
//! are wsu's own presence (`ServerBuilder::presence`, keyed by nickname with
//! [`Socket::set_presence`](wsu::Socket::set_presence)), not this registry.
//!
//! Plain data, no I/O. Handlers lock it ([`Presence::lock`]), change it, and broadcast the
//! result *while still holding the lock* (broadcasts only queue, they never wait), so every
//! client sees the notices of a room in the order the registry made the changes.
//!
//! ## Sessions that outlive their connection
//! The server has wsu's connection-state recovery on: a connection that drops without a close
//! frame keeps its session (its id and rooms) for [`Limits::session_ttl`], and a client that
//! resumes it gets the same connection id back. So a user is keyed by that id and survives the
//! drop too: the disconnect hook only marks it *detached* ([`Registry::detach`]) — its nickname
//! stays taken, its rooms keep it as a member (and their history), and nobody is told it left —
//! and a timer removes it after the session TTL ([`Registry::expire`], with the `leave`
//! notices) unless the connect hook saw it resume ([`Registry::reattach`]). A connection that
//! ends for good (a close frame from the client, a kick) is removed at once, as before.
//!
//! Every collection is bounded: users by the server's connection limit plus the sessions
//! detached within the last TTL, rooms by [`Limits::max_rooms`], members by
//! [`Limits::max_members_per_room`], the rooms of a user by [`Limits::max_rooms_per_user`],
//! history by [`Limits::history`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use wsu::SocketId;

use crate::config::Limits;
use crate::error::ChatError;
use crate::protocol::{Message, NickAck, RoomInfo, TypingUpdate, UserInfo};

/// Shortest nickname, in characters.
pub const NICK_MIN_CHARS: usize = 2;
/// Longest nickname, in characters.
pub const NICK_MAX_CHARS: usize = 24;
/// Longest room name, in characters.
pub const ROOM_MAX_CHARS: usize = 32;
/// Longest client message id, in bytes.
pub const CID_MAX_BYTES: usize = 64;
/// Longest admin announcement, in characters.
pub const ANNOUNCEMENT_MAX_CHARS: usize = 500;

/// A nickname, trimmed, if it follows the rules: 2 to 24 characters, each a letter or digit
/// (any script) or one of `-`, `_`, `.`.
///
/// # Errors
/// [`ChatError::NickInvalid`] saying which rule is broken.
pub fn normalize_nick(input: &str) -> Result<String, ChatError> {
    let nick = input.trim();
    let len = nick.chars().count();
    if !(NICK_MIN_CHARS..=NICK_MAX_CHARS).contains(&len) {
        return Err(ChatError::NickInvalid(
            "nicknames are 2 to 24 characters long",
        ));
    }
    if !nick
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ChatError::NickInvalid(
            "nicknames may only contain letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(nick.to_owned())
}

/// A room name, normalised: trimmed, without a leading `#`, in lower case; then 1 to 32 of
/// `a-z`, `0-9`, `-`, `_`.
///
/// # Errors
/// [`ChatError::RoomInvalid`].
pub fn normalize_room(input: &str) -> Result<String, ChatError> {
    let trimmed = input.trim();
    let room = trimmed.strip_prefix('#').unwrap_or(trimmed).to_lowercase();
    let valid = !room.is_empty()
        && room.chars().count() <= ROOM_MAX_CHARS
        && room
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if valid {
        Ok(room)
    } else {
        Err(ChatError::RoomInvalid)
    }
}

/// A message text, trimmed, with 1 to `max` characters.
///
/// # Errors
/// [`ChatError::TextEmpty`], [`ChatError::TextTooLong`].
pub fn normalize_text(input: &str, max: usize) -> Result<String, ChatError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(ChatError::TextEmpty);
    }
    if text.chars().count() > max {
        return Err(ChatError::TextTooLong(max));
    }
    Ok(text.to_owned())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The shared state of the chat (`State<Presence>` in the handlers).
#[derive(Debug)]
pub struct Presence {
    inner: Mutex<Registry>,
}

impl Presence {
    /// An empty registry with these limits.
    pub fn new(limits: Limits) -> Self {
        Presence {
            inner: Mutex::new(Registry::new(limits)),
        }
    }

    /// An empty registry for a node of a cluster: as [`Presence::new`], but message ids are
    /// unique across nodes (`now_ms * 1024` plus a random per-node tag, increasing on this node:
    /// ordered by time, exact in JavaScript; two nodes share a tag with a chance of 1 in 1024),
    /// since a message posted on one node reaches the pages of the others, which tell messages
    /// apart by id.
    pub fn clustered(limits: Limits) -> Self {
        let mut reg = Registry::new(limits);
        reg.cluster_id_tag = Some(reg.keys.hash_one(0x6964_7467u64) % CLUSTER_ID_TAGS);
        Presence {
            inner: Mutex::new(reg),
        }
    }

    /// Lock the registry. Do not hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every change below completes or leaves the registry as it was, so a panic elsewhere
        // while the lock was held leaves nothing half-done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The registry behind [`Presence`].
#[derive(Debug)]
pub struct Registry {
    limits: Limits,
    users: HashMap<SocketId, User>,
    /// Lower-cased nickname → its connection.
    nicks: HashMap<String, SocketId>,
    rooms: BTreeMap<String, Room>,
    last_message_id: u64,
    /// In a cluster: the low bits of this node's message ids (see [`Registry::next_message_id`]).
    cluster_id_tag: Option<u64>,
    keys: RandomState,
    last_key: u64,
    /// Random per registry (so per server process): [`NickAck::server`].
    instance: String,
    /// The last [`Registry::detach`] generation.
    last_detach: u64,
    /// Detached sessions the chat ended (kicked, or nickname taken over with the resume key),
    /// with when: refused if they resume within the session TTL.
    ended: HashMap<SocketId, Instant>,
}

#[derive(Debug)]
struct User {
    nick: String,
    rooms: BTreeSet<String>,
    resume: String,
    since: u64,
    /// When a `typing: true` was last relayed, per room.
    typing: HashMap<String, Instant>,
    /// While its connection is down (the session may resume): the generation of that detach.
    detached: Option<u64>,
}

#[derive(Debug, Default)]
struct Room {
    members: HashSet<SocketId>,
    history: VecDeque<Message>,
    posted: u64,
}

/// What [`Registry::set_nick`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NickChange {
    /// The connection chose its first nickname.
    Claimed,
    /// It asked for the nickname it already has.
    Unchanged,
    /// It changed nickname; the other members of `rooms` must be told.
    Renamed {
        /// The former nickname.
        from: String,
        /// The user's rooms.
        rooms: Vec<String>,
    },
    /// It took the nickname (and its rooms) over from connection `from` (open, or detached:
    /// then its session is ended), with the resume key.
    Resumed {
        /// The connection that held it.
        from: SocketId,
        /// The rooms taken over.
        rooms: Vec<String>,
    },
}

/// The result of [`Registry::set_nick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NickResult {
    /// What happened.
    pub change: NickChange,
    /// The ack for the client.
    pub ack: NickAck,
}

/// The result of [`Registry::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// The room, normalised.
    pub room: String,
    /// Its latest messages, oldest first.
    pub history: Vec<Message>,
    /// The user's nickname.
    pub nick: String,
    /// Whether it was not in the room already (then the others must be told).
    pub new: bool,
}

/// The result of [`Registry::leave`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResult {
    /// The room, normalised.
    pub room: String,
    /// The user's nickname.
    pub nick: String,
}

/// The result of [`Registry::post`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostResult {
    /// The message (the earlier one for a repeated `cid`).
    pub message: Message,
    /// Whether the `cid` had been posted already (then nothing is broadcast).
    pub duplicate: bool,
}

/// A user removed by [`Registry::remove`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    /// Its nickname.
    pub nick: String,
    /// The rooms it was in.
    pub rooms: Vec<String>,
}

/// What [`Registry::reattach`] found for a resumed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reattach {
    /// Its user, with this nickname, is back.
    User(String),
    /// It had no nickname (or it was removed when the session ended for the chat).
    Nobody,
    /// The chat ended it while it was detached (a kick, a takeover): refuse it.
    Ended,
}

/// Node tags of cluster message ids: the ids' low 10 bits.
const CLUSTER_ID_TAGS: u64 = 1024;

impl Registry {
    /// The id of the next message posted at `now` (ms): on a single node 1, 2, 3...; on a node
    /// of a cluster `now * 1024 + tag`, `tag` random per node (two nodes share one with a chance
    /// of 1 in 1024), raised to keep increasing on this node. These ids order messages of all
    /// nodes by time, and stay below 2^53 (exact in JavaScript) until the year 2248.
    fn next_message_id(last: &mut u64, cluster_id_tag: Option<u64>, now: u64) -> u64 {
        *last = match cluster_id_tag {
            None => *last + 1,
            Some(tag) => (now.saturating_mul(CLUSTER_ID_TAGS) + tag).max(*last + CLUSTER_ID_TAGS),
        };
        *last
    }

    fn new(limits: Limits) -> Self {
        let keys = RandomState::new();
        let instance = format!("{:08x}", keys.hash_one(0x696e_7374u64) >> 32);
        Registry {
            limits,
            users: HashMap::new(),
            nicks: HashMap::new(),
            rooms: BTreeMap::new(),
            last_message_id: 0,
            cluster_id_tag: None,
            keys,
            last_key: 0,
            instance,
            last_detach: 0,
            ended: HashMap::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A resume key: 128 bits of SipHash output under the process's random keys. Unguessable
    /// enough for a demo's session takeover; not a cryptographic token.
    fn new_resume_key(&mut self) -> String {
        self.last_key += 1;
        let a = self.keys.hash_one((self.last_key, 0x7265_7375_6d65u64));
        let b = self.keys.hash_one((a, self.last_key));
        format!("{a:016x}{b:016x}")
    }

    /// Choose or change the nickname of connection `id`. A nickname held by another connection
    /// is refused unless `id` has none yet and gives that holder's resume key: it then takes the
    /// nickname over, with its rooms (see [`NickChange::Resumed`]).
    ///
    /// # Errors
    /// [`ChatError::NickInvalid`], [`ChatError::NickTaken`].
    pub fn set_nick(
        &mut self,
        id: SocketId,
        input: &str,
        resume: Option<&str>,
        now: u64,
    ) -> Result<NickResult, ChatError> {
        let nick = normalize_nick(input)?;
        let key = nick.to_lowercase();
        let change = match self.nicks.get(&key).copied() {
            Some(holder) if holder == id => {
                let user = self.users.get_mut(&id).ok_or(ChatError::NoNick)?;
                if user.nick == nick {
                    NickChange::Unchanged
                } else {
                    // Same nickname in another case.
                    let from = std::mem::replace(&mut user.nick, nick);
                    NickChange::Renamed {
                        from,
                        rooms: user.rooms.iter().cloned().collect(),
                    }
                }
            }
            Some(holder) => {
                let resumable = !self.users.contains_key(&id)
                    && match (resume, self.users.get(&holder)) {
                        (Some(given), Some(user)) => same_secret(given, &user.resume),
                        _ => false,
                    };
                if !resumable {
                    return Err(ChatError::NickTaken);
                }
                let mut user = self.users.remove(&holder).ok_or(ChatError::NickTaken)?;
                if user.detached.take().is_some() {
                    // Its session must not come back (with rooms but without a nickname).
                    self.end_session(holder);
                }
                user.typing.clear();
                for room in &user.rooms {
                    if let Some(r) = self.rooms.get_mut(room) {
                        r.members.remove(&holder);
                        r.members.insert(id);
                    }
                }
                let rooms = user.rooms.iter().cloned().collect();
                self.users.insert(id, user);
                self.nicks.insert(key, id);
                NickChange::Resumed {
                    from: holder,
                    rooms,
                }
            }
            None => {
                if let Some(user) = self.users.get_mut(&id) {
                    self.nicks.remove(&user.nick.to_lowercase());
                    let from = std::mem::replace(&mut user.nick, nick);
                    self.nicks.insert(key, id);
                    NickChange::Renamed {
                        from,
                        rooms: user.rooms.iter().cloned().collect(),
                    }
                } else {
                    let resume = self.new_resume_key();
                    self.users.insert(
                        id,
                        User {
                            nick,
                            rooms: BTreeSet::new(),
                            resume,
                            since: now,
                            typing: HashMap::new(),
                            detached: None,
                        },
                    );
                    self.nicks.insert(key, id);
                    NickChange::Claimed
                }
            }
        };
        let user = self.users.get(&id).ok_or(ChatError::NoNick)?;
        let ack = NickAck {
            nick: user.nick.clone(),
            resume: user.resume.clone(),
            rooms: user.rooms.iter().cloned().collect(),
            server: self.instance.clone(),
        };
        Ok(NickResult { change, ack })
    }

    /// Connection `id` joins a room, created when needed. Joining a room one is in is not an
    /// error (`new` is then false).
    ///
    /// # Errors
    /// [`ChatError::RoomInvalid`], [`ChatError::NoNick`], [`ChatError::TooManyJoined`],
    /// [`ChatError::RoomFull`], [`ChatError::TooManyRooms`].
    pub fn join(&mut self, id: SocketId, input: &str) -> Result<JoinResult, ChatError> {
        let room = normalize_room(input)?;
        let user = self.users.get(&id).ok_or(ChatError::NoNick)?;
        let nick = user.nick.clone();
        let new = !user.rooms.contains(&room);
        if new {
            if user.rooms.len() >= self.limits.max_rooms_per_user {
                return Err(ChatError::TooManyJoined(self.limits.max_rooms_per_user));
            }
            match self.rooms.get(&room) {
                Some(r) if r.members.len() >= self.limits.max_members_per_room => {
                    return Err(ChatError::RoomFull(self.limits.max_members_per_room));
                }
                None if self.rooms.len() >= self.limits.max_rooms => {
                    return Err(ChatError::TooManyRooms(self.limits.max_rooms));
                }
                _ => {}
            }
            self.rooms
                .entry(room.clone())
                .or_default()
                .members
                .insert(id);
            if let Some(user) = self.users.get_mut(&id) {
                user.rooms.insert(room.clone());
            }
        }
        let history = self
            .rooms
            .get(&room)
            .map(|r| r.history.iter().cloned().collect())
            .unwrap_or_default();
        Ok(JoinResult {
            room,
            history,
            nick,
            new,
        })
    }

    /// Connection `id` leaves a room; the room is deleted when it was the last member.
    ///
    /// # Errors
    /// [`ChatError::RoomInvalid`], [`ChatError::NoNick`], [`ChatError::NotInRoom`].
    pub fn leave(&mut self, id: SocketId, input: &str) -> Result<LeaveResult, ChatError> {
        let room = normalize_room(input)?;
        let user = self.users.get_mut(&id).ok_or(ChatError::NoNick)?;
        if !user.rooms.remove(&room) {
            return Err(ChatError::NotInRoom(room));
        }
        user.typing.remove(&room);
        let nick = user.nick.clone();
        self.remove_member(&room, id);
        Ok(LeaveResult { room, nick })
    }

    /// Connection `id` posts a message to a room it is in.
    ///
    /// # Errors
    /// [`ChatError::RoomInvalid`], [`ChatError::NoNick`], [`ChatError::NotInRoom`],
    /// [`ChatError::TextEmpty`], [`ChatError::TextTooLong`], [`ChatError::CidTooLong`].
    pub fn post(
        &mut self,
        id: SocketId,
        room: &str,
        text: &str,
        cid: Option<String>,
        now: u64,
    ) -> Result<PostResult, ChatError> {
        let room = normalize_room(room)?;
        let user = self.users.get_mut(&id).ok_or(ChatError::NoNick)?;
        if !user.rooms.contains(&room) {
            return Err(ChatError::NotInRoom(room));
        }
        let text = normalize_text(text, self.limits.max_message_chars)?;
        if cid.as_ref().is_some_and(|c| c.len() > CID_MAX_BYTES) {
            return Err(ChatError::CidTooLong);
        }
        // A message ends the author's "typing": the next `typing: true` is relayed at once.
        user.typing.remove(&room);
        let nick = user.nick.clone();
        let r = self
            .rooms
            .get_mut(&room)
            .ok_or_else(|| ChatError::NotInRoom(room.clone()))?;
        if let Some(cid) = &cid
            && let Some(earlier) = r
                .history
                .iter()
                .find(|m| m.nick == nick && m.cid.as_ref() == Some(cid))
        {
            return Ok(PostResult {
                message: earlier.clone(),
                duplicate: true,
            });
        }
        let message = Message {
            id: Self::next_message_id(&mut self.last_message_id, self.cluster_id_tag, now),
            room,
            nick,
            text,
            ts: now,
            cid,
        };
        r.history.push_back(message.clone());
        while r.history.len() > self.limits.history {
            r.history.pop_front();
        }
        r.posted += 1;
        Ok(PostResult {
            message,
            duplicate: false,
        })
    }

    /// Connection `id` started or stopped typing in a room: the update to relay, or `None` when
    /// it is not to be relayed (not a member, a `true` within [`Limits::typing_interval`] of the
    /// last relayed one, a `false` without a `true` before it).
    pub fn typing(
        &mut self,
        id: SocketId,
        room: &str,
        typing: bool,
        now: Instant,
    ) -> Option<TypingUpdate> {
        let room = normalize_room(room).ok()?;
        let interval = self.limits.typing_interval;
        let user = self.users.get_mut(&id)?;
        if !user.rooms.contains(&room) {
            return None;
        }
        if typing {
            if let Some(last) = user.typing.get(&room)
                && now.saturating_duration_since(*last) < interval
            {
                return None;
            }
            user.typing.insert(room.clone(), now);
        } else if user.typing.remove(&room).is_none() {
            return None;
        }
        Some(TypingUpdate {
            room,
            nick: user.nick.clone(),
            typing,
        })
    }

    /// Remove connection `id` (its session ended, or kicked) from every room; its nickname is
    /// free. A detached session removed this way (a kick) is refused if it resumes.
    pub fn remove(&mut self, id: SocketId) -> Option<Departure> {
        let user = self.users.remove(&id)?;
        if user.detached.is_some() {
            self.end_session(id);
        }
        let key = user.nick.to_lowercase();
        if self.nicks.get(&key) == Some(&id) {
            self.nicks.remove(&key);
        }
        for room in &user.rooms {
            self.remove_member(room, id);
        }
        Some(Departure {
            nick: user.nick,
            rooms: user.rooms.into_iter().collect(),
        })
    }

    /// The connection of `id` dropped but its session may resume: keep the user (nickname,
    /// rooms) and return the generation to give [`expire`](Self::expire) once the session TTL
    /// is over; `None` when `id` has no nickname.
    pub fn detach(&mut self, id: SocketId) -> Option<u64> {
        let user = self.users.get_mut(&id)?;
        user.typing.clear();
        self.last_detach += 1;
        user.detached = Some(self.last_detach);
        Some(self.last_detach)
    }

    /// Session `id` resumed on a new connection (its connect hook).
    pub fn reattach(&mut self, id: SocketId) -> Reattach {
        let ttl = self.limits.session_ttl;
        self.ended.retain(|_, at| at.elapsed() <= ttl);
        if self.ended.remove(&id).is_some() {
            return Reattach::Ended;
        }
        match self.users.get_mut(&id) {
            Some(user) => {
                user.detached = None;
                Reattach::User(user.nick.clone())
            }
            None => Reattach::Nobody,
        }
    }

    /// The session TTL of detach `generation` is over: remove the user unless it resumed since.
    pub fn expire(&mut self, id: SocketId, generation: u64) -> Option<Departure> {
        if self.users.get(&id)?.detached != Some(generation) {
            return None;
        }
        let departure = self.remove(id);
        // Expired in wsu too: nothing to refuse.
        self.ended.remove(&id);
        departure
    }

    /// Whether `id`'s connection is down, its session waiting to resume.
    pub fn is_detached(&self, id: SocketId) -> bool {
        self.users.get(&id).is_some_and(|u| u.detached.is_some())
    }

    fn end_session(&mut self, id: SocketId) {
        let ttl = self.limits.session_ttl;
        self.ended.retain(|_, at| at.elapsed() <= ttl);
        self.ended.insert(id, Instant::now());
    }

    /// The connection using this nickname (any case).
    pub fn find_nick(&self, nick: &str) -> Option<SocketId> {
        self.nicks.get(&nick.trim().to_lowercase()).copied()
    }

    /// The nickname of connection `id`.
    pub fn nick_of(&self, id: SocketId) -> Option<&str> {
        self.users.get(&id).map(|u| u.nick.as_str())
    }

    /// Whether a room exists.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Every room, by name, with its members as `members` lists them (the connected ones, from
    /// wsu's presence).
    pub fn rooms_info(&self, members: impl Fn(&str) -> Vec<String>) -> Vec<RoomInfo> {
        self.rooms
            .iter()
            .map(|(name, r)| RoomInfo {
                room: name.clone(),
                members: members(name),
                messages: r.posted,
            })
            .collect()
    }

    /// Every user, by nickname (ignoring case).
    pub fn users_info(&self) -> Vec<UserInfo> {
        let mut users: Vec<UserInfo> = self
            .users
            .values()
            .map(|u| UserInfo {
                nick: u.nick.clone(),
                rooms: u.rooms.iter().cloned().collect(),
                since: u.since,
            })
            .collect();
        users.sort_by_cached_key(|u| (u.nick.to_lowercase(), u.nick.clone()));
        users
    }

    /// Remove `id` from `room`'s members; delete the room when empty.
    fn remove_member(&mut self, room: &str, id: SocketId) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.members.remove(&id);
            if r.members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}

/// Compare two secrets without stopping at the first difference.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> SocketId {
        SocketId::parse(&format!("{n:016x}")).expect("valid id")
    }

    #[test]
    fn nicknames() {
        assert_eq!(normalize_nick("  ann "), Ok("ann".to_owned()));
        assert_eq!(normalize_nick("Zoë_2.0-x"), Ok("Zoë_2.0-x".to_owned()));
        assert_eq!(normalize_nick(&"é".repeat(24)), Ok("é".repeat(24)));
        for bad in ["a", " a ", "", &"b".repeat(25)] {
            assert_eq!(
                normalize_nick(bad),
                Err(ChatError::NickInvalid(
                    "nicknames are 2 to 24 characters long"
                )),
                "{bad:?}"
            );
        }
        for bad in ["an n", "ann!", "a\u{0}b", "<b>"] {
            assert_eq!(
                normalize_nick(bad),
                Err(ChatError::NickInvalid(
                    "nicknames may only contain letters, digits, '-', '_' and '.'"
                )),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rooms_are_normalised() {
        assert_eq!(normalize_room(" #Lobby "), Ok("lobby".to_owned()));
        assert_eq!(normalize_room("rust_2024-x"), Ok("rust_2024-x".to_owned()));
        assert_eq!(normalize_room(&"r".repeat(32)), Ok("r".repeat(32)));
        for bad in ["", "#", "a b", "é", &"r".repeat(33), "a/b"] {
            assert_eq!(normalize_room(bad), Err(ChatError::RoomInvalid), "{bad:?}");
        }
    }

    #[test]
    fn texts() {
        assert_eq!(normalize_text("  hi \n", 5), Ok("hi".to_owned()));
        assert_eq!(normalize_text(" \n\t", 5), Err(ChatError::TextEmpty));
        assert_eq!(normalize_text("ééééé", 5), Ok("ééééé".to_owned()));
        assert_eq!(normalize_text("123456", 5), Err(ChatError::TextTooLong(5)));
    }

    #[test]
    fn secrets() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }

    #[test]
    fn typing_is_throttled_per_room_and_reset_by_a_message() {
        let limits = Limits {
            typing_interval: std::time::Duration::from_secs(1),
            ..Limits::default()
        };
        let mut reg = Registry::new(limits);
        reg.set_nick(id(1), "ann", None, 0).expect("nick");
        reg.join(id(1), "a").expect("join a");
        reg.join(id(1), "b").expect("join b");
        let t0 = Instant::now();
        let update = |room: &str, typing| TypingUpdate {
            room: room.to_owned(),
            nick: "ann".to_owned(),
            typing,
        };
        assert_eq!(reg.typing(id(1), "a", true, t0), Some(update("a", true)));
        assert_eq!(reg.typing(id(1), "a", true, t0), None);
        assert_eq!(reg.typing(id(1), "b", true, t0), Some(update("b", true)));
        let later = t0 + std::time::Duration::from_secs(1);
        assert_eq!(reg.typing(id(1), "a", true, later), Some(update("a", true)));
        assert_eq!(
            reg.typing(id(1), "a", false, later),
            Some(update("a", false))
        );
        assert_eq!(reg.typing(id(1), "a", false, later), None);
        assert_eq!(reg.typing(id(1), "c", true, later), None);
        assert_eq!(reg.typing(id(2), "a", true, later), None);
        reg.post(id(1), "b", "hi", None, 0).expect("post");
        assert_eq!(reg.typing(id(1), "b", false, later), None);
        assert_eq!(reg.typing(id(1), "b", true, t0), Some(update("b", true)));
    }

    #[test]
    fn history_is_bounded_and_rooms_vanish_when_empty() {
        let limits = Limits {
            history: 2,
            ..Limits::default()
        };
        let mut reg = Registry::new(limits);
        reg.set_nick(id(1), "ann", None, 0).expect("nick");
        reg.join(id(1), "a").expect("join");
        for text in ["1", "2", "3"] {
            reg.post(id(1), "a", text, None, 7).expect("post");
        }
        reg.set_nick(id(2), "bob", None, 0).expect("nick");
        let joined = reg.join(id(2), "a").expect("join");
        let texts: Vec<&str> = joined.history.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["2", "3"]);
        assert_eq!(reg.rooms_info(|_| Vec::new())[0].messages, 3);
        reg.remove(id(1));
        reg.leave(id(2), "a").expect("leave");
        assert!(reg.rooms_info(|_| Vec::new()).is_empty());
        assert_eq!(reg.find_nick("ANN"), None);
        assert_eq!(reg.find_nick("Bob"), Some(id(2)));
    }

    #[test]
    fn a_detached_user_keeps_its_nickname_and_rooms_until_it_resumes_or_expires() {
        let mut reg = Registry::new(Limits::default());
        reg.set_nick(id(1), "ann", None, 0).expect("nick");
        reg.join(id(1), "a").expect("join");
        let g1 = reg.detach(id(1)).expect("a user");
        assert!(reg.is_detached(id(1)));
        assert_eq!(
            reg.set_nick(id(2), "ANN", None, 0),
            Err(ChatError::NickTaken)
        );
        assert!(reg.has_room("a"), "kept while detached");
        // Resumed: attached again; the old expiry does nothing.
        assert_eq!(reg.reattach(id(1)), Reattach::User("ann".to_owned()));
        assert_eq!(reg.expire(id(1), g1), None);
        assert_eq!(reg.find_nick("ann"), Some(id(1)));
        // Dropped again and not resumed: removed with its rooms.
        let g2 = reg.detach(id(1)).expect("a user");
        let gone = reg.expire(id(1), g2).expect("removed");
        assert_eq!(
            (gone.nick.as_str(), gone.rooms),
            ("ann", vec!["a".to_owned()])
        );
        assert_eq!(reg.find_nick("ann"), None);
        assert!(!reg.has_room("a"));
        assert_eq!(reg.reattach(id(1)), Reattach::Nobody);
        assert_eq!(reg.detach(id(3)), None, "no nickname, nothing to keep");
    }

    #[test]
    fn a_detached_session_ended_by_the_chat_is_refused_when_it_resumes() {
        let mut reg = Registry::new(Limits::default());
        // Kicked while detached.
        reg.set_nick(id(1), "ann", None, 0).expect("nick");
        reg.detach(id(1));
        reg.remove(id(1)).expect("kicked");
        assert_eq!(reg.reattach(id(1)), Reattach::Ended);
        assert_eq!(reg.reattach(id(1)), Reattach::Nobody, "refused once");
        // Its nickname taken over with the resume key by a new session.
        let key = reg
            .set_nick(id(2), "bob", None, 0)
            .expect("nick")
            .ack
            .resume;
        reg.join(id(2), "a").expect("join");
        reg.detach(id(2));
        let took = reg.set_nick(id(3), "bob", Some(&key), 0).expect("resume");
        assert_eq!(
            took.change,
            NickChange::Resumed {
                from: id(2),
                rooms: vec!["a".to_owned()]
            }
        );
        assert!(!reg.is_detached(id(3)));
        assert_eq!(reg.reattach(id(2)), Reattach::Ended);
    }

    #[test]
    fn message_ids_on_a_node_of_a_cluster_are_tagged_and_increasing() {
        let presence = Presence::clustered(Limits::default());
        let mut reg = presence.lock();
        let tag = reg.cluster_id_tag.expect("clustered");
        reg.set_nick(id(1), "ann", None, 0).expect("nick");
        reg.join(id(1), "a").expect("join");
        let now = 1_700_000_000_000;
        let mut ids = Vec::new();
        for (text, at) in [("1", now), ("2", now), ("3", now - 5), ("4", now + 10)] {
            ids.push(
                reg.post(id(1), "a", text, None, at)
                    .expect("post")
                    .message
                    .id,
            );
        }
        assert_eq!(ids[0], now * 1024 + tag);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(ids.iter().all(|i| i % 1024 == tag && *i < 1 << 53));
        assert_eq!(ids[3], (now + 10) * 1024 + tag);
        // On a single node: 1, 2, 3...
        let mut single = Registry::new(Limits::default());
        single.set_nick(id(1), "ann", None, 0).expect("nick");
        single.join(id(1), "a").expect("join");
        assert_eq!(
            single
                .post(id(1), "a", "x", None, now)
                .expect("post")
                .message
                .id,
            1
        );
    }
}
