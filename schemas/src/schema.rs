//! The schema format (TOML) and its validated model.
//!
//! A schema declares the dataset (GB/T 43697 grade, sharing class, whether it
//! holds personal information), every field (type, nullability, identifier class,
//! PIPL class) and named release profiles that give every field one treatment
//! plus an optional privacy model (k, l, suppression budget). The format is
//! documented in `docs/schema-format.md`; `schemas/medical_insurance/settlement.toml`
//! is the worked example.

use crate::error::{SchemaError, SchemaErrors};
use crate::types::FieldType;
use pdx_crypto::{Digest, Suite};
use regex::Regex;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use toml::Spanned;

/// GB/T 43697-2024 data grade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grade {
    /// 核心数据: never leaves the owner.
    Core,
    /// 重要数据.
    Important,
    /// 一般数据.
    General,
}

/// Government data sharing class (政务数据共享属性).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharingClass {
    /// 无条件共享.
    Unconditional,
    /// 有条件共享: needs a data-sharing agreement.
    Conditional,
    /// 不予共享.
    NotShareable,
}

/// Role of a field in re-identification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentifierClass {
    /// Identifies a person on its own (name, ID number, insured person number).
    DirectIdentifier,
    /// Identifies in combination (birth date, sex, region...): k-anonymity is over these.
    QuasiIdentifier,
    /// The attribute to protect (diagnosis): l-diversity is over one of these.
    Sensitive,
    /// Anything else.
    Other,
}

/// PIPL class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PiClass {
    /// Not personal information.
    None,
    /// Personal information (PIPL art. 4).
    Personal,
    /// Sensitive personal information (PIPL art. 28: health, financial accounts, ID...).
    SensitivePersonal,
}

/// Where a profile's releases may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Released to other departments (the rules apply).
    #[default]
    External,
    /// Local inspection and export only.
    Internal,
}

impl IdentifierClass {
    /// Label used in schemas and reports.
    pub fn label(self) -> &'static str {
        match self {
            IdentifierClass::DirectIdentifier => "direct-identifier",
            IdentifierClass::QuasiIdentifier => "quasi-identifier",
            IdentifierClass::Sensitive => "sensitive",
            IdentifierClass::Other => "other",
        }
    }
}

impl PiClass {
    /// Label used in schemas and reports.
    pub fn label(self) -> &'static str {
        match self {
            PiClass::None => "none",
            PiClass::Personal => "personal",
            PiClass::SensitivePersonal => "sensitive-personal",
        }
    }
}

/// How a generalising treatment coarsens a value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Generalization {
    /// Date/datetime -> `YYYY-MM`.
    Month,
    /// Date/datetime -> `YYYY-Qn`.
    Quarter,
    /// Date/datetime -> `YYYY`.
    Year,
    /// Integer age -> `[lo-hi]` bands of `width`, everything at or above `top` -> `top+`.
    AgeBand {
        /// Band width in years.
        width: u32,
        /// Top-coding threshold.
        top: u32,
    },
    /// 6-digit admdvs code -> prefecture `XXXX00`.
    Prefecture,
    /// 6-digit admdvs code -> province `XX0000`.
    Province,
    /// ICD-10 code -> 3-character category (`J18.900` -> `J18`).
    Icd10Category,
    /// Number -> nearest multiple of `step` (in units of 10^-scale).
    Round {
        /// Step in units.
        step: i128,
        /// Scale of the field.
        scale: u8,
    },
    /// Number -> clamp into [min, max], marking clamped values `<=min` / `>=max`.
    TopBottom {
        /// Bottom code in units.
        min: Option<i128>,
        /// Top code in units.
        max: Option<i128>,
        /// Scale of the field.
        scale: u8,
    },
    /// Code -> its parent at a declared hierarchy level.
    Hierarchy {
        /// Level name.
        level: String,
    },
}

/// How a per-record recipient department is derived from a field value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeptMap {
    /// The value is the department code.
    Identity,
    /// 6-digit admdvs -> its province code `XX0000`, which is the department code.
    AdmdvsProvince,
}

