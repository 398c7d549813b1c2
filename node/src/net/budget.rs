//! Memory for frames being received: a node-wide budget and one per
//! connection. A stream reserves the bytes it buffers of an incomplete frame
//! before taking them from QUIC; when a budget is spent the stream stops
//! reading (QUIC flow control then stops the peer) until other streams
//! complete or time out. A peer that declares large frames and stalls thus
//! holds at most its connection's budget, and all peers together at most the
//! node's, whatever lengths they declare.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Bytes of incomplete frames all connections of a node may buffer.
pub const NODE_FRAME_BUDGET: usize = 256 << 20;
/// Bytes of incomplete frames one connection may buffer (more than the
/// largest frame, a 32 MiB manifest or offer, so one always fits).
pub const CONNECTION_FRAME_BUDGET: usize = 40 << 20;

/// A pool of bytes.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    freed: Notify,
}

impl Budget {
    /// A pool of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        if n > 0 {
            let _ = self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    Some(u.saturating_sub(n))
                });
            self.freed.notify_waiters();
        }
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// What one stream holds of its connection's and the node's budgets.
#[derive(Debug)]
pub struct Lease {
    pools: Vec<Arc<Budget>>,
    held: usize,
}

impl Lease {
    /// A lease on `pools` (the connection's first, then the node's).
    pub fn new(pools: Vec<Arc<Budget>>) -> Lease {
        Lease { pools, held: 0 }
    }

    /// Holds `n` more bytes, waiting (until `deadline`) while a pool is spent.
    /// `false` when the deadline passed first.
    pub async fn grow(&mut self, n: usize, deadline: tokio::time::Instant) -> bool {
        loop {
            let mut taken = 0;
            while taken < self.pools.len() && self.pools[taken].try_take(n) {
                taken += 1;
            }
            if taken == self.pools.len() {
                self.held += n;
                return true;
            }
            for p in &self.pools[..taken] {
                p.give(n);
            }
            let pool = self.pools[taken].clone();
            let freed = pool.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            // A release between the failed take and `enable` is seen here.
            if pool.used().saturating_add(n) <= pool.limit {
                continue;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return false;
            }
        }
    }

    /// Keeps only `n` bytes (the rest of the buffer was handed out as frames).
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.held {
            let freed = self.held - n;
            for p in &self.pools {
                p.give(freed);
            }
            self.held = n;
        }
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}
