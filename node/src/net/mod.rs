//! The QUIC driver: endpoints, connections and streams, and the loops that
//! drive the sans-IO machines of [`crate::proto`] over them. It only moves
//! bytes: everything that reads or writes the node's store or audit log goes
//! through the [`Host`] and [`Handler`] traits (implemented by
//! [`crate::service`]), and every such call runs on tokio's blocking pool,
//! never on an async worker.
//!
//! One connection per peer conversation; stream 0 carries the handshake
//! ([`crate::proto::handshake`]), every request gets its own bidirectional
//! stream. Limits: [`MAX_STREAMS`] concurrent streams per connection, a read
//! timeout per frame, per-type frame caps in the decoder, one deadline for the
//! whole handshake.

pub mod budget;
mod client;
mod framed;
mod handshake;
pub mod limits;
mod registry;
mod server;
pub mod transfer;

pub use client::PeerConn;
pub use framed::{Framed, RecvError};
pub use registry::Closed;

use crate::error::{NodeError, Result};
use crate::pki::CertInfo;
use crate::proto::handshake::{LocalHello, PeerHello, ProofRequest};
use crate::proto::msg::{ErrorCode, Message};
use crate::proto::transfer::Failure;
use pdx_audit::checkpoint::{SignedCheckpoint, SignedCosignature};
use pdx_crypto::VerifyingKey;
use registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Concurrent bidirectional streams a peer may open.
pub const MAX_STREAMS: u32 = 16;
/// Software string sent in Hello.
pub const SOFTWARE: &str = concat!("pdx/", env!("CARGO_PKG_VERSION"));

/// Connection close code: done (normal close).
pub const CLOSE_DONE: u32 = 0;
/// Connection close code: the certificate names another department than dialled.
pub const CLOSE_WRONG_DEPT: u32 = 1;
/// Connection close code: the certificate is not (or no longer) accepted.
pub const CLOSE_REVOKED: u32 = 2;
/// Connection close code: the handshake on stream 0 failed.
pub const CLOSE_HANDSHAKE_FAILED: u32 = 3;
/// Connection close code: the department already holds its maximum of
/// concurrent connections ([`limits::MAX_CONNECTIONS_PER_PEER`]).
pub const CLOSE_TOO_MANY: u32 = 4;

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
    // What QUIC buffers per connection before the node reads it is bounded
    // by these windows (frames being assembled by `budget`).
    t.stream_receive_window(quinn::VarInt::from_u32(8 << 20));
    t.receive_window(quinn::VarInt::from_u32(16 << 20));
    t.send_window(16 << 20);
    t
}

/// A peer connection's identity, from its certificate.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Department (SAN URI).
    pub dept: String,
    /// Its certified identity key.
    pub identity: VerifyingKey,
    /// The one audit log its certificate binds (`dept:key id`).
    pub log_id: Option<String>,
    /// Where the connection comes from.
    pub remote: SocketAddr,
}

/// At which step a connection or request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The TLS handshake failed (no certificate, another CA, revoked, no
    /// department): the peer is known only by its address.
    Tls,
    /// The certificate was not accepted after TLS.
    Certificate,
    /// The pdx handshake on stream 0 failed.
    Handshake,
    /// A request stream carried something malformed or unexpected.
    Request,
    /// A live connection was closed after a CRL update.
    Revoked,
}

/// A refusal for the host to audit.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// Where it happened.
    pub stage: Stage,
    /// The peer's department, when known.
    pub peer: Option<String>,
    /// Its address, when known.
    pub remote: Option<SocketAddr>,
    /// The code answered, if any.
    pub code: Option<ErrorCode>,
    /// Why.
    pub reason: String,
}

