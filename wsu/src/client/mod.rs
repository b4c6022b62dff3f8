//! A Rust client for wsu servers (feature `client`): emit and typed acks in both directions,
//! namespaces and rooms, automatic reconnection with backoff and rejoin, an offline buffer and
//! connection state events.
//!
//! It speaks the protocol of `PROTOCOL.md` with the same envelope encoder and name rules as the
//! server, and the handlers use the same payload and ack types as server handlers.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use wsu::client::Client;
//! use wsu::{Json, Server, Socket};
//!
//! #[derive(Debug, Deserialize, Serialize)]
//! struct Chat {
//!     user: String,
//!     message: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A server: `chat` is broadcast to the lobby and acked with the message count.
//! let server = Server::builder()
//!     .on("chat", |socket: Socket, msg: Chat| async move {
//!         socket.to("lobby").emit("chat", &msg)?;
//!         Ok::<_, wsu::SendError>(Json(msg.message.len()))
//!     })
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/ws", listener.local_addr()?);
//! tokio::spawn({
//!     let server = server.clone();
//!     async move { server.serve(listener).await }
//! });
//!
//! // A client with a typed handler.
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let listener_client = Client::builder(url.as_str())
//!     .on("chat", move |msg: Chat| {
//!         let tx = tx.clone();
//!         async move {
//!             let _ = tx.send(msg);
//!         }
//!     })
//!     .connect()
//!     .await?;
//! listener_client.join("lobby").await?; // resolves when the server has joined it
//!
//! let client = Client::builder(url.as_str()).connect().await?;
//! let chat = Chat { user: "ann".into(), message: "hello".into() };
//! let len: usize = client.emit_with_ack("chat", &chat).await?; // typed ack
//! assert_eq!(len, 5);
//! assert_eq!(rx.recv().await.map(|m| m.message).as_deref(), Some("hello"));
//!
//! client.close("bye").await;
//! listener_client.close("bye").await;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Connecting
//! [`Client::builder`] takes a `ws://` URL, or a `wss://` one with a TLS feature (below).
//! [`ClientBuilder::header`] and
//! [`ClientBuilder::query`] add credentials, sent again on every reconnection.
//! [`ClientBuilder::connect`] resolves once the server has *accepted* the connection (its connect
//! hooks ran); a refusal (close `4500`) is returned as [`ClientError::Refused`]. The first
//! attempt is not retried.
//!
//! # TLS (`wss://`)
//! `wss://` URLs need one of these features (without them `connect` fails with
//! [`ClientError::InvalidRequest`]); both use rustls with the `ring` crypto provider:
//!
//! | feature | trusts by default |
//! |---|---|
//! | `client-tls` | Mozilla's root certificates, compiled in (`webpki-roots`) |
//! | `client-tls-native-roots` | the operating system's root certificates, read when the client connects |
//!
//! With both, both stores are trusted. [`ClientBuilder::tls_config`] replaces the default with
//! your own [`rustls::ClientConfig`] (re-exported as `wsu::client::rustls`), for a private
//! certificate authority or a client certificate. A server that is not trusted fails the
//! connection attempt with [`ClientError::Tls`] (for example
//! `tls failed: invalid peer certificate: UnknownIssuer`), within the connect timeout.
//!
//! # Events and acks
//! - [`Client::emit`] sends an event; [`Client::emit_with_ack`] waits for the server handler's
//!   return value, decoded as your type, within the ack timeout (default 5 s).
//!   [`Client::emit_with_ack_retry`] re-sends with a fresh `ackId` after a timeout. A handler's
//!   `Err` arrives as [`ClientAckError::Server`] with its message and typed body.
//! - [`ClientBuilder::on`] / [`ClientBuilder::on_ns`] register typed handlers. Their return value
//!   answers a server's `Socket::emit_with_ack` like a server handler's ([`IntoAck`](crate::IntoAck):
//!   `()`, [`Json`](crate::Json), `Result`). Handlers run one at a time in arrival order.
//! - Events without a handler go to [`ClientBuilder::on_any`] or are ignored; `error` messages
//!   that answer no pending request go to [`ClientBuilder::on_error`].
//!
//! # Namespaces and rooms
//! [`Client::join`] / [`Client::leave`] (rooms of the handle's namespace, `/` by default),
//! [`Client::join_namespace`] / [`Client::leave_namespace`], and [`Client::of`] for a handle
//! scoped to another namespace. Each carries an `ackId` and resolves with the server's answer.
//! The client remembers its memberships and joins them again after reconnecting.
//!
//! # Reconnection
//! When a connection is lost the client reconnects with exponential backoff and jitter
//! ([`Reconnect`]), unless reconnection is disabled ([`ClientBuilder::no_reconnect`]) or the
//! server closed with a code that says not to:
//!
//! | close | reconnect? |
//! |---|---|
//! | no close frame (network failure, heartbeat timeout, server killed) | yes |
//! | `1001` going away (server shutdown), `1011`, `1013`, `4000..=4499` except `4003` | yes |
//! | `1000` normal closure by the server application | no, unless [`Reconnect::on_normal_close`] |
//! | `4003` session resumed elsewhere (another connection took over the session) | no |
//! | `4500..=4999` (e.g. `4500` refused: bad credentials), `1002`, `1005`, `1007`, `1008`, `1009`, others | no |
//!
//! This is [`CloseCode::should_reconnect`](crate::CloseCode::should_reconnect). After
//! reconnecting, the client joins its namespaces, then its rooms, waits for the server to
//! answer them, reports [`StateEvent::Connected`], and then sends the offline buffer. Requests
//! that were sent on the lost connection and not yet answered fail with
//! [`ClientAckError::Disconnected`]; they are not sent again, since the server may have handled
//! them. After [`Reconnect::max_attempts`] failed attempts in a row the client reports
//! [`StateEvent::GaveUp`] and closes.
//!
//! # Session recovery
//! A server that sends the `hello` frame (wsu's default) tells the client its session id
//! ([`Client::session_id`]) and its maximum message size: a larger emit, request or join fails
//! at once with [`ClientError::MessageTooBig`], nothing sent. With recovery enabled on the server
//! (`ServerBuilder::recovery`) the `hello` also carries a single-use resume token, and
//! broadcasts carry a stream position, kept per namespace ([`Client::position`]).
//!
//! On reconnecting, a client holding a token asks to resume its session (the URL gets
//! `wsu_resume` and `wsu_offsets`, the latest token and positions). If the server accepts
//! ([`StateEvent::Resumed`]), the session id is unchanged and the server restored its namespaces
//! and rooms: the client does not join them again, except the joins and leaves the server may
//! not have applied (their answer never came: lost with the old connection, or given up while
//! in the offline buffer), which it sends again before reporting
//! [`StateEvent::Connected`]. If it refuses
//! ([`StateEvent::ResumeRefused`] with the reason), the connection is a fresh session and the
//! client rejoins as usual. Either way the server then replays, per namespace, the broadcasts
//! the client missed: the handlers get them in order, before any later event, and a
//! [`StateEvent::Recovery`] ([`Recovery`]) says whether they are exactly what was missed
//! (`recovered`) or why not (`reason`; the application should then reload its state).
//!
//! Presence frames (`ServerBuilder::presence`) go to [`ClientBuilder::on_presence`], and the
//! client keeps each room's members ([`Client::presence`]).
//!
//! # Offline buffer
//! While disconnected, emits and requests wait, in order, in a bounded buffer (256 messages by
//! default) and are sent after the next reconnection; when it is full they fail with
//! [`ClientError::BufferFull`]. Nothing is dropped silently. See
//! [`ClientBuilder::offline_buffer`] for the exact policy.
//!
//! # State
//! [`Client::state`] is a watch of the [`ConnectionState`]; [`Client::events`] and
//! [`ClientBuilder::on_state`] deliver every [`StateEvent`] (connected, disconnected with the
//! close code and reason, reconnecting with the attempt and delay, gave up).
//!
//! # Tasks
//! Each client runs two tasks: one owns the socket (a `select!` over the socket, the outbound
//! queue, handler answers, WebSocket pings every 20 s and a read deadline; it answers the
//! server's pings), the other runs the handlers. Both end when the client is closed or every
//! handle is dropped.
//!
//! The connection task never waits for the handler task, so a burst of server requests cannot
//! wedge them against each other. Memory stays bounded by this policy: up to 256 received
//! events wait for their handlers; when the queue is full, the connection task keeps the next
//! event and **stops reading the socket** until a handler finishes (TCP backpressure: the
//! server's queue for this client fills, and its slow-consumer policy applies). Meanwhile it
//! still writes handler answers (up to 64 wait for it), queued emits and pings, and the read
//! deadline is suspended (the silence is the client's own). One consequence: while reading is
//! paused the answers to the client's own requests are not read either, so a handler that
//! awaits one of them with 256 events queued behind it waits until that request times out.
//!
//! A panic in a handler, in [`ClientBuilder::on_any`], [`ClientBuilder::on_error`] or
//! [`ClientBuilder::on_state`] is contained and logged with `tracing` (level `error`); both tasks
//! keep running. A server request whose handler panicked is answered with an `error`
//! (`internal error`); for an event sent without `ackId` the failure goes to
//! [`ClientBuilder::on_error`].
#![cfg_attr(docsrs, doc(cfg(feature = "client")))]

mod backoff;
mod buffer;
mod builder;
mod config;
mod connection;
mod error;
mod frames;
mod handle;
mod handlers;
mod memberships;
mod pending;
mod presence;
mod session;
mod shared;
mod state;
#[cfg(any(feature = "client-tls", feature = "client-tls-native-roots"))]
mod tls;

pub use backoff::Reconnect;
pub use builder::ClientBuilder;
pub use error::{ClientAckError, ClientError, ErrorEvent};
pub use handle::Client;
pub use presence::{PresenceEntry, PresenceEvent, PresenceState, PresenceUpdate};
pub use session::{Recovery, StreamPosition};
pub use state::{ConnectionState, StateEvent};

/// The rustls crate the client's TLS is built on (features `client-tls` and
/// `client-tls-native-roots`), re-exported so that a [`ClientBuilder::tls_config`] can be built
/// with the same version.
#[cfg(any(feature = "client-tls", feature = "client-tls-native-roots"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "client-tls", feature = "client-tls-native-roots")))
)]
pub use rustls;
