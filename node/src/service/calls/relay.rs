//! A hub relays calls it cannot read: it checks the consumer's signature
//! (the connected department must be the one that signed), its own relay
//! policy (`services.relay`) and limits, forwards the `Call` unchanged to the
//! provider, checks the provider's signature and the binding of the answer,
//! keeps both signed messages (sealed fields stay sealed) and logs the hop.

use super::hop::{HopError, send_call};
use super::{CallCode, Role, StoredCall, record, summary, verified_request, verify_signed};
use crate::error::Result;
use crate::net::{Framed, Peer};
use crate::node::Node;
use crate::proto::call::{Call, CallRequestBody, CallResponse, CallResponseBody, CallerEvent};
use crate::proto::msg::{ErrorCode, Message};
use crate::service::{Services, blocking};
use pdx_crypto::SignatureDomain;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a hub waits for the provider: the longest backend timeout a
/// definition may declare, plus the provider's own work.
pub const RELAY_WAIT: Duration =
    Duration::from_millis(pdx_schemas::service::MAX_TIMEOUT_MS as u64 + 5_000);

fn check_request(
    node: &Node,
    from: &str,
    call: &Call,
) -> std::result::Result<CallRequestBody, (ErrorCode, String)> {
    let (body, info) = verified_request(node, from, call)?;
    if info.dept != from {
        return Err((
            ErrorCode::Untrusted,
            format!(
                "{from} relayed a request signed by {} for {}: a hub relays only its caller's own calls",
                info.dept, body.consumer
            ),
        ));
    }
    if !node.config.services.relays(&body.consumer, &body.provider) {
        return Err((
            ErrorCode::NotGranted,
            format!(
                "hub {} does not relay calls from {} to {} (services.relay)",
                node.config.dept, body.consumer, body.provider
            ),
        ));
    }
    Ok(body)
}

/// Checks the provider's answer and returns the body and the request it is
/// bound to (the forwarded one, or for a replay the consumer's original).
fn check_response(
    node: &Node,
    call: &Call,
    body: &CallRequestBody,
    r: &CallResponse,
) -> std::result::Result<(CallResponseBody, CallRequestBody, pdx_crypto::wire::Signed), String> {
    let (rbody, info) = verify_signed::<CallResponseBody>(
        node,
        &r.response,
        &r.certificate,
        SignatureDomain::CallResponse,
    )
    .map_err(|e| e.to_string())?;
    if info.dept != body.provider {
        return Err(format!(
            "answer signed by {}, not {}",
            info.dept, body.provider
        ));
    }
    let (bound, signed) = match &r.replay_of {
        None => (body.clone(), call.request.clone()),
        Some(original) => {
            let (orig, oinfo) = verify_signed::<CallRequestBody>(
                node,
                original,
                &call.certificate,
                SignatureDomain::CallRequest,
            )
            .map_err(|e| format!("replayed request: {e}"))?;
            if oinfo.dept != body.consumer || orig.idempotency_key != body.idempotency_key {
                return Err("the replayed request is not the caller's with this key".into());
            }
            (orig, original.clone())
        }
    };
    rbody
        .check_answers(&bound, &signed.digest())
        .map_err(|m| m.0)?;
    Ok((rbody, bound, signed))
}

/// Relays a call for `peer` to its provider.
pub(crate) async fn relay(
    svc: &Arc<Services>,
    peer: &Peer,
    call: Call,
    s: &mut Framed,
) -> Result<()> {
    let started = Instant::now();
    let Some(_admitted) = svc.admit_call(s, peer).await? else {
        return Ok(());
    };
    let (node, from, c2) = (svc.node.clone(), peer.dept.clone(), call.clone());
    let body = match blocking(move || Ok(check_request(&node, &from, &c2))).await? {
        Ok(b) => b,
        Err((code, why)) => return svc.refuse_call(s, peer, code, &why).await,
    };
    let provider = body.provider.clone();
    // Answer the consumer just before it gives up, not after.
    let wait = Duration::from_millis(u64::from(body.timeout_ms))
        .saturating_sub(Duration::from_millis(500))
        .clamp(Duration::from_millis(100), RELAY_WAIT);
    let unreachable = |e: String| {
        (
            ErrorCode::Unreachable,
            format!("hub cannot reach {provider}: {e}"),
        )
    };
    let forwarded = match send_call(svc, &provider, &call, wait).await {
        Ok(ev) => Ok(ev),
        Err(HopError::Connect(e) | HopError::Lost(e)) => Err(unreachable(e)),
        Err(HopError::Timeout) => Err((
            ErrorCode::Timeout,
            format!(
                "{provider} did not answer the hub within {} ms",
                wait.as_millis()
            ),
        )),
        Err(HopError::Unexpected(w)) => Err((ErrorCode::Internal, format!("{provider}: {w}"))),
    };
    let hub = svc.node.config.dept.clone();
    let node = svc.node.clone();
    let reply = blocking(move || {
        let (m, kept) = match forwarded {
            Ok(CallerEvent::Response(r)) => match check_response(&node, &call, &body, &r) {
                Ok((rbody, bound, signed)) => {
                    let mut sm = summary(
                        Role::Relay,
                        &bound,
                        &signed,
                        Some((&rbody, &r.response)),
                        Some(hub),
                        rbody.outcome.label().into(),
                        started,
                    );
                    sm.replayed = r.replay_of.is_some();
                    let kept = StoredCall {
                        summary: sm,
                        request: signed,
                        request_certificate: call.certificate.clone(),
                        response: Some(r.response.clone()),
                        response_certificate: r.certificate.clone(),
                        retry: r.replay_of.is_some().then(|| call.request.clone()),
                        response_values: None,
                    };
                    (Message::CallResponse(r), kept)
                }
                Err(why) => {
                    let m = Message::error(
                        ErrorCode::Untrusted,
                        format!("{provider} answered with a response that does not verify: {why}"),
                    );
                    (
                        m,
                        unanswered(&body, &call, hub, CallCode::Untrusted.label(), started),
                    )
                }
            },
            Ok(CallerEvent::Refused(e)) => {
                let label = CallCode::of_error(e.code).label();
                (
                    Message::Error(e),
                    unanswered(&body, &call, hub, label, started),
                )
            }
            Err((code, why)) => (
                Message::error(code, why),
                unanswered(&body, &call, hub, CallCode::of_error(code).label(), started),
            ),
        };
        record(&node, &kept, None, false, None, Vec::new())?;
        Ok(m)
    })
    .await?;
    s.send(&reply).await?;
    s.finish().await;
    Ok(())
}

fn unanswered(
    body: &CallRequestBody,
    call: &Call,
    hub: String,
    outcome: &str,
    started: Instant,
) -> StoredCall {
    StoredCall {
        summary: summary(
            Role::Relay,
            body,
            &call.request,
            None,
            Some(hub),
            outcome.to_string(),
            started,
        ),
        request: call.request.clone(),
        request_certificate: call.certificate.clone(),
        response: None,
        response_certificate: Vec::new(),
        retry: None,
        response_values: None,
    }
}
