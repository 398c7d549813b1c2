//! Classification rules, enforced fail-closed before any release.

use crate::error::RuleViolation;
use crate::schema::{
    Grade, IdentifierClass, PiClass, Profile, Schema, Scope, SharingClass, Treatment,
};

/// Field-level rules of an external profile: direct identifiers and sensitive
/// personal information never leave in clear.
pub fn field_rules(schema: &Schema, profile: &Profile) -> Vec<RuleViolation> {
    let mut out = Vec::new();
    if profile.scope != Scope::External {
        return out;
    }
    for (f, t) in schema.fields.iter().zip(&profile.treatments) {
        if *t != Treatment::Keep {
            continue;
        }
        let class = if f.identifier == IdentifierClass::DirectIdentifier {
            Some("direct-identifier")
        } else if f.pi == PiClass::SensitivePersonal {
            Some("sensitive-personal")
        } else {
            None
        };
        if let Some(class) = class {
            out.push(RuleViolation::ClearIdentifier {
                dataset: schema.dataset.id.clone(),
                profile: profile.name.clone(),
                field: f.name.clone(),
                class,
            });
        }
    }
    out
}

/// Every rule for releasing `profile` of a dataset to another department.
/// Recipient keys and the privacy model are checked later, by the engine.
pub fn check_external_release(
    schema: &Schema,
    profile: &Profile,
    recipient: &str,
    agreement: Option<&str>,
) -> Result<(), RuleViolation> {
    let dataset = schema.dataset.id.clone();
    let name = profile.name.clone();
    if schema.dataset.grade == Grade::Core {
        return Err(RuleViolation::CoreData {
            dataset,
            profile: name,
        });
    }
    if schema.dataset.sharing == SharingClass::NotShareable {
        return Err(RuleViolation::NotShareable {
            dataset,
            profile: name,
        });
    }
    if profile.scope == Scope::Internal {
        return Err(RuleViolation::InternalProfile {
            dataset,
            profile: name,
            recipient: recipient.to_string(),
        });
    }
    if schema.dataset.sharing == SharingClass::Conditional && agreement.is_none_or(str::is_empty) {
        return Err(RuleViolation::NeedsAgreement {
            dataset,
            profile: name,
        });
    }
    if let Some(v) = field_rules(schema, profile).into_iter().next() {
        return Err(v);
    }
    Ok(())
}
