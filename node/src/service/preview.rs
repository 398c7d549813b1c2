//! `pdx release preview`: the release engine's output written locally (CSV plus
//! a JSON report) so a steward can inspect a profile before anything leaves.

use super::datasets as dataset;
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::progress::{Progress, Unit};
use pdx_audit::{EventKind, FieldRef, Subject};
use pdx_schemas::RuleViolation;
use pdx_schemas::engine::{Engine, FieldSealer, OutValue, RecordSink};
use pdx_schemas::report::ReleaseReport;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

/// What to preview (`pdx release preview`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreviewSpec {
    /// Dataset.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Agreement (pseudonym keys derive from it; default `preview`).
    pub agreement: Option<String>,
    /// Output CSV.
    pub out: String,
    /// Report JSON.
    pub report: String,
    /// What-if: released columns to treat as quasi-identifiers in addition
    /// to the schema's (`--assume-qi`).
    #[serde(default)]
    pub assume_qi: Vec<String>,
}

/// The k, l and risk the released records would have if more columns were
/// quasi-identifiers (the schema's plus the assumed ones).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhatIf {
    /// Columns assumed quasi-identifiers in addition to the schema's.
    pub assumed_qi: Vec<String>,
    /// The quasi-identifiers of this what-if (schema's and assumed).
    pub quasi_identifiers: Vec<String>,
    /// Classes among the released records.
    pub classes: u64,
    /// The smallest class.
    pub k_achieved: u64,
    /// Classes smaller than the profile's k.
    pub classes_below_k: u64,
    /// Records in those classes.
    pub records_below_k: u64,
    /// Fewest distinct sensitive values in a class (when the profile has l).
    pub l_achieved: Option<u64>,
    /// Prosecutor risk: max over records of 1 / class size.
    pub risk_prosecutor_max: f64,
    /// Prosecutor risk averaged over records.
    pub risk_prosecutor_avg: f64,
}

/// What a preview did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreviewOutcome {
    /// CSV written.
    pub out: String,
    /// Report written.
    pub report_path: String,
    /// The report.
    pub report: ReleaseReport,
    /// The what-if of `--assume-qi`, if asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what_if: Option<WhatIf>,
}

/// Distinct sensitive values counted per what-if class.
const DISTINCT_CAP: usize = 64;

/// Counts the released records' classes over a set of output columns.
struct Classes {
    /// Output positions of the quasi-identifiers.
    qis: Vec<usize>,
    /// Output position of the sensitive field (l), if any.
    sensitive: Option<usize>,
    counts: std::collections::HashMap<Vec<u8>, (u64, std::collections::HashSet<Vec<u8>>)>,
    key: Vec<u8>,
}

