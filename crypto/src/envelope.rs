//! Field-level envelopes: values sealed for named recipients, so relays forward
//! records they cannot read.
//!
//! Per release and recipient a fresh data key seals that recipient's field
//! values with the suite's AEAD. The data key is wrapped for the recipient's
//! public encryption key:
//!
//! - suite 1 (`intl`, X25519-HKDF-SHA256-AES256GCM): a fresh ephemeral X25519
//!   key (ring `agreement`) agrees with the recipient's static key, HKDF-SHA256
//!   turns the shared secret into a one-time key-encryption key, and
//!   AES-256-GCM wraps the 32-byte data key under it;
//! - suite 2 (`gm`, SM2PKE-SM3-SM4GCM): SM2 public-key encryption (GM/T
//!   0003.4, C1 || C3 || C2, SM3 KDF) of `SM3(context) || data key` (16 bytes),
//!   so the wrapped key is bound to its release and recipient as the intl AAD
//!   binds it. `docs/crypto.md` says why encryption and not GM/T 0003.3 key
//!   agreement (an interactive protocol; the recipient is not online).
//!
//! Nonces are counters, unique by construction: `record index (u64) || field
//! index (u32)`. A data key is fresh for each (release, recipient) and each
//! (record, field) is sealed once per release, so a (key, nonce) pair never
//! repeats. No random nonce, no birthday bound to argue.
//!
//! The AAD binds suite, dataset id, release id, record index and field name, so
//! a ciphertext moved to another record, field, release or dataset fails to open.
//! The byte formats are specified in `docs/crypto.md`.

use crate::aead::{AeadKey, counter_nonce, key_len, push_lp};
use crate::sign::{SM2_PUBLIC_LEN, sm2_public};
use crate::{CryptoError, KeyId, Result, Suite};
use ring::{agreement, hkdf};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Suite id 1: X25519 + HKDF-SHA256 + AES-256-GCM (`intl`).
pub const SUITE_X25519_HKDF_SHA256_AES256GCM: u16 = crate::suite::ENVELOPE_INTL;
/// Suite id 2: SM2 public-key encryption + SM3 + SM4-GCM (`gm`).
pub const SUITE_SM2PKE_SM3_SM4GCM: u16 = crate::suite::ENVELOPE_GM;

const HKDF_SALT: &[u8] = b"pdx/v1 X25519-HKDF-SHA256-AES256GCM";

/// Checks that `suite` is an implemented envelope suite id.
pub fn check_suite(suite: u16) -> Result<()> {
    Suite::from_envelope_id(suite).map(|_| ())
}

/// Length of a gm wrapped key's C3 || C2: 32 (SM3) + 32 (context digest) + 16 (data key).
const SM2_WRAPPED_LEN: usize = 32 + 32 + 16;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PublicRepr {
    X25519([u8; 32]),
    Sm2([u8; SM2_PUBLIC_LEN]),
}

/// A public encryption key: X25519 (`intl`, 32 bytes) or SM2 (`gm`, 65 bytes
/// `04 || x || y`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncryptionPublic(PublicRepr);

impl EncryptionPublic {
    /// Parses a key by its length: 32 bytes X25519, 65 bytes an SM2 point.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        if let Ok(x) = <[u8; 32]>::try_from(b) {
            return Ok(EncryptionPublic(PublicRepr::X25519(x)));
        }
        sm2_public(b)?;
        let mut sm = [0u8; SM2_PUBLIC_LEN];
        sm.copy_from_slice(b);
        Ok(EncryptionPublic(PublicRepr::Sm2(sm)))
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            PublicRepr::X25519(b) => b,
            PublicRepr::Sm2(b) => b,
        }
    }

    /// The key's suite.
    pub fn suite(&self) -> Suite {
        match self.0 {
            PublicRepr::X25519(_) => Suite::Intl,
            PublicRepr::Sm2(_) => Suite::Gm,
        }
    }

    /// The key's id (named in envelopes).
    pub fn key_id(&self) -> KeyId {
        KeyId::of(self.suite(), self.as_bytes())
    }
}

