//! Field encryption with real nodes: a relay forwards a release whose identity
//! fields are sealed per record for the insured province and cannot open them;
//! the final recipient can. Key documents come through the relay's directory
//! and are trusted for their signature and certificate, not the channel. Keys
//! rotate without breaking old releases. Data at rest holds no clear values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::time::Duration;

const CLEARING_SCHEMA: &str = r#"
[dataset]
id = "claims"
title = "cross-province claims (test)"
grade = "important"
sharing = "conditional"
personal_information = true

[[field]]
name = "setl_id"
type = "string"
identifier = "other"
pi = "personal"

[[field]]
name = "certno"
type = "resident-id"
identifier = "direct-identifier"
pi = "sensitive-personal"

[[field]]
name = "insuplc_admdvs"
type = "string"
regex = "[1-9][0-9]{5}"
identifier = "quasi-identifier"
pi = "personal"

[[field]]
name = "amount"
type = "decimal"
precision = 12
scale = 2
identifier = "other"
pi = "personal"

[profile.clearing]
[profile.clearing.fields]
setl_id = "keep"
certno = { encrypt_for = { field = "insuplc_admdvs", map = "admdvs-province" } }
insuplc_admdvs = "keep"
amount = "keep"
"#;

/// A valid resident ID used nowhere else: what the at-rest scan looks for.
fn marker() -> String {
    let first17 = "65010219991231888";
    let check = pdx_schemas::resident_id::check_char(first17.as_bytes())
        .map(char::from)
        .unwrap();
    format!("{first17}{check}")
}

fn claims_csv() -> String {
    let mut s = String::from("setl_id,certno,insuplc_admdvs,amount\n");
    let ids = ["11010519491231002X", "440524188001010014"];
    for i in 0..40 {
        // Rows for 110000 (Beijing) and 310000 (Shanghai).
        let (region, id) = if i % 2 == 0 {
            ("110105", ids[0])
        } else {
            ("310101", ids[1])
        };
        s.push_str(&format!("S{i:04},{id},{region},{}.50\n", 100 + i));
    }
    s.push_str(&format!("S9999,{},110105,1.00\n", marker()));
    s
}

