//! Audit entries and their one canonical CBOR encoding (specified in
//! `docs/audit-format.md`).
//!
//! An entry is a CBOR map with unsigned-integer keys in ascending order; absent
//! optional fields are omitted. Decoding is strict and re-encodes to check that
//! the input was the canonical form, so every entry has exactly one encoding and
//! its hash names it.

use crate::canon::{CanonError, Reader, Writer};
use crate::merkle::Hash;
use pdx_crypto::{Digest, KeyId, Suite};
use std::fmt;

/// The log an entry belongs to: the node's department, the key id of the
/// log's genesis audit key (stable across key rotations) and the log's suite,
/// fixed at genesis: BLAKE3 tree and Ed25519 checkpoints (`intl`), or SM3 tree
/// and SM2 checkpoints (`gm`). Every entry carries the log id, so every leaf
/// hash commits to the suite.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId {
    /// Department code of the node.
    pub dept: String,
    /// Key id of the first audit key of this log.
    pub genesis_key: KeyId,
    /// The log's suite.
    pub suite: Suite,
}

impl LogId {
    /// Text form: `dept:keyid` for `intl` logs, `dept:keyid:gm` for `gm` logs.
    pub fn to_text(&self) -> String {
        self.to_string()
    }

    /// Parses the text form; any suffix but `:gm` is refused.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let (dept, key) = (parts.next()?, parts.next()?);
        let suite = match parts.next() {
            None => Suite::Intl,
            Some("gm") => Suite::Gm,
            Some(_) => return None,
        };
        if dept.is_empty() || parts.next().is_some() {
            return None;
        }
        Some(LogId {
            dept: dept.to_string(),
            genesis_key: KeyId::from_hex(key)?,
            suite,
        })
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.suite {
            Suite::Intl => write!(f, "{}:{}", self.dept, self.genesis_key),
            Suite::Gm => write!(f, "{}:{}:gm", self.dept, self.genesis_key),
        }
    }
}