impl std::fmt::Debug for EncryptionPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionPublic({} {})", self.suite(), self.key_id())
    }
}

impl Serialize for EncryptionPublic {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
    }
}

impl<'de> Deserialize<'de> for EncryptionPublic {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        EncryptionPublic::from_slice(&b).map_err(|_| {
            serde::de::Error::invalid_length(
                b.len(),
                &"32 bytes (X25519) or 65 bytes 04 || x || y on the SM2 curve",
            )
        })
    }
}

enum SecretRepr {
    X25519(x25519_dalek::StaticSecret),
    Sm2(sm2::SecretKey),
}

/// A private encryption key held by a recipient. ring only offers ephemeral
/// X25519 keys, so the long-lived intl key uses `x25519-dalek`; gm keys are
/// SM2 scalars (`sm2`). Both are zeroized on drop.
pub struct EncryptionSecret {
    secret: SecretRepr,
    public: EncryptionPublic,
}

impl std::fmt::Debug for EncryptionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionSecret({:?})", self.public)
    }
}

impl EncryptionSecret {
    /// A fresh key of `suite` from the OS CSPRNG.
    pub fn generate(suite: Suite) -> Result<Self> {
        match suite {
            Suite::Intl => {
                let raw = Zeroizing::new(crate::rng::bytes::<32>()?);
                Self::from_bytes(suite, &raw)
            }
            Suite::Gm => Ok(Self::from_sm2(crate::rng::sm2_secret()?)),
        }
    }

    fn from_sm2(secret: sm2::SecretKey) -> Self {
        use sm2::elliptic_curve::sec1::ToSec1Point;
        let point = secret.public_key().to_sec1_point(false);
        let mut public = [0u8; SM2_PUBLIC_LEN];
        public.copy_from_slice(point.as_bytes());
        EncryptionSecret {
            secret: SecretRepr::Sm2(secret),
            public: EncryptionPublic(PublicRepr::Sm2(public)),
        }
    }

    /// Loads 32 raw secret bytes of `suite` (an X25519 scalar, or an SM2
    /// scalar in `[1, n-1]`, big-endian).
    pub fn from_bytes(suite: Suite, raw: &[u8; 32]) -> Result<Self> {
        match suite {
            Suite::Intl => {
                let secret = x25519_dalek::StaticSecret::from(*raw);
                let public = EncryptionPublic(PublicRepr::X25519(
                    x25519_dalek::PublicKey::from(&secret).to_bytes(),
                ));
                Ok(EncryptionSecret {
                    secret: SecretRepr::X25519(secret),
                    public,
                })
            }
            Suite::Gm => sm2::SecretKey::from_slice(raw)
                .map(Self::from_sm2)
                .map_err(|_| CryptoError::MalformedKey {
                    what: "SM2 encryption key",
                    reason: "not a scalar in [1, n-1]",
                }),
        }
    }

    /// The secret bytes, for writing the key file.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        match &self.secret {
            SecretRepr::X25519(s) => Zeroizing::new(s.to_bytes()),
            SecretRepr::Sm2(s) => {
                let mut out = Zeroizing::new([0u8; 32]);
                out.copy_from_slice(&s.to_bytes());
                out
            }
        }
    }

    /// The public half.
    pub fn public(&self) -> EncryptionPublic {
        self.public
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// The key's suite.
    pub fn suite(&self) -> Suite {
        self.public.suite()
    }
}

/// A recipient whose key document the caller has verified against its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// Department code from the recipient's certificate.
    pub dept: String,
    /// The recipient's encryption key.
    pub public: EncryptionPublic,
}

