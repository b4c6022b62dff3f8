//! The per-connection protocol state machine, without I/O.
//!
//! [`Machine`] holds what the protocol needs to know about one connection besides its socket:
//! the request running now and those waiting behind it, the invalid-message budget, the rate
//! limiter and when the client was last heard from. It is driven by the connection task:
//!
//! - **in**: data frames ([`Machine::on_frame`]), the completion of the running request
//!   ([`Machine::poll_running`]), the clock (`now` arguments, [`Machine::read_gate`],
//!   [`Machine::heartbeat_due`]);
//! - **out**: frames to write (queued on the connection's one [outbound queue](super::outbox) in
//!   the order the protocol requires), a request to run (the handler future it holds, polled
//!   through [`Machine::poll_running`]), or a close with a code (`Err(CloseRequest)`).
//!
//! It never touches the socket, so it is tested, and fuzzed, with frames in and frames out.
//!
//! Protocol rules kept here:
//! - requests (`event`, `join`, `leave`) run one at a time in arrival order; answers go out in
//!   arrival order too (a `pong` does not overtake the ack of an earlier request);
//! - every request with an `ackId` gets exactly one answer (`ack` or `error`), unless the
//!   connection closes first;
//! - a panic in user code (payload decoding, the handler's synchronous part or its future, a
//!   hook) answers the request with `internal error`; a connect hook that panics or overruns
//!   its deadline closes the connection with 1011;
//! - invalid messages count against a budget (close 1008 when exhausted); refusals for rate
//!   never do.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::frames::{INTERNAL_ERROR, ack_frame, error_frame, pong_frame};
use super::lifecycle::leave_hooks;
use super::{CloseRequest, ConnShared};
use crate::config::RateLimitPolicy;
use crate::handler::{HandlerError, Reply};
use crate::protocol::envelope::{DecodeError, decode, decode_text};
use crate::protocol::{MessageType, names};
use crate::stats::Counters;
use crate::sync::{BoxFuture, CatchUnwind, panic_message};
use crate::{CloseCode, DisconnectReason, JoinError, Server, Socket};

/// A wait longer than any test or connection lasts (a rate of almost zero).
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// What a step of the machine produced: nothing more to do, or close with this code.
pub(crate) type Step = Result<(), CloseRequest>;

/// Whether the connection task may read the next frame from its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadGate {
    /// Read.
    Open,
    /// The outbound queue is over its bound: write first (the client is not reading).
    Outbox,
    /// Out of rate-limit tokens (backpressure policy): the next token is due then.
    Rate(Instant),
}

/// A client request: borrowed from its frame while it is started at once, owned (`'static`)
/// while it waits for its turn in the queue.
struct Request<'a> {
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
enum Pending {
    Request(Request<'static>),
    Reply(Utf8Bytes),
}

/// What the running request is, to shape its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The connect hooks and the membership of `/`.
    Connect,
    Event,
    /// A `join` with a namespace connect hook, or a `leave` with a disconnect hook.
    Membership,
}

/// The request currently running.
struct Running {
    kind: Kind,
    namespace: Arc<str>,
    event: Option<Box<str>>,
    ack_id: Option<Box<str>>,
    fut: BoxFuture<Reply>,
}

/// What starting a request produced.
enum Started {
    /// Refused at once: this error, counted as an invalid message (abuse budget).
    Refused(Utf8Bytes),
    /// Finished at once: this reply (maybe none).
    Done(Option<Utf8Bytes>),
    /// Running: this future, of this kind, in this namespace.
    Running(Kind, Arc<str>, BoxFuture<Reply>),
}

