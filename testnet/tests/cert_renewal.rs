//! Certificate renewal without downtime (docs/operations.md "Renewing the
//! node certificate"): `pdx ca issue --renew` keeps the department's audit
//! log, `pdx cert install` takes effect in the running node, and the old
//! certificate can be revoked at once: peers then accept only the new one,
//! so every exchange after the revocation proves the node presents it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_crypto::Suite;
use pdx_testnet::Testnet;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const GRANT: &[&str] = &["--agreement", "DSA-1", "--expires", "+30d"];

/// `pdx ca issue --renew` for `dept`'s installed certificate into `out`.
fn renew(net: &Testnet, dept: &str, out: &Path, new_key: bool) -> Value {
    let cert = s(&Path::new(&net.home(dept).unwrap()).join("tls/node.crt"));
    let ca = s(&net.ca_dir());
    let out = s(out);
    let mut args = vec![
        "ca", "issue", "--dir", &ca, "--renew", "--cert", &cert, "--out", &out,
    ];
    if new_key {
        args.push("--new-key");
    }
    net.pdx_json(&args).unwrap()
}

/// Revokes `serial` and installs the CRL on `on`.
fn revoke_on(net: &Testnet, serial: &str, on: &str) {
    let ca = s(&net.ca_dir());
    net.pdx_ok(&["ca", "revoke", "--dir", &ca, "--serial", serial])
        .unwrap();
    let crl = s(&net.ca_dir().join("crl.pem"));
    let home = net.home(on).unwrap();
    net.pdx_ok(&["crl", "update", "--home", &home, "--crl", &crl])
        .unwrap();
}

fn status(net: &Testnet, dept: &str) -> Value {
    let home = net.home(dept).unwrap();
    net.pdx_json(&["status", "--home", &home]).unwrap()
}

/// 440000 imports and grants a new dataset `id`; 100000 fetches it. The
/// release is produced now, so it is signed under the certificate in use.
fn share_and_fetch(net: &Testnet, dir: &Path, id: &str) -> Value {
    let a = net.home("440000").unwrap();
    let b = net.home("100000").unwrap();
    let schema = write(dir, "people.toml", PEOPLE_SCHEMA);
    let csv = write(dir, "people.csv", PEOPLE_CSV);
    net.pdx_ok(&import_args(&a, &schema, &csv, id)).unwrap();
    net.pdx_ok(&grant_args(&a, id, "100000", "share", GRANT))
        .unwrap();
    net.pdx_json(&fetch_args(&b, "440000", id, "share"))
        .unwrap()
}