/// A data key wrapped for one recipient key. Travels in the signed manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Suite id ([`SUITE_X25519_HKDF_SHA256_AES256GCM`] or [`SUITE_SM2PKE_SM3_SM4GCM`]).
    pub suite: u16,
    /// Recipient department.
    pub dept: String,
    /// Recipient key id.
    pub key_id: KeyId,
    /// The sender's ephemeral public key: X25519 (32 bytes), or SM2's C1
    /// (65 bytes `04 || x || y`).
    #[serde(with = "serde_bytes")]
    pub ephemeral: Vec<u8>,
    /// Suite 1: AES-256-GCM(KEK, nonce 0, aad = KDF info, data key), 48 bytes.
    /// Suite 2: SM2's C3 || C2 over `SM3(info) || data key`, 80 bytes.
    #[serde(with = "serde_bytes")]
    pub wrapped: Vec<u8>,
}

/// What every field sealed in one release is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseContext {
    /// Source dataset id.
    pub dataset_id: String,
    /// Release id (16 random bytes chosen by the sender).
    pub release_id: [u8; 16],
}

impl ReleaseContext {
    fn aad_prefix(&self, suite: u16) -> Vec<u8> {
        let mut a = Vec::with_capacity(64 + self.dataset_id.len());
        a.extend_from_slice(b"pdx/v1 field\0");
        a.extend_from_slice(&suite.to_be_bytes());
        push_lp(&mut a, self.dataset_id.as_bytes());
        a.extend_from_slice(&self.release_id);
        a
    }

    /// The KDF info (suite 1) or bound context (suite 2) of a wrapped key;
    /// suite 2 has no ephemeral key before encrypting, so it binds none.
    fn wrap_info(
        &self,
        suite: u16,
        dept: &str,
        key_id: &KeyId,
        eph: Option<&[u8]>,
        recipient: &[u8],
    ) -> Vec<u8> {
        let mut info = Vec::with_capacity(192);
        push_lp(&mut info, b"pdx/v1 key-wrap");
        info.extend_from_slice(&suite.to_be_bytes());
        info.extend_from_slice(&self.release_id);
        push_lp(&mut info, self.dataset_id.as_bytes());
        push_lp(&mut info, dept.as_bytes());
        info.extend_from_slice(&key_id.0);
        if let Some(eph) = eph {
            info.extend_from_slice(eph);
        }
        info.extend_from_slice(recipient);
        info
    }
}

struct Okm32;
impl hkdf::KeyType for Okm32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256 (ring) producing 32 bytes; exposed for the RFC 5869 vector tests.
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<()> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    prk.expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| CryptoError::Malformed {
            what: "HKDF output length",
            reason: "longer than 255 * 32 bytes".into(),
        })
}

fn kek_from_shared(shared: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let mut kek = Zeroizing::new([0u8; 32]);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(shared);
    let info = [info];
    let okm = prk
        .expand(&info, Okm32)
        .map_err(|_| CryptoError::KeyAgreement)?;
    okm.fill(&mut kek[..])
        .map_err(|_| CryptoError::KeyAgreement)?;
    Ok(kek)
}

fn wrap_for(ctx: &ReleaseContext, recipient: &Recipient, data_key: &[u8]) -> Result<WrappedKey> {
    let key_id = recipient.public.key_id();
    match &recipient.public.0 {
        PublicRepr::X25519(r) => {
            let suite = SUITE_X25519_HKDF_SHA256_AES256GCM;
            let rng = ring::rand::SystemRandom::new();
            let eph = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
                .map_err(|_| CryptoError::Rng)?;
            let eph_pub = eph
                .compute_public_key()
                .map_err(|_| CryptoError::KeyAgreement)?
                .as_ref()
                .to_vec();
            let info = ctx.wrap_info(suite, &recipient.dept, &key_id, Some(&eph_pub), r);
            let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, r);
            let kek =
                agreement::agree_ephemeral(eph, &peer, |shared| kek_from_shared(shared, &info))
                    .map_err(|_| CryptoError::KeyAgreement)??;
            let wrapped = AeadKey::new(Suite::Intl, &kek[..])?.seal([0u8; 12], &info, data_key)?;
            Ok(WrappedKey {
                suite,
                dept: recipient.dept.clone(),
                key_id,
                ephemeral: eph_pub,
                wrapped,
            })
        }
        PublicRepr::Sm2(r) => {
            let suite = SUITE_SM2PKE_SM3_SM4GCM;
            let info = ctx.wrap_info(suite, &recipient.dept, &key_id, None, r);
            let mut plain = Zeroizing::new(Suite::Gm.digest(&info).0.to_vec());
            plain.extend_from_slice(data_key);
            let encrypting =
                sm2::pke::EncryptingKey::new_with_mode(sm2_public(r)?, sm2::pke::Mode::C1C3C2);
            let mut ct = encrypting
                .encrypt(&mut crate::rng::OsRng, &plain)
                .map_err(|_| CryptoError::KeyAgreement)?;
            if ct.len() != SM2_PUBLIC_LEN + SM2_WRAPPED_LEN {
                return Err(CryptoError::KeyAgreement);
            }
            let wrapped = ct.split_off(SM2_PUBLIC_LEN);
            Ok(WrappedKey {
                suite,
                dept: recipient.dept.clone(),
                key_id,
                ephemeral: ct,
                wrapped,
            })
        }
    }
}

