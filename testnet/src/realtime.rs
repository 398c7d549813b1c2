//! Real-time direct settlement (跨省异地就医直接结算, 实时结算), end to end on
//! real node processes:
//!
//! 1. a national hub and P province nodes; each province runs its benefit
//!    calculation backend (`pdx-testnet backend --policy`: deductible,
//!    ratios by care setting and hospital level, annual cap, stateful per
//!    person) and publishes `medical_insurance.settlement_calc` on it;
//! 2. hospitals (an open-loop load generator per treating province) call the
//!    insured province's calculation through the hub, identities sealed for
//!    the insured province; each `ok` call becomes a row of the treating
//!    province's month dataset (`pdx service record`);
//! 3. each simulated day the national node fetches the day's rows of every
//!    province incrementally (`pdx fetch --incremental`, profile `daily`);
//! 4. at month end disputes are injected (a province alters 3 amounts after
//!    the calls, one appends a duplicate settlement id, one a record of an
//!    unknown person), then clearing releases, relay, confirmations with
//!    disputes and the clearing matrix;
//! 5. every figure (cells, agreed and disputed amounts, net positions on
//!    agreed amounts, the dispute list) is checked against a reference built
//!    from the backends' own ledgers, and the regulator verifies every log
//!    and reconciles datasets and calls. Any difference fails the run.
//!
//! Stages are public so fault tests can interleave crashes and revocations.

use crate::Testnet;
use crate::backend::{Decision, Policy};
use crate::generate::{self, DIAGNOSES, PROVINCES};
use crate::settlement::{CLEARING_PURPOSE, NATIONAL, as_strs, owned, parallel, s};
use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The service hospitals call.
pub const SERVICE: &str = "medical_insurance.settlement_calc";
/// Each treating province's month dataset, filled by its calls.
pub const DATASET: &str = "settlement-online-2026-11";
/// Agreement of the service grants and of the uploads.
pub const AGREEMENT: &str = "DSA-XS-ONLINE-2026";
/// Purpose of the daily uploads.
pub const DAILY_PURPOSE: &str = "daily upload to the national platform";
const WORKERS: usize = 2;
const IO_WORKERS: usize = 4;
/// Attempts per settlement (the same idempotency key each time).
const ATTEMPTS: u32 = 8;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Provinces (2..=31).
    pub provinces: usize,
    /// Insured patients over all provinces.
    pub patients: u64,
    /// Settlements over the month.
    pub settlements: u64,
    /// Simulated days.
    pub days: u32,
    /// Offered calls per second over all hospitals.
    pub rate: u64,
    /// Seed.
    pub seed: u64,
    /// The network's cryptographic suite.
    pub suite: pdx_crypto::Suite,
}

/// One settlement to make: who is treated where, the request.
#[derive(Debug, Clone)]
pub struct Visit {
    /// Treating province.
    pub treating: String,
    /// Insured province.
    pub insured: String,
    /// Day of the month (1-based).
    pub day: u32,
    /// The request fields.
    pub request: Value,
}

/// An answered settlement: the request and the opened response.
#[derive(Debug, Clone)]
pub struct Answered {
    /// The visit.
    pub visit: Visit,
    /// Response fields.
    pub response: Value,
    /// When the insured province signed it (ms).
    pub time_ms: u64,
}

#[derive(Debug)]
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The running network.
#[derive(Debug)]
pub struct Realtime {
    /// Nodes.
    pub net: Testnet,
    dir: PathBuf,
    /// Options.
    pub opts: Options,
    /// Province codes.
    pub provinces: Vec<String>,
    backends: BTreeMap<String, (String, Backend)>,
    gateways: BTreeMap<String, (String, String)>,
    /// Every settlement answered ok, in call order.
    pub answered: Vec<Answered>,
    /// Latencies (ms, from the due time) of the first successful attempt.
    latencies: Vec<f64>,
    retries: u64,
    failures: Vec<String>,
    call_seconds: f64,
    fetch_seconds: Vec<f64>,
    stages: Vec<Value>,
    started: Instant,
    injected: Vec<Value>,
}

/// Median, p50 ... of a sorted list.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn fen(text: &str) -> Result<i64> {
    pdx_schemas::types::decimal_to_units(text, 2)
        .and_then(|u| i64::try_from(u).ok())
        .ok_or_else(|| anyhow!("{text:?} is not an amount"))
}

fn yuan(f: i64) -> String {
    let sign = if f < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", f.abs() / 100, f.abs() % 100)
}

/// The columns of `settlement_online.toml`, in order.
pub const COLUMNS: [&str; 17] = [
    "setl_id",
    "mdtrt_id",
    "psn_no",
    "certno",
    "psn_name",
    "insuplc_admdvs",
    "mdtrtarea_admvs",
    "fixmedins_code",
    "med_type",
    "begndate",
    "enddate",
    "setl_time",
    "diag_code",
    "medfee_sumamt",
    "fund_pay_sumamt",
    "acct_pay",
    "psn_cash_pay",
];

