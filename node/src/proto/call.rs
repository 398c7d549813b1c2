//! Online service calls (specified in `docs/protocol.md` §7): one
//! bidirectional stream per call. The caller (a consumer, or a hub relaying
//! one) sends `Call`; the other side answers `CallResponse` or `Error`, then
//! the stream ends. Both messages carry documents signed by the department
//! that made them, with its certificate, so the evidence holds whoever
//! relayed it.
//!
//! This module is sans-IO: message bodies with their structural checks, and
//! the [`CallerExchange`] machine (what the caller may receive and when it
//! gives up), driven by `net` and tested here without sockets.

pub use super::msg::{Call, CallResponse};
use super::msg::{ErrorCode, ErrorMsg, Message};
use pdx_crypto::Digest;
use pdx_crypto::envelope::WrappedKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest idempotency key (bytes).
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// Most fields in one message.
pub const MAX_FIELDS: usize = 256;
/// Longest field value (bytes), clear or sealed.
pub const MAX_VALUE: usize = 64 * 1024;

/// The consumer's signed request (domain `call-request`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequestBody {
    /// 16 random bytes chosen by the consumer; names the call everywhere.
    #[serde(with = "serde_bytes")]
    pub call_id: Vec<u8>,
    /// Service id.
    pub service: String,
    /// Service version.
    pub version: u32,
    /// BLAKE3 of the definition's source: both ends hold the same one.
    pub definition: Digest,
    /// Calling department (must be the signer's certificate's).
    pub consumer: String,
    /// Providing department.
    pub provider: String,
    /// Chosen by the caller (e.g. the settlement id): one effect per key.
    pub idempotency_key: String,
    /// When the consumer signed (ms since the epoch).
    pub time_ms: u64,
    /// How long the consumer waits for the answer (ms): a hub waits no
    /// longer for the provider.
    pub timeout_ms: u32,
    /// Fields in clear (relays read them), by name; null fields are absent.
    pub fields: BTreeMap<String, String>,
    /// Fields sealed for the provider, by name.
    pub sealed: BTreeMap<String, serde_bytes::ByteBuf>,
    /// The data key of `sealed`, wrapped for the provider (absent when
    /// nothing is sealed).
    pub key: Option<WrappedKey>,
}

/// What the provider's backend made of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Outcome {
    /// The backend answered with a valid response.
    Ok,
    /// The backend failed (unreachable, refused, non-2xx status).
    BackendError,
    /// The backend did not answer within the service's timeout.
    Timeout,
    /// The backend's answer violates the response schema; it was not forwarded.
    InvalidResponse,
}

impl Outcome {
    /// The label used in audit entries and gateway errors.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BackendError => "backend-error",
            Outcome::Timeout => "timeout",
            Outcome::InvalidResponse => "invalid-response",
        }
    }
}

/// The provider's signed response (domain `call-response`), bound to the
/// request it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResponseBody {
    /// The request's call id.
    #[serde(with = "serde_bytes")]
    pub call_id: Vec<u8>,
    /// Service id.
    pub service: String,
    /// Service version.
    pub version: u32,
    /// Calling department.
    pub consumer: String,
    /// Providing department (must be the signer's certificate's).
    pub provider: String,
    /// Digest of the signed request answered ([`Signed::digest`]).
    pub request: Digest,
    /// The request's idempotency key.
    pub idempotency_key: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Why, when the outcome is not `ok` (never a field value).
    pub detail: String,
    /// When the provider signed (ms since the epoch).
    pub time_ms: u64,
    /// Fields in clear.
    pub fields: BTreeMap<String, String>,
    /// Fields sealed for the consumer.
    pub sealed: BTreeMap<String, serde_bytes::ByteBuf>,
    /// Their data key, wrapped for the consumer.
    pub key: Option<WrappedKey>,
}

/// A structural problem in a call message (before any signature is checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_fields(
    what: &str,
    fields: &BTreeMap<String, String>,
    sealed: &BTreeMap<String, serde_bytes::ByteBuf>,
    key: Option<&WrappedKey>,
) -> Result<(), Malformed> {
    if fields.len() + sealed.len() > MAX_FIELDS {
        return Err(Malformed(format!("{what}: more than {MAX_FIELDS} fields")));
    }
    if let Some(name) = fields.keys().find(|k| sealed.contains_key(*k)) {
        return Err(Malformed(format!(
            "{what}: field {name:?} both clear and sealed"
        )));
    }
    if fields.values().any(|v| v.len() > MAX_VALUE) || sealed.values().any(|v| v.len() > MAX_VALUE)
    {
        return Err(Malformed(format!(
            "{what}: a value exceeds {MAX_VALUE} bytes"
        )));
    }
    if sealed.is_empty() != key.is_none() {
        return Err(Malformed(format!(
            "{what}: sealed fields and the wrapped key come together"
        )));
    }
    Ok(())
}

