//! The HTTP side of a WebSocket connection: reading the upgrade request under size and
//! time limits, checking it against RFC 6455, and writing the 101 or an error response.
//!
//! The gateway parses the request itself (with `httparse`, the parser inside hyper) so
//! that it can route, run the `$connect` plugin and answer with any status before the
//! upgrade, and then hand the stream (TCP, or TLS over it) to tungstenite with no extra
//! layer.

use std::fmt::Write as _;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Most headers accepted in one request.
const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target as sent: path and query.
    pub uri: String,
    /// Whether the request is HTTP/1.1 (WebSocket requires it).
    pub http11: bool,
    /// Headers in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        self.uri.split_once('?').map_or(&self.uri, |(path, _)| path)
    }

    /// The query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.uri.split_once('?').map(|(_, query)| query)
    }

    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every comma-separated token of every header called `name`, trimmed.
    pub fn header_tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The head is larger than the limit or has too many headers.
    #[error("request head too large")]
    TooLarge,
    /// Not HTTP.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// The client closed or the socket failed before a whole head arrived.
    #[error("connection closed before a complete request: {0}")]
    Io(#[from] std::io::Error),
}

/// A request head arriving in pieces. It is parsed only when a piece brings the blank
/// line that ends a head (and once at the start, so that a client speaking something
/// else than HTTP is refused at once): parsing again after every read would cost time
/// quadratic in the head's size, and a 12 KB head sent 2 bytes at a time cost 90 ms of
/// CPU that way.
#[derive(Debug, Default)]
pub struct HeadBuffer {
    /// The bytes read so far.
    buf: Vec<u8>,
    /// How far the search for the blank line has gone.
    scanned: usize,
    /// How many times the head was parsed (for tests).
    parses: u32,
}

impl HeadBuffer {
    /// Where bytes are read into.
    pub fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Looks at what arrived since the last call: the whole request and the bytes past
    /// its head once it is complete, `None` while it is not, or why it can never be.
    pub fn complete(&mut self, max_bytes: usize) -> Result<Option<(Request, Vec<u8>)>, ReadError> {
        let first = self.parses == 0;
        // A terminator may straddle the previous read: look back three bytes.
        let from = self.scanned.saturating_sub(3);
        let ended = self.buf[from..]
            .windows(2)
            .any(|pair| pair == b"\n\n" || pair == b"\n\r");
        self.scanned = self.buf.len();
        if !first && !ended {
            return self.partial(max_bytes);
        }
        self.parses += 1;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => {
                let request = Request {
                    method: parsed.method.unwrap_or_default().to_owned(),
                    uri: parsed.path.unwrap_or_default().to_owned(),
                    http11: parsed.version == Some(1),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                };
                Ok(Some((request, self.buf[len..].to_vec())))
            }
            Ok(httparse::Status::Partial) => self.partial(max_bytes),
            Err(httparse::Error::TooManyHeaders) => Err(ReadError::TooLarge),
            Err(err) => Err(ReadError::Malformed(err.to_string())),
        }
    }

    fn partial(&self, max_bytes: usize) -> Result<Option<(Request, Vec<u8>)>, ReadError> {
        if self.buf.len() >= max_bytes {
            Err(ReadError::TooLarge)
        } else {
            Ok(None)
        }
    }
}

/// Reads one request head of at most `max_bytes`. Returns it and any bytes read past it.
pub async fn read_request(
    stream: &mut (impl AsyncRead + Unpin),
    max_bytes: usize,
) -> Result<(Request, Vec<u8>), ReadError> {
    let mut head = HeadBuffer::default();
    head.buf_mut().reserve(1024);
    loop {
        let room = max_bytes.saturating_sub(head.buf.len()).max(1);
        let n = (&mut *stream)
            .take(room as u64)
            .read_buf(head.buf_mut())
            .await?;
        if n == 0 {
            return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some(complete) = head.complete(max_bytes)? {
            return Ok(complete);
        }
    }
}

/// An HTTP answer that ends the exchange instead of an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// A text body saying what is wrong.
    pub body: String,
}

impl Refusal {
    /// A refusal with a text body and no extra header.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The same refusal with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Checks the request is a valid RFC 6455 opening handshake; returns the client's key.
pub fn websocket_key(request: &Request) -> Result<&str, Refusal> {
    let upgrade = request
        .header_tokens("upgrade")
        .any(|t| t.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        let mut refusal = Refusal::new(
            426,
            "this is a WebSocket endpoint: send a GET with `Upgrade: websocket`\n",
        );
        refusal.headers.push(("upgrade".into(), "websocket".into()));
        return Err(refusal);
    }
    if request.method != "GET" {
        return Err(Refusal::new(
            400,
            "a WebSocket upgrade must use the GET method\n",
        ));
    }
    if !request.http11 {
        return Err(Refusal::new(400, "a WebSocket upgrade requires HTTP/1.1\n"));
    }
    if !request
        .header_tokens("connection")
        .any(|t| t.eq_ignore_ascii_case("upgrade"))
    {
        return Err(Refusal::new(
            400,
            "a WebSocket upgrade needs `Connection: Upgrade`\n",
        ));
    }
    if request.header("sec-websocket-version").map(str::trim) != Some("13") {
        let mut refusal = Refusal::new(
            426,
            "unsupported WebSocket version: this server speaks version 13\n",
        );
        refusal
            .headers
            .push(("sec-websocket-version".into(), "13".into()));
        return Err(refusal);
    }
    match request.header("sec-websocket-key").map(str::trim) {
        Some(key) if valid_key(key) => Ok(key),
        _ => Err(Refusal::new(
            400,
            "missing or malformed Sec-WebSocket-Key: it must be 16 bytes in base64\n",
        )),
    }
}

/// A base64 encoding of 16 bytes: 22 alphabet characters then `==`.
fn valid_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Checks a header a plugin wants to send: a valid name and a value with no line break.
pub fn valid_header(name: &str, value: &str) -> bool {
    http::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && http::HeaderValue::from_str(value).is_ok()
}

/// The `101 Switching Protocols` response.
pub fn switching_protocols(
    key: &str,
    subprotocol: Option<&str>,
    headers: &[(String, String)],
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
    );
    let _ = write!(
        out,
        "sec-websocket-accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(protocol) = subprotocol {
        let _ = write!(out, "sec-websocket-protocol: {protocol}\r\n");
    }
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("\r\n");
    out
}

