//! `[tls]`: both listeners behind a certificate the test generates (a CA and leaves for
//! `localhost` and 127.0.0.1), driven by real TLS clients: `wss://` with rustls and
//! tungstenite, HTTPS management calls, boto3 verifying against the generated CA, a
//! certificate rotated by a reload, plain clients on the TLS ports, and start-up refusing
//! unusable files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::backend::{Backend, Reply, Seen};
use crate::harness::{Gateway, OPS_KEY, WAIT, config, plugin, start_fails};
use crate::{plugins, standard_config};

// ------------------------------------------------------------------------- helpers

/// A CA the test trusts, and the folder its leaves are written to.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    ca_pem: String,
    /// Holds `ca.pem`, `cert.pem` and `key.pem`.
    dir: tempfile::TempDir,
}

impl Pki {
    /// A fresh CA, its certificate written to `ca.pem`, and a first leaf.
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Names of their own: with rcgen's one default name for both, OpenSSL (boto3)
        // takes the leaf for a self-signed certificate.
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "wsgate test CA");
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        let pki = Pki {
            issuer: Issuer::new(params, key),
            ca_pem,
            dir,
        };
        pki.rotate();
        pki
    }

    /// A new leaf for `localhost` and 127.0.0.1: certificate and key, PEM, and the
    /// certificate's DER (what a client sees as the peer certificate).
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// Writes a new leaf over `cert.pem` and `key.pem`; returns its DER.
    fn rotate(&self) -> Vec<u8> {
        let (cert, key, der) = self.leaf();
        std::fs::write(self.cert(), cert).unwrap();
        std::fs::write(self.key(), key).unwrap();
        der
    }

    /// The DER of the leaf in `cert.pem` now.
    fn current(&self) -> Vec<u8> {
        let pem = std::fs::read(self.cert()).unwrap();
        CertificateDer::from_pem_slice(&pem).unwrap().to_vec()
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `[tls]` naming this folder's files (absolute: the config lives elsewhere).
    fn section(&self) -> String {
        format!(
            "\n[tls]\ncert = {:?}\nkey = {:?}\n",
            self.cert(),
            self.key()
        )
    }

    /// A rustls client that trusts this CA only.
    fn connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A TLS connection to `addr` for `localhost`, checked against the CA.
    async fn connect(&self, addr: SocketAddr) -> TlsStream<TcpStream> {
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(WAIT, async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            self.connector().connect(name, tcp).await
        })
        .await
        .unwrap_or_else(|_| panic!("the TLS handshake with {addr} timed out"))
        .unwrap_or_else(|e| panic!("the TLS handshake with {addr} failed: {e}"))
    }
}

/// The leaf certificate the server presented on `stream`, DER.
fn peer_leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate")[0]
        .to_vec()
}

/// A `wss://` client over rustls.
type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// Opens `wss://localhost:PORT{path}`; returns the client and the leaf it was served.
async fn wss(gateway: &Gateway, pki: &Pki, path: &str) -> (Wss, Vec<u8>) {
    let tls = pki.connect(gateway.ws).await;
    let leaf = peer_leaf(&tls);
    let url = format!("wss://localhost:{}{path}", gateway.ws.port());
    let (client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("the wss upgrade timed out")
        .expect("the wss upgrade failed");
    (client, leaf)
}

/// The next text message, skipping pings.
async fn next_text(client: &mut Wss) -> String {
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("no message within the wait")
            .expect("the connection ended")
            .expect("receive failed");
        match message {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Sends `text` and returns the answer.
async fn ask(client: &mut Wss, text: &str) -> String {
    client.send(Message::text(text)).await.expect("send failed");
    next_text(client).await
}

/// One HTTPS request to `addr` (HTTP/1.1, `connection: close`); returns the status and
/// body, and the leaf the server presented.
async fn https(
    pki: &Pki,
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: &str,
    body: &str,
) -> (u16, String, Vec<u8>) {
    let mut tls = pki.connect(addr).await;
    let leaf = peer_leaf(&tls);
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost:{}\r\nauthorization: Bearer {bearer}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        addr.port(),
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut answer))
        .await
        .expect("the HTTPS answer timed out")
        .expect("the HTTPS answer ends with a close_notify");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body, leaf)
}

