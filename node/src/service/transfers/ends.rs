//! The two ends the transfer driver needs: where a sent release's chunks come
//! from and its `send` is logged ([`ReleaseSource`]), and where a received
//! release is checked, stored and completed ([`ReleaseSink`]).

use super::*;

/// Chunks of a release this node produced or received, sent to `receiver`.
pub(super) struct ReleaseSource {
    node: Arc<Node>,
    body: ManifestBody,
    receiver: String,
    produced: bool,
    relayed_from: Option<String>,
    operator: String,
}

impl ReleaseSource {
    /// Chunks of a release this node produced, for its recipient.
    pub(super) fn produced(node: Arc<Node>, body: ManifestBody, receiver: &str) -> Self {
        ReleaseSource {
            node,
            body,
            receiver: receiver.to_string(),
            produced: true,
            relayed_from: None,
            operator: NODE_OPERATOR.into(),
        }
    }

    /// Chunks of a release this node received from `from`, relayed to `receiver`.
    pub(super) fn relayed(
        node: Arc<Node>,
        body: ManifestBody,
        receiver: &str,
        from: &str,
        operator: &str,
    ) -> Self {
        ReleaseSource {
            node,
            body,
            receiver: receiver.to_string(),
            produced: false,
            relayed_from: Some(from.to_string()),
            operator: operator.to_string(),
        }
    }
}

impl ReceiptCheck for ReleaseSource {
    fn check(&self, r: &Receipt) -> std::result::Result<(ReceiptBody, String), String> {
        let info = self
            .node
            .check_cert(&r.certificate)
            .map_err(|e| e.to_string())?;
        let body: ReceiptBody = r
            .signed
            .verify(SignatureDomain::Receipt, &info.identity)
            .map_err(|e| e.to_string())?;
        if body.from != self.node.config.dept {
            return Err(format!(
                "receipt acknowledges a transfer from {}, not from us",
                body.from
            ));
        }
        Ok((body, info.dept))
    }
}

impl ChunkSource for ReleaseSource {
    type Logged = Delivery;

    fn load(&self, index: u32) -> Result<Vec<u8>> {
        let chunk = if self.produced {
            release::out_chunk(&self.node, &self.body.release_id, index)
        } else {
            release::in_chunk(&self.node, &self.body.release_id, index)
        }?;
        self.node.metrics.sent_bytes(&self.receiver, chunk.len());
        Ok(chunk)
    }

    fn log_send(&self, rb: &ReceiptBody, receipt: &Receipt) -> Result<(u64, Delivery)> {
        let node = &self.node;
        let body = &self.body;
        let mut d = node.draft(EventKind::Send, &self.operator);
        d.subject = Subject {
            dataset: Some(body.dataset.clone()),
            release: Some(release_hex(&body.release_id)),
            digest: Some(rb.content_digest),
        };
        d.counterparty = Some(rb.receiver.clone());
        d.agreement = body.agreement.clone();
        d.purpose = Some(body.purpose.clone());
        d.legal_basis = body.legal_basis.clone();
        d.fields = body.fields.iter().map(ManifestField::field_ref).collect();
        d.record_count = Some(rb.record_count);
        d.payload_digest = Some(receipt.signed.digest());
        d.detail = Some(match &self.relayed_from {
            None => format!("receipt signed by {} verified", rb.receiver),
            Some(via) => format!(
                "forwarded release of {} (received from {via}); receipt signed by {} verified",
                body.sender, rb.receiver
            ),
        });
        let mut delivery = Delivery {
            to: rb.receiver.clone(),
            content_digest: rb.content_digest,
            records: rb.record_count,
            receipt_digest: receipt.signed.digest(),
            time_ms: now_ms(),
            audit_seq: 0,
        };
        // The delivery joins the release record in the same durable step as
        // the entry; its sequence number is the entry's.
        let seq = if self.produced {
            release::log_delivery(node, &body.release_id, d, &mut delivery)?
        } else {
            let seq = node.log(d)?.seq;
            delivery.audit_seq = seq;
            seq
        };
        node.metrics.sent_records(&rb.receiver, rb.record_count);
        Ok((seq, delivery))
    }

