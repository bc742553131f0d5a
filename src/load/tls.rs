//! TLS for the load generator: one rustls client configuration (ring provider, no OpenSSL) built
//! from [`ClientOptions`], shared by the open model's pooled client and the closed model.
//!
//! Trust comes from the bundled Mozilla roots (webpki-roots), so a run behaves the same on any
//! machine whatever its system store holds; `ca_file` adds roots for private CAs (and lets tests
//! trust a self-signed certificate); `insecure` turns verification off, as `curl -k` does, for
//! staging targets with throwaway certificates. ALPN is left to the connector, which offers the
//! HTTP versions the run asked for.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Which HTTP version(s) to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1 for `http://`; for `https://`, whatever ALPN settles (h2 or HTTP/1.1).
    #[default]
    Auto,
    /// HTTP/1.1 only (ALPN offers `http/1.1` over TLS).
    Http1,
    /// HTTP/2 only: h2c with prior knowledge for `http://`, ALPN `h2` for `https://`.
    Http2,
}

/// How the client connects: protocol version and TLS trust. The default is what experiments use.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// HTTP version(s) to speak.
    pub version: HttpVersion,
    /// Accept any server certificate (no verification at all).
    pub insecure: bool,
    /// PEM file of extra trusted root certificates.
    pub ca_file: Option<PathBuf>,
    /// Open model over plain HTTP/1.1: send through the closed model's minimal client
    /// ([`super::h1`]) instead of hyper's pooled client. `rattle load` and experiments
    /// ([`super::start`]) set it.
    pub minimal_h1: bool,
}

/// Why a TLS configuration cannot be built.
#[derive(thiserror::Error, Debug)]
pub enum TlsError {
    /// The CA file could not be read or holds no PEM certificate.
    #[error("cannot read CA certificates from {path}: {reason}")]
    CaFile {
        /// The file as given.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A certificate of the CA file was rejected as a trust anchor.
    #[error("CA certificate in {path} rejected")]
    BadCa {
        /// The file as given.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the protocol versions (cannot happen with the ring provider's defaults).
    #[error("TLS configuration rejected")]
    Config(#[source] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `opts`, without ALPN (the connector sets it).
pub fn client_config(opts: &ClientOptions) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    if opts.insecure {
        let verifier = NoVerification(provider.signature_verification_algorithms);
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &opts.ca_file {
        let ca_err = |reason: String| TlsError::CaFile {
            path: path.clone(),
            reason,
        };
        // Bounded, regular files only (issue #19): a CA file naming /dev/zero must not hang.
        let pem = crate::fsutil::read_bounded(path, 16 * 1024 * 1024)
            .map_err(|e| ca_err(e.to_string()))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("no PEM certificate in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|source| TlsError::BadCa {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// A verifier that accepts every certificate (`--insecure`), though it still checks that the
/// handshake signatures are valid for the certificate presented.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_insecure_and_missing_ca_file() {
        assert!(client_config(&ClientOptions::default()).is_ok());
        let insecure = ClientOptions {
            insecure: true,
            ..ClientOptions::default()
        };
        assert!(client_config(&insecure).is_ok());
        let missing = ClientOptions {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..ClientOptions::default()
        };
        let err = client_config(&missing).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("/nonexistent/ca.pem")),
            "{err:?}"
        );
    }
}
