//! The `hello` frame (PROTOCOL.md §3.1): the first frame of every connection by default, absent
//! with `ServerBuilder::hello(false)`.

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wsu::Server;
use wsu_tests::{TestServer, WAIT};

async fn first_text(ts: &TestServer) -> Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(ts.url())
        .await
        .expect("connect");
    use futures_util::SinkExt;
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("frame") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("json"),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn hello_comes_first_with_id_versions_and_limits() {
    let server = Server::builder()
        .collect_registered(false)
        .hello(true)
        .rate_limit(20.0, 40.0)
        .max_message_size(1000)
        .build()
        .expect("build");
    let ts = TestServer::start(server.clone()).await;
    let hello = first_text(&ts).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["namespace"], "/");
    let d = &hello["data"];
    assert_eq!(d["protocol"], 2);
    assert_eq!(d.get("token"), None, "no token without recovery");
    assert_eq!(d["server"], format!("wsu/{}", env!("CARGO_PKG_VERSION")));
    let sid = wsu::SocketId::parse(d["sid"].as_str().expect("sid")).expect("an id");
    assert_eq!(server.sockets(), vec![sid]);
    assert_eq!(
        d["limits"],
        json!({"maxMessageSize": 1000, "ackTimeoutMs": 5000, "pingIntervalMs": 15000,
               "readTimeoutMs": 30000, "maxPendingAcks": 128, "maxPendingRequests": 64,
               "rateLimit": {"perSecond": 20.0, "burst": 40.0}})
    );
    ts.stop().await;
}

#[tokio::test]
async fn hello_is_on_by_default() {
    assert!(wsu::Config::default().hello);
    let server = Server::builder()
        .collect_registered(false)
        .build()
        .expect("build");
    let ts = TestServer::start(server.clone()).await;
    let hello = first_text(&ts).await;
    assert_eq!(hello["type"], "hello");
    let sid = wsu::SocketId::parse(hello["data"]["sid"].as_str().expect("sid")).expect("an id");
    assert_eq!(server.sockets(), vec![sid]);
    assert_eq!(
        hello["data"]["limits"],
        json!({"maxMessageSize": 65536, "ackTimeoutMs": 5000, "pingIntervalMs": 15000,
               "readTimeoutMs": 30000, "maxPendingAcks": 128, "maxPendingRequests": 64,
               "rateLimit": null})
    );
    ts.stop().await;
}

/// For seed clients that fail on a message type they do not know.
#[tokio::test]
async fn hello_false_turns_it_off() {
    let server = Server::builder()
        .collect_registered(false)
        .hello(false)
        .build()
        .expect("build");
    let ts = TestServer::start(server.clone()).await;
    assert_eq!(
        first_text(&ts).await,
        json!({"type": "pong", "namespace": "/"})
    );
    ts.stop().await;
    // Only the pong was sent.
    assert_eq!(server.stats().messages_out, 1);
}
