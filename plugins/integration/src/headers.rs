//! Header names and values on their way between the client, the backend and the
//! gateway's own HTTP answers.

/// `name` (lower case, as the gateway keeps it) in the casing clients put on the wire:
/// `sec-websocket-key` → `Sec-WebSocket-Key`, `x-amzn-trace-id` → `X-Amzn-Trace-Id`.
///
/// API Gateway hands a Lambda the header names as the client sent them, and Lambda code
/// reads them that way (`event.headers['Sec-WebSocket-Protocol']` in AWS's own
/// examples). The gateway lower-cases names, so this restores the casing browsers and
/// common clients use.
pub fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, word) in name.split('-').enumerate() {
        if i > 0 {
            out.push('-');
        }
        match word {
            "websocket" => out.push_str("WebSocket"),
            "dnt" | "te" | "md5" => out.push_str(&word.to_ascii_uppercase()),
            _ => {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    out.push(first.to_ascii_uppercase());
                    out.push_str(chars.as_str());
                }
            }
        }
    }
    out
}

/// Whether `name` is a valid HTTP field name (RFC 9110 token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` can go into the gateway's own HTTP answer: visible ASCII, spaces and
/// tabs only (the gateway refuses a `$connect` answer carrying anything else).
fn is_plain_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Headers the gateway writes itself on a refusal, or that describe the backend's
/// connection rather than the answer: passing them on would duplicate or contradict it.
const NOT_PASSED_ON: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The headers of a backend's refusal that can go to the client as they are: valid,
/// and none the gateway sets itself. The others are dropped, not fatal: a refusal
/// should still reach the client.
pub fn for_refusal(headers: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(name, value)| {
            is_token(name)
                && is_plain_value(value)
                && !NOT_PASSED_ON.contains(&name.to_ascii_lowercase().as_str())
        })
        .collect()
}

/// `value` made safe for an outgoing request header: control characters (a close
/// reason may hold any UTF-8) become spaces, so the request is never refused for them.
pub fn sanitize(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
