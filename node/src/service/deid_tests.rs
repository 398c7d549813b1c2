//! The release engine on all cores (`service::deid`) against one sequential
//! run of the same engine, on a real store: the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use crate::records::ChunkBuilder;
use crate::service::datasets;
use crate::service::preview::{PreviewSpec, preview};
use crate::service::release::{ReleaseSpec, out_chunk, produce};
use pdx_schemas::engine::OutValue;
use pdx_schemas::engine::{Engine, FieldSealer, RecordSink};
use pdx_schemas::import::{Encoding, OnError};
use std::collections::HashMap;
use std::fmt::Write as _;

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
name = "region"
type = "string"
identifier = "quasi-identifier"
pi = "personal"

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

[profile.stats]
k = 5
l = { field = "diag", min = 2 }
max_suppression = 0.5
[profile.stats.fields]
pid = "pseudonymize"
sex = "keep"
born = { generalize = "year" }
region = { generalize = "prefecture" }
diag = { generalize = "icd10-category" }
amount = { generalize = "round", step = "100" }
insured = { encrypt_for = { field = "insured", map = "admdvs-province" } }

[profile.flat]
k = 1
[profile.flat.fields]
pid = "pseudonymize"
sex = "keep"
born = { generalize = "quarter" }
region = "keep"
diag = { generalize = "icd10-category" }
amount = "keep"
insured = "drop"
"#;

/// A node home with `rows` generated visits imported as dataset `v`:
/// enough rows for many blocks and windows, skewed so that some classes
/// fall below k.
fn node_with_visits(dir: &std::path::Path, rows: usize) -> crate::node::Node {
    let node = crate::service::testing::node(dir, "440000", "广东");
    let regions = ["440305", "110105", "310101", "510104", "330106", "120101"];
    let diags = ["J18.9", "K35.8", "I10", "E11.9", "C34.1", "A15.0", "N18.5"];
    let mut csv = String::from("pid,sex,born,region,diag,amount,insured\n");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..rows {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let r = x >> 16;
        // Squaring skews the draws: rare regions and diagnoses.
        let pick = |n: usize, s: u64| ((s % 1000) * (s % 1000) * n as u64 / 1_000_000) as usize;
        writeln!(
            csv,
            "P{:05},{},{}-{:02}-{:02},{},{},{}.{:02},{}",
            r % 30_000,
            1 + r % 2,
            1940 + (r >> 8) % 60,
            1 + (r >> 14) % 12,
            1 + (r >> 18) % 28,
            if r.is_multiple_of(500) {
                // A few visitors from rare prefectures: classes below k.
                format!("65{:02}01", (r >> 8) % 90)
            } else {
                regions[pick(regions.len(), r >> 22)].to_string()
            },
            diags[pick(diags.len(), r >> 32)],
            (r >> 40) % 5000,
            (r >> 20) % 100,
            regions[(r >> 44) as usize % regions.len()],
        )
        .unwrap();
    }
    let (schema_path, csv_path) = (dir.join("v.toml"), dir.join("v.csv"));
    std::fs::write(&schema_path, SCHEMA).unwrap();
    std::fs::write(&csv_path, csv).unwrap();
    let spec = datasets::ImportSpec {
        schema_path: schema_path.display().to_string(),
        csv_path: csv_path.display().to_string(),
        dataset: "v".into(),
        encoding: Encoding::Utf8,
        on_error: OnError::Reject,
        rejects: None,
        replace: false,
        append: false,
    };
    datasets::import(&node, &spec, "steward", &crate::progress::NoProgress).unwrap();
    node
}

fn text(v: &OutValue<'_>, recipients: &[String]) -> String {
    match v {
        OutValue::Null => String::new(),
        OutValue::Text(t) => t.to_string(),
        OutValue::Sealed { recipient, .. } => {
            format!("[sealed for {}]", recipients[*recipient])
        }
    }
}

struct Csv<'a>(csv::Writer<Vec<u8>>, &'a [String]);
impl RecordSink for Csv<'_> {
    fn record(&mut self, _: u64, values: &[OutValue<'_>]) -> std::result::Result<(), String> {
        let row: Vec<String> = values.iter().map(|v| text(v, self.1)).collect();
        self.0.write_record(&row).map_err(|e| e.to_string())
    }
}

