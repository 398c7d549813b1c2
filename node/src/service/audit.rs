//! Node-side audit commands (`pdx audit export|checkpoint|prove|consistency|show`)
//! and `pdx status`. Offline verification and reconciliation of bundles live
//! in `pdx-audit` and the CLI.

use super::{datasets, directory, release};
use crate::error::{NodeError, Result};
use crate::node::Node;
use pdx_audit::store::now_ms;
use pdx_audit::{EntryView, EventKind};
use serde::{Deserialize, Serialize};

/// What `pdx audit export` wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleWritten {
    /// File.
    pub out: String,
    /// Log id.
    pub log_id: String,
    /// Entries.
    pub entries: u64,
    /// Signed checkpoints.
    pub checkpoints: usize,
    /// Peers' cosignatures of this log.
    pub cosignatures: usize,
    /// Peer checkpoints this node witnessed.
    pub witnessed: usize,
    /// Fork evidence held.
    pub evidence: usize,
}

/// `pdx audit export`: a self-contained bundle of this node's log (audited).
pub fn export(node: &Node, out: &str, operator: &str) -> Result<BundleWritten> {
    let ca = node.ca.first().map(|c| c.to_vec()).unwrap_or_default();
    let h = pdx_audit::bundle::export(&node.audit, ca, std::path::Path::new(out))?;
    let mut d = node.draft(EventKind::Export, operator);
    d.detail = Some(format!(
        "audit bundle of {} entries exported to {out}",
        h.entry_count
    ));
    node.log(d)?;
    Ok(BundleWritten {
        out: out.to_string(),
        log_id: h.log_id,
        entries: h.entry_count,
        checkpoints: h.checkpoints.len(),
        cosignatures: h.cosignatures.len(),
        witnessed: h.witnessed.len(),
        evidence: h.evidence.len(),
    })
}

/// A checkpoint signed now (`pdx audit checkpoint`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointSigned {
    /// Log id.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root (hex).
    pub root: String,
    /// Signing time (ms).
    pub time_ms: u64,
    /// Key id of the audit key.
    pub key_id: String,
    /// Where the signed checkpoint was written.
    pub out: Option<String>,
}

/// `pdx audit checkpoint`: signs a checkpoint now, optionally writing it.
pub fn checkpoint(node: &Node, out: Option<&str>) -> Result<CheckpointSigned> {
    let cp = node.audit.checkpoint()?;
    let body = cp.peek()?;
    if let Some(path) = out {
        let bytes = pdx_crypto::wire::to_cbor(&cp)?;
        crate::config::write_atomic(std::path::Path::new(path), &bytes, 0o644)?;
    }
    Ok(CheckpointSigned {
        origin: body.origin,
        size: body.size,
        root: hex::encode(body.root),
        time_ms: body.time_ms,
        key_id: cp.key_id().to_hex(),
        out: out.map(str::to_string),
    })
}

/// One entry as `pdx audit show` and proofs present it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EntryInfo {
    /// Sequence number.
    pub seq: u64,
    /// Time (ms).
    pub time_ms: u64,
    /// Event kind label.
    pub kind: String,
    /// Who acted.
    pub actor: Actor,
    /// Dataset.
    pub dataset: Option<String>,
    /// Release.
    pub release: Option<String>,
    /// Content digest (hex).
    pub digest: Option<String>,
    /// Counterparty.
    pub counterparty: Option<String>,
    /// Agreement.
    pub agreement: Option<String>,
    /// Purpose.
    pub purpose: Option<String>,
    /// Legal basis.
    pub legal_basis: Option<String>,
    /// Fields and their classes.
    pub fields: Vec<FieldInfo>,
    /// Records.
    pub record_count: Option<u64>,
    /// Payload digest (hex).
    pub payload_digest: Option<String>,
    /// Detail.
    pub detail: Option<String>,
}

