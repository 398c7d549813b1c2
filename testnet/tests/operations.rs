//! Operating a node (docs/operations.md): the Prometheus endpoint scraped
//! and parsed, `pdx doctor` exit codes on real homes, JSON logs with an
//! operation id on every line of a request and no personal value in them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_testnet::Testnet;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sets `[operations] metrics` of a node (it must not be running).
fn set_metrics(net: &Testnet, dept: &str, addr: &str) {
    let home = pdx_node::config::Home::new(net.home(dept).unwrap());
    let mut cfg = pdx_node::config::Config::load(&home).unwrap();
    cfg.operations.metrics = Some(addr.to_string());
    cfg.save(&home).unwrap();
}

const GRANT: &[&str] = &["--agreement", "DSA-1", "--expires", "+30d"];

/// 440000 imports PEOPLE_CSV and grants it; 100000 fetches it (both served).
/// Returns both homes.
fn exchange(net: &Testnet, dir: &std::path::Path) -> (String, String) {
    let a = net.home("440000").unwrap();
    let b = net.home("100000").unwrap();
    let schema = write(dir, "people.toml", PEOPLE_SCHEMA);
    let csv = write(dir, "people.csv", PEOPLE_CSV);
    net.pdx_ok(&import_args(&a, &schema, &csv, "people"))
        .unwrap();
    net.pdx_ok(&grant_args(&a, "people", "100000", "share", GRANT))
        .unwrap();
    let fetched = net
        .pdx_json(&fetch_args(&b, "440000", "people", "share"))
        .unwrap();
    assert_eq!(fetched["records"], 3);
    (a, b)
}

/// `GET path` over plain HTTP/1.0; returns (status line, headers, body).
fn http_get(addr: &str, path: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

/// One parsed sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses OpenMetrics text strictly enough for the test: `# TYPE`/`# HELP`
/// lines, samples with quoted label values, a final `# EOF`.
fn parse_openmetrics(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "the exposition ends with # EOF"
    );
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("sample value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (types, samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn the_metrics_endpoint_serves_openmetrics_with_requests_bytes_records_and_witnessing() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    net.add_node("100000", "国家").unwrap();
    net.connect_all().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    set_metrics(&net, "440000", &addr);
    net.start_all().unwrap();
    let (_, b) = exchange(&net, dir.path());
    // A request the node refuses: no grant for this profile (purpose and
    // agreement given, so the request is sent without a catalog lookup).
    let mut args = fetch_args(&b, "440000", "people", "nothing");
    args.extend(["--purpose", "test", "--agreement", "DSA-1"]);
    let refused = net.pdx(&args).unwrap();
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let (status, headers, body) = http_get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    let (types, samples) = parse_openmetrics(&body);
    for (name, kind) in [
        ("pdx_requests", "counter"),
        ("pdx_refusals", "counter"),
        ("pdx_transfer_sent_bytes", "counter"),
        ("pdx_transfer_sent_records", "counter"),
        ("pdx_in_flight", "gauge"),
        ("pdx_audit_append_seconds", "histogram"),
        ("pdx_audit_group_commit_entries", "histogram"),
        ("pdx_store_size_bytes", "gauge"),
        ("pdx_store_pending_compaction_bytes", "gauge"),
        ("pdx_certificate_expiry_seconds", "gauge"),
        ("pdx_crl_age_seconds", "gauge"),
        ("pdx_checkpoint_age_seconds", "gauge"),
        ("pdx_peer_cosigned_age_seconds", "gauge"),
        ("pdx_peer_clock_skew_seconds", "gauge"),
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "{name}: {body}"
        );
    }
    let peer = [("peer", "100000")];
    assert!(
        value(
            &samples,
            "pdx_requests_total",
            &[("kind", "ReleaseRequest"), ("peer", "100000")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{body}"
    );
    assert!(value(&samples, "pdx_transfer_sent_bytes_total", &peer).unwrap_or(0.0) > 0.0);
    assert_eq!(
        value(&samples, "pdx_transfer_sent_records_total", &peer),
        Some(3.0)
    );
    assert!(
        samples.iter().any(|s| s.name == "pdx_refusals_total"
            && s.labels.get("peer").map(String::as_str) == Some("100000")
            && s.value >= 1.0),
        "the refused fetch is counted: {body}"
    );
    let appends = value(&samples, "pdx_audit_append_seconds_count", &[]).unwrap();
    assert!(
        appends >= 3.0,
        "imports, grant and send were appended: {appends}"
    );
    let expiry = value(&samples, "pdx_certificate_expiry_seconds", &[]).unwrap();
    assert!(expiry > 30.0 * 86_400.0, "{expiry}");
    assert!(value(&samples, "pdx_store_size_bytes", &[]).is_some());
    assert!(value(&samples, "pdx_peer_cosigned_size", &peer).unwrap_or(0.0) > 0.0);
    let skew = value(&samples, "pdx_peer_clock_skew_seconds", &peer).unwrap();
    assert!(skew.abs() < 5.0, "one machine, one clock: {skew}");
    assert_eq!(
        value(&samples, "pdx_in_flight", &[("what", "transfer")]),
        Some(0.0)
    );
    // No value of the dataset in the metrics.
    assert!(pdx_testnet::leaks::personal_data_in(&body).is_empty());
    let (status, _, body) = http_get(&addr, "/health");
    assert!(status.contains("200") && body == "ok\n", "{status} {body}");
}

#[test]
fn a_metrics_address_that_is_not_loopback_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    set_metrics(&net, "440000", "0.0.0.0:9464");
    let err = net.start("440000").unwrap_err().to_string();
    assert!(err.contains("not a loopback address"), "{err}");
}

fn doctor(net: &Testnet, dept: &str) -> (Option<i32>, serde_json::Value) {
    let home = net.home(dept).unwrap();
    let out = net.pdx(&["doctor", "--home", &home, "--json"]).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn finding<'a>(report: &'a serde_json::Value, check: &str) -> Vec<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .collect()
}

