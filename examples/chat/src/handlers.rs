//! The handlers of namespace `/`: the seed's `chat` event, nicknames, rooms, messages, typing,
//! and the connect and disconnect hooks. Each is an `async fn` with `#[ws_event]`, a typed
//! payload, and its return value as the ack.
//!
//! Member lists are wsu's presence: choosing a nickname sets the connection's presence
//! identity ([`Socket::set_presence`], key = the nickname, meta `{"nick": ...}`), and wsu sends
//! every room's members its `presence` frames (the state to a joiner, joins and leaves to the
//! others, renames included). The chat itself only sends its `notice` lines.
//!
//! Sessions outlive a dropped connection (wsu's recovery, see [`crate::presence`] for how the
//! registry follows): [`gone`] detaches the user instead of removing it when the session may
//! resume, and [`hello`] takes it back when it does.
//!
//! In a cluster (see [`build_with_engine`](crate::build_with_engine)) the registry and wsu's
//! presence are per node, so the join/leave/nick notices are sent to this node's connections
//! only (`.local()`), while messages and typing are room broadcasts that reach every node.

use serde_json::json;
use serde_json::value::RawValue;
use std::time::{Duration, Instant};

use wsu::{
    CloseCode, DisconnectReason, HandlerError, Server, Socket, State, Typed, ws_connect,
    ws_disconnect, ws_event,
};

use crate::error::ChatError;
use crate::presence::{Departure, NickChange, Presence, Reattach, now_ms};
use crate::protocol::{
    ChatMessage, Joined, Left, NickAck, Notice, NoticeKind, RoomRef, SeedError, SendMessage, Sent,
    SetNick, Status, Typing,
};

/// Close code sent to a connection whose nickname was taken over by a newer session (with its
/// resume key). In `4500..=4999`, so the client does not reconnect (it would take it back).
pub const SESSION_REPLACED: CloseCode = CloseCode::new(4509);

/// The seed example's `chat` handler: broadcast to everyone else in `/` and ack
/// `{"status":"ok"}`. A payload that does not decode is answered as the seed did, with an
/// application `error` event `{"error":"invalid payload"}`, followed by wsu's `error` answer
/// (with the `ackId`, if any, so that the request still gets exactly one answer).
///
/// The payload is checked as a [`ChatMessage`] but relayed as the client sent it, byte for
/// byte ([`Typed`]): fields the server does not know, numbers of any size, key order and spacing
/// reach the other clients unchanged. (The seed re-encoded the decoded `{user, message}`, which
/// gives the same bytes for its own client's compact `{"user":..,"message":..}`.)
///
/// It takes the raw JSON (as the seed's `Event.Data`) and decodes it itself instead of taking a
/// `Typed<ChatMessage>` payload, because wsu answers a typed payload that does not decode by
/// itself, before the handler could send the seed's `error` event.
#[ws_event(namespace = "/", name = "chat")]
pub async fn chat(socket: Socket, data: Box<RawValue>) -> Result<Status, HandlerError> {
    let msg = match Typed::<ChatMessage>::from_raw(data) {
        Ok(msg) => msg,
        Err(e) => {
            let seed_error = SeedError {
                error: "invalid payload".to_owned(),
            };
            socket
                .emit("error", &seed_error)
                .map_err(|e| HandlerError::new(e.to_string()))?;
            return Err(HandlerError::new(format!("invalid payload: {e}")));
        }
    };
    socket
        .broadcast()
        .emit("chat", &msg)
        .map_err(|e| HandlerError::new(e.to_string()))?;
    Ok(Status {
        status: "ok".to_owned(),
    })
}

/// The connect hook of `/`. A connection that resumed a session ([`Socket::recovered`]) gets
/// its user back: the registry marks it attached again and its presence identity is set again
/// (wsu keeps the rooms of a session, not its identity), before wsu restores its rooms. A
/// session the chat ended while it was detached (a kick, a nickname taken over) is refused.
#[ws_connect]
pub async fn hello(socket: Socket, State(presence): State<Presence>) -> Result<(), String> {
    if !socket.recovered() {
        return Ok(());
    }
    match presence.lock().reattach(*socket.id()) {
        Reattach::User(nick) => set_identity(&socket, &nick).map_err(|e| e.to_string()),
        Reattach::Nobody => Ok(()),
        Reattach::Ended => Err("your session was ended while you were away".to_owned()),
    }
}

