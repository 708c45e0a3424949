//! TLS for the Entra ID endpoint: real clients (azure_identity) insist on an https authority. The
//! simulator is its own private PKI — a CA made at first start and kept in the state, whose
//! certificate clients trust through `SSL_CERT_FILE`, the way a private cloud's CA is trusted.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS material in {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS material in {path} is not valid PEM: {detail}")]
    Pem { path: String, detail: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The CA certificate (PEM) clients must trust.
    pub ca_file: PathBuf,
}

/// Loads the CA and server certificate from `dir`, making them on first use (for localhost,
/// 127.0.0.1 and `listen`).
pub fn load_or_create(dir: &Path, listen: std::net::IpAddr) -> Result<Tls, TlsError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| TlsError::Io { path, source }
    };
    let (ca_file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    if !(ca_file.exists() && cert_file.exists() && key_file.exists()) {
        // Made beside and renamed into place, so that simulators sharing one directory
        // (--tls-dir) and starting together agree on one CA.
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let staging = parent.join(format!(
            ".{}.{}.tmp",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("tls"),
            std::process::id()
        ));
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "flexdisk-sim private CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !listen.is_loopback() {
            names.push(listen.to_string());
        }
        let mut params = rcgen::CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "flexdisk-sim login");
        let cert = params.signed_by(&key, &issuer)?;
        for (name, content) in [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", cert.pem()),
            ("server.key", key.serialize_pem()),
        ] {
            let f = staging.join(name);
            std::fs::write(&f, content).map_err(io(&f))?;
        }
        // An empty leftover directory is replaced; a complete one made meanwhile wins.
        let _ = std::fs::remove_dir(dir);
        if std::fs::rename(&staging, dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    let pem = |path: &Path, detail: String| TlsError::Pem {
        path: path.display().to_string(),
        detail,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .map_err(|e| pem(&cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(&cert_file, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| pem(&key_file, e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_file,
    })
}
