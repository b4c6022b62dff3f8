//! The server-side handle on one connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::http::request::Parts;

use crate::conn::{CloseRequest, ConnShared};
use crate::protocol::names;
use crate::server::broadcast_encode_event;
use crate::{AckError, Broadcast, CloseCode, JoinError, SendError, Server, SocketId};

/// The server's handle on one connection (the seed's `Client`), scoped to a namespace.
///
/// Cheap to clone; every clone refers to the same connection. Handlers receive one scoped to
/// the event's namespace, so [`emit`](Socket::emit) answers in that namespace; use
/// [`of`](Socket::of) for another.
///
/// Operations on a closed connection fail with `Closed` or do nothing; they never panic.
///
/// ```
/// use wsu::{Json, Server, Socket};
///
/// let server = Server::builder()
///     .on("join-room", |socket: Socket, room: String| async move {
///         socket.join(&room)?;
///         socket.to(&room).emit("joined", &socket.id().to_string())?;
///         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Json(socket.rooms()))
///     })
///     .build()
///     .unwrap();
/// # let _ = server;
/// ```
#[derive(Clone)]
pub struct Socket {
    server: Server,
    conn: Arc<ConnShared>,
    namespace: Arc<str>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.conn.id)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Socket {
    pub(crate) fn new(server: Server, conn: Arc<ConnShared>, namespace: Arc<str>) -> Self {
        Socket {
            server,
            conn,
            namespace,
        }
    }

    /// The connection's opaque, unique id (the seed's `ID`).
    pub fn id(&self) -> &SocketId {
        &self.conn.id
    }

    /// The namespace this handle is scoped to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The same connection, scoped to another namespace (for `emit`, `join`, `rooms`...).
    pub fn of(&self, namespace: &str) -> Socket {
        let namespace = if namespace.is_empty() { "/" } else { namespace };
        Socket {
            server: self.server.clone(),
            conn: self.conn.clone(),
            namespace: Arc::from(namespace),
        }
    }

    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The HTTP upgrade request (method, URI with its query, headers).
    pub fn request(&self) -> &Parts {
        &self.conn.request
    }

    /// The value of a query parameter of the upgrade request URI (`?token=...`), undecoded.
    pub fn query(&self, key: &str) -> Option<&str> {
        let query = self.conn.request.uri.query()?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    /// The peer's address, when known.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.conn.remote_addr
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        !self.conn.is_closed()
    }

    /// Whether this connection resumed an earlier session ([recovery](crate::ServerBuilder::recovery)):
    /// it has that session's id, and its namespaces and rooms are restored when the connect
    /// hooks accept (each namespace's missed broadcasts are replayed to the client then). The
    /// connect hooks run for every connection, resumed or not; this tells them which.
    ///
    /// ```
    /// # async fn demo(socket: wsu::Socket) {
    /// if !socket.recovered() {
    ///     let _ = socket.emit("welcome", &"hello, stranger");
    /// }
    /// # }
    /// ```
    pub fn recovered(&self) -> bool {
        self.conn.is_resumed()
    }

    /// Set this connection's presence identity: the user `key` it is grouped under (one user,
    /// several tabs or devices) and `meta`, shown to the members of its rooms with
    /// [`presence`](crate::ServerBuilder::presence) on, and in [`Server::presence`]. Call it
    /// from the connect hook, before joining rooms; called later, the rooms it is in hear the
    /// change. Without it the key is the connection id and the metadata `null`.
    ///
    /// ```
    /// # fn demo(socket: wsu::Socket) -> Result<(), wsu::SendError> {
    /// socket.set_presence("ada", &serde_json::json!({ "nick": "Ada", "device": "phone" }))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`SendError::Encode`] if `meta` does not serialize; nothing changes then.
    pub fn set_presence<M: Serialize + ?Sized>(
        &self,
        key: &str,
        meta: &M,
    ) -> Result<(), SendError> {
        let meta = serde_json::value::to_raw_value(meta).map_err(SendError::Encode)?;
        self.conn.set_presence_id(crate::presence::PresenceId {
            key: Arc::from(key),
            meta,
        });
        Ok(())
    }

    /// Send an event to this connection in this handle's namespace (the seed's `Emit`).
    ///
    /// The message is queued without waiting; messages to one connection arrive in the order
    /// they were queued.
    ///
    /// # Errors
    /// `Closed`, `QueueFull` (see [`SlowConsumerPolicy`](crate::SlowConsumerPolicy)),
    /// `TooLarge`, `InvalidName`, `Encode`.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), SendError> {
        let frame = broadcast_encode_event(&self.namespace, event, data, None)?;
        let inner = &self.server.inner;
        self.conn.send(frame, &inner.config, &inner.counters)
    }

    /// Send an event and wait for the client's ack, decoded as `R`, with the server's default
    /// ack timeout (the seed's `EmitWithAck`).
    ///
    /// Safe to call from this connection's own handlers and connect hook: the connection keeps
    /// reading while a handler waits.
    ///
    /// # Errors
    /// [`AckError::Timeout`], [`AckError::Closed`] (as soon as the connection closes),
    /// [`AckError::TooManyPending`], [`AckError::Send`], [`AckError::Decode`],
    /// [`AckError::Rejected`] (the client answered with an `error` carrying the `ackId`).
    pub async fn emit_with_ack<T, R>(&self, event: &str, data: &T) -> Result<R, AckError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.emit_with_ack_timeout(event, data, self.server.inner.config.ack_timeout)
            .await
    }

    /// [`emit_with_ack`](Socket::emit_with_ack) with an explicit timeout.
    pub async fn emit_with_ack_timeout<T, R>(
        &self,
        event: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<R, AckError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        /// Removes the pending ack if this call ends (or is dropped) without an answer, so an
        /// abandoned `emit_with_ack` future does not hold a slot of the per-connection cap.
        struct Pending<'a>(&'a ConnShared, u64);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                self.0.cancel_ack(self.1);
            }
        }

        let inner = &self.server.inner;
        let (id, rx) = self.conn.register_ack(inner.config.max_pending_acks)?;
        let _pending = Pending(&self.conn, id);
        let ack_id = id.to_string();
        let sent = broadcast_encode_event(&self.namespace, event, data, Some(&ack_id))
            .and_then(|frame| self.conn.send(frame, &inner.config, &inner.counters));
        if let Err(e) = sent {
            return Err(e.into());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(data))) => {
                let raw = data.as_deref().map_or("null", |d| d.get());
                serde_json::from_str(raw).map_err(AckError::Decode)
            }
            Ok(Ok(Err(e))) => Err(AckError::Rejected(e)),
            Ok(Err(_)) => Err(AckError::Closed),
            Err(_) => {
                crate::stats::Counters::inc(&inner.counters.ack_timeouts);
                Err(AckError::Timeout)
            }
        }
    }

    /// Join a room of this handle's namespace (the seed's `Join`/`JoinRoom`); joins the
    /// namespace too if needed. Joining twice is a no-op.
    ///
    /// Server-side joins are trusted: namespace connect hooks do not run for them.
    pub fn join(&self, room: &str) -> Result<(), JoinError> {
        names::validate_room(room).map_err(|e| JoinError::InvalidName(format!("room {e}")))?;
        self.server
            .join(&self.conn, &self.namespace, Some(room))
            .map(|_| ())
    }

    /// Leave a room of this handle's namespace (the seed's `Leave`/`LeaveRoom`). Returns whether
    /// the connection was in it.
    pub fn leave(&self, room: &str) -> bool {
        self.conn.leave_room(&self.namespace, room)
    }

    /// Join a namespace (the seed's `JoinNamespace`), without running its connect hook.
    pub fn join_namespace(&self, namespace: &str) -> Result<(), JoinError> {
        names::validate_namespace(namespace)
            .map_err(|e| JoinError::InvalidName(format!("namespace {e}")))?;
        self.server.join(&self.conn, namespace, None).map(|_| ())
    }

    /// Leave a namespace and all its rooms (the seed's `LeaveNamespace`); its disconnect hook
    /// runs with [`DisconnectReason::LeftNamespace`](crate::DisconnectReason::LeftNamespace).
    /// Returns whether the connection was in it.
    pub fn leave_namespace(&self, namespace: &str) -> bool {
        match self.conn.leave_namespace(namespace) {
            Some(m) => {
                crate::conn::after_leave(
                    &self.server,
                    &self.conn,
                    m,
                    crate::DisconnectReason::LeftNamespace,
                );
                true
            }
            None => false,
        }
    }

    /// Rooms this connection is in, in this handle's namespace.
    pub fn rooms(&self) -> Vec<String> {
        self.conn.rooms(&self.namespace)
    }

    /// Namespaces this connection is in.
    pub fn namespaces(&self) -> Vec<String> {
        self.conn.namespace_names()
    }

    /// A broadcast to this handle's namespace, except this connection.
    pub fn broadcast(&self) -> Broadcast {
        self.server.of(&self.namespace).except(self.conn.id)
    }

    /// A broadcast to a room of this handle's namespace, except this connection.
    pub fn to(&self, room: &str) -> Broadcast {
        self.broadcast().to(room)
    }

    /// Close the connection with 1000 and this reason (the seed's `Close`). What is already
    /// queued is sent first (for up to the write timeout). The disconnect hook runs once.
    pub fn close(&self, reason: &str) {
        self.close_with(CloseCode::NORMAL, reason);
    }

    /// Close the connection with a code of your choice (use `4000..=4999` for application codes).
    pub fn close_with(&self, code: CloseCode, reason: &str) {
        let drain = tokio::time::Instant::now() + self.server.inner.config.write_timeout;
        self.conn.request_close(CloseRequest {
            code,
            reason: truncate_reason(reason),
            drain_until: Some(drain),
        });
    }
}

/// Close reasons must fit a control frame (123 bytes).
pub(crate) fn truncate_reason(reason: &str) -> String {
    if reason.len() <= 123 {
        return reason.to_owned();
    }
    let mut end = 123;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
