//! Online service calls: signed, sealed, audited request/response between a
//! consumer's business system (through the local [`gateway`] or `pdx call`)
//! and a provider's backend (an HTTP+JSON endpoint), directly or through a
//! hub that relays what it cannot read.
//!
//! - [`consumer`]: validate, seal for the provider, sign, send, check and open
//!   the answer;
//! - [`provider`]: check signature, grant, rate and idempotency key, open,
//!   call the [`backend`], validate, seal for the consumer, sign;
//! - [`relay`]: a hub's forwarding under its relay policy;
//! - here: service definitions and bindings (`services` family), the signed
//!   messages kept for disputes and the idempotency outcomes (`calls`
//!   family), the audit entries, and the JSON mapping of messages.
//!
//! Each party writes one audit entry per call (`call`, `call-relay`,
//! `call-serve`) in the same durable write as the messages it keeps.

pub mod backend;
pub mod consumer;
pub mod gateway;
pub mod hop;
pub mod limits;
pub mod provider;
pub mod records;
pub mod relay;
pub mod sealing;

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::proto::call::{CallRequestBody, CallResponseBody};
use crate::proto::msg::ErrorCode;
use crate::service::grants::{Grant, GrantSpec};
use crate::store::{self, CF_CALLS, CF_SERVICES};
use pdx_audit::store::{StoreOp, now_ms};
use pdx_audit::{EntryDraft, EventKind, FieldRef, Subject};
use pdx_crypto::Digest;
use pdx_crypto::wire::{Signed, from_cbor, to_cbor};
use pdx_schemas::service::{Direction, ServiceDef, Values};
use serde::{Deserialize, Serialize};

/// A service known to this node: its definition and, on a provider, the
/// backend it is bound to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Service id.
    pub id: String,
    /// Version.
    pub version: u32,
    /// The definition's source.
    pub source: String,
    /// Provider side: the backend URL (`http://host:port/path`).
    pub backend: Option<String>,
    /// Provider side: backend timeout (ms), overriding the definition's.
    pub timeout_ms: Option<u32>,
    /// When it was stored.
    pub stored_ms: u64,
    /// Who stored it.
    pub operator: String,
}

impl ServiceRecord {
    /// The validated definition (its digest in the network's `suite`).
    pub fn definition(&self, suite: pdx_crypto::Suite) -> Result<std::sync::Arc<ServiceDef>> {
        parsed(suite, &self.source, &self.id)
    }
}

/// `pdx service publish` / `pdx service add`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Definition file.
    pub schema: String,
    /// The service id the file must define (a check against the wrong file).
    pub service: String,
    /// Backend URL (publish only).
    pub backend: Option<String>,
    /// Backend timeout (ms).
    pub timeout_ms: Option<u32>,
}

/// A service as listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service id.
    pub service: String,
    /// Version.
    pub version: u32,
    /// Title.
    pub title: String,
    /// Definition digest.
    pub digest: String,
    /// `provider` (published with a backend) or `consumer` (definition only).
    pub role: String,
    /// Backend URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Effective backend timeout (ms).
    pub timeout_ms: u32,
    /// Request fields sealed for the provider.
    pub sealed_request: Vec<String>,
    /// Response fields sealed for the consumer.
    pub sealed_response: Vec<String>,
}

fn info(r: &ServiceRecord, d: &ServiceDef) -> ServiceInfo {
    let sealed = |dir| {
        d.fields(dir)
            .iter()
            .filter(|f| f.sealed)
            .map(|f| f.field.name.clone())
            .collect()
    };
    ServiceInfo {
        service: r.id.clone(),
        version: r.version,
        title: d.title.clone(),
        digest: d.digest.to_hex(),
        role: if r.backend.is_some() {
            "provider"
        } else {
            "consumer"
        }
        .into(),
        backend: r.backend.clone(),
        timeout_ms: r.timeout_ms.unwrap_or(d.timeout_ms),
        sealed_request: sealed(Direction::Request),
        sealed_response: sealed(Direction::Response),
    }
}

fn check_backend(url: &str) -> Result<()> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| NodeError::Invalid(format!("--backend {url}: not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(NodeError::Invalid(format!(
            "--backend {url}: use http://HOST:PORT/PATH (the department's own system, on a trusted network)"
        )));
    }
    Ok(())
}

