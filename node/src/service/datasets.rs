//! Datasets at rest: streaming import into sealed row blocks, and row scans.
//!
//! Rows are encoded with [`pdx_schemas::rowcodec`] into blocks of about
//! [`BLOCK_BYTES`], each sealed with AES-256-GCM under a key derived from the
//! storage master key, the dataset id and a fresh 16-byte generation, the block
//! number being the nonce. An import stages a new generation (unsynced) and
//! then, in one synced write batch, switches the dataset to it, deletes the old
//! generation and appends the `import` audit entry: a crash leaves either the
//! old dataset or the new one with its entry, never an unaudited import.
//! Under `--on-error reject` a bad file leaves no trace. Owns the `datasets`
//! and `rows` families.

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::progress::{Progress, Unit};
use crate::store::{self, CF_DATASETS, CF_ROWS};
use pdx_audit::store::StoreOp;
use pdx_audit::{EntryDraft, EventKind, FieldRef, Subject};
use pdx_crypto::Digest;
use pdx_crypto::atrest::ObjectKey;
use pdx_schemas::import::{Encoding, ImportSummary, OnError, read_csv};
use pdx_schemas::{Schema, rowcodec};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Target size of a sealed row block.
pub const BLOCK_BYTES: usize = 256 * 1024;
const AT_REST_PURPOSE: &str = "dataset-rows";

/// A stored dataset.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetMeta {
    /// Dataset id.
    pub id: String,
    /// Schema id.
    pub schema_id: String,
    /// Schema source (TOML).
    pub schema_source: String,
    /// Schema digest.
    pub schema_digest: Digest,
    /// Title.
    pub title: String,
    /// Owner department (this node).
    pub owner: String,
    /// Current generation.
    #[serde(with = "serde_bytes")]
    pub generation: Vec<u8>,
    /// Rows.
    pub rows: u64,
    /// Sealed blocks.
    pub blocks: u64,
    /// Digest over schema and rows.
    pub digest: Digest,
    /// Import time (ms).
    pub imported_ms: u64,
    /// Source file name.
    pub source: String,
    /// Operator who imported it.
    pub operator: String,
    /// Rows appended after the first import (`--append`, recorded calls),
    /// each a sealed generation of its own, oldest first. `rows` counts
    /// them; `generation` and `blocks` describe the first part only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
}

/// One sealed part of a dataset: (generation, first row, rows, blocks).
type Part<'a> = (&'a [u8], u64, u64, u64);

/// Rows appended to a dataset: a generation of sealed blocks of their own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Generation (16 bytes; names the at-rest key and the block keys).
    #[serde(with = "serde_bytes")]
    pub generation: Vec<u8>,
    /// Rows.
    pub rows: u64,
    /// Sealed blocks.
    pub blocks: u64,
}

impl DatasetMeta {
    /// Each sealed part: the first import, then the appended segments.
    fn parts(&self) -> Result<Vec<Part<'_>>> {
        let appended = self
            .segments
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(s.rows))
            .ok_or_else(|| NodeError::corrupt(format!("datasets/{}", self.id), "row count"))?;
        let first = self.rows.checked_sub(appended).ok_or_else(|| {
            NodeError::corrupt(
                format!("datasets/{}", self.id),
                "segments hold more rows than the dataset",
            )
        })?;
        let mut out = vec![(self.generation.as_slice(), 0, first, self.blocks)];
        let mut start = first;
        for s in &self.segments {
            out.push((s.generation.as_slice(), start, s.rows, s.blocks));
            start += s.rows;
        }
        Ok(out)
    }

    /// The parsed schema (its digest in the network's `suite`).
    pub fn schema(&self, suite: pdx_crypto::Suite) -> Result<Schema> {
        Ok(Schema::parse(
            &self.schema_source,
            &format!("schema of dataset {}", self.id),
            suite,
        )?)
    }
}

