//! Who is calling the management API: a tenant's bearer key, or an AWS SigV4 signature
//! made with one of the tenant's access keys (service `execute-api`, any region).
//!
//! A request is checked from its headers before any body is read, in an order that
//! tells the caller nothing about which keys exist:
//! 1. The source address must be within its failed-authentication limit
//!    ([`FailureLimiter`]); past it the answer is 429 with `Retry-After`, and nothing
//!    else about the request is looked at.
//! 2. The request must be well-formed. A missing `Authorization`, an unsupported
//!    scheme, an unparsable SigV4 header (size, fields, credential scope, signed-header
//!    list, `x-amz-date`) and a date more than [`MAX_SKEW`] from the gateway's clock
//!    each get their own 403 message saying what to fix: they depend on no key.
//! 3. The credentials must be valid here. An unknown bearer key or access key id,
//!    another tenant's key, a signature made for another host ([`HostNames`]) and a
//!    signature that does not match all get the same 403 with the same body
//!    ([`INVALID_CREDENTIALS`]), so the answers are no oracle for valid key ids.
//!
//! Every refusal is counted in `wsgate_admin_auth_failures_total{reason}` (a fixed set
//! of reasons, never the key), logged at most once a second with the number folded
//! into the line, and charged to the source address.
//!
//! SigV4 is verified by signing the request again with aws-sigv4 (AWS's own signer):
//! exactly the headers the client listed in `SignedHeaders`, the body as received, the
//! time from `x-amz-date`, the region from the credential scope; the signatures are
//! compared in constant time. A request that changes something (POST, DELETE) takes
//! effect at most once: its signature is remembered while it could be replayed
//! ([`ReplayCache`]), and a replay is refused. A request that failed is forgotten, so
//! an SDK's retry of it still works. Reads are not remembered: repeating a GET changes
//! nothing. SigV4 has no nonce, so two identical POSTs signed in the same second are
//! indistinguishable from a replay.
//!
//! One difference remains visible before a signature can be checked: a body over the
//! tenant's cap gets 413 (the contract promises SDKs `PayloadTooLargeException`), which
//! an unknown key id does not reach. Such a refusal is charged to the source address
//! like a failed authentication, so probing key ids that way is limited the same.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};

use super::error::ApiError;
use super::failures::FailureLimiter;
use super::listener::Addresses;
use super::replay::{Refused, ReplayCache, ReplayKey};
use crate::config::{AdminConfig, Secret};
use crate::credentials::Keys;
use crate::metrics::{AuthFailure, Metrics};
use crate::server::Sampled;
use crate::tenant::Tenant;

/// Largest accepted difference between `x-amz-date` and our clock (AWS uses 5 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// The one answer to credentials that are not valid here, whatever the reason: an
/// unknown key or key id, a signature that does not match, another tenant's key, a
/// signature made for another host.
pub const INVALID_CREDENTIALS: &str = "The credentials are not valid for this request: the key is unknown, the signature does not match, or they belong to another tenant or host. Check the key (or access key id and secret), the tenant in the path and the host name of the endpoint";

/// The answer to a request without credentials.
const MISSING_TOKEN: &str = "Missing Authentication Token: send `Authorization: Bearer <key>` or sign the request with SigV4";

/// Most headers a signature may cover; real SDKs sign a handful.
const MAX_SIGNED_HEADERS: usize = 50;
/// Longest `Authorization` header read at all.
const MAX_AUTHORIZATION_BYTES: usize = 4096;

/// Checks management credentials against a snapshot's [`Keys`]; limits failures per
/// source address and remembers signed writes against replays (both for the process's
/// life, across snapshots).
pub struct Authenticator {
    replays: ReplayCache,
    /// In a cluster, where signed writes are also remembered for every node.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    failures: FailureLimiter,
    metrics: Arc<Metrics>,
    /// The sampled warning about refused credentials.
    log: Mutex<Sampled>,
}

/// A management request's head, as authentication needs it.
pub struct Request<'a> {
    /// The credentials of the snapshot in force.
    pub keys: &'a Keys,
    /// The `[admin]` table in force, for the host names.
    pub admin: &'a AdminConfig,
    /// The method (reads are not remembered against replays).
    pub method: &'a Method,
    /// The request target, as signed.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// Where the connection came from and arrived (absent outside the listener).
    pub addresses: Option<Addresses>,
    /// The tenant the path names, whose credentials these must be; `None` when the
    /// credentials name the tenant (Yandex's API).
    pub tenant: Option<&'a str>,
    /// That tenant, when it exists: an operator key (`[admin] bearer_keys`) acts as it.
    pub named: Option<Arc<Tenant>>,
}

