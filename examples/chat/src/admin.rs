//! Namespace `/admin`: joining it needs the admin token (checked by its `#[ws_connect]` hook);
//! its members can list rooms and users, broadcast an announcement and kick a user.
//!
//! The token comes from the connection's upgrade request: the query parameter `token`
//! (`ws://host/ws?token=...`, percent-decoded) or an `Authorization: Bearer ...` header.

use wsu::{CloseCode, Server, Socket, State, ws_connect, ws_event};

use crate::error::ChatError;
use crate::handlers::{members, tell_rooms};
use crate::presence::{
    ANNOUNCEMENT_MAX_CHARS, Presence, normalize_room, normalize_text, now_ms, same_secret,
};
use crate::protocol::{
    Announce, Announced, Announcement, Kick, Kicked, NoticeKind, RoomInfo, UserInfo,
};

/// Close code of a kicked connection. In `4500..=4999`, so the client does not reconnect.
pub const KICKED: CloseCode = CloseCode::new(4510);

/// The admin token (`State<AdminAuth>`); `None` disables `/admin`.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    token: Option<String>,
}

impl AdminAuth {
    /// Admins must present `token`; with `None` nobody can join `/admin`.
    pub fn new(token: Option<String>) -> Self {
        AdminAuth {
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// Check the token a client presented.
    ///
    /// # Errors
    /// The reason of the refusal, sent to the client as `join refused: <reason>`.
    pub fn check(&self, presented: Option<&str>) -> Result<(), &'static str> {
        let Some(expected) = &self.token else {
            return Err("the admin namespace is disabled (no CHAT_ADMIN_TOKEN)");
        };
        match presented {
            None => Err("admin token required"),
            Some(given) if same_secret(given, expected) => Ok(()),
            Some(_) => Err("invalid admin token"),
        }
    }
}

/// The connect hook of `/admin`: runs when a connection asks to join it.
#[ws_connect(namespace = "/admin")]
pub async fn admin_connect(
    socket: Socket,
    State(auth): State<AdminAuth>,
) -> Result<(), &'static str> {
    auth.check(presented_token(&socket).as_deref())
}

/// The token of the upgrade request: `?token=` (percent-decoded) or `Authorization: Bearer`.
fn presented_token(socket: &Socket) -> Option<String> {
    if let Some(raw) = socket.query("token") {
        return percent_decode(raw);
    }
    // Not `to_str`: it refuses every non-ASCII byte, and a token may be any UTF-8.
    let header = socket.request().headers.get("authorization")?;
    let header = std::str::from_utf8(header.as_bytes()).ok()?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// Decode `%XX` escapes and `+` (as a space) of a query value; `None` when it is not UTF-8 or an
/// escape is malformed.
pub fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `rooms`: every room with its members (the connected ones: wsu's presence) and message count.
#[ws_event(namespace = "/admin", name = "rooms")]
pub async fn rooms(server: Server, State(presence): State<Presence>, _: ()) -> Vec<RoomInfo> {
    presence.lock().rooms_info(|room| members(&server, room))
}

/// `users`: every user with a nickname, with its rooms; users whose connection dropped are
/// listed until their session expires (they may resume it).
#[ws_event(namespace = "/admin", name = "users")]
pub async fn users(State(presence): State<Presence>, _: ()) -> Vec<UserInfo> {
    presence.lock().users_info()
}

/// `announce`: an `announcement` event to everyone connected (namespace `/`, command-line seed
/// clients included), or to one room. The ack counts the recipients.
#[ws_event(namespace = "/admin", name = "announce")]
pub async fn announce(
    server: Server,
    State(presence): State<Presence>,
    req: Announce,
) -> Result<Announced, ChatError> {
    let text = normalize_text(&req.text, ANNOUNCEMENT_MAX_CHARS)?;
    let room = req.room.as_deref().map(normalize_room).transpose()?;
    let reg = presence.lock();
    let to = match &room {
        Some(room) if !reg.has_room(room) => return Err(ChatError::NoSuchRoom),
        Some(room) => server.to(room),
        None => server.of("/"),
    };
    let delivery = to.emit(
        "announcement",
        &Announcement {
            text,
            room,
            ts: now_ms(),
        },
    )?;
    Ok(Announced {
        delivered: delivery.queued,
    })
}

/// `kick`: remove a user from its rooms (they see a `kick` notice) and close its connection
/// with [`KICKED`] and the reason (a user whose connection is down cannot resume its session).
#[ws_event(namespace = "/admin", name = "kick")]
pub async fn kick(
    server: Server,
    State(presence): State<Presence>,
    req: Kick,
) -> Result<Kicked, ChatError> {
    let mut reg = presence.lock();
    let id = reg.find_nick(&req.nick).ok_or(ChatError::NoSuchUser)?;
    let departure = reg.remove(id).ok_or(ChatError::NoSuchUser)?;
    let kicked = Kicked {
        nick: departure.nick.clone(),
        rooms: departure.rooms.clone(),
    };
    if let Some(socket) = server.socket(id) {
        for room in &kicked.rooms {
            socket.leave(room);
        }
        let reason = match req.reason.as_deref().map(str::trim) {
            Some(reason) if !reason.is_empty() => format!("kicked by an admin: {reason}"),
            _ => "kicked by an admin".to_owned(),
        };
        // wsu truncates the reason to the 123 bytes a close frame can carry.
        socket.close_with(KICKED, &reason);
    }
    tell_rooms(&server, id, departure, NoticeKind::Kick)?;
    Ok(kicked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let auth = AdminAuth::new(Some("s3cret".to_owned()));
        assert_eq!(auth.check(Some("s3cret")), Ok(()));
        assert_eq!(auth.check(Some("s3cre")), Err("invalid admin token"));
        assert_eq!(auth.check(None), Err("admin token required"));
        let off = AdminAuth::new(Some(String::new()));
        assert_eq!(
            off.check(Some("")),
            Err("the admin namespace is disabled (no CHAT_ADMIN_TOKEN)")
        );
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            percent_decode("a%20b+c%2F%C3%A9").as_deref(),
            Some("a b c/é")
        );
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
