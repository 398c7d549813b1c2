//! Online services on real processes: a consumer (treating province 440000)
//! calls the settlement calculation of the insured province 110000 through
//! the national hub 100000; the provider's backend is a real HTTP server in
//! its own process (`pdx-testnet backend`). Gateway, CLI, grants, sealing,
//! idempotency across a killed provider, backend failures, limits, evidence
//! and reconciliation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{entries, s, write};
use pdx_testnet::Testnet;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CONSUMER: &str = "440000";
const HUB: &str = "100000";
const PROVIDER: &str = "110000";
const OTHER: &str = "320000";
const SERVICE: &str = "medical_insurance.settlement_calc";
const CERTNO: &str = "11010519491231002X";
const NAME: &str = "张三丰";
const PSN_NO: &str = "PSN9988776655";

fn schema_path() -> String {
    s(&Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("schemas/medical_insurance/settlement_calc.toml"))
}

fn request(total: &str, mdtrt: &str) -> Value {
    json!({
        "mdtrt_id": mdtrt,
        "psn_no": PSN_NO,
        "certno": CERTNO,
        "psn_name": NAME,
        "insuplc_admdvs": "110105",
        "mdtrtarea_admvs": "440106",
        "fixmedins_code": "H44010600001",
        "med_type": "21",
        "begndate": "2026-11-02",
        "enddate": "2026-11-09",
        "diag_code": "J18.900",
        "medfee_sumamt": total,
        "drug_fee": "400.00",
        "exam_fee": "300.00",
        "treat_fee": "500.00",
        "material_fee": "100.00",
        "other_fee": "500.00",
    })
}

/// A minimal HTTP/1.1 exchange (Connection: close): (status, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).unwrap();
    // A server may answer (and close) before reading a refused body.
    let _ = c.write_all(body);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

struct Backend {
    child: Child,
    addr: String,
}

