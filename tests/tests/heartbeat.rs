//! Heartbeats and timeouts under paused tokio time, over in-memory `tokio::io::duplex` pipes
//! served with `Server::serve_connection` (paused time auto-advances whenever every task waits,
//! so timeouts fire at their exact instant and the tests take no real time).
//!
//! Library clients are `tokio_tungstenite::client_async` over the duplex end; where a client
//! must not answer pings (tungstenite answers them whenever its stream is polled), the test
//! reads and writes raw frames on the stream under the `WebSocketStream` instead.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, DuplexStream, duplex};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};
use wsu::{CloseCode, DisconnectReason, Json, Server, ServerBuilder, Socket};
use wsu_tests::{RawFrame, RawWs, expect_hello, opcode, text_frame};

const SECOND: Duration = Duration::from_secs(1);

/// Serve one duplex connection of `capacity` bytes per direction; returns the client end and
/// the task running `serve_connection`.
fn pipe(server: &Server, capacity: usize) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let (client, server_end) = duplex(capacity);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_connection(server_end, None).await });
    (client, task)
}

/// A tokio-tungstenite client connected through a 64 KiB duplex pipe (no `Origin` header: the
/// default policy admits it), past the `hello` frame the connection starts with, so that the
/// tests see the heartbeat frames exactly (reading it also takes it out of the library client's
/// buffer before a test reads the raw stream under it).
async fn connect(server: &Server) -> WebSocketStream<DuplexStream> {
    let (stream, _task) = pipe(server, 64 * 1024);
    let (mut ws, response) = client_async("ws://localhost/ws", stream)
        .await
        .expect("handshake");
    assert_eq!(response.status(), 101);
    expect_hello(&mut ws).await;
    ws
}

/// Build with a disconnect hook reporting each reason on the returned channel.
fn with_disconnects(builder: ServerBuilder) -> (Server, mpsc::UnboundedReceiver<DisconnectReason>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = builder
        .on_disconnect(move |_s: Socket, reason: DisconnectReason| {
            let _ = tx.send(reason);
            async {}
        })
        .build()
        .expect("build");
    (server, rx)
}

