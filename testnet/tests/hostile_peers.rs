//! Hostile peers over real QUIC: a peer that opens streams and never sends is
//! held to the stream limit and cut off by the read timeout (and audited),
//! while other peers are served normally.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_peer_that_opens_streams_without_sending_is_bounded_and_timed_out() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = pdx_testnet::Testnet::create(tmp.path(), "itest").unwrap();
    net.add_node("440000", "Guangdong").unwrap();
    net.add_node("100000", "National").unwrap();
    net.connect_all().unwrap();
    let cfg = net.node("440000").unwrap().home.join("pdx.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("read_timeout_secs = 120", "read_timeout_secs = 2");
    std::fs::write(&cfg, text).unwrap();
    net.start_all().unwrap();
    let addr: std::net::SocketAddr = net.node("440000").unwrap().addr.parse().unwrap();
    let identity = rcgen_identity(&net.ca_dir(), Some("urn:pdx:dept:130000"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let b = net.home("100000").unwrap();
    rt.block_on(async {
        let ep = raw_client(&net, Some(identity));
        let conn = ep.connect(addr, "440000.itest.pdx").unwrap().await.unwrap();
        // Open streams and send one byte on each (a stream exists for the peer
        // once data flows), never completing a frame.
        let mut held = Vec::new();
        for _ in 0..16 {
            let (mut send, recv) = conn.open_bi().await.unwrap();
            send.write_all(&[0]).await.unwrap();
            held.push((send, recv));
        }
        let extra = tokio::time::timeout(Duration::from_millis(1500), conn.open_bi()).await;
        assert!(
            extra.is_err(),
            "a 17th concurrent stream must wait for the limit"
        );
        // Another department is served meanwhile.
        let served = tokio::task::spawn_blocking({
            let pdx = net.pdx_path().to_path_buf();
            move || {
                std::process::Command::new(pdx)
                    .args(["catalog", "--home", &b, "--peer", "440000"])
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            served.status.success(),
            "{}",
            String::from_utf8_lossy(&served.stderr)
        );
        // The read timeout (2 s here) ends the silent handshake and the connection.
        let closed = tokio::time::timeout(Duration::from_secs(15), conn.closed()).await;
        assert!(closed.is_ok(), "the node must drop a silent peer");
        drop(held);
    });
    let refusals = entries(&net, "440000", "refused-request");
    assert!(
        refusals.iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out")),
        "{refusals:#?}"
    );
    net.stop_all(Duration::from_secs(5)).unwrap();
}
