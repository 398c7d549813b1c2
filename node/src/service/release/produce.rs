//! The outgoing side: producing a release from a dataset (rules,
//! de-identification, sealing, chunking, the signed manifest) and reading its
//! chunks back for sending.

use super::{Delivery, OutRelease, out_key, release_hex};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::progress::{NoProgress, Progress, Unit};
use crate::proto::msg::{
    ChunkInfo, Manifest, ManifestBody, ManifestField, RowRange, transfer_digest,
};
use crate::records::{ChunkBuilder, EncodedRecords};
use crate::service::datasets::{self, DatasetMeta};
use crate::service::deid;
use crate::store::{self, CF_OUT_CHUNKS, CF_OUT_RELEASES, chunk_key};
use pdx_audit::store::now_ms;
use pdx_audit::{EventKind, Subject};
use pdx_crypto::SignatureDomain;
use pdx_crypto::atrest::ObjectKey;
use pdx_crypto::envelope::{Recipient, ReleaseContext, Sealer};
use pdx_schemas::RuleViolation;
use pdx_schemas::engine::{Engine, FieldSealer};
use pdx_schemas::rules::check_external_release;
use rocksdb::WriteBatch;
use std::collections::HashMap;

/// What to release.
#[derive(Clone, Debug)]
pub struct ReleaseSpec {
    /// Dataset.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Agreement (pseudonym keys derive from it).
    pub agreement: Option<String>,
    /// Purpose.
    pub purpose: String,
    /// Receiving department.
    pub recipient: String,
    /// Operator (or `node` when serving a peer).
    pub operator: String,
    /// Only the rows added since `after` (`pdx fetch --incremental`).
    pub incremental: bool,
    /// The last release of the chain the recipient holds.
    pub after: Option<Vec<u8>>,
}

struct EnvelopeSealer<'a>(&'a Sealer);

impl FieldSealer for EnvelopeSealer<'_> {
    fn seal(
        &mut self,
        recipient: usize,
        record: u64,
        field_index: u32,
        field_name: &str,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        self.0
            .seal_field(recipient, record, field_index, field_name, value, out)
            .map_err(|e| e.to_string())
    }
}

/// Splits released records into chunks per recipient (so a relay can forward
/// each recipient its own chunks) and stores them sealed.
struct Chunker<'n> {
    node: &'n Node,
    key: ObjectKey,
    release_id: Vec<u8>,
    recipients: Vec<String>,
    open: HashMap<Option<usize>, ChunkBuilder>,
    chunks: Vec<ChunkInfo>,
    batch: WriteBatch,
    max_records: u64,
    max_bytes: usize,
    records: u64,
    progress: &'n dyn Progress,
}

impl Chunker<'_> {
    fn close(&mut self, part: Option<usize>) -> Result<()> {
        let Some(builder) = self.open.remove(&part) else {
            return Ok(());
        };
        if builder.is_empty() {
            return Ok(());
        }
        let count = builder.count();
        let bytes = builder.finish();
        let index = u32::try_from(self.chunks.len())
            .map_err(|_| NodeError::Invalid("more than 2^32 chunks".into()))?;
        self.chunks.push(ChunkInfo {
            digest: self.node.suite.digest(&bytes),
            records: count,
            recipient: part.and_then(|i| self.recipients.get(i).cloned()),
        });
        let sealed = self.key.seal_block(u64::from(index), &bytes)?;
        self.batch.put_cf(
            self.node.store.cf(CF_OUT_CHUNKS)?,
            chunk_key(&self.release_id, index),
            sealed,
        );
        if self.chunks.len().is_multiple_of(8) {
            self.node
                .store
                .write_nosync(std::mem::take(&mut self.batch))?;
        }
        Ok(())
    }
}

impl Chunker<'_> {
    /// Places one block's records into the open chunk of their part,
    /// closing a chunk when it is full (the same chunks, record for record,
    /// as pushing the records one at a time).
    fn take(&mut self, block: EncodedRecords) -> Result<()> {
        for (part, record) in block.records() {
            let b = self.open.entry(part).or_default();
            b.push_encoded(record);
            let full = b.count() >= self.max_records || b.len() >= self.max_bytes;
            self.records += 1;
            if self.records.is_multiple_of(8192) {
                self.progress.set(self.records);
            }
            if full {
                self.close(part)?;
            }
        }
        Ok(())
    }
}

