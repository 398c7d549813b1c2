//! The protocol without sockets: framing limits and the transfer state machines
//! against hostile input (the same code the QUIC driver runs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_crypto::wire::Signed;
use pdx_crypto::{Digest, SignatureDomain, SigningKey};
use pdx_node::proto::frame::{FrameDecoder, FrameError, MAX_FRAME, encode_frame};
use pdx_node::proto::msg::*;
use pdx_node::proto::transfer::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, String> {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let mut out = Vec::new();
    loop {
        match d.next_frame() {
            Ok(Some(f)) => {
                out.push(Message::decode(f.msg_type, &f.payload).map_err(|e| e.to_string())?)
            }
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    d.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn messages_round_trip_through_frames_byte_by_byte() {
    let m = Message::Ack(Ack { stored: 7 });
    let bytes = m.encode().unwrap();
    assert_eq!(&bytes[4..6], &[0x82, 15]);
    let mut d = FrameDecoder::new();
    for (i, b) in bytes.iter().enumerate() {
        d.push(&[*b]);
        let f = d.next_frame().unwrap();
        assert_eq!(f.is_some(), i == bytes.len() - 1);
        if let Some(f) = f {
            assert_eq!(Message::decode(f.msg_type, &f.payload).unwrap(), m);
        }
    }
}

#[test]
fn oversized_frames_are_rejected_from_the_header_alone() {
    // An Ack claiming 1 MiB: rejected after 6 bytes, nothing else buffered.
    let mut d = FrameDecoder::new();
    d.push(&[0, 0x10, 0, 0, 0x82, 15]);
    assert!(matches!(
        d.next_frame(),
        Err(FrameError::TooLarge { msg_type: 15, .. })
    ));
    // Beyond every cap: still judged by its type (read from the next two
    // bytes), so the error names it.
    let mut d = FrameDecoder::new();
    d.push(&((MAX_FRAME as u32) + 1).to_be_bytes());
    assert!(matches!(d.next_frame(), Ok(None)));
    d.push(&[0x82, 14]);
    assert!(matches!(
        d.next_frame(),
        Err(FrameError::TooLarge { msg_type: 14, .. })
    ));
    let mut d = FrameDecoder::new();
    d.push(&[0xff, 0xff, 0xff, 0xff, 0x82, 1]);
    assert!(matches!(
        d.next_frame(),
        Err(FrameError::TooLarge { msg_type: 1, .. })
    ));
    // The encoder refuses to build what the peer would reject.
    assert!(encode_frame(MsgType::Ack, &[0u8; 1000]).is_err());
}

#[test]
fn truncated_unknown_and_malformed_frames_are_errors() {
    let bytes = Message::Ack(Ack { stored: 1 }).encode().unwrap();
    assert!(
        decode_all(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .contains("ended inside a frame")
    );
    assert!(
        decode_all(&[0, 0, 0, 3, 0x82, 0x18, 99])
            .unwrap_err()
            .contains("unknown message type 99")
    );
    // A type byte that is not a CBOR unsigned integer of the shortest form.
    assert!(
        decode_all(&[0, 0, 0, 2, 0x82, 99])
            .unwrap_err()
            .contains("not a [type, payload]")
    );
    assert!(
        decode_all(&[0, 0, 0, 2, 0x83, 15])
            .unwrap_err()
            .contains("not a [type, payload]")
    );
    // Valid frame, payload not an Ack map.
    assert!(
        decode_all(&[0, 0, 0, 3, 0x82, 15, 0x01])
            .unwrap_err()
            .contains("malformed")
    );
    // Deep nesting in a payload.
    let mut payload = vec![0x81u8; 200];
    payload.push(0);
    let frame = encode_frame(MsgType::CatalogRequest, &payload[..]).unwrap_or_else(|_| {
        let mut f = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[0x82, 6]);
        f.extend_from_slice(&payload);
        f
    });
    assert!(decode_all(&frame).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_all(&bytes);
        for t in 1u8..=23 {
            if let Some(mt) = MsgType::from_u8(t) {
                let _ = Message::decode(mt, &bytes);
            }
        }
        let _ = pdx_node::records::decode(&bytes, 3, |_, _| Ok(()));
    }
}

// ---- transfer machines ----

struct Keys {
    sender: SigningKey,
    receiver: SigningKey,
}

fn chunk_bytes(i: u32) -> Vec<u8> {
    format!("records of chunk {i}").into_bytes()
}

fn body(n: u32) -> ManifestBody {
    let chunks: Vec<ChunkInfo> = (0..n)
        .map(|i| ChunkInfo {
            digest: pdx_crypto::Suite::Intl.digest(&chunk_bytes(i)),
            records: 10,
            recipient: None,
        })
        .collect();
    let content_digest = transfer_digest(
        pdx_crypto::Suite::Intl,
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32, &c.digest)),
    );
    ManifestBody {
        version: 1,
        release_id: vec![5; 16],
        sender: "440000".into(),
        recipient: "100000".into(),
        dataset: "d".into(),
        dataset_digest: Digest([1; 32]),
        schema_id: "s".into(),
        schema_digest: Digest([2; 32]),
        profile: "p".into(),
        agreement: Some("a".into()),
        purpose: "test".into(),
        legal_basis: None,
        created_ms: 1,
        fields: Vec::new(),
        record_count: u64::from(n) * 10,
        chunks,
        content_digest,
        recipients: Vec::new(),
        report: serde_json_report(),
        rows: None,
    }
}

fn serde_json_report() -> pdx_schemas::report::ReleaseReport {
    pdx_schemas::report::ReleaseReport {
        dataset: "d".into(),
        profile: "p".into(),
        agreement: "a".into(),
        records_in: 0,
        records_out: 0,
        records_suppressed: 0,
        k_required: 1,
        k_achieved: 0,
        l_required: 0,
        l_field: None,
        l_achieved: 0,
        quasi_identifiers: Vec::new(),
        classes_total: 0,
        classes_released: 0,
        smallest_class: 0,
        risk_prosecutor_max: 0.0,
        risk_prosecutor_avg: 0.0,
        fields: Vec::new(),
        recipients: Vec::new(),
        max_suppression: 0.0,
    }
}

struct Check<'a>(&'a SigningKey);
impl ManifestCheck for Check<'_> {
    fn check(&self, m: &Manifest) -> Result<ManifestBody, String> {
        m.signed
            .verify(SignatureDomain::Manifest, &self.0.verifying_key())
            .map_err(|e| e.to_string())
    }
}

