//! Hardening, lifecycle and faults: cases 24, 31 and 32 of `shared/notes/reliability.md` (the
//! full table is in `SECURITY.md`): races between broadcasts, joins and disconnects; handler
//! panics next to a long-sleeping handler; a graceful shutdown with 1,000 clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{DuplexStream, duplex};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};
use wsu::{CloseCode, DisconnectReason, JoinError, Json, Server, Socket, SocketId};
use wsu_tests::{
    Canary, Client, Closed, Gauges, TestServer, expect_hello, wait_for_gauges, within,
};

// ---- Case 24 -------------------------------------------------------------------------------------

/// How a churning client ends.
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// A normal close (1000).
    Close,
    /// The TCP connection just drops, right after asking the server to join rooms from a
    /// background task (racing the disconnect).
    Drop,
    /// An oversized message (1009).
    TooBig,
    /// Garbage until the invalid-message budget is spent (1008).
    Garbage,
}

/// Broadcasts in a tight loop while 200 clients connect, join namespaces and rooms, send
/// garbage and events that broadcast, and leave in every possible way (close, drop, 1009, 1008),
/// all at once. Afterwards: no panic, no member, room or namespace left behind, every
/// connection counted closed once, and joins on the closed connections' handles are refused as
/// `Closed` without creating anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case24_broadcast_storm_while_200_clients_churn_leaves_no_member_behind() {
    const CLIENTS: usize = 200;
    let handles = Arc::new(Mutex::new(Vec::<Socket>::new()));
    let h = handles.clone();
    let server = Server::builder()
        .max_message_size(4 * 1024)
        .allow_namespaces(|name| name.starts_with("/dyn/"))
        .on_connect(move |s: Socket| {
            h.lock().expect("handles").push(s);
            async {}
        })
        .on("say", |s: Socket, room: String| async move {
            s.to(&room).emit("said", &room).map(|d| Json(d.queued))
        })
        // Joins rooms from a background task that outlives the request (and maybe the
        // connection): each join either succeeds before the disconnect (and is undone by it) or
        // fails with `Closed`.
        .on("join_later", |s: Socket, n: u32| async move {
            tokio::spawn(async move {
                for i in 0..n {
                    if s.join(&format!("late-{i}")).is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            });
        })
        .namespace("/game", |ns| ns)
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let broadcaster = {
        let (server, stop, sent) = (server.server.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let a = server.emit("tick", &n).expect("emit");
                let b = server
                    .to(&format!("r{}", n % 10))
                    .emit("room", &n)
                    .expect("emit");
                let c = server.of("/game").to("g").emit("game", &n).expect("emit");
                let d = server
                    .of(&format!("/dyn/{}", n % 3))
                    .emit("dyn", &n)
                    .expect("emit");
                sent.fetch_add(
                    (a.queued + b.queued + c.queued + d.queued) as u64,
                    Ordering::Relaxed,
                );
                n += 1;
                tokio::task::yield_now().await;
            }
            n
        })
    };

    let garbage = ["{", "[]", r#"{"type":"bogus"}"#, r#"{"type":"event"}"#];
    let ends = join_all((0..CLIENTS).map(|i| {
        let server = &server;
        async move {
            let exit = [Exit::Close, Exit::Drop, Exit::TooBig, Exit::Garbage][i % 4];
            let mut c: Client = server.client().await;
            for m in [
                json!({"type": "join", "room": format!("r{}", i % 10)}),
                json!({"type": "join", "namespace": "/game", "room": "g"}),
                json!({"type": "join", "namespace": format!("/dyn/{}", i % 3), "room": "x"}),
                json!({"type": "event", "event": "say", "data": format!("r{}", i % 10)}),
                json!({"type": "leave", "room": format!("r{}", (i + 1) % 10)}),
            ] {
                c.send(m).await;
            }
            for g in garbage {
                c.send_text(g).await;
            }
            match exit {
                Exit::Close => {
                    c.ws.close(None).await.expect("send close");
                    Some(c.closed().await)
                }
                Exit::Drop => {
                    c.send(json!({"type": "event", "event": "join_later", "data": 50}))
                        .await;
                    drop(c);
                    None
                }
                Exit::TooBig => {
                    c.send_text(&"x".repeat(8 * 1024)).await;
                    Some(c.closed().await)
                }
                Exit::Garbage => {
                    for _ in 0..30 {
                        // The server may close before all of them are sent.
                        if c.ws.send(Message::text("garbage")).await.is_err() {
                            break;
                        }
                    }
                    Some(c.closed().await)
                }
            }
        }
    }))
    .await;
    stop.store(true, Ordering::Relaxed);
    let rounds = within(broadcaster).await.expect("broadcaster");

    for (i, end) in ends.iter().enumerate() {
        let want = match i % 4 {
            0 => Some(Closed::Frame(1005, String::new())),
            1 => None,
            2 => Some(Closed::Frame(1009, "message too big".to_owned())),
            _ => Some(Closed::Frame(1008, "too many invalid messages".to_owned())),
        };
        assert_eq!(*end, want, "client {i}");
    }
    wait_for_gauges(&server.server, baseline).await;
    let s = &server.server;
    let stats = s.stats();
    assert_eq!(stats.handler_panics, 0);
    assert_eq!(
        stats.closes.values().sum::<u64>(),
        CLIENTS as u64,
        "{:?}",
        stats.closes
    );
    assert_eq!(s.sockets().len(), 1, "only the canary");
    assert!(s.rooms("/").is_empty() && s.rooms("/game").is_empty());

    // Handles of closed connections: joins are refused and create nothing.
    let handles = handles.lock().expect("handles").clone();
    assert_eq!(handles.len(), CLIENTS + 1);
    let mut closed = 0;
    for h in handles.iter().filter(|h| !h.is_connected()) {
        closed += 1;
        assert_eq!(h.join("after"), Err(JoinError::Closed));
        assert_eq!(h.of("/game").join("after"), Err(JoinError::Closed));
        assert_eq!(h.join_namespace("/dyn/late"), Err(JoinError::Closed));
        assert!(h.rooms().is_empty());
    }
    assert_eq!(closed, CLIENTS);
    assert_eq!(Gauges::of(s), baseline);
    let report = canary.stop().await;
    eprintln!(
        "case 24: {rounds} broadcast rounds, {} deliveries queued; {report}",
        sent.load(Ordering::Relaxed)
    );
    server.stop().await;
}

