//! Plans: the sequence of scenarios run against one server process.
//!
//! - `smoke`: 50 connections, a few broadcast rounds and acks; fails on any error (for CI).
//! - `quick`: 10k handshakes with 64 dialers (D), idle memory at 10k (C), closed-loop
//!   broadcast to a room of 1k (1 and 10 messages per round) and of 10k (1 per round) (A), acks
//!   with 100 clients and 8 in flight (B).
//! - `full-a`: idle memory at 1k/10k/19k (C), then broadcast to rooms of 1k/10k/19k: closed
//!   loop with 1 and 10 messages per round, and an open-loop rate of 30k deliveries/s (A);
//!   memory after the burst
//!   and after everyone left (C).
//! - `full-b`: 10k handshakes (D), acks with 1 and 8 in flight (B), connection churn (D).
//! - `full-c`: room churn under broadcast (E), slow consumer isolation (F).
//! - `idle`: 10k handshakes and idle memory only (for quick iterations on memory); `ack`: acks
//!   with 100 clients, 8 then 1 in flight; `bcast`: closed-loop broadcast to a room of 1000
//!   (for quick before/after comparisons of runtime changes).
//! - `profile-bcast`, `profile-ack`: fixed amounts of work (for a server run under a profiler
//!   such as `valgrind --tool=callgrind`): 100 members, 100 rounds of 1 and 50 rounds of 10
//!   broadcasts; 20,000 acks from 10 clients with 8 in flight.
//! - `counts:members=M,rounds=N,rounds10=N10,acks=K,clients=C`: the fixed work of
//!   `wsu-bench counts`, in lock step (see [`super::counts`]).

use std::rc::Rc;
use std::time::Duration;

use super::scenarios::{
    accept, acks, broadcast_closed, broadcast_open, churn, idle, room_churn, slow_consumer,
};
use super::{G, Handle, Link, dial_many, memberships, rss};

const MIB: f64 = 1024.0 * 1024.0;

/// Offered load of the open-loop broadcasts, in deliveries per second: well within every
/// server's capacity at one message per publish (node socket.io's is about 35k/s here), so the
/// latencies compare servers that keep up.
pub(crate) const OPEN_LOOP_RATE: f64 = 30_000.0;

fn links(handles: &[Handle]) -> Vec<Rc<Link>> {
    handles.iter().map(|h| h.link.clone()).collect()
}

async fn publisher(g: &Rc<G>) -> Result<Handle, String> {
    let (mut p, _, _) = dial_many(g, 1, 1, None).await;
    p.pop()
        .ok_or_else(|| "cannot connect the publisher".to_owned())
}

async fn join_all(g: &Rc<G>, links: &[Rc<Link>], room: &str) -> Result<(), String> {
    let failed = memberships(g, links, true, |_| room.to_owned(), 64).await;
    if failed > 0 {
        return Err(format!("{failed} joins to {room} failed"));
    }
    Ok(())
}

pub(crate) async fn run(g: &Rc<G>, plan: &str) -> Result<(), String> {
    g.set_payload_size(78);
    let baseline = rss(g);
    g.set("baseline.rss_mib", baseline / MIB);
    match plan {
        "smoke" => smoke(g).await,
        "quick" => quick(g, baseline).await,
        "full-a" => full_a(g, baseline).await,
        "full-b" => full_b(g).await,
        "full-c" => full_c(g).await,
        "profile-bcast" => profile_bcast(g).await,
        "profile-ack" => profile_ack(g).await,
        p if p.starts_with("cluster:") => cluster(g, &p["cluster:".len()..]).await,
        p if p.starts_with("counts:") => {
            let work = super::counts::Work::parse(&p["counts:".len()..])?;
            super::counts::run(g, &work).await
        }
        "ack" => {
            let (hs, _, _) = dial_many(g, 100, 32, None).await;
            let ls = links(&hs);
            acks(g, &ls, 8, Duration::from_secs(2), "ack.x8").await;
            acks(g, &ls, 1, Duration::from_secs(2), "ack.x1").await;
            Ok(())
        }
        "bcast" => {
            let (hs, _, _) = dial_many(g, 1000, 64, None).await;
            let ls = links(&hs);
            join_all(g, &ls, "r1000").await?;
            let p = publisher(g).await?;
            let d = Duration::from_secs(2);
            broadcast_closed(g, &p.link, "r1000", 1000, 1, d, "bcast.1000.x1").await;
            broadcast_closed(g, &p.link, "r1000", 1000, 10, d, "bcast.1000.x10").await;
            Ok(())
        }
        "idle" => {
            let hs = accept(g, 10_000, 64, "accept").await;
            idle(g, baseline, hs.len(), "idle.10000").await;
            Ok(())
        }
        other => Err(format!("unknown plan `{other}`")),
    }?;
    g.set("errors", g.errors.get() as f64);
    Ok(())
}

