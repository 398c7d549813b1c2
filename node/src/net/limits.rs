//! Caps on concurrent incoming connections: per source address while the
//! TLS handshake runs (unauthenticated), and per certified department after
//! the certificate check. A connection over a cap is refused and audited; the
//! counts fall when connections end (the guards are dropped).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Concurrent incoming TLS handshakes (not yet authenticated) from one source
/// address. High, because every node of a test network (and every peer
/// behind one NAT) shares one.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 1024;
/// Concurrent incoming connections from one department.
pub const MAX_CONNECTIONS_PER_PEER: usize = 8;

/// Counts by key, up to a cap.
#[derive(Debug)]
pub struct Counter<K: Eq + Hash + Clone> {
    cap: usize,
    counts: Mutex<HashMap<K, usize>>,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct Slot<K: Eq + Hash + Clone> {
    counter: Arc<Counter<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    /// A counter refusing more than `cap` per key.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Counter {
            cap,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more for `key`, or `None` when the key is at its cap.
    pub fn take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            counter: self.clone(),
            key,
        })
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counter.counts.lock()
            && let Some(n) = counts.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The caps of one endpoint.
#[derive(Debug)]
pub struct Limits {
    /// By source address.
    pub addresses: Arc<Counter<IpAddr>>,
    /// By department.
    pub peers: Arc<Counter<String>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            addresses: Counter::new(MAX_CONNECTIONS_PER_ADDRESS),
            peers: Counter::new(MAX_CONNECTIONS_PER_PEER),
        }
    }
}
