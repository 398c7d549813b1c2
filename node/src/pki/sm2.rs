//! The `gm` suite's PKI: SM2 certificates and CRLs (GM/T 0015 profile:
//! `id-ecPublicKey` with the `sm2p256v1` curve 1.2.156.10197.1.301, signed
//! with SM2-with-SM3 1.2.156.10197.1.501, the signature a DER `SEQUENCE {r,
//! s}` over the DER `TBSCertificate` with ID `1234567812345678`), built with
//! RustCrypto `x509-cert` (rcgen has no SM2), and the rustls pieces that let
//! TLS 1.3 authenticate with them: webpki signature algorithms for chains,
//! CRLs and `sm2sig_sm3` (RFC 8998, 0x0708, ID `TLSv1.3+GM+Cipher+Suite`), and a
//! signing key for the handshake. Key exchange and record protection stay
//! rustls's own suites (the GM transport is a separate issue).

use crate::error::{NodeError, Result};
use der::asn1::{BitString, Ia5String, OctetString, UtcTime};
use der::oid::AssociatedOid;
use der::{Any, Decode, Encode, Tag};
use pdx_crypto::sign::SM2_DIST_ID;
use pdx_crypto::{SigningKey, Suite, VerifyingKey};
use rustls::SignatureScheme;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{
    AlgorithmIdentifier, InvalidSignature, PrivateKeyDer, SignatureVerificationAlgorithm,
    SubjectPublicKeyInfoDer,
};
use std::sync::Arc;
use std::time::SystemTime;
use x509_cert::builder::{Builder, CertificateBuilder, profile::BuilderProfile};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

/// `sm2sig_sm3` (RFC 8998 §3.2.1).
pub const SM2SIG_SM3: SignatureScheme = SignatureScheme::Unknown(0x0708);
/// The SM2 distinguishing ID of TLS 1.3 signatures (RFC 8998 §3.2.1).
pub const TLS13_SM2_ID: &str = "TLSv1.3+GM+Cipher+Suite";

/// DER contents of the SPKI AlgorithmIdentifier: `id-ecPublicKey`, `sm2p256v1`.
const SM2_SPKI_ALG: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55,
    0x01, 0x82, 0x2d,
];
/// DER contents of the signature AlgorithmIdentifier: SM2-with-SM3, no parameters.
const SM2_SM3_SIG_ALG: &[u8] = &[0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75];

const OID_CN: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_O: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("2.5.4.10");
const OID_OU: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("2.5.4.11");
const OID_SERVER_AUTH: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const OID_CLIENT_AUTH: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const OID_CRL_NUMBER: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("2.5.29.20");
const OID_AKI: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("2.5.29.35");

fn pki(what: &str) -> impl FnOnce(der::Error) -> NodeError + '_ {
    move |e| NodeError::Pki(format!("{what}: {e}"))
}

/// A UTF8String name of `(attribute, value)` RDNs, in order.
pub(crate) fn name(parts: &[(der::oid::ObjectIdentifier, &str)]) -> Result<Name> {
    let mut rdns = RdnSequence::default();
    for (oid, value) in parts {
        let mut rdn = RelativeDistinguishedName::default();
        rdn.insert(x509_cert::attr::AttributeTypeAndValue {
            oid: *oid,
            value: Any::new(Tag::Utf8String, value.as_bytes()).map_err(pki("name"))?,
        })
        .map_err(pki("name"))?;
        rdns.push(rdn);
    }
    // Through DER: a Name is an RdnSequence on the wire.
    Name::from_der(&rdns.to_der().map_err(pki("name"))?).map_err(pki("name"))
}

/// The CA's name: CN `pdx network CA (NET)`, O `pdx network NET`.
pub(crate) fn ca_name(network: &str) -> Result<Name> {
    name(&[
        (OID_CN, &format!("pdx network CA ({network})")),
        (OID_O, &format!("pdx network {network}")),
    ])
}

/// A node's name: CN the department's display name, O the network, OU the code.
pub(crate) fn node_name(display: &str, network: &str, dept: &str) -> Result<Name> {
    name(&[
        (OID_CN, display),
        (OID_O, &format!("pdx network {network}")),
        (OID_OU, dept),
    ])
}

fn utc(t: SystemTime) -> Result<Time> {
    Ok(Time::UtcTime(
        UtcTime::from_system_time(t).map_err(pki("certificate time"))?,
    ))
}

