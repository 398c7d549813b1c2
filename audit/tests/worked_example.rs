//! Keeps the worked examples of both suites in docs/audit-format.md true:
//! entry bytes, leaf hash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_audit::entry::{Entry, EntryDraft, EventKind, LogId};
use pdx_crypto::{KeyId, Suite};

fn example(suite: Suite) -> Entry {
    let mut d = EntryDraft::new(EventKind::Send, "440000", "steward-li");
    d.counterparty = Some("100000".into());
    d.record_count = Some(12345);
    Entry {
        log_id: LogId {
            dept: "440000".into(),
            genesis_key: KeyId([1; 8]),
            suite,
        },
        seq: 1,
        time_ms: 1_790_000_000_000,
        prev_hash: [3; 32],
        draft: d,
    }
}

fn hex_blocks(section: &str) -> Vec<String> {
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|b| b.chars().filter(char::is_ascii_hexdigit).collect())
        .collect()
}

#[test]
fn documented_entry_bytes_and_leaf_hashes_match_the_encoder() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/audit-format.md"
    ))
    .unwrap();
    for (suite, heading) in [
        (Suite::Intl, "## 9. Worked example (intl)"),
        (Suite::Gm, "## 10. Worked example (gm)"),
    ] {
        let e = example(suite);
        let bytes = e.encode();
        let section = doc
            .split(heading)
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap_or_else(|| panic!("{heading} missing"));
        let blocks = hex_blocks(section);
        assert_eq!(
            blocks.first().map(String::as_str),
            Some(hex::encode(&bytes).as_str()),
            "docs/audit-format.md {heading}: entry bytes are out of date"
        );
        assert!(section.contains(&format!("these {} bytes", bytes.len())));
        let leaf = pdx_audit::merkle::leaf_in(suite, &bytes);
        assert_eq!(
            blocks.get(1).map(String::as_str),
            Some(hex::encode(leaf).as_str()),
            "docs/audit-format.md {heading}: leaf hash is out of date"
        );
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
    }
}
