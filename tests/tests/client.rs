//! The Rust client (`wsu::client`, feature `client`) against real wsu servers on `127.0.0.1`, and
//! against a scripted WebSocket server where the exact frames matter.
//!
//! No sleeps: every step awaits a state event, an answer, or a server-side signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use wsu::client::{
    Client, ClientAckError, ClientError, ConnectionState, ErrorEvent, Reconnect, StateEvent,
};
use wsu::{CloseCode, DisconnectReason, HandlerError, Json, Server, Socket};
use wsu_tests::{TestServer, next, within};

// ---- helpers ---------------------------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Reconnect quickly, forever.
fn fast() -> Reconnect {
    Reconnect {
        initial_delay: ms(5),
        max_delay: ms(50),
        ..Reconnect::default()
    }
}

/// The next state event.
async fn event(rx: &mut broadcast::Receiver<StateEvent>) -> StateEvent {
    within(rx.recv()).await.expect("state event")
}

/// Skips `Reconnecting` events (and `Disconnected` ones of attempts that failed after opening)
/// until `Connected`.
async fn until_connected(rx: &mut broadcast::Receiver<StateEvent>) {
    loop {
        match event(rx).await {
            StateEvent::Connected => return,
            StateEvent::Reconnecting { .. } => {}
            other => panic!("expected reconnection, got {other:?}"),
        }
    }
}

async fn wait_state(client: &Client, state: ConnectionState) {
    let mut watch = client.state();
    within(watch.wait_for(|s| *s == state))
        .await
        .expect("state watch");
}

/// A channel that a handler reports to, and its receiving end.
fn channel<T>() -> (mpsc::UnboundedSender<T>, mpsc::UnboundedReceiver<T>) {
    mpsc::unbounded_channel()
}

/// A server served on a listener the test chose (to restart on the same port).
struct Served {
    server: Server,
    task: JoinHandle<std::io::Result<()>>,
}

impl Served {
    fn start(server: Server, listener: TcpListener) -> Served {
        let s = server.clone();
        let task = tokio::spawn(async move { s.serve(listener).await });
        Served { server, task }
    }

    async fn stop(self) {
        self.server.shutdown().await;
        within(self.task)
            .await
            .expect("serve task")
            .expect("serve result");
    }
}

/// A server whose `note` handler reports its payload, `echo` answers its payload, and `news`
/// broadcasts can be sent through the returned handle.
fn notes_server(notes: mpsc::UnboundedSender<u32>) -> Server {
    Server::builder()
        .on("note", move |_socket: Socket, n: u32| {
            let _ = notes.send(n);
            async {}
        })
        .on("echo", |_socket: Socket, n: u32| async move { Json(n) })
        .on("kick", |socket: Socket, code: u16| async move {
            socket.close_with(CloseCode::new(code), "kicked");
        })
        .build()
        .expect("server")
}

// ---- acks, events, errors --------------------------------------------------------------------

