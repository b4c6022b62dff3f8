//! The `dispatcher` fuzz target: arbitrary sequences of client frames, completions of running
//! requests, drains of the outbound queue, server acks and clock steps, driven into one
//! connection's protocol [`Machine`] (no socket). Only with the `__fuzzing` feature.
//!
//! Invariants checked after every step and at the end:
//! - every request the driver sent with an `ackId` is answered at most once, and, once the
//!   running requests have settled, exactly once unless the machine closed the connection;
//! - the outbound queue's byte count equals the bytes of the frames it holds (no gauge ever goes
//!   negative: an underflow panics in the fuzz build), and after the connection is torn down
//!   every gauge of the server is back to zero;
//! - no panic escapes (handlers that panic on purpose are contained by the machine).

use std::collections::HashMap;
use std::sync::Once;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, http};

use super::ConnShared;
use super::machine::Machine;
use super::outbox::frame_len;
use crate::{Json, RateLimitPolicy, Server, Socket};

/// Panics raised on purpose by the target's handlers carry this text; they are contained by the
/// machine, and the panic hook installed here keeps them from aborting the fuzzer.
const INTENTIONAL: &str = "wsu-fuzz-intentional-panic";

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = crate::sync::panic_message(info.payload());
            if !msg.contains(INTENTIONAL) {
                previous(info);
            }
        }));
    });
}

/// A handler future that is pending once, then ready.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Bytes of the input, read as choices; zeros once exhausted.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

fn server(input: &mut Input<'_>) -> Server {
    let mut b = Server::builder()
        .max_pending_requests(usize::from(input.byte() % 6) + 1)
        .max_invalid_messages(u32::from(input.byte() % 12), Duration::from_secs(1))
        .max_queued(usize::from(input.byte() % 16) + 1, 2048)
        .max_rooms_per_connection(3)
        .max_namespaces_per_connection(2)
        .namespace("/ns", |ns| ns)
        .namespace("/hooked", |ns| {
            ns.on_connect(|s: Socket| async move {
                if s.query("never").is_some() {
                    return Err("refused");
                }
                Ok(())
            })
            .on_disconnect(|_s: Socket, _r| async {})
        })
        .on("echo", |_s: Socket, d: Value| async move { Json(d) })
        .on("slow", |_s: Socket, d: Value| async move {
            YieldOnce(false).await;
            Json(d)
        })
        .on("emit", |s: Socket, d: Value| async move {
            let _ = s.emit("x", &d);
            YieldOnce(false).await;
            let _ = s.emit("y", &d);
        })
        .on(
            "enter",
            |s: Socket, room: String| async move { s.join(&room) },
        )
        .on(
            "sync_boom",
            |_s: Socket, _d: Value| -> std::future::Ready<()> { panic!("{INTENTIONAL}") },
        )
        .on("async_boom", |_s: Socket, _d: Value| async move {
            YieldOnce(false).await;
            if true {
                panic!("{INTENTIONAL}");
            }
        })
        .on("fail", |_s: Socket, _d: Value| async move {
            Err::<(), _>("failed on purpose")
        });
    match input.byte() % 3 {
        0 => {}
        1 => b = b.rate_limit(1000.0, f64::from(input.byte() % 8)),
        _ => {
            b = b
                .rate_limit(1000.0, f64::from(input.byte() % 8))
                .rate_limit_policy(RateLimitPolicy::Reject);
        }
    }
    b.build().expect("the fuzz server builds")
}

fn frame(input: &mut Input<'_>, next_id: &mut u64, tracked: &mut HashMap<String, u32>) -> String {
    let kind = input.pick(&[
        "event", "event", "event", "join", "leave", "ping", "ack", "error", "pong", "bogus",
    ]);
    let mut m = serde_json::Map::new();
    m.insert("type".into(), json!(kind));
    if let Some(ns) = input.pick(&[None, Some("/"), Some("/ns"), Some("/hooked"), Some("/nope")]) {
        m.insert("namespace".into(), json!(ns));
    }
    if let Some(ev) = input.pick(&[
        None,
        Some("echo"),
        Some("slow"),
        Some("emit"),
        Some("enter"),
        Some("sync_boom"),
        Some("async_boom"),
        Some("fail"),
        Some("missing"),
    ]) {
        m.insert("event".into(), json!(ev));
    }
    if let Some(room) = input.pick(&[None, None, Some("a"), Some("b"), Some("c"), Some("d")]) {
        m.insert("room".into(), json!(room));
    }
    match input.byte() % 4 {
        0 => {}
        1 => {
            m.insert("ackId".into(), json!(""));
        }
        _ => {
            *next_id += 1;
            let id = format!("fz{next_id}");
            // Requests with a valid ackId must be answered exactly once.
            if matches!(kind, "event" | "join" | "leave") {
                tracked.insert(id.clone(), 0);
            }
            m.insert("ackId".into(), json!(id));
        }
    }
    let data = match input.byte() % 5 {
        0 => None,
        1 => Some(json!(1)),
        2 => Some(json!("a")),
        3 => Some(json!({"k": [1, 2]})),
        _ => Some(Value::Null),
    };
    if let Some(d) = data {
        m.insert("data".into(), d);
    }
    Value::Object(m).to_string()
}

