//! A real HTTP+JSON backend for the settlement calculation service
//! (`schemas/medical_insurance/settlement_calc.toml`): what an insured
//! province's business system answers, for tests, `pdx-testnet backend` and
//! the call benchmark. Its behaviour can be switched while it runs
//! (`POST /mode/{ok|slow|error|invalid|huge}`), and it counts the calculations
//! it made (`GET /count`), so a test can prove the backend saw exactly one call.
//!
//! Calculation (deterministic, in fen): deductible 800.00 for inpatient visits
//! (med_type 2x), 0 otherwise; the fund pays 70% of what exceeds it, the
//! personal account pays nothing, the patient pays the rest; the annual cap is
//! 300,000.00.

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

/// How the backend behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Correct answers.
    Ok = 0,
    /// Correct answers after 10 s (beyond any test's timeout).
    Slow = 1,
    /// HTTP 500.
    Error = 2,
    /// A body that violates the response schema.
    Invalid = 3,
    /// A body larger than the service's response limit.
    Huge = 4,
}

impl Mode {
    /// Parses a mode name.
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "ok" => Mode::Ok,
            "slow" => Mode::Slow,
            "error" => Mode::Error,
            "invalid" => Mode::Invalid,
            "huge" => Mode::Huge,
            _ => return None,
        })
    }
}

#[derive(Default)]
struct Shared {
    mode: AtomicU8,
    count: AtomicU64,
}

fn fen(v: &Value, name: &str) -> Option<i64> {
    let s = v.get(name)?.as_str()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<2}");
    int.parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac.get(..2)?.parse::<i64>().ok()?)
}

fn yuan(f: i64) -> String {
    format!("{}.{:02}", f / 100, f % 100)
}

/// The settlement calculation for one request, or why it cannot be made.
pub fn calculate(req: &Value) -> Option<Value> {
    let total = fen(req, "medfee_sumamt")?;
    let inpatient = req.get("med_type")?.as_str()?.starts_with('2');
    let deductible = if inpatient { 80_000 } else { 0 }.min(total);
    let fund = (total - deductible).checked_mul(70)? / 100;
    let cash = total - fund;
    Some(json!({
        "setl_status": "1",
        "fund_pay_sumamt": yuan(fund),
        "acct_pay": "0.00",
        "psn_cash_pay": yuan(cash),
        "deductible": yuan(deductible),
        "cap_remaining": yuan(30_000_000 - fund),
    }))
}

async fn calc(State(s): State<Arc<Shared>>, Json(req): Json<Value>) -> Response {
    let mode = s.mode.load(Ordering::SeqCst);
    s.count.fetch_add(1, Ordering::SeqCst);
    match mode {
        m if m == Mode::Slow as u8 => tokio::time::sleep(Duration::from_secs(10)).await,
        m if m == Mode::Error as u8 => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "backend failure").into_response();
        }
        m if m == Mode::Invalid as u8 => {
            return Json(json!({"setl_status": "7", "fund_pay_sumamt": "lots"})).into_response();
        }
        m if m == Mode::Huge as u8 => {
            return Json(json!({"setl_status": "1", "padding": "x".repeat(100_000)}))
                .into_response();
        }
        _ => {}
    }
    match calculate(&req) {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::BAD_REQUEST, "missing fees").into_response(),
    }
}

async fn set_mode(State(s): State<Arc<Shared>>, Path(mode): Path<String>) -> Response {
    match Mode::parse(&mode) {
        Some(m) => {
            s.mode.store(m as u8, Ordering::SeqCst);
            "ok\n".into_response()
        }
        None => (StatusCode::BAD_REQUEST, "unknown mode").into_response(),
    }
}

async fn count(State(s): State<Arc<Shared>>) -> String {
    format!("{}\n", s.count.load(Ordering::SeqCst))
}

/// Serves the backend on `listen` until the process ends; prints the address.
pub fn run(listen: &str, mode: Mode) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shared = Arc::new(Shared::default());
        shared.mode.store(mode as u8, Ordering::SeqCst);
        let app = Router::new()
            .route("/calc", post(calc))
            .route("/mode/{mode}", post(set_mode))
            .route("/count", get(count))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        println!(
            "backend listening on http://{}/calc",
            listener.local_addr()?
        );
        axum::serve(listener, app).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calculation_adds_up() -> Result<()> {
        let v = calculate(&json!({"medfee_sumamt": "1800.00", "med_type": "21"}))
            .context("no answer")?;
        assert_eq!(v["deductible"], "800.00");
        assert_eq!(v["fund_pay_sumamt"], "700.00");
        assert_eq!(v["psn_cash_pay"], "1100.00");
        let v = calculate(&json!({"medfee_sumamt": "99.5", "med_type": "11"})).context("no")?;
        assert_eq!(v["fund_pay_sumamt"], "69.65");
        Ok(())
    }
}
