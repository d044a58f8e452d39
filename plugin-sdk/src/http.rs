//! Outbound HTTP: call other services from a handler.
//!
//! ```no_run
//! use wsgate_sdk::http;
//!
//! # fn demo() -> Result<(), http::Error> {
//! let answer = http::post("https://auth.example.com/check", "application/json", r#"{"token":"t"}"#)?;
//! if answer.is_success() {
//!     let user = answer.text().unwrap_or_default();
//! #   let _ = user;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! - **Synchronous.** A call returns when the whole response (status, headers and body)
//!   has arrived. The gateway does not count the wait against the plugin's CPU time
//!   limit (`limits.timeout`); `limits.outbound_timeout` bounds the waiting of one event
//!   in all, and a call still waiting past it fails with [`Error::Timeout`].
//! - **Only granted origins.** A plugin reaches only the origins
//!   (`scheme://host:port`) listed in its `allowed_outbound_hosts` config; any other
//!   fails with [`Error::Denied`] before a connection is made.
//! - **Redirects** (301, 302, 303, 307, 308) are followed, at most [`MAX_REDIRECTS`]
//!   times, each hop a new request that the gateway checks against the grant again: a
//!   redirect to an origin not granted fails with [`Error::Denied`], and nothing is sent
//!   there. `authorization` and `cookie` are dropped when a hop changes origin. Turn it
//!   off with [`Request::no_redirects`] to see the 3xx itself.
//! - **Bounded answers.** A response body larger than `limits.max_outbound_body_bytes`
//!   fails with [`Error::TooLarge`].
//!
//! The gateway sets `Host` from the URL; a body is sent with its `content-length`.

use std::fmt;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    self, ErrorCode, Fields, HeaderError, IncomingBody, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// How many redirects one request follows before failing.
pub const MAX_REDIRECTS: usize = 5;

/// How much one `read` of a response body asks for.
const READ_CHUNK: u64 = 64 * 1024;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `PATCH`
    Patch,
    /// `HEAD`: the response has no body.
    Head,
    /// `OPTIONS`
    Options,
}

impl Method {
    fn to_wasi(self) -> types::Method {
        match self {
            Method::Get => types::Method::Get,
            Method::Post => types::Method::Post,
            Method::Put => types::Method::Put,
            Method::Delete => types::Method::Delete,
            Method::Patch => types::Method::Patch,
            Method::Head => types::Method::Head,
            Method::Options => types::Method::Options,
        }
    }
}

/// A request being built: `Request::new(..)`, then [`header`](Request::header) and
/// [`body`](Request::body) as needed, then [`send`](Request::send).
///
/// Nothing is checked until `send`, so building never fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    follow: bool,
}

impl Request {
    /// A request for `url`, an absolute `http://` or `https://` URL such as
    /// `https://api.example.com:8443/v1/items?page=2`. Anything after `#` is ignored.
    pub fn new(method: Method, url: &str) -> Request {
        Request {
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: None,
            follow: true,
        }
    }

    /// Returns a 3xx answer as it is instead of following it.
    pub fn no_redirects(mut self) -> Request {
        self.follow = false;
        self
    }

    /// Adds a header. Headers are sent in the order added, and adding a name twice sends
    /// it twice. `host` and `content-length` are refused ([`Error::InvalidHeader`]): the
    /// gateway sets `host` from the URL and the SDK sets `content-length` from the body.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Request {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body, sent with its `content-length`. Add a `content-type` header to say
    /// what it is.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// Sends the request and waits for the whole response: the same as [`request`].
    pub fn send(self) -> Result<Response, Error> {
        request(self)
    }
}

/// A complete response, body included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The headers in the order received, names lower-cased. Values are bytes because
    /// HTTP does not promise they are text; [`Response::header`] gives them as `&str`.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, empty if there was none.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive), or `None` if there is none or
    /// its value is not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The body as text, or `None` if it is not UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request failed. An HTTP error status (404, 500…) is not an `Error`: it is a
