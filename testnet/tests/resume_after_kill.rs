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
    slow_network_with(dir, 25, 20)
}

/// [`slow_network`] sending `rate` chunks/s, with a shutdown grace period of
/// `grace` seconds.
fn slow_network_with(dir: &std::path::Path, rate: u32, grace: u32) -> Testnet {
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
            &format!("rate_limit_chunks_per_sec = {rate}"),
        );
    assert!(text.contains("shutdown_grace_secs = 20"), "{text}");
    let text = text.replace(
        "shutdown_grace_secs = 20",
        &format!("shutdown_grace_secs = {grace}"),
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

/// Waits for a fetch spawned by [`spawn_fetch`]: it must succeed with every
/// record; returns its report.
fn fetched(fetch: std::process::Child) -> serde_json::Value {
    let v = json_of(fetch);
    assert_eq!(v["records"], ROWS, "{v:#}");
    v
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
    let v = fetched(fetch);
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

/// The audit entries of `dept` (all kinds), in order.
fn all_entries(net: &Testnet, dept: &str) -> Vec<serde_json::Value> {
    let home = net.home(dept).unwrap();
    net.pdx_json(&["audit", "show", "--home", &home, "--limit", "100000"])
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

/// What `pdx status` says of the audit log of a stopped node: entries and
/// the size of its latest checkpoint.
fn log_and_checkpoint(net: &Testnet, dept: &str) -> (u64, u64) {
    let home = net.home(dept).unwrap();
    let st = net.pdx_json(&["status", "--home", &home]).unwrap();
    (
        st["audit"]["entries"].as_u64().unwrap(),
        st["audit"]["checkpoint_size"].as_u64().unwrap(),
    )
}

#[test]
fn sigterm_lets_the_transfer_in_flight_finish_then_logs_the_stop_and_signs_a_final_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = slow_network(tmp.path());
    let fetch = spawn_fetch(&net);
    wait_stored(&net, 5);
    let asked = Instant::now();
    net.stop("440000", Duration::from_secs(60)).unwrap();
    let took = asked.elapsed();
    // The fetch finished on the same connection: no retry was needed.
    let v = fetched(fetch);
    assert!(v["resumed_from"].is_null(), "not resumed: {v:#}");
    assert!(took < Duration::from_secs(20), "stopped after {took:?}");
    // The sender logged the send, then the stop (nothing cut), and signed a
    // checkpoint over its whole log.
    let log = all_entries(&net, "440000");
    let send = log.iter().rposition(|e| e["kind"] == "send").unwrap();
    let stop = log
        .iter()
        .rposition(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("node stopped"))
        })
        .unwrap();
    assert!(send < stop, "{log:#?}");
    assert_eq!(log[stop]["detail"], "node stopped");
    let (entries, checkpoint) = log_and_checkpoint(&net, "440000");
    assert!(checkpoint > log[stop]["seq"].as_u64().unwrap(), "{log:#?}");
    assert!(checkpoint <= entries);
    check_received(&net, tmp.path(), v["release"].as_str().unwrap());
}

#[test]
fn a_transfer_still_running_after_the_grace_period_is_cut_named_and_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    // 48 chunks at 4/s: about 12 s, against a 1 s grace period.
    let mut net = slow_network_with(tmp.path(), 4, 1);
    let fetch = spawn_fetch(&net);
    wait_stored(&net, 3);
    let asked = Instant::now();
    net.stop("440000", Duration::from_secs(60)).unwrap();
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(8), "stopped after {took:?}");
    let log = all_entries(&net, "440000");
    let stop = log
        .iter()
        .rev()
        .find_map(|e| {
            e["detail"]
                .as_str()
                .filter(|d| d.starts_with("node stopped"))
        })
        .unwrap()
        .to_string();
    assert!(
        stop.contains("1 transfers or calls still in flight after the 1 s grace period were cut"),
        "{stop}"
    );
    assert!(
        !log.iter().any(|e| e["kind"] == "send"),
        "nothing unacknowledged is logged as sent"
    );
    // Restarted, the sender serves the rest: the fetch resumes.
    net.start("440000").unwrap();
    let v = fetched(fetch);
    assert!(v["resumed_from"].as_u64().unwrap() >= 3, "{v:#}");
    check_received(&net, tmp.path(), v["release"].as_str().unwrap());
}
