//! The QUIC driver: endpoints, the connection handshake (Hello and audit
//! witnessing), request streams, and the IO around the sans-IO transfer
//! machines of [`crate::proto::transfer`].
//!
//! One connection per peer conversation; stream 0 carries the handshake, every
//! request gets its own bidirectional stream. Limits: at most
//! [`MAX_STREAMS`] concurrent streams per connection, a read timeout on every
//! frame, per-type frame caps in the decoder.

use crate::error::{NodeError, Result};
use crate::grants;
use crate::node::Node;
use crate::progress::{Progress, Unit};
use crate::proto::frame::FrameDecoder;
use crate::proto::msg::{
    AlreadyHave, CatalogEntry, CatalogResponse, ErrorCode, Hello, HelloReply, KeyDirResponse,
    Manifest, ManifestBody, ManifestField, Message, Offer, OfferAccept, PROTOCOL_VERSION, Receipt,
    ReceiptBody, ReleaseRequest, Resume, Witness1, Witness2, Witness3,
};
use crate::proto::transfer::{
    Failure, ManifestCheck, ReceiptCheck, Receiver, RxAction, Sender, TxAction,
};
use crate::release::{self, Delivery, InRelease, ReleaseSpec, release_hex};
use crate::store::{CF_IN_RELEASES, CF_OUT_RELEASES};
use pdx_audit::checkpoint::{Cosignature, SignedCheckpoint, SignedCosignature};
use pdx_audit::merkle::Hash;
use pdx_audit::store::now_ms;
use pdx_audit::witness::{self, PeerCheckpoint, WitnessStep};
use pdx_audit::{EventKind, Subject};
use pdx_crypto::wire::Signed;
use pdx_crypto::{Digest, SignatureDomain};
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Concurrent bidirectional streams a peer may open.
pub const MAX_STREAMS: u32 = 16;
/// Software string sent in Hello.
pub const SOFTWARE: &str = concat!("pdx/", env!("CARGO_PKG_VERSION"));

/// QUIC transport settings. Windows are sized for high bandwidth-delay links
/// and loopback (see docs/benchmarks.md for the measured effect).
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // A silent peer (crashed, cut off) is detected within 20 s; keep-alives
    // keep a connection alive while the sender de-identifies.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(20)).ok());
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
    t.receive_window(quinn::VarInt::from_u32(64 << 20));
    t.send_window(64 << 20);
    t
}

fn peer_err(peer: &str) -> impl Fn(String) -> NodeError + '_ {
    move |message| NodeError::Peer {
        peer: peer.to_string(),
        message,
    }
}

/// A message stream with framing and a read timeout.
pub struct Framed {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    dec: FrameDecoder,
    buf: Vec<u8>,
    /// Peer department (for errors).
    pub peer: String,
    /// Read timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for Framed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framed").field("peer", &self.peer).finish()
    }
}

impl Framed {
    fn new(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        peer: &str,
        timeout: Duration,
    ) -> Self {
        Framed {
            send,
            recv,
            dec: FrameDecoder::new(),
            buf: Vec::new(),
            peer: peer.to_string(),
            timeout,
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, m: &Message) -> Result<()> {
        let bytes = m
            .encode()
            .map_err(|e| NodeError::Invalid(format!("cannot encode {:?}: {e}", m.msg_type())))?;
        self.send
            .write_all(&bytes)
            .await
            .map_err(|e| peer_err(&self.peer)(format!("stream closed while sending: {e}")))
    }

    /// Receives one message (read timeout applies to the whole message).
    pub async fn recv(&mut self) -> Result<Message> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.dec.next_frame() {
                Ok(Some(f)) => {
                    return Message::decode(f.msg_type, &f.payload)
                        .map_err(|e| peer_err(&self.peer)(e.to_string()));
                }
                Ok(None) => {}
                Err(e) => return Err(peer_err(&self.peer)(e.to_string())),
            }
            let want = self.dec.wanted().clamp(1, 1 << 20);
            self.buf.resize(want, 0);
            let read = tokio::time::timeout_at(deadline, self.recv.read(&mut self.buf)).await;
            match read {
                Err(_) => {
                    return Err(peer_err(&self.peer)(format!(
                        "timed out after {:?} waiting for data",
                        self.timeout
                    )));
                }
                Ok(Ok(Some(n))) => self.dec.push(&self.buf[..n]),
                Ok(Ok(None)) => {
                    self.dec
                        .finish()
                        .map_err(|e| peer_err(&self.peer)(e.to_string()))?;
                    return Err(peer_err(&self.peer)("stream ended".into()));
                }
                Ok(Err(e)) => return Err(peer_err(&self.peer)(format!("read failed: {e}"))),
            }
        }
    }

    /// Sends an error and finishes the stream (best effort).
    pub async fn refuse(&mut self, code: ErrorCode, message: &str) {
        let _ = self.send(&Message::error(code, message)).await;
        self.finish().await;
    }

    /// Finishes our side of the stream and waits briefly for the peer to read it.
    pub async fn finish(&mut self) {
        let _ = self.send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.send.stopped()).await;
    }
}

/// A connection to a peer, after the handshake.
#[derive(Debug, Clone)]
pub struct PeerConn {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// Peer department (from its certificate).
    pub dept: String,
}

impl PeerConn {
    /// Opens a request stream.
    pub async fn stream(&self, timeout: Duration) -> Result<Framed> {
        let (send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| peer_err(&self.dept)(format!("cannot open a stream: {e}")))?;
        Ok(Framed::new(send, recv, &self.dept, timeout))
    }
}

struct LiveConn {
    dept: String,
    cert: CertificateDer<'static>,
    conn: quinn::Connection,
}

/// A node's network side.
pub struct Net {
    /// The node.
    pub node: Arc<Node>,
    endpoint: quinn::Endpoint,
    live: Mutex<Vec<LiveConn>>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("dept", &self.node.config.dept)
            .finish()
    }
}

fn client_config(node: &Node) -> Result<quinn::ClientConfig> {
    let keys = node.keys()?;
    let tls = crate::tls::client_config(
        &node.trust,
        vec![node.cert.clone()],
        keys.identity.pkcs8_der(),
    )?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}

fn peer_cert(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?
        .into_iter()
        .next()
}

impl Net {
    /// A listening endpoint (for `pdx serve`) that also dials out.
    pub fn server(node: Arc<Node>) -> Result<Arc<Net>> {
        let addr: SocketAddr = node.config.listen.parse().map_err(|e| {
            NodeError::Invalid(format!("listen address {}: {e}", node.config.listen))
        })?;
        let tls = {
            let keys = node.keys()?;
            crate::tls::server_config(
                &node.trust,
                vec![node.cert.clone()],
                keys.identity.pkcs8_der(),
            )?
        };
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| NodeError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(Arc::new(transport_config()));
        let mut endpoint = quinn::Endpoint::server(server, addr)
            .map_err(|e| NodeError::Network(format!("cannot listen on {addr}: {e}")))?;
        endpoint.set_default_client_config(client_config(&node)?);
        Ok(Arc::new(Net {
            node,
            endpoint,
            live: Mutex::new(Vec::new()),
        }))
    }

