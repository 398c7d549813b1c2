//! The provider's side of a call: the consumer's signature and certificate,
//! the service binding and definition, the grant, the idempotency key; then
//! open the fields sealed for us, validate, call the backend, validate its
//! answer (an answer that violates the schema is refused, never forwarded),
//! seal the consumer's fields, sign, keep and audit.
//!
//! Exactly-once: an `ok` outcome is stored under (consumer, service, key) with
//! a digest of the opened request; a later call with the same key and the
//! same content gets the stored signed response (the backend is not called
//! again), with different content it is refused. Failed outcomes are not
//! stored: a retry reaches the backend again (with the same key header).

use super::backend::BackendReply;
use super::limits::KeyHeld;
use super::sealing::{open_values, seal_values};
use super::{
    IdempotencyRecord, Role, ServiceRecord, StoredCall, content_digest, record, service, summary,
    values_from_json, values_to_json, verified_request,
};
use crate::error::{NodeError, Result};
use crate::net::{Framed, Peer};
use crate::node::Node;
use crate::proto::call::{Call, CallRequestBody, CallResponse, CallResponseBody, Outcome};
use crate::proto::msg::{ErrorCode, Message};
use crate::service::grants::{self, Grant};
use crate::service::{Services, blocking};
use crate::store::{self, CF_CALLS};
use pdx_audit::store::{StoreOp, now_ms};
use pdx_crypto::envelope::Recipient;
use pdx_crypto::wire::{Signed, from_cbor, to_cbor};
use pdx_crypto::{Digest, SignatureDomain};
use pdx_schemas::service::{Direction, ServiceDef, Values};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredOutcome {
    content: Digest,
    request: Signed,
    #[serde(with = "serde_bytes")]
    request_certificate: Vec<u8>,
    response: Signed,
    /// The certificate `response` was signed under (empty in records made
    /// before certificates could be renewed: the current one then).
    #[serde(default, with = "serde_bytes")]
    response_certificate: Vec<u8>,
}

fn outcome_key(node: &Node, call_id: &[u8]) -> Result<pdx_crypto::atrest::ObjectKey> {
    Ok(node
        .keys()?
        .storage
        .object_key("call-outcome", call_id, b"")?)
}

type Refusal = (ErrorCode, String);

/// A checked call waiting for the backend.
pub(super) struct Pending {
    call: Call,
    body: CallRequestBody,
    def: std::sync::Arc<ServiceDef>,
    record: ServiceRecord,
    values: Values,
    content: Digest,
    grant: Grant,
    via: Option<String>,
    consumer_key: Option<Recipient>,
    _held: KeyHeld,
}

enum Step {
    Replay(Box<CallResponse>),
    Proceed(Box<Pending>),
}

fn internal(e: NodeError) -> Refusal {
    (ErrorCode::Internal, e.to_string())
}