impl CallRequestBody {
    /// Structural checks every receiver (hub or provider) makes.
    pub fn check(&self) -> Result<(), Malformed> {
        if self.call_id.len() != 16 {
            return Err(Malformed("call id is not 16 bytes".into()));
        }
        if self.idempotency_key.is_empty() || self.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(Malformed(format!(
                "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
            )));
        }
        if self.consumer == self.provider {
            return Err(Malformed(
                "consumer and provider are the same department".into(),
            ));
        }
        check_fields("request", &self.fields, &self.sealed, self.key.as_ref())
    }
}

impl CallResponseBody {
    /// Structural checks, and the binding to the request it must answer.
    pub fn check_answers(
        &self,
        request: &CallRequestBody,
        digest: &Digest,
    ) -> Result<(), Malformed> {
        let bound = self.call_id == request.call_id
            && self.service == request.service
            && self.version == request.version
            && self.consumer == request.consumer
            && self.provider == request.provider
            && self.idempotency_key == request.idempotency_key
            && &self.request == digest;
        if !bound {
            return Err(Malformed(
                "the response is not bound to the request it answers (call id, parties, key or digest differ)"
                    .into(),
            ));
        }
        check_fields("response", &self.fields, &self.sealed, self.key.as_ref())
    }
}

/// What the caller gets back.
#[derive(Debug, Clone, PartialEq)]
pub enum CallerEvent {
    /// A response (its signatures and binding still to be checked).
    Response(Box<CallResponse>),
    /// Refused before any response was signed.
    Refused(ErrorMsg),
}

/// Why a call ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerFailure {
    /// Nothing came back within the deadline.
    Timeout,
    /// The other side sent something a call cannot receive.
    Unexpected(String),
}

impl std::fmt::Display for CallerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallerFailure::Timeout => f.write_str("no answer before the deadline"),
            CallerFailure::Unexpected(w) => f.write_str(w),
        }
    }
}

impl std::error::Error for CallerFailure {}

/// The caller's side of one call: sends `Call`, accepts exactly one
/// `CallResponse` or `Error` before the deadline.
#[derive(Debug)]
pub struct CallerExchange {
    deadline: Instant,
    done: bool,
}

impl CallerExchange {
    /// Starts a call at `now` that gives up after `timeout`; returns the machine
    /// and the message to send.
    pub fn start(call: Call, now: Instant, timeout: Duration) -> (Self, Message) {
        (
            CallerExchange {
                deadline: now + timeout,
                done: false,
            },
            Message::Call(Box::new(call)),
        )
    }

    /// When the driver must call [`CallerExchange::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.done).then_some(self.deadline)
    }

    /// The deadline passed (if `now` is past it).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), CallerFailure> {
        if !self.done && now >= self.deadline {
            self.done = true;
            return Err(CallerFailure::Timeout);
        }
        Ok(())
    }

    /// A message arrived on the call's stream.
    pub fn handle(&mut self, m: Message) -> Result<CallerEvent, CallerFailure> {
        if self.done {
            return Err(CallerFailure::Unexpected(
                "a message after the call ended".into(),
            ));
        }
        self.done = true;
        match m {
            Message::CallResponse(r) => Ok(CallerEvent::Response(r)),
            Message::Error(e) => Ok(CallerEvent::Refused(e)),
            other => Err(CallerFailure::Unexpected(format!(
                "expected CallResponse or Error, got {:?}",
                other.msg_type()
            ))),
        }
    }
}

