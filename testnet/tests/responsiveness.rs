//! No blocking work on the async workers: while a node produces a 1M-record
//! release for one peer (the de-identification engine on the blocking pool),
//! it keeps answering another peer's catalog requests, handshake included,
//! within 200 ms. Release production runs at lower priority (`bulk`), so
//! requests are scheduled first when the cores are busy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::import_settlement;
use pdx_node::api::{Outcome, Request, execute};
use pdx_node::config::Home;
use pdx_node::progress::NoProgress;
use pdx_node::service::{Services, open_node};
use pdx_testnet::Testnet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn a_node_answers_catalogs_within_200_ms_while_producing_a_1m_record_release() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), "itest").unwrap();
    for (d, n) in [("440000", "广东"), ("100000", "国家"), ("110000", "北京")] {
        net.add_node(d, n).unwrap();
    }
    net.connect_all().unwrap();
    // 100000 stands for another machine; on this one its 1M-record store
    // would share the disk journal with the measured node, and its flushes
    // would stall 440000's fsyncs. Its home goes to RAM where there is room.
    let shm = tempfile::Builder::new()
        .prefix("pdx-peer-")
        .tempdir_in("/dev/shm");
    if let Ok(shm) = &shm
        && rustix::fs::statvfs(shm.path())
            .is_ok_and(|st| st.f_bavail.saturating_mul(st.f_frsize) >= 2 << 30)
    {
        let home = std::path::PathBuf::from(net.home("100000").unwrap());
        let moved = shm.path().join("100000");
        let copied = Command::new("cp").arg("-a").arg(&home).arg(&moved).status();
        assert!(copied.unwrap().success(), "cannot copy the peer's home");
        std::fs::remove_dir_all(&home).unwrap();
        std::os::unix::fs::symlink(&moved, &home).unwrap();
    } else {
        eprintln!("no room in /dev/shm: the fetching peer shares the disk");
    }
    net.start("440000").unwrap();
    net.start("100000").unwrap();
    let (a, b, c) = (
        net.home("440000").unwrap(),
        net.home("100000").unwrap(),
        net.home("110000").unwrap(),
    );
    // 2.45M draws of 5 provinces: about 1.01M treated in 440000.
    import_settlement(
        &net,
        dir.path(),
        "440000",
        "month",
        2_450_000,
        Some("440000"),
    );
    for to in ["100000", "110000"] {
        net.pdx_ok(&[
            "grant",
            "--home",
            &a,
            "--dataset",
            "month",
            "--to",
            to,
            "--profile",
            "analytics",
            "--purpose",
            "statistics",
            "--agreement",
            "DSA-1",
            "--expires",
            "+1d",
        ])
        .unwrap();
    }

    // The catalog client: 110000's node, in this process.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let svc = runtime.block_on(async {
        let node = Arc::new(open_node(&Home::new(&c), None).unwrap());
        Services::new(node, false).unwrap()
    });
    let catalog = || {
        let started = Instant::now();
        let out = runtime
            .block_on(execute(
                &svc,
                Request::Catalog {
                    peer: "440000".into(),
                },
                "test",
                Arc::new(NoProgress),
            ))
            .unwrap();
        assert!(
            matches!(&out, Outcome::Catalog(c) if c.len() == 1),
            "{out:?}"
        );
        started.elapsed()
    };
    let idle = catalog();

    // 100000 fetches the 1M-record release; 440000 produces it meanwhile.
    let fetch_started = Instant::now();
    let mut fetch = Command::new(net.pdx_path())
        .args([
            "fetch",
            "--home",
            &b,
            "--peer",
            "440000",
            "--dataset",
            "month",
            "--profile",
            "analytics",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut during = Vec::new();
    while fetch.try_wait().unwrap().is_none() {
        during.push(catalog());
        std::thread::sleep(Duration::from_millis(50));
    }
    let fetch_took = fetch_started.elapsed();
    assert!(fetch.wait().unwrap().success(), "the fetch failed");
    // The release took long enough for the samples to mean something.
    assert!(
        fetch_took > Duration::from_secs(1),
        "fetch took only {fetch_took:?}"
    );
    assert!(
        during.len() >= 5,
        "only {} catalog requests during the release",
        during.len()
    );
    let worst = during.iter().max().copied().unwrap_or_default();
    eprintln!(
        "catalog: idle {idle:?}; during the {fetch_took:?} release {} requests, worst {worst:?}",
        during.len()
    );
    assert!(
        worst < Duration::from_millis(200),
        "a catalog request took {worst:?} while the release was produced (idle: {idle:?})"
    );
    runtime.block_on(svc.net.shutdown());
}