fn check(svc: &Services, from: &str, call: Call) -> std::result::Result<Step, Refusal> {
    let node = &svc.node;
    let (body, info) = verified_request(node, from, &call)?;
    let consumer = body.consumer.clone();
    let (binding, def) = service(node, &body.service)
        .map_err(internal)?
        .filter(|(r, _)| r.backend.is_some())
        .ok_or_else(|| {
            (
                ErrorCode::NotFound,
                format!(
                    "service {} is not published by {}",
                    body.service, node.config.dept
                ),
            )
        })?;
    if body.version != def.version || body.definition != def.digest {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "{consumer} calls service {} version {} with definition {}; {} publishes version {} with definition {}",
                body.service,
                body.version,
                body.definition.to_hex(),
                node.config.dept,
                def.version,
                def.digest.to_hex()
            ),
        ));
    }
    let grant = grants::authorize_service(node, &consumer, &body.service)?;
    let values = open_values(
        node,
        &def,
        Direction::Request,
        &body.call_id,
        &body.fields,
        &body.sealed,
        body.key.as_ref(),
    )
    .map_err(|e| {
        (
            ErrorCode::BadRequest,
            format!("request from {consumer}: {e}"),
        )
    })?;
    def.validate(Direction::Request, &values)
        .map_err(|p| (ErrorCode::BadRequest, p.join("; ")))?;
    let content = content_digest(node.suite, &def.id, def.version, &values).map_err(internal)?;
    let key = store::idempotency_key(&consumer, &body.service, &body.idempotency_key);
    let held = svc.calls.limits.hold_key(key.clone()).ok_or_else(|| {
        (
            ErrorCode::RateLimited,
            format!(
                "a call with idempotency key {} is in progress; retry when it ends",
                body.idempotency_key
            ),
        )
    })?;
    if let Some(stored) = node
        .store
        .get::<IdempotencyRecord>(CF_CALLS, &key)
        .map_err(internal)?
    {
        let plain = outcome_key(node, &stored.call_id)
            .and_then(|k| Ok(k.open_block(0, &stored.sealed)?))
            .map_err(internal)?;
        let outcome: StoredOutcome = from_cbor(&plain, "stored call outcome")
            .map_err(|e| internal(NodeError::corrupt("calls/idempotency", e)))?;
        if outcome.content != content {
            return Err((
                ErrorCode::BadRequest,
                format!(
                    "idempotency key {} was used for a different request (call {}); use a new key",
                    body.idempotency_key,
                    hex::encode(&stored.call_id)
                ),
            ));
        }
        // A replay carries the certificate its response was signed under,
        // which a renewal since may have replaced.
        let response_certificate = if outcome.response_certificate.is_empty() {
            node.cert().map_err(internal)?.to_vec()
        } else {
            outcome.response_certificate.clone()
        };
        let response = CallResponse {
            response: outcome.response.clone(),
            certificate: response_certificate.clone(),
            replay_of: Some(outcome.request.clone()),
        };
        let original: CallRequestBody = outcome
            .request
            .dangerous_decode_unverified("stored request")
            .map_err(|e| internal(e.into()))?;
        let rbody: CallResponseBody = outcome
            .response
            .dangerous_decode_unverified("stored response")
            .map_err(|e| internal(e.into()))?;
        let mut s = summary(
            Role::Provider,
            &original,
            &outcome.request,
            Some((&rbody, &outcome.response)),
            (from != consumer).then(|| from.to_string()),
            rbody.outcome.label().to_string(),
            Instant::now(),
        );
        s.replayed = true;
        let kept = StoredCall {
            summary: s,
            request: outcome.request,
            request_certificate: outcome.request_certificate,
            response: Some(outcome.response),
            response_certificate,
            retry: Some(call.request.clone()),
            response_values: None,
        };
        record(node, &kept, Some(&def), true, Some(&grant), Vec::new()).map_err(internal)?;
        return Ok(Step::Replay(Box::new(response)));
    }
    let consumer_key = match &call.key_document {
        Some(doc) => {
            let kb = doc.verify(&info.identity, &info.dept).map_err(|e| {
                (
                    ErrorCode::BadSignature,
                    format!("key document of {consumer}: {e}"),
                )
            })?;
            kb.active.then_some(Recipient {
                dept: consumer.clone(),
                public: kb.public,
            })
        }
        None => None,
    };
    Ok(Step::Proceed(Box::new(Pending {
        via: (from != consumer).then(|| from.to_string()),
        call,
        body,
        def,
        record: binding,
        values,
        content,
        grant,
        consumer_key,
        _held: held,
    })))
}

/// The backend's answer as a signed outcome and (for `ok`) the values.
fn judge(def: &ServiceDef, reply: BackendReply, timeout_ms: u64) -> (Outcome, String, Values) {
    match reply {
        BackendReply::Body(bytes) => {
            let values = serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| vec![format!("the backend's answer is not JSON: {e}")])
                .and_then(|j| values_from_json(Direction::Response, &j))
                .and_then(|v| def.validate(Direction::Response, &v).map(|()| v));
            match values {
                Ok(v) => (Outcome::Ok, String::new(), v),
                Err(p) => (Outcome::InvalidResponse, p.join("; "), Values::new()),
            }
        }
        BackendReply::Status(code) => (
            Outcome::BackendError,
            format!("the backend answered HTTP {code}"),
            Values::new(),
        ),
        BackendReply::TooLarge(n) => (
            Outcome::InvalidResponse,
            format!("the backend's answer exceeds the service's {n} bytes"),
            Values::new(),
        ),
        BackendReply::Unreachable(e) => (Outcome::BackendError, e, Values::new()),
        BackendReply::Timeout => (
            Outcome::Timeout,
            format!("the backend did not answer within {timeout_ms} ms"),
            Values::new(),
        ),
    }
}

