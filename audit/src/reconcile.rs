//! Cross-log reconciliation: every `send` in one log must pair with exactly
//! one `receive` in the recipient's log (same release id, content digest and
//! record count) and vice versa. Entries are paired one to one, in log order,
//! per (release, sender, recipient): three sends against one receive are one
//! pair and two unpaired sends.
//!
//! Online calls are reconciled too: every (request digest, response digest)
//! pair a consumer logged in a `call` entry for a call id must appear in the
//! provider's `call-serve` entries for that call id and, for a relayed call,
//! in the hub's `call-relay` entries, and the other way round. Only entries
//! carrying a response digest (a signed answer) take part: a refused or
//! unanswered call has nothing the other side signed.

use crate::bundle::BundleReader;
use crate::entry::{EntryView, EventKind};
use crate::error::AuditError;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// One side of a transfer as a log recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransferRecord {
    /// Entry sequence number.
    pub seq: u64,
    /// Content digest (hex).
    pub digest: Option<String>,
    /// Record count.
    pub records: Option<u64>,
    /// Dataset.
    pub dataset: Option<String>,
}

/// What is wrong with a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MismatchKind {
    /// The sender logged a send the recipient never logged receiving (or
    /// logged more sends of one release than the recipient logged receives).
    SendWithoutReceive,
    /// The recipient logged a receive the sender never logged sending (or
    /// more receives than sends).
    ReceiveWithoutSend,
    /// Both logged it, with different content digests.
    DigestMismatch,
    /// Both logged it, with different record counts.
    CountMismatch,
    /// The other side's bundle was not given, so this transfer cannot be matched.
    PeerBundleMissing,
    /// A consumer logged a signed answer the provider never logged serving.
    CallWithoutServe,
    /// A provider logged serving a call whose consumer never logged the answer.
    ServeWithoutCall,
    /// A hub's `call-relay` entries and the parties' entries disagree.
    RelayMismatch,
}

/// One mismatch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// Kind.
    pub kind: MismatchKind,
    /// Release id.
    pub release: String,
    /// Sending department.
    pub from: String,
    /// Receiving department.
    pub to: String,
    /// Explanation.
    pub detail: String,
}

/// Result of reconciling several logs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Reconciliation {
    /// Departments whose bundles were read.
    pub departments: Vec<String>,
    /// Transfers found in both logs and equal.
    pub matched: usize,
    /// Signed call exchanges found in every party's log and equal.
    #[serde(default)]
    pub calls_matched: usize,
    /// Everything else.
    pub mismatches: Vec<Mismatch>,
}

impl Reconciliation {
    /// True when every transfer matched (missing peer bundles count as mismatches).
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty()
    }
}

type Key = (String, String, String); // (release, from, to)

/// (request digest, response digest) of a signed call exchange.
type Exchange = (String, String);
/// (call id, consumer, provider) -> exchanges, with the via hub.
type CallLog = BTreeMap<Key, (BTreeSet<Exchange>, Option<String>)>;

fn detail_value<'a>(detail: &'a str, key: &str) -> Option<&'a str> {
    detail
        .split(' ')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
}

#[derive(Default)]
struct Calls {
    consumer: CallLog,
    provider: CallLog,
    relay: BTreeMap<String, CallLog>,
}

impl Calls {
    fn add(&mut self, dept: &str, v: &EntryView<'_>) {
        let (Some(id), Some(detail), Some(req), Some(resp)) =
            (v.release, v.detail, v.digest, v.payload_digest)
        else {
            return;
        };
        let (Some(consumer), Some(provider)) = (
            detail_value(detail, "consumer"),
            detail_value(detail, "provider"),
        ) else {
            return;
        };
        let via = detail_value(detail, "via")
            .filter(|v| *v != "-")
            .map(str::to_string);
        let key = (id.to_string(), consumer.to_string(), provider.to_string());
        let ex = (hex::encode(req), hex::encode(resp));
        let log = match v.kind {
            EventKind::Call if dept == consumer => &mut self.consumer,
            EventKind::CallServe if dept == provider => &mut self.provider,
            EventKind::CallRelay => self.relay.entry(dept.to_string()).or_default(),
            _ => return,
        };
        let e = log.entry(key).or_default();
        e.0.insert(ex);
        if e.1.is_none() {
            e.1 = via;
        }
    }

