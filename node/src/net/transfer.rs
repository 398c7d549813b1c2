//! Drives the transfer machines ([`crate::proto::transfer`]) over a stream:
//! frames in and out, the machines' read timeouts, and their storage actions
//! through a [`ChunkSource`] or [`ChunkSink`] on the blocking pool.

use super::{Framed, RecvError};
use crate::error::{NodeError, Result};
use crate::progress::{Progress, Unit};
use crate::proto::msg::{
    AlreadyHave, ErrorCode, Manifest, ManifestBody, Message, Receipt, ReceiptBody,
};
use crate::proto::transfer::{
    Failure, ManifestCheck, ReceiptCheck, Receiver, RxAction, Sender, TxAction,
};
use pdx_crypto::Digest;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a sender's chunks come from and where its `send` is recorded.
/// Methods may block; the driver calls them on the blocking pool.
pub trait ChunkSource: ReceiptCheck + Send + Sync + 'static {
    /// What logging the send yields.
    type Logged: Send + 'static;
    /// The plaintext records of chunk `index`.
    fn load(&self, index: u32) -> Result<Vec<u8>>;
    /// The receipt verified: record the send (audit entry); returns the
    /// entry's sequence number and whatever the caller wants back.
    fn log_send(&self, body: &ReceiptBody, receipt: &Receipt) -> Result<(u64, Self::Logged)>;
    /// The transfer failed: audit it.
    fn aborted(&self, failure: &Failure);
}

/// How a sink starts.
#[derive(Debug)]
pub enum SinkStart<D> {
    /// Receive the plan (from the chunks already stored, on a resume).
    Receive,
    /// This node holds the release complete already: answer AlreadyHave.
    AlreadyHave(D),
}

/// Where a receiver stores what it verified, and how it completes.
/// Methods may block; the driver calls them on the blocking pool.
pub trait ChunkSink: ManifestCheck + Send + Sync + 'static {
    /// What the transfer yields.
    type Done: Send + 'static;
    /// The verified manifest: record the release with `stored` chunks of its
    /// plan already stored (a resume), or say it is held complete.
    fn manifest(
        &self,
        body: &ManifestBody,
        manifest: &Manifest,
        plan: &[u32],
        stored: u32,
    ) -> Result<SinkStart<Self::Done>>;
    /// Store chunk `index` (at `position` of the plan) durably.
    fn store(&self, position: u32, index: u32, records: &[u8]) -> Result<()>;
    /// Every chunk is stored: mark complete, log the receive, sign a receipt.
    fn complete(&self, content_digest: Digest, record_count: u64) -> Result<Receipt>;
    /// The sender confirmed the receipt.
    fn finished(&self) -> Result<Self::Done>;
    /// The transfer failed: audit it.
    fn aborted(&self, failure: &Failure);
}

async fn pool<S: ?Sized + Send + Sync + 'static, T: Send + 'static>(
    s: &Arc<S>,
    f: impl FnOnce(&S) -> T + Send + 'static,
) -> Result<T> {
    super::on_pool(s, f).await
}

/// How a transfer ended badly.
fn failed(peer: &str, f: &Failure) -> NodeError {
    if f.from_peer {
        NodeError::Refused(format!("{peer}: {}", f.message))
    } else {
        NodeError::Peer {
            peer: peer.to_string(),
            message: f.to_string(),
        }
    }
}

fn recv_failure(e: &RecvError) -> Failure {
    Failure {
        code: e.code().unwrap_or(ErrorCode::BadRequest),
        message: e.to_string(),
        from_peer: false,
    }
}

/// Receives the next message before the machine's deadline; a missed
/// deadline becomes the machine's own timeout failure.
async fn next_message(
    s: &mut Framed,
    deadline: Option<Instant>,
    on_timeout: impl FnOnce(Instant) -> Option<Failure>,
) -> std::result::Result<Message, Failure> {
    let deadline = deadline
        .map(tokio::time::Instant::from_std)
        .unwrap_or_else(|| tokio::time::Instant::now() + s.timeout);
    match s.recv_until(deadline).await {
        Ok(m) => Ok(m),
        Err(RecvError::Timeout(d)) => Err(on_timeout(Instant::now()).unwrap_or(Failure {
            code: ErrorCode::Timeout,
            message: format!("no data from the peer for {d:?}"),
            from_peer: false,
        })),
        Err(e) => Err(recv_failure(&e)),
    }
}

/// Ends a failed transfer: audits our own failures and tells the peer.
async fn fail_transfer(
    s: &mut Framed,
    failure: Failure,
    audit: impl FnOnce(&Failure) + Send + 'static,
) -> NodeError {
    let err = failed(&s.peer.clone(), &failure);
    if !failure.from_peer {
        let f = failure.clone();
        let _ = tokio::task::spawn_blocking(move || audit(&f)).await;
        s.refuse(failure.code, &failure.message).await;
    }
    err
}

