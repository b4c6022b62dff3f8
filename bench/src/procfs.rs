//! What the benchmark reads of a server process from `/proc`.

use std::sync::OnceLock;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, normally 100).
fn ticks_per_second() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(100)
    })
}

/// CPU time (user + system, all threads) used by the process so far, in nanoseconds.
pub(crate) fn cpu_ns(pid: u32) -> Option<u64> {
    cpu_split_ns(pid).map(|(user, system)| user + system)
}

/// CPU time used by the process so far, in nanoseconds: (user, system), all threads.
pub(crate) fn cpu_split_ns(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ns = |ticks: u64| ticks * 1_000_000_000 / ticks_per_second();
    Some((ns(utime), ns(stime)))
}

/// Resident set size, in bytes (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss(pid: u32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size, in bytes (`Pss` of `/proc/<pid>/smaps_rollup`).
pub(crate) fn pss(pid: u32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn kib_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The 1-minute load average.
pub(crate) fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time spent by all processes of the machine so far (user + nice + system of
/// `/proc/stat`), in nanoseconds: with the times of the server and the generator, it tells
/// whether something else ran during a measurement.
pub(crate) fn machine_busy_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.len() == 3).then(|| f.iter().sum::<u64>() * 1_000_000_000 / ticks_per_second())
}

/// CPU time the hypervisor gave to other guests while this machine wanted to run (`steal` of
/// `/proc/stat`, all CPUs), in nanoseconds: a run during which it grows was slowed down from
/// outside, which no process of this machine shows.
pub(crate) fn machine_steal_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let steal: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    Some(steal * 1_000_000_000 / ticks_per_second())
}

/// What one thread of a process is doing: its state letter (`/proc/<pid>/task/<tid>/stat`),
/// the CPU time it has used and how often it has been put on a CPU (the first and third fields
/// of `schedstat`), and where it sleeps (`wchan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThreadState {
    pub(crate) tid: u32,
    pub(crate) state: char,
    pub(crate) runtime_ns: u64,
    pub(crate) timeslices: u64,
    pub(crate) wchan: String,
}

/// The threads of process `pid` (`None` if it is gone).
pub(crate) fn threads(pid: u32) -> Option<Vec<ThreadState>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A thread that ended between the listing and the reads is skipped.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
            continue;
        };
        let Ok(sched) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")) else {
            continue;
        };
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            .unwrap_or('?');
        let field = |i| {
            sched
                .split_whitespace()
                .nth(i)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let wchan =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default();
        out.push(ThreadState {
            tid,
            state,
            runtime_ns: field(0),
            timeslices: field(2),
            wchan,
        });
    }
    out.sort_by_key(|t| t.tid);
    Some(out)
}

/// The child processes of `pid` (`/proc/<pid>/task/<pid>/children`).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The TCP sockets of local or remote port `port` (`/proc/net/tcp`), by state, with the
/// listener's accept queue: what a step that never reached the server left behind.
pub(crate) fn tcp_summary(port: u16) -> String {
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return "no /proc/net/tcp".to_owned();
    };
    let hex = format!(":{port:04X}");
    let mut states: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut listener = String::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(st), Some(queues)) =
            (f.get(1), f.get(2), f.get(3), f.get(4))
        else {
            continue;
        };
        if !(local.ends_with(&hex) || remote.ends_with(&hex)) {
            continue;
        }
        if *st == "0A" {
            listener = format!("listener tx:rx queues {queues}");
        }
        *states.entry((*st).to_owned()).or_default() += 1;
    }
    format!("tcp states (hex) {states:?}, {listener}")
}
