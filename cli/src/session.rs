//! Opening a node for a command: the key passphrase, a running node's admin
//! socket or the home in-process, progress bars on a terminal.

use crate::{Exit, kind_code, node_error};
use anyhow::{Context, Result, anyhow};
use pdx_node::NodeError;
use pdx_node::admin::{self, AdminCall};
use pdx_node::api::{self, Outcome, Request};
use pdx_node::config::Home;
use pdx_node::keys::Passphrase;
use pdx_node::progress::{NoProgress, Progress, Unit};
use pdx_node::service::{Services, open_node};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub fn read_passphrase(file: Option<&Path>, confirm: bool) -> Result<Option<Passphrase>> {
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

/// The passphrase to open `home` with: from a file, or asked on a terminal
/// when the keys are protected.
pub fn unlock(home: &Home, file: Option<&Path>) -> Result<Option<Passphrase>> {
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

/// Runs a node request: through a running node's admin socket, or in-process.
pub async fn node_command(
    home: &Path,
    passphrase_file: Option<&Path>,
    request: Request,
    operator: &str,
    json: bool,
) -> Result<Outcome> {
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
    // A `pdx serve` that is starting holds the store before its admin
    // socket answers: wait for the socket rather than fail (`pdx serve &`
    // followed by a command is the README's way).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut pass = None;
    let node = loop {
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
        if pass.is_none() {
            pass = Some(unlock(&home, passphrase_file)?);
        }
        match open_node(&home, pass.clone().flatten()) {
            Ok(node) => break Arc::new(node),
            Err(NodeError::StoreInUse { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(node_error(e)),
        }
    };
    let svc = Services::new(node, false).map_err(node_error)?;
    let result = api::execute(&svc, request, operator, p)
        .await
        .map_err(node_error);
    svc.net.shutdown().await;
    result
}
