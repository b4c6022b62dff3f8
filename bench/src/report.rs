//! The results table (markdown) and the targets of issue 6.

use std::fmt::Write;

use crate::orchestrate::{Kind, Medians, Samples};

/// Which way is better.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// A row: a metric key, with `{n}` standing for each room size / connection count.
struct Row {
    key: &'static str,
    label: &'static str,
    better: Better,
    decimals: usize,
}

const fn row(key: &'static str, label: &'static str, better: Better, decimals: usize) -> Row {
    Row {
        key,
        label,
        better,
        decimals,
    }
}

const SIZES: [&str; 4] = ["50", "1000", "10000", "19000"];

const ROWS: &[Row] = &[
    row(
        "bcast.{n}.x1.deliveries_per_s",
        "A broadcast to {n}, 1 msg/round: deliveries/s",
        Better::Higher,
        0,
    ),
    row(
        "bcast.{n}.x1.cpu_us_per_delivery",
        "A broadcast to {n}, 1 msg/round: server CPU µs/delivery",
        Better::Lower,
        3,
    ),
    row(
        "bcast.{n}.x1.user_cpu_us_per_delivery",
        "A broadcast to {n}, 1 msg/round: of which user space µs",
        Better::Lower,
        3,
    ),
    row(
        "bcast.{n}.x1.server_cpu_pct",
        "A broadcast to {n}, 1 msg/round: server CPU %",
        Better::Higher,
        0,
    ),
    row(
        "bcast.{n}.x1.round_p50_ms",
        "A broadcast to {n}, 1 msg/round: round p50 ms",
        Better::Lower,
        2,
    ),
    row(
        "bcast.{n}.x1.round_p99_ms",
        "A broadcast to {n}, 1 msg/round: round p99 ms",
        Better::Lower,
        2,
    ),
    row(
        "bcast.{n}.x10.deliveries_per_s",
        "A broadcast to {n}, 10 msgs/round: deliveries/s",
        Better::Higher,
        0,
    ),
    row(
        "bcast.{n}.x10.cpu_us_per_delivery",
        "A broadcast to {n}, 10 msgs/round: server CPU µs/delivery",
        Better::Lower,
        3,
    ),
    row(
        "bcast.{n}.x10.user_cpu_us_per_delivery",
        "A broadcast to {n}, 10 msgs/round: of which user space µs",
        Better::Lower,
        3,
    ),
    row(
        "bcast.{n}.x10.server_cpu_pct",
        "A broadcast to {n}, 10 msgs/round: server CPU %",
        Better::Higher,
        0,
    ),
    row(
        "bcast.{n}.x10.round_p99_ms",
        "A broadcast to {n}, 10 msgs/round: round p99 ms",
        Better::Lower,
        2,
    ),
    row(
        "open.{n}.latency_p50_ms",
        "A open loop 30k deliveries/s to {n}: latency p50 ms",
        Better::Lower,
        2,
    ),
    row(
        "open.{n}.latency_p99_ms",
        "A open loop 30k deliveries/s to {n}: latency p99 ms",
        Better::Lower,
        2,
    ),
    row(
        "open.{n}.cpu_us_per_delivery",
        "A open loop 30k deliveries/s to {n}: server CPU µs/delivery",
        Better::Lower,
        3,
    ),
    row(
        "open.{n}.lost",
        "A open loop 30k deliveries/s to {n}: not delivered",
        Better::Lower,
        0,
    ),
    row(
        "ack.x1.acks_per_s",
        "B acks, 100 clients × 1 in flight: acks/s",
        Better::Higher,
        0,
    ),
    row(
        "ack.x1.rtt_p50_ms",
        "B acks × 1: RTT p50 ms",
        Better::Lower,
        3,
    ),
    row(
        "ack.x1.rtt_p99_ms",
        "B acks × 1: RTT p99 ms",
        Better::Lower,
        3,
    ),
    row(
        "ack.x1.rtt_p999_ms",
        "B acks × 1: RTT p99.9 ms",
        Better::Lower,
        3,
    ),
    row(
        "ack.x1.cpu_us_per_ack",
        "B acks × 1: server CPU µs/ack",
        Better::Lower,
        2,
    ),
    row(
        "ack.x1.user_cpu_us_per_ack",
        "B acks × 1: of which user space µs",
        Better::Lower,
        2,
    ),
    row(
        "ack.x4.acks_per_s",
        "B acks, 10 clients × 4 in flight: acks/s",
        Better::Higher,
        0,
    ),
    row(
        "ack.x8.acks_per_s",
        "B acks, 100 clients × 8 in flight: acks/s",
        Better::Higher,
        0,
    ),
    row(
        "ack.x8.rtt_p50_ms",
        "B acks × 8: RTT p50 ms",
        Better::Lower,
        3,
    ),
    row(
        "ack.x8.rtt_p99_ms",
        "B acks × 8: RTT p99 ms",
        Better::Lower,
        3,
    ),
    row(
        "ack.x8.rtt_p999_ms",
        "B acks × 8: RTT p99.9 ms",
        Better::Lower,
        3,
    ),
    row(
        "ack.x8.cpu_us_per_ack",
        "B acks × 8: server CPU µs/ack",
        Better::Lower,
        2,
    ),
    row(
        "ack.x8.user_cpu_us_per_ack",
        "B acks × 8: of which user space µs",
        Better::Lower,
        2,
    ),
    row(
        "ack.x8.server_cpu_pct",
        "B acks × 8: server CPU %",
        Better::Higher,
        0,
    ),
    row(
        "idle.{n}.kib_per_conn",
        "C idle memory at {n} connections: KiB/conn (RSS)",
        Better::Lower,
        2,
    ),
    row(
        "idle.{n}.rss_mib",
        "C idle memory at {n} connections: RSS MiB",
        Better::Lower,
        1,
    ),
    row(
        "mem.after_burst_kib_per_conn",
        "C after the broadcasts (19k conns): KiB/conn",
        Better::Lower,
        2,
    ),
    row(
        "mem.after_leave_rss_mib",
        "C after everyone left: RSS MiB",
        Better::Lower,
        1,
    ),
    row(
        "other.cpu_share",
        "Other processes' CPU during a run (share of a core)",
        Better::Lower,
        2,
    ),
    row(
        "steal.cpu_share",
        "Hypervisor steal time during a run (share of a core)",
        Better::Lower,
        2,
    ),
    row(
        "baseline.rss_mib",
        "RSS of the fresh server: MiB",
        Better::Lower,
        1,
    ),
    row(
        "accept.per_s",
        "D handshakes/s (64 dialers)",
        Better::Higher,
        0,
    ),
    row(
        "accept.cpu_us",
        "D server CPU µs/handshake",
        Better::Lower,
        1,
    ),
    row(
        "churn.connects_per_s",
        "D churn: connects/s (5k resident)",
        Better::Higher,
        0,
    ),
    row(
        "churn.rss_growth_mib",
        "D churn: RSS growth after warm-up, MiB",
        Better::Lower,
        2,
    ),
    row(
        "churn.rss_slope_kib_per_min",
        "D churn: RSS slope KiB/min",
        Better::Lower,
        0,
    ),
    row(
        "rooms.deliveries_per_s",
        "E room churn: deliveries/s",
        Better::Higher,
        0,
    ),
    row(
        "rooms.churn_ops_per_s",
        "E room churn: join+leave/s",
        Better::Higher,
        0,
    ),
    row(
        "rooms.latency_p99_ms",
        "E room churn: delivery p99 ms",
        Better::Lower,
        2,
    ),
    row(
        "rooms.rss_growth_mib",
        "E room churn: RSS growth MiB",
        Better::Lower,
        2,
    ),
    row(
        "slow.latency_p50_ms",
        "F slow consumers: readers' p50 ms",
        Better::Lower,
        2,
    ),
    row(
        "slow.latency_p99_ms",
        "F slow consumers: readers' p99 ms",
        Better::Lower,
        2,
    ),
    row(
        "slow.lost",
        "F slow consumers: lost to readers",
        Better::Lower,
        0,
    ),
    row(
        "slow.rss_max_growth_mib",
        "F slow consumers: server RSS growth MiB",
        Better::Lower,
        1,
    ),
    row(
        "slow.slow_disconnected",
        "F slow consumers: slow ones disconnected (of 10)",
        Better::Higher,
        0,
    ),
];

