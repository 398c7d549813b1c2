//! A contributor: its dataset summed per category, encrypted and signed.

use super::*;

/// Sums a dataset per the query's categories.
pub fn plain_sums(node: &Node, query: &QueryBody, dataset: &str) -> Result<PlainSums> {
    let meta = crate::service::datasets::meta(node, dataset)?;
    if meta.schema_id != query.schema {
        return Err(NodeError::Refused(format!(
            "dataset {dataset} has schema {}; query {} sums {}",
            meta.schema_id, query.query_id, query.schema
        )));
    }
    let schema = meta.schema(node.suite)?;
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
    let overflow = || NodeError::Refused(format!("dataset {dataset}: a sum or count overflows"));
    crate::service::datasets::for_each_row(node, &meta, |row| {
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
        counts[c] = counts[c].checked_add(1).ok_or_else(overflow)?;
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
            *s = s.checked_add(units as u128).ok_or_else(overflow)?;
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
        if counts[c] >> COUNT_BITS != 0 {
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

/// `pdx he contribute`: sums, encrypts, signs and audits; returns the submission.
pub fn contribute(
    node: &Node,
    query_doc: &Certified,
    dataset: &str,
    to: &str,
    operator: &str,
) -> Result<(Pending, Contributed)> {
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
    // Contributions are final: one signed before but not delivered is sent
    // again as it is; one delivered is not made twice.
    if let Some(d) = outbox::delivery(node, KIND_HE_CONTRIBUTION, &query.query_id)? {
        return Err(NodeError::Refused(format!(
            "this node's contribution to query {} (digest {}) was delivered to {} at {}; contributions are final",
            query.query_id,
            d.digest.to_hex(),
            d.to,
            crate::timearg::format_ms(d.delivered_ms).unwrap_or_default()
        )));
    }
    let meta = crate::service::datasets::meta(node, dataset)?;
    if let Some(p) = outbox::pending_for(node, KIND_HE_CONTRIBUTION, &query.query_id)? {
        let sub: ContributionSubmission =
            from_cbor(&p.submission.document, "he contribution submission")?;
        let (c, _): (ContributionBody, _) = sub
            .contribution
            .verify(&node.cert_checker()?, SignatureDomain::HeContribution)?;
        // Over another dataset (or another version of it): signed anew below,
        // replacing the undelivered one.
        if c.dataset_digest == meta.digest {
            let info = Contributed {
                query: c.query_id,
                dataset: dataset.to_string(),
                records: c.records,
                slots: usize::try_from(c.slots).unwrap_or(usize::MAX),
                bytes: c.ciphertext.len(),
                digest: p.digest.to_hex(),
                to: p.to.clone(),
                dispatch: Dispatch {
                    resent: true,
                    ..Dispatch::default()
                },
            };
            return Ok((p, info));
        }
    }
    let plain = plain_sums(node, &query, dataset)?;
    let limbs = limbs(&query, &plain);
    let pk = query.public_key()?;
    let (list, proofs) = match query.committee.as_ref().and_then(|t| t.crs) {
        None => (he::encrypt_in(&pk, query.layout(), &limbs)?, Vec::new()),
        Some(d) => {
            let crs = crs::load(node, &d)?;
            let metadata = proof_metadata(&query_doc.digest(), me, query.deadline_ms);
            let (list, proofs) = he::proof::encrypt_and_prove(&pk, &crs, &limbs, &metadata)?;
            let bytes = proofs
                .iter()
                .map(|p| p.to_bytes().map(serde_bytes::ByteBuf::from))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            (list, bytes)
        }
    };
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
        proofs,
    };
    let doc = Certified::sign(node, SignatureDomain::HeContribution, &body)?;
    let schema = meta.schema(node.suite)?;
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
    let submission = SubmissionFile {
        kind: KIND_HE_CONTRIBUTION.into(),
        document: to_cbor(&ContributionSubmission {
            query: query_doc.clone(),
            contribution: doc.clone(),
        })?,
    };
    let pending = Pending::new(
        KIND_HE_CONTRIBUTION,
        &query.query_id,
        &query.aggregator,
        doc.digest(),
        submission,
    );
    node.log_with(d, vec![pending.hold_op(node)?])?;
    Ok((
        pending,
        Contributed {
            query: query.query_id.clone(),
            dataset: dataset.to_string(),
            records: plain.records,
            slots: query.slots(),
            bytes: body.ciphertext.len(),
            digest: doc.digest().to_hex(),
            to: query.aggregator,
            dispatch: Dispatch::default(),
        },
    ))
}
