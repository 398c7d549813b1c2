//! A steward's first day: nothing is lost by a slip (an id reused, a wrong
//! encoding), failing commands print no personal data, unsafe defaults say
//! so, and a second `pdx serve` says what is going on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_testnet::Testnet;
use pdx_testnet::leaks::personal_data_in;
use std::path::Path;
use std::time::Duration;

const SETTLEMENT: &str = include_str!("../../schemas/medical_insurance/settlement.toml");

fn one_node(dir: &Path) -> (Testnet, String) {
    let mut net = Testnet::create(dir, "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    let home = net.home("440000").unwrap();
    (net, home)
}

#[test]
fn failing_imports_print_no_personal_data_and_the_rejects_file_says_it_holds_some() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = one_node(dir.path());
    let schema = write(dir.path(), "settlement.toml", SETTLEMENT);
    let good = settlement_csv(dir.path(), "good.csv", 400, 5, Some("440000"));
    let text = std::fs::read_to_string(&good).unwrap();
    // The check can fail: the file is full of identities.
    assert!(personal_data_in(&text).len() > 100);
    // Break three rows: a wrong check digit, a malformed person number, a
    // name too long.
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (certno, psn_no, psn_name) = (col("certno"), col("psn_no"), col("psn_name"));
    let mut edit = |line: usize, f: &dyn Fn(&mut Vec<String>)| {
        let mut cells: Vec<String> = lines[line].split(',').map(String::from).collect();
        f(&mut cells);
        lines[line] = cells.join(",");
    };
    edit(1, &|c| {
        let last = if c[certno].ends_with('1') { '2' } else { '1' };
        c[certno].pop();
        c[certno].push(last);
    });
    edit(2, &|c| c[psn_no].push('x'));
    edit(3, &|c| c[psn_name] = c[psn_name].repeat(30));
    let bad = write(dir.path(), "bad.csv", &(lines.join("\n") + "\n"));

    // Reject mode: the whole file is refused, problems listed with line,
    // column, field and rule, values masked. (`Testnet::pdx` itself refuses
    // a failing command that prints personal data.)
    let out = net.pdx(&import_args(&home, &schema, &bad, "m")).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2, column") && err.contains("(certno)") && err.contains("line 3"),
        "{err}"
    );
    assert!(personal_data_in(&err).is_empty(), "{err}");

    // Skip mode: the good rows are imported; the summary masks, the 0600
    // rejects file holds whole rows and says so in its header.
    let rejects = dir.path().join("rejects.csv");
    let mut args = import_args(&home, &schema, &bad, "m");
    let r = s(&rejects);
    args.extend(["--on-error", "skip", "--rejects", &r]);
    let out = net.pdx(&args).unwrap();
    assert!(out.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(personal_data_in(&printed).is_empty(), "{printed}");
    let kept = std::fs::read_to_string(&rejects).unwrap();
    assert!(
        kept.lines()
            .next()
            .unwrap()
            .contains("personal data: keep this file private")
    );
    assert_eq!(kept.lines().count(), 4, "{kept}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&rejects).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn importing_under_an_existing_id_is_refused_unless_replace_or_append_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = one_node(dir.path());
    let schema = write(dir.path(), "people.toml", PEOPLE_SCHEMA);
    let csv = write(dir.path(), "people.csv", PEOPLE_CSV);
    net.pdx_ok(&import_args(&home, &schema, &csv, "people"))
        .unwrap();
    let first = net.pdx_json(&["datasets", "--home", &home]).unwrap()[0].clone();
    let more = write(
        dir.path(),
        "more.csv",
        "pid,name,certno,city,amount\nP009,赵六,11010519491231002X,广州,1.00\n",
    );
    let out = net
        .pdx(&import_args(&home, &schema, &more, "people"))
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("dataset people already exists (3 rows") && err.contains("--replace"),
        "{err}"
    );
    let still = net.pdx_json(&["datasets", "--home", &home]).unwrap()[0].clone();
    assert_eq!(still["digest"], first["digest"], "nothing was replaced");

    let mut args = import_args(&home, &schema, &more, "people");
    args.push("--replace");
    net.pdx_ok(&args).unwrap();
    let now = net.pdx_json(&["datasets", "--home", &home]).unwrap()[0].clone();
    assert_eq!(now["rows"], 1);
    let imports = entries(&net, "440000", "import");
    let detail = imports.last().unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains(&format!(
            "replaces the previous version (digest {}, 3 rows) with digest {}",
            first["digest"].as_str().unwrap(),
            now["digest"].as_str().unwrap()
        )),
        "{detail}"
    );

    // A growing dataset: --append adds rows under the same schema.
    let mut args = import_args(&home, &schema, &more, "people");
    args.push("--append");
    let v = net.pdx_json(&args).unwrap();
    assert_eq!(v["records"], 2, "{v:#}");
    let detail = entries(&net, "440000", "import").last().unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains(&format!(
            "appended to the previous version (digest {}, 1 rows)",
            now["digest"].as_str().unwrap()
        )) && detail.ends_with("2 rows"),
        "{detail}"
    );
    // ... but not under another schema, and not to nothing.
    let other = write(
        dir.path(),
        "other.toml",
        &PEOPLE_SCHEMA.replace("residents (test)", "other"),
    );
    let mut args = import_args(&home, &other, &more, "people");
    args.push("--append");
    let out = net.pdx(&args).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--append needs the same schema"), "{err}");
    let mut args = import_args(&home, &schema, &more, "nothing-yet");
    args.push("--append");
    assert_eq!(net.pdx(&args).unwrap().status.code(), Some(5));
}

