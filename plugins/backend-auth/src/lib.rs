//! Backend auth: check every client with an auth service at `$connect`, then hand each
//! message to a backend over HTTP and send its answer back. The worked example of
//! [`wsgate_sdk::http`]: copy it and adapt.
//!
//! Config:
//! - `auth_url` (required): gets `POST {"token":"<token>"}`, the token coming from
//!   `?token=` or `Authorization: Bearer`. A 2xx lets the client in, and its body (a
//!   JSON object such as `{"user":"alice"}`) becomes the connection's context; 401 or
//!   403 keeps it out.
//! - `backend_url` (required): gets every message as a POST body (text as
//!   `text/plain; charset=utf-8`, binary as `application/octet-stream`), with
//!   `x-connection-id` and `x-user` (the context) headers. A non-empty answer goes back
//!   to the sender.
//!
//! Both origins must be listed in the plugin's `allowed_outbound_hosts`, e.g.
//! `["https://auth.internal:443", "http://127.0.0.1:7070"]`. The calls are synchronous:
//! waiting for them does not use the plugin's CPU time, but `limits.outbound_timeout`
//! bounds it.

use wsgate_sdk::http::{self, Method, Request};
use wsgate_sdk::{
    ConnectResponse, ConnectionInfo, Message, MessageEvent, Plugin, config, connections, log,
};

/// The backend-auth handler.
pub struct BackendAuth;

impl Plugin for BackendAuth {
    fn on_connect(info: ConnectionInfo) -> ConnectResponse {
        // A missing setting fails closed: nobody gets in.
        let Some(auth_url) = config::get("auth_url") else {
            log::error("backend-auth has no `auth_url` in its config; rejecting everyone");
            return ConnectResponse::reject(500, "misconfigured");
        };
        let Some(token) = presented_token(&info) else {
            return unauthorized(401);
        };

        let body = format!("{{\"token\":{}}}", json_string(token));
        let answer = match http::post(&auth_url, "application/json", body) {
            Ok(answer) => answer,
            // The auth service could not say yes or no: `error` says why (Denied: the
            // origin is missing from `allowed_outbound_hosts`; Timeout; Unreachable…).
            // A gateway error, not the client's fault.
            Err(error) => {
                log::warn(&format!("auth service {auth_url}: {error}"));
                return ConnectResponse::reject(502, "auth service unavailable");
            }
        };
        match answer.status {
            401 | 403 => return unauthorized(answer.status),
            _ if !answer.is_success() => {
                log::warn(&format!(
                    "auth service {auth_url} answered {}",
                    answer.status
                ));
                return ConnectResponse::reject(502, "auth service unavailable");
            }
            _ => {}
        }

        // Keep the verdict with the connection so every message knows the user. It goes
        // out later as a header value, which cannot hold line breaks; JSON does not
        // need them outside strings and cannot have them inside.
        let context = answer
            .text()
            .unwrap_or("")
            .trim()
            .replace(['\r', '\n'], " ");
        let context = if context.is_empty() {
            "{}".to_owned()
        } else {
            context
        };
        if let Err(error) = connections::set_context(&info.id, &context) {
            log::warn(&format!("cannot keep the auth context: {error:?}"));
            return ConnectResponse::reject(502, "auth context refused");
        }
        ConnectResponse::accept()
    }

    fn on_message(event: MessageEvent) -> Option<Message> {
        let Some(backend_url) = config::get("backend_url") else {
            log::error("backend-auth has no `backend_url` in its config");
            return Some(unavailable());
        };
        // Set at `$connect`; a connection admitted without this plugin has none.
        let user = connections::get_context(&event.connection_id)
            .ok()
            .flatten()
            .unwrap_or_else(|| "{}".to_owned());
        let content_type = match event.message {
            Message::Text(_) => "text/plain; charset=utf-8",
            Message::Binary(_) => "application/octet-stream",
        };

        let answer = Request::new(Method::Post, &backend_url)
            .header("content-type", content_type)
            .header("x-connection-id", &event.connection_id)
            .header("x-user", &user)
            .body(event.message.as_bytes())
            .send();
        let answer = match answer {
            Ok(answer) if answer.is_success() => answer,
            Ok(answer) => {
                log::warn(&format!("backend {backend_url} answered {}", answer.status));
                return Some(unavailable());
            }
            Err(error) => {
                log::warn(&format!("backend {backend_url}: {error}"));
                return Some(unavailable());
            }
        };

        // The answer is the reply: text if it is UTF-8, else binary; nothing if empty.
        if answer.body.is_empty() {
            return None;
        }
        Some(match String::from_utf8(answer.body) {
            Ok(text) => Message::Text(text),
            Err(bytes) => Message::Binary(bytes.into_bytes()),
        })
    }
}

/// The client's token: `?token=` or `Authorization: Bearer <token>`.
fn presented_token(info: &ConnectionInfo) -> Option<&str> {
    info.query_param("token")
        .or_else(|| info.header("authorization")?.strip_prefix("Bearer "))
        .filter(|token| !token.is_empty())
}

fn unauthorized(status: u16) -> ConnectResponse {
    ConnectResponse::reject(status, "unauthorized")
}

fn unavailable() -> Message {
    Message::text(r#"{"message":"backend unavailable"}"#)
}

/// `text` as a JSON string literal, quotes included. Small enough to spare a JSON crate.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

wsgate_sdk::export!(BackendAuth);
