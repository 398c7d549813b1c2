//! Audit-log benchmarks (docs/benchmarks.md): durable group-committed append
//! throughput, offline verification throughput of an exported bundle, and
//! inclusion-proof latency. Usage:
//!
//! ```text
//! cargo run --release -p pdx-audit --example audit_bench -- DIR [ENTRIES] [intl|gm]
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_debug_implementations
)]

use pdx_audit::bundle::{BundleReader, export};
use pdx_audit::checkpoint::{KeyEndorsement, SignedEndorsement};
use pdx_audit::store::{AuditConfig, column_families, now_ms};
use pdx_audit::verify::{CertIdentity, CertificateCheck, VerifyInputs, verify};
use pdx_audit::{AuditLog, EntryDraft, EventKind, FieldRef, LogId};
use pdx_crypto::{SigningKey, Suite, VerifyingKey};
use std::sync::Arc;
use std::time::Instant;

/// "Certificate" = the identity key; it binds the bench log (`.0`).
struct RawCerts(String);
impl CertificateCheck for RawCerts {
    fn check(&self, der: &[u8]) -> Result<CertIdentity, String> {
        Ok(CertIdentity {
            dept: "440000".into(),
            identity: VerifyingKey::from_slice(der).map_err(|e| e.to_string())?,
            log_id: Some(self.0.clone()),
        })
    }
}

fn open(dir: &std::path::Path, identity: &SigningKey, audit: &SigningKey) -> AuditLog {
    let mut o = rocksdb::Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.increase_parallelism(2);
    let db = Arc::new(rocksdb::DB::open_cf_descriptors(&o, dir, column_families()).unwrap());
    let log_id = LogId {
        dept: "440000".into(),
        genesis_key: audit.key_id(),
        suite: audit.suite(),
    };
    let e = SignedEndorsement::sign(
        &KeyEndorsement {
            log_id: log_id.to_text(),
            audit_key: audit.verifying_key(),
            from_seq: 0,
            time_ms: now_ms(),
        },
        identity,
        identity.verifying_key().as_bytes().to_vec(),
    )
    .unwrap();
    AuditLog::open(
        db,
        log_id,
        SigningKey::from_pkcs8(audit.pkcs8_der()).unwrap(),
        || Ok(e),
        AuditConfig {
            checkpoint_every: 65_536,
            checkpoint_interval_ms: 10_000,
        },
    )
    .unwrap()
}

/// A realistic ~300-byte `send` entry.
fn draft(suite: Suite, i: u64) -> EntryDraft {
    let mut d = EntryDraft::new(EventKind::Send, "440000", "steward-li");
    d.subject.dataset = Some("settlement-2026-10".into());
    d.subject.release = Some(format!("{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15));
    d.subject.digest = Some(suite.digest(&i.to_le_bytes()));
    d.counterparty = Some("100000".into());
    d.agreement = Some("DSA-2026-001".into());
    d.purpose = Some("monthly clearing".into());
    d.fields = vec![
        FieldRef {
            name: "psn_no".into(),
            class: "personal/direct-identifier/encrypt-for".into(),
        },
        FieldRef {
            name: "medfee_sumamt".into(),
            class: "personal/other/keep".into(),
        },
    ];
    d.record_count = Some(4096);
    d.payload_digest = Some(suite.digest(&i.to_be_bytes()));
    d
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| "/tmp/pdx-audit-bench".into()),
    );
    let total: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let suite = args
        .get(3)
        .map(|s| Suite::parse(s).expect("intl or gm"))
        .unwrap_or_default();
    println!("suite {suite}");
    let identity = SigningKey::generate(suite).unwrap();
    let audit = SigningKey::generate(suite).unwrap();

    // 1. Durable appends, group-committed: 1M entries from 4 threads, 3 runs.
    let mut rates = Vec::new();
    for run in 0..3 {
        let log = Arc::new(open(&dir.join(format!("append{run}")), &identity, &audit));
        let n = 1_000_000u64;
        let t = Instant::now();
        let threads: Vec<_> = (0..4u64)
            .map(|k| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut i = k;
                    while i < n {
                        let batch: Vec<EntryDraft> =
                            (0..256).map(|j| draft(suite, i + j * 4)).collect();
                        log.append_many(batch).unwrap();
                        i += 4 * 256;
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let rate = log.size() as f64 / t.elapsed().as_secs_f64();
        println!(
            "append run {run}: {} entries durable in {:.2?} = {rate:.0} entries/s",
            log.size(),
            t.elapsed()
        );
        rates.push(rate);
    }
    println!(
        "APPEND median: {:.0} entries/s (4 threads, 256 entries per call, fsync per group)",
        median(rates)
    );

    // Single-entry appends from many threads (group commit does the batching).
    let log = Arc::new(open(&dir.join("single"), &identity, &audit));
    let t = Instant::now();
    let threads: Vec<_> = (0..32u64)
        .map(|k| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..2_000u64 {
                    log.append(draft(suite, k * 1_000_000 + i)).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    println!(
        "APPEND single-entry calls: {:.0} entries/s (32 threads)",
        64_000.0 / t.elapsed().as_secs_f64()
    );

    // 2. A large log, exported and verified.
    let log = open(&dir.join("big"), &identity, &audit);
    let t = Instant::now();
    let mut i = 0;
    while i < total {
        let batch: Vec<EntryDraft> = (i..(i + 4096).min(total))
            .map(|i| draft(suite, i))
            .collect();
        i += batch.len() as u64;
        log.append_many(batch).unwrap();
    }
    println!("built a {}-entry log in {:.2?}", log.size(), t.elapsed());
    let bundle = dir.join("big.bundle");
    let t = Instant::now();
    let header = export(&log, Vec::new(), &bundle).unwrap();
    let bytes = std::fs::metadata(&bundle).unwrap().len();
    println!(
        "exported {} entries ({} MB) in {:.2?}",
        header.entry_count,
        bytes / 1_000_000,
        t.elapsed()
    );
    let certs = RawCerts(header.log_id.clone());
    let mut vrates = Vec::new();
    for run in 0..3 {
        let inputs = VerifyInputs {
            certificates: Some(&certs),
            ..Default::default()
        };
        let t = Instant::now();
        let r = verify(BundleReader::open(&bundle).unwrap(), "big", &inputs).unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(format!("{:?}", r.verdict), "Valid", "{:#?}", r.findings);
        println!(
            "verify run {run}: {} entries in {secs:.2}s = {:.0} entries/s",
            r.entries,
            r.entries as f64 / secs
        );
        vrates.push(r.entries as f64 / secs);
    }
    println!(
        "VERIFY median: {:.0} entries/s (leaf hashing on one thread per core, one batch ahead of the checks)",
        median(vrates)
    );

    // 3. Inclusion proofs against the full tree.
    let size = log.size();
    let mut lat = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let seq = x % size;
        let t = Instant::now();
        let p = log.inclusion_proof(seq, size).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(p.len() <= 64);
    }
    println!(
        "PROOF median: {:.1} µs per inclusion proof at {size} entries (p99 {:.1} µs)",
        median(lat.clone()),
        {
            lat.sort_by(|a, b| a.total_cmp(b));
            lat[lat.len() * 99 / 100]
        }
    );
}
