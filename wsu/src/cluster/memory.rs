//! An in-process broker: several [`Server`](crate::Server)s in one process, as a cluster.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::engine::{Engine, EngineError, EngineFuture, EngineSink};
use super::streams::{StreamLimits, StreamPos, StreamRead, Streams};
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
    /// Stream subscribers: (engine, prefix, sink).
    readers: Vec<(Weak<()>, String, EngineSink)>,
    /// Streams by (prefix, name).
    streams: HashMap<(String, String), MemStream>,
    /// Stored values by (prefix, key), with their expiry.
    values: HashMap<(String, String), (Bytes, Instant)>,
    epochs: u64,
}

struct MemStream {
    epoch: String,
    top: u64,
    entries: VecDeque<(StreamPos, Instant, Bytes)>,
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
            prefix: Arc::new(Mutex::new(String::new())),
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
        for (_, _, sink) in &s.readers {
            if down {
                sink.lost("memory broker down");
            } else {
                sink.restored();
            }
        }
    }

    /// Forget every stream and stored value, as a broker restarted without persistence
    /// would: streams start again with new epochs.
    pub fn wipe(&self) {
        let mut s = lock(&self.state);
        s.streams.clear();
        s.values.clear();
    }
}

impl BrokerState {
    fn new_epoch(&mut self) -> String {
        self.epochs += 1;
        let salt = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), self.epochs);
        format!("m{:x}{:08x}", self.epochs, salt as u32)
    }
}

/// One node's connection to a [`MemoryBroker`].
#[derive(Debug, Clone)]
pub struct MemoryEngine {
    broker: MemoryBroker,
    token: Arc<()>,
    max_payload: usize,
    /// Set by [`Streams::start`].
    prefix: Arc<Mutex<String>>,
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
        let mut s = lock(&self.broker.state);
        s.subscribers
            .retain(|sub| !Weak::ptr_eq(&sub.engine, &token));
        s.readers.retain(|(t, _, _)| !Weak::ptr_eq(t, &token));
        Box::pin(async {})
    }

    fn streams(&self) -> Option<&dyn Streams> {
        Some(self)
    }
}

impl Streams for MemoryEngine {
    fn start(&self, prefix: &str, sink: EngineSink) -> EngineFuture<'_, Result<(), EngineError>> {
        *lock(&self.prefix) = prefix.to_owned();
        lock(&self.broker.state).readers.push((
            Arc::downgrade(&self.token),
            prefix.to_owned(),
            sink,
        ));
        Box::pin(async { Ok(()) })
    }

    fn append(
        &self,
        stream: &str,
        payload: Bytes,
        limits: StreamLimits,
    ) -> EngineFuture<'static, Result<StreamPos, EngineError>> {
        let prefix = lock(&self.prefix).clone();
        let mut s = lock(&self.broker.state);
        if s.down {
            return Box::pin(std::future::ready(Err(EngineError::Unavailable(
                "memory broker down".into(),
            ))));
        }
        if payload.len() > self.max_payload {
            return Box::pin(std::future::ready(Err(EngineError::TooLarge {
                size: payload.len(),
                max: self.max_payload,
            })));
        }
        let now = Instant::now();
        let key = (prefix.clone(), stream.to_owned());
        if !s.streams.contains_key(&key) {
            let epoch = s.new_epoch();
            s.streams.insert(
                key.clone(),
                MemStream {
                    epoch,
                    top: 0,
                    entries: VecDeque::new(),
                },
            );
        }
        let st = s.streams.get_mut(&key).unwrap_or_else(|| unreachable!());
        let pos = StreamPos::new(st.top + 1, st.top, st.epoch.clone());
        st.top += 1;
        st.entries.push_back((pos.clone(), now, payload.clone()));
        while st.entries.len() > limits.keep
            || st
                .entries
                .front()
                .is_some_and(|(_, at, _)| now.saturating_duration_since(*at) > limits.ttl)
        {
            st.entries.pop_front();
        }
        s.readers
            .retain(|(t, _, sink)| t.strong_count() > 0 && !sink.is_closed());
        let name: Arc<str> = Arc::from(stream);
        for (_, p, sink) in &s.readers {
            if *p == prefix {
                sink.entry(name.clone(), pos.clone(), payload.clone());
            }
        }
        Box::pin(std::future::ready(Ok(pos)))
    }

    fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> EngineFuture<'static, Result<StreamRead, EngineError>> {
        let prefix = lock(&self.prefix).clone();
        let mut s = lock(&self.broker.state);
        if s.down {
            return Box::pin(std::future::ready(Err(EngineError::Unavailable(
                "memory broker down".into(),
            ))));
        }
        let r = match s.streams.get(&(prefix, stream.to_owned())) {
            Some(st) => StreamRead::new(
                st.epoch.clone(),
                st.top,
                st.entries
                    .iter()
                    .filter(|(p, _, _)| p.offset > after)
                    .take(limit)
                    .map(|(p, _, b)| (p.clone(), b.clone()))
                    .collect(),
            ),
            None => StreamRead::new(s.new_epoch(), 0, Vec::new()),
        };
        Box::pin(std::future::ready(Ok(r)))
    }

    fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> EngineFuture<'static, Result<(), EngineError>> {
        let prefix = lock(&self.prefix).clone();
        let mut s = lock(&self.broker.state);
        let r = if s.down {
            Err(EngineError::Unavailable("memory broker down".into()))
        } else {
            s.values
                .insert((prefix, key.to_owned()), (value, Instant::now() + ttl));
            Ok(())
        };
        Box::pin(std::future::ready(r))
    }

    fn take(&self, key: &str) -> EngineFuture<'static, Result<Option<Bytes>, EngineError>> {
        let prefix = lock(&self.prefix).clone();
        let mut s = lock(&self.broker.state);
        let r = if s.down {
            Err(EngineError::Unavailable("memory broker down".into()))
        } else {
            Ok(s.values
                .remove(&(prefix, key.to_owned()))
                .filter(|(_, expires)| *expires > Instant::now())
                .map(|(v, _)| v))
        };
        Box::pin(std::future::ready(r))
    }
}
