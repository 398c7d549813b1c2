//! Homomorphic aggregates: per-category sums that only a key holder can open,
//! and only when at least k departments contributed.
//!
//! Roles (documents in [`documents`]):
//! - the **key holder** generates a key pair and signs a [`QueryBody`]: what is
//!   summed, the category list, k, who may contribute, the aggregator, the
//!   deadline and the compact public key;
//! - each **contributor** sums its own dataset per category, encrypts the sums
//!   and counts ([`pdx_crypto::he`]) and signs a [`ContributionBody`];
//! - the **aggregator** checks and adds contributions (no key needed) and signs
//!   an [`AggregateBody`] naming every contribution by digest;
//! - the key holder checks the aggregate and decrypts it.
//!
//! Addition is deterministic, so anyone holding the contributions can
//! recompute the aggregate ([`verify_sum`]): the aggregator cannot pass one
//! department's ciphertext off as a sum. Owns the `he` family.

mod aggregator;
mod committee;
mod contributor;
pub mod crs;
pub mod documents;
mod keyholder;
#[cfg(test)]
mod tests;

pub use aggregator::*;
pub use committee::*;
pub use contributor::*;
pub use documents::*;
pub use keyholder::*;

use super::documents::{Certified, KIND_HE_AGGREGATE, KIND_HE_CONTRIBUTION, SubmissionFile};
use crate::error::{NodeError, Result};
use crate::node::{NODE_OPERATOR, Node};
use crate::pki::CertChecker;
use crate::proto::msg::Accepted;
use crate::service::Dispatch;
use crate::service::outbox::{self, Pending};
use crate::store::{self, CF_HE, HeRecord};
use pdx_audit::store::now_ms;
use pdx_audit::{EventKind, FieldRef};
use pdx_crypto::SignatureDomain;
use pdx_crypto::he::{self, HeList, HePublicKey, HeSecretKey};
use pdx_crypto::keyfile::KeyKind;
use pdx_crypto::wire::{from_cbor, to_cbor};
use pdx_schemas::Schema;
use pdx_schemas::types::{FieldType, decimal_to_units};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// What to contribute (`pdx he contribute`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContributeSpec {
    /// The key holder's query document (file).
    pub query: String,
    /// Dataset summed.
    pub dataset: String,
    /// Aggregator (must be the query's).
    pub to: String,
    /// Write the submission here instead of sending it.
    pub out: Option<String>,
}

/// What to aggregate (`pdx he aggregate`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AggregateSpec {
    /// Query id.
    pub query: String,
    /// Key holder (must be the query's).
    pub to: String,
    /// Write the submission here instead of sending it.
    pub out: Option<String>,
}

/// What `pdx he keygen` made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryCreated {
    /// Query id.
    pub query: String,
    /// Where the signed query document was written.
    pub out: String,
    /// Its digest.
    pub digest: String,
    /// Categories listed.
    pub categories: usize,
    /// Slots of a contribution.
    pub slots: usize,
    /// Minimum distinct contributors.
    pub k: u32,
    /// Allowed contributors.
    pub contributors: Vec<String>,
    /// Aggregator.
    pub aggregator: String,
    /// The secret key file (committee query: the first sub-share dealt here).
    pub secret_key: String,
    /// Committee members (empty: one key holder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub committee: Vec<String>,
    /// Committee threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u8>,
    /// Members whose key shares the coordinator waits for (`pdx he key-finish` then signs the query).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
}

/// What `pdx he contribute` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Contributed {
    /// Query id.
    pub query: String,
    /// Dataset summed.
    pub dataset: String,
    /// Records summed.
    pub records: u64,
    /// Slots.
    pub slots: usize,
    /// Ciphertext bytes.
    pub bytes: usize,
    /// Digest of the signed contribution.
    pub digest: String,
    /// The aggregator.
    pub to: String,
    /// Where it went.
    #[serde(flatten)]
    pub dispatch: Dispatch,
}