/// A hook's outcome when it overran its deadline.
pub(crate) fn hook_deadline<F>(
    server: &Server,
    conn: crate::SocketId,
    what: &'static str,
    fut: F,
) -> impl Future<Output = Reply> + Send + 'static
where
    F: Future<Output = Reply> + Send + 'static,
{
    let timeout = server.inner.config.hook_timeout;
    let server = server.clone();
    async move {
        match tokio::time::timeout(timeout, fut).await {
            Ok(out) => out,
            Err(_) => {
                Counters::inc(&server.inner.counters.hook_timeouts);
                tracing::error!(conn = %conn, hook = what, ?timeout, "a hook overran its deadline");
                Err(HandlerError::internal(format!(
                    "the {what} hook overran its deadline ({timeout:?})"
                )))
            }
        }
    }
}

/// An echoable name: valid ones only, so that an error never reflects junk back.
fn echo(s: Option<&str>, valid: impl Fn(&str) -> bool) -> Option<&str> {
    s.filter(|s| valid(s))
}

/// The per-connection protocol state (see the module docs).
pub(crate) struct Machine {
    server: Server,
    conn: Arc<ConnShared>,
    running: Option<Running>,
    queue: VecDeque<Pending>,
    last_seen: Instant,
    /// Reading was paused by the server (backpressure): the client is not to blame for the
    /// silence, so the heartbeat restarts when reading resumes.
    paused: bool,
    invalid_count: u32,
    invalid_window_start: Instant,
    tokens: f64,
    tokens_at: Instant,
}

impl Machine {
    pub(crate) fn new(server: Server, conn: Arc<ConnShared>, now: Instant) -> Machine {
        let tokens = server.inner.config.rate_limit.map_or(0.0, |r| r.burst);
        Machine {
            server,
            conn,
            running: None,
            queue: VecDeque::new(),
            last_seen: now,
            paused: false,
            invalid_count: 0,
            invalid_window_start: now,
            tokens,
            tokens_at: now,
        }
    }

    /// The first step of every connection: the connect hooks, then membership of `/`. Without
    /// hooks this completes at once; otherwise it runs (with the hook deadline) before any
    /// request.
    pub(crate) fn connect(&mut self, cx: &mut Context<'_>) -> Step {
        let root_hook = self
            .server
            .lookup_namespace("/")
            .is_some_and(|ns| ns.on_connect.is_some());
        // A resumed session's other namespaces, restored after `/`: their connect hooks run
        // too (as for any connection that joins them).
        let restored = self.conn.pending_restore();
        let restore_hooks = restored.iter().any(|name| {
            &**name != "/"
                && self
                    .server
                    .lookup_namespace(name)
                    .is_some_and(|ns| ns.on_connect.is_some())
        });
        if self.server.inner.on_connect.is_none() && !root_hook && !restore_hooks {
            return match self.server.join(&self.conn, "/", None) {
                Ok(_) => {
                    for name in restored.iter().filter(|n| &***n != "/") {
                        let _ = self.server.join(&self.conn, name, None);
                    }
                    self.conn.drop_restore(None);
                    Ok(())
                }
                Err(e) => Err(CloseRequest::now(CloseCode::REFUSED, e.to_string())),
            };
        }
        let server = self.server.clone();
        let conn = self.conn.clone();
        let hooks = async move {
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
            for name in restored.iter().filter(|n| &***n != "/") {
                let Some(ns) = server.namespace_for_join(name) else {
                    continue;
                };
                if let Some(hook) = ns.on_connect.clone() {
                    let socket = Socket::new(server.clone(), conn.clone(), ns.name.clone());
                    if hook(socket).await.is_err() {
                        conn.drop_restore(Some(name));
                        server.release_namespace(&ns);
                        continue;
                    }
                }
                let _ = server.join(&conn, name, None);
            }
            conn.drop_restore(None);
            Ok(None)
        };
        let fut = Box::pin(hook_deadline(&self.server, self.conn.id, "connect", hooks));
        self.run(Kind::Connect, Arc::from("/"), None, None, fut, cx)
    }

    /// Whether a request is running.
    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Requests waiting behind the running one, and answers waiting for their turn.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Something arrived from the client (any frame, pongs included).
    pub(crate) fn on_activity(&mut self, now: Instant) {
        self.last_seen = now;
    }

