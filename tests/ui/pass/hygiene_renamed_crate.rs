//! Hygiene: `wsu` under another name, with `crate = "..."` (relative and absolute paths).
#![deny(warnings)]

extern crate wsu as renamed;

mod relative {
    use super::renamed;

    #[renamed::ws_event(crate = "renamed", namespace = "/relative")]
    pub(crate) async fn chat(socket: renamed::Socket, text: String) -> String {
        let _ = socket;
        text
    }

    #[renamed::ws_connect(crate = "renamed", namespace = "/relative")]
    pub(crate) async fn hello(server: renamed::Server) {
        let _ = server;
    }

    #[renamed::ws_disconnect(namespace = "/relative", crate = "renamed")]
    pub(crate) async fn bye(reason: renamed::DisconnectReason) {
        let _ = reason;
    }
}

mod absolute {
    // `::renamed` resolves through the extern prelude (`extern crate` at the crate root).
    #[::renamed::ws_event(crate = "::renamed", namespace = "/absolute", name = "chat")]
    pub(crate) async fn chat(_: ()) {}
}

fn main() {
    let server = renamed::Server::builder().build().expect("build");
    let names: Vec<(String, String)> = server
        .events()
        .into_iter()
        .map(|e| (e.namespace, e.event))
        .collect();
    assert_eq!(
        names,
        [
            ("/absolute".to_owned(), "chat".to_owned()),
            ("/relative".to_owned(), "chat".to_owned())
        ]
    );
    let _ = (relative::chat, absolute::chat);
}