#[tokio::test]
async fn acks_both_ways() {
    let (notes_tx, mut notes) = channel();
    let server = Server::builder()
        .on("add", |_socket: Socket, (a, b): (i64, i64)| async move {
            Json(a + b)
        })
        .on("note", move |_socket: Socket, n: u32| {
            let _ = notes_tx.send(n);
            async {}
        })
        // Server requests answered by the client's handlers' return values.
        .on("ask", |socket: Socket, q: String| async move {
            let answer: String = socket.emit_with_ack("question", &q).await?;
            Ok::<_, wsu::AckError>(Json(answer))
        })
        .on("ask-double", |socket: Socket, n: i32| async move {
            let doubled: i32 = socket.emit_with_ack("double", &n).await?;
            let unit: () = socket.emit_with_ack("unit", &()).await?;
            Ok::<_, wsu::AckError>(Json((doubled, unit)))
        })
        .on("shout", |socket: Socket, text: String| async move {
            socket.emit("unhandled", &text)?;
            Ok::<_, wsu::SendError>(())
        })
        .build()
        .expect("server");
    let ts = TestServer::start(server).await;
    let (any_tx, mut any) = channel();
    let client = Client::builder(ts.url())
        .on("question", |q: String| async move {
            Json(format!("answer to {q}"))
        })
        .on("double", |n: i32| async move { Ok::<_, String>(n * 2) })
        .on("unit", |_: ()| async {})
        .on_any(move |ns, event, data| {
            let data = data.map(|d| d.get().to_owned());
            let _ = any_tx.send((ns.to_owned(), event.to_owned(), data));
        })
        .connect()
        .await
        .expect("connect");
    assert!(client.is_connected());

    let sum: i64 = client.emit_with_ack("add", &(2, 3)).await.expect("ack");
    assert_eq!(sum, 5);
    let answer: String = client.emit_with_ack("ask", "life").await.expect("ack");
    assert_eq!(answer, "answer to life");
    let (doubled, ()): (i32, ()) = client.emit_with_ack("ask-double", &21).await.expect("ack");
    assert_eq!(doubled, 42);

    // A typed ack that does not decode into the requested type.
    let wrong = client.emit_with_ack::<_, String>("add", &(1, 2)).await;
    assert!(matches!(wrong, Err(ClientAckError::Decode(_))), "{wrong:?}");

    // Emit without ack, in order.
    for n in [7, 8, 9] {
        client.emit("note", &n).await.expect("emit");
    }
    assert_eq!(
        [
            next(&mut notes).await,
            next(&mut notes).await,
            next(&mut notes).await
        ],
        [7, 8, 9]
    );

    // An event without a handler goes to on_any.
    let () = client.emit_with_ack("shout", "hey").await.expect("ack");
    assert_eq!(
        next(&mut any).await,
        (
            "/".to_owned(),
            "unhandled".to_owned(),
            Some(r#""hey""#.to_owned())
        )
    );
    client.close("done").await;
    ts.stop().await;
}

#[tokio::test]
async fn server_errors_surface_typed() {
    let server = Server::builder()
        .on("register", |_socket: Socket, _nick: String| async move {
            Err::<(), _>(HandlerError::new("nickname taken").with_data(&json!({"field": "nick"})))
        })
        .on("add", |_socket: Socket, (a, b): (i64, i64)| async move {
            Json(a + b)
        })
        .on("trigger", |socket: Socket, _: ()| async move {
            socket.emit("boom", &5)?;
            Ok::<_, wsu::SendError>(())
        })
        .build()
        .expect("server");
    let ts = TestServer::start(server).await;
    let (errors_tx, mut errors) = channel();
    let client = Client::builder(ts.url())
        .on("boom", |n: i32| async move {
            Err::<(), _>(format!("cannot handle {n}"))
        })
        .on_error(move |e| {
            let _ = errors_tx.send(e);
        })
        .connect()
        .await
        .expect("connect");

    match client.emit_with_ack::<_, ()>("register", "ann").await {
        Err(e @ ClientAckError::Server { .. }) => {
            let ClientAckError::Server { message, .. } = &e else {
                unreachable!()
            };
            assert_eq!(message, "nickname taken");
            let body: Value = e.server_data().expect("a body").expect("json");
            assert_eq!(body, json!({"field": "nick"}));
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    match client.emit_with_ack::<_, i64>("add", "not a pair").await {
        Err(ClientAckError::Server { message, data }) => {
            assert!(message.starts_with("invalid payload: "), "{message}");
            assert!(data.is_none());
        }
        other => panic!("expected invalid payload, got {other:?}"),
    }
    match client.emit_with_ack::<_, ()>("nope", &()).await {
        Err(ClientAckError::Server { message, .. }) => assert_eq!(message, "unknown event"),
        other => panic!("expected unknown event, got {other:?}"),
    }

    // Without an ackId, the server's error goes to on_error.
    client.emit("nope", &1).await.expect("emit");
    match next(&mut errors).await {
        ErrorEvent::Server {
            namespace,
            event,
            message,
            data,
        } => {
            assert_eq!(
                (namespace.as_str(), event.as_deref(), message.as_str()),
                ("/", Some("nope"), "unknown event")
            );
            assert!(data.is_none());
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    // A client handler failing on an event sent without an ackId.
    let () = client.emit_with_ack("trigger", &()).await.expect("ack");
    match next(&mut errors).await {
        ErrorEvent::Handler {
            namespace,
            event,
            error,
        } => {
            assert_eq!((namespace.as_str(), event.as_str()), ("/", "boom"));
            assert_eq!(error.message(), "cannot handle 5");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }

    // Names are checked before anything is sent.
    assert!(matches!(
        client.emit("error", &()).await,
        Err(ClientError::InvalidName(_))
    ));
    assert!(matches!(
        client.of("chat").emit("x", &()).await,
        Err(ClientError::InvalidName(_))
    ));
    assert!(matches!(
        client.join("").await,
        Err(ClientAckError::Send(ClientError::InvalidName(_)))
    ));
    client.close("done").await;
    ts.stop().await;
}

// ---- rooms and namespaces --------------------------------------------------------------------

#[tokio::test]
async fn rooms_and_namespaces() {
    let server = Server::builder()
        .namespace("/chat", |ns| {
            ns.on("where", |socket: Socket, _: ()| async move {
                Json(socket.namespace().to_owned())
            })
        })
        .build()
        .expect("server");
    let ts = TestServer::start(server.clone()).await;
    let (news_tx, mut news) = channel();
    let chat_tx = news_tx.clone();
    let client = Client::builder(ts.url())
        .on("news", move |s: String| {
            let _ = news_tx.send(s);
            async {}
        })
        .on_ns("/chat", "news", move |s: String| {
            let _ = chat_tx.send(format!("chat: {s}"));
            async {}
        })
        .connect()
        .await
        .expect("connect");

    client.join("lobby").await.expect("join");
    assert_eq!(client.rooms(), ["lobby"]);
    assert_eq!(server.room_members("/", "lobby").len(), 1);
    server
        .to("lobby")
        .emit("news", "for the lobby")
        .expect("broadcast");
    assert_eq!(next(&mut news).await, "for the lobby");

    client.leave("lobby").await.expect("leave");
    assert!(client.rooms().is_empty());
    assert!(server.room_members("/", "lobby").is_empty());
    server
        .to("lobby")
        .emit("news", "after leaving")
        .expect("broadcast");
    server.emit("news", "to everyone").expect("broadcast");
    // Per-connection order: had the lobby broadcast arrived, it would come first.
    assert_eq!(next(&mut news).await, "to everyone");

    let chat = client.of("/chat");
    client
        .join_namespace("/chat")
        .await
        .expect("join namespace");
    let ns: String = chat.emit_with_ack("where", &()).await.expect("ack");
    assert_eq!(ns, "/chat");
    server.of("/chat").emit("news", "hello").expect("broadcast");
    assert_eq!(next(&mut news).await, "chat: hello");
    chat.join("r1").await.expect("join room");
    assert_eq!(chat.rooms(), ["r1"]);
    server
        .of("/chat")
        .to("r1")
        .emit("news", "r1 only")
        .expect("broadcast");
    assert_eq!(next(&mut news).await, "chat: r1 only");
    assert_eq!(client.namespaces(), ["/", "/chat"]);

    client
        .leave_namespace("/chat")
        .await
        .expect("leave namespace");
    assert_eq!(client.namespaces(), ["/"]);
    assert!(chat.rooms().is_empty());
    match chat.emit_with_ack::<_, String>("where", &()).await {
        Err(ClientAckError::Server { message, .. }) => assert_eq!(message, "namespace not joined"),
        other => panic!("expected namespace not joined, got {other:?}"),
    }
    match client.join_namespace("/nope").await {
        Err(ClientAckError::Server { message, .. }) => assert_eq!(message, "unknown namespace"),
        other => panic!("expected unknown namespace, got {other:?}"),
    }
    assert_eq!(client.namespaces(), ["/"], "a refused join is forgotten");
    client.close("done").await;
    ts.stop().await;
}

// ---- reconnection ----------------------------------------------------------------------------

#[tokio::test]
async fn reconnects_after_server_close_and_rejoins() {
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = connects.clone();
    let server = Server::builder()
        .on_connect(move |_socket: Socket| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, String>(()) }
        })
        .on("kick", |socket: Socket, _: ()| async move {
            socket.close_with(CloseCode::new(4000), "kicked");
        })
        .on("drop-me", |socket: Socket, _: ()| async move {
            socket.close_with(CloseCode::new(4001), "dropping");
            // Never answers: the client's request is pending when the connection drops.
            std::future::pending::<()>().await
        })
        .namespace("/chat", |ns| ns)
        .build()
        .expect("server");
    let ts = TestServer::start(server.clone()).await;
    let (news_tx, mut news) = channel();
    let chat_tx = news_tx.clone();
    let client = Client::builder(ts.url())
        .reconnect(fast())
        .on("news", move |s: String| {
            let _ = news_tx.send(s);
            async {}
        })
        .on_ns("/chat", "news", move |s: String| {
            let _ = chat_tx.send(format!("chat: {s}"));
            async {}
        })
        .connect()
        .await
        .expect("connect");
    client.join("lobby").await.expect("join");
    client
        .join_namespace("/chat")
        .await
        .expect("join namespace");
    client.of("/chat").join("r").await.expect("join room");
    let mut events = client.events();

    client.emit("kick", &()).await.expect("emit");
    assert_eq!(
        event(&mut events).await,
        StateEvent::Disconnected {
            code: Some(4000),
            reason: "kicked".to_owned()
        }
    );
    match event(&mut events).await {
        StateEvent::Reconnecting { attempt: 1, delay } => assert!(delay <= ms(50), "{delay:?}"),
        other => panic!("expected reconnecting, got {other:?}"),
    }
    assert_eq!(event(&mut events).await, StateEvent::Connected);
    assert!(client.is_connected());
    assert_eq!(connects.load(Ordering::SeqCst), 2);

    // Rejoined: broadcasts to the rooms reach the new connection.
    server.to("lobby").emit("news", "after").expect("broadcast");
    assert_eq!(next(&mut news).await, "after");
    server
        .of("/chat")
        .to("r")
        .emit("news", "room r")
        .expect("broadcast");
    assert_eq!(next(&mut news).await, "chat: room r");

    // A request pending when the connection drops fails with Disconnected (and is not re-sent).
    let pending = client.emit_with_ack::<_, ()>("drop-me", &()).await;
    assert!(
        matches!(pending, Err(ClientAckError::Disconnected)),
        "{pending:?}"
    );
    assert_eq!(
        event(&mut events).await,
        StateEvent::Disconnected {
            code: Some(4001),
            reason: "dropping".to_owned()
        }
    );
    until_connected(&mut events).await;
    assert_eq!(connects.load(Ordering::SeqCst), 3);
    client.close("done").await;
    ts.stop().await;
}

#[tokio::test]
async fn reconnects_after_server_restart_and_sends_the_offline_buffer_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let (notes_tx, mut notes) = channel();
    let first = Served::start(notes_server(notes_tx.clone()), listener);
    let (news_tx, mut news) = channel();
    let client = Client::builder(format!("ws://{addr}/ws"))
        .reconnect(fast())
        .on("news", move |s: String| {
            let _ = news_tx.send(s);
            async {}
        })
        .connect()
        .await
        .expect("connect");
    client.join("lobby").await.expect("join");
    let mut events = client.events();

    first.stop().await;
    assert_eq!(
        event(&mut events).await,
        StateEvent::Disconnected {
            code: Some(1001),
            reason: "server shutting down".to_owned()
        }
    );
    assert!(matches!(
        event(&mut events).await,
        StateEvent::Reconnecting { attempt: 1, .. }
    ));
    assert!(!client.is_connected());

    // Offline: buffered, in order, requests included.
    for n in [1, 2, 3] {
        client.emit("note", &n).await.expect("buffered");
    }
    let asking = client.clone();
    let answer = tokio::spawn(async move { asking.emit_with_ack::<_, u32>("echo", &9).await });
    client.emit("note", &4).await.expect("buffered");
    assert!(matches!(
        client.ping().await,
        Err(ClientAckError::Disconnected)
    ));

    // A new server on the same port.
    let listener = TcpListener::bind(addr)
        .await
        .expect("bind the same port again");
    let second = Served::start(notes_server(notes_tx), listener);
    until_connected(&mut events).await;
    for n in [1, 2, 3, 4] {
        assert_eq!(next(&mut notes).await, n);
    }
    let echoed = within(answer)
        .await
        .expect("task")
        .expect("answered after reconnecting");
    assert_eq!(echoed, 9);

    // The room was joined again on the new server.
    assert_eq!(second.server.room_members("/", "lobby").len(), 1);
    second
        .server
        .to("lobby")
        .emit("news", "back")
        .expect("broadcast");
    assert_eq!(next(&mut news).await, "back");
    client.close("done").await;
    second.stop().await;
}

#[tokio::test]
async fn buffer_full_while_disconnected() {
    let (notes_tx, _notes) = channel();
    let ts = TestServer::start(notes_server(notes_tx)).await;
    let client = Client::builder(ts.url())
        // Stay disconnected for the whole test.
        .reconnect(Reconnect {
            initial_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
            jitter: 0.0,
            ..Reconnect::default()
        })
        .offline_buffer(2)
        .connect()
        .await
        .expect("connect");
    let mut events = client.events();
    client.emit("kick", &4002u16).await.expect("emit");
    assert!(matches!(
        event(&mut events).await,
        StateEvent::Disconnected {
            code: Some(4002),
            ..
        }
    ));
    assert_eq!(
        event(&mut events).await,
        StateEvent::Reconnecting {
            attempt: 1,
            delay: Duration::from_secs(60)
        }
    );
    assert_eq!(
        *client.state().borrow(),
        ConnectionState::Reconnecting { attempt: 1 }
    );
    client.emit("note", &1).await.expect("buffered");
    client.emit("note", &2).await.expect("buffered");
    assert!(matches!(
        client.emit("note", &3).await,
        Err(ClientError::BufferFull)
    ));
    assert!(matches!(
        client.emit_with_ack::<_, u32>("echo", &3).await,
        Err(ClientAckError::Send(ClientError::BufferFull))
    ));

    // Closing while waiting to reconnect.
    within(client.close("never mind")).await;
    assert_eq!(*client.state().borrow(), ConnectionState::Closed);
    assert!(matches!(
        client.emit("note", &4).await,
        Err(ClientError::Closed)
    ));
    ts.stop().await;
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (notes_tx, _notes) = channel();
    let served = Served::start(notes_server(notes_tx), listener);
    let (states_tx, mut states) = channel();
    let client = Client::builder(format!("ws://{addr}/ws"))
        .reconnect(Reconnect {
            max_attempts: Some(2),
            ..fast()
        })
        .on_state(move |e| {
            let _ = states_tx.send(e.clone());
        })
        .connect()
        .await
        .expect("connect");
    assert_eq!(next(&mut states).await, StateEvent::Connected);
    served.stop().await;
    assert!(matches!(
        next(&mut states).await,
        StateEvent::Disconnected {
            code: Some(1001),
            ..
        }
    ));
    for expected in [1, 2] {
        match next(&mut states).await {
            StateEvent::Reconnecting { attempt, .. } => assert_eq!(attempt, expected),
            other => panic!("expected attempt {expected}, got {other:?}"),
        }
    }
    assert_eq!(next(&mut states).await, StateEvent::GaveUp);
    assert_eq!(*client.state().borrow(), ConnectionState::Closed);
    assert!(matches!(
        client.emit("note", &1).await,
        Err(ClientError::Closed)
    ));
    assert!(matches!(
        client.emit_with_ack::<_, u32>("echo", &1).await,
        Err(ClientAckError::Closed)
    ));
}

#[tokio::test]
async fn no_reconnect_after_refusal_or_normal_close() {
    let server = Server::builder()
        .on("ban", |socket: Socket, _: ()| async move {
            socket.close_with(CloseCode::REFUSED, "banned");
        })
        .on("bye", |socket: Socket, _: ()| async move {
            socket.close("see you");
        })
        .build()
        .expect("server");
    let ts = TestServer::start(server).await;

    for (event_name, code, reason) in [("ban", 4500, "banned"), ("bye", 1000, "see you")] {
        let client = Client::builder(ts.url())
            .reconnect(fast())
            .connect()
            .await
            .expect("connect");
        let mut events = client.events();
        client.emit(event_name, &()).await.expect("emit");
        assert_eq!(
            event(&mut events).await,
            StateEvent::Disconnected {
                code: Some(code),
                reason: reason.to_owned()
            }
        );
        wait_state(&client, ConnectionState::Closed).await;
        // No reconnection was scheduled (it would be reported before the client could close).
        assert!(matches!(
            events.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        assert!(matches!(
            client.emit("x", &()).await,
            Err(ClientError::Closed)
        ));
    }

    // Unless configured for a normal close.
    let client = Client::builder(ts.url())
        .reconnect(Reconnect {
            on_normal_close: true,
            ..fast()
        })
        .connect()
        .await
        .expect("connect");
    let mut events = client.events();
    client.emit("bye", &()).await.expect("emit");
    assert!(matches!(
        event(&mut events).await,
        StateEvent::Disconnected {
            code: Some(1000),
            ..
        }
    ));
    until_connected(&mut events).await;
    client.close("done").await;
    ts.stop().await;
}

#[tokio::test]
async fn credentials_and_refused_connection() {
    let server = Server::builder()
        .on_connect(|socket: Socket| async move {
            let key = socket
                .request()
                .headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match (socket.query("token"), key.as_deref()) {
                (Some("s%203cret"), Some("k1")) => Ok(()),
                _ => Err("bad credentials"),
            }
        })
        .build()
        .expect("server");
    let ts = TestServer::start(server).await;

    let client = Client::builder(ts.url())
        .query("token", "s 3cret")
        .header("x-api-key", "k1")
        .connect()
        .await
        .expect("accepted");
    client.close("done").await;

    match Client::builder(ts.url())
        .query("token", "wrong")
        .connect()
        .await
    {
        Err(ClientError::Refused { code, reason }) => {
            assert_eq!((code, reason.as_str()), (Some(4500), "bad credentials"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The wrong path: an HTTP refusal.
    let url = format!("ws://{}/nope", ts.addr);
    assert!(matches!(
        Client::builder(url).connect().await,
        Err(ClientError::Http(404))
    ));
    // Nothing listening.
    let unused = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", unused.local_addr().expect("addr"));
    drop(unused);
    assert!(matches!(
        Client::builder(url).connect().await,
        Err(ClientError::Connect(_))
    ));
    // Bad configuration.
    assert!(matches!(
        Client::builder(ts.url())
            .header("bad header", "x")
            .connect()
            .await,
        Err(ClientError::InvalidRequest(_))
    ));
    assert!(matches!(
        Client::builder(ts.url())
            .on("e", |_: ()| async {})
            .on("e", |_: ()| async {})
            .connect()
            .await,
        Err(ClientError::DuplicateHandler { .. })
    ));
    ts.stop().await;
}

#[tokio::test]
async fn ping_and_close() {
    let (reasons_tx, mut reasons) = channel();
    let server = Server::builder()
        .on_disconnect(move |_socket: Socket, reason: DisconnectReason| {
            let _ = reasons_tx.send(reason);
            async {}
        })
        .build()
        .expect("server");
    let ts = TestServer::start(server).await;
    let client = Client::builder(ts.url())
        .reconnect(fast())
        .connect()
        .await
        .expect("connect");
    let rtt = client.ping().await.expect("pong");
    assert!(rtt < Duration::from_secs(5), "{rtt:?}");
    let mut events = client.events();
    let other = client.clone();
    client.close("done").await;
    assert_eq!(*other.state().borrow(), ConnectionState::Closed);
    assert_eq!(
        event(&mut events).await,
        StateEvent::Disconnected {
            code: Some(1000),
            reason: "done".to_owned()
        }
    );
    match next(&mut reasons).await {
        DisconnectReason::ClientClosed { code, reason } => {
            assert_eq!((code, reason.as_str()), (CloseCode::NORMAL, "done"));
        }
        other => panic!("expected a client close, got {other:?}"),
    }
    assert!(matches!(other.ping().await, Err(ClientAckError::Closed)));
    // Closing again does nothing.
    within(other.close("again")).await;
    ts.stop().await;
}

// ---- the exact frames, against a scripted server ---------------------------------------------

type ServerWs = WebSocketStream<TcpStream>;

async fn accept(listener: &TcpListener) -> ServerWs {
    let (tcp, _) = within(listener.accept()).await.expect("accept");
    within(tokio_tungstenite::accept_async(tcp))
        .await
        .expect("websocket handshake")
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

async fn send(ws: &mut ServerWs, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

#[tokio::test]
async fn wire_frames_rejoin_order_and_retries() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let connecting = tokio::spawn(
        Client::builder(url)
            .reconnect(fast())
            .ack_timeout(ms(300))
            .on("q", |n: i32| async move {
                if n > 0 {
                    Ok(Json(n * 10))
                } else {
                    Err(HandlerError::new("no").with_data(&json!({"n": n})))
                }
            })
            .connect(),
    );
    let mut ws = accept(&listener).await;
    // The acceptance probe.
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "join", "namespace": "/", "ackId": "1"})
    );
    send(
        &mut ws,
        json!({"type": "ack", "namespace": "/", "ackId": "1"}),
    )
    .await;
    let client = within(connecting).await.expect("task").expect("connect");
    let mut events = client.events();

    // Server requests answered from the handler's return value.
    send(
        &mut ws,
        json!({"type": "event", "namespace": "/", "event": "q", "data": 4, "ackId": "s1"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "ack", "namespace": "/", "event": "q", "data": 40, "ackId": "s1"})
    );
    send(
        &mut ws,
        json!({"type": "event", "namespace": "/", "event": "q", "data": -1, "ackId": "s2"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "error", "namespace": "/", "event": "q", "data": {"n": -1}, "ackId": "s2", "error": "no"})
    );
    send(
        &mut ws,
        json!({"type": "event", "namespace": "/", "event": "q", "data": "x", "ackId": "s3"}),
    )
    .await;
    let bad = recv(&mut ws).await;
    assert_eq!(bad["ackId"], "s3");
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid payload: ")),
        "{bad}"
    );
    send(
        &mut ws,
        json!({"type": "event", "namespace": "/", "event": "other", "ackId": "s4"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "error", "namespace": "/", "event": "other", "ackId": "s4", "error": "unknown event"})
    );

    // Retries carry fresh ack ids; the late answer to the first attempt is ignored.
    let retrying = client.clone();
    let retry = tokio::spawn(async move {
        retrying
            .emit_with_ack_retry::<_, String>("slow", &5, 1)
            .await
    });
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "event", "namespace": "/", "event": "slow", "data": 5, "ackId": "2"})
    );
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "event", "namespace": "/", "event": "slow", "data": 5, "ackId": "3"})
    );
    send(
        &mut ws,
        json!({"type": "ack", "namespace": "/", "ackId": "2", "data": "late"}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "ack", "namespace": "/", "ackId": "3", "data": "fresh"}),
    )
    .await;
    assert_eq!(within(retry).await.expect("task").expect("ack"), "fresh");

    // Memberships, then a reconnection: namespaces first, then rooms, then the buffer.
    let joining = client.clone();
    let join = tokio::spawn(async move { joining.join("lobby").await });
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "join", "namespace": "/", "room": "lobby", "ackId": "4"})
    );
    send(
        &mut ws,
        json!({"type": "ack", "namespace": "/", "ackId": "4"}),
    )
    .await;
    within(join).await.expect("task").expect("joined");
    let joining = client.clone();
    let join = tokio::spawn(async move { joining.join_namespace("/a").await });
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "join", "namespace": "/a", "ackId": "5"})
    );
    send(
        &mut ws,
        json!({"type": "ack", "namespace": "/a", "ackId": "5"}),
    )
    .await;
    within(join).await.expect("task").expect("joined");

    ws.close(Some(CloseFrame {
        code: 4002.into(),
        reason: "restart".into(),
    }))
    .await
    .expect("close");
    assert_eq!(
        event(&mut events).await,
        StateEvent::Disconnected {
            code: Some(4002),
            reason: "restart".to_owned()
        }
    );
    // The state changed before the event was reported.
    assert_eq!(
        *client.state().borrow(),
        ConnectionState::Reconnecting { attempt: 1 }
    );
    client.emit("buffered", &1).await.expect("buffered");
    let mut ws = accept(&listener).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "join", "namespace": "/", "ackId": "6"})
    );
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "join", "namespace": "/a", "ackId": "7"})
    );
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "join", "namespace": "/", "room": "lobby", "ackId": "8"})
    );
    // Nothing else is sent before the rejoins are answered: the next frame is our pong.
    send(&mut ws, json!({"type": "ping", "namespace": "/probe"})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "pong", "namespace": "/probe"})
    );
    for id in ["6", "7", "8"] {
        send(
            &mut ws,
            json!({"type": "ack", "namespace": "/", "ackId": id}),
        )
        .await;
    }
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "event", "namespace": "/", "event": "buffered", "data": 1})
    );
    until_connected(&mut events).await;

    // Closing sends 1000 with the reason.
    let closing = client.clone();
    let close = tokio::spawn(async move { closing.close("bye").await });
    match within(ws.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (1000, "bye")
            );
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // Answer the close handshake.
    let _ = within(ws.next()).await;
    within(close).await.expect("task");
}