// ---- Case 31 (paused time, in-memory pipes) ------------------------------------------------------

const SECOND: Duration = Duration::from_secs(1);

/// A library client over a 64 KiB in-memory pipe, connected to `path`, past the `hello` frame
/// the connection starts with (sent before the connect hooks run, so even by a connection they
/// refuse).
async fn connect(server: &Server, path: &str) -> WebSocketStream<DuplexStream> {
    let (client, server_end) = duplex(64 * 1024);
    let s = server.clone();
    tokio::spawn(async move { s.serve_connection(server_end, None).await });
    let (mut ws, response) = client_async(format!("ws://localhost{path}"), client)
        .await
        .expect("handshake");
    assert_eq!(response.status(), 101);
    expect_hello(&mut ws).await;
    ws
}

/// Send a JSON message.
async fn send(ws: &mut WebSocketStream<DuplexStream>, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next text message as JSON (pings are answered by tungstenite and skipped).
async fn recv(ws: &mut WebSocketStream<DuplexStream>) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Panic on purpose.
fn explode(what: &str) {
    panic!("{what} exploded on purpose");
}

/// Handlers that panic (an event handler, a namespace connect hook, the global connect hook on
/// request) next to a handler that sleeps 10 s. The panics are contained: the panicking event
/// and join get `internal error`, the panicking connect hook closes its
/// connection with 1011; the registries (rooms, namespaces) keep working; the sleeper's own
/// connection keeps answering heartbeats, and every other connection is served at once.
#[tokio::test(start_paused = true)]
async fn case31_panicking_handlers_and_a_10s_sleeper_stall_nothing() {
    let (tx, mut gone) = mpsc::unbounded_channel();
    let server = Server::builder()
        .ping_interval(2 * SECOND)
        .read_timeout(5 * SECOND)
        .on_connect(|s: Socket| async move {
            if s.query("panic").is_some() {
                explode("the connect hook");
            }
        })
        .on_disconnect(move |_s: Socket, reason: DisconnectReason| {
            let _ = tx.send(reason);
            async {}
        })
        .on("sleep", |_s: Socket, (): ()| async {
            tokio::time::sleep(10 * SECOND).await;
            Json("slept")
        })
        .on("boom", |_s: Socket, (): ()| async { explode("a handler") })
        .on("rooms", |s: Socket, (): ()| async move { Json(s.rooms()) })
        .namespace("/p", |ns| {
            ns.on_connect(|_s: Socket| async { explode("a namespace hook") })
        })
        .build()
        .expect("build");
    let start = Instant::now();

    let mut sleeper = connect(&server, "/ws").await;
    send(
        &mut sleeper,
        json!({"type": "event", "event": "sleep", "ackId": "s"}),
    )
    .await;

    let mut victim = connect(&server, "/ws").await;
    send(
        &mut victim,
        json!({"type": "event", "event": "boom", "ackId": "b"}),
    )
    .await;
    assert_eq!(
        recv(&mut victim).await,
        json!({"type": "error", "namespace": "/", "event": "boom", "ackId": "b", "error": "internal error"})
    );
    send(
        &mut victim,
        json!({"type": "join", "namespace": "/p", "ackId": "p"}),
    )
    .await;
    assert_eq!(
        recv(&mut victim).await,
        json!({"type": "error", "namespace": "/p", "ackId": "p", "error": "internal error"})
    );
    // The registries still work after the panics.
    send(
        &mut victim,
        json!({"type": "join", "room": "r", "ackId": "j"}),
    )
    .await;
    assert_eq!(
        recv(&mut victim).await,
        json!({"type": "ack", "namespace": "/", "ackId": "j"})
    );
    send(
        &mut victim,
        json!({"type": "event", "event": "rooms", "ackId": "l"}),
    )
    .await;
    assert_eq!(
        recv(&mut victim).await,
        json!({"type": "ack", "namespace": "/", "event": "rooms", "data": ["r"], "ackId": "l"})
    );
    assert_eq!(server.to("r").emit("hello", &1).expect("emit").queued, 1);
    assert_eq!(recv(&mut victim).await["event"], "hello");

    let mut refused = connect(&server, "/ws?panic=1").await;
    match refused.next().await {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(
                (u16::from(f.code), f.reason.as_str()),
                (1011, "internal error")
            );
        }
        other => panic!("expected close 1011, got {other:?}"),
    }
    // Send the close reply tungstenite queued, so the server need not wait for it.
    let _ = refused.flush().await;
    drop(refused);
    assert_eq!(
        gone.recv().await.expect("hook").close_code(),
        CloseCode::INTERNAL_ERROR
    );
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "all of this without waiting"
    );
    assert_eq!(server.stats().handler_panics, 3);

    // While the sleeper sleeps: its connection gets the server's pings (and answers them), the
    // victim is answered at once every second.
    let sleeper_side = async {
        let mut pings = Vec::new();
        loop {
            match sleeper.next().await.expect("open").expect("frame") {
                Message::Ping(_) => pings.push(start.elapsed()),
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("JSON");
                    return (pings, v, start.elapsed());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let victim_side = async {
        for i in 1..=9u32 {
            tokio::time::sleep_until(start + i * SECOND).await;
            send(
                &mut victim,
                json!({"type": "ping", "namespace": format!("/{i}")}),
            )
            .await;
            assert_eq!(
                recv(&mut victim).await,
                json!({"type": "pong", "namespace": format!("/{i}")})
            );
            assert_eq!(start.elapsed(), i * SECOND, "answered at once");
        }
    };
    let ((pings, ack, at), ()) = tokio::join!(sleeper_side, victim_side);
    // A ping every 2 s while the handler sleeps (the connection's clock starts a moment after
    // `start`, so compare the spacing rather than absolute seconds).
    assert!(pings.len() >= 4, "pings at {pings:?}");
    assert!(
        pings.windows(2).all(|w| w[1] - w[0] == 2 * SECOND),
        "pings at {pings:?}"
    );
    assert_eq!(
        ack,
        json!({"type": "ack", "namespace": "/", "event": "sleep", "data": "slept", "ackId": "s"})
    );
    assert_eq!(at, 10 * SECOND);

    drop((sleeper, victim));
    for _ in 0..2 {
        assert_eq!(
            gone.recv().await.expect("hook"),
            DisconnectReason::TransportClosed
        );
    }
    let g = Gauges::of(&server);
    assert_eq!(
        g,
        Gauges {
            connections: 0,
            dynamic_namespaces: 0,
            rooms: 0,
            pending_acks: 0,
            queued_bytes: 0
        }
    );
}

// ---- Case 32 -------------------------------------------------------------------------------------

/// The `data` of each event received, until the connection ends; and how it ended.
async fn read_until_closed(client: &mut Client) -> (Vec<Value>, Closed) {
    let mut got = Vec::new();
    loop {
        match within(client.ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                got.push(v["data"].clone());
            }
            Some(Ok(Message::Close(frame))) => {
                let _ = within(client.ws.flush()).await;
                let end = frame.map_or(Closed::Frame(1005, String::new()), |f| {
                    Closed::Frame(f.code.into(), f.reason.to_string())
                });
                return (got, end);
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return (got, Closed::Dropped),
        }
    }
}

/// Graceful shutdown with 1,000 connected clients and messages queued for each: every client
/// gets all its messages in order, then 1001; the disconnect hook runs exactly once per client;
/// `shutdown` and `serve` return; nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case32_graceful_shutdown_with_1000_clients() {
    const CLIENTS: usize = 1000;
    const MESSAGES: u64 = 5;
    let runs: Arc<Mutex<HashMap<SocketId, Vec<DisconnectReason>>>> = Arc::default();
    let r = runs.clone();
    let server = Server::builder()
        .on_disconnect(move |s: Socket, reason: DisconnectReason| {
            r.lock()
                .expect("runs")
                .entry(*s.id())
                .or_default()
                .push(reason);
            async {}
        })
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let t = std::time::Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS / 100 {
        clients.extend(
            join_all((0..100).map(|_| async {
                let mut c = server.client().await;
                c.ready().await;
                c
            }))
            .await,
        );
    }
    let connected_in = t.elapsed();
    assert_eq!(server.server.stats().connections, CLIENTS);

    let pad = "p".repeat(1024);
    for i in 0..MESSAGES {
        let d = server
            .server
            .emit("news", &json!({"i": i, "pad": pad}))
            .expect("emit");
        assert_eq!(d.queued, CLIENTS);
    }
    let s = server.server.clone();
    let t = std::time::Instant::now();
    let shutdown = tokio::spawn(async move { s.shutdown().await });
    let ends = join_all(clients.iter_mut().map(read_until_closed)).await;
    for (got, end) in &ends {
        let order: Vec<u64> = got.iter().map(|d| d["i"].as_u64().expect("i")).collect();
        assert_eq!(order, (0..MESSAGES).collect::<Vec<u64>>());
        assert_eq!(*end, Closed::Frame(1001, "server shutting down".to_owned()));
    }
    within(shutdown).await.expect("shutdown task");
    let shut_in = t.elapsed();

    let runs = runs.lock().expect("runs").clone();
    assert_eq!(runs.len(), CLIENTS, "one entry per connection");
    let going_away = DisconnectReason::ServerClosed {
        code: CloseCode::GOING_AWAY,
        reason: "server shutting down".to_owned(),
    };
    assert!(
        runs.values().all(|v| *v == [going_away.clone()]),
        "once each, 1001"
    );
    let stats = server.server.stats();
    assert_eq!(stats.closes.get(&1001), Some(&(CLIENTS as u64)));
    assert_eq!(
        Gauges::of(&server.server),
        Gauges {
            connections: 0,
            dynamic_namespaces: 0,
            rooms: 0,
            pending_acks: 0,
            queued_bytes: 0
        }
    );
    eprintln!("case 32: {CLIENTS} clients connected in {connected_in:?}, shut down in {shut_in:?}");
    drop(clients);
    server.stop().await;
}
