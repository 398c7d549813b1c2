//! Releases: producing one from a dataset (rules, de-identification, field
//! encryption, chunking, signed manifest), storing what was received, and
//! reading a received release back (export, confirmations, clearing), opening
//! the fields sealed for this node. Owns the `out.*` and `in.*` families.
//!
//! A received release is three records: the small [`InRelease`] (listed and
//! looked up without decoding a manifest), its signed manifest, and a progress
//! counter written in one batch with each stored chunk.

mod produce;
mod read;
mod received;

pub use produce::*;
pub use read::*;
pub use received::*;

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::proto::msg::{Manifest, ManifestBody};
use crate::store::{CF_IN_RELEASES, CF_OUT_RELEASES};
use pdx_crypto::atrest::ObjectKey;
use pdx_crypto::{Digest, SignatureDomain};
use serde::{Deserialize, Serialize};

/// One delivery of (part of) an outgoing release, confirmed by a receipt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// Receiving department.
    pub to: String,
    /// Transfer digest.
    pub content_digest: Digest,
    /// Records delivered.
    pub records: u64,
    /// Digest of the signed receipt.
    pub receipt_digest: Digest,
    /// When (ms).
    pub time_ms: u64,
    /// Audit entry of the send.
    pub audit_seq: u64,
}

/// A release this node produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutRelease {
    /// Release id.
    #[serde(with = "serde_bytes")]
    pub release_id: Vec<u8>,
    /// Signed manifest.
    pub manifest: Manifest,
    /// Dataset.
    pub dataset: String,
    /// Dataset generation it was made from.
    #[serde(with = "serde_bytes")]
    pub generation: Vec<u8>,
    /// Profile.
    pub profile: String,
    /// Agreement (`None`: the grant names none).
    pub agreement: Option<String>,
    /// Purpose.
    pub purpose: String,
    /// Department it was made for.
    pub recipient: String,
    /// Created (ms).
    pub created_ms: u64,
    /// Records.
    pub record_count: u64,
    /// Chunks.
    pub chunks: u32,
    /// Confirmed deliveries.
    pub deliveries: Vec<Delivery>,
    /// Digest of the dataset version (absent in records of earlier versions).
    #[serde(default)]
    pub dataset_digest: Option<Digest>,
    /// Rows covered (as in the manifest).
    #[serde(default)]
    pub rows: Option<crate::proto::msg::RowRange>,
}

/// A release received (from its sender or a relay): everything but its
/// manifest (`in.manifests`) and its progress (`in.progress`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InRelease {
    /// Release id.
    #[serde(with = "serde_bytes")]
    pub release_id: Vec<u8>,
    /// Original sender.
    pub sender: String,
    /// Department it arrived from (sender or relay).
    pub from: String,
    /// Dataset.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Agreement (`None`: the grant names none).
    pub agreement: Option<String>,
    /// Purpose.
    pub purpose: String,
    /// Chunk indices expected, in order.
    pub plan: Vec<u32>,
    /// Whether everything verified and was stored.
    pub complete: bool,
    /// Completed (ms).
    pub completed_ms: Option<u64>,
    /// Transfer digest (when complete).
    pub content_digest: Option<Digest>,
    /// Records (when complete).
    pub record_count: u64,
    /// Audit entry of the receive.
    pub receive_seq: Option<u64>,
    /// Rows covered (as in the manifest; absent before watermarks).
    #[serde(default)]
    pub rows: Option<crate::proto::msg::RowRange>,
}

/// Hex id of a release.
pub fn release_hex(id: &[u8]) -> String {
    hex::encode(id)
}

/// Parses a release id given on the command line.
pub fn parse_release_id(s: &str) -> Result<Vec<u8>> {
    let id = hex::decode(s.trim()).map_err(|_| {
        NodeError::Invalid(format!("{s:?} is not a release id (32 hex characters)"))
    })?;
    if id.len() != 16 {
        return Err(NodeError::Invalid(format!(
            "{s:?} is not a release id (32 hex characters)"
        )));
    }
    Ok(id)
}

pub(crate) fn out_key(node: &Node, release: &[u8]) -> Result<ObjectKey> {
    Ok(node
        .keys()?
        .storage
        .object_key("release-chunks", release, b"out")?)
}

