//! The management operations both APIs share: find, post, describe, close, list.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::error::ApiError;
use crate::registry::{Connection, DeliveryError, ListFilter, Pairs};
use crate::tenant::Tenant;

/// How posted data becomes a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// Text when the data is valid UTF-8, binary otherwise.
    Auto,
    /// Always text; data that is not UTF-8 is refused.
    Text,
    /// Always binary.
    Binary,
}

/// An open connection of `tenant`, or 410.
pub fn find(tenant: &Tenant, id: &str) -> Result<Arc<Connection>, ApiError> {
    match tenant.registry.get(id) {
        Some(connection) if !connection.is_closing() => Ok(connection),
        _ => Err(gone(id)),
    }
}

fn gone(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::Gone(format!(
        "no connection with id {shown:?}: it is closed or never existed"
    ))
}

/// Queues `data` for the connection.
pub fn post(tenant: &Tenant, id: &str, data: Bytes, frame: FrameType) -> Result<(), ApiError> {
    let max = tenant.limits.max_message_bytes;
    if data.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "the data is {} bytes; the maximum for this tenant is {max}",
            data.len()
        )));
    }
    let connection = find(tenant, id)?;
    let message = match (frame, std::str::from_utf8(&data).is_ok()) {
        (FrameType::Binary, _) | (FrameType::Auto, false) => Message::Binary(data),
        (FrameType::Text | FrameType::Auto, true) => {
            Message::Text(data.try_into().expect("checked to be UTF-8"))
        }
        (FrameType::Text, false) => {
            return Err(ApiError::BadRequest(
                "type=text was asked for but the data is not valid UTF-8".into(),
            ));
        }
    };
    connection.send(message).map_err(|err| match err {
        DeliveryError::Gone => gone(id),
        DeliveryError::QueueFull => ApiError::LimitExceeded(
            "the client's outbound queue is full: it is not reading fast enough; retry later"
                .into(),
        ),
    })
}

/// Closes the connection with `code` and `reason`.
pub fn close(tenant: &Tenant, id: &str, code: u16, reason: &str) -> Result<(), ApiError> {
    let connection = find(tenant, id)?;
    connection
        .close(close_frame(code, reason))
        .map_err(|_| gone(id))
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: code.into(),
        reason: reason.to_owned().into(),
    }
}

/// Reads `code` and `reason` from a DELETE's query (default 1000, ""). Codes are 1000 or
/// an application code 4000–4999; a close reason holds at most 123 bytes.
pub fn close_params(query: &[(String, String)]) -> Result<(u16, String), ApiError> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let code = match get("code") {
        None => 1000,
        Some(text) => match text.parse::<u16>() {
            Ok(code) if code == 1000 || (4000..=4999).contains(&code) => code,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "code {text:?} is not allowed: use 1000 or 4000-4999"
                )));
            }
        },
    };
    let reason = get("reason").unwrap_or_default().to_owned();
    if reason.len() > 123 {
        return Err(ApiError::BadRequest(
            "reason is longer than the 123 bytes a close frame holds".into(),
        ));
    }
    Ok((code, reason))
}

/// ISO 8601 / RFC 3339 with milliseconds, UTC: what AWS and Yandex both send.
pub fn timestamp(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

fn pairs_to_object(pairs: &Pairs) -> Value {
    let mut object = Map::new();
    for (name, value) in pairs.iter() {
        match object.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                object.insert(name.to_owned(), Value::String(value.to_owned()));
            }
        }
    }
    Value::Object(object)
}

/// AWS's GetConnection body plus wsgate's own fields.
pub fn describe(connection: &Connection) -> Value {
    let meta = &connection.meta;
    json!({
        "connectedAt": timestamp(meta.connected_at),
        "lastActiveAt": timestamp(connection.last_active_at()),
        "identity": {
            "sourceIp": meta.source_ip,
            "userAgent": meta.user_agent.as_deref().unwrap_or(""),
        },
        "connectionId": &*meta.id,
        "route": &*meta.route,
        "path": meta.path,
        "uri": meta.uri,
        "headers": pairs_to_object(&meta.headers),
        "pathParameters": pairs_to_object(&meta.path_params),
        "queryParameters": pairs_to_object(&meta.query_params),
        "subprotocol": meta.subprotocol,
    })
}

/// Yandex's Connection resource.
pub fn describe_yandex(connection: &Connection) -> Value {
    let meta = &connection.meta;
    json!({
        "id": &*meta.id,
        "gatewayId": &*meta.tenant,
        "identity": {
            "sourceIp": meta.source_ip,
            "userAgent": meta.user_agent.as_deref().unwrap_or(""),
        },
        "connectedAt": timestamp(meta.connected_at),
        "lastActiveAt": timestamp(connection.last_active_at()),
    })
}

/// Largest page `list` returns.
pub const MAX_PAGE: usize = 1000;

/// One page of the tenant's connections, ordered by id, after `next_token`.
pub fn list(tenant: &Tenant, query: &[(String, String)]) -> Result<Value, ApiError> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let limit = match get("limit") {
        None => 100,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit {text:?} must be a number from 1 to {MAX_PAGE}"
                )));
            }
        },
    };
    let filter = ListFilter {
        route: get("route").map(str::to_owned),
        path: get("path").map(str::to_owned),
    };
    let after = get("nextToken").unwrap_or("");
    let mut connections: Vec<_> = tenant
        .registry
        .list(&filter)
        .into_iter()
        .filter(|c| c.id() > after)
        .collect();
    connections.sort_unstable_by(|a, b| a.id().cmp(b.id()));
    let more = connections.len() > limit;
    connections.truncate(limit);
    let items: Vec<Value> = connections
        .iter()
        .map(|c| json!({ "connectionId": c.id(), "route": &*c.meta.route, "path": c.meta.path, "connectedAt": timestamp(c.meta.connected_at) }))
        .collect();
    let mut page = json!({ "items": items });
    if more && let Some(last) = connections.last() {
        page["nextToken"] = Value::String(last.id().to_owned());
    }
    Ok(page)
}

/// Closes every open connection of the tenant; returns how many.
pub fn close_all(tenant: &Tenant, code: u16, reason: &str) -> usize {
    tenant
        .registry
        .list(&ListFilter::default())
        .iter()
        .filter(|c| c.close(close_frame(code, reason)).is_ok())
        .count()
}
