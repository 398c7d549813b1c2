//! The transfer state machines, sans IO (as quinn-proto does): messages and time
//! go in, actions come out; the driver performs storage and network IO and
//! reports completion back. The same two machines serve a pull (`pdx fetch`: the
//! server sends) and a push (`pdx forward`: the client sends).
//!
//! Guarantees the machines enforce, independent of any driver:
//! - chunks are accepted only in the expected order and only if their BLAKE3
//!   digest matches both the frame and the signed manifest;
//! - an [`Ack`] is sent only after the driver confirms durable storage;
//! - the sender never has more than `window` unacknowledged chunks in flight;
//! - a receipt is accepted only for this release, this receiver, and the exact
//!   digest and record count that were sent (a replayed receipt fails);
//! - silence longer than the read timeout fails the transfer.

use super::msg::{
    Ack, Chunk, ErrorCode, Manifest, ManifestBody, Message, Receipt, ReceiptAck, ReceiptBody,
    transfer_digest,
};
use pdx_crypto::Digest;
use std::time::{Duration, Instant};

/// Why a transfer stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Code to send to (or received from) the peer.
    pub code: ErrorCode,
    /// Explanation.
    pub message: String,
    /// Whether the peer said so (true) or we decided (false).
    pub from_peer: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = if self.from_peer {
            "peer refused"
        } else {
            "refused"
        };
        write!(f, "{who} ({:?}): {}", self.code, self.message)
    }
}

/// The sum of record counts, or `None` if it overflows `u64`.
pub fn checked_records(counts: impl IntoIterator<Item = u64>) -> Option<u64> {
    counts.into_iter().try_fold(0u64, u64::checked_add)
}

fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
        from_peer: false,
    }
}

/// Checks a manifest's signature and certificate (implemented by the node with
/// the CA and CRL); returns the verified body.
pub trait ManifestCheck: Sync {
    /// Verifies and decodes.
    fn check(&self, manifest: &Manifest) -> Result<ManifestBody, String>;
}

/// Checks a receipt's signature and certificate; returns the verified body and
/// the receiver's department from its certificate.
pub trait ReceiptCheck: Sync {
    /// Verifies and decodes.
    fn check(&self, receipt: &Receipt) -> Result<(ReceiptBody, String), String>;
}

/// What the receiving driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum RxAction {
    /// Send this message.
    Send(Message),
    /// Persist the verified manifest (once, before any chunk).
    SaveManifest {
        /// Verified body.
        body: Box<ManifestBody>,
        /// The signed manifest as received.
        manifest: Box<Manifest>,
    },
    /// Store this chunk durably, then call [`Receiver::chunk_stored`].
    StoreChunk {
        /// Position in the transfer.
        position: u32,
        /// Chunk index in the release.
        index: u32,
        /// Records bytes.
        records: Vec<u8>,
        /// Verified digest.
        digest: Digest,
    },
    /// Every chunk is stored and verified: mark the release complete, log the
    /// receive, sign a receipt over these values and call [`Receiver::receipt_ready`].
    Complete {
        /// Transfer digest.
        content_digest: Digest,
        /// Records received.
        record_count: u64,
    },
    /// The sender confirmed the receipt; the transfer is over.
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxState {
    AwaitManifest,
    Receiving,
    AwaitReceiptAck,
    Done,
}

/// Receives a release (or the offered part of one).
#[derive(Debug)]
pub struct Receiver {
    state: RxState,
    body: Option<ManifestBody>,
    /// The manifest's suite: chunk and transfer digests use its hash.
    suite: pdx_crypto::Suite,
    plan: Vec<u32>,
    plan_records: u64,
    offered: Option<Vec<u32>>,
    next_pos: usize,
    stored: usize,
    expect_release: Option<Vec<u8>>,
    read_timeout: Duration,
    last_activity: Instant,
}

impl Receiver {
    /// A receiver; `resume` names the release and how many chunks (in transfer
    /// order) are already stored. `offered` is the chunk list of a push.
    pub fn new(
        now: Instant,
        read_timeout: Duration,
        resume: Option<(Vec<u8>, u32)>,
        offered: Option<Vec<u32>>,
    ) -> Self {
        let (expect_release, stored) = match resume {
            Some((id, n)) => (Some(id), n as usize),
            None => (None, 0),
        };
        Receiver {
            state: RxState::AwaitManifest,
            body: None,
            suite: pdx_crypto::Suite::Intl,
            plan: Vec::new(),
            plan_records: 0,
            offered,
            next_pos: stored,
            stored,
            expect_release,
            read_timeout,
            last_activity: now,
        }
    }

