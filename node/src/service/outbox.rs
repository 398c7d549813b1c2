//! Signed, then delivered: documents this node signs for a peer
//! (confirmations, contributions, aggregates) are kept in an outbox with the
//! signing entry, and leave it only when the recipient acknowledges their
//! digest (a `deliver` audit entry in the same write). A failed send leaves
//! the document pending, so a retry resends what was signed and audited
//! instead of forgetting it or signing a second, different one.

use super::documents::SubmissionFile;
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::store::{self, CF_DOCS};
use pdx_audit::EventKind;
use pdx_audit::store::{StoreOp, now_ms};
use pdx_crypto::Digest;
use serde::{Deserialize, Serialize};

/// A signed document not delivered yet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    /// Submit kind (`settlement-confirmation`, `he-contribution`, `he-aggregate`).
    pub kind: String,
    /// What it is about: the release (confirmations) or query (aggregates).
    pub subject: String,
    /// Department it is addressed to when signed.
    pub to: String,
    /// Digest of the signed document (what the recipient acknowledges).
    pub digest: Digest,
    /// When it was signed (ms since the epoch).
    pub signed_ms: u64,
    /// The submission as sent.
    pub submission: SubmissionFile,
}

/// An acknowledged delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Submit kind.
    pub kind: String,
    /// Release or query.
    pub subject: String,
    /// Department that acknowledged it.
    pub to: String,
    /// Digest acknowledged.
    pub digest: Digest,
    /// When (ms since the epoch).
    pub delivered_ms: u64,
}

impl Pending {
    /// A pending document for the signing batch.
    pub fn new(
        kind: &str,
        subject: &str,
        to: &str,
        digest: Digest,
        submission: SubmissionFile,
    ) -> Self {
        Pending {
            kind: kind.to_string(),
            subject: subject.to_string(),
            to: to.to_string(),
            digest,
            signed_ms: now_ms(),
            submission,
        }
    }

    /// The write that holds it (joins the signing entry's batch); replaces
    /// an earlier undelivered document of the same kind and subject.
    pub fn hold_op(&self, node: &Node) -> Result<StoreOp> {
        node.store
            .put_op(CF_DOCS, &store::outbox_key(&self.kind, &self.subject), self)
    }
}

/// Undelivered documents of `kind` (every kind with `None`), oldest subject first.
pub fn pending(node: &Node, kind: Option<&str>) -> Result<Vec<Pending>> {
    Ok(node
        .store
        .scan::<Pending>(CF_DOCS, store::OUTBOX_PREFIX)?
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| kind.is_none_or(|k| p.kind == k))
        .collect())
}

/// The undelivered document of `kind` about `subject`.
pub fn pending_for(node: &Node, kind: &str, subject: &str) -> Result<Option<Pending>> {
    node.store.get(CF_DOCS, &store::outbox_key(kind, subject))
}

/// The acknowledged delivery of `kind` about `subject`.
pub fn delivery(node: &Node, kind: &str, subject: &str) -> Result<Option<Delivery>> {
    node.store
        .get(CF_DOCS, &store::delivered_key(kind, subject))
}

/// Records that `to` acknowledged `acknowledged` for the pending document
/// with digest `digest`: a `deliver` entry and the outbox update in one
/// write. A document that is not pending (sent from a file written
/// elsewhere, or delivered before) records nothing and returns `None`.
pub fn delivered(
    node: &Node,
    digest: &Digest,
    to: &str,
    acknowledged: &Digest,
    operator: &str,
) -> Result<Option<Delivery>> {
    let Some(p) = pending(node, None)?
        .into_iter()
        .find(|p| p.digest == *digest)
    else {
        return Ok(None);
    };
    if acknowledged != digest {
        // Fail closed: an acknowledgement of another document is not a delivery.
        return Err(NodeError::Peer {
            peer: to.to_string(),
            message: format!(
                "acknowledged digest {} for the {} of {} with digest {}; it stays pending",
                acknowledged.to_hex(),
                p.kind,
                p.subject,
                digest.to_hex()
            ),
        });
    }
    let delivery = Delivery {
        kind: p.kind.clone(),
        subject: p.subject.clone(),
        to: to.to_string(),
        digest: *digest,
        delivered_ms: now_ms(),
    };
    let mut d = node.draft(EventKind::Deliver, operator);
    if p.kind == super::documents::KIND_CONFIRMATION {
        d.subject.release = Some(p.subject.clone());
    }
    d.counterparty = Some(to.to_string());
    d.payload_digest = Some(*digest);
    d.detail = Some(format!(
        "delivered {} of {} to {to}; acknowledged (signed {})",
        p.kind,
        p.subject,
        crate::timearg::format_ms(p.signed_ms).unwrap_or_default()
    ));
    node.log_with(
        d,
        vec![
            StoreOp::Delete {
                cf: CF_DOCS,
                key: store::outbox_key(&p.kind, &p.subject),
            },
            node.store.put_op(
                CF_DOCS,
                &store::delivered_key(&p.kind, &p.subject),
                &delivery,
            )?,
        ],
    )?;
    Ok(Some(delivery))
}
