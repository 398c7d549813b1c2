//! Committee queries (`docs/he-aggregates.md`, "Committee queries"): the
//! public key made by the members together, so that no member ever holds the
//! whole secret, and the one decryption as partial decryptions that the
//! coordinator combines once at least `threshold` members sent theirs.
//!
//! Key generation takes three steps, each a command on one node:
//! 1. the coordinator (`pdx he keygen --committee … --threshold T`) signs a
//!    [`KeyProposalBody`]: the draft query and a commitment to its own
//!    public-key contributions, made before it sees anyone else's;
//! 2. every other member (`pdx he key-share`) deals its sub-shares and sends
//!    the coordinator a [`KeyShareBody`]: their public-key contributions and
//!    each sub-share sealed for its other holders;
//! 3. the coordinator (`pdx he key-finish`) checks the commitment, adds the
//!    contributions into the public key, signs the query and sends every
//!    member the transcript, which each member re-checks before it opens the
//!    sub-shares sealed for it.

use super::*;
use crate::service::documents::{
    KIND_HE_KEY_PROPOSAL, KIND_HE_KEY_SHARE, KIND_HE_KEY_TRANSCRIPT, KIND_HE_PARTIAL,
};
use pdx_crypto::Digest;
use pdx_crypto::envelope::{Opener, Recipient, ReleaseContext, Sealer, WrappedKey};
use pdx_crypto::he::committee::{self, Committee};

/// The coordinator's signed proposal of a committee query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProposalBody {
    /// Format version (1).
    pub version: u8,
    /// The query as it will be signed, without public key and key shares.
    pub draft: QueryBody,
    /// Digest of the CBOR list of the coordinator's [`ShareBody`]s.
    pub commitment: Digest,
}

/// One sub-share's public-key contribution `b_A`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareBody {
    /// Sub-share index.
    pub share: u8,
    /// `n` little-endian words.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// A dealt sub-share sealed for one of its other holders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShare {
    /// Sub-share index.
    pub share: u8,
    /// Holder it is sealed for.
    pub to: String,
    /// The data key, wrapped for the holder's encryption key.
    pub key: WrappedKey,
    /// The sub-share's key bytes, sealed (field envelope, `docs/crypto.md`).
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

/// A member's contribution to the committee's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyShareBody {
    /// Format version (1).
    pub version: u8,
    /// Query id.
    pub query_id: String,
    /// Digest of the signed proposal.
    pub proposal: Digest,
    /// The member (must match the signing certificate).
    pub member: String,
    /// Public-key contributions of the sub-shares it deals, by index.
    pub bodies: Vec<ShareBody>,
    /// Each dealt sub-share sealed for each of its other holders.
    pub sealed: Vec<SealedShare>,
    /// When made (ms).
    pub created_ms: u64,
}

/// What the coordinator sends each member once the key is made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyTranscript {
    /// The signed query.
    pub query: Certified,
    /// The signed proposal.
    pub proposal: Certified,
    /// Every member's signed key share, in member order.
    pub shares: Vec<Certified>,
}

/// One sub-share's partial decryption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialShare {
    /// Sub-share index.
    pub share: u8,
    /// One little-endian word per slot.
    #[serde(with = "serde_bytes")]
    pub words: Vec<u8>,
}

/// A member's signed partial decryption of the aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialBody {
    /// Format version (1).
    pub version: u8,
    /// Query id.
    pub query_id: String,
    /// Digest of the signed query.
    pub query_digest: Digest,
    /// Digest of the signed aggregate decrypted.
    pub aggregate_digest: Digest,
    /// The member (must match the signing certificate).
    pub member: String,
    /// One partial per sub-share the member holds, by index.
    pub shares: Vec<PartialShare>,
    /// When made (ms).
    pub created_ms: u64,
}

/// What `pdx he key-share` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyShared {
    /// Query id.
    pub query: String,
    /// Sub-shares this member dealt.
    pub dealt: Vec<u8>,
    /// Holders its sealed sub-shares are for.
    pub sealed_for: Vec<String>,
    /// Digest of the signed key share.
    pub digest: String,
    /// The coordinator.
    pub to: String,
    /// Where it went.
    #[serde(flatten)]
    pub dispatch: Dispatch,
}

/// What `pdx he key-finish` made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFinished {
    /// Query id.
    pub query: String,
    /// Where the signed query was written.
    pub out: String,
    /// Its digest.
    pub digest: String,
    /// Committee members.
    pub committee: Vec<String>,
    /// Threshold.
    pub threshold: u8,
    /// Members the transcript was delivered to.
    pub sent: Vec<String>,
}

/// What `pdx he partial` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartialMade {
    /// Query id.
    pub query: String,
    /// Digest of the aggregate decrypted.
    pub aggregate_digest: String,
    /// Sub-shares used.
    pub shares: Vec<u8>,
    /// Digest of the signed partial decryption.
    pub digest: String,
    /// The coordinator (combiner).
    pub to: String,
    /// Where it went (nothing: this node combines).
    #[serde(flatten)]
    pub dispatch: Dispatch,
}

fn share_name(query_id: &str, share: usize) -> String {
    format!("he-{query_id}-share{share}")
}

/// The sealing context of a query's sub-shares.
fn share_context(query_id: &str, proposal: &Digest) -> Result<ReleaseContext> {
    Ok(ReleaseContext {
        dataset_id: format!("he-key:{query_id}"),
        release_id: proposal.0[..16]
            .try_into()
            .map_err(|_| NodeError::Invalid("proposal digest too short".into()))?,
    })
}

fn words_of(bytes: &[u8], want: usize, what: &str) -> Result<Vec<u64>> {
    let words = he::bytes_to_words(bytes)?;
    if words.len() != want {
        return Err(NodeError::Invalid(format!(
            "{what}: {} words, {want} expected",
            words.len()
        )));
    }
    Ok(words)
}

fn share_index(share: usize) -> Result<u8> {
    u8::try_from(share).map_err(|_| NodeError::Invalid("sub-share index above 255".into()))
}

