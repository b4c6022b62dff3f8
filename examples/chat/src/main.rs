//! The wsu example chat server: `cargo run -p chat`, then open http://127.0.0.1:8080.
//!
//! Flags: `--port N` (listen on port N of the address: `WSU_ADDR`'s host, or 127.0.0.1).
//!
//! Environment: `WSU_ADDR` (default `127.0.0.1:8080`), `WSU_ORIGINS` (comma-separated allowed
//! origins, `*` for any; default: the page's own origin, plus clients that send no `Origin`),
//! `CHAT_ADMIN_TOKEN` (enables the `/admin` namespace).
//!
//! Several nodes: set `CHAT_REDIS_URL` (e.g. `redis://127.0.0.1:6379`) or `CHAT_NATS_URL` (e.g.
//! `nats://127.0.0.1:4222`), not both, on every node; `CHAT_CLUSTER_PREFIX` (default `chat`)
//! separates clusters on one broker, `CHAT_CLUSTER_HEARTBEAT_MS` (default 2000) sets the
//! heartbeat (the node timeout is three heartbeats). Messages and typing reach every node;
//! nicknames, member lists and history are per node (see `chat::build_with_engine`).

use std::process::ExitCode;
use std::time::Duration;

use wsu::cluster::{ClusterConfig, Engine};

const USAGE: &str = "usage: chat [--port N]";

/// The listening address: `WSU_ADDR` (default `127.0.0.1:8080`), its port replaced by `--port`.
fn listen_addr(wsu_addr: Option<String>, port: Option<u16>) -> String {
    let addr = wsu_addr.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    match port {
        None => addr,
        Some(port) => {
            let host = addr
                .rsplit_once(':')
                .map_or(addr.as_str(), |(host, _)| host);
            format!("{host}:{port}")
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<u16>, String> {
    let mut port = None;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--port" => args.next().ok_or("--port needs a value")?,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => match other.strip_prefix("--port=") {
                Some(v) => v.to_owned(),
                None => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            },
        };
        port = Some(
            value
                .parse::<u16>()
                .map_err(|_| format!("--port: not a port number: {value:?}"))?,
        );
    }
    Ok(port)
}

/// `url` without its credentials, if any (`redis://:secret@host` → `redis://***@host`), for
/// messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The engine named by `CHAT_REDIS_URL` / `CHAT_NATS_URL`, connected; `None` without either.
async fn engine() -> Result<Option<(Box<dyn Engine>, &'static str, String)>, String> {
    match (var("CHAT_REDIS_URL"), var("CHAT_NATS_URL")) {
        (Some(_), Some(_)) => {
            Err("CHAT_REDIS_URL and CHAT_NATS_URL are both set: choose one engine".to_owned())
        }
        (Some(url), None) => match wsu_redis::RedisEngine::connect(&url).await {
            Ok(e) => Ok(Some((Box::new(e), "redis", redact(&url)))),
            Err(e) => Err(format!(
                "cannot connect to Redis at {} (CHAT_REDIS_URL): {e}",
                redact(&url)
            )),
        },
        (None, Some(url)) => match wsu_nats::NatsEngine::connect(&url).await {
            Ok(e) => Ok(Some((Box::new(e), "nats", redact(&url)))),
            Err(e) => Err(format!(
                "cannot connect to NATS at {} (CHAT_NATS_URL): {e}",
                redact(&url)
            )),
        },
        (None, None) => Ok(None),
    }
}

fn cluster_config() -> Result<ClusterConfig, String> {
    let prefix = var("CHAT_CLUSTER_PREFIX").unwrap_or_else(|| chat::CLUSTER_PREFIX.to_owned());
    let mut config = ClusterConfig::default().prefix(prefix.trim());
    if let Some(ms) = var("CHAT_CLUSTER_HEARTBEAT_MS") {
        let ms: u64 =
            ms.trim().parse().ok().filter(|&ms| ms > 0).ok_or_else(|| {
                format!("CHAT_CLUSTER_HEARTBEAT_MS: not a positive number: {ms:?}")
            })?;
        config = config.heartbeat(Duration::from_millis(ms), Duration::from_millis(ms * 3));
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port = parse_args(std::env::args().skip(1))?;
    let addr = listen_addr(std::env::var("WSU_ADDR").ok(), port);
    let config = chat::Config::from_env();
    let admin = config.admin_token.is_some();
    let cluster = cluster_config()?;
    let engine = engine().await?;
    let label = engine
        .as_ref()
        .map(|(_, name, url)| format!("{name} {url}"));
    let server = chat::build_with_engine(config, engine.map(|(e, _, _)| e), cluster)?;
    if let (Some(label), Some(cluster)) = (label, server.cluster()) {
        println!("cluster: {label} (node {})", cluster.node_id());
    }
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    println!("wsu chat listening on http://{local} (WebSocket endpoint ws://{local}/ws)");
    if admin {
        println!("admin namespace /admin enabled (CHAT_ADMIN_TOKEN)");
    }
    let stopper = server.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            println!("shutting down");
            stopper.shutdown().await;
        }
    });
    server.serve(listener).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_flag_replaces_the_port() {
        assert_eq!(listen_addr(None, None), "127.0.0.1:8080");
        assert_eq!(listen_addr(None, Some(8081)), "127.0.0.1:8081");
        assert_eq!(
            listen_addr(Some("0.0.0.0:9000".into()), None),
            "0.0.0.0:9000"
        );
        assert_eq!(
            listen_addr(Some("0.0.0.0:9000".into()), Some(1)),
            "0.0.0.0:1"
        );
        assert_eq!(listen_addr(Some("[::1]:9000".into()), Some(2)), "[::1]:2");
        let args = |a: &[&str]| parse_args(a.iter().map(|s| (*s).to_owned()));
        assert_eq!(args(&[]), Ok(None));
        assert_eq!(args(&["--port", "8082"]), Ok(Some(8082)));
        assert_eq!(args(&["--port=0"]), Ok(Some(0)));
        assert!(args(&["--port"]).is_err());
        assert!(args(&["--port", "x"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("nats://tok@h"), "nats://***@h");
    }
}