/// The standard gateway with `[tls]`, as the real binary.
async fn start(pki: &Pki) -> Gateway {
    Gateway::start_binary(&(standard_config() + &pki.section())).await
}

/// `target/py/bin/python`, set up by scripts/setup-tests.sh.
fn python() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-tests.sh (scripts/test.sh does) to install boto3",
        path.display()
    );
    path
}

/// Runs tests/e2e/tls_boto3.py: boto3 against `endpoint` over HTTPS, verifying with
/// `ca`, on connection `id`; returns what it reports.
async fn boto3(endpoint: &str, id: &str, ca: &Path, key_id: &str, secret: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/tls_boto3.py");
    let output = tokio::time::timeout(
        WAIT * 3,
        Command::new(python())
            .arg(script)
            .args([endpoint, id])
            .arg(ca)
            .args([key_id, secret])
            // Only `verify=` decides which CA boto3 trusts.
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("REQUESTS_CA_BUNDLE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("boto3 did not finish")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "boto3 failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

// --------------------------------------------------------------------------- tests

/// `wss://` echoes, and a management POST over HTTPS (bearer key) reaches the client;
/// both listeners present the configured certificate.
#[tokio::test]
async fn wss_echoes_and_https_management_reaches_the_client() {
    let pki = Pki::new();
    let gateway = start(&pki).await;
    let (mut echo, leaf) = wss(&gateway, &pki, "/demo/echo").await;
    assert_eq!(leaf, pki.current(), "the WebSocket listener serves [tls]");
    assert_eq!(ask(&mut echo, "hello over tls").await, "hello over tls");

    let (mut client, _) = wss(&gateway, &pki, "/demo/connections").await;
    let id: Value = serde_json::from_str(&ask(&mut client, "{}").await).unwrap();
    let id = id["connection_id"].as_str().expect("a connection id");
    let path = format!("/demo/@connections/{id}");
    let (status, body, leaf) = https(
        &pki,
        gateway.admin,
        "POST",
        &path,
        "demo-key",
        "pushed over https",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(leaf, pki.current(), "the admin listener serves [tls]");
    assert_eq!(next_text(&mut client).await, "pushed over https");

    let (status, body, _) = https(&pki, gateway.admin, "GET", "/health", "", "").await;
    assert_eq!((status, body.trim()), (200, "OK"));
}

/// Over TLS, a message over the tenant's limit still gets its 1009 close frame while
/// the client is sending (the lingering close reads on under TLS), and a large message
/// echoes whole.
#[tokio::test]
async fn closes_reach_the_client_over_tls() {
    let pki = Pki::new();
    let gateway = start(&pki).await;
    let (mut client, _) = wss(&gateway, &pki, "/demo/echo").await;
    let big = "b".repeat(128 * 1024);
    assert_eq!(ask(&mut client, &big).await.len(), big.len());

    let (mut client, _) = wss(&gateway, &pki, "/small/echo").await;
    client
        .send(Message::binary(vec![7u8; 200_000]))
        .await
        .expect("the gateway reads on while it closes");
    let close = loop {
        match tokio::time::timeout(WAIT, client.next())
            .await
            .expect("no close within the wait")
        {
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1009);
}

/// boto3, given `verify=` the generated CA, posts to and describes a connection over
/// HTTPS; without it, boto3 refuses the gateway's certificate.
#[tokio::test]
async fn boto3_verifies_the_gateway_with_the_generated_ca() {
    let pki = Pki::new();
    let gateway = start(&pki).await;
    let (mut client, _) = wss(&gateway, &pki, "/demo/connections").await;
    let id: Value = serde_json::from_str(&ask(&mut client, "{}").await).unwrap();
    let id = id["connection_id"].as_str().unwrap().to_owned();
    let endpoint = format!("https://127.0.0.1:{}/demo", gateway.admin.port());
    let results = boto3(&endpoint, &id, &pki.ca_file(), "AKIDDEMO", "demo-secret").await;
    assert_eq!(results["untrusted_refused"], true, "{results}");
    assert_eq!(results["source_ip"], "127.0.0.1", "{results}");
    assert_eq!(next_text(&mut client).await, "from boto3 over https");
}

/// A certificate written over the same files and reloaded serves the next handshake on
/// both listeners, while a connection opened before goes on echoing; a reload whose key
/// does not match is refused and the certificate in force stays.
#[tokio::test]
async fn a_reload_rotates_the_certificate_and_open_connections_stay() {
    let pki = Pki::new();
    let first = pki.current();
    let gateway = start(&pki).await;
    let (mut old, leaf) = wss(&gateway, &pki, "/demo/echo").await;
    assert_eq!(leaf, first);

    let second = pki.rotate();
    assert_ne!(first, second);
    let (status, body, _) = https(&pki, gateway.admin, "POST", "/-/reload", OPS_KEY, "").await;
    assert_eq!(status, 200, "the reload was refused: {body}");

    let (mut new, leaf) = wss(&gateway, &pki, "/demo/echo").await;
    assert_eq!(
        leaf, second,
        "the next wss handshake gets the new certificate"
    );
    let (_, _, leaf) = https(&pki, gateway.admin, "GET", "/health", "", "").await;
    assert_eq!(leaf, second, "the next https handshake gets it too");
    assert_eq!(ask(&mut new, "new").await, "new");
    assert_eq!(ask(&mut old, "still here").await, "still here");
    assert_eq!(
        peer_leaf(old.get_ref()),
        first,
        "the open connection keeps its session"
    );

    // A key that is not the certificate's: the reload is refused, naming it.
    let (_, other_key, _) = pki.leaf();
    std::fs::write(pki.key(), other_key).unwrap();
    let (status, body, _) = https(&pki, gateway.admin, "POST", "/-/reload", OPS_KEY, "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("tls.key"), "{body}");
    let (mut after, leaf) = wss(&gateway, &pki, "/demo/echo").await;
    assert_eq!(
        leaf, second,
        "a refused reload leaves the certificate in force"
    );
    assert_eq!(ask(&mut after, "after").await, "after");
}

/// Plain `ws://` and `http://` clients on the TLS listeners get a plain-text 400 that
/// says to use TLS; a broken TLS handshake is a debug line and a closed socket; the
/// listeners keep serving.
#[tokio::test]
async fn plain_clients_on_the_tls_ports_fail_cleanly() {
    let pki = Pki::new();
    let gateway = start(&pki).await;

    let plain_ws = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{}/demo/echo", gateway.ws)),
    )
    .await
    .expect("the plain upgrade attempt timed out");
    match plain_ws {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            assert!(body.contains("wss://"), "{body}");
        }
        Err(other) => panic!("expected an HTTP 400, got {other}"),
        Ok(_) => panic!("a plain upgrade succeeded on the TLS listener"),
    }
    let plain_http = tokio::time::timeout(
        WAIT,
        reqwest::get(format!("http://{}/health", gateway.admin)),
    )
    .await
    .expect("the plain HTTP request timed out")
    .expect("a plain client gets an answer it can read");
    assert_eq!(plain_http.status().as_u16(), 400);
    assert!(plain_http.text().await.unwrap().contains("https://"));

    // A client that starts a handshake and sends garbage.
    for addr in [gateway.ws, gateway.admin] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8])
            .await
            .unwrap();
        let mut rest = Vec::new();
        // The gateway closes it (after an alert, if rustls sends one).
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest))
            .await
            .expect("the gateway closes a broken handshake");
    }
    gateway
        .logs
        .wait_for("about the failed handshake", |l| {
            l.contains("TLS handshake failed")
        })
        .await;

    let (mut client, _) = wss(&gateway, &pki, "/demo/echo").await;
    assert_eq!(ask(&mut client, "still serving").await, "still serving");
    let (status, _, _) = https(&pki, gateway.admin, "GET", "/health", "", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        gateway.logs.count(|l| l.contains("panicked")),
        0,
        "{}",
        gateway.logs.all()
    );
}

