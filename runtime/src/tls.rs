//! TLS for both listeners: the `[tls]` certificate and key read into a rustls server
//! configuration, and the accepted socket as one small [`Stream`] type (plain TCP, or
//! TLS over it). The gateway keeps the current configuration and replaces it at each
//! reload, so a rotated certificate serves the next handshake and no connection is
//! dropped.
//!
//! What a TLS connection costs: rustls keeps, per connection, its record reader's buffer
//! (4 KiB once the handshake is done), the two directions' keys and its state; boxed
//! behind [`Stream::Tls`], so a plain connection pays nothing for TLS (the enum is as
//! large as a bare `TcpStream`). docs/operations.md has the measured figure.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::TlsConfig;
use crate::handshake::{self, Refusal};

/// Why `[tls]` cannot be used: the config key to fix and what is wrong with it.
/// Displays as the reason alone (which names the file); the key is apart, for
/// `ConfigError::Invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TlsConfigError {
    /// The dotted config key: `tls.cert` or `tls.key`.
    pub key: &'static str,
    /// The file, what failed and what to do.
    pub reason: String,
}

impl From<TlsConfigError> for String {
    fn from(err: TlsConfigError) -> String {
        err.reason
    }
}

/// Reads the certificate chain and key of `tls` (paths relative to `base_dir`) into a
/// server configuration for HTTP/1.1. The error names the key (`tls.cert` or `tls.key`)
/// and says which file failed and why.
pub fn server_config(
    tls: &TlsConfig,
    base_dir: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let cert_path = base_dir.join(&tls.cert);
    let key_path = base_dir.join(&tls.key);
    let cert_error = |reason: String| TlsConfigError {
        key: "tls.cert",
        reason,
    };
    let key_error = |reason: String| TlsConfigError {
        key: "tls.key",
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            cert_error(format!(
                "cannot read the certificate chain from {}: {e}; it must be a PEM file, leaf first",
                cert_path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(cert_error(format!(
            "{} holds no PEM certificate; it must be a PEM file, leaf first",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        key_error(format!(
            "cannot read the private key from {}: {e}; it must be a PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key_path.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(format!("cannot set up TLS: {e}")))?
        .with_no_client_auth()
        // Fails when the key is unusable or is not the leaf certificate's own.
        .with_single_cert(certs, key)
        .map_err(|e| {
            key_error(format!(
                "the private key in {} does not go with the certificate in {}: {e}; \
                 point `tls.key` at the key the certificate was issued for",
                key_path.display(),
                cert_path.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Completes the TLS handshake on `tcp` with `config`, or wraps it as it is when TLS is
/// off. A client that speaks plain HTTP to a TLS listener is answered 400 in plain text
/// saying so (what it can read), and the error says what happened. The caller bounds
/// this with its handshake timeout.
pub async fn accept(
    mut tcp: TcpStream,
    config: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<Stream> {
    let Some(config) = config else {
        return Ok(Stream::Plain(tcp));
    };
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        // Read what has arrived of the request before answering: closing a socket with
        // unread input resets it, and the reset can destroy the answer in flight. On the
        // heap: whatever this future holds, every caller's future makes room for.
        let mut head = vec![0u8; 4096];
        let _ = tcp.read(&mut head).await;
        let refusal = Refusal::new(
            400,
            "this listener speaks TLS: connect with wss:// or https://\n",
        );
        handshake::respond(&mut tcp, &refusal).await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client did not start a TLS handshake (plain HTTP?); answered 400",
        ));
    }
    let tls = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// An accepted socket: plain TCP, or TLS over it. One type for both, so the socket
/// code is not generic over it; the TLS state is boxed, so a plain connection is no
/// larger than its `TcpStream`.
#[derive(Debug)]
pub enum Stream {
    /// Without `[tls]`.
    Plain(TcpStream),
    /// With `[tls]`, once the handshake is done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl From<TcpStream> for Stream {
    fn from(tcp: TcpStream) -> Self {
        Stream::Plain(tcp)
    }
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Ready when a read may make progress, without reading. On plain TCP that is the
    /// socket's readiness. Under TLS it is always ready: rustls may hold decrypted bytes
    /// already while the socket has nothing more, so only a read can tell.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(tcp) => tcp.poll_read_ready(cx),
            Stream::Tls(_) => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Test certificates: a CA and leaves it signs, as PEM files.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    };

    /// A CA that signs leaves for `localhost` and 127.0.0.1.
    pub struct Ca {
        issuer: Issuer<'static, KeyPair>,
        /// The CA certificate, PEM.
        pub pem: String,
    }

    impl Ca {
        /// A fresh CA.
        pub fn new() -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            // A name of its own: with rcgen's one default name for CA and leaf, OpenSSL
            // would take the leaf for a self-signed certificate.
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, "wsgate test CA");
            let key = KeyPair::generate().unwrap();
            let pem = params.self_signed(&key).unwrap().pem();
            Ca {
                issuer: Issuer::new(params, key),
                pem,
            }
        }

        /// A leaf for `localhost` and 127.0.0.1: certificate and key, PEM.
        pub fn leaf(&self) -> (String, String) {
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .unwrap();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }

        /// Writes a leaf to `cert.pem` and `key.pem` in `dir`.
        pub fn write_leaf(&self, dir: &Path) {
            let (cert, key) = self.leaf();
            std::fs::write(dir.join("cert.pem"), cert).unwrap();
            std::fs::write(dir.join("key.pem"), key).unwrap();
        }

        /// A client configuration that trusts this CA only.
        pub fn client_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
                .unwrap();
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            std::sync::Arc::new(config)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Ca;
    use super::*;
    use std::path::PathBuf;
    use tokio::io::AsyncWriteExt;

    fn tls_config(cert: &str, key: &str) -> TlsConfig {
        TlsConfig {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        }
    }

    #[test]
    fn a_leaf_and_its_key_make_a_config() {
        let dir = tempfile::tempdir().unwrap();
        Ca::new().write_leaf(dir.path());
        let config = server_config(&tls_config("cert.pem", "key.pem"), dir.path()).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_missing_certificate_names_tls_cert_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        Ca::new().write_leaf(dir.path());
        let err = server_config(&tls_config("nope.pem", "key.pem"), dir.path()).unwrap_err();
        assert_eq!(err.key, "tls.cert");
        assert!(err.reason.contains("nope.pem"), "{}", err.reason);
    }

    #[test]
    fn a_file_without_certificates_names_tls_cert() {
        let dir = tempfile::tempdir().unwrap();
        Ca::new().write_leaf(dir.path());
        std::fs::write(dir.path().join("empty.pem"), "not PEM\n").unwrap();
        let err = server_config(&tls_config("empty.pem", "key.pem"), dir.path()).unwrap_err();
        assert_eq!(err.key, "tls.cert");
        assert!(err.reason.contains("no PEM certificate"), "{}", err.reason);
    }

    #[test]
    fn another_certificates_key_names_tls_key_and_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        ca.write_leaf(dir.path());
        let (_, other_key) = ca.leaf();
        std::fs::write(dir.path().join("other.pem"), other_key).unwrap();
        let err = server_config(&tls_config("cert.pem", "other.pem"), dir.path()).unwrap_err();
        assert_eq!(err.key, "tls.key");
        assert!(
            err.reason.contains("other.pem") && err.reason.contains("cert.pem"),
            "{}",
            err.reason
        );
        assert!(err.reason.contains("does not go with"), "{}", err.reason);
    }

    #[test]
    fn a_certificate_as_the_key_names_tls_key() {
        let dir = tempfile::tempdir().unwrap();
        Ca::new().write_leaf(dir.path());
        let err = server_config(&tls_config("cert.pem", "cert.pem"), dir.path()).unwrap_err();
        assert_eq!(err.key, "tls.key");
        assert!(err.reason.contains("private key"), "{}", err.reason);
    }

    /// A plain connection pays nothing for TLS: the enum is as large as the socket.
    #[test]
    fn a_plain_stream_is_no_larger_than_its_socket() {
        assert_eq!(size_of::<Stream>(), size_of::<TcpStream>());
    }

    /// A plain HTTP request to a TLS listener gets a 400 it can read, saying why.
    #[tokio::test]
    async fn plain_http_to_a_tls_listener_is_answered_400() {
        let dir = tempfile::tempdir().unwrap();
        Ca::new().write_leaf(dir.path());
        let config = server_config(&tls_config("cert.pem", "key.pem"), dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let err = accept(server, Some(config)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("wss:// or https://"), "{answer}");
    }
}
