//! The stock integration plugin (`plugins/integration`, contract in
//! docs/integrations.md) in front of real HTTP backends: AWS's Lambda proxy events and
//! REQUEST authorizer, Yandex's HTTP integration, West's `websocketInfo`, and what the
//! client sees when the backend fails, hangs or talks nonsense.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::backend::{Backend, Reply, Seen};
use crate::harness::{
    self, Client, Gateway, WAIT, ask, expect_close, http, plugin, recv, recv_json, recv_text,
    refusal, send_text,
};
use crate::plugins;

// ------------------------------------------------------------------------- helpers

/// The route most tests use: everything of `/int` goes to plugin `int`.
const ROUTE: &str = "[tenants.t.routes.\"/int\"]\nplugin = \"int\"\n";

/// Tenant `t` with the integration plugin `int`, granted `origins`, configured with
/// `config` (the inside of `config = { … }`) plus `extra` plugin lines, and `routes`.
fn integration(origins: &[String], config: &str, extra: &str, routes: &str) -> String {
    let grant = origins
        .iter()
        .map(|o| format!("{o:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut tenants = plugin(
        "t",
        "int",
        plugins::INTEGRATION,
        &format!("allowed_outbound_hosts = [{grant}]\nconfig = {{ {config} }}\n{extra}"),
    );
    tenants.push_str(routes);
    harness::config(&tenants)
}

/// `/int` in front of `backend`'s `/aws`, shape `aws`.
fn aws_config(backend: &Backend) -> String {
    integration(
        &[backend.origin()],
        &format!("url = {:?}, shape = \"aws\"", backend.url("/aws")),
        "",
        ROUTE,
    )
}

/// The request body as JSON.
fn json_of(seen: &Seen) -> Value {
    serde_json::from_slice(&seen.body)
        .unwrap_or_else(|e| panic!("the backend got no JSON ({e}): {}", seen.text()))
}

/// A Lambda return value.
fn lambda(result: Value) -> Reply {
    Reply::ok(result.to_string()).header("content-type", "application/json")
}

/// A 200 with exactly this `Content-Type`. Sent chunked: the recording backend would
/// otherwise put its own `application/octet-stream` before it.
fn typed(content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        chunked: true,
        ..Reply::ok(body)
    }
    .header("content-type", content_type)
}

