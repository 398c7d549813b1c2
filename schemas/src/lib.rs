//! Schemas, classification rules and de-identification for pdx.
//!
//! - [`schema`]: the TOML schema format and its validated model (GB/T 43697
//!   grade, sharing class, per-field identifier and PIPL classes, profiles).
//! - [`import`]: streaming CSV import (UTF-8 or GB18030) with row-level errors.
//! - [`rules`]: fail-closed release rules.
//! - [`engine`]: the two-pass de-identification engine (keyed pseudonyms,
//!   generalisation, suppression, k-anonymity and l-diversity).
//!
//! Invariant: no release is produced unless every rule and the privacy model
//! were checked and hold; when something cannot be checked, the release is refused.
#![forbid(unsafe_code)]

pub mod engine;
mod error;
pub mod generalize;
pub mod import;
pub mod report;
pub mod resident_id;
pub mod rowcodec;
pub mod rules;
pub mod schema;
pub mod service;
pub mod types;

pub use error::{RuleViolation, SchemaError, SchemaErrors};
pub use schema::Schema;
