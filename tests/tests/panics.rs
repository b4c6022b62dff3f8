//! Bad user code cannot break the runtime: a handler that panics before its first `.await` or
//! inside its future, a payload whose `Deserialize` panics, a hook that panics and one that never
//! returns. Each time the client gets `internal error` with its `ackId` (or the documented close),
//! the panic is counted, the gauges come back to their baseline, a second client is unaffected,
//! and `shutdown()` returns within its grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use wsu::{Json, Server, ServerBuilder, Socket};
use wsu_tests::{
    Client, Closed, Gauges, TestServer, expect_hello, wait_for_gauges, wait_until, within,
};

/// A payload whose `Deserialize` impl panics on the string "explode".
#[derive(Debug)]
struct Fragile;

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        assert_ne!(s, "explode", "Deserialize panicked on purpose");
        Ok(Fragile)
    }
}

const GRACE: Duration = Duration::from_secs(2);

fn builder() -> ServerBuilder {
    Server::builder()
        .shutdown_timeout(GRACE)
        .hook_timeout(Duration::from_millis(300))
        .on("echo", |_s: Socket, d: Value| async move { Json(d) })
        // Panics in the closure's synchronous part: no future is ever returned.
        .on(
            "sync_boom",
            |_s: Socket, _d: Value| -> std::future::Ready<()> {
                panic!("synchronous part panicked on purpose")
            },
        )
        .on("async_boom", |_s: Socket, _d: Value| async move {
            tokio::task::yield_now().await;
            if true {
                panic!("future panicked on purpose");
            }
        })
        .on("fragile", |_s: Socket, _d: Fragile| async move {})
        .on("join_room", |s: Socket, room: String| async move {
            s.join(&room).map(|()| Json("joined"))
        })
}

/// Shut down, asserting it returns within the grace period (plus scheduling slack).
async fn stop_in_time(server: TestServer) {
    let started = std::time::Instant::now();
    tokio::time::timeout(GRACE + Duration::from_millis(500), server.stop())
        .await
        .expect("shutdown returned within its grace period");
    assert!(started.elapsed() <= GRACE + Duration::from_millis(500));
}

