//! Hardening, abuse by a connected client: cases 21, 22, 26, 28 and 29 of
//! `shared/notes/reliability.md` (the full table is in `SECURITY.md`).
//!
//! Attackers pipeline thousands of requests in one write (as fast as the server reads) and read
//! every answer; each test asserts the exact answers, the close code, that a [`Canary`] keeps
//! getting its pongs, and that the gauges return to baseline. Counts are scaled down where the
//! outcome does not depend on them (an attacker is cut off after 21 invalid requests whatever
//! it pipelines); each test says how.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use wsu::{AckError, Json, RateLimitPolicy, Server, Socket};
use wsu_tests::{
    Canary, Client, Closed, Gauges, RawWs, TestServer, frame_bytes, opcode, rss_bytes, text_frame,
    wait_for_gauges, within,
};

/// What a pipelining attacker saw.
struct Pipelined {
    /// Every JSON message received, in order.
    answers: Vec<Value>,
    /// The close frame's code and reason, if the server closed.
    close: Option<(u16, String)>,
    /// The write half (the attacker can still send, e.g. its close reply).
    writer: OwnedWriteHalf,
}

/// Connect a raw client, write `messages` as masked text frames in one go (write errors are
/// ignored: the server may close before reading everything) while reading every answer, until
/// the server's close frame or until `expect` answers have arrived. A close frame is answered
/// at once, so the server need not wait for it.
async fn pipeline(server: &TestServer, messages: &[String], expect: usize) -> Pipelined {
    let (head, mut ws) = RawWs::connect(server.addr, &[]).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // Read the hello before splitting the stream: it may already sit in the client's buffer,
    // which the split leaves behind.
    within(ws.expect_hello()).await;
    let (rd, mut wr) = ws.stream.into_split();
    let bytes: Vec<u8> = messages.iter().flat_map(|m| text_frame(m)).collect();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        wr
    });
    let mut reader = RawWs::new(rd);
    let mut answers = Vec::new();
    let close = loop {
        if answers.len() == expect {
            break None;
        }
        let frame = within(reader.read_frame())
            .await
            .expect("a close frame before the end of the stream");
        if let Some(close) = frame.close() {
            break Some(close);
        }
        if frame.opcode == opcode::TEXT {
            answers.push(frame.json().expect("JSON"));
        }
    };
    let mut writer = within(writer).await.expect("writer task");
    if let Some((code, _)) = &close {
        let reply = frame_bytes(0x80 | opcode::CLOSE, &code.to_be_bytes(), true);
        let _ = writer.write_all(&reply).await;
    }
    Pipelined {
        answers,
        close,
        writer,
    }
}

fn policy_close() -> Option<(u16, String)> {
    Some((1008, "too many invalid messages".to_owned()))
}

// Case 21: namespace floods. One attacker pipelines 1,000 joins of distinct undeclared namespaces
// (scaled from 100,000: it is closed after 21 whatever it sends); another 1,000 joins of
// namespaces the `allow_namespaces` filter accepts; then 40 connections create 31 namespaces each
// (1,240). Only allowed namespaces are ever created, each connection stops at its cap, refusals
// end in 1008, and every namespace created on demand is deleted when its last member leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case21_namespace_floods_are_refused_then_closed_and_leave_no_namespace() {
    let server = Server::builder()
        .allow_namespaces(|name| name.starts_with("/dyn/"))
        .namespace("/game", |ns| ns)
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let cap = server.server.config().max_namespaces_per_connection;
    let budget = server.server.config().max_invalid_messages as usize;

    // Undeclared namespaces: `unknown namespace` for each, counted as invalid, then 1008.
    let joins: Vec<String> = (0..1000)
        .map(|i| {
            json!({"type": "join", "namespace": format!("/n{i}"), "ackId": i.to_string()})
                .to_string()
        })
        .collect();
    let p = pipeline(&server, &joins, usize::MAX).await;
    let want: Vec<Value> = (0..=budget)
        .map(|i| json!({"type": "error", "namespace": format!("/n{i}"), "ackId": i.to_string(), "error": "unknown namespace"}))
        .collect();
    assert_eq!(p.answers, want);
    assert_eq!(p.close, policy_close());
    drop(p.writer);
    assert_eq!(server.server.stats().dynamic_namespaces, 0, "none created");

    // Allowed namespaces: the first cap - 1 joins succeed (`/` is one of the cap), then
    // `too many namespaces` until the budget is spent.
    let joins: Vec<String> = (0..1000)
        .map(|i| {
            json!({"type": "join", "namespace": format!("/dyn/{i}"), "ackId": i.to_string()})
                .to_string()
        })
        .collect();
    let p = pipeline(&server, &joins, usize::MAX).await;
    assert_eq!(p.answers.len(), cap - 1 + budget + 1);
    for (i, a) in p.answers.iter().enumerate() {
        let ns = format!("/dyn/{i}");
        let want = if i < cap - 1 {
            json!({"type": "ack", "namespace": ns, "ackId": i.to_string()})
        } else {
            json!({"type": "error", "namespace": ns, "ackId": i.to_string(), "error": "too many namespaces"})
        };
        assert_eq!(*a, want);
    }
    assert_eq!(p.close, policy_close());
    drop(p.writer);
    wait_for_gauges(&server.server, baseline).await;

    // Many connections, each at its cap: every namespace exists while they are connected.
    let mut clients = join_all((0..40).map(|c| {
        let server = &server;
        async move {
            let mut client = server.client().await;
            for i in 0..cap - 1 {
                client
                    .send(json!({"type": "join", "namespace": format!("/dyn/{c}/{i}")}))
                    .await;
            }
            client.ready().await;
            client
        }
    }))
    .await;
    assert_eq!(server.server.stats().dynamic_namespaces, 40 * (cap - 1));
    for c in &mut clients {
        c.expect_quiet().await;
    }
    drop(clients);
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 21: {report}");
    server.stop().await;
}

