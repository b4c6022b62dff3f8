//! What the publisher and the subscriber share: opening a RESP3 connection, the reconnection
//! backoff, the shutdown signal, error classification.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, RedisError};
use tokio::sync::{Notify, watch};

/// How long opening a connection may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a reply (a PING, a pipeline of PUBLISH) may take before the connection is deemed dead.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle connection is probed with a PING.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(1);
/// How long that PING may take.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Open a RESP3 multiplexed connection whose push messages go to `on_push`; returns it with a
/// [`Notify`] woken when the library reports the connection closed.
pub(crate) async fn open(
    client: &Client,
    on_push: impl Fn(PushInfo) + Send + Sync + 'static,
) -> Result<(MultiplexedConnection, Arc<Notify>), RedisError> {
    let dead = Arc::new(Notify::new());
    let notify = dead.clone();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_push_sender(move |info: PushInfo| -> Result<(), ()> {
            if info.kind == PushKind::Disconnection {
                // `notify_one` keeps a permit: the task sees it even when not waiting right now.
                notify.notify_one();
            } else {
                on_push(info);
            }
            Ok(())
        });
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok((conn, dead))
}

/// Whether `e` means the connection is gone or unusable (reconnect), rather than a refusal of
/// one command by the server.
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// Resolves once the engine is shutting down (closed, or dropped).
pub(crate) async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    // An error means the sender (the engine) is gone: stop as well.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Await `fut` unless the engine shuts down first (`None`).
pub(crate) async fn unless_shutdown<F: Future>(
    rx: &mut watch::Receiver<bool>,
    fut: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = shutting_down(rx) => None,
        out = fut => Some(out),
    }
}

/// Exponential reconnection backoff: 50 ms doubling to 2 s, each delay with ±25 % jitter.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    pub(crate) fn new() -> Self {
        Backoff { next: Self::MIN }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(Self::MAX);
        // A random factor in [0.75, 1.25), from the std hasher's random keys (no `rand` needed).
        let r = RandomState::new().build_hasher().finish();
        let factor = 0.75 + (r % 1000) as f64 / 2000.0;
        base.mul_f64(factor)
    }
}

/// `url` with a password replaced by `***`, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_two_seconds_with_jitter() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(37) && delays[0] < Duration::from_millis(63));
        for d in &delays[6..] {
            assert!(*d >= Duration::from_millis(1500) && *d < Duration::from_millis(2500));
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(63));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://:secret@host/"), "redis://:***@host/");
        assert_eq!(
            redact("redis://127.0.0.1:6379/?protocol=resp3"),
            "redis://127.0.0.1:6379/?protocol=resp3"
        );
        assert_eq!(redact("redis://user@host"), "redis://user@host");
    }
}