/// Take what the machine queued for the socket, counting the answers to tracked requests.
fn drain(conn: &ConnShared, tracked: &mut HashMap<String, u32>, max: usize) {
    for _ in 0..max {
        let Some(msg) = conn.outbox.pop() else { break };
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(text.as_str()).expect("the server sends JSON");
        if !matches!(v["type"].as_str(), Some("ack" | "error")) {
            continue;
        }
        if let Some(count) = v["ackId"].as_str().and_then(|id| tracked.get_mut(id)) {
            *count += 1;
            assert!(*count <= 1, "a request was answered twice: {v}");
        }
    }
}

/// The target: see the module docs.
pub fn dispatcher(data: &[u8]) {
    install_panic_hook();
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    });
    let _entered = rt.enter();
    let mut input = Input { data };
    let server = server(&mut input);
    let slot = server.reserve_slot().expect("a slot");
    let (parts, ()) = http::Request::new(()).into_parts();
    let conn = ConnShared::new(server.next_id(), server.config(), parts, None);
    server.register_connection(&conn);
    let mut now = Instant::now();
    let mut machine = Machine::new(server.clone(), conn.clone(), now);
    let mut cx = Context::from_waker(Waker::noop());
    let mut tracked = HashMap::new();
    let mut next_id = 0;
    let mut closed = machine.connect(&mut cx).is_err();
    let mut acks = Vec::new();

    while !closed && !input.is_empty() {
        let step = match input.byte() % 8 {
            0..=2 => {
                let text = frame(&mut input, &mut next_id, &mut tracked);
                machine.on_frame(text.as_bytes(), Some(&text), now, &mut cx)
            }
            3 => {
                // Raw bytes as a text or binary frame (never naming a tracked id).
                let binary = input.byte() % 2 == 0;
                let len = usize::from(input.byte());
                let raw = input.bytes(len).to_vec();
                if raw.windows(2).any(|w| w == b"fz") {
                    Ok(())
                } else if binary {
                    machine.on_frame(&raw, None, now, &mut cx)
                } else {
                    match std::str::from_utf8(&raw) {
                        Ok(text) => machine.on_frame(text.as_bytes(), Some(text), now, &mut cx),
                        Err(_) => Ok(()),
                    }
                }
            }
            4 => match machine.poll_running(&mut cx) {
                Poll::Ready(step) => step,
                Poll::Pending => Ok(()),
            },
            5 => {
                drain(&conn, &mut tracked, usize::from(input.byte() % 8));
                let _ = machine.read_gate();
                Ok(())
            }
            6 => {
                // A server→client ack, answered (or not) by a later frame.
                if let Ok((id, rx)) = conn.register_ack(4) {
                    acks.push(rx);
                    let answer =
                        json!({"type": input.pick(&["ack", "error"]), "ackId": id.to_string()});
                    let text = answer.to_string();
                    machine.on_frame(text.as_bytes(), Some(&text), now, &mut cx)
                } else {
                    Ok(())
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(input.byte()) * 10);
                Ok(())
            }
        };
        closed = step.is_err();
        assert_eq!(
            conn.outbox.bytes(),
            queued_bytes(&conn),
            "outbound byte count"
        );
    }
    if !closed {
        // Let everything running finish: then every tracked request has its answer.
        for _ in 0..100_000 {
            if !machine.is_running() {
                break;
            }
            if let Poll::Ready(step) = machine.poll_running(&mut cx) {
                if step.is_err() {
                    closed = true;
                    break;
                }
            }
        }
        assert!(closed || !machine.is_running(), "a request never finished");
    }
    drain(&conn, &mut tracked, usize::MAX);
    if !closed {
        for (id, count) in &tracked {
            assert_eq!(*count, 1, "request {id} was not answered");
        }
    }
    // Tear down as the connection task's guard does.
    machine.stop();
    drop(machine);
    let memberships = conn.mark_closed();
    server.unregister_connection(&conn);
    for m in memberships {
        server.release_namespace(&m.ns);
    }
    drop(slot);
    drop(acks);
    let stats = server.stats();
    assert_eq!(
        (
            stats.connections,
            stats.rooms,
            stats.pending_acks,
            stats.queued_bytes,
            stats.dynamic_namespaces
        ),
        (0, 0, 0, 0, 0),
        "gauges after the connection ended"
    );
    assert!(server.sockets().is_empty());
}

/// What the outbound queue holds, frame by frame (drains and restores it).
fn queued_bytes(conn: &ConnShared) -> usize {
    let mut frames = Vec::new();
    while let Some(m) = conn.outbox.pop() {
        frames.push(m);
    }
    let total = frames.iter().map(frame_len).sum();
    for m in frames {
        conn.outbox.push(m);
    }
    total
}