/// The actor of an entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Actor {
    /// Department.
    pub dept: String,
    /// Operator.
    pub operator: String,
}

/// A field an entry names.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FieldInfo {
    /// Name.
    pub name: String,
    /// Classification.
    pub class: String,
}

impl EntryInfo {
    /// From a parsed entry.
    pub fn of(v: &EntryView<'_>) -> Self {
        EntryInfo {
            seq: v.seq,
            time_ms: v.time_ms,
            kind: v.kind.label().to_string(),
            actor: Actor {
                dept: v.actor_dept.to_string(),
                operator: v.actor_operator.to_string(),
            },
            dataset: v.dataset.map(str::to_string),
            release: v.release.map(str::to_string),
            digest: v.digest.map(hex::encode),
            counterparty: v.counterparty.map(str::to_string),
            agreement: v.agreement.map(str::to_string),
            purpose: v.purpose.map(str::to_string),
            legal_basis: v.legal_basis.map(str::to_string),
            fields: v
                .fields()
                .iter()
                .map(|(n, c)| FieldInfo {
                    name: n.to_string(),
                    class: c.to_string(),
                })
                .collect(),
            record_count: v.record_count,
            payload_digest: v.payload_digest.map(hex::encode),
            detail: v.detail.map(str::to_string),
        }
    }
}

/// Filters of `pdx audit show`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EntryFilter {
    /// Only this dataset.
    pub dataset: Option<String>,
    /// Only this counterparty.
    pub counterparty: Option<String>,
    /// Only this event kind (label).
    pub kind: Option<String>,
    /// From (ms).
    pub since_ms: Option<u64>,
    /// Until (ms).
    pub until_ms: Option<u64>,
    /// At most this many (the latest).
    pub limit: Option<usize>,
}

