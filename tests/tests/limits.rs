//! Bounded outbound queues: the slow-consumer policies, `Socket::emit` errors, and gauges
//! returning to their baseline once clients leave.
//!
//! A "slow" client here is a tokio-tungstenite client that the test simply stops polling: the
//! server keeps writing until the TCP buffers are full, its connection task then blocks on the
//! socket, and the connection's bounded outbox fills up.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use wsu::{
    AckError, CloseCode, DisconnectReason, JoinError, SendError, Server, SlowConsumerPolicy, Socket,
};
use wsu_tests::{Client, Closed, TestServer, wait_until, within};

/// Join `room` of `/` and wait for the ack.
async fn join(client: &mut Client, room: &str) {
    client
        .send(json!({"type": "join", "room": room, "ackId": "join"}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "ack", "namespace": "/", "ackId": "join"})
    );
}

/// Everything a client that resumes reading receives: the `i` of each `m` event, until the
/// connection ends (returned as `Some`) or an event named `end` arrives (`None`).
async fn drain(client: &mut Client) -> (Vec<u64>, Option<Closed>) {
    let mut got = Vec::new();
    loop {
        match within(client.ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                if v["event"] == "end" {
                    return (got, None);
                }
                assert_eq!(v["event"], "m", "{v}");
                got.push(v["data"]["i"].as_u64().expect("i"));
            }
            Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                answer_close(client).await;
                return (got, Some(Closed::Frame(code.into(), reason.to_string())));
            }
            Some(Ok(Message::Close(None))) => {
                answer_close(client).await;
                return (got, Some(Closed::Frame(1005, String::new())));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return (got, Some(Closed::Dropped)),
        }
    }
}

/// Send the close reply tungstenite queued when it received the server's close frame (it goes
/// out with the next write), so the server need not wait for it.
async fn answer_close(client: &mut Client) {
    let _ = within(client.ws.flush()).await;
}

/// Broadcast large messages to room `r` (members: `slow`, never read, and `fast`, read after
/// each message) until `slow`'s queue overflowed and then `extra` more. Returns the `i` of the
/// messages queued for `slow`, the number of drops reported by the broadcasts, and the number
/// of messages broadcast.
async fn flood(server: &Server, fast: &mut Client, extra: u64) -> (Vec<u64>, u64, u64) {
    let pad = "x".repeat(16 * 1024);
    let mut queued_for_slow = Vec::new();
    let mut dropped = 0;
    let mut first_drop = None;
    for i in 0..4000u64 {
        let d = server
            .to("r")
            .emit("m", &json!({"i": i, "pad": pad}))
            .expect("emit");
        match (d.queued, d.dropped) {
            // (Possibly again after a drop, should the socket drain a little meanwhile.)
            (2, 0) => queued_for_slow.push(i),
            (1, 1) => {
                dropped += 1;
                first_drop.get_or_insert(i);
            }
            // Under `Disconnect`, once the slow connection is closed it is no recipient.
            (1, 0) => assert!(first_drop.is_some(), "slow member missing at {i}"),
            other => panic!("unexpected delivery {other:?} at {i}"),
        }
        // The fast member gets every message, in order.
        let m = fast.recv().await;
        assert_eq!(m["event"], "m");
        assert_eq!(m["data"]["i"], i);
        if first_drop.is_some_and(|f| i >= f + extra) {
            return (queued_for_slow, dropped, i + 1);
        }
    }
    panic!("the slow consumer's queue never filled");
}

#[tokio::test]
async fn slow_consumer_is_closed_with_4001_and_other_members_get_everything_in_order() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .max_queued(8, 256 * 1024)
        // Long enough that the blocked writer is not closed for a write timeout (4002) while
        // the slow client is not reading.
        .write_timeout(Duration::from_secs(60))
        .on_disconnect(move |_s: Socket, reason: DisconnectReason| {
            let _ = tx.send(reason);
            async {}
        })
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let mut slow = server.client().await;
    join(&mut slow, "r").await;
    let mut fast = server.client().await;
    join(&mut fast, "r").await;

    let (queued_for_slow, dropped, _) = flood(&server.server, &mut fast, 20).await;
    assert!(dropped >= 1);
    assert_eq!(server.server.stats().messages_dropped, dropped);

    // The slow client reads again. Observed: first the messages that were written to the socket
    // or still queued (a prefix of what was queued for it, in order, without gaps), then a close
    // frame 4001 — not a bare drop: the connection task sends it once the socket drains.
    let (got, end) = drain(&mut slow).await;
    assert_eq!(
        end,
        Some(Closed::Frame(4001, "outbound queue full".to_owned()))
    );
    assert!(!got.is_empty());
    assert_eq!(got[..], queued_for_slow[..got.len()]);
    assert_eq!(
        within(rx.recv()).await.expect("hook"),
        DisconnectReason::ServerClosed {
            code: CloseCode::SLOW_CONSUMER,
            reason: "outbound queue full".to_owned()
        }
    );
    assert_eq!(server.server.stats().closes.get(&4001), Some(&1));

    // The fast member is unaffected.
    server
        .server
        .to("r")
        .emit("m", &json!({"i": 9999}))
        .expect("emit");
    assert_eq!(fast.recv().await["data"]["i"], 9999);
    drop((slow, fast));
    server.stop().await;
}

