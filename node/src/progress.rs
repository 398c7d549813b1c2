//! Progress reporting, decoupled from its display: the CLI draws bars on a
//! terminal, the admin socket forwards events to the CLI that asked.

/// Receives progress of a long operation.
pub trait Progress: Send + Sync {
    /// A new stage; `total` in `unit`s if known.
    fn stage(&self, label: &str, total: Option<u64>, unit: Unit);
    /// Absolute position in the current stage.
    fn set(&self, done: u64);
    /// The current stage ended.
    fn done(&self);
}

/// What a stage counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Unit {
    /// Bytes.
    Bytes,
    /// Records.
    Records,
    /// Chunks.
    Chunks,
}

/// Discards progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _: &str, _: Option<u64>, _: Unit) {}
    fn set(&self, _: u64) {}
    fn done(&self) {}
}
