//! `wsu-bench`: wsu side by side with socketioxide, node socket.io and a raw tokio-tungstenite
//! reference server, on this machine. See BENCHMARKS.md.
//!
//! ```text
//! wsu-bench all [--smoke | --quick | --full] [--reps N] [--only wsu,sioxide,node,raw]
//!               [--plans full-a,full-b] [--out DIR] [--wait-load 0.7] [--plots | --no-plots]
//! wsu-bench counts [--smoke] [--reps N] [--only wsu,wsu-history,...] [--syscalls perf|strace] [--skip callgrind|syscalls]
//!                  [--members M] [--rounds N] [--acks K] [--top N] [--out DIR]
//!                                                     instructions and system calls per delivery and per ack
//! wsu-bench cluster [--smoke] [--engine redis|nats] [--only wsu,sioxide] [--members N]
//!                   [--reps N] [--ms T] [--out DIR]  broadcast across a two-node cluster
//! wsu-bench replay [--smoke] [--runs N] [--missed 1000,0] [--warmup N] [--bytes B] [--out DIR]
//!                                                     time to resume a session that missed N broadcasts
//! wsu-bench server <wsu|wsu-history|sioxide|raw> [--port N] [--redis URL | --nats URL]
//!                  [--ping-interval-ms N] [--ping-timeout-ms N]
//!                                                     one server under test (a cluster node
//!                                                     with a broker)
//! wsu-bench gen --proto <wsu|sio> --addr HOST:PORT --pid PID --plan <smoke|quick|full-a|full-b|full-c>
//!               [--addr2 HOST:PORT --pid2 PID] [--broker-pid PID]
//! wsu-bench plot target/wsu-bench/results-full.json   redraw bench/*.png from saved results
//! wsu-bench report target/wsu-bench/results-full.json print the tables of saved results again
//! ```

mod client;
mod cluster;
mod counts;
mod load;
mod orchestrate;
mod plot;
mod procfs;
mod replay;
mod report;
mod servers;
mod settings;

use std::net::SocketAddr;

use orchestrate::{Mode, Opts};

