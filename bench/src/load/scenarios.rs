//! The measurements (scenarios A–F of `../shared/notes/performance.md`), each storing its
//! metrics under a key prefix.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::{Instant, MissedTickBehavior};

use super::{G, Handle, Link, Window, dial_many, histogram, memberships, rss, spawn_link};
use crate::client;
use crate::procfs;
use crate::settings::PING_INTERVAL;

const MIB: f64 = 1024.0 * 1024.0;

/// Fewest closed-loop rounds in a measurement window...
const MIN_ROUNDS: u64 = 5;
/// ...unless the window grows past this.
const MAX_WINDOW: Duration = Duration::from_secs(15);

/// A quantile of a µs histogram, in milliseconds.
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn reset_latency(g: &G) {
    g.latency.borrow_mut().reset();
}

/// D: `n` handshakes (for Socket.IO including the namespace connect) with `dialers` concurrent
/// dialers. Returns the connections.
pub(crate) async fn accept(g: &Rc<G>, n: usize, dialers: usize, key: &str) -> Vec<Handle> {
    let w = Window::start(g);
    let (handles, elapsed, failures) = dial_many(g, n, dialers, None).await;
    let (_, cpu) = w.stop(g);
    let ok = handles.len().max(1) as f64;
    g.set(
        format!("{key}.per_s"),
        handles.len() as f64 / elapsed.as_secs_f64(),
    );
    g.set(format!("{key}.cpu_us"), cpu / 1000.0 / ok);
    g.set(format!("{key}.failures"), failures as f64);
    eprintln!(
        "  {key}: {} connections in {:.2} s ({:.0}/s)",
        handles.len(),
        elapsed.as_secs_f64(),
        handles.len() as f64 / elapsed.as_secs_f64()
    );
    handles
}

/// C: memory with `n` idle connections, after one ping cycle.
pub(crate) async fn idle(g: &Rc<G>, baseline: f64, n: usize, key: &str) {
    tokio::time::sleep(PING_INTERVAL + Duration::from_millis(700)).await;
    let rss = rss(g);
    let pss = procfs::pss(g.pid).unwrap_or(0) as f64;
    g.set(format!("{key}.rss_mib"), rss / MIB);
    g.set(format!("{key}.pss_mib"), pss / MIB);
    g.set(
        format!("{key}.kib_per_conn"),
        (rss - baseline) / 1024.0 / n as f64,
    );
    eprintln!(
        "  {key}: RSS {:.1} MiB, {:.2} KiB/conn",
        rss / MIB,
        (rss - baseline) / 1024.0 / n as f64
    );
}

/// Build `k` `pub` frames to `room`.
fn publishes(g: &G, room: &str, k: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..k {
        g.proto.publish(room, &g.payload(), &mut out);
    }
    out
}

