//! Command-line interface.
//!
//! Exit codes (also in README):
//! - 0 success
//! - 1 failure (IO, store, invalid input)
//! - 2 `audit verify`: tampered; `audit reconcile`: mismatches
//! - 3 `audit verify`: unverifiable (key or data missing)
//! - 4 refused (rule, grant, privacy model, peer refused)
//! - 5 not found
//! - 6 network or peer failure
//! - 64 usage error

mod args;
mod audit;
mod render;

use anyhow::{Context, Result, anyhow};
use args::{Cli, Command};
use clap::Parser;
use pdx_node::admin::{self, AdminCall, ErrorKind};
use pdx_node::commands::{self, Request};
use pdx_node::config::Home;
use pdx_node::keys::Passphrase;
use pdx_node::net::Net;
use pdx_node::progress::{NoProgress, Progress, Unit};
use pdx_node::{Node, NodeError};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

fn kind_code(k: ErrorKind) -> u8 {
    match k {
        ErrorKind::Failed | ErrorKind::Invalid => 1,
        ErrorKind::Refused => 4,
        ErrorKind::NotFound => 5,
        ErrorKind::Network => 6,
    }
}

fn node_error(e: NodeError) -> anyhow::Error {
    anyhow!(Exit {
        code: kind_code(admin::error_kind(&e)),
        message: e.to_string(),
    })
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PDX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pdx: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.downcast_ref::<Exit>().map(|x| x.code).unwrap_or(1);
            eprintln!("pdx: error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Operator name for audit entries.
fn operator(cli: &Cli) -> String {
    cli.operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn read_passphrase(file: Option<&Path>, confirm: bool) -> Result<Option<Passphrase>> {
    if let Some(f) = file {
        return Ok(Some(
            pdx_node::keys::passphrase_from_file(f).map_err(node_error)?,
        ));
    }
    if !confirm {
        return Ok(None);
    }
    if !std::io::stdin().is_terminal() {
        return Err(anyhow!(
            "--passphrase-prompt needs a terminal; use --passphrase-file FILE"
        ));
    }
    let a = rpassword::prompt_password("passphrase for the node keys: ")?;
    let b = rpassword::prompt_password("repeat: ")?;
    if a != b || a.is_empty() {
        return Err(anyhow!("the passphrases differ or are empty"));
    }
    Ok(Some(Passphrase::new(a.into_bytes())))
}

fn unlock(home: &Home, file: Option<&Path>) -> Result<Option<Passphrase>> {
    if let Some(p) = read_passphrase(file, false)? {
        return Ok(Some(p));
    }
    let protected = pdx_node::config::Config::load(home)
        .map(|c| c.passphrase_protected)
        .unwrap_or(false);
    if protected && std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("passphrase for the node keys: ")?;
        return Ok(Some(Passphrase::new(p.into_bytes())));
    }
    Ok(None)
}

/// Absolute form of a path the node (maybe another process) will open.
pub fn absolute(p: &Path) -> Result<String> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("current directory")?
            .join(p)
    };
    Ok(abs.display().to_string())
}

