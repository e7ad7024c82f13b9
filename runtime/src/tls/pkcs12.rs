//! PKCS#12 (`.p12`, `.pfx`) files: the proxy's certificate chain and private key in one
//! password-protected file, as Java's `keytool` and `openssl pkcs12` write them. Read with
//! p12-keystore (PBES2 with AES as today's tools write, and the older 3DES/RC2 schemes).

use std::path::Path;

use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use cqlmirror_core::config::Secret;

/// What a PKCS#12 file holds for a TLS server or client.
pub struct Identity {
    /// Leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// An elliptic-curve key: keytool writes those without their public half, which the TLS
    /// library refuses, so a refusal gets a conversion hint.
    pub elliptic: bool,
}

/// How to turn a keytool EC keystore into one the proxy can use, for the error message.
pub const EC_KEY_HINT: &str = "keytool stores EC keys without their public half, which this proxy needs: convert the file with `openssl pkcs12 -in FILE -nodes -out all.pem && openssl ec -in all.pem -out key.pem && openssl pkcs12 -export -in all.pem -inkey key.pem -out fixed.p12`, or give all.pem and key.pem to --proxy-pem-certfile and --proxy-pem-keyfile";

/// The id-ecPublicKey algorithm of PKCS#8.
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

/// The certificate chain and key held in `path`. Errors name `option` and the file, never the
/// password.
pub fn read_identity(path: &Path, password: &Secret, option: &str) -> Result<Identity, String> {
    let data = std::fs::read(path)
        .map_err(|e| format!("{option} {}: cannot read the file: {e}", path.display()))?;
    let store = KeyStore::from_pkcs12(&data, password.expose(), Pkcs12ImportPolicy::Strict)
        .map_err(|e| {
            let reason = match e {
                // The integrity check fails first when the password is wrong.
                p12_keystore::error::Error::MacError(_) => {
                    "wrong password, or the file is damaged: check the password".to_owned()
                }
                other => format!("not a PKCS#12 file this proxy can read: {other}"),
            };
            format!("{option} {}: {reason}", path.display())
        })?;
    let Some((_alias, chain)) = store.private_key_chain() else {
        return Err(format!(
            "{option} {}: the file holds no private key with its certificate (export the key and its certificate chain together)",
            path.display()
        ));
    };
    let certs = chain
        .certs()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    let key = PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec());
    Ok(Identity {
        certs,
        key: PrivateKeyDer::Pkcs8(key),
        elliptic: chain.key().oid().to_string() == EC_PUBLIC_KEY,
    })
}
