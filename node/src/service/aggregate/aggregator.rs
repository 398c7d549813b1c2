//! The aggregator: contributions checked and stored, then added into the
//! signed aggregate (no key needed).

use super::*;

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
    match stored(node, HeRecord::Query, &query.query_id, None)? {
        Some(q) if q.digest() != query_digest => {
            return Err(NodeError::Refused(format!(
                "another query document with id {} is already held here",
                query.query_id
            )));
        }
        Some(_) => {}
        None => node.store.put(
            CF_HE,
            &store::he_key(HeRecord::Query, &query.query_id, None),
            &sub.query,
        )?,
    }
    if now_ms() > query.deadline_ms {
        return Err(NodeError::Refused(format!(
            "query {} closed at its deadline",
            query.query_id
        )));
    }
    let crs = match query.committee.as_ref().and_then(|t| t.crs) {
        Some(d) => Some(crs::load(node, &d)?),
        None => None,
    };
    let proofs = crs.as_deref().map_or(Proofs::AcceptedHere, Proofs::Verify);
    let (c, _list) =
        check_contribution(&checker, &query, &query_digest, &sub.contribution, proofs)?;
    let digest = sub.contribution.digest();
    let k = store::he_key(
        HeRecord::Contribution,
        &query.query_id,
        Some(&c.contributor),
    );
    if let Some(again) = kept_once(node, &k, digest, || {
        format!(
            "{} already contributed to query {}; contributions are final",
            c.contributor, query.query_id
        )
    })? {
        return Ok(again);
    }
    node.store.put(CF_HE, &k, &sub.contribution)?;
    let mut d = node.draft(EventKind::AggregateContribute, NODE_OPERATOR);
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
/// returns the submission for the key holder, then for each other committee
/// member (who each decrypt partially).
pub fn aggregate(
    node: &Node,
    query_id: &str,
    to: &str,
    operator: &str,
) -> Result<(Vec<Pending>, Aggregated)> {
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
    if query.committee.is_some()
        && let Some(again) = resend_aggregate(node, &query)?
    {
        return Ok(again);
    }
    let mut sum: Option<HeList> = None;
    let mut refs = Vec::new();
    let mut excluded = Vec::new();
    for doc in contributions(node, query_id)? {
        // Re-checked now: a certificate revoked since acceptance excludes it.
        // Proofs were verified on acceptance, before the contribution was stored.
        match check_contribution(&checker, &query, &query_digest, &doc, Proofs::AcceptedHere) {
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
    let submission = SubmissionFile {
        kind: KIND_HE_AGGREGATE.into(),
        document: to_cbor(&AggregateSubmission {
            query: query_doc,
            aggregate: doc.clone(),
        })?,
    };
    let also_to: Vec<String> = query
        .committee
        .iter()
        .flat_map(|t| &t.members)
        // This node holds the aggregate already (an aggregator may be a member).
        .filter(|m| **m != query.key_holder && **m != node.config.dept)
        .cloned()
        .collect();
    let mut pendings = vec![Pending::new(
        KIND_HE_AGGREGATE,
        query_id,
        &query.key_holder,
        doc.digest(),
        submission.clone(),
    )];
    for m in &also_to {
        pendings.push(Pending::new(
            KIND_HE_AGGREGATE,
            &format!("{query_id}/{m}"),
            m,
            doc.digest(),
            submission.clone(),
        ));
    }
    // The aggregate, its entry and its places in the outbox: one write.
    let mut ops = vec![node.store.put_op(
        CF_HE,
        &store::he_key(HeRecord::Aggregate, query_id, None),
        &doc,
    )?];
    for p in &pendings {
        ops.push(p.hold_op(node)?);
    }
    node.log_with(d, ops)?;
    Ok((
        pendings,
        Aggregated {
            query: query_id.to_string(),
            contributors: body.contributions.iter().map(|c| c.dept.clone()).collect(),
            excluded,
            digest: doc.digest().to_hex(),
            to: query.key_holder,
            bytes: body.ciphertext.len(),
            dispatch: Dispatch::default(),
            also_to,
        },
    ))
}

/// A committee query's aggregate again after a failed send: the signed one,
/// to the members that have not acknowledged it (a new sum would be refused
/// by those holding the first, and could reveal a difference).
fn resend_aggregate(node: &Node, query: &QueryBody) -> Result<Option<(Vec<Pending>, Aggregated)>> {
    let pendings = super::committee::undelivered(node, KIND_HE_AGGREGATE, &query.query_id)?;
    let Some(doc) = stored(node, HeRecord::Aggregate, &query.query_id, None)? else {
        return Ok(None);
    };
    if pendings.is_empty() {
        return Ok(None);
    }
    let a: AggregateBody = doc
        .verify(&node.cert_checker()?, SignatureDomain::HeAggregate)?
        .0;
    let resent = Dispatch {
        resent: true,
        ..Dispatch::default()
    };
    let also_to = pendings
        .iter()
        .filter(|p| p.to != query.key_holder)
        .map(|p| p.to.clone())
        .collect();
    Ok(Some((
        pendings,
        Aggregated {
            query: query.query_id.clone(),
            contributors: a.contributions.iter().map(|c| c.dept.clone()).collect(),
            excluded: Vec::new(),
            digest: doc.digest().to_hex(),
            to: query.key_holder.clone(),
            bytes: a.ciphertext.len(),
            dispatch: resent,
            also_to,
        },
    )))
}
