//! The task that owns the client's WebSocket: one connection at a time, reconnection with
//! backoff, rejoin, and the `select!` loop over the socket, the outbound queue, handler answers,
//! heartbeats and the close request.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::backoff::Backoff;
use super::buffer::{Outbound, Waiter};
use super::handlers::{Answer, IncomingEvent};
use super::memberships::{Intent, Membership};
use super::pending::{Pending, PendingAck};
use super::session::{self, Extension};
use super::shared::{Common, guard};
use super::{
    ClientAckError, ClientError, ConnectionState, ErrorEvent, Recovery, StateEvent, frames,
    presence,
};
use crate::CloseCode;
use crate::protocol::MessageType;
use crate::protocol::envelope::decode;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest time one write or flush may take before the connection is considered lost.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server's close frame after sending ours (and to send ours).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most queued messages written before one flush.
const MAX_BATCH: usize = 64;

/// How a connection ended.
#[derive(Debug)]
struct Ended {
    code: Option<u16>,
    reason: String,
    kind: EndKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndKind {
    /// The server closed it, or it dropped.
    Lost,
    /// The server did not accept it within the connect timeout.
    NotAccepted,
    /// [`Client::close`](super::Client::close), or every handle was dropped.
    ClosedByClient,
}

impl Ended {
    fn lost(code: Option<u16>, reason: impl Into<String>) -> Self {
        Ended {
            code,
            reason: reason.into(),
            kind: EndKind::Lost,
        }
    }
}

/// The result of a connection attempt.
enum Opened {
    Ws(Box<Ws>),
    Failed(ClientError),
    /// A close was requested meanwhile.
    Closing,
}

/// One open WebSocket and its per-connection state.
struct Link {
    ws: Box<Ws>,
    dirty: bool,
    last_seen: Instant,
    /// Rejoin requests (the acceptance probe included) not answered yet.
    rejoin_left: usize,
    /// The connection asked to resume a session: the rejoins wait for the server's `hello`
    /// (skipped if the resume is accepted), or for the probe's answer without one.
    rejoins_deferred: bool,
    /// Whether this connection resumed the previous session.
    resumed: bool,
    /// Events that did not fit in the handler queue (one live event, or the rest of a
    /// `recovery` frame's events), in order. While there are some, the socket is not read (TCP
    /// backpressure on the server); answers and queued messages are still written.
    stalled: VecDeque<IncomingEvent>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Delivery is at-most-once: an event held back when its connection ends is not handled
        // (a server request among them fails on the server with `closed`, as for any drop).
        if let Some(event) = self.stalled.front() {
            tracing::debug!(
                namespace = %event.namespace,
                event = %event.event,
                count = self.stalled.len(),
                "connection ended with events waiting for the handler queue: not handled"
            );
        }
    }
}

impl Link {
    /// Queues a message in the socket's write buffer (flushed at the end of the loop turn).
    async fn feed(&mut self, msg: Message) -> Result<(), Ended> {
        self.dirty = true;
        match tokio::time::timeout(WRITE_TIMEOUT, self.ws.feed(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Ended::lost(None, format!("write failed: {e}"))),
            Err(_) => Err(Ended::lost(None, "write timeout")),
        }
    }

    async fn flush(&mut self) -> Result<(), Ended> {
        self.dirty = false;
        match tokio::time::timeout(WRITE_TIMEOUT, self.ws.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Ended::lost(None, format!("write failed: {e}"))),
            Err(_) => Err(Ended::lost(None, "write timeout")),
        }
    }
}

/// Resolves once a close was requested (or every handle is gone).
async fn closing(rx: &mut watch::Receiver<Option<String>>) {
    let _ = rx.wait_for(Option::is_some).await;
}

/// The connection task of one client (it outlives each connection).
pub(crate) struct Driver {
    pub(crate) common: Arc<Common>,
    pub(crate) outbox: mpsc::Receiver<Outbound>,
    pub(crate) close: watch::Receiver<Option<String>>,
    pub(crate) events: mpsc::Sender<IncomingEvent>,
    pub(crate) answers: mpsc::Receiver<Answer>,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) epoch: u64,
    pub(crate) pending: Pending,
    /// The last connection attempt asked to resume the session (it carried `wsu_resume`).
    pub(crate) resuming: bool,
}

