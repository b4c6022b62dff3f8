//! Namespaces and rooms: joining and leaving, declared and allowed namespaces, caps, broadcasts
//! from the server and from a socket, and cleanup on disconnect.

use serde_json::{Value, json};
use tokio::sync::mpsc;
use wsu::{Json, Server, Socket, SocketId};
use wsu_tests::{Client, TestServer, next};

#[derive(serde::Deserialize)]
struct Say {
    room: String,
    text: String,
}

fn builder() -> wsu::ServerBuilder {
    Server::builder()
        .on("whoami", |s: Socket, _d: Value| async move {
            Json(s.id().to_string())
        })
        .on("shout", |s: Socket, d: Value| async move {
            s.broadcast().emit("shout", &d).map(|d| Json(d.queued))
        })
        .on("say", |s: Socket, say: Say| async move {
            s.to(&say.room)
                .emit("say", &say.text)
                .map(|d| Json(d.queued))
        })
        .namespace("/game", |ns| {
            ns.on("move", |_s: Socket, _d: Value| async move { Json("moved") })
                .on("rooms", |s: Socket, _d: Value| async move {
                    let mut rooms = s.rooms();
                    rooms.sort();
                    Json(rooms)
                })
        })
}

fn server() -> Server {
    builder().build().expect("build")
}

/// The connection's id, asked through the `whoami` handler.
async fn whoami(c: &mut Client) -> SocketId {
    c.emit_ack("whoami", json!(null), "whoami").await;
    let got = c.recv().await;
    SocketId::parse(got["data"].as_str().expect("id string")).expect("a socket id")
}

