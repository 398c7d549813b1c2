//! Refusals are evidence, but a flood of them must not grow the audit log
//! without bound. Per source (a department, or an address before one is
//! known) and per window of [`WINDOW_MS`]:
//!
//! - the first refusal of each kind (stage, code and reason, digits folded)
//!   is logged at once, in full, for up to [`KINDS_PER_SOURCE`] kinds;
//! - further refusals are counted and logged as one summary entry per source
//!   when the window closes (on the next refusal or [`Refusals::flush`]),
//!   naming the count and the distinct kinds;
//! - at most [`SOURCES_PER_WINDOW`] sources are tracked per window; refusals
//!   from further sources share one "other sources" summary.
//!
//! So a window adds at most `SOURCES_PER_WINDOW × (KINDS_PER_SOURCE + 1) + 1`
//! `refused-request` entries, whatever the traffic (docs/audit-format.md).

use crate::error::Result;
use crate::node::{NODE_OPERATOR, Node};
use pdx_audit::EventKind;
use pdx_audit::store::now_ms;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// Length of an aggregation window.
pub const WINDOW_MS: u64 = 60_000;
/// Kinds of refusal logged at once per source and window.
pub const KINDS_PER_SOURCE: usize = 8;
/// Sources tracked per window.
pub const SOURCES_PER_WINDOW: usize = 64;
/// Most distinct kinds a summary lists.
const LISTED_KINDS: usize = 16;

/// One refusal to record.
#[derive(Clone, Debug)]
pub struct Refused {
    /// Who: a department or `address A.B.C.D`.
    pub source: String,
    /// The department, when known (the entry's counterparty).
    pub peer: Option<String>,
    /// What kind (stage and code); with the reason, it forms the kind.
    pub kind: String,
    /// The entry's detail.
    pub detail: String,
    /// Dataset, agreement and purpose of a refused release request.
    pub request: Option<(String, Option<String>, String)>,
    /// Evidence of misbehaviour (a second audit log): logged as `alarm`.
    pub alarm: bool,
}

#[derive(Default)]
struct Source {
    logged: HashSet<String>,
    suppressed: u64,
    kinds: BTreeMap<String, u64>,
}

struct Window {
    started_ms: u64,
    sources: HashMap<String, Source>,
    others: Source,
}

/// The aggregation state of one node.
pub struct Refusals {
    window: Mutex<Window>,
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refusals")
    }
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            window: Mutex::new(Window {
                started_ms: now_ms(),
                sources: HashMap::new(),
                others: Source::default(),
            }),
        }
    }
}

/// A kind: digits folded, so "late by 3 ms" and "late by 5 ms" are one kind.
fn kind_of(kind: &str, detail: &str) -> String {
    let mut out = String::with_capacity(kind.len() + 1 + detail.len().min(160));
    out.push_str(kind);
    out.push(' ');
    let mut last_digit = false;
    for c in detail.chars().take(160) {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
        } else {
            out.push(c);
            last_digit = false;
        }
    }
    out
}

impl Refusals {
    /// Records a refusal: logged now, or counted for the window's summary.
    pub fn record(&self, node: &Node, r: Refused) -> Result<()> {
        node.metrics.refusal(&r.kind, r.peer.as_deref());
        let summaries = {
            let Ok(mut w) = self.window.lock() else {
                return log_one(node, &r);
            };
            let now = now_ms();
            let closed = if now.saturating_sub(w.started_ms) >= WINDOW_MS {
                Some(close(&mut w, now))
            } else {
                None
            };
            let kind = kind_of(&r.kind, &r.detail);
            let tracked = w.sources.len() < SOURCES_PER_WINDOW || w.sources.contains_key(&r.source);
            let log_now = if tracked {
                let s = w.sources.entry(r.source.clone()).or_default();
                if !s.logged.contains(&kind) && s.logged.len() < KINDS_PER_SOURCE {
                    s.logged.insert(kind);
                    true
                } else {
                    s.suppressed += 1;
                    *s.kinds.entry(kind).or_default() += 1;
                    false
                }
            } else {
                w.others.suppressed += 1;
                *w.others.kinds.entry(kind).or_default() += 1;
                false
            };
            (closed, log_now)
        };
        if let Some(closed) = summaries.0 {
            write_summaries(node, closed)?;
        }
        if summaries.1 {
            log_one(node, &r)?;
        }
        Ok(())
    }

    /// Writes the summaries of a window that has closed (called periodically
    /// and at shutdown; `force` closes the current window too).
    pub fn flush(&self, node: &Node, force: bool) -> Result<()> {
        let closed = {
            let Ok(mut w) = self.window.lock() else {
                return Ok(());
            };
            let now = now_ms();
            if force || now.saturating_sub(w.started_ms) >= WINDOW_MS {
                Some(close(&mut w, now))
            } else {
                None
            }
        };
        match closed {
            Some(c) => write_summaries(node, c),
            None => Ok(()),
        }
    }
}

struct Closed {
    started_ms: u64,
    ended_ms: u64,
    sources: Vec<(String, Source)>,
    others: Source,
}

fn close(w: &mut Window, now: u64) -> Closed {
    let sources = std::mem::take(&mut w.sources)
        .into_iter()
        .filter(|(_, s)| s.suppressed > 0)
        .collect();
    let others = std::mem::take(&mut w.others);
    let started_ms = w.started_ms;
    w.started_ms = now;
    Closed {
        started_ms,
        ended_ms: now,
        sources,
        others,
    }
}

fn log_one(node: &Node, r: &Refused) -> Result<()> {
    let kind = if r.alarm {
        EventKind::Alarm
    } else {
        EventKind::RefusedRequest
    };
    let mut d = node.draft(kind, NODE_OPERATOR);
    d.counterparty = r.peer.clone();
    if let Some((dataset, agreement, purpose)) = &r.request {
        d.subject.dataset = Some(dataset.clone());
        d.agreement = agreement.clone();
        d.purpose = Some(purpose.clone());
    }
    d.detail = Some(r.detail.clone());
    node.log(d)?;
    Ok(())
}

fn summary_detail(who: &str, s: &Source, c: &Closed) -> String {
    let kinds: Vec<String> = s
        .kinds
        .iter()
        .take(LISTED_KINDS)
        .map(|(k, n)| format!("{n} x {k}"))
        .collect();
    let more = s.kinds.len().saturating_sub(LISTED_KINDS);
    format!(
        "{} further refusals from {who} between {} and {} ms (aggregated): {}{}",
        s.suppressed,
        c.started_ms,
        c.ended_ms,
        kinds.join("; "),
        if more > 0 {
            format!("; and {more} other kinds")
        } else {
            String::new()
        }
    )
}

fn write_summaries(node: &Node, c: Closed) -> Result<()> {
    let mut drafts = Vec::new();
    for (who, s) in &c.sources {
        let mut d = node.draft(EventKind::RefusedRequest, NODE_OPERATOR);
        if !who.starts_with("address ") {
            d.counterparty = Some(who.clone());
        }
        d.record_count = Some(s.suppressed);
        d.detail = Some(summary_detail(who, s, &c));
        drafts.push(d);
    }
    if c.others.suppressed > 0 {
        let mut d = node.draft(EventKind::RefusedRequest, NODE_OPERATOR);
        d.record_count = Some(c.others.suppressed);
        d.detail = Some(summary_detail(
            &format!("more than {SOURCES_PER_WINDOW} other sources"),
            &c.others,
            &c,
        ));
        drafts.push(d);
    }
    if !drafts.is_empty() {
        node.audit.append_many(drafts)?;
    }
    Ok(())
}
