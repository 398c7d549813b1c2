//! `pdx-testnet bench calls`: online calls on real processes, consumer
//! gateway -> hub -> provider -> backend and back, with durable audit at all
//! three nodes, against the same backend called directly (the baseline).
//!
//! Two measurements per target: sustained throughput (closed loop, a fixed
//! number of concurrent callers for a fixed time) and latency at a fixed
//! offered rate (open loop: request i is due at start + i/rate, its latency
//! runs from that due time, so queueing is never hidden). Afterwards every
//! node's audit bundle is exported and reconciled.

use crate::Testnet;
use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONSUMER: &str = "440000";
const HUB: &str = "100000";
const PROVIDER: &str = "110000";
const SERVICE: &str = "medical_insurance.settlement_calc";

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds of the closed-loop throughput run.
    pub seconds: u64,
    /// Concurrent callers of the throughput run.
    pub concurrency: usize,
    /// Offered rate of the latency run (calls per second).
    pub rate: u64,
    /// Calls of the latency run.
    pub calls: u64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Target {
    url: String,
    token: Option<String>,
}

fn request_body(i: u64) -> Vec<u8> {
    json!({
        "mdtrt_id": format!("MD{i:010}"),
        "psn_no": format!("PSN{i:010}"),
        "certno": "11010519491231002X",
        "psn_name": "测试",
        "insuplc_admdvs": "110105",
        "mdtrtarea_admvs": "440106",
        "fixmedins_code": "H44010600001",
        "med_type": "21",
        "begndate": "2026-11-02",
        "enddate": "2026-11-09",
        "diag_code": "J18.900",
        "medfee_sumamt": "1800.00",
        "drug_fee": "400.00",
        "exam_fee": "300.00",
        "treat_fee": "500.00",
        "material_fee": "100.00",
        "other_fee": "500.00",
    })
    .to_string()
    .into_bytes()
}