/// Who is calling, with the body read on their behalf.
pub struct Authenticated {
    /// The caller's tenant.
    pub tenant: Arc<Tenant>,
    /// The request body, read under the tenant's cap.
    pub body: Bytes,
    /// For a signed write: where it is remembered against replays.
    pub replay_key: Option<ReplayKey>,
    /// Which key it was, for the audit trail: the access key id, or for a bearer key
    /// its [`bearer_key_id`].
    pub key_id: String,
}

/// A bearer key as the audit trail and the log name it: `bearer:` and the first 12 hex
/// digits of its SHA-256. It tells keys apart without revealing one.
pub fn bearer_key_id(key: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("bearer:{hex}")
}

/// Why a request was not let through.
enum Refusal {
    /// Its credentials were refused: counted, logged, charged to the source.
    Credentials(AuthFailure, ApiError),
    /// A request not yet authenticated failed otherwise (its body, before the
    /// signature over it could be checked): charged to the source only.
    Unverified(ApiError),
    /// An authenticated request hit a limit.
    Other(ApiError),
}

impl Refusal {
    /// Refused credentials, answered `message`.
    fn with(reason: AuthFailure, message: impl Into<String>) -> Refusal {
        Refusal::Credentials(reason, ApiError::Forbidden(message.into()))
    }

    /// Credentials not valid here, answered alike whatever the reason.
    fn invalid(reason: AuthFailure) -> Refusal {
        Refusal::with(reason, INVALID_CREDENTIALS)
    }
}

impl Authenticator {
    /// An authenticator with the limits of `admin` (read once: they outlive snapshots),
    /// counting into `metrics`.
    pub fn new(admin: &AdminConfig, metrics: Arc<Metrics>) -> Authenticator {
        // Validation refuses zeros; 1 stands in should one arrive anyway.
        let at_least_one = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let quota = governor::Quota::per_minute(at_least_one(admin.auth_failures_per_minute))
            .allow_burst(at_least_one(admin.auth_failure_burst));
        Authenticator {
            replays: ReplayCache::new(admin.replay_cache_signatures),
            cluster: None,
            failures: FailureLimiter::new(quota, admin.auth_failure_sources),
            metrics,
            log: Mutex::default(),
        }
    }

    /// The tenant the request's credentials belong to (or that an operator key names),
    /// admitted under its API rate unless the operator's; the
    /// body, read by `read_body` only once the credentials have passed every check the
    /// headers allow (so an unknown caller never makes the gateway read a body); and
    /// for a signed write, where it is remembered against replays.
    pub async fn authenticate<F, Fut>(
        &self,
        request: &Request<'_>,
        read_body: F,
    ) -> Result<Authenticated, ApiError>
    where
        F: FnOnce(Arc<Tenant>) -> Fut,
        Fut: Future<Output = Result<Bytes, ApiError>>,
    {
        let source = source(request.addresses);
        self.admit_source(source)?;
        match self.check(request, read_body).await {
            Ok(authenticated) => Ok(authenticated),
            Err(Refusal::Credentials(reason, error)) => {
                self.failed(source, reason);
                Err(error)
            }
            Err(Refusal::Unverified(error)) => {
                self.failures.failed(source);
                Err(error)
            }
            Err(Refusal::Other(error)) => Err(error),
        }
    }

    /// Checks an operator's `Authorization: Bearer <key>` against `[admin] bearer_keys`:
    /// what spans every tenant (`/metrics`, `/-/reload`, `/-/drain`) is theirs alone, and tenant keys do not open
    /// it. Failures are limited, counted and logged as any other. Returns the key's
    /// [`bearer_key_id`], for the log of what operators did.
    pub fn operator(
        &self,
        keys: &[Secret],
        headers: &HeaderMap,
        addresses: Option<Addresses>,
    ) -> Result<String, ApiError> {
        let source = source(addresses);
        self.admit_source(source)?;
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = presented else {
            self.failed(source, AuthFailure::Missing);
            return Err(ApiError::Forbidden(
                "Missing Authentication Token: /metrics, /-/reload and /-/drain need `Authorization: Bearer <operator key>` ([admin] bearer_keys)".into(),
            ));
        };
        if is_operator_key(keys, presented) {
            return Ok(bearer_key_id(presented));
        }
        self.failed(source, AuthFailure::UnknownKey);
        Err(ApiError::Forbidden(
            "this key is not an operator key ([admin] bearer_keys)".into(),
        ))
    }

