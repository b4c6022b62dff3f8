//! wsu's own HTTP/1.1 request-head reader and WebSocket upgrade handshake (RFC 6455 §4.2).
//!
//! wsu accepts TCP connections itself instead of using tungstenite's `accept_hdr_async`, so that:
//! - every refused request gets exactly one complete HTTP response ([`error_response`]);
//! - reading the request head is bounded in bytes ([`HeadLimits`]) and in CPU (the head is re-parsed
//!   at most once per received line, never once per byte);
//! - plain GETs can be answered with static assets ([`asset_response`]).
//!
//! After a successful [`switching_protocols`] response the caller hands the stream and the
//! leftover bytes returned by [`read_head`] to
//! `tokio_tungstenite::WebSocketStream::from_partially_read`.
//!
//! Nothing here applies a timeout: the caller wraps [`read_head`] in `tokio::time::timeout`.

use std::fmt;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::{
    self, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header,
};

/// How many bytes one `read` call asks for at most while reading a request head.
const READ_CHUNK: usize = 4096;

/// The head buffer's initial capacity (it grows, never past `max_head_bytes`).
const INITIAL_CAPACITY: usize = 1024;

/// Limits for reading a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    /// The largest request head accepted, in bytes, counting the request line, every header line
    /// and the final empty line (default 16 KiB). Bytes received after the head in the same reads
    /// (the leftover) are also bounded by this, since the read buffer never grows past it.
    pub(crate) max_head_bytes: usize,
    /// The largest number of header fields accepted (default 64).
    pub(crate) max_headers: usize,
}

impl HeadLimits {
    /// The default for [`HeadLimits::max_head_bytes`]: 16 KiB.
    pub(crate) const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
    /// The default for [`HeadLimits::max_headers`]: 64.
    pub(crate) const DEFAULT_MAX_HEADERS: usize = 64;
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: Self::DEFAULT_MAX_HEAD_BYTES,
            max_headers: Self::DEFAULT_MAX_HEADERS,
        }
    }
}

/// Why [`read_head`] could not return a request head.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The peer closed or the socket failed before a full head arrived (no response is written).
    /// A peer that closes mid-head gives `ErrorKind::UnexpectedEof`.
    Io(io::Error),
    /// The head exceeds max_head_bytes or max_headers → caller answers 431.
    TooLarge,
    /// Not parseable HTTP/1.x → caller answers 400. String: short lowercase reason.
    Malformed(String),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "i/o error while reading the request head: {e}"),
            Self::TooLarge => f.write_str("request head too large"),
            Self::Malformed(reason) => write!(f, "malformed request head: {reason}"),
        }
    }
}

impl std::error::Error for HeadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::TooLarge | Self::Malformed(_) => None,
        }
    }
}

/// Read one HTTP/1.1 request head (up to and including CRLFCRLF) from `stream`.
///
/// Reads in chunks of at most 4 KiB into a buffer that never grows beyond
/// `limits.max_head_bytes`: once the buffer is full without a complete head, this returns
/// [`HeadError::TooLarge`] at once (it never reads more than `max_head_bytes` bytes in total).
/// The head is re-parsed with httparse after the first read and after every read that brings a
/// line feed, so the parsing work is bounded by (number of lines) × (head size), not by the number
/// of reads; leading empty lines (which RFC 9112 §2.2 lets a server ignore) are skipped in O(1)
/// per byte. More than `limits.max_headers` header fields gives [`HeadError::TooLarge`].
///
/// Returns the request parts (method, uri, version, headers; extensions empty) and the bytes read
/// after the head (the leftover, possibly empty, to be handed to tungstenite). There is no
/// timeout here: the caller wraps the call in `tokio::time::timeout`.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    limits: HeadLimits,
) -> Result<(http::request::Parts, Vec<u8>), HeadError> {
    let max = limits.max_head_bytes;
    let mut buf: Vec<u8> = Vec::with_capacity(max.min(INITIAL_CAPACITY));
    // Number of leading bytes that are empty lines (CRLF or bare LF) before the request line.
    let mut skip = 0usize;
    let mut first_read = true;
    loop {
        // Invariant: buf.len() <= max.
        let room = max - buf.len();
        if room == 0 {
            return Err(HeadError::TooLarge);
        }
        let want = room.min(READ_CHUNK);
        let old_len = buf.len();
        reserve_capped(&mut buf, want, max);
        buf.resize(old_len + want, 0);
        let n = match stream.read(&mut buf[old_len..]).await {
            Ok(0) => {
                return Err(HeadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the request head was complete",
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf.truncate(old_len);
                continue;
            }
            Err(e) => return Err(HeadError::Io(e)),
        };
        buf.truncate(old_len + n);
        skip = skip_empty_lines(&buf, skip);
        let brings_line_end = buf[old_len..].contains(&b'\n');
        if !(first_read || brings_line_end) {
            continue;
        }
        first_read = false;
        if let Some((parts, head_len)) = parse_head(&buf[skip..], limits.max_headers)? {
            let leftover = buf[skip + head_len..].to_vec();
            return Ok((parts, leftover));
        }
    }
}

/// Grow `buf` so that `additional` more bytes fit, doubling the capacity but never past `max`.
/// The caller guarantees `buf.len() + additional <= max`.
fn reserve_capped(buf: &mut Vec<u8>, additional: usize, max: usize) {
    let needed = buf.len() + additional;
    if needed > buf.capacity() {
        let target = buf.capacity().saturating_mul(2).max(needed).min(max);
        buf.reserve_exact(target - buf.len());
    }
}

/// Advance `skip` past any complete empty lines (`\r\n` or `\n`) at the start of `buf`.
/// Stops at the first other byte, or at a `\r` whose `\n` has not arrived yet.
fn skip_empty_lines(buf: &[u8], mut skip: usize) -> usize {
    loop {
        match buf.get(skip) {
            Some(b'\n') => skip += 1,
            Some(b'\r') if buf.get(skip + 1) == Some(&b'\n') => skip += 2,
            _ => return skip,
        }
    }
}

/// Parse `buf` as a request head. `Ok(None)` means the head is not complete yet; `Ok(Some)` gives
/// the parts and the length of the head in `buf`.
fn parse_head(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<(http::request::Parts, usize)>, HeadError> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => Ok(Some((to_parts(&req)?, head_len))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(httparse_reason(&e))),
    }
}

