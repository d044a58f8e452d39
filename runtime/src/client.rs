//! A client of the management API, for the `wsgate connections` and `wsgate logs` CLI
//! and for tests: bearer keys or SigV4 signatures made with aws-sigv4, as AWS SDKs
//! make them.

use std::time::SystemTime;

use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::Method;

/// How the client proves who it is.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `Authorization: Bearer <key>`.
    Bearer(String),
    /// An AWS access key: requests are signed with SigV4 for `execute-api`.
    Aws {
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
        /// Session token of temporary credentials, if any.
        session_token: Option<String>,
        /// The region put in the credential scope (wsgate accepts any).
        region: String,
    },
}

/// Why a management call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request could not be sent or the answer not read.
    #[error("cannot reach the management API at {endpoint}: {source}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The request could not be signed.
    #[error("cannot sign the request: {0}")]
    Signing(String),
    /// A streamed answer broke its format (an event past [`MAX_EVENT_BYTES`]).
    #[error("the management API's event stream is malformed: {0}")]
    Stream(String),
    /// The API answered with an error.
    #[error("{status} {kind}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The AWS error type, e.g. `GoneException`.
        kind: String,
        /// The API's message.
        message: String,
    },
}

/// An answer of the API.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: bytes::Bytes,
}

/// A management API client for one tenant's `@connections` endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    credentials: Credentials,
}

/// Headers to add to a request: `authorization` and, for SigV4, `x-amz-date` (and
/// `x-amz-security-token`).
pub fn auth_headers(
    credentials: &Credentials,
    method: &str,
    url: &str,
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, ClientError> {
    let (access_key_id, secret_access_key, session_token, region) = match credentials {
        Credentials::Bearer(key) => {
            return Ok(vec![("authorization".into(), format!("Bearer {key}"))]);
        }
        Credentials::Aws {
            access_key_id,
            secret_access_key,
            session_token,
            region,
        } => (access_key_id, secret_access_key, session_token, region),
    };
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ClientError::Signing(format!("bad URL {url}: {e}")))?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(ClientError::Signing(format!("URL {url} has no host"))),
    };
    let identity = AwsCredentials::new(
        access_key_id,
        secret_access_key,
        session_token.clone(),
        None,
        "wsgate-cli",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| ClientError::Signing(e.to_string()))?
        .into();
    let headers = [("host", host.as_str())];
    let signable =
        SignableRequest::new(method, url, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| ClientError::Signing(e.to_string()))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| ClientError::Signing(e.to_string()))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

impl Client {
    /// A client for `endpoint` (`http://HOST:PORT/{tenant}`).
    pub fn new(endpoint: &str, credentials: Credentials) -> Self {
        Self {
            http: reqwest::Client::new(),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            credentials,
        }
    }

    /// Sends one request to `{endpoint}{path}` and returns the answer, or the API's
    /// error for statuses of 300 and above.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer, ClientError> {
        let response = self.open(method, path, body, &[]).await?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        Ok(Answer { status, body })
    }

    /// Sends one request to `{endpoint}{path}` with `extra` headers (not signed) and
    /// returns the response with its body unread, for an answer that streams
    /// (`@logs?follow=1`: read it with `Response::chunk`); or the API's error for
    /// statuses of 300 and above.
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        extra: &[(&str, &str)],
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.endpoint);
        let headers = auth_headers(
            &self.credentials,
            method.as_str(),
            &url,
            &body,
            SystemTime::now(),
        )?;
        let mut request = self.http.request(method, &url).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        if status < 300 {
            return Ok(response);
        }
        let kind = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Api {
            status,
            kind: kind.unwrap_or_else(|| "Error".into()),
            message,
        })
    }

    /// A failure to send or read, naming the endpoint.
    pub fn transport(&self, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// `@connections/{id}` with the id percent-encoded.
    pub fn connection_path(id: &str) -> String {
        let encoded: String =
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).collect();
        format!("/@connections/{encoded}")
    }
}

/// Longest server-sent event [`EventParser`] buffers; the gateway's are at most a few
/// KiB (an entry's message is cut at 8 KiB).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerEvent {
    /// Its `event:` name, when it has one (entries have none).
    pub event: Option<String>,
    /// Its `id:`.
    pub id: Option<String>,
    /// Its `data:` lines, joined with newlines.
    pub data: String,
}

/// Server-sent events (`text/event-stream`) from the chunks of a streamed answer,
/// which may split an event anywhere.
#[derive(Debug, Default)]
pub struct EventParser {
    /// Bytes of events not yet complete; at most [`MAX_EVENT_BYTES`].
    pending: Vec<u8>,
}

impl EventParser {
    /// The events `chunk` completes. Comments (keep-alives) are skipped.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<ServerEvent>, ClientError> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = find_blank_line(&self.pending) {
            let block: Vec<u8> = self.pending.drain(..end.end).collect();
            let text = String::from_utf8_lossy(&block[..end.start]);
            let mut event = ServerEvent::default();
            let mut data: Vec<&str> = Vec::new();
            let mut any = false;
            for line in text.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "" => continue,
                    "event" => event.event = Some(value.to_owned()),
                    "id" => event.id = Some(value.to_owned()),
                    "data" => data.push(value),
                    _ => {}
                }
                any = true;
            }
            if any {
                event.data = data.join("\n");
                events.push(event);
            }
        }
        if self.pending.len() > MAX_EVENT_BYTES {
            return Err(ClientError::Stream(format!(
                "an event is longer than {MAX_EVENT_BYTES} bytes"
            )));
        }
        Ok(events)
    }
}

/// Where the first blank line (`\n\n` or `\r\n\r\n`) in `bytes` starts and ends.
fn find_blank_line(bytes: &[u8]) -> Option<std::ops::Range<usize>> {
    let lf = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| i..i + 2);
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i..i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.start <= b.start { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events split anywhere across chunks come out whole; comments are skipped;
    /// CRLF lines are read too.
    #[test]
    fn events_are_parsed_across_chunks() {
        let stream = b": hello\n\nid: 1\ndata: {\"a\":1}\n\nevent: dropped\r\ndata: x\r\ndata: y\r\n\r\n: keep-alive\n\n";
        for split in 0..stream.len() {
            let mut parser = EventParser::default();
            let mut events = parser.push(&stream[..split]).unwrap();
            events.extend(parser.push(&stream[split..]).unwrap());
            assert_eq!(
                events,
                [
                    ServerEvent {
                        event: None,
                        id: Some("1".into()),
                        data: "{\"a\":1}".into()
                    },
                    ServerEvent {
                        event: Some("dropped".into()),
                        id: None,
                        data: "x\ny".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    /// An event that never ends is refused past MAX_EVENT_BYTES rather than buffered.
    #[test]
    fn an_endless_event_is_refused() {
        let mut parser = EventParser::default();
        let line = vec![b'x'; 64 * 1024];
        let mut refused = None;
        for _ in 0..=MAX_EVENT_BYTES / line.len() {
            if let Err(err) = parser.push(&line) {
                refused = Some(err);
                break;
            }
        }
        let refused = refused.expect("the parser buffered past its bound");
        assert!(refused.to_string().contains("longer than"), "{refused}");
    }
}
