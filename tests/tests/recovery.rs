//! Connection-state recovery on one node (PROTOCOL.md §13): sessions outlive a dropped
//! transport, a resume token brings them back with their rooms, and every broadcast missed
//! meanwhile is replayed once, in order, merged with live ones without gap or duplicate.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use wsu::{Recovery, Server, Socket};
use wsu_tests::resume::Session;
use wsu_tests::{Closed, TestServer, next, wait_until};

fn server(recovery: Recovery) -> Server {
    Server::builder()
        .recovery(recovery)
        .namespace("/chat", |ns| ns)
        .build()
        .expect("build")
}

async fn start(recovery: Recovery) -> TestServer {
    TestServer::start(server(recovery)).await
}

/// Connect, read the `/` recovery frame, join `room` (in `ns`) and wait for the ack.
async fn member(ts: &TestServer, ns: &str, room: &str) -> Session {
    let mut s = Session::connect(ts.addr).await;
    let r = s.recovery().await;
    assert_eq!(r["namespace"], "/");
    assert_eq!(r["data"]["recovered"], false);
    assert_eq!(r["data"]["reason"], "new");
    s.client
        .send(json!({"type": "join", "namespace": ns, "room": room, "ackId": "j"}))
        .await;
    if ns != "/" {
        let r = s.recovery().await;
        assert_eq!(
            (r["namespace"].as_str(), r["data"]["reason"].as_str()),
            (Some(ns), Some("new"))
        );
    }
    let ack = s.next().await;
    assert_eq!(ack["type"], "ack", "{ack}");
    s
}

fn data(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["data"].as_i64().expect("number"))
        .collect()
}