    /// When the heartbeat runs out: nothing heard from the client since `read_timeout`.
    pub(crate) fn heartbeat_due(&self) -> Instant {
        self.last_seen + self.server.inner.config.read_timeout
    }

    /// Whether the task may read the next frame now (see [`ReadGate`]).
    pub(crate) fn read_gate(&mut self) -> ReadGate {
        let gate = if self.conn.outbox.is_over() {
            ReadGate::Outbox
        } else {
            match self.server.inner.config.rate_limit {
                Some(limit) if limit.policy == RateLimitPolicy::Backpressure => {
                    let now = Instant::now();
                    self.refill(now);
                    if self.tokens >= 1.0 {
                        ReadGate::Open
                    } else {
                        let wait = (1.0 - self.tokens) / limit.per_second;
                        ReadGate::Rate(now + Duration::try_from_secs_f64(wait).unwrap_or(FAR))
                    }
                }
                _ => ReadGate::Open,
            }
        };
        match gate {
            ReadGate::Open if self.paused => {
                self.paused = false;
                self.last_seen = self.last_seen.max(Instant::now());
            }
            ReadGate::Open => {}
            _ if !self.paused => {
                self.paused = true;
                Counters::inc(&self.server.inner.counters.backpressure_pauses);
            }
            _ => {}
        }
        gate
    }

    fn refill(&mut self, now: Instant) {
        if let Some(limit) = self.server.inner.config.rate_limit {
            let elapsed = now.saturating_duration_since(self.tokens_at).as_secs_f64();
            self.tokens_at = now;
            self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        }
    }

    /// Take a token for a request. Under the backpressure policy a request read without one
    /// (the task checks [`read_gate`](Machine::read_gate) first) goes into debt and is served;
    /// under the reject policy it is refused (false).
    fn take_token(&mut self, now: Instant) -> bool {
        let Some(limit) = self.server.inner.config.rate_limit else {
            return true;
        };
        self.refill(now);
        if self.tokens >= 1.0 || limit.policy == RateLimitPolicy::Backpressure {
            self.tokens -= 1.0;
            true
        } else {
            Counters::inc(&self.server.inner.counters.rate_limited);
            false
        }
    }

    /// Count an invalid message; close with 1008 when the budget is exhausted.
    fn invalid(&mut self, now: Instant) -> Step {
        Counters::inc(&self.server.inner.counters.protocol_errors);
        let cfg = &self.server.inner.config;
        if now.saturating_duration_since(self.invalid_window_start) > cfg.invalid_message_window {
            self.invalid_window_start = now;
            self.invalid_count = 0;
        }
        self.invalid_count += 1;
        if self.invalid_count > cfg.max_invalid_messages {
            return Err(CloseRequest::now(
                CloseCode::POLICY_VIOLATION,
                "too many invalid messages",
            ));
        }
        Ok(())
    }

    /// Send an answer in arrival order: now if nothing is running or waiting, else behind what
    /// is (when the queue is full, now).
    fn answer(&mut self, frame: Utf8Bytes) {
        let busy = self.running.is_some() || !self.queue.is_empty();
        if busy && self.queue.len() < self.server.inner.config.max_pending_requests {
            self.queue.push_back(Pending::Reply(frame));
        } else {
            self.conn.send_own(frame);
        }
    }

    /// Answer an invalid message with an error and count it.
    fn reject(
        &mut self,
        namespace: &str,
        event: Option<&str>,
        ack_id: Option<&str>,
        error: &str,
        now: Instant,
    ) -> Step {
        let frame = error_frame(namespace, event, ack_id, error, None);
        self.answer(frame);
        self.invalid(now)
    }

