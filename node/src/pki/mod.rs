//! The network PKI: a CA (ECDSA P-256, rcgen) that issues node certificates
//! carrying the department as SAN URI `urn:pdx:dept:CODE`, revokes them into a
//! CRL, and the certificate checks every other part of the node relies on.
//!
//! CA directory:
//! ```text
//! CA_DIR/ca.crt          CA certificate (PEM)
//! CA_DIR/ca.key          CA private key (PKCS#8 PEM, 0600)
//! CA_DIR/crl.pem         current CRL (re-signed on every revocation)
//! CA_DIR/ca-state.json   network name, issued and revoked serials, CRL number
//! ```

use crate::config::{create_dir, write_atomic, write_secret};
use crate::error::{NodeError, Result};

pub mod cert;
pub mod tls;

pub use cert::{
    CertChecker, CertInfo, DEPT_URI_PREFIX, LOG_URI_PREFIX, dns_name, parse_node_cert,
    validate_dept, validate_network,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// How long a node certificate is valid.
pub const NODE_CERT_DAYS: i64 = 730;
/// How long a CRL is valid; `pdx ca crl` re-signs it.
pub const CRL_DAYS: i64 = 30;

fn pki(what: &str) -> impl FnOnce(rcgen::Error) -> NodeError + '_ {
    move |e| NodeError::Pki(format!("{what}: {e}"))
}

#[derive(Serialize, Deserialize, Default)]
struct CaState {
    network: String,
    crl_number: u64,
    issued: Vec<IssuedCert>,
    revoked: Vec<RevokedCert>,
}

/// A certificate the CA issued.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Serial (hex).
    pub serial: String,
    /// Department.
    pub dept: String,
    /// Display name.
    pub name: String,
    /// Expiry (RFC 3339).
    pub not_after: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RevokedCert {
    serial: String,
    time_unix: i64,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("ca-state.json")
}

fn load_state(dir: &Path) -> Result<CaState> {
    let p = state_path(dir);
    let text = std::fs::read_to_string(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => NodeError::NotFound(format!(
            "{}: no CA here; create one with `pdx ca init --dir {} --network NAME`",
            p.display(),
            dir.display()
        )),
        _ => NodeError::io(&p)(e),
    })?;
    serde_json::from_str(&text).map_err(|e| NodeError::corrupt(p.display().to_string(), e))
}

fn save_state(dir: &Path, s: &CaState) -> Result<()> {
    let text = serde_json::to_vec_pretty(s).map_err(|e| NodeError::corrupt("ca-state.json", e))?;
    write_atomic(&state_path(dir), &text, 0o644)
}

fn random_serial() -> Result<SerialNumber> {
    let mut b = pdx_crypto::rng::bytes::<16>()?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte, fixed length
    Ok(SerialNumber::from_slice(&b))
}

fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let key_path = dir.join("ca.key");
    let key_pem = crate::config::read_secret(&key_path)?;
    let key_pem = std::str::from_utf8(&key_pem)
        .map_err(|_| NodeError::Pki(format!("{}: not PEM", key_path.display())))?;
    let key = KeyPair::from_pem(key_pem).map_err(pki("loading the CA key"))?;
    let cert_path = dir.join("ca.crt");
    let cert_pem = std::fs::read_to_string(&cert_path).map_err(NodeError::io(&cert_path))?;
    Issuer::from_ca_cert_pem(&cert_pem, key).map_err(pki("loading the CA certificate"))
}

/// What `ca init` created.
#[derive(Clone, Debug, Serialize)]
pub struct CaCreated {
    /// CA directory.
    pub dir: String,
    /// Network name.
    pub network: String,
    /// CA certificate serial (hex).
    pub serial: String,
    /// SHA-256 fingerprint of the CA certificate (hex), to pin out of band.
    pub fingerprint_sha256: String,
}

