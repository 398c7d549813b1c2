//! The cargo-fuzz entry points (fuzz/fuzz_targets) run as plain tests: random
//! inputs and mutations of valid encodings must never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_node::fuzzing;
use pdx_node::proto::msg::{Ack, Message, Progress};
use proptest::prelude::*;

fn seeds() -> Vec<Vec<u8>> {
    let mut v = vec![
        Message::Ack(Ack { stored: 3 }).encode().unwrap(),
        Message::Progress(Progress {
            stage: "x".into(),
            done: 1,
            total: 2,
        })
        .encode()
        .unwrap(),
        Message::error(pdx_node::proto::msg::ErrorCode::BadChunk, "bad")
            .encode()
            .unwrap(),
    ];
    let mut b = pdx_node::records::ChunkBuilder::default();
    b.push(
        0,
        &[
            pdx_schemas::engine::OutValue::Text("a"),
            pdx_schemas::engine::OutValue::Null,
        ],
    );
    v.push(b.finish());
    v
}

/// A contribution submission shaped like a real one (valid CBOR, nonsense
/// signature), for mutation.
fn contribution_seed() -> Vec<u8> {
    use pdx_crypto::wire::{Signed, to_cbor};
    let signed = |body: Vec<u8>| pdx_node::service::documents::Certified {
        signed: Signed {
            body,
            key_id: pdx_crypto::KeyId([1; 8]),
            signature: pdx_crypto::Signature([2; 64]),
            suite: pdx_crypto::Suite::Intl,
        },
        certificate: vec![3; 40],
    };
    let sub = pdx_node::service::aggregate::ContributionSubmission {
        query: signed(vec![0xa0]),
        contribution: signed(vec![0x80, 1, 2]),
    };
    let mut v = vec![0u8];
    v.extend(to_cbor(&sub).unwrap());
    v
}

/// A valid `Call` payload (first byte 0 selects `Call`).
fn call_seed() -> Vec<u8> {
    use pdx_node::proto::call::{Call, CallRequestBody};
    let k = pdx_crypto::SigningKey::generate(pdx_crypto::Suite::Intl).unwrap();
    let body = CallRequestBody {
        call_id: vec![1; 16],
        service: "s".into(),
        version: 1,
        definition: pdx_crypto::Digest([2; 32]),
        consumer: "440000".into(),
        provider: "110000".into(),
        idempotency_key: "k".into(),
        time_ms: 5,
        timeout_ms: 8000,
        fields: [("a".to_string(), "1".to_string())].into_iter().collect(),
        sealed: Default::default(),
        key: None,
    };
    let call = Call {
        request: pdx_crypto::wire::Signed::sign(
            pdx_crypto::SignatureDomain::CallRequest,
            &k,
            &body,
        )
        .unwrap(),
        certificate: vec![0; 40],
        key_document: None,
    };
    let mut v = vec![0u8];
    v.extend(pdx_crypto::wire::to_cbor(&call).unwrap());
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_inputs_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::frame_decoder(&data);
        fuzzing::message(&data);
        fuzzing::records(&data);
        fuzzing::audit_entry(&data);
        fuzzing::admin_call(&data);
        fuzzing::submitted_document(&data);
        fuzzing::call_message(&data);
        fuzzing::gateway_body(&data);
        fuzzing::backup_archive(&data);
    }

    #[test]
    fn mutated_calls_never_panic(flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8)) {
        let mut data = call_seed();
        for (pos, x) in flips {
            let i = 1 + pos as usize % (data.len() - 1);
            data[i] ^= x;
        }
        fuzzing::call_message(&data);
        data[0] = 1;
        fuzzing::call_message(&data);
    }

    #[test]
    fn mutated_valid_encodings_never_panic(which in 0usize..4, flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8)) {
        let mut data = seeds()[which].clone();
        for (pos, x) in flips {
            let i = pos as usize % data.len();
            data[i] ^= x;
        }
        fuzzing::frame_decoder(&data);
        fuzzing::records(&data);
        fuzzing::message(&data[4..]);
    }

    #[test]
    fn mutated_submitted_documents_never_panic(flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8)) {
        let mut data = contribution_seed();
        for (pos, x) in flips {
            let i = 1 + pos as usize % (data.len() - 1);
            data[i] ^= x;
        }
        for kind in 0..3u8 {
            data[0] = kind;
            fuzzing::submitted_document(&data);
        }
    }
}

/// A well-formed plaintext stream (entry parser, odd first byte): one file
/// and its manifest, which must then be mutated without a panic.
fn archive_seed() -> Vec<u8> {
    let mut v = vec![1u8];
    v.push(1);
    v.extend_from_slice(&(b"pdx.toml".len() as u16).to_be_bytes());
    v.extend_from_slice(b"pdx.toml");
    v.extend_from_slice(&0o600u32.to_be_bytes());
    v.extend_from_slice(&3u64.to_be_bytes());
    v.extend_from_slice(b"a=1");
    v.push(2);
    let m = pdx_crypto::wire::to_cbor(&serde_json::json!({"files": []})).unwrap();
    v.extend_from_slice(&(m.len() as u32).to_be_bytes());
    v.extend_from_slice(&m);
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn mutated_backup_streams_never_panic(flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8)) {
        let mut data = archive_seed();
        for (pos, x) in flips {
            let i = 1 + pos as usize % (data.len() - 1);
            data[i] ^= x;
        }
        fuzzing::backup_archive(&data);
    }
}

/// A real proof of a short list (first byte even: the proof decoder).
fn proof_seed() -> Vec<u8> {
    use pdx_crypto::he::{Layout, committee, proof};
    let c = committee::Committee::new(2, 2).unwrap();
    let (_, b1) = committee::share_keygen(&[3; 16]);
    let (_, b2) = committee::share_keygen(&[3; 16]);
    let pk = committee::combine_public_key(&c, &[3; 16], &[&b1, &b2]).unwrap();
    let layout = Layout {
        chunk: Some(16),
        ..Layout::COMMITTEE
    };
    let crs = proof::Crs::generate(layout).unwrap();
    let (_, proofs) = proof::encrypt_and_prove(&pk, &crs, &[1; 16], b"seed").unwrap();
    let mut v = vec![0u8];
    v.extend(proofs[0].to_bytes().unwrap());
    v
}

#[test]
fn mutated_he_proofs_and_reference_strings_never_panic() {
    let seed = proof_seed();
    fuzzing::he_proof(&seed);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(500));
    runner
        .run(
            &(
                proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8),
                any::<bool>(),
                any::<u16>(),
            ),
            |(flips, as_crs, cut)| {
                let mut data = seed.clone();
                for (pos, x) in flips {
                    let i = 1 + pos as usize % (data.len() - 1);
                    data[i] ^= x;
                }
                data[0] = u8::from(as_crs);
                data.truncate(1 + cut as usize % data.len());
                fuzzing::he_proof(&data);
                Ok(())
            },
        )
        .unwrap();
}
