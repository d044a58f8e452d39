//! What goes wrong with a backend, and what the client sees then: the answers API
//! Gateway gives, so clients written against it need no change.

use wsgate_sdk::{ConnectResponse, Message, log};

/// Why an event could not be handed to the backend, or its answer used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer: the backend could not be reached, or timed out.
    Unreachable(String),
    /// An answer nobody can use: an error status, garbage, or a request the gateway
    /// refused to send (e.g. an origin outside `allowed_outbound_hosts`).
    Unusable(String),
}

impl Failure {
    /// What failed, for the log.
    pub fn detail(&self) -> &str {
        match self {
            Failure::Unreachable(why) | Failure::Unusable(why) => why,
        }
    }

    /// The refusal of a `$connect` that failed: 502 when the backend gave no answer,
    /// 500 when it gave a bad one, with API Gateway's bodies.
    pub fn refusal(&self) -> ConnectResponse {
        match self {
            Failure::Unreachable(_) => json_refusal(502, "Bad Gateway"),
            Failure::Unusable(_) => internal_error(),
        }
    }

    /// Logs the failure with what the operator needs to find it: shape, event, backend
    /// URL, connection and request id.
    pub fn log(&self, shape: &str, event: &str, url: &str, connection_id: &str, request_id: &str) {
        let kind = match self {
            Failure::Unreachable(_) => "no answer",
            Failure::Unusable(_) => "unusable answer",
        };
        log::warn(&format!(
            "integration ({shape}) {event} for connection {connection_id} (request {request_id}): \
             POST {url}: {kind}: {}",
            self.detail()
        ));
    }
}

/// A refusal with a JSON body `{"message":"…"}`, as API Gateway answers.
pub fn json_refusal(status: u16, message: &str) -> ConnectResponse {
    let body = serde_json::json!({ "message": message }).to_string();
    ConnectResponse::reject(status, body).with_header("content-type", "application/json")
}

/// 500 `{"message":"Internal server error"}`: a `$connect` that cannot be handled
/// (broken config, unusable backend answer).
pub fn internal_error() -> ConnectResponse {
    json_refusal(500, "Internal server error")
}

/// The frame API Gateway sends a client whose message failed, byte for byte (its odd
/// spacing included): `{"message": "Internal server error", "connectionId":"…",
/// "requestId":"…"}`.
pub fn error_frame(connection_id: &str, request_id: &str) -> Message {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    Message::text(format!(
        "{{\"message\": \"Internal server error\", \"connectionId\":{}, \"requestId\":{}}}",
        quote(connection_id),
        quote(request_id)
    ))
}
