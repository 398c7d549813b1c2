//! A node restored from a backup must not fork its log silently
//! (docs/operations.md "Restore", audit-format.md §11):
//!
//! 1. Opening a restored home holds checkpoint signing ([`crate::node::Node::open`]).
//! 2. `pdx serve` first asks every peer, with a recovering hello, for the
//!    latest checkpoint of this log it witnessed ([`reconcile`]). If none is
//!    beyond the restored log and every peer answered, signing resumes.
//! 3. Otherwise an `alarm` entry names the lost range and the node does not
//!    serve until an operator acknowledges ([`acknowledge`]): a
//!    `discontinuity` entry states the lost range and what each peer held.
//! 4. From then on every hello carries that entry with its inclusion proof,
//!    and a peer holding a lost checkpoint accepts the new one in its place
//!    (`pdx_audit::witness`); the regulator's verifier reports the range as
//!    lost, not as a fork.

use super::{Services, blocking, directory};
use crate::config::Home;
use crate::error::{NodeError, Result};
use crate::net::Peer;
use crate::node::Node;
use crate::proto::msg::DiscontinuityProof;
use crate::store::CF_DEFAULT;
use pdx_audit::checkpoint::{KeyEndorsement, SignedCheckpoint, WitnessedCheckpoint};
use pdx_audit::store::{StoreOp, now_ms};
use pdx_audit::{Discontinuity, EventKind, WitnessedSize};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Key (in the `default` family) of the sequence number of the log's
/// latest `discontinuity` entry: u64 BE, raw.
pub const DISCONTINUITY_KEY: &[u8] = b"pdx.discontinuity";
/// How long each peer gets to answer a recovering hello.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// A recovering peer's questions are audited at most once per this window.
pub const ANSWER_AUDIT_WINDOW_MS: u64 = 60_000;

/// The marker a restore leaves: the node holds its checkpoints until the
/// peers were asked and, if they witnessed more, an operator acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredMarker {
    /// The archive.
    pub backup_file: String,
    /// When the backup was made (ms).
    pub backup_created_ms: u64,
    /// Audit log size in the backup.
    pub audit_size: u64,
    /// When it was restored (ms).
    pub restored_ms: u64,
    /// What the peers said when `pdx serve` asked them (absent until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciliation: Option<Reconciliation>,
}

impl RestoredMarker {
    /// The marker of `home`, if it was restored and not yet reconciled.
    pub fn load(home: &Home) -> Result<Option<RestoredMarker>> {
        let path = home.restored_marker();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                NodeError::corrupt(
                    path.display().to_string(),
                    format!("not a restore marker: {e}"),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NodeError::io(&path)(e)),
        }
    }

    /// Writes the marker (0600).
    pub fn save(&self, home: &Home) -> Result<()> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| NodeError::Invalid(format!("restore marker: {e}")))?;
        crate::config::write_atomic(&home.restored_marker(), &text, 0o600)
    }

    /// Removes the marker: the restored node signs again.
    pub fn clear(home: &Home) -> Result<()> {
        let path = home.restored_marker();
        std::fs::remove_file(&path).map_err(NodeError::io(&path))
    }
}

/// What one peer said it holds of this node's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// The peer.
    pub dept: String,
    /// Size of the latest checkpoint of this log it witnessed (None: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Its root (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// When this node had signed it (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_ms: Option<u64>,
    /// Why it could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What asking the peers found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// The log as restored (entries `0..restored_size`).
    pub restored_size: u64,
    /// Each peer's answer.
    pub peers: Vec<PeerView>,
    /// The largest size a peer witnessed beyond the restored log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_to: Option<u64>,
    /// The `alarm` entry that named the loss (or the unreached peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_seq: Option<u64>,
    /// When the peers were asked (ms).
    pub asked_ms: u64,
}

impl Reconciliation {
    /// Peers that could not be asked.
    pub fn unreached(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|p| p.error.is_some())
            .map(|p| p.dept.clone())
            .collect()
    }

    /// Whether signing may resume without an operator.
    pub fn clean(&self) -> bool {
        self.lost_to.is_none() && self.unreached().is_empty()
    }
}

