//! The task that owns one WebSocket: reads, writes, heartbeats, timeouts, and the ordered
//! execution of the connection's requests.
//!
//! One task per connection, no lock around the socket: a `select!` over the socket, the
//! outbound queue, the running handler, the ping interval and the read deadline. Everything
//! queued is fed into tungstenite's write buffer and flushed once per loop turn (batching).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::error::Elapsed;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::request::Parts;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};
use tracing::Instrument;

use super::dispatch::{Pending, Running};
use super::{CloseRequest, ConnShared, Membership};
use crate::hooks::DisconnectReason;
use crate::stats::Counters;
use crate::sync::CatchUnwind;
use crate::{CloseCode, Server, Socket};

/// Most frames fed into one flush.
const MAX_BATCH: usize = 64;
/// How long to wait for the peer's close frame after sending ours.
const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Why the loop ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// The connection is gone or unusable; no close frame can be sent.
    Transport,
    /// The client closed.
    ClientClosed(CloseCode, String),
    /// The server closes with this code and reason (a close frame will be sent).
    Close(CloseRequest),
    /// Already closed by the server (close frame sent).
    Closed(CloseCode, String),
}

impl Exit {
    pub(crate) fn close(code: CloseCode, reason: impl Into<String>) -> Exit {
        Exit::Close(CloseRequest {
            code,
            reason: reason.into(),
            drain_until: None,
        })
    }
}

pub(crate) struct Conn<S> {
    pub(crate) server: Server,
    pub(crate) conn: Arc<ConnShared>,
    ws: WebSocketStream<S>,
    rx: mpsc::Receiver<Utf8Bytes>,
    pub(crate) running: Option<Running>,
    pub(crate) queue: VecDeque<Pending>,
    pub(crate) last_seen: Instant,
    dirty: bool,
    written: u64,
    pub(crate) invalid_count: u32,
    pub(crate) invalid_window_start: Instant,
    pub(crate) tokens: f64,
    pub(crate) tokens_at: Instant,
}

