//! The shipped analytics profile under its stated attacker model
//! (schemas/medical_insurance/settlement.toml): the encounter type is a
//! quasi-identifier, and a realistic monthly extract still reaches k >= 10 and
//! l >= 3 within the suppression budget. `--assume-qi` reports what a wider
//! attacker would achieve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_testnet::Testnet;

#[test]
fn the_analytics_profile_holds_with_med_type_as_a_quasi_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    let home = net.home("440000").unwrap();
    import_settlement(&net, dir.path(), "440000", "m", 245_000, Some("440000"));
    let out = dir.path().join("o.csv").display().to_string();
    let report = dir.path().join("r.json").display().to_string();
    let v = net
        .pdx_json(&[
            "release",
            "preview",
            "--home",
            &home,
            "--dataset",
            "m",
            "--profile",
            "analytics",
            "--agreement",
            "A",
            "--out",
            &out,
            "--report",
            &report,
            "--assume-qi",
            "fund_pay_sumamt",
        ])
        .unwrap();
    let r = &v["report"];
    let qis: Vec<&str> = r["quasi_identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap())
        .collect();
    assert!(qis.contains(&"med_type"), "{qis:?}");
    assert!(r["k_achieved"].as_u64().unwrap() >= 10, "{r}");
    assert!(r["l_achieved"].as_u64().unwrap() >= 3, "{r}");
    let suppressed = r["records_suppressed"].as_f64().unwrap() / r["records_in"].as_f64().unwrap();
    assert!(suppressed <= 0.05, "{r}");
    // The what-if: an attacker who also knew the fund payment (to 10 yuan).
    let w = &v["what_if"];
    assert_eq!(w["assumed_qi"][0], "fund_pay_sumamt");
    assert!(w["k_achieved"].as_u64().unwrap() < 10, "{w}");
    assert!(w["classes_below_k"].as_u64().unwrap() > 0, "{w}");
    // It is in the report file too.
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(file["what_if"]["k_achieved"], w["k_achieved"]);
    // A column the profile does not release cannot be assumed.
    let bad = net
        .pdx(&[
            "release",
            "preview",
            "--home",
            &home,
            "--dataset",
            "m",
            "--profile",
            "analytics",
            "--agreement",
            "A",
            "--out",
            &out,
            "--report",
            &report,
            "--assume-qi",
            "certno",
        ])
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a released column"));
}
