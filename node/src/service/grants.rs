//! Grants: which department may fetch which dataset, under which profile,
//! purpose, agreement and until when. Every change is written together with
//! its audit entry; every request is checked against them (refusals are
//! audited by the caller). Owns the `grants` family.

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::proto::msg::ErrorCode;
use crate::store::{self, CF_GRANTS};
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
    /// A service grant: the service the recipient may call (`dataset` and
    /// `profile` are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// What to grant (`pdx grant`).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Grant calls of this published service instead of a dataset.
    #[serde(default)]
    pub service: Option<String>,
}

/// Creates a grant (audited). The dataset, profile and rules are checked now,
/// so a grant that could never be used is refused at once.
pub fn create(node: &Node, spec: &GrantSpec, operator: &str) -> Result<Grant> {
    crate::pki::validate_dept(&spec.to)?;
    if spec.service.is_some() {
        return Err(NodeError::Invalid(
            "a service grant is made by `calls::grant` (pdx grant --service)".into(),
        ));
    }
    let meta = super::datasets::meta(node, &spec.dataset)?;
    let schema = meta.schema(node.suite)?;
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
    // A grant that could never be served is refused now, with the numbers.
    if profile.k > 1 || profile.l.is_some() {
        let master = pdx_crypto::pseudonym::PseudonymMaster::from_bytes(
            node.suite,
            *node.keys()?.pseudonym.as_bytes(),
        );
        let engine = pdx_schemas::engine::Engine::new(
            &schema,
            profile,
            spec.agreement.as_deref().unwrap_or_default(),
            &master,
        );
        let range = (0, meta.rows);
        super::deid::count_classes(node, &meta, range, &engine, &crate::progress::NoProgress)?
            .finish()?;
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
        service: None,
    };
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
        expiry_text(grant.expires_ms)
    ));
    store_with_entry(node, &grant, d)?;
    Ok(grant)
}

/// The grant that lets `peer` call `service` now, or why none does.
pub fn authorize_service(
    node: &Node,
    peer: &str,
    service: &str,
) -> std::result::Result<Grant, (ErrorCode, String)> {
    let all = list(node).map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    let mut candidates: Vec<&Grant> = all
        .iter()
        .filter(|g| g.to == peer && g.service.as_deref() == Some(service))
        .collect();
    candidates.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then_with(|| b.id.cmp(&a.id))
    });
    let now = now_ms();
    let mut reason = None;
    for g in candidates {
        if g.revoked_ms.is_some() {
            reason.get_or_insert((
                ErrorCode::GrantRevoked,
                format!("grant {} of service {service} to {peer} was revoked", g.id),
            ));
        } else if g.expires_ms.is_some_and(|e| e <= now) {
            reason.get_or_insert((
                ErrorCode::GrantExpired,
                format!("grant {} of service {service} to {peer} expired", g.id),
            ));
        } else {
            return Ok(g.clone());
        }
    }
    Err(reason.unwrap_or_else(|| {
        (
            ErrorCode::NotGranted,
            format!("no grant lets {peer} call service {service}"),
        )
    }))
}

/// How an expiry reads in a grant's audit entry.
pub fn expiry_text(expires_ms: Option<u64>) -> String {
    expires_ms
        .map(|e| e.to_string())
        .unwrap_or_else(|| "never: no expiry was given".into())
}

/// Stores a new grant with its audit entry, in one durable write.
pub fn store_with_entry(node: &Node, grant: &Grant, entry: pdx_audit::EntryDraft) -> Result<()> {
    node.log_with(
        entry,
        vec![
            node.store
                .put_op(CF_GRANTS, store::grant_key(&grant.id), grant)?,
        ],
    )?;
    Ok(())
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
    let mut g: Grant = node
        .store
        .get(CF_GRANTS, store::grant_key(id))?
        .ok_or_else(|| {
            NodeError::NotFound(format!("no grant {id:?}; `pdx grant list` shows them"))
        })?;
    if g.revoked_ms.is_some() {
        return Err(NodeError::Invalid(format!("grant {id} is already revoked")));
    }
    g.revoked_ms = Some(now_ms());
    let mut d = node.draft(EventKind::RevokeGrant, operator);
    d.subject.dataset = Some(g.service.clone().unwrap_or_else(|| g.dataset.clone()));
    d.counterparty = Some(g.to.clone());
    d.agreement = g.agreement.clone();
    d.purpose = Some(g.purpose.clone());
    d.detail = Some(format!("grant {id} revoked"));
    node.log_with(
        d,
        vec![node.store.put_op(CF_GRANTS, store::grant_key(&g.id), &g)?],
    )?;
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