/// Draws the sub-shares `member` deals, saves them as key files and returns
/// their public-key contributions.
fn deal(node: &Node, query: &QueryBody, member: usize) -> Result<Vec<ShareBody>> {
    let terms = query.terms()?;
    let committee = terms.committee()?;
    let seed = terms.seed()?;
    let mut bodies = Vec::new();
    for share in dealt_by(&committee, member) {
        let (secret, body) = committee::share_keygen(&seed);
        node.save_secret(
            &share_name(&query.query_id, share),
            KeyKind::HeLweSecret,
            &secret.to_bytes(),
        )?;
        bodies.push(ShareBody {
            share: share_index(share)?,
            body: he::words_to_bytes(&body),
        });
    }
    Ok(bodies)
}

fn dealt_by(committee: &Committee, member: usize) -> impl Iterator<Item = usize> + '_ {
    (0..committee.shares()).filter(move |&s| committee.dealer(s) == Some(member))
}

/// Seals the saved sub-shares `member` dealt for their other holders; the
/// envelopes are bound to the query and the proposal.
fn seal_dealt(
    node: &Node,
    query: &QueryBody,
    proposal: &Digest,
    member: usize,
) -> Result<Vec<SealedShare>> {
    let terms = query.terms()?;
    let committee = terms.committee()?;
    let ctx = share_context(&query.query_id, proposal)?;
    let mut sealed = Vec::new();
    for share in dealt_by(&committee, member) {
        let bytes = node.load_secret(&share_name(&query.query_id, share), KeyKind::HeLweSecret)?;
        for &holder in committee.holders(share).iter().filter(|&&h| h != member) {
            let dept = &terms.members[holder];
            let key = crate::service::directory::recipient_key(node, dept)?.ok_or_else(|| {
                NodeError::NotFound(format!(
                    "no encryption key of committee member {dept} is held here to seal sub-share {share} for (run `pdx keys fetch --peer {dept}`)"
                ))
            })?;
            let (sealer, mut wrapped) = Sealer::new(
                node.suite,
                &ctx,
                &[Recipient {
                    dept: dept.clone(),
                    public: key.public,
                }],
            )?;
            let mut out = Vec::new();
            sealer.seal_field(0, share as u64, 0, SUB_SHARE_FIELD, &bytes, &mut out)?;
            sealed.push(SealedShare {
                share: share_index(share)?,
                to: dept.clone(),
                key: wrapped
                    .pop()
                    .ok_or_else(|| NodeError::Invalid("no wrapped key".into()))?,
                sealed: out,
            });
        }
    }
    Ok(sealed)
}

/// Field name of a sealed sub-share in its envelope.
const SUB_SHARE_FIELD: &str = "sub-share";

/// `pdx he keygen --committee`: the coordinator's part of step 1. Returns the
/// proposal for each other member.
pub(crate) fn propose(
    node: &Node,
    draft: QueryBody,
    operator: &str,
) -> Result<(Vec<Pending>, QueryCreated)> {
    draft.validate_as(true)?;
    let terms = draft.terms()?;
    let me = terms
        .index_of(&node.config.dept)
        .ok_or_else(|| NodeError::Invalid("the coordinator must be a member".into()))?;
    // Dealt before the proposal is signed: the commitment fixes the
    // coordinator's contributions before any other member's exists.
    let bodies = deal(node, &draft, me)?;
    let commitment = node.suite.digest(&to_cbor(&bodies)?);
    let proposal = KeyProposalBody {
        version: 1,
        draft: draft.clone(),
        commitment,
    };
    let doc = Certified::sign(node, SignatureDomain::HeKeyProposal, &proposal)?;
    let digest = doc.digest();
    let sealed = seal_dealt(node, &draft, &digest, me)?;
    let share = KeyShareBody {
        version: 1,
        query_id: draft.query_id.clone(),
        proposal: digest,
        member: node.config.dept.clone(),
        bodies,
        sealed,
        created_ms: now_ms(),
    };
    let share_doc = Certified::sign(node, SignatureDomain::HeKeyShare, &share)?;
    let mut pendings = Vec::new();
    for m in terms.members.iter().filter(|m| **m != node.config.dept) {
        pendings.push(Pending::new(
            KIND_HE_KEY_PROPOSAL,
            &format!("{}/{m}", draft.query_id),
            m,
            digest,
            SubmissionFile {
                kind: KIND_HE_KEY_PROPOSAL.into(),
                document: doc.to_bytes()?,
            },
        ));
    }
    let mut ops = vec![
        node.store.put_op(
            CF_HE,
            &store::he_key(HeRecord::Proposal, &draft.query_id, None),
            &doc,
        )?,
        node.store.put_op(
            CF_HE,
            &store::he_key(HeRecord::KeyShare, &draft.query_id, Some(&node.config.dept)),
            &share_doc,
        )?,
    ];
    for p in &pendings {
        ops.push(p.hold_op(node)?);
    }
    let mut d = node.draft(EventKind::KeyRotate, operator);
    d.payload_digest = Some(digest);
    d.detail = Some(format!(
        "proposed committee query {}: {}-of-{} committee {} (coordinator {}); dealt sub-shares [{}]; k = {}, {} categories, aggregator {}, contributors {}",
        draft.query_id,
        terms.threshold,
        terms.members.len(),
        terms.members.join(","),
        node.config.dept,
        share
            .bodies
            .iter()
            .map(|b| b.share.to_string())
            .collect::<Vec<_>>()
            .join(","),
        draft.k,
        draft.categories.len(),
        draft.aggregator,
        draft.contributors.join(",")
    ));
    node.log_with(d, ops)?;
    let created = proposed(node, &draft, &digest)?;
    Ok((pendings, created))
}

/// What `pdx he keygen --committee` reports for a proposal.
fn proposed(node: &Node, draft: &QueryBody, digest: &Digest) -> Result<QueryCreated> {
    let terms = draft.terms()?;
    let me = terms.index_of(&node.config.dept);
    let dealt = me.and_then(|m| dealt_by(&terms.committee().ok()?, m).next());
    Ok(QueryCreated {
        query: draft.query_id.clone(),
        out: String::new(),
        digest: digest.to_hex(),
        categories: draft.categories.len(),
        slots: draft.slots(),
        k: draft.k,
        secret_key: dealt
            .map(|s| {
                node.home
                    .key(&share_name(&draft.query_id, s))
                    .display()
                    .to_string()
            })
            .unwrap_or_default(),
        contributors: draft.contributors.clone(),
        aggregator: draft.aggregator.clone(),
        committee: terms.members.clone(),
        threshold: Some(terms.threshold),
        waiting_for: terms
            .members
            .iter()
            .filter(|m| **m != node.config.dept)
            .cloned()
            .collect(),
    })
}

