//! A real HTTP+JSON backend for the settlement calculation service
//! (`schemas/medical_insurance/settlement_calc.toml`): what an insured
//! province's business system answers, for tests, `pdx-testnet backend` and
//! the call benchmark. Its behaviour can be switched while it runs
//! (`POST /mode/{ok|slow|error|invalid|huge}`), and it counts the calculations
//! it made (`GET /count`), so a test can prove the backend saw exactly one call.
//!
//! Without a policy the calculation is stateless (in fen): deductible 800.00
//! for inpatient visits (med_type 2x), 0 otherwise; the fund pays 70% of what
//! exceeds it, the personal account pays nothing, the patient pays the rest.
//!
//! With a policy (`--policy FILE`, [`Policy`]) it is what an insured
//! province decides: a deductible (起付线) per person and year for inpatient
//! stays, a reimbursement ratio by care setting and hospital level, an annual
//! cap (封顶线) on fund payments per person — stateful per insured person, so
//! the order of calls matters. Every decision is kept in a ledger (`GET
//! /ledger`), and a repeated idempotency key gets the decision already made:
//! the ledger is the reference the realtime scenario checks clearing against.

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
    policy: Option<Policy>,
    state: std::sync::Mutex<PolicyState>,
}

/// An insured province's benefit policy (TOML).
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct Policy {
    /// Insured province (6-digit code); prefixes its settlement ids.
    pub province: String,
    /// Deductible per person and year for inpatient stays (fen).
    pub deductible_fen: i64,
    /// Fund payments per person and year at most (fen).
    pub annual_cap_fen: i64,
    /// Per cent the fund pays, by hospital level 1..3, inpatient.
    pub inpatient_ratio: [i64; 3],
    /// Per cent the fund pays, by hospital level 1..3, outpatient.
    pub outpatient_ratio: [i64; 3],
}

impl Policy {
    /// A policy that differs by province (for generated scenarios).
    pub fn for_province(province: &str, seed: u64) -> Policy {
        let k = seed.wrapping_add(province.bytes().map(u64::from).sum::<u64>()) % 5;
        let k = i64::try_from(k).unwrap_or(0);
        Policy {
            province: province.to_string(),
            deductible_fen: 60_000 + 10_000 * k,
            annual_cap_fen: 200_000 + 50_000 * k,
            inpatient_ratio: [90 - k, 85 - k, 75 - k],
            outpatient_ratio: [60 - k, 55 - k, 50 - k],
        }
    }
}

/// One decision of the insured province.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Decision {
    /// Settlement id.
    pub setl_id: String,
    /// Insured person.
    pub psn_no: String,
    /// Treating region (6 digits).
    pub mdtrtarea_admvs: String,
    /// Total fees (fen).
    pub total_fen: i64,
    /// Fund payment (fen).
    pub fund_fen: i64,
    /// Patient's cash part (fen).
    pub cash_fen: i64,
    /// Idempotency key of the call.
    pub idempotency_key: String,
}

#[derive(Default)]
struct PolicyState {
    /// (psn_no, year) -> (deductible used, fund paid), fen.
    persons: std::collections::HashMap<(String, String), (i64, i64)>,
    /// idempotency key -> index in `ledger`.
    by_key: std::collections::HashMap<String, usize>,
    ledger: Vec<Decision>,
    answers: Vec<Value>,
}

/// Hospital level 1..3 from a hospital code (its last digit mod 3, + 1).
pub fn hospital_level(code: &str) -> usize {
    code.bytes()
        .last()
        .map_or(0, |b| usize::from(b.wrapping_sub(b'0')) % 3)
}