    /// Whether the request carries an operator key (`/-/me`). A source past its
    /// failure limit is refused unchecked, as for every credential; a key that is
    /// neither an operator's nor a tenant's is charged by the tenant check that
    /// follows.
    pub fn is_operator(
        &self,
        keys: &[Secret],
        headers: &HeaderMap,
        addresses: Option<Addresses>,
    ) -> Result<bool, ApiError> {
        self.admit_source(source(addresses))?;
        Ok(headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .is_some_and(|key| is_operator_key(keys, key)))
    }

    /// Remembers signed writes across the cluster too, so that one replayed to another
    /// node is refused.
    pub fn in_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> Authenticator {
        self.cluster = cluster;
        self
    }

    /// Forgets a remembered signed write that failed, so that a retry of it is accepted.
    pub fn forget(&self, key: &ReplayKey) {
        self.replays.forget(key);
        if let Some(cluster) = &self.cluster {
            cluster.forget_signature(key.tenant(), &key.hex());
        }
    }

    /// Refuses a source past its failed-authentication limit, without looking further.
    fn admit_source(&self, source: IpAddr) -> Result<(), ApiError> {
        let Some(wait) = self.failures.throttled(source) else {
            return Ok(());
        };
        self.count(source, AuthFailure::Throttled);
        let secs = retry_after_secs(wait);
        Err(ApiError::Throttled {
            message: format!(
                "too many failed authentications from {source}: its requests are refused unchecked for {secs} s; fix the credentials, then retry after Retry-After"
            ),
            retry_after_secs: secs,
        })
    }

    /// A refused credential: charged to the source, counted and logged.
    fn failed(&self, source: IpAddr, reason: AuthFailure) {
        self.failures.failed(source);
        self.count(source, reason);
    }

    /// Counts a refusal and logs it, sampled.
    fn count(&self, source: IpAddr, reason: AuthFailure) {
        self.metrics.auth_failure(reason);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.warn(|refusals| {
            tracing::warn!(
                %source,
                %reason,
                refusals,
                "admin API credentials refused (at most one line a second; `refusals` counts them since the last line)"
            )
        });
    }

