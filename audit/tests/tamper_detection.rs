//! One test per detection case, each built by actually tampering with a real
//! exported bundle or with the RocksDB store, and checking the verifier's verdict.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_audit::bundle::export;
use pdx_audit::checkpoint::{Checkpoint, SignedCheckpoint};
use pdx_audit::entry::Entry;
use pdx_audit::verify::{Case, Report, Verdict};
use pdx_audit::witness::{self, PeerCheckpoint};
use pdx_crypto::{SigningKey, Suite};

fn has(r: &Report, case: Case) -> bool {
    r.findings.iter().any(|f| f.case == case)
}

fn setup(suite: Suite) -> (tempfile::TempDir, TestLog, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let t = new_log_in(suite, &dir.path().join("db"), "440000", 8);
    append(&t, 40, "r");
    let bundle = dir.path().join("a.bundle");
    export(&t.log, Vec::new(), &bundle).unwrap();
    (dir, t, bundle)
}

#[test]
fn untouched_bundle_is_valid() {
    for suite in Suite::ALL {
        untouched_bundle_is_valid_in(suite);
    }
}

fn untouched_bundle_is_valid_in(suite: Suite) {
    let (_d, _t, bundle) = setup(suite);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Valid, "{:#?}", r.findings);
    assert_eq!(r.checkpoints_verified, r.checkpoints_total);
    assert!(r.checkpoints_total >= 5);
}

#[test]
fn altered_entry_is_detected() {
    for suite in Suite::ALL {
        altered_entry_is_detected_in(suite);
    }
}

fn altered_entry_is_detected_in(suite: Suite) {
    let (_d, _t, bundle) = setup(suite);
    let mut p = read_parts(&bundle);
    let mut e = Entry::decode(&p.entries[10]).unwrap();
    e.draft.record_count = Some(999_999);
    p.entries[10] = e.encode();
    write_parts(&bundle, &p);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::AlteredEntry), "{:#?}", r.findings);
}

#[test]
fn altered_last_entry_is_detected_by_the_checkpoint() {
    for suite in Suite::ALL {
        altered_last_entry_is_detected_by_the_checkpoint_in(suite);
    }
}

fn altered_last_entry_is_detected_by_the_checkpoint_in(suite: Suite) {
    let (_d, _t, bundle) = setup(suite);
    let mut p = read_parts(&bundle);
    let last = p.entries.len() - 1;
    let mut e = Entry::decode(&p.entries[last]).unwrap();
    e.draft.detail = Some("rewritten".into());
    p.entries[last] = e.encode();
    write_parts(&bundle, &p);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::AlteredEntry), "{:#?}", r.findings);
}

#[test]
fn deleted_entry_is_detected() {
    for suite in Suite::ALL {
        deleted_entry_is_detected_in(suite);
    }
}

fn deleted_entry_is_detected_in(suite: Suite) {
    let (_d, _t, bundle) = setup(suite);
    let mut p = read_parts(&bundle);
    p.entries.remove(10);
    write_parts(&bundle, &p);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::DeletedEntries), "{:#?}", r.findings);
}

#[test]
fn inserted_entry_is_detected() {
    for suite in Suite::ALL {
        inserted_entry_is_detected_in(suite);
    }
}

fn inserted_entry_is_detected_in(suite: Suite) {
    let (_d, _t, bundle) = setup(suite);
    let mut p = read_parts(&bundle);
    let mut forged = Entry::decode(&p.entries[10]).unwrap();
    forged.draft.counterparty = Some("999999".into());
    p.entries.insert(10, forged.encode());
    write_parts(&bundle, &p);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::InsertedEntry), "{:#?}", r.findings);
}

#[test]
fn reordered_entries_are_detected() {
    for suite in Suite::ALL {
        reordered_entries_are_detected_in(suite);
    }
}

fn reordered_entries_are_detected_in(suite: Suite) {
    let (_d, _t, bundle) = setup(suite);
    let mut p = read_parts(&bundle);
    p.entries.swap(10, 11);
    write_parts(&bundle, &p);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::ReorderedEntries), "{:#?}", r.findings);
}

#[test]
fn replayed_entry_is_detected() {
    for suite in Suite::ALL {
        replayed_entry_is_detected_in(suite);
    }
}

