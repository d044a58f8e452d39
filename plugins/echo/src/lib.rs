//! Echo: every message, text or binary, goes back to its sender unchanged.

use wsgate_sdk::{Message, MessageEvent, Plugin};

/// The echo handler.
pub struct Echo;

impl Plugin for Echo {
    fn on_message(event: MessageEvent) -> Option<Message> {
        Some(event.message)
    }
}

wsgate_sdk::export!(Echo);