fn renewal_in_a_running_node(suite: Suite) {
    let dir = tempfile::tempdir().unwrap();
    let mut net = network_in(suite, dir.path(), &[("440000", "广东"), ("100000", "国家")]);
    let a = net.home("440000").unwrap();
    assert_eq!(share_and_fetch(&net, dir.path(), "people0")["records"], 3);
    let pid = net.node("440000").unwrap().pid;
    let first = status(&net, "440000");
    let serial0 = first["certificate_serial"].as_str().unwrap().to_string();
    let log_id = first["log_id"].as_str().unwrap().to_string();

    // Renewal for the same key: the CA records what it renews.
    let d1 = dir.path().join("renewed-1");
    let issued = renew(&net, "440000", &d1, false);
    assert_eq!(issued["renews"], serial0.as_str(), "{issued:#}");
    assert!(!d1.join("node.key").exists() && !d1.join("audit.key").exists());
    let installed = net
        .pdx_json(&["cert", "install", "--home", &a, "--cert-dir", &s(&d1)])
        .unwrap();
    assert_eq!(installed["previous_serial"], serial0.as_str());
    assert_eq!(installed["serial"], issued["serial"]);
    assert_eq!(installed["new_identity_key"], false);
    // The running node took it, without a restart, and kept its log.
    assert_eq!(net.node("440000").unwrap().pid, pid);
    assert!(net.is_running("440000"));
    let now = status(&net, "440000");
    assert_eq!(now["certificate_serial"], issued["serial"]);
    assert_eq!(now["log_id"], log_id.as_str());

    // Revoke the old certificate at once (what a suspected compromise
    // calls for): the peer accepts only the new one (and its live
    // connections with the old one are closed), so this exchange is made
    // with the renewed certificate: handshake, the endorsement of the
    // checkpoint the peer witnesses, manifest and receipt.
    revoke_on(&net, &serial0, "100000");
    assert_eq!(share_and_fetch(&net, dir.path(), "people1")["records"], 3);

    // A renewal with a new identity key, installed the same way.
    let d2 = dir.path().join("renewed-2");
    let issued2 = renew(&net, "440000", &d2, true);
    assert!(d2.join("node.key").exists());
    let installed = net
        .pdx_json(&["cert", "install", "--home", &a, "--cert-dir", &s(&d2)])
        .unwrap();
    assert_eq!(installed["new_identity_key"], true, "{installed:#}");
    assert_eq!(installed["serial"], issued2["serial"]);
    assert_eq!(net.node("440000").unwrap().pid, pid);
    revoke_on(&net, issued["serial"].as_str().unwrap(), "100000");
    assert_eq!(share_and_fetch(&net, dir.path(), "people2")["records"], 3);

    // The peer holds 440000's key documents re-signed under the new
    // certificate: they verify now although both older ones are revoked.
    let b = net.home("100000").unwrap();
    let keys = net.pdx_json(&["keys", "list", "--home", &b]).unwrap();
    let of_a: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["dept"] == "440000" && k["active"] == true)
        .collect();
    assert!(!of_a.is_empty(), "{keys:#}");
    assert!(of_a.iter().all(|k| k["verified_now"] == true), "{keys:#}");

    // The log records both installs, and a restart opens the new key.
    let changes = entries(&net, "440000", "config-change");
    let renewed: Vec<&Value> = changes
        .iter()
        .filter(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("node certificate renewed"))
        })
        .collect();
    assert_eq!(renewed.len(), 2, "{changes:#?}");
    net.stop("440000", Duration::from_secs(10)).unwrap();
    net.start("440000").unwrap();
    assert_eq!(share_and_fetch(&net, dir.path(), "people3")["records"], 3);

    // The regulator: the genesis endorsement and both re-endorsements
    // verify (each certificate judged when it endorsed), the log is whole.
    let (ba, bb) = export_bundles(&net, dir.path(), &a, &b);
    let ca = s(&net.ca_dir().join("ca.crt"));
    let (code, report) = verify_json(&net, &[&s(&ba), "--witness", &s(&bb), "--ca", &ca]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["verdict"], "valid");
    assert!(
        report["external_checkpoints_checked"].as_u64().unwrap() > 0,
        "{report:#}"
    );
}

#[test]
fn a_renewed_certificate_takes_effect_in_a_running_node_and_the_old_one_can_be_revoked_at_once() {
    renewal_in_a_running_node(Suite::Intl);
}

#[test]
fn a_renewed_gm_certificate_takes_effect_in_a_running_node() {
    renewal_in_a_running_node(Suite::Gm);
}

