//! The task that owns one WebSocket: it moves bytes and runs futures, nothing else.
//!
//! One task per connection, no lock around the socket: a `select!` over the socket, the
//! connection's one outbound queue, the running request (held by the protocol [`Machine`]), the
//! ping interval and the read deadline. Every turn writes one batch from the outbound queue into
//! tungstenite's write buffer and flushes once (batching); the protocol itself lives in
//! [`Machine`], which has no I/O.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::error::Elapsed;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::request::Parts;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};
use tracing::Instrument;

use super::lifecycle::Cleanup;
use super::machine::{Machine, ReadGate};
use super::{CloseRequest, ConnShared};
use crate::hooks::DisconnectReason;
use crate::server::Slot;
use crate::stats::Counters;
use crate::{CloseCode, Server};

/// Most frames fed into one flush, and most frames read before the next write.
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
    fn close(code: CloseCode, reason: impl Into<String>) -> Exit {
        Exit::Close(CloseRequest::now(code, reason))
    }

    fn reason(self) -> DisconnectReason {
        match self {
            Exit::Transport => DisconnectReason::TransportClosed,
            Exit::ClientClosed(code, reason) => DisconnectReason::ClientClosed { code, reason },
            Exit::Close(req) => DisconnectReason::ServerClosed {
                code: req.code,
                reason: req.reason,
            },
            Exit::Closed(code, reason) => DisconnectReason::ServerClosed { code, reason },
        }
    }
}

struct Conn<S> {
    server: Server,
    conn: Arc<ConnShared>,
    ws: WebSocketStream<S>,
    machine: Machine,
    /// Something was fed into the write buffer since the last flush.
    dirty: bool,
    /// Data frames fed since the last flush (the `messages_out` counter).
    written: u64,
    /// A resumed session whose client has not sent anything yet (see `Sessions::confirm`).
    unconfirmed: bool,
}

/// Run one upgraded connection to its end, including its disconnect hooks. `slot` is the
/// connection slot reserved by the upgrade ([`Server::admit_upgrade`]); it is released when the
/// connection is over, however it ends: a guard cleans up if this future is dropped (a killed
/// shutdown, a cancelled `serve_connection`) or unwinds.
///
/// Not an `async fn`: the arguments of an `async fn` stay in its state, moved-from, for as long
/// as it runs (0.6 KiB per open connection here).
pub(crate) fn run_connection<S>(
    server: Server,
    ws: WebSocketStream<S>,
    request: Parts,
    remote_addr: Option<SocketAddr>,
    slot: Slot,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::future::Either;
    let resume = server
        .inner
        .sessions
        .as_ref()
        .and_then(|_| crate::session::resume::parse_query(request.uri.query()));
    match resume {
        // With the cluster's streams a resume may have to ask the engine: boxed, so that only
        // those connections carry the claim's state.
        Some(q) if server.streams_mode() => Either::Left(Box::pin(async move {
            let claim = match server.claim_session_anywhere(&q.token, q.offsets).await {
                Ok((id, restore, presented)) => Claim::Resumed(id, restore, presented),
                Err(refusal) => Claim::Refused(refusal.as_str()),
            };
            start_connection(server, ws, request, remote_addr, slot, claim).await;
        })),
        resume => {
            let claim = match resume {
                Some(q) => match server.claim_session(&q.token) {
                    Ok((id, saved, presented)) => Claim::Resumed(
                        id,
                        crate::session::resume::Restore::new(saved, q.offsets),
                        presented,
                    ),
                    Err(refusal) => Claim::Refused(refusal.as_str()),
                },
                None => Claim::Fresh,
            };
            Either::Right(start_connection(
                server,
                ws,
                request,
                remote_addr,
                slot,
                claim,
            ))
        }
    }
}

