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
//!
//! A request is one call of the gateway's `wsgate:plugin/http-client` import: the request
//! goes in whole and the whole answer comes back. [`Request::via_wasi_http`] sends it
//! through the standard `wasi:http/outgoing-handler` instead (about thirty host calls per
//! request), with the same grant, limits and answers.

use std::fmt;

use crate::bindings::wsgate::plugin::http_client;

mod wasi;

/// How many redirects one request follows before failing.
pub const MAX_REDIRECTS: usize = 5;

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
    /// The method's name, as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
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
    wasi_http: bool,
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
            wasi_http: false,
        }
    }

    /// Returns a 3xx answer as it is instead of following it.
    pub fn no_redirects(mut self) -> Request {
        self.follow = false;
        self
    }

    /// Sends through the standard `wasi:http/outgoing-handler` interface instead of
    /// the gateway's one-call `wsgate:plugin/http-client`: the same grant, limits and
    /// answers, at several times the host calls per request. For plugins that must
    /// also run on hosts other than wsgate, and for testing the gateway's `wasi:http`.
    pub fn via_wasi_http(mut self) -> Request {
        self.wasi_http = true;
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

/// Sends `request` and waits for the whole response.
///
/// The call blocks the handler, not the gateway: the wait does not count against the
/// plugin's CPU time limit, and `limits.outbound_timeout` bounds it. Only origins in
/// the plugin's `allowed_outbound_hosts` are reachable ([`Error::Denied`] otherwise).
pub fn request(mut request: Request) -> Result<Response, Error> {
    for _ in 0..=MAX_REDIRECTS {
        let response = match request.wasi_http {
            true => wasi::send_once(&request)?,
            false => send_once(&mut request)?,
        };
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

/// One request through `wsgate:plugin/http-client`, no redirect followed. The
/// request's parts are lent to the call and put back, for a redirect to reuse.
fn send_once(request: &mut Request) -> Result<Response, Error> {
    // The gateway checks the URL and the headers itself; these two are refused here
    // with the reason in this API's terms.
    refuse_own_headers(&request.headers)?;
    let wire = http_client::Request {
        method: request.method.as_str().to_owned(),
        url: std::mem::take(&mut request.url),
        headers: std::mem::take(&mut request.headers),
        body: request.body.take(),
    };
    let answer = http_client::send(&wire);
    request.url = wire.url;
    request.headers = wire.headers;
    request.body = wire.body;
    match answer {
        Ok(response) => Ok(Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
        }),
        Err(error) => Err(match error {
            http_client::Error::InvalidUrl(why) => Error::InvalidUrl(why),
            http_client::Error::InvalidHeader(why) => Error::InvalidHeader(why),
            http_client::Error::Denied => Error::Denied,
            http_client::Error::Timeout => Error::Timeout,
            http_client::Error::Unreachable(why) => Error::Unreachable(why),
            http_client::Error::TooLarge => Error::TooLarge,
            http_client::Error::Failed(why) => Error::Failed(why),
        }),
    }
}

/// Refuses `host` and `content-length`, whatever the host's list of forbidden headers:
/// a plugin-set `host` could disagree with the URL, a plugin-set length with the body.
fn refuse_own_headers(headers: &[(String, Vec<u8>)]) -> Result<(), Error> {
    for (name, _) in headers {
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
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
