//! The documents of a homomorphic aggregate and their checks, without IO:
//! the key holder's [`QueryBody`], contributors' [`ContributionBody`], the
//! aggregator's [`AggregateBody`] (each a [`Certified`] document, bytes in
//! `docs/he-aggregates.md`), and the recomputation anyone holding the
//! contributions can do ([`verify_bundle`]).

use crate::error::{NodeError, Result};
use crate::pki::CertChecker;
use crate::service::documents::Certified;
use pdx_crypto::he::committee::Committee;
use pdx_crypto::he::proof::{self, Crs, Proof};
use pdx_crypto::he::{self, HeList, HePublicKey, Layout};
use pdx_crypto::{Digest, SignatureDomain};
use pdx_schemas::schema::Generalization;
use pdx_schemas::types::units_to_decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Limbs of a value sum: 64-bit sums per contributor and category.
pub const VALUE_LIMBS: usize = 4;
/// Limbs of a record count: 32-bit counts per contributor and category.
pub const COUNT_LIMBS: usize = 2;
/// Bits of a value sum per contributor and category.
pub const VALUE_BITS: u32 = 64;
/// Bits of a record count per contributor and category.
pub const COUNT_BITS: u32 = 32;
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

    pub(crate) fn generalization(&self) -> Result<Option<Generalization>> {
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
    /// Version 2: the decryption committee that replaces the single key
    /// holder (who then coordinates key generation and combines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committee: Option<CommitteeTerms>,
}

/// Who decrypts a committee query, and how its public key was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeTerms {
    /// Members in index order (member `i` of [`he::committee::Committee`]).
    pub members: Vec<String>,
    /// Members whose partial decryptions suffice.
    pub threshold: u8,
    /// Seed of the common mask `a` of the public key.
    #[serde(with = "serde_bytes")]
    pub mask_seed: Vec<u8>,
    /// Digest of the coordinator's signed key proposal (absent in the draft
    /// the proposal carries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<Digest>,
    /// Digest of each member's signed key-share document, in member order
    /// (empty in the draft).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_shares: Vec<Digest>,
    /// Digest of the CRS every contribution must carry proofs against
    /// (absent: contributions carry none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crs: Option<Digest>,
}

impl CommitteeTerms {
    /// The sharing structure.
    pub fn committee(&self) -> Result<Committee> {
        Ok(Committee::new(
            self.members.len(),
            usize::from(self.threshold),
        )?)
    }

    /// The mask seed as the fixed-size array the key functions take.
    pub fn seed(&self) -> Result<[u8; he::committee::MASK_SEED_BYTES]> {
        self.mask_seed.as_slice().try_into().map_err(|_| {
            NodeError::Invalid(format!(
                "mask seed of {} bytes; it has {}",
                self.mask_seed.len(),
                he::committee::MASK_SEED_BYTES
            ))
        })
    }

    /// Index of `dept` among the members.
    pub fn index_of(&self, dept: &str) -> Option<usize> {
        self.members.iter().position(|m| m == dept)
    }

    /// Checks the terms of a draft (`key_shares` empty) or final query.
    pub(crate) fn validate(&self, key_holder: &str, draft: bool) -> Result<Committee> {
        let committee = self.committee()?;
        self.seed()?;
        let distinct: BTreeSet<_> = self.members.iter().collect();
        if distinct.len() != self.members.len() {
            return Err(NodeError::Invalid(
                "committee members must be distinct".into(),
            ));
        }
        if self.index_of(key_holder).is_none() {
            return Err(NodeError::Invalid(format!(
                "the coordinator {key_holder} must be a committee member"
            )));
        }
        let want = if draft { 0 } else { self.members.len() };
        if self.proposal.is_some() == draft {
            return Err(NodeError::Invalid(if draft {
                "a draft names no proposal".into()
            } else {
                "a committee query names its key proposal".into()
            }));
        }
        if self.key_shares.len() != want {
            return Err(NodeError::Invalid(format!(
                "{} key-share digests for {} members",
                self.key_shares.len(),
                want
            )));
        }
        Ok(committee)
    }
}

impl QueryBody {
    /// How slots sit in the ciphertexts: one key holder or a committee.
    pub fn layout(&self) -> Layout {
        if self.committee.is_some() {
            Layout::COMMITTEE
        } else {
            Layout::SINGLE
        }
    }

    /// Limbs of one value sum.
    pub fn value_limbs(&self) -> usize {
        self.layout().limbs_for(VALUE_BITS)
    }

