//! Moving releases: `pdx fetch` (pull), `pdx forward` (a relay's push), and the
//! serving side of both. The QUIC driver runs the transfer machines
//! ([`crate::net::transfer`]); this module gives it where chunks come from and
//! go to ([`ReleaseSource`], [`ReleaseSink`]) and audits every step.

mod ends;
mod serving;

use super::release::{self, Delivery, InRelease, OutRelease, ReleaseSpec, release_hex};
use super::{Services, blocking, grants};
use crate::error::{NodeError, Result};
use crate::net::transfer::{self, ChunkSink, ChunkSource, SinkStart};
use crate::net::{Framed, Peer};
use crate::node::{NODE_OPERATOR, Node};
use crate::progress::{NoProgress, Progress, Unit};
use crate::proto::msg::{
    ErrorCode, Manifest, ManifestBody, ManifestField, Message, Offer, OfferAccept, Receipt,
    ReceiptBody, ReleaseRequest, Resume,
};
use crate::proto::transfer::{Failure, ManifestCheck, ReceiptCheck, Receiver, Sender};
use ends::{ReleaseSink, ReleaseSource};
use pdx_audit::store::now_ms;
use pdx_audit::{EventKind, Subject};
use pdx_crypto::{Digest, SignatureDomain};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to fetch (`pdx fetch`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchSpec {
    /// Peer.
    pub peer: String,
    /// Dataset.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Agreement (default: the peer's grant's).
    pub agreement: Option<String>,
    /// Purpose (default: the peer's grant's).
    pub purpose: Option<String>,
    /// Retries after a lost connection.
    pub retries: u32,
    /// Only the rows added since the newest release of this chain held here.
    #[serde(default)]
    pub incremental: bool,
}

/// What to forward (`pdx forward`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForwardSpec {
    /// Release id (hex); None with `all_releases`.
    pub release: Option<String>,
    /// Every complete received release with chunks sealed for `to`, over
    /// one connection.
    #[serde(default)]
    pub all_releases: bool,
    /// Recipient (None: every department the sender sealed chunks for).
    pub to: Option<String>,
    /// Retries after a lost connection.
    pub retries: u32,
}

/// What a fetch did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchOutcome {
    /// Release id.
    pub release: String,
    /// Original sender.
    pub sender: String,
    /// Dataset.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Records.
    pub records: u64,
    /// Chunks.
    pub chunks: u32,
    /// Transfer digest (docs/cli-output.md: `digest`).
    pub digest: String,
    /// The same (kept for scripts written against earlier versions).
    pub content_digest: String,
    /// The release was already complete here (nothing transferred).
    pub already_complete: bool,
    /// Resumed from this chunk.
    pub resumed_from: Option<u32>,
    /// Audit entry of the receive.
    pub receive_seq: Option<u64>,
    /// First dataset row the release covers (absent before watermarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_from: Option<u64>,
    /// Its watermark: the rows the dataset had when it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_to: Option<u64>,
    /// The release it follows (incremental releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

impl FetchOutcome {
    fn from_release(r: &InRelease, already: bool) -> Self {
        FetchOutcome {
            release: release_hex(&r.release_id),
            sender: r.sender.clone(),
            dataset: r.dataset.clone(),
            profile: r.profile.clone(),
            records: r.record_count,
            chunks: u32::try_from(r.plan.len()).unwrap_or(u32::MAX),
            digest: r.content_digest.map(|d| d.to_hex()).unwrap_or_default(),
            content_digest: r.content_digest.map(|d| d.to_hex()).unwrap_or_default(),
            already_complete: already,
            resumed_from: None,
            receive_seq: r.receive_seq,
            rows_from: r.rows.as_ref().map(|x| x.from),
            rows_to: r.rows.as_ref().map(|x| x.to),
            previous: r
                .rows
                .as_ref()
                .and_then(|x| x.previous.as_deref())
                .map(release_hex),
        }
    }
}

/// What a forward did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForwardOutcome {
    /// Release.
    pub release: String,
    /// Recipient.
    pub to: String,
    /// Chunks offered.
    pub chunks: u32,
    /// Records delivered.
    pub records: u64,
    /// The recipient already had them.
    pub already_delivered: bool,
    /// Transfer digest (docs/cli-output.md: `digest`).
    pub digest: String,
    /// The same (kept for scripts written against earlier versions).
    pub content_digest: String,
}

/// Concurrent transfers on the one connection of `pdx forward
/// --all-releases` (below the peer's [`crate::net::MAX_STREAMS`]).
pub const FORWARD_STREAMS: usize = 8;

/// Whether an error is worth retrying (the connection or the peer went away).
fn retryable(e: &NodeError) -> bool {
    matches!(e, NodeError::Network(_) | NodeError::Peer { .. })
}

