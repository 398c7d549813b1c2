//! Peer witnessing: checking another node's checkpoint against the last one this
//! node holds for it, cosigning it, and keeping evidence when the two cannot
//! both be true. The protocol driver supplies the peer's certificate key and,
//! when asked, a consistency proof from the peer.

use crate::checkpoint::WitnessedCheckpoint;
use crate::checkpoint::{
    Checkpoint, ForkEvidence, KeyEndorsement, SignedCheckpoint, SignedCosignature,
    SignedEndorsement,
};
use crate::error::AuditError;
use crate::merkle::{Hash, verify_consistency_in};
use crate::store::{AuditLog, now_ms};
use pdx_crypto::VerifyingKey;

/// A peer checkpoint whose signatures verified.
#[derive(Clone, Debug)]
pub struct PeerCheckpoint {
    /// The peer's department (from its certificate).
    pub dept: String,
    /// The endorsement of the key that signed.
    pub endorsement: SignedEndorsement,
    /// The signed checkpoint as received.
    pub checkpoint: SignedCheckpoint,
    /// Its verified content.
    pub content: Checkpoint,
    /// The peer log's suite (from its log id; the same as its certificate's).
    pub suite: pdx_crypto::Suite,
    /// The acknowledged discontinuity its log states, proved under this
    /// checkpoint ([`PeerCheckpoint::with_discontinuity`]).
    pub discontinuity: Option<crate::entry::Discontinuity>,
}

impl PeerCheckpoint {
    /// Checks the endorsement under the peer's certificate key and the checkpoint
    /// under the endorsed audit key.
    pub fn verify(
        dept: &str,
        identity: &VerifyingKey,
        endorsement: SignedEndorsement,
        checkpoint: SignedCheckpoint,
    ) -> Result<Self, AuditError> {
        let endorsed: KeyEndorsement = endorsement.verify(identity)?;
        let Some(log) = crate::LogId::parse(&endorsed.log_id).filter(|l| l.dept == dept) else {
            return Err(AuditError::PeerFork {
                log_id: endorsed.log_id,
                reason: format!("endorsed log does not belong to department {dept}"),
            });
        };
        identity
            .suite()
            .expect(log.suite, &format!("the audit log {}", endorsed.log_id))?;
        let content = checkpoint.verify(&endorsed.audit_key)?;
        if content.origin != endorsed.log_id {
            return Err(AuditError::PeerFork {
                log_id: content.origin,
                reason: format!(
                    "checkpoint origin differs from the endorsed log {}",
                    endorsed.log_id
                ),
            });
        }
        if content.size <= endorsed.from_seq {
            return Err(AuditError::PeerFork {
                log_id: content.origin,
                reason: format!(
                    "checkpoint of size {} signed by a key valid only after seq {}",
                    content.size, endorsed.from_seq
                ),
            });
        }
        Ok(PeerCheckpoint {
            dept: dept.to_string(),
            endorsement,
            checkpoint,
            content,
            suite: log.suite,
            discontinuity: None,
        })
    }

    /// Checks that `entry` (canonical bytes, at `seq`) is a `discontinuity`
    /// entry of this log, included under this checkpoint by `proof`, and
    /// keeps what it states.
    pub fn with_discontinuity(
        mut self,
        seq: u64,
        entry: &[u8],
        proof: &[Hash],
    ) -> Result<Self, AuditError> {
        let bad = |reason: String| AuditError::PeerFork {
            log_id: self.content.origin.clone(),
            reason: format!("discontinuity proof: {reason}"),
        };
        let view = crate::entry::EntryView::parse(entry).map_err(|e| bad(e.to_string()))?;
        if view.log_id != self.content.origin || view.seq != seq {
            return Err(bad("the entry is not at that place of this log".into()));
        }
        if view.kind != crate::entry::EventKind::Discontinuity {
            return Err(bad(format!("a {} entry, not a discontinuity", view.kind)));
        }
        let d = view
            .discontinuity
            .clone()
            .ok_or_else(|| bad("the entry states no discontinuity".into()))?;
        if seq >= self.content.size || proof.len() > 64 {
            return Err(bad("the entry lies beyond the checkpoint".into()));
        }
        let leaf = crate::merkle::leaf_in(self.suite, entry);
        crate::merkle::verify_inclusion_in(
            self.suite,
            seq,
            self.content.size,
            &leaf,
            proof,
            &self.content.root,
        )
        .map_err(|e| bad(format!("not included under the checkpoint: {e}")))?;
        self.discontinuity = Some(d);
        Ok(self)
    }
}

/// Whether `d` states that the checkpoint `held`, which `witness_dept`
/// held, was lost: it names exactly that size and root as what this
/// witness had witnessed.
pub fn excuses(d: &crate::entry::Discontinuity, held: &Checkpoint, witness_dept: &str) -> bool {
    held.size > d.restored_size
        && held.size <= d.lost_to
        && d.witnessed
            .iter()
            .any(|w| w.dept == witness_dept && w.size == held.size && w.root == held.root)
}

