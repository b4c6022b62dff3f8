//! The handlers of namespace `/`: the seed's `chat` event, nicknames, rooms, messages, typing,
//! and the cleanup when a connection ends. Each is an `async fn` with `#[ws_event]`, a typed
//! payload, and its return value as the ack.
//!
//! In a cluster (see [`build_with_engine`](crate::build_with_engine)) the registry is per node,
//! so what it describes is sent to this node's connections only (`.local()`: member lists and
//! the join/leave/nick notices), while messages and typing are room broadcasts that reach every
//! node.

use serde_json::value::RawValue;
use std::time::Instant;

use wsu::{
    CloseCode, DisconnectReason, HandlerError, Server, Socket, State, Typed, ws_disconnect,
    ws_event,
};

use crate::error::ChatError;
use crate::presence::{Departure, NickChange, Presence, now_ms};
use crate::protocol::{
    self, ChatMessage, Joined, Left, NickAck, Notice, NoticeKind, RoomRef, SeedError, SendMessage,
    Sent, SetNick, Status, Typing,
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

/// `nick`: choose or change the nickname. A rename is announced to the user's rooms; a resume
/// (see [`SetNick::resume`]) moves the rooms from the stale connection to this one and closes
/// the stale one with [`SESSION_REPLACED`], without notices (nobody left).
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
        NickChange::Claimed | NickChange::Unchanged => {}
        NickChange::Renamed { from, rooms } => {
            for room in rooms {
                let notice = Notice {
                    room: room.clone(),
                    kind: NoticeKind::Nick,
                    nick: result.ack.nick.clone(),
                    from: Some(from.clone()),
                    ts: now_ms(),
                };
                socket.to(room).local().emit("notice", &notice)?;
                socket
                    .to(room)
                    .local()
                    .emit("presence", &presence_of(room, &reg))?;
            }
        }
        NickChange::Resumed { from, rooms } => {
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

/// `room:join`: join (or create) a room. The ack carries the member list and the latest
/// messages; the other members get a `join` notice and the new member list.
#[ws_event(name = "room:join")]
pub async fn room_join(
    socket: Socket,
    State(presence): State<Presence>,
    req: RoomRef,
) -> Result<Joined, ChatError> {
    let mut reg = presence.lock();
    let result = reg.join(*socket.id(), &req.room)?;
    let room = &result.joined.room;
    if let Err(e) = socket.join(room) {
        // Undo: the registry must match the connection's rooms.
        reg.leave(*socket.id(), room)?;
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
        socket.to(room).local().emit("notice", &notice)?;
        socket
            .to(room)
            .local()
            .emit("presence", &presence_of(room, &reg))?;
    }
    Ok(result.joined)
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
    if !left.members.is_empty() {
        announce_departure(
            &socket.server().to(&left.room).local(),
            &left.room,
            NoticeKind::Leave,
            &left.nick,
            left.members,
        )?;
    }
    Ok(Left { room: left.room })
}

/// `message`: post to a room one is in. The ack is the server's id and time; the other members
/// receive the message. A repeated `cid` is acked again without posting twice.
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
/// stored, never acked with data, and silently dropped when the sender is not in the room.
#[ws_event(name = "typing")]
pub async fn typing(socket: Socket, State(presence): State<Presence>, req: Typing) {
    let mut reg = presence.lock();
    if let Some(update) = reg.typing(*socket.id(), &req.room, req.typing, Instant::now()) {
        // Volatile: a relay that cannot be queued is not worth an error.
        let _dropped = socket.to(&update.room).emit("typing", &update);
    }
}

/// When a connection ends (or leaves `/`), its nickname is freed and its rooms are told.
#[ws_disconnect(namespace = "/")]
pub async fn gone(socket: Socket, State(presence): State<Presence>, _reason: DisconnectReason) {
    let mut reg = presence.lock();
    if let Some(departure) = reg.remove(*socket.id()) {
        // The connection is gone: a failed broadcast has nobody to be reported to.
        let _ = tell_rooms(socket.server(), *socket.id(), departure, NoticeKind::Leave);
    }
}

/// Tell every room of a departed user: a notice of `kind` and the new member list.
pub(crate) fn tell_rooms(
    server: &Server,
    id: wsu::SocketId,
    departure: Departure,
    kind: NoticeKind,
) -> Result<(), ChatError> {
    for (room, members) in departure.rooms {
        if !members.is_empty() {
            announce_departure(
                &server.to(&room).except(id).local(),
                &room,
                kind,
                &departure.nick,
                members,
            )?;
        }
    }
    Ok(())
}

fn announce_departure(
    to: &wsu::Broadcast,
    room: &str,
    kind: NoticeKind,
    nick: &str,
    members: Vec<String>,
) -> Result<(), ChatError> {
    let notice = Notice {
        room: room.to_owned(),
        kind,
        nick: nick.to_owned(),
        from: None,
        ts: now_ms(),
    };
    to.emit("notice", &notice)?;
    to.emit(
        "presence",
        &protocol::Presence {
            room: room.to_owned(),
            members,
        },
    )?;
    Ok(())
}

fn presence_of(room: &str, reg: &crate::presence::Registry) -> protocol::Presence {
    protocol::Presence {
        room: room.to_owned(),
        members: reg.members(room),
    }
}
