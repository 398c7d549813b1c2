//! Every node command as data: a [`Request`] wraps the library's spec type,
//! [`execute`] runs it and returns a typed [`Outcome`] (the CLI renders it as
//! tables or `--json`). A command runs the same way through the admin socket
//! of a running `pdx serve` (which owns the store) or in-process.

use crate::error::{NodeError, Result};
use crate::progress::Progress;
use crate::proto::msg::{CatalogEntry, ReleaseRequest};
use crate::service::aggregate::{
    self, AggregateSpec, Aggregated, ContributeSpec, Contributed, Decrypted, QueryCreated,
    QueryExported, QueryInfo, QuerySpec, SumCheck,
};
use crate::service::audit::{
    self as audit_service, BundleWritten, CheckpointSigned, ConsistencyProof, EntryFilter,
    EntryInfo, InclusionProof, Status,
};
use crate::service::calls::consumer::{CallResult, CallSpec};
use crate::service::calls::records::{Flushed, RecordSpec, Recording};
use crate::service::calls::{self, CallFilter, CallShown, CallSummary, ServiceInfo, ServiceSpec};
use crate::service::datasets::{self, DatasetInfo, ImportOutcome, ImportSpec};
use crate::service::directory::{self, KeyInfo, PeerInfo};
use crate::service::documents::{self, SubmissionFile};
use crate::service::grants::{self, Grant, GrantSpec};
use crate::service::outbox::{self, Pending};
use crate::service::preview::{self, PreviewOutcome, PreviewSpec};
use crate::service::release::{self, ExportOutcome, ReleaseInfo, parse_release_id};
use crate::service::settle::{self, Clearing, ClearingSpec, ConfirmSpec, Confirmed};
use crate::service::transfers::{FetchOutcome, FetchSpec, ForwardOutcome, ForwardSpec, retrying};
use crate::service::{Dispatch, Services, blocking, submissions};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What to export (`pdx export`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportSpec {
    /// Release id (hex).
    pub release: String,
    /// Output CSV.
    pub out: String,
}

/// A submission file to accept here or send (`pdx submit --file`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitSpec {
    /// Submission file.
    pub file: String,
    /// Send it to this peer instead of accepting it here.
    pub to: Option<String>,
}

/// A command for a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// `pdx import`.
    Import(ImportSpec),
    /// `pdx datasets`.
    Datasets,
    /// `pdx grant`.
    Grant(GrantSpec),
    /// `pdx grant list`.
    GrantList,
    /// `pdx grant revoke`.
    GrantRevoke {
        /// Grant id.
        id: String,
    },
    /// `pdx peer add`: (department, address) pairs.
    PeerAdd {
        /// Peers.
        peers: Vec<(String, String)>,
    },
    /// `pdx catalog --peer`.
    Catalog {
        /// Peer.
        peer: String,
    },
    /// `pdx fetch`.
    Fetch(FetchSpec),
    /// `pdx forward`.
    Forward(ForwardSpec),
    /// `pdx releases`.
    Releases,
    /// `pdx export`.
    Export(ExportSpec),
    /// `pdx release preview`.
    Preview(PreviewSpec),
    /// `pdx status` and `pdx peer list`.
    Status,
    /// `pdx doctor`.
    Doctor,
    /// `pdx backup create`.
    BackupCreate {
        /// Archive to write (absolute).
        out: String,
        /// File holding the backup passphrase (absolute, 0600).
        passphrase_file: String,
    },
    /// `pdx restore --acknowledge-loss`.
    RestoreAcknowledge {
        /// Why the loss is accepted (audited).
        reason: String,
    },
    /// `pdx crl update`.
    CrlUpdate {
        /// New CRL file.
        crl: String,
    },
    /// `pdx cert install`.
    CertInstall {
        /// Directory made by `pdx ca issue --renew` (absolute).
        cert_dir: String,
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
    HeKeygen(QuerySpec),
    /// `pdx he contribute`.
    HeContribute(ContributeSpec),
    /// `pdx he aggregate`.
    HeAggregate(AggregateSpec),
    /// `pdx he decrypt`.
    HeDecrypt {
        /// Query id.
        query: String,
    },
    /// `pdx he key-share`.
    HeKeyShare {
        /// Query id.
        query: String,
    },
    /// `pdx he key-finish`.
    HeKeyFinish {
        /// Query id.
        query: String,
        /// Where to write the signed query.
        out: String,
    },
    /// `pdx he partial`.
    HePartial {
        /// Query id.
        query: String,
    },
    /// `pdx he combine`.
    HeCombine {
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
    /// `pdx he crs install`.
    HeCrsInstall {
        /// The CRS file.
        file: String,
        /// The digest the CA published.
        digest: Option<String>,
    },
    /// `pdx submit --file`.
    SubmitFile(SubmitSpec),
    /// `pdx settle confirm`.
    SettleConfirm(ConfirmSpec),
    /// `pdx settle clearing`.
    SettleClearing(ClearingSpec),
    /// `pdx settle disputes`.
    SettleDisputes,
    /// `pdx service record`.
    ServiceRecord(RecordSpec),
    /// `pdx service record --flush`: append what recorded calls queued.
    ServiceFlush,
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
    AuditShow(EntryFilter),
    /// `pdx service publish` (with a backend) or `pdx service add`.
    ServiceStore(ServiceSpec),
    /// `pdx service list`.
    ServiceList,
    /// `pdx call`.
    Call(CallSpec),
    /// `pdx calls list`.
    CallsList(CallFilter),
    /// `pdx calls show`.
    CallsShow {
        /// Call id (hex).
        id: String,
    },
    /// `pdx calls export`.
    CallsExport {
        /// Call ids (hex).
        ids: Vec<String>,
        /// Evidence file.
        out: String,
    },
}

/// `pdx calls export`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallsExported {
    /// Signed call records written.
    pub records: usize,
    /// File.
    pub out: String,
}

