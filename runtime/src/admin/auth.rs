//! Who is calling the management API: a tenant's bearer key, or an AWS SigV4 signature
//! made with one of the tenant's access keys (service `execute-api`, any region).
//!
//! SigV4 is verified by signing the request again with aws-sigv4 (AWS's own signer):
//! exactly the headers the client listed in `SignedHeaders`, the body as received, the
//! time from `x-amz-date`, the region from the credential scope. Then:
//! - the signature must match (compared in constant time);
//! - `x-amz-date` must be within [`MAX_SKEW`] of our clock;
//! - a request that changes something (POST, DELETE) takes effect at most once: its
//!   signature is remembered for the skew window and a replay is refused. A request that
//!   failed is forgotten, so an SDK's retry of it still works. Reads are not remembered:
//!   repeating a GET changes nothing. SigV4 has no nonce, so two identical POSTs signed
//!   in the same second are indistinguishable from a replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use dashmap::DashMap;

use super::error::ApiError;
use crate::config::Secret;
use crate::credentials::Keys;
use crate::tenant::Tenant;

/// Largest accepted difference between `x-amz-date` and our clock (AWS uses 5 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Checks management credentials against a snapshot's [`Keys`], and remembers signed
/// writes against replays (for the process's life, across snapshots).
#[derive(Default)]
pub struct Authenticator {
    /// Signatures seen within the skew window, with when they may be forgotten.
    seen: DashMap<String, u64>,
    /// Requests since the last sweep of `seen`.
    since_sweep: AtomicU64,
}

impl Authenticator {
    /// The tenant the request's credentials belong to, the body (read by `read_body` only
    /// once the credentials have passed every check the headers allow, so an unknown
    /// caller never makes the gateway read a body), and for a signed request that
    /// changes something, the key under which it is remembered against replays.
    pub async fn authenticate<F, Fut>(
        &self,
        keys: &Keys,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        read_body: F,
    ) -> Result<Authenticated, ApiError>
    where
        F: FnOnce(Arc<Tenant>) -> Fut,
        Fut: Future<Output = Result<Bytes, ApiError>>,
    {
        let authorization = headers
            .get("authorization")
            .ok_or_else(|| ApiError::Forbidden("Missing Authentication Token: send `Authorization: Bearer <key>` or sign the request with SigV4".into()))?
            .to_str()
            .map_err(|_| ApiError::Forbidden("the Authorization header is not valid text".into()))?;
        if let Some(key) = authorization.strip_prefix("Bearer ") {
            let tenant = keys
                .bearer(key.trim())
                .cloned()
                .ok_or_else(|| ApiError::Forbidden("the bearer key is not valid".into()))?;
            let body = read_body(tenant.clone()).await?;
            return Ok(Authenticated {
                tenant,
                body,
                replay_key: None,
            });
        }
        if let Some(fields) = authorization.strip_prefix("AWS4-HMAC-SHA256 ") {
            let signed = Signed::check_headers(keys, fields, headers)?;
            let body = read_body(signed.tenant.clone()).await?;
            let replay_key = self.verify(&signed, method, uri, &body)?;
            return Ok(Authenticated {
                tenant: signed.tenant,
                body,
                replay_key,
            });
        }
        Err(ApiError::Forbidden(
            "unsupported Authorization scheme: use `Bearer <key>` or AWS SigV4 (AWS4-HMAC-SHA256)"
                .into(),
        ))
    }

