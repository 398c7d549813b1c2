//! The consumer's side of a call: validate the request against the service
//! definition before anything leaves the node, seal the provider's fields,
//! sign, send to the provider or the hub on its route, then check the
//! provider's signature and binding, open the fields sealed for us, validate
//! the response, and keep and audit both signed messages.

use super::hop::{HopError, send_call};
use super::sealing::{open_values, seal_values};
use super::{
    CallCode, CallFailure, CallSummary, Role, StoredCall, record, records, service, summary,
    values_from_json, verify_signed,
};
use crate::error::NodeError;
use crate::node::Node;
use crate::proto::call::{
    Call, CallRequestBody, CallResponse, CallResponseBody, CallerEvent, Outcome,
};
use crate::service::{Services, blocking, directory};
use pdx_audit::store::now_ms;
use pdx_crypto::SignatureDomain;
use pdx_crypto::envelope::Recipient;
use pdx_crypto::wire::Signed;
use pdx_schemas::service::{Direction, ServiceDef, Values};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time a call may take beyond the service's backend timeout (hops, signing,
/// fsyncs), before the consumer gives up.
pub const CALL_MARGIN: Duration = Duration::from_secs(5);

/// How long the consumer waits for an answer.
fn call_timeout(def: &ServiceDef) -> Duration {
    Duration::from_millis(u64::from(def.timeout_ms)) + CALL_MARGIN
}

/// `pdx call` / `POST /v1/services/{dept}/{service}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallSpec {
    /// Providing department.
    pub to: String,
    /// Service id.
    pub service: String,
    /// The request: a JSON object of fields.
    pub body: String,
    /// Through this hub (else the route table, else direct).
    pub via: Option<String>,
    /// Idempotency key (random when not given: no deduplication).
    pub idempotency_key: Option<String>,
}

/// A call answered `ok`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallResult {
    /// Call id the response is bound to.
    pub call_id: String,
    /// Service id.
    pub service: String,
    /// Version.
    pub version: u32,
    /// Provider.
    #[serde(rename = "to")]
    pub provider: String,
    /// Hub, if relayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// `ok`.
    pub outcome: String,
    /// Response fields (opened), by name.
    pub response: BTreeMap<String, Option<String>>,
    /// Digest of the signed request.
    pub request_digest: String,
    /// Digest of the signed response.
    pub response_digest: String,
    /// The idempotency key.
    pub idempotency_key: String,
    /// The provider returned its stored response for this key.
    pub replayed: bool,
    /// Milliseconds, request validation to recorded response.
    pub elapsed_ms: u64,
    /// When the provider signed the response (ms since the epoch): what a
    /// recorded row's `call.time` is.
    #[serde(default)]
    pub time_ms: u64,
}

struct Prepared {
    call: Call,
    body: CallRequestBody,
    /// The request's values in the clear (recorded outcomes map from them).
    values: Values,
    def: std::sync::Arc<ServiceDef>,
    via: Option<String>,
}

fn fail(code: CallCode, message: impl Into<String>) -> CallFailure {
    CallFailure::new(code, message)
}

enum NeedKey {
    Ready(Box<Prepared>),
    /// The provider's key document is not here: fetch it from `hop`.
    Fetch {
        hop: String,
    },
}

