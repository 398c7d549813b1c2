//! `pdx serve`: the QUIC endpoint, the admin socket and the checkpoint
//! ticker, until SIGINT or SIGTERM.

use crate::node_error;
use crate::output::outln;
use crate::session::unlock;
use anyhow::Result;
use pdx_node::config::Home;
use pdx_node::service::{Services, blocking, open_node};
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

pub async fn serve(home: &Path, passphrase_file: Option<&Path>, operator: &str) -> Result<u8> {
    let home = Home::new(home);
    let pass = unlock(&home, passphrase_file)?;
    let h = home.clone();
    let node = Arc::new(
        blocking(move || open_node(&h, pass))
            .await
            .map_err(node_error)?,
    );
    let svc = Services::new(node.clone(), true).map_err(node_error)?;
    let addr = svc.net.local_addr().map_err(node_error)?;
    log_lifecycle(&svc, operator, format!("node started, listening on {addr}"))
        .await
        .map_err(node_error)?;
    let socket = home.admin_socket();
    let admin = tokio::spawn(pdx_node::admin::serve(svc.clone(), socket.clone()));
    let server = tokio::spawn(svc.net.clone().serve(svc.clone()));
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
    ticker.abort();
    svc.net.shutdown().await;
    server.abort();
    let _ = std::fs::remove_file(&socket);
    let s = svc.clone();
    blocking(move || s.flush_refusals(true))
        .await
        .map_err(node_error)?;
    log_lifecycle(&svc, operator, "node stopped".into())
        .await
        .map_err(node_error)?;
    let n = node.clone();
    blocking(move || Ok(n.audit.checkpoint()?))
        .await
        .map_err(node_error)?;
    outln!("pdx serve: stopped");
    Ok(0)
}
