use wsu::ws_event;

#[ws_event(namespace = "admin")]
async fn kick(id: String) -> String {
    id
}

fn main() {
    let _ = kick("id".to_owned());
}
