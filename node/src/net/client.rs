//! The dialling side: connect to a peer, check that its certificate names the
//! department dialled, run the handshake, open request streams.

use super::handshake;
use super::{
    CLOSE_DONE, CLOSE_HANDSHAKE_FAILED, CLOSE_WRONG_DEPT, Framed, Host, Net, Peer, on_pool,
};
use crate::error::{NodeError, Result};
use crate::proto::handshake::Handshake;
use crate::proto::msg::Message;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Instant;

/// A connection to a peer, after the handshake.
#[derive(Debug, Clone)]
pub struct PeerConn {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// Peer department (from its certificate).
    pub dept: String,
    timeout: std::time::Duration,
    pools: Vec<std::sync::Arc<super::budget::Budget>>,
}

impl PeerConn {
    /// Opens a request stream.
    pub async fn stream(&self) -> Result<Framed> {
        let (send, recv) = self.conn.open_bi().await.map_err(|e| NodeError::Peer {
            peer: self.dept.clone(),
            message: format!("cannot open a stream: {e}"),
        })?;
        Ok(Framed::new(
            send,
            recv,
            &self.dept,
            self.timeout,
            self.pools.clone(),
        ))
    }

    /// Closes the connection (normal end).
    pub fn close(&self) {
        self.conn
            .close(quinn::VarInt::from_u32(CLOSE_DONE), b"done");
    }
}

pub(super) fn peer_cert(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?
        .into_iter()
        .next()
}

/// Connections kept open for calls, one per peer: a call reuses the
/// connection (and its handshake) instead of paying for a new one.
/// What a connection attempt gave.
enum Connected {
    Conn(PeerConn),
    Recovered(Option<Box<pdx_audit::checkpoint::WitnessedCheckpoint>>),
}

#[derive(Default)]
pub(super) struct Pool {
    slots: std::sync::Mutex<
        std::collections::HashMap<String, Arc<tokio::sync::Mutex<Option<PeerConn>>>>,
    >,
}

impl Net {
    /// A live pooled connection to `dept`, connecting (once, however many
    /// callers wait) when there is none.
    pub async fn pooled<H: Host>(&self, host: &Arc<H>, dept: &str) -> Result<PeerConn> {
        let slot = {
            let mut slots = self
                .pool
                .slots
                .lock()
                .map_err(|_| NodeError::Invalid("connection pool poisoned".into()))?;
            slots.entry(dept.to_string()).or_default().clone()
        };
        let mut held = slot.lock().await;
        if let Some(pc) = held.as_ref()
            && pc.conn.close_reason().is_none()
        {
            return Ok(pc.clone());
        }
        let pc = self.connect_with(host, dept, true).await?;
        *held = Some(pc.clone());
        Ok(pc)
    }

    /// Closes the pooled connection to `dept` (it fell silent): the next
    /// call connects afresh.
    pub async fn evict(&self, dept: &str) {
        let slot = self
            .pool
            .slots
            .lock()
            .ok()
            .and_then(|slots| slots.get(dept).cloned());
        if let Some(slot) = slot
            && let Some(pc) = slot.lock().await.take()
        {
            pc.conn
                .close(quinn::VarInt::from_u32(CLOSE_DONE), b"silent");
        }
    }

    /// Connects to `dept` and performs the handshake (audit witnessing both
    /// ways); the outcome is recorded as the peer's last contact.
    pub async fn connect<H: Host>(&self, host: &Arc<H>, dept: &str) -> Result<PeerConn> {
        self.connect_with(host, dept, false).await
    }

    async fn connect_with<H: Host>(
        &self,
        host: &Arc<H>,
        dept: &str,
        pooled: bool,
    ) -> Result<PeerConn> {
        let result = self.connect_inner(host, dept, pooled, false).await;
        let note = result.as_ref().err().map(|e| e.to_string());
        let d = dept.to_string();
        on_pool(host, move |h| h.peer_contact(&d, note)).await?;
        match result? {
            Connected::Conn(c) => Ok(c),
            Connected::Recovered(_) => Err(NodeError::Invalid(
                "a recovery answer to a normal hello".into(),
            )),
        }
    }