    /// Limbs of one record count.
    pub fn count_limbs(&self) -> usize {
        self.layout().limbs_for(COUNT_BITS)
    }

    /// Slots per category: value limbs for each value, then the count limbs.
    pub fn slots_per_category(&self) -> usize {
        self.values.len() * self.value_limbs() + self.count_limbs()
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

    /// Checks internal consistency (not the signature) of a signed query.
    pub(crate) fn validate(&self) -> Result<()> {
        self.validate_as(false)
    }

    /// [`Self::validate`]; a `draft` (in a key proposal) has no public key yet.
    pub(crate) fn validate_as(&self, draft: bool) -> Result<()> {
        let bad = |m: String| Err(NodeError::Invalid(format!("query {}: {m}", self.query_id)));
        let version = if self.committee.is_some() { 2 } else { 1 };
        if self.version != version {
            return bad(format!(
                "version {} (this build reads 1, and 2 for committee queries)",
                self.version
            ));
        }
        check_query_id(&self.query_id)?;
        if self.scheme != self.layout().scheme_id() {
            return bad(format!(
                "scheme {:?}; this build uses {:?}",
                self.scheme,
                self.layout().scheme_id()
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
        if let Some(terms) = &self.committee {
            let committee = terms
                .validate(&self.key_holder, draft)
                .map_err(|e| NodeError::Invalid(format!("query {}: {e}", self.query_id)))?;
            // The noise of the largest admissible sum must fit (refused otherwise).
            he::committee::budget(self.contributors.len(), &committee, self.slots())
                .map_err(|e| NodeError::Invalid(format!("query {}: {e}", self.query_id)))?;
        }
        if draft {
            if !self.public_key.is_empty() {
                return bad("a draft query carries no public key".into());
            }
        } else {
            self.public_key()?;
        }
        Ok(())
    }

    /// The committee terms (refuses a single-key query).
    pub fn terms(&self) -> Result<&CommitteeTerms> {
        self.committee.as_ref().ok_or_else(|| {
            NodeError::Refused(format!(
                "query {} has one key holder ({}), not a decryption committee",
                self.query_id, self.key_holder
            ))
        })
    }

    pub(crate) fn category_index(&self) -> HashMap<&str, usize> {
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
    /// One proof per compact list of `ciphertext`, in order (tfhe's
    /// serialization), when the query names a CRS; absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proofs: Vec<serde_bytes::ByteBuf>,
}

/// What a contribution's proofs bind (before tfhe appends the list's index
/// and count): the query, the contributor and the deadline, so a proof is
/// good for one contribution only.
pub fn proof_metadata(query_digest: &Digest, contributor: &str, deadline_ms: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(PROOF_CONTEXT.len() + 32 + 2 + contributor.len() + 8);
    m.extend_from_slice(PROOF_CONTEXT);
    m.extend_from_slice(query_digest.as_bytes());
    m.extend_from_slice(&(contributor.len() as u16).to_be_bytes());
    m.extend_from_slice(contributor.as_bytes());
    m.extend_from_slice(&deadline_ms.to_be_bytes());
    m
}

/// The first bytes of [`proof_metadata`].
pub const PROOF_CONTEXT: &[u8] = b"pdx he contribution proof v1\0";

/// How [`check_contribution`] treats the proofs of a query that names a CRS.
#[derive(Clone, Copy, Debug)]
pub enum Proofs<'a> {
    /// Verify them against this CRS (its digest is the query's).
    Verify(&'a Crs),
    /// Verified when the contribution was accepted and stored here; only
    /// their presence and count are checked.
    AcceptedHere,
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

pub(crate) fn check_query_id(id: &str) -> Result<()> {
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
pub(crate) fn accumulate(sum: Option<HeList>, list: &HeList) -> Result<HeList> {
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
    proofs: Proofs<'_>,
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
    let wanted = query.committee.as_ref().and_then(|t| t.crs);
    match (wanted, proofs) {
        (None, _) if c.proofs.is_empty() => {}
        (None, _) => {
            return Err(refuse(
                "carries proofs the query does not ask for (it names no CRS)".into(),
            ));
        }
        (Some(_), _) if c.proofs.len() != list.list_count() => {
            return Err(refuse(format!(
                "carries {} proofs; the query names a CRS, and each of the {} compact lists needs one",
                c.proofs.len(),
                list.list_count()
            )));
        }
        (Some(_), Proofs::AcceptedHere) => {}
        (Some(_), Proofs::Verify(crs)) => {
            let decoded = c
                .proofs
                .iter()
                .map(|p| Proof::from_bytes(p))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| refuse(format!("{e}")))?;
            proof::verify(
                &list,
                &query.public_key()?,
                crs,
                &decoded,
                &proof_metadata(query_digest, &c.contributor, query.deadline_ms),
            )
            .map_err(|e| refuse(format!("{e}")))?;
        }
    }
    Ok((c, list))
}

fn ciphertext(bytes: &[u8], slots: u64, query: &QueryBody) -> Result<HeList> {
    if slots != query.slots() as u64 {
        return Err(NodeError::Invalid(format!(
            "{slots} slots, the query's layout has {}",
            query.slots()
        )));
    }
    let layout = query.layout();
    if bytes.len() != layout.list_bytes(query.slots()) {
        return Err(NodeError::Invalid(format!(
            "{} bytes, a list of {} slots under {} has {}",
            bytes.len(),
            query.slots(),
            layout.scheme_id(),
            layout.list_bytes(query.slots())
        )));
    }
    Ok(HeList::from_words_in(
        layout,
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

pub(crate) fn category_name(query: &QueryBody, c: usize) -> &str {
    query.categories.get(c).map(String::as_str).unwrap_or(OTHER)
}

/// The limbs of plaintext sums in slot order.
pub fn limbs(query: &QueryBody, plain: &PlainSums) -> Vec<u64> {
    let mut out = Vec::with_capacity(query.slots());
    let layout = query.layout();
    for (s, &n) in plain.sums.iter().zip(&plain.counts) {
        for &v in s {
            out.extend(layout.split(v, query.value_limbs()));
        }
        out.extend(layout.split(n, query.count_limbs()));
    }
    out
}

/// Decrypted totals of one category.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

pub(crate) fn totals(query: &QueryBody, slots: &[u64]) -> Vec<CategoryTotal> {
    let per = query.slots_per_category();
    let (layout, vl) = (query.layout(), query.value_limbs());
    let mut out = Vec::new();
    for (c, s) in slots.chunks(per).enumerate() {
        let count = layout.combine(&s[query.values.len() * vl..]);
        if count == 0 {
            continue;
        }
        let (mut sums, mut means) = (Vec::new(), Vec::new());
        for (v, &scale) in query.scales.iter().enumerate() {
            let total = layout.combine(&s[v * vl..(v + 1) * vl]);
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

/// Recomputes the aggregate from the contributions and compares.
pub fn verify_bundle(
    checker: &CertChecker,
    bundle: &QueryBundle,
    crs: Option<&Crs>,
) -> Result<SumCheck> {
    let query = check_query(checker, &bundle.query)?;
    let qd = bundle.query.digest();
    let proofs = match (query.committee.as_ref().and_then(|t| t.crs), crs) {
        (None, _) => Proofs::AcceptedHere,
        (Some(_), Some(c)) => Proofs::Verify(c),
        (Some(d), None) => {
            return Err(NodeError::Refused(format!(
                "query {}'s contributions carry proofs against the CRS {}; pass that CRS file (--crs) to check them",
                query.query_id,
                d.to_hex()
            )));
        }
    };
    let (agg, list) = check_aggregate(checker, &query, &qd, &bundle.aggregate)?;
    let mut problems = Vec::new();
    let mut by_digest = HashMap::new();
    for doc in &bundle.contributions {
        match check_contribution(checker, &query, &qd, doc, proofs) {
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
    Ok(SumCheck {
        query: query.query_id,
        aggregator: agg.aggregator,
        contributors: agg.contributions.into_iter().map(|c| c.dept).collect(),
        aggregate_digest: bundle.aggregate.digest().to_hex(),
        verdict: if problems.is_empty() {
            SumVerdict::Ok
        } else {
            SumVerdict::Mismatch
        },
        problems,
    })
}

/// `pdx he verify-sum`: whether the aggregate is the sum of the contributions
/// it lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SumCheck {
    /// Query id.
    pub query: String,
    /// Aggregator.
    pub aggregator: String,
    /// Contributors the aggregate lists.
    pub contributors: Vec<String>,
    /// Digest of the signed aggregate.
    pub aggregate_digest: String,
    /// The verdict.
    pub verdict: SumVerdict,
    /// What does not match.
    pub problems: Vec<String>,
}

/// Verdict of [`SumCheck`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SumVerdict {
    /// The aggregate is the sum of its valid contributions.
    Ok,
    /// It is not (exit 2).
    Mismatch,
}