/// How a connection's session begins.
enum Claim {
    Fresh,
    Resumed(
        crate::SocketId,
        crate::session::resume::Restore,
        crate::session::token::Secret,
    ),
    Refused(&'static str),
}

fn start_connection<S>(
    server: Server,
    ws: WebSocketStream<S>,
    request: Parts,
    remote_addr: Option<SocketAddr>,
    slot: Slot,
    claim: Claim,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &server.inner.config;
    let (id, outcome, restore, prev) = match claim {
        Claim::Resumed(id, restore, presented) => {
            (id, Some(Ok(())), Some(restore), Some(presented))
        }
        Claim::Refused(reason) => (server.next_id(), Some(Err(reason)), None, None),
        Claim::Fresh => (server.next_id(), None, None, None),
    };
    let conn = ConnShared::new(id, cfg, request, remote_addr);
    if let Some(restore) = restore {
        conn.set_restore(restore);
    }
    let cleanup = Cleanup::new(server.clone(), conn.clone(), slot);
    if cfg.hello && !cfg.echo_mode {
        let token = server
            .inner
            .sessions
            .as_ref()
            .and_then(|s| s.open(&conn, prev));
        conn.send_own(crate::protocol::hello::encode(id, cfg, token.as_deref(), outcome).into());
    }
    // A connection admitted while `shutdown` was listing connections is closed here instead.
    if server.is_shutting_down() {
        conn.request_close(CloseRequest::now(
            CloseCode::GOING_AWAY,
            "server shutting down",
        ));
    }
    let span = tracing::debug_span!("wsu.conn", id = %id);
    let mut killed = server.kill_signal();
    let machine = Machine::new(server.clone(), conn.clone(), Instant::now());
    let mut task = Conn {
        server,
        conn,
        ws,
        machine,
        dirty: false,
        written: 0,
        unconfirmed: false,
    };
    task.unconfirmed = task.conn.is_resumed();
    let run = async move {
        tracing::debug!("connected");
        let exit = task.run().await;
        let Conn {
            ws, mut machine, ..
        } = task;
        drop(ws);
        // A handler still running is cancelled (dropped at its current `.await`), as axum drops
        // a handler whose client went away: its answer has nowhere to go, and a handler that
        // never finishes must not outlive its connection. Work that must complete belongs in a
        // spawned task.
        machine.stop();
        drop(machine);
        cleanup.finish(exit.reason()).await;
    };
    async move {
        // Past the shutdown deadline the connection is dropped wherever it is (its guard cleans
        // up), so that `shutdown` returns in time even with hung hooks.
        tokio::select! {
            biased;
            () = run => {}
            _ = killed.wait_for(|k| *k) => {}
        }
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
        let ping_every = cfg.ping_interval;
        let connected = std::future::poll_fn(|cx| Poll::Ready(self.machine.connect(cx))).await;
        if let Err(req) = connected {
            return Exit::Close(req);
        }
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let read_deadline = tokio::time::sleep_until(self.machine.heartbeat_due());
        tokio::pin!(read_deadline);
        let rate_wait = tokio::time::sleep_until(Instant::now());
        tokio::pin!(rate_wait);

        loop {
            // Write one batch of what is queued, then flush once.
            if let Err(exit) = self.write_queued().await {
                return exit;
            }
            if self.dirty {
                if let Err(exit) = self.flush().await {
                    return exit;
                }
            }
            let gate = self.machine.read_gate();
            let reading = gate == ReadGate::Open;
            let rate_paused = match gate {
                ReadGate::Rate(at) => {
                    if rate_wait.deadline() != at {
                        rate_wait.as_mut().reset(at);
                    }
                    true
                }
                _ => false,
            };
            let running = self.machine.is_running();
            let step: Result<(), Exit> = tokio::select! {
                () = self.conn.close_notify.notified() => match self.conn.take_close_request() {
                    Some(req) => Err(Exit::Close(req)),
                    None => Ok(()),
                },
                msg = self.ws.next(), if reading => self.on_messages(msg).await,
                step = std::future::poll_fn(|cx| self.machine.poll_running(cx)), if running => {
                    step.map_err(Exit::Close)
                }
                () = std::future::poll_fn(|cx| self.conn.outbox.poll_ready(cx)) => Ok(()),
                _ = ping.tick() => {
                    self.conn.outbox.push(Message::Ping(Bytes::new()));
                    Ok(())
                }
                () = &mut read_deadline, if reading => {
                    let due = self.machine.heartbeat_due();
                    if Instant::now() >= due {
                        Err(Exit::close(CloseCode::HEARTBEAT_TIMEOUT, "heartbeat timeout"))
                    } else {
                        read_deadline.as_mut().reset(due);
                        Ok(())
                    }
                }
                () = &mut rate_wait, if rate_paused => Ok(()),
            };
            if let Err(exit) = step {
                return exit;
            }
        }
    }

    /// Handle one item from the socket, then those already buffered (up to a batch, while the
    /// read gate stays open), so that pipelined requests share one flush.
    async fn on_messages(&mut self, first: Option<Result<Message, WsError>>) -> Result<(), Exit> {
        self.on_message(first).await?;
        for _ in 1..MAX_BATCH {
            if self.machine.read_gate() != ReadGate::Open {
                break;
            }
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
        let now = Instant::now();
        self.machine.on_activity(now);
        if self.unconfirmed {
            self.unconfirmed = false;
            if let Some(sessions) = &self.server.inner.sessions {
                sessions.confirm(&self.conn);
            }
        }
        if self.server.inner.config.echo_mode
            && matches!(msg, Message::Text(_) | Message::Binary(_))
        {
            // Conformance testing (`ServerBuilder::echo_mode`): the message goes back unchanged.
            Counters::inc(&self.server.inner.counters.messages_in);
            self.conn.outbox.push(msg);
            return Ok(());
        }
        let step = match &msg {
            Message::Text(text) => {
                std::future::poll_fn(|cx| {
                    Poll::Ready(self.machine.on_frame(
                        text.as_bytes(),
                        Some(text.as_str()),
                        now,
                        cx,
                    ))
                })
                .await
            }
            Message::Binary(bin) => {
                std::future::poll_fn(|cx| Poll::Ready(self.machine.on_frame(bin, None, now, cx)))
                    .await
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
                return Err(Exit::ClientClosed(code, reason));
            }
        };
        step.map_err(Exit::Close)
    }

    /// Feed one message into the write buffer (written out at the latest by the next flush).
    ///
    /// Feeding writes the buffer out once it exceeds the write buffer size, so it can block on a
    /// full socket like a flush; a forced close request interrupts it the same way.
    async fn feed(&mut self, msg: Message) -> Result<(), Exit> {
        let timeout = self.server.inner.config.write_timeout;
        let r = interruptible(&self.conn, timeout, self.ws.feed(msg)).await;
        self.write_outcome(r)
    }

    /// Move queued frames into the write buffer, up to one batch.
    async fn write_queued(&mut self) -> Result<(), Exit> {
        for _ in 0..MAX_BATCH {
            if self.conn.outbox.is_empty() {
                break;
            }
            let Some(msg) = self.conn.outbox.pop() else {
                break;
            };
            if matches!(msg, Message::Text(_) | Message::Binary(_)) {
                self.written += 1;
            }
            self.dirty = true;
            self.feed(msg).await?;
        }
        Ok(())
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

    /// How long each step of a close may take: a second, or what is left of the shutdown grace
    /// period when the server is stopping (so that the disconnect hooks still run in time).
    fn close_budget(&self) -> std::time::Duration {
        match self.server.kill_at() {
            Some(at) => CLOSE_HANDSHAKE_TIMEOUT.min(at.saturating_duration_since(Instant::now())),
            None => CLOSE_HANDSHAKE_TIMEOUT,
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
        // What is already queued goes out before the close frame: until the deadline asked for
        // (application close, graceful shutdown), or for a moment when the protocol closes (the
        // answers the client's last frames earned, the explanation of a refusal). Not when the
        // client is the problem (heartbeat, slow consumer, write timeout) or the close is forced.
        let forced = code == CloseCode::GOING_AWAY || matches!(code.as_u16(), 4000..=4002);
        let drain_until =
            drain_until.or_else(|| (!forced).then(|| Instant::now() + self.close_budget()));
        if let Some(deadline) = drain_until {
            let drained = tokio::time::timeout_at(deadline, async {
                while !self.conn.outbox.is_empty() {
                    self.write_queued().await?;
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
        let budget = self.close_budget();
        let sent = tokio::time::timeout(budget, self.ws.close(Some(frame))).await;
        if stream_failed {
            // The stream cannot be parsed any more. Closing now, with unread input, would make
            // the kernel send a reset that can destroy the close frame in flight: send FIN and
            // discard input for a moment instead (a lingering close).
            let io = self.ws.get_mut();
            let _ = tokio::time::timeout(budget, async {
                let _ = io.shutdown().await;
                let mut sink = [0u8; 4096];
                while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        let wait_for_peer = !stream_failed && !peer_stuck;
        if matches!(sent, Ok(Ok(()))) && wait_for_peer {
            let _ = tokio::time::timeout(budget, async {
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
