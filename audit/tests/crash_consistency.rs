//! A crash (SIGKILL) at any moment leaves a valid prefix of the log that holds
//! every entry whose append was acknowledged. The test re-runs its own binary as
//! a child that appends from several threads and prints each acknowledged
//! sequence number, kills it at varying moments, and checks the reopened store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use pdx_audit::verify::Verdict;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "PDX_AUDIT_CRASH_CHILD";

/// Child mode: append forever, printing acknowledged sequence numbers. A
/// helper process of the crash test below (run with `--ignored`), not a test.
#[test]
#[ignore = "helper process of killed_writer_leaves_a_valid_prefix_with_every_acknowledged_entry; run by it"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let t = std::sync::Arc::new(reopen(std::path::Path::new(&dir)));
    let mut threads = Vec::new();
    for k in 0..3 {
        let t = t.clone();
        threads.push(std::thread::spawn(move || {
            let out = std::io::stdout();
            loop {
                let mut d =
                    pdx_audit::EntryDraft::new(pdx_audit::EventKind::Send, "440000", "crash");
                d.detail = Some(format!("thread {k}"));
                let a = t.log.append(d).unwrap();
                use std::io::Write;
                let mut lock = out.lock();
                writeln!(lock, "acked {}", a.seq).unwrap();
                lock.flush().unwrap();
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Opens (or creates) the log with fixed keys stored beside the database.
fn reopen(dir: &std::path::Path) -> TestLog {
    let keyfile = dir.join("keys");
    let (identity, audit) = if keyfile.exists() {
        let b = std::fs::read(&keyfile).unwrap();
        let n = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        (
            pdx_crypto::SigningKey::from_pkcs8(&b[4..4 + n]).unwrap(),
            pdx_crypto::SigningKey::from_pkcs8(&b[4 + n..]).unwrap(),
        )
    } else {
        let (i, a) = (
            pdx_crypto::SigningKey::generate(pdx_crypto::Suite::Intl).unwrap(),
            pdx_crypto::SigningKey::generate(pdx_crypto::Suite::Intl).unwrap(),
        );
        let mut b = (i.pkcs8_der().len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(i.pkcs8_der());
        b.extend_from_slice(a.pkcs8_der());
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&keyfile, b).unwrap();
        (i, a)
    };
    let log_id = pdx_audit::LogId {
        dept: "440000".into(),
        genesis_key: audit.key_id(),
        suite: audit.suite(),
    };
    let e = endorse(&identity, "440000", &log_id, &audit, 0);
    let log = pdx_audit::AuditLog::open(
        open_db(&dir.join("db")),
        log_id,
        pdx_crypto::SigningKey::from_pkcs8(audit.pkcs8_der()).unwrap(),
        || Ok(e),
        pdx_audit::AuditConfig {
            checkpoint_every: 64,
            checkpoint_interval_ms: 1_000_000,
        },
    )
    .unwrap();
    TestLog {
        log,
        identity,
        audit_key: audit,
        dept: "440000".into(),
    }
}

#[test]
fn killed_writer_leaves_a_valid_prefix_with_every_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut max_acked_overall: Option<u64> = None;
    for (round, run_ms) in [150u64, 400, 90, 700, 250].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line
                    .strip_prefix("acked ")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    let _ = tx.send(n);
                }
            }
        });
        // Wait for the first acknowledgement, then let it run and kill it mid-flight.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child never acknowledged an append");
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(run_ms) {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = std::iter::once(first).chain(rx.try_iter()).max().unwrap();
        max_acked_overall = Some(max_acked_overall.map_or(acked, |m: u64| m.max(acked)));

        let t = reopen(dir.path());
        let size = t.log.size();
        assert!(
            size > acked,
            "round {round}: acknowledged entry {acked} missing after the crash (log size {size})"
        );
        // Every entry is present and chained; the tree and signed checkpoints agree.
        t.log.for_each_entry(0, size, |_, _| Ok(())).unwrap();
        let bundle = dir.path().join(format!("round{round}.bundle"));
        pdx_audit::bundle::export(&t.log, Vec::new(), &bundle).unwrap();
        let r = verify_path(&bundle, &[]);
        assert_eq!(
            r.verdict,
            Verdict::Valid,
            "round {round}: {:#?}",
            r.findings
        );
        assert!(r.entries > acked);
    }
    assert!(
        max_acked_overall.unwrap() > 100,
        "the child appended too little to prove anything"
    );
}