    /// A dial-only endpoint (CLI commands run without a server).
    pub fn client(node: Arc<Node>) -> Result<Arc<Net>> {
        let bind: SocketAddr = if node.config.listen.starts_with('[') {
            "[::]:0".parse()
        } else {
            "0.0.0.0:0".parse()
        }
        .map_err(|e| NodeError::Invalid(format!("{e}")))?;
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| NodeError::Network(format!("cannot open a UDP socket: {e}")))?;
        endpoint.set_default_client_config(client_config(&node)?);
        Ok(Arc::new(Net {
            node,
            endpoint,
            live: Mutex::new(Vec::new()),
        }))
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|e| NodeError::Network(e.to_string()))
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(
            self.node.config.transfer.read_timeout_secs.max(1),
        ))
    }

    /// Closes the endpoint (in-flight streams get an error).
    pub async fn shutdown(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
    }

    /// Re-checks live connections after a CRL update; closes and audits revoked ones.
    pub fn recheck_connections(&self) -> Result<usize> {
        let mut closed = 0;
        let mut live = self
            .live
            .lock()
            .map_err(|_| NodeError::Invalid("connection registry poisoned".into()))?;
        live.retain(|c| c.conn.close_reason().is_none());
        let mut keep = Vec::new();
        for c in live.drain(..) {
            match self.node.trust.check_peer(&c.cert) {
                Ok(_) => keep.push(c),
                Err(e) => {
                    c.conn
                        .close(quinn::VarInt::from_u32(2), b"certificate revoked");
                    let mut d = self.node.draft(EventKind::RefusedRequest, "node");
                    d.counterparty = Some(c.dept.clone());
                    d.detail = Some(format!("live connection closed after CRL update: {e}"));
                    self.node.log(d)?;
                    closed += 1;
                }
            }
        }
        *live = keep;
        Ok(closed)
    }

    fn register(&self, dept: &str, cert: CertificateDer<'static>, conn: &quinn::Connection) {
        if let Ok(mut live) = self.live.lock() {
            live.retain(|c| c.conn.close_reason().is_none());
            live.push(LiveConn {
                dept: dept.to_string(),
                cert,
                conn: conn.clone(),
            });
        }
    }

    // ---------------- client side ----------------

    /// Connects to `dept` and performs the handshake (audit witnessing both ways).
    pub async fn connect(&self, dept: &str) -> Result<PeerConn> {
        let peer = self.node.peer(dept)?;
        let addr: SocketAddr = peer
            .addr
            .parse()
            .map_err(|e| NodeError::Invalid(format!("peer {dept} address {}: {e}", peer.addr)))?;
        let name = crate::pki::dns_name(dept, &self.node.config.network);
        let result = async {
            let conn = self
                .endpoint
                .connect(addr, &name)
                .map_err(|e| {
                    NodeError::Network(format!("cannot connect to {dept} at {addr}: {e}"))
                })?
                .await
                .map_err(|e| NodeError::Network(format!("connecting to {dept} at {addr}: {e}")))?;
            let cert = peer_cert(&conn).ok_or_else(|| peer_err(dept)("no certificate".into()))?;
            let info = self.node.check_cert(&cert)?;
            if info.dept != dept {
                conn.close(quinn::VarInt::from_u32(1), b"wrong department");
                return Err(peer_err(dept)(format!(
                    "answered with the certificate of {}",
                    info.dept
                )));
            }
            self.client_handshake(&conn, dept, &info.identity).await?;
            self.register(dept, cert, &conn);
            Ok(PeerConn {
                conn,
                dept: dept.to_string(),
            })
        }
        .await;
        let note = result.as_ref().err().map(|e| e.to_string());
        self.node.peer_contact(dept, note)?;
        result
    }

    async fn client_handshake(
        &self,
        conn: &quinn::Connection,
        dept: &str,
        identity: &pdx_crypto::VerifyingKey,
    ) -> Result<()> {
        let node = &self.node;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| peer_err(dept)(format!("the peer refused the connection: {e}")))?;
        let mut s = Framed::new(send, recv, dept, self.timeout());
        let my_ckpt = node.audit.checkpoint()?;
        s.send(&Message::Hello(Box::new(Hello {
            versions: vec![PROTOCOL_VERSION],
            dept: node.config.dept.clone(),
            software: SOFTWARE.into(),
            checkpoint: my_ckpt.clone(),
            endorsement: node.audit_endorsement()?,
            key_documents: node.own_key_documents()?,
        })))
        .await?;
        let reply = match s.recv().await? {
            Message::HelloReply(r) => r,
            Message::Error(e) => return Err(peer_err(dept)(format!("refused: {}", e.message))),
            other => {
                return Err(peer_err(dept)(format!(
                    "expected HelloReply, got {:?}",
                    other.msg_type()
                )));
            }
        };
        if reply.version != PROTOCOL_VERSION || reply.dept != dept {
            return Err(peer_err(dept)(format!(
                "bad HelloReply (version {}, dept {})",
                reply.version, reply.dept
            )));
        }
        node.accept_key_documents(&reply.key_documents)?;
        let pc = PeerCheckpoint::verify(
            dept,
            identity,
            reply.endorsement.clone(),
            reply.checkpoint.clone(),
        )?;
        let witnessing = witness::begin(&node.audit, &pc)?;
        let my_proof = proof_for(node, reply.proof_request, &my_ckpt)?;
        let need = match witnessing.step {
            WitnessStep::NeedProof { from, to } => Some((from, to)),
            WitnessStep::Ready => None,
        };
        s.send(&Message::Witness1(Witness1 {
            proof: my_proof,
            proof_request: need,
        }))
        .await?;
        let w2 = match s.recv().await? {
            Message::Witness2(w) => w,
            other => {
                return Err(peer_err(dept)(format!(
                    "expected Witness2, got {:?}",
                    other.msg_type()
                )));
            }
        };
        let theirs = witness_peer(node, witnessing, pc, need, w2.proof.as_deref());
        match &w2.cosignature {
            Ok(c) => store_cosignature(node, dept, identity, &my_ckpt, c)?,
            Err(why) => tracing::warn!(peer = dept, "peer did not cosign our checkpoint: {why}"),
        }
        let cosig = theirs
            .as_ref()
            .map(Clone::clone)
            .map_err(ToString::to_string);
        s.send(&Message::Witness3(Box::new(Witness3 {
            cosignature: cosig,
        })))
        .await?;
        s.finish().await;
        theirs.map(|_| ())
    }

    /// `pdx catalog --peer`.
    pub async fn catalog(&self, dept: &str) -> Result<Vec<CatalogEntry>> {
        match self
            .request(
                dept,
                Message::CatalogRequest(crate::proto::msg::CatalogRequest {}),
            )
            .await?
        {
            Message::CatalogResponse(r) => Ok(r.entries),
            Message::Error(e) => Err(NodeError::Refused(format!("{dept} refused: {}", e.message))),
            other => Err(peer_err(dept)(format!(
                "expected CatalogResponse, got {:?}",
                other.msg_type()
            ))),
        }
    }

    /// One request, one reply, on a fresh connection (handshake included).
    async fn request(&self, dept: &str, request: Message) -> Result<Message> {
        let pc = self.connect(dept).await?;
        let mut s = pc.stream(self.timeout()).await?;
        s.send(&request).await?;
        let reply = s.recv().await;
        s.finish().await;
        pc.conn.close(quinn::VarInt::from_u32(0), b"done");
        reply
    }

    /// `pdx keys fetch --peer`: key documents from a peer (its own or its directory).
    pub async fn fetch_keys(&self, dept: &str, of: Vec<String>) -> Result<(usize, Vec<String>)> {
        match self
            .request(
                dept,
                Message::KeyDirRequest(crate::proto::msg::KeyDirRequest { depts: of }),
            )
            .await?
        {
            Message::KeyDirResponse(r) => self.node.accept_key_documents(&r.documents),
            Message::Error(e) => Err(NodeError::Refused(format!("{dept} refused: {}", e.message))),
            other => Err(peer_err(dept)(format!(
                "expected KeyDirResponse, got {:?}",
                other.msg_type()
            ))),
        }
    }

    /// `pdx fetch`: pulls a release, resuming an interrupted one, verifying every
    /// chunk, and returns when the sender has confirmed our signed receipt.
    pub async fn fetch(
        &self,
        dept: &str,
        req: &ReleaseRequest,
        operator: &str,
        progress: &dyn Progress,
    ) -> Result<FetchOutcome> {
        let node = &self.node;
        let partial = release::in_releases(node)?.into_iter().find(|r| {
            !r.complete
                && r.from == dept
                && r.sender == dept
                && r.dataset == req.dataset
                && r.profile == req.profile
                && r.agreement == req.agreement.clone().unwrap_or_default()
                && r.purpose == req.purpose
        });
        let pc = self.connect(dept).await?;
        let mut s = pc.stream(self.timeout()).await?;
        let now = Instant::now();
        let mut rx = match &partial {
            Some(p) => {
                s.send(&Message::Resume(Resume {
                    release_id: p.release_id.clone(),
                    next_chunk: p.stored,
                }))
                .await?;
                Receiver::new(
                    now,
                    self.timeout(),
                    Some((p.release_id.clone(), p.stored)),
                    None,
                )
            }
            None => {
                s.send(&Message::ReleaseRequest(req.clone())).await?;
                Receiver::new(now, self.timeout(), None, None)
            }
        };
        let check = FetchCheck {
            node,
            sender: dept.to_string(),
        };
        let resumed_from = partial.as_ref().map(|p| p.stored);
        let outcome = self
            .drive_receiver(
                &mut s,
                &mut rx,
                Vec::new(),
                &check,
                dept,
                operator,
                progress,
                RxMode::Fetch,
            )
            .await;
        if let Err(e) = &outcome
            && let NodeError::Refused(why) = e
        {
            let mut d = node.draft(EventKind::RefusedRequest, operator);
            d.subject.dataset = Some(req.dataset.clone());
            d.counterparty = Some(dept.to_string());
            d.agreement = req.agreement.clone();
            d.purpose = Some(req.purpose.clone());
            d.detail = Some(format!(
                "our request for profile {} was refused: {why}",
                req.profile
            ));
            node.log(d)?;
        }
        s.finish().await;
        pc.conn.close(quinn::VarInt::from_u32(0), b"done");
        outcome.map(|mut o| {
            o.resumed_from = resumed_from;
            o
        })
    }

    /// `pdx forward`: pushes the chunks of a received release that its sender
    /// addressed to `to`, keeping the original manifest and signatures.
    pub async fn forward(
        &self,
        id: &[u8],
        to: &str,
        operator: &str,
        progress: &dyn Progress,
    ) -> Result<ForwardOutcome> {
        let node = &self.node;
        let rel = release::in_release(node, id)?.ok_or_else(|| {
            NodeError::NotFound(format!("no received release {}", release_hex(id)))
        })?;
        if !rel.complete {
            return Err(NodeError::Invalid(format!(
                "release {} is incomplete; fetch it first",
                release_hex(id)
            )));
        }
        let body = release::verify_manifest(node, &rel.manifest)?;
        let plan: Vec<u32> = rel
            .plan
            .iter()
            .copied()
            .filter(|&i| body.chunks[i as usize].recipient.as_deref() == Some(to))
            .collect();
        if plan.is_empty() {
            return Err(NodeError::Invalid(format!(
                "release {} has no chunks its sender addressed to {to}; relays forward only what the sender sealed for the recipient",
                release_hex(id)
            )));
        }
        let pc = self.connect(to).await?;
        let mut s = pc.stream(self.timeout()).await?;
        s.send(&Message::Offer(Box::new(Offer {
            manifest: rel.manifest.clone(),
            chunks: plan.clone(),
        })))
        .await?;
        let start = match s.recv().await? {
            Message::OfferAccept(a) => a.resume_from,
            Message::AlreadyHave(_) => {
                s.finish().await;
                return Ok(ForwardOutcome {
                    release: release_hex(id),
                    to: to.to_string(),
                    chunks: plan.len() as u32,
                    records: 0,
                    already_delivered: true,
                    content_digest: String::new(),
                });
            }
            Message::Error(e) => {
                return Err(NodeError::Refused(format!(
                    "{to} refused the forward: {}",
                    e.message
                )));
            }
            other => {
                return Err(peer_err(to)(format!(
                    "expected OfferAccept, got {:?}",
                    other.msg_type()
                )));
            }
        };
        let mut tx = Sender::new(
            Instant::now(),
            self.timeout(),
            node.config.transfer.window,
            &body,
            plan.clone(),
            start,
            to,
        )
        .map_err(|f| NodeError::Invalid(f.to_string()))?;
        let delivery = self
            .drive_sender(
                &mut s,
                &mut tx,
                &body,
                Source::Received,
                operator,
                progress,
                Some(&rel.from),
            )
            .await?;
        s.finish().await;
        pc.conn.close(quinn::VarInt::from_u32(0), b"done");
        Ok(ForwardOutcome {
            release: release_hex(id),
            to: to.to_string(),
            chunks: plan.len() as u32,
            records: delivery.records,
            already_delivered: false,
            content_digest: delivery.content_digest.to_hex(),
        })
    }

    /// Pushes a signed document (`kind`) to a peer; returns its acknowledgement.
    pub async fn submit(
        &self,
        dept: &str,
        kind: &str,
        document: Vec<u8>,
    ) -> Result<crate::proto::msg::Accepted> {
        let request = Message::Submit(crate::proto::msg::Submit {
            kind: kind.to_string(),
            document,
        });
        match self.request(dept, request).await? {
            Message::Accepted(a) => Ok(a),
            Message::Error(e) => Err(NodeError::Refused(format!(
                "{dept} refused the {kind}: {}",
                e.message
            ))),
            other => Err(peer_err(dept)(format!(
                "expected Accepted, got {:?}",
                other.msg_type()
            ))),
        }
    }

    // ---------------- server side ----------------

    /// Accepts connections until the endpoint closes.
    pub async fn serve(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let net = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                if let Err(e) = net.handle_incoming(incoming).await {
                    tracing::info!(%remote, "connection ended: {e}");
                }
            });
        }
    }

    async fn handle_incoming(self: Arc<Self>, incoming: quinn::Incoming) -> Result<()> {
        let remote = incoming.remote_address();
        let conn = match incoming.await {
            Ok(c) => c,
            Err(e) => {
                // A refused handshake: no certificate, another CA, revoked, no department.
                let mut d = self.node.draft(EventKind::RefusedRequest, "node");
                d.detail = Some(format!("TLS handshake from {remote} refused: {e}"));
                self.node.log(d)?;
                return Err(NodeError::Network(format!("handshake from {remote}: {e}")));
            }
        };
        let cert = peer_cert(&conn)
            .ok_or_else(|| NodeError::Network("peer without certificate".into()))?;
        let info = match self.node.check_cert(&cert) {
            Ok(i) => i,
            Err(e) => {
                let mut d = self.node.draft(EventKind::RefusedRequest, "node");
                d.detail = Some(format!("connection from {remote} refused: {e}"));
                self.node.log(d)?;
                conn.close(quinn::VarInt::from_u32(2), b"certificate not accepted");
                return Err(e);
            }
        };
        let dept = info.dept.clone();
        self.register(&dept, cert, &conn);
        let (send, recv) = tokio::time::timeout(self.timeout(), conn.accept_bi())
            .await
            .map_err(|_| peer_err(&dept)("no handshake stream".into()))?
            .map_err(|e| peer_err(&dept)(format!("{e}")))?;
        let mut s = Framed::new(send, recv, &dept, self.timeout());
        if let Err(e) = self.server_handshake(&mut s, &dept, &info.identity).await {
            let mut d = self.node.draft(EventKind::RefusedRequest, "node");
            d.counterparty = Some(dept.clone());
            d.detail = Some(format!("handshake failed: {e}"));
            self.node.log(d)?;
            s.refuse(ErrorCode::BadRequest, &e.to_string()).await;
            conn.close(quinn::VarInt::from_u32(3), b"handshake failed");
            return Err(e);
        }
        self.node.peer_contact(&dept, None)?;
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => return Ok(()),
            };
            let net = self.clone();
            let dept = dept.clone();
            tokio::spawn(async move {
                let mut s = Framed::new(send, recv, &dept, net.timeout());
                if let Err(e) = net.handle_request(&mut s).await {
                    tracing::info!(peer = %dept, "request failed: {e}");
                }
            });
        }
    }

    async fn server_handshake(
        &self,
        s: &mut Framed,
        dept: &str,
        identity: &pdx_crypto::VerifyingKey,
    ) -> Result<()> {
        let node = &self.node;
        let hello = match s.recv().await? {
            Message::Hello(h) => h,
            other => {
                return Err(peer_err(dept)(format!(
                    "expected Hello, got {:?}",
                    other.msg_type()
                )));
            }
        };
        if hello.dept != dept {
            return Err(peer_err(dept)(format!(
                "Hello names department {} but the certificate says {dept}",
                hello.dept
            )));
        }
        if !hello.versions.contains(&PROTOCOL_VERSION) {
            s.refuse(
                ErrorCode::UnsupportedVersion,
                "this node speaks protocol version 1",
            )
            .await;
            return Err(peer_err(dept)(format!(
                "no common protocol version in {:?}",
                hello.versions
            )));
        }
        node.accept_key_documents(&hello.key_documents)?;
        let pc = PeerCheckpoint::verify(
            dept,
            identity,
            hello.endorsement.clone(),
            hello.checkpoint.clone(),
        )?;
        let witnessing = witness::begin(&node.audit, &pc)?;
        let need = match witnessing.step {
            WitnessStep::NeedProof { from, to } => Some((from, to)),
            WitnessStep::Ready => None,
        };
        let my_ckpt = node.audit.checkpoint()?;
        s.send(&Message::HelloReply(Box::new(HelloReply {
            version: PROTOCOL_VERSION,
            dept: node.config.dept.clone(),
            software: SOFTWARE.into(),
            checkpoint: my_ckpt.clone(),
            endorsement: node.audit_endorsement()?,
            key_documents: node.own_key_documents()?,
            proof_request: need,
        })))
        .await?;
        let w1 = match s.recv().await? {
            Message::Witness1(w) => w,
            other => {
                return Err(peer_err(dept)(format!(
                    "expected Witness1, got {:?}",
                    other.msg_type()
                )));
            }
        };
        let theirs = witness_peer(node, witnessing, pc, need, w1.proof.as_deref());
        let proof = proof_for(node, w1.proof_request, &my_ckpt)?;
        let cosig = theirs
            .as_ref()
            .map(Clone::clone)
            .map_err(ToString::to_string);
        s.send(&Message::Witness2(Box::new(Witness2 {
            proof,
            cosignature: cosig,
        })))
        .await?;
        match s.recv().await? {
            Message::Witness3(w) => match w.cosignature {
                Ok(c) => store_cosignature(node, dept, identity, &my_ckpt, &c)?,
                Err(why) => {
                    tracing::warn!(peer = dept, "peer did not cosign our checkpoint: {why}")
                }
            },
            other => {
                return Err(peer_err(dept)(format!(
                    "expected Witness3, got {:?}",
                    other.msg_type()
                )));
            }
        }
        s.finish().await;
        theirs.map(|_| ())
    }

    async fn handle_request(&self, s: &mut Framed) -> Result<()> {
        let peer = s.peer.clone();
        let msg = s.recv().await?;
        match msg {
            Message::CatalogRequest(_) => {
                let entries = catalog_for(&self.node, &peer)?;
                s.send(&Message::CatalogResponse(CatalogResponse { entries }))
                    .await?;
                s.finish().await;
                Ok(())
            }
            Message::KeyDirRequest(r) => {
                let documents = self.node.all_key_documents(&r.depts)?;
                s.send(&Message::KeyDirResponse(KeyDirResponse { documents }))
                    .await?;
                s.finish().await;
                Ok(())
            }
            Message::ReleaseRequest(r) => self.serve_release(s, r, None).await,
            Message::Resume(r) => {
                let id = r.release_id.clone();
                match release::out_release(&self.node, &id) {
                    Ok(out) if out.recipient == peer => {
                        let req = ReleaseRequest {
                            dataset: out.dataset.clone(),
                            profile: out.profile.clone(),
                            agreement: Some(out.agreement.clone()).filter(|a| !a.is_empty()),
                            purpose: out.purpose.clone(),
                        };
                        self.serve_release(s, req, Some((out, r.next_chunk))).await
                    }
                    _ => {
                        self.refuse_audited(
                            s,
                            &peer,
                            None,
                            ErrorCode::NotFound,
                            &format!("no release {} for {peer}", release_hex(&id)),
                        )
                        .await
                    }
                }
            }
            Message::Offer(o) => self.receive_offer(s, *o).await,
            Message::Submit(sub) => {
                let node = self.node.clone();
                let peer2 = peer.clone();
                let result = tokio::task::spawn_blocking(move || {
                    crate::docs::accept(&node, &peer2, &sub.kind, &sub.document)
                })
                .await
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
                match result {
                    Ok(a) => {
                        s.send(&Message::Accepted(a)).await?;
                        s.finish().await;
                        Ok(())
                    }
                    Err(e) => {
                        self.refuse_audited(s, &peer, None, ErrorCode::BadRequest, &e.to_string())
                            .await
                    }
                }
            }
            other => {
                self.refuse_audited(
                    s,
                    &peer,
                    None,
                    ErrorCode::BadRequest,
                    &format!("unexpected {:?} to open a request", other.msg_type()),
                )
                .await
            }
        }
    }

    async fn refuse_audited(
        &self,
        s: &mut Framed,
        peer: &str,
        req: Option<&ReleaseRequest>,
        code: ErrorCode,
        why: &str,
    ) -> Result<()> {
        let mut d = self.node.draft(EventKind::RefusedRequest, "node");
        d.counterparty = Some(peer.to_string());
        if let Some(r) = req {
            d.subject.dataset = Some(r.dataset.clone());
            d.agreement = r.agreement.clone();
            d.purpose = Some(r.purpose.clone());
        }
        d.detail = Some(format!("{code:?}: {why}"));
        self.node.log(d)?;
        s.refuse(code, why).await;
        Err(NodeError::Refused(format!("{peer}: {why}")))
    }

    async fn serve_release(
        &self,
        s: &mut Framed,
        req: ReleaseRequest,
        resume: Option<(release::OutRelease, u32)>,
    ) -> Result<()> {
        let peer = s.peer.clone();
        let node = self.node.clone();
        if let Err((code, why)) = grants::authorize(
            &node,
            &peer,
            &req.dataset,
            &req.profile,
            req.agreement.as_deref(),
            &req.purpose,
        ) {
            return self.refuse_audited(s, &peer, Some(&req), code, &why).await;
        }
        let (out, start) = match resume {
            Some((out, next)) => (out, next),
            None => {
                let spec = ReleaseSpec {
                    dataset: req.dataset.clone(),
                    profile: req.profile.clone(),
                    agreement: req.agreement.clone(),
                    purpose: req.purpose.clone(),
                    recipient: peer.clone(),
                    operator: "node".into(),
                };
                let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, u64, u64)>(16);
                let producing = tokio::task::spawn_blocking(move || {
                    let p = ChannelProgress::new(tx);
                    release::produce(&node, &spec, &p)
                });
                tokio::pin!(producing);
                let result = loop {
                    tokio::select! {
                        r = &mut producing => break r.map_err(|e| NodeError::Invalid(e.to_string()))?,
                        Some((stage, done, total)) = rx.recv() => {
                            s.send(&Message::Progress(crate::proto::msg::Progress { stage, done, total })).await?;
                        }
                    }
                };
                match result {
                    Ok(out) => (out, 0),
                    Err(NodeError::Rule(v)) => {
                        let code = match v {
                            pdx_schemas::RuleViolation::PrivacyModel { .. } => {
                                ErrorCode::PrivacyModel
                            }
                            _ => ErrorCode::RuleRefused,
                        };
                        return self
                            .refuse_audited(s, &peer, Some(&req), code, &v.to_string())
                            .await;
                    }
                    Err(e) => {
                        return self
                            .refuse_audited(
                                s,
                                &peer,
                                Some(&req),
                                ErrorCode::Internal,
                                &e.to_string(),
                            )
                            .await;
                    }
                }
            }
        };
        let body = release::verify_manifest(&self.node, &out.manifest)?;
        s.send(&Message::Manifest(Box::new(out.manifest.clone())))
            .await?;
        let plan: Vec<u32> = (0..out.chunks).collect();
        let mut tx = match Sender::new(
            Instant::now(),
            self.timeout(),
            self.node.config.transfer.window,
            &body,
            plan,
            start,
            &peer,
        ) {
            Ok(t) => t,
            Err(f) => {
                return self
                    .refuse_audited(s, &peer, Some(&req), f.code, &f.message)
                    .await;
            }
        };
        self.drive_sender(
            s,
            &mut tx,
            &body,
            Source::Produced,
            "node",
            &crate::progress::NoProgress,
            None,
        )
        .await?;
        s.finish().await;
        Ok(())
    }

    async fn receive_offer(&self, s: &mut Framed, offer: Offer) -> Result<()> {
        let peer = s.peer.clone();
        let node = &self.node;
        let body = match release::verify_manifest(node, &offer.manifest) {
            Ok(b) => b,
            Err(e) => {
                return self
                    .refuse_audited(s, &peer, None, ErrorCode::BadSignature, &e.to_string())
                    .await;
            }
        };
        let mine = Some(node.config.dept.as_str());
        if offer.chunks.is_empty()
            || offer
                .chunks
                .iter()
                .any(|&i| body.chunks.get(i as usize).map(|c| c.recipient.as_deref()) != Some(mine))
        {
            return self
                .refuse_audited(
                    s,
                    &peer,
                    None,
                    ErrorCode::NotGranted,
                    "the offer includes chunks the original sender did not address to this department",
                )
                .await;
        }
        let existing = release::in_release(node, &body.release_id)?;
        let resume_from = match &existing {
            Some(r) if r.complete => {
                s.send(&Message::AlreadyHave(AlreadyHave {
                    release_id: body.release_id.clone(),
                }))
                .await?;
                s.finish().await;
                return Ok(());
            }
            Some(r) if r.plan == offer.chunks => r.stored,
            _ => 0,
        };
        let check = OfferCheck {
            node,
            release_id: body.release_id.clone(),
        };
        let mut rx = Receiver::new(
            Instant::now(),
            self.timeout(),
            Some((body.release_id.clone(), resume_from)),
            Some(offer.chunks.clone()),
        );
        let first = match rx.accept_manifest(offer.manifest.clone(), &check) {
            Ok(a) => a,
            Err(f) => {
                return self
                    .refuse_audited(s, &peer, None, f.code, &f.message)
                    .await;
            }
        };
        s.send(&Message::OfferAccept(OfferAccept { resume_from }))
            .await?;
        self.drive_receiver(
            s,
            &mut rx,
            first,
            &check,
            &peer,
            "node",
            &crate::progress::NoProgress,
            RxMode::Offer,
        )
        .await?;
        s.finish().await;
        Ok(())
    }

    // ---------------- transfer drivers ----------------

    #[allow(clippy::too_many_arguments)]
    async fn drive_receiver(
        &self,
        s: &mut Framed,
        rx: &mut Receiver,
        mut actions: Vec<RxAction>,
        check: &dyn ManifestCheck,
        from: &str,
        operator: &str,
        progress: &dyn Progress,
        mode: RxMode,
    ) -> Result<FetchOutcome> {
        let node = self.node.clone();
        let mut rel: Option<InRelease> = None;
        let mut receive_seq = None;
        loop {
            let mut next = Vec::new();
            for a in actions.drain(..) {
                match a {
                    RxAction::Send(m) => s.send(&m).await?,
                    RxAction::SaveManifest { body, manifest } => {
                        if mode == RxMode::Fetch
                            && let Some(have) = release::in_release(&node, &body.release_id)?
                            && have.complete
                        {
                            s.send(&Message::AlreadyHave(AlreadyHave {
                                release_id: body.release_id.clone(),
                            }))
                            .await?;
                            return Ok(FetchOutcome::from_release(&have, true));
                        }
                        // Keep an interrupted record of the same plan (its stored
                        // chunks are what the receiver resumes after); else start anew.
                        let r = match release::in_release(&node, &body.release_id)? {
                            Some(mut r) if r.plan == rx.plan() => {
                                r.stored = rx.stored();
                                r
                            }
                            _ => new_in_release(&body, *manifest, from, rx),
                        };
                        node.store.put(CF_IN_RELEASES, &r.release_id, &r)?;
                        progress.stage(
                            &format!("receive {} from {from}", release_hex(&r.release_id)),
                            Some(r.plan.len() as u64),
                            Unit::Chunks,
                        );
                        progress.set(u64::from(r.stored));
                        rel = Some(r);
                    }
                    RxAction::StoreChunk {
                        position,
                        index,
                        records,
                        ..
                    } => {
                        let mut r = rel
                            .take()
                            .ok_or_else(|| NodeError::Invalid("chunk before manifest".into()))?;
                        let n2 = node.clone();
                        let r = tokio::task::spawn_blocking(move || {
                            release::store_in_chunk(&n2, &mut r, position, index, &records)
                                .map(|_| r)
                        })
                        .await
                        .map_err(|e| NodeError::Invalid(e.to_string()))??;
                        progress.set(u64::from(r.stored));
                        rel = Some(r);
                        next.extend(rx.chunk_stored(position));
                    }
                    RxAction::Complete {
                        content_digest,
                        record_count,
                    } => {
                        let r = rel.as_mut().ok_or_else(|| {
                            NodeError::Invalid("completion before manifest".into())
                        })?;
                        progress.done();
                        let seq = complete_receive(
                            &node,
                            r,
                            from,
                            content_digest,
                            record_count,
                            operator,
                        )?;
                        receive_seq = Some(seq);
                        let receipt = sign_receipt(&node, r, from, content_digest, record_count)?;
                        next.extend(rx.receipt_ready(receipt));
                    }
                    RxAction::Finished => {
                        let r = rel
                            .as_ref()
                            .ok_or_else(|| NodeError::Invalid("finished before manifest".into()))?;
                        let mut o = FetchOutcome::from_release(r, false);
                        o.receive_seq = receive_seq;
                        return Ok(o);
                    }
                }
            }
            if !next.is_empty() {
                actions = next;
                continue;
            }
            let msg = s.recv().await?;
            actions = match rx.handle(msg, Instant::now(), check) {
                Ok(a) => a,
                Err(f) => return Err(self.transfer_failed(s, from, f).await),
            };
        }
    }

    async fn transfer_failed(&self, s: &mut Framed, peer: &str, f: Failure) -> NodeError {
        if !f.from_peer {
            let mut d = self.node.draft(EventKind::RefusedRequest, "node");
            d.counterparty = Some(peer.to_string());
            d.detail = Some(format!("transfer aborted: {f}"));
            if let Err(e) = self.node.log(d) {
                return e;
            }
            s.refuse(f.code, &f.message).await;
            NodeError::Peer {
                peer: peer.to_string(),
                message: f.to_string(),
            }
        } else {
            NodeError::Refused(format!("{peer}: {}", f.message))
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn drive_sender(
        &self,
        s: &mut Framed,
        tx: &mut Sender,
        body: &ManifestBody,
        source: Source,
        operator: &str,
        progress: &dyn Progress,
        relayed_from: Option<&str>,
    ) -> Result<Delivery> {
        let node = self.node.clone();
        let peer = s.peer.clone();
        let rate = node.config.transfer.rate_limit_chunks_per_sec;
        let pause = (rate > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(rate)));
        let check = ReceiptVerify { node: &node };
        progress.stage(
            &format!("send {} to {peer}", release_hex(&body.release_id)),
            None,
            Unit::Chunks,
        );
        let mut actions = tx.poll();
        loop {
            let mut next = Vec::new();
            for a in actions.drain(..) {
                match a {
                    TxAction::LoadChunk { index, .. } => {
                        let n2 = node.clone();
                        let id = body.release_id.clone();
                        let bytes = tokio::task::spawn_blocking(move || match source {
                            Source::Produced => release::out_chunk(&n2, &id, index),
                            Source::Received => release::in_chunk(&n2, &id, index),
                        })
                        .await
                        .map_err(|e| NodeError::Invalid(e.to_string()))??;
                        if let TxAction::Send(m) = tx.chunk_loaded(index, bytes) {
                            s.send(&m).await?;
                        }
                        if let Some(p) = pause {
                            tokio::time::sleep(p).await;
                        }
                    }
                    TxAction::Send(m) => s.send(&m).await?,
                    TxAction::LogSend { body: rb, receipt } => {
                        let delivery =
                            log_send(&node, body, &rb, &receipt, operator, relayed_from)?;
                        next.extend(tx.logged(delivery.audit_seq));
                        for m in next.iter().filter_map(|a| match a {
                            TxAction::Send(m) => Some(m.clone()),
                            _ => None,
                        }) {
                            s.send(&m).await?;
                        }
                        progress.done();
                        return Ok(delivery);
                    }
                    TxAction::Finished => {}
                }
            }
            progress.set(u64::from(tx.acked()));
            if !next.is_empty() {
                actions = next;
                continue;
            }
            let msg = s.recv().await?;
            actions = match tx.handle(msg, Instant::now(), &check) {
                Ok(a) => a,
                Err(f) => return Err(self.transfer_failed(s, &peer, f).await),
            };
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxMode {
    Fetch,
    Offer,
}

#[derive(Clone, Copy, Debug)]
enum Source {
    Produced,
    Received,
}

/// What a fetch did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FetchOutcome {
    /// Release id.
    pub release: String,
    /// Original sender.
    pub sender: String,
    /// Dataset.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Records.
    pub records: u64,
    /// Chunks.
    pub chunks: u32,
    /// Transfer digest.
    pub content_digest: String,
    /// The release was already complete here (nothing transferred).
    pub already_complete: bool,
    /// Resumed from this chunk.
    pub resumed_from: Option<u32>,
    /// Audit entry of the receive.
    pub receive_seq: Option<u64>,
}

impl FetchOutcome {
    fn from_release(r: &InRelease, already: bool) -> Self {
        FetchOutcome {
            release: release_hex(&r.release_id),
            sender: r.sender.clone(),
            dataset: r.dataset.clone(),
            profile: r.profile.clone(),
            records: r.record_count,
            chunks: r.plan.len() as u32,
            content_digest: r.content_digest.map(|d| d.to_hex()).unwrap_or_default(),
            already_complete: already,
            resumed_from: None,
            receive_seq: r.receive_seq,
        }
    }
}

/// What a forward did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ForwardOutcome {
    /// Release.
    pub release: String,
    /// Recipient.
    pub to: String,
    /// Chunks offered.
    pub chunks: u32,
    /// Records delivered.
    pub records: u64,
    /// The recipient already had them.
    pub already_delivered: bool,
    /// Transfer digest.
    pub content_digest: String,
}

fn new_in_release(body: &ManifestBody, manifest: Manifest, from: &str, rx: &Receiver) -> InRelease {
    InRelease {
        release_id: body.release_id.clone(),
        manifest,
        sender: body.sender.clone(),
        from: from.to_string(),
        dataset: body.dataset.clone(),
        profile: body.profile.clone(),
        agreement: body.agreement.clone(),
        purpose: body.purpose.clone(),
        plan: rx.plan().to_vec(),
        stored: rx.stored(),
        complete: false,
        completed_ms: None,
        content_digest: None,
        record_count: 0,
        receive_seq: None,
    }
}

fn complete_receive(
    node: &Node,
    r: &mut InRelease,
    from: &str,
    content_digest: Digest,
    record_count: u64,
    operator: &str,
) -> Result<u64> {
    let body = release::verify_manifest(node, &r.manifest)?;
    r.complete = true;
    r.completed_ms = Some(now_ms());
    r.content_digest = Some(content_digest);
    r.record_count = record_count;
    let mut d = node.draft(EventKind::Receive, operator);
    d.subject = Subject {
        dataset: Some(r.dataset.clone()),
        release: Some(release_hex(&r.release_id)),
        digest: Some(content_digest),
    };
    d.counterparty = Some(from.to_string());
    d.agreement = Some(r.agreement.clone()).filter(|a| !a.is_empty());
    d.purpose = Some(r.purpose.clone());
    d.legal_basis = body.legal_basis.clone();
    d.fields = body.fields.iter().map(ManifestField::field_ref).collect();
    d.record_count = Some(record_count);
    d.payload_digest = Some(r.manifest.signed.digest());
    d.detail = Some(if r.sender == from {
        format!(
            "{} chunks verified against the manifest signed by {}",
            r.plan.len(),
            r.sender
        )
    } else {
        format!(
            "{} chunks relayed by {from}, verified against the manifest signed by the original sender {}",
            r.plan.len(),
            r.sender
        )
    });
    let seq = node.log(d)?.seq;
    r.receive_seq = Some(seq);
    node.store.put(CF_IN_RELEASES, &r.release_id, r)?;
    Ok(seq)
}

fn sign_receipt(
    node: &Node,
    r: &InRelease,
    from: &str,
    content_digest: Digest,
    record_count: u64,
) -> Result<Receipt> {
    let body = ReceiptBody {
        release_id: r.release_id.clone(),
        receiver: node.config.dept.clone(),
        from: from.to_string(),
        content_digest,
        record_count,
        time_ms: now_ms(),
    };
    Ok(Receipt {
        signed: Signed::sign(SignatureDomain::Receipt, &node.keys()?.identity, &body)?,
        certificate: node.cert.to_vec(),
    })
}

fn log_send(
    node: &Node,
    body: &ManifestBody,
    rb: &ReceiptBody,
    receipt: &Receipt,
    operator: &str,
    relayed_from: Option<&str>,
) -> Result<Delivery> {
    let mut d = node.draft(EventKind::Send, operator);
    d.subject = Subject {
        dataset: Some(body.dataset.clone()),
        release: Some(release_hex(&body.release_id)),
        digest: Some(rb.content_digest),
    };
    d.counterparty = Some(rb.receiver.clone());
    d.agreement = Some(body.agreement.clone()).filter(|a| !a.is_empty());
    d.purpose = Some(body.purpose.clone());
    d.legal_basis = body.legal_basis.clone();
    d.fields = body.fields.iter().map(ManifestField::field_ref).collect();
    d.record_count = Some(rb.record_count);
    d.payload_digest = Some(receipt.signed.digest());
    d.detail = Some(match relayed_from {
        None => format!("receipt signed by {} verified", rb.receiver),
        Some(via) => format!(
            "forwarded release of {} (received from {via}); receipt signed by {} verified",
            body.sender, rb.receiver
        ),
    });
    let seq = node.log(d)?.seq;
    let delivery = Delivery {
        to: rb.receiver.clone(),
        content_digest: rb.content_digest,
        records: rb.record_count,
        receipt_digest: receipt.signed.digest(),
        time_ms: now_ms(),
        audit_seq: seq,
    };
    if relayed_from.is_none()
        && let Some(mut out) = node
            .store
            .get::<release::OutRelease>(CF_OUT_RELEASES, &body.release_id)?
    {
        out.deliveries.push(delivery.clone());
        node.store.put(CF_OUT_RELEASES, &body.release_id, &out)?;
    }
    Ok(delivery)
}

struct FetchCheck<'a> {
    node: &'a Node,
    sender: String,
}

