//! The incoming side: a received release's record, manifest and progress
//! counter, its chunks stored one synced batch at a time, and its completion
//! with the `receive` entry.

use super::{InRelease, in_key, in_releases, release_hex, verify_manifest};
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

/// Whether `x` is a release of the same chain as `c` (same sender,
/// dataset, profile, agreement and purpose, received from the sender).
fn same_chain(x: &InRelease, c: &InRelease) -> bool {
    x.sender == c.sender
        && x.from == x.sender
        && x.dataset == c.dataset
        && x.profile == c.profile
        && x.agreement == c.agreement
        && x.purpose == c.purpose
        && x.release_id != c.release_id
}

/// Checks where a release made for this node sits in its chain of
/// incremental releases, against the releases held here.
pub fn check_chain(node: &Node, candidate: &InRelease) -> Result<()> {
    if candidate.rows.is_none() {
        return Ok(());
    }
    chain_verdict(&super::in_releases(node)?, candidate).map_err(NodeError::Refused)
}

/// The chain rule: a release that starts after row 0 must name the previous
/// release, held complete (from the same sender, dataset, profile,
/// agreement and purpose), ending exactly where it starts (else a gap or an
/// overlap); no other held release may already follow that one (an
/// overlap). A release starting at row 0 names none.
pub fn chain_verdict(held: &[InRelease], body: &InRelease) -> std::result::Result<(), String> {
    let Some(r) = &body.rows else {
        return Ok(());
    };
    let id = release_hex(&body.release_id);
    if r.to < r.from {
        return Err(format!(
            "release {id} covers rows {}..{}, which is no range",
            r.from, r.to
        ));
    }
    let Some(p) = &r.previous else {
        if r.from != 0 {
            return Err(format!(
                "release {id} starts at row {} but names no previous release: a gap",
                r.from
            ));
        }
        return Ok(());
    };
    let ph = release_hex(p);
    let prev = held
        .iter()
        .find(|x| x.release_id == *p && same_chain(x, body) && x.complete)
        .ok_or_else(|| {
            format!(
                "release {id} follows release {ph}, which is not held here complete from {} for the same dataset, profile and purpose: a gap; fetch that one first",
                body.sender
            )
        })?;
    let prev_to = prev.rows.as_ref().map(|x| x.to);
    if prev_to != Some(r.from) {
        return Err(format!(
            "release {id} starts at row {} but release {ph} ends at row {}: {}",
            r.from,
            prev_to.map_or("(unknown)".into(), |t| t.to_string()),
            if prev_to.is_some_and(|t| t > r.from) {
                "an overlap"
            } else {
                "a gap"
            }
        ));
    }
    if let Some(other) = held.iter().find(|x| {
        same_chain(x, body) && x.rows.as_ref().and_then(|y| y.previous.as_ref()) == Some(p)
    }) {
        return Err(format!(
            "release {} already follows release {ph}; release {id} would overlap it",
            release_hex(&other.release_id)
        ));
    }
    Ok(())
}

/// The newest complete release of a chain held here: what `pdx fetch
/// --incremental` continues after.
pub fn chain_head(
    node: &Node,
    sender: &str,
    dataset: &str,
    profile: &str,
    agreement: Option<&str>,
    purpose: &str,
) -> Result<Option<Vec<u8>>> {
    Ok(super::in_releases(node)?
        .into_iter()
        .filter(|x| {
            x.complete
                && x.sender == sender
                && x.from == sender
                && x.dataset == dataset
                && x.profile == profile
                && x.agreement.as_deref() == agreement
                && x.purpose == purpose
        })
        .filter_map(|x| x.rows.as_ref().map(|r| r.to).map(|t| (t, x.release_id)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, id)| id))
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

/// Complete received releases with chunks their sender sealed for `to`, in
/// id order (`pdx forward --all-releases`). A release whose manifest no
/// longer verifies is listed too, so that its forward reports why.
pub fn releases_for_recipient(node: &Node, to: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for r in in_releases(node)? {
        if !r.complete || r.sender == to {
            continue;
        }
        let addressed = match verify_manifest(node, &in_manifest(node, &r.release_id)?) {
            Ok(body) => body
                .chunks
                .iter()
                .any(|c| c.recipient.as_deref() == Some(to)),
            Err(_) => true,
        };
        if addressed {
            out.push(r.release_id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::proto::msg::RowRange;

    fn body(id: u8, from: u64, to: u64, previous: Option<u8>) -> InRelease {
        InRelease {
            release_id: vec![id; 16],
            sender: "440000".into(),
            from: "440000".into(),
            dataset: "d".into(),
            profile: "daily".into(),
            agreement: None,
            purpose: "p".into(),
            plan: vec![],
            complete: true,
            completed_ms: None,
            content_digest: None,
            record_count: 0,
            receive_seq: None,
            rows: Some(RowRange {
                from,
                to,
                previous: previous.map(|p| vec![p; 16]),
            }),
        }
    }

    fn held(b: &InRelease) -> InRelease {
        b.clone()
    }

    #[test]
    fn a_chain_of_increments_is_accepted_in_order() {
        let day1 = body(1, 0, 100, None);
        assert!(chain_verdict(&[], &day1).is_ok());
        let day2 = body(2, 100, 250, Some(1));
        assert!(chain_verdict(&[held(&day1)], &day2).is_ok());
        let day3 = body(3, 250, 260, Some(2));
        assert!(chain_verdict(&[held(&day1), held(&day2)], &day3).is_ok());
    }

    #[test]
    fn gaps_and_overlaps_are_refused() {
        let day1 = body(1, 0, 100, None);
        let h = [held(&day1)];
        let gap = chain_verdict(&h, &body(2, 120, 200, Some(1))).unwrap_err();
        assert!(gap.contains("a gap"), "{gap}");
        let overlap = chain_verdict(&h, &body(2, 90, 200, Some(1))).unwrap_err();
        assert!(overlap.contains("an overlap"), "{overlap}");
        let unnamed = chain_verdict(&h, &body(2, 100, 200, None)).unwrap_err();
        assert!(unnamed.contains("names no previous"), "{unnamed}");
        let missing = chain_verdict(&[], &body(2, 100, 200, Some(1))).unwrap_err();
        assert!(missing.contains("not held here"), "{missing}");
        // A second increment after the same release overlaps the first.
        let day2 = body(2, 100, 200, Some(1));
        let twice =
            chain_verdict(&[held(&day1), held(&day2)], &body(3, 100, 210, Some(1))).unwrap_err();
        assert!(twice.contains("already follows"), "{twice}");
        // Another sender's release is not this chain's predecessor.
        let mut foreign = held(&day1);
        foreign.sender = "110000".into();
        foreign.from = "110000".into();
        assert!(chain_verdict(&[foreign], &body(2, 100, 200, Some(1))).is_err());
    }
}