// ---- bursts and faults -----------------------------------------------------------------------

/// Thousands of server requests at once, each answered by a client handler: the client's
/// connection task must keep writing answers while its event queue is full (it once waited on
/// the handler task while the handler task waited on it).
#[tokio::test]
async fn a_burst_of_server_requests_is_all_answered() {
    const REQUESTS: u64 = 5_000;
    let (sockets_tx, mut sockets) = channel();
    let server = Server::builder()
        .max_pending_acks(REQUESTS as usize)
        .max_queued(2 * REQUESTS as usize, 64 << 20)
        .ack_timeout(Duration::from_secs(60))
        .on("hello", move |socket: Socket, _: ()| {
            let _ = sockets_tx.send(socket);
            async {}
        })
        .on("echo", |_socket: Socket, n: u32| async move { Json(n) })
        .build()
        .expect("server");
    let ts = TestServer::start(server).await;
    // The handlers wait until the server has written far more requests than the client queues,
    // so that the queue is full when they start answering.
    let (gate_tx, gate) = tokio::sync::watch::channel(false);
    let client = Client::builder(ts.url())
        .on("square", move |n: u64| {
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Json(n * n)
            }
        })
        .connect()
        .await
        .expect("connect");
    client.emit("hello", &()).await.expect("emit");
    let socket: Socket = next(&mut sockets).await;

    let flood = tokio::spawn(async move {
        futures_util::future::join_all((0..REQUESTS).map(|n| {
            let socket = socket.clone();
            async move { (n, socket.emit_with_ack::<_, u64>("square", &n).await) }
        }))
        .await
    });
    wsu_tests::wait_until(|| ts.server.stats().messages_out >= 1_000).await;
    gate_tx.send_replace(true);
    let answers = tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("the client stopped answering: deadlock")
        .expect("flood task");
    assert_eq!(answers.len(), REQUESTS as usize);
    for (n, answer) in answers {
        match answer {
            Ok(square) => assert_eq!(square, n * n),
            Err(e) => panic!("request {n} failed: {e:?}"),
        }
    }

    // Still responsive both ways.
    let echoed: u32 = client.emit_with_ack("echo", &7).await.expect("echo");
    assert_eq!(echoed, 7);
    assert_eq!(ts.server.stats().pending_acks, 0);
    client.close("done").await;
    ts.stop().await;
}

