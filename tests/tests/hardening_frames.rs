//! Hardening, WebSocket framing: cases 7–12 of `shared/notes/reliability.md` (the full table is
//! in `SECURITY.md`).
//!
//! Every violation must end in a close frame with the documented code (1002, 1007 or 1009; never
//! a bare drop), while a [`Canary`] on the same server keeps getting its pongs, and the gauges of
//! `Server::stats` return to baseline once the attacker is gone. The unfinished fragmented
//! message (case 11) runs under paused time over an in-memory pipe, so the read timeout fires at
//! its exact instant.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use tokio::io::{AsyncWriteExt, DuplexStream, duplex};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wsu::Server;
use wsu_tests::{
    Canary, Gauges, RawWs, TestServer, frame_bytes, opcode, rss_bytes, text_frame, upgrade_request,
    wait_for_gauges, within,
};

/// A raw client that has joined room `r` (so that its leaving shows in the gauges).
async fn attacker(server: &TestServer, extra: &[(&str, &str)]) -> RawWs<TcpStream> {
    let (head, mut ws) = RawWs::connect(server.addr, extra).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    ws.send_json(&json!({"type": "join", "room": "r", "ackId": "j"}))
        .await;
    assert_eq!(
        within(ws.next_json()).await,
        json!({"type": "ack", "namespace": "/", "ackId": "j"})
    );
    ws
}

/// Read until the close frame; return its code and reason, and check the server then ends the
/// TCP connection.
async fn close_then_eof(ws: &mut RawWs<TcpStream>, what: &str) -> (u16, String) {
    let close = loop {
        let frame = within(ws.read_frame())
            .await
            .unwrap_or_else(|| panic!("{what}: the connection ended without a close frame"));
        assert!(!frame.masked, "{what}: server frames are never masked");
        if let Some(close) = frame.close() {
            break close;
        }
    };
    assert!(within(ws.at_eof()).await, "{what}: EOF after the close");
    close
}

/// A framing violation: what it is, the extra upgrade headers, the bytes sent after the upgrade,
/// and the expected close code.
type Violation<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<u8>, u16);

// Cases 7, 8, 12: every kind of framing violation, each on its own connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case07_08_12_framing_violations_close_with_their_code_and_leave_no_trace() {
    let server = TestServer::start(Server::builder().build().expect("build")).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let ping = br#"{"type":"ping"}"#;
    let text = |fin: bool, payload: &[u8]| {
        frame_bytes(if fin { 0x80 } else { 0 } | opcode::TEXT, payload, true)
    };
    let continuation = |fin: bool, payload: &[u8]| {
        frame_bytes(
            if fin { 0x80 } else { 0 } | opcode::CONTINUATION,
            payload,
            true,
        )
    };
    let deflate = [("Sec-WebSocket-Extensions", "permessage-deflate")];
    let cases: Vec<Violation<'_>> = vec![
        (
            "rsv1 after a permessage-deflate offer (case 7)",
            &deflate,
            frame_bytes(0x80 | 0x40 | opcode::TEXT, ping, true),
            1002,
        ),
        (
            "rsv2",
            &[],
            frame_bytes(0x80 | 0x20 | opcode::TEXT, ping, true),
            1002,
        ),
        (
            "rsv3",
            &[],
            frame_bytes(0x80 | 0x10 | opcode::BINARY, ping, true),
            1002,
        ),
        (
            "unmasked frame",
            &[],
            frame_bytes(0x80 | opcode::TEXT, ping, false),
            1002,
        ),
        (
            "reserved data opcode",
            &[],
            frame_bytes(0x80 | 0x7, ping, true),
            1002,
        ),
        (
            "reserved control opcode",
            &[],
            frame_bytes(0x80 | 0xF, b"", true),
            1002,
        ),
        (
            "fragmented ping",
            &[],
            frame_bytes(opcode::PING, b"x", true),
            1002,
        ),
        (
            "ping longer than 125 bytes",
            &[],
            frame_bytes(0x80 | opcode::PING, &[b'p'; 126], true),
            1002,
        ),
        ("stray continuation", &[], continuation(true, ping), 1002),
        (
            "new data frame inside a fragmented message",
            &[],
            [text(false, b"{\"type\":"), text(true, b"\"ping\"}")].concat(),
            1002,
        ),
        (
            "invalid utf-8 in a text frame (case 12)",
            &[],
            text(true, b"{\"type\":\"\xc3\x28\"}"),
            1007,
        ),
        (
            "invalid utf-8 across fragments (case 12)",
            &[],
            [
                text(false, b"{\"type\":\"\xf0\x9f"),
                continuation(true, b"\x41\"}"),
            ]
            .concat(),
            1007,
        ),
        (
            "overlong utf-8 encoding (case 12)",
            &[],
            text(true, b"\"\xc0\xaf\""),
            1007,
        ),
    ];
    let total = cases.len();
    for (what, extra, bytes, want) in cases {
        let mut ws = attacker(&server, extra).await;
        ws.send_raw(&bytes).await;
        let (code, reason) = close_then_eof(&mut ws, what).await;
        assert_eq!(code, want, "{what}: {reason}");
        let prefix = match want {
            1002 => "protocol error",
            _ => "invalid utf-8 in text frame",
        };
        assert!(reason.starts_with(prefix), "{what}: {reason}");
        drop(ws);
        wait_for_gauges(&server.server, baseline).await;
    }
    let stats = server.server.stats();
    assert_eq!(
        stats.closes.values().sum::<u64>(),
        total as u64,
        "{:?}",
        stats.closes
    );
    let report = canary.stop().await;
    eprintln!("case 7/8/12: {report}");
    server.stop().await;
}