impl ManifestCheck for FetchCheck<'_> {
    fn check(&self, m: &Manifest) -> std::result::Result<ManifestBody, String> {
        let body = release::verify_manifest(self.node, m).map_err(|e| e.to_string())?;
        if body.sender != self.sender {
            return Err(format!(
                "manifest is signed by {}, but we asked {}",
                body.sender, self.sender
            ));
        }
        if body.recipient != self.node.config.dept {
            return Err(format!(
                "manifest is for {}, not for this department",
                body.recipient
            ));
        }
        Ok(body)
    }
}

struct OfferCheck<'a> {
    node: &'a Node,
    release_id: Vec<u8>,
}

impl ManifestCheck for OfferCheck<'_> {
    fn check(&self, m: &Manifest) -> std::result::Result<ManifestBody, String> {
        let body = release::verify_manifest(self.node, m).map_err(|e| e.to_string())?;
        if body.release_id != self.release_id {
            return Err("manifest changed during the offer".into());
        }
        Ok(body)
    }
}

struct ReceiptVerify<'a> {
    node: &'a Node,
}

impl ReceiptCheck for ReceiptVerify<'_> {
    fn check(&self, r: &Receipt) -> std::result::Result<(ReceiptBody, String), String> {
        let info = self
            .node
            .check_cert(&r.certificate)
            .map_err(|e| e.to_string())?;
        let body: ReceiptBody = r
            .signed
            .verify(SignatureDomain::Receipt, &info.identity)
            .map_err(|e| e.to_string())?;
        if body.from != self.node.config.dept {
            return Err(format!(
                "receipt acknowledges a transfer from {}, not from us",
                body.from
            ));
        }
        Ok((body, info.dept))
    }
}

