use thiserror::Error;

/// Errors of the audit log and its tools.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The RocksDB store failed.
    #[error("audit store: {0}")]
    Store(#[from] rocksdb::Error),
    /// Stored bytes did not decode; the store is damaged or was edited.
    #[error("audit store is damaged at {location}: {reason}")]
    Corrupt {
        /// Which record.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// A cryptographic operation failed.
    #[error(transparent)]
    Crypto(#[from] pdx_crypto::CryptoError),
    /// A Merkle proof could not be built or did not verify.
    #[error(transparent)]
    Proof(#[from] crate::merkle::ProofError),
    /// The request names something the log does not have.
    #[error("{0}")]
    NotFound(String),
    /// Refused to sign a checkpoint that would contradict one already signed.
    #[error("refusing to sign checkpoint of size {size}: {reason}")]
    InconsistentCheckpoint {
        /// Size that was to be signed.
        size: u64,
        /// Why it would be inconsistent.
        reason: String,
    },
    /// A peer's checkpoint contradicts what this node holds for it (evidence kept).
    #[error("peer log {log_id} is inconsistent with its earlier checkpoint: {reason}")]
    PeerFork {
        /// The peer's log.
        log_id: String,
        /// What was found.
        reason: String,
    },
    /// A bundle file is malformed.
    #[error("audit bundle {path}: {reason}")]
    Bundle {
        /// Bundle path or name.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A bundle in a format this build does not read.
    #[error("audit bundle {path}: format {format} (this build reads format 1)")]
    UnknownFormat {
        /// Bundle path or name.
        path: String,
        /// Its format number.
        format: u32,
    },
    /// File IO while exporting or reading a bundle.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The group-commit writer failed earlier and the log is closed for writing.
    #[error("audit log writer failed: {0}")]
    Writer(String),
    /// The disk has too little free space for the write (the node's reserve
    /// would be used): nothing was written.
    #[error("{0}")]
    NoSpace(String),
    /// New checkpoints may not be signed now (a node restored from a backup
    /// until its operator acknowledges what the peers witnessed).
    #[error("no new audit checkpoint may be signed: {0}")]
    Held(String),
}
