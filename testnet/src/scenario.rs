//! Scenarios run on real node processes.

use crate::Testnet;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const PEOPLE_SCHEMA: &str = r#"[dataset]
id = "residents"
title = "residents receiving benefits (demo)"
grade = "general"
sharing = "conditional"
personal_information = true

[[field]]
name = "psn_no"
type = "string"
identifier = "direct-identifier"
pi = "personal"

[[field]]
name = "certno"
type = "resident-id"
identifier = "direct-identifier"
pi = "sensitive-personal"

[[field]]
name = "city"
type = "string"
identifier = "quasi-identifier"
pi = "personal"

[[field]]
name = "amount"
type = "decimal"
precision = 12
scale = 2
identifier = "other"
pi = "personal"

[profile.share]
description = "for the national platform: identity sealed for it, person number pseudonymised"
[profile.share.fields]
psn_no = "pseudonymize"
certno = { encrypt_for = "100000" }
city = "keep"
amount = "keep"
"#;

fn step(out: &mut Vec<Value>, t: Instant, what: &str, detail: String) {
    println!("[{:>6.2}s] {what}: {detail}", t.elapsed().as_secs_f64());
    out.push(json!({"step": what, "detail": detail, "seconds": t.elapsed().as_secs_f64()}));
}

/// The walking skeleton: two departments exchange a dataset on real nodes.
pub fn two_node(dir: &Path) -> Result<Value> {
    let t = Instant::now();
    let mut log = Vec::new();
    let mut net = Testnet::create(dir, "demo")?;
    net.add_node("440000", "Guangdong Medical Security Bureau")?;
    net.add_node("100000", "National Healthcare Security Administration")?;
    net.connect_all()?;
    net.start_all()?;
    step(
        &mut log,
        t,
        "network",
        format!("CA and 2 nodes on 127.0.0.1 in {}", dir.display()),
    );
    let (a, b) = (net.home("440000")?, net.home("100000")?);
    let schema = dir.join("residents.toml");
    std::fs::write(&schema, PEOPLE_SCHEMA)?;
    let csv = dir.join("residents.csv");
    let mut text = String::from("psn_no,certno,city,amount\n");
    for i in 0..1000u32 {
        let first17 = format!(
            "4401061980{:02}{:02}{:03}",
            1 + i % 12,
            1 + i % 28,
            i % 1000
        );
        let check = pdx_schemas::resident_id::check_char(first17.as_bytes())
            .map(char::from)
            .unwrap_or('0');
        text.push_str(&format!(
            "P{i:06},{first17}{check},{},{}.{:02}\n",
            ["广州", "深圳", "佛山"][i as usize % 3],
            100 + i,
            i % 100
        ));
    }
    std::fs::write(&csv, text)?;
    let imported = net.pdx_json(&[
        "import",
        "--home",
        &a,
        "--schema",
        &schema.display().to_string(),
        "--csv",
        &csv.display().to_string(),
        "--dataset",
        "residents",
    ])?;
    step(
        &mut log,
        t,
        "import",
        format!(
            "Guangdong imported {} rows (digest {})",
            imported["rows"],
            imported["digest"].as_str().unwrap_or("")
        ),
    );
    net.pdx_ok(&[
        "grant",
        "--home",
        &a,
        "--dataset",
        "residents",
        "--to",
        "100000",
        "--profile",
        "share",
        "--purpose",
        "benefit reconciliation",
        "--agreement",
        "DSA-2026-001",
    ])?;
    step(
        &mut log,
        t,
        "grant",
        "Guangdong granted profile `share` to 100000 under DSA-2026-001".into(),
    );
    let fetched = net.pdx_json(&[
        "fetch",
        "--home",
        &b,
        "--peer",
        "440000",
        "--dataset",
        "residents",
        "--profile",
        "share",
    ])?;
    step(
        &mut log,
        t,
        "fetch",
        format!(
            "National fetched release {}: {} records, signed receipt logged by the sender",
            fetched["release"].as_str().unwrap_or(""),
            fetched["records"]
        ),
    );
    let out = dir.join("received.csv");
    let exported = net.pdx_json(&[
        "export",
        "--home",
        &b,
        "--release",
        fetched["release"].as_str().unwrap_or(""),
        "--out",
        &out.display().to_string(),
    ])?;
    step(
        &mut log,
        t,
        "export",
        format!(
            "National decrypted {} and wrote {}",
            exported["decrypted_fields"],
            out.display()
        ),
    );
    let ca = net.ca_dir().join("ca.crt").display().to_string();
    let mut verdicts = Vec::new();
    let bundles: Vec<(String, String)> = ["440000", "100000"]
        .iter()
        .map(|d| {
            (
                d.to_string(),
                dir.join(format!("{d}.bundle")).display().to_string(),
            )
        })
        .collect();
    for (d, b) in &bundles {
        net.pdx_ok(&["audit", "export", "--home", &net.home(d)?, "--out", b])?;
    }
    for (i, (d, b)) in bundles.iter().enumerate() {
        let other = &bundles[1 - i].1;
        let v = net.pdx(&[
            "audit",
            "verify",
            b,
            "--witness",
            other,
            "--ca",
            &ca,
            "--json",
        ])?;
        let report: Value = serde_json::from_slice(&v.stdout).context("audit verify output")?;
        step(
            &mut log,
            t,
            "audit verify",
            format!(
                "{d}: {} entries, verdict {}",
                report["entries"], report["verdict"]
            ),
        );
        verdicts
            .push(json!({"dept": d, "verdict": report["verdict"], "entries": report["entries"]}));
    }
    let rec = net.pdx(&[
        "audit",
        "reconcile",
        &bundles[0].1,
        &bundles[1].1,
        "--ca",
        &ca,
        "--json",
    ])?;
    let rec: Value = serde_json::from_slice(&rec.stdout)?;
    step(
        &mut log,
        t,
        "audit reconcile",
        format!(
            "{} transfer(s) matched, {} mismatch(es)",
            rec["matched"],
            rec["mismatches"].as_array().map(Vec::len).unwrap_or(0)
        ),
    );
    net.stop_all(Duration::from_secs(10))?;
    println!(
        "done in {:.1}s; node homes kept in {}",
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(json!({"steps": log, "audit": verdicts, "reconcile": rec}))
}
