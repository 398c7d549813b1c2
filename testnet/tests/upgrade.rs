//! Store format upgrades (docs/design.md "Store format"): a store written by
//! the previous format (a fixture made by that release's binary) is migrated
//! in one audited step and keeps its data; a store of a newer format is
//! refused with an error that names both formats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_node::store::{STORE_FORMAT, STORE_FORMAT_KEY, Store};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fixture: a home of department 440000 holding the dataset `people`,
/// written by the release before store formats were recorded (format 1).
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/store-format-1.tar.gz"
);

fn unpack(dir: &Path) -> PathBuf {
    let st = Command::new("tar")
        .args(["xzf", FIXTURE, "-C"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "tar xzf {FIXTURE}");
    dir.join("home")
}

fn pdx(args: &[&str]) -> Output {
    Command::new(pdx_testnet::pdx_bin().unwrap())
        .args(args)
        .env("PDX_LOG", "warn")
        .output()
        .unwrap()
}

fn pdx_json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = pdx(&a);
    assert!(
        out.status.success(),
        "pdx {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn migrations(home: &str) -> Vec<String> {
    pdx_json(&["audit", "show", "--home", home, "--kind", "config-change"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .filter(|d| d.starts_with("store migrated"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_format_1_store_is_migrated_once_with_an_audit_entry_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let home = unpack(dir.path());
    let home = home.display().to_string();
    let datasets = pdx_json(&["datasets", "--home", &home]);
    let people = datasets
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dataset"] == "people")
        .unwrap_or_else(|| panic!("dataset people after migration: {datasets}"));
    // What the fixture's binary imported, and its digest, unchanged.
    assert_eq!(people["rows"], 2, "{people}");
    assert_eq!(
        people["digest"],
        "295d1584e28681791ded272c515608dd6a46605397486f76927d0267325dbc4b"
    );
    let found = migrations(&home);
    assert_eq!(
        found,
        vec![format!(
            "store migrated from format 1 to {STORE_FORMAT}: the format version is recorded; no record is rewritten"
        )]
    );
    // Opening again migrates nothing.
    pdx_json(&["status", "--home", &home]);
    assert_eq!(migrations(&home).len(), 1);
    // The log, with the migration in it, verifies.
    let out = pdx(&["audit", "verify", "--home", &home]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_store_of_a_newer_format_is_refused_naming_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let home = unpack(dir.path());
    // Migrate it, then stamp it as the next format would.
    drop(Store::open(&home.join("db")).unwrap());
    {
        let path = home.join("db");
        let opts = rocksdb::Options::default();
        let families = rocksdb::DB::list_cf(&opts, &path).unwrap();
        let mut db = rocksdb::DB::open_cf(&opts, &path, families).unwrap();
        let newer = STORE_FORMAT + 1;
        db.put(STORE_FORMAT_KEY, newer.to_be_bytes()).unwrap();
        // A newer format may add a family this binary does not know.
        db.create_cf("from-the-future", &opts).unwrap();
    }
    let home = home.display().to_string();
    let out = pdx(&["datasets", "--home", &home]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!(
        "store format {} was written by a newer pdx; this binary reads formats up to {STORE_FORMAT}",
        STORE_FORMAT + 1
    );
    assert!(err.contains(&want), "{err}");
}