const USAGE: &str = "usage:
  wsu-bench all [--smoke | --quick | --full] [--reps N] [--only wsu,sioxide,node,raw]
                [--plans full-a,full-b,full-c] [--out DIR] [--wait-load LOAD] [--plots | --no-plots]
  wsu-bench counts [--smoke] [--reps N] [--only wsu,wsu-history,sioxide,node,raw] [--syscalls perf|strace]
                   [--skip callgrind|syscalls] [--members M] [--rounds N] [--acks K] [--top N] [--out DIR]
  wsu-bench cluster [--smoke] [--engine redis|nats] [--only wsu,sioxide] [--members N] [--reps N]
                    [--ms T] [--out DIR]
  wsu-bench replay [--smoke] [--runs N] [--missed 1000,0] [--warmup N] [--bytes B] [--out DIR]
  wsu-bench server <wsu|wsu-history|sioxide|raw> [--port N] [--redis URL | --nats URL]
                   [--ping-interval-ms N] [--ping-timeout-ms N]
  wsu-bench gen --proto <wsu|sio> --addr HOST:PORT --pid PID --plan <smoke|quick|full-a|full-b|full-c>
                [--addr2 HOST:PORT --pid2 PID] [--broker-pid PID]
  wsu-bench plot target/wsu-bench/results-full.json   (redraw bench/*.png)
  wsu-bench report target/wsu-bench/results-full.json (print the tables again)";

/// The value after a flag.
fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, String> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn parse<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("invalid value for {flag}: {s}"))
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_owned())
        .filter(|x| !x.is_empty())
        .collect()
}

fn all(args: &[String]) -> Result<(), String> {
    let mut opts = Opts {
        mode: Mode::Quick,
        reps: None,
        only: None,
        plans: None,
        out: None,
        wait_load: None,
        plots: None,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--smoke" => opts.mode = Mode::Smoke,
            "--quick" => opts.mode = Mode::Quick,
            "--full" => opts.mode = Mode::Full,
            "--reps" => opts.reps = Some(parse(value(args, &mut i, "--reps")?, "--reps")?),
            "--only" => opts.only = Some(list(value(args, &mut i, "--only")?)),
            "--plans" => opts.plans = Some(list(value(args, &mut i, "--plans")?)),
            "--out" => opts.out = Some(value(args, &mut i, "--out")?.into()),
            "--wait-load" => {
                opts.wait_load = Some(parse(value(args, &mut i, "--wait-load")?, "--wait-load")?);
            }
            "--plots" => opts.plots = Some(true),
            "--no-plots" => opts.plots = Some(false),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
        i += 1;
    }
    orchestrate::run(opts)
}

fn server(args: &[String]) -> Result<(), String> {
    let kind = args.first().ok_or(USAGE)?;
    let mut port = 0u16;
    let mut hb = settings::Heartbeat::DEFAULT;
    let mut broker = None;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--port" => port = parse(value(args, &mut i, "--port")?, "--port")?,
            "--redis" => {
                broker = Some(servers::Broker::Redis(
                    value(args, &mut i, "--redis")?.to_owned(),
                ))
            }
            "--nats" => {
                broker = Some(servers::Broker::Nats(
                    value(args, &mut i, "--nats")?.to_owned(),
                ))
            }
            "--ping-interval-ms" => {
                let ms = parse(
                    value(args, &mut i, "--ping-interval-ms")?,
                    "--ping-interval-ms",
                )?;
                hb.interval = std::time::Duration::from_millis(ms);
            }
            "--ping-timeout-ms" => {
                let ms = parse(
                    value(args, &mut i, "--ping-timeout-ms")?,
                    "--ping-timeout-ms",
                )?;
                hb.timeout = std::time::Duration::from_millis(ms);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
        i += 1;
    }
    servers::run(kind, port, hb, broker)
}

fn counts(args: &[String]) -> Result<(), String> {
    let mut opts = counts::Opts {
        smoke: false,
        reps: 1,
        only: None,
        syscalls: None,
        skip: None,
        members: None,
        rounds: None,
        acks: None,
        top: 15,
        out: None,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--smoke" => opts.smoke = true,
            "--reps" => opts.reps = parse(value(args, &mut i, "--reps")?, "--reps")?,
            "--only" => opts.only = Some(list(value(args, &mut i, "--only")?)),
            "--syscalls" => {
                opts.syscalls = Some(counts::SysCounter::parse(value(
                    args,
                    &mut i,
                    "--syscalls",
                )?)?);
            }
            "--skip" => match value(args, &mut i, "--skip")? {
                s @ ("callgrind" | "syscalls") => opts.skip = Some(s.to_owned()),
                other => return Err(format!("--skip callgrind or --skip syscalls, not {other}")),
            },
            "--members" => {
                opts.members = Some(parse(value(args, &mut i, "--members")?, "--members")?)
            }
            "--rounds" => opts.rounds = Some(parse(value(args, &mut i, "--rounds")?, "--rounds")?),
            "--acks" => opts.acks = Some(parse(value(args, &mut i, "--acks")?, "--acks")?),
            "--top" => opts.top = parse(value(args, &mut i, "--top")?, "--top")?,
            "--out" => opts.out = Some(value(args, &mut i, "--out")?.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
        i += 1;
    }
    counts::run(opts)
}

fn cluster(args: &[String]) -> Result<(), String> {
    let mut opts = cluster::Opts {
        smoke: false,
        engine: None,
        only: None,
        members: None,
        reps: None,
        ms: None,
        out: None,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--smoke" => opts.smoke = true,
            "--engine" => {
                opts.engine = Some(match value(args, &mut i, "--engine")? {
                    "redis" => cluster::BrokerKind::Redis,
                    "nats" => cluster::BrokerKind::Nats,
                    other => return Err(format!("--engine redis or --engine nats, not {other}")),
                });
            }
            "--only" => opts.only = Some(list(value(args, &mut i, "--only")?)),
            "--members" => {
                opts.members = Some(parse(value(args, &mut i, "--members")?, "--members")?)
            }
            "--reps" => opts.reps = Some(parse(value(args, &mut i, "--reps")?, "--reps")?),
            "--ms" => opts.ms = Some(parse(value(args, &mut i, "--ms")?, "--ms")?),
            "--out" => opts.out = Some(value(args, &mut i, "--out")?.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
        i += 1;
    }
    cluster::run(opts)
}

fn replay(args: &[String]) -> Result<(), String> {
    let mut opts = replay::Opts {
        smoke: false,
        runs: None,
        missed: None,
        warmup: None,
        bytes: 78,
        out: None,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--smoke" => opts.smoke = true,
            "--runs" => opts.runs = Some(parse(value(args, &mut i, "--runs")?, "--runs")?),
            "--warmup" => opts.warmup = Some(parse(value(args, &mut i, "--warmup")?, "--warmup")?),
            "--missed" => {
                let v = list(value(args, &mut i, "--missed")?);
                opts.missed = Some(
                    v.iter()
                        .map(|x| parse(x, "--missed"))
                        .collect::<Result<_, _>>()?,
                );
            }
            "--bytes" => opts.bytes = parse(value(args, &mut i, "--bytes")?, "--bytes")?,
            "--out" => opts.out = Some(value(args, &mut i, "--out")?.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
        i += 1;
    }
    replay::run(opts)
}

fn generator(args: &[String]) -> Result<(), String> {
    let (mut proto, mut addr, mut pid, mut plan) = (None, None, None, None);
    let (mut addr2, mut pid2, mut broker_pid) = (None, None, None);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--proto" => {
                proto = Some(match value(args, &mut i, "--proto")? {
                    "wsu" => client::Proto::Wsu,
                    "sio" => client::Proto::Sio,
                    other => return Err(format!("unknown protocol {other}")),
                });
            }
            "--addr" => {
                addr = Some(parse::<SocketAddr>(
                    value(args, &mut i, "--addr")?,
                    "--addr",
                )?)
            }
            "--pid" => pid = Some(parse::<u32>(value(args, &mut i, "--pid")?, "--pid")?),
            "--addr2" => {
                addr2 = Some(parse::<SocketAddr>(
                    value(args, &mut i, "--addr2")?,
                    "--addr2",
                )?)
            }
            "--pid2" => pid2 = Some(parse::<u32>(value(args, &mut i, "--pid2")?, "--pid2")?),
            "--broker-pid" => {
                broker_pid = Some(parse::<u32>(
                    value(args, &mut i, "--broker-pid")?,
                    "--broker-pid",
                )?)
            }
            "--plan" => plan = Some(value(args, &mut i, "--plan")?.to_owned()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
        i += 1;
    }
    match (proto, addr, pid, plan) {
        (Some(proto), Some(addr), Some(pid), Some(plan)) => {
            let mut nodes = vec![(addr, pid)];
            match (addr2, pid2) {
                (Some(a), Some(p)) => nodes.push((a, p)),
                (None, None) => {}
                _ => return Err("--addr2 and --pid2 go together".to_owned()),
            }
            load::run(proto, nodes, broker_pid, &plan)
        }
        _ => Err(format!(
            "gen needs --proto, --addr, --pid and --plan\n{USAGE}"
        )),
    }
}

/// The results file named by the first argument, parsed, with its path.
fn read_results(args: &[String]) -> Result<(serde_json::Value, &str), String> {
    let path = args.first().ok_or(USAGE)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let v = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    Ok((v, path))
}

/// The medians of a results file, and the servers present in them.
fn medians_of(
    v: &serde_json::Value,
    path: &str,
) -> Result<(orchestrate::Medians, Vec<orchestrate::Kind>), String> {
    let med: orchestrate::Medians = serde_json::from_value(v["medians"].clone())
        .map_err(|e| format!("{path}: medians: {e}"))?;
    let keys: Vec<String> = med.keys().cloned().collect();
    let kinds = orchestrate::selected(Some(&keys))
        .into_iter()
        .filter(|k| med.contains_key(k.key))
        .collect();
    Ok((med, kinds))
}

/// Print the table, the targets and the run-by-run values of a results file of `all` again.
fn reprint(args: &[String]) -> Result<(), String> {
    let (v, path) = read_results(args)?;
    let samples: orchestrate::Samples = serde_json::from_value(v["samples"].clone())
        .map_err(|e| format!("{path}: samples: {e}"))?;
    let (med, kinds) = medians_of(&v, path)?;
    println!("{}", report::table(&med, &kinds));
    println!("{}", report::targets(&med));
    println!("Run by run:\n\n{}", report::spread(&samples));
    Ok(())
}

/// Redraw the plots from a results file of `all`.
fn replot(args: &[String]) -> Result<(), String> {
    let (v, path) = read_results(args)?;
    let (med, kinds) = medians_of(&v, path)?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in plot::all(&med, &kinds, dir)? {
        eprintln!("plot: {}", f.display());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("all") => all(&args[1..]),
        Some("server") => server(&args[1..]),
        Some("counts") => counts(&args[1..]),
        Some("cluster") => cluster(&args[1..]),
        Some("replay") => replay(&args[1..]),
        Some("gen") => generator(&args[1..]),
        Some("plot") => replot(&args[1..]),
        Some("report") => reprint(&args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    if let Err(e) = result {
        eprintln!("wsu-bench: {e}");
        std::process::exit(1);
    }
}