/// A: closed-loop rounds: publish `per_round` messages to a room of `members`, wait until
/// every member got every message, repeat for `duration`.
pub(crate) async fn broadcast_closed(
    g: &Rc<G>,
    publisher: &Link,
    room: &str,
    members: usize,
    per_round: usize,
    duration: Duration,
    key: &str,
) {
    let per = (members * per_round) as u64;
    // Warm-up, not recorded.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(250) {
        let target = g.delivered.get() + per;
        if publisher
            .write(&publishes(g, room, per_round))
            .await
            .is_err()
            || !g.wait_delivered(target, Duration::from_secs(10)).await
        {
            g.note(format!("{key}: warm-up round incomplete"));
            return;
        }
    }
    reset_latency(g);
    let mut rounds_hist = histogram();
    g.recording.set(true);
    let d0 = g.delivered.get();
    let r0 = g.delivered_remote.get();
    let w = Window::start(g);
    let mut rounds = 0u64;
    // At least `MIN_ROUNDS` rounds (big rooms on slow servers), at most `MAX_WINDOW`.
    while (w.t0.elapsed() < duration || rounds < MIN_ROUNDS) && w.t0.elapsed() < MAX_WINDOW {
        let t = Instant::now();
        let target = g.delivered.get() + per;
        if publisher
            .write(&publishes(g, room, per_round))
            .await
            .is_err()
            || !g.wait_delivered(target, Duration::from_secs(10)).await
        {
            g.note(format!("{key}: round incomplete after 10 s"));
            break;
        }
        rounds_hist.saturating_record((t.elapsed().as_micros() as u64).max(1));
        rounds += 1;
    }
    let (secs, cpu) = w.stop(g);
    g.recording.set(false);
    let delivered = (g.delivered.get() - d0).max(1) as f64;
    let lat = g.latency.borrow();
    g.set(format!("{key}.deliveries_per_s"), delivered / secs);
    if g.nodes.len() > 1 {
        // A cluster: the deliveries to the members on the other nodes (through the broker).
        let remote = (g.delivered_remote.get() - r0) as f64;
        g.set(format!("{key}.cross_deliveries_per_s"), remote / secs);
        g.set(format!("{key}.rounds"), rounds as f64);
        eprintln!("  {key}: {:.0} cross-node deliveries/s", remote / secs);
    }
    if g.broker_pid.is_some() {
        g.set(
            format!("{key}.broker_cpu_us_per_delivery"),
            w.broker_ns() / 1000.0 / delivered,
        );
    }
    g.set(format!("{key}.rounds_per_s"), rounds as f64 / secs);
    g.set(format!("{key}.round_p50_ms"), ms(&rounds_hist, 0.5));
    g.set(format!("{key}.round_p99_ms"), ms(&rounds_hist, 0.99));
    g.set(format!("{key}.latency_p50_ms"), ms(&lat, 0.5));
    g.set(format!("{key}.latency_p99_ms"), ms(&lat, 0.99));
    g.set(
        format!("{key}.cpu_us_per_delivery"),
        cpu / 1000.0 / delivered,
    );
    g.set(
        format!("{key}.user_cpu_us_per_delivery"),
        w.user_ns() / 1000.0 / delivered,
    );
    g.set(format!("{key}.server_cpu_pct"), cpu / 1e9 / secs * 100.0);
    eprintln!(
        "  {key}: {rounds} rounds, {:.0} deliveries/s, round p50 {:.2} ms p99 {:.2} ms, {:.3} µs CPU/delivery ({:.0}% CPU)",
        delivered / secs,
        ms(&rounds_hist, 0.5),
        ms(&rounds_hist, 0.99),
        cpu / 1000.0 / delivered,
        cpu / 1e9 / secs * 100.0
    );
}

/// Publish at `pubs_per_s` to rooms named by `room()` for `duration` (open loop); returns the
/// number of publishes.
async fn publish_open(
    g: &Rc<G>,
    publisher: &Link,
    room: &mut dyn FnMut() -> String,
    pubs_per_s: f64,
    duration: Duration,
    during: &mut dyn FnMut(),
) -> u64 {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * pubs_per_s) as u64;
        if due > sent {
            let mut out = Vec::new();
            for _ in sent..due {
                g.proto.publish(&room(), &g.payload(), &mut out);
            }
            if publisher.write(&out).await.is_err() {
                g.note("publisher connection failed");
                break;
            }
            sent = due;
        }
        during();
    }
    sent
}

