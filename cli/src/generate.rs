//! `pdx generate`: man pages and shell completions from the clap
//! definitions, so the packaged documentation never drifts from `--help`.

use crate::args::{Cli, GenerateCmd};
use crate::output::outln;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::Path;

pub fn run(cmd: &GenerateCmd) -> Result<u8> {
    match cmd {
        GenerateCmd::Man { out } => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let n = man_pages(&Cli::command(), out)?;
            outln!("{n} man pages written to {}", out.display());
        }
        GenerateCmd::Completions { shell, out } => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let mut cmd = Cli::command();
            let path = clap_complete::generate_to(*shell, &mut cmd, "pdx", out)
                .with_context(|| format!("writing {shell} completions to {}", out.display()))?;
            outln!("{}", path.display());
        }
    }
    Ok(0)
}

/// Writes one page per command (`pdx.1`, `pdx-import.1`, `pdx-audit-verify.1`,
/// ...) and returns how many.
fn man_pages(cmd: &clap::Command, out: &Path) -> Result<usize> {
    clap_mangen::generate_to(cmd.clone(), out)
        .with_context(|| format!("writing man pages to {}", out.display()))?;
    Ok(std::fs::read_dir(out)
        .with_context(|| format!("listing {}", out.display()))?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
        .count())
}
