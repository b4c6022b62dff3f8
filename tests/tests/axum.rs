//! A wsu server mounted on an axum route (`wsu::axum`, feature `axum`), next to a plain axum
//! route, served by `axum::serve` on 127.0.0.1:0.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use wsu::{DisconnectReason, Json, OriginPolicy, Server, Socket};
use wsu_tests::{Client, Closed, WAIT, next};

/// An extension inserted by an axum layer, to check that the WebSocket request keeps it.
#[derive(Clone)]
struct Marker(&'static str);

/// A wsu server on `/ws` and a plain axum handler on `/`, served by `axum::serve`.
struct AxumApp {
    server: Server,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AxumApp {
    async fn start(server: Server) -> AxumApp {
        AxumApp::start_with(server, |router| router).await
    }

    /// Start with extra layers applied to the router by `wrap`.
    async fn start_with(server: Server, wrap: impl FnOnce(Router) -> Router) -> AxumApp {
        let app = Router::new()
            .route("/", get(|| async { "hello from axum" }))
            .route("/ws", wsu::axum::upgrade(server.clone()))
            .layer(axum::Extension(Marker("from-axum")));
        let app = wrap(app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        AxumApp { server, addr, task }
    }

    async fn client(&self) -> Client {
        Client::connect(&format!("ws://{}/ws", self.addr)).await
    }

    async fn http(&self) -> Http {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        Http {
            tcp: BufReader::new(tcp),
            addr: self.addr,
        }
    }
}

impl Drop for AxumApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw HTTP/1.1 client on one keep-alive connection.
struct Http {
    tcp: BufReader<TcpStream>,
    addr: SocketAddr,
}

/// A response read by [`Http`]: status, lower-cased header names with their values, body.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Http {
    /// Send `METHOD path HTTP/1.1` with `Host` and `headers`, then read one response.
    async fn request(&mut self, method: &str, path: &str, headers: &[&str]) -> RawResponse {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.tcp
            .get_mut()
            .write_all(head.as_bytes())
            .await
            .expect("write request");
        tokio::time::timeout(WAIT, self.response())
            .await
            .expect("timed out waiting for the response")
    }

    async fn response(&mut self) -> RawResponse {
        let mut line = String::new();
        self.tcp.read_line(&mut line).await.expect("status line");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.tcp.read_line(&mut line).await.expect("header line");
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':').expect("header");
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            status,
            headers,
            body: String::new(),
        };
        let len: usize = response
            .header("content-length")
            .map_or(0, |v| v.parse().expect("content-length"));
        let mut body = vec![0u8; len];
        self.tcp.read_exact(&mut body).await.expect("body");
        response.body = String::from_utf8(body).expect("utf-8 body");
        response
    }
}

/// The headers of a valid upgrade request (RFC 6455's sample key).
const UPGRADE: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

fn app_server() -> Server {
    Server::builder()
        .on("whoami", |socket: Socket, (): ()| async move {
            Json(json!({
                "addr": socket.remote_addr().map(|a| a.to_string()),
                "marker": socket.request().extensions.get::<Marker>().map(|m| m.0),
                "path": socket.request().uri.path(),
            }))
        })
        .build()
        .expect("build")
}

#[tokio::test]
async fn client_gets_acks_and_pongs_over_the_axum_route() {
    let app = AxumApp::start(app_server()).await;
    let mut client = app.client().await;
    client.send(json!({"type": "ping"})).await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "namespace": "/"})
    );
    client.emit_ack("whoami", json!(null), "1").await;
    assert_eq!(
        client.recv().await,
        json!({
            "type": "ack", "namespace": "/", "event": "whoami", "ackId": "1",
            "data": {
                "addr": client.local_addr().to_string(),
                "marker": "from-axum",
                "path": "/ws",
            }
        })
    );
    let stats = app.server.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.handshakes_refused, 0);
}

