//! The TLS options: to clients, and to each cluster.

use std::path::PathBuf;

use clap::Args;
use clap::builder::BoolishValueParser;

use cqlmirror_core::config::Secret;

use super::read_password;
use crate::tls::{BackendTls, BackendTlsOptions, ClientTls, ClientTlsOptions, TlsSettings};

/// TLS to clients and to the clusters.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// The proxy's certificate chain for clients (PEM). With it and --proxy-pem-keyfile,
    /// clients must connect with TLS.
    #[arg(long, value_name = "FILE", env = "CQLMIRROR_PROXY_PEM_CERTFILE")]
    pub proxy_pem_certfile: Option<PathBuf>,

    /// The private key of --proxy-pem-certfile (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", env = "CQLMIRROR_PROXY_PEM_KEYFILE")]
    pub proxy_pem_keyfile: Option<PathBuf>,

    /// The proxy's certificate chain and private key for clients in one PKCS#12 file (.p12,
    /// .pfx, as `keytool` or `openssl pkcs12 -export` write it), instead of
    /// --proxy-pem-certfile and --proxy-pem-keyfile.
    #[arg(long, value_name = "FILE", env = "CQLMIRROR_PROXY_PKCS12",
          conflicts_with_all = ["proxy_pem_certfile", "proxy_pem_keyfile"])]
    pub proxy_pkcs12: Option<PathBuf>,

    /// The password of --proxy-pkcs12 [default: empty]. Prefer the environment variable or
    /// --proxy-pkcs12-password-file: command lines are visible to other users of the machine.
    #[arg(long, value_name = "PASSWORD", env = "CQLMIRROR_PROXY_PKCS12_PASSWORD",
          hide_env_values = true, value_parser = parse_secret, requires = "proxy_pkcs12",
          conflicts_with = "proxy_pkcs12_password_file")]
    pub proxy_pkcs12_password: Option<Secret>,

    /// A file holding the password of --proxy-pkcs12 (its first line).
    #[arg(
        long,
        value_name = "FILE",
        env = "CQLMIRROR_PROXY_PKCS12_PASSWORD_FILE",
        requires = "proxy_pkcs12"
    )]
    pub proxy_pkcs12_password_file: Option<PathBuf>,

    /// CA certificates (PEM) that clients' certificates must be signed by: clients must
    /// present one (mutual TLS), unless --proxy-client-auth optional.
    #[arg(long, value_name = "FILE", env = "CQLMIRROR_PROXY_CLIENT_CA")]
    pub proxy_client_ca: Option<PathBuf>,

    /// With --proxy-client-ca: whether clients must present a certificate (required) or may
    /// connect without one (optional; one they present is still checked).
    #[arg(long, value_name = "required|optional", default_value = "required",
          value_parser = ["required", "optional"], env = "CQLMIRROR_PROXY_CLIENT_AUTH")]
    pub proxy_client_auth: String,

    /// Connect to the source with TLS (implied by any other --source-tls-* option).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_SOURCE_TLS")]
    pub source_tls: bool,

    /// The older proxy's switch (its backend TLS was on by default): TLS to the source stays
    /// off. Cannot be combined with --source-tls.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_DISABLE_SOURCE_TLS")]
    pub disable_source_tls: bool,

    /// CA certificates (PEM) the source's certificates must be signed by [default: the
    /// system's CA certificates].
    #[arg(long, value_name = "FILE", env = "CQLMIRROR_SOURCE_TLS_CA")]
    pub source_tls_ca: Option<PathBuf>,

    /// The name the source's certificates must be valid for [default: the address or host
    /// name of each node connected to]; also sent as SNI.
    #[arg(long, value_name = "NAME", env = "CQLMIRROR_SOURCE_TLS_SERVER_NAME")]
    pub source_tls_server_name: Option<String>,

    /// A client certificate (PEM) for the source, which requires one (mutual TLS).
    #[arg(
        long,
        value_name = "FILE",
        env = "CQLMIRROR_SOURCE_TLS_CERT",
        requires = "source_tls_key"
    )]
    pub source_tls_cert: Option<PathBuf>,

    /// The private key of --source-tls-cert (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "CQLMIRROR_SOURCE_TLS_KEY",
        requires = "source_tls_cert"
    )]
    pub source_tls_key: Option<PathBuf>,

    /// Accept any certificate from the source, unchecked: anyone on the network path can
    /// impersonate it. For tests and emergencies only; logged as a warning at start-up.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_SOURCE_TLS_INSECURE")]
    pub source_tls_insecure: bool,

    /// Connect to the target with TLS (implied by any other --target-tls-* option).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_TARGET_TLS")]
    pub target_tls: bool,

    /// The older proxy's switch: TLS to the target stays off. Cannot be combined with
    /// --target-tls.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_DISABLE_TARGET_TLS")]
    pub disable_target_tls: bool,

    /// CA certificates (PEM) the target's certificates must be signed by [default: the
    /// system's CA certificates].
    #[arg(long, value_name = "FILE", env = "CQLMIRROR_TARGET_TLS_CA")]
    pub target_tls_ca: Option<PathBuf>,

    /// The name the target's certificates must be valid for [default: the address or host
    /// name of each node connected to]; also sent as SNI.
    #[arg(long, value_name = "NAME", env = "CQLMIRROR_TARGET_TLS_SERVER_NAME")]
    pub target_tls_server_name: Option<String>,

    /// A client certificate (PEM) for the target, which requires one (mutual TLS).
    #[arg(
        long,
        value_name = "FILE",
        env = "CQLMIRROR_TARGET_TLS_CERT",
        requires = "target_tls_key"
    )]
    pub target_tls_cert: Option<PathBuf>,

    /// The private key of --target-tls-cert (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "CQLMIRROR_TARGET_TLS_KEY",
        requires = "target_tls_cert"
    )]
    pub target_tls_key: Option<PathBuf>,

    /// Accept any certificate from the target, unchecked: anyone on the network path can
    /// impersonate it. For tests and emergencies only; logged as a warning at start-up.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_TARGET_TLS_INSECURE")]
    pub target_tls_insecure: bool,
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
}