/// The event type of an `aws` event.
fn event_type(seen: &Seen) -> String {
    json_of(seen)["requestContext"]["eventType"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A Lambda that echoes: text as `echo: …`, binary back as it came, `{}` otherwise.
fn aws_echo(seen: &Seen) -> Reply {
    let event = json_of(seen);
    if event["requestContext"]["eventType"] != "MESSAGE" {
        return lambda(json!({"statusCode": 200}));
    }
    let body = event["body"].as_str().unwrap_or_default();
    if event["isBase64Encoded"] == true {
        lambda(json!({"statusCode": 200, "body": body, "isBase64Encoded": true}))
    } else {
        lambda(json!({"statusCode": 200, "body": format!("echo: {body}")}))
    }
}

/// A JSON object's keys, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// `expected`, sorted, as owned strings.
fn sorted(expected: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    out.sort();
    out
}

/// An AWS request/message id: 11 random bytes in base64, 16 characters ending in `=`.
fn assert_aws_id(id: &Value) {
    let id = id
        .as_str()
        .unwrap_or_else(|| panic!("not a string id: {id}"));
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.ends_with('='), "{id}");
    assert_eq!(STANDARD.decode(id).map(|b| b.len()).ok(), Some(11), "{id}");
}

/// `ms` as API Gateway's `requestTime`, `03/Dec/2026:10:00:00 +0000`, worked out from
/// an RFC 3339 rendering rather than the plugin's own calendar code.
fn aws_request_time(ms: u64) -> String {
    let rfc = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    // 2026-12-03T10:00:00Z
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month: usize = rfc[5..7].parse().unwrap();
    format!(
        "{}/{}/{}:{} +0000",
        &rfc[8..10],
        MONTHS[month - 1],
        &rfc[0..4],
        &rfc[11..19]
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The `requestContext` fields every `aws` event has; returns its `requestId`.
fn assert_request_context(
    context: &Value,
    gateway: &Gateway,
    route_key: &str,
    event_type: &str,
    connection_id: &str,
) -> String {
    assert_eq!(context["routeKey"], route_key, "{context}");
    assert_eq!(context["eventType"], event_type, "{context}");
    assert_eq!(context["connectionId"], connection_id, "{context}");
    // https://{domainName}/{stage} is the tenant's management endpoint on AWS; here,
    // without TLS, it is http://, and managementEndpoint says so.
    assert_eq!(
        context["domainName"],
        gateway.admin.to_string(),
        "{context}"
    );
    assert_eq!(
        context["managementEndpoint"],
        format!("http://{}/t", gateway.admin),
        "{context}"
    );
    assert_eq!(context["stage"], "t", "{context}");
    assert_eq!(context["apiId"], "t", "{context}");
    assert_eq!(context["messageDirection"], "IN", "{context}");
    assert_eq!(context["identity"]["sourceIp"], "127.0.0.1", "{context}");
    assert_aws_id(&context["requestId"]);
    assert_eq!(
        context["extendedRequestId"], context["requestId"],
        "{context}"
    );
    let epoch = context["requestTimeEpoch"]
        .as_u64()
        .unwrap_or_else(|| panic!("requestTimeEpoch is not ms: {context}"));
    let connected = context["connectedAt"]
        .as_u64()
        .unwrap_or_else(|| panic!("connectedAt is not ms: {context}"));
    let now = now_ms();
    assert!(
        connected > now - 60_000 && connected <= epoch && epoch <= now,
        "connectedAt {connected}, requestTimeEpoch {epoch}, now {now}"
    );
    assert_eq!(context["requestTime"], aws_request_time(epoch), "{context}");
    context["requestId"].as_str().unwrap().to_owned()
}

/// Connects with `request`; returns the client and the 101's headers.
async fn connect_with(request: Request) -> (Client, HeaderMap) {
    let (client, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the upgrade timed out")
        .unwrap_or_else(|e| panic!("the upgrade failed: {e}"));
    (client, response.headers().clone())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// A loopback port where nothing listens, for a backend that is down: a socket bound
/// and never listening, kept for the test. Connections to it are refused, and unlike
/// the port of a stopped backend it cannot be taken over meanwhile by another test's
/// backend (bound without `SO_REUSEADDR`, it blocks every other bind to the port).
fn closed_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// The next message, which must be binary.
async fn recv_binary(client: &mut Client) -> Vec<u8> {
    match recv(client).await {
        Message::Binary(bytes) => bytes.to_vec(),
        other => panic!("expected a binary message, got {other:?}"),
    }
}

/// The error frame API Gateway sends after a failed message, byte for byte.
fn error_frame(connection_id: &str, request_id: &str) -> String {
    format!(
        "{{\"message\": \"Internal server error\", \"connectionId\":\"{connection_id}\", \"requestId\":\"{request_id}\"}}"
    )
}

// ----------------------------------------------------------------------------- aws

/// CONNECT, MESSAGE (text and binary) and DISCONNECT, each as API Gateway gives a
/// Lambda: the exact keys, the handshake's headers and query, the ids and times; the
/// Lambda's `body` comes back to the client, base64 as a binary frame.
#[tokio::test]
async fn aws_events_have_the_lambda_proxy_shape_and_results_reach_the_client() {
    let backend = Backend::start(aws_echo).await;
    let gateway = Gateway::start(&aws_config(&backend)).await;

    let mut request = gateway
        .url("/t/int?token=abc&tag=x&tag=y&q=a%20b")
        .into_client_request()
        .unwrap();
    let sent = request.headers_mut();
    sent.insert("user-agent", "e2e-client/1.0".parse().unwrap());
    sent.insert("x-amzn-trace-id", "Root=1-abc".parse().unwrap());
    sent.append("x-multi", "a".parse().unwrap());
    sent.append("x-multi", "b".parse().unwrap());
    let key = sent["sec-websocket-key"].to_str().unwrap().to_owned();
    let (mut client, _) = connect_with(request).await;

    // CONNECT
    let seen = backend.wait_for(1).await;
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].uri, "/aws");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    let connect = json_of(&seen[0]);
    assert_eq!(
        keys(&connect),
        sorted(&[
            "headers",
            "multiValueHeaders",
            "queryStringParameters",
            "multiValueQueryStringParameters",
            "requestContext",
            "isBase64Encoded",
        ]),
        "{connect}"
    );
    let context = &connect["requestContext"];
    let id = context["connectionId"].as_str().unwrap().to_owned();
    assert!(!id.is_empty());
    let connect_request = assert_request_context(context, &gateway, "$connect", "CONNECT", &id);
    assert_eq!(
        keys(context),
        sorted(&[
            "routeKey",
            "eventType",
            "extendedRequestId",
            "requestTime",
            "messageDirection",
            "stage",
            "connectedAt",
            "requestTimeEpoch",
            "identity",
            "requestId",
            "domainName",
            "managementEndpoint",
            "connectionId",
            "apiId",
        ]),
        "no authorizer, no messageId: {context}"
    );
    assert_eq!(
        context["identity"],
        json!({"sourceIp": "127.0.0.1", "userAgent": "e2e-client/1.0"})
    );
    let ws = gateway.ws.to_string();
    // Names in the casing clients send; Connection and Upgrade left out; the last of a
    // repeated header in `headers`, all of them in `multiValueHeaders`.
    assert_eq!(
        connect["headers"],
        json!({
            "Host": ws,
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
            "User-Agent": "e2e-client/1.0",
            "X-Amzn-Trace-Id": "Root=1-abc",
            "X-Multi": "b",
        })
    );
    assert_eq!(
        connect["multiValueHeaders"],
        json!({
            "Host": [ws],
            "Sec-WebSocket-Key": [key],
            "Sec-WebSocket-Version": ["13"],
            "User-Agent": ["e2e-client/1.0"],
            "X-Amzn-Trace-Id": ["Root=1-abc"],
            "X-Multi": ["a", "b"],
        })
    );
    assert_eq!(
        connect["queryStringParameters"],
        json!({"token": "abc", "tag": "y", "q": "a b"})
    );
    assert_eq!(
        connect["multiValueQueryStringParameters"],
        json!({"token": ["abc"], "tag": ["x", "y"], "q": ["a b"]})
    );
    assert_eq!(connect["isBase64Encoded"], false);

    // MESSAGE, text: the Lambda's body is the reply.
    assert_eq!(
        ask(&mut client, r#"{"hello":"world"}"#).await,
        r#"echo: {"hello":"world"}"#
    );
    let seen = backend.wait_for(2).await;
    let message = json_of(&seen[1]);
    assert_eq!(
        keys(&message),
        sorted(&["requestContext", "body", "isBase64Encoded"]),
        "{message}"
    );
    assert_eq!(message["body"], r#"{"hello":"world"}"#);
    assert_eq!(message["isBase64Encoded"], false);
    let context = &message["requestContext"];
    let message_request = assert_request_context(context, &gateway, "$default", "MESSAGE", &id);
    assert_ne!(
        message_request, connect_request,
        "a new request id per event"
    );
    assert_aws_id(&context["messageId"]);
    assert_ne!(context["messageId"], context["requestId"]);
    assert_eq!(
        context["connectedAt"], connect["requestContext"]["connectedAt"],
        "connectedAt is the connection's"
    );
    assert_eq!(
        context["identity"],
        json!({"sourceIp": "127.0.0.1", "userAgent": "e2e-client/1.0"})
    );
    assert_eq!(
        keys(context),
        sorted(&[
            "routeKey",
            "messageId",
            "eventType",
            "extendedRequestId",
            "requestTime",
            "messageDirection",
            "stage",
            "connectedAt",
            "requestTimeEpoch",
            "identity",
            "requestId",
            "domainName",
            "managementEndpoint",
            "connectionId",
            "apiId",
        ]),
        "{context}"
    );

    // MESSAGE, binary: base64 both ways, a binary frame back.
    let bytes = vec![0u8, 1, 2, 0xff, 0xfe];
    client.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(recv_binary(&mut client).await, bytes);
    let seen = backend.wait_for(3).await;
    let binary = json_of(&seen[2]);
    assert_eq!(binary["isBase64Encoded"], true, "{binary}");
    assert_eq!(binary["body"], STANDARD.encode(&bytes));

    // DISCONNECT, after the client closes with a code and a reason.
    client
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .await
        .unwrap();
    let seen = backend.wait_for(4).await;
    let disconnect = json_of(&seen[3]);
    assert_eq!(
        keys(&disconnect),
        sorted(&[
            "headers",
            "multiValueHeaders",
            "requestContext",
            "isBase64Encoded"
        ]),
        "{disconnect}"
    );
    let context = &disconnect["requestContext"];
    assert_request_context(context, &gateway, "$disconnect", "DISCONNECT", &id);
    assert_eq!(context["disconnectStatusCode"], 1000, "{context}");
    assert_eq!(context["disconnectReason"], "done", "{context}");
    assert!(context.get("messageId").is_none(), "{context}");
    assert_eq!(
        context["connectedAt"],
        connect["requestContext"]["connectedAt"]
    );
    let admin = gateway.admin.to_string();
    assert_eq!(
        disconnect["headers"],
        json!({"Host": admin, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""})
    );
    assert_eq!(
        disconnect["multiValueHeaders"],
        json!({"Host": [admin], "x-api-key": [""], "X-Forwarded-For": [""], "x-restapi": [""]})
    );
    assert_eq!(disconnect["isBase64Encoded"], false);
}

/// Without a query the query maps are absent (as with AWS), without a `User-Agent` so
/// is `identity.userAgent`; a close frame without a code is 1005 with API Gateway's
/// wording, a dropped socket 1006.
#[tokio::test]
async fn aws_connect_without_query_and_close_without_code() {
    let backend = Backend::start(aws_echo).await;
    let gateway = Gateway::start(&aws_config(&backend)).await;
    let mut client = gateway.connect("/t/int").await;
    let connect = json_of(&backend.wait_for(1).await[0]);
    assert!(
        connect.get("queryStringParameters").is_none()
            && connect.get("multiValueQueryStringParameters").is_none(),
        "{connect}"
    );
    assert_eq!(
        connect["requestContext"]["identity"],
        json!({"sourceIp": "127.0.0.1"})
    );
    assert!(connect["headers"].get("User-Agent").is_none());
    let id = connect["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();

    client.close(None).await.unwrap();
    let disconnect = json_of(&backend.wait_for(2).await[1]);
    let context = &disconnect["requestContext"];
    assert_request_context(context, &gateway, "$disconnect", "DISCONNECT", &id);
    assert_eq!(context["disconnectStatusCode"], 1005, "{context}");
    assert_eq!(
        context["disconnectReason"], "Client-side close frame status not set",
        "{context}"
    );

    // A socket that just drops is 1006.
    let client = gateway.connect("/t/int").await;
    drop(client);
    let seen = backend.wait_for(4).await;
    let context = &json_of(&seen[3])["requestContext"];
    assert_eq!(context["eventType"], "DISCONNECT", "{context}");
    assert_eq!(context["disconnectStatusCode"], 1006, "{context}");
    assert!(context["disconnectReason"].is_string(), "{context}");
}

/// A MESSAGE result without `body` (or `null`, or an empty body) sends nothing; the
/// next message's reply is the next thing the client receives.
#[tokio::test]
async fn aws_results_without_a_body_send_nothing() {
    let backend = Backend::start(|seen| {
        let event = json_of(seen);
        match event["body"].as_str() {
            Some("none") => lambda(json!({"statusCode": 200})),
            Some("null") => Reply::ok("null"),
            Some("empty") => Reply::ok(""),
            Some("blank") => lambda(json!({"statusCode": 500, "body": ""})),
            Some(other) => lambda(json!({"statusCode": "200", "body": format!("echo: {other}")})),
            None => Reply::ok(""),
        }
    })
    .await;
    let gateway = Gateway::start(&aws_config(&backend)).await;
    let mut client = gateway.connect("/t/int").await;
    for quiet in ["none", "null", "empty", "blank"] {
        send_text(&mut client, quiet).await;
    }
    assert_eq!(ask(&mut client, "last").await, "echo: last");
    assert_eq!(backend.seen().len(), 6);
}

/// `statusCode` ≥ 300 at CONNECT refuses the upgrade with that status, `body`
/// (base64-decoded when flagged) and `headers` (framing headers dropped).
#[tokio::test]
async fn aws_connect_refusal_carries_the_lambda_s_status_body_and_headers() {
    let backend = Backend::start(|seen| {
        let event = json_of(seen);
        match event["queryStringParameters"]["refuse"].as_str() {
            Some("plain") => lambda(json!({
                "statusCode": 403,
                "body": "no",
                "headers": {"X-Why": "test", "Content-Length": "99"},
                "multiValueHeaders": {"X-Why": ["not this"], "X-Multi": ["a", "b"]},
            })),
            Some("base64") => lambda(json!({
                "statusCode": 401,
                "body": STANDARD.encode("nope"),
                "isBase64Encoded": true,
            })),
            Some("string") => lambda(json!({"statusCode": "429", "body": "slow down"})),
            Some("huge") => lambda(json!({"statusCode": 600, "body": "what"})),
            Some("redirect") => lambda(json!({
                "statusCode": 302,
                "body": "moved",
                "headers": {"Location": "/elsewhere"},
            })),
            _ => lambda(json!({"statusCode": 200})),
        }
    })
    .await;
    let gateway = Gateway::start(&aws_config(&backend)).await;

    let (status, headers, body) = refusal(gateway.url("/t/int?refuse=plain")).await;
    assert_eq!((status, body.as_str()), (403, "no"));
    let why: Vec<_> = headers.get_all("x-why").iter().collect();
    assert_eq!(why, ["test"], "`headers` wins over `multiValueHeaders`");
    let multi: Vec<_> = headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(header(&headers, "content-length"), Some("2"));
    let (status, _, body) = refusal(gateway.url("/t/int?refuse=base64")).await;
    assert_eq!((status, body.as_str()), (401, "nope"));
    let (status, _, body) = refusal(gateway.url("/t/int?refuse=string")).await;
    assert_eq!((status, body.as_str()), (429, "slow down"));
    // A status the gateway cannot refuse with (past 599, or a 3xx) is a 500.
    for refuse in ["huge", "redirect"] {
        let (status, headers, body) =
            refusal(gateway.url(&format!("/t/int?refuse={refuse}"))).await;
        assert_eq!(status, 500, "{refuse}: {body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"message": "Internal server error"})
        );
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_eq!(header(&headers, "location"), None);
    }

    // Refused connections get no DISCONNECT: five CONNECTs, then this one's.
    let mut client = gateway.connect("/t/int").await;
    assert_eq!(backend.wait_for(6).await.len(), 6);
    send_text(&mut client, "x").await;
    let seen = backend.wait_for(7).await;
    let kinds: Vec<String> = seen.iter().map(event_type).collect();
    assert_eq!(
        kinds,
        [
            "CONNECT", "CONNECT", "CONNECT", "CONNECT", "CONNECT", "CONNECT", "MESSAGE"
        ]
    );
}

/// The client offers subprotocols, the Lambda picks one with a `Sec-WebSocket-Protocol`
/// header (any case): the 101 carries it. One the client did not offer is a 500.
#[tokio::test]
async fn aws_backend_chooses_the_subprotocol() {
    let backend = Backend::start(|seen| {
        let event = json_of(seen);
        match event["queryStringParameters"]["pick"].as_str() {
            Some(other) => {
                lambda(json!({"statusCode": 200, "headers": {"sec-websocket-protocol": other}}))
            }
            None => {
                lambda(json!({"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "chat.v1"}}))
            }
        }
    })
    .await;
    let gateway = Gateway::start(&aws_config(&backend)).await;
    let mut request = gateway.url("/t/int").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat.v1, json".parse().unwrap());
    let (_client, headers) = connect_with(request).await;
    assert_eq!(header(&headers, "sec-websocket-protocol"), Some("chat.v1"));
    let connect = json_of(&backend.wait_for(1).await[0]);
    assert_eq!(
        connect["headers"]["Sec-WebSocket-Protocol"],
        "chat.v1, json"
    );

    let mut request = gateway
        .url("/t/int?pick=json")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat.v1, json".parse().unwrap());
    let (_other, headers) = connect_with(request).await;
    assert_eq!(header(&headers, "sec-websocket-protocol"), Some("json"));

    let mut request = gateway
        .url("/t/int?pick=mqtt")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
    let (status, _, body) = refusal(request).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "Internal server error"})
    );
}

/// On a route with a selection expression whose keys all name the plugin, the event's
/// `routeKey` is the key that selected it.
#[tokio::test]
async fn aws_route_key_is_the_selected_key() {
    let backend = Backend::start(aws_echo).await;
    let routes = r#"
[tenants.t.routes."/keys"]
selection = "$request.body.action"
keys = { "$connect" = "int", "$disconnect" = "int", "$default" = "int", sendmessage = "int", join = "int" }
"#;
    let config = integration(
        &[backend.origin()],
        &format!("url = {:?}", backend.url("/aws")),
        "",
        routes,
    );
    let gateway = Gateway::start(&config).await;
    let mut client = gateway.connect("/t/keys").await;
    for message in [
        r#"{"action":"sendmessage","data":"hi"}"#,
        r#"{"action":"join"}"#,
        r#"{"action":"unknown"}"#,
        "not json",
    ] {
        assert_eq!(ask(&mut client, message).await, format!("echo: {message}"));
    }
    client.close(None).await.unwrap();
    let seen = backend.wait_for(6).await;
    let route_keys: Vec<Value> = seen
        .iter()
        .map(|s| json_of(s)["requestContext"]["routeKey"].clone())
        .collect();
    assert_eq!(
        route_keys,
        [
            "$connect",
            "sendmessage",
            "join",
            "$default",
            "$default",
            "$disconnect"
        ]
    );
}

// ---------------------------------------------------------------- aws: authorizer

/// An authorizer answering by the query's `token`: `allow`, `deny`, `401`, `lambda401`
/// (Lambda's error object for a thrown "Unauthorized"), `elsewhere` (a policy for
/// another ARN), `broken` (no principalId).
fn authorizer_reply(seen: &Seen) -> Reply {
    let event = json_of(seen);
    let token = event["queryStringParameters"]["token"]
        .as_str()
        .unwrap_or_default();
    let policy = |effect: &str, resource: &str| {
        json!({
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        })
    };
    match token {
        "allow" => lambda(json!({
            "principalId": "user-1",
            "policyDocument": policy("Allow", "arn:aws:execute-api:*:*:t/t/*"),
            "context": {"role": "admin", "level": 3, "beta": true, "nothing": null},
        })),
        "deny" => lambda(json!({
            "principalId": "user-2",
            "policyDocument": policy("Deny", "arn:aws:execute-api:local:000000000000:t/t/$connect"),
        })),
        "elsewhere" => lambda(json!({
            "principalId": "user-3",
            "policyDocument": policy("Allow", "arn:aws:execute-api:*:*:other/t/*"),
        })),
        "broken" => lambda(json!({"policyDocument": policy("Allow", "*")})),
        "object-context" => lambda(json!({
            "principalId": "user-4",
            "policyDocument": policy("Allow", "*"),
            "context": {"nested": {"no": "objects"}},
        })),
        "conditional" => lambda(json!({
            "principalId": "user-5",
            "policyDocument": {"Statement": {
                "Action": "execute-api:*",
                "Effect": "Allow",
                "Resource": "*",
                "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.1/32"}},
            }},
        })),
        "deny-wins" => lambda(json!({
            "principalId": "user-6",
            "policyDocument": {"Statement": [
                {"Action": "*", "Effect": "Allow", "Resource": "*"},
                {"Action": "execute-api:invoke", "Effect": "deny", "Resource": "arn:aws:execute-api:*:*:t/*/$connect"},
            ]},
        })),
        "big" => lambda(json!({
            "principalId": "user-7",
            "policyDocument": policy("Allow", "*"),
            "context": {"blob": "x".repeat(9000)},
        })),
        "plain401" => Reply::ok("Unauthorized"),
        "string401" => lambda(json!("Unauthorized")),
        "lambda401" => Reply::status(
            500,
            r#"{"errorMessage":"Unauthorized","errorType":"Exception"}"#,
        ),
        _ => Reply::status(401, r#"{"message":"Unauthorized"}"#),
    }
}

/// Allow: the authorizer sees the REQUEST event (every header, `methodArn`, the same
/// ids as CONNECT); CONNECT, MESSAGE and DISCONNECT carry `requestContext.authorizer`
/// with the context stringified, `principalId` and `integrationLatency`.
#[tokio::test]
async fn aws_authorizer_allow_puts_its_context_on_every_event() {
    let authorizer = Backend::start(authorizer_reply).await;
    let backend = Backend::start(aws_echo).await;
    let config = integration(
        &[backend.origin(), authorizer.origin()],
        &format!(
            "url = {:?}, authorizer_url = {:?}",
            backend.url("/aws"),
            authorizer.url("/authorize")
        ),
        "",
        ROUTE,
    );
    let gateway = Gateway::start(&config).await;
    let mut client = gateway.connect("/t/int?token=allow").await;

    let auth = &authorizer.wait_for(1).await[0];
    assert_eq!(auth.method, "POST");
    assert_eq!(auth.uri, "/authorize");
    assert_eq!(auth.header("content-type"), Some("application/json"));
    let auth = json_of(auth);
    assert_eq!(
        keys(&auth),
        sorted(&[
            "type",
            "methodArn",
            "headers",
            "multiValueHeaders",
            "queryStringParameters",
            "multiValueQueryStringParameters",
            "stageVariables",
            "requestContext",
        ]),
        "{auth}"
    );
    assert_eq!(auth["type"], "REQUEST");
    assert_eq!(
        auth["methodArn"],
        "arn:aws:execute-api:local:000000000000:t/t/$connect"
    );
    assert_eq!(auth["headers"]["Connection"], "Upgrade", "{auth}");
    assert_eq!(auth["headers"]["Upgrade"], "websocket", "{auth}");
    assert_eq!(auth["multiValueHeaders"]["Upgrade"], json!(["websocket"]));
    assert_eq!(auth["queryStringParameters"], json!({"token": "allow"}));
    assert_eq!(
        auth["multiValueQueryStringParameters"],
        json!({"token": ["allow"]})
    );
    assert_eq!(auth["stageVariables"], json!({}));

    let connect = json_of(&backend.wait_for(1).await[0]);
    let context = &connect["requestContext"];
    let id = context["connectionId"].as_str().unwrap().to_owned();
    assert_request_context(context, &gateway, "$connect", "CONNECT", &id);
    // The authorizer saw the CONNECT event's context (no authorizer in it yet).
    let mut without = context.clone();
    without.as_object_mut().unwrap().remove("authorizer");
    assert_eq!(auth["requestContext"], without);
    assert!(connect["headers"].get("Connection").is_none(), "{connect}");
    let verdict = &context["authorizer"];
    let latency = verdict["integrationLatency"]
        .as_u64()
        .unwrap_or_else(|| panic!("integrationLatency is not ms: {verdict}"));
    assert_eq!(
        *verdict,
        json!({
            "role": "admin",
            "level": "3",
            "beta": "true",
            "nothing": null,
            "principalId": "user-1",
            "integrationLatency": latency,
        })
    );

    assert_eq!(ask(&mut client, "hi").await, "echo: hi");
    let message = json_of(&backend.wait_for(2).await[1]);
    assert_eq!(message["requestContext"]["authorizer"], *verdict);
    client.close(None).await.unwrap();
    let disconnect = json_of(&backend.wait_for(3).await[2]);
    assert_eq!(disconnect["requestContext"]["eventType"], "DISCONNECT");
    assert_eq!(disconnect["requestContext"]["authorizer"], *verdict);
    assert_eq!(
        authorizer.seen().len(),
        1,
        "the authorizer runs at $connect only"
    );
}

/// Deny (or a policy for something else, or an invalid answer) is 403 Forbidden, and
/// "Unauthorized" (HTTP 401, or Lambda's error for a thrown "Unauthorized") is 401. In
/// every case the integration backend sees nothing.
#[tokio::test]
async fn aws_authorizer_refusals_never_reach_the_backend() {
    let authorizer = Backend::start(authorizer_reply).await;
    let backend = Backend::start(aws_echo).await;
    let config = integration(
        &[backend.origin(), authorizer.origin()],
        &format!(
            "url = {:?}, authorizer_url = {:?}",
            backend.url("/aws"),
            authorizer.url("/authorize")
        ),
        "",
        ROUTE,
    );
    let gateway = Gateway::start(&config).await;
    for (token, status, message, kind) in [
        ("deny", 403, "Forbidden", Some("AccessDeniedException")),
        ("elsewhere", 403, "Forbidden", Some("AccessDeniedException")),
        ("broken", 403, "Forbidden", Some("AccessDeniedException")),
        (
            "object-context",
            403,
            "Forbidden",
            Some("AccessDeniedException"),
        ),
        (
            "conditional",
            403,
            "Forbidden",
            Some("AccessDeniedException"),
        ),
        ("deny-wins", 403, "Forbidden", Some("AccessDeniedException")),
        (
            "plain401",
            401,
            "Unauthorized",
            Some("UnauthorizedException"),
        ),
        (
            "string401",
            401,
            "Unauthorized",
            Some("UnauthorizedException"),
        ),
        // A verdict past the 8 KiB context limit cannot be kept.
        ("big", 500, "Internal server error", None),
        ("401", 401, "Unauthorized", Some("UnauthorizedException")),
        (
            "lambda401",
            401,
            "Unauthorized",
            Some("UnauthorizedException"),
        ),
    ] {
        let (got, headers, body) = refusal(gateway.url(&format!("/t/int?token={token}"))).await;
        assert_eq!(got, status, "{token}: {body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"message": message}),
            "{token}"
        );
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_eq!(header(&headers, "x-amzn-errortype"), kind, "{token}");
    }
    // Without a query the authorizer gets empty maps (and says 401).
    let (got, _, _) = refusal(gateway.url("/t/int")).await;
    assert_eq!(got, 401);
    let seen = authorizer.wait_for(12).await;
    let last = json_of(&seen[11]);
    assert_eq!(last["queryStringParameters"], json!({}));
    assert_eq!(last["multiValueQueryStringParameters"], json!({}));

    assert!(
        backend.seen().is_empty(),
        "a refused client reached the integration: {:?}",
        backend.seen()
    );
}

/// An authorizer that cannot be reached refuses with 403, and the integration backend
/// sees nothing.
#[tokio::test]
async fn aws_authorizer_down_is_403() {
    let (_closed, authorizer) = closed_port();
    let backend = Backend::start(aws_echo).await;
    let config = integration(
        &[backend.origin(), format!("http://{authorizer}")],
        &format!(
            "url = {:?}, authorizer_url = \"http://{authorizer}/authorize\"",
            backend.url("/aws")
        ),
        "",
        ROUTE,
    );
    let gateway = Gateway::start(&config).await;
    let (status, _, body) = refusal(gateway.url("/t/int?token=allow")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "Forbidden"})
    );
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());
}

// -------------------------------------------------------------------------- yandex

/// A Yandex integration backend: CONNECT refused on `/refuse`, messages answered by
/// their text (`json`, `text`, `bytes`, `quiet`, `fail`), binary echoed.
fn yandex_reply(seen: &Seen) -> Reply {
    match seen.uri.as_str() {
        "/refuse" => return Reply::status(403, "go away").header("x-why", "yandex"),
        // A redirect to a URL that would accept: the event must not be re-sent there.
        "/redirect" => return Reply::status(302, "moved").header("location", "/yandex"),
        "/redirect-message"
            if seen.header("x-yc-apigateway-websocket-event-type") == Some("MESSAGE") =>
        {
            return Reply::status(307, "moved").header("location", "/yandex");
        }
        _ => {}
    }
    match seen.header("x-yc-apigateway-websocket-event-type") {
        Some("MESSAGE") => {}
        // Yandex passes the offer on; the backend picks the first.
        Some("CONNECT") if seen.header("sec-websocket-protocol").is_some() => {
            let offer = seen.header("sec-websocket-protocol").unwrap();
            let first = offer.split(',').next().unwrap().trim();
            return Reply::ok("").header("sec-websocket-protocol", first);
        }
        _ => return Reply::ok(""),
    }
    if seen.header("content-type") == Some("application/octet-stream") {
        return typed("application/octet-stream", seen.body.clone());
    }
    match seen.text().as_str() {
        "json" => typed("application/json; charset=utf-8", r#"{"a":1}"#),
        "text" => typed("text/plain", "plain text"),
        "bytes" => typed("application/octet-stream", "binary text"),
        "untyped" => Reply {
            chunked: true,
            ..Reply::ok("no type")
        },
        "quiet" => typed("text/plain", ""),
        "fail" => Reply::status(500, "boom"),
        other => typed("text/plain; charset=utf-8", format!("echo: {other}")),
    }
}

fn yandex_config(backend: &Backend) -> String {
    let mut routes = String::from(ROUTE);
    for name in ["refuse", "redirect", "redirect-message"] {
        routes.push_str(&plugin(
            "t",
            name,
            plugins::INTEGRATION,
            &format!(
                "allowed_outbound_hosts = [{:?}]\nconfig = {{ url = {:?}, shape = \"yandex\" }}",
                backend.origin(),
                backend.url(&format!("/{name}"))
            ),
        ));
        routes.push_str(&format!(
            "[tenants.t.routes.\"/{name}\"]\nplugin = \"{name}\"\n"
        ));
    }
    integration(
        &[backend.origin()],
        &format!(
            "url = {:?}, shape = \"yandex\", forward_headers = \"x-tenant-user, host\"",
            backend.url("/yandex")
        ),
        "",
        &routes,
    )
}

/// The `X-Yc-Apigateway-Websocket-*` headers of each event, the frame as the body
/// (JSON or octet-stream), and the answer's `Content-Type` choosing text or binary.
#[tokio::test]
async fn yandex_events_carry_the_headers_and_answers_choose_the_frame_type() {
    let backend = Backend::start(yandex_reply).await;
    let gateway = Gateway::start(&yandex_config(&backend)).await;
    let mut request = gateway.url("/t/int").into_client_request().unwrap();
    let sent = request.headers_mut();
    sent.insert("user-agent", "e2e-client/1.0".parse().unwrap());
    sent.insert("x-tenant-user", "alice".parse().unwrap());
    sent.insert("x-other", "not forwarded".parse().unwrap());
    sent.insert("sec-websocket-protocol", "chat.v1, json".parse().unwrap());
    let (mut client, headers) = connect_with(request).await;
    // The backend's `Sec-WebSocket-Protocol` answer header chose it.
    assert_eq!(header(&headers, "sec-websocket-protocol"), Some("chat.v1"));

    let seen = backend.wait_for(1).await;
    let connect = &seen[0];
    assert_eq!(connect.method, "POST");
    assert_eq!(connect.uri, "/yandex");
    assert!(connect.body.is_empty());
    assert_eq!(
        connect.header("x-yc-apigateway-websocket-event-type"),
        Some("CONNECT")
    );
    assert_eq!(
        connect.header("sec-websocket-protocol"),
        Some("chat.v1, json")
    );
    assert_eq!(connect.header("user-agent"), Some("e2e-client/1.0"));
    assert_eq!(connect.header("x-tenant-user"), Some("alice"));
    assert_eq!(connect.header("x-other"), None);
    assert_eq!(
        connect.header("host"),
        Some(backend.addr.to_string().as_str()),
        "`host` is never forwarded"
    );
    assert_eq!(connect.header("x-yc-apigateway-websocket-message-id"), None);
    assert_eq!(connect.header("content-type"), None, "no body, no type");
    let id = connect
        .header("x-yc-apigateway-websocket-connection-id")
        .unwrap()
        .to_owned();
    assert!(!id.is_empty());
    let connected_at: u64 = connect
        .header("x-yc-apigateway-websocket-connected-at")
        .unwrap()
        .parse()
        .unwrap();
    assert!(connected_at <= now_ms() && connected_at > now_ms() - 60_000);

    // Text frame in: JSON content type, the frame as the body.
    assert_eq!(ask(&mut client, "hello").await, "echo: hello");
    let seen = backend.wait_for(2).await;
    let message = &seen[1];
    assert_eq!(message.uri, "/yandex");
    assert_eq!(message.text(), "hello");
    assert_eq!(message.header("content-type"), Some("application/json"));
    assert_eq!(
        message.header("x-yc-apigateway-websocket-event-type"),
        Some("MESSAGE")
    );
    assert_eq!(
        message.header("x-yc-apigateway-websocket-connection-id"),
        Some(id.as_str())
    );
    assert_eq!(
        message.header("x-yc-apigateway-websocket-connected-at"),
        Some(connected_at.to_string().as_str())
    );
    assert_eq!(message.header("user-agent"), Some("e2e-client/1.0"));
    assert_eq!(message.header("x-tenant-user"), Some("alice"));
    assert_eq!(message.header("sec-websocket-protocol"), None);
    let first_id = message
        .header("x-yc-apigateway-websocket-message-id")
        .unwrap()
        .to_owned();
    assert_eq!(first_id.len(), 26, "{first_id}");
    assert!(
        first_id
            .bytes()
            .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)),
        "{first_id}"
    );

    // Binary in: octet-stream, the bytes as they are; back as binary.
    let bytes = vec![0u8, 159, 146, 150, 255];
    client.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(recv_binary(&mut client).await, bytes);
    let seen = backend.wait_for(3).await;
    assert_eq!(
        seen[2].header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(seen[2].body, bytes);
    let second_id = seen[2]
        .header("x-yc-apigateway-websocket-message-id")
        .unwrap()
        .to_owned();
    assert_ne!(second_id, first_id);
    assert!(
        second_id[..10] >= first_id[..10],
        "message ids sort by time: {first_id} then {second_id}"
    );

    // The answer's Content-Type says text or binary.
    assert_eq!(ask(&mut client, "json").await, r#"{"a":1}"#);
    assert_eq!(ask(&mut client, "text").await, "plain text");
    send_text(&mut client, "bytes").await;
    assert_eq!(recv_binary(&mut client).await, b"binary text");
    send_text(&mut client, "untyped").await;
    assert_eq!(recv_binary(&mut client).await, b"no type");
    // An empty answer sends nothing; a non-2xx one is the error frame.
    send_text(&mut client, "quiet").await;
    send_text(&mut client, "fail").await;
    let failed = recv_text(&mut client).await;
    let seen = backend.wait_for(9).await;
    assert_eq!(seen[8].text(), "fail");
    let fail_id = seen[8]
        .header("x-yc-apigateway-websocket-message-id")
        .unwrap();
    assert_eq!(
        failed,
        error_frame(&id, fail_id),
        "the message id is the request id"
    );
    assert_eq!(ask(&mut client, "still").await, "echo: still");

    // DISCONNECT: code and reason, no body.
    client
        .close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "off\nnow".into(),
        }))
        .await
        .unwrap();
    let seen = backend.wait_for(11).await;
    let disconnect = &seen[10];
    assert_eq!(
        disconnect.header("x-yc-apigateway-websocket-event-type"),
        Some("DISCONNECT")
    );
    assert_eq!(
        disconnect.header("x-yc-apigateway-websocket-connection-id"),
        Some(id.as_str())
    );
    assert_eq!(
        disconnect.header("x-yc-apigateway-websocket-connected-at"),
        Some(connected_at.to_string().as_str())
    );
    assert_eq!(
        disconnect.header("x-yc-apigateway-websocket-disconnect-status-code"),
        Some("1001")
    );
    assert_eq!(
        disconnect.header("x-yc-apigateway-websocket-disconnect-reason"),
        Some("off now")
    );
    assert!(disconnect.body.is_empty());
    assert_eq!(disconnect.header("content-type"), None);
    assert_eq!(
        disconnect.header("x-yc-apigateway-websocket-message-id"),
        None
    );
}

