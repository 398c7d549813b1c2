//! Cross-province settlement (跨省异地就医直接结算 清算): the insured province's
//! signed confirmation of the records relayed to it, and the national
//! clearing node's matrix of what each insured province owes each treatment
//! province, with net positions.
//!
//! The clearing node reads only clear fields of the `clearing` profile
//! (regions and amounts); identities stay sealed for the insured province,
//! which opens them, checks each record against its own insured registry and
//! signs what it confirms. Owns the confirmation keys of the `docs` family
//! (`outbox` owns the outbox and delivery keys).
//!
//! Over 800 lines with its proptests: confirmation, clearing and the checked
//! arithmetic both share stay together.
//!
//! Amounts are fen in `i64` and counts `u64`; every sum is checked, and one
//! that overflows refuses the confirmation or clearing with an error (never
//! wraps, never saturates).

use super::documents::{Certified, KIND_CONFIRMATION, KIND_CONFIRMATION_BATCH, SubmissionFile};
use super::outbox::Pending;
use super::release::{self, parse_release_id, release_hex};
use crate::error::{NodeError, Result};
use crate::node::{NODE_OPERATOR, Node};
use crate::progress::Progress;
use crate::proto::msg::Accepted;
use crate::service::Dispatch;
use crate::store::{self, CF_DOCS};
use pdx_audit::store::now_ms;
use pdx_audit::{EventKind, FieldRef};
use pdx_crypto::wire::from_cbor;
use pdx_crypto::{Digest, SignatureDomain};
use pdx_schemas::types::{decimal_to_units, units_to_decimal};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Most rejected settlement ids a confirmation lists (the count is always exact).
pub const MAX_LISTED_REJECTIONS: usize = 10_000;
/// Scale of settlement amounts (yuan with fen).
const AMOUNT_SCALE: u8 = 2;

/// An insured province's signed confirmation of one relayed release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationBody {
    /// Format version (1).
    pub version: u8,
    /// Release id (hex).
    pub release: String,
    /// Transfer digest of what the confirmer received.
    pub content_digest: Digest,
    /// Treatment province (the release's original sender).
    pub treatment: String,
    /// Insured province (the confirmer; must match the signing certificate).
    pub confirmer: String,
    /// Amount field confirmed.
    pub amount_field: String,
    /// Records received.
    pub records: u64,
    /// Records whose person is in the insured registry.
    pub confirmed: u64,
    /// Sum of the amount over confirmed records, in fen.
    pub confirmed_fen: i64,
    /// Records refused (person unknown or identity mismatch).
    pub rejected: u64,
    /// Sum of the amount over refused records, in fen.
    pub rejected_fen: i64,
    /// Settlement ids of refused records (at most [`MAX_LISTED_REJECTIONS`]).
    pub rejected_ids: Vec<String>,
    /// When (ms).
    pub created_ms: u64,
    /// Why each refused record is disputed, with the evidence (at most
    /// [`MAX_LISTED_REJECTIONS`]; absent in confirmations that give none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disputes: Vec<Dispute>,
}

/// Most releases one batch confirmation lists.
pub const MAX_BATCH_RELEASES: usize = 1024;
/// Encoded entries a batch holds before the next batch starts (the
/// `Submit` message carrying it is capped at 16 MiB).
const BATCH_BYTES: usize = 8 << 20;

/// An insured province's signed confirmation of several relayed releases:
/// each entry says what a one-release confirmation would.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationBatchBody {
    /// Format version (1).
    pub version: u8,
    /// Insured province (must match the signing certificate and every entry).
    pub confirmer: String,
    /// When (ms).
    pub created_ms: u64,
    /// One confirmation per release (1 to [`MAX_BATCH_RELEASES`], each
    /// release once).
    pub confirmations: Vec<ConfirmationBody>,
}

/// What a confirmation key holds when the confirmation came in a batch:
/// the digest of the batch, stored once under `confirmation-batch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct InBatch {
    batch: Digest,
}

/// Why the insured province disputes a relayed settlement record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DisputeReason {
    /// The person number is not in the insured registry.
    PersonUnknown,
    /// The person is insured here but the identity number differs.
    IdentityMismatch,
    /// The amount differs from the signed online response this province gave
    /// for the settlement id.
    AmountDiffers,
    /// The settlement id was already in a record confirmed in this run.
    DuplicateSettlement,
    /// The settlement date is outside the month being cleared.
    OutsideMonth,
}

impl DisputeReason {
    /// The reason's name as in documents and `--json`.
    pub fn label(self) -> &'static str {
        match self {
            DisputeReason::PersonUnknown => "person-unknown",
            DisputeReason::IdentityMismatch => "identity-mismatch",
            DisputeReason::AmountDiffers => "amount-differs",
            DisputeReason::DuplicateSettlement => "duplicate-settlement",
            DisputeReason::OutsideMonth => "outside-month",
        }
    }
}

/// One disputed record and its evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    /// Settlement id.
    pub setl_id: String,
    /// Why.
    pub reason: DisputeReason,
    /// Amount of the record, in fen.
    pub amount_fen: i64,
    /// BLAKE3 (key context `pdx/v1 settlement record`) of the record as
    /// received: CBOR array of its values (text or null), opened.
    pub record_digest: Digest,
    /// For `amount-differs`: digest of the signed online response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_digest: Option<Digest>,
    /// For `amount-differs`: the amount that response signed, in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_fen: Option<i64>,
}

/// Digest of a received record's opened values (dispute evidence), in the
/// network's suite.
pub fn record_digest(suite: pdx_crypto::Suite, row: &[Option<&[u8]>]) -> Digest {
    let values: Vec<Option<String>> = row
        .iter()
        .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
        .collect();
    let bytes = pdx_crypto::wire::to_cbor(&values).unwrap_or_default();
    suite
        .hasher("pdx/v1 settlement record")
        .update(&bytes)
        .finalize()
}

/// The signed online responses this node gave, by settlement id: amount
/// (fen) and digest of the signed response.
pub type OnlineIndex = HashMap<String, (i64, Digest)>;