fn replayed_entry_is_detected_in(suite: Suite) {
    let (_d, _t, bundle) = setup(suite);
    let mut p = read_parts(&bundle);
    let copy = p.entries[10].clone();
    p.entries.insert(13, copy);
    write_parts(&bundle, &p);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::ReplayedEntry), "{:#?}", r.findings);
}

#[test]
fn entry_from_another_log_is_detected() {
    for suite in Suite::ALL {
        entry_from_another_log_is_detected_in(suite);
    }
}

fn entry_from_another_log_is_detected_in(suite: Suite) {
    let (d, _t, bundle) = setup(suite);
    let other = new_log_in(suite, &d.path().join("other"), "110000", 8);
    append(&other, 3, "x");
    let foreign = other.log.entry_bytes(2).unwrap();
    let mut p = read_parts(&bundle);
    p.entries.insert(20, foreign);
    write_parts(&bundle, &p);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::ForeignEntry), "{:#?}", r.findings);
}

/// A peer that witnessed the full log (its bundle holds our checkpoint of size 41+).
fn witness_of(suite: Suite, t: &TestLog, dir: &std::path::Path) -> std::path::PathBuf {
    let w = new_log_in(suite, &dir.join("witness"), "100000", 8);
    let endorsement = t.log.current_endorsement().unwrap();
    let cp = t.log.checkpoint().unwrap();
    let pc = PeerCheckpoint::verify(&t.dept, &t.identity.verifying_key(), endorsement, cp).unwrap();
    let witnessing = witness::begin(&w.log, &pc).unwrap();
    assert_eq!(witnessing.step, witness::WitnessStep::Ready);
    witness::complete(&w.log, witnessing, pc, None).unwrap();
    let path = dir.join("witness.bundle");
    export(&w.log, Vec::new(), &path).unwrap();
    path
}

#[test]
fn truncated_tail_is_detected_against_a_witness() {
    for suite in Suite::ALL {
        truncated_tail_is_detected_against_a_witness_in(suite);
    }
}

fn truncated_tail_is_detected_against_a_witness_in(suite: Suite) {
    let (d, t, bundle) = setup(suite);
    let witness = witness_of(suite, &t, d.path());
    let mut p = read_parts(&bundle);
    // Cut at a checkpoint and drop every later checkpoint: self-consistent.
    let cut = p
        .header
        .checkpoints
        .iter()
        .map(|c| c.peek().unwrap().size)
        .filter(|&s| s <= 32)
        .max()
        .unwrap();
    p.entries.truncate(cut as usize);
    p.header
        .checkpoints
        .retain(|c| c.peek().unwrap().size <= cut);
    write_parts(&bundle, &p);
    assert_eq!(
        verify_path(&bundle, &[]).verdict,
        Verdict::Valid,
        "alone, a clean truncation is undetectable"
    );
    let r = verify_path(&bundle, &[&witness]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::TruncatedTail), "{:#?}", r.findings);
}

#[test]
fn rewritten_log_is_exposed_as_a_fork_by_the_witness() {
    for suite in Suite::ALL {
        rewritten_log_is_exposed_as_a_fork_by_the_witness_in(suite);
    }
}

fn rewritten_log_is_exposed_as_a_fork_by_the_witness_in(suite: Suite) {
    let (d, t, bundle) = setup(suite);
    let witness = witness_of(suite, &t, d.path());
    // The operator (who has the audit key) rewrites entry 5 and re-signs every
    // checkpoint so the bundle is self-consistent.
    let mut p = read_parts(&bundle);
    let mut e = Entry::decode(&p.entries[5]).unwrap();
    e.draft.counterparty = Some("777777".into());
    p.entries[5] = e.encode();
    for i in 6..p.entries.len() {
        let mut next = Entry::decode(&p.entries[i]).unwrap();
        next.prev_hash = pdx_audit::merkle::leaf_in(suite, &p.entries[i - 1]);
        p.entries[i] = next.encode();
    }
    let mut tree = pdx_audit::merkle::MemoryTree::new();
    for e in &p.entries {
        match suite {
            Suite::Intl => tree.push_data::<pdx_audit::merkle::Blake3>(e),
            Suite::Gm => tree.push_data::<pdx_audit::merkle::Sm3>(e),
        }
    }
    let log_text = t.log.log_id().to_text();
    p.header.checkpoints = p
        .header
        .checkpoints
        .iter()
        .map(|c| {
            let old = c.peek().unwrap();
            let root = pdx_audit::merkle::root_in(suite, &tree, old.size).unwrap();
            SignedCheckpoint::sign(
                &Checkpoint {
                    origin: log_text.clone(),
                    size: old.size,
                    root,
                    time_ms: old.time_ms,
                },
                &t.audit_key,
            )
            .unwrap()
        })
        .collect();
    write_parts(&bundle, &p);
    assert_eq!(
        verify_path(&bundle, &[]).verdict,
        Verdict::Valid,
        "alone, a re-signed rewrite is self-consistent"
    );
    let r = verify_path(&bundle, &[&witness]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::Fork), "{:#?}", r.findings);
}

