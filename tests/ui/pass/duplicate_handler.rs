// Two functions for the same `(namespace, event)`: `build` fails with
// `BuildError::DuplicateHandler` naming both source locations, whether the functions are
// collected or registered explicitly. (A program of its own: in `tests/macros.rs` the pair
// would break every default build of that binary.)
use wsu::{BuildError, Server, ws_connect, ws_event};

const FIRST: u32 = line!() + 2;
#[ws_event(namespace = "/dup", name = "chat")]
async fn first(text: String) -> String {
    text
}

const SECOND: u32 = line!() + 2;
#[ws_event(namespace = "/dup", name = "chat")]
async fn second(text: String) -> usize {
    text.len()
}

// Same name, other namespace: no conflict.
#[ws_event(namespace = "/other", name = "chat")]
async fn third(text: String) -> String {
    text
}

const HOOK: u32 = line!() + 2;
#[ws_connect(namespace = "/hooked")]
async fn hook_one() {}

#[ws_connect(namespace = "/hooked")]
async fn hook_two() {}

fn main() {
    let first_at = format!("{}:{FIRST}", file!());
    let second_at = format!("{}:{SECOND}", file!());

    let err = Server::builder()
        .collect_registered(false)
        .handler(second)
        .handler(third)
        .handler(first)
        .build()
        .err()
        .expect("a duplicate");
    match &err {
        BuildError::DuplicateHandler {
            namespace,
            event,
            first,
            second,
        } => {
            assert_eq!((namespace.as_str(), event.as_str()), ("/dup", "chat"));
            // In source order, whatever the order of registration.
            assert_eq!(first.as_deref(), Some(first_at.as_str()));
            assert_eq!(second.as_deref(), Some(second_at.as_str()));
        }
        other => panic!("expected DuplicateHandler, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "duplicate handler for event `chat` in namespace `/dup`: registered at {first_at} and at {second_at}"
        )
    );

    // One of them alone builds.
    Server::builder()
        .collect_registered(false)
        .handler(first)
        .handler(third)
        .build()
        .expect("one handler");

    // Two connect hooks for one namespace.
    let err = Server::builder()
        .collect_registered(false)
        .handler(hook_two)
        .handler(hook_one)
        .build()
        .err()
        .expect("a duplicate hook");
    let hook_two_at = format!("{}:{}", file!(), HOOK + 3);
    assert!(
        matches!(&err, BuildError::DuplicateHook { namespace, hook: "connect", location } if namespace == "/hooked" && *location == hook_two_at),
        "{err:?}"
    );

    // The default build collects all of them and fails as well.
    assert!(Server::builder().build().is_err());
}
