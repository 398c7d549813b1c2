//! Aggregate documents end to end with a real CA, without a node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use crate::pki;
use pdx_crypto::{Digest, SigningKey};
use pdx_schemas::types::units_to_decimal;
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
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(out.join("node.key")).unwrap();
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
    world_in(pdx_crypto::Suite::Intl, k)
}

fn world_in(suite: pdx_crypto::Suite, k: u32) -> World {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    pki::ca_init(&ca, "unit", suite).unwrap();
    let checker = CertChecker::new(&pki::read_certs(&ca.join("ca.crt")).unwrap(), vec![]).unwrap();
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
        committee: None,
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
        proofs: Vec::new(),
    };
    Certified::sign_with(
        &who.key,
        who.cert.clone(),
        SignatureDomain::HeContribution,
        &body,
    )
    .unwrap()
}

/// A contribution of the world's query, checked (its proofs are not asked for).
fn checked(w: &World, d: &Certified) -> (ContributionBody, HeList) {
    check_contribution(
        &w.checker,
        &w.query,
        &w.query_doc.digest(),
        d,
        Proofs::AcceptedHere,
    )
    .unwrap()
}

fn aggregate_of(w: &World, docs: &[&Certified], list: &HeList) -> Certified {
    let contributions = docs
        .iter()
        .map(|d| {
            let (c, _) = checked(w, d);
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
        let (_, l) = checked(w, d);
        s = Some(accumulate(s, &l).unwrap());
    }
    s.unwrap()
}

#[test]
fn maximal_sums_and_counts_decrypt_exactly_through_the_documents() {
    maximal_sums_and_counts_decrypt_exactly_in(pdx_crypto::Suite::Intl);
}

#[test]
fn gm_documents_carry_the_aggregate_like_intl_ones() {
    maximal_sums_and_counts_decrypt_exactly_in(pdx_crypto::Suite::Gm);
}

fn maximal_sums_and_counts_decrypt_exactly_in(suite: pdx_crypto::Suite) {
    let w = world_in(suite, 3);
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
    let (_, checked) = check_aggregate(&w.checker, &w.query, &w.query_doc.digest(), &agg).unwrap();
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
    assert_eq!(
        verify_bundle(&w.checker, &bundle, None).unwrap().verdict,
        SumVerdict::Ok
    );
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
    for suite in pdx_crypto::Suite::ALL {
        forged_tampered_and_misaddressed_contributions_are_refused_in(suite);
    }
}

fn forged_tampered_and_misaddressed_contributions_are_refused_in(suite: pdx_crypto::Suite) {
    let w = world_in(suite, 3);
    let good = contribution(&w, &w.provinces[0], &plain(&w, 1));
    let qd = w.query_doc.digest();
    assert!(check_contribution(&w.checker, &w.query, &qd, &good, Proofs::AcceptedHere).is_ok());
    // One flipped ciphertext bit breaks the signature.
    let mut tampered = good.clone();
    let n = tampered.signed.body.len();
    tampered.signed.body[n - 9] ^= 1;
    assert!(
        check_contribution(&w.checker, &w.query, &qd, &tampered, Proofs::AcceptedHere).is_err()
    );
    // Signed by one province, claiming to be another.
    let mut forged = good.clone();
    forged.certificate = w.provinces[1].cert.clone();
    assert!(check_contribution(&w.checker, &w.query, &qd, &forged, Proofs::AcceptedHere).is_err());
    // A department outside the allowed list (the key holder itself).
    let outsider = contribution(&w, &w.holder, &plain(&w, 1));
    let err =
        check_contribution(&w.checker, &w.query, &qd, &outsider, Proofs::AcceptedHere).unwrap_err();
    assert!(
        err.to_string().contains("not an allowed contributor"),
        "{err}"
    );
    // For another query.
    assert!(
        check_contribution(
            &w.checker,
            &w.query,
            &Digest([1; 32]),
            &good,
            Proofs::AcceptedHere
        )
        .is_err()
    );
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
    let refused = |b: &ContributionBody| {
        check_contribution(&w.checker, &w.query, &qd, &sign(b), Proofs::AcceptedHere).unwrap_err()
    };
    // Short by one word.
    body.ciphertext.truncate(body.ciphertext.len() - 8);
    let err = refused(&body);
    assert!(err.to_string().contains("bytes"), "{err}");
    // A list for another layout (one slot more).
    body.slots += 1;
    body.ciphertext = vec![0; he::list_bytes(body.slots as usize)];
    let err = refused(&body);
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
    let (_, one) = check_contribution(
        &w.checker,
        &w.query,
        &w.query_doc.digest(),
        &docs[0],
        Proofs::AcceptedHere,
    )
    .unwrap();
    let cheat = aggregate_of(&w, &refs, &one);
    // The key holder cannot tell (sizes and signature are fine)...
    assert!(check_aggregate(&w.checker, &w.query, &w.query_doc.digest(), &cheat).is_ok());
    // ...but recomputation from the contributions can.
    let bundle = QueryBundle {
        query: w.query_doc.clone(),
        aggregate: cheat,
        contributions: docs,
    };
    let v = verify_bundle(&w.checker, &bundle, None).unwrap();
    assert_eq!(v.verdict, SumVerdict::Mismatch, "{v:?}");
}

/// A 2-of-3 committee query over the world's key holder (coordinator),
/// aggregator and first province, its sub-shares, and the signed query.
fn committee_world() -> (World, Vec<HeSecretKey>) {
    let mut w = world(2);
    let seed = [7u8; he::committee::MASK_SEED_BYTES];
    let members = vec![
        w.holder.dept.clone(),
        w.agg.dept.clone(),
        w.provinces[0].dept.clone(),
    ];
    let committee = he::committee::Committee::new(3, 2).unwrap();
    let (mut secrets, mut bodies) = (Vec::new(), Vec::new());
    for _ in 0..committee.shares() {
        let (s, b) = he::committee::share_keygen(&seed);
        secrets.push(s);
        bodies.push(b);
    }
    let refs: Vec<&[u64]> = bodies.iter().map(Vec::as_slice).collect();
    let pk = he::committee::combine_public_key(&committee, &seed, &refs).unwrap();
    let q = &mut w.query;
    q.version = 2;
    q.scheme = he::COMMITTEE_SCHEME_ID.into();
    q.public_key = he::words_to_bytes(&pk.to_words());
    q.committee = Some(CommitteeTerms {
        members,
        threshold: 2,
        mask_seed: seed.to_vec(),
        proposal: Some(Digest([1; 32])),
        key_shares: (0..3).map(|i| Digest([i; 32])).collect(),
        crs: None,
    });
    w.query_doc = Certified::sign_with(
        &w.holder.key,
        w.holder.cert.clone(),
        SignatureDomain::HeQuery,
        &w.query,
    )
    .unwrap();
    (w, secrets)
}

fn committee_contribution(w: &World, who: &Party, p: &PlainSums) -> Certified {
    let q = &w.query;
    let list = he::encrypt_in(&q.public_key().unwrap(), q.layout(), &limbs(q, p)).unwrap();
    let body = ContributionBody {
        version: 1,
        query_id: q.query_id.clone(),
        query_digest: w.query_doc.digest(),
        contributor: who.dept.clone(),
        dataset_digest: Digest([0; 32]),
        records: 10,
        created_ms: 0,
        slots: q.slots() as u64,
        ciphertext: he::words_to_bytes(list.words()),
        proofs: Vec::new(),
    };
    Certified::sign_with(
        &who.key,
        who.cert.clone(),
        SignatureDomain::HeContribution,
        &body,
    )
    .unwrap()
}

fn partial_doc(
    w: &World,
    who: &Party,
    aggregate: &Digest,
    shares: &[(usize, &HeSecretKey)],
    list: &HeList,
) -> Certified {
    let keys: Vec<&HeSecretKey> = shares.iter().map(|(_, k)| *k).collect();
    let words = he::committee::partial_decrypt_many(&keys, list, 2f64.powi(20)).unwrap();
    let body = PartialBody {
        version: 1,
        query_id: w.query.query_id.clone(),
        query_digest: w.query_doc.digest(),
        aggregate_digest: *aggregate,
        member: who.dept.clone(),
        shares: shares
            .iter()
            .zip(&words)
            .map(|((s, _), w)| PartialShare {
                share: *s as u8,
                words: he::words_to_bytes(w),
            })
            .collect(),
        created_ms: 0,
    };
    Certified::sign_with(
        &who.key,
        who.cert.clone(),
        SignatureDomain::HePartial,
        &body,
    )
    .unwrap()
}

#[test]
fn two_of_three_partials_decrypt_the_committee_sum_and_outsiders_or_other_aggregates_are_refused() {
    let (w, secrets) = committee_world();
    assert_eq!(check_query(&w.checker, &w.query_doc).unwrap(), w.query);
    assert_eq!(w.query.slots_per_category(), 8 + 4, "8-bit limbs");
    let plains: Vec<PlainSums> = (0..3).map(|i| plain(&w, i)).collect();
    let docs: Vec<Certified> = w
        .provinces
        .iter()
        .zip(&plains)
        .map(|(p, x)| committee_contribution(&w, p, x))
        .collect();
    let refs: Vec<&Certified> = docs.iter().collect();
    let list = sum_of(&w, &refs);
    let agg = aggregate_of(&w, &refs, &list);
    let (_, list) = check_aggregate(&w.checker, &w.query, &w.query_doc.digest(), &agg).unwrap();
    let ad = agg.digest();
    let committee = w.query.terms().unwrap().committee().unwrap();
    let qd = w.query_doc.digest();
    let holdings = |m: usize| -> Vec<(usize, &HeSecretKey)> {
        committee
            .held_by(m)
            .into_iter()
            .map(|s| (s, &secrets[s]))
            .collect()
    };
    // The coordinator (member 0) and the first province (member 2); the aggregator stays out.
    let p0 = partial_doc(&w, &w.holder, &ad, &holdings(0), &list);
    let p2 = partial_doc(&w, &w.provinces[0], &ad, &holdings(2), &list);
    let (_, w0) = committee::check_partial(&w.checker, &w.query, &qd, &ad, &p0).unwrap();
    let (_, w2) = committee::check_partial(&w.checker, &w.query, &qd, &ad, &p2).unwrap();
    let cover = committee.cover(&[true, false, true]).unwrap();
    let by_member = [Some(&w0), None, Some(&w2)];
    let chosen: Vec<&[u64]> = cover
        .iter()
        .enumerate()
        .map(|(share, &m)| {
            by_member[m]
                .unwrap()
                .iter()
                .find(|(s, _)| *s == share)
                .unwrap()
                .1
                .as_slice()
        })
        .collect();
    let slots = he::committee::combine_partials(&committee, &list, &chosen).unwrap();
    let totals = totals(&w.query, &slots);
    for (c, t) in totals.iter().enumerate() {
        let want: u128 = plains.iter().map(|p| u128::from(p.sums[c][0])).sum();
        assert_eq!(t.sums[0], units_to_decimal(want as i128, 2));
        assert_eq!(t.count, plains.iter().map(|p| p.counts[c]).sum::<u64>());
    }
    // A department outside the committee, holding shares it cannot have.
    let outsider = partial_doc(&w, &w.provinces[1], &ad, &holdings(2), &list);
    let err = committee::check_partial(&w.checker, &w.query, &qd, &ad, &outsider).unwrap_err();
    assert!(err.to_string().contains("not a member"), "{err}");
    // A partial of another aggregate.
    let other = partial_doc(&w, &w.holder, &Digest([9; 32]), &holdings(0), &list);
    let err = committee::check_partial(&w.checker, &w.query, &qd, &ad, &other).unwrap_err();
    assert!(err.to_string().contains("not the aggregate"), "{err}");
    // A member offering a sub-share it does not hold.
    let wrong = partial_doc(&w, &w.holder, &ad, &holdings(2), &list);
    let err = committee::check_partial(&w.checker, &w.query, &qd, &ad, &wrong).unwrap_err();
    assert!(err.to_string().contains("holds"), "{err}");
}

#[test]
fn a_committee_query_whose_noise_would_not_fit_is_refused() {
    let (w, _) = committee_world();
    let mut q = w.query.clone();
    // 256 contributors over 65,536 categories: far beyond the budget.
    q.categories = (0..65_536).map(|i| format!("C{i:05}")).collect();
    q.contributors = (0..256).map(|i| format!("{:06}", 100_000 + i)).collect();
    let err = q.validate().unwrap_err();
    assert!(err.to_string().contains("query q1"), "{err}");
    // The same sizes under one key holder are admitted: it is the committee's budget.
    q.committee = None;
    q.version = 1;
    q.scheme = he::SCHEME_ID.into();
    q.validate().unwrap();
}
