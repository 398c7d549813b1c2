//! CSV import: UTF-8 and GB18030, row-level problems with line, column, field,
//! value and reason, reject-all versus skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_schemas::Schema;
use pdx_schemas::import::{Encoding, ImportError, OnError, read_csv};

const SCHEMA: &str = r#"
[dataset]
id = "people"
title = "t"
grade = "general"
sharing = "unconditional"
personal_information = true

[[field]]
name = "name"
type = "string"
max_length = 4
identifier = "direct-identifier"
pi = "personal"

[[field]]
name = "certno"
type = "resident-id"
identifier = "direct-identifier"
pi = "sensitive-personal"

[[field]]
name = "amount"
type = "decimal"
precision = 8
scale = 2
nullable = true
identifier = "other"
pi = "personal"
"#;

fn schema() -> Schema {
    Schema::parse(SCHEMA, "people.toml", pdx_crypto::Suite::Intl).unwrap_or_else(|e| panic!("{e}"))
}

type Rows = Vec<Vec<Option<String>>>;

fn import(
    bytes: &[u8],
    encoding: Encoding,
    on_error: OnError,
) -> (Result<u64, ImportError>, Rows, Vec<String>) {
    let s = schema();
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    let r = read_csv(
        &s,
        bytes,
        "in.csv",
        pdx_schemas::import::ImportContext::default(),
        encoding,
        on_error,
        |row| {
            rows.push(row.iter().map(|v| v.map(str::to_string)).collect());
            Ok(())
        },
        |p, _| {
            rejected.push(p.to_string());
            Ok(())
        },
        |_| {},
    )
    .map(|s| s.rows_imported);
    (r, rows, rejected)
}

#[test]
fn utf8_with_columns_in_any_order_and_nulls() {
    let csv = "certno,name,amount\n11010519491231002X,张三,12.50\n11010519491231002X,李四,\n";
    let (r, rows, _) = import(csv.as_bytes(), Encoding::Utf8, OnError::Reject);
    assert_eq!(r.ok(), Some(2));
    assert_eq!(
        rows[0],
        vec![
            Some("张三".into()),
            Some("11010519491231002X".into()),
            Some("12.50".into())
        ]
    );
    assert_eq!(rows[1][2], None);
}

#[test]
fn gb18030_input_is_decoded() {
    let csv = "name,certno,amount\n王五,11010519491231002X,1.00\n";
    let (encoded, _, _) = encoding_rs::GB18030.encode(csv);
    let (r, rows, _) = import(&encoded, Encoding::Gb18030, OnError::Reject);
    assert_eq!(r.ok(), Some(1));
    assert_eq!(rows[0][0].as_deref(), Some("王五"));
    // The same bytes read as UTF-8 are refused with a hint.
    let (r, _, _) = import(&encoded, Encoding::Utf8, OnError::Reject);
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("line 2, column 1 (name)") && msg.contains("use --encoding gb18030"),
        "{msg}"
    );
}

#[test]
fn bad_rows_reject_everything_and_list_line_column_field_value_reason() {
    let csv = "name,certno,amount\n张三,11010519491231002X,1.00\n李四,110105194912310021,2.00\n王五,11010519491231002X,abc\n";
    let (r, _, _) = import(csv.as_bytes(), Encoding::Utf8, OnError::Reject);
    match r {
        Err(ImportError::Rejected {
            bad_rows, problems, ..
        }) => {
            assert_eq!(bad_rows, 2);
            assert_eq!(
                (
                    problems[0].line,
                    problems[0].column,
                    problems[0].field.as_str()
                ),
                (3, 2, "certno")
            );
            assert!(
                problems[0].reason.contains("check digit"),
                "{}",
                problems[0].reason
            );
            assert_eq!(
                (
                    problems[1].line,
                    problems[1].field.as_str(),
                    problems[1].value.as_str()
                ),
                // amount is personal information: masked in every message.
                (4, "amount", "a**")
            );
            let all: String = problems.iter().map(|p| format!("{p}\n")).collect();
            assert!(!all.contains("110105194912310021"), "{all}");
        }
        other => panic!("expected rejection, got {other:?}"),
    }
}