impl Classes {
    fn add(&mut self, values: &[OutValue<'_>]) {
        self.key.clear();
        for &q in &self.qis {
            match values.get(q) {
                Some(OutValue::Text(t)) => {
                    self.key.extend_from_slice(&(t.len() as u32).to_be_bytes());
                    self.key.extend_from_slice(t.as_bytes());
                }
                _ => self.key.extend_from_slice(&u32::MAX.to_be_bytes()),
            }
        }
        let entry = self
            .counts
            .entry(self.key.clone())
            .or_insert_with(|| (0, std::collections::HashSet::new()));
        entry.0 += 1;
        if let Some(s) = self.sensitive
            && let Some(OutValue::Text(t)) = values.get(s)
            && entry.1.len() < DISTINCT_CAP
        {
            entry.1.insert(t.as_bytes().to_vec());
        }
    }

    /// The same columns, nothing counted.
    fn empty_like(&self) -> Classes {
        Classes {
            qis: self.qis.clone(),
            sensitive: self.sensitive,
            counts: std::collections::HashMap::new(),
            key: Vec::new(),
        }
    }

    /// Adds the counts of `other` (same columns): sizes add, distinct
    /// sensitive values unite up to the same cap as [`Classes::add`].
    fn merge(&mut self, other: Classes) {
        for (key, (count, values)) in other.counts {
            let entry = self
                .counts
                .entry(key)
                .or_insert_with(|| (0, std::collections::HashSet::new()));
            entry.0 += count;
            for v in values {
                if entry.1.len() >= DISTINCT_CAP {
                    break;
                }
                entry.1.insert(v);
            }
        }
    }

    fn what_if(&self, assumed: Vec<String>, names: Vec<String>, k: u32) -> WhatIf {
        let records: u64 = self.counts.values().map(|(n, _)| *n).sum();
        let k = u64::from(k);
        let below: Vec<u64> = self
            .counts
            .values()
            .map(|(n, _)| *n)
            .filter(|&n| n < k)
            .collect();
        let k_achieved = self.counts.values().map(|(n, _)| *n).min().unwrap_or(0);
        WhatIf {
            assumed_qi: assumed,
            quasi_identifiers: names,
            classes: self.counts.len() as u64,
            k_achieved,
            classes_below_k: below.len() as u64,
            records_below_k: below.iter().sum(),
            l_achieved: self.sensitive.map(|_| {
                self.counts
                    .values()
                    .map(|(_, s)| s.len() as u64)
                    .min()
                    .unwrap_or(0)
            }),
            risk_prosecutor_max: if k_achieved > 0 {
                1.0 / k_achieved as f64
            } else {
                0.0
            },
            risk_prosecutor_avg: if records > 0 {
                self.counts.len() as f64 / records as f64
            } else {
                0.0
            },
        }
    }
}

struct NoSeal;
impl FieldSealer for NoSeal {
    fn seal(
        &mut self,
        _: usize,
        _: u64,
        _: u32,
        _: &str,
        _: &[u8],
        _: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// One block's records as CSV rows (and their what-if classes).
struct CsvSink<'a> {
    w: csv::Writer<Vec<u8>>,
    recipients: &'a [String],
    row: Vec<String>,
    what_if: Option<Classes>,
}

impl RecordSink for CsvSink<'_> {
    fn record(&mut self, _index: u64, values: &[OutValue<'_>]) -> std::result::Result<(), String> {
        if let Some(c) = &mut self.what_if {
            c.add(values);
        }
        self.row.clear();
        for v in values {
            self.row.push(match v {
                OutValue::Null => String::new(),
                OutValue::Text(t) => t.to_string(),
                OutValue::Sealed { recipient, .. } => {
                    format!(
                        "[sealed for {}]",
                        self.recipients
                            .get(*recipient)
                            .map(String::as_str)
                            .unwrap_or("?")
                    )
                }
            });
        }
        self.w.write_record(&self.row).map_err(|e| e.to_string())
    }
}

fn create(path: &str) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(NodeError::io(path))
}

fn write_report(path: &str, report: &ReleaseReport, what_if: Option<&WhatIf>) -> Result<()> {
    let mut value = serde_json::to_value(report).map_err(|e| NodeError::Invalid(e.to_string()))?;
    if let (Some(w), Some(obj)) = (what_if, value.as_object_mut()) {
        obj.insert(
            "what_if".into(),
            serde_json::to_value(w).map_err(|e| NodeError::Invalid(e.to_string()))?,
        );
    }
    let text = serde_json::to_vec_pretty(&value).map_err(|e| NodeError::Invalid(e.to_string()))?;
    std::io::Write::write_all(&mut create(path)?, &text).map_err(NodeError::io(path))
}

/// Runs the release engine into local files (audited as an export).
pub fn preview(
    node: &Node,
    spec: &PreviewSpec,
    operator: &str,
    progress: &dyn Progress,
) -> Result<PreviewOutcome> {
    let (dataset_id, profile_name, out, report_path) = (
        spec.dataset.as_str(),
        spec.profile.as_str(),
        spec.out.as_str(),
        spec.report.as_str(),
    );
    let meta = dataset::meta(node, dataset_id)?;
    let schema = meta.schema(node.suite)?;
    let profile = schema.profile(profile_name)?;
    let agreement = spec.agreement.as_deref().unwrap_or("preview");
    let master = pdx_crypto::pseudonym::PseudonymMaster::from_bytes(
        node.suite,
        *node.keys()?.pseudonym.as_bytes(),
    );
    let engine = Engine::new(&schema, profile, agreement, &master);
    progress.stage(
        "counting equivalence classes",
        Some(meta.rows),
        Unit::Records,
    );
    let range = (0, meta.rows);
    let counted = super::deid::count_classes(node, &meta, range, &engine, progress)?;
    progress.done();
    let decision = match counted.finish() {
        Ok(d) => d,
        Err(RuleViolation::PrivacyModel { report, .. }) => {
            // Refused, but the steward gets the report to see why.
            write_report(report_path, &report, None)?;
            return Err(NodeError::Refused(format!(
                "profile {profile_name} cannot reach k={} (l={}) within {:.1}% suppression: {} of {} records would be suppressed; report written to {report_path}",
                report.k_required,
                report.l_required,
                100.0 * report.max_suppression,
                report.records_suppressed,
                report.records_in
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let fields = engine.output_fields();
    let mut file = std::io::BufWriter::with_capacity(1 << 20, create(out)?);
    let mut header = csv::Writer::from_writer(Vec::new());
    header
        .write_record(fields.iter().map(|f| f.name.as_str()))
        .map_err(|e| NodeError::Invalid(format!("{out}: {e}")))?;
    let header = header
        .into_inner()
        .map_err(|e| NodeError::Invalid(format!("{out}: {e}")))?;
    file.write_all(&header).map_err(NodeError::io(out))?;
    let what_if = if spec.assume_qi.is_empty() {
        None
    } else {
        let position = |name: &str| {
            fields.iter().position(|f| f.name == name).ok_or_else(|| {
                NodeError::Invalid(format!(
                    "--assume-qi {name}: not a released column of profile {profile_name} (released: {})",
                    fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                ))
            })
        };
        let mut names = decision.report.quasi_identifiers.clone();
        for a in &spec.assume_qi {
            if !names.contains(a) {
                names.push(a.clone());
            }
        }
        let qis = names
            .iter()
            .map(|n| position(n))
            .collect::<Result<Vec<_>>>()?;
        let sensitive = match &decision.report.l_field {
            Some(l) => Some(position(l)?),
            None => None,
        };
        Some((
            names,
            Classes {
                qis,
                sensitive,
                counts: std::collections::HashMap::new(),
                key: Vec::new(),
            },
        ))
    };
    let (what_if_names, what_if) = match what_if {
        Some((n, c)) => (n, Some(c)),
        None => (Vec::new(), None),
    };
    progress.stage(
        "writing the de-identified preview",
        Some(decision.report.records_out),
        Unit::Records,
    );
    let new_sink = || CsvSink {
        w: csv::Writer::from_writer(Vec::with_capacity(1 << 18)),
        recipients: &decision.recipients,
        row: Vec::new(),
        what_if: what_if.as_ref().map(Classes::empty_like),
    };
    let error = |e: pdx_schemas::engine::EmitError| match e {
        pdx_schemas::engine::EmitError::Rule(v) => NodeError::Rule(v),
        other => NodeError::Invalid(format!("{out}: {other}")),
    };
    let how = super::deid::Emission {
        sink: &new_sink,
        sealer: &|| NoSeal,
        error: &error,
    };
    let mut classes = what_if.as_ref().map(Classes::empty_like);
    super::deid::emit(
        node,
        &meta,
        range,
        (&engine, &decision),
        how,
        progress,
        |block| {
            let bytes = block
                .w
                .into_inner()
                .map_err(|e| NodeError::Invalid(format!("{out}: {e}")))?;
            file.write_all(&bytes).map_err(NodeError::io(out))?;
            if let (Some(all), Some(these)) = (&mut classes, block.what_if) {
                all.merge(these);
            }
            Ok(())
        },
    )?;
    file.flush().map_err(NodeError::io(out))?;
    progress.done();
    let what_if = classes.as_ref().map(|c| {
        c.what_if(
            spec.assume_qi.clone(),
            what_if_names.clone(),
            decision.report.k_required,
        )
    });
    write_report(report_path, &decision.report, what_if.as_ref())?;
    let mut d = node.draft(EventKind::Export, operator);
    d.subject = Subject {
        dataset: Some(meta.id.clone()),
        release: None,
        digest: Some(meta.digest),
    };
    d.agreement = Some(agreement.to_string());
    d.purpose = Some("release preview".into());
    d.fields = fields
        .iter()
        .map(|f| FieldRef {
            name: f.name.clone(),
            class: format!("{}/{}", f.classification, f.treatment),
        })
        .collect();
    d.record_count = Some(decision.report.records_out);
    d.detail = Some(format!(
        "release preview of profile {profile_name} written to {out} (report {report_path})"
    ));
    node.log(d)?;
    Ok(PreviewOutcome {
        out: out.to_string(),
        report_path: report_path.to_string(),
        report: decision.report,
        what_if,
    })
}
