//! The server's answers to client requests, encoded once: `ack`, `error` and `pong`.

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::MessageType;
use crate::protocol::envelope::Outgoing;

/// The `error` text of a request whose handler or hook panicked or timed out. Its details go to
/// the log only.
pub(crate) const INTERNAL_ERROR: &str = "internal error";

/// Encode a server→client message of raw parts (strings and raw JSON).
fn encode(msg: &Outgoing<'_, RawValue>) -> Utf8Bytes {
    Utf8Bytes::from(msg.encode_raw())
}

/// An `error` message.
pub(crate) fn error_frame(
    namespace: &str,
    event: Option<&str>,
    ack_id: Option<&str>,
    error: &str,
    data: Option<&RawValue>,
) -> Utf8Bytes {
    let mut m = Outgoing::<RawValue>::new(MessageType::Error);
    m.namespace = Some(namespace);
    m.event = event;
    m.ack_id = ack_id;
    m.error = Some(error);
    m.data = data;
    encode(&m)
}

/// An `ack` message.
pub(crate) fn ack_frame(
    namespace: &str,
    event: Option<&str>,
    ack_id: &str,
    data: Option<&RawValue>,
) -> Utf8Bytes {
    let mut m = Outgoing::<RawValue>::new(MessageType::Ack);
    m.namespace = Some(namespace);
    m.event = event;
    m.ack_id = Some(ack_id);
    m.data = data;
    encode(&m)
}

/// A `pong` message.
pub(crate) fn pong_frame(namespace: &str) -> Utf8Bytes {
    let mut m = Outgoing::<RawValue>::new(MessageType::Pong);
    m.namespace = Some(namespace);
    encode(&m)
}
