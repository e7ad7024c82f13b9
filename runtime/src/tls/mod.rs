//! TLS, written once for both binaries: to clients (the proxy's certificate, optionally
//! clients' certificates checked against a CA) and to each cluster (CA or system roots, host
//! names checked, optionally a client certificate). rustls with the ring provider; the core
//! knows nothing of it.
//!
//! - [`stream`]: a runtime's socket with rustls on top, used readiness-style.
//! - Here: building the rustls configurations from the options, the handshakes, and turning
//!   certificate failures into a line an operator can act on.

mod stream;

use std::future::poll_fn;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::Poll;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    ServerConfig, ServerConnection, SignatureScheme,
};

pub use stream::{Link, TlsStream};

use crate::runtime::Stream;
use cqlmirror_core::config::Upstream;

/// The ring provider: maintained and built without extra tools (aws-lc-rs, the one with
/// post-quantum key exchange, needs CMake and a long C build), whose deprecation note is about
/// that key exchange only.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn read_certs(path: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{option} {}: cannot read certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{option} {}: no certificate in the file (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path, option: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "{option} {}: cannot read a private key (PEM, PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        )
    })
}

/// The TLS options of one cluster, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendTlsOptions {
    /// The cluster's CA certificates (PEM); the system's roots without it.
    pub ca: Option<PathBuf>,
    /// The name the certificates must be valid for, instead of each node's address.
    pub server_name: Option<String>,
    /// A client certificate and its key (PEM), for clusters that require one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Accept any certificate: no protection against an impostor.
    pub insecure: bool,
}

/// TLS to one cluster, ready to use.
#[derive(Debug, Clone)]
pub struct BackendTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    pub insecure: bool,
}

impl BackendTls {
    /// Builds the configuration; `cluster` names the options in errors (`source`,
    /// `target`).
    pub fn new(options: &BackendTlsOptions, cluster: &str) -> Result<Self, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if options.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider())))
        } else {
            let mut roots = RootCertStore::empty();
            match &options.ca {
                Some(path) => {
                    for cert in read_certs(path, &format!("--{cluster}-tls-ca"))? {
                        roots
                            .add(cert)
                            .map_err(|e| format!("--{cluster}-tls-ca {}: {e}", path.display()))?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    for cert in found.certs {
                        let _ = roots.add(cert);
                    }
                    if roots.is_empty() {
                        return Err(format!(
                            "--{cluster}-tls: the system has no CA certificates to check the {cluster} cluster's against: give its CA with --{cluster}-tls-ca"
                        ));
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        let config = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    read_certs(cert, &format!("--{cluster}-tls-cert"))?,
                    read_key(key, &format!("--{cluster}-tls-key"))?,
                )
                .map_err(|e| format!("--{cluster}-tls-cert/--{cluster}-tls-key: {e}"))?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(format!(
                    "--{cluster}-tls-cert and --{cluster}-tls-key go together: give both or neither"
                ));
            }
        };
        let server_name = options
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_owned()).map_err(|_| {
                    format!("--{cluster}-tls-server-name: '{name}' is not a valid DNS name or IP address")
                })
            })
            .transpose()?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
            insecure: options.insecure,
        })
    }

    /// Opens TLS over `socket`, connected to `host` (the name or address the proxy connected
    /// to, which the certificate must be valid for unless a server name is configured), and
    /// completes the handshake.
    pub async fn connect<S: Stream>(&self, socket: S, host: &str) -> io::Result<TlsStream<S>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_owned()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("'{host}' cannot be checked against a certificate: give the name to check with --*-tls-server-name"),
                )
            })?,
        };
        let tls = ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| stream::tls_error(&e))?;
        handshake(TlsStream::new(socket, tls)).await
    }
}

/// The proxy's TLS to clients, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsOptions {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Clients must present a certificate signed by one of these.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: clients without a certificate are let in too.
    pub client_cert_optional: bool,
}

/// TLS to clients, ready to use.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ServerConfig>,
    /// Clients' certificates are checked against `--proxy-client-ca`.
    pub checks_clients: bool,
}

