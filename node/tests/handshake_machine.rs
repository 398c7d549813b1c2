//! The connection handshake without sockets: two machines talk to each other
//! through the messages they emit; the "host" answers are scripted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_audit::checkpoint::{
    Checkpoint, Cosignature, KeyEndorsement, SignedCheckpoint, SignedCosignature, SignedEndorsement,
};
use pdx_crypto::{Digest, SigningKey};
use pdx_node::proto::handshake::{Action, Handshake, LocalHello};
use pdx_node::proto::msg::{ErrorCode, Hello, Message, PROTOCOL_VERSION, Witness1};
use serde_bytes::ByteBuf;
use std::time::{Duration, Instant};

fn local(dept: &str, size: u64) -> LocalHello {
    let identity = SigningKey::generate(pdx_crypto::Suite::Intl).unwrap();
    let audit = SigningKey::generate(pdx_crypto::Suite::Intl).unwrap();
    let log_id = format!("{dept}:{}", audit.key_id().to_hex());
    let endorsement = SignedEndorsement::sign(
        &KeyEndorsement {
            log_id: log_id.clone(),
            audit_key: audit.verifying_key(),
            from_seq: 0,
            time_ms: 1,
        },
        &identity,
        vec![1, 2, 3],
    )
    .unwrap();
    let checkpoint = SignedCheckpoint::sign(
        &Checkpoint {
            origin: log_id,
            size,
            root: [7; 32],
            time_ms: 2,
        },
        &audit,
    )
    .unwrap();
    LocalHello {
        dept: dept.into(),
        software: "test".into(),
        checkpoint,
        endorsement,
        key_documents: Vec::new(),
        time_ms: 1_700_000_000_000,
        recovering: false,
        discontinuity: None,
    }
}

fn cosignature(of: &LocalHello) -> SignedCosignature {
    let key = SigningKey::generate(pdx_crypto::Suite::Intl).unwrap();
    let cp = of.checkpoint.peek().unwrap();
    SignedCosignature::sign(
        &Cosignature {
            log_id: cp.origin,
            size: cp.size,
            root: cp.root,
            checkpoint_digest: Digest([0; 32]),
            witness: "w".into(),
            time_ms: 3,
        },
        &key,
        of.endorsement.clone(),
    )
    .unwrap()
}

const T: Duration = Duration::from_secs(10);

