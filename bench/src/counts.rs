//! `wsu-bench counts`: deterministic figures beside the wall-clock ones. User-space
//! instructions (callgrind) and system calls (perf's syscall tracepoints, or `strace -c -f`)
//! of each server per broadcast delivery and per ack, over a fixed amount of work done in lock
//! step (see [`crate::load::counts`]).
//!
//! Each server is started on its own under one counter at a time, five times: a base run
//! (connections, joins, some rounds and acks) and four runs each with more of one kind of
//! work (broadcast rounds of 1 message, of 10, acks one at a time, 8 at a time). The difference between a run and the base, divided by the extra work, is the cost of
//! one unit of that work, with startup, connection setup and everything else the runs share
//! cancelled out. The heartbeat is stretched to an hour, so that nothing in a run depends on
//! how long it takes; the server is stopped while every connection is still open.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::load::counts::Work;
use crate::orchestrate::{Kind, bench_dir, have, node_ready, pinned, selected};
use crate::procfs;
use crate::settings::Heartbeat;

/// What counts system calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SysCounter {
    /// `perf stat` on the kernel's syscall tracepoints (`raw_syscalls:sys_enter`, and
    /// `syscalls:sys_enter_<name>` for the names of [`NAMED_SYSCALLS`]): counted in the kernel,
    /// at full speed, every thread.
    Perf,
    /// `strace -c -f`: every call by name, with its errors, but each call stops the server
    /// twice (harmless to the counts, the work being in lock step).
    Strace,
}

impl SysCounter {
    fn name(self) -> &'static str {
        match self {
            SysCounter::Perf => "perf",
            SysCounter::Strace => "strace",
        }
    }

    /// Parse `perf` or `strace`.
    pub(crate) fn parse(s: &str) -> Result<SysCounter, String> {
        match s {
            "perf" => Ok(SysCounter::Perf),
            "strace" => Ok(SysCounter::Strace),
            other => Err(format!("unknown syscall counter `{other}` (perf, strace)")),
        }
    }
}

/// The system calls `perf` counts by name (the total counts them all; the rest are `other`).
/// Each tracepoint costs perf about 35 ms to open: these are the calls the servers make per
/// delivery or ack (tokio: `recvfrom`, `sendto`, `epoll_wait`; node: `read`, `writev`,
/// `epoll_pwait`, and `futex` and the `mmap` family for its garbage collector).
const NAMED_SYSCALLS: [&str; 14] = [
    "read",
    "write",
    "readv",
    "writev",
    "recvfrom",
    "sendto",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "futex",
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
];

/// Valgrind counts every iteration of a `rep`-prefixed string instruction as one instruction.
/// glibc's `memset` and `memcpy` switch to `rep stosb` / `rep movsb` from 2 KiB / 4 KiB on, and
/// a 4 KiB `memset` (tungstenite clears its 4 KiB read buffer before every read attempt) then
/// counts 4,100 instructions where its vector loop, which costs about the same time, counts 230.
/// These thresholds keep glibc on its vector loops at every size, so that the counts follow the
/// CPU cost; set for every counter, so that every run runs the same code.
pub(crate) const GLIBC_TUNABLES: &str = "glibc.cpu.x86_rep_stosb_threshold=1099511627776:\
                                         glibc.cpu.x86_rep_movsb_threshold=1099511627776";

/// Options of `counts`.
pub(crate) struct Opts {
    /// A few seconds per server: checks that the pipeline works (CI).
    pub(crate) smoke: bool,
    /// Measure everything this many times (to show that the figures repeat).
    pub(crate) reps: usize,
    /// Servers (keys of `orchestrate::KINDS`, and `wsu-history`).
    pub(crate) only: Option<Vec<String>>,
    /// The system call counter (default: perf when its tracepoints work, else strace).
    pub(crate) syscalls: Option<SysCounter>,
    /// Skip one of the counters: `callgrind` or `syscalls`.
    pub(crate) skip: Option<String>,
    /// Size overrides.
    pub(crate) members: Option<usize>,
    pub(crate) rounds: Option<u64>,
    pub(crate) acks: Option<u64>,
    /// Functions listed per table.
    pub(crate) top: usize,
    pub(crate) out: Option<PathBuf>,
}

/// The work of the base run and what each other run adds.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    base: Work,
    more_rounds: u64,
    more_rounds10: u64,
    more_acks: u64,
    more_acks8: u64,
}

impl Sizes {
    fn new(opts: &Opts) -> Sizes {
        let mut s = if opts.smoke {
            Sizes {
                base: Work {
                    members: 20,
                    rounds: 2,
                    rounds10: 1,
                    acks: 20,
                    acks8: 3,
                    clients: 5,
                },
                more_rounds: 4,
                more_rounds10: 2,
                more_acks: 40,
                more_acks8: 5,
            }
        } else {
            Sizes {
                base: Work {
                    members: 1000,
                    rounds: 10,
                    rounds10: 4,
                    acks: 1000,
                    acks8: 125,
                    clients: 10,
                },
                more_rounds: 20,
                more_rounds10: 8,
                more_acks: 4000,
                more_acks8: 500,
            }
        };
        if let Some(m) = opts.members {
            s.base.members = m.max(1);
            s.base.clients = s.base.clients.min(s.base.members);
        }
        if let Some(r) = opts.rounds {
            s.more_rounds = r.max(1);
            s.base.rounds = (r / 2).max(1);
            s.more_rounds10 = (r * 2 / 5).max(1);
            s.base.rounds10 = (r / 5).max(1);
        }
        if let Some(a) = opts.acks {
            s.more_acks = a.max(1);
            s.base.acks = (a / 2).max(1);
            s.more_acks8 = (a / 8).max(1);
            s.base.acks8 = (a / 16).max(1);
        }
        s
    }

