//! `wsu-bench replay`: how long a resumed session takes to get the broadcasts it missed
//! (issue 15: replay of 1,000 missed messages on one node in < 50 ms).
//!
//! One `wsu-history` server (wsu with `ServerBuilder::recovery(Recovery::default())`), pinned
//! to core 0, with the heartbeat stretched to an hour; the clients run in this process, pinned
//! to core 1, speaking the protocol by hand with tokio-tungstenite (as `tests/src/resume.rs`):
//!
//! 1. a witness `W` joins room `r`, a publisher `P` connects (not a member);
//! 2. per run, a client `A` connects fresh, reads its `hello` (the resume token) and the `/`
//!    `recovery` frame (its position: epoch and offset), joins `r`, then drops its TCP
//!    connection without a close frame; once the server is idle again (it has detached the
//!    session), `P` publishes `missed` messages to `r` (`pub` events, batches of 100, at most
//!    400 ahead of `W`), and `W` receives them all; the server is left to become idle;
//! 3. timed: `A` reconnects with `wsu_resume=<token>&wsu_offsets={"/":{epoch,offset}}` and
//!    reads the `hello` (checked: `resume.accepted`) and the `recovery` frame, which it parses
//!    (serde_json, to a tree) and checks (`recovered: true`, `missed` events, the last offset).
//!    The clock starts just before the TCP connect of the resuming client (so it includes the
//!    connect, the upgrade request and response) and stops when the recovery frame is parsed;
//!    the phases are reported apart. The server's CPU time for the resume is the sum of its
//!    threads' `/proc/<pid>/task/<tid>/schedstat` run time (ns, user and kernel) from before
//!    the connect until the server is idle after it (no other work runs meanwhile);
//! 4. `A` closes with a close frame (the session ends).
//!
//! The first `warmup` runs of each size are not counted. The history fills up over the runs
//! (10,000 broadcasts kept by default): from the 10th run of 1,000 on, every publish evicts the
//! oldest entry and the replay searches a full history, as on a busy server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::orchestrate::{WSU_HISTORY, bench_dir, have, median, start_server_with};
use crate::procfs;
use crate::settings::Heartbeat;

type Ws = WebSocketStream<TcpStream>;

/// The longest wait for one frame.
const WAIT: Duration = Duration::from_secs(30);

/// Options of `replay`.
pub(crate) struct Opts {
    pub(crate) smoke: bool,
    /// Timed runs per size.
    pub(crate) runs: Option<usize>,
    /// Missed messages per resume (one size after another).
    pub(crate) missed: Option<Vec<usize>>,
    /// Runs per size not counted.
    pub(crate) warmup: Option<usize>,
    /// Payload (`data`) size of each message, in bytes.
    pub(crate) bytes: usize,
    pub(crate) out: Option<std::path::PathBuf>,
}

/// One timed resume: milliseconds since the start of the TCP connect, and the server's CPU.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Sample {
    /// Upgrade response (101) received.
    upgraded_ms: f64,
    /// `hello` received.
    hello_ms: f64,
    /// `recovery` frame received (the whole message).
    received_ms: f64,
    /// `recovery` frame parsed and checked: the figure of issue 15.
    parsed_ms: f64,
    /// Server CPU (all threads, user + kernel) for the resume, in milliseconds.
    server_cpu_ms: f64,
    /// Size of the recovery frame, in bytes.
    frame_bytes: f64,
}

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// The next text message as text (pings and pongs skipped).
async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => return Err("timed out waiting for a message".to_owned()),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => return Err(format!("expected a message, got {other:?}")),
        }
    }
}

async fn next_json(ws: &mut Ws) -> Result<Value, String> {
    let t = next_text(ws).await?;
    serde_json::from_str(&t).map_err(|e| format!("not JSON ({e}): {t}"))
}

