//! Turning a backend's `$connect` verdict into the gateway's answer to the upgrade.

use wsgate_sdk::{ConnectResponse, ConnectionInfo, log};

use crate::failure::internal_error;
use crate::headers;

/// The backend refused the connection with `status`, `body` and `headers`: the client
/// gets exactly that. A status that cannot refuse an upgrade (a 3xx, which would send
/// the client elsewhere, or past 599) becomes a logged 500, as docs/integrations.md says.
pub fn refuse(
    shape: &str,
    status: u16,
    body: String,
    response_headers: Vec<(String, String)>,
) -> ConnectResponse {
    if !(400..=599).contains(&status) {
        log::warn(&format!(
            "integration ({shape}) $connect: the backend refused with status {status}, which \
             cannot refuse an upgrade (400–599 only); answering 500"
        ));
        return internal_error();
    }
    headers::for_refusal(response_headers).into_iter().fold(
        ConnectResponse::reject(status, body),
        |answer, (name, value)| answer.with_header(name, value),
    )
}

/// The backend accepted, choosing `protocol` if it named one. A subprotocol the client
/// did not offer is a backend bug: the upgrade is refused with 500 and logged, since
/// answering with it would break the client's handshake.
pub fn accept(shape: &str, info: &ConnectionInfo, protocol: Option<&str>) -> ConnectResponse {
    let Some(protocol) = protocol.map(str::trim).filter(|p| !p.is_empty()) else {
        return ConnectResponse::accept();
    };
    if info.requested_subprotocols.iter().any(|p| p == protocol) {
        ConnectResponse::accept_subprotocol(protocol)
    } else {
        log::error(&format!(
            "integration ({shape}) $connect for connection {}: the backend chose subprotocol \
             {protocol:?}, which the client did not offer (offered: {:?}); answering 500",
            info.id, info.requested_subprotocols
        ));
        internal_error()
    }
}