    /// Handles a push offer's manifest immediately (the offer carries it).
    pub fn accept_manifest(
        &mut self,
        manifest: Manifest,
        check: &dyn ManifestCheck,
    ) -> Result<Vec<RxAction>, Failure> {
        self.on_manifest(manifest, check)
    }

    fn on_manifest(
        &mut self,
        manifest: Manifest,
        check: &dyn ManifestCheck,
    ) -> Result<Vec<RxAction>, Failure> {
        if self.state != RxState::AwaitManifest {
            return Err(fail(
                ErrorCode::BadRequest,
                "a second manifest in one transfer",
            ));
        }
        let body = check
            .check(&manifest)
            .map_err(|e| fail(ErrorCode::BadSignature, e))?;
        // The check verified the signature under a key of this suite.
        self.suite = manifest.signed.suite;
        if body.release_id.len() != 16 {
            return Err(fail(ErrorCode::BadRequest, "release id is not 16 bytes"));
        }
        if let Some(id) = &self.expect_release
            && *id != body.release_id
        {
            return Err(fail(
                ErrorCode::BadRequest,
                "manifest is for another release than the one resumed",
            ));
        }
        let n = u32::try_from(body.chunks.len())
            .map_err(|_| fail(ErrorCode::TooLarge, "too many chunks"))?;
        // Counts come from the peer: summed with checks, never wrapped.
        let records = checked_records(body.chunks.iter().map(|c| c.records))
            .ok_or_else(|| fail(ErrorCode::BadRequest, "manifest record counts overflow"))?;
        if records != body.record_count {
            return Err(fail(
                ErrorCode::BadRequest,
                "manifest chunk table does not add up to its record count",
            ));
        }
        let digests: Vec<(u32, &Digest)> =
            (0..n).zip(body.chunks.iter().map(|c| &c.digest)).collect();
        if transfer_digest(self.suite, digests) != body.content_digest {
            return Err(fail(
                ErrorCode::BadRequest,
                "manifest content digest does not match its chunk table",
            ));
        }
        self.plan = match self.offered.take() {
            None => (0..n).collect(),
            Some(list) => {
                if list.windows(2).any(|w| w[0] >= w[1]) || list.last().is_some_and(|&l| l >= n) {
                    return Err(fail(
                        ErrorCode::BadRequest,
                        "offered chunk list is not ascending within the release",
                    ));
                }
                list
            }
        };
        if self.stored > self.plan.len() {
            return Err(fail(
                ErrorCode::BadRequest,
                "resume point beyond the release",
            ));
        }
        self.plan_records =
            checked_records(self.plan.iter().map(|&i| body.chunks[i as usize].records))
                .ok_or_else(|| fail(ErrorCode::BadRequest, "the plan's record counts overflow"))?;
        self.body = Some(body.clone());
        self.state = RxState::Receiving;
        let mut out = vec![RxAction::SaveManifest {
            body: Box::new(body),
            manifest: Box::new(manifest),
        }];
        if self.stored == self.plan.len() {
            out.push(self.complete());
        }
        Ok(out)
    }

    fn complete(&mut self) -> RxAction {
        self.state = RxState::AwaitReceiptAck;
        let chunks = self
            .body
            .as_ref()
            .map(|b| b.chunks.as_slice())
            .unwrap_or_default();
        let content_digest = transfer_digest(
            self.suite,
            self.plan.iter().map(|&i| (i, &chunks[i as usize].digest)),
        );
        let record_count = self.plan_records;
        RxAction::Complete {
            content_digest,
            record_count,
        }
    }

    /// Handles one message from the sender.
    pub fn handle(
        &mut self,
        msg: Message,
        now: Instant,
        check: &dyn ManifestCheck,
    ) -> Result<Vec<RxAction>, Failure> {
        self.last_activity = now;
        match (self.state, msg) {
            (_, Message::Error(e)) => Err(Failure {
                code: e.code,
                message: e.message,
                from_peer: true,
            }),
            (RxState::AwaitManifest | RxState::Receiving, Message::Progress(_)) => Ok(Vec::new()),
            (RxState::AwaitManifest, Message::Manifest(m)) => self.on_manifest(*m, check),
            (RxState::Receiving, Message::Chunk(c)) => self.on_chunk(c),
            (RxState::AwaitReceiptAck, Message::ReceiptAck(_)) => {
                self.state = RxState::Done;
                Ok(vec![RxAction::Finished])
            }
            (state, other) => Err(fail(
                ErrorCode::BadRequest,
                format!("unexpected {:?} while {state:?}", other.msg_type()),
            )),
        }
    }

