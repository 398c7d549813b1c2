//! `pdx doctor`: what an operator checks before trusting a node to run
//! unattended. Each check says ok, warn or error with what to do;
//! the CLI exits by the worst (docs/operations.md "Doctor").

use super::{Services, blocking, directory};
use crate::error::Result;
use crate::node::Node;
use pdx_audit::store::now_ms;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A certificate expiring within this many days is a warning.
pub const CERT_WARN_DAYS: i64 = 30;

/// What to do about an expiring certificate.
pub const RENEW_HINT: &str = "renew it without downtime: at the CA, `pdx ca issue --renew --cert HOME/tls/node.crt --out DIR`, then `pdx cert install --home HOME --cert-dir DIR` (docs/operations.md)";
/// A peer clock further off than this is a warning.
pub const SKEW_WARN_MS: i64 = 5_000;
/// A peer clock further off than this is an error (checkpoint and
/// certificate times become unreliable).
pub const SKEW_ERROR_MS: i64 = 60_000;
/// Free space below this is a warning.
pub const DISK_WARN_BYTES: u64 = 1 << 30;
/// Free space below this is an error (imports and transfers will fail).
pub const DISK_ERROR_BYTES: u64 = 100 << 20;
/// A peer that last cosigned longer ago than this is a warning.
pub const COSIGN_WARN_MS: u64 = 86_400_000;
/// How long each peer gets to answer the handshake.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fine.
    Ok,
    /// Needs attention soon.
    Warn,
    /// Needs attention now.
    Error,
}

/// One finding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    /// What was checked: `permissions`, `certificate`, `crl`, `disk`,
    /// `store`, `audit`, `peer`, `clock`, `witnessing`.
    pub check: String,
    /// The department a peer finding is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// How bad.
    pub severity: Severity,
    /// What was found and what to do.
    pub message: String,
}

/// `pdx doctor`'s report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DoctorReport {
    /// Department.
    pub dept: String,
    /// The worst severity found.
    pub worst: Severity,
    /// Every finding, in check order.
    pub findings: Vec<Finding>,
}

fn finding(check: &str, severity: Severity, message: impl Into<String>) -> Finding {
    Finding {
        check: check.into(),
        peer: None,
        severity,
        message: message.into(),
    }
}

const DAY_MS: i64 = 86_400_000;

/// Runs every check: local ones on the blocking pool, then a handshake with
/// every peer at once (reachability and clock skew), then witnessing.
pub async fn run(svc: &Arc<Services>) -> Result<DoctorReport> {
    let node = svc.node.clone();
    let mut findings = blocking(move || local_checks(&node)).await?;
    let n = svc.node.clone();
    let peers = blocking(move || directory::peers(&n)).await?;
    // Every peer at once: `None` answered, else why not (`None` inside:
    // no answer within the timeout).
    let answers = super::ask_each(peers.iter().map(|p| p.dept.clone()).collect(), |dept| {
        let svc = svc.clone();
        async move {
            match tokio::time::timeout(PEER_TIMEOUT, svc.net.connect(&svc, &dept)).await {
                Ok(Ok(pc)) => {
                    pc.close();
                    None
                }
                Ok(Err(e)) => Some(Some(e.to_string())),
                Err(_) => Some(None),
            }
        }
    })
    .await?;
    for (p, answer) in peers.iter().zip(answers) {
        let reach = match answer {
            None => finding(
                "peer",
                Severity::Ok,
                format!("{} at {} answered the handshake", p.dept, p.addr),
            ),
            Some(Some(e)) => finding(
                "peer",
                Severity::Warn,
                format!(
                    "{} at {} is not reachable: {e}; check the address (`pdx peer add`), its node and the network path",
                    p.dept, p.addr
                ),
            ),
            Some(None) => finding(
                "peer",
                Severity::Warn,
                format!(
                    "{} at {} did not answer within {} s",
                    p.dept,
                    p.addr,
                    PEER_TIMEOUT.as_secs()
                ),
            ),
        };
        findings.push(Finding {
            peer: Some(p.dept.clone()),
            ..reach
        });
    }
    let clocks = svc.node.metrics.peer_clocks();
    for p in &peers {
        let Some((skew, _)) = clocks.get(&p.dept) else {
            continue;
        };
        let abs = skew.unsigned_abs();
        let severity = if abs > SKEW_ERROR_MS.unsigned_abs() {
            Severity::Error
        } else if abs > SKEW_WARN_MS.unsigned_abs() {
            Severity::Warn
        } else {
            Severity::Ok
        };
        let what = if *skew >= 0 { "ahead of" } else { "behind" };
        let mut message = format!(
            "{}'s clock is {:.1} s {what} this node's (from its hello)",
            p.dept,
            abs as f64 / 1000.0
        );
        if severity != Severity::Ok {
            message.push_str(
                "; synchronise both with NTP (checkpoint and certificate times depend on it)",
            );
        }
        findings.push(Finding {
            check: "clock".into(),
            peer: Some(p.dept.clone()),
            severity,
            message,
        });
    }
    let node = svc.node.clone();
    let peer_names: Vec<String> = peers.iter().map(|p| p.dept.clone()).collect();
    findings.extend(blocking(move || witnessing_checks(&node, &peer_names)).await?);
    let worst = findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Ok);
    Ok(DoctorReport {
        dept: svc.node.config.dept.clone(),
        worst,
        findings,
    })
}

