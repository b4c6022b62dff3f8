//! `wsu-bench all`: every server side by side. For each plan and repetition, each server is
//! started fresh (pinned to core 0), the load generator runs the plan against it (pinned to
//! core 1) and reports its metrics; then the medians are tabulated with wsu's ratios to each
//! peer and to the raw reference, checked against the targets, saved, and plotted.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::procfs;
use crate::report;
use crate::settings::{PING_INTERVAL, PING_TIMEOUT};

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kind {
    /// Short name (command line, result keys).
    pub(crate) key: &'static str,
    /// Column title.
    pub(crate) title: &'static str,
    /// Protocol spoken by the generator.
    pub(crate) proto: &'static str,
}

pub(crate) const KINDS: [Kind; 4] = [
    Kind {
        key: "wsu",
        title: "wsu",
        proto: "wsu",
    },
    Kind {
        key: "sioxide",
        title: "socketioxide",
        proto: "sio",
    },
    Kind {
        key: "node",
        title: "node socket.io",
        proto: "sio",
    },
    Kind {
        key: "raw",
        title: "raw tungstenite",
        proto: "wsu",
    },
];

/// wsu with connection-state recovery on (`wsu-bench server wsu-history`, issue 15). Not one
/// of [`KINDS`]: `all` and `counts` run it only when `--only` names it.
pub(crate) const WSU_HISTORY: Kind = Kind {
    key: "wsu-history",
    title: "wsu, history on",
    proto: "wsu",
};

/// The servers `--only` picks (every one of [`KINDS`] without it; [`WSU_HISTORY`] only when
/// named), in the order of [`KINDS`], `wsu-history` after `wsu`.
pub(crate) fn selected(only: Option<&[String]>) -> Vec<Kind> {
    let named = |k: &Kind| only.is_none_or(|o| o.iter().any(|x| x == k.key));
    let mut kinds = Vec::new();
    for k in KINDS {
        if named(&k) {
            kinds.push(k);
        }
        if k.key == "wsu" && only.is_some_and(|o| o.iter().any(|x| x == WSU_HISTORY.key)) {
            kinds.push(WSU_HISTORY);
        }
    }
    kinds
}

/// Benchmark mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Smoke,
    Quick,
    Full,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }

    fn plans(self) -> &'static [&'static str] {
        match self {
            Mode::Smoke => &["smoke"],
            Mode::Quick => &["quick"],
            Mode::Full => &["full-a", "full-b", "full-c"],
        }
    }
}

/// Options of `all`.
pub(crate) struct Opts {
    pub(crate) mode: Mode,
    pub(crate) reps: Option<usize>,
    pub(crate) only: Option<Vec<String>>,
    pub(crate) plans: Option<Vec<String>>,
    pub(crate) out: Option<PathBuf>,
    pub(crate) wait_load: Option<f64>,
    pub(crate) plots: Option<bool>,
}

/// Results: server key → metric → values (one per repetition).
pub(crate) type Samples = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

pub(crate) fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this is a CI run: `CI` set to anything but "", "0" or "false" (`.ci/run` sets
/// `CI=true`), the rule of `.ci/lib.sh`. Then a server that cannot run fails the run instead of
/// being skipped.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Whether the node server can run: node present and its packages installed (`npm ci` from
/// the lock file when `node_modules` is missing).
pub(crate) fn node_ready() -> Result<(), String> {
    if !have("node") {
        return Err("node is not installed".to_owned());
    }
    let dir = bench_dir().join("node");
    if dir.join("node_modules/socket.io").is_dir() {
        return Ok(());
    }
    if !have("npm") {
        return Err("npm is not installed".to_owned());
    }
    eprintln!(
        "installing the node server's packages (npm ci in {})",
        dir.display()
    );
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("npm ci: {e}"))?;
    if !status.success() {
        return Err(format!("npm ci failed ({status})"));
    }
    Ok(())
}

/// `taskset -c <cpu>` in front of a command, when taskset exists and the machine has 2 cores.
pub(crate) fn pinned(cpu: usize, program: &Path, pin: bool) -> Command {
    if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(cpu.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(kind: Kind, pin: bool) -> Result<Running, String> {
    start_server_with(kind, &[], pin)
}

/// Start the server `kind` with `extra` arguments (`--redis URL`...), pinned to core 0 if
/// `pin`; wait until it listens.
pub(crate) fn start_server_with(kind: Kind, extra: &[&str], pin: bool) -> Result<Running, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = if kind.key == "node" {
        let mut c = pinned(0, Path::new("node"), pin);
        c.arg(bench_dir().join("node/server.js"))
            .env("PORT", "0")
            .env("PING_INTERVAL_MS", PING_INTERVAL.as_millis().to_string())
            .env("PING_TIMEOUT_MS", PING_TIMEOUT.as_millis().to_string())
            .env("NODE_ENV", "production");
        c
    } else {
        let mut c = pinned(0, &exe, pin);
        c.args(["server", kind.key, "--port", "0"]).args(extra);
        c
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the {} server: {e}", kind.title))?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let running = |port| Running { child, pid, port };
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => match line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
        {
            Some(port) => Ok(running(port)),
            None => Err(format!("{}: unexpected first line {line:?}", kind.title)),
        },
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            drop(running(0));
            Err(format!(
                "the {} server exited before listening (its error is above)",
                kind.title
            ))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            drop(running(0));
            Err(format!(
                "the {} server did not start within 20 s",
                kind.title
            ))
        }
    }
}

