//! Shared helpers for the multi-process integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_testnet::Testnet;
use serde_json::Value;
use std::path::Path;

pub const PEOPLE_SCHEMA: &str = r#"
[dataset]
id = "people"
title = "residents (test)"
grade = "general"
sharing = "conditional"
personal_information = true

[[field]]
name = "pid"
type = "string"
identifier = "direct-identifier"
pi = "personal"

[[field]]
name = "name"
type = "string"
identifier = "direct-identifier"
pi = "personal"

[[field]]
name = "certno"
type = "resident-id"
identifier = "direct-identifier"
pi = "sensitive-personal"

[[field]]
name = "city"
type = "string"
identifier = "quasi-identifier"
pi = "personal"

[[field]]
name = "amount"
type = "decimal"
precision = 10
scale = 2
identifier = "other"
pi = "personal"

[profile.share]
[profile.share.fields]
pid = "pseudonymize"
name = "drop"
certno = { encrypt_for = "100000" }
city = "keep"
amount = "keep"
"#;

pub const PEOPLE_CSV: &str = "pid,name,certno,city,amount\n\
P001,张三,11010519491231002X,广州,12.50\n\
P002,李四,440524188001010014,深圳,7.00\n\
P003,王五,11010519491231002X,广州,100.99\n";

/// An intl network with the given nodes, peers configured, all started.
pub fn network(dir: &Path, nodes: &[(&str, &str)]) -> Testnet {
    network_in(pdx_crypto::Suite::Intl, dir, nodes)
}

/// [`network`] of `suite`.
pub fn network_in(suite: pdx_crypto::Suite, dir: &Path, nodes: &[(&str, &str)]) -> Testnet {
    let mut net = Testnet::create_in(suite, dir, "itest").unwrap();
    for (dept, name) in nodes {
        net.add_node(dept, name).unwrap();
    }
    net.connect_all().unwrap();
    net.start_all().unwrap();
    net
}

/// Audit entries of `dept` with the given kind.
pub fn entries(net: &Testnet, dept: &str, kind: &str) -> Vec<Value> {
    let home = net.home(dept).unwrap();
    net.pdx_json(&["audit", "show", "--home", &home, "--kind", kind])
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Writes a file and returns its path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A client identity issued by the CA in `ca_dir` (optionally without the department SAN).
pub fn rcgen_identity(
    ca_dir: &std::path::Path,
    dept_san: Option<&str>,
) -> (
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap(),
        ca_key,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["130000.itest.pdx".to_string()]).unwrap();
    if let Some(uri) = dept_san {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(uri.to_string().try_into().unwrap()));
    }
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        cert.der().clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )),
    )
}

/// A QUIC client endpoint trusting the test network's CA, with `identity`.
pub fn raw_client(
    net: &Testnet,
    identity: Option<(
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> quinn::Endpoint {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(net.ca_dir().join("ca.crt")).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut tls = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
    };
    tls.alpn_protocols = vec![b"pdx/1".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(quic)));
    ep
}

/// A certified identity for department `dept` issued by the CA in `ca_dir`,
/// binding the audit log of `audit` (or none): certificate, TLS key, and the
/// identity key as a pdx signing key.
pub fn certified(
    ca_dir: &std::path::Path,
    dept: &str,
    audit: Option<&pdx_crypto::SigningKey>,
) -> (
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
    pdx_crypto::SigningKey,
) {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap(),
        ca_key,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![format!("{dept}.itest.pdx")]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        format!("urn:pdx:dept:{dept}").try_into().unwrap(),
    ));
    if let Some(a) = audit {
        params.subject_alt_names.push(rcgen::SanType::URI(
            format!("urn:pdx:log:{dept}:{}", a.key_id().to_hex())
                .try_into()
                .unwrap(),
        ));
    }
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let identity = pdx_crypto::SigningKey::from_pkcs8(&key.serialize_der()).unwrap();
    (
        cert.der().clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )),
        identity,
    )
}

/// Writes one message, or raw bytes, and reads the answer (one message, or
/// why none came) on a stream.
pub async fn exchange(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    bytes: &[u8],
) -> Result<pdx_node::proto::msg::Message, String> {
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    read_message(recv).await
}

