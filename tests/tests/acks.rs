//! Server→client acks: `Socket::emit_with_ack` from handlers and hooks, typed results, timeouts,
//! stray answers, closing connections and the per-connection cap.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use wsu::{AckError, Json, Server, Socket};
use wsu_tests::{Client, TestServer, next};

#[derive(Debug, PartialEq, serde::Deserialize, serde::Serialize)]
struct Answer {
    answer: u32,
}

/// A short, comparable description of an ack outcome.
fn outcome<T: std::fmt::Debug>(r: Result<T, AckError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(AckError::Timeout) => "timeout".to_owned(),
        Err(AckError::Closed) => "closed".to_owned(),
        Err(AckError::TooManyPending) => "too many pending".to_owned(),
        Err(AckError::Decode(_)) => "decode".to_owned(),
        Err(e) => format!("other: {e}"),
    }
}

/// Receive the server's `event` named `event` that asks for an ack; check its exact shape and
/// return its ack id.
async fn recv_question(c: &mut Client, event: &str, data: Value) -> String {
    let got = c.recv().await;
    let id = got["ackId"]
        .as_str()
        .unwrap_or_else(|| panic!("an ackId string in {got}"))
        .to_owned();
    assert_eq!(
        got,
        json!({"type": "event", "namespace": "/", "event": event, "data": data, "ackId": id})
    );
    id
}

/// Answer a server ack.
async fn answer(c: &mut Client, id: &str, data: Value) {
    c.send(json!({"type": "ack", "ackId": id, "data": data}))
        .await;
}

/// Ping and await the pong: every message sent before it has been handled by the server.
async fn sync(c: &mut Client) {
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "namespace": "/"}));
}

/// `ask`: ask the client a `question` and ack with the outcome.
fn ask_server(builder: wsu::ServerBuilder) -> Server {
    builder
        .on("ask", |s: Socket, q: Value| async move {
            Json(outcome(s.emit_with_ack::<_, Value>("question", &q).await))
        })
        .build()
        .expect("build")
}

#[tokio::test]
async fn emit_with_ack_from_a_handler_of_the_same_connection() {
    let server = TestServer::start(
        Server::builder()
            .on("ask", |s: Socket, q: Value| async move {
                let a: Answer = s.emit_with_ack("question", &q).await?;
                Ok::<_, AckError>(Json(a))
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    c.emit_ack("ask", json!({"q": 1}), "a1").await;
    let id = recv_question(&mut c, "question", json!({"q": 1})).await;
    // The handler is waiting, yet the connection keeps reading (and will read the answer).
    c.sync_read().await;
    assert_eq!(server.server.stats().pending_acks, 1);
    c.send(json!({"type": "ack", "namespace": "/", "ackId": id, "data": {"answer": 42}}))
        .await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"ack","namespace":"/","event":"ask","data":{"answer":42},"ackId":"a1"}"#
    );
    assert_eq!(server.server.stats().pending_acks, 0);
    assert_eq!(server.server.stats().unknown_acks, 0);
}

#[tokio::test]
async fn emit_with_ack_from_the_connect_hook() {
    let (tx, mut names) = mpsc::unbounded_channel::<String>();
    let server = TestServer::start(
        Server::builder()
            .on_connect(move |s: Socket| {
                let tx = tx.clone();
                async move {
                    let name: String = s
                        .emit_with_ack("who", &"are you?")
                        .await
                        .map_err(|e| e.to_string())?;
                    s.emit("welcome", &name).map_err(|e| e.to_string())?;
                    tx.send(name).map_err(|e| e.to_string())?;
                    Ok::<(), String>(())
                }
            })
            .on("echo", |_s: Socket, d: Value| async move { Json(d) })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    let id = recv_question(&mut c, "who", json!("are you?")).await;
    // A request sent now waits behind the hook, and so does the answer to a JSON ping.
    c.emit_ack("echo", json!("queued"), "e").await;
    c.send(json!({"type": "ping"})).await;
    c.sync_read().await;
    answer(&mut c, &id, json!("alice")).await;
    assert_eq!(next(&mut names).await, "alice");
    assert_eq!(
        c.recv().await,
        json!({"type": "event", "namespace": "/", "event": "welcome", "data": "alice"})
    );
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "echo", "data": "queued", "ackId": "e"})
    );
    assert_eq!(c.recv().await, json!({"type": "pong", "namespace": "/"}));
}

