//! The load generator: one single-threaded runtime (pinned to its own core by the caller)
//! holding up to ~19,000 connections, each read by a small task that parses frames in place.
//!
//! Every payload carries its send time (`"t"`, nanoseconds since the generator started), so
//! delivery latency and ack round trips are measured from the payload, into HDR histograms.
//! Server CPU time and memory are read from `/proc/<server pid>` around each measurement
//! window. A plan (see [`plans`]) runs a sequence of scenarios against one server process and
//! prints one JSON line of metrics on stdout.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{self, Connected, Dial, Incoming, Proto, needed, parse_frame, push_frame};
use crate::procfs;

pub(crate) mod counts;
pub(crate) mod plans;
mod scenarios;

/// Source addresses are spread over 127.0.0.2 ..= 127.0.0.(1 + SOURCES) so that closing and
/// reopening thousands of connections never runs out of ephemeral ports (TIME_WAIT).
const SOURCES: u32 = 200;

/// The timestamp of payloads while `G::frozen_clock` is set (13 digits, as a real one after
/// 1,000 s of a run would have).
const FROZEN_TIME: u64 = 1_000_000_000_000;

/// Longest accepted latency (µs) in the histograms: 60 s.
const HIST_MAX_US: u64 = 60_000_000;

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// Everything the generator's tasks share (single-threaded: `Cell`s, no locks).
pub(crate) struct G {
    pub(crate) proto: Proto,
    pub(crate) server: SocketAddr,
    pub(crate) pid: u32,
    /// Every server (node) of the run: `server` first, then the other nodes of a cluster
    /// (`gen --addr2`); connections are dialed to them in turn while `spread` is set.
    pub(crate) nodes: Vec<SocketAddr>,
    /// The processes whose CPU time a measurement window sums: `pid`, then the other nodes'.
    pub(crate) pids: Vec<u32>,
    /// The broker's process (a cluster run), whose CPU time is reported apart.
    pub(crate) broker_pid: Option<u32>,
    /// Dial connections to the nodes in turn (else always to `server`).
    pub(crate) spread: Cell<bool>,
    next_node: Cell<usize>,
    /// Broadcast messages received on connections to a node other than the first.
    pub(crate) delivered_remote: Cell<u64>,
    epoch: Instant,
    next_source: Cell<u32>,
    /// Record latencies (deliveries and acks) into the histograms.
    pub(crate) recording: Cell<bool>,
    /// Broadcast messages received, ever.
    pub(crate) delivered: Cell<u64>,
    /// Wake `reached` when `delivered` gets to this.
    target: Cell<u64>,
    reached: Notify,
    pub(crate) latency: RefCell<Histogram<u64>>,
    /// Echo acks received while recording.
    pub(crate) acks: Cell<u64>,
    /// Wake `acked` when `acks` gets to this.
    ack_target: Cell<u64>,
    acked: Notify,
    /// Payloads carry a constant timestamp instead of the time (`wsu-bench counts`: every
    /// payload has the same length, so the servers' work per message does not change with the
    /// run's duration; latencies are not measured then).
    pub(crate) frozen_clock: Cell<bool>,
    pub(crate) rtt: RefCell<Histogram<u64>>,
    /// Ack clients send a new echo for each ack while this is set.
    pub(crate) acking: Cell<bool>,
    /// `error` messages received (none expected).
    pub(crate) errors: Cell<u64>,
    /// Connections that ended (EOF, error or close frame).
    pub(crate) ended: Cell<u64>,
    pub(crate) close_codes: RefCell<BTreeMap<u16, u64>>,
    /// Payload of echoes: `{"t":<now>,"p":"<pad>"}` after the timestamp.
    pad: RefCell<String>,
    rng: Cell<u64>,
    pub(crate) metrics: RefCell<BTreeMap<String, f64>>,
    pub(crate) notes: RefCell<Vec<String>>,
}