struct RCheck<'a>(&'a SigningKey);
impl ReceiptCheck for RCheck<'_> {
    fn check(&self, r: &Receipt) -> Result<(ReceiptBody, String), String> {
        let b: ReceiptBody = r
            .signed
            .verify(SignatureDomain::Receipt, &self.0.verifying_key())
            .map_err(|e| e.to_string())?;
        Ok((b, "100000".into()))
    }
}

fn manifest(k: &Keys, b: &ManifestBody) -> Manifest {
    Manifest {
        signed: Signed::sign(SignatureDomain::Manifest, &k.sender, b).unwrap(),
        certificate: Vec::new(),
    }
}

fn receipt(k: &Keys, b: &ManifestBody, digest: Digest, records: u64) -> Receipt {
    Receipt {
        signed: Signed::sign(
            SignatureDomain::Receipt,
            &k.receiver,
            &ReceiptBody {
                release_id: b.release_id.clone(),
                receiver: "100000".into(),
                from: "440000".into(),
                content_digest: digest,
                record_count: records,
                time_ms: 1,
            },
        )
        .unwrap(),
        certificate: Vec::new(),
    }
}

fn keys() -> Keys {
    Keys {
        sender: SigningKey::generate(pdx_crypto::Suite::Intl).unwrap(),
        receiver: SigningKey::generate(pdx_crypto::Suite::Intl).unwrap(),
    }
}

/// Runs sender and receiver against each other in memory, optionally tampering
/// with messages on the way; returns the receiver's stored chunk indices.
#[test]
fn a_clean_transfer_completes_with_a_matching_receipt_and_bounded_window() {
    let k = keys();
    let b = body(10);
    let now = Instant::now();
    let t = Duration::from_secs(5);
    let mut tx = Sender::new(
        now,
        t,
        3,
        pdx_crypto::Suite::Intl,
        &b,
        (0..10).collect(),
        0,
        "100000",
    )
    .unwrap();
    let mut rx = Receiver::new(now, t, None, None);
    let mut to_rx: Vec<Message> = vec![Message::Manifest(Box::new(manifest(&k, &b)))];
    let mut stored = Vec::new();
    let mut in_flight_max = 0;
    let mut tx_actions = tx.poll();
    let mut done = false;
    for _ in 0..1000 {
        // Sender actions.
        for a in std::mem::take(&mut tx_actions) {
            match a {
                TxAction::LoadChunk { index, .. } => {
                    if let TxAction::Send(m) = tx.chunk_loaded(index, chunk_bytes(index)) {
                        to_rx.push(m);
                    }
                }
                TxAction::Send(m) => to_rx.push(m),
                TxAction::LogSend { body, .. } => {
                    assert_eq!(body.content_digest, b.content_digest);
                    tx_actions.extend(tx.logged(42));
                }
                TxAction::Finished => done = true,
            }
        }
        in_flight_max = in_flight_max.max(
            to_rx
                .iter()
                .filter(|m| matches!(m, Message::Chunk(_)))
                .count(),
        );
        // Receiver handles everything queued.
        let mut to_tx = Vec::new();
        for m in std::mem::take(&mut to_rx) {
            let mut acts: std::collections::VecDeque<RxAction> =
                rx.handle(m, now, &Check(&k.sender)).unwrap().into();
            while let Some(a) = acts.pop_front() {
                match a {
                    RxAction::StoreChunk {
                        position, index, ..
                    } => {
                        stored.push(index);
                        acts.extend(rx.chunk_stored(position));
                    }
                    RxAction::Complete {
                        content_digest,
                        record_count,
                    } => {
                        acts.extend(rx.receipt_ready(receipt(
                            &k,
                            &b,
                            content_digest,
                            record_count,
                        )));
                    }
                    RxAction::Send(m) => to_tx.push(m),
                    RxAction::SaveManifest { .. } | RxAction::Finished => {}
                }
            }
        }
        for m in to_tx {
            tx_actions.extend(tx.handle(m, now, &RCheck(&k.receiver)).unwrap());
        }
        if done {
            break;
        }
    }
    assert!(done, "transfer did not finish");
    assert_eq!(stored, (0..10).collect::<Vec<_>>());
    assert!(in_flight_max <= 3, "window of 3 exceeded: {in_flight_max}");
}

