//! The de-identification engine: two streaming passes over a dataset.
//!
//! Pass 1 ([`ClassCounter`]) forms equivalence classes over the released
//! quasi-identifiers *after* their treatment, counting records and distinct
//! values of the l-diversity field per class (and the recipients of sealed
//! fields). [`ClassCounter::finish`] suppresses every class below k or l and
//! refuses the release if that exceeds the suppression budget. Pass 2
//! ([`Emitter`]) applies the treatments and hands each surviving record to a
//! sink. Memory grows with the number of classes, never with the records.
//!
//! Both passes split: counters of consecutive runs of records
//! ([`Engine::counter_at`]) merge into the counter of the whole
//! ([`ClassCounter::merge`]), and an emitter can start at any record
//! ([`Engine::emitter_at`]) once the records released before it are counted
//! ([`Emitter::check`]). The node runs blocks of a dataset on all cores this
//! way; the output is the same bytes as one sequential run.

use crate::error::RuleViolation;
use crate::generalize;
use crate::report::{FieldReport, ReleaseReport};
use crate::schema::{DeptMap, IdentifierClass, Profile, RecipientRule, Schema, Treatment};
use pdx_crypto::pseudonym::{PseudonymKey, PseudonymMaster};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Distinct sensitive values are counted per class up to this many (enough for any sane l).
const DISTINCT_CAP: usize = 16;

/// Seals values for recipients; implemented with `pdx-crypto` envelopes by the node.
pub trait FieldSealer {
    /// Appends `value` sealed for recipient number `recipient` to `out`.
    fn seal(
        &mut self,
        recipient: usize,
        record: u64,
        field_index: u32,
        field_name: &str,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String>;
}

/// One released value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutValue<'a> {
    /// Null.
    Null,
    /// Clear text.
    Text(&'a str),
    /// Sealed for recipient number `recipient` of the release.
    Sealed {
        /// Index into [`Decision::recipients`].
        recipient: usize,
        /// Ciphertext and tag.
        ciphertext: &'a [u8],
    },
}

/// Receives released records.
pub trait RecordSink {
    /// One record; `index` is its position in the release (0, 1, 2...).
    fn record(&mut self, index: u64, values: &[OutValue<'_>]) -> Result<(), String>;
}

/// Why emitting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// A rule refused a value.
    #[error(transparent)]
    Rule(#[from] RuleViolation),
    /// The sealer failed.
    #[error("sealing failed: {0}")]
    Seal(String),
    /// The sink failed.
    #[error("{0}")]
    Sink(String),
}

/// A field of the released records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputField {
    /// Name.
    pub name: String,
    /// Index in the schema.
    pub schema_index: usize,
    /// Treatment label.
    pub treatment: String,
    /// Whether values are sealed.
    pub sealed: bool,
    /// `pi/identifier` classification.
    pub classification: String,
}

/// A profile bound to one agreement, ready to run.
pub struct Engine<'s> {
    schema: &'s Schema,
    profile: &'s Profile,
    agreement: String,
    keys: Vec<Option<PseudonymKey>>,
    outputs: Vec<usize>,
    qis: Vec<usize>,
    l: Option<(usize, u32)>,
    recipient_rules: Vec<(usize, RecipientRule)>,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dataset", &self.schema.dataset.id)
            .field("profile", &self.profile.name)
            .finish()
    }
}

