//! The accepting side: TLS and certificate checks, the handshake on stream 0,
//! then one task per request stream, routed to the [`Handler`].

use super::client::peer_cert;
use super::handshake;
use super::{
    CLOSE_HANDSHAKE_FAILED, CLOSE_REVOKED, Framed, Handler, Net, Peer, Refusal, Stage, on_pool,
};
use crate::proto::handshake::Handshake;
use crate::proto::msg::ErrorCode;
use std::sync::Arc;
use std::time::Instant;

impl Net {
    /// Accepts connections until the endpoint closes.
    pub async fn serve<H: Handler>(self: Arc<Self>, handler: Arc<H>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let net = self.clone();
            let h = handler.clone();
            tokio::spawn(async move { net.handle_incoming(h, incoming).await });
        }
    }

    async fn handle_incoming<H: Handler>(self: Arc<Self>, host: Arc<H>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let Some(address_slot) = self.limits.addresses.take(remote.ip()) else {
            incoming.refuse();
            let r = Refusal {
                stage: Stage::Tls,
                peer: None,
                remote: Some(remote),
                code: None,
                reason: format!(
                    "more than {} concurrent connections from this address",
                    super::limits::MAX_CONNECTIONS_PER_ADDRESS
                ),
            };
            let _ = on_pool(&host, move |h| h.refused(r)).await;
            return;
        };
        let refuse = |stage, peer: Option<&str>, code, reason: String| Refusal {
            stage,
            peer: peer.map(str::to_string),
            remote: Some(remote),
            code,
            reason,
        };
        // An unauthenticated handshake gets the handshake deadline, not the
        // 20 s idle timeout.
        let accepted = tokio::time::timeout(self.timeouts.handshake, incoming).await;
        let accepted = accepted.unwrap_or_else(|_| Err(quinn::ConnectionError::TimedOut));
        // The address slot counts handshakes not yet authenticated only.
        drop(address_slot);
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                // A refused TLS handshake: no certificate, another CA, revoked, no department.
                let r = refuse(
                    Stage::Tls,
                    None,
                    None,
                    format!("TLS handshake refused: {e}"),
                );
                let _ = on_pool(&host, move |h| h.refused(r)).await;
                return;
            }
        };
        let Some(cert) = peer_cert(&conn) else {
            conn.close(quinn::VarInt::from_u32(CLOSE_REVOKED), b"no certificate");
            return;
        };
        let der = cert.to_vec();
        let info = match on_pool(&host, move |h| h.check_cert(&der)).await {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                conn.close(
                    quinn::VarInt::from_u32(CLOSE_REVOKED),
                    b"certificate not accepted",
                );
                let r = refuse(Stage::Certificate, None, None, e.to_string());
                let _ = on_pool(&host, move |h| h.refused(r)).await;
                return;
            }
            Err(_) => return,
        };
        let dept = info.dept.clone();
        let Some(_peer_slot) = self.limits.peers.take(dept.clone()) else {
            conn.close(
                quinn::VarInt::from_u32(super::CLOSE_TOO_MANY),
                b"too many connections",
            );
            let r = refuse(
                Stage::Certificate,
                Some(&dept),
                None,
                format!(
                    "more than {} concurrent connections from {dept}",
                    super::limits::MAX_CONNECTIONS_PER_PEER
                ),
            );
            let _ = on_pool(&host, move |h| h.refused(r)).await;
            return;
        };
        self.registry.register(&dept, cert, &conn);
        let peer = Peer {
            dept: dept.clone(),
            identity: info.identity,
            log_id: info.log_id,
            remote,
        };
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.timeouts.handshake);
        let (send, recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => return,
            Err(_) => {
                conn.close(
                    quinn::VarInt::from_u32(CLOSE_HANDSHAKE_FAILED),
                    b"no handshake stream",
                );
                let r = refuse(
                    Stage::Handshake,
                    Some(&dept),
                    Some(ErrorCode::Timeout),
                    "opened no handshake stream before the deadline".into(),
                );
                let _ = on_pool(&host, move |h| h.refused(r)).await;
                return;
            }
        };
        let pools = self.lease_pools();
        let mut s = Framed::new(send, recv, &dept, self.timeouts.read, pools.clone());
        let local = match on_pool(&host, |h| h.local_hello()).await {
            Ok(Ok(l)) => l,
            _ => return,
        };
        let hs = Handshake::server(started, self.timeouts.handshake, local, &dept);
        match handshake::run(&host, &mut s, hs, &peer).await {
            Ok(handshake::Outcome::Witnessed) => {}
            Ok(_) => {
                // A recovering peer got its answer; it may do nothing else.
                conn.close(
                    quinn::VarInt::from_u32(super::CLOSE_DONE),
                    b"recovery answered",
                );
                return;
            }
            Err(f) => {
                conn.close(
                    quinn::VarInt::from_u32(CLOSE_HANDSHAKE_FAILED),
                    b"handshake failed",
                );
                let r = refuse(
                    Stage::Handshake,
                    Some(&dept),
                    (!f.failure.from_peer).then_some(f.failure.code),
                    format!("handshake failed: {}", f.failure),
                );
                let _ = on_pool(&host, move |h| h.refused(r)).await;
                return;
            }
        }
        let d = dept.clone();
        let _ = on_pool(&host, move |h| h.peer_contact(&d, None)).await;
        while let Ok((send, recv)) = conn.accept_bi().await {
            let host = host.clone();
            let peer = peer.clone();
            let timeout = self.timeouts.read;
            let pools = pools.clone();
            tokio::spawn(async move {
                let mut s = Framed::new(send, recv, &peer.dept, timeout, pools);
                match s.recv().await {
                    Ok(first) => host.request(peer, first, s).await,
                    Err(e) => {
                        // Malformed, oversized or silent: answered with its
                        // code (when the stream still stands) and audited.
                        if let Some(code) = e.code() {
                            s.refuse(code, &e.to_string()).await;
                        }
                        let r = Refusal {
                            stage: Stage::Request,
                            peer: Some(peer.dept.clone()),
                            remote: Some(peer.remote),
                            code: e.code(),
                            reason: format!("request stream refused: {e}"),
                        };
                        let _ = on_pool(&host, move |h| h.refused(r)).await;
                    }
                }
            });
        }
    }
}