/// [`Response`] whose [`is_success`](Response::is_success) is false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL is not an absolute `http://` or `https://` URL, or has userinfo
    /// (`user@host`). Says which URL and why.
    InvalidUrl(String),
    /// A header name or value was refused: badly formed, or one the gateway or the SDK
    /// sets itself (`host`, `content-length`, `connection`, `transfer-encoding`…). Says
    /// which header and why.
    InvalidHeader(String),
    /// The gateway refused the destination: it is not among the origins in the plugin's
    /// `allowed_outbound_hosts` (or its address is one the gateway never calls). Nothing
    /// was sent.
    Denied,
    /// No complete answer in time: connecting took longer than
    /// `limits.outbound_connect_timeout`, or the event's `limits.outbound_timeout` ran
    /// out (waiting for a place under `max_outbound_requests`, for the answer or for
    /// its body).
    Timeout,
    /// The server could not be reached or dropped the connection: DNS failure, refused
    /// connection, TLS failure (e.g. an untrusted certificate). Says what happened.
    Unreachable(String),
    /// The response was larger than the gateway allows (`limits.max_outbound_body_bytes`
    /// for the body).
    TooLarge,
    /// Anything else, e.g. a malformed response. Carries the `wasi:http` error.
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl(why) => write!(f, "invalid URL: {why}"),
            Error::InvalidHeader(why) => write!(f, "invalid header: {why}"),
            Error::Denied => f.write_str(
                "request denied: the origin is not in the plugin's allowed_outbound_hosts",
            ),
            Error::Timeout => f.write_str("request timed out"),
            Error::Unreachable(why) => write!(f, "server unreachable: {why}"),
            Error::TooLarge => f.write_str("response too large"),
            Error::Failed(why) => write!(f, "request failed: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    fn from_code(code: ErrorCode) -> Error {
        use ErrorCode as C;
        match code {
            // A destination the gateway refuses by address is a denial too, just not by
            // name; the plugin author's remedy is the same (ask for a grant).
            C::HttpRequestDenied | C::DestinationIpProhibited => Error::Denied,
            // ConnectionLimitReached: the call waited for one of the plugin's
            // `max_outbound_requests` places until its time ran out.
            C::DnsTimeout
            | C::ConnectionTimeout
            | C::ConnectionReadTimeout
            | C::ConnectionWriteTimeout
            | C::ConnectionLimitReached
            | C::HttpResponseTimeout => Error::Timeout,
            C::DnsError(dns) => {
                let mut why = String::from("DNS lookup failed");
                if let Some(rcode) = dns.rcode {
                    why.push_str(": ");
                    why.push_str(&rcode);
                }
                Error::Unreachable(why)
            }
            C::DestinationNotFound => Error::Unreachable("destination not found".into()),
            C::DestinationUnavailable => Error::Unreachable("destination unavailable".into()),
            C::DestinationIpUnroutable => Error::Unreachable("destination unroutable".into()),
            C::ConnectionRefused => Error::Unreachable("connection refused".into()),
            C::ConnectionTerminated => Error::Unreachable("connection terminated".into()),
            C::TlsProtocolError => Error::Unreachable("TLS protocol error".into()),
            C::TlsCertificateError => Error::Unreachable("TLS certificate error".into()),
            C::TlsAlertReceived(alert) => Error::Unreachable(match alert.alert_message {
                Some(message) => format!("TLS alert: {message}"),
                None => "TLS alert received".into(),
            }),
            // Any answer part over a gateway limit; in practice the body.
            C::HttpResponseBodySize(_)
            | C::HttpResponseHeaderSectionSize(_)
            | C::HttpResponseHeaderSize(_)
            | C::HttpResponseTrailerSectionSize(_)
            | C::HttpResponseTrailerSize(_) => Error::TooLarge,
            // Request-side refusals, protocol errors and internal errors: nothing more
            // specific to say than the code itself.
            other => Error::Failed(format!("{other:?}")),
        }
    }

    /// A body stream failed. The error is an `ErrorCode` when the host made it so;
    /// otherwise only its text is left (a size cap or deadline hit mid-body arrives that
    /// way), so recognise the cases a plugin must tell apart from the wording.
    fn from_stream(error: types::IoError) -> Error {
        if let Some(code) = types::http_error_code(&error) {
            return Error::from_code(code);
        }
        let text = error.to_debug_string();
        let lower = text.to_ascii_lowercase();
        if lower.contains("body size exceeds limit") {
            Error::TooLarge
        } else if lower.contains("timeout") || lower.contains("timed out") {
            Error::Timeout
        } else {
            Error::Failed(text)
        }
    }
}

