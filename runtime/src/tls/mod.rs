//! TLS, written once for both binaries: to clients (the proxy's certificate, optionally
//! clients' certificates checked against a CA) and to each cluster (CA or system roots, host
//! names checked, optionally a client certificate). rustls with the ring provider; the core
//! knows nothing of it.
//!
//! - [`stream`]: a runtime's socket with rustls on top, used readiness-style.
//! - [`reload`]: the settings in force, read again on SIGHUP.
//! - Here: building the rustls configurations from the options, the handshakes, and turning
//!   certificate failures into a line an operator can act on.

mod pkcs12;
mod reload;
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

pub use reload::TlsHolder;
pub use stream::{Link, TlsStream};

use crate::runtime::Stream;
use cqlmirror_core::config::{Secret, Upstream};

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
    /// `source` or `target`, for the options errors name.
    cluster: String,
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
            cluster: cluster.to_owned(),
        })
    }

    /// The rustls configuration, for a client that drives rustls itself (the bench's load
    /// generator).
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
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
                    format!("'{host}' cannot be checked against a certificate: give the name to check with --{}-tls-server-name", self.cluster),
                )
            })?,
        };
        let tls =
            ClientConnection::new(Arc::clone(&self.config), name).map_err(stream::tls_error)?;
        let tls = handshake(TlsStream::new(socket, tls))
            .await
            .map_err(|e| self.fix().explain(e))?;
        Ok(tls.explained_by(self.fix()))
    }

    /// The options that fix this cluster's certificate failures.
    fn fix(&self) -> Fix {
        Fix {
            ca: format!("--{}-tls-ca", self.cluster),
            name: Some(format!("--{}-tls-server-name", self.cluster)),
            own_cert: Some(format!("--{0}-tls-cert and --{0}-tls-key", self.cluster)),
        }
    }
}