fn spki_of(key: &VerifyingKey) -> Result<SubjectPublicKeyInfoOwned> {
    let der = spki_der(key)?;
    SubjectPublicKeyInfoOwned::from_der(&der).map_err(pki("SM2 public key"))
}

/// The DER SubjectPublicKeyInfo of an SM2 key.
pub(crate) fn spki_der(key: &VerifyingKey) -> Result<Vec<u8>> {
    if key.suite() != Suite::Gm {
        return Err(NodeError::Pki("not an SM2 key".into()));
    }
    Ok(rustls::sign::public_key_to_spki(
        &AlgorithmIdentifier::from_slice(SM2_SPKI_ALG),
        key.as_bytes(),
    )
    .as_ref()
    .to_vec())
}

/// Key identifier of a public key: the first 20 bytes of SM3 over the key
/// (RFC 5280 §4.2.1.2 leaves the method open; method (1) with SM3).
fn key_identifier(key: &VerifyingKey) -> Vec<u8> {
    Suite::Gm.digest(key.as_bytes()).0[..20].to_vec()
}

fn ext<T: Encode>(oid: der::oid::ObjectIdentifier, critical: bool, value: &T) -> Result<Extension> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(pki("extension"))?)
            .map_err(pki("extension"))?,
    })
}

struct Profile {
    subject: Name,
    issuer: Name,
    extensions: Vec<Extension>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: x509_cert::spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: x509_cert::spki::SubjectPublicKeyInfoRef<'_>,
        _tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

/// What an SM2 certificate says.
pub(crate) struct CertSpec<'a> {
    pub subject: Name,
    pub subject_key: VerifyingKey,
    pub serial: &'a [u8],
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// CA (keyCertSign, cRLSign, path length 0) or a node (serverAuth and
    /// clientAuth, digitalSignature).
    pub ca: bool,
    /// DNS names and URIs of the subject alternative name (nodes).
    pub dns: Vec<String>,
    pub uris: Vec<String>,
}

/// Signs `spec` with `issuer_key` (the CA's SM2 key) under `issuer`; a CA
/// certificate is self-signed (`issuer` is its own subject).
pub(crate) fn certificate(
    spec: CertSpec<'_>,
    issuer: &Name,
    issuer_key: &SigningKey,
) -> Result<Vec<u8>> {
    let signer = issuer_key
        .sm2_dsa()
        .ok_or_else(|| NodeError::Pki("the CA key of a gm network is not an SM2 key".into()))?;
    let mut extensions = Vec::new();
    let usage = if spec.ca {
        extensions.push(ext(
            BasicConstraints::OID,
            true,
            &BasicConstraints {
                ca: true,
                path_len_constraint: Some(0),
            },
        )?);
        KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature
    } else {
        KeyUsages::DigitalSignature.into()
    };
    extensions.push(ext(KeyUsage::OID, true, &KeyUsage(usage))?);
    if !spec.ca {
        extensions.push(ext(
            ExtendedKeyUsage::OID,
            false,
            &ExtendedKeyUsage(vec![OID_SERVER_AUTH, OID_CLIENT_AUTH]),
        )?);
        let mut names = Vec::new();
        for d in &spec.dns {
            names.push(GeneralName::DnsName(
                Ia5String::new(d).map_err(pki("DNS name"))?,
            ));
        }
        for u in &spec.uris {
            names.push(GeneralName::UniformResourceIdentifier(
                Ia5String::new(u).map_err(pki("SAN URI"))?,
            ));
        }
        extensions.push(ext(SubjectAltName::OID, false, &SubjectAltName(names))?);
        extensions.push(ext(
            OID_AKI,
            false,
            &AuthorityKeyIdentifier {
                key_identifier: Some(
                    OctetString::new(key_identifier(&issuer_key.verifying_key()))
                        .map_err(pki("key identifier"))?,
                ),
                ..Default::default()
            },
        )?);
    }
    extensions.push(ext(
        SubjectKeyIdentifier::OID,
        false,
        &SubjectKeyIdentifier(
            OctetString::new(key_identifier(&spec.subject_key)).map_err(pki("key identifier"))?,
        ),
    )?);
    let profile = Profile {
        subject: spec.subject,
        issuer: issuer.clone(),
        extensions,
    };
    let serial = SerialNumber::new(spec.serial).map_err(pki("serial number"))?;
    let validity = Validity::new(utc(spec.not_before)?, utc(spec.not_after)?);
    let mut builder =
        CertificateBuilder::new(profile, serial, validity, spki_of(&spec.subject_key)?)
            .map_err(|e| NodeError::Pki(format!("certificate: {e}")))?;
    let tbs = builder
        .finalize(signer)
        .map_err(|e| NodeError::Pki(format!("certificate: {e}")))?;
    let sig = issuer_key.sign_sm2_der(SM2_DIST_ID, &tbs)?;
    let cert = builder
        .assemble(
            BitString::from_bytes(&sig).map_err(pki("signature"))?,
            signer,
        )
        .map_err(|e| NodeError::Pki(format!("certificate: {e}")))?;
    cert.to_der().map_err(pki("certificate"))
}