fn receiving(k: &Keys, b: &ManifestBody) -> Receiver {
    let now = Instant::now();
    let mut rx = Receiver::new(now, Duration::from_secs(5), None, None);
    rx.handle(
        Message::Manifest(Box::new(manifest(k, b))),
        now,
        &Check(&k.sender),
    )
    .unwrap();
    rx
}

#[test]
fn wrong_digest_and_out_of_order_chunks_are_refused() {
    let k = keys();
    let b = body(3);
    let now = Instant::now();
    let mut rx = receiving(&k, &b);
    let bad = Chunk {
        index: 0,
        records: b"tampered".to_vec(),
        digest: pdx_crypto::Suite::Intl.digest(b"tampered"),
    };
    assert_eq!(
        rx.handle(Message::Chunk(bad), now, &Check(&k.sender))
            .unwrap_err()
            .code,
        ErrorCode::BadChunk
    );
    let mut rx = receiving(&k, &b);
    let skip = Chunk {
        index: 1,
        records: chunk_bytes(1),
        digest: pdx_crypto::Suite::Intl.digest(&chunk_bytes(1)),
    };
    let e = rx
        .handle(Message::Chunk(skip), now, &Check(&k.sender))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadChunk);
    assert!(e.message.contains("out of order"));
}

#[test]
fn forged_manifest_signature_is_refused() {
    let k = keys();
    let b = body(2);
    let mut m = manifest(&k, &b);
    m.signed.body[10] ^= 1;
    let now = Instant::now();
    let mut rx = Receiver::new(now, Duration::from_secs(5), None, None);
    assert_eq!(
        rx.handle(Message::Manifest(Box::new(m)), now, &Check(&k.sender))
            .unwrap_err()
            .code,
        ErrorCode::BadSignature
    );
    let other = SigningKey::generate(pdx_crypto::Suite::Intl).unwrap();
    let forged = Manifest {
        signed: Signed::sign(SignatureDomain::Manifest, &other, &b).unwrap(),
        certificate: Vec::new(),
    };
    let mut rx = Receiver::new(now, Duration::from_secs(5), None, None);
    assert!(
        rx.handle(Message::Manifest(Box::new(forged)), now, &Check(&k.sender))
            .is_err()
    );
}

#[test]
fn replayed_or_mismatched_receipts_are_refused() {
    let k = keys();
    let b = body(1);
    let now = Instant::now();
    let mut tx = Sender::new(
        now,
        Duration::from_secs(5),
        4,
        pdx_crypto::Suite::Intl,
        &b,
        vec![0],
        0,
        "100000",
    )
    .unwrap();
    let _ = tx.poll();
    tx.handle(Message::Ack(Ack { stored: 1 }), now, &RCheck(&k.receiver))
        .unwrap();
    // A receipt for another release (replayed from an earlier transfer).
    let mut old = b.clone();
    old.release_id = vec![9; 16];
    let replayed = receipt(&k, &old, b.content_digest, 10);
    assert_eq!(
        tx.handle(
            Message::Receipt(Box::new(replayed)),
            now,
            &RCheck(&k.receiver)
        )
        .unwrap_err()
        .code,
        ErrorCode::BadSignature
    );
    let mut tx = Sender::new(
        now,
        Duration::from_secs(5),
        4,
        pdx_crypto::Suite::Intl,
        &b,
        vec![0],
        0,
        "100000",
    )
    .unwrap();
    let _ = tx.poll();
    tx.handle(Message::Ack(Ack { stored: 1 }), now, &RCheck(&k.receiver))
        .unwrap();
    let short = receipt(&k, &b, b.content_digest, 9);
    assert!(
        tx.handle(Message::Receipt(Box::new(short)), now, &RCheck(&k.receiver))
            .is_err(),
        "wrong record count"
    );
    let mut tx = Sender::new(
        now,
        Duration::from_secs(5),
        4,
        pdx_crypto::Suite::Intl,
        &b,
        vec![0],
        0,
        "100000",
    )
    .unwrap();
    let _ = tx.poll();
    assert!(
        tx.handle(Message::Ack(Ack { stored: 5 }), now, &RCheck(&k.receiver))
            .is_err(),
        "ack beyond what was sent"
    );
}