/// What `pdx he aggregate` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Aggregated {
    /// Query id.
    pub query: String,
    /// Contributors added.
    pub contributors: Vec<String>,
    /// Contributions left out, and why.
    pub excluded: Vec<String>,
    /// Digest of the signed aggregate.
    pub digest: String,
    /// The key holder.
    pub to: String,
    /// Ciphertext bytes.
    pub bytes: usize,
    /// Where it went.
    #[serde(flatten)]
    pub dispatch: Dispatch,
    /// The other committee members it was also sent to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_to: Vec<String>,
}

/// What `pdx he decrypt` revealed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decrypted {
    /// Query id.
    pub query: String,
    /// Value fields summed.
    pub values: Vec<String>,
    /// Group-by fields (`FIELD:TRANSFORM`).
    pub group_by: Vec<String>,
    /// Contributors covered.
    pub contributors: Vec<String>,
    /// Minimum distinct contributors.
    pub k: u32,
    /// Records over every category (decimal text: may exceed 2^64).
    pub records: String,
    /// Digest of the aggregate decrypted.
    pub aggregate_digest: String,
    /// Per category.
    pub categories: Vec<CategoryTotal>,
    /// Committee query: the members whose partial decryptions were combined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partials_from: Vec<String>,
}

/// What `pdx he export` wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryExported {
    /// Query id.
    pub query: String,
    /// File written.
    pub out: String,
    /// Contributions included.
    pub contributions: usize,
}

/// One query held (`pdx he list`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryInfo {
    /// Query id.
    pub query: String,
    /// This node's role: key-holder, aggregator or contributor.
    pub role: String,
    /// Key holder.
    pub key_holder: String,
    /// Aggregator.
    pub aggregator: String,
    /// Minimum distinct contributors.
    pub k: u32,
    /// Categories listed.
    pub categories: usize,
    /// Contributions held here.
    pub contributions: usize,
    /// Whether an aggregate is held here.
    pub aggregate: bool,
    /// Deadline (ms).
    pub deadline_ms: u64,
}

/// The query, aggregate and contributions this node holds for `query_id`.
fn stored_bundle(node: &Node, query_id: &str) -> Result<QueryBundle> {
    Ok(QueryBundle {
        query: stored_query(node, query_id)?,
        aggregate: stored(node, HeRecord::Aggregate, query_id, None)?.ok_or_else(|| {
            NodeError::NotFound(format!("no aggregate of query {query_id} on this node"))
        })?,
        contributions: contributions(node, query_id)?,
    })
}

fn secret_name(query_id: &str) -> String {
    format!("he-{query_id}")
}

/// A submitted document kept once under `key` (`he` family): the same
/// document again is acknowledged again (`Some`), another is refused with
/// `refusal`, and `None` means none is held yet.
fn kept_once(
    node: &Node,
    key: &[u8],
    digest: pdx_crypto::Digest,
    refusal: impl FnOnce() -> String,
) -> Result<Option<Accepted>> {
    match node.store.get::<Certified>(CF_HE, key)? {
        Some(prev) if prev.digest() == digest => Ok(Some(Accepted {
            digest,
            note: "already accepted".into(),
        })),
        Some(_) => Err(NodeError::Refused(refusal())),
        None => Ok(None),
    }
}

/// Audits an opened sum and returns what it revealed (`he decrypt`, `he
/// combine`); `how` starts the entry's detail.
#[allow(clippy::too_many_arguments)]
fn opened(
    node: &Node,
    operator: &str,
    query: &QueryBody,
    agg: AggregateBody,
    agg_doc: &Certified,
    slots: &[u64],
    how: String,
    partials_from: Vec<String>,
) -> Result<Decrypted> {
    let totals = totals(query, slots);
    let records: u128 = totals.iter().map(|t| u128::from(t.count)).sum();
    let query_id = &query.query_id;
    let mut d = node.draft(EventKind::AggregateDecrypt, operator);
    d.counterparty = Some(agg.aggregator.clone());
    d.purpose = Some(format!("homomorphic aggregate {query_id}"));
    d.record_count = u64::try_from(records).ok();
    d.payload_digest = Some(agg_doc.digest());
    d.detail = Some(format!(
        "{how} the sum of {} contributors ({}); k = {}",
        agg.contributions.len(),
        agg.contributions
            .iter()
            .map(|c| c.dept.as_str())
            .collect::<Vec<_>>()
            .join(","),
        query.k
    ));
    node.log(d)?;
    Ok(Decrypted {
        query: query_id.to_string(),
        group_by: query
            .group_by
            .iter()
            .map(|g| format!("{}:{}", g.field, g.by))
            .collect(),
        values: query.values.clone(),
        contributors: agg.contributions.into_iter().map(|c| c.dept).collect(),
        k: query.k,
        records: records.to_string(),
        aggregate_digest: agg_doc.digest().to_hex(),
        categories: totals,
        partials_from,
    })
}

