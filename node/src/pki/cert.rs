//! Node certificates: the department and network names they carry, parsing
//! them, and checking them against the network CA and CRL with webpki (the
//! same verifier TLS uses, so a document signature and a connection are
//! judged alike).

use crate::error::{NodeError, Result};
use pdx_crypto::{Suite, VerifyingKey};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use std::sync::Arc;

/// Prefix of the department SAN URI.
pub const DEPT_URI_PREFIX: &str = "urn:pdx:dept:";
/// Prefix of the SAN URI naming the department's audit log (`dept:key id`).
pub const LOG_URI_PREFIX: &str = "urn:pdx:log:";

/// Checks a department code: letters, digits, `-`, `.`; 1-64 characters; no
/// leading/trailing or doubled separators (it becomes a DNS label).
pub fn validate_dept(code: &str) -> Result<()> {
    let ok = !code.is_empty()
        && code.len() <= 63
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !code.starts_with(['-', '.'])
        && !code.ends_with(['-', '.'])
        && !code.contains("..")
        && !code.contains(".-")
        && !code.contains("-.");
    if ok {
        Ok(())
    } else {
        Err(NodeError::Invalid(format!(
            "invalid department code {code:?}: use letters, digits, '-' and '.' (e.g. the 6-digit admdvs code 440000)"
        )))
    }
}

/// Checks a network name (a DNS label).
pub fn validate_network(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(NodeError::Invalid(format!(
            "invalid network name {name:?}: use lower-case letters, digits and '-'"
        )))
    }
}

/// The DNS name in a node's certificate: `<dept>.<network>.pdx` (lower case).
pub fn dns_name(dept: &str, network: &str) -> String {
    format!("{}.{network}.pdx", dept.to_ascii_lowercase())
}

/// rustls's ring provider, with SM2 as the only signature algorithm under `gm`.
pub(crate) fn provider(suite: Suite) -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(match suite {
        Suite::Intl => rustls::crypto::ring::default_provider(),
        Suite::Gm => super::sm2::gm_provider(),
    })
}

/// The suite of a CA certificate, from its key: SM2 is `gm`, anything else
/// `intl` (whose CA is ECDSA P-256).
pub fn suite_of_ca(der: &[u8]) -> Result<Suite> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| NodeError::Pki(format!("unparsable CA certificate: {e}")))?;
    Ok(spki_suite(cert.public_key()))
}

fn spki_suite(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Suite {
    let params = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    if super::sm2::is_sm2_spki(&spki.algorithm.algorithm.to_id_string(), params.as_deref()) {
        Suite::Gm
    } else {
        Suite::Intl
    }
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| NodeError::Tls(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// webpki client-certificate verifier for `ca` with `crls` (fail closed),
/// with the signature algorithms of the CA's suite only.
pub fn webpki_client_verifier(
    ca: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    let check_crls = !crls.is_empty();
    let suite = match ca.first() {
        Some(c) => suite_of_ca(c)?,
        None => Suite::Intl,
    };
    let mut b =
        WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider(suite)).with_crls(crls);
    if check_crls {
        b = b.enforce_revocation_expiration();
    } else {
        // Offline verification of old signatures (regulator tools): chain only.
        b = b.allow_unknown_revocation_status();
    }
    b.build()
        .map_err(|e| NodeError::Tls(format!("client verifier: {e}")))
}

pub(crate) fn webpki_server_verifier(
    ca: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<WebPkiServerVerifier>> {
    let suite = match ca.first() {
        Some(c) => suite_of_ca(c)?,
        None => Suite::Intl,
    };
    WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider(suite))
        .with_crls(crls)
        .enforce_revocation_expiration()
        .build()
        .map_err(|e| NodeError::Tls(format!("server verifier: {e}")))
}

/// What pdx reads from a node certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Department from the SAN URI.
    pub dept: String,
    /// The identity key (Ed25519 under `intl`, SM2 under `gm`).
    pub identity: VerifyingKey,
    /// The certificate's suite (its key's).
    pub suite: Suite,
    /// Serial (hex).
    pub serial: String,
    /// Subject common name.
    pub name: String,
    /// The department's one audit log (`dept:genesis key id`), from the SAN
    /// URI `urn:pdx:log:` — what binds a department to a single log
    /// network-wide. `None` only in certificates not issued by `pdx ca issue`;
    /// such a peer cannot complete a handshake.
    pub log_id: Option<String>,
}

const OID_ED25519: &str = "1.3.101.112";

/// Parses a node certificate: exactly one `urn:pdx:dept:` SAN URI with a valid
/// code, and an Ed25519 (`intl`) or SM2 (`gm`) key; its audit log, when it
/// binds one, of the key's suite. Does not check the chain (see
/// [`CertChecker`]).
pub fn parse_node_cert(der: &[u8]) -> Result<CertInfo> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| NodeError::Pki(format!("unparsable certificate: {e}")))?;
    let mut depts = Vec::new();
    let mut logs = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if let Some(code) = uri.strip_prefix(DEPT_URI_PREFIX) {
                    depts.push(code.to_string());
                } else if let Some(log) = uri.strip_prefix(LOG_URI_PREFIX) {
                    logs.push(log.to_string());
                }
            }
        }
    }
    let dept = match depts.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(NodeError::Pki(
                "certificate has no department SAN URI (urn:pdx:dept:CODE)".into(),
            ));
        }
        _ => {
            return Err(NodeError::Pki(
                "certificate names more than one department".into(),
            ));
        }
    };
    validate_dept(&dept).map_err(|e| NodeError::Pki(format!("certificate department: {e}")))?;
    let spki = cert.public_key();
    let suite = spki_suite(spki);
    let log_id = match logs.as_slice() {
        [] => None,
        [one] => {
            let bound = pdx_audit::LogId::parse(one).filter(|l| l.dept == dept);
            let Some(bound) = bound else {
                return Err(NodeError::Pki(format!(
                    "certificate of {dept} binds the audit log {one:?}, which is not a log of {dept} (dept:16-hex-key-id, :gm for a gm log)"
                )));
            };
            suite.expect(
                bound.suite,
                &format!("the audit log {one} of {dept}'s certificate"),
            )?;
            Some(one.clone())
        }
        _ => {
            return Err(NodeError::Pki(
                "certificate binds more than one audit log".into(),
            ));
        }
    };
    let identity = match suite {
        Suite::Gm => VerifyingKey::from_slice(&spki.subject_public_key.data)?,
        Suite::Intl if spki.algorithm.algorithm.to_id_string() == OID_ED25519 => {
            VerifyingKey::from_slice(&spki.subject_public_key.data)?
        }
        Suite::Intl => {
            return Err(NodeError::Pki(format!(
                "certificate key algorithm {} is neither Ed25519 (intl) nor SM2 (gm)",
                spki.algorithm.algorithm.to_id_string()
            )));
        }
    };
    if identity.suite() != suite {
        return Err(NodeError::Pki(format!(
            "certificate of {dept}: its key does not match its algorithm"
        )));
    }
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok(CertInfo {
        dept,
        identity,
        suite,
        serial: hex::encode(cert.raw_serial()),
        name,
        log_id,
    })
}

