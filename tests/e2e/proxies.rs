//! Behind a load balancer (issue 14): the client's own address comes from a PROXY
//! protocol header or `X-Forwarded-For`, only from `listen.trusted_proxies`, and is the
//! one the API shows and the per-source limits count; new-connection limits per source
//! and per tenant answer 429 with `Retry-After` before `$connect` runs.

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{Client, Gateway, WAIT, config, http, own_id, plugin, refusal};
use crate::plugins;

/// Tenant `demo` (key `demo-key`) with the connection-id plugin on `/id`, `[listen]`
/// lines `listen`, `[limits]` lines `limits` and `[tenants.demo.limits]` lines `tenant`.
fn gateway_config(listen: &str, limits: &str, tenant: &str) -> String {
    let text = config(&format!(
        "[limits]\n{limits}\n\n{}[tenants.demo.credentials]\nbearer_keys = [\"demo-key\"]\n\
         [tenants.demo.limits]\n{tenant}\n[tenants.demo.routes.\"/id\"]\nplugin = \"id\"\n",
        plugin("demo", "id", plugins::CONNECTION_ID, "")
    ));
    // `[listen]` is the first table of the harness's config: add to it.
    text.replacen(
        "admin = \"127.0.0.1:0\"\n",
        &format!("admin = \"127.0.0.1:0\"\n{listen}\n"),
        1,
    )
}

