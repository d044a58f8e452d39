//! The management operations both APIs share: find, post, describe, close, list.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::Query;
use super::error::ApiError;
use crate::close::Close;
use crate::registry::{ConnectionInfo, DeliveryError, ListFilter, PageRequest, Pairs, Payload};
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

/// An open connection of `tenant`, or 410 (a closing one is gone, as AWS says).
pub async fn find(tenant: &Tenant, id: &str) -> Result<ConnectionInfo, ApiError> {
    match tenant.registry.info(id).await {
        Ok(info) if !info.closing => Ok(info),
        Err(DeliveryError::Unavailable(why)) => Err(ApiError::Unavailable(why)),
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
pub async fn post(
    tenant: &Tenant,
    id: &str,
    data: Bytes,
    frame: FrameType,
) -> Result<(), ApiError> {
    let max = tenant.limits.max_message_bytes;
    if data.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "the data is {} bytes; the maximum for this tenant is {max}",
            data.len()
        )));
    }
    let payload = match (frame, std::str::from_utf8(&data).is_ok()) {
        (FrameType::Binary, _) | (FrameType::Auto, false) => Payload::Binary(data),
        (FrameType::Text | FrameType::Auto, true) => {
            Payload::Text(data.try_into().expect("checked to be UTF-8"))
        }
        (FrameType::Text, false) => {
            return Err(ApiError::BadRequest(
                "type=text was asked for but the data is not valid UTF-8".into(),
            ));
        }
    };
    tenant
        .registry
        .send(id, payload)
        .await
        .map_err(|err| match err {
            DeliveryError::Gone => gone(id),
            DeliveryError::QueueFull => ApiError::LimitExceeded(
                "the client's outbound queue is full: it is not reading fast enough; retry later"
                    .into(),
            ),
            DeliveryError::Unavailable(why) => ApiError::Unavailable(why),
        })
}

/// Closes the connection.
pub async fn close(tenant: &Tenant, id: &str, close: Close) -> Result<(), ApiError> {
    tenant
        .registry
        .close(id, close)
        .await
        .map_err(|err| match err {
            DeliveryError::Unavailable(why) => ApiError::Unavailable(why),
            _ => gone(id),
        })
}

/// Reads `code` and `reason` from a DELETE's query (default 1000, ""), under the one
/// close rule of [`Close::requested`].
pub fn close_params(query: &Query) -> Result<Close, ApiError> {
    let code = match query.get("code") {
        None => 1000,
        Some(text) => text.parse::<u16>().map_err(|_| {
            ApiError::BadRequest(format!(
                "code {text:?} is not a close code: use 1000 or 3000-4999"
            ))
        })?,
    };
    Close::requested(code, query.get("reason").unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// ISO 8601 / RFC 3339 with milliseconds, UTC: what AWS and Yandex both send.
pub fn timestamp(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Headers that carry the end user's credentials.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];
/// Query parameters that commonly carry them (compared without case).
const CREDENTIAL_PARAMETERS: &[&str] = &[
    "token",
    "access_token",
    "id_token",
    "auth",
    "key",
    "api_key",
    "apikey",
    "password",
    "secret",
    "signature",
    "x-amz-signature",
    "x-amz-security-token",
];
/// What a redacted value reads.
const REDACTED: &str = "[redacted]";

/// `pairs` as a JSON object (repeated names joined with ", "); the values of names in
/// `redact` read `[redacted]`.
fn pairs_to_object(pairs: &Pairs, redact: &[&str]) -> Value {
    let mut object = Map::new();
    for (name, value) in pairs.iter() {
        let value = if redact.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            REDACTED
        } else {
            value
        };
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

/// AWS's GetConnection body plus wsgate's own fields. Unless `expose_credentials`,
/// the end user's credentials in headers, query and URI read `[redacted]`.
pub fn describe(connection: &ConnectionInfo, expose_credentials: bool) -> Value {
    let meta = &connection.meta;
    let (headers, parameters): (&[&str], &[&str]) = if expose_credentials {
        (&[], &[])
    } else {
        (CREDENTIAL_HEADERS, CREDENTIAL_PARAMETERS)
    };
    let secret_in_query = meta
        .query_params
        .iter()
        .any(|(name, _)| parameters.iter().any(|p| p.eq_ignore_ascii_case(name)));
    let uri = if secret_in_query {
        // The query as received carries a token: show the path only.
        format!("{}?{REDACTED}", meta.uri.split('?').next().unwrap_or(""))
    } else {
        meta.uri.clone()
    };
    json!({
        "connectedAt": timestamp(meta.connected_at),
        "lastActiveAt": timestamp(connection.last_active_at),
        "identity": {
            "sourceIp": meta.source_ip,
            "userAgent": meta.user_agent.as_deref().unwrap_or(""),
        },
        "connectionId": &*meta.id,
        "route": &*meta.route,
        "path": meta.path,
        "uri": uri,
        "headers": pairs_to_object(&meta.headers, headers),
        "pathParameters": pairs_to_object(&meta.path_params, &[]),
        "queryParameters": pairs_to_object(&meta.query_params, parameters),
        "subprotocol": meta.subprotocol,
    })
}

/// Yandex's Connection resource.
pub fn describe_yandex(connection: &ConnectionInfo) -> Value {
    let meta = &connection.meta;
    json!({
        "id": &*meta.id,
        "gatewayId": &*meta.tenant,
        "identity": {
            "sourceIp": meta.source_ip,
            "userAgent": meta.user_agent.as_deref().unwrap_or(""),
        },
        "connectedAt": timestamp(meta.connected_at),
        "lastActiveAt": timestamp(connection.last_active_at),
    })
}

/// Largest page `list` returns.
pub const MAX_PAGE: usize = 1000;

/// One page of the tenant's connections, ordered by id, after `nextToken`.
pub async fn list(tenant: &Tenant, query: &Query) -> Result<Value, ApiError> {
    let limit = match query.get("limit") {
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
        route: query.get("route").map(str::to_owned),
        path: query.get("path").map(str::to_owned),
    };
    let request = PageRequest {
        after: query.get("nextToken").map(str::to_owned),
        limit: Some(limit),
    };
    let page = tenant.registry.list(&filter, request).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|c| {
            let mut item = json!({
                "connectionId": &*c.id,
                "route": &*c.route,
                "path": c.path,
                "connectedAt": timestamp(c.connected_at),
                "identity": {
                    "sourceIp": c.source_ip,
                    "userAgent": c.user_agent.as_deref().unwrap_or(""),
                },
            });
            if let Some(at) = c.last_active_at {
                item["lastActiveAt"] = Value::String(timestamp(at));
            }
            item
        })
        .collect();
    let mut body = json!({ "items": items });
    if let Some(next) = page.next {
        body["nextToken"] = Value::String(next);
    }
    Ok(body)
}
