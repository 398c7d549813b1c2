//! The node's side of the connection handshake: what it presents, checking a
//! peer's checkpoint and key documents, consistency proofs of its own log,
//! witnessing (cosigning, or keeping evidence of a fork) and storing the
//! cosignatures peers give it. The audit log's witness families are written
//! here, through `pdx_audit::witness`.

use super::directory;
use crate::error::{NodeError, Result};
use crate::net::{Peer, SOFTWARE};
use crate::node::Node;
use crate::proto::handshake::{LocalHello, PeerHello, ProofRequest};
use crate::proto::msg::ErrorCode;
use crate::proto::transfer::Failure;
use pdx_audit::checkpoint::{Cosignature, SignedCheckpoint, SignedCosignature};
use pdx_audit::merkle::Hash;
use pdx_audit::store::now_ms;
use pdx_audit::witness::{self, PeerCheckpoint, WitnessStep};

/// Witnessing of one peer checkpoint between the hello and the proof.
#[derive(Debug)]
pub struct Pending {
    checkpoint: PeerCheckpoint,
    witnessing: witness::Witnessing,
    need: Option<(u64, u64)>,
}

/// What this node presents in a handshake.
pub fn local_hello(node: &Node) -> Result<LocalHello> {
    let checkpoint = node.audit.checkpoint()?;
    let discontinuity = super::recovery::discontinuity_proof(node, &checkpoint)?;
    Ok(LocalHello {
        dept: node.config.dept.clone(),
        software: SOFTWARE.into(),
        checkpoint,
        endorsement: node.audit_endorsement()?,
        key_documents: directory::own_key_documents(node)?,
        time_ms: now_ms(),
        recovering: false,
        discontinuity,
    })
}

/// The hello of a node restored from a backup: its latest signed checkpoint
/// (checkpoints are held, so none is signed), asking only what the peer
/// holds of its log.
pub fn recovery_hello(node: &Node) -> Result<LocalHello> {
    Ok(LocalHello {
        dept: node.config.dept.clone(),
        software: SOFTWARE.into(),
        checkpoint: node.audit.latest_checkpoint()?,
        endorsement: node.audit_endorsement()?,
        key_documents: directory::own_key_documents(node)?,
        time_ms: now_ms(),
        recovering: true,
        discontinuity: None,
    })
}

/// The peer's clock minus ours, in ms (positive: the peer is ahead), from
/// the time in its hello and ours on receipt (one-way latency included).
pub fn clock_skew_ms(peer_ms: u64, local_ms: u64) -> i64 {
    let d = i128::from(peer_ms) - i128::from(local_ms);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

fn failure(code: ErrorCode, e: impl std::fmt::Display) -> Failure {
    Failure {
        code,
        message: e.to_string(),
        from_peer: false,
    }
}

/// Accepts the peer's key documents, verifies its checkpoint (endorsement
/// under its certificate key, checkpoint under the endorsed audit key) and
/// decides what witnessing needs.
pub fn check_peer(
    node: &Node,
    peer: &Peer,
    hello: PeerHello,
) -> std::result::Result<(ProofRequest, Pending), Failure> {
    if let Some(t) = hello.time_ms {
        node.metrics
            .peer_clock(&peer.dept, clock_skew_ms(t, now_ms()));
    }
    directory::accept_key_documents(node, &hello.key_documents)
        .map_err(|e| failure(ErrorCode::Internal, e))?;
    // The endorsement stands on its own certificate (the peer may have
    // renewed since this connection's certificate was issued).
    let signer = node
        .endorsement_signer(&hello.endorsement, &peer.dept, peer.log_id.as_deref())
        .map_err(|e| failure(ErrorCode::BadSignature, e))?;
    let checkpoint = PeerCheckpoint::verify(
        &peer.dept,
        &signer.identity,
        hello.endorsement,
        hello.checkpoint,
    )
    .map_err(|e| failure(ErrorCode::BadSignature, e))?;
    // A discontinuity that does not prove is ignored, not trusted: witnessing
    // then goes as without one (and a lost checkpoint held here is a fork).
    let checkpoint = match &hello.discontinuity {
        None => checkpoint,
        Some(p) => {
            let hashes: Vec<Hash> = p
                .proof
                .iter()
                .filter_map(|h| <Hash>::try_from(h.as_slice()).ok())
                .collect();
            match checkpoint
                .clone()
                .with_discontinuity(p.seq, &p.entry, &hashes)
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(peer = %peer.dept, "ignoring its discontinuity: {e}");
                    checkpoint
                }
            }
        }
    };
    one_log_per_department(node, peer, &checkpoint.content.origin)?;
    let witnessing =
        witness::begin(&node.audit, &checkpoint).map_err(|e| failure(ErrorCode::Internal, e))?;
    let need = match witnessing.step {
        WitnessStep::NeedProof { from, to } => Some((from, to)),
        WitnessStep::Ready => None,
    };
    Ok((
        need,
        Pending {
            checkpoint,
            witnessing,
            need,
        },
    ))
}