    fn on_chunk(&mut self, c: Chunk) -> Result<Vec<RxAction>, Failure> {
        let Some(&want) = self.plan.get(self.next_pos) else {
            return Err(fail(
                ErrorCode::BadChunk,
                format!("chunk {} after the last expected chunk", c.index),
            ));
        };
        if c.index != want {
            return Err(fail(
                ErrorCode::BadChunk,
                format!("chunk {} out of order (expected {want})", c.index),
            ));
        }
        let actual = self.suite.digest(&c.records);
        let signed = self.body.as_ref().map(|b| b.chunks[want as usize].digest);
        if actual != c.digest || Some(actual) != signed {
            return Err(fail(
                ErrorCode::BadChunk,
                format!(
                    "chunk {want} digest mismatch: the data does not match the signed manifest"
                ),
            ));
        }
        let position = self.next_pos as u32;
        self.next_pos += 1;
        Ok(vec![RxAction::StoreChunk {
            position,
            index: want,
            records: c.records,
            digest: actual,
        }])
    }

    /// The driver stored the chunk at `position` durably.
    pub fn chunk_stored(&mut self, position: u32) -> Vec<RxAction> {
        let position = position as usize;
        if position != self.stored {
            return Vec::new();
        }
        self.stored += 1;
        let mut out = vec![RxAction::Send(Message::Ack(Ack {
            stored: self.stored as u32,
        }))];
        if self.stored == self.plan.len() {
            out.push(self.complete());
        }
        out
    }

    /// The driver signed the receipt.
    pub fn receipt_ready(&mut self, receipt: Receipt) -> Vec<RxAction> {
        vec![RxAction::Send(Message::Receipt(Box::new(receipt)))]
    }

    /// Chunks stored so far (positions).
    pub fn stored(&self) -> u32 {
        self.stored as u32
    }

    /// The chunk indices expected, in order (known after the manifest).
    pub fn plan(&self) -> &[u32] {
        &self.plan
    }

    /// Chunks in the plan (known after the manifest).
    pub fn planned(&self) -> u32 {
        self.plan.len() as u32
    }

    /// When the read timeout fires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state != RxState::Done).then(|| self.last_activity + self.read_timeout)
    }

    /// Fails the transfer if the peer has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Failure> {
        self.poll_timeout().filter(|&t| now >= t).map(|_| {
            fail(
                ErrorCode::Timeout,
                format!("no data from the sender for {:?}", self.read_timeout),
            )
        })
    }
}

/// What the sending driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum TxAction {
    /// Send this message.
    Send(Message),
    /// Load chunk `index` and call [`Sender::chunk_loaded`].
    LoadChunk {
        /// Position in the transfer.
        position: u32,
        /// Chunk index.
        index: u32,
    },
    /// The receipt verified: log the send, then call [`Sender::logged`].
    LogSend {
        /// The verified receipt body.
        body: ReceiptBody,
        /// The receipt as received.
        receipt: Box<Receipt>,
    },
    /// Done.
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    Streaming,
    AwaitReceipt,
    Done,
}

/// Sends a release (or part of one).
#[derive(Debug)]
pub struct Sender {
    state: TxState,
    /// The release's suite (its manifest's).
    suite: pdx_crypto::Suite,
    release_id: Vec<u8>,
    receiver: String,
    plan: Vec<u32>,
    loading: usize,
    acked: usize,
    window: usize,
    content_digest: Digest,
    record_count: u64,
    read_timeout: Duration,
    last_activity: Instant,
}

