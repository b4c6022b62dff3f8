//! The chat's events and their payloads: the types the server handlers decode and return, shared
//! with the Rust clients and the tests (the page speaks the same JSON).
//!
//! Client → server, namespace `/`:
//!
//! | event | payload | ack | broadcast to the room's other members |
//! |---|---|---|---|
//! | `chat` (the seed's) | [`ChatMessage`] | [`Status`] `{"status":"ok"}` | `chat` to everyone in `/` |
//! | `nick` | [`SetNick`] | [`NickAck`] | `notice` (`nick`), on a rename |
//! | `room:join` | [`RoomRef`] | [`Joined`] | `notice` (`join`) |
//! | `room:leave` | [`RoomRef`] | [`Left`] | `notice` (`leave`) |
//! | `message` | [`SendMessage`] | [`Sent`] | `message` ([`Message`]) |
//! | `typing` | [`Typing`] | none (volatile) | `typing` ([`TypingUpdate`]) |
//!
//! Namespace `/admin` (joined with the admin token): `rooms` → `Vec<`[`RoomInfo`]`>`, `users` →
//! `Vec<`[`UserInfo`]`>`, `announce` [`Announce`] → [`Announced`] (everyone receives
//! `announcement`, [`Announcement`]), `kick` [`Kick`] → [`Kicked`].
//!
//! Failures are `error` answers whose `data` is an [`ErrorBody`] with a stable `code`.
//!
//! Member lists are not chat events: they are wsu's `presence` frames (PROTOCOL.md §13.6), one
//! key per nickname with meta `{"nick": ...}`, sent to the members of each room as it changes
//! (a rename is a leave of the old key and a join of the new one). With wsu's recovery, room
//! broadcasts (`message`, `notice`, `announcement`, `chat`) carry an `offset` and `epoch` and
//! are replayed to a resumed session; `typing` is volatile.

use serde::{Deserialize, Serialize};

/// The seed example's chat payload (event `chat`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ChatMessage {
    /// Who says it (free text: the seed had no nicknames).
    pub user: String,
    /// What they say.
    pub message: String,
}

/// The seed's ack of `chat`: `{"status":"ok"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Status {
    /// Always `"ok"`.
    pub status: String,
}

/// The seed's application-level `error` event, sent when a `chat` payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SeedError {
    /// Always `"invalid payload"`.
    pub error: String,
}

/// Payload of `nick`: choose or change your nickname.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SetNick {
    /// The nickname (2 to 24 letters, digits, `-`, `_`, `.`; unique on the server, ignoring case).
    pub nick: String,
    /// The `resume` key of an earlier [`NickAck`]: takes the nickname over from a session
    /// that still holds it (a stale connection, or a dropped one waiting to be resumed — for a
    /// new session, such as a reloaded page; a resumed session keeps its nickname anyway), with
    /// its rooms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// Ack of `nick`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct NickAck {
    /// The nickname as stored (trimmed).
    pub nick: String,
    /// A secret to send back with `nick` after reconnecting (see [`SetNick::resume`]).
    pub resume: String,
    /// The rooms this nickname is in (non-empty after a resume).
    pub rooms: Vec<String>,
    /// Identifies the server process: it changes when the server restarts, and with it message
    /// ids start over and histories are gone.
    pub server: String,
}

/// Payload of `room:join` and `room:leave`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RoomRef {
    /// The room name: 1 to 32 of `a-z`, `0-9`, `-`, `_` (a leading `#` is dropped, upper case
    /// is lowered).
    pub room: String,
}

/// Ack of `room:join`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Joined {
    /// The room, normalised.
    pub room: String,
    /// Nicknames in the room, yours included, sorted (ignoring case): wsu's presence of the room
    /// on this node (also sent as the room's `presence` state before this ack).
    pub members: Vec<String>,
    /// The room's latest messages, oldest first.
    pub history: Vec<Message>,
}

/// Ack of `room:leave`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Left {
    /// The room, normalised.
    pub room: String,
}

/// Payload of `message`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SendMessage {
    /// A room you are in.
    pub room: String,
    /// The text (trimmed; 1 to 2000 characters by default).
    pub text: String,
    /// An optional client id (at most 64 bytes): sending the same `cid` again to the same room
    /// returns the first message's ack instead of posting twice (for retries after a reconnection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
}

/// Ack of `message`: the server's id and timestamp for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Sent {
    /// Message id: increasing over the whole server.
    pub id: u64,
    /// Server time, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// A room message (event `message`, and the entries of [`Joined::history`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Message {
    /// Message id: increasing over the whole server.
    pub id: u64,
    /// The room.
    pub room: String,
    /// The author's nickname.
    pub nick: String,
    /// The text.
    pub text: String,
    /// Server time, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The author's client id, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
}

/// Payload of `typing`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Typing {
    /// A room you are in.
    pub room: String,
    /// Started (`true`) or stopped (`false`) typing.
    pub typing: bool,
}

/// Event `typing`: someone in the room started or stopped typing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct TypingUpdate {
    /// The room.
    pub room: String,
    /// Who.
    pub nick: String,
    /// Started or stopped.
    pub typing: bool,
}

/// What a [`Notice`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeKind {
    /// Joined the room.
    Join,
    /// Left the room (or disconnected).
    Leave,
    /// Was removed by an admin.
    Kick,
    /// Changed nickname (from [`Notice::from`]).
    Nick,
}

/// Event `notice`: a line for the room's log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Notice {
    /// The room.
    pub room: String,
    /// What happened.
    pub kind: NoticeKind,
    /// Who (the new nickname for [`NoticeKind::Nick`]).
    pub nick: String,
    /// The former nickname, for [`NoticeKind::Nick`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Server time, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Event `announcement`, from an admin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Announcement {
    /// The text.
    pub text: String,
    /// The room it was sent to; absent when sent to everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Server time, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// `data` of every chat `error` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ErrorBody {
    /// A stable code: `nick_invalid`, `nick_taken`, `no_nick`, `room_invalid`, `rooms_full`,
    /// `joined_full`, `room_full`, `not_in_room`, `text_invalid`, `no_such_user`, `no_such_room`,
    /// `internal`.
    pub code: String,
}

/// Admin: one entry of the `rooms` ack.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RoomInfo {
    /// The room.
    pub room: String,
    /// Its members with an open connection, sorted (wsu's presence on this node).
    pub members: Vec<String>,
    /// Messages posted since the room was created.
    pub messages: u64,
}

/// Admin: one entry of the `users` ack.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct UserInfo {
    /// The nickname.
    pub nick: String,
    /// Rooms the user is in, sorted.
    pub rooms: Vec<String>,
    /// When the nickname was chosen, milliseconds since the Unix epoch.
    pub since: u64,
}

/// Admin: payload of `announce`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Announce {
    /// The text (1 to 500 characters).
    pub text: String,
    /// Only this room; everyone connected when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// Admin: ack of `announce`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Announced {
    /// Connections it was queued for.
    pub delivered: usize,
}

/// Admin: payload of `kick`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Kick {
    /// The nickname (any case).
    pub nick: String,
    /// Shown to the user in the close reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Admin: ack of `kick`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Kicked {
    /// The nickname as it was.
    pub nick: String,
    /// The rooms the user was removed from.
    pub rooms: Vec<String>,
}
