//! Chat: route `/chat/{room}`. A text message goes to every other connection in the same
//! room (the same request path); joins and leaves are announced to the room. All frames
//! the chat sends are JSON:
//!
//! - `{"event":"join","room":"<room>","connection":"<id>"}`
//! - `{"event":"leave","room":"<room>","connection":"<id>"}`
//! - `{"event":"message","room":"<room>","from":"<id>","text":"<text>"}`
//!
//! Binary messages are relayed to the room unchanged.

use serde_json::json;
use wsgate_sdk::{
    ConnectResponse, ConnectionInfo, DisconnectEvent, Message, MessageEvent, Plugin, connections,
    log,
};

/// The chat handler.
pub struct Chat;

fn room(info: &ConnectionInfo) -> &str {
    info.path_param("room").unwrap_or("")
}

/// Sends `message` to everyone on `path` but `except`, in one host call.
fn broadcast(path: &str, except: &str, message: &Message) {
    if let Err(err) = connections::broadcast_path(path, message, Some(except)) {
        log::warn(&format!("chat: cannot broadcast to {path}: {err:?}"));
    }
}

fn notice(event: &str, info: &ConnectionInfo) -> Message {
    let notice = json!({ "event": event, "room": room(info), "connection": info.id });
    Message::Text(notice.to_string())
}

impl Plugin for Chat {
    fn on_connect(info: ConnectionInfo) -> ConnectResponse {
        broadcast(&info.path, &info.id, &notice("join", &info));
        ConnectResponse::accept()
    }

    fn on_message(event: MessageEvent) -> Option<Message> {
        let info = match connections::get_info(&event.connection_id) {
            Ok(info) => info,
            Err(err) => {
                log::warn(&format!("chat: sender has gone: {err:?}"));
                return None;
            }
        };
        let outgoing = match &event.message {
            Message::Text(text) => {
                let message = json!({ "event": "message", "room": room(&info), "from": info.id, "text": text });
                Message::Text(message.to_string())
            }
            Message::Binary(_) => event.message,
        };
        broadcast(&info.path, &info.id, &outgoing);
        None
    }

    fn on_disconnect(event: DisconnectEvent) {
        if let Ok(info) = connections::get_info(&event.connection_id) {
            broadcast(&info.path, &info.id, &notice("leave", &info));
        }
    }
}

wsgate_sdk::export!(Chat);
