//! Broadcast operators: to a namespace, to rooms, except connections.

use std::sync::Arc;

use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Server;
use crate::protocol::envelope::Outgoing;
use crate::protocol::{MessageType, names};
use crate::registry::Targets;
use crate::{SendError, SocketId};

/// The outcome of a broadcast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// Recipients the message was queued for.
    pub queued: usize,
    /// Recipients whose outbound queue was full (counted in
    /// [`Stats::messages_dropped`](crate::Stats::messages_dropped); see
    /// [`SlowConsumerPolicy`](crate::SlowConsumerPolicy)).
    pub dropped: usize,
}

/// A broadcast being addressed: a namespace, optionally some rooms, minus some connections.
///
/// Made by [`Server::of`], [`Server::to`], [`Server::except`], [`Socket::broadcast`](crate::Socket::broadcast)
/// and [`Socket::to`](crate::Socket::to); sent by [`emit`](Broadcast::emit).
///
/// ```
/// # fn demo(server: wsu::Server, me: wsu::SocketId) -> Result<(), wsu::SendError> {
/// // Everyone in rooms "a" or "b" of namespace "/game" (each member once), except `me`.
/// server.of("/game").to("a").to("b").except(me).emit("tick", &42)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a broadcast does nothing until `emit` is called"]
pub struct Broadcast {
    server: Server,
    namespace: String,
    rooms: Vec<Arc<str>>,
    except: Vec<SocketId>,
}

impl Broadcast {
    pub(crate) fn new(server: Server, namespace: &str) -> Self {
        let namespace = if namespace.is_empty() { "/" } else { namespace };
        Broadcast {
            server,
            namespace: namespace.to_owned(),
            rooms: Vec::new(),
            except: Vec::new(),
        }
    }

    /// Restrict to members of this room; several `to` calls address the union of the rooms,
    /// each member receiving the message once.
    pub fn to(mut self, room: &str) -> Self {
        if !self.rooms.iter().any(|r| &**r == room) {
            self.rooms.push(Arc::from(room));
        }
        self
    }

    /// Leave this connection out.
    pub fn except(mut self, id: SocketId) -> Self {
        self.except.push(id);
        self
    }

    /// Serialize the event once and queue it to every addressed connection, without waiting.
    ///
    /// A recipient whose queue is full does not receive it (see
    /// [`SlowConsumerPolicy`](crate::SlowConsumerPolicy)); the count is in the returned
    /// [`Delivery`].
    ///
    /// # Errors
    /// [`SendError::InvalidName`] for an invalid event name, [`SendError::Encode`] if `data`
    /// does not serialize, [`SendError::TooLarge`] if the message exceeds the outbound queue
    /// bound.
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<Delivery, SendError> {
        let frame = encode_event(&self.namespace, event, data, None)?;
        Ok(self.send_frame(frame))
    }

    pub(crate) fn send_frame(&self, frame: Utf8Bytes) -> Delivery {
        let mut delivery = Delivery::default();
        let Some(ns) = self.server.lookup_namespace(&self.namespace) else {
            return delivery;
        };
        let targets = if self.rooms.is_empty() {
            Targets::All
        } else {
            Targets::Rooms(&self.rooms)
        };
        let recipients = ns.recipients(targets);
        let inner = &self.server.inner;
        for conn in recipients.as_slice() {
            if self.except.contains(&conn.id) {
                continue;
            }
            match conn.send(frame.clone(), &inner.config, &inner.counters) {
                Ok(()) => delivery.queued += 1,
                Err(SendError::QueueFull) => delivery.dropped += 1,
                Err(_) => {}
            }
        }
        delivery
    }
}

/// Encode an `event` message once.
pub(crate) fn encode_event<T: Serialize + ?Sized>(
    namespace: &str,
    event: &str,
    data: &T,
    ack_id: Option<&str>,
) -> Result<Utf8Bytes, SendError> {
    names::validate_room(event).map_err(|e| SendError::InvalidName(format!("event {e}")))?;
    let mut msg = Outgoing::<T>::new(MessageType::Event);
    msg.namespace = Some(namespace);
    msg.event = Some(event);
    msg.data = Some(data);
    msg.ack_id = ack_id;
    let text = msg.encode().map_err(SendError::Encode)?;
    Ok(Utf8Bytes::from(text))
}