/// `pdx audit show`.
pub fn show(node: &Node, f: &EntryFilter) -> Result<Vec<EntryInfo>> {
    let kind = match &f.kind {
        Some(k) => Some(EventKind::from_label(k).ok_or_else(|| {
            NodeError::Invalid(format!(
                "unknown event kind {k:?}; kinds: {}",
                EventKind::ALL
                    .iter()
                    .map(|k| k.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
        None => None,
    };
    let size = node.audit.size();
    let mut out = Vec::new();
    node.audit.for_each_entry(0, size, |_, bytes| {
        let v = EntryView::parse(bytes).map_err(|e| pdx_audit::AuditError::Corrupt {
            location: "entry".into(),
            reason: e.0,
        })?;
        let keep = f.dataset.as_deref().is_none_or(|d| v.dataset == Some(d))
            && f.counterparty
                .as_deref()
                .is_none_or(|c| v.counterparty == Some(c))
            && kind.is_none_or(|k| v.kind == k)
            && f.since_ms.is_none_or(|s| v.time_ms >= s)
            && f.until_ms.is_none_or(|u| v.time_ms <= u);
        if keep {
            out.push(EntryInfo::of(&v));
        }
        Ok(())
    })?;
    if let Some(l) = f.limit {
        let skip = out.len().saturating_sub(l);
        out.drain(..skip);
    }
    Ok(out)
}

/// An inclusion proof (`pdx audit prove`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InclusionProof {
    /// Entry.
    pub seq: u64,
    /// Tree size of the checkpoint proved against.
    pub tree_size: u64,
    /// Its root (hex).
    pub root: String,
    /// The entry's leaf hash (hex).
    pub leaf_hash: String,
    /// Proof hashes (hex).
    pub proof: Vec<String>,
    /// Key id that signed the checkpoint.
    pub checkpoint_key: String,
    /// The entry.
    pub entry: EntryInfo,
    /// Whether the proof verified here.
    pub verified: bool,
    /// Time to build the proof (µs).
    pub proof_micros: u128,
}

/// `pdx audit prove`: an inclusion proof against the latest checkpoint.
pub fn prove(node: &Node, seq: u64) -> Result<InclusionProof> {
    let cp_signed = node.audit.checkpoint()?;
    let cp = cp_signed.peek()?;
    if seq >= cp.size {
        return Err(NodeError::NotFound(format!(
            "entry {seq} is not covered by the latest checkpoint (size {})",
            cp.size
        )));
    }
    let bytes = node.audit.entry_bytes(seq)?;
    let leaf = <pdx_audit::merkle::Blake3 as pdx_audit::merkle::MerkleHasher>::leaf(&bytes);
    let started = std::time::Instant::now();
    let proof = node.audit.inclusion_proof(seq, cp.size)?;
    let micros = started.elapsed().as_micros();
    pdx_audit::merkle::verify_inclusion::<pdx_audit::merkle::Blake3, _>(
        seq, cp.size, &leaf, &proof, &cp.root,
    )
    .map_err(pdx_audit::AuditError::from)?;
    let v = EntryView::parse(&bytes)
        .map_err(|e| NodeError::corrupt(format!("audit entry {seq}"), e.0))?;
    Ok(InclusionProof {
        seq,
        tree_size: cp.size,
        root: hex::encode(cp.root),
        leaf_hash: hex::encode(leaf),
        proof: proof.iter().map(hex::encode).collect(),
        checkpoint_key: cp_signed.key_id().to_hex(),
        entry: EntryInfo::of(&v),
        verified: true,
        proof_micros: micros,
    })
}

/// A consistency proof (`pdx audit consistency`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// Root at `from` (hex).
    pub root_from: String,
    /// Root at `to` (hex).
    pub root_to: String,
    /// Proof hashes (hex).
    pub proof: Vec<String>,
    /// Whether it verified here.
    pub verified: bool,
}

/// `pdx audit consistency`.
pub fn consistency(node: &Node, from: u64, to: Option<u64>) -> Result<ConsistencyProof> {
    let cp = node.audit.checkpoint()?.peek()?;
    let to = to.unwrap_or(cp.size);
    let proof = node.audit.consistency_proof(from, to)?;
    let (r1, r2) = (node.audit.root_at(from)?, node.audit.root_at(to)?);
    pdx_audit::merkle::verify_consistency::<pdx_audit::merkle::Blake3, _>(
        from, to, &proof, &r1, &r2,
    )
    .map_err(pdx_audit::AuditError::from)?;
    Ok(ConsistencyProof {
        from,
        to,
        root_from: hex::encode(r1),
        root_to: hex::encode(r2),
        proof: proof.iter().map(hex::encode).collect(),
        verified: true,
    })
}

/// `pdx status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Department.
    pub dept: String,
    /// Display name.
    pub name: String,
    /// Network.
    pub network: String,
    /// The network's cryptographic suite.
    #[serde(default)]
    pub suite: pdx_crypto::Suite,
    /// Listen address.
    pub listen: String,
    /// Audit log id.
    pub log_id: String,
    /// The audit log.
    pub audit: AuditStatus,
    /// Peers.
    pub peers: Vec<directory::PeerInfo>,
    /// Incoming transfers not complete.
    pub pending_transfers_in: Vec<PendingIn>,
    /// Releases produced and not delivered.
    pub releases_not_yet_delivered: Vec<Undelivered>,
    /// Signed documents (confirmations, contributions, aggregates) the
    /// recipient has not acknowledged yet.
    #[serde(default)]
    pub documents_not_yet_delivered: Vec<UndeliveredDocument>,
    /// Datasets held.
    pub datasets: usize,
    /// When the node certificate expires (ms; absent in records of earlier
    /// versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires_ms: Option<u64>,
    /// Serial of the node certificate in use (hex; changes with `pdx cert
    /// install`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
    /// Warnings an operator should act on (a certificate that expires within
    /// 30 days, a restore not yet reconciled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The store format (`design.md` "Store format").
    #[serde(default)]
    pub store_format: u32,
}

/// The audit log in [`Status`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditStatus {
    /// Entries.
    pub entries: u64,
    /// Size of the latest checkpoint.
    pub checkpoint_size: u64,
    /// Its root (hex).
    pub checkpoint_root: String,
    /// Its age (ms).
    pub checkpoint_age_ms: u64,
}

/// An incoming transfer not complete.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingIn {
    /// Release.
    pub release: String,
    /// Arriving from.
    pub from: String,
    /// Dataset.
    pub dataset: String,
    /// Chunks stored.
    pub stored: u32,
    /// Chunks planned.
    pub chunks: usize,
}

/// A release not delivered yet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Undelivered {
    /// Release.
    pub release: String,
    /// Made for.
    pub to: String,
    /// Dataset.
    pub dataset: String,
}