/// The proxy's TLS to clients, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsOptions {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The certificate chain and key in one PKCS#12 file, instead of `cert` and `key`.
    pub pkcs12: Option<(PathBuf, Secret)>,
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
        let identity = match (&options.cert, &options.key, &options.pkcs12) {
            (Some(cert), Some(key), None) => pkcs12::Identity {
                certs: read_certs(cert, "--proxy-pem-certfile")?,
                key: read_key(key, "--proxy-pem-keyfile")?,
                elliptic: false,
            },
            (None, None, Some((file, password))) => {
                pkcs12::read_identity(file, password, "--proxy-pkcs12")?
            }
            (None, None, None) if options.client_ca.is_none() => return Ok(None),
            (None, None, None) => {
                return Err("--proxy-client-ca needs the proxy's own certificate: give --proxy-pem-certfile and --proxy-pem-keyfile, or --proxy-pkcs12".into());
            }
            (_, _, Some(_)) => {
                return Err("--proxy-pkcs12 replaces --proxy-pem-certfile and --proxy-pem-keyfile: give one or the other".into());
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
        let (identity_options, hint) = match &options.pkcs12 {
            Some(_) if identity.elliptic => ("--proxy-pkcs12", Some(pkcs12::EC_KEY_HINT)),
            Some(_) => ("--proxy-pkcs12", None),
            None => ("--proxy-pem-certfile/--proxy-pem-keyfile", None),
        };
        let config = builder
            .with_single_cert(identity.certs, identity.key)
            .map_err(|e| match hint {
                Some(hint) => format!("{identity_options}: {e} ({hint})"),
                None => format!("{identity_options}: {e}"),
            })?;
        Ok(Some(Self {
            config: Arc::new(config),
            checks_clients: options.client_ca.is_some(),
        }))
    }

    /// The rustls configuration, for a server that drives rustls itself (the benches' null
    /// backend).
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Completes the server side of the handshake with a client on `socket`.
    pub async fn accept<S: Stream>(&self, socket: S) -> io::Result<TlsStream<S>> {
        let tls = ServerConnection::new(Arc::clone(&self.config)).map_err(stream::tls_error)?;
        let tls = handshake(TlsStream::new(socket, tls))
            .await
            .map_err(|e| Self::fix().explain(e))?;
        Ok(tls.explained_by(Self::fix()))
    }

    /// The option that fixes clients' certificate failures.
    fn fix() -> Fix {
        Fix {
            ca: "--proxy-client-ca".into(),
            name: None,
            own_cert: None,
        }
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

/// The options that fix a handshake's failures, for the words that say what to do.
#[derive(Debug)]
struct Fix {
    /// Where the CA certificates that check the other side come from.
    ca: String,
    /// Where the name its certificate must be valid for comes from (clusters only).
    name: Option<String>,
    /// Where this side's own certificate for the other side comes from (clusters only).
    own_cert: Option<String>,
}

impl Fix {
    /// A handshake's error in words that say what to do (other errors as they are).
    fn explain(&self, error: io::Error) -> io::Error {
        let tls = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(tls) => io::Error::new(error.kind(), describe(tls, self)),
            None => error,
        }
    }
}

/// What went wrong in TLS, in words that say what to do.
fn describe(error: &rustls::Error, fix: &Fix) -> String {
    use rustls::Error;
    match error {
        Error::InvalidCertificate(cert) => {
            let why = match cert {
                CertificateError::UnknownIssuer => format!(
                    "its certificate is signed by a CA this side does not trust (give the right CA certificate with {})",
                    fix.ca
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "its certificate has expired".to_owned()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "its certificate is not valid yet (check the clocks)".to_owned()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => match &fix.name {
                    Some(option) => format!(
                        "its certificate is not valid for the name or address connected to (give the name it has with {option})"
                    ),
                    None => "its certificate is not valid for its name".to_owned(),
                },
                CertificateError::Revoked => "its certificate is revoked".to_owned(),
                other => format!("its certificate is not acceptable: {other:?}"),
            };
            format!("TLS: {why}")
        }
        Error::NoCertificatesPresented => {
            "TLS: no certificate was presented, and one is required".to_owned()
        }
        Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            match &fix.own_cert {
                Some(options) => format!(
                    "TLS: it requires a client certificate (mutual TLS): give the proxy one with {options}"
                ),
                None => "TLS: the other side requires a certificate this side did not send".into(),
            }
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

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::task::Context;

    use super::*;

    /// A loopback socket in non-blocking mode that always claims readiness: the tests drive
    /// both ends from one thread, retrying on `WouldBlock`.
    struct Socket(TcpStream);

    impl Stream for Socket {
        fn poll_readable(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_writable(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
            (&self.0).read(buf)
        }
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            (&self.0).write_vectored(bufs)
        }
        fn set_nodelay(&self) -> io::Result<()> {
            self.0.set_nodelay(true)
        }
        fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
            self.0.local_addr()
        }
    }

    fn file(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/tls")
            .join(name)
    }

    fn pair() -> (Socket, Socket) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        for s in [&client, &server] {
            s.set_nonblocking(true).unwrap();
        }
        (Socket(client), Socket(server))
    }

    fn server(client_ca: bool) -> ClientTls {
        server_with("server", client_ca)
    }

    fn server_with(name: &str, client_ca: bool) -> ClientTls {
        ClientTls::new(&ClientTlsOptions {
            cert: Some(file(&format!("{name}.pem"))),
            key: Some(file(&format!("{name}.key"))),
            client_ca: client_ca.then(|| file("ca.pem")),
            ..Default::default()
        })
        .unwrap()
        .unwrap()
    }

    fn pkcs12(name: &str, password: &str) -> Result<Option<ClientTls>, String> {
        ClientTls::new(&ClientTlsOptions {
            pkcs12: Some((file(name), Secret::new(password))),
            ..Default::default()
        })
    }

    fn backend(options: BackendTlsOptions) -> BackendTls {
        BackendTls::new(&options, "target").unwrap()
    }

    fn trusting() -> BackendTlsOptions {
        BackendTlsOptions {
            ca: Some(file("ca.pem")),
            ..Default::default()
        }
    }

    /// Runs both handshakes to their end: the client's and the server's outcome.
    fn handshake_pair(
        backend: &BackendTls,
        host: &str,
        server: &ClientTls,
    ) -> (io::Result<TlsStream<Socket>>, io::Result<TlsStream<Socket>>) {
        let (a, b) = pair();
        let name = backend
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::try_from(host.to_owned()).unwrap());
        let client_conn = ClientConnection::new(Arc::clone(&backend.config), name).unwrap();
        let server_conn = ServerConnection::new(Arc::clone(&server.config)).unwrap();
        let mut client = Some(TlsStream::new(a, client_conn));
        let mut server = Some(TlsStream::new(b, server_conn));
        let (mut client_done, mut server_done) = (None, None);
        for _ in 0..10_000 {
            for (stream, done) in [
                (&mut client, &mut client_done),
                (&mut server, &mut server_done),
            ] {
                if done.is_some() {
                    continue;
                }
                match stream.as_mut().unwrap().try_handshake() {
                    Ok(_) => *done = Some(Ok(stream.take().unwrap())),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => *done = Some(Err(e)),
                }
            }
            if client_done.is_some() && server_done.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        // Explained as `BackendTls::connect` and `ClientTls::accept` do.
        (
            client_done
                .expect("the client's handshake did not end")
                .map(|tls| tls.explained_by(backend.fix()))
                .map_err(|e| backend.fix().explain(e)),
            server_done
                .expect("the server's handshake did not end")
                .map(|tls| tls.explained_by(ClientTls::fix()))
                .map_err(|e| ClientTls::fix().explain(e)),
        )
    }

    fn transfer(from: &mut TlsStream<Socket>, to: &mut TlsStream<Socket>, data: &[u8]) {
        let (mut sent, mut got) = (0, Vec::new());
        let mut buf = [0u8; 4096];
        for _ in 0..100_000 {
            if sent < data.len() {
                match from.try_write_vectored(&[IoSlice::new(&data[sent..])]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write: {e}"),
                }
            }
            let _ = from.try_flush();
            match to.try_read(&mut buf) {
                Ok(0) => panic!("the stream ended"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            if got.len() == data.len() {
                break;
            }
        }
        assert!(
            got == data,
            "{} of {} bytes arrived intact",
            got.len(),
            data.len()
        );
    }

    #[test]
    fn mutual_tls_carries_bytes_both_ways() {
        let mut options = trusting();
        options.cert = Some(file("server.pem"));
        options.key = Some(file("server.key"));
        let (client, server) = handshake_pair(&backend(options), "127.0.0.1", &server(true));
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        transfer(&mut client, &mut server, &large);
        transfer(&mut server, &mut client, b"an answer");
    }

    #[test]
    fn a_certificate_of_another_ca_is_refused_with_the_option_to_fix_it() {
        let options = BackendTlsOptions {
            ca: Some(file("other-ca.pem")),
            ..Default::default()
        };
        let (client, _) = handshake_pair(&backend(options), "127.0.0.1", &server(false));
        let e = client.expect_err("refused").to_string();
        assert!(e.contains("signed by a CA this side does not trust"), "{e}");
        assert!(
            e.contains("with --target-tls-ca"),
            "the hint names the option: {e}"
        );
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let options = BackendTlsOptions {
            ca: Some(file("expired-ca.pem")),
            ..Default::default()
        };
        let (client, _) = handshake_pair(
            &backend(options),
            "127.0.0.1",
            &server_with("expired", false),
        );
        let e = client.expect_err("refused").to_string();
        assert!(e.contains("its certificate has expired"), "{e}");
    }

    #[test]
    fn a_certificate_for_another_name_is_refused() {
        let mut options = trusting();
        options.server_name = Some("cassandra.example".into());
        let (client, _) = handshake_pair(&backend(options), "127.0.0.1", &server(false));
        let e = client.expect_err("refused").to_string();
        assert!(e.contains("not valid for the name"), "{e}");
        assert!(
            e.contains("--target-tls-server-name"),
            "the hint names the option: {e}"
        );
        // The insecure switch accepts it.
        let mut options = trusting();
        options.server_name = Some("cassandra.example".into());
        options.insecure = true;
        let (client, server) = handshake_pair(&backend(options), "127.0.0.1", &server(false));
        assert!(client.is_ok() && server.is_ok());
    }

    #[test]
    fn a_client_without_a_certificate_is_refused_when_one_is_required() {
        let (_, server) = handshake_pair(&backend(trusting()), "127.0.0.1", &server(true));
        let e = server.expect_err("refused").to_string();
        assert!(e.contains("no certificate was presented"), "{e}");
    }

    #[test]
    fn a_cluster_requiring_a_client_certificate_names_the_options_that_give_one() {
        // In TLS 1.3 the client's handshake ends before the server checks its certificate:
        // the refusal arrives as an alert on the first read.
        let (client, server) = handshake_pair(&backend(trusting()), "127.0.0.1", &server(true));
        assert!(server.is_err());
        let mut client = client.expect("the client's side of the handshake completes");
        let mut buf = [0u8; 64];
        let e = (0..10_000)
            .find_map(|_| match client.try_read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                    None
                }
                other => Some(other),
            })
            .expect("the alert arrives")
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("requires a client certificate")
                && e.contains("--target-tls-cert and --target-tls-key"),
            "{e}"
        );
    }

    #[test]
    fn options_errors_name_the_option_and_the_file() {
        let missing = BackendTlsOptions {
            ca: Some(file("missing.pem")),
            ..Default::default()
        };
        let e = BackendTls::new(&missing, "source").unwrap_err();
        assert!(
            e.starts_with("--source-tls-ca ") && e.contains("missing.pem"),
            "{e}"
        );
        let half = BackendTlsOptions {
            cert: Some(file("server.pem")),
            ..trusting()
        };
        let e = BackendTls::new(&half, "target").unwrap_err();
        assert!(
            e.contains("--target-tls-cert and --target-tls-key go together"),
            "{e}"
        );
        let e = ClientTls::new(&ClientTlsOptions {
            client_ca: Some(file("ca.pem")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("--proxy-pem-certfile"), "{e}");
        let e = ClientTls::new(&ClientTlsOptions {
            cert: Some(file("ca.pem")),
            key: Some(file("ca.pem")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("--proxy-pem-keyfile "), "{e}");
    }

    #[test]
    fn pkcs12_files_of_every_usual_scheme_serve_clients() {
        for name in ["server.p12", "server-legacy.p12", "server-keytool.p12"] {
            let server = pkcs12(name, "test-only").unwrap().unwrap();
            let (client, server) = handshake_pair(&backend(trusting()), "127.0.0.1", &server);
            let (mut client, mut server) = (client.unwrap(), server.unwrap());
            transfer(&mut client, &mut server, name.as_bytes());
        }
        // keytool's own key pair (self-signed, so the client side takes it unchecked).
        let server = pkcs12("keytool-rsa.p12", "test-only").unwrap().unwrap();
        let unchecked = BackendTlsOptions {
            insecure: true,
            ..Default::default()
        };
        let (client, server) = handshake_pair(&backend(unchecked), "127.0.0.1", &server);
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        transfer(&mut client, &mut server, b"keytool");
        // keytool's EC keys lack their public half: refused, with the way to convert them.
        let e = pkcs12("keytool-ec.p12", "test-only").err().unwrap();
        assert!(
            e.starts_with("--proxy-pkcs12: ") && e.contains("openssl ec"),
            "{e}"
        );
    }

    #[test]
    fn pkcs12_errors_name_the_option_and_never_the_password() {
        let e = pkcs12("server.p12", "not-the-password").err().unwrap();
        assert!(
            e.starts_with("--proxy-pkcs12 ") && e.contains("server.p12"),
            "{e}"
        );
        assert!(e.contains("wrong password"), "{e}");
        assert!(!e.contains("not-the-password"), "{e}");
        let e = pkcs12("server.pem", "test-only").err().unwrap();
        assert!(e.contains("not a PKCS#12 file"), "{e}");
        let e = pkcs12("missing.p12", "test-only").err().unwrap();
        assert!(e.contains("cannot read the file"), "{e}");
        let e = ClientTls::new(&ClientTlsOptions {
            cert: Some(file("server.pem")),
            key: Some(file("server.key")),
            pkcs12: Some((file("server.p12"), Secret::new("test-only"))),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.contains("give one or the other"), "{e}");
    }
}