#[tokio::test]
async fn ack_data_decodes_into_the_requested_type() {
    let server = TestServer::start(
        Server::builder()
            .on("num", |s: Socket, _d: Value| async move {
                Json(outcome(s.emit_with_ack::<_, u32>("num?", &1).await))
            })
            .on("opt", |s: Socket, _d: Value| async move {
                Json(outcome(s.emit_with_ack::<_, Option<u32>>("opt?", &2).await))
            })
            .on("typed", |s: Socket, _d: Value| async move {
                Json(outcome(s.emit_with_ack::<_, Answer>("typed?", &3).await))
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    let cases: [(&str, i32, Option<Value>, &str); 7] = [
        ("num", 1, Some(json!(7)), "ok 7"),
        ("num", 1, Some(json!("seven")), "decode"),
        ("num", 1, None, "decode"),
        ("opt", 2, None, "ok None"),
        ("opt", 2, Some(json!(5)), "ok Some(5)"),
        (
            "typed",
            3,
            Some(json!({"answer": 9})),
            "ok Answer { answer: 9 }",
        ),
        ("typed", 3, Some(json!({"answer": -1})), "decode"),
    ];
    for (i, (event, data, reply, expected)) in cases.into_iter().enumerate() {
        let ack = format!("c{i}");
        c.emit_ack(event, json!(null), &ack).await;
        let id = recv_question(&mut c, &format!("{event}?"), json!(data)).await;
        match reply {
            Some(v) => answer(&mut c, &id, v).await,
            None => c.send(json!({"type": "ack", "ackId": id})).await,
        }
        assert_eq!(
            c.recv().await,
            json!({"type": "ack", "namespace": "/", "event": event, "data": expected, "ackId": ack}),
            "case {i}"
        );
    }
}

#[tokio::test]
async fn unanswered_acks_time_out() {
    let server = TestServer::start(
        Server::builder()
            .ack_timeout(Duration::from_millis(150))
            .on("short", |s: Socket, _d: Value| async move {
                let r = s
                    .emit_with_ack_timeout::<_, Value>("q", &1, Duration::from_millis(200))
                    .await;
                Json(outcome(r))
            })
            .on("default", |s: Socket, _d: Value| async move {
                Json(outcome(s.emit_with_ack::<_, Value>("q", &2).await))
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    c.emit_ack("short", json!(null), "s").await;
    let late = recv_question(&mut c, "q", json!(1)).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "short", "data": "timeout", "ackId": "s"})
    );
    let stats = server.server.stats();
    assert_eq!((stats.ack_timeouts, stats.pending_acks), (1, 0));

    // A late answer is ignored and counted.
    answer(&mut c, &late, json!("too late")).await;
    sync(&mut c).await;
    assert_eq!(server.server.stats().unknown_acks, 1);

    // The builder's default ack timeout applies to `emit_with_ack`.
    c.emit_ack("default", json!(null), "d").await;
    recv_question(&mut c, "q", json!(2)).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "default", "data": "timeout", "ackId": "d"})
    );
    let stats = server.server.stats();
    assert_eq!((stats.ack_timeouts, stats.pending_acks), (2, 0));
}

