//! The `aws` shape: the event API Gateway gives a Lambda proxy integration on a
//! WebSocket route, and the Lambda's return value read back the way API Gateway does.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use wsgate_sdk::{
    ConnectResponse, ConnectionInfo, DisconnectEvent, Message, MessageEvent, connections, log,
};

use crate::authorizer::{self, Verdict};
use crate::config::Config;
use crate::failure::{Failure, error_frame, internal_error, json_refusal};
use crate::{backend, clock, headers, ids, lambda, upgrade};

/// `$connect`: the authorizer (if configured), then the CONNECT event; the Lambda
/// result's `statusCode` ≥ 300 refuses the upgrade.
pub fn on_connect(config: &Config, info: &ConnectionInfo) -> ConnectResponse {
    let now = clock::now_ms();
    let request_id = ids::aws();
    let mut context = request_context(
        config,
        info,
        &info.id,
        "$connect",
        "CONNECT",
        &request_id,
        now,
    );
    if let Some(url) = &config.authorizer_url {
        match authorizer::authorize(config, url, info, &context, &request_id) {
            Verdict::Allow(authorizer) => {
                let stored = Value::Object(authorizer.clone()).to_string();
                // Later events read the verdict back from here, as AWS hands the
                // authorizer's output to every route of the connection.
                if let Err(err) = connections::set_context(&info.id, &stored) {
                    log::error(&format!(
                        "integration (aws) $connect for connection {}: cannot keep the \
                         authorizer's context ({} bytes): {err:?}; answering 500",
                        info.id,
                        stored.len()
                    ));
                    return internal_error();
                }
                context.insert("authorizer".into(), Value::Object(authorizer));
            }
            Verdict::Unauthorized => {
                return json_refusal(401, "Unauthorized")
                    .with_header("x-amzn-ErrorType", "UnauthorizedException");
            }
            Verdict::Forbidden => {
                return json_refusal(403, "Forbidden")
                    .with_header("x-amzn-ErrorType", "AccessDeniedException");
            }
        }
    }
    // API Gateway passes the handshake's headers but the hop-by-hop pair, which the
    // authorizer alone sees.
    let (single, multi) = header_maps(
        info.headers
            .iter()
            .filter(|(name, _)| name != "connection" && name != "upgrade"),
    );
    let mut event = Map::new();
    event.insert("headers".into(), single);
    event.insert("multiValueHeaders".into(), multi);
    // Absent, not empty, when the URL has no query: so AWS sends it.
    if !info.query_params.is_empty() {
        let (single, multi) = param_maps(&info.query_params);
        event.insert("queryStringParameters".into(), single);
        event.insert("multiValueQueryStringParameters".into(), multi);
    }
    event.insert("requestContext".into(), Value::Object(context));
    event.insert("isBase64Encoded".into(), Value::Bool(false));

    match invoke(config, &Value::Object(event)) {
        Err(failure) => {
            failure.log("aws", "$connect", &config.url, &info.id, &request_id);
            failure.refusal()
        }
        Ok(None) => ConnectResponse::accept(),
        Ok(Some(result)) => match result.status_code {
            Some(status) if status >= 300 => upgrade::refuse(
                "aws",
                status,
                result.body.map(|b| b.into_text()).unwrap_or_default(),
                result.headers,
            ),
            _ => upgrade::accept("aws", info, result.header("sec-websocket-protocol")),
        },
    }
}

/// A message: the MESSAGE event; the result's `body` goes back to the client.
pub fn on_message(config: &Config, event: &MessageEvent) -> Option<Message> {
    let now = clock::now_ms();
    let request_id = ids::aws();
    let id = &event.connection_id;
    let info = crate::connection(id);
    let mut context = request_context(
        config,
        &info,
        id,
        &event.route_key,
        "MESSAGE",
        &request_id,
        now,
    );
    context.insert("messageId".into(), Value::String(ids::aws()));
    add_authorizer(&mut context, id);
    let (body, binary) = match &event.message {
        Message::Text(text) => (text.clone(), false),
        Message::Binary(bytes) => (STANDARD.encode(bytes), true),
    };
    let payload = json!({
        "requestContext": context,
        "body": body,
        "isBase64Encoded": binary,
    });
    match invoke(config, &payload) {
        Err(failure) => {
            failure.log("aws", "MESSAGE", &config.url, id, &request_id);
            Some(error_frame(id, &request_id))
        }
        Ok(result) => result
            .and_then(|r| r.body)
            .filter(|body| !body.is_empty())
            .map(lambda::Body::into_message),
    }
}

/// `$disconnect`: the DISCONNECT event; the result is ignored, failures only logged.
pub fn on_disconnect(config: &Config, event: &DisconnectEvent) {
    let now = clock::now_ms();
    let request_id = ids::aws();
    let id = &event.connection_id;
    let info = crate::connection(id);
    let domain = domain_name(config, &info);
    let mut context = request_context(
        config,
        &info,
        id,
        "$disconnect",
        "DISCONNECT",
        &request_id,
        now,
    );
    context.insert("disconnectStatusCode".into(), json!(event.code));
    context.insert("disconnectReason".into(), json!(disconnect_reason(event)));
    add_authorizer(&mut context, id);
    // What API Gateway itself puts in a DISCONNECT event's headers (the handshake's
    // are long gone): the API's host and three empty ones.
    let quirk = [
        ("Host", domain.as_str()),
        ("x-api-key", ""),
        ("X-Forwarded-For", ""),
        ("x-restapi", ""),
    ];
    let single: Map<String, Value> = quirk.iter().map(|(n, v)| ((*n).into(), json!(v))).collect();
    let multi: Map<String, Value> = quirk
        .iter()
        .map(|(n, v)| ((*n).into(), json!([v])))
        .collect();
    let payload = json!({
        "headers": single,
        "multiValueHeaders": multi,
        "requestContext": context,
        "isBase64Encoded": false,
    });
    if let Err(failure) = invoke(config, &payload) {
        failure.log("aws", "$disconnect", &config.url, id, &request_id);
    }
}

