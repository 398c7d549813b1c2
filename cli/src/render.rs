//! Human output of typed results (tables laid out by display width, so
//! Chinese names align) and `--json` (the result itself).

use crate::output::{self, outln};
use anyhow::Result;
use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use pdx_node::api::Outcome;
use pdx_node::node::InitOutcome;
use pdx_node::timearg::format_ms;
use serde::Serialize;
use serde_json::{Value, json};

fn text(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| format!("{k}={}", text(x)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

fn time(ms: Option<u64>) -> String {
    ms.and_then(format_ms).unwrap_or_else(|| "-".into())
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// A borderless table; `right` lists the columns of numbers and amounts.
fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) {
    if rows.is_empty() {
        outln!("(none)");
        return;
    }
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    for (i, col) in t.column_iter_mut().enumerate() {
        // Two spaces between columns, none before the first.
        col.set_padding((0, 2));
        if right.contains(&i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    for line in t.lines() {
        outln!("{}", line.trim_end());
    }
}

/// Key and value lines of any serializable result.
fn generic(v: &Value) {
    match v {
        Value::Object(m) => {
            // Points in time (`*_ms` since the epoch) as times, under their
            // name without the unit.
            let shown: Vec<(String, String)> = m
                .iter()
                .map(|(k, x)| match (k.strip_suffix("_ms"), x.as_u64()) {
                    (Some(name), Some(ms)) if !name.contains("age") => {
                        (name.to_string(), time(Some(ms)))
                    }
                    (Some(name), None) if x.is_null() => (name.to_string(), "-".into()),
                    _ => (k.clone(), text(x)),
                })
                .collect();
            let w = shown.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, x) in shown {
                outln!("{k:w$}  {x}");
            }
        }
        Value::Array(a) if a.is_empty() => outln!("(none)"),
        Value::Array(a) => {
            // One block of key/value lines per item, a blank line between.
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    outln!();
                }
                match x {
                    Value::Object(_) => generic(x),
                    other => outln!("{}", text(other)),
                }
            }
        }
        other => outln!("{}", text(other)),
    }
}

/// Prints any serializable result: JSON, or key/value lines.
pub fn value<T: Serialize>(json: bool, v: &T) -> Result<()> {
    let v = serde_json::to_value(v)?;
    if json {
        output::json(&v)
    } else {
        generic(&v)
    }
    Ok(())
}

fn peers(list: &[pdx_node::service::directory::PeerInfo]) {
    table(
        &["DEPT", "ADDR", "LAST CONTACT", "LAST ERROR"],
        list.iter()
            .map(|p| {
                vec![
                    p.dept.clone(),
                    p.addr.clone(),
                    time(p.last_contact_ms),
                    opt(&p.last_error),
                ]
            })
            .collect(),
        &[],
    );
}

/// Prints a command's outcome.
pub fn outcome(json: bool, o: &Outcome) -> Result<()> {
    if json {
        output::json(&o.to_json().map_err(crate::node_error)?);
        return Ok(());
    }
    match o {
        Outcome::Imported(v) => {
            outln!(
                "imported {} records into dataset {} ({} rejected, {} excluded as not cross-province)\n  digest {}  audit entry {}",
                v.records,
                v.dataset,
                v.rejected,
                v.excluded,
                v.digest,
                v.audit_seq
            );
            for p in v.problems.iter().take(20) {
                outln!(
                    "  line {}, column {} ({}): {}",
                    p.line,
                    p.column,
                    p.field,
                    p.reason
                );
            }
        }
        Outcome::Peer(p) => peers(std::slice::from_ref(p)),
        Outcome::Peers(list) => peers(list),
        Outcome::Datasets(list) => table(
            &["DATASET", "SCHEMA", "RECORDS", "IMPORTED", "DIGEST"],
            list.iter()
                .map(|d| {
                    vec![
                        d.dataset.clone(),
                        d.schema.clone(),
                        d.records.to_string(),
                        time(Some(d.imported_ms)),
                        d.digest.clone(),
                    ]
                })
                .collect(),
            &[2],
        ),
        Outcome::Grant(g) if g.service.is_some() => outln!(
            "grant {}: {} may call service {} for {:?} (agreement {}, expires {})",
            g.id,
            g.to,
            opt(&g.service),
            g.purpose,
            opt(&g.agreement),
            time(g.expires_ms)
        ),
        Outcome::Grant(g) => outln!(
            "grant {}: {} may fetch {} with profile {} for {:?} (agreement {}, expires {})",
            g.id,
            g.to,
            g.dataset,
            g.profile,
            g.purpose,
            opt(&g.agreement),
            time(g.expires_ms)
        ),
        Outcome::Grants(list) => table(
            &[
                "ID",
                "TO",
                "DATASET",
                "PROFILE",
                "PURPOSE",
                "AGREEMENT",
                "EXPIRES",
                "REVOKED",
            ],
            list.iter()
                .map(|g| {
                    vec![
                        g.id.clone(),
                        g.to.clone(),
                        match &g.service {
                            Some(sv) => format!("service {sv}"),
                            None => g.dataset.clone(),
                        },
                        g.profile.clone(),
                        g.purpose.clone(),
                        opt(&g.agreement),
                        time(g.expires_ms),
                        time(g.revoked_ms),
                    ]
                })
                .collect(),
            &[],
        ),
        Outcome::Catalog(list) => table(
            &[
                "DATASET",
                "PROFILE",
                "PURPOSE",
                "AGREEMENT",
                "RECORDS",
                "GRADE",
                "SHARING",
                "TITLE",
            ],
            list.iter()
                .map(|e| {
                    vec![
                        e.dataset.clone(),
                        e.profile.clone(),
                        e.purpose.clone(),
                        opt(&e.agreement),
                        e.records.to_string(),
                        e.grade.clone(),
                        e.sharing.clone(),
                        e.title.clone(),
                    ]
                })
                .collect(),
            &[4],
        ),
        Outcome::Fetched(v) => {
            if v.already_complete {
                outln!(
                    "release {} from {} is already complete here; nothing transferred",
                    v.release,
                    v.sender
                );
            } else {
                let resumed = v
                    .resumed_from
                    .map(|c| format!(" (resumed at chunk {c})"))
                    .unwrap_or_default();
                outln!(
                    "received release {} of {}/{} from {}: {} records in {} chunks{resumed}\n  content digest {}\n  signed receipt accepted by the sender; audit entry {}",
                    v.release,
                    v.dataset,
                    v.profile,
                    v.sender,
                    v.records,
                    v.chunks,
                    v.content_digest,
                    opt(&v.receive_seq)
                );
            }
        }
        Outcome::Releases(list) => {
            use pdx_node::service::release::ReleaseInfo;
            table(
                &[
                    "DIR", "RELEASE", "DATASET", "PROFILE", "PEER", "RECORDS", "CHUNKS", "STATE",
                ],
                list.iter()
                    .map(|r| match r {
                        ReleaseInfo::Out(o) => vec![
                            "out".into(),
                            o.release.clone(),
                            o.dataset.clone(),
                            o.profile.clone(),
                            o.peer.clone(),
                            o.records.to_string(),
                            o.chunks.to_string(),
                            if o.deliveries.is_empty() {
                                "not delivered".into()
                            } else {
                                format!("delivered ({})", o.deliveries.len())
                            },
                        ],
                        ReleaseInfo::In(i) => vec![
                            "in".into(),
                            i.release.clone(),
                            i.dataset.clone(),
                            i.profile.clone(),
                            i.peer.clone(),
                            i.records.to_string(),
                            i.chunks.to_string(),
                            if i.complete {
                                "complete".into()
                            } else {
                                format!("{} of {} stored", i.stored, i.chunks)
                            },
                        ],
                    })
                    .collect(),
                &[5, 6],
            )
        }
        Outcome::CertInstalled(c) => outln!(
            "certificate {} installed (replaces {}), valid until {}; identity key {}{}; audit entry {}: new handshakes present it",
            c.serial,
            c.previous_serial,
            pdx_node::timearg::format_signed_ms(c.not_after_ms),
            c.identity_key,
            if c.new_identity_key { " (new)" } else { "" },
            c.audit_seq
        ),
        Outcome::BackupCreated(b) => outln!(
            "backup {}: {} files, {} bytes, audit log size {} ({} suite)",
            b.file,
            b.files,
            b.bytes,
            b.audit_size,
            b.suite
        ),
        Outcome::RestoreAcknowledged(a) => {
            match (a.discontinuity_seq, a.lost_to) {
                (Some(seq), Some(to)) => outln!(
                    "loss acknowledged: entries {}..{to} are recorded as lost (discontinuity entry {seq}); signing resumed at size {}",
                    a.restored_size,
                    a.checkpoint_size
                ),
                _ => outln!(
                    "restore acknowledged without a known loss; signing resumed at size {}",
                    a.checkpoint_size
                ),
            }
            if !a.unreached.is_empty() {
                outln!(
                    "not asked: {} (each alarms if it witnessed more)",
                    a.unreached.join(", ")
                );
            }
        }
        Outcome::Doctor(r) => {
            table(
                &["CHECK", "PEER", "RESULT", "FINDING"],
                r.findings
                    .iter()
                    .map(|f| {
                        vec![
                            f.check.clone(),
                            opt(&f.peer),
                            text(&serde_json::to_value(f.severity).unwrap_or_default()),
                            f.message.clone(),
                        ]
                    })
                    .collect(),
                &[],
            );
            outln!(
                "{}: {}",
                r.dept,
                text(&serde_json::to_value(r.worst).unwrap_or_default())
            );
        }
        Outcome::Status(v) => {
            outln!(
                "{} ({})  network {} (suite {}: {})  listening {}",
                v.dept,
                v.name,
                v.network,
                v.suite,
                v.suite.algorithms(),
                v.listen
            );
            outln!(
                "audit log {}: {} entries, checkpoint at {} ({} ms old)",
                v.log_id,
                v.audit.entries,
                v.audit.checkpoint_size,
                v.audit.checkpoint_age_ms
            );
            outln!(
                "datasets: {}  certificate expires {}  store format {}",
                v.datasets,
                time(v.certificate_expires_ms),
                v.store_format
            );
            for w in &v.warnings {
                outln!("warning: {w}");
            }
            outln!("peers:");
            peers(&v.peers);
            outln!("pending transfers in:");
            table(
                &["RELEASE", "FROM", "DATASET", "STORED", "CHUNKS"],
                v.pending_transfers_in
                    .iter()
                    .map(|p| {
                        vec![
                            p.release.clone(),
                            p.from.clone(),
                            p.dataset.clone(),
                            p.stored.to_string(),
                            p.chunks.to_string(),
                        ]
                    })
                    .collect(),
                &[3, 4],
            );
            outln!("releases not yet delivered:");
            table(
                &["RELEASE", "TO", "DATASET"],
                v.releases_not_yet_delivered
                    .iter()
                    .map(|r| vec![r.release.clone(), r.to.clone(), r.dataset.clone()])
                    .collect(),
                &[],
            );
            outln!(
                "signed documents not yet delivered (retry the command; settle confirm: --all):"
            );
            table(
                &["KIND", "SUBJECT", "TO", "SIGNED", "DIGEST"],
                v.documents_not_yet_delivered
                    .iter()
                    .map(|d| {
                        vec![
                            d.kind.clone(),
                            d.subject.clone(),
                            d.to.clone(),
                            d.signed.clone(),
                            d.digest.clone(),
                        ]
                    })
                    .collect(),
                &[],
            );
        }
        Outcome::Decrypted(v) => {
            outln!(
                "query {}: sums of {} by {} over {} contributors ({}), k = {}, {} records",
                v.query,
                v.values.join(","),
                v.group_by.join(","),
                v.contributors.len(),
                v.contributors.join(","),
                v.k,
                v.records
            );
            let mut header = vec!["CATEGORY".to_string(), "COUNT".to_string()];
            for name in &v.values {
                header.push(format!("SUM {name}"));
                header.push(format!("MEAN {name}"));
            }
            let rows = v
                .categories
                .iter()
                .map(|c| {
                    let mut row = vec![c.category.clone(), c.count.to_string()];
                    for (a, b) in c.sums.iter().zip(&c.means) {
                        row.push(a.clone());
                        row.push(b.clone());
                    }
                    row
                })
                .collect();
            let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
            let right: Vec<usize> = (1..header.len()).collect();
            table(&header_refs, rows, &right);
        }
        Outcome::Queries(list) => table(
            &[
                "QUERY",
                "ROLE",
                "KEY HOLDER",
                "AGGREGATOR",
                "K",
                "CATEGORIES",
                "CONTRIBUTIONS",
                "AGGREGATE",
            ],
            list.iter()
                .map(|q| {
                    vec![
                        q.query.clone(),
                        q.role.clone(),
                        q.key_holder.clone(),
                        q.aggregator.clone(),
                        q.k.to_string(),
                        q.categories.to_string(),
                        q.contributions.to_string(),
                        yes_no(q.aggregate).into(),
                    ]
                })
                .collect(),
            &[4, 5, 6],
        ),
        Outcome::Clearing(v) => {
            outln!(
                "clearing over {} releases, {} records, {} confirmations",
                v.releases,
                v.records,
                v.confirmations
            );
            table(
                &[
                    "INSURED",
                    "TREATMENT",
                    "RECORDS",
                    "AMOUNT",
                    "AGREED RECORDS",
                    "AGREED AMOUNT",
                    "DISPUTED RECORDS",
                    "DISPUTED AMOUNT",
                ],
                v.matrix
                    .iter()
                    .map(|c| {
                        vec![
                            c.insured.clone(),
                            c.treatment.clone(),
                            c.records.to_string(),
                            c.amount.clone(),
                            c.confirmed_records.to_string(),
                            c.confirmed_amount.clone(),
                            c.disputed_records.to_string(),
                            c.disputed_amount.clone(),
                        ]
                    })
                    .collect(),
                &[2, 3, 4, 5, 6, 7],
            );
            outln!();
            table(
                &["PROVINCE", "NET (yuan)", "NET ON AGREED (yuan)"],
                v.net_positions
                    .iter()
                    .map(|p| vec![p.province.clone(), p.net.clone(), p.confirmed_net.clone()])
                    .collect(),
                &[1, 2],
            );
            for u in &v.unconfirmed {
                outln!("not confirmed: {u}");
            }
            for u in &v.excluded {
                outln!("excluded: {u}");
            }
        }
        Outcome::Disputes(list) => table(
            &[
                "INSURED",
                "TREATMENT",
                "SETL_ID",
                "REASON",
                "AMOUNT",
                "SIGNED AMOUNT",
                "RELEASE",
            ],
            list.iter()
                .map(|d| {
                    vec![
                        d.insured.clone(),
                        d.treatment.clone(),
                        d.setl_id.clone(),
                        d.reason.clone(),
                        d.amount.clone(),
                        opt(&d.signed_amount),
                        d.release.clone(),
                    ]
                })
                .collect(),
            &[4, 5],
        ),
        Outcome::Calls(list) => table(
            &[
                "TIME", "CALL", "ROLE", "SERVICE", "CONSUMER", "PROVIDER", "VIA", "OUTCOME", "MS",
            ],
            list.iter()
                .map(|c| {
                    vec![
                        time(Some(c.time_ms)),
                        c.call_id.clone(),
                        format!("{:?}", c.role).to_lowercase(),
                        c.service.clone(),
                        c.consumer.clone(),
                        c.provider.clone(),
                        opt(&c.via),
                        if c.replayed {
                            format!("{} (replayed)", c.outcome)
                        } else {
                            c.outcome.clone()
                        },
                        c.elapsed_ms.to_string(),
                    ]
                })
                .collect(),
            &[8],
        ),
        Outcome::Entries(list) => {
            for e in list {
                let o = |k: &str, v: &Option<String>| {
                    v.as_ref().map(|x| format!(" {k}={x}")).unwrap_or_default()
                };
                outln!(
                    "{:>6} {} {:<26} {}{}{}{}{}{}",
                    e.seq,
                    time(Some(e.time_ms)),
                    e.kind,
                    e.actor.operator,
                    o("dataset", &e.dataset),
                    o("counterparty", &e.counterparty),
                    o("release", &e.release),
                    e.record_count
                        .map(|n| format!(" records={n}"))
                        .unwrap_or_default(),
                    o("detail", &e.detail)
                );
            }
        }
        Outcome::Previewed(v) => {
            let r = &v.report;
            outln!(
                "preview of {} / {} written to {} (report {})",
                r.dataset,
                r.profile,
                v.out,
                v.report_path
            );
            outln!(
                "  {} of {} records released, {} suppressed; k = {} (required {}), l = {} (required {}); {} classes; prosecutor risk max {:.3}, mean {:.4}",
                r.records_out,
                r.records_in,
                r.records_suppressed,
                r.k_achieved,
                r.k_required,
                r.l_achieved,
                r.l_required,
                r.classes_released,
                r.risk_prosecutor_max,
                r.risk_prosecutor_avg
            );
            outln!("  quasi-identifiers: {}", r.quasi_identifiers.join(", "));
            if let Some(w) = &v.what_if {
                outln!(
                    "what if {} were quasi-identifiers too: {} classes, smallest {}, {} classes ({} records) below k = {}, l = {}, prosecutor risk max {:.3}, mean {:.4}",
                    w.assumed_qi.join(", "),
                    w.classes,
                    w.k_achieved,
                    w.classes_below_k,
                    w.records_below_k,
                    r.k_required,
                    opt(&w.l_achieved),
                    w.risk_prosecutor_max,
                    w.risk_prosecutor_avg
                );
            }
        }
        other => generic(&other.to_json().map_err(crate::node_error)?),
    }
    Ok(())
}

/// `pdx init`.
pub fn init(json: bool, v: &InitOutcome) -> Result<()> {
    if json {
        return value(true, v);
    }
    outln!(
        "node {} ({}) created in {}\n  network {} (suite {})  listen {}\n  audit log {}\n  encryption key {}\nnext: pdx serve --home {}",
        v.dept,
        v.name,
        v.home,
        v.network,
        v.suite,
        v.listen,
        v.log_id,
        v.encryption_key,
        v.home
    );
    Ok(())
}

/// `pdx schema show`.
pub fn schema(json: bool, schema: &pdx_schemas::Schema) -> Result<()> {
    let v = json!({
        "dataset": {"id": schema.dataset.id, "title": schema.dataset.title, "owner": schema.dataset.owner,
                    "grade": schema.dataset.grade, "sharing": schema.dataset.sharing,
                    "personal_information": schema.dataset.personal_information},
        "fields": schema.fields.iter().map(|f| json!({"name": f.name, "type": f.ty.name(), "nullable": f.nullable,
                    "identifier": f.identifier.label(), "pi": f.pi.label()})).collect::<Vec<_>>(),
        "profiles": schema.profiles.values().map(|p| json!({"name": p.name, "scope": p.scope, "k": p.k,
                    "l": p.l.as_ref().map(|l| json!({"field": schema.fields[l.field].name, "min": l.min})),
                    "max_suppression": p.max_suppression,
                    "treatments": schema.fields.iter().zip(&p.treatments).map(|(f, t)| json!({"field": f.name, "treatment": t.label()})).collect::<Vec<_>>()
                    })).collect::<Vec<_>>(),
        "digest": schema.digest.to_hex(),
    });
    if json {
        output::json(&v);
        return Ok(());
    }
    outln!("dataset {} — {}", schema.dataset.id, schema.dataset.title);
    outln!(
        "  grade {}  sharing {}  personal information {}",
        text(&v["dataset"]["grade"]),
        text(&v["dataset"]["sharing"]),
        yes_no(schema.dataset.personal_information)
    );
    outln!("fields:");
    table(
        &["NAME", "TYPE", "NULL", "IDENTIFIER", "PI"],
        schema
            .fields
            .iter()
            .map(|f| {
                vec![
                    f.name.clone(),
                    f.ty.name().to_string(),
                    yes_no(f.nullable).into(),
                    f.identifier.label().to_string(),
                    f.pi.label().to_string(),
                ]
            })
            .collect(),
        &[],
    );
    for p in schema.profiles.values() {
        outln!(
            "profile {} (scope {}, k={}, l={}, max suppression {})",
            p.name,
            text(&json!(p.scope)),
            p.k,
            p.l.as_ref()
                .map(|l| format!("{}>={}", schema.fields[l.field].name, l.min))
                .unwrap_or_else(|| "-".into()),
            p.max_suppression
        );
        table(
            &["FIELD", "TREATMENT"],
            schema
                .fields
                .iter()
                .zip(&p.treatments)
                .map(|(f, t)| vec![f.name.clone(), t.label().to_string()])
                .collect(),
            &[],
        );
    }
    Ok(())
}