    /// Signs the request again with the body and compares; remembers a write.
    fn verify(
        &self,
        signed: &Signed,
        method: &Method,
        uri: &Uri,
        body: &[u8],
    ) -> Result<Option<String>, ApiError> {
        let forbidden = |why: &str| ApiError::Forbidden(why.to_owned());
        let identity =
            Credentials::new(&signed.access_key, &signed.secret, None, None, "wsgate").into();
        let mut settings = SigningSettings::default();
        settings.excluded_headers = None;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&signed.region)
            .name("execute-api")
            .time(signed.time)
            .settings(settings)
            .build()
            .map_err(|e| forbidden(&format!("cannot check the signature: {e}")))?
            .into();
        let uri_text = uri.to_string();
        let signable = SignableRequest::new(
            method.as_str(),
            uri_text.as_str(),
            signed.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| forbidden(&format!("cannot check the signature: {e}")))?;
        let expected = sign(signable, &params)
            .map_err(|e| forbidden(&format!("cannot check the signature: {e}")))?
            .signature()
            .to_owned();
        if !constant_time_eq(expected.as_bytes(), signed.signature.as_bytes()) {
            return Err(forbidden(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
            ));
        }
        if method == Method::GET || method == Method::HEAD {
            return Ok(None);
        }
        self.remember(&signed.signature, SystemTime::now())?;
        Ok(Some(signed.signature.clone()))
    }

    /// Forgets a remembered request that failed, so that a retry of it is accepted.
    pub fn forget(&self, replay_key: &str) {
        self.seen.remove(replay_key);
    }

    /// Refuses a signature already used; sweeps out signatures once they are too old to
    /// be accepted anyway, so memory follows the signed write rate over the window.
    fn remember(&self, signature: &str, now: SystemTime) -> Result<(), ApiError> {
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if self.since_sweep.fetch_add(1, Ordering::Relaxed) >= 1024 {
            self.since_sweep.store(0, Ordering::Relaxed);
            self.seen.retain(|_, expires| *expires > now_s);
        }
        let expires = now_s + 2 * MAX_SKEW.as_secs();
        match self.seen.entry(signature.to_owned()) {
            dashmap::Entry::Occupied(_) => Err(ApiError::Forbidden(
                "this signed request was already used: sign every request anew (replay refused)"
                    .into(),
            )),
            dashmap::Entry::Vacant(slot) => {
                slot.insert(expires);
                Ok(())
            }
        }
    }
}

/// Checks an operator's `Authorization: Bearer <key>` against `[admin] bearer_keys`:
/// what spans every tenant (`/metrics`) is theirs alone, and tenant keys do not open it.
pub fn operator(keys: &[Secret], headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::Forbidden(
            "Missing Authentication Token: /metrics needs `Authorization: Bearer <operator key>` ([admin] bearer_keys)".into(),
        ));
    };
    if keys
        .iter()
        .any(|key| constant_time_eq(key.expose().as_bytes(), presented.as_bytes()))
    {
        return Ok(());
    }
    Err(ApiError::Forbidden(
        "this key is not an operator key ([admin] bearer_keys)".into(),
    ))
}

/// Most headers a signature may cover; real SDKs sign a handful.
const MAX_SIGNED_HEADERS: usize = 50;
/// Longest `Authorization` header read at all.
const MAX_AUTHORIZATION_BYTES: usize = 4096;

/// What a SigV4 request's headers say, checked as far as they can be without the body.
struct Signed {
    tenant: Arc<Tenant>,
    access_key: String,
    secret: String,
    region: String,
    time: SystemTime,
    signature: String,
    /// The signed headers but `x-amz-date` (the signer adds it from `time`), with values.
    headers: Vec<(String, String)>,
}

impl Signed {
    /// Checks the credential scope, the key id, the date and the signed headers.
    fn check_headers(keys: &Keys, fields: &str, headers: &HeaderMap) -> Result<Signed, ApiError> {
        let forbidden = |why: &str| ApiError::Forbidden(why.to_owned());
        if fields.len() > MAX_AUTHORIZATION_BYTES {
            return Err(forbidden("the Authorization header is too long"));
        }
        let auth = SigV4Header::parse(fields).ok_or_else(|| forbidden("malformed SigV4 Authorization header: expected Credential=…, SignedHeaders=…, Signature=…"))?;
        let scope: Vec<&str> = auth.credential.split('/').collect();
        let [access_key, date, region, service, terminator] = scope[..] else {
            return Err(forbidden(
                "malformed credential scope: expected AKID/DATE/REGION/SERVICE/aws4_request",
            ));
        };
        if service != "execute-api" || terminator != "aws4_request" {
            return Err(forbidden(
                "the credential scope must be for service execute-api",
            ));
        }
        let (tenant, secret) = keys.aws(access_key).ok_or_else(|| {
            forbidden(
                "The security token included in the request is invalid: unknown access key id",
            )
        })?;

        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| forbidden("a SigV4 request needs an x-amz-date header"))?;
        let time = parse_amz_date(amz_date)
            .ok_or_else(|| forbidden("x-amz-date is not of the form YYYYMMDDTHHMMSSZ"))?;
        if amz_date.get(..8) != Some(date) {
            return Err(forbidden(
                "the credential scope date does not match x-amz-date",
            ));
        }
        let skew = SystemTime::now()
            .duration_since(time)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap_or_default();
        if skew > MAX_SKEW {
            return Err(forbidden(&format!(
                "Signature expired: x-amz-date {amz_date} is more than {} seconds from the server's time",
                MAX_SKEW.as_secs()
            )));
        }

