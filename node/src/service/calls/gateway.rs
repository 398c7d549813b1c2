//! The local HTTP gateway of a running node (`services.gateway`, off by
//! default): the department's own systems call other departments' services
//! with JSON in, JSON out (specified in `docs/gateway.md`).
//!
//! `POST /v1/services/{dept}/{service}` with `Authorization: Bearer TOKEN`
//! (the token file is 0600 in the home), optional `Idempotency-Key` and
//! `X-Pdx-Via` headers, and a JSON object of request fields. The request is
//! validated against the service definition before anything leaves the node.
//! `GET /v1/health` answers without a token.

use super::consumer::{CallSpec, call};
use super::{CallCode, CallFailure};
use crate::error::{NodeError, Result};
use crate::service::Services;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Limited};
use std::net::SocketAddr;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Largest body the gateway reads (the largest limit a definition may set).
pub const MAX_GATEWAY_BODY: usize = pdx_schemas::service::MAX_BODY_LIMIT as usize;

#[derive(Clone)]
struct Gw {
    svc: Arc<Services>,
    token: Arc<blake3::Hash>,
}

/// The HTTP status of each call error code.
pub fn status_of(code: CallCode) -> StatusCode {
    match code {
        CallCode::NotGranted => StatusCode::FORBIDDEN,
        CallCode::Unreachable
        | CallCode::BackendError
        | CallCode::InvalidResponse
        | CallCode::Untrusted => StatusCode::BAD_GATEWAY,
        CallCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        CallCode::InvalidRequest => StatusCode::BAD_REQUEST,
        CallCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        CallCode::Unauthorized => StatusCode::UNAUTHORIZED,
        CallCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        CallCode::NotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(f: CallFailure) -> Response {
    let body = serde_json::json!({
        "error": {
            "code": f.code.label(),
            "message": f.message,
            "call_id": f.call_id,
        }
    });
    (status_of(f.code), Json(body)).into_response()
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(
    State(gw): State<Gw>,
    Path((dept, service)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let presented = header(&headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
        .unwrap_or_default();
    // Digests compare in constant time; the token itself is never compared.
    if blake3::hash(presented.as_bytes()) != *gw.token {
        return error_response(CallFailure::new(
            CallCode::Unauthorized,
            "missing or wrong bearer token (Authorization: Bearer <contents of the gateway token file>)",
        ));
    }
    let bytes = match Limited::new(body, MAX_GATEWAY_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return error_response(CallFailure::new(
                CallCode::TooLarge,
                format!("the body exceeds the gateway's {MAX_GATEWAY_BODY} bytes"),
            ));
        }
        Err(e) => {
            return error_response(CallFailure::new(
                CallCode::InvalidRequest,
                format!("reading the body: {e}"),
            ));
        }
    };
    let Ok(text) = String::from_utf8(bytes.to_vec()) else {
        return error_response(CallFailure::new(
            CallCode::InvalidRequest,
            "the body is not UTF-8 JSON",
        ));
    };
    let spec = CallSpec {
        to: dept,
        service,
        body: text,
        via: header(&headers, "x-pdx-via"),
        idempotency_key: header(&headers, "idempotency-key"),
    };
    match call(&gw.svc, spec).await {
        Ok(r) => (StatusCode::OK, Json(r)).into_response(),
        Err(f) => error_response(f),
    }
}

async fn health() -> &'static str {
    "ok\n"
}

/// Reads the gateway token (0600 enforced).
pub fn load_token(svc: &Services) -> Result<Zeroizing<String>> {
    let path = svc
        .node
        .home
        .root()
        .join(&svc.node.config.services.gateway_token_file);
    let raw = crate::config::read_secret(&path)?;
    let text = String::from_utf8(raw.to_vec())
        .map_err(|_| NodeError::Invalid(format!("{}: not text", path.display())))?;
    let token = Zeroizing::new(text.trim().to_string());
    if token.len() < 32 {
        return Err(NodeError::Invalid(format!(
            "{}: the token must have at least 32 characters (`pdx gateway enable` writes one)",
            path.display()
        )));
    }
    Ok(token)
}

/// Binds the gateway; returns its address and the future serving it.
pub async fn bind(
    svc: Arc<Services>,
    addr: &str,
) -> Result<(
    SocketAddr,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let token = load_token(&svc)?;
    let gw = Gw {
        svc,
        token: Arc::new(blake3::hash(token.as_bytes())),
    };
    let app = Router::new()
        .route("/v1/services/{dept}/{service}", post(handle))
        .route("/v1/health", get(health))
        .with_state(gw);
    crate::service::ops::serve_http("gateway", addr.to_string(), app).await
}

/// `pdx gateway enable`: sets the gateway address and writes a token file
/// (0600) when there is none. Takes effect at the next `pdx serve`.
pub fn enable(home: &crate::config::Home, listen: &str) -> Result<(String, String)> {
    let _: SocketAddr = listen.parse().map_err(|e| {
        NodeError::Invalid(format!(
            "--listen {listen}: {e} (give IP:PORT, e.g. 127.0.0.1:8080)"
        ))
    })?;
    let mut cfg = crate::config::Config::load(home)?;
    cfg.services.gateway = Some(listen.to_string());
    let path = home.root().join(&cfg.services.gateway_token_file);
    if !path.exists() {
        let token = Zeroizing::new(hex::encode(pdx_crypto::rng::bytes::<32>()?));
        crate::config::write_secret(&path, token.as_bytes())?;
    }
    cfg.save(home)?;
    Ok((listen.to_string(), path.display().to_string()))
}
