//! What a node does, on its own connections, for a cluster message: deliver a broadcast,
//! answer a query, apply a remote operation, run its part of a broadcast with ack.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::wire::{Filter, Op, Res, WireAck, WireSocket};
use crate::server::{Broadcast, Server};
use crate::{AckError, CloseCode, Socket};

/// The local part of a cluster broadcast, as a [`Broadcast`] that never publishes.
pub(crate) fn broadcast_of(server: &Server, filter: &Filter) -> Broadcast {
    let mut b = server.of(&filter.ns).local();
    for r in &filter.rooms {
        b = b.to(r);
    }
    for id in filter
        .except
        .iter()
        .filter_map(|s| crate::SocketId::parse(s))
    {
        b = b.except(id);
    }
    for r in &filter.except_rooms {
        b = b.except_room(r);
    }
    if !filter.only.is_empty() {
        let ids: Vec<crate::SocketId> = filter
            .only
            .iter()
            .filter_map(|s| crate::SocketId::parse(s))
            .collect();
        if ids.is_empty() {
            // Only connections that cannot exist here: select none.
            b = b.socket(crate::SocketId::NONE);
        }
        for id in ids {
            b = b.socket(id);
        }
    }
    b
}

/// Deliver a broadcast from another node: its body is the client frame, sent as-is.
pub(crate) fn deliver(server: &Server, filter: &Filter, body: Bytes) {
    match Utf8Bytes::try_from(body) {
        Ok(frame) => {
            broadcast_of(server, filter).send_frame(frame);
        }
        Err(_) => tracing::debug!("cluster broadcast with a non-UTF-8 frame dropped"),
    }
}

/// Deliver a stream entry (a broadcast with its position) to the local connections the filter
/// selects, numbered by the engine.
pub(crate) fn deliver_entry(server: &Server, filter: &Filter, body: Bytes, pos: &super::StreamPos) {
    match Utf8Bytes::try_from(body) {
        Ok(frame) => {
            broadcast_of(server, filter).send_frame_at(frame, pos);
        }
        Err(_) => tracing::debug!("cluster stream entry with a non-UTF-8 frame dropped"),
    }
}

/// A recorded entry's filter, from the wire form.
pub(crate) fn entry_filter(filter: &Filter) -> crate::session::history::EntryFilter {
    let ids = |v: &[String]| v.iter().filter_map(|s| crate::SocketId::parse(s)).collect();
    let mut only: Vec<crate::SocketId> = ids(&filter.only);
    if !filter.only.is_empty() && only.is_empty() {
        only.push(crate::SocketId::NONE);
    }
    crate::session::history::EntryFilter {
        rooms: filter
            .rooms
            .iter()
            .map(|r| std::sync::Arc::from(r.as_str()))
            .collect(),
        except: ids(&filter.except),
        except_rooms: filter
            .except_rooms
            .iter()
            .map(|r| std::sync::Arc::from(r.as_str()))
            .collect(),
        only,
    }
}

/// The local connections a filter selects.
pub(crate) fn select(server: &Server, filter: &Filter) -> Vec<Socket> {
    broadcast_of(server, filter).local_sockets()
}

/// Answer a query or apply an operation (all but broadcast acks) on local connections.
pub(crate) fn answer(server: &Server, filter: &Filter, op: &Op) -> Res {
    match op {
        Op::Sockets => Res::Sockets {
            sockets: select(server, filter)
                .iter()
                .map(|s| WireSocket {
                    id: s.id().to_string(),
                    rooms: s.rooms(),
                })
                .collect(),
        },
        Op::Rooms => Res::Rooms {
            rooms: server.local_rooms(&filter.ns),
        },
        Op::Disconnect => {
            let sockets = select(server, filter);
            for s in &sockets {
                s.close_with(CloseCode::NORMAL, "disconnected by the server");
            }
            Res::Count { n: sockets.len() }
        }
        Op::Join { room } => Res::Count {
            n: select(server, filter)
                .iter()
                .filter(|s| s.join(room).is_ok())
                .count(),
        },
        Op::Leave { room } => Res::Count {
            n: select(server, filter)
                .iter()
                .filter(|s| s.leave(room))
                .count(),
        },
        Op::BroadcastAck { .. } => Res::Count { n: 0 },
    }
}

/// Send `event` with an ack to each selected local connection: how many, and the answers
/// (all of them, when in or timed out).
pub(crate) fn ack_broadcast(
    server: &Server,
    filter: &Filter,
    event: &str,
    data: &RawValue,
    timeout: Duration,
) -> (usize, impl Future<Output = Vec<WireAck>> + Send + 'static) {
    let sockets = select(server, filter);
    let n = sockets.len();
    let event = event.to_owned();
    let data: Box<RawValue> = data.to_owned();
    let answers = async move {
        let futs = sockets.iter().map(|s| {
            let (event, data) = (&event, &data);
            async move {
                let r = s
                    .emit_with_ack_timeout::<RawValue, Box<RawValue>>(event, data, timeout)
                    .await;
                to_wire(s.id().to_string(), r)
            }
        });
        futures_util::future::join_all(futs).await
    };
    (n, answers)
}

fn to_wire(id: String, r: Result<Box<RawValue>, AckError>) -> WireAck {
    let mut a = WireAck {
        id,
        ok: None,
        err: None,
        err_data: None,
    };
    match r {
        Ok(v) => a.ok = Some(v.get().to_owned()),
        Err(AckError::Timeout) => a.err = Some("timeout".into()),
        Err(AckError::Closed) => a.err = Some("closed".into()),
        Err(AckError::Rejected(e)) => {
            a.err_data = e.data().map(|d| d.get().to_owned());
            a.err = Some(format!("rejected:{}", e.message()));
        }
        Err(e) => a.err = Some(format!("failed:{e}")),
    }
    a
}

/// The caller's view of one wire answer.
pub(crate) fn from_wire(a: WireAck) -> (Option<crate::SocketId>, Result<Box<RawValue>, AckError>) {
    let id = crate::SocketId::parse(&a.id);
    let raw = |s: String| RawValue::from_string(s).ok();
    let r = match (a.ok.and_then(raw), a.err.as_deref()) {
        (Some(v), None) => Ok(v),
        (_, Some("timeout")) => Err(AckError::Timeout),
        (_, Some("closed")) => Err(AckError::Closed),
        (_, Some(e)) => {
            let msg = e.strip_prefix("rejected:").unwrap_or(e).to_owned();
            let mut he = crate::HandlerError::new(msg);
            if let Some(d) = a.err_data.and_then(raw) {
                he = he.with_data(&*d);
            }
            Err(AckError::Rejected(he))
        }
        (None, None) => Ok(RawValue::NULL.to_owned()),
    };
    (id, r)
}
