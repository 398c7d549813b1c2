//! Human-readable output (tables) and `--json`.

use super::args::Command;
use serde_json::{Value, json};

/// A renderer for one command's result.
pub type Renderer = fn(&Value);

/// Prints `v` as JSON or with `human`.
pub fn print(json: bool, v: &Value, human: Renderer) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human(v);
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn time(v: &Value) -> String {
    v.as_u64()
        .and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

/// Key: value lines for an object; one line per element for arrays.
pub fn generic(v: &Value) {
    match v {
        Value::Object(m) => {
            let w = m.keys().map(String::len).max().unwrap_or(0);
            for (k, x) in m {
                println!("{k:w$}  {}", s(x));
            }
        }
        Value::Array(a) if a.is_empty() => println!("(none)"),
        Value::Array(a) => {
            for x in a {
                match x {
                    Value::Object(m) => println!(
                        "{}",
                        m.iter()
                            .map(|(k, x)| format!("{k}={}", s(x)))
                            .collect::<Vec<_>>()
                            .join("  ")
                    ),
                    other => println!("{}", s(other)),
                }
            }
        }
        other => println!("{}", s(other)),
    }
}

fn table(rows: &[Vec<String>]) {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map(|x| x.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, x)| format!("{x:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn rows(v: &Value, header: &[&str], keys: &[&str]) {
    let Some(a) = v.as_array() else {
        return generic(v);
    };
    if a.is_empty() {
        println!("(none)");
        return;
    }
    let mut out = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for x in a {
        out.push(
            keys.iter()
                .map(|k| {
                    if k.ends_with("_ms") {
                        time(&x[*k])
                    } else {
                        s(&x[*k])
                    }
                })
                .collect(),
        );
    }
    table(&out);
}

/// `pdx init`.
pub fn init(v: &Value) {
    println!(
        "node {} ({}) created in {}\n  network {}  listen {}\n  audit log {}\n  encryption key {}\nnext: pdx serve --home {}",
        s(&v["dept"]),
        s(&v["name"]),
        s(&v["home"]),
        s(&v["network"]),
        s(&v["listen"]),
        s(&v["log_id"]),
        s(&v["encryption_key"]),
        s(&v["home"])
    );
}

fn datasets(v: &Value) {
    rows(
        v,
        &["DATASET", "SCHEMA", "ROWS", "IMPORTED", "DIGEST"],
        &["dataset", "schema", "rows", "imported_ms", "digest"],
    );
}

fn grants(v: &Value) {
    if v.is_object() {
        println!(
            "grant {}: {} may fetch {} with profile {} for {:?} (agreement {}, expires {})",
            s(&v["id"]),
            s(&v["to"]),
            s(&v["dataset"]),
            s(&v["profile"]),
            s(&v["purpose"]),
            s(&v["agreement"]),
            time(&v["expires_ms"])
        );
        return;
    }
    rows(
        v,
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
        &[
            "id",
            "to",
            "dataset",
            "profile",
            "purpose",
            "agreement",
            "expires_ms",
            "revoked_ms",
        ],
    );
}

fn catalog(v: &Value) {
    rows(
        v,
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
        &[
            "dataset",
            "profile",
            "purpose",
            "agreement",
            "records",
            "grade",
            "sharing",
            "title",
        ],
    );
}

fn releases(v: &Value) {
    rows(
        v,
        &[
            "DIR", "RELEASE", "DATASET", "PROFILE", "PEER", "RECORDS", "CHUNKS", "STATE",
        ],
        &[
            "direction",
            "release",
            "dataset",
            "profile",
            "peer",
            "records",
            "chunks",
            "complete",
        ],
    );
}

fn import(v: &Value) {
    println!(
        "imported {} rows into dataset {} ({} rejected)\n  digest {}  audit entry {}",
        s(&v["rows"]),
        s(&v["dataset"]),
        s(&v["rejected"]),
        s(&v["digest"]),
        s(&v["audit_seq"])
    );
    if let Some(p) = v["problems"].as_array() {
        for x in p.iter().take(20) {
            println!(
                "  line {}, column {} ({}): {}",
                s(&x["line"]),
                s(&x["column"]),
                s(&x["field"]),
                s(&x["reason"])
            );
        }
    }
}

fn fetch(v: &Value) {
    if v["already_complete"].as_bool() == Some(true) {
        println!(
            "release {} from {} is already complete here; nothing transferred",
            s(&v["release"]),
            s(&v["sender"])
        );
        return;
    }
    let resumed = v["resumed_from"]
        .as_u64()
        .map(|c| format!(" (resumed at chunk {c})"))
        .unwrap_or_default();
    println!(
        "received release {} of {}/{} from {}: {} records in {} chunks{resumed}\n  content digest {}\n  signed receipt accepted by the sender; audit entry {}",
        s(&v["release"]),
        s(&v["dataset"]),
        s(&v["profile"]),
        s(&v["sender"]),
        s(&v["records"]),
        s(&v["chunks"]),
        s(&v["content_digest"]),
        s(&v["receive_seq"])
    );
}

fn status(v: &Value) {
    println!(
        "{} ({})  network {}  listening {}",
        s(&v["dept"]),
        s(&v["name"]),
        s(&v["network"]),
        s(&v["listen"])
    );
    println!(
        "audit log {}: {} entries, checkpoint at {} ({} ms old)",
        s(&v["log_id"]),
        s(&v["audit"]["entries"]),
        s(&v["audit"]["checkpoint_size"]),
        s(&v["audit"]["checkpoint_age_ms"])
    );
    println!("datasets: {}", s(&v["datasets"]));
    println!("peers:");
    rows(
        &v["peers"],
        &["  DEPT", "ADDR", "LAST CONTACT", "LAST ERROR"],
        &["dept", "addr", "last_contact_ms", "last_error"],
    );
    println!("pending transfers in:");
    rows(
        &v["pending_transfers_in"],
        &["  RELEASE", "FROM", "DATASET", "STORED", "CHUNKS"],
        &["release", "from", "dataset", "stored", "chunks"],
    );
}

/// JSON form of a schema for `schema show`.
pub fn schema_json(schema: &pdx_schemas::Schema) -> Value {
    json!({
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
    })
}

/// `pdx schema show`.
pub fn schema(v: &Value) {
    let d = &v["dataset"];
    println!("dataset {} — {}", s(&d["id"]), s(&d["title"]));
    println!(
        "  grade {}  sharing {}  personal information {}",
        s(&d["grade"]),
        s(&d["sharing"]),
        s(&d["personal_information"])
    );
    println!("fields:");
    rows(
        &v["fields"],
        &["  NAME", "TYPE", "NULL", "IDENTIFIER", "PI"],
        &["name", "type", "nullable", "identifier", "pi"],
    );
    if let Some(ps) = v["profiles"].as_array() {
        for p in ps {
            println!(
                "profile {} (scope {}, k={}, l={}, max suppression {})",
                s(&p["name"]),
                s(&p["scope"]),
                s(&p["k"]),
                s(&p["l"]),
                s(&p["max_suppression"])
            );
            rows(
                &p["treatments"],
                &["  FIELD", "TREATMENT"],
                &["field", "treatment"],
            );
        }
    }
}

/// The renderer for a node command.
pub fn renderer(cmd: &Command) -> Renderer {
    use super::args::{GrantCmd, PeerCmd};
    match cmd {
        Command::Datasets(_) => datasets,
        Command::Grant(g)
            if matches!(
                g.sub,
                Some(GrantCmd::List(_)) | None | Some(GrantCmd::Revoke { .. })
            ) =>
        {
            grants
        }
        Command::Catalog(_) => catalog,
        Command::Releases(_) => releases,
        Command::Import(_) => import,
        Command::Fetch(_) => fetch,
        Command::Status(_) | Command::Peer(PeerCmd::List(_)) => status,
        Command::He(super::args::HeCmd::Decrypt { .. }) => he_totals,
        Command::He(super::args::HeCmd::List(_)) => he_list,
        Command::Settle(super::args::SettleCmd::Clearing { .. }) => clearing,
        _ => generic,
    }
}

fn he_totals(v: &Value) {
    println!(
        "query {}: sums of {} by {} over {} contributors ({}), k = {}, {} records",
        s(&v["query"]),
        s(&v["values"]),
        s(&v["group_by"]),
        v["contributors"].as_array().map_or(0, Vec::len),
        v["contributors"]
            .as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        s(&v["k"]),
        s(&v["records"])
    );
    let mut header = vec!["CATEGORY".to_string(), "COUNT".to_string()];
    for name in v["values"].as_array().into_iter().flatten() {
        header.push(format!("SUM {}", s(name)));
        header.push(format!("MEAN {}", s(name)));
    }
    let mut out = vec![header];
    for c in v["categories"].as_array().into_iter().flatten() {
        let mut row = vec![s(&c["category"]), s(&c["count"])];
        let sums = c["sums"].as_array().cloned().unwrap_or_default();
        let means = c["means"].as_array().cloned().unwrap_or_default();
        for (a, b) in sums.iter().zip(&means) {
            row.push(s(a));
            row.push(s(b));
        }
        out.push(row);
    }
    table(&out);
}

fn he_list(v: &Value) {
    rows(
        v,
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
        &[
            "query",
            "role",
            "key_holder",
            "aggregator",
            "k",
            "categories",
            "contributions",
            "aggregate",
        ],
    );
}

fn clearing(v: &Value) {
    println!(
        "clearing over {} releases, {} records, {} confirmations",
        s(&v["releases"]),
        s(&v["records"]),
        s(&v["confirmations"])
    );
    rows(
        &v["matrix"],
        &[
            "INSURED",
            "TREATMENT",
            "RECORDS",
            "AMOUNT",
            "CONFIRMED RECORDS",
            "CONFIRMED AMOUNT",
        ],
        &[
            "insured",
            "treatment",
            "records",
            "amount",
            "confirmed_records",
            "confirmed_amount",
        ],
    );
    println!();
    rows(
        &v["net_positions"],
        &["PROVINCE", "NET (yuan)", "CONFIRMED NET (yuan)"],
        &["province", "net", "confirmed_net"],
    );
    for u in v["unconfirmed"].as_array().into_iter().flatten() {
        println!("not confirmed: {}", s(u));
    }
    for u in v["excluded"].as_array().into_iter().flatten() {
        println!("excluded (cannot be verified now): {}", s(u));
    }
}