fn prepare(node: &Node, spec: &CallSpec) -> std::result::Result<NeedKey, CallFailure> {
    crate::pki::validate_dept(&spec.to)
        .map_err(|e| fail(CallCode::InvalidRequest, e.to_string()))?;
    if spec.to == node.config.dept {
        return Err(fail(
            CallCode::InvalidRequest,
            "a department does not call itself through pdx",
        ));
    }
    let (_, def) = service(node, &spec.service)?.ok_or_else(|| {
        fail(
            CallCode::NotFound,
            format!(
                "service {} is not known here: add its definition with `pdx service add --schema FILE --service {}`",
                spec.service, spec.service
            ),
        )
    })?;
    if spec.body.len() > def.max_request_bytes as usize {
        return Err(fail(
            CallCode::TooLarge,
            format!(
                "the request is {} bytes; service {} allows {}",
                spec.body.len(),
                def.id,
                def.max_request_bytes
            ),
        ));
    }
    let json: serde_json::Value = serde_json::from_str(&spec.body).map_err(|e| {
        fail(
            CallCode::InvalidRequest,
            format!("the request is not JSON: {e}"),
        )
    })?;
    let values = values_from_json(Direction::Request, &json)
        .and_then(|v| def.validate(Direction::Request, &v).map(|()| v))
        .map_err(|p| fail(CallCode::InvalidRequest, p.join("; ")))?;
    let via = spec
        .via
        .clone()
        .or_else(|| node.config.services.route(&spec.to).map(str::to_string));
    if via.as_deref() == Some(node.config.dept.as_str()) {
        return Err(fail(CallCode::InvalidRequest, "--via names this node"));
    }
    let needs_key = def.request.iter().any(|f| f.sealed);
    let recipient = match directory::recipient_key(node, &spec.to)? {
        Some(body) => Some(Recipient {
            dept: spec.to.clone(),
            public: body.public,
        }),
        None if needs_key => {
            return Ok(NeedKey::Fetch {
                hop: via.clone().unwrap_or_else(|| spec.to.clone()),
            });
        }
        None => None,
    };
    let call_id = pdx_crypto::rng::bytes::<16>()
        .map_err(NodeError::from)?
        .to_vec();
    let idempotency_key = match &spec.idempotency_key {
        Some(k) => k.clone(),
        None => hex::encode(pdx_crypto::rng::bytes::<16>().map_err(NodeError::from)?),
    };
    let (fields, sealed, key) = seal_values(
        node.suite,
        &def,
        Direction::Request,
        &call_id,
        &values,
        recipient,
    )?;
    let body = CallRequestBody {
        call_id,
        service: def.id.clone(),
        version: def.version,
        definition: def.digest,
        consumer: node.config.dept.clone(),
        provider: spec.to.clone(),
        idempotency_key,
        time_ms: now_ms(),
        timeout_ms: u32::try_from(call_timeout(&def).as_millis()).unwrap_or(u32::MAX),
        fields,
        sealed,
        key,
    };
    body.check()
        .map_err(|m| fail(CallCode::InvalidRequest, m.0))?;
    let (request, certificate) = node.sign_certified(SignatureDomain::CallRequest, &body)?;
    Ok(NeedKey::Ready(Box::new(Prepared {
        call: Call {
            request,
            certificate,
            key_document: directory::own_active_key_document(node)?,
        },
        body,
        values,
        def,
        via,
    })))
}

/// Makes a call; every outcome is audited here (a refused or failed call as
/// a `call` entry without a response digest).
pub async fn call(
    svc: &Arc<Services>,
    spec: CallSpec,
) -> std::result::Result<CallResult, CallFailure> {
    let started = Instant::now();
    let node = svc.node.clone();
    let s2 = spec.clone();
    let mut prepared = blocking(move || Ok(prepare(&node, &s2))).await??;
    if let NeedKey::Fetch { hop } = prepared {
        fetch_key(svc, &hop, &spec.to).await?;
        let node = svc.node.clone();
        let s2 = spec.clone();
        prepared = blocking(move || Ok(prepare(&node, &s2))).await??;
    }
    let p = match prepared {
        NeedKey::Ready(p) => p,
        NeedKey::Fetch { hop } => {
            return Err(fail(
                CallCode::NotFound,
                format!(
                    "no encryption key document of {to} here or at {hop}, so the sealed fields cannot be sealed for it: fetch it with `pdx keys fetch --peer {to}` (here, or on the hub {hop})",
                    to = spec.to
                ),
            ));
        }
    };
    let hop = p.via.clone().unwrap_or_else(|| p.body.provider.clone());
    let timeout = call_timeout(&p.def);
    let answer = exchange(svc, &hop, &p.call, timeout).await;
    let node = svc.node.clone();
    blocking(move || Ok(conclude(&node, *p, answer, started))).await?
}

