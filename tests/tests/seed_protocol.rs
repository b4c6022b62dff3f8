//! The seed's example exchange, message by message (`seed-protocol.md` §3 and §8): exactly the
//! seed's frames with `hello(false)` (what a strict seed client needs), and the same after the
//! `hello` frame by default (PROTOCOL.md §3.1). Frames are read here without the shared helpers,
//! which skip the hello.

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wsu::{HandlerError, Json, Server, Socket};
use wsu_tests::{Client, TestServer, WAIT};

fn seed_server(hello: bool) -> Server {
    Server::builder()
        .hello(hello)
        .on(
            "chat",
            |socket: Socket, data: Box<serde_json::value::RawValue>| async move {
                #[derive(serde::Deserialize, serde::Serialize)]
                struct Chat {
                    user: String,
                    message: String,
                }
                let msg: Chat = match serde_json::from_str(data.get()) {
                    Ok(m) => m,
                    Err(e) => {
                        socket
                            .emit("error", &json!({"error": "invalid payload"}))
                            .map_err(|e| HandlerError::new(e.to_string()))?;
                        return Err(HandlerError::new(format!("invalid payload: {e}")));
                    }
                };
                socket
                    .broadcast()
                    .emit("chat", &msg)
                    .map_err(|e| HandlerError::new(e.to_string()))?;
                Ok(Json(json!({"status": "ok"})))
            },
        )
        .build()
        .expect("build")
}

/// The next text message as JSON, the `hello` included (WebSocket pings and pongs skipped).
async fn next_text(c: &mut Client) -> Value {
    loop {
        match tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// A connected client, past its hello when `hello` is on. With it off, the first message it
/// gets is the pong to its first ping: no hello.
async fn seed_client(server: &TestServer, hello: bool) -> Client {
    let mut c = server.client().await;
    if hello {
        assert_eq!(next_text(&mut c).await["type"], "hello");
    }
    c.send(json!({"type": "ping", "namespace": "/quiet-check"}))
        .await;
    assert_eq!(
        next_text(&mut c).await,
        json!({"type": "pong", "namespace": "/quiet-check"})
    );
    c
}

/// Strict seed clients: nothing but the seed's replies.
#[tokio::test]
async fn seed_client_sequence_gets_the_seed_replies() {
    seed_sequence(false).await;
}

/// By default: the hello, then the seed's replies.
#[tokio::test]
async fn seed_client_sequence_gets_the_seed_replies_after_the_hello() {
    seed_sequence(true).await;
}

async fn seed_sequence(hello: bool) {
    let server = TestServer::start(seed_server(hello)).await;
    let mut other = seed_client(&server, hello).await;
    let mut client = seed_client(&server, hello).await;

    client
        .send(json!({"type": "join", "namespace": "/", "room": "lobby"}))
        .await;
    client
        .send(json!({
            "type": "event", "namespace": "/", "event": "chat", "room": "lobby",
            "data": {"user": "example-client", "message": "hello world"}, "ackId": "client-ack-1"
        }))
        .await;
    let ack = next_text(&mut client).await;
    assert_eq!(
        ack,
        json!({"type": "ack", "namespace": "/", "event": "chat", "data": {"status": "ok"}, "ackId": "client-ack-1"})
    );
    let got = next_text(&mut other).await;
    assert_eq!(
        got,
        json!({"type": "event", "namespace": "/", "event": "chat", "data": {"user": "example-client", "message": "hello world"}})
    );
    client.send(json!({"type": "ping"})).await;
    assert_eq!(
        next_text(&mut client).await,
        json!({"type": "pong", "namespace": "/"})
    );

    client
        .send(json!({"type": "event", "namespace": "/x", "event": "chat", "data": {}}))
        .await;
    assert_eq!(
        next_text(&mut client).await,
        json!({"type": "error", "namespace": "/x", "event": "chat", "error": "namespace not joined"})
    );
    client.send(json!({"type": "bogus"})).await;
    assert_eq!(
        next_text(&mut client).await,
        json!({"type": "error", "namespace": "/", "error": "unknown message type"})
    );
    server.stop().await;
}
