//! The de-identification engine: treatments, rules, and the privacy model,
//! checked against an independent computation of equivalence classes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_crypto::pseudonym::PseudonymMaster;
use pdx_schemas::engine::{Engine, FieldSealer, OutValue, RecordSink};
use pdx_schemas::rules::check_external_release;
use pdx_schemas::{RuleViolation, Schema};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

type Rows = Vec<Vec<Option<String>>>;
type Groups = HashMap<Vec<Option<String>>, (usize, HashSet<Option<String>>)>;

struct Collect(Rows);

impl RecordSink for Collect {
    fn record(&mut self, _index: u64, values: &[OutValue<'_>]) -> Result<(), String> {
        self.0.push(
            values
                .iter()
                .map(|v| match v {
                    OutValue::Null => None,
                    OutValue::Text(t) => Some(t.to_string()),
                    OutValue::Sealed {
                        recipient,
                        ciphertext,
                    } => Some(format!("sealed:{recipient}:{}", ciphertext.len())),
                })
                .collect(),
        );
        Ok(())
    }
}

struct FakeSealer;
impl FieldSealer for FakeSealer {
    fn seal(
        &mut self,
        _r: usize,
        _rec: u64,
        _f: u32,
        _n: &str,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        out.extend(value.iter().map(|b| b ^ 0x55));
        Ok(())
    }
}

fn run(
    schema: &Schema,
    profile: &str,
    agreement: &str,
    rows: &[Vec<Option<&str>>],
) -> Result<(Rows, pdx_schemas::report::ReleaseReport), RuleViolation> {
    let profile = schema.profile(profile)?;
    let master = PseudonymMaster::from_bytes(pdx_crypto::Suite::Intl, [1; 32]);
    let engine = Engine::new(schema, profile, agreement, &master);
    let mut counter = engine.counter();
    for r in rows {
        counter.add(r)?;
    }
    let decision = counter.finish()?;
    let mut emitter = engine.emitter(&decision);
    let mut sink = Collect(Vec::new());
    for r in rows {
        emitter
            .emit(r, &mut FakeSealer, &mut sink)
            .map_err(|e| match e {
                pdx_schemas::engine::EmitError::Rule(v) => v,
                other => panic!("{other}"),
            })?;
    }
    Ok((sink.0, decision.report))
}

const SCHEMA: &str = r#"
[dataset]
id = "visits"
title = "test visits"
grade = "important"
sharing = "conditional"
personal_information = true

[[field]]
name = "pid"
type = "string"
identifier = "direct-identifier"
pi = "personal"

[[field]]
name = "sex"
type = "code"
codes = ["1", "2"]
identifier = "quasi-identifier"
pi = "personal"

[[field]]
name = "born"
type = "date"
identifier = "quasi-identifier"
pi = "personal"

[[field]]
name = "age"
type = "integer"
identifier = "quasi-identifier"
pi = "personal"

[[field]]
name = "region"
type = "string"
identifier = "quasi-identifier"
pi = "personal"

[[field]]
name = "kind"
type = "code"
codes = ["11", "21"]
identifier = "other"
pi = "personal"
[field.hierarchy.setting]
"11" = "outpatient"
"21" = "inpatient"

[[field]]
name = "diag"
type = "string"
identifier = "sensitive"
pi = "sensitive-personal"

[[field]]
name = "amount"
type = "decimal"
precision = 10
scale = 2
identifier = "other"
pi = "personal"

[[field]]
name = "insured"
type = "string"
identifier = "other"
pi = "personal"

[profile.all]
k = 1
[profile.all.fields]
pid = "pseudonymize"
sex = { suppress = "X" }
born = { generalize = "quarter" }
age = { generalize = "age-band", width = 20, top = 60 }
region = { generalize = "prefecture" }
kind = { generalize = "hierarchy", level = "setting" }
diag = { generalize = "icd10-category" }
amount = { generalize = "top-bottom", max = "1000" }
insured = { encrypt_for = { field = "insured", map = "admdvs-province" } }

[profile.stats]
k = 3
l = { field = "diag", min = 2 }
max_suppression = 0.25
[profile.stats.fields]
pid = "drop"
sex = "keep"
born = { generalize = "year" }
age = "drop"
region = { generalize = "province" }
kind = "keep"
diag = { generalize = "icd10-category" }
amount = { generalize = "round", step = "100" }
insured = "drop"

[profile.leaky]
scope = "internal"
[profile.leaky.fields]
pid = "keep"
sex = "keep"
born = "keep"
age = "keep"
region = "keep"
kind = "keep"
diag = "keep"
amount = "keep"
insured = "aggregate-only"
"#;

fn schema() -> Schema {
    match Schema::parse(SCHEMA, "visits.toml", pdx_crypto::Suite::Intl) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn row<'a>(
    pid: &'a str,
    sex: &'a str,
    born: &'a str,
    region: &'a str,
    diag: &'a str,
) -> Vec<Option<&'a str>> {
    vec![
        Some(pid),
        Some(sex),
        Some(born),
        Some("37"),
        Some(region),
        Some("21"),
        Some(diag),
        Some("1234.56"),
        Some("440305"),
    ]
}