#[tokio::test]
async fn stray_acks_are_ignored_counted_and_never_resolve_another_waiter() {
    let server = TestServer::start(ask_server(
        Server::builder().ack_timeout(Duration::from_secs(60)),
    ))
    .await;
    let mut a = server.client().await;
    let mut b = server.client().await;

    a.emit_ack("ask", json!("for a"), "qa").await;
    let ia = recv_question(&mut a, "question", json!("for a")).await;
    b.emit_ack("ask", json!("for b"), "qb").await;
    let ib = recv_question(&mut b, "question", json!("for b")).await;
    assert_eq!(server.server.stats().pending_acks, 2);

    // B answers its own question: only B's waiter resolves, even if both ids are equal.
    answer(&mut b, &ib, json!("from b")).await;
    assert_eq!(
        b.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "ask", "data": "ok String(\"from b\")", "ackId": "qb"})
    );
    // B now has nothing pending: A's id sent by B, and B's duplicate, are stray.
    answer(&mut b, &ia, json!("evil")).await;
    answer(&mut b, &ib, json!("again")).await;
    sync(&mut b).await;
    // Unknown ids on A: not issued, a non-canonical spelling of the real one, not a number.
    for bogus in [
        "999",
        &format!("0{ia}"),
        &format!("+{ia}"),
        "abc",
        &format!("{ia} "),
    ] {
        answer(&mut a, bogus, json!("bogus")).await;
    }
    // A's handler is still waiting: a JSON ping would be answered after it, a WebSocket one now.
    a.sync_read().await;
    let stats = server.server.stats();
    assert_eq!(stats.unknown_acks, 7);
    assert_eq!(stats.pending_acks, 1, "A's waiter is still pending");

    answer(&mut a, &ia, json!("from a")).await;
    assert_eq!(
        a.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "ask", "data": "ok String(\"from a\")", "ackId": "qa"})
    );
    // A duplicate answer is ignored.
    answer(&mut a, &ia, json!("twice")).await;
    a.expect_quiet().await;
    assert_eq!(server.server.stats().unknown_acks, 8);

    // An ack without an ackId is an invalid message.
    a.send(json!({"type": "ack", "data": 1})).await;
    assert_eq!(
        a.recv().await,
        json!({"type": "error", "namespace": "/", "error": "invalid message: ack without ackId"})
    );
}

#[tokio::test]
async fn handler_waiting_for_an_ack_is_cancelled_when_the_client_disconnects() {
    /// Reports when the handler's future is dropped.
    struct OnDrop(mpsc::UnboundedSender<String>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            let _ = self.0.send("handler dropped".to_owned());
        }
    }
    let (tx, mut outcomes) = mpsc::unbounded_channel::<String>();
    let (stx, mut sockets) = mpsc::unbounded_channel::<Socket>();
    let server = TestServer::start(
        Server::builder()
            .ack_timeout(Duration::from_secs(600))
            .on("ask", move |s: Socket, _d: Value| {
                let (tx, stx) = (tx.clone(), stx.clone());
                async move {
                    let guard = OnDrop(tx.clone());
                    stx.send(s.clone()).expect("test alive");
                    let r = s.emit_with_ack::<_, Value>("question", &1).await;
                    tx.send(outcome(r)).expect("test alive");
                    drop(guard);
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    c.send(json!({"type": "event", "event": "ask"})).await;
    recv_question(&mut c, "question", json!(1)).await;
    let socket = next(&mut sockets).await;
    drop(c.close(1000, "bye").await);

    // The handler that was waiting is cancelled with its connection (well before the 600 s
    // ack timeout; `next` gives up after a few seconds), and its pending ack is gone.
    assert_eq!(next(&mut outcomes).await, "handler dropped");
    wsu_tests::wait_until(|| server.server.stats().pending_acks == 0).await;
    // On a closed connection, new acks fail at once.
    assert_eq!(
        outcome(socket.emit_with_ack::<_, Value>("again", &1).await),
        "closed"
    );
    assert!(matches!(socket.emit("x", &1), Err(wsu::SendError::Closed)));
}

/// `hold`: ask the client a `held` question from a background task, report its outcome.
fn hold_server(builder: wsu::ServerBuilder, tx: mpsc::UnboundedSender<String>) -> Server {
    builder
        .ack_timeout(Duration::from_secs(600))
        .on("hold", move |s: Socket, n: u32| {
            let tx = tx.clone();
            async move {
                tokio::spawn(async move {
                    let r = s.emit_with_ack::<_, Value>("held", &n).await;
                    let _ = tx.send(outcome(r));
                });
            }
        })
        .on("ask", |s: Socket, q: Value| async move {
            Json(outcome(s.emit_with_ack::<_, Value>("question", &q).await))
        })
        .build()
        .expect("build")
}

#[tokio::test]
async fn too_many_pending_acks_per_connection() {
    let (tx, mut outcomes) = mpsc::unbounded_channel();
    let server = TestServer::start(hold_server(Server::builder().max_pending_acks(2), tx)).await;
    let mut c = server.client().await;
    let mut other = server.client().await;

    c.send(json!({"type": "event", "event": "hold", "data": 1}))
        .await;
    let id1 = recv_question(&mut c, "held", json!(1)).await;
    c.send(json!({"type": "event", "event": "hold", "data": 2}))
        .await;
    let id2 = recv_question(&mut c, "held", json!(2)).await;
    assert_eq!(server.server.stats().pending_acks, 2);

    c.emit_ack("ask", json!(3), "x").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "ask", "data": "too many pending", "ackId": "x"})
    );
    // The cap is per connection.
    other.emit_ack("ask", json!(4), "y").await;
    let io = recv_question(&mut other, "question", json!(4)).await;
    answer(&mut other, &io, json!("fine")).await;
    assert_eq!(
        other.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "ask", "data": "ok String(\"fine\")", "ackId": "y"})
    );

    answer(&mut c, &id2, json!("two")).await;
    assert_eq!(next(&mut outcomes).await, "ok String(\"two\")");
    answer(&mut c, &id1, json!("one")).await;
    assert_eq!(next(&mut outcomes).await, "ok String(\"one\")");
    assert_eq!(server.server.stats().pending_acks, 0);
    // Room again.
    c.emit_ack("ask", json!(5), "z").await;
    let iz = recv_question(&mut c, "question", json!(5)).await;
    answer(&mut c, &iz, json!(5)).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "ask", "data": "ok Number(5)", "ackId": "z"})
    );
}

