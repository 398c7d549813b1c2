//! Exit codes as README.md's table gives them, one test per row, on real
//! node homes (served where the row needs a peer).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_testnet::Testnet;
use std::time::Duration;

/// Runs `pdx args` and returns its exit code, with the output for messages.
fn code(net: &Testnet, args: &[&str]) -> (Option<i32>, String) {
    let out = net.pdx(args).unwrap();
    (
        out.status.code(),
        format!(
            "pdx {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn exit_0_success() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = people_node(dir.path());
    let bundle = s(&dir.path().join("gd.bundle"));
    net.pdx_ok(&["audit", "export", "--home", &home, "--out", &bundle])
        .unwrap();
    let ca = s(&net.ca_dir().join("ca.crt"));
    for args in [
        vec!["datasets", "--home", &home],
        vec!["audit", "verify", &bundle, "--ca", &ca],
    ] {
        let (c, out) = code(&net, &args);
        assert_eq!(c, Some(0), "{out}");
    }
}

#[test]
fn exit_1_missing_file_or_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = people_node(dir.path());
    let missing = s(&dir.path().join("no-such-file.csv"));
    let schema = write(dir.path(), "people.toml", PEOPLE_SCHEMA);
    net.pdx_ok(&[
        "peer",
        "add",
        "--home",
        &home,
        "--dept",
        "100000",
        "--addr",
        "127.0.0.1:9",
    ])
    .unwrap();
    for args in [
        vec![
            "import",
            "--home",
            &home,
            "--schema",
            &schema,
            "--csv",
            &missing,
            "--dataset",
            "other",
        ],
        vec!["schema", "check", &missing],
        // The registry is read before anything is signed or sent.
        vec![
            "settle",
            "confirm",
            "--home",
            &home,
            "--release",
            "00000000000000000000000000000000",
            "--registry",
            &missing,
            "--to",
            "100000",
        ],
    ] {
        let (c, out) = code(&net, &args);
        assert_eq!(c, Some(1), "{out}");
        assert!(out.contains("no-such-file.csv"), "names the file: {out}");
    }
}

#[test]
fn exit_2_tampered_log() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = people_node(dir.path());
    let bundle = dir.path().join("gd.bundle");
    net.pdx_ok(&["audit", "export", "--home", &home, "--out", &s(&bundle)])
        .unwrap();
    // Change one letter of the import entry's detail text.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let needle = b"rows imported";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the import entry's detail is in the bundle");
    bytes[at] = b'R';
    std::fs::write(&bundle, &bytes).unwrap();
    let ca = s(&net.ca_dir().join("ca.crt"));
    let (c, out) = code(&net, &["audit", "verify", &s(&bundle), "--ca", &ca]);
    assert_eq!(c, Some(2), "{out}");
}

#[test]
fn exit_3_reconcile_without_the_peers_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = network(dir.path(), &[("440000", "广东"), ("110000", "北京")]);
    let (gd, bj) = (net.home("440000").unwrap(), net.home("110000").unwrap());
    let plain = PEOPLE_SCHEMA.replace(
        r#"certno = { encrypt_for = "100000" }"#,
        r#"certno = "drop""#,
    );
    let schema = write(dir.path(), "people.toml", &plain);
    let csv = write(dir.path(), "people.csv", PEOPLE_CSV);
    net.pdx_ok(&import_args(&gd, &schema, &csv, "people"))
        .unwrap();
    net.pdx_ok(&grant_args(
        &gd,
        "people",
        "110000",
        "share",
        &["--agreement", "A-1", "--expires", "+1d"],
    ))
    .unwrap();
    net.pdx_ok(&[
        "fetch",
        "--home",
        &bj,
        "--peer",
        "440000",
        "--dataset",
        "people",
        "--profile",
        "share",
        "--agreement",
        "A-1",
    ])
    .unwrap();
    let (bgd, bbj) = (
        s(&dir.path().join("gd.bundle")),
        s(&dir.path().join("bj.bundle")),
    );
    net.pdx_ok(&["audit", "export", "--home", &gd, "--out", &bgd])
        .unwrap();
    net.pdx_ok(&["audit", "export", "--home", &bj, "--out", &bbj])
        .unwrap();
    let ca = s(&net.ca_dir().join("ca.crt"));
    // Only the sender's bundle: the transfer cannot be matched, which is
    // not a mismatch.
    let (c, out) = code(&net, &["audit", "reconcile", &bgd, "--ca", &ca]);
    assert_eq!(c, Some(3), "{out}");
    let (c, out) = code(&net, &["audit", "reconcile", &bgd, &bbj, "--ca", &ca]);
    assert_eq!(c, Some(0), "{out}");
    net.stop_all(Duration::from_secs(10)).unwrap();
}

#[test]
fn exit_4_refused_by_the_privacy_model_at_grant_time() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = people_node(dir.path());
    // A profile that needs classes of 5 on a 3-record dataset.
    let strict = PEOPLE_SCHEMA.replace("[profile.share]\n", "[profile.share]\nk = 5\n");
    let schema = write(dir.path(), "strict.toml", &strict);
    let csv = write(dir.path(), "people.csv", PEOPLE_CSV);
    net.pdx_ok(&import_args(&home, &schema, &csv, "strict"))
        .unwrap();
    let (c, out) = code(
        &net,
        &grant_args(
            &home,
            "strict",
            "110000",
            "share",
            &["--agreement", "A-1", "--expires", "+1d"],
        ),
    );
    assert_eq!(c, Some(4), "{out}");
    assert!(
        out.contains("privacy-model") && out.contains("k=5"),
        "{out}"
    );
    let grants = net.pdx_json(&["grant", "list", "--home", &home]).unwrap();
    assert_eq!(grants.as_array().map(Vec::len), Some(0), "{grants:#}");
}

#[test]
fn exit_5_unknown_peer_or_release() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = people_node(dir.path());
    for args in [
        vec!["catalog", "--home", &home, "--peer", "999999"],
        vec![
            "export",
            "--home",
            &home,
            "--release",
            "00000000000000000000000000000000",
            "--out",
            "x.csv",
        ],
    ] {
        let (c, out) = code(&net, &args);
        assert_eq!(c, Some(5), "{out}");
    }
}

#[test]
fn exit_6_peer_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = people_node(dir.path());
    // Nothing answers QUIC there.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    net.pdx_ok(&[
        "peer", "add", "--home", &home, "--dept", "100000", "--addr", &addr,
    ])
    .unwrap();
    let (c, out) = code(&net, &["catalog", "--home", &home, "--peer", "100000"]);
    assert_eq!(c, Some(6), "{out}");
}

#[test]
fn exit_64_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = people_node(dir.path());
    for args in [
        grant_args(
            &home,
            "people",
            "110000",
            "share",
            &["--expires", "2026-13-45"],
        ),
        vec!["datasets", "--home", &home, "--no-such-flag"],
        vec![
            "import",
            "--home",
            &home,
            "--encoding",
            "latin1",
            "--schema",
            "a",
            "--csv",
            "b",
            "--dataset",
            "c",
        ],
    ] {
        let (c, out) = code(&net, &args);
        assert_eq!(c, Some(64), "{out}");
    }
}