/// A: open loop: a fixed offered load of `deliveries_per_s` to a room of `members`; delivery
/// latency from the payload's timestamp.
pub(crate) async fn broadcast_open(
    g: &Rc<G>,
    publisher: &Link,
    room: &str,
    members: usize,
    deliveries_per_s: f64,
    duration: Duration,
    key: &str,
) {
    let pubs_per_s = deliveries_per_s / members as f64;
    reset_latency(g);
    g.recording.set(true);
    let d0 = g.delivered.get();
    let w = Window::start(g);
    let sent = publish_open(
        g,
        publisher,
        &mut || room.to_owned(),
        pubs_per_s,
        duration,
        &mut || {},
    )
    .await;
    let expected = sent * members as u64;
    g.wait_delivered(d0 + expected, Duration::from_secs(10))
        .await;
    let (secs, cpu) = w.stop(g);
    g.recording.set(false);
    let delivered = g.delivered.get() - d0;
    let lat = g.latency.borrow();
    g.set(
        format!("{key}.offered_per_s"),
        expected as f64 / duration.as_secs_f64(),
    );
    g.set(format!("{key}.deliveries_per_s"), delivered as f64 / secs);
    g.set(
        format!("{key}.lost"),
        expected.saturating_sub(delivered) as f64,
    );
    g.set(format!("{key}.latency_p50_ms"), ms(&lat, 0.5));
    g.set(format!("{key}.latency_p99_ms"), ms(&lat, 0.99));
    g.set(format!("{key}.latency_p999_ms"), ms(&lat, 0.999));
    g.set(
        format!("{key}.cpu_us_per_delivery"),
        cpu / 1000.0 / delivered.max(1) as f64,
    );
    eprintln!(
        "  {key}: offered {:.0}/s, delivered {delivered}/{expected}, latency p50 {:.2} ms p99 {:.2} ms",
        expected as f64 / duration.as_secs_f64(),
        ms(&lat, 0.5),
        ms(&lat, 0.99)
    );
}

/// B: each client keeps `inflight` echoes waiting for their ack, for `duration`.
pub(crate) async fn acks(
    g: &Rc<G>,
    clients: &[Rc<Link>],
    inflight: usize,
    duration: Duration,
    key: &str,
) {
    for c in clients {
        c.acker.set(true);
    }
    g.acking.set(true);
    for c in clients {
        if c.start_echoes(g, inflight).await.is_err() {
            g.note(format!("{key}: an ack client failed"));
        }
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    g.rtt.borrow_mut().reset();
    g.acks.set(0);
    g.recording.set(true);
    let w = Window::start(g);
    tokio::time::sleep(duration).await;
    g.recording.set(false);
    let (secs, cpu) = w.stop(g);
    let n = g.acks.get();
    g.acking.set(false);
    // Let the acks in flight come back before the next scenario.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in clients {
        c.acker.set(false);
    }
    let rtt = g.rtt.borrow();
    g.set(format!("{key}.acks_per_s"), n as f64 / secs);
    g.set(format!("{key}.rtt_p50_ms"), ms(&rtt, 0.5));
    g.set(format!("{key}.rtt_p99_ms"), ms(&rtt, 0.99));
    g.set(format!("{key}.rtt_p999_ms"), ms(&rtt, 0.999));
    g.set(
        format!("{key}.cpu_us_per_ack"),
        cpu / 1000.0 / n.max(1) as f64,
    );
    g.set(
        format!("{key}.user_cpu_us_per_ack"),
        w.user_ns() / 1000.0 / n.max(1) as f64,
    );
    eprintln!(
        "  {key}: {:.0} acks/s, rtt p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms, {:.2} µs CPU/ack",
        n as f64 / secs,
        ms(&rtt, 0.5),
        ms(&rtt, 0.99),
        ms(&rtt, 0.999),
        cpu / 1000.0 / n.max(1) as f64
    );
}

/// Least-squares slope of (seconds, bytes) samples, in KiB per minute.
fn slope_kib_per_min(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for &(x, y) in samples {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den / 1024.0 * 60.0
    }
}

