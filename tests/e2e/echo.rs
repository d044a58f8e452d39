//! Echo and connection-id: the simplest round trips through a plugin.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Gateway, ask, recv, recv_json, send_text};
use crate::standard_config;

/// Text and binary messages come back unchanged, in order.
#[tokio::test]
async fn echo_returns_text_and_binary() {
    let gateway = Gateway::start(&standard_config()).await;
    text_and_binary_come_back(&gateway, "/demo/echo").await;
}

/// The echo's behaviour, whatever the language of the plugin on `path`.
pub async fn text_and_binary_come_back(gateway: &Gateway, path: &str) {
    let mut client = gateway.connect(path).await;
    assert_eq!(ask(&mut client, "hello").await, "hello");
    assert_eq!(ask(&mut client, "héllo ✓").await, "héllo ✓");
    let bytes = vec![0u8, 1, 2, 255, 254];
    client.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(recv(&mut client).await, Message::binary(bytes));
    for i in 0..50 {
        send_text(&mut client, &i.to_string()).await;
    }
    for i in 0..50 {
        assert_eq!(recv(&mut client).await, Message::text(i.to_string()));
    }
}

/// The Yandex tutorial flow: any message is answered with the connection id as JSON.
#[tokio::test]
async fn connection_id_answers_with_the_id() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut a = gateway.connect("/demo/connections").await;
    let mut b = gateway.connect("/demo/connections").await;
    send_text(&mut a, "anything").await;
    let reply = recv_json(&mut a).await;
    let id = reply["connection_id"].as_str().unwrap().to_owned();
    assert_eq!(reply.as_object().unwrap().len(), 1, "{reply}");
    assert_eq!(id.len(), 22, "128 random bits in URL-safe base64: {id}");
    assert!(
        id.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    send_text(&mut a, "again").await;
    assert_eq!(
        recv_json(&mut a).await["connection_id"],
        id.as_str(),
        "stable per connection"
    );
    send_text(&mut b, "x").await;
    assert_ne!(
        recv_json(&mut b).await["connection_id"],
        id.as_str(),
        "distinct per connection"
    );
}

/// A tenant listing a host name is reached by that name without the path prefix.
#[tokio::test]
async fn tenant_by_host_name() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let gateway = Gateway::start(&standard_config()).await;
    let mut request = gateway.url("/echo").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("host", "acme.test".parse().unwrap());
    let (mut client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(ask(&mut client, "via host").await, "via host");
}