/// A complete response that closes the connection.
pub fn response(refusal: &Refusal) -> String {
    let reason = http::StatusCode::from_u16(refusal.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = String::with_capacity(128 + refusal.body.len());
    let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", refusal.status);
    let has_type = refusal
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if !has_type {
        out.push_str("content-type: text/plain; charset=utf-8\r\n");
    }
    for (name, value) in &refusal.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(
        out,
        "content-length: {}\r\nconnection: close\r\n\r\n{}",
        refusal.body.len(),
        refusal.body
    );
    out
}

/// Writes a response and closes the write side (under TLS, after a close_notify).
pub async fn respond(stream: &mut (impl AsyncWrite + Unpin), refusal: &Refusal) {
    let bytes = response(refusal);
    // The client may already be gone; there is nobody left to tell.
    let _ = stream.write_all(bytes.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            uri: "/demo/echo?x=1".into(),
            http11: true,
            headers: lines
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    const GOOD: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn accepts_the_rfc_example_and_derives_its_accept_key() {
        let req = request(GOOD);
        let key = websocket_key(&req).unwrap();
        let response = switching_protocols(key, Some("chat"), &[("x-a".into(), "b".into())]);
        assert!(response.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.contains("sec-websocket-protocol: chat\r\n"));
        assert!(response.ends_with("x-a: b\r\n\r\n"));
        assert_eq!(req.path(), "/demo/echo");
        assert_eq!(req.query(), Some("x=1"));
    }

    #[test]
    fn refuses_malformed_upgrades() {
        let without = |name: &str| {
            request(
                &GOOD
                    .iter()
                    .copied()
                    .filter(|(n, _)| *n != name)
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(websocket_key(&without("upgrade")).unwrap_err().status, 426);
        assert_eq!(
            websocket_key(&without("connection")).unwrap_err().status,
            400
        );
        assert_eq!(
            websocket_key(&without("sec-websocket-key"))
                .unwrap_err()
                .status,
            400
        );
        let old = websocket_key(&without("sec-websocket-version")).unwrap_err();
        assert_eq!(old.status, 426);
        assert!(
            old.headers
                .contains(&("sec-websocket-version".into(), "13".into()))
        );
        let mut bad_key = request(GOOD);
        bad_key.headers[3].1 = "short".into();
        assert_eq!(websocket_key(&bad_key).unwrap_err().status, 400);
        let mut post = request(GOOD);
        post.method = "POST".into();
        assert_eq!(websocket_key(&post).unwrap_err().status, 400);
    }

    #[test]
    fn refusal_response_is_complete_http() {
        let text = response(&Refusal::new(404, "no such route\n"));
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("content-length: 14\r\n"));
        assert!(text.ends_with("\r\n\r\nno such route\n"));
    }

    fn head(extra_headers: usize) -> Vec<u8> {
        let mut text = String::from("GET /demo/echo?x=1 HTTP/1.1\r\nHost: a\r\n");
        for i in 0..extra_headers {
            text.push_str(&format!("x-filler-{i}: {}\r\n", "v".repeat(200)));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }

    /// Feeds `bytes` in pieces of `piece`; returns the result and the parses it took.
    fn feed(bytes: &[u8], piece: usize) -> (Result<(Request, Vec<u8>), String>, u32) {
        let mut buffer = HeadBuffer::default();
        for chunk in bytes.chunks(piece) {
            buffer.buf_mut().extend_from_slice(chunk);
            match buffer.complete(64 * 1024) {
                Ok(Some(done)) => return (Ok(done), buffer.parses),
                Ok(None) => {}
                Err(err) => return (Err(err.to_string()), buffer.parses),
            }
        }
        (Err("incomplete".into()), buffer.parses)
    }

    #[test]
    fn a_head_sent_in_tiny_pieces_is_parsed_once_at_its_end() {
        let bytes = head(60); // about 12 KB
        assert!(bytes.len() > 12_000);
        let (request, parses) = feed(&bytes, 2);
        let (request, leftover) = request.unwrap();
        assert_eq!(request.headers.len(), 61);
        assert!(leftover.is_empty());
        assert!(parses <= 2, "parsed {parses} times");
    }

    #[test]
    fn garbage_is_refused_at_the_first_read_and_oversize_heads_at_the_cap() {
        let (result, _) = feed(b"\x16\x03\x01 not http at all", 64);
        assert!(result.unwrap_err().contains("malformed"));
        let mut buffer = HeadBuffer::default();
        buffer.buf_mut().extend_from_slice(&head(60)[..5000]);
        assert!(
            buffer.complete(5000).is_err(),
            "over the cap without an end"
        );
    }

    #[test]
    fn header_injection_is_refused() {
        assert!(valid_header("x-ok", "fine"));
        assert!(!valid_header("x-bad", "a\r\nset-cookie: x"));
        assert!(!valid_header("bad name", "v"));
    }
}
