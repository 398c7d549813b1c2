//! The schema format: the built-in settlement schema is valid, and mistakes are
//! reported with file, line, key and a hint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_schemas::Schema;
use pdx_schemas::schema::{Grade, IdentifierClass, PiClass, SharingClass, Treatment};

fn settlement() -> Schema {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/medical_insurance/settlement.toml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match Schema::parse(&text, "settlement.toml", pdx_crypto::Suite::Intl) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_online_settlement_schema_seals_identities_in_both_profiles_and_keeps_the_batch_classes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/medical_insurance/");
    let text = std::fs::read_to_string(format!("{dir}settlement_online.toml")).unwrap_or_default();
    let online = Schema::parse(&text, "settlement_online.toml", pdx_crypto::Suite::Intl)
        .unwrap_or_else(|e| panic!("{e}"));
    let batch = settlement();
    assert_eq!(online.fields.len(), 17);
    for f in &online.fields {
        // Every field the batch schema also has is classified the same way.
        if let Some(i) = batch.field_index(&f.name) {
            let b = &batch.fields[i];
            assert_eq!((f.identifier, f.pi), (b.identifier, b.pi), "{}", f.name);
        }
    }
    for profile in ["daily", "clearing"] {
        let p = &online.profiles[profile];
        assert_eq!(
            p.k, 1,
            "{profile} has no privacy model: it is released incrementally"
        );
        for name in ["psn_no", "certno", "psn_name", "diag_code"] {
            let i = online.field_index(name).unwrap_or(usize::MAX);
            assert!(
                matches!(p.treatments[i], Treatment::EncryptFor(_)),
                "{profile}.{name}"
            );
        }
    }
}

#[test]
fn settlement_schema_is_valid_and_classifies_identity_fields() {
    let s = settlement();
    assert_eq!(s.dataset.grade, Grade::Important);
    assert_eq!(s.dataset.sharing, SharingClass::Conditional);
    assert_eq!(s.fields.len(), 23);
    let certno = &s.fields[s.field_index("certno").unwrap_or(usize::MAX)];
    assert_eq!(certno.identifier, IdentifierClass::DirectIdentifier);
    assert_eq!(certno.pi, PiClass::SensitivePersonal);
    let clearing = &s.profiles["clearing"];
    let psn_no = s.field_index("psn_no").unwrap_or(usize::MAX);
    assert!(matches!(
        clearing.treatments[psn_no],
        Treatment::EncryptFor(_)
    ));
    let analytics = &s.profiles["analytics"];
    assert_eq!(
        (analytics.k, analytics.l.as_ref().map(|l| l.min)),
        (10, Some(3))
    );
}

fn errors(toml: &str) -> Vec<String> {
    match Schema::parse(toml, "t.toml", pdx_crypto::Suite::Intl) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

const HEAD: &str = r#"
[dataset]
id = "t"
title = "t"
grade = "general"
sharing = "unconditional"
personal_information = true
"#;

#[test]
fn unknown_type_is_reported_with_line_and_key() {
    let toml = format!(
        "{HEAD}\n[[field]]\nname = \"a\"\ntype = \"dat\"\nidentifier = \"other\"\npi = \"none\"\n"
    );
    let errs = errors(&toml);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("t.toml:11: field.a.type: unknown type \"dat\""),
        "{}",
        errs[0]
    );
}

#[test]
fn syntax_and_enum_errors_carry_a_line() {
    let errs = errors(&format!(
        "{HEAD}\n[[field]]\nname = \"a\"\ntype = \"date\"\nidentifier = \"secret\"\npi = \"none\"\n"
    ));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains("t.toml:12") && errs[0].contains("secret"),
        "{}",
        errs[0]
    );
    let errs = errors("[dataset\nid = 1");
    assert!(errs[0].starts_with("t.toml:1:"), "{}", errs[0]);
}

#[test]
fn profiles_must_treat_every_field_and_only_known_ones() {
    let fields = "\n[[field]]\nname = \"a\"\ntype = \"date\"\nidentifier = \"quasi-identifier\"\npi = \"personal\"\n\n[[field]]\nname = \"b\"\ntype = \"integer\"\nidentifier = \"other\"\npi = \"none\"\n";
    let toml =
        format!("{HEAD}{fields}\n[profile.p]\n[profile.p.fields]\na = \"keep\"\nc = \"keep\"\n");
    let errs = errors(&toml).join("\n");
    assert!(errs.contains("profile.p.fields.c: no such field"), "{errs}");
    assert!(errs.contains("no treatment for field b"), "{errs}");
}

#[test]
fn generalisations_must_fit_the_field_type() {
    let toml = format!(
        "{HEAD}\n[[field]]\nname = \"a\"\ntype = \"integer\"\nidentifier = \"quasi-identifier\"\npi = \"personal\"\n\n[profile.p]\n[profile.p.fields]\na = {{ generalize = \"month\" }}\n"
    );
    let errs = errors(&toml).join("\n");
    assert!(
        errs.contains("month applies to date/datetime fields, not integer"),
        "{errs}"
    );
}

#[test]
fn clear_identifiers_in_external_profiles_are_reported_by_schema_check() {
    let toml = format!(
        "{HEAD}\n[[field]]\nname = \"certno\"\ntype = \"resident-id\"\nidentifier = \"direct-identifier\"\npi = \"sensitive-personal\"\n\n[profile.p]\n[profile.p.fields]\ncertno = \"keep\"\n"
    );
    let errs = errors(&toml).join("\n");
    assert!(errs.contains("rule no-clear-direct-identifier"), "{errs}");
    // The same profile marked internal is fine.
    let internal = toml.replace("[profile.p]\n", "[profile.p]\nscope = \"internal\"\n");
    assert_eq!(errors(&internal), Vec::<String>::new());
}
