//! The provider's own business system: an HTTP+JSON endpoint the node POSTs
//! the opened request to (hyper's pooled client, keep-alive, no TLS: the
//! backend sits on the department's own network, loopback in tests).
//!
//! Request: `POST URL`, `content-type: application/json`, the request fields
//! as a JSON object, and headers `x-pdx-consumer`, `x-pdx-service`,
//! `x-pdx-call-id`, `idempotency-key`. Answer: status 2xx with a JSON object
//! of response fields; anything else is a backend error.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// What the backend did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendReply {
    /// 2xx with this body.
    Body(Vec<u8>),
    /// Another status.
    Status(u16),
    /// The body exceeded the service's response limit.
    TooLarge(u32),
    /// No connection or a broken exchange.
    Unreachable(String),
    /// No complete answer within the timeout.
    Timeout,
}

/// A pooled HTTP/1.1 client for backends.
pub struct Backend {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backend")
    }
}

impl Default for Backend {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Backend {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build(connector),
        }
    }
}

impl Backend {
    /// POSTs `body` to `url`; the whole exchange (connect, answer, body) is
    /// bounded by `timeout`, the answer's body by `max_bytes`.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
        timeout: Duration,
        max_bytes: u32,
    ) -> BackendReply {
        let exchange = async {
            let mut req = hyper::Request::post(url).header("content-type", "application/json");
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            let req = match req.body(Full::new(Bytes::from(body))) {
                Ok(r) => r,
                Err(e) => {
                    return BackendReply::Unreachable(format!("cannot build the request: {e}"));
                }
            };
            let resp = match self.client.request(req).await {
                Ok(r) => r,
                Err(e) => return BackendReply::Unreachable(format!("{url}: {e}")),
            };
            let status = resp.status();
            let limited = Limited::new(resp.into_body(), max_bytes as usize);
            let bytes = match limited.collect().await {
                Ok(c) => c.to_bytes(),
                Err(e)
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    return BackendReply::TooLarge(max_bytes);
                }
                Err(e) => {
                    return BackendReply::Unreachable(format!("{url}: reading the answer: {e}"));
                }
            };
            if status.is_success() {
                BackendReply::Body(bytes.to_vec())
            } else {
                BackendReply::Status(status.as_u16())
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(BackendReply::Timeout)
    }
}
