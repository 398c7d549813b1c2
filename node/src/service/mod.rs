//! The service layer: what a node does, each module owning its column
//! families (`store` names the families; `docs/design.md` the bytes).
//!
//! - [`datasets`]: import and rows at rest; [`deid`]: the release engine run
//!   over a dataset's blocks on all cores; [`release`]: producing, storing
//!   and reading releases; [`grants`]; [`preview`];
//! - [`directory`]: peers and key documents; [`witnessing`]: the node's side
//!   of the handshake; [`transfers`]: fetch, forward and serving them;
//! - [`documents`] and [`submissions`]: certified documents pushed with
//!   `Submit`; [`aggregate`]: homomorphic aggregates; [`settle`]: settlement
//!   confirmations and clearing;
//! - [`audit`]: the audit commands and node status.
//!
//! Every function here is synchronous and may block. [`Services`] is what the
//! network driver talks to ([`Host`], [`Handler`]); its async glue runs every
//! storage call through [`blocking`], so no tokio worker ever waits on
//! RocksDB, an fsync or heavy crypto.

pub mod aggregate;
pub mod audit;
pub mod backup;
pub mod calls;
pub mod datasets;
pub mod deid;
#[cfg(test)]
mod deid_tests;
pub mod directory;
pub mod doctor;
pub mod documents;
pub mod grants;
pub mod ops;
pub mod outbox;
pub mod preview;
pub mod recovery;
pub mod refusals;
pub mod release;
pub mod settle;
#[cfg(test)]
mod settle_tests;
pub mod submissions;
#[cfg(test)]
mod testing;
pub mod transfers;
pub mod witnessing;

use crate::error::{NodeError, Result};
use crate::net::{Framed, Handler, Host, Net, Peer, Refusal, Stage};
use crate::node::Node;
use crate::pki::CertInfo;
use crate::proto::handshake::{LocalHello, PeerHello, ProofRequest};
use crate::proto::msg::{
    CatalogEntry, CatalogResponse, ErrorCode, KeyDirResponse, Message, ReleaseRequest,
};
use crate::proto::transfer::Failure;
use pdx_audit::checkpoint::{SignedCheckpoint, SignedCosignature};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// Runs blocking work (store access, fsyncs, crypto) on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    // The operation's span (its request id) follows it onto the pool.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| NodeError::Invalid(format!("task failed: {e}")))?
}

/// How much lower bulk work runs than requests (nice increment, Linux).
pub const BULK_NICE: i32 = 10;

/// Runs long CPU-bound work for one peer (producing a release) on a thread
/// of its own at [`BULK_NICE`] lower priority, so the node's requests
/// (handshakes, catalogs, calls) are scheduled before it when cores are
/// short. A fresh thread because niceness cannot be raised back without
/// privilege, and the blocking pool's threads are reused.
pub async fn bulk<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let span = tracing::Span::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(span.in_scope(f));
        })
        .map_err(|e| NodeError::Invalid(format!("cannot start a {name} thread: {e}")))?;
    rx.await
        .map_err(|_| NodeError::Invalid(format!("the {name} thread failed")))?
}

/// Lowers the calling thread's priority by [`BULK_NICE`].
fn lower_priority() {
    let tid = rustix::thread::gettid();
    let lowered = rustix::process::getpriority_process(Some(tid)).and_then(|now| {
        rustix::process::setpriority_process(Some(tid), now.saturating_add(BULK_NICE))
    });
    if let Err(e) = lowered {
        // Still correct, only less polite to requests.
        tracing::debug!("bulk work at normal priority: {e}");
    }
}

/// The worker pool that bulk work (the release engine's blocks: opening,
/// counting, treating, sealing) spreads over: one thread per core (or
/// `RAYON_NUM_THREADS`), each at [`BULK_NICE`] like [`bulk`]'s threads.
/// Callers block on it from a bulk or blocking thread, never a tokio worker.
pub fn bulk_pool() -> Result<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<std::result::Result<rayon::ThreadPool, String>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("pdx-bulk-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| NodeError::Invalid(format!("cannot start the bulk worker pool: {e}")))
}

/// Runs `ask` for every department at once (each bounded by its own
/// timeout inside `ask`, so one silent peer costs its timeout once, not once
/// per peer before it) and returns the answers in the order given.
pub async fn ask_each<T, Fut>(depts: Vec<String>, ask: impl Fn(String) -> Fut) -> Result<Vec<T>>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let span = tracing::Span::current();
    let mut set = tokio::task::JoinSet::new();
    let mut out: Vec<Option<T>> = depts.iter().map(|_| None).collect();
    for (i, dept) in depts.into_iter().enumerate() {
        let asked = ask(dept);
        set.spawn(tracing::Instrument::instrument(
            async move { (i, asked.await) },
            span.clone(),
        ));
    }
    while let Some(done) = set.join_next().await {
        let (i, answer) = done.map_err(|e| NodeError::Invalid(format!("task failed: {e}")))?;
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(answer);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Where a signed document went: written to a file, or sent and accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    /// File written (`--out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    /// Department it was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<String>,
    /// Digest the recipient acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<String>,
    /// The recipient's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// This sends the document an earlier attempt signed and audited but did
    /// not deliver (the outbox), not a new one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resent: bool,
}

