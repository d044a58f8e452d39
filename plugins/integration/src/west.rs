//! The `west` shape: West Connectivity's `websocketInfo`, POSTed as JSON for the
//! `open`, `data` and `close` events. The answer does what a West endpoint script does
//! with `websocketInfo.send(..)` and `websocketInfo.close()`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use wsgate_sdk::{
    ConnectResponse, ConnectionInfo, DisconnectEvent, HostError, Message, MessageEvent,
    connections, log,
};

use crate::config::Config;
use crate::failure::{Failure, error_frame};
use crate::{backend, clock, ids, upgrade};

/// `websocketInfo` for an event of type `kind`, without `message`/`message_type`.
fn websocket_info(info: &ConnectionInfo, id: &str, kind: &str) -> Map<String, Value> {
    let mut headers = Map::new();
    for (name, value) in &info.headers {
        // One string per name, repeated headers joined as HTTP allows.
        match headers.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), json!(value));
            }
        }
    }
    // "A Map containing both path and query parameters": the query first, so that a
    // path parameter, part of the endpoint's own definition, wins a clash.
    let mut parameters = Map::new();
    for (name, value) in info.query_params.iter().chain(&info.path_params) {
        parameters.insert(name.clone(), json!(value));
    }
    let mut out = Map::new();
    out.insert("uri".into(), json!(full_uri(info)));
    out.insert("type".into(), json!(kind));
    out.insert("route".into(), json!(info.route));
    out.insert("headers".into(), Value::Object(headers));
    out.insert("socket_id".into(), json!(id));
    out.insert("timestamp".into(), json!(clock::now_ms()));
    out.insert("parameters".into(), Value::Object(parameters));
    out
}

/// "The full URI of WebSocket HTTP upgrade request": scheme and host as the client
/// used them (`wss` when a proxy in front says it terminated TLS), then path and query.
fn full_uri(info: &ConnectionInfo) -> String {
    let Some(host) = info.header("host") else {
        return info.uri.clone();
    };
    let secure = info
        .header("x-forwarded-proto")
        .is_some_and(|p| matches!(p.trim().to_ascii_lowercase().as_str(), "https" | "wss"));
    format!("{}://{host}{}", if secure { "wss" } else { "ws" }, info.uri)
}

fn post(config: &Config, body: &Value) -> Result<wsgate_sdk::http::Response, Failure> {
    backend::post_json(&config.url, body)
}

/// `open`: a status ≥ 300 refuses the upgrade with that status and body; otherwise the
/// answer's `send`/`close` are carried out.
pub fn on_connect(config: &Config, info: &ConnectionInfo) -> ConnectResponse {
    let event = Value::Object(websocket_info(info, &info.id, "open"));
    let outcome = post(config, &event).and_then(|response| {
        if response.status >= 300 {
            return Ok(Err(response));
        }
        Actions::parse(&response.body)
            .map(Ok)
            .map_err(Failure::Unusable)
    });
    let actions = match outcome {
        Err(failure) => {
            failure.log("west", "open", &config.url, &info.id, &ids::aws());
            return failure.refusal();
        }
        Ok(Err(refusal)) => {
            return upgrade::refuse(
                "west",
                refusal.status,
                backend::body_text(&refusal),
                backend::text_headers(&refusal),
            );
        }
        Ok(Ok(actions)) => actions,
    };
    for message in &actions.send {
        if let Err(err) = connections::send(&info.id, message) {
            log::warn(&format!(
                "integration (west) open for connection {}: the backend's `send` could not be \
                 delivered before the upgrade completed ({err:?}); message dropped",
                info.id
            ));
        }
    }
    if let Some((code, reason)) = &actions.close
        && let Err(err) = connections::disconnect(&info.id, *code, reason)
    {
        // The connection does not exist until the upgrade completes, so a close
        // asked for on `open` is honoured by not letting the client in.
        log::info(&format!(
            "integration (west) open for connection {}: the backend closed the connection \
             ({code} {reason:?}) before it was open ({err:?}); refusing the upgrade with 403",
            info.id
        ));
        let body = if reason.is_empty() {
            "Forbidden"
        } else {
            reason.as_str()
        };
        return ConnectResponse::reject(403, body);
    }
    upgrade::accept("west", info, None)
}

