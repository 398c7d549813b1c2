//! Keeps the worked example in docs/audit-format.md true.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_audit::entry::{Entry, EntryDraft, EventKind, LogId};
use pdx_crypto::KeyId;

#[test]
fn documented_entry_bytes_match_the_encoder() {
    let mut d = EntryDraft::new(EventKind::Send, "440000", "steward-li");
    d.counterparty = Some("100000".into());
    d.record_count = Some(12345);
    let e = Entry {
        log_id: LogId {
            dept: "440000".into(),
            genesis_key: KeyId([1; 8]),
        },
        seq: 1,
        time_ms: 1_790_000_000_000,
        prev_hash: [3; 32],
        draft: d,
    };
    let bytes = e.encode();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/audit-format.md"
    ))
    .unwrap();
    let section = doc
        .split("## 9. Worked example")
        .nth(1)
        .expect("worked example section");
    let block = section.split("```").nth(1).expect("hex block");
    let documented: String = block.chars().filter(char::is_ascii_hexdigit).collect();
    assert_eq!(
        documented,
        hex::encode(&bytes),
        "docs/audit-format.md §9 is out of date"
    );
    assert!(section.contains(&format!("these {} bytes", bytes.len())));
    assert_eq!(Entry::decode(&bytes).unwrap(), e);
}