async fn assert_usable(c: &mut Client, tag: &str) {
    c.emit_ack("echo", json!(tag), tag).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "echo", "data": tag, "ackId": tag})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panics_answer_internal_error_and_nothing_leaks() {
    let server = TestServer::start(builder().build().expect("build")).await;
    let baseline = Gauges::of(&server.server);
    let mut c = server.client().await;
    let mut other = server.client().await;
    c.emit_ack("join_room", json!("lobby"), "j").await;
    assert_eq!(c.recv().await["data"], "joined");

    for (event, data, id) in [
        ("sync_boom", json!(1), "s1"),
        ("async_boom", json!(1), "a1"),
        ("fragile", json!("explode"), "f1"),
    ] {
        c.emit_ack(event, data, id).await;
        assert_eq!(
            c.recv().await,
            json!({"type": "error", "namespace": "/", "event": event, "ackId": id, "error": "internal error"}),
            "{event}"
        );
        // The connection stays open and usable, and so does the other one.
        assert_usable(&mut c, &format!("{id}-after")).await;
        assert_usable(&mut other, &format!("{id}-other")).await;
    }
    // Without an ackId a panic is still reported, naming the event.
    c.send(json!({"type": "event", "event": "sync_boom", "data": 1}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "sync_boom", "error": "internal error"})
    );
    // A valid payload of the same fragile type is fine.
    c.emit_ack("fragile", json!("ok"), "f2").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "fragile", "ackId": "f2"})
    );
    let stats = server.server.stats();
    assert_eq!(stats.handler_panics, 4);
    assert_eq!(
        stats.protocol_errors, 0,
        "a panic is not the client's fault"
    );
    assert_eq!(stats.rooms, 1);

    drop(c);
    drop(other);
    wait_for_gauges(&server.server, baseline).await;
    stop_in_time(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_hooks_that_panic_or_hang_close_with_1011_and_leave_nothing() {
    let server = builder()
        .on_connect(|s: Socket| async move {
            match s.query("mode") {
                Some("panic") => panic!("connect hook panicked on purpose"),
                Some("hang") => std::future::pending::<()>().await,
                _ => {}
            }
        })
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let baseline = Gauges::of(&server.server);
    let mut other = server.client().await;
    other.ready().await;

    let mut panicking = server.client_with("/ws?mode=panic", &[]).await;
    assert_eq!(
        panicking.closed().await,
        Closed::Frame(1011, "internal error".to_owned())
    );
    let mut hanging = server.client_with("/ws?mode=hang", &[]).await;
    // Cancelled at the hook deadline (300 ms).
    assert_eq!(
        within(hanging.closed()).await,
        Closed::Frame(1011, "internal error".to_owned())
    );
    assert_usable(&mut other, "other").await;
    let stats = server.server.stats();
    assert_eq!(stats.handler_panics, 1);
    assert_eq!(stats.hook_timeouts, 1);
    drop(other);
    wait_for_gauges(&server.server, baseline).await;
    stop_in_time(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_hooks_that_panic_or_hang_answer_internal_error() {
    let server = builder()
        .namespace("/panic", |ns| {
            ns.on_connect(|_s: Socket| async move {
                if true {
                    panic!("namespace connect hook panicked on purpose");
                }
            })
        })
        .namespace("/hang", |ns| {
            ns.on_connect(|_s: Socket| std::future::pending::<()>())
        })
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let baseline = Gauges::of(&server.server);
    let mut c = server.client().await;
    for (ns, id) in [("/panic", "p"), ("/hang", "h")] {
        c.send(json!({"type": "join", "namespace": ns, "ackId": id}))
            .await;
        assert_eq!(
            c.recv().await,
            json!({"type": "error", "namespace": ns, "ackId": id, "error": "internal error"})
        );
        assert_usable(&mut c, id).await;
    }
    let stats = server.server.stats();
    assert_eq!((stats.handler_panics, stats.hook_timeouts), (1, 1));
    drop(c);
    wait_for_gauges(&server.server, baseline).await;
    stop_in_time(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_hooks_that_panic_or_hang_do_not_hold_the_connection() {
    let server = builder()
        .on_disconnect(|s: Socket, _r| async move {
            match s.query("mode") {
                Some("panic") => panic!("disconnect hook panicked on purpose"),
                Some("hang") => std::future::pending::<()>().await,
                _ => {}
            }
        })
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let baseline = Gauges::of(&server.server);
    let mut a = server.client_with("/ws?mode=panic", &[]).await;
    a.ready().await;
    let mut b = server.client_with("/ws?mode=hang", &[]).await;
    b.ready().await;
    drop(a);
    drop(b);
    // The hung hook is cancelled at its deadline; both connections are then gone.
    wait_for_gauges(&server.server, baseline).await;
    let stats = server.server.stats();
    assert_eq!((stats.handler_panics, stats.hook_timeouts), (1, 1));
    stop_in_time(server).await;
}

/// A disconnect hook that never returns and a handler that never finishes, while the server
/// shuts down with a hook deadline longer than the grace period: `shutdown` still returns within
/// its grace period, and every gauge is back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_within_its_grace_period_with_hung_hooks_and_handlers() {
    let server = Server::builder()
        .shutdown_timeout(GRACE)
        .hook_timeout(Duration::from_secs(3600))
        .on("forever", |s: Socket, room: String| async move {
            let _ = s.join(&room);
            std::future::pending::<()>().await;
        })
        .on_disconnect(|_s: Socket, _r| std::future::pending::<()>())
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = server.client().await;
        c.emit_ack("forever", json!(format!("r{i}")), "1").await;
        clients.push(c);
    }
    let srv = server.server.clone();
    wait_until(|| srv.stats().rooms == 5).await;
    let srv = server.server.clone();
    stop_in_time(server).await;
    let stats = srv.stats();
    assert_eq!(
        (
            stats.connections,
            stats.rooms,
            stats.pending_acks,
            stats.queued_bytes
        ),
        (0, 0, 0, 0)
    );
    drop(clients);
}

/// A connection future dropped while it runs (the task cancelled, as a panic unwinding through
/// it would drop it) is cleaned up by its guard: rooms, registry and gauges, and its disconnect
/// hook still runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_task_is_cleaned_up_by_its_guard() {
    let hooks = Arc::new(AtomicU64::new(0));
    let seen = hooks.clone();
    let server = builder()
        .on_disconnect(move |_s: Socket, _r| {
            seen.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .build()
        .expect("build");
    let baseline = Gauges::of(&server);
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_connection(server_end, None).await });
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/ws", client_end)
        .await
        .expect("handshake");
    use futures_util::{SinkExt, StreamExt};
    within(expect_hello(&mut ws)).await;
    let join = json!({"type": "event", "event": "join_room", "data": "r", "ackId": "1"});
    ws.send(join.to_string().into()).await.expect("send");
    let ack = within(ws.next()).await.expect("frame").expect("ok");
    assert!(ack.to_text().expect("text").contains("joined"));
    assert_eq!(server.stats().rooms, 1);
    assert_eq!(server.stats().connections, 1);
    task.abort();
    let _ = task.await;
    wait_for_gauges(&server, baseline).await;
    assert!(server.sockets().is_empty(), "unregistered");
    let h = hooks.clone();
    wait_until(move || h.load(Ordering::SeqCst) == 1).await;
    drop(ws);
}
