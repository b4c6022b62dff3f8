//! Real brokers for the cluster tests: a `redis-server` or `nats-server` child process on a
//! free port, with a fresh data directory, killed on drop.
//!
//! [`Service::start`] starts the binary when it is on `PATH` (or in `/usr/sbin`); without it,
//! it falls back to `WSU_REDIS_URL` / `WSU_NATS_URL` (a shared broker: no fault injection);
//! without either, the test is skipped with a loud message on stderr, except under `CI=true`
//! (or any CI value but `0`/`false`), where a missing broker fails the test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `redis-server` (Debian package `redis-server`).
    Redis,
    /// `nats-server` (Debian package `nats-server`), with JetStream.
    Nats,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Nats => "nats-server",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Kind::Redis => "WSU_REDIS_URL",
            Kind::Nats => "WSU_NATS_URL",
        }
    }
}

/// Whether this is a CI run (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    !matches!(
        std::env::var("CI").as_deref(),
        Err(_) | Ok("") | Ok("0") | Ok("false")
    )
}

/// A prefix no other test (or test run) uses: for topic and key prefixes, so that tests sharing
/// one broker do not see each other.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let clean: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!(
        "t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        clean
    )
}

/// A broker for one test.
#[derive(Debug)]
pub struct Service {
    kind: Kind,
    port: u16,
    url: String,
    child: Option<Child>,
    binary: Option<PathBuf>,
    dir: Option<PathBuf>,
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/sbin".into(),
            "/usr/local/sbin".into(),
            "/usr/bin".into(),
        ])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl Service {
    /// Start a broker for `test`, or `None` (after a loud message) when none is available
    /// outside CI. Panics under CI when none is available.
    pub fn start(kind: Kind, test: &str) -> Option<Service> {
        if let Some(binary) = find_binary(kind.binary()) {
            let dir = std::env::temp_dir().join(unique_prefix(test));
            std::fs::create_dir_all(&dir).expect("data dir");
            let port = free_port();
            let mut s = Service {
                kind,
                port,
                url: url_for(kind, port),
                child: None,
                binary: Some(binary),
                dir: Some(dir),
            };
            s.spawn();
            return Some(s);
        }
        if let Ok(url) = std::env::var(kind.env()) {
            return Some(Service {
                kind,
                port: 0,
                url,
                child: None,
                binary: None,
                dir: None,
            });
        }
        let msg = format!(
            "{} is not on PATH and {} is not set: cannot run `{test}` (apt-get install {})",
            kind.binary(),
            kind.env(),
            kind.binary()
        );
        if in_ci() {
            panic!("FAILED (CI): {msg}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {msg}; under CI=true this test FAILS !!!!!!!!\n");
        None
    }

    /// Its URL (`redis://127.0.0.1:PORT/?protocol=resp3`, `nats://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Which broker this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether this is a child process the test controls (so [`kill`](Self::kill) and
    /// [`restart`](Self::restart) work), not a shared broker from the environment.
    pub fn controllable(&self) -> bool {
        self.binary.is_some()
    }

    fn spawn(&mut self) {
        let binary = self.binary.as_ref().expect("a child service");
        let dir = self.dir.as_ref().expect("a data dir");
        let port = self.port.to_string();
        let mut cmd = Command::new(binary);
        match self.kind {
            Kind::Redis => {
                cmd.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir);
            }
            Kind::Nats => {
                cmd.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
                    .arg(dir);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn broker");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not start",
                binary.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the broker (SIGKILL): its clients see the connection drop.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

fn url_for(kind: Kind, port: u16) -> String {
    match kind {
        Kind::Redis => format!("redis://127.0.0.1:{port}/?protocol=resp3"),
        Kind::Nats => format!("nats://127.0.0.1:{port}"),
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