macro_rules! event_kinds {
    ($($variant:ident => $label:literal, $doc:literal;)*) => {
        /// What happened.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum EventKind {
            $(#[doc = $doc] $variant,)*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The label stored in entries.
            pub fn label(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $label,)*
                }
            }

            /// Parses a label.
            pub fn from_label(s: &str) -> Option<Self> {
                match s {
                    $($label => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

event_kinds! {
    Genesis => "genesis", "The log was created; names the first audit key.";
    Import => "import", "A dataset was imported.";
    Release => "release", "A de-identified release was produced.";
    Grant => "grant", "A grant was created.";
    RevokeGrant => "revoke-grant", "A grant was revoked.";
    Send => "send", "A release (or part of one) was sent to a peer and acknowledged by its receipt.";
    Receive => "receive", "A release was received completely and verified.";
    Decrypt => "decrypt", "Sealed fields were decrypted.";
    Export => "export", "Data left the node to a local file.";
    AggregateContribute => "aggregate-contribute", "An encrypted contribution to a homomorphic aggregate was made or accepted.";
    AggregateCombine => "aggregate-combine", "Contributions were added into an aggregate.";
    AggregateDecrypt => "aggregate-decrypt", "An aggregate was decrypted by its key holder.";
    RefusedRequest => "refused-request", "A request or connection was refused.";
    KeyRotate => "key-rotate", "A key was rotated.";
    ConfigChange => "config-change", "Configuration, peers or trust material changed.";
    PeerCheckpointWitnessed => "peer-checkpoint-witnessed", "A peer's checkpoint was checked and cosigned.";
    Confirm => "confirm", "A signed confirmation (e.g. settlement) was issued or received.";
    Alarm => "alarm", "Evidence of misbehaviour was recorded (e.g. a peer's forked log).";
    Deliver => "deliver", "A signed document (confirmation, contribution, aggregate) was delivered: the recipient acknowledged its digest.";
    Call => "call", "An online service call was made by this node's department (consumer side).";
    CallRelay => "call-relay", "An online service call was relayed by this node (hub side).";
    CallServe => "call-serve", "An online service call was answered by this node (provider side).";
    Backup => "backup", "A backup of the node was made or restored, or a restored peer was told the checkpoint of its log held here.";
    Discontinuity => "discontinuity", "An operator acknowledged entries lost by a restore from a backup: the range the peers witnessed beyond the restored log (audit-format.md §11).";
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Who acted: the node's department and the local operator.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Actor {
    /// Department code.
    pub dept: String,
    /// Local operator (user name or `node` for the node itself).
    pub operator: String,
}

/// What the event concerns.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Subject {
    /// Dataset id.
    pub dataset: Option<String>,
    /// Release id (hex).
    pub release: Option<String>,
    /// Digest of the dataset or of the transferred content.
    pub digest: Option<Digest>,
}

impl Subject {
    fn is_empty(&self) -> bool {
        self.dataset.is_none() && self.release.is_none() && self.digest.is_none()
    }
}

/// A field involved in the event, with its classification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRef {
    /// Field name.
    pub name: String,
    /// Classification, e.g. `sensitive-personal/quasi-identifier/encrypt-for`.
    pub class: String,
}

/// A key rotation recorded in the log: the new audit key, signed by the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRotation {
    /// The new audit public key (Ed25519: 32 bytes; SM2: 65 bytes `04 || x || y`).
    pub new_key: Vec<u8>,
    /// Old key's signature over `rotation_message(log, seq, new_key)`.
    pub signature: [u8; 64],
}

/// What a `discontinuity` entry states (audit-format.md §11): the log was
/// restored from a backup at `restored_size`, peers had witnessed it up to
/// `lost_to`, so entries `restored_size .. lost_to` (0-based seqs) are lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discontinuity {
    /// Entries the restored log kept (its size when restored).
    pub restored_size: u64,
    /// The largest size a peer had witnessed.
    pub lost_to: u64,
    /// Each peer ahead of the restored log: the checkpoint of this log it held.
    pub witnessed: Vec<WitnessedSize>,
}

/// A checkpoint of this log that a peer held when it was restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessedSize {
    /// The peer's department.
    pub dept: String,
    /// Size of the checkpoint it held.
    pub size: u64,
    /// Its root.
    pub root: [u8; 32],
}

/// The bytes the outgoing key signs for a rotation.
pub fn rotation_message(log: &LogId, seq: u64, new_key: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(96);
    w.array(3);
    w.text(&log.to_text());
    w.uint(seq);
    w.bytes(new_key);
    w.finish()
}

/// Everything an event carries before the log assigns its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryDraft {
    /// Event kind.
    pub kind: EventKind,
    /// Who acted.
    pub actor: Actor,
    /// What it concerns.
    pub subject: Subject,
    /// The other department, if any.
    pub counterparty: Option<String>,
    /// Data-sharing agreement id.
    pub agreement: Option<String>,
    /// Declared purpose.
    pub purpose: Option<String>,
    /// Legal basis (e.g. PIPL article).
    pub legal_basis: Option<String>,
    /// Fields involved and their classification.
    pub fields: Vec<FieldRef>,
    /// Number of records involved.
    pub record_count: Option<u64>,
    /// The log suite's digest of the event's payload (manifest, receipt, contribution...).
    pub payload_digest: Option<Digest>,
    /// Free text: reasons, parameters.
    pub detail: Option<String>,
    /// Set only on key-rotate entries of the audit key.
    pub key_rotation: Option<KeyRotation>,
    /// Set only on `discontinuity` entries.
    pub discontinuity: Option<Discontinuity>,
}