// Case 9: 100 messages of the limit + 1 byte (the default limit, 64 KiB), from 100 connections at
// once: 1009 each; gauges back; memory back (RSS within a generous bound of the start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case09_100_oversized_messages_get_1009_and_memory_comes_back() {
    let server = TestServer::start(Server::builder().build().expect("build")).await;
    let limit = server.server.config().max_message_size;
    assert_eq!(limit, 64 * 1024, "the default");
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let over = format!("\"{}\"", "x".repeat(limit - 1));
    assert_eq!(over.len(), limit + 1);
    let frame = text_frame(&over);

    let rss_before = rss_bytes(None);
    for round in 0..2 {
        let ends = join_all((0..50).map(|_| async {
            let mut ws = attacker(&server, &[]).await;
            ws.send_raw(&frame).await;
            close_then_eof(&mut ws, "oversized").await
        }))
        .await;
        for end in ends {
            assert_eq!(end, (1009, "message too big".to_owned()), "round {round}");
        }
        wait_for_gauges(&server.server, baseline).await;
    }
    assert_eq!(server.server.stats().closes.get(&1009), Some(&100));
    if let (Some(before), Some(after)) = (rss_before, rss_bytes(None)) {
        let grown = after.saturating_sub(before);
        eprintln!("case 9: RSS {before} -> {after} bytes (+{grown})");
        assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    }
    let report = canary.stop().await;
    eprintln!("case 9: {report}");
    server.stop().await;
}

/// The header of a masked text frame that declares `len` payload bytes (64-bit length form),
/// followed by the masking key.
fn huge_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x80 | opcode::TEXT, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]);
    h
}

// Case 10: a frame header declaring 2^63 (or 2^63 - 1, or 1 GiB) bytes, then a trickle: 1009 at
// once, without waiting for (or reserving room for) the payload. The payload never comes, so the
// close can only be a reaction to the header itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case10_a_frame_header_declaring_2_63_bytes_gets_1009_at_once() {
    let server = TestServer::start(Server::builder().build().expect("build")).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    for len in [1u64 << 63, u64::MAX >> 1, 1 << 30, 64 * 1024 + 1] {
        let mut ws = attacker(&server, &[]).await;
        let rss_before = rss_bytes(None);
        ws.send_raw(&huge_header(len)).await;
        // A trickle of payload bytes: never close to the declared length.
        ws.send_raw(b"xxxx").await;
        let end = close_then_eof(&mut ws, "huge header").await;
        assert_eq!(end, (1009, "message too big".to_owned()), "declared {len}");
        if let (Some(before), Some(after)) = (rss_before, rss_bytes(None)) {
            let grown = after.saturating_sub(before);
            assert!(grown < 16 << 20, "declared {len}: RSS grew by {grown}");
        }
        drop(ws);
        wait_for_gauges(&server.server, baseline).await;
    }
    let report = canary.stop().await;
    eprintln!("case 10: {report}");
    server.stop().await;
}

// ---- Case 11 under paused time -------------------------------------------------------------------

const SECOND: Duration = Duration::from_secs(1);

