//! AWS's Lambda REQUEST authorizer for `$connect`: the event it receives, and its
//! answer read as API Gateway reads it.

use serde_json::{Map, Value, json};
use wsgate_sdk::{ConnectionInfo, log};

use crate::config::Config;
use crate::{aws, backend, clock, policy};

/// The authorizer's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Let the client in; `requestContext.authorizer` for this connection's events:
    /// the context keys (values as strings), `principalId` and `integrationLatency`.
    Allow(Map<String, Value>),
    /// 401: the authorizer said "Unauthorized" (missing or bad credentials).
    Unauthorized,
    /// 403: denied by the policy, or no usable answer.
    Forbidden,
}

/// Calls the authorizer at `url` for the connecting client. `request_context` is the
/// CONNECT event's (the authorizer sees the same ids as the integration).
pub fn authorize(
    config: &Config,
    url: &str,
    info: &ConnectionInfo,
    request_context: &aws::Context<'_>,
    request_id: &str,
) -> Verdict {
    let method_arn = format!(
        "arn:aws:execute-api:{}:{}:{}/{}/$connect",
        config.region,
        config.account,
        config.api_id(&info.tenant),
        config.stage(&info.tenant)
    );
    // The authorizer sees every header, `Connection` and `Upgrade` included.
    let (headers, multi_headers) = aws::header_maps(info.headers.iter());
    let (query, multi_query) = aws::param_maps(&info.query_params);
    let event = json!({
        "type": "REQUEST",
        "methodArn": method_arn,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "stageVariables": {},
        "requestContext": request_context,
    });
    let refuse = |why: &str| {
        log::warn(&format!(
            "integration (aws) authorizer for connection {} (request {request_id}): POST {url}: \
             {why}; refusing with 403",
            info.id
        ));
        Verdict::Forbidden
    };
    let started = clock::now_ms();
    let response = match backend::post_json(url, &event) {
        Ok(response) => response,
        Err(failure) => return refuse(&format!("no usable answer: {}", failure.detail())),
    };
    let latency = clock::now_ms().saturating_sub(started);
    if response.status == 401 || says_unauthorized(&response.body) {
        log::info(&format!(
            "integration (aws) authorizer for connection {}: Unauthorized; refusing with 401",
            info.id
        ));
        return Verdict::Unauthorized;
    }
    if !response.is_success() {
        return refuse(&format!("the authorizer answered HTTP {}", response.status));
    }
    let answer = match read_answer(&response.body) {
        Ok(answer) => answer,
        Err(why) => return refuse(&format!("invalid answer: {why}")),
    };
    match policy::allows(&answer.policy, policy::INVOKE, &method_arn) {
        Ok(true) => {}
        Ok(false) => {
            log::info(&format!(
                "integration (aws) authorizer for connection {}: policy for principal {:?} does \
                 not allow {} on {method_arn}; refusing with 403",
                info.id,
                answer.principal_id,
                policy::INVOKE
            ));
            return Verdict::Forbidden;
        }
        Err(why) => return refuse(&format!("invalid policy: {why}")),
    }
    let mut authorizer = answer.context;
    authorizer.insert("principalId".into(), Value::String(answer.principal_id));
    authorizer.insert("integrationLatency".into(), json!(latency));
    Verdict::Allow(authorizer)
}

/// Whether the answer is Lambda's way of saying 401: the handler threw "Unauthorized",
/// which reaches an HTTP caller as `"Unauthorized"`, `{"message":"Unauthorized"}` or
/// Lambda's error object `{"errorMessage":"Unauthorized",…}` (or plain text).
fn says_unauthorized(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    if text.trim() == "Unauthorized" {
        return true;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(s)) => s == "Unauthorized",
        Ok(Value::Object(map)) => ["message", "errorMessage"]
            .iter()
            .any(|key| map.get(*key).and_then(Value::as_str) == Some("Unauthorized")),
        _ => false,
    }
}

/// A parsed authorizer answer.
struct Answer {
    principal_id: String,
    policy: Value,
    /// `context`, values stringified as API Gateway passes them on.
    context: Map<String, Value>,
}

fn read_answer(body: &[u8]) -> Result<Answer, String> {
    let value: Value = serde_json::from_slice(body).map_err(|err| format!("not JSON ({err})"))?;
    let map = value.as_object().ok_or("not a JSON object")?;
    let principal_id = match map.get("principalId") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err("`principalId` is missing or not a string".into()),
    };
    let policy = map
        .get("policyDocument")
        .cloned()
        .ok_or("`policyDocument` is missing")?;
    let mut context = Map::new();
    match map.get("context") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (key, value) in given {
                // API Gateway stringifies numbers and booleans, keeps null, and
                // refuses objects and arrays.
                let value = match value {
                    Value::String(_) | Value::Null => value.clone(),
                    Value::Number(n) => Value::String(n.to_string()),
                    Value::Bool(b) => Value::String(b.to_string()),
                    _ => {
                        return Err(format!(
                            "context value {key:?} is an object or array (only strings, \
                             numbers and booleans are allowed)"
                        ));
                    }
                };
                context.insert(key.clone(), value);
            }
        }
        Some(_) => return Err("`context` is not an object".into()),
    }
    Ok(Answer {
        principal_id,
        policy,
        context,
    })
}
