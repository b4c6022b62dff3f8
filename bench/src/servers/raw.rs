//! The raw reference: a minimal tokio-tungstenite server built the efficient way, speaking the
//! subset of wsu's protocol the benchmark uses (`join`, `leave`, `ping`, events `pub` and `echo`
//! with acks). It is the limit wsu is compared with:
//!
//! - one task per connection owning the stream, `select!` over reading, a bounded outbox, the
//!   ping interval and the read deadline (no `split`, no second task);
//! - everything queued is `feed`-ed, then one `flush` (at most [`MAX_BATCH`] frames per flush);
//! - a broadcast is serialized once and shared (`Utf8Bytes` clones are reference counts) with a
//!   cached snapshot of the room, so the registry lock is never held while sending;
//! - 4 KiB read buffer, bounded write buffer, `TCP_NODELAY`;
//! - a full outbox closes the connection with 4001 (wsu's default slow-consumer policy).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::settings::{Heartbeat, MAX_BATCH, OUTBOX, READ_BUFFER};

/// What other tasks hold of a connection.
struct Peer {
    id: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    /// Raised when the outbox overflowed.
    kill: Notify,
}

#[derive(Default)]
struct Room {
    members: HashMap<u64, Arc<Peer>>,
    snapshot: Option<Arc<[Arc<Peer>]>>,
}

#[derive(Default)]
struct Registry {
    rooms: Mutex<HashMap<Box<str>, Room>>,
    next_id: AtomicU64,
}

impl Registry {
    fn join(&self, room: &str, peer: &Arc<Peer>) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let r = rooms.entry(room.into()).or_default();
        if r.members.insert(peer.id, peer.clone()).is_none() {
            r.snapshot = None;
        }
    }

    fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = rooms.get_mut(room) {
            if r.members.remove(&id).is_some() {
                r.snapshot = None;
            }
            if r.members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    fn recipients(&self, room: &str) -> Option<Arc<[Arc<Peer>]>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let r = rooms.get_mut(room)?;
        Some(
            r.snapshot
                .get_or_insert_with(|| r.members.values().cloned().collect())
                .clone(),
        )
    }

    /// Serialize once, queue to every member (never under the lock).
    fn broadcast(&self, room: &str, frame: Utf8Bytes) {
        let Some(peers) = self.recipients(room) else {
            return;
        };
        for p in peers.iter() {
            if let Err(mpsc::error::TrySendError::Full(_)) = p.tx.try_send(frame.clone()) {
                p.kill.notify_one();
            }
        }
    }
}

/// The incoming envelope, borrowed from the frame.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    event: Option<&'a str>,
    #[serde(borrow, default)]
    room: Option<&'a str>,
    #[serde(rename = "ackId", borrow, default)]
    ack_id: Option<&'a str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Publish<'a> {
    #[serde(borrow)]
    room: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

pub(crate) async fn serve(port: u16, hb: Heartbeat) -> std::io::Result<()> {
    let listener = super::bind(port).await?;
    let registry = Arc::new(Registry::default());
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            connection(tcp, registry, hb).await;
        });
    }
}