/// Serve one in-memory connection and complete a raw handshake on it.
async fn raw_pipe(server: &Server) -> RawWs<DuplexStream> {
    let (client, server_end) = duplex(256 * 1024);
    let s = server.clone();
    tokio::spawn(async move { s.serve_connection(server_end, None).await });
    let (head, ws) =
        RawWs::handshake(client, upgrade_request("localhost", "/ws", &[]).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    ws
}

/// The close frame that ends `ws`, skipping the server's pings; and the end of the stream.
async fn close_of(ws: &mut RawWs<DuplexStream>) -> (u16, String) {
    let close = ws.expect_close().await;
    assert!(ws.at_eof().await, "EOF after the close frame");
    close
}

// Case 11a: the first fragment of a message, then a trickle of continuation fragments that never
// finishes it, and nothing else. Fragments do not count as liveness until the message completes:
// closed with 4000 exactly at the read timeout.
#[tokio::test(start_paused = true)]
async fn case11_unfinished_fragmented_message_ends_at_the_read_timeout() {
    let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let server = Server::builder()
        .ping_interval(2 * SECOND)
        .read_timeout(5 * SECOND)
        .on_disconnect(move |_s: wsu::Socket, reason: wsu::DisconnectReason| {
            let _ = tx.send((start.elapsed(), reason.close_code().as_u16()));
            async {}
        })
        .build()
        .expect("build");
    let mut ws = raw_pipe(&server).await;
    let mut other = raw_pipe(&server).await;
    ws.send_raw(&frame_bytes(opcode::TEXT, b"[", true)).await;
    for i in 0..10 {
        tokio::time::sleep(SECOND).await;
        // Write errors once the server closed are expected.
        let _ = ws
            .stream
            .write_all(&frame_bytes(opcode::CONTINUATION, b"1,", true))
            .await;
        // Meanwhile another connection is served normally (its pings keep it alive).
        other
            .send_json(&json!({"type": "ping", "namespace": format!("/{i}")}))
            .await;
        assert_eq!(
            other.next_json().await,
            json!({"type": "pong", "namespace": format!("/{i}")})
        );
    }
    assert_eq!(
        close_of(&mut ws).await,
        (4000, "heartbeat timeout".to_owned())
    );
    assert_eq!(closed.recv().await, Some((5 * SECOND, 4000)));
    let stats = server.stats();
    assert_eq!(stats.closes.get(&4000), Some(&1));
    assert_eq!(stats.connections, 1, "only the other connection is left");
}

// Case 11b: the same, with a ping between fragments (pings count as liveness, so the read
// timeout never fires): the message is bounded by the size limit instead, 1009 when the
// fragments add up to more than `max_message_size`.
#[tokio::test(start_paused = true)]
async fn case11_unfinished_fragmented_message_kept_alive_is_bounded_by_the_size_limit() {
    let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let server = Server::builder()
        .ping_interval(2 * SECOND)
        .read_timeout(5 * SECOND)
        .max_message_size(8 * 1024)
        .on_disconnect(move |_s: wsu::Socket, reason: wsu::DisconnectReason| {
            let _ = tx.send((start.elapsed(), reason.close_code().as_u16()));
            async {}
        })
        .build()
        .expect("build");
    let mut ws = raw_pipe(&server).await;
    ws.send_raw(&frame_bytes(opcode::TEXT, &[b' '; 1024], true))
        .await;
    // 1 KiB more every 2 s, each preceded by a ping: 8 KiB (the limit) after 7 fragments, 9 KiB at
    // the 8th, 16 s after the start: three read timeouts later.
    for _ in 1..=8 {
        tokio::time::sleep(2 * SECOND).await;
        assert!(closed.try_recv().is_err(), "still open");
        ws.send_raw(&frame_bytes(0x80 | opcode::PING, b"alive", true))
            .await;
        ws.send_raw(&frame_bytes(opcode::CONTINUATION, &[b' '; 1024], true))
            .await;
    }
    assert_eq!(
        close_of(&mut ws).await,
        (1009, "message too big".to_owned())
    );
    // The disconnect hook runs after the lingering close (up to 1 s of discarding input).
    let (at, code) = closed.recv().await.expect("hook");
    assert_eq!(code, 1009);
    assert!(at >= 16 * SECOND && at <= 17 * SECOND, "{at:?}");
    assert_eq!(server.stats().closes.get(&1009), Some(&1));
    assert_eq!(server.stats().connections, 0);
}