#[tokio::test]
async fn upgrade_response_is_a_plain_101_with_the_accept_key() {
    let app = AxumApp::start(app_server()).await;
    let mut http = app.http().await;
    let response = http.request("GET", "/ws", &UPGRADE).await;
    assert_eq!(response.status, 101);
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(response.header("upgrade"), Some("websocket"));
    assert_eq!(response.header("connection"), Some("Upgrade"));
    assert_eq!(response.header("sec-websocket-extensions"), None);
    // The connection now speaks WebSocket. First comes the server's `hello` (PROTOCOL.md §3.1):
    // a final, unmasked text frame with a 16-bit length (it is over 125 bytes).
    let mut head = [0u8; 4];
    tokio::time::timeout(WAIT, http.tcp.read_exact(&mut head))
        .await
        .expect("timed out waiting for the hello")
        .expect("hello frame head");
    assert_eq!(head[..2], [0x81, 126]);
    let mut hello = vec![0u8; usize::from(u16::from_be_bytes([head[2], head[3]]))];
    tokio::time::timeout(WAIT, http.tcp.read_exact(&mut hello))
        .await
        .expect("timed out waiting for the hello")
        .expect("hello payload");
    let hello = String::from_utf8(hello).expect("UTF-8 hello");
    assert!(wsu_tests::is_hello(&hello), "{hello}");
    // Then a masked ping message (RFC 6455 §5.7 masking) gets its unmasked pong.
    let text = br#"{"type":"ping"}"#;
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).expect("short")];
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let tcp = http.tcp.get_mut();
    tcp.write_all(&frame).await.expect("frame");
    let pong = br#"{"type":"pong","namespace":"/"}"#;
    let mut got = vec![0u8; 2 + pong.len()];
    tokio::time::timeout(WAIT, http.tcp.read_exact(&mut got))
        .await
        .expect("timed out waiting for the pong")
        .expect("pong frame");
    assert_eq!(got[..2], [0x81, u8::try_from(pong.len()).expect("short")]);
    assert_eq!(&got[2..], pong);
}

#[tokio::test]
async fn refused_origin_gets_403() {
    let app = AxumApp::start(app_server()).await;
    let mut http = app.http().await;
    let mut headers = UPGRADE.to_vec();
    headers.push("Origin: http://evil.example");
    let response = http.request("GET", "/ws", &headers).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.body, "origin not allowed\n");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(response.header("content-length"), Some("19"));
    // The same page origin as the Host header is allowed (same-origin policy by default).
    let mut client = app.client().await;
    client.expect_quiet().await;
    let stats = app.server.stats();
    assert_eq!(stats.handshakes_refused, 1);
    assert_eq!(stats.connections, 1);
}

#[tokio::test]
async fn allow_listed_origin_is_accepted_over_axum() {
    let server = Server::builder()
        .origins(OriginPolicy::allow_list(["https://app.example"]).expect("valid"))
        .build()
        .expect("build");
    let app = AxumApp::start(server).await;
    let mut http = app.http().await;
    let mut headers = UPGRADE.to_vec();
    headers.push("Origin: https://APP.example:443");
    let response = http.request("GET", "/ws", &headers).await;
    assert_eq!(response.status, 101);
}

#[tokio::test]
async fn plain_get_of_the_websocket_route_gets_426_and_the_connection_stays_usable() {
    let app = AxumApp::start(app_server()).await;
    let mut http = app.http().await;
    let response = http.request("GET", "/ws", &[]).await;
    assert_eq!(response.status, 426);
    assert_eq!(response.body, "websocket upgrade required\n");
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert_eq!(response.header("connection"), None);
    // Same keep-alive connection: the other refusals, then a normal route.
    let mut post = UPGRADE.to_vec();
    post.push("Content-Length: 0");
    let response = http.request("POST", "/ws", &post).await;
    assert_eq!(response.status, 405);
    assert_eq!(response.body, "method not allowed\n");
    assert_eq!(response.header("allow"), Some("GET"));
    let bad_key = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: short==",
    ];
    let response = http.request("GET", "/ws", &bad_key).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body, "invalid sec-websocket-key\n");
    let old_version = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 8",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    let response = http.request("GET", "/ws", &old_version).await;
    assert_eq!(response.status, 426);
    assert_eq!(response.body, "unsupported websocket version\n");
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    let response = http.request("GET", "/", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "hello from axum");
    assert_eq!(app.server.stats().handshakes_refused, 4);
    assert_eq!(app.server.stats().connections, 0);
}