fn find_bytes(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn relays_forward_what_they_cannot_read_and_recipients_open_it() {
    relays_forward_what_they_cannot_read_and_recipients_open_it_in(pdx_crypto::Suite::Intl);
}

#[test]
fn relays_forward_what_they_cannot_read_and_recipients_open_it_under_gm() {
    relays_forward_what_they_cannot_read_and_recipients_open_it_in(pdx_crypto::Suite::Gm);
}

fn relays_forward_what_they_cannot_read_and_recipients_open_it_in(suite: pdx_crypto::Suite) {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = network_in(
        suite,
        tmp.path(),
        &[
            ("440000", "Guangdong"),
            ("100000", "National"),
            ("110000", "Beijing"),
            ("310000", "Shanghai"),
        ],
    );
    let (gd, nat, bj, sh) = (
        net.home("440000").unwrap(),
        net.home("100000").unwrap(),
        net.home("110000").unwrap(),
        net.home("310000").unwrap(),
    );

    let schema = write(tmp.path(), "claims.toml", CLEARING_SCHEMA);
    let csv = write(tmp.path(), "claims.csv", &claims_csv());
    net.pdx_ok(&[
        "import",
        "--home",
        &gd,
        "--schema",
        &schema,
        "--csv",
        &csv,
        "--dataset",
        "claims",
    ])
    .unwrap();
    net.pdx_ok(&[
        "grant",
        "--home",
        &gd,
        "--dataset",
        "claims",
        "--to",
        "100000",
        "--profile",
        "clearing",
        "--purpose",
        "clearing",
        "--agreement",
        "SETTLE-2026",
    ])
    .unwrap();
    // Without the recipients' keys the release is refused (fail closed).
    let refused = net
        .pdx(&[
            "fetch",
            "--home",
            &nat,
            "--peer",
            "440000",
            "--dataset",
            "claims",
            "--profile",
            "clearing",
        ])
        .unwrap();
    assert_eq!(refused.status.code(), Some(4));
    // Every missing recipient at once, and the node where the keys must be
    // fetched: the producing province, not the national node that asked.
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("rule encrypt-for-needs-key")
            && stderr.contains("node 440000, which produces the release")
            && stderr.contains("2 recipient(s): 110000, 310000")
            && stderr.contains("--of 110000,310000"),
        "{stderr}"
    );

    // The national node meets the provinces (their key documents reach its directory);
    // Guangdong takes those documents from the national directory.
    net.pdx_ok(&["catalog", "--home", &nat, "--peer", "110000"])
        .unwrap();
    net.pdx_ok(&["catalog", "--home", &nat, "--peer", "310000"])
        .unwrap();
    let got = net
        .pdx_json(&["keys", "fetch", "--home", &gd, "--peer", "100000"])
        .unwrap();
    assert!(got["stored"].as_u64().unwrap() >= 2, "{got}");
    let keys = net.pdx_json(&["keys", "list", "--home", &gd]).unwrap();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["dept"] == "110000" && k["verified_now"] == true)
    );

    let fetched = net
        .pdx_json(&[
            "fetch",
            "--home",
            &nat,
            "--peer",
            "440000",
            "--dataset",
            "claims",
            "--profile",
            "clearing",
        ])
        .unwrap();
    let release = fetched["release"].as_str().unwrap().to_string();

    // The relay reads amounts and regions but not identities.
    let at_nat = tmp.path().join("nat.csv");
    let e = net
        .pdx_json(&[
            "export",
            "--home",
            &nat,
            "--release",
            &release,
            "--out",
            &s(&at_nat),
        ])
        .unwrap();
    assert_eq!(e["values_decrypted"], 0);
    assert_eq!(e["sealed_for_others"], 41);
    let text = std::fs::read_to_string(&at_nat).unwrap();
    assert!(!text.contains("11010519491231002X") && text.contains("100.50"));

    // Forward each province its own records.
    let f = net
        .pdx_json(&[
            "forward",
            "--home",
            &nat,
            "--release",
            &release,
            "--to",
            "110000",
        ])
        .unwrap();
    assert_eq!(f["records"], 21);
    net.pdx_json(&[
        "forward",
        "--home",
        &nat,
        "--release",
        &release,
        "--to",
        "310000",
    ])
    .unwrap();
    let again = net
        .pdx_json(&[
            "forward",
            "--home",
            &nat,
            "--release",
            &release,
            "--to",
            "110000",
        ])
        .unwrap();
    assert_eq!(
        again["already_delivered"], true,
        "forwarding twice is idempotent"
    );

    let at_bj = tmp.path().join("bj.csv");
    let e = net
        .pdx_json(&[
            "export",
            "--home",
            &bj,
            "--release",
            &release,
            "--out",
            &s(&at_bj),
        ])
        .unwrap();
    assert_eq!(e["values_decrypted"], 21);
    let text = std::fs::read_to_string(&at_bj).unwrap();
    assert!(text.contains("11010519491231002X") && text.contains(&marker()));
    assert!(
        !text.contains("440524188001010014"),
        "Beijing receives only its own insured's records"
    );
    let at_sh = tmp.path().join("sh.csv");
    let e = net
        .pdx_json(&[
            "export",
            "--home",
            &sh,
            "--release",
            &release,
            "--out",
            &s(&at_sh),
        ])
        .unwrap();
    assert_eq!(e["values_decrypted"], 20);
    assert!(!entries(&net, "110000", "decrypt").is_empty());
    let recv = &entries(&net, "110000", "receive")[0];
    assert_eq!(recv["counterparty"], "100000");
    assert!(
        recv["detail"]
            .as_str()
            .unwrap()
            .contains("original sender 440000")
    );

    // Encryption at rest: no clear identity in any store file (the scan itself
    // finds the marker in the exported CSV, so it can fail).
    assert_eq!(
        find_bytes(tmp.path(), marker().as_bytes()).len(),
        2,
        "the marker is in the source and the export"
    );
    for dept in ["440000", "100000", "110000"] {
        let db = net.node(dept).unwrap().home.join("db");
        assert_eq!(
            find_bytes(&db, marker().as_bytes()),
            Vec::<String>::new(),
            "{dept} stores a clear value"
        );
    }

    // Rotation: Beijing rotates its encryption and signing keys; the old
    // release still opens; the audit log still verifies across the rotation.
    net.pdx_ok(&["key", "rotate", "--home", &bj, "--kind", "encryption"])
        .unwrap();
    net.pdx_ok(&["key", "rotate", "--home", &bj, "--kind", "signing"])
        .unwrap();
    let e = net
        .pdx_json(&[
            "export",
            "--home",
            &bj,
            "--release",
            &release,
            "--out",
            &s(&at_bj),
        ])
        .unwrap();
    assert_eq!(e["values_decrypted"], 21, "old keys stay until retired");
    assert!(entries(&net, "110000", "key-rotate").len() >= 2);
    let bundles: Vec<std::path::PathBuf> = ["440000", "100000", "110000", "310000"]
        .iter()
        .map(|d| tmp.path().join(format!("{d}.bundle")))
        .collect();
    for (d, b) in ["440000", "100000", "110000", "310000"]
        .iter()
        .zip(&bundles)
    {
        net.pdx_ok(&[
            "audit",
            "export",
            "--home",
            &net.home(d).unwrap(),
            "--out",
            &s(b),
        ])
        .unwrap();
    }
    let ca = s(&net.ca_dir().join("ca.crt"));
    let v = net
        .pdx(&["audit", "verify", &s(&bundles[2]), "--ca", &ca, "--json"])
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["verdict"], "valid", "{report:#}");
    assert_eq!(report["keys"].as_array().unwrap().len(), 2);
    let rec = net
        .pdx(&[
            "audit",
            "reconcile",
            &s(&bundles[0]),
            &s(&bundles[1]),
            &s(&bundles[2]),
            &s(&bundles[3]),
            "--ca",
            &ca,
            "--json",
        ])
        .unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&rec.stdout).unwrap();
    assert_eq!(rec["matched"], 3, "{rec:#}");
    assert_eq!(rec["mismatches"].as_array().unwrap().len(), 0, "{rec:#}");
    net.stop_all(Duration::from_secs(10)).unwrap();
}