/// `pdx crl update`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CrlUpdated {
    /// CRLs installed.
    pub crls: usize,
    /// Live connections closed because their peer is now revoked.
    pub connections_closed: usize,
}

/// `pdx key rotate|retire`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyChanged {
    /// What changed.
    pub result: String,
}

/// `pdx keys fetch`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeysFetched {
    /// Documents stored.
    pub stored: usize,
    /// Why the others were refused.
    pub rejected: Vec<String>,
}

/// `pdx submit --file`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Submitted {
    /// Department it was sent to (`--to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<String>,
    /// Submission kind (`--to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Digest accepted.
    pub accepted: String,
    /// The accepting node's note.
    pub note: String,
}

macro_rules! outcomes {
    ($($(#[$doc:meta])* $name:ident($ty:ty),)*) => {
        /// What a command produced.
        #[derive(Clone, Debug, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum Outcome {
            $($(#[$doc])* $name($ty),)*
        }

        impl Outcome {
            /// The `--json` form: the result itself, untagged.
            pub fn to_json(&self) -> Result<serde_json::Value> {
                match self {
                    $(Outcome::$name(v) => serde_json::to_value(v),)*
                }
                .map_err(|e| NodeError::Invalid(format!("cannot render the result: {e}")))
            }
        }
    };
}

outcomes! {
    /// `pdx import`.
    Imported(ImportOutcome),
    /// `pdx datasets`.
    Datasets(Vec<DatasetInfo>),
    /// `pdx grant`, `pdx grant revoke`.
    Grant(Grant),
    /// `pdx grant list`.
    Grants(Vec<Grant>),
    /// `pdx peer add` of one peer.
    Peer(PeerInfo),
    /// `pdx peer add` of several.
    Peers(Vec<PeerInfo>),
    /// `pdx catalog`.
    Catalog(Vec<CatalogEntry>),
    /// `pdx fetch`.
    Fetched(FetchOutcome),
    /// `pdx forward --to`.
    Forwarded(ForwardOutcome),
    /// `pdx forward --all-recipients`.
    ForwardedAll(Vec<ForwardOutcome>),
    /// `pdx releases`.
    Releases(Vec<ReleaseInfo>),
    /// `pdx export`.
    Exported(ExportOutcome),
    /// `pdx release preview`.
    Previewed(PreviewOutcome),
    /// `pdx status`, `pdx peer list`.
    Status(Status),
    /// `pdx doctor`.
    Doctor(crate::service::doctor::DoctorReport),
    /// `pdx backup create`.
    BackupCreated(crate::service::backup::BackupCreated),
    /// `pdx restore --acknowledge-loss`.
    RestoreAcknowledged(crate::service::recovery::Acknowledged),
    /// `pdx crl update`.
    CrlUpdated(CrlUpdated),
    /// `pdx cert install`.
    CertInstalled(crate::node::CertInstalled),
    /// `pdx key rotate|retire`.
    KeyChanged(KeyChanged),
    /// `pdx keys fetch`.
    KeysFetched(KeysFetched),
    /// `pdx keys list`.
    Keys(Vec<KeyInfo>),
    /// `pdx he keygen`.
    QueryCreated(QueryCreated),
    /// `pdx he contribute`.
    Contributed(Contributed),
    /// `pdx he aggregate`.
    Aggregated(Aggregated),
    /// `pdx he decrypt`, `pdx he combine`.
    Decrypted(Decrypted),
    /// `pdx he key-share`.
    KeyShared(aggregate::KeyShared),
    /// `pdx he key-finish`.
    KeyFinished(aggregate::KeyFinished),
    /// `pdx he partial`.
    PartialMade(aggregate::PartialMade),
    /// `pdx he verify-sum`.
    SumChecked(SumCheck),
    /// `pdx he export`.
    QueryExported(QueryExported),
    /// `pdx he list`.
    Queries(Vec<QueryInfo>),
    /// `pdx he crs install`.
    CrsInstalled(aggregate::crs::CrsInfo),
    /// `pdx submit --file`.
    Submitted(Submitted),
    /// `pdx settle confirm --release` (one).
    Confirmed(Confirmed),
    /// `pdx settle confirm` (several, or `--all`).
    ConfirmedAll(Vec<Confirmed>),
    /// `pdx settle clearing`.
    Clearing(Clearing),
    /// `pdx audit export`.
    BundleWritten(BundleWritten),
    /// `pdx audit checkpoint`.
    Checkpoint(CheckpointSigned),
    /// `pdx audit prove`.
    Inclusion(InclusionProof),
    /// `pdx audit consistency`.
    Consistency(ConsistencyProof),
    /// `pdx audit show`.
    Entries(Vec<EntryInfo>),
    /// `pdx service publish|add`.
    Service(ServiceInfo),
    /// `pdx service list`.
    Services(Vec<ServiceInfo>),
    /// `pdx call`.
    Called(CallResult),
    /// `pdx calls list`.
    Calls(Vec<CallSummary>),
    /// `pdx calls show`.
    CallShown(CallShown),
    /// `pdx calls export`.
    CallsExported(CallsExported),
    /// `pdx settle disputes`.
    Disputes(Vec<settle::DisputeRow>),
    /// `pdx service record`.
    Recording(Recording),
    /// `pdx service record --flush`.
    Flushed(Vec<Flushed>),
}

/// Sends a signed document from the outbox to `to`, or writes it to `out`
/// (file mode; it stays pending until `pdx submit --file --to` delivers
/// it). Delivered = the recipient acknowledged its digest (a `deliver`
/// entry); anything short of that leaves it pending for a retry.
async fn dispatch(
    svc: &Arc<Services>,
    pending: Pending,
    to: &str,
    out: Option<String>,
    op: &str,
    resent: bool,
) -> Result<Dispatch> {
    match out {
        Some(path) => {
            let bytes = pdx_crypto::wire::to_cbor(&pending.submission)?;
            blocking(move || {
                crate::config::write_atomic(std::path::Path::new(&path), &bytes, 0o600)?;
                Ok(Dispatch {
                    written: Some(path),
                    resent,
                    ..Dispatch::default()
                })
            })
            .await
        }
        None => {
            let Pending {
                submission, digest, ..
            } = pending;
            let a = submit(svc, to, &submission.kind, submission.document).await?;
            let (node, t, op, acknowledged) =
                (svc.node.clone(), to.to_string(), op.to_string(), a.digest);
            blocking(move || outbox::delivered(&node, &digest, &t, &acknowledged, &op)).await?;
            Ok(Dispatch {
                sent: Some(to.to_string()),
                accepted: Some(a.digest.to_hex()),
                note: Some(a.note),
                resent,
                ..Dispatch::default()
            })
        }
    }
}

/// Pushes a signed document (`kind`) to a peer; returns its acknowledgement.
async fn submit(
    svc: &Arc<Services>,
    dept: &str,
    kind: &str,
    document: Vec<u8>,
) -> Result<crate::proto::msg::Accepted> {
    use crate::proto::msg::{Message, Submit};
    let request = Message::Submit(Submit {
        kind: kind.to_string(),
        document,
    });
    match svc.net.request(svc, dept, request).await? {
        Message::Accepted(a) => Ok(a),
        Message::Error(e) => Err(NodeError::Refused(format!(
            "{dept} refused the {kind}: {}",
            e.message
        ))),
        other => Err(NodeError::Peer {
            peer: dept.to_string(),
            message: format!("expected Accepted, got {:?}", other.msg_type()),
        }),
    }
}

/// `pdx catalog --peer`.
async fn catalog(svc: &Arc<Services>, dept: &str) -> Result<Vec<CatalogEntry>> {
    use crate::proto::msg::{CatalogRequest, Message};
    match svc
        .net
        .request(svc, dept, Message::CatalogRequest(CatalogRequest {}))
        .await?
    {
        Message::CatalogResponse(r) => Ok(r.entries),
        Message::Error(e) => Err(NodeError::Refused(format!("{dept} refused: {}", e.message))),
        other => Err(NodeError::Peer {
            peer: dept.to_string(),
            message: format!("expected CatalogResponse, got {:?}", other.msg_type()),
        }),
    }
}

/// `pdx keys fetch --peer`: key documents from a peer (its own or its directory).
async fn fetch_keys(svc: &Arc<Services>, dept: &str, of: Vec<String>) -> Result<KeysFetched> {
    use crate::proto::msg::{KeyDirRequest, Message};
    match svc
        .net
        .request(
            svc,
            dept,
            Message::KeyDirRequest(KeyDirRequest { depts: of }),
        )
        .await?
    {
        Message::KeyDirResponse(r) => {
            let node = svc.node.clone();
            let (stored, rejected) =
                blocking(move || directory::accept_key_documents(&node, &r.documents)).await?;
            Ok(KeysFetched { stored, rejected })
        }
        Message::Error(e) => Err(NodeError::Refused(format!("{dept} refused: {}", e.message))),
        other => Err(NodeError::Peer {
            peer: dept.to_string(),
            message: format!("expected KeyDirResponse, got {:?}", other.msg_type()),
        }),
    }
}

/// The request a fetch sends: purpose and agreement from the spec, or from
/// the one grant the peer lists for us.
async fn release_request(svc: &Arc<Services>, f: &FetchSpec) -> Result<ReleaseRequest> {
    let (agreement, purpose) = match &f.purpose {
        Some(p) => (f.agreement.clone(), p.clone()),
        None => {
            let entries = catalog(svc, &f.peer).await?;
            let matching: Vec<_> = entries
                .iter()
                .filter(|e| {
                    e.dataset == f.dataset
                        && e.profile == f.profile
                        && (f.agreement.is_none() || e.agreement == f.agreement)
                })
                .collect();
            match matching.as_slice() {
                [one] => (one.agreement.clone(), one.purpose.clone()),
                [] => {
                    return Err(NodeError::Refused(format!(
                        "{} lists no grant for dataset {} with profile {} for us (pdx catalog --peer {} shows what it grants)",
                        f.peer, f.dataset, f.profile, f.peer
                    )));
                }
                _ => {
                    return Err(NodeError::Invalid(format!(
                        "{} grants {}/{} for several purposes; choose one with --purpose",
                        f.peer, f.dataset, f.profile
                    )));
                }
            }
        }
    };
    let after = if f.incremental {
        let node = svc.node.clone();
        let (peer, dataset, profile) = (f.peer.clone(), f.dataset.clone(), f.profile.clone());
        let (a, p) = (agreement.clone(), purpose.clone());
        blocking(move || release::chain_head(&node, &peer, &dataset, &profile, a.as_deref(), &p))
            .await?
    } else {
        None
    };
    Ok(ReleaseRequest {
        dataset: f.dataset.clone(),
        profile: f.profile.clone(),
        agreement,
        purpose,
        incremental: f.incremental,
        after,
    })
}

/// Runs `req` on the node behind `svc`, as `operator`. Every store access runs
/// on the blocking pool.
pub async fn execute(
    svc: &Arc<Services>,
    req: Request,
    operator: &str,
    progress: Arc<dyn Progress>,
) -> Result<Outcome> {
    use tracing::Instrument;
    let command = crate::logging::variant_name(&req);
    let span = tracing::info_span!("command", id = %crate::logging::operation_id(), command = %command, operator = %operator);
    async move {
        let started = std::time::Instant::now();
        let out = execute_unlogged(svc, req, operator, progress).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &out {
            Ok(_) => tracing::info!(elapsed_ms, "command done"),
            Err(e) => tracing::info!(elapsed_ms, "command failed: {e}"),
        }
        out
    }
    .instrument(span)
    .await
}

async fn execute_unlogged(
    svc: &Arc<Services>,
    req: Request,
    operator: &str,
    progress: Arc<dyn Progress>,
) -> Result<Outcome> {
    let node = svc.node.clone();
    let op = operator.to_string();
    Ok(match req {
        Request::Import(spec) => Outcome::Imported(
            blocking(move || datasets::import(&node, &spec, &op, progress.as_ref())).await?,
        ),
        Request::Datasets => Outcome::Datasets(
            blocking(move || {
                Ok(datasets::list(&node)?
                    .iter()
                    .map(DatasetInfo::from)
                    .collect())
            })
            .await?,
        ),
        Request::Grant(spec) if spec.service.is_some() => {
            Outcome::Grant(blocking(move || calls::grant(&node, &spec, &op)).await?)
        }
        Request::Grant(spec) => {
            Outcome::Grant(blocking(move || grants::create(&node, &spec, &op)).await?)
        }
        Request::GrantList => Outcome::Grants(blocking(move || grants::list(&node)).await?),
        Request::ServiceStore(spec) => {
            Outcome::Service(blocking(move || calls::store(&node, &spec, &op)).await?)
        }
        Request::ServiceList => Outcome::Services(blocking(move || calls::list(&node)).await?),
        Request::Call(spec) => Outcome::Called(calls::consumer::call(svc, spec).await?),
        Request::CallsList(f) => {
            Outcome::Calls(blocking(move || calls::list_calls(&node, &f)).await?)
        }
        Request::CallsShow { id } => Outcome::CallShown(
            blocking(move || {
                Ok(CallShown {
                    records: calls::stored(&node, &id)?
                        .into_iter()
                        .map(|c| c.summary)
                        .collect(),
                })
            })
            .await?,
        ),
        Request::CallsExport { ids, out } => Outcome::CallsExported(
            blocking(move || {
                let records = calls::export(&node, &ids, &out, &op)?;
                Ok(CallsExported { records, out })
            })
            .await?,
        ),
        Request::GrantRevoke { id } => {
            Outcome::Grant(blocking(move || grants::revoke(&node, &id, &op)).await?)
        }
        Request::PeerAdd { peers } => {
            let mut added = blocking(move || {
                peers
                    .iter()
                    .map(|(d, a)| directory::add_peer(&node, d, a, &op))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
            match added.len() {
                1 => Outcome::Peer(added.remove(0)),
                _ => Outcome::Peers(added),
            }
        }
        Request::Catalog { peer } => Outcome::Catalog(catalog(svc, &peer).await?),
        Request::Fetch(f) => {
            let req = release_request(svc, &f).await?;
            let what = format!("fetch from {}", f.peer);
            Outcome::Fetched(
                retrying(f.retries, &what, || {
                    svc.fetch(&req, &f.peer, &op, progress.as_ref())
                })
                .await?,
            )
        }
        Request::Forward(f) if f.all_releases => {
            let to = f.to.clone().ok_or_else(|| {
                NodeError::Invalid("--all-releases forwards to one recipient: give --to".into())
            })?;
            let t = to.clone();
            let ids = blocking(move || release::releases_for_recipient(&node, &t)).await?;
            let (outcomes, failures) = svc
                .forward_all(&ids, &to, f.retries, &op, progress.clone())
                .await?;
            if !failures.is_empty() {
                let failures: Vec<_> = failures
                    .into_iter()
                    .map(|(r, e)| (format!("release {r}"), e))
                    .collect();
                return Err(partly_done(
                    outcomes.len(),
                    &format!("forwarded to {to}"),
                    &failures,
                ));
            }
            Outcome::ForwardedAll(outcomes)
        }
        Request::Forward(f) => {
            let release = f.release.as_deref().ok_or_else(|| {
                NodeError::Invalid("give --release (or --all-releases with --to)".into())
            })?;
            let id = parse_release_id(release)?;
            let targets = match &f.to {
                Some(t) => vec![t.clone()],
                None => {
                    let rid = id.clone();
                    blocking(move || release::chunk_recipients(&node, &rid)).await?
                }
            };
            let mut outcomes = Vec::new();
            for to in &targets {
                let what = format!("forward to {to}");
                outcomes.push(
                    retrying(f.retries, &what, || {
                        svc.forward(&id, to, &op, progress.as_ref())
                    })
                    .await?,
                );
            }
            match (f.to, outcomes.len()) {
                (Some(_), 1) => Outcome::Forwarded(outcomes.remove(0)),
                _ => Outcome::ForwardedAll(outcomes),
            }
        }
        Request::Releases => Outcome::Releases(blocking(move || release::listing(&node)).await?),
        Request::Export(e) => {
            let id = parse_release_id(&e.release)?;
            Outcome::Exported(
                blocking(move || release::export(&node, &id, &e.out, &op, progress.as_ref()))
                    .await?,
            )
        }
        Request::Preview(spec) => Outcome::Previewed(
            blocking(move || preview::preview(&node, &spec, &op, progress.as_ref())).await?,
        ),
        Request::Status => Outcome::Status(blocking(move || audit_service::status(&node)).await?),
        Request::Doctor => Outcome::Doctor(crate::service::doctor::run(svc).await?),
        Request::BackupCreate {
            out,
            passphrase_file,
        } => Outcome::BackupCreated(
            blocking(move || {
                let pass =
                    crate::keys::passphrase_from_file(std::path::Path::new(&passphrase_file))?;
                crate::service::backup::create(&node, std::path::Path::new(&out), &pass, &op)
            })
            .await?,
        ),
        Request::RestoreAcknowledge { reason } => Outcome::RestoreAcknowledged(
            blocking(move || crate::service::recovery::acknowledge(&node, &reason, &op)).await?,
        ),
        Request::CrlUpdate { crl } => {
            let crls = blocking(move || node.update_crl(std::path::Path::new(&crl), &op)).await?;
            let connections_closed = svc.recheck_connections().await?;
            Outcome::CrlUpdated(CrlUpdated {
                crls,
                connections_closed,
            })
        }
        Request::CertInstall { cert_dir } => Outcome::CertInstalled(
            svc.install_cert(std::path::PathBuf::from(cert_dir), op)
                .await?,
        ),
        Request::KeyRotate { kind } => Outcome::KeyChanged(KeyChanged {
            result: blocking(move || directory::rotate_key(&node, &kind, &op)).await?,
        }),
        Request::KeyRetire { key_id } => Outcome::KeyChanged(KeyChanged {
            result: blocking(move || directory::retire_encryption_key(&node, &key_id, &op)).await?,
        }),
        Request::KeysFetch { peer, of } => Outcome::KeysFetched(fetch_keys(svc, &peer, of).await?),
        Request::KeysList => Outcome::Keys(blocking(move || directory::key_infos(&node)).await?),
        Request::HeKeygen(spec) => {
            let o = op.clone();
            let (pendings, info) = blocking(move || {
                if !spec.committee.is_empty() {
                    // Nothing is dealt for members this node cannot reach.
                    for m in spec.committee.iter().filter(|m| **m != node.config.dept) {
                        directory::peer(&node, m)?;
                    }
                }
                aggregate::keygen(&node, &spec, &o)
            })
            .await?;
            for p in pendings {
                let to = p.to.clone();
                dispatch(svc, p, &to, None, &op, false).await?;
            }
            Outcome::QueryCreated(info)
        }
        Request::HeKeyShare { query } => {
            let o = op.clone();
            let (pending, mut info) =
                blocking(move || aggregate::key_share(&node, &query, &o)).await?;
            let (to, resent) = (pending.to.clone(), info.dispatch.resent);
            info.dispatch = dispatch(svc, pending, &to, None, &op, resent).await?;
            Outcome::KeyShared(info)
        }
        Request::HeKeyFinish { query, out } => {
            let o = op.clone();
            let (pendings, mut info) =
                blocking(move || aggregate::key_finish(&node, &query, &out, &o)).await?;
            for p in pendings {
                let to = p.to.clone();
                dispatch(svc, p, &to, None, &op, false).await?;
                info.sent.push(to);
            }
            Outcome::KeyFinished(info)
        }
        Request::HePartial { query } => {
            let o = op.clone();
            let (pending, mut info) =
                blocking(move || aggregate::partial(&node, &query, &o)).await?;
            if let Some(p) = pending {
                let (to, resent) = (p.to.clone(), info.dispatch.resent);
                info.dispatch = dispatch(svc, p, &to, None, &op, resent).await?;
            }
            Outcome::PartialMade(info)
        }
        Request::HeCombine { query } => {
            Outcome::Decrypted(blocking(move || aggregate::combine(&node, &query, &op)).await?)
        }
        Request::HeContribute(spec) => {
            let (to, out) = (spec.to.clone(), spec.out.clone());
            let o = op.clone();
            let (pending, mut info) = blocking(move || {
                if spec.out.is_none() {
                    // Nothing is signed for a peer this node cannot reach.
                    directory::peer(&node, &spec.to)?;
                }
                let doc: documents::Certified =
                    documents::read_file(&spec.query, "he query document")?;
                aggregate::contribute(&node, &doc, &spec.dataset, &spec.to, &o)
            })
            .await?;
            let resent = info.dispatch.resent;
            info.dispatch = dispatch(svc, pending, &to, out, &op, resent).await?;
            Outcome::Contributed(info)
        }
        Request::HeAggregate(spec) => {
            let (to, out) = (spec.to.clone(), spec.out.clone());
            let o = op.clone();
            let (pendings, mut info) = blocking(move || {
                if spec.out.is_none() {
                    directory::peer(&node, &spec.to)?;
                }
                aggregate::aggregate(&node, &spec.query, &spec.to, &o)
            })
            .await?;
            let resent = info.dispatch.resent;
            for p in pendings {
                let member = p.to.clone();
                if member == to {
                    info.dispatch = dispatch(svc, p, &to, out.clone(), &op, resent).await?;
                } else {
                    // A committee's other members each get the aggregate too.
                    let file = out.as_ref().map(|o| format!("{o}.{member}"));
                    dispatch(svc, p, &member, file, &op, resent).await?;
                }
            }
            Outcome::Aggregated(info)
        }
        Request::HeDecrypt { query } => {
            Outcome::Decrypted(blocking(move || aggregate::decrypt(&node, &query, &op)).await?)
        }
        Request::HeVerifySum { query } => {
            Outcome::SumChecked(blocking(move || aggregate::verify_sum(&node, &query)).await?)
        }
        Request::HeExport { query, out } => Outcome::QueryExported(
            blocking(move || aggregate::export(&node, &query, &out, &op)).await?,
        ),
        Request::HeList => Outcome::Queries(blocking(move || aggregate::list(&node)).await?),
        Request::HeCrsInstall { file, digest } => Outcome::CrsInstalled(
            blocking(move || {
                aggregate::crs::install(&node, std::path::Path::new(&file), digest.as_deref(), &op)
            })
            .await?,
        ),
        Request::SubmitFile(SubmitSpec { file, to }) => {
            let f = file.clone();
            let sub: SubmissionFile =
                blocking(move || documents::read_file(&f, "submission file")).await?;
            Outcome::Submitted(match to {
                Some(to) => {
                    let a = submit(svc, &to, &sub.kind, sub.document).await?;
                    // A document this node signed with --out is delivered now.
                    let (n, t, o, d) = (node.clone(), to.clone(), op.clone(), a.digest);
                    blocking(move || outbox::delivered(&n, &d, &t, &d, &o)).await?;
                    Submitted {
                        sent: Some(to),
                        kind: Some(sub.kind),
                        accepted: a.digest.to_hex(),
                        note: a.note,
                    }
                }
                None => {
                    let a = blocking(move || {
                        submissions::accept(
                            &node,
                            &format!("file:{file}"),
                            &sub.kind,
                            &sub.document,
                        )
                    })
                    .await?;
                    Submitted {
                        sent: None,
                        kind: None,
                        accepted: a.digest.to_hex(),
                        note: a.note,
                    }
                }
            })
        }
        Request::SettleConfirm(spec) => confirm(svc, spec, &op, progress).await?,
        Request::SettleDisputes => {
            Outcome::Disputes(blocking(move || settle::disputes(&node)).await?)
        }
        Request::ServiceRecord(spec) => {
            Outcome::Recording(blocking(move || calls::records::add_rule(&node, &spec, &op)).await?)
        }
        Request::ServiceFlush => Outcome::Flushed(
            blocking(move || calls::records::flush_all(&node, progress.as_ref())).await?,
        ),
        Request::SettleClearing(spec) => Outcome::Clearing(
            blocking(move || {
                settle::clearing(
                    &node,
                    &spec.profile,
                    &spec.amount_field,
                    &op,
                    progress.as_ref(),
                )
            })
            .await?,
        ),
        Request::AuditExport { out } => {
            Outcome::BundleWritten(blocking(move || audit_service::export(&node, &out, &op)).await?)
        }
        Request::AuditCheckpoint { out } => Outcome::Checkpoint(
            blocking(move || audit_service::checkpoint(&node, out.as_deref())).await?,
        ),
        Request::AuditProve { seq } => {
            Outcome::Inclusion(blocking(move || audit_service::prove(&node, seq)).await?)
        }
        Request::AuditConsistency { from, to } => Outcome::Consistency(
            blocking(move || audit_service::consistency(&node, from, to)).await?,
        ),
        Request::AuditShow(filter) => {
            Outcome::Entries(blocking(move || audit_service::show(&node, &filter)).await?)
        }
    })
}

/// A command over several releases that did `done` of them and could not
/// do the others: one refusal naming each failure.
fn partly_done(done: usize, verb: &str, failures: &[(String, NodeError)]) -> NodeError {
    NodeError::Refused(format!(
        "{done} releases {verb}; {} could not be: {}",
        failures.len(),
        failures
            .iter()
            .map(|(what, e)| format!("{what}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

/// `pdx settle confirm`: one release, several, or every one not confirmed yet.
async fn confirm(
    svc: &Arc<Services>,
    spec: ConfirmSpec,
    op: &str,
    progress: Arc<dyn Progress>,
) -> Result<Outcome> {
    let node = svc.node.clone();
    // --all: releases never confirmed, and confirmations signed before but
    // not delivered (sent again as signed).
    let (releases, undelivered) = if spec.all {
        blocking(move || {
            Ok((
                settle::unconfirmed_relayed(&node, "clearing")?,
                settle::undelivered(&node)?,
            ))
        })
        .await?
    } else {
        (spec.releases.clone(), Vec::new())
    };
    if spec.out.is_some() && releases.len() != 1 {
        return Err(NodeError::Invalid(
            "--out writes one confirmation; give exactly one --release".into(),
        ));
    }
    // Checked before anything is signed: an unknown clearing node or a
    // missing registry fails the command, not each release.
    let (node, s, need_registry) = (svc.node.clone(), spec.clone(), !releases.is_empty());
    let registry = Arc::new(
        blocking(move || {
            if s.out.is_none() {
                directory::peer(&node, &s.to)?;
            }
            if let Some(m) = &s.month
                && !(m.len() == 7
                    && m.as_bytes()[4] == b'-'
                    && pdx_schemas::types::parse_date(&format!("{m}-01")).is_some())
            {
                return Err(NodeError::Invalid(format!(
                    "--month {m:?}: give the month as YYYY-MM"
                )));
            }
            Ok(settle::Checks {
                persons: if need_registry {
                    settle::load_registry(&s.registry)?
                } else {
                    settle::Registry::new()
                },
                online: if need_registry {
                    settle::online_index(&node, &s.amount_field)?
                } else {
                    settle::OnlineIndex::new()
                },
                month: s.month.clone(),
                date_field: s.date_field.clone().unwrap_or_else(|| "setl_time".into()),
                seen: std::sync::Mutex::new(std::collections::HashSet::new()),
            })
        })
        .await?,
    );
    let single = !spec.all && releases.len() == 1;
    let mut results = Vec::new();
    let mut failures = Vec::new();
    // Each release is checked on its own (in order: duplicates are flagged
    // in the release that repeats them); one that cannot be (e.g. its
    // sender's certificate was revoked) does not hold up the others.
    let mut checked = Vec::new();
    for release in releases {
        let (node, s, op, progress, id, persons) = (
            svc.node.clone(),
            spec.clone(),
            op.to_string(),
            progress.clone(),
            release.clone(),
            registry.clone(),
        );
        let outcome = blocking(move || {
            settle::check(
                &node,
                &release,
                &persons,
                &s.amount_field,
                &s.to,
                &op,
                progress.as_ref(),
            )
        })
        .await;
        match outcome {
            Ok(c) => checked.push(c),
            Err(e) if single => return Err(e),
            Err(e) => failures.push((format!("release {id}"), e)),
        }
    }
    // Several releases for the clearing node: one signed document listing
    // each (batches of at most MAX_BATCH_RELEASES); one release, or a
    // file: a document of its own.
    let groups = if checked.len() > 1 && spec.out.is_none() {
        settle::batches(checked)?
    } else {
        checked.into_iter().map(|c| vec![c]).collect()
    };
    for group in groups {
        let names = group
            .iter()
            .map(|c| c.body.release.clone())
            .collect::<Vec<_>>()
            .join(", ");
        let (node, to, o) = (svc.node.clone(), spec.to.clone(), op.to_string());
        let outcome = async {
            let (pending, infos) = blocking(move || settle::sign(&node, group, &to)).await?;
            let d = dispatch(svc, pending, &spec.to, spec.out.clone(), &o, false).await?;
            Ok::<_, NodeError>(infos.into_iter().map(move |mut i| {
                i.dispatch = d.clone();
                i
            }))
        }
        .await;
        match outcome {
            Ok(v) => results.extend(v),
            Err(e) if single => return Err(e),
            Err(e) => failures.push((format!("release {names}"), e)),
        }
    }
    for (pending, infos) in undelivered {
        let ids = infos
            .iter()
            .map(|i| i.release.clone())
            .collect::<Vec<_>>()
            .join(", ");
        match dispatch(svc, pending, &spec.to, None, op, true).await {
            Ok(d) => results.extend(infos.into_iter().map(|mut info| {
                info.dispatch = d.clone();
                info.to = spec.to.clone();
                info
            })),
            Err(e) => failures.push((format!("release {ids} (signed, not delivered)"), e)),
        }
    }
    if results.is_empty() && failures.len() == 1 {
        // One release, one failure: its own error (and exit code).
        if let Some((_, e)) = failures.pop() {
            return Err(e);
        }
    }
    if !failures.is_empty() {
        return Err(partly_done(results.len(), "confirmed", &failures));
    }
    Ok(match (single, results.len()) {
        (true, 1) => Outcome::Confirmed(results.remove(0)),
        _ => Outcome::ConfirmedAll(results),
    })
}
