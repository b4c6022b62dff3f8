//! The example chat app (`examples/chat`), end to end: its real server (`chat::build`) on
//! `127.0.0.1:0`, driven with raw JSON frames (as the page and the seed's clients send them) and
//! with the Rust client. Covers the seed's `chat` event and the seed client's exact exchange,
//! nicknames, rooms, member lists (wsu's presence, keyed by nickname) and notices, messages,
//! typing, the bounds, the `/admin` namespace, the cleanup when a connection ends, and sessions
//! that outlive a dropped connection (wsu's recovery: resumed with nickname, rooms and missed
//! messages; expired after the TTL; refused after a kick while away).
//!
//! Tests end without `TestServer::stop`: a graceful stop waits up to 1 s for each raw client's
//! close reply, and these clients are not read any more; the runtime ends the server instead.

use std::time::Duration;

use chat::protocol::{ChatMessage, Status};
use chat::{Config, Limits};
use serde_json::{Value, json};
use wsu::client::{Client as RustClient, ClientAckError};
use wsu_tests::resume::Session;
use wsu_tests::{Client, Closed, TestServer, header_value, http_exchange, wait_until};

const TOKEN: &str = "s3cret token/é";
/// `TOKEN` percent-encoded, as in a URL.
const TOKEN_IN_URL: &str = "s3cret%20token%2F%C3%A9";

/// The default configuration with an admin token, and no typing throttle (the throttle test
/// sets its own).
fn config() -> Config {
    let mut c = Config::from_vars(None, Some(TOKEN));
    c.limits.typing_interval = Duration::ZERO;
    c
}

async fn start(config: Config) -> TestServer {
    TestServer::start(chat::build(config).expect("the chat server builds")).await
}

/// Reading a chat connection: wsu's own frames of recovery and presence are skipped, and the
/// stream positions of broadcast events are checked and removed, so that the tests compare the
/// chat's messages as before. Presence is checked with [`ChatClient::recv_presence`].
trait ChatClient {
    /// The next message that is not a `recovery` or `presence` frame, without `offset`/`epoch`.
    async fn recv_chat(&mut self) -> Value;
    /// The next `presence` frame (skipping `recovery` frames only).
    async fn recv_presence(&mut self) -> Value;
    /// As `expect_quiet`, skipping `recovery` and `presence` frames.
    async fn quiet(&mut self);
    /// As `ready`, skipping `recovery` and `presence` frames.
    async fn ready_chat(&mut self);
}

impl ChatClient for Client {
    async fn recv_chat(&mut self) -> Value {
        loop {
            let mut v = self.recv().await;
            if v["type"] == "recovery" || v["type"] == "presence" {
                continue;
            }
            if let Some(m) = v.as_object_mut() {
                let offset = m.remove("offset");
                let epoch = m.remove("epoch");
                assert_eq!(
                    offset.as_ref().map(Value::is_u64),
                    epoch.as_ref().map(Value::is_string),
                    "offset and epoch go together"
                );
            }
            return v;
        }
    }

    async fn recv_presence(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            match v["type"].as_str() {
                Some("recovery") => continue,
                Some("presence") => return v,
                _ => panic!("expected a presence frame, got {v}"),
            }
        }
    }

    async fn quiet(&mut self) {
        self.send(json!({"type": "ping", "namespace": "/quiet-check"}))
            .await;
        assert_eq!(
            self.recv_chat().await,
            json!({"type": "pong", "namespace": "/quiet-check"}),
            "unexpected message"
        );
    }

    async fn ready_chat(&mut self) {
        self.send(json!({"type": "join", "namespace": "/", "ackId": "ready"}))
            .await;
        assert_eq!(
            self.recv_chat().await,
            json!({"type": "ack", "namespace": "/", "ackId": "ready"}),
            "unexpected message"
        );
    }
}

