use thiserror::Error;

/// Errors of the node library. Every message says what failed, where, and what
/// to do; none contains key material.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A secret file is readable by others.
    #[error("{path} has permissions {mode:o}; secret files must be 0600 (run: chmod 600 {path})")]
    Permissions {
        /// File.
        path: String,
        /// Its mode.
        mode: u32,
    },
    /// Configuration is missing or invalid.
    #[error("{path}: {message}")]
    Config {
        /// Config file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The node store (RocksDB) failed.
    #[error("node store: {0}")]
    Store(#[from] rocksdb::Error),
    /// Stored data did not decode.
    #[error("node store is damaged at {location}: {reason}")]
    Corrupt {
        /// Record.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// PKI: certificate creation, parsing or validation failed.
    #[error("{0}")]
    Pki(String),
    /// TLS configuration failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// A cryptographic operation failed.
    #[error(transparent)]
    Crypto(#[from] pdx_crypto::CryptoError),
    /// The audit log failed; the action was not performed.
    #[error(transparent)]
    Audit(#[from] pdx_audit::AuditError),
    /// A schema is invalid.
    #[error(transparent)]
    Schema(#[from] pdx_schemas::SchemaErrors),
    /// A release rule refused the request.
    #[error(transparent)]
    Rule(#[from] pdx_schemas::RuleViolation),
    /// A CSV import failed.
    #[error(transparent)]
    Import(#[from] pdx_schemas::import::ImportError),
    /// Something named on the command line does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is not allowed (no grant, expired, wrong peer...).
    #[error("{0}")]
    Refused(String),
    /// A peer broke the protocol or sent bad data.
    #[error("peer {peer}: {message}")]
    Peer {
        /// Peer department or address.
        peer: String,
        /// What happened.
        message: String,
    },
    /// The network failed (connect, stream, timeout).
    #[error("network: {0}")]
    Network(String),
    /// Invalid input from the user.
    #[error("{0}")]
    Invalid(String),
    /// Another process holds the node's store (a running or starting
    /// `pdx serve`, or another command).
    #[error(
        "{path}: the store is in use by another pdx process (a `pdx serve` that is starting or has no admin socket, or another command): {message}"
    )]
    StoreInUse {
        /// The store directory.
        path: String,
        /// RocksDB's message.
        message: String,
    },
    /// Too little free disk space: the operation was refused before anything
    /// was written.
    #[error(
        "{path}: not enough disk space for {what}: {free_mib} MiB free, {needed_mib} MiB needed beside the {reserve_mib} MiB reserve; nothing was written. Free space or grow the filesystem, then retry (the node keeps serving reads, and writes resume once there is room)"
    )]
    DiskFull {
        /// The store directory.
        path: String,
        /// What was refused.
        what: String,
        /// Free MiB.
        free_mib: u64,
        /// MiB the operation needs.
        needed_mib: u64,
        /// The reserve kept free.
        reserve_mib: u64,
    },
    /// The store was written by a newer pdx (a higher store format).
    #[error(
        "{path}: store format {found} was written by a newer pdx; this binary reads formats up to {supported}. Install the pdx release that wrote it (or newer), or restore a backup made by this release"
    )]
    StoreFormatNewer {
        /// The store directory.
        path: String,
        /// The format recorded in the store.
        found: u32,
        /// The newest format this binary reads.
        supported: u32,
    },
}

impl NodeError {
    /// An IO error at `path`.
    pub fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> NodeError {
        let path = path.as_ref().display().to_string();
        move |source| NodeError::Io { path, source }
    }

    /// A damaged store record.
    pub fn corrupt(location: impl Into<String>, reason: impl std::fmt::Display) -> NodeError {
        NodeError::Corrupt {
            location: location.into(),
            reason: reason.to_string(),
        }
    }
}

/// Result alias.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;
