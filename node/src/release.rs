//! Releases: producing one from a dataset (rules, de-identification, field
//! encryption, chunking, signed manifest), storing what was received, and
//! exporting a received release to CSV (opening the fields sealed for us).

use crate::dataset::{self, DatasetMeta};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::progress::{Progress, Unit};
use crate::proto::msg::{ChunkInfo, Manifest, ManifestBody, ManifestField, transfer_digest};
use crate::records::{self, ChunkBuilder};
use crate::store::{CF_IN_CHUNKS, CF_IN_RELEASES, CF_OUT_CHUNKS, CF_OUT_RELEASES, chunk_key};
use pdx_audit::store::now_ms;
use pdx_audit::{EventKind, Subject};
use pdx_crypto::atrest::ObjectKey;
use pdx_crypto::envelope::{Opener, Recipient, ReleaseContext, Sealer};
use pdx_crypto::wire::Signed;
use pdx_crypto::{Digest, SignatureDomain};
use pdx_schemas::RuleViolation;
use pdx_schemas::engine::{Engine, FieldSealer, OutValue, RecordSink};
use pdx_schemas::rules::check_external_release;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One delivery of (part of) an outgoing release, confirmed by a receipt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// Receiving department.
    pub to: String,
    /// Transfer digest.
    pub content_digest: Digest,
    /// Records delivered.
    pub records: u64,
    /// Digest of the signed receipt.
    pub receipt_digest: Digest,
    /// When (ms).
    pub time_ms: u64,
    /// Audit entry of the send.
    pub audit_seq: u64,
}

/// A release this node produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutRelease {
    /// Release id.
    #[serde(with = "serde_bytes")]
    pub release_id: Vec<u8>,
    /// Signed manifest.
    pub manifest: Manifest,
    /// Dataset.
    pub dataset: String,
    /// Dataset generation it was made from.
    #[serde(with = "serde_bytes")]
    pub generation: Vec<u8>,
    /// Profile.
    pub profile: String,
    /// Agreement.
    pub agreement: String,
    /// Purpose.
    pub purpose: String,
    /// Department it was made for.
    pub recipient: String,
    /// Created (ms).
    pub created_ms: u64,
    /// Records.
    pub record_count: u64,
    /// Chunks.
    pub chunks: u32,
    /// Confirmed deliveries.
    pub deliveries: Vec<Delivery>,
}

/// A release received (from its sender or a relay).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InRelease {
    /// Release id.
    #[serde(with = "serde_bytes")]
    pub release_id: Vec<u8>,
    /// The original signed manifest.
    pub manifest: Manifest,
    /// Original sender.
    pub sender: String,
    /// Department it arrived from (sender or relay).
    pub from: String,
    /// Dataset.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Agreement.
    pub agreement: String,
    /// Purpose.
    pub purpose: String,
    /// Chunk indices expected, in order.
    pub plan: Vec<u32>,
    /// Chunks of the plan durably stored.
    pub stored: u32,
    /// Whether everything verified and was stored.
    pub complete: bool,
    /// Completed (ms).
    pub completed_ms: Option<u64>,
    /// Transfer digest (when complete).
    pub content_digest: Option<Digest>,
    /// Records (when complete).
    pub record_count: u64,
    /// Audit entry of the receive.
    pub receive_seq: Option<u64>,
}

/// Hex id of a release.
pub fn release_hex(id: &[u8]) -> String {
    hex::encode(id)
}

/// Parses a release id given on the command line.
pub fn parse_release_id(s: &str) -> Result<Vec<u8>> {
    let id = hex::decode(s.trim()).map_err(|_| {
        NodeError::Invalid(format!("{s:?} is not a release id (32 hex characters)"))
    })?;
    if id.len() != 16 {
        return Err(NodeError::Invalid(format!(
            "{s:?} is not a release id (32 hex characters)"
        )));
    }
    Ok(id)
}

fn out_key(node: &Node, release: &[u8]) -> Result<ObjectKey> {
    Ok(node
        .keys()?
        .storage
        .object_key("release-chunks", release, b"out")?)
}

fn in_key(node: &Node, release: &[u8]) -> Result<ObjectKey> {
    Ok(node
        .keys()?
        .storage
        .object_key("received-chunks", release, b"in")?)
}

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
            digest: Digest::of(&bytes),
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

