//! The pdx audit log: a hash chain whose links are the leaves of an RFC 9162
//! Merkle tree, signed checkpoints, peer witnessing, and the offline tools a
//! regulator runs on exported bundles.
//!
//! Invariants:
//! - The log is append-only: entries, tree nodes and the head are written in one
//!   synced RocksDB batch; nothing ever rewrites or deletes them.
//! - An entry's `prev_hash` is the previous entry's Merkle leaf hash, so the
//!   chain and the tree commit to the same bytes.
//! - The node never signs two checkpoints that contradict each other.
//! - Verification is offline and needs only the bundles and the CA certificate.
#![forbid(unsafe_code)]

pub mod bundle;
pub use pdx_crypto::canon;
pub mod checkpoint;
pub mod entry;
mod error;
pub mod merkle;
pub mod reconcile;
pub mod store;
pub mod verify;
pub mod witness;

pub use entry::{
    Actor, Discontinuity, Entry, EntryDraft, EntryView, EventKind, FieldRef, LogId, Subject,
    WitnessedSize,
};
pub use error::AuditError;
pub use store::{AuditConfig, AuditLog};