/// Who a sealed field is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecipientRule {
    /// A fixed department.
    Dept(String),
    /// Taken per record from another field.
    FromField {
        /// Index of the source field.
        field: usize,
        /// Mapping from value to department code.
        map: DeptMap,
    },
}

/// What happens to a field in a release.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Treatment {
    /// Released as is.
    Keep,
    /// Not released.
    Drop,
    /// Released as a fixed mask.
    Suppress {
        /// The mask.
        mask: String,
    },
    /// Keyed BLAKE3 pseudonym under the agreement's key for this field.
    Pseudonymize,
    /// Coarsened.
    Generalize(Generalization),
    /// Sealed for a recipient (field encryption).
    EncryptFor(RecipientRule),
    /// Never released in clear; usable only in homomorphic aggregates.
    AggregateOnly,
}

impl Treatment {
    /// Short label for reports and audit entries.
    pub fn label(&self) -> String {
        match self {
            Treatment::Keep => "keep".into(),
            Treatment::Drop => "drop".into(),
            Treatment::Suppress { .. } => "suppress".into(),
            Treatment::Pseudonymize => "pseudonymize".into(),
            Treatment::Generalize(g) => format!(
                "generalize:{}",
                match g {
                    Generalization::Month => "month".to_string(),
                    Generalization::Quarter => "quarter".into(),
                    Generalization::Year => "year".into(),
                    Generalization::AgeBand { width, top } =>
                        format!("age-band({width},top {top})"),
                    Generalization::Prefecture => "prefecture".into(),
                    Generalization::Province => "province".into(),
                    Generalization::Icd10Category => "icd10-category".into(),
                    Generalization::Round { step, scale } =>
                        format!("round({})", crate::types::units_to_decimal(*step, *scale)),
                    Generalization::TopBottom { .. } => "top-bottom".into(),
                    Generalization::Hierarchy { level } => format!("hierarchy({level})"),
                }
            ),
            Treatment::EncryptFor(RecipientRule::Dept(d)) => format!("encrypt-for:{d}"),
            Treatment::EncryptFor(RecipientRule::FromField { .. }) => {
                "encrypt-for:per-record".into()
            }
            Treatment::AggregateOnly => "aggregate-only".into(),
        }
    }

    /// Whether the field appears in released records.
    pub fn is_output(&self) -> bool {
        !matches!(self, Treatment::Drop | Treatment::AggregateOnly)
    }
}

/// A declared code hierarchy: level name -> (code -> parent).
pub type Hierarchy = BTreeMap<String, BTreeMap<String, String>>;

/// A validated field.
#[derive(Clone, Debug)]
pub struct Field {
    /// Name (a CSV column).
    pub name: String,
    /// Type.
    pub ty: FieldType,
    /// Whether empty values are allowed.
    pub nullable: bool,
    /// Identifier class.
    pub identifier: IdentifierClass,
    /// PIPL class.
    pub pi: PiClass,
    /// Code hierarchy levels.
    pub hierarchy: Hierarchy,
    /// Description.
    pub description: Option<String>,
}

impl Field {
    /// `pi/identifier` classification text for audit entries.
    pub fn classification(&self) -> String {
        format!("{}/{}", self.pi.label(), self.identifier.label())
    }
}

/// l-diversity requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LDiversity {
    /// Index of the sensitive field.
    pub field: usize,
    /// Minimum distinct values per equivalence class.
    pub min: u32,
}

/// A validated release profile.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Scope.
    pub scope: Scope,
    /// k (1 = no k-anonymity requirement).
    pub k: u32,
    /// Optional distinct l-diversity.
    pub l: Option<LDiversity>,
    /// Fraction of records that may be suppressed.
    pub max_suppression: f64,
    /// Treatment per field (same order as the schema's fields).
    pub treatments: Vec<Treatment>,
    /// Legal basis recorded in audit entries.
    pub legal_basis: Option<String>,
}