/// A short lowercase reason for an httparse error.
fn httparse_reason(e: &httparse::Error) -> String {
    match e {
        httparse::Error::HeaderName => "invalid header name".to_owned(),
        httparse::Error::HeaderValue => "invalid header value".to_owned(),
        httparse::Error::NewLine => "invalid line ending".to_owned(),
        httparse::Error::Token => "invalid request line".to_owned(),
        httparse::Error::Version => "invalid http version".to_owned(),
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// Convert a complete httparse request into owned `http` request parts.
fn to_parts(req: &httparse::Request<'_, '_>) -> Result<http::request::Parts, HeadError> {
    let malformed = |reason: &str| HeadError::Malformed(reason.to_owned());
    let method = req.method.ok_or_else(|| malformed("missing method"))?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| malformed("invalid method"))?;
    let path = req
        .path
        .ok_or_else(|| malformed("missing request target"))?;
    let uri = Uri::try_from(path).map_err(|_| malformed("invalid request target"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(malformed("invalid http version")),
    };
    let mut headers =
        HeaderMap::try_with_capacity(req.headers.len()).map_err(|_| HeadError::TooLarge)?;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| malformed("invalid header name"))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| malformed("invalid header value"))?;
        headers
            .try_append(name, value)
            .map_err(|_| HeadError::TooLarge)?;
    }
    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let (parts, ()) = request.into_parts();
    Ok(parts)
}

/// Why an upgrade request is refused; the caller writes `error_response(...)` with these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The HTTP status to answer with.
    pub(crate) status: StatusCode,
    /// A short lowercase reason, used as the response body.
    pub(crate) reason: &'static str,
}

impl Rejection {
    /// A rejection with `status` and `reason`.
    const fn new(status: StatusCode, reason: &'static str) -> Self {
        Self { status, reason }
    }
}

/// Whether any `name` header holds `token` in its comma-separated list (case-insensitive,
/// surrounding whitespace ignored).
fn header_has_token(headers: &HeaderMap, name: &HeaderName, token: &[u8]) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// The value of `name` when the header appears exactly once.
fn single_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// Whether `key` is the base64 encoding of exactly 16 bytes: 22 characters of the standard base64
/// alphabet followed by `==`. Non-canonical encodings (non-zero unused bits in the last
/// character) are accepted, as lenient base64 decoders do.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// True when the request asks for a WebSocket upgrade at all (`Upgrade` header containing the
/// token `websocket`, case-insensitive). Plain GETs return false (the caller may then serve a
/// static file or 404/426).
pub(crate) fn is_upgrade_request(parts: &http::request::Parts) -> bool {
    header_has_token(&parts.headers, &header::UPGRADE, b"websocket")
}

