//! Operational metrics: counters and gauges the node updates as it works,
//! and the ones read from the store, the certificates and the audit log when
//! scraped. Encoded as OpenMetrics text (prometheus-client) by the admin
//! listener `pdx serve` opens when `[operations] metrics` is set
//! (docs/operations.md lists every metric).
//!
//! Labels are bounded: `peer` is a department of the network (or
//! `unauthenticated` before a certificate is checked), `kind` one of a fixed
//! set of message types or refusal stages. No label carries a value from a
//! dataset or a call.

use pdx_audit::store::{AuditObserver, now_ms};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Labels of per-peer request and refusal counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindPeer {
    /// Message type or refusal stage.
    pub kind: String,
    /// Department.
    pub peer: String,
}

/// Labels of per-peer byte and record counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// Department.
    pub peer: String,
}

/// Labels of in-flight gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabel {
    /// `transfer` or `call`.
    pub what: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<KindPeer, Counter>,
    refusals: Family<KindPeer, Counter>,
    bytes_sent: Family<PeerLabel, Counter>,
    bytes_received: Family<PeerLabel, Counter>,
    records_sent: Family<PeerLabel, Counter>,
    records_received: Family<PeerLabel, Counter>,
    in_flight: Family<WhatLabel, Gauge>,
    append_seconds: Histogram,
    group_commit_entries: Histogram,
    audit_entries: Gauge,
    store_bytes: Gauge,
    pending_compaction_bytes: Gauge,
    cert_expiry_seconds: FloatGauge,
    crl_age_seconds: FloatGauge,
    crl_next_update_seconds: FloatGauge,
    checkpoint_age_seconds: FloatGauge,
    cosigned_age_seconds: Family<PeerLabel, FloatGauge>,
    cosigned_size: Family<PeerLabel, Gauge>,
    clock_skew_seconds: Family<PeerLabel, FloatGauge>,
    /// Clock skew per peer (ms, peer minus ours) and when it was measured.
    clocks: Mutex<HashMap<String, (i64, u64)>>,
    /// Latest cosignature time (ms) per witness department, seeded from the
    /// store at the first scrape, then kept as cosignatures arrive.
    last_cosigned: Mutex<Option<HashMap<String, (u64, u64)>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pdx");
        let requests = Family::<KindPeer, Counter>::default();
        let refusals = Family::<KindPeer, Counter>::default();
        let bytes_sent = Family::<PeerLabel, Counter>::default();
        let bytes_received = Family::<PeerLabel, Counter>::default();
        let records_sent = Family::<PeerLabel, Counter>::default();
        let records_received = Family::<PeerLabel, Counter>::default();
        let in_flight = Family::<WhatLabel, Gauge>::default();
        // 50 µs .. ~1.6 s: an fsync on a good disk to a stalled one.
        let append_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        // 1 .. 4096 entries per synced batch.
        let group_commit_entries = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        let audit_entries = Gauge::default();
        let store_bytes = Gauge::default();
        let pending_compaction_bytes = Gauge::default();
        let cert_expiry_seconds = FloatGauge::default();
        let crl_age_seconds = FloatGauge::default();
        let crl_next_update_seconds = FloatGauge::default();
        let checkpoint_age_seconds = FloatGauge::default();
        let cosigned_age_seconds = Family::<PeerLabel, FloatGauge>::default();
        let cosigned_size = Family::<PeerLabel, Gauge>::default();
        let clock_skew_seconds = Family::<PeerLabel, FloatGauge>::default();
        registry.register(
            "peer_clock_skew_seconds",
            "Each peer's clock minus this node's, from its last hello (latency included)",
            clock_skew_seconds.clone(),
        );
        registry.register(
            "requests",
            "Requests peers opened on this node, by message type and department",
            requests.clone(),
        );
        registry.register(
            "refusals",
            "Refused connections, requests and calls, by stage/code and department",
            refusals.clone(),
        );
        registry.register(
            "transfer_sent_bytes",
            "Sealed release chunk bytes sent, by recipient",
            bytes_sent.clone(),
        );
        registry.register(
            "transfer_received_bytes",
            "Sealed release chunk bytes durably stored, by sender",
            bytes_received.clone(),
        );
        registry.register(
            "transfer_sent_records",
            "Records of releases delivered (receipt verified), by recipient",
            records_sent.clone(),
        );
        registry.register(
            "transfer_received_records",
            "Records of releases received complete, by sender",
            records_received.clone(),
        );
        registry.register(
            "in_flight",
            "Transfers and calls being served now",
            in_flight.clone(),
        );
        registry.register(
            "audit_append_seconds",
            "Time from queueing an audit entry to its durable commit",
            append_seconds.clone(),
        );
        registry.register(
            "audit_group_commit_entries",
            "Entries per synced audit batch (group commit)",
            group_commit_entries.clone(),
        );
        registry.register(
            "audit_entries",
            "Entries in this node's audit log",
            audit_entries.clone(),
        );
        registry.register(
            "store_size_bytes",
            "Total size of the store's SST files",
            store_bytes.clone(),
        );
        registry.register(
            "store_pending_compaction_bytes",
            "RocksDB's estimate of bytes compaction still has to rewrite",
            pending_compaction_bytes.clone(),
        );
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until the node certificate expires (negative: expired)",
            cert_expiry_seconds.clone(),
        );
        registry.register(
            "crl_age_seconds",
            "Seconds since the installed CRL was issued",
            crl_age_seconds.clone(),
        );
        registry.register(
            "crl_next_update_seconds",
            "Seconds until the installed CRL's next update (negative: overdue)",
            crl_next_update_seconds.clone(),
        );
        registry.register(
            "checkpoint_age_seconds",
            "Seconds since this node's latest audit checkpoint was signed",
            checkpoint_age_seconds.clone(),
        );
        registry.register(
            "peer_cosigned_age_seconds",
            "Seconds since each peer last cosigned a checkpoint of this node's log",
            cosigned_age_seconds.clone(),
        );
        registry.register(
            "peer_cosigned_size",
            "Size of the latest checkpoint of this node's log each peer cosigned",
            cosigned_size.clone(),
        );
        Metrics {
            registry,
            requests,
            refusals,
            bytes_sent,
            bytes_received,
            records_sent,
            records_received,
            in_flight,
            append_seconds,
            group_commit_entries,
            audit_entries,
            store_bytes,
            pending_compaction_bytes,
            cert_expiry_seconds,
            crl_age_seconds,
            crl_next_update_seconds,
            checkpoint_age_seconds,
            cosigned_age_seconds,
            cosigned_size,
            clock_skew_seconds,
            clocks: Mutex::new(HashMap::new()),
            last_cosigned: Mutex::new(None),
        }
    }

    /// A peer opened a request of `kind`.
    pub fn request(&self, kind: &str, peer: &str) {
        self.requests
            .get_or_create(&KindPeer {
                kind: kind.to_string(),
                peer: peer.to_string(),
            })
            .inc();
    }

    /// Something from `peer` (None: not yet authenticated) was refused.
    pub fn refusal(&self, kind: &str, peer: Option<&str>) {
        self.refusals
            .get_or_create(&KindPeer {
                kind: kind.to_string(),
                peer: peer.unwrap_or("unauthenticated").to_string(),
            })
            .inc();
    }

    /// Chunk bytes sent to `peer`.
    pub fn sent_bytes(&self, peer: &str, n: usize) {
        self.bytes_sent
            .get_or_create(&peer_label(peer))
            .inc_by(n as u64);
    }

    /// Chunk bytes from `peer` stored.
    pub fn received_bytes(&self, peer: &str, n: usize) {
        self.bytes_received
            .get_or_create(&peer_label(peer))
            .inc_by(n as u64);
    }

    /// Records delivered to `peer`.
    pub fn sent_records(&self, peer: &str, n: u64) {
        self.records_sent.get_or_create(&peer_label(peer)).inc_by(n);
    }

    /// Records received complete from `peer`.
    pub fn received_records(&self, peer: &str, n: u64) {
        self.records_received
            .get_or_create(&peer_label(peer))
            .inc_by(n);
    }

    /// Counts one `what` (`transfer`, `call`) in flight until the guard drops.
    pub fn in_flight(&self, what: &str) -> InFlight {
        let g = self
            .in_flight
            .get_or_create(&WhatLabel {
                what: what.to_string(),
            })
            .clone();
        g.inc();
        InFlight(g)
    }

    /// A hello from `peer` showed its clock `skew_ms` ahead of ours.
    pub fn peer_clock(&self, peer: &str, skew_ms: i64) {
        self.clock_skew_seconds
            .get_or_create(&peer_label(peer))
            .set(skew_ms as f64 / 1000.0);
        if let Ok(mut c) = self.clocks.lock() {
            c.insert(peer.to_string(), (skew_ms, now_ms()));
        }
    }

    /// The clock skew last measured per peer: (ms, measured at ms).
    pub fn peer_clocks(&self) -> HashMap<String, (i64, u64)> {
        self.clocks.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Transfers and calls being served now.
    pub fn in_flight_total(&self) -> i64 {
        ["transfer", "call"]
            .iter()
            .map(|w| {
                self.in_flight
                    .get_or_create(&WhatLabel {
                        what: (*w).to_string(),
                    })
                    .get()
            })
            .sum()
    }

    /// `witness` cosigned checkpoint `size` of this log at `time_ms`.
    pub fn cosigned(&self, witness: &str, size: u64, time_ms: u64) {
        if let Ok(mut m) = self.last_cosigned.lock()
            && let Some(map) = m.as_mut()
        {
            let e = map.entry(witness.to_string()).or_insert((size, time_ms));
            if time_ms >= e.1 {
                *e = (size, time_ms);
            }
        }
    }

    /// Whether the next scrape must bring the cosignatures from the store
    /// (the first one does; later ones are kept as they arrive).
    pub fn needs_cosignatures(&self) -> bool {
        self.last_cosigned
            .lock()
            .map(|m| m.is_none())
            .unwrap_or(false)
    }

    /// Sets what is read at scrape time, then encodes every metric
    /// (OpenMetrics text, ending `# EOF`).
    pub fn render(&self, scrape: Scrape) -> Result<String, std::fmt::Error> {
        let now = now_ms();
        let secs = |later_ms: i128| later_ms as f64 / 1000.0;
        self.audit_entries
            .set(i64::try_from(scrape.audit_entries).unwrap_or(i64::MAX));
        self.store_bytes.set(scrape.store_bytes);
        self.pending_compaction_bytes
            .set(scrape.pending_compaction_bytes);
        self.cert_expiry_seconds
            .set(secs(i128::from(scrape.cert_not_after_ms) - i128::from(now)));
        if let Some(crl) = scrape.crl {
            self.crl_age_seconds
                .set(secs(i128::from(now) - i128::from(crl.this_update_ms)));
            if let Some(next) = crl.next_update_ms {
                self.crl_next_update_seconds
                    .set(secs(i128::from(next) - i128::from(now)));
            }
        }
        self.checkpoint_age_seconds.set(secs(
            i128::from(now) - i128::from(scrape.checkpoint_time_ms),
        ));
        if let Some(seed) = scrape.cosignatures
            && let Ok(mut m) = self.last_cosigned.lock()
        {
            m.get_or_insert(seed);
        }
        if let Ok(m) = self.last_cosigned.lock()
            && let Some(map) = m.as_ref()
        {
            for (peer, (size, time_ms)) in map {
                let l = peer_label(peer);
                self.cosigned_age_seconds
                    .get_or_create(&l)
                    .set(secs(i128::from(now) - i128::from(*time_ms)));
                self.cosigned_size
                    .get_or_create(&l)
                    .set(i64::try_from(*size).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// What a scrape reads from the node, the store and the certificates.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Entries in the audit log.
    pub audit_entries: u64,
    /// SST bytes over every family.
    pub store_bytes: i64,
    /// RocksDB's pending compaction estimate over every family.
    pub pending_compaction_bytes: i64,
    /// The node certificate's notAfter (ms).
    pub cert_not_after_ms: i64,
    /// The installed CRL's times.
    pub crl: Option<crate::pki::CrlTimes>,
    /// When the latest checkpoint was signed (ms).
    pub checkpoint_time_ms: u64,
    /// The latest cosignature per witness (size, time ms), when
    /// [`Metrics::needs_cosignatures`].
    pub cosignatures: Option<HashMap<String, (u64, u64)>>,
}

fn peer_label(peer: &str) -> PeerLabel {
    PeerLabel {
        peer: peer.to_string(),
    }
}

/// Decrements an in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl AuditObserver for Metrics {
    fn committed(&self, entries: usize) {
        self.group_commit_entries.observe(entries as f64);
    }
    fn appended(&self, waited: Duration) {
        self.append_seconds.observe(waited.as_secs_f64());
    }
}