/// What the driver needs from the node for connections and handshakes.
/// Every method may block (store reads and writes, fsyncs, signatures): the
/// driver calls them on the blocking pool only.
pub trait Host: Send + Sync + 'static {
    /// State kept between checking a peer's hello and witnessing it.
    type Witnessing: Send + 'static;

    /// What this node presents: its latest checkpoint, endorsement, key documents.
    fn local_hello(&self) -> Result<LocalHello>;
    /// Checks a certificate against the CA and current CRL.
    fn check_cert(&self, der: &[u8]) -> Result<CertInfo>;
    /// Where `dept` listens.
    fn peer_address(&self, dept: &str) -> Result<SocketAddr>;
    /// Accepts the peer's key documents, verifies its checkpoint under its
    /// identity key and begins witnessing: the consistency proof it needs.
    fn check_peer(
        &self,
        peer: &Peer,
        hello: PeerHello,
    ) -> std::result::Result<(ProofRequest, Self::Witnessing), Failure>;
    /// A consistency proof of this node's log between the sizes, if one of
    /// them is the size of `sent`.
    fn prove(
        &self,
        from: u64,
        to: u64,
        sent: &SignedCheckpoint,
    ) -> Option<Vec<serde_bytes::ByteBuf>>;
    /// Completes witnessing with the peer's proof: our cosignature, or why
    /// not (`Ok(Err)`: a refusal to tell the peer; `Err`: a local failure).
    fn witness(
        &self,
        peer: &Peer,
        w: Self::Witnessing,
        proof: Option<Vec<serde_bytes::ByteBuf>>,
    ) -> Result<std::result::Result<SignedCosignature, String>>;
    /// Verifies and stores the peer's cosignature of `sent` (or notes its refusal).
    fn store_cosignature(
        &self,
        peer: &Peer,
        sent: &SignedCheckpoint,
        cosignature: std::result::Result<SignedCosignature, String>,
    ) -> Result<()>;
    /// What a recovering peer asks for: the latest checkpoint of its log
    /// this node witnessed (audited).
    fn recovery_held(
        &self,
        peer: &Peer,
    ) -> Result<Option<pdx_audit::checkpoint::WitnessedCheckpoint>>;
    /// The hello of a node restored from a backup: its latest signed
    /// checkpoint (no new one), `recovering` set.
    fn recovery_hello(&self) -> Result<LocalHello>;
    /// Records the outcome of talking to `dept`.
    fn peer_contact(&self, dept: &str, error: Option<String>);
    /// Audits a refusal.
    fn refused(&self, refusal: Refusal);
}

/// Serves requests: one call per request stream, after the handshake.
pub trait Handler: Host {
    /// Handles the request `first` on `stream` from `peer` (answering,
    /// refusing and auditing included).
    fn request(
        self: Arc<Self>,
        peer: Peer,
        first: Message,
        stream: Framed,
    ) -> impl Future<Output = ()> + Send;
}

/// Runs `f(host)` on the blocking pool.
pub(crate) async fn on_pool<H: ?Sized + Send + Sync + 'static, T: Send + 'static>(
    host: &Arc<H>,
    f: impl FnOnce(&H) -> T + Send + 'static,
) -> Result<T> {
    let h = host.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| f(&h)))
        .await
        .map_err(|e| NodeError::Invalid(format!("blocking task failed: {e}")))
}

/// Timeouts of the driver.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Per frame on request streams.
    pub read: Duration,
    /// For the whole handshake, from the QUIC connection on.
    pub handshake: Duration,
}

/// A node's network side: one UDP endpoint.
pub struct Net {
    endpoint: quinn::Endpoint,
    registry: Registry,
    frames: Arc<budget::Budget>,
    limits: limits::Limits,
    dept: String,
    network: String,
    timeouts: Timeouts,
    pool: client::Pool,
    /// Client configurations (plain, pooled), replaced by
    /// [`Net::replace_tls`] (a renewed certificate).
    clients: std::sync::RwLock<(quinn::ClientConfig, quinn::ClientConfig)>,
    /// Whether the endpoint serves (and has not stopped accepting).
    /// (Held while the server configuration changes.)
    accepting: std::sync::Mutex<bool>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").field("dept", &self.dept).finish()
    }
}

/// TLS material for an endpoint.
#[derive(Debug)]
pub struct TlsConfigs {
    /// Server side (None: dial only).
    pub server: Option<rustls::ServerConfig>,
    /// Client side.
    pub client: rustls::ClientConfig,
}

fn client_config(tls: rustls::ClientConfig) -> Result<(quinn::ClientConfig, quinn::ClientConfig)> {
    let quic = Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| NodeError::Tls(e.to_string()))?,
    );
    let mut cfg = quinn::ClientConfig::new(quic.clone());
    cfg.transport_config(Arc::new(transport_config()));
    // Pooled connections carry short calls, never long silent work: a peer
    // that stops answering (crashed, restarted) is given up after 5 s, so a
    // call on a stale connection is retried on a fresh one within its
    // deadline (QUIC uses the smaller of both ends' idle timeouts).
    let mut t = transport_config();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(5)).ok());
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    let mut pooled = quinn::ClientConfig::new(quic);
    pooled.transport_config(Arc::new(t));
    Ok((cfg, pooled))
}