// Case 22: one connection pipelines 10,000 room joins: the first 256 (the per-connection cap)
// succeed, the next ones get `too many rooms` (counted as invalid) until the connection is
// closed with 1008; every room is freed when it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case22_joining_10000_rooms_is_capped_and_every_room_is_freed() {
    let server = TestServer::start(Server::builder().build().expect("build")).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let cap = server.server.config().max_rooms_per_connection;
    let budget = server.server.config().max_invalid_messages as usize;

    let joins: Vec<String> = (0..10_000)
        .map(|i| {
            json!({"type": "join", "room": format!("room-{i}"), "ackId": i.to_string()}).to_string()
        })
        .collect();
    let p = pipeline(&server, &joins, usize::MAX).await;
    assert_eq!(p.answers.len(), cap + budget + 1);
    for (i, a) in p.answers.iter().enumerate() {
        let want = if i < cap {
            json!({"type": "ack", "namespace": "/", "ackId": i.to_string()})
        } else {
            json!({"type": "error", "namespace": "/", "ackId": i.to_string(), "error": "too many rooms"})
        };
        assert_eq!(*a, want);
    }
    assert_eq!(p.close, policy_close());
    drop(p.writer);
    wait_for_gauges(&server.server, baseline).await;
    assert!(server.server.rooms("/").is_empty());

    // The same cap, reached without abuse: joins stop at the cap, the connection stays usable,
    // and dropping it frees all 256 rooms.
    let mut c = server.client().await;
    for i in 0..cap + 5 {
        c.send(json!({"type": "join", "room": format!("r{i}")}))
            .await;
    }
    for _ in 0..5 {
        assert_eq!(
            c.recv().await,
            json!({"type": "error", "namespace": "/", "error": "too many rooms"})
        );
    }
    assert_eq!(server.server.stats().rooms, cap);
    c.expect_quiet().await;
    drop(c);
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 22: {report}");
    server.stop().await;
}

/// The outcomes of many `emit_with_ack` calls: answered, timed out, refused (too many
/// pending), closed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Tally {
    ok: u32,
    timeout: u32,
    too_many: u32,
    closed: u32,
}

/// One pending `emit_with_ack` call.
type Question = Pin<Box<dyn Future<Output = Result<Value, AckError>> + Send>>;