#[tokio::test]
async fn normal_axum_routes_still_work() {
    let app = AxumApp::start(app_server()).await;
    let mut client = app.client().await;
    client.expect_quiet().await;
    let mut http = app.http().await;
    let response = http.request("GET", "/", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "hello from axum");
    let response = http.request("GET", "/elsewhere", &UPGRADE).await;
    assert_eq!(response.status, 404);
    assert_eq!(app.server.stats().handshakes_refused, 0);
}

#[tokio::test]
async fn at_capacity_gets_503() {
    let server = Server::builder().max_connections(1).build().expect("build");
    let app = AxumApp::start(server).await;
    let mut first = app.client().await;
    first.expect_quiet().await;
    let mut http = app.http().await;
    let response = http.request("GET", "/ws", &UPGRADE).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.body, "server at capacity\n");
}

#[tokio::test]
async fn shutdown_closes_axum_clients_with_1001_and_refuses_new_ones() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .on_disconnect(move |socket: Socket, reason: DisconnectReason| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((*socket.id(), reason));
            }
        })
        .build()
        .expect("build");
    let app = AxumApp::start(server).await;
    let mut client = app.client().await;
    client.expect_quiet().await;
    let id = *app.server.sockets().first().expect("one connection");

    tokio::time::timeout(WAIT, app.server.shutdown())
        .await
        .expect("shutdown completes");
    assert_eq!(
        client.closed().await,
        Closed::Frame(1001, "server shutting down".to_owned())
    );
    let (closed_id, reason) = next(&mut rx).await;
    assert_eq!(closed_id, id);
    assert_eq!(
        reason,
        DisconnectReason::ServerClosed {
            code: wsu::CloseCode::GOING_AWAY,
            reason: "server shutting down".to_owned(),
        }
    );
    assert_eq!(app.server.stats().connections, 0);
    // axum keeps serving; new upgrades are refused while wsu is shut down.
    let mut http = app.http().await;
    let response = http.request("GET", "/ws", &UPGRADE).await;
    assert_eq!(response.status, 503);
    let response = http.request("GET", "/", &[]).await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn upgrade_that_does_not_happen_releases_the_slot() {
    // A layer that replaces the 101: hyper then keeps the upgrade pending as long as the HTTP
    // connection is open, and wsu gives up after the handshake timeout.
    let server = Server::builder()
        .handshake_timeout(Duration::from_millis(200))
        .build()
        .expect("build");
    let app = AxumApp::start_with(server, |router| {
        router.layer(axum::middleware::map_response(
            |mut response: axum::response::Response| async move {
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    *response.status_mut() = StatusCode::IM_A_TEAPOT;
                }
                response
            },
        ))
    })
    .await;
    let mut http = app.http().await;
    let response = http.request("GET", "/ws", &UPGRADE).await;
    assert_eq!(response.status, 418);
    // `shutdown` returns only once every reserved slot is released.
    tokio::time::timeout(WAIT, app.server.shutdown())
        .await
        .expect("the slot was released");
    assert_eq!(app.server.stats().connections, 0);
    assert_eq!(app.server.stats().connections_total, 0);
}

#[tokio::test]
async fn request_without_a_pending_upgrade_gets_500() {
    // Called directly, as a test harness would: no hyper connection, so nothing to upgrade.
    let server = app_server();
    let mut builder = Request::builder().uri("/ws").header("host", "a");
    for line in UPGRADE {
        let (name, value) = line.split_once(": ").expect("header");
        builder = builder.header(name, value);
    }
    let request = builder.body(axum::body::Body::empty()).expect("request");
    let response = wsu::axum::accept(server.clone(), request).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .expect("body");
    assert_eq!(&body[..], b"connection cannot be upgraded\n");
    let stats = server.stats();
    assert_eq!(stats.connections, 0);
    assert_eq!(stats.handshakes_refused, 1);
    // Nothing reserved is left: shutdown returns at once.
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("no slot left reserved");
}
