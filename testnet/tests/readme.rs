//! Docs as tests: the shell blocks of README.md's "Using a node" section run,
//! in order, in one bash with `set -euo pipefail`, on real nodes (fixed
//! ports 7100-7103), so the README cannot drift from the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `sh` code blocks of the README section `heading`, in order.
fn shell_blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"));
    let body = &readme[start + heading.len() + 2..];
    let section = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let code = &rest[open + 6..];
        let close = code.find("```").expect("an sh block is closed");
        blocks.push(code[..close].to_string());
        rest = &code[close + 3..];
    }
    blocks
}

/// Stops what the walk-through started, even when it failed half-way.
struct Cleanup {
    month: PathBuf,
    homes: &'static [&'static str],
    group: Option<u32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for home in self.homes {
            let pid = std::fs::read_to_string(self.month.join(home).join("serve.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        if let Some(pid) = self
            .group
            .and_then(|g| rustix::process::Pid::from_raw(g as i32))
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

fn bin_dir(path: &Path) -> String {
    path.parent().unwrap().display().to_string()
}

/// Runs `script` in bash (`set -euo pipefail` included by the caller) in a
/// fresh directory next to a `schemas` link, with `pdx` and `pdx-testnet` on
/// the PATH; fails the test unless it succeeds within `limit_secs`. Returns
/// the directory, the guard that stops the nodes of `homes` (under
/// `workdir`) and the group, and stdout.
fn run_script(
    root: &Path,
    script: &str,
    workdir: &str,
    homes: &'static [&'static str],
    limit_secs: u64,
) -> (tempfile::TempDir, Cleanup, String) {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root.join("schemas"), dir.path().join("schemas")).unwrap();
    let pdx = pdx_testnet::pdx_bin().unwrap();
    let path = format!(
        "{}:{}:{}",
        bin_dir(&pdx),
        bin_dir(Path::new(env!("CARGO_BIN_EXE_pdx-testnet"))),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = dir.path().join("run.log");
    let mut child = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("PDX_OPERATOR", "readme")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("run.err")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let cleanup = Cleanup {
        month: dir.path().join(workdir),
        homes,
        group: Some(child.id()),
    };
    let deadline = Instant::now() + Duration::from_secs(limit_secs);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the README section ran over {limit_secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let err = std::fs::read_to_string(dir.path().join("run.err")).unwrap_or_default();
    assert!(
        status.success(),
        "{status}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    (dir, cleanup, out)
}

#[test]
fn the_readme_walk_through_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = shell_blocks(&readme, "## Using a node");
    assert!(blocks.len() >= 8, "{} blocks", blocks.len());
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    // The whole month is there, as a newcomer must run it.
    for step in [
        "pdx ca issue",
        "--passphrase-file",
        "pdx serve",
        "pdx peer add",
        "pdx keys fetch",
        "pdx releases",
        "--registry",
        "--categories",
        "pdx audit export",
        "pdx audit verify",
    ] {
        assert!(script.contains(step), "the walk-through lacks {step:?}");
    }

    let (dir, _cleanup, out) =
        run_script(&root, &script, "month", &["nat", "gd", "bj", "nbs"], 600);
    // What the month must show: cleared, confirmed, aggregated, verified.
    for expected in [
        "clearing over 2 releases",
        "verdict      VALID",
        "4 transfers matched in both logs",
        "no mismatches",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    assert!(
        !out.contains("TAMPERED") && !out.contains("UNVERIFIABLE"),
        "{out}"
    );
    // The nodes stop when asked (each removes its pid file last).
    let stopping = Instant::now() + Duration::from_secs(30);
    for home in ["nat", "gd", "bj", "nbs"] {
        let pid = dir.path().join("month").join(home).join("serve.pid");
        while pid.exists() {
            assert!(Instant::now() < stopping, "{home} is still running");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn the_online_services_section_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = shell_blocks(&readme, "## Online services");
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    for step in [
        "pdx gateway enable",
        "pdx service publish",
        "--service medical_insurance.settlement_calc --to 440000",
        "curl",
        "Idempotency-Key",
        "pdx call ",
        "pdx audit reconcile",
        "pdx calls export",
    ] {
        assert!(script.contains(step), "the section lacks {step:?}");
    }
    let (dir, _cleanup, out) = run_script(&root, &script, "calls", &["hub", "gd", "bj"], 300);
    for expected in [
        "\"fund_pay_sumamt\":\"700.00\"",
        "replayed",
        "calls matched in every party's log",
        "no mismatches",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    assert!(
        std::fs::metadata(dir.path().join("calls/dispute.cbor"))
            .unwrap()
            .len()
            > 500
    );
}

#[test]
fn the_gm_network_section_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = shell_blocks(&readme, "## A 国密 (gm) network");
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    for step in [
        "--suite gm",
        "pdx forward",
        "pdx export",
        "pdx audit verify",
    ] {
        assert!(script.contains(step), "the section lacks {step:?}");
    }
    let (dir, _cleanup, out) = run_script(&root, &script, "gmnet", &["nat", "gd", "bj"], 300);
    for expected in [
        "suite gm: SM2, SM3, SM4-GCM",
        "verdict      VALID",
        "no mismatches",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    // Beijing opened what was sealed for it: identities in clear in its export.
    let csv = std::fs::read_to_string(dir.path().join("gmnet/relayed-to-bj.csv")).unwrap();
    assert!(csv.lines().count() > 10, "{csv}");
    let cert = std::fs::read_to_string(dir.path().join("gmnet/certs/gd/node.crt")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
}