async fn one(client: &HttpClient, t: &Target, i: u64) -> bool {
    let mut req = hyper::Request::post(&t.url).header("content-type", "application/json");
    if let Some(tok) = &t.token {
        req = req
            .header("authorization", format!("Bearer {tok}"))
            .header("idempotency-key", format!("BENCH-{i}"));
    }
    let Ok(req) = req.body(Full::new(Bytes::from(request_body(i)))) else {
        return false;
    };
    match client.request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            ok && resp.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn throughput(client: &HttpClient, t: Arc<Target>, o: &Options, base: u64) -> Value {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(base));
    let end = Instant::now() + Duration::from_secs(o.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.concurrency {
        let (c, t, done, failed, next) = (
            client.clone(),
            t.clone(),
            done.clone(),
            failed.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if one(&c, &t, i).await {
                    done.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::SeqCst);
    json!({
        "calls": n,
        "failed": failed.load(Ordering::SeqCst),
        "seconds": secs,
        "calls_per_second": n as f64 / secs,
        "concurrency": o.concurrency,
    })
}

async fn latency(client: &HttpClient, t: Arc<Target>, o: &Options, base: u64) -> Value {
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(o.calls as usize);
    for i in 0..o.calls {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / o.rate.max(1));
        let (c, t) = (client.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let ok = one(&c, &t, base + i).await;
            (ok, due.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut failed = 0u64;
    for t in tasks {
        match t.await {
            Ok((true, ms)) => lat.push(ms),
            _ => failed += 1,
        }
    }
    lat.sort_by(f64::total_cmp);
    json!({
        "offered_per_second": o.rate,
        "calls": lat.len(),
        "failed": failed,
        "p50_ms": percentile(&lat, 0.50),
        "p90_ms": percentile(&lat, 0.90),
        "p99_ms": percentile(&lat, 0.99),
        "max_ms": lat.last().copied().unwrap_or(f64::NAN),
    })
}

struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sets up consumer, hub, provider and backend under `dir`, measures, reconciles.
pub fn run(dir: &Path, schema: &Path, o: &Options) -> Result<Value> {
    let mut net = Testnet::create(dir, "bench")?;
    for (d, n) in [
        (HUB, "national platform"),
        (CONSUMER, "Guangdong"),
        (PROVIDER, "Beijing"),
    ] {
        net.add_node(d, n)?;
    }
    net.connect_all()?;
    let backend_addr = format!("127.0.0.1:{}", crate::free_port()?);
    let bin = crate::pdx_bin()?.with_file_name("pdx-testnet");
    let backend = Backend(
        Command::new(bin)
            .args(["backend", "--listen", &backend_addr])
            .stdout(Stdio::null())
            .spawn()
            .context("starting the backend")?,
    );
    let gateway = format!("127.0.0.1:{}", crate::free_port()?);
    let home = |d: &str| net.home(d);
    let schema = schema.display().to_string();
    net.pdx_ok(&[
        "gateway",
        "relay",
        "--home",
        &home(HUB)?,
        "--from",
        "*",
        "--to",
        "*",
    ])?;
    net.pdx_ok(&[
        "gateway",
        "route",
        "--home",
        &home(CONSUMER)?,
        "--to",
        "11*",
        "--via",
        HUB,
    ])?;
    net.pdx_ok(&[
        "gateway",
        "enable",
        "--home",
        &home(CONSUMER)?,
        "--listen",
        &gateway,
    ])?;
    for d in [HUB, PROVIDER] {
        net.lift_call_limits(d)?;
    }
    net.start_all()?;
    let home = |d: &str| net.home(d);
    net.pdx_ok(&[
        "service",
        "publish",
        "--home",
        &home(PROVIDER)?,
        "--schema",
        &schema,
        "--service",
        SERVICE,
        "--backend",
        &format!("http://{backend_addr}/calc"),
    ])?;
    net.pdx_ok(&[
        "service",
        "add",
        "--home",
        &home(CONSUMER)?,
        "--schema",
        &schema,
        "--service",
        SERVICE,
    ])?;
    net.pdx_ok(&[
        "grant",
        "--home",
        &home(PROVIDER)?,
        "--service",
        SERVICE,
        "--to",
        CONSUMER,
        "--purpose",
        "benchmark",
        "--agreement",
        "BENCH",
        "--expires",
        "+1d",
    ])?;
    net.pdx_ok(&["keys", "fetch", "--home", &home(HUB)?, "--peer", PROVIDER])?;
    let token = std::fs::read_to_string(Path::new(&home(CONSUMER)?).join("gateway.token"))?
        .trim()
        .to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(4096)
            .build(connector);
        let pdx = Arc::new(Target {
            url: format!("http://{gateway}/v1/services/{PROVIDER}/{SERVICE}"),
            token: Some(token),
        });
        let direct = Arc::new(Target {
            url: format!("http://{backend_addr}/calc"),
            token: None,
        });
        // Warm up connections and caches.
        for i in 0..50 {
            if !one(&client, &pdx, 900_000_000 + i).await {
                bail!("warm-up call {i} through the gateway failed");
            }
        }
        let d_tp = throughput(&client, direct.clone(), o, 0).await;
        let d_lat = latency(&client, direct.clone(), o, 0).await;
        let p_tp = throughput(&client, pdx.clone(), o, 1_000_000).await;
        let p_lat = latency(&client, pdx.clone(), o, 100_000_000).await;
        Ok(json!({"direct": {"throughput": d_tp, "latency": d_lat}, "pdx": {"throughput": p_tp, "latency": p_lat}}))
    })?;
    drop(backend);
    let mut bundles = Vec::new();
    for d in [CONSUMER, HUB, PROVIDER] {
        let b = dir.join(format!("{d}.bundle")).display().to_string();
        net.pdx_ok(&["audit", "export", "--home", &home(d)?, "--out", &b])?;
        bundles.push(b);
    }
    let mut args = vec!["audit", "reconcile"];
    args.extend(bundles.iter().map(String::as_str));
    let rec = net.pdx_json(&args)?;
    net.stop_all(Duration::from_secs(10))?;
    let ratio =
        |a: &Value, b: &Value| a.as_f64().unwrap_or(f64::NAN) / b.as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "results": result,
        "throughput_ratio": ratio(&result["pdx"]["throughput"]["calls_per_second"], &result["direct"]["throughput"]["calls_per_second"]),
        "p50_ratio": ratio(&result["pdx"]["latency"]["p50_ms"], &result["direct"]["latency"]["p50_ms"]),
        "p99_ratio": ratio(&result["pdx"]["latency"]["p99_ms"], &result["direct"]["latency"]["p99_ms"]),
        "reconcile": {"clean": rec["clean"], "calls_matched": rec["calls_matched"], "mismatches": rec["mismatches"].as_array().map_or(0, Vec::len)},
    }))
}
