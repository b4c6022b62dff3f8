//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer) and of their replay in
//! `cargo test` (`tests/tests/fuzz_corpus.rs`). **Not public API**: compiled only with the
//! non-default `__fuzzing` feature (which `fuzz/Cargo.toml` and the `wsu-tests` dev-dependency
//! enable), reachable as `wsu::__private::fuzz`, hidden from the docs, free to change in any
//! release. A default build of wsu contains none of it.
//!
//! Each function takes arbitrary bytes and panics when an invariant does not hold; libFuzzer
//! reports the panic as a crash and saves the input. [`TARGETS`] names them all, so that the
//! replay test covers every target of `fuzz/Cargo.toml`.
//!
//! - [`decode`]: the envelope decoder as a pure function.
//! - [`handshake`]: the HTTP request-head reader, the upgrade validation and the Origin
//!   normalisation.
//! - [`registry`]: a stateful driver of the real registry (namespaces, rooms, members), the
//!   outbound queues and the server→client ack tables, through detached connections: the
//!   `ConnShared` a connection task would own, without a socket, driven synchronously and
//!   checked against a model after every step.
//! - [`dispatcher`]: the per-connection protocol state machine, fed arbitrary frame sequences
//!   (see `conn/fuzz.rs` for its invariants).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub use crate::conn::fuzz::dispatcher;

use futures_util::FutureExt;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::http::{self, header};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::conn::{ConnShared, after_leave};
use crate::http::handshake::{
    HeadError, HeadLimits, error_response, is_upgrade_request, read_head, validate_upgrade,
};
use crate::http::origin::normalize_origin;
use crate::protocol::envelope::{self, DecodeError, Incoming, Outgoing};
use crate::protocol::names;
use crate::server::{Slot, broadcast_encode_event};
use crate::{
    AckError, CloseCode, DisconnectReason, HandlerError, JoinError, MessageType, OriginPolicy,
    SendError, Server, SlowConsumerPolicy, Socket, SocketId,
};

/// A fuzz target's entry point: arbitrary bytes in, a panic when an invariant does not hold.
pub type Target = fn(&[u8]);

/// Every fuzz target by name: the `[[bin]]` names of `fuzz/Cargo.toml`, each a one-line
/// `fuzz_target!` calling the function of the same name here. The corpus replay test runs each
/// target on `fuzz/corpus/<name>/` and `fuzz/artifacts/<name>/`, and fails when this list and
/// `fuzz/Cargo.toml` disagree: a new target needs an entry here.
pub const TARGETS: &[(&str, Target)] = &[
    ("decode", decode),
    ("handshake", handshake),
    ("registry", registry),
    ("dispatcher", dispatcher),
];

// ---- decode -----------------------------------------------------------------------------------

/// Longest decode error message, in chars.
const MAX_DECODE_ERROR_CHARS: usize = 200;

/// The prefixes every decode error message starts with (one per kind of error).
const DECODE_ERROR_KINDS: [&str; 5] = [
    "empty message",
    "malformed json: ",
    "message must be a json object",
    "duplicate field `",
    "field `",
];

/// Fuzzes `protocol::envelope::decode` on `data`.
///
/// Checks: no panic; the same result twice; an error is one of the documented kinds with a
/// message of at most 200 chars, and echoes only valid strings; a decoded message re-encoded with
/// the server's encoder (`Outgoing`) decodes again to the same fields (every field `Outgoing`
/// can carry: `type` when it was a known type, `namespace`, `room`, `event`, `data` byte for
/// byte, `ackId` and `error`); the fast path, when it answers, answers what the careful decoder
/// does, and a text frame decodes as its bytes do.
///
/// # Panics
/// When one of these checks fails.
pub fn decode(data: &[u8]) {
    let first = envelope::decode(data);
    assert_eq!(first, envelope::decode(data), "decode is not deterministic");
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            envelope::decode_text(text),
            first,
            "text frames decode differently"
        );
    }
    if let Some(fast) = envelope::decode_fast(data) {
        assert_eq!(
            Ok(fast),
            envelope::decode_careful(data),
            "the fast path disagrees with the careful decoder"
        );
    }
    match first {
        Err(e) => check_decode_error(&e),
        Ok(msg) => check_round_trip(&msg),
    }
}

fn check_decode_error(e: &DecodeError) {
    let chars = e.message.chars().count();
    assert!(
        (1..=MAX_DECODE_ERROR_CHARS).contains(&chars),
        "error message of {chars} chars: {:?}",
        e.message
    );
    assert!(
        DECODE_ERROR_KINDS.iter().any(|k| e.message.starts_with(k)),
        "error of no known kind: {:?}",
        e.message
    );
    // Syntax errors are found before any field is interpreted: nothing to echo. (A string that
    // does not decode inside a known field, "malformed json: field `…`: …", is found while
    // interpreting the fields, and may echo the others.)
    let syntax = e.message == "empty message"
        || (e.message.starts_with("malformed json: ")
            && !e.message.starts_with("malformed json: field `"));
    if syntax {
        let nothing = e.namespace.is_none() && e.event.is_none() && e.ack_id.is_none();
        assert!(nothing, "a syntax error echoes fields: {e:?}");
    }
    assert_ne!(e.namespace.as_deref(), Some(""), "`\"\"` is echoed as `/`");
}

