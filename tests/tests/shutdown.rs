//! Graceful shutdown: every client gets what was queued, then close 1001; the disconnect hook
//! runs exactly once per connection; `serve` returns; nothing new is accepted afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use wsu::{CloseCode, DisconnectReason, Server, ServerBuilder, Socket, SocketId};
use wsu_tests::{Client, Closed, TestServer, upgrade_request, within};

/// What the disconnect hook saw: how many times it ran, for which connections, and why.
#[derive(Clone, Default)]
struct HookLog {
    runs: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(SocketId, DisconnectReason)>>>,
}

impl HookLog {
    fn install(&self, builder: ServerBuilder) -> Server {
        let log = self.clone();
        builder
            .on_disconnect(move |socket: Socket, reason: DisconnectReason| {
                log.runs.fetch_add(1, Ordering::SeqCst);
                log.seen
                    .lock()
                    .expect("hook log lock")
                    .push((*socket.id(), reason));
                async {}
            })
            .build()
            .expect("build")
    }

    fn entries(&self) -> Vec<(SocketId, DisconnectReason)> {
        self.seen.lock().expect("hook log lock").clone()
    }
}

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
                // Send the close reply tungstenite queued (it goes out with the next write), so
                // the server need not wait for it.
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

fn going_away() -> DisconnectReason {
    DisconnectReason::ServerClosed {
        code: CloseCode::GOING_AWAY,
        reason: "server shutting down".to_owned(),
    }
}

// Single-threaded: the messages are queued and the shutdown requested before any connection
// task can write them, so the drain is what delivers them.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_drains_queues_then_closes_every_client_with_1001() {
    let log = HookLog::default();
    let server = TestServer::start(log.install(Server::builder())).await;
    let addr = server.addr;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = server.client().await;
        c.expect_quiet().await;
        clients.push(c);
    }
    let big = "z".repeat(32 * 1024);
    for i in 0..20 {
        let d = server
            .server
            .emit("news", &serde_json::json!({"i": i, "pad": big}))
            .expect("emit");
        assert_eq!(d.queued, 4);
    }
    assert!(server.server.stats().queued_bytes > 4 * 20 * 32 * 1024);
    let s = server.server.clone();
    let shutdown = tokio::spawn(async move { s.shutdown().await });

    for c in &mut clients {
        let (got, end) = read_until_closed(c).await;
        let order: Vec<u64> = got.iter().map(|d| d["i"].as_u64().expect("i")).collect();
        assert_eq!(order, (0..20).collect::<Vec<u64>>(), "all queued, in order");
        assert_eq!(end, Closed::Frame(1001, "server shutting down".to_owned()));
    }
    within(shutdown).await.expect("shutdown task");
    assert!(server.server.is_shutting_down());

    // Each connection's hook ran once, with the shutdown reason.
    assert_eq!(log.runs.load(Ordering::SeqCst), 4);
    let entries = log.entries();
    let mut ids: Vec<SocketId> = entries.iter().map(|(id, _)| *id).collect();
    ids.sort_by_key(|id| id.to_string());
    ids.dedup();
    assert_eq!(ids.len(), 4);
    assert!(
        entries.iter().all(|(_, r)| *r == going_away()),
        "{:?}",
        entries
            .iter()
            .map(|(_, r)| r.to_string())
            .collect::<Vec<_>>()
    );
    let stats = server.server.stats();
    assert_eq!(stats.connections, 0);
    assert_eq!(stats.queued_bytes, 0);
    assert_eq!(stats.closes.get(&1001), Some(&4));

    // `serve` returns (checked by `stop`), and nothing new is accepted: the listener is closed,
    // and a connection handed to `serve_connection` gets 503.
    let handle = server.server.clone();
    server.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let (mut client_end, server_end) = tokio::io::duplex(4096);
    let task = tokio::spawn(async move { handle.serve_connection(server_end, None).await });
    use tokio::io::AsyncWriteExt;
    client_end
        .write_all(upgrade_request("localhost", "/ws", &[]).as_bytes())
        .await
        .expect("write");
    let mut response = String::new();
    within(client_end.read_to_string(&mut response))
        .await
        .expect("read");
    assert!(
        response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{response:?}"
    );
    within(task).await.expect("serve_connection returns");
    assert_eq!(
        log.runs.load(Ordering::SeqCst),
        4,
        "no hook for a refused upgrade"
    );
}