fn rule_error(e: pdx_schemas::engine::EmitError) -> NodeError {
    match e {
        pdx_schemas::engine::EmitError::Rule(v) => NodeError::Rule(v),
        other => NodeError::Invalid(other.to_string()),
    }
}

/// Finds a stored release made from the same dataset version for the same
/// recipient, profile, agreement, purpose and first row (re-fetch is
/// idempotent).
fn existing_release(
    node: &Node,
    spec: &ReleaseSpec,
    meta: &DatasetMeta,
    from: u64,
) -> Result<Option<OutRelease>> {
    Ok(node
        .store
        .scan::<OutRelease>(CF_OUT_RELEASES, b"")?
        .into_iter()
        .map(|(_, r)| r)
        .find(|r| {
            r.dataset == spec.dataset
                && r.generation == meta.generation
                && r.dataset_digest
                    .map_or(meta.segments.is_empty(), |d| d == meta.digest)
                && r.rows.as_ref().map_or(0, |x| x.from) == from
                && r.profile == spec.profile
                && r.agreement == spec.agreement
                && r.purpose == spec.purpose
                && r.recipient == spec.recipient
        }))
}

/// Produces (or finds) the release `spec` describes. Every rule is checked;
/// the release is audited.
pub fn produce(node: &Node, spec: &ReleaseSpec, progress: &dyn Progress) -> Result<OutRelease> {
    // Outcomes of recorded calls queued for this dataset are in the release.
    crate::service::calls::records::flush(node, &spec.dataset, progress)?;
    let meta = datasets::meta(node, &spec.dataset)?;
    let schema = meta.schema(node.suite)?;
    let profile = schema.profile(&spec.profile)?;
    check_external_release(&schema, profile, &spec.recipient, spec.agreement.as_deref())?;
    let (from, previous) = increment_start(node, spec, &meta, profile)?;
    if let Some(r) = existing_release(node, spec, &meta, from)? {
        return Ok(r);
    }
    let rows = RowRange {
        from,
        to: meta.rows,
        previous,
    };
    // Pseudonym keys derive from the agreement text; none is the empty text.
    let agreement = spec.agreement.clone().unwrap_or_default();
    let pseudonym_master = pdx_crypto::pseudonym::PseudonymMaster::from_bytes(
        node.suite,
        *node.keys()?.pseudonym.as_bytes(),
    );
    let engine = Engine::new(&schema, profile, &agreement, &pseudonym_master);
    progress.stage(
        "de-identification: counting equivalence classes",
        Some(meta.rows),
        Unit::Records,
    );
    let range = (rows.from, rows.to);
    let decision = deid::count_classes(node, &meta, range, &engine, progress)?.finish()?;
    progress.done();
    let mut recipients = Vec::with_capacity(decision.recipients.len());
    let mut missing = Vec::new();
    for dept in &decision.recipients {
        match crate::service::directory::recipient_key(node, dept)? {
            Some(body) => recipients.push(Recipient {
                dept: dept.clone(),
                public: body.public,
            }),
            None => missing.push(dept.clone()),
        }
    }
    missing.sort();
    if !missing.is_empty() {
        // Every missing key at once, and where to act: here, not at the
        // requester.
        return Err(RuleViolation::MissingRecipientKey {
            dataset: meta.id.clone(),
            profile: spec.profile.clone(),
            field: engine
                .output_fields()
                .into_iter()
                .find(|f| f.sealed)
                .map(|f| f.name)
                .unwrap_or_default(),
            node: node.config.dept.clone(),
            recipients: missing,
        }
        .into());
    }
    let release_id = pdx_crypto::rng::bytes::<16>()?.to_vec();
    let ctx = ReleaseContext {
        dataset_id: meta.id.clone(),
        release_id: release_id
            .as_slice()
            .try_into()
            .map_err(|_| NodeError::Invalid("release id".into()))?,
    };
    let (sealer, wrapped) = Sealer::new(node.suite, &ctx, &recipients)?;
    let mut chunker = Chunker {
        node,
        key: out_key(node, &release_id)?,
        release_id: release_id.clone(),
        recipients: decision.recipients.clone(),
        open: HashMap::new(),
        chunks: Vec::new(),
        batch: WriteBatch::default(),
        max_records: u64::from(node.config.transfer.chunk_records),
        max_bytes: node.config.transfer.chunk_bytes as usize,
        records: 0,
        progress,
    };
    progress.stage(
        "de-identification: emitting records",
        Some(decision.report.records_out),
        Unit::Records,
    );
    let how = deid::Emission {
        sink: &EncodedRecords::default,
        sealer: &|| EnvelopeSealer(&sealer),
        error: &rule_error,
    };
    let emit_result = deid::emit(
        node,
        &meta,
        range,
        (&engine, &decision),
        how,
        &NoProgress,
        |block| chunker.take(block),
    );
    let cleanup = |node: &Node| {
        node.store.delete_range(
            CF_OUT_CHUNKS,
            &release_id,
            &store::chunk_key_end(&release_id),
        )
    };
    if let Err(e) = emit_result {
        cleanup(node)?;
        return Err(e);
    }
    let parts: Vec<Option<usize>> = {
        let mut p: Vec<Option<usize>> = chunker.open.keys().copied().collect();
        p.sort();
        p
    };
    for part in parts {
        chunker.close(part)?;
    }
    node.store
        .write_nosync(std::mem::take(&mut chunker.batch))?;
    progress.done();
    let chunks = chunker.chunks;
    let content_digest = transfer_digest(
        node.suite,
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32, &c.digest)),
    );
    let fields: Vec<ManifestField> = engine
        .output_fields()
        .into_iter()
        .map(|f| ManifestField {
            name: f.name,
            treatment: f.treatment,
            classification: f.classification,
            sealed: f.sealed,
        })
        .collect();
    let body = ManifestBody {
        version: 1,
        release_id: release_id.clone(),
        sender: node.config.dept.clone(),
        recipient: spec.recipient.clone(),
        dataset: meta.id.clone(),
        dataset_digest: meta.digest,
        schema_id: meta.schema_id.clone(),
        schema_digest: meta.schema_digest,
        profile: spec.profile.clone(),
        agreement: spec.agreement.clone(),
        purpose: spec.purpose.clone(),
        legal_basis: profile
            .legal_basis
            .clone()
            .or(schema.dataset.legal_basis.clone()),
        created_ms: now_ms(),
        fields,
        record_count: decision.report.records_out,
        chunks: chunks.clone(),
        content_digest,
        recipients: wrapped,
        report: decision.report.clone(),
        rows: Some(rows.clone()),
    };
    let (signed, certificate) = node.sign_certified(SignatureDomain::Manifest, &body)?;
    let manifest = Manifest {
        signed,
        certificate,
    };
    let out = OutRelease {
        release_id: release_id.clone(),
        manifest: manifest.clone(),
        dataset: meta.id.clone(),
        generation: meta.generation.clone(),
        profile: spec.profile.clone(),
        agreement: spec.agreement.clone(),
        purpose: spec.purpose.clone(),
        recipient: spec.recipient.clone(),
        created_ms: body.created_ms,
        record_count: body.record_count,
        chunks: chunks.len() as u32,
        deliveries: Vec::new(),
        dataset_digest: Some(meta.digest),
        rows: Some(rows.clone()),
    };
    let mut d = node.draft(EventKind::Release, &spec.operator);
    d.subject = Subject {
        dataset: Some(meta.id.clone()),
        release: Some(release_hex(&release_id)),
        digest: Some(content_digest),
    };
    d.counterparty = Some(spec.recipient.clone());
    d.agreement = spec.agreement.clone();
    d.purpose = Some(spec.purpose.clone());
    d.legal_basis = body.legal_basis.clone();
    d.fields = body.fields.iter().map(ManifestField::field_ref).collect();
    d.record_count = Some(body.record_count);
    d.payload_digest = Some(manifest.signed.digest());
    let r = &decision.report;
    d.detail = Some(format!(
        "profile {}: rows {}..{}{}: {} of {} records, {} suppressed, k={} (required {}), l={} (required {}), {} chunks, {} recipients of sealed fields",
        spec.profile,
        rows.from,
        rows.to,
        rows.previous
            .as_ref()
            .map(|p| format!(" after release {}", release_hex(p)))
            .unwrap_or_default(),
        r.records_out,
        r.records_in,
        r.records_suppressed,
        r.k_achieved,
        r.k_required,
        r.l_achieved,
        r.l_required,
        chunks.len(),
        recipients.len()
    ));
    // The release record and its entry are one durable step.
    let record = node.store.put_op(CF_OUT_RELEASES, &release_id, &out)?;
    if let Err(e) = node.log_with(d, vec![record]) {
        cleanup(node)?;
        return Err(e);
    }
    Ok(out)
}

