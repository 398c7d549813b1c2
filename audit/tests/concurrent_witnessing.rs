//! Witnessing when several connections from one peer overlap: each is checked
//! against the checkpoint held when it began, the held checkpoint only moves
//! forward, and an older (stale but consistent) view is not mistaken for a
//! log that went back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_audit::witness::{self, PeerCheckpoint, WitnessStep};

fn view(t: &TestLog) -> PeerCheckpoint {
    let cp = t.log.checkpoint().unwrap();
    PeerCheckpoint::verify(
        &t.dept,
        &t.identity.verifying_key(),
        t.log.current_endorsement().unwrap(),
        cp,
    )
    .unwrap()
}

fn proof(t: &TestLog, step: WitnessStep) -> Option<Vec<[u8; 32]>> {
    match step {
        WitnessStep::NeedProof { from, to } => Some(t.log.consistency_proof(from, to).unwrap()),
        WitnessStep::Ready => None,
    }
}

#[test]
fn overlapping_connections_from_one_peer_are_not_taken_for_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let peer = new_log(&dir.path().join("peer"), "440000", 1_000_000);
    let me = new_log(&dir.path().join("me"), "100000", 1_000_000);
    append(&peer, 5, "a");
    let first = view(&peer);
    let w = witness::begin(&me.log, &first).unwrap();
    witness::complete(&me.log, w, first, None).unwrap();

    append(&peer, 5, "b");
    let ten = view(&peer);
    append(&peer, 10, "c");
    let twenty = view(&peer);
    // Both connections begin against the held checkpoint...
    let w10 = witness::begin(&me.log, &ten).unwrap();
    let w20 = witness::begin(&me.log, &twenty).unwrap();
    let (p10, p20) = (proof(&peer, w10.step), proof(&peer, w20.step));
    // ...the later one completes first.
    witness::complete(&me.log, w20, twenty.clone(), p20.as_deref()).unwrap();
    witness::complete(&me.log, w10, ten.clone(), p10.as_deref()).unwrap();
    let held = me
        .log
        .last_witnessed(&twenty.content.origin)
        .unwrap()
        .unwrap();
    assert_eq!(held.checkpoint.peek().unwrap().size, twenty.content.size);

    // A stale view arriving now is consistent and older: cosigned, held kept.
    let w = witness::begin(&me.log, &ten).unwrap();
    assert!(matches!(w.step, WitnessStep::NeedProof { .. }));
    let p = proof(&peer, w.step);
    witness::complete(&me.log, w, ten, p.as_deref()).unwrap();
    let held = me
        .log
        .last_witnessed(&twenty.content.origin)
        .unwrap()
        .unwrap();
    assert_eq!(held.checkpoint.peek().unwrap().size, twenty.content.size);
    assert!(
        me.log.evidence().unwrap().is_empty(),
        "no false fork evidence"
    );
}

#[test]
fn a_stale_view_with_a_wrong_proof_is_still_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let peer = new_log(&dir.path().join("peer"), "440000", 1_000_000);
    let me = new_log(&dir.path().join("me"), "100000", 1_000_000);
    append(&peer, 5, "a");
    let five = view(&peer);
    append(&peer, 15, "b");
    let twenty = view(&peer);
    let w = witness::begin(&me.log, &twenty).unwrap();
    witness::complete(&me.log, w, twenty, None).unwrap();
    let w = witness::begin(&me.log, &five).unwrap();
    let bogus = vec![[7u8; 32]; 3];
    assert!(witness::complete(&me.log, w, five, Some(&bogus)).is_err());
    assert_eq!(me.log.evidence().unwrap().len(), 1);
}