/// POSTs the event and reads the Lambda result. A non-2xx status is a failed
/// invocation (as a Lambda error would be).
fn invoke(config: &Config, event: &Value) -> Result<Option<lambda::LambdaResult>, Failure> {
    let response = backend::post_json(&config.url, event)?;
    backend::require_success(&response)?;
    lambda::LambdaResult::parse(&response.body).map_err(Failure::Unusable)
}

/// `requestContext` as API Gateway builds it for a WebSocket route (without
/// `messageId`, the disconnect fields and `authorizer`, which only some events get).
pub fn request_context(
    config: &Config,
    info: &ConnectionInfo,
    connection_id: &str,
    route_key: &str,
    event_type: &str,
    request_id: &str,
    now: u64,
) -> Map<String, Value> {
    let mut identity = Map::new();
    identity.insert("sourceIp".into(), json!(info.source_ip));
    if let Some(agent) = &info.user_agent {
        identity.insert("userAgent".into(), json!(agent));
    }
    let mut context = Map::new();
    context.insert("routeKey".into(), json!(route_key));
    context.insert("eventType".into(), json!(event_type));
    // API Gateway gives WebSocket events one id under both names.
    context.insert("extendedRequestId".into(), json!(request_id));
    context.insert("requestTime".into(), json!(clock::aws_request_time(now)));
    context.insert("messageDirection".into(), json!("IN"));
    context.insert("stage".into(), json!(config.stage(&info.tenant)));
    context.insert("connectedAt".into(), json!(info.connected_at));
    context.insert("requestTimeEpoch".into(), json!(now));
    context.insert("identity".into(), Value::Object(identity));
    context.insert("requestId".into(), json!(request_id));
    let domain = domain_name(config, info);
    // Beyond AWS, whose endpoint is always `https://{domainName}/{stage}`: the URL that
    // reaches this gateway's `@connections`, `http://` when it has no TLS.
    let endpoint = format!(
        "{}://{domain}/{}",
        config.management_scheme,
        config.stage(&info.tenant)
    );
    context.insert("domainName".into(), json!(domain));
    context.insert("managementEndpoint".into(), json!(endpoint));
    context.insert("connectionId".into(), json!(connection_id));
    context.insert("apiId".into(), json!(config.api_id(&info.tenant)));
    context
}

/// `domainName`: the configured one (by default the gateway's management host, so that
/// `https://{domainName}/{stage}` reaches `@connections`), else the client's `Host`.
fn domain_name(config: &Config, info: &ConnectionInfo) -> String {
    config
        .domain_name
        .clone()
        .or_else(|| info.header("host").map(str::to_owned))
        .unwrap_or_default()
}

/// The reason API Gateway reports: the peer's, or its own wording when the close frame
/// carried no status.
fn disconnect_reason(event: &DisconnectEvent) -> String {
    if event.reason.is_empty() && event.code == 1005 {
        "Client-side close frame status not set".to_owned()
    } else {
        event.reason.clone()
    }
}

/// Puts the authorizer's verdict kept at `$connect` into a later event's context.
fn add_authorizer(context: &mut Map<String, Value>, connection_id: &str) {
    if let Some(authorizer) = stored_authorizer(connection_id) {
        context.insert("authorizer".into(), Value::Object(authorizer));
    }
}

/// The verdict kept with the connection, if it is one (another `$connect` plugin may
/// have kept something else there: only an object with a `principalId` counts).
fn stored_authorizer(connection_id: &str) -> Option<Map<String, Value>> {
    let stored = connections::get_context(connection_id).ok()??;
    match serde_json::from_str::<Value>(&stored) {
        Ok(Value::Object(map)) if map.contains_key("principalId") => Some(map),
        _ => None,
    }
}

/// `headers` (one value per name, the last one wins) and `multiValueHeaders` (every
/// value, in order), names in the casing clients send.
pub fn header_maps<'a>(pairs: impl Iterator<Item = &'a (String, String)>) -> (Value, Value) {
    maps(pairs.map(|(name, value)| (headers::canonical(name), value)))
}

/// `queryStringParameters` and `multiValueQueryStringParameters`, decoded.
pub fn param_maps(pairs: &[(String, String)]) -> (Value, Value) {
    maps(pairs.iter().map(|(name, value)| (name.clone(), value)))
}

fn maps<'a>(pairs: impl Iterator<Item = (String, &'a String)>) -> (Value, Value) {
    let mut single = Map::new();
    let mut multi = Map::new();
    for (name, value) in pairs {
        single.insert(name.clone(), json!(value));
        if let Value::Array(values) = multi.entry(name).or_insert_with(|| json!([])) {
            values.push(json!(value));
        }
    }
    (Value::Object(single), Value::Object(multi))
}
