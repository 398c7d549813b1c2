//! A full disk (docs/operations.md "Disk full"), on a size-limited tmpfs
//! holding one node's home: the node refuses what would eat its reserve
//! before RocksDB runs out of space, acknowledges no chunk it did not store,
//! keeps serving reads, and writes again once space is freed, without a
//! restart. Mounting needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_testnet::Testnet;
use std::io::Write;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
const RESERVE_MIB: u64 = pdx_node::store::space::DEFAULT_RESERVE_MIB;

struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `at`; None where this machine forbids
    /// it (a container without the capability), with the reason.
    fn mount(at: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs at {}: {}",
                at.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn free(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap();
    st.f_bavail * st.f_frsize
}

/// Fills the filesystem of `dir` until `left` bytes are free.
fn fill_to(dir: &Path, left: u64) -> PathBuf {
    let path = dir.join("ballast");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let chunk = vec![0u8; MIB as usize];
    while free(dir) > left + MIB {
        f.write_all(&chunk).unwrap();
    }
    let rest = free(dir).saturating_sub(left) as usize;
    f.write_all(&chunk[..rest.min(chunk.len())]).unwrap();
    f.sync_all().unwrap();
    path
}

fn people_csv(rows: usize) -> String {
    let mut csv = String::from("pid,name,certno,city,amount\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "P{i:07},张三,11010519491231002X,广州,{}.50\n",
            i % 1000
        ));
    }
    csv
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn a_full_disk_fails_closed_loses_nothing_and_recovers_without_restart() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    let b_home = dir.path().join("nodes").join("100000");
    let Some(_fs) = Tmpfs::mount(&b_home, RESERVE_MIB + 64) else {
        return;
    };
    net.add_node("100000", "国家").unwrap();
    net.connect_all().unwrap();
    net.start_all().unwrap();
    let a = net.home("440000").unwrap();
    let b = s(&b_home);
    let schema = write(dir.path(), "people.toml", PEOPLE_SCHEMA);
    let csv = write(dir.path(), "people.csv", &people_csv(60_000));
    net.pdx_ok(&import_args(&a, &schema, &csv, "people"))
        .unwrap();
    net.pdx_ok(&grant_args(
        &a,
        "people",
        "100000",
        "share",
        &["--agreement", "DSA-1", "--expires", "+30d"],
    ))
    .unwrap();
    let fetch = fetch_args(&b, "440000", "people", "share");

    // 3 MiB above the reserve: a few chunks fit, then the transfer stops.
    let ballast = fill_to(&b_home, (RESERVE_MIB + 3) * MIB);
    let out = net.pdx(&fetch).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the fetch cannot complete: {err}");
    assert!(err.contains("not enough disk space"), "{err}");
    // Reads go on; a change that needs an audit entry is refused.
    let status = net.pdx_json(&["status", "--home", &b]).unwrap();
    let pending = status["pending_transfers_in"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{status:#}");
    let stored = pending[0]["stored"].as_u64().unwrap();
    let chunks = pending[0]["chunks"].as_u64().unwrap();
    assert!(stored < chunks, "{status:#}");
    // Into the reserve: whatever needs an audit entry is refused now.
    fill_to(&b_home, (RESERVE_MIB - 1) * MIB);
    let add = [
        "peer",
        "add",
        "--home",
        &b,
        "--dept",
        "120000",
        "--addr",
        "127.0.0.1:9",
    ];
    let out = net.pdx(&add).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not enough disk space for an audit entry"),
        "{err}"
    );
    // The sender logged no `send`: nothing was acknowledged in full.
    assert!(entries(&net, "440000", "send").is_empty());

    // Space returns: the same running node writes again and the transfer
    // resumes from what it stored.
    std::fs::remove_file(&ballast).unwrap();
    net.pdx_ok(&add).unwrap();
    let done = net.pdx_json(&fetch).unwrap();
    assert_eq!(done["records"], 60_000, "{done:#}");
    assert_eq!(done["resumed_from"], stored, "{done:#}");

    // An import that cannot fit is refused before anything is written.
    let ballast = fill_to(&b_home, (RESERVE_MIB + 1) * MIB);
    let out = net.pdx(&import_args(&b, &schema, &csv, "mine")).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not enough disk space for importing"), "{err}");
    let datasets = net.pdx_json(&["datasets", "--home", &b]).unwrap();
    assert_eq!(datasets.as_array().map(Vec::len), Some(0), "{datasets}");
    std::fs::remove_file(&ballast).unwrap();
    net.pdx_ok(&import_args(&b, &schema, &csv, "mine")).unwrap();
}
