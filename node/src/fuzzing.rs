//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and for the plain
//! tests that run them on every build: each feeds untrusted bytes to one
//! decoder and must never panic, whatever the input.

use crate::proto::frame::FrameDecoder;
use crate::proto::msg::{Message, MsgType};

/// The frame decoder, fed in two pieces (exercising partial frames).
pub fn frame_decoder(data: &[u8]) {
    let split = data
        .first()
        .map(|b| usize::from(*b))
        .unwrap_or(0)
        .min(data.len());
    let mut d = FrameDecoder::new();
    d.push(&data[..split]);
    while let Ok(Some(f)) = d.next_frame() {
        let _ = Message::decode(f.msg_type, &f.payload);
    }
    d.push(&data[split..]);
    while let Ok(Some(f)) = d.next_frame() {
        let _ = Message::decode(f.msg_type, &f.payload);
    }
    let _ = d.finish();
}

/// One message decoder, chosen by the first byte.
pub fn message(data: &[u8]) {
    let Some((&t, payload)) = data.split_first() else {
        return;
    };
    if let Some(mt) = MsgType::from_u8(t % 26) {
        let _ = Message::decode(mt, payload);
    }
}

/// The chunk-records decoder.
pub fn records(data: &[u8]) {
    let fields = data.first().map(|b| usize::from(*b % 32)).unwrap_or(0);
    let _ = crate::records::decode(data.get(1..).unwrap_or_default(), fields, |_, _| Ok(()));
}

/// The audit entry decoder (entries arrive in bundles from other parties).
pub fn audit_entry(data: &[u8]) {
    if let Ok(v) = pdx_audit::EntryView::parse(data) {
        let _ = v.fields();
        let _ = v.to_entry();
    }
    let _ = pdx_audit::Entry::decode(data);
}

/// The admin-socket frame body decoder.
pub fn admin_call(data: &[u8]) {
    let _ = pdx_crypto::wire::from_cbor::<crate::admin::AdminCall>(data, "admin call");
}

/// The decoders of documents peers push with `Submit` (aggregate
/// contributions and sums, settlement confirmations), chosen by the first
/// byte; bodies are decoded too, as they are after a signature verifies.
pub fn submitted_document(data: &[u8]) {
    use crate::service::aggregate::{
        AggregateBody, AggregateSubmission, ContributionBody, ContributionSubmission, QueryBody,
    };
    use crate::service::documents::Certified;
    use pdx_crypto::wire::from_cbor;
    let Some((&which, doc)) = data.split_first() else {
        return;
    };
    fn query_and<B: serde::de::DeserializeOwned>(query: &Certified, document: &Certified) {
        if let Ok(q) = query
            .signed
            .dangerous_decode_unverified::<QueryBody>("query")
        {
            let _ = q.validate();
            let _ = q.slots();
        }
        let _ = document.signed.dangerous_decode_unverified::<B>("document");
    }
    match which % 4 {
        0 => {
            if let Ok(s) = from_cbor::<ContributionSubmission>(doc, "contribution") {
                query_and::<ContributionBody>(&s.query, &s.contribution);
            }
        }
        1 => {
            if let Ok(s) = from_cbor::<AggregateSubmission>(doc, "aggregate") {
                query_and::<AggregateBody>(&s.query, &s.aggregate);
            }
        }
        2 => {
            if let Ok(c) = from_cbor::<Certified>(doc, "confirmation") {
                let _ = c
                    .signed
                    .dangerous_decode_unverified::<crate::service::settle::ConfirmationBody>(
                        "confirmation",
                    );
            }
        }
        _ => {
            if let Ok(c) = from_cbor::<Certified>(doc, "confirmation batch") {
                let _ = c
                    .signed
                    .dangerous_decode_unverified::<crate::service::settle::ConfirmationBatchBody>(
                        "confirmation batch",
                    );
            }
        }
    }
}

/// The online-call decoders: a `Call` or `CallResponse` payload (chosen by
/// the first byte's low bit), then the signed bodies inside and their
/// structural checks, as a hub or provider runs them before any signature.
pub fn call_message(data: &[u8]) {
    use crate::proto::call::{CallRequestBody, CallResponseBody};
    let Some((&t, payload)) = data.split_first() else {
        return;
    };
    let mt = if t & 1 == 0 {
        MsgType::Call
    } else {
        MsgType::CallResponse
    };
    match Message::decode(mt, payload) {
        Ok(Message::Call(c)) => {
            if let Ok(b) = c
                .request
                .dangerous_decode_unverified::<CallRequestBody>("request")
            {
                let _ = b.check();
            }
        }
        Ok(Message::CallResponse(r)) => {
            if let Ok(b) = r
                .response
                .dangerous_decode_unverified::<CallResponseBody>("response")
            {
                let _ = b.check_answers(
                    &CallRequestBody {
                        call_id: b.call_id.clone(),
                        service: b.service.clone(),
                        version: b.version,
                        definition: pdx_crypto::Digest([0; 32]),
                        consumer: b.consumer.clone(),
                        provider: b.provider.clone(),
                        idempotency_key: b.idempotency_key.clone(),
                        time_ms: 0,
                        timeout_ms: 0,
                        fields: Default::default(),
                        sealed: Default::default(),
                        key: None,
                    },
                    &b.request,
                );
            }
        }
        _ => {}
    }
}

/// The gateway's request mapping: JSON from a department's own system,
/// mapped to message values and validated against the shipped settlement
/// calculation service.
pub fn gateway_body(data: &[u8]) {
    use pdx_schemas::service::{Direction, ServiceDef};
    const DEF: &str = include_str!("../../schemas/medical_insurance/settlement_calc.toml");
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let (Ok(values), Ok(def)) = (
        crate::service::calls::values_from_json(Direction::Request, &json),
        ServiceDef::parse(DEF, "settlement_calc.toml", pdx_crypto::Suite::Intl),
    ) {
        let _ = def.validate(Direction::Request, &values);
    }
}

/// A backup archive's header and its plaintext entries
/// (`service::backup`; frames need the passphrase, so the entry parser is
/// fed raw plaintext).
pub fn backup_archive(data: &[u8]) {
    crate::service::backup::fuzz_archive(data);
}

/// The decoders of homomorphic-aggregate proofs and reference strings
/// (`pdx_crypto::he::proof`), chosen by the first byte.
pub fn he_proof(data: &[u8]) {
    use pdx_crypto::he::{Layout, proof};
    match data.split_first() {
        Some((b, rest)) if b & 1 == 0 => {
            let _ = proof::Proof::from_bytes(rest);
        }
        Some((_, rest)) => {
            let _ = proof::Crs::from_bytes(Layout::COMMITTEE, rest);
        }
        None => {}
    }
}