/// The next text frame as sent, skipping wsu's `recovery` and `presence` frames (as a seed
/// client ignores them).
async fn seed_text(c: &mut Client) -> String {
    loop {
        let text = c.recv_text().await;
        if !text.starts_with(r#"{"type":"recovery","#)
            && !text.starts_with(r#"{"type":"presence","#)
        {
            return text;
        }
    }
}

/// A broadcast frame without the `,"offset":N,"epoch":"E"` that recovery appends after `data`
/// (checked).
fn without_position(frame: &str) -> String {
    let at = frame
        .rfind(r#","offset":"#)
        .unwrap_or_else(|| panic!("no offset in {frame}"));
    let position: Value =
        serde_json::from_str(&format!("{{{}", &frame[at + 1..])).expect("offset and epoch");
    assert!(
        position["offset"].is_u64()
            && position["epoch"].is_string()
            && position.as_object().map(serde_json::Map::len) == Some(2),
        "{frame}"
    );
    format!("{}}}", &frame[..at])
}

/// Send `event` with `data` and an `ackId`, and return the next message (its answer).
async fn ask(c: &mut Client, event: &str, data: Value, ack_id: &str) -> Value {
    c.emit_ack(event, data, ack_id).await;
    c.recv_chat().await
}

/// The `ack` answer `ack_id` to `event` in `/`, with `data`.
fn ack(event: &str, ack_id: &str, data: Value) -> Value {
    json!({"type": "ack", "namespace": "/", "event": event, "data": data, "ackId": ack_id})
}

/// The `error` answer `ack_id` to `event` in `/`, with the chat's error code.
fn chat_error(event: &str, ack_id: &str, error: &str, code: &str) -> Value {
    json!({
        "type": "error", "namespace": "/", "event": event, "ackId": ack_id,
        "error": error, "data": {"code": code}
    })
}

/// An event in `/`.
fn event(name: &str, data: Value) -> Value {
    json!({"type": "event", "namespace": "/", "event": name, "data": data})
}

/// `v` with `data.ts` checked (a server time of this test run) and removed.
fn without_ts(mut v: Value, since: u64) -> Value {
    let ts = v["data"]
        .as_object_mut()
        .and_then(|d| d.remove("ts"))
        .and_then(|ts| ts.as_u64())
        .unwrap_or_else(|| panic!("no numeric data.ts in {v}"));
    assert!(
        (since..=chat::presence::now_ms()).contains(&ts),
        "ts {ts} outside the test's time"
    );
    v
}

/// A connection with nickname `nick`; returns it with its resume key.
async fn user(server: &TestServer, nick: &str) -> (Client, String) {
    let mut c = server.client().await;
    let answer = ask(&mut c, "nick", json!({ "nick": nick }), "nick").await;
    let resume = answer["data"]["resume"]
        .as_str()
        .expect("a resume key")
        .to_owned();
    assert_eq!(resume.len(), 32, "a 128-bit key in hex");
    let instance = answer["data"]["server"].as_str().expect("a server id");
    assert_eq!(instance.len(), 8);
    assert_eq!(
        answer,
        ack(
            "nick",
            "nick",
            json!({"nick": nick, "resume": resume, "rooms": [], "server": instance})
        )
    );
    (c, resume)
}

/// Join `room`; returns the ack's `data`.
async fn join(c: &mut Client, room: &str) -> Value {
    let answer = ask(c, "room:join", json!({ "room": room }), "join").await;
    assert_eq!(answer["type"], "ack", "join {room}: {answer}");
    answer["data"].clone()
}

/// What the other members receive when `nick` joins or leaves (or is kicked): wsu's presence
/// diff — `nick` joins or leaves under its nickname, with meta `{"nick": nick}` — then the
/// chat's notice.
async fn expect_notice(c: &mut Client, room: &str, kind: &str, nick: &str) {
    let since = chat::presence::now_ms().saturating_sub(60_000);
    let p = c.recv_presence().await;
    assert_eq!(
        (&p["namespace"], &p["room"]),
        (&json!("/"), &json!(room)),
        "{p}"
    );
    let (side, other) = if kind == "join" {
        ("joins", "leaves")
    } else {
        ("leaves", "joins")
    };
    let entries = p["data"][side][nick]
        .as_array()
        .expect("the nickname's entries");
    assert_eq!(entries.len(), 1, "{p}");
    assert_eq!(entries[0]["meta"], json!({ "nick": nick }), "{p}");
    assert_eq!(p["data"][other], json!({}), "{p}");
    assert_eq!(
        without_ts(c.recv_chat().await, since),
        event("notice", json!({"room": room, "kind": kind, "nick": nick}))
    );
}

/// The member list of `room` as wsu's presence has it (what pages show).
fn members(server: &TestServer, room: &str) -> Vec<String> {
    chat::handlers::members(&server.server, room)
}

/// An admin connection (joined to `/admin` with the token).
async fn admin(server: &TestServer) -> Client {
    let mut a = server
        .client_with(&format!("/ws?token={TOKEN_IN_URL}"), &[])
        .await;
    a.send(json!({"type": "join", "namespace": "/admin", "ackId": "admin"}))
        .await;
    assert_eq!(
        a.recv_chat().await,
        json!({"type": "ack", "namespace": "/admin", "ackId": "admin"})
    );
    a
}

/// Send an admin request and return its answer.
async fn admin_ask(a: &mut Client, event: &str, data: Value, ack_id: &str) -> Value {
    let mut msg = json!({"type": "event", "namespace": "/admin", "event": event, "ackId": ack_id});
    if !data.is_null() {
        msg["data"] = data;
    }
    a.send(msg).await;
    a.recv_chat().await
}

fn admin_ack(event: &str, ack_id: &str, data: Value) -> Value {
    json!({"type": "ack", "namespace": "/admin", "event": event, "data": data, "ackId": ack_id})
}

#[tokio::test]
async fn serves_the_page_its_assets_and_the_browser_client() {
    let server = start(config()).await;
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<title>wsu chat</title>"),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "from '/wsu.js'",
        ),
        ("/app.css", "text/css; charset=utf-8", "--accent"),
        (
            "/wsu.js",
            "text/javascript; charset=utf-8",
            "export function connect(",
        ),
        ("/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        );
        let response = http_exchange(server.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
        assert_eq!(
            header_value(&response, "content-type"),
            Some(content_type),
            "{path}"
        );
        assert!(response.contains(needle), "{path} lacks {needle:?}");
    }
}

#[tokio::test]
async fn every_handler_is_registered() {
    let server = start(config()).await;
    let events: Vec<(String, String)> = server
        .server
        .events()
        .into_iter()
        .map(|e| (e.namespace, e.event))
        .collect();
    let expected = [
        ("/", "chat"),
        ("/", "message"),
        ("/", "nick"),
        ("/", "room:join"),
        ("/", "room:leave"),
        ("/", "typing"),
        ("/admin", "announce"),
        ("/admin", "kick"),
        ("/admin", "rooms"),
        ("/admin", "users"),
    ]
    .map(|(ns, e)| (ns.to_owned(), e.to_owned()));
    assert_eq!(events, expected);
}

/// `seed-protocol.md` §8: the seed's raw client joins `lobby`, sends a `chat` event with
/// `ackId` `client-ack-1` (and a `room` field the server ignores), pings, and prints what it
/// receives; everyone else in `/` receives the chat.
#[tokio::test]
async fn seed_client_sequence_gets_the_seed_replies() {
    let server = start(config()).await;
    let mut other = server.client().await;
    other.ready_chat().await;
    let mut seed = server.client().await;

    seed.send(json!({"type": "join", "namespace": "/", "room": "lobby"}))
        .await;
    // The seed client's bytes (the relay sends `data` as it came).
    seed.send_text(
        r#"{"type":"event","namespace":"/","event":"chat","room":"lobby","data":{"user":"example-client","message":"hello world"},"ackId":"client-ack-1"}"#,
    )
    .await;
    // The join has no reply: the first message (after wsu's hello and recovery frames, new to
    // a seed client) is the chat's ack.
    assert_eq!(
        seed_text(&mut seed).await,
        r#"{"type":"ack","namespace":"/","event":"chat","data":{"status":"ok"},"ackId":"client-ack-1"}"#
    );
    assert_eq!(
        without_position(&seed_text(&mut other).await),
        r#"{"type":"event","namespace":"/","event":"chat","data":{"user":"example-client","message":"hello world"}}"#
    );
    seed.send(json!({"type": "ping"})).await;
    assert_eq!(
        seed_text(&mut seed).await,
        r#"{"type":"pong","namespace":"/"}"#
    );
    // The join did happen: the seed client is in `lobby`.
    assert_eq!(server.server.room_members("/", "lobby").len(), 1);
    // Nothing else was sent to either.
    seed.quiet().await;
    other.quiet().await;
}

/// A seed client that sends 100 `chat` messages in one burst (the app limits each connection to
/// 20 requests/s, burst 40): the rate limit is backpressure, so every message is delivered to
/// the others in order and acked in order, none is refused, and nobody is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_message_burst_is_delivered_in_order_all_acked_nobody_closed() {
    const BURST: usize = 100;
    let server = start(config()).await;
    let mut other = server.client().await;
    other.ready_chat().await;
    let mut seed = server.client().await;
    // Pipelined: all 100 frames go out before any answer is read.
    for i in 0..BURST {
        seed.send(json!({
            "type": "event", "namespace": "/", "event": "chat",
            "data": {"user": "burst", "message": format!("m{i}")}, "ackId": format!("b{i}")
        }))
        .await;
    }
    for i in 0..BURST {
        assert_eq!(
            seed.recv_chat().await,
            json!({"type": "ack", "namespace": "/", "event": "chat", "data": {"status": "ok"}, "ackId": format!("b{i}")}),
            "ack {i}"
        );
        assert_eq!(
            other.recv_chat().await,
            event("chat", json!({"user": "burst", "message": format!("m{i}")})),
            "delivery {i}"
        );
    }
    let stats = server.server.stats();
    assert_eq!(stats.protocol_errors, 0);
    assert_eq!(stats.rate_limited, 0, "nothing refused");
    assert!(
        stats.backpressure_pauses > 0,
        "the limit was reached: {stats:?}"
    );
    assert!(stats.closes.is_empty(), "nobody was closed: {stats:?}");
    seed.quiet().await;
    other.quiet().await;
}

/// The `chat` relay checks the payload as a `ChatMessage` but sends the other clients the
/// sender's `data` byte for byte: an unknown field, a 30-digit integer, a decimal with a
/// trailing zero, the sender's key order and spacing all arrive unchanged.
#[tokio::test]
async fn chat_relays_the_senders_data_byte_for_byte() {
    let server = start(config()).await;
    let mut other = server.client().await;
    other.ready_chat().await;
    let mut sender = server.client().await;
    let data = r#"{"message": "hi",  "user":"ann","n":123456789012345678901234567890,"extra":{"price":1.50,"tags":["a", null]}}"#;
    sender
        .send_text(&format!(
            r#"{{"type":"event","event":"chat","data":{data},"ackId":"r1"}}"#
        ))
        .await;
    assert_eq!(
        sender.recv_chat().await,
        ack("chat", "r1", json!({"status": "ok"}))
    );
    let frame = seed_text(&mut other).await;
    #[derive(serde::Deserialize)]
    struct Received<'a> {
        event: &'a str,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let received: Received<'_> = serde_json::from_str(&frame).expect("a JSON frame");
    assert_eq!(received.event, "chat");
    assert_eq!(received.data.get(), data, "the relayed data, byte for byte");
    assert_eq!(
        without_position(&frame),
        format!(r#"{{"type":"event","namespace":"/","event":"chat","data":{data}}}"#)
    );
    sender.quiet().await;
    other.quiet().await;
}

#[tokio::test]
async fn seed_chat_with_an_invalid_payload_gets_the_seed_error_event_then_an_error_answer() {
    let server = start(config()).await;
    let mut other = server.client().await;
    other.ready_chat().await;
    let mut c = server.client().await;
    c.emit_ack("chat", json!({"user": "a"}), "c2").await;
    assert_eq!(
        c.recv_chat().await,
        event("error", json!({"error": "invalid payload"}))
    );
    assert_eq!(
        c.recv_chat().await,
        json!({
            "type": "error", "namespace": "/", "event": "chat", "ackId": "c2",
            "error": "invalid payload: missing field `message` at line 1 column 12"
        })
    );
    // Without an ackId, and without data: the seed's event, then wsu's error (always sent).
    c.send(json!({"type": "event", "event": "chat"})).await;
    assert_eq!(
        c.recv_chat().await,
        event("error", json!({"error": "invalid payload"}))
    );
    assert_eq!(
        c.recv_chat().await,
        json!({
            "type": "error", "namespace": "/", "event": "chat",
            "error": "invalid payload: invalid type: null, expected struct ChatMessage at line 1 column 4"
        })
    );
    // Nothing was broadcast.
    other.quiet().await;
}

#[tokio::test]
async fn rooms_with_member_lists_notices_and_messages() {
    let server = start(config()).await;
    let since = chat::presence::now_ms();
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "Bob").await;

    assert_eq!(
        join(&mut ann, "#Lobby").await,
        json!({"room": "lobby", "members": ["ann"], "history": []})
    );
    // Joining again is harmless and tells nobody.
    assert_eq!(
        join(&mut ann, "lobby").await,
        json!({"room": "lobby", "members": ["ann"], "history": []})
    );
    assert_eq!(
        join(&mut bob, "lobby").await,
        json!({"room": "lobby", "members": ["ann", "Bob"], "history": []})
    );
    expect_notice(&mut ann, "lobby", "join", "Bob").await;

    // A message: the author gets the id and time, the others the message.
    let sent = ask(
        &mut ann,
        "message",
        json!({"room": "lobby", "text": "  hi Bob \n", "cid": "a1"}),
        "m1",
    )
    .await;
    let id = sent["data"]["id"].as_u64().expect("a numeric id");
    assert_eq!(
        without_ts(sent, since),
        ack("message", "m1", json!({ "id": id }))
    );
    let got = bob.recv_chat().await;
    let ts = got["data"]["ts"].clone();
    assert_eq!(
        without_ts(got, since),
        event(
            "message",
            json!({"id": id, "room": "lobby", "nick": "ann", "text": "hi Bob", "cid": "a1"})
        )
    );
    let reply = ask(
        &mut bob,
        "message",
        json!({"room": "lobby", "text": "hello"}),
        "m2",
    )
    .await;
    let reply_id = reply["data"]["id"].as_u64().expect("a numeric id");
    assert!(reply_id > id, "ids increase");
    let got = ann.recv_chat().await;
    assert_eq!(got["data"]["nick"], "Bob");
    assert_eq!(got["data"]["text"], "hello");
    assert_eq!(got["data"].get("cid"), None);

    // A third member gets the history.
    let (mut cy, _) = user(&server, "cy").await;
    let joined = join(&mut cy, "lobby").await;
    assert_eq!(joined["members"], json!(["ann", "Bob", "cy"]));
    assert_eq!(
        joined["history"][0],
        json!({"id": id, "room": "lobby", "nick": "ann", "text": "hi Bob", "ts": ts, "cid": "a1"})
    );
    assert_eq!(joined["history"][1]["id"], reply_id);
    assert_eq!(joined["history"].as_array().map(Vec::len), Some(2));
    expect_notice(&mut ann, "lobby", "join", "cy").await;
    expect_notice(&mut bob, "lobby", "join", "cy").await;

    // Rooms are separate: a message to another room does not reach the lobby.
    join(&mut cy, "rust").await;
    ask(
        &mut cy,
        "message",
        json!({"room": "rust", "text": "only here"}),
        "m3",
    )
    .await;

    // Leaving: the others are told; the leaver no longer receives the room.
    assert_eq!(
        ask(&mut bob, "room:leave", json!({"room": "LOBBY"}), "l1").await,
        ack("room:leave", "l1", json!({"room": "lobby"}))
    );
    expect_notice(&mut ann, "lobby", "leave", "Bob").await;
    expect_notice(&mut cy, "lobby", "leave", "Bob").await;
    ask(
        &mut ann,
        "message",
        json!({"room": "lobby", "text": "bye"}),
        "m4",
    )
    .await;
    assert_eq!(cy.recv_chat().await["data"]["text"], "bye");
    bob.quiet().await;
    ann.quiet().await;
    assert_eq!(
        ask(&mut bob, "room:leave", json!({"room": "lobby"}), "l2").await,
        chat_error("room:leave", "l2", "you are not in #lobby", "not_in_room")
    );

    // The last member leaving deletes the room and its history.
    ask(&mut cy, "room:leave", json!({"room": "rust"}), "l3").await;
    assert_eq!(
        join(&mut cy, "rust").await,
        json!({"room": "rust", "members": ["cy"], "history": []})
    );
}

#[tokio::test]
async fn nickname_rules() {
    let server = start(config()).await;
    let mut c = server.client().await;
    // Nothing before a nickname.
    assert_eq!(
        ask(&mut c, "room:join", json!({"room": "lobby"}), "j0").await,
        chat_error("room:join", "j0", "choose a nickname first", "no_nick")
    );
    assert_eq!(
        ask(
            &mut c,
            "message",
            json!({"room": "lobby", "text": "hi"}),
            "m0"
        )
        .await,
        chat_error("message", "m0", "choose a nickname first", "no_nick")
    );
    for (i, nick) in ["a", " x ", "n".repeat(25).as_str()].iter().enumerate() {
        let id = format!("n{i}");
        assert_eq!(
            ask(&mut c, "nick", json!({ "nick": nick }), &id).await,
            chat_error(
                "nick",
                &id,
                "nicknames are 2 to 24 characters long",
                "nick_invalid"
            )
        );
    }
    assert_eq!(
        ask(&mut c, "nick", json!({"nick": "ann smith"}), "n4").await,
        chat_error(
            "nick",
            "n4",
            "nicknames may only contain letters, digits, '-', '_' and '.'",
            "nick_invalid"
        )
    );
    // A payload of the wrong shape is answered by wsu itself.
    assert_eq!(
        ask(&mut c, "nick", json!("ann"), "n5").await,
        json!({
            "type": "error", "namespace": "/", "event": "nick", "ackId": "n5",
            "error": "invalid payload: invalid type: string \"ann\", expected struct SetNick at line 1 column 5"
        })
    );

    // Unique on the server, ignoring case; trimmed; 24 characters of any script are fine.
    let (mut ann, _) = user(&server, "Ann").await;
    let taken = ask(&mut c, "nick", json!({"nick": " aNN "}), "n6").await;
    assert_eq!(
        taken,
        chat_error("nick", "n6", "nickname is taken", "nick_taken")
    );
    let long = "é".repeat(24);
    let answer = ask(&mut c, "nick", json!({ "nick": long }), "n7").await;
    assert_eq!(answer["data"]["nick"], long.as_str());

    // Renaming tells the rooms: wsu's presence moves the connection from the old nickname to
    // the new one, then a notice names the old nickname.
    join(&mut ann, "lobby").await;
    join(&mut c, "lobby").await;
    let since = chat::presence::now_ms();
    ann.recv_chat().await; // the join notice
    let renamed = ask(&mut c, "nick", json!({"nick": "zed"}), "n8").await;
    assert_eq!(renamed["data"]["nick"], "zed");
    assert_eq!(renamed["data"]["rooms"], json!(["lobby"]));
    let p = ann.recv_presence().await;
    assert_eq!(p["data"]["joins"]["zed"][0]["meta"], json!({"nick": "zed"}));
    assert_eq!(
        p["data"]["leaves"][&long][0]["meta"],
        json!({ "nick": long })
    );
    assert_eq!(
        p["data"]["joins"]["zed"][0]["sid"],
        p["data"]["leaves"][&long][0]["sid"]
    );
    assert_eq!(
        without_ts(ann.recv_chat().await, since),
        event(
            "notice",
            json!({"room": "lobby", "kind": "nick", "nick": "zed", "from": long})
        )
    );
    assert_eq!(members(&server, "lobby"), ["Ann", "zed"]);
    // The old nickname is free again; asking for one's own nickname changes nothing.
    let (_other, _) = user(&server, &long).await;
    let same = ask(&mut ann, "nick", json!({"nick": "Ann"}), "n9").await;
    assert_eq!(same["data"]["nick"], "Ann");
    c.quiet().await;
    ann.quiet().await;
}

#[tokio::test]
async fn a_resume_key_takes_the_nickname_and_its_rooms_over_from_a_stale_connection() {
    let server = start(config()).await;
    let (mut old, resume) = user(&server, "ann").await;
    join(&mut old, "lobby").await;
    join(&mut old, "rust").await;
    let (mut bob, _) = user(&server, "bob").await;
    join(&mut bob, "lobby").await;
    old.recv_chat().await; // bob's join notice

    // Without the key (or with a wrong one) the nickname is taken.
    let mut new = server.client().await;
    assert_eq!(
        ask(
            &mut new,
            "nick",
            json!({"nick": "ann", "resume": "0".repeat(32)}),
            "r0"
        )
        .await,
        chat_error("nick", "r0", "nickname is taken", "nick_taken")
    );
    // With it: the new connection has the nickname and the rooms; the old one is closed.
    let resumed = ask(
        &mut new,
        "nick",
        json!({"nick": "ANN", "resume": resume}),
        "r1",
    )
    .await;
    let instance = resumed["data"]["server"].clone();
    assert_eq!(
        resumed,
        ack(
            "nick",
            "r1",
            json!({"nick": "ann", "resume": resume, "rooms": ["lobby", "rust"], "server": instance})
        )
    );
    assert_eq!(
        old.closed().await,
        Closed::Frame(
            4509,
            "your nickname was resumed by a new session".to_owned()
        )
    );
    // Nobody was told anything: nobody left. The new connection receives the rooms.
    ask(
        &mut bob,
        "message",
        json!({"room": "lobby", "text": "still there?"}),
        "m1",
    )
    .await;
    assert_eq!(new.recv_chat().await["data"]["text"], "still there?");
    // Joining again (as the page does after reconnecting) changes nothing and tells nobody.
    let joined = join(&mut new, "lobby").await;
    assert_eq!(joined["members"], json!(["ann", "bob"]));
    assert_eq!(joined["history"][0]["text"], "still there?");
    bob.quiet().await;
    // A connection that already has a nickname cannot take another one over.
    let (mut cy, _) = user(&server, "cy").await;
    assert_eq!(
        ask(
            &mut cy,
            "nick",
            json!({"nick": "ann", "resume": resume}),
            "r2"
        )
        .await,
        chat_error("nick", "r2", "nickname is taken", "nick_taken")
    );
}

#[tokio::test]
async fn message_rules_and_cid_deduplication() {
    let mut config = config();
    config.limits.max_message_chars = 10;
    let server = start(config).await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    join(&mut ann, "lobby").await;
    join(&mut bob, "lobby").await;
    ann.recv_chat().await; // bob's join notice
    let cases = [
        (
            json!({"room": "rust", "text": "hi"}),
            "you are not in #rust",
            "not_in_room",
        ),
        (
            json!({"room": "no way", "text": "hi"}),
            "room names are 1 to 32 characters: a-z, 0-9, '-' and '_'",
            "room_invalid",
        ),
        (
            json!({"room": "lobby", "text": " \n "}),
            "message is empty",
            "text_invalid",
        ),
        (
            json!({"room": "lobby", "text": "12345678901"}),
            "message is longer than 10 characters",
            "text_invalid",
        ),
        (
            json!({"room": "lobby", "text": "hi", "cid": "c".repeat(65)}),
            "cid is longer than 64 bytes",
            "text_invalid",
        ),
    ];
    for (i, (data, error, code)) in cases.into_iter().enumerate() {
        let id = format!("bad{i}");
        assert_eq!(
            ask(&mut ann, "message", data, &id).await,
            chat_error("message", &id, error, code)
        );
    }
    // Ten characters of any script are fine.
    let ok = ask(
        &mut ann,
        "message",
        json!({"room": "lobby", "text": "éééééééééé", "cid": "x"}),
        "ok",
    )
    .await;
    assert_eq!(ok["type"], "ack");
    assert_eq!(bob.recv_chat().await["data"]["text"], "éééééééééé");
    // The same cid again (a retry after a reconnection): the same ack, nothing broadcast.
    let again = ask(
        &mut ann,
        "message",
        json!({"room": "lobby", "text": "éééééééééé", "cid": "x"}),
        "again",
    )
    .await;
    assert_eq!(again["data"], ok["data"]);
    bob.quiet().await;
    // Another author may use the same cid.
    let bobs = ask(
        &mut bob,
        "message",
        json!({"room": "lobby", "text": "mine", "cid": "x"}),
        "b",
    )
    .await;
    assert!(bobs["data"]["id"].as_u64() > ok["data"]["id"].as_u64());
    assert_eq!(ann.recv_chat().await["data"]["text"], "mine");
}

#[tokio::test]
async fn typing_is_relayed_to_the_room_throttled_and_never_answered_with_an_error() {
    let mut config = config();
    // Long enough that two signals sent back to back always fall in one interval.
    config.limits.typing_interval = Duration::from_secs(3600);
    let server = start(config).await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let (mut cy, _) = user(&server, "cy").await;
    join(&mut ann, "lobby").await;
    join(&mut bob, "lobby").await;
    join(&mut cy, "rust").await;
    ann.recv_chat().await; // bob's join notice

    let typing = |typing: bool| json!({"type": "event", "event": "typing", "data": {"room": "lobby", "typing": typing}});
    ann.send(typing(true)).await;
    ann.send(typing(true)).await; // within the interval: dropped
    ann.send(typing(false)).await;
    ann.send(typing(false)).await; // not typing: nothing to relay
    ann.send(typing(true)).await; // after a stop: relayed at once
    // Volatile: a room one is not in, or no nickname at all, is dropped without an error.
    cy.send(typing(true)).await;
    let mut anon = server.client().await;
    anon.send(typing(true)).await;
    // A message ends the typing; the next signal is relayed at once.
    ask(
        &mut ann,
        "message",
        json!({"room": "lobby", "text": "done"}),
        "m",
    )
    .await;
    ann.send(typing(true)).await;
    // With an ackId: an ack without data.
    assert_eq!(
        ask(
            &mut ann,
            "typing",
            json!({"room": "lobby", "typing": true}),
            "t"
        )
        .await,
        json!({"type": "ack", "namespace": "/", "event": "typing", "ackId": "t"})
    );

    let update = |typing: bool| {
        event(
            "typing",
            json!({"room": "lobby", "nick": "ann", "typing": typing}),
        )
    };
    assert_eq!(bob.recv_chat().await, update(true));
    assert_eq!(bob.recv_chat().await, update(false));
    assert_eq!(bob.recv_chat().await, update(true));
    assert_eq!(bob.recv_chat().await["event"], "message");
    assert_eq!(bob.recv_chat().await, update(true));
    bob.quiet().await;
    ann.quiet().await;
    cy.quiet().await;
    anon.quiet().await;
}

#[tokio::test]
async fn rooms_members_and_memberships_are_bounded() {
    let mut config = config();
    config.limits = Limits {
        max_rooms: 2,
        max_rooms_per_user: 2,
        max_members_per_room: 2,
        ..config.limits
    };
    let server = start(config).await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let (mut cy, _) = user(&server, "cy").await;
    join(&mut ann, "a").await;
    join(&mut ann, "b").await;
    assert_eq!(
        ask(&mut ann, "room:join", json!({"room": "c"}), "j").await,
        chat_error(
            "room:join",
            "j",
            "you are in too many rooms (at most 2)",
            "joined_full"
        )
    );
    assert_eq!(
        ask(&mut bob, "room:join", json!({"room": "c"}), "j").await,
        chat_error(
            "room:join",
            "j",
            "too many rooms on the server (at most 2)",
            "rooms_full"
        )
    );
    join(&mut bob, "a").await;
    assert_eq!(
        ask(&mut cy, "room:join", json!({"room": "a"}), "j").await,
        chat_error(
            "room:join",
            "j",
            "room is full (at most 2 members)",
            "room_full"
        )
    );
    // Room names are checked too.
    assert_eq!(
        ask(&mut cy, "room:join", json!({"room": "a".repeat(33)}), "j").await,
        chat_error(
            "room:join",
            "j",
            "room names are 1 to 32 characters: a-z, 0-9, '-' and '_'",
            "room_invalid"
        )
    );
    // Room `b` goes away with its last member: there is room for `c` now.
    ask(&mut ann, "room:leave", json!({"room": "b"}), "l").await;
    join(&mut cy, "c").await;
}

#[tokio::test]
async fn a_closed_connection_leaves_its_rooms_and_frees_its_nickname() {
    let mut config = config();
    // A dropped connection's session (and nickname) is kept this long, plus a second.
    config.limits.session_ttl = Duration::from_millis(100);
    let server = start(config).await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let (mut cy, _) = user(&server, "cy").await;
    join(&mut ann, "lobby").await;
    join(&mut ann, "solo").await;
    join(&mut bob, "lobby").await;
    join(&mut cy, "lobby").await;
    expect_notice(&mut ann, "lobby", "join", "bob").await;
    expect_notice(&mut ann, "lobby", "join", "cy").await;
    expect_notice(&mut bob, "lobby", "join", "cy").await;

    // A close frame.
    assert_eq!(
        ann.close(1000, "bye").await,
        Closed::Frame(1000, "bye".to_owned())
    );
    expect_notice(&mut bob, "lobby", "leave", "ann").await;
    expect_notice(&mut cy, "lobby", "leave", "ann").await;
    // A connection that drops without one: it leaves wsu's presence at once, and the chat
    // after the session TTL (it was not resumed).
    drop(bob);
    expect_notice(&mut cy, "lobby", "leave", "bob").await;

    // Both nicknames are free, and `solo` is gone with its last member.
    let (_ann, _) = user(&server, "ANN").await;
    let (_bob, _) = user(&server, "bob").await;
    let mut a = admin(&server).await;
    assert_eq!(
        admin_ask(&mut a, "rooms", Value::Null, "r").await,
        admin_ack(
            "rooms",
            "r",
            json!([{"room": "lobby", "members": ["cy"], "messages": 0}])
        )
    );
}

/// The next answer (`ack` or `error`) of a resumable raw session, skipping other frames.
async fn answer(s: &mut Session) -> Value {
    loop {
        let v = s.next().await;
        if v["type"] == "ack" || v["type"] == "error" {
            return v;
        }
    }
}

/// A raw resumable session with nickname `nick`, in `room`.
async fn session_in(server: &TestServer, nick: &str, room: &str) -> Session {
    let mut s = Session::connect(server.addr).await;
    s.client
        .emit_ack("nick", json!({ "nick": nick }), "n")
        .await;
    assert_eq!(answer(&mut s).await["data"]["nick"], nick);
    s.client
        .emit_ack("room:join", json!({ "room": room }), "j")
        .await;
    assert_eq!(answer(&mut s).await["type"], "ack");
    s
}

fn registry(server: &TestServer) -> std::sync::Arc<chat::presence::Presence> {
    server.server.state().expect("the registry")
}

fn detached(server: &TestServer, sid: &str) -> bool {
    let id = wsu::SocketId::parse(sid).expect("an id");
    registry(server).lock().is_detached(id)
}

#[tokio::test]
async fn a_dropped_connection_resumes_its_session_with_its_nickname_rooms_and_missed_messages() {
    let server = start(config()).await;
    let (mut ann, _) = user(&server, "ann").await;
    join(&mut ann, "lobby").await;
    let bob = session_in(&server, "bob", "lobby").await;
    expect_notice(&mut ann, "lobby", "join", "bob").await;
    let sid = bob.sid();

    // The TCP connection drops, no close frame: bob leaves wsu's presence, but keeps his
    // nickname and rooms in the chat, and nobody gets a notice.
    let (token, positions) = (bob.token(), bob.positions.clone());
    drop(bob);
    let p = ann.recv_presence().await;
    assert_eq!(p["data"]["leaves"]["bob"][0]["sid"], sid.as_str());
    wait_until(|| detached(&server, &sid)).await;
    let mut cy = server.client().await;
    assert_eq!(
        ask(&mut cy, "nick", json!({"nick": "bob"}), "n").await,
        chat_error("nick", "n", "nickname is taken", "nick_taken")
    );
    for (i, text) in ["while you were away", "and again"].iter().enumerate() {
        let id = format!("m{i}");
        let sent = ask(
            &mut ann,
            "message",
            json!({"room": "lobby", "text": text}),
            &id,
        )
        .await;
        assert_eq!(sent["type"], "ack");
    }

    // Resumed: the same session, the missed messages replayed in order, the room's presence
    // with both, and the nickname kept.
    let mut bob = Session::resume_with(server.addr, &token, positions).await;
    assert_eq!(bob.hello["resume"], json!({"accepted": true}));
    assert_eq!(bob.sid(), sid);
    // The recovery frame of `/` and the presence state of `lobby`, in either order.
    let (mut recovery, mut state) = (Value::Null, Value::Null);
    while recovery.is_null() || state.is_null() {
        let v = bob.next().await;
        match v["type"].as_str() {
            Some("recovery") => recovery = v,
            Some("presence") => state = v,
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!(recovery["data"]["recovered"], true, "{recovery}");
    let texts: Vec<&Value> = recovery["data"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["data"]["text"])
        .collect();
    assert_eq!(texts, ["while you were away", "and again"]);
    assert_eq!(state["room"], "lobby", "{state}");
    let users: Vec<&String> = state["data"]["state"]
        .as_object()
        .expect("a state")
        .keys()
        .collect();
    assert_eq!(users, ["ann", "bob"]);
    assert_eq!(
        state["data"]["state"]["bob"][0]["meta"],
        json!({"nick": "bob"})
    );
    assert!(!detached(&server, &sid));
    bob.client
        .emit_ack("nick", json!({"nick": "bob"}), "n2")
        .await;
    assert_eq!(answer(&mut bob).await["data"]["rooms"], json!(["lobby"]));
    bob.client
        .emit_ack("message", json!({"room": "lobby", "text": "back"}), "m")
        .await;
    assert_eq!(answer(&mut bob).await["type"], "ack");
    // ann saw bob come back in the presence, and his message; no notice.
    let p = ann.recv_presence().await;
    assert_eq!(p["data"]["joins"]["bob"][0]["sid"], sid.as_str());
    assert_eq!(ann.recv_chat().await["data"]["text"], "back");
    ann.quiet().await;
    assert_eq!(members(&server, "lobby"), ["ann", "bob"]);
}

#[tokio::test]
async fn a_session_not_resumed_in_time_ends_and_one_kicked_while_away_is_refused() {
    let mut config = config();
    config.limits.session_ttl = Duration::from_millis(100);
    let server = start(config).await;
    let (mut ann, _) = user(&server, "ann").await;
    join(&mut ann, "lobby").await;
    let bob = session_in(&server, "bob", "lobby").await;
    expect_notice(&mut ann, "lobby", "join", "bob").await;
    let token = bob.token();
    drop(bob);
    // After the TTL (and the chat's margin): the leave notice, the nickname is free, and the
    // token is no good any more.
    expect_notice(&mut ann, "lobby", "leave", "bob").await;
    let (_cy, _) = user(&server, "bob").await;
    let late = Session::resume_with(server.addr, &token, Default::default()).await;
    assert_eq!(
        late.hello["resume"],
        json!({"accepted": false, "reason": "unknown session"})
    );

    // Kicked while away: the nickname is free at once, and the session cannot come back.
    let server = start(self::config()).await;
    let dan = session_in(&server, "dan", "lobby").await;
    let (sid, token) = (dan.sid(), dan.token());
    drop(dan);
    wait_until(|| detached(&server, &sid)).await;
    let mut a = admin(&server).await;
    assert_eq!(
        admin_ask(&mut a, "kick", json!({"nick": "dan"}), "k").await,
        admin_ack("kick", "k", json!({"nick": "dan", "rooms": ["lobby"]}))
    );
    let mut back = Session::resume_with(server.addr, &token, Default::default()).await;
    assert_eq!(back.hello["resume"], json!({"accepted": true}));
    assert_eq!(
        back.client.closed().await,
        Closed::Frame(
            4500,
            "your session was ended while you were away".to_owned()
        )
    );
    let (_dan, _) = user(&server, "dan").await;
}

#[tokio::test]
async fn the_admin_namespace_refuses_without_the_right_token() {
    let server = start(config()).await;
    for (path, headers, reason) in [
        ("/ws", vec![], "admin token required"),
        ("/ws?token=nope", vec![], "invalid admin token"),
        (
            "/ws",
            vec![("authorization", "Bearer nope")],
            "invalid admin token",
        ),
    ] {
        let mut c = server.client_with(path, &headers).await;
        c.send(json!({"type": "join", "namespace": "/admin", "ackId": "a"}))
            .await;
        assert_eq!(
            c.recv_chat().await,
            json!({
                "type": "error", "namespace": "/admin", "ackId": "a",
                "error": format!("join refused: {reason}")
            }),
            "{path} {headers:?}"
        );
        // Not a member: admin events are refused.
        c.send(json!({"type": "event", "namespace": "/admin", "event": "users", "ackId": "u"}))
            .await;
        assert_eq!(
            c.recv_chat().await,
            json!({
                "type": "error", "namespace": "/admin", "event": "users", "ackId": "u",
                "error": "namespace not joined"
            })
        );
    }
    // The header works as well as the query.
    let mut c = server
        .client_with("/ws", &[("authorization", &format!("Bearer {TOKEN}"))])
        .await;
    c.send(json!({"type": "join", "namespace": "/admin", "ackId": "a"}))
        .await;
    assert_eq!(
        c.recv_chat().await,
        json!({"type": "ack", "namespace": "/admin", "ackId": "a"})
    );
    drop(c);
    server.stop().await;

    // Without CHAT_ADMIN_TOKEN nobody gets in.
    let server = start(Config::from_vars(None, None)).await;
    let mut c = server.client_with("/ws?token=", &[]).await;
    c.send(json!({"type": "join", "namespace": "/admin", "ackId": "a"}))
        .await;
    assert_eq!(
        c.recv_chat().await["error"],
        "join refused: the admin namespace is disabled (no CHAT_ADMIN_TOKEN)"
    );
}

#[tokio::test]
async fn the_admin_lists_rooms_and_users_announces_and_kicks() {
    let server = start(config()).await;
    let since = chat::presence::now_ms();
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let mut seed = server.client().await; // no nickname: receives announcements to everyone
    seed.ready_chat().await;
    join(&mut ann, "lobby").await;
    join(&mut ann, "rust").await;
    join(&mut bob, "lobby").await;
    ann.recv_chat().await; // bob's join notice
    ask(
        &mut ann,
        "message",
        json!({"room": "rust", "text": "hi"}),
        "m",
    )
    .await;
    let mut a = admin(&server).await;

    assert_eq!(
        admin_ask(&mut a, "rooms", Value::Null, "r").await,
        admin_ack(
            "rooms",
            "r",
            json!([
                {"room": "lobby", "members": ["ann", "bob"], "messages": 0},
                {"room": "rust", "members": ["ann"], "messages": 1}
            ])
        )
    );
    let users = admin_ask(&mut a, "users", Value::Null, "u").await;
    let list = users["data"].as_array().expect("a list");
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[0],
        json!({"nick": "ann", "rooms": ["lobby", "rust"], "since": list[0]["since"]})
    );
    assert_eq!(
        list[1],
        json!({"nick": "bob", "rooms": ["lobby"], "since": list[1]["since"]})
    );
    assert!(list[0]["since"].as_u64() >= Some(since));

    // An announcement to everyone in `/` (the admin connection included), then to one room.
    // The admin's own copy is queued before the ack.
    let first = admin_ask(
        &mut a,
        "announce",
        json!({"text": " maintenance at 5 "}),
        "a1",
    )
    .await;
    let announcement = event("announcement", json!({"text": "maintenance at 5"}));
    assert_eq!(without_ts(first, since), announcement);
    assert_eq!(
        a.recv_chat().await,
        admin_ack("announce", "a1", json!({"delivered": 4}))
    );
    for c in [&mut ann, &mut bob, &mut seed] {
        assert_eq!(without_ts(c.recv_chat().await, since), announcement);
    }
    assert_eq!(
        admin_ask(
            &mut a,
            "announce",
            json!({"text": "rustaceans!", "room": "#Rust"}),
            "a2"
        )
        .await,
        admin_ack("announce", "a2", json!({"delivered": 1}))
    );
    assert_eq!(
        without_ts(ann.recv_chat().await, since),
        event(
            "announcement",
            json!({"text": "rustaceans!", "room": "rust"})
        )
    );
    for (data, error, code) in [
        (
            json!({"text": "x", "room": "nowhere"}),
            "no such room",
            "no_such_room",
        ),
        (json!({"text": "   "}), "message is empty", "text_invalid"),
        (
            json!({"text": "x".repeat(501)}),
            "message is longer than 500 characters",
            "text_invalid",
        ),
    ] {
        assert_eq!(
            admin_ask(&mut a, "announce", data, "bad").await,
            json!({
                "type": "error", "namespace": "/admin", "event": "announce", "ackId": "bad",
                "error": error, "data": {"code": code}
            })
        );
    }

    // Kick: the user is closed with 4510 and the reason; its rooms see a `kick` notice.
    assert_eq!(
        admin_ask(
            &mut a,
            "kick",
            json!({"nick": "BOB", "reason": "spam"}),
            "k"
        )
        .await,
        admin_ack("kick", "k", json!({"nick": "bob", "rooms": ["lobby"]}))
    );
    assert_eq!(
        bob.closed().await,
        Closed::Frame(4510, "kicked by an admin: spam".to_owned())
    );
    expect_notice(&mut ann, "lobby", "kick", "bob").await;
    assert_eq!(
        admin_ask(&mut a, "kick", json!({"nick": "bob"}), "k2").await,
        json!({
            "type": "error", "namespace": "/admin", "event": "kick", "ackId": "k2",
            "error": "no such user", "data": {"code": "no_such_user"}
        })
    );
    ann.quiet().await;
    seed.quiet().await;
}

/// The command-line client (`cargo run -p chat --bin client`) on the Rust client: the seed
/// client's sequence with a typed ack.
#[tokio::test]
async fn the_rust_client_does_the_seed_client_sequence() {
    let server = start(config()).await;
    let mut other = server.client().await;
    other.ready_chat().await;
    let client = RustClient::builder(server.url().as_str())
        .connect()
        .await
        .expect("connect");
    client.join("lobby").await.expect("join lobby");
    let chat = ChatMessage {
        user: "rust-client".to_owned(),
        message: "hello from the wsu client".to_owned(),
    };
    let status: Status = client.emit_with_ack("chat", &chat).await.expect("ack");
    assert_eq!(status.status, "ok");
    assert_eq!(
        other.recv_chat().await,
        event(
            "chat",
            json!({"user": "rust-client", "message": "hello from the wsu client"})
        )
    );
    client.ping().await.expect("pong");
    // A chat request's error carries the chat's code.
    let err = client
        .emit_with_ack::<_, Value>("room:join", &json!({"room": "lobby"}))
        .await
        .expect_err("no nickname yet");
    let body: chat::protocol::ErrorBody = err
        .server_data()
        .expect("a typed body")
        .expect("an ErrorBody");
    assert!(
        matches!(err, ClientAckError::Server { ref message, .. } if message == "choose a nickname first")
    );
    assert_eq!(body.code, "no_nick");
    client.close("bye").await;
}
