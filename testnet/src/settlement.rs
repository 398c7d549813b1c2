//! The cross-province medical-insurance settlement scenario (跨省异地就医直接结算),
//! end to end on real node processes:
//!
//! 1. a national clearing node, P province nodes and a statistics bureau;
//! 2. each province imports the records of patients it treated who are insured
//!    elsewhere (schemas/medical_insurance/settlement.toml);
//! 3. each province releases the `clearing` profile to the national node
//!    (identities sealed per record for the insured province); the national
//!    node relays each insured province its records, which it cannot read;
//! 4. insured provinces open the identities, check them against their insured
//!    registry and return signed confirmations; the national node computes the
//!    clearing matrix and net positions;
//! 5. the statistics bureau runs a homomorphic aggregate of fund spending and
//!    case counts per ICD-10 category × insured province;
//! 6. the regulator verifies every node's audit log with its peers' bundles as
//!    witnesses and reconciles all of them;
//! 7. every figure is checked against a plaintext reference computed from the
//!    generated CSVs; any difference fails the run.
//!
//! Stages are public methods so fault tests can interleave crashes,
//! revocations and tampering.

use crate::Testnet;
use crate::generate::{self, DIAGNOSES, PROVINCES};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// National clearing node (国家医保局 清算平台).
pub const NATIONAL: &str = "100000";
/// Statistics bureau (coordinator and combiner of the aggregate's committee).
pub const BUREAU: &str = "nbs";
/// National data administration (third member of the aggregate's committee).
pub const NDA: &str = "nda";
/// The aggregate's decryption committee: bureau, national node, data administration.
pub const COMMITTEE: [&str; 3] = [BUREAU, NATIONAL, NDA];
/// Members whose partial decryptions suffice.
pub const THRESHOLD: u8 = 2;
/// The cross-province clearing agreement.
pub const CLEARING_AGREEMENT: &str = "DSA-XS-CLEARING-2026";
/// Purpose of the clearing grants.
pub const CLEARING_PURPOSE: &str = "monthly cross-province clearing";
/// Dataset id every province imports its month under.
pub const DATASET: &str = "settlement-2026-11";
/// The homomorphic query id.
pub const QUERY: &str = "fund-by-icd3-x-insured-2026-11";
/// Concurrent node commands (the machines have 2 cores).
const WORKERS: usize = 2;
/// Concurrent commands in the relay and confirmation stages, which wait on
/// fsyncs and round trips more than on the CPU.
const IO_WORKERS: usize = 4;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Provinces (2..=31, the first P of [`PROVINCES`]).
    pub provinces: usize,
    /// Records to draw (all provinces together).
    pub records: u64,
    /// Seed.
    pub seed: u64,
    /// Minimum contributors of the aggregate.
    pub k: u32,
    /// The network's cryptographic suite.
    pub suite: pdx_crypto::Suite,
    /// Contributions carry zero-knowledge proofs (the CA makes the CRS first).
    pub proofs: bool,
}

/// Reference figures computed directly from the generated CSVs.
#[derive(Clone, Debug, Default)]
pub struct Reference {
    /// (insured, treatment) → (records, fund fen).
    pub matrix: BTreeMap<(String, String), (u64, i64)>,
    /// `ICD3|insured` → (fund fen, records), per treatment province.
    pub by_category: BTreeMap<String, BTreeMap<String, (i64, u64)>>,
}

impl Reference {
    /// Net position per province (receivable − payable, fen).
    pub fn net(&self) -> BTreeMap<String, i64> {
        let mut net = BTreeMap::new();
        for ((insured, treatment), (_, fen)) in &self.matrix {
            *net.entry(treatment.clone()).or_default() += fen;
            *net.entry(insured.clone()).or_default() -= fen;
        }
        net
    }

    /// Aggregate totals over `contributors` (treatment provinces).
    pub fn aggregate(&self, contributors: &[String]) -> BTreeMap<String, (i64, u64)> {
        let mut out: BTreeMap<String, (i64, u64)> = BTreeMap::new();
        for (cat, per) in &self.by_category {
            for (t, (fen, n)) in per {
                if contributors.contains(t) {
                    let e = out.entry(cat.clone()).or_default();
                    e.0 += fen;
                    e.1 += n;
                }
            }
        }
        out.retain(|_, v| v.1 > 0);
        out
    }
}