fn check_round_trip(msg: &Incoming<'_>) {
    let out = Outgoing::<RawValue> {
        kind: msg.kind.unwrap_or(MessageType::Event),
        namespace: Some(&msg.namespace),
        room: msg.room.as_deref(),
        event: msg.event.as_deref(),
        data: msg.data,
        ack_id: msg.ack_id.as_deref(),
        error: msg.error.as_deref(),
    };
    let text = match out.encode() {
        Ok(text) => text,
        Err(e) => panic!("an envelope of raw parts does not encode: {e}"),
    };
    let again = match envelope::decode(text.as_bytes()) {
        Ok(again) => again,
        Err(e) => panic!("the re-encoded message does not decode: {e:?}\n{text}"),
    };
    if msg.kind.is_some() {
        assert_eq!(again.kind, msg.kind, "type changed: {text}");
    }
    assert_eq!(again.namespace, msg.namespace, "namespace changed: {text}");
    assert_eq!(again.room, msg.room, "room changed: {text}");
    assert_eq!(again.event, msg.event, "event changed: {text}");
    assert_eq!(
        again.data.map(RawValue::get),
        msg.data.map(RawValue::get),
        "data changed: {text}"
    );
    assert_eq!(again.ack_id, msg.ack_id, "ackId changed: {text}");
    assert_eq!(again.error, msg.error, "error changed: {text}");
}

// ---- handshake --------------------------------------------------------------------------------

/// Fuzzes the upgrade path on `data` as the bytes a client sent: `read_head` through a `&[u8]`
/// reader (with the default limits: 16 KiB, 64 headers), `validate_upgrade`, the Origin
/// policies, and the Origin normalisation (on every `Origin` header, and on `data` itself when
/// it is short UTF-8).
///
/// Checks: no panic; `read_head` never waits on a reader that is always ready; an I/O error
/// only when the input ends before a complete head shorter than the limit; a head within the
/// limits, its leftover the bytes that followed it, and the same head when the bytes arrive in
/// chunks of 1 to 7 bytes; a refusal is 400, 405 or 426 with a short
/// reason, and its response a complete HTTP response; an accepted upgrade gives a 28-char
/// `Sec-WebSocket-Accept`; `OriginPolicy::any` admits everything; origin normalisation is
/// idempotent, lower-case, and agrees with `OriginPolicy::allow_list`.
///
/// # Panics
/// When one of these checks fails.
pub fn handshake(data: &[u8]) {
    let limits = HeadLimits::default();
    let mut reader: &[u8] = data;
    let Some(result) = read_head(&mut reader, limits).now_or_never() else {
        panic!("read_head waited on a reader that is always ready");
    };
    let consumed = data.len() - reader.len();
    assert!(consumed <= limits.max_head_bytes, "read {consumed} bytes");
    match result {
        Err(HeadError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
            assert_eq!(consumed, data.len(), "an early i/o error");
            assert!(data.len() < limits.max_head_bytes, "EOF past the limit");
        }
        Err(HeadError::TooLarge) => {}
        Err(HeadError::Malformed(reason)) => {
            assert!(!reason.is_empty() && reason.len() <= 64, "{reason:?}");
        }
        Ok((parts, leftover)) => {
            assert!(leftover.len() <= consumed, "leftover longer than the input");
            assert_eq!(
                &data[consumed - leftover.len()..consumed],
                &leftover[..],
                "the leftover is not what followed the head"
            );
            assert!(parts.headers.len() <= limits.max_headers);
            check_chunked(data, consumed - leftover.len(), &parts);
            check_upgrade(&parts);
        }
    }
    if data.len() <= 1024 {
        if let Ok(s) = std::str::from_utf8(data) {
            check_origin(s);
        }
    }
}

/// A reader handing out `data` in chunks of 1 to 7 bytes (always ready).
struct Trickle<'a> {
    data: &'a [u8],
    next: usize,
}

impl tokio::io::AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.next.min(self.data.len()).min(buf.remaining());
        let (chunk, rest) = self.data.split_at(n);
        buf.put_slice(chunk);
        self.data = rest;
        self.next = self.next % 7 + 1;
        std::task::Poll::Ready(Ok(()))
    }
}