/// Documents of `kind` about `query_id` signed here and not yet acknowledged
/// (subject `query_id`, or `query_id/member` for each member).
pub(crate) fn undelivered(node: &Node, kind: &str, query_id: &str) -> Result<Vec<Pending>> {
    let per_member = format!("{query_id}/");
    Ok(outbox::pending(node, Some(kind))?
        .into_iter()
        .filter(|p| p.subject == query_id || p.subject.starts_with(&per_member))
        .collect())
}

/// `pdx he keygen --committee` again after a failed send: the proposals
/// not yet acknowledged, as signed (a new proposal would orphan the shares
/// dealt for the first).
pub(crate) fn resend_proposals(
    node: &Node,
    query_id: &str,
) -> Result<Option<(Vec<Pending>, QueryCreated)>> {
    if stored(node, HeRecord::Query, query_id, None)?.is_some() {
        return Ok(None);
    }
    let pendings = undelivered(node, KIND_HE_KEY_PROPOSAL, query_id)?;
    if pendings.is_empty() {
        return Ok(None);
    }
    let (doc, p) = stored_proposal(node, query_id)?;
    Ok(Some((pendings, proposed(node, &p.draft, &doc.digest())?)))
}

/// Verifies a proposal: signer = coordinator, draft consistent.
fn check_proposal(checker: &CertChecker, doc: &Certified) -> Result<KeyProposalBody> {
    let (p, signer): (KeyProposalBody, _) = doc.verify(checker, SignatureDomain::HeKeyProposal)?;
    if p.version != 1 {
        return Err(NodeError::Refused(format!(
            "key proposal version {} (this build reads 1)",
            p.version
        )));
    }
    if signer.dept != p.draft.key_holder {
        return Err(NodeError::Refused(format!(
            "key proposal of query {} names coordinator {} but is signed by {}",
            p.draft.query_id, p.draft.key_holder, signer.dept
        )));
    }
    p.draft.validate_as(true)?;
    Ok(p)
}

/// Stores a proposal addressed to this member (the `he-key-proposal` handler).
pub fn accept_key_proposal(node: &Node, peer: &str, document: &[u8]) -> Result<Accepted> {
    let doc = Certified::from_bytes(document, "he key proposal")?;
    let p = check_proposal(&node.cert_checker()?, &doc)?;
    let q = &p.draft;
    let me = &node.config.dept;
    if q.terms()?.index_of(me).is_none() || q.key_holder == *me {
        return Err(NodeError::Refused(format!(
            "query {} does not name {me} as a committee member to ask",
            q.query_id
        )));
    }
    let digest = doc.digest();
    let key = store::he_key(HeRecord::Proposal, &q.query_id, None);
    if let Some(again) = kept_once(node, &key, digest, || {
        format!(
            "another key proposal for query {} is held here; a query id is used once",
            q.query_id
        )
    })? {
        return Ok(again);
    }
    let mut d = node.draft(EventKind::KeyRotate, NODE_OPERATOR);
    d.counterparty = Some(q.key_holder.clone());
    d.payload_digest = Some(digest);
    d.detail = Some(format!(
        "received the key proposal of committee query {} from {} (via {peer}); `pdx he key-share --query {}` deals this member's sub-shares",
        q.query_id, q.key_holder, q.query_id
    ));
    node.log_with(d, vec![node.store.put_op(CF_HE, &key, &doc)?])?;
    Ok(Accepted {
        digest,
        note: format!("key proposal of query {} accepted", q.query_id),
    })
}

fn stored_proposal(node: &Node, query_id: &str) -> Result<(Certified, KeyProposalBody)> {
    let doc = stored(node, HeRecord::Proposal, query_id, None)?.ok_or_else(|| {
        NodeError::NotFound(format!(
            "no key proposal of query {query_id:?} on this node (the coordinator's `pdx he keygen --committee` sends it)"
        ))
    })?;
    let p = check_proposal(&node.cert_checker()?, &doc)?;
    Ok((doc, p))
}