/// A settlement network and the scenario's state.
#[derive(Debug)]
pub struct Settlement {
    /// The nodes.
    pub net: Testnet,
    /// Directory.
    pub dir: PathBuf,
    /// Options.
    pub opts: Options,
    /// Province codes.
    pub provinces: Vec<String>,
    /// Generated CSV per treatment province.
    pub csv: Vec<(String, PathBuf)>,
    /// Stage timings and notes.
    pub stages: Vec<Value>,
    /// Release id per treatment province (after [`Settlement::clearing_releases`]).
    pub releases: BTreeMap<String, String>,
    /// Provinces that granted `clearing` to the national node.
    pub granted: std::collections::BTreeSet<String>,
    /// Digest of the proof CRS installed on the nodes (when `opts.proofs`).
    pub crs: Option<String>,
    started: Instant,
}

pub(crate) fn s(p: &Path) -> String {
    p.display().to_string()
}

pub(crate) fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Borrows owned arguments for [`Testnet::pdx`] and friends.
pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Runs `f` over `items` with at most `workers` at a time; the first error wins.
pub(crate) fn parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let Ok(mut n) = next.lock() else { return };
                        let i = *n;
                        *n += 1;
                        i
                    };
                    if i >= items.len() {
                        return;
                    }
                    let r = f(&items[i]);
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .map_err(|_| anyhow!("a worker panicked"))?
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow!("a worker stopped early"))))
        .collect()
}

fn province_name(code: &str) -> &'static str {
    PROVINCES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
        .unwrap_or("?")
}

impl Settlement {
    /// Creates the network, generates the month's records and the insured
    /// registries, starts every node.
    pub fn setup(dir: &Path, opts: Options) -> Result<Settlement> {
        if !(2..=31).contains(&opts.provinces) {
            bail!("--provinces must be between 2 and 31");
        }
        if opts.k as usize > opts.provinces {
            bail!(
                "k = {} needs at least that many provinces (--provinces {})",
                opts.k,
                opts.provinces
            );
        }
        let started = Instant::now();
        let mut net = Testnet::create_in(opts.suite, dir, "settlement")?;
        net.add_node(NATIONAL, "国家医疗保障局 national clearing platform")?;
        net.add_node(BUREAU, "国家统计局 statistics bureau")?;
        net.add_node(NDA, "国家数据局 national data administration")?;
        let provinces: Vec<String> = PROVINCES[..opts.provinces]
            .iter()
            .map(|(c, _)| c.to_string())
            .collect();
        for (code, name) in &PROVINCES[..opts.provinces] {
            net.add_node(code, &format!("{name} 医疗保障局"))?;
        }
        net.connect_all()?;
        net.start_all()?;
        let mut me = Settlement {
            net,
            dir: dir.to_path_buf(),
            opts,
            provinces,
            csv: Vec::new(),
            stages: Vec::new(),
            releases: BTreeMap::new(),
            granted: Default::default(),
            crs: None,
            started,
        };
        me.stage(
            "network",
            started,
            format!(
                "CA, national node {NATIONAL}, statistics bureau {BUREAU}, data administration {NDA} and {} provinces on 127.0.0.1",
                me.opts.provinces
            ),
        );
        let t = Instant::now();
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let gen_opts = generate::Options {
            provinces: me.opts.provinces,
            records: me.opts.records,
            seed: me.opts.seed,
            treated_in: None,
            month: (2026, 11),
        };
        // The registries depend only on (seed, province): written on a
        // second thread while the records are drawn.
        let (records, registries) = std::thread::scope(|scope| {
            let registries = scope.spawn(|| {
                for (p, (code, _)) in PROVINCES.iter().enumerate().take(gen_opts.provinces) {
                    generate::registry(&gen_opts, p, &data.join(format!("registry-{code}.csv")))?;
                }
                Ok::<_, anyhow::Error>(())
            });
            let records = generate::settlement_by_province(&gen_opts, &data);
            (records, registries.join())
        });
        registries.map_err(|_| anyhow!("the registry writer panicked"))??;
        let (summary, csv) = records?;
        me.csv = csv;
        me.stage(
            "generate",
            t,
            format!(
                "{} settlement records of November 2026 and {} insured registries in {}",
                summary.rows,
                me.opts.provinces,
                data.display()
            ),
        );
        Ok(me)
    }

    fn stage(&mut self, name: &str, since: Instant, detail: String) {
        let secs = since.elapsed().as_secs_f64();
        // Progress goes to stderr so `--json` output stays parseable.
        eprintln!(
            "[{:>7.1}s] {name:<18} {detail} ({secs:.1}s)",
            self.started.elapsed().as_secs_f64()
        );
        self.stages
            .push(json!({"stage": name, "seconds": secs, "detail": detail}));
    }

    fn home(&self, dept: &str) -> Result<String> {
        self.net.home(dept)
    }

