//! Grants: which department may fetch which dataset, under which profile,
//! purpose, agreement and until when. Every change is audited; every request is
//! checked against them and refusals are audited.

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::proto::msg::ErrorCode;
use crate::store::CF_GRANTS;
use pdx_audit::store::now_ms;
use pdx_audit::{EventKind, Subject};
use serde::{Deserialize, Serialize};

/// A grant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    /// Grant id.
    pub id: String,
    /// Dataset.
    pub dataset: String,
    /// Recipient department.
    pub to: String,
    /// Profile.
    pub profile: String,
    /// Purpose.
    pub purpose: String,
    /// Data-sharing agreement id.
    pub agreement: Option<String>,
    /// Expiry (ms since the epoch).
    pub expires_ms: Option<u64>,
    /// Created (ms).
    pub created_ms: u64,
    /// Operator who granted.
    pub operator: String,
    /// Revoked (ms), if revoked.
    pub revoked_ms: Option<u64>,
}

/// What to grant.
#[derive(Clone, Debug)]
pub struct GrantSpec {
    /// Dataset.
    pub dataset: String,
    /// Recipient department.
    pub to: String,
    /// Profile.
    pub profile: String,
    /// Purpose.
    pub purpose: String,
    /// Agreement.
    pub agreement: Option<String>,
    /// Expiry (ms).
    pub expires_ms: Option<u64>,
}

