//! Protocol messages (specified byte by byte in `docs/protocol.md`). Each
//! payload is a CBOR map with text keys, decoded with a recursion limit and
//! no trailing bytes; every size that matters is capped.

pub use super::frame::MsgType;
use super::frame::{FrameError, encode_frame};
use pdx_audit::checkpoint::{
    SignedCheckpoint, SignedCosignature, SignedEndorsement, WitnessedCheckpoint,
};
use pdx_crypto::Digest;
use pdx_crypto::keydoc::KeyDocument;
use pdx_crypto::wire::{Signed, from_cbor, to_cbor};
use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

/// First message of a connection (client -> server), on the control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol versions the sender speaks.
    pub versions: Vec<u32>,
    /// Sender's department (must match its certificate).
    pub dept: String,
    /// Software identification.
    pub software: String,
    /// The sender's latest signed audit checkpoint.
    pub checkpoint: SignedCheckpoint,
    /// Endorsement of the audit key that signed it.
    pub endorsement: SignedEndorsement,
    /// The sender's current encryption key documents.
    pub key_documents: Vec<KeyDocument>,
    /// The sender's clock when it sent this (ms since the Unix epoch), for
    /// the peer's clock-skew check; absent from senders before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// The sender was restored from a backup and asks only for the latest
    /// checkpoint of its log the server holds (HelloReply `held`); nothing
    /// is witnessed and the connection ends after the reply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovering: bool,
    /// The sender's log has an acknowledged discontinuity (a restore that
    /// lost entries peers had witnessed): its `discontinuity` entry with an
    /// inclusion proof under `checkpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discontinuity: Option<DiscontinuityProof>,
}

/// A `discontinuity` entry of the sender's log and its inclusion proof in
/// the tree of the checkpoint the hello carries (audit-format.md §11).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscontinuityProof {
    /// The entry's sequence number.
    pub seq: u64,
    /// The entry, canonical bytes.
    pub entry: serde_bytes::ByteBuf,
    /// RFC 9162 inclusion proof of its leaf (at most 64 hashes).
    pub proof: Vec<serde_bytes::ByteBuf>,
}

/// Server's answer to [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// Chosen version.
    pub version: u32,
    /// Server's department.
    pub dept: String,
    /// Software identification.
    pub software: String,
    /// The server's latest checkpoint.
    pub checkpoint: SignedCheckpoint,
    /// Endorsement of its key.
    pub endorsement: SignedEndorsement,
    /// Its key documents.
    pub key_documents: Vec<KeyDocument>,
    /// Consistency proof the server needs from the client's log (from, to).
    pub proof_request: Option<(u64, u64)>,
    /// The server's clock when it sent this, as in [`Hello`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// To a recovering client: the latest checkpoint of its log this server
    /// witnessed, with the server's cosignature (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Box<WitnessedCheckpoint>>,
    /// The server's acknowledged discontinuity, as in [`Hello`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discontinuity: Option<DiscontinuityProof>,
}

/// Client: its proof (if asked) and its own proof request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness1 {
    /// Consistency proof for the server's request.
    pub proof: Option<Vec<serde_bytes::ByteBuf>>,
    /// Consistency proof the client needs from the server's log.
    pub proof_request: Option<(u64, u64)>,
}

/// Server: its proof (if asked) and its cosignature of the client's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness2 {
    /// Consistency proof for the client's request.
    pub proof: Option<Vec<serde_bytes::ByteBuf>>,
    /// Cosignature, or why the server refused to cosign.
    pub cosignature: Result<SignedCosignature, String>,
}

/// Client: its cosignature of the server's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness3 {
    /// Cosignature, or why the client refused to cosign.
    pub cosignature: Result<SignedCosignature, String>,
}

/// Ask for the datasets and profiles the caller is granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogRequest {}

