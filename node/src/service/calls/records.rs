//! Outcomes become records: a consumer's `ok` calls of a service appended to
//! one of its datasets (`pdx service record`), so a treating province's
//! month of settlements is filled by its own calls.
//!
//! Each `ok` call of a recorded service queues one row (sealed at rest) in
//! the same synced batch as the call's `call` entry, with a marker naming
//! the call id the response is bound to: a replayed answer to a retry never
//! queues the same settlement twice. A flush (before every release of the
//! dataset, at `pdx service record --flush`, and every minute while the node
//! serves) appends the queued rows through the import path (same schema
//! validation, rejects, `import` entry) and deletes them in the commit batch:
//! a crash leaves them queued or appended, never both, never neither.
//!
//! Keys (family `calls`): `R` service id → [`RecordRule`]; `q` dataset
//! `0x00` u64be(time ms) call id(16) → sealed row; `d` call id(16) →
//! u64be(time ms) marker, swept after `services.idempotency_days`.

use super::{Values, service};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::progress::Progress;
use crate::service::datasets::{self, ImportInput, ImportOutcome, ImportSpec};
use crate::store::CF_CALLS;
use pdx_audit::store::{StoreOp, now_ms};
use pdx_audit::{EventKind, Subject};
use pdx_crypto::wire::{from_cbor, to_cbor};
use pdx_schemas::Schema;
use pdx_schemas::import::{Encoding, OnError};
use pdx_schemas::service::ServiceDef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// `calls`: prefix of the recording rules.
pub const RULE_PREFIX: &[u8] = b"R";
/// `calls`: prefix of the queued outcome rows.
pub const QUEUE_PREFIX: &[u8] = b"q";
/// `calls`: prefix of the markers of recorded calls.
pub const MARKER_PREFIX: &[u8] = b"d";
/// Most rows one flush appends (the rest wait for the next).
pub const MAX_FLUSH_ROWS: usize = 1_000_000;

/// Where a dataset column's value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A request field, as the consumer sent it.
    Request(String),
    /// A response field, as opened from the signed response.
    Response(String),
    /// The call's time (`YYYY-MM-DD HH:MM:SS`, China Standard Time).
    CallTime,
    /// The call id the response is bound to (32 hex digits).
    CallId,
    /// The providing department.
    Provider,
    /// A fixed value.
    Value(String),
}

/// A service whose `ok` outcomes are appended to a dataset.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordRule {
    /// Service id.
    pub service: String,
    /// Dataset the rows go to.
    pub dataset: String,
    /// The dataset's schema (TOML), as given.
    pub schema_source: String,
    /// Column (schema field) → source, one per field in schema order.
    pub columns: Vec<(String, Source)>,
    /// When (ms).
    pub created_ms: u64,
    /// Operator.
    pub operator: String,
}

/// `pdx service record`: what to record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordSpec {
    /// Service id (known here: `pdx service add`).
    pub service: String,
    /// Dataset id.
    pub dataset: String,
    /// Schema file of the dataset (default: the existing dataset's schema).
    pub schema: Option<String>,
    /// Map file (`[columns]`, column = source).
    pub map: String,
}

/// What `pdx service record` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recording {
    /// Service id.
    pub service: String,
    /// Dataset id.
    pub dataset: String,
    /// Columns mapped.
    pub columns: usize,
    /// Audit entry.
    pub audit_seq: u64,
}

fn rule_key(service: &str) -> Vec<u8> {
    let mut k = RULE_PREFIX.to_vec();
    k.extend_from_slice(service.as_bytes());
    k
}

fn queue_prefix(dataset: &str) -> Vec<u8> {
    let mut k = QUEUE_PREFIX.to_vec();
    k.extend_from_slice(dataset.as_bytes());
    k.push(0);
    k
}

fn marker_key(call_id: &[u8]) -> Vec<u8> {
    let mut k = MARKER_PREFIX.to_vec();
    k.extend_from_slice(call_id);
    k
}

