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
    /// The serial this certificate renews (`ca issue --renew`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renews: Option<String>,
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

/// The key a node certificate certifies.
enum SubjectKey {
    /// intl: the SubjectPublicKeyInfo (DER) of an Ed25519 key.
    Intl(Vec<u8>),
    /// gm: an SM2 key.
    Gm(pdx_crypto::VerifyingKey),
}

/// A fresh signing key of the network's suite: its PKCS#8 PEM (written once,
/// 0600, for the department), its key id and how a certificate names it.
struct NewKey {
    pem: String,
    id: pdx_crypto::KeyId,
    subject: SubjectKey,
}

fn new_key(suite: Suite) -> Result<NewKey> {
    match suite {
        Suite::Intl => {
            let pair = KeyPair::generate_for(&rcgen::PKCS_ED25519)
                .map_err(pki("generating an Ed25519 key"))?;
            Ok(NewKey {
                id: pdx_crypto::SigningKey::from_pkcs8(&pair.serialize_der())?.key_id(),
                subject: SubjectKey::Intl(rcgen::PublicKeyData::subject_public_key_info(&pair)),
                pem: pair.serialize_pem(),
            })
        }
        Suite::Gm => {
            let key = pdx_crypto::SigningKey::generate(Suite::Gm)?;
            Ok(NewKey {
                pem: pem("PRIVATE KEY", key.pkcs8_der())?,
                id: key.key_id(),
                subject: SubjectKey::Gm(key.verifying_key()),
            })
        }
    }
}

/// What a node certificate says: department, display name, the one audit
/// log it binds (`urn:pdx:log:`) and the key it certifies.
struct NodeCertSpec<'a> {
    dept: &'a str,
    name: &'a str,
    log_uri: String,
    key: SubjectKey,
}

/// A signed node certificate: serial, expiry and PEM.
struct SignedNodeCert {
    serial: Vec<u8>,
    not_after: OffsetDateTime,
    pem: String,
}

/// Signs a node certificate with the CA in `dir`, valid for
/// [`NODE_CERT_DAYS`]: the same names and extensions under either suite.
fn sign_node_cert(dir: &Path, state: &CaState, spec: NodeCertSpec<'_>) -> Result<SignedNodeCert> {
    let now = OffsetDateTime::now_utc();
    let not_before = now - Duration::hours(1);
    let not_after = now + Duration::days(NODE_CERT_DAYS);
    let dept_uri = format!("{DEPT_URI_PREFIX}{}", spec.dept);
    let dns = dns_name(spec.dept, &state.network);
    match spec.key {
        SubjectKey::Gm(key) => {
            let issuer = load_sm2_issuer(dir)?;
            let serial = random_serial_bytes()?;
            let der = sm2::certificate(
                sm2::CertSpec {
                    subject: sm2::node_name(spec.name, &state.network, spec.dept)?,
                    subject_key: key,
                    serial: &serial,
                    not_before: system_time(not_before),
                    not_after: system_time(not_after),
                    ca: false,
                    dns: vec![dns],
                    uris: vec![dept_uri, spec.log_uri],
                },
                &issuer.name,
                &issuer.key,
            )?;
            Ok(SignedNodeCert {
                serial: serial.to_vec(),
                not_after,
                pem: pem("CERTIFICATE", &der)?,
            })
        }
        SubjectKey::Intl(spki) => {
            let issuer = load_issuer(dir)?;
            let key = rcgen::SubjectPublicKeyInfo::from_der(&spki)
                .map_err(pki("the node key to certify"))?;
            let mut params =
                CertificateParams::new(vec![dns]).map_err(pki("node certificate parameters"))?;
            for uri in [dept_uri, spec.log_uri] {
                params.subject_alt_names.push(SanType::URI(
                    uri.clone()
                        .try_into()
                        .map_err(|e| NodeError::Pki(format!("SAN URI {uri}: {e:?}")))?,
                ));
            }
            params
                .distinguished_name
                .push(DnType::CommonName, spec.name);
            params.distinguished_name.push(
                DnType::OrganizationName,
                format!("pdx network {}", state.network),
            );
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, spec.dept);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.use_authority_key_identifier_extension = true;
            params.not_before = not_before;
            params.not_after = not_after;
            let serial = random_serial()?;
            params.serial_number = Some(serial.clone());
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(pki("signing the node certificate"))?;
            Ok(SignedNodeCert {
                serial: serial.to_bytes(),
                not_after,
                pem: cert.pem(),
            })
        }
    }
}

fn log_uri(dept: &str, genesis_key: pdx_crypto::KeyId, suite: Suite) -> String {
    format!(
        "{LOG_URI_PREFIX}{}",
        pdx_audit::LogId {
            dept: dept.to_string(),
            genesis_key,
            suite,
        }
    )
}

/// `pdx ca issue`: a node certificate, its identity key and the genesis key
/// of its audit log (Ed25519 under `intl`, SM2 under `gm`) into `out`.
pub fn ca_issue(dir: &Path, dept: &str, name: &str, out: &Path) -> Result<IssuedCert> {
    validate_dept(dept)?;
    let mut state = load_state(dir)?;
    let identity = new_key(state.suite)?;
    // The department's one audit log is fixed now: its genesis key is made
    // here, and its id goes into the certificate (docs/protocol.md §1).
    let audit = new_key(state.suite)?;
    let cert = sign_node_cert(
        dir,
        &state,
        NodeCertSpec {
            dept,
            name,
            log_uri: log_uri(dept, audit.id, state.suite),
            key: identity.subject,
        },
    )?;
    write_issued(dir, out, Some(&identity.pem), Some(&audit.pem), &cert.pem)?;
    record_issued(dir, &mut state, &cert, dept, name, None)
}

