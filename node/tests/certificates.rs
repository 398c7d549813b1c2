//! Node certificates: the audit log they bind, validity judged at the time a
//! certificate was used (so audit evidence outlives it), and what can be
//! checked of a CA that is not pinned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_audit::verify::CertificateCheck;
use pdx_node::pki::{self, CertChecker};
use rustls::pki_types::pem::PemObject;

#[test]
fn a_certificate_binds_the_log_of_the_audit_key_issued_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    pki::ca_init(&ca, "unit").unwrap();
    let out = tmp.path().join("gd");
    pki::ca_issue(&ca, "440000", "广东", &out).unwrap();
    let cert = pki::read_certs(&out.join("node.crt")).unwrap();
    let info = pki::parse_node_cert(&cert[0]).unwrap();
    let audit =
        rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(out.join("audit.key")).unwrap();
    let audit = pdx_crypto::SigningKey::from_pkcs8(audit.secret_pkcs8_der()).unwrap();
    assert_eq!(
        info.log_id,
        Some(format!("440000:{}", audit.key_id().to_hex()))
    );
}

#[test]
fn validity_is_judged_when_the_certificate_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    pki::ca_init(&ca, "unit").unwrap();
    let out = tmp.path().join("gd");
    pki::ca_issue(&ca, "440000", "广东", &out).unwrap();
    let der = pki::read_certs(&out.join("node.crt")).unwrap()[0].to_vec();
    let checker =
        CertChecker::new(&pki::read_certs(&ca.join("ca.crt")).unwrap(), Vec::new()).unwrap();
    let now = pdx_audit::store::now_ms();
    let day = 86_400_000u64;
    assert!(CertificateCheck::check_at(&checker, &der, now).is_ok());
    // Three years on the certificate has expired, but an endorsement signed
    // today is still judged at today.
    assert!(CertificateCheck::check_at(&checker, &der, now + 3 * 365 * day).is_err());
    assert!(CertificateCheck::check_at(&checker, &der, now + 365 * day).is_ok());
    // Before it was issued it was not valid either.
    assert!(CertificateCheck::check_at(&checker, &der, now - 2 * day).is_err());
}

#[test]
fn a_ca_that_is_not_pinned_must_at_least_be_self_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    pki::ca_init(&ca, "unit").unwrap();
    let der = pki::read_certs(&ca.join("ca.crt")).unwrap()[0].to_vec();
    pki::cert::check_self_signed(&der).unwrap();
    let mut forged = der.clone();
    let n = forged.len();
    forged[n - 10] ^= 1;
    assert!(pki::cert::check_self_signed(&forged).is_err());
}
