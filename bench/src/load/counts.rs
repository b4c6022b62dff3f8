//! The plan of `wsu-bench counts`: a fixed amount of work, done in lock step so that the server
//! does the same thing however fast or slow it runs (under callgrind it runs 50–100 times
//! slower; under a loaded machine, anything goes).
//!
//! Every step (a TCP connect, an upgrade request, a namespace connect, a join, one broadcast
//! round, one ack) is sent only once the server is idle: every thread of it asleep (`S`) and
//! not scheduled once for [`QUIET`]; and the step is over when the server has answered and is
//! idle again, having woken up for it. So no two steps ever overlap, no read finds two requests
//! where another run would find one, and the server's instruction and system call counts for a
//! step do not depend on timing. Payloads carry a constant timestamp and ack ids all have the
//! same length (from 1,000,001 on), so every message of a kind has the same bytes.
//!
//! Sequence: `members` connections and one publisher, one at a time; every member joins room
//! `c`; `rounds` broadcast rounds of one message and `rounds10` of ten messages (one write) to
//! the room, each waiting for all deliveries; `acks` echo requests with ack, one at a time,
//! from the first `clients` members in turn; `acks8` rounds of eight echo requests sent in one
//! write by one of them (in turn), each waiting for the eight acks. Then the generator prints `counted`, keeps every
//! connection open, and waits for its standard input to close: the caller stops the server
//! first, so that no teardown work falls into the counts.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{G, Handle, spawn_link};
use crate::client;
use crate::procfs::{self, ThreadState};

/// How long every thread of the server must stay asleep without being scheduled once for the
/// server to count as idle.
const QUIET: Duration = Duration::from_micros(300);

/// The longest wait for the server to become idle after a step.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest wait for the server to wake up for a step (it wakes at once, however slowly it
/// then works: a step it never sees is lost, and the run is better given up early).
const WAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Ack ids (and join ids) of every connection start after this.
const ID_BASE: u64 = 1_000_000;

/// The room every member joins.
const ROOM: &str = "c";

/// The work of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Work {
    /// Connections in the room (the broadcast's recipients).
    pub(crate) members: usize,
    /// Broadcast rounds of one message.
    pub(crate) rounds: u64,
    /// Broadcast rounds of ten messages (one write by the publisher).
    pub(crate) rounds10: u64,
    /// Echo requests acknowledged, one at a time.
    pub(crate) acks: u64,
    /// Rounds of eight echo requests in one write (by one client), acknowledged.
    pub(crate) acks8: u64,
    /// Members sending the echoes, in turn.
    pub(crate) clients: usize,
}

impl Work {
    /// The generator's plan name for this work (`gen --plan counts:…`).
    pub(crate) fn plan(&self) -> String {
        format!(
            "counts:members={},rounds={},rounds10={},acks={},acks8={},clients={}",
            self.members, self.rounds, self.rounds10, self.acks, self.acks8, self.clients
        )
    }

    /// Parse what follows `counts:` in a plan name.
    pub(crate) fn parse(spec: &str) -> Result<Work, String> {
        let mut w = Work {
            members: 0,
            rounds: 0,
            rounds10: 0,
            acks: 0,
            acks8: 0,
            clients: 1,
        };
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("counts plan: `{part}` is not key=value"))?;
            let n: u64 = v
                .parse()
                .map_err(|_| format!("counts plan: `{v}` is not a number"))?;
            match k {
                "members" => w.members = n as usize,
                "rounds" => w.rounds = n,
                "rounds10" => w.rounds10 = n,
                "acks" => w.acks = n,
                "acks8" => w.acks8 = n,
                "clients" => w.clients = n as usize,
                other => return Err(format!("counts plan: unknown key `{other}`")),
            }
        }
        if w.acks + w.acks8 > 0 && (w.clients == 0 || w.clients > w.members) {
            return Err(format!(
                "counts plan: {} ack clients, {} members",
                w.clients, w.members
            ));
        }
        Ok(w)
    }
}

/// Waits until the server is idle (see the module docs), remembering what it saw last so that
/// the next wait also requires the server to have run since.
struct Settler {
    pid: u32,
    /// The server's port (for the diagnostics of a step that never ends).
    port: u16,
    last: RefCell<Option<Vec<ThreadState>>>,
    waits: Cell<u64>,
    waited: Cell<Duration>,
}

impl Settler {
    fn new(pid: u32, port: u16) -> Settler {
        Settler {
            pid,
            port,
            last: RefCell::new(None),
            waits: Cell::new(0),
            waited: Cell::new(Duration::ZERO),
        }
    }

    fn snapshot(&self) -> Result<Vec<ThreadState>, String> {
        procfs::threads(self.pid).ok_or_else(|| format!("server process {} is gone", self.pid))
    }

    /// Block until every thread of the server has been asleep, unscheduled, for [`QUIET`],
    /// and (after the first call) the server has run since the previous call returned.
    fn settle(&self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let a = self.snapshot()?;
            let asleep = a.iter().all(|t| t.state == 'S');
            let ran = self.last.borrow().as_ref() != Some(&a);
            if asleep && ran {
                std::thread::sleep(QUIET);
                if self.snapshot()? == a {
                    *self.last.borrow_mut() = Some(a);
                    self.waits.set(self.waits.get() + 1);
                    self.waited.set(self.waited.get() + started.elapsed());
                    return Ok(());
                }
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
            if started.elapsed() > SETTLE_TIMEOUT || (!ran && started.elapsed() > WAKE_TIMEOUT) {
                return Err(format!(
                    "the server did not become idle within {:.0} s ({}; threads now {:?}, after \
                     the previous step {:?}; {})",
                    started.elapsed().as_secs_f64(),
                    if ran {
                        "busy"
                    } else {
                        "it did not wake up for the last step"
                    },
                    a,
                    self.last.borrow(),
                    procfs::tcp_summary(self.port),
                ));
            }
        }
    }
}

