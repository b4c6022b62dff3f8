//! The chat's failures: one error type for every handler, sent as an `error` answer whose `data`
//! carries a stable code ([`ErrorBody`]).

use std::fmt;

use wsu::{HandlerError, IntoErrorBody};

use crate::protocol::ErrorBody;

/// Why a chat request failed. The `Display` text is the `error` message shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatError {
    /// The nickname breaks the rules (the text says which).
    NickInvalid(&'static str),
    /// Another connection uses this nickname (ignoring case).
    NickTaken,
    /// The request needs a nickname first.
    NoNick,
    /// The room name breaks the rules.
    RoomInvalid,
    /// The server already has its maximum of rooms.
    TooManyRooms(usize),
    /// The user is already in its maximum of rooms.
    TooManyJoined(usize),
    /// The room already has its maximum of members.
    RoomFull(usize),
    /// The user is not in this room.
    NotInRoom(String),
    /// The message (or announcement) text is empty once trimmed.
    TextEmpty,
    /// The text is longer than this many characters.
    TextTooLong(usize),
    /// The client id of a message is longer than 64 bytes.
    CidTooLong,
    /// Admin: no user has this nickname.
    NoSuchUser,
    /// Admin: no such room.
    NoSuchRoom,
    /// A broadcast could not be encoded or queued (a bug rather than a user error).
    Send(String),
}

impl ChatError {
    /// The stable code sent in the error's `data`.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::NickInvalid(_) => "nick_invalid",
            ChatError::NickTaken => "nick_taken",
            ChatError::NoNick => "no_nick",
            ChatError::RoomInvalid => "room_invalid",
            ChatError::TooManyRooms(_) => "rooms_full",
            ChatError::TooManyJoined(_) => "joined_full",
            ChatError::RoomFull(_) => "room_full",
            ChatError::NotInRoom(_) => "not_in_room",
            ChatError::TextEmpty | ChatError::TextTooLong(_) | ChatError::CidTooLong => {
                "text_invalid"
            }
            ChatError::NoSuchUser => "no_such_user",
            ChatError::NoSuchRoom => "no_such_room",
            ChatError::Send(_) => "internal",
        }
    }
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::NickInvalid(why) => f.write_str(why),
            ChatError::NickTaken => f.write_str("nickname is taken"),
            ChatError::NoNick => f.write_str("choose a nickname first"),
            ChatError::RoomInvalid => {
                f.write_str("room names are 1 to 32 characters: a-z, 0-9, '-' and '_'")
            }
            ChatError::TooManyRooms(n) => write!(f, "too many rooms on the server (at most {n})"),
            ChatError::TooManyJoined(n) => write!(f, "you are in too many rooms (at most {n})"),
            ChatError::RoomFull(n) => write!(f, "room is full (at most {n} members)"),
            ChatError::NotInRoom(room) => write!(f, "you are not in #{room}"),
            ChatError::TextEmpty => f.write_str("message is empty"),
            ChatError::TextTooLong(n) => write!(f, "message is longer than {n} characters"),
            ChatError::CidTooLong => f.write_str("cid is longer than 64 bytes"),
            ChatError::NoSuchUser => f.write_str("no such user"),
            ChatError::NoSuchRoom => f.write_str("no such room"),
            ChatError::Send(e) => write!(f, "could not send: {e}"),
        }
    }
}

impl std::error::Error for ChatError {}

impl From<wsu::SendError> for ChatError {
    fn from(e: wsu::SendError) -> Self {
        ChatError::Send(e.to_string())
    }
}

impl From<wsu::JoinError> for ChatError {
    fn from(e: wsu::JoinError) -> Self {
        ChatError::Send(e.to_string())
    }
}

/// `{"type":"error",...,"error":"nickname is taken","data":{"code":"nick_taken"}}`.
impl IntoErrorBody for ChatError {
    fn into_error_body(self) -> HandlerError {
        let body = ErrorBody {
            code: self.code().to_owned(),
        };
        HandlerError::new(self.to_string()).with_data(&body)
    }
}
