//! The `yandex` shape: Yandex API Gateway's HTTP integration of a WebSocket path. The
//! frame is the request body, the event's facts are `X-Yc-Apigateway-Websocket-*`
//! headers, and the response body is the reply.

use wsgate_sdk::{ConnectResponse, ConnectionInfo, DisconnectEvent, Message, MessageEvent};

use crate::config::Config;
use crate::failure::error_frame;
use crate::{backend, clock, headers, ids, upgrade};

const CONNECTION_ID: &str = "X-Yc-Apigateway-Websocket-Connection-Id";
const EVENT_TYPE: &str = "X-Yc-Apigateway-Websocket-Event-Type";
const CONNECTED_AT: &str = "X-Yc-Apigateway-Websocket-Connected-At";
const MESSAGE_ID: &str = "X-Yc-Apigateway-Websocket-Message-Id";
const STATUS_CODE: &str = "X-Yc-Apigateway-Websocket-Disconnect-Status-Code";
const REASON: &str = "X-Yc-Apigateway-Websocket-Disconnect-Reason";

/// The headers every event carries: the connection's facts, the client's
/// `User-Agent` (which Yandex passes by default) and the configured `forward_headers`.
fn common(config: &Config, info: &ConnectionInfo, id: &str, event: &str) -> Vec<(String, String)> {
    let mut out = vec![
        (CONNECTION_ID.to_owned(), id.to_owned()),
        (EVENT_TYPE.to_owned(), event.to_owned()),
        // Milliseconds since the epoch, as the function event's `connectedAt` is.
        (CONNECTED_AT.to_owned(), info.connected_at.to_string()),
    ];
    if let Some(agent) = &info.user_agent {
        out.push(("User-Agent".to_owned(), headers::sanitize(agent)));
    }
    for name in config.forward_headers.iter().filter(|n| forwardable(n)) {
        for (_, value) in info.headers.iter().filter(|(n, _)| n == name) {
            out.push((headers::canonical(name), headers::sanitize(value)));
        }
    }
    out
}

/// Whether a client header may be forwarded: not one the gateway sets on the request
/// itself (or refuses from a plugin), nor one this shape already sends.
fn forwardable(name: &str) -> bool {
    !matches!(
        name,
        "host"
            | "content-length"
            | "content-type"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "http2-settings"
            | "user-agent"
            | "sec-websocket-protocol"
    ) && !name.starts_with("proxy-")
        && !name.starts_with("x-yc-apigateway-websocket-")
}

/// `$connect`: CONNECT with an empty body; a status ≥ 300 refuses the upgrade with
/// that status and body, a `Sec-WebSocket-Protocol` answer header picks the subprotocol.
pub fn on_connect(config: &Config, info: &ConnectionInfo) -> ConnectResponse {
    let mut request_headers = common(config, info, &info.id, "CONNECT");
    // Yandex passes the client's subprotocol offer on to the integration.
    if let Some(offer) = info.header("sec-websocket-protocol") {
        request_headers.push((
            "Sec-WebSocket-Protocol".to_owned(),
            headers::sanitize(offer),
        ));
    }
    let response = match backend::post(&config.url, &request_headers, Vec::new()) {
        Ok(response) => response,
        Err(failure) => {
            failure.log("yandex", "CONNECT", &config.url, &info.id, &ids::aws());
            return failure.refusal();
        }
    };
    if response.status >= 300 {
        return upgrade::refuse(
            "yandex",
            response.status,
            backend::body_text(&response),
            backend::text_headers(&response),
        );
    }
    upgrade::accept("yandex", info, response.header("sec-websocket-protocol"))
}

/// A message: MESSAGE with the frame as the body; a non-empty answer goes back as one
/// message, text when its `Content-Type` is `application/json` or `text/*`.
pub fn on_message(config: &Config, event: &MessageEvent) -> Option<Message> {
    let id = &event.connection_id;
    let info = crate::connection(id);
    let now = clock::now_ms();
    let message_id = ids::time_ordered(now);
    let mut request_headers = common(config, &info, id, "MESSAGE");
    request_headers.push((MESSAGE_ID.to_owned(), message_id.clone()));
    let (content_type, body) = match &event.message {
        Message::Text(text) => ("application/json", text.as_bytes().to_vec()),
        Message::Binary(bytes) => ("application/octet-stream", bytes.clone()),
    };
    request_headers.push(("Content-Type".to_owned(), content_type.to_owned()));
    let reply = backend::post(&config.url, &request_headers, body).and_then(|response| {
        backend::require_success(&response)?;
        Ok(answer_message(response))
    });
    match reply {
        Ok(reply) => reply,
        Err(failure) => {
            // The message id doubles as the request id the error frame names.
            failure.log("yandex", "MESSAGE", &config.url, id, &message_id);
            Some(error_frame(id, &message_id))
        }
    }
}

/// The answer as the message for the client.
fn answer_message(response: wsgate_sdk::http::Response) -> Option<Message> {
    if response.body.is_empty() {
        return None;
    }
    let textual = response.header("content-type").is_some_and(|ct| {
        let ct = ct.trim().to_ascii_lowercase();
        ct.starts_with("text/") || ct.split(';').next().map(str::trim) == Some("application/json")
    });
    if textual {
        // A text frame must be UTF-8; an answer that is not goes out as the bytes it is.
        match String::from_utf8(response.body) {
            Ok(text) => Some(Message::Text(text)),
            Err(err) => Some(Message::Binary(err.into_bytes())),
        }
    } else {
        Some(Message::Binary(response.body))
    }
}

/// `$disconnect`: DISCONNECT with the close code and reason; the answer is ignored.
pub fn on_disconnect(config: &Config, event: &DisconnectEvent) {
    let id = &event.connection_id;
    let info = crate::connection(id);
    let mut request_headers = common(config, &info, id, "DISCONNECT");
    request_headers.push((STATUS_CODE.to_owned(), event.code.to_string()));
    request_headers.push((REASON.to_owned(), headers::sanitize(&event.reason)));
    let sent = backend::post(&config.url, &request_headers, Vec::new())
        .and_then(|response| backend::require_success(&response));
    if let Err(failure) = sent {
        failure.log("yandex", "DISCONNECT", &config.url, id, &ids::aws());
    }
}