/// What `pdx restore --acknowledge-loss` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Acknowledged {
    /// The `discontinuity` entry (absent when nothing was known lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discontinuity_seq: Option<u64>,
    /// The log as restored.
    pub restored_size: u64,
    /// Entries `restored_size..lost_to` are lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_to: Option<u64>,
    /// Peers that could not be asked (they will alarm if they hold more).
    pub unreached: Vec<String>,
    /// The checkpoint signed over the acknowledgement.
    pub checkpoint_size: u64,
}

/// The sequence number of this log's latest `discontinuity` entry.
pub fn discontinuity_seq(node: &Node) -> Result<Option<u64>> {
    match node.store.get_raw(CF_DEFAULT, DISCONTINUITY_KEY)? {
        None => Ok(None),
        Some(v) => {
            let b: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| NodeError::corrupt("default/pdx.discontinuity", "not a u64"))?;
            Ok(Some(u64::from_be_bytes(b)))
        }
    }
}

/// The discontinuity entry and its inclusion proof under `checkpoint`, for
/// the hello (None: the log has none, or the checkpoint predates it).
pub fn discontinuity_proof(
    node: &Node,
    checkpoint: &SignedCheckpoint,
) -> Result<Option<DiscontinuityProof>> {
    let Some(seq) = discontinuity_seq(node)? else {
        return Ok(None);
    };
    let cp = checkpoint.peek()?;
    if seq >= cp.size {
        return Ok(None);
    }
    let entry = node.audit.entry_bytes(seq)?;
    let proof = node.audit.inclusion_proof(seq, cp.size)?;
    Ok(Some(DiscontinuityProof {
        seq,
        entry: serde_bytes::ByteBuf::from(entry),
        proof: proof
            .iter()
            .map(|h| serde_bytes::ByteBuf::from(h.to_vec()))
            .collect(),
    }))
}

/// Answers a recovering peer: the latest checkpoint of its log witnessed
/// here. Audited as a `backup` entry, once per peer and window.
pub fn held_for(
    node: &Node,
    peer: &Peer,
    answered: &Mutex<HashMap<String, u64>>,
) -> Result<Option<WitnessedCheckpoint>> {
    let Some(log) = &peer.log_id else {
        return Ok(None);
    };
    let held = node.audit.last_witnessed(log)?;
    let now = now_ms();
    let due = match answered.lock() {
        Ok(mut m) => {
            let last = m.get(&peer.dept).copied().unwrap_or(0);
            let due = now.saturating_sub(last) >= ANSWER_AUDIT_WINDOW_MS;
            if due {
                m.insert(peer.dept.clone(), now);
            }
            due
        }
        Err(_) => true,
    };
    if due {
        let what = match &held {
            None => "none is held here".to_string(),
            Some(w) => {
                let cp = w.checkpoint.peek()?;
                format!("size {} root {}", cp.size, hex::encode(cp.root))
            }
        };
        let mut d = node.draft(EventKind::Backup, crate::node::NODE_OPERATOR);
        d.counterparty = Some(peer.dept.clone());
        d.detail = Some(format!(
            "{} is recovering from a backup and asked for the latest checkpoint of its log {log} witnessed here: {what}",
            peer.dept
        ));
        node.log(d)?;
    }
    Ok(held)
}

/// Checks what a peer returned: a checkpoint of this log, signed by an
/// audit key this node's certificate endorsed.
fn check_held(node: &Node, w: &WitnessedCheckpoint) -> Result<pdx_audit::checkpoint::Checkpoint> {
    let ours = node.audit.log_id().to_text();
    if w.log_id != ours {
        return Err(NodeError::Invalid(format!(
            "answered with a checkpoint of another log {}",
            w.log_id
        )));
    }
    // What a peer holds may be endorsed under a certificate this node has
    // renewed since.
    let signer = node.endorsement_signer(&w.endorsement, &node.config.dept, Some(&ours))?;
    let en: KeyEndorsement = w.endorsement.verify(&signer.identity)?;
    if en.log_id != ours {
        return Err(NodeError::Invalid(
            "the endorsement names another log".into(),
        ));
    }
    let cp = w.checkpoint.verify(&en.audit_key)?;
    if cp.origin != ours {
        return Err(NodeError::Invalid(
            "the checkpoint names another log".into(),
        ));
    }
    Ok(cp)
}

