//! What a connection does with each client message: protocol-level answers at once (`ping`,
//! `ack`, invalid input), requests (`event`, `join`, `leave`) one at a time in arrival order.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::task::{Conn, Exit, leave_hooks};
use crate::handler::{HandlerError, Reply};
use crate::protocol::envelope::{DecodeError, Outgoing, decode, decode_text};
use crate::protocol::{MessageType, names};
use crate::stats::Counters;
use crate::sync::{BoxFuture, CatchUnwind};
use crate::{CloseCode, DisconnectReason, JoinError, Socket};

/// A client request: borrowed from its frame while it is started at once, owned (`'static`)
/// while it waits for its turn in the queue.
pub(crate) struct Request<'a> {
    kind: MessageType,
    namespace: Cow<'a, str>,
    event: Option<Cow<'a, str>>,
    room: Option<Cow<'a, str>>,
    ack_id: Option<Cow<'a, str>>,
    data: Option<Cow<'a, RawValue>>,
}

impl Request<'_> {
    /// Copies what it borrows, to wait in the queue (it must not pin the read buffer).
    fn into_owned(self) -> Request<'static> {
        Request {
            kind: self.kind,
            namespace: Cow::Owned(self.namespace.into_owned()),
            event: self.event.map(|e| Cow::Owned(e.into_owned())),
            room: self.room.map(|r| Cow::Owned(r.into_owned())),
            ack_id: self.ack_id.map(|a| Cow::Owned(a.into_owned())),
            data: self.data.map(|d| Cow::Owned(d.into_owned())),
        }
    }
}

/// An entry of the per-connection queue: a request waiting for its turn, or an answer that must
/// not overtake the answers of earlier requests.
pub(crate) enum Pending {
    Request(Request<'static>),
    Reply(Utf8Bytes),
}

/// What the running request is, to shape its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connect,
    Event,
    Membership,
}

/// The request currently running on a connection.
pub(crate) struct Running {
    kind: Kind,
    namespace: Arc<str>,
    event: Option<Box<str>>,
    ack_id: Option<Box<str>>,
    pub(crate) fut: BoxFuture<Reply>,
}

/// A request's handler future, before it is known whether it finishes at once (its event and ack
/// id are only copied when it does not).
struct Begun {
    kind: Kind,
    namespace: Arc<str>,
    fut: BoxFuture<Reply>,
}

/// What starting a request produced.
enum Started {
    /// Refused at once: this error, counted as an invalid message (abuse budget).
    Refused(Utf8Bytes),
    /// Finished at once: this reply (maybe none).
    Done(Option<Utf8Bytes>),
    /// Running.
    Running(Begun),
}

/// Encode a server→client message of raw parts (strings and raw JSON).
fn encode(msg: &Outgoing<'_, RawValue>) -> Utf8Bytes {
    Utf8Bytes::from(msg.encode_raw())
}

/// An `error` message.
pub(crate) fn error_frame(
    namespace: &str,
    event: Option<&str>,
    ack_id: Option<&str>,
    error: &str,
    data: Option<&RawValue>,
) -> Utf8Bytes {
    let mut m = Outgoing::<RawValue>::new(MessageType::Error);
    m.namespace = Some(namespace);
    m.event = event;
    m.ack_id = ack_id;
    m.error = Some(error);
    m.data = data;
    encode(&m)
}

fn ack_frame(
    namespace: &str,
    event: Option<&str>,
    ack_id: &str,
    data: Option<&RawValue>,
) -> Utf8Bytes {
    let mut m = Outgoing::<RawValue>::new(MessageType::Ack);
    m.namespace = Some(namespace);
    m.event = event;
    m.ack_id = Some(ack_id);
    m.data = data;
    encode(&m)
}

