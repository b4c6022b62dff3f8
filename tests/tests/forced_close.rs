//! A forced close (slow consumer 4001) interrupts a write that is stuck on a full socket, whether
//! the connection task is stuck flushing or feeding a batch (tungstenite writes its buffer out
//! while feeding once it exceeds the write buffer size). Paused time over a duplex pipe.

use std::time::Duration;

use tokio::sync::mpsc;
use wsu::{CloseCode, DisconnectReason, Server, Socket};

#[tokio::test(start_paused = true)]
async fn slow_consumer_interrupts_a_feed_stuck_on_a_full_socket() {
    let (reasons_tx, mut reasons) = mpsc::unbounded_channel();
    let (sockets_tx, mut sockets) = mpsc::unbounded_channel();
    let server = Server::builder()
        .max_queued(8, 1 << 20)
        // Far beyond what the test waits: a 4002 would mean the stuck write was not interrupted.
        .write_timeout(Duration::from_secs(60))
        .read_timeout(Duration::from_secs(600))
        .ping_interval(Duration::from_secs(300))
        .on_connect(move |s: Socket| {
            let _ = sockets_tx.send(s);
            async {}
        })
        .on_disconnect(move |_s: Socket, reason: DisconnectReason| {
            let _ = reasons_tx.send(reason);
            async {}
        })
        .build()
        .expect("build");
    let (client_end, server_end) = tokio::io::duplex(1024);
    let s = server.clone();
    tokio::spawn(async move { s.serve_connection(server_end, None).await });
    // The client never reads: the pipe fills at once.
    let (_ws, _) = tokio_tungstenite::client_async("ws://localhost/ws", client_end)
        .await
        .expect("handshake");
    let socket = sockets.recv().await.expect("socket");
    let pad = "x".repeat(16 * 1024);
    // One batch of 128 KiB: the task writes its buffer out while feeding the third message and
    // then blocks feeding the fourth.
    for _ in 0..8 {
        socket.emit("m", &pad).expect("queued");
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        server.stats().queued_bytes > 0,
        "the task is stuck mid-batch"
    );
    let start = tokio::time::Instant::now();
    let mut queued = 0;
    while socket.emit("m", &pad).is_ok() {
        queued += 1;
        assert!(queued <= 8, "the queue never overflowed");
    }
    let reason = reasons.recv().await.expect("disconnect reason");
    assert_eq!(reason.close_code(), CloseCode::SLOW_CONSUMER);
    // Interrupted at once; the close frame, which cannot be written either, is given 1 s.
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}
