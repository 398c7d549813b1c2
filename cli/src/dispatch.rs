//! From parsed arguments to a result: offline commands run in their modules;
//! node commands become a [`Request`] run by a running node (its admin
//! socket) or in-process, and their typed [`Outcome`] is rendered.

use crate::args::{
    AuditCmd, BackupCmd, CallsCmd, CertCmd, Cli, Command, CrlCmd, GatewayCmd, GrantCmd, HeCmd,
    HeCrsCmd, HomeArgs, KeyCmd, KeysCmd, PeerCmd, ReleaseCmd, ServiceCmd, SettleCmd,
};
use crate::output::outln;
use crate::session::{absolute, node_command};
use crate::{Exit, audit, node_error, offline, render, serve};
use anyhow::{Result, anyhow};
use pdx_node::api::{ExportSpec, Outcome, Request, SubmitSpec};
use pdx_node::service::aggregate::{AggregateSpec, ContributeSpec, QuerySpec, SumVerdict};
use pdx_node::service::audit::EntryFilter;
use pdx_node::service::calls::consumer::CallSpec;
use pdx_node::service::calls::records::RecordSpec;
use pdx_node::service::calls::{CallFilter, ServiceSpec};
use pdx_node::service::datasets::ImportSpec;
use pdx_node::service::doctor::Severity;
use pdx_node::service::grants::GrantSpec;
use pdx_node::service::preview::PreviewSpec;
use pdx_node::service::settle::{ClearingSpec, ConfirmSpec};
use pdx_node::service::transfers::{FetchSpec, ForwardSpec};
use pdx_node::timearg::{DayBound, parse_time};
use std::path::PathBuf;

fn opt_absolute(p: &Option<PathBuf>) -> Result<Option<String>> {
    p.as_deref().map(absolute).transpose()
}

