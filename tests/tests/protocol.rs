//! Message-level protocol behaviour: pings, invalid input, event dispatch, handler answers,
//! ordering and per-connection limits, each asserted on the exact frames a client receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use wsu::{HandlerError, Json, Server, Socket};
use wsu_tests::{Client, Closed, TestServer, next};

#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct Chat {
    user: String,
    message: String,
}

/// A server with an `echo` handler that acks its raw `data`.
fn echo_server() -> Server {
    echo_builder().build().expect("build")
}

fn echo_builder() -> wsu::ServerBuilder {
    Server::builder().on("echo", |_s: Socket, data: Box<RawValue>| async move {
        Json(data)
    })
}

/// Send a ping and check the pong comes back: the connection is still usable, and everything
/// sent before the ping was read by the server.
async fn assert_usable(client: &mut Client) {
    client.send(json!({"type": "ping"})).await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "namespace": "/"})
    );
}

#[tokio::test]
async fn ping_gets_pong_echoing_the_namespace() {
    let server = TestServer::start(echo_server()).await;
    let mut c = server.client().await;

    c.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(c.recv_text().await, r#"{"type":"pong","namespace":"/"}"#);
    c.send_text(r#"{"type":"ping","namespace":""}"#).await;
    assert_eq!(c.recv_text().await, r#"{"type":"pong","namespace":"/"}"#);
    c.send_text(r#"{"type":"ping","namespace":null}"#).await;
    assert_eq!(c.recv_text().await, r#"{"type":"pong","namespace":"/"}"#);
    c.send_text(r#"{"type":"ping","namespace":"/chat"}"#).await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"pong","namespace":"/chat"}"#
    );
    // Fields a ping does not use are ignored.
    c.send_text(r#"{"type":"ping","event":"x","ackId":"1","data":[1],"room":"r"}"#)
        .await;
    assert_eq!(c.recv_text().await, r#"{"type":"pong","namespace":"/"}"#);
}

#[tokio::test]
async fn pong_is_ignored() {
    let server = TestServer::start(echo_server()).await;
    let mut c = server.client().await;
    c.send(json!({"type": "pong"})).await;
    c.send(json!({"type": "pong", "namespace": "/chat", "ackId": "1"}))
        .await;
    c.expect_quiet().await;
    assert_eq!(server.server.stats().protocol_errors, 0);
}

#[tokio::test]
async fn unknown_or_missing_type_is_an_error() {
    let server = TestServer::start(echo_server()).await;
    let mut c = server.client().await;
    let plain = json!({"type": "error", "namespace": "/", "error": "unknown message type"});

    for msg in [
        json!({"type": "bogus"}),
        json!({}),
        json!({"type": null}),
        json!({"type": "PING"}),
        json!({"type": ""}),
        json!({"data": {"type": "ping"}}),
    ] {
        c.send(msg.clone()).await;
        assert_eq!(c.recv().await, plain, "for {msg}");
    }
    // The exact text the seed sent.
    c.send_text(r#"{"type":"bogus"}"#).await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"error","namespace":"/","error":"unknown message type"}"#
    );

    // `event` and `ackId` are echoed when present, so the client can tell which request failed.
    c.send(json!({"type": "bogus", "event": "chat", "ackId": "7"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "chat", "ackId": "7", "error": "unknown message type"})
    );
    c.send(json!({"ackId": "8"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "ackId": "8", "error": "unknown message type"})
    );
    assert_usable(&mut c).await;
}

#[tokio::test]
async fn malformed_messages_get_an_error_and_the_connection_stays_usable() {
    let server = TestServer::start(echo_server()).await;
    let mut c = server.client().await;

    // (frame, exact error text or the prefix of one ending in "...")
    let cases: &[(&str, &str)] = &[
        ("hello", "invalid message: malformed json: ..."),
        (r#"{"type":"#, "invalid message: malformed json: ..."),
        ("", "invalid message: empty message"),
        ("  \n\t ", "invalid message: empty message"),
        (
            "\u{feff}{\"type\":\"ping\"}",
            "invalid message: malformed json: ...",
        ),
        (
            r#"{"type":"ping"} trailing"#,
            "invalid message: malformed json: ...",
        ),
        (
            r#"{"type":"ping"}{}"#,
            "invalid message: malformed json: ...",
        ),
        ("[]", "invalid message: message must be a json object"),
        ("null", "invalid message: message must be a json object"),
        ("\"ping\"", "invalid message: message must be a json object"),
        ("42", "invalid message: message must be a json object"),
        (
            r#"{"type":"ping","ackId":5}"#,
            "invalid message: field `ackId` must be a string",
        ),
        (
            r#"{"type":1}"#,
            "invalid message: field `type` must be a string",
        ),
        (
            r#"{"type":"ping","namespace":["/"]}"#,
            "invalid message: field `namespace` must be a string",
        ),
        (
            r#"{"type":"join","room":{}}"#,
            "invalid message: field `room` must be a string",
        ),
        (
            r#"{"type":"ping","type":"ping"}"#,
            "invalid message: duplicate field `type`",
        ),
    ];
    for (frame, expected) in cases {
        c.send_text(frame).await;
        let got = c.recv().await;
        let obj = got.as_object().expect("an object");
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys.len(),
            3,
            "only type, namespace, error for {frame:?}: {got}"
        );
        assert_eq!(got["type"], "error", "for {frame:?}");
        assert_eq!(got["namespace"], "/", "for {frame:?}");
        let text = got["error"].as_str().expect("error text");
        match expected.strip_suffix("...") {
            Some(prefix) => assert!(text.starts_with(prefix), "for {frame:?}: {text}"),
            None => assert_eq!(text, *expected, "for {frame:?}"),
        }
        // The connection stays usable after every one of them.
        assert_usable(&mut c).await;
    }
    assert_eq!(server.server.stats().protocol_errors, cases.len() as u64);
}

#[tokio::test]
async fn wrong_field_types_echo_what_could_be_read() {
    let server = TestServer::start(echo_server()).await;
    let mut c = server.client().await;

    c.send_text(r#"{"type":"event","event":"echo","ackId":5}"#)
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "echo", "error": "invalid message: field `ackId` must be a string"})
    );
    c.send_text(r#"{"type":1,"ackId":"a1","event":"echo"}"#)
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "echo", "ackId": "a1", "error": "invalid message: field `type` must be a string"})
    );
    c.send_text(r#"{"type":"event","event":7,"ackId":"a2"}"#)
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "ackId": "a2", "error": "invalid message: field `event` must be a string"})
    );
    assert_usable(&mut c).await;
    // The valid request still works.
    c.send_text(r#"{"type":"event","event":"echo","ackId":"ok","data":1}"#)
        .await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"ack","namespace":"/","event":"echo","data":1,"ackId":"ok"}"#
    );
}