/// The integration plugin's `aws` events carry `managementEndpoint`
/// `https://{domainName}/{stage}` when the gateway has TLS, and boto3 reaches the
/// connection there, verifying with the generated CA.
#[tokio::test]
async fn the_aws_integration_hands_backends_the_https_endpoint() {
    let pki = Pki::new();
    let backend =
        Backend::start(|_: &Seen| Reply::ok(json!({"statusCode": 200}).to_string())).await;
    let mut tenants = plugin(
        "t",
        "int",
        plugins::INTEGRATION,
        &format!(
            "allowed_outbound_hosts = [{:?}]\nconfig = {{ url = {:?}, shape = \"aws\" }}\n",
            backend.origin(),
            backend.url("/aws")
        ),
    );
    tenants.push_str(
        "[tenants.t.routes.\"/int\"]\nplugin = \"int\"\n\
         [tenants.t.credentials]\naws = [{ access_key_id = \"AKIDT\", secret_access_key = \"t-secret\" }]\n",
    );
    let gateway = Gateway::start_binary(&(config(&tenants) + &pki.section())).await;
    let (mut client, _) = wss(&gateway, &pki, "/t/int").await;
    let seen = backend.wait_for(1).await;
    let event: Value = serde_json::from_slice(&seen[0].body).unwrap();
    let context = &event["requestContext"];
    let endpoint = format!("https://{}/t", gateway.admin);
    assert_eq!(context["managementEndpoint"], endpoint, "{context}");
    assert_eq!(context["domainName"], gateway.admin.to_string());
    let id = context["connectionId"].as_str().unwrap();
    let results = boto3(&endpoint, id, &pki.ca_file(), "AKIDT", "t-secret").await;
    assert_eq!(results["untrusted_refused"], true, "{results}");
    assert_eq!(next_text(&mut client).await, "from boto3 over https");
}