fn unwrap_with(
    suite: Suite,
    ctx: &ReleaseContext,
    wk: &WrappedKey,
    secret: &EncryptionSecret,
) -> Result<AeadKey> {
    suite.expect(Suite::from_envelope_id(wk.suite)?, "wrapped data key")?;
    suite.expect(secret.suite(), "encryption key")?;
    let refused = || CryptoError::OpenFailed {
        what: format!("data key wrapped for {} key {}", wk.dept, wk.key_id),
    };
    let raw: Zeroizing<Vec<u8>> = match &secret.secret {
        SecretRepr::X25519(s) => {
            let eph: [u8; 32] = wk.ephemeral.as_slice().try_into().map_err(|_| refused())?;
            let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(eph));
            if !shared.was_contributory() {
                return Err(CryptoError::KeyAgreement);
            }
            let info = ctx.wrap_info(
                wk.suite,
                &wk.dept,
                &wk.key_id,
                Some(&wk.ephemeral),
                secret.public.as_bytes(),
            );
            let kek = kek_from_shared(shared.as_bytes(), &info)?;
            Zeroizing::new(AeadKey::new(Suite::Intl, &kek[..])?.open(
                [0u8; 12],
                &info,
                &wk.wrapped,
                || format!("data key wrapped for {} key {}", wk.dept, wk.key_id),
            )?)
        }
        SecretRepr::Sm2(s) => {
            if wk.ephemeral.len() != SM2_PUBLIC_LEN || wk.wrapped.len() != SM2_WRAPPED_LEN {
                return Err(refused());
            }
            let mut ct = Vec::with_capacity(SM2_PUBLIC_LEN + SM2_WRAPPED_LEN);
            ct.extend_from_slice(&wk.ephemeral);
            ct.extend_from_slice(&wk.wrapped);
            let decrypting = sm2::pke::DecryptingKey::new_with_mode(
                s.to_nonzero_scalar(),
                sm2::pke::Mode::C1C3C2,
            );
            let plain = Zeroizing::new(decrypting.decrypt(&ct).map_err(|_| refused())?);
            let info = ctx.wrap_info(
                wk.suite,
                &wk.dept,
                &wk.key_id,
                None,
                secret.public.as_bytes(),
            );
            if plain.len() != 48 || plain[..32] != Suite::Gm.digest(&info).0 {
                return Err(refused());
            }
            Zeroizing::new(plain[32..].to_vec())
        }
    };
    if raw.len() != key_len(suite) {
        return Err(CryptoError::OpenFailed {
            what: "wrapped data key (wrong length)".into(),
        });
    }
    AeadKey::new(suite, &raw)
}

fn field_nonce(record: u64, field_index: u32) -> [u8; 12] {
    counter_nonce(record, field_index)
}

fn field_aad(prefix: &[u8], record: u64, field_name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(prefix.len() + 16 + field_name.len());
    aad.extend_from_slice(prefix);
    aad.extend_from_slice(&record.to_be_bytes());
    push_lp(&mut aad, field_name.as_bytes());
    aad
}

