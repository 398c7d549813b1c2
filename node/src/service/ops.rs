//! The operations listener of a running node (`[operations] metrics`, off by
//! default): `GET /metrics` (OpenMetrics text, [`crate::metrics`]) and
//! `GET /health`. Plain HTTP, loopback unless `metrics_allow_remote`; it
//! serves no data and takes no command.

use super::{Services, blocking};
use crate::error::{NodeError, Result};
use crate::node::Node;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Checks a metrics address: it parses, and is loopback unless allowed.
pub fn check_addr(addr: &str, allow_remote: bool) -> Result<SocketAddr> {
    let a: SocketAddr = addr.parse().map_err(|e| {
        NodeError::Invalid(format!(
            "operations.metrics {addr:?}: {e} (use HOST:PORT, e.g. {})",
            crate::config::DEFAULT_METRICS_ADDR
        ))
    })?;
    if !a.ip().is_loopback() && !allow_remote {
        return Err(NodeError::Invalid(format!(
            "operations.metrics {addr}: not a loopback address; the metrics name peers and volumes, so set operations.metrics_allow_remote = true only behind a firewall or a TLS proxy"
        )));
    }
    Ok(a)
}

/// What a scrape reads (blocks: store properties, the CRL file).
pub fn scrape(node: &Node) -> Result<crate::metrics::Scrape> {
    let db = node.store.db();
    let (mut store_bytes, mut pending) = (0i64, 0i64);
    // Summed over the families: the DB-wide properties cover `default` only.
    for name in crate::store::all_families() {
        if let Some(cf) = db.cf_handle(name) {
            let p = |n: &str| {
                db.property_int_value_cf(&cf, n)
                    .ok()
                    .flatten()
                    .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                    .unwrap_or(0)
            };
            store_bytes = store_bytes.saturating_add(p("rocksdb.total-sst-files-size"));
            pending = pending.saturating_add(p("rocksdb.estimate-pending-compaction-bytes"));
        }
    }
    Ok(crate::metrics::Scrape {
        audit_entries: node.audit.size(),
        store_bytes,
        pending_compaction_bytes: pending,
        cert_not_after_ms: crate::pki::validity(&node.cert()?)?.not_after_ms,
        crl: crate::pki::installed_crl_times(&node.home)?,
        checkpoint_time_ms: node.audit.latest_checkpoint()?.peek()?.time_ms,
        cosignatures: if node.metrics.needs_cosignatures() {
            Some(latest_cosignatures(node)?)
        } else {
            None
        },
    })
}

/// The latest cosignature of this node's log per witness department:
/// (size, time ms).
pub fn latest_cosignatures(node: &Node) -> Result<HashMap<String, (u64, u64)>> {
    let mut map: HashMap<String, (u64, u64)> = HashMap::new();
    for c in node.audit.received_cosignatures()? {
        // Verified when stored (service::witnessing::store_cosignature).
        let Ok(body) = c
            .signed
            .dangerous_decode_unverified::<pdx_audit::checkpoint::Cosignature>("cosignature")
        else {
            continue;
        };
        let witness = pdx_audit::LogId::parse(&body.witness)
            .map(|l| l.dept)
            .unwrap_or(body.witness.clone());
        let e = map.entry(witness).or_insert((body.size, body.time_ms));
        if body.time_ms >= e.1 {
            *e = (body.size, body.time_ms);
        }
    }
    Ok(map)
}

async fn metrics(State(svc): State<Arc<Services>>) -> Response {
    let node = svc.node.clone();
    let rendered = blocking(move || {
        let s = scrape(&node)?;
        node.metrics
            .render(s)
            .map_err(|e| NodeError::Invalid(format!("encoding metrics: {e}")))
    })
    .await;
    match rendered {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics unavailable: {e}\n"),
        )
            .into_response(),
    }
}

async fn health() -> &'static str {
    "ok\n"
}

/// Binds the listener; returns its address and the future serving it.
pub async fn bind(
    svc: Arc<Services>,
    addr: &str,
) -> Result<(
    SocketAddr,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let a = check_addr(addr, svc.node.config.operations.metrics_allow_remote)?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(svc);
    serve_http("metrics", a.to_string(), app).await
}

/// Binds a local HTTP listener for `app` (`what` names it in errors and
/// logs); returns its address and the future serving it.
pub(crate) async fn serve_http(
    what: &'static str,
    addr: String,
    app: Router,
) -> Result<(
    SocketAddr,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| NodeError::Network(format!("{what} cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| NodeError::Network(format!("{what} address: {e}")))?;
    Ok((local, async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("{what} listener stopped: {e}");
        }
    }))
}