/// Run one upgraded connection to its end, including its disconnect hooks. The caller has
/// reserved a connection slot with `Server::reserve_slot`; it is released here. The connection
/// is registered when this is called; await the future at once.
///
/// Not an `async fn`: the arguments of an `async fn` stay in its state, moved-from, for as long
/// as it runs (0.6 KiB per open connection here).
pub(crate) fn run_connection<S>(
    server: Server,
    ws: WebSocketStream<S>,
    request: Parts,
    remote_addr: Option<SocketAddr>,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = server.next_id();
    let (conn, rx) = ConnShared::new(
        id,
        server.inner.config.max_queued_messages,
        request,
        remote_addr,
    );
    server.register_connection(&conn);
    // A connection admitted while `shutdown` was listing connections is closed here instead.
    if server.is_shutting_down() {
        conn.request_close(CloseRequest {
            code: CloseCode::GOING_AWAY,
            reason: "server shutting down".to_owned(),
            drain_until: None,
        });
    }
    let span = tracing::debug_span!("wsu.conn", id = %id);
    let now = Instant::now();
    let burst = server.inner.config.rate_limit.map_or(0.0, |r| r.burst);
    let mut task = Conn {
        server,
        conn,
        ws,
        rx,
        running: None,
        queue: VecDeque::new(),
        last_seen: now,
        dirty: false,
        written: 0,
        invalid_count: 0,
        invalid_window_start: now,
        tokens: burst,
        tokens_at: now,
    };
    async move {
        tracing::debug!("connected");
        let exit = task.run().await;
        task.finish(exit).await;
    }
    .instrument(span)
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn run(&mut self) -> Exit {
        let exit = self.run_loop().await;
        match exit {
            // Boxed: the close path (with its 4 KiB discard buffer) runs once per connection at
            // most; inline, its state would make every connection's task 2.4 KiB bigger.
            Exit::Close(req) => Box::pin(self.close_by_server(req)).await,
            other => other,
        }
    }

    async fn run_loop(&mut self) -> Exit {
        let cfg = &self.server.inner.config;
        let (ping_every, read_timeout) = (cfg.ping_interval, cfg.read_timeout);
        match self.connect_phase() {
            Ok(running) => self.running = running,
            Err(exit) => return exit,
        }
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let read_deadline = tokio::time::sleep_until(self.last_seen + read_timeout);
        tokio::pin!(read_deadline);

        loop {
            let step: Result<(), Exit> = tokio::select! {
                () = self.conn.close_notify.notified() => match self.conn.take_close_request() {
                    Some(req) => Err(Exit::Close(req)),
                    None => Ok(()),
                },
                msg = self.ws.next() => self.on_messages(msg).await,
                out = poll_running(&mut self.running), if self.running.is_some() => {
                    match self.running.take() {
                        Some(r) => self.on_finished(r, out).await,
                        None => Ok(()),
                    }
                }
                Some(frame) = self.rx.recv() => self.write_queued(Some(frame)).await,
                _ = ping.tick() => {
                    self.dirty = true;
                    self.feed(Message::Ping(Bytes::new())).await
                }
                () = &mut read_deadline => {
                    let due = self.last_seen + read_timeout;
                    if Instant::now() >= due {
                        Err(Exit::close(CloseCode::HEARTBEAT_TIMEOUT, "heartbeat timeout"))
                    } else {
                        read_deadline.as_mut().reset(due);
                        Ok(())
                    }
                }
            };
            if let Err(exit) = step {
                return exit;
            }
            if self.dirty {
                if let Err(exit) = self.flush().await {
                    return exit;
                }
            }
        }
    }

    /// Handle one item from the socket, then those already buffered (up to a batch), so that
    /// pipelined requests share one flush.
    async fn on_messages(&mut self, first: Option<Result<Message, WsError>>) -> Result<(), Exit> {
        self.on_message(first).await?;
        for _ in 1..MAX_BATCH {
            match self.ws.next().now_or_never() {
                Some(msg) => self.on_message(msg).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// Handle one item from the socket.
    async fn on_message(&mut self, msg: Option<Result<Message, WsError>>) -> Result<(), Exit> {
        let msg = match msg {
            None => return Err(Exit::Transport),
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(map_ws_error(e)),
        };
        self.last_seen = Instant::now();
        if self.server.inner.config.echo_mode
            && matches!(msg, Message::Text(_) | Message::Binary(_))
        {
            // Conformance testing (`ServerBuilder::echo_mode`): the message goes back unchanged.
            Counters::inc(&self.server.inner.counters.messages_in);
            self.dirty = true;
            self.written += 1;
            return self.feed(msg).await;
        }
        match msg {
            Message::Text(text) => {
                Counters::inc(&self.server.inner.counters.messages_in);
                self.on_frame(text.as_bytes(), Some(text.as_str())).await
            }
            Message::Binary(bin) => {
                Counters::inc(&self.server.inner.counters.messages_in);
                self.on_frame(&bin, None).await
            }
            // tungstenite queued the pong; it goes out with the next flush.
            Message::Ping(_) => {
                self.dirty = true;
                Ok(())
            }
            Message::Pong(_) | Message::Frame(_) => Ok(()),
            Message::Close(frame) => {
                // tungstenite queued the close reply; flush it.
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, self.ws.flush()).await;
                let (code, reason) = match frame {
                    Some(f) => (CloseCode::new(u16::from(f.code)), f.reason.to_string()),
                    None => (CloseCode::NO_STATUS, String::new()),
                };
                Err(Exit::ClientClosed(code, reason))
            }
        }
    }

    /// Feed one message into the write buffer (written out at the latest by the next flush).
    ///
    /// Feeding writes the buffer out once it exceeds the write buffer size, so it can block on a
    /// full socket like a flush; a forced close request interrupts it the same way.
    pub(crate) async fn feed(&mut self, msg: Message) -> Result<(), Exit> {
        let timeout = self.server.inner.config.write_timeout;
        let r = interruptible(&self.conn, timeout, self.ws.feed(msg)).await;
        self.write_outcome(r)
    }

    /// Move queued frames (starting with `first`) into the write buffer, up to one batch.
    pub(crate) async fn write_queued(&mut self, mut first: Option<Utf8Bytes>) -> Result<(), Exit> {
        let mut n = 0;
        while n < MAX_BATCH {
            let frame = match first.take() {
                Some(f) => f,
                None => match self.rx.try_recv() {
                    Ok(f) => f,
                    Err(_) => break,
                },
            };
            self.conn.dequeued(frame.len());
            n += 1;
            self.dirty = true;
            self.written += 1;
            self.feed(Message::Text(frame)).await?;
        }
        Ok(())
    }

    /// Send a reply produced by this task, after everything queued before it (so that what a
    /// handler emitted arrives before its ack).
    pub(crate) async fn reply(&mut self, frame: Utf8Bytes) -> Result<(), Exit> {
        while !self.rx.is_empty() {
            self.write_queued(None).await?;
        }
        self.dirty = true;
        self.written += 1;
        self.feed(Message::Text(frame)).await
    }

    /// Flush the write buffer, within the write timeout. A close request that does not ask for
    /// draining (slow consumer, forced shutdown) interrupts a flush that is stuck on a full
    /// socket.
    async fn flush(&mut self) -> Result<(), Exit> {
        let timeout = self.server.inner.config.write_timeout;
        let r = interruptible(&self.conn, timeout, self.ws.flush()).await;
        self.dirty = false;
        if self.written > 0 {
            self.server
                .inner
                .counters
                .messages_out
                .fetch_add(self.written, std::sync::atomic::Ordering::Relaxed);
            self.written = 0;
        }
        self.write_outcome(r)
    }

    /// How a write (feed or flush) ended, as the loop's result.
    fn write_outcome(&self, r: Option<Result<Result<(), WsError>, Elapsed>>) -> Result<(), Exit> {
        match r {
            None => match self.conn.take_close_request() {
                Some(req) => Err(Exit::Close(req)),
                None => Err(Exit::Transport),
            },
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(_))) => Err(Exit::Transport),
            Some(Err(_)) => Err(Exit::Closed(
                CloseCode::WRITE_TIMEOUT,
                "write timeout".to_owned(),
            )),
        }
    }

    /// Close with a frame: drain what is queued if asked, send the close frame, and wait a little
    /// for the peer's answer.
    async fn close_by_server(&mut self, req: CloseRequest) -> Exit {
        let CloseRequest {
            mut code,
            mut reason,
            drain_until,
        } = req;
        // What is already queued goes out before the close frame when asked (application close,
        // graceful shutdown) and after a connect hook refused (its explanation, say).
        let refused = matches!(code.as_u16(), 1011 | 4500);
        let drain_until =
            drain_until.or_else(|| refused.then(|| Instant::now() + CLOSE_HANDSHAKE_TIMEOUT));
        if let Some(deadline) = drain_until {
            let drained = tokio::time::timeout_at(deadline, async {
                while !self.rx.is_empty() {
                    self.write_queued(None).await?;
                    self.flush().await?;
                }
                Ok::<(), Exit>(())
            })
            .await;
            match drained {
                // A forced close (slow consumer, shutdown past its deadline) interrupted a
                // stuck write: its close frame is still attempted, below.
                Ok(Err(Exit::Close(forced))) => (code, reason) = (forced.code, forced.reason),
                Ok(Err(exit)) => return exit,
                _ => {}
            }
        }
        let stream_failed = matches!(code.as_u16(), 1002 | 1007 | 1009);
        let peer_stuck = matches!(code.as_u16(), 4000..=4002);
        let frame = CloseFrame {
            code: WsCloseCode::from(code.as_u16()),
            reason: Utf8Bytes::from(reason.clone()),
        };
        let sent = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, self.ws.close(Some(frame))).await;
        if stream_failed {
            // The stream cannot be parsed any more. Closing now, with unread input, would make
            // the kernel send a reset that can destroy the close frame in flight: send FIN and
            // discard input for a moment instead (a lingering close).
            let io = self.ws.get_mut();
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                let _ = io.shutdown().await;
                let mut sink = [0u8; 4096];
                while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        let wait_for_peer = !stream_failed && !peer_stuck;
        if matches!(sent, Ok(Ok(()))) && wait_for_peer {
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Some(Ok(msg)) = self.ws.next().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        Exit::Closed(code, reason)
    }

    /// Clean up after the loop: leave everything, fail acks, run disconnect hooks once.
    async fn finish(self, exit: Exit) {
        let Conn {
            server,
            conn,
            ws,
            rx,
            running,
            queue,
            ..
        } = self;
        drop(ws);
        drop(rx);
        drop(queue);
        let reason = match exit {
            Exit::Transport => DisconnectReason::TransportClosed,
            Exit::ClientClosed(code, reason) => DisconnectReason::ClientClosed { code, reason },
            Exit::Close(req) => DisconnectReason::ServerClosed {
                code: req.code,
                reason: req.reason,
            },
            Exit::Closed(code, reason) => DisconnectReason::ServerClosed { code, reason },
        };
        server.inner.counters.record_close(reason.close_code());
        tracing::debug!(%reason, "disconnected");
        // A handler still running is cancelled (dropped at its current `.await`), as axum drops
        // a handler whose client went away: its answer has nowhere to go, and a handler that
        // never finishes must not outlive its connection. Work that must complete belongs in a
        // spawned task.
        drop(running);
        let memberships = conn.mark_closed();
        server.unregister_connection(conn.id);
        for m in memberships {
            leave_hooks(&server, &conn, m, reason.clone()).await;
        }
        if let Some(hook) = server.inner.on_disconnect.clone() {
            let socket = Socket::new(server.clone(), conn.clone(), Arc::from("/"));
            run_hook(&server, hook(socket, reason)).await;
        }
        server.release_slot();
    }
}

/// Run a write on the socket for at most `timeout` (`Err(Elapsed)` then). A close request that
/// does not ask for draining (slow consumer, forced shutdown) interrupts a write stuck on a full
/// socket (`None`); other close requests are left, with their wake-up, for the main loop.
async fn interruptible<F>(
    conn: &ConnShared,
    timeout: std::time::Duration,
    write: F,
) -> Option<Result<Result<(), WsError>, Elapsed>>
where
    F: std::future::Future<Output = Result<(), WsError>>,
{
    tokio::pin!(write);
    // Fast path, once per frame of a broadcast: most writes complete at once (room in the write
    // buffer, or a writable socket), and then need no clock reading and no timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(r) = first {
        return Some(Ok(r));
    }
    let write = tokio::time::timeout_at(Instant::now() + timeout, write);
    tokio::pin!(write);
    let mut seen_request = false;
    let r = loop {
        tokio::select! {
            // Biased: a write that completes at once never registers for close requests.
            biased;
            r = &mut write => break Some(r),
            () = conn.close_notify.notified() => {
                seen_request = true;
                if conn.close_request_is_forced() {
                    break None;
                }
            }
        }
    };
    if seen_request {
        conn.close_notify.notify_one();
    }
    r
}

