//! `wsgate:plugin/http-client`: outbound HTTP in one host call. The request arrives
//! whole, goes through the same grant check, places, pooled client, deadline and body
//! cap as a `wasi:http` request (`outbound`), and the whole response goes back: one
//! lift, one lower and one accounted wait (`wait`) instead of the thirty-odd resource
//! calls, streams and pollables a `wasi:http` request takes.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::Error as Code;

use super::bindings::wsgate::plugin::http_client::{self, Error, Request, Response};
use super::call::HostCall;
use super::wait::Waiter;
use crate::metrics::Import;

/// Whether a plugin may not set request header `name`: those `wasi:http` refuses
/// (`host`, written from the checked URL, and the hop-by-hop ones, which belong to the
/// gateway's connection), and the length, which is the body's.
fn forbidden(name: &HeaderName) -> bool {
    *name == http::header::CONTENT_LENGTH
        || wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
}

/// At most this many bytes of request header names and values in one request, as
/// wasi:http's own field limit bounds a `wasi:http` request's headers.
const MAX_HEADER_BYTES: usize = 128 * 1024;

impl http_client::Host for HostCall<'_> {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, Error>> {
        let state = self.enter(Import::HttpSend)?;
        let outbound = state.scope.outbound.clone();
        let request = match build(request) {
            Ok(request) => request,
            Err(error) => return Ok(Err(error)),
        };
        let Some(admitted) =
            outbound.admit(request.method(), request.uri(), state.event.waits_until)
        else {
            return Ok(Err(Error::Denied));
        };
        let open = state.hooks.open.clone();
        let mut waiter = Waiter::of(state);
        let started = waiter.begin();
        let answer = outbound.send_whole(request, admitted, open).await;
        waiter.end(started).await?;
        Ok(match answer {
            Ok((parts, body)) => Ok(Response {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                    .collect(),
                // No copy when the answer's body is one buffer of its own.
                body: Vec::from(body),
            }),
            Err(code) => Err(error_of(code)),
        })
    }
}

/// The `http::Request` of a guest's request, or why it cannot be sent.
fn build(request: Request) -> Result<http::Request<wasmtime_wasi_http::WasiBody>, Error> {
    let method = http::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| Error::InvalidUrl(format!("method {:?} is not a token", request.method)))?;
    let url = request.url.split('#').next().unwrap_or_default();
    let bad = |why: &str| Error::InvalidUrl(format!("{url:?}: {why}"));
    let uri = http::Uri::try_from(url).map_err(|e| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("expected an absolute http:// or https:// URL")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("the URL has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad("userinfo (user@) is not allowed"));
    }
    if authority.host().is_empty() {
        return Err(bad("the host is empty"));
    }
    let mut builder = http::Request::builder().method(method).uri(uri);
    let mut header_bytes = 0usize;
    for (name, value) in &request.headers {
        header_bytes = header_bytes.saturating_add(name.len() + value.len());
        if header_bytes > MAX_HEADER_BYTES {
            return Err(Error::InvalidHeader(format!(
                "the headers are over {MAX_HEADER_BYTES} bytes in all"
            )));
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::InvalidHeader(format!("{name:?}: not a header name")))?;
        if forbidden(&name) {
            return Err(Error::InvalidHeader(format!(
                "{:?} is set by the gateway, not the plugin",
                name.as_str()
            )));
        }
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| Error::InvalidHeader(format!("{:?}: bad value", name.as_str())))?;
        builder = builder.header(name, value);
    }
    let body = request.body.unwrap_or_default();
    if !body.is_empty() || matches!(request.method.as_str(), "POST" | "PUT" | "PATCH") {
        builder = builder.header(http::header::CONTENT_LENGTH, body.len());
    }
    let body = Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed_unsync();
    builder
        .body(body)
        .map_err(|e| Error::Failed(format!("the request could not be built: {e}")))
}

