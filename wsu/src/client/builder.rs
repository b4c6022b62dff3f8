//! Configuring a client: URL, headers and query, handlers, timeouts, reconnection, offline buffer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};

use super::backoff::Backoff;
use super::buffer::Outbox;
use super::config::Config;
use super::connection::Driver;
use super::handle::Shared;
use super::handlers::{Callbacks, Typed, dispatch};
use super::pending::Pending;
use super::shared::Common;
use super::{Client, ClientError, ErrorEvent, PresenceEvent, Reconnect, StateEvent, frames};
use crate::handler::IntoAck;

/// Events received but not yet handled, at most. One more may wait in the connection task;
/// beyond that it stops reading the socket until a handler finishes (TCP backpressure).
const INCOMING_QUEUE: usize = 256;
/// Handler answers not yet taken by the connection task, at most. The connection task takes
/// them whatever else it is doing (it never waits for the handler task), so a full queue only
/// makes the handler task wait for the socket.
const ANSWER_QUEUE: usize = 64;

/// Options and handlers of a [`Client`]; see [`Client::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use serde::Deserialize;
/// use wsu::Json;
/// use wsu::client::{Client, Reconnect};
///
/// #[derive(Deserialize)]
/// struct Chat { user: String, message: String }
///
/// # async fn run() -> Result<(), wsu::client::ClientError> {
/// let client = Client::builder("ws://127.0.0.1:8080/ws")
///     .query("token", "s3cret")
///     .header("x-client", "wsu-docs")
///     .on("chat", |msg: Chat| async move {
///         println!("{}: {}", msg.user, msg.message);
///     })
///     // The return value answers a server `emit_with_ack`.
///     .on("question", |q: String| async move { Json(format!("you asked {q}")) })
///     .ack_timeout(Duration::from_secs(2))
///     .reconnect(Reconnect { max_attempts: Some(20), ..Reconnect::default() })
///     .offline_buffer(1024)
///     .connect()
///     .await?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
pub struct ClientBuilder {
    config: Config,
    callbacks: Callbacks,
    /// The first invalid registration, reported by `connect`.
    error: Option<ClientError>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    pub(crate) fn new(url: String) -> Self {
        ClientBuilder {
            config: Config::new(url),
            callbacks: Callbacks::default(),
            error: None,
        }
    }

    fn fail(&mut self, error: ClientError) {
        self.error.get_or_insert(error);
    }

