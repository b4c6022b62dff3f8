//! `wsu::Typed<T>` payloads end to end: validated as `T`, relayed byte for byte, in a
//! `#[ws_event]` function and in a closure registered with `ServerBuilder::on`.

use serde::Deserialize;
use serde_json::json;
use wsu::{HandlerError, IntoErrorBody, Json, SendError, Server, Socket, Typed, ws_event};
use wsu_tests::{Client, TestServer};

#[derive(Debug, Deserialize)]
struct Chat {
    user: String,
    message: String,
}

/// Relay to the others; ack with what the handler read from `T`.
#[ws_event]
async fn relay(socket: Socket, msg: Typed<Chat>) -> Result<String, HandlerError> {
    if msg.user.is_empty() {
        return Err(HandlerError::new("who are you?"));
    }
    socket
        .broadcast()
        .emit("relay", &msg)
        .map_err(IntoErrorBody::into_error_body)?;
    Ok(format!("{} said {}", msg.user, msg.message))
}

/// `data` is optional: a missing one is `null`, relayed as such.
#[ws_event]
async fn maybe(socket: Socket, msg: Typed<Option<Chat>>) -> Result<bool, HandlerError> {
    socket
        .broadcast()
        .emit("maybe", &msg)
        .map_err(IntoErrorBody::into_error_body)?;
    Ok(msg.is_some())
}

fn server() -> Server {
    Server::builder()
        .collect_registered(false)
        .handler(relay)
        .handler(maybe)
        .on(
            "relay_closure",
            |socket: Socket, msg: Typed<Chat>| async move {
                socket.broadcast().emit("relay_closure", &msg)?;
                Ok::<_, SendError>(Json(msg.into_inner().user))
            },
        )
        .build()
        .expect("build")
}

/// Two connections in `/`: the sender and the other.
async fn pair(server: &TestServer) -> (Client, Client) {
    let mut other = server.client().await;
    other.ready().await;
    let mut sender = server.client().await;
    sender.ready().await;
    (sender, other)
}

/// A payload with what typed decoding would lose: an unknown field, a 30-digit integer, a
/// decimal with a trailing zero, key order and spacing.
const DATA: &str =
    r#"{"message":"hi" , "n":123456789012345678901234567890,"user":"ann","x":[1.50, {"y":null}]}"#;

#[tokio::test]
async fn a_ws_event_relays_the_data_byte_for_byte_and_reads_it_typed() {
    let server = TestServer::start(server()).await;
    let (mut sender, mut other) = pair(&server).await;
    sender
        .send_text(&format!(
            r#"{{"type":"event","event":"relay","data":{DATA},"ackId":"r1"}}"#
        ))
        .await;
    assert_eq!(
        sender.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "relay", "data": "ann said hi", "ackId": "r1"})
    );
    assert_eq!(
        other.recv_text().await,
        format!(r#"{{"type":"event","namespace":"/","event":"relay","data":{DATA}}}"#)
    );
    // The handler's own validation still runs on the typed value.
    sender
        .emit_ack("relay", json!({"user": "", "message": "x"}), "r2")
        .await;
    assert_eq!(
        sender.recv().await,
        json!({"type": "error", "namespace": "/", "event": "relay", "ackId": "r2", "error": "who are you?"})
    );
    other.expect_quiet().await;
}

#[tokio::test]
async fn a_closure_relays_the_data_byte_for_byte() {
    let server = TestServer::start(server()).await;
    let (mut sender, mut other) = pair(&server).await;
    sender
        .send_text(&format!(
            r#"{{"type":"event","event":"relay_closure","data":{DATA},"ackId":"c1"}}"#
        ))
        .await;
    assert_eq!(
        sender.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "relay_closure", "data": "ann", "ackId": "c1"})
    );
    assert_eq!(
        other.recv_text().await,
        format!(r#"{{"type":"event","namespace":"/","event":"relay_closure","data":{DATA}}}"#)
    );
}

#[tokio::test]
async fn data_that_does_not_decode_as_t_is_refused_before_the_handler() {
    let server = TestServer::start(server()).await;
    let (mut sender, mut other) = pair(&server).await;
    sender
        .emit_ack("relay", json!({"user": "ann", "n": 1}), "bad")
        .await;
    assert_eq!(
        sender.recv().await,
        json!({
            "type": "error", "namespace": "/", "event": "relay", "ackId": "bad",
            "error": "invalid payload: missing field `message` at line 1 column 20"
        })
    );
    sender
        .send(json!({"type": "event", "event": "relay", "ackId": "none"}))
        .await;
    assert_eq!(
        sender.recv().await,
        json!({
            "type": "error", "namespace": "/", "event": "relay", "ackId": "none",
            "error": "invalid payload: invalid type: null, expected struct Chat at line 1 column 4"
        })
    );
    other.expect_quiet().await;
}

#[tokio::test]
async fn a_missing_data_decodes_from_null() {
    let server = TestServer::start(server()).await;
    let (mut sender, mut other) = pair(&server).await;
    sender
        .send(json!({"type": "event", "event": "maybe", "ackId": "m1"}))
        .await;
    assert_eq!(
        sender.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "maybe", "data": false, "ackId": "m1"})
    );
    assert_eq!(
        other.recv_text().await,
        r#"{"type":"event","namespace":"/","event":"maybe","data":null}"#
    );
}
