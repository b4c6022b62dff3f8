//! Errors of the client API, and the error reports delivered to [`ClientBuilder::on_error`].
//!
//! [`ClientBuilder::on_error`]: super::ClientBuilder::on_error

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::HandlerError;

/// Why a client operation (connecting, emitting, joining) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL, a header or a query parameter cannot form a WebSocket request.
    InvalidRequest(String),
    /// An option has a value that cannot work (for example a read timeout not longer than the
    /// ping interval).
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A namespace, room or event name breaks the naming rules (see `PROTOCOL.md` §2).
    InvalidName(String),
    /// Two handlers were registered for the same event of the same namespace.
    DuplicateHandler {
        /// The namespace.
        namespace: String,
        /// The event.
        event: String,
    },
    /// The payload could not be serialized to JSON.
    Encode(serde_json::Error),
    /// The TCP connection or the WebSocket handshake failed.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// A `wss://` connection failed at the TLS layer: the server's certificate is not trusted
    /// (`invalid peer certificate: UnknownIssuer` for a self-signed or private-CA certificate
    /// without a matching [`tls_config`](super::ClientBuilder::tls_config)), does not name the
    /// host, has expired, or the handshake failed; or no root certificates could be loaded. Only
    /// with the features `client-tls` or `client-tls-native-roots`.
    Tls(Box<dyn std::error::Error + Send + Sync>),
    /// The server answered the upgrade request with this HTTP status instead of `101` (for
    /// example `403` for a refused Origin, `404` for a wrong path, `503` at capacity or while
    /// shutting down).
    Http(u16),
    /// Connecting (TCP, WebSocket handshake, and the server accepting the connection) took longer
    /// than the connect timeout.
    Timeout,
    /// The server closed the connection before accepting it, for example with `4500` when its
    /// connect hook refused the credentials. `code` is `None` when the connection dropped without
    /// a close frame.
    Refused {
        /// The close code.
        code: Option<u16>,
        /// The close reason.
        reason: String,
    },
    /// The client is disconnected and its offline buffer is full: the message was not queued
    /// (see [`ClientBuilder::offline_buffer`](super::ClientBuilder::offline_buffer)).
    BufferFull,
    /// The client is closed: [`Client::close`](super::Client::close) was called, it gave up
    /// reconnecting, or the server closed with a code that forbids reconnecting.
    Closed,
    /// The encoded message (`size` bytes) is larger than the server's maximum message size
    /// (`limit` bytes, from its `hello` frame): it was not sent, since the server would close the
    /// connection with `1009`. Checked by [`emit`](super::Client::emit),
    /// [`emit_with_ack`](super::Client::emit_with_ack) and the joins and leaves, once a server
    /// that sends `hello` has been reached.
    MessageTooBig {
        /// The size of the encoded message, in bytes.
        size: usize,
        /// The server's `maxMessageSize`, in bytes.
        limit: usize,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidRequest(reason) => write!(f, "invalid request: {reason}"),
            ClientError::InvalidOption { option, reason } => {
                write!(f, "invalid option `{option}`: {reason}")
            }
            ClientError::InvalidName(reason) => write!(f, "invalid name: {reason}"),
            ClientError::DuplicateHandler { namespace, event } => write!(
                f,
                "duplicate handler for event `{event}` in namespace `{namespace}`"
            ),
            ClientError::Encode(_) => f.write_str("payload could not be serialized"),
            ClientError::Connect(e) => write!(f, "could not connect: {e}"),
            ClientError::Tls(e) => write!(f, "tls failed: {e}"),
            ClientError::Http(status) => {
                write!(
                    f,
                    "the server refused the upgrade with http status {status}"
                )
            }
            ClientError::Timeout => f.write_str("connecting timed out"),
            ClientError::Refused { code, reason } => match code {
                Some(code) => write!(f, "the server closed the connection ({code}): {reason}"),
                None => write!(f, "the connection dropped before it was ready: {reason}"),
            },
            ClientError::BufferFull => f.write_str("disconnected and the offline buffer is full"),
            ClientError::Closed => f.write_str("client closed"),
            ClientError::MessageTooBig { size, limit } => write!(
                f,
                "message of {size} bytes is larger than the server's maximum message size of {limit} bytes"
            ),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Encode(e) => Some(e),
            ClientError::Connect(e) | ClientError::Tls(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Why a request that waits for an answer ([`emit_with_ack`](super::Client::emit_with_ack),
/// [`join`](super::Client::join), [`ping`](super::Client::ping)...) did not produce a value.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientAckError {
    /// No answer arrived within the timeout. A request still waiting in the offline buffer when
    /// its timeout expires is not sent at all.
    Timeout,
    /// The connection dropped after the request was sent and before its answer arrived. The
    /// request is **not** re-sent automatically: the server may or may not have handled it.
    Disconnected,
    /// The server answered with an `error` carrying this request's `ackId`: the handler returned
    /// an error, the payload did not decode (`invalid payload: …`), the event is unknown, the
    /// namespace is not joined, a join was refused...
    Server {
        /// The `error` text.
        message: String,
        /// The typed error body (`data`), when the handler sent one.
        data: Option<Box<RawValue>>,
    },
    /// The answer arrived but its `data` did not decode into the expected type.
    Decode(serde_json::Error),
    /// The client is closed (see [`ClientError::Closed`]).
    Closed,
    /// The request could not be queued.
    Send(ClientError),
}

impl ClientAckError {
    /// For [`ClientAckError::Server`] with a typed body: the body decoded as `T`.
    ///
    /// ```
    /// # use wsu::client::ClientAckError;
    /// #[derive(serde::Deserialize)]
    /// struct Details { field: String }
    /// let data = serde_json::value::to_raw_value(&serde_json::json!({"field": "nick"})).ok();
    /// let err = ClientAckError::Server { message: "nickname taken".into(), data };
    /// let details: Details = err.server_data().expect("a body").expect("decodes");
    /// assert_eq!(details.field, "nick");
    /// ```
    pub fn server_data<T: DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        match self {
            ClientAckError::Server {
                data: Some(data), ..
            } => Some(serde_json::from_str(data.get())),
            _ => None,
        }
    }
}

impl fmt::Display for ClientAckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAckError::Timeout => f.write_str("no answer within the timeout"),
            ClientAckError::Disconnected => {
                f.write_str("the connection dropped before the answer arrived")
            }
            ClientAckError::Server { message, .. } => write!(f, "server error: {message}"),
            ClientAckError::Decode(_) => f.write_str("answer data did not decode"),
            ClientAckError::Closed => f.write_str("client closed"),
            ClientAckError::Send(_) => f.write_str("request could not be sent"),
        }
    }
}

