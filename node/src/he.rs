//! Homomorphic aggregates: per-category sums that only a key holder can open,
//! and only when at least k departments contributed.
//!
//! Roles and documents (all [`Certified`], byte layout in `docs/he-aggregates.md`):
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
//! department's ciphertext off as a sum.

use crate::docs::{Certified, KIND_HE_AGGREGATE, KIND_HE_CONTRIBUTION, SubmissionFile};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::pki::CertChecker;
use crate::proto::msg::Accepted;
use crate::store::CF_HE;
use pdx_audit::store::now_ms;
use pdx_audit::{EventKind, FieldRef};
use pdx_crypto::he::{self, HeList, HePublicKey, HeSecretKey};
use pdx_crypto::keyfile::KeyKind;
use pdx_crypto::wire::{from_cbor, to_cbor};
use pdx_crypto::{Digest, SignatureDomain};
use pdx_schemas::Schema;
use pdx_schemas::schema::Generalization;
use pdx_schemas::types::{FieldType, decimal_to_units, units_to_decimal};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Limbs of a value sum: 64-bit sums per contributor and category.
pub const VALUE_LIMBS: usize = 4;
/// Limbs of a record count: 32-bit counts per contributor and category.
pub const COUNT_LIMBS: usize = 2;
/// The category that collects records outside the query's list, so totals add up.
pub const OTHER: &str = "(other)";
/// Most categories one query may list.
pub const MAX_CATEGORIES: usize = 65_536;
/// Most value fields one query may sum.
pub const MAX_VALUES: usize = 8;
/// Separator of the parts of a category key (`J18|110000`).
pub const CATEGORY_SEPARATOR: char = '|';

/// How a group-by field's value becomes a category part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupBy {
    /// Field name in the schema.
    pub field: String,
    /// `value`, `province`, `prefecture`, `icd10-category`, `month`, `quarter` or `year`.
    pub by: String,
}

impl GroupBy {
    /// Parses `FIELD` or `FIELD:TRANSFORM`.
    pub fn parse(s: &str) -> Result<GroupBy> {
        let (field, by) = s.split_once(':').unwrap_or((s, "value"));
        let g = GroupBy {
            field: field.to_string(),
            by: by.to_string(),
        };
        g.generalization()?;
        Ok(g)
    }

    fn generalization(&self) -> Result<Option<Generalization>> {
        Ok(match self.by.as_str() {
            "value" => None,
            "province" => Some(Generalization::Province),
            "prefecture" => Some(Generalization::Prefecture),
            "icd10-category" => Some(Generalization::Icd10Category),
            "month" => Some(Generalization::Month),
            "quarter" => Some(Generalization::Quarter),
            "year" => Some(Generalization::Year),
            other => {
                return Err(NodeError::Invalid(format!(
                    "group-by {}:{other}: use value, province, prefecture, icd10-category, month, quarter or year",
                    self.field
                )));
            }
        })
    }
}

/// The key holder's signed query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryBody {
    /// Format version (1).
    pub version: u8,
    /// Query id (`[A-Za-z0-9._-]{1,64}`).
    pub query_id: String,
    /// Key holder department (signs this document, decrypts the sum).
    pub key_holder: String,
    /// Aggregator department (adds contributions).
    pub aggregator: String,
    /// Schema id of the datasets summed.
    pub schema: String,
    /// Value fields summed (integer or decimal, non-negative).
    pub values: Vec<String>,
    /// Decimal scale of each value field (units are 10^-scale).
    pub scales: Vec<u8>,
    /// Group-by fields, in category-key order.
    pub group_by: Vec<GroupBy>,
    /// Categories (`part|part`), sorted and distinct; records outside them count under [`OTHER`].
    pub categories: Vec<String>,
    /// Minimum distinct contributors before the key holder decrypts.
    pub k: u32,
    /// Departments allowed to contribute.
    pub contributors: Vec<String>,
    /// Contributions after this time (ms) are refused.
    pub deadline_ms: u64,
    /// When the query was made (ms).
    pub created_ms: u64,
    /// Must equal [`he::SCHEME_ID`].
    pub scheme: String,
    /// Compact public key words, little-endian.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
}

impl QueryBody {
    /// Slots per category: value limbs for each value, then the count limbs.
    pub fn slots_per_category(&self) -> usize {
        self.values.len() * VALUE_LIMBS + COUNT_LIMBS
    }

    /// Slots of a contribution (the listed categories plus [`OTHER`]).
    pub fn slots(&self) -> usize {
        (self.categories.len() + 1) * self.slots_per_category()
    }

    /// The public key.
    pub fn public_key(&self) -> Result<HePublicKey> {
        Ok(HePublicKey::from_words(he::bytes_to_words(
            &self.public_key,
        )?)?)
    }

    /// Checks internal consistency (not the signature).
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(NodeError::Invalid(format!("query {}: {m}", self.query_id)));
        if self.version != 1 {
            return bad(format!(
                "version {} (this build reads version 1)",
                self.version
            ));
        }
        check_query_id(&self.query_id)?;
        if self.scheme != he::SCHEME_ID {
            return bad(format!(
                "scheme {:?}; this build uses {:?}",
                self.scheme,
                he::SCHEME_ID
            ));
        }
        if self.values.is_empty() || self.values.len() > MAX_VALUES {
            return bad(format!("needs 1 to {MAX_VALUES} value fields"));
        }
        if self.scales.len() != self.values.len() {
            return bad("one scale per value field is needed".into());
        }
        if self.group_by.is_empty() {
            return bad("needs at least one group-by field".into());
        }
        for g in &self.group_by {
            g.generalization()?;
        }
        if self.categories.is_empty() || self.categories.len() > MAX_CATEGORIES {
            return bad(format!("needs 1 to {MAX_CATEGORIES} categories"));
        }
        if !self.categories.windows(2).all(|w| w[0] < w[1]) {
            return bad("categories must be sorted and distinct".into());
        }
        for c in &self.categories {
            if c.split(CATEGORY_SEPARATOR).count() != self.group_by.len() || c == OTHER {
                return bad(format!(
                    "category {c:?} does not have {} parts",
                    self.group_by.len()
                ));
            }
        }
        if self.k == 0 || u64::from(self.k) > he::MAX_CONTRIBUTORS {
            return bad(format!(
                "k = {} (must be 1 to {})",
                self.k,
                he::MAX_CONTRIBUTORS
            ));
        }
        let distinct: BTreeSet<_> = self.contributors.iter().collect();
        if distinct.len() != self.contributors.len()
            || self.contributors.len() as u64 > he::MAX_CONTRIBUTORS
        {
            return bad(format!(
                "contributors must be distinct and at most {}",
                he::MAX_CONTRIBUTORS
            ));
        }
        if (self.contributors.len() as u64) < u64::from(self.k) {
            return bad(format!(
                "k = {} but only {} contributors are allowed",
                self.k,
                self.contributors.len()
            ));
        }
        self.public_key()?;
        Ok(())
    }

    fn category_index(&self) -> HashMap<&str, usize> {
        self.categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect()
    }
}

