//! Documents peers push with `Submit`, and the same documents written to a
//! file (`--out`) and accepted or sent later with `pdx submit --file`. Each
//! kind has one handler, which verifies the document before anything is
//! stored.

use super::documents::{
    KIND_CONFIRMATION, KIND_CONFIRMATION_BATCH, KIND_HE_AGGREGATE, KIND_HE_CONTRIBUTION,
    KIND_HE_KEY_PROPOSAL, KIND_HE_KEY_SHARE, KIND_HE_KEY_TRANSCRIPT, KIND_HE_PARTIAL,
};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::proto::msg::Accepted;

/// Verifies and stores a document a peer (or a file, `peer` = `file:PATH`) submitted.
pub fn accept(node: &Node, peer: &str, kind: &str, document: &[u8]) -> Result<Accepted> {
    match kind {
        KIND_HE_CONTRIBUTION => super::aggregate::accept_contribution(node, peer, document),
        KIND_HE_AGGREGATE => super::aggregate::accept_aggregate(node, peer, document),
        KIND_HE_KEY_PROPOSAL => super::aggregate::accept_key_proposal(node, peer, document),
        KIND_HE_KEY_SHARE => super::aggregate::accept_key_share(node, peer, document),
        KIND_HE_KEY_TRANSCRIPT => super::aggregate::accept_key_transcript(node, peer, document),
        KIND_HE_PARTIAL => super::aggregate::accept_partial(node, peer, document),
        KIND_CONFIRMATION => super::settle::accept_confirmation(node, peer, document),
        KIND_CONFIRMATION_BATCH => super::settle::accept_confirmation_batch(node, peer, document),
        other => Err(NodeError::Refused(format!(
            "{peer} submitted a document of unknown kind {other:?} (known: {KIND_HE_CONTRIBUTION}, {KIND_HE_AGGREGATE}, {KIND_HE_KEY_PROPOSAL}, {KIND_HE_KEY_SHARE}, {KIND_HE_KEY_TRANSCRIPT}, {KIND_HE_PARTIAL}, {KIND_CONFIRMATION}, {KIND_CONFIRMATION_BATCH})"
        ))),
    }
}
