//! Backup and restore on real nodes (docs/operations.md "Backup and
//! restore"): a backup made while the node serves, checked offline, refused
//! when altered; a restore whose peers witnessed nothing more resumes at
//! once; one from an old backup, after the node kept exchanging, is
//! stopped, alarmed, acknowledged, accepted by the peer in place of the lost
//! checkpoint, and reported by the regulator's verifier as a documented loss.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_testnet::Testnet;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const GRANT: &[&str] = &["--agreement", "DSA-1", "--expires", "+30d"];

fn passphrase(dir: &Path) -> String {
    let p = dir.join("backup.pass");
    std::fs::write(&p, "correct horse battery staple\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    s(&p)
}

fn fetch(net: &Testnet, from: &str, dataset: &str) -> Value {
    let home = net.home("100000").unwrap();
    net.pdx_json(&fetch_args(&home, from, dataset, "share"))
        .unwrap()
}

fn import(net: &Testnet, dir: &Path, dataset: &str) {
    let a = net.home("440000").unwrap();
    let schema = write(
        dir,
        "people.toml",
        &PEOPLE_SCHEMA.replace("\"people\"", &format!("\"{dataset}\"")),
    );
    let csv = write(dir, &format!("{dataset}.csv"), PEOPLE_CSV);
    net.pdx_ok(&import_args(&a, &schema, &csv, dataset))
        .unwrap();
    net.pdx_ok(&grant_args(&a, dataset, "100000", "share", GRANT))
        .unwrap();
}

/// `pdx backup create` of `home` (through its admin socket when it serves).
fn backup(net: &Testnet, home: &str, out: &str, pass: &str) -> Value {
    net.pdx_json(&[
        "backup",
        "create",
        "--home",
        home,
        "--out",
        out,
        "--backup-passphrase-file",
        pass,
    ])
    .unwrap()
}

fn pair(dir: &Path) -> Testnet {
    pair_in(pdx_crypto::Suite::Intl, dir)
}

fn pair_in(suite: pdx_crypto::Suite, dir: &Path) -> Testnet {
    network_in(suite, dir, &[("440000", "广东"), ("100000", "国家")])
}

/// Moves the home of 440000 aside and restores `backup` in its place.
fn restore_in_place(net: &Testnet, backup: &str, pass: &str) -> Value {
    let home = PathBuf::from(net.home("440000").unwrap());
    std::fs::rename(&home, home.with_extension("lost")).unwrap();
    net.pdx_json(&[
        "restore",
        "--from",
        backup,
        "--home",
        &s(&home),
        "--backup-passphrase-file",
        pass,
    ])
    .unwrap()
}

#[test]
fn a_backup_verifies_offline_and_any_altered_truncated_or_wrongly_unlocked_archive_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = people_node(dir.path());
    let pass = passphrase(dir.path());
    let bak = s(&dir.path().join("gd.bak"));
    let made = backup(&net, &home, &bak, &pass);
    assert_eq!(made["suite"], "intl");
    let checked = net
        .pdx_json(&["backup", "verify", &bak, "--backup-passphrase-file", &pass])
        .unwrap();
    assert_eq!(checked["header"]["dept"], "440000");
    assert_eq!(checked["header"]["audit_size"], made["audit_size"]);
    assert_eq!(checked["files"], made["files"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&bak).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No key file and no imported value appears in the archive's bytes.
    let bytes = std::fs::read(&bak).unwrap();
    let key = std::fs::read(Path::new(&home).join("keys/storage.key")).unwrap();
    assert!(
        !bytes
            .windows(key.len().min(64))
            .any(|w| w == &key[..key.len().min(64)])
    );
    assert!(!bytes.windows("张三".len()).any(|w| w == "张三".as_bytes()));
    // The backup is in the log.
    let backups = entries(&net, "440000", "backup");
    assert_eq!(backups.len(), 2, "started and written: {backups:?}");

    let refused = |path: &str, pass: &str, want: &str| {
        let out = net
            .pdx(&["backup", "verify", path, "--backup-passphrase-file", pass])
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{want:?} not in {err}");
    };
    let wrong = dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not it\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        &bak,
        &s(&wrong),
        "wrong backup passphrase, or the archive was altered",
    );
    let mut flipped = bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    let f = s(&dir.path().join("flipped.bak"));
    std::fs::write(&f, &flipped).unwrap();
    refused(&f, &pass, "was altered");
    let t = s(&dir.path().join("truncated.bak"));
    std::fs::write(&t, &bytes[..bytes.len() - 100]).unwrap();
    refused(&t, &pass, "truncated");
    // A restore into a home that is not empty is refused, and leaves it alone.
    let out = net
        .pdx(&[
            "restore",
            "--from",
            &bak,
            "--home",
            &home,
            "--backup-passphrase-file",
            &pass,
        ])
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
}

#[test]
fn a_restore_whose_peers_witnessed_nothing_more_resumes_at_once() {
    clean_restore(pdx_crypto::Suite::Intl);
}

#[test]
fn a_gm_backup_is_sealed_with_sm4_and_restores_the_same_way() {
    clean_restore(pdx_crypto::Suite::Gm);
}

