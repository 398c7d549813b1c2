//! Fixtures for audit tests: a log in a real RocksDB in a temp dir, keys bound to
//! a department by a minimal certificate stand-in (the real X.509 check lives in
//! pdx-node and is exercised by its integration tests).
#![allow(
    dead_code,
    missing_debug_implementations,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use pdx_audit::bundle::{BundleHeader, BundleReader, write_entry, write_header};
use pdx_audit::checkpoint::{KeyEndorsement, SignedEndorsement};
use pdx_audit::store::{AuditConfig, column_families, now_ms};
use pdx_audit::verify::{CertIdentity, CertificateCheck, Report, VerifyInputs, verify};
use pdx_audit::{AuditLog, EntryDraft, EventKind, LogId};
use pdx_crypto::{SigningKey, Suite, VerifyingKey};
use std::path::Path;
use std::sync::Arc;

/// "Certificate" = dept bytes || 0 || u8 key length || identity key (Ed25519
/// or SM2) || bound log id.
pub struct RawCerts;

impl CertificateCheck for RawCerts {
    fn check(&self, der: &[u8]) -> Result<CertIdentity, String> {
        let pos = der.iter().position(|&b| b == 0).ok_or("no separator")?;
        let len = usize::from(*der.get(pos + 1).ok_or("short certificate")?);
        let key = der.get(pos + 2..pos + 2 + len).ok_or("short certificate")?;
        let identity = VerifyingKey::from_slice(key).map_err(|e| e.to_string())?;
        let log = &der[pos + 2 + len..];
        Ok(CertIdentity {
            dept: String::from_utf8_lossy(&der[..pos]).into_owned(),
            identity,
            log_id: (!log.is_empty()).then(|| String::from_utf8_lossy(log).into_owned()),
        })
    }
}

pub fn cert(dept: &str, identity: &SigningKey, log: &LogId) -> Vec<u8> {
    let mut c = dept.as_bytes().to_vec();
    c.push(0);
    let key = identity.verifying_key();
    c.push(key.as_bytes().len() as u8);
    c.extend_from_slice(key.as_bytes());
    c.extend_from_slice(log.to_text().as_bytes());
    c
}

pub struct TestLog {
    pub log: AuditLog,
    pub identity: SigningKey,
    pub audit_key: SigningKey,
    pub dept: String,
}

pub fn open_db(dir: &Path) -> Arc<rocksdb::DB> {
    let mut o = rocksdb::Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    Arc::new(rocksdb::DB::open_cf_descriptors(&o, dir, column_families()).unwrap())
}

pub fn endorse(
    identity: &SigningKey,
    dept: &str,
    log: &LogId,
    key: &SigningKey,
    from_seq: u64,
) -> SignedEndorsement {
    SignedEndorsement::sign(
        &KeyEndorsement {
            log_id: log.to_text(),
            audit_key: key.verifying_key(),
            from_seq,
            time_ms: now_ms(),
        },
        identity,
        cert(dept, identity, log),
    )
    .unwrap()
}

/// An intl log (most properties are suite-independent).
pub fn new_log(dir: &Path, dept: &str, every: u64) -> TestLog {
    new_log_in(Suite::Intl, dir, dept, every)
}

/// A log of `suite` with keys of that suite.
pub fn new_log_in(suite: Suite, dir: &Path, dept: &str, every: u64) -> TestLog {
    let identity = SigningKey::generate(suite).unwrap();
    let audit_key = SigningKey::generate(suite).unwrap();
    let log_id = LogId {
        dept: dept.into(),
        genesis_key: audit_key.key_id(),
        suite,
    };
    let e = endorse(&identity, dept, &log_id, &audit_key, 0);
    let log = AuditLog::open(
        open_db(dir),
        log_id,
        SigningKey::from_pkcs8(audit_key.pkcs8_der()).unwrap(),
        || Ok(e),
        AuditConfig {
            checkpoint_every: every,
            checkpoint_interval_ms: 1_000_000,
        },
    )
    .unwrap();
    TestLog {
        log,
        identity,
        audit_key,
        dept: dept.into(),
    }
}

pub fn append(t: &TestLog, n: usize, tag: &str) {
    for i in 0..n {
        let mut d = EntryDraft::new(EventKind::Send, &t.dept, "tester");
        d.counterparty = Some("100000".into());
        d.subject.release = Some(format!("{tag}-{i}"));
        d.record_count = Some(i as u64);
        t.log.append(d).unwrap();
    }
}

/// A bundle split into its header and entries, for tampering.
pub struct Parts {
    pub header: BundleHeader,
    pub entries: Vec<Vec<u8>>,
}

pub fn read_parts(path: &Path) -> Parts {
    let mut r = BundleReader::open(path).unwrap();
    let header = r.header().clone();
    let mut entries = Vec::new();
    let mut buf = Vec::new();
    while r.next_entry(&mut buf).unwrap() {
        entries.push(buf.clone());
    }
    Parts { header, entries }
}

pub fn write_parts(path: &Path, p: &Parts) {
    let mut h = p.header.clone();
    h.entry_count = p.entries.len() as u64;
    let mut out = Vec::new();
    write_header(&mut out, &h).unwrap();
    for e in &p.entries {
        write_entry(&mut out, e).unwrap();
    }
    out.extend_from_slice(pdx_audit::bundle::END);
    std::fs::write(path, out).unwrap();
}

pub fn verify_path(path: &Path, witnesses: &[&Path]) -> Report {
    let inputs = VerifyInputs {
        witnesses: witnesses
            .iter()
            .map(|w| {
                (
                    w.display().to_string(),
                    pdx_audit::bundle::read_header(w).unwrap(),
                )
            })
            .collect(),
        trusted: Vec::new(),
        certificates: Some(&RawCerts),
        ca: pdx_audit::verify::CaTrust::Pinned,
    };
    verify(BundleReader::open(path).unwrap(), "test", &inputs).unwrap()
}
