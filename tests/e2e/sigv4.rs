//! SigV4 on the management API: signatures made with aws-sigv4 (as AWS SDKs make them)
//! open their own tenant only; stale, altered, replayed or wrongly keyed requests are
//! refused with 403 and nothing is delivered.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use wsgate::client::{Credentials, auth_headers};

use crate::admin_limits::{answer, retry_after};
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

/// The headers of a signature made for `host` (as a client that dialled `host` makes
/// it), with the `Host` header it signed, to send to the gateway's real address.
fn signed_for(credentials: &Credentials, tenant: &str, host: &str) -> Vec<(String, String)> {
    let signed_url = format!("http://{host}/{tenant}/@connections");
    let mut headers =
        auth_headers(credentials, "GET", &signed_url, b"", SystemTime::now()).unwrap();
    headers.push(("host".to_owned(), host.to_owned()));
    headers
}

/// The oracle attack on key ids: made-up bearer keys and access key ids, a known key
/// id with a guessed secret, another tenant's valid credentials. Each gets the same
/// 403 with the same body, so no answer tells a valid key id from an unknown one (they
/// used to: "unknown access key id" against "signature does not match"). What depends
/// on no key keeps its own message: a missing header, a stale date.
#[tokio::test]
async fn failed_credentials_are_answered_alike() {
    let gateway = Gateway::start(&standard_config()).await;
    let url = format!("http://{}/demo/@connections", gateway.admin);
    let now = SystemTime::now();
    let bearer = |key: &str| vec![("authorization".to_owned(), format!("Bearer {key}"))];
    let signed =
        |akid: &str, secret: &str| auth_headers(&aws(akid, secret), "GET", &url, b"", now).unwrap();
    let mut answers: Vec<(&str, HttpAnswer)> = Vec::new();
    for (what, headers) in [
        ("an unknown bearer key", bearer("guess")),
        ("another tenant's bearer key", bearer("acme-key")),
        ("an unknown access key id", signed("AKIDGUESS", "guess")),
        (
            "a known key id with a wrong secret",
            signed("AKIDDEMO", "guess"),
        ),
        (
            "another tenant's access key",
            signed("AKIDACME", "acme-secret"),
        ),
    ] {
        let answer = send_with(&url, "GET", &headers, b"").await;
        assert_eq!(
            (answer.0, answer.1.as_deref()),
            (403, Some("ForbiddenException")),
            "{what}: {}",
            answer.2
        );
        answers.push((what, answer));
    }
    let (first, expected) = &answers[0];
    for (what, answer) in &answers[1..] {
        assert_eq!(answer, expected, "{what} is told apart from {first}");
    }

    let (status, _, body) = send_with(&url, "GET", &[], b"").await;
    assert_eq!(status, 403);
    assert!(body.contains("Missing Authentication Token"), "{body}");
    let stale = now - Duration::from_secs(600);
    let headers = auth_headers(&aws("AKIDGUESS", "guess"), "GET", &url, b"", stale).unwrap();
    let (status, _, body) = send_with(&url, "GET", &headers, b"").await;
    assert_eq!(status, 403);
    assert!(
        body.contains("Signature expired"),
        "the date is checked before the key: {body}"
    );
}

/// A signature made for another host (another gateway, or AWS's own endpoint, sharing
/// the keys) and replayed here is refused once the gateway knows its names: `[admin]
/// hosts`, or the tenant's own `hosts`. It used to be accepted. Signatures for a
/// configured name, for the address the client dialled and for localhost on a
/// loopback connection keep working; a tenant without names, on a gateway without
/// names, accepts any host (there is nothing to check against).
#[tokio::test]
async fn signatures_made_for_another_host_are_refused() {
    // The standard config with the admin API's own name added to its [admin] table.
    let config =
        standard_config().replacen("[admin]\n", "[admin]\nhosts = [\"api.example.test\"]\n", 1);
    let gateway = Gateway::start(&config).await;
    let port = gateway.admin.port();
    let demo = aws("AKIDDEMO", "demo-secret");
    let acme = aws("AKIDACME", "acme-secret");
    for (credentials, tenant, host, expected) in [
        (&demo, "demo", "elsewhere.example.test".to_owned(), 403),
        (&demo, "demo", format!("elsewhere.example.test:{port}"), 403),
        (&demo, "demo", "acme.test".to_owned(), 403),
        (&demo, "demo", "api.example.test".to_owned(), 200),
        (&demo, "demo", format!("api.example.test:{port}"), 200),
        (&demo, "demo", format!("127.0.0.1:{port}"), 200),
        (&demo, "demo", format!("localhost:{port}"), 200),
        (&acme, "acme", "acme.test".to_owned(), 200),
        (&acme, "acme", "elsewhere.example.test".to_owned(), 403),
    ] {
        let headers = signed_for(credentials, tenant, &host);
        let url = format!("http://{}/{tenant}/@connections", gateway.admin);
        let (status, _, body) = send_with(&url, "GET", &headers, b"").await;
        assert_eq!(status, expected, "{tenant} signed for {host}: {body}");
        if expected == 403 {
            assert!(body.contains("not valid for this request"), "{body}");
        }
    }

    // Without [admin] hosts, only a tenant with names of its own is checked.
    let gateway = Gateway::start(&standard_config()).await;
    for (credentials, tenant, expected) in [(&acme, "acme", 403), (&demo, "demo", 200)] {
        let headers = signed_for(credentials, tenant, "elsewhere.example.test");
        let url = format!("http://{}/{tenant}/@connections", gateway.admin);
        let (status, _, body) = send_with(&url, "GET", &headers, b"").await;
        assert_eq!(status, expected, "{tenant}: {body}");
    }
}

/// A tenant with as many signed writes remembered as `[admin] replay_cache_signatures`
/// allows gets 429 with `Retry-After` for its next signed write, which is not let
/// through unremembered (that would drop the replay protection); a replay is still
/// refused as one, and reads and bearer-key writes go on. The cache used to grow with
/// the write rate, about 136 bytes a signature.
#[tokio::test]
async fn a_tenant_at_its_replay_cache_cap_gets_429() {
    let config =
        standard_config().replacen("[admin]\n", "[admin]\nreplay_cache_signatures = 2\n", 1);
    let gateway = Gateway::start(&config).await;
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    let url = format!("http://{}/demo/@connections/{id}", gateway.admin);
    let demo = aws("AKIDDEMO", "demo-secret");
    let first = auth_headers(&demo, "POST", &url, b"one", SystemTime::now()).unwrap();
    assert_eq!(send_with(&url, "POST", &first, b"one").await.0, 200);
    let (status, _, body) = send(&url, "POST", &demo, b"two", b"two", SystemTime::now()).await;
    assert_eq!(status, 200, "{body}");

    let third = auth_headers(&demo, "POST", &url, b"three", SystemTime::now()).unwrap();
    let (status, headers, body) = answer("POST", &url, &third, b"three").await;
    let wait = retry_after(status, &headers, &body);
    assert!(
        (1..=360).contains(&wait),
        "until the oldest minute expires: {wait}"
    );
    let (status, _, body) = send_with(&url, "POST", &first, b"one").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("replay"), "{body}");

    let bearer = [("authorization".to_owned(), "Bearer demo-key".to_owned())];
    assert_eq!(send_with(&url, "POST", &bearer, b"four").await.0, 200);
    let (status, _, body) = send(&url, "GET", &demo, b"", b"", SystemTime::now()).await;
    assert_eq!(status, 200, "{body}");
    // The refused write was not delivered.
    for expected in ["one", "two", "four"] {
        assert_eq!(recv_text(&mut client).await, expected);
    }
}