/// Stores a definition (with a backend: published as provider), audited as a
/// configuration change. Replaces an earlier one of the same id.
pub fn store(node: &Node, spec: &ServiceSpec, operator: &str) -> Result<ServiceInfo> {
    let path = std::path::Path::new(&spec.schema);
    let source = std::fs::read_to_string(path).map_err(NodeError::io(path))?;
    let def = ServiceDef::parse(&source, &spec.schema, node.suite)?;
    if def.id != spec.service {
        return Err(NodeError::Invalid(format!(
            "{} defines service {}, not {}",
            spec.schema, def.id, spec.service
        )));
    }
    if let Some(b) = &spec.backend {
        check_backend(b)?;
    }
    if let Some(t) = spec.timeout_ms
        && (t == 0 || t > pdx_schemas::service::MAX_TIMEOUT_MS)
    {
        return Err(NodeError::Invalid(format!(
            "--timeout must be between 1 and {} ms",
            pdx_schemas::service::MAX_TIMEOUT_MS
        )));
    }
    let record = ServiceRecord {
        id: def.id.clone(),
        version: def.version,
        source,
        backend: spec.backend.clone(),
        timeout_ms: spec.timeout_ms,
        stored_ms: now_ms(),
        operator: operator.to_string(),
    };
    let mut d = node.draft(EventKind::ConfigChange, operator);
    d.subject = Subject {
        dataset: Some(def.id.clone()),
        release: None,
        digest: Some(def.digest),
    };
    d.legal_basis = def.legal_basis.clone();
    d.detail = Some(match &spec.backend {
        Some(b) => format!(
            "service {} version {} published, backend {b}",
            def.id, def.version
        ),
        None => format!(
            "service {} version {} added for calling",
            def.id, def.version
        ),
    });
    node.log_with(
        d,
        vec![
            node.store
                .put_op(CF_SERVICES, store::service_key(&def.id), &record)?,
        ],
    )?;
    Ok(info(&record, &def))
}

/// `pdx grant --service`: a grant to call a service published here; the
/// service's sharing rules are checked now (conditional sharing needs an
/// agreement).
pub fn grant(node: &Node, spec: &GrantSpec, operator: &str) -> Result<Grant> {
    crate::pki::validate_dept(&spec.to)?;
    let service_id = spec
        .service
        .as_deref()
        .ok_or_else(|| NodeError::Invalid("no --service given".into()))?;
    let (record, def) = service(node, service_id)?.ok_or_else(|| {
        let service = service_id;
        NodeError::NotFound(format!(
            "service {service} is not published here: `pdx service publish --schema FILE --service {service} --backend URL` first"
        ))
    })?;
    let service = service_id;
    if record.backend.is_none() {
        return Err(NodeError::Invalid(format!(
            "service {service} is only known here for calling; publish it with a backend before granting it"
        )));
    }
    if def.sharing == pdx_schemas::schema::SharingClass::Conditional && spec.agreement.is_none() {
        return Err(NodeError::Invalid(format!(
            "service {service} carries conditional-sharing data: a grant needs --agreement (the data-sharing agreement id)"
        )));
    }
    if spec.to == node.config.dept {
        return Err(NodeError::Invalid(
            "a grant to this node's own department has no effect".into(),
        ));
    }
    let grant = Grant {
        id: hex::encode(pdx_crypto::rng::bytes::<6>()?),
        dataset: String::new(),
        to: spec.to.clone(),
        profile: String::new(),
        purpose: spec.purpose.clone(),
        agreement: spec.agreement.clone(),
        expires_ms: spec.expires_ms,
        created_ms: now_ms(),
        operator: operator.to_string(),
        revoked_ms: None,
        service: Some(service.to_string()),
    };
    let mut d = node.draft(EventKind::Grant, operator);
    d.subject = Subject {
        dataset: Some(service.to_string()),
        release: None,
        digest: Some(def.digest),
    };
    d.counterparty = Some(grant.to.clone());
    d.agreement = grant.agreement.clone();
    d.purpose = Some(grant.purpose.clone());
    d.legal_basis = def.legal_basis.clone();
    d.detail = Some(format!(
        "grant {} service {} version {} expires {}",
        grant.id,
        service,
        def.version,
        crate::service::grants::expiry_text(grant.expires_ms)
    ));
    crate::service::grants::store_with_entry(node, &grant, d)?;
    Ok(grant)
}

/// Every service this node knows.
pub fn list(node: &Node) -> Result<Vec<ServiceInfo>> {
    node.store
        .scan::<ServiceRecord>(CF_SERVICES, b"")?
        .into_iter()
        .map(|(_, r)| Ok(info(&r, &*r.definition(node.suite)?)))
        .collect()
}

