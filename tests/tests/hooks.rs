//! Connect and disconnect hooks (global and per namespace), the upgrade request seen by hooks,
//! shared state and handler introspection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use wsu::{CloseCode, DisconnectReason, HandlerError, Json, Server, Socket, SocketId};
use wsu_tests::{Client, Closed, TestServer, WAIT, is_hello, next};

type Reasons = mpsc::UnboundedReceiver<(SocketId, DisconnectReason)>;

/// A builder whose global disconnect hook reports every `(id, reason)`.
fn reporting(builder: wsu::ServerBuilder) -> (wsu::ServerBuilder, Reasons) {
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = builder.on_disconnect(move |s: Socket, reason| {
        let tx = tx.clone();
        async move {
            tx.send((*s.id(), reason)).expect("test alive");
        }
    });
    (builder, rx)
}

async fn whoami(c: &mut Client) -> SocketId {
    c.emit_ack("whoami", json!(null), "whoami").await;
    let got = c.recv().await;
    SocketId::parse(got["data"].as_str().expect("id string")).expect("a socket id")
}

fn with_whoami(builder: wsu::ServerBuilder) -> wsu::ServerBuilder {
    builder
        .on("whoami", |s: Socket, _d: Value| async move {
            Json(s.id().to_string())
        })
        .on("echo", |_s: Socket, d: Value| async move { Json(d) })
}

/// After the server stopped (every disconnect hook has run), nothing more was reported.
fn assert_no_more(rx: &mut Reasons) {
    if let Ok(extra) = rx.try_recv() {
        panic!("a disconnect hook ran again: {extra:?}");
    }
}

#[tokio::test]
async fn connect_hook_runs_before_any_message_is_handled_and_can_emit() {
    let release = Arc::new(Notify::new());
    let (tx, mut started) = mpsc::unbounded_channel();
    let r = release.clone();
    let server = TestServer::start(
        with_whoami(Server::builder())
            .on_connect(move |s: Socket| {
                let (r, tx) = (r.clone(), tx.clone());
                async move {
                    tx.send(()).expect("test alive");
                    r.notified().await;
                    s.emit("welcome", &"hello").expect("emit");
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    next(&mut started).await;
    // Sent right after connecting: queued behind the hook.
    c.emit_ack("echo", json!(1), "e1").await;
    c.send(json!({"type": "join", "room": "early", "ackId": "j"}))
        .await;
    c.send(json!({"type": "ping"})).await;
    // The server has read all three and answered none.
    c.sync_read().await;
    // Not yet a member of `/`.
    assert_eq!(server.server.emit("x", &0).expect("broadcast").queued, 0);
    assert!(server.server.room_members("/", "early").is_empty());

    release.notify_one();
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"event","namespace":"/","event":"welcome","data":"hello"}"#
    );
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "echo", "data": 1, "ackId": "e1"})
    );
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "ackId": "j"})
    );
    assert_eq!(c.recv().await, json!({"type": "pong", "namespace": "/"}));
    assert_eq!(server.server.room_members("/", "early").len(), 1);
    assert_eq!(server.server.emit("x", &0).expect("broadcast").queued, 1);
}

#[tokio::test]
async fn refusing_in_the_connect_hook_closes_with_4500_and_the_reason() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c1 = calls.clone();
    let (builder, mut reasons) = reporting(
        Server::builder()
            .on_connect(|s: Socket| async move {
                if s.query("token") == Some("secret") {
                    Ok(())
                } else {
                    Err("go away: bad token")
                }
            })
            .on("echo", move |_s: Socket, d: Value| {
                let c1 = c1.clone();
                async move {
                    c1.fetch_add(1, Ordering::SeqCst);
                    Json(d)
                }
            }),
    );
    let server = TestServer::start(builder.build().expect("build")).await;

    let mut c = server.client().await;
    c.emit_ack("echo", json!(1), "never").await;
    // The very first frame is the hello (sent before the connect hooks run), the next one the
    // close: the queued request is never handled.
    match tokio::time::timeout(WAIT, c.ws.next())
        .await
        .expect("a frame in time")
    {
        Some(Ok(Message::Text(t))) => assert!(is_hello(t.as_str()), "{t}"),
        other => panic!("expected the hello frame, got {other:?}"),
    }
    let second = tokio::time::timeout(WAIT, c.ws.next())
        .await
        .expect("a frame in time");
    match second {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4500);
            assert_eq!(frame.reason.as_str(), "go away: bad token");
        }
        other => panic!("expected the close frame, got {other:?}"),
    }
    // Send the close reply tungstenite queued, so the server need not wait for it.
    let _ = c.ws.flush().await;
    let (_, reason) = next(&mut reasons).await;
    assert_eq!(
        reason,
        DisconnectReason::ServerClosed {
            code: CloseCode::REFUSED,
            reason: "go away: bad token".to_owned()
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // With the right token, accepted.
    let mut ok = server.client_with("/ws?token=secret", &[]).await;
    ok.emit_ack("echo", json!(2), "e").await;
    assert_eq!(
        ok.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "echo", "data": 2, "ackId": "e"})
    );
    drop(ok.close(1000, "done").await);
    next(&mut reasons).await;
    assert_eq!(server.server.stats().closes.get(&4500), Some(&1));
    server.stop().await;
    assert_no_more(&mut reasons);
}