/// Parses one source text: `request.F`, `response.F`, `call.time`,
/// `call.id`, `call.provider`, or `{ value = "..." }` in the map.
fn parse_source(def: &ServiceDef, column: &str, v: &toml::Value, file: &str) -> Result<Source> {
    let bad = |why: String| NodeError::Invalid(format!("{file}: column {column}: {why}"));
    if let Some(t) = v.as_table() {
        return match t.get("value").and_then(|x| x.as_str()) {
            Some(s) if t.len() == 1 => Ok(Source::Value(s.to_string())),
            _ => Err(bad("a table must be { value = \"TEXT\" }".into())),
        };
    }
    let text = v
        .as_str()
        .ok_or_else(|| bad("give a source text or { value = \"TEXT\" }".into()))?;
    let known = |fields: &[pdx_schemas::service::MessageField], f: &str| {
        fields.iter().any(|x| x.field.name == f)
    };
    match text.split_once('.') {
        Some(("request", f)) if known(&def.request, f) => Ok(Source::Request(f.into())),
        Some(("response", f)) if known(&def.response, f) => Ok(Source::Response(f.into())),
        Some(("request" | "response", f)) => Err(bad(format!(
            "service {} has no field {f} there (`pdx service list` shows its definition)",
            def.id
        ))),
        _ => match text {
            "call.time" => Ok(Source::CallTime),
            "call.id" => Ok(Source::CallId),
            "call.provider" => Ok(Source::Provider),
            _ => Err(bad(format!(
                "unknown source {text:?}: use request.FIELD, response.FIELD, call.time, call.id, call.provider or {{ value = \"TEXT\" }}"
            ))),
        },
    }
}

/// `pdx service record`: checks the map against the service and the schema
/// (every schema field mapped, or nullable) and stores the rule (audited).
pub fn add_rule(node: &Node, spec: &RecordSpec, operator: &str) -> Result<Recording> {
    let (_, def) = service(node, &spec.service)?.ok_or_else(|| {
        NodeError::NotFound(format!(
            "service {} is not known here: add its definition with `pdx service add` first",
            spec.service
        ))
    })?;
    if !pdx_schemas::schema::valid_id(&spec.dataset) {
        return Err(NodeError::Invalid(format!(
            "invalid dataset id {:?}: use letters, digits, '.', '-' or '_'",
            spec.dataset
        )));
    }
    let existing = node.store.get::<datasets::DatasetMeta>(
        crate::store::CF_DATASETS,
        crate::store::dataset_key(&spec.dataset),
    )?;
    let (schema_source, schema_file) = match (&spec.schema, &existing) {
        (Some(path), _) => (
            std::fs::read_to_string(path).map_err(NodeError::io(path))?,
            path.clone(),
        ),
        (None, Some(meta)) => (
            meta.schema_source.clone(),
            format!("schema of dataset {}", meta.id),
        ),
        (None, None) => {
            return Err(NodeError::Invalid(format!(
                "dataset {} does not exist yet: give its schema with --schema FILE",
                spec.dataset
            )));
        }
    };
    let schema = Schema::parse(&schema_source, &schema_file, node.suite)?;
    if let Some(existing) = &existing
        && existing.schema_digest != schema.digest
    {
        return Err(NodeError::Invalid(format!(
            "dataset {} exists under another schema (digest {}; {} has {}): record into a new dataset id",
            spec.dataset,
            existing.schema_digest.to_hex(),
            schema_file,
            schema.digest.to_hex()
        )));
    }
    let map_text = std::fs::read_to_string(&spec.map).map_err(NodeError::io(&spec.map))?;
    let map: toml::Table = map_text
        .parse()
        .map_err(|e| NodeError::Invalid(format!("{}: {e}", spec.map)))?;
    let cols = map
        .get("columns")
        .and_then(|c| c.as_table())
        .ok_or_else(|| {
            NodeError::Invalid(format!(
                "{}: no [columns] table (column = \"request.FIELD\" | \"response.FIELD\" | \"call.time\" | ...)",
                spec.map
            ))
        })?;
    for name in cols.keys() {
        if schema.fields.iter().all(|f| &f.name != name) {
            return Err(NodeError::Invalid(format!(
                "{}: column {name} is not a field of schema {}",
                spec.map, schema.dataset.id
            )));
        }
    }
    let mut columns = Vec::new();
    for f in &schema.fields {
        match cols.get(&f.name) {
            Some(v) => columns.push((f.name.clone(), parse_source(&def, &f.name, v, &spec.map)?)),
            None if f.nullable => {}
            None => {
                return Err(NodeError::Invalid(format!(
                    "{}: field {} of schema {} is not nullable and has no source; map it in [columns]",
                    spec.map, f.name, schema.dataset.id
                )));
            }
        }
    }
    let rule = RecordRule {
        service: spec.service.clone(),
        dataset: spec.dataset.clone(),
        schema_source,
        columns,
        created_ms: now_ms(),
        operator: operator.to_string(),
    };
    let mut d = node.draft(EventKind::ConfigChange, operator);
    d.subject = Subject {
        dataset: Some(spec.dataset.clone()),
        release: None,
        digest: Some(schema.digest),
    };
    d.detail = Some(format!(
        "ok outcomes of service {} are appended to dataset {} (schema {}, {} columns mapped from {})",
        spec.service,
        spec.dataset,
        schema.dataset.id,
        rule.columns.len(),
        spec.map
    ));
    let seq = node
        .log_with(
            d,
            vec![
                node.store
                    .put_op(CF_CALLS, &rule_key(&spec.service), &rule)?,
            ],
        )?
        .seq;
    Ok(Recording {
        service: rule.service,
        dataset: rule.dataset,
        columns: rule.columns.len(),
        audit_seq: seq,
    })
}