/// Indexes the `ok` responses this node served (kept `services.retention_days`)
/// that carry `setl_id` and `amount_field`.
pub fn online_index(node: &Node, amount_field: &str) -> Result<OnlineIndex> {
    use crate::service::calls::{self, CallFilter, Role};
    let mut out = OnlineIndex::new();
    let filter = CallFilter {
        outcome: Some("ok".into()),
        ..CallFilter::default()
    };
    for s in calls::list_calls(node, &filter)? {
        if s.role != Role::Provider || s.replayed {
            continue;
        }
        for c in calls::stored(node, &s.call_id)? {
            let (Some(values), Some(response)) = (&c.response_values, &c.response) else {
                continue;
            };
            let text = |f: &str| values.get(f).cloned().flatten();
            if let (Some(id), Some(amount)) = (text("setl_id"), text(amount_field))
                && let Some(fen) =
                    decimal_to_units(&amount, AMOUNT_SCALE).and_then(|u| i64::try_from(u).ok())
            {
                out.insert(id, (fen, response.digest()));
            }
        }
    }
    Ok(out)
}

/// What a confirmation checks each record against.
#[derive(Debug)]
pub struct Checks {
    /// The insured registry.
    pub persons: Registry,
    /// The signed online responses this node gave.
    pub online: OnlineIndex,
    /// The month cleared (`YYYY-MM`), checked on `date_field` when given.
    pub month: Option<String>,
    /// The date or datetime field the month is read from.
    pub date_field: String,
    /// Settlement ids seen so far in this run (duplicates).
    pub seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn column(fields: &[String], name: &str, what: &str) -> Result<usize> {
    fields.iter().position(|f| f == name).ok_or_else(|| {
        NodeError::Invalid(format!(
            "{what} has no field {name:?} (fields: {})",
            fields.join(", ")
        ))
    })
}

/// An insured registry: `psn_no` → `certno` (empty when the file has no certno column).
pub type Registry = HashMap<String, String>;

/// Loads an insured registry CSV (`psn_no` column, optional `certno`).
pub fn load_registry(path: &str) -> Result<Registry> {
    let file = std::fs::File::open(path).map_err(NodeError::io(path))?;
    let mut r = csv::Reader::from_reader(std::io::BufReader::new(file));
    let header: Vec<String> = r
        .headers()
        .map_err(|e| NodeError::Invalid(format!("{path}: {e}")))?
        .iter()
        .map(String::from)
        .collect();
    let psn = column(&header, "psn_no", path)?;
    let cert = header.iter().position(|h| h == "certno");
    let mut out = HashMap::new();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| NodeError::Invalid(format!("{path} line {}: {e}", line + 2)))?;
        let p = rec.get(psn).unwrap_or("").to_string();
        let c = cert.and_then(|c| rec.get(c)).unwrap_or("").to_string();
        out.insert(p, c);
    }
    Ok(out)
}

/// Running totals of one confirmation.
#[derive(Default)]
struct Tally {
    confirmed: u64,
    confirmed_fen: i64,
    rejected: u64,
    rejected_fen: i64,
    rejected_ids: Vec<String>,
    disputes: Vec<Dispute>,
}

impl Tally {
    fn add(&mut self, disputed: Option<Dispute>, fen: i64) -> std::result::Result<(), String> {
        let overflow = || "amount or count overflow".to_string();
        match disputed {
            None => {
                self.confirmed = self.confirmed.checked_add(1).ok_or_else(overflow)?;
                self.confirmed_fen = self.confirmed_fen.checked_add(fen).ok_or_else(overflow)?;
            }
            Some(d) => {
                self.rejected = self.rejected.checked_add(1).ok_or_else(overflow)?;
                self.rejected_fen = self.rejected_fen.checked_add(fen).ok_or_else(overflow)?;
                if self.rejected_ids.len() < MAX_LISTED_REJECTIONS {
                    self.rejected_ids.push(d.setl_id.clone());
                    self.disputes.push(d);
                }
            }
        }
        Ok(())
    }
}

fn amount_fen(v: Option<&[u8]>, field: &str, record: u64) -> std::result::Result<i64, String> {
    let text = v.and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
    decimal_to_units(text, AMOUNT_SCALE)
        .and_then(|u| i64::try_from(u).ok())
        .ok_or_else(|| format!("record {record}: {field} {text:?} is not an amount in yuan"))
}

/// What to confirm (`pdx settle confirm`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfirmSpec {
    /// Release ids (hex).
    pub releases: Vec<String>,
    /// Every relayed clearing release not confirmed yet.
    pub all: bool,
    /// Insured registry CSV.
    pub registry: String,
    /// Amount field.
    pub amount_field: String,
    /// Clearing node.
    pub to: String,
    /// Write the submission here instead of sending it.
    pub out: Option<String>,
    /// The month cleared (`YYYY-MM`): records dated outside it are disputed.
    #[serde(default)]
    pub month: Option<String>,
    /// The field the month is read from (default `setl_time`).
    #[serde(default)]
    pub date_field: Option<String>,
}

/// What to clear (`pdx settle clearing`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClearingSpec {
    /// Profile of the clearing releases.
    pub profile: String,
    /// Amount field.
    pub amount_field: String,
}

/// What `pdx settle confirm` did for one release.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Confirmed {
    /// Release id (hex).
    pub release: String,
    /// Treatment province.
    pub treatment: String,
    /// Records received.
    pub records: u64,
    /// Records confirmed.
    pub confirmed: u64,
    /// Confirmed amount (yuan).
    pub confirmed_amount: String,
    /// Records refused.
    pub rejected: u64,
    /// Refused amount (yuan).
    pub rejected_amount: String,
    /// Digest of the signed confirmation.
    pub digest: String,
    /// Clearing node.
    pub to: String,
    /// Where it went.
    #[serde(flatten)]
    pub dispatch: Dispatch,
}

/// A relayed release checked against the insured registry: what its
/// confirmation says, and the `confirm` entry that will record signing it.
#[derive(Debug)]
pub struct Checked {
    /// The confirmation of the release.
    pub body: ConfirmationBody,
    draft: pdx_audit::EntryDraft,
}

