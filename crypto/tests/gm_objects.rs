//! Every object pdx signs or seals under the gm suite round-trips, and any
//! flipped byte of it is refused: signed containers (checkpoints, manifests,
//! receipts, documents, calls all use them), key documents, field envelopes
//! with their wrapped keys, blocks at rest, key files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_crypto::atrest::StorageMaster;
use pdx_crypto::envelope::{EncryptionSecret, Opener, Recipient, ReleaseContext, Sealer};
use pdx_crypto::keydoc::{KeyDocument, KeyDocumentBody};
use pdx_crypto::keyfile::{self, KdfCost, KeyKind};
use pdx_crypto::wire::{Signed, from_cbor, to_cbor};
use pdx_crypto::{SignatureDomain, SigningKey, Suite};
use proptest::prelude::*;
use std::sync::LazyLock;

const GM: Suite = Suite::Gm;

static SIGNER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::generate(GM).unwrap());
static RECIPIENT: LazyLock<EncryptionSecret> =
    LazyLock::new(|| EncryptionSecret::generate(GM).unwrap());

fn ctx() -> ReleaseContext {
    ReleaseContext {
        dataset_id: "settlement-2026-10".into(),
        release_id: [4; 16],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_gm_signed_container_verifies_and_any_flipped_byte_is_refused(
        body in proptest::collection::vec(any::<u8>(), 0..200),
        at in any::<usize>(),
        bit in 0u8..8,
    ) {
        let key = &*SIGNER;
        let signed = Signed::sign(SignatureDomain::Manifest, key, &serde_bytes::ByteBuf::from(body.clone())).unwrap();
        prop_assert_eq!(signed.suite, GM);
        let encoded = to_cbor(&signed).unwrap();
        let back: Signed = from_cbor(&encoded, "signed").unwrap();
        let value: serde_bytes::ByteBuf = back.verify(SignatureDomain::Manifest, &key.verifying_key()).unwrap();
        prop_assert_eq!(value.into_vec(), body);
        let mut flipped = encoded.clone();
        let i = at % flipped.len();
        flipped[i] ^= 1 << bit;
        // Either it no longer decodes, or it decodes to something that does
        // not verify as the same container.
        if let Ok(f) = from_cbor::<Signed>(&flipped, "signed") {
            let ok = f.verify::<serde_bytes::ByteBuf>(SignatureDomain::Manifest, &key.verifying_key());
            prop_assert!(ok.is_err() || f == signed, "flipped byte {} accepted", i);
        }
    }

    #[test]
    fn a_gm_key_document_verifies_and_any_flipped_byte_is_refused(
        created in any::<u64>(),
        at in any::<usize>(),
    ) {
        let body = KeyDocumentBody {
            version: 1,
            dept: "440000".into(),
            suite: GM.envelope_id(),
            public: RECIPIENT.public(),
            created_ms: created,
            active: true,
        };
        let doc = KeyDocument::sign(&body, &SIGNER, vec![]).unwrap();
        prop_assert_eq!(doc.verify(&SIGNER.verifying_key(), "440000").unwrap(), body);
        let mut bytes = to_cbor(&doc.signed).unwrap();
        let i = at % bytes.len();
        bytes[i] ^= 0x01;
        if let Ok(f) = from_cbor::<Signed>(&bytes, "signed") {
            let d = KeyDocument { signed: f.clone(), certificate: vec![] };
            prop_assert!(d.verify(&SIGNER.verifying_key(), "440000").is_err() || f == doc.signed);
        }
    }

    #[test]
    fn gm_sealed_fields_open_and_any_flipped_byte_is_refused(
        value in proptest::collection::vec(any::<u8>(), 0..64),
        record in any::<u64>(),
        at in any::<usize>(),
    ) {
        let r = Recipient { dept: "110000".into(), public: RECIPIENT.public() };
        let (sealer, wrapped) = Sealer::new(GM, &ctx(), &[r]).unwrap();
        let mut ct = Vec::new();
        sealer.seal_field(0, record, 3, "certno", &value, &mut ct).unwrap();
        let opener = Opener::new(GM, &ctx(), &wrapped, "110000", |_| Some(&*RECIPIENT)).unwrap();
        prop_assert_eq!(&opener.open_field(0, record, 3, "certno", &ct).unwrap(), &value);
        let mut flipped = ct.clone();
        let i = at % flipped.len();
        flipped[i] ^= 0x80;
        prop_assert!(opener.open_field(0, record, 3, "certno", &flipped).is_err());
        // And any flipped byte of the wrapped key.
        let mut w = wrapped.clone();
        let n = w[0].ephemeral.len() + w[0].wrapped.len();
        let j = at % n;
        if j < w[0].ephemeral.len() { w[0].ephemeral[j] ^= 0x01 } else { w[0].wrapped[j - 65] ^= 0x01 }
        prop_assert!(Opener::new(GM, &ctx(), &w, "110000", |_| Some(&*RECIPIENT)).is_err());
    }

    #[test]
    fn gm_blocks_at_rest_open_and_any_flipped_byte_is_refused(
        block in proptest::collection::vec(any::<u8>(), 1..300),
        n in any::<u64>(),
        at in any::<usize>(),
    ) {
        let key = StorageMaster::from_bytes(GM, [9; 32]).object_key("dataset-rows", b"ds", b"g").unwrap();
        let sealed = key.seal_block(n, &block).unwrap();
        prop_assert_eq!(&key.open_block(n, &sealed).unwrap(), &block);
        let mut flipped = sealed.clone();
        let i = at % flipped.len();
        flipped[i] ^= 0x04;
        prop_assert!(key.open_block(n, &flipped).is_err());
    }

    #[test]
    fn gm_key_files_unlock_and_any_flipped_byte_of_the_sealed_key_is_refused(
        secret in any::<[u8; 32]>(),
        at in any::<usize>(),
    ) {
        let cheap = KdfCost { argon2: (256, 1, 1), pbkdf2_iterations: 100 };
        let file = keyfile::encode_with_cost(GM, KeyKind::Secret32, &secret, Some(b"pw"), cheap).unwrap();
        prop_assert_eq!(&keyfile::decode(GM, &file, KeyKind::Secret32, "k", Some(b"pw")).unwrap()[..], &secret[..]);
        let mut flipped = file.to_vec();
        let i = 8 + at % (flipped.len() - 8);
        flipped[i] ^= 0x01;
        let decoded = keyfile::decode(GM, &flipped, KeyKind::Secret32, "k", Some(b"pw"));
        prop_assert!(decoded.is_err(), "flipped byte {} was accepted", i);
    }
}