/// Runs `attempt` until it succeeds, fails for good, or `retries` retries
/// after lost connections are used up (backing off 1 s, 2 s, 4 s ... 16 s).
pub(crate) async fn retrying<T, F: std::future::Future<Output = Result<T>>>(
    retries: u32,
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T> {
    let mut tried = 0;
    loop {
        match attempt().await {
            Err(e) if retryable(&e) && tried < retries => {
                tried += 1;
                tracing::warn!("{what} interrupted ({e}); retry {tried} of {retries}");
                tokio::time::sleep(Duration::from_millis(500 << tried.min(5))).await;
            }
            other => return other,
        }
    }
}

impl Services {
    /// `pdx fetch`: pulls a release, resuming an interrupted one, verifying
    /// every chunk; returns when the sender has confirmed our signed receipt.
    pub async fn fetch(
        self: &Arc<Self>,
        req: &ReleaseRequest,
        dept: &str,
        operator: &str,
        progress: &dyn Progress,
    ) -> Result<FetchOutcome> {
        let node = self.node.clone();
        let (d, r) = (dept.to_string(), req.clone());
        let partial = blocking(move || {
            for rel in release::in_releases(&node)? {
                if !rel.complete
                    && rel.from == d
                    && rel.sender == d
                    && rel.dataset == r.dataset
                    && rel.profile == r.profile
                    && rel.agreement == r.agreement
                    && rel.purpose == r.purpose
                {
                    let stored = release::in_progress(&node, &rel.release_id)?;
                    return Ok(Some((rel.release_id, stored)));
                }
            }
            Ok(None)
        })
        .await?;
        let pc = self.net.connect(self, dept).await?;
        let mut s = pc.stream().await?;
        let rx_resume = match &partial {
            Some((id, stored)) => {
                s.send(&Message::Resume(Resume {
                    release_id: id.clone(),
                    next_chunk: *stored,
                }))
                .await?;
                Some((id.clone(), *stored))
            }
            None => {
                s.send(&Message::ReleaseRequest(req.clone())).await?;
                None
            }
        };
        let mut rx = Receiver::new(Instant::now(), self.net.read_timeout(), rx_resume, None);
        let sink = Arc::new(ReleaseSink::pull(self.node.clone(), dept, operator));
        let outcome = transfer::receive(&mut s, &mut rx, Vec::new(), sink, progress).await;
        if let Err(NodeError::Refused(why)) = &outcome {
            let node = self.node.clone();
            let (op, r, d, why) = (
                operator.to_string(),
                req.clone(),
                dept.to_string(),
                why.clone(),
            );
            blocking(move || {
                let mut e = node.draft(EventKind::RefusedRequest, &op);
                e.subject.dataset = Some(r.dataset.clone());
                e.counterparty = Some(d);
                e.agreement = r.agreement.clone();
                e.purpose = Some(r.purpose.clone());
                e.detail = Some(format!(
                    "our request for profile {} was refused: {why}",
                    r.profile
                ));
                node.log(e).map(|_| ())
            })
            .await?;
        }
        s.finish().await;
        pc.close();
        outcome.map(|mut o| {
            o.resumed_from = partial.map(|(_, n)| n);
            o
        })
    }

    /// `pdx forward`: pushes the chunks of a received release that its sender
    /// addressed to `to`, keeping the original manifest and signatures.
    pub async fn forward(
        self: &Arc<Self>,
        id: &[u8],
        to: &str,
        operator: &str,
        progress: &dyn Progress,
    ) -> Result<ForwardOutcome> {
        let pc = self.net.connect(self, to).await?;
        let outcome = self.forward_on(&pc, id, to, operator, progress).await;
        pc.close();
        outcome
    }

    /// `pdx forward --all-releases`: forwards each of `ids` to `to` over one
    /// connection, [`FORWARD_STREAMS`] transfers at a time, each on its own
    /// stream (one handshake instead of one per release). A lost connection
    /// is retried with the releases not yet delivered. Outcomes come back in
    /// the order of `ids`; releases that fail for good are listed with why.
    pub async fn forward_all(
        self: &Arc<Self>,
        ids: &[Vec<u8>],
        to: &str,
        retries: u32,
        operator: &str,
        progress: Arc<dyn Progress>,
    ) -> Result<(Vec<ForwardOutcome>, Vec<(String, NodeError)>)> {
        let mut done: Vec<Option<ForwardOutcome>> = vec![None; ids.len()];
        let mut failed = Vec::new();
        let mut todo: Vec<usize> = (0..ids.len()).collect();
        let mut tried = 0;
        while !todo.is_empty() {
            let pc = match self.net.connect(self, to).await {
                Ok(pc) => pc,
                Err(e) if retryable(&e) && tried < retries => {
                    tried += 1;
                    tracing::warn!("forward to {to} interrupted ({e}); retry {tried} of {retries}");
                    tokio::time::sleep(Duration::from_millis(500 << tried.min(5))).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut running = tokio::task::JoinSet::new();
            let mut queue = todo.drain(..);
            let mut lost = Vec::new();
            loop {
                while running.len() < FORWARD_STREAMS {
                    let Some(i) = queue.next() else { break };
                    let (svc, pc, id, t, op, p) = (
                        self.clone(),
                        pc.clone(),
                        ids[i].clone(),
                        to.to_string(),
                        operator.to_string(),
                        progress.clone(),
                    );
                    running.spawn(async move {
                        (i, svc.forward_on(&pc, &id, &t, &op, p.as_ref()).await)
                    });
                }
                let Some(joined) = running.join_next().await else {
                    break;
                };
                let (i, outcome) = joined
                    .map_err(|e| NodeError::Invalid(format!("a forward task failed: {e}")))?;
                match outcome {
                    Ok(o) => done[i] = Some(o),
                    Err(e) if retryable(&e) && tried < retries => lost.push(i),
                    Err(e) => failed.push((release_hex(&ids[i]), e)),
                }
            }
            drop(queue);
            pc.close();
            if !lost.is_empty() {
                tried += 1;
                tracing::warn!(
                    "forward to {to}: {} releases interrupted; retry {tried} of {retries}",
                    lost.len()
                );
                tokio::time::sleep(Duration::from_millis(500 << tried.min(5))).await;
                lost.sort_unstable();
                todo = lost;
            }
        }
        Ok((done.into_iter().flatten().collect(), failed))
    }

    /// One forward on an established connection, on a stream of its own.
    async fn forward_on(
        self: &Arc<Self>,
        pc: &crate::net::PeerConn,
        id: &[u8],
        to: &str,
        operator: &str,
        progress: &dyn Progress,
    ) -> Result<ForwardOutcome> {
        let node = self.node.clone();
        let (rid, t) = (id.to_vec(), to.to_string());
        let (rel, manifest, body, plan) = blocking(move || {
            let rel = release::in_release(&node, &rid)?.ok_or_else(|| {
                NodeError::NotFound(format!("no received release {}", release_hex(&rid)))
            })?;
            if !rel.complete {
                return Err(NodeError::Invalid(format!(
                    "release {} is incomplete; fetch it first",
                    release_hex(&rid)
                )));
            }
            let manifest = release::in_manifest(&node, &rid)?;
            let body = release::verify_manifest(&node, &manifest)?;
            let plan: Vec<u32> = rel
                .plan
                .iter()
                .copied()
                .filter(|&i| {
                    body.chunks.get(i as usize).and_then(|c| c.recipient.as_deref())
                        == Some(t.as_str())
                })
                .collect();
            if plan.is_empty() {
                return Err(NodeError::Invalid(format!(
                    "release {} has no chunks its sender addressed to {t}; relays forward only what the sender sealed for the recipient",
                    release_hex(&rid)
                )));
            }
            Ok((rel, manifest, body, plan))
        })
        .await?;
        let chunks = u32::try_from(plan.len())
            .map_err(|_| NodeError::Invalid("more than 2^32 chunks".into()))?;
        // What the recipient holds when it answers AlreadyHave.
        let planned_records = crate::proto::transfer::checked_records(
            plan.iter()
                .filter_map(|&i| body.chunks.get(i as usize).map(|c| c.records)),
        )
        .ok_or_else(|| NodeError::Invalid("the plan's record counts overflow".into()))?;
        let planned_digest = crate::proto::msg::transfer_digest(
            self.node.suite,
            plan.iter()
                .filter_map(|&i| body.chunks.get(i as usize).map(|c| (i, &c.digest))),
        );
        let mut s = pc.stream().await?;
        s.send(&Message::Offer(Box::new(Offer {
            manifest,
            chunks: plan.clone(),
        })))
        .await?;
        let reply = s.recv().await.map_err(|e| NodeError::Peer {
            peer: to.to_string(),
            message: e.to_string(),
        })?;
        let start = match reply {
            Message::OfferAccept(a) => a.resume_from,
            Message::AlreadyHave(_) => {
                s.finish().await;
                return Ok(ForwardOutcome {
                    release: release_hex(id),
                    to: to.to_string(),
                    chunks,
                    records: planned_records,
                    already_delivered: true,
                    digest: planned_digest.to_hex(),
                    content_digest: planned_digest.to_hex(),
                });
            }
            Message::Error(e) => {
                return Err(NodeError::Refused(format!(
                    "{to} refused the forward: {}",
                    e.message
                )));
            }
            other => {
                return Err(NodeError::Peer {
                    peer: to.to_string(),
                    message: format!("expected OfferAccept, got {:?}", other.msg_type()),
                });
            }
        };
        let mut tx = Sender::new(
            Instant::now(),
            self.net.read_timeout(),
            self.node.config.transfer.window,
            self.node.suite,
            &body,
            plan,
            start,
            to,
        )
        .map_err(|f| NodeError::Invalid(f.to_string()))?;
        let source = Arc::new(ReleaseSource::relayed(
            self.node.clone(),
            body,
            to,
            &rel.from,
            operator,
        ));
        let label = format!("send {} to {to}", release_hex(id));
        let delivery =
            transfer::send(&mut s, &mut tx, source, self.pause(), progress, &label).await?;
        s.finish().await;
        Ok(ForwardOutcome {
            release: release_hex(id),
            to: to.to_string(),
            chunks,
            records: delivery.records,
            already_delivered: false,
            digest: delivery.content_digest.to_hex(),
            content_digest: delivery.content_digest.to_hex(),
        })
    }

    fn pause(&self) -> Option<Duration> {
        let rate = self.node.config.transfer.rate_limit_chunks_per_sec;
        (rate > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(rate)))
    }
}
