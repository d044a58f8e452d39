//! SigV4 on the management API: signatures made with aws-sigv4 (as AWS SDKs make them)
//! open their own tenant only; stale, altered, replayed or wrongly keyed requests are
//! refused with 403 and nothing is delivered.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use wsgate::client::{Credentials, auth_headers};

use crate::harness::{Gateway, HttpAnswer, http, own_id, recv_text};
use crate::standard_config;

fn aws(akid: &str, secret: &str) -> Credentials {
    Credentials::Aws {
        access_key_id: akid.into(),
        secret_access_key: secret.into(),
        session_token: None,
        region: "eu-west-1".into(),
    }
}

/// Sends a request whose signature was made for `signed_body` at `time`, with `body`.
async fn send(
    url: &str,
    method: &str,
    credentials: &Credentials,
    signed_body: &[u8],
    body: &[u8],
    time: SystemTime,
) -> HttpAnswer {
    let headers = auth_headers(credentials, method, url, signed_body, time).unwrap();
    send_with(url, method, &headers, body).await
}

async fn send_with(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> HttpAnswer {
    http(method, url, headers, body.to_vec()).await
}

/// A valid signature, with `@` raw or as `%40`, works for POST, GET and DELETE.
#[tokio::test]
async fn signed_requests_work() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    let demo = aws("AKIDDEMO", "demo-secret");
    let now = SystemTime::now();
    for path in [
        format!("/demo/@connections/{id}"),
        format!("/demo/%40connections/{id}"),
    ] {
        let url = format!("http://{}{path}", gateway.admin);
        let (status, _, body) =
            send(&url, "POST", &demo, b"signed hello", b"signed hello", now).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(recv_text(&mut client).await, "signed hello");
    }
    let url = format!("http://{}/demo/@connections/{id}", gateway.admin);
    let (status, _, body) = send(&url, "GET", &demo, b"", b"", SystemTime::now()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["connectionId"],
        id.as_str()
    );
    // Reads may be repeated as they are; a write that failed may be retried as it is.
    let read = auth_headers(&demo, "GET", &url, b"", SystemTime::now()).unwrap();
    assert_eq!(send_with(&url, "GET", &read, b"").await.0, 200);
    assert_eq!(send_with(&url, "GET", &read, b"").await.0, 200);
    let nowhere = format!("http://{}/demo/@connections/nobody", gateway.admin);
    let write = auth_headers(&demo, "POST", &nowhere, b"x", SystemTime::now()).unwrap();
    assert_eq!(send_with(&nowhere, "POST", &write, b"x").await.0, 410);
    assert_eq!(
        send_with(&nowhere, "POST", &write, b"x").await.0,
        410,
        "a retry of a failed write is not a replay"
    );

    let with_query = format!("{url}?code=4001&reason=signed%20bye");
    let (status, _, body) = send(&with_query, "DELETE", &demo, b"", b"", SystemTime::now()).await;
    assert_eq!(status, 204, "{body}");
    let frame = crate::harness::expect_close(&mut client).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4001, "signed bye")
    );
}