async fn dial(addr: SocketAddr, query: &str) -> Result<Ws, String> {
    let tcp = TcpStream::connect(addr).await.map_err(err("connect"))?;
    tcp.set_nodelay(true).map_err(err("nodelay"))?;
    let url = format!("ws://{addr}/ws{query}");
    let (ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .map_err(err("upgrade"))?;
    Ok(ws)
}

async fn send(ws: &mut Ws, v: Value) -> Result<(), String> {
    ws.send(Message::text(v.to_string()))
        .await
        .map_err(err("send"))
}

/// Join `room` and wait for the ack (and nothing else: the connection is in `/` already).
async fn join(ws: &mut Ws, room: &str) -> Result<(), String> {
    send(ws, json!({"type": "join", "room": room, "ackId": "j"})).await?;
    let ack = next_json(ws).await?;
    if ack["type"] != "ack" {
        return Err(format!("join {room}: expected an ack, got {ack}"));
    }
    Ok(())
}

/// A fresh connection: its `hello` data, and its `/` position from the `recovery` frame.
async fn fresh(addr: SocketAddr) -> Result<(Ws, Value, (String, u64)), String> {
    let mut ws = dial(addr, "").await?;
    let hello = next_json(&mut ws).await?;
    if hello["type"] != "hello" || !hello["data"]["token"].is_string() {
        return Err(format!("expected a hello with a token, got {hello}"));
    }
    let r = next_json(&mut ws).await?;
    let pos = match (
        r["type"].as_str(),
        r["data"]["epoch"].as_str(),
        r["data"]["offset"].as_u64(),
    ) {
        (Some("recovery"), Some(e), Some(o)) => (e.to_owned(), o),
        _ => return Err(format!("expected the / recovery frame, got {r}")),
    };
    Ok((ws, hello["data"].clone(), pos))
}

/// Percent-encode as `encodeURIComponent` does.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The server's CPU time so far (all threads, schedstat run time), in ns.
fn server_ns(pid: u32) -> Result<u64, String> {
    procfs::threads(pid)
        .map(|t| t.iter().map(|t| t.runtime_ns).sum())
        .ok_or_else(|| format!("server process {pid} is gone"))
}

/// Wait until the server has not run for `quiet` (its CPU time unchanged); its CPU time then.
async fn idle(pid: u32, quiet: Duration) -> Result<u64, String> {
    let started = Instant::now();
    let mut last = server_ns(pid)?;
    loop {
        tokio::time::sleep(quiet).await;
        let now = server_ns(pid)?;
        if now == last {
            return Ok(now);
        }
        last = now;
        if started.elapsed() > WAIT {
            return Err("the server did not become idle".to_owned());
        }
    }
}

/// The message `pub`lished: `data` of about `bytes` bytes (as the load generator's).
fn payload(bytes: usize) -> String {
    let base = r#"{"t":1700000000000000000,"p":""}"#.len();
    let pad = "x".repeat(bytes.saturating_sub(base));
    format!(r#"{{"t":1700000000000000000,"p":"{pad}"}}"#)
}

/// Publish `n` messages to `room` from `p` while `w` receives them.
async fn publish(p: &mut Ws, w: &mut Ws, room: &str, n: usize, data: &str) -> Result<(), String> {
    let frame =
        format!(r#"{{"type":"event","event":"pub","data":{{"room":"{room}","data":{data}}}}}"#);
    // At most this many messages in flight to `w` (its outbound queue at the server holds
    // 1,024: beyond it, `w` would be closed as a slow consumer).
    const IN_FLIGHT: usize = 400;
    let got = std::cell::Cell::new(0usize);
    let send_all = async {
        let mut left = n;
        while left > 0 {
            while n - left - got.get() > IN_FLIGHT {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            let k = left.min(100);
            for _ in 0..k {
                p.feed(Message::text(frame.clone()))
                    .await
                    .map_err(err("publish"))?;
            }
            p.flush().await.map_err(err("publish"))?;
            left -= k;
        }
        Ok::<(), String>(())
    };
    let receive_all = async {
        while got.get() < n {
            let t = next_text(w).await?;
            if t.starts_with(r#"{"type":"event""#) {
                got.set(got.get() + 1);
            }
        }
        Ok::<(), String>(())
    };
    let (a, b) = tokio::join!(send_all, receive_all);
    a.and(b)
}

/// One run: a session that misses `missed` messages, then resumes (timed).
async fn one(
    addr: SocketAddr,
    pid: u32,
    p: &mut Ws,
    w: &mut Ws,
    missed: usize,
    data: &str,
) -> Result<Sample, String> {
    let (mut a, hello, (epoch, offset)) = fresh(addr).await?;
    join(&mut a, "r").await?;
    let token = hello["token"].as_str().unwrap_or_default().to_owned();
    let sid = hello["sid"].as_str().unwrap_or_default().to_owned();
    // Lose the TCP connection without a close frame: the session outlives it.
    drop(a);
    idle(pid, Duration::from_millis(5)).await?;
    publish(p, w, "r", missed, data).await?;
    let offsets = json!({"/": {"epoch": epoch, "offset": offset}}).to_string();
    let query = format!(
        "?wsu_resume={token}&wsu_offsets={}",
        percent_encode(&offsets)
    );
    let cpu0 = idle(pid, Duration::from_millis(5)).await?;

    let t0 = Instant::now();
    let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1e3;
    let mut a = dial(addr, &query).await?;
    let t_up = Instant::now();
    let hello = next_json(&mut a).await?;
    let t_hello = Instant::now();
    let text = next_text(&mut a).await?;
    let t_rec = Instant::now();
    let r: Value = serde_json::from_str(&text).map_err(err("recovery frame"))?;
    let events = r["data"]["events"].as_array().map_or(0, Vec::len);
    let ok = r["type"] == "recovery"
        && r["data"]["recovered"] == true
        && events == missed
        && r["data"]["offset"].as_u64() == Some(offset + missed as u64);
    let t_parsed = Instant::now();
    if hello["data"]["resume"]["accepted"] != true || hello["data"]["sid"] != sid.as_str() {
        return Err(format!("the resume was not accepted: {hello}"));
    }
    if !ok {
        let head: String = text.chars().take(300).collect();
        return Err(format!(
            "expected a recovery frame with {missed} events from offset {offset}, got {events}: {head}"
        ));
    }
    let cpu1 = idle(pid, Duration::from_millis(5)).await?;
    // End the session for good.
    let _ = a.close(None).await;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, a.next()).await {}
    Ok(Sample {
        upgraded_ms: ms(t_up),
        hello_ms: ms(t_hello),
        received_ms: ms(t_rec),
        parsed_ms: ms(t_parsed),
        server_cpu_ms: (cpu1 - cpu0) as f64 / 1e6,
        frame_bytes: text.len() as f64,
    })
}

/// The value at quantile `q` (nearest rank) of `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Pin this process (and the threads it starts from now on) to `cpu`.
fn pin_self(cpu: usize) {
    let _ = std::process::Command::new("taskset")
        .args([
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status();
}

pub(crate) fn run(opts: Opts) -> Result<(), String> {
    let started = Instant::now();
    let mode = if opts.smoke { "smoke" } else { "default" };
    let runs = opts.runs.unwrap_or(if opts.smoke { 5 } else { 50 }).max(1);
    let warmup = opts.warmup.unwrap_or(if opts.smoke { 1 } else { 3 });
    let sizes = opts
        .missed
        .clone()
        .unwrap_or_else(|| vec![if opts.smoke { 100 } else { 1000 }]);
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build of wsu-bench: measure with --release");
    }
    let pin = have("taskset") && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if pin {
        pin_self(1);
    }
    let hb = Heartbeat::SILENT;
    let (iv, to) = (
        hb.interval.as_millis().to_string(),
        hb.timeout.as_millis().to_string(),
    );
    let server = start_server_with(
        WSU_HISTORY,
        &["--ping-interval-ms", &iv, "--ping-timeout-ms", &to],
        pin,
    )?;
    let addr: SocketAddr = ([127, 0, 0, 1], server.port).into();
    let pid = server.pid;
    let load_at_start = procfs::loadavg().unwrap_or(f64::NAN);
    eprintln!(
        "wsu-bench replay ({mode}): {} server pid {pid} on port {}, {runs} runs (+{warmup} \
         warm-up) per size, missed {sizes:?}, {} B payloads; 1-minute load {load_at_start:.2}",
        WSU_HISTORY.title, server.port, opts.bytes
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let data = payload(opts.bytes);
    let busy0 = procfs::machine_busy_ns();
    let client0 = procfs::cpu_ns(std::process::id());
    let server0 = procfs::cpu_ns(pid);
    let wall0 = Instant::now();
    let results: Vec<(usize, Vec<Sample>)> = rt.block_on(async {
        let (mut w, _, _) = fresh(addr).await?;
        join(&mut w, "r").await?;
        let (mut p, _, _) = fresh(addr).await?;
        let mut all = Vec::new();
        for &missed in &sizes {
            let mut samples = Vec::new();
            for i in 0..warmup + runs {
                let s = one(addr, pid, &mut p, &mut w, missed, &data)
                    .await
                    .map_err(|e| format!("missed {missed}, run {}: {e}", i + 1))?;
                if i >= warmup {
                    samples.push(s);
                }
            }
            all.push((missed, samples));
        }
        Ok::<_, String>(all)
    })?;
    // Other processes' share of a core meanwhile (the machine's busy time minus ours).
    let wall = wall0.elapsed().as_secs_f64();
    let other = match (
        busy0,
        procfs::machine_busy_ns(),
        client0,
        procfs::cpu_ns(std::process::id()),
        server0,
        procfs::cpu_ns(pid),
    ) {
        (Some(b0), Some(b1), Some(c0), Some(c1), Some(s0), Some(s1)) => {
            (b1.saturating_sub(b0) as f64 - (c1 - c0) as f64 - (s1 - s0) as f64).max(0.0)
                / 1e9
                / wall
        }
        _ => f64::NAN,
    };
    drop(server);

    let mut table = String::from(
        "| missed | runs | frame KiB | upgrade ms p50 / p99 | hello ms p50 / p99 | recovery received ms p50 / p99 | **recovery parsed ms p50 / p99** (max) | server CPU ms p50 / p99 |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut json_sizes = serde_json::Map::new();
    for (missed, samples) in &results {
        let col = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
        let pair = |v: &[f64]| format!("{:.3} / {:.3}", median(v), quantile(v, 0.99));
        let parsed = col(|s| s.parsed_ms);
        table.push_str(&format!(
            "| {missed} | {} | {:.1} | {} | {} | {} | **{}** ({:.3}) | {} |\n",
            samples.len(),
            median(&col(|s| s.frame_bytes)) / 1024.0,
            pair(&col(|s| s.upgraded_ms)),
            pair(&col(|s| s.hello_ms)),
            pair(&col(|s| s.received_ms)),
            pair(&parsed),
            quantile(&parsed, 1.0),
            pair(&col(|s| s.server_cpu_ms)),
        ));
        let mut stats = serde_json::Map::new();
        for (name, f) in [
            (
                "upgraded_ms",
                (|s: &Sample| s.upgraded_ms) as fn(&Sample) -> f64,
            ),
            ("hello_ms", |s| s.hello_ms),
            ("received_ms", |s| s.received_ms),
            ("parsed_ms", |s| s.parsed_ms),
            ("server_cpu_ms", |s| s.server_cpu_ms),
            ("frame_bytes", |s| s.frame_bytes),
        ] {
            let v = col(f);
            stats.insert(
                name.to_owned(),
                json!({"p50": median(&v), "p99": quantile(&v, 0.99), "min": quantile(&v, 0.0), "max": quantile(&v, 1.0)}),
            );
        }
        json_sizes.insert(
            missed.to_string(),
            json!({"stats": stats, "samples": samples}),
        );
    }
    println!("\n{table}");
    println!(
        "replay ({mode}): {:.0} s in all; 1-minute load at start {load_at_start:.2}; other \
         processes used {:.2} of a core meanwhile",
        started.elapsed().as_secs_f64(),
        other
    );
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| bench_dir().join("../target/wsu-bench"));
    let _ = std::fs::create_dir_all(&out_dir);
    let path = out_dir.join(format!("replay-{mode}.json"));
    let doc = json!({
        "mode": mode,
        "server": WSU_HISTORY.key,
        "runs": runs,
        "warmup": warmup,
        "payload_bytes": opts.bytes,
        "load_at_start": load_at_start,
        "other_cpu_share": other,
        "seconds": started.elapsed().as_secs_f64(),
        "missed": json_sizes,
    });
    std::fs::write(&path, format!("{doc:#}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("results: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_payloads() {
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), 50.0);
        assert_eq!(quantile(&v, 0.5), 25.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(payload(78).len(), 78);
        assert_eq!(percent_encode(r#"{"/":1}"#), "%7B%22%2F%22%3A1%7D");
    }
}