async fn fetch_key(
    svc: &Arc<Services>,
    hop: &str,
    dept: &str,
) -> std::result::Result<(), CallFailure> {
    use crate::proto::msg::{KeyDirRequest, Message};
    let pc = svc
        .net
        .pooled(svc, hop)
        .await
        .map_err(|e| fail(CallCode::Unreachable, e.to_string()))?;
    let mut s = pc
        .stream()
        .await
        .map_err(|e| fail(CallCode::Unreachable, e.to_string()))?;
    s.send(&Message::KeyDirRequest(KeyDirRequest {
        depts: vec![dept.to_string()],
    }))
    .await
    .map_err(|e| fail(CallCode::Unreachable, e.to_string()))?;
    let reply = s
        .recv()
        .await
        .map_err(|e| fail(CallCode::Unreachable, format!("{hop}: {e}")))?;
    s.finish().await;
    if let Message::KeyDirResponse(r) = reply {
        let node = svc.node.clone();
        blocking(move || directory::accept_key_documents(&node, &r.documents)).await?;
    }
    Ok(())
}

/// What came back on the wire.
enum Answer {
    Event(CallerEvent),
    Failed(CallFailure),
}

async fn exchange(svc: &Arc<Services>, hop: &str, call: &Call, timeout: Duration) -> Answer {
    match send_call(svc, hop, call, timeout).await {
        Ok(ev) => Answer::Event(ev),
        Err(HopError::Connect(e)) => Answer::Failed(fail(
            CallCode::Unreachable,
            format!("cannot reach {hop}: {e}"),
        )),
        Err(HopError::Lost(e)) => Answer::Failed(fail(
            CallCode::Unreachable,
            format!("cannot open a stream to {hop}: {e}"),
        )),
        Err(HopError::Timeout) => Answer::Failed(fail(
            CallCode::Timeout,
            format!("no answer from {hop} within {} ms", timeout.as_millis()),
        )),
        Err(HopError::Unexpected(w)) => {
            Answer::Failed(fail(CallCode::Untrusted, format!("{hop}: {w}")))
        }
    }
}

fn outcome_of(f: &CallFailure) -> String {
    f.code.label().to_string()
}

/// Checks the answer, opens and validates the response, keeps and audits.
fn conclude(
    node: &Node,
    p: Prepared,
    answer: Answer,
    started: Instant,
) -> std::result::Result<CallResult, CallFailure> {
    let call_id = hex::encode(&p.body.call_id);
    let with_id = |mut f: CallFailure| {
        f.call_id = Some(call_id.clone());
        f
    };
    let unanswered = |f: CallFailure| -> std::result::Result<CallResult, CallFailure> {
        let s = summary(
            Role::Consumer,
            &p.body,
            &p.call.request,
            None,
            p.via.clone(),
            outcome_of(&f),
            started,
        );
        let stored = StoredCall {
            summary: s,
            request: p.call.request.clone(),
            request_certificate: p.call.certificate.clone(),
            response: None,
            response_certificate: Vec::new(),
            retry: None,
            response_values: None,
        };
        record(node, &stored, Some(&p.def), true, None, Vec::new())?;
        Err(with_id(f))
    };
    let r = match answer {
        Answer::Failed(f) => return unanswered(f),
        Answer::Event(CallerEvent::Refused(e)) => {
            let hop = p.via.as_deref().unwrap_or(&p.body.provider);
            return unanswered(fail(
                CallCode::of_error(e.code),
                format!("{hop} refused the call: {}", e.message),
            ));
        }
        Answer::Event(CallerEvent::Response(r)) => r,
    };
    let checked = check_response(node, &p, &r);
    let (body, bound_request) = match checked {
        Ok(x) => x,
        Err(f) => return unanswered(f),
    };
    let replayed = r.replay_of.is_some();
    let mut s = summary(
        Role::Consumer,
        &bound_request.1,
        &bound_request.0,
        Some((&body, &r.response)),
        p.via.clone(),
        body.outcome.label().to_string(),
        started,
    );
    s.replayed = replayed;
    let opened = if body.outcome == Outcome::Ok {
        open_values(
            node,
            &p.def,
            Direction::Response,
            &body.call_id,
            &body.fields,
            &body.sealed,
            body.key.as_ref(),
        )
        .map_err(|e| {
            fail(
                CallCode::InvalidResponse,
                format!("{}: {e}", p.body.provider),
            )
        })
        .and_then(|v| {
            p.def
                .validate(Direction::Response, &v)
                .map(|()| v)
                .map_err(|pr| {
                    fail(
                        CallCode::InvalidResponse,
                        format!(
                            "{} signed a response that violates service {}: {}",
                            p.body.provider,
                            p.def.id,
                            pr.join("; ")
                        ),
                    )
                })
        })
    } else {
        Err(fail(
            CallCode::of_outcome(body.outcome),
            format!(
                "{} answered {}: {}",
                p.body.provider,
                body.outcome.label(),
                body.detail
            ),
        ))
    };
    if let Err(f) = &opened {
        s.outcome = outcome_of(f);
    }
    let stored = StoredCall {
        summary: s.clone(),
        request: bound_request.0.clone(),
        request_certificate: p.call.certificate.clone(),
        response: Some(r.response.clone()),
        response_certificate: r.certificate.clone(),
        retry: replayed.then(|| p.call.request.clone()),
        response_values: None,
    };
    match (&opened, records::rule(node, &p.def.id)?) {
        (Ok(values), Some(rule)) => {
            // The row is queued with the call's entry; the response's call
            // id (the original one for a replay) keeps it from queueing twice.
            records::with_call_lock(&body.call_id, || {
                let ops = records::outcome_ops(
                    node,
                    &rule,
                    &body.call_id,
                    &body.provider,
                    &p.values,
                    values,
                    body.time_ms,
                )?;
                record(node, &stored, Some(&p.def), true, None, ops)
            })?;
        }
        _ => record(node, &stored, Some(&p.def), true, None, Vec::new())?,
    }
    let values = opened.map_err(with_id)?;
    let mut r = result(&s, values);
    r.time_ms = body.time_ms;
    Ok(r)
}