#[tokio::test]
async fn hook_runs_once_per_connection_when_clients_close_during_shutdown() {
    let log = HookLog::default();
    let server = TestServer::start(log.install(Server::builder())).await;
    let mut closing = server.client().await;
    let mut dropping = server.client().await;
    let mut normal = server.client().await;
    for c in [&mut closing, &mut dropping, &mut normal] {
        c.expect_quiet().await;
    }

    let s = server.server.clone();
    let shutdown = tokio::spawn(async move { s.shutdown().await });
    // Race the server's close: one client closes by itself, one vanishes.
    let _ = closing.ws.close(None).await;
    drop(dropping);
    let end = read_until_closed(&mut normal).await.1;
    assert_eq!(end, Closed::Frame(1001, "server shutting down".to_owned()));
    // Whoever won, the closing client's connection ends with a close frame: the echo of its own
    // (1005: it had no code) or the server's 1001.
    let end = read_until_closed(&mut closing).await.1;
    assert!(
        end == Closed::Frame(1005, String::new())
            || end == Closed::Frame(1001, "server shutting down".to_owned()),
        "{end:?}"
    );
    within(shutdown).await.expect("shutdown task");

    assert_eq!(log.runs.load(Ordering::SeqCst), 3);
    let entries = log.entries();
    let mut ids: Vec<String> = entries.iter().map(|(id, _)| id.to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one hook run per connection");
    assert_eq!(server.server.stats().closes.values().sum::<u64>(), 3);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_twice_and_shutdown_without_clients_return() {
    let log = HookLog::default();
    let server = TestServer::start(log.install(Server::builder())).await;
    within(server.server.shutdown()).await;
    within(server.server.shutdown()).await;
    server.stop().await;
    assert_eq!(log.runs.load(Ordering::SeqCst), 0);
}

// A client whose socket is full cannot receive the queued messages nor the close frame: the
// shutdown still ends within the shutdown timeout (the forced close interrupts the stalled write
// at 1.5 s; the close frame gets what is left until 1.8 s) and the disconnect hook runs once.
#[tokio::test(start_paused = true)]
async fn shutdown_with_a_stalled_client_ends_at_the_shutdown_timeout() {
    let log = HookLog::default();
    let (tx, mut sockets) = mpsc::unbounded_channel();
    let server = log.install(
        Server::builder()
            .shutdown_timeout(Duration::from_secs(2))
            .write_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .ping_interval(Duration::from_secs(30))
            .on_connect(move |s: Socket| {
                let _ = tx.send(s);
                async {}
            }),
    );
    let (client_end, server_end) = tokio::io::duplex(1024);
    let s = server.clone();
    tokio::spawn(async move { s.serve_connection(server_end, None).await });
    let (_ws, _) = tokio_tungstenite::client_async("ws://localhost/ws", client_end)
        .await
        .expect("handshake");
    let socket = sockets.recv().await.expect("socket");
    let start = tokio::time::Instant::now();
    for _ in 0..8 {
        socket.emit("big", &"x".repeat(4096)).expect("queued");
    }
    // The connection task takes the messages and blocks writing into the full pipe.
    wsu_tests::wait_until(|| server.stats().queued_bytes == 0).await;

    server.shutdown().await;
    // The drain ends at 1.5 s (3/4 of the 2 s grace period); the forced close interrupts the
    // stuck write, and the close frame that cannot be written is given what is left until
    // 1.8 s, when connection tasks would be dropped.
    assert_eq!(start.elapsed(), Duration::from_millis(1800));
    assert_eq!(log.runs.load(Ordering::SeqCst), 1);
    assert_eq!(log.entries()[0].1.close_code(), CloseCode::GOING_AWAY);
    assert_eq!(server.stats().connections, 0);
}
