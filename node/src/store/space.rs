//! Free disk space, checked before writes: the node refuses an operation
//! that would leave less than its reserve (`[operations] disk_reserve_mib`)
//! rather than let RocksDB run out of space mid-write, which would stop the
//! store until it is reopened. So a full disk fails closed with a clear
//! error, reads go on, and writes resume by themselves once space is freed.

use crate::error::{NodeError, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The default reserve, MiB.
pub const DEFAULT_RESERVE_MIB: u64 = 256;

/// Checks free space on the store's filesystem.
#[derive(Debug)]
pub struct DiskGuard {
    path: PathBuf,
    reserve: AtomicU64,
}

const MIB: u64 = 1 << 20;

impl DiskGuard {
    /// A guard for the filesystem holding `path`.
    pub fn new(path: &Path) -> DiskGuard {
        DiskGuard {
            path: path.to_path_buf(),
            reserve: AtomicU64::new(DEFAULT_RESERVE_MIB * MIB),
        }
    }

    /// Sets the reserve.
    pub fn set_reserve_mib(&self, mib: u64) {
        self.reserve
            .store(mib.saturating_mul(MIB), Ordering::Relaxed);
    }

    /// Bytes free for an unprivileged writer.
    pub fn free(&self) -> Result<u64> {
        let st = rustix::fs::statvfs(&self.path).map_err(|e| NodeError::Io {
            path: self.path.display().to_string(),
            source: e.into(),
        })?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Refuses `what` if writing `bytes` would leave less than the reserve.
    pub fn ensure(&self, bytes: u64, what: &str) -> Result<()> {
        let free = self.free()?;
        let reserve = self.reserve.load(Ordering::Relaxed);
        if free < bytes.saturating_add(reserve) {
            return Err(NodeError::DiskFull {
                path: self.path.display().to_string(),
                what: what.to_string(),
                free_mib: free / MIB,
                needed_mib: bytes.div_ceil(MIB),
                reserve_mib: reserve / MIB,
            });
        }
        Ok(())
    }
}

impl pdx_audit::store::SpaceCheck for DiskGuard {
    fn ensure(&self, bytes: u64) -> std::result::Result<(), String> {
        DiskGuard::ensure(self, bytes, "an audit entry").map_err(|e| e.to_string())
    }
}