/// The rule recording a service, if any.
pub fn rule(node: &Node, service: &str) -> Result<Option<RecordRule>> {
    node.store.get(CF_CALLS, &rule_key(service))
}

/// Every rule.
pub fn rules(node: &Node) -> Result<Vec<RecordRule>> {
    Ok(node
        .store
        .scan::<RecordRule>(CF_CALLS, RULE_PREFIX)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Serialises "is this call recorded yet" with "record it" per call id
/// stripe, so two concurrent replays of one call queue one row.
static STRIPES: [Mutex<()>; 64] = [const { Mutex::new(()) }; 64];

/// Holds the stripe of `call_id` while `f` checks and writes.
pub(crate) fn with_call_lock<T>(call_id: &[u8], f: impl FnOnce() -> Result<T>) -> Result<T> {
    let i = usize::from(call_id.first().copied().unwrap_or(0)) % STRIPES.len();
    let _held = STRIPES[i]
        .lock()
        .map_err(|_| NodeError::Invalid("record lock poisoned".into()))?;
    f()
}

/// China Standard Time text of a time in ms (`call.time`).
fn call_time(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The queued row of an `ok` call of a recorded service: the write ops to
/// add to the call's commit batch, or none (not recorded, or this call id
/// was recorded already). Call under [`with_call_lock`].
pub(crate) fn outcome_ops(
    node: &Node,
    rule: &RecordRule,
    call_id: &[u8],
    provider: &str,
    request: &Values,
    response: &Values,
    time_ms: u64,
) -> Result<Vec<StoreOp>> {
    if node
        .store
        .get_raw(CF_CALLS, &marker_key(call_id))?
        .is_some()
    {
        return Ok(Vec::new());
    }
    let row: Vec<(String, Option<String>)> = rule
        .columns
        .iter()
        .map(|(col, src)| {
            let v = match src {
                Source::Request(f) => request.get(f).cloned().flatten(),
                Source::Response(f) => response.get(f).cloned().flatten(),
                Source::CallTime => Some(call_time(time_ms)),
                Source::CallId => Some(hex::encode(call_id)),
                Source::Provider => Some(provider.to_string()),
                Source::Value(v) => Some(v.clone()),
            };
            (col.clone(), v)
        })
        .collect();
    let sealed = row_key(node, call_id)?.seal_block(0, &to_cbor(&row)?)?;
    let mut q = queue_prefix(&rule.dataset);
    q.extend_from_slice(&time_ms.to_be_bytes());
    q.extend_from_slice(call_id);
    Ok(vec![
        StoreOp::Put {
            cf: CF_CALLS,
            key: q,
            value: sealed,
        },
        StoreOp::Put {
            cf: CF_CALLS,
            key: marker_key(call_id),
            value: now_ms().to_be_bytes().to_vec(),
        },
    ])
}

fn row_key(node: &Node, call_id: &[u8]) -> Result<pdx_crypto::atrest::ObjectKey> {
    Ok(node
        .keys()?
        .storage
        .object_key("call-outcome-row", call_id, b"")?)
}

/// What a flush did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Flushed {
    /// Dataset.
    pub dataset: String,
    /// Rows taken from the queue.
    pub queued: u64,
    /// The import (absent when nothing was queued).
    pub import: Option<ImportOutcome>,
}

/// Appends the queued rows of `dataset` (creating it on the first flush),
/// consuming them in the same commit. Rows the schema refuses go to
/// `rejects/DATASET-TIME.csv` under the node home (0600) and are counted.
pub fn flush(node: &Node, dataset: &str, progress: &dyn Progress) -> Result<Flushed> {
    let Some(rule) = rules(node)?.into_iter().find(|r| r.dataset == dataset) else {
        return Ok(Flushed {
            dataset: dataset.into(),
            ..Flushed::default()
        });
    };
    // One flush per dataset at a time: two would append the same rows.
    static FLUSHING: Mutex<()> = Mutex::new(());
    let _one = FLUSHING
        .lock()
        .map_err(|_| NodeError::Invalid("flush lock poisoned".into()))?;
    let prefix = queue_prefix(dataset);
    let mut keys = Vec::new();
    let mut csv = csv::Writer::from_writer(Vec::new());
    let header: Vec<&str> = rule.columns.iter().map(|(c, _)| c.as_str()).collect();
    let csv_err = |e: csv::Error| NodeError::Invalid(format!("queued rows of {dataset}: {e}"));
    csv.write_record(&header).map_err(csv_err)?;
    node.store.scan_raw(CF_CALLS, &prefix, |k, v| {
        let call_id = k.get(prefix.len() + 8..).unwrap_or_default();
        let plain = row_key(node, call_id)?.open_block(0, v)?;
        let row: Vec<(String, Option<String>)> = from_cbor(&plain, "queued outcome row")
            .map_err(|e| NodeError::corrupt("calls/queue", e))?;
        let by_name: BTreeMap<&str, &Option<String>> =
            row.iter().map(|(c, v)| (c.as_str(), v)).collect();
        let fields: Vec<&str> = header
            .iter()
            .map(|c| by_name.get(c).and_then(|v| v.as_deref()).unwrap_or(""))
            .collect();
        csv.write_record(&fields).map_err(csv_err)?;
        keys.push(k.to_vec());
        Ok(keys.len() < MAX_FLUSH_ROWS)
    })?;
    if keys.is_empty() {
        return Ok(Flushed {
            dataset: dataset.into(),
            ..Flushed::default()
        });
    }
    let bytes = csv
        .into_inner()
        .map_err(|e| NodeError::Invalid(format!("queued rows of {dataset}: {e}")))?;
    let exists = node
        .store
        .get::<datasets::DatasetMeta>(
            crate::store::CF_DATASETS,
            crate::store::dataset_key(dataset),
        )?
        .is_some();
    let rejects_dir = node.home.root().join("rejects");
    std::fs::create_dir_all(&rejects_dir)
        .map_err(NodeError::io(rejects_dir.to_string_lossy().as_ref()))?;
    let rejects = rejects_dir.join(format!("{dataset}-{}.csv", now_ms()));
    let spec = ImportSpec {
        schema_path: format!("schema of recorded service {}", rule.service),
        csv_path: format!("outcomes of service {}", rule.service),
        dataset: dataset.into(),
        encoding: Encoding::Utf8,
        on_error: OnError::Skip,
        rejects: Some(rejects.to_string_lossy().into_owned()),
        replace: false,
        append: exists,
    };
    let queued = keys.len() as u64;
    let commit_ops = keys
        .into_iter()
        .map(|key| StoreOp::Delete { cf: CF_CALLS, key })
        .collect();
    let outcome = datasets::import_from(
        node,
        &spec,
        ImportInput {
            schema_text: rule.schema_source.clone(),
            csv: std::io::Cursor::new(bytes),
            total: None,
            source: format!("calls of service {}", rule.service),
            commit_ops,
            note: Some(format!(
                "{queued} ok outcomes of service {} taken from the queue",
                rule.service
            )),
        },
        crate::node::NODE_OPERATOR,
        progress,
    )?;
    if outcome.rejected == 0 {
        let _ = std::fs::remove_file(&rejects);
    }
    Ok(Flushed {
        dataset: dataset.into(),
        queued,
        import: Some(outcome),
    })
}

/// Flushes every recorded dataset (the periodic flush).
pub fn flush_all(node: &Node, progress: &dyn Progress) -> Result<Vec<Flushed>> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in rules(node)? {
        if seen.insert(r.dataset.clone()) {
            out.push(flush(node, &r.dataset, progress)?);
        }
    }
    Ok(out)
}

/// Markers older than `before` (ms): no replay can come after them.
pub(crate) fn sweep_markers(
    node: &Node,
    before: u64,
    batch: &mut rocksdb::WriteBatch,
) -> Result<usize> {
    let cf = node.store.cf(CF_CALLS)?;
    let mut n = 0;
    node.store.scan_raw(CF_CALLS, MARKER_PREFIX, |k, v| {
        let t = v
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| NodeError::corrupt("calls/markers", "not a u64"))?;
        if t < before {
            batch.delete_cf(cf, k);
            n += 1;
        }
        Ok(true)
    })?;
    Ok(n)
}
