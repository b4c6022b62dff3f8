//! A TCP proxy between a client and a server that can simulate network failures: [`cut`]
//! drops every open link in both directions at once, without a WebSocket close frame (each
//! side sees its TCP connection end), [`freeze`] stops forwarding on the open links but keeps
//! their sockets open (a half-open network: neither side notices until a heartbeat times
//! out), and [`refuse`] makes new connections fail until
//! [`accept`], so that a test controls when a client can reconnect.
//!
//! The proxy keeps listening across cuts: a client configured with its URL reconnects through
//! it.
//!
//! [`cut`]: Proxy::cut
//! [`freeze`]: Proxy::freeze
//! [`refuse`]: Proxy::refuse
//! [`accept`]: Proxy::accept

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// An open link: its task, and the switch that freezes it.
struct Link {
    task: AbortHandle,
    frozen: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    links: Mutex<Vec<Link>>,
    refusing: AtomicBool,
    /// Connections forwarded to the server (refused ones not counted).
    accepted: AtomicUsize,
    /// Connections closed at once because the proxy was refusing.
    refused: AtomicUsize,
}

/// A running proxy to one server address.
pub struct Proxy {
    /// The address clients connect to.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listen on an ephemeral port and forward every connection to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept_loop(listener, target, state.clone()));
        Proxy { addr, state, task }
    }

    /// The WebSocket URL of the server's `/ws` through the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Drop every open link, both directions at once, without a close frame. New connections
    /// are still forwarded (unless [`refuse`](Proxy::refuse) was called).
    pub fn cut(&self) {
        let links = std::mem::take(&mut *lock(&self.state.links));
        for link in links {
            link.task.abort();
        }
    }

    /// Stop forwarding on every open link, in both directions, keeping its sockets open (bytes
    /// in flight are lost; nothing more gets through) until [`cut`](Proxy::cut). New
    /// connections are not affected.
    pub fn freeze(&self) {
        for link in lock(&self.state.links).iter() {
            link.frozen.send_replace(true);
        }
    }

    /// Close every new connection at once (before any byte is forwarded) until
    /// [`accept`](Proxy::accept).
    pub fn refuse(&self) {
        self.state.refusing.store(true, Ordering::SeqCst);
    }

    /// Forward new connections again.
    pub fn accept(&self) {
        self.state.refusing.store(false, Ordering::SeqCst);
    }

    /// How many connections were forwarded to the server so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// How many connections were closed at once while refusing.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, state: Arc<State>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if state.refusing.load(Ordering::SeqCst) {
            state.refused.fetch_add(1, Ordering::SeqCst);
            drop(inbound);
            continue;
        }
        state.accepted.fetch_add(1, Ordering::SeqCst);
        let (frozen, frozen_rx) = watch::channel(false);
        let task = tokio::spawn(forward(inbound, target, frozen_rx));
        let mut links = lock(&state.links);
        links.retain(|l| !l.task.is_finished());
        links.push(Link {
            task: task.abort_handle(),
            frozen,
        });
    }
}

/// Forward bytes both ways until either side ends, or until frozen (then hold both sockets,
/// forwarding nothing). Aborting the task drops both sockets.
async fn forward(mut inbound: TcpStream, target: SocketAddr, mut frozen: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let freeze = async move {
        let _ = frozen.wait_for(|f| *f).await;
    };
    let copied = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => true,
        () = freeze => false,
    };
    if !copied {
        // Frozen: hold both sockets open, forwarding nothing, until the task is aborted.
        std::future::pending::<()>().await;
    }
}