/// Dataset-level declarations.
#[derive(Clone, Debug)]
pub struct DatasetInfo {
    /// Schema id (datasets imported under it get their own ids).
    pub id: String,
    /// Title.
    pub title: String,
    /// Owner department code; `None` means "the importing department" (schemas
    /// shared by many departments, like the national settlement schema).
    pub owner: Option<String>,
    /// Grade.
    pub grade: Grade,
    /// Sharing class.
    pub sharing: SharingClass,
    /// Whether it holds personal information.
    pub personal_information: bool,
    /// Description.
    pub description: Option<String>,
    /// Default legal basis.
    pub legal_basis: Option<String>,
    /// Index of the field whose province must be the importing department's
    /// (`treatment_region`): a province's extract holds only what it treated.
    pub treatment_region: Option<usize>,
    /// Two region fields whose provinces must differ (`cross_region`):
    /// records within one province are not cross-province and are excluded
    /// (counted).
    pub cross_region: Option<(usize, usize)>,
}

/// A validated schema.
#[derive(Clone, Debug)]
pub struct Schema {
    /// Dataset declarations.
    pub dataset: DatasetInfo,
    /// Fields in CSV order.
    pub fields: Vec<Field>,
    /// Profiles by name.
    pub profiles: BTreeMap<String, Profile>,
    /// The network suite's hash (BLAKE3 or SM3) of the schema source.
    pub digest: Digest,
    /// The schema source text (travels with releases so receivers can check it).
    pub source: String,
}