impl<'s> Engine<'s> {
    /// Binds `profile` of `schema` to `agreement` (pseudonym keys derive from it).
    pub fn new(
        schema: &'s Schema,
        profile: &'s Profile,
        agreement: &str,
        master: &PseudonymMaster,
    ) -> Self {
        let keys = schema
            .fields
            .iter()
            .zip(&profile.treatments)
            .map(|(f, t)| {
                matches!(t, Treatment::Pseudonymize).then(|| master.key_for(agreement, &f.name))
            })
            .collect();
        let outputs = (0..schema.fields.len())
            .filter(|&i| profile.treatments[i].is_output())
            .collect();
        let qis = (0..schema.fields.len())
            .filter(|&i| {
                schema.fields[i].identifier == IdentifierClass::QuasiIdentifier
                    && profile.treatments[i].is_output()
            })
            .collect();
        let recipient_rules = profile
            .treatments
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match t {
                Treatment::EncryptFor(r) => Some((i, r.clone())),
                _ => None,
            })
            .collect();
        Engine {
            schema,
            profile,
            agreement: agreement.to_string(),
            keys,
            outputs,
            qis,
            l: profile.l.as_ref().map(|l| (l.field, l.min)),
            recipient_rules,
        }
    }

    /// The released fields, in order.
    pub fn output_fields(&self) -> Vec<OutputField> {
        self.outputs
            .iter()
            .map(|&i| OutputField {
                name: self.schema.fields[i].name.clone(),
                schema_index: i,
                treatment: self.profile.treatments[i].label(),
                sealed: matches!(self.profile.treatments[i], Treatment::EncryptFor(_)),
                classification: self.schema.fields[i].classification(),
            })
            .collect()
    }

    /// Starts pass 1.
    pub fn counter(&self) -> ClassCounter<'_, 's> {
        self.counter_at(0)
    }

    /// Starts pass 1 for a run of records whose first is record `first` of
    /// the release (errors name records by that number).
    pub fn counter_at(&self, first: u64) -> ClassCounter<'_, 's> {
        ClassCounter {
            engine: self,
            classes: HashMap::new(),
            all_recipients: Vec::new(),
            first,
            records: 0,
            depts: Vec::new(),
            dept_index: HashMap::new(),
            scratch: String::new(),
        }
    }

    fn generalize_err(
        &self,
        field: usize,
        record: u64,
        value: &str,
        reason: String,
    ) -> RuleViolation {
        RuleViolation::Generalize {
            dataset: self.schema.dataset.id.clone(),
            profile: self.profile.name.clone(),
            field: self.schema.fields[field].name.clone(),
            record,
            value: crate::import::shown_value(value, self.schema.fields[field].pi),
            reason,
        }
    }

    /// Writes the treated clear value of field `i` into `out` (class keys and output).
    fn treat_into(
        &self,
        i: usize,
        v: &str,
        record: u64,
        out: &mut String,
    ) -> Result<(), RuleViolation> {
        out.clear();
        match &self.profile.treatments[i] {
            Treatment::Generalize(g) => {
                generalize::apply(g, v, &self.schema.fields[i].hierarchy, out)
                    .map_err(|reason| self.generalize_err(i, record, v, reason))
            }
            Treatment::Suppress { mask } => {
                out.push_str(mask);
                Ok(())
            }
            Treatment::Pseudonymize => {
                if let Some(k) = &self.keys[i] {
                    k.pseudonymize(v.as_bytes(), out);
                }
                Ok(())
            }
            // Keep, and sealed values (their recipient reads them in clear).
            _ => {
                out.push_str(v);
                Ok(())
            }
        }
    }

    fn class_key(
        &self,
        row: &[Option<&str>],
        record: u64,
        scratch: &mut String,
    ) -> Result<[u8; 16], RuleViolation> {
        let mut h = blake3::Hasher::new();
        for &i in &self.qis {
            match row.get(i).copied().flatten() {
                None => {
                    h.update(&[0]);
                }
                Some(v) => {
                    self.treat_into(i, v, record, scratch)?;
                    h.update(&[1]);
                    h.update(&(scratch.len() as u64).to_le_bytes());
                    h.update(scratch.as_bytes());
                }
            }
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Ok(key)
    }

    fn sensitive_hash(
        &self,
        row: &[Option<&str>],
        record: u64,
        scratch: &mut String,
    ) -> Result<Option<u64>, RuleViolation> {
        let Some((i, _)) = self.l else {
            return Ok(None);
        };
        let h = match row.get(i).copied().flatten() {
            None => 0,
            Some(v) => {
                self.treat_into(i, v, record, scratch)?;
                let d = blake3::hash(scratch.as_bytes());
                let b = d.as_bytes();
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) | 1
            }
        };
        Ok(Some(h))
    }

    /// Department each recipient rule names for this row.
    fn recipient_of(
        &self,
        rule: &RecipientRule,
        field: usize,
        row: &[Option<&str>],
        record: u64,
    ) -> Result<String, RuleViolation> {
        let bad = |reason: String| RuleViolation::BadRecipient {
            dataset: self.schema.dataset.id.clone(),
            profile: self.profile.name.clone(),
            field: self.schema.fields[field].name.clone(),
            record,
            reason,
        };
        match rule {
            RecipientRule::Dept(d) => Ok(d.clone()),
            RecipientRule::FromField { field: src, map } => {
                let src_name = &self.schema.fields[*src].name;
                let v = row
                    .get(*src)
                    .copied()
                    .flatten()
                    .ok_or_else(|| bad(format!("recipient field {src_name} is empty")))?;
                match map {
                    DeptMap::Identity => {
                        if crate::schema::valid_id(v) {
                            Ok(v.to_string())
                        } else {
                            Err(bad(format!(
                                "{src_name} value {:?} is not a department code",
                                crate::import::shown_value(v, self.schema.fields[*src].pi)
                            )))
                        }
                    }
                    DeptMap::AdmdvsProvince => {
                        let b = v.as_bytes();
                        if b.len() == 6 && b.iter().all(u8::is_ascii_digit) {
                            Ok(format!("{}0000", &v[..2]))
                        } else {
                            Err(bad(format!(
                                "{src_name} value {:?} is not a 6-digit admdvs code",
                                crate::import::shown_value(v, self.schema.fields[*src].pi)
                            )))
                        }
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct ClassStats {
    count: u64,
    distinct: Vec<u64>,
    recipients: Vec<u16>,
}

/// Pass 1: equivalence classes.
pub struct ClassCounter<'e, 's> {
    engine: &'e Engine<'s>,
    classes: HashMap<[u8; 16], ClassStats>,
    /// Recipients seen when no privacy model needs classes (k = 1, no l).
    all_recipients: Vec<u16>,
    /// Record number of the first record counted here.
    first: u64,
    records: u64,
    depts: Vec<String>,
    dept_index: HashMap<String, u16>,
    scratch: String,
}

impl std::fmt::Debug for ClassCounter<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassCounter")
            .field("records", &self.records)
            .field("classes", &self.classes.len())
            .finish()
    }
}

impl ClassCounter<'_, '_> {
    /// Whether classes matter: with k = 1 and no l nothing is ever suppressed,
    /// so no class table is kept and memory stays flat whatever the size.
    fn tracks_classes(&self) -> bool {
        self.engine.profile.k > 1 || self.engine.l.is_some()
    }

    /// Counts one source record.
    pub fn add(&mut self, row: &[Option<&str>]) -> Result<(), RuleViolation> {
        let e = self.engine;
        let record = self.first.saturating_add(self.records);
        let mut rec = Vec::new();
        for (field, rule) in &e.recipient_rules {
            let dept = e.recipient_of(rule, *field, row, record)?;
            rec.push(self.dept_number(dept, *field, record)?);
        }
        if !self.tracks_classes() {
            // Still validate the generalisations so a bad value fails here too.
            for &i in &e.qis {
                if let Some(v) = row.get(i).copied().flatten() {
                    e.treat_into(i, v, record, &mut self.scratch)?;
                }
            }
            for r in rec {
                if !self.all_recipients.contains(&r) {
                    self.all_recipients.push(r);
                }
            }
            self.records += 1;
            return Ok(());
        }
        let key = e.class_key(row, record, &mut self.scratch)?;
        let sensitive = e.sensitive_hash(row, record, &mut self.scratch)?;
        let stats = self.classes.entry(key).or_default();
        stats.count += 1;
        if let Some(s) = sensitive
            && stats.distinct.len() < DISTINCT_CAP
            && !stats.distinct.contains(&s)
        {
            stats.distinct.push(s);
        }
        for r in rec {
            if !stats.recipients.contains(&r) {
                stats.recipients.push(r);
            }
        }
        self.records += 1;
        Ok(())
    }

    /// The number of recipient department `dept` in this counter.
    fn dept_number(
        &mut self,
        dept: String,
        field: usize,
        record: u64,
    ) -> Result<u16, RuleViolation> {
        if let Some(&i) = self.dept_index.get(&dept) {
            return Ok(i);
        }
        let e = self.engine;
        let next = u16::try_from(self.depts.len()).map_err(|_| RuleViolation::BadRecipient {
            dataset: e.schema.dataset.id.clone(),
            profile: e.profile.name.clone(),
            field: e.schema.fields[field].name.clone(),
            record,
            reason: "more than 65535 distinct recipients".into(),
        })?;
        self.dept_index.insert(dept.clone(), next);
        self.depts.push(dept);
        Ok(next)
    }

    /// Adds the counts of `later`, the counter of the records that follow
    /// this counter's (same engine). The result is what one counter over
    /// both runs would hold: class sizes add, distinct sensitive values and
    /// recipients unite (distinct values still capped).
    pub fn merge(&mut self, later: ClassCounter<'_, '_>) -> Result<(), RuleViolation> {
        // Recipients are numbered by first sight; renumber `later`'s.
        let field = self.engine.recipient_rules.first().map_or(0, |(f, _)| *f);
        let record = later.first;
        let mut renumber = Vec::with_capacity(later.depts.len());
        for dept in later.depts {
            renumber.push(self.dept_number(dept, field, record)?);
        }
        let map = |r: u16| renumber[usize::from(r)];
        for r in later.all_recipients {
            let r = map(r);
            if !self.all_recipients.contains(&r) {
                self.all_recipients.push(r);
            }
        }
        for (key, theirs) in later.classes {
            let ours = self.classes.entry(key).or_default();
            ours.count += theirs.count;
            for s in theirs.distinct {
                if ours.distinct.len() < DISTINCT_CAP && !ours.distinct.contains(&s) {
                    ours.distinct.push(s);
                }
            }
            for r in theirs.recipients {
                let r = map(r);
                if !ours.recipients.contains(&r) {
                    ours.recipients.push(r);
                }
            }
        }
        self.records += later.records;
        Ok(())
    }

    /// Records counted so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Decides which classes are suppressed; refuses if over budget.
    pub fn finish(self) -> Result<Decision, RuleViolation> {
        let e = self.engine;
        let p = e.profile;
        let l_min = e.l.map(|(_, l)| l).unwrap_or(0);
        let mut suppressed = HashSet::new();
        let mut suppressed_records = 0u64;
        let mut k_achieved = u64::MAX;
        let mut l_achieved = u64::MAX;
        let mut released_classes = 0u64;
        let mut recipients_used = vec![false; self.depts.len()];
        for &r in &self.all_recipients {
            recipients_used[usize::from(r)] = true;
        }
        if !self.tracks_classes() && self.records > 0 {
            // No model: one notional class; every record may be unique.
            k_achieved = 1;
            l_achieved = 0;
        }
        for (key, s) in &self.classes {
            let l_ok = e.l.is_none() || s.distinct.len() as u64 >= u64::from(l_min);
            if s.count < u64::from(p.k) || !l_ok {
                suppressed.insert(*key);
                suppressed_records += s.count;
            } else {
                released_classes += 1;
                k_achieved = k_achieved.min(s.count);
                l_achieved = l_achieved.min(s.distinct.len() as u64);
                for &r in &s.recipients {
                    recipients_used[usize::from(r)] = true;
                }
            }
        }
        let records_out = self.records - suppressed_records;
        if released_classes == 0 && self.tracks_classes() {
            k_achieved = 0;
            l_achieved = 0;
        }
        let mut recipients: Vec<String> = self
            .depts
            .iter()
            .zip(&recipients_used)
            .filter(|(_, used)| **used)
            .map(|(d, _)| d.clone())
            .collect();
        recipients.sort();
        let report = ReleaseReport {
            dataset: e.schema.dataset.id.clone(),
            profile: p.name.clone(),
            agreement: e.agreement.clone(),
            records_in: self.records,
            records_out,
            records_suppressed: suppressed_records,
            k_required: p.k,
            k_achieved,
            l_required: l_min,
            l_field: e.l.map(|(i, _)| e.schema.fields[i].name.clone()),
            l_achieved: if e.l.is_some() { l_achieved } else { 0 },
            quasi_identifiers: e
                .qis
                .iter()
                .map(|&i| e.schema.fields[i].name.clone())
                .collect(),
            classes_total: self.classes.len() as u64,
            classes_released: released_classes,
            smallest_class: k_achieved,
            risk_prosecutor_max: if k_achieved > 0 {
                1.0 / k_achieved as f64
            } else {
                0.0
            },
            // Without a model every record may be unique: report the worst case.
            risk_prosecutor_avg: if records_out == 0 {
                0.0
            } else if self.tracks_classes() {
                released_classes as f64 / records_out as f64
            } else {
                1.0
            },
            fields: e
                .schema
                .fields
                .iter()
                .zip(&p.treatments)
                .map(|(f, t)| FieldReport {
                    name: f.name.clone(),
                    treatment: t.label(),
                    classification: f.classification(),
                    released: t.is_output(),
                })
                .collect(),
            recipients: recipients.clone(),
            max_suppression: p.max_suppression,
        };
        let budget = (p.max_suppression * self.records as f64).floor() as u64;
        if suppressed_records > budget {
            let rate = if self.records > 0 {
                100.0 * suppressed_records as f64 / self.records as f64
            } else {
                0.0
            };
            return Err(RuleViolation::PrivacyModel {
                dataset: report.dataset.clone(),
                profile: report.profile.clone(),
                k: p.k,
                l: e.l
                    .map(|(i, l)| format!(", l={l} on {}", e.schema.fields[i].name))
                    .unwrap_or_default(),
                suppressed: suppressed_records,
                total: self.records,
                rate,
                budget: 100.0 * p.max_suppression,
                report: Box::new(report),
            });
        }
        let recipient_index = recipients
            .iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), i))
            .collect();
        Ok(Decision {
            suppressed,
            recipients,
            recipient_index,
            report,
        })
    }
}

