//! The release report: what the de-identification engine did and what risk remains.

use serde::{Deserialize, Serialize};

/// Per-field line of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldReport {
    /// Field name.
    pub name: String,
    /// Treatment label.
    pub treatment: String,
    /// `pi/identifier` classification.
    pub classification: String,
    /// Whether the field is in the released records.
    pub released: bool,
}

/// What a release did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseReport {
    /// Dataset id.
    pub dataset: String,
    /// Profile.
    pub profile: String,
    /// Agreement the pseudonyms are keyed to.
    pub agreement: String,
    /// Records in the source.
    pub records_in: u64,
    /// Records released.
    pub records_out: u64,
    /// Records suppressed to reach k and l.
    pub records_suppressed: u64,
    /// Required k.
    pub k_required: u32,
    /// Smallest released equivalence class (0 when nothing is released).
    pub k_achieved: u64,
    /// Required l (0 = none).
    pub l_required: u32,
    /// Sensitive field of the l requirement.
    pub l_field: Option<String>,
    /// Fewest distinct sensitive values in a released class (counted up to a cap).
    pub l_achieved: u64,
    /// Quasi-identifiers the classes are formed over.
    pub quasi_identifiers: Vec<String>,
    /// Equivalence classes before suppression.
    pub classes_total: u64,
    /// Equivalence classes released.
    pub classes_released: u64,
    /// Size of the smallest released class.
    pub smallest_class: u64,
    /// Prosecutor re-identification risk: max over records of 1 / class size.
    pub risk_prosecutor_max: f64,
    /// Prosecutor risk averaged over released records.
    pub risk_prosecutor_avg: f64,
    /// Per-field treatment.
    pub fields: Vec<FieldReport>,
    /// Recipients of encrypted fields.
    pub recipients: Vec<String>,
    /// Suppression budget (fraction).
    pub max_suppression: f64,
}
