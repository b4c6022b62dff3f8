//! `wsu-bench cluster`: broadcast across a two-node cluster. For each setup (wsu on Redis, wsu
//! on NATS, socketioxide on Redis with socketioxide-redis) and repetition: a fresh broker child
//! process on a free port, two server processes joined through it, and the generator's
//! `cluster` plan: a room of M members dialed to the two nodes in turn (half on each), a
//! publisher on the first node, closed-loop broadcast rounds of 1 and of 10 messages (each
//! round waits until every member on both nodes got every message). Reported: deliveries/s,
//! the part delivered on the second node (it crossed the broker), and the CPU time (user +
//! system, `/proc/<pid>/stat`) of both servers over the window per delivery; the broker's CPU
//! apart. Nothing is pinned: two servers, a broker and the generator share two cores.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::orchestrate::{
    KINDS, Kind, Medians, Samples, bench_dir, have, in_ci, median, start_server_with,
};
use crate::procfs;

/// A broker the servers join through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokerKind {
    Redis,
    Nats,
}

impl BrokerKind {
    fn name(self) -> &'static str {
        match self {
            BrokerKind::Redis => "redis",
            BrokerKind::Nats => "nats",
        }
    }

    /// The server binary: the Debian path, else from `PATH`.
    fn program(self) -> Option<PathBuf> {
        let (path, name) = match self {
            BrokerKind::Redis => ("/usr/bin/redis-server", "redis-server"),
            BrokerKind::Nats => ("/usr/sbin/nats-server", "nats-server"),
        };
        if Path::new(path).is_file() {
            Some(path.into())
        } else if have(name) {
            Some(name.into())
        } else {
            None
        }
    }
}

/// One setup: a server kind on a broker.
#[derive(Debug, Clone, Copy)]
struct Setup {
    key: &'static str,
    kind: &'static str,
    broker: BrokerKind,
}

const SETUPS: [Setup; 3] = [
    Setup {
        key: "wsu-redis",
        kind: "wsu",
        broker: BrokerKind::Redis,
    },
    Setup {
        key: "wsu-nats",
        kind: "wsu",
        broker: BrokerKind::Nats,
    },
    Setup {
        key: "sioxide-redis",
        kind: "sioxide",
        broker: BrokerKind::Redis,
    },
];

/// The setup the ratios divide by.
const BASELINE: &str = "sioxide-redis";

/// Options of `cluster`.
pub(crate) struct Opts {
    pub(crate) smoke: bool,
    pub(crate) engine: Option<BrokerKind>,
    pub(crate) only: Option<Vec<String>>,
    pub(crate) members: Option<usize>,
    pub(crate) reps: Option<usize>,
    pub(crate) ms: Option<u64>,
    pub(crate) out: Option<PathBuf>,
}

/// A broker child process, killed when dropped.
struct Broker {
    child: Child,
    pid: u32,
    url: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free right now on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Start a broker on a free port and wait until it accepts connections.
fn start_broker(kind: BrokerKind, program: &Path) -> Result<Broker, String> {
    let port = free_port()?;
    let p = port.to_string();
    let mut cmd = Command::new(program);
    match kind {
        BrokerKind::Redis => cmd.args([
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]),
        BrokerKind::Nats => cmd.args(["-a", "127.0.0.1", "-p", &p]),
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let url = match kind {
        BrokerKind::Redis => format!("redis://127.0.0.1:{port}"),
        BrokerKind::Nats => format!("nats://127.0.0.1:{port}"),
    };
    let mut broker = Broker {
        pid: child.id(),
        child,
        url,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(status)) = broker.child.try_wait() {
            return Err(format!("{} exited at start ({status})", kind.name()));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(broker);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "{} did not accept connections within 10 s",
        kind.name()
    ))
}

fn kind_of(key: &str) -> Result<Kind, String> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.key == key)
        .ok_or_else(|| format!("no server kind {key}"))
}