impl Decision {
    /// Whether no class is suppressed (every record is released).
    pub fn suppresses_nothing(&self) -> bool {
        self.suppressed.is_empty()
    }
}

/// The outcome of pass 1.
#[derive(Debug, Clone)]
pub struct Decision {
    suppressed: HashSet<[u8; 16]>,
    /// Recipient departments of sealed fields, sorted; `OutValue::Sealed` indexes this.
    pub recipients: Vec<String>,
    recipient_index: BTreeMap<String, usize>,
    /// The report.
    pub report: ReleaseReport,
}

/// Pass 2: applies treatments and emits records.
pub struct Emitter<'e, 's> {
    engine: &'e Engine<'s>,
    decision: &'e Decision,
    source_index: u64,
    next_index: u64,
    texts: Vec<String>,
    sealed: Vec<Vec<u8>>,
    values: Vec<(u8, usize)>,
    scratch: String,
}

impl std::fmt::Debug for Emitter<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("emitted", &self.next_index)
            .finish()
    }
}

impl<'s> Engine<'s> {
    /// Starts pass 2 with the decision of pass 1.
    pub fn emitter<'e>(&'e self, decision: &'e Decision) -> Emitter<'e, 's> {
        self.emitter_at(decision, 0, 0)
    }

    /// Starts pass 2 at source record `source` of the release, which becomes
    /// released record `index` if it is released (`index` is the number of
    /// records released before it: [`Emitter::check`] counts them).
    pub fn emitter_at<'e>(
        &'e self,
        decision: &'e Decision,
        source: u64,
        index: u64,
    ) -> Emitter<'e, 's> {
        let n = self.outputs.len();
        Emitter {
            engine: self,
            decision,
            source_index: source,
            next_index: index,
            texts: vec![String::new(); n],
            sealed: vec![Vec::new(); n],
            values: Vec::with_capacity(n),
            scratch: String::new(),
        }
    }
}

