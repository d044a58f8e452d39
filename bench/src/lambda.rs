//! S9's two halves of the AWS Lambda proxy contract, as the stock integration plugin
//! (`plugins/integration`, shape `aws`) speaks it:
//!
//! - `lambda-backend`: the HTTP backend. It parses each POSTed event and answers
//!   `{"statusCode":200,"body":<the event's body>}`, so a message comes back as it went
//!   (CONNECT and DISCONNECT events, which have no body, get `{"statusCode":200}`).
//! - `echo-server --relay URL`: the native baseline. A tokio-tungstenite server that
//!   POSTs every message to URL as the same MESSAGE event the plugin builds, through one
//!   pooled keep-alive hyper client shared by all connections, and sends the answer's
//!   `body` back. A connection's messages are handled in order: the next one is read
//!   only once the previous one's POST has been answered, as the gateway runs one
//!   connection's events one after another.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// What the gateway's own outbound client does with idle pooled connections
/// (runtime/src/plugin/outbound/client.rs), so both sides keep theirs alike.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// The gateway's default `max_outbound_requests`, which it also uses as the pool's
/// idle connections per host.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// `stage` and `apiId`: the plugin defaults both to the tenant, `bench` in S9.
const TENANT: &str = "bench";

// ---------------------------------------------------------------------------------
// The backend.

/// Serves until killed; prints `listening http=ADDR` first. Any path, POST only.
pub async fn serve_backend(listen: &str) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    crate::open::raise_open_files_limit()?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening http={}", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new()
        .route("/", axum::routing::post(answer))
        .route("/{*path}", axum::routing::post(answer));
    axum::serve(listener, app).await?;
    Ok(())
}

/// A Lambda handler that returns the message it was given: parses the whole event, as
/// a Lambda runtime does, and answers with its `body` (and `isBase64Encoded`).
async fn answer(event: Bytes) -> Result<axum::Json<Value>, (hyper::StatusCode, String)> {
    let event: Value = serde_json::from_slice(&event)
        .map_err(|err| (hyper::StatusCode::BAD_REQUEST, format!("not JSON: {err}")))?;
    if !event["requestContext"].is_object() {
        return Err((
            hyper::StatusCode::BAD_REQUEST,
            "not a Lambda proxy event: no requestContext".into(),
        ));
    }
    Ok(axum::Json(match event.get("body") {
        Some(Value::String(body)) => json!({
            "statusCode": 200,
            "body": body,
            "isBase64Encoded": event["isBase64Encoded"].as_bool().unwrap_or(false),
        }),
        _ => json!({ "statusCode": 200 }),
    }))
}

// ---------------------------------------------------------------------------------
// The relay baseline.

/// The one pooled client and where it posts, shared by every connection.
#[derive(Clone)]
pub struct Relay {
    client: Client<HttpConnector, Full<Bytes>>,
    url: hyper::Uri,
}

/// What an event says about its connection, fixed at the upgrade.
struct Connection {
    id: String,
    connected_at: u64,
    source_ip: String,
    user_agent: Option<String>,
    domain_name: String,
}

impl Relay {
    /// A relay posting to `url` (plain `http://`), with the gateway's pool settings.
    pub fn new(url: &str) -> anyhow::Result<Relay> {
        let url: hyper::Uri = url.parse().with_context(|| format!("relay URL {url:?}"))?;
        anyhow::ensure!(
            url.scheme_str() == Some("http"),
            "relay URL {url} is not http://"
        );
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .build(http);
        Ok(Relay { client, url })
    }

    /// Upgrades `stream` and relays its messages one at a time until it closes.
    // The handshake callback's error type is tungstenite's, not ours to box.
    #[allow(clippy::result_large_err)]
    pub async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let (mut user_agent, mut host) = (None, None);
        let handshake = tokio_tungstenite::accept_hdr_async(
            stream,
            |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
                let header = |name| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                user_agent = header(USER_AGENT);
                host = header(HOST);
                Ok(response)
            },
        )
        .await;
        let Ok(mut ws) = handshake else {
            return;
        };
        let connection = Connection {
            id: aws_id(),
            connected_at: now_ms(),
            source_ip: peer.ip().to_string(),
            user_agent,
            domain_name: host.unwrap_or_default(),
        };
        while let Some(Ok(message)) = ws.next().await {
            let (body, binary) = match &message {
                Message::Text(text) => (text.as_str().to_owned(), false),
                Message::Binary(bytes) => (STANDARD.encode(bytes), true),
                _ => continue,
            };
            let request_id = aws_id();
            let event = message_event(&connection, &request_id, body, binary);
            let reply = match self.invoke(&event).await {
                Ok(reply) => reply,
                Err(why) => {
                    eprintln!(
                        "relay: MESSAGE for connection {} to {}: {why}",
                        connection.id, self.url
                    );
                    Some(error_frame(&connection.id, &request_id))
                }
            };
            if let Some(reply) = reply
                && ws.send(reply).await.is_err()
            {
                break;
            }
        }
    }

    /// POSTs the event and reads the Lambda result's `body` as the reply (none when it
    /// is absent or empty, as the plugin does).
    async fn invoke(&self, event: &Value) -> Result<Option<Message>, String> {
        let request = hyper::Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(event.to_string())))
            .map_err(|err| err.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|err| format!("unreachable: {err}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("reading the answer: {err}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the backend answered HTTP {status}"));
        }
        reply(&body)
    }
}