async fn smoke(g: &Rc<G>) -> Result<(), String> {
    let hs = accept(g, 50, 16, "accept").await;
    if hs.len() != 50 {
        return Err(format!("only {} of 50 connections", hs.len()));
    }
    let ls = links(&hs);
    join_all(g, &ls, "all").await?;
    let p = publisher(g).await?;
    let short = Duration::from_millis(300);
    broadcast_closed(g, &p.link, "all", 50, 1, short, "bcast.50.x1").await;
    broadcast_closed(g, &p.link, "all", 50, 10, short, "bcast.50.x10").await;
    acks(g, &ls[..10], 4, short, "ack.x4").await;
    let m = g.metrics.borrow();
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    if get("bcast.50.x1.rounds_per_s") <= 0.0 || get("bcast.50.x10.rounds_per_s") <= 0.0 {
        return Err("no broadcast round completed".to_owned());
    }
    if get("ack.x4.acks_per_s") <= 0.0 {
        return Err("no ack came back".to_owned());
    }
    if g.errors.get() > 0 || g.ended.get() > 0 {
        return Err(format!(
            "{} error messages, {} connections ended",
            g.errors.get(),
            g.ended.get()
        ));
    }
    Ok(())
}

async fn quick(g: &Rc<G>, baseline: f64) -> Result<(), String> {
    let hs = accept(g, 10_000, 64, "accept").await;
    idle(g, baseline, hs.len(), "idle.10000").await;
    let ls = links(&hs);
    join_all(g, &ls, "r10000").await?;
    join_all(g, &ls[..1000], "r1000").await?;
    let p = publisher(g).await?;
    let d = Duration::from_millis(1000);
    broadcast_closed(g, &p.link, "r1000", 1000, 1, d, "bcast.1000.x1").await;
    broadcast_closed(g, &p.link, "r1000", 1000, 10, d, "bcast.1000.x10").await;
    broadcast_closed(g, &p.link, "r10000", ls.len(), 1, d, "bcast.10000.x1").await;
    acks(g, &ls[..100], 8, d, "ack.x8").await;
    Ok(())
}