/// A node with its network endpoint: what commands and peers are served by.
pub struct Services {
    /// The node.
    pub node: Arc<Node>,
    /// Its endpoint.
    pub net: Arc<Net>,
    refusals: refusals::Refusals,
    calls: CallState,
    /// When each recovering peer's question was last audited.
    recovery_answers: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// What online calls share across requests: limits and the backend client.
#[derive(Debug, Default)]
struct CallState {
    limits: Arc<calls::limits::CallLimits>,
    backend: calls::backend::Backend,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("dept", &self.node.config.dept)
            .finish()
    }
}

/// Opens a node home and makes sure its own key documents are published.
pub fn open_node(
    home: &crate::config::Home,
    passphrase: Option<crate::keys::Passphrase>,
) -> Result<Node> {
    let node = Node::open(home, passphrase)?;
    directory::publish_own_key_documents(&node)?;
    Ok(node)
}

/// TLS configurations from the node's current certificate and identity key.
fn tls_configs(node: &Node, listen: bool) -> Result<crate::net::TlsConfigs> {
    let keys = node.keys()?;
    let certs = vec![keys.cert.clone()];
    Ok(crate::net::TlsConfigs {
        server: if listen {
            Some(crate::pki::tls::server_config(
                &node.trust,
                certs.clone(),
                keys.identity.pkcs8_der(),
            )?)
        } else {
            None
        },
        client: crate::pki::tls::client_config(&node.trust, certs, keys.identity.pkcs8_der())?,
    })
}

impl Services {
    /// `pdx cert install`: the new certificate (and key) replace the
    /// current ones in the node and its log, key documents are re-signed
    /// under it, and every handshake from now on presents it.
    pub async fn install_cert(
        self: &Arc<Self>,
        cert_dir: std::path::PathBuf,
        operator: String,
    ) -> Result<crate::node::CertInstalled> {
        let node = self.node.clone();
        let installed = blocking(move || {
            let installed = node.install_cert(&cert_dir, &operator)?;
            directory::publish_own_key_documents(&node)?;
            Ok(installed)
        })
        .await?;
        // A server configuration too: `net` takes it only while it serves.
        let node = self.node.clone();
        let tls = blocking(move || tls_configs(&node, true)).await?;
        self.net.replace_tls(tls)?;
        Ok(installed)
    }

    /// Services over `node`: listening on its configured address (`serve`),
    /// or dial-only (a command run without a running node).
    pub fn new(node: Arc<Node>, listen: bool) -> Result<Arc<Services>> {
        let addr: SocketAddr = node.config.listen.parse().map_err(|e| {
            NodeError::Invalid(format!("listen address {}: {e}", node.config.listen))
        })?;
        let tls = tls_configs(&node, listen)?;
        let read = std::time::Duration::from_secs(u64::from(
            node.config.transfer.read_timeout_secs.max(1),
        ));
        let timeouts = crate::net::Timeouts {
            read,
            handshake: read.min(std::time::Duration::from_secs(
                crate::config::HANDSHAKE_TIMEOUT_SECS,
            )),
        };
        let net = Net::new(&node.config.dept, &node.config.network, addr, tls, timeouts)?;
        Ok(Arc::new(Services {
            node,
            net,
            refusals: refusals::Refusals::default(),
            calls: CallState::default(),
            recovery_answers: Default::default(),
        }))
    }

    /// Re-checks live connections after a CRL update; closes and audits
    /// those whose certificate is no longer accepted.
    pub async fn recheck_connections(self: &Arc<Self>) -> Result<usize> {
        let node = self.node.clone();
        let closed = self.net.recheck_connections(move |cert| {
            node.check_cert(cert).map(|_| ()).map_err(|e| e.to_string())
        });
        let n = closed.len();
        let svc = self.clone();
        blocking(move || {
            for c in closed {
                svc.audit_refusal(Refusal {
                    stage: Stage::Revoked,
                    peer: Some(c.dept),
                    remote: None,
                    code: None,
                    reason: format!("live connection closed after CRL update: {}", c.reason),
                })?;
            }
            Ok(())
        })
        .await?;
        Ok(n)
    }

