//! The connection handshake on stream 0, sans IO: Hello, version negotiation,
//! checkpoint exchange, consistency proofs and cosignatures, both ways.
//!
//! ```text
//! client                                   server
//! Hello {versions, dept, checkpoint, ...} ->
//!                                          <- HelloReply {version, ..., proof_request}
//! Witness1 {proof, proof_request}         ->
//!                                          <- Witness2 {proof, cosignature}
//! Witness3 {cosignature}                  ->
//! ```
//!
//! The machines check order, versions and departments; what needs the node's
//! keys or audit log comes out as an [`Action`] the driver performs through its
//! host and reports back (`peer_checked`, `proved`, `witnessed`). One deadline
//! covers the whole handshake ([`Handshake::poll_timeout`]).

use super::msg::{
    DiscontinuityProof, ErrorCode, Hello, HelloReply, Message, PROTOCOL_VERSION, Witness1,
    Witness2, Witness3,
};
use super::transfer::Failure;
use pdx_audit::checkpoint::WitnessedCheckpoint;
use pdx_audit::checkpoint::{SignedCheckpoint, SignedCosignature, SignedEndorsement};
use pdx_crypto::keydoc::KeyDocument;
use serde_bytes::ByteBuf;
use std::time::{Duration, Instant};

/// A consistency proof asked for: (older size, newer size) of a log.
pub type ProofRequest = Option<(u64, u64)>;

/// What this node presents in its Hello or HelloReply.
#[derive(Clone, Debug)]
pub struct LocalHello {
    /// This node's department.
    pub dept: String,
    /// Software identification.
    pub software: String,
    /// The latest signed checkpoint of this node's log.
    pub checkpoint: SignedCheckpoint,
    /// Endorsement of the key that signed it.
    pub endorsement: SignedEndorsement,
    /// This node's encryption key documents.
    pub key_documents: Vec<KeyDocument>,
    /// This node's clock when the hello was made (ms), sent for skew checks.
    pub time_ms: u64,
    /// Only ask the peer what it holds of this node's log (a restored node).
    pub recovering: bool,
    /// This log's acknowledged discontinuity, proved under `checkpoint`.
    pub discontinuity: Option<DiscontinuityProof>,
}

/// What the peer presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHello {
    /// Its latest checkpoint.
    pub checkpoint: SignedCheckpoint,
    /// Endorsement of the key that signed it.
    pub endorsement: SignedEndorsement,
    /// Its key documents.
    pub key_documents: Vec<KeyDocument>,
    /// Its software string.
    pub software: String,
    /// Its clock when it sent the hello (ms), if it said.
    pub time_ms: Option<u64>,
    /// Its log's acknowledged discontinuity, if it sent one (not yet verified).
    pub discontinuity: Option<DiscontinuityProof>,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send this message.
    Send(Message),
    /// Accept the peer's key documents, verify its checkpoint and endorsement
    /// under its certificate key and decide what witnessing needs; then call
    /// [`Handshake::peer_checked`] with the consistency proof to ask for.
    CheckPeer(Box<PeerHello>),
    /// Produce a consistency proof of this node's log between the sizes (only
    /// if one of them is the size of the checkpoint sent), then call
    /// [`Handshake::proved`].
    Prove {
        /// Older size.
        from: u64,
        /// Newer size.
        to: u64,
    },
    /// Check the peer's checkpoint against the one held, with this proof
    /// (`None`: none was sent), and cosign it or keep evidence; then call
    /// [`Handshake::witnessed`].
    Witness {
        /// Proof hashes as received.
        proof: Option<Vec<ByteBuf>>,
    },
    /// Verify and store the peer's cosignature of the checkpoint this node
    /// sent, or note why the peer refused to cosign.
    StoreCosignature(Result<SignedCosignature, String>),
    /// The handshake is over. `Err` when this node did not cosign the peer
    /// (the connection then fails: a log that cannot be witnessed is not
    /// talked to).
    Done(Result<(), String>),
    /// Server: a recovering peer asks for the latest checkpoint of its log
    /// held here; call [`Handshake::recovery_answer`].
    Recovery,
    /// Server: the recovering peer was answered; close the connection.
    Answered,
    /// Client (recovering): what the peer holds of this node's log.
    Recovered(Option<Box<WitnessedCheckpoint>>),
}

