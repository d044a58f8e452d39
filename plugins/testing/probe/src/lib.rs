//! Testing plugin, not an example: drives every host call from a text command, so tests
//! can check the host API from inside a real guest. Each command's result comes back as
//! the reply.
//!
//! | command | reply |
//! |---|---|
//! | `list` / `list route=/r` / `list path=/p` | ids, comma-separated, sorted |
//! | `info <id>` | `id=<id> route=… path=… room=… ua=… ip=…` |
//! | `send <id> <text>` | `ok` |
//! | `kick <id> <code> <reason>` | `ok` |
//! | `config <key>` | the value or `none` |
//! | `log <text>` | `ok` (logged at info) |
//!
//! Any failing host call answers `error: <host-error>`, e.g. `error: gone`. The route key
//! that selected the plugin is returned for `key`.
//!
//! On connect, query parameters steer the answer: `subprotocol=P` accepts choosing `P`
//! (with a response header `x-probe: yes`), `reject=STATUS` rejects with that status.

use wsgate_sdk::{
    ConnectResponse, ConnectionInfo, HostError, ListFilter, Message, MessageEvent, Plugin,
};
use wsgate_sdk::{config, connections, log};

/// The probe handler.
pub struct Probe;

fn describe(info: &ConnectionInfo) -> String {
    format!(
        "id={} tenant={} route={} path={} room={} ua={} ip={} q={}",
        info.id,
        info.tenant,
        info.route,
        info.path,
        info.path_param("room").unwrap_or("-"),
        info.user_agent.as_deref().unwrap_or("-"),
        info.source_ip,
        info.query_param("q").unwrap_or("-"),
    )
}

fn error_name(err: HostError) -> &'static str {
    match err {
        HostError::Gone => "gone",
        HostError::Forbidden => "forbidden",
        HostError::PayloadTooLarge => "payload-too-large",
        HostError::LimitExceeded => "limit-exceeded",
        HostError::InvalidArgument => "invalid-argument",
        HostError::Unavailable => "unavailable",
    }
}

fn answer<T>(result: Result<T, HostError>, ok: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(err) => format!("error: {}", error_name(err)),
    }
}

fn run(command: &str, route_key: &str) -> String {
    let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
    match verb {
        "key" => route_key.to_owned(),
        "list" => {
            let mut filter = ListFilter {
                route: None,
                path: None,
            };
            if let Some(route) = rest.strip_prefix("route=") {
                filter.route = Some(route.to_owned());
            } else if let Some(path) = rest.strip_prefix("path=") {
                filter.path = Some(path.to_owned());
            }
            answer(connections::list(&filter), |mut ids| {
                ids.sort();
                ids.join(",")
            })
        }
        "info" => answer(connections::get_info(rest), |info| describe(&info)),
        "send" => {
            let (id, text) = rest.split_once(' ').unwrap_or((rest, ""));
            answer(connections::send_text(id, text), |()| "ok".into())
        }
        "sendbig" => {
            let (id, size) = rest.split_once(' ').unwrap_or((rest, "0"));
            let size = size.parse().unwrap_or(0);
            answer(
                connections::send(id, &Message::Binary(vec![0; size])),
                |()| "ok".into(),
            )
        }
        "kick" => {
            let mut parts = rest.splitn(3, ' ');
            let id = parts.next().unwrap_or("");
            let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1000);
            let reason = parts.next().unwrap_or("");
            answer(connections::disconnect(id, code, reason), |()| "ok".into())
        }
        "config" => config::get(rest).unwrap_or_else(|| "none".into()),
        "log" => {
            log::info(rest);
            "ok".into()
        }
        _ => format!("unknown command: {verb}"),
    }
}

impl Plugin for Probe {
    fn on_connect(info: ConnectionInfo) -> ConnectResponse {
        if let Some(status) = info.query_param("reject").and_then(|s| s.parse().ok()) {
            return ConnectResponse::reject(status, "rejected by request");
        }
        match info.query_param("subprotocol") {
            Some(protocol) => {
                ConnectResponse::accept_subprotocol(protocol).with_header("x-probe", "yes")
            }
            None => ConnectResponse::accept(),
        }
    }

    fn on_message(event: MessageEvent) -> Option<Message> {
        let command = event.message.as_text()?;
        Some(Message::Text(run(command, &event.route_key)))
    }
}

wsgate_sdk::export!(Probe);