    fn audit_refusal(&self, r: Refusal) -> Result<()> {
        let from = r.remote.map(|a| format!(" from {a}")).unwrap_or_default();
        let detail = match (r.stage, r.code) {
            (Stage::Tls | Stage::Certificate, _) => {
                format!("connection{from} refused: {}", r.reason)
            }
            (_, Some(code)) => format!("{code:?}: {}", r.reason),
            (_, None) => r.reason.clone(),
        };
        let source = match (&r.peer, r.remote) {
            (Some(p), _) => p.clone(),
            (None, Some(a)) => format!("address {}", a.ip()),
            (None, None) => "unknown".into(),
        };
        self.refusals.record(
            &self.node,
            refusals::Refused {
                source,
                peer: r.peer,
                kind: format!("{:?}/{:?}", r.stage, r.code),
                detail,
                request: None,
                // Only a split-view attempt (a second audit log) is answered
                // `untrusted`: evidence, not just a refusal.
                alarm: r.code == Some(ErrorCode::Untrusted),
            },
        )
    }

    /// Writes the summaries of aggregated refusals whose window has closed
    /// (`force`: the current window too, at shutdown). Blocks.
    pub fn flush_refusals(&self, force: bool) -> Result<()> {
        self.refusals.flush(&self.node, force)
    }

    /// Refuses a request on its stream: audited, answered with `code`.
    pub(crate) async fn refuse_request(
        self: &Arc<Self>,
        s: &mut Framed,
        peer: &Peer,
        req: Option<&ReleaseRequest>,
        code: ErrorCode,
        why: &str,
    ) -> Result<()> {
        let svc = self.clone();
        let refused = refusals::Refused {
            source: peer.dept.clone(),
            peer: Some(peer.dept.clone()),
            kind: format!("Request/{code:?}"),
            detail: format!("{code:?}: {why}"),
            request: req.map(|r| (r.dataset.clone(), r.agreement.clone(), r.purpose.clone())),
            alarm: false,
        };
        blocking(move || svc.refusals.record(&svc.node, refused)).await?;
        s.refuse(code, why).await;
        Err(NodeError::Refused(format!("{}: {why}", peer.dept)))
    }

    /// Refuses a call on its stream: audited (aggregated), answered with `code`.
    pub(crate) async fn refuse_call(
        self: &Arc<Self>,
        s: &mut Framed,
        peer: &Peer,
        code: ErrorCode,
        why: &str,
    ) -> Result<()> {
        let svc = self.clone();
        let refused = refusals::Refused {
            source: peer.dept.clone(),
            peer: Some(peer.dept.clone()),
            kind: format!("Call/{code:?}"),
            detail: format!("call refused, {code:?}: {why}"),
            request: None,
            alarm: false,
        };
        blocking(move || svc.refusals.record(&svc.node, refused)).await?;
        s.refuse(code, why).await;
        Ok(())
    }

    /// Admits a call from `peer` under its department's limits, or refuses
    /// it (`rate-limited`, audited) and returns `None`.
    pub(crate) async fn admit_call(
        self: &Arc<Self>,
        s: &mut Framed,
        peer: &Peer,
    ) -> Result<Option<calls::limits::Admitted>> {
        let l = &self.node.config.services;
        match self.calls.limits.admit(
            &peer.dept,
            l.calls_per_second,
            l.call_burst,
            l.max_calls_in_flight,
        ) {
            Ok(a) => Ok(Some(a)),
            Err(why) => {
                self.refuse_call(s, peer, ErrorCode::RateLimited, &why)
                    .await?;
                Ok(None)
            }
        }
    }

    async fn route(self: &Arc<Self>, peer: &Peer, first: Message, s: &mut Framed) -> Result<()> {
        match first {
            Message::Call(c) => {
                // Routing only: both paths verify the signature before acting.
                let provider = c
                    .request
                    .dangerous_decode_unverified::<crate::proto::call::CallRequestBody>(
                        "call request",
                    )
                    .map(|b| b.provider);
                match provider {
                    Ok(p) if p == self.node.config.dept => {
                        calls::provider::serve(self, peer, *c, s).await
                    }
                    Ok(_) => calls::relay::relay(self, peer, *c, s).await,
                    Err(e) => {
                        self.refuse_call(s, peer, ErrorCode::BadRequest, &e.to_string())
                            .await
                    }
                }
            }
            Message::CatalogRequest(_) => {
                let node = self.node.clone();
                let p = peer.dept.clone();
                let entries = blocking(move || catalog_for(&node, &p)).await?;
                s.send(&Message::CatalogResponse(CatalogResponse { entries }))
                    .await?;
                s.finish().await;
                Ok(())
            }
            Message::KeyDirRequest(r) => {
                let node = self.node.clone();
                let documents =
                    blocking(move || directory::all_key_documents(&node, &r.depts)).await?;
                s.send(&Message::KeyDirResponse(KeyDirResponse { documents }))
                    .await?;
                s.finish().await;
                Ok(())
            }
            Message::ReleaseRequest(r) => self.serve_release(s, peer, r, None).await,
            Message::Resume(r) => self.serve_resume(s, peer, r).await,
            Message::Offer(o) => self.receive_offer(s, peer, *o).await,
            Message::Submit(sub) => {
                let node = self.node.clone();
                let p = peer.dept.clone();
                let result = tokio::task::spawn_blocking(move || {
                    submissions::accept(&node, &p, &sub.kind, &sub.document)
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
                        self.refuse_request(s, peer, None, ErrorCode::BadRequest, &e.to_string())
                            .await
                    }
                }
            }
            other => {
                let why = format!("unexpected {:?} to open a request", other.msg_type());
                self.refuse_request(s, peer, None, ErrorCode::BadRequest, &why)
                    .await
            }
        }
    }
}

