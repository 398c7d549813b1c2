//! Per-department call limits at a provider or hub: a token bucket
//! (`services.calls_per_second`, `call_burst`) and a cap on calls in flight
//! (`max_calls_in_flight`). A flooding department is answered `rate-limited`
//! at once, before any signature is checked, so it cannot take the CPU other
//! departments' calls need. Idempotency keys in flight are tracked too: a
//! second call with a key whose first is still running is refused instead of
//! reaching the backend twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most departments tracked; beyond it, the oldest buckets are dropped.
const MAX_TRACKED: usize = 4096;

struct Bucket {
    tokens: f64,
    last: Instant,
    in_flight: u32,
}

/// The limits of one node.
#[derive(Default)]
pub struct CallLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
    keys: Mutex<HashSet<Vec<u8>>>,
}

impl std::fmt::Debug for CallLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallLimits")
    }
}

/// A call admitted: releases its in-flight slot when dropped.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<CallLimits>,
    dept: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut b) = self.limits.buckets.lock()
            && let Some(b) = b.get_mut(&self.dept)
        {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
    }
}

/// An idempotency key held while its call runs.
#[derive(Debug)]
pub struct KeyHeld {
    limits: Arc<CallLimits>,
    key: Vec<u8>,
}

impl Drop for KeyHeld {
    fn drop(&mut self) {
        if let Ok(mut k) = self.limits.keys.lock() {
            k.remove(&self.key);
        }
    }
}

impl CallLimits {
    /// Admits one call from `dept`, or says why not.
    pub fn admit(
        self: &Arc<Self>,
        dept: &str,
        per_second: u32,
        burst: u32,
        max_in_flight: u32,
    ) -> Result<Admitted, String> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| "call limits unavailable".to_string())?;
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(dept) {
            // Idle departments first: those with nothing in flight.
            buckets.retain(|_, b| b.in_flight > 0);
        }
        let capacity = f64::from(burst.max(1));
        let b = buckets.entry(dept.to_string()).or_insert(Bucket {
            tokens: capacity,
            last: now,
            in_flight: 0,
        });
        let refill = now.duration_since(b.last).as_secs_f64() * f64::from(per_second);
        b.tokens = (b.tokens + refill).min(capacity);
        b.last = now;
        if b.in_flight >= max_in_flight {
            return Err(format!(
                "{dept} has {} calls in flight here (limit {max_in_flight})",
                b.in_flight
            ));
        }
        if b.tokens < 1.0 {
            return Err(format!(
                "{dept} exceeds {per_second} calls per second (burst {burst})"
            ));
        }
        b.tokens -= 1.0;
        b.in_flight += 1;
        Ok(Admitted {
            limits: self.clone(),
            dept: dept.to_string(),
        })
    }

    /// Holds an idempotency key while its call runs; `None` if it is held.
    pub fn hold_key(self: &Arc<Self>, key: Vec<u8>) -> Option<KeyHeld> {
        let mut keys = self.keys.lock().ok()?;
        keys.insert(key.clone()).then(|| KeyHeld {
            limits: self.clone(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_department_is_limited_and_others_are_not() {
        let l = Arc::new(CallLimits::default());
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(l.admit("A", 1, 10, 100));
        }
        assert!(held.iter().all(Result::is_ok));
        assert!(l.admit("A", 1, 10, 100).is_err(), "burst spent");
        assert!(l.admit("B", 1, 10, 100).is_ok(), "B has its own bucket");
    }

    #[test]
    fn in_flight_slots_are_released_when_calls_end() {
        let l = Arc::new(CallLimits::default());
        let a = l.admit("A", 1000, 1000, 1);
        assert!(a.is_ok());
        assert!(l.admit("A", 1000, 1000, 1).is_err());
        drop(a);
        assert!(l.admit("A", 1000, 1000, 1).is_ok());
    }

    #[test]
    fn a_key_in_flight_cannot_be_held_twice() {
        let l = Arc::new(CallLimits::default());
        let k = l.hold_key(b"k".to_vec());
        assert!(k.is_some());
        assert!(l.hold_key(b"k".to_vec()).is_none());
        drop(k);
        assert!(l.hold_key(b"k".to_vec()).is_some());
    }
}
