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

struct CsvSink<'a> {
    w: csv::Writer<std::io::BufWriter<std::fs::File>>,
    recipients: &'a [String],
    row: Vec<String>,
}

impl RecordSink for CsvSink<'_> {
    fn record(&mut self, _index: u64, values: &[OutValue<'_>]) -> std::result::Result<(), String> {
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

fn write_report(path: &str, report: &ReleaseReport) -> Result<()> {
    let text = serde_json::to_vec_pretty(report).map_err(|e| NodeError::Invalid(e.to_string()))?;
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
    let schema = meta.schema()?;
    let profile = schema.profile(profile_name)?;
    let agreement = spec.agreement.as_deref().unwrap_or("preview");
    let master =
        pdx_crypto::pseudonym::PseudonymMaster::from_bytes(*node.keys()?.pseudonym.as_bytes());
    let engine = Engine::new(&schema, profile, agreement, &master);
    progress.stage(
        "counting equivalence classes",
        Some(meta.rows),
        Unit::Records,
    );
    let mut counter = engine.counter();
    dataset::for_each_row(node, &meta, |row| Ok(counter.add(row)?))?;
    progress.done();
    let decision = match counter.finish() {
        Ok(d) => d,
        Err(RuleViolation::PrivacyModel { report, .. }) => {
            // Refused, but the steward gets the report to see why.
            write_report(report_path, &report)?;
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
    let mut w = csv::Writer::from_writer(std::io::BufWriter::with_capacity(1 << 20, create(out)?));
    w.write_record(fields.iter().map(|f| f.name.as_str()))
        .map_err(|e| NodeError::Invalid(format!("{out}: {e}")))?;
    let mut sink = CsvSink {
        w,
        recipients: &decision.recipients,
        row: Vec::new(),
    };
    progress.stage(
        "writing the de-identified preview",
        Some(decision.report.records_out),
        Unit::Records,
    );
    let mut emitter = engine.emitter(&decision);
    let mut n = 0u64;
    dataset::for_each_row(node, &meta, |row| {
        emitter
            .emit(row, &mut NoSeal, &mut sink)
            .map_err(|e| match e {
                pdx_schemas::engine::EmitError::Rule(v) => NodeError::Rule(v),
                other => NodeError::Invalid(format!("{out}: {other}")),
            })?;
        n += 1;
        if n.is_multiple_of(16384) {
            progress.set(emitter.emitted());
        }
        Ok(())
    })?;
    sink.w.flush().map_err(NodeError::io(out))?;
    progress.done();
    write_report(report_path, &decision.report)?;
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
    })
}