/// Send a membership request with an ackId and expect its exact ack.
async fn request_ok(c: &mut Client, kind: &str, namespace: &str, room: Option<&str>, ack: &str) {
    let mut msg = json!({"type": kind, "namespace": namespace, "ackId": ack});
    if let Some(room) = room {
        msg["room"] = json!(room);
    }
    c.send(msg).await;
    assert_eq!(
        c.recv_text().await,
        format!(r#"{{"type":"ack","namespace":"{namespace}","ackId":"{ack}"}}"#)
    );
}

async fn join(c: &mut Client, namespace: &str, room: Option<&str>) {
    request_ok(c, "join", namespace, room, "join").await;
}

/// Send an event to `/game` and expect its ack.
async fn assert_in_game(c: &mut Client) {
    c.send(json!({"type": "event", "namespace": "/game", "event": "move", "ackId": "mv"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/game", "event": "move", "data": "moved", "ackId": "mv"})
    );
}

async fn assert_not_in_game(c: &mut Client) {
    c.send(json!({"type": "event", "namespace": "/game", "event": "move", "ackId": "mv"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/game", "event": "move", "ackId": "mv", "error": "namespace not joined"})
    );
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Receive `n` events and return their `event` names (each must be an `event` of `namespace`).
async fn events(c: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = c.recv().await;
        assert_eq!(m["type"], "event", "{m}");
        out.push(format!(
            "{} {}",
            m["namespace"].as_str().expect("namespace"),
            m["event"].as_str().expect("event")
        ));
    }
    out
}

#[tokio::test]
async fn joining_a_room_joins_its_namespace() {
    let server = TestServer::start(server()).await;
    let mut c = server.client().await;
    let id = whoami(&mut c).await;
    assert_not_in_game(&mut c).await;

    request_ok(&mut c, "join", "/game", Some("r1"), "j1").await;
    // No half-joined state: events to the namespace are accepted, broadcasts arrive.
    assert_in_game(&mut c).await;
    let d = server
        .server
        .of("/game")
        .emit("tick", &1)
        .expect("broadcast");
    assert_eq!(d.queued, 1);
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"event","namespace":"/game","event":"tick","data":1}"#
    );
    assert_eq!(server.server.room_members("/game", "r1"), vec![id]);
    assert_eq!(server.server.rooms("/game"), vec!["r1".to_owned()]);
    assert_eq!(server.server.stats().rooms, 1);

    // The seed's shape, without an ackId: no reply.
    c.send(json!({"type": "join", "namespace": "/", "room": "lobby"}))
        .await;
    c.expect_quiet().await;
    assert_eq!(server.server.room_members("/", "lobby"), vec![id]);
    // Joining twice is a no-op that is still acknowledged.
    request_ok(&mut c, "join", "/game", Some("r1"), "j2").await;
    request_ok(&mut c, "join", "/game", None, "j3").await;
    c.send(json!({"type": "event", "namespace": "/game", "event": "rooms", "ackId": "r"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/game", "event": "rooms", "data": ["r1"], "ackId": "r"})
    );
    assert_eq!(server.server.stats().rooms, 2);
}

#[tokio::test]
async fn leaving_a_room_keeps_the_namespace() {
    let server = TestServer::start(server()).await;
    let mut c = server.client().await;
    join(&mut c, "/game", Some("r1")).await;
    join(&mut c, "/game", Some("r2")).await;
    assert_eq!(
        sorted(server.server.rooms("/game")),
        vec!["r1".to_owned(), "r2".to_owned()]
    );

    request_ok(&mut c, "leave", "/game", Some("r1"), "l1").await;
    assert_eq!(
        server.server.room_members("/game", "r1"),
        Vec::<SocketId>::new()
    );
    assert_eq!(server.server.rooms("/game"), vec!["r2".to_owned()]);
    assert_in_game(&mut c).await;
    // Leaving a room one is not in is acknowledged too.
    request_ok(&mut c, "leave", "/game", Some("r1"), "l2").await;
    // A room broadcast no longer reaches the connection.
    let d = server
        .server
        .of("/game")
        .to("r1")
        .emit("x", &1)
        .expect("broadcast");
    assert_eq!(d.queued, 0);
    c.expect_quiet().await;

    // The seed's shape: `{"type":"leave","room":"lobby"}` leaves a room of `/`.
    join(&mut c, "/", Some("lobby")).await;
    c.send(json!({"type": "leave", "room": "lobby"})).await;
    c.expect_quiet().await;
    assert!(server.server.room_members("/", "lobby").is_empty());
    assert_eq!(server.server.stats().rooms, 1);
}

#[tokio::test]
async fn leaving_a_namespace_leaves_its_rooms() {
    let server = TestServer::start(server()).await;
    let mut c = server.client().await;
    join(&mut c, "/game", Some("r1")).await;
    join(&mut c, "/game", Some("r2")).await;
    join(&mut c, "/", Some("lobby")).await;
    assert_eq!(server.server.stats().rooms, 3);

    request_ok(&mut c, "leave", "/game", None, "lg").await;
    assert_not_in_game(&mut c).await;
    assert!(server.server.rooms("/game").is_empty());
    assert_eq!(server.server.rooms("/"), vec!["lobby".to_owned()]);
    assert_eq!(server.server.stats().rooms, 1);
    let d = server.server.of("/game").emit("x", &1).expect("broadcast");
    assert_eq!(d.queued, 0);
    c.expect_quiet().await;
    // Rejoining works, with no rooms.
    join(&mut c, "/game", None).await;
    c.send(json!({"type": "event", "namespace": "/game", "event": "rooms", "ackId": "r"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/game", "event": "rooms", "data": [], "ackId": "r"})
    );
}

#[tokio::test]
async fn undeclared_namespaces_and_invalid_names_are_refused() {
    let server = TestServer::start(server()).await;
    let mut c = server.client().await;

    c.send(json!({"type": "join", "namespace": "/nope", "ackId": "u1"}))
        .await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"error","namespace":"/nope","ackId":"u1","error":"unknown namespace"}"#
    );
    c.send(json!({"type": "join", "namespace": "/nope", "room": "r"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/nope", "error": "unknown namespace"})
    );
    c.send(json!({"type": "join", "namespace": "nope", "ackId": "u2"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "ackId": "u2", "error": "invalid namespace: namespace must start with `/`"})
    );
    c.send(json!({"type": "join", "room": "a\u{0}b", "ackId": "u3"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "ackId": "u3", "error": "invalid room name: room contains a control character"})
    );
    c.send(json!({"type": "join", "room": "r".repeat(129), "ackId": "u4"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "ackId": "u4", "error": "invalid room name: room is longer than 128 bytes"})
    );
    let stats = server.server.stats();
    assert_eq!((stats.dynamic_namespaces, stats.rooms), (0, 0));
    assert!(server.server.rooms("/nope").is_empty());
    // `a::b` is a valid room name, distinct from `a`.
    join(&mut c, "/", Some("a::b")).await;
    assert!(server.server.room_members("/", "a").is_empty());
    assert_eq!(server.server.rooms("/"), vec!["a::b".to_owned()]);
}

#[tokio::test]
async fn allowed_namespaces_are_created_on_join_and_removed_when_empty() {
    let (tx, mut gone) = mpsc::unbounded_channel();
    let server = TestServer::start(
        builder()
            .allow_namespaces(|name| name.starts_with("/dyn/"))
            .on_disconnect(move |s: Socket, _r| {
                let tx = tx.clone();
                async move {
                    tx.send(*s.id()).expect("test alive");
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;

    request_ok(&mut c, "join", "/dyn/1", None, "d1").await;
    assert_eq!(server.server.stats().dynamic_namespaces, 1);
    let d = server
        .server
        .of("/dyn/1")
        .emit("hi", &1)
        .expect("broadcast");
    assert_eq!(d.queued, 1);
    assert_eq!(
        c.recv().await,
        json!({"type": "event", "namespace": "/dyn/1", "event": "hi", "data": 1})
    );
    // A dynamic namespace has no handlers.
    c.send(json!({"type": "event", "namespace": "/dyn/1", "event": "move", "ackId": "m"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/dyn/1", "event": "move", "ackId": "m", "error": "unknown event"})
    );
    // The filter still refuses other names.
    c.send(json!({"type": "join", "namespace": "/other", "ackId": "o"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/other", "ackId": "o", "error": "unknown namespace"})
    );

    request_ok(&mut c, "leave", "/dyn/1", None, "l1").await;
    assert_eq!(server.server.stats().dynamic_namespaces, 0);
    assert_eq!(
        server
            .server
            .of("/dyn/1")
            .emit("hi", &2)
            .expect("broadcast")
            .queued,
        0
    );

    // Removed when the last member disconnects, rooms included.
    let mut d = server.client().await;
    let did = whoami(&mut d).await;
    join(&mut d, "/dyn/2", Some("r")).await;
    join(&mut c, "/dyn/2", None).await;
    let stats = server.server.stats();
    assert_eq!((stats.dynamic_namespaces, stats.rooms), (1, 1));
    drop(d.close(1000, "bye").await);
    assert_eq!(next(&mut gone).await, did);
    let stats = server.server.stats();
    assert_eq!(
        (stats.dynamic_namespaces, stats.rooms),
        (1, 0),
        "c is still in /dyn/2"
    );
    request_ok(&mut c, "leave", "/dyn/2", None, "l2").await;
    assert_eq!(server.server.stats().dynamic_namespaces, 0);
}

#[tokio::test]
async fn rooms_per_connection_are_capped() {
    let server = TestServer::start(
        builder()
            .max_rooms_per_connection(2)
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    let mut other = server.client().await;
    request_ok(&mut c, "join", "/", Some("r1"), "1").await;
    request_ok(&mut c, "join", "/", Some("r2"), "2").await;
    c.send(json!({"type": "join", "room": "r3", "ackId": "3"}))
        .await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"error","namespace":"/","ackId":"3","error":"too many rooms"}"#
    );
    // All namespaces together; the namespace itself is not joined either.
    c.send(json!({"type": "join", "namespace": "/game", "room": "g", "ackId": "4"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/game", "ackId": "4", "error": "too many rooms"})
    );
    assert_not_in_game(&mut c).await;
    // Rejoining a room already joined is fine.
    request_ok(&mut c, "join", "/", Some("r1"), "5").await;
    // The cap is per connection.
    request_ok(&mut other, "join", "/", Some("r3"), "6").await;
    // After leaving one, there is room again.
    request_ok(&mut c, "leave", "/", Some("r1"), "7").await;
    request_ok(&mut c, "join", "/", Some("r3"), "8").await;
    assert_eq!(server.server.room_members("/", "r3").len(), 2);
}

#[tokio::test]
async fn server_broadcasts_to_namespaces_rooms_and_except() {
    let server = TestServer::start(server()).await;
    let s = &server.server;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    let mut d = server.client().await;
    let ib = whoami(&mut b).await;
    let id = whoami(&mut d).await;
    join(&mut a, "/game", Some("r1")).await;
    join(&mut b, "/game", Some("r1")).await;
    join(&mut b, "/game", Some("r2")).await;
    join(&mut c, "/game", Some("r2")).await;
    join(&mut a, "/", Some("lobby")).await;
    join(&mut d, "/", Some("lobby")).await;

    let queued = |d: Result<wsu::Delivery, wsu::SendError>| d.expect("broadcast").queued;
    assert_eq!(queued(s.of("/game").emit("ns", &1)), 3);
    assert_eq!(queued(s.of("/game").to("r1").emit("r1", &1)), 2);
    assert_eq!(queued(s.of("/game").to("r1").to("r2").emit("r1r2", &1)), 3);
    assert_eq!(
        queued(s.of("/game").to("r1").to("r1").emit("r1twice", &1)),
        2
    );
    assert_eq!(
        queued(
            s.of("/game")
                .to("r1")
                .to("r2")
                .except(ib)
                .emit("r1r2-b", &1)
        ),
        2
    );
    assert_eq!(queued(s.of("/game").to("empty").emit("none", &1)), 0);
    assert_eq!(queued(s.of("/unknown").emit("none", &1)), 0);
    assert_eq!(queued(s.emit("root", &1)), 4);
    assert_eq!(queued(s.to("lobby").emit("lobby", &1)), 2);
    assert_eq!(queued(s.except(id).emit("root-d", &1)), 3);
    assert_eq!(queued(s.to("lobby").except(id).emit("lobby-d", &1)), 1);

    // Each client receives exactly its messages, once each, in order.
    let expect: [(&mut Client, &[&str]); 4] = [
        (
            &mut a,
            &[
                "/game ns",
                "/game r1",
                "/game r1r2",
                "/game r1twice",
                "/game r1r2-b",
                "/ root",
                "/ lobby",
                "/ root-d",
                "/ lobby-d",
            ],
        ),
        (
            &mut b,
            &[
                "/game ns",
                "/game r1",
                "/game r1r2",
                "/game r1twice",
                "/ root",
                "/ root-d",
            ],
        ),
        (
            &mut c,
            &[
                "/game ns",
                "/game r1r2",
                "/game r1r2-b",
                "/ root",
                "/ root-d",
            ],
        ),
        (&mut d, &["/ root", "/ lobby"]),
    ];
    for (client, names) in expect {
        assert_eq!(events(client, names.len()).await, names.to_vec());
        client.expect_quiet().await;
    }
    // The frame is the seed's event shape.
    s.to("lobby")
        .emit("shape", &json!({"k": [1, 2]}))
        .expect("broadcast");
    assert_eq!(
        d.recv_text().await,
        r#"{"type":"event","namespace":"/","event":"shape","data":{"k":[1,2]}}"#
    );
}

#[tokio::test]
async fn socket_broadcasts_exclude_the_sender() {
    let server = TestServer::start(server()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    join(&mut a, "/", Some("r")).await;
    join(&mut b, "/", Some("r")).await;
    c.ready().await;

    a.emit_ack("shout", json!("hey"), "s").await;
    assert_eq!(
        a.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "shout", "data": 2, "ackId": "s"})
    );
    a.emit_ack("say", json!({"room": "r", "text": "psst"}), "t")
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "say", "data": 1, "ackId": "t"})
    );
    a.expect_quiet().await;
    assert_eq!(
        b.recv().await,
        json!({"type": "event", "namespace": "/", "event": "shout", "data": "hey"})
    );
    assert_eq!(
        b.recv().await,
        json!({"type": "event", "namespace": "/", "event": "say", "data": "psst"})
    );
    b.expect_quiet().await;
    assert_eq!(
        c.recv().await,
        json!({"type": "event", "namespace": "/", "event": "shout", "data": "hey"})
    );
    c.expect_quiet().await;
}

#[tokio::test]
async fn all_memberships_are_freed_on_disconnect() {
    let (tx, mut gone) = mpsc::unbounded_channel();
    let server = TestServer::start(
        builder()
            .on_disconnect(move |s: Socket, _r| {
                let tx = tx.clone();
                async move {
                    tx.send(*s.id()).expect("test alive");
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let s = &server.server;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut stay = server.client().await;
    let ia = whoami(&mut a).await;
    let ib = whoami(&mut b).await;
    let is = whoami(&mut stay).await;
    for (ns, room) in [("/", "lobby"), ("/game", "r1"), ("/game", "r2")] {
        join(&mut a, ns, Some(room)).await;
    }
    for (ns, room) in [("/", "lobby"), ("/game", "r2"), ("/", "b-only")] {
        join(&mut b, ns, Some(room)).await;
    }
    join(&mut stay, "/", Some("lobby")).await;
    assert_eq!(s.stats().rooms, 4);
    assert_eq!(
        sorted(s.room_members("/", "lobby")),
        sorted(vec![ia, ib, is])
    );

    // One closes cleanly, the other just drops its TCP connection.
    drop(a.close(1000, "bye").await);
    drop(b);
    let mut ids = vec![next(&mut gone).await, next(&mut gone).await];
    ids.sort();
    assert_eq!(ids, sorted(vec![ia, ib]));

    assert_eq!(s.stats().rooms, 1);
    assert_eq!(s.room_members("/", "lobby"), vec![is]);
    assert!(s.room_members("/game", "r1").is_empty());
    assert!(s.room_members("/game", "r2").is_empty());
    assert!(s.room_members("/", "b-only").is_empty());
    assert!(s.rooms("/game").is_empty());
    assert_eq!(s.rooms("/"), vec!["lobby".to_owned()]);
    assert!(s.socket(ia).is_none() && s.socket(ib).is_none());
    assert_eq!(s.sockets(), vec![is]);
    assert_eq!(s.of("/game").emit("x", &1).expect("broadcast").queued, 0);
    assert_eq!(s.emit("x", &1).expect("broadcast").queued, 1);
}
