//! The one HTTP call every shape makes: POST an event to the backend.

use wsgate_sdk::http::{self, Method, Request, Response};

use crate::failure::Failure;

/// POSTs `body` to `url` with `headers` and returns the answer, whatever its status.
/// Transport errors become a [`Failure`]: [`Failure::Unreachable`] when the backend
/// gave no answer (down, refusing, timing out), [`Failure::Unusable`] for the rest.
///
/// A redirect is not followed: the event would go on as a bodiless GET (303, or
/// 301/302 after a POST) to wherever the backend points, and a `$connect` would be
/// accepted by that URL's answer. A 3xx is the backend's answer as it is, which the
/// contract makes a failure (non-2xx) or a 500 (a refusal status that cannot be sent).
pub fn post(url: &str, headers: &[(String, String)], body: Vec<u8>) -> Result<Response, Failure> {
    let mut request = Request::new(Method::Post, url).no_redirects();
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if !body.is_empty() {
        request = request.body(body);
    }
    request.send().map_err(|err| match err {
        http::Error::Timeout | http::Error::Unreachable(_) => Failure::Unreachable(err.to_string()),
        // A URL, header or origin the gateway refuses is a config problem, and an
        // oversized or malformed answer is the backend's: neither is "unreachable".
        http::Error::InvalidUrl(_)
        | http::Error::InvalidHeader(_)
        | http::Error::Denied
        | http::Error::TooLarge
        | http::Error::Failed(_) => Failure::Unusable(err.to_string()),
    })
}

/// POSTs `event` as JSON (see [`post`]). Serialized straight into the body: `to_string`
/// would go through the formatting machinery, a measurable part of each message's cost.
pub fn post_json(url: &str, event: &impl serde::Serialize) -> Result<Response, Failure> {
    let body = serde_json::to_vec(event).expect("events serialize: string keys, no floats");
    post(
        url,
        &[("content-type".into(), "application/json".into())],
        body,
    )
}

/// The answer's status as a failure unless it is 2xx; the log gets the start of the
/// body, which usually says what went wrong.
pub fn require_success(response: &Response) -> Result<(), Failure> {
    if response.is_success() {
        return Ok(());
    }
    let start: String = String::from_utf8_lossy(&response.body)
        .chars()
        .take(120)
        .collect();
    Err(Failure::Unusable(format!(
        "the backend answered HTTP {}: {start:?}",
        response.status
    )))
}

/// The body of the backend's refusal as text for the client (lossy if not UTF-8: the
/// gateway's refusal body is text).
pub fn body_text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// The answer's headers whose values are text, for passing a refusal on.
pub fn text_headers(response: &Response) -> Vec<(String, String)> {
    response
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), String::from_utf8(value.clone()).ok()?)))
        .collect()
}
