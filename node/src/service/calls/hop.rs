//! One hop of a call, for the consumer and for a hub alike: the `Call` on a
//! pooled connection to the next department, its answer within one deadline
//! (the [`CallerExchange`] machine). A connection that died since its last
//! use, or under the call, is given up and the same signed call is sent once
//! more on a fresh one: its idempotency key makes a second delivery harmless.

use crate::proto::call::{Call, CallerEvent, CallerExchange, CallerFailure};
use crate::service::Services;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a hop gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopError {
    /// No connection to the next department could be made.
    Connect(String),
    /// Connections broke under the call, twice.
    Lost(String),
    /// No answer before the deadline (the connection is given up).
    Timeout,
    /// The next department answered with a message a call cannot receive.
    Unexpected(String),
}

/// Sends `call` to `hop` and waits at most `wait` for its answer.
pub async fn send_call(
    svc: &Arc<Services>,
    hop: &str,
    call: &Call,
    wait: Duration,
) -> Result<CallerEvent, HopError> {
    let (mut machine, first) = CallerExchange::start(call.clone(), Instant::now(), wait);
    let deadline =
        tokio::time::Instant::from_std(machine.poll_timeout().unwrap_or_else(Instant::now));
    let stale = |pc: &crate::net::PeerConn| {
        pc.conn
            .close(quinn::VarInt::from_u32(crate::net::CLOSE_DONE), b"stale");
    };
    let mut last = String::new();
    for _ in 0..2 {
        let pc = svc
            .net
            .pooled(svc, hop)
            .await
            .map_err(|e| HopError::Connect(e.to_string()))?;
        let mut s = match pc.stream().await {
            Ok(s) => s,
            Err(e) => {
                stale(&pc);
                last = e.to_string();
                continue;
            }
        };
        if let Err(e) = s.send(&first).await {
            stale(&pc);
            last = e.to_string();
            continue;
        }
        let got = tokio::time::timeout_at(deadline, s.recv()).await;
        s.finish().await;
        match got {
            Err(_) => {
                // A silent connection: the next call connects afresh.
                svc.net.evict(hop).await;
                return match machine.handle_timeout(Instant::now()) {
                    Err(CallerFailure::Unexpected(w)) => Err(HopError::Unexpected(w)),
                    Err(CallerFailure::Timeout) | Ok(()) => Err(HopError::Timeout),
                };
            }
            Ok(Err(e)) => {
                svc.net.evict(hop).await;
                last = e.to_string();
            }
            Ok(Ok(msg)) => {
                return machine.handle(msg).map_err(|f| match f {
                    CallerFailure::Timeout => HopError::Timeout,
                    CallerFailure::Unexpected(w) => HopError::Unexpected(w),
                });
            }
        }
    }
    Err(HopError::Lost(last))
}