/// A contributor's signed, encrypted per-category sums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionBody {
    /// Format version (1).
    pub version: u8,
    /// Query id.
    pub query_id: String,
    /// Digest of the signed query document contributed to.
    pub query_digest: Digest,
    /// Contributing department (must match the signing certificate).
    pub contributor: String,
    /// Digest of the dataset summed (a commitment; reveals nothing).
    pub dataset_digest: Digest,
    /// Records summed.
    pub records: u64,
    /// When made (ms).
    pub created_ms: u64,
    /// Slots ([`QueryBody::slots`]).
    pub slots: u64,
    /// Compact ciphertext list words, little-endian.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// One contribution an aggregate covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionRef {
    /// Contributor department.
    pub dept: String,
    /// Digest of its signed contribution document.
    pub digest: Digest,
    /// Records it summed.
    pub records: u64,
}

/// The aggregator's signed sum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateBody {
    /// Format version (1).
    pub version: u8,
    /// Query id.
    pub query_id: String,
    /// Digest of the signed query document.
    pub query_digest: Digest,
    /// Aggregating department (must match the signing certificate).
    pub aggregator: String,
    /// The contributions added, sorted by department.
    pub contributions: Vec<ContributionRef>,
    /// When made (ms).
    pub created_ms: u64,
    /// Slots.
    pub slots: u64,
    /// The slot-wise sum, little-endian words.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// What a contributor sends the aggregator: the query (so the aggregator can
/// check it) and the contribution.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContributionSubmission {
    /// The key holder's signed query.
    pub query: Certified,
    /// The signed contribution.
    pub contribution: Certified,
}

/// What the aggregator sends the key holder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AggregateSubmission {
    /// The key holder's signed query.
    pub query: Certified,
    /// The signed aggregate.
    pub aggregate: Certified,
}