/// Validate a WebSocket upgrade request (RFC 6455 §4.2.1) and return the `Sec-WebSocket-Accept`
/// value. Checks, in this order:
/// - method must be GET → 405 "method not allowed"
/// - version HTTP/1.1 (or later) → 400 "http/1.1 required"
/// - `Connection` must contain the token `upgrade` and `Upgrade` the token `websocket`
///   (comma-separated, case-insensitive, over all headers of that name) → 400 "not a websocket
///   upgrade"
/// - exactly one `Sec-WebSocket-Version` header, equal to 13 (a missing one included) → 426
///   "unsupported websocket version" ([`error_response`] adds `Sec-WebSocket-Version: 13`)
/// - exactly one `Sec-WebSocket-Key`, the base64 of exactly 16 bytes → 400 "invalid
///   sec-websocket-key"
///
/// Extensions (permessage-deflate) and subprotocols offered by the client are ignored: the 101
/// never includes them. `Host` and `Origin` are not checked here (see `OriginPolicy`).
pub(crate) fn validate_upgrade(parts: &http::request::Parts) -> Result<String, Rejection> {
    if parts.method != Method::GET {
        return Err(Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ));
    }
    if parts.version < Version::HTTP_11 {
        return Err(Rejection::new(StatusCode::BAD_REQUEST, "http/1.1 required"));
    }
    if !header_has_token(&parts.headers, &header::CONNECTION, b"upgrade")
        || !is_upgrade_request(parts)
    {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "not a websocket upgrade",
        ));
    }
    let version_ok = single_header(&parts.headers, &header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"13");
    if !version_ok {
        return Err(Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported websocket version",
        ));
    }
    match single_header(&parts.headers, &header::SEC_WEBSOCKET_KEY)
        .map(|v| v.as_bytes().trim_ascii())
    {
        Some(key) if is_valid_key(key) => Ok(derive_accept_key(key)),
        _ => Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "invalid sec-websocket-key",
        )),
    }
}

/// The complete 101 response bytes: `HTTP/1.1 101 Switching Protocols`, `Upgrade: websocket`,
/// `Connection: Upgrade`, `Sec-WebSocket-Accept: <accept_key>`, then the empty line.
pub(crate) fn switching_protocols(accept_key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\n\
         \r\n"
    )
    .into_bytes()
}