/// A CRL signed by the CA's SM2 key, revoking `revoked` (serial, time).
pub(crate) fn crl(
    issuer: &Name,
    issuer_key: &SigningKey,
    number: u64,
    this_update: SystemTime,
    next_update: SystemTime,
    revoked: &[(Vec<u8>, SystemTime)],
) -> Result<Vec<u8>> {
    use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
    let sig_alg = x509_cert::spki::AlgorithmIdentifierOwned {
        oid: der::oid::ObjectIdentifier::new_unwrap("1.2.156.10197.1.501"),
        parameters: None,
    };
    let mut entries: Vec<RevokedCert> = Vec::with_capacity(revoked.len());
    for (serial, at) in revoked {
        entries.push(RevokedCert {
            serial_number: SerialNumber::new(serial).map_err(pki("serial number"))?,
            revocation_date: utc(*at)?,
            crl_entry_extensions: None,
        });
    }
    let crl_number = der::asn1::Uint::new(&number.to_be_bytes()).map_err(pki("CRL number"))?;
    let tbs = TbsCertList {
        version: x509_cert::Version::V2,
        signature: sig_alg.clone(),
        issuer: issuer.clone(),
        this_update: utc(this_update)?,
        next_update: Some(utc(next_update)?),
        revoked_certificates: (!entries.is_empty()).then_some(entries),
        crl_extensions: Some(vec![
            ext(
                OID_AKI,
                false,
                &AuthorityKeyIdentifier {
                    key_identifier: Some(
                        OctetString::new(key_identifier(&issuer_key.verifying_key()))
                            .map_err(pki("key identifier"))?,
                    ),
                    ..Default::default()
                },
            )?,
            ext(OID_CRL_NUMBER, false, &crl_number)?,
        ]),
    };
    let tbs_der = tbs.to_der().map_err(pki("CRL"))?;
    let sig = issuer_key.sign_sm2_der(SM2_DIST_ID, &tbs_der)?;
    CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: sig_alg,
        signature: BitString::from_bytes(&sig).map_err(pki("signature"))?,
    }
    .to_der()
    .map_err(pki("CRL"))
}

/// The subject name and SM2 key of a CA certificate.
pub(crate) fn ca_subject(der: &[u8]) -> Result<(Name, VerifyingKey)> {
    let cert = x509_cert::Certificate::from_der(der).map_err(pki("CA certificate"))?;
    let tbs = cert.tbs_certificate();
    let spki = tbs.subject_public_key_info();
    let key = VerifyingKey::from_slice(spki.subject_public_key.raw_bytes())?;
    Ok((tbs.subject().clone(), key))
}

/// Whether a DER SubjectPublicKeyInfo algorithm is SM2's.
pub(crate) fn is_sm2_spki(alg_oid: &str, params_oid: Option<&str>) -> bool {
    alg_oid == "1.2.840.10045.2.1" && params_oid == Some("1.2.156.10197.1.301")
}

/// Verifies the SM2 signature of a certificate or CRL (`tbs`, the DER of
/// what was signed) under `public` (SEC1 bytes).
pub(crate) fn verify_signed(public: &[u8], tbs: &[u8], der_signature: &[u8]) -> Result<()> {
    pdx_crypto::sign::verify_sm2_der(SM2_DIST_ID, public, tbs, der_signature)
        .map_err(|_| NodeError::Pki("the SM2 signature does not verify".into()))
}

/// SM2 with SM3 for webpki: X.509 chains and CRLs use GM/T 0009's ID, TLS
/// 1.3's `sm2sig_sm3` RFC 8998's.
#[derive(Debug)]
struct Sm2Sm3 {
    dist_id: &'static str,
}

impl SignatureVerificationAlgorithm for Sm2Sm3 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> std::result::Result<(), InvalidSignature> {
        pdx_crypto::sign::verify_sm2_der(self.dist_id, public_key, message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        AlgorithmIdentifier::from_slice(SM2_SPKI_ALG)
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        AlgorithmIdentifier::from_slice(SM2_SM3_SIG_ALG)
    }
}