pub(crate) fn in_key(node: &Node, release: &[u8]) -> Result<ObjectKey> {
    Ok(node
        .keys()?
        .storage
        .object_key("received-chunks", release, b"in")?)
}

/// Every release produced.
pub fn out_releases(node: &Node) -> Result<Vec<OutRelease>> {
    Ok(node
        .store
        .scan::<OutRelease>(CF_OUT_RELEASES, b"")?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// A release as `pdx releases` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "direction", rename_all = "lowercase")]
pub enum ReleaseInfo {
    /// Produced here.
    Out(OutInfo),
    /// Received here.
    In(InInfo),
}

/// A release produced here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutInfo {
    /// Release id.
    pub release: String,
    /// Dataset.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Recipient (docs/cli-output.md: `to`).
    pub to: String,
    /// The same (kept for scripts written against earlier versions).
    pub peer: String,
    /// Agreement.
    pub agreement: Option<String>,
    /// Purpose.
    pub purpose: String,
    /// Records.
    pub records: u64,
    /// Chunks.
    pub chunks: u32,
    /// Created (ms).
    pub created_ms: u64,
    /// Confirmed deliveries.
    pub deliveries: Vec<DeliveryInfo>,
}

/// One confirmed delivery.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryInfo {
    /// Receiving department.
    pub to: String,
    /// Records.
    pub records: u64,
    /// Transfer digest.
    pub digest: String,
    /// Audit entry of the send.
    pub audit_seq: u64,
}

/// A release received here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InInfo {
    /// Release id.
    pub release: String,
    /// Dataset.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Department it arrived from (docs/cli-output.md: `from`).
    pub from: String,
    /// The same (kept for scripts written against earlier versions).
    pub peer: String,
    /// Original sender.
    pub sender: String,
    /// Agreement.
    pub agreement: Option<String>,
    /// Purpose.
    pub purpose: String,
    /// Records (when complete).
    pub records: u64,
    /// Chunks planned.
    pub chunks: usize,
    /// Chunks stored.
    pub stored: u32,
    /// Complete.
    pub complete: bool,
    /// Transfer digest (when complete).
    pub digest: Option<String>,
}

/// `pdx releases`: produced, then received.
pub fn listing(node: &Node) -> Result<Vec<ReleaseInfo>> {
    let mut out: Vec<ReleaseInfo> = out_releases(node)?
        .into_iter()
        .map(|r| {
            ReleaseInfo::Out(OutInfo {
                release: release_hex(&r.release_id),
                dataset: r.dataset,
                profile: r.profile,
                to: r.recipient.clone(),
                peer: r.recipient,
                agreement: r.agreement,
                purpose: r.purpose,
                records: r.record_count,
                chunks: r.chunks,
                created_ms: r.created_ms,
                deliveries: r
                    .deliveries
                    .iter()
                    .map(|d| DeliveryInfo {
                        to: d.to.clone(),
                        records: d.records,
                        digest: d.content_digest.to_hex(),
                        audit_seq: d.audit_seq,
                    })
                    .collect(),
            })
        })
        .collect();
    for r in in_releases(node)? {
        let stored = in_progress(node, &r.release_id)?;
        out.push(ReleaseInfo::In(InInfo {
            release: release_hex(&r.release_id),
            dataset: r.dataset,
            profile: r.profile,
            from: r.from.clone(),
            peer: r.from,
            sender: r.sender,
            agreement: r.agreement,
            purpose: r.purpose,
            records: r.record_count,
            chunks: r.plan.len(),
            stored,
            complete: r.complete,
            digest: r.content_digest.map(|d| d.to_hex()),
        }));
    }
    Ok(out)
}

/// Every release received (records only, no manifests).
pub fn in_releases(node: &Node) -> Result<Vec<InRelease>> {
    Ok(node
        .store
        .scan::<InRelease>(CF_IN_RELEASES, b"")?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Verifies a manifest's certificate (CA, CRL) and signature.
pub fn verify_manifest(node: &Node, m: &Manifest) -> Result<ManifestBody> {
    let info = node.check_cert(&m.certificate)?;
    let body: ManifestBody = m.signed.verify(SignatureDomain::Manifest, &info.identity)?;
    if body.sender != info.dept {
        return Err(NodeError::Refused(format!(
            "manifest names sender {} but is signed by the certificate of {}",
            body.sender, info.dept
        )));
    }
    Ok(body)
}
