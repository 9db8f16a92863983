//! TLS to immudb servers that serve it (`immudb.tls` in the chart): the one CA the hook trusts,
//! turned into a tonic configuration for gRPC and a rustls one for `/readyz`.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tonic::transport::{Certificate, ClientTlsConfig};

/// The CA certificates (PEM) that signed the servers' certificates.
#[derive(Clone, Debug)]
pub struct TrustedCa {
    pem: Arc<[u8]>,
    roots: Arc<rustls::RootCertStore>,
}

impl TrustedCa {
    /// Parses every certificate now, so a bad file fails before any server is touched.
    pub fn from_pem(pem: &[u8]) -> Result<TrustedCa, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("holds no PEM certificate".into());
        }
        Ok(TrustedCa {
            pem: pem.into(),
            roots: Arc::new(roots),
        })
    }

    /// gRPC over TLS to `host`, whose certificate must carry that name (or IP address).
    pub fn grpc(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.pem))
            .domain_name(host)
    }
}

/// The HTTP client's TLS for the metrics port's `/readyz`: trusting only `ca`, or nothing when the
/// servers speak plaintext (reqwest needs a rustls configuration either way).
pub fn https_config(ca: Option<&TrustedCa>) -> rustls::ClientConfig {
    let roots = ca.map_or_else(
        || Arc::new(rustls::RootCertStore::empty()),
        |ca| ca.roots.clone(),
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTP client for immudb's metrics port (and the agents'): no proxy, TLS trusting only `ca`.
pub fn http_client_builder(
    ca: Option<&TrustedCa>,
    timeout: std::time::Duration,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .use_preconfigured_tls(https_config(ca))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_rejected() {
        assert!(TrustedCa::from_pem(b"")
            .unwrap_err()
            .contains("no PEM certificate"));
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(TrustedCa::from_pem(key_only).is_err());
    }

    #[test]
    fn a_generated_ca_is_accepted() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        assert!(TrustedCa::from_pem(ca.cert.pem().as_bytes()).is_ok());
    }
}
