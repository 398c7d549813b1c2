//! Service definitions: the request and response of an online call between
//! departments, classified like dataset fields, with the fields sealed end to
//! end for the message's recipient, limits, and the rules that keep core data,
//! not-shareable data and clear sensitive fields off the wire. The format is in
//! `docs/schema-format.md` ("Services"); `schemas/medical_insurance/
//! settlement_calc.toml` is the worked example.

use crate::error::SchemaErrors;
use crate::schema::{
    Field, Grade, IdentifierClass, PiClass, RawField, SharingClass, Validator, parse_validated,
    valid_id,
};
use pdx_crypto::{Digest, Suite};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use toml::Spanned;

/// Largest request or response body a definition may allow (bytes of JSON).
pub const MAX_BODY_LIMIT: u32 = 1024 * 1024;
/// Longest timeout a definition may declare (ms).
pub const MAX_TIMEOUT_MS: u32 = 60_000;
/// Defaults when a definition names no limits.
pub const DEFAULT_BODY_LIMIT: u32 = 64 * 1024;
/// Default timeout (ms).
pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;

/// One field of a request or response.
#[derive(Clone, Debug)]
pub struct MessageField {
    /// The field: type, nullability, classes.
    pub field: Field,
    /// Sealed end to end for the message's recipient (the provider for a
    /// request, the consumer for a response): relays see ciphertext only.
    pub sealed: bool,
}

/// Which message of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Consumer to provider.
    Request,
    /// Provider to consumer.
    Response,
}

impl Direction {
    /// `request` or `response`.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

/// A validated service definition.
#[derive(Clone, Debug)]
pub struct ServiceDef {
    /// Service id (`medical_insurance.settlement_calc`).
    pub id: String,
    /// Version; a call names it and the provider refuses another.
    pub version: u32,
    /// Title.
    pub title: String,
    /// GB/T 43697 grade of what the service carries.
    pub grade: Grade,
    /// Sharing class.
    pub sharing: SharingClass,
    /// Whether it carries personal information.
    pub personal_information: bool,
    /// Legal basis recorded in audit entries.
    pub legal_basis: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Request fields, in declaration order.
    pub request: Vec<MessageField>,
    /// Response fields.
    pub response: Vec<MessageField>,
    /// Largest request body accepted at the gateway (bytes of JSON).
    pub max_request_bytes: u32,
    /// Largest response body accepted from the backend.
    pub max_response_bytes: u32,
    /// How long the provider waits for its backend (ms).
    pub timeout_ms: u32,
    /// The network suite's hash of the source: both ends must hold the same definition.
    pub digest: Digest,
    /// The source text.
    pub source: String,
}

/// A message's values by field name; `None` is null. Values are the canonical
/// text forms the field types validate (decimals as written, dates
/// `YYYY-MM-DD`).
pub type Values = BTreeMap<String, Option<String>>;

impl ServiceDef {
    /// Parses and validates a definition; `file` names it in errors.
    pub fn parse(source: &str, file: &str, suite: Suite) -> Result<ServiceDef, SchemaErrors> {
        parse_validated(source, file, |v, raw: RawServiceFile| {
            build(v, raw, source, suite)
        })
    }

    /// Whether `source` is a service definition rather than a dataset schema.
    pub fn is_service_source(source: &str) -> bool {
        source
            .lines()
            .any(|l| l.trim_start().starts_with("[service]"))
    }