struct NoSeal;
impl FieldSealer for NoSeal {
    fn seal(
        &mut self,
        _: usize,
        _: u64,
        _: u32,
        _: &str,
        _: &[u8],
        _: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_preview_on_all_cores_is_byte_identical_to_one_sequential_pass() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_visits(dir.path(), 120_000);
    let meta = datasets::meta(&node, "v").unwrap();
    assert!(
        meta.blocks > 16,
        "{} blocks: too few for several windows",
        meta.blocks
    );
    let out = dir.path().join("p.csv").display().to_string();
    let spec = PreviewSpec {
        dataset: "v".into(),
        profile: "stats".into(),
        agreement: Some("A".into()),
        out: out.clone(),
        report: dir.path().join("p.json").display().to_string(),
        assume_qi: Vec::new(),
    };
    let outcome = preview(&node, &spec, "steward", &crate::progress::NoProgress).unwrap();
    assert!(
        outcome.report.records_suppressed > 0,
        "the data must suppress some classes"
    );

    // The same engine, one record at a time, as before the split.
    let schema = meta.schema(node.suite).unwrap();
    let profile = schema.profile("stats").unwrap();
    let master = pdx_crypto::pseudonym::PseudonymMaster::from_bytes(
        node.suite,
        *node.keys().unwrap().pseudonym.as_bytes(),
    );
    let engine = Engine::new(&schema, profile, "A", &master);
    let mut counter = engine.counter();
    datasets::for_each_row(&node, &meta, |row| Ok(counter.add(row)?)).unwrap();
    let decision = counter.finish().unwrap();
    let mut sink = Csv(csv::Writer::from_writer(Vec::new()), &decision.recipients);
    sink.0
        .write_record(engine.output_fields().iter().map(|f| f.name.as_str()))
        .unwrap();
    let mut emitter = engine.emitter(&decision);
    datasets::for_each_row(&node, &meta, |row| {
        emitter.emit(row, &mut NoSeal, &mut sink).unwrap();
        Ok(())
    })
    .unwrap();
    let expected = sink.0.into_inner().unwrap();
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the parallel preview differs from the sequential one"
    );
    assert_eq!(
        serde_json::to_value(&outcome.report).unwrap(),
        serde_json::to_value(&decision.report).unwrap()
    );
}

#[test]
fn a_release_on_all_cores_has_the_chunks_of_one_sequential_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_with_visits(dir.path(), 60_000);
    // Small chunks: many of them, closed by records and by bytes.
    node.config.transfer.chunk_records = 700;
    node.config.transfer.chunk_bytes = 48 * 1024;
    let spec = ReleaseSpec {
        dataset: "v".into(),
        profile: "flat".into(),
        agreement: Some("A".into()),
        purpose: "test".into(),
        recipient: "110000".into(),
        operator: "steward".into(),
        incremental: false,
        after: None,
    };
    let release = produce(&node, &spec, &crate::progress::NoProgress).unwrap();

    let meta = datasets::meta(&node, "v").unwrap();
    let schema = meta.schema(node.suite).unwrap();
    let profile = schema.profile("flat").unwrap();
    let master = pdx_crypto::pseudonym::PseudonymMaster::from_bytes(
        node.suite,
        *node.keys().unwrap().pseudonym.as_bytes(),
    );
    let engine = Engine::new(&schema, profile, "A", &master);
    let mut counter = engine.counter();
    datasets::for_each_row(&node, &meta, |row| Ok(counter.add(row)?)).unwrap();
    let decision = counter.finish().unwrap();
    struct Chunks(Vec<Vec<u8>>, HashMap<Option<usize>, ChunkBuilder>);
    impl RecordSink for Chunks {
        fn record(
            &mut self,
            index: u64,
            values: &[OutValue<'_>],
        ) -> std::result::Result<(), String> {
            let part = crate::records::EncodedRecords::part_of(values);
            let b = self.1.entry(part).or_default();
            b.push(index, values);
            if b.count() >= 700 || b.len() >= 48 * 1024 {
                let b = self.1.remove(&part).unwrap_or_default();
                self.0.push(b.finish());
            }
            Ok(())
        }
    }
    let mut sink = Chunks(Vec::new(), HashMap::new());
    let mut emitter = engine.emitter(&decision);
    datasets::for_each_row(&node, &meta, |row| {
        emitter.emit(row, &mut NoSeal, &mut sink).unwrap();
        Ok(())
    })
    .unwrap();
    let mut rest: Vec<_> = sink.1.into_iter().collect();
    rest.sort_by_key(|(p, _)| *p);
    let mut expected = sink.0;
    expected.extend(rest.into_iter().map(|(_, b)| b.finish()));
    assert!(expected.len() > 20, "{} chunks: too few", expected.len());
    assert_eq!(release.chunks as usize, expected.len());
    for (i, want) in expected.iter().enumerate() {
        let got = out_chunk(&node, &release.release_id, i as u32).unwrap();
        assert!(&got == want, "chunk {i} differs from the sequential one");
    }
}