#[test]
fn every_treatment_is_applied() -> Result<(), RuleViolation> {
    let s = schema();
    let (out, _) = run(
        &s,
        "all",
        "A1",
        &[row("P1", "1", "1980-05-17", "440305", "J18.900")],
    )?;
    let r = &out[0];
    assert_eq!(
        r[0].as_deref().map(str::len),
        Some(32),
        "pseudonym is 32 hex characters"
    );
    assert_ne!(r[0].as_deref(), Some("P1"));
    assert_eq!(r[1].as_deref(), Some("X"));
    assert_eq!(r[2].as_deref(), Some("1980-Q2"));
    assert_eq!(r[3].as_deref(), Some("20-39"));
    assert_eq!(r[4].as_deref(), Some("440300"));
    assert_eq!(r[5].as_deref(), Some("inpatient"));
    assert_eq!(r[6].as_deref(), Some("J18"));
    assert_eq!(r[7].as_deref(), Some(">=1000.00"));
    assert_eq!(
        r[8].as_deref(),
        Some("sealed:0:6"),
        "sealed for the one recipient 440000"
    );
    Ok(())
}

#[test]
fn pseudonyms_are_stable_within_an_agreement_and_differ_across() -> Result<(), RuleViolation> {
    let s = schema();
    let rows = [
        row("P1", "1", "1980-05-17", "440305", "J18.900"),
        row("P1", "2", "1990-01-01", "440305", "K35.800"),
    ];
    let (a, _) = run(&s, "all", "A1", &rows)?;
    let (b, _) = run(&s, "all", "A2", &rows)?;
    assert_eq!(a[0][0], a[1][0], "same person, same agreement: linkable");
    assert_ne!(a[0][0], b[0][0], "other agreement: unlinkable");
    Ok(())
}

#[test]
fn dataset_rules_refuse_core_not_shareable_internal_and_missing_agreement() {
    let s = schema();
    let stats = &s.profiles["stats"];
    assert!(matches!(
        check_external_release(&s, stats, "110000", None),
        Err(RuleViolation::NeedsAgreement { .. })
    ));
    assert!(check_external_release(&s, stats, "110000", Some("A1")).is_ok());
    let leaky = &s.profiles["leaky"];
    assert!(matches!(
        check_external_release(&s, leaky, "110000", Some("A1")),
        Err(RuleViolation::InternalProfile { .. })
    ));
    let core = Schema::parse(
        &SCHEMA.replace("grade = \"important\"", "grade = \"core\""),
        "c.toml",
        pdx_crypto::Suite::Intl,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = check_external_release(&core, &core.profiles["stats"], "110000", Some("A1"));
    assert!(matches!(err, Err(RuleViolation::CoreData { .. })));
    assert!(
        err.err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("dataset visits, profile stats: rule core-never-leaves")
    );
    let closed = Schema::parse(
        &SCHEMA.replace("sharing = \"conditional\"", "sharing = \"not-shareable\""),
        "n.toml",
        pdx_crypto::Suite::Intl,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        check_external_release(&closed, &closed.profiles["stats"], "110000", Some("A1")),
        Err(RuleViolation::NotShareable { .. })
    ));
}

