use wsu::ws_event;

struct Chat;

impl Chat {
    #[ws_event]
    async fn chat(&self, text: String) -> String {
        text
    }
}

fn main() {}