/// The head must not depend on how the bytes arrive: read in small chunks, the same head (same
/// length, method, target, version and headers) comes out.
fn check_chunked(data: &[u8], head_len: usize, parts: &http::request::Parts) {
    let mut reader = Trickle {
        data,
        next: data.len() % 7 + 1,
    };
    let Some(result) = read_head(&mut reader, HeadLimits::default()).now_or_never() else {
        panic!("read_head waited on a reader that is always ready");
    };
    let consumed = data.len() - reader.data.len();
    match result {
        Ok((chunked, leftover)) => {
            assert_eq!(consumed - leftover.len(), head_len, "head length");
            assert_eq!(chunked.method, parts.method);
            assert_eq!(chunked.uri, parts.uri);
            assert_eq!(chunked.version, parts.version);
            assert_eq!(chunked.headers, parts.headers);
        }
        Err(e) => panic!("read in chunks, a valid head gives {e}"),
    }
}

fn check_upgrade(parts: &http::request::Parts) {
    match validate_upgrade(parts) {
        Ok(accept) => {
            assert_eq!(accept.len(), 28, "accept key {accept:?}");
            assert!(is_upgrade_request(parts));
        }
        Err(rejection) => {
            let status = rejection.status.as_u16();
            assert!(matches!(status, 400 | 405 | 426), "status {status}");
            let response = error_response(rejection.status, rejection.reason);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut parsed = httparse::Response::new(&mut headers);
            let head = parsed.parse(&response);
            assert!(
                matches!(head, Ok(httparse::Status::Complete(_))),
                "incomplete response"
            );
            assert_eq!(parsed.code, Some(status));
        }
    }
    let policies = [
        OriginPolicy::same_origin(),
        OriginPolicy::same_origin().allow_missing(false),
        OriginPolicy::allow_list(["https://app.example", "http://[::1]:8080"])
            .unwrap_or_else(|e| panic!("{e}")),
    ];
    for policy in &policies {
        let _ = policy.allows_request(parts);
    }
    assert!(OriginPolicy::any().allows_request(parts));
    for value in parts.headers.get_all(header::ORIGIN) {
        if let Ok(origin) = value.to_str() {
            check_origin(origin);
        }
    }
}

fn check_origin(origin: &str) {
    match normalize_origin(origin) {
        Some(normalised) => {
            assert_eq!(
                normalize_origin(&normalised).as_deref(),
                Some(normalised.as_str()),
                "normalisation of {origin:?} is not idempotent"
            );
            assert!(
                !normalised.bytes().any(|b| b.is_ascii_uppercase()),
                "{normalised:?} is not lower-case"
            );
            let policy = match OriginPolicy::allow_list([origin]) {
                Ok(policy) => policy,
                Err(e) => panic!("{origin:?} normalises but is refused as an entry: {e}"),
            };
            assert!(policy.allows(Some(origin), None));
            assert!(policy.allows(Some(&normalised), None));
        }
        None => {
            assert!(OriginPolicy::allow_list([origin]).is_err());
        }
    }
}

// ---- registry ---------------------------------------------------------------------------------

/// Namespaces the driver uses: declared (`/`, `/a`), dynamic (allowed by the filter: `/dyn…`),
/// unknown, and an invalid name.
const NAMESPACES: [&str; 7] = ["/", "/a", "/dyn1", "/dyn2", "/dyn3", "/nope", "bad"];
/// Rooms the driver uses; the last two are invalid names.
const ROOMS: [&str; 6] = ["r0", "r1", "r2", "a::b", "", "x\0y"];
const MAX_CONNECTIONS: usize = 5;
const MAX_NAMESPACES: usize = 3;
const MAX_ROOMS: usize = 3;
const MAX_ACKS: usize = 3;
const MAX_QUEUED_MESSAGES: usize = 4;
const MAX_QUEUED_BYTES: usize = 600;
/// Most operations run for one input.
const MAX_STEPS: usize = 4096;
/// Closed connections kept to try operations on.
const KEEP_CLOSED: usize = 4;

fn is_declared(ns: &str) -> bool {
    matches!(ns, "/" | "/a")
}

fn is_dynamic(ns: &str) -> bool {
    ns.starts_with("/dyn")
}