/// Seals field values of one release for its recipients.
#[derive(Debug)]
pub struct Sealer {
    aad_prefix: Vec<u8>,
    keys: Vec<AeadKey>,
}

impl Sealer {
    /// Draws one fresh data key of `suite` per recipient and wraps each; a
    /// recipient key of the other suite is refused. Recipient `i` of
    /// `recipients` is recipient index `i` in [`Sealer::seal_field`].
    pub fn new(
        suite: Suite,
        ctx: &ReleaseContext,
        recipients: &[Recipient],
    ) -> Result<(Self, Vec<WrappedKey>)> {
        let mut keys = Vec::with_capacity(recipients.len());
        let mut wrapped = Vec::with_capacity(recipients.len());
        for r in recipients {
            suite.expect(
                r.public.suite(),
                &format!("the encryption key of {}", r.dept),
            )?;
            let (key, raw) = AeadKey::generate(suite)?;
            wrapped.push(wrap_for(ctx, r, &raw)?);
            keys.push(key);
        }
        Ok((
            Sealer {
                aad_prefix: ctx.aad_prefix(suite.envelope_id()),
                keys,
            },
            wrapped,
        ))
    }

    /// Appends `value` sealed for `recipient` to `out` (ciphertext || 16-byte tag).
    pub fn seal_field(
        &self,
        recipient: usize,
        record: u64,
        field_index: u32,
        field_name: &str,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let key = self.keys.get(recipient).ok_or(CryptoError::Malformed {
            what: "recipient index",
            reason: format!("{recipient} is not a recipient of this release"),
        })?;
        key.seal_append(
            field_nonce(record, field_index),
            &field_aad(&self.aad_prefix, record, field_name),
            value,
            out,
        )
    }
}

/// Opens the fields of one release that were sealed for this node.
#[derive(Debug)]
pub struct Opener {
    aad_prefix: Vec<u8>,
    keys: Vec<Option<AeadKey>>,
}