/// A text message parsed as JSON.
fn json_of(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> serde_json::Value {
    match msg {
        Some(Ok(Message::Text(t))) => serde_json::from_str(&t).expect("JSON"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Seconds since `start` (paused time: exact).
fn at(start: Instant) -> u64 {
    let e = start.elapsed();
    assert_eq!(
        e.subsec_nanos(),
        0,
        "timers fire on whole seconds here: {e:?}"
    );
    e.as_secs()
}

#[tokio::test(start_paused = true)]
async fn server_pings_every_interval_and_answered_pings_keep_the_connection_open() {
    let (server, mut reasons) = with_disconnects(
        Server::builder()
            .ping_interval(4 * SECOND)
            .read_timeout(9 * SECOND),
    );
    let start = Instant::now();
    let mut ws = connect(&server).await;
    // Polling the library client answers each ping with a pong, so the connection outlives the
    // 9 s read timeout several times over.
    for k in 1..=6 {
        match ws.next().await {
            Some(Ok(Message::Ping(payload))) => {
                assert!(payload.is_empty());
                assert_eq!(at(start), 4 * k);
            }
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    assert_eq!(
        ws.next().await.expect("open").expect("message"),
        Message::text(r#"{"type":"pong","namespace":"/"}"#)
    );
    assert_eq!(at(start), 24);
    assert!(reasons.try_recv().is_err(), "still connected");
    assert_eq!(server.stats().connections, 1);
}

#[tokio::test(start_paused = true)]
async fn silent_client_is_closed_with_4000_after_the_read_timeout() {
    let (server, mut reasons) = with_disconnects(
        Server::builder()
            .ping_interval(4 * SECOND)
            .read_timeout(9 * SECOND),
    );
    let start = Instant::now();
    // Connected (the hello read), then never polled: it answers no ping and sends nothing.
    let mut ws = connect(&server).await;
    let reason = reasons.recv().await.expect("hook");
    assert_eq!(at(start), 9);
    assert_eq!(
        reason,
        DisconnectReason::ServerClosed {
            code: CloseCode::HEARTBEAT_TIMEOUT,
            reason: "heartbeat timeout".to_owned()
        }
    );
    // What the server wrote, read raw: two pings, then a close frame, then the end.
    let mut raw = RawWs::new(ws.get_mut());
    let mut frames = Vec::new();
    while let Some(f) = raw.read_frame().await {
        frames.push(f);
    }
    let ping = RawFrame {
        fin: true,
        rsv: 0,
        opcode: opcode::PING,
        masked: false,
        payload: vec![],
    };
    assert_eq!(frames[..2], [ping.clone(), ping]);
    assert_eq!(
        frames[2].close(),
        Some((4000, "heartbeat timeout".to_owned()))
    );
    assert_eq!(frames.len(), 3);
    assert_eq!(server.stats().closes.get(&4000), Some(&1));
    assert_eq!(server.stats().connections, 0);
}

// Design decision (documented in `Config::read_timeout`): *anything* received counts as
// liveness — data frames as well as pongs — unlike the seed, which only counted pongs and so
// dropped a busy client that did not answer pings.
#[tokio::test(start_paused = true)]
async fn data_frames_count_as_liveness_without_any_pong() {
    let (server, mut reasons) = with_disconnects(
        Server::builder()
            .ping_interval(4 * SECOND)
            .read_timeout(9 * SECOND),
    );
    let start = Instant::now();
    let mut ws = connect(&server).await;
    // Raw frames on the stream under the library client: pings are never answered.
    let (read_half, write_half) = tokio::io::split(ws.get_mut());
    let mut reader = RawWs::new(read_half);
    let mut writer = RawWs::new(write_half);
    let read_all = async {
        let mut seen = Vec::new();
        while let Some(f) = reader.read_frame().await {
            seen.push((at(start), f));
        }
        seen
    };
    let write = async {
        // A JSON ping every 5 s, four times, then silence.
        for k in 1..=4 {
            tokio::time::sleep_until(start + 5 * k * SECOND).await;
            writer.send_raw(&text_frame(r#"{"type":"ping"}"#)).await;
        }
    };
    let (seen, ()) = tokio::join!(read_all, write);

    let times = |op: u8| -> Vec<u64> {
        seen.iter()
            .filter(|(_, f)| f.opcode == op)
            .map(|(t, _)| *t)
            .collect()
    };
    assert_eq!(times(opcode::PING), vec![4, 8, 12, 16, 20, 24, 28]);
    assert_eq!(
        times(opcode::TEXT),
        vec![5, 10, 15, 20],
        "one pong per JSON ping"
    );
    // Closed 9 s after the last data frame (t = 20), not 9 s after the start.
    let (t, last) = seen.last().expect("frames");
    assert_eq!(*t, 29);
    assert_eq!(last.close(), Some((4000, "heartbeat timeout".to_owned())));
    assert_eq!(
        reasons.recv().await.expect("hook").close_code(),
        CloseCode::HEARTBEAT_TIMEOUT
    );
}

#[tokio::test(start_paused = true)]
async fn a_handler_sleeping_10s_stops_neither_pings_nor_other_requests() {
    let server = Server::builder()
        .ping_interval(4 * SECOND)
        .read_timeout(9 * SECOND)
        .on("slow", |_s: Socket, (): ()| async {
            tokio::time::sleep(10 * SECOND).await;
            Json("slept")
        })
        .on("fast", |_s: Socket, (): ()| async { Json("quick") })
        .build()
        .expect("build");
    let start = Instant::now();
    let mut a = connect(&server).await;
    let mut b = connect(&server).await;
    let text = |v: serde_json::Value| Message::text(v.to_string());

    a.send(text(
        json!({"type": "event", "event": "slow", "ackId": "s"}),
    ))
    .await
    .expect("send");
    a.send(text(
        json!({"type": "event", "event": "fast", "ackId": "f"}),
    ))
    .await
    .expect("send");
    // A JSON ping is a request too: it is answered in arrival order, behind the handler.
    a.send(text(json!({"type": "ping"}))).await.expect("send");
    // A WebSocket ping is answered by the connection's reader at once, even behind a running
    // handler.
    a.send(Message::Ping(b"now"[..].into()))
        .await
        .expect("send");
    match a.next().await {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"now"),
        other => panic!("expected a pong, got {other:?}"),
    }
    assert_eq!(at(start), 0);
    // Another connection's requests are not held up.
    b.send(text(
        json!({"type": "event", "event": "fast", "ackId": "b"}),
    ))
    .await
    .expect("send");
    assert_eq!(
        json_of(b.next().await),
        json!({"type": "ack", "namespace": "/", "event": "fast", "data": "quick", "ackId": "b"})
    );
    assert_eq!(at(start), 0);
    drop(b);

    // Heartbeats go on while the handler sleeps; its ack comes at 10 s, then the requests queued
    // behind it, in arrival order.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        match a.next().await.expect("open").expect("message") {
            Message::Ping(_) => seen.push((at(start), json!("ping"))),
            Message::Text(t) => seen.push((at(start), serde_json::from_str(&t).expect("JSON"))),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            (4, json!("ping")),
            (8, json!("ping")),
            (
                10,
                json!({"type": "ack", "namespace": "/", "event": "slow", "data": "slept", "ackId": "s"})
            ),
            (
                10,
                json!({"type": "ack", "namespace": "/", "event": "fast", "data": "quick", "ackId": "f"})
            ),
            (10, json!({"type": "pong", "namespace": "/"})),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn half_sent_upgrade_request_gets_408_at_the_handshake_timeout() {
    let server = Server::builder()
        .handshake_timeout(3 * SECOND)
        .build()
        .expect("build");
    let start = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let (mut stream, task) = pipe(&server, 4096);
        use tokio::io::AsyncWriteExt;
        stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
            .await
            .expect("write");
        stalled.push((stream, task));
    }
    // A real client still connects meanwhile.
    let mut ws = connect(&server).await;
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    assert_eq!(
        ws.next().await.expect("open").expect("message"),
        Message::text(r#"{"type":"pong","namespace":"/"}"#)
    );
    assert_eq!(at(start), 0);

    for (mut stream, task) in stalled {
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read to EOF");
        assert_eq!(at(start), 3);
        assert!(
            response.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{response:?}"
        );
        assert!(
            response.ends_with("\r\n\r\nhandshake timeout\n"),
            "{response:?}"
        );
        assert_eq!(response.matches("HTTP/1.1").count(), 1);
        task.await.expect("serve_connection returns");
    }
    assert_eq!(server.stats().handshakes_refused, 20);
    assert_eq!(server.stats().connections, 1);
}

/// A server for the write-timeout tests: the connect hook hands over each `Socket`.
fn write_timeout_server(
    queue: usize,
) -> (
    Server,
    mpsc::UnboundedReceiver<Socket>,
    mpsc::UnboundedReceiver<DisconnectReason>,
) {
    let (tx, sockets) = mpsc::unbounded_channel();
    let (server, reasons) = with_disconnects(
        Server::builder()
            .write_timeout(5 * SECOND)
            .read_timeout(60 * SECOND)
            .ping_interval(30 * SECOND)
            .max_queued(queue, 4 << 20)
            .on_connect(move |s: Socket| {
                let _ = tx.send(s);
                async {}
            }),
    );
    (server, sockets, reasons)
}

/// Connect through a 1 KiB pipe that the client never reads, and emit `n` messages of 4 KiB.
/// Returns the client, the start instant and the emit results.
async fn stall_writes(
    server: &Server,
    sockets: &mut mpsc::UnboundedReceiver<Socket>,
    n: usize,
) -> (WebSocketStream<DuplexStream>, Instant, Vec<bool>) {
    let (stream, _task) = pipe(server, 1024);
    let (ws, _) = client_async("ws://localhost/ws", stream)
        .await
        .expect("handshake");
    let socket = sockets.recv().await.expect("socket");
    let start = Instant::now();
    let pad = "x".repeat(4096);
    let sent = (0..n).map(|_| socket.emit("big", &pad).is_ok()).collect();
    (ws, start, sent)
}

#[tokio::test(start_paused = true)]
async fn stalled_writes_end_the_connection_at_the_write_timeout_with_4002() {
    let (server, mut sockets, mut reasons) = write_timeout_server(1024);
    let (mut ws, start, sent) = stall_writes(&server, &mut sockets, 20).await;
    assert!(sent.iter().all(|ok| *ok), "the queue has room for all");

    let reason = reasons.recv().await.expect("hook");
    assert_eq!(at(start), 5);
    assert_eq!(
        reason,
        DisconnectReason::ServerClosed {
            code: CloseCode::WRITE_TIMEOUT,
            reason: "write timeout".to_owned()
        }
    );
    // Observed: no close frame can be written into a full pipe, so the client finds the data
    // that fitted, then the end of the stream.
    let mut raw = RawWs::new(ws.get_mut());
    let mut frames = Vec::new();
    while let Some(f) = raw.read_frame().await {
        frames.push(f);
    }
    assert!(
        frames.iter().all(|f| f.opcode == opcode::TEXT),
        "{frames:?}"
    );
    assert!(frames.len() < 20);
    assert_eq!(server.stats().closes.get(&4002), Some(&1));
    assert_eq!(server.stats().queued_bytes, 0);
}

#[tokio::test(start_paused = true)]
async fn queue_overflow_interrupts_a_stalled_write_and_ends_with_4001() {
    let (server, mut sockets, mut reasons) = write_timeout_server(8);
    let (_ws, start, sent) = stall_writes(&server, &mut sockets, 8).await;
    assert!(sent.iter().all(|ok| *ok));
    // Let the connection task take everything off the queue: it is now blocked writing into the
    // full pipe (yielding lets it run without letting paused time advance).
    wsu_tests::wait_until(|| server.stats().queued_bytes == 0).await;
    let socket = sockets_last(&server);
    let results: Vec<bool> = (0..9).map(|_| socket.emit("big", &"y").is_ok()).collect();
    assert_eq!(results.iter().filter(|ok| **ok).count(), 8);
    assert_eq!(server.stats().messages_dropped, 1);

    // The overflow asks for a 4001 close. The connection task is blocked in a write that
    // cannot progress; the request interrupts it at once. The close frame cannot be written
    // into the full pipe either: that attempt is given 1 s, then the connection ends with 4001.
    let reason = reasons.recv().await.expect("hook");
    assert_eq!(at(start), 1);
    assert_eq!(
        reason,
        DisconnectReason::ServerClosed {
            code: CloseCode::SLOW_CONSUMER,
            reason: "outbound queue full".to_owned()
        }
    );
    assert_eq!(server.stats().closes.get(&4001), Some(&1));
    assert_eq!(server.stats().closes.get(&4002), None);
}

/// The handle of the only open connection.
fn sockets_last(server: &Server) -> Socket {
    let ids = server.sockets();
    assert_eq!(ids.len(), 1);
    server.socket(ids[0]).expect("open")
}
