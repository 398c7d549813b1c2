//! `pdx audit verify` and `pdx audit reconcile`: offline, on bundles, for
//! regulators (the node-side audit commands go through the node).

use crate::args::{AuditCmd, Cli, Command};
use crate::output::{self, outln};
use crate::session::node_command;
use crate::{Exit, node_error};
use anyhow::{Result, anyhow};
use pdx_audit::bundle::{BundleReader, read_header};
use pdx_audit::checkpoint::SignedCheckpoint;
use pdx_audit::verify::{CaTrust, Report, Severity, Verdict, VerifyInputs, verify};
use pdx_node::api::Request;
use pdx_node::pki::{self, CertChecker};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub async fn run(cli: &Cli, operator: &str) -> Result<u8> {
    match &cli.command {
        Command::Audit(AuditCmd::Verify {
            bundle,
            home,
            witness,
            checkpoint,
            ca,
        }) => {
            let (path, _tmp) = match (bundle, home) {
                (Some(b), None) => (b.clone(), None),
                (None, Some(h)) => {
                    let dir = tempdir()?;
                    let out = dir.join("bundle.pdxaudit");
                    let req = Request::AuditExport {
                        out: out.display().to_string(),
                    };
                    node_command(h, None, req, operator, true).await?;
                    (out, Some(TempDir(dir)))
                }
                _ => return Err(Exit::usage("give a BUNDLE or --home HOME")),
            };
            let report = verify_bundle(&path, witness, checkpoint, ca.as_deref())?;
            let code = report.verdict.exit_code() as u8;
            if cli.json {
                output::json(&serde_json::to_value(&report)?);
            } else {
                print_report(&report);
            }
            Ok(code)
        }
        Command::Audit(AuditCmd::Reconcile { bundles, ca }) => {
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
            // A transfer whose other side's bundle was not given is not a
            // mismatch: it cannot be checked (3), unlike a real one (2).
            let missing = rec
                .mismatches
                .iter()
                .filter(|m| m.kind == pdx_audit::reconcile::MismatchKind::PeerBundleMissing)
                .count();
            let real = rec.mismatches.len() - missing;
            let code = if tampered || real > 0 {
                2
            } else if missing > 0 {
                3
            } else {
                0
            };
            let v = json!({"bundles": verdicts, "matched": rec.matched, "calls_matched": rec.calls_matched, "mismatches": rec.mismatches, "clean": clean, "unmatchable": missing});
            if cli.json {
                output::json(&v);
            } else {
                for b in &verdicts {
                    outln!(
                        "{:<8} {}  {}",
                        b["dept"].as_str().unwrap_or("-"),
                        verdict_word(&b["verdict"]),
                        b["bundle"].as_str().unwrap_or("")
                    );
                }
                outln!("{} transfers matched in both logs", rec.matched);
                if rec.calls_matched > 0 {
                    outln!("{} calls matched in every party's log", rec.calls_matched);
                }
                if rec.mismatches.is_empty() {
                    outln!("no mismatches");
                } else {
                    outln!(
                        "{real} mismatches, {missing} transfers that cannot be matched without the other side's bundle:"
                    );
                    for m in &rec.mismatches {
                        outln!(
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
            Ok(code)
        }
        _ => Err(anyhow!("not an offline audit command")),
    }
}

fn verdict_word(v: &Value) -> &'static str {
    match v.as_str() {
        Some("valid") => "VALID",
        Some("tampered") => "TAMPERED",
        _ => "UNVERIFIABLE",
    }
}

/// Verifies one bundle with witnesses, trusted checkpoints and a CA.
pub fn verify_bundle(
    path: &Path,
    witnesses: &[PathBuf],
    checkpoints: &[PathBuf],
    ca: Option<&Path>,
) -> Result<Report> {
    let name = path.display().to_string();
    let reader = match BundleReader::open(path) {
        Ok(r) => r,
        // Broken framing or an unknown format is a verdict about the bundle;
        // an unreadable file is an error (exit 1).
        Err(e) => {
            return pdx_audit::verify::unreadable(&name, &e).ok_or_else(|| {
                anyhow!(Exit {
                    code: 1,
                    message: e.to_string()
                })
            });
        }
    };
    let (ca_certs, trust): (Vec<CertificateDer<'static>>, CaTrust) = match ca {
        Some(p) => (pki::read_certs(p).map_err(node_error)?, CaTrust::Pinned),
        None => {
            // Not pinned: at least the CA must be a valid self-signed one.
            let der = reader.header().ca_certificate.clone();
            pki::cert::check_self_signed(&der).map_err(node_error)?;
            (vec![CertificateDer::from(der)], CaTrust::Bundle)
        }
    };
    let checker = CertChecker::new(&ca_certs, Vec::new()).map_err(node_error)?;
    let mut inputs = VerifyInputs {
        certificates: Some(&checker),
        ca: trust,
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
    verify(reader, &name, &inputs).map_err(|e| anyhow!("{e}"))
}

fn print_report(r: &Report) {
    outln!("bundle       {}", r.bundle);
    outln!("log          {} ({})", r.log_id, r.dept);
    outln!("entries      {}  root {}", r.entries, r.root);
    outln!(
        "checkpoints  {}/{} verified",
        r.checkpoints_verified,
        r.checkpoints_total
    );
    outln!(
        "cosignatures {} peer cosignatures match",
        r.cosignatures_verified
    );
    outln!(
        "external     {} witness/trusted checkpoints of this log checked",
        r.external_checkpoints_checked
    );
    outln!("keys         {}", r.keys.join("; "));
    let verdict = match r.verdict {
        Verdict::Valid => "VALID",
        Verdict::Tampered => "TAMPERED",
        Verdict::Unverifiable => "UNVERIFIABLE",
    };
    match r.ca {
        CaTrust::Pinned => outln!("ca           pinned (--ca)"),
        CaTrust::Bundle => outln!(
            "ca           NOT PINNED: trusted the CA certificate inside the bundle (a bundle forged under its own CA would pass; give --ca)"
        ),
        CaTrust::None => outln!("ca           none: certificates not checked"),
    }
    let caveat = if r.ca == CaTrust::Bundle && r.verdict == Verdict::Valid {
        " (against the bundle's own CA: not pinned)"
    } else {
        ""
    };
    outln!("verdict      {verdict}{caveat}");
    for f in &r.findings {
        let sev = match f.severity {
            Severity::Tampered => "TAMPERED",
            Severity::Unverifiable => "UNVERIFIABLE",
        };
        let at = f.at.map(|a| format!(" at {a}")).unwrap_or_default();
        outln!(
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
