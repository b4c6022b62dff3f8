//! The fuzz corpus and every saved crash, replayed on stable through the fuzz targets' own entry
//! points (`wsu::__private::fuzz`, built with wsu's `__fuzzing` feature, which this package's
//! dev-dependency enables), so that what the fuzzers found stays fixed; and the regression tests
//! of the bugs they found. See `fuzz/README.md`.
//!
//! Generic over the targets: every `[[bin]]` of `fuzz/Cargo.toml` is replayed through the entry
//! point of the same name in `wsu::__private::fuzz::TARGETS`, and the test fails when the two
//! lists disagree or a corpus directory belongs to no target.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::json;
use wsu::__private::fuzz::TARGETS;
use wsu::Server;
use wsu_tests::TestServer;

/// The committed corpus each target must keep at least (it has about 4× that); a target not
/// listed needs at least one input.
const MIN_CORPUS: &[(&str, usize)] = &[("decode", 50), ("handshake", 50), ("registry", 20)];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The `name`s of the `[[bin]]` tables of `fuzz/Cargo.toml`: the fuzz targets, as `cargo fuzz
/// list` reports them.
fn declared_targets() -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut names = BTreeSet::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(value) = line
            .strip_prefix("name")
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix('='))
            .filter(|_| in_bin)
        {
            let name = value.trim().trim_matches('"');
            assert!(
                names.insert(name.to_owned()),
                "fuzz/Cargo.toml: {name} twice"
            );
        }
    }
    names
}

/// The inputs of one target: `fuzz/corpus/<target>/*` and `fuzz/artifacts/<target>/*`, and how
/// many of them are saved crashes.
fn inputs(target: &str) -> (Vec<PathBuf>, usize) {
    let mut corpus = files(&fuzz_dir().join("corpus").join(target));
    let artifacts = files(&fuzz_dir().join("artifacts").join(target));
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

/// The subdirectories of `fuzz/<dir>/`.
fn subdirs(dir: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir)) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_dir())
        .map(|p| {
            p.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Run `target` on every input of `name`; the problems found (too small a corpus, inputs that
/// panic).
fn replay(name: &str, target: fn(&[u8])) -> Vec<String> {
    let (inputs, saved) = inputs(name);
    let min_corpus = MIN_CORPUS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(1, |(_, min)| *min);
    let mut problems = Vec::new();
    if inputs.len() - saved < min_corpus {
        problems.push(format!(
            "fuzz/corpus/{name} has {} inputs, expected at least {min_corpus}",
            inputs.len() - saved
        ));
    }
    for path in &inputs {
        let data = std::fs::read(path).expect("readable corpus file");
        if std::panic::catch_unwind(|| target(&data)).is_err() {
            problems.push(format!("{name}: input panics: {}", path.display()));
        }
    }
    problems
}

/// The entry points and `fuzz/Cargo.toml` name the same targets, and every corpus or artifacts
/// directory belongs to one: a target cannot be added (or renamed) and left out of the replay.
#[test]
fn every_fuzz_target_has_an_entry_point_and_a_corpus() {
    let declared = declared_targets();
    assert!(!declared.is_empty(), "no [[bin]] in fuzz/Cargo.toml");
    let entry_points: BTreeSet<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(
        entry_points.len(),
        TARGETS.len(),
        "a name twice in wsu::__private::fuzz::TARGETS"
    );
    assert_eq!(
        declared, entry_points,
        "the [[bin]] targets of fuzz/Cargo.toml (left) and wsu::__private::fuzz::TARGETS \
         (right, wsu/src/fuzzing.rs) differ"
    );
    for dir in ["corpus", "artifacts"] {
        let stray: Vec<String> = subdirs(dir).difference(&declared).cloned().collect();
        assert!(stray.is_empty(), "fuzz/{dir}/ of no target: {stray:?}");
    }
}

/// Every input of every target replays without a panic, the targets in parallel.
#[test]
fn every_corpus_and_saved_crash_replays() {
    let problems: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = TARGETS
            .iter()
            .map(|&(name, target)| scope.spawn(move || replay(name, target)))
            .collect();
        runs.into_iter()
            .flat_map(|run| run.join().expect("the replay thread itself does not panic"))
            .collect()
    });
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The crash the registry target found (see the test below) stays among the saved inputs.
#[test]
fn registry_keeps_its_regression_input() {
    assert!(
        fuzz_dir()
            .join("artifacts/registry/dynamic-namespace-leak-on-failed-join")
            .is_file(),
        "fuzz/artifacts/registry lost its regression input"
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