    fn aborted(&self, f: &Failure) {
        audit_abort(&self.node, &self.receiver, f);
    }
}

fn audit_abort(node: &Node, peer: &str, f: &Failure) {
    let mut d = node.draft(EventKind::RefusedRequest, NODE_OPERATOR);
    d.counterparty = Some(peer.to_string());
    d.detail = Some(format!("transfer aborted: {f}"));
    if let Err(e) = node.log(d) {
        tracing::error!("cannot audit an aborted transfer with {peer}: {e}");
    }
}

// -------------------------------------------------------------------- sinks

/// Where a received release goes: checks its manifest, stores its chunks,
/// completes it with a `receive` entry and a signed receipt.
pub(super) struct ReleaseSink {
    node: Arc<Node>,
    /// Department the chunks arrive from (sender or relay).
    from: String,
    operator: String,
    /// Pull (`fetch`): the manifest must be the asked sender's, for us, and a
    /// release held complete is answered AlreadyHave.
    expect_sender: Option<String>,
    /// Push (`Offer`): the manifest must not change during the offer.
    expect_release: Option<Vec<u8>>,
    state: Mutex<Option<InRelease>>,
}

impl ReleaseSink {
    /// A pull (`fetch`) from `sender`.
    pub(super) fn pull(node: Arc<Node>, sender: &str, operator: &str) -> Self {
        ReleaseSink {
            node,
            from: sender.to_string(),
            operator: operator.to_string(),
            expect_sender: Some(sender.to_string()),
            expect_release: None,
            state: Mutex::new(None),
        }
    }

    /// A relay's push of release `release_id` from `relay`.
    pub(super) fn offer(node: Arc<Node>, relay: &str, release_id: Vec<u8>) -> Self {
        ReleaseSink {
            node,
            from: relay.to_string(),
            operator: NODE_OPERATOR.into(),
            expect_sender: None,
            expect_release: Some(release_id),
            state: Mutex::new(None),
        }
    }

    fn with_release<T>(&self, f: impl FnOnce(&mut InRelease) -> Result<T>) -> Result<T> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| NodeError::Invalid("transfer state lock poisoned".into()))?;
        let rel = guard
            .as_mut()
            .ok_or_else(|| NodeError::Invalid("chunk before the manifest".into()))?;
        f(rel)
    }
}

impl ManifestCheck for ReleaseSink {
    fn check(&self, m: &Manifest) -> std::result::Result<ManifestBody, String> {
        let body = release::verify_manifest(&self.node, m).map_err(|e| e.to_string())?;
        if let Some(sender) = &self.expect_sender {
            if body.sender != *sender {
                return Err(format!(
                    "manifest is signed by {}, but we asked {sender}",
                    body.sender
                ));
            }
            if body.recipient != self.node.config.dept {
                return Err(format!(
                    "manifest is for {}, not for this department",
                    body.recipient
                ));
            }
        }
        if let Some(id) = &self.expect_release
            && body.release_id != *id
        {
            return Err("manifest changed during the offer".into());
        }
        Ok(body)
    }
}

impl ChunkSink for ReleaseSink {
    type Done = FetchOutcome;

    fn manifest(
        &self,
        body: &ManifestBody,
        manifest: &Manifest,
        plan: &[u32],
        stored: u32,
    ) -> Result<SinkStart<FetchOutcome>> {
        let node = &self.node;
        if self.expect_sender.is_some()
            && let Some(have) = release::in_release(node, &body.release_id)?
            && have.complete
        {
            return Ok(SinkStart::AlreadyHave(FetchOutcome::from_release(
                &have, true,
            )));
        }
        let rel = InRelease {
            rows: body.rows.clone(),
            release_id: body.release_id.clone(),
            sender: body.sender.clone(),
            from: self.from.clone(),
            dataset: body.dataset.clone(),
            profile: body.profile.clone(),
            agreement: body.agreement.clone(),
            purpose: body.purpose.clone(),
            plan: plan.to_vec(),
            complete: false,
            completed_ms: None,
            content_digest: None,
            record_count: 0,
            receive_seq: None,
        };
        if body.recipient == node.config.dept {
            release::check_chain(node, &rel)?;
        }
        release::begin_in_release(node, &rel, manifest, stored)?;
        *self
            .state
            .lock()
            .map_err(|_| NodeError::Invalid("transfer state lock poisoned".into()))? = Some(rel);
        Ok(SinkStart::Receive)
    }