#[test]
fn skip_mode_imports_good_rows_and_hands_over_bad_ones() {
    let csv =
        "name,certno,amount\n张三,11010519491231002X,1.00\n太长的名字啊,11010519491231002X,1.00\n";
    let (r, rows, rejected) = import(csv.as_bytes(), Encoding::Utf8, OnError::Skip);
    assert_eq!(r.ok(), Some(1));
    assert_eq!(rows.len(), 1);
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].contains("line 3, column 1 (name)") && rejected[0].contains("longer than 4"),
        "{}",
        rejected[0]
    );
}

#[test]
fn malformed_csv_rows_and_headers_are_reported() {
    let (r, _, _) = import(
        b"name,certno,amount\n\"unterminated,1\nx\n",
        Encoding::Utf8,
        OnError::Reject,
    );
    assert!(r.is_err());
    let (r, _, _) = import(
        "name,certno,amount\n张三,11010519491231002X\n".as_bytes(),
        Encoding::Utf8,
        OnError::Reject,
    );
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("line 2: row has 2 fields, the header has 3"),
        "{msg}"
    );
    let (r, _, _) = import(b"name,cert,amount\n", Encoding::Utf8, OnError::Reject);
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("columns not in schema people: \"cert\"")
            && msg.contains("missing from the file: certno"),
        "{msg}"
    );
    let (r, _, _) = import(
        "name,certno,amount\n,11010519491231002X,1\n".as_bytes(),
        Encoding::Utf8,
        OnError::Reject,
    );
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("not nullable"), "{msg}");
}