/// Fuzzes the registry with the operations encoded in `data`.
///
/// The first byte picks the slow-consumer policy; then each operation is one byte (the
/// operation) and its arguments (one byte each, 0 once the input is exhausted): connect,
/// disconnect, join a namespace, join a room, leave a room, leave a namespace, emit to one
/// connection, broadcast to a namespace or rooms (optionally except one connection), register a
/// server→client ack (the first half of `emit_with_ack`), answer one (with an `ack` or an
/// `error`, under a valid, foreign, non-canonical or unknown id), let one time out, abandon its
/// waiter, drain an outbound queue (what the connection task does), and operations on closed
/// connections. Connections are the `ConnShared` the connection task would own, created and
/// torn down with the task's own calls (`reserve_slot`, `register_connection`, the join of `/`;
/// `mark_closed`, `unregister_connection`, `after_leave`, `release_slot`); a close request
/// (slow consumer) is handled as the task would, by closing the connection.
///
/// After every step, the server is compared with a model and checked: every room member is a
/// member of its namespace and an open connection; memberships, room lists, pending acks and
/// queued bytes per connection are the model's; the `connections`, `rooms`, `pending_acks`,
/// `queued_bytes` and `dynamic_namespaces` gauges and the `messages_dropped` counter equal the
/// model's; a dynamic namespace exists exactly while it has members; after a disconnect, no
/// member is left, every pending ack fails with `Closed`, and joins, emits and acks on the
/// closed connection fail with `Closed`.
///
/// # Panics
/// When one of these checks fails.
pub fn registry(data: &[u8]) {
    let mut input = Input { data };
    let policy = match input.byte() {
        Some(b) if b & 1 == 1 => SlowConsumerPolicy::DropMessage,
        _ => SlowConsumerPolicy::Disconnect,
    };
    let mut driver = Driver::new(policy);
    driver.check();
    let mut steps = 0;
    while let Some(op) = input.byte() {
        steps += 1;
        if steps > MAX_STEPS {
            break;
        }
        driver.step(op, &mut input);
        driver.handle_close_requests();
        driver.check();
    }
    driver.disconnect_all();
    driver.check();
}

/// The fuzz input, read one byte at a time.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// An argument byte: 0 once the input is exhausted.
    fn arg(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.arg()) % items.len()]
    }
}

/// A pending server→client ack: its waiter, or `None` once the waiter was abandoned.
type Waiter = Option<oneshot::Receiver<Result<Option<Box<RawValue>>, HandlerError>>>;

/// One open connection and what the model expects of it.
struct Open {
    conn: Arc<ConnShared>,
    /// The connection's slot, released when the connection is torn down.
    slot: Slot,
    /// Namespace → rooms.
    memberships: BTreeMap<&'static str, BTreeSet<&'static str>>,
    /// Frames expected in the outbound queue, in order.
    queue: VecDeque<Utf8Bytes>,
    acks: BTreeMap<u64, Waiter>,
    last_ack: u64,
    /// A close request (slow consumer) is expected.
    close_expected: bool,
}

impl Open {
    fn queued_bytes(&self) -> usize {
        self.queue.iter().map(|f| f.len()).sum()
    }

    fn room_count(&self) -> usize {
        self.memberships.values().map(BTreeSet::len).sum()
    }

    fn socket(&self, server: &Server, ns: &str) -> Socket {
        Socket::new(server.clone(), self.conn.clone(), Arc::from(ns))
    }
}

struct Driver {
    server: Server,
    policy: SlowConsumerPolicy,
    open: Vec<Open>,
    closed: VecDeque<Arc<ConnShared>>,
    dropped: u64,
}

