//! The incoming side: a received release's record, manifest and progress
//! counter, its chunks stored one synced batch at a time, and its completion
//! with the `receive` entry.

use super::{InRelease, in_key, release_hex, verify_manifest};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::proto::msg::Manifest;
use crate::store::{CF_IN_CHUNKS, CF_IN_MANIFESTS, CF_IN_PROGRESS, CF_IN_RELEASES, chunk_key};
use pdx_audit::store::now_ms;
use rocksdb::WriteBatch;

/// Loads an incoming release's record (no manifest).
pub fn in_release(node: &Node, id: &[u8]) -> Result<Option<InRelease>> {
    node.store.get(CF_IN_RELEASES, id)
}

/// The signed manifest of an incoming release.
pub fn in_manifest(node: &Node, id: &[u8]) -> Result<Manifest> {
    node.store
        .get(CF_IN_MANIFESTS, id)?
        .ok_or_else(|| NodeError::corrupt(format!("in.manifests/{}", release_hex(id)), "missing"))
}

/// Chunks of an incoming release's plan durably stored.
pub fn in_progress(node: &Node, id: &[u8]) -> Result<u32> {
    match node.store.get_raw(CF_IN_PROGRESS, id)? {
        None => Ok(0),
        Some(v) => v
            .as_slice()
            .try_into()
            .map(u32::from_be_bytes)
            .map_err(|_| {
                NodeError::corrupt(format!("in.progress/{}", release_hex(id)), "not a u32")
            }),
    }
}

/// Starts (or resumes) receiving a release: its record, manifest and
/// progress (`stored` chunks of the plan, those a resume continues after) in
/// one synced batch.
pub fn begin_in_release(
    node: &Node,
    rel: &InRelease,
    manifest: &Manifest,
    stored: u32,
) -> Result<()> {
    let mut b = WriteBatch::default();
    node.store
        .batch_put(&mut b, CF_IN_RELEASES, &rel.release_id, rel)?;
    node.store
        .batch_put(&mut b, CF_IN_MANIFESTS, &rel.release_id, manifest)?;
    b.put_cf(
        node.store.cf(CF_IN_PROGRESS)?,
        &rel.release_id,
        stored.to_be_bytes(),
    );
    node.store.write(b)
}

/// Stores chunk `index` (at `position` of the plan) and the new progress in
/// one synced batch: a crash never leaves a count without its chunk.
pub fn store_in_chunk(
    node: &Node,
    id: &[u8],
    position: u32,
    index: u32,
    records: &[u8],
) -> Result<()> {
    let stored = in_progress(node, id)?;
    if position != stored {
        return Err(NodeError::Invalid(format!(
            "chunk position {position} but {stored} stored"
        )));
    }
    let next = stored
        .checked_add(1)
        .ok_or_else(|| NodeError::Invalid("chunk count overflow".into()))?;
    let sealed = in_key(node, id)?.seal_block(u64::from(index), records)?;
    let mut b = WriteBatch::default();
    b.put_cf(node.store.cf(CF_IN_CHUNKS)?, chunk_key(id, index), sealed);
    b.put_cf(node.store.cf(CF_IN_PROGRESS)?, id, next.to_be_bytes());
    node.store.write(b)
}

/// Marks a received release complete together with its `receive` entry
/// (one durable step).
pub fn complete_in_release(
    node: &Node,
    rel: &mut InRelease,
    entry: pdx_audit::EntryDraft,
) -> Result<u64> {
    rel.complete = true;
    rel.completed_ms = Some(now_ms());
    let op = node.store.put_op(CF_IN_RELEASES, &rel.release_id, rel)?;
    let seq = node.log_with(entry, vec![op])?.seq;
    // The entry's number is known once it is appended; a crash before this
    // second write loses only the cross-reference, not the completion.
    rel.receive_seq = Some(seq);
    node.store.put(CF_IN_RELEASES, &rel.release_id, rel)?;
    Ok(seq)
}

/// Loads chunk `index` of an incoming release.
pub fn in_chunk(node: &Node, id: &[u8], index: u32) -> Result<Vec<u8>> {
    let sealed = node
        .store
        .get_raw(CF_IN_CHUNKS, &chunk_key(id, index))?
        .ok_or_else(|| {
            NodeError::corrupt(format!("in.chunks/{}/{index}", release_hex(id)), "missing")
        })?;
    Ok(in_key(node, id)?.open_block(u64::from(index), &sealed)?)
}

/// Departments (other than this node) the sender of a received release sealed chunks for.
pub fn chunk_recipients(node: &Node, id: &[u8]) -> Result<Vec<String>> {
    if in_release(node, id)?.is_none() {
        return Err(NodeError::NotFound(format!(
            "no received release {}",
            release_hex(id)
        )));
    }
    let body = verify_manifest(node, &in_manifest(node, id)?)?;
    let set: std::collections::BTreeSet<String> = body
        .chunks
        .iter()
        .filter_map(|c| c.recipient.clone())
        .filter(|r| *r != node.config.dept)
        .collect();
    Ok(set.into_iter().collect())
}