/// `v` with `decimals` decimals ("–" if not finite), with thousands separators from 10,000 on
/// when `decimals` is 0.
pub(crate) fn fmt(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    if decimals == 0 && v.abs() >= 10_000.0 {
        // Thousands separators for big counts.
        let s = format!("{:.0}", v);
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        return format!("{sign}{out}");
    }
    format!("{v:.decimals$}")
}

fn get(med: &Medians, server: &str, key: &str) -> f64 {
    med.get(server)
        .and_then(|m| m.get(key))
        .copied()
        .unwrap_or(f64::NAN)
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b != 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".to_owned()
    }
}

/// The markdown table of medians with wsu's ratio to each other server (wsu ÷ peer; the arrow
/// says which way is better).
pub(crate) fn table(med: &Medians, kinds: &[Kind]) -> String {
    let mut out = String::new();
    let others: Vec<&Kind> = kinds.iter().filter(|k| k.key != "wsu").collect();
    let has_wsu = kinds.iter().any(|k| k.key == "wsu");
    let _ = write!(out, "| metric (median of runs) |");
    for k in kinds {
        let _ = write!(out, " {} |", k.title);
    }
    if has_wsu {
        for k in &others {
            let _ = write!(out, " wsu ÷ {} |", k.title);
        }
    }
    out.push('\n');
    let cols = kinds.len() + if has_wsu { others.len() } else { 0 };
    let _ = writeln!(out, "|---|{}", "---:|".repeat(cols));
    for r in ROWS {
        let keys: Vec<(String, String)> = if r.key.contains("{n}") {
            SIZES
                .iter()
                .map(|n| (r.key.replace("{n}", n), r.label.replace("{n}", n)))
                .collect()
        } else {
            vec![(r.key.to_owned(), r.label.to_owned())]
        };
        for (key, label) in keys {
            let vals: Vec<f64> = kinds.iter().map(|k| get(med, k.key, &key)).collect();
            if vals.iter().all(|v| !v.is_finite()) {
                continue;
            }
            let arrow = match r.better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            let _ = write!(out, "| {label} {arrow} |");
            for v in &vals {
                let _ = write!(out, " {} |", fmt(*v, r.decimals));
            }
            if has_wsu {
                let w = get(med, "wsu", &key);
                // Ratios of what rounds to zero at the row's precision say nothing.
                let shown = |v: f64| {
                    !fmt(v, r.decimals)
                        .trim_start_matches(['0', '.', '-'])
                        .is_empty()
                };
                for k in &others {
                    let o = get(med, k.key, &key);
                    let text = if shown(w) || shown(o) {
                        ratio(w, o)
                    } else {
                        "–".to_owned()
                    };
                    let _ = write!(out, " {text} |");
                }
            }
            out.push('\n');
        }
    }
    out
}