/// Operator name for audit entries.
fn operator(cli: &Cli) -> String {
    cli.operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

pub async fn run(cli: Cli) -> Result<u8> {
    let op = operator(&cli);
    let json = cli.json;
    match &cli.command {
        Command::Ca(c) => offline::ca(c, json),
        Command::Schema(c) => offline::schema(c, json),
        Command::Calls(CallsCmd::Verify { file, ca }) => {
            let verdicts = pdx_node::service::calls::verify_evidence(
                &file.display().to_string(),
                &ca.display().to_string(),
            )
            .map_err(node_error)?;
            let ok = verdicts.iter().all(|v| v.verdict == "valid");
            render::value(json, &verdicts)?;
            Ok(if ok { 0 } else { 2 })
        }
        Command::Gateway(GatewayCmd::Enable { home, listen }) => {
            offline::gateway_enable(home, listen, json)
        }
        Command::Gateway(GatewayCmd::Route { home, to, via }) => {
            offline::services_config(home, json, |s| {
                s.routes.push(pdx_node::config::Route {
                    to: to.clone(),
                    via: via.clone(),
                })
            })
        }
        Command::Gateway(GatewayCmd::Relay { home, from, to }) => {
            offline::services_config(home, json, |s| {
                s.relay.push(pdx_node::config::RelayRule {
                    from: from.clone(),
                    to: to.clone(),
                })
            })
        }
        Command::Init(a) => offline::init(a, json),
        Command::Generate(g) => crate::generate::run(g),
        Command::Backup(BackupCmd::Verify {
            file,
            backup_passphrase_file,
        }) => {
            let pass =
                pdx_node::keys::passphrase_from_file(backup_passphrase_file).map_err(node_error)?;
            let v = pdx_node::service::backup::verify(file, &pass).map_err(node_error)?;
            render::value(json, &v)?;
            Ok(0)
        }
        Command::Restore(a) if !a.acknowledge_loss => {
            let (Some(from), Some(pf)) = (&a.from, &a.backup_passphrase_file) else {
                return Err(Exit::usage(
                    "pdx restore needs --from FILE and --backup-passphrase-file FILE",
                ));
            };
            let pass = pdx_node::keys::passphrase_from_file(pf).map_err(node_error)?;
            let r = pdx_node::service::backup::restore(from, &pass, &a.home).map_err(node_error)?;
            render::value(json, &r)?;
            if !json {
                outln!(
                    "restored; `pdx serve --home {}` asks the peers what they witnessed before it signs anything",
                    a.home.display()
                );
            }
            Ok(0)
        }
        Command::Serve(a) if a.detach => {
            serve::detach(&a.home, a.passphrase_file.as_deref(), a.metrics.as_deref())
        }
        Command::Serve(a) => {
            serve::serve(
                &a.home,
                a.passphrase_file.as_deref(),
                &op,
                a.metrics.as_deref(),
            )
            .await
        }
        Command::Audit(AuditCmd::Verify { .. } | AuditCmd::Reconcile { .. }) => {
            audit::run(&cli, &op).await
        }
        Command::He(HeCmd::VerifySum {
            bundle: Some(bundle),
            ca,
            crs,
            ..
        }) => {
            let ca = ca
                .as_deref()
                .ok_or_else(|| Exit::usage("--bundle needs --ca (the network CA certificate)"))?;
            let v = pdx_node::service::aggregate::verify_bundle_file(
                &bundle.display().to_string(),
                &ca.display().to_string(),
                crs.as_ref().map(|c| c.display().to_string()).as_deref(),
            )
            .map_err(node_error)?;
            let ok = v.verdict == SumVerdict::Ok;
            render::outcome(json, &Outcome::SumChecked(v))?;
            Ok(if ok { 0 } else { 2 })
        }
        Command::Releases(a) => {
            let outcome = node_command(
                &a.home.home,
                a.home.passphrase_file.as_deref(),
                Request::Releases,
                &op,
                json,
            )
            .await?;
            let Outcome::Releases(mut list) = outcome else {
                return Err(anyhow::anyhow!(
                    "the node answered `releases` with another result"
                ));
            };
            list.retain(|r| {
                use pdx_node::service::release::ReleaseInfo;
                let (dataset, peer, received) = match r {
                    ReleaseInfo::Out(o) => (&o.dataset, &o.to, false),
                    ReleaseInfo::In(i) => (&i.dataset, &i.from, true),
                };
                let direction_wanted = if received { !a.produced } else { !a.received };
                direction_wanted
                    && a.dataset.as_ref().is_none_or(|d| d == dataset)
                    && a.peer.as_ref().is_none_or(|p| p == peer)
            });
            if a.ids {
                for r in &list {
                    let id = match r {
                        pdx_node::service::release::ReleaseInfo::Out(o) => &o.release,
                        pdx_node::service::release::ReleaseInfo::In(i) => &i.release,
                    };
                    outln!("{id}");
                }
            } else {
                render::outcome(json, &Outcome::Releases(list))?;
            }
            Ok(0)
        }
        Command::Doctor(home) => {
            // A node that cannot even be opened is the worst finding, not a
            // failure to run: monitoring reads the exit code alike.
            let report = match node_command(
                &home.home,
                home.passphrase_file.as_deref(),
                Request::Doctor,
                &op,
                json,
            )
            .await
            {
                Ok(Outcome::Doctor(r)) => r,
                Ok(_) => return Err(anyhow!("the node answered `doctor` with another result")),
                Err(e) => pdx_node::service::doctor::DoctorReport {
                    dept: String::new(),
                    worst: Severity::Error,
                    findings: vec![pdx_node::service::doctor::Finding {
                        check: "open".into(),
                        peer: None,
                        severity: Severity::Error,
                        message: format!("{e:#}"),
                    }],
                },
            };
            let worst = report.worst;
            render::outcome(json, &Outcome::Doctor(report))?;
            Ok(match worst {
                Severity::Ok => 0,
                Severity::Warn => 1,
                Severity::Error => 2,
            })
        }
        other => {
            let (home, request) = request(other)?;
            let outcome = node_command(
                &home.home,
                home.passphrase_file.as_deref(),
                request,
                &op,
                json,
            )
            .await?;
            // verify-sum reports a mismatch like `audit verify` reports tampering.
            let mismatch =
                matches!(&outcome, Outcome::SumChecked(s) if s.verdict != SumVerdict::Ok);
            render::outcome(json, &outcome)?;
            Ok(if mismatch { 2 } else { 0 })
        }
    }
}

fn time_arg(s: &str, flag: &str, day: DayBound) -> Result<u64> {
    parse_time(s, flag, day).map_err(|e| Exit::usage(e.to_string()))
}

/// Maps a node command to its home and request.
pub fn request(cmd: &Command) -> Result<(HomeArgs, Request)> {
    let h = |a: &HomeArgs, r: Request| Ok((a.clone(), r));
    match cmd {
        Command::Peer(PeerCmd::Add { home, dept, addr }) => {
            if dept.len() != addr.len() {
                return Err(Exit::usage(format!(
                    "{} --dept but {} --addr: give one address per department",
                    dept.len(),
                    addr.len()
                )));
            }
            h(
                home,
                Request::PeerAdd {
                    peers: dept.iter().cloned().zip(addr.iter().cloned()).collect(),
                },
            )
        }
        Command::Peer(PeerCmd::List(home)) => h(home, Request::Status),
        Command::Import(a) => h(
            &a.home,
            Request::Import(ImportSpec {
                schema_path: absolute(&a.schema)?,
                csv_path: absolute(&a.csv)?,
                dataset: a.dataset.clone(),
                encoding: a.encoding.parse().map_err(Exit::usage)?,
                on_error: a.on_error.parse().map_err(Exit::usage)?,
                rejects: opt_absolute(&a.rejects)?,
                replace: a.replace,
                append: a.append,
            }),
        ),
        Command::Datasets(home) => h(home, Request::Datasets),
        Command::Grant(g) => match &g.sub {
            Some(GrantCmd::List(home)) => h(home, Request::GrantList),
            Some(GrantCmd::Revoke { home, id }) => h(home, Request::GrantRevoke { id: id.clone() }),
            None => {
                let missing = |what: &str| Exit::usage(format!("--{what} is required"));
                let home = HomeArgs {
                    home: g.home.clone().ok_or_else(|| missing("home"))?,
                    passphrase_file: g.passphrase_file.clone(),
                };
                let expires_ms = g
                    .expires
                    .as_deref()
                    .map(|e| time_arg(e, "--expires", DayBound::End))
                    .transpose()?;
                if expires_ms.is_none() {
                    eprintln!(
                        "pdx: warning: no --expires: this grant never expires (its audit entry says so); give --expires YYYY-MM-DD or +Nd to limit it"
                    );
                }
                let service = g.service.is_some();
                let need = |v: &Option<String>, what: &str| match (v, service) {
                    (Some(v), _) => Ok(v.clone()),
                    (None, true) => Ok(String::new()),
                    (None, false) => Err(missing(what)),
                };
                Ok((
                    home,
                    Request::Grant(GrantSpec {
                        dataset: need(&g.dataset, "dataset")?,
                        to: g.to.clone().ok_or_else(|| missing("to"))?,
                        profile: need(&g.profile, "profile")?,
                        purpose: g.purpose.clone().ok_or_else(|| missing("purpose"))?,
                        agreement: g.agreement.clone(),
                        expires_ms,
                        service: g.service.clone(),
                    }),
                ))
            }
        },
        Command::Catalog(a) => h(
            &a.home,
            Request::Catalog {
                peer: a.peer.clone(),
            },
        ),
        Command::Fetch(a) => h(
            &a.home,
            Request::Fetch(FetchSpec {
                peer: a.peer.clone(),
                dataset: a.dataset.clone(),
                profile: a.profile.clone(),
                agreement: a.agreement.clone(),
                purpose: a.purpose.clone(),
                retries: a.retries,
                incremental: a.incremental,
            }),
        ),
        Command::Forward(a) => h(
            &a.home,
            Request::Forward(ForwardSpec {
                release: a.release.clone(),
                all_releases: a.all_releases,
                to: a.to.clone(),
                retries: a.retries,
            }),
        ),
        Command::Releases(a) => h(&a.home, Request::Releases),
        Command::Export(a) => h(
            &a.home,
            Request::Export(ExportSpec {
                release: a.release.clone(),
                out: absolute(&a.out)?,
            }),
        ),
        Command::Release(ReleaseCmd::Preview {
            home,
            dataset,
            profile,
            agreement,
            out,
            report,
            assume_qi,
        }) => h(
            home,
            Request::Preview(PreviewSpec {
                dataset: dataset.clone(),
                profile: profile.clone(),
                agreement: agreement.clone(),
                out: absolute(out)?,
                report: absolute(report)?,
                assume_qi: assume_qi.clone(),
            }),
        ),
        Command::Status(home) => h(home, Request::Status),
        Command::Doctor(home) => h(home, Request::Doctor),
        Command::Backup(BackupCmd::Create {
            home,
            out,
            backup_passphrase_file,
        }) => h(
            home,
            Request::BackupCreate {
                out: absolute(out)?,
                passphrase_file: absolute(backup_passphrase_file)?,
            },
        ),
        Command::Restore(a) => h(
            &HomeArgs {
                home: a.home.clone(),
                passphrase_file: a.passphrase_file.clone(),
            },
            Request::RestoreAcknowledge {
                reason: a.reason.clone().unwrap_or_default(),
            },
        ),
        Command::Cert(CertCmd::Install { home, cert_dir }) => h(
            home,
            Request::CertInstall {
                cert_dir: absolute(cert_dir)?,
            },
        ),
        Command::Crl(CrlCmd::Update { home, crl }) => h(
            home,
            Request::CrlUpdate {
                crl: absolute(crl)?,
            },
        ),
        Command::Key(KeyCmd::Rotate { home, kind }) => {
            h(home, Request::KeyRotate { kind: kind.clone() })
        }
        Command::Key(KeyCmd::Retire { home, key_id }) => h(
            home,
            Request::KeyRetire {
                key_id: key_id.clone(),
            },
        ),
        Command::Keys(KeysCmd::Fetch { home, peer, of }) => h(
            home,
            Request::KeysFetch {
                peer: peer.clone(),
                of: of.clone(),
            },
        ),
        Command::Keys(KeysCmd::List(home)) => h(home, Request::KeysList),
        Command::Audit(AuditCmd::Export { home, out }) => h(
            home,
            Request::AuditExport {
                out: absolute(out)?,
            },
        ),
        Command::Audit(AuditCmd::Prove { home, seq }) => h(home, Request::AuditProve { seq: *seq }),
        Command::Audit(AuditCmd::Consistency { home, from, to }) => h(
            home,
            Request::AuditConsistency {
                from: *from,
                to: *to,
            },
        ),
        Command::Audit(AuditCmd::Checkpoint { home, out }) => h(
            home,
            Request::AuditCheckpoint {
                out: opt_absolute(out)?,
            },
        ),
        Command::Audit(AuditCmd::Show {
            home,
            dataset,
            counterparty,
            kind,
            since,
            until,
            limit,
        }) => h(
            home,
            Request::AuditShow(EntryFilter {
                dataset: dataset.clone(),
                counterparty: counterparty.clone(),
                kind: kind.clone(),
                since_ms: since
                    .as_deref()
                    .map(|s| time_arg(s, "--since", DayBound::Start))
                    .transpose()?,
                until_ms: until
                    .as_deref()
                    .map(|s| time_arg(s, "--until", DayBound::End))
                    .transpose()?,
                limit: *limit,
            }),
        ),
        Command::He(c) => he_request(c),
        Command::Settle(SettleCmd::Confirm {
            home,
            release,
            all,
            registry,
            amount_field,
            to,
            out,
            month,
            date_field,
        }) => h(
            home,
            Request::SettleConfirm(ConfirmSpec {
                releases: release.clone(),
                all: *all,
                registry: absolute(registry)?,
                amount_field: amount_field.clone(),
                to: to.clone(),
                out: opt_absolute(out)?,
                month: month.clone(),
                date_field: Some(date_field.clone()),
            }),
        ),
        Command::Settle(SettleCmd::Disputes { home }) => h(home, Request::SettleDisputes),
        Command::Settle(SettleCmd::Clearing {
            home,
            profile,
            amount_field,
        }) => h(
            home,
            Request::SettleClearing(ClearingSpec {
                profile: profile.clone(),
                amount_field: amount_field.clone(),
            }),
        ),
        Command::Service(ServiceCmd::Publish {
            home,
            schema,
            service,
            backend,
            timeout,
        }) => h(
            home,
            Request::ServiceStore(ServiceSpec {
                schema: absolute(schema)?,
                service: service.clone(),
                backend: Some(backend.clone()),
                timeout_ms: *timeout,
            }),
        ),
        Command::Service(ServiceCmd::Add {
            home,
            schema,
            service,
        }) => h(
            home,
            Request::ServiceStore(ServiceSpec {
                schema: absolute(schema)?,
                service: service.clone(),
                backend: None,
                timeout_ms: None,
            }),
        ),
        Command::Service(ServiceCmd::List(home)) => h(home, Request::ServiceList),
        Command::Service(ServiceCmd::Record {
            home,
            service,
            dataset,
            schema,
            map,
            flush,
        }) => match (service, dataset, map) {
            (Some(service), Some(dataset), Some(map)) => h(
                home,
                Request::ServiceRecord(RecordSpec {
                    service: service.clone(),
                    dataset: dataset.clone(),
                    schema: opt_absolute(schema)?,
                    map: absolute(map)?,
                }),
            ),
            _ if *flush => h(home, Request::ServiceFlush),
            _ => Err(anyhow!(
                "pdx service record needs --service, --dataset and --map (and --schema for a dataset that does not exist yet), or --flush"
            )),
        },
        Command::Call(a) => {
            let body = if a.body.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&a.body)
                    .map_err(|e| anyhow!("--body {}: {e}", a.body.display()))?
            };
            h(
                &a.home,
                Request::Call(CallSpec {
                    to: a.to.clone(),
                    service: a.service.clone(),
                    body,
                    via: a.via.clone(),
                    idempotency_key: a.idempotency_key.clone(),
                }),
            )
        }
        Command::Calls(CallsCmd::List {
            home,
            service,
            peer,
            outcome,
            since,
            limit,
        }) => h(
            home,
            Request::CallsList(CallFilter {
                service: service.clone(),
                peer: peer.clone(),
                outcome: outcome.clone(),
                since_ms: since
                    .as_deref()
                    .map(|s| time_arg(s, "--since", DayBound::Start))
                    .transpose()?,
                limit: *limit,
            }),
        ),
        Command::Calls(CallsCmd::Show { home, id }) => {
            h(home, Request::CallsShow { id: id.clone() })
        }
        Command::Calls(CallsCmd::Export { home, ids, out }) => h(
            home,
            Request::CallsExport {
                ids: ids.clone(),
                out: absolute(out)?,
            },
        ),
        Command::Submit { home, file, to } => h(
            home,
            Request::SubmitFile(SubmitSpec {
                file: absolute(file)?,
                to: to.clone(),
            }),
        ),
        Command::Ca(_)
        | Command::Init(_)
        | Command::Serve(_)
        | Command::Generate(_)
        | Command::Backup(BackupCmd::Verify { .. })
        | Command::Schema(_)
        | Command::Gateway(_)
        | Command::Calls(CallsCmd::Verify { .. })
        | Command::Audit(AuditCmd::Verify { .. } | AuditCmd::Reconcile { .. }) => {
            Err(anyhow!("this command does not run on a node"))
        }
    }
}