    /// Every check of the credentials, in the order the module docs give.
    async fn check<F, Fut>(
        &self,
        request: &Request<'_>,
        read_body: F,
    ) -> Result<Authenticated, Refusal>
    where
        F: FnOnce(Arc<Tenant>) -> Fut,
        Fut: Future<Output = Result<Bytes, ApiError>>,
    {
        let authorization = request
            .headers
            .get("authorization")
            .ok_or_else(|| Refusal::with(AuthFailure::Missing, MISSING_TOKEN))?
            .to_str()
            .map_err(|_| {
                Refusal::with(
                    AuthFailure::Malformed,
                    "the Authorization header is not valid text: use visible ASCII only",
                )
            })?;
        if let Some(key) = authorization.strip_prefix("Bearer ") {
            let key = key.trim();
            let (tenant, key_id) = match request.keys.bearer(key) {
                Some(tenant) => {
                    request.expect_tenant(tenant)?;
                    admit(tenant)?;
                    (tenant.clone(), bearer_key_id(key))
                }
                // The operator spans tenants (the console's all-tenants view): on a
                // path that names a tenant, its key acts as that tenant, and the
                // tenant's audit trail says it was the operator.
                None if request.tenant.is_some()
                    && is_operator_key(&request.admin.bearer_keys, key) =>
                {
                    let tenant = request.named.clone().ok_or_else(|| {
                        Refusal::Other(ApiError::NotFound(format!(
                            "no tenant named {:?}: GET /-/status lists them",
                            request.tenant.unwrap_or_default()
                        )))
                    })?;
                    // Not under the tenant's API rate: the operator watching a
                    // tenant (the console polls) must not take its backend's budget.
                    (tenant, format!("operator {}", bearer_key_id(key)))
                }
                None => return Err(Refusal::invalid(AuthFailure::UnknownKey)),
            };
            let body = read_body(tenant.clone()).await.map_err(Refusal::Other)?;
            return Ok(Authenticated {
                tenant,
                body,
                replay_key: None,
                key_id,
            });
        }
        let Some(fields) = authorization.strip_prefix("AWS4-HMAC-SHA256 ") else {
            return Err(Refusal::with(
                AuthFailure::Missing,
                "unsupported Authorization scheme: use `Bearer <key>` or AWS SigV4 (AWS4-HMAC-SHA256)",
            ));
        };
        let now = SystemTime::now();
        let signed = Signed::check_headers(fields, request.headers, now)
            .map_err(|malformed| Refusal::with(malformed.reason(), malformed.to_string()))?;
        let (tenant, secret) = request
            .keys
            .aws(signed.access_key)
            .ok_or_else(|| Refusal::invalid(AuthFailure::UnknownKey))?;
        let tenant = tenant.clone();
        request.expect_tenant(&tenant)?;
        if !request.host_names().allow(&tenant.id, signed.host) {
            return Err(Refusal::invalid(AuthFailure::WrongHost));
        }
        let body = read_body(tenant.clone())
            .await
            .map_err(Refusal::Unverified)?;
        if !signed.verify(secret, request.method, request.uri, &body) {
            return Err(Refusal::invalid(AuthFailure::BadSignature));
        }
        admit(&tenant)?;
        let replay_key = if *request.method == Method::GET || *request.method == Method::HEAD {
            None
        } else {
            let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let remembered =
                self.replays
                    .remember(&tenant.id, signed.signature, signed.signed_at, now_secs);
            Some(remembered.map_err(|refused| match refused {
                Refused::Replay => Refusal::with(
                    AuthFailure::Replay,
                    "this signed request was already used: sign every request anew (replay refused)",
                ),
                Refused::Full(wait) => {
                    let secs = retry_after_secs(wait);
                    Refusal::Other(ApiError::Throttled {
                        message: format!(
                            "tenant {} has as many signed writes in flight against replays as [admin] replay_cache_signatures allows; retry after {secs} s, or send writes with a bearer key",
                            tenant.id
                        ),
                        retry_after_secs: secs,
                    })
                }
            })?)
        };
        if let (Some(cluster), Some(key)) = (&self.cluster, &replay_key)
            && !cluster
                .first_use_of_signature(key.tenant(), &key.hex())
                .await
        {
            return Err(Refusal::with(
                AuthFailure::Replay,
                "this signed request was already used on another node of the cluster: sign every request anew (replay refused)",
            ));
        }
        Ok(Authenticated {
            tenant,
            body,
            replay_key,
            key_id: signed.access_key.to_owned(),
        })
    }
}

impl Request<'_> {
    /// Refuses another tenant's credentials, alike with unknown ones.
    fn expect_tenant(&self, tenant: &Tenant) -> Result<(), Refusal> {
        match self.tenant {
            Some(named) if *tenant.id != *named => Err(Refusal::invalid(AuthFailure::WrongTenant)),
            _ => Ok(()),
        }
    }

    /// The host names a signature for this request may be made for.
    fn host_names(&self) -> HostNames<'_> {
        HostNames {
            gateway: &self.admin.hosts,
            tenants: &self.admin.tenant_hosts,
            local: self.addresses.map(|a| a.local.ip()),
        }
    }
}

/// Whether `presented` is one of the operator's keys. Digests are compared, each of
/// them, in constant time, so the time taken tells neither a key's length nor which
/// key came close.
pub fn is_operator_key(keys: &[Secret], presented: &str) -> bool {
    use sha2::Digest as _;
    let presented = sha2::Sha256::digest(presented.as_bytes());
    keys.iter().fold(false, |found, key| {
        found | constant_time_eq(&sha2::Sha256::digest(key.expose().as_bytes()), &presented)
    })
}

/// Admits an authenticated request under its tenant's management API rate.
fn admit(tenant: &Tenant) -> Result<(), Refusal> {
    tenant.api_limiter.check().map_err(|_| {
        Refusal::Other(ApiError::LimitExceeded(format!(
            "the management API rate limit of tenant {} is exceeded; retry later",
            tenant.id
        )))
    })
}

/// The address failures are charged to: the peer's, or "unspecified" for a request
/// that did not come through the listener.
fn source(addresses: Option<Addresses>) -> IpAddr {
    addresses.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.peer.ip())
}

/// Whole seconds to wait, rounded up, at least one (`Retry-After` has no fractions).
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000).max(1) as u64
}

