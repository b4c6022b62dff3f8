//! Accepting TCP connections: the HTTP upgrade with its limits, static assets, then the
//! connection task.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::request::Parts;
use tokio_tungstenite::tungstenite::http::{Method, StatusCode};
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Server, Slot};
use crate::conn::run_connection;
use crate::http::handshake::{
    HeadError, HeadLimits, Rejection, asset_response, error_response, is_upgrade_request,
    read_head, switching_protocols, validate_upgrade,
};
use crate::stats::Counters;

impl Server {
    /// Accept connections on `listener` until [`shutdown`](Server::shutdown) is called, then
    /// return once every connection has closed (the seed's `ServeHTTP`, standalone).
    ///
    /// Each TCP connection gets `TCP_NODELAY`, must send its HTTP request within the handshake
    /// timeout, and is refused with exactly one HTTP response when it cannot be upgraded:
    /// `400` (malformed or not a valid upgrade), `403` (origin not allowed), `404` (other path),
    /// `405` (not GET), `408` (handshake timeout), `426` (plain GET of the WebSocket path, or
    /// unsupported WebSocket version), `431` (head larger than 16 KiB or more than 64 headers),
    /// `503` (at `max_connections` or shutting down). Plain `GET`/`HEAD` requests of a path
    /// registered with [`ServerBuilder::asset`](crate::ServerBuilder::asset) get that file.
    ///
    /// # Errors
    /// Only if accepting fails persistently in a way that is not a per-connection condition;
    /// running out of file descriptors is logged and retried.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        let mut shutdown = self.shutdown_signal();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        let server = self.clone();
                        tokio::spawn(async move { server.handle_tcp(tcp, addr).await });
                    }
                    Err(e) => {
                        // EMFILE/ENFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                },
                () = async { let _ = shutdown.wait_for(|stopping| *stopping).await; } => break,
            }
        }
        drop(listener);
        self.wait_closed().await;
        Ok(())
    }

    /// Wait until no connection is open.
    pub(crate) async fn wait_closed(&self) {
        loop {
            let notified = self.inner.all_closed.notified();
            if self
                .inner
                .counters
                .connections
                .load(std::sync::atomic::Ordering::Acquire)
                == 0
            {
                return;
            }
            notified.await;
        }
    }

    async fn respond<S: AsyncWrite + Unpin>(&self, tcp: &mut S, bytes: &[u8]) {
        Counters::inc(&self.inner.counters.handshakes_refused);
        let _ = tokio::time::timeout(self.inner.config.write_timeout, async {
            tcp.write_all(bytes).await?;
            tcp.shutdown().await
        })
        .await;
    }

    /// The checks every WebSocket upgrade request goes through, however it arrived ([`serve`],
    /// [`serve_connection`] or the axum mount): [`validate_upgrade`] (405/400/426), then the
    /// Origin policy (403 "origin not allowed"), then a connection slot (503 "server at
    /// capacity", also while shutting down).
    ///
    /// On success the `Sec-WebSocket-Accept` value is returned with a reserved connection
    /// [`Slot`]: the caller hands it to `run_connection`, and dropping it (a failed upgrade)
    /// releases it. This is the one admission path of `serve`, `serve_connection` and the axum
    /// mount.
    ///
    /// [`serve`]: Server::serve
    /// [`serve_connection`]: Server::serve_connection
    pub(crate) fn admit_upgrade(
        &self,
        parts: &Parts,
        addr: Option<SocketAddr>,
    ) -> Result<(String, Slot), Rejection> {
        let accept = validate_upgrade(parts)?;
        if !self.inner.config.origins.allows_request(parts) {
            tracing::debug!(?addr, "origin refused");
            return Err(Rejection {
                status: StatusCode::FORBIDDEN,
                reason: "origin not allowed",
            });
        }
        let Some(slot) = self.reserve_slot() else {
            let reason = if self.is_shutting_down() {
                "server shutting down"
            } else {
                "server at capacity"
            };
            return Err(Rejection {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason,
            });
        };
        Ok((accept, slot))
    }

    async fn handle_tcp(self, tcp: TcpStream, addr: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        self.serve_connection(tcp, Some(addr)).await;
    }

    /// Serve one already-accepted connection on any byte stream: read its HTTP upgrade request
    /// (with the same limits and responses as [`serve`](Server::serve)), then run the WebSocket
    /// connection until it ends.
    ///
    /// Use it to serve over your own transport, such as a TLS stream from `tokio-rustls`, or an
    /// in-memory `tokio::io::duplex` pipe in tests.
    ///
    /// ```no_run
    /// # async fn demo(server: wsu::Server) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let (tcp, addr) = listener.accept().await?;
    /// // ... wrap `tcp` in TLS here ...
    /// tokio::spawn(async move { server.serve_connection(tcp, Some(addr)).await });
    /// # Ok(()) }
    /// ```
    pub async fn serve_connection<S>(&self, tcp: S, addr: Option<SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The upgrade is a future of its own: inline, its state (request head, parsed parts,
        // response) would stay, moved-from, in the task of every open connection (0.7 KiB).
        let Some((ws, parts, slot)) = self.upgrade(tcp, addr).await else {
            return;
        };
        run_connection(self.clone(), ws, parts, addr, slot).await;
    }

    /// Read and answer the HTTP request: the WebSocket and its request when upgraded.
    async fn upgrade<S>(
        &self,
        mut tcp: S,
        addr: Option<SocketAddr>,
    ) -> Option<(WebSocketStream<S>, Parts, Slot)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let cfg = &self.inner.config;
        let head = tokio::time::timeout(
            cfg.handshake_timeout,
            read_head(&mut tcp, HeadLimits::default()),
        )
        .await;
        let (parts, leftover) = match head {
            Ok(Ok(head)) => head,
            Err(_) => {
                let r = error_response(StatusCode::REQUEST_TIMEOUT, "handshake timeout");
                self.respond(&mut tcp, &r).await;
                return None;
            }
            Ok(Err(HeadError::TooLarge)) => {
                let r = error_response(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request header too large",
                );
                self.respond(&mut tcp, &r).await;
                return None;
            }
            Ok(Err(HeadError::Malformed(reason))) => {
                let r = error_response(StatusCode::BAD_REQUEST, &format!("bad request: {reason}"));
                self.respond(&mut tcp, &r).await;
                return None;
            }
            Ok(Err(HeadError::Io(_))) => {
                Counters::inc(&self.inner.counters.handshakes_refused);
                return None;
            }
        };
        let path = parts.uri.path();
        if !is_upgrade_request(&parts) {
            let head_only = parts.method == Method::HEAD;
            let response = match self.inner.assets.get(path) {
                Some(asset) if parts.method == Method::GET || head_only => {
                    let r = asset_response(&asset.content_type, &asset.body, head_only);
                    let _ = tokio::time::timeout(cfg.write_timeout, async {
                        tcp.write_all(&r).await?;
                        tcp.shutdown().await
                    })
                    .await;
                    return None;
                }
                Some(_) => error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
                None if path == cfg.path => {
                    error_response(StatusCode::UPGRADE_REQUIRED, "websocket upgrade required")
                }
                None => error_response(StatusCode::NOT_FOUND, "not found"),
            };
            self.respond(&mut tcp, &response).await;
            return None;
        }
        if path != cfg.path {
            self.respond(
                &mut tcp,
                &error_response(StatusCode::NOT_FOUND, "not found"),
            )
            .await;
            return None;
        }
        let (accept, slot) = match self.admit_upgrade(&parts, addr) {
            Ok(admitted) => admitted,
            Err(rej) => {
                self.respond(&mut tcp, &error_response(rej.status, rej.reason))
                    .await;
                return None;
            }
        };
        let written = tokio::time::timeout(
            cfg.write_timeout,
            tcp.write_all(&switching_protocols(&accept)),
        )
        .await;
        if !matches!(written, Ok(Ok(()))) {
            return None; // the slot is released with `slot`
        }
        let ws = WebSocketStream::from_partially_read(
            tcp,
            leftover,
            Role::Server,
            Some(cfg.websocket()),
        )
        .await;
        Some((ws, parts, slot))
    }
}