    fn work(&self, run: Run) -> Work {
        let mut w = self.base;
        match run {
            Run::Base => {}
            Run::Rounds => w.rounds += self.more_rounds,
            Run::Rounds10 => w.rounds10 += self.more_rounds10,
            Run::Acks => w.acks += self.more_acks,
            Run::Acks8 => w.acks8 += self.more_acks8,
        }
        w
    }

    /// Units of work `run` adds to the base: deliveries, or acks.
    fn units(&self, run: Run) -> f64 {
        let m = self.base.members as f64;
        match run {
            Run::Base => 0.0,
            Run::Rounds => self.more_rounds as f64 * m,
            Run::Rounds10 => self.more_rounds10 as f64 * m * 10.0,
            Run::Acks => self.more_acks as f64,
            Run::Acks8 => self.more_acks8 as f64 * 8.0,
        }
    }
}

/// The runs of a server under a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Run {
    Base,
    Rounds,
    Rounds10,
    Acks,
    Acks8,
}

const RUNS: [Run; 5] = [Run::Base, Run::Rounds, Run::Rounds10, Run::Acks, Run::Acks8];

/// The runs that add work to the base.
const MORE: [Run; 4] = [Run::Rounds, Run::Rounds10, Run::Acks, Run::Acks8];

impl Run {
    fn name(self) -> &'static str {
        match self {
            Run::Base => "base",
            Run::Rounds => "bcast1",
            Run::Rounds10 => "bcast10",
            Run::Acks => "acks1",
            Run::Acks8 => "acks8",
        }
    }

    /// What one unit of the run's extra work is.
    fn unit(self) -> &'static str {
        match self {
            Run::Base => "run",
            Run::Rounds => "delivery (1 msg/round)",
            Run::Rounds10 => "delivery (10 msgs/round)",
            Run::Acks => "ack (1 per write)",
            Run::Acks8 => "ack (8 per write)",
        }
    }
}

/// What a counter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    Callgrind,
    Syscalls(SysCounter),
}

/// What one run counted.
#[derive(Debug, Clone)]
struct Counted {
    /// Instructions, or system calls.
    total: f64,
    /// System calls by name (empty for callgrind).
    by_name: BTreeMap<String, f64>,
    /// The counter's output file.
    file: PathBuf,
    seconds: f64,
}

/// Kill a process (by id) that is still running when this is dropped.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal(pid, "KILL");
        }
    }
}