impl G {
    /// A generator for the servers `nodes` (address, process), the first being the main one;
    /// with the broker's process, if any.
    pub(crate) fn new(
        proto: Proto,
        nodes: Vec<(SocketAddr, u32)>,
        broker_pid: Option<u32>,
    ) -> Rc<G> {
        let (server, pid) = nodes[0];
        Rc::new(G {
            proto,
            server,
            pid,
            nodes: nodes.iter().map(|n| n.0).collect(),
            pids: nodes.iter().map(|n| n.1).collect(),
            broker_pid,
            spread: Cell::new(false),
            next_node: Cell::new(0),
            delivered_remote: Cell::new(0),
            epoch: Instant::now(),
            next_source: Cell::new(0),
            recording: Cell::new(false),
            delivered: Cell::new(0),
            target: Cell::new(u64::MAX),
            reached: Notify::new(),
            latency: RefCell::new(histogram()),
            acks: Cell::new(0),
            ack_target: Cell::new(u64::MAX),
            acked: Notify::new(),
            frozen_clock: Cell::new(false),
            rtt: RefCell::new(histogram()),
            acking: Cell::new(false),
            errors: Cell::new(0),
            ended: Cell::new(0),
            close_codes: RefCell::new(BTreeMap::new()),
            pad: RefCell::new("x".repeat(48)),
            rng: Cell::new(0x9e37_79b9_7f4a_7c15),
            metrics: RefCell::new(BTreeMap::new()),
            notes: RefCell::new(Vec::new()),
        })
    }

    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The JSON payload of a `msg` or `echo`, stamped now (or with [`FROZEN_TIME`] while
    /// `frozen_clock` is set).
    pub(crate) fn payload(&self) -> String {
        let t = if self.frozen_clock.get() {
            FROZEN_TIME
        } else {
            self.now_ns()
        };
        format!(r#"{{"t":{t},"p":"{}"}}"#, self.pad.borrow())
    }

    /// Set the padding so that payloads are about `bytes` long.
    pub(crate) fn set_payload_size(&self, bytes: usize) {
        *self.pad.borrow_mut() = "x".repeat(bytes.saturating_sub(30).max(1));
    }

    pub(crate) fn random(&self, n: u64) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x % n.max(1)
    }

    pub(crate) fn set(&self, key: impl Into<String>, value: f64) {
        self.metrics.borrow_mut().insert(key.into(), value);
    }

    pub(crate) fn note(&self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("  note: {text}");
        self.notes.borrow_mut().push(text);
    }

    fn dial_options(&self, recv_buffer: Option<u32>) -> Dial {
        let n = self.next_source.get();
        self.next_source.set((n + 1) % SOURCES);
        let server = if self.spread.get() {
            let k = self.next_node.get();
            self.next_node.set((k + 1) % self.nodes.len());
            self.nodes[k]
        } else {
            self.server
        };
        Dial {
            server,
            source: Ipv4Addr::new(127, 0, 0, 2 + n as u8),
            proto: self.proto,
            recv_buffer,
        }
    }

    /// Wait until `delivered` reaches `target`, or the timeout.
    pub(crate) async fn wait_delivered(&self, target: u64, timeout: Duration) -> bool {
        self.target.set(target);
        let ok = tokio::time::timeout(timeout, async {
            while self.delivered.get() < target {
                self.reached.notified().await;
            }
        })
        .await
        .is_ok();
        self.target.set(u64::MAX);
        ok
    }

    /// Wait until `acks` reaches `target`, or the timeout.
    pub(crate) async fn wait_acks(&self, target: u64, timeout: Duration) -> bool {
        self.ack_target.set(target);
        let ok = tokio::time::timeout(timeout, async {
            while self.acks.get() < target {
                self.acked.notified().await;
            }
        })
        .await
        .is_ok();
        self.ack_target.set(u64::MAX);
        ok
    }

    /// A text message arrived on `link` (at `now`, in ns since the epoch).
    fn on_text(&self, link: &Link, m: &[u8], now: u64, out: &mut Vec<u8>) {
        if self.proto == Proto::Sio && m == b"2" {
            // Engine.IO heartbeat: answer the ping.
            push_frame(out, 1, b"3");
            return;
        }
        match self.proto.classify(m) {
            // A paused (slow) consumer's last read before pausing is not counted.
            Incoming::Msg if link.paused.get() => {}
            Incoming::Msg => {
                let d = self.delivered.get() + 1;
                self.delivered.set(d);
                if link.node > 0 {
                    self.delivered_remote.set(self.delivered_remote.get() + 1);
                }
                if self.recording.get()
                    && let Some(t) = client::timestamp(m)
                {
                    let us = now.saturating_sub(t) / 1000;
                    self.latency
                        .borrow_mut()
                        .saturating_record(us.clamp(1, HIST_MAX_US));
                }
                if d >= self.target.get() {
                    self.reached.notify_one();
                }
            }
            Incoming::Ack(id) => {
                let waiter = {
                    let mut rpc = link.rpc.borrow_mut();
                    match rpc.take() {
                        Some((want, tx)) if want == id => Some(tx),
                        other => {
                            *rpc = other;
                            None
                        }
                    }
                };
                if let Some(tx) = waiter {
                    let _ = tx.send(());
                } else if link.acker.get() {
                    if self.recording.get() {
                        self.acks.set(self.acks.get() + 1);
                        if self.acks.get() >= self.ack_target.get() {
                            self.acked.notify_one();
                        }
                        if let Some(t) = client::timestamp(m) {
                            let us = now.saturating_sub(t) / 1000;
                            self.rtt
                                .borrow_mut()
                                .saturating_record(us.clamp(1, HIST_MAX_US));
                        }
                    }
                    if self.acking.get() {
                        let id = link.next_id();
                        self.proto.echo(&self.payload(), id, out);
                    }
                }
            }
            Incoming::Error => {
                self.errors.set(self.errors.get() + 1);
                if self.errors.get() <= 3 {
                    self.note(format!(
                        "server error message: {}",
                        String::from_utf8_lossy(&m[..m.len().min(200)])
                    ));
                }
            }
            Incoming::Other => {}
        }
    }
}

/// One client connection: its write half (shared by the reader task, which answers pings, and
/// the scenario code) and its per-connection state.
pub(crate) struct Link {
    w: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Answers echo acks with new echoes while `G::acking`.
    pub(crate) acker: Cell<bool>,
    /// Stop reading (a slow consumer) until `resume`.
    pub(crate) paused: Cell<bool>,
    pub(crate) resume: Notify,
    /// The one outstanding join/leave and its waiter.
    rpc: RefCell<Option<(u64, oneshot::Sender<()>)>>,
    next_ack: Cell<u64>,
    /// The node it is connected to (an index of `G::nodes`).
    pub(crate) node: usize,
    pub(crate) ended: Cell<bool>,
    pub(crate) ended_notify: Notify,
}

impl Link {
    /// Number the next requests from `id` + 1 on (`wsu-bench counts` starts every link at
    /// 1,000,000 so that all ack ids have the same length).
    pub(crate) fn set_next_id(&self, id: u64) {
        self.next_ack.set(id);
    }

