//! The network PKI: a CA that issues node certificates carrying the
//! department as SAN URI `urn:pdx:dept:CODE`, revokes them into a CRL, and the
//! certificate checks every other part of the node relies on. The network's
//! suite is chosen here, once (`pdx ca init --suite`): `intl` is an ECDSA
//! P-256 CA with Ed25519 node keys (rcgen); `gm` is an SM2 CA with SM2 node
//! keys, certificates and CRLs signed SM2-with-SM3 ([`sm2`]).
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
pub mod sm2;
pub mod tls;

pub use cert::{
    CertChecker, CertInfo, DEPT_URI_PREFIX, LOG_URI_PREFIX, dns_name, parse_node_cert, suite_of_ca,
    validate_dept, validate_network,
};
use pdx_crypto::Suite;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivatePkcs8KeyDer};
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
    /// The network's suite (absent in CAs made before suites were named: intl).
    #[serde(default)]
    suite: Suite,
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

fn random_serial_bytes() -> Result<[u8; 16]> {
    let mut b = pdx_crypto::rng::bytes::<16>()?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte, fixed length
    Ok(b)
}

fn random_serial() -> Result<SerialNumber> {
    Ok(SerialNumber::from_slice(&random_serial_bytes()?))
}

fn pem(label: &str, der: &[u8]) -> Result<String> {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der)
        .map_err(|e| NodeError::Pki(format!("PEM encoding of {label}: {e}")))
}

fn system_time(t: OffsetDateTime) -> std::time::SystemTime {
    t.into()
}

/// A gm CA's signing key and name.
struct Sm2Issuer {
    key: pdx_crypto::SigningKey,
    name: x509_cert::name::Name,
}

fn load_sm2_issuer(dir: &Path) -> Result<Sm2Issuer> {
    let key_path = dir.join("ca.key");
    let key_pem = crate::config::read_secret(&key_path)?;
    let der = PrivatePkcs8KeyDer::from_pem_slice(&key_pem)
        .map_err(|e| NodeError::Pki(format!("{}: {e}", key_path.display())))?;
    let key = pdx_crypto::SigningKey::from_pkcs8(der.secret_pkcs8_der())?;
    Suite::Gm.expect(key.suite(), &format!("the CA key {}", key_path.display()))?;
    let cert_path = dir.join("ca.crt");
    let ca = read_certs(&cert_path)?;
    let (name, public) = sm2::ca_subject(&ca[0])?;
    if public != key.verifying_key() {
        return Err(NodeError::Pki(format!(
            "{} does not hold the key of {}",
            key_path.display(),
            cert_path.display()
        )));
    }
    Ok(Sm2Issuer { key, name })
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
    /// The network's suite: `intl` or `gm`.
    pub suite: Suite,
    /// The CA's algorithms.
    pub algorithms: String,
}

/// `pdx ca init`: creates the network CA of `suite`.
pub fn ca_init(dir: &Path, network: &str, suite: Suite) -> Result<CaCreated> {
    validate_network(network)?;
    if dir.join("ca.key").exists() {
        return Err(NodeError::Invalid(format!(
            "{} already holds a CA; refusing to overwrite it",
            dir.display()
        )));
    }
    create_dir(dir, 0o700)?;
    let now = OffsetDateTime::now_utc();
    let (serial, cert_der) = match suite {
        Suite::Intl => rcgen_ca(dir, network, now)?,
        Suite::Gm => {
            let key = pdx_crypto::SigningKey::generate(Suite::Gm)?;
            let name = sm2::ca_name(network)?;
            let serial = random_serial_bytes()?;
            let der = sm2::certificate(
                sm2::CertSpec {
                    subject: name.clone(),
                    subject_key: key.verifying_key(),
                    serial: &serial,
                    not_before: system_time(now - Duration::hours(1)),
                    not_after: system_time(now + Duration::days(3650)),
                    ca: true,
                    dns: Vec::new(),
                    uris: Vec::new(),
                },
                &name,
                &key,
            )?;
            write_secret(
                &dir.join("ca.key"),
                pem("PRIVATE KEY", key.pkcs8_der())?.as_bytes(),
            )?;
            write_atomic(
                &dir.join("ca.crt"),
                pem("CERTIFICATE", &der)?.as_bytes(),
                0o644,
            )?;
            (serial.to_vec(), der)
        }
    };
    let state = CaState {
        network: network.to_string(),
        suite,
        crl_number: 0,
        issued: Vec::new(),
        revoked: Vec::new(),
    };
    save_state(dir, &state)?;
    write_crl(dir)?;
    Ok(CaCreated {
        dir: dir.display().to_string(),
        network: network.to_string(),
        serial: hex::encode(serial),
        fingerprint_sha256: hex::encode(
            ring::digest::digest(&ring::digest::SHA256, &cert_der).as_ref(),
        ),
        suite,
        algorithms: suite.algorithms().to_string(),
    })
}

