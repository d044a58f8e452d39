//! The `wasi:http` path: the same request through `wasi:http/outgoing-handler`'s
//! resources, for [`Request::via_wasi_http`](super::Request::via_wasi_http).

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    self, ErrorCode, Fields, HeaderError, IncomingBody, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

use super::{Error, Method, Request, Response, refuse_own_headers};

/// How much one `read` of a response body asks for.
const READ_CHUNK: u64 = 64 * 1024;

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

/// One request, no redirect followed.
pub(super) fn send_once(request: &Request) -> Result<Response, Error> {
    let url = parse_url(&request.url)?;
    refuse_own_headers(&request.headers)?;
    let headers = Fields::new();
    for (name, value) in &request.headers {
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
}
