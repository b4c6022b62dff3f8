//! # wsu
//!
//! Real-time, event-driven WebSocket applications on tokio: **namespaces and rooms, named
//! events, broadcast, acks in both directions with timeouts, heartbeats**, Origin checks and
//! bounded everything. The wire protocol is the one of the Go package `websocketutils` (see
//! `PROTOCOL.md`), so clients written for it work unchanged.
//!
//! ## Quick start
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use wsu::{Json, Server, Socket};
//!
//! #[derive(Deserialize, Serialize)]
//! struct Chat {
//!     user: String,
//!     message: String,
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = Server::builder()
//!         // A typed handler: `data` decodes into `Chat`, the return value is the ack.
//!         .on("chat", |socket: Socket, msg: Chat| async move {
//!             socket.broadcast().emit("chat", &msg)?; // everyone in "/" but the sender
//!             Ok::<_, wsu::SendError>(Json(serde_json::json!({ "status": "ok" })))
//!         })
//!         .build()?;
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     server.serve(listener).await?; // WebSocket endpoint at ws://127.0.0.1:8080/ws
//!     Ok(())
//! }
//! ```
//!
//! A client then sends `{"type":"event","event":"chat","data":{"user":"a","message":"hi"},"ackId":"1"}`
//! and receives `{"type":"ack","namespace":"/","event":"chat","data":{"status":"ok"},"ackId":"1"}`.
//!
//! ## Guarantees
//! - Messages to one connection are sent in the order they were queued (emits, broadcasts,
//!   answers and pings share one outbound queue); a connection's requests (`event`, `join`,
//!   `leave`) run one at a time in arrival order, while the connection keeps reading (so a
//!   handler may await an ack from its own client, and heartbeats continue).
//! - Every request that carries an `ackId` gets exactly one answer: an `ack` or an `error`
//!   (unless the connection closes first).
//! - Every queue is bounded. Emits to a slow client are refused at the bound and the client is
//!   disconnected (4001) or the messages dropped, by [`SlowConsumerPolicy`], every drop counted
//!   in [`Stats`]; the connection's own answers are never dropped: it stops reading its client
//!   while its queue is over its bound (backpressure). An optional [`RateLimit`] slows a client down the
//!   same way, or refuses with [`RateLimitPolicy::Reject`].
//! - A handler panic (in its synchronous part, its future or its payload's `Deserialize`) or an
//!   internal error ([`HandlerError::internal`], `std::io::Error`, …) becomes an
//!   `internal error` answer; the connection and the server keep working. Hooks have a deadline
//!   ([`ServerBuilder::hook_timeout`]); a connect hook that panics or overruns closes its
//!   connection with 1011.
//! - A connection is cleaned up (rooms, registry, gauges, pending acks) however its task ends,
//!   and [`Server::shutdown`] returns within its grace period
//!   ([`ServerBuilder::shutdown_timeout`]).
//!
//! ## Scale-out
//! Several servers become one cluster with an engine on an existing broker
//! ([`ServerBuilder::engine`]: `wsu-redis`, `wsu-nats`, or [`cluster::MemoryBroker`] in one
//! process): broadcasts reach every node's connections, [`Broadcast`] queries and operations
//! (`fetch_sockets`, `sockets_join`, `disconnect_sockets`, `emit_with_ack`) span the nodes, and
//! [`Server::cluster`] reports the membership. See the [`cluster`] module.

#![doc(html_root_url = "https://docs.rs/wsu/0.1.0")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[allow(unused_extern_crates)]
extern crate self as wsu;

mod assets;
mod config;
mod conn;
mod error;
mod extract;
#[cfg(feature = "__fuzzing")]
mod fuzzing;
mod handler;
mod hooks;
mod http;
mod id;
mod presence;
mod protocol;
mod registration;
pub(crate) mod registry;
pub(crate) mod server;
mod session;
mod socket;
mod stats;
pub(crate) mod sync;
mod typed;

pub use assets::{BROWSER_CLIENT_DTS, BROWSER_CLIENT_JS};
pub use config::{Config, RateLimit, RateLimitPolicy, SlowConsumerPolicy};
pub use error::{AckError, BuildError, JoinError, SendError};
pub use extract::{FromSocket, State};
pub use handler::{Handler, HandlerError, IntoAck, IntoErrorBody, Json, Public};
pub use hooks::{ConnectOutcome, DisconnectReason};
pub use http::{InvalidOrigin, OriginPolicy};
pub use id::SocketId;
pub use presence::{Presence, PresenceEntry};
pub use protocol::{CloseCode, MessageType};
pub use registry::NamespaceInfo;
pub use server::{Broadcast, Delivery, NamespaceBuilder, Published, Server, ServerBuilder};
pub use session::Recovery;
pub use socket::Socket;
pub use stats::Stats;
pub use typed::Typed;
#[doc = include_str!("docs/ws_connect.md")]
pub use wsu_macros::ws_connect;
#[doc = include_str!("docs/ws_disconnect.md")]
pub use wsu_macros::ws_disconnect;
#[doc = include_str!("docs/ws_event.md")]
pub use wsu_macros::ws_event;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
#[cfg(feature = "client")]
pub mod client;
pub mod cluster;

/// Re-exports of the HTTP types used in the API ([`Socket::request`]).
pub mod http_types {
    pub use tokio_tungstenite::tungstenite::http::{HeaderMap, Request, Uri, request::Parts};
}

/// Items used by code generated by `#[ws_event]`. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use serde;
    pub use serde_json;

    pub use serde_json::value::RawValue;

    pub use crate::handler::{ErasedHandler, IntoAck, Reply, TypedHandler, decode_payload};
    pub use crate::hooks::ConnectOutcome;
    pub use crate::registration::*;
    pub use crate::sync::BoxFuture;

    /// Entry points of the fuzz targets (`fuzz/`) and of their replay in `cargo test`, and
    /// `TARGETS`, the list of them by name; only with the `__fuzzing` feature (not public API).
    #[cfg(feature = "__fuzzing")]
    pub mod fuzz {
        pub use crate::fuzzing::*;
    }
}
