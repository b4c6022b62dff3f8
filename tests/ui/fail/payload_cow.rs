use std::borrow::Cow;
use wsu::ws_event;

#[ws_event]
async fn chat(text: (u32, Cow<'_, str>)) -> String {
    text.1.into_owned()
}

fn main() {}