fn local_checks(node: &Node) -> Result<Vec<Finding>> {
    let mut out = permissions(node);
    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    let v = crate::pki::validity(&node.cert()?)?;
    let days = (v.not_after_ms - now).div_euclid(DAY_MS);
    let expires =
        crate::timearg::format_ms(u64::try_from(v.not_after_ms).unwrap_or(0)).unwrap_or_default();
    out.push(if v.not_after_ms <= now {
        finding(
            "certificate",
            Severity::Error,
            format!("the node certificate expired {expires}: peers refuse it; {RENEW_HINT}"),
        )
    } else if v.not_before_ms > now {
        finding(
            "certificate",
            Severity::Error,
            "the node certificate is not valid yet: check this machine's clock",
        )
    } else if days < CERT_WARN_DAYS {
        finding(
            "certificate",
            Severity::Warn,
            format!("the node certificate expires in {days} days ({expires}); {RENEW_HINT}"),
        )
    } else {
        finding(
            "certificate",
            Severity::Ok,
            format!("the node certificate expires in {days} days ({expires})"),
        )
    });
    out.push(match crate::pki::installed_crl_times(&node.home)? {
        None => finding(
            "crl",
            Severity::Warn,
            "no CRL is installed: revoked certificates would be accepted; install the CA's (`pdx crl update --crl FILE`)",
        ),
        Some(c) => {
            let age_days = (now - c.this_update_ms).div_euclid(DAY_MS);
            match c.next_update_ms {
                Some(next) if next < now => finding(
                    "crl",
                    Severity::Warn,
                    format!("the CRL (issued {age_days} days ago) was due for an update {}; install the CA's current one (`pdx crl update --crl FILE`)", crate::timearg::format_ms(u64::try_from(next).unwrap_or(0)).unwrap_or_default()),
                ),
                _ => finding(
                    "crl",
                    Severity::Ok,
                    format!("the CRL was issued {age_days} days ago"),
                ),
            }
        }
    });
    out.push(disk(&node.home.db()));
    out.push(store_health(node));
    Ok(out)
}

