//! The client handle: emit, requests with answers, memberships, ping, close, state.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::buffer::{AckResult, Outbound, Outbox, Waiter};
use super::memberships::{Intent, Membership};
use super::shared::Common;
use super::{
    ClientAckError, ClientBuilder, ClientError, ConnectionState, PresenceState, StateEvent,
    StreamPosition, frames,
};
use crate::protocol::MessageType;

/// What every clone of a client shares.
pub(crate) struct Shared {
    pub(crate) common: Arc<Common>,
    pub(crate) outbox: Outbox,
    /// Set to `Some(reason)` to close; dropping it (with the last handle) closes too.
    pub(crate) close: watch::Sender<Option<String>>,
}

/// A connected wsu client (see the [module documentation](super) for the whole picture).
///
/// Cheap to clone: every clone drives the same connection. A handle is scoped to a namespace,
/// `/` for the one [`ClientBuilder::connect`] returns; [`of`](Client::of) gives the same client
/// scoped to another namespace, for `emit`, `emit_with_ack`, `join`, `leave` and `ping`.
///
/// The connection closes (with 1000 `client dropped`) when the last handle is dropped; call
/// [`close`](Client::close) to choose the reason and wait for the close to complete.
///
/// ```no_run
/// use wsu::client::Client;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder("ws://127.0.0.1:8080/ws").connect().await?;
/// client.join("lobby").await?;
/// let status: serde_json::Value = client
///     .emit_with_ack("chat", &serde_json::json!({"user": "ann", "message": "hi"}))
///     .await?;
/// println!("server answered {status}");
/// client.close("bye").await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    namespace: Arc<str>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shared.common.config.url)
            .field("namespace", &self.namespace)
            .field("state", &self.shared.common.state())
            .finish()
    }
}

