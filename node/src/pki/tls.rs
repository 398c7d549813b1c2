//! TLS for QUIC: TLS 1.3 only, ALPN `pdx/1`, mutual authentication against the
//! network CA with CRL enforcement (fail closed: unknown revocation status and
//! expired CRLs are refused), and verifiers whose CRL can be replaced while the
//! node runs (`pdx crl update`).
//!
//! Beyond webpki's chain checks, both sides require exactly one department SAN
//! URI in the peer certificate; a client additionally pins the department it
//! dialled (the DNS name `<dept>.<network>.pdx`).

use super::cert::{self, provider, webpki_client_verifier, webpki_server_verifier};
use crate::error::{NodeError, Result};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme,
};
use std::sync::{Arc, RwLock};

/// The ALPN protocol id.
pub const ALPN: &[u8] = b"pdx/1";

#[derive(Debug)]
struct DeptSanError(String);
impl std::fmt::Display for DeptSanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DeptSanError {}

fn other_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        DeptSanError(e.to_string()),
    ))))
}

/// A certificate of the other suite is refused before webpki, naming both.
fn same_suite(
    suite: pdx_crypto::Suite,
    cert: &CertificateDer<'_>,
) -> std::result::Result<(), TlsError> {
    cert::check_suite_of_cert(suite, cert).map_err(other_error)
}

fn dept_of(cert: &CertificateDer<'_>) -> std::result::Result<String, TlsError> {
    cert::parse_node_cert(cert).map(|i| i.dept).map_err(|e| {
        TlsError::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            DeptSanError(e.to_string()),
        ))))
    })
}

/// The trust material a node verifies peers with; the CRL can be swapped.
#[derive(Debug)]
pub struct Trust {
    /// The network's suite (the CA's).
    pub suite: pdx_crypto::Suite,
    ca: Vec<CertificateDer<'static>>,
    hints: Vec<DistinguishedName>,
    client: RwLock<Arc<dyn ClientCertVerifier>>,
    server: RwLock<Arc<WebPkiServerVerifier>>,
}

impl Trust {
    /// Trust in `ca`, enforcing `crls`.
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<Arc<Self>> {
        if crls.is_empty() {
            return Err(NodeError::Tls(
                "no CRL: the node refuses to run without one (copy the CA's crl.pem)".into(),
            ));
        }
        let suite = match ca.first() {
            Some(c) => cert::suite_of_ca(c)?,
            None => return Err(NodeError::Tls("no CA certificate".into())),
        };
        let client = webpki_client_verifier(&ca, crls.clone())?;
        let hints = client.root_hint_subjects().to_vec();
        let server = webpki_server_verifier(&ca, crls)?;
        Ok(Arc::new(Trust {
            suite,
            ca,
            hints,
            client: RwLock::new(client),
            server: RwLock::new(server),
        }))
    }

    /// Replaces the CRL for new handshakes.
    pub fn reload_crls(&self, crls: Vec<CertificateRevocationListDer<'static>>) -> Result<()> {
        if crls.is_empty() {
            return Err(NodeError::Tls("the new CRL file holds no CRL".into()));
        }
        let client = webpki_client_verifier(&self.ca, crls.clone())?;
        let server = webpki_server_verifier(&self.ca, crls)?;
        *self
            .client
            .write()
            .map_err(|_| NodeError::Tls("verifier lock poisoned".into()))? = client;
        *self
            .server
            .write()
            .map_err(|_| NodeError::Tls("verifier lock poisoned".into()))? = server;
        Ok(())
    }

    fn client(&self) -> std::result::Result<Arc<dyn ClientCertVerifier>, TlsError> {
        self.client
            .read()
            .map(|v| v.clone())
            .map_err(|_| TlsError::General("verifier lock poisoned".into()))
    }

    fn server(&self) -> std::result::Result<Arc<WebPkiServerVerifier>, TlsError> {
        self.server
            .read()
            .map(|v| v.clone())
            .map_err(|_| TlsError::General("verifier lock poisoned".into()))
    }

    /// Checks a peer certificate now (chain, CRL, department SAN); used to
    /// re-check live connections after a CRL update.
    pub fn check_peer(&self, cert: &CertificateDer<'_>) -> std::result::Result<String, TlsError> {
        self.client()?
            .verify_client_cert(cert, &[], UnixTime::now())?;
        dept_of(cert)
    }
}

/// Server side: requires a client certificate from the CA, not revoked, with a department.
#[derive(Debug)]
pub struct PeerClientVerifier {
    trust: Arc<Trust>,
}

impl ClientCertVerifier for PeerClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.trust.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, TlsError> {
        same_suite(self.trust.suite, end_entity)?;
        let verified = self
            .trust
            .client()?
            .verify_client_cert(end_entity, intermediates, now);
        tracing::debug!(
            "client certificate verification: {:?}",
            verified.as_ref().err()
        );
        let verified = verified?;
        dept_of(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, TlsError> {
        self.trust
            .client()?
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, TlsError> {
        self.trust
            .client()?
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust
            .client()
            .map(|c| c.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// Client side: the server must be the department dialled.
#[derive(Debug)]
pub struct PeerServerVerifier {
    trust: Arc<Trust>,
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, TlsError> {
        same_suite(self.trust.suite, end_entity)?;
        let v = self.trust.server()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        dept_of(end_entity)?;
        Ok(v)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, TlsError> {
        self.trust
            .server()?
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, TlsError> {
        self.trust
            .server()?
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust
            .server()
            .map(|s| s.supported_verify_schemes())
            .unwrap_or_default()
    }
}

fn key_der(identity_pkcs8: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity_pkcs8.to_vec()))
}

/// rustls server configuration for QUIC.
pub fn server_config(
    trust: &Arc<Trust>,
    cert: Vec<CertificateDer<'static>>,
    identity_pkcs8: &[u8],
) -> Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider(trust.suite))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NodeError::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(PeerClientVerifier {
            trust: trust.clone(),
        }))
        .with_single_cert(cert, key_der(identity_pkcs8))
        .map_err(|e| NodeError::Tls(format!("node certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption: every connection presents and re-verifies its certificate
    // against the current CRL (a resumed session would skip that check).
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// rustls client configuration for QUIC.
pub fn client_config(
    trust: &Arc<Trust>,
    cert: Vec<CertificateDer<'static>>,
    identity_pkcs8: &[u8],
) -> Result<rustls::ClientConfig> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider(trust.suite))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NodeError::Tls(e.to_string()))?
        // Not a weaker check: the custom verifier runs webpki with the CRL and
        // then also requires the department SAN.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerServerVerifier {
            trust: trust.clone(),
        }))
        .with_client_auth_cert(cert, key_der(identity_pkcs8))
        .map_err(|e| NodeError::Tls(format!("node certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}
