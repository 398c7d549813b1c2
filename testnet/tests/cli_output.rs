//! The command line as scripts use it: output piped into a reader that goes
//! away early (`| head -1`) ends the command quietly, like ripgrep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::process::Command;

#[test]
fn listings_piped_into_head_exit_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = pdx_testnet::Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    let home = net.home("440000").unwrap();
    let schema = write(dir.path(), "people.toml", PEOPLE_SCHEMA);
    let csv = write(dir.path(), "people.csv", PEOPLE_CSV);
    net.pdx_ok(&[
        "import",
        "--home",
        &home,
        "--schema",
        &schema,
        "--csv",
        &csv,
        "--dataset",
        "people",
    ])
    .unwrap();
    let pdx = net.pdx_path().display().to_string();
    for listing in [
        "datasets --json",
        "audit show",
        "audit show --json",
        "releases --json",
        "status",
    ] {
        for reader in ["head -1", "true"] {
            let script = format!(
                "{pdx} {listing} --home {home} | {reader} >/dev/null; echo \"exit=${{PIPESTATUS[0]}}\""
            );
            let out = Command::new("bash")
                .args(["-c", &script])
                .env("RUST_BACKTRACE", "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stdout.contains("exit=0"),
                "pdx {listing} | {reader}: {stdout} {stderr}"
            );
            assert!(
                !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
                "pdx {listing} | {reader}: {stderr}"
            );
        }
    }
}