    /// Handle one data frame (`text` when it is a text frame, already checked as UTF-8).
    pub(crate) fn on_frame(
        &mut self,
        bytes: &[u8],
        text: Option<&str>,
        now: Instant,
        cx: &mut Context<'_>,
    ) -> Step {
        Counters::inc(&self.server.inner.counters.messages_in);
        let decoded = match text {
            Some(text) => decode_text(text),
            None => decode(bytes),
        };
        let mut msg = match decoded {
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
                let frame = error_frame(ns, ev, ack, &text, None);
                self.answer(frame);
                return self.invalid(now);
            }
        };
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
        // Only needed on the error paths: checked when used.
        let event_name = msg.event.as_deref();
        let echo_ev = || event_name.filter(|e| names::validate_room(e).is_ok());

        let Some(kind) = msg.kind else {
            return self.reject(echo_ns, echo_ev(), echo_ack, "unknown message type", now);
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
                let frame = pong_frame(ns);
                self.answer(frame);
                return Ok(());
            }
            MessageType::Ack => {
                let Some(id) = msg.ack_id.as_deref() else {
                    return self.reject(
                        echo_ns,
                        None,
                        None,
                        "invalid message: ack without ackId",
                        now,
                    );
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
            let text = format!("invalid namespace: namespace {e}");
            return self.reject("/", echo_ev(), echo_ack, &text, now);
        }
        if let Err(e) = ack_ok {
            let text = format!("invalid ackId: ackId {e}");
            return self.reject(echo_ns, echo_ev(), None, &text, now);
        }
        let is_event = kind == MessageType::Event;
        if is_event {
            let Some(event) = msg.event.as_deref() else {
                return self.reject(
                    echo_ns,
                    None,
                    echo_ack,
                    "invalid message: event without event name",
                    now,
                );
            };
            if let Err(e) = names::validate_event(event) {
                let text = format!("invalid event name: event {e}");
                return self.reject(echo_ns, echo_ev(), echo_ack, &text, now);
            }
        } else if let Some(room) = msg.room.as_deref() {
            if let Err(e) = names::validate_room(room) {
                let text = format!("invalid room name: room {e}");
                return self.reject(echo_ns, None, echo_ack, &text, now);
            }
        }
        if !self.take_token(now) {
            // Refused for rate (the reject policy): answered, never counted as invalid.
            let frame = error_frame(echo_ns, echo_ev(), echo_ack, "rate limit exceeded", None);
            self.answer(frame);
            return Ok(());
        }
        let request = Request {
            kind,
            namespace: msg.namespace,
            event: msg.event.filter(|_| is_event),
            room: msg.room.filter(|_| !is_event),
            ack_id: msg.ack_id,
            data: msg.data.filter(|_| is_event).map(Cow::Borrowed),
        };
        self.submit(request, now, cx)
    }

    /// Run a request now if nothing is running, else queue it (bounded).
    fn submit(&mut self, request: Request<'_>, now: Instant, cx: &mut Context<'_>) -> Step {
        if self.running.is_none() && self.queue.is_empty() {
            return self.start(request, now, cx);
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
            self.conn.send_own(frame);
            return self.invalid(now);
        }
        self.queue.push_back(Pending::Request(request.into_owned()));
        Ok(())
    }

    /// Start a request: answer at once or leave it running.
    fn start(&mut self, request: Request<'_>, now: Instant, cx: &mut Context<'_>) -> Step {
        match self.begin(&request) {
            Started::Done(Some(frame)) => {
                self.conn.send_own(frame);
                Ok(())
            }
            Started::Done(None) => Ok(()),
            Started::Refused(frame) => {
                self.conn.send_own(frame);
                self.invalid(now)
            }
            Started::Running(kind, namespace, fut) => {
                let Request { event, ack_id, .. } = request;
                self.run(kind, namespace, event, ack_id, fut, cx)
            }
        }
    }