/// The policy's decision for one request, updating the person's year.
fn decide(p: &Policy, st: &mut PolicyState, req: &Value, key: &str) -> Option<Value> {
    if let Some(&i) = st.by_key.get(key) {
        return st.answers.get(i).cloned();
    }
    let text = |n: &str| req.get(n).and_then(|v| v.as_str()).map(str::to_string);
    let total = fen(req, "medfee_sumamt")?;
    let inpatient = text("med_type")?.starts_with('2') || text("med_type")? == "52";
    let psn = text("psn_no")?;
    let year = text("begndate")?.get(..4)?.to_string();
    let level = hospital_level(&text("fixmedins_code")?);
    let (ded_used, fund_used) = st
        .persons
        .get(&(psn.clone(), year.clone()))
        .copied()
        .unwrap_or((0, 0));
    let deductible = if inpatient {
        (p.deductible_fen - ded_used).clamp(0, total)
    } else {
        0
    };
    let ratio = if inpatient {
        p.inpatient_ratio
    } else {
        p.outpatient_ratio
    }[level];
    let fund =
        ((total - deductible).checked_mul(ratio)? / 100).min((p.annual_cap_fen - fund_used).max(0));
    let cash = total - fund;
    st.persons.insert(
        (psn.clone(), year),
        (ded_used + deductible, fund_used + fund),
    );
    let setl_id = format!("{}{:012}", p.province, st.ledger.len() + 1);
    let answer = json!({
        "setl_id": setl_id,
        "setl_status": "1",
        "fund_pay_sumamt": yuan(fund),
        "acct_pay": "0.00",
        "psn_cash_pay": yuan(cash),
        "deductible": yuan(deductible),
        "cap_remaining": yuan(p.annual_cap_fen - fund_used - fund),
    });
    st.by_key.insert(key.to_string(), st.ledger.len());
    st.ledger.push(Decision {
        setl_id,
        psn_no: psn,
        mdtrtarea_admvs: text("mdtrtarea_admvs")?,
        total_fen: total,
        fund_fen: fund,
        cash_fen: cash,
        idempotency_key: key.to_string(),
    });
    st.answers.push(answer.clone());
    Some(answer)
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
        "setl_id": null,
        "setl_status": "1",
        "fund_pay_sumamt": yuan(fund),
        "acct_pay": "0.00",
        "psn_cash_pay": yuan(cash),
        "deductible": yuan(deductible),
        "cap_remaining": yuan(30_000_000 - fund),
    }))
}

async fn calc(
    State(s): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    Json(req): Json<Value>,
) -> Response {
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
    let answer = match &s.policy {
        Some(p) => {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            match s.state.lock() {
                Ok(mut st) => decide(p, &mut st, &req, &key),
                Err(_) => None,
            }
        }
        None => calculate(&req),
    };
    match answer {
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

async fn ledger(State(s): State<Arc<Shared>>) -> Response {
    match s.state.lock() {
        Ok(st) => Json(st.ledger.clone()).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "ledger lock").into_response(),
    }
}

async fn count(State(s): State<Arc<Shared>>) -> String {
    format!("{}\n", s.count.load(Ordering::SeqCst))
}

/// Serves the backend on `listen` until the process ends; prints the address.
pub fn run(listen: &str, mode: Mode, policy: Option<Policy>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shared = Arc::new(Shared {
            policy,
            ..Shared::default()
        });
        shared.mode.store(mode as u8, Ordering::SeqCst);
        let app = Router::new()
            .route("/calc", post(calc))
            .route("/mode/{mode}", post(set_mode))
            .route("/count", get(count))
            .route("/ledger", get(ledger))
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

    #[test]
    fn the_policy_applies_deductible_once_a_year_and_the_cap_across_calls() -> Result<()> {
        let p = Policy {
            province: "370000".into(),
            deductible_fen: 80_000,
            annual_cap_fen: 100_000,
            inpatient_ratio: [80, 80, 80],
            outpatient_ratio: [50, 50, 50],
        };
        let mut st = PolicyState::default();
        let stay = |fee: &str| {
            json!({"medfee_sumamt": fee, "med_type": "21", "psn_no": "P1",
                   "begndate": "2026-11-02", "fixmedins_code": "H11010100001",
                   "mdtrtarea_admvs": "110000"})
        };
        // 1000.00: 800.00 deductible, 80% of 200.00.
        let a = decide(&p, &mut st, &stay("1000.00"), "k1").context("no answer")?;
        assert_eq!(a["fund_pay_sumamt"], "160.00");
        // The deductible is used up: 80% of 1000.00.
        let b = decide(&p, &mut st, &stay("1000.00"), "k2").context("no answer")?;
        assert_eq!(b["fund_pay_sumamt"], "800.00");
        // The cap (1000.00) leaves 40.00.
        let c = decide(&p, &mut st, &stay("1000.00"), "k3").context("no answer")?;
        assert_eq!(c["fund_pay_sumamt"], "40.00");
        // A repeated key gets the decision already made, state unchanged.
        let again = decide(&p, &mut st, &stay("1000.00"), "k1").context("no answer")?;
        assert_eq!(again, a);
        assert_eq!(st.ledger.len(), 3);
        let total: i64 = st.ledger.iter().map(|d| d.fund_fen).sum();
        assert_eq!(total, 100_000);
        Ok(())
    }
}