/// The line of the first problem of `csv` (as bytes) under `encoding`.
fn first_problem_line(bytes: &[u8], encoding: Encoding) -> u64 {
    match import(bytes, encoding, OnError::Reject).0 {
        Err(ImportError::Rejected { problems, .. }) => problems[0].line,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn reported_lines_are_physical_lines_for_lf_crlf_and_gb18030() {
    // Header = line 1; the bad amount is on line 4; line 3 holds a quoted
    // field with an embedded line break, so the bad row starts on line 5.
    let lf = "name,certno,amount\n张三,11010519491231002X,1.00\n李四,11010519491231002X,2.00\n王五,11010519491231002X,abc\n";
    let crlf = lf.replace('\n', "\r\n");
    assert_eq!(first_problem_line(lf.as_bytes(), Encoding::Utf8), 4);
    assert_eq!(first_problem_line(crlf.as_bytes(), Encoding::Utf8), 4);
    let (gb, _, _) = encoding_rs::GB18030.encode(&crlf);
    assert_eq!(first_problem_line(&gb, Encoding::Gb18030), 4);
    let (gb, _, _) = encoding_rs::GB18030.encode(lf);
    assert_eq!(first_problem_line(&gb, Encoding::Gb18030), 4);
    let multi = "name,certno,amount\n张三,11010519491231002X,1.00\n\"李\n四\",11010519491231002X,2.00\n王五,11010519491231002X,abc\n";
    assert_eq!(first_problem_line(multi.as_bytes(), Encoding::Utf8), 5);
    assert_eq!(
        first_problem_line(multi.replace('\n', "\r\n").as_bytes(), Encoding::Utf8),
        5
    );
}

#[test]
fn personal_values_are_masked_in_problems_and_line_column_field_rule_stay_exact() {
    use pdx_schemas::import::mask;
    assert_eq!(mask("450102199001017800"), "4501**********7800");
    assert_eq!(mask("王五"), "王*");
    assert_eq!(mask("张三丰ab"), "张****");
    assert_eq!(mask("王五王五王五王五王五"), "王*********");
    assert_eq!(mask(""), "");
    // A bad check digit on a resident id and a too-long name.
    let csv =
        "name,certno,amount\n太长的名字啊,11010519491231002X,1.00\n张三,110105194912310021,1.00\n";
    let (r, _, rejected) = import(csv.as_bytes(), Encoding::Utf8, OnError::Skip);
    assert_eq!(r.ok(), Some(0));
    let text = rejected.join("\n");
    assert!(
        !text.contains("太长的名字啊") && !text.contains("110105194912310021"),
        "{text}"
    );
    assert!(
        text.contains("line 2, column 1 (name)") && text.contains("太*****"),
        "{text}"
    );
    assert!(
        text.contains("line 3, column 2 (certno)") && text.contains("1101**********0021"),
        "{text}"
    );
}

#[test]
fn the_encoding_a_file_looks_like_is_detected() {
    use pdx_schemas::import::sniff_encoding;
    let text = "name,certno,amount\n王五,11010519491231002X,1.00\n";
    let (gb, _, _) = encoding_rs::GB18030.encode(text);
    assert_eq!(sniff_encoding(text.as_bytes()), Some(Encoding::Utf8));
    assert_eq!(sniff_encoding(&gb), Some(Encoding::Gb18030));
    assert_eq!(sniff_encoding(b"\xef\xbb\xbfname\n"), Some(Encoding::Utf8));
    // Plain ASCII is both.
    assert_eq!(sniff_encoding(b"name,certno\n"), None);
    // A sample cut inside a character is still UTF-8.
    let cut = &text.as_bytes()[..20];
    assert_eq!(sniff_encoding(cut), Some(Encoding::Utf8));
}

const REGIONS: &str = r#"
[dataset]
id = "visits"
title = "t"
grade = "general"
sharing = "unconditional"
personal_information = true
treatment_region = "treated"
cross_region = ["insured", "treated"]

[[field]]
name = "insured"
type = "string"
identifier = "quasi-identifier"
pi = "personal"

[[field]]
name = "treated"
type = "string"
identifier = "other"
pi = "none"
"#;

#[test]
fn records_treated_elsewhere_are_refused_and_same_province_records_are_excluded() {
    let schema = Schema::parse(REGIONS, "visits.toml", pdx_crypto::Suite::Intl)
        .unwrap_or_else(|e| panic!("{e}"));
    let csv = "insured,treated\n110101,440106\n440305,440106\n310115,330106\n";
    let run = |dept: Option<&str>, on_error| {
        let mut kept = Vec::new();
        let mut rejected = Vec::new();
        let r = read_csv(
            &schema,
            csv.as_bytes(),
            "visits.csv",
            pdx_schemas::import::ImportContext { dept },
            Encoding::Utf8,
            on_error,
            |row| {
                kept.push(row[0].map(str::to_string));
                Ok(())
            },
            |p, _| {
                rejected.push(p.to_string());
                Ok(())
            },
            |_| {},
        );
        (r, kept, rejected)
    };
    // Guangdong's extract: the Beijing patient treated in Guangdong is kept,
    // the Guangdong patient is not cross-province (excluded, counted), the
    // record treated in Zhejiang is not Guangdong's to import (refused).
    let (r, kept, rejected) = run(Some("440000"), OnError::Skip);
    let summary = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            summary.rows_imported,
            summary.rows_excluded,
            summary.rows_rejected
        ),
        (1, 1, 1)
    );
    assert_eq!(kept, vec![Some("110101".to_string())]);
    assert!(
        rejected[0].contains("line 4") && rejected[0].contains("treated in province 330000"),
        "{rejected:?}"
    );
    // Fail closed: reject mode refuses the whole file; a department that is
    // not a region cannot import such a dataset at all.
    let (r, _, _) = run(Some("440000"), OnError::Reject);
    assert!(matches!(r, Err(ImportError::Rejected { bad_rows: 1, .. })));
    let (r, _, _) = run(Some("GOV-A"), OnError::Reject);
    assert!(matches!(r, Err(ImportError::Rejected { bad_rows: 3, .. })));
}