#[tokio::test]
async fn namespace_connect_hook_can_refuse_a_join() {
    let server = TestServer::start(
        Server::builder()
            .namespace("/vip", |ns| {
                ns.on_connect(|s: Socket| async move {
                    if s.query("vip") == Some("1") {
                        s.emit("welcome", &"vip").map_err(|e| e.to_string())
                    } else {
                        Err("not a vip".to_owned())
                    }
                })
                .on("perk", |_s: Socket, _d: Value| async move { Json("perk") })
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut c = server.client().await;
    c.send(json!({"type": "join", "namespace": "/vip", "ackId": "j"}))
        .await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"error","namespace":"/vip","ackId":"j","error":"join refused: not a vip"}"#
    );
    c.send(json!({"type": "join", "namespace": "/vip", "room": "lounge"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/vip", "error": "join refused: not a vip"})
    );
    c.send(json!({"type": "event", "namespace": "/vip", "event": "perk", "ackId": "p"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/vip", "event": "perk", "ackId": "p", "error": "namespace not joined"})
    );
    assert_eq!(server.server.stats().rooms, 0);
    assert_eq!(
        server
            .server
            .of("/vip")
            .emit("x", &1)
            .expect("broadcast")
            .queued,
        0
    );

    let mut vip = server.client_with("/ws?vip=1", &[]).await;
    vip.send(json!({"type": "join", "namespace": "/vip", "room": "lounge", "ackId": "j"}))
        .await;
    // What the hook emits arrives before the join's ack.
    assert_eq!(
        vip.recv().await,
        json!({"type": "event", "namespace": "/vip", "event": "welcome", "data": "vip"})
    );
    assert_eq!(
        vip.recv().await,
        json!({"type": "ack", "namespace": "/vip", "ackId": "j"})
    );
    assert_eq!(server.server.room_members("/vip", "lounge").len(), 1);
    vip.send(json!({"type": "event", "namespace": "/vip", "event": "perk", "ackId": "p"}))
        .await;
    assert_eq!(
        vip.recv().await,
        json!({"type": "ack", "namespace": "/vip", "event": "perk", "data": "perk", "ackId": "p"})
    );
    // Already a member: the hook does not run again (no second welcome).
    vip.send(json!({"type": "join", "namespace": "/vip", "ackId": "j2"}))
        .await;
    assert_eq!(
        vip.recv().await,
        json!({"type": "ack", "namespace": "/vip", "ackId": "j2"})
    );
}

#[derive(Debug, PartialEq)]
struct Seen {
    token: Option<String>,
    room: Option<String>,
    flag: Option<String>,
    missing: Option<String>,
    header: Option<String>,
    path: String,
    remote: Option<std::net::SocketAddr>,
}

#[tokio::test]
async fn connect_hook_sees_the_query_and_headers_of_the_upgrade() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let server = TestServer::start(
        Server::builder()
            .on_connect(move |s: Socket| {
                let tx = tx.clone();
                async move {
                    let q = |k: &str| s.query(k).map(str::to_owned);
                    let header = s
                        .request()
                        .headers
                        .get("x-test")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    tx.send(Seen {
                        token: q("token"),
                        room: q("room"),
                        flag: q("flag"),
                        missing: q("missing"),
                        header,
                        path: s.request().uri.path().to_owned(),
                        remote: s.remote_addr(),
                    })
                    .expect("test alive");
                }
            })
            .build()
            .expect("build"),
    )
    .await;
    let c = server
        .client_with(
            "/ws?token=abc&room=a%20b&flag",
            &[("X-Test", "yes"), ("Authorization", "Bearer t")],
        )
        .await;
    assert_eq!(
        next(&mut seen).await,
        Seen {
            token: Some("abc".to_owned()),
            room: Some("a%20b".to_owned()),
            flag: Some(String::new()),
            missing: None,
            header: Some("yes".to_owned()),
            path: "/ws".to_owned(),
            remote: Some(c.local_addr()),
        }
    );
}

#[tokio::test]
async fn disconnect_hook_runs_once_with_the_reason() {
    let (builder, mut reasons) = reporting(with_whoami(Server::builder()).on(
        "kick",
        |s: Socket, code: Option<u16>| async move {
            match code {
                Some(code) => s.close_with(CloseCode::new(code), "custom close"),
                None => s.close("kicked"),
            }
        },
    ));
    let server = TestServer::start(builder.build().expect("build")).await;

    // The client closes with a code and a reason.
    let mut c = server.client().await;
    let id = whoami(&mut c).await;
    assert_eq!(
        c.close(4321, "custom").await,
        Closed::Frame(4321, "custom".to_owned())
    );
    assert_eq!(
        next(&mut reasons).await,
        (
            id,
            DisconnectReason::ClientClosed {
                code: CloseCode::new(4321),
                reason: "custom".to_owned()
            }
        )
    );

    // The client closes without a status code.
    let mut c = server.client().await;
    let id = whoami(&mut c).await;
    c.ws.close(None).await.expect("send close");
    assert_eq!(c.closed().await, Closed::Frame(1005, String::new()));
    assert_eq!(
        next(&mut reasons).await,
        (
            id,
            DisconnectReason::ClientClosed {
                code: CloseCode::NO_STATUS,
                reason: String::new()
            }
        )
    );

    // The server closes: Socket::close sends 1000 with the reason.
    let mut c = server.client().await;
    let id = whoami(&mut c).await;
    c.send(json!({"type": "event", "event": "kick"})).await;
    assert_eq!(c.closed().await, Closed::Frame(1000, "kicked".to_owned()));
    let _ = c.ws.flush().await;
    assert_eq!(
        next(&mut reasons).await,
        (
            id,
            DisconnectReason::ServerClosed {
                code: CloseCode::NORMAL,
                reason: "kicked".to_owned()
            }
        )
    );

    // Socket::close_with sends the given code.
    let mut c = server.client().await;
    let id = whoami(&mut c).await;
    c.send(json!({"type": "event", "event": "kick", "data": 4100}))
        .await;
    assert_eq!(
        c.closed().await,
        Closed::Frame(4100, "custom close".to_owned())
    );
    let _ = c.ws.flush().await;
    assert_eq!(
        next(&mut reasons).await,
        (
            id,
            DisconnectReason::ServerClosed {
                code: CloseCode::new(4100),
                reason: "custom close".to_owned()
            }
        )
    );

    // The TCP connection drops without a close frame.
    let mut c = server.client().await;
    let id = whoami(&mut c).await;
    drop(c);
    assert_eq!(
        next(&mut reasons).await,
        (id, DisconnectReason::TransportClosed)
    );

    let closes = server.server.stats().closes;
    assert_eq!(
        closes.into_iter().collect::<Vec<_>>(),
        vec![(1000, 1), (1005, 1), (1006, 1), (4100, 1), (4321, 1)]
    );
    server.stop().await;
    assert_no_more(&mut reasons);
}

#[tokio::test]
async fn namespace_disconnect_hook_runs_on_leave_and_on_disconnect() {
    let (ns_tx, mut ns_reasons) = mpsc::unbounded_channel::<(String, DisconnectReason)>();
    let (builder, mut reasons) = reporting(with_whoami(Server::builder()).namespace(
        "/room",
        move |ns| {
            let ns_tx = ns_tx.clone();
            ns.on_disconnect(move |s: Socket, reason| {
                let ns_tx = ns_tx.clone();
                async move {
                    ns_tx
                        .send((s.namespace().to_owned(), reason))
                        .expect("test alive");
                }
            })
            .on("leave-me", |s: Socket, _d: Value| async move {
                Json(s.leave_namespace("/room"))
            })
        },
    ));
    let server = TestServer::start(builder.build().expect("build")).await;
    let mut c = server.client().await;
    let id = whoami(&mut c).await;

    // A client `leave`: the hook has run when the ack arrives.
    c.send(json!({"type": "join", "namespace": "/room", "room": "r"}))
        .await;
    c.send(json!({"type": "leave", "namespace": "/room", "ackId": "l"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/room", "ackId": "l"})
    );
    assert_eq!(
        ns_reasons.try_recv().expect("hook ran before the ack"),
        ("/room".to_owned(), DisconnectReason::LeftNamespace)
    );
    // Leaving again: not a member, no hook.
    c.send(json!({"type": "leave", "namespace": "/room", "ackId": "l2"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/room", "ackId": "l2"})
    );

    // A server-side leave (Socket::leave_namespace).
    c.send(json!({"type": "join", "namespace": "/room"})).await;
    c.send(json!({"type": "event", "namespace": "/room", "event": "leave-me", "ackId": "s"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/room", "event": "leave-me", "data": true, "ackId": "s"})
    );
    assert_eq!(
        next(&mut ns_reasons).await,
        ("/room".to_owned(), DisconnectReason::LeftNamespace)
    );

    // Disconnecting: the namespace hook, then the global one, with the same reason.
    c.send(json!({"type": "join", "namespace": "/room", "ackId": "j"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/room", "ackId": "j"})
    );
    drop(c.close(1000, "bye").await);
    let bye = DisconnectReason::ClientClosed {
        code: CloseCode::NORMAL,
        reason: "bye".to_owned(),
    };
    assert_eq!(next(&mut reasons).await, (id, bye.clone()));
    assert_eq!(
        ns_reasons
            .try_recv()
            .expect("namespace hook ran before the global one"),
        ("/room".to_owned(), bye)
    );
    server.stop().await;
    assert_no_more(&mut reasons);
    assert!(ns_reasons.try_recv().is_err(), "namespace hook ran again");
}

struct Hits(AtomicUsize);

#[tokio::test]
async fn shared_state_is_visible_in_handlers() {
    let server = TestServer::start(
        Server::builder()
            .state(Hits(AtomicUsize::new(10)))
            .state(String::from("config"))
            .on("hit", |s: Socket, _d: Value| async move {
                let hits = s.server().state::<Hits>().expect("registered state");
                let name = s.server().state::<String>().expect("registered state");
                Json(format!(
                    "{name} {}",
                    hits.0.fetch_add(1, Ordering::SeqCst) + 1
                ))
            })
            .build()
            .expect("build"),
    )
    .await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.emit_ack("hit", json!(null), "1").await;
    assert_eq!(a.recv().await["data"], "config 11");
    b.emit_ack("hit", json!(null), "2").await;
    assert_eq!(b.recv().await["data"], "config 12");
    let hits = server.server.state::<Hits>().expect("registered state");
    assert_eq!(hits.0.load(Ordering::SeqCst), 12);
    assert!(Arc::ptr_eq(
        &hits,
        &server.server.state::<Hits>().expect("registered state")
    ));
    assert!(server.server.state::<u64>().is_none());
}

#[derive(serde::Deserialize)]
struct Chat {
    #[allow(dead_code)]
    message: String,
}

#[tokio::test]
async fn events_lists_registered_handlers_with_payload_types() {
    let server = Server::builder()
        .namespace("/game", |ns| {
            ns.on("move", |_s: Socket, d: u32| async move { Json(d) })
                .on("chat", |_s: Socket, _d: Chat| async move {
                    Ok::<_, HandlerError>(Json("ok"))
                })
        })
        .on("raw", |_s: Socket, _d: Box<RawValue>| async move {})
        .on("chat", |_s: Socket, _d: Chat| async move {})
        .namespace("/empty", |ns| ns)
        .ack_timeout(Duration::from_secs(1))
        .build()
        .expect("build");
    let listed: Vec<_> = server
        .events()
        .into_iter()
        .map(|e| (e.namespace, e.event, e.payload_type, e.ack_type, e.location))
        .collect();
    let chat = std::any::type_name::<Chat>();
    assert_eq!(chat, "hooks::Chat");
    let unit = Some("()");
    assert_eq!(
        listed,
        vec![
            ("/".to_owned(), "chat".to_owned(), chat, unit, None),
            (
                "/".to_owned(),
                "raw".to_owned(),
                std::any::type_name::<Box<RawValue>>(),
                unit,
                None
            ),
            (
                "/game".to_owned(),
                "chat".to_owned(),
                chat,
                Some(std::any::type_name::<Result<Json<&str>, HandlerError>>()),
                None
            ),
            (
                "/game".to_owned(),
                "move".to_owned(),
                "u32",
                Some(std::any::type_name::<Json<u32>>()),
                None
            ),
        ]
    );
}