/// The host names a SigV4 signature may be made for.
///
/// When `[admin] hosts` or the calling tenant's `hosts` lists any name, the signed
/// `host` header, without its port (a proxy or a port mapping may change the port),
/// must be one of those names, or the IP address the connection arrived at (a client
/// that dials the gateway by address signs that address), or `localhost` when the
/// connection arrived on a loopback address (clients on the gateway's own machine, such
/// as the CLI or a health check). A signature made for anything else, such as another
/// gateway or AWS's own endpoint that share the keys, is refused.
///
/// With no names configured the gateway cannot know what it is called (behind a
/// proxy any name may reach it), so every host is accepted: a deployment reached by
/// name sets `[admin] hosts` to the names its backends use.
pub struct HostNames<'a> {
    /// `[admin] hosts`.
    gateway: &'a [String],
    /// Every tenant's `hosts`, by tenant id.
    tenants: &'a BTreeMap<String, Vec<String>>,
    /// The address the connection arrived at.
    local: Option<IpAddr>,
}

impl HostNames<'_> {
    /// Whether a signature of `tenant` made for `signed_host` is accepted.
    fn allow(&self, tenant: &str, signed_host: &str) -> bool {
        let own = self.tenants.get(tenant).map_or(&[][..], Vec::as_slice);
        if self.gateway.is_empty() && own.is_empty() {
            return true;
        }
        let name = without_port(signed_host);
        if self
            .gateway
            .iter()
            .chain(own)
            .any(|known| known.eq_ignore_ascii_case(name))
        {
            return true;
        }
        let Some(local) = self.local.map(|ip| ip.to_canonical()) else {
            return false;
        };
        if name.eq_ignore_ascii_case("localhost") {
            return local.is_loopback();
        }
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        literal
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical() == local)
    }
}

/// `name`, `name:port`, `[v6]` or `[v6]:port` without the port.
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Why a SigV4 request is refused before any key is looked at. Each says what to fix;
/// none depends on a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Malformed {
    #[error(
        "the Authorization header is longer than {MAX_AUTHORIZATION_BYTES} bytes; sign only the headers the request needs"
    )]
    TooLong,
    #[error(
        "malformed SigV4 Authorization header: expected `Credential=…, SignedHeaders=…, Signature=…`, each once"
    )]
    Fields,
    #[error(
        "malformed credential scope: expected ACCESS_KEY_ID/YYYYMMDD/REGION/execute-api/aws4_request"
    )]
    Scope,
    #[error("a SigV4 request needs one x-amz-date header of the form YYYYMMDDTHHMMSSZ")]
    Date,
    #[error("the credential scope date does not match x-amz-date: sign with the date you send")]
    ScopeDate,
    #[error(
        "Signature expired: x-amz-date {0} is more than {secs} seconds from the server's time; check the client's clock",
        secs = MAX_SKEW.as_secs()
    )]
    Expired(String),
    #[error(
        "SignedHeaders lists more than {MAX_SIGNED_HEADERS} headers; sign only the headers the request needs"
    )]
    TooManyHeaders,
    #[error(
        "SignedHeaders must be lower-case header names, sorted, each listed once, and include host and x-amz-date"
    )]
    HeaderList,
    #[error(
        "signed header `{0}` is missing from the request or is not valid text: send every header you sign"
    )]
    MissingHeader(String),
    #[error("a SigV4 request needs exactly one Host header")]
    Host,
}

impl Malformed {
    /// The metric's reason.
    fn reason(&self) -> AuthFailure {
        match self {
            Malformed::Expired(_) => AuthFailure::Expired,
            _ => AuthFailure::Malformed,
        }
    }
}