impl Schema {
    /// Index of the field called `name`.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The profile called `name`, or a rule error listing the known ones.
    pub fn profile(&self, name: &str) -> Result<&Profile, crate::RuleViolation> {
        self.profiles
            .get(name)
            .ok_or_else(|| crate::RuleViolation::UnknownProfile {
                dataset: self.dataset.id.clone(),
                profile: name.to_string(),
                known: self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Parses and validates a schema; `file` names it in errors.
    pub fn parse(source: &str, file: &str, suite: Suite) -> Result<Schema, SchemaErrors> {
        parse_validated(source, file, |v, raw: RawSchema| {
            v.build(raw, source, suite)
        })
    }
}

/// Parses `source` as TOML into `R` (a syntax error is one located problem),
/// then builds the model with a [`Validator`] that collects every problem.
pub(crate) fn parse_validated<R: serde::de::DeserializeOwned, T>(
    source: &str,
    file: &str,
    build: impl FnOnce(&mut Validator<'_>, R) -> Option<T>,
) -> Result<T, SchemaErrors> {
    let raw: R = toml::from_str(source).map_err(|e| {
        let line = e.span().map(|s| line_of(source, s.start)).unwrap_or(0);
        SchemaErrors(vec![SchemaError {
            file: file.to_string(),
            line,
            key: String::from("(syntax)"),
            message: e.message().to_string(),
        }])
    })?;
    let mut v = Validator {
        source,
        file,
        errors: Vec::new(),
    };
    let built = build(&mut v, raw);
    if v.errors.is_empty() {
        built.ok_or_else(|| SchemaErrors(Vec::new()))
    } else {
        Err(SchemaErrors(v.errors))
    }
}

/// 1-based line of byte `offset` in `source`.
pub fn line_of(source: &str, offset: usize) -> usize {
    source.as_bytes()[..offset.min(source.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    dataset: Spanned<RawDataset>,
    #[serde(rename = "field")]
    fields: Vec<Spanned<RawField>>,
    #[serde(default, rename = "profile")]
    profiles: BTreeMap<String, Spanned<RawProfile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    id: Spanned<String>,
    title: String,
    owner: Option<Spanned<String>>,
    grade: Grade,
    sharing: SharingClass,
    personal_information: bool,
    description: Option<String>,
    legal_basis: Option<String>,
    treatment_region: Option<Spanned<String>>,
    cross_region: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCodes {
    List(Vec<String>),
    Labelled(BTreeMap<String, String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawField {
    pub(crate) name: Spanned<String>,
    #[serde(rename = "type")]
    ty: Spanned<String>,
    #[serde(default)]
    nullable: bool,
    identifier: IdentifierClass,
    pi: PiClass,
    max_length: Option<usize>,
    regex: Option<Spanned<String>>,
    min: Option<i64>,
    max: Option<i64>,
    precision: Option<u8>,
    scale: Option<u8>,
    codes: Option<RawCodes>,
    #[serde(default)]
    hierarchy: BTreeMap<String, BTreeMap<String, String>>,
    description: Option<String>,
    /// Service messages only: sealed end to end for the message's recipient.
    pub(crate) sealed: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawL {
    field: Spanned<String>,
    min: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    description: Option<String>,
    #[serde(default)]
    scope: Scope,
    k: Option<u32>,
    l: Option<RawL>,
    max_suppression: Option<f64>,
    legal_basis: Option<String>,
    fields: BTreeMap<String, Spanned<RawTreatment>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTreatment {
    Simple(String),
    Table(RawTreatmentTable),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRecipient {
    Dept(String),
    FromField { field: String, map: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTreatmentTable {
    generalize: Option<String>,
    suppress: Option<String>,
    encrypt_for: Option<RawRecipient>,
    width: Option<u32>,
    top: Option<u32>,
    step: Option<String>,
    min: Option<String>,
    max: Option<String>,
    level: Option<String>,
}

pub(crate) struct Validator<'a> {
    pub(crate) source: &'a str,
    pub(crate) file: &'a str,
    pub(crate) errors: Vec<SchemaError>,
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 64
}

/// Department and dataset ids: letters, digits, `-`, `.`, `_`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && !s.starts_with(['-', '.'])
}

impl Validator<'_> {
    pub(crate) fn err(
        &mut self,
        offset: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(SchemaError {
            file: self.file.to_string(),
            line: line_of(self.source, offset),
            key: key.into(),
            message: message.into(),
        });
    }

    fn build(&mut self, raw: RawSchema, source: &str, suite: Suite) -> Option<Schema> {
        let ds_span = raw.dataset.span().start;
        let d = raw.dataset.into_inner();
        if !valid_id(d.id.get_ref()) {
            self.err(
                d.id.span().start,
                "dataset.id",
                "use letters, digits, '.', '-' or '_' (at most 64)",
            );
        }
        if let Some(o) = &d.owner
            && !valid_id(o.get_ref())
        {
            self.err(
                o.span().start,
                "dataset.owner",
                "not a valid department code",
            );
        }
        let mut dataset = DatasetInfo {
            id: d.id.into_inner(),
            title: d.title,
            owner: d.owner.map(Spanned::into_inner),
            grade: d.grade,
            sharing: d.sharing,
            personal_information: d.personal_information,
            description: d.description,
            legal_basis: d.legal_basis,
            treatment_region: None,
            cross_region: None,
        };
        let region_rules = (d.treatment_region, d.cross_region);
        if raw.fields.is_empty() {
            self.err(ds_span, "field", "a schema needs at least one [[field]]");
        }
        let mut fields = Vec::with_capacity(raw.fields.len());
        let mut seen = HashSet::new();
        for f in raw.fields {
            let span = f.span().start;
            let f = f.into_inner();
            if f.sealed.is_some() {
                self.err(
                    span,
                    format!("field.{}.sealed", f.name.get_ref()),
                    "`sealed` applies to service messages; a dataset seals fields with `encrypt_for` in a profile",
                );
            }
            if let Some(field) =
                self.field("field", span, f, &mut seen, dataset.personal_information)
            {
                fields.push(field);
            }
        }
        let field_at = |name: &str| fields.iter().position(|f: &Field| f.name == name);
        let (treatment, cross) = region_rules;
        if let Some(t) = treatment {
            match field_at(t.get_ref()) {
                Some(i) => dataset.treatment_region = Some(i),
                None => self.err(
                    t.span().start,
                    "dataset.treatment_region",
                    format!("no field {:?}", t.get_ref()),
                ),
            }
        }
        if let Some(c) = cross {
            match c.get_ref().as_slice() {
                [a, b] => match (field_at(a), field_at(b)) {
                    (Some(a), Some(b)) if a != b => dataset.cross_region = Some((a, b)),
                    _ => self.err(
                        c.span().start,
                        "dataset.cross_region",
                        "needs two different fields of the schema",
                    ),
                },
                _ => self.err(
                    c.span().start,
                    "dataset.cross_region",
                    "needs exactly two field names",
                ),
            }
        }
        let mut profiles = BTreeMap::new();
        for (name, p) in raw.profiles {
            let span = p.span().start;
            if let Some(profile) = self.profile(&name, span, p.into_inner(), &fields) {
                profiles.insert(name, profile);
            }
        }
        let schema = Schema {
            dataset,
            fields,
            profiles,
            digest: suite.digest(source.as_bytes()),
            source: source.to_string(),
        };
        // Static rule check of every external profile, so `schema check` reports
        // what a release would refuse.
        let violations: Vec<(String, String)> = schema
            .profiles
            .values()
            .filter(|p| p.scope == Scope::External)
            .flat_map(|p| {
                crate::rules::field_rules(&schema, p)
                    .into_iter()
                    .map(|v| (p.name.clone(), v.to_string()))
            })
            .collect();
        for (profile, msg) in violations {
            let offset = find_offset(source, &format!("[profile.{profile}"));
            self.err(offset, format!("profile.{profile}"), msg);
        }
        Some(schema)
    }

    /// Validates one field declaration (`table` names it in errors: `field`,
    /// `request`, `response`).
    pub(crate) fn field(
        &mut self,
        table: &str,
        span: usize,
        f: RawField,
        seen: &mut HashSet<String>,
        personal_information: bool,
    ) -> Option<Field> {
        let name = f.name.get_ref().clone();
        let key = format!("{table}.{name}");
        if !valid_name(&name) {
            self.err(
                f.name.span().start,
                &key,
                "field names use lower-case letters, digits and '_'",
            );
        }
        if !seen.insert(name.clone()) {
            self.err(f.name.span().start, &key, "declared twice");
        }
        if f.pi == PiClass::None && f.identifier == IdentifierClass::DirectIdentifier {
            self.err(span, &key, "a direct identifier is personal information: set pi = \"personal\" or \"sensitive-personal\"");
        }
        if !personal_information && f.pi != PiClass::None {
            self.err(
                span,
                &key,
                "personal_information = false is declared but this field is personal",
            );
        }
        let ty = self.field_type(&f, &key)?;
        Some(Field {
            name,
            ty,
            nullable: f.nullable,
            identifier: f.identifier,
            pi: f.pi,
            hierarchy: f.hierarchy,
            description: f.description,
        })
    }

    fn field_type(&mut self, f: &RawField, key: &str) -> Option<FieldType> {
        let at = f.ty.span().start;
        let ty = match f.ty.get_ref().as_str() {
            "string" => {
                let regex = match &f.regex {
                    None => None,
                    Some(r) => match Regex::new(&format!("^(?:{})$", r.get_ref())) {
                        Ok(re) => Some(re),
                        Err(e) => {
                            self.err(
                                r.span().start,
                                format!("{key}.regex"),
                                format!("invalid regex: {e}"),
                            );
                            return None;
                        }
                    },
                };
                FieldType::String {
                    max_length: f.max_length,
                    regex,
                }
            }
            "integer" => FieldType::Integer {
                min: f.min,
                max: f.max,
            },
            "decimal" => match (f.precision, f.scale) {
                (Some(p), Some(s)) if s <= p && p <= 38 && p > 0 => FieldType::Decimal {
                    precision: p,
                    scale: s,
                },
                _ => {
                    self.err(at, format!("{key}.type"), "decimal needs precision and scale with 0 < precision <= 38 and scale <= precision");
                    return None;
                }
            },
            "date" => FieldType::Date,
            "datetime" => FieldType::DateTime,
            "code" => {
                let (codes, labels): (HashSet<String>, BTreeMap<String, String>) = match &f.codes {
                    Some(RawCodes::List(l)) => (l.iter().cloned().collect(), BTreeMap::new()),
                    Some(RawCodes::Labelled(m)) => (m.keys().cloned().collect(), m.clone()),
                    None => {
                        self.err(
                            at,
                            format!("{key}.codes"),
                            "a code field needs `codes` (a list or a table code = label)",
                        );
                        return None;
                    }
                };
                if codes.is_empty() {
                    self.err(at, format!("{key}.codes"), "the code list is empty");
                }
                for (level, map) in &f.hierarchy {
                    for code in &codes {
                        if !map.contains_key(code) {
                            self.err(
                                at,
                                format!("{key}.hierarchy.{level}"),
                                format!("code {code:?} has no parent at this level"),
                            );
                        }
                    }
                }
                FieldType::Code { codes, labels }
            }
            "resident-id" => FieldType::ResidentId,
            other => {
                self.err(
                    at,
                    format!("{key}.type"),
                    format!("unknown type {other:?}; use string, integer, decimal, date, datetime, code or resident-id"),
                );
                return None;
            }
        };
        if !f.hierarchy.is_empty() && !matches!(ty, FieldType::Code { .. }) {
            self.err(
                at,
                format!("{key}.hierarchy"),
                "only code fields can declare a hierarchy",
            );
        }
        Some(ty)
    }

    fn profile(
        &mut self,
        name: &str,
        span: usize,
        p: RawProfile,
        fields: &[Field],
    ) -> Option<Profile> {
        let key = format!("profile.{name}");
        if !valid_name(name) {
            self.err(
                span,
                &key,
                "profile names use lower-case letters, digits and '_'",
            );
        }
        let k = p.k.unwrap_or(1);
        if k == 0 {
            self.err(span, format!("{key}.k"), "k must be at least 1");
        }
        let max_suppression = p.max_suppression.unwrap_or(0.0);
        if !(0.0..1.0).contains(&max_suppression) {
            self.err(
                span,
                format!("{key}.max_suppression"),
                "must be a fraction in [0, 1)",
            );
        }
        let mut treatments: Vec<Option<Treatment>> = vec![None; fields.len()];
        for (fname, t) in &p.fields {
            let at = t.span().start;
            let fkey = format!("{key}.fields.{fname}");
            let Some(i) = fields.iter().position(|f| &f.name == fname) else {
                self.err(at, &fkey, "no such field in the schema");
                continue;
            };
            if let Some(t) = self.treatment(t.get_ref(), &fields[i], fields, at, &fkey) {
                treatments[i] = Some(t);
            }
        }
        let mut out = Vec::with_capacity(fields.len());
        for (f, t) in fields.iter().zip(treatments) {
            match t {
                Some(t) => out.push(t),
                None => {
                    if p.fields.contains_key(&f.name) {
                        return None; // already reported
                    }
                    self.err(
                        span,
                        format!("{key}.fields"),
                        format!("no treatment for field {}: every field needs one (use \"drop\" to leave it out)", f.name),
                    );
                }
            }
        }
        if out.len() != fields.len() {
            return None;
        }
        let l = match p.l {
            None => None,
            Some(l) => {
                let at = l.field.span().start;
                match fields.iter().position(|f| &f.name == l.field.get_ref()) {
                    None => {
                        self.err(at, format!("{key}.l.field"), "no such field");
                        None
                    }
                    Some(i) => {
                        if fields[i].identifier != IdentifierClass::Sensitive {
                            self.err(at, format!("{key}.l.field"), "l-diversity applies to a field whose identifier class is \"sensitive\"");
                        }
                        if !matches!(out[i], Treatment::Keep | Treatment::Generalize(_)) {
                            self.err(
                                at,
                                format!("{key}.l.field"),
                                "the l-diversity field must be kept or generalised in the profile",
                            );
                        }
                        if l.min < 2 {
                            self.err(at, format!("{key}.l.min"), "l must be at least 2");
                        }
                        Some(LDiversity {
                            field: i,
                            min: l.min,
                        })
                    }
                }
            }
        };
        if k > 1
            && !fields
                .iter()
                .zip(&out)
                .any(|(f, t)| f.identifier == IdentifierClass::QuasiIdentifier && t.is_output())
        {
            self.err(
                span,
                format!("{key}.k"),
                "k-anonymity needs at least one released quasi-identifier",
            );
        }
        Some(Profile {
            name: name.to_string(),
            description: p.description,
            scope: p.scope,
            k,
            l,
            max_suppression,
            treatments: out,
            legal_basis: p.legal_basis,
        })
    }

    fn treatment(
        &mut self,
        raw: &RawTreatment,
        field: &Field,
        fields: &[Field],
        at: usize,
        key: &str,
    ) -> Option<Treatment> {
        match raw {
            RawTreatment::Simple(s) => match s.as_str() {
                "keep" => Some(Treatment::Keep),
                "drop" => Some(Treatment::Drop),
                "suppress" => Some(Treatment::Suppress { mask: "*".into() }),
                "pseudonymize" => Some(Treatment::Pseudonymize),
                "aggregate-only" => Some(Treatment::AggregateOnly),
                other => {
                    self.err(
                        at,
                        key,
                        format!(
                            "unknown treatment {other:?}; use keep, drop, suppress, pseudonymize, aggregate-only, or a table with generalize / encrypt_for / suppress"
                        ),
                    );
                    None
                }
            },
            RawTreatment::Table(t) => {
                let kinds = usize::from(t.generalize.is_some())
                    + usize::from(t.suppress.is_some())
                    + usize::from(t.encrypt_for.is_some());
                if kinds != 1 {
                    self.err(
                        at,
                        key,
                        "a treatment table needs exactly one of generalize, suppress, encrypt_for",
                    );
                    return None;
                }
                if let Some(mask) = &t.suppress {
                    return Some(Treatment::Suppress { mask: mask.clone() });
                }
                if let Some(r) = &t.encrypt_for {
                    return self
                        .recipient(r, fields, at, key)
                        .map(Treatment::EncryptFor);
                }
                let g = t.generalize.as_deref().unwrap_or_default();
                self.generalization(g, t, field, at, key)
                    .map(Treatment::Generalize)
            }
        }
    }

    fn recipient(
        &mut self,
        r: &RawRecipient,
        fields: &[Field],
        at: usize,
        key: &str,
    ) -> Option<RecipientRule> {
        match r {
            RawRecipient::Dept(d) => {
                if valid_id(d) {
                    Some(RecipientRule::Dept(d.clone()))
                } else {
                    self.err(
                        at,
                        format!("{key}.encrypt_for"),
                        format!("{d:?} is not a department code"),
                    );
                    None
                }
            }
            RawRecipient::FromField { field, map } => {
                let Some(i) = fields.iter().position(|f| &f.name == field) else {
                    self.err(
                        at,
                        format!("{key}.encrypt_for.field"),
                        format!("no field {field:?}"),
                    );
                    return None;
                };
                let map = match map.as_str() {
                    "identity" => DeptMap::Identity,
                    "admdvs-province" => DeptMap::AdmdvsProvince,
                    other => {
                        self.err(
                            at,
                            format!("{key}.encrypt_for.map"),
                            format!("unknown map {other:?}; use identity or admdvs-province"),
                        );
                        return None;
                    }
                };
                if fields[i].nullable {
                    self.err(
                        at,
                        format!("{key}.encrypt_for.field"),
                        format!("recipient field {field} must not be nullable"),
                    );
                }
                Some(RecipientRule::FromField { field: i, map })
            }
        }
    }

    fn generalization(
        &mut self,
        g: &str,
        t: &RawTreatmentTable,
        field: &Field,
        at: usize,
        key: &str,
    ) -> Option<Generalization> {
        let ty = &field.ty;
        let is_date = matches!(ty, FieldType::Date | FieldType::DateTime);
        let is_text = matches!(ty, FieldType::String { .. } | FieldType::Code { .. });
        let scale = match ty {
            FieldType::Decimal { scale, .. } => Some(*scale),
            FieldType::Integer { .. } => Some(0),
            _ => None,
        };
        let need = |ok: bool, v: &mut Self, what: &str| {
            if !ok {
                v.err(
                    at,
                    format!("{key}.generalize"),
                    format!("{g} applies to {what} fields, not {}", ty.name()),
                );
            }
            ok
        };
        let units =
            |v: &mut Self, s: &Option<String>, name: &str, scale: u8| -> Option<Option<i128>> {
                match s {
                    None => Some(None),
                    Some(s) => match crate::types::decimal_to_units(s, scale) {
                        Some(u) => Some(Some(u)),
                        None => {
                            v.err(
                                at,
                                format!("{key}.{name}"),
                                format!("{s:?} is not a number with at most {scale} decimals"),
                            );
                            None
                        }
                    },
                }
            };
        match g {
            "month" => need(is_date, self, "date/datetime").then_some(Generalization::Month),
            "quarter" => need(is_date, self, "date/datetime").then_some(Generalization::Quarter),
            "year" => need(is_date, self, "date/datetime").then_some(Generalization::Year),
            "age-band" => {
                if !need(matches!(ty, FieldType::Integer { .. }), self, "integer") {
                    return None;
                }
                let (width, top) = (t.width.unwrap_or(10), t.top.unwrap_or(90));
                if width == 0 || top == 0 {
                    self.err(at, key, "age-band needs width > 0 and top > 0");
                    return None;
                }
                Some(Generalization::AgeBand { width, top })
            }
            "prefecture" => {
                need(is_text, self, "string/code").then_some(Generalization::Prefecture)
            }
            "province" => need(is_text, self, "string/code").then_some(Generalization::Province),
            "icd10-category" => {
                need(is_text, self, "string/code").then_some(Generalization::Icd10Category)
            }
            "round" => {
                let scale = scale.filter(|_| need(scale.is_some(), self, "integer/decimal"))?;
                let step = units(self, &t.step, "step", scale)??;
                if step <= 0 {
                    self.err(at, format!("{key}.step"), "step must be positive");
                    return None;
                }
                Some(Generalization::Round { step, scale })
            }
            "top-bottom" => {
                let scale = scale.filter(|_| need(scale.is_some(), self, "integer/decimal"))?;
                let (min, max) = (
                    units(self, &t.min, "min", scale)?,
                    units(self, &t.max, "max", scale)?,
                );
                if min.is_none() && max.is_none() {
                    self.err(at, key, "top-bottom needs min, max or both");
                    return None;
                }
                Some(Generalization::TopBottom { min, max, scale })
            }
            "hierarchy" => {
                let Some(level) = &t.level else {
                    self.err(
                        at,
                        format!("{key}.level"),
                        "hierarchy generalisation needs `level`",
                    );
                    return None;
                };
                if !field.hierarchy.contains_key(level) {
                    self.err(
                        at,
                        format!("{key}.level"),
                        format!("field {} declares no hierarchy level {level:?}", field.name),
                    );
                    return None;
                }
                Some(Generalization::Hierarchy {
                    level: level.clone(),
                })
            }
            other => {
                self.err(
                    at,
                    format!("{key}.generalize"),
                    format!("unknown generalisation {other:?}; use month, quarter, year, age-band, prefecture, province, icd10-category, round, top-bottom or hierarchy"),
                );
                None
            }
        }
    }
}

fn find_offset(source: &str, needle: &str) -> usize {
    source.find(needle).unwrap_or(0)
}