/// The answering side: the first message of the stream must be a `Call`.
pub fn expect_call(first: Message) -> Result<Call, ErrorMsg> {
    match first {
        Message::Call(c) => Ok(*c),
        other => Err(ErrorMsg {
            code: ErrorCode::BadRequest,
            message: format!("expected Call, got {:?}", other.msg_type()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::FrameDecoder;
    use pdx_crypto::wire::Signed;
    use pdx_crypto::{SignatureDomain, SigningKey};

    fn body() -> CallRequestBody {
        CallRequestBody {
            call_id: vec![7; 16],
            service: "s".into(),
            version: 1,
            definition: Digest([1; 32]),
            consumer: "440000".into(),
            provider: "110000".into(),
            idempotency_key: "K1".into(),
            time_ms: 1,
            timeout_ms: 1000,
            fields: BTreeMap::from([("a".to_string(), "1".to_string())]),
            sealed: BTreeMap::new(),
            key: None,
        }
    }

    fn call() -> Result<Call, Box<dyn std::error::Error>> {
        let k = SigningKey::generate(pdx_crypto::Suite::Intl)?;
        Ok(Call {
            request: Signed::sign(SignatureDomain::CallRequest, &k, &body())?,
            certificate: vec![1, 2, 3],
            key_document: None,
        })
    }

    #[test]
    fn call_frames_use_the_two_byte_type_header_and_round_trip()
    -> Result<(), Box<dyn std::error::Error>> {
        let m = Message::Call(Box::new(call()?));
        let bytes = m.encode()?;
        assert_eq!(&bytes[4..7], &[0x82, 0x18, 24]);
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        let f = d.next_frame()?.ok_or("no frame")?;
        assert_eq!(Message::decode(f.msg_type, &f.payload)?, m);
        Ok(())
    }

    #[test]
    fn non_canonical_type_headers_are_refused() {
        // Type 5 written in the two-byte form, and 0x19 (a 16-bit integer).
        for header in [[0x82u8, 0x18, 5], [0x82, 0x19, 0]] {
            let mut bytes = 3u32.to_be_bytes().to_vec();
            bytes.extend_from_slice(&header);
            let mut d = FrameDecoder::new();
            d.push(&bytes);
            assert!(d.next_frame().is_err(), "{header:?}");
        }
    }

    #[test]
    fn caller_accepts_one_answer_and_times_out_otherwise() -> Result<(), Box<dyn std::error::Error>>
    {
        let t0 = Instant::now();
        let (mut m, first) = CallerExchange::start(call()?, t0, Duration::from_millis(50));
        assert_eq!(first.msg_type(), crate::proto::frame::MsgType::Call);
        assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_millis(50)));
        assert!(m.handle_timeout(t0 + Duration::from_millis(10)).is_ok());
        let refused = m.handle(Message::error(ErrorCode::RateLimited, "slow down"))?;
        assert!(matches!(refused, CallerEvent::Refused(e) if e.code == ErrorCode::RateLimited));
        assert!(
            m.handle(Message::error(ErrorCode::Internal, "again"))
                .is_err()
        );
        assert_eq!(m.poll_timeout(), None);

        let (mut m, _) = CallerExchange::start(call()?, t0, Duration::from_millis(50));
        assert_eq!(
            m.handle_timeout(t0 + Duration::from_millis(50)),
            Err(CallerFailure::Timeout)
        );
        let (mut m, _) = CallerExchange::start(call()?, t0, Duration::from_millis(50));
        assert!(matches!(
            m.handle(Message::Call(Box::new(call()?))),
            Err(CallerFailure::Unexpected(_))
        ));
        Ok(())
    }

    #[test]
    fn structural_checks_refuse_what_no_honest_caller_sends() {
        assert!(body().check().is_ok());
        let mut b = body();
        b.call_id = vec![1; 15];
        assert!(b.check().is_err());
        let mut b = body();
        b.idempotency_key = "k".repeat(MAX_IDEMPOTENCY_KEY + 1);
        assert!(b.check().is_err());
        let mut b = body();
        b.provider = b.consumer.clone();
        assert!(b.check().is_err());
        let mut b = body();
        b.sealed
            .insert("a".into(), serde_bytes::ByteBuf::from(vec![0; 32]));
        assert!(
            b.check().is_err(),
            "sealed without a key, and a field twice"
        );
        let b = body();
        let r = CallResponseBody {
            call_id: b.call_id.clone(),
            service: b.service.clone(),
            version: 1,
            consumer: b.consumer.clone(),
            provider: b.provider.clone(),
            request: Digest([3; 32]),
            idempotency_key: b.idempotency_key.clone(),
            outcome: Outcome::Ok,
            detail: String::new(),
            time_ms: 2,
            fields: BTreeMap::new(),
            sealed: BTreeMap::new(),
            key: None,
        };
        assert!(r.check_answers(&b, &Digest([3; 32])).is_ok());
        assert!(r.check_answers(&b, &Digest([4; 32])).is_err());
    }
}
