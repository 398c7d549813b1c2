//! Floods from outside: many connections declaring large frames and
//! stalling, and many connections that fail TLS. The node's memory and its
//! audit log stay within documented bounds (docs/protocol.md §1, §2;
//! docs/audit-format.md "Refusals") while valid peers keep being served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_crypto::SigningKey;
use std::time::Duration;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn catalog_ok(net: &pdx_testnet::Testnet, from: &str) -> bool {
    let home = net.home(from).unwrap();
    net.pdx(&["catalog", "--home", &home, "--peer", "440000"])
        .unwrap()
        .status
        .success()
}

#[test]
fn large_declared_frames_that_stall_do_not_grow_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = pdx_testnet::Testnet::create(tmp.path(), "itest").unwrap();
    net.add_node("440000", "Guangdong").unwrap();
    net.add_node("100000", "National").unwrap();
    net.connect_all().unwrap();
    net.start_all().unwrap();
    let pid = net.node("440000").unwrap().pid.unwrap();
    assert!(catalog_ok(&net, "100000"));
    let before = rss_kib(pid);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let audit = SigningKey::generate(pdx_crypto::Suite::Intl).unwrap();
    let mut peak = before;
    rt.block_on(async {
        let mut held = Vec::new();
        // 40 connections from one certified department: on stream 0 a Hello
        // declaring 1 MiB, on 15 more streams Chunks declaring 16 MiB each,
        // then nothing.
        for _ in 0..40 {
            let (cert, key, _) = certified(&net.ca_dir(), "130000", Some(&audit));
            let ep = raw_client(&net, Some((cert, key)));
            let addr: std::net::SocketAddr = net.node("440000").unwrap().addr.parse().unwrap();
            let Ok(connecting) = ep.connect(addr, "440000.itest.pdx") else {
                continue;
            };
            let Ok(conn) = connecting.await else {
                continue;
            };
            let mut streams = Vec::new();
            for s in 0..16 {
                let Ok((mut send, recv)) = conn.open_bi().await else {
                    break;
                };
                let header: &[u8] = if s == 0 {
                    &[0x00, 0x10, 0x00, 0x00, 0x82, 1]
                } else {
                    &[0x00, 0xff, 0xff, 0x00, 0x82, 14]
                };
                let _ = send.write_all(header).await;
                streams.push((send, recv));
            }
            held.push((ep, conn, streams));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        peak = peak.max(rss_kib(pid));
        // Other departments are served meanwhile.
        let served = tokio::task::block_in_place(|| catalog_ok(&net, "100000"));
        assert!(served, "a valid peer must be served during the flood");
        peak = peak.max(rss_kib(pid));
        drop(held);
    });
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid);
    eprintln!("RSS of the flooded node: before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        peak <= before + 64 * 1024,
        "memory grew from {before} KiB to {peak} KiB under the flood"
    );
    // The per-department cap refused most of the 40 connections, audited.
    let refused = entries(&net, "440000", "refused-request");
    assert!(
        refused.iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("concurrent connections from 130000")),
        "{refused:#?}"
    );
    net.stop_all(Duration::from_secs(5)).unwrap();
}

#[test]
fn ten_thousand_failed_connections_add_a_bounded_number_of_audit_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = pdx_testnet::Testnet::create(tmp.path(), "itest").unwrap();
    net.add_node("440000", "Guangdong").unwrap();
    net.add_node("100000", "National").unwrap();
    net.connect_all().unwrap();
    net.start_all().unwrap();
    let count = |net: &pdx_testnet::Testnet| entries(net, "440000", "refused-request").len();
    let before = count(&net);
    let addr: std::net::SocketAddr = net.node("440000").unwrap().addr.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let attempts = 10_000usize;
    let started = std::time::Instant::now();
    rt.block_on(async {
        // No client certificate: every TLS handshake fails at the server.
        let ep = raw_client(&net, None);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..attempts {
            let ep = ep.clone();
            tasks.spawn(async move {
                if let Ok(c) = ep.connect(addr, "440000.itest.pdx") {
                    if i % 10 == 0 {
                        // Some just vanish mid-handshake.
                        drop(c);
                    } else if let Ok(conn) = c.await {
                        let _ = conn.open_bi().await;
                    }
                }
            });
            if tasks.len() >= 64 {
                let _ = tasks.join_next().await;
            }
            if i == attempts / 2 {
                let served = tokio::task::block_in_place(|| catalog_ok(&net, "100000"));
                assert!(served, "a valid peer must be served during the flood");
            }
        }
        while tasks.join_next().await.is_some() {}
        ep.close(0u32.into(), b"");
    });
    eprintln!("{attempts} failed connections in {:?}", started.elapsed());
    assert!(
        catalog_ok(&net, "100000"),
        "a valid peer must be served after the flood"
    );
    let during = count(&net) - before;
    assert!(
        during <= pdx_node::service::refusals::KINDS_PER_SOURCE + 2,
        "{during} refusal entries for {attempts} connections from one address"
    );
    // The rest is summarised when the window closes (here: at shutdown).
    net.stop("440000", Duration::from_secs(10)).unwrap();
    let all = entries(&net, "440000", "refused-request");
    let summarised: u64 = all
        .iter()
        .filter(|e| {
            e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("further refusals from address 127.0.0.1")
        })
        .map(|e| e["record_count"].as_u64().unwrap_or(0))
        .sum();
    let total = all.len() - before;
    eprintln!("refused-request entries: {total}, summarising {summarised} refusals");
    assert!(summarised >= (attempts as u64) / 4, "{all:#?}");
    assert!(total <= pdx_node::service::refusals::KINDS_PER_SOURCE + 4);
    net.stop_all(Duration::from_secs(5)).unwrap();
}