static SM2_X509: Sm2Sm3 = Sm2Sm3 {
    dist_id: SM2_DIST_ID,
};
static SM2_TLS13: Sm2Sm3 = Sm2Sm3 {
    dist_id: TLS13_SM2_ID,
};

/// The only signature algorithms a gm node accepts: SM2 with SM3.
pub(crate) static GM_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[&SM2_X509],
    mapping: &[(SM2SIG_SM3, &[&SM2_TLS13])],
};

/// rustls's ring provider with SM2 as the only signature algorithm (chains,
/// CRLs, handshake signatures) and SM2 keys for the handshake.
pub(crate) fn gm_provider() -> rustls::crypto::CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    p.signature_verification_algorithms = GM_ALGORITHMS;
    p.key_provider = &Sm2Keys;
    p
}

#[derive(Debug)]
struct Sm2Keys;

impl rustls::crypto::KeyProvider for Sm2Keys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> std::result::Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        let PrivateKeyDer::Pkcs8(der) = key_der else {
            return Err(rustls::Error::General(
                "a gm node key must be an SM2 PKCS#8 key".into(),
            ));
        };
        let key = SigningKey::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if key.suite() != Suite::Gm {
            return Err(rustls::Error::General(
                "a gm node key must be an SM2 key".into(),
            ));
        }
        Ok(Arc::new(Sm2TlsKey(Arc::new(key))))
    }
}

#[derive(Debug)]
struct Sm2TlsKey(Arc<SigningKey>);

impl rustls::sign::SigningKey for Sm2TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SM2SIG_SM3)
            .then(|| Box::new(Sm2TlsSigner(self.0.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        spki_der(&self.0.verifying_key())
            .ok()
            .map(SubjectPublicKeyInfoDer::from)
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        // Consulted only for TLS 1.2 suite selection; SM2 is an EC scheme.
        rustls::SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct Sm2TlsSigner(Arc<SigningKey>);

impl rustls::sign::Signer for Sm2TlsSigner {
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, rustls::Error> {
        self.0
            .sign_sm2_der(TLS13_SM2_ID, message)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SM2SIG_SM3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn a_ca_and_a_node_certificate_parse_and_verify() -> Result<()> {
        let ca_key = SigningKey::generate(Suite::Gm)?;
        let ca = ca_name("medins")?;
        let ca_der = certificate(
            CertSpec {
                subject: ca.clone(),
                subject_key: ca_key.verifying_key(),
                serial: &[0x41; 16],
                not_before: now(),
                not_after: now() + std::time::Duration::from_secs(3600),
                ca: true,
                dns: vec![],
                uris: vec![],
            },
            &ca,
            &ca_key,
        )?;
        let (subject, key) = ca_subject(&ca_der)?;
        assert_eq!(subject, ca);
        assert_eq!(key, ca_key.verifying_key());
        let node_key = SigningKey::generate(Suite::Gm)?;
        let node_der = certificate(
            CertSpec {
                subject: node_name("广东省医保局", "medins", "440000")?,
                subject_key: node_key.verifying_key(),
                serial: &[0x42; 16],
                not_before: now(),
                not_after: now() + std::time::Duration::from_secs(3600),
                ca: false,
                dns: vec!["440000.medins.pdx".into()],
                uris: vec!["urn:pdx:dept:440000".into()],
            },
            &ca,
            &ca_key,
        )?;
        let cert = x509_cert::Certificate::from_der(&node_der).map_err(pki("parse"))?;
        let tbs = cert.tbs_certificate().to_der().map_err(pki("tbs"))?;
        verify_signed(
            ca_key.verifying_key().as_bytes(),
            &tbs,
            cert.signature().raw_bytes(),
        )?;
        assert!(
            verify_signed(
                node_key.verifying_key().as_bytes(),
                &tbs,
                cert.signature().raw_bytes()
            )
            .is_err()
        );
        assert_eq!(
            cert.signature_algorithm().oid.to_string(),
            "1.2.156.10197.1.501"
        );
        let crl_der = crl(&ca, &ca_key, 7, now(), now(), &[(vec![0x42; 16], now())])?;
        let list =
            x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(&crl_der)
                .map_err(pki("crl"))?;
        let tbs = list.tbs_cert_list.to_der().map_err(pki("tbs"))?;
        verify_signed(
            ca_key.verifying_key().as_bytes(),
            &tbs,
            list.signature.raw_bytes(),
        )?;
        Ok(())
    }
}