impl EntryDraft {
    /// A draft with only kind and actor set.
    pub fn new(kind: EventKind, dept: &str, operator: &str) -> Self {
        EntryDraft {
            kind,
            actor: Actor {
                dept: dept.to_string(),
                operator: operator.to_string(),
            },
            subject: Subject::default(),
            counterparty: None,
            agreement: None,
            purpose: None,
            legal_basis: None,
            fields: Vec::new(),
            record_count: None,
            payload_digest: None,
            detail: None,
            key_rotation: None,
            discontinuity: None,
        }
    }
}

/// A log entry: a draft placed at `seq` after the entry whose leaf hash is `prev_hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Log this entry belongs to.
    pub log_id: LogId,
    /// Position in the log, from 0.
    pub seq: u64,
    /// Milliseconds since the Unix epoch; never decreases along the log.
    pub time_ms: u64,
    /// Leaf hash of the previous entry (all zero for seq 0).
    pub prev_hash: Hash,
    /// The event.
    pub draft: EntryDraft,
}

mod key {
    pub const LOG_ID: u64 = 1;
    pub const SEQ: u64 = 2;
    pub const TIME: u64 = 3;
    pub const KIND: u64 = 4;
    pub const ACTOR: u64 = 5;
    pub const SUBJECT: u64 = 6;
    pub const COUNTERPARTY: u64 = 7;
    pub const AGREEMENT: u64 = 8;
    pub const PURPOSE: u64 = 9;
    pub const LEGAL_BASIS: u64 = 10;
    pub const FIELDS: u64 = 11;
    pub const RECORD_COUNT: u64 = 12;
    pub const PAYLOAD_DIGEST: u64 = 13;
    pub const PREV_HASH: u64 = 14;
    pub const DETAIL: u64 = 15;
    pub const KEY_ROTATION: u64 = 16;
    pub const DISCONTINUITY: u64 = 17;
}

