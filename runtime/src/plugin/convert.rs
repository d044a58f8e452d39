//! Conversions between the guest's WIT types and the runtime's own.

use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::bindings::types::{ConnectionInfo, Message};
use crate::registry::ConnectionMeta;

/// A guest message as a frame to send. Takes ownership, so no bytes are copied.
pub fn message_to_ws(message: Message) -> WsMessage {
    match message {
        Message::Text(text) => WsMessage::Text(text.into()),
        Message::Binary(bytes) => WsMessage::Binary(bytes.into()),
    }
}

/// A received data frame as the guest's message; `None` for control frames.
pub fn message_from_ws(message: &WsMessage) -> Option<Message> {
    match message {
        WsMessage::Text(text) => Some(Message::Text(text.as_str().to_owned())),
        WsMessage::Binary(bytes) => Some(Message::Binary(bytes.to_vec())),
        _ => None,
    }
}

/// The guest's view of a connection.
pub fn info(meta: &ConnectionMeta, last_active_at: u64) -> ConnectionInfo {
    ConnectionInfo {
        id: meta.id.to_string(),
        tenant: meta.tenant.to_string(),
        route: meta.route.to_string(),
        path: meta.path.clone(),
        uri: meta.uri.clone(),
        headers: meta.headers.to_vec(),
        path_params: meta.path_params.to_vec(),
        query_params: meta.query_params.to_vec(),
        source_ip: meta.source_ip.clone(),
        user_agent: meta.user_agent.clone(),
        requested_subprotocols: meta.requested_subprotocols.clone(),
        subprotocol: meta.subprotocol.clone(),
        connected_at: meta.connected_at,
        last_active_at,
    }
}
