//! Peer witnessing with real nodes: a node that rolls its log back and writes a
//! different history is caught by the peer that cosigned its earlier
//! checkpoints (evidence kept, alarm logged, connection refused), and the
//! regulator's verifier flags its bundle as tampered using the peer's bundle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_rolled_back_log_is_caught_by_its_witness_and_by_the_regulator() {
    a_rolled_back_log_is_caught_by_its_witness_and_by_the_regulator_in(pdx_crypto::Suite::Intl);
}

#[test]
fn a_rolled_back_log_is_caught_by_its_witness_and_by_the_regulator_under_gm() {
    a_rolled_back_log_is_caught_by_its_witness_and_by_the_regulator_in(pdx_crypto::Suite::Gm);
}

fn a_rolled_back_log_is_caught_by_its_witness_and_by_the_regulator_in(suite: pdx_crypto::Suite) {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = network_in(
        suite,
        tmp.path(),
        &[("440000", "Guangdong"), ("100000", "National")],
    );
    let (a, b) = (net.home("440000").unwrap(), net.home("100000").unwrap());
    let db = net.node("440000").unwrap().home.join("db");
    let backup = tmp.path().join("a-db-backup");

    // B witnesses A twice; between the two, A's store is backed up.
    net.pdx_ok(&["catalog", "--home", &b, "--peer", "440000"])
        .unwrap();
    net.stop("440000", Duration::from_secs(10)).unwrap();
    copy_dir(&db, &backup);
    net.start("440000").unwrap();
    let schema = write(tmp.path(), "people.toml", PEOPLE_SCHEMA);
    let csv = write(tmp.path(), "people.csv", PEOPLE_CSV);
    net.pdx_ok(&[
        "import",
        "--home",
        &a,
        "--schema",
        &schema,
        "--csv",
        &csv,
        "--dataset",
        "people",
    ])
    .unwrap();
    net.pdx_ok(&["catalog", "--home", &b, "--peer", "440000"])
        .unwrap();
    assert!(entries(&net, "100000", "alarm").is_empty());

    // A's operator rolls the store back (erasing the import) and writes a new history.
    net.stop("440000", Duration::from_secs(10)).unwrap();
    std::fs::remove_dir_all(&db).unwrap();
    copy_dir(&backup, &db);
    net.start("440000").unwrap();
    for _ in 0..3 {
        net.pdx_ok(&[
            "peer",
            "add",
            "--home",
            &a,
            "--dept",
            "999999",
            "--addr",
            "127.0.0.1:9",
        ])
        .unwrap();
    }
    let refused = net
        .pdx(&["catalog", "--home", &b, "--peer", "440000"])
        .unwrap();
    assert!(
        !refused.status.success(),
        "the witness must refuse a forked log"
    );
    let alarms = entries(&net, "100000", "alarm");
    assert_eq!(alarms.len(), 1, "{alarms:#?}");
    assert!(
        alarms[0]["detail"]
            .as_str()
            .unwrap()
            .contains("fork evidence for log 440000:")
    );

    // The regulator: A's bundle alone looks consistent; B's bundle exposes it.
    let (ba, bb) = export_bundles(&net, tmp.path(), &a, &b);
    let ca = s(&net.ca_dir().join("ca.crt"));
    let alone = net.pdx(&["audit", "verify", &s(&ba), "--ca", &ca]).unwrap();
    assert_eq!(
        alone.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&alone.stdout)
    );
    let with_witness = net
        .pdx(&[
            "audit",
            "verify",
            &s(&ba),
            "--witness",
            &s(&bb),
            "--ca",
            &ca,
            "--json",
        ])
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&with_witness.stdout).unwrap();
    assert_eq!(with_witness.status.code(), Some(2), "{report:#}");
    assert_eq!(report["verdict"], "tampered");
    let cases: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["case"].as_str())
        .collect();
    assert!(
        cases.iter().any(|c| *c == "fork" || *c == "truncated-tail"),
        "{cases:?}"
    );
    // B's own log is fine.
    let b_ok = net.pdx(&["audit", "verify", &s(&bb), "--ca", &ca]).unwrap();
    assert_eq!(b_ok.status.code(), Some(0));
    net.stop_all(Duration::from_secs(10)).unwrap();
}
