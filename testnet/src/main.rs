//! `pdx-testnet`: run a network of real pdx nodes on one machine.
#![forbid(unsafe_code)]

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use pdx_testnet::Testnet;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "pdx-testnet",
    version,
    about = "Run networks of real pdx nodes on 127.0.0.1"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a CA and nodes, configure peers, start `pdx serve` for each.
    Up {
        /// Directory for the CA, certificates and node homes.
        #[arg(long)]
        dir: PathBuf,
        /// Nodes as DEPT=NAME,DEPT=NAME (e.g. 100000=National,440000=Guangdong).
        #[arg(long)]
        nodes: String,
        /// Network name.
        #[arg(long, default_value = "testnet")]
        network: String,
    },
    /// Show the nodes of a testnet and whether they run.
    Status {
        /// Testnet directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Generate synthetic data.
    #[command(subcommand)]
    Gen(Gen),
    /// Run a scenario end to end on real nodes.
    #[command(subcommand)]
    Scenario(Scenario),
    /// Serve the settlement-calculation backend (HTTP+JSON) of an insured
    /// province, for trying and testing online services.
    Backend {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        /// ok | slow | error | invalid | huge (switch later: POST /mode/NAME).
        #[arg(long, default_value = "ok")]
        mode: String,
        /// The insured province's benefit policy (TOML: province,
        /// deductible_fen, annual_cap_fen, inpatient_ratio, outpatient_ratio):
        /// stateful per person, decisions kept in GET /ledger.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(Bench),
    /// Stop every node (SIGTERM, then SIGKILL after 10 s).
    Down {
        /// Testnet directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum Gen {
    /// Cross-province settlement records (CSV, the settlement schema's columns).
    Settlement {
        /// Participating provinces (2..31).
        #[arg(long, default_value_t = 5)]
        provinces: usize,
        /// Records to draw.
        #[arg(long)]
        records: u64,
        /// Seed (same seed, same file).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Only records treated in this province (admdvs code).
        #[arg(long)]
        treated_in: Option<String>,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// The insured registry of one province (`psn_no,certno,psn_name,insuplc_admdvs`),
    /// consistent with `gen settlement` of the same provinces, records and seed.
    Registry {
        /// Participating provinces (2..31).
        #[arg(long, default_value_t = 5)]
        provinces: usize,
        /// Records drawn by `gen settlement`.
        #[arg(long)]
        records: u64,
        /// Seed of `gen settlement`.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The insured province (its admdvs code, e.g. 110000).
        #[arg(long)]
        province: String,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Online calls: gateway -> hub -> provider -> backend, against the
    /// backend called directly; throughput (closed loop) and latency at a
    /// fixed offered rate (open loop); then reconciles every log.
    Calls {
        /// Directory for the network (must not exist yet).
        #[arg(long)]
        dir: PathBuf,
        /// The service definition (settlement_calc.toml).
        #[arg(long, default_value = "schemas/medical_insurance/settlement_calc.toml")]
        schema: PathBuf,
        /// Seconds of the throughput run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent callers of the throughput run.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Offered rate of the latency run (calls per second).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Calls of the latency run.
        #[arg(long, default_value_t = 10_000)]
        calls: u64,
    },
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Cross-province medical-insurance settlement, end to end: clearing through
    /// the national node, confirmations, a homomorphic aggregate, the regulator's
    /// audit; every figure checked against a plaintext reference.
    Settlement {
        /// Provinces (2..31).
        #[arg(long, default_value_t = 5)]
        provinces: usize,
        /// Records (all provinces together).
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Directory for the network (kept for inspection; must not exist yet).
        #[arg(long, default_value = "settlement-net")]
        dir: PathBuf,
        /// Seed of the generated month.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Minimum contributors of the homomorphic aggregate.
        #[arg(long, default_value_t = 3)]
        k: u32,
        /// The network's cryptographic suite: intl or gm (SM2/SM3/SM4).
        #[arg(long, default_value = "intl", value_parser = parse_suite)]
        suite: pdx_crypto::Suite,
        /// Contributions without zero-knowledge proofs (proving costs about
        /// 3 s of 2-core time per 2,048 slots and contributor).
        #[arg(long)]
        no_proofs: bool,
        /// Print the summary as JSON (progress goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Real-time direct settlement: hospitals call the insured province's
    /// benefit calculation through the hub, each ok call becomes a record,
    /// daily incremental uploads, month-end clearing with injected disputes;
    /// every figure checked against the backends' own ledgers.
    Realtime {
        /// Provinces (2..31).
        #[arg(long, default_value_t = 4)]
        provinces: usize,
        /// Insured patients (all provinces together).
        #[arg(long, default_value_t = 2_000)]
        patients: u64,
        /// Simulated days of November 2026 (1..30).
        #[arg(long, default_value_t = 3)]
        days: u32,
        /// Offered calls per second over all hospitals (open loop).
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Settlements over the month (default: 2 per patient).
        #[arg(long)]
        settlements: Option<u64>,
        /// Directory for the network (kept for inspection; must not exist yet).
        #[arg(long, default_value = "realtime-net")]
        dir: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The network's cryptographic suite: intl or gm (SM2/SM3/SM4).
        #[arg(long, default_value = "intl", value_parser = parse_suite)]
        suite: pdx_crypto::Suite,
        /// Print the summary as JSON (progress goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Two departments exchange a dataset (the walking skeleton).
    TwoNode {
        /// Directory for the network (kept for inspection).
        #[arg(long)]
        dir: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_nodes(spec: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((d, n)) if !d.is_empty() => out.push((d.to_string(), n.to_string())),
            _ => out.push((part.to_string(), format!("node {part}"))),
        }
    }
    if out.is_empty() {
        bail!("--nodes is empty; give DEPT=NAME,...");
    }
    Ok(out)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up {
            dir,
            nodes,
            network,
        } => {
            let nodes = parse_nodes(&nodes)?;
            let mut net = Testnet::create(&dir, &network)?;
            for (dept, name) in &nodes {
                net.add_node(dept, name)?;
            }
            net.connect_all()?;
            net.start_all()?;
            for n in &net.nodes {
                println!(
                    "{:<10} {:<24} {}  home {}",
                    n.dept,
                    n.name,
                    n.addr,
                    n.home.display()
                );
            }
            println!(
                "testnet up in {}; stop it with pdx-testnet down --dir {}",
                dir.display(),
                dir.display()
            );
            net.detach();
        }
        Cmd::Bench(Bench::Calls {
            dir,
            schema,
            seconds,
            concurrency,
            rate,
            calls,
        }) => {
            let o = pdx_testnet::callbench::Options {
                seconds,
                concurrency,
                rate,
                calls,
            };
            let v = pdx_testnet::callbench::run(&dir, &schema, &o)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Cmd::Backend {
            listen,
            mode,
            policy,
        } => {
            let mode = pdx_testnet::backend::Mode::parse(&mode).ok_or_else(|| {
                anyhow::anyhow!("--mode {mode}: use ok, slow, error, invalid or huge")
            })?;
            let policy = match policy {
                Some(p) => Some(
                    toml::from_str(&std::fs::read_to_string(&p)?)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                ),
                None => None,
            };
            pdx_testnet::backend::run(&listen, mode, policy)?;
        }
        Cmd::Gen(Gen::Settlement {
            provinces,
            records,
            seed,
            treated_in,
            out,
        }) => {
            let opts = pdx_testnet::generate::Options {
                provinces,
                records,
                seed,
                treated_in,
                month: (2026, 10),
            };
            let file = std::fs::File::create(&out)?;
            let s = pdx_testnet::generate::settlement(&opts, file)?;
            println!("{} rows written to {}", s.rows, out.display());
        }
        Cmd::Gen(Gen::Registry {
            provinces,
            records,
            seed,
            province,
            out,
        }) => {
            let p = pdx_testnet::generate::PROVINCES
                .iter()
                .take(provinces)
                .position(|(code, _)| *code == province)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--province {province} is not one of the first {provinces} provinces ({})",
                        pdx_testnet::generate::PROVINCES
                            .iter()
                            .take(provinces)
                            .map(|(c, _)| *c)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            let opts = pdx_testnet::generate::Options {
                provinces,
                records,
                seed,
                treated_in: None,
                month: (2026, 10),
            };
            let n = pdx_testnet::generate::registry(&opts, p, &out)?;
            println!("{n} insured persons written to {}", out.display());
        }
        Cmd::Scenario(Scenario::Settlement {
            provinces,
            records,
            dir,
            seed,
            k,
            suite,
            no_proofs,
            json,
        }) => {
            if dir.join("testnet.json").exists() {
                bail!(
                    "{} already holds a testnet; remove it or choose another --dir",
                    dir.display()
                );
            }
            let opts = pdx_testnet::settlement::Options {
                provinces,
                records,
                seed,
                k,
                suite,
                proofs: !no_proofs,
            };
            let summary = pdx_testnet::settlement::run(&dir, opts, json)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            }
        }
        Cmd::Scenario(Scenario::Realtime {
            provinces,
            patients,
            days,
            rate,
            settlements,
            dir,
            seed,
            suite,
            json,
        }) => {
            if dir.join("testnet.json").exists() {
                bail!(
                    "{} already holds a testnet; remove it or choose another --dir",
                    dir.display()
                );
            }
            let opts = pdx_testnet::realtime::Options {
                provinces,
                patients,
                settlements: settlements.unwrap_or(patients * 2),
                days,
                rate,
                seed,
                suite,
            };
            let summary = pdx_testnet::realtime::run(&dir, opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "realtime month: {} settlements at {:.0} calls/s (p50 {:.1} ms, p99 {:.1} ms), {} daily incremental rows, clearing {:.1} s, {} disputes; every figure equals the backends' ledgers ({:.1} s in all)",
                    summary["settlements"],
                    summary["calls_per_second"].as_f64().unwrap_or(0.0),
                    summary["p50_ms"].as_f64().unwrap_or(0.0),
                    summary["p99_ms"].as_f64().unwrap_or(0.0),
                    summary["daily_rows"],
                    summary["clearing_seconds"].as_f64().unwrap_or(0.0),
                    summary["disputes"].as_array().map_or(0, Vec::len),
                    summary["total_seconds"].as_f64().unwrap_or(0.0)
                );
            }
        }
        Cmd::Scenario(Scenario::TwoNode { dir, json }) => {
            let summary = pdx_testnet::scenario::two_node(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            }
        }
        Cmd::Status { dir } => {
            let net = Testnet::load(&dir)?;
            for n in &net.nodes {
                let state = if net.is_running(&n.dept) {
                    "running"
                } else {
                    "stopped"
                };
                println!(
                    "{:<10} {:<24} {:<22} {state:<8} pid {}",
                    n.dept,
                    n.name,
                    n.addr,
                    n.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
                );
            }
        }
        Cmd::Down { dir } => {
            let mut net = Testnet::load(&dir)?;
            net.stop_all(Duration::from_secs(10))?;
            println!(
                "testnet in {} stopped; node homes kept for inspection",
                dir.display()
            );
        }
    }
    Ok(())
}

fn parse_suite(s: &str) -> Result<pdx_crypto::Suite, String> {
    pdx_crypto::Suite::parse(s).ok_or_else(|| format!("unknown suite {s:?}: use intl or gm"))
}