/// Sends `request` and waits for the whole response.
///
/// The call blocks the handler, not the gateway: the wait does not count against the
/// plugin's CPU time limit, and `limits.outbound_timeout` bounds it. Only origins in
/// the plugin's `allowed_outbound_hosts` are reachable ([`Error::Denied`] otherwise).
pub fn request(mut request: Request) -> Result<Response, Error> {
    for _ in 0..=MAX_REDIRECTS {
        let response = send_once(&request)?;
        let location = match response.status {
            301 | 302 | 303 | 307 | 308 if request.follow => response.header("location"),
            _ => None,
        };
        let Some(location) = location else {
            return Ok(response);
        };
        let next = resolve(&request.url, location)?;
        if origin(&next) != origin(&request.url) {
            request.headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case("authorization") && !name.eq_ignore_ascii_case("cookie")
            });
        }
        // As browsers do: 303 always, and 301/302 after a POST, continue as a GET.
        if response.status == 303
            || (matches!(response.status, 301 | 302) && request.method == Method::Post)
        {
            request.method = Method::Get;
            request.body = None;
            request
                .headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        }
        request.url = next;
    }
    Err(Error::Failed(format!(
        "more than {MAX_REDIRECTS} redirects, the last to {}",
        request.url
    )))
}

/// `scheme://authority` of an absolute URL, lower-cased, for comparing origins.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    format!("{}://{}", scheme, &rest[..end]).to_ascii_lowercase()
}

/// The absolute URL a `location` header points at, from the request's `base`.
fn resolve(base: &str, location: &str) -> Result<String, Error> {
    let location = location.trim();
    if location.contains("://") {
        return Ok(location.to_owned());
    }
    let (scheme, _) = base
        .split_once("://")
        .ok_or_else(|| Error::InvalidUrl(format!("{base:?}: not absolute")))?;
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    let origin = &base[..origin(base).len()];
    if location.starts_with('/') {
        return Ok(format!("{origin}{location}"));
    }
    let path = &base[origin.len()..];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    Ok(format!("{origin}{dir}{location}"))
}

/// One request, no redirect followed.
fn send_once(request: &Request) -> Result<Response, Error> {
    let url = parse_url(&request.url)?;
    let headers = Fields::new();
    for (name, value) in &request.headers {
        // Refused here too, whatever the host's list of forbidden headers: a plugin-set
        // `host` could disagree with the URL, a plugin-set length with the body.
        if name.eq_ignore_ascii_case("host") {
            return Err(Error::InvalidHeader(format!(
                "{name:?} is set by the gateway from the URL"
            )));
        }
        if name.eq_ignore_ascii_case("content-length") {
            return Err(Error::InvalidHeader(format!(
                "{name:?} is set from the body"
            )));
        }
        headers
            .append(name, value)
            .map_err(|e| header_error(name, e))?;
    }
    if let Some(body) = &request.body {
        headers
            .set("content-length", &[body.len().to_string().into_bytes()])
            .map_err(|e| header_error("content-length", e))?;
    }

    let outgoing = OutgoingRequest::new(headers);
    let invalid = |what: &str| Error::InvalidUrl(format!("{:?}: {what} refused", request.url));
    outgoing
        .set_method(&request.method.to_wasi())
        .map_err(|()| Error::Failed("method refused".into()))?;
    outgoing
        .set_scheme(Some(&url.scheme))
        .map_err(|()| invalid("scheme"))?;
    outgoing
        .set_authority(Some(url.authority))
        .map_err(|()| invalid("host and port"))?;
    outgoing
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| invalid("path"))?;
    let body = outgoing
        .body()
        .map_err(|()| Error::Failed("request body unavailable".into()))?;
    let bytes = request.body.as_deref().unwrap_or_default();
    // The body's stream, with the room its first `check-write` found.
    let pending = match bytes.is_empty() {
        true => None,
        false => {
            let stream = body
                .write()
                .map_err(|()| Error::Failed("request body stream unavailable".into()))?;
            let room = stream.check_write();
            Some((stream, room))
        }
    };
    // A body that one write takes (up to 1 MiB, as any usual event) is written and
    // finished before the request is handed over, so that the host finds it whole and
    // sends a small one with the head. A larger one is written after: until the request
    // is under way the host queues two writes and no more, so writing it all first
    // could wait for ever.
    let fits = match &pending {
        None => true,
        Some((_, Ok(room))) => usize::try_from(*room).unwrap_or(usize::MAX) >= bytes.len(),
        Some((_, Err(_))) => false,
    };
    let hand_over = || outgoing_handler::handle(outgoing, None).map_err(Error::from_code);
    let (future, (cut_short, finished)) = if fits {
        let sent = send_body(body, pending, bytes)?;
        (hand_over()?, sent)
    } else {
        let future = hand_over()?;
        (future, send_body(body, pending, bytes)?)
    };
    // If the server stopped reading early, fewer bytes than `content-length` went out
    // and `finish` says so; the response (or its error) is the news that matters then.
    if let Err(code) = finished
        && !cut_short
    {
        return Err(Error::from_code(code));
    }

    // The wait. `block` (wasi:io/poll) is where the gateway accounts waiting as waiting
    // rather than computing.
    let pollable = future.subscribe();
    let answer = loop {
        pollable.block();
        if let Some(answer) = future.get() {
            break answer;
        }
    };
    drop(pollable);
    let response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => return Err(Error::from_code(code)),
        Err(()) => return Err(Error::Failed("response already taken".into())),
    };

    let status = response.status();
    let fields = response.headers();
    let headers = fields.entries();
    drop(fields);
    let incoming = response
        .consume()
        .map_err(|()| Error::Failed("response body unavailable".into()))?;
    let stream = incoming
        .stream()
        .map_err(|()| Error::Failed("response body stream unavailable".into()))?;
    let body = read_all(&stream);
    // Children before parents, or the host refuses the drop.
    drop(stream);
    drop(IncomingBody::finish(incoming));
    drop(response);
    drop(future);
    Ok(Response {
        status,
        headers,
        body: body?,
    })
}