impl std::error::Error for ClientAckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientAckError::Decode(e) => Some(e),
            ClientAckError::Send(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ClientError> for ClientAckError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Closed => ClientAckError::Closed,
            other => ClientAckError::Send(other),
        }
    }
}

/// A failure that no awaiting call can report, delivered to
/// [`ClientBuilder::on_error`](super::ClientBuilder::on_error).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ErrorEvent {
    /// An `error` message from the server that answers no pending request of this client: the
    /// answer to an [`emit`](super::Client::emit) without ack (for example `unknown event` or
    /// `namespace not joined`), or to an invalid message.
    Server {
        /// The namespace the error is about.
        namespace: String,
        /// The event, when the error names one.
        event: Option<String>,
        /// The `error` text.
        message: String,
        /// The typed error body, if any.
        data: Option<Box<RawValue>>,
    },
    /// Re-joining a namespace or room after a reconnection failed; the membership is forgotten.
    RejoinFailed {
        /// The namespace.
        namespace: String,
        /// The room, for a room membership.
        room: Option<String>,
        /// The server's `error` text.
        message: String,
    },
    /// A local handler failed (its payload did not decode, it returned `Err`, or it panicked) for
    /// an event the server sent without an `ackId`, so there is nobody to answer.
    Handler {
        /// The event's namespace.
        namespace: String,
        /// The event.
        event: String,
        /// The error.
        error: HandlerError,
    },
}

impl fmt::Display for ErrorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorEvent::Server {
                namespace,
                event,
                message,
                ..
            } => match event {
                Some(event) => write!(f, "server error in {namespace} ({event}): {message}"),
                None => write!(f, "server error in {namespace}: {message}"),
            },
            ErrorEvent::RejoinFailed {
                namespace,
                room,
                message,
            } => match room {
                Some(room) => write!(f, "rejoining room {room} of {namespace} failed: {message}"),
                None => write!(f, "rejoining namespace {namespace} failed: {message}"),
            },
            ErrorEvent::Handler {
                namespace,
                event,
                error,
            } => write!(f, "handler for {event} in {namespace} failed: {error}"),
        }
    }
}