#[test]
fn doctor_exits_by_the_worst_finding() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = network(dir.path(), &[("440000", "广东"), ("100000", "国家")]);
    let (a, _) = exchange(&net, dir.path());

    // Healthy: served, peers reachable, witnessed both ways.
    let (code, report) = doctor(&net, "440000");
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["worst"], "ok");
    for check in [
        "permissions",
        "certificate",
        "crl",
        "disk",
        "store",
        "audit",
        "peer",
        "clock",
        "witnessing",
    ] {
        let f = finding(&report, check);
        assert!(!f.is_empty(), "{check} missing: {report:#}");
        assert!(
            f.iter().all(|f| f["severity"] == "ok"),
            "{check}: {report:#}"
        );
    }

    // A peer that does not answer is a warning (exit 1), named.
    net.stop("100000", Duration::from_secs(10)).unwrap();
    let (code, report) = doctor(&net, "440000");
    assert_eq!(code, Some(1), "{report:#}");
    let peer = finding(&report, "peer");
    assert_eq!(peer[0]["peer"], "100000");
    assert_eq!(peer[0]["severity"], "warn");

    // A key file others can read is an error (exit 2): the node does not
    // open, and the doctor says why instead of failing.
    net.stop("440000", Duration::from_secs(10)).unwrap();
    let key = std::path::Path::new(&a).join("keys/storage.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, report) = doctor(&net, "440000");
    assert_eq!(code, Some(2), "{report:#}");
    assert_eq!(report["worst"], "error");
    let text = report.to_string();
    assert!(text.contains("storage.key"), "{text}");
}

#[test]
fn json_logs_carry_an_operation_id_and_no_personal_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    net.add_node("100000", "国家").unwrap();
    net.connect_all().unwrap();
    net.set_serve_env("PDX_LOG", "info,pdx_node=debug");
    net.set_serve_env("PDX_LOG_FORMAT", "json");
    net.start_all().unwrap();
    let (a, _) = exchange(&net, dir.path());
    net.stop_all(Duration::from_secs(10)).unwrap();
    let log = std::fs::read_to_string(std::path::Path::new(&a).join("node.log")).unwrap();
    let mut served = Vec::new();
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["fields"]["message"] == "request served" {
            served.push(v);
        }
    }
    let release = served
        .iter()
        .find(|v| v["span"]["kind"] == "ReleaseRequest")
        .unwrap_or_else(|| panic!("no served ReleaseRequest line in:\n{log}"));
    let id = release["span"]["id"].as_str().unwrap();
    assert_eq!(id.len(), 16, "{release}");
    assert_eq!(release["span"]["peer"], "100000");
    // Every line of that request carries its id, and only its lines do.
    let lines_of_request: Vec<&str> = log.lines().filter(|l| l.contains(id)).collect();
    assert!(!lines_of_request.is_empty());
    for l in &lines_of_request {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["span"]["id"], id, "{l}");
    }
    // The imported names and resident ids never reach a log.
    for who in [
        "张三",
        "李四",
        "王五",
        "11010519491231002X",
        "440524188001010014",
        "P001",
    ] {
        assert!(!log.contains(who), "{who} appears in the log");
    }
    let found = pdx_testnet::leaks::personal_data_in(&log);
    assert!(
        found.is_empty(),
        "personal data in the log (masked): {found:?}"
    );
}

#[test]
fn the_logs_of_a_settlement_scenario_hold_none_of_its_generated_identities() {
    let dir = tempfile::tempdir().unwrap();
    let net_dir = dir.path().join("net");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pdx-testnet"))
        .args([
            "scenario",
            "settlement",
            "--provinces",
            "3",
            "--records",
            "3000",
            "--dir",
        ])
        .arg(&net_dir)
        .env("PDX_LOG", "info,pdx_node=debug")
        .env("PDX_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = 0;
    let mut with_id = 0;
    for node in std::fs::read_dir(net_dir.join("nodes")).unwrap().flatten() {
        let log = std::fs::read_to_string(node.path().join("node.log")).unwrap_or_default();
        let leaked = pdx_testnet::leaks::personal_data_in(&log);
        assert!(
            leaked.is_empty(),
            "{}: personal data in the log: {leaked:?}",
            node.path().display()
        );
        for l in log.lines().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            lines += 1;
            if v["span"]["id"].as_str().is_some_and(|id| id.len() == 16) {
                with_id += 1;
            }
        }
    }
    assert!(
        lines > 0 && with_id > 0,
        "{lines} JSON lines, {with_id} with an id"
    );
}