#[test]
fn a_file_in_another_encoding_is_refused_naming_the_encoding_it_looks_like() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = one_node(dir.path());
    let schema = write(dir.path(), "people.toml", PEOPLE_SCHEMA);
    let utf8 = write(dir.path(), "people.csv", PEOPLE_CSV);
    let (gb, _, _) = encoding_rs::GB18030.encode(PEOPLE_CSV);
    let gb_path = dir.path().join("people-gb.csv");
    std::fs::write(&gb_path, &gb).unwrap();
    for (file, given, looks, flag) in [
        (
            utf8.clone(),
            "gb18030",
            "looks like UTF-8",
            "--encoding utf-8",
        ),
        (
            s(&gb_path),
            "utf-8",
            "looks like GB18030",
            "--encoding gb18030",
        ),
    ] {
        let mut args = import_args(&home, &schema, &file, "people");
        args.extend(["--encoding", given]);
        let out = net.pdx(&args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(looks) && err.contains(flag), "{err}");
    }
    assert_eq!(
        net.pdx_json(&["datasets", "--home", &home])
            .unwrap()
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[test]
fn a_province_imports_only_cross_province_records_it_treated() {
    let dir = tempfile::tempdir().unwrap();
    let (net, home) = one_node(dir.path());
    let schema = write(dir.path(), "settlement.toml", SETTLEMENT);
    // Records of every treating province: those treated elsewhere are not
    // Guangdong's to import (refused, fail closed).
    let all = settlement_csv(dir.path(), "all.csv", 300, 5, None);
    let out = net.pdx(&import_args(&home, &schema, &all, "m")).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("treatment_region") && err.contains("(mdtrtarea_admvs)"),
        "{err}"
    );
    // Its own records, plus two of its own insured: those are excluded and
    // counted, never cleared.
    let own = settlement_csv(dir.path(), "own.csv", 300, 5, Some("440000"));
    let text = std::fs::read_to_string(&own).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let insured = lines[0]
        .split(',')
        .position(|h| h == "insuplc_admdvs")
        .unwrap();
    for line in lines.iter_mut().skip(1).take(2) {
        let mut cells: Vec<String> = line.split(',').map(String::from).collect();
        cells[insured] = "440106".into();
        *line = cells.join(",");
    }
    let own = write(dir.path(), "own-mixed.csv", &(lines.join("\n") + "\n"));
    let v = net
        .pdx_json(&import_args(&home, &schema, &own, "m"))
        .unwrap();
    assert_eq!(v["excluded"], 2, "{v:#}");
    assert_eq!(v["rows"].as_u64(), Some(lines.len() as u64 - 3), "{v:#}");
    let detail = entries(&net, "440000", "import")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("2 excluded by cross_region"), "{detail}");
}

#[test]
fn unsafe_defaults_warn_and_a_grant_without_expiry_is_recorded_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    let home = net.home("440000").unwrap();
    // `pdx init` without a passphrase says the keys are unencrypted.
    let certs = s(&net.node("440000").unwrap().certs);
    let other = s(&dir.path().join("plain-home"));
    let out = net
        .pdx(&[
            "init",
            "--home",
            &other,
            "--cert-dir",
            &certs,
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: no passphrase") && err.contains("--passphrase-file"),
        "{err}"
    );

    let schema = write(dir.path(), "people.toml", PEOPLE_SCHEMA);
    let csv = write(dir.path(), "people.csv", PEOPLE_CSV);
    net.pdx_ok(&import_args(&home, &schema, &csv, "people"))
        .unwrap();
    let out = net
        .pdx(&grant_args(
            &home,
            "people",
            "110000",
            "share",
            &["--agreement", "A-1"],
        ))
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: no --expires"), "{err}");
    let grant = entries(&net, "440000", "grant");
    assert!(
        grant[0]["detail"]
            .as_str()
            .unwrap()
            .contains("never: no expiry was given"),
        "{grant:#?}"
    );
}

#[test]
fn a_second_serve_on_a_served_home_says_it_is_already_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    net.start("440000").unwrap();
    let home = net.home("440000").unwrap();
    let out = net.pdx(&["serve", "--home", &home]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is already served") && err.contains("admin socket"),
        "{err}"
    );
    // The first one is unharmed.
    net.pdx_ok(&["status", "--home", &home]).unwrap();
    net.stop_all(Duration::from_secs(10)).unwrap();
}