fn mode(p: &Path) -> Option<u32> {
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

fn permissions(node: &Node) -> Vec<Finding> {
    let mut bad = Vec::new();
    let keys = node.home.keys();
    if let Some(m) = mode(&keys)
        && m & 0o077 != 0
    {
        bad.push(format!("{} is {m:o} (want 700)", keys.display()));
    }
    let mut secrets: Vec<std::path::PathBuf> = std::fs::read_dir(&keys)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    secrets.push(
        node.home
            .root()
            .join(&node.config.services.gateway_token_file),
    );
    for f in secrets {
        if let Some(m) = mode(&f)
            && m & 0o077 != 0
        {
            bad.push(format!("{} is {m:o} (want 600)", f.display()));
        }
    }
    if let Some(m) = mode(node.home.root())
        && m & 0o022 != 0
    {
        bad.push(format!(
            "{} is writable by others ({m:o})",
            node.home.root().display()
        ));
    }
    vec![if bad.is_empty() {
        finding(
            "permissions",
            Severity::Ok,
            "key files 0600, keys/ 0700, the home not writable by others",
        )
    } else {
        finding(
            "permissions",
            Severity::Error,
            format!(
                "{}; fix with chmod (the node refuses to load a key file others can read)",
                bad.join("; ")
            ),
        )
    }]
}

fn disk(path: &Path) -> Finding {
    match rustix::fs::statvfs(path) {
        Err(e) => finding(
            "disk",
            Severity::Warn,
            format!("cannot read the free space of {}: {e}", path.display()),
        ),
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let total = st.f_blocks.saturating_mul(st.f_frsize);
            let text = format!(
                "{} MiB free of {} MiB on the store's filesystem",
                free >> 20,
                total >> 20
            );
            if free < DISK_ERROR_BYTES {
                finding(
                    "disk",
                    Severity::Error,
                    format!(
                        "{text}: imports, transfers and audit entries will be refused; free space or grow the filesystem"
                    ),
                )
            } else if free < DISK_WARN_BYTES {
                finding("disk", Severity::Warn, format!("{text}: free space soon"))
            } else {
                finding("disk", Severity::Ok, text)
            }
        }
    }
}

fn store_health(node: &Node) -> Finding {
    let db = node.store.db();
    let int = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
    let errors = int("rocksdb.background-errors");
    let stopped = int("rocksdb.is-write-stopped");
    if errors > 0 || stopped > 0 {
        return finding(
            "store",
            Severity::Error,
            format!(
                "RocksDB reports {errors} background errors, writes stopped: {}; see the store's LOG in {} (usually a full disk or an I/O error)",
                stopped > 0,
                node.home.db().display()
            ),
        );
    }
    finding(
        "store",
        Severity::Ok,
        format!("store format {}, no background error", node.store.format()),
    )
}

fn witnessing_checks(node: &Node, peers: &[String]) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let head = node.audit.size();
    let cp = node.audit.latest_checkpoint()?.peek()?;
    out.push(finding(
        "audit",
        Severity::Ok,
        format!("{head} entries; latest checkpoint at size {}", cp.size),
    ));
    for e in node.audit.evidence()? {
        out.push(finding(
            "witnessing",
            Severity::Error,
            format!("fork evidence is held against {}: {}; report it to the regulator with `pdx audit export`", e.log_id, e.reason),
        ));
    }
    let cosigned = super::ops::latest_cosignatures(node)?;
    let now = now_ms();
    for p in peers {
        out.push(match cosigned.get(p) {
            None => Finding {
                peer: Some(p.clone()),
                ..finding(
                    "witnessing",
                    Severity::Warn,
                    format!("{p} has never cosigned this log: it is witnessed only once the two nodes have talked"),
                )
            },
            Some((size, time_ms)) => {
                let age = now.saturating_sub(*time_ms);
                let behind = head.saturating_sub(*size);
                let text = format!(
                    "{p} last cosigned size {size} ({behind} entries behind the head), {} min ago",
                    age / 60_000
                );
                Finding {
                    peer: Some(p.clone()),
                    ..if age > COSIGN_WARN_MS {
                        finding("witnessing", Severity::Warn, format!("{text}: exchange with it so that the log stays witnessed"))
                    } else {
                        finding("witnessing", Severity::Ok, text)
                    }
                }
            }
        });
    }
    Ok(out)
}