// One state per handshake: the cosignature held inline is cheaper than a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Client: Hello sent.
    AwaitHelloReply,
    /// Server: waiting for Hello.
    AwaitHello,
    /// The peer's hello is being checked; the proof it asked for is kept.
    CheckingPeer {
        asked: Option<(u64, u64)>,
    },
    /// Client: producing the proof the server asked for.
    ClientProving {
        need: Option<(u64, u64)>,
    },
    /// Server: HelloReply sent.
    AwaitWitness1,
    /// Client: Witness1 sent.
    AwaitWitness2,
    /// Witnessing the peer's checkpoint; `asked` is the proof the peer wants (server).
    Witnessing {
        asked: Option<(u64, u64)>,
    },
    /// Server: producing the proof the client asked for.
    ServerProving {
        cosignature: Result<SignedCosignature, String>,
    },
    /// Server: Witness2 sent.
    AwaitWitness3 {
        result: Result<(), String>,
    },
    /// Server: asking the host what it holds of a recovering peer's log.
    AnsweringRecovery,
    Done,
}

/// Which side of the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection; sends Hello.
    Client,
    /// Accepted it; answers.
    Server,
}

/// One side of a handshake.
#[derive(Debug)]
pub struct Handshake {
    role: Role,
    state: State,
    local: LocalHello,
    peer_dept: String,
    deadline: Instant,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
        from_peer: false,
    }
}

impl Handshake {
    /// The client side: call [`Handshake::start`] for the Hello to send.
    /// `peer_dept` is the department the client dialled (its certificate
    /// was already checked to name it).
    pub fn client(now: Instant, timeout: Duration, local: LocalHello, peer_dept: &str) -> Self {
        Handshake {
            role: Role::Client,
            state: State::AwaitHelloReply,
            local,
            peer_dept: peer_dept.to_string(),
            deadline: now + timeout,
        }
    }

    /// The server side; `peer_dept` comes from the client's certificate.
    pub fn server(now: Instant, timeout: Duration, local: LocalHello, peer_dept: &str) -> Self {
        Handshake {
            role: Role::Server,
            state: State::AwaitHello,
            local,
            peer_dept: peer_dept.to_string(),
            deadline: now + timeout,
        }
    }

    /// The first actions: the client's Hello (nothing for the server).
    pub fn start(&mut self) -> Vec<Action> {
        match self.role {
            Role::Server => Vec::new(),
            Role::Client => vec![Action::Send(Message::Hello(Box::new(Hello {
                versions: vec![PROTOCOL_VERSION],
                dept: self.local.dept.clone(),
                software: self.local.software.clone(),
                checkpoint: self.local.checkpoint.clone(),
                endorsement: self.local.endorsement.clone(),
                key_documents: self.local.key_documents.clone(),
                time_ms: Some(self.local.time_ms),
                recovering: self.local.recovering,
                discontinuity: self.local.discontinuity.clone(),
            })))],
        }
    }

    /// The checkpoint this node sent (what the peer cosigns).
    pub fn sent_checkpoint(&self) -> &SignedCheckpoint {
        &self.local.checkpoint
    }

    /// The peer's department.
    pub fn peer(&self) -> &str {
        &self.peer_dept
    }

