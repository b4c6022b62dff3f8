//! The inter-node format, version 1 (`PROTOCOL.md`, "Between nodes").
//!
//! A message is one line of JSON (the header) and, after a `\n`, a body of bytes: for a
//! broadcast the complete client frame, serialized once by the sending node and written as-is
//! by every receiving node; for a broadcast with ack the event's `data`; empty otherwise.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The version in every header; a node drops (and counts) messages of another version.
pub(crate) const VERSION: u32 = 1;

/// Whom a broadcast or a query addresses on each node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Filter {
    pub(crate) ns: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) rooms: Vec<String>,
    /// Connection ids (16 hex characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) except: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) except_rooms: Vec<String>,
    /// Only these connection ids (when not empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) only: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// A broadcast; body: the client frame.
    #[serde(rename = "b")]
    Broadcast,
    /// A heartbeat; `init`: answer with a heartbeat at once (the sender just started).
    #[serde(rename = "hb")]
    Heartbeat,
    /// The node is leaving.
    #[serde(rename = "bye")]
    Bye,
    /// A request; answers go to the sender's node topic.
    #[serde(rename = "req")]
    Request,
    /// An answer to request `id`.
    #[serde(rename = "res")]
    Response,
    /// A presence change (joins/leaves) in the filter's room; body: the client frame. Receivers
    /// deliver it to their members of the room and keep it in their replica.
    #[serde(rename = "p")]
    Presence,
}

/// A request's operation, applied to the connections the header's filter selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Op {
    /// The selected connections, with their rooms.
    Sockets,
    /// Rooms with members in the namespace.
    Rooms,
    /// Close the selected connections.
    Disconnect,
    /// Put the selected connections in a room.
    Join { room: String },
    /// Take the selected connections out of a room.
    Leave { room: String },
    /// Send `event` (body: its data) to the selected connections, each with an ack, and report
    /// the count at once and the answers when all are in or `timeout_ms` passed.
    BroadcastAck { event: String, timeout_ms: u64 },
}

/// One connection, as a query reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireSocket {
    pub(crate) id: String,
    pub(crate) rooms: Vec<String>,
}

/// One client's answer to a broadcast with ack.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireAck {
    pub(crate) id: String,
    /// The ack's `data`, as JSON text (a `RawValue` cannot sit in an internally tagged enum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ok: Option<String>,
    /// `timeout`, `closed`, or the client's error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) err: Option<String>,
    /// The `data` of the client's error, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) err_data: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Res {
    Sockets { sockets: Vec<WireSocket> },
    Rooms { rooms: Vec<String> },
    Count { n: usize },
    AckCount { n: usize },
    Acks { acks: Vec<WireAck> },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) v: u32,
    /// The sending node.
    pub(crate) node: String,
    pub(crate) kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) filter: Option<Filter>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) init: bool,
    /// Request id (requests and responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) op: Option<Op>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) res: Option<Res>,
}

impl Header {
    pub(crate) fn new(node: &str, kind: Kind) -> Self {
        Header {
            v: VERSION,
            node: node.to_owned(),
            kind,
            filter: None,
            init: false,
            id: None,
            op: None,
            res: None,
        }
    }
}

/// Encode a header and a body.
pub(crate) fn encode(header: &Header, body: &[u8]) -> Bytes {
    // serde_json escapes newlines inside strings: the header is one line.
    let head = serde_json::to_vec(header).unwrap_or_default();
    let mut buf = BytesMut::with_capacity(head.len() + 1 + body.len());
    buf.put_slice(&head);
    buf.put_u8(b'\n');
    buf.put_slice(body);
    buf.freeze()
}

/// Why a message could not be decoded.
#[derive(Debug)]
pub(crate) enum DecodeError {
    Malformed(String),
    Version(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(e) => write!(f, "malformed: {e}"),
            DecodeError::Version(v) => write!(f, "format version {v}, this node speaks {VERSION}"),
        }
    }
}

/// Decode a message into its header and body (the body shares the payload's buffer).
pub(crate) fn decode(payload: &Bytes) -> Result<(Header, Bytes), DecodeError> {
    let nl = payload
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| DecodeError::Malformed("no header line".into()))?;
    let header: Header = serde_json::from_slice(&payload[..nl])
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if header.v != VERSION {
        return Err(DecodeError::Version(header.v));
    }
    Ok((header, payload.slice(nl + 1..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = Header::new("abc", Kind::Broadcast);
        h.filter = Some(Filter {
            ns: "/".into(),
            rooms: vec!["a\nb".into()],
            except: vec!["0123456789abcdef".into()],
            except_rooms: vec![],
            only: vec![],
        });
        let body = br#"{"type":"event","event":"x"}"#;
        let bytes = encode(&h, body);
        let (h2, b2) = decode(&bytes).unwrap();
        assert_eq!(h2.kind, Kind::Broadcast);
        assert_eq!(h2.filter, h.filter);
        assert_eq!(&b2[..], body);
    }

    #[test]
    fn requests_and_versions() {
        let mut h = Header::new("n", Kind::Request);
        h.id = Some(7);
        h.op = Some(Op::Join { room: "r".into() });
        let text = String::from_utf8(encode(&h, b"").to_vec()).unwrap();
        assert!(text.contains(r#""op":{"t":"join","room":"r"}"#), "{text}");
        let other = Bytes::from(text.replace(r#""v":1"#, r#""v":2"#));
        assert!(matches!(decode(&other), Err(DecodeError::Version(2))));
        assert!(matches!(
            decode(&Bytes::from_static(b"garbage")),
            Err(DecodeError::Malformed(_))
        ));
    }
}