/// `pdx serve` on a restored home, before it listens: asks every peer, then
/// resumes signing (clean) or records the alarm and returns what was found
/// for the operator. Idempotent: a second start asks again and alarms
/// again only if the findings changed.
pub async fn reconcile(svc: &Arc<Services>, operator: &str) -> Result<Reconciliation> {
    let node = svc.node.clone();
    let n = node.clone();
    let marker = blocking(move || RestoredMarker::load(&n.home))
        .await?
        .ok_or_else(|| NodeError::Invalid("this home was not restored from a backup".into()))?;
    let n = node.clone();
    let peers = blocking(move || directory::peers(&n)).await?;
    let answers = super::ask_each(peers.iter().map(|p| p.dept.clone()).collect(), |dept| {
        let svc = svc.clone();
        async move { tokio::time::timeout(PEER_TIMEOUT, svc.net.recover(&svc, &dept)).await }
    })
    .await?;
    let mut views = Vec::new();
    for (p, asked) in peers.iter().zip(answers) {
        let view = match asked {
            Err(_) => Err(format!("no answer within {} s", PEER_TIMEOUT.as_secs())),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(None)) => Ok(None),
            Ok(Ok(Some(w))) => {
                let n = node.clone();
                blocking(move || check_held(&n, &w).map(Some))
                    .await
                    .map_err(|e| format!("its answer does not verify: {e}"))
            }
        };
        views.push(match view {
            Ok(None) => PeerView {
                dept: p.dept.clone(),
                size: None,
                root: None,
                signed_ms: None,
                error: None,
            },
            Ok(Some(cp)) => PeerView {
                dept: p.dept.clone(),
                size: Some(cp.size),
                root: Some(hex::encode(cp.root)),
                signed_ms: Some(cp.time_ms),
                error: None,
            },
            Err(e) => PeerView {
                dept: p.dept.clone(),
                size: None,
                root: None,
                signed_ms: None,
                error: Some(e),
            },
        });
    }
    let operator = operator.to_string();
    blocking(move || settle(&node, marker, views, &operator)).await
}

fn settle(
    node: &Node,
    mut marker: RestoredMarker,
    peers: Vec<PeerView>,
    operator: &str,
) -> Result<Reconciliation> {
    let restored_size = marker.audit_size;
    // What peers witnessed within the restored log must be in it.
    for p in &peers {
        if let (Some(size), Some(root)) = (p.size, &p.root)
            && size <= restored_size
            && hex::encode(node.audit.root_at(size)?) != *root
        {
            let mut d = node.draft(EventKind::Alarm, operator);
            d.counterparty = Some(p.dept.clone());
            d.detail = Some(format!(
                "restored from a backup: {} witnessed this log at size {size} with another root than the restored log has; the backup is not a copy of the log the peers witnessed",
                p.dept
            ));
            node.log(d)?;
            return Err(NodeError::Refused(format!(
                "{} witnessed this log at size {size} with another root than the restored one: restore a backup of this node's own log",
                p.dept
            )));
        }
    }
    let lost_to = peers
        .iter()
        .filter_map(|p| p.size)
        .filter(|&s| s > restored_size)
        .max();
    let mut rec = Reconciliation {
        restored_size,
        peers,
        lost_to,
        alarm_seq: None,
        asked_ms: now_ms(),
    };
    if rec.clean() {
        let mut d = node.draft(EventKind::Backup, operator);
        d.detail = Some(format!(
            "restored from the backup {} (made at log size {restored_size}): {} peers asked, none witnessed this log beyond it; checkpoint signing resumes",
            marker.backup_file,
            rec.peers.len()
        ));
        node.log(d)?;
        node.audit.release_checkpoints();
        node.audit.checkpoint()?;
        RestoredMarker::clear(&node.home)?;
        return Ok(rec);
    }
    let same = marker
        .reconciliation
        .as_ref()
        .is_some_and(|prev| prev.lost_to == rec.lost_to && prev.unreached() == rec.unreached());
    rec.alarm_seq = match (&marker.reconciliation, same) {
        (Some(prev), true) => prev.alarm_seq,
        _ => {
            let mut d = node.draft(EventKind::Alarm, operator);
            d.detail = Some(alarm_text(&rec, &marker));
            Some(node.log(d)?.seq)
        }
    };
    marker.reconciliation = Some(rec.clone());
    marker.save(&node.home)?;
    Ok(rec)
}