/// Where a release starts: row 0, or for an incremental one the watermark
/// of the release the recipient holds (which must be one made for it from
/// this dataset version's lineage, with the same profile, agreement and
/// purpose). Profiles with a privacy model are refused: each increment
/// would be checked alone, not with what the recipient already holds.
fn increment_start(
    node: &Node,
    spec: &ReleaseSpec,
    meta: &DatasetMeta,
    profile: &pdx_schemas::schema::Profile,
) -> Result<(u64, Option<Vec<u8>>)> {
    if !spec.incremental {
        return Ok((0, None));
    }
    if profile.k > 1 || profile.l.is_some() {
        return Err(RuleViolation::IncrementalPrivacyModel {
            dataset: meta.id.clone(),
            profile: spec.profile.clone(),
            k: profile.k,
        }
        .into());
    }
    let Some(after) = &spec.after else {
        return Ok((0, None));
    };
    let prev = node
        .store
        .get::<OutRelease>(CF_OUT_RELEASES, after)?
        .filter(|p| {
            p.dataset == spec.dataset
                && p.profile == spec.profile
                && p.agreement == spec.agreement
                && p.purpose == spec.purpose
                && p.recipient == spec.recipient
        })
        .ok_or_else(|| {
            NodeError::NotFound(format!(
                "release {} was not made here for {} from dataset {} with profile {} and this purpose; fetch without --incremental for a full release",
                release_hex(after),
                spec.recipient,
                spec.dataset,
                spec.profile
            ))
        })?;
    let Some(range) = prev.rows.filter(|_| prev.generation == meta.generation) else {
        return Err(NodeError::NotFound(format!(
            "dataset {} was replaced (or release {} predates watermarks); fetch without --incremental for a full release",
            spec.dataset,
            release_hex(after)
        )));
    };
    if range.to >= meta.rows {
        return Err(NodeError::NotFound(format!(
            "no rows were added to dataset {} since release {} (watermark {}); nothing new to fetch",
            spec.dataset,
            release_hex(after),
            range.to
        )));
    }
    Ok((range.to, Some(after.clone())))
}

