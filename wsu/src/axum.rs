//! Mounting a wsu [`Server`] on an [axum](https://docs.rs/axum) route (feature `axum`), as the
//! seed mounts its handler on a gin route.
//!
//! [`upgrade`] turns a server into an axum [`MethodRouter`]: put it on the route of your choice,
//! next to your other routes and layers, and serve the router with `axum::serve`. Every
//! WebSocket upgrade request goes through the same checks as with [`Server::serve`], the
//! connections are the same (same protocol, hooks, broadcasts, [`Stats`](crate::Stats)), and
//! [`Server::shutdown`] closes them with 1001 like any other.
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use axum::Router;
//! use axum::routing::get;
//! use axum::serve::ListenerExt;
//! use wsu::{Json, Server, Socket};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = Server::builder()
//!         .on("echo", |_socket: Socket, data: serde_json::Value| async move { Json(data) })
//!         .build()?;
//!     let app = Router::new()
//!         .route("/", get(|| async { "hello" }))
//!         .route("/ws", wsu::axum::upgrade(server.clone()));
//!     // axum::serve does not set TCP_NODELAY; WebSocket messages should not wait for Nagle.
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
//!         .await?
//!         .tap_io(|tcp| {
//!             let _ = tcp.set_nodelay(true);
//!         });
//!     // `with_connect_info` makes the client address available to `Socket::remote_addr`.
//!     axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//!         .with_graceful_shutdown(async move {
//!             let _ = tokio::signal::ctrl_c().await;
//!             // Close every WebSocket connection with 1001 before axum stops.
//!             server.shutdown().await;
//!         })
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! # Differences from [`Server::serve`]
//! axum and hyper own the HTTP connection, so:
//! - the route path is yours: [`Config::path`](crate::Config::path) is not consulted, and neither
//!   are the static files of [`ServerBuilder::asset`](crate::ServerBuilder::asset) (serve them
//!   with axum routes);
//! - reading the request head (its size limits and timeout) is hyper's job, not wsu's;
//!   [`Config::handshake_timeout`](crate::Config::handshake_timeout) only bounds the wait
//!   between the 101 response and hyper handing the connection over;
//! - refusals carry the same status codes, bodies and extra headers, but no `Connection: close`:
//!   the HTTP connection stays usable for further requests;
//! - `TCP_NODELAY` is set by the listener (see `tap_io` above), not by wsu;
//! - the request seen by [`Socket::request`](crate::Socket::request) keeps the extensions that
//!   axum and your middleware inserted (for example an authenticated user), and
//!   [`Socket::remote_addr`](crate::Socket::remote_addr) is known only when the router is served
//!   with `into_make_service_with_connect_info::<SocketAddr>()`.
//!
//! Only HTTP/1.1 connections can be upgraded (no WebSocket over HTTP/2).

use std::net::SocketAddr;

use ::axum::body::Body;
use ::axum::extract::{ConnectInfo, Request};
use ::axum::http::header::{self, HeaderValue};
use ::axum::http::{Response as HttpResponse, StatusCode};
use ::axum::response::Response;
use ::axum::routing::{MethodRouter, any};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::Server;
use crate::conn::run_connection;
use crate::http::handshake::is_upgrade_request;
use crate::stats::Counters;

/// A route serving `server`'s WebSocket endpoint, for [`Router::route`](axum::Router::route).
///
/// It answers every method, like [`Server::serve`] does on its path: a valid upgrade gets
/// `101 Switching Protocols` and becomes a wsu connection; anything else gets the same refusal as
/// from [`Server::serve`] (see [`accept`]). The router's state type `S` is free, so the route
/// fits any `Router<S>`.
///
/// ```no_run
/// # fn demo(server: wsu::Server) -> axum::Router {
/// axum::Router::new().route("/ws", wsu::axum::upgrade(server))
/// # }
/// ```
pub fn upgrade<S>(server: Server) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    any(move |request: Request| accept(server.clone(), request))
}