#[test]
fn clear_direct_identifier_is_refused_naming_dataset_field_profile_and_rule() {
    let s = schema();
    let mut leaky = s.profiles["leaky"].clone();
    leaky.scope = pdx_schemas::schema::Scope::External;
    let err = check_external_release(&s, &leaky, "110000", Some("A1"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("dataset visits, profile leaky, field pid: rule no-clear-direct-identifier"),
        "{err}"
    );
}

#[test]
fn unmappable_recipient_is_refused() {
    let s = schema();
    let mut r = row("P1", "1", "1980-05-17", "440305", "J18.900");
    r[8] = Some("44");
    let err = run(&s, "all", "A1", &[r])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("field insured, record 0: rule encrypt-for-recipient"),
        "{err}"
    );
}

#[test]
fn k_and_l_are_reached_by_suppression_within_budget() -> Result<(), RuleViolation> {
    let s = schema();
    let mut rows = Vec::new();
    // 3 classes of 4 with 2 diagnoses each, and one lone record.
    for (i, born) in ["1980-01-01", "1981-01-01", "1982-01-01"]
        .iter()
        .enumerate()
    {
        for j in 0..4 {
            let diag = if j % 2 == 0 { "J18.9" } else { "K35.8" };
            rows.push(row(["A", "B", "C"][i], "1", born, "440305", diag));
        }
    }
    rows.push(row("Z", "2", "1950-01-01", "110105", "J18.9"));
    let (out, report) = run(&s, "stats", "A1", &rows)?;
    assert_eq!(out.len(), 12);
    assert_eq!(report.records_suppressed, 1);
    assert_eq!((report.k_achieved, report.l_achieved), (4, 2));
    assert!((report.risk_prosecutor_max - 0.25).abs() < 1e-9);
    Ok(())
}

#[test]
fn privacy_model_over_budget_is_refused_with_the_report() {
    let s = schema();
    let rows: Vec<_> = (0..8)
        .map(|i| {
            row(
                "A",
                "1",
                ["1980-01-01", "1990-01-01"][i % 2],
                "440305",
                "J18.9",
            )
        })
        .collect();
    // Two classes of 4, but each has only one diagnosis: l = 2 fails everywhere.
    match run(&s, "stats", "A1", &rows) {
        Err(RuleViolation::PrivacyModel {
            suppressed,
            total,
            report,
            ..
        }) => {
            assert_eq!((suppressed, total), (8, 8));
            assert_eq!(report.records_out, 0);
        }
        other => panic!("expected a privacy-model refusal, got {other:?}"),
    }
}