impl Driver {
    /// Connects, reports the first connection's outcome on `first`, then keeps the client
    /// connected until it is closed or gives up.
    pub(crate) async fn run(mut self, first: oneshot::Sender<Result<(), ClientError>>) {
        let mut first = Some(first);
        let mut ws = match self.open().await {
            Opened::Ws(ws) => ws,
            Opened::Failed(e) => return self.fail_first(first, e),
            Opened::Closing => return self.fail_first(first, ClientError::Closed),
        };
        let mut attempt: u32 = 0;
        loop {
            let (ended, was_ready) = self.connection(ws, &mut first).await;
            self.pending.fail_all();
            if let Some(first) = first.take() {
                let error = match ended.kind {
                    EndKind::ClosedByClient => ClientError::Closed,
                    EndKind::NotAccepted => ClientError::Timeout,
                    EndKind::Lost => ClientError::Refused {
                        code: ended.code,
                        reason: ended.reason,
                    },
                };
                return self.fail_first(Some(first), error);
            }
            if was_ready {
                attempt = 0;
            }
            let reconnect =
                ended.kind != EndKind::ClosedByClient && self.should_reconnect(ended.code);
            // The state changes before the event is reported, so that nobody sees `Connected`
            // after the connection ended.
            self.common.set_state(if reconnect {
                ConnectionState::Reconnecting {
                    attempt: attempt + 1,
                }
            } else {
                ConnectionState::Closed
            });
            self.common.report(StateEvent::Disconnected {
                code: ended.code,
                reason: ended.reason,
            });
            if !reconnect {
                return self.finish();
            }
            ws = loop {
                attempt += 1;
                let Some(backoff) = self.backoff.as_mut() else {
                    return self.finish();
                };
                if backoff
                    .policy()
                    .max_attempts
                    .is_some_and(|max| attempt > max)
                {
                    self.common.set_state(ConnectionState::Closed);
                    self.common.report(StateEvent::GaveUp);
                    return self.finish();
                }
                let delay = backoff.delay(attempt);
                self.common
                    .set_state(ConnectionState::Reconnecting { attempt });
                self.common
                    .report(StateEvent::Reconnecting { attempt, delay });
                let waited = tokio::select! {
                    () = tokio::time::sleep(delay) => true,
                    () = closing(&mut self.close) => false,
                };
                if !waited {
                    return self.finish();
                }
                match self.open().await {
                    Opened::Ws(ws) => break ws,
                    Opened::Failed(error) => {
                        tracing::debug!(attempt, %error, "reconnection attempt failed");
                    }
                    Opened::Closing => return self.finish(),
                }
            };
        }
    }

    /// Whether to reconnect after a connection ended with `code`.
    fn should_reconnect(&self, code: Option<u16>) -> bool {
        let Some(backoff) = &self.backoff else {
            return false;
        };
        match code {
            None => true,
            Some(1000) => backoff.policy().on_normal_close,
            Some(code) => CloseCode::new(code).should_reconnect(),
        }
    }

    fn fail_first(self, first: Option<oneshot::Sender<Result<(), ClientError>>>, e: ClientError) {
        if let Some(first) = first {
            let _ = first.send(Err(e));
        }
        self.finish();
    }

    /// The client is closed for good: refuse new messages, drop the buffered ones (their
    /// waiters fail with `Closed`), and let the handler task end.
    fn finish(mut self) {
        self.common.set_state(ConnectionState::Closed);
        self.outbox.close();
        while self.outbox.try_recv().is_ok() {}
    }