async fn connection(tcp: TcpStream, registry: Arc<Registry>, hb: Heartbeat) {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(32 * 1024)
        .max_write_buffer_size(8 * 1024 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(OUTBOX);
    let peer = Arc::new(Peer {
        id: registry.next_id.fetch_add(1, Ordering::Relaxed),
        tx,
        kill: Notify::new(),
    });
    let mut rooms: Vec<Box<str>> = Vec::new();
    let timeout = hb.interval + hb.timeout;
    let mut ping = tokio::time::interval_at(Instant::now() + hb.interval, hb.interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let deadline = tokio::time::sleep_until(last_seen + timeout);
    tokio::pin!(deadline);
    let mut close: Option<(u16, &'static str)> = None;
    loop {
        let mut dirty = false;
        let ok = tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(msg)) => {
                    last_seen = Instant::now();
                    let mut ok = true;
                    let mut next = Some(msg);
                    // Handle what is already buffered too, so pipelined requests share a flush.
                    let mut n = 0;
                    while let Some(msg) = next.take() {
                        match msg {
                            Message::Text(t) => {
                                if let Some(reply) = handle(t.as_bytes(), &registry, &peer, &mut rooms) {
                                    dirty = true;
                                    ok &= ws.feed(Message::Text(reply)).await.is_ok();
                                }
                            }
                            Message::Ping(_) => dirty = true,
                            Message::Close(_) => ok = false,
                            _ => {}
                        }
                        n += 1;
                        if ok && n < MAX_BATCH {
                            use futures_util::FutureExt;
                            if let Some(Some(Ok(m))) = ws.next().now_or_never() {
                                next = Some(m);
                            }
                        }
                    }
                    ok
                }
                _ => false,
            },
            Some(frame) = rx.recv() => {
                let mut ok = ws.feed(Message::Text(frame)).await.is_ok();
                let mut n = 1;
                while ok && n < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(f) => ok = ws.feed(Message::Text(f)).await.is_ok(),
                        Err(_) => break,
                    }
                    n += 1;
                }
                dirty = true;
                ok
            }
            _ = ping.tick() => {
                dirty = true;
                ws.feed(Message::Ping(Default::default())).await.is_ok()
            }
            () = &mut deadline => {
                if Instant::now() >= last_seen + timeout {
                    close = Some((4000, "heartbeat timeout"));
                    false
                } else {
                    deadline.as_mut().reset(last_seen + timeout);
                    true
                }
            }
            () = peer.kill.notified() => {
                close = Some((4001, "outbound queue full"));
                false
            }
        };
        if !ok {
            break;
        }
        if dirty && ws.flush().await.is_err() {
            break;
        }
    }
    for room in &rooms {
        registry.leave(room, peer.id);
    }
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        };
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), ws.close(Some(frame))).await;
    }
}

/// Handle one message; the reply to send, if any.
fn handle(
    bytes: &[u8],
    registry: &Registry,
    peer: &Arc<Peer>,
    rooms: &mut Vec<Box<str>>,
) -> Option<Utf8Bytes> {
    let msg: Incoming<'_> = serde_json::from_slice(bytes).ok()?;
    match msg.kind {
        "join" => {
            let room = msg.room?;
            if !rooms.iter().any(|r| &**r == room) {
                rooms.push(room.into());
                registry.join(room, peer);
            }
            msg.ack_id.map(|id| ack(None, id, None))
        }
        "leave" => {
            let room = msg.room?;
            if let Some(i) = rooms.iter().position(|r| &**r == room) {
                rooms.swap_remove(i);
                registry.leave(room, peer.id);
            }
            msg.ack_id.map(|id| ack(None, id, None))
        }
        "ping" => Some(Utf8Bytes::from_static(r#"{"type":"pong","namespace":"/"}"#)),
        "event" => match msg.event? {
            "pub" => {
                let p: Publish<'_> = serde_json::from_str(msg.data?.get()).ok()?;
                let mut out = String::with_capacity(48 + p.data.get().len());
                out.push_str(r#"{"type":"event","namespace":"/","event":"msg","data":"#);
                out.push_str(p.data.get());
                out.push('}');
                registry.broadcast(p.room, Utf8Bytes::from(out));
                None
            }
            "echo" => msg.ack_id.map(|id| ack(Some("echo"), id, msg.data)),
            _ => None,
        },
        _ => None,
    }
}

/// An `ack` envelope in wsu's key order (ids and names here are plain, unescaped).
fn ack(event: Option<&str>, id: &str, data: Option<&RawValue>) -> Utf8Bytes {
    let mut out = String::with_capacity(64 + data.map_or(0, |d| d.get().len()));
    out.push_str(r#"{"type":"ack","namespace":"/""#);
    if let Some(e) = event {
        out.push_str(r#","event":""#);
        out.push_str(e);
        out.push('"');
    }
    if let Some(d) = data {
        out.push_str(r#","data":"#);
        out.push_str(d.get());
    }
    out.push_str(r#","ackId":""#);
    out.push_str(id);
    out.push_str("\"}");
    Utf8Bytes::from(out)
}