/// A signed document not delivered yet (the outbox).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UndeliveredDocument {
    /// Submit kind.
    pub kind: String,
    /// Release or query it is about.
    pub subject: String,
    /// Addressed to.
    pub to: String,
    /// Digest of the signed document.
    pub digest: String,
    /// When it was signed (RFC 3339).
    pub signed: String,
}

/// `pdx status` (and `pdx peer list`).
pub fn status(node: &Node) -> Result<Status> {
    let mut pending_transfers_in = Vec::new();
    for r in release::in_releases(node)?.iter().filter(|r| !r.complete) {
        pending_transfers_in.push(PendingIn {
            release: release::release_hex(&r.release_id),
            from: r.from.clone(),
            dataset: r.dataset.clone(),
            stored: release::in_progress(node, &r.release_id)?,
            chunks: r.plan.len(),
        });
    }
    let releases_not_yet_delivered = release::out_releases(node)?
        .iter()
        .filter(|r| r.deliveries.is_empty())
        .map(|r| Undelivered {
            release: release::release_hex(&r.release_id),
            to: r.recipient.clone(),
            dataset: r.dataset.clone(),
        })
        .collect();
    let cp = node.audit.latest_checkpoint()?.peek()?;
    let cert = node.cert()?;
    let expires = crate::pki::validity(&cert)?.not_after_ms;
    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    let days = (expires - now).div_euclid(86_400_000);
    let mut warnings = Vec::new();
    if days < super::doctor::CERT_WARN_DAYS {
        warnings.push(if expires <= now {
            format!(
                "the node certificate has expired: peers refuse it; {}",
                super::doctor::RENEW_HINT
            )
        } else {
            format!(
                "the node certificate expires in {days} days: {}",
                super::doctor::RENEW_HINT
            )
        });
    }
    if let Some(why) = node.audit.checkpoints_held() {
        warnings.push(why);
    }
    Ok(Status {
        dept: node.config.dept.clone(),
        name: node.config.name.clone(),
        network: node.config.network.clone(),
        suite: node.suite,
        listen: node.config.listen.clone(),
        log_id: node.audit.log_id().to_text(),
        audit: AuditStatus {
            entries: node.audit.size(),
            checkpoint_size: cp.size,
            checkpoint_root: hex::encode(cp.root),
            checkpoint_age_ms: now_ms().saturating_sub(cp.time_ms),
        },
        peers: directory::peers(node)?,
        pending_transfers_in,
        releases_not_yet_delivered,
        documents_not_yet_delivered: super::outbox::pending(node, None)?
            .into_iter()
            .map(|p| UndeliveredDocument {
                kind: p.kind,
                subject: p.subject,
                to: p.to,
                digest: p.digest.to_hex(),
                signed: crate::timearg::format_ms(p.signed_ms).unwrap_or_default(),
            })
            .collect(),
        datasets: datasets::list(node)?.len(),
        certificate_expires_ms: u64::try_from(expires).ok(),
        certificate_serial: Some(crate::pki::parse_node_cert(&cert)?.serial),
        warnings,
        store_format: node.store.format(),
    })
}