/// What the guest is told of a failed call: the SDK's error kinds, each with the
/// detail a plugin author needs.
fn error_of(code: Code) -> Error {
    match code {
        Code::HttpRequestDenied | Code::DestinationIpProhibited => Error::Denied,
        // ConnectionLimitReached: the call waited for one of the plugin's
        // `max_outbound_requests` places until its time ran out.
        Code::DnsTimeout
        | Code::ConnectionTimeout
        | Code::ConnectionReadTimeout
        | Code::ConnectionWriteTimeout
        | Code::ConnectionLimitReached
        | Code::HttpResponseTimeout => Error::Timeout,
        Code::DnsError { rcode, .. } => Error::Unreachable(match rcode {
            Some(rcode) => format!("DNS lookup failed: {rcode}"),
            None => "DNS lookup failed".into(),
        }),
        Code::ConnectionRefused => Error::Unreachable("connection refused".into()),
        Code::ConnectionTerminated => Error::Unreachable("connection terminated".into()),
        Code::TlsCertificateError => Error::Unreachable("TLS certificate error".into()),
        Code::HttpResponseBodySize(_) => Error::TooLarge,
        Code::Hyper(err) if err.is_incomplete_message() || err.is_canceled() => {
            Error::Unreachable(format!("connection terminated: {err}"))
        }
        other => Error::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: None,
        }
    }

    fn refused(request: Request) -> Error {
        match build(request) {
            Ok(built) => panic!("built {built:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn builds_what_is_well_formed() {
        let built = build(Request {
            body: Some(b"hello".to_vec()),
            ..request(
                "POST",
                "http://h:1/a?b=c#frag",
                &[("X-A", "1"), ("x-a", "2")],
            )
        })
        .unwrap();
        assert_eq!(built.method(), http::Method::POST);
        assert_eq!(built.uri(), "http://h:1/a?b=c");
        let values: Vec<_> = built.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(built.headers()["content-length"], "5");
        // No body: no length on a GET, a zero one where a body is expected.
        let get = build(request("GET", "https://h/", &[])).unwrap();
        assert!(get.headers().get("content-length").is_none());
        let post = build(request("POST", "https://h/", &[])).unwrap();
        assert_eq!(post.headers()["content-length"], "0");
    }

    #[test]
    fn refuses_what_the_gateway_sets_or_cannot_send() {
        let headers = wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS;
        let names = headers.iter().map(|n| n.as_str()).chain(["content-length"]);
        for name in names {
            let upper = name.to_ascii_uppercase();
            for name in [name, upper.as_str()] {
                let error = refused(request("GET", "http://h/", &[(name, "x")]));
                assert!(
                    matches!(&error, Error::InvalidHeader(why) if why.contains(&name.to_ascii_lowercase())),
                    "{name}: {error:?}"
                );
            }
        }
        for (name, value) in [
            ("bad name", "x"),
            ("", "x"),
            ("x-a", "a\r\nx-b: 1"),
            ("x-a", "\0"),
        ] {
            let error = refused(request("GET", "http://h/", &[(name, value)]));
            assert!(
                matches!(error, Error::InvalidHeader(_)),
                "{name:?}: {error:?}"
            );
        }
        let big = "x".repeat(MAX_HEADER_BYTES);
        let error = refused(request("GET", "http://h/", &[("x-big", &big)]));
        assert!(
            matches!(&error, Error::InvalidHeader(why) if why.contains("in all")),
            "{error:?}"
        );
        // More header names than a request can hold (32,768), within the byte cap:
        // refused, not a panic.
        const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let names: Vec<String> = (0..33_000usize)
            .map(|i| {
                let digit = |n: usize| DIGITS[n % 36] as char;
                [digit(i / 1296), digit(i / 36), digit(i)].iter().collect()
            })
            .collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "")).collect();
        let error = refused(request("GET", "http://h/", &many));
        assert!(matches!(error, Error::Failed(_)), "{error:?}");
        for (method, url) in [
            ("GE T", "http://h/"),
            ("", "http://h/"),
            ("GET", "ftp://h/"),
            ("GET", "/relative"),
            ("GET", "h/path"),
            ("GET", "http://user@h/"),
            ("GET", "http://user:pw@h/"),
            ("GET", "http://h p/"),
            ("GET", ""),
        ] {
            let error = refused(request(method, url, &[]));
            assert!(
                matches!(error, Error::InvalidUrl(_)),
                "{method} {url}: {error:?}"
            );
        }
    }

    #[test]
    fn failures_read_as_the_sdk_s_kinds() {
        assert!(matches!(error_of(Code::HttpRequestDenied), Error::Denied));
        for code in [
            Code::ConnectionTimeout,
            Code::ConnectionReadTimeout,
            Code::ConnectionLimitReached,
            Code::HttpResponseTimeout,
        ] {
            assert!(matches!(error_of(code), Error::Timeout));
        }
        assert!(matches!(
            error_of(Code::ConnectionRefused),
            Error::Unreachable(why) if why == "connection refused"
        ));
        assert!(matches!(
            error_of(Code::HttpResponseBodySize(Some(9))),
            Error::TooLarge
        ));
        assert!(matches!(
            error_of(Code::HttpProtocolError),
            Error::Failed(_)
        ));
    }
}
