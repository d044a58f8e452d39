//! The management API with bearer keys: AWS `@connections` routes, wsgate's extensions,
//! the Yandex connection REST API, and every error in the caller's API's shape.

use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{
    Gateway, HttpAnswer, ask, expect_close, http, own_id, recv, recv_json, recv_text,
};
use crate::standard_config;

struct Api {
    base: String,
}

impl Api {
    fn new(gateway: &Gateway) -> Self {
        Self {
            base: format!("http://{}", gateway.admin),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Vec<u8>,
    ) -> HttpAnswer {
        let auth: Vec<_> = key
            .map(|k| ("authorization".to_owned(), format!("Bearer {k}")))
            .into_iter()
            .collect();
        http(
            method.as_str(),
            &format!("{}{path}", self.base),
            &auth,
            body,
        )
        .await
    }

    async fn demo(
        &self,
        method: reqwest::Method,
        path: &str,
        body: impl Into<Vec<u8>>,
    ) -> HttpAnswer {
        self.call(method, path, Some("demo-key"), body.into()).await
    }
}

use reqwest::Method as M;

/// POST delivers text (valid UTF-8) or binary; `?type=` forces either; `@` may be `%40`.
#[tokio::test]
async fn post_delivers_text_and_binary() {
    let gateway = Gateway::start(&standard_config()).await;
    let api = Api::new(&gateway);
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;

    assert_eq!(
        api.demo(M::POST, &format!("/demo/@connections/{id}"), "hello world")
            .await
            .0,
        200
    );
    assert_eq!(recv_text(&mut client).await, "hello world");
    assert_eq!(
        api.demo(
            M::POST,
            &format!("/demo/%40connections/{id}"),
            vec![0xffu8, 0]
        )
        .await
        .0,
        200
    );
    assert_eq!(recv(&mut client).await, Message::binary(vec![0xffu8, 0]));
    assert_eq!(
        api.demo(
            M::POST,
            &format!("/demo/@connections/{id}?type=binary"),
            "abc"
        )
        .await
        .0,
        200
    );
    assert_eq!(recv(&mut client).await, Message::binary(b"abc".to_vec()));
    let (status, kind, _) = api
        .demo(
            M::POST,
            &format!("/demo/@connections/{id}?type=text"),
            vec![0xffu8],
        )
        .await;
    assert_eq!(
        (status, kind.as_deref()),
        (400, Some("BadRequestException"))
    );
    let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
    assert_eq!(
        api.demo(
            M::POST,
            &format!("/demo/%40connections/{encoded}"),
            "encoded"
        )
        .await
        .0,
        200
    );
    assert_eq!(recv_text(&mut client).await, "encoded");
    // Exactly the maximum passes; one byte more is 413.
    let max = vec![b'a'; 131072];
    assert_eq!(
        api.demo(M::POST, &format!("/demo/@connections/{id}"), max)
            .await
            .0,
        200
    );
    assert_eq!(recv_text(&mut client).await.len(), 131072);
    let (status, kind, body) = api
        .demo(
            M::POST,
            &format!("/demo/@connections/{id}"),
            vec![b'a'; 131073],
        )
        .await;
    assert_eq!(
        (status, kind.as_deref()),
        (413, Some("PayloadTooLargeException")),
        "{body}"
    );
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("131072")
    );
}