/// Every broken signature is refused with 403 ForbiddenException, and the client
/// receives none of those requests.
#[tokio::test]
async fn bad_signatures_are_refused() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    let url = format!("http://{}/demo/@connections/{id}", gateway.admin);
    let demo = aws("AKIDDEMO", "demo-secret");
    let now = SystemTime::now();

    let cases: Vec<(&str, HttpAnswer)> = vec![
        (
            "another tenant's key",
            send(
                &url,
                "POST",
                &aws("AKIDACME", "acme-secret"),
                b"x",
                b"x",
                now,
            )
            .await,
        ),
        (
            "a wrong secret",
            send(&url, "POST", &aws("AKIDDEMO", "guess"), b"x", b"x", now).await,
        ),
        (
            "an unknown key",
            send(&url, "POST", &aws("AKIDNOBODY", "x"), b"x", b"x", now).await,
        ),
        (
            "an altered body",
            send(&url, "POST", &demo, b"original", b"altered", now).await,
        ),
        (
            "a stale date",
            send(
                &url,
                "POST",
                &demo,
                b"x",
                b"x",
                now - Duration::from_secs(600),
            )
            .await,
        ),
        (
            "a future date",
            send(
                &url,
                "POST",
                &demo,
                b"x",
                b"x",
                now + Duration::from_secs(600),
            )
            .await,
        ),
    ];
    for (what, (status, kind, body)) in cases {
        assert_eq!(
            (status, kind.as_deref()),
            (403, Some("ForbiddenException")),
            "{what}: {body}"
        );
        assert!(
            serde_json::from_str::<Value>(&body).unwrap()["message"].is_string(),
            "{what}"
        );
    }

    let headers = auth_headers(&demo, "POST", &url, b"once", SystemTime::now()).unwrap();
    assert_eq!(send_with(&url, "POST", &headers, b"once").await.0, 200);
    let (status, _, body) = send_with(&url, "POST", &headers, b"once").await;
    assert_eq!(status, 403, "a replay is refused: {body}");
    assert!(body.contains("replay"), "{body}");

    let mut broken = headers.clone();
    for (name, value) in &mut broken {
        if name == "authorization" {
            *value = value.replace("SignedHeaders=", "SignedHeadrs=");
        }
    }
    assert_eq!(send_with(&url, "POST", &broken, b"x").await.0, 403);

    // Only the one good request arrived.
    assert_eq!(recv_text(&mut client).await, "once");
    let (status, _, _) = send(&url, "POST", &demo, b"last", b"last", SystemTime::now()).await;
    assert_eq!(status, 200);
    assert_eq!(recv_text(&mut client).await, "last");
}

/// A valid signature's headers, with its `Authorization` rewritten by `edit`.
fn tampered(url: &str, edit: impl Fn(&str) -> String) -> Vec<(String, String)> {
    let demo = aws("AKIDDEMO", "demo-secret");
    let mut headers = auth_headers(&demo, "GET", url, b"", SystemTime::now()).unwrap();
    for (name, value) in &mut headers {
        if name.eq_ignore_ascii_case("authorization") {
            *value = edit(value);
        }
    }
    headers
}

/// The signed-headers list and the credential scope are checked before any signing:
/// a name listed twice, an endless list (which once overflowed a header map and
/// panicked the request task), an oversized header, an empty or mismatched scope date.
#[tokio::test]
async fn malformed_signature_fields_are_refused() {
    let gateway = Gateway::start(&standard_config()).await;
    let url = format!("http://{}/demo/@connections", gateway.admin);
    let many = (0..25_000).map(|_| "host").collect::<Vec<_>>().join(";");
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "listed twice",
            Box::new(|a: &str| a.replace("SignedHeaders=host;", "SignedHeaders=host;host;")),
        ),
        (
            "too many",
            Box::new(move |a: &str| {
                a.replace("SignedHeaders=host;", &format!("SignedHeaders={many};"))
            }),
        ),
        (
            "empty scope date",
            Box::new(|a: &str| {
                let start = a.find("AKIDDEMO/").unwrap() + "AKIDDEMO/".len();
                format!("{}{}", &a[..start], &a[start + 8..])
            }),
        ),
        (
            "another scope date",
            Box::new(|a: &str| {
                let start = a.find("AKIDDEMO/").unwrap() + "AKIDDEMO/".len();
                format!("{}19990101{}", &a[..start], &a[start + 8..])
            }),
        ),
    ];
    for (what, edit) in cases {
        let headers = tampered(&url, edit);
        let (status, kind, body) = send_with(&url, "GET", &headers, b"").await;
        assert_eq!(
            (status, kind.as_deref()),
            (403, Some("ForbiddenException")),
            "{what}: {body}"
        );
    }
}