/// A stored service and its definition.
pub fn service(
    node: &Node,
    id: &str,
) -> Result<Option<(ServiceRecord, std::sync::Arc<ServiceDef>)>> {
    match node
        .store
        .get::<ServiceRecord>(CF_SERVICES, store::service_key(id))?
    {
        None => Ok(None),
        Some(r) => {
            let d = r.definition(node.suite)?;
            Ok(Some((r, d)))
        }
    }
}

/// Stable error codes of calls (the gateway's `error.code`, docs/gateway.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CallCode {
    /// No grant (or an expired or revoked one) lets the caller use the service,
    /// or the hub's policy does not relay it.
    NotGranted,
    /// The provider (or the hub) could not be reached.
    Unreachable,
    /// No answer in time (the backend's timeout at the provider, or the
    /// call's deadline at the consumer).
    Timeout,
    /// The provider's backend failed.
    BackendError,
    /// The request violates the service definition (or is not JSON).
    InvalidRequest,
    /// The backend's answer violates the response schema; not forwarded.
    InvalidResponse,
    /// Too many calls: retry later.
    RateLimited,
    /// The gateway's bearer token is missing or wrong.
    Unauthorized,
    /// The body exceeds the service's limit.
    TooLarge,
    /// The service is not known here (`pdx service add`) or at the provider.
    NotFound,
    /// A signature, certificate or binding did not verify.
    Untrusted,
    /// Anything else (see the message).
    Internal,
}

impl CallCode {
    /// The code as written in JSON and audit entries.
    pub fn label(self) -> &'static str {
        match self {
            CallCode::NotGranted => "not-granted",
            CallCode::Unreachable => "unreachable",
            CallCode::Timeout => "timeout",
            CallCode::BackendError => "backend-error",
            CallCode::InvalidRequest => "invalid-request",
            CallCode::InvalidResponse => "invalid-response",
            CallCode::RateLimited => "rate-limited",
            CallCode::Unauthorized => "unauthorized",
            CallCode::TooLarge => "too-large",
            CallCode::NotFound => "not-found",
            CallCode::Untrusted => "untrusted",
            CallCode::Internal => "internal",
        }
    }

    /// The code for a protocol refusal.
    pub fn of_error(code: ErrorCode) -> Self {
        match code {
            ErrorCode::NotGranted | ErrorCode::GrantExpired | ErrorCode::GrantRevoked => {
                CallCode::NotGranted
            }
            ErrorCode::RateLimited => CallCode::RateLimited,
            ErrorCode::Unreachable => CallCode::Unreachable,
            ErrorCode::Timeout => CallCode::Timeout,
            ErrorCode::BadRequest => CallCode::InvalidRequest,
            ErrorCode::TooLarge => CallCode::TooLarge,
            ErrorCode::NotFound => CallCode::NotFound,
            ErrorCode::BadSignature | ErrorCode::Untrusted => CallCode::Untrusted,
            _ => CallCode::Internal,
        }
    }

    /// The code for a provider's signed outcome other than `ok`.
    pub fn of_outcome(o: crate::proto::call::Outcome) -> Self {
        use crate::proto::call::Outcome;
        match o {
            Outcome::Timeout => CallCode::Timeout,
            Outcome::InvalidResponse => CallCode::InvalidResponse,
            _ => CallCode::BackendError,
        }
    }
}

/// A call that did not produce a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFailure {
    /// Stable code.
    pub code: CallCode,
    /// What happened, where, and what to do (never a field value).
    pub message: String,
    /// The call id, when a request was signed.
    pub call_id: Option<String>,
}

impl CallFailure {
    /// A failure with `code`.
    pub fn new(code: CallCode, message: impl Into<String>) -> Self {
        CallFailure {
            code,
            message: message.into(),
            call_id: None,
        }
    }
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.label(), self.message)
    }
}

impl From<NodeError> for CallFailure {
    fn from(e: NodeError) -> Self {
        let code = match &e {
            NodeError::NotFound(_) => CallCode::NotFound,
            NodeError::Network(_) | NodeError::Peer { .. } => CallCode::Unreachable,
            NodeError::Refused(_) | NodeError::Rule(_) => CallCode::NotGranted,
            NodeError::Invalid(_) | NodeError::Schema(_) => CallCode::InvalidRequest,
            _ => CallCode::Internal,
        };
        CallFailure::new(code, e.to_string())
    }
}