fn alarm_text(rec: &Reconciliation, marker: &RestoredMarker) -> String {
    let mut parts = vec![format!(
        "restored from the backup {} made at log size {}",
        marker.backup_file, rec.restored_size
    )];
    if let Some(to) = rec.lost_to {
        let ahead: Vec<String> = rec
            .peers
            .iter()
            .filter(|p| p.size.is_some_and(|s| s > rec.restored_size))
            .map(|p| format!("{} at size {}", p.dept, p.size.unwrap_or(0)))
            .collect();
        parts.push(format!(
            "peers witnessed this log beyond it ({}): entries {}..{to} are lost",
            ahead.join(", "),
            rec.restored_size
        ));
    }
    let unreached = rec.unreached();
    if !unreached.is_empty() {
        parts.push(format!("not asked (unreachable): {}", unreached.join(", ")));
    }
    parts.push(
        "no checkpoint is signed and the node does not serve until an operator acknowledges (pdx restore --acknowledge-loss)"
            .into(),
    );
    parts.join("; ")
}

/// `pdx restore --acknowledge-loss`: states the loss the peers showed in a
/// `discontinuity` entry (the lost range and what each peer held), resumes
/// signing with a checkpoint over it, and clears the restore marker.
/// Refused before `pdx serve` has asked the peers.
pub fn acknowledge(node: &Node, reason: &str, operator: &str) -> Result<Acknowledged> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(NodeError::Invalid(
            "--reason: say why the loss is accepted (it goes into the audit log)".into(),
        ));
    }
    let marker = RestoredMarker::load(&node.home)?
        .ok_or_else(|| NodeError::NotFound("this home has no restore to acknowledge".into()))?;
    let rec = marker.reconciliation.clone().ok_or_else(|| {
        NodeError::Invalid(
            "the peers were not asked yet: start `pdx serve` once (it asks them and stops if they witnessed more)".into(),
        )
    })?;
    let unreached = rec.unreached();
    let note = format!(
        "acknowledged by {operator}: {reason}; restored from the backup {} made at log size {}{}",
        marker.backup_file,
        rec.restored_size,
        if unreached.is_empty() {
            String::new()
        } else {
            format!("; not asked (unreachable): {}", unreached.join(", "))
        }
    );
    let mut discontinuity_seq = None;
    match rec.lost_to {
        Some(lost_to) => {
            let mut witnessed = Vec::new();
            for p in &rec.peers {
                if let (Some(size), Some(root)) = (p.size, &p.root)
                    && size > rec.restored_size
                {
                    let root: [u8; 32] = hex::decode(root)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| {
                            NodeError::corrupt(crate::config::RESTORED_MARKER, "root")
                        })?;
                    witnessed.push(WitnessedSize {
                        dept: p.dept.clone(),
                        size,
                        root,
                    });
                }
            }
            let mut d = node.draft(EventKind::Discontinuity, operator);
            d.discontinuity = Some(Discontinuity {
                restored_size: rec.restored_size,
                lost_to,
                witnessed,
            });
            d.record_count = Some(lost_to - rec.restored_size);
            d.detail = Some(note);
            // Nothing else appends here (the node does not serve), so the
            // entry's place is known before it is written with its index.
            let seq = node.audit.size();
            let op = StoreOp::Put {
                cf: CF_DEFAULT,
                key: DISCONTINUITY_KEY.to_vec(),
                value: seq.to_be_bytes().to_vec(),
            };
            let appended = node.log_with(d, vec![op])?;
            if appended.seq != seq {
                return Err(NodeError::Invalid(format!(
                    "the discontinuity entry landed at {} instead of {seq}: another process appended; stop it and acknowledge again",
                    appended.seq
                )));
            }
            discontinuity_seq = Some(seq);
        }
        None => {
            let mut d = node.draft(EventKind::Backup, operator);
            d.detail = Some(format!("restore without a known loss {note}"));
            node.log(d)?;
        }
    }
    node.audit.release_checkpoints();
    let cp = node.audit.checkpoint()?.peek()?;
    RestoredMarker::clear(&node.home)?;
    Ok(Acknowledged {
        discontinuity_seq,
        restored_size: rec.restored_size,
        lost_to: rec.lost_to,
        unreached,
        checkpoint_size: cp.size,
    })
}