/// Answer one WebSocket upgrade request for `server`: the building block of [`upgrade`], for use
/// in your own axum handler (after your own extractors, or with the server in the router state).
///
/// The request is checked exactly as by [`Server::serve`], in this order, each refusal being a
/// `text/plain` response whose body is the reason and a newline:
/// - not an upgrade request (no `Upgrade: websocket`): `426` "websocket upgrade required";
/// - not `GET`: `405` "method not allowed" (with `Allow: GET`);
/// - HTTP/1.0: `400` "http/1.1 required";
/// - `Connection` without `upgrade`: `400` "not a websocket upgrade";
/// - `Sec-WebSocket-Version` other than 13: `426` "unsupported websocket version" (with
///   `Sec-WebSocket-Version: 13`);
/// - a `Sec-WebSocket-Key` that is not 16 bytes in base64: `400` "invalid sec-websocket-key";
/// - an `Origin` refused by [`Config::origins`](crate::Config::origins): `403` "origin not
///   allowed";
/// - `max_connections` reached: `503` "server at capacity"; the server shutting down: `503`
///   "server shutting down".
///
/// A valid request that hyper cannot upgrade (it was not received by a hyper HTTP/1.1 server, so
/// no upgrade is pending) gets `500` "connection cannot be upgraded". Each refusal counts in
/// [`Stats::handshakes_refused`](crate::Stats::handshakes_refused).
///
/// Otherwise the response is `101 Switching Protocols` with `Sec-WebSocket-Accept`, and a task
/// is spawned that takes over the upgraded connection once hyper has sent the 101 and runs it
/// until it closes (connect hook first). If the upgrade does not happen within
/// [`Config::handshake_timeout`](crate::Config::handshake_timeout) (the client went away, or a
/// layer replaced the 101 response), the connection slot is released and no hook runs.
///
/// ```no_run
/// use axum::Router;
/// use axum::extract::{Request, State};
/// use axum::routing::any;
/// use wsu::Server;
///
/// async fn ws(State(server): State<Server>, request: Request) -> axum::response::Response {
///     // ... your own checks (authentication, ...) ...
///     wsu::axum::accept(server, request).await
/// }
///
/// # fn demo(server: Server) -> Router {
/// Router::new().route("/ws", any(ws)).with_state(server)
/// # }
/// ```
pub async fn accept(server: Server, mut request: Request) -> Response {
    let remote_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    let (parts, _body) = request.into_parts();
    if !is_upgrade_request(&parts) {
        return refusal(
            &server,
            StatusCode::UPGRADE_REQUIRED,
            "websocket upgrade required",
        );
    }
    let (accept, slot) = match server.admit_upgrade(&parts, remote_addr) {
        Ok(admitted) => admitted,
        Err(rejection) => return refusal(&server, rejection.status, rejection.reason),
    };
    // From here on a connection slot is reserved: `slot` releases it on every path that does not
    // reach `run_connection`.
    let (Some(on_upgrade), Ok(accept)) = (on_upgrade, HeaderValue::try_from(accept)) else {
        drop(slot);
        return refusal(
            &server,
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection cannot be upgraded",
        );
    };
    let websocket_config = server.inner.config.websocket();
    let handshake_timeout = server.inner.config.handshake_timeout;
    tokio::spawn(async move {
        // hyper hands the connection over once the 101 is written; if the 101 never is (a layer
        // replaced it), hyper keeps the upgrade pending for as long as the HTTP connection
        // lives, so the wait is bounded by the handshake timeout.
        match tokio::time::timeout(handshake_timeout, on_upgrade).await {
            Ok(Ok(upgraded)) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(websocket_config),
                )
                .await;
                run_connection(server, ws, parts, remote_addr, slot).await;
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, ?remote_addr, "websocket upgrade failed");
            }
            Err(_) => {
                tracing::debug!(?remote_addr, "websocket upgrade timed out");
            }
        }
    });
    let mut response = HttpResponse::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// A refusal as [`Server::serve`] writes it (same status, body and extra headers), minus
/// `Connection: close`; counted in `handshakes_refused`.
fn refusal(server: &Server, status: StatusCode, reason: &str) -> Response {
    Counters::inc(&server.inner.counters.handshakes_refused);
    let mut response = HttpResponse::new(Body::from(format!("{reason}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::UPGRADE_REQUIRED {
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    response
}