#[test]
fn install_refuses_a_certificate_of_another_department_log_or_ca_and_renew_refuses_a_revoked_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    net.add_node("100000", "国家").unwrap();
    let a = net.home("440000").unwrap();
    let ca = s(&net.ca_dir());
    let install = |d: &Path| {
        let out = net
            .pdx(&["cert", "install", "--home", &a, "--cert-dir", &s(d)])
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Another department's renewal.
    let other = dir.path().join("other");
    renew(&net, "100000", &other, false);
    let err = install(&other);
    assert!(err.contains("a certificate of 100000"), "{err}");

    // A fresh certificate for the same department binds a second log.
    let second = dir.path().join("second");
    net.pdx_ok(&[
        "ca",
        "issue",
        "--dir",
        &ca,
        "--dept",
        "440000",
        "--name",
        "广东",
        "--out",
        &s(&second),
    ])
    .unwrap();
    let err = install(&second);
    assert!(err.contains("binds the audit log"), "{err}");

    // A certificate of another CA.
    let foreign = tempfile::tempdir().unwrap();
    let mut other_net = Testnet::create(foreign.path(), "itest").unwrap();
    other_net.add_node("440000", "广东").unwrap();
    let err = install(&foreign.path().join("certs/440000"));
    assert!(err.contains("not usable"), "{err}");

    // A renewal for the same key with a node.key of another key.
    let mixed = dir.path().join("mixed");
    renew(&net, "440000", &mixed, false);
    std::fs::copy(second.join("node.key"), mixed.join("node.key")).unwrap();
    let err = install(&mixed);
    assert!(err.contains("does not hold the key of"), "{err}");

    // The same certificate twice.
    let once = dir.path().join("once");
    renew(&net, "440000", &once, false);
    net.pdx_ok(&["cert", "install", "--home", &a, "--cert-dir", &s(&once)])
        .unwrap();
    let err = install(&once);
    assert!(err.contains("already installed"), "{err}");

    // Renewing into a directory that holds keys, or a revoked key.
    let renew_into = |out: &Path| {
        let cert = s(&Path::new(&a).join("tls/node.crt"));
        net.pdx(&[
            "ca",
            "issue",
            "--dir",
            &ca,
            "--renew",
            "--cert",
            &cert,
            "--out",
            &s(out),
        ])
        .unwrap()
    };
    let out = renew_into(&second);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"));
    let serial = status(&net, "440000")["certificate_serial"]
        .as_str()
        .unwrap()
        .to_string();
    net.pdx_ok(&["ca", "revoke", "--dir", &ca, "--serial", &serial])
        .unwrap();
    let out = renew_into(&dir.path().join("after-revoke"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("renew with --new-key"), "{err}");
    // ... which a new key may replace, keeping the log.
    renew(&net, "440000", &dir.path().join("rekeyed"), true);
    net.pdx_ok(&[
        "cert",
        "install",
        "--home",
        &a,
        "--cert-dir",
        &s(&dir.path().join("rekeyed")),
    ])
    .unwrap();
}

/// Runs `pdx cert install` with a failpoint; the process aborts there.
fn install_crashing_at(net: &Testnet, home: &str, dir: &Path, point: &str) {
    let out = std::process::Command::new(net.pdx_path())
        .args(["cert", "install", "--home", home, "--cert-dir", &s(dir)])
        .env("PDX_FAILPOINT", point)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{point} not reached");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(point),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_install_interrupted_before_the_log_recorded_it_is_dropped_and_after_it_is_completed() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    let a = net.home("440000").unwrap();
    let before = status(&net, "440000")["certificate_serial"].clone();

    // Crash after staging the new key and certificate: the node opens with
    // the old pair and nothing staged is left.
    let d1 = dir.path().join("r1");
    renew(&net, "440000", &d1, true);
    install_crashing_at(&net, &a, &d1, "cert-install-staged");
    assert!(Path::new(&a).join("tls/node.crt.new").exists());
    assert_eq!(status(&net, "440000")["certificate_serial"], before);
    assert!(!Path::new(&a).join("tls/node.crt.new").exists());
    assert!(!Path::new(&a).join("keys/identity.key.new").exists());

    // Crash after the log recorded it: the next open completes it.
    let d2 = dir.path().join("r2");
    let issued = renew(&net, "440000", &d2, true);
    install_crashing_at(&net, &a, &d2, "cert-install-recorded");
    assert_eq!(
        status(&net, "440000")["certificate_serial"],
        issued["serial"]
    );
    assert!(!Path::new(&a).join("keys/identity.key.new").exists());
    let renewed = entries(&net, "440000", "config-change")
        .into_iter()
        .filter(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("node certificate renewed"))
        })
        .count();
    assert_eq!(renewed, 1);
}