#[tokio::test]
async fn persistent_abuse_closes_with_1008() {
    let server = TestServer::start(
        echo_builder()
            .max_invalid_messages(3, Duration::from_secs(600))
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    for _ in 0..3 {
        c.send_text("garbage").await;
        let got = c.recv().await;
        assert_eq!(got["type"], "error");
        assert!(
            got["error"]
                .as_str()
                .expect("text")
                .starts_with("invalid message: malformed json: "),
            "{got}"
        );
    }
    // At the limit, still usable.
    assert_usable(&mut c).await;
    // One more: the error, then close 1008.
    c.send(json!({"type": "nope"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "error": "unknown message type"})
    );
    assert_eq!(
        c.closed().await,
        Closed::Frame(1008, "too many invalid messages".to_owned())
    );

    // Another connection is not affected.
    let mut other = server.client().await;
    assert_usable(&mut other).await;
}

#[tokio::test]
async fn binary_frame_with_a_valid_envelope_is_handled_like_text() {
    let server = TestServer::start(echo_server()).await;
    let mut c = server.client().await;
    c.send_binary(br#"{"type":"ping","namespace":"/b"}"#).await;
    // Answered with a text frame (recv_text panics on anything else).
    assert_eq!(c.recv_text().await, r#"{"type":"pong","namespace":"/b"}"#);
    c.send_binary(br#"{"type":"event","event":"echo","data":{"a":1},"ackId":"bin"}"#)
        .await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"ack","namespace":"/","event":"echo","data":{"a":1},"ackId":"bin"}"#
    );
    c.send_binary(b"\xff\xfe not json").await;
    let got = c.recv().await;
    assert!(
        got["error"]
            .as_str()
            .expect("text")
            .starts_with("invalid message: malformed json: "),
        "{got}"
    );
    assert_usable(&mut c).await;
}

#[tokio::test]
async fn unknown_event_is_an_error_with_or_without_ack_id() {
    let server = TestServer::start(echo_server()).await;
    let mut c = server.client().await;
    c.send(json!({"type": "event", "event": "nope", "ackId": "1", "data": {}}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "nope", "ackId": "1", "error": "unknown event"})
    );
    c.send(json!({"type": "event", "event": "nope"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "nope", "error": "unknown event"})
    );
    // Event names are case-sensitive.
    c.send(json!({"type": "event", "event": "Echo", "ackId": "2"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "Echo", "ackId": "2", "error": "unknown event"})
    );
}

#[tokio::test]
async fn reserved_and_invalid_event_names_are_refused_and_never_dispatched() {
    let connects = Arc::new(AtomicUsize::new(0));
    let disconnects = Arc::new(AtomicUsize::new(0));
    let (c1, d1) = (connects.clone(), disconnects.clone());
    let server = TestServer::start(
        echo_builder()
            .on_connect(move |_s: Socket| {
                let c1 = c1.clone();
                async move {
                    c1.fetch_add(1, Ordering::SeqCst);
                }
            })
            .on_disconnect(move |_s: Socket, _r| {
                let d1 = d1.clone();
                async move {
                    d1.fetch_add(1, Ordering::SeqCst);
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;

    for name in [
        "connect",
        "disconnect",
        "error",
        "ping",
        "pong",
        "join",
        "leave",
        "ack",
    ] {
        c.send(json!({"type": "event", "event": name, "ackId": "r", "data": {}}))
            .await;
        assert_eq!(
            c.recv().await,
            json!({"type": "error", "namespace": "/", "event": name, "ackId": "r", "error": "invalid event name: event is reserved"}),
            "for {name}"
        );
    }
    // Invalid names are not echoed back.
    let long = "e".repeat(200);
    for (name, error) in [
        (
            "a\0b",
            "invalid event name: event contains a control character",
        ),
        (
            "\u{7f}",
            "invalid event name: event contains a control character",
        ),
        (
            long.as_str(),
            "invalid event name: event is longer than 128 bytes",
        ),
        ("", "invalid event name: event is empty"),
    ] {
        c.send(json!({"type": "event", "event": name, "ackId": "n"}))
            .await;
        assert_eq!(
            c.recv().await,
            json!({"type": "error", "namespace": "/", "ackId": "n", "error": error}),
            "for {name:?}"
        );
    }
    c.send(json!({"type": "event", "ackId": "m"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "ackId": "m", "error": "invalid message: event without event name"})
    );
    assert_usable(&mut c).await;
    // A client-sent `connect`/`disconnect` never reached the hooks.
    assert_eq!(connects.load(Ordering::SeqCst), 1);
    assert_eq!(disconnects.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn event_to_a_namespace_not_joined_gets_the_seed_error() {
    let server = TestServer::start(
        echo_builder()
            .namespace("/chat", |ns| {
                ns.on(
                    "msg",
                    |_s: Socket, _d: Value| async move { Json("in chat") },
                )
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;

    c.send_text(r#"{"type":"event","namespace":"/x","event":"msg","data":{}}"#)
        .await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"error","namespace":"/x","event":"msg","error":"namespace not joined"}"#
    );
    c.send(json!({"type": "event", "namespace": "/chat", "event": "msg", "ackId": "9"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/chat", "event": "msg", "ackId": "9", "error": "namespace not joined"})
    );
    c.send(json!({"type": "join", "namespace": "/chat"})).await;
    c.send(json!({"type": "event", "namespace": "/chat", "event": "msg", "ackId": "10"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/chat", "event": "msg", "data": "in chat", "ackId": "10"})
    );
}

#[tokio::test]
async fn data_is_relayed_byte_exact() {
    let server = TestServer::start(
        Server::builder()
            .on("relay", |s: Socket, data: Box<RawValue>| async move {
                s.broadcast()
                    .emit("relay", &data)
                    .map_err(|e| HandlerError::new(e.to_string()))?;
                Ok::<_, HandlerError>(Json(data))
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut other = server.client().await;
    other.ready().await;
    let mut c = server.client().await;

    let payloads = [
        r#"{"big":123456789012345678901234567890123,"neg":-0,"dec":0.1000000000000000000000000000001}"#,
        r#"[1, 2 ,3 ,{ "a" : -0.0 }]"#,
        "1E400",
        "-0",
        "18446744073709551616",
        "3.141592653589793238462643383279502884197",
        r#""\u00e9\ud83e\udd80 \" \\ \/""#,
        "null",
    ];
    for (i, data) in payloads.iter().enumerate() {
        let ack = format!("r{i}");
        c.send_text(&format!(
            r#"{{"type":"event","event":"relay","data":{data},"ackId":"{ack}"}}"#
        ))
        .await;
        let expected_ack = if *data == "null" {
            // A `null` ack is "no data".
            format!(r#"{{"type":"ack","namespace":"/","event":"relay","ackId":"{ack}"}}"#)
        } else {
            format!(
                r#"{{"type":"ack","namespace":"/","event":"relay","data":{data},"ackId":"{ack}"}}"#
            )
        };
        assert_eq!(c.recv_text().await, expected_ack);
        assert_eq!(
            other.recv_text().await,
            format!(r#"{{"type":"event","namespace":"/","event":"relay","data":{data}}}"#)
        );
    }
}

#[tokio::test]
async fn payload_that_does_not_decode_is_an_error_and_the_handler_is_not_called() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c1 = calls.clone();
    let server = TestServer::start(
        Server::builder()
            .on("chat", move |_s: Socket, msg: Chat| {
                let c1 = c1.clone();
                async move {
                    c1.fetch_add(1, Ordering::SeqCst);
                    Json(msg)
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;

    for (data, ack) in [
        (r#"{"user":1,"message":"hi"}"#, "p1"),
        (r#"{"user":"a"}"#, "p2"),
        ("[]", "p3"),
        ("null", "p4"),
    ] {
        let expected = serde_json::from_str::<Chat>(data).expect_err("does not decode");
        c.send_text(&format!(
            r#"{{"type":"event","event":"chat","data":{data},"ackId":"{ack}"}}"#
        ))
        .await;
        assert_eq!(
            c.recv().await,
            json!({"type": "error", "namespace": "/", "event": "chat", "ackId": ack, "error": format!("invalid payload: {expected}")}),
            "for {data}"
        );
    }
    // Without `data` at all: decoded from null.
    c.send(json!({"type": "event", "event": "chat", "ackId": "p5"}))
        .await;
    let expected = serde_json::from_str::<Chat>("null").expect_err("does not decode");
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "chat", "ackId": "p5", "error": format!("invalid payload: {expected}")})
    );
    // Without an ackId, the error still names the event.
    c.send(json!({"type": "event", "event": "chat", "data": 5}))
        .await;
    let got = c.recv().await;
    assert_eq!(got["event"], "chat");
    assert!(got.get("ackId").is_none(), "{got}");
    assert!(
        got["error"]
            .as_str()
            .expect("text")
            .starts_with("invalid payload: "),
        "{got}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    c.send(json!({"type": "event", "event": "chat", "data": {"user": "a", "message": "b"}, "ackId": "ok"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "chat", "data": {"user": "a", "message": "b"}, "ackId": "ok"})
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn handler_error_with_data_is_sent_as_an_error() {
    let server = TestServer::start(
        Server::builder()
            .on("nick", |_s: Socket, nick: String| async move {
                if nick == "taken" {
                    Err(HandlerError::new("nickname taken").with_data(&json!({"field": "nick"})))
                } else {
                    Ok(Json(nick))
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    c.emit_ack("nick", json!("taken"), "e1").await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"error","namespace":"/","event":"nick","data":{"field":"nick"},"ackId":"e1","error":"nickname taken"}"#
    );
    // Without an ackId the failure is still reported, naming the event.
    c.send(json!({"type": "event", "event": "nick", "data": "taken"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "nick", "data": {"field": "nick"}, "error": "nickname taken"})
    );
    c.emit_ack("nick", json!("free"), "e2").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "nick", "data": "free", "ackId": "e2"})
    );
}

#[tokio::test]
async fn unit_handler_acks_without_data_and_stays_silent_without_ack_id() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c1 = calls.clone();
    let server = TestServer::start(
        Server::builder()
            .on("x", move |_s: Socket, _d: Value| {
                let c1 = c1.clone();
                async move {
                    c1.fetch_add(1, Ordering::SeqCst);
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    c.emit_ack("x", json!({}), "1").await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"ack","namespace":"/","event":"x","ackId":"1"}"#
    );
    // Without an ackId: no answer. Requests run in order, so if the first one answered, its
    // answer would arrive before the second one's ack.
    c.send(json!({"type": "event", "event": "x", "data": 1}))
        .await;
    c.emit_ack("x", json!(2), "2").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "x", "ackId": "2"})
    );
    c.send(json!({"type": "event", "event": "x"})).await;
    c.expect_quiet().await;
    // Every handler ran (the ordered ack of a last request proves the previous one finished).
    c.emit_ack("x", json!(null), "3").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "x", "ackId": "3"})
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn handler_panic_is_contained() {
    let server = TestServer::start(
        echo_builder()
            .on("boom", |_s: Socket, d: Value| async move {
                if d.is_object() {
                    panic!("handler exploded on purpose");
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    let mut other = server.client().await;

    c.emit_ack("boom", json!({}), "b1").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "boom", "ackId": "b1", "error": "internal error"})
    );
    // The same connection keeps working.
    c.emit_ack("echo", json!("still here"), "e1").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "echo", "data": "still here", "ackId": "e1"})
    );
    assert_usable(&mut c).await;
    // Another connection is unaffected.
    other.emit_ack("echo", json!(2), "o1").await;
    assert_eq!(
        other.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "echo", "data": 2, "ackId": "o1"})
    );
    assert_eq!(server.server.stats().handler_panics, 1);
}

/// A server whose `slow` handler reports that it started, then waits for `release`.
fn gated_server(
    release: Arc<Notify>,
    started: mpsc::UnboundedSender<()>,
    builder: wsu::ServerBuilder,
) -> Server {
    builder
        .on("slow", move |_s: Socket, d: Value| {
            let release = release.clone();
            let started = started.clone();
            async move {
                started.send(()).expect("test alive");
                release.notified().await;
                Json(d)
            }
        })
        .on("fast", |_s: Socket, d: Value| async move { Json(d) })
        .build()
        .expect("build")
}

#[tokio::test]
async fn requests_are_handled_in_arrival_order() {
    let release = Arc::new(Notify::new());
    let (tx, mut started) = mpsc::unbounded_channel();
    let server = TestServer::start(gated_server(release.clone(), tx, Server::builder())).await;
    let mut c = server.client().await;

    c.emit_ack("slow", json!(1), "1").await;
    next(&mut started).await;
    c.emit_ack("fast", json!(2), "2").await;
    c.send(json!({"type": "ping", "namespace": "/p"})).await;
    c.emit_ack("fast", json!(3), "3").await;
    // The server has read everything; nothing was answered before the slow request.
    c.sync_read().await;
    release.notify_one();
    for i in 1..=3 {
        assert_eq!(
            c.recv().await,
            json!({"type": "ack", "namespace": "/", "event": if i == 1 { "slow" } else { "fast" }, "data": i, "ackId": i.to_string()})
        );
        if i == 2 {
            // JSON pings are answered in arrival order too.
            assert_eq!(c.recv().await, json!({"type": "pong", "namespace": "/p"}));
        }
    }
    c.expect_quiet().await;
}

#[tokio::test]
async fn what_a_handler_emits_arrives_before_its_ack() {
    let server = TestServer::start(
        Server::builder()
            .on("multi", |s: Socket, n: u32| async move {
                for i in 0..n {
                    s.emit("part", &i)?;
                }
                s.of("/").emit("done", &n)?;
                Ok::<_, wsu::SendError>(Json(n))
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    c.emit_ack("multi", json!(3), "m").await;
    for i in 0..3 {
        assert_eq!(
            c.recv_text().await,
            format!(r#"{{"type":"event","namespace":"/","event":"part","data":{i}}}"#)
        );
    }
    assert_eq!(
        c.recv().await,
        json!({"type": "event", "namespace": "/", "event": "done", "data": 3})
    );
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "multi", "data": 3, "ackId": "m"})
    );
}

#[tokio::test]
async fn too_many_pending_requests_is_an_error_with_the_ack_id() {
    let release = Arc::new(Notify::new());
    let (tx, mut started) = mpsc::unbounded_channel();
    let server = TestServer::start(gated_server(
        release.clone(),
        tx,
        Server::builder().max_pending_requests(2),
    ))
    .await;
    let mut c = server.client().await;

    c.emit_ack("slow", json!(0), "s").await;
    next(&mut started).await;
    c.emit_ack("fast", json!(1), "q1").await;
    c.emit_ack("fast", json!(2), "q2").await;
    c.emit_ack("fast", json!(3), "q3").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "fast", "ackId": "q3", "error": "too many pending requests"})
    );
    release.notify_one();
    for (ack, event, data) in [("s", "slow", 0), ("q1", "fast", 1), ("q2", "fast", 2)] {
        assert_eq!(
            c.recv().await,
            json!({"type": "ack", "namespace": "/", "event": event, "data": data, "ackId": ack})
        );
    }
    c.expect_quiet().await;
}

#[tokio::test]
async fn rate_limit_exceeded_is_an_error_under_the_reject_policy() {
    let server = TestServer::start(
        echo_builder()
            .rate_limit(0.001, 2.0)
            .rate_limit_policy(wsu::RateLimitPolicy::Reject)
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    c.emit_ack("echo", json!(1), "1").await;
    c.emit_ack("echo", json!(2), "2").await;
    c.emit_ack("echo", json!(3), "3").await;
    c.send(json!({"type": "join", "room": "r", "ackId": "4"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "echo", "data": 1, "ackId": "1"})
    );
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "echo", "data": 2, "ackId": "2"})
    );
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "echo", "ackId": "3", "error": "rate limit exceeded"})
    );
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "ackId": "4", "error": "rate limit exceeded"})
    );
    // Pings are not requests: not limited.
    assert_usable(&mut c).await;
    let stats = server.server.stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(
        stats.protocol_errors, 0,
        "refusals for rate are not invalid messages"
    );
}