fn he_request(c: &HeCmd) -> Result<(HomeArgs, Request)> {
    let h = |a: &HomeArgs, r: Request| Ok((a.clone(), r));
    match c {
        HeCmd::Keygen {
            home,
            query,
            schema,
            values,
            group_by,
            categories,
            k,
            contributors,
            aggregator,
            deadline,
            out,
            committee,
            threshold,
            crs,
        } => {
            let out = match out {
                Some(o) => absolute(o)?,
                None => absolute(&PathBuf::from(format!("{query}.query")))?,
            };
            h(
                home,
                Request::HeKeygen(QuerySpec {
                    query_id: query.clone(),
                    schema_path: absolute(schema)?,
                    values: values.clone(),
                    group_by: group_by.clone(),
                    categories_path: absolute(categories)?,
                    k: *k,
                    contributors: contributors.clone(),
                    aggregator: aggregator.clone(),
                    deadline_ms: time_arg(deadline, "--deadline", DayBound::End)?,
                    out,
                    committee: committee.clone(),
                    threshold: *threshold,
                    crs: crs.clone(),
                }),
            )
        }
        HeCmd::KeyShare { home, query } => h(
            home,
            Request::HeKeyShare {
                query: query.clone(),
            },
        ),
        HeCmd::KeyFinish { home, query, out } => h(
            home,
            Request::HeKeyFinish {
                query: query.clone(),
                out: match out {
                    Some(o) => absolute(o)?,
                    None => absolute(&PathBuf::from(format!("{query}.query")))?,
                },
            },
        ),
        HeCmd::Partial { home, query } => h(
            home,
            Request::HePartial {
                query: query.clone(),
            },
        ),
        HeCmd::Combine { home, query } => h(
            home,
            Request::HeCombine {
                query: query.clone(),
            },
        ),
        HeCmd::Contribute {
            home,
            query,
            dataset,
            to,
            out,
        } => h(
            home,
            Request::HeContribute(ContributeSpec {
                query: absolute(query)?,
                dataset: dataset.clone(),
                to: to.clone(),
                out: opt_absolute(out)?,
            }),
        ),
        HeCmd::Aggregate {
            home,
            query,
            to,
            out,
        } => h(
            home,
            Request::HeAggregate(AggregateSpec {
                query: query.clone(),
                to: to.clone(),
                out: opt_absolute(out)?,
            }),
        ),
        HeCmd::Decrypt { home, query } => h(
            home,
            Request::HeDecrypt {
                query: query.clone(),
            },
        ),
        HeCmd::VerifySum {
            home: Some(home),
            passphrase_file,
            query: Some(query),
            ..
        } => Ok((
            HomeArgs {
                home: home.clone(),
                passphrase_file: passphrase_file.clone(),
            },
            Request::HeVerifySum {
                query: query.clone(),
            },
        )),
        HeCmd::VerifySum { .. } => Err(Exit::usage(
            "pdx he verify-sum needs --home and --query, or --bundle and --ca",
        )),
        HeCmd::Export { home, query, out } => h(
            home,
            Request::HeExport {
                query: query.clone(),
                out: absolute(out)?,
            },
        ),
        HeCmd::List(home) => h(home, Request::HeList),
        HeCmd::Crs(HeCrsCmd::Install { home, file, digest }) => h(
            home,
            Request::HeCrsInstall {
                file: absolute(file)?,
                digest: digest.clone(),
            },
        ),
    }
}