    fn next_id(&self) -> u64 {
        let id = self.next_ack.get() + 1;
        self.next_ack.set(id);
        id
    }

    pub(crate) async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = self.w.lock().await;
        w.write_all(bytes).await
    }

    /// Join or leave `room`, waiting for the ack.
    pub(crate) async fn membership(&self, g: &G, join: bool, room: &str) -> io::Result<()> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        *self.rpc.borrow_mut() = Some((id, tx));
        let mut out = Vec::new();
        g.proto.membership(join, room, id, &mut out);
        self.write(&out).await?;
        match tokio::time::timeout(Duration::from_secs(15), rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::other("connection ended")),
            Err(_) => Err(io::Error::other("no ack to join/leave within 15 s")),
        }
    }

    /// Send `n` echoes (the first of an ack client's window).
    pub(crate) async fn start_echoes(&self, g: &G, n: usize) -> io::Result<()> {
        let mut out = Vec::new();
        for _ in 0..n {
            let id = self.next_id();
            g.proto.echo(&g.payload(), id, &mut out);
        }
        self.write(&out).await
    }
}

/// A connection and its reader task; dropping it closes the connection.
pub(crate) struct Handle {
    pub(crate) link: Rc<Link>,
    task: JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start the reader task of a connected stream.
pub(crate) fn spawn_link(g: &Rc<G>, c: Connected) -> Handle {
    let node = c
        .stream
        .peer_addr()
        .ok()
        .and_then(|a| g.nodes.iter().position(|n| *n == a))
        .unwrap_or(0);
    let (rd, wr) = c.stream.into_split();
    let link = Rc::new(Link {
        node,
        w: tokio::sync::Mutex::new(wr),
        acker: Cell::new(false),
        paused: Cell::new(false),
        resume: Notify::new(),
        rpc: RefCell::new(None),
        next_ack: Cell::new(0),
        ended: Cell::new(false),
        ended_notify: Notify::new(),
    });
    let task = tokio::task::spawn_local(reader(g.clone(), link.clone(), rd, c.leftover));
    Handle { link, task }
}

/// Read and handle frames until the connection ends.
async fn reader(g: Rc<G>, link: Rc<Link>, mut rd: OwnedReadHalf, mut buf: Vec<u8>) {
    let mut end = buf.len();
    let mut start = 0;
    buf.resize(end.max(8 * 1024), 0);
    let mut out = Vec::new();
    let code = 'conn: loop {
        let now = g.now_ns();
        while let Some(f) = parse_frame(&mut buf[start..end]) {
            let (s, e) = (start + f.start, start + f.end);
            match f.opcode {
                1 | 2 => g.on_text(&link, &buf[s..e], now, &mut out),
                9 => push_frame(&mut out, 10, &buf[s..e]),
                8 => {
                    let code = if e - s >= 2 {
                        u16::from_be_bytes([buf[s], buf[s + 1]])
                    } else {
                        1005
                    };
                    break 'conn Some(code);
                }
                _ => {}
            }
            start = e;
        }
        if !out.is_empty() {
            if link.write(&out).await.is_err() {
                break None;
            }
            out.clear();
        }
        if start == end {
            start = 0;
            end = 0;
        }
        let want = needed(&buf[start..end]).unwrap_or(0).max(2048);
        if buf.len() - end < 2048 || buf.len() - start < want {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            if buf.len() < want + 2048 {
                buf.resize(want + 2048, 0);
            }
        }
        while link.paused.get() {
            link.resume.notified().await;
        }
        match rd.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => end += n,
        }
    };
    if let Some(code) = code {
        *g.close_codes.borrow_mut().entry(code).or_default() += 1;
    }
    g.ended.set(g.ended.get() + 1);
    link.ended.set(true);
    link.ended_notify.notify_waiters();
    // A pending join/leave fails.
    link.rpc.borrow_mut().take();
}