/// Parses an expiry: `YYYY-MM-DD` (end of that day, UTC), RFC 3339, or a
/// relative `+N[s|m|h|d]`.
pub fn parse_expiry(s: &str) -> Result<u64> {
    let bad = || {
        NodeError::Invalid(format!(
            "--expires {s:?}: use YYYY-MM-DD, an RFC 3339 time, or +N with s, m, h or d (e.g. +30d)"
        ))
    };
    if let Some(rel) = s.strip_prefix('+') {
        let (num, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: u64 = num.parse().map_err(|_| bad())?;
        let ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        return Ok(now_ms() + n.saturating_mul(ms));
    }
    if let Some((y, m, d)) = pdx_schemas::types::parse_date(s) {
        let date = time::Date::from_calendar_date(
            y,
            time::Month::try_from(m as u8).map_err(|_| bad())?,
            d as u8,
        )
        .map_err(|_| bad())?;
        let end = date.with_hms(23, 59, 59).map_err(|_| bad())?.assume_utc();
        return u64::try_from(end.unix_timestamp() * 1000).map_err(|_| bad());
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    u64::try_from(t.unix_timestamp() * 1000).map_err(|_| bad())
}

/// Creates a grant (audited). The dataset, profile and rules are checked now,
/// so a grant that could never be used is refused at once.
pub fn create(node: &Node, spec: &GrantSpec, operator: &str) -> Result<Grant> {
    crate::pki::validate_dept(&spec.to)?;
    let meta = crate::dataset::meta(node, &spec.dataset)?;
    let schema = meta.schema()?;
    let profile = schema.profile(&spec.profile)?;
    pdx_schemas::rules::check_external_release(
        &schema,
        profile,
        &spec.to,
        spec.agreement.as_deref(),
    )?;
    if spec.to == node.config.dept {
        return Err(NodeError::Invalid(
            "a grant to this node's own department has no effect".into(),
        ));
    }
    let grant = Grant {
        id: hex::encode(pdx_crypto::rng::bytes::<6>()?),
        dataset: spec.dataset.clone(),
        to: spec.to.clone(),
        profile: spec.profile.clone(),
        purpose: spec.purpose.clone(),
        agreement: spec.agreement.clone(),
        expires_ms: spec.expires_ms,
        created_ms: now_ms(),
        operator: operator.to_string(),
        revoked_ms: None,
    };
    node.store.put(CF_GRANTS, grant.id.as_bytes(), &grant)?;
    let mut d = node.draft(EventKind::Grant, operator);
    d.subject = Subject {
        dataset: Some(grant.dataset.clone()),
        release: None,
        digest: Some(meta.digest),
    };
    d.counterparty = Some(grant.to.clone());
    d.agreement = grant.agreement.clone();
    d.purpose = Some(grant.purpose.clone());
    d.legal_basis = profile.legal_basis.clone();
    d.detail = Some(format!(
        "grant {} profile {} expires {}",
        grant.id,
        grant.profile,
        grant
            .expires_ms
            .map(|e| e.to_string())
            .unwrap_or_else(|| "never".into())
    ));
    if let Err(e) = node.log(d) {
        let mut b = rocksdb::WriteBatch::default();
        b.delete_cf(node.store.cf(CF_GRANTS)?, grant.id.as_bytes());
        node.store.write(b)?;
        return Err(e);
    }
    Ok(grant)
}

/// Every grant.
pub fn list(node: &Node) -> Result<Vec<Grant>> {
    Ok(node
        .store
        .scan::<Grant>(CF_GRANTS, b"")?
        .into_iter()
        .map(|(_, g)| g)
        .collect())
}

/// Revokes a grant (audited).
pub fn revoke(node: &Node, id: &str, operator: &str) -> Result<Grant> {
    let mut g: Grant = node.store.get(CF_GRANTS, id.as_bytes())?.ok_or_else(|| {
        NodeError::NotFound(format!("no grant {id:?}; `pdx grant list` shows them"))
    })?;
    if g.revoked_ms.is_some() {
        return Err(NodeError::Invalid(format!("grant {id} is already revoked")));
    }
    g.revoked_ms = Some(now_ms());
    let mut d = node.draft(EventKind::RevokeGrant, operator);
    d.subject.dataset = Some(g.dataset.clone());
    d.counterparty = Some(g.to.clone());
    d.agreement = g.agreement.clone();
    d.purpose = Some(g.purpose.clone());
    d.detail = Some(format!("grant {id} revoked"));
    node.log(d)?;
    node.store.put(CF_GRANTS, g.id.as_bytes(), &g)?;
    Ok(g)
}

/// Finds the grant that allows `peer` this request, or says precisely why none does.
pub fn authorize(
    node: &Node,
    peer: &str,
    dataset: &str,
    profile: &str,
    agreement: Option<&str>,
    purpose: &str,
) -> std::result::Result<Grant, (ErrorCode, String)> {
    let all = list(node).map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    let mut candidates: Vec<&Grant> = all
        .iter()
        .filter(|g| g.to == peer && g.dataset == dataset && g.profile == profile)
        .collect();
    // Newest first: when none allows the request, the newest grant's reason is reported.
    candidates.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then_with(|| b.id.cmp(&a.id))
    });
    if candidates.is_empty() {
        return Err((
            ErrorCode::NotGranted,
            format!("no grant lets {peer} fetch dataset {dataset} with profile {profile}"),
        ));
    }
    let now = now_ms();
    let mut reason: Option<(ErrorCode, String)> = None;
    for g in candidates {
        let why = if g.agreement.as_deref() != agreement {
            (
                ErrorCode::NotGranted,
                format!(
                    "the grant is under agreement {:?}, the request names {:?}",
                    g.agreement, agreement
                ),
            )
        } else if g.purpose != purpose {
            (
                ErrorCode::NotGranted,
                format!(
                    "the grant is for purpose {:?}, the request names {purpose:?}",
                    g.purpose
                ),
            )
        } else if g.revoked_ms.is_some() {
            (
                ErrorCode::GrantRevoked,
                format!("grant {} was revoked", g.id),
            )
        } else if g.expires_ms.is_some_and(|e| e <= now) {
            (ErrorCode::GrantExpired, format!("grant {} expired", g.id))
        } else {
            return Ok(g.clone());
        };
        reason.get_or_insert(why);
    }
    Err(reason.unwrap_or((ErrorCode::NotGranted, "no grant".into())))
}
