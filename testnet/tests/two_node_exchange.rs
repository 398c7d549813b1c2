//! The walking skeleton, end to end with real processes: A imports and grants,
//! B fetches, the rows arrive, both audit logs record it and verify, a third
//! node without a grant is refused, and the four TLS refusal cases hold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[test]
fn two_nodes_exchange_a_dataset_and_the_logs_agree() {
    two_nodes_exchange_a_dataset_and_the_logs_agree_in(pdx_crypto::Suite::Intl);
}

#[test]
fn two_nodes_exchange_a_dataset_and_the_logs_agree_under_gm() {
    two_nodes_exchange_a_dataset_and_the_logs_agree_in(pdx_crypto::Suite::Gm);
}

fn two_nodes_exchange_a_dataset_and_the_logs_agree_in(suite: pdx_crypto::Suite) {
    let tmp = tempfile::tempdir().unwrap();
    let net = network_in(
        suite,
        tmp.path(),
        &[
            ("440000", "Guangdong"),
            ("100000", "National"),
            ("120000", "Tianjin"),
        ],
    );
    let (a, b, c) = (
        net.home("440000").unwrap(),
        net.home("100000").unwrap(),
        net.home("120000").unwrap(),
    );
    let schema = write(tmp.path(), "people.toml", PEOPLE_SCHEMA);
    let csv = write(tmp.path(), "people.csv", PEOPLE_CSV);

    let imported = net
        .pdx_json(&[
            "import",
            "--home",
            &a,
            "--schema",
            &schema,
            "--csv",
            &csv,
            "--dataset",
            "people",
        ])
        .unwrap();
    assert_eq!(imported["rows"], 3);
    net.pdx_ok(&[
        "grant",
        "--home",
        &a,
        "--dataset",
        "people",
        "--to",
        "100000",
        "--profile",
        "share",
        "--purpose",
        "testing",
        "--agreement",
        "DSA-1",
    ])
    .unwrap();
    let catalog = net
        .pdx_json(&["catalog", "--home", &b, "--peer", "440000"])
        .unwrap();
    assert_eq!(catalog[0]["dataset"], "people");
    assert!(
        catalog.as_array().unwrap().len() == 1,
        "only granted datasets are listed"
    );

    let fetched = net
        .pdx_json(&[
            "fetch",
            "--home",
            &b,
            "--peer",
            "440000",
            "--dataset",
            "people",
            "--profile",
            "share",
        ])
        .unwrap();
    assert_eq!(fetched["records"], 3);
    let release = fetched["release"].as_str().unwrap().to_string();

    // The received rows equal the source rows for the kept fields; the sealed
    // certno opens for B (its recipient); the pseudonym is stable per person.
    let out = tmp.path().join("received.csv");
    let exported = net
        .pdx_json(&[
            "export",
            "--home",
            &b,
            "--release",
            &release,
            "--out",
            &s(&out),
        ])
        .unwrap();
    assert_eq!(exported["decrypted_fields"][0], "certno");
    let text = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], vec!["pid", "certno", "city", "amount"]);
    let source: Vec<Vec<&str>> = PEOPLE_CSV
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    for (got, want) in rows[1..].iter().zip(&source) {
        assert_eq!(got[1], want[2], "certno decrypted");
        assert_eq!(got[2], want[3], "city kept");
        assert_eq!(got[3], want[4], "amount kept");
        assert_eq!(got[0].len(), 32, "pid pseudonymised");
        assert_ne!(got[0], want[0]);
    }

    // Re-fetching the same release is idempotent.
    let again = net
        .pdx_json(&[
            "fetch",
            "--home",
            &b,
            "--peer",
            "440000",
            "--dataset",
            "people",
            "--profile",
            "share",
        ])
        .unwrap();
    assert_eq!(again["already_complete"], true);
    assert_eq!(again["release"].as_str(), Some(release.as_str()));

    // Each log has its side of the exchange.
    for kind in ["import", "grant", "release", "send"] {
        assert!(
            !entries(&net, "440000", kind).is_empty(),
            "A lacks a {kind} entry"
        );
    }
    for kind in ["receive", "decrypt", "export", "peer-checkpoint-witnessed"] {
        assert!(
            !entries(&net, "100000", kind).is_empty(),
            "B lacks a {kind} entry"
        );
    }
    let send = &entries(&net, "440000", "send")[0];
    let receive = &entries(&net, "100000", "receive")[0];
    assert_eq!(send["release"], receive["release"]);
    assert_eq!(send["digest"], receive["digest"]);
    assert_eq!(send["record_count"], receive["record_count"]);

    // A third node without a grant is refused, and both sides audit it.
    let denied = net
        .pdx(&[
            "fetch",
            "--home",
            &c,
            "--peer",
            "440000",
            "--dataset",
            "people",
            "--profile",
            "share",
            "--purpose",
            "testing",
            "--agreement",
            "DSA-1",
        ])
        .unwrap();
    assert_eq!(
        denied.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(String::from_utf8_lossy(&denied.stderr).contains("no grant lets 120000"));
    assert!(
        entries(&net, "440000", "refused-request")
            .iter()
            .any(|e| e["counterparty"] == "120000")
    );
    assert!(
        !entries(&net, "120000", "refused-request").is_empty(),
        "the refused side audits too"
    );

    // Both logs verify offline, with each other as witnesses, and reconcile.
    let (ba, bb) = (tmp.path().join("a.bundle"), tmp.path().join("b.bundle"));
    net.pdx_ok(&["audit", "export", "--home", &a, "--out", &s(&ba)])
        .unwrap();
    net.pdx_ok(&["audit", "export", "--home", &b, "--out", &s(&bb)])
        .unwrap();
    let ca = s(&net.ca_dir().join("ca.crt"));
    for (bundle, witness) in [(&ba, &bb), (&bb, &ba)] {
        let v = net
            .pdx(&[
                "audit",
                "verify",
                &s(bundle),
                "--witness",
                &s(witness),
                "--ca",
                &ca,
                "--json",
            ])
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
        assert_eq!(v.status.code(), Some(0), "{report:#}");
        assert_eq!(report["verdict"], "valid");
        assert!(
            report["external_checkpoints_checked"].as_u64().unwrap() > 0,
            "the witness holds checkpoints of this log"
        );
    }
    let rec = net
        .pdx(&[
            "audit",
            "reconcile",
            &s(&ba),
            &s(&bb),
            "--ca",
            &ca,
            "--json",
        ])
        .unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&rec.stdout).unwrap();
    assert_eq!(rec["matched"], 1);
    assert_eq!(rec["mismatches"].as_array().map(Vec::len), Some(0));
}

