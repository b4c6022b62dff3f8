//! # The wsu example chat
//!
//! A multi-room chat on wsu's macro API, with its web page: `cargo run -p chat`, then open
//! <http://127.0.0.1:8080>.
//!
//! - [`handlers`]: namespace `/` — the seed example's `chat` event (unchanged, for the seed's
//!   clients), nicknames, rooms with join/leave notices, messages with server ids and
//!   timestamps, a throttled "is typing" signal, and the connect/disconnect hooks.
//! - [`admin`]: namespace `/admin`, guarded by a token in its connect hook: list rooms and users,
//!   announce, kick.
//! - [`presence`]: the shared registry (`State<Presence>`): nicknames, rooms, history, with
//!   every bound.
//! - [`protocol`]: the payload and ack types, shared with the Rust clients and the tests.
//! - `static/`: the page (HTML, CSS, JS on wsu's browser client), served by the server itself.
//!
//! ## wsu's core does part of the job
//! - **Recovery** is on ([`wsu::Recovery`], session TTL [`Limits::session_ttl`]): a page whose
//!   connection dropped resumes its session — same connection id, rooms restored by wsu, every
//!   room broadcast it missed (messages, notices, announcements) replayed in order — and keeps
//!   its nickname meanwhile (see [`presence`] for how the registry follows the session).
//! - **Presence** is on: the member lists are wsu's `presence` frames, keyed by nickname
//!   ([`wsu::Socket::set_presence`] when a nickname is chosen), and [`wsu::Server::presence`]
//!   for the admin's `rooms`. The chat sends no member lists of its own.
//!
//! ## Rules
//! - **Nicknames** are unique on the whole server, ignoring case (`Ann` and `ann` are the same):
//!   2 to 24 characters, letters and digits of any script, `-`, `_`, `.`. A connection must
//!   choose one before joining rooms. A resumed session keeps it; a new session (a reloaded
//!   page) gets it back from the old one, open or detached, by sending the `resume` key of its
//!   first `nick` ack; an open stale connection is closed with 4509.
//! - **Rooms** are created by their first member and deleted (with their history) when the last
//!   one leaves: 1 to 32 of `a-z 0-9 - _` (`#Lobby` means `lobby`). Default bounds: 64 rooms,
//!   8 rooms per user, 256 members per room, the last 50 messages, 2000 characters per message
//!   (see [`Limits`]).
//! - **Typing** signals are volatile: relayed at most once a second per user and room, never
//!   stored or acknowledged.
//! - Rooms are public: like every room of the wire protocol, a raw client can also join one with
//!   a protocol `join` message and read it (it cannot post: `message` checks the registry; it
//!   is in wsu's presence under its connection id, without a nickname, which the page and
//!   [`handlers::members`] leave out).
//!
//! ## Configuration
//! `WSU_ADDR` (default `127.0.0.1:8080`), `WSU_ORIGINS` (allowed origins, comma-separated;
//! default the page's own), `CHAT_ADMIN_TOKEN` (enables `/admin`). See [`Config`].
//!
//! ## Several nodes
//! The binary joins a cluster when `CHAT_REDIS_URL` or `CHAT_NATS_URL` is set
//! ([`build_with_engine`]): messages and typing reach every node; nicknames, member lists (wsu's
//! presence is per node for now) and history are per node, and a session resumes only on its
//! own node (a resume reaching another one is refused: the page rejoins there).

pub mod admin;
mod config;
pub mod error;
pub mod handlers;
pub mod presence;
pub mod protocol;

use std::time::Duration;

pub use config::{Config, Limits};
pub use error::ChatError;
use wsu::cluster::{ClusterConfig, Engine};
use wsu::{BuildError, OriginPolicy, Recovery, Server};

/// The page at `/`.
pub const INDEX_HTML: &str = include_str!("../static/index.html");
/// Its script (an ES module on `/wsu.js`).
pub const APP_JS: &str = include_str!("../static/app.js");
/// Its style sheet.
pub const APP_CSS: &str = include_str!("../static/app.css");
/// Its icon.
pub const FAVICON_SVG: &str = include_str!("../static/favicon.svg");