impl RecordSink for Chunker<'_> {
    fn record(&mut self, index: u64, values: &[OutValue<'_>]) -> std::result::Result<(), String> {
        let part = values.iter().find_map(|v| match v {
            OutValue::Sealed { recipient, .. } => Some(*recipient),
            _ => None,
        });
        let b = self.open.entry(part).or_default();
        b.push(index, values);
        let full = b.count() >= self.max_records || b.len() >= self.max_bytes;
        self.records += 1;
        if self.records.is_multiple_of(8192) {
            self.progress.set(self.records);
        }
        if full {
            self.close(part).map_err(|e| e.to_string())?;
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
/// recipient, profile, agreement and purpose (re-fetch is idempotent).
fn existing_release(
    node: &Node,
    spec: &ReleaseSpec,
    meta: &DatasetMeta,
    agreement: &str,
) -> Result<Option<OutRelease>> {
    Ok(node
        .store
        .scan::<OutRelease>(CF_OUT_RELEASES, b"")?
        .into_iter()
        .map(|(_, r)| r)
        .find(|r| {
            r.dataset == spec.dataset
                && r.generation == meta.generation
                && r.profile == spec.profile
                && r.agreement == agreement
                && r.purpose == spec.purpose
                && r.recipient == spec.recipient
        }))
}

/// Produces (or finds) the release `spec` describes. Every rule is checked;
/// the release is audited.
pub fn produce(node: &Node, spec: &ReleaseSpec, progress: &dyn Progress) -> Result<OutRelease> {
    let meta = dataset::meta(node, &spec.dataset)?;
    let schema = meta.schema()?;
    let profile = schema.profile(&spec.profile)?;
    check_external_release(&schema, profile, &spec.recipient, spec.agreement.as_deref())?;
    let agreement = spec.agreement.clone().unwrap_or_default();
    if let Some(r) = existing_release(node, spec, &meta, &agreement)? {
        return Ok(r);
    }
    let pseudonym_master =
        pdx_crypto::pseudonym::PseudonymMaster::from_bytes(*node.keys()?.pseudonym.as_bytes());
    let engine = Engine::new(&schema, profile, &agreement, &pseudonym_master);
    progress.stage(
        "de-identification: counting equivalence classes",
        Some(meta.rows),
        Unit::Records,
    );
    let mut counter = engine.counter();
    let mut n = 0u64;
    dataset::for_each_row(node, &meta, |row| {
        counter.add(row)?;
        n += 1;
        if n.is_multiple_of(16384) {
            progress.set(n);
        }
        Ok(())
    })?;
    progress.done();
    let decision = counter.finish()?;
    let mut recipients = Vec::with_capacity(decision.recipients.len());
    for dept in &decision.recipients {
        let field = engine
            .output_fields()
            .into_iter()
            .find(|f| f.sealed)
            .map(|f| f.name)
            .unwrap_or_default();
        let body = node
            .recipient_key(dept)?
            .ok_or_else(|| RuleViolation::MissingRecipientKey {
                dataset: meta.id.clone(),
                profile: spec.profile.clone(),
                field,
                recipient: dept.clone(),
            })?;
        recipients.push(Recipient {
            dept: dept.clone(),
            public: body.public,
        });
    }
    let release_id = pdx_crypto::rng::bytes::<16>()?.to_vec();
    let ctx = ReleaseContext {
        dataset_id: meta.id.clone(),
        release_id: release_id
            .as_slice()
            .try_into()
            .map_err(|_| NodeError::Invalid("release id".into()))?,
    };
    let (sealer, wrapped) = Sealer::new(&ctx, &recipients)?;
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
    let mut emitter = engine.emitter(&decision);
    let mut field_sealer = EnvelopeSealer(&sealer);
    let emit_result = dataset::for_each_row(node, &meta, |row| {
        emitter
            .emit(row, &mut field_sealer, &mut chunker)
            .map_err(rule_error)?;
        Ok(())
    });
    let cleanup = |node: &Node| {
        let mut end = release_id.clone();
        end.extend_from_slice(&[0xff; 5]);
        node.store.delete_range(CF_OUT_CHUNKS, &release_id, &end)
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
        agreement: agreement.clone(),
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
    };
    let signed = Signed::sign(SignatureDomain::Manifest, &node.keys()?.identity, &body)?;
    let manifest = Manifest {
        signed,
        certificate: node.cert.to_vec(),
    };
    let out = OutRelease {
        release_id: release_id.clone(),
        manifest: manifest.clone(),
        dataset: meta.id.clone(),
        generation: meta.generation.clone(),
        profile: spec.profile.clone(),
        agreement: agreement.clone(),
        purpose: spec.purpose.clone(),
        recipient: spec.recipient.clone(),
        created_ms: body.created_ms,
        record_count: body.record_count,
        chunks: chunks.len() as u32,
        deliveries: Vec::new(),
    };
    node.store.put(CF_OUT_RELEASES, &release_id, &out)?;
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
        "profile {}: {} of {} records, {} suppressed, k={} (required {}), l={} (required {}), {} chunks, {} recipients of sealed fields",
        spec.profile,
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
    if let Err(e) = node.log(d) {
        let mut b = WriteBatch::default();
        b.delete_cf(node.store.cf(CF_OUT_RELEASES)?, &release_id);
        node.store.write(b)?;
        cleanup(node)?;
        return Err(e);
    }
    Ok(out)
}

/// Loads an outgoing release.
pub fn out_release(node: &Node, id: &[u8]) -> Result<OutRelease> {
    node.store
        .get(CF_OUT_RELEASES, id)?
        .ok_or_else(|| NodeError::NotFound(format!("no outgoing release {}", release_hex(id))))
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

/// Loads an incoming release.
pub fn in_release(node: &Node, id: &[u8]) -> Result<Option<InRelease>> {
    node.store.get(CF_IN_RELEASES, id)
}

/// Stores chunk `index` of an incoming release and advances `stored` in one
/// synced batch: a crash never leaves a stored count without its chunk.
pub fn store_in_chunk(
    node: &Node,
    rel: &mut InRelease,
    position: u32,
    index: u32,
    records: &[u8],
) -> Result<()> {
    if position != rel.stored {
        return Err(NodeError::Invalid(format!(
            "chunk position {position} but {} stored",
            rel.stored
        )));
    }
    let sealed = in_key(node, &rel.release_id)?.seal_block(u64::from(index), records)?;
    rel.stored += 1;
    let mut b = WriteBatch::default();
    b.put_cf(
        node.store.cf(CF_IN_CHUNKS)?,
        chunk_key(&rel.release_id, index),
        sealed,
    );
    node.store
        .batch_put(&mut b, CF_IN_RELEASES, &rel.release_id, rel)?;
    if let Err(e) = node.store.write(b) {
        rel.stored -= 1;
        return Err(e);
    }
    Ok(())
}

/// Loads chunk `index` of an incoming release.
pub fn in_chunk(node: &Node, id: &[u8], index: u32) -> Result<Vec<u8>> {
    let sealed = node
        .store
        .get_raw(CF_IN_CHUNKS, &chunk_key(id, index))?
        .ok_or_else(|| {
            NodeError::corrupt(format!("in.chunks/{}/{index}", release_hex(id)), "missing")
        })?;
    Ok(in_key(node, id)?.open_block(u64::from(index), &sealed)?)
}

/// Every release produced.
pub fn out_releases(node: &Node) -> Result<Vec<OutRelease>> {
    Ok(node
        .store
        .scan::<OutRelease>(CF_OUT_RELEASES, b"")?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Every release received.
pub fn in_releases(node: &Node) -> Result<Vec<InRelease>> {
    Ok(node
        .store
        .scan::<InRelease>(CF_IN_RELEASES, b"")?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Verifies a manifest's certificate (CA, CRL) and signature.
pub fn verify_manifest(node: &Node, m: &Manifest) -> Result<ManifestBody> {
    let info = node.check_cert(&m.certificate)?;
    let body: ManifestBody = m.signed.verify(SignatureDomain::Manifest, &info.identity)?;
    if body.sender != info.dept {
        return Err(NodeError::Refused(format!(
            "manifest names sender {} but is signed by the certificate of {}",
            body.sender, info.dept
        )));
    }
    Ok(body)
}

/// What an export did.
#[derive(Clone, Debug, Serialize)]
pub struct ExportOutcome {
    /// Release.
    pub release: String,
    /// File written.
    pub out: String,
    /// Records written.
    pub records: u64,
    /// Fields whose sealed values were decrypted.
    pub decrypted_fields: Vec<String>,
    /// Sealed values this node could not open (sealed for other departments).
    pub sealed_for_others: u64,
    /// Values decrypted.
    pub values_decrypted: u64,
}

/// Departments (other than this node) the sender of a received release sealed chunks for.
pub fn chunk_recipients(node: &Node, id: &[u8]) -> Result<Vec<String>> {
    let rel = in_release(node, id)?
        .ok_or_else(|| NodeError::NotFound(format!("no received release {}", release_hex(id))))?;
    let body = verify_manifest(node, &rel.manifest)?;
    let set: std::collections::BTreeSet<String> = body
        .chunks
        .iter()
        .filter_map(|c| c.recipient.clone())
        .filter(|r| *r != node.config.dept)
        .collect();
    Ok(set.into_iter().collect())
}

/// What reading a received release's rows found.
#[derive(Clone, Debug)]
pub struct RowsRead {
    /// The verified manifest body.
    pub body: ManifestBody,
    /// The stored release.
    pub release: InRelease,
    /// Records read.
    pub records: u64,
    /// Values decrypted.
    pub decrypted: u64,
    /// Sealed values this node could not open.
    pub sealed_for_others: u64,
    /// Fields whose values were decrypted.
    pub fields_opened: Vec<String>,
}

/// Reads every row of a complete received release: once the manifest is
/// verified, `start` sees it (to find columns, write a header) and returns the
/// per-row function, which gets clear values as they are, values sealed for
/// this node decrypted, values sealed for others as `None`. The caller audits
/// the decryption ([`audit_decrypt`]).
pub fn for_each_received_row<F>(
    node: &Node,
    id: &[u8],
    progress: &dyn Progress,
    start: impl FnOnce(&ManifestBody) -> std::result::Result<F, String>,
) -> Result<RowsRead>
where
    F: FnMut(u64, &[Option<&[u8]>]) -> std::result::Result<(), String>,
{
    let rel = in_release(node, id)?
        .ok_or_else(|| NodeError::NotFound(format!("no received release {}", release_hex(id))))?;
    if !rel.complete {
        return Err(NodeError::Invalid(format!(
            "release {} is incomplete ({} of {} chunks); run pdx fetch to finish it",
            release_hex(id),
            rel.stored,
            rel.plan.len()
        )));
    }
    let body = verify_manifest(node, &rel.manifest)?;
    let mut f = start(&body)
        .map_err(|e| NodeError::Invalid(format!("release {}: {e}", release_hex(id))))?;
    let ctx = ReleaseContext {
        dataset_id: body.dataset.clone(),
        release_id: id
            .try_into()
            .map_err(|_| NodeError::Invalid("release id".into()))?,
    };
    let keys = node.keys()?;
    let opener = match Opener::new(&ctx, &body.recipients, &node.config.dept, |kid| {
        keys.encryption_key(kid)
    }) {
        Ok(o) => Some(o),
        Err(pdx_crypto::CryptoError::NotARecipient { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let mut written = 0u64;
    let mut decrypted = 0u64;
    let mut sealed_for_others = 0u64;
    let mut decrypted_fields = vec![false; body.fields.len()];
    let mut row: Vec<Vec<u8>> = vec![Vec::new(); body.fields.len()];
    let mut present = vec![false; body.fields.len()];
    progress.stage(
        &format!("read {}", release_hex(id)),
        Some(rel.record_count),
        Unit::Records,
    );
    for &index in &rel.plan {
        let bytes = in_chunk(node, id, index)?;
        records::decode(&bytes, body.fields.len(), |record, values| {
            for (i, v) in values.iter().enumerate() {
                row[i].clear();
                present[i] = true;
                match v {
                    records::Value::Null => {}
                    records::Value::Text(t) => row[i].extend_from_slice(t.as_bytes()),
                    records::Value::Sealed {
                        recipient,
                        ciphertext,
                    } => match &opener {
                        Some(o) if o.can_open(*recipient) => {
                            let plain = o
                                .open_field(
                                    *recipient,
                                    record,
                                    i as u32,
                                    &body.fields[i].name,
                                    ciphertext,
                                )
                                .map_err(|e| e.to_string())?;
                            row[i].extend_from_slice(&plain);
                            decrypted += 1;
                            decrypted_fields[i] = true;
                        }
                        _ => {
                            sealed_for_others += 1;
                            present[i] = false;
                        }
                    },
                }
            }
            let view: Vec<Option<&[u8]>> = row
                .iter()
                .zip(&present)
                .map(|(v, &p)| p.then_some(v.as_slice()))
                .collect();
            f(record, &view)?;
            written += 1;
            if written.is_multiple_of(16384) {
                progress.set(written);
            }
            Ok(())
        })
        .map_err(|e| NodeError::corrupt(format!("in.chunks/{}/{index}", release_hex(id)), e))?;
    }
    progress.done();
    let fields_opened = body
        .fields
        .iter()
        .zip(&decrypted_fields)
        .filter(|(_, d)| **d)
        .map(|(f, _)| f.name.clone())
        .collect();
    Ok(RowsRead {
        body,
        release: rel,
        records: written,
        decrypted,
        sealed_for_others,
        fields_opened,
    })
}

/// The subject of entries about a received release.
pub fn received_subject(read: &RowsRead) -> Subject {
    Subject {
        dataset: Some(read.body.dataset.clone()),
        release: Some(release_hex(&read.release.release_id)),
        digest: read.release.content_digest,
    }
}

/// Audits the decryption of a received release's sealed values (if any were opened).
pub fn audit_decrypt(node: &Node, read: &RowsRead, operator: &str, why: &str) -> Result<()> {
    if read.decrypted == 0 {
        return Ok(());
    }
    let body = &read.body;
    let mut d = node.draft(EventKind::Decrypt, operator);
    d.subject = received_subject(read);
    d.counterparty = Some(body.sender.clone());
    d.agreement = Some(body.agreement.clone()).filter(|a| !a.is_empty());
    d.purpose = Some(body.purpose.clone());
    d.fields = body
        .fields
        .iter()
        .filter(|f| read.fields_opened.contains(&f.name))
        .map(ManifestField::field_ref)
        .collect();
    d.record_count = Some(read.records);
    d.detail = Some(format!("{} sealed values opened {why}", read.decrypted));
    node.log(d)?;
    Ok(())
}

/// Writes a received release to CSV, decrypting the fields sealed for this node
/// (audited: `decrypt` when anything was opened, and `export`).
pub fn export(
    node: &Node,
    id: &[u8],
    out: &str,
    operator: &str,
    progress: &dyn Progress,
) -> Result<ExportOutcome> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .map_err(NodeError::io(out))?;
    let mut w = csv::Writer::from_writer(std::io::BufWriter::with_capacity(1 << 20, file));
    let writer = &mut w;
    let read = for_each_received_row(node, id, progress, move |body| {
        writer
            .write_record(body.fields.iter().map(|f| f.name.as_str()))
            .map_err(|e| format!("{out}: {e}"))?;
        Ok(move |_, row: &[Option<&[u8]>]| {
            writer
                .write_record(row.iter().map(|v| v.unwrap_or(b"")))
                .map_err(|e| format!("{out}: {e}"))
        })
    });
    let read = match read {
        Ok(r) => r,
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
    };
    w.flush().map_err(NodeError::io(out))?;
    audit_decrypt(node, &read, operator, &format!("for export to {out}"))?;
    let body = &read.body;
    let mut d = node.draft(EventKind::Export, operator);
    d.subject = received_subject(&read);
    d.counterparty = Some(body.sender.clone());
    d.purpose = Some(body.purpose.clone());
    d.fields = body.fields.iter().map(ManifestField::field_ref).collect();
    d.record_count = Some(read.records);
    d.detail = Some(format!(
        "exported to {out}; {} values sealed for other departments left empty",
        read.sealed_for_others
    ));
    node.log(d)?;
    Ok(ExportOutcome {
        release: release_hex(id),
        out: out.to_string(),
        records: read.records,
        decrypted_fields: read.fields_opened,
        sealed_for_others: read.sealed_for_others,
        values_decrypted: read.decrypted,
    })
}