/// The intl CA: ECDSA P-256 with rcgen. Returns (serial, DER).
fn rcgen_ca(dir: &Path, network: &str, now: OffsetDateTime) -> Result<(Vec<u8>, Vec<u8>)> {
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
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    let serial = random_serial()?;
    params.serial_number = Some(serial.clone());
    let cert = params
        .self_signed(&key)
        .map_err(pki("signing the CA certificate"))?;
    write_secret(&dir.join("ca.key"), key.serialize_pem().as_bytes())?;
    write_atomic(&dir.join("ca.crt"), cert.pem().as_bytes(), 0o644)?;
    Ok((serial.to_bytes(), cert.der().to_vec()))
}

/// Re-signs the CRL from the CA state (new number, fresh validity).
pub fn write_crl(dir: &Path) -> Result<PathBuf> {
    let mut state = load_state(dir)?;
    state.crl_number += 1;
    let now = OffsetDateTime::now_utc();
    let path = dir.join("crl.pem");
    if state.suite == Suite::Gm {
        let issuer = load_sm2_issuer(dir)?;
        let mut revoked = Vec::new();
        for r in &state.revoked {
            let serial =
                hex::decode(&r.serial).map_err(|e| NodeError::corrupt("ca-state.json", e))?;
            let at = OffsetDateTime::from_unix_timestamp(r.time_unix).unwrap_or(now);
            revoked.push((serial, system_time(at)));
        }
        let der = sm2::crl(
            &issuer.name,
            &issuer.key,
            state.crl_number,
            system_time(now - Duration::minutes(5)),
            system_time(now + Duration::days(CRL_DAYS)),
            &revoked,
        )?;
        write_atomic(&path, pem("X509 CRL", &der)?.as_bytes(), 0o644)?;
        save_state(dir, &state)?;
        return Ok(path);
    }
    let issuer = load_issuer(dir)?;
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
    write_atomic(
        &path,
        crl.pem().map_err(pki("encoding the CRL"))?.as_bytes(),
        0o644,
    )?;
    save_state(dir, &state)?;
    Ok(path)
}

/// `pdx ca issue`: a node certificate, its identity key and the genesis key
/// of its audit log (Ed25519 under `intl`, SM2 under `gm`) into `out`.
pub fn ca_issue(dir: &Path, dept: &str, name: &str, out: &Path) -> Result<IssuedCert> {
    validate_dept(dept)?;
    let mut state = load_state(dir)?;
    if state.suite == Suite::Gm {
        return sm2_issue(dir, &mut state, dept, name, out);
    }
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
    let log_uri = format!(
        "{LOG_URI_PREFIX}{}",
        pdx_audit::LogId {
            dept: dept.to_string(),
            genesis_key: audit.key_id(),
            suite: Suite::Intl,
        }
    );
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
    write_issued(
        dir,
        out,
        &key.serialize_pem(),
        &audit_pair.serialize_pem(),
        &cert.pem(),
    )?;
    record_issued(
        dir,
        &mut state,
        serial.to_bytes(),
        dept,
        name,
        params.not_after,
    )
}

/// Writes what `ca issue` hands a department: keys (0600), its certificate,
/// the CA certificate and the current CRL.
fn write_issued(
    dir: &Path,
    out: &Path,
    key_pem: &str,
    audit_pem: &str,
    cert_pem: &str,
) -> Result<()> {
    create_dir(out, 0o700)?;
    write_secret(&out.join("node.key"), key_pem.as_bytes())?;
    write_secret(&out.join("audit.key"), audit_pem.as_bytes())?;
    write_atomic(&out.join("node.crt"), cert_pem.as_bytes(), 0o644)?;
    let ca_pem = std::fs::read(dir.join("ca.crt")).map_err(NodeError::io(dir.join("ca.crt")))?;
    write_atomic(&out.join("ca.crt"), &ca_pem, 0o644)?;
    let crl = std::fs::read(dir.join("crl.pem")).map_err(NodeError::io(dir.join("crl.pem")))?;
    write_atomic(&out.join("crl.pem"), &crl, 0o644)
}