const NULL: u8 = 0;
const RAW: u8 = 1;
const TEXT: u8 = 2;
const SEALED: u8 = 3;

impl Emitter<'_, '_> {
    /// Processes the next source record (same order as pass 1). Returns whether
    /// it was released.
    pub fn emit(
        &mut self,
        row: &[Option<&str>],
        sealer: &mut dyn FieldSealer,
        sink: &mut dyn RecordSink,
    ) -> Result<bool, EmitError> {
        let source = self.source_index;
        if !self.check(row)? {
            return Ok(false);
        }
        self.write(source, row, sealer, sink)?;
        Ok(true)
    }

    /// Whether the next source record is released; moves past it without
    /// emitting anything. With [`Decision::suppresses_nothing`] every record
    /// is, and this need not be asked.
    pub fn check(&mut self, row: &[Option<&str>]) -> Result<bool, RuleViolation> {
        let source = self.source_index;
        self.source_index += 1;
        if self.decision.suppresses_nothing() {
            return Ok(true);
        }
        let key = self.engine.class_key(row, source, &mut self.scratch)?;
        Ok(!self.decision.suppressed.contains(&key))
    }

    /// Moves past the next source record, known to be suppressed
    /// ([`Emitter::check`] said so).
    pub fn skip(&mut self) {
        self.source_index += 1;
    }