    /// Whether the handshake finished.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Handles one message from the peer.
    pub fn handle(&mut self, msg: Message) -> Result<Vec<Action>, Failure> {
        let state = std::mem::replace(&mut self.state, State::Done);
        match (state, msg) {
            (_, Message::Error(e)) => Err(Failure {
                code: e.code,
                message: e.message,
                from_peer: true,
            }),
            (State::AwaitHello, Message::Hello(h)) => {
                if h.dept != self.peer_dept {
                    return Err(fail(
                        ErrorCode::BadRequest,
                        format!(
                            "Hello names department {} but the certificate says {}",
                            h.dept, self.peer_dept
                        ),
                    ));
                }
                if !h.versions.contains(&PROTOCOL_VERSION) {
                    return Err(fail(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "no common protocol version: the peer speaks {:?}, this node {PROTOCOL_VERSION}",
                            h.versions
                        ),
                    ));
                }
                if h.recovering {
                    self.state = State::AnsweringRecovery;
                    return Ok(vec![Action::Recovery]);
                }
                self.state = State::CheckingPeer { asked: None };
                let h = *h;
                Ok(vec![Action::CheckPeer(Box::new(PeerHello {
                    checkpoint: h.checkpoint,
                    endorsement: h.endorsement,
                    key_documents: h.key_documents,
                    software: h.software,
                    time_ms: h.time_ms,
                    discontinuity: h.discontinuity,
                }))])
            }
            (State::AwaitHelloReply, Message::HelloReply(r)) => {
                if r.version != PROTOCOL_VERSION {
                    return Err(fail(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "the peer chose protocol version {}, this node offered {PROTOCOL_VERSION}",
                            r.version
                        ),
                    ));
                }
                if r.dept != self.peer_dept {
                    return Err(fail(
                        ErrorCode::BadRequest,
                        format!(
                            "HelloReply names department {} but the certificate says {}",
                            r.dept, self.peer_dept
                        ),
                    ));
                }
                let r = *r;
                if self.local.recovering {
                    self.state = State::Done;
                    return Ok(vec![Action::Recovered(r.held)]);
                }
                self.state = State::CheckingPeer {
                    asked: r.proof_request,
                };
                Ok(vec![Action::CheckPeer(Box::new(PeerHello {
                    checkpoint: r.checkpoint,
                    endorsement: r.endorsement,
                    key_documents: r.key_documents,
                    software: r.software,
                    time_ms: r.time_ms,
                    discontinuity: r.discontinuity,
                }))])
            }
            (State::AwaitWitness1, Message::Witness1(w)) => {
                // Witnessing decides what a missing proof means; the machine
                // passes on what arrived.
                self.state = State::Witnessing {
                    asked: w.proof_request,
                };
                Ok(vec![Action::Witness { proof: w.proof }])
            }
            (State::AwaitWitness2, Message::Witness2(w)) => {
                let w = *w;
                self.state = State::Witnessing { asked: None };
                Ok(vec![
                    Action::StoreCosignature(w.cosignature),
                    Action::Witness { proof: w.proof },
                ])
            }
            (State::AwaitWitness3 { result }, Message::Witness3(w)) => {
                self.state = State::Done;
                Ok(vec![
                    Action::StoreCosignature(w.cosignature),
                    Action::Done(result),
                ])
            }
            (state, other) => {
                let what = format!(
                    "unexpected {:?} during the handshake ({state:?})",
                    other.msg_type()
                );
                Err(fail(ErrorCode::BadRequest, what))
            }
        }
    }

    /// This node's HelloReply, asking no proof, holding nothing.
    fn hello_reply(&self) -> HelloReply {
        HelloReply {
            version: PROTOCOL_VERSION,
            dept: self.local.dept.clone(),
            software: self.local.software.clone(),
            checkpoint: self.local.checkpoint.clone(),
            endorsement: self.local.endorsement.clone(),
            key_documents: self.local.key_documents.clone(),
            proof_request: None,
            time_ms: Some(self.local.time_ms),
            held: None,
            discontinuity: None,
        }
    }

    /// The host checked the peer's hello; `need` is the consistency proof of
    /// the peer's log that witnessing needs (None: nothing to prove).
    pub fn peer_checked(&mut self, need: Option<(u64, u64)>) -> Result<Vec<Action>, Failure> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::CheckingPeer { asked } => match self.role {
                Role::Server => {
                    self.state = State::AwaitWitness1;
                    let reply = HelloReply {
                        proof_request: need,
                        discontinuity: self.local.discontinuity.clone(),
                        ..self.hello_reply()
                    };
                    Ok(vec![Action::Send(Message::HelloReply(Box::new(reply)))])
                }
                Role::Client => match asked {
                    Some((from, to)) => {
                        self.state = State::ClientProving { need };
                        Ok(vec![Action::Prove { from, to }])
                    }
                    None => {
                        self.state = State::AwaitWitness2;
                        Ok(vec![Action::Send(Message::Witness1(Witness1 {
                            proof: None,
                            proof_request: need,
                        }))])
                    }
                },
            },
            other => Err(self.out_of_order("peer_checked", other)),
        }
    }

    /// Server: the host's answer to a recovering peer (the checkpoint of its
    /// log held here, with our cosignature), sent in the HelloReply.
    pub fn recovery_answer(
        &mut self,
        held: Option<WitnessedCheckpoint>,
    ) -> Result<Vec<Action>, Failure> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AnsweringRecovery => Ok(vec![
                Action::Send(Message::HelloReply(Box::new(HelloReply {
                    held: held.map(Box::new),
                    ..self.hello_reply()
                }))),
                Action::Answered,
            ]),
            other => Err(self.out_of_order("recovery_answer", other)),
        }
    }

    /// The host produced the proof asked for (None: it cannot be given).
    pub fn proved(&mut self, proof: Option<Vec<ByteBuf>>) -> Result<Vec<Action>, Failure> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::ClientProving { need } => {
                self.state = State::AwaitWitness2;
                Ok(vec![Action::Send(Message::Witness1(Witness1 {
                    proof,
                    proof_request: need,
                }))])
            }
            State::ServerProving { cosignature } => {
                let result = cosignature.as_ref().map(|_| ()).map_err(Clone::clone);
                self.state = State::AwaitWitness3 { result };
                Ok(vec![Action::Send(Message::Witness2(Box::new(Witness2 {
                    proof,
                    cosignature,
                })))])
            }
            other => Err(self.out_of_order("proved", other)),
        }
    }

    /// The host witnessed the peer's checkpoint: our cosignature, or why not.
    pub fn witnessed(
        &mut self,
        cosignature: Result<SignedCosignature, String>,
    ) -> Result<Vec<Action>, Failure> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Witnessing { asked } => match self.role {
                Role::Server => match asked {
                    Some((from, to)) => {
                        self.state = State::ServerProving { cosignature };
                        Ok(vec![Action::Prove { from, to }])
                    }
                    None => {
                        let result = cosignature.as_ref().map(|_| ()).map_err(Clone::clone);
                        self.state = State::AwaitWitness3 { result };
                        Ok(vec![Action::Send(Message::Witness2(Box::new(Witness2 {
                            proof: None,
                            cosignature,
                        })))])
                    }
                },
                Role::Client => {
                    let result = cosignature.as_ref().map(|_| ()).map_err(Clone::clone);
                    self.state = State::Done;
                    Ok(vec![
                        Action::Send(Message::Witness3(Box::new(Witness3 { cosignature }))),
                        Action::Done(result),
                    ])
                }
            },
            other => Err(self.out_of_order("witnessed", other)),
        }
    }

    fn out_of_order(&mut self, what: &str, state: State) -> Failure {
        let f = fail(
            ErrorCode::Internal,
            format!("handshake driver called {what} in state {state:?}"),
        );
        self.state = State::Done;
        f
    }

    /// When the handshake deadline passes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state != State::Done).then_some(self.deadline)
    }

    /// Fails the handshake once its deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Failure> {
        let due = self.poll_timeout().filter(|&t| now >= t)?;
        self.state = State::Done;
        Some(fail(
            ErrorCode::Timeout,
            format!(
                "handshake with {} timed out: not complete within its deadline ({:?} late)",
                self.peer_dept,
                now.saturating_duration_since(due)
            ),
        ))
    }
}
