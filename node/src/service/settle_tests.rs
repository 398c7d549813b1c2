//! The clearing node's side of a batch of confirmations, on a real store:
//! a batch that fails any check is refused whole, and nothing is stored or
//! audited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use crate::error::NodeError;
use crate::service::documents::Certified;
use crate::service::settle::{
    ConfirmationBatchBody, ConfirmationBody, MAX_BATCH_RELEASES, accept_confirmation_batch,
};
use crate::store::{self, CF_DOCS};
use pdx_crypto::{Digest, SignatureDomain};

fn node(dir: &std::path::Path) -> crate::node::Node {
    crate::service::testing::node(dir, "110000", "北京")
}

fn entry(release: u8, confirmer: &str) -> ConfirmationBody {
    ConfirmationBody {
        version: 1,
        release: format!("{release:032x}"),
        content_digest: Digest([release; 32]),
        treatment: "440000".into(),
        confirmer: confirmer.into(),
        amount_field: "medfee_sumamt".into(),
        records: 1,
        confirmed: 1,
        confirmed_fen: 100,
        rejected: 0,
        rejected_fen: 0,
        rejected_ids: Vec::new(),
        created_ms: 0,
        disputes: Vec::new(),
    }
}

fn refused(node: &crate::node::Node, batch: &ConfirmationBatchBody, why: &str) {
    let doc = Certified::sign(node, SignatureDomain::ConfirmationBatch, batch).unwrap();
    let before = node.audit.size();
    match accept_confirmation_batch(node, "110000", &doc.to_bytes().unwrap()) {
        Err(NodeError::Refused(m)) => assert!(m.contains(why), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        node.audit.size(),
        before,
        "a refused batch is not audited here"
    );
    let batch_key = store::confirmation_batch_key(&doc.digest());
    assert!(node.store.get_raw(CF_DOCS, &batch_key).unwrap().is_none());
    for c in &batch.confirmations {
        let key = store::confirmation_key(&c.release, &c.confirmer);
        assert!(node.store.get_raw(CF_DOCS, &key).unwrap().is_none());
    }
}

#[test]
fn a_batch_that_fails_any_check_is_refused_whole_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let batch = |confirmer: &str, entries: Vec<ConfirmationBody>| ConfirmationBatchBody {
        version: 1,
        confirmer: confirmer.into(),
        created_ms: 0,
        confirmations: entries,
    };
    refused(&node, &batch("110000", Vec::new()), "lists 0 releases");
    let too_many = (0..=MAX_BATCH_RELEASES)
        .map(|i| entry(i as u8, "110000"))
        .collect();
    refused(&node, &batch("110000", too_many), "lists 1025 releases");
    refused(
        &node,
        &batch("310000", vec![entry(1, "310000")]),
        "names confirmer 310000",
    );
    // An entry naming another confirmer than the signer.
    refused(
        &node,
        &batch("110000", vec![entry(1, "310000")]),
        "names confirmer 310000",
    );
    // A release this node does not hold.
    refused(
        &node,
        &batch("110000", vec![entry(1, "110000"), entry(2, "110000")]),
        "holds no such release",
    );
    let mut old = batch("110000", vec![entry(1, "110000")]);
    old.version = 2;
    refused(&node, &old, "version 2");
    // A single confirmation's document is not a batch (signature domains).
    let single = Certified::sign(
        &node,
        SignatureDomain::Confirmation,
        &batch("110000", vec![entry(1, "110000")]),
    )
    .unwrap();
    assert!(accept_confirmation_batch(&node, "110000", &single.to_bytes().unwrap()).is_err());
}
