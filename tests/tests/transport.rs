//! Transport-level behaviour over real TCP: the HTTP upgrade (Origin policy, refusals with
//! exactly one response, static assets, extensions, capacity) and WebSocket framing errors
//! (1009, 1007, 1002), the client-initiated close, and the counters in `Server::stats`.
//!
//! HTTP-level cases write raw bytes on a `TcpStream` and read until the server closes, so that
//! the exact status line and the number of responses can be checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tokio::sync::mpsc;
use wsu::{CloseCode, DisconnectReason, OriginPolicy, Server, Socket};
use wsu_tests::{
    Closed, RawWs, SAMPLE_ACCEPT, TestServer, frame_bytes, header_value, http_exchange, opcode,
    status_lines, text_frame, upgrade_request, within,
};

/// A server whose connect hook counts the connections that reached it.
fn counting_server(builder: wsu::ServerBuilder) -> (Server, Arc<AtomicUsize>) {
    let hooks = Arc::new(AtomicUsize::new(0));
    let h = hooks.clone();
    let server = builder
        .on_connect(move |_socket: Socket| {
            h.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .build()
        .expect("build");
    (server, hooks)
}

/// The status line of a response.
fn status(response: &str) -> &str {
    response.split("\r\n").next().unwrap_or_default()
}

/// A refused upgrade attempt with these extra headers: the whole response, read to EOF.
async fn refused_upgrade(server: &TestServer, extra: &[(&str, &str)]) -> String {
    let req = upgrade_request(&server.addr.to_string(), "/ws", extra);
    refused(server, req.as_bytes()).await
}

/// An accepted upgrade with these extra headers, checked with a request round trip (a `join` of
/// `/` with an ackId: requests run after the connect phase, so its ack also proves that the
/// connection's connect hook has finished).
async fn accepted_upgrade(
    server: &TestServer,
    extra: &[(&str, &str)],
) -> RawWs<tokio::net::TcpStream> {
    let (head, mut ws) = RawWs::connect(server.addr, extra).await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{extra:?}: {head}"
    );
    assert_eq!(
        header_value(&head, "Sec-WebSocket-Accept"),
        Some(SAMPLE_ACCEPT)
    );
    ws.send_json(&json!({"type": "join", "namespace": "/", "ackId": "ready"}))
        .await;
    assert_eq!(
        within(ws.next_json()).await,
        json!({"type": "ack", "namespace": "/", "ackId": "ready"})
    );
    ws
}

/// Send `request`, read to EOF, check there is exactly one response and return it.
async fn refused(server: &TestServer, request: &[u8]) -> String {
    let response = http_exchange(server.addr, request).await;
    assert_eq!(
        status_lines(&response),
        1,
        "exactly one response: {response:?}"
    );
    response
}

// ---- Origin policy ---------------------------------------------------------------------------

#[tokio::test]
async fn default_policy_admits_same_origin_and_no_origin_and_refuses_others_before_any_hook() {
    let (server, hooks) = counting_server(Server::builder());
    let server = TestServer::start(server).await;

    for origin in ["http://evil.example", "http://localhost:1", "null", ""] {
        let r = refused_upgrade(&server, &[("Origin", origin)]).await;
        assert_eq!(status(&r), "HTTP/1.1 403 Forbidden", "origin {origin:?}");
        assert!(r.ends_with("\r\n\r\norigin not allowed\n"), "{r:?}");
    }
    assert_eq!(
        hooks.load(Ordering::SeqCst),
        0,
        "no hook ran for a refused origin"
    );

    // Same origin as the Host header (the scheme is not compared).
    let same = format!("http://{}", server.addr);
    let a = accepted_upgrade(&server, &[("Origin", &same)]).await;
    let b = accepted_upgrade(&server, &[("Origin", &format!("https://{}", server.addr))]).await;
    // No Origin header (a non-browser client): accepted by default.
    let c = accepted_upgrade(&server, &[]).await;

    // Refused after accepted ones too: still no hook.
    let r = refused_upgrade(&server, &[("Origin", "http://127.0.0.1:1")]).await;
    assert_eq!(status(&r), "HTTP/1.1 403 Forbidden");
    let stats = server.server.stats();
    assert_eq!(
        hooks.load(Ordering::SeqCst),
        3,
        "one hook per accepted connection"
    );
    assert_eq!(stats.connections_total, 3);
    assert_eq!(stats.handshakes_refused, 5);
    drop((a, b, c));
    server.stop().await;
}

#[tokio::test]
async fn allow_list_matches_exact_normalised_origins_only() {
    let policy = OriginPolicy::allow_list(["https://app.example"]).expect("valid origin");
    let (server, hooks) = counting_server(Server::builder().origins(policy));
    let server = TestServer::start(server).await;

    let mut open = Vec::new();
    for ok in [
        "https://app.example",
        "HTTPS://APP.EXAMPLE",
        "https://App.Example:443",
        "https://app.example/",
    ] {
        open.push(accepted_upgrade(&server, &[("Origin", ok)]).await);
    }
    for bad in [
        "https://app.example.evil.com",
        "https://evil.example",
        "http://app.example",
        "wss://app.example",
        "https://app.example:8443",
        "null",
        "https://app.example/path",
    ] {
        let r = refused_upgrade(&server, &[("Origin", bad)]).await;
        assert_eq!(status(&r), "HTTP/1.1 403 Forbidden", "origin {bad:?}");
    }
    // No Origin: still allowed with an allow-list, unless allow_missing(false).
    open.push(accepted_upgrade(&server, &[]).await);
    assert_eq!(server.server.stats().handshakes_refused, 7);
    assert_eq!(hooks.load(Ordering::SeqCst), 5);
    drop(open);
    server.stop().await;
}

#[tokio::test]
async fn allow_missing_false_refuses_requests_without_origin() {
    let policy = OriginPolicy::allow_list(["https://app.example"])
        .expect("valid origin")
        .allow_missing(false);
    let (server, hooks) = counting_server(Server::builder().origins(policy));
    let server = TestServer::start(server).await;
    let r = refused_upgrade(&server, &[]).await;
    assert_eq!(status(&r), "HTTP/1.1 403 Forbidden");
    assert_eq!(hooks.load(Ordering::SeqCst), 0);
    let ok = accepted_upgrade(&server, &[("Origin", "https://app.example")]).await;
    assert_eq!(server.server.stats().handshakes_refused, 1);
    assert_eq!(hooks.load(Ordering::SeqCst), 1);
    drop(ok);
    server.stop().await;
}

// ---- Refused HTTP requests: one response each ------------------------------------------------

#[tokio::test]
async fn plain_get_unknown_path_post_bad_version_bad_key_each_get_one_response() {
    let (server, hooks) = counting_server(Server::builder());
    let server = TestServer::start(server).await;
    let host = server.addr.to_string();

    let r = refused(
        &server,
        format!("GET /ws HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 426 Upgrade Required");

    let r = refused(
        &server,
        format!("GET /nope HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 404 Not Found");
    let r = refused(&server, upgrade_request(&host, "/nope", &[]).as_bytes()).await;
    assert_eq!(status(&r), "HTTP/1.1 404 Not Found");

    let post = upgrade_request(&host, "/ws", &[]).replacen("GET", "POST", 1);
    let r = refused(&server, post.as_bytes()).await;
    assert_eq!(status(&r), "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(header_value(&r, "Allow"), Some("GET"));

    let bad_version = upgrade_request(&host, "/ws", &[])
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let r = refused(&server, bad_version.as_bytes()).await;
    assert_eq!(status(&r), "HTTP/1.1 426 Upgrade Required");
    assert_eq!(header_value(&r, "Sec-WebSocket-Version"), Some("13"));

    let bad_key =
        upgrade_request(&host, "/ws", &[]).replace(wsu_tests::SAMPLE_KEY, "not-a-valid-key");
    let r = refused(&server, bad_key.as_bytes()).await;
    assert_eq!(status(&r), "HTTP/1.1 400 Bad Request");
    assert!(r.ends_with("invalid sec-websocket-key\n"), "{r:?}");

    let r = refused(&server, b"\x16\x03\x01 garbage that is no http\r\n\r\n").await;
    assert_eq!(status(&r), "HTTP/1.1 400 Bad Request");

    assert_eq!(server.server.stats().handshakes_refused, 7);
    assert_eq!(hooks.load(Ordering::SeqCst), 0);
    assert_eq!(server.server.stats().connections_total, 0);
    server.stop().await;
}

#[tokio::test]
async fn huge_header_line_and_too_many_headers_get_431() {
    let server = TestServer::start(Server::builder().build().expect("build")).await;
    let host = server.addr.to_string();

    let long = "a".repeat(100 * 1024);
    let r = refused(
        &server,
        upgrade_request(&host, "/ws", &[("X-Long", &long)]).as_bytes(),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 431 Request Header Fields Too Large");

    // 2000 tiny headers (16 000 bytes: under the 16 KiB head limit, over the 64-header limit).
    let many: Vec<(String, String)> = (0..2000)
        .map(|_| ("X-A".to_owned(), "b".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let request = upgrade_request(&host, "/ws", &many);
    assert!(request.len() < 17 * 1024);
    let r = refused(&server, request.as_bytes()).await;
    assert_eq!(status(&r), "HTTP/1.1 431 Request Header Fields Too Large");

    assert_eq!(server.server.stats().handshakes_refused, 2);
    // The server still serves.
    server.client().await.expect_quiet().await;
    server.stop().await;
}

#[tokio::test]
async fn static_asset_is_served_on_get_and_head() {
    let server = Server::builder()
        .asset(
            "/index.html",
            "text/html; charset=utf-8",
            &b"<h1>hi</h1>"[..],
        )
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let host = server.addr.to_string();

    let r = http_exchange(
        server.addr,
        format!("GET /index.html HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert_eq!(status_lines(&r), 1);
    assert_eq!(
        header_value(&r, "Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header_value(&r, "Content-Length"), Some("11"));
    assert!(r.ends_with("\r\n\r\n<h1>hi</h1>"), "{r:?}");

    let r = http_exchange(
        server.addr,
        format!("HEAD /index.html HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert_eq!(header_value(&r, "Content-Length"), Some("11"));
    assert!(r.ends_with("\r\n\r\n"), "HEAD has no body: {r:?}");

    let r = refused(
        &server,
        format!("DELETE /index.html HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 405 Method Not Allowed");
    // Serving an asset is no refusal.
    assert_eq!(server.server.stats().handshakes_refused, 1);
    server.stop().await;
}

// ---- Upgrade details ---------------------------------------------------------------------------

#[tokio::test]
async fn permessage_deflate_offer_is_ignored_and_rsv1_is_a_protocol_error() {
    let server = TestServer::start(Server::builder().build().expect("build")).await;
    let (head, mut ws) = RawWs::connect(
        server.addr,
        &[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )],
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert_eq!(header_value(&head, "Sec-WebSocket-Extensions"), None);
    assert_eq!(
        header_value(&head, "Sec-WebSocket-Accept"),
        Some(SAMPLE_ACCEPT)
    );

    // Uncompressed traffic works.
    ws.send_json(&json!({"type": "ping"})).await;
    assert_eq!(
        within(ws.next_json()).await,
        json!({"type": "pong", "namespace": "/"})
    );

    // A frame claiming compression (RSV1) without the extension negotiated: 1002.
    ws.send_raw(&frame_bytes(
        0x80 | 0x40 | opcode::TEXT,
        br#"{"type":"ping"}"#,
        true,
    ))
    .await;
    let (code, _reason) = within(ws.expect_close()).await;
    assert_eq!(code, 1002);
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn frame_pipelined_with_the_upgrade_request_is_processed() {
    let server = TestServer::start(Server::builder().build().expect("build")).await;
    let mut bytes = upgrade_request(&server.addr.to_string(), "/ws", &[]).into_bytes();
    bytes.extend_from_slice(&text_frame(r#"{"type":"ping","namespace":"/early"}"#));
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("tcp connect");
    let (head, mut ws) = within(RawWs::handshake(tcp, &bytes)).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(
        within(ws.next_json()).await,
        json!({"type": "pong", "namespace": "/early"})
    );
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn max_connections_refuses_the_next_upgrade_with_503_and_others_keep_working() {
    let server = Server::builder().max_connections(2).build().expect("build");
    let server = TestServer::start(server).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.expect_quiet().await;
    b.expect_quiet().await;

    let r = refused(
        &server,
        upgrade_request(&server.addr.to_string(), "/ws", &[]).as_bytes(),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable");
    assert!(r.ends_with("server at capacity\n"), "{r:?}");

    a.expect_quiet().await;
    b.expect_quiet().await;
    let stats = server.server.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.handshakes_refused, 1);
    drop((a, b));
    server.stop().await;
}

// ---- Framing errors: a close frame with the right code, never a bare drop ----------------------

#[tokio::test]
async fn oversized_message_gets_close_1009_and_a_canary_keeps_working() {
    let server = Server::builder()
        .max_message_size(1024)
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let mut canary = server.client().await;
    canary.expect_quiet().await;

    // Exactly at the limit: accepted (an invalid envelope, answered with an error).
    let mut attacker = server.client().await;
    let at_limit = format!("\"{}\"", "x".repeat(1022));
    assert_eq!(at_limit.len(), 1024);
    attacker.send_text(&at_limit).await;
    assert_eq!(attacker.recv().await["type"], "error");

    // One byte more: 1009 with a close frame.
    let over = format!("\"{}\"", "x".repeat(1023));
    attacker.send_text(&over).await;
    assert_eq!(
        attacker.closed().await,
        Closed::Frame(1009, "message too big".to_owned())
    );
    canary.expect_quiet().await;

    // The same with a raw client, checking the frame itself.
    let (_, mut raw) = RawWs::connect(server.addr, &[]).await;
    raw.send_raw(&text_frame(&over)).await;
    assert_eq!(
        within(raw.expect_close()).await,
        (1009, "message too big".to_owned())
    );
    canary.expect_quiet().await;
    drop((canary, attacker, raw));
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_gets_close_1007() {
    let server = TestServer::start(Server::builder().build().expect("build")).await;
    let (_, mut ws) = RawWs::connect(server.addr, &[]).await;
    ws.send_raw(&frame_bytes(
        0x80 | opcode::TEXT,
        b"{\"type\":\"\xff\xfe\"}",
        true,
    ))
    .await;
    assert_eq!(
        within(ws.expect_close()).await,
        (1007, "invalid utf-8 in text frame".to_owned())
    );
    let mut canary = server.client().await;
    canary.expect_quiet().await;
    drop((ws, canary));
    server.stop().await;
}

#[tokio::test]
async fn protocol_violations_get_close_1002() {
    let (tx, mut reasons) = mpsc::unbounded_channel();
    let server = Server::builder()
        .on_disconnect(move |_socket: Socket, reason: DisconnectReason| {
            let _ = tx.send(reason);
            async {}
        })
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let ping = br#"{"type":"ping"}"#;
    let cases: [(&str, Vec<u8>); 5] = [
        (
            "unmasked frame",
            frame_bytes(0x80 | opcode::TEXT, ping, false),
        ),
        ("reserved opcode 3", frame_bytes(0x80 | 0x3, ping, true)),
        ("reserved opcode 0xB", frame_bytes(0x80 | 0xB, b"", true)),
        (
            "rsv1 bit",
            frame_bytes(0x80 | 0x40 | opcode::TEXT, ping, true),
        ),
        (
            "stray continuation",
            frame_bytes(0x80 | opcode::CONTINUATION, ping, true),
        ),
    ];
    for (what, bytes) in cases {
        let (_, mut ws) = RawWs::connect(server.addr, &[]).await;
        // The connection works before the violation.
        ws.send_json(&json!({"type": "ping"})).await;
        assert_eq!(within(ws.next_json()).await["type"], "pong", "{what}");
        ws.send_raw(&bytes).await;
        let frame = within(ws.read_frame())
            .await
            .expect("a close frame, not a drop");
        assert!(!frame.masked, "{what}: server frames are unmasked");
        let (code, reason) = frame.close().expect("a close frame");
        assert_eq!(code, 1002, "{what}: {reason}");
        assert!(reason.starts_with("protocol error"), "{what}: {reason}");
        // The server ends the connection: EOF after the close frame.
        assert!(within(ws.at_eof()).await, "{what}");
        drop(ws);
        let seen = within(reasons.recv()).await.expect("hook");
        assert_eq!(
            seen,
            DisconnectReason::ServerClosed {
                code: CloseCode::PROTOCOL_ERROR,
                reason
            },
            "{what}"
        );
    }
    let stats = server.server.stats();
    assert_eq!(stats.closes.get(&1002), Some(&5));
    server.stop().await;
}

#[tokio::test]
async fn fragmented_ping_is_a_protocol_error() {
    let server = TestServer::start(Server::builder().build().expect("build")).await;
    let (_, mut ws) = RawWs::connect(server.addr, &[]).await;
    // A control frame without FIN.
    ws.send_raw(&frame_bytes(opcode::PING, b"x", true)).await;
    let (code, _) = within(ws.expect_close()).await;
    assert_eq!(code, 1002);
    drop(ws);
    server.stop().await;
}

// ---- Client close ------------------------------------------------------------------------------

#[tokio::test]
async fn client_close_is_answered_and_the_hook_sees_client_closed() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .on_disconnect(move |_socket: Socket, reason: DisconnectReason| {
            let _ = tx.send(reason);
            async {}
        })
        .build()
        .expect("build");
    let server = TestServer::start(server).await;

    let (_, mut ws) = RawWs::connect(server.addr, &[]).await;
    within(ws.expect_hello()).await;
    let mut payload = 4100u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    ws.send_raw(&frame_bytes(0x80 | opcode::CLOSE, &payload, true))
        .await;
    let frame = within(ws.read_frame()).await.expect("the server answers");
    assert_eq!(frame.close(), Some((4100, "bye".to_owned())));
    assert!(
        within(ws.at_eof()).await,
        "the server then closes the TCP connection"
    );

    let reason = within(rx.recv()).await.expect("hook ran");
    assert_eq!(
        reason,
        DisconnectReason::ClientClosed {
            code: CloseCode::new(4100),
            reason: "bye".to_owned()
        }
    );

    // A close frame without a code: reported as 1005.
    let mut client = server.client().await;
    client.expect_quiet().await;
    client.ws.close(None).await.expect("send close");
    assert_eq!(client.closed().await, Closed::Frame(1005, String::new()));
    let reason = within(rx.recv()).await.expect("hook ran");
    assert_eq!(reason.close_code(), CloseCode::NO_STATUS);
    assert!(matches!(reason, DisconnectReason::ClientClosed { .. }));
    server.stop().await;
}

// ---- Counters ----------------------------------------------------------------------------------

#[tokio::test]
async fn stats_count_messages_closes_and_refused_handshakes() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .max_message_size(64)
        .on_disconnect(move |_socket: Socket, reason: DisconnectReason| {
            let _ = tx.send(reason.close_code().as_u16());
            async {}
        })
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let before = server.server.stats();
    assert_eq!(before, wsu::Stats::default());

    let r = refused(
        &server,
        format!("GET /ws HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes(),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 426 Upgrade Required");
    assert_eq!(server.server.stats().handshakes_refused, 1);

    let mut client = server.client().await;
    for _ in 0..3 {
        client.send(json!({"type": "ping"})).await;
        assert_eq!(
            client.recv().await,
            json!({"type": "pong", "namespace": "/"})
        );
    }
    assert_eq!(
        client.close(1000, "done").await,
        Closed::Frame(1000, "done".to_owned())
    );
    assert_eq!(within(rx.recv()).await, Some(1000));

    let mut big = server.client().await;
    big.send_text(&"x".repeat(65)).await;
    assert_eq!(
        big.closed().await,
        Closed::Frame(1009, "message too big".to_owned())
    );
    drop(big);
    assert_eq!(within(rx.recv()).await, Some(1009));

    let stats = server.server.stats();
    assert_eq!(stats.messages_in, 3, "the oversized message is not counted");
    // The three pongs, and the hello each of the two connections started with.
    assert_eq!(stats.messages_out, 3 + 2);
    assert_eq!(stats.connections_total, 2);
    assert_eq!(stats.handshakes_refused, 1);
    assert_eq!(
        stats.closes.into_iter().collect::<Vec<_>>(),
        vec![(1000, 1), (1009, 1)]
    );
    server.stop().await;
}
