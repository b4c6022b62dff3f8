//! The load generator's WebSocket client: dialing from a chosen source address, the HTTP
//! upgrade, a minimal frame codec (lean on the receive path: frames are parsed in place in one
//! read buffer, nothing is allocated per message), and the two wire protocols spoken: wsu's
//! JSON envelopes and Socket.IO v5 over Engine.IO 4.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The wire protocol of a server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// wsu's JSON envelopes (wsu and the raw reference).
    Wsu,
    /// Socket.IO v5 over Engine.IO 4, websocket transport.
    Sio,
}

/// What a text message from the server is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A broadcast `msg` event.
    Msg,
    /// An ack with this numeric id.
    Ack(u64),
    /// An `error` (wsu) or a connect error (Socket.IO).
    Error,
    /// Anything else (pongs, Engine.IO noise).
    Other,
}

impl Proto {
    fn path(self) -> &'static str {
        match self {
            Proto::Wsu => "/ws",
            Proto::Sio => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// `join` (or `leave`) a room, acknowledged with `ack`.
    pub(crate) fn membership(self, join: bool, room: &str, ack: u64, out: &mut Vec<u8>) {
        let verb = if join { "join" } else { "leave" };
        let text = match self {
            Proto::Wsu => format!(r#"{{"type":"{verb}","room":"{room}","ackId":"{ack}"}}"#),
            Proto::Sio => format!(r#"42{ack}["{verb}","{room}"]"#),
        };
        push_frame(out, 1, text.as_bytes());
    }

    /// A `pub` event: broadcast `data` (a JSON object) to `room`.
    pub(crate) fn publish(self, room: &str, data: &str, out: &mut Vec<u8>) {
        let text = match self {
            Proto::Wsu => {
                format!(
                    r#"{{"type":"event","event":"pub","data":{{"room":"{room}","data":{data}}}}}"#
                )
            }
            Proto::Sio => format!(r#"42["pub",{{"room":"{room}","data":{data}}}]"#),
        };
        push_frame(out, 1, text.as_bytes());
    }

    /// An `echo` event asking for ack `ack`.
    pub(crate) fn echo(self, data: &str, ack: u64, out: &mut Vec<u8>) {
        let text = match self {
            Proto::Wsu => {
                format!(r#"{{"type":"event","event":"echo","data":{data},"ackId":"{ack}"}}"#)
            }
            Proto::Sio => format!(r#"42{ack}["echo",{data}]"#),
        };
        push_frame(out, 1, text.as_bytes());
    }

    /// Classify a text message from the server.
    pub(crate) fn classify(self, m: &[u8]) -> Incoming {
        match self {
            Proto::Wsu => {
                // Servers write `{"type":"<type>",...` first.
                const PREFIX: &[u8] = br#"{"type":""#;
                if !m.starts_with(PREFIX) {
                    return Incoming::Other;
                }
                match m.get(PREFIX.len()) {
                    Some(b'e') if m[PREFIX.len()..].starts_with(b"event") => Incoming::Msg,
                    Some(b'e') => Incoming::Error,
                    Some(b'a') => match find(m, br#""ackId":""#) {
                        Some(i) => match parse_u64(&m[i..]) {
                            Some(id) => Incoming::Ack(id),
                            None => Incoming::Other,
                        },
                        None => Incoming::Other,
                    },
                    _ => Incoming::Other,
                }
            }
            Proto::Sio => match m {
                [b'4', b'2', ..] => Incoming::Msg,
                [b'4', b'3', rest @ ..] => match parse_u64(rest) {
                    Some(id) => Incoming::Ack(id),
                    None => Incoming::Other,
                },
                [b'4', b'4', ..] => Incoming::Error,
                _ => Incoming::Other,
            },
        }
    }
}

/// Position just after the first occurrence of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + needle.len())
}

/// The decimal number at the start of `s`.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    let mut any = false;
    for &b in s {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

/// The send timestamp (`"t":<ns>`) carried in a payload.
pub(crate) fn timestamp(m: &[u8]) -> Option<u64> {
    find(m, br#""t":"#).and_then(|i| parse_u64(&m[i..]))
}

/// Append a masked client frame.
pub(crate) fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    const MASK: [u8; 4] = [0x5a, 0x1c, 0xe3, 0x07];
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= MASK[i & 3];
    }
}

/// One frame parsed from the start of a buffer.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) opcode: u8,
    /// Payload position in the buffer.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Parse the frame at the start of `buf`, if it is complete. Server frames are not masked
/// (a masked one is unmasked in place).
pub(crate) fn parse_frame(buf: &mut [u8]) -> Option<Frame> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut pos) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (usize::try_from(u64::from_be_bytes(b)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let mut mask = [0u8; 4];
    if masked {
        if buf.len() < pos + 4 {
            return None;
        }
        mask.copy_from_slice(&buf[pos..pos + 4]);
        pos += 4;
    }
    if buf.len() < pos + len {
        return None;
    }
    if masked {
        for (i, b) in buf[pos..pos + len].iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
    }
    Some(Frame {
        opcode,
        start: pos,
        end: pos + len,
    })
}

/// The length of a frame header that needs `len` payload bytes (for buffer sizing).
pub(crate) fn needed(buf: &[u8]) -> Option<usize> {
    if buf.len() < 2 {
        return None;
    }
    let extra = if buf[1] & 0x80 != 0 { 4 } else { 0 };
    match buf[1] & 0x7f {
        126 if buf.len() >= 4 => {
            Some(4 + extra + usize::from(u16::from_be_bytes([buf[2], buf[3]])))
        }
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            usize::try_from(u64::from_be_bytes(b))
                .ok()
                .map(|n| n + 10 + extra)
        }
        126 | 127 => None,
        n => Some(2 + extra + usize::from(n)),
    }
}

/// Options of one dial.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dial {
    pub(crate) server: SocketAddr,
    pub(crate) source: Ipv4Addr,
    pub(crate) proto: Proto,
    /// A small receive buffer (for slow consumers), set before connecting.
    pub(crate) recv_buffer: Option<u32>,
}

/// A connected, upgraded (and for Socket.IO, namespace-connected) stream, with the bytes read
/// past the handshake.
pub(crate) struct Connected {
    pub(crate) stream: TcpStream,
    pub(crate) leftover: Vec<u8>,
}

/// Connect, upgrade, and for Socket.IO wait for the open packet, connect to `/` and wait for
/// the answer.
pub(crate) async fn dial(d: Dial) -> io::Result<Connected> {
    dial_settled(d, || async { Ok(()) }).await
}

/// [`dial`], awaiting `settle()` before each message the client sends: after the TCP connect
/// (before the upgrade request) and, for Socket.IO, after the open packet (before the namespace
/// connect). With a `settle` that waits until the server is idle (`wsu-bench counts`), each
/// step of the handshake finds the server asleep, so what the server does for it does not
/// depend on timing (whether the request is already there when the connection is accepted).
pub(crate) async fn dial_settled<F, Fut>(d: Dial, settle: F) -> io::Result<Connected>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = io::Result<()>>,
{
    let socket = TcpSocket::new_v4()?;
    if let Some(n) = d.recv_buffer {
        socket.set_recv_buffer_size(n)?;
    }
    socket.bind(SocketAddr::V4(SocketAddrV4::new(d.source, 0)))?;
    let mut stream = socket.connect(d.server).await?;
    stream.set_nodelay(true)?;
    settle().await?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        d.proto.path(),
        d.server
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during upgrade",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 16 * 1024 {
            return Err(io::Error::other("upgrade response too large"));
        }
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(&buf[..buf.len().min(80)]).into_owned();
        return Err(io::Error::other(format!("upgrade refused: {line}")));
    }
    let mut rest = buf.split_off(head_end);
    if d.proto == Proto::Sio {
        // 0{"sid":...}  then  → 40  ← 40{"sid":...}
        expect_text(&mut stream, &mut rest, b"0").await?;
        settle().await?;
        let mut out = Vec::new();
        push_frame(&mut out, 1, b"40");
        stream.write_all(&out).await?;
        expect_text(&mut stream, &mut rest, b"40").await?;
    }
    Ok(Connected {
        stream,
        leftover: rest,
    })
}

/// Read until a text frame arrives; it must start with `prefix`.
async fn expect_text(stream: &mut TcpStream, buf: &mut Vec<u8>, prefix: &[u8]) -> io::Result<()> {
    loop {
        if let Some(f) = parse_frame(buf) {
            let (op, start, end) = (f.opcode, f.start, f.end);
            let ok = op == 1 && buf[start..end].starts_with(prefix);
            let ping = op == 1 && &buf[start..end] == b"2";
            let text = String::from_utf8_lossy(&buf[start..end]).into_owned();
            buf.drain(..end);
            if ping {
                // Engine.IO servers may ping at once (socketioxide does): answer, keep waiting.
                let mut out = Vec::new();
                push_frame(&mut out, 1, b"3");
                stream.write_all(&out).await?;
                continue;
            }
            if op == 1 {
                return if ok {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "unexpected handshake message {text}"
                    )))
                };
            }
            continue;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during connect",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for len in [0usize, 5, 125, 126, 1000, 70_000] {
            let payload = vec![b'x'; len];
            let mut out = Vec::new();
            push_frame(&mut out, 1, &payload);
            let mut buf = out.clone();
            assert_eq!(needed(&buf), Some(buf.len()));
            let f = parse_frame(&mut buf).expect("complete frame");
            assert_eq!(f.opcode, 1);
            assert_eq!(&buf[f.start..f.end], &payload[..]);
            assert!(parse_frame(&mut out[..out.len() - 1].to_vec()).is_none());
        }
    }

    #[test]
    fn classify_messages() {
        let w = Proto::Wsu;
        assert_eq!(
            w.classify(br#"{"type":"event","namespace":"/","event":"msg","data":{"t":5}}"#),
            Incoming::Msg
        );
        assert_eq!(
            w.classify(
                br#"{"type":"ack","namespace":"/","event":"echo","data":{"t":1},"ackId":"42"}"#
            ),
            Incoming::Ack(42)
        );
        assert_eq!(
            w.classify(br#"{"type":"error","namespace":"/","error":"x"}"#),
            Incoming::Error
        );
        let s = Proto::Sio;
        assert_eq!(s.classify(br#"42["msg",{"t":5}]"#), Incoming::Msg);
        assert_eq!(s.classify(br#"4317[{"t":5}]"#), Incoming::Ack(17));
        assert_eq!(s.classify(b"2"), Incoming::Other);
        assert_eq!(timestamp(br#"42["msg",{"t":12345,"p":"x"}]"#), Some(12345));
    }
}