fn finish(node: &Node, p: Pending, reply: BackendReply, started: Instant) -> Result<CallResponse> {
    let timeout_ms = u64::from(p.record.timeout_ms.unwrap_or(p.def.timeout_ms));
    let (outcome, detail, values) = judge(&p.def, reply, timeout_ms);
    let (fields, sealed, key) = if outcome == Outcome::Ok {
        let needs = p.def.response.iter().any(|f| f.sealed);
        if needs && p.consumer_key.is_none() {
            return Err(NodeError::Invalid(format!(
                "{} sent no active key document: the response cannot be sealed for it",
                p.body.consumer
            )));
        }
        seal_values(
            node.suite,
            &p.def,
            Direction::Response,
            &p.body.call_id,
            &values,
            p.consumer_key.clone(),
        )?
    } else {
        (BTreeMap::new(), BTreeMap::new(), None)
    };
    let rbody = CallResponseBody {
        call_id: p.body.call_id.clone(),
        service: p.body.service.clone(),
        version: p.body.version,
        consumer: p.body.consumer.clone(),
        provider: p.body.provider.clone(),
        request: p.call.request.digest(),
        idempotency_key: p.body.idempotency_key.clone(),
        outcome,
        detail,
        time_ms: now_ms(),
        fields,
        sealed,
        key,
    };
    let (response, response_certificate) =
        node.sign_certified(SignatureDomain::CallResponse, &rbody)?;
    let s = summary(
        Role::Provider,
        &p.body,
        &p.call.request,
        Some((&rbody, &response)),
        p.via.clone(),
        outcome.label().to_string(),
        started,
    );
    let mut extra: Vec<StoreOp> = Vec::new();
    if outcome == Outcome::Ok {
        let stored = StoredOutcome {
            content: p.content,
            request: p.call.request.clone(),
            request_certificate: p.call.certificate.clone(),
            response: response.clone(),
            response_certificate: response_certificate.clone(),
        };
        let sealed = outcome_key(node, &p.body.call_id)?.seal_block(0, &to_cbor(&stored)?)?;
        extra.push(node.store.put_op(
            CF_CALLS,
            &store::idempotency_key(&p.body.consumer, &p.body.service, &p.body.idempotency_key),
            &IdempotencyRecord {
                time_ms: now_ms(),
                call_id: p.body.call_id.clone(),
                sealed,
            },
        )?);
    }
    let kept = StoredCall {
        summary: s,
        request: p.call.request.clone(),
        request_certificate: p.call.certificate.clone(),
        response: Some(response.clone()),
        response_certificate: response_certificate.clone(),
        retry: None,
        response_values: (outcome == Outcome::Ok).then_some(values),
    };
    record(node, &kept, Some(&p.def), true, Some(&p.grant), extra)?;
    Ok(CallResponse {
        response,
        certificate: response_certificate,
        replay_of: None,
    })
}

/// Answers a call addressed to this node.
pub(crate) async fn serve(
    svc: &Arc<Services>,
    peer: &Peer,
    call: Call,
    s: &mut Framed,
) -> Result<()> {
    let started = Instant::now();
    let Some(_admitted) = svc.admit_call(s, peer).await? else {
        return Ok(());
    };
    let (svc2, from) = (svc.clone(), peer.dept.clone());
    let step = blocking(move || Ok(check(&svc2, &from, call))).await?;
    let pending = match step {
        Err((code, why)) => return svc.refuse_call(s, peer, code, &why).await,
        Ok(Step::Replay(r)) => {
            s.send(&Message::CallResponse(r)).await?;
            s.finish().await;
            return Ok(());
        }
        Ok(Step::Proceed(p)) => p,
    };
    let url = pending.record.backend.clone().unwrap_or_default();
    let timeout = Duration::from_millis(u64::from(
        pending.record.timeout_ms.unwrap_or(pending.def.timeout_ms),
    ));
    let json = serde_json::to_vec(&values_to_json(
        &pending.def,
        Direction::Request,
        &pending.values,
    ))
    .map_err(|e| NodeError::Invalid(e.to_string()))?;
    let headers = [
        ("x-pdx-consumer", pending.body.consumer.clone()),
        ("x-pdx-service", pending.body.service.clone()),
        ("x-pdx-call-id", hex::encode(&pending.body.call_id)),
        ("idempotency-key", pending.body.idempotency_key.clone()),
    ];
    let reply = svc
        .calls
        .backend
        .post(
            &url,
            &headers,
            json,
            timeout,
            pending.def.max_response_bytes,
        )
        .await;
    let node = svc.node.clone();
    let response = blocking(move || finish(&node, *pending, reply, started)).await;
    match response {
        Ok(r) => {
            s.send(&Message::CallResponse(Box::new(r))).await?;
            s.finish().await;
            Ok(())
        }
        Err(e) => {
            svc.refuse_call(s, peer, ErrorCode::Internal, &e.to_string())
                .await
        }
    }
}