    /// One connection attempt: TCP, then the WebSocket handshake, within the connect timeout.
    async fn open(&mut self) -> Opened {
        let config = &self.common.config;
        let resume = self.common.with_session(|s| s.resume_query());
        self.resuming = resume.is_some();
        let request = match config.request_with(resume.as_ref().map_or(&[][..], |r| &r[..])) {
            Ok(request) => request,
            Err(e) => return Opened::Failed(e),
        };
        // The TLS configuration is used for `wss://` URLs only.
        #[cfg(any(feature = "client-tls", feature = "client-tls-native-roots"))]
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            true,
            config.tls.clone().map(tokio_tungstenite::Connector::Rustls),
        );
        #[cfg(not(any(feature = "client-tls", feature = "client-tls-native-roots")))]
        let connecting = tokio_tungstenite::connect_async_with_config(request, None, true);
        let attempt = tokio::time::timeout(config.connect_timeout, connecting);
        tokio::select! {
            result = attempt => match result {
                Ok(Ok((ws, _response))) => Opened::Ws(Box::new(ws)),
                Ok(Err(e)) => Opened::Failed(connect_error(e)),
                Err(_) => Opened::Failed(ClientError::Timeout),
            },
            () = closing(&mut self.close) => Opened::Closing,
        }
    }

    /// Runs one connection to its end. Returns how it ended and whether it became ready.
    async fn connection(
        &mut self,
        ws: Box<Ws>,
        first: &mut Option<oneshot::Sender<Result<(), ClientError>>>,
    ) -> (Ended, bool) {
        self.epoch += 1;
        let common = self.common.clone();
        let config = &common.config;
        let mut link = Link {
            ws,
            dirty: false,
            last_seen: Instant::now(),
            rejoin_left: 0,
            rejoins_deferred: self.resuming,
            resumed: false,
            stalled: VecDeque::new(),
        };
        if let Err(ended) = self.send_rejoins(&mut link).await {
            return (ended, false);
        }
        let mut ready = false;
        // A handle of its own, so that a permit to send on it does not borrow `self`.
        let events = self.events.clone();
        let accept_deadline = tokio::time::sleep(config.connect_timeout);
        tokio::pin!(accept_deadline);
        let mut ping =
            tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let read_deadline = tokio::time::sleep_until(link.last_seen + config.read_timeout);
        tokio::pin!(read_deadline);

        loop {
            let step: Result<(), Ended> = tokio::select! {
                () = closing(&mut self.close) => {
                    let reason = self.close.borrow().clone();
                    let reason = reason.unwrap_or_else(|| "client dropped".to_owned());
                    return (self.close_link(&mut link, ready, reason).await, ready);
                }
                // Not read while an event waits for room in the handler queue.
                msg = link.ws.next(), if link.stalled.is_empty() => {
                    self.on_message(&mut link, msg).await
                }
                // Room in the handler queue for the event that did not fit: read again.
                permit = events.reserve(), if !link.stalled.is_empty() => {
                    // The server was not read meanwhile: its silence does not count.
                    link.last_seen = Instant::now();
                    match permit {
                        Ok(permit) => {
                            if let Some(event) = link.stalled.pop_front() {
                                self.record(&event);
                                permit.send(event);
                            }
                            // Then as many of the others as fit.
                            while let Some(event) = link.stalled.pop_front() {
                                if let Err(event) = self.try_deliver(event) {
                                    link.stalled.push_front(event);
                                    break;
                                }
                            }
                            Ok(())
                        }
                        Err(_) => {
                            let mut result = Ok(());
                            while let Some(event) = link.stalled.pop_front() {
                                if result.is_ok() {
                                    result = self.handlers_gone(&mut link, event).await;
                                }
                            }
                            result
                        }
                    }
                }
                // Answers are always taken: the handler task may be waiting for room here,
                // and nothing in this loop waits for the handler task.
                Some((epoch, frame)) = self.answers.recv() => {
                    if epoch == self.epoch {
                        link.feed(Message::Text(frame)).await
                    } else {
                        // The request came from a connection that is gone.
                        Ok(())
                    }
                }
                item = self.outbox.recv(), if ready => match item {
                    Some(item) => self.write_batch(&mut link, item).await,
                    None => {
                        let reason = "client dropped".to_owned();
                        return (self.close_link(&mut link, ready, reason).await, ready);
                    }
                },
                _ = ping.tick() => link.feed(Message::Ping(Bytes::new())).await,
                () = &mut read_deadline, if link.stalled.is_empty() => {
                    let due = link.last_seen + config.read_timeout;
                    if Instant::now() >= due {
                        Err(Ended::lost(None, "heartbeat timeout"))
                    } else {
                        read_deadline.as_mut().reset(due);
                        Ok(())
                    }
                }
                () = &mut accept_deadline, if !ready => Err(Ended {
                    code: None,
                    reason: "the server did not accept the connection in time".to_owned(),
                    kind: EndKind::NotAccepted,
                }),
            };
            if let Err(ended) = step {
                return (ended, ready);
            }
            if !ready && link.rejoin_left == 0 && !link.rejoins_deferred {
                ready = true;
                common.set_state(ConnectionState::Connected);
                common.report(StateEvent::Connected);
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
            }
            if link.dirty {
                if let Err(ended) = link.flush().await {
                    return (ended, ready);
                }
            }
        }
    }

    /// Writes the acceptance probe (a `join` of `/`, a no-op that the server answers only once
    /// its connect hooks have accepted the connection), then, unless the connection asked to
    /// resume a session (the server's `hello` decides), joins every remembered namespace, then
    /// every remembered room.
    async fn send_rejoins(&mut self, link: &mut Link) -> Result<(), Ended> {
        let mut rejoins = vec![(None, Intent::Join)];
        if !link.rejoins_deferred {
            rejoins.extend(self.memberships_to_rejoin());
        }
        self.write_joins(link, rejoins).await
    }

    /// Every membership, to join again on a fresh session.
    fn memberships_to_rejoin(&self) -> Vec<(Option<Membership>, Intent)> {
        self.common
            .with_memberships(|m| m.fresh_session())
            .into_iter()
            .map(|m| (Some(m), Intent::Join))
            .collect()
    }

    /// After a resume: the joins and leaves the server may not have applied before the old
    /// connection ended (lost with it, or given up in the offline buffer), sent again so that
    /// the restored session matches what the client remembers.
    async fn send_unsettled(&mut self, link: &mut Link) -> Result<(), Ended> {
        let unsettled: Vec<_> = self
            .common
            .with_memberships(|m| m.unsettled())
            .into_iter()
            .map(|(m, intent)| (Some(m), intent))
            .collect();
        if unsettled.is_empty() {
            return Ok(());
        }
        self.write_joins(link, unsettled).await
    }

    /// The deferred rejoins of a resume request that the server did not accept.
    async fn send_deferred_rejoins(&mut self, link: &mut Link) -> Result<(), Ended> {
        if !link.rejoins_deferred {
            return Ok(());
        }
        link.rejoins_deferred = false;
        let rejoins = self.memberships_to_rejoin();
        self.write_joins(link, rejoins).await
    }

    /// Writes joins (`None`: the acceptance probe) and leaves, each waited for before the
    /// connection is reported ready.
    async fn write_joins(
        &mut self,
        link: &mut Link,
        rejoins: Vec<(Option<Membership>, Intent)>,
    ) -> Result<(), Ended> {
        for (membership, intent) in rejoins {
            let id = self.common.next_ack_id();
            let kind = match intent {
                Intent::Join => MessageType::Join,
                Intent::Leave => MessageType::Leave,
            };
            let frame = match &membership {
                None => frames::membership(MessageType::Join, "/", None, &id),
                Some(Membership::Namespace(ns)) => frames::membership(kind, ns, None, &id),
                Some(Membership::Room(ns, room)) => frames::membership(kind, ns, Some(room), &id),
            };
            let waiter = match (membership, intent) {
                (Some(m), Intent::Leave) => PendingAck::Releave(m),
                (membership, _) => PendingAck::Rejoin(membership),
            };
            self.pending.insert(id.into(), waiter);
            link.rejoin_left += 1;
            link.feed(Message::Text(frame)).await?;
        }
        link.flush().await
    }

    /// Handles one item from the socket.
    async fn on_message(
        &mut self,
        link: &mut Link,
        msg: Option<Result<Message, WsError>>,
    ) -> Result<(), Ended> {
        let msg = match msg {
            None => return Err(Ended::lost(None, "connection closed")),
            Some(Err(e)) => return Err(Ended::lost(None, format!("connection lost: {e}"))),
            Some(Ok(msg)) => msg,
        };
        link.last_seen = Instant::now();
        match msg {
            Message::Text(text) => self.on_frame(link, text.as_bytes()).await,
            Message::Binary(bytes) => self.on_frame(link, &bytes).await,
            // tungstenite queued the pong: flush it.
            Message::Ping(_) => {
                link.dirty = true;
                Ok(())
            }
            Message::Pong(_) | Message::Frame(_) => Ok(()),
            Message::Close(frame) => {
                // tungstenite queued the close reply: send it.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, link.ws.flush()).await;
                Err(match frame {
                    Some(f) => Ended::lost(Some(u16::from(f.code)), f.reason.to_string()),
                    None => Ended::lost(Some(CloseCode::NO_STATUS.as_u16()), ""),
                })
            }
        }
    }

    /// Handles one server message.
    async fn on_frame(&mut self, link: &mut Link, bytes: &[u8]) -> Result<(), Ended> {
        let msg = match decode(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(error = %e.message, "ignoring a server message that does not decode");
                return Ok(());
            }
        };
        match msg.kind {
            Some(MessageType::Event) => {
                let Some(event) = msg.event else {
                    return Ok(());
                };
                let incoming = IncomingEvent {
                    epoch: self.epoch,
                    namespace: msg.namespace.into(),
                    event: event.into(),
                    data: msg.data.map(ToOwned::to_owned),
                    ack_id: msg.ack_id.map(Into::into),
                    position: session::event_position(bytes),
                };
                self.deliver(link, incoming).await?;
            }
            Some(MessageType::Ack) => {
                let Some(id) = msg.ack_id.as_deref() else {
                    return Ok(());
                };
                match self.pending.take(id) {
                    Some(PendingAck::Request(tx)) => {
                        let _ = tx.send(Ok(msg.data.map(ToOwned::to_owned)));
                    }
                    Some(PendingAck::Rejoin(membership)) => {
                        link.rejoin_left -= 1;
                        match membership {
                            Some(m) => self
                                .common
                                .with_memberships(|ms| ms.settle(&m, Intent::Join)),
                            // A probe answered without a `hello` first: a server without the
                            // extensions, which resumes nothing.
                            None if link.rejoins_deferred => {
                                self.send_deferred_rejoins(link).await?;
                            }
                            None => {}
                        }
                    }
                    Some(PendingAck::Releave(m)) => {
                        link.rejoin_left -= 1;
                        self.common
                            .with_memberships(|ms| ms.settle(&m, Intent::Leave));
                    }
                    None => {}
                }
            }
            Some(MessageType::Error) => {
                let message = frames::error_text(bytes);
                let data = msg.data.map(ToOwned::to_owned);
                match msg.ack_id.as_deref().and_then(|id| self.pending.take(id)) {
                    Some(PendingAck::Request(tx)) => {
                        let _ = tx.send(Err(ClientAckError::Server { message, data }));
                    }
                    Some(PendingAck::Releave(m)) => {
                        // Not in it (any more): that is what was asked.
                        link.rejoin_left -= 1;
                        tracing::debug!(membership = ?m, %message, "leaving again after a resume failed");
                        self.common
                            .with_memberships(|ms| ms.settle(&m, Intent::Leave));
                    }
                    Some(PendingAck::Rejoin(membership)) => {
                        link.rejoin_left -= 1;
                        let probe = membership.is_none();
                        self.rejoin_failed(membership, message, data);
                        if probe && link.rejoins_deferred {
                            self.send_deferred_rejoins(link).await?;
                        }
                    }
                    None => self.common.report_error(ErrorEvent::Server {
                        namespace: msg.namespace.into_owned(),
                        event: msg.event.map(|e| e.into_owned()),
                        message,
                        data,
                    }),
                }
            }
            Some(MessageType::Pong) => self.pending.pong(),
            Some(MessageType::Ping) => {
                let pong = frames::ping_pong(MessageType::Pong, &msg.namespace);
                link.feed(Message::Text(pong)).await?;
            }
            Some(MessageType::Join | MessageType::Leave) => {}
            None => match session::extension(bytes) {
                Some(Extension::Hello) => self.on_hello(link, bytes).await?,
                Some(Extension::Recovery) => self.on_recovery(link, bytes).await?,
                Some(Extension::Presence) => self.on_presence(bytes),
                None => {}
            },
        }
        Ok(())
    }

    /// Hands an event to the handler task, or parks it (and stops reading) when its queue is
    /// full. Never waits for the handler task (it may be waiting for this task to take its
    /// answers).
    async fn deliver(&mut self, link: &mut Link, event: IncomingEvent) -> Result<(), Ended> {
        if !link.stalled.is_empty() {
            link.stalled.push_back(event);
            return Ok(());
        }
        match self.try_deliver(event) {
            Ok(()) => Ok(()),
            Err(event) if self.events.is_closed() => self.handlers_gone(link, event).await,
            Err(event) => {
                link.stalled.push_back(event);
                Ok(())
            }
        }
    }

    /// Puts an event in the handler queue if there is room (recording its position), else gives
    /// it back.
    fn try_deliver(&mut self, event: IncomingEvent) -> Result<(), IncomingEvent> {
        let position = event.position.clone().map(|p| (event.namespace.clone(), p));
        match self.events.try_send(event) {
            Ok(()) => {
                if let Some((namespace, position)) = position {
                    self.set_position(&namespace, position);
                }
                Ok(())
            }
            Err(
                mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event),
            ) => Err(event),
        }
    }

    /// An event entered the handler queue: it will be handled, so its position counts.
    fn record(&self, event: &IncomingEvent) {
        if let Some(position) = &event.position {
            self.set_position(&event.namespace, position.clone());
        }
    }

    fn set_position(&self, namespace: &str, position: session::StreamPosition) {
        self.common.with_session(|s| {
            s.positions.insert(namespace.to_owned(), position);
        });
    }

    /// The server's `hello`: the session id, the (new, single-use) resume token and the
    /// limits; and, for a resume request, whether the session was resumed.
    async fn on_hello(&mut self, link: &mut Link, bytes: &[u8]) -> Result<(), Ended> {
        let Some(hello) = session::hello(bytes) else {
            tracing::warn!("ignoring a hello frame that does not parse");
            return Ok(());
        };
        let accepted = hello.resume.as_ref().is_some_and(|r| r.accepted);
        let sid = hello.sid.clone().unwrap_or_default();
        self.common.with_session(|s| {
            s.on_hello(&hello);
            if !accepted {
                // A fresh session: the old positions mean nothing to it (its `recovery`
                // frames give the new ones).
                s.positions.clear();
            }
        });
        link.resumed = accepted;
        if !link.rejoins_deferred {
            return Ok(());
        }
        if accepted {
            // The server restored the namespaces and rooms, as far as it knew them.
            link.rejoins_deferred = false;
            self.common.report(StateEvent::Resumed { sid });
            return self.send_unsettled(link).await;
        }
        let reason = hello
            .resume
            .and_then(|r| r.reason)
            .unwrap_or_else(|| "the server did not answer the resume request".to_owned());
        self.common.report(StateEvent::ResumeRefused { reason });
        self.send_deferred_rejoins(link).await
    }

    /// A `recovery` frame: its events go to the handlers in order, before any later frame, and
    /// its position becomes the namespace's once they are all in the handler queue.
    async fn on_recovery(&mut self, link: &mut Link, bytes: &[u8]) -> Result<(), Ended> {
        let Some(frame) = session::recovery(bytes) else {
            tracing::warn!("ignoring a recovery frame that does not parse");
            return Ok(());
        };
        let mut events = Vec::with_capacity(frame.events.len());
        for raw in &frame.events {
            let raw = raw.get().as_bytes();
            let msg = match decode(raw) {
                Ok(msg) if msg.kind == Some(MessageType::Event) => msg,
                _ => {
                    tracing::warn!(namespace = %frame.namespace, "ignoring a replayed event that does not decode");
                    continue;
                }
            };
            let Some(event) = msg.event else { continue };
            events.push(IncomingEvent {
                epoch: self.epoch,
                namespace: msg.namespace.into(),
                event: event.into(),
                data: msg.data.map(ToOwned::to_owned),
                ack_id: msg.ack_id.map(Into::into),
                position: session::event_position(raw),
            });
        }
        self.common.report(StateEvent::Recovery(Recovery {
            namespace: frame.namespace.clone(),
            recovered: frame.recovered,
            reason: frame.reason,
            replayed: events.len(),
            resumed: link.resumed,
        }));
        match (events.last_mut(), frame.position) {
            // The frame's position is the namespace's once its last event is queued.
            (Some(last), Some(position)) if *last.namespace == *frame.namespace => {
                last.position = Some(position);
            }
            (_, Some(position)) => self.set_position(&frame.namespace, position),
            (_, None) => {}
        }
        for event in events {
            self.deliver(link, event).await?;
        }
        Ok(())
    }

    /// A `presence` frame: update the room's view, then tell the application.
    fn on_presence(&self, bytes: &[u8]) {
        let Some(event) = presence::parse(bytes) else {
            tracing::warn!("ignoring a presence frame that does not parse");
            return;
        };
        self.common.with_presence(|p| p.apply(&event));
        if let Some(callback) = &self.common.callbacks.on_presence {
            guard("on_presence", || callback(&event));
        }
    }

    /// The handler task is gone (it cannot end while this task runs, short of a bug): answer a
    /// request with an `error` rather than leave the server waiting.
    async fn handlers_gone(&mut self, link: &mut Link, event: IncomingEvent) -> Result<(), Ended> {
        tracing::error!(
            namespace = %event.namespace,
            event = %event.event,
            "the client's handler task is gone: event not handled"
        );
        match event.ack_id.as_deref() {
            Some(id) => {
                let frame =
                    frames::error(&event.namespace, &event.event, id, "internal error", None);
                link.feed(Message::Text(frame)).await
            }
            None => Ok(()),
        }
    }

    /// A rejoin was refused: forget the membership and tell the application.
    fn rejoin_failed(
        &self,
        membership: Option<Membership>,
        message: String,
        data: Option<Box<serde_json::value::RawValue>>,
    ) {
        let Some(membership) = membership else {
            // The acceptance probe itself (only if `/` cannot be joined).
            self.common.report_error(ErrorEvent::Server {
                namespace: "/".to_owned(),
                event: None,
                message,
                data,
            });
            return;
        };
        self.common.with_memberships(|m| {
            m.remove(&membership);
            m.settle(&membership, Intent::Join);
        });
        let (namespace, room) = match membership {
            Membership::Namespace(ns) => (ns.into(), None),
            Membership::Room(ns, room) => (ns.into(), Some(room.into())),
        };
        self.common.report_error(ErrorEvent::RejoinFailed {
            namespace,
            room,
            message,
        });
    }

    /// Writes `first` and whatever else is queued, up to one batch.
    async fn write_batch(&mut self, link: &mut Link, first: Outbound) -> Result<(), Ended> {
        self.write(link, first).await?;
        for _ in 1..MAX_BATCH {
            match self.outbox.try_recv() {
                Ok(item) => self.write(link, item).await?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Writes one queued message, registering who waits for its answer. A request whose caller
    /// already gave up (timed out while buffered) is not sent at all.
    async fn write(&mut self, link: &mut Link, item: Outbound) -> Result<(), Ended> {
        match item.waiter {
            Some(waiter) if waiter.is_abandoned() => return Ok(()),
            Some(Waiter::Ack { id, tx }) => self.pending.insert(id, PendingAck::Request(tx)),
            Some(Waiter::Pong(tx)) => self.pending.push_ping(tx),
            None => {}
        }
        link.feed(Message::Text(item.frame)).await
    }

    /// Closes the connection at the client's request: writes what is queued (when ready), sends
    /// a close frame with 1000 and the reason, and waits a little for the server's answer.
    async fn close_link(&mut self, link: &mut Link, ready: bool, reason: String) -> Ended {
        self.outbox.close();
        if ready {
            while let Ok(item) = self.outbox.try_recv() {
                if self.write(link, item).await.is_err() {
                    break;
                }
            }
        }
        let reason = crate::socket::truncate_reason(&reason);
        let frame = CloseFrame {
            code: WsCloseCode::Normal,
            reason: Utf8Bytes::from(reason.clone()),
        };
        let sent =
            tokio::time::timeout(CLOSE_TIMEOUT, link.ws.send(Message::Close(Some(frame)))).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Some(Ok(msg)) = link.ws.next().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        Ended {
            code: Some(CloseCode::NORMAL.as_u16()),
            reason,
            kind: EndKind::ClosedByClient,
        }
    }
}

/// A failed connection attempt as a [`ClientError`].
fn connect_error(e: WsError) -> ClientError {
    match e {
        WsError::Http(response) => ClientError::Http(response.status().as_u16()),
        WsError::Url(e) => ClientError::InvalidRequest(e.to_string()),
        WsError::Tls(e) => ClientError::Tls(Box::new(e)),
        #[cfg(any(feature = "client-tls", feature = "client-tls-native-roots"))]
        WsError::Io(e) if super::tls::is_tls_error(&e) => ClientError::Tls(Box::new(e)),
        other => ClientError::Connect(Box::new(other)),
    }
}