/// A run during which other processes used more than this share of a core (on average), or the
/// hypervisor took more than this share of a core (steal time), was disturbed: it is repeated.
const MAX_OTHER_CPU: f64 = 0.10;

/// Attempts of one run disturbed by other processes.
const MAX_ATTEMPTS: u32 = 4;

/// Run the generator with `plan` against a running server; its metrics, with
/// `other.cpu_share`: the CPU time used meanwhile by processes other than the server and the
/// generator, as a share of one core; `steal.cpu_share`: the steal time meanwhile, likewise.
fn run_plan(
    kind: Kind,
    server: &mut Running,
    plan: &str,
    pin: bool,
) -> Result<BTreeMap<String, f64>, String> {
    let busy0 = procfs::machine_busy_ns();
    let steal0 = procfs::machine_steal_ns();
    let server0 = procfs::cpu_ns(server.pid);
    let t0 = Instant::now();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = pinned(1, &exe, pin)
        .args([
            "gen",
            "--proto",
            kind.proto,
            "--addr",
            &format!("127.0.0.1:{}", server.port),
            "--pid",
            &server.pid.to_string(),
            "--plan",
            plan,
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run the generator: {e}"))?;
    let wall = t0.elapsed().as_secs_f64();
    let busy1 = procfs::machine_busy_ns();
    let steal1 = procfs::machine_steal_ns();
    let server1 = procfs::cpu_ns(server.pid);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("generator output unreadable ({e}): {line:?}"))?;
    let mut metrics = BTreeMap::new();
    if let Some(m) = v.get("metrics").and_then(|m| m.as_object()) {
        for (k, x) in m {
            if let Some(x) = x.as_f64() {
                metrics.insert(k.clone(), x);
            }
        }
    }
    if let (Some(b0), Some(b1), Some(s0), Some(s1), Some(gen_cpu)) = (
        busy0,
        busy1,
        server0,
        server1,
        metrics.get("generator.cpu_s").copied(),
    ) {
        let server_cpu = s1.saturating_sub(s0) as f64;
        let other = (b1.saturating_sub(b0) as f64 - server_cpu) / 1e9 - gen_cpu;
        metrics.insert("other.cpu_share".to_owned(), (other / wall).max(0.0));
    }
    if let (Some(a), Some(b)) = (steal0, steal1) {
        let steal = b.saturating_sub(a) as f64 / 1e9;
        metrics.insert("steal.cpu_share".to_owned(), steal / wall);
    }
    if let Ok(Some(status)) = server.child.try_wait() {
        return Err(format!(
            "the {} server exited during the run ({status})",
            kind.title
        ));
    }
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("{}: {e}", kind.title));
    }
    Ok(metrics)
}

