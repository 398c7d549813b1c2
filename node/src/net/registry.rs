//! Live connections, by peer department and certificate, so a CRL update can
//! close the connections of peers it revokes.

use rustls::pki_types::CertificateDer;
use std::sync::Mutex;

struct LiveConn {
    dept: String,
    cert: CertificateDer<'static>,
    conn: quinn::Connection,
}

/// A connection that a re-check closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Peer department.
    pub dept: String,
    /// Why its certificate is no longer accepted.
    pub reason: String,
}

/// The connection registry.
#[derive(Default)]
pub struct Registry {
    live: Mutex<Vec<LiveConn>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registry {
    /// Records a connection (and forgets closed ones).
    pub fn register(&self, dept: &str, cert: CertificateDer<'static>, conn: &quinn::Connection) {
        if let Ok(mut live) = self.live.lock() {
            live.retain(|c| c.conn.close_reason().is_none());
            live.push(LiveConn {
                dept: dept.to_string(),
                cert,
                conn: conn.clone(),
            });
        }
    }

    /// Closes every live connection whose certificate `check` now refuses.
    pub fn recheck(
        &self,
        check: impl Fn(&CertificateDer<'static>) -> Result<(), String>,
    ) -> Vec<Closed> {
        let Ok(mut live) = self.live.lock() else {
            return Vec::new();
        };
        live.retain(|c| c.conn.close_reason().is_none());
        let mut closed = Vec::new();
        live.retain(|c| match check(&c.cert) {
            Ok(()) => true,
            Err(reason) => {
                c.conn.close(
                    quinn::VarInt::from_u32(super::CLOSE_REVOKED),
                    b"certificate revoked",
                );
                closed.push(Closed {
                    dept: c.dept.clone(),
                    reason,
                });
                false
            }
        });
        closed
    }
}