impl Backend {
    fn start() -> Backend {
        let port = pdx_testnet::free_port().unwrap();
        let addr = format!("127.0.0.1:{port}");
        let bin = pdx_testnet::pdx_bin()
            .unwrap()
            .with_file_name("pdx-testnet");
        let mut child = Command::new(bin)
            .args(["backend", "--listen", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if TcpStream::connect(&addr).is_ok() {
                return Backend { child, addr };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("backend did not start on {addr}");
    }

    fn mode(&self, m: &str) {
        let (st, _) = http(&self.addr, "POST", &format!("/mode/{m}"), &[], b"");
        assert_eq!(st, 200);
    }

    fn count(&self) -> u64 {
        http(&self.addr, "GET", "/count", &[], b"")
            .1
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Services {
    net: Testnet,
    backend: Backend,
    gateway: String,
    token: String,
    dir: std::path::PathBuf,
}

fn set_config(net: &Testnet, dept: &str, from: &str, to: &str) {
    let path = Path::new(&net.home(dept).unwrap()).join("pdx.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

/// Four nodes; the provider publishes and grants the service to 440000 and
/// 320000; the hub relays everything; 440000 routes 11* via the hub and runs
/// the gateway. `hub_rate`: the hub's calls_per_second and burst.
fn services(dir: &Path, hub_rate: Option<u32>) -> Services {
    services_in(pdx_crypto::Suite::Intl, dir, hub_rate)
}

fn services_in(suite: pdx_crypto::Suite, dir: &Path, hub_rate: Option<u32>) -> Services {
    let mut net = Testnet::create_in(suite, dir, "svc").unwrap();
    for (d, n) in [
        (HUB, "national platform"),
        (CONSUMER, "Guangdong"),
        (PROVIDER, "Beijing"),
        (OTHER, "Jiangsu"),
    ] {
        net.add_node(d, n).unwrap();
    }
    net.connect_all().unwrap();
    let backend = Backend::start();
    let home = |d: &str| net.home(d).unwrap();
    let schema = schema_path();
    let gw_port = pdx_testnet::free_port().unwrap();
    let gateway = format!("127.0.0.1:{gw_port}");
    net.pdx_ok(&[
        "gateway",
        "relay",
        "--home",
        &home(HUB),
        "--from",
        "*",
        "--to",
        "*",
    ])
    .unwrap();
    for c in [CONSUMER, OTHER] {
        net.pdx_ok(&[
            "gateway",
            "route",
            "--home",
            &home(c),
            "--to",
            "11*",
            "--via",
            HUB,
        ])
        .unwrap();
    }
    net.pdx_ok(&[
        "gateway",
        "enable",
        "--home",
        &home(CONSUMER),
        "--listen",
        &gateway,
    ])
    .unwrap();
    if let Some(r) = hub_rate {
        set_config(
            &net,
            HUB,
            "calls_per_second = 5000",
            &format!("calls_per_second = {r}"),
        );
        set_config(&net, HUB, "call_burst = 1000", &format!("call_burst = {r}"));
    }
    net.start_all().unwrap();
    let home = |d: &str| net.home(d).unwrap();
    let url = format!("http://{}/calc", backend.addr);
    net.pdx_ok(&[
        "service",
        "publish",
        "--home",
        &home(PROVIDER),
        "--schema",
        &schema,
        "--service",
        SERVICE,
        "--backend",
        &url,
        "--timeout",
        "1500",
    ])
    .unwrap();
    for c in [CONSUMER, OTHER] {
        net.pdx_ok(&[
            "service",
            "add",
            "--home",
            &home(c),
            "--schema",
            &schema,
            "--service",
            SERVICE,
        ])
        .unwrap();
        net.pdx_ok(&[
            "grant",
            "--home",
            &home(PROVIDER),
            "--service",
            SERVICE,
            "--to",
            c,
            "--purpose",
            "direct settlement",
            "--agreement",
            "XSJS-2026",
            "--expires",
            "+1d",
        ])
        .unwrap();
    }
    // The hub is the key directory: it holds the provider's key document
    // (the consumers fetch it from there on their first call).
    net.pdx_ok(&["keys", "fetch", "--home", &home(HUB), "--peer", PROVIDER])
        .unwrap();
    let token = std::fs::read_to_string(Path::new(&home(CONSUMER)).join("gateway.token")).unwrap();
    Services {
        net,
        backend,
        gateway,
        token: token.trim().to_string(),
        dir: dir.to_path_buf(),
    }
}

impl Services {
    fn post(&self, body: &[u8], key: Option<&str>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let mut h = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        if let Some(k) = key {
            h.push(("idempotency-key", k));
        }
        let (st, b) = http(
            &self.gateway,
            "POST",
            &format!("/v1/services/{PROVIDER}/{SERVICE}"),
            &h,
            body,
        );
        (st, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    fn call_cli(&self, from: &str, body: &Value, key: &str) -> std::process::Output {
        let f = write(&self.dir, &format!("req-{key}.json"), &body.to_string());
        self.net
            .pdx(&[
                "call",
                "--home",
                &self.net.home(from).unwrap(),
                "--to",
                PROVIDER,
                "--service",
                SERVICE,
                "--body",
                &f,
                "--idempotency-key",
                key,
                "--json",
            ])
            .unwrap()
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn calls_through_the_hub_are_sealed_signed_audited_and_happen_once() {
    calls_through_the_hub_are_sealed_signed_audited_and_happen_once_in(pdx_crypto::Suite::Intl);
}

#[test]
fn calls_through_the_hub_are_sealed_signed_audited_and_happen_once_under_gm() {
    calls_through_the_hub_are_sealed_signed_audited_and_happen_once_in(pdx_crypto::Suite::Gm);
}

fn calls_through_the_hub_are_sealed_signed_audited_and_happen_once_in(suite: pdx_crypto::Suite) {
    let tmp = tempfile::tempdir().unwrap();
    let mut sv = services_in(suite, tmp.path(), None);

    // The CLI: relayed through the route table, answered by the backend.
    let out = sv.call_cli(CONSUMER, &request("1800.00", "MD1"), "SETL-1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(r["via"], HUB);
    assert_eq!(r["response"]["fund_pay_sumamt"], "700.00");
    assert_eq!(r["response"]["deductible"], "800.00");
    assert_eq!(sv.backend.count(), 1);

    // The gateway: token, JSON, limits, validation before anything leaves.
    let body = request("2800.00", "MD2").to_string();
    let (st, v) = http(
        &sv.gateway,
        "POST",
        &format!("/v1/services/{PROVIDER}/{SERVICE}"),
        &[],
        body.as_bytes(),
    );
    assert_eq!(st, 401, "{v}");
    let (st, v) = sv.post(b"{not json", None);
    assert_eq!((st, code(&v)), (400, "invalid-request"), "{v}");
    let (st, v) = sv.post(&vec![b' '; 2 * 1024 * 1024], None);
    assert_eq!((st, code(&v)), (413, "too-large"), "{v}");
    let mut bad = request("2800.00", "MD2");
    bad["certno"] = json!("110105194912310021");
    let (st, v) = sv.post(bad.to_string().as_bytes(), None);
    assert_eq!((st, code(&v)), (400, "invalid-request"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("certno"));
    assert!(
        !v.to_string().contains("110105194912310021"),
        "the value must not be echoed: {v}"
    );
    assert_eq!(
        sv.backend.count(),
        1,
        "invalid requests never leave the node"
    );
    let (st, v) = sv.post(body.as_bytes(), Some("SETL-2"));
    assert_eq!((st, v["outcome"].as_str()), (200, Some("ok")), "{v}");
    assert_eq!(v["response"]["fund_pay_sumamt"], "1400.00");
    assert_eq!(sv.backend.count(), 2);

    // Same key, same request: the stored signed response, the backend is not called.
    let (st, again) = sv.post(body.as_bytes(), Some("SETL-2"));
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["call_id"], v["call_id"]);
    assert_eq!(again["response_digest"], v["response_digest"]);
    assert_eq!(sv.backend.count(), 2);
    // Same key, another request: refused.
    let (st, other) = sv.post(
        request("9.00", "MD2").to_string().as_bytes(),
        Some("SETL-2"),
    );
    assert_eq!((st, code(&other)), (400, "invalid-request"), "{other}");

    // Killed provider: the stored outcome survives, the backend sees one call.
    sv.net.kill(PROVIDER).unwrap();
    // The hub's connection to it falls silent: no answer within the deadline.
    let (st, v) = sv.post(body.as_bytes(), Some("SETL-3"));
    assert!(
        matches!((st, code(&v)), (504, "timeout") | (502, "unreachable")),
        "{v}"
    );
    sv.net.start(PROVIDER).unwrap();
    let mut first = Value::Null;
    for _ in 0..3 {
        let (st, r) = sv.post(
            request("3800.00", "MD3").to_string().as_bytes(),
            Some("SETL-4"),
        );
        first = r;
        if st == 200 {
            break;
        }
    }
    assert_eq!(first["outcome"], "ok", "{first}");
    let before = sv.backend.count();
    sv.net.kill(PROVIDER).unwrap();
    sv.net.start(PROVIDER).unwrap();
    // The hub's connection to the killed process is silent until it gives up
    // on it; a client retries with the same key until it has an answer.
    let mut retry = Value::Null;
    for _ in 0..3 {
        let (st, r) = sv.post(
            request("3800.00", "MD3").to_string().as_bytes(),
            Some("SETL-4"),
        );
        retry = r;
        if st == 200 {
            break;
        }
        assert!(matches!(code(&retry), "timeout" | "unreachable"), "{retry}");
    }
    assert_eq!(retry["replayed"], true);
    assert_eq!(retry["response"], first["response"]);
    assert_eq!(
        sv.backend.count(),
        before,
        "the backend saw the call exactly once"
    );

    // Backend failures are signed outcomes, never forwarded bodies.
    for (mode, status, want) in [
        ("error", 502, "backend-error"),
        ("invalid", 502, "invalid-response"),
        ("huge", 502, "invalid-response"),
        ("slow", 504, "timeout"),
    ] {
        sv.backend.mode(mode);
        let (st, v) = sv.post(body.as_bytes(), Some(&format!("K-{mode}")));
        assert_eq!((st, code(&v)), (status, want), "{mode}: {v}");
    }
    sv.backend.mode("ok");

    // The hub relayed what it cannot read: no sealed value in its store or log.
    let hub_home = sv.net.home(HUB).unwrap();
    let mut hub_bytes = Vec::new();
    for entry in walk(Path::new(&hub_home)) {
        hub_bytes.extend(std::fs::read(entry).unwrap_or_default());
    }
    for secret in [CERTNO, NAME, PSN_NO, "J18.900"] {
        assert!(
            !contains(&hub_bytes, secret.as_bytes()),
            "hub store or log holds {secret}"
        );
    }
    // ... and the provider's side did open them (they reached its backend).
    let relays = entries(&sv.net, HUB, "call-relay");
    let served = entries(&sv.net, PROVIDER, "call-serve");
    let called = entries(&sv.net, CONSUMER, "call");
    assert!(
        relays.len() >= 8 && served.len() >= 8 && called.len() >= 10,
        "{} {} {}",
        relays.len(),
        served.len(),
        called.len()
    );

    // Evidence for a dispute, and reconciliation of every party's log.
    let call_id = first["call_id"].as_str().unwrap();
    let shown = sv
        .net
        .pdx_json(&[
            "calls",
            "show",
            "--home",
            &sv.net.home(CONSUMER).unwrap(),
            "--id",
            call_id,
        ])
        .unwrap();
    assert_eq!(shown["records"][0]["outcome"], "ok", "{shown}");
    let evidence = s(&tmp.path().join("evidence.cbor"));
    sv.net
        .pdx_ok(&[
            "calls",
            "export",
            "--home",
            &sv.net.home(PROVIDER).unwrap(),
            "--id",
            call_id,
            "--out",
            &evidence,
        ])
        .unwrap();
    assert!(std::fs::metadata(&evidence).unwrap().len() > 500);
    let ca = s(&sv.net.ca_dir().join("ca.crt"));
    let verdicts = sv
        .net
        .pdx_json(&["calls", "verify", "--file", &evidence, "--ca", &ca])
        .unwrap();
    assert!(
        verdicts
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["verdict"] == "valid" && v["outcome"] == "ok"),
        "{verdicts}"
    );
    // A flipped byte inside a signed body: refused, never valid.
    let mut bytes = std::fs::read(&evidence).unwrap();
    let at = bytes.windows(4).position(|w| w == b"3800").unwrap();
    bytes[at] = b'9';
    let forged = s(&tmp.path().join("forged.cbor"));
    std::fs::write(&forged, &bytes).unwrap();
    let out = sv
        .net
        .pdx(&["calls", "verify", "--file", &forged, "--ca", &ca])
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bundles = export_bundles(&sv.net, tmp.path(), &[CONSUMER, HUB, PROVIDER, OTHER]);
    let rec = reconcile(&sv.net, &bundles);
    assert_eq!(rec["clean"], true, "{rec}");
    assert!(rec["calls_matched"].as_u64().unwrap() >= 5, "{rec}");

    // Grants: revoked, then a revoked consumer certificate.
    let grants = sv
        .net
        .pdx_json(&["grant", "list", "--home", &sv.net.home(PROVIDER).unwrap()])
        .unwrap();
    let g = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["to"] == CONSUMER)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    sv.net
        .pdx_ok(&[
            "grant",
            "revoke",
            "--home",
            &sv.net.home(PROVIDER).unwrap(),
            "--id",
            &g,
        ])
        .unwrap();
    let (st, v) = sv.post(body.as_bytes(), None);
    assert_eq!((st, code(&v)), (403, "not-granted"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    // An expired grant.
    sv.net
        .pdx_ok(&[
            "grant",
            "--home",
            &sv.net.home(PROVIDER).unwrap(),
            "--service",
            SERVICE,
            "--to",
            CONSUMER,
            "--purpose",
            "direct settlement",
            "--agreement",
            "XSJS-2026",
            "--expires",
            "+1s",
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (st, v) = sv.post(body.as_bytes(), None);
    assert_eq!((st, code(&v)), (403, "not-granted"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );
    let out = sv.call_cli(OTHER, &request("10.00", "MD9"), "J-1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sv.net.revoke(OTHER).unwrap();
    let out = sv.call_cli(OTHER, &request("10.00", "MD9"), "J-2");
    assert!(!out.status.success());
    sv.net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_deleted_provider_entry_is_found_by_reconciliation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sv = services(tmp.path(), None);
    // A department the provider never granted the service: refused.
    let hub = sv.net.home(HUB).unwrap();
    sv.net
        .pdx_ok(&[
            "service",
            "add",
            "--home",
            &hub,
            "--schema",
            &schema_path(),
            "--service",
            SERVICE,
        ])
        .unwrap();
    let f = write(
        tmp.path(),
        "hub-req.json",
        &request("10.00", "MDH").to_string(),
    );
    let out = sv
        .net
        .pdx(&[
            "call",
            "--home",
            &hub,
            "--to",
            PROVIDER,
            "--service",
            SERVICE,
            "--body",
            &f,
        ])
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no grant lets 100000 call"));
    let mut ids = Vec::new();
    for i in 0..5 {
        let (st, v) = sv.post(
            request("100.00", &format!("MD{i}")).to_string().as_bytes(),
            None,
        );
        assert_eq!(st, 200, "{v}");
        ids.push(v["call_id"].as_str().unwrap().to_string());
    }
    let served = entries(&sv.net, PROVIDER, "call-serve");
    let seq = served[2]["seq"].as_u64().unwrap();
    sv.net.stop(PROVIDER, Duration::from_secs(10)).unwrap();
    let db_path = sv.net.node(PROVIDER).unwrap().home.join("db");
    {
        let opts = rocksdb::Options::default();
        let cfs = rocksdb::DB::list_cf(&opts, &db_path).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &db_path, &cfs).unwrap();
        let cf = db.cf_handle("audit.entries").unwrap();
        db.delete_cf(&cf, seq.to_be_bytes()).unwrap();
    }
    let bundles = export_bundles(&sv.net, tmp.path(), &[CONSUMER, HUB, PROVIDER]);
    let out = sv
        .net
        .pdx(
            &[
                &["audit", "reconcile", "--json"][..],
                &bundles.iter().map(String::as_str).collect::<Vec<_>>(),
            ]
            .concat(),
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = rec["mismatches"].as_array().unwrap();
    assert!(
        found
            .iter()
            .any(|m| m["kind"] == "call-without-serve" && m["release"] == ids[2].as_str()),
        "{rec}"
    );
    sv.net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_flooding_consumer_is_rate_limited_and_others_keep_calling() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sv = services(tmp.path(), Some(20));
    let body = request("100.00", "MDF").to_string();
    let limited = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..30 {
                    let (st, v) = sv.post(body.as_bytes(), None);
                    if st == 429 {
                        assert_eq!(code(&v), "rate-limited");
                        limited.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert!(limited.into_inner() > 0, "120 calls at once exceed 20/s");
    // The other department's own bucket is untouched.
    let out = sv.call_cli(OTHER, &request("10.00", "MDO"), "O-1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The backend down: a signed backend-error, after the bucket refilled.
    sv.backend.child.kill().unwrap();
    sv.backend.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (st, v) = sv.post(body.as_bytes(), None);
    assert_eq!((st, code(&v)), (502, "backend-error"), "{v}");
    sv.net.stop_all(Duration::from_secs(10)).unwrap();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn export_bundles(net: &Testnet, dir: &Path, depts: &[&str]) -> Vec<String> {
    depts
        .iter()
        .map(|d| {
            let b = s(&dir.join(format!("{d}.bundle")));
            net.pdx_ok(&[
                "audit",
                "export",
                "--home",
                &net.home(d).unwrap(),
                "--out",
                &b,
            ])
            .unwrap();
            b
        })
        .collect()
}

fn reconcile(net: &Testnet, bundles: &[String]) -> Value {
    let mut args = vec!["audit", "reconcile"];
    args.extend(bundles.iter().map(String::as_str));
    net.pdx_json(&args).unwrap()
}

#[test]
fn reconciliation_is_clean_after_ten_thousand_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sv = services(tmp.path(), None);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (sv, failed) = (&sv, &failed);
            scope.spawn(move || {
                for i in 0..1250 {
                    let body = request("100.00", &format!("M{t}X{i}")).to_string();
                    let (st, _) = sv.post(body.as_bytes(), Some(&format!("K-{t}-{i}")));
                    if st != 200 {
                        failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(failed.into_inner(), 0);
    let bundles = export_bundles(&sv.net, tmp.path(), &[CONSUMER, HUB, PROVIDER]);
    let rec = reconcile(&sv.net, &bundles);
    assert_eq!(rec["clean"], true, "{rec}");
    assert_eq!(rec["calls_matched"], 10_000, "{rec}");
    sv.net.stop_all(Duration::from_secs(10)).unwrap();
}