impl Answered {
    /// The row `pdx service record` makes of it.
    pub fn row(&self) -> Vec<String> {
        // Written here again, not taken from pdx-node: the reference is
        // computed independently of the code it checks.
        let t =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.time_ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                .to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC));
        let setl_time = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        COLUMNS
            .iter()
            .map(|c| {
                let from = |v: &Value| v.get(*c).and_then(Value::as_str).unwrap_or("").to_string();
                match *c {
                    "setl_id" | "fund_pay_sumamt" | "acct_pay" | "psn_cash_pay" => {
                        from(&self.response)
                    }
                    "setl_time" => setl_time.clone(),
                    _ => from(&self.visit.request),
                }
            })
            .collect()
    }
}

/// The settlements of the month, sorted by day.
pub fn visits(opts: &Options, provinces: &[String]) -> Vec<Visit> {
    let mut r = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5e77_1e4e);
    let per = (opts.patients / provinces.len() as u64).max(1);
    let mut out = Vec::with_capacity(opts.settlements as usize);
    for i in 0..opts.settlements {
        let ip = r.random_range(0..provinces.len());
        let mut tp = r.random_range(0..provinces.len() - 1);
        if tp >= ip {
            tp += 1;
        }
        let person = generate::person(opts.seed, ip, r.random_range(0..per));
        let day =
            u32::try_from(i * u64::from(opts.days) / opts.settlements.max(1)).unwrap_or(0) + 1;
        let inpatient = r.random_bool(0.3);
        let med_type = if inpatient {
            ["21", "22", "28"][r.random_range(0..3)]
        } else {
            ["11", "13", "14"][r.random_range(0..3)]
        };
        let treating = &provinces[tp];
        let fee = if inpatient {
            r.random_range(200_000..3_000_000i64)
        } else {
            r.random_range(5_000..80_000i64)
        };
        let parts = [
            fee * 30 / 100,
            fee * 20 / 100,
            fee * 25 / 100,
            fee * 5 / 100,
        ];
        let other = fee - parts.iter().sum::<i64>();
        let end = if inpatient {
            Value::String(format!(
                "2026-11-{:02}",
                (day + r.random_range(0..3u32)).min(30)
            ))
        } else {
            Value::Null
        };
        out.push(Visit {
            treating: treating.clone(),
            insured: provinces[ip].clone(),
            day,
            request: json!({
                "mdtrt_id": format!("MD{}{:010}", &treating[..2], i),
                "psn_no": person.psn_no,
                "certno": person.certno,
                "psn_name": person.name,
                "insuplc_admdvs": person.region,
                "mdtrtarea_admvs": format!("{}0100", &treating[..2]),
                "fixmedins_code": format!("H{}01{:07}", &treating[..2], r.random_range(0..300u32)),
                "med_type": med_type,
                "begndate": format!("2026-11-{day:02}"),
                "enddate": end,
                "diag_code": DIAGNOSES[r.random_range(0..DIAGNOSES.len())],
                "medfee_sumamt": yuan(fee),
                "drug_fee": yuan(parts[0]),
                "exam_fee": yuan(parts[1]),
                "treat_fee": yuan(parts[2]),
                "material_fee": yuan(parts[3]),
                "other_fee": yuan(other),
            }),
        });
    }
    out
}