impl Entry {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with_log_text(&self.log_id.to_text())
    }

    /// [`Entry::encode`] with the log id's text form supplied by the caller
    /// (the writer caches it instead of formatting it for every entry).
    pub(crate) fn encode_with_log_text(&self, log_text: &str) -> Vec<u8> {
        debug_assert_eq!(log_text, self.log_id.to_text());
        let d = &self.draft;
        let n = 6
            + usize::from(!d.subject.is_empty())
            + usize::from(d.counterparty.is_some())
            + usize::from(d.agreement.is_some())
            + usize::from(d.purpose.is_some())
            + usize::from(d.legal_basis.is_some())
            + usize::from(!d.fields.is_empty())
            + usize::from(d.record_count.is_some())
            + usize::from(d.payload_digest.is_some())
            + usize::from(d.detail.is_some())
            + usize::from(d.key_rotation.is_some())
            + usize::from(d.discontinuity.is_some());
        // Typical entries are 300-400 bytes: one allocation, no regrowth.
        let mut w = Writer::with_capacity(512);
        w.map(n);
        w.uint(key::LOG_ID);
        w.text(log_text);
        w.uint(key::SEQ);
        w.uint(self.seq);
        w.uint(key::TIME);
        w.uint(self.time_ms);
        w.uint(key::KIND);
        w.text(d.kind.label());
        w.uint(key::ACTOR);
        w.array(2);
        w.text(&d.actor.dept);
        w.text(&d.actor.operator);
        if !d.subject.is_empty() {
            w.uint(key::SUBJECT);
            let s = &d.subject;
            w.map(
                usize::from(s.dataset.is_some())
                    + usize::from(s.release.is_some())
                    + usize::from(s.digest.is_some()),
            );
            if let Some(v) = &s.dataset {
                w.uint(1);
                w.text(v);
            }
            if let Some(v) = &s.release {
                w.uint(2);
                w.text(v);
            }
            if let Some(v) = &s.digest {
                w.uint(3);
                w.bytes(v.as_bytes());
            }
        }
        let opt_text = |w: &mut Writer, k: u64, v: &Option<String>| {
            if let Some(v) = v {
                w.uint(k);
                w.text(v);
            }
        };
        opt_text(&mut w, key::COUNTERPARTY, &d.counterparty);
        opt_text(&mut w, key::AGREEMENT, &d.agreement);
        opt_text(&mut w, key::PURPOSE, &d.purpose);
        opt_text(&mut w, key::LEGAL_BASIS, &d.legal_basis);
        if !d.fields.is_empty() {
            w.uint(key::FIELDS);
            w.array(d.fields.len());
            for f in &d.fields {
                w.array(2);
                w.text(&f.name);
                w.text(&f.class);
            }
        }
        if let Some(n) = d.record_count {
            w.uint(key::RECORD_COUNT);
            w.uint(n);
        }
        if let Some(v) = &d.payload_digest {
            w.uint(key::PAYLOAD_DIGEST);
            w.bytes(v.as_bytes());
        }
        w.uint(key::PREV_HASH);
        w.bytes(&self.prev_hash);
        opt_text(&mut w, key::DETAIL, &d.detail);
        if let Some(r) = &d.key_rotation {
            w.uint(key::KEY_ROTATION);
            w.array(2);
            w.bytes(&r.new_key);
            w.bytes(&r.signature);
        }
        if let Some(x) = &d.discontinuity {
            w.uint(key::DISCONTINUITY);
            w.array(3);
            w.uint(x.restored_size);
            w.uint(x.lost_to);
            w.array(x.witnessed.len());
            for p in &x.witnessed {
                w.array(3);
                w.text(&p.dept);
                w.uint(p.size);
                w.bytes(&p.root);
            }
        }
        w.finish()
    }

    /// Strictly decodes a canonical entry.
    pub fn decode(bytes: &[u8]) -> Result<Entry, CanonError> {
        let entry = decode_fields(bytes)?;
        if entry.encode() != bytes {
            return Err(CanonError(
                "not the canonical encoding of the entry it decodes to".into(),
            ));
        }
        Ok(entry)
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T, CanonError> {
    Err(CanonError(msg.into()))
}

/// A strictly parsed entry that borrows from its bytes: what verifiers read on
/// the hot path without allocating. The parser enforces every canonical-form
/// rule (definite lengths, shortest integers, ascending unique keys, no empty
/// optional containers, nothing trailing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    /// Log id text (`dept:keyid`, or `dept:keyid:gm`).
    pub log_id: &'a str,
    /// Sequence number.
    pub seq: u64,
    /// Timestamp.
    pub time_ms: u64,
    /// Event kind.
    pub kind: EventKind,
    /// Actor department.
    pub actor_dept: &'a str,
    /// Actor operator.
    pub actor_operator: &'a str,
    /// Subject dataset.
    pub dataset: Option<&'a str>,
    /// Subject release.
    pub release: Option<&'a str>,
    /// Subject digest.
    pub digest: Option<[u8; 32]>,
    /// Counterparty department.
    pub counterparty: Option<&'a str>,
    /// Agreement id.
    pub agreement: Option<&'a str>,
    /// Purpose.
    pub purpose: Option<&'a str>,
    /// Legal basis.
    pub legal_basis: Option<&'a str>,
    /// The canonical bytes of the field list (validated; see [`EntryView::fields`]).
    fields_raw: &'a [u8],
    /// Record count.
    pub record_count: Option<u64>,
    /// Payload digest.
    pub payload_digest: Option<[u8; 32]>,
    /// Previous leaf hash.
    pub prev_hash: [u8; 32],
    /// Detail text.
    pub detail: Option<&'a str>,
    /// Key rotation: (new key, signature).
    pub key_rotation: Option<(&'a [u8], [u8; 64])>,
    /// The discontinuity a `discontinuity` entry states.
    pub discontinuity: Option<Discontinuity>,
}

impl<'a> EntryView<'a> {
    /// Parses canonical entry bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CanonError> {
        let mut r = Reader::new(bytes);
        let pairs = r.map()?;
        let mut last_key = 0u64;
        let (mut log_id, mut seq, mut time, mut kind, mut actor, mut prev) =
            (None, None, None, None, None, None);
        let mut v = EntryView {
            log_id: "",
            seq: 0,
            time_ms: 0,
            kind: EventKind::Genesis,
            actor_dept: "",
            actor_operator: "",
            dataset: None,
            release: None,
            digest: None,
            counterparty: None,
            agreement: None,
            purpose: None,
            legal_basis: None,
            fields_raw: &[],
            record_count: None,
            payload_digest: None,
            prev_hash: [0; 32],
            detail: None,
            key_rotation: None,
            discontinuity: None,
        };
        for _ in 0..pairs {
            let k = r.uint()?;
            if k <= last_key {
                return bad(format!("map key {k} out of order or repeated"));
            }
            last_key = k;
            match k {
                key::LOG_ID => log_id = Some(r.text()?),
                key::SEQ => seq = Some(r.uint()?),
                key::TIME => time = Some(r.uint()?),
                key::KIND => {
                    let t = r.text()?;
                    kind = Some(
                        EventKind::from_label(t)
                            .ok_or_else(|| CanonError(format!("unknown event kind {t:?}")))?,
                    );
                }
                key::ACTOR => {
                    if r.array()? != 2 {
                        return bad("actor must be [dept, operator]");
                    }
                    actor = Some((r.text()?, r.text()?));
                }
                key::SUBJECT => {
                    let n = r.map()?;
                    if n == 0 {
                        return bad("empty subject must be omitted");
                    }
                    let mut last = 0;
                    for _ in 0..n {
                        let sk = r.uint()?;
                        if sk <= last {
                            return bad("subject keys out of order");
                        }
                        last = sk;
                        match sk {
                            1 => v.dataset = Some(r.text()?),
                            2 => v.release = Some(r.text()?),
                            3 => v.digest = Some(r.bytes_n::<32>()?),
                            other => return bad(format!("unknown subject key {other}")),
                        }
                    }
                }
                key::COUNTERPARTY => v.counterparty = Some(r.text()?),
                key::AGREEMENT => v.agreement = Some(r.text()?),
                key::PURPOSE => v.purpose = Some(r.text()?),
                key::LEGAL_BASIS => v.legal_basis = Some(r.text()?),
                key::FIELDS => {
                    // Validated here, decoded on demand: verifiers never need it.
                    let start = r.offset();
                    let n = r.array()?;
                    if n == 0 {
                        return bad("empty field list must be omitted");
                    }
                    for _ in 0..n {
                        if r.array()? != 2 {
                            return bad("field must be [name, class]");
                        }
                        r.text()?;
                        r.text()?;
                    }
                    v.fields_raw = &bytes[start..r.offset()];
                }
                key::RECORD_COUNT => v.record_count = Some(r.uint()?),
                key::PAYLOAD_DIGEST => v.payload_digest = Some(r.bytes_n::<32>()?),
                key::PREV_HASH => prev = Some(r.bytes_n::<32>()?),
                key::DETAIL => v.detail = Some(r.text()?),
                key::KEY_ROTATION => {
                    if r.array()? != 2 {
                        return bad("key rotation must be [new key, signature]");
                    }
                    let new_key = r.bytes()?;
                    if new_key.len() != 32 && new_key.len() != 65 {
                        return bad("a rotated-to key is 32 (Ed25519) or 65 (SM2) bytes");
                    }
                    v.key_rotation = Some((new_key, r.bytes_n::<64>()?));
                }
                key::DISCONTINUITY => {
                    if r.array()? != 3 {
                        return bad("discontinuity must be [restored size, lost to, witnessed]");
                    }
                    let restored_size = r.uint()?;
                    let lost_to = r.uint()?;
                    if lost_to <= restored_size {
                        return bad("a discontinuity loses at least one entry");
                    }
                    let n = r.array()?;
                    if n == 0 {
                        return bad(
                            "a discontinuity names the peers that witnessed the lost range",
                        );
                    }
                    // Grown as the bytes arrive: each element is at least 35 bytes.
                    let mut witnessed = Vec::new();
                    let mut max = 0;
                    for _ in 0..n {
                        if r.array()? != 3 {
                            return bad("a witnessed size must be [dept, size, root]");
                        }
                        let dept = r.text()?.to_string();
                        let size = r.uint()?;
                        let root = r.bytes_n::<32>()?;
                        if size <= restored_size || size > lost_to {
                            return bad("a witnessed size lies outside the lost range");
                        }
                        max = max.max(size);
                        witnessed.push(WitnessedSize { dept, size, root });
                    }
                    if max != lost_to {
                        return bad("the lost range ends at the largest witnessed size");
                    }
                    v.discontinuity = Some(Discontinuity {
                        restored_size,
                        lost_to,
                        witnessed,
                    });
                }
                other => return bad(format!("unknown entry key {other}")),
            }
        }
        if !r.at_end() {
            return bad(format!("{} trailing bytes", bytes.len() - r.offset()));
        }
        let missing = |what: &str| CanonError(format!("entry lacks its {what}"));
        v.log_id = log_id.ok_or_else(|| missing("log id"))?;
        v.seq = seq.ok_or_else(|| missing("sequence number"))?;
        v.time_ms = time.ok_or_else(|| missing("timestamp"))?;
        v.kind = kind.ok_or_else(|| missing("kind"))?;
        (v.actor_dept, v.actor_operator) = actor.ok_or_else(|| missing("actor"))?;
        v.prev_hash = prev.ok_or_else(|| missing("previous hash"))?;
        Ok(v)
    }

    /// `(name, class)` pairs of the fields involved.
    pub fn fields(&self) -> Vec<(&'a str, &'a str)> {
        let mut out = Vec::new();
        if self.fields_raw.is_empty() {
            return out;
        }
        let mut r = Reader::new(self.fields_raw);
        let n = r.array().unwrap_or(0);
        for _ in 0..n {
            let pair = r
                .array()
                .ok()
                .and_then(|_| Some((r.text().ok()?, r.text().ok()?)));
            match pair {
                Some(p) => out.push(p),
                None => break,
            }
        }
        out
    }

    /// An owned [`Entry`].
    pub fn to_entry(&self) -> Result<Entry, CanonError> {
        let own = |o: Option<&str>| o.map(str::to_string);
        Ok(Entry {
            log_id: LogId::parse(self.log_id)
                .ok_or_else(|| CanonError(format!("bad log id {:?}", self.log_id)))?,
            seq: self.seq,
            time_ms: self.time_ms,
            prev_hash: self.prev_hash,
            draft: EntryDraft {
                kind: self.kind,
                actor: Actor {
                    dept: self.actor_dept.to_string(),
                    operator: self.actor_operator.to_string(),
                },
                subject: Subject {
                    dataset: own(self.dataset),
                    release: own(self.release),
                    digest: self.digest.map(Digest),
                },
                counterparty: own(self.counterparty),
                agreement: own(self.agreement),
                purpose: own(self.purpose),
                legal_basis: own(self.legal_basis),
                fields: self
                    .fields()
                    .iter()
                    .map(|(n, c)| FieldRef {
                        name: n.to_string(),
                        class: c.to_string(),
                    })
                    .collect(),
                record_count: self.record_count,
                payload_digest: self.payload_digest.map(Digest),
                detail: own(self.detail),
                key_rotation: self.key_rotation.map(|(new_key, signature)| KeyRotation {
                    new_key: new_key.to_vec(),
                    signature,
                }),
                discontinuity: self.discontinuity.clone(),
            },
        })
    }
}

