//! Signed documents peers push with `Submit` (homomorphic-aggregate queries,
//! contributions and aggregates; settlement confirmations). Each kind has one
//! handler that verifies the document before anything is stored.

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::proto::msg::Accepted;

/// Verifies and stores a document a peer submitted.
pub fn accept(node: &Node, peer: &str, kind: &str, document: &[u8]) -> Result<Accepted> {
    {
        let _ = (node, document);
        Err(NodeError::Refused(format!(
            "{peer} submitted a document of unknown kind {kind:?}"
        )))
    }
}
