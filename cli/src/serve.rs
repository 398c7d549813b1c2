//! `pdx serve`: the QUIC endpoint, the admin socket and the checkpoint
//! ticker, until SIGINT or SIGTERM.

use crate::node_error;
use crate::output::outln;
use crate::session::unlock;
use anyhow::{Context, Result};
use pdx_node::config::Home;
use pdx_node::service::{Services, blocking, open_node};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

fn log_lifecycle(
    svc: &Arc<Services>,
    operator: &str,
    detail: String,
) -> impl Future<Output = pdx_node::Result<()>> + use<> {
    let node = svc.node.clone();
    let op = operator.to_string();
    blocking(move || {
        let mut d = node.draft(pdx_audit::EventKind::ConfigChange, &op);
        d.detail = Some(detail);
        node.log(d).map(|_| ())
    })
}

pub async fn serve(
    home: &Path,
    passphrase_file: Option<&Path>,
    operator: &str,
    metrics: Option<&str>,
) -> Result<u8> {
    let home = Home::new(home);
    let socket = home.admin_socket();
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        anyhow::bail!(
            "{} is already served: its admin socket {} answers, so another `pdx serve --home {}` is running; commands reach that node through the socket (stop it with Ctrl-C or SIGTERM before starting another)",
            home.root().display(),
            socket.display(),
            home.root().display()
        );
    }
    let pass = unlock(&home, passphrase_file)?;
    let h = home.clone();
    let node = Arc::new(
        blocking(move || open_node(&h, pass))
            .await
            .map_err(node_error)?,
    );
    // A restored home asks its peers what they witnessed before it listens
    // (and before it signs anything): service::recovery.
    if pdx_node::service::recovery::RestoredMarker::load(&home)
        .map_err(node_error)?
        .is_some()
    {
        let dial = Services::new(node.clone(), false).map_err(node_error)?;
        let rec = pdx_node::service::recovery::reconcile(&dial, operator).await;
        dial.net.shutdown().await;
        let rec = rec.map_err(node_error)?;
        if !rec.clean() {
            let unreached = rec.unreached();
            return Err(anyhow::anyhow!(crate::Exit {
                code: 4,
                message: format!(
                    "{} was restored from a backup made at log size {}{}{}; it signs and serves nothing until an operator acknowledges: pdx restore --home {} --acknowledge-loss --reason TEXT (the alarm is audit entry {})",
                    home.root().display(),
                    rec.restored_size,
                    rec.lost_to
                        .map(|to| format!(
                            ", but peers witnessed this log up to size {to}: entries {}..{to} are lost",
                            rec.restored_size
                        ))
                        .unwrap_or_default(),
                    if unreached.is_empty() {
                        String::new()
                    } else {
                        format!("; not asked (unreachable): {}", unreached.join(", "))
                    },
                    home.root().display(),
                    rec.alarm_seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                ),
            }));
        }
        outln!(
            "pdx serve: restored home reconciled: {} peers asked, none witnessed beyond the backup",
            rec.peers.len()
        );
    }
    let svc = Services::new(node.clone(), true).map_err(node_error)?;
    let addr = svc.net.local_addr().map_err(node_error)?;
    log_lifecycle(&svc, operator, format!("node started, listening on {addr}"))
        .await
        .map_err(node_error)?;
    let admin = tokio::spawn(pdx_node::admin::serve(svc.clone(), socket.clone()));
    let server = tokio::spawn(svc.net.clone().serve(svc.clone()));
    let gateway = match node.config.services.gateway.clone() {
        Some(listen) => {
            let (gw_addr, fut) = pdx_node::service::calls::gateway::bind(svc.clone(), &listen)
                .await
                .map_err(node_error)?;
            outln!("pdx serve: gateway on http://{gw_addr}/v1/services/");
            Some(tokio::spawn(fut))
        }
        None => None,
    };
    let metrics_addr = metrics
        .map(str::to_string)
        .or_else(|| node.config.operations.metrics.clone());
    let metrics_server = match metrics_addr {
        Some(listen) => {
            let (m_addr, fut) = pdx_node::service::ops::bind(svc.clone(), &listen)
                .await
                .map_err(node_error)?;
            outln!("pdx serve: metrics on http://{m_addr}/metrics");
            Some(tokio::spawn(fut))
        }
        None => None,
    };
    // Kept calls and idempotency outcomes past their windows go at start and daily.
    let sweeping = svc.clone();
    let sweeper = tokio::spawn(async move {
        let mut t = tokio::time::interval(std::time::Duration::from_secs(86_400));
        loop {
            t.tick().await;
            let s = sweeping.clone();
            let _ = blocking(move || pdx_node::service::calls::sweep(&s.node)).await;
        }
    });
    // Outcomes of recorded calls are appended to their datasets every minute
    // (and before any release of them).
    let recording = svc.clone();
    let recorder = tokio::spawn(async move {
        let mut t = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            t.tick().await;
            let s = recording.clone();
            let flushed = blocking(move || {
                pdx_node::service::calls::records::flush_all(
                    &s.node,
                    &pdx_node::progress::NoProgress,
                )
            })
            .await;
            if let Err(e) = flushed {
                eprintln!(
                    "pdx serve: appending recorded call outcomes failed (they stay queued): {e}"
                );
            }
        }
    });
    // Checkpoints every interval; summaries of aggregated refusals as their
    // windows close.
    let ticking = svc.clone();
    let interval =
        std::time::Duration::from_millis(node.config.audit.checkpoint_interval_ms.max(100));
    let ticker = tokio::spawn(async move {
        let mut t = tokio::time::interval(interval);
        loop {
            t.tick().await;
            let s = ticking.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _ = s.flush_refusals(false);
                s.node.audit.maybe_checkpoint()
            })
            .await;
        }
    });
    let pid_file = home.root().join("serve.pid");
    pdx_node::config::write_atomic(
        &pid_file,
        format!("{}\n", std::process::id()).as_bytes(),
        0o600,
    )
    .map_err(node_error)?;
    outln!(
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
    // Graceful: no new connection; what is being served gets the grace
    // period (a transfer cut after it resumes from its durably stored chunks).
    svc.net.stop_accepting();
    let grace =
        std::time::Duration::from_secs(u64::from(node.config.operations.shutdown_grace_secs));
    let deadline = std::time::Instant::now() + grace;
    while node.metrics.in_flight_total() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let cut = node.metrics.in_flight_total();
    ticker.abort();
    sweeper.abort();
    recorder.abort();
    for task in [gateway, metrics_server].into_iter().flatten() {
        task.abort();
    }
    svc.net.shutdown().await;
    server.abort();
    let _ = std::fs::remove_file(&socket);
    let s = svc.clone();
    blocking(move || s.flush_refusals(true))
        .await
        .map_err(node_error)?;
    let stopped = if cut > 0 {
        format!(
            "node stopped: {cut} transfers or calls still in flight after the {} s grace period were cut (transfers resume from their stored chunks; calls are retried with their idempotency key)",
            grace.as_secs()
        )
    } else {
        "node stopped".to_string()
    };
    log_lifecycle(&svc, operator, stopped)
        .await
        .map_err(node_error)?;
    let n = node.clone();
    blocking(move || Ok(n.audit.checkpoint()?))
        .await
        .map_err(node_error)?;
    // Last: whoever waits for the pid file to go finds the node stopped.
    let _ = std::fs::remove_file(&pid_file);
    outln!("pdx serve: stopped");
    Ok(0)
}

