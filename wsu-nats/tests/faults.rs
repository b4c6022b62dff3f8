//! Fault tests on a real `nats` child process: killed and restarted under a steady broadcast
//! (tests/src/cluster.rs, `broker_restart`).

use std::sync::Arc;

use wsu::cluster::Engine;
use wsu_nats::NatsEngine;
use wsu_tests::cluster::EngineFactory;
use wsu_tests::services::{Kind, Service, unique_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart() {
    let Some(mut service) = Service::start(Kind::Nats, "broker_restart") else {
        return;
    };
    if !service.controllable() {
        eprintln!("SKIPPED: broker_restart needs a nats child process (not WSU_*_URL)");
        assert!(!wsu_tests::services::in_ci(), "CI must run the fault test");
        return;
    }
    let url = service.url();
    let factory: EngineFactory = Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let e: Box<dyn Engine> = Box::new(NatsEngine::connect(&url).await.expect("connect"));
            e
        })
    });
    wsu_tests::cluster::broker_restart(factory, &unique_prefix("broker_restart"), &mut service)
        .await;
}
