//! Node certificates of both suites: the audit log they bind, validity judged
//! at the time a certificate was used (so audit evidence outlives it), what can
//! be checked of a CA that is not pinned, SM2 certificates and CRLs as GM/T
//! 0015 profiles them, and no certificate of one suite accepted by the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_audit::verify::CertificateCheck;
use pdx_crypto::Suite;
use pdx_node::pki::{self, CertChecker};
use rustls::pki_types::pem::PemObject;

fn network(suite: Suite) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    pki::ca_init(&ca, "unit", suite).unwrap();
    (tmp, ca)
}

#[test]
fn a_certificate_binds_the_log_of_the_audit_key_issued_with_it() {
    for suite in Suite::ALL {
        let (tmp, ca) = network(suite);
        let out = tmp.path().join("gd");
        pki::ca_issue(&ca, "440000", "广东", &out).unwrap();
        let cert = pki::read_certs(&out.join("node.crt")).unwrap();
        let info = pki::parse_node_cert(&cert[0]).unwrap();
        assert_eq!(info.suite, suite);
        assert_eq!(info.identity.suite(), suite);
        let audit =
            rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(out.join("audit.key")).unwrap();
        let audit = pdx_crypto::SigningKey::from_pkcs8(audit.secret_pkcs8_der()).unwrap();
        assert_eq!(audit.suite(), suite);
        let suffix = if suite == Suite::Gm { ":gm" } else { "" };
        assert_eq!(
            info.log_id,
            Some(format!("440000:{}{suffix}", audit.key_id().to_hex()))
        );
    }
}

#[test]
fn validity_is_judged_when_the_certificate_signed() {
    for suite in Suite::ALL {
        let (tmp, ca) = network(suite);
        let out = tmp.path().join("gd");
        pki::ca_issue(&ca, "440000", "广东", &out).unwrap();
        let der = pki::read_certs(&out.join("node.crt")).unwrap()[0].to_vec();
        let checker =
            CertChecker::new(&pki::read_certs(&ca.join("ca.crt")).unwrap(), Vec::new()).unwrap();
        let now = pdx_audit::store::now_ms();
        let day = 86_400_000u64;
        assert!(
            CertificateCheck::check_at(&checker, &der, now).is_ok(),
            "{suite}"
        );
        // Three years on the certificate has expired, but an endorsement signed
        // today is still judged at today.
        assert!(CertificateCheck::check_at(&checker, &der, now + 3 * 365 * day).is_err());
        assert!(CertificateCheck::check_at(&checker, &der, now + 365 * day).is_ok());
        // Before it was issued it was not valid either.
        assert!(CertificateCheck::check_at(&checker, &der, now - 2 * day).is_err());
    }
}

#[test]
fn a_ca_that_is_not_pinned_must_at_least_be_self_signed() {
    for suite in Suite::ALL {
        let (_tmp, ca) = network(suite);
        let der = pki::read_certs(&ca.join("ca.crt")).unwrap()[0].to_vec();
        assert_eq!(pki::suite_of_ca(&der).unwrap(), suite);
        pki::cert::check_self_signed(&der).unwrap();
        let mut forged = der.clone();
        let n = forged.len();
        forged[n - 10] ^= 1;
        assert!(pki::cert::check_self_signed(&forged).is_err(), "{suite}");
    }
}

#[test]
fn gm_certificates_use_the_sm2_oids_and_sm2_with_sm3_signatures() {
    use x509_parser::prelude::*;
    let (tmp, ca) = network(Suite::Gm);
    let out = tmp.path().join("bj");
    pki::ca_issue(&ca, "110000", "北京市医保局", &out).unwrap();
    for path in [ca.join("ca.crt"), out.join("node.crt")] {
        let der = pki::read_certs(&path).unwrap()[0].to_vec();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let spki = cert.public_key();
        assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .unwrap()
            .as_oid()
            .unwrap();
        assert_eq!(curve.to_id_string(), "1.2.156.10197.1.301");
        assert_eq!(
            cert.signature_algorithm.algorithm.to_id_string(),
            "1.2.156.10197.1.501"
        );
        assert!(cert.signature_algorithm.parameters.is_none());
    }
    let der = pki::read_certs(&out.join("node.crt")).unwrap()[0].to_vec();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert!(
        uris.contains(&"urn:pdx:dept:110000".to_string()),
        "{uris:?}"
    );
    assert!(
        uris.iter()
            .any(|u| u.starts_with("urn:pdx:log:110000:") && u.ends_with(":gm"))
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
}

#[test]
fn a_revoked_gm_certificate_is_refused_under_the_sm2_signed_crl() {
    let (tmp, ca) = network(Suite::Gm);
    let out = tmp.path().join("gd");
    let issued = pki::ca_issue(&ca, "440000", "广东", &out).unwrap();
    let der = pki::read_certs(&out.join("node.crt")).unwrap()[0].to_vec();
    let roots = pki::read_certs(&ca.join("ca.crt")).unwrap();
    let crls = pki::read_crls(&ca.join("crl.pem")).unwrap();
    CertChecker::new(&roots, crls).unwrap().check(&der).unwrap();
    pki::ca_revoke(&ca, &issued.serial).unwrap();
    let crls = pki::read_crls(&ca.join("crl.pem")).unwrap();
    let e = CertChecker::new(&roots, crls)
        .unwrap()
        .check(&der)
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("revoked"), "{e}");
}

#[test]
fn no_certificate_of_one_suite_is_accepted_by_a_network_of_the_other() {
    let (tmp_gm, gm) = network(Suite::Gm);
    let (tmp_intl, intl) = network(Suite::Intl);
    pki::ca_issue(&gm, "440000", "广东", &tmp_gm.path().join("gd")).unwrap();
    pki::ca_issue(&intl, "440000", "广东", &tmp_intl.path().join("gd")).unwrap();
    for (ca, other) in [(&gm, &tmp_intl), (&intl, &tmp_gm)] {
        let checker =
            CertChecker::new(&pki::read_certs(&ca.join("ca.crt")).unwrap(), vec![]).unwrap();
        let der = pki::read_certs(&other.path().join("gd/node.crt")).unwrap()[0].to_vec();
        let e = checker.check(&der).unwrap_err().to_string();
        assert!(e.contains("gm") && e.contains("intl"), "{e}");
    }
}
