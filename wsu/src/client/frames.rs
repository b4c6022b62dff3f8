//! The client's messages, encoded with the shared envelope encoder, and the one field of server
//! messages that the shared decoder does not keep (`error`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::ClientError;
use crate::protocol::MessageType;
use crate::protocol::envelope::Outgoing;
use crate::protocol::names;

/// Encodes a message whose payload is raw JSON (or absent): cannot fail in practice.
fn encode_raw(msg: &Outgoing<'_, RawValue>) -> Utf8Bytes {
    match msg.encode() {
        Ok(s) => Utf8Bytes::from(s),
        // Unreachable: every field is a string or raw JSON.
        Err(_) => Utf8Bytes::from_static(r#"{"type":"ping","namespace":"/"}"#),
    }
}

/// Checks a namespace name as the server will.
pub(crate) fn check_namespace(namespace: &str) -> Result<(), ClientError> {
    names::validate_namespace(namespace)
        .map_err(|e| ClientError::InvalidName(format!("namespace `{namespace}` {e}")))
}

/// Checks the name of an event the client sends (reserved names are refused by the server).
pub(crate) fn check_event(event: &str) -> Result<(), ClientError> {
    names::validate_event(event)
        .map_err(|e| ClientError::InvalidName(format!("event `{event}` {e}")))
}

/// Checks a room name.
pub(crate) fn check_room(room: &str) -> Result<(), ClientError> {
    names::validate_room(room).map_err(|e| ClientError::InvalidName(format!("room `{room}` {e}")))
}

/// Checks the name of an event a handler is registered for: the server may emit any non-empty
/// name without control characters, reserved names included (the seed example emits `error`).
pub(crate) fn check_handler_event(event: &str) -> Result<(), ClientError> {
    names::validate_room(event)
        .map_err(|e| ClientError::InvalidName(format!("event `{event}` {e}")))
}

/// `{"type":"event","namespace":…,"event":…,"data":…,"ackId":…}`.
pub(crate) fn event<T: Serialize + ?Sized>(
    namespace: &str,
    event: &str,
    data: &T,
    ack_id: Option<&str>,
) -> Result<Utf8Bytes, ClientError> {
    let mut msg = Outgoing::<T>::new(MessageType::Event);
    msg.namespace = Some(namespace);
    msg.event = Some(event);
    msg.data = Some(data);
    msg.ack_id = ack_id;
    msg.encode()
        .map(Utf8Bytes::from)
        .map_err(ClientError::Encode)
}

/// `{"type":"join"|"leave","namespace":…,"room":…,"ackId":…}`.
pub(crate) fn membership(
    kind: MessageType,
    namespace: &str,
    room: Option<&str>,
    ack_id: &str,
) -> Utf8Bytes {
    let mut msg = Outgoing::<RawValue>::new(kind);
    msg.namespace = Some(namespace);
    msg.room = room;
    msg.ack_id = Some(ack_id);
    encode_raw(&msg)
}

/// `{"type":"ping"|"pong","namespace":…}`.
pub(crate) fn ping_pong(kind: MessageType, namespace: &str) -> Utf8Bytes {
    let mut msg = Outgoing::<RawValue>::new(kind);
    msg.namespace = Some(namespace);
    encode_raw(&msg)
}

/// The answer to a server request: `{"type":"ack","namespace":…,"event":…,"data":…,"ackId":…}`.
pub(crate) fn ack(
    namespace: &str,
    event: &str,
    ack_id: &str,
    data: Option<&RawValue>,
) -> Utf8Bytes {
    let mut msg = Outgoing::<RawValue>::new(MessageType::Ack);
    msg.namespace = Some(namespace);
    msg.event = Some(event);
    msg.data = data;
    msg.ack_id = Some(ack_id);
    encode_raw(&msg)
}

/// A failed answer to a server request, shaped like the server's own error answers.
pub(crate) fn error(
    namespace: &str,
    event: &str,
    ack_id: &str,
    message: &str,
    data: Option<&RawValue>,
) -> Utf8Bytes {
    let mut msg = Outgoing::<RawValue>::new(MessageType::Error);
    msg.namespace = Some(namespace);
    msg.event = Some(event);
    msg.data = data;
    msg.ack_id = Some(ack_id);
    msg.error = Some(message);
    encode_raw(&msg)
}

/// The `error` text of a server `error` message (the shared decoder ignores that key).
pub(crate) fn error_text(frame: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorField<'a> {
        #[serde(borrow, default)]
        error: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<ErrorField<'_>>(frame)
        .ok()
        .and_then(|f| f.error)
        .map_or_else(String::new, Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_exact() {
        assert_eq!(
            event("/", "chat", &serde_json::json!({"a": 1}), Some("7"))
                .unwrap()
                .as_str(),
            r#"{"type":"event","namespace":"/","event":"chat","data":{"a":1},"ackId":"7"}"#
        );
        assert_eq!(
            event("/x", "e", &(), None).unwrap().as_str(),
            r#"{"type":"event","namespace":"/x","event":"e","data":null}"#
        );
        assert_eq!(
            membership(MessageType::Join, "/", Some("lobby"), "1").as_str(),
            r#"{"type":"join","namespace":"/","room":"lobby","ackId":"1"}"#
        );
        assert_eq!(
            membership(MessageType::Leave, "/chat", None, "2").as_str(),
            r#"{"type":"leave","namespace":"/chat","ackId":"2"}"#
        );
        assert_eq!(
            ping_pong(MessageType::Ping, "/").as_str(),
            r#"{"type":"ping","namespace":"/"}"#
        );
        let data = serde_json::value::to_raw_value(&42).unwrap();
        assert_eq!(
            ack("/", "q", "3", Some(&data)).as_str(),
            r#"{"type":"ack","namespace":"/","event":"q","data":42,"ackId":"3"}"#
        );
        assert_eq!(
            error("/", "q", "4", "nope", None).as_str(),
            r#"{"type":"error","namespace":"/","event":"q","ackId":"4","error":"nope"}"#
        );
    }

    #[test]
    fn error_text_reads_the_error_key() {
        assert_eq!(
            error_text(br#"{"type":"error","namespace":"/","error":"unknown event"}"#),
            "unknown event"
        );
        assert_eq!(error_text(br#"{"type":"error","error":"a\"b"}"#), "a\"b");
        assert_eq!(error_text(br#"{"type":"error"}"#), "");
    }

    #[test]
    fn name_checks() {
        assert!(check_event("error").is_err());
        assert!(check_handler_event("error").is_ok());
        assert!(check_namespace("chat").is_err());
        assert!(check_room("").is_err());
    }
}
