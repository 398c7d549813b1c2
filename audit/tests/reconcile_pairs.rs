//! Reconciliation pairs sends and receives one to one: extras on either side
//! are findings, not "matched".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_audit::bundle::{BundleReader, export};
use pdx_audit::reconcile::{MismatchKind, reconcile};
use pdx_audit::{EntryDraft, EventKind};
use pdx_crypto::Digest;

fn transfer(t: &TestLog, kind: EventKind, peer: &str, release: &str) {
    let mut d = EntryDraft::new(kind, &t.dept, "tester");
    d.counterparty = Some(peer.into());
    d.subject.release = Some(release.into());
    d.subject.digest = Some(Digest([7; 32]));
    d.record_count = Some(10);
    t.log.append(d).unwrap();
}

fn run(sends: usize, receives: usize) -> pdx_audit::reconcile::Reconciliation {
    let dir = tempfile::tempdir().unwrap();
    let a = new_log(&dir.path().join("a"), "440000", 4);
    let b = new_log(&dir.path().join("b"), "100000", 4);
    for _ in 0..sends {
        transfer(&a, EventKind::Send, "100000", "r1");
    }
    for _ in 0..receives {
        transfer(&b, EventKind::Receive, "440000", "r1");
    }
    let (pa, pb) = (dir.path().join("a.bundle"), dir.path().join("b.bundle"));
    export(&a.log, Vec::new(), &pa).unwrap();
    export(&b.log, Vec::new(), &pb).unwrap();
    reconcile(vec![
        ("a".into(), BundleReader::open(&pa).unwrap()),
        ("b".into(), BundleReader::open(&pb).unwrap()),
    ])
    .unwrap()
}

#[test]
fn one_send_and_one_receive_match() {
    let r = run(1, 1);
    assert_eq!(r.matched, 1);
    assert!(r.is_clean(), "{:?}", r.mismatches);
}

#[test]
fn three_sends_against_one_receive_leave_two_unpaired_sends() {
    let r = run(3, 1);
    assert_eq!(r.matched, 1);
    assert_eq!(r.mismatches.len(), 2, "{:?}", r.mismatches);
    assert!(
        r.mismatches
            .iter()
            .all(|m| m.kind == MismatchKind::SendWithoutReceive)
    );
}

#[test]
fn two_receives_against_one_send_leave_an_unpaired_receive() {
    let r = run(1, 2);
    assert_eq!(r.matched, 1);
    assert_eq!(r.mismatches.len(), 1);
    assert_eq!(r.mismatches[0].kind, MismatchKind::ReceiveWithoutSend);
}