/// What to import (`pdx import`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportSpec {
    /// Schema file.
    pub schema_path: String,
    /// CSV file.
    pub csv_path: String,
    /// Dataset id to store under.
    pub dataset: String,
    /// CSV encoding.
    pub encoding: Encoding,
    /// Bad-row policy.
    pub on_error: OnError,
    /// Where rejected rows go under `skip`.
    pub rejects: Option<String>,
    /// Replace an existing dataset of this id (audited with both digests);
    /// without it an existing id is refused.
    #[serde(default)]
    pub replace: bool,
    /// Add the file's rows to the existing dataset of this id (same schema;
    /// audited with both digests).
    #[serde(default)]
    pub append: bool,
}

/// What an import did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportOutcome {
    /// Dataset id.
    pub dataset: String,
    /// Records stored (docs/cli-output.md: `records`).
    pub records: u64,
    /// The same (kept for scripts written against earlier versions).
    pub rows: u64,
    /// Rows rejected (skip mode).
    pub rejected: u64,
    /// Rows left out by the schema's `cross_region` rule (not cross-province).
    #[serde(default)]
    pub excluded: u64,
    /// First problems.
    pub problems: Vec<pdx_schemas::import::RowProblem>,
    /// Dataset digest.
    pub digest: String,
    /// Audit entry.
    pub audit_seq: u64,
}

struct BlockWriter<'n> {
    node: &'n Node,
    key: ObjectKey,
    prefix: Vec<u8>,
    buf: Vec<u8>,
    block: u64,
    batch: WriteBatch,
    pending: usize,
    hasher: pdx_crypto::suite::DomainHasher,
}

impl BlockWriter<'_> {
    fn row(&mut self, row: &[Option<&str>]) -> std::result::Result<(), String> {
        let start = self.buf.len();
        rowcodec::encode_row(row, &mut self.buf);
        self.hasher.update(&self.buf[start..]);
        if self.buf.len() >= BLOCK_BYTES {
            self.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let sealed = self.key.seal_block(self.block, &self.buf)?;
        self.batch.put_cf(
            self.node.store.cf(CF_ROWS)?,
            store::block_key(&self.prefix, self.block),
            sealed,
        );
        self.block += 1;
        self.buf.clear();
        self.pending += 1;
        if self.pending >= 16 {
            // Twice: the write-ahead log holds the rows until they are flushed.
            self.node.store.space().ensure(
                (self.batch.size_in_bytes() as u64).saturating_mul(2),
                "the imported rows",
            )?;
            self.node
                .store
                .write_nosync(std::mem::take(&mut self.batch))?;
            self.pending = 0;
        }
        Ok(())
    }
}