fn decode_fields(bytes: &[u8]) -> Result<Entry, CanonError> {
    EntryView::parse(bytes)?.to_entry()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn sample(seq: u64) -> Entry {
        let mut d = EntryDraft::new(EventKind::Send, "440000", "steward-li");
        d.subject = Subject {
            dataset: Some("settlement-2026-10".into()),
            release: Some("00ff".into()),
            digest: Some(Digest([7; 32])),
        };
        d.counterparty = Some("100000".into());
        d.agreement = Some("DSA-2026-001".into());
        d.purpose = Some("monthly clearing".into());
        d.legal_basis = Some("PIPL art. 13(1)(3)".into());
        d.fields = vec![FieldRef {
            name: "psn_no".into(),
            class: "personal/direct-identifier/encrypt-for".into(),
        }];
        d.record_count = Some(12345);
        d.payload_digest = Some(Digest([9; 32]));
        d.detail = Some("ok".into());
        Entry {
            log_id: LogId {
                dept: "440000".into(),
                genesis_key: KeyId([1; 8]),
                suite: Suite::Intl,
            },
            seq,
            time_ms: 1_790_000_000_000,
            prev_hash: [3; 32],
            draft: d,
        }
    }

    #[test]
    fn full_entry_round_trips_byte_for_byte() -> Result<(), CanonError> {
        let e = sample(42);
        let bytes = e.encode();
        let back = Entry::decode(&bytes)?;
        assert_eq!(back, e);
        assert_eq!(back.encode(), bytes);
        Ok(())
    }

    #[test]
    fn log_ids_name_their_suite_and_refuse_any_other_suffix() {
        let gm = LogId {
            dept: "440000".into(),
            genesis_key: KeyId([1; 8]),
            suite: Suite::Gm,
        };
        assert_eq!(gm.to_text(), "440000:0101010101010101:gm");
        assert_eq!(LogId::parse(&gm.to_text()), Some(gm.clone()));
        let intl = LogId::parse("440000:0101010101010101");
        assert_eq!(intl.map(|l| l.suite), Some(Suite::Intl));
        for bad in [
            "440000:0101010101010101:sm3",
            "440000:0101010101010101:gm:x",
            ":0101010101010101",
            "440000:01",
        ] {
            assert_eq!(LogId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn decoder_refuses_reordered_keys_and_trailing_bytes() {
        let bytes = sample(1).encode();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Entry::decode(&trailing).is_err());
        // Swap the order of keys 2 (seq) and 3 (time) by building by hand.
        let mut w = Writer::with_capacity(64);
        w.map(7);
        w.uint(1);
        w.text("440000:0101010101010101");
        w.uint(3);
        w.uint(5);
        w.uint(2);
        w.uint(1);
        assert!(Entry::decode(&w.finish()).is_err());
    }

    fn arb_text() -> impl Strategy<Value = String> {
        "[a-z0-9 \u{4e00}-\u{4e10}-]{0,24}"
    }

    proptest! {
        #[test]
        fn any_entry_re_encodes_to_the_same_bytes(
            seq in any::<u64>(), time in any::<u64>(), kind in 0usize..EventKind::ALL.len(),
            op in arb_text(), ds in proptest::option::of(arb_text()), cp in proptest::option::of(arb_text()),
            n in proptest::option::of(any::<u64>()), fields in proptest::collection::vec((arb_text(), arb_text()), 0..4),
            prev in any::<[u8; 32]>(), detail in proptest::option::of(arb_text()),
        ) {
            let mut d = EntryDraft::new(EventKind::ALL[kind], "110000", &op);
            d.subject.dataset = ds;
            d.counterparty = cp;
            d.record_count = n;
            d.fields = fields.into_iter().map(|(name, class)| FieldRef { name, class }).collect();
            d.detail = detail;
            let e = Entry { log_id: LogId { dept: "110000".into(), genesis_key: KeyId([2; 8]), suite: Suite::Intl }, seq, time_ms: time, prev_hash: prev, draft: d };
            let bytes = e.encode();
            let back = Entry::decode(&bytes);
            prop_assert_eq!(back.as_ref().map(Entry::encode).ok(), Some(bytes));
            prop_assert_eq!(back.ok(), Some(e));
        }
    }
}
