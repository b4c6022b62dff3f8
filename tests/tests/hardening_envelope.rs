//! Hardening, the envelope: cases 14–20 and 23 of `shared/notes/reliability.md` (the full table
//! is in `SECURITY.md`). The exact error texts for 14, 15, 19 and 20 are asserted one by one in
//! `protocol.rs`; these tests add volume, hostile sizes and shapes, the canary and the gauges.
//!
//! The tests that send large messages take [`HEAVY`] so that their memory measurements do not
//! overlap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::future::join_all;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use wsu::{Json, Server, Socket};
use wsu_tests::{Canary, Client, Gauges, TestServer, peak_rss_bytes, wait_for_gauges};

/// Serialises the tests that measure memory or send megabytes.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server with `relay` (acks its raw `data`, counting calls), `typed` (decodes `data` into a
/// `serde_json::Value` tree) and a large message limit; invalid messages are tolerated in bulk so
/// that one connection can try many of them.
fn server(calls: Arc<AtomicUsize>) -> Server {
    Server::builder()
        .max_message_size(4 << 20)
        .max_invalid_messages(100_000, std::time::Duration::from_secs(60))
        .on("relay", move |_s: Socket, data: Box<RawValue>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Json(data) }
        })
        .on("typed", |_s: Socket, data: Value| async move {
            Json(data.is_array())
        })
        .build()
        .expect("build")
}

/// The exact ack text `relay` answers for `data` sent with `ack_id`.
fn relayed(data: &str, ack_id: &str) -> String {
    format!(r#"{{"type":"ack","namespace":"/","event":"relay","data":{data},"ackId":"{ack_id}"}}"#)
}

/// Send `{"type":"event","event":event,"data":<data>,"ackId":ack}` with `data` as raw text.
async fn emit_raw(c: &mut Client, event: &str, data: &str, ack: &str) {
    c.send_text(&format!(
        r#"{{"type":"event","event":"{event}","data":{data},"ackId":"{ack}"}}"#
    ))
    .await;
}

// Cases 14 and 15 in volume: 50 connections at once each send a round of malformed frames (within
// the invalid-message budget), get an error for each, and stay usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case14_15_garbage_from_many_connections_gets_errors_and_leaves_them_usable() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(server(calls.clone())).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let garbage = [
        "hello",
        "{\"type\":",
        "",
        "\u{feff}{\"type\":\"ping\"}",
        "{\"type\":\"ping\"} trailing",
        "{\"type\":\"event\",\"event\":\"relay\",\"ackId\":5}",
        "{\"type\":1}",
        "[]",
        "null",
        "{\"type\":\"ping\",\"namespace\":{}}",
        "{\"type\":\"event\",\"event\":\"relay\",\"data\":}",
        "{\"type\":\"event\",\"event\":\"relay\",\"data\":[1,2}",
        "{\"type\":\"event\",\"event\":\"\\ud800\"}",
    ];
    join_all((0..50).map(|_| async {
        let mut c = server.client().await;
        c.send(json!({"type": "join", "room": "r", "ackId": "j"}))
            .await;
        assert_eq!(c.recv().await["type"], "ack");
        for g in garbage {
            c.send_text(g).await;
        }
        for g in garbage {
            let e = c.recv().await;
            assert_eq!(e["type"], "error", "for {g:?}: {e}");
            assert!(
                e["error"]
                    .as_str()
                    .expect("error text")
                    .starts_with("invalid message: "),
                "for {g:?}: {e}"
            );
        }
        emit_raw(&mut c, "relay", "[1]", "ok").await;
        assert_eq!(c.recv_text().await, relayed("[1]", "ok"));
    }))
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        50,
        "only the valid relays ran"
    );
    assert_eq!(
        server.server.stats().protocol_errors,
        50 * garbage.len() as u64
    );
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 14/15: {report}");
    server.stop().await;
}

