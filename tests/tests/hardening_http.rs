//! Hardening, HTTP upgrade: cases 1–6 and 33 of `shared/notes/reliability.md` (the full table
//! of the 33 cases and the tests that cover them is in `SECURITY.md`).
//!
//! Each test attacks a real server on `127.0.0.1:0` while a [`Canary`] keeps sending JSON pings,
//! asserts the documented outcome (the exact HTTP status, exactly one response), that no hook ran
//! for a refused request, and that the gauges of `Server::stats` return to their baseline.
//! Cases 1–3 and 6 are also covered in detail (every refusal text) by `transport.rs`; these
//! tests add the canary, the gauges and volume.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsu::{OriginPolicy, Server, Socket, SocketId};
use wsu_tests::{
    Canary, Gauges, RawWs, TestServer, cpu_time, http_exchange, status_lines, upgrade_request,
    wait_for_gauges, within,
};

/// Build with a connect hook counting the connections that reached it.
fn counting(builder: wsu::ServerBuilder) -> (Server, Arc<AtomicUsize>) {
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

/// The status line of an HTTP response.
fn status(response: &str) -> &str {
    response.split("\r\n").next().unwrap_or_default()
}

/// Send `request` on a new connection, read to EOF, check there is exactly one response.
async fn one_response(server: &TestServer, request: &[u8]) -> String {
    let response = http_exchange(server.addr, request).await;
    assert_eq!(status_lines(&response), 1, "one response: {response:?}");
    response
}

// Cases 1, 2, 3: Cross-Site WebSocket Hijacking attempts against an allow-list, in volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case01_03_refused_origins_run_no_hook_and_leave_the_gauges_at_baseline() {
    let policy = OriginPolicy::allow_list(["https://app.example"]).expect("valid origin");
    let (server, hooks) = counting(Server::builder().origins(policy));
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let host = server.addr.to_string();

    let evil = [
        "https://evil.example",
        "https://app.example.evil.com",
        "https://evil.com/https://app.example",
        "http://app.example",
        "wss://app.example",
        "https://app.example:8443",
        "https://app.example:443@evil.com",
        "null",
        "",
        "https://app.example/path",
    ];
    let attempts = join_all((0..20).flat_map(|_| evil.iter()).map(|origin| {
        let request = upgrade_request(&host, "/ws", &[("Origin", origin)]);
        let server = &server;
        async move { (origin, one_response(server, request.as_bytes()).await) }
    }))
    .await;
    for (origin, response) in &attempts {
        assert_eq!(status(response), "HTTP/1.1 403 Forbidden", "{origin:?}");
        assert!(
            response.ends_with("\r\n\r\norigin not allowed\n"),
            "{response:?}"
        );
    }
    assert_eq!(
        hooks.load(Ordering::SeqCst),
        1,
        "only the canary's hook ran"
    );
    assert_eq!(
        server.server.stats().handshakes_refused,
        attempts.len() as u64
    );

    // The upper-case form is the same origin after normalisation; a missing Origin (a
    // non-browser client) is allowed by the default `allow_missing(true)`.
    for extra in [&[("Origin", "HTTPS://APP.EXAMPLE:443")][..], &[][..]] {
        let (head, mut ws) = RawWs::connect(server.addr, extra).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{extra:?}: {head}");
        ws.send_json(&serde_json::json!({"type": "join", "namespace": "/", "ackId": "j"}))
            .await;
        assert_eq!(
            within(ws.next_json()).await,
            serde_json::json!({"type": "ack", "namespace": "/", "ackId": "j"})
        );
    }
    assert_eq!(hooks.load(Ordering::SeqCst), 3);

    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 1-3: {report}");
    server.stop().await;
}