/// A department has one audit log network-wide: the one its certificate
/// binds. A second log (invented, or a certificate re-issued with another
/// log while this node witnessed the first) is refused as a split-view
/// attempt.
fn one_log_per_department(
    node: &Node,
    peer: &Peer,
    presented: &str,
) -> std::result::Result<(), Failure> {
    let refuse = |why: String| Failure {
        code: ErrorCode::Untrusted,
        message: format!("split view: {why}"),
        from_peer: false,
    };
    match &peer.log_id {
        None => {
            return Err(refuse(format!(
                "the certificate of {} binds no audit log (urn:pdx:log:), so its log {presented} cannot be told from a second one",
                peer.dept
            )));
        }
        Some(bound) if bound != presented => {
            return Err(refuse(format!(
                "{} presented the audit log {presented}, but its certificate binds {bound}",
                peer.dept
            )));
        }
        Some(_) => {}
    }
    let prefix = format!("{}:", peer.dept);
    let held = node
        .audit
        .witnessed()
        .map_err(|e| failure(ErrorCode::Internal, e))?;
    if let Some(other) = held
        .iter()
        .find(|w| w.log_id.starts_with(&prefix) && w.log_id != presented)
    {
        return Err(refuse(format!(
            "{} presented the audit log {presented}, but this node witnessed its log {} before",
            peer.dept, other.log_id
        )));
    }
    Ok(())
}

/// A consistency proof between `from` and `to` of this node's log, if one
/// of them is the size of the checkpoint it sent.
pub fn prove(
    node: &Node,
    from: u64,
    to: u64,
    sent: &SignedCheckpoint,
) -> Option<Vec<serde_bytes::ByteBuf>> {
    let sent_size = sent.peek().ok()?.size;
    if to != sent_size && from != sent_size {
        return None;
    }
    let (a, b) = if from <= to { (from, to) } else { (to, from) };
    node.audit.consistency_proof(a, b).ok().map(|p| {
        p.into_iter()
            .map(|h| serde_bytes::ByteBuf::from(h.to_vec()))
            .collect()
    })
}

/// Completes witnessing: checks the peer's checkpoint against the one held
/// when the hello arrived, with its proof, then cosigns. A peer that does not
/// send a proof it was asked for is not cosigned; a fork is kept as evidence
/// (and alarmed) by `pdx_audit::witness`.
pub fn witness(
    node: &Node,
    pending: Pending,
    proof: Option<Vec<serde_bytes::ByteBuf>>,
) -> Result<std::result::Result<SignedCosignature, String>> {
    let hashes: Option<Vec<Hash>> = proof.map(|p| {
        p.iter()
            .filter_map(|h| <Hash>::try_from(h.as_slice()).ok())
            .collect()
    });
    if pending.need.is_some() && hashes.is_none() {
        let held = node
            .audit
            .last_witnessed(&pending.checkpoint.content.origin)?;
        if held.is_some() {
            return Ok(Err(
                "did not send the consistency proof it was asked for".into()
            ));
        }
    }
    match witness::complete(
        &node.audit,
        pending.witnessing,
        pending.checkpoint,
        hashes.as_deref(),
    ) {
        Ok(c) => Ok(Ok(c)),
        Err(e @ pdx_audit::AuditError::PeerFork { .. }) => Ok(Err(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Verifies the peer's cosignature of the checkpoint this node sent and
/// stores it; a refusal to cosign is only logged.
pub fn store_cosignature(
    node: &Node,
    peer: &Peer,
    sent: &SignedCheckpoint,
    cosignature: std::result::Result<SignedCosignature, String>,
) -> Result<()> {
    let c = match cosignature {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(peer = %peer.dept, "peer did not cosign our checkpoint: {why}");
            return Ok(());
        }
    };
    let wrong = |m: &str| NodeError::Peer {
        peer: peer.dept.clone(),
        message: m.to_string(),
    };
    let signer =
        node.endorsement_signer(&c.witness_endorsement, &peer.dept, peer.log_id.as_deref())?;
    let endorsed = c.witness_endorsement.verify(&signer.identity)?;
    if !endorsed.log_id.starts_with(&format!("{}:", peer.dept)) {
        return Err(wrong("cosigned with a key of another department"));
    }
    let cos: Cosignature = c.verify(&endorsed.audit_key)?;
    let mine = sent.peek()?;
    if cos.log_id != mine.origin
        || cos.size != mine.size
        || cos.root != mine.root
        || cos.checkpoint_digest != sent.digest()
    {
        return Err(wrong("cosignature does not match the checkpoint we sent"));
    }
    node.audit
        .store_received_cosignature(cos.size, &c, &cos.witness)?;
    node.metrics.cosigned(&peer.dept, cos.size, cos.time_ms);
    Ok(())
}