/// Progress bars on a terminal.
struct Bars {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for Bars {
    fn stage(&self, label: &str, total: Option<u64>, unit: Unit) {
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let template = match unit {
            Unit::Bytes => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            Unit::Records => "{msg} [{bar:30}] {human_pos}/{human_len} records {per_sec} ETA {eta}",
            Unit::Chunks => "{msg} [{bar:30}] {pos}/{len} chunks {per_sec} ETA {eta}",
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        if let Ok(mut b) = self.bar.lock() {
            if let Some(old) = b.take() {
                old.finish_and_clear();
            }
            *b = Some(bar);
        }
    }
    fn set(&self, done: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(b) = b.as_ref()
        {
            b.set_position(done);
        }
    }
    fn done(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(b) = b.take()
        {
            b.finish_and_clear();
        }
    }
}

fn progress(json: bool) -> Arc<dyn Progress> {
    if !json && std::io::stderr().is_terminal() {
        Arc::new(Bars {
            bar: Mutex::new(None),
        })
    } else {
        Arc::new(NoProgress)
    }
}

/// Runs a node command: through a running node's admin socket, or in-process.
async fn node_command(
    home: &Path,
    passphrase_file: Option<&Path>,
    request: Request,
    operator: &str,
    json: bool,
) -> Result<serde_json::Value> {
    let home = Home::new(home);
    if !home.config().exists() {
        return Err(anyhow!(Exit {
            code: 5,
            message: format!(
                "{} is not a pdx home (no pdx.toml); create one with `pdx init`",
                home.root().display()
            ),
        }));
    }
    let p = progress(json);
    let call = AdminCall {
        operator: operator.to_string(),
        request: request.clone(),
    };
    match admin::call(&home.admin_socket(), &call, p.as_ref())
        .await
        .map_err(node_error)?
    {
        Some(Ok(v)) => return Ok(v),
        Some(Err((kind, message))) => {
            return Err(anyhow!(Exit {
                code: kind_code(kind),
                message
            }));
        }
        None => {}
    }
    let pass = unlock(&home, passphrase_file)?;
    let node = Arc::new(Node::open(&home, pass).map_err(node_error)?);
    let net = Net::client(node.clone()).map_err(node_error)?;
    let result = commands::execute(&net, request, operator, p)
        .await
        .map_err(node_error);
    net.shutdown().await;
    result
}

async fn run(cli: Cli) -> Result<u8> {
    let op = operator(&cli);
    let json = cli.json;
    match &cli.command {
        Command::Ca(c) => args::run_ca(c, json),
        Command::Schema(c) => args::run_schema(c, json),
        Command::Init(a) => {
            let pass = read_passphrase(a.passphrase_file.as_deref(), a.passphrase_prompt)?;
            let out = Node::init(
                &Home::new(&a.home),
                &a.cert_dir,
                &a.listen,
                pass.as_deref().map(|p| p.as_slice()),
            )
            .map_err(node_error)?;
            render::print(json, &serde_json::to_value(&out)?, render::init);
            Ok(0)
        }
        Command::Serve(a) => serve(&a.home, a.passphrase_file.as_deref(), &op).await,
        Command::Audit(a) => audit::run(a, &cli, &op).await,
        Command::He(args::HeCmd::VerifySum {
            bundle: Some(bundle),
            ca,
            ..
        }) => {
            let ca = ca.as_deref().ok_or_else(|| {
                anyhow!(Exit {
                    code: 64,
                    message: "--bundle needs --ca (the network CA certificate)".into()
                })
            })?;
            let v = pdx_node::he::verify_bundle_file(
                &bundle.display().to_string(),
                &ca.display().to_string(),
            )
            .map_err(node_error)?;
            render::print(json, &v, render::generic);
            Ok(if v["verdict"] == "ok" { 0 } else { 2 })
        }
        other => {
            let (home, request, pass) = args::node_request(other)?;
            let value = node_command(&home, pass.as_deref(), request, &op, json).await?;
            render::print(json, &value, render::renderer(other));
            // verify-sum reports a mismatch like `audit verify` reports tampering.
            let mismatch = matches!(other, Command::He(args::HeCmd::VerifySum { .. }))
                && value["verdict"] != "ok";
            Ok(if mismatch { 2 } else { 0 })
        }
    }
}

async fn serve(home: &Path, passphrase_file: Option<&Path>, operator: &str) -> Result<u8> {
    let home = Home::new(home);
    let pass = unlock(&home, passphrase_file)?;
    let node = Arc::new(Node::open(&home, pass).map_err(node_error)?);
    let net = Net::server(node.clone()).map_err(node_error)?;
    let addr = net.local_addr().map_err(node_error)?;
    let mut d = node.draft(pdx_audit::EventKind::ConfigChange, operator);
    d.detail = Some(format!("node started, listening on {addr}"));
    node.log(d).map_err(node_error)?;
    let socket = home.admin_socket();
    let admin_net = net.clone();
    let admin_path: PathBuf = socket.clone();
    let admin = tokio::spawn(async move { admin::serve(admin_net, &admin_path).await });
    let server = tokio::spawn(net.clone().serve());
    let ckpt_node = node.clone();
    let interval =
        std::time::Duration::from_millis(node.config.audit.checkpoint_interval_ms.max(100));
    let ticker = tokio::spawn(async move {
        let mut t = tokio::time::interval(interval);
        loop {
            t.tick().await;
            let n = ckpt_node.clone();
            let _ = tokio::task::spawn_blocking(move || n.audit.maybe_checkpoint()).await;
        }
    });
    println!(
        "pdx serve: {} ({}) listening on {addr}, admin socket {}",
        node.config.dept,
        node.config.name,
        socket.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = admin => { if let Ok(Err(e)) = r { eprintln!("pdx serve: admin socket failed: {e}"); } }
    }
    ticker.abort();
    net.shutdown().await;
    server.abort();
    let _ = std::fs::remove_file(&socket);
    let mut d = node.draft(pdx_audit::EventKind::ConfigChange, operator);
    d.detail = Some("node stopped".into());
    node.log(d).map_err(node_error)?;
    node.audit.checkpoint().map_err(|e| node_error(e.into()))?;
    println!("pdx serve: stopped");
    Ok(0)
}