async fn full_a(g: &Rc<G>, baseline: f64) -> Result<(), String> {
    let mut hs: Vec<Handle> = Vec::new();
    for (add, total) in [(1000usize, 1000usize), (9000, 10_000), (9000, 19_000)] {
        let (more, _, failed) = dial_many(g, add, 64, None).await;
        if failed > 0 {
            g.note(format!("{failed} dials failed on the way to {total}"));
        }
        hs.extend(more);
        idle(g, baseline, hs.len(), &format!("idle.{total}")).await;
    }
    let ls = links(&hs);
    let n = ls.len();
    join_all(g, &ls, "r19000").await?;
    join_all(g, &ls[..10_000.min(n)], "r10000").await?;
    join_all(g, &ls[..1000.min(n)], "r1000").await?;
    let p = publisher(g).await?;
    for (room, size) in [
        ("r1000", 1000.min(n)),
        ("r10000", 10_000.min(n)),
        ("r19000", n),
    ] {
        let label = room.trim_start_matches('r');
        let d = Duration::from_millis(2000);
        broadcast_closed(g, &p.link, room, size, 1, d, &format!("bcast.{label}.x1")).await;
        broadcast_closed(g, &p.link, room, size, 10, d, &format!("bcast.{label}.x10")).await;
        broadcast_open(
            g,
            &p.link,
            room,
            size,
            OPEN_LOOP_RATE,
            Duration::from_secs(3),
            &format!("open.{label}"),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_burst = rss(g);
    g.set("mem.after_burst_rss_mib", after_burst / MIB);
    g.set(
        "mem.after_burst_kib_per_conn",
        (after_burst - baseline) / 1024.0 / n as f64,
    );
    drop(p);
    drop(ls);
    drop(hs);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_leave = rss(g);
    g.set("mem.after_leave_rss_mib", after_leave / MIB);
    g.set(
        "mem.returned_pct",
        (after_burst - after_leave) / (after_burst - baseline).max(1.0) * 100.0,
    );
    eprintln!(
        "  memory: after burst {:.1} MiB, after everyone left {:.1} MiB (baseline {:.1} MiB)",
        after_burst / MIB,
        after_leave / MIB,
        baseline / MIB
    );
    Ok(())
}

async fn full_b(g: &Rc<G>) -> Result<(), String> {
    let hs = accept(g, 10_000, 64, "accept").await;
    drop(hs);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (clients, _, _) = dial_many(g, 100, 32, None).await;
    let ls = links(&clients);
    let d = Duration::from_millis(1500);
    acks(g, &ls, 1, d, "ack.x1").await;
    acks(g, &ls, 8, d, "ack.x8").await;
    drop(ls);
    drop(clients);
    let (resident, _, failed) = dial_many(g, 5000, 64, None).await;
    if failed > 0 {
        g.note(format!("{failed} resident dials failed"));
    }
    churn(
        g,
        300.0,
        Duration::from_secs(1),
        Duration::from_secs(20),
        Duration::from_secs(5),
        "churn",
    )
    .await;
    drop(resident);
    Ok(())
}

async fn full_c(g: &Rc<G>) -> Result<(), String> {
    let (hs, _, failed) = dial_many(g, 10_000, 64, None).await;
    if failed > 0 {
        g.note(format!("{failed} dials failed"));
    }
    let ls = links(&hs);
    let failed = memberships(g, &ls, true, |i| format!("e{}", i % 1000), 64).await;
    if failed > 0 {
        return Err(format!("{failed} room joins failed"));
    }
    let (churners, _, _) = dial_many(g, 200, 32, None).await;
    let p = publisher(g).await?;
    room_churn(
        g,
        &p.link,
        &links(&churners),
        1000,
        2000.0,
        Duration::from_secs(5),
        "rooms",
    )
    .await;
    drop(p);
    drop(churners);
    drop(ls);
    drop(hs);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 4 KiB messages, 400/s for 8 s: 12.8 MB per slow member, more than the kernel buffers
    // (4 MiB send buffer on loopback) and wsu's outbound queue (4 MiB) can hold.
    slow_consumer(g, 90, 10, 4096, 400.0, Duration::from_secs(8), "slow").await;
    Ok(())
}

async fn profile_bcast(g: &Rc<G>) -> Result<(), String> {
    let (hs, _, _) = dial_many(g, 100, 16, None).await;
    let ls = links(&hs);
    join_all(g, &ls, "p").await?;
    let p = publisher(g).await?;
    let d0 = g.delivered.get();
    for (rounds, k) in [(100u64, 1usize), (50, 10)] {
        for _ in 0..rounds {
            let target = g.delivered.get() + (ls.len() * k) as u64;
            let mut out = Vec::new();
            for _ in 0..k {
                g.proto.publish("p", &g.payload(), &mut out);
            }
            p.link.write(&out).await.map_err(|e| e.to_string())?;
            if !g.wait_delivered(target, Duration::from_secs(60)).await {
                return Err("round incomplete".to_owned());
            }
        }
    }
    g.set("profile.deliveries", (g.delivered.get() - d0) as f64);
    Ok(())
}

async fn profile_ack(g: &Rc<G>) -> Result<(), String> {
    let (hs, _, _) = dial_many(g, 10, 10, None).await;
    let ls = links(&hs);
    for l in &ls {
        l.acker.set(true);
    }
    g.recording.set(true);
    g.acking.set(true);
    for l in &ls {
        l.start_echoes(g, 8).await.map_err(|e| e.to_string())?;
    }
    while g.acks.get() < 20_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    g.acking.set(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    g.set("profile.acks", g.acks.get() as f64);
    Ok(())
}

/// `cluster:members=M,ms=T`: a room of `M` members spread evenly over the nodes (dialed to
/// each in turn), a publisher on the first node; closed-loop broadcast (A) with 1 and with 10
/// messages per round, each measured for at least `T` ms (and 5 rounds). Fails unless
/// deliveries crossed nodes in both.
async fn cluster(g: &Rc<G>, spec: &str) -> Result<(), String> {
    let (mut members, mut ms) = (1000usize, 2000u64);
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("cluster plan: `{part}` is not key=value"))?;
        let n: u64 = v
            .parse()
            .map_err(|_| format!("cluster plan: `{v}` is not a number"))?;
        match k {
            "members" => members = n as usize,
            "ms" => ms = n,
            other => return Err(format!("cluster plan: unknown key `{other}`")),
        }
    }
    if g.nodes.len() < 2 {
        return Err("the cluster plan needs two servers (gen --addr2)".to_owned());
    }
    g.spread.set(true);
    let (hs, _, failed) = dial_many(g, members, 64, None).await;
    g.spread.set(false);
    if hs.len() != members {
        return Err(format!(
            "only {} of {members} connections ({failed} dials failed)",
            hs.len()
        ));
    }
    let remote = hs.iter().filter(|h| h.link.node > 0).count();
    g.set("cluster.members", members as f64);
    g.set("cluster.members_remote", remote as f64);
    let ls = links(&hs);
    join_all(g, &ls, "cluster").await?;
    // The publisher on the first node.
    let p = publisher(g).await?;
    if p.link.node != 0 {
        return Err("the publisher is not on the first node".to_owned());
    }
    let d = Duration::from_millis(ms);
    for (k, key) in [(1, "cluster.x1"), (10, "cluster.x10")] {
        broadcast_closed(g, &p.link, "cluster", members, k, d, key).await;
    }
    let m = g.metrics.borrow();
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    for key in ["cluster.x1", "cluster.x10"] {
        if get(&format!("{key}.rounds_per_s")) <= 0.0 {
            return Err(format!("{key}: no broadcast round completed"));
        }
        if get(&format!("{key}.cross_deliveries_per_s")) <= 0.0 {
            return Err(format!("{key}: no delivery crossed nodes"));
        }
    }
    if g.errors.get() > 0 || g.ended.get() > 0 {
        return Err(format!(
            "{} error messages, {} connections ended",
            g.errors.get(),
            g.ended.get()
        ));
    }
    Ok(())
}