    /// A restored node asks `dept` for the latest checkpoint of this node's
    /// log that `dept` witnessed; nothing is witnessed either way and the
    /// connection ends.
    pub async fn recover<H: Host>(
        &self,
        host: &Arc<H>,
        dept: &str,
    ) -> Result<Option<pdx_audit::checkpoint::WitnessedCheckpoint>> {
        match self.connect_inner(host, dept, false, true).await? {
            Connected::Recovered(held) => Ok(held.map(|h| *h)),
            Connected::Conn(c) => {
                c.close();
                Err(NodeError::Peer {
                    peer: dept.to_string(),
                    message: "answered a recovering hello with a full handshake".into(),
                })
            }
        }
    }

    async fn connect_inner<H: Host>(
        &self,
        host: &Arc<H>,
        dept: &str,
        pooled: bool,
        recovering: bool,
    ) -> Result<Connected> {
        let d = dept.to_string();
        let addr = on_pool(host, move |h| h.peer_address(&d)).await??;
        let name = crate::pki::dns_name(dept, &self.network);
        let connecting = self
            .endpoint
            .connect_with(self.client(pooled)?, addr, &name);
        let conn = connecting
            .map_err(|e| NodeError::Network(format!("cannot connect to {dept} at {addr}: {e}")))?
            .await
            .map_err(|e| {
                NodeError::Network(format!(
                    "connecting to {dept} at {addr}: {e}{}",
                    suite_hint(&e.to_string())
                ))
            })?;
        let cert = peer_cert(&conn).ok_or_else(|| NodeError::Peer {
            peer: dept.to_string(),
            message: "no certificate".into(),
        })?;
        let der = cert.to_vec();
        let info = on_pool(host, move |h| h.check_cert(&der)).await??;
        if info.dept != dept {
            conn.close(
                quinn::VarInt::from_u32(CLOSE_WRONG_DEPT),
                b"wrong department",
            );
            return Err(NodeError::Peer {
                peer: dept.to_string(),
                message: format!("answered with the certificate of {}", info.dept),
            });
        }
        let peer = Peer {
            dept: dept.to_string(),
            identity: info.identity,
            log_id: info.log_id,
            remote: addr,
        };
        let (send, recv) = conn.open_bi().await.map_err(|e| NodeError::Peer {
            peer: dept.to_string(),
            message: format!("the peer refused the connection: {e}"),
        })?;
        let pools = self.lease_pools();
        let mut s = Framed::new(send, recv, dept, self.timeouts.read, pools.clone());
        let local = if recovering {
            on_pool(host, |h| h.recovery_hello()).await??
        } else {
            on_pool(host, |h| h.local_hello()).await??
        };
        let hs = Handshake::client(Instant::now(), self.timeouts.handshake, local, dept);
        let outcome = match handshake::run(host, &mut s, hs, &peer).await {
            Ok(o) => o,
            Err(f) => {
                conn.close(
                    quinn::VarInt::from_u32(CLOSE_HANDSHAKE_FAILED),
                    b"handshake failed",
                );
                return Err(f.into_error(dept));
            }
        };
        if let handshake::Outcome::Recovered(held) = outcome {
            conn.close(quinn::VarInt::from_u32(CLOSE_DONE), b"recovered");
            return Ok(Connected::Recovered(held));
        }
        self.registry.register(dept, cert, &conn);
        Ok(Connected::Conn(PeerConn {
            conn,
            dept: dept.to_string(),
            timeout: self.timeouts.read,
            pools,
        }))
    }

    /// One request and its reply on a fresh connection (handshake included).
    pub async fn request<H: Host>(
        &self,
        host: &Arc<H>,
        dept: &str,
        request: Message,
    ) -> Result<Message> {
        let pc = self.connect(host, dept).await?;
        let mut s = pc.stream().await?;
        s.send(&request).await?;
        let reply = s.recv().await.map_err(|e| NodeError::Peer {
            peer: dept.to_string(),
            message: e.to_string(),
        });
        s.finish().await;
        pc.close();
        reply
    }
}

/// What a handshake without a common signature scheme means in pdx: the peer
/// belongs to a network of the other suite.
fn suite_hint(error: &str) -> &'static str {
    if error.contains("NoSignatureSchemesInCommon") {
        "; the peer signs with no scheme of this network's suite: intl networks sign with Ed25519, gm networks with SM2 (sm2sig_sm3), and a node of one suite never talks to a node of the other (check which network the peer belongs to)"
    } else {
        ""
    }
}