/// Connects to `/demo/id` with `X-Forwarded-For: forwarded` (when given).
async fn connect_forwarded(gateway: &Gateway, forwarded: Option<&str>) -> Client {
    let mut request = gateway.url("/demo/id").into_client_request().unwrap();
    if let Some(value) = forwarded {
        request
            .headers_mut()
            .insert("x-forwarded-for", value.parse().unwrap());
    }
    let (client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    client
}

/// The source address the management API shows for `client`.
async fn source_ip(gateway: &Gateway, client: &mut Client) -> String {
    let id = own_id(client).await;
    let (status, _, body) = http(
        "GET",
        &format!("http://{}/demo/@connections/{id}", gateway.admin),
        &[("authorization".into(), "Bearer demo-key".into())],
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    info["identity"]["sourceIp"].as_str().unwrap().to_owned()
}

/// Connects through a raw socket that first sends `header` (a PROXY header).
async fn connect_with_header(gateway: &Gateway, header: &[u8]) -> Result<Client, String> {
    let mut tcp = TcpStream::connect(gateway.ws).await.unwrap();
    tcp.write_all(header).await.unwrap();
    let request = gateway.url("/demo/id").into_client_request().unwrap();
    let tcp = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    match tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp)).await {
        Ok(Ok((client, _))) => Ok(client),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_from_a_trusted_proxy() {
    let untrusted = Gateway::start_binary(&gateway_config("", "", "")).await;
    let mut client = connect_forwarded(&untrusted, Some("198.51.100.7")).await;
    assert_eq!(source_ip(&untrusted, &mut client).await, "127.0.0.1");

    let trusted =
        Gateway::start_binary(&gateway_config("trusted_proxies = [\"127.0.0.1\"]", "", "")).await;
    let mut client = connect_forwarded(&trusted, Some("198.51.100.7")).await;
    assert_eq!(source_ip(&trusted, &mut client).await, "198.51.100.7");
    // A client cannot forge an earlier hop: the rightmost untrusted one counts.
    let mut client = connect_forwarded(&trusted, Some("6.6.6.6, 198.51.100.9")).await;
    assert_eq!(source_ip(&trusted, &mut client).await, "198.51.100.9");
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_name_the_client() {
    let gateway = Gateway::start_binary(&gateway_config(
        "trusted_proxies = [\"127.0.0.0/8\"]\nproxy_protocol = true",
        "",
        "",
    ))
    .await;
    let mut v1 = connect_with_header(&gateway, b"PROXY TCP4 198.51.100.8 127.0.0.1 5555 80\r\n")
        .await
        .unwrap();
    assert_eq!(source_ip(&gateway, &mut v1).await, "198.51.100.8");

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x21, 0, 36]);
    v2.extend_from_slice(
        &"2001:db8::5"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&[0; 16]);
    v2.extend_from_slice(&[0x15, 0xb3, 0, 80]);
    let mut client = connect_with_header(&gateway, &v2).await.unwrap();
    assert_eq!(source_ip(&gateway, &mut client).await, "2001:db8::5");

    // A trusted peer that sends no header is refused, with a warning: it is a
    // misconfigured balancer, or someone on its network.
    let err = connect_with_header(&gateway, b"").await.unwrap_err();
    assert!(!err.is_empty());
    gateway
        .logs
        .wait_for("the missing PROXY header's warning", |l| {
            l.contains("no valid PROXY header")
        })
        .await;
}

#[tokio::test]
async fn per_source_limits_answer_429_and_count_the_real_address() {
    let gateway = Gateway::start_binary(&gateway_config(
        "trusted_proxies = [\"127.0.0.1\"]",
        "max_connections_per_source = 2",
        "",
    ))
    .await;
    let _a = connect_forwarded(&gateway, Some("198.51.100.1")).await;
    let _b = connect_forwarded(&gateway, Some("198.51.100.1")).await;
    let mut request = gateway.url("/demo/id").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", "198.51.100.1".parse().unwrap());
    let (status, headers, body) = refusal(request).await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
    // Another client behind the same balancer is its own source.
    let _c = connect_forwarded(&gateway, Some("198.51.100.2")).await;
    // A connection that leaves gives its place back.
    drop(_a);
    let reopened = tokio::time::timeout(WAIT, async {
        loop {
            let mut request = gateway.url("/demo/id").into_client_request().unwrap();
            request
                .headers_mut()
                .insert("x-forwarded-for", "198.51.100.1".parse().unwrap());
            if let Ok((client, _)) = tokio_tungstenite::connect_async(request).await {
                return client;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        reopened.is_ok(),
        "the closed connection's place never came back"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("wsgate_limits_hit_total{tenant=\"\",limit=\"source_connections\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn new_connection_rates_answer_429_before_connect_runs() {
    let gateway = Gateway::start_binary(&gateway_config(
        "",
        "new_connections_per_source = 1000",
        "new_connections_per_second = 2",
    ))
    .await;
    let _a = gateway.connect("/demo/id").await;
    let _b = gateway.connect("/demo/id").await;
    let (status, headers, body) = refusal(gateway.url("/demo/id")).await;
    assert_eq!(status, 429, "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry), "Retry-After: {retry}");
    let metrics = gateway.metrics().await;
    // $connect ran for the two admitted connections only.
    assert!(
        metrics.contains(
            "wsgate_plugin_event_duration_seconds_count{tenant=\"demo\",plugin=\"id\",event=\"connect\"} 2"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("wsgate_limits_hit_total{tenant=\"demo\",limit=\"connect_rate\"} 1"));

    let rated =
        Gateway::start_binary(&gateway_config("", "new_connections_per_source = 2", "")).await;
    let _a = rated.connect("/demo/id").await;
    let _b = rated.connect("/demo/id").await;
    let (status, headers, _) = refusal(rated.url("/demo/id")).await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
}

/// On the admin listener too: behind a trusted proxy the audit trail names the client
/// from `X-Forwarded-For` and failed authentications are charged to it, so one
/// guessing client behind the load balancer is throttled and the others are not.
#[tokio::test]
async fn the_admin_api_sees_the_client_behind_a_trusted_proxy() {
    let text = gateway_config("trusted_proxies = [\"127.0.0.1\"]", "", "").replacen(
        "[admin]\n",
        "[admin]\nauth_failure_burst = 2\nauth_failures_per_minute = 1\n",
        1,
    );
    let gateway = Gateway::start(&text).await;
    let mut client = connect_forwarded(&gateway, None).await;
    let id = own_id(&mut client).await;
    let call = |key: &str, forwarded: &str| {
        let url = format!("http://{}/demo/@connections/{id}", gateway.admin);
        let headers = vec![
            ("authorization".to_owned(), format!("Bearer {key}")),
            ("x-forwarded-for".to_owned(), forwarded.to_owned()),
        ];
        async move { http("GET", &url, &headers, Vec::new()).await.0 }
    };
    assert_eq!(call("demo-key", "203.0.113.7").await, 200);
    let (status, _, body) = http(
        "GET",
        &format!("http://{}/demo/@logs", gateway.admin),
        &[("authorization".into(), "Bearer demo-key".into())],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let log: Value = serde_json::from_str(&body).unwrap();
    let audited = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["audit"]["action"] == "GetConnection")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(audited["audit"]["sourceIp"], "203.0.113.7", "{audited}");

    // A guessing client behind the proxy is throttled; another behind it is not.
    for _ in 0..2 {
        assert_eq!(call("guess", "198.51.100.9").await, 403);
    }
    assert_eq!(call("demo-key", "198.51.100.9").await, 429);
    assert_eq!(call("demo-key", "203.0.113.7").await, 200);
}
