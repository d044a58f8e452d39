//! Integration: puts an existing HTTP backend behind a wsgate route with no code, by
//! forwarding `$connect`, every message and `$disconnect` to it in the contract of the
//! gateway the backend was written for:
//!
//! - `aws` (default): AWS API Gateway's Lambda proxy events and results, with an
//!   optional Lambda REQUEST authorizer (`authorizer_url`);
//! - `yandex`: Yandex API Gateway's HTTP integration (`X-Yc-Apigateway-Websocket-*`);
//! - `west`: West Connectivity's `websocketInfo`, with `send`/`close` in the answer.
//!
//! Config: `url` (required), `shape`, `authorizer_url`, `domain_name` (default: the
//! gateway's `wsgate.domain_name`), `management_scheme` (default: the gateway's
//! `wsgate.management_scheme`), `stage` and `api_id` (default: the tenant), `region`,
//! `account`, `forward_headers`. A missing `url` or an unknown `shape`
//! refuses every `$connect` with 500 and logs which key is wrong. The full contracts
//! are in `docs/integrations.md`.
//!
//! The config is read once per instance (it cannot change under a running instance: a
//! new config comes with new instances); the only per-connection state (an
//! authorizer's verdict) lives in the connection's context. An instance keeps only a
//! bounded copy of what never changes while a connection is open (`facts`).

mod authorizer;
mod aws;
mod backend;
mod clock;
mod config;
mod facts;
mod failure;
mod headers;
mod ids;
mod lambda;
mod policy;
mod upgrade;
mod west;
mod yandex;

use config::{Config, Shape};
use wsgate_sdk::{
    ConnectResponse, ConnectionInfo, DisconnectEvent, Message, MessageEvent, Plugin, connections,
    log,
};

/// The integration handler.
pub struct Integration;

/// The config, read at the instance's first event, or `None` after logging what is
/// wrong with it.
fn config(event: &str) -> Option<&'static Config> {
    static CONFIG: std::sync::OnceLock<Result<Config, String>> = std::sync::OnceLock::new();
    match CONFIG.get_or_init(Config::load) {
        Ok(config) => Some(config),
        Err(why) => {
            log::error(&format!("{why} (event {event})"));
            None
        }
    }
}

/// What the gateway knows of connection `id`, or `None` (logged) if it is gone.
pub(crate) fn known_connection(id: &str) -> Option<ConnectionInfo> {
    connections::get_info(id)
        .map_err(|err| {
            log::debug(&format!(
                "integration: no info for connection {id} ({err:?}); sending the event without it"
            ));
        })
        .ok()
}

/// What the gateway knows of connection `id`. A later event may find it gone (closed
/// in the meantime); the event still goes to the backend, with the facts left empty.
pub(crate) fn connection(id: &str) -> ConnectionInfo {
    known_connection(id).unwrap_or_else(|| unknown_connection(id))
}

/// A connection the gateway no longer knows: its id and nothing else.
pub(crate) fn unknown_connection(id: &str) -> ConnectionInfo {
    ConnectionInfo {
        id: id.to_owned(),
        tenant: String::new(),
        route: String::new(),
        path: String::new(),
        uri: String::new(),
        headers: Vec::new(),
        path_params: Vec::new(),
        query_params: Vec::new(),
        source_ip: String::new(),
        user_agent: None,
        requested_subprotocols: Vec::new(),
        subprotocol: None,
        connected_at: 0,
        last_active_at: 0,
    }
}

impl Plugin for Integration {
    fn on_connect(info: ConnectionInfo) -> ConnectResponse {
        let Some(config) = config("$connect") else {
            return failure::internal_error();
        };
        match config.shape {
            Shape::Aws => aws::on_connect(config, &info),
            Shape::Yandex => yandex::on_connect(config, &info),
            Shape::West => west::on_connect(config, &info),
        }
    }

    fn on_message(event: MessageEvent) -> Option<Message> {
        let Some(config) = config("message") else {
            return Some(failure::error_frame(&event.connection_id, &ids::aws()));
        };
        match config.shape {
            Shape::Aws => aws::on_message(config, &event),
            Shape::Yandex => yandex::on_message(config, &event),
            Shape::West => west::on_message(config, &event),
        }
    }

    fn on_disconnect(event: DisconnectEvent) {
        let Some(config) = config("$disconnect") else {
            return;
        };
        match config.shape {
            Shape::Aws => aws::on_disconnect(config, &event),
            Shape::Yandex => yandex::on_disconnect(config, &event),
            Shape::West => west::on_disconnect(config, &event),
        }
    }
}

#[cfg(target_arch = "wasm32")]
wsgate_sdk::export!(Integration);
