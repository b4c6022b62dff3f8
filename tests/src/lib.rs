//! Shared helpers for the end-to-end tests: start a server on `127.0.0.1:0`, and a raw
//! WebSocket client that speaks the wire protocol by hand (as a seed client would).

pub mod cluster;
pub mod proxy;
pub mod resume;
pub mod services;
pub mod streams;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wsu::Server;

/// Whether a text message is the server's `hello` frame (PROTOCOL.md §3.1), which the helpers
/// skip (tests of the hello itself read frames without them).
pub fn is_hello(text: &str) -> bool {
    text.starts_with(r#"{"type":"hello","#)
}

fn is_hello_bytes(b: &[u8]) -> bool {
    b.starts_with(br#"{"type":"hello","#)
}

/// Read the `hello` frame a connection starts with (PROTOCOL.md §3.1) from a library client
/// (for example one over a `tokio::io::duplex` pipe served by `Server::serve_connection`), and
/// return it parsed. Panics if the next message is anything else (a WebSocket ping included: the
/// hello is sent before anything else). No timeout (paused-time tests rely on that).
pub async fn expect_hello<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match ws.next().await {
        Some(Ok(Message::Text(t))) if is_hello(t.as_str()) => {
            serde_json::from_str(&t).expect("the hello is JSON")
        }
        other => panic!("expected the hello frame first, got {other:?}"),
    }
}

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
                        let v: Value = serde_json::from_str(&t).expect("server sent JSON");
                        if v["type"] == "hello" {
                            continue;
                        }
                        return v;
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
                    Some(Ok(Message::Close(frame))) => {
                        // Send the close reply tungstenite queued, so the server need not wait.
                        let _ = self.ws.flush().await;
                        return match frame {
                            Some(CloseFrame { code, reason }) => {
                                Closed::Frame(u16::from(code), reason.to_string())
                            }
                            None => Closed::Frame(1005, String::new()),
                        };
                    }
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

// ---- Helpers for the message-level suites (protocol, acks, rooms, hooks) ---------------------

impl TestServer {
    /// Connect a raw client to `path_and_query` (for example `/ws?token=abc`) with extra request
    /// headers, as a browser or an authenticating client would.
    pub async fn client_with(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

        let url = format!("ws://{}{path_and_query}", self.addr);
        let mut request = url.into_client_request().expect("valid client request");
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let (ws, _) = connect_async(request).await.expect("connect");
        Client { ws }
    }
}

impl Client {
    /// The raw text of the next text message (pings and pongs skipped), for byte-exact
    /// assertions. Panics after [`WAIT`], on close, or on a binary message.
    pub async fn recv_text(&mut self) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) if is_hello(t.as_str()) => continue,
                    Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a text message, got {other:?}"),
                }
            }
        })
        .await
        .expect("timed out waiting for a message")
    }

    /// Send raw bytes as a binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("send");
    }

    /// Start the closing handshake with `code` and `reason`, then wait for the server's answer;
    /// returns the close frame the server sent back.
    pub async fn close(&mut self, code: u16, reason: &str) -> Closed {
        self.ws
            .close(Some(CloseFrame {
                code: code.into(),
                reason: reason.into(),
            }))
            .await
            .expect("send close");
        self.closed().await
    }

    /// The client's own TCP address (what the server sees as the peer address).
    pub fn local_addr(&self) -> SocketAddr {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local addr"),
            _ => panic!("test clients use plain TCP"),
        }
    }

    /// Send `{"type":"event","event":event,"data":data,"ackId":ack_id}` in namespace `/`.
    pub async fn emit_ack(&mut self, event: &str, data: Value, ack_id: &str) {
        self.send(serde_json::json!({
            "type": "event", "event": event, "data": data, "ackId": ack_id
        }))
        .await;
    }
}

/// The next item of a channel that a hook or handler reports to. Panics after [`WAIT`] or when
/// every sender is gone. Use it instead of sleeping to wait for something on the server side.
pub async fn next<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for the server-side signal")
        .expect("signal channel closed")
}

// ---- Helpers for the transport-level suites (transport, limits, heartbeat, shutdown) ---------

