//! Connection id: answers any message with `{"connection_id":"<id>"}`, as the handler of
//! the Yandex API Gateway WebSocket tutorial does, so a client can learn the id that the
//! management API and the CLI take.

use wsgate_sdk::{Message, MessageEvent, Plugin};

/// The connection-id handler.
pub struct ConnectionId;

impl Plugin for ConnectionId {
    fn on_message(event: MessageEvent) -> Option<Message> {
        // Ids are URL-safe base64, so they need no JSON escaping.
        Some(Message::Text(format!(
            "{{\"connection_id\":\"{}\"}}",
            event.connection_id
        )))
    }
}

wsgate_sdk::export!(ConnectionId);