    fn schema_path(&self) -> Result<String> {
        let p = self.dir.join("settlement.toml");
        if !p.exists() {
            std::fs::write(
                &p,
                include_str!("../../schemas/medical_insurance/settlement.toml"),
            )?;
        }
        Ok(s(&p))
    }

    fn registry_path(&self, code: &str) -> String {
        s(&self.dir.join("data").join(format!("registry-{code}.csv")))
    }

    /// Step 2: every province imports the records it treated.
    pub fn import(&mut self) -> Result<()> {
        let t = Instant::now();
        let schema = self.schema_path()?;
        let jobs: Vec<(String, String)> = self.csv.iter().map(|(c, p)| (c.clone(), s(p))).collect();
        let rows = parallel(&jobs, WORKERS, |(code, csv)| {
            let v = self.net.pdx_json(&[
                "import",
                "--home",
                &self.home(code)?,
                "--schema",
                &schema,
                "--csv",
                csv,
                "--dataset",
                DATASET,
            ])?;
            Ok(v["rows"].as_u64().unwrap_or(0))
        })?;
        self.stage(
            "import",
            t,
            format!(
                "{} provinces imported {} records under the settlement schema",
                jobs.len(),
                rows.iter().sum::<u64>()
            ),
        );
        Ok(())
    }

    /// Key directory: the national node collects every province's signed
    /// encryption-key document, then each province fetches the others' from it
    /// (trusted for their signatures and certificates, not for the channel).
    pub fn exchange_keys(&mut self) -> Result<()> {
        let t = Instant::now();
        let national = self.home(NATIONAL)?;
        for code in &self.provinces {
            self.net
                .pdx_ok(&["keys", "fetch", "--home", &national, "--peer", code])?;
        }
        let provinces = self.provinces.clone();
        parallel(&provinces, WORKERS, |code| {
            self.net.pdx_ok(&[
                "keys",
                "fetch",
                "--home",
                &self.home(code)?,
                "--peer",
                NATIONAL,
            ])
        })?;
        self.stage(
            "key directory",
            t,
            format!(
                "{} provinces fetched each other's encryption-key documents through the national directory",
                provinces.len()
            ),
        );
        Ok(())
    }

    /// Step 3a (one province): grant `clearing` to the national node.
    pub fn grant_clearing(&mut self, code: &str) -> Result<()> {
        if self.granted.contains(code) {
            return Ok(());
        }
        self.net.pdx_ok(&[
            "grant",
            "--home",
            &self.home(code)?,
            "--dataset",
            DATASET,
            "--to",
            NATIONAL,
            "--profile",
            "clearing",
            "--purpose",
            CLEARING_PURPOSE,
            "--agreement",
            CLEARING_AGREEMENT,
        ])?;
        self.granted.insert(code.to_string());
        Ok(())
    }

    /// `pdx` arguments: province `code` confirms every relayed release against
    /// its registry, to the national node.
    pub fn confirm_args(&self, code: &str) -> Result<Vec<String>> {
        let (home, registry) = (self.home(code)?, self.registry_path(code));
        Ok(owned(&[
            "settle",
            "confirm",
            "--home",
            &home,
            "--all",
            "--registry",
            &registry,
            "--to",
            NATIONAL,
        ]))
    }

    /// `pdx` arguments: province `code` contributes to the query in `doc`.
    pub fn contribute_args(&self, code: &str, doc: &str) -> Result<Vec<String>> {
        let home = self.home(code)?;
        Ok(owned(&[
            "he",
            "contribute",
            "--home",
            &home,
            "--query",
            doc,
            "--dataset",
            DATASET,
            "--to",
            NATIONAL,
        ]))
    }

    /// `pdx` arguments: the national node adds the contributions and sends the sum to the bureau.
    pub fn aggregate_args(&self) -> Result<Vec<String>> {
        let home = self.home(NATIONAL)?;
        Ok(owned(&[
            "he",
            "aggregate",
            "--home",
            &home,
            "--query",
            QUERY,
            "--to",
            BUREAU,
        ]))
    }

    /// The `pdx` arguments with which the national node fetches `code`'s clearing release.
    pub fn fetch_args(&self, code: &str) -> Result<Vec<String>> {
        let home = self.home(NATIONAL)?;
        Ok(owned(&[
            "fetch",
            "--home",
            &home,
            "--peer",
            code,
            "--dataset",
            DATASET,
            "--profile",
            "clearing",
            "--purpose",
            CLEARING_PURPOSE,
            "--agreement",
            CLEARING_AGREEMENT,
            "--retries",
            "8",
            "--json",
        ]))
    }