/// A child process, killed if still running and reaped, when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Lines of a child's stdout, read by a thread.
fn lines_of(child: &mut Child) -> Result<mpsc::Receiver<String>, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Wait for `child` to exit, up to `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Attempts of a run that fails.
const MAX_ATTEMPTS: u32 = 3;

/// The longest a run may take (node under callgrind, full sizes, is the slowest: minutes).
fn run_timeout(smoke: bool) -> Duration {
    Duration::from_secs(if smoke { 300 } else { 3600 })
}

/// The command that starts `kind` under `counter`, writing the counter's output to `file`.
fn command(
    kind: Kind,
    counter: Counter,
    file: &Path,
    pin: bool,
    named: &[&str],
) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let hb = Heartbeat::SILENT;
    let (interval, timeout) = (hb.interval.as_millis(), hb.timeout.as_millis());
    let mut server: Vec<String> = if kind.key == "node" {
        vec![
            "node".to_owned(),
            bench_dir().join("node/server.js").display().to_string(),
        ]
    } else {
        vec![
            exe.display().to_string(),
            "server".to_owned(),
            kind.key.to_owned(),
            "--port".to_owned(),
            "0".to_owned(),
            "--ping-interval-ms".to_owned(),
            interval.to_string(),
            "--ping-timeout-ms".to_owned(),
            timeout.to_string(),
        ]
    };
    let mut args: Vec<String> = match counter {
        Counter::Callgrind => {
            let mut a = vec![
                "--tool=callgrind".to_owned(),
                format!("--callgrind-out-file={}", file.display()),
                format!("--log-file={}.log", file.display()),
            ];
            if kind.key == "node" {
                // V8 writes machine code at run time (into anonymous memory, which the default
                // `all-non-file` already checks; `all` checks everything).
                a.push("--smc-check=all".to_owned());
            }
            a
        }
        Counter::Syscalls(SysCounter::Perf) => {
            let mut a = vec![
                "stat".to_owned(),
                "-x,".to_owned(),
                "-o".to_owned(),
                file.display().to_string(),
                "-e".to_owned(),
                "raw_syscalls:sys_enter".to_owned(),
            ];
            for n in named {
                a.push("-e".to_owned());
                a.push(format!("syscalls:sys_enter_{n}"));
            }
            a.push("--".to_owned());
            a
        }
        Counter::Syscalls(SysCounter::Strace) => vec![
            "-f".to_owned(),
            "-c".to_owned(),
            "-o".to_owned(),
            file.display().to_string(),
            "--".to_owned(),
        ],
    };
    args.append(&mut server);
    let program = match counter {
        Counter::Callgrind => "valgrind",
        Counter::Syscalls(SysCounter::Perf) => "perf",
        Counter::Syscalls(SysCounter::Strace) => "strace",
    };
    let mut cmd = pinned(0, Path::new(program), pin);
    cmd.args(args)
        .env("PORT", "0")
        .env("PING_INTERVAL_MS", interval.to_string())
        .env("PING_TIMEOUT_MS", timeout.to_string())
        .env("NODE_ENV", "production")
        .env("GLIBC_TUNABLES", GLIBC_TUNABLES);
    Ok(cmd)
}

/// Start `kind` under `counter`, run `work` against it, stop it, and read what was counted.
fn measure(
    kind: Kind,
    counter: Counter,
    work: &Work,
    file: &Path,
    pin: bool,
    named: &[&str],
    timeout: Duration,
) -> Result<Counted, String> {
    let t0 = Instant::now();
    let _ = std::fs::remove_file(file);
    // The counter's and the server's messages (perf's "Terminated" when the server is stopped).
    let stderr_path = PathBuf::from(format!("{}.stderr", file.display()));
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| format!("{}: {e}", stderr_path.display()))?;
    let tail = || {
        let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    let mut tool = Reaped(
        command(kind, counter, file, pin, named)?
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kind.title))?,
    );
    let out = lines_of(&mut tool.0)?;
    let line = out
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| format!("{} did not start within 120 s: {}", kind.title, tail()))?;
    let port: u16 = line
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("{}: unexpected first line {line:?}", kind.title))?;
    // Keep draining the server's stdout.
    std::thread::spawn(move || for _ in out {});
    // Under valgrind the server is the process started; perf and strace start it as a child.
    let pid = match counter {
        Counter::Callgrind => tool.0.id(),
        Counter::Syscalls(_) => {
            let t = Instant::now();
            loop {
                if let Some(&p) = procfs::children(tool.0.id()).first() {
                    break p;
                }
                if t.elapsed() > Duration::from_secs(10) {
                    return Err(format!(
                        "{}: no server process under {counter:?}",
                        kind.title
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    let _server_guard = KillOnDrop(Some(pid));

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut generator = Reaped(
        pinned(1, &exe, pin)
            .args([
                "gen",
                "--proto",
                kind.proto,
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--pid",
                &pid.to_string(),
                "--plan",
                &work.plan(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run the generator: {e}"))?,
    );
    let gen_out = lines_of(&mut generator.0)?;
    let mut last = String::new();
    let counted = loop {
        match gen_out.recv_timeout(timeout.saturating_sub(t0.elapsed())) {
            Ok(l) if l == "counted" => break true,
            Ok(l) => last = l,
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "{}: the work was not done within {} s",
                    kind.title,
                    timeout.as_secs()
                ));
            }
        }
    };
    if !counted {
        let _ = generator.0.wait();
        let why = serde_json::from_str::<serde_json::Value>(&last)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(last);
        return Err(format!(
            "{}: the generator failed: {why}\n{}",
            kind.title,
            tail()
        ));
    }
    // Stop the server with every connection open; its counter writes its output as it exits.
    signal(pid, "TERM");
    if !wait_exit(&mut tool.0, Duration::from_secs(120)) {
        return Err(format!(
            "{}: did not exit within 120 s of SIGTERM",
            kind.title
        ));
    }
    drop(generator.0.stdin.take());
    for l in gen_out.iter() {
        last = l;
    }
    let _ = generator.0.wait();
    let v: serde_json::Value = serde_json::from_str(&last)
        .map_err(|e| format!("generator output unreadable ({e}): {last:?}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("{}: {e}", kind.title));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: no output from {counter:?}: {e}", kind.title))?;
    let (total, by_name) = match counter {
        Counter::Callgrind => (callgrind_total(&text)?, BTreeMap::new()),
        Counter::Syscalls(SysCounter::Perf) => perf_counts(&text)?,
        Counter::Syscalls(SysCounter::Strace) => strace_counts(&text)?,
    };
    Ok(Counted {
        total,
        by_name,
        file: file.to_owned(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The instructions a callgrind output counted (its `totals:` line, or `summary:`).
fn callgrind_total(text: &str) -> Result<f64, String> {
    let find = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    find("totals:")
        .or_else(|| find("summary:"))
        .ok_or_else(|| "callgrind output without totals".to_owned())
}

/// `perf stat -x,` output: the total (`raw_syscalls:sys_enter`) and the named counts.
fn perf_counts(text: &str) -> Result<(f64, BTreeMap<String, f64>), String> {
    let mut total = None;
    let mut by_name = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let (Some(count), Some(event)) = (f.first(), f.get(2)) else {
            continue;
        };
        let n: f64 = count
            .parse()
            .map_err(|_| format!("perf could not count {event}: {count}"))?;
        if *event == "raw_syscalls:sys_enter" {
            total = Some(n);
        } else if let Some(name) = event.strip_prefix("syscalls:sys_enter_") {
            by_name.insert(name.to_owned(), n);
        }
    }
    let total = total.ok_or("perf output without raw_syscalls:sys_enter")?;
    let named: f64 = by_name.values().sum();
    by_name.insert("other".to_owned(), total - named);
    Ok((total, by_name))
}

/// `strace -c` output: the total and the count of every call.
fn strace_counts(text: &str) -> Result<(f64, BTreeMap<String, f64>), String> {
    let mut total = None;
    let mut by_name = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call (not on the total line before strace 6), calls,
        // [errors], name. The total is the sum of the calls (whatever the total line's layout).
        let Some(name) = f.last() else { continue };
        if f.len() < 4 || !f[0].chars().next().is_some_and(|c| c.is_ascii_digit()) {
            continue;
        }
        if *name == "total" {
            total = Some(by_name.values().sum::<f64>());
        } else if let Some(n) = f.get(3).and_then(|x| x.parse::<f64>().ok()) {
            by_name.insert((*name).to_owned(), n);
        }
    }
    let total = total.ok_or("strace output without a total line")?;
    Ok((total, by_name))
}

/// Per-unit figures of one server, from its runs.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Figures {
    /// Instructions per unit: run name → value.
    instructions: BTreeMap<String, f64>,
    /// System calls per unit: run name → value.
    syscalls: BTreeMap<String, f64>,
    /// System calls per unit by name: run name → call → value.
    syscalls_by_name: BTreeMap<String, BTreeMap<String, f64>>,
    /// What the base run counted (startup, setup and its share of work).
    base_instructions: Option<f64>,
    base_syscalls: Option<f64>,
    /// Seconds per run, by counter and run.
    seconds: BTreeMap<String, f64>,
}

fn figures(sizes: &Sizes, runs: &BTreeMap<(Counter2, Run), Counted>) -> Figures {
    let mut f = Figures::default();
    for (&(c, run), counted) in runs {
        f.seconds
            .insert(format!("{}.{}", c.name(), run.name()), counted.seconds);
    }
    for c in [Counter2::Callgrind, Counter2::Syscalls] {
        let Some(base) = runs.get(&(c, Run::Base)) else {
            continue;
        };
        match c {
            Counter2::Callgrind => f.base_instructions = Some(base.total),
            Counter2::Syscalls => f.base_syscalls = Some(base.total),
        }
        for run in MORE {
            let Some(more) = runs.get(&(c, run)) else {
                continue;
            };
            let units = sizes.units(run);
            let per = (more.total - base.total) / units;
            match c {
                Counter2::Callgrind => {
                    f.instructions.insert(run.name().to_owned(), per);
                }
                Counter2::Syscalls => {
                    f.syscalls.insert(run.name().to_owned(), per);
                    let mut names: Vec<&String> =
                        base.by_name.keys().chain(more.by_name.keys()).collect();
                    names.sort();
                    names.dedup();
                    let by: BTreeMap<String, f64> = names
                        .into_iter()
                        .map(|n| {
                            let d = more.by_name.get(n).copied().unwrap_or(0.0)
                                - base.by_name.get(n).copied().unwrap_or(0.0);
                            (n.clone(), d / units)
                        })
                        .filter(|(_, v)| v.abs() >= 0.0005)
                        .collect();
                    f.syscalls_by_name.insert(run.name().to_owned(), by);
                }
            }
        }
    }
    f
}

/// A counter, without which syscall counter it is (the key of a run's results).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Counter2 {
    Callgrind,
    Syscalls,
}

impl Counter2 {
    fn name(self) -> &'static str {
        match self {
            Counter2::Callgrind => "callgrind",
            Counter2::Syscalls => "syscalls",
        }
    }
}

/// Per-function cost of a callgrind output (`callgrind_annotate`, self or inclusive):
/// function name → instructions.
fn functions(file: &Path, inclusive: bool) -> Result<BTreeMap<String, f64>, String> {
    let out = Command::new("callgrind_annotate")
        .args([
            "--threshold=100",
            "--auto=no",
            if inclusive {
                "--inclusive=yes"
            } else {
                "--inclusive=no"
            },
        ])
        .arg(file)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "callgrind_annotate {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(parse_annotate(
        &String::from_utf8_lossy(&out.stdout),
        inclusive,
    ))
}

/// The function lines of `callgrind_annotate` output: `1,234 ( 5.6%)  file:function [object]`.
///
/// A function is listed once per source file its code comes from (inlined code is another
/// file's): self costs add up over its lines, but each line's inclusive cost is the whole
/// function's, so with `inclusive` the largest is kept instead of the sum. (Generic functions
/// whose instances demangle to the same name are then one line too: their largest instance.)
fn parse_annotate(text: &str, inclusive: bool) -> BTreeMap<String, f64> {
    let mut map = BTreeMap::new();
    let mut in_functions = false;
    for line in text.lines() {
        if line.contains("file:function") {
            in_functions = true;
            continue;
        }
        if !in_functions {
            continue;
        }
        let t = line.trim_start();
        let Some(end) = t.find(|c: char| !(c.is_ascii_digit() || c == ',')) else {
            continue;
        };
        let Ok(n) = t[..end].replace(',', "").parse::<f64>() else {
            continue;
        };
        let mut rest = t[end..].trim_start();
        if rest.starts_with('(') {
            rest = rest.find(')').map_or("", |i| rest[i + 1..].trim_start());
        }
        // Drop the object file, then the source file before the first lone `:`.
        let rest = match rest.rfind(" [") {
            Some(i) if rest.ends_with(']') => &rest[..i],
            _ => rest,
        };
        let name = lone_colon(rest).map_or(rest, |i| &rest[i + 1..]);
        let e = map.entry(name.to_owned()).or_insert(0.0);
        if inclusive {
            *e = f64::max(*e, n);
        } else {
            *e += n;
        }
    }
    map
}

/// Position of the first `:` that is not part of a `::`.
fn lone_colon(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len())
        .find(|&i| b[i] == b':' && b.get(i + 1) != Some(&b':') && (i == 0 || b[i - 1] != b':'))
}

/// Per-unit cost of each function between two callgrind outputs.
fn function_delta(
    base: &Path,
    more: &Path,
    units: f64,
    inclusive: bool,
) -> Result<BTreeMap<String, f64>, String> {
    let a = functions(base, inclusive)?;
    let b = functions(more, inclusive)?;
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|n| {
            let d = b.get(n).copied().unwrap_or(0.0) - a.get(n).copied().unwrap_or(0.0);
            (n.clone(), d / units)
        })
        .filter(|(_, v)| v.abs() >= 0.5)
        .collect())
}

fn fmt_num(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(v) if v.is_finite() => crate::report::fmt(v, decimals),
        _ => "–".to_owned(),
    }
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a.is_finite() && b.is_finite() && b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    }
}

/// The value columns of the tables: (title, instructions or syscalls, run).
const COLUMNS: [(&str, bool, Run); 8] = [
    ("instructions/delivery, 1 msg/round", true, Run::Rounds),
    ("instructions/delivery, 10 msgs/round", true, Run::Rounds10),
    ("instructions/ack, 1 per write", true, Run::Acks),
    ("instructions/ack, 8 per write", true, Run::Acks8),
    ("syscalls/delivery, 1 msg/round", false, Run::Rounds),
    ("syscalls/delivery, 10 msgs/round", false, Run::Rounds10),
    ("syscalls/ack, 1 per write", false, Run::Acks),
    ("syscalls/ack, 8 per write", false, Run::Acks8),
];

fn value(f: &Figures, instructions: bool, run: Run) -> Option<f64> {
    if instructions {
        f.instructions.get(run.name()).copied()
    } else {
        f.syscalls.get(run.name()).copied()
    }
}

/// The tables of one repetition: values, ratios to raw and to socketioxide, syscalls by name.
fn tables(all: &BTreeMap<String, Figures>, kinds: &[Kind]) -> String {
    let mut s = String::new();
    let head = |s: &mut String, first: &str| {
        s.push_str(&format!("| {first} |"));
        for (t, _, _) in COLUMNS {
            s.push_str(&format!(" {t} |"));
        }
        s.push_str("\n|---|");
        for _ in COLUMNS {
            s.push_str("---:|");
        }
        s.push('\n');
    };
    head(&mut s, "server");
    for k in kinds {
        let Some(f) = all.get(k.key) else { continue };
        s.push_str(&format!("| {} |", k.title));
        for (_, ins, run) in COLUMNS {
            let decimals = if ins { 0 } else { 3 };
            s.push_str(&format!(" {} |", fmt_num(value(f, ins, run), decimals)));
        }
        s.push('\n');
    }
    for (peer, title) in [
        ("raw", "raw tungstenite"),
        ("sioxide", "socketioxide"),
        ("wsu", "wsu (history off)"),
    ] {
        let Some(p) = all.get(peer) else { continue };
        if peer == "wsu" && !all.contains_key("wsu-history") {
            continue;
        }
        s.push('\n');
        head(&mut s, &format!("÷ {title}"));
        for k in kinds {
            // Beside wsu with history off, only the history-on variant.
            if k.key == peer || (peer == "wsu" && k.key != "wsu-history") {
                continue;
            }
            let Some(f) = all.get(k.key) else { continue };
            s.push_str(&format!("| {} |", k.title));
            for (_, ins, run) in COLUMNS {
                s.push_str(&format!(
                    " {} |",
                    fmt_ratio(value(f, ins, run), value(p, ins, run))
                ));
            }
            s.push('\n');
        }
    }
    // System calls by name, per unit.
    let mut names: Vec<String> = all
        .values()
        .flat_map(|f| f.syscalls_by_name.values().flat_map(|m| m.keys().cloned()))
        .collect();
    names.sort();
    names.dedup();
    if let Some(i) = names.iter().position(|n| n == "other") {
        let other = names.remove(i);
        names.push(other);
    }
    if !names.is_empty() {
        s.push_str("\nSystem calls per unit, by call:\n\n| server | per |");
        for n in &names {
            s.push_str(&format!(" {n} |"));
        }
        s.push_str("\n|---|---|");
        for _ in &names {
            s.push_str("---:|");
        }
        s.push('\n');
        for k in kinds {
            let Some(f) = all.get(k.key) else { continue };
            for run in MORE {
                let Some(by) = f.syscalls_by_name.get(run.name()) else {
                    continue;
                };
                s.push_str(&format!("| {} | {} |", k.title, run.unit()));
                for n in &names {
                    s.push_str(&format!(
                        " {} |",
                        by.get(n).map_or("".to_owned(), |v| format!("{v:.3}"))
                    ));
                }
                s.push('\n');
            }
        }
    }
    s
}

/// The functions of server `a`'s path (per unit) that `b`'s does not have, and those it spends
/// more in than `b`, by self and by inclusive cost (`a`, `b`: key and per-function costs).
fn function_tables(
    (a_name, a): (&str, &BTreeMap<String, f64>),
    (b_name, b): (&str, &BTreeMap<String, f64>),
    top: usize,
    what: &str,
    unit: &str,
) -> String {
    let short = |n: &str| {
        let n = n.trim();
        if n.chars().count() > 110 {
            format!("{}…", n.chars().take(110).collect::<String>())
        } else {
            n.to_owned()
        }
    };
    let mut only: Vec<(&String, f64)> = a
        .iter()
        .filter(|(n, v)| **v > 0.0 && b.get(*n).is_none_or(|r| r.abs() < 0.5))
        .map(|(n, v)| (n, *v))
        .collect();
    only.sort_by(|x, y| y.1.total_cmp(&x.1));
    let mut more: Vec<(&String, f64, f64)> = a
        .iter()
        .filter_map(|(n, v)| {
            let r = b.get(n).copied()?;
            (r.abs() >= 0.5 && *v > r).then_some((n, *v, r))
        })
        .collect();
    more.sort_by(|x, y| (y.1 - y.2).total_cmp(&(x.1 - x.2)));
    let mut s = format!(
        "Functions on {a_name}'s path that {b_name}'s does not have, by {what} instructions per \
         {unit}:\n\n| function | {a_name} |\n|---|---:|\n"
    );
    for (n, v) in only.iter().take(top) {
        s.push_str(&format!(
            "| `{}` | {} |\n",
            short(n),
            crate::report::fmt(*v, 0)
        ));
    }
    if what == "inclusive" {
        // Every caller up to `main` spends more inclusively: only the self costs compare.
        return s;
    }
    s.push_str(&format!(
        "\nFunctions on both paths where {a_name} spends the most more than {b_name}, by {what} \
         instructions per {unit}:\n\n| function | {a_name} | {b_name} | {a_name} − {b_name} |\n\
         |---|---:|---:|---:|\n"
    ));
    for (n, v, r) in more.iter().take(top) {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            short(n),
            crate::report::fmt(*v, 0),
            crate::report::fmt(*r, 0),
            crate::report::fmt(v - r, 0)
        ));
    }
    s
}

/// Which syscall counter to use: the one asked for, else perf when its syscall tracepoints
/// count here, else strace.
fn pick_syscall_counter(asked: Option<SysCounter>) -> Result<SysCounter, String> {
    let perf_works = || {
        Command::new("perf")
            .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"])
            .stdout(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stderr).into_owned();
                perf_counts(&text).ok()
            })
            .is_some_and(|(n, _)| n > 0.0)
    };
    match asked {
        Some(SysCounter::Perf) if !perf_works() => {
            Err("perf cannot count syscall tracepoints here".to_owned())
        }
        Some(SysCounter::Strace) if !have_strace() => Err("strace is not installed".to_owned()),
        Some(c) => Ok(c),
        None if perf_works() => Ok(SysCounter::Perf),
        None if have_strace() => Ok(SysCounter::Strace),
        None => Err("neither perf (with syscall tracepoints) nor strace works here".to_owned()),
    }
}

fn have_strace() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The syscall names perf can count by name here (those with a tracepoint).
fn named_syscalls() -> Vec<&'static str> {
    let dirs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    NAMED_SYSCALLS
        .iter()
        .copied()
        .filter(|n| {
            dirs.iter()
                .any(|d| Path::new(&format!("{d}/events/syscalls/sys_enter_{n}")).is_dir())
        })
        .collect()
}

/// Sanity bounds every measured figure must meet (the pipeline is broken otherwise): a
/// delivery costs at least one `write` per 10 messages and some hundred instructions, an ack at
/// least a read and a write (shared by 8 when 8 come in one read).
fn check(key: &str, f: &Figures) -> Vec<String> {
    let mut bad = Vec::new();
    let mut need = |what: &str, x: Option<f64>, min: f64| {
        if let Some(v) = x
            && (v.is_nan() || v < min)
        {
            bad.push(format!("{key}: {what} = {v:.3}, expected ≥ {min}"));
        }
    };
    need("syscalls/delivery ×1", value(f, false, Run::Rounds), 0.9);
    need(
        "syscalls/delivery ×10",
        value(f, false, Run::Rounds10),
        0.09,
    );
    need("syscalls/ack ×1", value(f, false, Run::Acks), 1.9);
    need("syscalls/ack ×8", value(f, false, Run::Acks8), 0.24);
    need(
        "instructions/delivery ×1",
        value(f, true, Run::Rounds),
        100.0,
    );
    need(
        "instructions/delivery ×10",
        value(f, true, Run::Rounds10),
        50.0,
    );
    need("instructions/ack ×1", value(f, true, Run::Acks), 500.0);
    need("instructions/ack ×8", value(f, true, Run::Acks8), 300.0);
    bad
}

pub(crate) fn run(opts: Opts) -> Result<(), String> {
    let started = Instant::now();
    let sizes = Sizes::new(&opts);
    let mode = if opts.smoke { "smoke" } else { "full" };
    let use_callgrind = opts.skip.as_deref() != Some("callgrind");
    let use_syscalls = opts.skip.as_deref() != Some("syscalls");
    if use_callgrind && !have("valgrind") {
        return Err("valgrind is not installed (needed for instruction counts; --skip callgrind to count system calls only)".to_owned());
    }
    let sys = if use_syscalls {
        Some(pick_syscall_counter(opts.syscalls)?)
    } else {
        None
    };
    let named = if sys == Some(SysCounter::Perf) {
        named_syscalls()
    } else {
        Vec::new()
    };
    let pin = have("taskset") && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if cfg!(debug_assertions) {
        eprintln!(
            "note: a debug build of wsu-bench: the servers' counts are a debug build's; \
             measure with --release"
        );
    }
    let mut kinds = selected(opts.only.as_deref());
    let mut notes = Vec::new();
    if kinds.iter().any(|k| k.key == "node")
        && let Err(why) = node_ready()
    {
        eprintln!("SKIPPING node socket.io: {why}");
        notes.push(format!("node socket.io skipped: {why}"));
        kinds.retain(|k| k.key != "node");
    }
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| bench_dir().join("../target/wsu-bench"));
    let files = out_dir.join(format!("counts-{mode}"));
    std::fs::create_dir_all(&files).map_err(|e| format!("{}: {e}", files.display()))?;
    eprintln!(
        "wsu-bench counts ({mode}): {} members, base {} + {} rounds of 1 message, {} + {} rounds \
         of 10, {} + {} acks and {} + {} rounds of 8 acks from {} clients; syscalls counted with {}",
        sizes.base.members,
        sizes.base.rounds,
        sizes.more_rounds,
        sizes.base.rounds10,
        sizes.more_rounds10,
        sizes.base.acks,
        sizes.more_acks,
        sizes.base.acks8,
        sizes.more_acks8,
        sizes.base.clients,
        sys.map_or("nothing", SysCounter::name)
    );

    let timeout = run_timeout(opts.smoke);
    let mut reps_figures: Vec<BTreeMap<String, Figures>> = Vec::new();
    let mut cg_files: BTreeMap<(String, Run), PathBuf> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut retried = Vec::new();
    for rep in 0..opts.reps.max(1) {
        let mut all = BTreeMap::new();
        for &kind in &kinds {
            let mut counters = Vec::new();
            // The smoke run (CI, under a minute) counts instructions for wsu and the raw
            // server only: every valgrind start costs seconds (node's, 15 s, and its runs
            // minutes); all four servers go under the syscall counter.
            if use_callgrind && (!opts.smoke || matches!(kind.key, "wsu" | "wsu-history" | "raw")) {
                counters.push(Counter::Callgrind);
            } else if use_callgrind {
                notes.push(format!(
                    "{} under callgrind is left out of the smoke run (wsu and raw only)",
                    kind.title
                ));
            }
            if let Some(c) = sys {
                counters.push(Counter::Syscalls(c));
            }
            let mut runs = BTreeMap::new();
            'counter: for &counter in &counters {
                let (c2, ext) = match counter {
                    Counter::Callgrind => (Counter2::Callgrind, "callgrind.out"),
                    Counter::Syscalls(SysCounter::Perf) => (Counter2::Syscalls, "perf.txt"),
                    Counter::Syscalls(SysCounter::Strace) => (Counter2::Syscalls, "strace.txt"),
                };
                for run in RUNS {
                    let work = sizes.work(run);
                    let file = files.join(format!("{}-{}-{}.{ext}", kind.key, run.name(), rep + 1));
                    eprintln!(
                        "== #{} {} under {} ({}): {}",
                        rep + 1,
                        kind.title,
                        c2.name(),
                        run.name(),
                        work.plan()
                    );
                    // A run that fails (a step the server never saw; the disk full) is
                    // repeated: its counts do not depend on which attempt gives them.
                    let mut attempt = 1;
                    let result = loop {
                        match measure(kind, counter, &work, &file, pin, &named, timeout) {
                            Err(e) if attempt < MAX_ATTEMPTS => {
                                eprintln!("   attempt {attempt} failed, repeating: {e}");
                                retried.push(format!(
                                    "#{} {} {} {}: attempt {attempt}: {e}",
                                    rep + 1,
                                    kind.key,
                                    c2.name(),
                                    run.name()
                                ));
                                attempt += 1;
                            }
                            r => break r,
                        }
                    };
                    match result {
                        Ok(c) => {
                            eprintln!(
                                "   {} {} in {:.1} s",
                                crate::report::fmt(c.total, 0),
                                if c2 == Counter2::Callgrind {
                                    "instructions"
                                } else {
                                    "syscalls"
                                },
                                c.seconds
                            );
                            if c2 == Counter2::Callgrind && rep == 0 {
                                cg_files.insert((kind.key.to_owned(), run), c.file.clone());
                            }
                            runs.insert((c2, run), c);
                        }
                        Err(e) => {
                            eprintln!("FAILED: {e}");
                            failures.push(format!(
                                "#{} {} {}: {e}",
                                rep + 1,
                                c2.name(),
                                run.name()
                            ));
                            continue 'counter;
                        }
                    }
                }
            }
            let f = figures(&sizes, &runs);
            for b in check(kind.key, &f) {
                failures.push(b);
            }
            all.insert(kind.key.to_owned(), f);
        }
        println!(
            "\n### Counts, repetition {}\n\n{}",
            rep + 1,
            tables(&all, &kinds)
        );
        reps_figures.push(all);
    }

    // How far the repetitions are apart.
    let mut spread = String::new();
    if reps_figures.len() > 1 {
        spread
            .push_str("\nLargest difference between repetitions (max − min) ÷ min:\n\n| server |");
        for (t, _, _) in COLUMNS {
            spread.push_str(&format!(" {t} |"));
        }
        spread.push_str("\n|---|");
        for _ in COLUMNS {
            spread.push_str("---:|");
        }
        spread.push('\n');
        for k in &kinds {
            spread.push_str(&format!("| {} |", k.title));
            for (_, ins, run) in COLUMNS {
                let v: Vec<f64> = reps_figures
                    .iter()
                    .filter_map(|r| r.get(k.key).and_then(|f| value(f, ins, run)))
                    .collect();
                let cell = if v.len() > 1 {
                    let (lo, hi) = v
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                            (a.min(x), b.max(x))
                        });
                    format!("{:.2}%", (hi - lo) / lo.abs() * 100.0)
                } else {
                    "–".to_owned()
                };
                spread.push_str(&format!(" {cell} |"));
            }
            spread.push('\n');
        }
        println!("{spread}");
    }

    // Where wsu's instructions go that raw's do not; where wsu with history on spends more
    // than with history off.
    let mut funcs_json = serde_json::Map::new();
    let mut funcs_text = String::new();
    if opts.top > 0 {
        let pairs: [(&str, &str, &[Run]); 2] = [
            ("wsu", "raw", &[Run::Acks, Run::Acks8, Run::Rounds]),
            ("wsu-history", "wsu", &[Run::Rounds, Run::Rounds10]),
        ];
        for (a_key, b_key, runs) in pairs {
            for &run in runs {
                let unit = run.unit();
                let per_kind = |key: &str, inclusive: bool| -> Option<BTreeMap<String, f64>> {
                    let base = cg_files.get(&(key.to_owned(), Run::Base))?;
                    let more = cg_files.get(&(key.to_owned(), run))?;
                    match function_delta(base, more, sizes.units(run), inclusive) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            eprintln!("no function profile of {key}: {e}");
                            None
                        }
                    }
                };
                for inclusive in [false, true] {
                    let what = if inclusive { "inclusive" } else { "self" };
                    let (Some(a), Some(b)) =
                        (per_kind(a_key, inclusive), per_kind(b_key, inclusive))
                    else {
                        continue;
                    };
                    funcs_text.push_str(&format!(
                        "\n#### {a_key} beside {b_key}: {unit}, {what}\n\n{}",
                        function_tables((a_key, &a), (b_key, &b), opts.top, what, unit)
                    ));
                    for (key, m) in [(a_key, &a), (b_key, &b)] {
                        let mut v: Vec<(&String, &f64)> = m.iter().collect();
                        v.sort_by(|x, y| y.1.total_cmp(x.1));
                        let top: serde_json::Map<String, serde_json::Value> = v
                            .into_iter()
                            .take(100)
                            .map(|(n, x)| (n.clone(), serde_json::json!(x)))
                            .collect();
                        funcs_json.insert(
                            format!("{key}.{}.{what}", run.name()),
                            serde_json::Value::Object(top),
                        );
                    }
                }
            }
        }
        if !funcs_text.is_empty() {
            println!("### Functions (callgrind_annotate, per unit, repetition 1)\n{funcs_text}");
        }
    }

    for n in notes.iter().collect::<std::collections::BTreeSet<_>>() {
        println!("{n}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "counts ({mode}): {} repetition(s), {elapsed:.0} s in all; instructions: callgrind \
         (valgrind), system calls: {}; {} run(s) repeated after a failed attempt",
        reps_figures.len(),
        sys.map_or("not counted", SysCounter::name),
        retried.len()
    );
    let json = serde_json::json!({
        "mode": mode,
        "seconds": elapsed,
        "syscall_counter": sys.map(SysCounter::name),
        "sizes": {
            "members": sizes.base.members,
            "clients": sizes.base.clients,
            "base": {"rounds": sizes.base.rounds, "rounds10": sizes.base.rounds10, "acks": sizes.base.acks, "acks8": sizes.base.acks8},
            "more": {"rounds": sizes.more_rounds, "rounds10": sizes.more_rounds10, "acks": sizes.more_acks, "acks8": sizes.more_acks8},
        },
        "repetitions": reps_figures,
        "functions": funcs_json,
        "failures": failures,
        "retried": retried,
        "notes": notes,
    });
    let json_path = out_dir.join(format!("counts-{mode}.json"));
    let _ = std::fs::write(&json_path, format!("{json:#}\n"));
    eprintln!(
        "results: {} (counter outputs in {})",
        json_path.display(),
        files.display()
    );
    if !failures.is_empty() {
        println!("{} failure(s):", failures.len());
        for f in &failures {
            println!("  {f}");
        }
        return Err(format!("{} failure(s)", failures.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perf_output() {
        let text = "# started on Thu Dec  3 11:09:37 2026\n\n\
                    144,,raw_syscalls:sys_enter,1032835,100.00,,\n\
                    7,,syscalls:sys_enter_read,1032835,100.00,,\n\
                    1,,syscalls:sys_enter_write,1032835,100.00,,\n";
        let (total, by) = perf_counts(text).expect("parses");
        assert_eq!(total, 144.0);
        assert_eq!(by["read"], 7.0);
        assert_eq!(by["other"], 136.0);
        assert!(perf_counts("<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n").is_err());
    }

    #[test]
    fn parses_strace_output() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                    ------ ----------- ----------- --------- --------- ----------------\n \
                    26.78    0.000079           3        23           close\n \
                    17.29    0.000051           1        34        13 openat\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    100.00    0.000295           5        57        13 total\n";
        let (total, by) = strace_counts(text).expect("parses");
        assert_eq!(total, 57.0);
        assert_eq!(by["close"], 23.0);
        assert_eq!(by["openat"], 34.0);
    }

    #[test]
    fn parses_callgrind_annotate_output() {
        let text = "--------------------------------------------------------------------------------\n\
                    Ir                   file:function\n\
                    --------------------------------------------------------------------------------\n\
                    33,228,180 ( 4.61%)  ./malloc/./malloc/malloc.c:_int_free [/usr/lib/x86_64-linux-gnu/libc.so.6]\n\
                    1,000 ( 0.01%)  /src/envelope.rs:wsu::protocol::envelope::decode_fast [/x/wsu-bench]\n\
                    20 ( 0.00%)  ???:<alloc::vec::Vec<T> as core::ops::Drop>::drop [/x/wsu-bench]\n";
        let m = parse_annotate(text, false);
        assert_eq!(m["_int_free"], 33_228_180.0);
        assert_eq!(m["wsu::protocol::envelope::decode_fast"], 1000.0);
        assert_eq!(m["<alloc::vec::Vec<T> as core::ops::Drop>::drop"], 20.0);
        assert_eq!(
            callgrind_total("events: Ir\nsummary: 10\ntotals: 12\n"),
            Ok(12.0)
        );
    }
}