impl Realtime {
    /// Creates the network: hub, provinces, their backends, gateways,
    /// services, grants, recording rules and key documents.
    pub fn setup(dir: &Path, opts: Options) -> Result<Realtime> {
        if !(2..=31).contains(&opts.provinces) {
            bail!("--provinces must be between 2 and 31");
        }
        if opts.days == 0 || opts.days > 30 {
            bail!("--days must be between 1 and 30 (November 2026)");
        }
        let started = Instant::now();
        let mut net = Testnet::create_in(opts.suite, dir, "realtime")?;
        net.add_node(NATIONAL, "国家医疗保障局 national platform (hub)")?;
        let provinces: Vec<String> = PROVINCES[..opts.provinces]
            .iter()
            .map(|(c, _)| c.to_string())
            .collect();
        for (code, name) in &PROVINCES[..opts.provinces] {
            net.add_node(code, &format!("{name} 医疗保障局"))?;
        }
        net.connect_all()?;
        let schemas = dir.join("schemas");
        std::fs::create_dir_all(&schemas)?;
        for (name, text) in [
            (
                "settlement_calc.toml",
                include_str!("../../schemas/medical_insurance/settlement_calc.toml"),
            ),
            (
                "settlement_online.toml",
                include_str!("../../schemas/medical_insurance/settlement_online.toml"),
            ),
            (
                "settlement_online.map.toml",
                include_str!("../../schemas/medical_insurance/settlement_online.map.toml"),
            ),
        ] {
            std::fs::write(schemas.join(name), text)?;
        }
        let bin = crate::pdx_bin()?.with_file_name("pdx-testnet");
        // Two ports per province (backend, gateway), distinct from each other
        // and from the nodes' (all picked before anything listens).
        let mut taken: std::collections::BTreeSet<u16> = net
            .nodes
            .iter()
            .filter_map(|n| n.addr.rsplit(':').next()?.parse().ok())
            .collect();
        // Below the kernel's ephemeral range (32768..), so no outgoing
        // connection takes one between the pick and the listen.
        // Seeded per network (parallel tests in one process pick apart).
        static NETWORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nth = NETWORKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut pick = ChaCha8Rng::seed_from_u64(
            u64::from(std::process::id()) ^ nth.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let mut port = || -> Result<u16> {
            for _ in 0..10_000 {
                let p: u16 = pick.random_range(20_000..32_000);
                if !taken.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
                    taken.insert(p);
                    return Ok(p);
                }
            }
            bail!("no free port in 20000..32000")
        };
        let mut backends = BTreeMap::new();
        let mut gateways = BTreeMap::new();
        for code in &provinces {
            let policy = Policy::for_province(code, opts.seed);
            let policy_path = dir.join(format!("policy-{code}.toml"));
            std::fs::write(&policy_path, toml::to_string(&policy)?)?;
            let addr = format!("127.0.0.1:{}", port()?);
            let child = Command::new(&bin)
                .args(["backend", "--listen", &addr, "--policy", &s(&policy_path)])
                .stdout(Stdio::null())
                .spawn()
                .context("starting a backend")?;
            backends.insert(code.clone(), (addr, Backend(child)));
            let home = net.home(code)?;
            let gw = format!("127.0.0.1:{}", port()?);
            net.pdx_ok(&["gateway", "enable", "--home", &home, "--listen", &gw])?;
            net.pdx_ok(&[
                "gateway", "route", "--home", &home, "--to", "*", "--via", NATIONAL,
            ])?;
            gateways.insert(code.clone(), (gw, String::new()));
        }
        let hub = net.home(NATIONAL)?;
        net.pdx_ok(&[
            "gateway", "relay", "--home", &hub, "--from", "*", "--to", "*",
        ])?;
        let depts: Vec<String> = net.nodes.iter().map(|n| n.dept.clone()).collect();
        for d in &depts {
            net.lift_call_limits(d)?;
        }
        net.start_all()?;
        for code in &provinces {
            let tok = std::fs::read_to_string(Path::new(&net.home(code)?).join("gateway.token"))?;
            if let Some(g) = gateways.get_mut(code) {
                g.1 = tok.trim().to_string();
            }
        }
        let mut me = Realtime {
            net,
            dir: dir.to_path_buf(),
            opts,
            provinces,
            backends,
            gateways,
            answered: Vec::new(),
            latencies: Vec::new(),
            retries: 0,
            failures: Vec::new(),
            call_seconds: 0.0,
            fetch_seconds: Vec::new(),
            stages: Vec::new(),
            started,
            injected: Vec::new(),
        };
        me.stage(
            "network",
            started,
            format!(
                "CA, hub {NATIONAL}, {} provinces with their benefit-calculation backends and gateways",
                me.provinces.len()
            ),
        );
        let t = Instant::now();
        let calc = s(&schemas.join("settlement_calc.toml"));
        let online = s(&schemas.join("settlement_online.toml"));
        let map = s(&schemas.join("settlement_online.map.toml"));
        let provinces = me.provinces.clone();
        parallel(&provinces, WORKERS, |code| {
            let home = me.net.home(code)?;
            let backend = format!("http://{}/calc", me.backends[code].0);
            me.net.pdx_ok(&[
                "service",
                "publish",
                "--home",
                &home,
                "--schema",
                &calc,
                "--service",
                SERVICE,
                "--backend",
                &backend,
            ])?;
            me.net.pdx_ok(&[
                "service",
                "record",
                "--home",
                &home,
                "--service",
                SERVICE,
                "--dataset",
                DATASET,
                "--schema",
                &online,
                "--map",
                &map,
            ])?;
            for other in &provinces {
                if other != code {
                    me.net.pdx_ok(&[
                        "grant",
                        "--home",
                        &home,
                        "--service",
                        SERVICE,
                        "--to",
                        other,
                        "--purpose",
                        "cross-province direct settlement",
                        "--agreement",
                        AGREEMENT,
                        "--expires",
                        "+60d",
                    ])?;
                }
            }
            Ok(())
        })?;
        // The hub collects every province's key document; each province gets
        // the others' from it.
        for code in &provinces {
            me.net
                .pdx_ok(&["keys", "fetch", "--home", &hub, "--peer", code])?;
        }
        parallel(&provinces, WORKERS, |code| {
            me.net.pdx_ok(&[
                "keys",
                "fetch",
                "--home",
                &me.net.home(code)?,
                "--peer",
                NATIONAL,
            ])
        })?;
        me.stage(
            "services",
            t,
            format!(
                "{} provinces publish {SERVICE} on their backends, record their calls into {DATASET} and grant each other; key documents through the hub",
                provinces.len()
            ),
        );
        Ok(me)
    }