/// D: connection churn: `rate` connects per second, each connection joining a room and closing
/// after `hold`, for `duration`, while the caller holds its resident connections. RSS is sampled
/// every second; growth is measured after `warmup`.
pub(crate) async fn churn(
    g: &Rc<G>,
    rate: f64,
    hold: Duration,
    duration: Duration,
    warmup: Duration,
    key: &str,
) {
    let started = Rc::new(Cell::new(0u64));
    let completed = Rc::new(Cell::new(0u64));
    let failed = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut spawned = 0u64;
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        for _ in spawned..due {
            let (g2, completed, failed) = (g.clone(), completed.clone(), failed.clone());
            started.set(started.get() + 1);
            tokio::task::spawn_local(async move {
                match client::dial(g2.dial_options(None)).await {
                    Ok(c) => {
                        let h = spawn_link(&g2, c);
                        match h.link.membership(&g2, true, "churn").await {
                            Ok(()) => completed.set(completed.get() + 1),
                            Err(_) => failed.set(failed.get() + 1),
                        }
                        tokio::time::sleep(hold).await;
                        drop(h);
                    }
                    Err(_) => failed.set(failed.get() + 1),
                }
            });
        }
        spawned = due.max(spawned);
        if start.elapsed() >= next_sample {
            samples.push((start.elapsed().as_secs_f64(), rss(g)));
            next_sample += Duration::from_secs(1);
        }
    }
    samples.push((start.elapsed().as_secs_f64(), rss(g)));
    tokio::time::sleep(hold + Duration::from_millis(500)).await;
    let after: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|&(t, _)| t >= warmup.as_secs_f64())
        .collect();
    let first = after.first().map_or(0.0, |s| s.1);
    let last = after.last().map_or(0.0, |s| s.1);
    let secs = start.elapsed().as_secs_f64();
    g.set(
        format!("{key}.connects_per_s"),
        completed.get() as f64 / duration.as_secs_f64(),
    );
    g.set(format!("{key}.failures"), failed.get() as f64);
    g.set(format!("{key}.rss_start_mib"), first / MIB);
    g.set(format!("{key}.rss_end_mib"), last / MIB);
    g.set(format!("{key}.rss_growth_mib"), (last - first) / MIB);
    g.set(
        format!("{key}.rss_slope_kib_per_min"),
        slope_kib_per_min(&after),
    );
    g.set(format!("{key}.rss_after_mib"), rss(g) / MIB);
    eprintln!(
        "  {key}: {} connects in {secs:.1} s ({} failed), RSS {:.1} → {:.1} MiB after warm-up ({:+.0} KiB/min)",
        completed.get(),
        failed.get(),
        first / MIB,
        last / MIB,
        slope_kib_per_min(&after)
    );
}