/// `pdx ca issue --renew --cert CURRENT`: a new certificate for the
/// department of `current` (which must be `dept` when given), binding the same audit log (a department keeps
/// its one log for life), for the key `current` certifies or, with
/// `new_key`, a fresh one written to `out/node.key`. `current` may have
/// expired, but must have been issued by this CA; a revoked certificate's key
/// is never certified again.
pub fn ca_renew(
    dir: &Path,
    current: &Path,
    dept: Option<&str>,
    name: Option<&str>,
    new_identity: bool,
    out: &Path,
) -> Result<IssuedCert> {
    let mut state = load_state(dir)?;
    let der = read_cert(current)?;
    let ca = read_certs(&dir.join("ca.crt"))?;
    // Expiry is what renewal is for: the chain is checked when it was valid.
    let since = validity(&der)?.not_before_ms.saturating_add(1000);
    let at = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_millis(
        u64::try_from(since).unwrap_or(0),
    ));
    let info = CertChecker::new(&ca, Vec::new())?
        .check_at(&der, at)
        .map_err(|e| {
            NodeError::Pki(format!(
                "{}: not a node certificate of this CA ({}): {e}",
                current.display(),
                dir.display()
            ))
        })?;
    if let Some(d) = dept
        && d != info.dept
    {
        return Err(NodeError::Invalid(format!(
            "--dept {d}: {} is the certificate of {}",
            current.display(),
            info.dept
        )));
    }
    if !state.issued.iter().any(|c| c.serial == info.serial) {
        return Err(NodeError::NotFound(format!(
            "{}: this CA has no record of issuing serial {}; `pdx ca list --dir {}` shows the issued ones",
            current.display(),
            info.serial,
            dir.display()
        )));
    }
    if !new_identity && state.revoked.iter().any(|r| r.serial == info.serial) {
        return Err(NodeError::Invalid(format!(
            "certificate {} of {} is revoked, so its key may be compromised and is not certified again: renew with --new-key",
            info.serial, info.dept
        )));
    }
    let Some(log_id) = info.log_id.clone() else {
        return Err(NodeError::Pki(format!(
            "{}: binds no audit log (urn:pdx:log:), so a renewal cannot keep one; issue a new certificate",
            current.display()
        )));
    };
    for f in ["node.crt", "node.key", "audit.key"] {
        if out.join(f).exists() {
            return Err(NodeError::Invalid(format!(
                "{} already holds {f}; give an empty --out so `pdx cert install` cannot pick up a stale key",
                out.display()
            )));
        }
    }
    let (key, key_pem) = if new_identity {
        let k = new_key(state.suite)?;
        (k.subject, Some(k.pem))
    } else {
        let key = match state.suite {
            Suite::Gm => SubjectKey::Gm(info.identity),
            Suite::Intl => {
                let (_, c) = x509_parser::parse_x509_certificate(&der)
                    .map_err(|e| NodeError::Pki(format!("{}: {e}", current.display())))?;
                SubjectKey::Intl(c.public_key().raw.to_vec())
            }
        };
        (key, None)
    };
    let name = name.unwrap_or(&info.name).to_string();
    let cert = sign_node_cert(
        dir,
        &state,
        NodeCertSpec {
            dept: &info.dept,
            name: &name,
            log_uri: format!("{LOG_URI_PREFIX}{log_id}"),
            key,
        },
    )?;
    write_issued(dir, out, key_pem.as_deref(), None, &cert.pem)?;
    record_issued(dir, &mut state, &cert, &info.dept, &name, Some(info.serial))
}

/// Writes what `ca issue` hands a department: keys (0600) where new, its
/// certificate, the CA certificate and the current CRL.
fn write_issued(
    dir: &Path,
    out: &Path,
    key_pem: Option<&str>,
    audit_pem: Option<&str>,
    cert_pem: &str,
) -> Result<()> {
    create_dir(out, 0o700)?;
    if let Some(k) = key_pem {
        write_secret(&out.join("node.key"), k.as_bytes())?;
    }
    if let Some(k) = audit_pem {
        write_secret(&out.join("audit.key"), k.as_bytes())?;
    }
    write_atomic(&out.join("node.crt"), cert_pem.as_bytes(), 0o644)?;
    let ca_pem = std::fs::read(dir.join("ca.crt")).map_err(NodeError::io(dir.join("ca.crt")))?;
    write_atomic(&out.join("ca.crt"), &ca_pem, 0o644)?;
    let crl = std::fs::read(dir.join("crl.pem")).map_err(NodeError::io(dir.join("crl.pem")))?;
    write_atomic(&out.join("crl.pem"), &crl, 0o644)
}

fn record_issued(
    dir: &Path,
    state: &mut CaState,
    cert: &SignedNodeCert,
    dept: &str,
    name: &str,
    renews: Option<String>,
) -> Result<IssuedCert> {
    let issued = IssuedCert {
        serial: hex::encode(&cert.serial),
        dept: dept.to_string(),
        name: name.to_string(),
        not_after: cert
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        renews,
    };
    state.issued.push(issued.clone());
    save_state(dir, state)?;
    Ok(issued)
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

/// Reads the first PEM certificate of `path` (a node's own certificate).
pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>> {
    read_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| NodeError::Pki(format!("{}: no certificate found", path.display())))
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