/// A certificate file that does not exist stops start-up, naming the file, the key
/// `tls.cert` and the reason.
#[tokio::test]
async fn a_missing_certificate_stops_start_up() {
    let pki = Pki::new();
    std::fs::remove_file(pki.cert()).unwrap();
    let (code, stderr) = start_fails(&(standard_config() + &pki.section())).await;
    assert_ne!(code, 0);
    for part in [
        "bad.toml",
        "`tls.cert`",
        &pki.cert().display().to_string(),
        "No such file",
    ] {
        assert!(stderr.contains(part), "`{part}` missing from:\n{stderr}");
    }
}

/// A key that is not the certificate's stops start-up, naming both files, the key
/// `tls.key` and the reason.
#[tokio::test]
async fn a_key_that_does_not_match_stops_start_up() {
    let pki = Pki::new();
    let (_, other_key, _) = pki.leaf();
    std::fs::write(pki.key(), other_key).unwrap();
    let (code, stderr) = start_fails(&(standard_config() + &pki.section())).await;
    assert_ne!(code, 0);
    for part in [
        "bad.toml",
        "`tls.key`",
        &pki.key().display().to_string(),
        &pki.cert().display().to_string(),
        "does not go with",
    ] {
        assert!(stderr.contains(part), "`{part}` missing from:\n{stderr}");
    }
}

#[tokio::test]
async fn tls_stays_on_across_reloads_that_remove_it_until_a_restart() {
    let pki = Pki::new();
    let gateway = start(&pki).await;
    // The config without [tls], twice: turning TLS off waits for a restart, however
    // many reloads come in between.
    std::fs::write(gateway.config_file(), standard_config()).unwrap();
    for _ in 0..2 {
        let (status, body, _) = https(&pki, gateway.admin, "POST", "/-/reload", OPS_KEY, "").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("tls (on or off)"),
            "needs_restart lost TLS: {body}"
        );
        let (mut client, _) = wss(&gateway, &pki, "/demo/echo").await;
        assert_eq!(ask(&mut client, "still tls").await, "still tls");
    }
}
