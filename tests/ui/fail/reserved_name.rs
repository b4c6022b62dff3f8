use wsu::ws_event;

#[ws_event(name = "error")]
async fn report(text: String) -> String {
    text
}

fn main() {
    let _ = report("text".to_owned());
}