    /// Step 3a: each province grants `clearing` to the national node, which
    /// fetches every province's release (provinces already fetched are skipped).
    pub fn clearing_releases(&mut self) -> Result<()> {
        let t = Instant::now();
        let todo: Vec<String> = self
            .provinces
            .iter()
            .filter(|p| !self.releases.contains_key(*p))
            .cloned()
            .collect();
        for code in &todo {
            self.grant_clearing(code)?;
        }
        let fetched = parallel(&todo, WORKERS, |code| {
            let v = self.net.pdx_ok(&as_strs(&self.fetch_args(code)?))?;
            let v: Value = serde_json::from_str(&v)?;
            let release = v["release"]
                .as_str()
                .ok_or_else(|| anyhow!("fetch from {code} returned no release id: {v}"))?
                .to_string();
            Ok((code.clone(), release, v["records"].as_u64().unwrap_or(0)))
        })?;
        let records: u64 = fetched.iter().map(|f| f.2).sum();
        for (code, release, _) in fetched {
            self.releases.insert(code, release);
        }
        self.stage(
            "clearing release",
            t,
            format!(
                "national node fetched {} clearing releases ({records} records; identities and diagnoses sealed per record for the insured province)",
                todo.len()
            ),
        );
        Ok(())
    }

    /// Step 3b: the national node relays each insured province its records.
    pub fn relay(&mut self) -> Result<()> {
        let t = Instant::now();
        let national = self.home(NATIONAL)?;
        // One connection per insured province, its parts on parallel streams.
        let provinces = self.provinces.clone();
        let forwarded = parallel(&provinces, IO_WORKERS, |p| {
            let v = self.net.pdx_json(&[
                "forward",
                "--home",
                &national,
                "--all-releases",
                "--to",
                p,
            ])?;
            Ok(v.as_array().map(Vec::len).unwrap_or(0))
        })?;
        self.stage(
            "relay",
            t,
            format!(
                "national node forwarded {} per-province parts it cannot read",
                forwarded.iter().sum::<usize>()
            ),
        );
        Ok(())
    }

    /// Step 4a: insured provinces confirm against their registries.
    pub fn confirm(&mut self) -> Result<()> {
        let t = Instant::now();
        let provinces = self.provinces.clone();
        let confirmed = parallel(&provinces, IO_WORKERS, |code| {
            let v = self.net.pdx_json(&as_strs(&self.confirm_args(code)?))?;
            let list = v.as_array().cloned().unwrap_or_default();
            let rejected: u64 = list.iter().filter_map(|c| c["rejected"].as_u64()).sum();
            if rejected > 0 {
                bail!("{code} refused {rejected} records against its registry: {v}");
            }
            Ok(list.len())
        })?;
        self.stage(
            "confirm",
            t,
            format!(
                "insured provinces opened the identities, checked them against their registries and sent {} signed confirmations",
                confirmed.iter().sum::<usize>()
            ),
        );
        Ok(())
    }

    /// Step 4b: the national node's clearing matrix and net positions.
    pub fn clearing(&mut self) -> Result<Value> {
        let t = Instant::now();
        let v = self
            .net
            .pdx_json(&["settle", "clearing", "--home", &self.home(NATIONAL)?])?;
        self.stage(
            "clearing",
            t,
            format!(
                "national node: {} matrix cells from {} releases, {} confirmations",
                v["matrix"].as_array().map(Vec::len).unwrap_or(0),
                v["releases"],
                v["confirmations"]
            ),
        );
        Ok(v)
    }

    /// The category list of the aggregate: ICD-10 categories × insured provinces.
    fn categories(&self) -> Vec<String> {
        let mut icd: Vec<&str> = DIAGNOSES.iter().map(|d| &d[..3]).collect();
        icd.sort_unstable();
        icd.dedup();
        let mut out = Vec::new();
        for i in icd {
            for p in &self.provinces {
                out.push(format!("{i}|{p}"));
            }
        }
        out
    }

    /// The CA makes the proof CRS; every contributor, the aggregator and the
    /// coordinator install it (checked against the digest the CA printed).
    pub fn zk_crs(&mut self) -> Result<String> {
        let t = Instant::now();
        let file = self.dir.join("he-proofs.crs");
        let made = self.net.pdx_json(&[
            "ca",
            "zk-crs",
            "--dir",
            &s(&self.net.ca_dir()),
            "--out",
            &s(&file),
        ])?;
        let digest = made["digest"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("pdx ca zk-crs printed no digest: {made}"))?
            .to_string();
        let mut homes = vec![NATIONAL.to_string(), BUREAU.to_string()];
        homes.extend(self.provinces.iter().cloned());
        parallel(&homes, WORKERS, |d| {
            self.net.pdx_ok(&[
                "he",
                "crs",
                "install",
                "--home",
                &self.home(d)?,
                "--file",
                &s(&file),
                "--digest",
                &digest,
            ])
        })?;
        self.stage(
            "zk crs",
            t,
            format!(
                "the CA made the proof CRS {} ({} bytes); {} nodes installed it",
                &digest[..16],
                made["bytes"],
                homes.len()
            ),
        );
        self.crs = Some(digest.clone());
        Ok(digest)
    }