/// `data`: the frame as `message` (binary as base64); the answer's `send` goes to the
/// client in order, then its `close`.
pub fn on_message(config: &Config, event: &MessageEvent) -> Option<Message> {
    let id = &event.connection_id;
    let info = crate::connection(id);
    let mut websocket_info = websocket_info(&info, id, "data");
    let (message, kind) = match &event.message {
        Message::Text(text) => (text.clone(), "data-text"),
        Message::Binary(bytes) => (STANDARD.encode(bytes), "data-binary"),
    };
    websocket_info.insert("message".into(), json!(message));
    websocket_info.insert("message_type".into(), json!(kind));
    let outcome = post(config, &Value::Object(websocket_info)).and_then(|response| {
        backend::require_success(&response)?;
        Actions::parse(&response.body).map_err(Failure::Unusable)
    });
    let mut actions = match outcome {
        Ok(actions) => actions,
        Err(failure) => {
            let request_id = ids::aws();
            failure.log("west", "data", &config.url, id, &request_id);
            return Some(error_frame(id, &request_id));
        }
    };
    // One message and no close: the reply itself. Otherwise everything goes through the
    // connection's queue, which keeps the order and puts the close after the messages.
    if actions.close.is_none() && actions.send.len() == 1 {
        return actions.send.pop();
    }
    for message in &actions.send {
        if let Err(err) = connections::send(id, message) {
            log_host_error("send", id, err);
        }
    }
    if let Some((code, reason)) = &actions.close
        && let Err(err) = connections::disconnect(id, *code, reason)
    {
        log_host_error("close", id, err);
    }
    None
}

fn log_host_error(what: &str, id: &str, err: HostError) {
    log::warn(&format!(
        "integration (west) data for connection {id}: the backend's `{what}` failed: {err:?}"
    ));
}

/// `close`: the event is sent and the answer ignored (a West script cannot send or
/// close from a `close` event either).
pub fn on_disconnect(config: &Config, event: &DisconnectEvent) {
    let id = &event.connection_id;
    let info = crate::connection(id);
    let payload = Value::Object(websocket_info(&info, id, "close"));
    let sent = post(config, &payload).and_then(|response| backend::require_success(&response));
    if let Err(failure) = sent {
        failure.log("west", "close", &config.url, id, &ids::aws());
    }
}

/// What the backend asked for: `{"send":[{"type":"text"|"binary","data":…}],
/// "close":{"code":…,"reason":…}}`, every part optional.
#[derive(Debug, Default)]
struct Actions {
    send: Vec<Message>,
    close: Option<(u16, String)>,
}

impl Actions {
    fn parse(body: &[u8]) -> Result<Actions, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Actions::default());
        }
        let value: Value = serde_json::from_slice(body).map_err(|err| {
            format!(
                "the answer is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            )
        })?;
        let map = match value {
            Value::Null => return Ok(Actions::default()),
            Value::Object(map) => map,
            _ => return Err("the answer is not a JSON object".into()),
        };
        let send = match map.get("send") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().map(message).collect::<Result<_, _>>()?,
            Some(item @ Value::Object(_)) => vec![message(item)?],
            Some(_) => return Err("`send` is not a list".into()),
        };
        let close = match map.get("close") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some((1000, String::new())),
            Some(Value::Object(close)) => Some(close_frame(close)?),
            Some(_) => return Err("`close` is not an object".into()),
        };
        Ok(Actions { send, close })
    }
}

/// One `send` item. `type` may also be West's own `data-text`/`data-binary`; text
/// data that is not a string is sent as its JSON, as West serialises a Lua table.
fn message(item: &Value) -> Result<Message, String> {
    let item = item.as_object().ok_or("a `send` item is not an object")?;
    let data = item.get("data").unwrap_or(&Value::Null);
    match item.get("type").and_then(Value::as_str).unwrap_or("text") {
        "text" | "data-text" => Ok(Message::Text(match data {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })),
        "binary" | "data-binary" => {
            let encoded = data
                .as_str()
                .ok_or("binary `data` is not a base64 string")?;
            STANDARD
                .decode(encoded.trim())
                .map(Message::Binary)
                .map_err(|err| format!("binary `data` is not valid base64: {err}"))
        }
        other => Err(format!("a `send` item has type {other:?}")),
    }
}

/// The `close` request. A code the protocol reserves is replaced by 1000 (and logged)
/// rather than leaving the connection open against the backend's wish.
fn close_frame(close: &Map<String, Value>) -> Result<(u16, String), String> {
    let mut reason = match close.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(reason)) => reason.clone(),
        Some(_) => return Err("`close.reason` is not a string".into()),
    };
    // A close frame has room for 123 bytes of reason; cut at a character boundary.
    while reason.len() > 123 {
        reason.pop();
    }
    let code = match close.get("code") {
        None | Some(Value::Null) => 1000,
        Some(value) => value.as_u64().ok_or("`close.code` is not a number")?,
    };
    if code == 1000 || (3000..=4999).contains(&code) {
        Ok((code as u16, reason))
    } else {
        log::warn(&format!(
            "integration (west): the backend asked to close with code {code}, which only the \
             protocol may use (allowed: 1000, 3000–4999); closing with 1000"
        ));
        Ok((1000, reason))
    }
}
