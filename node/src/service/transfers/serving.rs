//! The serving side: a `ReleaseRequest` or `Resume` (the release produced on
//! the blocking pool while Progress frames keep the peer waiting), and a
//! relay's `Offer`.

use super::ends::ChannelProgress;
use super::*;
impl Services {
    /// Serves a `ReleaseRequest`, or a `Resume` of a release made for the peer.
    pub(crate) async fn serve_release(
        self: &Arc<Self>,
        s: &mut Framed,
        peer: &Peer,
        req: ReleaseRequest,
        resume: Option<(OutRelease, u32)>,
    ) -> Result<()> {
        let node = self.node.clone();
        let (p, r) = (peer.dept.clone(), req.clone());
        let authorized = blocking(move || {
            Ok(grants::authorize(
                &node,
                &p,
                &r.dataset,
                &r.profile,
                r.agreement.as_deref(),
                &r.purpose,
            ))
        })
        .await?;
        if let Err((code, why)) = authorized {
            return self.refuse_request(s, peer, Some(&req), code, &why).await;
        }
        let (out, start) = match resume {
            Some(r) => r,
            None => match self.produce_streaming(s, peer, &req).await? {
                Ok(out) => (out, 0),
                Err((code, why)) => {
                    return self.refuse_request(s, peer, Some(&req), code, &why).await;
                }
            },
        };
        let node = self.node.clone();
        let manifest = out.manifest.clone();
        let body = blocking(move || release::verify_manifest(&node, &manifest)).await?;
        s.send(&Message::Manifest(Box::new(out.manifest.clone())))
            .await?;
        let mut tx = match Sender::new(
            Instant::now(),
            self.net.read_timeout(),
            self.node.config.transfer.window,
            self.node.suite,
            &body,
            (0..out.chunks).collect(),
            start,
            &peer.dept,
        ) {
            Ok(t) => t,
            Err(f) => {
                return self
                    .refuse_request(s, peer, Some(&req), f.code, &f.message)
                    .await;
            }
        };
        let source = Arc::new(ReleaseSource::produced(self.node.clone(), body, &peer.dept));
        let label = format!("send {} to {}", release_hex(&out.release_id), peer.dept);
        transfer::send(s, &mut tx, source, self.pause(), &NoProgress, &label).await?;
        s.finish().await;
        Ok(())
    }

    /// Produces the release on the blocking pool, sending Progress frames
    /// meanwhile (they keep the peer's read timeout from firing).
    async fn produce_streaming(
        self: &Arc<Self>,
        s: &mut Framed,
        peer: &Peer,
        req: &ReleaseRequest,
    ) -> Result<std::result::Result<OutRelease, (ErrorCode, String)>> {
        let spec = ReleaseSpec {
            dataset: req.dataset.clone(),
            profile: req.profile.clone(),
            agreement: req.agreement.clone(),
            purpose: req.purpose.clone(),
            recipient: peer.dept.clone(),
            operator: NODE_OPERATOR.into(),
            incremental: req.incremental,
            after: req.after.clone(),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, u64, u64)>(16);
        let node = self.node.clone();
        let producing = super::super::bulk("pdx-release", move || {
            let p = ChannelProgress::new(tx);
            release::produce(&node, &spec, &p)
        });
        tokio::pin!(producing);
        let result = loop {
            tokio::select! {
                r = &mut producing => break r,
                Some((stage, done, total)) = rx.recv() => {
                    s.send(&Message::Progress(crate::proto::msg::Progress { stage, done, total })).await?;
                }
            }
        };
        Ok(match result {
            Ok(out) => Ok(out),
            Err(NodeError::Rule(v)) => {
                let code = match v {
                    pdx_schemas::RuleViolation::PrivacyModel { .. }
                    | pdx_schemas::RuleViolation::IncrementalPrivacyModel { .. } => {
                        ErrorCode::PrivacyModel
                    }
                    _ => ErrorCode::RuleRefused,
                };
                Err((code, v.to_string()))
            }
            Err(e @ NodeError::NotFound(_)) => Err((ErrorCode::NotFound, e.to_string())),
            Err(e) => Err((ErrorCode::Internal, e.to_string())),
        })
    }