    /// The committee members fetch each other's encryption keys through the
    /// national directory (sub-shares are sealed for them).
    fn committee_keys(&self) -> Result<()> {
        let national = self.home(NATIONAL)?;
        for m in [BUREAU, NDA] {
            self.net
                .pdx_ok(&["keys", "fetch", "--home", &national, "--peer", m])?;
        }
        for m in [BUREAU, NDA] {
            self.net.pdx_ok(&[
                "keys",
                "fetch",
                "--home",
                &self.home(m)?,
                "--peer",
                NATIONAL,
            ])?;
        }
        Ok(())
    }

    /// Step 5a: the committee's query: the bureau proposes, the national node
    /// and the data administration deal their sub-shares, the bureau signs.
    pub fn he_query(&mut self) -> Result<String> {
        self.he_query_with(THRESHOLD)
    }

    /// [`Settlement::he_query`] with another threshold (3: all three members).
    pub fn he_query_with(&mut self, threshold: u8) -> Result<String> {
        if self.opts.proofs && self.crs.is_none() {
            self.zk_crs()?;
        }
        let t = Instant::now();
        self.committee_keys()?;
        let cats = self.dir.join("categories.txt");
        std::fs::write(&cats, self.categories().join("\n"))?;
        let doc = self.dir.join(format!("{QUERY}.query"));
        let contributors = self.provinces.join(",");
        let k = self.opts.k.to_string();
        let schema = self.schema_path()?;
        let bureau = self.home(BUREAU)?;
        let cats = s(&cats);
        let committee = COMMITTEE.join(",");
        let threshold_text = threshold.to_string();
        let mut keygen = vec![
            "he",
            "keygen",
            "--home",
            &bureau,
            "--query",
            QUERY,
            "--schema",
            &schema,
            "--value",
            "fund_pay_sumamt",
            "--group-by",
            "diag_code:icd10-category",
            "--group-by",
            "insuplc_admdvs:province",
            "--categories",
            &cats,
            "--k",
            &k,
            "--contributor",
            &contributors,
            "--aggregator",
            NATIONAL,
            "--committee",
            &committee,
            "--threshold",
            &threshold_text,
        ];
        if let Some(d) = &self.crs {
            keygen.extend(["--crs", d.as_str()]);
        }
        let v = self.net.pdx_json(&keygen)?;
        for m in [NATIONAL, NDA] {
            self.net.pdx_ok(&[
                "he",
                "key-share",
                "--home",
                &self.home(m)?,
                "--query",
                QUERY,
            ])?;
        }
        self.net.pdx_ok(&[
            "he",
            "key-finish",
            "--home",
            &self.home(BUREAU)?,
            "--query",
            QUERY,
            "--out",
            &s(&doc),
        ])?;
        self.stage(
            "he keygen",
            t,
            format!(
                "committee {} ({threshold}-of-{}) made the key of query {QUERY}, no member holding it whole: {} categories, k = {}, aggregator {NATIONAL}",
                COMMITTEE.join(","),
                COMMITTEE.len(),
                v["categories"],
                v["k"]
            ),
        );
        Ok(s(&doc))
    }

    /// Step 5b: provinces contribute (all of them, or `only`).
    pub fn he_contribute(&mut self, doc: &str, only: Option<&[String]>) -> Result<()> {
        let t = Instant::now();
        let who: Vec<String> = only
            .map(<[String]>::to_vec)
            .unwrap_or(self.provinces.clone());
        let bytes = parallel(&who, WORKERS, |code| {
            let v = self
                .net
                .pdx_json(&as_strs(&self.contribute_args(code, doc)?))?;
            Ok(v["bytes"].as_u64().unwrap_or(0))
        })?;
        self.stage(
            "he contribute",
            t,
            format!(
                "{} provinces sent encrypted per-category sums ({} bytes each)",
                who.len(),
                bytes.first().copied().unwrap_or(0)
            ),
        );
        Ok(())
    }

