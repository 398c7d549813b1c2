//! `pdx`: the command line of a pdx node. A thin binary: argument parsing
//! ([`args`]), dispatch to the `pdx_node` library ([`dispatch`]), rendering
//! ([`render`]), opening a node ([`session`]), `pdx serve` ([`serve`]) and
//! the offline regulator and PKI tools ([`offline`], [`audit`]). Everything else lives in `pdx-node`.
//!
//! Exit codes (README "Exit codes"):
//! - 0 success
//! - 1 failure (IO, store, invalid input)
//! - 2 `audit verify`: tampered; `audit reconcile`: mismatches; `he verify-sum`: mismatch
//! - 3 `audit verify`: unverifiable (key or data missing)
//! - 4 refused (rule, grant, privacy model, peer refused)
//! - 5 not found
//! - 6 network or peer failure
//! - 64 usage error
#![forbid(unsafe_code)]

mod args;
mod audit;
mod dispatch;
mod generate;
mod offline;
mod output;
mod render;
mod serve;
mod session;

use anyhow::anyhow;
use clap::Parser;
use pdx_node::NodeError;
use pdx_node::admin::{self, ErrorKind};
use std::process::ExitCode;

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Exit {
    /// Exit code.
    pub code: u8,
    /// Message.
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

impl Exit {
    /// A usage error (exit 64).
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        anyhow!(Exit {
            code: 64,
            message: message.into(),
        })
    }
}

/// The exit code of an error category.
pub fn kind_code(k: ErrorKind) -> u8 {
    match k {
        ErrorKind::Failed | ErrorKind::Invalid => 1,
        ErrorKind::Refused => 4,
        ErrorKind::NotFound => 5,
        ErrorKind::Network => 6,
    }
}

/// A library error with its exit code.
pub fn node_error(e: NodeError) -> anyhow::Error {
    anyhow!(Exit {
        code: kind_code(admin::error_kind(&e)),
        message: e.to_string(),
    })
}

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PDX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        args::LogFormat::Text => logs.try_init(),
        args::LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
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
    match runtime.block_on(dispatch::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.downcast_ref::<Exit>().map(|x| x.code).unwrap_or(1);
            eprintln!("pdx: error: {e:#}");
            ExitCode::from(code)
        }
    }
}