// Case 4: slowloris on the upgrade. 500 connections each send half a request and stall; each is
// answered `408` at the handshake timeout, and a real client connects meanwhile in < 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case04_500_stalled_partial_upgrades_get_408_and_a_real_client_connects_meanwhile() {
    const STALLED: usize = 500;
    let timeout = Duration::from_millis(1500);
    let (server, hooks) = counting(Server::builder().handshake_timeout(timeout));
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);

    let start = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upg")
            .await
            .expect("write half a request");
        stalled.push(tcp);
    }
    let opened_in = start.elapsed();

    // A real client connects (and finishes its connect phase) while all 500 are stalled.
    let t = Instant::now();
    let mut real = server.client().await;
    real.ready().await;
    let connect_time = t.elapsed();
    assert!(
        connect_time < Duration::from_secs(1),
        "a real client took {connect_time:?} to connect"
    );
    assert!(
        start.elapsed() < timeout,
        "the stalled requests were still pending while the client connected (opening them took {opened_in:?})"
    );

    // Every stalled connection gets exactly one 408, then EOF, no earlier than the timeout.
    let responses = join_all(stalled.into_iter().map(|mut tcp| async move {
        let mut out = Vec::new();
        within(tcp.read_to_end(&mut out))
            .await
            .expect("read to EOF");
        (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
    }))
    .await;
    for (response, at) in &responses {
        assert!(
            response.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{response:?}"
        );
        assert!(
            response.ends_with("\r\n\r\nhandshake timeout\n"),
            "{response:?}"
        );
        assert_eq!(status_lines(response), 1);
        assert!(
            *at + Duration::from_millis(50) >= timeout,
            "answered before the timeout: {at:?}"
        );
    }
    let last = responses
        .iter()
        .map(|(_, at)| *at)
        .max()
        .expect("responses");
    eprintln!(
        "case 4: {STALLED} stalled opened in {opened_in:?}; real client connected in {connect_time:?}; last 408 at {last:?}"
    );
    assert_eq!(server.server.stats().handshakes_refused, STALLED as u64);
    assert_eq!(
        hooks.load(Ordering::SeqCst),
        2,
        "the canary and the real client"
    );

    real.ready().await;
    drop(real);
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 4: {report}");
    server.stop().await;
}

/// Write `bytes` in `chunk`-sized writes (each its own TCP segment: no Nagle), ignoring write
/// errors (the server may answer and close before everything is written), then read to EOF.
async fn trickle(server: &TestServer, bytes: &[u8], chunk: usize) -> String {
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (mut rd, mut wr) = tcp.into_split();
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        for part in bytes.chunks(chunk) {
            if wr.write_all(part).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        wr
    });
    let mut out = Vec::new();
    let _ = within(rd.read_to_end(&mut out)).await;
    drop(within(writer).await);
    String::from_utf8_lossy(&out).into_owned()
}

// Case 5: a 100 KiB header line and thousands of headers, sent at once and trickled in small
// segments (the shape of RUSTSEC-2023-0065's CPU spin): one 431 each, bounded CPU time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case05_huge_or_trickled_headers_get_one_431_without_cpu_spin() {
    let (server, hooks) = counting(Server::builder());
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let host = server.addr.to_string();

    let long = "a".repeat(100 * 1024);
    let huge_line = upgrade_request(&host, "/ws", &[("X-Long", &long)]);
    let many: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("X-{i}"), "b".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let many_headers = upgrade_request(&host, "/ws", &many);

    let cpu_before = cpu_time();
    let wall = Instant::now();
    let mut responses = Vec::new();
    for request in [&huge_line, &many_headers] {
        responses.push(one_response(&server, request.as_bytes()).await);
        for chunk in [1024, 64] {
            responses.push(trickle(&server, request.as_bytes(), chunk).await);
        }
    }
    let wall = wall.elapsed();
    for r in &responses {
        assert!(
            r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{r:?}"
        );
        assert_eq!(status_lines(r), 1);
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_time()) {
        let used = after.saturating_sub(before);
        eprintln!("case 5: 6 oversized heads answered in {wall:?}, process CPU {used:?}");
        // Generous: it includes the test's own client work and the canary.
        assert!(used < Duration::from_secs(5), "CPU time {used:?}");
    }
    assert_eq!(
        hooks.load(Ordering::SeqCst),
        1,
        "only the canary's hook ran"
    );
    assert_eq!(server.server.stats().handshakes_refused, 6);
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 5: {report}");
    server.stop().await;
}

// Case 6 in volume: malformed and refused requests of every kind, concurrently, each get exactly
// one response; no slot and no hook is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case06_refused_requests_in_volume_get_one_response_each() {
    let (server, hooks) = counting(Server::builder());
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let host = server.addr.to_string();
    let valid = upgrade_request(&host, "/ws", &[]);
    let cases: Vec<(String, &str)> = vec![
        (
            format!("GET /ws HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            "HTTP/1.1 426 ",
        ),
        (valid.replacen("GET", "POST", 1), "HTTP/1.1 405 "),
        (
            valid.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            "HTTP/1.1 426 ",
        ),
        (
            valid.replace(wsu_tests::SAMPLE_KEY, "AAAA"),
            "HTTP/1.1 400 ",
        ),
        (valid.replace("HTTP/1.1", "HTTP/1.0"), "HTTP/1.1 400 "),
        (upgrade_request(&host, "/other", &[]), "HTTP/1.1 404 "),
        ("\0\0\0\0\r\n\r\n".to_owned(), "HTTP/1.1 400 "),
        (
            valid.replace("Upgrade: websocket", "Upgrade: h2c"),
            "HTTP/1.1 426 ",
        ),
    ];
    let rounds = 10;
    let responses = join_all((0..rounds).flat_map(|_| cases.iter()).map(|(req, want)| {
        let server = &server;
        async move { (*want, one_response(server, req.as_bytes()).await) }
    }))
    .await;
    for (want, r) in &responses {
        assert!(r.starts_with(want), "expected {want}: {r:?}");
    }
    assert_eq!(hooks.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.server.stats().handshakes_refused,
        (rounds * cases.len()) as u64
    );
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 6: {report}");
    server.stop().await;
}

