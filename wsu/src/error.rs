//! Error types of the public API.

use std::fmt;

use crate::protocol::names::NameError;

/// Why a server could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A namespace, room or event name breaks the naming rules (see `PROTOCOL.md`).
    InvalidName {
        /// What kind of name: `namespace`, `event`.
        what: &'static str,
        /// The offending name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Two handlers were registered for the same event of the same namespace.
    DuplicateHandler {
        /// The namespace.
        namespace: String,
        /// The event.
        event: String,
        /// Where the first one was registered (`file:line`), when known.
        first: Option<String>,
        /// Where the second one was registered (`file:line`), when known.
        second: Option<String>,
    },
    /// An origin in the allow-list could not be parsed.
    InvalidOrigin(crate::InvalidOrigin),
    /// [`ServerBuilder::handler`](crate::ServerBuilder::handler) was given a function that is not
    /// annotated with `#[ws_event]`, `#[ws_connect]` or `#[ws_disconnect]`.
    NotRegistered {
        /// The function's type name.
        name: String,
    },
    /// A handler takes `State<T>` but no `T` was registered with
    /// [`ServerBuilder::state`](crate::ServerBuilder::state).
    MissingState {
        /// The handler.
        handler: String,
        /// The state type.
        state: String,
    },
    /// Two connect (or disconnect) hooks for the same namespace.
    DuplicateHook {
        /// The namespace.
        namespace: String,
        /// `connect` or `disconnect`.
        hook: &'static str,
        /// Where the second one was registered.
        location: String,
    },
    /// An option has a value that cannot work (for example a zero timeout).
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl BuildError {
    pub(crate) fn name(what: &'static str, name: &str, err: NameError) -> Self {
        BuildError::InvalidName {
            what,
            name: name.to_owned(),
            reason: err.to_string(),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidName { what, name, reason } => {
                write!(f, "invalid {what} name `{name}`: {reason}")
            }
            BuildError::DuplicateHandler {
                namespace,
                event,
                first,
                second,
            } => {
                write!(
                    f,
                    "duplicate handler for event `{event}` in namespace `{namespace}`"
                )?;
                if let (Some(a), Some(b)) = (first, second) {
                    write!(f, ": registered at {a} and at {b}")?;
                }
                Ok(())
            }
            BuildError::InvalidOrigin(e) => write!(f, "{e}"),
            BuildError::NotRegistered { name } => {
                write!(
                    f,
                    "`{name}` is not a #[ws_event], #[ws_connect] or #[ws_disconnect] function"
                )
            }
            BuildError::MissingState { handler, state } => write!(
                f,
                "handler `{handler}` takes `State<{state}>` but no `{state}` was registered with `ServerBuilder::state`"
            ),
            BuildError::DuplicateHook {
                namespace,
                hook,
                location,
            } => {
                write!(
                    f,
                    "a second {hook} hook for namespace `{namespace}` at {location}"
                )
            }
            BuildError::InvalidOption { option, reason } => {
                write!(f, "invalid option `{option}`: {reason}")
            }
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::InvalidOrigin(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a message could not be queued for sending.
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed (or closing).
    Closed,
    /// The connection's outbound queue is full; the message was dropped (and, under
    /// [`SlowConsumerPolicy::Disconnect`](crate::SlowConsumerPolicy), the connection is being
    /// closed with 4001).
    QueueFull,
    /// The message is larger than the outbound queue's byte bound.
    TooLarge,
    /// The event or namespace name breaks the naming rules.
    InvalidName(String),
    /// The payload could not be serialized to JSON.
    Encode(serde_json::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("connection closed"),
            SendError::QueueFull => f.write_str("outbound queue full"),
            SendError::TooLarge => f.write_str("message larger than the outbound queue bound"),
            SendError::InvalidName(reason) => write!(f, "invalid name: {reason}"),
            SendError::Encode(_) => f.write_str("payload could not be serialized"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

/// Why an [`emit_with_ack`](crate::Socket::emit_with_ack) did not produce a value.
#[derive(Debug)]
#[non_exhaustive]
pub enum AckError {
    /// No ack arrived within the timeout.
    Timeout,
    /// The connection closed before the ack arrived.
    Closed,
    /// The connection already has the maximum number of acks pending.
    TooManyPending,
    /// The event could not be sent.
    Send(SendError),
    /// The ack arrived but its `data` did not decode into the expected type.
    Decode(serde_json::Error),
    /// The client answered with an `error` carrying the `ackId` (its handler failed): the
    /// error's text and `data`.
    Rejected(crate::HandlerError),
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::Timeout => f.write_str("ack timed out"),
            AckError::Closed => f.write_str("connection closed before the ack arrived"),
            AckError::TooManyPending => f.write_str("too many acks pending on this connection"),
            AckError::Send(_) => f.write_str("event could not be sent"),
            AckError::Decode(_) => f.write_str("ack data did not decode"),
            AckError::Rejected(e) => write!(f, "the client answered with an error: {e}"),
        }
    }
}

impl std::error::Error for AckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AckError::Send(e) => Some(e),
            AckError::Decode(e) => Some(e),
            AckError::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SendError> for AckError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Closed => AckError::Closed,
            other => AckError::Send(other),
        }
    }
}

/// Why a connection could not join a namespace or room.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// The connection is closed.
    Closed,
    /// The namespace is neither declared nor allowed by
    /// [`ServerBuilder::allow_namespaces`](crate::ServerBuilder::allow_namespaces).
    UnknownNamespace,
    /// The connection is already in the maximum number of namespaces.
    TooManyNamespaces,
    /// The connection is already in the maximum number of rooms.
    TooManyRooms,
    /// The namespace or room name breaks the naming rules.
    InvalidName(String),
    /// A namespace connect hook refused the join.
    Refused(String),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Closed => f.write_str("connection closed"),
            JoinError::UnknownNamespace => f.write_str("unknown namespace"),
            JoinError::TooManyNamespaces => f.write_str("too many namespaces"),
            JoinError::TooManyRooms => f.write_str("too many rooms"),
            JoinError::InvalidName(reason) => write!(f, "invalid name: {reason}"),
            JoinError::Refused(reason) => write!(f, "join refused: {reason}"),
        }
    }
}

impl std::error::Error for JoinError {}