impl From<CallFailure> for NodeError {
    fn from(f: CallFailure) -> Self {
        let text = f.to_string();
        match f.code {
            CallCode::NotFound => NodeError::NotFound(text),
            CallCode::Unreachable | CallCode::Timeout => NodeError::Network(text),
            CallCode::InvalidRequest | CallCode::TooLarge | CallCode::Unauthorized => {
                NodeError::Invalid(text)
            }
            CallCode::Internal => NodeError::Invalid(text),
            _ => NodeError::Refused(text),
        }
    }
}

/// Checks a signer's certificate (cached) and its signature over `signed`,
/// then decodes the body; returns it with who signed.
pub fn verify_signed<T: serde::de::DeserializeOwned>(
    node: &Node,
    signed: &Signed,
    certificate: &[u8],
    domain: pdx_crypto::SignatureDomain,
) -> Result<(T, crate::pki::CertInfo)> {
    let info = node.check_cert_cached(certificate)?;
    let body = signed.verify(domain, &info.identity)?;
    Ok((body, info))
}

/// What a hub and a provider check of every call before acting on it: the
/// signer's certificate and signature, that the signer is the consumer the
/// request names, and the request's structure. `from` is the connected
/// department (named in the refusal).
pub fn verified_request(
    node: &Node,
    from: &str,
    call: &crate::proto::call::Call,
) -> std::result::Result<(CallRequestBody, crate::pki::CertInfo), (ErrorCode, String)> {
    let (body, info) = verify_signed::<CallRequestBody>(
        node,
        &call.request,
        &call.certificate,
        pdx_crypto::SignatureDomain::CallRequest,
    )
    .map_err(|e| (ErrorCode::BadSignature, format!("request from {from}: {e}")))?;
    if info.dept != body.consumer {
        return Err((
            ErrorCode::Untrusted,
            format!(
                "request names consumer {} but is signed by {}",
                body.consumer, info.dept
            ),
        ));
    }
    body.check().map_err(|m| (ErrorCode::BadRequest, m.0))?;
    Ok((body, info))
}

/// Parsed definitions by source digest: a definition is parsed (regexes
/// compiled) once, not per call.
fn parsed(suite: pdx_crypto::Suite, source: &str, id: &str) -> Result<std::sync::Arc<ServiceDef>> {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};
    type Cache = HashMap<(pdx_crypto::Suite, Digest), Arc<ServiceDef>>;
    static DEFS: LazyLock<Mutex<Cache>> = LazyLock::new(Default::default);
    let key = (suite, suite.digest(source.as_bytes()));
    if let Some(d) = DEFS.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(d);
    }
    let d = Arc::new(ServiceDef::parse(
        source,
        &format!("stored service {id}"),
        suite,
    )?);
    if let Ok(mut m) = DEFS.lock() {
        m.insert(key, d.clone());
    }
    Ok(d)
}

// ---- JSON mapping ----

/// A JSON object's members as message values: strings as they are, numbers
/// in their JSON text, `null` as absent. Anything else is refused, naming the
/// field (never its value).
pub fn values_from_json(
    dir: Direction,
    json: &serde_json::Value,
) -> std::result::Result<Values, Vec<String>> {
    let Some(obj) = json.as_object() else {
        return Err(vec![format!(
            "the {} must be a JSON object of fields",
            dir.label()
        )]);
    };
    let mut values = Values::new();
    let mut problems = Vec::new();
    for (k, v) in obj {
        match v {
            serde_json::Value::String(s) => {
                values.insert(k.clone(), Some(s.clone()));
            }
            serde_json::Value::Number(n) => {
                values.insert(k.clone(), Some(n.to_string()));
            }
            serde_json::Value::Null => {
                values.insert(k.clone(), None);
            }
            _ => problems.push(format!(
                "{} field {k:?}: give a string, a number or null",
                dir.label()
            )),
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

/// Message values as a JSON object (every value a string, absent ones `null`).
pub fn values_to_json(def: &ServiceDef, dir: Direction, values: &Values) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for f in def.fields(dir) {
        let v = values
            .get(&f.field.name)
            .and_then(|v| v.clone())
            .map_or(serde_json::Value::Null, serde_json::Value::String);
        m.insert(f.field.name.clone(), v);
    }
    serde_json::Value::Object(m)
}

/// The suite's domain hash `"pdx/v1 call content"` of a message's values:
/// what "the same request" means for an idempotency key. Never leaves the
/// provider.
pub fn content_digest(
    suite: pdx_crypto::Suite,
    service: &str,
    version: u32,
    values: &Values,
) -> Result<Digest> {
    let bytes = to_cbor(&(service, version, values))?;
    let mut h = suite.hasher("pdx/v1 call content");
    h.update(&bytes);
    Ok(h.finalize())
}

// ---- what each party keeps ----

/// Who this node was in a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// It called.
    Consumer,
    /// It relayed (hub).
    Relay,
    /// It answered.
    Provider,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Consumer => b'c',
            Role::Relay => b'r',
            Role::Provider => b's',
        }
    }

    fn kind(self) -> EventKind {
        match self {
            Role::Consumer => EventKind::Call,
            Role::Relay => EventKind::CallRelay,
            Role::Provider => EventKind::CallServe,
        }
    }
}