/// A CONNECT answered with a status ≥ 300 refuses the upgrade with it; a 3xx is a
/// 500 (and is not followed: the event is not re-sent elsewhere). A 3xx answer to a
/// MESSAGE is a failure like any non-2xx.
#[tokio::test]
async fn yandex_connect_refusal_and_redirects() {
    let backend = Backend::start(yandex_reply).await;
    let gateway = Gateway::start(&yandex_config(&backend)).await;
    let (status, headers, body) = refusal(gateway.url("/t/refuse")).await;
    assert_eq!((status, body.as_str()), (403, "go away"));
    assert_eq!(header(&headers, "x-why"), Some("yandex"));
    let seen = backend.wait_for(1).await;
    assert_eq!(
        seen[0].header("x-yc-apigateway-websocket-event-type"),
        Some("CONNECT")
    );

    let (status, _, body) = refusal(gateway.url("/t/redirect")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "Internal server error"})
    );
    let paths: Vec<String> = backend.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(paths, ["/refuse", "/redirect"], "the redirect was followed");

    let mut client = gateway.connect("/t/redirect-message").await;
    send_text(&mut client, "hi").await;
    let failed = recv_json(&mut client).await;
    assert_eq!(failed["message"], "Internal server error", "{failed}");
    let paths: Vec<String> = backend.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        paths,
        [
            "/refuse",
            "/redirect",
            "/redirect-message",
            "/redirect-message"
        ],
        "the redirect was followed"
    );
}

