use thiserror::Error;

/// A problem in a schema file, located by line and key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct SchemaError {
    /// Schema file name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// Dotted key path, e.g. `profile.analytics.fields.brdy`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// All problems found in one schema (checking continues past the first).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{} problem(s) in schema:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
pub struct SchemaErrors(pub Vec<SchemaError>);

/// A release refused by a classification or privacy rule.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum RuleViolation {
    /// GB/T 43697 core data never leaves the owner.
    #[error(
        "dataset {dataset}, profile {profile}: rule core-never-leaves: the dataset is graded core data (GB/T 43697) and cannot be released outside its owner"
    )]
    CoreData {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
    },
    /// A `not-shareable` dataset never leaves the owner.
    #[error(
        "dataset {dataset}, profile {profile}: rule not-shareable: the dataset's sharing class forbids any release outside the owner"
    )]
    NotShareable {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
    },
    /// Direct identifiers and sensitive personal information cannot leave in clear.
    #[error(
        "dataset {dataset}, profile {profile}, field {field}: rule no-clear-{class}: a {class} field cannot be `keep` in a profile released outside the owner; use encrypt-for (its lawful recipient), pseudonymize, suppress or drop"
    )]
    ClearIdentifier {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
        /// Field.
        field: String,
        /// `direct-identifier` or `sensitive-personal`.
        class: &'static str,
    },
    /// Internal profiles are for local inspection only.
    #[error(
        "dataset {dataset}, profile {profile}: rule internal-profile: the profile's scope is internal and it cannot be sent to {recipient}"
    )]
    InternalProfile {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
        /// Who asked.
        recipient: String,
    },
    /// Conditional sharing needs a data-sharing agreement.
    #[error(
        "dataset {dataset}, profile {profile}: rule conditional-needs-agreement: the dataset is shareable only under a data-sharing agreement; give --agreement"
    )]
    NeedsAgreement {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
    },
    /// `encrypt-for` recipients without a verified key on the producing node.
    #[error(
        "dataset {dataset}, profile {profile}, field {field}: rule encrypt-for-needs-key: node {node}, which produces the release, holds no verified encryption key for {} recipient(s): {}; on node {node} run `pdx keys fetch --peer DEPT` for each of them (or `pdx keys fetch --peer RELAY --of {}` through a peer that holds their key documents), then retry",
        recipients.len(),
        recipients.join(", "),
        recipients.join(",")
    )]
    MissingRecipientKey {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
        /// Field.
        field: String,
        /// The producing node's department (where the keys must be fetched).
        node: String,
        /// Every recipient without a key.
        recipients: Vec<String>,
    },
    /// A record's recipient could not be derived.
    #[error(
        "dataset {dataset}, profile {profile}, field {field}, record {record}: rule encrypt-for-recipient: {reason}"
    )]
    BadRecipient {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
        /// Field.
        field: String,
        /// Record index.
        record: u64,
        /// Why.
        reason: String,
    },
    /// k-anonymity / l-diversity cannot be met within the suppression budget.
    #[error(
        "dataset {dataset}, profile {profile}: rule privacy-model: reaching k={k}{l} needs suppressing {suppressed} of {total} records ({rate:.2}%), over the budget of {budget:.2}%"
    )]
    PrivacyModel {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
        /// Required k.
        k: u32,
        /// Required l, formatted (`, l=3 on diag_code` or empty).
        l: String,
        /// Records that would be suppressed.
        suppressed: u64,
        /// Records in the dataset.
        total: u64,
        /// Percentage suppressed.
        rate: f64,
        /// Budget percentage.
        budget: f64,
        /// The full report, for the steward.
        report: Box<crate::report::ReleaseReport>,
    },
    /// An incremental release was asked of a profile with a privacy model:
    /// k-anonymity and l-diversity hold per release, not over the union of
    /// increments a recipient holds, so pdx refuses rather than leak.
    #[error(
        "dataset {dataset}, profile {profile}: rule privacy-model: the profile requires k={k} or l-diversity, which an incremental release cannot guarantee over everything the recipient already holds; fetch a full release (without --incremental)"
    )]
    IncrementalPrivacyModel {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
        /// Required k.
        k: u32,
    },
    /// A value cannot be generalised as the profile says.
    #[error(
        "dataset {dataset}, profile {profile}, field {field}, record {record}: rule generalize: value {value:?} {reason}"
    )]
    Generalize {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
        /// Field.
        field: String,
        /// Record index.
        record: u64,
        /// Offending value (masked for personal fields).
        value: String,
        /// Why.
        reason: String,
    },
    /// The profile does not exist.
    #[error("dataset {dataset} has no profile {profile}; it has: {known}")]
    UnknownProfile {
        /// Dataset.
        dataset: String,
        /// Profile asked for.
        profile: String,
        /// Profiles declared.
        known: String,
    },
}