impl Opener {
    /// Unwraps every data key addressed to `my_dept` under a key `lookup` knows.
    /// Fails with [`CryptoError::NotARecipient`] if there is none, and refuses
    /// a wrapped key of another suite than `suite`.
    pub fn new<'a>(
        suite: Suite,
        ctx: &ReleaseContext,
        wrapped: &[WrappedKey],
        my_dept: &str,
        lookup: impl Fn(&KeyId) -> Option<&'a EncryptionSecret>,
    ) -> Result<Self> {
        let mut keys = Vec::with_capacity(wrapped.len());
        let mut any = false;
        for wk in wrapped {
            suite.expect(Suite::from_envelope_id(wk.suite)?, "wrapped data key")?;
            let key = if wk.dept == my_dept {
                match lookup(&wk.key_id) {
                    Some(secret) => Some(unwrap_with(suite, ctx, wk, secret)?),
                    None => None,
                }
            } else {
                None
            };
            any |= key.is_some();
            keys.push(key);
        }
        if !any {
            return Err(CryptoError::NotARecipient {
                release: ctx.release_id.iter().map(|b| format!("{b:02x}")).collect(),
                dept: my_dept.to_string(),
            });
        }
        Ok(Opener {
            aad_prefix: ctx.aad_prefix(suite.envelope_id()),
            keys,
        })
    }

    /// Whether fields sealed for recipient index `recipient` can be opened here.
    pub fn can_open(&self, recipient: usize) -> bool {
        matches!(self.keys.get(recipient), Some(Some(_)))
    }

    /// Opens one field value.
    pub fn open_field(
        &self,
        recipient: usize,
        record: u64,
        field_index: u32,
        field_name: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let key = self
            .keys
            .get(recipient)
            .and_then(Option::as_ref)
            .ok_or_else(|| CryptoError::OpenFailed {
                what: format!(
                    "field {field_name} of record {record}: sealed for another recipient"
                ),
            })?;
        key.open(
            field_nonce(record, field_index),
            &field_aad(&self.aad_prefix, record, field_name),
            sealed,
            || format!("field {field_name} of record {record}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ctx() -> ReleaseContext {
        ReleaseContext {
            dataset_id: "settlement-2026-10".into(),
            release_id: [9u8; 16],
        }
    }

    fn setup(
        suite: Suite,
    ) -> Result<(EncryptionSecret, EncryptionSecret, Sealer, Vec<WrappedKey>)> {
        let a = EncryptionSecret::generate(suite)?;
        let b = EncryptionSecret::generate(suite)?;
        let recipients = [
            Recipient {
                dept: "440000".into(),
                public: a.public(),
            },
            Recipient {
                dept: "110000".into(),
                public: b.public(),
            },
        ];
        let (sealer, wrapped) = Sealer::new(suite, &ctx(), &recipients)?;
        Ok((a, b, sealer, wrapped))
    }

    #[test]
    fn each_recipient_opens_only_its_own_fields() -> Result<()> {
        for suite in Suite::ALL {
            each_recipient_opens_only_its_own_fields_in(suite)?;
        }
        Ok(())
    }

    fn each_recipient_opens_only_its_own_fields_in(suite: Suite) -> Result<()> {
        let (a, b, sealer, wrapped) = setup(suite)?;
        let mut ct_a = Vec::new();
        sealer.seal_field(0, 7, 2, "certno", b"110101199003074514", &mut ct_a)?;
        let mut ct_b = Vec::new();
        sealer.seal_field(1, 8, 2, "certno", b"440101198001010018", &mut ct_b)?;
        let opener_a = Opener::new(suite, &ctx(), &wrapped, "440000", |id| {
            (*id == a.key_id()).then_some(&a)
        })?;
        assert_eq!(
            opener_a.open_field(0, 7, 2, "certno", &ct_a)?,
            b"110101199003074514"
        );
        assert!(!opener_a.can_open(1));
        assert!(opener_a.open_field(1, 8, 2, "certno", &ct_b).is_err());
        let opener_b = Opener::new(suite, &ctx(), &wrapped, "110000", |id| {
            (*id == b.key_id()).then_some(&b)
        })?;
        assert_eq!(
            opener_b.open_field(1, 8, 2, "certno", &ct_b)?,
            b"440101198001010018"
        );
        Ok(())
    }

    #[test]
    fn wrong_recipient_key_and_wrong_dept_are_refused() -> Result<()> {
        for suite in Suite::ALL {
            let (a, _b, _sealer, wrapped) = setup(suite)?;
            let stranger = EncryptionSecret::generate(suite)?;
            // A node claiming dept 440000 but holding another key cannot unwrap.
            assert!(matches!(
                Opener::new(suite, &ctx(), &wrapped, "440000", |_| Some(&stranger)),
                Err(CryptoError::OpenFailed { .. })
            ));
            // A relay (another dept) is not a recipient at all.
            assert!(matches!(
                Opener::new(suite, &ctx(), &wrapped, "100000", |_| Some(&a)),
                Err(CryptoError::NotARecipient { .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn a_wrapped_key_of_the_other_suite_is_refused_naming_both() -> Result<()> {
        let (a, _b, _sealer, wrapped) = setup(Suite::Gm)?;
        let e = Opener::new(Suite::Intl, &ctx(), &wrapped, "440000", |_| Some(&a))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("gm") && e.contains("intl"), "{e}");
        let intl_key = EncryptionSecret::generate(Suite::Intl)?;
        let r = Recipient {
            dept: "440000".into(),
            public: intl_key.public(),
        };
        assert!(matches!(
            Sealer::new(Suite::Gm, &ctx(), &[r]),
            Err(CryptoError::SuiteMismatch { .. })
        ));
        Ok(())
    }

    // Every byte of a gm wrapped key matters: C1, C3 and C2 are checked by
    // SM2 decryption, and the context digest binds release and recipient.
    #[test]
    fn every_flipped_byte_of_a_gm_wrapped_key_is_refused() -> Result<()> {
        let (a, _b, _sealer, wrapped) = setup(Suite::Gm)?;
        assert_eq!(wrapped[0].ephemeral.len(), 65);
        assert_eq!(wrapped[0].wrapped.len(), 80);
        for i in 0..(65 + 80) {
            let mut w = wrapped.clone();
            if i < 65 {
                w[0].ephemeral[i] ^= 0x01;
            } else {
                w[0].wrapped[i - 65] ^= 0x01;
            }
            assert!(
                Opener::new(Suite::Gm, &ctx(), &w[..1], "440000", |_| Some(&a)).is_err(),
                "byte {i}"
            );
        }
        Ok(())
    }

    #[test]
    fn moved_truncated_or_flipped_ciphertexts_fail() -> Result<()> {
        for suite in Suite::ALL {
            moved_truncated_or_flipped_ciphertexts_fail_in(suite)?;
        }
        Ok(())
    }

    fn moved_truncated_or_flipped_ciphertexts_fail_in(suite: Suite) -> Result<()> {
        let (a, _b, sealer, wrapped) = setup(suite)?;
        let mut ct = Vec::new();
        sealer.seal_field(0, 7, 2, "certno", b"110101199003074514", &mut ct)?;
        let opener = Opener::new(suite, &ctx(), &wrapped, "440000", |_| Some(&a))?;
        assert!(
            opener.open_field(0, 8, 2, "certno", &ct).is_err(),
            "moved to another record"
        );
        assert!(
            opener.open_field(0, 7, 2, "psn_no", &ct).is_err(),
            "moved to another field name"
        );
        assert!(
            opener.open_field(0, 7, 3, "certno", &ct).is_err(),
            "moved to another field slot"
        );
        assert!(
            opener
                .open_field(0, 7, 2, "certno", &ct[..ct.len() - 1])
                .is_err(),
            "truncated"
        );
        let mut flipped = ct.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x80;
        assert!(
            opener.open_field(0, 7, 2, "certno", &flipped).is_err(),
            "tag bit flipped"
        );
        let other_release = ReleaseContext {
            release_id: [8u8; 16],
            ..ctx()
        };
        assert!(
            Opener::new(suite, &other_release, &wrapped, "440000", |_| Some(&a)).is_err(),
            "other release"
        );
        Ok(())
    }

    #[test]
    fn unknown_suite_is_refused() -> Result<()> {
        let (a, _b, _sealer, mut wrapped) = setup(Suite::Intl)?;
        wrapped[0].suite = 3;
        assert!(matches!(
            Opener::new(Suite::Intl, &ctx(), &wrapped, "440000", |_| Some(&a)),
            Err(CryptoError::UnknownSuite(3))
        ));
        Ok(())
    }

    #[test]
    fn nonces_are_unique_across_a_million_fields() {
        let mut seen = HashSet::with_capacity(1 << 20);
        for record in 0..(1u64 << 17) {
            for field in 0..8u32 {
                assert!(seen.insert(field_nonce(record, field)));
            }
        }
        assert_eq!(seen.len(), 1 << 20);
    }

    // RFC 5869 appendix A, test cases 1-3 (SHA-256).
    #[test]
    fn hkdf_matches_rfc5869_vectors() -> Result<()> {
        let h = |s: &str| hex::decode(s).unwrap_or_default();
        let cases = [
            (
                "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
                "000102030405060708090a0b0c",
                "f0f1f2f3f4f5f6f7f8f9",
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
            ),
            (
                concat!(
                    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
                    "404142434445464748494a4b4c4d4e4f"
                ),
                concat!(
                    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f",
                    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
                    "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
                ),
                concat!(
                    "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf",
                    "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef",
                    "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
                ),
                concat!(
                    "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c",
                    "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71",
                    "cc30c58179ec3e87c14c01d5c1f3434f1d87"
                ),
            ),
            (
                "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
                "",
                "",
                "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
            ),
        ];
        for (ikm, salt, info, okm) in cases {
            let want = h(okm);
            let mut got = vec![0u8; want.len()];
            hkdf_sha256(&h(salt), &h(ikm), &[&h(info)], &mut got)?;
            assert_eq!(got, want);
        }
        Ok(())
    }
}