/// What a SigV4 request's headers say, checked as far as they can be without a key
/// or the body.
#[derive(Debug)]
struct Signed<'a> {
    access_key: &'a str,
    region: &'a str,
    time: SystemTime,
    /// `time` in seconds since the epoch.
    signed_at: u64,
    signature: &'a str,
    /// The value of the signed `host` header.
    host: &'a str,
    /// The signed headers but `x-amz-date` (the signer adds it from `time`), with values.
    headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Signed<'a> {
    /// Checks the header's size and fields, the credential scope, the date against
    /// `now`, and the signed-header list against the request's headers.
    fn check_headers(
        fields: &'a str,
        headers: &'a HeaderMap,
        now: SystemTime,
    ) -> Result<Signed<'a>, Malformed> {
        if fields.len() > MAX_AUTHORIZATION_BYTES {
            return Err(Malformed::TooLong);
        }
        let auth = SigV4Header::parse(fields).ok_or(Malformed::Fields)?;
        let mut scope = auth.credential.split('/');
        let (Some(access_key), Some(date), Some(region), Some(service), Some(terminator), None) = (
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
        ) else {
            return Err(Malformed::Scope);
        };
        if access_key.is_empty()
            || region.is_empty()
            || service != "execute-api"
            || terminator != "aws4_request"
        {
            return Err(Malformed::Scope);
        }

        let mut dates = headers.get_all("x-amz-date").iter();
        let (Some(amz_date), None) = (dates.next(), dates.next()) else {
            return Err(Malformed::Date);
        };
        let amz_date = amz_date.to_str().map_err(|_| Malformed::Date)?;
        let time = parse_amz_date(amz_date).ok_or(Malformed::Date)?;
        if amz_date.get(..8) != Some(date) {
            return Err(Malformed::ScopeDate);
        }
        let skew = now
            .duration_since(time)
            .unwrap_or_else(|future| future.duration());
        if skew > MAX_SKEW {
            return Err(Malformed::Expired(amz_date.to_owned()));
        }

        let mut names = Vec::with_capacity(8);
        for name in auth.signed_headers.split(';') {
            if names.len() == MAX_SIGNED_HEADERS {
                return Err(Malformed::TooManyHeaders);
            }
            names.push(name);
        }
        let lower_case_token = |name: &&str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        };
        if !names.iter().all(lower_case_token)
            || names.windows(2).any(|pair| pair[0] >= pair[1])
            || !names.contains(&"host")
            || !names.contains(&"x-amz-date")
        {
            return Err(Malformed::HeaderList);
        }
        let mut pairs = Vec::with_capacity(names.len());
        for name in names {
            if name == "x-amz-date" {
                continue; // the signer inserts it from `time`
            }
            let missing = || Malformed::MissingHeader(name.to_owned());
            let mut any = false;
            for value in headers.get_all(name) {
                pairs.push((name, value.to_str().map_err(|_| missing())?));
                any = true;
            }
            if !any {
                return Err(missing());
            }
        }
        let mut hosts = headers.get_all("host").iter();
        let (Some(host), None) = (hosts.next(), hosts.next()) else {
            return Err(Malformed::Host);
        };
        Ok(Signed {
            access_key,
            region,
            time,
            signed_at: time
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            signature: auth.signature,
            host: host.to_str().map_err(|_| Malformed::Host)?,
            headers: pairs,
        })
    }

    /// Signs the request again with `secret` and the body, and compares.
    fn verify(&self, secret: &str, method: &Method, uri: &Uri, body: &[u8]) -> bool {
        let identity = Credentials::new(self.access_key, secret, None, None, "wsgate").into();
        let mut settings = SigningSettings::default();
        settings.excluded_headers = None;
        let Ok(params) = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name("execute-api")
            .time(self.time)
            .settings(settings)
            .build()
        else {
            return false;
        };
        let uri_text = uri.to_string();
        let Ok(signable) = SignableRequest::new(
            method.as_str(),
            uri_text.as_str(),
            self.headers.iter().copied(),
            SignableBody::Bytes(body),
        ) else {
            return false;
        };
        let Ok(signed) = sign(signable, &params.into()) else {
            return false;
        };
        constant_time_eq(signed.signature().as_bytes(), self.signature.as_bytes())
    }
}

/// The fields of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
struct SigV4Header<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

impl<'a> SigV4Header<'a> {
    /// The three fields, each exactly once; `None` for anything else.
    fn parse(fields: &'a str) -> Option<Self> {
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for field in fields.split(',') {
            let (name, value) = field.trim().split_once('=')?;
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => return None,
            };
            if slot.replace(value).is_some() {
                return None;
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
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| {
        bytes[range.clone()]
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| &text[range])
    };
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        digits(0..4)?,
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?
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
        assert!(
            SigV4Header::parse("Credential=a, Credential=b, SignedHeaders=h, Signature=s")
                .is_none(),
            "a field given twice"
        );
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
        assert!(parse_amz_date("2025+102T030405Z").is_none());
    }

