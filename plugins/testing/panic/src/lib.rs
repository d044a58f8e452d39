//! Testing plugin, not an example: traps on demand so tests can prove a failing plugin
//! fails only its own event.
//!
//! - connect: traps when the query has `panic=connect`.
//! - message: the text `panic` traps; anything else is echoed.
//! - disconnect: traps when the close reason is `panic`.

use wsgate_sdk::{ConnectResponse, ConnectionInfo, DisconnectEvent, Message, MessageEvent, Plugin};

/// The trapping handler.
pub struct Panic;

impl Plugin for Panic {
    fn on_connect(info: ConnectionInfo) -> ConnectResponse {
        if info.query_param("panic") == Some("connect") {
            panic!("asked to panic in on_connect");
        }
        ConnectResponse::accept()
    }

    fn on_message(event: MessageEvent) -> Option<Message> {
        if event.message.as_text() == Some("panic") {
            panic!("asked to panic in on_message");
        }
        Some(event.message)
    }

    fn on_disconnect(event: DisconnectEvent) {
        if event.reason == "panic" {
            panic!("asked to panic in on_disconnect");
        }
    }
}

wsgate_sdk::export!(Panic);