/// GET answers AWS's fields plus wsgate's; lastActiveAt moves when the client sends.
#[tokio::test]
async fn get_describes_the_connection() {
    let gateway = Gateway::start(&standard_config()).await;
    let api = Api::new(&gateway);
    let mut client = gateway.connect("/demo/probe/lobby?q=1").await;
    let id = ask(&mut client, "list path=/probe/lobby").await;

    let (status, _, body) = api
        .demo(M::GET, &format!("/demo/@connections/{id}"), "")
        .await;
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1");
    assert!(info["identity"]["userAgent"].is_string());
    assert_eq!(info["connectionId"], id.as_str());
    assert_eq!(info["route"], "/probe/{room}");
    assert_eq!(info["pathParameters"]["room"], "lobby");
    assert_eq!(info["queryParameters"]["q"], "1");
    assert_eq!(info["uri"], "/demo/probe/lobby?q=1");
    let connected = info["connectedAt"].as_str().unwrap().to_owned();
    assert!(
        connected.ends_with('Z') && connected.contains('T'),
        "{connected}"
    );
    humantime::parse_rfc3339(&connected).unwrap();

    // The client keeps talking until a millisecond has passed: lastActiveAt follows.
    let before = info["lastActiveAt"].as_str().unwrap().to_owned();
    let mut after = before.clone();
    for _ in 0..10_000 {
        ask(&mut client, "key").await;
        let (_, _, body) = api
            .demo(M::GET, &format!("/demo/@connections/{id}"), "")
            .await;
        after = serde_json::from_str::<Value>(&body).unwrap()["lastActiveAt"]
            .as_str()
            .unwrap()
            .to_owned();
        if after != before {
            break;
        }
    }
    assert!(
        after > before,
        "lastActiveAt did not move: {before} -> {after}"
    );
}

/// DELETE closes with 1000 (or the asked application code), runs $disconnect, then the
/// id is gone.
#[tokio::test]
async fn delete_closes_and_runs_disconnect() {
    let gateway = Gateway::start(&standard_config()).await;
    let api = Api::new(&gateway);
    let mut a = gateway.connect("/demo/chat/room").await;
    let mut b = gateway.connect("/demo/chat/room").await;
    let b_id = recv_json(&mut a).await["connection"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, _, body) = api
        .demo(M::DELETE, &format!("/demo/@connections/{b_id}"), "")
        .await;
    assert_eq!((status, body.as_str()), (204, ""));
    let frame = expect_close(&mut b).await;
    assert_eq!(u16::from(frame.code), 1000);
    let leave = recv_json(&mut a).await;
    assert_eq!(
        (leave["event"].as_str(), leave["connection"].as_str()),
        (Some("leave"), Some(b_id.as_str()))
    );
    let (status, kind, _) = api
        .demo(M::DELETE, &format!("/demo/@connections/{b_id}"), "")
        .await;
    assert_eq!((status, kind.as_deref()), (410, Some("GoneException")));

    let (status, kind, _) = api
        .demo(
            M::DELETE,
            &format!("/demo/@connections/{b_id}?code=1001"),
            "",
        )
        .await;
    assert_eq!(
        (status, kind.as_deref()),
        (400, Some("BadRequestException"))
    );
    let mut c = gateway.connect("/demo/connections").await;
    let c_id = own_id(&mut c).await;
    assert_eq!(
        api.demo(
            M::DELETE,
            &format!("/demo/@connections/{c_id}?code=4000&reason=go%20away"),
            ""
        )
        .await
        .0,
        204
    );
    let frame = expect_close(&mut c).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4000, "go away")
    );
}

/// Every error AWS defines, with its status, `x-amzn-ErrorType` and a message.
#[tokio::test]
async fn errors_are_shaped_as_aws_sends_them() {
    let gateway = Gateway::start(&standard_config()).await;
    let api = Api::new(&gateway);
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    let path = format!("/demo/@connections/{id}");

    for (key, why) in [
        (None, "no credentials"),
        (Some("wrong"), "a wrong key"),
        (Some("acme-key"), "another tenant's key"),
    ] {
        let (status, kind, body) = api.call(M::POST, &path, key, b"x".to_vec()).await;
        assert_eq!(
            (status, kind.as_deref()),
            (403, Some("ForbiddenException")),
            "{why}: {body}"
        );
        assert!(
            serde_json::from_str::<Value>(&body).unwrap()["message"].is_string(),
            "{why}: {body}"
        );
    }
    let (status, kind, _) = api
        .call(
            M::POST,
            &format!("/nobody/@connections/{id}"),
            Some("demo-key"),
            b"x".to_vec(),
        )
        .await;
    assert_eq!(
        (status, kind.as_deref()),
        (403, Some("ForbiddenException")),
        "unknown tenant"
    );
    // Acme's key opens acme only, where demo's id does not exist.
    let (status, kind, _) = api
        .call(
            M::POST,
            &format!("/acme/@connections/{id}"),
            Some("acme-key"),
            b"x".to_vec(),
        )
        .await;
    assert_eq!((status, kind.as_deref()), (410, Some("GoneException")));
    for garbage in ["nope", "%00%01", &"x".repeat(5000)] {
        let (status, kind, _) = api
            .demo(M::GET, &format!("/demo/@connections/{garbage}"), "")
            .await;
        assert_eq!(
            (status, kind.as_deref()),
            (410, Some("GoneException")),
            "{garbage:.20}"
        );
    }
    let (status, kind, _) = api.demo(M::PUT, &path, "x").await;
    assert_eq!(
        (status, kind.as_deref()),
        (405, Some("MethodNotAllowedException"))
    );
    let (status, _, _) = api.demo(M::GET, "/demo/something-else", "").await;
    assert_eq!(status, 404);

    // Nothing of the above reached the client: its next frame is this one.
    assert_eq!(api.demo(M::POST, &path, "only this").await.0, 200);
    assert_eq!(recv_text(&mut client).await, "only this");
}