/// Reads one message from a stream (10 s at most).
pub async fn read_message(
    recv: &mut quinn::RecvStream,
) -> Result<pdx_node::proto::msg::Message, String> {
    let mut dec = pdx_node::proto::frame::FrameDecoder::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(f) = dec.next_frame().map_err(|e| e.to_string())? {
            return pdx_node::proto::msg::Message::decode(f.msg_type, &f.payload)
                .map_err(|e| e.to_string());
        }
        match tokio::time::timeout_at(deadline, recv.read_chunk(65536, true)).await {
            Err(_) => return Err("no answer".into()),
            Ok(Ok(Some(c))) => dec.push(&c.bytes),
            Ok(Ok(None)) => return Err("stream ended".into()),
            Ok(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// A hand-made peer: a certified department speaking the protocol from
/// docs/protocol.md directly, presenting the audit log of `audit` (a fresh
/// one-entry log), and cosigning nothing.
pub struct RawPeer {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
}

/// The Hello of a fresh log of `dept` under `audit`, endorsed by `identity`.
pub fn hello(
    dept: &str,
    identity: &pdx_crypto::SigningKey,
    cert: &rustls::pki_types::CertificateDer<'static>,
    audit: &pdx_crypto::SigningKey,
    checkpoint_key: &pdx_crypto::SigningKey,
) -> pdx_node::proto::msg::Message {
    use pdx_audit::checkpoint::{Checkpoint, KeyEndorsement, SignedCheckpoint, SignedEndorsement};
    let log_id = format!("{dept}:{}", audit.key_id().to_hex());
    let endorsement = SignedEndorsement::sign(
        &KeyEndorsement {
            log_id: log_id.clone(),
            audit_key: audit.verifying_key(),
            from_seq: 0,
            time_ms: pdx_audit::store::now_ms(),
        },
        identity,
        cert.to_vec(),
    )
    .unwrap();
    let checkpoint = SignedCheckpoint::sign(
        &Checkpoint {
            origin: log_id,
            size: 1,
            root: [9; 32],
            time_ms: pdx_audit::store::now_ms(),
        },
        checkpoint_key,
    )
    .unwrap();
    pdx_node::proto::msg::Message::Hello(Box::new(pdx_node::proto::msg::Hello {
        versions: vec![pdx_node::proto::msg::PROTOCOL_VERSION],
        dept: dept.into(),
        software: "raw-peer".into(),
        checkpoint,
        endorsement,
        key_documents: Vec::new(),
        time_ms: None,
        recovering: false,
        discontinuity: None,
    }))
}

impl RawPeer {
    /// Connects to `to` and sends `hello` on stream 0; on a HelloReply
    /// finishes the handshake. Returns the peer, or the server's answer to the
    /// hello when it was not a HelloReply.
    pub async fn connect(
        net: &Testnet,
        to: &str,
        identity: (
            rustls::pki_types::CertificateDer<'static>,
            rustls::pki_types::PrivateKeyDer<'static>,
        ),
        hello: pdx_node::proto::msg::Message,
    ) -> Result<RawPeer, Result<pdx_node::proto::msg::Message, String>> {
        use pdx_node::proto::msg::{Message, Witness1, Witness3};
        let addr: std::net::SocketAddr = net.node(to).unwrap().addr.parse().unwrap();
        let endpoint = raw_client(net, Some(identity));
        let conn = endpoint
            .connect(addr, &format!("{to}.itest.pdx"))
            .unwrap()
            .await
            .map_err(|e| Err(e.to_string()))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| Err(e.to_string()))?;
        let reply = exchange(&mut send, &mut recv, &hello.encode().unwrap()).await;
        match reply {
            Ok(Message::HelloReply(_)) => {}
            other => return Err(other),
        }
        let w1 = Message::Witness1(Witness1 {
            proof: None,
            proof_request: None,
        });
        match exchange(&mut send, &mut recv, &w1.encode().unwrap()).await {
            Ok(Message::Witness2(_)) => {}
            other => return Err(other),
        }
        let w3 = Message::Witness3(Box::new(Witness3 {
            cosignature: Err("a raw peer cosigns nothing".into()),
        }));
        send.write_all(&w3.encode().unwrap()).await.unwrap();
        send.finish().unwrap();
        Ok(RawPeer { endpoint, conn })
    }

    /// Sends `bytes` on a new request stream and reads the answer.
    pub async fn request(&self, bytes: &[u8]) -> Result<pdx_node::proto::msg::Message, String> {
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| e.to_string())?;
        exchange(&mut send, &mut recv, bytes).await
    }
}

/// Writes `name` in `dir`: settlement records of October 2026 (`records`
/// draws of 5 provinces, optionally only those treated in `treated_in`).
pub fn settlement_csv(
    dir: &Path,
    name: &str,
    records: u64,
    seed: u64,
    treated_in: Option<&str>,
) -> String {
    let csv = dir.join(name);
    pdx_testnet::generate::settlement(
        &pdx_testnet::generate::Options {
            provinces: 5,
            records,
            seed,
            treated_in: treated_in.map(str::to_string),
            month: (2026, 10),
        },
        std::fs::File::create(&csv).unwrap(),
    )
    .unwrap();
    s(&csv)
}

/// Generates settlement records (`records` draws of 5 provinces, seed 11,
/// optionally only those treated in `treated_in`) and imports them on
/// `dept` as dataset `dataset` under the shipped settlement schema.
pub fn import_settlement(
    net: &Testnet,
    dir: &Path,
    dept: &str,
    dataset: &str,
    records: u64,
    treated_in: Option<&str>,
) {
    let csv = settlement_csv(dir, &format!("{dataset}.csv"), records, 11, treated_in);
    let schema = write(
        dir,
        "settlement.toml",
        include_str!("../../../schemas/medical_insurance/settlement.toml"),
    );
    let home = net.home(dept).unwrap();
    net.pdx_ok(&[
        "import",
        "--home",
        &home,
        "--schema",
        &schema,
        "--csv",
        &csv,
        "--dataset",
        dataset,
    ])
    .unwrap();
}

/// `pdx import` arguments.
pub fn import_args<'a>(home: &'a str, schema: &'a str, csv: &'a str, id: &'a str) -> Vec<&'a str> {
    vec![
        "import",
        "--home",
        home,
        "--schema",
        schema,
        "--csv",
        csv,
        "--dataset",
        id,
    ]
}

/// `pdx fetch` arguments: `dataset` under `profile` from `peer` into `home`.
pub fn fetch_args<'a>(
    home: &'a str,
    peer: &'a str,
    dataset: &'a str,
    profile: &'a str,
) -> Vec<&'a str> {
    vec![
        "fetch",
        "--home",
        home,
        "--peer",
        peer,
        "--dataset",
        dataset,
        "--profile",
        profile,
    ]
}