    fn stage(&mut self, name: &str, since: Instant, detail: String) {
        let secs = since.elapsed().as_secs_f64();
        eprintln!(
            "[{:>7.1}s] {name:<18} {detail} ({secs:.1}s)",
            self.started.elapsed().as_secs_f64()
        );
        self.stages
            .push(json!({"stage": name, "seconds": secs, "detail": detail}));
    }

    /// The backend address of an insured province.
    pub fn backend_addr(&self, code: &str) -> Result<String> {
        Ok(self
            .backends
            .get(code)
            .ok_or_else(|| anyhow!("no backend for {code}"))?
            .0
            .clone())
    }

    /// Calls the day's visits open loop at the offered rate, each retried
    /// with its idempotency key until it is answered (at most 8 attempts).
    pub fn call_day(&mut self, visits: &[Visit]) -> Result<()> {
        let t = Instant::now();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let gateways = Arc::new(self.gateways.clone());
        let rate = self.opts.rate.max(1);
        let results = rt.block_on(async {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client: HttpClient = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1024)
                .build(connector);
            let start = tokio::time::Instant::now() + Duration::from_millis(20);
            let mut tasks = Vec::with_capacity(visits.len());
            for (i, v) in visits.iter().enumerate() {
                let due = start + Duration::from_nanos(i as u64 * 1_000_000_000 / rate);
                let (c, g, v) = (client.clone(), gateways.clone(), v.clone());
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(due).await;
                    let mut tries = 0u32;
                    loop {
                        tries += 1;
                        match call(&c, &g, &v).await {
                            Ok(r) => {
                                return Ok((v, r, due.elapsed().as_secs_f64() * 1000.0, tries));
                            }
                            Err(e) if tries >= ATTEMPTS => return Err(e),
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(250 << tries.min(4))).await
                            }
                        }
                    }
                }));
            }
            let mut out = Vec::with_capacity(tasks.len());
            for task in tasks {
                out.push(task.await.map_err(|e| anyhow!("a caller stopped: {e}"))?);
            }
            Ok::<_, anyhow::Error>(out)
        })?;
        let n = visits.len();
        for r in results {
            match r {
                Ok((visit, (response, time_ms), ms, tries)) => {
                    self.latencies.push(ms);
                    self.retries += u64::from(tries - 1);
                    self.answered.push(Answered {
                        visit,
                        response,
                        time_ms,
                    });
                }
                Err(e) => self.failures.push(e.to_string()),
            }
        }
        let secs = t.elapsed().as_secs_f64();
        self.call_seconds += secs;
        self.stage(
            "calls",
            t,
            format!(
                "day {}: {n} settlements called through the hub ({:.0} calls/s)",
                visits.first().map_or(0, |v| v.day),
                n as f64 / secs
            ),
        );
        Ok(())
    }

    /// One attempt of one settlement (no retry): the response fields and the
    /// signing time, or the gateway's error.
    pub fn call_once(&self, v: &Visit) -> Result<(Value, u64)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let client: HttpClient =
                Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            call(&client, &self.gateways, v).await
        })
    }

    /// Switches an insured province's backend (`ok`, `error`, ...).
    pub fn backend_mode(&self, code: &str, mode: &str) -> Result<()> {
        http(
            &format!("http://{}/mode/{mode}", self.backend_addr(code)?),
            true,
        )?;
        Ok(())
    }

    /// Settlements that failed every attempt.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// Rows of a province's month dataset, after appending what is queued.
    pub fn dataset_rows(&self, code: &str) -> Result<u64> {
        let home = self.net.home(code)?;
        self.net
            .pdx_ok(&["service", "record", "--home", &home, "--flush"])?;
        let v = self.net.pdx_json(&["datasets", "--home", &home])?;
        Ok(v.as_array()
            .and_then(|l| l.iter().find(|d| d["dataset"] == DATASET))
            .and_then(|d| d["records"].as_u64())
            .unwrap_or(0))
    }

    /// The `pdx` arguments with which the national node fetches from `code`.
    pub fn fetch_args(&self, code: &str, profile: &str, incremental: bool) -> Result<Vec<String>> {
        let purpose = if incremental {
            DAILY_PURPOSE
        } else {
            CLEARING_PURPOSE
        };
        let mut a = owned(&[
            "fetch",
            "--home",
            &self.net.home(NATIONAL)?,
            "--peer",
            code,
            "--dataset",
            DATASET,
            "--profile",
            profile,
            "--purpose",
            purpose,
            "--agreement",
            AGREEMENT,
            "--retries",
            "8",
            "--json",
        ]);
        if incremental {
            a.push("--incremental".into());
        }
        Ok(a)
    }

    /// Grants the national node the daily and clearing profiles (the
    /// dataset exists once the first outcomes are appended).
    pub fn grant_uploads(&mut self) -> Result<()> {
        let provinces = self.provinces.clone();
        parallel(&provinces, WORKERS, |code| {
            let home = self.net.home(code)?;
            self.net
                .pdx_ok(&["service", "record", "--home", &home, "--flush"])?;
            for (profile, purpose) in [("daily", DAILY_PURPOSE), ("clearing", CLEARING_PURPOSE)] {
                self.net.pdx_ok(&[
                    "grant",
                    "--home",
                    &home,
                    "--dataset",
                    DATASET,
                    "--to",
                    NATIONAL,
                    "--profile",
                    profile,
                    "--purpose",
                    purpose,
                    "--agreement",
                    AGREEMENT,
                ])?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The national node fetches the day's new rows of every province.
    pub fn daily_upload(&mut self, day: u32) -> Result<u64> {
        let t = Instant::now();
        let provinces = self.provinces.clone();
        let fetched = parallel(&provinces, WORKERS, |code| {
            let out = self
                .net
                .pdx(&as_strs(&self.fetch_args(code, "daily", true)?))?;
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout)?;
                return Ok(v["records"].as_u64().unwrap_or(0));
            }
            let err = String::from_utf8_lossy(&out.stderr);
            // A province none of whose patients came that day has nothing new.
            if err.contains("nothing new to fetch") {
                return Ok(0);
            }
            bail!("daily fetch from {code} failed: {err}")
        })?;
        let secs = t.elapsed().as_secs_f64();
        self.fetch_seconds.push(secs);
        let n = fetched.iter().sum();
        self.stage(
            "daily upload",
            t,
            format!(
                "day {day}: national node fetched {n} new rows incrementally from {} provinces",
                provinces.len()
            ),
        );
        Ok(n)
    }

    /// Injects the month-end disputes: the first province alters 3 amounts
    /// after the calls (re-imports its month with them changed), the second
    /// appends a duplicate of one of its settlements, the last appends a
    /// record of a person its insured province does not know.
    pub fn inject(&mut self) -> Result<()> {
        let t = Instant::now();
        let online = s(&self.dir.join("schemas").join("settlement_online.toml"));
        let p = self.provinces.clone();
        let (alter, dup, unknown) = (&p[0], &p[1 % p.len()], &p[p.len() - 1]);
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data)?;
        let write = |name: &str, rows: &[Vec<String>]| -> Result<String> {
            let path = data.join(name);
            let mut w = csv::Writer::from_path(&path)?;
            w.write_record(COLUMNS)?;
            for r in rows {
                w.write_record(r)?;
            }
            w.flush()?;
            Ok(s(&path))
        };
        // 1. Three amounts altered by the treating province.
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut altered = 0;
        for a in self.answered.iter().filter(|a| &a.visit.treating == alter) {
            let mut row = a.row();
            if altered < 3 {
                let f = fen(&row[14])?;
                row[14] = yuan(f + 10_000);
                self.injected.push(json!({"kind": "altered", "treating": alter,
                    "insured": a.visit.insured, "setl_id": row[0], "signed_fen": f, "claimed_fen": f + 10_000}));
                altered += 1;
            }
            rows.push(row);
        }
        if altered < 3 {
            bail!("{alter} made fewer than 3 settlements; give more --settlements");
        }
        let import = |code: &str, file: &str, how: &str| {
            self.net.pdx_ok(&[
                "import",
                "--home",
                &self.net.home(code)?,
                "--schema",
                &online,
                "--csv",
                file,
                "--dataset",
                DATASET,
                how,
            ])
        };
        import(
            alter,
            &write(&format!("altered-{alter}.csv"), &rows)?,
            "--replace",
        )?;
        // 2. A settlement id claimed twice.
        let twice = self
            .answered
            .iter()
            .find(|a| &a.visit.treating == dup && &a.visit.treating != alter)
            .or_else(|| self.answered.iter().find(|a| &a.visit.treating == dup))
            .ok_or_else(|| anyhow!("{dup} made no settlement"))?
            .clone();
        let row = twice.row();
        let file = write(&format!("duplicate-{dup}.csv"), std::slice::from_ref(&row))?;
        import(dup, &file, "--append")?;
        self.injected
            .push(json!({"kind": "duplicate", "treating": dup,
            "insured": twice.visit.insured, "setl_id": row[0], "claimed_fen": fen(&row[14])?}));
        // 3. A person the insured province does not know.
        let insured = if unknown == &p[0] { &p[1] } else { &p[0] };
        let mut row = self
            .answered
            .iter()
            .find(|a| &a.visit.treating == unknown)
            .ok_or_else(|| anyhow!("{unknown} made no settlement"))?
            .row();
        row[0] = format!("{}999999999999", &insured[..6]);
        row[2] = format!("{}99999999999999", &insured[..2]);
        row[5] = format!("{}0101", &insured[..2]);
        let file = write(
            &format!("unknown-{unknown}.csv"),
            std::slice::from_ref(&row),
        )?;
        import(unknown, &file, "--append")?;
        self.injected
            .push(json!({"kind": "unknown", "treating": unknown,
            "insured": insured, "setl_id": row[0], "claimed_fen": fen(&row[14])?}));
        self.stage(
            "inject",
            t,
            format!("{alter} altered 3 amounts after the calls, {dup} claims a settlement twice, {unknown} claims one for an unknown person insured in {insured}"),
        );
        Ok(())
    }

    /// Month end: clearing releases, relay, confirmations with disputes,
    /// the clearing matrix and the dispute list.
    pub fn month_end(&mut self) -> Result<(Value, Value)> {
        let t = Instant::now();
        let provinces = self.provinces.clone();
        let releases = parallel(&provinces, WORKERS, |code| {
            let v: Value = serde_json::from_str(
                &self
                    .net
                    .pdx_ok(&as_strs(&self.fetch_args(code, "clearing", false)?))?,
            )?;
            v["release"]
                .as_str()
                .map(String::from)
                .ok_or_else(|| anyhow!("fetch from {code} returned no release: {v}"))
        })?;
        let national = self.net.home(NATIONAL)?;
        parallel(&releases, IO_WORKERS, |r| {
            self.net.pdx_ok(&[
                "forward",
                "--home",
                &national,
                "--release",
                r,
                "--all-recipients",
            ])
        })?;
        let registries = self.write_registries()?;
        parallel(&provinces, IO_WORKERS, |code| {
            self.net.pdx_ok(&[
                "settle",
                "confirm",
                "--home",
                &self.net.home(code)?,
                "--all",
                "--registry",
                &registries[code],
                "--to",
                NATIONAL,
                "--json",
            ])
        })?;
        let clearing = self
            .net
            .pdx_json(&["settle", "clearing", "--home", &national])?;
        let disputes = self
            .net
            .pdx_json(&["settle", "disputes", "--home", &national])?;
        self.stage(
            "clearing",
            t,
            format!(
                "{} clearing releases relayed and confirmed; {} matrix cells, {} disputed records",
                releases.len(),
                clearing["matrix"].as_array().map_or(0, Vec::len),
                disputes.as_array().map_or(0, Vec::len)
            ),
        );
        Ok((clearing, disputes))
    }

    /// Each insured province's registry: every person the generator can draw.
    fn write_registries(&self) -> Result<BTreeMap<String, String>> {
        let per = (self.opts.patients / self.provinces.len() as u64).max(1);
        let mut out = BTreeMap::new();
        for (ip, code) in self.provinces.iter().enumerate() {
            let path = self.dir.join(format!("registry-{code}.csv"));
            let mut w = csv::Writer::from_path(&path)?;
            w.write_record(["psn_no", "certno"])?;
            for i in 0..per {
                let p = generate::person(self.opts.seed, ip, i);
                w.write_record([p.psn_no, p.certno])?;
            }
            w.flush()?;
            out.insert(code.clone(), s(&path));
        }
        Ok(out)
    }

    /// Every backend's ledger.
    pub fn ledgers(&self) -> Result<BTreeMap<String, Vec<Decision>>> {
        let mut out = BTreeMap::new();
        for (code, (addr, _)) in &self.backends {
            let body = http_get(&format!("http://{addr}/ledger"))?;
            out.insert(code.clone(), serde_json::from_slice(&body)?);
        }
        Ok(out)
    }

    /// The regulator: every log verified with the others as witnesses, all
    /// reconciled (datasets and calls).
    pub fn regulator(&mut self) -> Result<Value> {
        let t = Instant::now();
        let dir = self.dir.join("regulator");
        std::fs::create_dir_all(&dir)?;
        let depts: Vec<String> = self.net.nodes.iter().map(|n| n.dept.clone()).collect();
        let bundles: Vec<(String, String)> = depts
            .iter()
            .map(|d| (d.clone(), s(&dir.join(format!("{d}.bundle")))))
            .collect();
        parallel(&bundles, WORKERS, |(d, b)| {
            self.net
                .pdx_ok(&["audit", "export", "--home", &self.net.home(d)?, "--out", b])
        })?;
        let ca = s(&self.net.ca_dir().join("ca.crt"));
        let bad = parallel(&bundles, WORKERS, |(d, b)| {
            let mut args: Vec<&str> = vec!["audit", "verify", b, "--ca", &ca, "--json"];
            for (other, ob) in &bundles {
                if other != d {
                    args.push("--witness");
                    args.push(ob);
                }
            }
            let out = self.net.pdx(&args)?;
            Ok((!out.status.success()).then(|| d.clone()))
        })?;
        let mut args: Vec<&str> = vec!["audit", "reconcile", "--ca", &ca, "--json"];
        for (_, b) in &bundles {
            args.push(b);
        }
        let out = self.net.pdx(&args)?;
        let reconcile: Value = serde_json::from_slice(&out.stdout).context("reconcile output")?;
        let bad: Vec<String> = bad.into_iter().flatten().collect();
        self.stage(
            "regulator",
            t,
            format!(
                "{} logs verified with the others as witnesses ({} not valid); reconcile: {} transfers and {} calls matched, {} mismatches",
                bundles.len(),
                bad.len(),
                reconcile["matched"],
                reconcile["calls_matched"],
                reconcile["mismatches"].as_array().map_or(0, Vec::len)
            ),
        );
        Ok(json!({"not_valid": bad, "reconcile": reconcile, "reconcile_exit": out.status.code()}))
    }

    /// Checks the clearing and the disputes against the backends' ledgers
    /// and the injected disputes; returns the differences (empty: all agree).
    pub fn check(&self, clearing: &Value, disputes: &Value) -> Result<Vec<String>> {
        let ledgers = self.ledgers()?;
        let mut diffs = Vec::new();
        // Exactly once: one decision per settlement answered, none unanswered.
        let decided: usize = ledgers.values().map(Vec::len).sum();
        if decided != self.answered.len() {
            diffs.push(format!(
                "the backends decided {decided} settlements, the hospitals were answered {}",
                self.answered.len()
            ));
        }
        // (insured, treating) -> [records, fen, agreed records, agreed fen, disputed records, disputed fen]
        let mut want: BTreeMap<(String, String), [i64; 6]> = BTreeMap::new();
        for (insured, list) in &ledgers {
            for d in list {
                let treating = format!("{}0000", &d.mdtrtarea_admvs[..2]);
                let c = want.entry((insured.clone(), treating)).or_default();
                c[0] += 1;
                c[1] += d.fund_fen;
                c[2] += 1;
                c[3] += d.fund_fen;
            }
        }
        let mut want_disputes: Vec<(String, String)> = Vec::new();
        for inj in &self.injected {
            let key = (
                inj["insured"].as_str().unwrap_or("").to_string(),
                inj["treating"].as_str().unwrap_or("").to_string(),
            );
            let claimed = inj["claimed_fen"].as_i64().unwrap_or(0);
            let c = want.entry(key).or_default();
            match inj["kind"].as_str() {
                Some("altered") => {
                    let signed = inj["signed_fen"].as_i64().unwrap_or(0);
                    c[1] += claimed - signed;
                    c[2] -= 1;
                    c[3] -= signed;
                    want_disputes.push((
                        inj["setl_id"].as_str().unwrap_or("").into(),
                        "amount-differs".into(),
                    ));
                }
                Some("duplicate") => {
                    c[0] += 1;
                    c[1] += claimed;
                    want_disputes.push((
                        inj["setl_id"].as_str().unwrap_or("").into(),
                        "duplicate-settlement".into(),
                    ));
                }
                _ => {
                    c[0] += 1;
                    c[1] += claimed;
                    want_disputes.push((
                        inj["setl_id"].as_str().unwrap_or("").into(),
                        "person-unknown".into(),
                    ));
                }
            }
            c[4] += 1;
            c[5] += claimed;
        }
        let mut got: BTreeMap<(String, String), [i64; 6]> = BTreeMap::new();
        for c in clearing["matrix"].as_array().cloned().unwrap_or_default() {
            let n = |k: &str| c[k].as_i64().unwrap_or(0);
            got.insert(
                (
                    c["insured"].as_str().unwrap_or("").into(),
                    c["treatment"].as_str().unwrap_or("").into(),
                ),
                [
                    n("records"),
                    n("amount_fen"),
                    n("confirmed_records"),
                    n("confirmed_fen"),
                    n("disputed_records"),
                    n("disputed_fen"),
                ],
            );
        }
        for (k, w) in &want {
            let g = got.get(k).copied().unwrap_or_default();
            if g != *w {
                diffs.push(format!(
                    "cell insured {} x treatment {}: clearing says [records, fen, agreed, agreed fen, disputed, disputed fen] = {g:?}, the ledgers say {w:?}",
                    k.0, k.1
                ));
            }
        }
        for k in got.keys().filter(|k| !want.contains_key(*k)) {
            diffs.push(format!(
                "cell {} x {} has no settlement in any ledger",
                k.0, k.1
            ));
        }
        // Net positions on agreed amounts.
        let mut net: HashMap<String, i64> = HashMap::new();
        for ((insured, treating), w) in &want {
            *net.entry(treating.clone()).or_default() += w[3];
            *net.entry(insured.clone()).or_default() -= w[3];
        }
        for p in clearing["net_positions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let code = p["province"].as_str().unwrap_or("");
            let w = net.get(code).copied().unwrap_or(0);
            if p["confirmed_net_fen"].as_i64() != Some(w) {
                diffs.push(format!(
                    "{code}: net on agreed amounts {} fen, the ledgers say {w}",
                    p["confirmed_net_fen"]
                ));
            }
        }
        let mut got_disputes: Vec<(String, String)> = disputes
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| {
                (
                    d["setl_id"].as_str().unwrap_or("").into(),
                    d["reason"].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        got_disputes.sort();
        want_disputes.sort();
        if got_disputes != want_disputes {
            diffs.push(format!(
                "disputes: clearing node lists {got_disputes:?}, injected {want_disputes:?}"
            ));
        }
        Ok(diffs)
    }

    /// The figures of the run.
    pub fn summary(&self) -> Value {
        let mut lat = self.latencies.clone();
        lat.sort_by(f64::total_cmp);
        let peak: BTreeMap<String, Option<u64>> = self
            .net
            .nodes
            .iter()
            .map(|n| (n.dept.clone(), self.net.peak_rss_kib(&n.dept)))
            .collect();
        let mut fetch = self.fetch_seconds.clone();
        fetch.sort_by(f64::total_cmp);
        json!({
            "settlements": self.answered.len(),
            "failed": self.failures.len(),
            "first_failures": self.failures.iter().take(5).collect::<Vec<_>>(),
            "retries": self.retries,
            "call_seconds": self.call_seconds,
            "calls_per_second": self.answered.len() as f64 / self.call_seconds.max(1e-9),
            "p50_ms": percentile(&lat, 0.5),
            "p99_ms": percentile(&lat, 0.99),
            "max_ms": lat.last().copied().unwrap_or(f64::NAN),
            "daily_fetch_median_s": percentile(&fetch, 0.5),
            "daily_fetch_max_s": fetch.last().copied().unwrap_or(f64::NAN),
            "peak_rss_kib": peak,
            "stages": self.stages,
            "injected": self.injected,
        })
    }
}

/// One settlement call through the treating province's gateway; the
/// response fields and the time the insured province signed them.
async fn call(
    client: &HttpClient,
    gateways: &BTreeMap<String, (String, String)>,
    v: &Visit,
) -> Result<(Value, u64)> {
    let (gw, token) = gateways
        .get(&v.treating)
        .ok_or_else(|| anyhow!("no gateway for {}", v.treating))?;
    let key = v.request["mdtrt_id"].as_str().unwrap_or("").to_string();
    let req = hyper::Request::post(format!("http://{gw}/v1/services/{}/{SERVICE}", v.insured))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(v.request.to_string())))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    let v: Value = serde_json::from_slice(&body)?;
    Ok((v["response"].clone(), v["time_ms"].as_u64().unwrap_or(0)))
}