    /// Step 5c: the national node adds, the bureau decrypts.
    pub fn he_aggregate(&mut self) -> Result<Value> {
        let t = Instant::now();
        let a = self.net.pdx_json(&as_strs(&self.aggregate_args()?))?;
        let check = self.net.pdx_json(&[
            "he",
            "verify-sum",
            "--home",
            &self.home(NATIONAL)?,
            "--query",
            QUERY,
        ])?;
        if check["verdict"] != "ok" {
            bail!("the aggregator's own verify-sum failed: {check}");
        }
        // Two of the three members decrypt partially: the threshold.
        for m in [BUREAU, NDA] {
            self.net
                .pdx_ok(&["he", "partial", "--home", &self.home(m)?, "--query", QUERY])?;
        }
        let d = self.net.pdx_json(&[
            "he",
            "combine",
            "--home",
            &self.home(BUREAU)?,
            "--query",
            QUERY,
        ])?;
        self.stage(
            "he aggregate",
            t,
            format!(
                "national node added {} contributions (verify-sum ok); partial decryptions of {} combined by the bureau: {} non-empty categories",
                a["contributors"].as_array().map(Vec::len).unwrap_or(0),
                d["partials_from"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                d["categories"].as_array().map(Vec::len).unwrap_or(0)
            ),
        );
        Ok(d)
    }

    /// Step 6: the regulator exports, verifies (with witnesses) and reconciles every log.
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
                .pdx_ok(&["audit", "export", "--home", &self.home(d)?, "--out", b])
        })?;
        let ca = s(&self.net.ca_dir().join("ca.crt"));
        let verdicts = parallel(&bundles, WORKERS, |(d, b)| {
            let mut args: Vec<&str> = vec!["audit", "verify", b, "--ca", &ca, "--json"];
            for (other, ob) in &bundles {
                if other != d {
                    args.push("--witness");
                    args.push(ob);
                }
            }
            let out = self.net.pdx(&args)?;
            let report: Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("audit verify of {d}"))?;
            Ok(
                json!({"dept": d, "verdict": report["verdict"], "entries": report["entries"],
                      "exit": out.status.code()}),
            )
        })?;
        let mut args: Vec<&str> = vec!["audit", "reconcile", "--ca", &ca, "--json"];
        for (_, b) in &bundles {
            args.push(b);
        }
        let out = self.net.pdx(&args)?;
        let reconcile: Value =
            serde_json::from_slice(&out.stdout).context("audit reconcile output")?;
        let bad: Vec<&Value> = verdicts.iter().filter(|v| v["exit"] != 0).collect();
        self.stage(
            "regulator",
            t,
            format!(
                "{} logs verified with {} witnesses each ({} not valid); reconcile: {} transfers matched, {} mismatches",
                verdicts.len(),
                verdicts.len() - 1,
                bad.len(),
                reconcile["matched"],
                reconcile["mismatches"].as_array().map(Vec::len).unwrap_or(0)
            ),
        );
        Ok(json!({"verdicts": verdicts, "reconcile": reconcile,
                  "reconcile_exit": out.status.code()}))
    }

    /// The plaintext reference, read back from the generated CSVs.
    pub fn reference(&self) -> Result<Reference> {
        let mut r = Reference::default();
        for (treatment, path) in &self.csv {
            let mut rd = csv::Reader::from_path(path)?;
            let h = rd.headers()?.clone();
            let col = |n: &str| {
                h.iter()
                    .position(|x| x == n)
                    .ok_or_else(|| anyhow!("{} has no column {n}", path.display()))
            };
            let (ins, fund, diag) = (
                col("insuplc_admdvs")?,
                col("fund_pay_sumamt")?,
                col("diag_code")?,
            );
            for rec in rd.records() {
                let rec = rec?;
                let prefix = |v: &str, n: usize| {
                    v.get(..n)
                        .map(String::from)
                        .ok_or_else(|| anyhow!("{}: bad value {v:?}", path.display()))
                };
                let insured = format!("{}0000", prefix(&rec[ins], 2)?);
                let fen = pdx_schemas::types::decimal_to_units(&rec[fund], 2)
                    .ok_or_else(|| anyhow!("bad amount {}", &rec[fund]))?
                    as i64;
                let cell = r
                    .matrix
                    .entry((insured.clone(), treatment.clone()))
                    .or_default();
                cell.0 += 1;
                cell.1 += fen;
                let cat = format!("{}|{insured}", prefix(&rec[diag], 3)?);
                let e = r
                    .by_category
                    .entry(cat)
                    .or_default()
                    .entry(treatment.clone())
                    .or_default();
                e.0 += fen;
                e.1 += 1;
            }
        }
        Ok(r)
    }

    /// Compares the national node's clearing and the bureau's aggregate with the reference.
    pub fn check(
        &self,
        reference: &Reference,
        clearing: &Value,
        aggregate: &Value,
    ) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut seen = 0usize;
        for c in clearing["matrix"].as_array().into_iter().flatten() {
            let key = (
                c["insured"].as_str().unwrap_or("").to_string(),
                c["treatment"].as_str().unwrap_or("").to_string(),
            );
            let want = reference.matrix.get(&key).copied().unwrap_or((0, 0));
            let got = (
                c["records"].as_u64().unwrap_or(0),
                c["amount_fen"].as_i64().unwrap_or(0),
            );
            let confirmed = (
                c["confirmed_records"].as_u64().unwrap_or(0),
                c["confirmed_fen"].as_i64().unwrap_or(0),
            );
            if got != want || confirmed != want {
                problems.push(format!(
                    "clearing {key:?}: node {got:?}, confirmed {confirmed:?}, reference {want:?}"
                ));
            }
            seen += 1;
        }
        if seen != reference.matrix.len() {
            problems.push(format!(
                "clearing matrix has {seen} cells, reference {}",
                reference.matrix.len()
            ));
        }
        let net = reference.net();
        for p in clearing["net_positions"].as_array().into_iter().flatten() {
            let code = p["province"].as_str().unwrap_or("");
            let want = net.get(code).copied().unwrap_or(0);
            for field in ["net_fen", "confirmed_net_fen"] {
                if p[field].as_i64() != Some(want) {
                    problems.push(format!(
                        "net position of {code}: {field} {} vs reference {want}",
                        p[field]
                    ));
                }
            }
        }
        for what in ["unconfirmed", "excluded"] {
            if let Some(u) = clearing[what].as_array().filter(|u| !u.is_empty()) {
                problems.push(format!("{what}: {u:?}"));
            }
        }
        problems.extend(aggregate_problems(reference, aggregate));
        Ok(problems)
    }

    /// Peak memory of every node (KiB).
    pub fn peak_memory(&self) -> BTreeMap<String, u64> {
        self.net
            .nodes
            .iter()
            .filter_map(|n| self.net.peak_rss_kib(&n.dept).map(|m| (n.dept.clone(), m)))
            .collect()
    }

    /// Total wall time so far.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