/// `pdx ca init`: creates the network CA.
pub fn ca_init(dir: &Path, network: &str) -> Result<CaCreated> {
    validate_network(network)?;
    if dir.join("ca.key").exists() {
        return Err(NodeError::Invalid(format!(
            "{} already holds a CA; refusing to overwrite it",
            dir.display()
        )));
    }
    create_dir(dir, 0o700)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(pki("generating the CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki("CA parameters"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("pdx network CA ({network})"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, format!("pdx network {network}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    let serial = random_serial()?;
    params.serial_number = Some(serial.clone());
    let cert = params
        .self_signed(&key)
        .map_err(pki("signing the CA certificate"))?;
    write_secret(&dir.join("ca.key"), key.serialize_pem().as_bytes())?;
    write_atomic(&dir.join("ca.crt"), cert.pem().as_bytes(), 0o644)?;
    let state = CaState {
        network: network.to_string(),
        crl_number: 0,
        issued: Vec::new(),
        revoked: Vec::new(),
    };
    save_state(dir, &state)?;
    write_crl(dir)?;
    Ok(CaCreated {
        dir: dir.display().to_string(),
        network: network.to_string(),
        serial: hex::encode(serial.to_bytes()),
        fingerprint_sha256: hex::encode(
            ring::digest::digest(&ring::digest::SHA256, cert.der()).as_ref(),
        ),
    })
}

/// Re-signs the CRL from the CA state (new number, fresh validity).
pub fn write_crl(dir: &Path) -> Result<PathBuf> {
    let mut state = load_state(dir)?;
    let issuer = load_issuer(dir)?;
    state.crl_number += 1;
    let now = OffsetDateTime::now_utc();
    let mut revoked = Vec::new();
    for r in &state.revoked {
        let serial = hex::decode(&r.serial).map_err(|e| NodeError::corrupt("ca-state.json", e))?;
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: OffsetDateTime::from_unix_timestamp(r.time_unix).unwrap_or(now),
            reason_code: Some(RevocationReason::Unspecified),
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(CRL_DAYS),
        crl_number: SerialNumber::from(state.crl_number),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer).map_err(pki("signing the CRL"))?;
    let path = dir.join("crl.pem");
    write_atomic(
        &path,
        crl.pem().map_err(pki("encoding the CRL"))?.as_bytes(),
        0o644,
    )?;
    save_state(dir, &state)?;
    Ok(path)
}

/// `pdx ca issue`: a node certificate and its Ed25519 key into `out`.
pub fn ca_issue(dir: &Path, dept: &str, name: &str, out: &Path) -> Result<IssuedCert> {
    validate_dept(dept)?;
    let mut state = load_state(dir)?;
    let issuer = load_issuer(dir)?;
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(pki("generating the node key"))?;
    let dns = dns_name(dept, &state.network);
    let mut params =
        CertificateParams::new(vec![dns]).map_err(pki("node certificate parameters"))?;
    // The department's one audit log is fixed now: its genesis key is made
    // here, and its id goes into the certificate (docs/protocol.md §1).
    let audit_pair =
        KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(pki("generating the audit key"))?;
    let audit = pdx_crypto::SigningKey::from_pkcs8(&audit_pair.serialize_der())?;
    let log_uri = format!("{LOG_URI_PREFIX}{dept}:{}", audit.key_id().to_hex());
    for uri in [format!("{DEPT_URI_PREFIX}{dept}"), log_uri] {
        params.subject_alt_names.push(SanType::URI(
            uri.clone()
                .try_into()
                .map_err(|e| NodeError::Pki(format!("SAN URI {uri}: {e:?}")))?,
        ));
    }
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(
        DnType::OrganizationName,
        format!("pdx network {}", state.network),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, dept);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(NODE_CERT_DAYS);
    let serial = random_serial()?;
    params.serial_number = Some(serial.clone());
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(pki("signing the node certificate"))?;
    create_dir(out, 0o700)?;
    write_secret(&out.join("node.key"), key.serialize_pem().as_bytes())?;
    write_secret(
        &out.join("audit.key"),
        audit_pair.serialize_pem().as_bytes(),
    )?;
    write_atomic(&out.join("node.crt"), cert.pem().as_bytes(), 0o644)?;
    let ca_pem = std::fs::read(dir.join("ca.crt")).map_err(NodeError::io(dir.join("ca.crt")))?;
    write_atomic(&out.join("ca.crt"), &ca_pem, 0o644)?;
    let crl = std::fs::read(dir.join("crl.pem")).map_err(NodeError::io(dir.join("crl.pem")))?;
    write_atomic(&out.join("crl.pem"), &crl, 0o644)?;
    let issued = IssuedCert {
        serial: hex::encode(serial.to_bytes()),
        dept: dept.to_string(),
        name: name.to_string(),
        not_after: params
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    };
    state.issued.push(issued.clone());
    save_state(dir, &state)?;
    Ok(issued)
}

/// `pdx ca revoke`: adds a serial to the CRL and re-signs it.
pub fn ca_revoke(dir: &Path, serial: &str) -> Result<PathBuf> {
    let serial = serial
        .trim()
        .trim_start_matches("0x")
        .replace(':', "")
        .to_ascii_lowercase();
    let mut state = load_state(dir)?;
    if !state.issued.iter().any(|c| c.serial == serial) {
        return Err(NodeError::NotFound(format!(
            "this CA never issued serial {serial}; `pdx ca list --dir {}` shows the issued ones",
            dir.display()
        )));
    }
    if !state.revoked.iter().any(|r| r.serial == serial) {
        state.revoked.push(RevokedCert {
            serial,
            time_unix: OffsetDateTime::now_utc().unix_timestamp(),
        });
        save_state(dir, &state)?;
    }
    write_crl(dir)
}

/// Certificates the CA issued, with whether each is revoked.
pub fn ca_list(dir: &Path) -> Result<Vec<(IssuedCert, bool)>> {
    let state = load_state(dir)?;
    Ok(state
        .issued
        .iter()
        .map(|c| {
            (
                c.clone(),
                state.revoked.iter().any(|r| r.serial == c.serial),
            )
        })
        .collect())
}

/// Reads PEM certificates.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| NodeError::Pki(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| NodeError::Pki(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(NodeError::Pki(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads PEM CRLs.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| NodeError::Pki(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| NodeError::Pki(format!("{}: {e}", path.display())))
}
