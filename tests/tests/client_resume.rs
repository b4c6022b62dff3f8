//! The Rust client's session recovery (hello, resume on reconnect, recovery frames, presence,
//! close 4003) against a scripted server speaking the frames of the v2 extensions byte for
//! byte.
//!
//! No sleeps: every step awaits a frame, a state event or a handler's report.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use wsu::client::{
    Client, ClientAckError, ClientError, ConnectionState, PresenceUpdate, Reconnect, Recovery,
    StateEvent,
};
use wsu_tests::within;

type ServerWs = WebSocketStream<TcpStream>;

const SID: &str = "0123456789abcdef";
const T1: &str = "0123456789abcdef.Qm9ndXNfc2VjcmV0X2Zvcl9kb2NzX29ubHlfMTIzNDU2";
const T2: &str = "0123456789abcdef.U2Vjb25kX3Rva2VuX2Zvcl90ZXN0c19vbmx5XzEyMzQ1";
const EPOCH: &str = "5f3a9c1e0b7d2a64";

/// A `hello` as the server writes it (spec-15 §1), with `resume` when given.
fn hello(sid: &str, token: &str, resume: Option<&str>, max: usize) -> String {
    let resume = resume.map_or(String::new(), |r| format!(r#","resume":{r}"#));
    format!(
        r#"{{"type":"hello","namespace":"/","data":{{"protocol":2,"server":"wsu/0.1.0","sid":"{sid}","token":"{token}"{resume},"limits":{{"maxMessageSize":{max},"ackTimeoutMs":5000,"pingIntervalMs":15000,"readTimeoutMs":30000,"maxPendingAcks":128,"maxPendingRequests":64,"rateLimit":null}},"recovery":{{"sessionTtlMs":120000,"historySize":10000,"historyTtlMs":300000,"maxReplay":10000}}}}}}"#
    )
}

fn fast() -> Reconnect {
    Reconnect {
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..Reconnect::default()
    }
}

/// Accepts one WebSocket, returning it with the request's path and query.
// tungstenite's callback signature, not ours.
#[allow(clippy::result_large_err)]
async fn accept(listener: &TcpListener) -> (ServerWs, String) {
    let (tcp, _) = within(listener.accept()).await.expect("accept");
    let mut uri = String::new();
    let ws = within(tokio_tungstenite::accept_hdr_async(
        tcp,
        |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            uri = req.uri().to_string();
            Ok(resp)
        },
    ))
    .await
    .expect("websocket handshake");
    (ws, uri)
}

/// The next text frame as JSON (pings skipped).
async fn recv(ws: &mut ServerWs) -> Value {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("json"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn send(ws: &mut ServerWs, frame: &str) {
    ws.send(Message::text(frame.to_owned()))
        .await
        .expect("send");
}

/// Reads a `join` (of `namespace`, and `room` when given) and answers it with an `ack`.
async fn answer_join(ws: &mut ServerWs, namespace: &str, room: Option<&str>) {
    let join = recv(ws).await;
    assert_eq!(join["type"], "join", "{join}");
    assert_eq!(join["namespace"], namespace, "{join}");
    assert_eq!(join.get("room").and_then(Value::as_str), room, "{join}");
    let ack = json!({"type": "ack", "namespace": namespace, "ackId": join["ackId"]});
    send(ws, &ack.to_string()).await;
}

/// Decodes a query string (percent-decoding keys and values).
fn query(uri: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("utf-8")
    }
    let q = uri.split_once('?').map_or("", |(_, q)| q);
    let mut map = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        assert!(
            map.insert(decode(k), decode(v)).is_none(),
            "duplicate {k} in {uri}"
        );
    }
    map
}

async fn state_event(rx: &mut broadcast::Receiver<StateEvent>) -> StateEvent {
    within(rx.recv()).await.expect("state event")
}

/// The next state event other than `Disconnected`/`Reconnecting`.
async fn next_session_event(rx: &mut broadcast::Receiver<StateEvent>) -> StateEvent {
    loop {
        match state_event(rx).await {
            StateEvent::Disconnected { .. } | StateEvent::Reconnecting { .. } => {}
            other => return other,
        }
    }
}

fn recovery(e: StateEvent) -> Recovery {
    match e {
        StateEvent::Recovery(r) => r,
        other => panic!("expected a recovery, got {other:?}"),
    }
}

/// A client with an `on_any` that reports `(namespace, event, data)`, connected to a first
/// scripted connection that sent `hello` (token T1) and answered the probe.
async fn connected(
    listener: &TcpListener,
    max: usize,
) -> (
    Client,
    ServerWs,
    mpsc::UnboundedReceiver<(String, String, Value)>,
) {
    let url = format!("ws://{}/ws?app=1", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    let connecting = tokio::spawn(
        Client::builder(url)
            .query("user", "ann b")
            .reconnect(fast())
            .on_any(move |ns, ev, data| {
                let data = data.map_or(Value::Null, |d| {
                    serde_json::from_str(d.get()).expect("json")
                });
                let _ = tx.send((ns.to_owned(), ev.to_owned(), data));
            })
            .connect(),
    );
    let (mut ws, uri) = accept(listener).await;
    let q = query(&uri);
    assert!(
        !q.contains_key("wsu_resume") && !q.contains_key("wsu_offsets"),
        "{uri}"
    );
    send(&mut ws, &hello(SID, T1, None, max)).await;
    answer_join(&mut ws, "/", None).await;
    let client = within(connecting).await.expect("task").expect("connect");
    (client, ws, rx)
}

#[tokio::test]
async fn hello_is_kept_and_over_size_sends_fail_locally() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (client, mut ws, mut seen) = connected(&listener, 120).await;
    assert_eq!(client.session_id().as_deref(), Some(SID));
    assert_eq!(client.max_message_size(), Some(120));
    assert!(!client.is_resumed());

    let big = "x".repeat(200);
    match client.emit("chat", &big).await {
        Err(ClientError::MessageTooBig { size, limit }) => {
            assert_eq!(limit, 120);
            assert!(size > 200, "{size}");
        }
        other => panic!("expected MessageTooBig, got {other:?}"),
    }
    let e = client.emit_with_ack::<_, Value>("chat", &big).await;
    assert!(
        matches!(
            e,
            Err(ClientAckError::Send(ClientError::MessageTooBig {
                limit: 120,
                ..
            }))
        ),
        "{e:?}"
    );
    let e = client.join(&"r".repeat(100)).await;
    assert!(
        matches!(
            e,
            Err(ClientAckError::Send(ClientError::MessageTooBig { .. }))
        ),
        "{e:?}"
    );
    let text = ClientError::MessageTooBig {
        size: 130,
        limit: 120,
    }
    .to_string();
    assert!(text.contains("130") && text.contains("120"), "{text}");
    // A frame of exactly the limit goes through; nothing of the refused ones was sent.
    let fits = json!({"type": "event", "namespace": "/", "event": "e", "data": ""}).to_string();
    let pad = "y".repeat(120 - fits.len());
    client.emit("e", &pad).await.expect("fits");
    let got = recv(&mut ws).await;
    assert_eq!(got["event"], "e");
    assert_eq!(got.to_string().len(), 120);

    // The hello never reached the application; a live event does.
    send(
        &mut ws,
        r#"{"type":"event","namespace":"/","event":"live","data":1}"#,
    )
    .await;
    let (ns, ev, data) = within(seen.recv()).await.expect("event");
    assert_eq!((ns.as_str(), ev.as_str(), data), ("/", "live", json!(1)));
    client.close("bye").await;
}

#[tokio::test]
async fn accepted_resume_sends_positions_skips_rejoin_and_replays_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (client, mut ws, mut seen) = connected(&listener, 65536).await;
    let mut events = client.events();
    let chat = client.of("/chat");

    // Joining /chat and a room: the server sends the namespace's recovery frame before the
    // join's ack, then live broadcasts with offsets.
    let joining = tokio::spawn({
        let chat = chat.clone();
        async move { chat.join("lobby").await }
    });
    let join = recv(&mut ws).await;
    assert_eq!(
        (&join["namespace"], &join["room"]),
        (&json!("/chat"), &json!("lobby"))
    );
    send(&mut ws, &format!(r#"{{"type":"recovery","namespace":"/chat","data":{{"recovered":false,"reason":"new","epoch":"{EPOCH}","offset":1040,"events":[]}}}}"#)).await;
    send(
        &mut ws,
        &json!({"type":"ack","namespace":"/chat","ackId":join["ackId"]}).to_string(),
    )
    .await;
    within(joining).await.expect("task").expect("join");
    let r = recovery(next_session_event(&mut events).await);
    assert_eq!(
        (
            r.namespace.as_str(),
            r.recovered,
            r.reason.as_deref(),
            r.replayed,
            r.resumed
        ),
        ("/chat", false, Some("new"), 0, false)
    );
    assert_eq!(chat.position().map(|p| p.offset), Some(1040));
    send(&mut ws, &format!(r#"{{"type":"event","namespace":"/chat","event":"msg","data":{{"text":"hi"}},"offset":1042,"epoch":"{EPOCH}"}}"#)).await;
    // A direct emit (no offset) does not move the position.
    send(
        &mut ws,
        r#"{"type":"event","namespace":"/chat","event":"direct","data":null}"#,
    )
    .await;
    assert_eq!(within(seen.recv()).await.expect("event").1, "msg");
    assert_eq!(within(seen.recv()).await.expect("event").1, "direct");
    let p = chat.position().expect("position");
    assert_eq!((&*p.epoch, p.offset), (EPOCH, 1042));
    assert!(client.position().is_none());

    // The transport drops without a close frame: the client reconnects asking to resume.
    drop(ws);
    let (mut ws, uri) = accept(&listener).await;
    let q = query(&uri);
    assert!(uri.starts_with("/ws?"), "{uri}");
    assert_eq!(q["app"], "1");
    assert_eq!(q["user"], "ann b");
    assert_eq!(q["wsu_resume"], T1);
    let offsets: Value = serde_json::from_str(&q["wsu_offsets"]).expect("offsets json");
    assert_eq!(offsets, json!({"/chat": {"epoch": EPOCH, "offset": 1042}}));

    // Accepted: recovery of the missed events, then a live event, then the probe's answer.
    send(
        &mut ws,
        &hello(SID, T2, Some(r#"{"accepted":true}"#), 65536),
    )
    .await;
    send(&mut ws, &format!(r#"{{"type":"recovery","namespace":"/chat","data":{{"recovered":true,"epoch":"{EPOCH}","offset":1045,"events":[{{"type":"event","namespace":"/chat","event":"msg","data":"a","offset":1043,"epoch":"{EPOCH}"}},{{"type":"event","namespace":"/chat","event":"msg","data":"b","offset":1045,"epoch":"{EPOCH}"}}]}}}}"#)).await;
    send(&mut ws, &format!(r#"{{"type":"event","namespace":"/chat","event":"msg","data":"c","offset":1046,"epoch":"{EPOCH}"}}"#)).await;
    // Only the probe: the server restored /chat and the room.
    answer_join(&mut ws, "/", None).await;
    assert_eq!(
        next_session_event(&mut events).await,
        StateEvent::Resumed {
            sid: SID.to_owned()
        }
    );
    let r = recovery(next_session_event(&mut events).await);
    assert_eq!(
        (
            r.namespace.as_str(),
            r.recovered,
            r.reason,
            r.replayed,
            r.resumed
        ),
        ("/chat", true, None, 2, true)
    );
    assert_eq!(next_session_event(&mut events).await, StateEvent::Connected);
    assert!(client.is_resumed());
    for want in ["a", "b", "c"] {
        let (ns, ev, data) = within(seen.recv()).await.expect("event");
        assert_eq!(
            (ns.as_str(), ev.as_str(), data),
            ("/chat", "msg", json!(want))
        );
    }
    // The next frame is the app's own, not a rejoin.
    chat.emit("after", &1).await.expect("emit");
    let after = recv(&mut ws).await;
    assert_eq!(
        (&after["type"], &after["event"]),
        (&json!("event"), &json!("after")),
        "{after}"
    );
    assert_eq!(chat.position().map(|p| p.offset), Some(1046));
    assert_eq!(chat.rooms(), ["lobby"]);

    // The next resume carries the latest token only, and the latest position.
    drop(ws);
    let (mut ws, uri) = accept(&listener).await;
    let q = query(&uri);
    assert_eq!(q["wsu_resume"], T2);
    let offsets: Value = serde_json::from_str(&q["wsu_offsets"]).expect("offsets json");
    assert_eq!(offsets, json!({"/chat": {"epoch": EPOCH, "offset": 1046}}));
    send(
        &mut ws,
        &hello(SID, T1, Some(r#"{"accepted":true}"#), 65536),
    )
    .await;
    answer_join(&mut ws, "/", None).await;
    assert_eq!(
        next_session_event(&mut events).await,
        StateEvent::Resumed {
            sid: SID.to_owned()
        }
    );
    assert_eq!(next_session_event(&mut events).await, StateEvent::Connected);
    client.close("bye").await;
}

#[tokio::test]
async fn refused_resume_rejoins_and_reports_a_fresh_session() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (client, mut ws, _seen) = connected(&listener, 65536).await;
    let mut events = client.events();
    let joining = tokio::spawn({
        let client = client.clone();
        async move { client.join("lobby").await }
    });
    send(&mut ws, &format!(r#"{{"type":"recovery","namespace":"/","data":{{"recovered":false,"reason":"new","epoch":"{EPOCH}","offset":17,"events":[]}}}}"#)).await;
    answer_join(&mut ws, "/", Some("lobby")).await;
    within(joining).await.expect("task").expect("join");
    assert!(matches!(
        next_session_event(&mut events).await,
        StateEvent::Recovery(_)
    ));
    assert_eq!(client.position().map(|p| p.offset), Some(17));

    drop(ws);
    let (mut ws, uri) = accept(&listener).await;
    let q = query(&uri);
    assert_eq!(q["wsu_resume"], T1);
    let offsets: Value = serde_json::from_str(&q["wsu_offsets"]).expect("offsets json");
    assert_eq!(offsets, json!({"/": {"epoch": EPOCH, "offset": 17}}));
    let fresh = "fedcba9876543210";
    send(
        &mut ws,
        &hello(
            fresh,
            T2,
            Some(r#"{"accepted":false,"reason":"unknown session"}"#),
            65536,
        ),
    )
    .await;
    // The probe, then the rejoin of the room, as after any reconnection.
    answer_join(&mut ws, "/", None).await;
    send(&mut ws, r#"{"type":"recovery","namespace":"/","data":{"recovered":false,"reason":"new","epoch":"9a0c000000000000","offset":3,"events":[]}}"#).await;
    answer_join(&mut ws, "/", Some("lobby")).await;
    assert_eq!(
        next_session_event(&mut events).await,
        StateEvent::ResumeRefused {
            reason: "unknown session".to_owned()
        }
    );
    let r = recovery(next_session_event(&mut events).await);
    assert_eq!(
        (r.recovered, r.reason.as_deref(), r.resumed),
        (false, Some("new"), false)
    );
    assert_eq!(next_session_event(&mut events).await, StateEvent::Connected);
    assert_eq!(client.session_id().as_deref(), Some(fresh));
    assert!(!client.is_resumed());
    // The old epoch's position is gone, replaced by the new session's.
    let p = client.position().expect("position");
    assert_eq!((&*p.epoch, p.offset), ("9a0c000000000000", 3));
    client.close("bye").await;
}

#[tokio::test]
async fn recovery_events_keep_their_order_past_the_handler_queue() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    let gate = std::sync::Mutex::new(Some(gate_rx));
    let gate = std::sync::Arc::new(gate);
    let connecting = tokio::spawn(
        Client::builder(url)
            .on("n", move |n: u64| {
                let tx = tx.clone();
                let gate = gate.lock().expect("gate").take();
                async move {
                    // The first handler waits until every frame was sent: the queue overflows.
                    if let Some(gate) = gate {
                        let _ = gate.await;
                    }
                    let _ = tx.send(n);
                }
            })
            .connect(),
    );
    let (mut ws, _) = accept(&listener).await;
    send(&mut ws, &hello(SID, T1, None, 1 << 20)).await;
    let replayed: Vec<String> = (1..=600)
        .map(|n| format!(r#"{{"type":"event","namespace":"/","event":"n","data":{n},"offset":{n},"epoch":"{EPOCH}"}}"#))
        .collect();
    send(&mut ws, &format!(r#"{{"type":"recovery","namespace":"/","data":{{"recovered":true,"epoch":"{EPOCH}","offset":600,"events":[{}]}}}}"#, replayed.join(","))).await;
    send(&mut ws, &format!(r#"{{"type":"event","namespace":"/","event":"n","data":601,"offset":601,"epoch":"{EPOCH}"}}"#)).await;
    answer_join(&mut ws, "/", None).await;
    let _ = gate_tx.send(());
    let client = within(connecting).await.expect("task").expect("connect");
    for want in 1..=601 {
        assert_eq!(within(rx.recv()).await, Some(want));
    }
    assert_eq!(client.position().map(|p| p.offset), Some(601));
    client.close("bye").await;
}

#[tokio::test]
async fn close_4003_session_taken_is_not_reconnected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (client, mut ws, _seen) = connected(&listener, 65536).await;
    let mut events = client.events();
    ws.close(Some(CloseFrame {
        code: WsCloseCode::from(4003),
        reason: "session resumed elsewhere".into(),
    }))
    .await
    .expect("close");
    assert_eq!(
        state_event(&mut events).await,
        StateEvent::Disconnected {
            code: Some(4003),
            reason: "session resumed elsewhere".to_owned()
        }
    );
    let mut state = client.state();
    let closed = within(state.wait_for(|s| *s != ConnectionState::Connected))
        .await
        .map(|s| *s)
        .expect("state");
    assert_eq!(closed, ConnectionState::Closed);
    assert!(!wsu::CloseCode::SESSION_TAKEN.should_reconnect());
}

#[tokio::test]
async fn presence_frames_reach_the_app_and_the_tracker() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let connecting = tokio::spawn(
        Client::builder(url)
            .on_presence(move |p| {
                let _ = tx.send(p.clone());
            })
            .connect(),
    );
    let (mut ws, _) = accept(&listener).await;
    send(&mut ws, &hello(SID, T1, None, 65536)).await;
    answer_join(&mut ws, "/", None).await;
    let client = within(connecting).await.expect("task").expect("connect");
    send(&mut ws, r#"{"type":"presence","namespace":"/chat","room":"lobby","data":{"state":{"ada":[{"sid":"0123456789abcdef","meta":{"nick":"ada"}}]}}}"#).await;
    send(&mut ws, r#"{"type":"presence","namespace":"/chat","room":"lobby","data":{"joins":{"bob":[{"sid":"1111111111111111","meta":null}]},"leaves":{}}}"#).await;
    send(&mut ws, r#"{"type":"presence","namespace":"/chat","room":"lobby","data":{"joins":{},"leaves":{"ada":[{"sid":"0123456789abcdef","meta":{"nick":"ada"}}]}}}"#).await;
    let first = within(rx.recv()).await.expect("presence");
    assert_eq!(
        (first.namespace.as_str(), first.room.as_str()),
        ("/chat", "lobby")
    );
    let PresenceUpdate::State(state) = &first.update else {
        panic!("expected a state, got {first:?}");
    };
    assert_eq!(state["ada"][0].meta, json!({"nick": "ada"}));
    assert!(matches!(
        within(rx.recv()).await.expect("presence").update,
        PresenceUpdate::Diff { .. }
    ));
    assert!(matches!(
        within(rx.recv()).await.expect("presence").update,
        PresenceUpdate::Diff { .. }
    ));
    let room = client.of("/chat").presence("lobby").expect("tracked");
    assert_eq!(room.keys().collect::<Vec<_>>(), ["bob"]);
    assert!(client.presence("lobby").is_none());
    client.close("bye").await;
}