#[test]
fn silent_peers_time_out() {
    let k = keys();
    let b = body(2);
    let start = Instant::now();
    let mut rx = Receiver::new(start, Duration::from_secs(2), None, None);
    assert!(rx.handle_timeout(start + Duration::from_secs(1)).is_none());
    assert_eq!(
        rx.handle_timeout(start + Duration::from_secs(3))
            .unwrap()
            .code,
        ErrorCode::Timeout
    );
    let mut tx = Sender::new(
        start,
        Duration::from_secs(2),
        4,
        pdx_crypto::Suite::Intl,
        &b,
        vec![0, 1],
        0,
        "100000",
    )
    .unwrap();
    let _ = tx.poll();
    assert_eq!(
        tx.handle_timeout(start + Duration::from_secs(3))
            .unwrap()
            .code,
        ErrorCode::Timeout
    );
    let _ = k;
}

#[test]
fn resume_continues_after_the_stored_chunks() {
    let k = keys();
    let b = body(5);
    let now = Instant::now();
    let mut rx = Receiver::new(
        now,
        Duration::from_secs(5),
        Some((b.release_id.clone(), 3)),
        None,
    );
    rx.handle(
        Message::Manifest(Box::new(manifest(&k, &b))),
        now,
        &Check(&k.sender),
    )
    .unwrap();
    let c3 = Chunk {
        index: 3,
        records: chunk_bytes(3),
        digest: pdx_crypto::Suite::Intl.digest(&chunk_bytes(3)),
    };
    let acts = rx
        .handle(Message::Chunk(c3), now, &Check(&k.sender))
        .unwrap();
    assert!(matches!(
        acts[0],
        RxAction::StoreChunk {
            position: 3,
            index: 3,
            ..
        }
    ));
    let mut tx = Sender::new(
        now,
        Duration::from_secs(5),
        2,
        pdx_crypto::Suite::Intl,
        &b,
        (0..5).collect(),
        3,
        "100000",
    )
    .unwrap();
    let loads: Vec<_> = tx.poll();
    assert!(matches!(loads[0], TxAction::LoadChunk { index: 3, .. }));
    assert_eq!(loads.len(), 2);
    // A resume for another release is refused when its manifest arrives.
    let mut wrong = Receiver::new(now, Duration::from_secs(5), Some((vec![1; 16], 1)), None);
    assert!(
        wrong
            .handle(
                Message::Manifest(Box::new(manifest(&k, &b))),
                now,
                &Check(&k.sender)
            )
            .is_err()
    );
}

fn extreme_count() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        Just(0u64),
        any::<u64>()
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    // A peer's manifest may declare any record counts: they add up exactly
    // or the manifest is refused with a typed failure, never a panic.
    #[test]
    fn extreme_record_counts_in_a_manifest_are_refused_not_wrapped(
        counts in proptest::collection::vec(extreme_count(), 1..5),
        declared in extreme_count(),
    ) {
        let k = keys();
        let mut b = body(counts.len() as u32);
        for (c, n) in b.chunks.iter_mut().zip(&counts) {
            c.records = *n;
        }
        b.record_count = declared;
        let exact: u128 = counts.iter().map(|&c| u128::from(c)).sum();
        let mut rx = Receiver::new(Instant::now(), Duration::from_secs(5), None, None);
        let out = rx.handle(
            Message::Manifest(Box::new(manifest(&k, &b))),
            Instant::now(),
            &Check(&k.sender),
        );
        match out {
            Ok(_) => prop_assert_eq!(exact, u128::from(declared)),
            Err(f) => {
                prop_assert_eq!(f.code, ErrorCode::BadRequest);
                prop_assert!(exact != u128::from(declared) || exact > u128::from(u64::MAX));
            }
        }
        // The sending side refuses a plan whose counts overflow, too.
        let sent = Sender::new(Instant::now(), Duration::from_secs(5), 4, pdx_crypto::Suite::Intl, &b, (0..counts.len() as u32).collect(), 0, "100000");
        prop_assert_eq!(sent.is_ok(), exact <= u128::from(u64::MAX));
    }
}