/// A `GET` of `url`.
pub fn get(url: &str) -> Result<Response, Error> {
    Request::new(Method::Get, url).send()
}

/// A `POST` of `body` to `url`, with `content-type: <content_type>`.
pub fn post(url: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Result<Response, Error> {
    Request::new(Method::Post, url)
        .header("content-type", content_type)
        .body(body)
        .send()
}

/// Writes the body (if any) into its stream, drops the stream and finishes the body.
/// Returns whether the stream closed before all was written, and what `finish` said.
fn send_body(
    body: OutgoingBody,
    pending: Option<(OutputStream, Result<u64, StreamError>)>,
    bytes: &[u8],
) -> Result<(bool, Result<(), ErrorCode>), Error> {
    let mut cut_short = false;
    if let Some((stream, room)) = pending {
        cut_short = write_all(&stream, bytes, room)?;
        drop(stream); // a child of `body`: it must go before `finish`
    }
    Ok((cut_short, OutgoingBody::finish(body, None)))
}

/// Writes `bytes` as fast as the host takes them, starting from the room a
/// `check-write` already found. Returns whether the stream closed before all was
/// written (the server answered without reading it all, or the connection failed:
/// either way the response tells).
///
/// Waits through `subscribe` + `block`, never `blocking_write_and_flush`: only waits in
/// wasi:io/poll are known to the gateway as waits; the pollable is made only once the
/// stream is full, which a usual body never makes it. No `flush` either: the host's
/// body stream does not buffer, and `flush` reports `Closed` once the server is done
/// with the body even when every byte arrived.
fn write_all(
    stream: &OutputStream,
    mut bytes: &[u8],
    room: Result<u64, StreamError>,
) -> Result<bool, Error> {
    let mut checked = Some(room);
    let mut pollable = None;
    let result = loop {
        if bytes.is_empty() {
            break Ok(false);
        }
        let room = match checked.take().unwrap_or_else(|| stream.check_write()) {
            Ok(0) => {
                pollable.get_or_insert_with(|| stream.subscribe()).block();
                continue;
            }
            Ok(room) => usize::try_from(room).unwrap_or(usize::MAX),
            Err(StreamError::Closed) => break Ok(true),
            Err(StreamError::LastOperationFailed(e)) => break Err(Error::from_stream(e)),
        };
        let (chunk, rest) = bytes.split_at(bytes.len().min(room));
        match stream.write(chunk) {
            Ok(()) => bytes = rest,
            Err(StreamError::Closed) => break Ok(true),
            Err(StreamError::LastOperationFailed(e)) => break Err(Error::from_stream(e)),
        }
    };
    drop(pollable);
    result
}

/// Reads a response body to its end, waiting through `subscribe` + `block`.
fn read_all(stream: &InputStream) -> Result<Vec<u8>, Error> {
    let pollable = stream.subscribe();
    let mut body = Vec::new();
    // Read first, wait only when nothing is there: an answer's body has often
    // arrived with its head, and then no `block` call is made for it.
    let result = loop {
        match stream.read(READ_CHUNK) {
            Ok(chunk) if chunk.is_empty() => pollable.block(),
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break Ok(body),
            Err(StreamError::LastOperationFailed(e)) => break Err(Error::from_stream(e)),
        }
    };
    drop(pollable);
    result
}

fn header_error(name: &str, error: HeaderError) -> Error {
    Error::InvalidHeader(match error {
        HeaderError::Forbidden => format!("{name:?} is set by the gateway, not the plugin"),
        HeaderError::InvalidSyntax => format!("{name:?}: bad name or value"),
        HeaderError::Immutable => format!("{name:?}: headers cannot be changed"),
    })
}

/// A URL split the way wasi:http wants it.
#[derive(Debug)]
struct Url<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_with_query: String,
}