/// Check one target; a line of the report.
fn check(out: &mut String, what: &str, value: f64, ok: bool, detail: String) {
    let verdict = if !value.is_finite() {
        "n/a "
    } else if ok {
        "MET "
    } else {
        "MISS"
    };
    let _ = writeln!(out, "- {verdict} {what}: {detail}");
}

/// The runs behind the medians of the target metrics: every run's value per server, and wsu ÷
/// socketioxide and wsu ÷ raw run by run (the servers of one repetition run one after another,
/// so these pairs share the machine's state of the moment).
pub(crate) fn spread(samples: &Samples) -> String {
    let mut keys = Vec::new();
    for n in SIZES {
        for x in ["x1", "x10"] {
            keys.push((
                format!("bcast.{n}.{x}.deliveries_per_s"),
                format!("A broadcast to {n}, {x}: deliveries/s"),
                0,
            ));
            keys.push((
                format!("bcast.{n}.{x}.cpu_us_per_delivery"),
                format!("A broadcast to {n}, {x}: CPU µs/delivery"),
                2,
            ));
        }
    }
    for x in ["x1", "x8"] {
        keys.push((
            format!("ack.{x}.acks_per_s"),
            format!("B acks {x}: acks/s"),
            0,
        ));
        keys.push((
            format!("ack.{x}.rtt_p99_ms"),
            format!("B acks {x}: RTT p99 ms"),
            2,
        ));
    }
    keys.push(("accept.per_s".to_owned(), "D handshakes/s".to_owned(), 0));
    let runs = |server: &str, key: &str| -> Vec<f64> {
        samples
            .get(server)
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let list = |v: &[f64], decimals: usize| -> String {
        if v.is_empty() {
            return "–".to_owned();
        }
        v.iter()
            .map(|x| fmt(*x, decimals))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let paired = |a: &[f64], b: &[f64]| -> String {
        if a.is_empty() || a.len() != b.len() {
            return "–".to_owned();
        }
        a.iter()
            .zip(b)
            .map(|(x, y)| ratio(*x, *y))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let mut out = String::from(
        "| metric, run by run | wsu | socketioxide | node socket.io | raw tungstenite | wsu ÷ socketioxide | wsu ÷ raw |\n|---|---|---|---|---|---|---|\n",
    );
    for (key, label, decimals) in keys {
        let w = runs("wsu", &key);
        if w.is_empty() {
            continue;
        }
        let (sx, nd, rw) = (runs("sioxide", &key), runs("node", &key), runs("raw", &key));
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            list(&w, decimals),
            list(&sx, decimals),
            list(&nd, decimals),
            list(&rw, decimals),
            paired(&w, &sx),
            paired(&w, &rw),
        );
    }
    out
}

/// The targets of issue 6, checked on the medians.
pub(crate) fn targets(med: &Medians) -> String {
    let mut out = String::from("Targets (issue 6):\n");
    let w = |k: &str| get(med, "wsu", k);
    let p = |s: &str, k: &str| get(med, s, k);
    for n in SIZES {
        for x in ["x1", "x10"] {
            let key = format!("bcast.{n}.{x}.deliveries_per_s");
            if !w(&key).is_finite() {
                continue;
            }
            let (ws, sx, nd) = (w(&key), p("sioxide", &key), p("node", &key));
            check(
                &mut out,
                &format!("broadcast {n} {x} ≥ 1.3× socketioxide"),
                sx,
                ws >= 1.3 * sx,
                format!("{} vs {} = {}", fmt(ws, 0), fmt(sx, 0), ratio(ws, sx)),
            );
            check(
                &mut out,
                &format!("broadcast {n} {x} ≥ 3× node"),
                nd,
                ws >= 3.0 * nd,
                format!("{} vs {} = {}", fmt(ws, 0), fmt(nd, 0), ratio(ws, nd)),
            );
            let ck = format!("bcast.{n}.{x}.cpu_us_per_delivery");
            let (wc, rc) = (w(&ck), p("raw", &ck));
            check(
                &mut out,
                &format!("CPU/delivery {n} {x} within 1.2× raw"),
                rc,
                wc <= 1.2 * rc,
                format!("{:.3} vs {:.3} µs = {}", wc, rc, ratio(wc, rc)),
            );
        }
    }
    for x in ["x1", "x8"] {
        let key = format!("ack.{x}.acks_per_s");
        if !w(&key).is_finite() {
            continue;
        }
        let (wa, sa) = (w(&key), p("sioxide", &key));
        check(
            &mut out,
            &format!("acks/s {x} ≥ 1.5× socketioxide"),
            sa,
            wa >= 1.5 * sa,
            format!("{} vs {} = {}", fmt(wa, 0), fmt(sa, 0), ratio(wa, sa)),
        );
        let pk = format!("ack.{x}.rtt_p99_ms");
        let (wp, sp) = (w(&pk), p("sioxide", &pk));
        check(
            &mut out,
            &format!("ack RTT p99 {x} no worse than socketioxide"),
            sp,
            wp <= sp,
            format!("{wp:.3} vs {sp:.3} ms"),
        );
    }
    let idle = w("idle.10000.kib_per_conn");
    check(
        &mut out,
        "idle memory ≤ 12 KiB/conn at 10k",
        idle,
        idle <= 12.0,
        format!("{idle:.2} KiB/conn"),
    );
    let (wa, ra) = (w("accept.per_s"), p("raw", "accept.per_s"));
    check(
        &mut out,
        "accept rate ≥ 80% of raw",
        ra,
        wa >= 0.8 * ra,
        format!("{} vs {} = {}", fmt(wa, 0), fmt(ra, 0), ratio(wa, ra)),
    );
    let growth = w("churn.rss_growth_mib");
    check(
        &mut out,
        "no RSS growth in churn (≤ 1 MiB after warm-up)",
        growth,
        growth <= 1.0,
        format!(
            "{growth:+.2} MiB, slope {:+.0} KiB/min",
            w("churn.rss_slope_kib_per_min")
        ),
    );
    out
}