/// The MESSAGE event, with every field the plugin's `aws` shape puts in one (no
/// `authorizer`: S9 has none).
fn message_event(connection: &Connection, request_id: &str, body: String, binary: bool) -> Value {
    let now = now_ms();
    let mut identity = json!({ "sourceIp": connection.source_ip });
    if let Some(agent) = &connection.user_agent {
        identity["userAgent"] = json!(agent);
    }
    json!({
        "requestContext": {
            "routeKey": "$default",
            "messageId": aws_id(),
            "eventType": "MESSAGE",
            "extendedRequestId": request_id,
            "requestTime": aws_request_time(now),
            "messageDirection": "IN",
            "stage": TENANT,
            "connectedAt": connection.connected_at,
            "requestTimeEpoch": now,
            "identity": identity,
            "requestId": request_id,
            "domainName": connection.domain_name,
            "connectionId": connection.id,
            "apiId": TENANT,
        },
        "body": body,
        "isBase64Encoded": binary,
    })
}

/// The Lambda result's `body` as a message: text, or binary when `isBase64Encoded`.
fn reply(raw: &[u8]) -> Result<Option<Message>, String> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let result: Value =
        serde_json::from_slice(raw).map_err(|err| format!("the answer is not JSON: {err}"))?;
    let base64 = result["isBase64Encoded"].as_bool().unwrap_or(false);
    match &result["body"] {
        Value::Null => Ok(None),
        Value::String(body) if body.is_empty() => Ok(None),
        Value::String(body) if base64 => STANDARD
            .decode(body.trim())
            .map(|bytes| Some(Message::binary(bytes)))
            .map_err(|err| format!("`body` is not valid base64: {err}")),
        Value::String(body) => Ok(Some(Message::text(body.clone()))),
        _ => Err("`body` is not a string".into()),
    }
}

/// What the plugin sends the client when the backend fails.
fn error_frame(connection_id: &str, request_id: &str) -> Message {
    Message::text(
        json!({
            "message": "Internal server error",
            "connectionId": connection_id,
            "requestId": request_id,
        })
        .to_string(),
    )
}

/// An id like API Gateway's (and the plugin's): 11 random bytes in base64.
fn aws_id() -> String {
    STANDARD.encode(rand::random::<[u8; 11]>())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `ms` as API Gateway's `requestTime`, `03/Dec/2026:10:00:00 +0000`: the same
/// formatting the plugin does for every event.
fn aws_request_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{day:02}/{}/{year:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month (1–12) and day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_time_is_api_gateways_format() {
        // 2026-12-03T10:00:05.123Z
        assert_eq!(
            aws_request_time(1_796_292_005_123),
            "03/Dec/2026:10:00:05 +0000"
        );
    }

    #[test]
    fn an_event_carries_the_plugins_fields() {
        let connection = Connection {
            id: "c1".into(),
            connected_at: 1,
            source_ip: "127.0.0.1".into(),
            user_agent: None,
            domain_name: "127.0.0.1:1".into(),
        };
        let event = message_event(&connection, "r1", "hi".into(), false);
        let context = event["requestContext"].as_object().unwrap();
        for key in [
            "routeKey",
            "eventType",
            "connectionId",
            "messageId",
            "requestId",
            "requestTimeEpoch",
            "domainName",
            "stage",
            "apiId",
            "connectedAt",
            "identity",
        ] {
            assert!(context.contains_key(key), "{key} missing from {event}");
        }
        assert_eq!(event["body"], "hi");
        assert_eq!(event["isBase64Encoded"], false);
    }

    #[test]
    fn the_answer_body_is_the_reply() {
        let text = reply(br#"{"statusCode":200,"body":"hi"}"#).unwrap();
        assert_eq!(text, Some(Message::text("hi")));
        let binary = reply(br#"{"statusCode":200,"body":"AAE=","isBase64Encoded":true}"#);
        assert_eq!(binary.unwrap(), Some(Message::binary(vec![0u8, 1])));
        assert_eq!(reply(br#"{"statusCode":200}"#).unwrap(), None);
        assert!(reply(b"nope").is_err());
    }
}