#[test]
fn two_inconsistent_signed_checkpoints_are_a_fork() {
    for suite in Suite::ALL {
        two_inconsistent_signed_checkpoints_are_a_fork_in(suite);
    }
}

fn two_inconsistent_signed_checkpoints_are_a_fork_in(suite: Suite) {
    let (_d, t, bundle) = setup(suite);
    let mut p = read_parts(&bundle);
    let first = p.header.checkpoints[1].peek().unwrap();
    let other = Checkpoint {
        root: [7u8; 32],
        ..first
    };
    p.header
        .checkpoints
        .push(SignedCheckpoint::sign(&other, &t.audit_key).unwrap());
    write_parts(&bundle, &p);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(
        has(&r, Case::Fork) || has(&r, Case::AlteredEntry),
        "{:#?}",
        r.findings
    );
}

#[test]
fn signatures_by_wrong_and_not_yet_valid_keys_are_detected() {
    for suite in Suite::ALL {
        signatures_by_wrong_and_not_yet_valid_keys_are_detected_in(suite);
    }
}

fn signatures_by_wrong_and_not_yet_valid_keys_are_detected_in(suite: Suite) {
    let dir = tempfile::tempdir().unwrap();
    let t = new_log_in(suite, &dir.path().join("db"), "440000", 8);
    append(&t, 20, "a");
    let new_key = SigningKey::generate(suite).unwrap();
    let copy = SigningKey::from_pkcs8(new_key.pkcs8_der()).unwrap();
    let log_id = t.log.log_id().clone();
    let rotated_at = t
        .log
        .rotate_key(copy, "tester", |seq| {
            Ok(endorse(&t.identity, "440000", &log_id, &new_key, seq))
        })
        .unwrap()
        .seq;
    append(&t, 20, "b");
    let bundle = dir.path().join("a.bundle");
    export(&t.log, Vec::new(), &bundle).unwrap();
    let r = verify_path(&bundle, &[]);
    assert_eq!(
        r.verdict,
        Verdict::Valid,
        "rotation is followed: {:#?}",
        r.findings
    );
    assert_eq!(r.keys.len(), 2);

    let p = read_parts(&bundle);
    let root_at = |n: u64| {
        let mut tree = pdx_audit::merkle::MemoryTree::new();
        for e in &p.entries[..n as usize] {
            tree.push_data::<pdx_audit::merkle::Blake3>(e);
        }
        tree.root::<pdx_audit::merkle::Blake3>()
    };
    let cp = |size: u64| Checkpoint {
        origin: log_id.to_text(),
        size,
        root: root_at(size),
        time_ms: 1,
    };
    // The new key signing a size before the rotation: not yet valid.
    let mut early = read_parts(&bundle);
    early
        .header
        .checkpoints
        .push(SignedCheckpoint::sign(&cp(rotated_at - 2), &new_key).unwrap());
    write_parts(&bundle, &early);
    let r = verify_path(&bundle, &[]);
    assert!(has(&r, Case::NotYetValidKey), "{:#?}", r.findings);
    // The old key signing after the rotation: wrong key.
    let mut late = read_parts(&bundle);
    late.header
        .checkpoints
        .retain(|c| c.key_id() != new_key.key_id() || c.peek().unwrap().size > rotated_at);
    late.header
        .checkpoints
        .push(SignedCheckpoint::sign(&cp(rotated_at + 5), &t.audit_key).unwrap());
    write_parts(&bundle, &late);
    let r = verify_path(&bundle, &[]);
    assert!(has(&r, Case::WrongKey), "{:#?}", r.findings);
    // A key this log never had.
    let mut stranger = read_parts(&bundle);
    stranger
        .header
        .checkpoints
        .push(SignedCheckpoint::sign(&cp(10), &SigningKey::generate(suite).unwrap()).unwrap());
    write_parts(&bundle, &stranger);
    assert!(has(&verify_path(&bundle, &[]), Case::WrongKey));
}