    /// Emits the next source record, known to be released
    /// ([`Emitter::check`] said so, or the decision suppresses nothing).
    pub fn emit_released(
        &mut self,
        row: &[Option<&str>],
        sealer: &mut dyn FieldSealer,
        sink: &mut dyn RecordSink,
    ) -> Result<(), EmitError> {
        let source = self.source_index;
        self.source_index += 1;
        self.write(source, row, sealer, sink)
    }

    /// Treats, seals and hands on source record `source` as the next
    /// released record.
    fn write(
        &mut self,
        source: u64,
        row: &[Option<&str>],
        sealer: &mut dyn FieldSealer,
        sink: &mut dyn RecordSink,
    ) -> Result<(), EmitError> {
        let e = self.engine;
        let index = self.next_index;
        self.values.clear();
        for (out_pos, &i) in e.outputs.iter().enumerate() {
            let Some(v) = row.get(i).copied().flatten() else {
                self.values.push((NULL, 0));
                continue;
            };
            match &e.profile.treatments[i] {
                Treatment::Keep => self.values.push((RAW, i)),
                Treatment::EncryptFor(rule) => {
                    let dept = e.recipient_of(rule, i, row, source)?;
                    let recipient = *self.decision.recipient_index.get(&dept).ok_or_else(|| {
                        EmitError::Seal(format!("recipient {dept} was not seen in pass 1 (dataset changed between passes?)"))
                    })?;
                    let buf = &mut self.sealed[out_pos];
                    buf.clear();
                    let field_index = u32::try_from(out_pos)
                        .map_err(|_| EmitError::Seal("too many fields".into()))?;
                    sealer
                        .seal(
                            recipient,
                            index,
                            field_index,
                            &e.schema.fields[i].name,
                            v.as_bytes(),
                            buf,
                        )
                        .map_err(EmitError::Seal)?;
                    self.values.push((SEALED, recipient));
                }
                _ => {
                    e.treat_into(i, v, source, &mut self.texts[out_pos])?;
                    self.values.push((TEXT, 0));
                }
            }
        }
        let values: Vec<OutValue<'_>> = self
            .values
            .iter()
            .enumerate()
            .map(|(pos, &(kind, x))| match kind {
                RAW => OutValue::Text(row.get(x).copied().flatten().unwrap_or_default()),
                TEXT => OutValue::Text(&self.texts[pos]),
                SEALED => OutValue::Sealed {
                    recipient: x,
                    ciphertext: &self.sealed[pos],
                },
                _ => OutValue::Null,
            })
            .collect();
        sink.record(index, &values).map_err(EmitError::Sink)?;
        self.next_index += 1;
        Ok(())
    }

    /// Records emitted so far.
    pub fn emitted(&self) -> u64 {
        self.next_index
    }
}