fn check_query_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(NodeError::Invalid(format!(
            "query id {id:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

fn secret_name(query_id: &str) -> String {
    format!("he-{query_id}")
}

fn key(tag: u8, query_id: &str, dept: Option<&str>) -> Vec<u8> {
    let mut k = vec![tag, 0];
    k.extend_from_slice(query_id.as_bytes());
    if let Some(d) = dept {
        k.push(0);
        k.extend_from_slice(d.as_bytes());
    }
    k
}

const TAG_QUERY: u8 = b'q';
const TAG_CONTRIBUTION: u8 = b'c';
const TAG_AGGREGATE: u8 = b'a';
const TAG_DECRYPTED: u8 = b'd';

/// Refuses a sum that differs from one already decrypted for the query: two
/// sums over different sets of contributors would reveal their difference
/// (e.g. all provinces, then all but one).
fn check_not_differencing(node: &Node, query_id: &str, agg: &AggregateBody) -> Result<()> {
    let Some(done) = stored(node, TAG_DECRYPTED, query_id, None)? else {
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

fn stored(node: &Node, tag: u8, query_id: &str, dept: Option<&str>) -> Result<Option<Certified>> {
    node.store.get(CF_HE, &key(tag, query_id, dept))
}

fn stored_query(node: &Node, query_id: &str) -> Result<Certified> {
    stored(node, TAG_QUERY, query_id, None)?.ok_or_else(|| {
        NodeError::NotFound(format!(
            "no query {query_id:?} on this node (`pdx he list` shows the queries it holds)"
        ))
    })
}

fn contribution_prefix(query_id: &str) -> Vec<u8> {
    let mut prefix = key(TAG_CONTRIBUTION, query_id, None);
    prefix.push(0);
    prefix
}

fn contributions(node: &Node, query_id: &str) -> Result<Vec<Certified>> {
    Ok(node
        .store
        .scan::<Certified>(CF_HE, &contribution_prefix(query_id))?
        .into_iter()
        .map(|(_, c)| c)
        .collect())
}

/// Verifies a query document: certificate, signature, consistency, signer = key holder.
pub fn check_query(checker: &CertChecker, doc: &Certified) -> Result<QueryBody> {
    let (q, signer): (QueryBody, _) = doc.verify(checker, SignatureDomain::HeQuery)?;
    if signer.dept != q.key_holder {
        return Err(NodeError::Refused(format!(
            "query {} names key holder {} but is signed by {}",
            q.query_id, q.key_holder, signer.dept
        )));
    }
    q.validate()?;
    Ok(q)
}

/// Adds `list` to a running slot-wise sum (the first list starts it).
fn accumulate(sum: Option<HeList>, list: &HeList) -> Result<HeList> {
    Ok(match sum {
        None => list.clone(),
        Some(s) => s.add(list)?,
    })
}

/// Verifies a contribution against its (already verified) query.
pub fn check_contribution(
    checker: &CertChecker,
    query: &QueryBody,
    query_digest: &Digest,
    doc: &Certified,
) -> Result<(ContributionBody, HeList)> {
    let (c, signer): (ContributionBody, _) =
        doc.verify(checker, SignatureDomain::HeContribution)?;
    let refuse = |m: String| {
        NodeError::Refused(format!(
            "contribution of {} to query {}: {m}",
            signer.dept, query.query_id
        ))
    };
    if c.version != 1 {
        return Err(refuse(format!(
            "version {} (this build reads 1)",
            c.version
        )));
    }
    if c.contributor != signer.dept {
        return Err(refuse(format!("names contributor {}", c.contributor)));
    }
    if c.query_id != query.query_id || &c.query_digest != query_digest {
        return Err(refuse(
            "is for another query (query id or digest differs)".into(),
        ));
    }
    if !query.contributors.contains(&c.contributor) {
        return Err(refuse(
            "the department is not an allowed contributor".into(),
        ));
    }
    let list = ciphertext(&c.ciphertext, c.slots, query)
        .map_err(|e| refuse(format!("ciphertext refused: {e}")))?;
    Ok((c, list))
}

fn ciphertext(bytes: &[u8], slots: u64, query: &QueryBody) -> Result<HeList> {
    if slots != query.slots() as u64 {
        return Err(NodeError::Invalid(format!(
            "{slots} slots, the query's layout has {}",
            query.slots()
        )));
    }
    if bytes.len() != he::list_bytes(query.slots()) {
        return Err(NodeError::Invalid(format!(
            "{} bytes, a list of {} slots under {} has {}",
            bytes.len(),
            query.slots(),
            he::SCHEME_ID,
            he::list_bytes(query.slots())
        )));
    }
    Ok(HeList::from_words(
        he::bytes_to_words(bytes)?,
        query.slots(),
    )?)
}

/// Verifies an aggregate against its query: signer = aggregator, contributors
/// distinct and allowed, at least k of them, sizes.
pub fn check_aggregate(
    checker: &CertChecker,
    query: &QueryBody,
    query_digest: &Digest,
    doc: &Certified,
) -> Result<(AggregateBody, HeList)> {
    let (a, signer): (AggregateBody, _) = doc.verify(checker, SignatureDomain::HeAggregate)?;
    let refuse = |m: String| {
        NodeError::Refused(format!(
            "aggregate of query {} from {}: {m}",
            query.query_id, signer.dept
        ))
    };
    if a.version != 1 {
        return Err(refuse(format!(
            "version {} (this build reads 1)",
            a.version
        )));
    }
    if a.aggregator != signer.dept || a.aggregator != query.aggregator {
        return Err(refuse(format!(
            "names aggregator {}; the query's aggregator is {}",
            a.aggregator, query.aggregator
        )));
    }
    if a.query_id != query.query_id || &a.query_digest != query_digest {
        return Err(refuse(
            "is for another query (query id or digest differs)".into(),
        ));
    }
    let depts: BTreeSet<&str> = a.contributions.iter().map(|c| c.dept.as_str()).collect();
    if depts.len() != a.contributions.len() {
        return Err(refuse("lists a contributor twice".into()));
    }
    if let Some(c) = a
        .contributions
        .iter()
        .find(|c| !query.contributors.contains(&c.dept))
    {
        return Err(refuse(format!(
            "lists {}, not an allowed contributor",
            c.dept
        )));
    }
    if (depts.len() as u64) < u64::from(query.k) {
        return Err(refuse(format!(
            "covers {} distinct contributors; the query needs at least k = {}",
            depts.len(),
            query.k
        )));
    }
    let list = ciphertext(&a.ciphertext, a.slots, query)
        .map_err(|e| refuse(format!("ciphertext refused: {e}")))?;
    Ok((a, list))
}

// ---------------------------------------------------------------- key holder

/// What the key holder asks for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuerySpec {
    /// Query id.
    pub query_id: String,
    /// Schema file (TOML) of the datasets summed.
    pub schema_path: String,
    /// Value fields.
    pub values: Vec<String>,
    /// Group-by fields (`FIELD[:TRANSFORM]`).
    pub group_by: Vec<String>,
    /// Category list file: one category per line, parts separated by `|`.
    pub categories_path: String,
    /// Minimum distinct contributors.
    pub k: u32,
    /// Allowed contributors.
    pub contributors: Vec<String>,
    /// Aggregator.
    pub aggregator: String,
    /// Deadline (ms).
    pub deadline_ms: u64,
    /// Where to write the signed query document.
    pub out: String,
}

/// `pdx he keygen`.
pub fn keygen(node: &Node, spec: &QuerySpec, operator: &str) -> Result<serde_json::Value> {
    check_query_id(&spec.query_id)?;
    if stored(node, TAG_QUERY, &spec.query_id, None)?.is_some() {
        return Err(NodeError::Invalid(format!(
            "query {} already exists on this node; choose a new query id",
            spec.query_id
        )));
    }
    let source =
        std::fs::read_to_string(&spec.schema_path).map_err(NodeError::io(&spec.schema_path))?;
    let schema = Schema::parse(&source, &spec.schema_path)?;
    let mut scales = Vec::new();
    for v in &spec.values {
        scales.push(value_field(&schema, v)?.1);
    }
    let group_by = spec
        .group_by
        .iter()
        .map(|g| GroupBy::parse(g))
        .collect::<Result<Vec<_>>>()?;
    for g in &group_by {
        schema_field(&schema, &g.field)?;
    }
    let text = std::fs::read_to_string(&spec.categories_path)
        .map_err(NodeError::io(&spec.categories_path))?;
    let categories: BTreeSet<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let (sk, pk) = he::keygen();
    let body = QueryBody {
        version: 1,
        query_id: spec.query_id.clone(),
        key_holder: node.config.dept.clone(),
        aggregator: spec.aggregator.clone(),
        schema: schema.dataset.id.clone(),
        values: spec.values.clone(),
        scales,
        group_by,
        categories: categories.into_iter().collect(),
        k: spec.k,
        contributors: spec.contributors.clone(),
        deadline_ms: spec.deadline_ms,
        created_ms: now_ms(),
        scheme: he::SCHEME_ID.to_string(),
        public_key: he::words_to_bytes(&pk.to_words()),
    };
    body.validate()?;
    node.save_secret(
        &secret_name(&spec.query_id),
        KeyKind::HeLweSecret,
        &sk.to_bytes(),
    )?;
    let doc = Certified::sign(node, SignatureDomain::HeQuery, &body)?;
    node.store
        .put(CF_HE, &key(TAG_QUERY, &spec.query_id, None), &doc)?;
    crate::config::write_atomic(std::path::Path::new(&spec.out), &doc.to_bytes()?, 0o644)?;
    let mut d = node.draft(EventKind::KeyRotate, operator);
    d.payload_digest = Some(doc.digest());
    d.detail = Some(format!(
        "homomorphic-aggregate key generated for query {} ({}); k = {}, {} categories, aggregator {}, contributors {}",
        body.query_id,
        he::SCHEME_ID,
        body.k,
        body.categories.len(),
        body.aggregator,
        body.contributors.join(",")
    ));
    node.log(d)?;
    Ok(serde_json::json!({
        "query": body.query_id, "out": spec.out, "digest": doc.digest().to_hex(),
        "categories": body.categories.len(), "slots": body.slots(), "k": body.k,
        "contributors": body.contributors, "aggregator": body.aggregator,
        "secret_key": node.home.key(&secret_name(&body.query_id)).display().to_string(),
    }))
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

// --------------------------------------------------------------- contributor

/// Plaintext per-category sums of one dataset (what a contribution encrypts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainSums {
    /// Per category (listed ones, then [`OTHER`]): value sums in units, then the count.
    pub sums: Vec<Vec<u64>>,
    /// Per category: records.
    pub counts: Vec<u64>,
    /// Records summed.
    pub records: u64,
}

/// Sums a dataset per the query's categories.
pub fn plain_sums(node: &Node, query: &QueryBody, dataset: &str) -> Result<PlainSums> {
    let meta = crate::dataset::meta(node, dataset)?;
    if meta.schema_id != query.schema {
        return Err(NodeError::Refused(format!(
            "dataset {dataset} has schema {}; query {} sums {}",
            meta.schema_id, query.query_id, query.schema
        )));
    }
    let schema = meta.schema()?;
    let mut value_idx = Vec::new();
    for (v, &scale) in query.values.iter().zip(&query.scales) {
        let (i, field_scale) = value_field(&schema, v)?;
        if field_scale != scale {
            return Err(NodeError::Refused(format!(
                "field {v} of dataset {dataset} has another scale than query {} declares",
                query.query_id
            )));
        }
        value_idx.push(i);
    }
    let mut groups = Vec::new();
    for g in &query.group_by {
        let i = schema.field_index(&g.field).ok_or_else(|| {
            NodeError::Invalid(format!("dataset {dataset} has no field {}", g.field))
        })?;
        groups.push((i, g.generalization()?, &schema.fields[i].hierarchy));
    }
    let index = query.category_index();
    let other = query.categories.len();
    let cats = other + 1;
    let mut sums = vec![vec![0u128; query.values.len()]; cats];
    let mut counts = vec![0u64; cats];
    let (mut key, mut part) = (String::new(), String::new());
    let mut row_no = 0u64;
    crate::dataset::for_each_row(node, &meta, |row| {
        row_no += 1;
        key.clear();
        for (n, (i, g, h)) in groups.iter().enumerate() {
            if n > 0 {
                key.push(CATEGORY_SEPARATOR);
            }
            let v = row.get(*i).copied().flatten().unwrap_or("");
            match g {
                None => key.push_str(v),
                Some(g) => match pdx_schemas::generalize::apply(g, v, h, &mut part) {
                    Ok(()) => key.push_str(&part),
                    Err(_) => key.push_str(OTHER),
                },
            }
        }
        let c = index.get(key.as_str()).copied().unwrap_or(other);
        counts[c] += 1;
        for (v, (s, (&i, &scale))) in sums[c]
            .iter_mut()
            .zip(value_idx.iter().zip(&query.scales))
            .enumerate()
        {
            let Some(text) = row.get(i).copied().flatten() else {
                continue;
            };
            let units = decimal_to_units(text, scale)
                .filter(|u| *u >= 0)
                .ok_or_else(|| {
                    NodeError::Refused(format!(
                        "dataset {dataset} row {row_no} field {}: {text:?} is not a non-negative amount; homomorphic sums take non-negative values",
                        query.values[v]
                    ))
                })?;
            *s += units as u128;
        }
        Ok(())
    })?;
    let mut out = Vec::with_capacity(cats);
    for (c, s) in sums.iter().enumerate() {
        let mut row = Vec::with_capacity(s.len());
        for (v, &x) in s.iter().enumerate() {
            row.push(u64::try_from(x).map_err(|_| {
                NodeError::Refused(format!(
                    "the sum of {} in category {} exceeds 2^64 units; split the query",
                    query.values[v],
                    category_name(query, c)
                ))
            })?);
        }
        if counts[c] >> (COUNT_LIMBS as u32 * he::LIMB_BITS) != 0 {
            return Err(NodeError::Refused(format!(
                "category {} has more than 2^32 records",
                category_name(query, c)
            )));
        }
        out.push(row);
    }
    Ok(PlainSums {
        sums: out,
        counts,
        records: row_no,
    })
}

fn category_name(query: &QueryBody, c: usize) -> &str {
    query.categories.get(c).map(String::as_str).unwrap_or(OTHER)
}

/// The limbs of plaintext sums in slot order.
pub fn limbs(query: &QueryBody, plain: &PlainSums) -> Vec<u64> {
    let mut out = Vec::with_capacity(query.slots());
    for (s, &n) in plain.sums.iter().zip(&plain.counts) {
        for &v in s {
            out.extend(he::split(v, VALUE_LIMBS));
        }
        out.extend(he::split(n, COUNT_LIMBS));
    }
    out
}

/// `pdx he contribute`: sums, encrypts, signs and audits; returns the submission.
pub fn contribute(
    node: &Node,
    query_doc: &Certified,
    dataset: &str,
    to: &str,
    operator: &str,
) -> Result<(SubmissionFile, serde_json::Value)> {
    let query = check_query(&node.cert_checker()?, query_doc)?;
    let me = &node.config.dept;
    if !query.contributors.contains(me) {
        return Err(NodeError::Refused(format!(
            "query {} does not list {me} as a contributor",
            query.query_id
        )));
    }
    if to != query.aggregator {
        return Err(NodeError::Refused(format!(
            "query {} names {} as aggregator, not {to}",
            query.query_id, query.aggregator
        )));
    }
    if now_ms() > query.deadline_ms {
        return Err(NodeError::Refused(format!(
            "query {} closed at its deadline",
            query.query_id
        )));
    }
    let meta = crate::dataset::meta(node, dataset)?;
    let plain = plain_sums(node, &query, dataset)?;
    let list = he::encrypt(&query.public_key()?, &limbs(&query, &plain))?;
    let body = ContributionBody {
        version: 1,
        query_id: query.query_id.clone(),
        query_digest: query_doc.digest(),
        contributor: me.clone(),
        dataset_digest: meta.digest,
        records: plain.records,
        created_ms: now_ms(),
        slots: query.slots() as u64,
        ciphertext: he::words_to_bytes(list.words()),
    };
    let doc = Certified::sign(node, SignatureDomain::HeContribution, &body)?;
    let schema = meta.schema()?;
    let mut d = node.draft(EventKind::AggregateContribute, operator);
    d.subject.dataset = Some(dataset.to_string());
    d.counterparty = Some(query.aggregator.clone());
    d.purpose = Some(format!("homomorphic aggregate {}", query.query_id));
    d.fields = query
        .values
        .iter()
        .chain(query.group_by.iter().map(|g| &g.field))
        .filter_map(|f| schema.field_index(f).map(|i| &schema.fields[i]))
        .map(|f| FieldRef {
            name: f.name.clone(),
            class: format!("{}/he-encrypted-sum", f.classification()),
        })
        .collect();
    d.record_count = Some(plain.records);
    d.payload_digest = Some(doc.digest());
    d.detail = Some(format!(
        "encrypted contribution to query {} (key holder {}, aggregator {}): {} categories, {} slots",
        query.query_id,
        query.key_holder,
        query.aggregator,
        query.categories.len() + 1,
        query.slots()
    ));
    node.log(d)?;
    let submission = ContributionSubmission {
        query: query_doc.clone(),
        contribution: doc.clone(),
    };
    Ok((
        SubmissionFile {
            kind: KIND_HE_CONTRIBUTION.into(),
            document: to_cbor(&submission)?,
        },
        serde_json::json!({"query": query.query_id, "dataset": dataset, "records": plain.records,
            "slots": query.slots(), "bytes": body.ciphertext.len(), "digest": doc.digest().to_hex(),
            "to": query.aggregator}),
    ))
}

// ---------------------------------------------------------------- aggregator

/// Checks and stores a contribution (the aggregator's side of `Submit`).
pub fn accept_contribution(node: &Node, peer: &str, document: &[u8]) -> Result<Accepted> {
    let sub: ContributionSubmission = from_cbor(document, "he contribution submission")?;
    let checker = node.cert_checker()?;
    let query = check_query(&checker, &sub.query)?;
    if query.aggregator != node.config.dept {
        return Err(NodeError::Refused(format!(
            "query {} names {} as aggregator, not this node",
            query.query_id, query.aggregator
        )));
    }
    let query_digest = sub.query.digest();
    match stored(node, TAG_QUERY, &query.query_id, None)? {
        Some(q) if q.digest() != query_digest => {
            return Err(NodeError::Refused(format!(
                "another query document with id {} is already held here",
                query.query_id
            )));
        }
        Some(_) => {}
        None => node
            .store
            .put(CF_HE, &key(TAG_QUERY, &query.query_id, None), &sub.query)?,
    }
    if now_ms() > query.deadline_ms {
        return Err(NodeError::Refused(format!(
            "query {} closed at its deadline",
            query.query_id
        )));
    }
    let (c, _list) = check_contribution(&checker, &query, &query_digest, &sub.contribution)?;
    let digest = sub.contribution.digest();
    let k = key(TAG_CONTRIBUTION, &query.query_id, Some(&c.contributor));
    if let Some(prev) = node.store.get::<Certified>(CF_HE, &k)? {
        if prev.digest() == digest {
            return Ok(Accepted {
                digest,
                note: "already accepted".into(),
            });
        }
        return Err(NodeError::Refused(format!(
            "{} already contributed to query {}; contributions are final",
            c.contributor, query.query_id
        )));
    }
    node.store.put(CF_HE, &k, &sub.contribution)?;
    let mut d = node.draft(EventKind::AggregateContribute, "pdx-node");
    d.counterparty = Some(c.contributor.clone());
    d.purpose = Some(format!("homomorphic aggregate {}", query.query_id));
    d.record_count = Some(c.records);
    d.payload_digest = Some(digest);
    d.detail = Some(format!(
        "accepted encrypted contribution of {} to query {} (via {peer}; {} slots)",
        c.contributor, query.query_id, c.slots
    ));
    node.log(d)?;
    Ok(Accepted {
        digest,
        note: format!(
            "contribution of {} to query {} accepted",
            c.contributor, query.query_id
        ),
    })
}

/// `pdx he aggregate`: adds every valid contribution, signs, stores and audits;
/// returns the submission for the key holder.
pub fn aggregate(
    node: &Node,
    query_id: &str,
    to: &str,
    operator: &str,
) -> Result<(SubmissionFile, serde_json::Value)> {
    let query_doc = stored_query(node, query_id)?;
    let checker = node.cert_checker()?;
    let query = check_query(&checker, &query_doc)?;
    if query.aggregator != node.config.dept {
        return Err(NodeError::Refused(format!(
            "query {query_id} names {} as aggregator, not this node",
            query.aggregator
        )));
    }
    if to != query.key_holder {
        return Err(NodeError::Refused(format!(
            "query {query_id} names {} as key holder, not {to}",
            query.key_holder
        )));
    }
    let query_digest = query_doc.digest();
    let mut sum: Option<HeList> = None;
    let mut refs = Vec::new();
    let mut excluded = Vec::new();
    for doc in contributions(node, query_id)? {
        // Re-checked now: a certificate revoked since acceptance excludes it.
        match check_contribution(&checker, &query, &query_digest, &doc) {
            Ok((c, list)) => {
                sum = Some(accumulate(sum, &list)?);
                refs.push(ContributionRef {
                    dept: c.contributor,
                    digest: doc.digest(),
                    records: c.records,
                });
            }
            Err(e) => excluded.push(e.to_string()),
        }
    }
    refs.sort_by(|a, b| a.dept.cmp(&b.dept));
    let sum = match sum {
        Some(s) if refs.len() as u64 >= u64::from(query.k) => s,
        _ => {
            return Err(NodeError::Refused(format!(
                "query {query_id} has {} valid contributions; the key holder decrypts only sums of at least k = {}{}",
                refs.len(),
                query.k,
                if excluded.is_empty() {
                    String::new()
                } else {
                    format!(" (excluded: {})", excluded.join("; "))
                }
            )));
        }
    };
    let body = AggregateBody {
        version: 1,
        query_id: query_id.to_string(),
        query_digest,
        aggregator: node.config.dept.clone(),
        contributions: refs,
        created_ms: now_ms(),
        slots: sum.slots() as u64,
        ciphertext: he::words_to_bytes(sum.words()),
    };
    let doc = Certified::sign(node, SignatureDomain::HeAggregate, &body)?;
    node.store
        .put(CF_HE, &key(TAG_AGGREGATE, query_id, None), &doc)?;
    let mut d = node.draft(EventKind::AggregateCombine, operator);
    d.counterparty = Some(query.key_holder.clone());
    d.purpose = Some(format!("homomorphic aggregate {query_id}"));
    d.record_count = Some(body.contributions.iter().map(|c| c.records).sum());
    d.payload_digest = Some(doc.digest());
    d.detail = Some(format!(
        "added {} contributions [{}]{}",
        body.contributions.len(),
        body.contributions
            .iter()
            .map(|c| format!("{}:{}", c.dept, c.digest.to_hex()))
            .collect::<Vec<_>>()
            .join(" "),
        if excluded.is_empty() {
            String::new()
        } else {
            format!("; excluded {}", excluded.join("; "))
        }
    ));
    node.log(d)?;
    let submission = AggregateSubmission {
        query: query_doc,
        aggregate: doc.clone(),
    };
    Ok((
        SubmissionFile {
            kind: KIND_HE_AGGREGATE.into(),
            document: to_cbor(&submission)?,
        },
        serde_json::json!({"query": query_id, "contributors": body.contributions.iter().map(|c| &c.dept).collect::<Vec<_>>(),
            "excluded": excluded, "digest": doc.digest().to_hex(), "to": query.key_holder,
            "bytes": body.ciphertext.len()}),
    ))
}

// ---------------------------------------------------------------- key holder

/// Checks and stores an aggregate (the key holder's side of `Submit`).
pub fn accept_aggregate(node: &Node, peer: &str, document: &[u8]) -> Result<Accepted> {
    let sub: AggregateSubmission = from_cbor(document, "he aggregate submission")?;
    let checker = node.cert_checker()?;
    let query = check_query(&checker, &sub.query)?;
    let own = stored_query(node, &query.query_id)?;
    if query.key_holder != node.config.dept || own.digest() != sub.query.digest() {
        return Err(NodeError::Refused(format!(
            "query {} is not a query this node made",
            query.query_id
        )));
    }
    let (a, _) = check_aggregate(&checker, &query, &own.digest(), &sub.aggregate)?;
    check_not_differencing(node, &query.query_id, &a)?;
    let digest = sub.aggregate.digest();
    node.store.put(
        CF_HE,
        &key(TAG_AGGREGATE, &query.query_id, None),
        &sub.aggregate,
    )?;
    let mut d = node.draft(EventKind::AggregateCombine, "pdx-node");
    d.counterparty = Some(a.aggregator.clone());
    d.purpose = Some(format!("homomorphic aggregate {}", query.query_id));
    d.payload_digest = Some(digest);
    d.detail = Some(format!(
        "received aggregate of query {} from {peer} covering {} contributors [{}]",
        query.query_id,
        a.contributions.len(),
        a.contributions
            .iter()
            .map(|c| format!("{}:{}", c.dept, c.digest.to_hex()))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    node.log(d)?;
    Ok(Accepted {
        digest,
        note: format!(
            "aggregate of query {} over {} contributors accepted",
            query.query_id,
            a.contributions.len()
        ),
    })
}

/// Decrypted totals of one category.
#[derive(Clone, Debug, Serialize)]
pub struct CategoryTotal {
    /// Category key (`part|part`, or [`OTHER`]).
    pub category: String,
    /// Records.
    pub count: u64,
    /// Sum per value field (decimal text).
    pub sums: Vec<String>,
    /// Mean per value field (decimal text, rounded half up to the field's scale).
    pub means: Vec<String>,
}

/// `pdx he decrypt`.
pub fn decrypt(node: &Node, query_id: &str, operator: &str) -> Result<serde_json::Value> {
    let query_doc = stored_query(node, query_id)?;
    let checker = node.cert_checker()?;
    let query = check_query(&checker, &query_doc)?;
    if query.key_holder != node.config.dept {
        return Err(NodeError::Refused(format!(
            "query {query_id} belongs to key holder {}",
            query.key_holder
        )));
    }
    let agg_doc = stored(node, TAG_AGGREGATE, query_id, None)?.ok_or_else(|| {
        NodeError::NotFound(format!(
            "no aggregate for query {query_id} has arrived (the aggregator {} runs `pdx he aggregate`)",
            query.aggregator
        ))
    })?;
    let (agg, list) = check_aggregate(&checker, &query, &query_doc.digest(), &agg_doc)?;
    check_not_differencing(node, query_id, &agg)?;
    // Marked before decrypting: a crash after this point cannot open the door
    // to decrypting a different sum.
    node.store
        .put(CF_HE, &key(TAG_DECRYPTED, query_id, None), &agg_doc)?;
    let secret = node.load_secret(&secret_name(query_id), KeyKind::HeLweSecret)?;
    let sk = HeSecretKey::from_bytes(&secret)?;
    let slots = he::decrypt(&sk, &list);
    let totals = totals(&query, &slots);
    let records: u128 = totals.iter().map(|t| u128::from(t.count)).sum();
    let mut d = node.draft(EventKind::AggregateDecrypt, operator);
    d.counterparty = Some(agg.aggregator.clone());
    d.purpose = Some(format!("homomorphic aggregate {query_id}"));
    d.record_count = u64::try_from(records).ok();
    d.payload_digest = Some(agg_doc.digest());
    d.detail = Some(format!(
        "decrypted the sum of {} contributors ({}); k = {}",
        agg.contributions.len(),
        agg.contributions
            .iter()
            .map(|c| c.dept.as_str())
            .collect::<Vec<_>>()
            .join(","),
        query.k
    ));
    node.log(d)?;
    Ok(serde_json::json!({
        "query": query_id, "values": query.values,
        "group_by": query.group_by.iter().map(|g| format!("{}:{}", g.field, g.by)).collect::<Vec<_>>(),
        "contributors": agg.contributions.iter().map(|c| &c.dept).collect::<Vec<_>>(),
        "k": query.k, "records": records.to_string(), "aggregate_digest": agg_doc.digest().to_hex(),
        "categories": totals,
    }))
}

fn totals(query: &QueryBody, slots: &[u64]) -> Vec<CategoryTotal> {
    let per = query.slots_per_category();
    let mut out = Vec::new();
    for (c, s) in slots.chunks(per).enumerate() {
        let count = he::combine(&s[query.values.len() * VALUE_LIMBS..]);
        if count == 0 {
            continue;
        }
        let (mut sums, mut means) = (Vec::new(), Vec::new());
        for (v, &scale) in query.scales.iter().enumerate() {
            let total = he::combine(&s[v * VALUE_LIMBS..(v + 1) * VALUE_LIMBS]);
            sums.push(units_to_decimal(total as i128, scale));
            means.push(units_to_decimal(
                ((2 * total + count) / (2 * count)) as i128,
                scale,
            ));
        }
        out.push(CategoryTotal {
            category: category_name(query, c).to_string(),
            count: count as u64,
            sums,
            means,
        });
    }
    out
}

// --------------------------------------------------------------- verification

/// The documents of one query, as `pdx he export` writes them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryBundle {
    /// The signed query.
    pub query: Certified,
    /// The signed aggregate.
    pub aggregate: Certified,
    /// The signed contributions.
    pub contributions: Vec<Certified>,
}

/// The query, aggregate and contributions this node holds for `query_id`.
fn stored_bundle(node: &Node, query_id: &str) -> Result<QueryBundle> {
    Ok(QueryBundle {
        query: stored_query(node, query_id)?,
        aggregate: stored(node, TAG_AGGREGATE, query_id, None)?.ok_or_else(|| {
            NodeError::NotFound(format!("no aggregate of query {query_id} on this node"))
        })?,
        contributions: contributions(node, query_id)?,
    })
}

/// `pdx he export`: the query, aggregate and contributions held here.
pub fn export(node: &Node, query_id: &str, out: &str, operator: &str) -> Result<serde_json::Value> {
    let bundle = stored_bundle(node, query_id)?;
    let bytes = to_cbor(&bundle)?;
    crate::config::write_atomic(std::path::Path::new(out), &bytes, 0o644)?;
    let mut d = node.draft(EventKind::Export, operator);
    d.purpose = Some(format!("homomorphic aggregate {query_id}"));
    d.payload_digest = Some(Digest(*blake3::hash(&bytes).as_bytes()));
    d.detail = Some(format!(
        "query, aggregate and {} encrypted contributions exported to {out}",
        bundle.contributions.len()
    ));
    node.log(d)?;
    Ok(
        serde_json::json!({"query": query_id, "out": out, "contributions": bundle.contributions.len()}),
    )
}

/// Recomputes the aggregate from the contributions and compares.
pub fn verify_bundle(checker: &CertChecker, bundle: &QueryBundle) -> Result<serde_json::Value> {
    let query = check_query(checker, &bundle.query)?;
    let qd = bundle.query.digest();
    let (agg, list) = check_aggregate(checker, &query, &qd, &bundle.aggregate)?;
    let mut problems = Vec::new();
    let mut by_digest = HashMap::new();
    for doc in &bundle.contributions {
        match check_contribution(checker, &query, &qd, doc) {
            Ok((c, l)) => {
                by_digest.insert(doc.digest(), (c, l));
            }
            Err(e) => problems.push(format!("contribution refused: {e}")),
        }
    }
    let mut sum: Option<HeList> = None;
    for r in &agg.contributions {
        match by_digest.get(&r.digest) {
            Some((c, l)) if c.contributor == r.dept => sum = Some(accumulate(sum, l)?),
            _ => problems.push(format!(
                "the aggregate lists a contribution of {} ({}) that is not among the valid contributions",
                r.dept,
                r.digest.to_hex()
            )),
        }
    }
    let matches = sum.as_ref() == Some(&list);
    if !matches && problems.is_empty() {
        problems
            .push("the aggregate ciphertext is not the sum of the contributions it lists".into());
    }
    Ok(serde_json::json!({
        "query": query.query_id, "aggregator": agg.aggregator,
        "contributors": agg.contributions.iter().map(|c| &c.dept).collect::<Vec<_>>(),
        "aggregate_digest": bundle.aggregate.digest().to_hex(),
        "verdict": if problems.is_empty() { "ok" } else { "mismatch" },
        "problems": problems,
    }))
}

/// `pdx he verify-sum --bundle FILE --ca CA.pem` (offline, e.g. a regulator).
pub fn verify_bundle_file(bundle: &str, ca_pem: &str) -> Result<serde_json::Value> {
    let bundle: QueryBundle = crate::docs::read_file(bundle, "he query bundle")?;
    let ca = crate::pki::read_certs(std::path::Path::new(ca_pem))?;
    let checker = CertChecker::new(&ca, Vec::new())?;
    verify_bundle(&checker, &bundle)
}

/// `pdx he verify-sum` on a node holding the contributions (the aggregator):
/// recomputes the sum and checks that each contribution and the aggregate are
/// in this node's audit log.
pub fn verify_sum(node: &Node, query_id: &str) -> Result<serde_json::Value> {
    let bundle = stored_bundle(node, query_id)?;
    let mut out = verify_bundle(&node.cert_checker()?, &bundle)?;
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
    if !wanted.is_empty()
        && let Some(o) = out.as_object_mut()
    {
        let missing: Vec<String> = wanted
            .iter()
            .map(|(d, what)| format!("{what} {} is not in this node's audit log", hex::encode(d)))
            .collect();
        if let Some(p) = o.get_mut("problems").and_then(|p| p.as_array_mut()) {
            p.extend(missing.into_iter().map(serde_json::Value::from));
        }
        o.insert("verdict".into(), "mismatch".into());
    }
    Ok(out)
}

/// `pdx he list`: queries held and their state.
pub fn list(node: &Node) -> Result<serde_json::Value> {
    let mut out = Vec::new();
    for (_, doc) in node.store.scan::<Certified>(CF_HE, &[TAG_QUERY, 0])? {
        let q: QueryBody = doc.signed.dangerous_decode_unverified("he query")?;
        // Counted by key: the ciphertexts need not be read.
        let mut n = 0usize;
        node.store
            .scan_raw(CF_HE, &contribution_prefix(&q.query_id), |_, _| {
                n += 1;
                Ok(true)
            })?;
        let agg = stored(node, TAG_AGGREGATE, &q.query_id, None)?.is_some();
        let role = if q.key_holder == node.config.dept {
            "key-holder"
        } else if q.aggregator == node.config.dept {
            "aggregator"
        } else {
            "contributor"
        };
        out.push(
            serde_json::json!({"query": q.query_id, "role": role, "key_holder": q.key_holder,
            "aggregator": q.aggregator, "k": q.k, "categories": q.categories.len(),
            "contributions": n, "aggregate": agg, "deadline_ms": q.deadline_ms}),
        );
    }
    Ok(serde_json::Value::Array(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::pki;
    use pdx_crypto::SigningKey;
    use rustls::pki_types::pem::PemObject;
    use std::path::Path;

    struct Party {
        dept: String,
        key: SigningKey,
        cert: Vec<u8>,
    }

    fn party(ca: &Path, dept: &str) -> Party {
        let out = ca.join(dept);
        pki::ca_issue(ca, dept, dept, &out).unwrap();
        let key =
            rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(out.join("node.key")).unwrap();
        let cert = rustls::pki_types::CertificateDer::from_pem_file(out.join("node.crt")).unwrap();
        Party {
            dept: dept.into(),
            key: SigningKey::from_pkcs8(key.secret_pkcs8_der()).unwrap(),
            cert: cert.to_vec(),
        }
    }

    struct World {
        _dir: tempfile::TempDir,
        checker: CertChecker,
        holder: Party,
        agg: Party,
        provinces: Vec<Party>,
        sk: HeSecretKey,
        query: QueryBody,
        query_doc: Certified,
    }

    fn world(k: u32) -> World {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        pki::ca_init(&ca, "unit").unwrap();
        let checker =
            CertChecker::new(&pki::read_certs(&ca.join("ca.crt")).unwrap(), vec![]).unwrap();
        let holder = party(&ca, "100200");
        let agg = party(&ca, "100000");
        let provinces: Vec<Party> = ["440000", "110000", "310000", "320000"]
            .iter()
            .map(|d| party(&ca, d))
            .collect();
        let (sk, pk) = he::keygen();
        let query = QueryBody {
            version: 1,
            query_id: "q1".into(),
            key_holder: holder.dept.clone(),
            aggregator: agg.dept.clone(),
            schema: "s".into(),
            values: vec!["amount".into()],
            scales: vec![2],
            group_by: vec![GroupBy {
                field: "diag".into(),
                by: "icd10-category".into(),
            }],
            categories: vec!["A00".into(), "J18".into()],
            k,
            contributors: provinces.iter().map(|p| p.dept.clone()).collect(),
            deadline_ms: u64::MAX,
            created_ms: 0,
            scheme: he::SCHEME_ID.into(),
            public_key: he::words_to_bytes(&pk.to_words()),
        };
        let query_doc = Certified::sign_with(
            &holder.key,
            holder.cert.clone(),
            SignatureDomain::HeQuery,
            &query,
        )
        .unwrap();
        World {
            _dir: dir,
            checker,
            holder,
            agg,
            provinces,
            sk,
            query,
            query_doc,
        }
    }

    fn plain(w: &World, seed: u64) -> PlainSums {
        let cats = w.query.categories.len() + 1;
        PlainSums {
            sums: (0..cats as u64)
                .map(|c| vec![u64::MAX - seed * 7919 - c])
                .collect(),
            counts: (0..cats as u64).map(|c| (1 << 32) - 1 - seed - c).collect(),
            records: 0,
        }
    }

    fn contribution(w: &World, who: &Party, p: &PlainSums) -> Certified {
        let list = he::encrypt(&w.query.public_key().unwrap(), &limbs(&w.query, p)).unwrap();
        let body = ContributionBody {
            version: 1,
            query_id: w.query.query_id.clone(),
            query_digest: w.query_doc.digest(),
            contributor: who.dept.clone(),
            dataset_digest: Digest([0; 32]),
            records: 10,
            created_ms: 0,
            slots: w.query.slots() as u64,
            ciphertext: he::words_to_bytes(list.words()),
        };
        Certified::sign_with(
            &who.key,
            who.cert.clone(),
            SignatureDomain::HeContribution,
            &body,
        )
        .unwrap()
    }

    fn aggregate_of(w: &World, docs: &[&Certified], list: &HeList) -> Certified {
        let contributions = docs
            .iter()
            .map(|d| {
                let (c, _) =
                    check_contribution(&w.checker, &w.query, &w.query_doc.digest(), d).unwrap();
                ContributionRef {
                    dept: c.contributor,
                    digest: d.digest(),
                    records: c.records,
                }
            })
            .collect();
        let body = AggregateBody {
            version: 1,
            query_id: w.query.query_id.clone(),
            query_digest: w.query_doc.digest(),
            aggregator: w.agg.dept.clone(),
            contributions,
            created_ms: 0,
            slots: list.slots() as u64,
            ciphertext: he::words_to_bytes(list.words()),
        };
        Certified::sign_with(
            &w.agg.key,
            w.agg.cert.clone(),
            SignatureDomain::HeAggregate,
            &body,
        )
        .unwrap()
    }

    fn sum_of(w: &World, docs: &[&Certified]) -> HeList {
        let mut s: Option<HeList> = None;
        for d in docs {
            let (_, l) =
                check_contribution(&w.checker, &w.query, &w.query_doc.digest(), d).unwrap();
            s = Some(accumulate(s, &l).unwrap());
        }
        s.unwrap()
    }

    #[test]
    fn maximal_sums_and_counts_decrypt_exactly_through_the_documents() {
        let w = world(3);
        assert_eq!(check_query(&w.checker, &w.query_doc).unwrap(), w.query);
        let plains: Vec<PlainSums> = (0..4).map(|i| plain(&w, i)).collect();
        let docs: Vec<Certified> = w
            .provinces
            .iter()
            .zip(&plains)
            .map(|(p, x)| contribution(&w, p, x))
            .collect();
        let refs: Vec<&Certified> = docs.iter().collect();
        let list = sum_of(&w, &refs);
        let agg = aggregate_of(&w, &refs, &list);
        let (_, checked) =
            check_aggregate(&w.checker, &w.query, &w.query_doc.digest(), &agg).unwrap();
        let totals = totals(&w.query, &he::decrypt(&w.sk, &checked));
        assert_eq!(totals.len(), 3);
        for (c, t) in totals.iter().enumerate() {
            let want_sum: u128 = plains.iter().map(|p| u128::from(p.sums[c][0])).sum();
            let want_count: u64 = plains.iter().map(|p| p.counts[c]).sum::<u64>();
            assert_eq!(
                t.sums[0],
                units_to_decimal(want_sum as i128, 2),
                "category {c}: limb carries"
            );
            assert_eq!(t.count, want_count);
        }
        assert_eq!(totals[2].category, OTHER);
        // Anyone with the contributions recomputes the same aggregate.
        let bundle = QueryBundle {
            query: w.query_doc.clone(),
            aggregate: agg,
            contributions: docs.clone(),
        };
        assert_eq!(verify_bundle(&w.checker, &bundle).unwrap()["verdict"], "ok");
    }

    #[test]
    fn an_aggregate_of_fewer_than_k_contributors_is_refused() {
        let w = world(3);
        let docs: Vec<Certified> = w.provinces[..2]
            .iter()
            .map(|p| contribution(&w, p, &plain(&w, 1)))
            .collect();
        let refs: Vec<&Certified> = docs.iter().collect();
        let agg = aggregate_of(&w, &refs, &sum_of(&w, &refs));
        let err = check_aggregate(&w.checker, &w.query, &w.query_doc.digest(), &agg).unwrap_err();
        assert!(err.to_string().contains("at least k = 3"), "{err}");
    }

    #[test]
    fn forged_tampered_and_misaddressed_contributions_are_refused() {
        let w = world(3);
        let good = contribution(&w, &w.provinces[0], &plain(&w, 1));
        let qd = w.query_doc.digest();
        assert!(check_contribution(&w.checker, &w.query, &qd, &good).is_ok());
        // One flipped ciphertext bit breaks the signature.
        let mut tampered = good.clone();
        let n = tampered.signed.body.len();
        tampered.signed.body[n - 9] ^= 1;
        assert!(check_contribution(&w.checker, &w.query, &qd, &tampered).is_err());
        // Signed by one province, claiming to be another.
        let mut forged = good.clone();
        forged.certificate = w.provinces[1].cert.clone();
        assert!(check_contribution(&w.checker, &w.query, &qd, &forged).is_err());
        // A department outside the allowed list (the key holder itself).
        let outsider = contribution(&w, &w.holder, &plain(&w, 1));
        let err = check_contribution(&w.checker, &w.query, &qd, &outsider).unwrap_err();
        assert!(
            err.to_string().contains("not an allowed contributor"),
            "{err}"
        );
        // For another query.
        assert!(check_contribution(&w.checker, &w.query, &Digest([1; 32]), &good).is_err());
    }

    #[test]
    fn wrong_size_and_wrong_parameter_lists_are_refused() {
        let w = world(3);
        let qd = w.query_doc.digest();
        let mut body: ContributionBody = contribution(&w, &w.provinces[0], &plain(&w, 1))
            .signed
            .dangerous_decode_unverified("c")
            .unwrap();
        let sign = |b: &ContributionBody| {
            Certified::sign_with(
                &w.provinces[0].key,
                w.provinces[0].cert.clone(),
                SignatureDomain::HeContribution,
                b,
            )
            .unwrap()
        };
        // Short by one word.
        body.ciphertext.truncate(body.ciphertext.len() - 8);
        let err = check_contribution(&w.checker, &w.query, &qd, &sign(&body)).unwrap_err();
        assert!(err.to_string().contains("bytes"), "{err}");
        // A list for another layout (one slot more).
        body.slots += 1;
        body.ciphertext = vec![0; he::list_bytes(body.slots as usize)];
        let err = check_contribution(&w.checker, &w.query, &qd, &sign(&body)).unwrap_err();
        assert!(err.to_string().contains("slots"), "{err}");
        // A query under other parameters is refused before anything is added.
        let mut q = w.query.clone();
        q.scheme = "pdx-he/1 other-parameters".into();
        let doc = Certified::sign_with(
            &w.holder.key,
            w.holder.cert.clone(),
            SignatureDomain::HeQuery,
            &q,
        )
        .unwrap();
        assert!(check_query(&w.checker, &doc).is_err());
        q.scheme = he::SCHEME_ID.into();
        q.public_key.truncate(64);
        let doc = Certified::sign_with(
            &w.holder.key,
            w.holder.cert.clone(),
            SignatureDomain::HeQuery,
            &q,
        )
        .unwrap();
        assert!(check_query(&w.checker, &doc).is_err());
    }

    #[test]
    fn a_single_contribution_passed_off_as_the_sum_is_detected() {
        let w = world(3);
        let docs: Vec<Certified> = w
            .provinces
            .iter()
            .take(3)
            .map(|p| contribution(&w, p, &plain(&w, 2)))
            .collect();
        let refs: Vec<&Certified> = docs.iter().collect();
        let (_, one) =
            check_contribution(&w.checker, &w.query, &w.query_doc.digest(), &docs[0]).unwrap();
        let cheat = aggregate_of(&w, &refs, &one);
        // The key holder cannot tell (sizes and signature are fine)...
        assert!(check_aggregate(&w.checker, &w.query, &w.query_doc.digest(), &cheat).is_ok());
        // ...but recomputation from the contributions can.
        let bundle = QueryBundle {
            query: w.query_doc.clone(),
            aggregate: cheat,
            contributions: docs,
        };
        let v = verify_bundle(&w.checker, &bundle).unwrap();
        assert_eq!(v["verdict"], "mismatch", "{v}");
    }
}