// ---------------------------------------------------------------------------- west

fn west_reply(seen: &Seen) -> Reply {
    let info = json_of(seen);
    let reply = match (info["type"].as_str(), info["message"].as_str()) {
        (Some("open"), _) if info["parameters"]["close"] == "1" => {
            json!({"close": {"code": 4001, "reason": "not today"}})
        }
        (Some("open"), _) if info["parameters"]["redirect"] == "1" => {
            return Reply::status(307, "elsewhere").header("location", "/west");
        }
        (Some("open"), _) if info["parameters"]["refuse"] == "1" => {
            return Reply::status(404, "no such room").header("x-why", "west");
        }
        (Some("open"), _) => json!({}),
        (Some("data"), _) if info["message_type"] == "data-binary" => {
            json!({"send": [{"type": "binary", "data": info["message"]}]})
        }
        (Some("data"), Some("many")) => json!({"send": [
            {"type": "text", "data": "one"},
            {"type": "binary", "data": "AAEC"},
            {"data": {"as": "json"}},
            {"type": "data-text", "data": "four"},
        ]}),
        (Some("data"), Some("bye")) => {
            json!({"send": [{"data": "last"}], "close": {"code": 4000, "reason": "bye"}})
        }
        (Some("data"), Some("garbage")) => return Reply::ok("not json"),
        (Some("data"), Some("reserved")) => json!({"close": {"code": 1006, "reason": "odd"}}),
        (Some("data"), Some("long")) => {
            json!({"close": {"code": 4002, "reason": "é".repeat(200)}})
        }
        (Some("data"), Some("close-true")) => json!({"close": true}),
        (Some("data"), Some("fail")) => return Reply::status(500, "boom"),
        (Some("data"), Some(text)) => json!({"send": [{"data": format!("echo: {text}")}]}),
        _ => return Reply::ok(""),
    };
    Reply::ok(reply.to_string()).header("content-type", "application/json")
}

