//! The 国密 suite end to end, on real node processes: the settlement month
//! gives the same figures under `gm` as under `intl` for the same seed, the
//! regulator verifies gm bundles (and catches a flipped byte), and no node of
//! one suite talks to a node of the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_crypto::Suite;
use pdx_testnet::settlement::{Options, run};

fn month(dir: &std::path::Path, suite: Suite) -> serde_json::Value {
    run(
        dir,
        Options {
            provinces: 3,
            records: 3000,
            seed: 5,
            k: 2,
            suite,
            proofs: false,
        },
        true,
    )
    .unwrap()
}

#[test]
fn the_settlement_month_gives_the_same_figures_under_both_suites() {
    let tmp = tempfile::tempdir().unwrap();
    let intl = month(&tmp.path().join("intl"), Suite::Intl);
    let gm = month(&tmp.path().join("gm"), Suite::Gm);
    assert_eq!(gm["suite"], "gm");
    assert_eq!(intl["suite"], "intl");
    assert_eq!(gm["clearing"], intl["clearing"]);
    // The decrypted aggregate is the same; only its (randomised, suite-hashed)
    // ciphertext digest differs.
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("aggregate_digest");
        }
        v
    };
    assert_eq!(strip(&gm["aggregate"]), strip(&intl["aggregate"]));
    assert_ne!(
        gm["aggregate"]["aggregate_digest"],
        intl["aggregate"]["aggregate_digest"]
    );
    // Every gm log verified with its peers as witnesses (run() fails otherwise).
    let verdicts = gm["regulator"]["verdicts"].as_array().unwrap();
    // National node, bureau, data administration and 3 provinces.
    assert_eq!(verdicts.len(), 6);
}

#[test]
fn the_regulator_verifies_a_gm_bundle_and_refuses_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let net = network_in(
        Suite::Gm,
        tmp.path(),
        &[("440000", "Guangdong"), ("100000", "National")],
    );
    let (a, b) = (net.home("440000").unwrap(), net.home("100000").unwrap());
    let schema = write(tmp.path(), "people.toml", PEOPLE_SCHEMA);
    let csv = write(tmp.path(), "people.csv", PEOPLE_CSV);
    net.pdx_ok(&import_args(&a, &schema, &csv, "people"))
        .unwrap();
    net.pdx_ok(&["catalog", "--home", &b, "--peer", "440000"])
        .unwrap();
    let bundle = s(&tmp.path().join("gd.bundle"));
    net.pdx_ok(&["audit", "export", "--home", &a, "--out", &bundle])
        .unwrap();
    let ca = s(&net.ca_dir().join("ca.crt"));
    let ok = net
        .pdx_json(&["audit", "verify", &bundle, "--ca", &ca])
        .unwrap();
    assert_eq!(ok["verdict"], "valid", "{ok}");
    // The bundle states its suite and the log id names it.
    let raw = std::fs::read(&bundle).unwrap();
    assert!(raw.windows(3).any(|w| w == b":gm"));
    // Flip one byte inside the last entry: the SM3 tree no longer matches
    // the SM2-signed checkpoint.
    let mut bad = raw.clone();
    let at = bad.len() - 40;
    bad[at] ^= 0x01;
    let flipped = tmp.path().join("flipped.bundle");
    std::fs::write(&flipped, &bad).unwrap();
    let out = net
        .pdx(&["audit", "verify", &s(&flipped), "--ca", &ca, "--json"])
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn a_node_of_one_suite_never_talks_to_a_node_of_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let gm = network_in(
        Suite::Gm,
        &tmp.path().join("gm"),
        &[("440000", "Guangdong")],
    );
    let intl = network_in(
        Suite::Intl,
        &tmp.path().join("intl"),
        &[("100000", "National")],
    );
    let gd_addr = gm.node("440000").unwrap().addr.clone();
    let nat = intl.home("100000").unwrap();
    intl.pdx_ok(&[
        "peer", "add", "--home", &nat, "--dept", "440000", "--addr", &gd_addr,
    ])
    .unwrap();
    let out = intl
        .pdx(&["catalog", "--home", &nat, "--peer", "440000"])
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("gm") && text.contains("intl"), "{text}");
    // The gm node logged the refused handshake.
    let refused = entries(&gm, "440000", "refused-request");
    assert!(!refused.is_empty());
}