/// Wait (polling every 30 s) until the 1-minute load average is below `max`.
fn wait_for_load(max: f64) {
    loop {
        let load = procfs::loadavg().unwrap_or(0.0);
        if load < max {
            return;
        }
        eprintln!("load {load:.2} ≥ {max}: waiting 30 s");
        std::thread::sleep(Duration::from_secs(30));
    }
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Medians: server key → metric → median.
pub(crate) type Medians = BTreeMap<String, BTreeMap<String, f64>>;

pub(crate) fn medians(samples: &Samples) -> Medians {
    samples
        .iter()
        .map(|(k, m)| {
            (
                k.clone(),
                m.iter()
                    .map(|(name, v)| (name.clone(), median(v)))
                    .collect(),
            )
        })
        .collect()
}

pub(crate) fn run(opts: Opts) -> Result<(), String> {
    let started = Instant::now();
    let mode = opts.mode;
    let reps = opts.reps.unwrap_or(if mode == Mode::Smoke { 1 } else { 3 });
    let pin = have("taskset") && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if !pin {
        eprintln!(
            "note: not pinning server and generator to separate cores (taskset missing or one core)"
        );
    }
    if let Some(max) = opts.wait_load {
        wait_for_load(max);
    }

    let load_at_start = procfs::loadavg().unwrap_or(f64::NAN);
    eprintln!(
        "wsu-bench {} mode, {reps} repetition(s), 1-minute load at start {load_at_start:.2}",
        mode.name()
    );

    let mut kinds = selected(opts.only.as_deref());
    let mut skipped = Vec::new();
    if kinds.iter().any(|k| k.key == "node")
        && let Err(why) = node_ready()
    {
        if in_ci() {
            return Err(format!(
                "node socket.io cannot run: {why}. CI is set: a CI run never skips a server \
                     (install node and npm; `npm ci` in bench/node), or run with CI unset to \
                     skip it locally"
            ));
        }
        eprintln!(
            "SKIPPED: node socket.io: {why}. THIS SERVER DOES NOT RUN; CI is not set, so the \
                 run goes on without it (with CI=true it fails)"
        );
        skipped.push(format!("node socket.io skipped: {why}"));
        kinds.retain(|k| k.key != "node");
    }
    if kinds.is_empty() {
        return Err("no server to run (--only names none that can run here)".to_owned());
    }
    let plans: Vec<String> = match &opts.plans {
        Some(p) => p.clone(),
        None => mode.plans().iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut samples: Samples = BTreeMap::new();
    let mut failures = Vec::new();
    let mut durations: BTreeMap<String, f64> = BTreeMap::new();
    let mut disturbed = 0u32;
    for plan in &plans {
        for rep in 0..reps {
            for &kind in &kinds {
                let t = Instant::now();
                let mut attempt = 0;
                let result = loop {
                    attempt += 1;
                    eprintln!(
                        "== {plan} #{} {} (load {:.2})",
                        rep + 1,
                        kind.title,
                        procfs::loadavg().unwrap_or(f64::NAN)
                    );
                    let result =
                        start_server(kind, pin).and_then(|mut s| run_plan(kind, &mut s, plan, pin));
                    let share = |key: &str| {
                        result
                            .as_ref()
                            .ok()
                            .and_then(|m| m.get(key).copied())
                            .unwrap_or(0.0)
                    };
                    let (other, steal) = (share("other.cpu_share"), share("steal.cpu_share"));
                    match other.max(steal) {
                        worst
                            if worst > MAX_OTHER_CPU
                                && attempt < MAX_ATTEMPTS
                                && mode != Mode::Smoke =>
                        {
                            eprintln!(
                                "   disturbed: other processes used {:.0}% of a core, the \
                                 hypervisor took {:.0}%; repeating",
                                other * 100.0,
                                steal * 100.0
                            );
                            disturbed += 1;
                            if let Some(max) = opts.wait_load {
                                wait_for_load(max);
                            }
                        }
                        _ => break result,
                    }
                };
                *durations.entry(plan.clone()).or_default() += t.elapsed().as_secs_f64();
                match result {
                    Ok(m) => {
                        let entry = samples.entry(kind.key.to_owned()).or_default();
                        for (k, v) in m {
                            entry.entry(k).or_default().push(v);
                        }
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e}");
                        failures.push(format!("{plan} #{}: {e}", rep + 1));
                    }
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let med = medians(&samples);
    let present: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|k| samples.contains_key(k.key))
        .collect();
    let table = report::table(&med, &present);
    let targets = if mode == Mode::Smoke {
        "(targets are checked in the quick and full modes; smoke runs are too small)\n".to_owned()
    } else {
        report::targets(&med)
    };
    println!("\n{table}\n{targets}");
    if mode != Mode::Smoke && reps > 1 {
        println!("Run by run:\n\n{}", report::spread(&samples));
    }
    for s in &skipped {
        println!("{s}");
    }
    println!(
        "mode {}: {reps} repetition(s), {:.0} s in all; 1-minute load at start {load_at_start:.2}; \
         {disturbed} run(s) repeated (other processes or the hypervisor took more than {:.0}% of a core)",
        mode.name(),
        elapsed,
        MAX_OTHER_CPU * 100.0
    );

    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| bench_dir().join("../target/wsu-bench"));
    let _ = std::fs::create_dir_all(&out_dir);
    let json = serde_json::json!({
        "mode": mode.name(),
        "reps": reps,
        "load_at_start": load_at_start,
        "seconds": elapsed,
        "plan_seconds": durations,
        "disturbed_runs_repeated": disturbed,
        "servers": present.iter().map(|k| k.key).collect::<Vec<_>>(),
        "samples": samples,
        "medians": med,
        "failures": failures,
        "skipped": skipped,
    });
    let json_path = out_dir.join(format!("results-{}.json", mode.name()));
    let md_path = out_dir.join(format!("table-{}.md", mode.name()));
    let _ = std::fs::write(&json_path, format!("{json:#}\n"));
    let _ = std::fs::write(&md_path, format!("{table}\n{targets}\n"));
    eprintln!("results: {} and {}", json_path.display(), md_path.display());
    if opts.plots.unwrap_or(mode == Mode::Full) {
        match crate::plot::all(&med, &present, &bench_dir()) {
            Ok(files) => {
                for f in files {
                    eprintln!("plot: {}", f.display());
                }
            }
            Err(e) => eprintln!("no plots: {e}"),
        }
    }
    if !failures.is_empty() {
        println!("{} run(s) failed:", failures.len());
        for f in &failures {
            println!("  {f}");
        }
        return Err(format!("{} run(s) failed", failures.len()));
    }
    Ok(())
}