fn west_config(backend: &Backend) -> String {
    integration(
        &[backend.origin()],
        &format!("url = {:?}, shape = \"west\"", backend.url("/west")),
        "",
        "[tenants.t.routes.\"/west/{room}\"]\nplugin = \"int\"\n",
    )
}

/// `websocketInfo` for open, data (text and binary) and close; `send` items arrive in
/// order, `close` closes with the backend's code and reason after them.
#[tokio::test]
async fn west_websocket_info_and_answers() {
    let backend = Backend::start(west_reply).await;
    let gateway = Gateway::start(&west_config(&backend)).await;
    let mut request = gateway
        .url("/t/west/room1?lang=en&room=query")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .append("x-multi", "a".parse().unwrap());
    request
        .headers_mut()
        .append("x-multi", "b".parse().unwrap());
    let key = request.headers()["sec-websocket-key"]
        .to_str()
        .unwrap()
        .to_owned();
    let (mut client, _) = connect_with(request).await;

    let open = &backend.wait_for(1).await[0];
    assert_eq!(open.method, "POST");
    assert_eq!(open.uri, "/west");
    assert_eq!(open.header("content-type"), Some("application/json"));
    let open = json_of(open);
    assert_eq!(
        keys(&open),
        sorted(&[
            "uri",
            "type",
            "route",
            "headers",
            "socket_id",
            "timestamp",
            "parameters"
        ]),
        "{open}"
    );
    let ws = gateway.ws.to_string();
    assert_eq!(open["type"], "open");
    assert_eq!(
        open["uri"],
        format!("ws://{ws}/t/west/room1?lang=en&room=query")
    );
    assert_eq!(open["route"], "/west/{room}");
    // A path parameter wins a clash with the query.
    assert_eq!(open["parameters"], json!({"room": "room1", "lang": "en"}));
    let headers = &open["headers"];
    assert_eq!(headers["host"], ws, "{headers}");
    assert_eq!(headers["sec-websocket-key"], key, "{headers}");
    assert_eq!(headers["sec-websocket-version"], "13", "{headers}");
    assert_eq!(headers["x-multi"], "a, b", "{headers}");
    assert!(
        keys(headers).iter().all(|k| *k == k.to_ascii_lowercase()),
        "{headers}"
    );
    let id = open["socket_id"].as_str().unwrap().to_owned();
    assert!(!id.is_empty());
    let stamp = open["timestamp"].as_u64().unwrap();
    assert!(stamp <= now_ms() && stamp > now_ms() - 60_000);

    // data, text: one send item is the reply.
    assert_eq!(ask(&mut client, "hi").await, "echo: hi");
    let data = json_of(&backend.wait_for(2).await[1]);
    assert_eq!(
        keys(&data),
        sorted(&[
            "uri",
            "type",
            "route",
            "headers",
            "socket_id",
            "timestamp",
            "parameters",
            "message",
            "message_type"
        ]),
        "{data}"
    );
    assert_eq!(data["type"], "data");
    assert_eq!(data["socket_id"], id);
    assert_eq!(data["message"], "hi");
    assert_eq!(data["message_type"], "data-text");
    assert_eq!(data["uri"], open["uri"]);
    assert_eq!(data["parameters"], open["parameters"]);

    // data, binary: base64 both ways.
    let bytes = vec![0u8, 1, 2, 250];
    client.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(recv_binary(&mut client).await, bytes);
    let data = json_of(&backend.wait_for(3).await[2]);
    assert_eq!(data["message_type"], "data-binary");
    assert_eq!(data["message"], STANDARD.encode(&bytes));

    // Several send items: in order, each with its type.
    send_text(&mut client, "many").await;
    assert_eq!(recv_text(&mut client).await, "one");
    assert_eq!(recv_binary(&mut client).await, [0u8, 1, 2]);
    assert_eq!(
        serde_json::from_str::<Value>(&recv_text(&mut client).await).unwrap(),
        json!({"as": "json"})
    );
    assert_eq!(recv_text(&mut client).await, "four");

    // An answer that is not the JSON West's script would produce: the error frame.
    send_text(&mut client, "garbage").await;
    let failed = recv_json(&mut client).await;
    assert_eq!(failed["message"], "Internal server error", "{failed}");
    assert_eq!(failed["connectionId"], id);
    assert_eq!(ask(&mut client, "again").await, "echo: again");

    // send, then close with the backend's code and reason.
    send_text(&mut client, "bye").await;
    assert_eq!(recv_text(&mut client).await, "last");
    let close = expect_close(&mut client).await;
    assert_eq!(u16::from(close.code), 4000);
    assert_eq!(close.reason.as_str(), "bye");

    let seen = backend.wait_for(8).await;
    let close = json_of(&seen[7]);
    assert_eq!(close["type"], "close", "{close}");
    assert_eq!(close["socket_id"], id);
    assert!(
        close.get("message").is_none() && close.get("message_type").is_none(),
        "{close}"
    );
}

