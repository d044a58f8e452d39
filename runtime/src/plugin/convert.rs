//! Conversions between the guest's WIT types and the runtime's own.

use super::bindings::types::{ConnectionInfo, Message};
use crate::registry::{ConnectionMeta, Payload};

/// A guest message as a payload to deliver. Takes ownership, so no bytes are copied.
pub fn payload(message: Message) -> Payload {
    match message {
        Message::Text(text) => Payload::Text(text.into()),
        Message::Binary(bytes) => Payload::Binary(bytes.into()),
    }
}

/// A client's message as the guest receives it (copied into the guest's own types).
pub fn guest_message(payload: &Payload) -> Message {
    match payload {
        Payload::Text(text) => Message::Text(text.as_str().to_owned()),
        Payload::Binary(bytes) => Message::Binary(bytes.to_vec()),
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
