//! TLS server configuration from PEM files, shared by the HTTP API and the Postgres wire
//! endpoint (rustls with the ring provider; no process-wide provider is installed).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS {what}: {message}")]
pub struct TlsError {
    /// The file or step.
    pub what: String,
    /// What is wrong.
    pub message: String,
}

fn err(what: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError {
        what: what.display().to_string(),
        message: e.to_string(),
    }
}

/// A server configuration for the PEM certificate chain `cert` and private key `key`, with
/// the given ALPN protocols.
pub fn server_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert, e))?;
    if certs.is_empty() {
        return Err(err(cert, "no certificate in the file"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(Path::new("protocol versions"), e))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| err(Path::new("certificate/key"), e))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