/// The presence identity of a connection with nickname `nick`: key `nick`, meta `{"nick": nick}`.
fn set_identity(socket: &Socket, nick: &str) -> Result<(), wsu::SendError> {
    socket.set_presence(nick, &json!({ "nick": nick }))
}

/// `nick`: choose or change the nickname (and with it the presence identity: the user's rooms
/// see the change in their member lists). A rename is announced to the user's rooms; a resume
/// (see [`SetNick::resume`]) moves the rooms from the stale connection to this one and closes
/// the stale one with [`SESSION_REPLACED`], without notices (nobody left).
///
/// Reconnections do not need the resume key any more: wsu resumes the session itself (same id,
/// same rooms, same nickname). It remains for a *new* session (a reloaded page, a resume wsu
/// refused) whose nickname is still held by the old one, open or detached.
#[ws_event(name = "nick")]
pub async fn nick(
    socket: Socket,
    server: Server,
    State(presence): State<Presence>,
    req: SetNick,
) -> Result<NickAck, ChatError> {
    let mut reg = presence.lock();
    let result = reg.set_nick(*socket.id(), &req.nick, req.resume.as_deref(), now_ms())?;
    match &result.change {
        NickChange::Unchanged => {}
        NickChange::Claimed => set_identity(&socket, &result.ack.nick)?,
        NickChange::Renamed { from, rooms } => {
            set_identity(&socket, &result.ack.nick)?;
            for room in rooms {
                let notice = Notice {
                    room: room.clone(),
                    kind: NoticeKind::Nick,
                    nick: result.ack.nick.clone(),
                    from: Some(from.clone()),
                    ts: now_ms(),
                };
                socket.to(room).local().emit("notice", &notice)?;
            }
        }
        NickChange::Resumed { from, rooms } => {
            set_identity(&socket, &result.ack.nick)?;
            let stale = server.socket(*from);
            for room in rooms {
                if let Some(stale) = &stale {
                    stale.leave(room);
                }
                socket.join(room)?;
            }
            if let Some(stale) = stale {
                stale.close_with(
                    SESSION_REPLACED,
                    "your nickname was resumed by a new session",
                );
            }
        }
    }
    Ok(result.ack)
}

/// The nicknames in a room, from wsu's presence (connections with a nickname, on this node),
/// sorted ignoring case.
pub fn members(server: &Server, room: &str) -> Vec<String> {
    let mut nicks: Vec<String> = server
        .presence("/", room)
        .into_iter()
        .filter(|(_, conns)| conns.iter().any(|c| c.meta.get("nick").is_some()))
        .map(|(nick, _)| nick)
        .collect();
    nicks.sort_by_cached_key(|n| (n.to_lowercase(), n.clone()));
    nicks
}

/// `room:join`: join (or create) a room. The ack carries the member list and the latest
/// messages; the other members get a `join` notice (and wsu's presence frames).
#[ws_event(name = "room:join")]
pub async fn room_join(
    socket: Socket,
    State(presence): State<Presence>,
    req: RoomRef,
) -> Result<Joined, ChatError> {
    let mut reg = presence.lock();
    let result = reg.join(*socket.id(), &req.room)?;
    let room = result.room;
    if let Err(e) = socket.join(&room) {
        // Undo: the registry must match the connection's rooms.
        reg.leave(*socket.id(), &room)?;
        return Err(e.into());
    }
    if result.new {
        let notice = Notice {
            room: room.clone(),
            kind: NoticeKind::Join,
            nick: result.nick.clone(),
            from: None,
            ts: now_ms(),
        };
        socket.to(&room).local().emit("notice", &notice)?;
    }
    Ok(Joined {
        members: members(socket.server(), &room),
        room,
        history: result.history,
    })
}

