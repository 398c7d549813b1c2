//! Every node command as data (`Request`) and one executor. The CLI runs a
//! request either through the admin socket of a running `pdx serve` (which owns
//! the store) or, when no node runs, in-process: one code path either way.

use crate::dataset::{self, ImportRequest};
use crate::error::{NodeError, Result};
use crate::grants::{self, GrantSpec};
use crate::net::Net;
use crate::progress::Progress;
use crate::proto::msg::ReleaseRequest;
use crate::release::{self, parse_release_id, release_hex};
use pdx_audit::store::now_ms;
use pdx_audit::{EntryView, EventKind};
use pdx_schemas::import::{Encoding, OnError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

/// A command for a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// `pdx import`.
    Import {
        /// Schema file.
        schema: String,
        /// CSV file.
        csv: String,
        /// Dataset id.
        dataset: String,
        /// `utf-8` or `gb18030`.
        encoding: String,
        /// `reject` or `skip`.
        on_error: String,
        /// Rejects file.
        rejects: Option<String>,
    },
    /// `pdx datasets`.
    Datasets,
    /// `pdx grant`.
    Grant {
        /// Dataset.
        dataset: String,
        /// Recipient.
        to: String,
        /// Profile.
        profile: String,
        /// Purpose.
        purpose: String,
        /// Agreement.
        agreement: Option<String>,
        /// Expiry (ms).
        expires_ms: Option<u64>,
    },
    /// `pdx grant list`.
    GrantList,
    /// `pdx grant revoke`.
    GrantRevoke {
        /// Grant id.
        id: String,
    },
    /// `pdx peer add`.
    PeerAdd {
        /// Department.
        dept: String,
        /// Address.
        addr: String,
    },
    /// `pdx peer add` with several peers.
    PeersAdd {
        /// (department, address) pairs.
        peers: Vec<(String, String)>,
    },
    /// `pdx catalog --peer`.
    Catalog {
        /// Peer.
        peer: String,
    },
    /// `pdx fetch`.
    Fetch {
        /// Peer.
        peer: String,
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
        /// Agreement (default: the peer's grant's).
        agreement: Option<String>,
        /// Purpose (default: the peer's grant's).
        purpose: Option<String>,
        /// Retries after a lost connection.
        retries: u32,
    },
    /// `pdx forward`.
    Forward {
        /// Release id (hex).
        release: String,
        /// Recipient (None: every department the sender sealed chunks for).
        to: Option<String>,
        /// Retries after a lost connection.
        retries: u32,
    },
    /// `pdx releases`.
    Releases,
    /// `pdx export`.
    Export {
        /// Release id (hex).
        release: String,
        /// Output CSV.
        out: String,
    },
    /// `pdx release preview`.
    Preview {
        /// Dataset.
        dataset: String,
        /// Profile.
        profile: String,
        /// Agreement.
        agreement: Option<String>,
        /// Output CSV.
        out: String,
        /// Report JSON.
        report: String,
    },
    /// `pdx status`.
    Status,
    /// `pdx crl update`.
    CrlUpdate {
        /// New CRL file.
        crl: String,
    },
    /// `pdx key rotate`.
    KeyRotate {
        /// encryption | signing | pseudonym.
        kind: String,
    },
    /// `pdx key retire`.
    KeyRetire {
        /// Key id.
        key_id: String,
    },
    /// `pdx keys fetch`.
    KeysFetch {
        /// Peer to ask.
        peer: String,
        /// Only these departments' keys.
        of: Vec<String>,
    },
    /// `pdx keys list`.
    KeysList,
    /// `pdx he keygen`.
    HeKeygen(crate::he::QuerySpec),
    /// `pdx he contribute`.
    HeContribute {
        /// Query document file.
        query: String,
        /// Dataset summed.
        dataset: String,
        /// Aggregator department (sent over the network).
        to: String,
        /// Write the submission here instead of sending it.
        out: Option<String>,
    },
    /// `pdx he aggregate`.
    HeAggregate {
        /// Query id.
        query: String,
        /// Key holder department.
        to: String,
        /// Write the submission here instead of sending it.
        out: Option<String>,
    },
    /// `pdx he decrypt`.
    HeDecrypt {
        /// Query id.
        query: String,
    },
    /// `pdx he verify-sum` on a node.
    HeVerifySum {
        /// Query id.
        query: String,
    },
    /// `pdx he export`.
    HeExport {
        /// Query id.
        query: String,
        /// Bundle file.
        out: String,
    },
    /// `pdx he list`.
    HeList,
    /// `pdx submit --file` (file mode of contributions, aggregates, confirmations).
    SubmitFile {
        /// Submission file.
        file: String,
        /// Send it to this peer instead of accepting it here.
        to: Option<String>,
    },
    /// `pdx settle confirm`.
    SettleConfirm {
        /// Release ids (hex).
        releases: Vec<String>,
        /// Every relayed clearing release not confirmed yet.
        all: bool,
        /// Insured registry CSV.
        registry: String,
        /// Amount field.
        amount_field: String,
        /// Clearing node.
        to: String,
        /// Write the submission here instead of sending it.
        out: Option<String>,
    },
    /// `pdx settle clearing`.
    SettleClearing {
        /// Profile of the clearing releases.
        profile: String,
        /// Amount field.
        amount_field: String,
    },
    /// `pdx audit export`.
    AuditExport {
        /// Bundle path.
        out: String,
    },
    /// `pdx audit checkpoint`.
    AuditCheckpoint {
        /// Where to write the signed checkpoint.
        out: Option<String>,
    },
    /// `pdx audit prove`.
    AuditProve {
        /// Entry.
        seq: u64,
    },
    /// `pdx audit consistency`.
    AuditConsistency {
        /// Older size.
        from: u64,
        /// Newer size (default: latest checkpoint).
        to: Option<u64>,
    },
    /// `pdx audit show`.
    AuditShow {
        /// Dataset filter.
        dataset: Option<String>,
        /// Counterparty filter.
        counterparty: Option<String>,
        /// Kind filter.
        kind: Option<String>,
        /// From (ms).
        since_ms: Option<u64>,
        /// Until (ms).
        until_ms: Option<u64>,
        /// At most this many (latest).
        limit: Option<usize>,
    },
}