/// Loads an outgoing release.
pub fn out_release(node: &Node, id: &[u8]) -> Result<OutRelease> {
    node.store
        .get(CF_OUT_RELEASES, id)?
        .ok_or_else(|| NodeError::NotFound(format!("no outgoing release {}", release_hex(id))))
}

/// Logs the `send` of (part of) a release this node produced and adds the
/// delivery to its record. The entry comes first: a crash in between leaves
/// the evidence without the convenience copy (`pdx releases` then shows the
/// release as not yet delivered; the audit log is authoritative).
pub fn log_delivery(
    node: &Node,
    id: &[u8],
    entry: pdx_audit::EntryDraft,
    delivery: &mut Delivery,
) -> Result<u64> {
    let seq = node.log(entry)?.seq;
    delivery.audit_seq = seq;
    if let Some(mut out) = node.store.get::<OutRelease>(CF_OUT_RELEASES, id)? {
        out.deliveries.push(delivery.clone());
        node.store.put(CF_OUT_RELEASES, id, &out)?;
    }
    Ok(seq)
}

/// Loads chunk `index` of an outgoing release (plaintext records bytes).
pub fn out_chunk(node: &Node, id: &[u8], index: u32) -> Result<Vec<u8>> {
    let sealed = node
        .store
        .get_raw(CF_OUT_CHUNKS, &chunk_key(id, index))?
        .ok_or_else(|| {
            NodeError::corrupt(format!("out.chunks/{}/{index}", release_hex(id)), "missing")
        })?;
    Ok(out_key(node, id)?.open_block(u64::from(index), &sealed)?)
}
