//! Reading a complete received release back: every row, with the fields
//! sealed for this node opened (audited), and its export to CSV.

use super::{
    InRelease, in_chunk, in_manifest, in_progress, in_release, release_hex, verify_manifest,
};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::progress::{Progress, Unit};
use crate::proto::msg::{ManifestBody, ManifestField};
use crate::records;
use pdx_audit::{EventKind, Subject};
use pdx_crypto::envelope::{Opener, ReleaseContext};
use serde::{Deserialize, Serialize};

/// What an export did.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
            in_progress(node, id)?,
            rel.plan.len()
        )));
    }
    let body = verify_manifest(node, &in_manifest(node, id)?)?;
    let mut f = start(&body)
        .map_err(|e| NodeError::Invalid(format!("release {}: {e}", release_hex(id))))?;
    let ctx = ReleaseContext {
        dataset_id: body.dataset.clone(),
        release_id: id
            .try_into()
            .map_err(|_| NodeError::Invalid("release id".into()))?,
    };
    // The key guard is dropped at once: the loop below takes it again (a
    // reader waiting behind a writer, `pdx cert install`, would deadlock).
    let opened = {
        let keys = node.keys()?;
        Opener::new(
            node.suite,
            &ctx,
            &body.recipients,
            &node.config.dept,
            |kid| keys.encryption_key(kid),
        )
    };
    let opener = match opened {
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
    d.agreement = body.agreement.clone();
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