/// `pdx serve --detach`: starts `pdx serve` as a background process (its
/// output appended to HOME/serve.log) and returns once its admin socket
/// answers, so the next command reaches the running node.
pub fn detach(home: &Path, passphrase_file: Option<&Path>, metrics: Option<&str>) -> Result<u8> {
    let h = Home::new(home);
    let socket = h.admin_socket();
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        anyhow::bail!(
            "{} is already served: its admin socket {} answers",
            home.display(),
            socket.display()
        );
    }
    let log_path = home.join("serve.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("serve").arg("--home").arg(home);
    if let Some(p) = passphrase_file {
        cmd.arg("--passphrase-file").arg(p);
    }
    if let Some(m) = metrics {
        cmd.arg(format!("--metrics={m}"));
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting pdx serve")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            outln!(
                "pdx serve: {} running in the background (pid {}); log {}; stop it with `kill $(cat {}/serve.pid)`",
                home.display(),
                child.id(),
                log_path.display(),
                home.display()
            );
            return Ok(0);
        }
        let tail = || {
            let text = std::fs::read(&log_path).unwrap_or_default();
            String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default()).into_owned()
        };
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "pdx serve for {} exited ({status}):\n{}",
                home.display(),
                tail()
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!(
                "pdx serve for {} did not answer within 60 s; see {}",
                home.display(),
                log_path.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