    /// Make `fut` the running request and poll it once at once (with the task's waker): most
    /// handlers complete without waiting, and their answer then joins the current batch of
    /// writes. The event and ack id are only copied out of the frame when it keeps running.
    fn run(
        &mut self,
        kind: Kind,
        namespace: Arc<str>,
        event: Option<Cow<'_, str>>,
        ack_id: Option<Cow<'_, str>>,
        mut fut: BoxFuture<Reply>,
        cx: &mut Context<'_>,
    ) -> Step {
        match Pin::new(&mut CatchUnwind::new(&mut fut)).poll(cx) {
            Poll::Ready(out) => {
                drop(fut);
                self.answer_finished(kind, &namespace, event.as_deref(), ack_id.as_deref(), out)
            }
            Poll::Pending => {
                self.running = Some(Running {
                    kind,
                    namespace,
                    event: event.map(Into::into),
                    ack_id: ack_id.map(Into::into),
                    fut,
                });
                Ok(())
            }
        }
    }

    /// Drive the running request. When it finishes (or panics), answer it and start the
    /// requests queued behind it until one keeps running. Pending while nothing runs.
    pub(crate) fn poll_running(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        let Some(running) = &mut self.running else {
            return Poll::Pending;
        };
        let out = match Pin::new(&mut CatchUnwind::new(&mut running.fut)).poll(cx) {
            Poll::Ready(out) => out,
            Poll::Pending => return Poll::Pending,
        };
        let Some(Running {
            kind,
            namespace,
            event,
            ack_id,
            fut,
        }) = self.running.take()
        else {
            return Poll::Pending;
        };
        drop(fut);
        let now = Instant::now();
        let step = self
            .answer_finished(kind, &namespace, event.as_deref(), ack_id.as_deref(), out)
            .and_then(|()| self.start_queued(now, cx));
        Poll::Ready(step)
    }