/// Refuses a sum that differs from one already decrypted for the query: two
/// sums over different sets of contributors would reveal their difference
/// (e.g. all provinces, then all but one).
fn check_not_differencing(node: &Node, query_id: &str, agg: &AggregateBody) -> Result<()> {
    let Some(done) = stored(node, HeRecord::Decrypted, query_id, None)? else {
        return Ok(());
    };
    let prev: AggregateBody = done
        .signed
        .dangerous_decode_unverified("decrypted aggregate")?;
    if prev.contributions != agg.contributions || prev.ciphertext != agg.ciphertext {
        return Err(NodeError::Refused(format!(
            "query {query_id} was already decrypted over {} contributors; a different sum would reveal the difference between the two, so each query is decrypted once (make a new query)",
            prev.contributions.len()
        )));
    }
    Ok(())
}

fn stored(
    node: &Node,
    record: HeRecord,
    query_id: &str,
    dept: Option<&str>,
) -> Result<Option<Certified>> {
    node.store
        .get(CF_HE, &store::he_key(record, query_id, dept))
}

fn stored_query(node: &Node, query_id: &str) -> Result<Certified> {
    stored(node, HeRecord::Query, query_id, None)?.ok_or_else(|| {
        NodeError::NotFound(format!(
            "no query {query_id:?} on this node (`pdx he list` shows the queries it holds)"
        ))
    })
}

fn contributions(node: &Node, query_id: &str) -> Result<Vec<Certified>> {
    Ok(node
        .store
        .scan::<Certified>(
            CF_HE,
            &store::he_prefix(HeRecord::Contribution, Some(query_id)),
        )?
        .into_iter()
        .map(|(_, c)| c)
        .collect())
}

fn schema_field<'a>(
    schema: &'a Schema,
    name: &str,
) -> Result<(usize, &'a pdx_schemas::schema::Field)> {
    schema
        .field_index(name)
        .map(|i| (i, &schema.fields[i]))
        .ok_or_else(|| {
            NodeError::Invalid(format!(
                "schema {} has no field {name:?}",
                schema.dataset.id
            ))
        })
}

/// Index and decimal scale of a value field (integer or decimal).
fn value_field(schema: &Schema, name: &str) -> Result<(usize, u8)> {
    let (i, field) = schema_field(schema, name)?;
    match &field.ty {
        FieldType::Decimal { scale, .. } => Ok((i, *scale)),
        FieldType::Integer { .. } => Ok((i, 0)),
        other => Err(NodeError::Invalid(format!(
            "field {name} is {}; only integer and decimal fields can be summed",
            other.name()
        ))),
    }
}

/// `pdx he export`: the query, aggregate and contributions held here.
pub fn export(node: &Node, query_id: &str, out: &str, operator: &str) -> Result<QueryExported> {
    let bundle = stored_bundle(node, query_id)?;
    let bytes = to_cbor(&bundle)?;
    crate::config::write_atomic(std::path::Path::new(out), &bytes, 0o644)?;
    let mut d = node.draft(EventKind::Export, operator);
    d.purpose = Some(format!("homomorphic aggregate {query_id}"));
    d.payload_digest = Some(node.suite.digest(&bytes));
    d.detail = Some(format!(
        "query, aggregate and {} encrypted contributions exported to {out}",
        bundle.contributions.len()
    ));
    node.log(d)?;
    Ok(QueryExported {
        query: query_id.to_string(),
        out: out.to_string(),
        contributions: bundle.contributions.len(),
    })
}