impl Sender {
    /// A sender of `plan` (chunk indices in order, from the release's chunk
    /// table), starting at position `start` (resume). `receiver` is the
    /// department from the peer's certificate; `suite` the manifest's.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        read_timeout: Duration,
        window: u32,
        suite: pdx_crypto::Suite,
        body: &ManifestBody,
        plan: Vec<u32>,
        start: u32,
        receiver: &str,
    ) -> Result<Self, Failure> {
        if plan.iter().any(|&i| i as usize >= body.chunks.len()) {
            return Err(fail(
                ErrorCode::BadRequest,
                "plan names chunks the release does not have",
            ));
        }
        let start = start as usize;
        if start > plan.len() {
            return Err(fail(
                ErrorCode::BadRequest,
                format!("resume from {start} beyond {} chunks", plan.len()),
            ));
        }
        let content_digest = transfer_digest(
            suite,
            plan.iter().map(|&i| (i, &body.chunks[i as usize].digest)),
        );
        let record_count =
            checked_records(plan.iter().map(|&i| body.chunks[i as usize].records))
                .ok_or_else(|| fail(ErrorCode::BadRequest, "the plan's record counts overflow"))?;
        Ok(Sender {
            state: TxState::Streaming,
            suite,
            release_id: body.release_id.clone(),
            receiver: receiver.to_string(),
            plan,
            loading: start,
            acked: start,
            window: window.max(1) as usize,
            content_digest,
            record_count,
            read_timeout,
            last_activity: now,
        })
    }

    /// Actions to take now (chunks to load while the window allows).
    pub fn poll(&mut self) -> Vec<TxAction> {
        let mut out = Vec::new();
        if self.state != TxState::Streaming {
            return out;
        }
        while self.loading < self.plan.len() && self.loading - self.acked < self.window {
            out.push(TxAction::LoadChunk {
                position: self.loading as u32,
                index: self.plan[self.loading],
            });
            self.loading += 1;
        }
        if self.acked == self.plan.len() {
            self.state = TxState::AwaitReceipt;
        }
        out
    }

    /// The driver loaded a chunk.
    pub fn chunk_loaded(&mut self, index: u32, records: Vec<u8>) -> TxAction {
        let digest = self.suite.digest(&records);
        TxAction::Send(Message::Chunk(Chunk {
            index,
            records,
            digest,
        }))
    }

    /// Handles one message from the receiver.
    pub fn handle(
        &mut self,
        msg: Message,
        now: Instant,
        check: &dyn ReceiptCheck,
    ) -> Result<Vec<TxAction>, Failure> {
        self.last_activity = now;
        match (self.state, msg) {
            (_, Message::Error(e)) => Err(Failure {
                code: e.code,
                message: e.message,
                from_peer: true,
            }),
            (TxState::Streaming, Message::Ack(a)) => {
                let n = a.stored as usize;
                if n < self.acked || n > self.loading {
                    return Err(fail(
                        ErrorCode::BadRequest,
                        format!(
                            "acknowledgement of {n} chunks, but {} were sent and {} acknowledged",
                            self.loading, self.acked
                        ),
                    ));
                }
                self.acked = n;
                Ok(self.poll())
            }
            (TxState::AwaitReceipt | TxState::Streaming, Message::Receipt(r)) => {
                if self.acked != self.plan.len() {
                    return Err(fail(
                        ErrorCode::BadRequest,
                        "receipt before every chunk was acknowledged",
                    ));
                }
                let (body, cert_dept) = check
                    .check(&r)
                    .map_err(|e| fail(ErrorCode::BadSignature, e))?;
                if body.release_id != self.release_id
                    || body.receiver != self.receiver
                    || cert_dept != self.receiver
                    || body.content_digest != self.content_digest
                    || body.record_count != self.record_count
                {
                    return Err(fail(
                        ErrorCode::BadSignature,
                        "receipt does not match this transfer (release, receiver, digest or record count): replayed or forged",
                    ));
                }
                self.state = TxState::Done;
                Ok(vec![TxAction::LogSend { body, receipt: r }])
            }
            (state, other) => Err(fail(
                ErrorCode::BadRequest,
                format!("unexpected {:?} while {state:?}", other.msg_type()),
            )),
        }
    }

    /// The send was logged.
    pub fn logged(&mut self, seq: u64) -> Vec<TxAction> {
        vec![
            TxAction::Send(Message::ReceiptAck(ReceiptAck { logged_seq: seq })),
            TxAction::Finished,
        ]
    }

    /// Transfer digest of what this sender sends.
    pub fn content_digest(&self) -> Digest {
        self.content_digest
    }

    /// Records this sender sends.
    pub fn record_count(&self) -> u64 {
        self.record_count
    }

    /// Chunks acknowledged.
    pub fn acked(&self) -> u32 {
        self.acked as u32
    }

    /// When the read timeout fires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state != TxState::Done).then(|| self.last_activity + self.read_timeout)
    }

    /// Fails the transfer if the peer has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Failure> {
        self.poll_timeout().filter(|&t| now >= t).map(|_| {
            fail(
                ErrorCode::Timeout,
                format!(
                    "no acknowledgement from the receiver for {:?}",
                    self.read_timeout
                ),
            )
        })
    }
}