#[tokio::test]
async fn drop_message_policy_keeps_the_connection_and_counts_drops() {
    let server = Server::builder()
        .max_queued(8, 256 * 1024)
        .slow_consumer(SlowConsumerPolicy::DropMessage)
        .write_timeout(Duration::from_secs(60))
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let mut slow = server.client().await;
    join(&mut slow, "r").await;
    let mut fast = server.client().await;
    join(&mut fast, "r").await;

    let (queued_for_slow, dropped, sent) = flood(&server.server, &mut fast, 20).await;
    assert!(dropped >= 1);
    assert_eq!(
        queued_for_slow.len() as u64 + dropped,
        sent,
        "each message queued or dropped, the connection kept"
    );
    assert_eq!(server.server.stats().messages_dropped, dropped);

    // The slow client reads again: exactly the messages that were queued for it, in order; and
    // what is sent once it caught up arrives too.
    let mut got = Vec::new();
    while got.len() < queued_for_slow.len() {
        let m = slow.recv().await;
        assert_eq!(m["event"], "m");
        got.push(m["data"]["i"].as_u64().expect("i"));
    }
    assert_eq!(got, queued_for_slow);
    server
        .server
        .to("r")
        .emit("end", &json!(null))
        .expect("emit");
    let (more, end) = drain(&mut slow).await;
    assert_eq!(
        (more, end),
        (vec![], None),
        "nothing else, and the connection stays open"
    );
    slow.expect_quiet().await;
    assert_eq!(fast.recv().await["event"], "end");
    let stats = server.server.stats();
    assert!(stats.closes.is_empty(), "{:?}", stats.closes);
    assert_eq!(stats.connections, 2);
    drop((slow, fast));
    server.stop().await;
}

/// A server whose connect hook hands each connection's `Socket` to the test, and whose
/// disconnect hook reports each reason.
fn handle_server(
    builder: wsu::ServerBuilder,
) -> (
    Server,
    mpsc::UnboundedReceiver<Socket>,
    mpsc::UnboundedReceiver<DisconnectReason>,
) {
    let (stx, srx) = mpsc::unbounded_channel();
    let (dtx, drx) = mpsc::unbounded_channel();
    let server = builder
        .on_connect(move |socket: Socket| {
            let _ = stx.send(socket);
            async {}
        })
        .on_disconnect(move |_s: Socket, reason: DisconnectReason| {
            let _ = dtx.send(reason);
            async {}
        })
        .build()
        .expect("build");
    (server, srx, drx)
}