/// A stored `ok` outcome, by (consumer, service, idempotency key). The
/// messages are sealed at rest; the time stays clear for the sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// When the outcome was stored (ms).
    pub time_ms: u64,
    /// Call id of the stored call (names the at-rest key).
    #[serde(with = "serde_bytes")]
    pub call_id: Vec<u8>,
    /// CBOR of [`StoredOutcome`], sealed.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

/// One call as this node recorded it (the time index; no field values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSummary {
    /// Call id (hex) the response is bound to.
    pub call_id: String,
    /// This node's role.
    pub role: Role,
    /// Service id.
    pub service: String,
    /// Version.
    pub version: u32,
    /// Calling department.
    pub consumer: String,
    /// Providing department.
    pub provider: String,
    /// The hub, when relayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// `ok`, a provider outcome, or the refusal's code.
    pub outcome: String,
    /// The idempotency key.
    pub idempotency_key: String,
    /// Digest of the signed request.
    pub request_digest: String,
    /// Digest of the signed response, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_digest: Option<String>,
    /// A stored response was returned for a repeated idempotency key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// When (ms since the epoch).
    pub time_ms: u64,
    /// Milliseconds this node spent on it.
    pub elapsed_ms: u64,
}

/// The signed messages of one call, sealed at rest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredCall {
    /// Summary.
    pub summary: CallSummary,
    /// The consumer's signed request (the one the response answers).
    pub request: Signed,
    /// The consumer's certificate.
    #[serde(with = "serde_bytes")]
    pub request_certificate: Vec<u8>,
    /// The provider's signed response.
    pub response: Option<Signed>,
    /// The provider's certificate.
    #[serde(default, with = "serde_bytes")]
    pub response_certificate: Vec<u8>,
    /// A retry's own signed request, when the answer was a replay.
    pub retry: Option<Signed>,
    /// The provider's `ok` response values in the clear, as its backend
    /// answered them (provider role only; sealed at rest like the rest,
    /// never exported): what it checks settlement records against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_values: Option<Values>,
}

fn storage_key(
    node: &Node,
    call_id: &[u8],
    role: Role,
    time_ms: u64,
) -> Result<pdx_crypto::atrest::ObjectKey> {
    let mut object = call_id.to_vec();
    object.push(role.byte());
    object.extend_from_slice(&time_ms.to_be_bytes());
    Ok(node
        .keys()?
        .storage
        .object_key("call-messages", &object, b"")?)
}

/// The write ops keeping a call (index + sealed messages).
fn keep_ops(node: &Node, call: &StoredCall) -> Result<Vec<StoreOp>> {
    let s = &call.summary;
    let id = hex::decode(&s.call_id).map_err(|_| NodeError::Invalid("call id".into()))?;
    let sealed = storage_key(node, &id, s.role, s.time_ms)?.seal_block(0, &to_cbor(call)?)?;
    Ok(vec![
        node.store.put_op(
            CF_CALLS,
            &store::call_index_key(s.time_ms, &id, s.role.byte()),
            s,
        )?,
        StoreOp::Put {
            cf: CF_CALLS,
            key: store::call_message_key(&id, s.role.byte(), s.time_ms),
            value: sealed,
        },
    ])
}