/// `pdx grant` arguments: `dataset` to `to` under `profile` for purpose
/// "test", then `extra` (agreement, expiry).
pub fn grant_args<'a>(
    home: &'a str,
    dataset: &'a str,
    to: &'a str,
    profile: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut a = vec![
        "grant",
        "--home",
        home,
        "--dataset",
        dataset,
        "--to",
        to,
        "--profile",
        profile,
        "--purpose",
        "test",
    ];
    a.extend_from_slice(extra);
    a
}

/// One node `440000` (not served) with PEOPLE_CSV imported as `people`.
pub fn people_node(dir: &Path) -> (Testnet, String) {
    let mut net = Testnet::create(dir, "itest").unwrap();
    net.add_node("440000", "广东").unwrap();
    let home = net.home("440000").unwrap();
    let schema = write(dir, "people.toml", PEOPLE_SCHEMA);
    let csv = write(dir, "people.csv", PEOPLE_CSV);
    net.pdx_ok(&import_args(&home, &schema, &csv, "people"))
        .unwrap();
    (net, home)
}

/// Exports the audit bundles of homes `a` and `b` into `dir`:
/// (`a.bundle`, `b.bundle`).
pub fn export_bundles(
    net: &Testnet,
    dir: &Path,
    a: &str,
    b: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (ba, bb) = (dir.join("a.bundle"), dir.join("b.bundle"));
    net.pdx_ok(&["audit", "export", "--home", a, "--out", &s(&ba)])
        .unwrap();
    net.pdx_ok(&["audit", "export", "--home", b, "--out", &s(&bb)])
        .unwrap();
    (ba, bb)
}

/// `pdx audit verify ARGS --json`: its exit code and report.
pub fn verify_json(net: &Testnet, args: &[&str]) -> (Option<i32>, Value) {
    let mut a = vec!["audit", "verify"];
    a.extend_from_slice(args);
    a.push("--json");
    let out = net.pdx(&a).unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

/// Waits for a spawned `pdx ... --json` (stdout and stderr piped): it must
/// succeed; returns what it printed.
pub fn json_of(child: std::process::Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