/// A `close` in the answer to `open` refuses the upgrade with 403 and the reason, a
/// status ≥ 400 refuses with it, a 3xx is a 500; the admin listener answers West's
/// solution health check.
#[tokio::test]
async fn west_close_on_open_refuses_and_the_health_check_answers() {
    let backend = Backend::start(west_reply).await;
    let gateway = Gateway::start(&west_config(&backend)).await;
    let (status, _, body) = refusal(gateway.url("/t/west/r?close=1")).await;
    assert_eq!((status, body.as_str()), (403, "not today"));
    // A status ≥ 300 refuses with it; a 3xx (not followed) is a 500.
    let (status, headers, body) = refusal(gateway.url("/t/west/r?refuse=1")).await;
    assert_eq!((status, body.as_str()), (404, "no such room"));
    assert_eq!(header(&headers, "x-why"), Some("west"));
    let (status, _, body) = refusal(gateway.url("/t/west/r?redirect=1")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(backend.seen().len(), 3, "the redirect was followed");

    let (status, _, body) = http(
        "GET",
        &format!("http://{}/api/v1/solution/health", gateway.admin),
        &[],
        vec![],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
}

/// `close` codes the protocol reserves become 1000, reasons are cut to 123 bytes at a
/// character boundary, `"close": true` is 1000; a non-2xx `data` answer is the error
/// frame; `wss://` in `uri` when a proxy says it terminated TLS.
#[tokio::test]
async fn west_close_codes_reasons_and_forwarded_tls() {
    let backend = Backend::start(west_reply).await;
    let gateway = Gateway::start(&west_config(&backend)).await;
    let mut request = gateway.url("/t/west/r").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-proto", "https".parse().unwrap());
    let (mut client, _) = connect_with(request).await;
    let open = json_of(&backend.wait_for(1).await[0]);
    assert_eq!(open["uri"], format!("wss://{}/t/west/r", gateway.ws));
    assert_eq!(open["parameters"], json!({"room": "r"}));

    send_text(&mut client, "fail").await;
    let failed = recv_json(&mut client).await;
    assert_eq!(failed["message"], "Internal server error", "{failed}");
    assert_eq!(failed["connectionId"], open["socket_id"]);
    assert_aws_id(&failed["requestId"]);

    send_text(&mut client, "reserved").await;
    let close = expect_close(&mut client).await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1000, "odd")
    );

    let mut client = gateway.connect("/t/west/r").await;
    send_text(&mut client, "long").await;
    let close = expect_close(&mut client).await;
    assert_eq!(u16::from(close.code), 4002);
    assert_eq!(close.reason.as_str(), "é".repeat(61));

    let mut client = gateway.connect("/t/west/r").await;
    send_text(&mut client, "close-true").await;
    let close = expect_close(&mut client).await;
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1000, ""));
}