/// An echoable name: valid ones only, so that an error never reflects junk back.
fn echo(s: Option<&str>, valid: impl Fn(&str) -> bool) -> Option<&str> {
    s.filter(|s| valid(s))
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Count an invalid message; close with 1008 when the budget is exhausted.
    fn invalid(&mut self) -> Result<(), Exit> {
        Counters::inc(&self.server.inner.counters.protocol_errors);
        let cfg = &self.server.inner.config;
        let now = Instant::now();
        if now.duration_since(self.invalid_window_start) > cfg.invalid_message_window {
            self.invalid_window_start = now;
            self.invalid_count = 0;
        }
        self.invalid_count += 1;
        if self.invalid_count > cfg.max_invalid_messages {
            return Err(Exit::close(
                CloseCode::POLICY_VIOLATION,
                "too many invalid messages",
            ));
        }
        Ok(())
    }

    /// Take a token from the rate limiter; false when over the limit.
    fn rate_ok(&mut self) -> bool {
        let Some(limit) = self.server.inner.config.rate_limit else {
            return true;
        };
        let now = Instant::now();
        let elapsed = now.duration_since(self.tokens_at).as_secs_f64();
        self.tokens_at = now;
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Send an answer in arrival order: now if nothing is running or waiting, else behind what
    /// is (when the queue is full, now).
    async fn answer(&mut self, frame: Utf8Bytes) -> Result<(), Exit> {
        let busy = self.running.is_some() || !self.queue.is_empty();
        if busy && self.queue.len() < self.server.inner.config.max_pending_requests {
            self.queue.push_back(Pending::Reply(frame));
            return Ok(());
        }
        self.reply(frame).await
    }

    /// Answer an invalid message with an error and count it.
    async fn reject(
        &mut self,
        namespace: &str,
        event: Option<&str>,
        ack_id: Option<&str>,
        error: &str,
    ) -> Result<(), Exit> {
        let frame = error_frame(namespace, event, ack_id, error, None);
        self.answer(frame).await?;
        self.invalid()
    }

    /// Handle one data frame (`text` when it is a text frame, already checked as UTF-8).
    pub(crate) async fn on_frame(&mut self, bytes: &[u8], text: Option<&str>) -> Result<(), Exit> {
        let decoded = match text {
            Some(text) => decode_text(text),
            None => decode(bytes),
        };
        let msg = match decoded {
            Ok(m) => m,
            Err(DecodeError {
                message,
                namespace,
                event,
                ack_id,
            }) => {
                let ns = echo(namespace.as_deref(), |n| {
                    names::validate_namespace(n).is_ok()
                })
                .unwrap_or("/");
                let ev = echo(event.as_deref(), |e| names::validate_room(e).is_ok());
                let ack = echo(ack_id.as_deref(), |a| names::validate_ack_id(a).is_ok());
                let text = format!("invalid message: {message}");
                let ns = ns.to_owned();
                let (ev, ack) = (ev.map(str::to_owned), ack.map(str::to_owned));
                return self.reject(&ns, ev.as_deref(), ack.as_deref(), &text).await;
            }
        };
        let mut msg = msg;
        // Empty strings are absent, as the seed's zero values were.
        msg.ack_id = msg.ack_id.filter(|a| !a.is_empty());
        msg.room = msg.room.filter(|r| !r.is_empty());
        let ns_ok = names::validate_namespace(&msg.namespace);
        let ack_ok = msg
            .ack_id
            .as_deref()
            .map(names::validate_ack_id)
            .transpose();
        let echo_ns = if ns_ok.is_ok() { &*msg.namespace } else { "/" };
        let echo_ack = if ack_ok.is_ok() {
            msg.ack_id.as_deref()
        } else {
            None
        };
        let echo_ev = msg
            .event
            .as_deref()
            .filter(|e| names::validate_room(e).is_ok());

        let Some(kind) = msg.kind else {
            return self
                .reject(echo_ns, echo_ev, echo_ack, "unknown message type")
                .await;
        };
        match kind {
            // Answers of the client: never answered (no error loops between peers). An `error`
            // carrying the `ackId` of a server request fails that request.
            MessageType::Pong => return Ok(()),
            MessageType::Error => {
                if let Some(id) = msg.ack_id.as_deref() {
                    let text = msg.error.as_deref().unwrap_or("error");
                    let mut err = HandlerError::new(names::truncate_for_display(text).into_owned());
                    if let Some(d) = msg.data {
                        err = err.with_data(d);
                    }
                    if !self.conn.resolve_ack(id, Err(err)) {
                        Counters::inc(&self.server.inner.counters.unknown_acks);
                    }
                }
                return Ok(());
            }
            MessageType::Ping => {
                // The seed echoed any namespace; echo it when it is a printable name.
                let ns = if names::validate_room(&msg.namespace).is_ok() {
                    &*msg.namespace
                } else {
                    "/"
                };
                let mut m = Outgoing::<RawValue>::new(MessageType::Pong);
                m.namespace = Some(ns);
                let frame = encode(&m);
                return self.answer(frame).await;
            }
            MessageType::Ack => {
                let Some(id) = msg.ack_id.as_deref() else {
                    return self
                        .reject(echo_ns, None, None, "invalid message: ack without ackId")
                        .await;
                };
                let data = msg.data.map(|d| d.to_owned());
                if !self.conn.resolve_ack(id, Ok(data)) {
                    Counters::inc(&self.server.inner.counters.unknown_acks);
                }
                return Ok(());
            }
            MessageType::Event | MessageType::Join | MessageType::Leave => {}
        }
        if let Err(e) = ns_ok {
            return self
                .reject(
                    "/",
                    echo_ev,
                    echo_ack,
                    &format!("invalid namespace: namespace {e}"),
                )
                .await;
        }
        if let Err(e) = ack_ok {
            return self
                .reject(echo_ns, echo_ev, None, &format!("invalid ackId: ackId {e}"))
                .await;
        }
        match kind {
            MessageType::Event | MessageType::Join | MessageType::Leave => {
                if kind == MessageType::Event {
                    let Some(event) = msg.event.as_deref() else {
                        return self
                            .reject(
                                echo_ns,
                                None,
                                echo_ack,
                                "invalid message: event without event name",
                            )
                            .await;
                    };
                    if let Err(e) = names::validate_event(event) {
                        return self
                            .reject(
                                echo_ns,
                                echo_ev,
                                echo_ack,
                                &format!("invalid event name: event {e}"),
                            )
                            .await;
                    }
                }
                if kind != MessageType::Event {
                    if let Some(room) = msg.room.as_deref() {
                        if let Err(e) = names::validate_room(room) {
                            return self
                                .reject(
                                    echo_ns,
                                    None,
                                    echo_ack,
                                    &format!("invalid room name: room {e}"),
                                )
                                .await;
                        }
                    }
                }
                if !self.rate_ok() {
                    return self
                        .reject(echo_ns, echo_ev, echo_ack, "rate limit exceeded")
                        .await;
                }
                let is_event = kind == MessageType::Event;
                let request = Request {
                    kind,
                    namespace: msg.namespace,
                    event: msg.event.filter(|_| is_event),
                    room: msg.room.filter(|_| !is_event),
                    ack_id: msg.ack_id,
                    data: msg.data.filter(|_| is_event).map(Cow::Borrowed),
                };
                self.submit(request).await
            }
            MessageType::Ping | MessageType::Pong | MessageType::Ack | MessageType::Error => Ok(()),
        }
    }

    /// Run a request now if nothing is running, else queue it (bounded).
    async fn submit(&mut self, request: Request<'_>) -> Result<(), Exit> {
        if self.running.is_none() && self.queue.is_empty() {
            return self.start(request).await;
        }
        if self.queue.len() >= self.server.inner.config.max_pending_requests {
            // Answered at once: the queue has no room for the answer either.
            let frame = error_frame(
                &request.namespace,
                request.event.as_deref(),
                request.ack_id.as_deref(),
                "too many pending requests",
                None,
            );
            self.reply(frame).await?;
            return self.invalid();
        }
        self.queue.push_back(Pending::Request(request.into_owned()));
        Ok(())
    }

    /// Start a request: answer at once or leave it running.
    ///
    /// A started handler is polled once at once (with the task's waker): most complete
    /// without waiting, and their answer then joins the current batch of writes.
    async fn start(&mut self, request: Request<'_>) -> Result<(), Exit> {
        match self.begin(&request) {
            Started::Done(Some(frame)) => self.reply(frame).await,
            Started::Refused(frame) => {
                self.reply(frame).await?;
                self.invalid()
            }
            Started::Done(None) => Ok(()),
            Started::Running(Begun {
                kind,
                namespace,
                mut fut,
            }) => {
                let polled = std::future::poll_fn(|cx| {
                    Poll::Ready(Pin::new(&mut CatchUnwind::new(&mut fut)).poll(cx))
                })
                .await;
                match polled {
                    Poll::Ready(out) => {
                        drop(fut);
                        let (event, ack_id) = (request.event.as_deref(), request.ack_id.as_deref());
                        self.answer_finished(kind, &namespace, event, ack_id, out)
                            .await
                    }
                    // Only now are the event and ack id copied out of the frame.
                    Poll::Pending => {
                        self.running = Some(Running {
                            kind,
                            namespace,
                            event: request.event.map(Into::into),
                            ack_id: request.ack_id.map(Into::into),
                            fut,
                        });
                        Ok(())
                    }
                }
            }
        }
    }

    /// Start queued requests until one keeps running.
    async fn start_queued(&mut self) -> Result<(), Exit> {
        while self.running.is_none() {
            match self.queue.pop_front() {
                Some(Pending::Request(request)) => self.start(request).await?,
                Some(Pending::Reply(frame)) => self.reply(frame).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// The connect hooks, then membership of `/`: the first thing a connection runs. Without
    /// hooks this completes at once (None); otherwise it runs before any request.
    pub(crate) fn connect_phase(&self) -> Result<Option<Running>, Exit> {
        let root_hook = self
            .server
            .lookup_namespace("/")
            .is_some_and(|ns| ns.on_connect.is_some());
        if self.server.inner.on_connect.is_none() && !root_hook {
            return match self.server.join(&self.conn, "/", None) {
                Ok(_) => Ok(None),
                Err(e) => Err(Exit::close(CloseCode::REFUSED, e.to_string())),
            };
        }
        Ok(Some(self.connect_hooks()))
    }

    fn connect_hooks(&self) -> Running {
        let server = self.server.clone();
        let conn = self.conn.clone();
        let fut = async move {
            let socket = Socket::new(server.clone(), conn.clone(), Arc::from("/"));
            if let Some(hook) = server.inner.on_connect.clone() {
                hook(socket.clone()).await.map_err(HandlerError::new)?;
            }
            if let Some(ns) = server.lookup_namespace("/") {
                if let Some(hook) = ns.on_connect.clone() {
                    hook(socket).await.map_err(HandlerError::new)?;
                }
            }
            server
                .join(&conn, "/", None)
                .map_err(|e| HandlerError::new(e.to_string()))?;
            Ok(None)
        };
        Running {
            kind: Kind::Connect,
            namespace: Arc::from("/"),
            event: None,
            ack_id: None,
            fut: Box::pin(fut),
        }
    }

    fn begin(&mut self, r: &Request<'_>) -> Started {
        match r.kind {
            MessageType::Event => self.begin_event(r),
            MessageType::Join => self.begin_join(r),
            _ => self.begin_leave(r),
        }
    }

    fn begin_event(&mut self, r: &Request<'_>) -> Started {
        let event = r.event.as_deref().unwrap_or_default();
        let ack = r.ack_id.as_deref();
        let Some(ns) = self.conn.namespace(&r.namespace) else {
            return Started::Refused(error_frame(
                &r.namespace,
                Some(event),
                ack,
                "namespace not joined",
                None,
            ));
        };
        let Some(entry) = ns.handlers.get(event) else {
            return Started::Refused(error_frame(
                &r.namespace,
                Some(event),
                ack,
                "unknown event",
                None,
            ));
        };
        let socket = Socket::new(self.server.clone(), self.conn.clone(), ns.name.clone());
        let fut = entry.handler.call(socket, r.data.as_deref());
        Started::Running(Begun {
            kind: Kind::Event,
            namespace: ns.name.clone(),
            fut,
        })
    }

    fn membership_done(&self, r: &Request<'_>, result: Result<(), JoinError>) -> Started {
        match result {
            Ok(()) => Started::Done(
                r.ack_id
                    .as_deref()
                    .map(|id| ack_frame(&r.namespace, None, id, None)),
            ),
            // Failures of the client's own making count against its invalid-message budget.
            Err(e) => Started::Refused(error_frame(
                &r.namespace,
                None,
                r.ack_id.as_deref(),
                &e.to_string(),
                None,
            )),
        }
    }

    fn begin_join(&mut self, r: &Request<'_>) -> Started {
        let Some(ns) = self.server.namespace_for_join(&r.namespace) else {
            return self.membership_done(r, Err(JoinError::UnknownNamespace));
        };
        let member = ns.is_member(self.conn.id);
        let hook = if member { None } else { ns.on_connect.clone() };
        let Some(hook) = hook else {
            let res = self
                .server
                .join(&self.conn, &r.namespace, r.room.as_deref())
                .map(|_| ());
            return self.membership_done(r, res);
        };
        // The namespace's connect hook decides first.
        let server = self.server.clone();
        let conn = self.conn.clone();
        let room = r.room.as_deref().map(str::to_owned);
        let ns_name = ns.name.clone();
        let fut = async move {
            let socket = Socket::new(server.clone(), conn.clone(), ns_name.clone());
            if let Err(reason) = hook(socket).await {
                return Err(HandlerError::new(JoinError::Refused(reason).to_string()));
            }
            server
                .join(&conn, &ns_name, room.as_deref())
                .map_err(|e| HandlerError::new(e.to_string()))?;
            Ok(None)
        };
        Started::Running(Begun {
            kind: Kind::Membership,
            namespace: ns.name.clone(),
            fut: Box::pin(fut),
        })
    }

    fn begin_leave(&mut self, r: &Request<'_>) -> Started {
        if let Some(room) = r.room.as_deref() {
            self.conn.leave_room(&r.namespace, room);
            return self.membership_done(r, Ok(()));
        }
        let Some(m) = self.conn.leave_namespace(&r.namespace) else {
            return self.membership_done(r, Ok(()));
        };
        if m.ns.on_disconnect.is_none() {
            self.server.release_namespace(&m.ns);
            return self.membership_done(r, Ok(()));
        }
        let server = self.server.clone();
        let conn = self.conn.clone();
        let fut = async move {
            leave_hooks(&server, &conn, m, DisconnectReason::LeftNamespace).await;
            Ok(None)
        };
        Started::Running(Begun {
            kind: Kind::Membership,
            namespace: Arc::from(&*r.namespace),
            fut: Box::pin(fut),
        })
    }

    /// The running request finished (or panicked): answer it and start the next.
    pub(crate) async fn on_finished(
        &mut self,
        running: Running,
        out: Result<Reply, String>,
    ) -> Result<(), Exit> {
        let Running {
            kind,
            namespace,
            event,
            ack_id,
            fut,
        } = running;
        drop(fut);
        self.answer_finished(kind, &namespace, event.as_deref(), ack_id.as_deref(), out)
            .await?;
        self.start_queued().await
    }

    /// Send the answer of a finished request.
    async fn answer_finished(
        &mut self,
        kind: Kind,
        namespace: &str,
        event: Option<&str>,
        ack_id: Option<&str>,
        out: Result<Reply, String>,
    ) -> Result<(), Exit> {
        let out = match out {
            Ok(reply) => reply,
            Err(panic) => {
                Counters::inc(&self.server.inner.counters.handler_panics);
                tracing::error!(panic = %panic, event = event.unwrap_or(""), "handler panicked");
                if kind == Kind::Connect {
                    return Err(Exit::close(CloseCode::INTERNAL_ERROR, "internal error"));
                }
                Err(HandlerError::new("internal error: handler panicked"))
            }
        };
        match (kind, out) {
            (Kind::Connect, Ok(_)) => {}
            (Kind::Connect, Err(e)) => {
                return Err(Exit::close(
                    CloseCode::REFUSED,
                    crate::socket::truncate_reason(e.message()),
                ));
            }
            (_, Ok(data)) => {
                if let Some(id) = ack_id {
                    let frame = ack_frame(namespace, event, id, data.as_deref());
                    self.reply(frame).await?;
                }
            }
            (_, Err(e)) => {
                let frame = error_frame(namespace, event, ack_id, e.message(), e.data());
                self.reply(frame).await?;
            }
        }
        Ok(())
    }
}