// Case 16: `data` nested 100,000 deep (arrays and objects), and deep nesting in unknown keys and
// in string fields. The envelope decoder does not recurse: the raw payload is relayed
// byte-identical; a handler decoding it into a `Value` gets serde_json's recursion limit as an
// `invalid payload` error; nothing overflows a stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case16_data_nested_100000_deep_is_relayed_and_refused_by_typed_handlers() {
    let _heavy = HEAVY.lock().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(server(calls.clone())).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let mut c = server.client().await;

    const DEPTH: usize = 100_000;
    let arrays = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(DEPTH), "}".repeat(DEPTH));
    for (i, deep) in [&arrays, &objects].into_iter().enumerate() {
        let ack = format!("deep{i}");
        emit_raw(&mut c, "relay", deep, &ack).await;
        assert!(c.recv_text().await == relayed(deep, &ack), "byte-identical");

        emit_raw(&mut c, "typed", deep, &ack).await;
        let e = c.recv().await;
        assert_eq!(
            (&e["type"], &e["event"], &e["ackId"]),
            (&json!("error"), &json!("typed"), &json!(ack))
        );
        let text = e["error"].as_str().expect("text");
        assert!(
            text.starts_with("invalid payload: recursion limit exceeded"),
            "{text}"
        );
    }
    // Deep values where the decoder has to skip or type-check them.
    c.send_text(&format!(
        r#"{{"type":"ping","x":{arrays},"namespace":"/d"}}"#
    ))
    .await;
    assert_eq!(c.recv().await, json!({"type": "pong", "namespace": "/d"}));
    c.send_text(&format!(
        r#"{{"type":"event","event":"relay","ackId":{arrays}}}"#
    ))
    .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "relay", "error": "invalid message: field `ackId` must be a string"})
    );
    // A deep top-level value is not an object.
    c.send_text(&arrays).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "error": "invalid message: message must be a json object"})
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    drop(c);
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 16: {report}");
    server.stop().await;
}

// Case 17: 1 MiB of tiny objects in `data`. The envelope keeps it as raw text: relayed
// byte-identical, and the process's peak memory grows by a small multiple of the message, not by
// the 30–80x a `Value` tree of tiny objects costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case17_a_mib_of_tiny_objects_is_relayed_without_amplification() {
    let _heavy = HEAVY.lock().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(server(calls.clone())).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let mut c = server.client().await;
    c.ready().await;

    let one = r#"{"a":1},"#;
    let n = (1 << 20) / one.len();
    let mut data = String::with_capacity(n * one.len() + 8);
    data.push('[');
    for _ in 0..n {
        data.push_str(one);
    }
    data.push_str("{}]");
    let expected = relayed(&data, "big");
    let peak_before = peak_rss_bytes(None);
    let t = Instant::now();
    for _ in 0..4 {
        emit_raw(&mut c, "relay", &data, "big").await;
        assert!(c.recv_text().await == expected, "byte-identical");
    }
    let took = t.elapsed();
    if let (Some(before), Some(after)) = (peak_before, peak_rss_bytes(None)) {
        let grown = after.saturating_sub(before);
        eprintln!(
            "case 17: 4 x {} KiB relayed in {took:?}; peak RSS +{} KiB",
            data.len() / 1024,
            grown / 1024
        );
        // The message passes through the client, the socket buffers, the server's read buffer,
        // the handler's copy and the ack: a few copies. A decoded tree would be > 30 MiB.
        assert!(grown < 24 << 20, "peak RSS grew by {grown} bytes");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    drop(c);
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 17: {report}");
    server.stop().await;
}

