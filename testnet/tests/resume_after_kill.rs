//! Connection loss and node crashes mid-transfer: `pdx fetch` resumes from the
//! last acknowledged chunk, and the result is complete, verified and not
//! duplicated, whether the sender or the receiver was killed (SIGKILL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_testnet::Testnet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: usize = 1200;

fn slow_network(dir: &std::path::Path) -> Testnet {
    let mut net = Testnet::create(dir, "itest").unwrap();
    net.add_node("440000", "Guangdong").unwrap();
    net.add_node("100000", "National").unwrap();
    net.connect_all().unwrap();
    // Small chunks sent at 25 chunks/s: a transfer takes seconds, so it can be cut.
    let cfg = net.node("440000").unwrap().home.join("pdx.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text
        .replace("chunk_records = 4096", "chunk_records = 25")
        .replace(
            "rate_limit_chunks_per_sec = 0",
            "rate_limit_chunks_per_sec = 25",
        );
    std::fs::write(&cfg, text).unwrap();
    net.start_all().unwrap();
    let a = net.home("440000").unwrap();
    let schema = write(dir, "people.toml", PEOPLE_SCHEMA);
    let mut csv = String::from("pid,name,certno,city,amount\n");
    for i in 0..ROWS {
        csv.push_str(&format!(
            "P{i:05},名{i},11010519491231002X,城{},{}.25\n",
            i % 7,
            i
        ));
    }
    let csv = write(dir, "people.csv", &csv);
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
    net.pdx_ok(&[
        "grant",
        "--home",
        &a,
        "--dataset",
        "people",
        "--to",
        "100000",
        "--profile",
        "share",
        "--purpose",
        "testing",
        "--agreement",
        "DSA-1",
    ])
    .unwrap();
    net
}

fn spawn_fetch(net: &Testnet) -> std::process::Child {
    Command::new(net.pdx_path())
        .args([
            "fetch",
            "--home",
            &net.home("100000").unwrap(),
            "--peer",
            "440000",
            "--dataset",
            "people",
            "--profile",
            "share",
            "--purpose",
            "testing",
            "--agreement",
            "DSA-1",
            "--retries",
            "8",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until B has durably stored at least `n` chunks of an incoming release.
fn wait_stored(net: &Testnet, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(v) = net.pdx_json(&["releases", "--home", &net.home("100000").unwrap()])
            && let Some(r) = v
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["direction"] == "in")
        {
            let stored = r["stored"].as_u64().unwrap_or(0);
            if stored >= n {
                return stored;
            }
        }
        assert!(Instant::now() < deadline, "transfer never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check_received(net: &Testnet, dir: &std::path::Path, release: &str) {
    let out = dir.join("received.csv");
    net.pdx_ok(&[
        "export",
        "--home",
        &net.home("100000").unwrap(),
        "--release",
        release,
        "--out",
        &s(&out),
    ])
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let amounts: std::collections::BTreeSet<String> = text
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().to_string())
        .collect();
    assert_eq!(
        text.lines().count() - 1,
        ROWS,
        "no record lost or duplicated"
    );
    assert_eq!(amounts.len(), ROWS, "every record once");
    // Exactly one receive and one send for the release; the logs reconcile.
    let recv: Vec<_> = entries(net, "100000", "receive")
        .into_iter()
        .filter(|e| e["release"] == release)
        .collect();
    let send: Vec<_> = entries(net, "440000", "send")
        .into_iter()
        .filter(|e| e["release"] == release)
        .collect();
    assert_eq!((recv.len(), send.len()), (1, 1));
    assert_eq!(recv[0]["digest"], send[0]["digest"]);
}

#[test]
fn a_killed_sender_is_resumed_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = slow_network(tmp.path());
    let fetch = spawn_fetch(&net);
    let before = wait_stored(&net, 5);
    net.kill("440000").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    net.start("440000").unwrap();
    let out = fetch.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["records"], ROWS);
    assert!(
        v["resumed_from"].as_u64().unwrap_or(0) >= before,
        "resumed, not restarted: {v}"
    );
    check_received(&net, tmp.path(), v["release"].as_str().unwrap());
    net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_killed_receiver_resumes_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = slow_network(tmp.path());
    let mut fetch = spawn_fetch(&net);
    let before = wait_stored(&net, 5);
    net.kill("100000").unwrap();
    let _ = fetch.wait();
    net.start("100000").unwrap();
    let v = net
        .pdx_json(&[
            "fetch",
            "--home",
            &net.home("100000").unwrap(),
            "--peer",
            "440000",
            "--dataset",
            "people",
            "--profile",
            "share",
            "--purpose",
            "testing",
            "--agreement",
            "DSA-1",
        ])
        .unwrap();
    assert_eq!(v["records"], ROWS);
    let resumed = v["resumed_from"]
        .as_u64()
        .expect("the interrupted release is resumed");
    assert!(resumed >= before, "{v}");
    check_received(&net, tmp.path(), v["release"].as_str().unwrap());
    // Fetching again is idempotent.
    let again = net
        .pdx_json(&[
            "fetch",
            "--home",
            &net.home("100000").unwrap(),
            "--peer",
            "440000",
            "--dataset",
            "people",
            "--profile",
            "share",
            "--purpose",
            "testing",
            "--agreement",
            "DSA-1",
        ])
        .unwrap();
    assert_eq!(again["already_complete"], true);
    net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn expired_and_revoked_grants_are_refused_and_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let net = network(
        tmp.path(),
        &[("440000", "Guangdong"), ("100000", "National")],
    );
    let (a, b) = (net.home("440000").unwrap(), net.home("100000").unwrap());
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
    net.pdx_ok(&[
        "grant",
        "--home",
        &a,
        "--dataset",
        "people",
        "--to",
        "100000",
        "--profile",
        "share",
        "--purpose",
        "testing",
        "--agreement",
        "DSA-1",
        "--expires",
        "+1s",
    ])
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let args = [
        "fetch",
        "--home",
        &b,
        "--peer",
        "440000",
        "--dataset",
        "people",
        "--profile",
        "share",
        "--purpose",
        "testing",
        "--agreement",
        "DSA-1",
    ];
    let out = net.pdx(&args).unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
    let g = net
        .pdx_json(&[
            "grant",
            "--home",
            &a,
            "--dataset",
            "people",
            "--to",
            "100000",
            "--profile",
            "share",
            "--purpose",
            "testing",
            "--agreement",
            "DSA-1",
        ])
        .unwrap();
    net.pdx_ok(&[
        "grant",
        "revoke",
        "--home",
        &a,
        "--id",
        g["id"].as_str().unwrap(),
    ])
    .unwrap();
    let out = net.pdx(&args).unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
    let refusals = entries(&net, "440000", "refused-request");
    assert!(
        refusals
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("GrantExpired"))
    );
    assert!(
        refusals
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("GrantRevoked"))
    );
    assert!(!entries(&net, "440000", "revoke-grant").is_empty());
    assert!(
        entries(&net, "100000", "refused-request").len() >= 2,
        "the refused side audits too"
    );
}
