//! The settlement scenario under faults, on real node processes: a province
//! killed mid-release, a province revoked mid-run, a malformed aggregate
//! contribution, a province that deletes an entry from its own log. Each run's
//! figures are checked against the plaintext reference from the generated CSVs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_testnet::settlement::{BUREAU, NATIONAL, NDA, Options, QUERY, Settlement, as_strs};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn small(dir: &std::path::Path, provinces: usize, records: u64, k: u32) -> Settlement {
    Settlement::setup(
        dir,
        Options {
            provinces,
            records,
            seed: 11,
            k,
            suite: pdx_crypto::Suite::Intl,
            proofs: false,
        },
    )
    .unwrap()
}

/// A small month up to the relay: imported, keys exchanged, clearing
/// releases fetched and relayed to the insured provinces.
fn relayed(dir: &std::path::Path, provinces: usize, records: u64) -> Settlement {
    let mut st = small(dir, provinces, records, 2);
    st.import().unwrap();
    st.exchange_keys().unwrap();
    st.clearing_releases().unwrap();
    st.relay().unwrap();
    st
}

fn finish_and_check(st: &mut Settlement) {
    st.relay().unwrap();
    st.confirm().unwrap();
    let clearing = st.clearing().unwrap();
    let doc = st.he_query().unwrap();
    st.he_contribute(&doc, None).unwrap();
    let aggregate = st.he_aggregate().unwrap();
    let reference = st.reference().unwrap();
    let problems = st.check(&reference, &clearing, &aggregate).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_province_killed_mid_release_resumes_and_the_figures_are_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut st = small(tmp.path(), 3, 9000, 2);
    st.import().unwrap();
    st.exchange_keys().unwrap();
    // Slow the victim's sending so the release can be cut: small chunks, 25 per second.
    let victim = "110000";
    st.net.stop(victim, Duration::from_secs(10)).unwrap();
    let cfg = st.net.node(victim).unwrap().home.join("pdx.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("chunk_records = 4096", "chunk_records = 20")
            .replace(
                "rate_limit_chunks_per_sec = 0",
                "rate_limit_chunks_per_sec = 25",
            ),
    )
    .unwrap();
    st.net.start(victim).unwrap();
    st.grant_clearing(victim).unwrap();
    let fetch = Command::new(st.net.pdx_path())
        .args(st.fetch_args(victim).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let national = st.net.home(NATIONAL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored_before = loop {
        let v = st.net.pdx_json(&["releases", "--home", &national]).unwrap();
        let stored = v
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["direction"] == "in" && r["peer"] == victim)
            .and_then(|r| r["stored"].as_u64())
            .unwrap_or(0);
        if stored >= 5 {
            break stored;
        }
        assert!(Instant::now() < deadline, "the release never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    st.net.kill(victim).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    st.net.start(victim).unwrap();
    let v = json_of(fetch);
    assert!(
        v["resumed_from"].as_u64().unwrap_or(0) >= stored_before,
        "resumed, not restarted: {v}"
    );
    st.releases
        .insert(victim.into(), v["release"].as_str().unwrap().into());
    // The other provinces, then the rest of the month: equal to the reference,
    // so nothing was lost or counted twice.
    st.clearing_releases().unwrap();
    let receives = entries(&st.net, NATIONAL, "receive");
    assert_eq!(receives.len(), 3, "one receive per province, no duplicate");
    finish_and_check(&mut st);
    st.net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_malformed_contribution_is_refused_and_the_aggregate_completes_with_k_met() {
    let tmp = tempfile::tempdir().unwrap();
    let mut st = small(tmp.path(), 4, 8000, 3);
    st.import().unwrap();
    let doc = st.he_query().unwrap();
    let honest: Vec<String> = st.provinces[..3].to_vec();
    st.he_contribute(&doc, Some(&honest)).unwrap();
    // The fourth province's contribution is altered after signing.
    let bad_dept = st.provinces[3].clone();
    let bad_home = st.net.home(&bad_dept).unwrap();
    let file = tmp.path().join("contribution.sub");
    let contribute = st.contribute_args(&bad_dept, &doc).unwrap();
    let file_arg = s(&file);
    let mut to_file = as_strs(&contribute);
    to_file.extend(["--out", &file_arg]);
    st.net.pdx_ok(&to_file).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let refused_before = entries(&st.net, NATIONAL, "refused-request").len();
    let out = st
        .net
        .pdx(&[
            "submit",
            "--home",
            &bad_home,
            "--file",
            &s(&file),
            "--to",
            NATIONAL,
        ])
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = entries(&st.net, NATIONAL, "refused-request");
    assert_eq!(refused.len(), refused_before + 1, "the refusal is audited");
    assert_eq!(refused.last().unwrap()["counterparty"], bad_dept.as_str());
    // The aggregate completes over the three honest contributions (k = 3).
    let aggregate = st.he_aggregate().unwrap();
    assert_eq!(aggregate["contributors"].as_array().unwrap().len(), 3);
    let reference = st.reference().unwrap();
    let want = reference.aggregate(&honest);
    let got: usize = aggregate["categories"].as_array().unwrap().len();
    assert_eq!(got, want.len());
    for c in aggregate["categories"].as_array().unwrap() {
        let (fen, count) = want[c["category"].as_str().unwrap()];
        assert_eq!(c["count"].as_u64().unwrap(), count);
        assert_eq!(
            pdx_schemas::types::decimal_to_units(c["sums"][0].as_str().unwrap(), 2).unwrap() as i64,
            fen
        );
    }
    // The fourth province contributes properly after the sum was decrypted: a
    // second sum over four would reveal its figures by difference; refused.
    st.net.pdx_ok(&as_strs(&contribute)).unwrap();
    let out = st.net.pdx(&as_strs(&st.aggregate_args().unwrap())).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("already decrypted"), "{err}");
    st.net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn fewer_than_k_contributions_are_refused_by_the_aggregator() {
    let tmp = tempfile::tempdir().unwrap();
    let mut st = small(tmp.path(), 3, 3000, 3);
    st.import().unwrap();
    let doc = st.he_query().unwrap();
    let two: Vec<String> = st.provinces[..2].to_vec();
    st.he_contribute(&doc, Some(&two)).unwrap();
    let out = st.net.pdx(&as_strs(&st.aggregate_args().unwrap())).unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least k = 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = st
        .net
        .pdx(&[
            "he",
            "combine",
            "--home",
            &st.net.home(pdx_testnet::settlement::BUREAU).unwrap(),
            "--query",
            pdx_testnet::settlement::QUERY,
        ])
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "no aggregate, nothing to decrypt"
    );
    st.net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_province_revoked_mid_run_is_refused_from_then_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut st = relayed(tmp.path(), 3, 3000);
    let revoked = st.provinces[2].clone();
    st.net.revoke(&revoked).unwrap();
    let refused_before = entries(&st.net, NATIONAL, "refused-request").len();
    let out = st
        .net
        .pdx(&as_strs(&st.confirm_args(&revoked).unwrap()))
        .unwrap();
    assert!(!out.status.success(), "a revoked province cannot confirm");
    let refused = entries(&st.net, NATIONAL, "refused-request");
    assert!(refused.len() > refused_before, "the refusal is audited");
    // The others confirm what they can; records from the revoked province can
    // no longer be verified (its manifest's certificate is revoked): refused,
    // fail closed. The clearing node reports the missing confirmations.
    for p in &st.provinces[..2] {
        let out = st.net.pdx(&as_strs(&st.confirm_args(p).unwrap())).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(
            err.contains("1 releases confirmed; 1 could not be") && err.contains("Revoked"),
            "{err}"
        );
    }
    let clearing = st.clearing().unwrap();
    let unconfirmed = clearing["unconfirmed"].as_array().unwrap();
    assert!(
        unconfirmed
            .iter()
            .any(|u| u.as_str().unwrap().starts_with(&revoked)),
        "{unconfirmed:?}"
    );
    st.net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_province_that_deletes_a_log_entry_is_flagged_by_the_regulator() {
    let tmp = tempfile::tempdir().unwrap();
    let mut st = relayed(tmp.path(), 2, 2000);
    st.confirm().unwrap();
    // The national node's later contacts witness the province's checkpoints.
    let regulator = st.regulator().unwrap();
    assert!(
        regulator["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["exit"] == 0),
        "{regulator}"
    );
    // The province hides that it sent its records: delete its `send` entry in RocksDB.
    let cheat = st.provinces[0].clone();
    let send = entries(&st.net, &cheat, "send");
    let seq = send[0]["seq"].as_u64().unwrap();
    st.net.stop(&cheat, Duration::from_secs(10)).unwrap();
    let db_path = st.net.node(&cheat).unwrap().home.join("db");
    {
        let opts = rocksdb::Options::default();
        let cfs = rocksdb::DB::list_cf(&opts, &db_path).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &db_path, &cfs).unwrap();
        let cf = db.cf_handle("audit.entries").unwrap();
        assert!(db.get_cf(&cf, seq.to_be_bytes()).unwrap().is_some());
        db.delete_cf(&cf, seq.to_be_bytes()).unwrap();
    }
    let dir = tmp.path().join("regulator");
    let bundle = s(&dir.join(format!("{cheat}.tampered.bundle")));
    let exported = st.net.pdx(&[
        "audit",
        "export",
        "--home",
        &st.net.home(&cheat).unwrap(),
        "--out",
        &bundle,
    ]);
    let ca = s(&st.net.ca_dir().join("ca.crt"));
    let witness = s(&dir.join(format!("{NATIONAL}.bundle")));
    match exported {
        Ok(o) if o.status.success() => {
            let out = st
                .net
                .pdx(&[
                    "audit",
                    "verify",
                    &bundle,
                    "--witness",
                    &witness,
                    "--ca",
                    &ca,
                ])
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(2),
                "tampered: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        other => panic!("export of the damaged log should still produce a bundle: {other:?}"),
    }
    st.net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_confirmation_that_was_not_delivered_is_sent_again_by_all() {
    let tmp = tempfile::tempdir().unwrap();
    let mut st = relayed(tmp.path(), 2, 2000);
    let p = st.provinces[0].clone();
    let home = st.net.home(&p).unwrap();
    // The clearing node is down: the confirmation is signed and audited,
    // but not delivered, and the command says so.
    st.net.stop(NATIONAL, Duration::from_secs(10)).unwrap();
    let out = st.net.pdx(&as_strs(&st.confirm_args(&p).unwrap())).unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = entries(&st.net, &p, "confirm");
    assert_eq!(signed.len(), 1, "{signed:#?}");
    assert!(entries(&st.net, &p, "deliver").is_empty());
    let status = st.net.pdx_json(&["status", "--home", &home]).unwrap();
    let pending = status["documents_not_yet_delivered"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{status:#}");
    assert_eq!(pending[0]["kind"], "settlement-confirmation");
    assert_eq!(pending[0]["digest"], signed[0]["payload_digest"]);

    // Back up: `--all` sends that same signed document, and only the
    // acknowledgement makes it done.
    st.net.start(NATIONAL).unwrap();
    let sent = st
        .net
        .pdx_json(&as_strs(&st.confirm_args(&p).unwrap()))
        .unwrap();
    let sent = sent.as_array().unwrap();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["resent"], true);
    assert_eq!(sent[0]["accepted"], signed[0]["payload_digest"]);
    assert_eq!(entries(&st.net, &p, "confirm").len(), 1, "not signed twice");
    let delivered = entries(&st.net, &p, "deliver");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["payload_digest"], signed[0]["payload_digest"]);
    assert_eq!(delivered[0]["counterparty"], NATIONAL);
    let received = entries(&st.net, NATIONAL, "confirm");
    assert!(
        received.iter().any(|e| e["counterparty"] == p.as_str()),
        "{received:#?}"
    );
    // Nothing is left to do.
    let again = st
        .net
        .pdx_json(&as_strs(&st.confirm_args(&p).unwrap()))
        .unwrap();
    assert_eq!(again.as_array().map(Vec::len), Some(0), "{again:#}");
    let status = st.net.pdx_json(&["status", "--home", &home]).unwrap();
    assert_eq!(
        status["documents_not_yet_delivered"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    st.net.stop_all(Duration::from_secs(10)).unwrap();
}

/// `pdx he partial` on `member`.
fn partial(st: &Settlement, member: &str) {
    st.net
        .pdx_ok(&[
            "he",
            "partial",
            "--home",
            &st.net.home(member).unwrap(),
            "--query",
            QUERY,
        ])
        .unwrap();
}

fn combine(st: &Settlement) -> std::process::Output {
    st.net
        .pdx(&[
            "he",
            "combine",
            "--home",
            &st.net.home(BUREAU).unwrap(),
            "--query",
            QUERY,
            "--json",
        ])
        .unwrap()
}

#[test]
fn a_three_of_three_committee_refuses_to_combine_without_every_member_and_names_who_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut st = small(tmp.path(), 3, 3000, 2);
    st.import().unwrap();
    let doc = st.he_query_with(3).unwrap();
    st.he_contribute(&doc, None).unwrap();
    st.net
        .pdx_ok(&as_strs(&st.aggregate_args().unwrap()))
        .unwrap();
    // No member can decrypt alone: the bureau, which combines, has no key.
    let out = st
        .net
        .pdx(&[
            "he",
            "decrypt",
            "--home",
            &st.net.home(BUREAU).unwrap(),
            "--query",
            QUERY,
        ])
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("committee"));
    partial(&st, BUREAU);
    partial(&st, NDA);
    let refused_before = entries(&st.net, BUREAU, "refused-request").len();
    let out = combine(&st);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("missing: {NATIONAL}")) && err.contains("at least 3"),
        "{err}"
    );
    let refused = entries(&st.net, BUREAU, "refused-request");
    assert_eq!(refused.len(), refused_before + 1, "the refusal is audited");
    assert!(
        refused.last().unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains(NATIONAL)
    );
    // A member partially decrypts once: a second run sends nothing new.
    let again = st
        .net
        .pdx(&[
            "he",
            "partial",
            "--home",
            &st.net.home(NDA).unwrap(),
            "--query",
            QUERY,
        ])
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    partial(&st, NATIONAL);
    let out = combine(&st);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["partials_from"].as_array().unwrap().len(), 3);
    let want = st.reference().unwrap().aggregate(&st.provinces);
    assert_eq!(d["categories"].as_array().unwrap().len(), want.len());
    for c in d["categories"].as_array().unwrap() {
        let (fen, count) = want[c["category"].as_str().unwrap()];
        assert_eq!(c["count"].as_u64().unwrap(), count);
        assert_eq!(
            pdx_schemas::types::decimal_to_units(c["sums"][0].as_str().unwrap(), 2).unwrap() as i64,
            fen
        );
    }
    // Each member's log holds its partial decryption of this aggregate.
    for m in [BUREAU, NATIONAL, NDA] {
        let partials: Vec<_> = entries(&st.net, m, "aggregate-decrypt")
            .into_iter()
            .filter(|e| {
                e["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("partial decryption"))
            })
            .collect();
        assert_eq!(partials.len(), 1, "{m}");
    }
    st.net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn an_aggregate_a_member_missed_is_sent_again_as_signed_and_the_committee_still_decrypts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut st = small(tmp.path(), 3, 3000, 2);
    st.import().unwrap();
    let doc = st.he_query().unwrap();
    st.he_contribute(&doc, None).unwrap();
    st.net.stop(NDA, Duration::from_secs(10)).unwrap();
    let out = st.net.pdx(&as_strs(&st.aggregate_args().unwrap())).unwrap();
    assert!(!out.status.success(), "the data administration is down");
    st.net.start(NDA).unwrap();
    // Again: the aggregate already signed, not a second sum.
    let again = st
        .net
        .pdx_json(&as_strs(&st.aggregate_args().unwrap()))
        .unwrap();
    assert_eq!(again["resent"], true, "{again}");
    assert_eq!(again["also_to"], serde_json::json!([NDA]), "{again}");
    partial(&st, BUREAU);
    partial(&st, NDA);
    let out = combine(&st);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["aggregate_digest"], again["digest"]);
    st.net.stop_all(Duration::from_secs(10)).unwrap();
}

/// A contribution the cheating province signs itself: `limbs` encrypted and
/// proven under the query's key and CRS, then `tamper`ed after proving.
fn hand_built_contribution(
    st: &Settlement,
    dept: &str,
    query_file: &str,
    out: &std::path::Path,
    tamper: impl FnOnce(&mut pdx_node::service::aggregate::ContributionBody),
) {
    use pdx_crypto::SignatureDomain;
    use pdx_crypto::he;
    use pdx_node::service::aggregate::{
        ContributionBody, ContributionSubmission, check_query, crs, proof_metadata,
    };
    use pdx_node::service::documents::{self, Certified, KIND_HE_CONTRIBUTION, SubmissionFile};
    let node = pdx_node::service::open_node(
        &pdx_node::config::Home::new(st.net.home(dept).unwrap()),
        None,
    )
    .unwrap();
    let query_doc: Certified = documents::read_file(query_file, "query").unwrap();
    let query = check_query(&node.cert_checker().unwrap(), &query_doc).unwrap();
    let the_crs = crs::load(&node, &query.committee.as_ref().unwrap().crs.unwrap()).unwrap();
    let limbs = vec![0u64; query.slots()];
    let metadata = proof_metadata(&query_doc.digest(), dept, query.deadline_ms);
    let (list, proofs) =
        he::proof::encrypt_and_prove(&query.public_key().unwrap(), &the_crs, &limbs, &metadata)
            .unwrap();
    let mut body = ContributionBody {
        version: 1,
        query_id: query.query_id.clone(),
        query_digest: query_doc.digest(),
        contributor: dept.to_string(),
        dataset_digest: pdx_crypto::Digest([0; 32]),
        records: 1,
        created_ms: pdx_audit::store::now_ms(),
        slots: query.slots() as u64,
        ciphertext: he::words_to_bytes(list.words()),
        proofs: proofs
            .iter()
            .map(|p| serde_bytes::ByteBuf::from(p.to_bytes().unwrap()))
            .collect(),
    };
    tamper(&mut body);
    let contribution = Certified::sign(&node, SignatureDomain::HeContribution, &body).unwrap();
    let sub = SubmissionFile {
        kind: KIND_HE_CONTRIBUTION.into(),
        document: pdx_crypto::wire::to_cbor(&ContributionSubmission {
            query: query_doc,
            contribution,
        })
        .unwrap(),
    };
    std::fs::write(out, pdx_crypto::wire::to_cbor(&sub).unwrap()).unwrap();
}

#[test]
fn an_out_of_range_or_unproven_contribution_is_refused_and_audited_and_the_proven_sum_equals_the_reference()
 {
    let tmp = tempfile::tempdir().unwrap();
    let mut st = Settlement::setup(
        tmp.path(),
        Options {
            provinces: 3,
            records: 3000,
            seed: 11,
            k: 2,
            suite: pdx_crypto::Suite::Intl,
            proofs: true,
        },
    )
    .unwrap();
    st.import().unwrap();
    let doc = st.he_query().unwrap();
    let cheat = st.provinces[2].clone();
    let honest = st.provinces[..2].to_vec();
    st.he_contribute(&doc, Some(&honest)).unwrap();

    // The cheat signs two contributions by hand: one whose last slot carries
    // 2^12 more than a limb holds (the proof was made before), one with no proofs.
    st.net.stop(&cheat, Duration::from_secs(10)).unwrap();
    let out_of_range = tmp.path().join("out-of-range.sub");
    let unproven = tmp.path().join("unproven.sub");
    hand_built_contribution(&st, &cheat, &doc, &out_of_range, |b| {
        let n = b.ciphertext.len();
        let mut last = u64::from_le_bytes(b.ciphertext[n - 8..].try_into().unwrap());
        last = last.wrapping_add(1 << (12 + 48));
        b.ciphertext[n - 8..].copy_from_slice(&last.to_le_bytes());
    });
    hand_built_contribution(&st, &cheat, &doc, &unproven, |b| b.proofs.clear());
    st.net.start(&cheat).unwrap();
    let cheat_home = st.net.home(&cheat).unwrap();
    for (file, why) in [
        (&out_of_range, "does not verify"),
        (&unproven, "carries 0 proofs"),
    ] {
        let before = entries(&st.net, NATIONAL, "refused-request").len();
        let out = st
            .net
            .pdx(&[
                "submit",
                "--home",
                &cheat_home,
                "--file",
                &s(file),
                "--to",
                NATIONAL,
            ])
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(err.contains(why), "{err}");
        let refused = entries(&st.net, NATIONAL, "refused-request");
        assert_eq!(refused.len(), before + 1, "the refusal is audited");
        assert_eq!(refused.last().unwrap()["counterparty"], cheat.as_str());
        assert!(
            refused.last().unwrap()["detail"]
                .as_str()
                .unwrap()
                .contains(why)
        );
    }

    // Nothing of the cheat's was kept: its honest, proven contribution is accepted.
    st.he_contribute(&doc, Some(std::slice::from_ref(&cheat)))
        .unwrap();
    let aggregate = st.he_aggregate().unwrap();
    assert_eq!(aggregate["contributors"].as_array().unwrap().len(), 3);
    let problems =
        pdx_testnet::settlement::aggregate_problems(&st.reference().unwrap(), &aggregate);
    assert!(problems.is_empty(), "{problems:?}");

    // Offline, a regulator re-verifies every proof, and needs the CRS to.
    let national = st.net.home(NATIONAL).unwrap();
    let bundle = s(&tmp.path().join("query.bundle"));
    st.net
        .pdx_ok(&[
            "he", "export", "--home", &national, "--query", QUERY, "--out", &bundle,
        ])
        .unwrap();
    let ca = s(&st.net.ca_dir().join("ca.crt"));
    let verify = ["he", "verify-sum", "--bundle", &bundle, "--ca", &ca];
    let out = st.net.pdx(&verify).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("--crs"), "{err}");
    let crs = s(&tmp.path().join("he-proofs.crs"));
    let mut with_crs = verify.to_vec();
    with_crs.extend(["--crs", &crs]);
    assert_eq!(st.net.pdx_json(&with_crs).unwrap()["verdict"], "ok");
    st.net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn several_releases_are_confirmed_in_one_signed_batch_and_each_is_audited_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let mut st = relayed(tmp.path(), 3, 3000);
    let p = st.provinces[0].clone();
    let sent = st
        .net
        .pdx_json(&as_strs(&st.confirm_args(&p).unwrap()))
        .unwrap();
    let sent = sent.as_array().unwrap();
    assert_eq!(sent.len(), 2, "two treatment provinces: {sent:#?}");
    let digest = sent[0]["digest"].as_str().unwrap().to_string();
    assert_ne!(sent[0]["release"], sent[1]["release"]);
    assert_eq!(sent[1]["digest"], digest.as_str(), "one document");
    assert_eq!(sent[0]["accepted"], digest.as_str());
    // One `confirm` entry per release on the confirmer and on the clearing
    // node, each naming its release and the batch's digest.
    for (dept, counterparty) in [(p.as_str(), NATIONAL), (NATIONAL, p.as_str())] {
        let confirms: Vec<serde_json::Value> = entries(&st.net, dept, "confirm")
            .into_iter()
            .filter(|e| e["counterparty"] == counterparty)
            .collect();
        assert_eq!(confirms.len(), 2, "{dept}: {confirms:#?}");
        for (e, s) in confirms.iter().zip(sent) {
            assert_eq!(e["payload_digest"], digest.as_str(), "{e:#}");
            assert_eq!(e["release"], s["release"], "{e:#}");
        }
    }
    let delivered = entries(&st.net, &p, "deliver");
    assert_eq!(delivered.len(), 1, "one document delivered: {delivered:#?}");
    // The clearing node reads both confirmations out of the batch.
    st.confirm().unwrap();
    let clearing = st.clearing().unwrap();
    let from_p = clearing["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["insured"] == p.as_str() && c["confirmed_records"].as_u64() > Some(0))
        .count();
    assert_eq!(from_p, 2, "{clearing:#}");
    assert!(
        clearing["unconfirmed"].as_array().unwrap().is_empty(),
        "{clearing:#}"
    );
    st.net.stop_all(Duration::from_secs(10)).unwrap();
}