fn clean_restore(suite: pdx_crypto::Suite) {
    let dir = tempfile::tempdir().unwrap();
    let mut net = pair_in(suite, dir.path());
    import(&net, dir.path(), "people");
    fetch(&net, "440000", "people");
    let pass = passphrase(dir.path());
    let bak = s(&dir.path().join("gd.bak"));
    let a = net.home("440000").unwrap();
    // Made while 440000 serves (through its admin socket).
    let made = backup(&net, &a, &bak, &pass);
    assert_eq!(made["suite"], suite.name());
    let checked = net
        .pdx_json(&["backup", "verify", &bak, "--backup-passphrase-file", &pass])
        .unwrap();
    let kdf = match suite {
        pdx_crypto::Suite::Gm => "pbkdf2-hmac-sm3",
        _ => "argon2id",
    };
    assert_eq!(checked["header"]["kdf"]["alg"], kdf);
    net.stop("440000", Duration::from_secs(10)).unwrap();
    restore_in_place(&net, &bak, &pass);
    net.start("440000").unwrap();
    // The backup is newer than anything the peer witnessed: nothing lost.
    assert!(entries(&net, "440000", "alarm").is_empty());
    let resumed = entries(&net, "440000", "backup");
    assert!(
        resumed.iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("none witnessed this log beyond it")),
        "{resumed:?}"
    );
    // And it exchanges as before.
    import(&net, dir.path(), "more");
    assert_eq!(fetch(&net, "440000", "more")["records"], 3);
}

#[test]
fn an_old_backup_restored_after_more_exchanges_is_alarmed_acknowledged_and_reported_as_a_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = pair(dir.path());
    import(&net, dir.path(), "people");
    fetch(&net, "440000", "people");
    let pass = passphrase(dir.path());
    let bak = s(&dir.path().join("gd.bak"));
    let a = net.home("440000").unwrap();
    let made = backup(&net, &a, &bak, &pass);
    let restored_size = made["audit_size"].as_u64().unwrap();
    // Keep exchanging: the peer witnesses the log well beyond the backup.
    import(&net, dir.path(), "later");
    fetch(&net, "440000", "later");
    net.stop("440000", Duration::from_secs(10)).unwrap();
    let b = net.home("100000").unwrap();

    // The disk is lost; the old backup comes back.
    restore_in_place(&net, &bak, &pass);
    let err = net.start("440000").unwrap_err().to_string();
    assert!(err.contains("was restored from a backup"), "{err}");
    assert!(err.contains("entries") && err.contains("are lost"), "{err}");
    assert!(err.contains("pdx restore --home"), "{err}");
    // The node: an alarm naming the range, and nothing signed over it.
    let alarms = entries(&net, "440000", "alarm");
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    let alarm = alarms[0]["detail"].as_str().unwrap().to_string();
    assert!(
        alarm.contains(&format!("entries {restored_size}..")),
        "{alarm}"
    );
    assert!(alarm.contains("100000 at size"), "{alarm}");
    let lost_to: u64 = alarm
        .split(&format!("entries {restored_size}.."))
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(lost_to > restored_size);
    // A command that would sign a checkpoint is refused until acknowledged.
    let out = net
        .pdx(&["catalog", "--home", &a, "--peer", "100000"])
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restored from a backup"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `pdx status` says so.
    let status = net.pdx_json(&["status", "--home", &a]).unwrap();
    assert!(
        status["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|x| x.as_str().unwrap_or("").contains("restored from a backup"))),
        "{status:#}"
    );
    // A second start asks again and alarms no more.
    assert!(net.start("440000").is_err());
    assert_eq!(entries(&net, "440000", "alarm").len(), 1);
    // The peer: it answered (audited), kept no fork evidence.
    let answered = entries(&net, "100000", "backup");
    assert!(
        answered.iter().any(|e| e["counterparty"] == "440000"
            && e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("is recovering from a backup")),
        "{answered:?}"
    );
    assert!(entries(&net, "100000", "alarm").is_empty());

    // The operator acknowledges; the node serves again.
    let ack = net
        .pdx_json(&[
            "restore",
            "--home",
            &a,
            "--acknowledge-loss",
            "--reason",
            "disk of the clearing node failed; restored the nightly backup",
        ])
        .unwrap();
    assert_eq!(ack["restored_size"], restored_size);
    assert_eq!(ack["lost_to"], lost_to);
    let disc = entries(&net, "440000", "discontinuity");
    assert_eq!(disc.len(), 1, "{disc:?}");
    net.start("440000").unwrap();
    import(&net, dir.path(), "after");
    assert_eq!(fetch(&net, "440000", "after")["records"], 3);
    // The peer took the new checkpoint in place of the lost one, and says so.
    let witnessed = entries(&net, "100000", "peer-checkpoint-witnessed");
    assert!(
        witnessed.iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("has an acknowledged discontinuity")),
        "{witnessed:?}"
    );
    assert!(entries(&net, "100000", "alarm").is_empty());

    // The regulator: the loss is documented, not a fork.
    let (ba, bb) = export_bundles(&net, dir.path(), &a, &b);
    let ca = s(&net.ca_dir().join("ca.crt"));
    let (code, report) = verify_json(&net, &[&s(&ba), "--witness", &s(&bb), "--ca", &ca]);
    assert_eq!(code, Some(3), "{report:#}");
    assert_eq!(report["verdict"], "unverifiable");
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().all(|f| f["severity"] != "tampered"),
        "{report:#}"
    );
    assert!(findings.iter().any(|f| f["case"] == "discontinuity"));
    let d = &report["discontinuities"][0];
    assert_eq!(d["restored_size"], restored_size);
    assert_eq!(d["lost_to"], lost_to);
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains("disk of the clearing node failed")
    );
    assert!(
        report["external_checkpoints_lost"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    // The peer's own log is intact.
    let (code, report) = verify_json(&net, &[&s(&bb), "--witness", &s(&ba), "--ca", &ca]);
    assert_eq!(code, Some(0), "{report:#}");
}
