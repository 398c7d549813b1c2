//! Drives [`crate::proto::handshake`] on stream 0: messages to and from the
//! peer, the machine's deadline, and its storage actions through the [`Host`]
//! on the blocking pool.

use super::{Framed, Host, Peer, on_pool};
use crate::error::NodeError;
use crate::proto::handshake::{Action, Handshake};
use crate::proto::msg::Message;
use crate::proto::transfer::Failure;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Why a handshake failed, and whether the peer was told.
#[derive(Debug)]
pub(crate) struct HandshakeFailed {
    /// The failure.
    pub failure: Failure,
}

impl HandshakeFailed {
    pub(crate) fn into_error(self, peer: &str) -> NodeError {
        if self.failure.from_peer {
            NodeError::Refused(format!(
                "{peer} refused the handshake: {}",
                self.failure.message
            ))
        } else {
            NodeError::Peer {
                peer: peer.to_string(),
                message: format!("handshake failed: {}", self.failure),
            }
        }
    }
}

fn local(e: NodeError) -> Failure {
    Failure {
        code: crate::proto::msg::ErrorCode::Internal,
        message: e.to_string(),
        from_peer: false,
    }
}

/// How a handshake ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Both logs witnessed: the connection carries requests.
    Witnessed,
    /// Server: a recovering peer was told what this node holds of its log.
    Answered,
    /// Client, recovering: what the peer holds of this node's log.
    Recovered(Option<Box<pdx_audit::checkpoint::WitnessedCheckpoint>>),
}

/// Runs the handshake to its end. On a failure of ours the peer gets an
/// `Error` with the failure's code before the stream is finished.
pub(crate) async fn run<H: Host>(
    host: &Arc<H>,
    s: &mut Framed,
    mut hs: Handshake,
    peer: &Peer,
) -> std::result::Result<Outcome, HandshakeFailed> {
    match drive(host, s, &mut hs, peer).await {
        Ok(outcome) => {
            s.finish().await;
            Ok(outcome)
        }
        Err(failure) => {
            if !failure.from_peer {
                s.refuse(failure.code, &failure.message).await;
            }
            Err(HandshakeFailed { failure })
        }
    }
}

async fn drive<H: Host>(
    host: &Arc<H>,
    s: &mut Framed,
    hs: &mut Handshake,
    peer: &Peer,
) -> std::result::Result<Outcome, Failure> {
    let mut actions: VecDeque<Action> = hs.start().into();
    let mut witnessing: Option<H::Witnessing> = None;
    loop {
        while let Some(action) = actions.pop_front() {
            let next = match action {
                Action::Send(m) => {
                    s.send(&m).await.map_err(local)?;
                    Vec::new()
                }
                Action::CheckPeer(hello) => {
                    let p = peer.clone();
                    let (need, w) = on_pool(host, move |h| h.check_peer(&p, *hello))
                        .await
                        .map_err(local)??;
                    witnessing = Some(w);
                    hs.peer_checked(need)?
                }
                Action::Prove { from, to } => {
                    let sent = hs.sent_checkpoint().clone();
                    let proof = on_pool(host, move |h| h.prove(from, to, &sent))
                        .await
                        .map_err(local)?;
                    hs.proved(proof)?
                }
                Action::Witness { proof } => {
                    let w = witnessing.take().ok_or_else(|| {
                        local(NodeError::Invalid(
                            "witnessing before the peer was checked".into(),
                        ))
                    })?;
                    let p = peer.clone();
                    let cosignature = on_pool(host, move |h| h.witness(&p, w, proof))
                        .await
                        .map_err(local)?
                        .map_err(local)?;
                    hs.witnessed(cosignature)?
                }
                Action::StoreCosignature(c) => {
                    let sent = hs.sent_checkpoint().clone();
                    let p = peer.clone();
                    on_pool(host, move |h| h.store_cosignature(&p, &sent, c))
                        .await
                        .map_err(local)?
                        .map_err(local)?;
                    Vec::new()
                }
                Action::Done(result) => {
                    return result.map(|()| Outcome::Witnessed).map_err(|why| Failure {
                        code: crate::proto::msg::ErrorCode::BadRequest,
                        message: format!("the peer's checkpoint was not witnessed: {why}"),
                        from_peer: false,
                    });
                }
                Action::Recovery => {
                    let p = peer.clone();
                    let held = on_pool(host, move |h| h.recovery_held(&p))
                        .await
                        .map_err(local)?
                        .map_err(local)?;
                    hs.recovery_answer(held)?
                }
                // The reply was sent by the action before this one.
                Action::Answered => return Ok(Outcome::Answered),
                Action::Recovered(held) => return Ok(Outcome::Recovered(held)),
            };
            actions.extend(next);
        }
        let Some(deadline) = hs.poll_timeout() else {
            return Ok(Outcome::Witnessed);
        };
        let msg: Message = match s.recv_until(deadline.into()).await {
            Ok(m) => m,
            Err(super::RecvError::Timeout(_)) => {
                return Err(hs.handle_timeout(Instant::now()).unwrap_or(Failure {
                    code: crate::proto::msg::ErrorCode::Timeout,
                    message: "handshake deadline passed".into(),
                    from_peer: false,
                }));
            }
            Err(e) => {
                return Err(Failure {
                    code: e.code().unwrap_or(crate::proto::msg::ErrorCode::BadRequest),
                    message: e.to_string(),
                    from_peer: false,
                });
            }
        };
        actions.extend(hs.handle(msg)?);
    }
}
