//! Shared helpers for the end-to-end tests: start a server on `127.0.0.1:0`, and a raw
//! WebSocket client that speaks the wire protocol by hand (as a seed client would).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wsu::Server;

/// How long a test waits for an expected frame before failing (never used to synchronise).
pub const WAIT: Duration = Duration::from_secs(5);

/// A running test server.
pub struct TestServer {
    /// The server handle.
    pub server: Server,
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Serve `server` on an ephemeral port.
    pub async fn start(server: Server) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let s = server.clone();
        let task = tokio::spawn(async move { s.serve(listener).await });
        TestServer { server, addr, task }
    }

    /// The WebSocket URL of the server.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Connect a raw client.
    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// Shut down gracefully and wait for `serve` to return.
    pub async fn stop(self) {
        self.server.shutdown().await;
        let r = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("serve returns after shutdown");
        r.expect("serve task").expect("serve result");
    }
}

/// A raw protocol client.
pub struct Client {
    /// The underlying WebSocket.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended, as seen by the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code and reason.
    Frame(u16, String),
    /// The TCP connection dropped without a close frame.
    Dropped,
}

impl Client {
    /// Connect to a URL.
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = connect_async(url).await.expect("connect");
        Client { ws }
    }

    /// Send a JSON value as a text frame.
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// Send raw text.
    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::text(s.to_owned()))
            .await
            .expect("send");
    }

    /// Send a message.
    pub async fn send_msg(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// The next JSON message (pings and pongs skipped). Panics after [`WAIT`] or on close.
    pub async fn recv(&mut self) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return serde_json::from_str(&t).expect("server sent JSON");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a message, got {other:?}"),
                }
            }
        })
        .await
        .expect("timed out waiting for a message")
    }

    /// The next message whose `type` is `ty` and (if given) whose `event` is `event`, skipping others.
    pub async fn recv_where(&mut self, ty: &str, event: Option<&str>) -> Value {
        loop {
            let m = self.recv().await;
            if m["type"] == ty && event.is_none_or(|e| m["event"] == e) {
                return m;
            }
        }
    }

    /// Wait for the connection to end; returns how.
    pub async fn closed(&mut self) -> Closed {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                        return Closed::Frame(u16::from(code), reason.to_string());
                    }
                    Some(Ok(Message::Close(None))) => return Closed::Frame(1005, String::new()),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Closed::Dropped,
                }
            }
        })
        .await
        .expect("timed out waiting for the close")
    }

    /// Assert that nothing arrives before a ping round trip completes: send a JSON ping and check
    /// the next message is its pong.
    pub async fn expect_quiet(&mut self) {
        self.send(serde_json::json!({"type": "ping", "namespace": "/quiet-check"}))
            .await;
        let m = self.recv().await;
        assert_eq!(
            m,
            serde_json::json!({"type": "pong", "namespace": "/quiet-check"}),
            "unexpected message"
        );
    }
}