/// The datasets and profiles `peer` is granted, now.
pub fn catalog_for(node: &Node, peer: &str) -> Result<Vec<CatalogEntry>> {
    let now = pdx_audit::store::now_ms();
    let mut out = Vec::new();
    for g in grants::list(node)? {
        if g.to != peer || g.revoked_ms.is_some() || g.expires_ms.is_some_and(|e| e <= now) {
            continue;
        }
        let Ok(meta) = datasets::meta(node, &g.dataset) else {
            continue;
        };
        let schema = meta.schema(node.suite)?;
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

impl Host for Services {
    type Witnessing = witnessing::Pending;

    fn local_hello(&self) -> Result<LocalHello> {
        witnessing::local_hello(&self.node)
    }

    fn check_cert(&self, der: &[u8]) -> Result<CertInfo> {
        self.node.check_cert(der)
    }

    fn peer_address(&self, dept: &str) -> Result<SocketAddr> {
        let peer = directory::peer(&self.node, dept)?;
        peer.addr
            .parse()
            .map_err(|e| NodeError::Invalid(format!("peer {dept} address {}: {e}", peer.addr)))
    }

    fn check_peer(
        &self,
        peer: &Peer,
        hello: PeerHello,
    ) -> std::result::Result<(ProofRequest, witnessing::Pending), Failure> {
        witnessing::check_peer(&self.node, peer, hello)
    }

    fn prove(
        &self,
        from: u64,
        to: u64,
        sent: &SignedCheckpoint,
    ) -> Option<Vec<serde_bytes::ByteBuf>> {
        witnessing::prove(&self.node, from, to, sent)
    }

    fn witness(
        &self,
        _peer: &Peer,
        w: witnessing::Pending,
        proof: Option<Vec<serde_bytes::ByteBuf>>,
    ) -> Result<std::result::Result<SignedCosignature, String>> {
        witnessing::witness(&self.node, w, proof)
    }

    fn store_cosignature(
        &self,
        peer: &Peer,
        sent: &SignedCheckpoint,
        cosignature: std::result::Result<SignedCosignature, String>,
    ) -> Result<()> {
        witnessing::store_cosignature(&self.node, peer, sent, cosignature)
    }

    fn recovery_held(
        &self,
        peer: &Peer,
    ) -> Result<Option<pdx_audit::checkpoint::WitnessedCheckpoint>> {
        recovery::held_for(&self.node, peer, &self.recovery_answers)
    }

    fn recovery_hello(&self) -> Result<LocalHello> {
        witnessing::recovery_hello(&self.node)
    }

    fn peer_contact(&self, dept: &str, error: Option<String>) {
        if let Err(e) = directory::peer_contact(&self.node, dept, error) {
            tracing::warn!(peer = dept, "cannot record the contact: {e}");
        }
    }

    fn refused(&self, refusal: Refusal) {
        if let Err(e) = self.audit_refusal(refusal) {
            tracing::error!("cannot audit a refusal: {e}");
        }
    }
}

impl Handler for Services {
    async fn request(self: Arc<Self>, peer: Peer, first: Message, mut stream: Framed) {
        use tracing::Instrument;
        let metrics = self.node.metrics.clone();
        let kind = format!("{:?}", first.msg_type());
        metrics.request(&kind, &peer.dept);
        let _in_flight = match &first {
            Message::Call(_) => Some(metrics.in_flight("call")),
            Message::ReleaseRequest(_) | Message::Resume(_) | Message::Offer(_) => {
                Some(metrics.in_flight("transfer"))
            }
            _ => None,
        };
        let span = tracing::info_span!("request", id = %crate::logging::operation_id(), peer = %peer.dept, kind = %kind);
        async move {
            let started = std::time::Instant::now();
            tracing::debug!("request opened");
            match self.route(&peer, first, &mut stream).await {
                Ok(()) => tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "request served"
                ),
                Err(e) => tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "request failed: {e}"
                ),
            }
        }
        .instrument(span)
        .await
    }
}
