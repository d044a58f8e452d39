//! Auth: a `$connect` handler that lets a client in only with the token set in its
//! config, given as `Authorization: Bearer <token>` or as `?token=<token>`. Anyone else
//! gets HTTP 401 and no connection is made.
//!
//! Config: `token` (required). A missing token rejects everyone, so a forgotten setting
//! fails closed.

use wsgate_sdk::{ConnectResponse, ConnectionInfo, Plugin, config, log};

/// The auth handler.
pub struct Auth;

fn presented_token(info: &ConnectionInfo) -> Option<&str> {
    info.header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .or_else(|| info.query_param("token"))
}

/// Compares without an early exit, so the time taken does not tell how much matched.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Plugin for Auth {
    fn on_connect(info: ConnectionInfo) -> ConnectResponse {
        let Some(expected) = config::get("token") else {
            log::error("auth plugin has no `token` in its config; rejecting every connection");
            return ConnectResponse::reject(401, "Unauthorized");
        };
        match presented_token(&info) {
            Some(token) if same(token, &expected) => ConnectResponse::accept(),
            _ => ConnectResponse::reject(401, "Unauthorized: a valid token is required")
                .with_header("www-authenticate", "Bearer"),
        }
    }
}

wsgate_sdk::export!(Auth);
