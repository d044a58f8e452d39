//! A client of the management API, for the `wsgate connections` CLI and for tests:
//! bearer keys or SigV4 signatures made with aws-sigv4, as AWS SDKs make them.

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
        let transport = |source| ClientError::Transport {
            endpoint: self.endpoint.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(transport)?;
        if status >= 300 {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Api {
                status,
                kind: kind.unwrap_or_else(|| "Error".into()),
                message,
            });
        }
        Ok(Answer { status, body })
    }

    /// `@connections/{id}` with the id percent-encoded.
    pub fn connection_path(id: &str) -> String {
        let encoded: String =
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).collect();
        format!("/@connections/{encoded}")
    }
}
