//! The verdict table of docs/audit-format.md §6.2 from an outside verifier's
//! view: broken framing and unknown formats are verdicts, not errors; a
//! corrupted item of peers' data is a finding and the log is still verified;
//! a forged cosignature is tampering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_audit::bundle::{BundleReader, export};
use pdx_audit::verify::{Case, Report, Severity, Verdict, VerifyInputs, unreadable, verify};

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let t = new_log(&dir.path().join("db"), "440000", 8);
    append(&t, 20, "r");
    let bundle = dir.path().join("a.bundle");
    export(&t.log, Vec::new(), &bundle).unwrap();
    (dir, bundle)
}

/// Verifies like `pdx audit verify`: an unopenable bundle becomes a report.
fn verdict_of(path: &std::path::Path) -> Report {
    match BundleReader::open(path) {
        Ok(r) => verify(
            r,
            "test",
            &VerifyInputs {
                certificates: Some(&RawCerts),
                ..Default::default()
            },
        )
        .unwrap(),
        Err(e) => unreadable("test", &e).unwrap_or_else(|| panic!("not a verdict: {e}")),
    }
}

fn has(r: &Report, case: Case, severity: Severity) -> bool {
    r.findings
        .iter()
        .any(|f| f.case == case && f.severity == severity)
}

#[test]
fn bytes_after_the_end_marker_are_tampering() {
    let (_d, bundle) = setup();
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes.extend_from_slice(b"extra");
    std::fs::write(&bundle, bytes).unwrap();
    let r = verdict_of(&bundle);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(
        has(&r, Case::BrokenFraming, Severity::Tampered),
        "{:#?}",
        r.findings
    );
}

#[test]
fn a_wrong_entry_count_is_tampering() {
    let (_d, bundle) = setup();
    let mut p = read_parts(&bundle);
    p.entries.pop();
    let mut h = p.header.clone();
    h.entry_count = p.entries.len() as u64 + 1;
    let mut out = Vec::new();
    pdx_audit::bundle::write_header(&mut out, &h).unwrap();
    for e in &p.entries {
        pdx_audit::bundle::write_entry(&mut out, e).unwrap();
    }
    out.extend_from_slice(pdx_audit::bundle::END);
    std::fs::write(&bundle, out).unwrap();
    let r = verdict_of(&bundle);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(
        has(&r, Case::BrokenFraming, Severity::Tampered),
        "{:#?}",
        r.findings
    );
}

#[test]
fn a_broken_header_or_header_length_is_tampering() {
    let (_d, bundle) = setup();
    let bytes = std::fs::read(&bundle).unwrap();
    let mut broken = bytes.clone();
    broken[14] ^= 0xff;
    std::fs::write(&bundle, &broken).unwrap();
    assert_eq!(verdict_of(&bundle).verdict, Verdict::Tampered);
    let mut bad_len = bytes.clone();
    bad_len[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    std::fs::write(&bundle, &bad_len).unwrap();
    assert_eq!(verdict_of(&bundle).verdict, Verdict::Tampered);
}

#[test]
fn an_unknown_format_is_unverifiable() {
    let (_d, bundle) = setup();
    let mut p = read_parts(&bundle);
    p.header.format = 2;
    write_parts(&bundle, &p);
    let r = verdict_of(&bundle);
    assert_eq!(r.verdict, Verdict::Unverifiable);
    assert!(has(&r, Case::UnknownFormat, Severity::Unverifiable));
}

#[test]
fn a_corrupted_witnessed_item_is_a_finding_and_the_log_is_still_verified() {
    let (_d, bundle) = setup();
    let p = read_parts(&bundle);
    let mut h = p.header.clone();
    h.witnessed = Vec::new();
    h.entry_count = p.entries.len() as u64;
    // Encode the header with one bogus witnessed item: a CBOR text string.
    let mut map: ciborium::Value = ciborium::Value::serialized(&h).unwrap();
    if let ciborium::Value::Map(entries) = &mut map {
        for (k, v) in entries.iter_mut() {
            if k.as_text() == Some("witnessed") {
                *v = ciborium::Value::Array(vec![ciborium::Value::Text("garbage".into())]);
            }
        }
    }
    let mut header_bytes = Vec::new();
    ciborium::into_writer(&map, &mut header_bytes).unwrap();
    let mut out = pdx_audit::bundle::MAGIC.to_vec();
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&header_bytes);
    for e in &p.entries {
        pdx_audit::bundle::write_entry(&mut out, e).unwrap();
    }
    out.extend_from_slice(pdx_audit::bundle::END);
    std::fs::write(&bundle, out).unwrap();
    let r = verdict_of(&bundle);
    assert!(
        has(&r, Case::MalformedEntry, Severity::Tampered),
        "{:#?}",
        r.findings
    );
    assert_eq!(
        r.entries,
        p.entries.len() as u64,
        "the log itself was still read"
    );
    assert_eq!(r.checkpoints_verified, r.checkpoints_total);
}

/// A bundle of `peer`'s log carrying one cosignature by `witness`, with
/// `tamper` applied to that cosignature.
fn cosigned_bundle(
    tamper: impl FnOnce(&mut pdx_audit::checkpoint::SignedCosignature),
) -> (tempfile::TempDir, Report) {
    use pdx_audit::witness::{self, PeerCheckpoint};
    let dir = tempfile::tempdir().unwrap();
    let peer = new_log(&dir.path().join("peer"), "440000", 1_000_000);
    let me = new_log(&dir.path().join("me"), "100000", 1_000_000);
    append(&peer, 5, "a");
    let cp = peer.log.checkpoint().unwrap();
    let view = PeerCheckpoint::verify(
        &peer.dept,
        &peer.identity.verifying_key(),
        peer.log.current_endorsement().unwrap(),
        cp,
    )
    .unwrap();
    let w = witness::begin(&me.log, &view).unwrap();
    let mut cos = witness::complete(&me.log, w, view.clone(), None).unwrap();
    tamper(&mut cos);
    peer.log
        .store_received_cosignature(view.content.size, &cos, "100000")
        .unwrap();
    let bundle = dir.path().join("p.bundle");
    export(&peer.log, Vec::new(), &bundle).unwrap();
    let r = verdict_of(&bundle);
    (dir, r)
}

#[test]
fn a_cosignature_that_does_not_verify_is_tampering() {
    let (_d, r) = cosigned_bundle(|_| {});
    assert_eq!(r.verdict, Verdict::Valid, "{:#?}", r.findings);
    assert_eq!(r.cosignatures_verified, 1);
    let (_d, r) = cosigned_bundle(|c| c.signed.signature.0[3] ^= 1);
    assert_eq!(r.verdict, Verdict::Tampered, "{:#?}", r.findings);
    assert!(
        has(&r, Case::BadSignature, Severity::Tampered),
        "{:#?}",
        r.findings
    );
}