/// Run `work` in lock step against the server, then hold the connections until standard input
/// closes.
pub(crate) async fn run(g: &Rc<G>, work: &Work) -> Result<(), String> {
    let t0 = Instant::now();
    g.frozen_clock.set(true);
    let s = Settler::new(g.pid, g.server.port());
    s.settle()
        .map_err(|e| format!("before the first step: {e}"))?;

    let settle = || {
        let r = s.settle().map_err(io::Error::other);
        async move { r }
    };
    let mut handles: Vec<Handle> = Vec::with_capacity(work.members + 1);
    for i in 0..=work.members {
        let c = client::dial_settled(g.dial_options(None), settle)
            .await
            .map_err(|e| format!("connection {i}: {e}"))?;
        s.settle()
            .map_err(|e| format!("connection {i}, after the handshake: {e}"))?;
        let h = spawn_link(g, c);
        h.link.set_next_id(ID_BASE);
        handles.push(h);
    }
    let Some((publisher, members)) = handles.split_last() else {
        return Err("no connections".to_owned());
    };
    for (i, m) in members.iter().enumerate() {
        m.link
            .membership(g, true, ROOM)
            .await
            .map_err(|e| format!("join {i}: {e}"))?;
        s.settle().map_err(|e| format!("join {i}: {e}"))?;
    }
    let setup_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let d0 = g.delivered.get();
    for (rounds, k) in [(work.rounds, 1usize), (work.rounds10, 10)] {
        for r in 0..rounds {
            let target = g.delivered.get() + (members.len() * k) as u64;
            let mut out = Vec::new();
            for _ in 0..k {
                g.proto.publish(ROOM, &g.payload(), &mut out);
            }
            publisher
                .link
                .write(&out)
                .await
                .map_err(|e| format!("publish: {e}"))?;
            if !g.wait_delivered(target, SETTLE_TIMEOUT).await {
                return Err(format!(
                    "broadcast round {} of {k} message(s): {} of {} deliveries",
                    r + 1,
                    g.delivered.get() + (members.len() * k) as u64 - target,
                    members.len() * k
                ));
            }
            s.settle()
                .map_err(|e| format!("broadcast round {} of {k}: {e}", r + 1))?;
        }
    }
    let deliveries = g.delivered.get() - d0;
    let bcast_s = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let clients = &members[..work.clients.min(members.len())];
    for c in clients {
        c.link.acker.set(true);
    }
    g.acks.set(0);
    g.recording.set(true);
    for (rounds, k) in [(work.acks, 1usize), (work.acks8, 8)] {
        for i in 0..rounds {
            let c = &clients[i as usize % clients.len()];
            c.link
                .start_echoes(g, k)
                .await
                .map_err(|e| format!("echo: {e}"))?;
            let target = g.acks.get() + k as u64;
            if !g.wait_acks(target, SETTLE_TIMEOUT).await {
                return Err(format!(
                    "round {} of {k} echo(es): {} of {k} acks came back",
                    i + 1,
                    g.acks.get() + k as u64 - target
                ));
            }
            s.settle()
                .map_err(|e| format!("ack round {} of {k}: {e}", i + 1))?;
        }
    }
    g.recording.set(false);
    let ack_s = t2.elapsed().as_secs_f64();

    g.set("counts.deliveries", deliveries as f64);
    g.set("counts.acks", g.acks.get() as f64);
    g.set("counts.settles", s.waits.get() as f64);
    g.set("counts.settle_s", s.waited.get().as_secs_f64());
    g.set("counts.setup_s", setup_s);
    g.set("counts.bcast_s", bcast_s);
    g.set("counts.ack_s", ack_s);
    let expected = members.len() as u64 * (work.rounds + 10 * work.rounds10);
    let expected_acks = work.acks + 8 * work.acks8;
    if deliveries != expected || g.acks.get() != expected_acks {
        return Err(format!(
            "{deliveries} deliveries (expected {expected}), {} acks (expected {expected_acks})",
            g.acks.get(),
        ));
    }
    if g.errors.get() > 0 || g.ended.get() > 0 {
        return Err(format!(
            "{} error messages, {} connections ended",
            g.errors.get(),
            g.ended.get()
        ));
    }

    // Hand over: the caller stops the server, then closes our standard input.
    {
        let mut out = io::stdout().lock();
        writeln!(out, "counted").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    let mut stdin = io::stdin().lock();
    let mut line = String::new();
    while stdin.read_line(&mut line).map_err(|e| e.to_string())? > 0 {
        line.clear();
    }
    drop(handles);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_round_trip() {
        let w = Work {
            members: 1000,
            rounds: 30,
            rounds10: 4,
            acks: 3000,
            acks8: 125,
            clients: 10,
        };
        let plan = w.plan();
        let spec = plan.strip_prefix("counts:").expect("prefix");
        assert_eq!(Work::parse(spec), Ok(w));
        assert!(Work::parse("members=5,acks=3,clients=6").is_err());
        assert!(Work::parse("members=5,bogus=1").is_err());
        assert!(Work::parse("members=x").is_err());
    }
}