/// Splits `scheme://host[:port][/path][?query][#fragment]`. Done here rather than left to
/// the host so that a bad URL gets a message that says what is wrong, and so that
/// userinfo never reaches the host: `user@host` hides the real host from a reader.
fn parse_url(url: &str) -> Result<Url<'_>, Error> {
    let bad = |why: &str| Error::InvalidUrl(format!("{url:?}: {why}"));
    if let Some(c) = url.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(bad(&format!(
            "{c:?} is not allowed; percent-encode spaces and non-ASCII characters"
        )));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected an absolute URL such as https://host/path"))?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        return Err(bad("the scheme must be http or https"));
    };
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_with_query) = rest.split_at(split);
    if authority.contains('@') {
        return Err(bad("userinfo (user@) is not allowed"));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| bad("expected host[:port]"))?;
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(bad("the port must be a number from 0 to 65535"));
    }
    let path_with_query = match path_with_query.as_bytes().first() {
        None => "/".to_owned(),
        Some(b'?') => format!("/{path_with_query}"),
        Some(_) => path_with_query.to_owned(),
    };
    Ok(Url {
        scheme,
        authority,
        path_with_query,
    })
}

/// `host[:port]`, where host may be a bracketed IPv6 address. `None` if malformed.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, after) = authority.split_at(end + 1);
        let valid = host[1..end]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        if !valid {
            return None;
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        // RFC 3986 reg-name: unreserved, sub-delims and percent-escapes.
        let valid = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=".contains(c));
        if !valid {
            return None;
        }
        (host, port)
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, String, String) {
        let url = parse_url(url).unwrap();
        (
            format!("{:?}", url.scheme),
            url.authority.to_owned(),
            url.path_with_query,
        )
    }

    #[test]
    fn splits_urls() {
        let http = "Scheme::Http".to_owned();
        let https = "Scheme::Https".to_owned();
        let s = |x: &str| x.to_owned();
        assert_eq!(parts("http://h"), (http.clone(), s("h"), s("/")));
        assert_eq!(parts("HTTPS://h:8443"), (https, s("h:8443"), s("/")));
        assert_eq!(parts("http://h?q=1"), (http.clone(), s("h"), s("/?q=1")));
        assert_eq!(
            parts("http://127.0.0.1:80/a/b?c=d#frag"),
            (http.clone(), s("127.0.0.1:80"), s("/a/b?c=d"))
        );
        assert_eq!(parts("http://[::1]:7/x"), (http, s("[::1]:7"), s("/x")));
    }

    #[test]
    fn refuses_bad_urls() {
        for url in [
            "",
            "h/path",
            "ftp://h/",
            "http://",
            "http:///x",
            "http://user@h/",
            "http://user:pw@h/",
            "http://h:/",
            "http://h:99999/",
            "http://h:8a/",
            "http://h p/",
            "http://h/a b",
            "http://hé/",
            "http://[::1/",
            "http://[::1]x/",
            "http://h\\x/",
        ] {
            assert!(
                matches!(parse_url(url), Err(Error::InvalidUrl(_))),
                "{url:?} was accepted"
            );
        }
    }

    #[test]
    fn redirects_resolve_against_the_request() {
        let base = "http://127.0.0.1:7070/a/b?x=1";
        assert_eq!(
            resolve(base, "http://other:1/z").unwrap(),
            "http://other:1/z"
        );
        assert_eq!(resolve(base, "//other/z").unwrap(), "http://other/z");
        assert_eq!(resolve(base, "/z?q").unwrap(), "http://127.0.0.1:7070/z?q");
        assert_eq!(resolve(base, "c").unwrap(), "http://127.0.0.1:7070/a/c");
        assert_eq!(origin("HTTP://H:1/x"), "http://h:1");
        assert_ne!(origin("http://h:1/x"), origin("http://h:2/x"));
    }

    #[test]
    fn response_helpers() {
        let response = Response {
            status: 204,
            headers: vec![
                ("content-type".into(), b"text/plain".to_vec()),
                ("x-bin".into(), vec![0xff]),
                ("content-type".into(), b"second".to_vec()),
            ],
            body: b"hi".to_vec(),
        };
        assert_eq!(response.header("Content-Type"), Some("text/plain"));
        assert_eq!(response.header("x-bin"), None);
        assert_eq!(response.header("missing"), None);
        assert_eq!(response.text(), Some("hi"));
        assert!(response.is_success());
        assert!(
            !Response {
                status: 302,
                ..response
            }
            .is_success()
        );
    }
}