fn server_config(tls: rustls::ServerConfig) -> Result<quinn::ServerConfig> {
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(Arc::new(transport_config()));
    Ok(server)
}

impl Net {
    /// An endpoint for department `dept` of `network`: listening on `listen`
    /// when `tls.server` is given, else dial-only on an ephemeral port.
    pub fn new(
        dept: &str,
        network: &str,
        listen: SocketAddr,
        tls: TlsConfigs,
        timeouts: Timeouts,
    ) -> Result<Arc<Net>> {
        let accepting = tls.server.is_some();
        let mut endpoint = match tls.server {
            Some(server_tls) => quinn::Endpoint::server(server_config(server_tls)?, listen)
                .map_err(|e| NodeError::Network(format!("cannot listen on {listen}: {e}")))?,
            None => {
                let bind: SocketAddr = if listen.is_ipv6() {
                    SocketAddr::from(([0u16; 8], 0))
                } else {
                    SocketAddr::from(([0u8; 4], 0))
                };
                quinn::Endpoint::client(bind)
                    .map_err(|e| NodeError::Network(format!("cannot open a UDP socket: {e}")))?
            }
        };
        let clients = client_config(tls.client)?;
        endpoint.set_default_client_config(clients.0.clone());
        Ok(Arc::new(Net {
            endpoint,
            registry: Registry::default(),
            frames: budget::Budget::new(budget::NODE_FRAME_BUDGET),
            limits: limits::Limits::default(),
            dept: dept.to_string(),
            network: network.to_string(),
            timeouts,
            pool: client::Pool::default(),
            clients: std::sync::RwLock::new(clients),
            accepting: std::sync::Mutex::new(accepting),
        }))
    }

    /// New TLS material (a renewed certificate) for every connection made
    /// or accepted from now on; live connections keep theirs. A dial-only
    /// endpoint, or one that stopped accepting, does not start serving.
    pub fn replace_tls(&self, tls: TlsConfigs) -> Result<()> {
        let clients = client_config(tls.client)?;
        let server = tls.server.map(server_config).transpose()?;
        let accepting = self
            .accepting
            .lock()
            .map_err(|_| NodeError::Invalid("TLS lock poisoned".into()))?;
        if let Some(server) = server
            && *accepting
        {
            self.endpoint.set_server_config(Some(server));
        }
        drop(accepting);
        *self
            .clients
            .write()
            .map_err(|_| NodeError::Invalid("TLS lock poisoned".into()))? = clients;
        Ok(())
    }

    /// The client configuration of new connections (`pooled`: of pooled
    /// ones, with a short idle timeout).
    fn client(&self, pooled: bool) -> Result<quinn::ClientConfig> {
        let c = self
            .clients
            .read()
            .map_err(|_| NodeError::Invalid("TLS lock poisoned".into()))?;
        Ok(if pooled { c.1.clone() } else { c.0.clone() })
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|e| NodeError::Network(e.to_string()))
    }

    /// Bytes of incomplete frames buffered now, over all connections.
    pub fn frame_bytes(&self) -> usize {
        self.frames.used()
    }

    /// A lease on a new connection's frame budget and the node's.
    fn lease_pools(&self) -> Vec<Arc<budget::Budget>> {
        vec![
            budget::Budget::new(budget::CONNECTION_FRAME_BUDGET),
            self.frames.clone(),
        ]
    }

    /// The per-frame read timeout of request streams.
    pub fn read_timeout(&self) -> Duration {
        self.timeouts.read
    }

    /// Refuses new connections; live ones keep their streams (graceful
    /// shutdown lets them finish).
    pub fn stop_accepting(&self) {
        let mut accepting = self.accepting.lock().unwrap_or_else(|p| p.into_inner());
        *accepting = false;
        self.endpoint.set_server_config(None);
    }

    /// Closes the endpoint (in-flight streams get an error).
    pub async fn shutdown(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(CLOSE_DONE), b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
    }

    /// Closes live connections whose certificate `check` now refuses (after a
    /// CRL update) and returns them, for the caller to audit.
    pub fn recheck_connections(
        &self,
        check: impl Fn(&rustls::pki_types::CertificateDer<'static>) -> std::result::Result<(), String>,
    ) -> Vec<Closed> {
        self.registry.recheck(check)
    }
}