#[tokio::test]
async fn ack_ids_are_opaque_strings_without_the_peer_address() {
    let (tx, _outcomes) = mpsc::unbounded_channel();
    let server = TestServer::start(hold_server(Server::builder(), tx)).await;
    let mut c = server.client().await;
    let addr = c.local_addr();
    let mut ids = Vec::new();
    for n in 0..3 {
        c.send(json!({"type": "event", "event": "hold", "data": n}))
            .await;
        ids.push(recv_question(&mut c, "held", json!(n)).await);
    }
    for id in &ids {
        assert!(!id.is_empty());
        assert!(!id.contains(&addr.ip().to_string()), "{id} leaks the ip");
        assert!(
            !id.contains(&addr.port().to_string()),
            "{id} leaks the port"
        );
        assert!(!id.contains(':') && !id.contains('#'), "{id}");
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids are unique: {ids:?}");
}

#[tokio::test]
async fn client_error_answer_rejects_the_server_request() {
    let server = TestServer::start(
        Server::builder()
            .on("ask", |s: Socket, q: Value| async move {
                match s.emit_with_ack::<_, Value>("question", &q).await {
                    Err(AckError::Rejected(e)) => {
                        Json(json!({"rejected": e.message(), "data": e.data().map(|d| d.get().to_owned())}))
                    }
                    other => Json(json!({"unexpected": outcome(other)})),
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    c.emit_ack("ask", json!(1), "a1").await;
    let id = recv_question(&mut c, "question", json!(1)).await;
    c.send(json!({"type": "error", "ackId": id, "error": "no idea", "data": {"code": 7}}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "ask", "ackId": "a1",
               "data": {"rejected": "no idea", "data": "{\"code\":7}"}})
    );
    // An error for an unknown id is ignored and counted, never answered.
    c.send(json!({"type": "error", "ackId": "999", "error": "stray"}))
        .await;
    sync(&mut c).await;
    assert_eq!(server.server.stats().unknown_acks, 1);
}

#[tokio::test]
async fn an_abandoned_emit_with_ack_frees_its_slot() {
    use futures_util::FutureExt;
    let (stx, mut sockets) = mpsc::unbounded_channel::<Socket>();
    let server = TestServer::start(
        Server::builder()
            .max_pending_acks(1)
            .on_connect(move |s: Socket| {
                let _ = stx.send(s);
                async {}
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    let socket = next(&mut sockets).await;
    // Polled once (the question is sent), then dropped without an answer.
    assert!(
        socket
            .emit_with_ack::<_, Value>("question", &1)
            .now_or_never()
            .is_none()
    );
    assert_eq!(server.server.stats().pending_acks, 0);
    // The single slot is free again: a second request is sent and answered.
    let asking = {
        let socket = socket.clone();
        tokio::spawn(async move { socket.emit_with_ack::<_, Value>("question", &2).await })
    };
    recv_question(&mut c, "question", json!(1)).await;
    let id = recv_question(&mut c, "question", json!(2)).await;
    answer(&mut c, &id, json!("two")).await;
    assert_eq!(asking.await.expect("task").expect("answered"), json!("two"));
}