/// Opcodes of WebSocket frames (RFC 6455 §5.2), for [`frame_bytes`] and [`RawFrame::opcode`].
pub mod opcode {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// The `Sec-WebSocket-Key` used by [`upgrade_request`] (the RFC 6455 sample nonce).
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` a server must answer to [`SAMPLE_KEY`].
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A complete, valid WebSocket upgrade request for `path` with `Host: host`, the
/// [`SAMPLE_KEY`], and `extra` headers appended (each as `name: value`).
pub fn upgrade_request(host: &str, path: &str, extra: &[(&str, &str)]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// The bytes of one client frame: `first_byte` holds FIN, the RSV bits and the opcode as on the
/// wire (`0x81` is a final text frame), then the payload length and, when `masked`, a fixed
/// masking key with the payload masked by it (clients must mask; pass `false` to break that rule).
pub fn frame_bytes(first_byte: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut out = vec![first_byte];
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A masked, final text frame holding `text` (what a well-behaved client sends).
pub fn text_frame(text: &str) -> Vec<u8> {
    frame_bytes(0x80 | opcode::TEXT, text.as_bytes(), true)
}

/// One server frame as read from the wire by [`RawWs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The three RSV bits (`0b100` is RSV1).
    pub rsv: u8,
    /// The opcode (see [`opcode`]).
    pub opcode: u8,
    /// Whether the frame was masked (a server must never mask).
    pub masked: bool,
    /// The (unmasked) payload.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// For a close frame: its code (1005 when the payload is empty) and reason.
    pub fn close(&self) -> Option<(u16, String)> {
        if self.opcode != opcode::CLOSE {
            return None;
        }
        if self.payload.len() < 2 {
            return Some((1005, String::new()));
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        let reason = String::from_utf8(self.payload[2..].to_vec()).expect("utf-8 close reason");
        Some((code, reason))
    }

    /// For a text frame: its payload parsed as JSON.
    pub fn json(&self) -> Option<Value> {
        (self.opcode == opcode::TEXT)
            .then(|| serde_json::from_slice(&self.payload).expect("server sent JSON"))
    }
}

/// A WebSocket client written by hand over any byte stream (a `TcpStream`, or one end of
/// `tokio::io::duplex`), to send what a library client refuses to send (unmasked frames, RSV
/// bits, reserved opcodes, invalid UTF-8, a frame pipelined with the upgrade request) and to see
/// the server's frames exactly as sent. It never answers pings by itself.
///
/// No method applies a timeout (paused-time tests rely on that); wrap calls in [`within`] on
/// real sockets.
pub struct RawWs<S> {
    /// The underlying stream.
    pub stream: S,
    buf: Vec<u8>,
}

impl<S> RawWs<S> {
    /// A client on a stream whose handshake is already done (for example the stream under a
    /// `WebSocketStream`, through `get_mut`, or one half of `tokio::io::split`).
    pub fn new(stream: S) -> Self {
        RawWs {
            stream,
            buf: Vec::new(),
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> RawWs<S> {
    /// Write `request` (an upgrade request, maybe followed by frames) and read the response head.
    /// Returns the head (up to and including the empty line) and the client, which keeps any
    /// bytes received after the head.
    pub async fn handshake(mut stream: S, request: &[u8]) -> (String, RawWs<S>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(request).await.expect("write request");
        let mut buf = Vec::new();
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                let rest = buf[end + 4..].to_vec();
                return (head, RawWs { stream, buf: rest });
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(
                n > 0,
                "connection closed before the response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> RawWs<S> {
    /// Write raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write frame");
    }

    /// Send a JSON value as a masked text frame.
    pub async fn send_json(&mut self, v: &Value) {
        self.send_raw(&text_frame(&v.to_string())).await;
    }
}

impl<S: tokio::io::AsyncRead + Unpin> RawWs<S> {
    /// Read one frame; `None` when the stream ended (or failed) before a complete frame.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next close frame's code and reason, skipping any other frame. Panics if the stream
    /// ends without one.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.read_frame().await {
                Some(f) => {
                    if let Some(close) = f.close() {
                        return close;
                    }
                }
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// The next text frame as JSON, skipping pings and the `hello`. Panics on any other frame or
    /// at the end.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.read_frame().await {
                Some(f) if f.opcode == opcode::PING => continue,
                Some(f) if f.opcode == opcode::TEXT && is_hello_bytes(&f.payload) => continue,
                Some(f) if f.opcode == opcode::TEXT => return f.json().expect("text frame"),
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame, which must be the `hello` frame a connection starts with (PROTOCOL.md
    /// §3.1), parsed. Panics on any other frame or at the end. Call it before reading frames
    /// exactly, or before giving up this client's buffer (for example to split its stream).
    pub async fn expect_hello(&mut self) -> Value {
        match self.read_frame().await {
            Some(f) if f.opcode == opcode::TEXT && is_hello_bytes(&f.payload) => {
                f.json().expect("text frame")
            }
            other => panic!("expected the hello frame first, got {other:?}"),
        }
    }

    /// Whether the stream ends (EOF or error) without any further byte.
    pub async fn at_eof(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        if !self.buf.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte).await, Ok(0) | Err(_))
    }
}

impl RawWs<TcpStream> {
    /// Connect over TCP and send a valid upgrade request for `/ws` with `extra` headers.
    /// Returns the response head and the client.
    pub async fn connect(addr: SocketAddr, extra: &[(&str, &str)]) -> (String, RawWs<TcpStream>) {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let req = upgrade_request(&addr.to_string(), "/ws", extra);
        within(RawWs::handshake(tcp, req.as_bytes())).await
    }
}

/// Parse one frame from the start of `buf`: the frame and the number of bytes it used.
fn parse_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let masked = buf[1] & 0x80 != 0;
    let (len, mut pos) = match buf[1] & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let mask: Option<[u8; 4]> = if masked {
        let m = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(m)
    } else {
        None
    };
    let mut payload = buf.get(pos..pos + len)?.to_vec();
    if let Some(m) = mask {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= m[i % 4]);
    }
    let frame = RawFrame {
        fin: buf[0] & 0x80 != 0,
        rsv: (buf[0] >> 4) & 0b111,
        opcode: buf[0] & 0x0f,
        masked,
        payload,
    };
    Some((frame, pos + len))
}

/// Send `request` on a new TCP connection to `addr` and read until the server closes the
/// connection (EOF or reset); returns everything received. Write errors are ignored (the server
/// may refuse a request before reading all of it).
pub async fn http_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    within(async {
        let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let _ = tcp.write_all(request).await;
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
}

/// How many HTTP responses `response` holds: occurrences of `HTTP/1.` anywhere (a second
/// response may follow a body that does not end with CRLF).
pub fn status_lines(response: &str) -> usize {
    response.matches("HTTP/1.").count()
}

/// The value of header `name` (case-insensitive) in an HTTP response head, if present.
pub fn header_value<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Await `fut` for at most [`WAIT`]; panics when it takes longer. For real sockets only (under
/// paused time the clock would jump to the deadline).
pub async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("timed out waiting for the server")
}

/// Wait until `cond` holds, yielding to the runtime between checks (no sleep); panics after
/// [`WAIT`]. For state the server changes after the last signal a test can await (such as the
/// `connections` gauge, released after the disconnect hook).
pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    within(async {
        while !cond() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

impl Client {
    /// Wait until the server has finished this connection's connect phase (connect hooks, then
    /// membership of `/`): send a `join` of `/` (a no-op for a member) with an ackId and await
    /// its ack. Requests are handled only after the connect phase, whereas a `ping` is answered
    /// at once, so [`expect_quiet`](Client::expect_quiet) does not prove this. Panics if any
    /// other message arrives first.
    pub async fn ready(&mut self) {
        self.send(serde_json::json!({"type": "join", "namespace": "/", "ackId": "ready"}))
            .await;
        assert_eq!(
            self.recv().await,
            serde_json::json!({"type": "ack", "namespace": "/", "ackId": "ready"}),
            "unexpected message"
        );
    }
}

impl Client {
    /// Send a WebSocket Ping frame and wait for its Pong. The server's reader answers it as soon
    /// as it reads it, even while a handler runs or requests wait (JSON `ping` messages, in
    /// contrast, are answered in arrival order, behind them), so this proves that the server has
    /// read everything sent before. Panics if a data message (other than the `hello`) or a close
    /// arrives first.
    pub async fn sync_read(&mut self) {
        let payload = tokio_tungstenite::tungstenite::Bytes::from_static(b"wsu-tests-sync");
        self.ws
            .send(Message::Ping(payload.clone()))
            .await
            .expect("send ping");
        tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Pong(p))) if p == payload => return,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Text(t))) if is_hello(t.as_str()) => continue,
                    other => panic!("expected the pong of a WebSocket ping, got {other:?}"),
                }
            }
        })
        .await
        .expect("timed out waiting for the pong of a WebSocket ping");
    }
}

