//! The cluster conformance suite (tests/src/cluster.rs) on Redis: three wsu nodes in one
//! process, on a `redis-server` child process started for each test.

use std::sync::Arc;

use wsu::cluster::Engine;
use wsu_redis::RedisEngine;
use wsu_tests::cluster::{EngineFactory, Setup};
use wsu_tests::services::{Kind, Service};

async fn setup(test: &str) -> Option<Setup> {
    let service = Service::start(Kind::Redis, test)?;
    let url = service.url();
    let factory: EngineFactory = Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let e: Box<dyn Engine> =
                Box::new(RedisEngine::connect(&url).await.expect("connect to redis"));
            e
        })
    });
    Some((factory, Box::new(service)))
}

wsu_tests::cluster_suite!(setup);