fn result(s: &CallSummary, values: Values) -> CallResult {
    CallResult {
        call_id: s.call_id.clone(),
        service: s.service.clone(),
        version: s.version,
        provider: s.provider.clone(),
        via: s.via.clone(),
        outcome: s.outcome.clone(),
        response: values,
        request_digest: s.request_digest.clone(),
        response_digest: s.response_digest.clone().unwrap_or_default(),
        idempotency_key: s.idempotency_key.clone(),
        replayed: s.replayed,
        elapsed_ms: s.elapsed_ms,
        time_ms: s.time_ms,
    }
}

/// The provider's signature, and the binding to our request (or, for a
/// replay, to our own earlier request with the same key). Returns the body
/// and the signed request it answers.
fn check_response(
    node: &Node,
    p: &Prepared,
    r: &CallResponse,
) -> std::result::Result<(CallResponseBody, (Signed, CallRequestBody)), CallFailure> {
    let untrusted = |why: String| {
        fail(
            CallCode::Untrusted,
            format!("response of {}: {why}", p.body.provider),
        )
    };
    let (body, info) = verify_signed::<CallResponseBody>(
        node,
        &r.response,
        &r.certificate,
        SignatureDomain::CallResponse,
    )
    .map_err(|e| untrusted(e.to_string()))?;
    if info.dept != p.body.provider {
        return Err(untrusted(format!(
            "signed by {}, not the provider",
            info.dept
        )));
    }
    let bound = match &r.replay_of {
        None => (p.call.request.clone(), p.body.clone()),
        Some(original) => {
            let me = node.keys()?.identity.verifying_key();
            let orig: CallRequestBody = original
                .verify(SignatureDomain::CallRequest, &me)
                .map_err(|e| untrusted(format!("the replayed request is not ours: {e}")))?;
            if orig.consumer != p.body.consumer
                || orig.provider != p.body.provider
                || orig.service != p.body.service
                || orig.idempotency_key != p.body.idempotency_key
            {
                return Err(untrusted("the replayed request is for another call".into()));
            }
            (original.clone(), orig)
        }
    };
    body.check_answers(&bound.1, &bound.0.digest())
        .map_err(|m| untrusted(m.0))?;
    Ok((body, bound))
}