// ---- Helpers for the hardening suites (hardening_*.rs) and the soak test -----------------------

/// The gauges of [`wsu::Stats`] that must come back to their baseline once an attacker (or any
/// client) has left: everything a connection holds on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    /// Open connections.
    pub connections: usize,
    /// Namespaces created on demand that still exist.
    pub dynamic_namespaces: usize,
    /// Rooms with members.
    pub rooms: usize,
    /// Server→client acks waiting for an answer.
    pub pending_acks: usize,
    /// Bytes queued for sending.
    pub queued_bytes: usize,
}

impl Gauges {
    /// The current gauges of `server`.
    pub fn of(server: &Server) -> Gauges {
        let s = server.stats();
        Gauges {
            connections: s.connections,
            dynamic_namespaces: s.dynamic_namespaces,
            rooms: s.rooms,
            pending_acks: s.pending_acks,
            queued_bytes: s.queued_bytes,
        }
    }
}

/// Wait until the gauges of `server` equal `baseline` (yielding to the runtime between checks,
/// like [`wait_until`]); panics after [`WAIT`] showing both. For real sockets only: under paused
/// time the clock cannot advance while this task spins, so server timers never fire (await a
/// disconnect-hook signal there instead).
pub async fn wait_for_gauges(server: &Server, baseline: Gauges) {
    let settled = tokio::time::timeout(WAIT, async {
        while Gauges::of(server) != baseline {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "gauges did not return to baseline: now {:?}, baseline {baseline:?}",
        Gauges::of(server)
    );
}

/// How long a [`Canary`] waits for each pong before failing the test. Deliberately loose (the
/// goal is "keeps getting answers"); the measured round trips are reported, not asserted.
pub const CANARY_DEADLINE: Duration = Duration::from_secs(2);

/// A well-behaved client that keeps sending JSON pings (every 5 ms) to a server under attack
/// and records each round trip. Every pong must arrive within [`CANARY_DEADLINE`]. For real
/// sockets only (it paces itself with the clock).
pub struct Canary {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(Client, Vec<(Duration, Duration)>)>,
    started: std::time::Instant,
}

/// What a [`Canary`] measured.
#[derive(Debug, Clone)]
pub struct CanaryReport {
    /// Pings answered.
    pub pings: usize,
    /// Median round trip.
    pub p50: Duration,
    /// 99th-percentile round trip.
    pub p99: Duration,
    /// Slowest round trip.
    pub max: Duration,
    /// When the slowest ping was sent, counted from the canary's start.
    pub max_at: Duration,
}

impl std::fmt::Display for CanaryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "canary: {} pongs, p50 {:?}, p99 {:?}, max {:?} (at {:?})",
            self.pings, self.p50, self.p99, self.max, self.max_at
        )
    }
}