    /// The fields of one message.
    pub fn fields(&self, dir: Direction) -> &[MessageField] {
        match dir {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }

    /// The declared body limit for one message.
    pub fn max_bytes(&self, dir: Direction) -> u32 {
        match dir {
            Direction::Request => self.max_request_bytes,
            Direction::Response => self.max_response_bytes,
        }
    }

    /// Checks a message against the definition: no unknown field, every
    /// non-nullable field present, every value valid for its type. Returns
    /// every problem, each naming the field; values are never quoted (they
    /// may be personal data).
    pub fn validate(&self, dir: Direction, values: &Values) -> Result<(), Vec<String>> {
        let fields = self.fields(dir);
        let mut problems = Vec::new();
        for name in values.keys() {
            if !fields.iter().any(|f| &f.field.name == name) {
                problems.push(format!(
                    "{} field {name:?} is not in service {} version {}",
                    dir.label(),
                    self.id,
                    self.version
                ));
            }
        }
        for f in fields {
            match values.get(&f.field.name).and_then(Option::as_deref) {
                None | Some("") if !f.field.nullable => problems.push(format!(
                    "{} field {} is required (not nullable)",
                    dir.label(),
                    f.field.name
                )),
                None | Some("") => {}
                Some(v) => {
                    if let Err(why) = f.field.ty.validate(v) {
                        problems.push(format!(
                            "{} field {} ({}): {why}",
                            dir.label(),
                            f.field.name,
                            f.field.ty.name()
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceFile {
    service: Spanned<RawService>,
    #[serde(default)]
    request: Vec<Spanned<RawField>>,
    #[serde(default)]
    response: Vec<Spanned<RawField>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    id: Spanned<String>,
    version: Spanned<i64>,
    title: String,
    grade: Grade,
    sharing: SharingClass,
    personal_information: bool,
    legal_basis: Option<String>,
    description: Option<String>,
    max_request_bytes: Option<Spanned<i64>>,
    max_response_bytes: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
}

fn limit(
    v: &mut Validator<'_>,
    raw: Option<Spanned<i64>>,
    key: &str,
    default: u32,
    max: u32,
) -> u32 {
    let Some(r) = raw else {
        return default;
    };
    let at = r.span().start;
    match u32::try_from(*r.get_ref()) {
        Ok(n) if n > 0 && n <= max => n,
        _ => {
            v.err(at, key, format!("must be between 1 and {max}"));
            default
        }
    }
}

fn build(
    v: &mut Validator<'_>,
    raw: RawServiceFile,
    source: &str,
    suite: Suite,
) -> Option<ServiceDef> {
    let span = raw.service.span().start;
    let s = raw.service.into_inner();
    if !valid_id(s.id.get_ref()) {
        v.err(
            s.id.span().start,
            "service.id",
            "use letters, digits, '.', '-' or '_' (at most 64)",
        );
    }
    let version = match u32::try_from(*s.version.get_ref()) {
        Ok(n) if n >= 1 => n,
        _ => {
            v.err(
                s.version.span().start,
                "service.version",
                "must be a positive integer",
            );
            1
        }
    };
    // Core data and not-shareable data never leave the owner: no service may carry them.
    if s.grade == Grade::Core {
        v.err(
            span,
            "service.grade",
            "rule core-never-leaves: a service cannot carry core data (GB/T 43697); it never leaves its owner",
        );
    }
    if s.sharing == SharingClass::NotShareable {
        v.err(
            span,
            "service.sharing",
            "rule not-shareable: a service cannot carry data whose sharing class forbids any release",
        );
    }
    let max_request_bytes = limit(
        v,
        s.max_request_bytes,
        "service.max_request_bytes",
        DEFAULT_BODY_LIMIT,
        MAX_BODY_LIMIT,
    );
    let max_response_bytes = limit(
        v,
        s.max_response_bytes,
        "service.max_response_bytes",
        DEFAULT_BODY_LIMIT,
        MAX_BODY_LIMIT,
    );
    let timeout_ms = limit(
        v,
        s.timeout_ms,
        "service.timeout_ms",
        DEFAULT_TIMEOUT_MS,
        MAX_TIMEOUT_MS,
    );
    let mut messages = Vec::with_capacity(2);
    for (table, raw_fields) in [("request", raw.request), ("response", raw.response)] {
        if raw_fields.is_empty() {
            v.err(
                span,
                table,
                format!("a service needs at least one [[{table}]] field"),
            );
        }
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(raw_fields.len());
        for f in raw_fields {
            let at = f.span().start;
            let f = f.into_inner();
            let sealed = f.sealed.unwrap_or(false);
            let name = f.name.get_ref().clone();
            let Some(field) = v.field(table, at, f, &mut seen, s.personal_information) else {
                continue;
            };
            // Direct identifiers and sensitive PI travel only sealed for the
            // recipient: a relay must never read them.
            let class = if field.pi == PiClass::SensitivePersonal {
                Some("sensitive-personal")
            } else if field.identifier == IdentifierClass::DirectIdentifier {
                Some("direct-identifier")
            } else {
                None
            };
            if let (Some(class), false) = (class, sealed) {
                v.err(
                    at,
                    format!("{table}.{name}"),
                    format!("rule no-clear-{class}: a {class} field travels only sealed: set sealed = true"),
                );
            }
            out.push(MessageField { field, sealed });
        }
        messages.push(out);
    }
    let response = messages.pop().unwrap_or_default();
    let request = messages.pop().unwrap_or_default();
    Some(ServiceDef {
        id: s.id.into_inner(),
        version,
        title: s.title,
        grade: s.grade,
        sharing: s.sharing,
        personal_information: s.personal_information,
        legal_basis: s.legal_basis,
        description: s.description,
        request,
        response,
        max_request_bytes,
        max_response_bytes,
        timeout_ms,
        digest: suite.digest(source.as_bytes()),
        source: source.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../medical_insurance/settlement_calc.toml");

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn shipped_settlement_calc_definition_is_valid() -> Result<(), SchemaErrors> {
        let d = ServiceDef::parse(EXAMPLE, "settlement_calc.toml", pdx_crypto::Suite::Intl)?;
        assert_eq!(d.id, "medical_insurance.settlement_calc");
        assert!(ServiceDef::is_service_source(EXAMPLE));
        for name in ["psn_no", "certno", "psn_name"] {
            let f = d.request.iter().find(|f| f.field.name == name);
            assert!(f.is_some_and(|f| f.sealed), "{name} must be sealed");
        }
        Ok(())
    }

    fn errors_of(src: &str) -> Vec<String> {
        match ServiceDef::parse(src, "t.toml", pdx_crypto::Suite::Intl) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.into_iter()
                    .map(|e| format!("{}: {}", e.key, e.message))
                    .collect()
            }
        }
    }

    const BASE: &str = r#"
[service]
id = "t.svc"
version = 1
title = "t"
grade = "important"
sharing = "conditional"
personal_information = true

[[request]]
name = "certno"
type = "resident-id"
identifier = "direct-identifier"
pi = "sensitive-personal"
sealed = true

[[response]]
name = "amount"
type = "decimal"
precision = 12
scale = 2
identifier = "other"
pi = "personal"
"#;

    #[test]
    fn core_not_shareable_and_clear_sensitive_fields_are_refused() {
        assert!(errors_of(BASE).is_empty());
        let core = BASE.replace("grade = \"important\"", "grade = \"core\"");
        assert!(
            errors_of(&core)
                .iter()
                .any(|e| e.contains("core-never-leaves"))
        );
        let ns = BASE.replace("sharing = \"conditional\"", "sharing = \"not-shareable\"");
        assert!(errors_of(&ns).iter().any(|e| e.contains("not-shareable")));
        let clear = BASE.replace("sealed = true\n", "");
        assert!(
            errors_of(&clear)
                .iter()
                .any(|e| e.starts_with("request.certno")
                    && e.contains("no-clear-sensitive-personal"))
        );
        let big = BASE.replace("version = 1", "version = 1\nmax_request_bytes = 2000000");
        assert!(
            errors_of(&big)
                .iter()
                .any(|e| e.starts_with("service.max_request_bytes"))
        );
        let none = BASE.replace("[[response]]", "[[ignored]]");
        assert!(!errors_of(&none).is_empty());
    }

    #[test]
    fn messages_are_validated_field_by_field_without_quoting_values() -> Result<(), SchemaErrors> {
        let d = ServiceDef::parse(BASE, "t.toml", pdx_crypto::Suite::Intl)?;
        assert!(
            d.validate(
                Direction::Request,
                &values(&[("certno", "11010519491231002X")])
            )
            .is_ok()
        );
        let bad = d
            .validate(
                Direction::Request,
                &values(&[("certno", "110105194912310021"), ("extra", "1")]),
            )
            .err()
            .unwrap_or_default();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad.iter().all(|p| !p.contains("110105194912310021")));
        let missing = d.validate(Direction::Request, &Values::new());
        assert!(missing.is_err());
        assert!(
            d.validate(Direction::Response, &values(&[("amount", "12.345")]))
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn dataset_schemas_refuse_sealed() {
        let src = r#"
[dataset]
id = "d"
title = "d"
grade = "general"
sharing = "unconditional"
personal_information = false

[[field]]
name = "a"
type = "string"
identifier = "other"
pi = "none"
sealed = true
"#;
        let e = crate::Schema::parse(src, "d.toml", pdx_crypto::Suite::Intl)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("encrypt_for"), "{e}");
    }
}