/// `pdx settle confirm`, first step: opens the identities of a relayed
/// release sealed for this node and checks each record against the insured
/// registry (the `decrypt` entry is written; nothing is signed yet). Then
/// [`sign`] signs and audits.
pub fn check(
    node: &Node,
    release_id: &str,
    checks: &Checks,
    amount_field: &str,
    to: &str,
    operator: &str,
    progress: &dyn Progress,
) -> Result<Checked> {
    let id = parse_release_id(release_id)?;
    let mut tally = Tally::default();
    let counts = &mut tally;
    let read = release::for_each_received_row(node, &id, progress, move |body| {
        let names: Vec<String> = body.fields.iter().map(|f| f.name.clone()).collect();
        let what = format!("release {release_id}");
        let (setl, psn, cert, amount) = (
            column(&names, "setl_id", &what).map_err(|e| e.to_string())?,
            column(&names, "psn_no", &what).map_err(|e| e.to_string())?,
            names.iter().position(|n| n == "certno"),
            column(&names, amount_field, &what).map_err(|e| e.to_string())?,
        );
        let date = match &checks.month {
            Some(_) => Some(column(&names, &checks.date_field, &what).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(move |record, row: &[Option<&[u8]>]| {
            let fen = amount_fen(row[amount], amount_field, record)?;
            let text = |i: usize| row[i].and_then(|b| std::str::from_utf8(b).ok());
            let setl_id = text(setl).unwrap_or("").to_string();
            let mut response = None;
            let reason = match text(psn).and_then(|p| checks.persons.get(p)) {
                None => Some(DisputeReason::PersonUnknown),
                Some(reg_cert) => match cert.and_then(text) {
                    Some(c) if !reg_cert.is_empty() && c != reg_cert => {
                        Some(DisputeReason::IdentityMismatch)
                    }
                    _ => None,
                },
            }
            .or_else(|| {
                let (month, d) = (checks.month.as_deref()?, date?);
                (text(d).and_then(|t| t.get(..7)) != Some(month))
                    .then_some(DisputeReason::OutsideMonth)
            })
            .or_else(|| {
                let (signed, digest) = checks.online.get(&setl_id)?;
                response = Some((*signed, *digest));
                (*signed != fen).then_some(DisputeReason::AmountDiffers)
            })
            .or_else(|| {
                let mut seen = checks.seen.lock().ok()?;
                (!seen.insert(setl_id.clone())).then_some(DisputeReason::DuplicateSettlement)
            });
            let dispute = reason.map(|reason| {
                let differs = reason == DisputeReason::AmountDiffers;
                Dispute {
                    setl_id: setl_id.clone(),
                    reason,
                    amount_fen: fen,
                    record_digest: record_digest(node.suite, row),
                    response_digest: response.filter(|_| differs).map(|r| r.1),
                    signed_fen: response.filter(|_| differs).map(|r| r.0),
                }
            });
            counts.add(dispute, fen)
        })
    })?;
    let Tally {
        confirmed,
        confirmed_fen,
        rejected,
        rejected_fen,
        rejected_ids,
        disputes,
    } = tally;
    if read.body.fields.iter().all(|f| f.name != "psn_no")
        || !read.fields_opened.iter().any(|f| f == "psn_no")
    {
        return Err(NodeError::Refused(format!(
            "release {release_id} has no psn_no sealed for {}; only the insured province confirms",
            node.config.dept
        )));
    }
    release::audit_decrypt(
        node,
        &read,
        operator,
        "to confirm against the insured registry",
    )?;
    let body = ConfirmationBody {
        version: 1,
        release: release_hex(&id),
        content_digest: read.release.content_digest.ok_or_else(|| {
            NodeError::Invalid(format!("release {release_id} has no transfer digest"))
        })?,
        treatment: read.body.sender.clone(),
        confirmer: node.config.dept.clone(),
        amount_field: amount_field.to_string(),
        records: read.records,
        confirmed,
        confirmed_fen,
        rejected,
        rejected_fen,
        rejected_ids,
        created_ms: now_ms(),
        disputes,
    };
    let mut d = node.draft(EventKind::Confirm, operator);
    d.subject = release::received_subject(&read);
    d.counterparty = Some(to.to_string());
    d.purpose = Some(read.body.purpose.clone());
    d.agreement = read.body.agreement.clone();
    d.fields = vec![FieldRef {
        name: "psn_no".into(),
        class: "personal/direct-identifier/registry-check".into(),
    }];
    d.record_count = Some(read.records);
    d.detail = Some(format!(
        "settlement confirmation for {to}: {confirmed} confirmed ({} yuan), {rejected} refused ({} yuan) of records treated in {}",
        units_to_decimal(confirmed_fen.into(), AMOUNT_SCALE),
        units_to_decimal(rejected_fen.into(), AMOUNT_SCALE),
        body.treatment
    ));
    Ok(Checked { body, draft: d })
}

/// What `pdx settle confirm` reports for one confirmation signed in the
/// document named `digest`.
fn confirmed_info(c: &ConfirmationBody, digest: &Digest, to: &str) -> Confirmed {
    Confirmed {
        release: c.release.clone(),
        treatment: c.treatment.clone(),
        records: c.records,
        confirmed: c.confirmed,
        confirmed_amount: units_to_decimal(c.confirmed_fen.into(), AMOUNT_SCALE),
        rejected: c.rejected,
        rejected_amount: units_to_decimal(c.rejected_fen.into(), AMOUNT_SCALE),
        digest: digest.to_hex(),
        to: to.to_string(),
        dispatch: Dispatch::default(),
    }
}

/// Signs and audits the confirmations of a group of checked releases for
/// `to` (one group of [`batches`]): one release as its own document
/// (`confirmation`), several as one batch (`confirmation-batch`).
pub fn sign(node: &Node, mut group: Vec<Checked>, to: &str) -> Result<(Pending, Vec<Confirmed>)> {
    if group.len() == 1
        && let Some(c) = group.pop()
    {
        return sign_one(node, c, to).map(|(p, i)| (p, vec![i]));
    }
    sign_batch(node, group, to)
}

/// Signs one release's confirmation as its own document (`confirmation`).
fn sign_one(node: &Node, checked: Checked, to: &str) -> Result<(Pending, Confirmed)> {
    let Checked { body, draft: mut d } = checked;
    let doc = Certified::sign(node, SignatureDomain::Confirmation, &body)?;
    d.payload_digest = Some(doc.digest());
    let submission = SubmissionFile {
        kind: KIND_CONFIRMATION.into(),
        document: doc.to_bytes()?,
    };
    let pending = Pending::new(
        KIND_CONFIRMATION,
        &body.release,
        to,
        doc.digest(),
        submission,
    );
    node.log_with(
        d,
        vec![
            node.store.put_op(
                CF_DOCS,
                &store::issued_confirmation_key(&body.release),
                &doc,
            )?,
            pending.hold_op(node)?,
        ],
    )?;
    let info = confirmed_info(&body, &doc.digest(), to);
    Ok((pending, info))
}

/// Splits checked releases into batches that each fit one `Submit` (at most
/// [`MAX_BATCH_RELEASES`] entries and about [`BATCH_BYTES`] of bodies).
pub fn batches(checked: Vec<Checked>) -> Result<Vec<Vec<Checked>>> {
    let mut out: Vec<Vec<Checked>> = Vec::new();
    let mut bytes = 0usize;
    for c in checked {
        let size = pdx_crypto::wire::to_cbor(&c.body)?.len();
        let full = out.last().is_none_or(|b| {
            b.len() >= MAX_BATCH_RELEASES || bytes.saturating_add(size) > BATCH_BYTES
        });
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
        if let Some(b) = out.last_mut() {
            b.push(c);
        }
    }
    Ok(out)
}

/// Signs the confirmations of several releases as one document
/// (`confirmation-batch`) for `to`. Each release keeps its own `confirm`
/// entry, naming the document's digest; all of them, the document and its
/// outbox record are one durable write.
fn sign_batch(node: &Node, checked: Vec<Checked>, to: &str) -> Result<(Pending, Vec<Confirmed>)> {
    let n = checked.len();
    let (bodies, drafts): (Vec<_>, Vec<_>) = checked.into_iter().map(|c| (c.body, c.draft)).unzip();
    let batch = ConfirmationBatchBody {
        version: 1,
        confirmer: node.config.dept.clone(),
        created_ms: now_ms(),
        confirmations: bodies,
    };
    let doc = Certified::sign(node, SignatureDomain::ConfirmationBatch, &batch)?;
    let digest = doc.digest();
    let submission = SubmissionFile {
        kind: KIND_CONFIRMATION_BATCH.into(),
        document: doc.to_bytes()?,
    };
    let pending = Pending::new(
        KIND_CONFIRMATION_BATCH,
        &digest.to_hex(),
        to,
        digest,
        submission,
    );
    let mut ops = vec![
        node.store
            .put_op(CF_DOCS, &store::confirmation_batch_key(&digest), &doc)?,
        pending.hold_op(node)?,
    ];
    let reference = InBatch { batch: digest };
    let mut entries = Vec::with_capacity(n);
    for (i, mut d) in drafts.into_iter().enumerate() {
        d.payload_digest = Some(digest);
        if let Some(detail) = d.detail.as_mut() {
            detail.push_str(&format!("; entry {} of {n} of one signed batch", i + 1));
        }
        entries.push(d);
    }
    for c in &batch.confirmations {
        ops.push(node.store.put_op(
            CF_DOCS,
            &store::issued_confirmation_key(&c.release),
            &reference,
        )?);
    }
    node.log_many_with(entries, ops)?;
    let infos = batch
        .confirmations
        .iter()
        .map(|c| confirmed_info(c, &digest, to))
        .collect();
    Ok((pending, infos))
}

/// Confirmations signed but not delivered yet (one document each, single
/// or batch), with what each says (for `--all`, which resends them as signed).
pub fn undelivered(node: &Node) -> Result<Vec<(Pending, Vec<Confirmed>)>> {
    let checker = node.cert_checker()?;
    let mut out = Vec::new();
    let resent = |mut info: Confirmed| {
        info.dispatch.resent = true;
        info
    };
    for p in super::outbox::pending(node, Some(KIND_CONFIRMATION))? {
        let doc = Certified::from_bytes(&p.submission.document, "settlement confirmation")?;
        let (c, _): (ConfirmationBody, _) = doc.verify(&checker, SignatureDomain::Confirmation)?;
        let info = resent(confirmed_info(&c, &p.digest, &p.to));
        out.push((p, vec![info]));
    }
    for p in super::outbox::pending(node, Some(KIND_CONFIRMATION_BATCH))? {
        let doc = Certified::from_bytes(&p.submission.document, "settlement confirmation batch")?;
        let (b, _): (ConfirmationBatchBody, _) =
            doc.verify(&checker, SignatureDomain::ConfirmationBatch)?;
        let infos = b
            .confirmations
            .iter()
            .map(|c| resent(confirmed_info(c, &p.digest, &p.to)))
            .collect();
        out.push((p, infos));
    }
    Ok(out)
}

/// Relayed releases of `profile` this node holds complete and has not confirmed yet.
pub fn unconfirmed_relayed(node: &Node, profile: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for r in release::in_releases(node)? {
        let hex = release_hex(&r.release_id);
        if r.complete
            && r.profile == profile
            && r.from != r.sender
            && node
                .store
                .get_raw(CF_DOCS, &store::issued_confirmation_key(&hex))?
                .is_none()
        {
            out.push(hex);
        }
    }
    Ok(out)
}

/// Checks one confirmation signed by `signer` against what this clearing
/// node holds: the signer is the confirmer, and the release is one this node
/// holds with chunks its sender sealed for the confirmer. Returns the
/// release's dataset.
fn check_received(node: &Node, c: &ConfirmationBody, signer: &str) -> Result<String> {
    let refuse = |m: String| {
        NodeError::Refused(format!(
            "confirmation of release {} from {signer}: {m}",
            c.release
        ))
    };
    if c.version != 1 {
        return Err(refuse(format!(
            "version {} (this build reads 1)",
            c.version
        )));
    }
    if c.confirmer != signer {
        return Err(refuse(format!("names confirmer {}", c.confirmer)));
    }
    let id = parse_release_id(&c.release)?;
    if release::in_release(node, &id)?.is_none() {
        return Err(refuse("this node holds no such release".into()));
    }
    let body = release::verify_manifest(node, &release::in_manifest(node, &id)?)?;
    if body.sender != c.treatment {
        return Err(refuse(format!(
            "names treatment province {}, the release is from {}",
            c.treatment, body.sender
        )));
    }
    if !body
        .chunks
        .iter()
        .any(|ch| ch.recipient.as_deref() == Some(c.confirmer.as_str()))
    {
        return Err(refuse(
            "the release has no records sealed for the confirmer".into(),
        ));
    }
    if c.confirmed.checked_add(c.rejected) != Some(c.records) {
        return Err(refuse("confirmed and refused records do not add up".into()));
    }
    if c.rejected_ids.len() > MAX_LISTED_REJECTIONS
        || c.disputes.len() > MAX_LISTED_REJECTIONS
        || c.disputes.len() as u64 > c.rejected
    {
        return Err(refuse(format!(
            "lists {} refused ids and {} disputes for {} refused records (at most {MAX_LISTED_REJECTIONS} each)",
            c.rejected_ids.len(),
            c.disputes.len(),
            c.rejected
        )));
    }
    Ok(body.dataset)
}

/// The `confirm` entry for a confirmation received in the document `digest`.
fn received_entry(
    node: &Node,
    c: &ConfirmationBody,
    dataset: String,
    digest: Digest,
    how: &str,
) -> pdx_audit::EntryDraft {
    let mut d = node.draft(EventKind::Confirm, NODE_OPERATOR);
    d.subject.release = Some(c.release.clone());
    d.subject.dataset = Some(dataset);
    d.counterparty = Some(c.confirmer.clone());
    d.record_count = Some(c.records);
    d.payload_digest = Some(digest);
    d.detail = Some(format!(
        "received settlement confirmation {how}: {} confirmed ({} yuan), {} refused",
        c.confirmed,
        units_to_decimal(c.confirmed_fen.into(), AMOUNT_SCALE),
        c.rejected
    ));
    d
}

/// Checks and stores a confirmation (the clearing node's side of `Submit`,
/// kind `settlement-confirmation`).
pub fn accept_confirmation(node: &Node, peer: &str, document: &[u8]) -> Result<Accepted> {
    let doc: Certified = from_cbor(document, "settlement confirmation")?;
    let (c, signer): (ConfirmationBody, _) =
        doc.verify(&node.cert_checker()?, SignatureDomain::Confirmation)?;
    let dataset = check_received(node, &c, &signer.dept)?;
    let digest = doc.digest();
    node.log_with(
        received_entry(node, &c, dataset, digest, &format!("via {peer}")),
        vec![node.store.put_op(
            CF_DOCS,
            &store::confirmation_key(&c.release, &c.confirmer),
            &doc,
        )?],
    )?;
    Ok(Accepted {
        digest,
        note: format!(
            "confirmation of release {} by {} accepted",
            c.release, c.confirmer
        ),
    })
}

/// Checks and stores a batch of confirmations (kind
/// `settlement-confirmation-batch`): every entry passes the checks of a
/// single confirmation, or the whole document is refused. Each release gets
/// its own `confirm` entry; the document is stored once.
pub fn accept_confirmation_batch(node: &Node, peer: &str, document: &[u8]) -> Result<Accepted> {
    let doc: Certified = from_cbor(document, "settlement confirmation batch")?;
    let (b, signer): (ConfirmationBatchBody, _) =
        doc.verify(&node.cert_checker()?, SignatureDomain::ConfirmationBatch)?;
    let refuse =
        |m: String| NodeError::Refused(format!("confirmation batch from {}: {m}", signer.dept));
    if b.version != 1 {
        return Err(refuse(format!(
            "version {} (this build reads 1)",
            b.version
        )));
    }
    if b.confirmer != signer.dept {
        return Err(refuse(format!("names confirmer {}", b.confirmer)));
    }
    if b.confirmations.is_empty() || b.confirmations.len() > MAX_BATCH_RELEASES {
        return Err(refuse(format!(
            "lists {} releases (1 to {MAX_BATCH_RELEASES})",
            b.confirmations.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let digest = doc.digest();
    let n = b.confirmations.len();
    let mut entries = Vec::with_capacity(n);
    let mut ops =
        vec![
            node.store
                .put_op(CF_DOCS, &store::confirmation_batch_key(&digest), &doc)?,
        ];
    let reference = InBatch { batch: digest };
    for (i, c) in b.confirmations.iter().enumerate() {
        if !seen.insert(c.release.as_str()) {
            return Err(refuse(format!("lists release {} twice", c.release)));
        }
        let dataset = check_received(node, c, &signer.dept)?;
        let how = format!("via {peer}, entry {} of {n} of one signed batch", i + 1);
        entries.push(received_entry(node, c, dataset, digest, &how));
        ops.push(node.store.put_op(
            CF_DOCS,
            &store::confirmation_key(&c.release, &c.confirmer),
            &reference,
        )?);
    }
    node.log_many_with(entries, ops)?;
    Ok(Accepted {
        digest,
        note: format!("confirmations of {n} releases by {} accepted", b.confirmer),
    })
}

/// A confirmation held, with the digest of the signed document carrying it.
type HeldConfirmation = (ConfirmationBody, Digest);

/// Confirmations held, each with the digest of the signed document that
/// carries it, verified again now; those that no longer verify (e.g. the
/// confirmer's certificate was revoked) come back as reasons.
fn held(node: &Node) -> Result<(Vec<HeldConfirmation>, Vec<String>)> {
    let checker = node.cert_checker()?;
    let (mut out, mut bad) = (Vec::new(), Vec::new());
    // A batch is loaded and verified once, however many releases it confirms.
    let mut batches: HashMap<Digest, std::result::Result<ConfirmationBatchBody, String>> =
        HashMap::new();
    node.store
        .scan_raw(CF_DOCS, store::CONFIRMATION_PREFIX, |key, value| {
            let name = String::from_utf8_lossy(key).replace('\0', " ");
            let held = match from_cbor::<Certified>(value, "settlement confirmation") {
                Ok(doc) => doc
                    .verify::<ConfirmationBody>(&checker, SignatureDomain::Confirmation)
                    .map(|(c, _)| (c, doc.digest()))
                    .map_err(|e| e.to_string()),
                Err(_) => {
                    let r: InBatch = from_cbor(value, "settlement confirmation reference")
                        .map_err(|e| NodeError::corrupt(format!("{CF_DOCS}/{name}"), e))?;
                    // The key is `confirmation 0x00 release 0x00 confirmer`.
                    let release = key.split(|&b| b == 0).nth(1).unwrap_or_default();
                    match batches
                        .entry(r.batch)
                        .or_insert_with(|| load_batch(node, &checker, &r.batch))
                    {
                        Ok(b) => b
                            .confirmations
                            .iter()
                            .find(|c| c.release.as_bytes() == release)
                            .map(|c| (c.clone(), r.batch))
                            .ok_or_else(|| "its batch does not list the release".to_string()),
                        Err(e) => Err(e.clone()),
                    }
                }
            };
            match held {
                Ok(c) => out.push(c),
                Err(e) => bad.push(format!("confirmation {name}: {e}")),
            }
            Ok(true)
        })?;
    Ok((out, bad))
}

/// A stored batch document, verified.
fn load_batch(
    node: &Node,
    checker: &crate::pki::CertChecker,
    digest: &Digest,
) -> std::result::Result<ConfirmationBatchBody, String> {
    let doc: Certified = node
        .store
        .get(CF_DOCS, &store::confirmation_batch_key(digest))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("batch {} is missing", digest.to_hex()))?;
    if doc.digest() != *digest {
        return Err(format!(
            "batch {} is stored with another digest",
            digest.to_hex()
        ));
    }
    doc.verify::<ConfirmationBatchBody>(checker, SignatureDomain::ConfirmationBatch)
        .map(|(b, _)| b)
        .map_err(|e| e.to_string())
}

/// Confirmations held, verified again now; those that no longer verify
/// (e.g. the confirmer's certificate was revoked) come back as reasons.
pub fn confirmations(node: &Node) -> Result<(Vec<ConfirmationBody>, Vec<String>)> {
    let (held, bad) = held(node)?;
    Ok((held.into_iter().map(|(c, _)| c).collect(), bad))
}

#[derive(Default, Clone, Copy)]
struct Cell {
    records: u64,
    fen: i64,
    confirmed_records: u64,
    confirmed_fen: i64,
    disputed_records: u64,
    disputed_fen: i64,
    confirmations: u64,
}

fn overflow(what: &str) -> NodeError {
    NodeError::Invalid(format!(
        "clearing: the {what} overflows 64 bits; the inputs cannot be real settlement amounts"
    ))
}

fn add_u(a: &mut u64, b: u64, what: &str) -> Result<()> {
    *a = a.checked_add(b).ok_or_else(|| overflow(what))?;
    Ok(())
}

fn add_i(a: &mut i64, b: i64, what: &str) -> Result<()> {
    *a = a.checked_add(b).ok_or_else(|| overflow(what))?;
    Ok(())
}

/// One cell of the clearing matrix: what `insured` owes `treatment`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearingCell {
    /// Insured province.
    pub insured: String,
    /// Treatment province.
    pub treatment: String,
    /// Records.
    pub records: u64,
    /// Amount (yuan).
    pub amount: String,
    /// Amount (fen).
    pub amount_fen: i64,
    /// Records the insured province confirmed.
    pub confirmed_records: u64,
    /// Confirmed amount (yuan).
    pub confirmed_amount: String,
    /// Confirmed amount (fen).
    pub confirmed_fen: i64,
    /// Records the insured province disputes (refused in its confirmation).
    pub disputed_records: u64,
    /// Disputed amount (yuan).
    pub disputed_amount: String,
    /// Disputed amount in fen.
    pub disputed_fen: i64,
}

/// A province's net position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPosition {
    /// Province.
    pub province: String,
    /// Owed to it for treating others' insured (fen).
    pub receivable_fen: i64,
    /// It owes for its insured treated elsewhere (fen).
    pub payable_fen: i64,
    /// Receivable minus payable (fen).
    pub net_fen: i64,
    /// Confirmed receivable (fen).
    pub confirmed_receivable_fen: i64,
    /// Confirmed payable (fen).
    pub confirmed_payable_fen: i64,
    /// Confirmed net (fen).
    pub confirmed_net_fen: i64,
    /// Net (yuan).
    pub net: String,
    /// Confirmed net (yuan).
    pub confirmed_net: String,
}

/// `pdx settle clearing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clearing {
    /// Profile of the releases cleared.
    pub profile: String,
    /// Amount field cleared.
    pub amount_field: String,
    /// Releases cleared.
    pub releases: u64,
    /// Records cleared.
    pub records: u64,
    /// Confirmations held.
    pub confirmations: usize,
    /// Insured x treatment cells.
    pub matrix: Vec<ClearingCell>,
    /// Per province.
    pub net_positions: Vec<NetPosition>,
    /// Confirmations missing or not matching.
    pub unconfirmed: Vec<String>,
    /// Releases and confirmations that no longer verify, left out; and per
    /// release the records that are not cross-province.
    pub excluded: Vec<String>,
    /// Records left out because they are not cross-province (insured in
    /// the treating province, or treated outside the sender's province).
    #[serde(default)]
    pub excluded_records: u64,
}

fn yuan(f: i64) -> String {
    units_to_decimal(f.into(), AMOUNT_SCALE)
}

/// Net position of each province: what insured provinces owe it for treating
/// their insured, minus what it owes others for its own insured (all sums
/// checked).
fn net_positions(cells: &BTreeMap<(String, String), Cell>) -> Result<Vec<NetPosition>> {
    #[derive(Default)]
    struct Totals {
        receivable: i64,
        payable: i64,
        confirmed_receivable: i64,
        confirmed_payable: i64,
    }
    let mut net: BTreeMap<&str, Totals> = BTreeMap::new();
    for ((insured, treatment), cell) in cells {
        let t = net.entry(treatment).or_default();
        add_i(&mut t.receivable, cell.fen, "receivable")?;
        add_i(
            &mut t.confirmed_receivable,
            cell.confirmed_fen,
            "receivable",
        )?;
        let i = net.entry(insured).or_default();
        add_i(&mut i.payable, cell.fen, "payable")?;
        add_i(&mut i.confirmed_payable, cell.confirmed_fen, "payable")?;
    }
    let mut positions = Vec::with_capacity(net.len());
    for (p, t) in net {
        let net_fen = t
            .receivable
            .checked_sub(t.payable)
            .ok_or_else(|| overflow("net position"))?;
        let confirmed_net_fen = t
            .confirmed_receivable
            .checked_sub(t.confirmed_payable)
            .ok_or_else(|| overflow("confirmed net position"))?;
        positions.push(NetPosition {
            province: p.to_string(),
            receivable_fen: t.receivable,
            payable_fen: t.payable,
            net_fen,
            confirmed_receivable_fen: t.confirmed_receivable,
            confirmed_payable_fen: t.confirmed_payable,
            confirmed_net_fen,
            net: yuan(net_fen),
            confirmed_net: yuan(confirmed_net_fen),
        });
    }
    Ok(positions)
}

/// One disputed record as `pdx settle disputes` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DisputeRow {
    /// Release id (hex).
    pub release: String,
    /// Treatment province (sender of the release).
    pub treatment: String,
    /// Insured province (the confirmer).
    pub insured: String,
    /// Settlement id.
    pub setl_id: String,
    /// Why (`person-unknown`, `identity-mismatch`, `amount-differs`,
    /// `duplicate-settlement`, `outside-month`; `unspecified` for
    /// confirmations that list ids only).
    pub reason: String,
    /// Amount of the record (yuan).
    pub amount: String,
    /// The same in fen.
    pub amount_fen: i64,
    /// Digest of the record as the insured province opened it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_digest: Option<String>,
    /// Digest of the signed online response (`amount-differs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_digest: Option<String>,
    /// The amount that response signed (yuan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_amount: Option<String>,
    /// Digest of the signed confirmation that raises it.
    pub confirmation: String,
}

/// `pdx settle disputes`: every disputed record of the confirmations held
/// (verified again now; those that no longer verify are left out).
pub fn disputes(node: &Node) -> Result<Vec<DisputeRow>> {
    let mut out = Vec::new();
    for (c, digest) in held(node)?.0 {
        let confirmation = digest.to_hex();
        let row = |setl_id: String, reason: &str, fen: Option<i64>| DisputeRow {
            release: c.release.clone(),
            treatment: c.treatment.clone(),
            insured: c.confirmer.clone(),
            setl_id,
            reason: reason.into(),
            amount: fen.map(yuan).unwrap_or_default(),
            amount_fen: fen.unwrap_or(0),
            record_digest: None,
            response_digest: None,
            signed_amount: None,
            confirmation: confirmation.clone(),
        };
        if c.disputes.is_empty() {
            out.extend(
                c.rejected_ids
                    .iter()
                    .map(|id| row(id.clone(), "unspecified", None)),
            );
        }
        for d in &c.disputes {
            let mut r = row(d.setl_id.clone(), d.reason.label(), Some(d.amount_fen));
            r.record_digest = Some(d.record_digest.to_hex());
            r.response_digest = d.response_digest.map(|x| x.to_hex());
            r.signed_amount = d.signed_fen.map(yuan);
            out.push(r);
        }
    }
    out.sort_by(|a, b| {
        (&a.insured, &a.treatment, &a.setl_id).cmp(&(&b.insured, &b.treatment, &b.setl_id))
    });
    Ok(out)
}

/// `pdx settle clearing`: the clearing matrix over every complete received
/// release of `profile`, with confirmations and net positions (audited).
pub fn clearing(
    node: &Node,
    profile: &str,
    amount_field: &str,
    operator: &str,
    progress: &dyn Progress,
) -> Result<Clearing> {
    let mut cells: BTreeMap<(String, String), Cell> = BTreeMap::new();
    let mut by_release: HashMap<String, (String, HashMap<String, u64>)> = HashMap::new();
    let mut releases = 0u64;
    let mut records = 0u64;
    let mut excluded = Vec::new();
    let mut excluded_records = 0u64;
    for rel in release::in_releases(node)? {
        if !rel.complete || rel.profile != profile || rel.from != rel.sender {
            continue;
        }
        let hex = release_hex(&rel.release_id);
        let mut per_insured: HashMap<String, u64> = HashMap::new();
        let mut local: BTreeMap<(String, String), Cell> = BTreeMap::new();
        let mut not_cross = 0u64;
        let (sender, per, cells_of, name, skipped) = (
            &rel.sender,
            &mut per_insured,
            &mut local,
            &hex,
            &mut not_cross,
        );
        let read = release::for_each_received_row(node, &rel.release_id, progress, move |body| {
            let names: Vec<String> = body.fields.iter().map(|f| f.name.clone()).collect();
            let what = format!("release {name}");
            let (insured, amount) = (
                column(&names, "insuplc_admdvs", &what).map_err(|e| e.to_string())?,
                column(&names, amount_field, &what).map_err(|e| e.to_string())?,
            );
            // Optional: releases that carry the treatment region are checked
            // against their sender too.
            let treated = names.iter().position(|n| n == "mdtrtarea_admvs");
            Ok(move |record, row: &[Option<&[u8]>]| {
                let province_at = |i: usize, what: &str| {
                    row[i]
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(pdx_schemas::import::province_of)
                        .ok_or_else(|| {
                            format!("record {record}: {what} is missing or not 6 digits")
                        })
                };
                let province = province_at(insured, "insuplc_admdvs")?;
                let treated_in = treated
                    .map(|t| province_at(t, "mdtrtarea_admvs"))
                    .transpose()?;
                // Checked again here, not only at the sender's import: a
                // province never owes itself, and a sender clears only what
                // it treated.
                if province == *sender || treated_in.is_some_and(|t| t != *sender) {
                    *skipped = skipped
                        .checked_add(1)
                        .ok_or_else(|| format!("record {record}: count overflow"))?;
                    return Ok(());
                }
                let fen = amount_fen(row[amount], amount_field, record)?;
                let cell = cells_of
                    .entry((province.clone(), sender.clone()))
                    .or_default();
                let overflow = || format!("record {record}: amount or count overflow");
                cell.records = cell.records.checked_add(1).ok_or_else(overflow)?;
                cell.fen = cell.fen.checked_add(fen).ok_or_else(overflow)?;
                let n = per.entry(province).or_default();
                *n = n.checked_add(1).ok_or_else(overflow)?;
                Ok(())
            })
        });
        let read = match read {
            Ok(r) => r,
            // Fail closed per release: one that cannot be verified now (its
            // sender's certificate revoked, say) is left out and reported.
            Err(e @ (NodeError::Pki(_) | NodeError::Crypto(_))) => {
                excluded.push(format!("release {hex} from {}: {e}", rel.sender));
                continue;
            }
            Err(e) => return Err(e),
        };
        for (k, c) in local {
            let cell = cells.entry(k).or_default();
            add_u(&mut cell.records, c.records, "record count")?;
            add_i(&mut cell.fen, c.fen, "amount of a cell")?;
        }
        if not_cross > 0 {
            excluded.push(format!(
                "release {hex} from {}: {not_cross} records are not cross-province (insured in {0}, or treated outside it) and were not cleared",
                rel.sender
            ));
            add_u(&mut excluded_records, not_cross, "record count")?;
        }
        add_u(&mut releases, 1, "release count")?;
        let cleared = read
            .records
            .checked_sub(not_cross)
            .ok_or_else(|| overflow("record count"))?;
        add_u(&mut records, cleared, "record count")?;
        by_release.insert(hex, (rel.sender.clone(), per_insured));
    }
    let mut unconfirmed = Vec::new();
    let (confirmations, bad_confirmations) = confirmations(node)?;
    excluded.extend(bad_confirmations);
    for c in &confirmations {
        let Some((sender, per_insured)) = by_release.get(&c.release) else {
            continue;
        };
        if per_insured.get(&c.confirmer) != Some(&c.records) {
            unconfirmed.push(format!(
                "{} confirms {} records of release {} but it holds {} for it",
                c.confirmer,
                c.records,
                c.release,
                per_insured.get(&c.confirmer).copied().unwrap_or(0)
            ));
            continue;
        }
        let cell = cells
            .entry((c.confirmer.clone(), sender.clone()))
            .or_default();
        add_u(
            &mut cell.confirmed_records,
            c.confirmed,
            "confirmed record count",
        )?;
        add_i(&mut cell.confirmed_fen, c.confirmed_fen, "confirmed amount")?;
        add_u(
            &mut cell.disputed_records,
            c.rejected,
            "disputed record count",
        )?;
        add_i(&mut cell.disputed_fen, c.rejected_fen, "disputed amount")?;
        add_u(&mut cell.confirmations, 1, "confirmation count")?;
    }
    for ((insured, treatment), cell) in &cells {
        let expected = by_release
            .values()
            .filter(|(s, _)| s == treatment)
            .filter(|(_, p)| p.contains_key(insured))
            .count() as u64;
        if cell.confirmations < expected {
            unconfirmed.push(format!(
                "{insured} has confirmed {} of {expected} releases from {treatment}",
                cell.confirmations
            ));
        }
    }
    let matrix: Vec<ClearingCell> = cells
        .iter()
        .map(|((i, t), c)| ClearingCell {
            insured: i.clone(),
            treatment: t.clone(),
            records: c.records,
            amount: yuan(c.fen),
            amount_fen: c.fen,
            confirmed_records: c.confirmed_records,
            confirmed_amount: yuan(c.confirmed_fen),
            confirmed_fen: c.confirmed_fen,
            disputed_records: c.disputed_records,
            disputed_amount: yuan(c.disputed_fen),
            disputed_fen: c.disputed_fen,
        })
        .collect();
    let positions = net_positions(&cells)?;
    let mut d = node.draft(EventKind::Export, operator);
    d.purpose = Some(format!("settlement clearing ({profile})"));
    d.fields = ["insuplc_admdvs", amount_field]
        .iter()
        .map(|f| FieldRef {
            name: f.to_string(),
            class: "personal/quasi-identifier,other/clearing-total".into(),
        })
        .collect();
    d.record_count = Some(records);
    d.detail = Some(format!(
        "clearing matrix of {} cells from {releases} releases and {} confirmations",
        cells.len(),
        confirmations.len()
    ));
    node.log(d)?;
    Ok(Clearing {
        profile: profile.to_string(),
        amount_field: amount_field.to_string(),
        releases,
        records,
        confirmations: confirmations.len(),
        matrix,
        net_positions: positions,
        unconfirmed,
        excluded,
        excluded_records,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn checked(release: u32, listed: usize) -> Checked {
        Checked {
            body: ConfirmationBody {
                version: 1,
                release: format!("{release:032x}"),
                content_digest: Digest([0; 32]),
                treatment: "440000".into(),
                confirmer: "110000".into(),
                amount_field: "medfee_sumamt".into(),
                records: listed as u64,
                confirmed: 0,
                confirmed_fen: 0,
                rejected: listed as u64,
                rejected_fen: 0,
                rejected_ids: vec!["x".repeat(64); listed],
                created_ms: 0,
                disputes: Vec::new(),
            },
            draft: pdx_audit::EntryDraft::new(EventKind::Confirm, "110000", "op"),
        }
    }

    #[test]
    fn batches_stay_within_the_release_and_byte_caps_and_keep_the_order() {
        let many: Vec<Checked> = (0..MAX_BATCH_RELEASES as u32 + 5)
            .map(|i| checked(i, 0))
            .collect();
        let split = batches(many).unwrap();
        assert_eq!(
            split.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_BATCH_RELEASES, 5]
        );
        let order: Vec<String> = split
            .iter()
            .flatten()
            .map(|c| c.body.release.clone())
            .collect();
        let want: Vec<String> = (0..MAX_BATCH_RELEASES as u32 + 5)
            .map(|i| format!("{i:032x}"))
            .collect();
        assert_eq!(order, want);
        // Entries of about 3.4 MB each (50,000 listed ids): at most two fit
        // in 8 MiB, so each batch of a Submit stays under its 16 MiB cap.
        let big: Vec<Checked> = (0..5).map(|i| checked(i, 50_000)).collect();
        let split = batches(big).unwrap();
        assert_eq!(
            split.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        for b in &split {
            let bytes: usize = b
                .iter()
                .map(|c| pdx_crypto::wire::to_cbor(&c.body).unwrap().len())
                .sum();
            assert!(bytes <= BATCH_BYTES, "{bytes}");
        }
    }

    fn extreme_i64() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(i64::MAX),
            Just(i64::MIN),
            Just(i64::MAX - 1),
            Just(0i64),
            any::<i64>()
        ]
    }

    proptest! {
        // Amounts from a release or a confirmation (peer data) either add up
        // exactly or refuse with an error: never a panic, never a wrapped or
        // saturated total.
        #[test]
        fn tallies_of_extreme_amounts_are_exact_or_refused(
            amounts in proptest::collection::vec((extreme_i64(), any::<bool>()), 1..8)
        ) {
            let mut t = Tally::default();
            let mut exact: (i128, i128) = (0, 0);
            let mut failed = false;
            for (fen, known) in &amounts {
                let dispute = (!*known).then(|| Dispute {
                    setl_id: "id".into(),
                    reason: DisputeReason::PersonUnknown,
                    amount_fen: *fen,
                    record_digest: Digest([0; 32]),
                    response_digest: None,
                    signed_fen: None,
                });
                if t.add(dispute, *fen).is_err() {
                    failed = true;
                    break;
                }
                if *known { exact.0 += i128::from(*fen) } else { exact.1 += i128::from(*fen) }
            }
            if !failed {
                prop_assert_eq!(i128::from(t.confirmed_fen), exact.0);
                prop_assert_eq!(i128::from(t.rejected_fen), exact.1);
            }
        }

        #[test]
        fn net_positions_of_extreme_cells_are_exact_or_refused(
            cells in proptest::collection::vec(
                (0usize..3, 0usize..3, extreme_i64(), extreme_i64()), 1..6)
        ) {
            let names = ["110000", "440000", "310000"];
            let mut map: BTreeMap<(String, String), Cell> = BTreeMap::new();
            for (i, t, fen, cfen) in &cells {
                map.insert(
                    (names[*i].to_string(), names[*t].to_string()),
                    Cell { records: 1, fen: *fen, confirmed_records: 1, confirmed_fen: *cfen, confirmations: 1, ..Cell::default() },
                );
            }
            match net_positions(&map) {
                Ok(positions) => {
                    for p in positions {
                        let recv: i128 = map.iter().filter(|((_, t), _)| *t == p.province).map(|(_, c)| i128::from(c.fen)).sum();
                        let pay: i128 = map.iter().filter(|((i, _), _)| *i == p.province).map(|(_, c)| i128::from(c.fen)).sum();
                        prop_assert_eq!(i128::from(p.net_fen), recv - pay);
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains("overflows"), "{}", e),
            }
        }
    }
}
