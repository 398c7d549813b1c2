//! Cross-log reconciliation: every `send` in one log must pair with exactly
//! one `receive` in the recipient's log (same release id, content digest and
//! record count) and vice versa. Entries are paired one to one, in log order,
//! per (release, sender, recipient): three sends against one receive are one
//! pair and two unpaired sends.

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

/// Reads the given bundles and reconciles their sends and receives.
pub fn reconcile<R: Read>(
    bundles: Vec<(String, BundleReader<R>)>,
) -> Result<Reconciliation, AuditError> {
    let mut sends: BTreeMap<Key, Vec<TransferRecord>> = BTreeMap::new();
    let mut receives: BTreeMap<Key, Vec<TransferRecord>> = BTreeMap::new();
    let mut depts = BTreeSet::new();
    for (name, mut reader) in bundles {
        let dept = reader.header().dept.clone();
        depts.insert(dept.clone());
        let mut buf = Vec::new();
        while reader.next_entry(&mut buf)? {
            let v = EntryView::parse(&buf).map_err(|e| AuditError::Bundle {
                path: name.clone(),
                reason: format!("malformed entry: {e} (run pdx audit verify first)"),
            })?;
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
    Ok(out)
}