/// `pdx he verify-sum --bundle FILE --ca CA.pem` (offline, e.g. a regulator).
pub fn verify_bundle_file(bundle: &str, ca_pem: &str, crs_file: Option<&str>) -> Result<SumCheck> {
    let bundle: QueryBundle = super::documents::read_file(bundle, "he query bundle")?;
    let ca = crate::pki::read_certs(std::path::Path::new(ca_pem))?;
    let checker = CertChecker::new(&ca, Vec::new())?;
    let crs = bundle_crs(&bundle, |d| match crs_file {
        Some(f) => crs::from_file(checker.suite(), std::path::Path::new(f), d).map(Some),
        None => Ok(None),
    })?;
    verify_bundle(&checker, &bundle, crs.as_ref())
}

/// The CRS a bundle's query names, if any, got by `get`.
fn bundle_crs<C>(
    bundle: &QueryBundle,
    get: impl FnOnce(&pdx_crypto::Digest) -> Result<Option<C>>,
) -> Result<Option<C>> {
    let q: QueryBody = bundle
        .query
        .signed
        .dangerous_decode_unverified("he query")?;
    match q.committee.and_then(|t| t.crs) {
        Some(d) => get(&d),
        None => Ok(None),
    }
}

/// `pdx he verify-sum` on a node holding the contributions (the aggregator):
/// recomputes the sum and checks that each contribution and the aggregate are
/// in this node's audit log.
pub fn verify_sum(node: &Node, query_id: &str) -> Result<SumCheck> {
    let bundle = stored_bundle(node, query_id)?;
    // Re-verified from the installed CRS: this checks the proofs again, not
    // that they were checked on acceptance.
    let crs = bundle_crs(&bundle, |d| crs::load(node, d).map(Some))?;
    let mut out = verify_bundle(&node.cert_checker()?, &bundle, crs.as_deref())?;
    let mut wanted: HashMap<[u8; 32], &'static str> = bundle
        .contributions
        .iter()
        .map(|c| (c.digest().0, "contribution"))
        .collect();
    wanted.insert(bundle.aggregate.digest().0, "aggregate");
    let size = node.audit.size();
    node.audit.for_each_entry(0, size, |_, bytes| {
        if let Ok(v) = pdx_audit::EntryView::parse(bytes)
            && matches!(
                v.kind,
                EventKind::AggregateContribute | EventKind::AggregateCombine
            )
            && let Some(p) = v.payload_digest
        {
            wanted.remove(&p);
        }
        Ok(())
    })?;
    if !wanted.is_empty() {
        out.problems.extend(
            wanted.iter().map(|(d, what)| {
                format!("{what} {} is not in this node's audit log", hex::encode(d))
            }),
        );
        out.verdict = SumVerdict::Mismatch;
    }
    Ok(out)
}

/// `pdx he list`: queries held and their state.
pub fn list(node: &Node) -> Result<Vec<QueryInfo>> {
    let mut out = Vec::new();
    for (_, doc) in node
        .store
        .scan::<Certified>(CF_HE, &store::he_prefix(HeRecord::Query, None))?
    {
        let q: QueryBody = doc.signed.dangerous_decode_unverified("he query")?;
        // Counted by key: the ciphertexts need not be read.
        let mut n = 0usize;
        node.store.scan_raw(
            CF_HE,
            &store::he_prefix(HeRecord::Contribution, Some(&q.query_id)),
            |_, _| {
                n += 1;
                Ok(true)
            },
        )?;
        let agg = stored(node, HeRecord::Aggregate, &q.query_id, None)?.is_some();
        let role = if q.key_holder == node.config.dept {
            "key-holder"
        } else if q.aggregator == node.config.dept {
            "aggregator"
        } else {
            "contributor"
        };
        out.push(QueryInfo {
            query: q.query_id,
            role: role.to_string(),
            key_holder: q.key_holder,
            aggregator: q.aggregator,
            k: q.k,
            categories: q.categories.len(),
            contributions: n,
            aggregate: agg,
            deadline_ms: q.deadline_ms,
        });
    }
    Ok(out)
}