/// One granted dataset/profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Dataset id.
    pub dataset: String,
    /// Title.
    pub title: String,
    /// Profile.
    pub profile: String,
    /// Purpose of the grant.
    pub purpose: String,
    /// Agreement id.
    pub agreement: Option<String>,
    /// Grant expiry (ms), if any.
    pub expires_ms: Option<u64>,
    /// Records in the dataset.
    pub records: u64,
    /// Data grade.
    pub grade: String,
    /// Sharing class.
    pub sharing: String,
}

/// Catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogResponse {
    /// Entries.
    pub entries: Vec<CatalogEntry>,
}

/// Ask for the key documents a node holds (its own and others', as a directory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDirRequest {
    /// Only these departments (empty = all).
    pub depts: Vec<String>,
}

/// Key documents; each is checked by the receiver against the CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDirResponse {
    /// Documents.
    pub documents: Vec<KeyDocument>,
}

/// Ask for a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// Dataset id.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Agreement id.
    pub agreement: Option<String>,
    /// Purpose.
    pub purpose: String,
    /// Only the rows added since the release named by `after` (or since
    /// row 0 when `after` is absent): `pdx fetch --incremental`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// The last release of the chain the requester holds (16 bytes).
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<u8>>,
}

/// Continue a release from a chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Release id.
    #[serde(with = "serde_bytes")]
    pub release_id: Vec<u8>,
    /// First chunk index not yet durably stored.
    pub next_chunk: u32,
}

/// The sender is still working (keeps read timeouts from firing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Stage.
    pub stage: String,
    /// Done so far.
    pub done: u64,
    /// Total, if known.
    pub total: u64,
}

/// A field of released records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestField {
    /// Name.
    pub name: String,
    /// Treatment label.
    pub treatment: String,
    /// `pi/identifier` classification.
    pub classification: String,
    /// Whether values are sealed.
    pub sealed: bool,
}

impl ManifestField {
    /// The field as audit entries name it: `classification/treatment`.
    pub fn field_ref(&self) -> pdx_audit::FieldRef {
        pdx_audit::FieldRef {
            name: self.name.clone(),
            class: format!("{}/{}", self.classification, self.treatment),
        }
    }
}

/// One chunk of a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// BLAKE3 of the chunk's records bytes.
    pub digest: Digest,
    /// Records in it.
    pub records: u64,
    /// The recipient its sealed fields are for (relays forward per recipient).
    pub recipient: Option<String>,
}

/// The signed description of a release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestBody {
    /// Format version (1).
    pub version: u32,
    /// Release id (16 bytes).
    #[serde(with = "serde_bytes")]
    pub release_id: Vec<u8>,
    /// Releasing department.
    pub sender: String,
    /// Department the release was made for (the first hop).
    pub recipient: String,
    /// Dataset id.
    pub dataset: String,
    /// Digest of the source dataset version.
    pub dataset_digest: Digest,
    /// Schema id.
    pub schema_id: String,
    /// Schema digest.
    pub schema_digest: Digest,
    /// Profile.
    pub profile: String,
    /// Agreement (`None`: the grant names none).
    pub agreement: Option<String>,
    /// Purpose.
    pub purpose: String,
    /// Legal basis.
    pub legal_basis: Option<String>,
    /// Creation time (ms).
    pub created_ms: u64,
    /// Released fields, in record order.
    pub fields: Vec<ManifestField>,
    /// Records in the release.
    pub record_count: u64,
    /// Chunks.
    pub chunks: Vec<ChunkInfo>,
    /// Transfer digest over all chunks.
    pub content_digest: Digest,
    /// Data keys wrapped per recipient; `Sealed` values index this list.
    pub recipients: Vec<pdx_crypto::envelope::WrappedKey>,
    /// The de-identification report.
    pub report: pdx_schemas::report::ReleaseReport,
    /// The dataset rows the release covers (absent in releases of earlier
    /// versions): rows `from..to` in import order, and the release that
    /// covered the rows before `from` (incremental releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowRange>,
}

/// The rows of a dataset a release covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRange {
    /// First row (0 for a full release or the first of a chain).
    pub from: u64,
    /// The watermark: rows the dataset had when the release was made.
    pub to: u64,
    /// The release (16 bytes) that ended at `from`; absent when `from` is 0.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub previous: Option<Vec<u8>>,
}

