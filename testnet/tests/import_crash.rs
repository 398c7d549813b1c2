//! An import and its audit entry are one durable step: a `pdx import` process
//! killed at any point leaves either the previous dataset or the new one with
//! its `import` entry, never an import without its entry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{PEOPLE_SCHEMA, write};
use pdx_testnet::Testnet;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The dataset's digest and the digests of its `import` entries, oldest first.
fn state(net: &Testnet, home: &str) -> (Option<String>, Vec<String>) {
    let datasets = net.pdx_json(&["datasets", "--home", home]).unwrap();
    let current = datasets
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dataset"] == "people")
        .map(|d| d["digest"].as_str().unwrap().to_string());
    let imports = net
        .pdx_json(&["audit", "show", "--home", home, "--kind", "import"])
        .unwrap();
    let digests = imports
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect();
    (current, digests)
}

fn rows(n: usize, salt: &str) -> String {
    let mut csv = String::from("pid,name,certno,city,amount\n");
    for i in 0..n {
        csv.push_str(&format!(
            "P{salt}{i},张三,11010519491231002X,广州,{}.{:02}\n",
            i % 500,
            i % 100
        ));
    }
    csv
}

fn import(
    net: &Testnet,
    home: &str,
    schema: &str,
    csv: &str,
    failpoint: Option<&str>,
) -> std::process::ExitStatus {
    let mut cmd = Command::new(net.pdx_path());
    cmd.args([
        "import",
        "--home",
        home,
        "--schema",
        schema,
        "--csv",
        csv,
        "--dataset",
        "people",
        "--replace",
    ])
    .env("PDX_OPERATOR", "crash-test")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(f) = failpoint {
        cmd.env("PDX_FAILPOINT", f);
    }
    cmd.status().unwrap()
}

fn assert_consistent(net: &Testnet, home: &str) -> (Option<String>, usize) {
    let (current, imports) = state(net, home);
    if let Some(d) = &current {
        assert_eq!(
            imports.last(),
            Some(d),
            "the dataset's current version has no import entry (entries: {imports:?})"
        );
    }
    let verify = net.pdx(&["audit", "verify", "--home", home]).unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    (current, imports.len())
}

#[test]
fn a_killed_import_leaves_the_old_dataset_or_the_new_one_with_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    let home = net.home("440000").unwrap();
    let schema = write(dir.path(), "people.toml", PEOPLE_SCHEMA);
    let v1 = write(dir.path(), "v1.csv", &rows(50, "a"));
    let v2 = write(dir.path(), "v2.csv", &rows(80, "b"));
    assert!(import(&net, &home, &schema, &v1, None).success());
    let (first, n) = assert_consistent(&net, &home);
    assert_eq!(n, 1);

    // Killed just before the commit: nothing changed, no entry.
    let st = import(&net, &home, &schema, &v2, Some("import-before-commit"));
    assert!(!st.success(), "the failpoint must kill the process");
    let (current, n) = assert_consistent(&net, &home);
    assert_eq!((current.clone(), n), (first.clone(), 1));

    // Killed just after: the new version and its entry are both there.
    let st = import(&net, &home, &schema, &v2, Some("import-after-commit"));
    assert!(!st.success());
    let (current, n) = assert_consistent(&net, &home);
    assert_eq!(n, 2);
    assert_ne!(current, first);

    // Killed at arbitrary points of larger imports.
    let big = write(dir.path(), "big.csv", &rows(60_000, "c"));
    for delay_ms in [5u64, 40, 90, 150, 250, 400] {
        let mut child = Command::new(net.pdx_path())
            .args([
                "import",
                "--home",
                &home,
                "--schema",
                &schema,
                "--csv",
                &big,
                "--dataset",
                "people",
                "--replace",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        pdx_testnet::signal(child.id(), pdx_testnet::Signal::KILL);
        let _ = child.wait();
        assert_consistent(&net, &home);
    }
}