/// The audit entry of a call, for `role`.
fn entry(
    node: &Node,
    s: &CallSummary,
    def: Option<&ServiceDef>,
    opened: bool,
    grant: Option<&Grant>,
) -> Result<EntryDraft> {
    let role = s.role;
    let mut d = node.draft(role.kind(), crate::node::NODE_OPERATOR);
    let digest = Digest::from_hex(&s.request_digest)
        .ok_or_else(|| NodeError::Invalid("request digest".into()))?;
    d.subject = Subject {
        dataset: Some(s.service.clone()),
        release: Some(s.call_id.clone()),
        digest: Some(digest),
    };
    d.counterparty = Some(match role {
        Role::Consumer => s.provider.clone(),
        Role::Relay | Role::Provider => s.consumer.clone(),
    });
    d.payload_digest = s.response_digest.as_deref().and_then(Digest::from_hex);
    if let Some(g) = grant {
        d.purpose = Some(g.purpose.clone());
        d.agreement = g.agreement.clone();
    }
    d.detail = Some(format!(
        "consumer={} provider={} via={} outcome={} version={} key={}{}",
        s.consumer,
        s.provider,
        s.via.as_deref().unwrap_or("-"),
        s.outcome,
        s.version,
        s.idempotency_key,
        if s.replayed { " replayed" } else { "" }
    ));
    if let Some(def) = def {
        d.legal_basis = def.legal_basis.clone();
        // The fields this party handled: sealed ones only where it opened them.
        for (dir, f) in def
            .request
            .iter()
            .map(|f| (Direction::Request, f))
            .chain(def.response.iter().map(|f| (Direction::Response, f)))
        {
            let sealed = if f.sealed { "sealed" } else { "clear" };
            let seen = !f.sealed || opened;
            if seen {
                d.fields.push(FieldRef {
                    name: format!("{}.{}", dir.label(), f.field.name),
                    class: format!("{}/{sealed}", f.field.classification()),
                });
            }
        }
    }
    Ok(d)
}

/// Keeps a call and writes its audit entry, durably and together.
pub fn record(
    node: &Node,
    call: &StoredCall,
    def: Option<&ServiceDef>,
    opened: bool,
    grant: Option<&Grant>,
    extra: Vec<StoreOp>,
) -> Result<()> {
    let mut ops = keep_ops(node, call)?;
    ops.extend(extra);
    node.log_with(entry(node, &call.summary, def, opened, grant)?, ops)?;
    Ok(())
}

/// Summary of a signed request/response pair.
pub fn summary(
    role: Role,
    req: &CallRequestBody,
    request: &Signed,
    response: Option<(&CallResponseBody, &Signed)>,
    via: Option<String>,
    outcome: String,
    started: std::time::Instant,
) -> CallSummary {
    CallSummary {
        call_id: hex::encode(&req.call_id),
        role,
        service: req.service.clone(),
        version: req.version,
        consumer: req.consumer.clone(),
        provider: req.provider.clone(),
        via,
        outcome,
        idempotency_key: req.idempotency_key.clone(),
        request_digest: request.digest().to_hex(),
        response_digest: response.map(|(_, s)| s.digest().to_hex()),
        replayed: false,
        time_ms: now_ms(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// `pdx calls list`: filters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CallFilter {
    /// Only this service.
    pub service: Option<String>,
    /// Only calls with this department (consumer or provider).
    pub peer: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only since (ms).
    pub since_ms: Option<u64>,
    /// At most this many, newest last.
    pub limit: Option<usize>,
}

/// Calls recorded here, oldest first, filtered.
pub fn list_calls(node: &Node, f: &CallFilter) -> Result<Vec<CallSummary>> {
    let from = f
        .since_ms
        .map(|t| store::call_index_key(t, &[], 0))
        .unwrap_or_else(|| store::CALL_INDEX_PREFIX.to_vec());
    let mut out = std::collections::VecDeque::new();
    let iter = node.store.db().iterator_cf(
        node.store.cf(CF_CALLS)?,
        rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward),
    );
    for item in iter {
        let (k, v) = item?;
        if !k.starts_with(store::CALL_INDEX_PREFIX) {
            break;
        }
        let s: CallSummary =
            from_cbor(&v, "call summary").map_err(|e| NodeError::corrupt("calls/index", e))?;
        let keep = f.service.as_ref().is_none_or(|x| &s.service == x)
            && f.peer
                .as_ref()
                .is_none_or(|p| &s.consumer == p || &s.provider == p)
            && f.outcome.as_ref().is_none_or(|o| &s.outcome == o);
        if keep {
            out.push_back(s);
            if f.limit.is_some_and(|l| out.len() > l) {
                out.pop_front();
            }
        }
    }
    Ok(out.into())
}

/// One call's messages as kept (every role this node had), opened from rest.
pub fn stored(node: &Node, call_id: &str) -> Result<Vec<StoredCall>> {
    let id = hex::decode(call_id)
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or_else(|| {
            NodeError::Invalid(format!("{call_id:?} is not a call id (32 hex digits)"))
        })?;
    let mut prefix = store::CALL_MESSAGE_PREFIX.to_vec();
    prefix.extend_from_slice(&id);
    let mut out = Vec::new();
    node.store.scan_raw(CF_CALLS, &prefix, |k, v| {
        let (role, time) = (k[17], &k[18..]);
        let role = match role {
            b'c' => Role::Consumer,
            b'r' => Role::Relay,
            _ => Role::Provider,
        };
        let time = u64::from_be_bytes(
            time.try_into()
                .map_err(|_| NodeError::corrupt("calls/messages", "key length"))?,
        );
        let plain = storage_key(node, &id, role, time)?.open_block(0, v)?;
        out.push(
            from_cbor::<StoredCall>(&plain, "stored call")
                .map_err(|e| NodeError::corrupt("calls/messages", e))?,
        );
        Ok(true)
    })?;
    if out.is_empty() {
        return Err(NodeError::NotFound(format!(
            "no call {call_id} here (kept {} days); `pdx calls list` shows them",
            node.config.services.retention_days
        )));
    }
    Ok(out)
}

/// What `pdx calls show` prints: the summaries and both signed messages'
/// digests and signers; sealed field values stay sealed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallShown {
    /// One per role this node had in the call.
    pub records: Vec<CallSummary>,
}