impl Driver {
    fn new(policy: SlowConsumerPolicy) -> Self {
        let server = Server::builder()
            .collect_registered(false)
            .namespace("/a", |ns| ns)
            .allow_namespaces(is_dynamic)
            .max_connections(MAX_CONNECTIONS)
            .max_namespaces_per_connection(MAX_NAMESPACES)
            .max_rooms_per_connection(MAX_ROOMS)
            .max_pending_acks(MAX_ACKS)
            .max_queued(MAX_QUEUED_MESSAGES, MAX_QUEUED_BYTES)
            .slow_consumer(policy)
            .build()
            .unwrap_or_else(|e| panic!("the driver's server does not build: {e}"));
        Driver {
            server,
            policy,
            open: Vec::new(),
            closed: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Index of an open connection chosen by the next byte.
    fn pick_open(&self, input: &mut Input<'_>) -> Option<usize> {
        let b = usize::from(input.arg());
        (!self.open.is_empty()).then(|| b % self.open.len())
    }

    fn step(&mut self, op: u8, input: &mut Input<'_>) {
        match op % 14 {
            0 => self.connect(),
            1 => {
                if let Some(i) = self.pick_open(input) {
                    self.disconnect(i);
                }
            }
            2 => self.join_namespace(input),
            3 => self.join_room(input),
            4 => self.leave_room(input),
            5 => self.leave_namespace(input),
            6 => self.emit(input),
            7 => self.broadcast(input),
            8 => self.register_ack(input),
            9 => self.resolve_ack(input),
            10 => self.cancel_ack(input),
            11 => self.abandon_ack(input),
            12 => self.drain(input),
            _ => self.use_closed(input),
        }
    }

    // ---- connections ----

    fn connect(&mut self) {
        let Some(slot) = self.server.reserve_slot() else {
            assert_eq!(
                self.open.len(),
                MAX_CONNECTIONS,
                "a slot was refused below the cap"
            );
            return;
        };
        assert!(self.open.len() < MAX_CONNECTIONS, "a slot past the cap");
        let (parts, ()) = http::Request::new(()).into_parts();
        let conn = ConnShared::new(self.server.next_id(), self.server.config(), parts, None);
        self.server.register_connection(&conn);
        // The connect phase of a server without connect hooks.
        let joined = self.server.join(&conn, "/", None);
        assert!(matches!(joined, Ok((_, true))), "joining `/` on connect");
        self.open.push(Open {
            conn,
            slot,
            memberships: BTreeMap::from([("/", BTreeSet::new())]),
            queue: VecDeque::new(),
            acks: BTreeMap::new(),
            last_ack: 0,
            close_expected: false,
        });
    }

    /// Tear a connection down as its task's `finish` does (without hooks).
    fn disconnect(&mut self, i: usize) {
        let Open {
            conn,
            slot,
            mut acks,
            ..
        } = self.open.swap_remove(i);
        let memberships = conn.mark_closed();
        self.server.unregister_connection(&conn);
        for m in memberships {
            after_leave(
                &self.server,
                &conn,
                m,
                DisconnectReason::ServerClosed {
                    code: CloseCode::NORMAL,
                    reason: String::new(),
                },
            );
        }
        drop(slot);
        assert!(
            conn.mark_closed().is_empty(),
            "closing twice ended memberships"
        );
        for (id, waiter) in &mut acks {
            if let Some(rx) = waiter {
                assert!(
                    matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
                    "ack {id} did not fail with Closed after the disconnect"
                );
            }
        }
        assert_eq!(conn.pending_acks(), 0, "acks pending after the disconnect");
        self.closed.push_back(conn);
        if self.closed.len() > KEEP_CLOSED {
            self.closed.pop_front();
        }
    }

    fn disconnect_all(&mut self) {
        while !self.open.is_empty() {
            self.disconnect(self.open.len() - 1);
        }
    }

    /// Close the connections that asked to be closed, as their task would.
    fn handle_close_requests(&mut self) {
        let mut i = 0;
        while i < self.open.len() {
            let request = self.open[i].conn.take_close_request();
            assert_eq!(
                request.is_some(),
                self.open[i].close_expected,
                "close request: got {request:?}"
            );
            if let Some(request) = request {
                assert_eq!(request.code, CloseCode::SLOW_CONSUMER);
                self.disconnect(i);
            } else {
                i += 1;
            }
        }
    }

    // ---- memberships ----

    fn join_namespace(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_open(input) else {
            return;
        };
        let ns: &'static str = input.pick(&NAMESPACES);
        let open = &mut self.open[i];
        let expected = if names::validate_namespace(ns).is_err() {
            Err(Kind::InvalidName)
        } else if !is_declared(ns) && !is_dynamic(ns) {
            Err(Kind::Unknown)
        } else if open.memberships.contains_key(ns) {
            Ok(())
        } else if open.memberships.len() >= MAX_NAMESPACES {
            Err(Kind::TooManyNamespaces)
        } else {
            Ok(())
        };
        let got = open.socket(&self.server, "/").join_namespace(ns);
        assert_eq!(got.map_err(|e| kind(&e)), expected, "join_namespace({ns})");
        if expected.is_ok() {
            open.memberships.entry(ns).or_default();
        }
    }

    fn join_room(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_open(input) else {
            return;
        };
        let ns: &'static str = input.pick(&NAMESPACES[..6]);
        let room: &'static str = input.pick(&ROOMS);
        let open = &mut self.open[i];
        let joined_ns = open.memberships.get(ns);
        let expected = if names::validate_room(room).is_err() {
            Err(Kind::InvalidName)
        } else if !is_declared(ns) && !is_dynamic(ns) {
            Err(Kind::Unknown)
        } else if joined_ns.is_some_and(|rooms| rooms.contains(room)) {
            Ok(())
        } else if joined_ns.is_none() && open.memberships.len() >= MAX_NAMESPACES {
            Err(Kind::TooManyNamespaces)
        } else if open.room_count() >= MAX_ROOMS {
            Err(Kind::TooManyRooms)
        } else {
            Ok(())
        };
        let got = open.socket(&self.server, ns).join(room);
        assert_eq!(got.map_err(|e| kind(&e)), expected, "join({ns}, {room:?})");
        if expected.is_ok() {
            open.memberships.entry(ns).or_default().insert(room);
        }
    }

    fn leave_room(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_open(input) else {
            return;
        };
        let ns: &'static str = input.pick(&NAMESPACES);
        let room: &'static str = input.pick(&ROOMS);
        let open = &mut self.open[i];
        let expected = open
            .memberships
            .get_mut(ns)
            .is_some_and(|rooms| rooms.remove(room));
        let got = open.socket(&self.server, ns).leave(room);
        assert_eq!(got, expected, "leave({ns}, {room:?})");
    }

    fn leave_namespace(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_open(input) else {
            return;
        };
        let ns: &'static str = input.pick(&NAMESPACES);
        let open = &mut self.open[i];
        let expected = open.memberships.remove(ns).is_some();
        let got = open.socket(&self.server, "/").leave_namespace(ns);
        assert_eq!(got, expected, "leave_namespace({ns})");
    }

    // ---- sending ----

    /// A payload of a size chosen by the input: frames from ~60 bytes to past the byte bound.
    fn payload(input: &mut Input<'_>) -> String {
        "x".repeat(usize::from(input.arg()) * 3)
    }

    /// What queueing `frame` to `open` must give, updating the model.
    fn expect_send(
        policy: SlowConsumerPolicy,
        dropped: &mut u64,
        open: &mut Open,
        frame: &Utf8Bytes,
    ) -> Result<(), SendKind> {
        if frame.len() > MAX_QUEUED_BYTES {
            return Err(SendKind::TooLarge);
        }
        if open.queue.len() >= MAX_QUEUED_MESSAGES
            || open.queued_bytes() + frame.len() > MAX_QUEUED_BYTES
        {
            *dropped += 1;
            if policy == SlowConsumerPolicy::Disconnect {
                open.close_expected = true;
            }
            return Err(SendKind::QueueFull);
        }
        open.queue.push_back(frame.clone());
        Ok(())
    }

    fn emit(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_open(input) else {
            return;
        };
        let ns: &'static str = input.pick(&NAMESPACES[..5]);
        let data = Self::payload(input);
        let frame = encode("tick", ns, &data, None);
        let open = &mut self.open[i];
        let expected = Self::expect_send(self.policy, &mut self.dropped, open, &frame);
        let got = open.socket(&self.server, ns).emit("tick", &data);
        assert_eq!(got.map_err(|e| send_kind(&e)), expected, "emit to {ns}");
    }

    fn broadcast(&mut self, input: &mut Input<'_>) {
        let ns: &'static str = input.pick(&NAMESPACES[..6]);
        let mask = input.arg();
        let except = match self.pick_open(input) {
            Some(i) if mask & 0x80 != 0 => Some(self.open[i].conn.id),
            _ => None,
        };
        let rooms: Vec<&'static str> = ROOMS[..4]
            .iter()
            .enumerate()
            .filter(|(bit, _)| mask & (1 << bit) != 0)
            .map(|(_, room)| *room)
            .collect();
        let data = Self::payload(input);
        let frame = encode("news", ns, &data, None);

        let mut broadcast = self.server.of(ns);
        for room in &rooms {
            broadcast = broadcast.to(room);
        }
        if let Some(id) = except {
            broadcast = broadcast.except(id);
        }

        let (mut queued, mut dropped) = (0, 0);
        for open in &mut self.open {
            let Some(joined) = open.memberships.get(ns) else {
                continue;
            };
            let addressed = rooms.is_empty() || rooms.iter().any(|r| joined.contains(r));
            if !addressed || Some(open.conn.id) == except {
                continue;
            }
            match Self::expect_send(self.policy, &mut self.dropped, open, &frame) {
                Ok(()) => queued += 1,
                Err(SendKind::QueueFull) => dropped += 1,
                Err(_) => {}
            }
        }
        let delivery = match broadcast.emit("news", &data) {
            Ok(delivery) => delivery,
            Err(e) => panic!("broadcast to {ns} failed: {e}"),
        };
        assert_eq!(
            (delivery.queued, delivery.dropped),
            (queued, dropped),
            "broadcast to {ns} {rooms:?} except {except:?}"
        );
    }

    fn drain(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_open(input) else {
            return;
        };
        let count = usize::from(input.arg() % 8);
        let open = &mut self.open[i];
        for _ in 0..count {
            let expected = open.queue.pop_front();
            // What the connection task does with each frame it writes.
            let got = open.conn.outbox.pop().map(|m| match m {
                Message::Text(t) => t,
                other => panic!("a non-text frame in the outbound queue: {other:?}"),
            });
            assert_eq!(got, expected, "outbound queue order");
            if got.is_none() {
                break;
            }
        }
    }

    // ---- server→client acks ----

    /// The synchronous half of `Socket::emit_with_ack_timeout`: register, encode, queue, and
    /// cancel when queueing fails.
    fn register_ack(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_open(input) else {
            return;
        };
        let ns: &'static str = input.pick(&NAMESPACES[..5]);
        let data = Self::payload(input);
        let open = &mut self.open[i];
        let registered = open.conn.register_ack(MAX_ACKS);
        if open.acks.len() >= MAX_ACKS {
            assert!(
                matches!(registered, Err(AckError::TooManyPending)),
                "ack past the cap: {registered:?}"
            );
            return;
        }
        let (id, rx) = match registered {
            Ok(registered) => registered,
            Err(e) => panic!("register_ack: {e}"),
        };
        open.last_ack += 1;
        assert_eq!(id, open.last_ack, "ack ids count up per connection");
        let ack_id = id.to_string();
        let frame = encode("ask", ns, &data, Some(&ack_id));
        let expected = Self::expect_send(self.policy, &mut self.dropped, open, &frame);
        let sent = broadcast_encode_event(ns, "ask", &data, Some(&ack_id)).and_then(|frame| {
            let inner = &self.server.inner;
            open.conn.send(frame, &inner.config, &inner.counters)
        });
        assert_eq!(sent.map_err(|e| send_kind(&e)), expected, "emit_with_ack");
        if expected.is_err() {
            open.conn.cancel_ack(id);
        } else {
            open.acks.insert(id, Some(rx));
        }
    }

    /// An `ack` (or an `error`) from the client, under an id chosen by the input.
    fn resolve_ack(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_open(input) else {
            return;
        };
        let how = input.arg();
        let n = usize::from(input.arg());
        let own: Vec<u64> = self.open[i].acks.keys().copied().collect();
        let foreign: Vec<u64> = self
            .open
            .iter()
            .flat_map(|o| o.acks.keys().copied())
            .collect();
        let id = match how % 6 {
            0 | 1 if !own.is_empty() => own[n % own.len()].to_string(),
            2 if !foreign.is_empty() => foreign[n % foreign.len()].to_string(),
            3 if !own.is_empty() => format!("0{}", own[n % own.len()]),
            4 => format!("+{n}"),
            5 => String::new(),
            _ => n.to_string(),
        };
        let as_error = how & 0x40 != 0;
        let answer: Result<Option<Box<RawValue>>, HandlerError> = if as_error {
            Err(HandlerError::new("refused"))
        } else {
            Ok(Some(
                RawValue::from_string(format!("{n}")).unwrap_or_else(|e| panic!("{e}")),
            ))
        };
        let open = &mut self.open[i];
        let canonical = id.parse::<u64>().ok().filter(|v| v.to_string() == id);
        let entry = canonical.and_then(|v| open.acks.remove(&v).map(|w| (v, w)));
        let expected = matches!(entry, Some((_, Some(_))));
        let got = open.conn.resolve_ack(&id, answer);
        assert_eq!(got, expected, "resolve_ack({id:?})");
        if let Some((v, Some(mut rx))) = entry {
            match rx.try_recv() {
                Ok(Ok(Some(data))) => assert!(!as_error && data.get() == n.to_string()),
                Ok(Err(e)) => assert!(as_error && e.message() == "refused"),
                other => panic!("ack {v} resolved but its waiter got {other:?}"),
            }
        }
    }

    /// The ack timeout: the waiter gives up and cancels its entry.
    fn cancel_ack(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_open(input) else {
            return;
        };
        let n = input.arg();
        let open = &mut self.open[i];
        let own: Vec<u64> = open.acks.keys().copied().collect();
        let id = if own.is_empty() || n >= 200 {
            u64::from(n)
        } else {
            own[usize::from(n) % own.len()]
        };
        open.acks.remove(&id);
        open.conn.cancel_ack(id);
    }

    /// The waiter of an ack goes away without cancelling (its future was dropped): the entry
    /// stays pending until answered or the connection closes.
    fn abandon_ack(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_open(input) else {
            return;
        };
        let n = usize::from(input.arg());
        let open = &mut self.open[i];
        let own: Vec<u64> = open.acks.keys().copied().collect();
        if let Some(id) = (!own.is_empty()).then(|| own[n % own.len()]) {
            open.acks.insert(id, None);
        }
    }

    // ---- closed connections ----

    fn use_closed(&mut self, input: &mut Input<'_>) {
        let b = usize::from(input.arg());
        let Some(conn) = (!self.closed.is_empty()).then(|| &self.closed[b % self.closed.len()])
        else {
            return;
        };
        let socket = Socket::new(self.server.clone(), conn.clone(), Arc::from("/"));
        assert!(!socket.is_connected());
        assert_eq!(socket.join_namespace("/a"), Err(JoinError::Closed));
        assert_eq!(socket.of("/dyn1").join("r0"), Err(JoinError::Closed));
        assert!(matches!(socket.emit("tick", &1), Err(SendError::Closed)));
        assert!(matches!(conn.register_ack(MAX_ACKS), Err(AckError::Closed)));
        assert!(!socket.leave("r0"));
        assert!(!socket.leave_namespace("/"));
        assert!(socket.rooms().is_empty() && socket.namespaces().is_empty());
        assert!(self.server.socket(conn.id).is_none());
    }

    // ---- invariants ----

    fn check(&self) {
        let server = &self.server;
        let stats = server.stats();
        let open_ids: BTreeSet<SocketId> = self.open.iter().map(|o| o.conn.id).collect();
        assert_eq!(stats.connections, self.open.len(), "connections gauge");
        let sockets: BTreeSet<SocketId> = server.sockets().into_iter().collect();
        assert_eq!(sockets, open_ids, "registered connections");

        let mut rooms_gauge = 0;
        let mut dynamic = 0;
        for ns in NAMESPACES {
            let members: BTreeSet<SocketId> = self
                .open
                .iter()
                .filter(|o| o.memberships.contains_key(ns))
                .map(|o| o.conn.id)
                .collect();
            let mut rooms: BTreeMap<&str, BTreeSet<SocketId>> = BTreeMap::new();
            for o in &self.open {
                for room in o.memberships.get(ns).into_iter().flatten() {
                    rooms.entry(*room).or_default().insert(o.conn.id);
                }
            }
            rooms_gauge += rooms.len();
            let found = server.lookup_namespace(ns);
            if is_dynamic(ns) {
                assert_eq!(
                    found.is_some(),
                    !members.is_empty(),
                    "dynamic namespace {ns} exists with {} members",
                    members.len()
                );
                dynamic += usize::from(!members.is_empty());
            } else {
                assert_eq!(found.is_some(), is_declared(ns), "namespace {ns}");
            }
            let Some(namespace) = found else {
                continue;
            };
            assert_eq!(namespace.member_count(), members.len(), "members of {ns}");
            for o in &self.open {
                assert_eq!(
                    namespace.is_member(o.conn.id),
                    members.contains(&o.conn.id),
                    "membership of {ns}"
                );
            }
            let names: BTreeSet<String> = namespace.room_names().into_iter().collect();
            let expected: BTreeSet<String> = rooms.keys().map(|r| (*r).to_owned()).collect();
            assert_eq!(names, expected, "rooms of {ns}");
            for room in &names {
                let room_members: BTreeSet<SocketId> =
                    namespace.room_members(room).into_iter().collect();
                assert!(!room_members.is_empty(), "empty room {room:?} kept in {ns}");
                for id in &room_members {
                    assert!(namespace.is_member(*id), "room member not in its namespace");
                    assert!(open_ids.contains(id), "a closed connection left in a room");
                }
                assert_eq!(Some(&room_members), rooms.get(room.as_str()), "{ns} {room}");
            }
        }
        assert_eq!(stats.rooms, rooms_gauge, "rooms gauge");
        assert_eq!(
            stats.dynamic_namespaces, dynamic,
            "dynamic namespaces gauge"
        );

        let mut acks = 0;
        let mut queued = 0;
        for o in &self.open {
            let names: BTreeSet<String> = o.conn.namespace_names().into_iter().collect();
            let expected: BTreeSet<String> =
                o.memberships.keys().map(|n| (*n).to_owned()).collect();
            assert_eq!(names, expected, "namespaces of a connection");
            for (ns, rooms) in &o.memberships {
                let got: BTreeSet<String> = o.conn.rooms(ns).into_iter().collect();
                let expected: BTreeSet<String> = rooms.iter().map(|r| (*r).to_owned()).collect();
                assert_eq!(got, expected, "rooms of a connection in {ns}");
            }
            assert_eq!(o.conn.pending_acks(), o.acks.len(), "pending acks");
            assert_eq!(o.conn.queued_bytes(), o.queued_bytes(), "queued bytes");
            assert!(!o.conn.is_closed());
            acks += o.acks.len();
            queued += o.queued_bytes();
        }
        assert_eq!(stats.pending_acks, acks, "pending acks gauge");
        assert_eq!(stats.queued_bytes, queued, "queued bytes gauge");
        assert_eq!(stats.messages_dropped, self.dropped, "messages dropped");
    }
}

/// The frame an emit of `data` encodes to.
fn encode(event: &str, ns: &str, data: &str, ack_id: Option<&str>) -> Utf8Bytes {
    broadcast_encode_event(ns, event, data, ack_id)
        .unwrap_or_else(|e| panic!("event {event} does not encode: {e}"))
}

/// A comparable summary of a [`JoinError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Closed,
    Unknown,
    TooManyNamespaces,
    TooManyRooms,
    InvalidName,
    Refused,
}

fn kind(e: &JoinError) -> Kind {
    match e {
        JoinError::Closed => Kind::Closed,
        JoinError::UnknownNamespace => Kind::Unknown,
        JoinError::TooManyNamespaces => Kind::TooManyNamespaces,
        JoinError::TooManyRooms => Kind::TooManyRooms,
        JoinError::InvalidName(_) => Kind::InvalidName,
        JoinError::Refused(_) => Kind::Refused,
    }
}

/// A comparable summary of a [`SendError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendKind {
    Closed,
    QueueFull,
    TooLarge,
    Other,
}

fn send_kind(e: &SendError) -> SendKind {
    match e {
        SendError::Closed => SendKind::Closed,
        SendError::QueueFull => SendKind::QueueFull,
        SendError::TooLarge => SendKind::TooLarge,
        _ => SendKind::Other,
    }
}