/// A signed manifest with the signer's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Signed [`ManifestBody`] (domain `manifest`).
    pub signed: Signed,
    /// Sender's certificate (DER).
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
}

/// One chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Index in the release.
    pub index: u32,
    /// Records (CBOR array, see `docs/protocol.md`).
    #[serde(with = "serde_bytes")]
    pub records: Vec<u8>,
    /// BLAKE3 of `records`.
    pub digest: Digest,
}

/// Acknowledges durable storage of every chunk before `next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Count of chunks (in transfer order) durably stored.
    pub stored: u32,
}

/// What the receiver signs once everything verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// Release id.
    #[serde(with = "serde_bytes")]
    pub release_id: Vec<u8>,
    /// Department that received.
    pub receiver: String,
    /// Department it was received from.
    pub from: String,
    /// Transfer digest over the chunks received.
    pub content_digest: Digest,
    /// Records received.
    pub record_count: u64,
    /// When (ms).
    pub time_ms: u64,
}

/// A signed receipt with the receiver's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Signed [`ReceiptBody`] (domain `receipt`).
    pub signed: Signed,
    /// Receiver's certificate (DER).
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
}

/// Receipt accepted and logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptAck {
    /// Audit sequence number of the sender's `send` entry.
    pub logged_seq: u64,
}

/// The client already holds this release completely.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlreadyHave {
    /// Release id.
    #[serde(with = "serde_bytes")]
    pub release_id: Vec<u8>,
}

/// A relay pushes (part of) a release it received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The original signed manifest.
    pub manifest: Manifest,
    /// Chunk indices that will follow, ascending.
    pub chunks: Vec<u32>,
}

/// The receiver accepts an offer; chunks before position `resume_from` of the
/// offered list are already stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferAccept {
    /// Position in the offered list to start from.
    pub resume_from: u32,
}

/// A signed document pushed to a peer (homomorphic contributions, aggregates,
/// queries, settlement confirmations).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    /// Document kind.
    pub kind: String,
    /// The document (CBOR).
    #[serde(with = "serde_bytes")]
    pub document: Vec<u8>,
}

/// Submission accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// Digest of what was accepted.
    pub digest: Digest,
    /// Human-readable note.
    pub note: String,
}

/// `Call` (type 24): a signed request and its signer's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The consumer's signed `CallRequestBody` (`proto::call`).
    pub request: Signed,
    /// The consumer's certificate (DER).
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
    /// The consumer's active encryption key document: the provider seals the
    /// response for it (it may never have met the consumer: hubs).
    pub key_document: Option<pdx_crypto::keydoc::KeyDocument>,
}

/// `CallResponse` (type 25).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResponse {
    /// The provider's signed `CallResponseBody` (`proto::call`).
    pub response: Signed,
    /// The provider's certificate (DER).
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
    /// When the idempotency key was used before: the consumer's own earlier
    /// signed request the stored response answers (the response is bound to
    /// it, not to the retry).
    pub replay_of: Option<Signed>,
}

/// Typed error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Malformed or unexpected message.
    BadRequest,
    /// No common protocol version.
    UnsupportedVersion,
    /// No grant covers the request.
    NotGranted,
    /// The grant expired.
    GrantExpired,
    /// The grant was revoked.
    GrantRevoked,
    /// A classification rule refused the release.
    RuleRefused,
    /// The privacy model cannot be met within the suppression budget.
    PrivacyModel,
    /// Unknown dataset, profile or release.
    NotFound,
    /// A signature did not verify.
    BadSignature,
    /// A chunk failed its digest or came out of order.
    BadChunk,
    /// The peer was too slow.
    Timeout,
    /// Something was too large.
    TooLarge,
    /// A second audit log for a department (split view), or a certificate
    /// binding none.
    Untrusted,
    /// The receiver failed internally.
    Internal,
    /// Too many calls from this department: slow down and retry.
    RateLimited,
    /// A hub could not reach the provider it was asked to relay to.
    Unreachable,
}

