//! The protocol as an outside implementer meets it (docs/protocol.md): every
//! malformed, oversized, silent or forged input is answered with the error
//! code the spec names and audited; a department cannot present a second
//! audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_crypto::SigningKey;
use pdx_node::proto::msg::{ErrorCode, Message, PROTOCOL_VERSION};
use std::time::Duration;

fn code(m: &Result<Message, String>) -> Option<ErrorCode> {
    match m {
        Ok(Message::Error(e)) => Some(e.code),
        _ => None,
    }
}

fn details(net: &pdx_testnet::Testnet, dept: &str, kind: &str) -> Vec<String> {
    entries(net, dept, kind)
        .iter()
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn malformed_oversized_and_silent_requests_get_their_codes_and_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = pdx_testnet::Testnet::create(tmp.path(), "itest").unwrap();
    net.add_node("440000", "Guangdong").unwrap();
    let cfg = net.node("440000").unwrap().home.join("pdx.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("read_timeout_secs = 120", "read_timeout_secs = 2");
    std::fs::write(&cfg, text).unwrap();
    net.start_all().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let audit = SigningKey::generate(pdx_crypto::Suite::Intl).unwrap();
    let (cert, key, identity) = certified(&net.ca_dir(), "130000", Some(&audit));
    let h = hello("130000", &identity, &cert, &audit, &audit);
    rt.block_on(async {
        let peer = RawPeer::connect(&net, "440000", (cert, key), h)
            .await
            .unwrap_or_else(|e| panic!("handshake: {e:?}"));
        // A Chunk frame declaring more than its 16 MiB cap: too-large.
        let r = peer.request(&[0x01, 0x00, 0x10, 0x00, 0x82, 14]).await;
        assert_eq!(code(&r), Some(ErrorCode::TooLarge), "{r:?}");
        // The largest length there is: judged by its type, not "type 0".
        let r = peer.request(&[0xff, 0xff, 0xff, 0xff, 0x82, 6]).await;
        assert_eq!(code(&r), Some(ErrorCode::TooLarge), "{r:?}");
        if let Ok(Message::Error(e)) = &r {
            assert!(e.message.contains("message type 6"), "{}", e.message);
        }
        // An unknown type, a payload of the wrong shape, duplicate map keys.
        let r = peer.request(&[0, 0, 0, 2, 0x82, 99]).await;
        assert_eq!(code(&r), Some(ErrorCode::BadRequest), "{r:?}");
        let r = peer.request(&[0, 0, 0, 3, 0x82, 6, 0x01]).await;
        assert_eq!(code(&r), Some(ErrorCode::BadRequest), "{r:?}");
        let mut dup = vec![0x82, 11, 0xa2];
        for _ in 0..2 {
            dup.extend_from_slice(&[0x6a]);
            dup.extend_from_slice(b"next_chunk");
            dup.push(0x01);
        }
        let mut frame = (dup.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&dup);
        let r = peer.request(&frame).await;
        assert_eq!(code(&r), Some(ErrorCode::BadRequest), "{r:?}");
        // A frame shorter than its header.
        let r = peer.request(&[0, 0, 0, 1, 0x82]).await;
        assert_eq!(code(&r), Some(ErrorCode::BadRequest), "{r:?}");
        // Resume of a release never made for this peer: not-found.
        let resume = Message::Resume(pdx_node::proto::msg::Resume {
            release_id: vec![1; 16],
            next_chunk: 0,
        });
        let r = peer.request(&resume.encode().unwrap()).await;
        assert_eq!(code(&r), Some(ErrorCode::NotFound), "{r:?}");
        // Half a frame, then silence: timeout (the read timeout is 2 s here).
        let r = peer.request(&[0, 0, 0, 9, 0x82, 6]).await;
        assert_eq!(code(&r), Some(ErrorCode::Timeout), "{r:?}");
        peer.endpoint.close(0u32.into(), b"done");
    });
    let refused = details(&net, "440000", "refused-request");
    for needle in ["TooLarge", "BadRequest", "NotFound", "Timeout"] {
        assert!(
            refused.iter().any(|d| d.contains(needle)),
            "no audited {needle} refusal: {refused:#?}"
        );
    }
    net.stop_all(Duration::from_secs(5)).unwrap();
}

#[test]
fn handshake_errors_have_their_codes_and_a_second_log_is_refused_as_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = pdx_testnet::Testnet::create(tmp.path(), "itest").unwrap();
    net.add_node("440000", "Guangdong").unwrap();
    net.start_all().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let real = SigningKey::generate(pdx_crypto::Suite::Intl).unwrap();
    let invented = SigningKey::generate(pdx_crypto::Suite::Intl).unwrap();
    rt.block_on(async {
        // A checkpoint signed by a key the endorsement does not name: bad-signature.
        let (cert, key, identity) = certified(&net.ca_dir(), "130000", Some(&real));
        let h = hello("130000", &identity, &cert, &real, &invented);
        let r = RawPeer::connect(&net, "440000", (cert, key), h).await;
        assert_eq!(code(&r.err().unwrap()), Some(ErrorCode::BadSignature));

        // No common version: unsupported-version.
        let (cert, key, identity) = certified(&net.ca_dir(), "130000", Some(&real));
        let mut h = hello("130000", &identity, &cert, &real, &real);
        if let Message::Hello(x) = &mut h {
            x.versions = vec![PROTOCOL_VERSION + 1];
        }
        let r = RawPeer::connect(&net, "440000", (cert, key), h).await;
        assert_eq!(code(&r.err().unwrap()), Some(ErrorCode::UnsupportedVersion));

        // The real log is witnessed.
        let (cert, key, identity) = certified(&net.ca_dir(), "130000", Some(&real));
        let h = hello("130000", &identity, &cert, &real, &real);
        let peer = RawPeer::connect(&net, "440000", (cert, key), h)
            .await
            .unwrap_or_else(|e| panic!("the real log must be witnessed: {e:?}"));
        peer.endpoint.close(0u32.into(), b"done");

        // A certificate binding the real log, presenting an invented second
        // log endorsed with the certificate's own key: refused, untrusted.
        let (cert, key, identity) = certified(&net.ca_dir(), "130000", Some(&real));
        let h = hello("130000", &identity, &cert, &invented, &invented);
        let r = RawPeer::connect(&net, "440000", (cert, key), h).await;
        assert_eq!(code(&r.err().unwrap()), Some(ErrorCode::Untrusted));

        // A certificate re-issued for the department with another log: the
        // witness already holds the first one, so this is a split view too.
        let (cert2, key2, identity2) = certified(&net.ca_dir(), "130000", Some(&invented));
        let h = hello("130000", &identity2, &cert2, &invented, &invented);
        let r = RawPeer::connect(&net, "440000", (cert2, key2), h).await;
        assert_eq!(code(&r.err().unwrap()), Some(ErrorCode::Untrusted));

        // A certificate binding no log at all cannot talk.
        let (cert3, key3, identity3) = certified(&net.ca_dir(), "130000", None);
        let h = hello("130000", &identity3, &cert3, &real, &real);
        let r = RawPeer::connect(&net, "440000", (cert3, key3), h).await;
        assert_eq!(code(&r.err().unwrap()), Some(ErrorCode::Untrusted));
    });
    let alarms = details(&net, "440000", "alarm");
    for needle in [
        "its certificate binds",
        "witnessed its log",
        "binds no audit log",
    ] {
        assert!(
            alarms
                .iter()
                .any(|d| d.contains("split view") && d.contains(needle)),
            "no alarm for {needle}: {alarms:#?}"
        );
    }
    let refused = details(&net, "440000", "refused-request");
    assert!(
        refused.iter().any(|d| d.contains("BadSignature"))
            && refused.iter().any(|d| d.contains("UnsupportedVersion")),
        "{refused:#?}"
    );
    net.stop_all(Duration::from_secs(5)).unwrap();
}