/// Imports a CSV file as a dataset (audited).
pub fn import(
    node: &Node,
    req: &ImportSpec,
    operator: &str,
    progress: &dyn Progress,
) -> Result<ImportOutcome> {
    let schema_text =
        std::fs::read_to_string(&req.schema_path).map_err(NodeError::io(&req.schema_path))?;
    let mut file = std::fs::File::open(&req.csv_path).map_err(NodeError::io(&req.csv_path))?;
    check_encoding(&mut file, &req.csv_path, req.encoding)?;
    let total = file.metadata().map(|m| m.len()).ok();
    // Sealed rows take about the CSV's size, twice until the WAL is flushed:
    // refused before anything is written rather than half-way.
    if let Some(t) = total {
        node.store
            .space()
            .ensure(t.saturating_mul(2), &format!("importing {}", req.csv_path))?;
    }
    let source = Path::new(&req.csv_path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    import_from(
        node,
        req,
        ImportInput {
            schema_text,
            csv: std::io::BufReader::with_capacity(1 << 20, file),
            total,
            source,
            commit_ops: Vec::new(),
            note: None,
        },
        operator,
        progress,
    )
}

/// Where the rows of an import come from: a file, or the outcomes of
/// recorded calls (`service::records`).
pub(crate) struct ImportInput<R> {
    /// The schema (TOML).
    pub schema_text: String,
    /// The CSV, header first.
    pub csv: R,
    /// Its size in bytes, for progress.
    pub total: Option<u64>,
    /// What `pdx datasets` shows as the source.
    pub source: String,
    /// Written in the commit batch (the recorded outcomes consumed).
    pub commit_ops: Vec<StoreOp>,
    /// Added to the entry's detail.
    pub note: Option<String>,
}

/// Imports (or appends) rows read from `input` (audited). An append stores
/// the new rows as a segment of their own; nothing already stored is
/// rewritten.
pub(crate) fn import_from<R: std::io::Read>(
    node: &Node,
    req: &ImportSpec,
    input: ImportInput<R>,
    operator: &str,
    progress: &dyn Progress,
) -> Result<ImportOutcome> {
    if !pdx_schemas::schema::valid_id(&req.dataset) {
        return Err(NodeError::Invalid(format!(
            "invalid dataset id {:?}: use letters, digits, '.', '-' or '_'",
            req.dataset
        )));
    }
    let base = refuse_overwrite(node, req)?;
    let ImportInput {
        schema_text,
        csv,
        total,
        source,
        commit_ops,
        note,
    } = input;
    let schema = Schema::parse(&schema_text, &req.schema_path, node.suite)?;
    if let Some(owner) = &schema.dataset.owner
        && *owner != node.config.dept
    {
        return Err(NodeError::Refused(format!(
            "{}: the schema declares owner {owner}, but this node is {}; only the owner imports its data",
            req.schema_path, node.config.dept
        )));
    }
    // --append: the rows go to a segment of their own, chained to the
    // current digest.
    let appended_to = match (&base, req.append) {
        (Some(p), true) => {
            if p.schema_digest != schema.digest {
                return Err(NodeError::Invalid(format!(
                    "dataset {} was imported under another schema (digest {}; {} has {}); --append needs the same schema, --replace replaces the dataset",
                    p.id,
                    p.schema_digest.to_hex(),
                    req.schema_path,
                    schema.digest.to_hex()
                )));
            }
            Some(p.clone())
        }
        (None, true) => {
            return Err(NodeError::NotFound(format!(
                "dataset {} does not exist; import it without --append first",
                req.dataset
            )));
        }
        _ => None,
    };
    let generation = pdx_crypto::rng::bytes::<16>()?.to_vec();
    let prefix = store::rows_prefix(&req.dataset, &generation);
    let key =
        node.keys()?
            .storage
            .object_key(AT_REST_PURPOSE, req.dataset.as_bytes(), &generation)?;
    let hasher = match &appended_to {
        Some(p) => {
            let mut h = node.suite.hasher("pdx/v1 dataset digest append");
            h.update(p.digest.as_bytes());
            h
        }
        None => {
            let mut h = node.suite.hasher("pdx/v1 dataset digest");
            h.update(schema.digest.as_bytes());
            h
        }
    };
    let mut w = BlockWriter {
        node,
        key,
        prefix: prefix.clone(),
        buf: Vec::with_capacity(BLOCK_BYTES + 4096),
        block: 0,
        batch: WriteBatch::default(),
        pending: 0,
        hasher,
    };
    let mut rejects = match (&req.rejects, req.on_error) {
        (Some(path), OnError::Skip) => Some(RejectWriter::create(path)?),
        (None, OnError::Skip) => {
            return Err(NodeError::Invalid(
                "--on-error skip needs --rejects FILE for the rejected rows".into(),
            ));
        }
        _ => None,
    };
    progress.stage(&format!("import {}", req.dataset), total, Unit::Bytes);
    let result = read_csv(
        &schema,
        csv,
        &req.csv_path,
        pdx_schemas::import::ImportContext {
            dept: Some(&node.config.dept),
        },
        req.encoding,
        req.on_error,
        |row| w.row(row),
        |problem, record| match &mut rejects {
            Some(r) => r.write(problem, record),
            None => Ok(()),
        },
        |bytes| progress.set(bytes),
    );
    progress.done();
    let cleanup = |node: &Node| {
        node.store
            .delete_range(CF_ROWS, &prefix, &store::rows_prefix_end(&prefix))
    };
    let summary: ImportSummary = match result {
        Ok(s) => s,
        Err(e) => {
            cleanup(node)?;
            return Err(e.into());
        }
    };
    if let Err(e) = w
        .flush()
        .and_then(|_| node.store.write_nosync(std::mem::take(&mut w.batch)))
    {
        cleanup(node)?;
        return Err(e);
    }
    if let Some(r) = rejects {
        r.finish()?;
    }
    let digest = w.hasher.finalize();
    // Checked again: another import may have committed meanwhile.
    let previous = match refuse_overwrite(node, req) {
        Ok(p) => p,
        Err(e) => {
            cleanup(node)?;
            return Err(e);
        }
    };
    if let Some(a) = &appended_to
        && previous.as_ref().map(|p| p.digest) != Some(a.digest)
    {
        cleanup(node)?;
        return Err(NodeError::Invalid(format!(
            "dataset {} changed while the rows were appended; run the import again",
            req.dataset
        )));
    }
    let meta = match &appended_to {
        Some(a) => {
            let mut m = a.clone();
            m.rows = a
                .rows
                .checked_add(summary.rows_imported)
                .ok_or_else(|| NodeError::Invalid("row count overflow".into()))?;
            // An empty append changes nothing but the entry says it ran.
            if summary.rows_imported > 0 {
                m.segments.push(Segment {
                    generation,
                    rows: summary.rows_imported,
                    blocks: w.block,
                });
                m.digest = digest;
            }
            m.imported_ms = pdx_audit::store::now_ms();
            m.source = source;
            m.operator = operator.to_string();
            m
        }
        None => DatasetMeta {
            id: req.dataset.clone(),
            schema_id: schema.dataset.id.clone(),
            schema_source: schema_text,
            schema_digest: schema.digest,
            title: schema.dataset.title.clone(),
            owner: node.config.dept.clone(),
            generation,
            rows: summary.rows_imported,
            blocks: w.block,
            digest,
            imported_ms: pdx_audit::store::now_ms(),
            source,
            operator: operator.to_string(),
            segments: Vec::new(),
        },
    };
    let digest = meta.digest;
    let mut d = EntryDraft::new(EventKind::Import, &node.config.dept, operator);
    d.subject = Subject {
        dataset: Some(meta.id.clone()),
        release: None,
        digest: Some(digest),
    };
    d.legal_basis = schema.dataset.legal_basis.clone();
    d.fields = schema
        .fields
        .iter()
        .map(|f| FieldRef {
            name: f.name.clone(),
            class: f.classification(),
        })
        .collect();
    d.record_count = Some(meta.rows);
    d.payload_digest = Some(schema.digest);
    d.detail = Some(format!(
        "schema {} from {}; {} rows imported, {} rejected, {} excluded by cross_region (not cross-province){}{}",
        schema.dataset.id,
        meta.source,
        summary.rows_imported,
        summary.rows_rejected,
        summary.rows_excluded,
        match (&previous, req.append) {
            (Some(p), true) => format!(
                "; appended to the previous version (digest {}, {} rows): now digest {}, {} rows",
                p.digest.to_hex(),
                p.rows,
                digest.to_hex(),
                meta.rows
            ),
            (Some(p), false) => format!(
                "; replaces the previous version (digest {}, {} rows) with digest {}",
                p.digest.to_hex(),
                p.rows,
                digest.to_hex()
            ),
            (None, _) => String::new(),
        },
        note.map(|n| format!("; {n}")).unwrap_or_default()
    ));
    // Commit: switch, a replaced version's deletion and the audit entry in
    // one synced batch.
    let mut ops = vec![
        node.store
            .put_op(CF_DATASETS, store::dataset_key(&meta.id), &meta)?,
    ];
    if let (Some(p), false) = (&previous, req.append) {
        ops.extend(delete_ops(p)?);
    }
    ops.extend(commit_ops);
    crate::failpoint::hit("import-before-commit");
    let appended = match node.log_with(d, ops) {
        Ok(a) => a,
        Err(e) => {
            // Fail closed: nothing was switched; the staged blocks go.
            cleanup(node)?;
            return Err(e);
        }
    };
    crate::failpoint::hit("import-after-commit");
    Ok(ImportOutcome {
        dataset: meta.id,
        records: meta.rows,
        rows: meta.rows,
        rejected: summary.rows_rejected,
        excluded: summary.rows_excluded,
        problems: summary.problems,
        digest: digest.to_hex(),
        audit_seq: appended.seq,
    })
}

/// Deletes every sealed part of a dataset version.
fn delete_ops(meta: &DatasetMeta) -> Result<Vec<StoreOp>> {
    Ok(meta
        .parts()?
        .into_iter()
        .map(|(generation, ..)| {
            let old = store::rows_prefix(&meta.id, generation);
            StoreOp::DeleteRange {
                cf: CF_ROWS,
                to: store::rows_prefix_end(&old),
                from: old,
            }
        })
        .collect())
}

/// Refuses a file whose start looks like another encoding than the one
/// given (a UTF-8 export imported as GB18030 decodes to garbage that may
/// even validate), naming the encoding it looks like.
fn check_encoding(file: &mut std::fs::File, path: &str, given: Encoding) -> Result<()> {
    use std::io::{Read, Seek};
    let mut sample = Vec::new();
    (&mut *file)
        .take(64 * 1024)
        .read_to_end(&mut sample)
        .map_err(NodeError::io(path))?;
    file.rewind().map_err(NodeError::io(path))?;
    match pdx_schemas::import::sniff_encoding(&sample) {
        Some(found) if found != given => {
            let (name, flag) = match found {
                Encoding::Utf8 => ("UTF-8", "utf-8"),
                Encoding::Gb18030 => ("GB18030", "gb18030"),
            };
            Err(NodeError::Invalid(format!(
                "{path} looks like {name}, not the {} given: import it with --encoding {flag}",
                match given {
                    Encoding::Utf8 => "UTF-8",
                    Encoding::Gb18030 => "GB18030",
                }
            )))
        }
        _ => Ok(()),
    }
}

/// An existing dataset of the id is replaced only when asked (`--replace`);
/// returns it.
fn refuse_overwrite(node: &Node, req: &ImportSpec) -> Result<Option<DatasetMeta>> {
    if req.replace && req.append {
        return Err(NodeError::Invalid(
            "give --replace or --append, not both".into(),
        ));
    }
    let previous: Option<DatasetMeta> = node
        .store
        .get(CF_DATASETS, store::dataset_key(&req.dataset))?;
    match &previous {
        Some(p) if !req.replace && !req.append => Err(NodeError::Invalid(format!(
            "dataset {} already exists ({} rows imported {} from {}, digest {}); give --replace to replace it or --append to add rows (both audited), or choose another --dataset id",
            p.id,
            p.rows,
            crate::timearg::format_ms(p.imported_ms).unwrap_or_default(),
            p.source,
            p.digest.to_hex()
        ))),
        _ => Ok(previous),
    }
}

struct RejectWriter {
    path: String,
    w: csv::Writer<std::fs::File>,
}

impl RejectWriter {
    fn create(path: &str) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(NodeError::io(path))?;
        let mut w = csv::Writer::from_writer(f);
        // Problems in the other columns are masked; the rows here are whole
        // (the file is 0600 and says so in its header).
        w.write_record([
            "line",
            "column",
            "field",
            "problem",
            "row (full values, personal data: keep this file private)",
        ])
        .map_err(|e| NodeError::Invalid(format!("{path}: {e}")))?;
        Ok(RejectWriter {
            path: path.into(),
            w,
        })
    }

    fn write(
        &mut self,
        p: &pdx_schemas::import::RowProblem,
        record: &csv::ByteRecord,
    ) -> std::result::Result<(), String> {
        let row: Vec<String> = record
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        self.w
            .write_record([
                p.line.to_string(),
                p.column.to_string(),
                p.field.clone(),
                p.reason.clone(),
                row.join("|"),
            ])
            .map_err(|e| format!("{}: {e}", self.path))
    }

    fn finish(mut self) -> Result<()> {
        self.w.flush().map_err(NodeError::io(&self.path))
    }
}