fn record_issued(
    dir: &Path,
    state: &mut CaState,
    serial: Vec<u8>,
    dept: &str,
    name: &str,
    not_after: OffsetDateTime,
) -> Result<IssuedCert> {
    let issued = IssuedCert {
        serial: hex::encode(serial),
        dept: dept.to_string(),
        name: name.to_string(),
        not_after: not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    };
    state.issued.push(issued.clone());
    save_state(dir, state)?;
    Ok(issued)
}

/// `ca issue` on a gm network: SM2 identity and audit keys, an SM2 certificate
/// with the same names and extensions as an intl one.
fn sm2_issue(
    dir: &Path,
    state: &mut CaState,
    dept: &str,
    name: &str,
    out: &Path,
) -> Result<IssuedCert> {
    let issuer = load_sm2_issuer(dir)?;
    let key = pdx_crypto::SigningKey::generate(Suite::Gm)?;
    let audit = pdx_crypto::SigningKey::generate(Suite::Gm)?;
    let log_uri = format!(
        "{LOG_URI_PREFIX}{}",
        pdx_audit::LogId {
            dept: dept.to_string(),
            genesis_key: audit.key_id(),
            suite: Suite::Gm,
        }
    );
    let now = OffsetDateTime::now_utc();
    let not_after = now + Duration::days(NODE_CERT_DAYS);
    let serial = random_serial_bytes()?;
    let der = sm2::certificate(
        sm2::CertSpec {
            subject: sm2::node_name(name, &state.network, dept)?,
            subject_key: key.verifying_key(),
            serial: &serial,
            not_before: system_time(now - Duration::hours(1)),
            not_after: system_time(not_after),
            ca: false,
            dns: vec![dns_name(dept, &state.network)],
            uris: vec![format!("{DEPT_URI_PREFIX}{dept}"), log_uri],
        },
        &issuer.name,
        &issuer.key,
    )?;
    write_issued(
        dir,
        out,
        &pem("PRIVATE KEY", key.pkcs8_der())?,
        &pem("PRIVATE KEY", audit.pkcs8_der())?,
        &pem("CERTIFICATE", &der)?,
    )?;
    record_issued(dir, state, serial.to_vec(), dept, name, not_after)
}

/// The suite of the CA in `dir`.
pub fn ca_suite(dir: &Path) -> Result<Suite> {
    Ok(load_state(dir)?.suite)
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

/// When a certificate is valid, in ms since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Not before.
    pub not_before_ms: i64,
    /// Not after.
    pub not_after_ms: i64,
}

/// The validity of a DER certificate (either suite).
pub fn validity(der: &[u8]) -> Result<Validity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| NodeError::Pki(format!("certificate does not parse: {e}")))?;
    let v = cert.validity();
    Ok(Validity {
        not_before_ms: v.not_before.timestamp().saturating_mul(1000),
        not_after_ms: v.not_after.timestamp().saturating_mul(1000),
    })
}

/// When a CRL was issued and is next due, in ms since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrlTimes {
    /// thisUpdate.
    pub this_update_ms: i64,
    /// nextUpdate, when the CRL names one.
    pub next_update_ms: Option<i64>,
}

/// The times of the newest CRL installed in `home` (None: no CRL).
pub fn installed_crl_times(home: &crate::config::Home) -> Result<Option<CrlTimes>> {
    let path = home.crl();
    let mut newest: Option<CrlTimes> = None;
    for der in read_crls(&path)? {
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
            .map_err(|e| NodeError::Pki(format!("{}: CRL does not parse: {e}", path.display())))?;
        let t = CrlTimes {
            this_update_ms: crl.last_update().timestamp().saturating_mul(1000),
            next_update_ms: crl
                .next_update()
                .map(|n| n.timestamp().saturating_mul(1000)),
        };
        if newest.is_none_or(|n| t.this_update_ms > n.this_update_ms) {
            newest = Some(t);
        }
    }
    Ok(newest)
}