/// Dial `n` connections with `concurrency` dialers; returns them and the time it took.
/// Failed dials are retried (up to 3 times each) and counted.
pub(crate) async fn dial_many(
    g: &Rc<G>,
    n: usize,
    concurrency: usize,
    recv_buffer: Option<u32>,
) -> (Vec<Handle>, Duration, u64) {
    let started = Instant::now();
    let next = Rc::new(Cell::new(0usize));
    let failures = Rc::new(Cell::new(0u64));
    let out: Rc<RefCell<Vec<Handle>>> = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(n.max(1)) {
        let (g, next, failures, out) = (g.clone(), next.clone(), failures.clone(), out.clone());
        workers.push(tokio::task::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= n {
                    break;
                }
                next.set(i + 1);
                for attempt in 0..3 {
                    match client::dial(g.dial_options(recv_buffer)).await {
                        Ok(c) => {
                            let h = spawn_link(&g, c);
                            out.borrow_mut().push(h);
                            break;
                        }
                        Err(e) => {
                            failures.set(failures.get() + 1);
                            if failures.get() <= 3 {
                                g.note(format!("dial failed: {e}"));
                            }
                            if attempt < 2 {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed();
    let handles = std::mem::take(&mut *out.borrow_mut());
    (handles, elapsed, failures.get())
}

/// Join (or leave) every link in `links` to `room(i)`, with `concurrency` requests in flight.
pub(crate) async fn memberships(
    g: &Rc<G>,
    links: &[Rc<Link>],
    join: bool,
    room: impl Fn(usize) -> String,
    concurrency: usize,
) -> u64 {
    let next = Rc::new(Cell::new(0usize));
    let failures = Rc::new(Cell::new(0u64));
    let links: Rc<Vec<(Rc<Link>, String)>> = Rc::new(
        links
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), room(i)))
            .collect(),
    );
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(links.len().max(1)) {
        let (g, next, failures, links) = (g.clone(), next.clone(), failures.clone(), links.clone());
        workers.push(tokio::task::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= links.len() {
                    break;
                }
                next.set(i + 1);
                let (link, room) = &links[i];
                if let Err(e) = link.membership(&g, join, room).await {
                    failures.set(failures.get() + 1);
                    if failures.get() <= 3 {
                        g.note(format!("join/leave failed: {e}"));
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    failures.get()
}

/// Server CPU time and wall time over a measurement window (the servers' CPU times summed, for
/// a cluster; the broker's apart).
pub(crate) struct Window {
    user0: u64,
    system0: u64,
    broker0: u64,
    /// The broker's CPU nanoseconds of the window (set by `stop`).
    broker: std::cell::Cell<f64>,
    t0: Instant,
    /// The server's user-space CPU nanoseconds of the window (set by `stop`).
    user: std::cell::Cell<f64>,
}

impl Window {
    pub(crate) fn start(g: &G) -> Window {
        let (user0, system0) = servers_cpu(g);
        Window {
            user0,
            system0,
            broker0: g.broker_pid.and_then(procfs::cpu_ns).unwrap_or(0),
            broker: std::cell::Cell::new(0.0),
            t0: Instant::now(),
            user: std::cell::Cell::new(0.0),
        }
    }

    /// (seconds, server CPU nanoseconds: user + system) since the start.
    pub(crate) fn stop(&self, g: &G) -> (f64, f64) {
        let (user, system) = servers_cpu(g);
        if let Some(b) = g.broker_pid.and_then(procfs::cpu_ns) {
            self.broker.set(b.saturating_sub(self.broker0) as f64);
        }
        let user = user.saturating_sub(self.user0);
        let system = system.saturating_sub(self.system0);
        self.user.set(user as f64);
        (self.t0.elapsed().as_secs_f64(), (user + system) as f64)
    }

    /// The user-space part of the CPU time `stop` returned (the rest is the kernel's: system
    /// calls, the TCP stack, and on loopback the receiving side's softirq work).
    pub(crate) fn user_ns(&self) -> f64 {
        self.user.get()
    }

    /// The broker's CPU nanoseconds over the window `stop` ended (0 without a broker).
    pub(crate) fn broker_ns(&self) -> f64 {
        self.broker.get()
    }
}

/// (user, system) CPU nanoseconds of every server process of `g`, summed.
fn servers_cpu(g: &G) -> (u64, u64) {
    g.pids
        .iter()
        .filter_map(|&p| procfs::cpu_split_ns(p))
        .fold((0, 0), |(u, s), (u1, s1)| (u + u1, s + s1))
}

/// The server's RSS in bytes (0 if unreadable).
pub(crate) fn rss(g: &G) -> f64 {
    procfs::rss(g.pid).unwrap_or(0) as f64
}

/// Run `plan` against the servers `nodes` (the first is the main one; more for a cluster) and
/// the broker `broker_pid`; print the metrics as one JSON line.
pub(crate) fn run(
    proto: Proto,
    nodes: Vec<(SocketAddr, u32)>,
    broker_pid: Option<u32>,
    plan: &str,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    let g = G::new(proto, nodes, broker_pid);
    let result = local.block_on(&rt, plans::run(&g, plan));
    // The generator's own CPU time, for the check that nothing else ran meanwhile.
    if let Some(ns) = procfs::cpu_ns(std::process::id()) {
        g.set("generator.cpu_s", ns as f64 / 1e9);
    }
    let out = serde_json::json!({
        "metrics": &*g.metrics.borrow(),
        "notes": &*g.notes.borrow(),
        "error": result.as_ref().err(),
    });
    println!("{out}");
    result
}