    /// Start queued requests until one keeps running.
    fn start_queued(&mut self, now: Instant, cx: &mut Context<'_>) -> Step {
        while self.running.is_none() {
            match self.queue.pop_front() {
                Some(Pending::Request(request)) => self.start(request, now, cx)?,
                Some(Pending::Reply(frame)) => self.conn.send_own(frame),
                None => break,
            }
        }
        if self.queue.is_empty() && self.queue.capacity() > 16 {
            self.queue = VecDeque::new();
        }
        Ok(())
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
            let frame = error_frame(&r.namespace, Some(event), ack, "namespace not joined", None);
            return Started::Refused(frame);
        };
        let Some(entry) = ns.handlers.get(event) else {
            let frame = error_frame(&r.namespace, Some(event), ack, "unknown event", None);
            return Started::Refused(frame);
        };
        let socket = Socket::new(self.server.clone(), self.conn.clone(), ns.name.clone());
        // Decoding the payload and the handler's synchronous part run here: user code, so a
        // panic is contained like one in the handler's future.
        let data = r.data.as_deref();
        match catch_unwind(AssertUnwindSafe(|| entry.handler.call(socket, data))) {
            Ok(fut) => Started::Running(Kind::Event, ns.name.clone(), fut),
            Err(payload) => {
                let panic = panic_message(payload.as_ref());
                self.panicked(Kind::Event, Some(event), &panic);
                let frame = error_frame(&r.namespace, Some(event), ack, INTERNAL_ERROR, None);
                Started::Done(Some(frame))
            }
        }
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
        let join = async move {
            let socket = Socket::new(server.clone(), conn.clone(), ns_name.clone());
            if let Err(reason) = hook(socket).await {
                return Err(HandlerError::new(JoinError::Refused(reason).to_string()));
            }
            server
                .join(&conn, &ns_name, room.as_deref())
                .map_err(|e| HandlerError::new(e.to_string()))?;
            Ok(None)
        };
        let fut = Box::pin(hook_deadline(
            &self.server,
            self.conn.id,
            "namespace connect",
            join,
        ));
        Started::Running(Kind::Membership, ns.name.clone(), fut)
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
            // The hook has its own deadline and panic containment.
            leave_hooks(&server, &conn, m, DisconnectReason::LeftNamespace).await;
            Ok(None)
        };
        Started::Running(Kind::Membership, Arc::from(&*r.namespace), Box::pin(fut))
    }

    /// Count and log a contained panic (once).
    fn panicked(&self, kind: Kind, event: Option<&str>, panic: &str) {
        Counters::inc(&self.server.inner.counters.handler_panics);
        let conn = self.conn.id;
        match kind {
            Kind::Connect => tracing::error!(%conn, %panic, "a connect hook panicked"),
            Kind::Membership => tracing::error!(%conn, %panic, "a namespace hook panicked"),
            Kind::Event => {
                let event = event.unwrap_or("");
                tracing::error!(%conn, %panic, event, "a handler panicked");
            }
        }
    }

    /// Send the answer of a finished request.
    fn answer_finished(
        &mut self,
        kind: Kind,
        namespace: &str,
        event: Option<&str>,
        ack_id: Option<&str>,
        out: Result<Reply, String>,
    ) -> Step {
        let out = match out {
            Ok(reply) => reply,
            Err(panic) => {
                self.panicked(kind, event, &panic);
                if kind == Kind::Connect {
                    return Err(CloseRequest::now(CloseCode::INTERNAL_ERROR, INTERNAL_ERROR));
                }
                Err(HandlerError::internal("panicked"))
            }
        };
        match (kind, out) {
            (Kind::Connect, Ok(_)) => {}
            (Kind::Connect, Err(e)) if e.is_internal() => {
                return Err(CloseRequest::now(CloseCode::INTERNAL_ERROR, INTERNAL_ERROR));
            }
            (Kind::Connect, Err(e)) => {
                return Err(CloseRequest::now(
                    CloseCode::REFUSED,
                    crate::socket::truncate_reason(e.message()),
                ));
            }
            (_, Ok(data)) => {
                if let Some(id) = ack_id {
                    self.conn
                        .send_own(ack_frame(namespace, event, id, data.as_deref()));
                }
            }
            (_, Err(e)) => {
                let frame = error_frame(namespace, event, ack_id, e.message(), e.data());
                self.conn.send_own(frame);
            }
        }
        Ok(())
    }

    /// The connection ends: the running request is cancelled (dropped at its current `.await`,
    /// as axum drops a handler whose client went away) and the queue is dropped.
    pub(crate) fn stop(&mut self) {
        self.running = None;
        self.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;
    use std::task::Waker;

    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::{Message, http};

    use super::*;
    use crate::{Json, RateLimitPolicy, ServerBuilder};

    /// Pending once (waking itself), then ready: a handler that cannot answer at once.
    struct YieldOnce(bool);
    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn builder() -> ServerBuilder {
        Server::builder()
            .max_invalid_messages(3, Duration::from_secs(60))
            .max_pending_requests(2)
            .on("echo", |_s: Socket, d: Value| async move { Json(d) })
            .on("slow", |_s: Socket, d: Value| async move {
                YieldOnce(false).await;
                Json(d)
            })
            .on(
                "sync_boom",
                |_s: Socket, _d: Value| -> std::future::Ready<()> { panic!("boom") },
            )
    }

    struct Harness {
        machine: Machine,
        conn: Arc<ConnShared>,
        server: Server,
        // Keeps the connection slot counted while the machine runs, as the task's guard does.
        _slot: crate::server::Slot,
        now: Instant,
    }

    impl Harness {
        fn new(b: ServerBuilder) -> Harness {
            let server = b.build().unwrap();
            let slot = server.reserve_slot().unwrap();
            let (parts, ()) = http::Request::new(()).into_parts();
            let conn = ConnShared::new(server.next_id(), server.config(), parts, None);
            server.register_connection(&conn);
            let now = Instant::now();
            let mut machine = Machine::new(server.clone(), conn.clone(), now);
            let mut cx = Context::from_waker(Waker::noop());
            machine.connect(&mut cx).unwrap();
            Harness {
                machine,
                conn,
                server,
                _slot: slot,
                now,
            }
        }

        fn frame(&mut self, v: Value) -> Step {
            let text = v.to_string();
            let mut cx = Context::from_waker(Waker::noop());
            self.machine
                .on_frame(text.as_bytes(), Some(&text), self.now, &mut cx)
        }

        /// Run the running request (and those behind it) to the end.
        fn settle(&mut self) -> Step {
            let mut cx = Context::from_waker(Waker::noop());
            while self.machine.is_running() {
                if let Poll::Ready(step) = self.machine.poll_running(&mut cx) {
                    step?;
                }
            }
            Ok(())
        }

        /// Everything queued for the socket, decoded.
        fn out(&self) -> Vec<Value> {
            std::iter::from_fn(|| self.conn.outbox.pop())
                .map(|m| match m {
                    Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
                    other => panic!("unexpected frame {other:?}"),
                })
                .collect()
        }
    }

    fn ev(event: &str, data: Value, ack: &str) -> Value {
        json!({"type": "event", "event": event, "data": data, "ackId": ack})
    }

    #[tokio::test]
    async fn answers_at_once_and_in_arrival_order() {
        let mut h = Harness::new(builder());
        h.frame(ev("echo", json!(1), "a")).unwrap();
        h.frame(ev("slow", json!(2), "b")).unwrap();
        assert!(h.machine.is_running());
        // Behind the running request: a request and a ping, answered in arrival order.
        h.frame(ev("echo", json!(3), "c")).unwrap();
        h.frame(json!({"type": "ping", "namespace": "/"})).unwrap();
        assert_eq!(h.machine.queued(), 2);
        assert_eq!(
            h.out(),
            [json!({"type": "ack", "namespace": "/", "event": "echo", "data": 1, "ackId": "a"})]
        );
        h.settle().unwrap();
        assert_eq!(
            h.out(),
            [
                json!({"type": "ack", "namespace": "/", "event": "slow", "data": 2, "ackId": "b"}),
                json!({"type": "ack", "namespace": "/", "event": "echo", "data": 3, "ackId": "c"}),
                json!({"type": "pong", "namespace": "/"}),
            ]
        );
        assert_eq!(h.machine.queued(), 0);
    }

    #[tokio::test]
    async fn a_panic_in_the_synchronous_part_answers_internal_error() {
        let mut h = Harness::new(builder());
        h.frame(ev("sync_boom", json!(1), "p")).unwrap();
        assert_eq!(
            h.out(),
            [
                json!({"type": "error", "namespace": "/", "event": "sync_boom", "ackId": "p", "error": "internal error"})
            ]
        );
        assert_eq!(h.server.stats().handler_panics, 1);
        assert_eq!(h.server.stats().protocol_errors, 0);
    }

    #[tokio::test]
    async fn invalid_messages_spend_the_budget_then_close_with_1008() {
        let mut h = Harness::new(builder());
        for i in 0..3 {
            h.frame(json!({"type": "nope", "ackId": i.to_string()}))
                .unwrap();
        }
        let close = h.frame(ev("missing", json!(1), "x")).unwrap_err();
        assert_eq!(close.code, CloseCode::POLICY_VIOLATION);
        let out = h.out();
        assert_eq!(out.len(), 4, "every invalid message was answered first");
        assert_eq!(out[3]["error"], "unknown event");
    }

    #[tokio::test]
    async fn a_full_request_queue_refuses_at_once() {
        let mut h = Harness::new(builder());
        h.frame(ev("slow", json!(0), "0")).unwrap();
        h.frame(ev("echo", json!(1), "1")).unwrap();
        h.frame(ev("echo", json!(2), "2")).unwrap();
        h.frame(ev("echo", json!(3), "3")).unwrap();
        assert_eq!(
            h.out(),
            [
                json!({"type": "error", "namespace": "/", "event": "echo", "ackId": "3", "error": "too many pending requests"})
            ]
        );
        h.settle().unwrap();
        let ids: Vec<Value> = h.out().into_iter().map(|v| v["ackId"].clone()).collect();
        assert_eq!(ids, [json!("0"), json!("1"), json!("2")]);
    }

    #[tokio::test]
    async fn rate_limit_reject_answers_and_is_not_invalid() {
        let b = builder()
            .rate_limit(0.001, 1.0)
            .rate_limit_policy(RateLimitPolicy::Reject);
        let mut h = Harness::new(b);
        assert_eq!(h.machine.read_gate(), ReadGate::Open);
        for i in 0..5 {
            h.frame(ev("echo", json!(i), &i.to_string())).unwrap();
        }
        let out = h.out();
        assert_eq!(out[0]["type"], "ack");
        assert!(out[1..].iter().all(|v| v["error"] == "rate limit exceeded"));
        let stats = h.server.stats();
        assert_eq!((stats.rate_limited, stats.protocol_errors), (4, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_backpressure_closes_the_read_gate_until_a_token_is_due() {
        let mut h = Harness::new(builder().rate_limit(10.0, 2.0));
        h.frame(ev("echo", json!(1), "1")).unwrap();
        assert_eq!(h.machine.read_gate(), ReadGate::Open);
        h.frame(ev("echo", json!(2), "2")).unwrap();
        let ReadGate::Rate(at) = h.machine.read_gate() else {
            panic!("the gate should close");
        };
        assert_eq!(at - Instant::now(), Duration::from_millis(100));
        // Nothing was refused, and a request read anyway (debt) is still served.
        h.frame(ev("echo", json!(3), "3")).unwrap();
        assert_eq!(h.out().len(), 3);
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(h.machine.read_gate(), ReadGate::Open);
        assert_eq!(h.server.stats().rate_limited, 0);
        assert_eq!(h.server.stats().backpressure_pauses, 1);
    }

    #[tokio::test]
    async fn a_full_outbox_closes_the_read_gate_and_answers_are_never_dropped() {
        let b = builder().max_queued(2, 1 << 20);
        let mut h = Harness::new(b);
        h.frame(ev("echo", json!(1), "1")).unwrap();
        h.frame(ev("echo", json!(2), "2")).unwrap();
        assert_eq!(h.machine.read_gate(), ReadGate::Outbox);
        // Read anyway (one batch): still answered.
        h.frame(ev("echo", json!(3), "3")).unwrap();
        // Emits from elsewhere are refused by the policy instead.
        let frame = Utf8Bytes::from_static("{}");
        let cfg = h.server.config().clone();
        assert!(h.conn.send(frame, &cfg, &h.server.inner.counters).is_err());
        assert_eq!(h.out().len(), 3);
        assert_eq!(h.machine.read_gate(), ReadGate::Open);
    }

    #[tokio::test]
    async fn client_acks_resolve_and_errors_reject_server_requests() {
        let mut h = Harness::new(builder());
        let (id, mut rx) = h.conn.register_ack(8).unwrap();
        let (id2, mut rx2) = h.conn.register_ack(8).unwrap();
        h.frame(json!({"type": "ack", "ackId": id.to_string(), "data": 5}))
            .unwrap();
        h.frame(json!({"type": "error", "ackId": id2.to_string(), "error": "no"}))
            .unwrap();
        h.frame(json!({"type": "ack", "ackId": "999"})).unwrap();
        assert_eq!(rx.try_recv().unwrap().unwrap().unwrap().get(), "5");
        assert_eq!(rx2.try_recv().unwrap().unwrap_err().message(), "no");
        assert_eq!(h.server.stats().unknown_acks, 1);
        assert!(h.out().is_empty(), "client answers are never answered");
    }

    #[tokio::test]
    async fn stop_cancels_the_running_request() {
        let dropped = Arc::new(Mutex::new(false));
        struct OnDrop(Arc<Mutex<bool>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                *self.0.lock().unwrap() = true;
            }
        }
        let d = dropped.clone();
        let b = builder().on("forever", move |_s: Socket, _d: Value| {
            let guard = OnDrop(d.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }
        });
        let mut h = Harness::new(b);
        h.frame(ev("forever", json!(1), "f")).unwrap();
        assert!(h.machine.is_running());
        h.machine.stop();
        assert!(*dropped.lock().unwrap());
        assert!(!h.machine.is_running());
    }
}