impl Client {
    /// Start configuring a client for a `ws://` URL, such as `ws://127.0.0.1:8080/ws`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.into())
    }

    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Client {
            shared,
            namespace: Arc::from("/"),
        }
    }

    fn common(&self) -> &Common {
        &self.shared.common
    }

    /// The namespace this handle is scoped to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The same client, scoped to `namespace` (`""` means `/`). The name is checked when the
    /// handle is used.
    ///
    /// Emitting in a namespace requires being in it: call
    /// [`join_namespace`](Client::join_namespace) (or join one of its rooms) first, otherwise the
    /// server answers `namespace not joined`.
    pub fn of(&self, namespace: &str) -> Client {
        let namespace = if namespace.is_empty() { "/" } else { namespace };
        Client {
            shared: self.shared.clone(),
            namespace: Arc::from(namespace),
        }
    }

    /// Send an event in this handle's namespace, without asking for an answer.
    ///
    /// While connected, waits only if the outbound queue is full. While disconnected, the event
    /// goes to the offline buffer and is sent after the next reconnection (after the rejoins);
    /// see [`ClientBuilder::offline_buffer`].
    ///
    /// Failures the server reports for it (for example `unknown event`) arrive at
    /// [`ClientBuilder::on_error`].
    ///
    /// # Errors
    /// [`ClientError::InvalidName`], [`ClientError::Encode`], [`ClientError::MessageTooBig`]
    /// (larger than the server's `maxMessageSize`; nothing is sent), [`ClientError::BufferFull`]
    /// (while disconnected with a full buffer), [`ClientError::Closed`].
    ///
    /// # Cancel safety
    /// If the future is dropped before completing, the event was not queued.
    pub async fn emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<(), ClientError> {
        frames::check_namespace(&self.namespace)?;
        frames::check_event(event)?;
        let frame = frames::event(&self.namespace, event, data, None)?;
        self.common().check_size(&frame)?;
        self.shared
            .outbox
            .push(Outbound {
                frame,
                waiter: None,
            })
            .await
    }

    /// Send an event and wait for the server's answer, decoded as `R`, within the
    /// [ack timeout](ClientBuilder::ack_timeout) (default 5 s).
    ///
    /// The answer is the server handler's return value: `()` answers `null` (use `R = ()`), and a
    /// handler's `Err` arrives as [`ClientAckError::Server`] with its message and typed body.
    ///
    /// # Errors
    /// [`ClientAckError::Timeout`], [`ClientAckError::Disconnected`] (the connection dropped after
    /// the event was sent; it is not re-sent), [`ClientAckError::Server`],
    /// [`ClientAckError::Decode`], [`ClientAckError::Closed`], [`ClientAckError::Send`] (with
    /// [`ClientError::MessageTooBig`] for an event larger than the server's `maxMessageSize`:
    /// nothing is sent).
    pub async fn emit_with_ack<T, R>(&self, event: &str, data: &T) -> Result<R, ClientAckError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let timeout = self.common().config.ack_timeout;
        self.emit_with_ack_timeout(event, data, timeout).await
    }

    /// [`emit_with_ack`](Client::emit_with_ack) with an explicit timeout. The time spent in the
    /// offline buffer counts; an event still buffered when its timeout expires is never sent.
    pub async fn emit_with_ack_timeout<T, R>(
        &self,
        event: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<R, ClientAckError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        frames::check_namespace(&self.namespace)?;
        frames::check_event(event)?;
        let id = self.common().next_ack_id();
        let frame = frames::event(&self.namespace, event, data, Some(&id))?;
        self.common().check_size(&frame)?;
        let data = self.request(frame, id, timeout).await?;
        let raw = data.as_deref().map_or("null", |d| d.get());
        serde_json::from_str(raw).map_err(ClientAckError::Decode)
    }

    /// [`emit_with_ack`](Client::emit_with_ack), sent again up to `retries` times when no answer
    /// arrives within the ack timeout. Each attempt carries a fresh `ackId`, so a late answer to
    /// an earlier attempt is ignored.
    ///
    /// Only timeouts are retried: the server may therefore handle the event more than once (make
    /// such events idempotent). A [`Disconnected`](ClientAckError::Disconnected) or
    /// [`Server`](ClientAckError::Server) answer is returned at once.
    pub async fn emit_with_ack_retry<T, R>(
        &self,
        event: &str,
        data: &T,
        retries: u32,
    ) -> Result<R, ClientAckError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let mut left = retries;
        loop {
            match self.emit_with_ack(event, data).await {
                Err(ClientAckError::Timeout) if left > 0 => left -= 1,
                other => return other,
            }
        }
    }

    /// Queue a request with a fresh ack id and wait for its answer.
    async fn request(
        &self,
        frame: Utf8Bytes,
        id: String,
        timeout: Duration,
    ) -> Result<Option<Box<serde_json::value::RawValue>>, ClientAckError> {
        let (tx, rx) = oneshot::channel::<AckResult>();
        let waiter = Some(Waiter::Ack { id: id.into(), tx });
        let exchange = async {
            self.shared.outbox.push(Outbound { frame, waiter }).await?;
            match rx.await {
                Ok(result) => result,
                Err(_) => Err(ClientAckError::Closed),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ClientAckError::Timeout))
    }

    /// A `join`/`leave` with an ack, within the ack timeout.
    async fn membership(
        &self,
        kind: MessageType,
        namespace: &str,
        room: Option<&str>,
    ) -> Result<(), ClientAckError> {
        let id = self.common().next_ack_id();
        let frame = frames::membership(kind, namespace, room, &id);
        self.common().check_size(&frame)?;
        let timeout = self.common().config.ack_timeout;
        self.request(frame, id, timeout).await.map(|_| ())
    }

    /// Join a room of this handle's namespace (and the namespace itself), and wait for the
    /// server's answer. The room is remembered and joined again after every reconnection.
    ///
    /// # Errors
    /// [`ClientAckError::Server`] when the server refuses (`unknown namespace`,
    /// `join refused: …`, `too many rooms`): the room is then forgotten. On
    /// [`Timeout`](ClientAckError::Timeout) or [`Disconnected`](ClientAckError::Disconnected)
    /// the room stays remembered, so it is joined at the next reconnection.
    pub async fn join(&self, room: &str) -> Result<(), ClientAckError> {
        frames::check_namespace(&self.namespace)?;
        frames::check_room(room)?;
        let m = Membership::Room(self.namespace.as_ref().into(), room.into());
        self.common().with_memberships(|ms| {
            ms.add_room(&self.namespace, room);
            ms.unsettle(m.clone(), Intent::Join);
        });
        let result = self
            .membership(MessageType::Join, &self.namespace, Some(room))
            .await;
        self.settled(&m, Intent::Join, &result);
        result
    }

    /// Leave a room of this handle's namespace, and wait for the server's answer. The room is
    /// forgotten at once (it is not joined again after reconnecting, whatever the answer).
    pub async fn leave(&self, room: &str) -> Result<(), ClientAckError> {
        frames::check_namespace(&self.namespace)?;
        frames::check_room(room)?;
        let m = Membership::Room(self.namespace.as_ref().into(), room.into());
        self.common().with_memberships(|ms| {
            ms.remove_room(&self.namespace, room);
            ms.unsettle(m.clone(), Intent::Leave);
        });
        self.common()
            .with_presence(|p| p.forget_room(&self.namespace, room));
        let result = self
            .membership(MessageType::Leave, &self.namespace, Some(room))
            .await;
        self.settled(&m, Intent::Leave, &result);
        result
    }

    /// The server answered a join or leave: the request is settled (see
    /// [`Memberships::unsettle`](super::memberships::Memberships::unsettle)); a refused join is
    /// forgotten. Without an answer (timeout, disconnected) it stays unsettled: a resumed
    /// session gets it again.
    fn settled(&self, m: &Membership, intent: Intent, result: &Result<(), ClientAckError>) {
        match result {
            Ok(()) => self.common().with_memberships(|ms| ms.settle(m, intent)),
            Err(ClientAckError::Server { .. }) => self.common().with_memberships(|ms| {
                ms.settle(m, intent);
                if intent == Intent::Join {
                    ms.remove(m);
                }
            }),
            // No answer (or not sent: the membership is remembered all the same, as for a
            // rejoin after any reconnection).
            Err(_) => {}
        }
    }

    /// Join a namespace, and wait for the server's answer (its `on_connect` hook may refuse:
    /// [`ClientAckError::Server`] with `join refused: …`). It is remembered and joined again
    /// after every reconnection, like [`join`](Client::join).
    pub async fn join_namespace(&self, namespace: &str) -> Result<(), ClientAckError> {
        frames::check_namespace(namespace)?;
        let m = Membership::Namespace(namespace.into());
        self.common().with_memberships(|ms| {
            ms.add_namespace(namespace);
            if namespace != "/" {
                ms.unsettle(m.clone(), Intent::Join);
            }
        });
        let result = self.membership(MessageType::Join, namespace, None).await;
        if namespace != "/" {
            self.settled(&m, Intent::Join, &result);
        }
        result
    }

    /// Leave a namespace and all its rooms, and wait for the server's answer. They are forgotten
    /// at once. (Every new connection starts in `/`, so `/` is back after a reconnection.)
    pub async fn leave_namespace(&self, namespace: &str) -> Result<(), ClientAckError> {
        frames::check_namespace(namespace)?;
        let m = Membership::Namespace(namespace.into());
        self.common().with_memberships(|ms| {
            ms.remove_namespace(namespace);
            // `/` is back on every connection, resumed or not.
            if namespace != "/" {
                ms.unsettle(m.clone(), Intent::Leave);
            }
        });
        self.common()
            .with_presence(|p| p.forget_namespace(namespace));
        if namespace != "/" {
            self.common()
                .with_session(|s| s.positions.remove(namespace));
        }
        let result = self.membership(MessageType::Leave, namespace, None).await;
        if namespace != "/" {
            self.settled(&m, Intent::Leave, &result);
        }
        result
    }

    /// The rooms of this handle's namespace that the client remembers having joined.
    pub fn rooms(&self) -> Vec<String> {
        self.common().with_memberships(|m| m.rooms(&self.namespace))
    }

    /// The session id the server gave in its latest `hello` frame (`None` before one arrived,
    /// or with a server that sends none). After a [resumed](StateEvent::Resumed) reconnection
    /// it is unchanged; after any other reconnection it is the new session's.
    ///
    /// ```
    /// # use wsu::client::Client;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = wsu::Server::builder().build()?;
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let url = format!("ws://{}/ws", listener.local_addr()?);
    /// # tokio::spawn({ let server = server.clone(); async move { server.serve(listener).await } });
    /// let client = Client::builder(url.as_str()).connect().await?;
    /// if let Some(sid) = client.session_id() {
    ///     println!("connected as {sid}");
    /// }
    /// # client.close("bye").await;
    /// # server.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn session_id(&self) -> Option<String> {
        self.common().with_session(|s| s.sid.clone())
    }

    /// Whether the current connection resumed the previous session (see
    /// [`StateEvent::Resumed`]). False for the first connection.
    pub fn is_resumed(&self) -> bool {
        self.common().with_session(|s| s.resumed)
    }

    /// The server's maximum message size, from its latest `hello` frame: larger emits, requests
    /// and joins fail with [`ClientError::MessageTooBig`] without being sent.
    pub fn max_message_size(&self) -> Option<usize> {
        self.common().with_session(|s| s.max_message_size)
    }

    /// The position of the last broadcast of this handle's namespace that the client handed to
    /// its handlers (events carrying an `offset`, from a server with recovery enabled), or the
    /// position a `recovery` frame set. It is sent with the resume request after a
    /// disconnection, so that the server replays what the client missed.
    pub fn position(&self) -> Option<StreamPosition> {
        self.common()
            .with_session(|s| s.positions.get(&*self.namespace).cloned())
    }

    /// The members of `room` of this handle's namespace, as the server's `presence` frames
    /// reported them (`None` before the first one; see
    /// [`ClientBuilder::on_presence`]). The last known view is kept while disconnected; it is
    /// replaced when the server sends the room's state again (after a resume or a rejoin) and
    /// forgotten when the room is left.
    pub fn presence(&self, room: &str) -> Option<PresenceState> {
        self.common()
            .with_presence(|p| p.get(&self.namespace, room))
    }

    /// The namespaces the client remembers being in, `/` first.
    pub fn namespaces(&self) -> Vec<String> {
        self.common().with_memberships(|m| m.namespaces())
    }

    /// Measure the round trip of a JSON `ping` through the server (its `pong` is answered in
    /// arrival order, so running server handlers count as latency).
    ///
    /// # Errors
    /// [`ClientAckError::Disconnected`] when not connected (pings are never buffered),
    /// [`ClientAckError::Timeout`] after the ack timeout, [`ClientAckError::Closed`].
    pub async fn ping(&self) -> Result<Duration, ClientAckError> {
        frames::check_namespace(&self.namespace)?;
        match self.common().state() {
            ConnectionState::Connected => {}
            ConnectionState::Closed => return Err(ClientAckError::Closed),
            _ => return Err(ClientAckError::Disconnected),
        }
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        let frame = frames::ping_pong(MessageType::Ping, &self.namespace);
        let exchange = async {
            self.shared
                .outbox
                .push(Outbound {
                    frame,
                    waiter: Some(Waiter::Pong(tx)),
                })
                .await?;
            rx.await.unwrap_or(Err(ClientAckError::Closed))
        };
        tokio::time::timeout(self.common().config.ack_timeout, exchange)
            .await
            .unwrap_or(Err(ClientAckError::Timeout))?;
        Ok(start.elapsed())
    }

    /// Close the client (every clone): what is already queued is written, then a close frame
    /// with 1000 and `reason` (cut to 123 bytes) is sent, and reconnection stops. Waits until
    /// the client is [`ConnectionState::Closed`]. Buffered messages of a disconnected client are
    /// dropped (their requests fail with [`ClientAckError::Closed`]). Calling it again does
    /// nothing.
    pub async fn close(&self, reason: &str) {
        self.shared.close.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(reason.to_owned());
            true
        });
        let mut state = self.state();
        let _ = state.wait_for(|s| *s == ConnectionState::Closed).await;
    }

    /// The connection state, as a watch: `borrow()` it, or await `changed()`/`wait_for`.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.common().watch_state()
    }

    /// Whether the client is connected (and has rejoined everything) right now.
    pub fn is_connected(&self) -> bool {
        self.common().state() == ConnectionState::Connected
    }

    /// A stream of the state events from now on (connected, disconnected with the close code,
    /// reconnecting, gave up), in order. A receiver that falls more than 64 events behind gets
    /// `RecvError::Lagged` and misses the oldest; use
    /// [`ClientBuilder::on_state`] to see every event synchronously.
    pub fn events(&self) -> broadcast::Receiver<StateEvent> {
        self.common().subscribe_events()
    }
}
