//! The fuzz corpus and every saved crash, replayed on stable through the fuzz targets' own entry
//! points (`wsu::__private::fuzz`), so that what the fuzzers found stays fixed; and the
//! regression tests of the bugs they found. See `fuzz/README.md`.

use std::path::{Path, PathBuf};

use serde_json::json;
use wsu::Server;
use wsu_tests::TestServer;

/// The inputs of one target: `fuzz/corpus/<target>/*` and `fuzz/artifacts/<target>/*`.
fn inputs(target: &str) -> (Vec<PathBuf>, usize) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut corpus = files(&fuzz.join("corpus").join(target));
    let artifacts = files(&fuzz.join("artifacts").join(target));
    let saved = artifacts.len();
    corpus.extend(artifacts);
    (corpus, saved)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Run `target` on every input; fail naming the inputs that panic.
fn replay(name: &str, target: fn(&[u8]), min_corpus: usize) {
    let (inputs, saved) = inputs(name);
    assert!(
        inputs.len() - saved >= min_corpus,
        "fuzz/corpus/{name} has {} inputs, expected at least {min_corpus}",
        inputs.len() - saved
    );
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("readable corpus file");
            std::panic::catch_unwind(|| target(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{name}: failing inputs: {failed:#?}");
}

#[test]
fn decode_corpus_and_crashes_replay() {
    replay("decode", wsu::__private::fuzz::decode, 50);
}

#[test]
fn handshake_corpus_and_crashes_replay() {
    replay("handshake", wsu::__private::fuzz::handshake, 50);
}

#[test]
fn registry_corpus_and_crashes_replay() {
    replay("registry", wsu::__private::fuzz::registry, 20);
    // The crash the registry target found (see the test below) is among the saved inputs.
    let (_, saved) = inputs("registry");
    assert!(
        saved >= 1,
        "fuzz/artifacts/registry lost its regression inputs"
    );
}

/// Found by the registry target (fuzz/artifacts/registry/dynamic-namespace-leak-on-failed-join):
/// a join of a dynamic namespace that failed (namespace cap, room cap, closed connection) left
/// the namespace, created for the join, empty in the registry for ever: a client at its cap could
/// make the server create any number of namespaces.
#[tokio::test]
async fn failed_joins_leave_no_empty_dynamic_namespace() {
    let server = Server::builder()
        .collect_registered(false)
        .allow_namespaces(|name| name.starts_with("/dyn"))
        .max_namespaces_per_connection(2)
        .max_rooms_per_connection(1)
        .build()
        .expect("valid server");
    let ts = TestServer::start(server.clone()).await;
    let mut client = ts.client().await;

    // In `/` and `/dyn0` (with a room): at both caps.
    client
        .send(json!({"type": "join", "namespace": "/dyn0", "room": "r", "ackId": "1"}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "ack", "namespace": "/dyn0", "ackId": "1"})
    );
    assert_eq!(server.stats().dynamic_namespaces, 1);

    for (i, ns) in ["/dyn1", "/dyn2", "/dyn3"].iter().enumerate() {
        let ack_id = format!("n{i}");
        client
            .send(json!({"type": "join", "namespace": ns, "ackId": ack_id}))
            .await;
        assert_eq!(
            client.recv().await,
            json!({"type": "error", "namespace": ns, "ackId": ack_id, "error": "too many namespaces"})
        );
    }
    // A second room of a namespace already joined: the room cap.
    client
        .send(json!({"type": "join", "namespace": "/dyn0", "room": "s", "ackId": "r"}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "error", "namespace": "/dyn0", "ackId": "r", "error": "too many rooms"})
    );
    let stats = server.stats();
    assert_eq!(stats.dynamic_namespaces, 1, "only /dyn0 exists");
    assert_eq!(stats.rooms, 1);
    assert!(server.rooms("/dyn1").is_empty());

    // Leaving the last namespace removes it too.
    client
        .send(json!({"type": "leave", "namespace": "/dyn0", "ackId": "l"}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "ack", "namespace": "/dyn0", "ackId": "l"})
    );
    let stats = server.stats();
    assert_eq!((stats.dynamic_namespaces, stats.rooms), (0, 0));
    ts.stop().await;
}