// ---- TLS refusal cases: a raw QUIC client whose FIRST REQUEST must fail ----

/// Connects to `dept` with the given client identity and tries one request.
fn first_request(
    net: &pdx_testnet::Testnet,
    dept: &str,
    identity: Option<(
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<(), String> {
    let addr: std::net::SocketAddr = net.node(dept).unwrap().addr.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ep = raw_client(net, identity);
        let server_name = format!("{dept}.itest.pdx");
        let result = async {
            // Under TLS 1.3 the handshake may complete on the client before the
            // server rejects the certificate: the request is what must fail.
            let conn = ep
                .connect(addr, &server_name)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(&[0, 0, 0, 3, 0x82, 6, 0xa0])
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            match tokio::time::timeout(std::time::Duration::from_secs(10), recv.read(&mut buf))
                .await
            {
                Ok(Ok(Some(_))) => Ok(()),
                Ok(Ok(None)) => Err("stream closed".to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timeout".to_string()),
            }
        }
        .await;
        ep.close(0u32.into(), b"");
        result
    })
}

#[test]
fn refused_clients_fail_on_their_first_request_and_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = network(tmp.path(), &[("440000", "Guangdong"), ("130000", "Hebei")]);
    let a = net.home("440000").unwrap();
    let refused = |net: &pdx_testnet::Testnet| entries(net, "440000", "refused-request");
    let before = refused(&net).len();

    // A well-formed identity from our CA is accepted (control).
    let good = rcgen_identity(&net.ca_dir(), Some("urn:pdx:dept:130000"));
    assert_eq!(
        first_request(&net, "440000", Some(good)),
        Ok(()),
        "a valid certificate must be served"
    );

    // 1. No client certificate.
    assert!(first_request(&net, "440000", None).is_err());
    // 2. A certificate from another CA.
    let other = tmp.path().join("other-ca");
    net.pdx_ok(&["ca", "init", "--dir", &s(&other), "--network", "itest"])
        .unwrap();
    let foreign = rcgen_identity(&other, Some("urn:pdx:dept:130000"));
    assert!(first_request(&net, "440000", Some(foreign)).is_err());
    // 3. A certificate without the department SAN.
    let anonymous = rcgen_identity(&net.ca_dir(), None);
    assert!(first_request(&net, "440000", Some(anonymous)).is_err());
    // 4. A revoked certificate: revoke node 130000 and load the CRL into the running node.
    let hebei = net.home("130000").unwrap();
    assert!(
        net.pdx(&["catalog", "--home", &hebei, "--peer", "440000"])
            .unwrap()
            .status
            .success(),
        "before revocation"
    );
    net.revoke("130000").unwrap();
    let after_revoke = net
        .pdx(&["catalog", "--home", &hebei, "--peer", "440000"])
        .unwrap();
    assert!(
        !after_revoke.status.success(),
        "a revoked node must be refused"
    );
    assert_eq!(after_revoke.status.code(), Some(6));

    let log = refused(&net);
    assert!(log.len() >= before + 4, "each refusal is audited: {log:#?}");
    let details: Vec<String> = log
        .iter()
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect();
    let has = |needle: &str| details.iter().any(|d| d.contains(needle));
    assert!(
        details
            .iter()
            .any(|d| d.contains("TLS handshake") && d.contains("Revoked")),
        "a revoked certificate must fail the TLS handshake itself (no session resumption): {details:#?}"
    );
    assert!(
        has("department"),
        "missing-SAN reason missing: {details:#?}"
    );
    assert!(
        has("BadSignature") || has("UnknownIssuer"),
        "other-CA reason missing: {details:#?}"
    );
    assert!(
        has("no certificates")
            || has("NoCertificates")
            || has("certificate required")
            || has("CertificateRequired"),
        "no-cert reason missing: {details:#?}"
    );
    net.stop_all(std::time::Duration::from_secs(5)).unwrap();
    let _ = a;
}