/// Build the chat server: its handlers, state, limits, the page and the browser client.
///
/// The handlers are named one by one (`collect_registered(false)`) rather than collected from
/// the whole program, so that the server is the same whichever program links this library
/// (the `chat` binary, or the tests next to their own handlers).
///
/// # Errors
/// An invalid origin in `config.origins`.
pub fn build(config: Config) -> Result<Server, BuildError> {
    build_with_engine(
        config,
        None,
        ClusterConfig::default().prefix(CLUSTER_PREFIX),
    )
}

/// The default topic prefix of a chat cluster (`CHAT_CLUSTER_PREFIX`).
pub const CLUSTER_PREFIX: &str = "chat";

/// [`build`], as a node of a cluster when `engine` is given (`cluster`: its settings; unused
/// without an engine). With an engine, build inside a tokio runtime.
///
/// ## What is per node
/// The registry ([`presence`]) stays in each node's memory: nicknames (unique per node only),
/// the `join`/`leave`/`nick` notices (sent to this node's connections only,
/// [`wsu::Broadcast::local`], like wsu's presence frames, so that a page's member list is its
/// node's), room history, the room and user limits, and the admin namespace's
/// `rooms`/`users`/`kick`. Sessions (recovery) are per node too.
/// Cluster-wide: room broadcasts, that is messages (`message`, with ids unique across nodes,
/// see [`presence::Presence::clustered`]), `typing`, the seed's `chat` event and admin
/// announcements. Cluster-wide presence is for later.
///
/// # Errors
/// An invalid origin in `config.origins`; invalid `cluster` settings; an engine outside a
/// tokio runtime.
pub fn build_with_engine(
    config: Config,
    engine: Option<Box<dyn Engine>>,
    cluster: ClusterConfig,
) -> Result<Server, BuildError> {
    let limits = config.limits.clone();
    let presence = if engine.is_some() {
        presence::Presence::clustered(limits.clone())
    } else {
        presence::Presence::new(limits.clone())
    };
    let (per_second, burst) = limits.rate_limit;
    let mut builder = Server::builder()
        .collect_registered(false)
        .handler(handlers::hello)
        .handler(handlers::chat)
        .handler(handlers::nick)
        .handler(handlers::room_join)
        .handler(handlers::room_leave)
        .handler(handlers::message)
        .handler(handlers::typing)
        .handler(handlers::gone)
        .handler(admin::admin_connect)
        .handler(admin::rooms)
        .handler(admin::users)
        .handler(admin::announce)
        .handler(admin::kick)
        .state(presence)
        .state(admin::AdminAuth::new(config.admin_token))
        // The seed example's ping interval.
        .ping_interval(Duration::from_secs(2))
        // Sessions outlive a dropped connection; member lists are wsu's presence.
        .recovery(Recovery::default().session_ttl(limits.session_ttl))
        .presence(true)
        .max_connections(limits.max_connections)
        .rate_limit(per_second, burst)
        .serve_client("/wsu.js")
        .asset("/", "text/html; charset=utf-8", INDEX_HTML.as_bytes())
        .asset(
            "/index.html",
            "text/html; charset=utf-8",
            INDEX_HTML.as_bytes(),
        )
        .asset(
            "/app.js",
            "text/javascript; charset=utf-8",
            APP_JS.as_bytes(),
        )
        .asset("/app.css", "text/css; charset=utf-8", APP_CSS.as_bytes())
        .asset("/favicon.svg", "image/svg+xml", FAVICON_SVG.as_bytes());
    if config.origins.iter().any(|o| o == "*") {
        builder = builder.origins(OriginPolicy::any());
    } else if !config.origins.is_empty() {
        builder = builder.allowed_origins(&config.origins);
    }
    if let Some(engine) = engine {
        builder = builder.engine(engine).cluster(cluster);
    }
    builder.build()
}