/// A plain HTTP GET (the backends' ledgers).
pub fn http_get(url: &str) -> Result<Vec<u8>> {
    http(url, false)
}

fn http(url: &str, post: bool) -> Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let req = if post {
            hyper::Request::post(url)
        } else {
            hyper::Request::get(url)
        };
        let resp = client.request(req.body(Full::new(Bytes::new()))?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        if !status.is_success() {
            bail!("{url}: HTTP {status}");
        }
        Ok(body)
    })
}

/// Runs the whole month; fails if any figure differs from the ledgers.
pub fn run(dir: &Path, opts: Options) -> Result<Value> {
    let started = Instant::now();
    let mut rt = Realtime::setup(dir, opts.clone())?;
    let all = visits(&opts, &rt.provinces);
    let mut upload_rows = 0u64;
    for day in 1..=opts.days {
        let today: Vec<Visit> = all.iter().filter(|v| v.day == day).cloned().collect();
        rt.call_day(&today)?;
        if day == 1 {
            rt.grant_uploads()?;
        }
        upload_rows += rt.daily_upload(day)?;
    }
    if !rt.failures.is_empty() {
        bail!(
            "{} settlements failed after {ATTEMPTS} attempts: {:?}",
            rt.failures.len(),
            rt.failures.iter().take(3).collect::<Vec<_>>()
        );
    }
    if upload_rows != rt.answered.len() as u64 {
        bail!(
            "the daily uploads carried {upload_rows} rows, the hospitals settled {}",
            rt.answered.len()
        );
    }
    rt.inject()?;
    let t = Instant::now();
    let (clearing, disputes) = rt.month_end()?;
    let clearing_seconds = t.elapsed().as_secs_f64();
    let regulator = rt.regulator()?;
    let mut diffs = rt.check(&clearing, &disputes)?;
    if !regulator["not_valid"].as_array().is_none_or(Vec::is_empty) {
        diffs.push(format!("audit logs not valid: {}", regulator["not_valid"]));
    }
    if regulator["reconcile"]["clean"] != Value::Bool(true) {
        diffs.push(format!(
            "reconcile not clean: {}",
            regulator["reconcile"]["mismatches"]
        ));
    }
    let mut summary = rt.summary();
    summary["clearing_seconds"] = json!(clearing_seconds);
    summary["daily_rows"] = json!(upload_rows);
    summary["total_seconds"] = json!(started.elapsed().as_secs_f64());
    summary["clearing"] = clearing;
    summary["disputes"] = disputes;
    summary["differences"] = json!(diffs);
    rt.net.stop_all(Duration::from_secs(10))?;
    if !diffs.is_empty() {
        bail!(
            "the clearing differs from the backends' ledgers:\n{}",
            diffs.join("\n")
        );
    }
    Ok(summary)
}