/// A payload whose decoding panics, and an answer whose encoding panics.
struct Bomb;

impl<'de> serde::Deserialize<'de> for Bomb {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("boom in decode")
    }
}

impl serde::Serialize for Bomb {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("boom in encode")
    }
}

/// Panics in client handlers and callbacks are contained: requests get an `internal error`
/// answer, events without `ackId` reach `on_error`, and the client keeps working.
#[tokio::test]
async fn panics_in_client_handlers_and_callbacks_are_contained() {
    let server = Server::builder()
        // Asks the client `event` with `n` and reports what came back.
        .on(
            "ask",
            |socket: Socket, (event, n): (String, u32)| async move {
                Json(match socket.emit_with_ack::<_, Value>(&event, &n).await {
                    Ok(v) => json!({ "ok": v }),
                    Err(wsu::AckError::Rejected(e)) => json!({ "rejected": e.message() }),
                    Err(e) => json!({ "failed": e.to_string() }),
                })
            },
        )
        .on(
            "tell",
            |socket: Socket, (event, n): (String, u32)| async move {
                socket.emit(&event, &n)?;
                Ok::<_, wsu::SendError>(())
            },
        )
        .build()
        .expect("server");
    let ts = TestServer::start(server).await;
    let (errors_tx, mut errors) = channel();
    let (any_tx, mut any) = channel();
    let states = Arc::new(AtomicUsize::new(0));
    let client = Client::builder(ts.url())
        .on("call", |n: u32| {
            assert_ne!(n, 0, "boom in the call");
            async move { Json(n) }
        })
        .on("poll", |n: u32| async move {
            assert_ne!(n, 0, "boom in the future");
            Json(n)
        })
        .on("decode", |_: Bomb| async {})
        .on("encode", |_: u32| async { Json(Bomb) })
        .on("fine", |n: u32| async move { Json(n + 1) })
        .on_error(move |e| {
            let _ = errors_tx.send(e);
            panic!("boom in on_error");
        })
        .on_any(move |_ns, event, _data| {
            let _ = any_tx.send(event.to_owned());
            panic!("boom in on_any");
        })
        .on_state({
            let states = states.clone();
            move |_| {
                states.fetch_add(1, Ordering::SeqCst);
                panic!("boom in on_state");
            }
        })
        .connect()
        .await
        .expect("connect despite a panicking on_state");
    assert_eq!(states.load(Ordering::SeqCst), 1);

    let ask = |event: &'static str, n: u32| {
        let client = client.clone();
        async move {
            client
                .emit_with_ack::<_, Value>("ask", &(event, n))
                .await
                .expect("ask")
        }
    };
    let panicked = json!({ "rejected": "internal error" });
    for event in ["call", "poll", "decode", "encode"] {
        assert_eq!(ask(event, 0).await, panicked, "{event}");
        assert_eq!(ask("fine", 1).await, json!({ "ok": 2 }), "after {event}");
    }
    assert_eq!(ask("call", 5).await, json!({ "ok": 5 }));
    assert_eq!(ask("poll", 6).await, json!({ "ok": 6 }));

    // Without an ackId the failure goes to on_error (which panics too).
    let () = client
        .emit_with_ack("tell", &("poll", 0))
        .await
        .expect("tell");
    match next(&mut errors).await {
        ErrorEvent::Handler {
            namespace,
            event,
            error,
        } => {
            assert_eq!((namespace.as_str(), event.as_str()), ("/", "poll"));
            assert_eq!(error.message(), "internal error");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    // An event without a handler reaches on_any (which panics).
    let () = client
        .emit_with_ack("tell", &("nobody", 1))
        .await
        .expect("tell");
    assert_eq!(next(&mut any).await, "nobody");

    // Both tasks are alive: server requests and client requests still work.
    assert_eq!(ask("fine", 41).await, json!({ "ok": 42 }));
    assert!(client.is_connected());
    client.close("done").await;
    assert_eq!(
        states.load(Ordering::SeqCst),
        2,
        "connected, then disconnected"
    );
    ts.stop().await;
}