/// One JSON ping → pong round trip on `client`, checked exactly; panics after
/// [`CANARY_DEADLINE`]. Events that arrive first (broadcasts to everyone) are skipped; any other
/// message fails the test.
pub async fn ping_round_trip(client: &mut Client) -> Duration {
    let start = std::time::Instant::now();
    client
        .send(serde_json::json!({"type": "ping", "namespace": "/canary"}))
        .await;
    let pong = tokio::time::timeout(CANARY_DEADLINE, async {
        loop {
            let m = client.recv().await;
            if m["type"] != "event" {
                return m;
            }
        }
    })
    .await
    .expect("the canary's pong arrives within 2 s");
    assert_eq!(
        pong,
        serde_json::json!({"type": "pong", "namespace": "/canary"}),
        "the canary got something else than its pong"
    );
    start.elapsed()
}

impl Canary {
    /// Connect a canary to `server` (waiting until its connect phase is over) and start pinging.
    pub async fn start(server: &TestServer) -> Canary {
        let mut client = server.client().await;
        client.ready().await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let started = std::time::Instant::now();
        let task = tokio::spawn(async move {
            let mut rtts = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                pace.tick().await;
                let at = started.elapsed();
                rtts.push((ping_round_trip(&mut client).await, at));
            }
            (client, rtts)
        });
        Canary {
            stop,
            task,
            started,
        }
    }

    /// Stop pinging, check one last round trip, and report. Panics if a pong was late or wrong.
    /// The canary's connection is closed afterwards (it counts in the gauges until then).
    pub async fn stop(self) -> CanaryReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut client, mut rtts) = within(self.task).await.expect("canary task");
        let at = self.started.elapsed();
        rtts.push((ping_round_trip(&mut client).await, at));
        drop(client);
        rtts.sort();
        let q = |q: f64| rtts[((rtts.len() - 1) as f64 * q).round() as usize].0;
        let (max, max_at) = rtts[rtts.len() - 1];
        CanaryReport {
            pings: rtts.len(),
            p50: q(0.5),
            p99: q(0.99),
            max,
            max_at,
        }
    }
}

/// The resident set size of process `pid` (this process when `None`), in bytes, from
/// `/proc/<pid>/status` (`VmRSS`). `None` where `/proc` is unavailable (not Linux).
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// The peak resident set size (`VmHWM`) of process `pid` (this process when `None`), in bytes.
pub fn peak_rss_bytes(pid: Option<u32>) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:").map(|kib| kib * 1024)
}

fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time (user + system) used by this process so far, from `/proc/self/stat`; `None` where
/// unavailable. Assumes the usual 100 clock ticks per second.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}
