//! TLS for ydht: serving HTTPS with a PEM certificate and key (rustls with the
//! `ring` provider), and trusting a private certificate authority as a client.
//!
//! Servers get a [`TlsConfig`] from `--tls-cert` / `--tls-key`
//! (`ServerArgs::tls`) and hand it to `crate::server::serve_with`.
//! Clients (the node client, the gateway's calls to the users service and the
//! replicator, the CLI and `ydht top`) build their HTTP clients with
//! [`client_builder`], which trusts the CA file given once per process with the
//! global `--ca-file` / `YDHT_CA_FILE` ([`trust_ca_file`]). The CA is process-wide
//! on purpose: like the system root store it is a property of the machine's
//! trust, and every service of `ydht serve all` shares it.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::Exit;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A loaded server certificate and key, ready to accept TLS connections; cheap to clone.
#[derive(Clone)]
pub struct TlsConfig(Arc<rustls::ServerConfig>);

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig(<certificate and key>)")
    }
}

impl TlsConfig {
    /// An acceptor for this certificate, for the server's connection tasks.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.0))
    }

    /// Reads the PEM certificate chain at `cert` and the PEM private key at `key`;
    /// any problem is a one-line usage error naming the file and the flag.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|items| items.collect::<Result<Vec<_>, _>>())
            .map_err(|error| {
                Exit::usage(format!(
                    "cannot read TLS certificate {}: {error}; pass a PEM certificate chain with --tls-cert / YDHT_TLS_CERT",
                    cert.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(Exit::usage(format!(
                "no PEM certificate found in {}; pass a PEM certificate chain with --tls-cert / YDHT_TLS_CERT",
                cert.display()
            ))
            .into());
        }
        let private_key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
            Exit::usage(format!(
                "cannot read TLS private key {}: {error}; pass a PEM private key with --tls-key / YDHT_TLS_KEY",
                key.display()
            ))
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .with_safe_default_protocol_versions()
        .map_err(|error| Exit::usage(format!("TLS setup failed: {error}")))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|error| {
            Exit::usage(format!(
                "TLS certificate {} and key {} cannot be used together: {error}; check --tls-cert and --tls-key",
                cert.display(),
                key.display()
            ))
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self(Arc::new(config)))
    }
}

/// `https` with TLS, `http` without: the scheme of a service's URLs.
pub fn scheme(tls: Option<&TlsConfig>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// Extra root certificates every HTTP client of this process trusts.
static EXTRA_ROOTS: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();
/// The same certificates, for clients built on rustls directly ([`rustls_client_config`]).
static EXTRA_ROOT_DERS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();

/// Makes every HTTP client built afterwards with [`client_builder`] trust the
/// PEM certificate(s) in `path`; an unreadable or certificate-less file is a usage error.
/// Only the first call of a process takes effect.
pub fn trust_ca_file(path: &Path) -> anyhow::Result<()> {
    let pem = std::fs::read(path).map_err(|error| {
        Exit::usage(format!("cannot read CA file {}: {error}; check --ca-file / YDHT_CA_FILE", path.display()))
    })?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
        Exit::usage(format!("invalid CA file {}: {error}; it must hold PEM certificates", path.display()))
    })?;
    if certificates.is_empty() {
        return Err(Exit::usage(format!(
            "no PEM certificate found in CA file {}; check --ca-file / YDHT_CA_FILE",
            path.display()
        ))
        .into());
    }
    let ders = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|error| {
        Exit::usage(format!("invalid CA file {}: {error}; it must hold PEM certificates", path.display()))
    })?;
    let _ = EXTRA_ROOTS.set(certificates);
    let _ = EXTRA_ROOT_DERS.set(ders);
    Ok(())
}

/// A rustls client configuration trusting what [`client_builder`] trusts: the
/// public web roots plus the CA file, if one was given.
pub fn rustls_client_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for certificate in EXTRA_ROOT_DERS.get().into_iter().flatten() {
        if let Err(error) = roots.add(certificate.clone()) {
            tracing::warn!(%error, "a certificate of the CA file cannot be a root; ignoring it");
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A `reqwest` client builder that trusts the public web roots plus the CA file, if one was given.
pub fn client_builder() -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder();
    for certificate in EXTRA_ROOTS.get().into_iter().flatten() {
        builder = builder.add_root_certificate(certificate.clone());
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_one_line_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = TlsConfig::load(&missing, &missing).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), crate::error::exit::USAGE);
        let message = error.to_string();
        assert!(message.contains("missing.pem") && message.contains("--tls-cert"), "{message}");
        assert!(!message.contains('\n'), "{message}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let message = TlsConfig::load(&empty, &empty).unwrap_err().to_string();
        assert!(message.contains("no PEM certificate") && message.contains("empty.pem"), "{message}");

        let message = trust_ca_file(&missing).unwrap_err().to_string();
        assert!(message.contains("--ca-file") && message.contains("missing.pem"), "{message}");
        let message = trust_ca_file(&empty).unwrap_err().to_string();
        assert!(message.contains("no PEM certificate"), "{message}");
    }

    #[test]
    fn a_generated_certificate_and_key_load_and_a_wrong_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key, wrong_key) = (dir.path().join("c.pem"), dir.path().join("k.pem"), dir.path().join("w.pem"));
        std::fs::write(&cert, issued.cert.pem()).unwrap();
        std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
        std::fs::write(&wrong_key, other.signing_key.serialize_pem()).unwrap();
        TlsConfig::load(&cert, &key).unwrap();
        let message = TlsConfig::load(&cert, &wrong_key).unwrap_err().to_string();
        assert!(message.contains("cannot be used together"), "{message}");
        let message = TlsConfig::load(&cert, &cert).unwrap_err().to_string();
        assert!(message.contains("private key") && message.contains("--tls-key"), "{message}");
    }
}