/// Loads a dataset's metadata.
pub fn meta(node: &Node, id: &str) -> Result<DatasetMeta> {
    node.store
        .get(CF_DATASETS, store::dataset_key(id))?
        .ok_or_else(|| {
            NodeError::NotFound(format!(
                "no dataset {id:?} on this node; `pdx datasets` lists them"
            ))
        })
}

/// A dataset as `pdx datasets` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Dataset id.
    pub dataset: String,
    /// Schema id.
    pub schema: String,
    /// Title.
    pub title: String,
    /// Records (docs/cli-output.md: `records`).
    pub records: u64,
    /// The same (kept for scripts written against earlier versions).
    pub rows: u64,
    /// Digest over schema and rows.
    pub digest: String,
    /// Import time (ms).
    pub imported_ms: u64,
    /// Source file name.
    pub source: String,
}

impl From<&DatasetMeta> for DatasetInfo {
    fn from(m: &DatasetMeta) -> Self {
        DatasetInfo {
            dataset: m.id.clone(),
            schema: m.schema_id.clone(),
            title: m.title.clone(),
            records: m.rows,
            rows: m.rows,
            digest: m.digest.to_hex(),
            imported_ms: m.imported_ms,
            source: m.source.clone(),
        }
    }
}

/// Every dataset.
pub fn list(node: &Node) -> Result<Vec<DatasetMeta>> {
    Ok(node
        .store
        .scan::<DatasetMeta>(CF_DATASETS, b"")?
        .into_iter()
        .map(|(_, m)| m)
        .collect())
}

