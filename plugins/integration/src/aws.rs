//! The `aws` shape: the event API Gateway gives a Lambda proxy integration on a
//! WebSocket route, and the Lambda's return value read back the way API Gateway does.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use wsgate_sdk::{
    ConnectResponse, ConnectionInfo, DisconnectEvent, Message, MessageEvent, connections, log,
};

use crate::authorizer::{self, Verdict};
use crate::config::Config;
use crate::facts::{self, Facts};
use crate::failure::{Failure, error_frame, internal_error, json_refusal};
use crate::{backend, clock, headers, ids, lambda, upgrade};

/// `$connect`: the authorizer (if configured), then the CONNECT event; the Lambda
/// result's `statusCode` ≥ 300 refuses the upgrade.
pub fn on_connect(config: &Config, info: &ConnectionInfo) -> ConnectResponse {
    let now = clock::now_ms();
    let request_id = ids::aws();
    let facts = Facts::of(config, info);
    let mut context = Context::new(&facts, &info.id, "$connect", "CONNECT", &request_id, now);
    let verdict;
    if let Some(url) = &config.authorizer_url {
        match authorizer::authorize(config, url, info, &context, &request_id) {
            Verdict::Allow(authorizer) => {
                let stored = Value::Object(authorizer).to_string();
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
                verdict = RawValue::from_string(stored).ok();
                context.authorizer = verdict.as_deref();
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
    // Absent, not empty, when the URL has no query: so AWS sends it.
    let (query, multi_query) = match info.query_params.is_empty() {
        true => (None, None),
        false => {
            let (single, multi) = param_maps(&info.query_params);
            (Some(single), Some(multi))
        }
    };
    let event = Event {
        headers: Some(&single),
        multi_value_headers: Some(&multi),
        query_string_parameters: query.as_ref(),
        multi_value_query_string_parameters: multi_query.as_ref(),
        ..Event::of(&context)
    };
    match invoke(config, &event) {
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
    let (request_id, message_id) = ids::aws_pair();
    let id = &event.connection_id;
    let facts = facts::of(config, id);
    let mut context = Context::new(&facts, id, &event.route_key, "MESSAGE", &request_id, now);
    context.message_id = Some(&message_id);
    context.authorizer = facts.authorizer.as_deref();
    let encoded;
    let (body, binary) = match &event.message {
        Message::Text(text) => (text.as_str(), false),
        Message::Binary(bytes) => {
            encoded = STANDARD.encode(bytes);
            (encoded.as_str(), true)
        }
    };
    let payload = Event {
        body: Some(body),
        is_base64_encoded: binary,
        ..Event::of(&context)
    };
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
    let facts = facts::of(config, id);
    facts::forget(id);
    let reason = disconnect_reason(event);
    let mut context = Context::new(&facts, id, "$disconnect", "DISCONNECT", &request_id, now);
    context.disconnect_status_code = Some(event.code);
    context.disconnect_reason = Some(&reason);
    context.authorizer = facts.authorizer.as_deref();
    // What API Gateway itself puts in a DISCONNECT event's headers (the handshake's
    // are long gone): the API's host and three empty ones.
    let quirk = [
        ("Host", context.domain_name),
        ("x-api-key", ""),
        ("X-Forwarded-For", ""),
        ("x-restapi", ""),
    ];
    let single: Map<String, Value> = quirk.iter().map(|(n, v)| ((*n).into(), json!(v))).collect();
    let multi: Map<String, Value> = quirk
        .iter()
        .map(|(n, v)| ((*n).into(), json!([v])))
        .collect();
    let single = Value::Object(single);
    let multi = Value::Object(multi);
    let payload = Event {
        headers: Some(&single),
        multi_value_headers: Some(&multi),
        ..Event::of(&context)
    };
    if let Err(failure) = invoke(config, &payload) {
        failure.log("aws", "$disconnect", &config.url, id, &request_id);
    }
}

/// POSTs the event and reads the Lambda result. A non-2xx status is a failed
/// invocation (as a Lambda error would be).
fn invoke(config: &Config, event: &Event<'_>) -> Result<Option<lambda::LambdaResult>, Failure> {
    let response = backend::post_json(&config.url, event)?;
    backend::require_success(&response)?;
    lambda::LambdaResult::parse(&response.body).map_err(Failure::Unusable)
}

/// The event API Gateway gives a Lambda for a WebSocket route. Written straight from
/// borrowed parts: a message's event is built and serialized with no map in between.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_value_headers: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_string_parameters: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_value_query_string_parameters: Option<&'a Value>,
    request_context: &'a Context<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    is_base64_encoded: bool,
}

impl<'a> Event<'a> {
    /// An event with its `requestContext` and nothing else.
    fn of(request_context: &'a Context<'a>) -> Event<'a> {
        Event {
            headers: None,
            multi_value_headers: None,
            query_string_parameters: None,
            multi_value_query_string_parameters: None,
            request_context,
            body: None,
            is_base64_encoded: false,
        }
    }
}

/// `requestContext` as API Gateway builds it for a WebSocket route; `messageId`, the
/// disconnect fields and `authorizer` only in the events that get them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Context<'a> {
    route_key: &'a str,
    event_type: &'a str,
    /// API Gateway gives WebSocket events one id under both names.
    extended_request_id: &'a str,
    request_time: String,
    message_direction: &'static str,
    stage: &'a str,
    connected_at: u64,
    request_time_epoch: u64,
    identity: Identity<'a>,
    request_id: &'a str,
    domain_name: &'a str,
    management_endpoint: &'a str,
    connection_id: &'a str,
    api_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disconnect_status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disconnect_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorizer: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    source_ip: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
}

impl<'a> Context<'a> {
    /// The fields every event has.
    pub fn new(
        facts: &'a Facts,
        connection_id: &'a str,
        route_key: &'a str,
        event_type: &'a str,
        request_id: &'a str,
        now: u64,
    ) -> Context<'a> {
        Context {
            route_key,
            event_type,
            extended_request_id: request_id,
            request_time: clock::aws_request_time(now),
            message_direction: "IN",
            stage: &facts.stage,
            connected_at: facts.connected_at,
            request_time_epoch: now,
            identity: Identity {
                source_ip: &facts.source_ip,
                user_agent: facts.user_agent.as_deref(),
            },
            request_id,
            domain_name: &facts.domain_name,
            management_endpoint: &facts.management_endpoint,
            connection_id,
            api_id: &facts.api_id,
            message_id: None,
            disconnect_status_code: None,
            disconnect_reason: None,
            authorizer: None,
        }
    }
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