impl ClientTls {
    /// `None` when no certificate is given (plaintext clients).
    pub fn new(options: &ClientTlsOptions) -> Result<Option<Self>, String> {
        let (cert, key) = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) if options.client_ca.is_none() => return Ok(None),
            (None, None) => {
                return Err("--proxy-client-ca needs the proxy's own certificate: give --proxy-pem-certfile and --proxy-pem-keyfile".into());
            }
            _ => {
                return Err("--proxy-pem-certfile and --proxy-pem-keyfile go together: give both or neither".into());
            }
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &options.client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in read_certs(path, "--proxy-client-ca")? {
                    roots
                        .add(ca)
                        .map_err(|e| format!("--proxy-client-ca {}: {e}", path.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let verifier = if options.client_cert_optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| format!("--proxy-client-ca {}: {e}", path.display()))?,
                )
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(
                read_certs(cert, "--proxy-pem-certfile")?,
                read_key(key, "--proxy-pem-keyfile")?,
            )
            .map_err(|e| format!("--proxy-pem-certfile/--proxy-pem-keyfile: {e}"))?;
        Ok(Some(Self {
            config: Arc::new(config),
            checks_clients: options.client_ca.is_some(),
        }))
    }

    /// Completes the server side of the handshake with a client on `socket`.
    pub async fn accept<S: Stream>(&self, socket: S) -> io::Result<TlsStream<S>> {
        let tls =
            ServerConnection::new(Arc::clone(&self.config)).map_err(|e| stream::tls_error(&e))?;
        handshake(TlsStream::new(socket, tls)).await
    }
}

/// Every TLS setting of a proxy, built from the options.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// TLS to clients; plaintext clients without it.
    pub clients: Option<ClientTls>,
    /// TLS to each cluster, by [`Upstream::index`]; plaintext without it.
    pub clusters: [Option<BackendTls>; 2],
}

impl TlsSettings {
    pub fn backend(&self, upstream: Upstream) -> Option<&BackendTls> {
        self.clusters[upstream.index()].as_ref()
    }

    /// For the start-up log line.
    pub fn describe(&self) -> String {
        let clients = match &self.clients {
            None => "clients plaintext".to_owned(),
            Some(c) if c.checks_clients => "clients TLS with certificates".to_owned(),
            Some(_) => "clients TLS".to_owned(),
        };
        let cluster = |upstream: Upstream| match self.backend(upstream) {
            None => format!("{upstream} plaintext"),
            Some(b) if b.insecure => format!("{upstream} TLS UNVERIFIED"),
            Some(_) => format!("{upstream} TLS"),
        };
        format!(
            "{clients}, {}, {}",
            cluster(Upstream::Source),
            cluster(Upstream::Target)
        )
    }
}

/// Drives a handshake to its end, waiting for the socket as it needs.
async fn handshake<S: Stream>(mut tls: TlsStream<S>) -> io::Result<TlsStream<S>> {
    poll_fn(|cx| {
        loop {
            match tls.try_handshake() {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ready = if tls.wants_write() {
                        tls.socket().poll_writable(cx)
                    } else {
                        tls.socket().poll_readable(cx)
                    };
                    match ready {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    })
    .await?;
    Ok(tls)
}

/// What went wrong in TLS, in words that say what to do.
pub fn describe(error: &rustls::Error) -> String {
    use rustls::Error;
    match error {
        Error::InvalidCertificate(cert) => {
            let why = match cert {
                CertificateError::UnknownIssuer => {
                    "its certificate is signed by a CA this side does not trust (give the right CA certificate)".to_owned()
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "its certificate has expired".to_owned()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "its certificate is not valid yet (check the clocks)".to_owned()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "its certificate is not valid for the name or address connected to (give the name it has with --*-tls-server-name)".to_owned()
                }
                CertificateError::Revoked => "its certificate is revoked".to_owned(),
                other => format!("its certificate is not acceptable: {other:?}"),
            };
            format!("TLS: {why}")
        }
        Error::NoCertificatesPresented => {
            "TLS: no certificate was presented, and one is required".to_owned()
        }
        Error::AlertReceived(alert) => format!(
            "TLS: the other side refused the handshake ({alert:?}): it may not trust this side's certificate, or require one"
        ),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => format!(
            "TLS: {error} (is the other side speaking TLS? check that TLS is on at both ends)"
        ),
        other => format!("TLS: {other}"),
    }
}

/// `--*-tls-insecure`: any certificate is accepted, signatures still checked.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