    fn names<'a>(
        gateway: &'a [String],
        tenants: &'a BTreeMap<String, Vec<String>>,
        local: &str,
    ) -> HostNames<'a> {
        HostNames {
            gateway,
            tenants,
            local: Some(local.parse().unwrap()),
        }
    }

    /// The host rule: nothing configured accepts any host; with names, a name (any
    /// port, any case), the arrival address, or localhost on loopback only.
    #[test]
    fn signed_hosts_must_name_this_gateway_once_names_are_configured() {
        let none = BTreeMap::new();
        assert!(names(&[], &none, "127.0.0.1").allow("demo", "anything.example:1"));

        let gateway = ["api.example.com".to_owned()];
        let tenants = BTreeMap::from([("acme".to_owned(), vec!["acme.test".to_owned()])]);
        let local = names(&gateway, &tenants, "127.0.0.1");
        for (tenant, host, allowed) in [
            ("demo", "api.example.com", true),
            ("demo", "API.Example.com:443", true),
            ("demo", "127.0.0.1:9090", true),
            ("demo", "localhost:9090", true),
            ("demo", "other.example.com", false),
            ("demo", "acme.test", false),
            ("acme", "acme.test:9090", true),
            ("demo", "10.0.0.1:9090", false),
            ("demo", "api.example.com.evil", false),
        ] {
            assert_eq!(local.allow(tenant, host), allowed, "{tenant} {host}");
        }
        let public = names(&gateway, &tenants, "10.0.0.5");
        assert!(
            !public.allow("demo", "localhost:9090"),
            "localhost from afar"
        );
        assert!(public.allow("demo", "10.0.0.5:9090"));
        let v6 = names(&gateway, &tenants, "::1");
        assert!(v6.allow("demo", "[::1]:9090"));
        assert!(v6.allow("demo", "localhost"));
        // A tenant's own names turn the check on even without [admin] hosts.
        let only_tenant = names(&[], &tenants, "127.0.0.1");
        assert!(!only_tenant.allow("acme", "elsewhere.example"));
        assert!(only_tenant.allow("demo", "elsewhere.example"));
    }

    #[test]
    fn ports_are_taken_off_host_names() {
        assert_eq!(without_port("a.example:80"), "a.example");
        assert_eq!(without_port("a.example"), "a.example");
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
        assert_eq!(without_port("a:b"), "a:b");
    }
}

/// Property tests of the SigV4 header checks over hostile input (`scripts/fuzz.sh`
/// runs every `fuzz::` test with many more cases): nothing panics, and a signed-header
/// list with a name twice, too many names, or an oversized header is refused before
/// any key is looked at. An endless `SignedHeaders` once overflowed a header map and
/// panicked the request task.
#[cfg(test)]
mod fuzz {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    /// `time` as `x-amz-date` writes it.
    fn amz_date(time: SystemTime) -> String {
        humantime::format_rfc3339_seconds(time)
            .to_string()
            .replace(['-', ':'], "")
    }