    fn reconcile(&self, depts: &BTreeSet<String>, out: &mut Reconciliation) {
        let mismatch = |kind, (id, c, p): &Key, detail: String| Mismatch {
            kind,
            release: id.clone(),
            from: c.clone(),
            to: p.clone(),
            detail,
        };
        let none = (BTreeSet::new(), None);
        for (key, (called, via)) in &self.consumer {
            let (id, c, p) = key;
            if !depts.contains(p) {
                out.mismatches.push(mismatch(
                    MismatchKind::PeerBundleMissing,
                    key,
                    format!("{c} logged call {id} to {p}, whose bundle was not given"),
                ));
                continue;
            }
            let served = &self.provider.get(key).unwrap_or(&none).0;
            let missing: Vec<_> = called.difference(served).collect();
            if missing.is_empty() {
                out.calls_matched += 1;
            } else {
                for (req, resp) in missing {
                    out.mismatches.push(mismatch(MismatchKind::CallWithoutServe, key, format!("{c} logged call {id} (request {req}, response {resp}) that {p} never logged serving")));
                }
            }
            if let Some(hub) = via {
                match self.relay.get(hub) {
                    None if !depts.contains(hub) => out.mismatches.push(mismatch(
                        MismatchKind::PeerBundleMissing,
                        key,
                        format!("call {id} went through hub {hub}, whose bundle was not given"),
                    )),
                    relayed => {
                        let relayed = relayed.and_then(|r| r.get(key)).map(|e| &e.0);
                        if relayed.is_none_or(|r| !called.is_subset(r)) {
                            out.mismatches.push(mismatch(MismatchKind::RelayMismatch, key, format!("{c} logged call {id} through {hub}, which logged no matching relay")));
                        }
                    }
                }
            }
        }
        for (key, (served, _)) in &self.provider {
            let (id, c, p) = key;
            if !depts.contains(c) {
                out.mismatches.push(mismatch(
                    MismatchKind::PeerBundleMissing,
                    key,
                    format!("{p} logged serving call {id} of {c}, whose bundle was not given"),
                ));
                continue;
            }
            let called = &self.consumer.get(key).unwrap_or(&none).0;
            for (req, resp) in served.difference(called) {
                out.mismatches.push(mismatch(MismatchKind::ServeWithoutCall, key, format!("{p} logged serving call {id} (request {req}, response {resp}); {c} never logged receiving that answer")));
            }
        }
        for (hub, log) in &self.relay {
            for (key, (relayed, _)) in log {
                let (id, c, p) = key;
                for (dept, side) in [(c, &self.consumer), (p, &self.provider)] {
                    if !depts.contains(dept) {
                        continue;
                    }
                    let seen = &side.get(key).unwrap_or(&none).0;
                    if !relayed.is_subset(seen) {
                        out.mismatches.push(mismatch(MismatchKind::RelayMismatch, key, format!("hub {hub} logged relaying call {id} with an answer {dept} did not log")));
                    }
                }
            }
        }
    }
}