/// Poll the running request to completion, catching panics.
async fn poll_running(running: &mut Option<Running>) -> Result<crate::handler::Reply, String> {
    match running {
        Some(r) => CatchUnwind::new(&mut r.fut).await,
        None => std::future::pending().await,
    }
}

/// Run a hook future, containing a panic.
pub(crate) async fn run_hook(server: &Server, fut: crate::sync::BoxFuture<()>) {
    if let Err(msg) = CatchUnwind::new(fut).await {
        Counters::inc(&server.inner.counters.handler_panics);
        tracing::error!(panic = %msg, "a disconnect hook panicked");
    }
}

/// After a namespace membership ended: its disconnect hook, and removal of an empty dynamic
/// namespace.
pub(crate) async fn leave_hooks(
    server: &Server,
    conn: &Arc<ConnShared>,
    m: Membership,
    reason: DisconnectReason,
) {
    if let Some(hook) = m.ns.on_disconnect.clone() {
        let socket = Socket::new(server.clone(), conn.clone(), m.ns.name.clone());
        run_hook(server, hook(socket, reason)).await;
    }
    server.release_namespace(&m.ns);
}

/// [`leave_hooks`] from synchronous code: the hook runs in a new task.
pub(crate) fn after_leave(
    server: &Server,
    conn: &Arc<ConnShared>,
    m: Membership,
    reason: DisconnectReason,
) {
    if m.ns.on_disconnect.is_none() {
        server.release_namespace(&m.ns);
        return;
    }
    let (server, conn) = (server.clone(), conn.clone());
    tokio::spawn(async move { leave_hooks(&server, &conn, m, reason).await });
}

/// Map a read error to how the connection ends (tungstenite sends no close frame itself).
fn map_ws_error(e: WsError) -> Exit {
    match e {
        WsError::Capacity(_) => Exit::close(CloseCode::MESSAGE_TOO_BIG, "message too big"),
        WsError::Utf8(_) => Exit::close(CloseCode::INVALID_PAYLOAD, "invalid utf-8 in text frame"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Exit::Transport,
        WsError::Protocol(p) => Exit::close(
            CloseCode::PROTOCOL_ERROR,
            crate::socket::truncate_reason(&format!("protocol error: {p}").to_lowercase()),
        ),
        WsError::AttackAttempt => Exit::close(CloseCode::PROTOCOL_ERROR, "protocol error"),
        _ => Exit::Transport,
    }
}