/// Refuses a certificate whose key is of another suite than `suite`, with an
/// error naming both (webpki alone would only say the algorithm is unknown).
pub fn check_suite_of_cert(suite: Suite, der: &[u8]) -> Result<()> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| NodeError::Pki(format!("unparsable certificate: {e}")))?;
    Ok(suite.expect(spki_suite(cert.public_key()), "the peer's certificate")?)
}

/// Validates node certificates against the network CA (and, when given, a CRL).
#[derive(Debug, Clone)]
pub struct CertChecker {
    verifier: Arc<dyn ClientCertVerifier>,
    suite: Suite,
}

impl CertChecker {
    /// A checker for `ca`; with `crls`, revoked certificates are refused.
    pub fn new(
        ca: &[CertificateDer<'static>],
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<Self> {
        let suite = match ca.first() {
            Some(c) => suite_of_ca(c)?,
            None => Suite::Intl,
        };
        Ok(CertChecker {
            verifier: webpki_client_verifier(ca, crls)?,
            suite,
        })
    }

    /// The network's suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Validates `der` (chain, validity at `at`, revocation) and parses it. A
    /// certificate of the other suite is refused naming both.
    pub fn check_at(&self, der: &[u8], at: UnixTime) -> Result<CertInfo> {
        check_suite_of_cert(self.suite, der)?;
        let cert = CertificateDer::from(der.to_vec());
        self.verifier
            .verify_client_cert(&cert, &[], at)
            .map_err(|e| NodeError::Pki(format!("certificate not trusted: {e}")))?;
        parse_node_cert(der)
    }

    /// Validates `der` now.
    pub fn check(&self, der: &[u8]) -> Result<CertInfo> {
        self.check_at(der, UnixTime::now())
    }
}

impl pdx_audit::verify::CertificateCheck for CertChecker {
    fn check(&self, der: &[u8]) -> std::result::Result<pdx_audit::verify::CertIdentity, String> {
        self.check_at(der, UnixTime::now())
            .map(identity_of)
            .map_err(|e| e.to_string())
    }

    fn check_at(
        &self,
        der: &[u8],
        at_ms: u64,
    ) -> std::result::Result<pdx_audit::verify::CertIdentity, String> {
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_millis(at_ms));
        CertChecker::check_at(self, der, at)
            .map(identity_of)
            .map_err(|e| e.to_string())
    }
}

fn identity_of(i: CertInfo) -> pdx_audit::verify::CertIdentity {
    // The suite travels in the identity key itself.
    pdx_audit::verify::CertIdentity {
        dept: i.dept,
        identity: i.identity,
        log_id: i.log_id,
    }
}

/// Checks that a CA certificate is self-signed with a valid signature (what
/// can be checked of a CA that is not pinned).
pub fn check_self_signed(der: &[u8]) -> Result<()> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| NodeError::Pki(format!("unparsable CA certificate: {e}")))?;
    if spki_suite(cert.public_key()) == Suite::Gm {
        if cert.signature_algorithm.algorithm.to_id_string() != "1.2.156.10197.1.501" {
            return Err(NodeError::Pki(
                "the SM2 CA certificate is not signed SM2-with-SM3".into(),
            ));
        }
        return super::sm2::verify_signed(
            &cert.public_key().subject_public_key.data,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        )
        .map_err(|e| {
            NodeError::Pki(format!(
                "the CA certificate's self-signature does not verify: {e}"
            ))
        });
    }
    cert.verify_signature(None).map_err(|e| {
        NodeError::Pki(format!(
            "the CA certificate's self-signature does not verify: {e}"
        ))
    })
}
