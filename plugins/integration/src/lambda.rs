//! A Lambda proxy result, `{statusCode, body, headers, multiValueHeaders,
//! isBase64Encoded}`, read as strictly as API Gateway reads it: a result it would call
//! malformed is an unusable answer here too.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use wsgate_sdk::Message;

/// A result's `body`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `isBase64Encoded` false: the body string as is.
    Text(String),
    /// `isBase64Encoded` true: the decoded bytes.
    Binary(Vec<u8>),
}

impl Body {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        match self {
            Body::Text(text) => text.is_empty(),
            Body::Binary(bytes) => bytes.is_empty(),
        }
    }

    /// The body as a message for the client: text as a text frame, base64 as binary.
    pub fn into_message(self) -> Message {
        match self {
            Body::Text(text) => Message::Text(text),
            Body::Binary(bytes) => Message::Binary(bytes),
        }
    }

    /// The body as text for an HTTP refusal.
    pub fn into_text(self) -> String {
        match self {
            Body::Text(text) => text,
            Body::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// What the handler returned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LambdaResult {
    /// `statusCode`, if given.
    pub status_code: Option<u16>,
    /// `body`, if given.
    pub body: Option<Body>,
    /// `headers` then `multiValueHeaders`, names as given.
    pub headers: Vec<(String, String)>,
}

impl LambdaResult {
    /// Reads the backend's response body. `Ok(None)` for an empty body or `null` (the
    /// handler returned nothing); `Err` says what is malformed.
    pub fn parse(raw: &[u8]) -> Result<Option<LambdaResult>, String> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let value: Value = serde_json::from_slice(raw).map_err(|err| {
            format!(
                "the answer is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(120)])
            )
        })?;
        let map = match value {
            Value::Null => return Ok(None),
            Value::Object(map) => map,
            other => {
                return Err(format!(
                    "the answer is JSON but not a Lambda proxy result object: {}",
                    truncate(&other.to_string())
                ));
            }
        };
        let base64 = match map.get("isBase64Encoded") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => return Err("`isBase64Encoded` is not a boolean".into()),
        };
        let body = match map.get("body") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if base64 => {
                Some(Body::Binary(STANDARD.decode(text.trim()).map_err(
                    |err| format!("`body` is not valid base64: {err}"),
                )?))
            }
            Some(Value::String(text)) => Some(Body::Text(text.clone())),
            Some(_) => return Err("`body` is not a string".into()),
        };
        Ok(Some(LambdaResult {
            status_code: status_code(map.get("statusCode"))?,
            body,
            headers: headers(&map)?,
        }))
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(120).collect()
}

/// `statusCode`: a number, or a string holding one (Lambda runtimes send both).
fn status_code(value: Option<&Value>) -> Result<Option<u16>, String> {
    let code = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match code {
        Some(code @ 100..=999) => Ok(Some(code as u16)),
        _ => Err(format!(
            "`statusCode` {} is not an HTTP status",
            value.unwrap_or(&Value::Null)
        )),
    }
}

/// A header value: strings as they are, numbers and booleans written out.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `headers`, then the `multiValueHeaders` values of names `headers` lacks (API
/// Gateway merges the two the same way).
fn headers(map: &Map<String, Value>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    match map.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (name, value) in headers {
                let value = scalar(value).ok_or(format!("header {name:?} is not a string"))?;
                out.push((name.clone(), value));
            }
        }
        Some(_) => return Err("`headers` is not an object".into()),
    }
    let single = out.len();
    match map.get("multiValueHeaders") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (name, values) in headers {
                if out[..single]
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(name))
                {
                    continue;
                }
                let values = values
                    .as_array()
                    .ok_or(format!("multi-value header {name:?} is not a list"))?;
                for value in values {
                    let value =
                        scalar(value).ok_or(format!("header {name:?} holds a non-string"))?;
                    out.push((name.clone(), value));
                }
            }
        }
        Some(_) => return Err("`multiValueHeaders` is not an object".into()),
    }
    Ok(out)
}