/// A client that does not read fills its queue: POST answers 429 LimitExceeded, and the
/// tenant's request rate limit answers the same.
#[tokio::test]
async fn limits_answer_429() {
    let gateway = Gateway::start(&standard_config()).await;
    let api = Api::new(&gateway);
    let mut client = gateway.connect("/small/echo").await;
    client.send(Message::text("who")).await.unwrap();
    let _ = recv(&mut client).await;
    let list: Value = serde_json::from_str(
        &api.call(M::GET, "/small/@connections", Some("small-key"), vec![])
            .await
            .2,
    )
    .unwrap();
    let id = list["items"][0]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut statuses = Vec::new();
    for _ in 0..20_000 {
        let (status, kind, _) = api
            .call(
                M::POST,
                &format!("/small/@connections/{id}"),
                Some("small-key"),
                vec![b'q'; 1024],
            )
            .await;
        statuses.push((status, kind));
        if status != 200 {
            break;
        }
    }
    let last = statuses.last().unwrap();
    assert_eq!(
        (last.0, last.1.as_deref()),
        (429, Some("LimitExceededException")),
        "after {} posts",
        statuses.len()
    );

    // Tenant `rated` allows a burst of 2 requests.
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(
            api.call(M::GET, "/rated/@connections", Some("rated-key"), vec![])
                .await
                .0,
        );
    }
    assert_eq!(codes, [200, 200, 429]);
    drop(client);
}

/// List pages through the tenant's connections in id order; DELETE on the collection
/// closes them all and says how many.
#[tokio::test]
async fn list_and_close_all() {
    let gateway = Gateway::start(&standard_config()).await;
    let api = Api::new(&gateway);
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(
            gateway
                .connect(if i < 3 {
                    "/demo/echo"
                } else {
                    "/demo/connections"
                })
                .await,
        );
    }
    let _acme = gateway.connect("/acme/echo").await;
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let (status, _, body) = api
            .demo(
                M::GET,
                &format!("/demo/@connections?limit=2&nextToken={token}"),
                "",
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["connectionId"].as_str().unwrap().to_owned());
            assert!(item["connectedAt"].is_string() && item["route"].is_string());
        }
        match page["nextToken"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "acme's connection is not listed: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered, no repeats");
    let (_, _, body) = api.demo(M::GET, "/demo/@connections?route=/echo", "").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let (status, _, _) = api.demo(M::GET, "/demo/@connections?limit=0", "").await;
    assert_eq!(status, 400);

    let (status, _, body) = api.demo(M::DELETE, "/demo/@connections", "").await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["closed"].as_u64()
        ),
        (200, Some(5))
    );
    for client in &mut clients {
        assert_eq!(u16::from(expect_close(client).await.code), 1000);
    }
}