/// Calls `f` with every row of the dataset, in import order.
pub fn for_each_row(
    node: &Node,
    meta: &DatasetMeta,
    f: impl FnMut(&[Option<&str>]) -> Result<()>,
) -> Result<u64> {
    for_each_row_in(node, meta, 0, meta.rows, f)
}

/// Calls `f` with the rows `from..to` (row numbers in import order), in
/// order; parts wholly outside the range are not read. The blocks are
/// opened a window at a time on the bulk pool ([`for_each_window`]).
pub fn for_each_row_in(
    node: &Node,
    meta: &DatasetMeta,
    from: u64,
    to: u64,
    mut f: impl FnMut(&[Option<&str>]) -> Result<()>,
) -> Result<u64> {
    for_each_window(node, meta, from, to, |blocks| {
        blocks.iter().try_for_each(|b| b.for_each(&mut f))
    })
}

/// A stored block of rows, opened, with its place in a range of rows.
#[derive(Debug)]
pub struct RowBlock {
    plain: Vec<u8>,
    fields: usize,
    /// Position in the range (`from` is 0) of the first row yielded.
    pub first: u64,
    /// Rows of the block before the range.
    skip: u64,
    /// Rows yielded.
    take: u64,
    /// Names the block in errors.
    place: String,
}

impl RowBlock {
    /// Rows yielded.
    pub fn rows(&self) -> u64 {
        self.take
    }