fn sent(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn one_message(actions: Vec<Action>) -> Message {
    let mut m = sent(&actions);
    assert_eq!(m.len(), 1, "{actions:?}");
    m.remove(0)
}

/// Runs both sides to the end with scripted host answers; returns each
/// side's final `Done` result and the proofs each was asked to produce.
struct Script {
    server_needs: Option<(u64, u64)>,
    client_needs: Option<(u64, u64)>,
    server_cosigns: Result<(), String>,
    client_cosigns: Result<(), String>,
}

/// Each side's `Done` result, and the proofs asked for in order.
struct Ran {
    client: Result<(), String>,
    server: Result<(), String>,
    proofs: Vec<(u64, u64)>,
}

fn run(script: Script) -> Ran {
    let now = Instant::now();
    let (cl, sl) = (local("440000", 5), local("100000", 9));
    let (cl_cos, sl_cos) = (cosignature(&sl), cosignature(&cl));
    let mut client = Handshake::client(now, T, cl, "100000");
    let mut server = Handshake::server(now, T, sl, "440000");
    let mut proofs = Vec::new();
    let mut client_done = None;
    let mut server_done = None;
    let mut to_server = sent(&client.start());
    let mut to_client: Vec<Message> = Vec::new();
    let proof = || Some(vec![ByteBuf::from(vec![1u8; 32])]);
    for _ in 0..20 {
        for m in std::mem::take(&mut to_server) {
            let mut actions = server.handle(m).unwrap();
            while let Some(a) = actions.first().cloned() {
                actions.remove(0);
                match a {
                    Action::Send(m) => to_client.push(m),
                    Action::CheckPeer(_) => {
                        actions.extend(server.peer_checked(script.server_needs).unwrap())
                    }
                    Action::Prove { from, to } => {
                        proofs.push((from, to));
                        actions.extend(server.proved(proof()).unwrap())
                    }
                    Action::Witness { proof } => {
                        assert_eq!(proof.is_some(), script.server_needs.is_some());
                        let c = script.server_cosigns.clone().map(|_| sl_cos.clone());
                        actions.extend(server.witnessed(c).unwrap())
                    }
                    Action::StoreCosignature(c) => {
                        assert_eq!(c.is_ok(), script.client_cosigns.is_ok())
                    }
                    Action::Done(r) => server_done = Some(r),
                    other => panic!("{other:?} in a witnessing handshake"),
                }
            }
        }
        for m in std::mem::take(&mut to_client) {
            let mut actions = client.handle(m).unwrap();
            while let Some(a) = actions.first().cloned() {
                actions.remove(0);
                match a {
                    Action::Send(m) => to_server.push(m),
                    Action::CheckPeer(_) => {
                        actions.extend(client.peer_checked(script.client_needs).unwrap())
                    }
                    Action::Prove { from, to } => {
                        proofs.push((from, to));
                        actions.extend(client.proved(proof()).unwrap())
                    }
                    Action::Witness { proof } => {
                        assert_eq!(proof.is_some(), script.client_needs.is_some());
                        let c = script.client_cosigns.clone().map(|_| cl_cos.clone());
                        actions.extend(client.witnessed(c).unwrap())
                    }
                    Action::StoreCosignature(c) => {
                        assert_eq!(c.is_ok(), script.server_cosigns.is_ok())
                    }
                    Action::Done(r) => client_done = Some(r),
                    other => panic!("{other:?} in a witnessing handshake"),
                }
            }
        }
        if let (Some(c), Some(s)) = (&client_done, &server_done) {
            assert!(client.is_done() && server.is_done());
            assert_eq!(client.poll_timeout(), None);
            return Ran {
                client: c.clone(),
                server: s.clone(),
                proofs,
            };
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn both_sides_finish_with_cosignatures_exchanged() {
    let r = run(Script {
        server_needs: None,
        client_needs: None,
        server_cosigns: Ok(()),
        client_cosigns: Ok(()),
    });
    assert_eq!((r.client, r.server), (Ok(()), Ok(())));
    assert!(r.proofs.is_empty());
}

#[test]
fn consistency_proofs_are_asked_and_given_both_ways() {
    let r = run(Script {
        server_needs: Some((3, 5)),
        client_needs: Some((4, 9)),
        server_cosigns: Ok(()),
        client_cosigns: Ok(()),
    });
    assert_eq!((r.client, r.server), (Ok(()), Ok(())));
    // The client proves its log for the server first, then the server its own.
    assert_eq!(r.proofs, vec![(3, 5), (4, 9)]);
}

#[test]
fn a_refusal_to_cosign_reaches_the_peer_and_fails_the_refusing_side() {
    let r = run(Script {
        server_needs: None,
        client_needs: None,
        server_cosigns: Err("fork".into()),
        client_cosigns: Ok(()),
    });
    assert_eq!(r.client, Ok(()));
    assert_eq!(r.server, Err("fork".into()));
}

#[test]
fn the_server_refuses_hellos_without_a_common_version_or_for_another_department() {
    let now = Instant::now();
    let hello = |versions: Vec<u32>, dept: &str| {
        let l = local(dept, 1);
        Message::Hello(Box::new(Hello {
            versions,
            dept: dept.into(),
            software: "x".into(),
            checkpoint: l.checkpoint,
            endorsement: l.endorsement,
            key_documents: Vec::new(),
            time_ms: None,
            recovering: false,
            discontinuity: None,
        }))
    };
    let mut server = Handshake::server(now, T, local("100000", 1), "440000");
    let f = server
        .handle(hello(vec![PROTOCOL_VERSION + 1], "440000"))
        .unwrap_err();
    assert_eq!(f.code, ErrorCode::UnsupportedVersion);
    let mut server = Handshake::server(now, T, local("100000", 1), "440000");
    let f = server
        .handle(hello(vec![PROTOCOL_VERSION], "110000"))
        .unwrap_err();
    assert_eq!(f.code, ErrorCode::BadRequest);
    assert!(f.message.contains("certificate says 440000"), "{f}");
}

#[test]
fn messages_out_of_order_and_peer_errors_end_the_handshake() {
    let now = Instant::now();
    let mut server = Handshake::server(now, T, local("100000", 1), "440000");
    let f = server
        .handle(Message::Witness1(Witness1 {
            proof: None,
            proof_request: None,
        }))
        .unwrap_err();
    assert_eq!(f.code, ErrorCode::BadRequest);
    assert!(!f.from_peer);
    let mut client = Handshake::client(now, T, local("440000", 1), "100000");
    let _ = client.start();
    let f = client
        .handle(Message::error(ErrorCode::UnsupportedVersion, "no"))
        .unwrap_err();
    assert!(f.from_peer);
    // A driver that reports out of order is an internal error, not a panic.
    let mut client = Handshake::client(now, T, local("440000", 1), "100000");
    assert_eq!(client.proved(None).unwrap_err().code, ErrorCode::Internal);
}

#[test]
fn the_deadline_covers_the_whole_handshake() {
    let now = Instant::now();
    let mut client = Handshake::client(now, T, local("440000", 1), "100000");
    let hello = one_message(client.start());
    assert!(matches!(hello, Message::Hello(_)));
    assert_eq!(client.poll_timeout(), Some(now + T));
    assert!(client.handle_timeout(now + T / 2).is_none());
    let f = client.handle_timeout(now + T).unwrap();
    assert_eq!(f.code, ErrorCode::Timeout);
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn a_recovering_client_gets_the_held_checkpoint_and_nothing_is_witnessed() {
    let now = Instant::now();
    let mut cl = local("440000", 5);
    cl.recovering = true;
    let held = pdx_audit::checkpoint::WitnessedCheckpoint {
        log_id: cl.checkpoint.peek().unwrap().origin,
        checkpoint: cl.checkpoint.clone(),
        endorsement: cl.endorsement.clone(),
        cosignature: cosignature(&cl),
    };
    let mut client = Handshake::client(now, T, cl, "100000");
    let mut server = Handshake::server(now, T, local("100000", 9), "440000");
    let hello = sent(&client.start());
    assert!(matches!(&hello[..], [Message::Hello(h)] if h.recovering));
    // The server checks nothing of the client's log: it asks its host only
    // what it holds, answers, and is done.
    let actions = server.handle(hello[0].clone()).unwrap();
    assert_eq!(actions, vec![Action::Recovery]);
    let actions = server.recovery_answer(Some(held.clone())).unwrap();
    assert!(matches!(actions.last(), Some(Action::Answered)));
    assert!(server.is_done());
    let reply = sent(&actions);
    assert_eq!(reply.len(), 1);
    let actions = client.handle(reply[0].clone()).unwrap();
    assert_eq!(actions, vec![Action::Recovered(Some(Box::new(held)))]);
    assert!(client.is_done());
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn a_recovery_answer_out_of_turn_is_refused() {
    let now = Instant::now();
    let mut server = Handshake::server(now, T, local("100000", 9), "440000");
    let f = server.recovery_answer(None).unwrap_err();
    assert_eq!(f.code, ErrorCode::Internal);
}
