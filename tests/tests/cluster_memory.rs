//! The cluster conformance suite (tests/src/cluster.rs) on the in-process engine,
//! `wsu::cluster::MemoryBroker`: three nodes in one process. The same bodies run on Redis
//! (wsu-redis/tests/cluster.rs) and NATS (wsu-nats/tests/cluster.rs).

use std::sync::Arc;

use wsu::cluster::{Engine, MemoryBroker};
use wsu_tests::cluster::{EngineFactory, Setup};

async fn setup(_test: &str) -> Option<Setup> {
    let broker = MemoryBroker::new();
    let factory: EngineFactory = Arc::new(move || {
        let e: Box<dyn Engine> = Box::new(broker.engine());
        Box::pin(async move { e })
    });
    Some((factory, Box::new(())))
}

wsu_tests::cluster_suite!(setup);
