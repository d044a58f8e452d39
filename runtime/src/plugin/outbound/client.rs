//! The pooled HTTP/1.1 client behind a plugin's calls: TCP with its connect timeout,
//! rustls (webpki roots plus the plugin's extra CA file), and connection tasks spawned
//! on the gateway's main runtime.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioTimer;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use wasmtime_wasi_http::WasiBody;

/// The hyper client a plugin's calls go through.
pub type Client = HyperClient<HttpsConnector<HttpConnector>, WasiBody>;

/// Pooled connections to a backend are closed after this long unused.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Spawns on one runtime, whichever runtime asks. A heavy plugin's events run on the
/// low-priority lane; its pooled connections must not, since other events reuse them.
#[derive(Clone)]
struct OnRuntime(tokio::runtime::Handle);

impl<F> hyper::rt::Executor<F> for OnRuntime
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}

/// Builds a client whose TCP connects time out after `connect_timeout`, trusting the
/// public roots and, if given, the certificates in the PEM file `ca_file`; its
/// connection tasks run on `runtime`.
pub fn build(
    runtime: tokio::runtime::Handle,
    connect_timeout: Duration,
    max_idle_per_host: usize,
    ca_file: Option<&Path>,
) -> Result<Client, String> {
    let tls = match ca_file {
        None => public_tls()?,
        Some(file) => Arc::new(tls_config(Some(file))?),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(HyperClient::builder(OnRuntime(runtime))
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .build(https))
}

/// The TLS settings with the public roots only, built once for every plugin.
fn public_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static PUBLIC: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    PUBLIC
        .get_or_init(|| tls_config(None).map(Arc::new))
        .clone()
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(file) = ca_file {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("cannot read CA file {}: {e}", file.display()))?
        {
            let cert = cert.map_err(|e| format!("CA file {}: {e}", file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA file {}: {e}", file.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "CA file {} holds no PEM certificate",
                file.display()
            ));
        }
    }
    // The provider is named: rustls's process default would panic if another crate in
    // the build enabled a second one.
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
}