// Single-threaded runtime: the connection task cannot run between two `emit` calls that do not
// await, so the queue bound is hit exactly.
#[tokio::test(flavor = "current_thread")]
async fn socket_emit_reports_queue_full_then_closed() {
    let (server, mut sockets, mut reasons) =
        handle_server(Server::builder().max_queued(4, 1 << 20));
    let server = TestServer::start(server).await;
    let mut client = server.client().await;
    client.expect_quiet().await;
    let socket = within(sockets.recv()).await.expect("socket");

    let frame_len = r#"{"type":"event","namespace":"/","event":"n","data":0}"#.len();
    for i in 0..4 {
        socket.emit("n", &i).expect("queued");
    }
    assert_eq!(server.server.stats().queued_bytes, 4 * frame_len);
    assert!(matches!(socket.emit("n", &4), Err(SendError::QueueFull)));
    let too_big = "x".repeat(1 << 20);
    assert!(matches!(
        socket.emit("n", &too_big),
        Err(SendError::TooLarge)
    ));
    assert!(matches!(
        socket.emit("bad\u{0}name", &0),
        Err(SendError::InvalidName(_))
    ));
    assert_eq!(server.server.stats().messages_dropped, 1);

    // Under the default policy the overflow closes the connection with 4001; what was queued
    // before it may or may not be sent first (the close does not drain).
    let mut got = Vec::new();
    let end = loop {
        match within(client.ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                got.push(v["data"].as_u64().expect("n"));
            }
            Some(Ok(Message::Close(Some(f)))) => {
                answer_close(&mut client).await;
                break Closed::Frame(f.code.into(), f.reason.to_string());
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(end, Closed::Frame(4001, "outbound queue full".to_owned()));
    assert_eq!(got[..], [0, 1, 2, 3][..got.len()]);
    assert_eq!(
        within(reasons.recv()).await.expect("hook").close_code(),
        CloseCode::SLOW_CONSUMER
    );
    assert!(!socket.is_connected());
    assert!(matches!(socket.emit("n", &5), Err(SendError::Closed)));
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn operations_after_disconnect_fail_with_closed() {
    let (server, mut sockets, mut reasons) = handle_server(Server::builder());
    let server = TestServer::start(server).await;
    let mut client = server.client().await;
    client.expect_quiet().await;
    let socket = within(sockets.recv()).await.expect("socket");
    assert!(socket.is_connected());
    socket.emit("hello", &1).expect("open connection");
    assert_eq!(client.recv().await["event"], "hello");

    assert_eq!(
        client.close(1000, "bye").await,
        Closed::Frame(1000, "bye".to_owned())
    );
    assert!(matches!(
        within(reasons.recv()).await.expect("hook"),
        DisconnectReason::ClientClosed { .. }
    ));
    assert!(!socket.is_connected());
    assert!(matches!(socket.emit("hello", &2), Err(SendError::Closed)));
    assert!(matches!(
        socket.of("/").emit("hello", &3),
        Err(SendError::Closed)
    ));
    assert_eq!(socket.join("room"), Err(JoinError::Closed));
    assert!(matches!(
        socket.emit_with_ack::<_, Value>("q", &0).await,
        Err(AckError::Closed)
    ));
    assert!(socket.rooms().is_empty());
    assert!(server.server.socket(*socket.id()).is_none());
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn gauges_return_to_baseline_after_clients_leave() {
    let (server, mut sockets, mut reasons) = handle_server(
        Server::builder()
            .allow_namespaces(|name| name.starts_with("/dyn"))
            .ack_timeout(Duration::from_secs(60)),
    );
    let server = TestServer::start(server).await;
    let baseline = server.server.stats();

    let mut clients = Vec::new();
    let mut handles = Vec::new();
    for n in 0..3 {
        let mut c = server.client().await;
        join(&mut c, &format!("room-{n}")).await;
        join(&mut c, "shared").await;
        c.send(json!({"type": "join", "namespace": "/dyn1", "room": "x", "ackId": "d"}))
            .await;
        assert_eq!(
            c.recv().await,
            json!({"type": "ack", "namespace": "/dyn1", "ackId": "d"})
        );
        handles.push(within(sockets.recv()).await.expect("socket"));
        clients.push(c);
    }
    // Server→client acks that nobody answers.
    let mut waiters = Vec::new();
    for s in &handles {
        let s = s.clone();
        waiters.push(tokio::spawn(async move {
            s.emit_with_ack::<_, Value>("question", &0).await
        }));
    }
    for c in &mut clients {
        let q = c.recv().await;
        assert_eq!(q["event"], "question");
        assert!(q["ackId"].is_string());
    }
    // Queued bytes: messages queued but not yet written (no await in between).
    for s in &handles {
        s.emit("pending", &"p").expect("queued");
    }
    let loaded = server.server.stats();
    assert!(loaded.queued_bytes > 0);
    assert_eq!(loaded.connections, 3);
    assert_eq!(loaded.rooms, 3 + 1 + 1);
    assert_eq!(loaded.pending_acks, 3);
    assert_eq!(loaded.dynamic_namespaces, 1);

    drop(clients);
    for _ in 0..3 {
        assert_eq!(
            within(reasons.recv()).await.expect("hook"),
            DisconnectReason::TransportClosed
        );
    }
    // The waiters fail promptly with `Closed`, not at the ack timeout.
    for w in waiters {
        assert!(matches!(
            within(w).await.expect("task"),
            Err(AckError::Closed)
        ));
    }
    // Memberships, acks and queues are released before the disconnect hook runs; the
    // connection slot right after it.
    let after = server.server.stats();
    assert_eq!(after.rooms, baseline.rooms);
    assert_eq!(after.pending_acks, baseline.pending_acks);
    assert_eq!(after.queued_bytes, baseline.queued_bytes);
    assert_eq!(after.dynamic_namespaces, baseline.dynamic_namespaces);
    wait_until(|| server.server.stats().connections == baseline.connections).await;
    assert!(server.server.sockets().is_empty());
    assert!(server.server.rooms("/").is_empty());
    assert_eq!(after.closes.get(&1006), Some(&3));
    server.stop().await;
}
