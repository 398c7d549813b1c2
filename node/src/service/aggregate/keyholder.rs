//! The key holder: the key pair and signed query (`pdx he keygen`), accepting
//! the aggregate, and the one decryption a query allows.

use super::*;

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
    /// Decryption committee (this node first or among them; empty: this node
    /// alone holds the key).
    #[serde(default)]
    pub committee: Vec<String>,
    /// Members whose partial decryptions suffice (committee only; default all).
    #[serde(default)]
    pub threshold: Option<u8>,
    /// Hex digest of the installed CRS contributions must prove against
    /// (committee only; none: contributions carry no proofs).
    #[serde(default)]
    pub crs: Option<String>,
}

/// `pdx he keygen`: one key holder's key pair and signed query, or a
/// committee query's proposal (returned for each other member).
pub fn keygen(
    node: &Node,
    spec: &QuerySpec,
    operator: &str,
) -> Result<(Vec<Pending>, QueryCreated)> {
    check_query_id(&spec.query_id)?;
    if !spec.committee.is_empty()
        && let Some(again) = committee::resend_proposals(node, &spec.query_id)?
    {
        return Ok(again);
    }
    if stored(node, HeRecord::Query, &spec.query_id, None)?.is_some()
        || stored(node, HeRecord::Proposal, &spec.query_id, None)?.is_some()
    {
        return Err(NodeError::Invalid(format!(
            "query {} already exists on this node; choose a new query id",
            spec.query_id
        )));
    }
    let source =
        std::fs::read_to_string(&spec.schema_path).map_err(NodeError::io(&spec.schema_path))?;
    let schema = Schema::parse(&source, &spec.schema_path, node.suite)?;
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
    let mut body = QueryBody {
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
        public_key: Vec::new(),
        committee: None,
    };
    if !spec.committee.is_empty() {
        let threshold = match spec.threshold {
            Some(t) => t,
            None => u8::try_from(spec.committee.len()).map_err(|_| {
                NodeError::Invalid(format!(
                    "a committee has at most {} members",
                    he::committee::MAX_MEMBERS
                ))
            })?,
        };
        let mut seed = vec![0u8; he::committee::MASK_SEED_BYTES];
        pdx_crypto::rng::fill(&mut seed)?;
        body.version = 2;
        body.scheme = he::COMMITTEE_SCHEME_ID.to_string();
        let crs = match &spec.crs {
            None => None,
            Some(hex) => {
                let d = pdx_crypto::Digest::from_hex(hex).ok_or_else(|| {
                    NodeError::Invalid(format!(
                        "--crs {hex:?}: give the 64-hex-digit digest the network CA published"
                    ))
                })?;
                // Installed and conformant here, or contributors could not prove.
                crs::load(node, &d)?;
                Some(d)
            }
        };
        body.committee = Some(CommitteeTerms {
            members: spec.committee.clone(),
            threshold,
            mask_seed: seed,
            proposal: None,
            key_shares: Vec::new(),
            crs,
        });
        return committee::propose(node, body, operator);
    }
    if spec.threshold.is_some() {
        return Err(NodeError::Invalid("--threshold needs --committee".into()));
    }
    if spec.crs.is_some() {
        return Err(NodeError::Invalid(
            "--crs needs --committee: proofs are made in the committee layout".into(),
        ));
    }
    let (sk, pk) = he::keygen();
    body.public_key = he::words_to_bytes(&pk.to_words());
    body.validate()?;
    node.save_secret(
        &secret_name(&spec.query_id),
        KeyKind::HeLweSecret,
        &sk.to_bytes(),
    )?;
    let doc = Certified::sign(node, SignatureDomain::HeQuery, &body)?;
    node.store.put(
        CF_HE,
        &store::he_key(HeRecord::Query, &spec.query_id, None),
        &doc,
    )?;
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
    Ok((
        Vec::new(),
        QueryCreated {
            query: body.query_id.clone(),
            out: spec.out.clone(),
            digest: doc.digest().to_hex(),
            categories: body.categories.len(),
            slots: body.slots(),
            k: body.k,
            secret_key: node
                .home
                .key(&secret_name(&body.query_id))
                .display()
                .to_string(),
            contributors: body.contributors,
            aggregator: body.aggregator,
            committee: Vec::new(),
            threshold: None,
            waiting_for: Vec::new(),
        },
    ))
}

/// Checks and stores an aggregate (the key holder's side of `Submit`).
pub fn accept_aggregate(node: &Node, peer: &str, document: &[u8]) -> Result<Accepted> {
    let sub: AggregateSubmission = from_cbor(document, "he aggregate submission")?;
    let checker = node.cert_checker()?;
    let query = check_query(&checker, &sub.query)?;
    let own = stored_query(node, &query.query_id)?;
    let me = &node.config.dept;
    let decrypts = match &query.committee {
        Some(t) => t.index_of(me).is_some(),
        None => query.key_holder == *me,
    };
    if !decrypts || own.digest() != sub.query.digest() {
        return Err(NodeError::Refused(format!(
            "query {} is not a query this node decrypts",
            query.query_id
        )));
    }
    let (a, _) = check_aggregate(&checker, &query, &own.digest(), &sub.aggregate)?;
    check_not_differencing(node, &query.query_id, &a)?;
    let digest = sub.aggregate.digest();
    if query.committee.is_some()
        && let Some(prev) = stored(node, HeRecord::Aggregate, &query.query_id, None)?
        && prev.digest() != digest
    {
        // Members may have decrypted the first: a second sum would reveal the difference.
        return Err(NodeError::Refused(format!(
            "an aggregate of query {} ({}) is already held here; a query has one aggregate",
            query.query_id,
            prev.digest().to_hex()
        )));
    }
    node.store.put(
        CF_HE,
        &store::he_key(HeRecord::Aggregate, &query.query_id, None),
        &sub.aggregate,
    )?;
    let mut d = node.draft(EventKind::AggregateCombine, NODE_OPERATOR);
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

/// `pdx he decrypt`.
pub fn decrypt(node: &Node, query_id: &str, operator: &str) -> Result<Decrypted> {
    let query_doc = stored_query(node, query_id)?;
    let checker = node.cert_checker()?;
    let query = check_query(&checker, &query_doc)?;
    if query.key_holder != node.config.dept {
        return Err(NodeError::Refused(format!(
            "query {query_id} belongs to key holder {}",
            query.key_holder
        )));
    }
    if query.committee.is_some() {
        return Err(NodeError::Refused(format!(
            "query {query_id} is decrypted by its committee: each member runs `pdx he partial --query {query_id}`, then this node `pdx he combine --query {query_id}`"
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
    // Marked before decrypting: a crash after this point cannot open the door
    // to decrypting a different sum.
    node.store.put(
        CF_HE,
        &store::he_key(HeRecord::Decrypted, query_id, None),
        &agg_doc,
    )?;
    let secret = node.load_secret(&secret_name(query_id), KeyKind::HeLweSecret)?;
    let sk = HeSecretKey::from_bytes(&secret)?;
    let slots = he::decrypt(&sk, &list);
    opened(
        node,
        operator,
        &query,
        agg,
        &agg_doc,
        &slots,
        "decrypted".into(),
        Vec::new(),
    )
}