#[tokio::test]
async fn a_dropped_client_gets_every_broadcast_it_missed_once_and_in_order() {
    let ts = start(Recovery::default()).await;
    let mut a = member(&ts, "/", "r").await;
    let sid = a.sid();
    // A second member that never drops: it sees all 1,000, as the reference.
    let mut witness = member(&ts, "/", "r").await;

    let server = ts.server.clone();
    let sender = tokio::spawn(async move {
        for i in 0..1000 {
            server.to("r").emit("n", &i).expect("emit");
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    // Handle 200, then lose the TCP connection (no close frame) in the middle of the stream.
    let mut seen = a.events(200).await;
    let mut a = a.drop_and_resume(ts.addr).await;
    assert_eq!(a.hello["resume"], json!({"accepted": true}), "{}", a.hello);
    assert_eq!(a.sid(), sid, "the same session id");
    let r = a.recovery().await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    let replayed = r["data"]["events"].as_array().expect("events").len();
    seen.extend(r["data"]["events"].as_array().cloned().unwrap_or_default());
    let rest = 1000 - seen.len();
    seen.extend(a.events(rest).await);
    sender.await.expect("sender");
    assert_eq!(
        data(&seen),
        (0..1000).collect::<Vec<_>>(),
        "every message once, in order"
    );
    let offsets: Vec<u64> = seen
        .iter()
        .map(|e| e["offset"].as_u64().expect("offset"))
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase");
    assert!(seen.iter().all(|e| e["epoch"] == seen[0]["epoch"]));
    assert_eq!(
        data(&witness.events(1000).await),
        (0..1000).collect::<Vec<_>>()
    );
    println!("replayed {replayed} of 1000 in the recovery frame");
    let stats = ts.server.stats();
    assert_eq!((stats.sessions_resumed, stats.sessions_refused), (1, 0));
    ts.stop().await;
}

#[tokio::test]
async fn a_resume_while_the_old_transport_is_open_takes_the_session_over() {
    let ts = start(Recovery::default()).await;
    let mut a = member(&ts, "/", "r").await;
    ts.server.to("r").emit("n", &1).expect("emit");
    a.events(1).await;
    // A second connection with the token while the first is still open (half-open TCP).
    let mut b = Session::resume_with(ts.addr, &a.token(), a.positions.clone()).await;
    assert_eq!(b.hello["resume"], json!({"accepted": true}));
    assert_eq!(b.sid(), a.sid());
    assert_eq!(
        a.client.closed().await,
        Closed::Frame(4003, "session resumed elsewhere".into())
    );
    let r = b.recovery().await;
    assert_eq!(
        (
            r["data"]["recovered"].as_bool(),
            r["data"]["events"].as_array().map(Vec::len)
        ),
        (Some(true), Some(0))
    );
    // The rooms came along: a broadcast to "r" reaches the new transport, once.
    ts.server.to("r").emit("n", &2).expect("emit");
    assert_eq!(data(&b.events(1).await), [2]);
    assert_eq!(ts.server.rooms("/"), ["r"]);
    assert_eq!(ts.server.room_members("/", "r").len(), 1);
    wait_until(|| ts.server.stats().connections == 1).await;
    ts.stop().await;
}

#[tokio::test]
async fn forged_reused_and_garbage_tokens_are_refused_with_a_fresh_session() {
    let ts = start(Recovery::default()).await;
    let a = member(&ts, "/", "r").await;
    let token = a.token();
    let sid = a.sid();
    // The right session id with a wrong secret.
    let mut forged = token.clone();
    let last = forged.pop().expect("char");
    forged.push(if last == 'A' { 'Q' } else { 'A' });
    let f = Session::resume_with(ts.addr, &forged, BTreeMap::new()).await;
    assert_eq!(
        f.hello["resume"],
        json!({"accepted": false, "reason": "invalid token"})
    );
    assert_ne!(f.sid(), sid, "a fresh session");
    let g = Session::resume_with(ts.addr, "not-a-token", BTreeMap::new()).await;
    assert_eq!(g.hello["resume"]["reason"], "invalid token");
    // The forgery did not hurt the real session: it still resumes.
    let positions = a.positions.clone();
    let mut b = a.drop_and_resume(ts.addr).await;
    assert_eq!(b.hello["resume"], json!({"accepted": true}));
    assert_eq!(b.sid(), sid);
    // A token works once: the session has another secret since, and the old one is forgotten
    // as soon as the client speaks on its new connection.
    b.client.send(json!({"type": "ping"})).await;
    b.recovery().await;
    assert_eq!(b.next().await["type"], "pong");
    let again = Session::resume_with(ts.addr, &token, positions).await;
    assert_eq!(
        again.hello["resume"],
        json!({"accepted": false, "reason": "invalid token"})
    );
    assert_ne!(again.sid(), sid);
    // Every hello carries a new token.
    assert_ne!(b.token(), token);
    assert_eq!(ts.server.stats().sessions_refused, 3);
    ts.stop().await;
}

#[tokio::test]
async fn a_client_close_or_an_expired_session_cannot_be_resumed() {
    let ts = start(Recovery::default().session_ttl(Duration::from_millis(300))).await;
    // A close frame from the client ends the session at once.
    let mut a = member(&ts, "/", "r").await;
    let token = a.token();
    assert_eq!(
        a.client.close(1000, "bye").await,
        Closed::Frame(1000, "bye".into())
    );
    wait_until(|| ts.server.stats().connections == 0).await;
    let b = Session::resume_with(ts.addr, &token, BTreeMap::new()).await;
    assert_eq!(b.hello["resume"]["reason"], "unknown session");
    // A dropped one waits for the session TTL, then is gone.
    let c = member(&ts, "/", "r").await;
    let token = c.token();
    drop(c);
    wait_until(|| ts.server.stats().sessions_detached == 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ts.server.stats().sessions_detached, 0);
    let d = Session::resume_with(ts.addr, &token, BTreeMap::new()).await;
    assert_eq!(d.hello["resume"]["reason"], "unknown session");
    drop((b, d));
    ts.stop().await;
}

#[tokio::test]
async fn a_trimmed_history_or_too_many_missed_events_say_so_and_rooms_are_still_restored() {
    for (recovery, missed, reason) in [
        (Recovery::default().history_size(5), 10, "trimmed"),
        (Recovery::default().max_replay(3), 5, "too many"),
    ] {
        let ts = start(recovery).await;
        let a = member(&ts, "/", "r").await;
        let sid = a.sid();
        let token = a.token();
        let positions = a.positions.clone();
        drop(a);
        wait_until(|| ts.server.stats().sessions_detached == 1).await;
        for i in 0..missed {
            ts.server.to("r").emit("n", &i).expect("emit");
        }
        let mut b = Session::resume_with(ts.addr, &token, positions).await;
        assert_eq!(b.sid(), sid);
        let r = b.recovery().await;
        assert_eq!(r["data"]["recovered"], false, "{r}");
        assert_eq!(r["data"]["reason"], reason);
        assert_eq!(r["data"]["events"], json!([]));
        assert_eq!(r["data"]["offset"], missed);
        ts.server.to("r").emit("n", &99).expect("emit");
        assert_eq!(data(&b.events(1).await), [99], "still in its room");
        ts.stop().await;
    }
}

#[tokio::test]
async fn a_quiet_client_keeps_its_place_after_the_history_expired() {
    let ts = start(Recovery::default().history_ttl(Duration::from_millis(100))).await;
    let mut a = member(&ts, "/", "r").await;
    ts.server.to("r").emit("n", &1).expect("emit");
    a.events(1).await;
    // Everything in the history ages out; the client missed nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = a.drop_and_resume(ts.addr).await;
    let r = b.recovery().await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["events"], json!([]));
    ts.stop().await;
}

#[tokio::test]
async fn volatile_direct_and_acked_emits_are_not_replayed_nor_numbered() {
    let (tx, mut sockets) = mpsc::unbounded_channel::<Socket>();
    let ts = TestServer::start(
        Server::builder()
            .recovery(Recovery::default())
            .on_connect(move |s: Socket| {
                let tx = tx.clone();
                async move {
                    tx.send(s).expect("test alive");
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut a = member(&ts, "/", "r").await;
    let socket = next(&mut sockets).await;
    socket.emit("direct", &1).expect("emit");
    ts.server
        .to("r")
        .volatile()
        .emit("cursor", &2)
        .expect("emit");
    ts.server.to("r").emit("kept", &3).expect("emit");
    let live = a.events(3).await;
    assert_eq!(live[0].get("offset"), None, "{}", live[0]);
    assert_eq!(live[1].get("offset"), None, "{}", live[1]);
    assert_eq!(live[2]["offset"], 1);
    let token = a.token();
    let positions = a.positions.clone();
    drop(a);
    wait_until(|| ts.server.stats().sessions_detached == 1).await;
    ts.server
        .to("r")
        .volatile()
        .emit("cursor", &4)
        .expect("emit");
    ts.server.to("r").emit("kept", &5).expect("emit");
    let report = ts
        .server
        .to("r")
        .emit_with_ack::<_, Value>("asked", &6, Duration::from_millis(50))
        .await
        .expect("sent");
    assert_eq!(report.expected, 0, "nobody live to ask");
    let mut b = Session::resume_with(ts.addr, &token, positions).await;
    let _ = next(&mut sockets).await;
    let r = b.recovery().await;
    assert_eq!(r["data"]["recovered"], true);
    let events = r["data"]["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{r}");
    assert_eq!(
        (events[0]["event"].as_str(), events[0]["data"].as_i64()),
        (Some("kept"), Some(5))
    );
    ts.stop().await;
}

#[tokio::test]
async fn every_namespace_of_the_session_is_restored_with_its_own_stream() {
    let ts = start(Recovery::default()).await;
    let mut a = member(&ts, "/chat", "lobby").await;
    ts.server
        .of("/chat")
        .to("lobby")
        .emit("m", &1)
        .expect("emit");
    ts.server.emit("root", &10).expect("emit");
    a.events(2).await;
    let token = a.token();
    let mut positions = a.positions.clone();
    drop(a);
    wait_until(|| ts.server.stats().sessions_detached == 1).await;
    ts.server
        .of("/chat")
        .to("lobby")
        .emit("m", &2)
        .expect("emit");
    ts.server.of("/chat").emit("m", &3).expect("emit");
    ts.server.emit("root", &11).expect("emit");
    // Resume without a position for "/": that namespace cannot be recovered.
    positions.remove("/");
    let mut b = Session::resume_with(ts.addr, &token, positions).await;
    let root = b.recovery().await;
    assert_eq!(
        (root["namespace"].as_str(), root["data"]["reason"].as_str()),
        (Some("/"), Some("no offset"))
    );
    let chat = b.recovery().await;
    assert_eq!(chat["namespace"], "/chat");
    assert_eq!(chat["data"]["recovered"], true, "{chat}");
    assert_eq!(
        data(chat["data"]["events"].as_array().expect("events")),
        [2, 3]
    );
    ts.server
        .of("/chat")
        .to("lobby")
        .emit("m", &4)
        .expect("emit");
    assert_eq!(data(&b.events(1).await), [4], "still in /chat's room");
    ts.stop().await;
}

#[tokio::test]
async fn connect_hooks_run_again_and_know_the_connection_was_recovered() {
    let (tx, mut seen) = mpsc::unbounded_channel::<(String, bool)>();
    let ts = TestServer::start(
        Server::builder()
            .recovery(Recovery::default())
            .on_connect(move |s: Socket| {
                let tx = tx.clone();
                async move {
                    tx.send((s.id().to_string(), s.recovered()))
                        .expect("test alive");
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let a = member(&ts, "/", "r").await;
    let sid = a.sid();
    assert_eq!(next(&mut seen).await, (sid.clone(), false));
    let b = a.drop_and_resume(ts.addr).await;
    assert_eq!(next(&mut seen).await, (sid, true));
    drop(b);
    ts.stop().await;
}

#[tokio::test]
async fn a_wrong_epoch_is_not_recovered_but_a_client_that_saw_nothing_is() {
    let ts = start(Recovery::default()).await;
    for (epoch, offset, recovered) in [("bogus", 1, false), ("bogus", 0, true)] {
        let a = member(&ts, "/", "r").await;
        let token = a.token();
        drop(a);
        wait_until(|| ts.server.stats().sessions_detached == 1).await;
        ts.server.to("r").emit("n", &1).expect("emit");
        let positions = BTreeMap::from([("/".to_owned(), (epoch.to_owned(), offset))]);
        let mut b = Session::resume_with(ts.addr, &token, positions).await;
        let r = b.recovery().await;
        assert_eq!(r["data"]["recovered"], recovered, "{r}");
        if recovered {
            // Offset 0 in any epoch: it saw nothing, so it missed all that is kept.
            assert!(!r["data"]["events"].as_array().expect("events").is_empty());
        } else {
            assert_eq!(r["data"]["reason"], "epoch changed");
        }
        b.client.close(1000, "done").await;
        wait_until(|| ts.server.stats().connections == 0).await;
    }
    ts.stop().await;
}

#[tokio::test]
async fn without_recovery_there_is_no_token_no_offset_and_no_recovery_frame() {
    let ts = TestServer::start(Server::builder().build().expect("build")).await;
    let mut a = Session::connect(ts.addr).await;
    assert_eq!(a.hello.get("token"), None);
    a.client
        .send(json!({"type": "join", "room": "r", "ackId": "j"}))
        .await;
    assert_eq!(a.next().await["type"], "ack");
    ts.server.to("r").emit("n", &1).expect("emit");
    let e = a.next().await;
    assert_eq!(
        e,
        json!({"type": "event", "namespace": "/", "event": "n", "data": 1})
    );
    // A resume attempt is ignored: no `resume` in the hello.
    let b = Session::resume_with(ts.addr, "x.y", BTreeMap::new()).await;
    assert_eq!(b.hello.get("resume"), None);
    ts.stop().await;
}

#[test]
fn recovery_needs_hello() {
    let e = Server::builder()
        .recovery(Recovery::default())
        .hello(false)
        .build()
        .expect_err("hello off");
    assert!(e.to_string().contains("recovery"), "{e}");
}

#[tokio::test]
async fn beyond_max_detached_the_oldest_waiting_session_ends() {
    let ts = start(Recovery::default().max_detached(1)).await;
    let a = member(&ts, "/", "r").await;
    let b = member(&ts, "/", "r").await;
    let (ta, tb) = (a.token(), b.token());
    drop(a);
    wait_until(|| ts.server.stats().sessions_detached == 1).await;
    drop(b);
    wait_until(|| ts.server.stats().connections == 0).await;
    assert_eq!(ts.server.stats().sessions_detached, 1);
    let a = Session::resume_with(ts.addr, &ta, BTreeMap::new()).await;
    assert_eq!(
        a.hello["resume"]["reason"], "unknown session",
        "the oldest was ended"
    );
    let b = Session::resume_with(ts.addr, &tb, BTreeMap::new()).await;
    assert_eq!(b.hello["resume"]["accepted"], true);
    ts.stop().await;
}

#[tokio::test]
async fn a_resume_cut_before_its_client_spoke_can_be_retried_with_the_same_token() {
    let ts = start(Recovery::default()).await;
    let a = member(&ts, "/", "r").await;
    let t0 = a.token();
    let positions = a.positions.clone();
    drop(a);
    wait_until(|| ts.server.stats().sessions_detached == 1).await;
    // Resumed, but the link dies before the client could read its new hello: it only has t0.
    let b = Session::resume_with(ts.addr, &t0, positions.clone()).await;
    assert_eq!(b.hello["resume"]["accepted"], true);
    let t1 = b.token();
    drop(b);
    wait_until(|| ts.server.stats().sessions_detached == 1).await;
    let mut c = Session::resume_with(ts.addr, &t0, positions.clone()).await;
    assert_eq!(
        c.hello["resume"]["accepted"], true,
        "t0 still good: the client never spoke"
    );
    c.recovery().await;
    // Once the client sent something on the new connection, only the newest token works.
    c.client.send(json!({"type": "ping"})).await;
    assert_eq!(c.next().await["type"], "pong");
    let t2 = c.token();
    drop(c);
    wait_until(|| ts.server.stats().sessions_detached == 1).await;
    for old in [&t0, &t1] {
        let s = Session::resume_with(ts.addr, old, positions.clone()).await;
        assert_eq!(s.hello["resume"]["reason"], "invalid token");
    }
    let d = Session::resume_with(ts.addr, &t2, positions).await;
    assert_eq!(d.hello["resume"]["accepted"], true);
    ts.stop().await;
}
