//! The auth plugin as `$connect`: the upgrade is refused with 401 before any connection
//! exists, or accepted with a token in the header or the query.

use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{Gateway, ask};
use crate::standard_config;

/// A wrong or missing token gets HTTP 401 and no connection is registered.
#[tokio::test]
async fn auth_rejects_without_a_valid_token() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut observer = gateway.connect("/demo/probe").await;

    let (status, body) = gateway.refused(gateway.url("/demo/private")).await;
    assert_eq!(status, 401);
    assert!(body.contains("Unauthorized"), "{body}");
    let (status, _) = gateway
        .refused(gateway.url("/demo/private?token=wrong"))
        .await;
    assert_eq!(status, 401);
    let mut request = gateway.url("/demo/private").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer s3cre".parse().unwrap());
    assert_eq!(gateway.refused(request).await.0, 401);

    let listed = ask(&mut observer, "list").await;
    assert_eq!(
        listed.split(',').count(),
        1,
        "only the observer is registered: {listed}"
    );
}

/// The right token, in the query or as a bearer header, lets the client in.
#[tokio::test]
async fn auth_accepts_a_valid_token() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut by_query = gateway.connect("/demo/private?token=s3cret").await;
    assert_eq!(ask(&mut by_query, "config greeting").await, "hello");

    let mut request = gateway.url("/demo/private").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    let (mut by_header, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let listed = ask(&mut by_header, "list route=/private").await;
    assert_eq!(
        listed.split(',').count(),
        2,
        "both authorised clients are registered: {listed}"
    );
}