    fn store(&self, position: u32, index: u32, records: &[u8]) -> Result<()> {
        // Not stored, not acknowledged: the sender stops, the fetch resumes
        // from the stored chunks once there is room.
        self.node.store.space().ensure(
            (records.len() as u64).saturating_mul(2),
            &format!("chunk {index} from {}", self.from),
        )?;
        self.with_release(|rel| {
            release::store_in_chunk(&self.node, &rel.release_id, position, index, records)
        })?;
        self.node.metrics.received_bytes(&self.from, records.len());
        Ok(())
    }

    fn complete(&self, content_digest: Digest, record_count: u64) -> Result<Receipt> {
        let node = &self.node;
        self.with_release(|rel| {
            let body = release::verify_manifest(node, &release::in_manifest(node, &rel.release_id)?)?;
            rel.content_digest = Some(content_digest);
            rel.record_count = record_count;
            let mut d = node.draft(EventKind::Receive, &self.operator);
            d.subject = Subject {
                dataset: Some(rel.dataset.clone()),
                release: Some(release_hex(&rel.release_id)),
                digest: Some(content_digest),
            };
            d.counterparty = Some(self.from.clone());
            d.agreement = rel.agreement.clone();
            d.purpose = Some(rel.purpose.clone());
            d.legal_basis = body.legal_basis.clone();
            d.fields = body.fields.iter().map(ManifestField::field_ref).collect();
            d.record_count = Some(record_count);
            d.payload_digest = Some(release::in_manifest(node, &rel.release_id)?.signed.digest());
            d.detail = Some(if rel.sender == self.from {
                format!(
                    "{} chunks verified against the manifest signed by {}",
                    rel.plan.len(),
                    rel.sender
                )
            } else {
                format!(
                    "{} chunks relayed by {}, verified against the manifest signed by the original sender {}",
                    rel.plan.len(),
                    self.from,
                    rel.sender
                )
            });
            release::complete_in_release(node, rel, d)?;
            node.metrics.received_records(&self.from, record_count);
            let receipt = ReceiptBody {
                release_id: rel.release_id.clone(),
                receiver: node.config.dept.clone(),
                from: self.from.clone(),
                content_digest,
                record_count,
                time_ms: now_ms(),
            };
            let (signed, certificate) = node.sign_certified(SignatureDomain::Receipt, &receipt)?;
            Ok(Receipt {
                signed,
                certificate,
            })
        })
    }

    fn finished(&self) -> Result<FetchOutcome> {
        self.with_release(|rel| Ok(FetchOutcome::from_release(rel, false)))
    }

    fn aborted(&self, f: &Failure) {
        audit_abort(&self.node, &self.from, f);
    }
}

/// Forwards progress from a blocking task to the async side.
pub(super) struct ChannelProgress {
    tx: tokio::sync::mpsc::Sender<(String, u64, u64)>,
    stage: Mutex<(String, u64)>,
}

impl ChannelProgress {
    pub(super) fn new(tx: tokio::sync::mpsc::Sender<(String, u64, u64)>) -> Self {
        ChannelProgress {
            tx,
            stage: Mutex::new((String::new(), 0)),
        }
    }
}

impl Progress for ChannelProgress {
    fn stage(&self, label: &str, total: Option<u64>, _unit: Unit) {
        if let Ok(mut s) = self.stage.lock() {
            *s = (label.to_string(), total.unwrap_or(0));
        }
        let _ = self.tx.try_send((label.to_string(), 0, total.unwrap_or(0)));
    }
    fn set(&self, done: u64) {
        if let Ok(s) = self.stage.lock() {
            let _ = self.tx.try_send((s.0.clone(), done, s.1));
        }
    }
    fn done(&self) {}
}