/// What witnessing needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WitnessStep {
    /// Ask the peer for a consistency proof between these sizes of its log.
    NeedProof {
        /// Size of the checkpoint held.
        from: u64,
        /// Size of the new checkpoint.
        to: u64,
    },
    /// Nothing to prove (first contact or the same size); cosign.
    Ready,
}

/// Witnessing of one peer checkpoint in progress: what to ask for, and the
/// held checkpoint the answer will be checked against (a snapshot, so a
/// concurrent connection from the same peer cannot change it in between).
#[derive(Clone, Debug)]
pub struct Witnessing {
    /// What is needed next.
    pub step: WitnessStep,
    held: Option<WitnessedCheckpoint>,
    /// The held checkpoint is one the peer's acknowledged discontinuity lost:
    /// the new one supersedes it without a consistency proof.
    superseded: bool,
}

/// Decides what is needed to witness `pc`.
pub fn begin(log: &AuditLog, pc: &PeerCheckpoint) -> Result<Witnessing, AuditError> {
    let held = log.last_witnessed(&pc.content.origin)?;
    if let (Some(prev), Some(d)) = (&held, &pc.discontinuity) {
        let h = prev.checkpoint.peek()?;
        if excuses(d, &h, &log.log_id().dept) && pc.content.size > d.restored_size {
            return Ok(Witnessing {
                step: WitnessStep::Ready,
                held,
                superseded: true,
            });
        }
    }
    let step = match &held {
        None => WitnessStep::Ready,
        Some(prev) => {
            let held = prev.checkpoint.peek()?;
            if held.size == pc.content.size || held.size == 0 {
                WitnessStep::Ready
            } else if held.size < pc.content.size {
                WitnessStep::NeedProof {
                    from: held.size,
                    to: pc.content.size,
                }
            } else {
                WitnessStep::NeedProof {
                    from: pc.content.size,
                    to: held.size,
                }
            }
        }
    };
    Ok(Witnessing {
        step,
        held,
        superseded: false,
    })
}

/// Completes witnessing: checks consistency with the checkpoint held when
/// [`begin`] ran, using `proof` (for the sizes it asked), then cosigns. A
/// smaller checkpoint that is consistent and older than the held one is a
/// stale view (another connection got further first) and is cosigned; a
/// smaller one signed later means the log went back. On inconsistency the
/// evidence is stored, an alarm entry is logged, and [`AuditError::PeerFork`]
/// returned.
pub fn complete(
    log: &AuditLog,
    witnessing: Witnessing,
    pc: PeerCheckpoint,
    proof: Option<&[Hash]>,
) -> Result<SignedCosignature, AuditError> {
    if witnessing.superseded
        && let (Some(prev), Some(d)) = (&witnessing.held, &pc.discontinuity)
    {
        let held = prev.checkpoint.peek()?;
        let note = format!(
            "log {} has an acknowledged discontinuity: entries {}..{} were lost in a restore from a backup; the checkpoint held here (size {}, root {}) is superseded by size {}",
            pc.content.origin,
            d.restored_size,
            d.lost_to,
            held.size,
            hex::encode(held.root),
            pc.content.size
        );
        let content = pc.content.clone();
        return log.cosign_peer_superseding(
            &pc.dept,
            pc.checkpoint,
            pc.endorsement,
            &content,
            &note,
        );
    }
    if let Some(prev) = witnessing.held {
        let held = prev.checkpoint.peek()?;
        let problem = if held.size == pc.content.size {
            (held.root != pc.content.root)
                .then(|| format!("two different roots for size {}", held.size))
        } else if held.size < pc.content.size {
            let proof = proof.unwrap_or(&[]);
            verify_consistency_in(
                pc.suite,
                held.size,
                pc.content.size,
                proof,
                &held.root,
                &pc.content.root,
            )
            .err()
            .map(|e| {
                format!(
                    "size {} does not extend the held size {}: {e}",
                    pc.content.size, held.size
                )
            })
        } else {
            let proof = proof.unwrap_or(&[]);
            match verify_consistency_in(
                pc.suite,
                pc.content.size,
                held.size,
                proof,
                &pc.content.root,
                &held.root,
            ) {
                Ok(()) if pc.content.time_ms <= held.time_ms => None,
                Ok(()) => Some(format!(
                    "log went back from size {} to {} (truncated or restored from an old copy): the smaller checkpoint was signed later",
                    held.size, pc.content.size
                )),
                Err(e) => Some(format!(
                    "size {} contradicts the held size {}: {e}",
                    pc.content.size, held.size
                )),
            }
        };
        if let Some(reason) = problem {
            let evidence = ForkEvidence {
                log_id: pc.content.origin.clone(),
                earlier: prev.checkpoint.clone(),
                later: pc.checkpoint.clone(),
                endorsements: vec![prev.endorsement.clone(), pc.endorsement.clone()],
                reason: reason.clone(),
                time_ms: now_ms(),
            };
            log.record_fork(&pc.dept, evidence)?;
            return Err(AuditError::PeerFork {
                log_id: pc.content.origin,
                reason,
            });
        }
        if held.size == pc.content.size {
            return Ok(prev.cosignature);
        }
    }
    let content = pc.content.clone();
    log.cosign_peer(&pc.dept, pc.checkpoint, pc.endorsement, &content)
}