/// Reads the given bundles and reconciles their sends and receives.
pub fn reconcile<R: Read>(
    bundles: Vec<(String, BundleReader<R>)>,
) -> Result<Reconciliation, AuditError> {
    let mut sends: BTreeMap<Key, Vec<TransferRecord>> = BTreeMap::new();
    let mut receives: BTreeMap<Key, Vec<TransferRecord>> = BTreeMap::new();
    let mut depts = BTreeSet::new();
    let mut calls = Calls::default();
    for (name, mut reader) in bundles {
        let dept = reader.header().dept.clone();
        depts.insert(dept.clone());
        let mut buf = Vec::new();
        while reader.next_entry(&mut buf)? {
            let v = EntryView::parse(&buf).map_err(|e| AuditError::Bundle {
                path: name.clone(),
                reason: format!("malformed entry: {e} (run pdx audit verify first)"),
            })?;
            if matches!(
                v.kind,
                EventKind::Call | EventKind::CallServe | EventKind::CallRelay
            ) {
                calls.add(&dept, &v);
                continue;
            }
            if !matches!(v.kind, EventKind::Send | EventKind::Receive) {
                continue;
            }
            let (Some(release), Some(peer)) = (v.release, v.counterparty) else {
                continue;
            };
            let rec = TransferRecord {
                seq: v.seq,
                digest: v.digest.map(hex::encode),
                records: v.record_count,
                dataset: v.dataset.map(str::to_string),
            };
            if v.kind == EventKind::Send {
                sends
                    .entry((release.to_string(), dept.clone(), peer.to_string()))
                    .or_default()
                    .push(rec);
            } else {
                receives
                    .entry((release.to_string(), peer.to_string(), dept.clone()))
                    .or_default()
                    .push(rec);
            }
        }
    }
    let mut out = Reconciliation {
        departments: depts.iter().cloned().collect(),
        ..Default::default()
    };
    let none = Vec::new();
    for (key, sent) in &sends {
        let (release, from, to) = key;
        let received = receives.get(key).unwrap_or(&none);
        let mismatch = |kind, detail| Mismatch {
            kind,
            release: release.clone(),
            from: from.clone(),
            to: to.clone(),
            detail,
        };
        for (s, r) in sent.iter().zip(received) {
            if r.digest != s.digest {
                out.mismatches.push(mismatch(
                    MismatchKind::DigestMismatch,
                    format!(
                        "sent digest {} (seq {}) but received digest {} (seq {})",
                        s.digest.as_deref().unwrap_or("-"),
                        s.seq,
                        r.digest.as_deref().unwrap_or("-"),
                        r.seq
                    ),
                ));
            } else if r.records != s.records {
                out.mismatches.push(mismatch(
                    MismatchKind::CountMismatch,
                    format!("sent {:?} records but received {:?}", s.records, r.records),
                ));
            } else {
                out.matched += 1;
            }
        }
        for (n, s) in sent.iter().enumerate().skip(received.len()) {
            out.mismatches.push(if !depts.contains(to) {
                mismatch(
                    MismatchKind::PeerBundleMissing,
                    format!("{from} sent release {release} (seq {}) to {to}, whose bundle was not given", s.seq),
                )
            } else if received.is_empty() {
                mismatch(
                    MismatchKind::SendWithoutReceive,
                    format!("{from} logged sending release {release} (seq {}); {to} never logged receiving it", s.seq),
                )
            } else {
                mismatch(
                    MismatchKind::SendWithoutReceive,
                    format!(
                        "{from} logged send number {} of release {release} (seq {}); {to} logged only {} receive(s) of it",
                        n + 1,
                        s.seq,
                        received.len()
                    ),
                )
            });
        }
    }
    for (key, received) in &receives {
        let sent = sends.get(key).map_or(0, Vec::len);
        let (release, from, to) = key;
        for r in received.iter().skip(sent) {
            let kind = if depts.contains(from) {
                MismatchKind::ReceiveWithoutSend
            } else {
                MismatchKind::PeerBundleMissing
            };
            out.mismatches.push(Mismatch {
                kind,
                release: release.clone(),
                from: from.clone(),
                to: to.clone(),
                detail: format!(
                    "{to} logged receiving release {release} from {from} (seq {}) with no matching send ({sent} send(s) logged)",
                    r.seq
                ),
            });
        }
    }
    calls.reconcile(&depts, &mut out);
    Ok(out)
}