fn yuan(fen: i64) -> String {
    pdx_schemas::types::units_to_decimal(fen.into(), 2)
}

/// How the decrypted aggregate differs from the plaintext reference over the
/// contributors it lists (empty: it equals it).
pub fn aggregate_problems(reference: &Reference, aggregate: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let contributors: Vec<String> = aggregate["contributors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(String::from))
        .collect();
    let want = reference.aggregate(&contributors);
    let mut got = BTreeMap::new();
    for c in aggregate["categories"].as_array().into_iter().flatten() {
        let fen = c["sums"][0]
            .as_str()
            .and_then(|x| pdx_schemas::types::decimal_to_units(x, 2))
            .unwrap_or(-1) as i64;
        got.insert(
            c["category"].as_str().unwrap_or("").to_string(),
            (fen, c["count"].as_u64().unwrap_or(0)),
        );
    }
    if got != want {
        let diff: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .take(5)
            .map(|(k, v)| format!("{k}: reference {v:?}, decrypted {:?}", got.get(k)))
            .collect();
        problems.push(format!(
            "homomorphic aggregate differs from the reference ({} vs {} categories): {}",
            got.len(),
            want.len(),
            diff.join("; ")
        ));
    }
    problems
}

/// Runs the whole scenario; fails if any figure differs from the plaintext reference.
pub fn run(dir: &Path, opts: Options, quiet_tables: bool) -> Result<Value> {
    let mut st = Settlement::setup(dir, opts)?;
    st.import()?;
    st.exchange_keys()?;
    st.clearing_releases()?;
    st.relay()?;
    st.confirm()?;
    let clearing = st.clearing()?;
    let doc = st.he_query()?;
    st.he_contribute(&doc, None)?;
    let aggregate = st.he_aggregate()?;
    let regulator = st.regulator()?;
    let t = Instant::now();
    let reference = st.reference()?;
    let problems = st.check(&reference, &clearing, &aggregate)?;
    st.stage(
        "reference check",
        t,
        if problems.is_empty() {
            "clearing matrix, net positions and aggregate equal the plaintext reference".into()
        } else {
            format!("{} differences", problems.len())
        },
    );
    let memory = st.peak_memory();
    st.net.stop_all(Duration::from_secs(10))?;
    let audit_ok = regulator["verdicts"]
        .as_array()
        .is_some_and(|v| v.iter().all(|x| x["exit"] == 0))
        && regulator["reconcile_exit"] == 0;
    let summary = json!({
        "provinces": st.provinces, "records": st.opts.records, "seed": st.opts.seed,
        "suite": st.opts.suite,
        "stages": st.stages, "total_seconds": st.elapsed(),
        "clearing": clearing, "aggregate": aggregate, "regulator": regulator,
        "peak_memory_kib": memory, "reference_problems": problems,
        "dir": s(dir),
    });
    if !quiet_tables {
        print_summary(&summary, &reference);
    }
    if !problems.is_empty() {
        bail!(
            "the scenario's figures differ from the plaintext reference:\n  {}",
            problems.join("\n  ")
        );
    }
    if !audit_ok {
        bail!("the regulator's audit verification or reconciliation failed: {regulator}");
    }
    Ok(summary)
}

fn print_summary(v: &Value, reference: &Reference) {
    let provinces: Vec<String> = v["provinces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    println!(
        "\n== Clearing matrix (fund payments owed, yuan; rows: insured province, columns: treatment province)"
    );
    if provinces.len() <= 8 {
        print!("{:<14}", "insured\\treated");
        for p in &provinces {
            print!("{:>16}", format!("{p} {}", province_name(p)));
        }
        println!();
        for i in &provinces {
            print!("{:<14}", format!("{i} {}", province_name(i)));
            for t in &provinces {
                let fen = reference
                    .matrix
                    .get(&(i.clone(), t.clone()))
                    .map(|c| c.1)
                    .unwrap_or(0);
                print!("{:>16}", if i == t { "-".into() } else { yuan(fen) });
            }
            println!();
        }
    } else {
        let mut cells: Vec<_> = reference.matrix.iter().collect();
        cells.sort_by_key(|(_, (_, fen))| std::cmp::Reverse(*fen));
        println!("({} cells; the 10 largest)", cells.len());
        for ((i, t), (n, fen)) in cells.into_iter().take(10) {
            println!(
                "  {i} {} owes {t} {}: {:>16} yuan ({n} records)",
                province_name(i),
                province_name(t),
                yuan(*fen)
            );
        }
    }
    println!("\n== Net positions (confirmed by the insured provinces; + receives, - pays)");
    for p in v["clearing"]["net_positions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let code = p["province"].as_str().unwrap_or("");
        println!(
            "  {code} {:<4} {:>18}",
            province_name(code),
            p["confirmed_net"].as_str().unwrap_or("")
        );
    }
    println!(
        "\n== Top ICD-10 categories by fund spending (homomorphic aggregate, all insured provinces)"
    );
    let mut by_icd: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    for c in v["aggregate"]["categories"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let cat = c["category"].as_str().unwrap_or("");
        let icd = cat.split('|').next().unwrap_or("").to_string();
        let fen = c["sums"][0]
            .as_str()
            .and_then(|x| pdx_schemas::types::decimal_to_units(x, 2))
            .unwrap_or(0) as i64;
        let e = by_icd.entry(icd).or_default();
        e.0 += fen;
        e.1 += c["count"].as_u64().unwrap_or(0);
    }
    let mut top: Vec<_> = by_icd.into_iter().collect();
    top.sort_by_key(|(_, (fen, _))| std::cmp::Reverse(*fen));
    for (icd, (fen, n)) in top.into_iter().take(10) {
        println!("  {icd:<5} {:>18} yuan  {n:>9} cases", yuan(fen));
    }
    println!("\n== Audit (regulator, offline)");
    for x in v["regulator"]["verdicts"].as_array().into_iter().flatten() {
        println!(
            "  {:<8} {:>8} entries  {}",
            x["dept"].as_str().unwrap_or(""),
            x["entries"],
            x["verdict"].as_str().unwrap_or("")
        );
    }
    println!(
        "  reconcile: {} transfers matched, {} mismatches",
        v["regulator"]["reconcile"]["matched"],
        v["regulator"]["reconcile"]["mismatches"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    );
    println!("\n== Time per stage");
    for st in v["stages"].as_array().into_iter().flatten() {
        println!(
            "  {:<18} {:>8.1} s",
            st["stage"].as_str().unwrap_or(""),
            st["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "  {:<18} {:>8.1} s",
        "total",
        v["total_seconds"].as_f64().unwrap_or(0.0)
    );
    println!("\n== Peak memory per node");
    for (d, kib) in v["peak_memory_kib"].as_object().into_iter().flatten() {
        println!("  {d:<8} {:>8.1} MB", kib.as_f64().unwrap_or(0.0) / 1024.0);
    }
    println!(
        "\nall figures equal the plaintext reference; node homes kept in {}",
        v["dir"].as_str().unwrap_or("")
    );
}