/// Ask the client `n` questions at once and tally the outcomes. Every question is polled once in
/// a single pass (that is when it registers its ack, or fails with `TooManyPending`), so that no
/// ack can time out and free a slot before the last question was asked.
async fn ask_many(socket: Socket, n: u32) -> Tally {
    let mut questions: Vec<Option<Question>> = (0..n)
        .map(|i| {
            let s = socket.clone();
            let q: Question = Box::pin(async move { s.emit_with_ack::<_, Value>("q", &i).await });
            Some(q)
        })
        .collect();
    let mut tally = Tally::default();
    let mut count = |r: Result<Value, AckError>| match r {
        Ok(_) => tally.ok += 1,
        Err(AckError::Timeout) => tally.timeout += 1,
        Err(AckError::TooManyPending) => tally.too_many += 1,
        Err(AckError::Closed) => tally.closed += 1,
        Err(e) => panic!("unexpected {e:?}"),
    };
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut questions {
            if let Some(q) = slot {
                match q.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        count(r);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    tally
}

// Case 26, server acks: 10,000 questions to one client that never answers. At most
// `max_pending_acks` (128) are sent and wait; the others fail at once with `TooManyPending`;
// the waiting ones expire at the ack timeout, or fail with `Closed` as soon as the client goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case26_10000_unanswered_server_acks_are_capped_expire_and_fail_on_close() {
    let (tx, mut tallies) = mpsc::unbounded_channel::<Tally>();
    let refused = Arc::new(AtomicU64::new(0));
    let refused_in_hook = refused.clone();
    let server = Server::builder()
        .ack_timeout(Duration::from_millis(300))
        .on("expire", |s: Socket, n: u32| async move {
            Json(ask_many(s, n).await)
        })
        .on("hold", move |s: Socket, n: u32| {
            let tx = tx.clone();
            let refused = refused_in_hook.clone();
            async move {
                // Waits for the client's answers in the background, past the connection's end.
                tokio::spawn(async move {
                    let s = s.clone();
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..n {
                        let s = s.clone();
                        let refused = refused.clone();
                        tasks.spawn(async move {
                            let r = s
                                .emit_with_ack_timeout::<_, Value>(
                                    "q",
                                    &i,
                                    Duration::from_secs(600),
                                )
                                .await;
                            if matches!(r, Err(AckError::TooManyPending)) {
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                            r
                        });
                    }
                    let mut tally = Tally::default();
                    while let Some(r) = tasks.join_next().await {
                        match r.expect("task") {
                            Err(AckError::TooManyPending) => tally.too_many += 1,
                            Err(AckError::Closed) => tally.closed += 1,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    let _ = tx.send(tally);
                });
            }
        })
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let cap = server.server.config().max_pending_acks as u32;

    let mut c = server.client().await;
    c.emit_ack("expire", json!(10_000), "e").await;
    let mut questions = 0;
    let ack = loop {
        let m = c.recv().await;
        if m["type"] == "event" {
            assert_eq!(m["event"], "q");
            questions += 1;
            continue;
        }
        break m;
    };
    assert_eq!(questions, cap, "only the questions that may wait are sent");
    let tally: Tally = serde_json::from_value(ack["data"].clone()).expect("tally");
    assert_eq!(
        tally,
        Tally {
            ok: 0,
            timeout: cap,
            too_many: 10_000 - cap,
            closed: 0
        }
    );
    assert_eq!(server.server.stats().ack_timeouts, u64::from(cap));
    assert_eq!(server.server.stats().pending_acks, 0);

    // The same, but the client disconnects while they wait: all fail with `Closed` at once
    // (well before their 600 s timeout).
    c.send(json!({"type": "event", "event": "hold", "data": 10_000}))
        .await;
    for _ in 0..cap {
        assert_eq!(c.recv().await["event"], "q");
    }
    // Every question has been asked (and all but `cap` refused) before the client goes.
    let more = u64::from(10_000 - cap);
    wsu_tests::wait_until(|| refused.load(Ordering::SeqCst) == more).await;
    assert_eq!(server.server.stats().pending_acks, cap as usize);
    drop(c);
    let tally = within(tallies.recv()).await.expect("tally");
    assert_eq!(
        tally,
        Tally {
            ok: 0,
            timeout: 0,
            too_many: 10_000 - cap,
            closed: cap
        }
    );
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 26 (server acks): {report}");
    server.stop().await;
}

// Case 26, client ack ids: events with unique 1 KB ackIds (over the 128-byte limit) are refused
// without echoing the id and the connection is closed with 1008 (scaled from 100,000 to 1,000:
// it is closed after 21); 10,000 pipelined events with unique valid 128-byte ackIds each get
// exactly one ack echoing its id, in order, and nothing stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case26_client_events_with_unique_long_ack_ids_are_bounded() {
    let server = Server::builder()
        .on(
            "relay",
            |_s: Socket, d: Box<RawValue>| async move { Json(d) },
        )
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let budget = server.server.config().max_invalid_messages as usize;

    let id = |i: usize, len: usize| format!("{i:0>len$}");
    let events: Vec<String> = (0..1000)
        .map(|i| {
            json!({"type": "event", "event": "relay", "data": i, "ackId": id(i, 1024)}).to_string()
        })
        .collect();
    let p = pipeline(&server, &events, usize::MAX).await;
    let refused = json!({"type": "error", "namespace": "/", "event": "relay", "error": "invalid ackId: ackId is longer than 128 bytes"});
    assert_eq!(p.answers, vec![refused; budget + 1]);
    assert_eq!(p.close, policy_close());
    drop(p.writer);

    const N: usize = 10_000;
    let events: Vec<String> = (0..N)
        .map(|i| {
            json!({"type": "event", "event": "relay", "data": i, "ackId": id(i, 128)}).to_string()
        })
        .collect();
    let t = Instant::now();
    let p = pipeline(&server, &events, N).await;
    eprintln!(
        "case 26: {N} pipelined events with 128-byte ackIds acked in {:?}",
        t.elapsed()
    );
    assert_eq!(p.close, None);
    for (i, a) in p.answers.iter().enumerate() {
        assert_eq!(
            *a,
            json!({"type": "ack", "namespace": "/", "event": "relay", "data": i, "ackId": id(i, 128)})
        );
    }
    drop(p.writer);
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 26 (client ack ids): {report}");
    server.stop().await;
}

// Case 28: one client floods 20,000 events as fast as the server reads them, with a rate limit
// (1,000/s, burst 100) under the reject policy: the events within the limit are acked, the others
// get `rate limit exceeded`, every event gets exactly one answer in arrival order, and refusals
// for rate never count as invalid messages (no 1008: the flood is bounded by backpressure on the
// answers instead). The canary keeps getting its pongs (each within 2 s; the measured p99 is
// printed, not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case28_flood_with_a_rejecting_rate_limit_gets_errors_never_1008_and_the_canary_keeps_answering()
 {
    const FLOOD: usize = 20_000;
    let server = Server::builder()
        .rate_limit(1000.0, 100.0)
        .rate_limit_policy(RateLimitPolicy::Reject)
        .on(
            "relay",
            |_s: Socket, d: Box<RawValue>| async move { Json(d) },
        )
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);

    let events: Vec<String> = (0..FLOOD)
        .map(|i| {
            json!({"type": "event", "event": "relay", "data": i, "ackId": i.to_string()})
                .to_string()
        })
        .collect();
    let t = Instant::now();
    let p = pipeline(&server, &events, FLOOD).await;
    let took = t.elapsed();
    assert_eq!(p.close, None, "refusals for rate never close");
    let limited = json!("rate limit exceeded");
    let (acks, errors): (Vec<&Value>, Vec<&Value>) =
        p.answers.iter().partition(|a| a["type"] == "ack");
    assert_eq!(acks.len() + errors.len(), FLOOD);
    assert!(errors.iter().all(|e| e["error"] == limited), "{errors:?}");
    // Everything within the limit is acked: the burst, plus what refills while the flood lasts.
    let allowed = 100.0 + 1000.0 * took.as_secs_f64();
    assert!(
        acks.len() >= 100 && acks.len() as f64 <= allowed + 1.0,
        "{} acks in {took:?}",
        acks.len()
    );
    // Answers keep arrival order: ids are 0, 1, 2, ...
    let ids: Vec<usize> = p
        .answers
        .iter()
        .map(|a| a["ackId"].as_str().expect("id").parse().expect("number"))
        .collect();
    assert!(ids.iter().enumerate().all(|(i, id)| i == *id));
    let stats = server.server.stats();
    assert_eq!(
        stats.protocol_errors, 0,
        "refusals for rate are not invalid"
    );
    assert_eq!(stats.rate_limited, errors.len() as u64);
    drop(p.writer);
    let handled = server.server.stats().messages_in;
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!(
        "case 28: {handled} messages handled in {took:?} ({:.0}/s): {} acks, {} errors; {report}",
        handled as f64 / took.as_secs_f64(),
        acks.len(),
        errors.len()
    );
    server.stop().await;
}

// Case 28b: the same flood shape under the default policy, backpressure: 3,000 events at
// 2,000/s (burst 100). Nothing is refused: the server stops reading that client while it has no
// tokens, so every event is acked, in order, and the flood takes at least as long as the rate
// allows. The canary is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case28b_flood_with_a_backpressure_rate_limit_is_slowed_and_fully_acked() {
    const FLOOD: usize = 3_000;
    let server = Server::builder()
        .rate_limit(2000.0, 100.0)
        .on(
            "relay",
            |_s: Socket, d: Box<RawValue>| async move { Json(d) },
        )
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let events: Vec<String> = (0..FLOOD)
        .map(|i| {
            json!({"type": "event", "event": "relay", "data": i, "ackId": i.to_string()})
                .to_string()
        })
        .collect();
    let t = Instant::now();
    let p = pipeline(&server, &events, FLOOD).await;
    let took = t.elapsed();
    assert_eq!(p.close, None);
    assert!(
        p.answers.iter().all(|a| a["type"] == "ack"),
        "nothing refused"
    );
    let ids: Vec<usize> = p
        .answers
        .iter()
        .map(|a| a["data"].as_u64().expect("data") as usize)
        .collect();
    assert_eq!(ids, (0..FLOOD).collect::<Vec<_>>(), "all acked, in order");
    // The rate is enforced: (3,000 - 100 burst) / 2,000 per second = 1.45 s at least.
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    let stats = server.server.stats();
    assert_eq!(stats.protocol_errors, 0);
    assert_eq!(stats.rate_limited, 0, "nothing refused");
    assert!(stats.backpressure_pauses > 0, "{stats:?}");
    drop(p.writer);
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 28b: {FLOOD} events acked in {took:?}; {report}");
    server.stop().await;
}

// Case 29: a room member stops reading while 8 MiB and more are published to the room (default
// queue bounds: 1,024 messages / 4 MiB). Its queue hits the cap, it is closed with 4001 (the
// close frame arrives once it reads again, after a prefix of what was published, in order); the
// other member gets everything in order; RSS stays bounded; gauges return to baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case29_slow_consumer_is_closed_with_4001_while_others_get_everything() {
    let server = Server::builder()
        // Long enough that the blocked writer is not ended by the write timeout (4002) first.
        .write_timeout(Duration::from_secs(60))
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let join = |mut c: Client| async move {
        c.send(json!({"type": "join", "room": "r", "ackId": "j"}))
            .await;
        assert_eq!(c.recv().await["type"], "ack");
        c
    };
    let mut slow = join(server.client().await).await;
    let fast = join(server.client().await).await;

    // The fast member reads in its own task and reports its progress.
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let fast_reader = tokio::spawn(async move {
        let mut fast = fast;
        loop {
            let m = fast.recv().await;
            if m["event"] == "end" {
                return fast;
            }
            let i = m["data"]["i"].as_u64().expect("i");
            assert_eq!(i, r.load(Ordering::SeqCst), "in order, none missing");
            r.store(i + 1, Ordering::SeqCst);
        }
    });

    let pad = "x".repeat(16 * 1024);
    let rss_before = rss_bytes(None);
    let mut queued_for_slow = Vec::new();
    let mut i = 0u64;
    let mut closed_at = None;
    // Publish in bursts of 32 messages (512 KiB), letting the fast member catch up after each.
    while closed_at.is_none() || i < 8 * 64 {
        for _ in 0..32 {
            let d = server
                .server
                .to("r")
                .emit("m", &json!({"i": i, "pad": pad}))
                .expect("emit");
            match (d.queued, d.dropped) {
                (2, 0) => queued_for_slow.push(i),
                (1, 1) => {
                    closed_at.get_or_insert(i);
                }
                (1, 0) => assert!(closed_at.is_some(), "slow member missing at {i}"),
                other => panic!("unexpected delivery {other:?} at {i}"),
            }
            i += 1;
        }
        let want = i;
        wsu_tests::wait_until(|| received.load(Ordering::SeqCst) == want).await;
        assert!(
            i < 64 * 64,
            "the slow member was never cut off (64 MiB published)"
        );
    }
    let published = i * (16 * 1024);
    let rss_after = rss_bytes(None);
    server.server.to("r").emit("end", &()).expect("emit");
    let fast = within(fast_reader).await.expect("fast reader");

    // The slow member reads again: a prefix of what was queued for it, in order, then 4001.
    let mut got = Vec::new();
    let end = loop {
        match within(slow.ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                got.push(v["data"]["i"].as_u64().expect("i"));
            }
            Some(Ok(Message::Close(Some(f)))) => {
                let _ = within(futures_util::SinkExt::flush(&mut slow.ws)).await;
                break Closed::Frame(f.code.into(), f.reason.to_string());
            }
            Some(Ok(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(end, Closed::Frame(4001, "outbound queue full".to_owned()));
    assert_eq!(got[..], queued_for_slow[..got.len()]);
    assert_eq!(server.server.stats().closes.get(&4001), Some(&1));
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let grown = after.saturating_sub(before);
        eprintln!(
            "case 29: published {} MiB, slow member cut off at message {:?} after {} queued; RSS +{} MiB",
            published >> 20,
            closed_at,
            queued_for_slow.len(),
            grown >> 20
        );
        // The slow member's queue (4 MiB) and socket buffers, and the fast member's traffic.
        assert!(grown < 96 << 20, "RSS grew by {grown} bytes");
    }
    drop((slow, fast));
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 29: {report}");
    server.stop().await;
}
