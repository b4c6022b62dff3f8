//! The seed's example exchange, message by message (`seed-protocol.md` §3 and §8).

use serde_json::json;
use wsu::{HandlerError, Json, Server, Socket};
use wsu_tests::TestServer;

fn seed_server() -> Server {
    Server::builder()
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

#[tokio::test]
async fn seed_client_sequence_gets_the_seed_replies() {
    let server = TestServer::start(seed_server()).await;
    let mut other = server.client().await;
    other.expect_quiet().await;
    let mut client = server.client().await;

    client
        .send(json!({"type": "join", "namespace": "/", "room": "lobby"}))
        .await;
    client
        .send(json!({
            "type": "event", "namespace": "/", "event": "chat", "room": "lobby",
            "data": {"user": "example-client", "message": "hello world"}, "ackId": "client-ack-1"
        }))
        .await;
    let ack = client.recv().await;
    assert_eq!(
        ack,
        json!({"type": "ack", "namespace": "/", "event": "chat", "data": {"status": "ok"}, "ackId": "client-ack-1"})
    );
    let got = other.recv().await;
    assert_eq!(
        got,
        json!({"type": "event", "namespace": "/", "event": "chat", "data": {"user": "example-client", "message": "hello world"}})
    );
    client.send(json!({"type": "ping"})).await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "namespace": "/"})
    );

    client
        .send(json!({"type": "event", "namespace": "/x", "event": "chat", "data": {}}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "error", "namespace": "/x", "event": "chat", "error": "namespace not joined"})
    );
    client.send(json!({"type": "bogus"})).await;
    assert_eq!(
        client.recv().await,
        json!({"type": "error", "namespace": "/", "error": "unknown message type"})
    );
    server.stop().await;
}