// ------------------------------------------------------------------------ failures

/// A backend that is down: `$connect` is 502 `{"message":"Bad Gateway"}`, in every
/// shape.
#[tokio::test]
async fn backend_down_at_connect_is_502() {
    let (_closed, gone) = closed_port();
    let origin = format!("http://{gone}");
    let mut routes = String::from(ROUTE);
    for shape in ["yandex", "west"] {
        routes.push_str(&plugin(
            "t",
            shape,
            plugins::INTEGRATION,
            &format!(
                "allowed_outbound_hosts = [{origin:?}]\nconfig = {{ url = \"{origin}/{shape}\", shape = \"{shape}\" }}"
            ),
        ));
        routes.push_str(&format!(
            "[tenants.t.routes.\"/{shape}\"]\nplugin = \"{shape}\"\n"
        ));
    }
    let config = integration(
        std::slice::from_ref(&origin),
        &format!("url = \"{origin}/aws\""),
        "",
        &routes,
    );
    let gateway = Gateway::start(&config).await;
    for path in ["/t/int", "/t/yandex", "/t/west"] {
        let (status, headers, body) = refusal(gateway.url(path)).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"message": "Bad Gateway"}),
            "{path}"
        );
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
    }
}

/// Garbage, an error status and a hang past `outbound_timeout` each fail only their
/// message: the client gets API Gateway's error frame naming the event's request id,
/// the connection stays open, and the log says what failed.
#[tokio::test]
async fn failed_messages_get_the_error_frame_and_the_connection_stays_open() {
    let backend = Backend::start(|seen| {
        let event = json_of(seen);
        match event["queryStringParameters"]["fail"].as_str() {
            Some("hang") => {
                return Reply {
                    hold: true,
                    ..Reply::ok("never")
                };
            }
            Some("status") => return Reply::status(500, "connect exploded"),
            Some("garbage") => return Reply::ok("{{{"),
            _ => {}
        }
        match event["body"].as_str() {
            Some("garbage") => Reply::ok("<html>oops</html>"),
            Some("status") => Reply::status(502, "upstream exploded"),
            Some("not-a-result") => lambda(json!([1, 2, 3])),
            Some("badb64") => lambda(json!({"body": "*not base64*", "isBase64Encoded": true})),
            Some("hang") => Reply {
                hold: true,
                ..Reply::ok("never")
            },
            _ => aws_echo(seen),
        }
    })
    .await;
    let config = integration(
        &[backend.origin()],
        &format!("url = {:?}", backend.url("/aws")),
        "limits = { outbound_timeout = \"1s\" }",
        ROUTE,
    );
    let gateway = Gateway::start_binary(&config).await;
    let mut client = gateway.connect("/t/int").await;
    let id = json_of(&backend.wait_for(1).await[0])["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = backend.url("/aws");

    let mut count = 1;
    for (body, what) in [
        ("garbage", "unusable answer: the answer is not JSON"),
        ("status", "unusable answer: the backend answered HTTP 502"),
        (
            "not-a-result",
            "unusable answer: the answer is JSON but not",
        ),
        ("badb64", "unusable answer: `body` is not valid base64"),
        ("hang", "no answer"),
    ] {
        let started = std::time::Instant::now();
        send_text(&mut client, body).await;
        let failed = recv_text(&mut client).await;
        count += 1;
        let seen = backend.wait_for(count).await;
        let event = json_of(&seen[count - 1]);
        assert_eq!(event["body"], body);
        let request_id = event["requestContext"]["requestId"].as_str().unwrap();
        assert_eq!(failed, error_frame(&id, request_id), "{body}");
        if body == "hang" {
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
                "cut at the 1 s outbound_timeout, not after {waited:?}"
            );
        }
        let line = gateway
            .logs
            .wait_for(&format!("about the {body} failure"), |l| {
                l.contains(&format!("(request {request_id})"))
            })
            .await;
        for part in [
            "WARN",
            "tenant=t",
            "plugin=int",
            "integration (aws) MESSAGE",
            &format!("connection {id}"),
            &format!("POST {url}"),
            what,
        ] {
            assert!(line.contains(part), "{part:?} missing from: {line}");
        }
        // The connection is still open and the next message works.
        assert_eq!(ask(&mut client, "after").await, "echo: after");
        count += 1;
    }

    // At $connect: no answer within the timeout is 502, an error status or garbage 500.
    for (fail, status, message, what) in [
        ("hang", 502, "Bad Gateway", "no answer"),
        (
            "status",
            500,
            "Internal server error",
            "unusable answer: the backend answered HTTP 500",
        ),
        (
            "garbage",
            500,
            "Internal server error",
            "unusable answer: the answer is not JSON",
        ),
    ] {
        let (got, _, body) = refusal(gateway.url(&format!("/t/int?fail={fail}"))).await;
        assert_eq!(got, status, "{fail}: {body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"message": message})
        );
        count += 1;
        let seen = backend.wait_for(count).await;
        let event = json_of(&seen[count - 1]);
        assert_eq!(event["queryStringParameters"]["fail"], fail);
        let request_id = event["requestContext"]["requestId"].as_str().unwrap();
        let line = gateway
            .logs
            .wait_for(&format!("about the {fail} $connect"), |l| {
                l.contains(&format!("(request {request_id})"))
            })
            .await;
        for part in [
            "WARN",
            "integration (aws) $connect",
            &format!("POST {url}"),
            what,
        ] {
            assert!(line.contains(part), "{part:?} missing from: {line}");
        }
    }
    backend.release(2);
}