    /// Calls `f` with each row of the block that lies in the range, in order.
    pub fn for_each(&self, mut f: impl FnMut(&[Option<&str>]) -> Result<()>) -> Result<()> {
        let (skip, end) = (self.skip, self.skip.saturating_add(self.take));
        let mut i = 0u64;
        rowcodec::decode_rows(
            &self.plain,
            self.fields,
            |row| {
                let keep = i >= skip && i < end;
                i += 1;
                if keep { f(row) } else { Ok(()) }
            },
            |e| NodeError::corrupt(self.place.clone(), e),
        )?;
        Ok(())
    }
}

/// Blocks opened per window and core: enough to keep every core busy while
/// memory stays a few MiB ([`BLOCK_BYTES`] each).
const WINDOW_BLOCKS_PER_CORE: usize = 4;

/// Hands the blocks holding rows `from..to`, opened (decrypted, rows
/// counted) on the [`bulk_pool`](crate::service::bulk_pool), to `f` a
/// window at a time, in row order; returns the rows in the range. Each
/// block is read and decrypted once; memory is one window.
pub fn for_each_window(
    node: &Node,
    meta: &DatasetMeta,
    from: u64,
    to: u64,
    mut f: impl FnMut(&[RowBlock]) -> Result<()>,
) -> Result<u64> {
    use rayon::prelude::*;
    let fields = meta.schema(node.suite)?.fields.len();
    let pool = crate::service::bulk_pool()?;
    let window = pool
        .current_num_threads()
        .max(1)
        .saturating_mul(WINDOW_BLOCKS_PER_CORE);
    let mut passed = 0u64;
    for (generation, start, rows, blocks) in meta.parts()? {
        let end = start.saturating_add(rows);
        if end <= from || start >= to {
            continue;
        }
        let key =
            node.keys()?
                .storage
                .object_key(AT_REST_PURPOSE, meta.id.as_bytes(), generation)?;
        let prefix = store::rows_prefix(&meta.id, generation);
        let place = |block: u64| format!("rows/{} block {block}", meta.id);
        let mut sealed: Vec<(u64, Vec<u8>)> = Vec::with_capacity(window);
        let mut next_row = start;
        let mut flush = |sealed: &mut Vec<(u64, Vec<u8>)>| -> Result<()> {
            let opened: Vec<Result<(Vec<u8>, u64)>> = pool.install(|| {
                sealed
                    .par_iter()
                    .map(|(block, bytes)| {
                        let plain = key.open_block(*block, bytes)?;
                        let rows = rowcodec::count_rows(&plain, fields, |e| {
                            NodeError::corrupt(place(*block), e)
                        })?;
                        Ok((plain, rows))
                    })
                    .collect()
            });
            let mut ready = Vec::with_capacity(opened.len());
            for ((block, _), opened) in sealed.iter().zip(opened) {
                let (plain, rows) = opened?;
                let first_row = next_row;
                next_row = next_row.saturating_add(rows);
                let (lo, hi) = (first_row.max(from), next_row.min(to));
                if lo < hi {
                    passed += hi - lo;
                    ready.push(RowBlock {
                        plain,
                        fields,
                        first: lo - from,
                        skip: lo - first_row,
                        take: hi - lo,
                        place: place(*block),
                    });
                }
            }
            sealed.clear();
            if ready.is_empty() { Ok(()) } else { f(&ready) }
        };
        let mut expect = 0u64;
        node.store.scan_raw(CF_ROWS, &prefix, |k, v| {
            let block =
                u64::from_be_bytes(k[prefix.len()..].try_into().map_err(|_| {
                    NodeError::corrupt(format!("rows/{}", meta.id), "bad block key")
                })?);
            if block != expect {
                return Err(NodeError::corrupt(
                    format!("rows/{}", meta.id),
                    format!("block {expect} missing"),
                ));
            }
            expect += 1;
            sealed.push((block, v.to_vec()));
            if sealed.len() >= window {
                flush(&mut sealed)?;
            }
            Ok(true)
        })?;
        flush(&mut sealed)?;
        if expect != blocks {
            return Err(NodeError::corrupt(
                format!("rows/{}", meta.id),
                format!("found {expect} blocks, metadata says {blocks}"),
            ));
        }
        let found = next_row - start;
        if found != rows {
            return Err(NodeError::corrupt(
                format!("rows/{}", meta.id),
                format!("found {found} rows in a part, metadata says {rows}"),
            ));
        }
    }
    Ok(passed)
}