/// Sends the chunks `tx` plans, in its window, until the receipt is logged.
/// `pause` spaces chunks (a configured rate limit).
pub async fn send<S: ChunkSource>(
    s: &mut Framed,
    tx: &mut Sender,
    source: Arc<S>,
    pause: Option<Duration>,
    progress: &dyn Progress,
    label: &str,
) -> Result<S::Logged> {
    progress.stage(label, None, Unit::Chunks);
    let mut actions: Vec<TxAction> = tx.poll();
    loop {
        for a in actions.drain(..) {
            match a {
                TxAction::LoadChunk { index, .. } => {
                    let bytes = pool(&source, move |src| src.load(index)).await??;
                    if let TxAction::Send(m) = tx.chunk_loaded(index, bytes) {
                        s.send(&m).await?;
                    }
                    if let Some(p) = pause {
                        tokio::time::sleep(p).await;
                    }
                }
                TxAction::Send(m) => s.send(&m).await?,
                TxAction::LogSend { body, receipt } => {
                    let (seq, logged) =
                        pool(&source, move |src| src.log_send(&body, &receipt)).await??;
                    for a in tx.logged(seq) {
                        if let TxAction::Send(m) = a {
                            s.send(&m).await?;
                        }
                    }
                    progress.done();
                    return Ok(logged);
                }
                TxAction::Finished => {}
            }
        }
        progress.set(u64::from(tx.acked()));
        let msg = match next_message(s, tx.poll_timeout(), |now| tx.handle_timeout(now)).await {
            Ok(m) => m,
            Err(f) => {
                let src = source.clone();
                return Err(fail_transfer(s, f, move |f| src.aborted(f)).await);
            }
        };
        let check = source.clone();
        actions = match tx.handle(msg, Instant::now(), check.as_ref()) {
            Ok(a) => a,
            Err(f) => {
                let src = source.clone();
                return Err(fail_transfer(s, f, move |f| src.aborted(f)).await);
            }
        };
    }
}

/// Receives what `rx` expects, storing each verified chunk before its Ack,
/// until the sender confirms the signed receipt. `first` are actions already
/// decided (a push offer's manifest).
pub async fn receive<K: ChunkSink>(
    s: &mut Framed,
    rx: &mut Receiver,
    first: Vec<RxAction>,
    sink: Arc<K>,
    progress: &dyn Progress,
) -> Result<K::Done> {
    let mut actions = first;
    loop {
        let mut next = Vec::new();
        for a in actions.drain(..) {
            match a {
                RxAction::Send(m) => s.send(&m).await?,
                RxAction::SaveManifest { body, manifest } => {
                    let plan = rx.plan().to_vec();
                    let stored = rx.stored();
                    let id = body.release_id.clone();
                    let total = plan.len() as u64;
                    match pool(&sink, move |k| k.manifest(&body, &manifest, &plan, stored))
                        .await??
                    {
                        SinkStart::AlreadyHave(done) => {
                            s.send(&Message::AlreadyHave(AlreadyHave { release_id: id }))
                                .await?;
                            return Ok(done);
                        }
                        SinkStart::Receive => {}
                    }
                    progress.stage(
                        &format!("receive {} from {}", hex::encode(&id), s.peer),
                        Some(total),
                        Unit::Chunks,
                    );
                    progress.set(u64::from(rx.stored()));
                }
                RxAction::StoreChunk {
                    position,
                    index,
                    records,
                    ..
                } => {
                    pool(&sink, move |k| k.store(position, index, &records)).await??;
                    next.extend(rx.chunk_stored(position));
                    progress.set(u64::from(rx.stored()));
                }
                RxAction::Complete {
                    content_digest,
                    record_count,
                } => {
                    progress.done();
                    let receipt =
                        pool(&sink, move |k| k.complete(content_digest, record_count)).await??;
                    next.extend(rx.receipt_ready(receipt));
                }
                RxAction::Finished => {
                    return pool(&sink, |k| k.finished()).await?;
                }
            }
        }
        if !next.is_empty() {
            actions = next;
            continue;
        }
        let msg = match next_message(s, rx.poll_timeout(), |now| rx.handle_timeout(now)).await {
            Ok(m) => m,
            Err(f) => {
                let k = sink.clone();
                return Err(fail_transfer(s, f, move |f| k.aborted(f)).await);
            }
        };
        let check = sink.clone();
        actions = match rx.handle(msg, Instant::now(), check.as_ref()) {
            Ok(a) => a,
            Err(f) => {
                let k = sink.clone();
                return Err(fail_transfer(s, f, move |f| k.aborted(f)).await);
            }
        };
    }
}