        let names: Vec<&str> = auth.signed_headers.split(';').collect();
        if names.len() > MAX_SIGNED_HEADERS {
            return Err(forbidden(&format!(
                "SignedHeaders lists more than {MAX_SIGNED_HEADERS} headers"
            )));
        }
        if names.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(forbidden(
                "SignedHeaders must be sorted, lower-case names, each listed once",
            ));
        }
        if !names.contains(&"host") || !names.contains(&"x-amz-date") {
            return Err(forbidden("SignedHeaders must include host and x-amz-date"));
        }
        let mut pairs = Vec::with_capacity(names.len());
        for name in &names {
            if *name == "x-amz-date" {
                continue; // the signer inserts it from `time`
            }
            let mut any = false;
            for value in headers.get_all(*name) {
                let value = value
                    .to_str()
                    .map_err(|_| forbidden("a signed header is not valid text"))?;
                pairs.push(((*name).to_owned(), value.to_owned()));
                any = true;
            }
            if !any {
                return Err(forbidden(&format!(
                    "signed header `{name}` is missing from the request"
                )));
            }
        }
        Ok(Signed {
            tenant: tenant.clone(),
            access_key: access_key.to_owned(),
            secret: secret.to_owned(),
            region: region.to_owned(),
            time,
            signature: auth.signature.to_owned(),
            headers: pairs,
        })
    }
}

/// Who is calling, with the body read on their behalf.
pub struct Authenticated {
    /// The caller's tenant.
    pub tenant: Arc<Tenant>,
    /// The request body, read under the tenant's cap.
    pub body: Bytes,
    /// For a signed write: the key it is remembered under against replays.
    pub replay_key: Option<String>,
}

/// The fields of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
struct SigV4Header<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

impl<'a> SigV4Header<'a> {
    fn parse(fields: &'a str) -> Option<Self> {
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for field in fields.split(',') {
            let (name, value) = field.trim().split_once('=')?;
            match name {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed_headers = Some(value),
                "Signature" => signature = Some(value),
                _ => return None,
            }
        }
        Some(Self {
            credential: credential?,
            signed_headers: signed_headers?,
            signature: signature?,
        })
    }
}

/// `YYYYMMDDTHHMMSSZ` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    if text.len() != 16 || &text[8..9] != "T" || !text.ends_with('Z') {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &text[0..4],
        &text[4..6],
        &text[6..8],
        &text[9..11],
        &text[11..13],
        &text[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_authorization_fields() {
        let h = SigV4Header::parse("Credential=AKID/20250101/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc").unwrap();
        assert_eq!(
            h.credential,
            "AKID/20250101/us-east-1/execute-api/aws4_request"
        );
        assert_eq!(h.signed_headers, "host;x-amz-date");
        assert_eq!(h.signature, "abc");
        assert!(SigV4Header::parse("Credential=a, Bogus=b").is_none());
        assert!(SigV4Header::parse("Credential=a").is_none());
    }

    #[test]
    fn parses_amz_dates() {
        let t = parse_amz_date("20250102T030405Z").unwrap();
        assert_eq!(
            humantime::format_rfc3339(t).to_string(),
            "2025-01-02T03:04:05Z"
        );
        assert!(parse_amz_date("2025-01-02T03:04:05Z").is_none());
        assert!(parse_amz_date("20251302T030405Z").is_none());
    }
}
