//! `pdx audit ...`: node-side commands go through the node; `verify` and
//! `reconcile` run offline on bundles, for regulators.

use super::args::{AuditCmd, Cli, Command};
use super::{Exit, node_command, node_error, render};
use anyhow::{Result, anyhow};
use pdx_audit::bundle::{BundleReader, read_header};
use pdx_audit::checkpoint::SignedCheckpoint;
use pdx_audit::verify::{Report, Severity, Verdict, VerifyInputs, verify};
use pdx_node::pki::{self, CertChecker};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub async fn run(cmd: &AuditCmd, cli: &Cli, operator: &str) -> Result<u8> {
    match cmd {
        AuditCmd::Verify {
            bundle,
            home,
            witness,
            checkpoint,
            ca,
        } => {
            let (path, _tmp) = match (bundle, home) {
                (Some(b), None) => (b.clone(), None),
                (None, Some(h)) => {
                    let dir = tempdir()?;
                    let out = dir.join("bundle.pdxaudit");
                    let req = pdx_node::commands::Request::AuditExport {
                        out: out.display().to_string(),
                    };
                    node_command(h, None, req, operator, true).await?;
                    (out, Some(TempDir(dir)))
                }
                _ => {
                    return Err(anyhow!(Exit {
                        code: 64,
                        message: "give a BUNDLE or --home HOME".into()
                    }));
                }
            };
            let report = verify_bundle(&path, witness, checkpoint, ca.as_deref())?;
            let code = report.verdict.exit_code() as u8;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
            Ok(code)
        }
        AuditCmd::Reconcile { bundles, ca } => {
            let mut verdicts = Vec::new();
            let mut tampered = false;
            for b in bundles {
                let r = verify_bundle(b, &[], &[], ca.as_deref())?;
                tampered |= r.verdict == Verdict::Tampered;
                verdicts.push(json!({"bundle": b.display().to_string(), "dept": r.dept, "verdict": r.verdict}));
            }
            let readers = bundles
                .iter()
                .map(|b| {
                    Ok((
                        b.display().to_string(),
                        BundleReader::open(b).map_err(|e| anyhow!("{e}"))?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let rec = pdx_audit::reconcile::reconcile(readers).map_err(|e| anyhow!("{e}"))?;
            let clean = rec.is_clean() && !tampered;
            let v = json!({"bundles": verdicts, "matched": rec.matched, "mismatches": rec.mismatches, "clean": clean});
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for b in &verdicts {
                    println!(
                        "{:<8} {}  {}",
                        b["dept"].as_str().unwrap_or("-"),
                        verdict_word(&b["verdict"]),
                        b["bundle"].as_str().unwrap_or("")
                    );
                }
                println!("{} transfers matched in both logs", rec.matched);
                if rec.mismatches.is_empty() {
                    println!("no mismatches");
                } else {
                    println!("{} mismatches:", rec.mismatches.len());
                    for m in &rec.mismatches {
                        println!(
                            "  {:<22} {} -> {}  release {}: {}",
                            format!("{:?}", m.kind),
                            m.from,
                            m.to,
                            m.release,
                            m.detail
                        );
                    }
                }
            }
            Ok(if clean { 0 } else { 2 })
        }
        other => {
            let (home, request, pass) =
                super::args::node_request(&Command::Audit(clone_cmd(other)))?;
            let value = node_command(&home, pass.as_deref(), request, operator, cli.json).await?;
            let renderer: render::Renderer = match other {
                AuditCmd::Show { .. } => show,
                _ => render::generic,
            };
            render::print(cli.json, &value, renderer);
            Ok(0)
        }
    }
}

fn verdict_word(v: &Value) -> &'static str {
    match v.as_str() {
        Some("valid") => "VALID",
        Some("tampered") => "TAMPERED",
        _ => "UNVERIFIABLE",
    }
}

fn clone_cmd(c: &AuditCmd) -> AuditCmd {
    match c {
        AuditCmd::Export { home, out } => AuditCmd::Export {
            home: home.clone(),
            out: out.clone(),
        },
        AuditCmd::Prove { home, seq } => AuditCmd::Prove {
            home: home.clone(),
            seq: *seq,
        },
        AuditCmd::Consistency { home, from, to } => AuditCmd::Consistency {
            home: home.clone(),
            from: *from,
            to: *to,
        },
        AuditCmd::Checkpoint { home, out } => AuditCmd::Checkpoint {
            home: home.clone(),
            out: out.clone(),
        },
        AuditCmd::Show {
            home,
            dataset,
            counterparty,
            kind,
            since,
            until,
            limit,
        } => AuditCmd::Show {
            home: home.clone(),
            dataset: dataset.clone(),
            counterparty: counterparty.clone(),
            kind: kind.clone(),
            since: since.clone(),
            until: until.clone(),
            limit: *limit,
        },
        AuditCmd::Verify { .. } | AuditCmd::Reconcile { .. } => AuditCmd::Reconcile {
            bundles: Vec::new(),
            ca: None,
        },
    }
}

fn show(v: &Value) {
    let Some(a) = v.as_array() else {
        return render::generic(v);
    };
    for e in a {
        let t = e["time_ms"]
            .as_u64()
            .and_then(|ms| {
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            })
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let opt = |k: &str| {
            e[k].as_str()
                .map(|x| format!(" {k}={x}"))
                .unwrap_or_default()
        };
        println!(
            "{:>6} {t} {:<26} {}{}{}{}{}{}",
            e["seq"],
            e["kind"].as_str().unwrap_or(""),
            e["actor"]["operator"].as_str().unwrap_or(""),
            opt("dataset"),
            opt("counterparty"),
            opt("release"),
            e["record_count"]
                .as_u64()
                .map(|n| format!(" records={n}"))
                .unwrap_or_default(),
            opt("detail")
        );
    }
}

/// Verifies one bundle with witnesses, trusted checkpoints and a CA.
pub fn verify_bundle(
    path: &Path,
    witnesses: &[PathBuf],
    checkpoints: &[PathBuf],
    ca: Option<&Path>,
) -> Result<Report> {
    let reader = BundleReader::open(path).map_err(|e| {
        anyhow!(Exit {
            code: 1,
            message: e.to_string()
        })
    })?;
    let ca_certs: Vec<CertificateDer<'static>> = match ca {
        Some(p) => pki::read_certs(p).map_err(node_error)?,
        None => vec![CertificateDer::from(reader.header().ca_certificate.clone())],
    };
    let checker = CertChecker::new(&ca_certs, Vec::new()).map_err(node_error)?;
    let mut inputs = VerifyInputs {
        certificates: Some(&checker),
        ..Default::default()
    };
    for w in witnesses {
        inputs.witnesses.push((
            w.display().to_string(),
            read_header(w).map_err(|e| anyhow!("{e}"))?,
        ));
    }
    for c in checkpoints {
        let bytes = std::fs::read(c).map_err(|e| anyhow!("{}: {e}", c.display()))?;
        let cp: SignedCheckpoint = pdx_crypto::wire::from_cbor(&bytes, "checkpoint file")
            .map_err(|e| anyhow!("{}: {e}", c.display()))?;
        inputs
            .trusted
            .push((format!("trusted checkpoint {}", c.display()), cp));
    }
    verify(reader, &path.display().to_string(), &inputs).map_err(|e| anyhow!("{e}"))
}

fn print_report(r: &Report) {
    println!("bundle       {}", r.bundle);
    println!("log          {} ({})", r.log_id, r.dept);
    println!("entries      {}  root {}", r.entries, r.root);
    println!(
        "checkpoints  {}/{} verified",
        r.checkpoints_verified, r.checkpoints_total
    );
    println!(
        "cosignatures {} peer cosignatures match",
        r.cosignatures_verified
    );
    println!(
        "external     {} witness/trusted checkpoints of this log checked",
        r.external_checkpoints_checked
    );
    println!("keys         {}", r.keys.join("; "));
    let verdict = match r.verdict {
        Verdict::Valid => "VALID",
        Verdict::Tampered => "TAMPERED",
        Verdict::Unverifiable => "UNVERIFIABLE",
    };
    println!("verdict      {verdict}");
    for f in &r.findings {
        let sev = match f.severity {
            Severity::Tampered => "TAMPERED",
            Severity::Unverifiable => "UNVERIFIABLE",
        };
        let at = f.at.map(|a| format!(" at {a}")).unwrap_or_default();
        println!(
            "  {sev:<12} {:<18}{at}: {}",
            serde_json::to_value(f.case)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            f.detail
        );
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "pdx-verify-{}",
        hex::encode(pdx_crypto::rng::bytes::<8>()?)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
