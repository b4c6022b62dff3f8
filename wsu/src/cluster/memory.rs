//! An in-process broker: several [`Server`](crate::Server)s in one process, as a cluster.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use super::engine::{Engine, EngineError, EngineFuture, EngineSink};
use crate::sync::lock;

/// An in-process message broker: every [`MemoryEngine`] made by [`engine`](MemoryBroker::engine)
/// sees what the others publish, synchronously and in order.
///
/// It runs the cluster layer without a network: for tests (the conformance suite runs the same
/// bodies on it, on Redis and on NATS), for several servers in one process, and to inject a
/// broker outage with [`set_down`](MemoryBroker::set_down). A single server needs no engine at
/// all.
///
/// ```
/// # fn demo() -> Result<(), wsu::BuildError> {
/// let broker = wsu::cluster::MemoryBroker::new();
/// let a = wsu::Server::builder().engine(broker.engine()).build()?;
/// let b = wsu::Server::builder().engine(broker.engine()).build()?;
/// # let _ = (a, b); Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<BrokerState>>,
}

#[derive(Default)]
struct BrokerState {
    down: bool,
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    engine: Weak<()>,
    topics: HashSet<Arc<str>>,
    sink: EngineSink,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("MemoryBroker")
            .field("down", &s.down)
            .field("subscribers", &s.subscribers.len())
            .finish()
    }
}

impl MemoryBroker {
    /// A new, empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection to this broker, for one node.
    pub fn engine(&self) -> MemoryEngine {
        MemoryEngine {
            broker: self.clone(),
            token: Arc::new(()),
            max_payload: 1 << 20,
        }
    }

    /// Simulate an outage (`true`) or its end (`false`): while down, every publish fails with
    /// [`EngineError::Unavailable`] and subscribers got [`SinkEvent::Lost`](super::SinkEvent::Lost);
    /// on the way up they get [`SinkEvent::Restored`](super::SinkEvent::Restored).
    pub fn set_down(&self, down: bool) {
        let mut s = lock(&self.state);
        if s.down == down {
            return;
        }
        s.down = down;
        s.subscribers.retain(|sub| sub.engine.strong_count() > 0);
        for sub in &s.subscribers {
            if down {
                sub.sink.lost("memory broker down");
            } else {
                sub.sink.restored();
            }
        }
    }
}

/// One node's connection to a [`MemoryBroker`].
#[derive(Debug, Clone)]
pub struct MemoryEngine {
    broker: MemoryBroker,
    token: Arc<()>,
    max_payload: usize,
}

impl MemoryEngine {
    /// Refuse payloads above `max` bytes (1 MiB by default, as NATS).
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn subscribe(
        &self,
        topics: Vec<String>,
        sink: EngineSink,
    ) -> EngineFuture<'_, Result<(), EngineError>> {
        let mut s = lock(&self.broker.state);
        s.subscribers.push(Subscriber {
            engine: Arc::downgrade(&self.token),
            topics: topics.into_iter().map(Arc::from).collect(),
            sink,
        });
        Box::pin(async { Ok(()) })
    }

    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> EngineFuture<'static, Result<(), EngineError>> {
        let r = if payload.len() > self.max_payload {
            Err(EngineError::TooLarge {
                size: payload.len(),
                max: self.max_payload,
            })
        } else {
            let mut s = lock(&self.broker.state);
            if s.down {
                Err(EngineError::Unavailable("memory broker down".into()))
            } else {
                s.subscribers
                    .retain(|sub| sub.engine.strong_count() > 0 && !sub.sink.is_closed());
                for sub in &s.subscribers {
                    if let Some(t) = sub.topics.get(topic) {
                        sub.sink.deliver(t.clone(), payload.clone());
                    }
                }
                Ok(())
            }
        };
        Box::pin(std::future::ready(r))
    }

    fn close(&self) -> EngineFuture<'_, ()> {
        let token = Arc::downgrade(&self.token);
        lock(&self.broker.state)
            .subscribers
            .retain(|sub| !Weak::ptr_eq(&sub.engine, &token));
        Box::pin(async {})
    }
}