fn proof_for(
    node: &Node,
    request: Option<(u64, u64)>,
    sent: &SignedCheckpoint,
) -> Result<Option<Vec<serde_bytes::ByteBuf>>> {
    let Some((from, to)) = request else {
        return Ok(None);
    };
    let sent_size = sent.peek()?.size;
    if to != sent_size && from != sent_size {
        return Ok(None);
    }
    let (a, b) = if from <= to { (from, to) } else { (to, from) };
    match node.audit.consistency_proof(a, b) {
        Ok(p) => Ok(Some(
            p.into_iter()
                .map(|h| serde_bytes::ByteBuf::from(h.to_vec()))
                .collect(),
        )),
        Err(_) => Ok(None),
    }
}

fn witness_peer(
    node: &Node,
    witnessing: witness::Witnessing,
    pc: PeerCheckpoint,
    need: Option<(u64, u64)>,
    proof: Option<&[serde_bytes::ByteBuf]>,
) -> Result<SignedCosignature> {
    let hashes: Option<Vec<Hash>> = proof.map(|p| {
        p.iter()
            .filter_map(|h| <Hash>::try_from(h.as_slice()).ok())
            .collect()
    });
    if need.is_some() && hashes.is_none() {
        // A peer that will not prove consistency is not cosigned.
        let held = node.audit.last_witnessed(&pc.content.origin)?;
        if held.is_some() {
            return Err(NodeError::Peer {
                peer: pc.dept.clone(),
                message: "did not send the consistency proof it was asked for".into(),
            });
        }
    }
    Ok(witness::complete(
        &node.audit,
        witnessing,
        pc,
        hashes.as_deref(),
    )?)
}