/// An error reply; ends the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

/// Any message.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum Message {
    Hello(Box<Hello>),
    HelloReply(Box<HelloReply>),
    Witness1(Witness1),
    Witness2(Box<Witness2>),
    Witness3(Box<Witness3>),
    CatalogRequest(CatalogRequest),
    CatalogResponse(CatalogResponse),
    KeyDirRequest(KeyDirRequest),
    KeyDirResponse(KeyDirResponse),
    ReleaseRequest(ReleaseRequest),
    Resume(Resume),
    Progress(Progress),
    Manifest(Box<Manifest>),
    Chunk(Chunk),
    Ack(Ack),
    Receipt(Box<Receipt>),
    ReceiptAck(ReceiptAck),
    AlreadyHave(AlreadyHave),
    Offer(Box<Offer>),
    OfferAccept(OfferAccept),
    Submit(Submit),
    Accepted(Accepted),
    Error(ErrorMsg),
    Call(Box<Call>),
    CallResponse(Box<CallResponse>),
}

/// Why a message could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// Framing failed.
    Frame(FrameError),
    /// The payload is not valid CBOR for its type.
    Payload {
        /// Type.
        msg_type: MsgType,
        /// Decoder message.
        reason: String,
    },
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageError::Frame(e) => e.fmt(f),
            MessageError::Payload { msg_type, reason } => {
                write!(f, "malformed {msg_type:?} message: {reason}")
            }
        }
    }
}

impl std::error::Error for MessageError {}