/// `room:leave`: leave a room (deleted with its history when empty); the others are told.
#[ws_event(name = "room:leave")]
pub async fn room_leave(
    socket: Socket,
    State(presence): State<Presence>,
    req: RoomRef,
) -> Result<Left, ChatError> {
    let mut reg = presence.lock();
    let left = reg.leave(*socket.id(), &req.room)?;
    socket.leave(&left.room);
    notice_departure(
        &socket.server().to(&left.room).local(),
        &left.room,
        NoticeKind::Leave,
        &left.nick,
    )?;
    Ok(Left { room: left.room })
}

/// `message`: post to a room one is in. The ack is the server's id and time; the other members
/// receive the message (replayed by wsu to those who resume after missing it). A repeated
/// `cid` is acked again without posting twice.
#[ws_event(name = "message")]
pub async fn message(
    socket: Socket,
    State(presence): State<Presence>,
    req: SendMessage,
) -> Result<Sent, ChatError> {
    let mut reg = presence.lock();
    let posted = reg.post(*socket.id(), &req.room, &req.text, req.cid, now_ms())?;
    let m = posted.message;
    if !posted.duplicate {
        // A room broadcast: it reaches the room's members on every node of a cluster (every
        // member is in the wsu room of the same name, see `room_join`).
        socket.to(&m.room).emit("message", &m)?;
    }
    Ok(Sent { id: m.id, ts: m.ts })
}

/// `typing`: volatile. Relayed to the room's other members at most once per
/// [`Limits::typing_interval`](crate::Limits::typing_interval) (a `false` right away), never
/// stored (nor replayed to resumed sessions), never acked with data, and silently dropped when
/// the sender is not in the room.
#[ws_event(name = "typing")]
pub async fn typing(socket: Socket, State(presence): State<Presence>, req: Typing) {
    let mut reg = presence.lock();
    if let Some(update) = reg.typing(*socket.id(), &req.room, req.typing, Instant::now()) {
        // Volatile: a relay that cannot be queued is not worth an error.
        let _dropped = socket.to(&update.room).volatile().emit("typing", &update);
    }
}

/// Extra time before a detached user is removed, past the session TTL: wsu refuses a resume
/// once the TTL is over, so a session never resumes after its user was removed.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);

/// When a connection ends. If its session ended too (a close frame from the client, a close by
/// the chat), its nickname is freed and its rooms are told. If wsu keeps the session for a
/// resume, the user is only detached, and removed (rooms told) after the session TTL unless it
/// resumed meanwhile ([`hello`]); nothing happens if it has already resumed on a new connection.
#[ws_disconnect(namespace = "/")]
pub async fn gone(socket: Socket, State(presence): State<Presence>, reason: DisconnectReason) {
    let id = *socket.id();
    let server = socket.server().clone();
    let mut reg = presence.lock();
    if reason.session_kept() {
        // Checked under the lock: a resumed connection is registered before its connect hook
        // (which takes the lock to reattach) runs.
        if server.socket(id).is_some() {
            return;
        }
        if let Some(generation) = reg.detach(id) {
            let wait = reg.limits().session_ttl + EXPIRY_MARGIN;
            let presence = presence.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let departure = presence.lock().expire(id, generation);
                if let Some(departure) = departure {
                    let _ = tell_rooms(&server, id, departure, NoticeKind::Leave);
                }
            });
        }
        return;
    }
    if let Some(departure) = reg.remove(id) {
        // The connection is gone: a failed broadcast has nobody to be reported to.
        let _ = tell_rooms(&server, id, departure, NoticeKind::Leave);
    }
}

/// Tell every room of a departed user: a notice of `kind`.
pub(crate) fn tell_rooms(
    server: &Server,
    id: wsu::SocketId,
    departure: Departure,
    kind: NoticeKind,
) -> Result<(), ChatError> {
    for room in &departure.rooms {
        notice_departure(
            &server.to(room).except(id).local(),
            room,
            kind,
            &departure.nick,
        )?;
    }
    Ok(())
}

fn notice_departure(
    to: &wsu::Broadcast,
    room: &str,
    kind: NoticeKind,
    nick: &str,
) -> Result<(), ChatError> {
    let notice = Notice {
        room: room.to_owned(),
        kind,
        nick: nick.to_owned(),
        from: None,
        ts: now_ms(),
    };
    to.emit("notice", &notice)?;
    Ok(())
}