fn store_cosignature(
    node: &Node,
    dept: &str,
    identity: &pdx_crypto::VerifyingKey,
    sent: &SignedCheckpoint,
    c: &SignedCosignature,
) -> Result<()> {
    let endorsed = c.witness_endorsement.verify(identity)?;
    if !endorsed.log_id.starts_with(&format!("{dept}:")) {
        return Err(peer_err(dept)(
            "cosigned with a key of another department".into(),
        ));
    }
    let cos: Cosignature = c.verify(&endorsed.audit_key)?;
    let mine = sent.peek()?;
    if cos.log_id != mine.origin
        || cos.size != mine.size
        || cos.root != mine.root
        || cos.checkpoint_digest != sent.digest()
    {
        return Err(peer_err(dept)(
            "cosignature does not match the checkpoint we sent".into(),
        ));
    }
    node.audit
        .store_received_cosignature(cos.size, c, &cos.witness)?;
    Ok(())
}

fn catalog_for(node: &Node, peer: &str) -> Result<Vec<CatalogEntry>> {
    let now = now_ms();
    let mut out = Vec::new();
    for g in grants::list(node)? {
        if g.to != peer || g.revoked_ms.is_some() || g.expires_ms.is_some_and(|e| e <= now) {
            continue;
        }
        let Ok(meta) = crate::dataset::meta(node, &g.dataset) else {
            continue;
        };
        let schema = meta.schema()?;
        out.push(CatalogEntry {
            dataset: g.dataset.clone(),
            title: meta.title.clone(),
            profile: g.profile.clone(),
            purpose: g.purpose.clone(),
            agreement: g.agreement.clone(),
            expires_ms: g.expires_ms,
            records: meta.rows,
            grade: format!("{:?}", schema.dataset.grade).to_lowercase(),
            sharing: format!("{:?}", schema.dataset.sharing).to_lowercase(),
        });
    }
    Ok(out)
}

/// Forwards progress from a blocking task to the async side.
struct ChannelProgress {
    tx: tokio::sync::mpsc::Sender<(String, u64, u64)>,
    stage: Mutex<(String, u64)>,
}

impl ChannelProgress {
    fn new(tx: tokio::sync::mpsc::Sender<(String, u64, u64)>) -> Self {
        ChannelProgress {
            tx,
            stage: Mutex::new((String::new(), 0)),
        }
    }
}

impl Progress for ChannelProgress {
    fn stage(&self, label: &str, total: Option<u64>, _unit: Unit) {
        if let Ok(mut s) = self.stage.lock() {
            *s = (label.to_string(), total.unwrap_or(0));
        }
        let _ = self.tx.try_send((label.to_string(), 0, total.unwrap_or(0)));
    }
    fn set(&self, done: u64) {
        if let Ok(s) = self.stage.lock() {
            let _ = self.tx.try_send((s.0.clone(), done, s.1));
        }
    }
    fn done(&self) {}
}