impl Message {
    /// The type byte.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Message::Hello(_) => MsgType::Hello,
            Message::HelloReply(_) => MsgType::HelloReply,
            Message::Witness1(_) => MsgType::Witness1,
            Message::Witness2(_) => MsgType::Witness2,
            Message::Witness3(_) => MsgType::Witness3,
            Message::CatalogRequest(_) => MsgType::CatalogRequest,
            Message::CatalogResponse(_) => MsgType::CatalogResponse,
            Message::KeyDirRequest(_) => MsgType::KeyDirRequest,
            Message::KeyDirResponse(_) => MsgType::KeyDirResponse,
            Message::ReleaseRequest(_) => MsgType::ReleaseRequest,
            Message::Resume(_) => MsgType::Resume,
            Message::Progress(_) => MsgType::Progress,
            Message::Manifest(_) => MsgType::Manifest,
            Message::Chunk(_) => MsgType::Chunk,
            Message::Ack(_) => MsgType::Ack,
            Message::Receipt(_) => MsgType::Receipt,
            Message::ReceiptAck(_) => MsgType::ReceiptAck,
            Message::AlreadyHave(_) => MsgType::AlreadyHave,
            Message::Offer(_) => MsgType::Offer,
            Message::OfferAccept(_) => MsgType::OfferAccept,
            Message::Submit(_) => MsgType::Submit,
            Message::Accepted(_) => MsgType::Accepted,
            Message::Error(_) => MsgType::Error,
            Message::Call(_) => MsgType::Call,
            Message::CallResponse(_) => MsgType::CallResponse,
        }
    }

    /// Encodes as a complete frame.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        let t = self.msg_type();
        let payload = match self {
            Message::Hello(m) => to_cbor(m),
            Message::HelloReply(m) => to_cbor(m),
            Message::Witness1(m) => to_cbor(m),
            Message::Witness2(m) => to_cbor(m),
            Message::Witness3(m) => to_cbor(m),
            Message::CatalogRequest(m) => to_cbor(m),
            Message::CatalogResponse(m) => to_cbor(m),
            Message::KeyDirRequest(m) => to_cbor(m),
            Message::KeyDirResponse(m) => to_cbor(m),
            Message::ReleaseRequest(m) => to_cbor(m),
            Message::Resume(m) => to_cbor(m),
            Message::Progress(m) => to_cbor(m),
            Message::Manifest(m) => to_cbor(m),
            Message::Chunk(m) => to_cbor(m),
            Message::Ack(m) => to_cbor(m),
            Message::Receipt(m) => to_cbor(m),
            Message::ReceiptAck(m) => to_cbor(m),
            Message::AlreadyHave(m) => to_cbor(m),
            Message::Offer(m) => to_cbor(m),
            Message::OfferAccept(m) => to_cbor(m),
            Message::Submit(m) => to_cbor(m),
            Message::Accepted(m) => to_cbor(m),
            Message::Error(m) => to_cbor(m),
            Message::Call(m) => to_cbor(m),
            Message::CallResponse(m) => to_cbor(m),
        }
        .map_err(|e| MessageError::Payload {
            msg_type: t,
            reason: e.to_string(),
        })?;
        encode_frame(t, &payload).map_err(MessageError::Frame)
    }

    /// Decodes the payload of a frame.
    pub fn decode(msg_type: MsgType, payload: &[u8]) -> Result<Message, MessageError> {
        fn d<T: serde::de::DeserializeOwned>(t: MsgType, p: &[u8]) -> Result<T, MessageError> {
            from_cbor(p, "message").map_err(|e| MessageError::Payload {
                msg_type: t,
                reason: e.to_string(),
            })
        }
        let t = msg_type;
        Ok(match t {
            MsgType::Hello => Message::Hello(Box::new(d(t, payload)?)),
            MsgType::HelloReply => Message::HelloReply(Box::new(d(t, payload)?)),
            MsgType::Witness1 => Message::Witness1(d(t, payload)?),
            MsgType::Witness2 => Message::Witness2(Box::new(d(t, payload)?)),
            MsgType::Witness3 => Message::Witness3(Box::new(d(t, payload)?)),
            MsgType::CatalogRequest => Message::CatalogRequest(d(t, payload)?),
            MsgType::CatalogResponse => Message::CatalogResponse(d(t, payload)?),
            MsgType::KeyDirRequest => Message::KeyDirRequest(d(t, payload)?),
            MsgType::KeyDirResponse => Message::KeyDirResponse(d(t, payload)?),
            MsgType::ReleaseRequest => Message::ReleaseRequest(d(t, payload)?),
            MsgType::Resume => Message::Resume(d(t, payload)?),
            MsgType::Progress => Message::Progress(d(t, payload)?),
            MsgType::Manifest => Message::Manifest(Box::new(d(t, payload)?)),
            MsgType::Chunk => Message::Chunk(d(t, payload)?),
            MsgType::Ack => Message::Ack(d(t, payload)?),
            MsgType::Receipt => Message::Receipt(Box::new(d(t, payload)?)),
            MsgType::ReceiptAck => Message::ReceiptAck(d(t, payload)?),
            MsgType::AlreadyHave => Message::AlreadyHave(d(t, payload)?),
            MsgType::Offer => Message::Offer(Box::new(d(t, payload)?)),
            MsgType::OfferAccept => Message::OfferAccept(d(t, payload)?),
            MsgType::Submit => Message::Submit(d(t, payload)?),
            MsgType::Accepted => Message::Accepted(d(t, payload)?),
            MsgType::Error => Message::Error(d(t, payload)?),
            MsgType::Call => Message::Call(Box::new(d(t, payload)?)),
            MsgType::CallResponse => Message::CallResponse(Box::new(d(t, payload)?)),
        })
    }

    /// An error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error(ErrorMsg {
            code,
            message: message.into(),
        })
    }
}

/// The transfer digest over `(index, chunk digest)` pairs, in transfer order:
/// what receipts, `send` and `receive` entries and reconciliation compare
/// (the suite's domain hash `"pdx/v1 transfer digest"`).
pub fn transfer_digest<'a>(
    suite: pdx_crypto::Suite,
    chunks: impl IntoIterator<Item = (u32, &'a Digest)>,
) -> Digest {
    let mut h = suite.hasher("pdx/v1 transfer digest");
    for (i, d) in chunks {
        h.update(&i.to_be_bytes());
        h.update(d.as_bytes());
    }
    h.finalize()
}