/// `pdx he key-share`: a member deals its sub-shares (step 2).
pub fn key_share(node: &Node, query_id: &str, operator: &str) -> Result<(Pending, KeyShared)> {
    let (doc, p) = stored_proposal(node, query_id)?;
    let q = &p.draft;
    let terms = q.terms()?;
    let me = &node.config.dept;
    let index = terms.index_of(me).ok_or_else(|| {
        NodeError::Refused(format!(
            "{me} is not a member of query {query_id}'s committee"
        ))
    })?;
    let digest = doc.digest();
    let shared = |share: &Certified, body: &KeyShareBody, dispatch| KeyShared {
        query: query_id.to_string(),
        dealt: body.bodies.iter().map(|b| b.share).collect(),
        sealed_for: body
            .sealed
            .iter()
            .map(|s| s.to.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        digest: share.digest().to_hex(),
        to: q.key_holder.clone(),
        dispatch,
    };
    let mine = store::he_key(HeRecord::KeyShare, query_id, Some(me));
    if let Some(prev) = node.store.get::<Certified>(CF_HE, &mine)? {
        // Dealt once: a second dealing would orphan the first sub-shares.
        let (body, _): (KeyShareBody, _) =
            prev.verify(&node.cert_checker()?, SignatureDomain::HeKeyShare)?;
        if let Some(pending) = outbox::pending_for(node, KIND_HE_KEY_SHARE, query_id)? {
            let info = shared(
                &prev,
                &body,
                Dispatch {
                    resent: true,
                    ..Dispatch::default()
                },
            );
            return Ok((pending, info));
        }
        return Err(NodeError::Refused(format!(
            "this node dealt its sub-shares of query {query_id} before (key share {}); they are dealt once",
            prev.digest().to_hex()
        )));
    }
    let bodies = deal(node, q, index)?;
    let sealed = seal_dealt(node, q, &digest, index)?;
    let body = KeyShareBody {
        version: 1,
        query_id: query_id.to_string(),
        proposal: digest,
        member: me.clone(),
        bodies,
        sealed,
        created_ms: now_ms(),
    };
    let share = Certified::sign(node, SignatureDomain::HeKeyShare, &body)?;
    let pending = Pending::new(
        KIND_HE_KEY_SHARE,
        query_id,
        &q.key_holder,
        share.digest(),
        SubmissionFile {
            kind: KIND_HE_KEY_SHARE.into(),
            document: share.to_bytes()?,
        },
    );
    let info = shared(&share, &body, Dispatch::default());
    let mut d = node.draft(EventKind::KeyRotate, operator);
    d.counterparty = Some(q.key_holder.clone());
    d.payload_digest = Some(share.digest());
    d.detail = Some(format!(
        "dealt sub-shares [{}] of committee query {query_id}, sealed for {}",
        info.dealt
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(","),
        info.sealed_for.join(",")
    ));
    node.log_with(
        d,
        vec![
            node.store.put_op(CF_HE, &mine, &share)?,
            pending.hold_op(node)?,
        ],
    )?;
    Ok((pending, info))
}

/// A committee document a member signs about itself.
trait MemberSigned: serde::de::DeserializeOwned {
    /// What it is, in messages.
    const WHAT: &'static str;
    /// Its signature domain.
    const DOMAIN: SignatureDomain;
    fn version(&self) -> u8;
    fn member(&self) -> &str;
}

impl MemberSigned for KeyShareBody {
    const WHAT: &'static str = "key share";
    const DOMAIN: SignatureDomain = SignatureDomain::HeKeyShare;
    fn version(&self) -> u8 {
        self.version
    }
    fn member(&self) -> &str {
        &self.member
    }
}

impl MemberSigned for PartialBody {
    const WHAT: &'static str = "partial decryption";
    const DOMAIN: SignatureDomain = SignatureDomain::HePartial;
    fn version(&self) -> u8 {
        self.version
    }
    fn member(&self) -> &str {
        &self.member
    }
}

/// Verifies certificate and signature, version 1 and member = signer;
/// returns the body and the context refusals name.
fn verify_member<T: MemberSigned>(
    checker: &CertChecker,
    doc: &Certified,
    query_id: &str,
) -> Result<(T, String)> {
    let (body, signer): (T, _) = doc.verify(checker, T::DOMAIN)?;
    let context = format!("{} of {} for query {query_id}", T::WHAT, signer.dept);
    if body.version() != 1 {
        return Err(refused(
            &context,
            format!("version {} (this build reads 1)", body.version()),
        ));
    }
    if body.member() != signer.dept {
        return Err(refused(&context, format!("names member {}", body.member())));
    }
    Ok((body, context))
}

fn refused(context: &str, why: String) -> NodeError {
    NodeError::Refused(format!("{context}: {why}"))
}

/// Verifies a member's key share against the proposal: signer = member,
/// exactly the sub-shares it deals, each sealed for each other holder.
pub(super) fn check_key_share(
    checker: &CertChecker,
    draft: &QueryBody,
    proposal: &Digest,
    doc: &Certified,
) -> Result<(KeyShareBody, usize)> {
    let (k, context): (KeyShareBody, _) = verify_member(checker, doc, &draft.query_id)?;
    let refuse = |m: String| refused(&context, m);
    if k.query_id != draft.query_id || k.proposal != *proposal {
        return Err(refuse("is for another proposal".into()));
    }
    let terms = draft.terms()?;
    let member = terms
        .index_of(&k.member)
        .ok_or_else(|| refuse("the department is not a committee member".into()))?;
    let committee = terms.committee()?;
    let dealt: Vec<usize> = dealt_by(&committee, member).collect();
    let got: Vec<usize> = k.bodies.iter().map(|b| usize::from(b.share)).collect();
    if got != dealt {
        return Err(refuse(format!(
            "carries public-key contributions for sub-shares {got:?}; the member deals {dealt:?}"
        )));
    }
    let words = he::committee::key_body_words();
    for b in &k.bodies {
        words_of(&b.body, words, &format!("sub-share {} body", b.share))
            .map_err(|e| refuse(e.to_string()))?;
    }
    let mut want: Vec<(usize, &str)> = Vec::new();
    for &s in &dealt {
        for &h in committee.holders(s).iter().filter(|&&h| h != member) {
            want.push((s, terms.members[h].as_str()));
        }
    }
    let have: Vec<(usize, &str)> = k
        .sealed
        .iter()
        .map(|s| (usize::from(s.share), s.to.as_str()))
        .collect();
    if have != want {
        return Err(refuse(format!(
            "seals sub-shares for {have:?}; each dealt sub-share must be sealed once for each other holder, {want:?}"
        )));
    }
    Ok((k, member))
}

/// Stores a member's key share (the coordinator's `he-key-share` handler).
pub fn accept_key_share(node: &Node, peer: &str, document: &[u8]) -> Result<Accepted> {
    let doc = Certified::from_bytes(document, "he key share")?;
    let checker = node.cert_checker()?;
    // Read unverified only to find the proposal; check_key_share verifies.
    let k0: KeyShareBody = doc.signed.dangerous_decode_unverified("he key share")?;
    let (pdoc, p) = stored_proposal(node, &k0.query_id)?;
    if p.draft.key_holder != node.config.dept {
        return Err(NodeError::Refused(format!(
            "query {} is coordinated by {}, not this node",
            k0.query_id, p.draft.key_holder
        )));
    }
    let (k, _) = check_key_share(&checker, &p.draft, &pdoc.digest(), &doc)?;
    let digest = doc.digest();
    let key = store::he_key(HeRecord::KeyShare, &k.query_id, Some(&k.member));
    if let Some(again) = kept_once(node, &key, digest, || {
        format!(
            "{} already sent its key share for query {}; sub-shares are dealt once",
            k.member, k.query_id
        )
    })? {
        return Ok(again);
    }
    if stored(node, HeRecord::Query, &k.query_id, None)?.is_some() {
        return Err(NodeError::Refused(format!(
            "the key of query {} is already made",
            k.query_id
        )));
    }
    let mut d = node.draft(EventKind::KeyRotate, NODE_OPERATOR);
    d.counterparty = Some(k.member.clone());
    d.payload_digest = Some(digest);
    d.detail = Some(format!(
        "received the key share of {} for committee query {} (via {peer}): sub-shares [{}]",
        k.member,
        k.query_id,
        k.bodies
            .iter()
            .map(|b| b.share.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));
    node.log_with(d, vec![node.store.put_op(CF_HE, &key, &doc)?])?;
    Ok(Accepted {
        digest,
        note: format!(
            "key share of {} for query {} accepted",
            k.member, k.query_id
        ),
    })
}

/// Checks a full set of key shares against the proposal and returns the
/// committee's public key.
pub(super) fn transcript_key(
    suite: pdx_crypto::Suite,
    checker: &CertChecker,
    pdoc: &Certified,
    p: &KeyProposalBody,
    shares: &[Certified],
) -> Result<(HePublicKey, Vec<KeyShareBody>)> {
    let terms = p.draft.terms()?;
    let committee = terms.committee()?;
    let pd = pdoc.digest();
    if shares.len() != terms.members.len() {
        return Err(NodeError::Refused(format!(
            "{} key shares for a committee of {}",
            shares.len(),
            terms.members.len()
        )));
    }
    let mut bodies: Vec<Option<Vec<u64>>> = vec![None; committee.shares()];
    let mut out = Vec::new();
    for (i, doc) in shares.iter().enumerate() {
        let (k, member) = check_key_share(checker, &p.draft, &pd, doc)?;
        if member != i {
            return Err(NodeError::Refused(format!(
                "key share {i} is {}'s; shares go in member order",
                k.member
            )));
        }
        if k.member == p.draft.key_holder && p.commitment != suite.digest(&to_cbor(&k.bodies)?) {
            return Err(NodeError::Refused(format!(
                "the coordinator's public-key contributions to query {} differ from those it committed to in the proposal",
                p.draft.query_id
            )));
        }
        for b in &k.bodies {
            bodies[usize::from(b.share)] = Some(words_of(
                &b.body,
                he::committee::key_body_words(),
                "sub-share body",
            )?);
        }
        out.push(k);
    }
    let bodies: Vec<Vec<u64>> = bodies
        .into_iter()
        .enumerate()
        .map(|(s, b)| b.ok_or_else(|| NodeError::Refused(format!("no member dealt sub-share {s}"))))
        .collect::<Result<_>>()?;
    let refs: Vec<&[u64]> = bodies.iter().map(Vec::as_slice).collect();
    let pk = committee::combine_public_key(&committee, &terms.seed()?, &refs)?;
    Ok((pk, out))
}

/// Opens the sub-shares sealed for this node in `shares` and saves them as
/// key files; returns every sub-share index it now holds.
fn receive_shares(
    node: &Node,
    query: &QueryBody,
    proposal: &Digest,
    shares: &[KeyShareBody],
) -> Result<Vec<usize>> {
    let terms = query.terms()?;
    let committee = terms.committee()?;
    let me = &node.config.dept;
    let index = terms
        .index_of(me)
        .ok_or_else(|| NodeError::Refused(format!("{me} is not a committee member")))?;
    let ctx = share_context(&query.query_id, proposal)?;
    for s in shares
        .iter()
        .flat_map(|k| &k.sealed)
        .filter(|s| s.to == *me)
    {
        let share = usize::from(s.share);
        let opener = {
            let keys = node.keys()?;
            Opener::new(node.suite, &ctx, std::slice::from_ref(&s.key), me, |kid| {
                keys.encryption_key(kid)
            })?
        };
        let bytes = zeroize::Zeroizing::new(opener.open_field(
            0,
            share as u64,
            0,
            SUB_SHARE_FIELD,
            &s.sealed,
        )?);
        // Parsed before it is kept: a malformed sub-share is refused now.
        he::HeSecretKey::from_bytes(&bytes)?;
        node.save_secret(
            &share_name(&query.query_id, share),
            KeyKind::HeLweSecret,
            &bytes,
        )?;
    }
    let held = committee.held_by(index);
    for &share in &held {
        if !node.home.key(&share_name(&query.query_id, share)).exists() {
            return Err(NodeError::Refused(format!(
                "sub-share {share} of query {} was neither dealt by nor sealed for {me}",
                query.query_id
            )));
        }
    }
    Ok(held)
}

/// `pdx he key-finish`: the coordinator makes the key and signs the query
/// (step 3). Returns the transcript for each other member.
pub fn key_finish(
    node: &Node,
    query_id: &str,
    out: &str,
    operator: &str,
) -> Result<(Vec<Pending>, KeyFinished)> {
    let (pdoc, p) = stored_proposal(node, query_id)?;
    let terms = p.draft.terms()?.clone();
    if p.draft.key_holder != node.config.dept {
        return Err(NodeError::Refused(format!(
            "query {query_id} is coordinated by {}, not this node",
            p.draft.key_holder
        )));
    }
    if let Some(doc) = stored(node, HeRecord::Query, query_id, None)? {
        // Again after a failed send: the transcripts not yet acknowledged.
        let pendings = undelivered(node, KIND_HE_KEY_TRANSCRIPT, query_id)?;
        if pendings.is_empty() {
            return Err(NodeError::Refused(format!(
                "the key of query {query_id} is already made and every member has its transcript (`pdx he list`)"
            )));
        }
        crate::config::write_atomic(std::path::Path::new(out), &doc.to_bytes()?, 0o644)?;
        return Ok((
            pendings,
            KeyFinished {
                query: query_id.to_string(),
                out: out.to_string(),
                digest: doc.digest().to_hex(),
                committee: terms.members.clone(),
                threshold: terms.threshold,
                sent: Vec::new(),
            },
        ));
    }
    let mut shares = Vec::new();
    let mut missing = Vec::new();
    for m in &terms.members {
        match stored(node, HeRecord::KeyShare, query_id, Some(m))? {
            Some(doc) => shares.push(doc),
            None => missing.push(m.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(NodeError::Refused(format!(
            "query {query_id}: no key share yet from {} (each runs `pdx he key-share --query {query_id}`)",
            missing.join(", ")
        )));
    }
    let (pk, bodies) = transcript_key(node.suite, &node.cert_checker()?, &pdoc, &p, &shares)?;
    let mut query = p.draft.clone();
    query.public_key = he::words_to_bytes(&pk.to_words());
    if let Some(t) = query.committee.as_mut() {
        t.proposal = Some(pdoc.digest());
        t.key_shares = shares.iter().map(Certified::digest).collect();
    }
    query.created_ms = now_ms();
    query.validate()?;
    receive_shares(node, &query, &pdoc.digest(), &bodies)?;
    let doc = Certified::sign(node, SignatureDomain::HeQuery, &query)?;
    let transcript = to_cbor(&KeyTranscript {
        query: doc.clone(),
        proposal: pdoc.clone(),
        shares,
    })?;
    let mut pendings = Vec::new();
    for m in terms.members.iter().filter(|m| **m != node.config.dept) {
        pendings.push(Pending::new(
            KIND_HE_KEY_TRANSCRIPT,
            &format!("{query_id}/{m}"),
            m,
            doc.digest(),
            SubmissionFile {
                kind: KIND_HE_KEY_TRANSCRIPT.into(),
                document: transcript.clone(),
            },
        ));
    }
    let mut ops =
        vec![
            node.store
                .put_op(CF_HE, &store::he_key(HeRecord::Query, query_id, None), &doc)?,
        ];
    for p in &pendings {
        ops.push(p.hold_op(node)?);
    }
    crate::config::write_atomic(std::path::Path::new(out), &doc.to_bytes()?, 0o644)?;
    let mut d = node.draft(EventKind::KeyRotate, operator);
    d.payload_digest = Some(doc.digest());
    d.detail = Some(format!(
        "committee key of query {query_id} made from the key shares of {} ({}-of-{}); query signed; k = {}, aggregator {}, contributors {}",
        terms.members.join(","),
        terms.threshold,
        terms.members.len(),
        query.k,
        query.aggregator,
        query.contributors.join(",")
    ));
    node.log_with(d, ops)?;
    Ok((
        pendings,
        KeyFinished {
            query: query_id.to_string(),
            out: out.to_string(),
            digest: doc.digest().to_hex(),
            committee: terms.members.clone(),
            threshold: terms.threshold,
            sent: Vec::new(),
        },
    ))
}

/// Checks the transcript and takes this member's sub-shares (the
/// `he-key-transcript` handler): the query's key must be the sum of the key
/// shares, this member's own among them unchanged.
pub fn accept_key_transcript(node: &Node, peer: &str, document: &[u8]) -> Result<Accepted> {
    let t: KeyTranscript = from_cbor(document, "he key transcript")?;
    let checker = node.cert_checker()?;
    let query = check_query(&checker, &t.query)?;
    let terms = query.terms()?;
    let me = &node.config.dept;
    let digest = t.query.digest();
    let (own_pdoc, p) = stored_proposal(node, &query.query_id)?;
    if own_pdoc.digest() != t.proposal.digest() || terms.proposal != Some(own_pdoc.digest()) {
        return Err(NodeError::Refused(format!(
            "the transcript of query {} is for another proposal than the one held here",
            query.query_id
        )));
    }
    let query_key = store::he_key(HeRecord::Query, &query.query_id, None);
    if let Some(again) = kept_once(node, &query_key, digest, || {
        format!(
            "another query document with id {} is already held here",
            query.query_id
        )
    })? {
        return Ok(again);
    }
    let own = stored(node, HeRecord::KeyShare, &query.query_id, Some(me))?.ok_or_else(|| {
        NodeError::Refused(format!(
            "this node has not dealt its sub-shares of query {} (`pdx he key-share`)",
            query.query_id
        ))
    })?;
    let i = terms
        .index_of(me)
        .ok_or_else(|| NodeError::Refused(format!("{me} is not a committee member")))?;
    if t.shares.get(i).map(Certified::digest) != Some(own.digest()) {
        return Err(NodeError::Refused(format!(
            "the transcript of query {} does not carry this node's key share unchanged",
            query.query_id
        )));
    }
    let listed: Vec<Digest> = t.shares.iter().map(Certified::digest).collect();
    if listed != terms.key_shares {
        return Err(NodeError::Refused(format!(
            "the key shares of the transcript of query {} are not the ones its query lists",
            query.query_id
        )));
    }
    let (pk, bodies) = transcript_key(node.suite, &checker, &t.proposal, &p, &t.shares)?;
    if he::words_to_bytes(&pk.to_words()) != query.public_key {
        return Err(NodeError::Refused(format!(
            "the public key of query {} is not the sum of its members' key shares",
            query.query_id
        )));
    }
    let mut draft = query.clone();
    draft.public_key = Vec::new();
    draft.created_ms = p.draft.created_ms;
    if let Some(t) = draft.committee.as_mut() {
        t.proposal = None;
        t.key_shares = Vec::new();
    }
    if draft != p.draft {
        return Err(NodeError::Refused(format!(
            "the signed query {} differs from its proposal in more than its key",
            query.query_id
        )));
    }
    let held = receive_shares(node, &query, &own_pdoc.digest(), &bodies)?;
    let mut d = node.draft(EventKind::KeyRotate, NODE_OPERATOR);
    d.counterparty = Some(query.key_holder.clone());
    d.payload_digest = Some(digest);
    d.detail = Some(format!(
        "committee key of query {} checked against the key shares of {} (via {peer}); this member holds sub-shares [{}]",
        query.query_id,
        terms.members.join(","),
        held.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    ));
    node.log_with(d, vec![node.store.put_op(CF_HE, &query_key, &t.query)?])?;
    Ok(Accepted {
        digest,
        note: format!(
            "committee key of query {} accepted; sub-shares [{}] held",
            query.query_id,
            held.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    })
}

/// One member's partial decryptions: (sub-share index, one word per slot).
pub(super) type SharePartials = Vec<(usize, Vec<u64>)>;

/// The partial decryptions a member sent or the combiner received.
fn stored_partial(node: &Node, query_id: &str, member: &str) -> Result<Option<Certified>> {
    stored(node, HeRecord::Partial, query_id, Some(member))
}

/// Verifies a partial decryption against its query and aggregate: signer =
/// member of the committee, exactly the sub-shares it holds, sizes.
pub(super) fn check_partial(
    checker: &CertChecker,
    query: &QueryBody,
    query_digest: &Digest,
    aggregate_digest: &Digest,
    doc: &Certified,
) -> Result<(PartialBody, SharePartials)> {
    let (p, context): (PartialBody, _) = verify_member(checker, doc, &query.query_id)?;
    let refuse = |m: String| refused(&context, m);
    if p.query_id != query.query_id || p.query_digest != *query_digest {
        return Err(refuse(
            "is for another query (query id or digest differs)".into(),
        ));
    }
    let terms = query.terms()?;
    let member = terms
        .index_of(&p.member)
        .ok_or_else(|| refuse("the department is not a member of the query's committee".into()))?;
    if p.aggregate_digest != *aggregate_digest {
        return Err(refuse(format!(
            "decrypts aggregate {}, not the aggregate {} held here",
            p.aggregate_digest.to_hex(),
            aggregate_digest.to_hex()
        )));
    }
    let held = terms.committee()?.held_by(member);
    let got: Vec<usize> = p.shares.iter().map(|s| usize::from(s.share)).collect();
    if got != held {
        return Err(refuse(format!(
            "carries sub-shares {got:?}; the member holds {held:?}"
        )));
    }
    let mut out = Vec::new();
    for s in &p.shares {
        let words = words_of(&s.words, query.slots(), &format!("sub-share {}", s.share))
            .map_err(|e| refuse(e.to_string()))?;
        out.push((usize::from(s.share), words));
    }
    Ok((p, out))
}

/// `pdx he partial`: a member's partial decryption of the aggregate held
/// here, signed and audited; returns it for the coordinator (`None` when
/// this node is the coordinator and keeps it).
pub fn partial(
    node: &Node,
    query_id: &str,
    operator: &str,
) -> Result<(Option<Pending>, PartialMade)> {
    let query_doc = stored_query(node, query_id)?;
    let checker = node.cert_checker()?;
    let query = check_query(&checker, &query_doc)?;
    let terms = query.terms()?;
    let committee = terms.committee()?;
    let me = &node.config.dept;
    let index = terms.index_of(me).ok_or_else(|| {
        NodeError::Refused(format!(
            "{me} is not a member of query {query_id}'s committee"
        ))
    })?;
    let agg_doc = stored(node, HeRecord::Aggregate, query_id, None)?.ok_or_else(|| {
        NodeError::NotFound(format!(
            "no aggregate for query {query_id} has arrived (the aggregator {} runs `pdx he aggregate`)",
            query.aggregator
        ))
    })?;
    let (agg, list) = check_aggregate(&checker, &query, &query_doc.digest(), &agg_doc)?;
    let made = |doc: &Certified, body: &PartialBody, dispatch| PartialMade {
        query: query_id.to_string(),
        aggregate_digest: body.aggregate_digest.to_hex(),
        shares: body.shares.iter().map(|s| s.share).collect(),
        digest: doc.digest().to_hex(),
        to: query.key_holder.clone(),
        dispatch,
    };
    if let Some(prev) = stored_partial(node, query_id, me)? {
        let (body, _): (PartialBody, _) = prev.verify(&checker, SignatureDomain::HePartial)?;
        if body.aggregate_digest != agg_doc.digest() {
            return Err(NodeError::Refused(format!(
                "this member already decrypted another aggregate of query {query_id} ({}); one decryption per query",
                body.aggregate_digest.to_hex()
            )));
        }
        let pending = outbox::pending_for(node, KIND_HE_PARTIAL, query_id)?;
        if pending.is_none() && query.key_holder != *me {
            return Err(NodeError::Refused(format!(
                "this member's partial decryption of query {query_id} was delivered; it is made once"
            )));
        }
        let resent = Dispatch {
            resent: true,
            ..Dispatch::default()
        };
        return Ok((pending, made(&prev, &body, resent)));
    }
    let held = committee.held_by(index);
    let mut secrets = Vec::new();
    for &share in &held {
        let bytes = node.load_secret(&share_name(query_id, share), KeyKind::HeLweSecret)?;
        secrets.push(HeSecretKey::from_bytes(&bytes)?);
    }
    let budget = committee::budget(query.contributors.len(), &committee, query.slots())?;
    let refs: Vec<&HeSecretKey> = secrets.iter().collect();
    let partials = committee::partial_decrypt_many(&refs, &list, budget.flooding_sigma)?;
    let body = PartialBody {
        version: 1,
        query_id: query_id.to_string(),
        query_digest: query_doc.digest(),
        aggregate_digest: agg_doc.digest(),
        member: me.clone(),
        shares: held
            .iter()
            .zip(&partials)
            .map(|(&s, w)| {
                Ok(PartialShare {
                    share: share_index(s)?,
                    words: he::words_to_bytes(w),
                })
            })
            .collect::<Result<_>>()?,
        created_ms: now_ms(),
    };
    let doc = Certified::sign(node, SignatureDomain::HePartial, &body)?;
    let mut d = node.draft(EventKind::AggregateDecrypt, operator);
    d.counterparty = Some(query.key_holder.clone());
    d.purpose = Some(format!("homomorphic aggregate {query_id}"));
    d.payload_digest = Some(doc.digest());
    d.detail = Some(format!(
        "partial decryption of aggregate {} ({} contributors) with sub-shares [{}], flooding sigma 2^{:.2}; for combiner {}",
        agg_doc.digest().to_hex(),
        agg.contributions.len(),
        held.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
        budget.flooding_sigma.log2(),
        query.key_holder
    ));
    let mut ops = vec![node.store.put_op(
        CF_HE,
        &store::he_key(HeRecord::Partial, query_id, Some(me)),
        &doc,
    )?];
    let pending = if query.key_holder == *me {
        None
    } else {
        let p = Pending::new(
            KIND_HE_PARTIAL,
            query_id,
            &query.key_holder,
            doc.digest(),
            SubmissionFile {
                kind: KIND_HE_PARTIAL.into(),
                document: doc.to_bytes()?,
            },
        );
        ops.push(p.hold_op(node)?);
        Some(p)
    };
    node.log_with(d, ops)?;
    let info = made(&doc, &body, Dispatch::default());
    Ok((pending, info))
}

/// Stores a member's partial decryption (the coordinator's `he-partial`
/// handler): for the aggregate held here, from a member, once.
pub fn accept_partial(node: &Node, peer: &str, document: &[u8]) -> Result<Accepted> {
    let doc = Certified::from_bytes(document, "he partial decryption")?;
    // Read unverified only to find the query; check_partial verifies.
    let p0: PartialBody = doc
        .signed
        .dangerous_decode_unverified("he partial decryption")?;
    check_query_id(&p0.query_id)?;
    let query_doc = stored_query(node, &p0.query_id)?;
    let checker = node.cert_checker()?;
    let query = check_query(&checker, &query_doc)?;
    if query.key_holder != node.config.dept {
        return Err(NodeError::Refused(format!(
            "query {} is combined by {}, not this node",
            query.query_id, query.key_holder
        )));
    }
    let agg_doc = stored(node, HeRecord::Aggregate, &query.query_id, None)?.ok_or_else(|| {
        NodeError::Refused(format!(
            "no aggregate of query {} is held here to combine partial decryptions of",
            query.query_id
        ))
    })?;
    let (p, _) = check_partial(
        &checker,
        &query,
        &query_doc.digest(),
        &agg_doc.digest(),
        &doc,
    )?;
    let digest = doc.digest();
    let key = store::he_key(HeRecord::Partial, &query.query_id, Some(&p.member));
    if let Some(again) = kept_once(node, &key, digest, || {
        format!(
            "{} already sent its partial decryption of query {}; one per member",
            p.member, query.query_id
        )
    })? {
        return Ok(again);
    }
    let mut d = node.draft(EventKind::AggregateCombine, NODE_OPERATOR);
    d.counterparty = Some(p.member.clone());
    d.purpose = Some(format!("homomorphic aggregate {}", query.query_id));
    d.payload_digest = Some(digest);
    d.detail = Some(format!(
        "received the partial decryption of {} for aggregate {} of query {} (via {peer}; sub-shares [{}])",
        p.member,
        p.aggregate_digest.to_hex(),
        query.query_id,
        p.shares
            .iter()
            .map(|s| s.share.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));
    node.log_with(d, vec![node.store.put_op(CF_HE, &key, &doc)?])?;
    Ok(Accepted {
        digest,
        note: format!(
            "partial decryption of {} for query {} accepted",
            p.member, query.query_id
        ),
    })
}

/// Audits a refused combination (the operator's command; not a flood).
fn refuse_combine(node: &Node, operator: &str, query_id: &str, why: String) -> NodeError {
    let mut d = node.draft(EventKind::RefusedRequest, operator);
    d.purpose = Some(format!("homomorphic aggregate {query_id}"));
    d.detail = Some(format!("he combine refused: {why}"));
    if let Err(e) = node.log(d) {
        return e;
    }
    NodeError::Refused(why)
}

/// `pdx he combine`: adds one partial decryption per sub-share, from the
/// members that sent theirs, and decodes the sum (once per query).
pub fn combine(node: &Node, query_id: &str, operator: &str) -> Result<Decrypted> {
    let query_doc = stored_query(node, query_id)?;
    let checker = node.cert_checker()?;
    let query = check_query(&checker, &query_doc)?;
    let terms = query.terms()?;
    let committee = terms.committee()?;
    if query.key_holder != node.config.dept {
        return Err(NodeError::Refused(format!(
            "query {query_id} is combined by {}",
            query.key_holder
        )));
    }
    let agg_doc = stored(node, HeRecord::Aggregate, query_id, None)?.ok_or_else(|| {
        NodeError::NotFound(format!(
            "no aggregate for query {query_id} has arrived (the aggregator {} runs `pdx he aggregate`)",
            query.aggregator
        ))
    })?;
    let (agg, list) = check_aggregate(&checker, &query, &query_doc.digest(), &agg_doc)?;
    check_not_differencing(node, query_id, &agg)?;
    let mut partials: Vec<Option<SharePartials>> = Vec::new();
    let mut problems = Vec::new();
    for m in &terms.members {
        partials.push(match stored_partial(node, query_id, m)? {
            Some(doc) => match check_partial(
                &checker,
                &query,
                &query_doc.digest(),
                &agg_doc.digest(),
                &doc,
            ) {
                Ok((_, p)) => Some(p),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            },
            None => None,
        });
    }
    let present: Vec<bool> = partials.iter().map(Option::is_some).collect();
    let cover = match committee.cover(&present) {
        Ok(c) => c,
        Err(uncovered) => {
            let missing: Vec<&str> = terms
                .members
                .iter()
                .zip(&present)
                .filter(|(_, p)| !**p)
                .map(|(m, _)| m.as_str())
                .collect();
            let have = present.iter().filter(|p| **p).count();
            return Err(refuse_combine(
                node,
                operator,
                query_id,
                format!(
                    "query {query_id} needs partial decryptions from at least {} of its {} committee members; {have} arrived, missing: {} (sub-shares [{}] are held only by them; each runs `pdx he partial --query {query_id}`){}",
                    terms.threshold,
                    terms.members.len(),
                    missing.join(", "),
                    uncovered
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    if problems.is_empty() {
                        String::new()
                    } else {
                        format!("; refused: {}", problems.join("; "))
                    }
                ),
            ));
        }
    };
    let mut chosen: Vec<&[u64]> = Vec::with_capacity(committee.shares());
    for (share, &member) in cover.iter().enumerate() {
        let words = partials[member]
            .as_ref()
            .and_then(|p| p.iter().find(|(s, _)| *s == share))
            .map(|(_, w)| w.as_slice())
            .ok_or_else(|| {
                NodeError::Invalid(format!("member {member} lacks sub-share {share}"))
            })?;
        chosen.push(words);
    }
    let used: BTreeSet<&str> = cover.iter().map(|&m| terms.members[m].as_str()).collect();
    // Marked before decoding, as with one key holder.
    node.store.put(
        CF_HE,
        &store::he_key(HeRecord::Decrypted, query_id, None),
        &agg_doc,
    )?;
    let slots = committee::combine_partials(&committee, &list, &chosen)?;
    let how = format!(
        "combined the partial decryptions of {} ({}-of-{} committee) into",
        used.iter().copied().collect::<Vec<_>>().join(","),
        terms.threshold,
        terms.members.len()
    );
    let from = used.into_iter().map(String::from).collect();
    opened(node, operator, &query, agg, &agg_doc, &slots, how, from)
}