#[test]
fn missing_key_material_is_unverifiable_not_tampered() {
    for suite in Suite::ALL {
        missing_key_material_is_unverifiable_not_tampered_in(suite);
    }
}

fn missing_key_material_is_unverifiable_not_tampered_in(suite: Suite) {
    let (_d, _t, bundle) = setup(suite);
    let mut p = read_parts(&bundle);
    p.header.endorsements.clear();
    write_parts(&bundle, &p);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Unverifiable, "{:#?}", r.findings);
}

#[test]
fn tampering_with_the_rocksdb_store_is_detected_after_export() {
    for suite in Suite::ALL {
        tampering_with_the_rocksdb_store_is_detected_after_export_in(suite);
    }
}

fn tampering_with_the_rocksdb_store_is_detected_after_export_in(suite: Suite) {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("db");
    let t = new_log_in(suite, &db_path, "440000", 8);
    append(&t, 30, "s");
    let db = t.log.db().clone();
    let cf = db.cf_handle(pdx_audit::store::CF_ENTRIES).unwrap();
    // Delete one entry and alter another directly in RocksDB.
    db.delete_cf(cf, 7u64.to_be_bytes()).unwrap();
    let mut e = Entry::decode(&db.get_cf(cf, 20u64.to_be_bytes()).unwrap().unwrap()).unwrap();
    e.draft.record_count = Some(123_456);
    db.put_cf(cf, 20u64.to_be_bytes(), e.encode()).unwrap();
    let bundle = dir.path().join("a.bundle");
    export(&t.log, Vec::new(), &bundle).unwrap();
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::DeletedEntries), "{:#?}", r.findings);
    assert!(has(&r, Case::AlteredEntry), "{:#?}", r.findings);
}

#[test]
fn a_re_endorsement_keeps_the_earlier_ones_and_two_keys_for_one_from_seq_are_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let t = new_log(&dir.path().join("db"), "440000", 8);
    append(&t, 10, "a");
    let log_id = t.log.log_id().clone();
    // A renewed certificate with a new identity key re-endorses the key.
    let renewed = SigningKey::generate(Suite::Intl).unwrap();
    let mut d = pdx_audit::EntryDraft::new(pdx_audit::EventKind::ConfigChange, "440000", "tester");
    d.detail = Some("node certificate renewed".into());
    t.log
        .reendorse_key(d, |seq| {
            Ok(endorse(&renewed, "440000", &log_id, &t.audit_key, seq))
        })
        .unwrap();
    let all = t.log.endorsements().unwrap();
    assert_eq!(all.len(), 2, "the genesis endorsement stays");
    assert_eq!(
        t.log.current_endorsement().unwrap().certificate,
        cert("440000", &renewed, &log_id),
        "the newest is current"
    );
    // A re-endorsement must name the current key.
    let stranger = SigningKey::generate(Suite::Intl).unwrap();
    let d = pdx_audit::EntryDraft::new(pdx_audit::EventKind::ConfigChange, "440000", "tester");
    assert!(
        t.log
            .reendorse_key(d, |seq| Ok(endorse(
                &renewed, "440000", &log_id, &stranger, seq
            )))
            .is_err()
    );
    // A later rotation, endorsed under the renewed certificate.
    let next = SigningKey::generate(Suite::Intl).unwrap();
    let copy = SigningKey::from_pkcs8(next.pkcs8_der()).unwrap();
    let rotated_at = t
        .log
        .rotate_key(copy, "tester", |seq| {
            Ok(endorse(&renewed, "440000", &log_id, &next, seq))
        })
        .unwrap()
        .seq;
    append(&t, 3, "b");
    let bundle = dir.path().join("a.bundle");
    export(&t.log, Vec::new(), &bundle).unwrap();
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Valid, "{:#?}", r.findings);
    assert_eq!(read_parts(&bundle).header.endorsements.len(), 3);
    assert_eq!(r.keys.len(), 2, "genesis key and the rotated one");

    // Another key endorsed for the same from_seq cannot both hold.
    let mut p = read_parts(&bundle);
    p.header
        .endorsements
        .push(endorse(&renewed, "440000", &log_id, &stranger, rotated_at));
    write_parts(&bundle, &p);
    let r = verify_path(&bundle, &[]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(has(&r, Case::WrongKey), "{:#?}", r.findings);
}