    /// A request's headers: `host`, `x-amz-date` and a few others a signature may list.
    fn headers(date: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "127.0.0.1:9090"),
            ("x-amz-date", date),
            ("content-type", "text/plain"),
            ("x-amz-security-token", "t"),
            ("a", "1"),
            ("b", "2"),
        ] {
            headers.insert(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn fields(date: &str, signed_headers: &str) -> String {
        format!(
            "Credential=AKID/{}/eu-west-1/execute-api/aws4_request, SignedHeaders={signed_headers}, Signature={}",
            &date[..8],
            "0".repeat(64)
        )
    }

    /// Header names a `SignedHeaders` list is drawn from, with duplicates.
    fn name() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "a",
            "b",
            "content-type",
            "host",
            "x-amz-date",
            "x-amz-security-token",
            "missing",
        ])
    }

    proptest! {
        /// Arbitrary `Authorization` text and `x-amz-date` values never panic.
        #[test]
        fn arbitrary_authorization_text_never_panics(
            text in "\\PC{0,300}",
            date in "[0-9TZ+-]{0,20}",
        ) {
            let now = SystemTime::now();
            let mut headers = headers(&amz_date(now));
            if let Ok(value) = HeaderValue::from_str(&date) {
                headers.insert("x-amz-date", value);
            }
            let _ = Signed::check_headers(&text, &headers, now);
        }

        /// Text built from the header's own pieces (fields in any order, repeated,
        /// with junk) never panics, and whatever passes has each field once.
        #[test]
        fn authorization_made_of_its_own_pieces_never_panics(
            pieces in prop::collection::vec(
                prop::sample::select(vec![
                    "Credential=AKID/DATE/r/execute-api/aws4_request",
                    "Credential=//////",
                    "Credential=",
                    "SignedHeaders=host;x-amz-date",
                    "SignedHeaders=;;;",
                    "SignedHeaders=host;host",
                    "Signature=00",
                    "Signature=",
                    "=",
                    "",
                    " ,",
                ]),
                0..8,
            ),
        ) {
            let now = SystemTime::now();
            let date = amz_date(now);
            let headers = headers(&date);
            let text = pieces.join(", ").replace("DATE", &date[..8]);
            if let Ok(signed) = Signed::check_headers(&text, &headers, now) {
                for field in ["Credential=", "SignedHeaders=", "Signature="] {
                    prop_assert_eq!(text.matches(field).count(), 1, "{}", text);
                }
                prop_assert_eq!(signed.headers.len(), 1); // host only
            }
        }

        /// A signed-header list is accepted only when it has at most 50 names, sorted,
        /// each once, including host and x-amz-date, all present; more than 50 names
        /// and a name listed twice are refused.
        #[test]
        fn signed_header_lists_are_checked(
            list in prop_oneof![
                prop::collection::vec(name(), 0..120),
                // Sorted and unique half of the time, so that lists that pass are common.
                prop::collection::vec(name(), 0..8).prop_map(|mut names| {
                    names.sort_unstable();
                    names.dedup();
                    names
                }),
            ],
        ) {
            let now = SystemTime::now();
            let date = amz_date(now);
            let headers = headers(&date);
            let text = fields(&date, &list.join(";"));
            let result = Signed::check_headers(&text, &headers, now);
            let sorted_unique = list.windows(2).all(|pair| pair[0] < pair[1]);
            if list.len() > MAX_SIGNED_HEADERS {
                prop_assert_eq!(result.unwrap_err(), Malformed::TooManyHeaders);
            } else if !sorted_unique || !list.contains(&"host") || !list.contains(&"x-amz-date") {
                prop_assert_eq!(result.unwrap_err(), Malformed::HeaderList);
            } else if list.contains(&"missing") {
                prop_assert_eq!(result.unwrap_err(), Malformed::MissingHeader("missing".into()));
            } else {
                let signed = result.unwrap();
                prop_assert_eq!(signed.headers.len(), list.len() - 1);
                prop_assert_eq!(signed.host, "127.0.0.1:9090");
            }
        }

        /// Any header over the size cap is refused before it is parsed, whatever it
        /// holds; the duplicates of the 25,000-name attack are refused at any length.
        #[test]
        fn oversize_authorization_is_refused(
            extra in MAX_AUTHORIZATION_BYTES..4 * MAX_AUTHORIZATION_BYTES,
            copies in 2usize..25_000,
        ) {
            let now = SystemTime::now();
            let date = amz_date(now);
            let headers = headers(&date);
            let padded = format!("{}{}", fields(&date, "host;x-amz-date"), "0".repeat(extra));
            prop_assert_eq!(
                Signed::check_headers(&padded, &headers, now).unwrap_err(),
                Malformed::TooLong
            );
            let hosts = vec!["host"; copies].join(";");
            let refused = Signed::check_headers(&fields(&date, &hosts), &headers, now).unwrap_err();
            prop_assert!(
                matches!(
                    refused,
                    Malformed::TooLong | Malformed::TooManyHeaders | Malformed::HeaderList
                ),
                "{:?}", refused
            );
        }
    }

    /// The scope date must be x-amz-date's; an empty one is refused, and so is a date
    /// outside the skew window.
    #[test]
    fn the_scope_date_and_the_skew_are_checked() {
        let now = SystemTime::now();
        let date = amz_date(now);
        let headers = headers(&date);
        let good = fields(&date, "host;x-amz-date");
        assert!(Signed::check_headers(&good, &headers, now).is_ok());
        let empty = good.replacen(&date[..8], "", 1);
        assert_eq!(
            Signed::check_headers(&empty, &headers, now).unwrap_err(),
            Malformed::ScopeDate
        );
        let other = good.replacen(&date[..8], "19990101", 1);
        assert_eq!(
            Signed::check_headers(&other, &headers, now).unwrap_err(),
            Malformed::ScopeDate
        );
        let later = now + MAX_SKEW + Duration::from_secs(2);
        assert_eq!(
            Signed::check_headers(&good, &headers, later)
                .unwrap_err()
                .reason(),
            AuthFailure::Expired
        );
    }
}