/// Independent check: group released records by their released quasi-identifier
/// values and count, without using the engine's hashing.
fn classes(
    out: &[Vec<Option<String>>],
    qi_positions: &[usize],
    diag_pos: usize,
) -> Vec<(usize, usize)> {
    let mut groups: Groups = HashMap::new();
    for r in out {
        let key: Vec<Option<String>> = qi_positions.iter().map(|&p| r[p].clone()).collect();
        let g = groups.entry(key).or_default();
        g.0 += 1;
        g.1.insert(r[diag_pos].clone());
    }
    groups.values().map(|(n, d)| (*n, d.len())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn released_classes_always_meet_k_and_l(
        records in proptest::collection::vec((0usize..2, 0usize..6, 0usize..3, 0usize..4), 0..300)
    ) {
        let s = schema();
        let years = ["1950-03-01", "1960-03-01", "1970-03-01", "1980-03-01", "1990-03-01", "2000-03-01"];
        let regions = ["440305", "110105", "310101"];
        let diags = ["J18.9", "K35.8", "I10", "E11.9"];
        let sexes = ["1", "2"];
        let rows: Vec<Vec<Option<&str>>> = records.iter().map(|&(sx, y, r, d)| row("P", sexes[sx], years[y], regions[r], diags[d])).collect();
        match run(&s, "stats", "A", &rows) {
            Ok((out, report)) => {
                // Output fields: sex, born, region, kind, diag, amount (pid, age, insured dropped).
                for (n, distinct) in classes(&out, &[0, 1, 2], 4) {
                    prop_assert!(n >= 3, "class of {} < k", n);
                    prop_assert!(distinct >= 2, "class with {} diagnoses < l", distinct);
                }
                prop_assert_eq!(out.len() as u64, report.records_out);
                prop_assert!(report.records_suppressed as f64 <= 0.25 * rows.len() as f64);
            }
            Err(RuleViolation::PrivacyModel { suppressed, total, .. }) => {
                prop_assert!(suppressed as f64 > 0.25 * total as f64);
            }
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }
}

/// Released records with their indices.
type IndexedRows = Vec<(u64, Vec<Option<String>>)>;

/// Runs of consecutive records: counted apart and merged, then emitted each
/// from its own start (what the node does per block on many cores).
fn run_split(
    schema: &Schema,
    profile: &str,
    rows: &[Vec<Option<&str>>],
    cuts: &[usize],
) -> Result<(IndexedRows, pdx_schemas::report::ReleaseReport), RuleViolation> {
    let profile = schema.profile(profile)?;
    let master = PseudonymMaster::from_bytes(pdx_crypto::Suite::Intl, [1; 32]);
    let engine = Engine::new(schema, profile, "A", &master);
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(rows.len())).collect();
    bounds.push(0);
    bounds.push(rows.len());
    bounds.sort();
    let runs: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    let mut counters: Vec<_> = runs
        .iter()
        .map(|&(a, b)| {
            let mut c = engine.counter_at(a as u64);
            for r in &rows[a..b] {
                c.add(r)?;
            }
            Ok(c)
        })
        .collect::<Result<_, RuleViolation>>()?;
    let mut total = engine.counter();
    for c in counters.drain(..) {
        total.merge(c)?;
    }
    let decision = total.finish()?;
    let mut out = Vec::new();
    let mut released = 0u64;
    for &(a, b) in &runs {
        let mut checker = engine.emitter_at(&decision, a as u64, 0);
        let kept: Vec<bool> = rows[a..b]
            .iter()
            .map(|r| checker.check(r))
            .collect::<Result<_, _>>()?;
        let mut emitter = engine.emitter_at(&decision, a as u64, released);
        let mut sink = Indexed(Vec::new());
        for (r, &k) in rows[a..b].iter().zip(&kept) {
            if k {
                emitter
                    .emit_released(r, &mut FakeSealer, &mut sink)
                    .map_err(|e| match e {
                        pdx_schemas::engine::EmitError::Rule(v) => v,
                        other => panic!("{other}"),
                    })?;
            } else {
                emitter.skip();
            }
        }
        released += kept.iter().filter(|&&k| k).count() as u64;
        out.extend(sink.0);
    }
    Ok((out, decision.report))
}

struct Indexed(IndexedRows);

impl RecordSink for Indexed {
    fn record(&mut self, index: u64, values: &[OutValue<'_>]) -> Result<(), String> {
        let mut c = Collect(Vec::new());
        c.record(index, values)?;
        self.0.extend(c.0.into_iter().map(|r| (index, r)));
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn runs_counted_apart_and_emitted_from_their_starts_equal_one_sequential_run(
        records in proptest::collection::vec((0usize..2, 0usize..6, 0usize..3, 0usize..4), 0..300),
        cuts in proptest::collection::vec(0usize..300, 0..6),
        profile in prop_oneof![Just("stats"), Just("all")],
    ) {
        let s = schema();
        let years = ["1950-03-01", "1960-03-01", "1970-03-01", "1980-03-01", "1990-03-01", "2000-03-01"];
        let regions = ["440305", "110105", "310101"];
        let diags = ["J18.9", "K35.8", "I10", "E11.9"];
        let sexes = ["1", "2"];
        let pids = ["P1", "P2"];
        let rows: Vec<Vec<Option<&str>>> = records
            .iter()
            .map(|&(sx, y, r, d)| row(pids[d % 2], sexes[sx], years[y], regions[r], diags[d]))
            .collect();
        let whole = run(&s, profile, "A", &rows);
        let split = run_split(&s, profile, &rows, &cuts);
        match (whole, split) {
            (Ok((out, report)), Ok((split_out, split_report))) => {
                let indices: Vec<u64> = split_out.iter().map(|(i, _)| *i).collect();
                prop_assert_eq!(indices, (0..out.len() as u64).collect::<Vec<_>>());
                let values: Vec<_> = split_out.into_iter().map(|(_, v)| v).collect();
                prop_assert_eq!(values, out);
                prop_assert_eq!(format!("{report:?}"), format!("{split_report:?}"));
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "sequential {:?}, split {:?}", a.map(|x| x.1), b.map(|x| x.1)),
        }
    }
}