/// A broken config (no `url`, an unknown `shape`, `authorizer_url` with another shape)
/// refuses every `$connect` with 500 and answers messages with the error frame, logging
/// an error that names the key; a `url` outside the grant is a 500 too. The backend
/// sees nothing.
#[tokio::test]
async fn broken_config_is_500_and_logged_with_the_key() {
    let backend = Backend::start(aws_echo).await;
    let origin = backend.origin();
    let mut tenants = String::new();
    for (name, config) in [
        ("no-url", "shape = \"aws\"".to_owned()),
        (
            "azure",
            format!("url = \"{origin}/aws\", shape = \"azure\""),
        ),
        (
            "yandex-auth",
            format!(
                "url = \"{origin}/yandex\", shape = \"yandex\", authorizer_url = \"{origin}/auth\""
            ),
        ),
        ("ungranted", "url = \"http://127.0.0.1:1/aws\"".to_owned()),
    ] {
        tenants.push_str(&plugin(
            "t",
            name,
            plugins::INTEGRATION,
            &format!("allowed_outbound_hosts = [{origin:?}]\nconfig = {{ {config} }}"),
        ));
        tenants.push_str(&format!(
            "[tenants.t.routes.\"/{name}\"]\nplugin = \"{name}\"\n"
        ));
    }
    // No `$connect` plugin: the client gets in, and its message meets the broken config.
    tenants.push_str("[tenants.t.routes.\"/messages\"]\nkeys = { \"$default\" = \"azure\" }\n");
    let gateway = Gateway::start_binary(&harness::config(&tenants)).await;

    for (path, log) in [
        (
            "/t/no-url",
            "config key `url` (the backend URL) is missing (event $connect)",
        ),
        (
            "/t/azure",
            r#"config key `shape` is "azure"; expected "aws", "yandex" or "west" (event $connect)"#,
        ),
        (
            "/t/yandex-auth",
            r#"config key `authorizer_url` works with shape "aws" only, not "yandex""#,
        ),
        (
            "/t/ungranted",
            "POST http://127.0.0.1:1/aws: unusable answer",
        ),
    ] {
        let (status, headers, body) = refusal(gateway.url(path)).await;
        assert_eq!(status, 500, "{path}: {body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"message": "Internal server error"})
        );
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        let line = gateway
            .logs
            .wait_for(&format!("about {path}"), |l| l.contains(log))
            .await;
        assert!(
            line.contains("integration plugin") || path == "/t/ungranted",
            "{line}"
        );
        assert!(
            line.contains(if path == "/t/ungranted" {
                "WARN"
            } else {
                "ERROR"
            }),
            "{line}"
        );
    }

    let mut client = gateway.connect("/t/messages").await;
    send_text(&mut client, "hi").await;
    let failed = recv_json(&mut client).await;
    assert_eq!(failed["message"], "Internal server error", "{failed}");
    assert_aws_id(&failed["requestId"]);
    let id = failed["connectionId"].as_str().unwrap().to_owned();
    let line = gateway
        .logs
        .wait_for("about the message", |l| {
            l.contains("config key `shape`") && l.contains("(event message)")
        })
        .await;
    assert!(line.contains(&id), "the line names the connection: {line}");
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());
}

// ------------------------------------------------------------------------ ordering

/// Three messages sent at once to a backend that answers the first slowly: the
/// backend sees them one after the other and the replies arrive in order.
#[tokio::test]
async fn replies_keep_the_order_of_the_messages() {
    let backend = Backend::start(|seen| {
        let event = json_of(seen);
        let reply = aws_echo(seen);
        if event["body"] == "m1" {
            Reply {
                delay: Duration::from_millis(500),
                ..reply
            }
        } else {
            reply
        }
    })
    .await;
    let gateway = Gateway::start(&aws_config(&backend)).await;
    let mut client = gateway.connect("/t/int").await;
    for message in ["m1", "m2", "m3"] {
        send_text(&mut client, message).await;
    }
    for message in ["m1", "m2", "m3"] {
        assert_eq!(recv_text(&mut client).await, format!("echo: {message}"));
    }
    let bodies: Vec<Value> = backend.seen()[1..]
        .iter()
        .map(|s| json_of(s)["body"].clone())
        .collect();
    assert_eq!(bodies, ["m1", "m2", "m3"]);
}