/// `pdx calls export`: a dispute file holding the signed messages, checkable
/// offline with the network CA (`pdx calls verify`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DisputeFile {
    /// Format tag.
    pub format: String,
    /// Exporting department.
    pub exported_by: String,
    /// The calls.
    pub calls: Vec<StoredCall>,
}

/// The format tag of dispute files.
pub const DISPUTE_FORMAT: &str = "pdx-call-evidence/1";

/// Writes the signed messages of `call_ids` to `out` (audited as an export).
pub fn export(node: &Node, call_ids: &[String], out: &str, operator: &str) -> Result<usize> {
    let mut calls = Vec::new();
    for id in call_ids {
        // Evidence carries the signed messages only, never values in the clear.
        calls.extend(stored(node, id)?.into_iter().map(|mut c| {
            c.response_values = None;
            c
        }));
    }
    let file = DisputeFile {
        format: DISPUTE_FORMAT.into(),
        exported_by: node.config.dept.clone(),
        calls,
    };
    let bytes = to_cbor(&file)?;
    let mut d = node.draft(EventKind::Export, operator);
    d.subject.digest = Some(node.suite.digest(&bytes));
    d.record_count = Some(file.calls.len() as u64);
    d.detail = Some(format!(
        "call evidence of {} call(s) to {out}",
        call_ids.len()
    ));
    node.log(d)?;
    crate::config::write_atomic(std::path::Path::new(out), &bytes, 0o600)?;
    Ok(file.calls.len())
}

/// One call of an evidence file, as checked offline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvidenceVerdict {
    /// Call id the response is bound to.
    pub call_id: String,
    /// The role of the exporting node in it.
    pub role: Role,
    /// Consumer (from the request's certificate).
    pub consumer: String,
    /// Provider (from the response's certificate), when answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's signed outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Request digest.
    pub request_digest: String,
    /// Response digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_digest: Option<String>,
    /// `valid` or what failed.
    pub verdict: String,
}