/// E: room churn under broadcast: `churners` join and leave random rooms of `rooms` in a closed
/// loop while a publisher sends `pubs_per_s` to random rooms.
pub(crate) async fn room_churn(
    g: &Rc<G>,
    publisher: &Link,
    churners: &[Rc<Link>],
    rooms: u64,
    pubs_per_s: f64,
    duration: Duration,
    key: &str,
) {
    let running = Rc::new(Cell::new(true));
    let ops = Rc::new(Cell::new(0u64));
    let rss0 = rss(g);
    let mut tasks = Vec::new();
    for c in churners {
        let (g, c, running, ops) = (g.clone(), c.clone(), running.clone(), ops.clone());
        tasks.push(tokio::task::spawn_local(async move {
            while running.get() {
                let room = format!("e{}", g.random(rooms));
                if c.membership(&g, true, &room).await.is_err()
                    || c.membership(&g, false, &room).await.is_err()
                {
                    break;
                }
                ops.set(ops.get() + 2);
            }
        }));
    }
    reset_latency(g);
    g.recording.set(true);
    let d0 = g.delivered.get();
    let ops0 = ops.get();
    let w = Window::start(g);
    let mut max_rss = rss0;
    let mut last_sample = Instant::now();
    let sent = publish_open(
        g,
        publisher,
        &mut || format!("e{}", g.random(rooms)),
        pubs_per_s,
        duration,
        &mut || {
            if last_sample.elapsed() >= Duration::from_millis(250) {
                max_rss = max_rss.max(rss(g));
                last_sample = Instant::now();
            }
        },
    )
    .await;
    let (secs, cpu) = w.stop(g);
    let done_ops = ops.get() - ops0;
    running.set(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    g.recording.set(false);
    for t in tasks {
        t.abort();
    }
    let delivered = g.delivered.get() - d0;
    let lat = g.latency.borrow();
    g.set(format!("{key}.pubs"), sent as f64);
    g.set(format!("{key}.deliveries_per_s"), delivered as f64 / secs);
    g.set(format!("{key}.churn_ops_per_s"), done_ops as f64 / secs);
    g.set(format!("{key}.latency_p50_ms"), ms(&lat, 0.5));
    g.set(format!("{key}.latency_p99_ms"), ms(&lat, 0.99));
    g.set(format!("{key}.server_cpu_pct"), cpu / 1e9 / secs * 100.0);
    g.set(format!("{key}.rss_growth_mib"), (rss(g) - rss0) / MIB);
    g.set(format!("{key}.rss_max_growth_mib"), (max_rss - rss0) / MIB);
    eprintln!(
        "  {key}: {sent} publishes, {:.0} deliveries/s, {:.0} join+leave/s, latency p50 {:.2} ms p99 {:.2} ms",
        delivered as f64 / secs,
        done_ops as f64 / secs,
        ms(&lat, 0.5),
        ms(&lat, 0.99)
    );
}

/// F: slow consumer isolation: a room of `normal + slow` members; the slow ones (small receive
/// buffer) stop reading while a publisher sends `pubs_per_s` messages of `size` bytes.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn slow_consumer(
    g: &Rc<G>,
    normal: usize,
    slow: usize,
    size: usize,
    pubs_per_s: f64,
    duration: Duration,
    key: &str,
) {
    let (fast, _, f1) = dial_many(g, normal, 32, None).await;
    let (slow_h, _, f2) = dial_many(g, slow, 32, Some(16 * 1024)).await;
    let (mut publisher, _, f3) = dial_many(g, 1, 1, None).await;
    let Some(publisher) = publisher.pop() else {
        g.note(format!("{key}: no publisher connection"));
        return;
    };
    if f1 + f2 + f3 > 0 {
        g.note(format!("{key}: {} dials failed", f1 + f2 + f3));
    }
    let links: Vec<Rc<Link>> = fast.iter().chain(&slow_h).map(|h| h.link.clone()).collect();
    memberships(g, &links, true, |_| "slow".to_owned(), 32).await;
    g.set_payload_size(size);
    let ended0 = g.ended.get();
    let rss0 = rss(g);
    for h in &slow_h {
        h.link.paused.set(true);
    }
    reset_latency(g);
    g.recording.set(true);
    let d0 = g.delivered.get();
    let w = Window::start(g);
    let mut max_rss = rss0;
    let mut last_sample = Instant::now();
    let sent = publish_open(
        g,
        &publisher.link,
        &mut || "slow".to_owned(),
        pubs_per_s,
        duration,
        &mut || {
            if last_sample.elapsed() >= Duration::from_millis(100) {
                max_rss = max_rss.max(rss(g));
                last_sample = Instant::now();
            }
        },
    )
    .await;
    let expected = sent * normal as u64;
    g.wait_delivered(d0 + expected, Duration::from_secs(5))
        .await;
    let (secs, _) = w.stop(g);
    g.recording.set(false);
    max_rss = max_rss.max(rss(g));
    let delivered = g.delivered.get() - d0;
    let fast_ended = fast.iter().filter(|h| h.link.ended.get()).count();
    // Let the slow ones read again: those the server disconnected find the end.
    for h in &slow_h {
        h.link.paused.set(false);
        h.link.resume.notify_waiters();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let slow_ended = slow_h.iter().filter(|h| h.link.ended.get()).count();
    g.set_payload_size(78);
    let lat = g.latency.borrow();
    g.set(format!("{key}.deliveries_per_s"), delivered as f64 / secs);
    g.set(
        format!("{key}.lost"),
        expected.saturating_sub(delivered) as f64,
    );
    g.set(format!("{key}.latency_p50_ms"), ms(&lat, 0.5));
    g.set(format!("{key}.latency_p99_ms"), ms(&lat, 0.99));
    g.set(format!("{key}.rss_max_growth_mib"), (max_rss - rss0) / MIB);
    g.set(format!("{key}.slow_disconnected"), slow_ended as f64);
    g.set(format!("{key}.fast_disconnected"), fast_ended as f64);
    let _ = ended0;
    eprintln!(
        "  {key}: delivered {delivered}/{expected} to readers, p50 {:.2} ms p99 {:.2} ms, RSS +{:.1} MiB, slow disconnected {slow_ended}/{slow}",
        ms(&lat, 0.5),
        ms(&lat, 0.99),
        (max_rss - rss0) / MIB
    );
}