/// One run of `setup`: broker, two nodes, the generator; its metrics.
fn run_once(
    setup: Setup,
    program: &Path,
    plan: &str,
    gen_timeout: Duration,
) -> Result<BTreeMap<String, f64>, String> {
    let kind = kind_of(setup.kind)?;
    let broker = start_broker(setup.broker, program)?;
    let flag = match setup.broker {
        BrokerKind::Redis => "--redis",
        BrokerKind::Nats => "--nats",
    };
    let start = |node: &str| {
        start_server_with(kind, &[flag, &broker.url], false)
            .map_err(|e| format!("{} node {node}: {e}", setup.key))
    };
    let mut a = start("A")?;
    let mut b = start("B")?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let busy0 = procfs::machine_busy_ns();
    let steal0 = procfs::machine_steal_ns();
    let t0 = Instant::now();
    let mut child = Command::new(&exe)
        .args([
            "gen",
            "--proto",
            kind.proto,
            "--addr",
            &format!("127.0.0.1:{}", a.port),
            "--pid",
            &a.pid.to_string(),
            "--addr2",
            &format!("127.0.0.1:{}", b.port),
            "--pid2",
            &b.pid.to_string(),
            "--broker-pid",
            &broker.pid.to_string(),
            "--plan",
            plan,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run the generator: {e}"))?;
    // The generator's own limits are per round; this one bounds the whole run.
    let stdout = child.stdout.take().ok_or("no generator stdout")?;
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let mut stdout = stdout;
        let _ = stdout.read_to_string(&mut s);
        s
    });
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        if t0.elapsed() > gen_timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{}: the generator did not finish within {} s",
                setup.key,
                gen_timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = reader.join().unwrap_or_default();
    let wall = t0.elapsed().as_secs_f64();
    let (busy1, steal1) = (procfs::machine_busy_ns(), procfs::machine_steal_ns());
    let line = text.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("{}: generator output unreadable ({e}): {line:?}", setup.key))?;
    let mut metrics: BTreeMap<String, f64> = v
        .get("metrics")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, x)| x.as_f64().map(|x| (k.clone(), x)))
                .collect()
        })
        .unwrap_or_default();
    if let (Some(b0), Some(b1)) = (busy0, busy1) {
        // Everything but the servers, the broker and the generator (whose times are not known
        // over exactly this span: an upper bound of the others' share).
        let ours: f64 = [a.pid, b.pid, broker.pid]
            .iter()
            .filter_map(|&p| procfs::cpu_ns(p))
            .map(|ns| ns as f64 / 1e9)
            .sum::<f64>()
            + metrics.get("generator.cpu_s").copied().unwrap_or(0.0);
        let other = b1.saturating_sub(b0) as f64 / 1e9 - ours;
        metrics.insert("other.cpu_share".to_owned(), (other / wall).max(0.0));
    }
    if let (Some(s0), Some(s1)) = (steal0, steal1) {
        metrics.insert(
            "steal.cpu_share".to_owned(),
            s1.saturating_sub(s0) as f64 / 1e9 / wall,
        );
    }
    for (node, s) in [("A", &mut a), ("B", &mut b)] {
        if let Ok(Some(status)) = s.child.try_wait() {
            return Err(format!(
                "{} node {node} exited during the run ({status})",
                setup.key
            ));
        }
    }
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("{}: {e}", setup.key));
    }
    Ok(metrics)
}

/// Rows of the table: (metric, title).
const ROWS: [(&str, &str); 10] = [
    ("cluster.x1.deliveries_per_s", "deliveries/s, 1 msg/round"),
    (
        "cluster.x1.cross_deliveries_per_s",
        "  of which cross-node (node B)",
    ),
    (
        "cluster.x1.cpu_us_per_delivery",
        "servers' CPU µs/delivery, 1 msg/round",
    ),
    (
        "cluster.x1.broker_cpu_us_per_delivery",
        "broker CPU µs/delivery, 1 msg/round",
    ),
    ("cluster.x1.round_p50_ms", "round p50 ms, 1 msg/round"),
    (
        "cluster.x10.deliveries_per_s",
        "deliveries/s, 10 msgs/round",
    ),
    (
        "cluster.x10.cross_deliveries_per_s",
        "  of which cross-node (node B)",
    ),
    (
        "cluster.x10.cpu_us_per_delivery",
        "servers' CPU µs/delivery, 10 msgs/round",
    ),
    (
        "cluster.x10.broker_cpu_us_per_delivery",
        "broker CPU µs/delivery, 10 msgs/round",
    ),
    ("cluster.x10.round_p50_ms", "round p50 ms, 10 msgs/round"),
];

fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "–".to_owned()
    } else if x >= 1000.0 {
        let n = x.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The Markdown table of the medians, with the ratios of each wsu setup to socketioxide-redis.
fn table(med: &Medians, present: &[&'static str], members: usize, reps: usize) -> String {
    let get = |k: &str, m: &str| {
        med.get(k)
            .and_then(|x| x.get(m))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let ratios: Vec<&str> = present
        .iter()
        .copied()
        .filter(|k| *k != BASELINE && present.contains(&BASELINE))
        .collect();
    let mut out = format!(
        "Cluster of two nodes, one room of {members} members (half on each), publisher on node A; \
         medians of {reps} run(s)\n\n| |"
    );
    for k in present {
        out.push_str(&format!(" {k} |"));
    }
    for k in &ratios {
        out.push_str(&format!(" {k} ÷ {BASELINE} |"));
    }
    out.push_str("\n|---|");
    for _ in 0..present.len() + ratios.len() {
        out.push_str("---:|");
    }
    out.push('\n');
    for (m, title) in ROWS {
        out.push_str(&format!("| {title} |"));
        for k in present {
            out.push_str(&format!(" {} |", fmt(get(k, m))));
        }
        for k in &ratios {
            let r = get(k, m) / get(BASELINE, m);
            if r.is_finite() {
                out.push_str(&format!(" {r:.2}× |"));
            } else {
                out.push_str(" – |");
            }
        }
        out.push('\n');
    }
    out
}

/// The goal, wsu-redis against socketioxide-redis: ≥ 1.5× the deliveries/s at no more
/// CPU per delivery.
fn goal(med: &Medians) -> String {
    let get = |k: &str, m: &str| {
        med.get(k)
            .and_then(|x| x.get(m))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let mut out = String::from(
        "Goal: wsu-redis ≥ 1.5× sioxide-redis deliveries/s at ≤ its CPU per delivery\n",
    );
    for (x, label) in [("x1", "1 msg/round"), ("x10", "10 msgs/round")] {
        let d = get("wsu-redis", &format!("cluster.{x}.deliveries_per_s"))
            / get(BASELINE, &format!("cluster.{x}.deliveries_per_s"));
        let c = get("wsu-redis", &format!("cluster.{x}.cpu_us_per_delivery"))
            / get(BASELINE, &format!("cluster.{x}.cpu_us_per_delivery"));
        if !(d.is_finite() && c.is_finite()) {
            out.push_str(&format!("  {label}: not measured\n"));
            continue;
        }
        let met = d >= 1.5 && c <= 1.0;
        out.push_str(&format!(
            "  {label}: deliveries/s {d:.2}× ({}), CPU/delivery {c:.2}× ({}): {}\n",
            if d >= 1.5 { "≥ 1.5" } else { "< 1.5" },
            if c <= 1.0 { "≤ 1" } else { "> 1" },
            if met { "MET" } else { "NOT MET" }
        ));
    }
    out
}

pub(crate) fn run(opts: Opts) -> Result<(), String> {
    let started = Instant::now();
    let smoke = opts.smoke;
    let mode = if smoke { "smoke" } else { "default" };
    let members = opts.members.unwrap_or(if smoke { 100 } else { 1000 });
    let reps = opts.reps.unwrap_or(if smoke { 1 } else { 3 });
    let ms = opts.ms.unwrap_or(if smoke { 1000 } else { 2000 });
    if members < 2 {
        return Err("--members must be at least 2 (one on each node)".to_owned());
    }
    let plan = format!("cluster:members={members},ms={ms}");
    let load_at_start = procfs::loadavg().unwrap_or(f64::NAN);
    eprintln!(
        "wsu-bench cluster, {mode} mode: {members} members, {reps} repetition(s), windows of \
         ≥ {ms} ms; 1-minute load at start {load_at_start:.2}"
    );
    let mut setups: Vec<Setup> = SETUPS
        .iter()
        .copied()
        .filter(|s| opts.engine.is_none_or(|e| e == s.broker))
        .filter(|s| {
            opts.only
                .as_ref()
                .is_none_or(|o| o.iter().any(|x| x == s.kind || x == s.key))
        })
        .collect();
    if setups.is_empty() {
        return Err(
            "no setup to run (--engine nats runs wsu only: socketioxide has no NATS adapter)"
                .to_owned(),
        );
    }
    let mut skipped = Vec::new();
    let mut programs: BTreeMap<&'static str, PathBuf> = BTreeMap::new();
    for broker in [BrokerKind::Redis, BrokerKind::Nats] {
        if !setups.iter().any(|s| s.broker == broker) {
            continue;
        }
        match broker.program() {
            Some(p) => {
                programs.insert(broker.name(), p);
            }
            None => {
                let why = format!("{}-server is not installed", broker.name());
                if in_ci() {
                    return Err(format!(
                        "{why}. CI is set: a CI run never skips a setup (install it), or run \
                         with CI unset to skip it locally"
                    ));
                }
                let names: Vec<&str> = setups
                    .iter()
                    .filter(|s| s.broker == broker)
                    .map(|s| s.key)
                    .collect();
                eprintln!(
                    "SKIPPED: {}: {why}. THESE SETUPS DO NOT RUN; CI is not set, so the run goes \
                     on without them (with CI=true it fails)",
                    names.join(", ")
                );
                skipped.push(format!("{} skipped: {why}", names.join(", ")));
                setups.retain(|s| s.broker != broker);
            }
        }
    }
    if setups.is_empty() {
        for s in &skipped {
            println!("SKIPPED: {s}");
        }
        return Ok(());
    }
    // Setup, dialing and the two windows, with a wide margin (a round may take up to 10 s).
    let gen_timeout = Duration::from_secs(60 + 2 * (ms / 1000) + members as u64 / 100);
    let mut samples: Samples = BTreeMap::new();
    let mut failures = Vec::new();
    for rep in 0..reps {
        for &setup in &setups {
            eprintln!(
                "== cluster #{} {} (load {:.2})",
                rep + 1,
                setup.key,
                procfs::loadavg().unwrap_or(f64::NAN)
            );
            let program = &programs[setup.broker.name()];
            match run_once(setup, program, &plan, gen_timeout) {
                Ok(m) => {
                    let entry = samples.entry(setup.key.to_owned()).or_default();
                    for (k, v) in m {
                        entry.entry(k).or_default().push(v);
                    }
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    failures.push(format!("#{}: {e}", rep + 1));
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let med: Medians = samples
        .iter()
        .map(|(k, m)| {
            (
                k.clone(),
                m.iter().map(|(n, v)| (n.clone(), median(v))).collect(),
            )
        })
        .collect();
    let present: Vec<&'static str> = setups
        .iter()
        .map(|s| s.key)
        .filter(|k| samples.contains_key(*k))
        .collect();
    let table = table(&med, &present, members, reps);
    let goal = goal(&med);
    println!("\n{table}\n{goal}");
    if reps > 1 {
        println!("Run by run:\n");
        for (k, m) in &samples {
            for key in [
                "cluster.x1.deliveries_per_s",
                "cluster.x1.cpu_us_per_delivery",
                "cluster.x10.deliveries_per_s",
                "cluster.x10.cpu_us_per_delivery",
                "steal.cpu_share",
                "other.cpu_share",
            ] {
                if let Some(v) = m.get(key) {
                    let v: Vec<String> = v.iter().map(|x| fmt(*x)).collect();
                    println!("  {k} {key}: {}", v.join(", "));
                }
            }
        }
        println!();
    }
    for s in &skipped {
        println!("SKIPPED: {s}");
    }
    println!(
        "cluster {mode}: {reps} repetition(s), {elapsed:.0} s in all; 1-minute load at start \
         {load_at_start:.2}; nothing pinned (two servers, the broker and the generator share the cores)"
    );
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| bench_dir().join("../target/wsu-bench"));
    let _ = std::fs::create_dir_all(&out_dir);
    let json = serde_json::json!({
        "mode": mode,
        "members": members,
        "reps": reps,
        "window_ms": ms,
        "load_at_start": load_at_start,
        "seconds": elapsed,
        "setups": present,
        "samples": samples,
        "medians": med,
        "failures": failures,
        "skipped": skipped,
    });
    let json_path = out_dir.join(format!("cluster-{mode}.json"));
    let md_path = out_dir.join(format!("cluster-{mode}.md"));
    let _ = std::fs::write(&json_path, format!("{json:#}\n"));
    let _ = std::fs::write(&md_path, format!("{table}\n{goal}"));
    eprintln!("results: {} and {}", json_path.display(), md_path.display());
    if !failures.is_empty() {
        println!("{} run(s) failed:", failures.len());
        for f in &failures {
            println!("  {f}");
        }
        return Err(format!("{} run(s) failed", failures.len()));
    }
    Ok(())
}
