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

/// A network with the given nodes, peers configured, all started.
pub fn network(dir: &Path, nodes: &[(&str, &str)]) -> Testnet {
    let mut net = Testnet::create(dir, "itest").unwrap();
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