/// Yandex's connection REST API: get, send (base64, TEXT or BINARY), disconnect; the
/// tenant is the caller's, and appears as gatewayId.
#[tokio::test]
async fn yandex_connection_api() {
    let gateway = Gateway::start(&standard_config()).await;
    let api = Api::new(&gateway);
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    let base = format!("/apigateways/websocket/v1/connections/{id}");

    let (status, _, body) = api.demo(M::GET, &base, "").await;
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (info["id"].as_str(), info["gatewayId"].as_str()),
        (Some(id.as_str()), Some("demo"))
    );
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1");
    humantime::parse_rfc3339(info["connectedAt"].as_str().unwrap()).unwrap();
    humantime::parse_rfc3339(info["lastActiveAt"].as_str().unwrap()).unwrap();

    let send = format!("{base}:send");
    let (status, _, body) = api
        .demo(M::POST, &send, r#"{"data":"SGVsbG8h","type":"TEXT"}"#)
        .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    assert_eq!(recv_text(&mut client).await, "Hello!");
    assert_eq!(
        api.demo(M::POST, &send, r#"{"data":"AAEC","type":"BINARY"}"#)
            .await
            .0,
        200
    );
    assert_eq!(recv(&mut client).await, Message::binary(vec![0u8, 1, 2]));
    for bad in [
        r#"{"data":"not base64!"}"#,
        r#"{"data":"AA==","type":"WEIRD"}"#,
        "{not json",
        r#"{"data":1}"#,
    ] {
        let (status, _, body) = api.demo(M::POST, &send, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(serde_json::from_str::<Value>(&body).unwrap()["message"].is_string());
    }
    let (status, _, _) = api.call(M::GET, &base, Some("acme-key"), vec![]).await;
    assert_eq!(status, 404, "acme sees no demo connection");
    let (status, _, _) = api.call(M::GET, &base, None, vec![]).await;
    assert_eq!(status, 403);

    let (status, _, body) = api.demo(M::DELETE, &base, "").await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    assert_eq!(u16::from(expect_close(&mut client).await.code), 1000);
    let (status, _, body) = api.demo(M::GET, &base, "").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], 5);
}

/// `GET @connections/{id}` does not hand the end user's credentials to whoever holds the
/// tenant's key: `Authorization`, `Cookie` and token-like query parameters read
/// `[redacted]` (and the URI loses its query) unless the tenant sets
/// `expose_credentials`. Other headers and parameters are shown as sent.
#[tokio::test]
async fn get_redacts_the_clients_credentials_unless_the_tenant_opts_in() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut text = String::new();
    for tenant in ["closed", "open"] {
        text.push_str(&crate::harness::plugin(
            tenant,
            "probe",
            crate::plugins::PROBE,
            "",
        ));
        text.push_str(&format!(
            "[tenants.{tenant}.credentials]\nbearer_keys = [\"{tenant}-key\"]\n[tenants.{tenant}.routes.\"/probe\"]\nplugin = \"probe\"\n"
        ));
    }
    text.push_str("[tenants.open]\nexpose_credentials = true\n");
    let gateway = Gateway::start(&crate::harness::config(&text)).await;
    for (tenant, exposed) in [("closed", false), ("open", true)] {
        let mut request = gateway
            .url(&format!("/{tenant}/probe?token=t0ken&room=1"))
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("authorization", "Bearer user-secret".parse().unwrap());
        headers.insert("cookie", "session=abc".parse().unwrap());
        headers.insert("x-trace", "visible".parse().unwrap());
        let (mut client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let id = ask(&mut client, "list").await;
        let (status, _, body) = http(
            "GET",
            &format!("http://{}/{tenant}/@connections/{id}", gateway.admin),
            &[("authorization".into(), format!("Bearer {tenant}-key"))],
            vec![],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let info: Value = serde_json::from_str(&body).unwrap();
        let shown = |value: &str| {
            if exposed {
                value.to_owned()
            } else {
                "[redacted]".to_owned()
            }
        };
        assert_eq!(
            info["headers"]["authorization"],
            shown("Bearer user-secret"),
            "{tenant}"
        );
        assert_eq!(info["headers"]["cookie"], shown("session=abc"), "{tenant}");
        assert_eq!(info["queryParameters"]["token"], shown("t0ken"), "{tenant}");
        assert_eq!(info["headers"]["x-trace"], "visible");
        assert_eq!(info["queryParameters"]["room"], "1");
        assert_eq!(!body.contains("t0ken"), !exposed, "{body}");
    }
}