fn encoding(s: &str) -> Result<Encoding> {
    match s.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" => Ok(Encoding::Utf8),
        "gb18030" | "gbk" => Ok(Encoding::Gb18030),
        other => Err(NodeError::Invalid(format!(
            "--encoding {other:?}: use utf-8 or gb18030"
        ))),
    }
}

fn on_error(s: &str) -> Result<OnError> {
    match s {
        "reject" => Ok(OnError::Reject),
        "skip" => Ok(OnError::Skip),
        other => Err(NodeError::Invalid(format!(
            "--on-error {other:?}: use reject or skip"
        ))),
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| NodeError::Invalid(e.to_string()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Invalid(format!("task failed: {e}")))?
}

/// Whether an error is worth retrying (the connection or the peer went away).
fn retryable(e: &NodeError) -> bool {
    matches!(e, NodeError::Network(_) | NodeError::Peer { .. })
}

/// Runs `attempt` until it succeeds, fails for good, or `retries` retries
/// after lost connections are used up (backing off 1 s, 2 s, 4 s ... 16 s).
async fn retrying<T, F: std::future::Future<Output = Result<T>>>(
    retries: u32,
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T> {
    let mut tried = 0;
    loop {
        match attempt().await {
            Err(e) if retryable(&e) && tried < retries => {
                tried += 1;
                tracing::warn!("{what} interrupted ({e}); retry {tried} of {retries}");
                tokio::time::sleep(std::time::Duration::from_millis(500 << tried.min(5))).await;
            }
            other => return other,
        }
    }
}

/// Runs `req` on the node behind `net`, as `operator`.
pub async fn execute(
    net: &Arc<Net>,
    req: Request,
    operator: &str,
    progress: Arc<dyn Progress>,
) -> Result<Value> {
    let node = net.node.clone();
    let op = operator.to_string();
    match req {
        Request::Import {
            schema,
            csv,
            dataset,
            encoding: enc,
            on_error: oe,
            rejects,
        } => {
            let r = ImportRequest {
                schema_path: schema,
                csv_path: csv,
                dataset,
                encoding: encoding(&enc)?,
                on_error: on_error(&oe)?,
                rejects,
                operator: op,
            };
            let out = blocking(move || dataset::import(&node, &r, progress.as_ref())).await?;
            to_json(&out)
        }
        Request::Datasets => {
            let list = dataset::list(&node)?;
            Ok(Value::Array(
                list.iter()
                    .map(|m| {
                        json!({"dataset": m.id, "schema": m.schema_id, "title": m.title, "rows": m.rows,
                               "digest": m.digest.to_hex(), "imported_ms": m.imported_ms, "source": m.source})
                    })
                    .collect(),
            ))
        }
        Request::Grant {
            dataset,
            to,
            profile,
            purpose,
            agreement,
            expires_ms,
        } => {
            let spec = GrantSpec {
                dataset,
                to,
                profile,
                purpose,
                agreement,
                expires_ms,
            };
            to_json(&blocking(move || grants::create(&node, &spec, &op)).await?)
        }
        Request::GrantList => to_json(&grants::list(&node)?),
        Request::GrantRevoke { id } => {
            to_json(&blocking(move || grants::revoke(&node, &id, &op)).await?)
        }
        Request::PeerAdd { dept, addr } => {
            to_json(&blocking(move || node.add_peer(&dept, &addr, &op)).await?)
        }
        Request::PeersAdd { peers } => to_json(
            &blocking(move || {
                peers
                    .iter()
                    .map(|(d, a)| node.add_peer(d, a, &op))
                    .collect::<Result<Vec<_>>>()
            })
            .await?,
        ),
        Request::Catalog { peer } => to_json(&net.catalog(&peer).await?),
        Request::Fetch {
            peer,
            dataset,
            profile,
            agreement,
            purpose,
            retries,
        } => {
            let (agreement, purpose) = match purpose {
                Some(p) => (agreement, p),
                None => {
                    // Take purpose and agreement from the grant the peer lists for us.
                    let entries = net.catalog(&peer).await?;
                    let matching: Vec<_> = entries
                        .iter()
                        .filter(|e| {
                            e.dataset == dataset
                                && e.profile == profile
                                && (agreement.is_none() || e.agreement == agreement)
                        })
                        .collect();
                    match matching.as_slice() {
                        [one] => (one.agreement.clone(), one.purpose.clone()),
                        [] => {
                            return Err(NodeError::Refused(format!(
                                "{peer} lists no grant for dataset {dataset} with profile {profile} for us (pdx catalog --peer {peer} shows what it grants)"
                            )));
                        }
                        _ => {
                            return Err(NodeError::Invalid(format!(
                                "{peer} grants {dataset}/{profile} for several purposes; choose one with --purpose"
                            )));
                        }
                    }
                }
            };
            let req = ReleaseRequest {
                dataset,
                profile,
                agreement,
                purpose,
            };
            let what = format!("fetch from {peer}");
            let out = retrying(retries, &what, || {
                net.fetch(&peer, &req, &op, progress.as_ref())
            })
            .await?;
            to_json(&out)
        }
        Request::Forward {
            release,
            to,
            retries,
        } => {
            let id = parse_release_id(&release)?;
            let targets = match &to {
                Some(t) => vec![t.clone()],
                None => release::chunk_recipients(&node, &id)?,
            };
            let mut outcomes = Vec::new();
            for to in &targets {
                let what = format!("forward to {to}");
                let o = retrying(retries, &what, || {
                    net.forward(&id, to, &op, progress.as_ref())
                })
                .await?;
                outcomes.push(to_json(&o)?);
            }
            match (to, outcomes.len()) {
                (Some(_), 1) => Ok(outcomes.remove(0)),
                _ => Ok(Value::Array(outcomes)),
            }
        }
        Request::Releases => {
            let out: Vec<Value> = release::out_releases(&node)?
                .iter()
                .map(|r| {
                    json!({"direction": "out", "release": release_hex(&r.release_id), "dataset": r.dataset,
                           "profile": r.profile, "peer": r.recipient, "agreement": r.agreement, "purpose": r.purpose,
                           "records": r.record_count, "chunks": r.chunks, "created_ms": r.created_ms,
                           "deliveries": r.deliveries.iter().map(|d| json!({"to": d.to, "records": d.records,
                               "digest": d.content_digest.to_hex(), "audit_seq": d.audit_seq})).collect::<Vec<_>>()})
                })
                .collect();
            let inr: Vec<Value> = release::in_releases(&node)?
                .iter()
                .map(|r| {
                    json!({"direction": "in", "release": release_hex(&r.release_id), "dataset": r.dataset,
                           "profile": r.profile, "peer": r.from, "sender": r.sender, "agreement": r.agreement,
                           "purpose": r.purpose, "records": r.record_count, "chunks": r.plan.len(),
                           "stored": r.stored, "complete": r.complete,
                           "digest": r.content_digest.map(|d| d.to_hex())})
                })
                .collect();
            Ok(Value::Array(out.into_iter().chain(inr).collect()))
        }
        Request::Export { release, out } => {
            let id = parse_release_id(&release)?;
            to_json(
                &blocking(move || release::export(&node, &id, &out, &op, progress.as_ref()))
                    .await?,
            )
        }
        Request::Preview {
            dataset,
            profile,
            agreement,
            out,
            report,
        } => to_json(
            &blocking(move || {
                crate::preview::preview(
                    &node,
                    &dataset,
                    &profile,
                    agreement.as_deref(),
                    &out,
                    &report,
                    &op,
                    progress.as_ref(),
                )
            })
            .await?,
        ),
        Request::Status => status(net),
        Request::CrlUpdate { crl } => {
            let n = blocking({
                let node = node.clone();
                move || node.update_crl(std::path::Path::new(&crl), &op)
            })
            .await?;
            let closed = net.recheck_connections()?;
            Ok(json!({"crls": n, "connections_closed": closed}))
        }
        Request::KeyRotate { kind } => {
            Ok(json!({"result": blocking(move || node.rotate_key(&kind, &op)).await?}))
        }
        Request::KeyRetire { key_id } => {
            Ok(json!({"result": blocking(move || node.retire_encryption_key(&key_id, &op)).await?}))
        }
        Request::KeysFetch { peer, of } => {
            let (stored, rejected) = net.fetch_keys(&peer, of).await?;
            Ok(json!({"stored": stored, "rejected": rejected}))
        }
        Request::KeysList => {
            let docs = node.all_key_documents(&[])?;
            let mut out = Vec::new();
            for d in docs {
                let b: pdx_crypto::keydoc::KeyDocumentBody =
                    d.signed.dangerous_decode_unverified("key document")?;
                let verified = node
                    .check_cert(&d.certificate)
                    .and_then(|i| Ok(d.verify(&i.identity, &i.dept)?))
                    .is_ok();
                out.push(
                    json!({"dept": b.dept, "key_id": b.key_id().to_hex(), "active": b.active,
                                "created_ms": b.created_ms, "verified_now": verified}),
                );
            }
            Ok(Value::Array(out))
        }
        Request::HeKeygen(spec) => blocking(move || crate::he::keygen(&node, &spec, &op)).await,
        Request::HeContribute {
            query,
            dataset,
            to,
            out,
        } => {
            let doc: crate::docs::Certified = crate::docs::read_file(&query, "he query document")?;
            let (sub, info) =
                blocking(move || crate::he::contribute(&node, &doc, &dataset, &to, &op)).await?;
            deliver(net, sub, info, out).await
        }
        Request::HeAggregate { query, to, out } => {
            let (sub, info) =
                blocking(move || crate::he::aggregate(&node, &query, &to, &op)).await?;
            deliver(net, sub, info, out).await
        }
        Request::HeDecrypt { query } => {
            blocking(move || crate::he::decrypt(&node, &query, &op)).await
        }
        Request::HeVerifySum { query } => {
            blocking(move || crate::he::verify_sum(&node, &query)).await
        }
        Request::HeExport { query, out } => {
            blocking(move || crate::he::export(&node, &query, &out, &op)).await
        }
        Request::HeList => crate::he::list(&node),
        Request::SubmitFile { file, to: Some(to) } => {
            let sub: crate::docs::SubmissionFile =
                crate::docs::read_file(&file, "submission file")?;
            let a = net.submit(&to, &sub.kind, sub.document).await?;
            Ok(json!({"sent": to, "kind": sub.kind, "accepted": a.digest.to_hex(), "note": a.note}))
        }
        Request::SubmitFile { file, to: None } => {
            let sub: crate::docs::SubmissionFile =
                crate::docs::read_file(&file, "submission file")?;
            let a = blocking(move || {
                crate::docs::accept(&node, &format!("file:{file}"), &sub.kind, &sub.document)
            })
            .await?;
            Ok(json!({"accepted": a.digest.to_hex(), "note": a.note}))
        }
        Request::SettleConfirm {
            releases,
            all,
            registry,
            amount_field,
            to,
            out,
        } => {
            let releases = if all {
                crate::settle::unconfirmed_relayed(&node, "clearing")?
            } else {
                releases
            };
            if out.is_some() && releases.len() != 1 {
                return Err(NodeError::Invalid(
                    "--out writes one confirmation; give exactly one --release".into(),
                ));
            }
            let mut results = Vec::new();
            let mut failures = Vec::new();
            let single = !all && releases.len() == 1;
            for release in releases {
                let (node, registry, amount_field, to, op, progress, id) = (
                    node.clone(),
                    registry.clone(),
                    amount_field.clone(),
                    to.clone(),
                    op.clone(),
                    progress.clone(),
                    release.clone(),
                );
                let outcome = async {
                    let (sub, info) = blocking(move || {
                        crate::settle::confirm(
                            &node,
                            &release,
                            &registry,
                            &amount_field,
                            &to,
                            &op,
                            progress.as_ref(),
                        )
                    })
                    .await?;
                    deliver(net, sub, info, out.clone()).await
                }
                .await;
                match outcome {
                    Ok(v) => results.push(v),
                    Err(e) if single => return Err(e),
                    // One release that cannot be confirmed (e.g. its sender's
                    // certificate was revoked) does not hold up the others.
                    Err(e) => failures.push(format!("release {id}: {e}")),
                }
            }
            if !failures.is_empty() {
                return Err(NodeError::Refused(format!(
                    "{} releases confirmed; {} could not be: {}",
                    results.len(),
                    failures.len(),
                    failures.join("; ")
                )));
            }
            match (single, results.len()) {
                (true, 1) => Ok(results.remove(0)),
                _ => Ok(Value::Array(results)),
            }
        }
        Request::SettleClearing {
            profile,
            amount_field,
        } => {
            blocking(move || {
                crate::settle::clearing(&node, &profile, &amount_field, &op, progress.as_ref())
            })
            .await
        }
        Request::AuditExport { out } => {
            let n2 = node.clone();
            let header = blocking(move || {
                let ca = n2.ca.first().map(|c| c.to_vec()).unwrap_or_default();
                let h = pdx_audit::bundle::export(&n2.audit, ca, std::path::Path::new(&out))?;
                let mut d = n2.draft(EventKind::Export, &op);
                d.detail = Some(format!(
                    "audit bundle of {} entries exported to {out}",
                    h.entry_count
                ));
                n2.log(d)?;
                Ok((h, out))
            })
            .await?;
            Ok(
                json!({"out": header.1, "log_id": header.0.log_id, "entries": header.0.entry_count,
                      "checkpoints": header.0.checkpoints.len(), "cosignatures": header.0.cosignatures.len(),
                      "witnessed": header.0.witnessed.len(), "evidence": header.0.evidence.len()}),
            )
        }
        Request::AuditCheckpoint { out } => {
            let cp = node.audit.checkpoint()?;
            let body = cp.peek()?;
            if let Some(path) = &out {
                let bytes = pdx_crypto::wire::to_cbor(&cp)?;
                crate::config::write_atomic(std::path::Path::new(path), &bytes, 0o644)?;
            }
            Ok(
                json!({"origin": body.origin, "size": body.size, "root": hex::encode(body.root),
                      "time_ms": body.time_ms, "key_id": cp.key_id().to_hex(), "out": out}),
            )
        }
        Request::AuditProve { seq } => audit_prove(&node, seq),
        Request::AuditConsistency { from, to } => {
            let cp = node.audit.checkpoint()?.peek()?;
            let to = to.unwrap_or(cp.size);
            let proof = node.audit.consistency_proof(from, to)?;
            let (r1, r2) = (node.audit.root_at(from)?, node.audit.root_at(to)?);
            pdx_audit::merkle::verify_consistency::<pdx_audit::merkle::Blake3, _>(
                from, to, &proof, &r1, &r2,
            )
            .map_err(pdx_audit::AuditError::from)?;
            Ok(
                json!({"from": from, "to": to, "root_from": hex::encode(r1), "root_to": hex::encode(r2),
                      "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(), "verified": true}),
            )
        }
        Request::AuditShow {
            dataset,
            counterparty,
            kind,
            since_ms,
            until_ms,
            limit,
        } => {
            let kind = match kind {
                Some(k) => Some(EventKind::from_label(&k).ok_or_else(|| {
                    NodeError::Invalid(format!(
                        "unknown event kind {k:?}; kinds: {}",
                        EventKind::ALL
                            .iter()
                            .map(|k| k.label())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?),
                None => None,
            };
            let size = node.audit.size();
            let mut out = Vec::new();
            node.audit.for_each_entry(0, size, |_, bytes| {
                let v = EntryView::parse(bytes).map_err(|e| pdx_audit::AuditError::Corrupt {
                    location: "entry".into(),
                    reason: e.0,
                })?;
                let keep = dataset.as_deref().is_none_or(|d| v.dataset == Some(d))
                    && counterparty
                        .as_deref()
                        .is_none_or(|c| v.counterparty == Some(c))
                    && kind.is_none_or(|k| v.kind == k)
                    && since_ms.is_none_or(|s| v.time_ms >= s)
                    && until_ms.is_none_or(|u| v.time_ms <= u);
                if keep {
                    out.push(entry_json(&v));
                }
                Ok(())
            })?;
            if let Some(l) = limit {
                let skip = out.len().saturating_sub(l);
                out.drain(..skip);
            }
            Ok(Value::Array(out))
        }
    }
}

/// Sends a signed submission to the peer named in `info["to"]`, or writes it
/// to `out` (file mode); adds what happened to `info`.
async fn deliver(
    net: &Arc<Net>,
    sub: crate::docs::SubmissionFile,
    mut info: Value,
    out: Option<String>,
) -> Result<Value> {
    let outcome = match out {
        Some(path) => {
            let bytes = pdx_crypto::wire::to_cbor(&sub)?;
            crate::config::write_atomic(std::path::Path::new(&path), &bytes, 0o600)?;
            json!({"written": path})
        }
        None => {
            let to = info["to"].as_str().unwrap_or_default().to_string();
            let a = net.submit(&to, &sub.kind, sub.document).await?;
            json!({"sent": to, "accepted": a.digest.to_hex(), "note": a.note})
        }
    };
    if let (Some(o), Value::Object(extra)) = (info.as_object_mut(), outcome) {
        o.extend(extra);
    }
    Ok(info)
}

/// One entry as JSON (for `audit show`).
pub fn entry_json(v: &EntryView<'_>) -> Value {
    json!({
        "seq": v.seq, "time_ms": v.time_ms, "kind": v.kind.label(),
        "actor": {"dept": v.actor_dept, "operator": v.actor_operator},
        "dataset": v.dataset, "release": v.release, "digest": v.digest.map(hex::encode),
        "counterparty": v.counterparty, "agreement": v.agreement, "purpose": v.purpose,
        "legal_basis": v.legal_basis,
        "fields": v.fields().iter().map(|(n, c)| json!({"name": n, "class": c})).collect::<Vec<_>>(),
        "record_count": v.record_count, "payload_digest": v.payload_digest.map(hex::encode),
        "detail": v.detail,
    })
}

fn audit_prove(node: &crate::node::Node, seq: u64) -> Result<Value> {
    let cp_signed = node.audit.checkpoint()?;
    let cp = cp_signed.peek()?;
    if seq >= cp.size {
        return Err(NodeError::NotFound(format!(
            "entry {seq} is not covered by the latest checkpoint (size {})",
            cp.size
        )));
    }
    let bytes = node.audit.entry_bytes(seq)?;
    let leaf = <pdx_audit::merkle::Blake3 as pdx_audit::merkle::MerkleHasher>::leaf(&bytes);
    let started = std::time::Instant::now();
    let proof = node.audit.inclusion_proof(seq, cp.size)?;
    let micros = started.elapsed().as_micros();
    pdx_audit::merkle::verify_inclusion::<pdx_audit::merkle::Blake3, _>(
        seq, cp.size, &leaf, &proof, &cp.root,
    )
    .map_err(pdx_audit::AuditError::from)?;
    let v = EntryView::parse(&bytes)
        .map_err(|e| NodeError::corrupt(format!("audit entry {seq}"), e.0))?;
    Ok(
        json!({"seq": seq, "tree_size": cp.size, "root": hex::encode(cp.root), "leaf_hash": hex::encode(leaf),
              "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(), "checkpoint_key": cp_signed.key_id().to_hex(),
              "entry": entry_json(&v), "verified": true, "proof_micros": micros}),
    )
}

fn status(net: &Arc<Net>) -> Result<Value> {
    let node = &net.node;
    let peers: Vec<Value> = node
        .peers()?
        .iter()
        .map(|p| json!({"dept": p.dept, "addr": p.addr, "last_contact_ms": p.last_contact_ms, "last_error": p.last_error}))
        .collect();
    let pending_in: Vec<Value> = release::in_releases(node)?
        .iter()
        .filter(|r| !r.complete)
        .map(|r| json!({"release": release_hex(&r.release_id), "from": r.from, "dataset": r.dataset, "stored": r.stored, "chunks": r.plan.len()}))
        .collect();
    let undelivered: Vec<Value> = release::out_releases(node)?
        .iter()
        .filter(|r| r.deliveries.is_empty())
        .map(|r| json!({"release": release_hex(&r.release_id), "to": r.recipient, "dataset": r.dataset}))
        .collect();
    let cp = node.audit.latest_checkpoint()?.peek()?;
    Ok(json!({
        "dept": node.config.dept, "name": node.config.name, "network": node.config.network,
        "listen": node.config.listen, "log_id": node.audit.log_id().to_text(),
        "audit": {"entries": node.audit.size(), "checkpoint_size": cp.size, "checkpoint_root": hex::encode(cp.root),
                   "checkpoint_age_ms": now_ms().saturating_sub(cp.time_ms)},
        "peers": peers, "pending_transfers_in": pending_in, "releases_not_yet_delivered": undelivered,
        "datasets": dataset::list(node)?.len(),
    }))
}