/// A complete non-101 response with `Connection: close`,
/// `Content-Type: text/plain; charset=utf-8`, `Content-Length`, and body = reason + "\n"; for 426
/// also `Sec-WebSocket-Version: 13`; for 405 `Allow: GET`. The status line carries the status's
/// canonical reason phrase (empty for unknown codes).
pub(crate) fn error_response(status: StatusCode, reason: &str) -> Vec<u8> {
    let body_len = reason.len() + 1;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n\
         Connection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {body_len}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
    );
    if status == StatusCode::UPGRADE_REQUIRED {
        head.push_str("Sec-WebSocket-Version: 13\r\n");
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        head.push_str("Allow: GET\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.reserve_exact(body_len);
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
    out
}

/// A complete 200 response for a static asset: `Content-Type: <content_type>`, `Content-Length`,
/// `Connection: close`, `Cache-Control: no-cache`, then `body`. For method HEAD the caller passes
/// `head_only = true` (headers only, `Content-Length` still the body's length).
///
/// A `content_type` that is not a valid header value (control characters such as CR or LF) is
/// replaced by `application/octet-stream`, so the response can never be split.
pub(crate) fn asset_response(content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let content_type = if HeaderValue::from_str(content_type).is_ok() {
        content_type
    } else {
        "application/octet-stream"
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         Cache-Control: no-cache\r\n\
         \r\n",
        body.len(),
    );
    let mut out = head.into_bytes();
    if !head_only {
        out.reserve_exact(body.len());
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncWriteExt, ReadBuf};

    /// A reader that hands out its chunks one per `poll_read` (each possibly cut short by the
    /// caller's buffer), returning `Pending` once between chunks, and counts the bytes handed out.
    struct ChunkedReader {
        chunks: VecDeque<Vec<u8>>,
        delivered: usize,
        pending_next: bool,
    }

    impl ChunkedReader {
        fn new<I: IntoIterator<Item = Vec<u8>>>(chunks: I) -> Self {
            Self {
                chunks: chunks.into_iter().collect(),
                delivered: 0,
                pending_next: false,
            }
        }
    }

    impl AsyncRead for ChunkedReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.pending_next {
                self.pending_next = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let Some(front) = self.chunks.front_mut() else {
                return Poll::Ready(Ok(())); // EOF
            };
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.drain(..n);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            self.delivered += n;
            self.pending_next = true;
            Poll::Ready(Ok(()))
        }
    }

    /// A reader that produces `fill` forever (after an optional prefix), counting bytes handed out.
    struct EndlessReader {
        prefix: Vec<u8>,
        fill: u8,
        delivered: usize,
    }

    impl AsyncRead for EndlessReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = buf.remaining();
            for _ in 0..n {
                let at = self.delivered;
                let b = self.prefix.get(at).copied().unwrap_or(self.fill);
                buf.put_slice(&[b]);
                self.delivered += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    const UPGRADE: &str = "GET /ws?x=1 HTTP/1.1\r\n\
        Host: 127.0.0.1:8080\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Origin: http://127.0.0.1:8080\r\n\
        \r\n";

    fn limits() -> HeadLimits {
        HeadLimits::default()
    }

    fn parts_of(head: &str) -> http::request::Parts {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head.as_bytes()) {
            Ok(httparse::Status::Complete(_)) => {}
            other => panic!("test head does not parse: {other:?}"),
        }
        to_parts(&req).expect("test head converts")
    }

    /// Build a request head from a request line and header lines.
    fn head(request_line: &str, headers: &[&str]) -> String {
        let mut s = format!("{request_line}\r\n");
        for h in headers {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s
    }

    const GOOD_HEADERS: [&str; 5] = [
        "Host: example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];

    fn with_header_replaced(name: &str, line: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = GOOD_HEADERS
            .iter()
            .filter(|h| {
                !h.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|h| (*h).to_owned())
            .collect();
        if let Some(line) = line {
            out.push(line.to_owned());
        }
        out
    }

    fn validate_with(name: &str, line: Option<&str>) -> Result<String, Rejection> {
        let headers = with_header_replaced(name, line);
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        validate_upgrade(&parts_of(&head("GET /ws HTTP/1.1", &refs)))
    }

    #[test]
    fn default_limits() {
        let l = HeadLimits::default();
        assert_eq!(l.max_head_bytes, 16 * 1024);
        assert_eq!(l.max_headers, 64);
    }

    #[tokio::test]
    async fn reads_a_head_split_over_several_reads() {
        let bytes = UPGRADE.as_bytes();
        // Split at awkward places: inside the method, inside "\r\n", inside the final CRLFCRLF.
        let cuts = [2, 17, 18, 40, 41, bytes.len() - 3, bytes.len() - 1];
        let mut chunks = Vec::new();
        let mut prev = 0;
        for cut in cuts {
            chunks.push(bytes[prev..cut].to_vec());
            prev = cut;
        }
        chunks.push(bytes[prev..].to_vec());
        let mut reader = ChunkedReader::new(chunks);
        let (parts, leftover) = read_head(&mut reader, limits()).await.expect("head");
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.uri, "/ws?x=1");
        assert_eq!(parts.uri.path(), "/ws");
        assert_eq!(parts.uri.query(), Some("x=1"));
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers.len(), 6);
        assert_eq!(parts.headers["host"], "127.0.0.1:8080");
        assert_eq!(
            parts.headers["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        assert_eq!(parts.headers["origin"], "http://127.0.0.1:8080");
        assert!(leftover.is_empty());
        assert_eq!(reader.delivered, bytes.len());
        assert_eq!(
            validate_upgrade(&parts).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[tokio::test]
    async fn reads_a_head_one_byte_at_a_time() {
        let chunks: Vec<Vec<u8>> = UPGRADE.bytes().map(|b| vec![b]).collect();
        let mut reader = ChunkedReader::new(chunks);
        let (parts, leftover) = read_head(&mut reader, limits()).await.expect("head");
        assert_eq!(parts.headers["sec-websocket-version"], "13");
        assert!(leftover.is_empty());
    }

    #[tokio::test]
    async fn reads_a_head_from_a_duplex_pipe() {
        let (mut client, mut server) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            for piece in UPGRADE.as_bytes().chunks(5) {
                client.write_all(piece).await.expect("write");
                tokio::task::yield_now().await;
            }
            client.write_all(b"\x81\x85").await.expect("write");
            client
        });
        let (parts, leftover) = read_head(&mut server, limits()).await.expect("head");
        assert_eq!(parts.headers["upgrade"], "websocket");
        // Whatever of the frame bytes arrived with the head is returned, nothing else.
        assert!(b"\x81\x85".starts_with(&leftover), "{leftover:?}");
        drop(writer.await.expect("writer"));
    }

    #[tokio::test]
    async fn returns_leftover_bytes_exactly() {
        let frame: &[u8] = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
        let mut input = UPGRADE.as_bytes().to_vec();
        input.extend_from_slice(frame);
        let mut reader: &[u8] = &input;
        let (parts, leftover) = read_head(&mut reader, limits()).await.expect("head");
        assert_eq!(parts.uri, "/ws?x=1");
        assert_eq!(leftover, frame);

        // Leftover split across reads, with the head ending mid-chunk.
        let split = UPGRADE.len() - 2;
        let mut reader = ChunkedReader::new([input[..split].to_vec(), input[split..].to_vec()]);
        let (_, leftover) = read_head(&mut reader, limits()).await.expect("head");
        assert_eq!(leftover, frame);
    }

    #[tokio::test]
    async fn skips_leading_empty_lines_and_accepts_bare_lf() {
        let input = b"\r\n\n\r\nGET / HTTP/1.1\nHost: a\n\nrest";
        let mut reader: &[u8] = input;
        let (parts, leftover) = read_head(&mut reader, limits()).await.expect("head");
        assert_eq!(parts.uri, "/");
        assert_eq!(parts.headers["host"], "a");
        assert_eq!(leftover, b"rest");
    }

    #[tokio::test]
    async fn http_1_0_head_is_read() {
        let mut reader: &[u8] = b"GET /index.html HTTP/1.0\r\n\r\n";
        let (parts, leftover) = read_head(&mut reader, limits()).await.expect("head");
        assert_eq!(parts.version, Version::HTTP_10);
        assert_eq!(parts.uri, "/index.html");
        assert!(parts.headers.is_empty());
        assert!(leftover.is_empty());
    }

    #[tokio::test]
    async fn huge_header_line_is_too_large_without_reading_it_all() {
        let mut reader = EndlessReader {
            prefix: b"GET / HTTP/1.1\r\nX-Big: ".to_vec(),
            fill: b'a',
            delivered: 0,
        };
        let started = std::time::Instant::now();
        let err = read_head(&mut reader, limits())
            .await
            .expect_err("too large");
        assert!(matches!(err, HeadError::TooLarge), "{err:?}");
        // Never more than the limit itself is read (the buffer never grows past it).
        assert_eq!(reader.delivered, HeadLimits::DEFAULT_MAX_HEAD_BYTES);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));

        // A 100 KiB header line from a finite reader: same outcome, same bound.
        let mut input = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        input.extend(std::iter::repeat_n(b'b', 100 * 1024));
        input.extend_from_slice(b"\r\n\r\n");
        let mut reader = ChunkedReader::new(input.chunks(1000).map(<[u8]>::to_vec));
        let err = read_head(&mut reader, limits())
            .await
            .expect_err("too large");
        assert!(matches!(err, HeadError::TooLarge), "{err:?}");
        assert!(reader.delivered <= HeadLimits::DEFAULT_MAX_HEAD_BYTES);
    }

    #[tokio::test]
    async fn head_of_exactly_the_limit_is_accepted_and_one_more_byte_is_not() {
        let base = "GET / HTTP/1.1\r\nX-Pad: \r\n\r\n";
        let pad = 100 - base.len();
        let exact = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "p".repeat(pad));
        assert_eq!(exact.len(), 100);
        let small = HeadLimits {
            max_head_bytes: 100,
            max_headers: 4,
        };
        let mut input = exact.clone().into_bytes();
        input.extend_from_slice(b"after");
        let mut reader: &[u8] = &input;
        let (parts, leftover) = read_head(&mut reader, small).await.expect("head");
        assert_eq!(parts.headers["x-pad"].len(), pad);
        // The buffer holds at most the limit, so nothing after the head was read yet.
        assert!(leftover.is_empty());
        assert_eq!(reader, b"after");

        let over = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "p".repeat(pad + 1));
        let mut reader: &[u8] = over.as_bytes();
        let err = read_head(&mut reader, small).await.expect_err("too large");
        assert!(matches!(err, HeadError::TooLarge), "{err:?}");
    }

    #[tokio::test]
    async fn too_many_headers_is_too_large() {
        let mut input = String::from("GET / HTTP/1.1\r\n");
        for i in 0..1000 {
            input.push_str(&format!("X-{i}: v\r\n"));
        }
        input.push_str("\r\n");
        let mut reader = ChunkedReader::new(input.as_bytes().chunks(64).map(<[u8]>::to_vec));
        let err = read_head(&mut reader, limits())
            .await
            .expect_err("too many");
        assert!(matches!(err, HeadError::TooLarge), "{err:?}");
        // Detected while the 65th header arrives, long before the end of the input.
        assert!(reader.delivered < 1200, "read {} bytes", reader.delivered);

        // Exactly max_headers is fine.
        let mut input = String::from("GET / HTTP/1.1\r\n");
        for i in 0..64 {
            input.push_str(&format!("X-{i}: v\r\n"));
        }
        input.push_str("\r\n");
        let mut reader: &[u8] = input.as_bytes();
        let (parts, _) = read_head(&mut reader, limits()).await.expect("64 headers");
        assert_eq!(parts.headers.len(), 64);
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let cases: [(&[u8], &str); 5] = [
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                "invalid request line",
            ),
            (b"GET / HTTP/2.0\r\n\r\n", "invalid http version"),
            (
                b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
                "invalid header name",
            ),
            (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", "invalid header value"),
            (b"GET / HTTP/1.1\r\nX: a\r\r\n\r\n", "invalid header value"),
        ];
        for (input, reason) in cases {
            let mut reader: &[u8] = input;
            match read_head(&mut reader, limits()).await {
                Err(HeadError::Malformed(r)) => assert_eq!(r, reason, "{input:?}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
        // A TLS ClientHello is refused on the first read, without waiting for more.
        let mut reader = ChunkedReader::new([b"\x16\x03\x01\x02\x00".to_vec()]);
        let err = read_head(&mut reader, limits()).await.expect_err("tls");
        assert!(matches!(err, HeadError::Malformed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn eof_mid_head_is_unexpected_eof() {
        let mut reader: &[u8] = b"GET /ws HTTP/1.1\r\nHost: a\r\n";
        match read_head(&mut reader, limits()).await {
            Err(HeadError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{other:?}"),
        }
        let mut reader: &[u8] = b"";
        match read_head(&mut reader, limits()).await {
            Err(HeadError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn many_leading_empty_lines_count_against_the_limit() {
        let mut reader = EndlessReader {
            prefix: Vec::new(),
            fill: b'\n',
            delivered: 0,
        };
        let err = read_head(&mut reader, limits())
            .await
            .expect_err("too large");
        assert!(matches!(err, HeadError::TooLarge), "{err:?}");
        assert_eq!(reader.delivered, HeadLimits::DEFAULT_MAX_HEAD_BYTES);
    }

    #[test]
    fn head_error_display() {
        assert_eq!(HeadError::TooLarge.to_string(), "request head too large");
        assert_eq!(
            HeadError::Malformed("invalid header name".into()).to_string(),
            "malformed request head: invalid header name"
        );
        let io = HeadError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
        assert_eq!(
            io.to_string(),
            "i/o error while reading the request head: eof"
        );
    }

    #[test]
    fn rfc_6455_sample_key() {
        let parts = parts_of(&head("GET /chat HTTP/1.1", &GOOD_HEADERS));
        assert!(is_upgrade_request(&parts));
        assert_eq!(
            validate_upgrade(&parts).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn is_upgrade_request_looks_at_the_upgrade_token() {
        let plain = parts_of(&head("GET /index.html HTTP/1.1", &["Host: a"]));
        assert!(!is_upgrade_request(&plain));
        let h2c = parts_of(&head(
            "GET / HTTP/1.1",
            &["Upgrade: h2c", "Connection: Upgrade"],
        ));
        assert!(!is_upgrade_request(&h2c));
        let list = parts_of(&head("GET / HTTP/1.1", &["Upgrade: foo/2, WebSocket"]));
        assert!(is_upgrade_request(&list));
        let second = parts_of(&head(
            "GET / HTTP/1.1",
            &["Upgrade: foo", "upgrade: WEBSOCKET"],
        ));
        assert!(is_upgrade_request(&second));
        let prefix = parts_of(&head("GET / HTTP/1.1", &["Upgrade: websockets"]));
        assert!(!is_upgrade_request(&prefix));
        // POSTs are upgrade requests too (then refused with 405 by validate_upgrade).
        let post = parts_of(&head("POST / HTTP/1.1", &["Upgrade: websocket"]));
        assert!(is_upgrade_request(&post));
    }

    #[test]
    fn rejections() {
        let bad_request = StatusCode::BAD_REQUEST;
        let not_ws = Err(Rejection::new(bad_request, "not a websocket upgrade"));
        let bad_version = Err(Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported websocket version",
        ));
        let bad_key = Err(Rejection::new(bad_request, "invalid sec-websocket-key"));

        assert_eq!(
            validate_upgrade(&parts_of(&head("POST /ws HTTP/1.1", &GOOD_HEADERS))),
            Err(Rejection::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed"
            ))
        );
        assert_eq!(
            validate_upgrade(&parts_of(&head("GET /ws HTTP/1.0", &GOOD_HEADERS))),
            Err(Rejection::new(bad_request, "http/1.1 required"))
        );
        assert_eq!(validate_with("connection", None), not_ws);
        assert_eq!(
            validate_with("connection", Some("Connection: keep-alive")),
            not_ws
        );
        assert_eq!(validate_with("upgrade", None), not_ws);
        assert_eq!(validate_with("upgrade", Some("Upgrade: h2c")), not_ws);
        assert_eq!(validate_with("sec-websocket-version", None), bad_version);
        assert_eq!(
            validate_with("sec-websocket-version", Some("Sec-WebSocket-Version: 8")),
            bad_version
        );
        assert_eq!(
            validate_with(
                "sec-websocket-version",
                Some("Sec-WebSocket-Version: 13, 8")
            ),
            bad_version
        );
        assert_eq!(validate_with("sec-websocket-key", None), bad_key);
        for key in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ=",   // 23 chars
            "dGhlIHNhbXBsZSBub25jZQ===", // 25 chars
            "dGhlIHNhbXBsZSBub25jZQAA",  // no padding: 18 bytes
            "dGhlIHNhbXBsZSBub25j=Q==",  // padding inside
            "dGhlIHNhbXBsZSBub25jZ-==",  // url-safe alphabet
            "dGhlIHNhbXBsZSBub25jZ!==",  // not base64
            "dGhlIHNhbXBsZQ==",          // 10 bytes
            "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==",
        ] {
            let line = format!("Sec-WebSocket-Key: {key}");
            assert_eq!(
                validate_with("sec-websocket-key", Some(&line)),
                bad_key,
                "{key}"
            );
        }
        // Two keys are refused even when both are valid.
        let headers = [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ];
        assert_eq!(
            validate_upgrade(&parts_of(&head("GET / HTTP/1.1", &headers))),
            bad_key
        );
        // The method is checked first, then the version, then the upgrade tokens.
        assert_eq!(
            validate_upgrade(&parts_of(&head("PUT / HTTP/1.0", &[]))),
            Err(Rejection::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed"
            ))
        );
        assert_eq!(
            validate_upgrade(&parts_of(&head("GET / HTTP/1.1", &[]))),
            not_ws
        );
    }

    #[test]
    fn tokens_are_case_insensitive_and_comma_separated() {
        let headers = [
            "upgrade: WebSocket",
            "connection: keep-alive, UPGRADE",
            "sec-websocket-version:13",
            "sec-websocket-key: x3JJHMbDL1EzLkh9GBhXDw==",
        ];
        assert_eq!(
            validate_upgrade(&parts_of(&head("GET / HTTP/1.1", &headers))).as_deref(),
            Ok("HSmrc0sMlYUkAGmm5OPpG2HaGWk=")
        );
        // Connection split over two header lines.
        let headers = [
            "Upgrade: websocket",
            "Connection: keep-alive",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ];
        assert!(validate_upgrade(&parts_of(&head("GET / HTTP/1.1", &headers))).is_ok());
    }

    #[test]
    fn permessage_deflate_and_subprotocols_are_ignored_and_not_echoed() {
        let mut headers = GOOD_HEADERS.to_vec();
        headers.push("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits");
        headers.push("Sec-WebSocket-Protocol: chat, superchat");
        let accept =
            validate_upgrade(&parts_of(&head("GET /ws HTTP/1.1", &headers))).expect("accepted");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let response = String::from_utf8(switching_protocols(&accept)).expect("utf-8");
        let lower = response.to_ascii_lowercase();
        assert!(!lower.contains("extensions"), "{response}");
        assert!(!lower.contains("deflate"), "{response}");
        assert!(!lower.contains("protocol:"), "{response}");
    }

    #[test]
    fn switching_protocols_bytes() {
        assert_eq!(
            switching_protocols("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              \r\n"
                .to_vec()
        );
    }

    #[test]
    fn error_response_bytes() {
        assert_eq!(
            String::from_utf8(error_response(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported websocket version"
            ))
            .expect("utf-8"),
            "HTTP/1.1 426 Upgrade Required\r\n\
             Connection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 30\r\n\
             Sec-WebSocket-Version: 13\r\n\
             \r\n\
             unsupported websocket version\n"
        );
        assert_eq!(
            String::from_utf8(error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed"
            ))
            .expect("utf-8"),
            "HTTP/1.1 405 Method Not Allowed\r\n\
             Connection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 19\r\n\
             Allow: GET\r\n\
             \r\n\
             method not allowed\n"
        );
        assert_eq!(
            String::from_utf8(error_response(StatusCode::FORBIDDEN, "origin not allowed"))
                .expect("utf-8"),
            "HTTP/1.1 403 Forbidden\r\n\
             Connection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 19\r\n\
             \r\n\
             origin not allowed\n"
        );
        assert_eq!(
            String::from_utf8(error_response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large"
            ))
            .expect("utf-8"),
            "HTTP/1.1 431 Request Header Fields Too Large\r\n\
             Connection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 23\r\n\
             \r\n\
             request head too large\n"
        );
        let unknown = StatusCode::from_u16(599).expect("status");
        assert!(error_response(unknown, "x").starts_with(b"HTTP/1.1 599 \r\n"));
    }

    #[tokio::test]
    async fn error_response_is_one_parseable_response() {
        let bytes = error_response(StatusCode::BAD_REQUEST, "invalid sec-websocket-key");
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = resp.parse(&bytes) else {
            panic!("not a complete response");
        };
        assert_eq!(resp.code, Some(400));
        assert_eq!(&bytes[len..], b"invalid sec-websocket-key\n");
    }

    /// Serve one upgrade on `server` the way wsu's accept loop does, then echo one message.
    async fn serve_one(mut server: tokio::io::DuplexStream) -> String {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::protocol::Role;

        let (parts, leftover) = read_head(&mut server, limits()).await.expect("head");
        assert!(is_upgrade_request(&parts));
        let accept = validate_upgrade(&parts).expect("valid upgrade");
        server
            .write_all(&switching_protocols(&accept))
            .await
            .expect("write 101");
        let mut ws =
            WebSocketStream::from_partially_read(server, leftover, Role::Server, None).await;
        let msg = ws.next().await.expect("a message").expect("no error");
        let text = msg.into_text().expect("text").to_string();
        ws.send(format!("echo: {text}").into()).await.expect("send");
        text
    }

    #[tokio::test]
    async fn tungstenite_client_completes_the_handshake() {
        use futures_util::{SinkExt, StreamExt};

        let (client, server) = tokio::io::duplex(1024);
        let server = tokio::spawn(serve_one(server));
        let (mut ws, response) = tokio_tungstenite::client_async("ws://localhost/ws", client)
            .await
            .expect("client handshake");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(response.headers().get("sec-websocket-extensions").is_none());
        ws.send("hi".into()).await.expect("send");
        let reply = ws.next().await.expect("reply").expect("no error");
        assert_eq!(reply.into_text().expect("text").as_str(), "echo: hi");
        assert_eq!(server.await.expect("server"), "hi");
    }

    #[tokio::test]
    async fn frame_pipelined_after_the_head_is_not_lost() {
        use tokio::io::AsyncReadExt;

        let (mut client, server) = tokio::io::duplex(1024);
        let server = tokio::spawn(serve_one(server));
        // The request head and a masked "Hello" text frame (RFC 6455 §5.7) in one write.
        let mut bytes = UPGRADE.as_bytes().to_vec();
        bytes.extend_from_slice(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
        client.write_all(&bytes).await.expect("write");
        assert_eq!(server.await.expect("server"), "Hello");
        let expected_101 = switching_protocols("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut got = vec![0u8; expected_101.len()];
        client.read_exact(&mut got).await.expect("101");
        assert_eq!(got, expected_101);
        // Then the unmasked echo frame: FIN + text, length 11.
        let mut frame = [0u8; 13];
        client.read_exact(&mut frame).await.expect("echo frame");
        assert_eq!(&frame, b"\x81\x0becho: Hello");
    }

    #[test]
    fn asset_response_bytes() {
        assert_eq!(
            String::from_utf8(asset_response(
                "text/html; charset=utf-8",
                b"<p>hi</p>",
                false
            ))
            .expect("utf-8"),
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/html; charset=utf-8\r\n\
             Content-Length: 9\r\n\
             Connection: close\r\n\
             Cache-Control: no-cache\r\n\
             \r\n\
             <p>hi</p>"
        );
        assert_eq!(
            String::from_utf8(asset_response("text/javascript", b"let x = 1;\n", true))
                .expect("utf-8"),
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/javascript\r\n\
             Content-Length: 11\r\n\
             Connection: close\r\n\
             Cache-Control: no-cache\r\n\
             \r\n"
        );
        let split = asset_response("text/plain\r\nSet-Cookie: a=b", b"", false);
        assert_eq!(
            String::from_utf8(split).expect("utf-8"),
            "HTTP/1.1 200 OK\r\n\
             Content-Type: application/octet-stream\r\n\
             Content-Length: 0\r\n\
             Connection: close\r\n\
             Cache-Control: no-cache\r\n\
             \r\n"
        );
    }
}