// Case 33: at `max_connections`, every further upgrade gets 503 before the upgrade, no hook runs,
// the open connections keep working, and slots are released for reuse once clients leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case33_upgrades_beyond_max_connections_get_503_and_leak_no_slot() {
    const MAX: usize = 20;
    let (server, hooks) = counting(Server::builder().max_connections(MAX));
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);

    let mut open = Vec::new();
    for _ in 1..MAX {
        let mut c = server.client().await;
        c.ready().await;
        open.push(c);
    }
    assert_eq!(server.server.stats().connections, MAX);
    let request = upgrade_request(&server.addr.to_string(), "/ws", &[]);
    let refused = join_all((0..100).map(|_| one_response(&server, request.as_bytes()))).await;
    for r in &refused {
        assert!(
            r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{r:?}"
        );
        assert!(r.ends_with("\r\n\r\nserver at capacity\n"), "{r:?}");
    }
    assert_eq!(server.server.stats().connections, MAX, "no slot leaked");
    assert_eq!(hooks.load(Ordering::SeqCst), MAX);
    for c in &mut open {
        c.expect_quiet().await;
    }

    drop(open);
    wait_for_gauges(&server.server, baseline).await;
    // The slots are free again.
    let mut again = Vec::new();
    for _ in 1..MAX {
        let mut c = server.client().await;
        c.ready().await;
        again.push(c);
    }
    let r = one_response(&server, request.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 503 "), "{r:?}");
    drop(again);
    wait_for_gauges(&server.server, baseline).await;
    assert_eq!(server.server.stats().handshakes_refused, 101);
    let report = canary.stop().await;
    eprintln!("case 33: {report}");
    server.stop().await;
}

/// Connections per client address, kept by [`per_ip_capped`]'s hooks.
type PerIp = Arc<std::sync::Mutex<HashMap<IpAddr, HashSet<SocketId>>>>;

/// A server refusing more than `cap` connections per client address: a recipe (wsu has no
/// built-in per-address cap), counting `Socket::remote_addr` in the connect hook.
fn per_ip_capped(cap: usize) -> Server {
    let per_ip = PerIp::default();
    let on_connect = per_ip.clone();
    Server::builder()
        .on_connect(move |s: Socket| {
            let per_ip = on_connect.clone();
            async move {
                let Some(ip) = s.remote_addr().map(|a| a.ip()) else {
                    return Ok(());
                };
                let mut map = per_ip.lock().expect("per-ip lock");
                let ids = map.entry(ip).or_default();
                if ids.len() >= cap {
                    return Err("too many connections from your address");
                }
                ids.insert(*s.id());
                Ok(())
            }
        })
        .on_disconnect(move |s: Socket, _reason| {
            let mut map = per_ip.lock().expect("per-ip lock");
            map.retain(|_, ids| {
                ids.remove(s.id());
                !ids.is_empty()
            });
            async {}
        })
        .build()
        .expect("build")
}

// Case 33, per-address cap (the recipe of SECURITY.md): beyond the cap the connection is refused
// by the connect hook (4500, after the upgrade); the others are unaffected, and the count goes
// down as clients leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case33_a_per_address_cap_in_the_connect_hook_refuses_with_4500() {
    const CAP: usize = 4;
    let server = TestServer::start(per_ip_capped(CAP)).await;
    // The canary is one of the CAP connections from 127.0.0.1.
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let mut open = Vec::new();
    for _ in 1..CAP {
        let mut c = server.client().await;
        c.ready().await;
        open.push(c);
    }
    for _ in 0..10 {
        let mut c = server.client().await;
        assert_eq!(
            c.closed().await,
            wsu_tests::Closed::Frame(4500, "too many connections from your address".to_owned())
        );
    }
    for c in &mut open {
        c.expect_quiet().await;
    }
    open.pop();
    wait_for_gauges(
        &server.server,
        Gauges {
            connections: baseline.connections + CAP - 2,
            ..baseline
        },
    )
    .await;
    let mut again = server.client().await;
    again.ready().await;
    drop((open, again));
    wait_for_gauges(&server.server, baseline).await;
    assert_eq!(server.server.stats().closes.get(&4500), Some(&10));
    let report = canary.stop().await;
    eprintln!("case 33 (per address): {report}");
    server.stop().await;
}