    /// Serves a `Resume` of a release made for this peer.
    pub(crate) async fn serve_resume(
        self: &Arc<Self>,
        s: &mut Framed,
        peer: &Peer,
        r: Resume,
    ) -> Result<()> {
        let node = self.node.clone();
        let id = r.release_id.clone();
        let out = blocking(move || release::out_release(&node, &id)).await;
        match out {
            Ok(out) if out.recipient == peer.dept => {
                let req = ReleaseRequest {
                    dataset: out.dataset.clone(),
                    profile: out.profile.clone(),
                    agreement: out.agreement.clone(),
                    purpose: out.purpose.clone(),
                    incremental: false,
                    after: None,
                };
                self.serve_release(s, peer, req, Some((out, r.next_chunk)))
                    .await
            }
            _ => {
                let why = format!(
                    "no release {} for {}",
                    release_hex(&r.release_id),
                    peer.dept
                );
                self.refuse_request(s, peer, None, ErrorCode::NotFound, &why)
                    .await
            }
        }
    }

    /// Receives a relay's `Offer` of chunks sealed for this department.
    pub(crate) async fn receive_offer(
        self: &Arc<Self>,
        s: &mut Framed,
        peer: &Peer,
        offer: Offer,
    ) -> Result<()> {
        let node = self.node.clone();
        let manifest = offer.manifest.clone();
        let checked = blocking(move || {
            let body = match release::verify_manifest(&node, &manifest) {
                Ok(b) => b,
                Err(e) => return Ok(Err((ErrorCode::BadSignature, e.to_string()))),
            };
            let existing = release::in_release(&node, &body.release_id)?;
            let stored = release::in_progress(&node, &body.release_id)?;
            Ok(Ok((body, existing, stored)))
        })
        .await?;
        let (body, existing, stored) = match checked {
            Ok(c) => c,
            Err((code, why)) => return self.refuse_request(s, peer, None, code, &why).await,
        };
        let mine = Some(self.node.config.dept.as_str());
        if offer.chunks.is_empty()
            || offer
                .chunks
                .iter()
                .any(|&i| body.chunks.get(i as usize).map(|c| c.recipient.as_deref()) != Some(mine))
        {
            return self
                .refuse_request(
                    s,
                    peer,
                    None,
                    ErrorCode::NotGranted,
                    "the offer includes chunks the original sender did not address to this department",
                )
                .await;
        }
        let resume_from = match &existing {
            Some(r) if r.complete => {
                s.send(&Message::AlreadyHave(crate::proto::msg::AlreadyHave {
                    release_id: body.release_id.clone(),
                }))
                .await?;
                s.finish().await;
                return Ok(());
            }
            Some(r) if r.plan == offer.chunks => stored,
            _ => 0,
        };
        let sink = Arc::new(ReleaseSink::offer(
            self.node.clone(),
            &peer.dept,
            body.release_id.clone(),
        ));
        let mut rx = Receiver::new(
            Instant::now(),
            self.net.read_timeout(),
            Some((body.release_id.clone(), resume_from)),
            Some(offer.chunks.clone()),
        );
        let check = sink.clone();
        let first = match tokio::task::spawn_blocking(move || {
            rx.accept_manifest(offer.manifest, check.as_ref())
                .map(|a| (rx, a))
        })
        .await
        .map_err(|e| NodeError::Invalid(e.to_string()))?
        {
            Ok((r, a)) => {
                rx = r;
                a
            }
            Err(f) => return self.refuse_request(s, peer, None, f.code, &f.message).await,
        };
        s.send(&Message::OfferAccept(OfferAccept { resume_from }))
            .await?;
        transfer::receive(s, &mut rx, first, sink, &NoProgress).await?;
        s.finish().await;
        Ok(())
    }
}