fn check_evidence(
    checker: &crate::pki::CertChecker,
    c: &StoredCall,
) -> std::result::Result<EvidenceVerdict, String> {
    use crate::proto::call::{CallRequestBody, CallResponseBody};
    use pdx_crypto::SignatureDomain;
    // Certificates are judged at the time their holder signed.
    let at = |ms: u64| {
        rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_millis(ms))
    };
    let unverified: CallRequestBody = c
        .request
        .dangerous_decode_unverified("request")
        .map_err(|e| format!("request: {e}"))?;
    let info = checker
        .check_at(&c.request_certificate, at(unverified.time_ms))
        .map_err(|e| format!("request certificate: {e}"))?;
    let req: CallRequestBody = c
        .request
        .verify(SignatureDomain::CallRequest, &info.identity)
        .map_err(|e| format!("request signature: {e}"))?;
    if req.consumer != info.dept {
        return Err(format!(
            "request names {} but {} signed it",
            req.consumer, info.dept
        ));
    }
    let mut v = EvidenceVerdict {
        call_id: hex::encode(&req.call_id),
        role: c.summary.role,
        consumer: req.consumer.clone(),
        provider: None,
        outcome: None,
        request_digest: c.request.digest().to_hex(),
        response_digest: None,
        verdict: "valid".into(),
    };
    if let Some(resp) = &c.response {
        let unverified: CallResponseBody = resp
            .dangerous_decode_unverified("response")
            .map_err(|e| format!("response: {e}"))?;
        let pinfo = checker
            .check_at(&c.response_certificate, at(unverified.time_ms))
            .map_err(|e| format!("response certificate: {e}"))?;
        let body: CallResponseBody = resp
            .verify(SignatureDomain::CallResponse, &pinfo.identity)
            .map_err(|e| format!("response signature: {e}"))?;
        if body.provider != pinfo.dept || req.provider != pinfo.dept {
            return Err(format!(
                "response signed by {}, not the provider {}",
                pinfo.dept, req.provider
            ));
        }
        body.check_answers(&req, &c.request.digest())
            .map_err(|m| format!("binding: {}", m.0))?;
        v.provider = Some(pinfo.dept);
        v.outcome = Some(body.outcome.label().to_string());
        v.response_digest = Some(resp.digest().to_hex());
    }
    Ok(v)
}

/// `pdx calls verify --file F --ca CA` (offline, e.g. for a dispute): every
/// call's certificates (against the CA, at signing time), signatures and the
/// binding of response to request. Returns one verdict per call.
pub fn verify_evidence(file: &str, ca_pem: &str) -> Result<Vec<EvidenceVerdict>> {
    let path = std::path::Path::new(file);
    let bytes = std::fs::read(path).map_err(NodeError::io(path))?;
    let evidence: DisputeFile = from_cbor(&bytes, "call evidence")
        .map_err(|e| NodeError::Invalid(format!("{file}: not a call evidence file: {e}")))?;
    if evidence.format != DISPUTE_FORMAT {
        return Err(NodeError::Invalid(format!(
            "{file}: format {:?}, expected {DISPUTE_FORMAT:?}",
            evidence.format
        )));
    }
    let ca = crate::pki::read_certs(std::path::Path::new(ca_pem))?;
    let checker = crate::pki::CertChecker::new(&ca, Vec::new())?;
    Ok(evidence
        .calls
        .iter()
        .map(|c| {
            check_evidence(&checker, c).unwrap_or_else(|why| EvidenceVerdict {
                call_id: c.summary.call_id.clone(),
                role: c.summary.role,
                consumer: c.summary.consumer.clone(),
                provider: Some(c.summary.provider.clone()),
                outcome: None,
                request_digest: c.summary.request_digest.clone(),
                response_digest: c.summary.response_digest.clone(),
                verdict: format!("invalid: {why}"),
            })
        })
        .collect())
}

/// Deletes kept calls older than the retention period and idempotency
/// outcomes older than their window. Returns (calls, outcomes) removed.
pub fn sweep(node: &Node) -> Result<(usize, usize)> {
    let day = 86_400_000u64;
    let now = now_ms();
    let s = &node.config.services;
    let calls_before = now.saturating_sub(u64::from(s.retention_days) * day);
    let keys_before = now.saturating_sub(u64::from(s.idempotency_days) * day);
    let mut batch = rocksdb::WriteBatch::default();
    let cf = node.store.cf(CF_CALLS)?;
    let (mut calls, mut outcomes) = (0usize, 0usize);
    node.store
        .scan_raw(CF_CALLS, store::CALL_INDEX_PREFIX, |k, _| {
            let t = u64::from_be_bytes(
                k[1..9]
                    .try_into()
                    .map_err(|_| NodeError::corrupt("calls/index", "key length"))?,
            );
            if t >= calls_before {
                return Ok(false);
            }
            batch.delete_cf(cf, k);
            batch.delete_cf(cf, store::call_message_key(&k[9..25], k[25], t));
            calls += 1;
            Ok(true)
        })?;
    node.store
        .scan_raw(CF_CALLS, store::IDEMPOTENCY_PREFIX, |k, v| {
            if let Ok(o) = from_cbor::<IdempotencyRecord>(v, "idempotency record")
                && o.time_ms < keys_before
            {
                batch.delete_cf(cf, k);
                outcomes += 1;
            }
            Ok(true)
        })?;
    let markers = records::sweep_markers(node, keys_before, &mut batch)?;
    if calls + outcomes + markers > 0 {
        node.store.write(batch)?;
    }
    Ok((calls, outcomes))
}