    /// Add a header to the upgrade request (for example `authorization`). Sent again on every
    /// reconnection. An invalid name or value makes [`connect`](ClientBuilder::connect) fail
    /// with [`ClientError::InvalidRequest`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.headers.push((name.into(), value.into()));
        self
    }

    /// Add a query parameter to the URL (percent-encoded), for example an auth token that the
    /// server reads with `Socket::query`. Sent again on every reconnection.
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.query.push((key.into(), value.into()));
        self
    }

    /// Handle `event` in namespace `/`; see [`on_ns`](ClientBuilder::on_ns).
    pub fn on<T, F, Fut, R>(self, event: &str, handler: F) -> Self
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoAck,
        T: DeserializeOwned + Send + 'static,
    {
        self.on_ns("/", event, handler)
    }

    /// Handle `event` in `namespace` (events of a namespace arrive once the client joined it).
    ///
    /// The handler receives the event's `data` decoded as `T` (a missing `data` decodes from
    /// `null`). Its return value answers a server request (`Socket::emit_with_ack`) exactly like
    /// a server handler's: `()`, [`Json<T>`](crate::Json), or `Result<T, E>` with
    /// `E:` [`IntoErrorBody`](crate::IntoErrorBody). An `Err`, a payload that does not decode, or
    /// a panic is answered with an `error` message carrying the request's `ackId` (the server's
    /// `emit_with_ack` then fails with `AckError::Rejected`); for an event sent without `ackId`
    /// it is reported to [`on_error`](ClientBuilder::on_error). An internal error (a
    /// `std::io::Error`, for one) is answered `internal error` and its detail logged here.
    ///
    /// Handlers run one at a time, in arrival order, in a task of their own: a handler may
    /// await the client's own requests. The event names the server may send are any non-empty
    /// names without control characters (reserved names like `error` included).
    pub fn on_ns<T, F, Fut, R>(mut self, namespace: &str, event: &str, handler: F) -> Self
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoAck,
        T: DeserializeOwned + Send + 'static,
    {
        let namespace = if namespace.is_empty() { "/" } else { namespace };
        if let Err(e) = frames::check_namespace(namespace).and(frames::check_handler_event(event)) {
            self.fail(e);
            return self;
        }
        if !self
            .callbacks
            .insert(namespace, event, Arc::new(Typed::new(handler)))
        {
            self.fail(ClientError::DuplicateHandler {
                namespace: namespace.to_owned(),
                event: event.to_owned(),
            });
        }
        self
    }

    /// Called, in order with the handlers, for every event that has no handler:
    /// `(namespace, event, data)`. Without it such events are ignored (a server request among
    /// them is answered with an `unknown event` error).
    pub fn on_any(
        mut self,
        callback: impl Fn(&str, &str, Option<&RawValue>) + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.on_any = Some(Box::new(callback));
        self
    }

    /// Called with the failures that no awaiting call can report: `error` messages from the
    /// server that answer no pending request, failed rejoins, and failed handlers of events sent
    /// without an `ackId` (see [`ErrorEvent`]). Without it they are logged with `tracing`.
    ///
    /// The callback runs on the connection task: keep it short and non-blocking.
    pub fn on_error(mut self, callback: impl Fn(ErrorEvent) + Send + Sync + 'static) -> Self {
        self.callbacks.on_error = Some(Box::new(callback));
        self
    }

    /// Called with every [`StateEvent`], in order, including the first `Connected` (before
    /// [`connect`](ClientBuilder::connect) returns). Runs on the connection task: keep it short
    /// and non-blocking (send to a channel).
    pub fn on_state(mut self, callback: impl Fn(&StateEvent) + Send + Sync + 'static) -> Self {
        self.callbacks.on_state = Some(Box::new(callback));
        self
    }

    /// Called with every `presence` frame (servers with `ServerBuilder::presence(true)`): the
    /// state of a room when the client joins it (and again after a resumed session), then the
    /// connections that join and leave it. The client also keeps each room's current members,
    /// read with [`Client::presence`].
    ///
    /// Runs on the connection task, as soon as the frame arrives (event handlers for earlier
    /// events may still be running): keep it short and non-blocking.
    ///
    /// ```no_run
    /// use wsu::client::{Client, PresenceUpdate};
    ///
    /// # async fn run() -> Result<(), wsu::client::ClientError> {
    /// let client = Client::builder("ws://127.0.0.1:8080/ws")
    ///     .on_presence(|p| match &p.update {
    ///         PresenceUpdate::State(state) => println!("{}: {} users", p.room, state.len()),
    ///         PresenceUpdate::Diff { joins, leaves } => {
    ///             println!("{}: +{} -{}", p.room, joins.len(), leaves.len());
    ///         }
    ///         _ => {}
    ///     })
    ///     .connect()
    ///     .await?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_presence(
        mut self,
        callback: impl Fn(&PresenceEvent) + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.on_presence = Some(Box::new(callback));
        self
    }

    /// The default timeout of requests waiting for an answer: `emit_with_ack`, `join`, `leave`,
    /// `ping`. Default 5 s, like the server's.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.config.ack_timeout = timeout;
        self
    }

    /// The longest a connection attempt may take, from the TCP connect to the server accepting
    /// the connection (its connect hooks) and answering the rejoins. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Send a WebSocket Ping every `ping_interval` (default 20 s), and consider the connection
    /// lost (then reconnect) when nothing at all arrives for `read_timeout` (default 45 s, must
    /// be longer than the interval). The server answers pings with pongs, so this detects a dead
    /// network even when the server is silent.
    pub fn heartbeat(mut self, ping_interval: Duration, read_timeout: Duration) -> Self {
        self.config.ping_interval = ping_interval;
        self.config.read_timeout = read_timeout;
        self
    }

    /// The reconnection policy (default: [`Reconnect::default()`], retrying forever).
    ///
    /// After a connection drops, the client reconnects unless the server closed it with a code
    /// for which [`CloseCode::should_reconnect`](crate::CloseCode::should_reconnect) is false:
    /// `4500..=4999` (refused, for example bad credentials), `4003` (the session was resumed by
    /// another connection), `1002`, `1007`, `1008`, `1009`, `1005`, and `1000` (a normal close by
    /// the application) unless [`Reconnect::on_normal_close`] is set. A connection that drops
    /// without a close frame, `1001` (server shutdown), `1011`, `1013` and the other codes of
    /// `4000..=4499` lead to reconnection. A failed
    /// attempt (connection refused, an HTTP refusal such as `503` while a server restarts, a
    /// timeout, or a close before the server accepted the connection with a code that allows
    /// reconnecting) counts toward [`Reconnect::max_attempts`] and is followed by the next one.
    ///
    /// After reconnecting, the client joins again every namespace and then every room it had
    /// joined (unless the server resumed its session, which restores them: see
    /// [`StateEvent::Resumed`]), and only then reports [`StateEvent::Connected`] and sends the
    /// offline buffer.
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.config.reconnect = Some(policy);
        self
    }

    /// Never reconnect: the client is closed when its connection ends.
    pub fn no_reconnect(mut self) -> Self {
        self.config.reconnect = None;
        self
    }

    /// How many messages may wait to be sent (default 256): the offline buffer.
    ///
    /// Policy: while the client is disconnected (reconnecting), `emit`, `emit_with_ack`, `join`
    /// and `leave` queue their message in order, without waiting; after the next connection is
    /// accepted and the namespaces and rooms are joined again, the buffer is sent in order,
    /// before anything queued later. When the buffer is full, the call fails with
    /// [`ClientError::BufferFull`] (or [`ClientAckError::Send`](super::ClientAckError::Send) for
    /// requests): nothing is ever dropped silently. A request whose timeout expires while
    /// buffered is removed without being sent. When the client closes (or gives up), the
    /// buffered messages are dropped and their requests fail with `Closed`.
    ///
    /// While connected, the same queue holds messages waiting for the socket: a full queue makes
    /// `emit` wait (backpressure) rather than fail. `0` disables buffering: every emit while
    /// disconnected fails with `BufferFull`.
    pub fn offline_buffer(mut self, messages: usize) -> Self {
        self.config.offline_buffer = messages;
        self
    }

    /// The TLS configuration of `wss://` connections (features `client-tls` or
    /// `client-tls-native-roots`), for example one that trusts a private certificate authority
    /// or presents a client certificate. It is used as given: leave its ALPN protocols empty (or
    /// `http/1.1`), since WebSocket upgrades only exist on HTTP/1.1.
    ///
    /// Without it, `wss://` connections trust the root certificates of the enabled features:
    /// Mozilla's, compiled in (`client-tls`), and the operating system's, read once by
    /// [`connect`](ClientBuilder::connect) (`client-tls-native-roots`). Either way the crypto
    /// provider of wsu's own configurations is `ring`; build yours with
    /// `ClientConfig::builder_with_provider` to choose one explicitly.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use wsu::client::Client;
    /// use wsu::client::rustls::{self, ClientConfig, RootCertStore};
    ///
    /// # async fn run(ca_der: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
    /// // Trust a private CA (its certificate in DER form) and nothing else.
    /// let mut roots = RootCertStore::empty();
    /// roots.add(ca_der.into())?;
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let tls = ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let client = Client::builder("wss://chat.internal:8443/ws")
    ///     .tls_config(tls)
    ///     .connect()
    ///     .await?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(any(feature = "client-tls", feature = "client-tls-native-roots"))]
    #[cfg_attr(
        docsrs,
        doc(cfg(any(feature = "client-tls", feature = "client-tls-native-roots")))
    )]
    pub fn tls_config(mut self, config: impl Into<Arc<rustls::ClientConfig>>) -> Self {
        self.config.tls = Some(config.into());
        self
    }

    /// Connect. Resolves once the server has accepted the connection (its connect hooks ran):
    /// emits and joins can follow at once.
    ///
    /// The first attempt is not retried: its failure is returned. Later connection losses
    /// trigger reconnection per the [policy](ClientBuilder::reconnect).
    ///
    /// # Errors
    /// [`ClientError::InvalidRequest`], [`ClientError::InvalidOption`],
    /// [`ClientError::InvalidName`] and [`ClientError::DuplicateHandler`] for a bad
    /// configuration (a `wss://` URL without a TLS feature is an `InvalidRequest`);
    /// [`ClientError::Connect`], [`ClientError::Tls`], [`ClientError::Http`],
    /// [`ClientError::Timeout`] and [`ClientError::Refused`] when the server cannot be reached,
    /// is not trusted, or refuses the connection.
    pub async fn connect(self) -> Result<Client, ClientError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        #[allow(unused_mut)] // Changed only with a TLS feature.
        let mut config = self.config;
        config.validate()?;
        #[cfg(any(feature = "client-tls", feature = "client-tls-native-roots"))]
        if config.tls.is_none() && config.is_wss() {
            config.tls = Some(super::tls::default_config()?);
        }
        let backoff = config.reconnect.clone().map(Backoff::new);
        let common = Arc::new(Common::new(config, self.callbacks));
        let (outbox, outbox_rx) = Outbox::new(common.config.offline_buffer, common.watch_state());
        let (close, close_rx) = watch::channel(None);
        let (events_tx, events_rx) = mpsc::channel(INCOMING_QUEUE);
        let (answers_tx, answers_rx) = mpsc::channel(ANSWER_QUEUE);
        tokio::spawn(dispatch(common.clone(), events_rx, answers_tx));
        let driver = Driver {
            common: common.clone(),
            outbox: outbox_rx,
            close: close_rx,
            events: events_tx,
            answers: answers_rx,
            backoff,
            epoch: 0,
            pending: Pending::default(),
            resuming: false,
        };
        let (first_tx, first_rx) = oneshot::channel();
        // The handle exists before the first connection, so that dropping this future closes.
        let shared = Arc::new(Shared {
            common,
            outbox,
            close,
        });
        tokio::spawn(driver.run(first_tx));
        match first_rx.await {
            Ok(Ok(())) => Ok(Client::new(shared)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Closed),
        }
    }
}