// Case 18: unknown keys are ignored (even huge or deep ones, in any order); duplicate keys, known
// or not, `data` included and compared after unescaping, are an error that echoes what it can.
#[tokio::test]
async fn case18_unknown_keys_are_ignored_and_duplicate_keys_are_refused() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(server(calls.clone())).await;
    let mut c = server.client().await;

    c.send_text(r#"{"zzz":{"deep":[1,{"x":null}]},"type":"ping","namespace":"/u","":1}"#)
        .await;
    assert_eq!(c.recv().await, json!({"type": "pong", "namespace": "/u"}));
    c.send_text(r#"{"ackId":"k","data":5,"event":"relay","type":"event","Type":"bogus"}"#)
        .await;
    assert_eq!(c.recv_text().await, relayed("5", "k"));

    for (frame, key) in [
        (
            r#"{"type":"event","event":"relay","data":1,"data":2,"ackId":"d"}"#,
            "data",
        ),
        (r#"{"type":"ping","x":1,"x":2}"#, "x"),
        (r#"{"type":"ping","\u0074ype":"ping"}"#, "type"),
        (
            r#"{"type":"ping","namespace":"/a","namespace":null}"#,
            "namespace",
        ),
    ] {
        c.send_text(frame).await;
        let e = c.recv().await;
        assert_eq!(e["type"], "error", "{frame}");
        assert_eq!(
            e["error"],
            format!("invalid message: duplicate field `{key}`"),
            "{frame}"
        );
    }
    // The error for the duplicated `data` still names the request.
    c.send_text(r#"{"type":"event","event":"relay","data":1,"data":2,"ackId":"d"}"#)
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "relay", "ackId": "d", "error": "invalid message: duplicate field `data`"})
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no duplicate reached the handler"
    );
    c.expect_quiet().await;
}

// Cases 19 and 23: reserved and invalid event, namespace and room names, up to 1 MiB long, with
// NUL and control characters: an error each, never dispatched, no room or namespace created; and
// names that look alike are distinct keys (no collision through `::`, `/` or normalisation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case19_23_invalid_names_are_refused_and_look_alikes_do_not_collide() {
    let _heavy = HEAVY.lock().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(server(calls.clone())).await;
    let canary = Canary::start(&server).await;
    let baseline = Gauges::of(&server.server);
    let mut c = server.client().await;
    c.ready().await;

    let ten_kb = "e".repeat(10 * 1024);
    let one_mib = "r".repeat(1 << 20);
    let events: [(&str, &str); 6] = [
        ("error", "invalid event name: event is reserved"),
        ("connect", "invalid event name: event is reserved"),
        (
            &ten_kb,
            "invalid event name: event is longer than 128 bytes",
        ),
        (
            "relay\u{0}",
            "invalid event name: event contains a control character",
        ),
        (
            "re\u{1b}[2Jlay",
            "invalid event name: event contains a control character",
        ),
        (
            "relay\u{85}",
            "invalid event name: event contains a control character",
        ),
    ];
    for (event, text) in events {
        c.send(json!({"type": "event", "event": event, "data": 1, "ackId": "e"}))
            .await;
        let e = c.recv().await;
        assert_eq!(e["error"], text, "{:.40}", event);
        assert_eq!(e["ackId"], "e");
    }
    let rooms: [(&str, &str); 4] = [
        (&one_mib, "invalid room name: room is longer than 128 bytes"),
        (
            "a\u{0}b",
            "invalid room name: room contains a control character",
        ),
        (
            "line\nbreak",
            "invalid room name: room contains a control character",
        ),
        (
            "\u{7f}",
            "invalid room name: room contains a control character",
        ),
    ];
    for (room, text) in rooms {
        c.send(json!({"type": "join", "room": room, "ackId": "r"}))
            .await;
        assert_eq!(
            c.recv().await,
            json!({"type": "error", "namespace": "/", "ackId": "r", "error": text})
        );
    }
    for (ns, text) in [
        (
            &one_mib[..],
            "invalid namespace: namespace must start with `/`",
        ),
        (
            "/a\u{0}b",
            "invalid namespace: namespace contains a control character",
        ),
    ] {
        c.send(json!({"type": "join", "namespace": ns, "ackId": "n"}))
            .await;
        assert_eq!(
            c.recv().await,
            json!({"type": "error", "namespace": "/", "ackId": "n", "error": text})
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was dispatched");
    let with_c = Gauges {
        connections: baseline.connections + 1,
        ..baseline
    };
    assert_eq!(Gauges::of(&server.server), with_c, "nothing was created");

    // Look-alikes are distinct rooms: `a::b`, `a:b`, `a/b`, precomposed and decomposed `é`.
    let look_alikes = ["a::b", "a:b", "a/b", "a", "\u{e9}", "e\u{301}"];
    for (i, room) in look_alikes.iter().enumerate() {
        c.send(json!({"type": "join", "room": room, "ackId": i.to_string()}))
            .await;
        assert_eq!(c.recv().await["type"], "ack", "{room}");
    }
    let mut got = server.server.rooms("/");
    got.sort();
    let mut want: Vec<String> = look_alikes.iter().map(|r| (*r).to_owned()).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(server.server.rooms("/a").is_empty());
    assert_eq!(
        server.server.stats().rooms,
        baseline.rooms + look_alikes.len()
    );

    drop(c);
    wait_for_gauges(&server.server, baseline).await;
    let report = canary.stop().await;
    eprintln!("case 19/23: {report}");
    server.stop().await;
}