/// One cluster's TLS options, gathered: `None` when TLS to it is off.
fn cluster_options(
    cluster: &str,
    on: bool,
    disabled: bool,
    options: BackendTlsOptions,
) -> Result<Option<BackendTlsOptions>, String> {
    let details = options != BackendTlsOptions::default();
    if disabled && (on || details) {
        return Err(format!(
            "--disable-{cluster}-tls contradicts --{cluster}-tls and the other --{cluster}-tls-* options: give one or the other"
        ));
    }
    Ok((on || details).then_some(options))
}

impl TlsArgs {
    /// Every certificate and key file named, to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        [
            &self.proxy_pem_certfile,
            &self.proxy_pem_keyfile,
            &self.proxy_pkcs12,
            &self.proxy_pkcs12_password_file,
            &self.proxy_client_ca,
            &self.source_tls_ca,
            &self.source_tls_cert,
            &self.source_tls_key,
            &self.target_tls_ca,
            &self.target_tls_cert,
            &self.target_tls_key,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    /// Reads the certificates and keys and builds the TLS settings; errors name the option
    /// and the file.
    pub fn settings(&self) -> Result<TlsSettings, String> {
        let pkcs12 = match &self.proxy_pkcs12 {
            None => None,
            Some(file) => {
                let password = match (
                    &self.proxy_pkcs12_password,
                    &self.proxy_pkcs12_password_file,
                ) {
                    (Some(password), _) => password.clone(),
                    (None, Some(path)) => Secret::new(read_password(path)?),
                    (None, None) => Secret::new(""),
                };
                Some((file.clone(), password))
            }
        };
        let clients = ClientTls::new(&ClientTlsOptions {
            cert: self.proxy_pem_certfile.clone(),
            key: self.proxy_pem_keyfile.clone(),
            pkcs12,
            client_ca: self.proxy_client_ca.clone(),
            client_cert_optional: self.proxy_client_auth == "optional",
        })?;
        let source = cluster_options(
            "source",
            self.source_tls,
            self.disable_source_tls,
            BackendTlsOptions {
                ca: self.source_tls_ca.clone(),
                server_name: self.source_tls_server_name.clone(),
                cert: self.source_tls_cert.clone(),
                key: self.source_tls_key.clone(),
                insecure: self.source_tls_insecure,
            },
        )?;
        let target = cluster_options(
            "target",
            self.target_tls,
            self.disable_target_tls,
            BackendTlsOptions {
                ca: self.target_tls_ca.clone(),
                server_name: self.target_tls_server_name.clone(),
                cert: self.target_tls_cert.clone(),
                key: self.target_tls_key.clone(),
                insecure: self.target_tls_insecure,
            },
        )?;
        Ok(TlsSettings {
            clients,
            clusters: [
                source.map(|o| BackendTls::new(&o, "source")).transpose()?,
                target.map(|o| BackendTls::new(&o, "target")).transpose()?,
            ],
        })
    }
}
