//! Commands that need no node: the network CA, schema checks, `pdx init`.

use crate::args::{CaCmd, InitArgs, SchemaCmd};
use crate::session::read_passphrase;
use crate::{Exit, node_error, render};
use anyhow::{Result, anyhow};
use pdx_node::Node;
use pdx_node::config::Home;
use pdx_node::pki;
use serde::Serialize;

/// `pdx ca revoke`.
#[derive(Serialize)]
struct Revoked {
    revoked: String,
    crl: String,
    next: String,
}

/// `pdx ca crl`.
#[derive(Serialize)]
struct CrlWritten {
    crl: String,
}

/// One line of `pdx ca list`.
#[derive(Serialize)]
struct Issued {
    serial: String,
    dept: String,
    name: String,
    not_after: String,
    revoked: bool,
}

/// `pdx ca ...`.
pub fn ca(c: &CaCmd, json: bool) -> Result<u8> {
    match c {
        CaCmd::Init {
            dir,
            network,
            suite,
        } => render::value(
            json,
            &pki::ca_init(dir, network, *suite).map_err(node_error)?,
        )?,
        CaCmd::Issue {
            dir,
            dept,
            name,
            out,
            renew: false,
            ..
        } => {
            let (Some(dept), Some(name)) = (dept, name) else {
                return Err(anyhow!(
                    "give --dept and --name (or --renew --cert CURRENT)"
                ));
            };
            render::value(
                json,
                &pki::ca_issue(dir, dept, name, out).map_err(node_error)?,
            )?
        }
        CaCmd::Issue {
            dir,
            dept,
            name,
            out,
            renew: true,
            cert,
            new_key,
        } => {
            let cert = cert
                .as_ref()
                .ok_or_else(|| anyhow!("--renew needs --cert CURRENT (the node's tls/node.crt)"))?;
            let issued = pki::ca_renew(dir, cert, dept.as_deref(), name.as_deref(), *new_key, out)
                .map_err(node_error)?;
            render::value(json, &issued)?
        }
        CaCmd::Revoke { dir, serial } => {
            let crl = pki::ca_revoke(dir, serial).map_err(node_error)?;
            render::value(
                json,
                &Revoked {
                    revoked: serial.clone(),
                    crl: crl.display().to_string(),
                    next: format!(
                        "install it on every node: pdx crl update --home HOME --crl {}",
                        crl.display()
                    ),
                },
            )?
        }
        CaCmd::Crl { dir } => render::value(
            json,
            &CrlWritten {
                crl: pki::write_crl(dir)
                    .map_err(node_error)?
                    .display()
                    .to_string(),
            },
        )?,
        CaCmd::ZkCrs { dir, out } => {
            let suite = pki::ca_suite(dir).map_err(node_error)?;
            render::value(
                json,
                &pdx_node::service::aggregate::crs::generate(suite, out).map_err(node_error)?,
            )?
        }
        CaCmd::List { dir } => {
            let list: Vec<Issued> = pki::ca_list(dir)
                .map_err(node_error)?
                .into_iter()
                .map(|(c, revoked)| Issued {
                    serial: c.serial,
                    dept: c.dept,
                    name: c.name,
                    not_after: c.not_after,
                    revoked,
                })
                .collect();
            render::value(json, &list)?
        }
    }
    Ok(0)
}

/// `pdx schema check` result.
#[derive(Serialize)]
struct SchemaChecked {
    file: String,
    valid: bool,
    dataset: String,
    fields: usize,
    profiles: Vec<String>,
    digest: String,
}

/// `pdx schema ...`.
pub fn schema(c: &SchemaCmd, json: bool) -> Result<u8> {
    let (file, suite) = match c {
        SchemaCmd::Check { file, suite } | SchemaCmd::Show { file, suite } => (file, *suite),
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        anyhow!(Exit {
            code: 1,
            message: format!("{}: {e}", file.display()),
        })
    })?;
    if pdx_schemas::service::ServiceDef::is_service_source(&text) {
        return service_schema(c, file, &text, suite, json);
    }
    let schema =
        pdx_schemas::Schema::parse(&text, &file.display().to_string(), suite).map_err(|e| {
            anyhow!(Exit {
                code: 1,
                message: e.to_string(),
            })
        })?;
    match c {
        SchemaCmd::Check { .. } => render::value(
            json,
            &SchemaChecked {
                file: file.display().to_string(),
                valid: true,
                dataset: schema.dataset.id.clone(),
                fields: schema.fields.len(),
                profiles: schema.profiles.keys().cloned().collect(),
                digest: schema.digest.to_hex(),
            },
        )?,
        SchemaCmd::Show { .. } => render::schema(json, &schema)?,
    }
    Ok(0)
}

/// `pdx schema check|show` of a service definition.
fn service_schema(
    c: &SchemaCmd,
    file: &std::path::Path,
    text: &str,
    suite: pdx_crypto::Suite,
    json: bool,
) -> Result<u8> {
    use pdx_schemas::service::{Direction, ServiceDef};
    let def = ServiceDef::parse(text, &file.display().to_string(), suite).map_err(|e| {
        anyhow!(Exit {
            code: 1,
            message: e.to_string(),
        })
    })?;
    let fields = |dir| -> Vec<serde_json::Value> {
        def.fields(dir)
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.field.name,
                    "type": f.field.ty.name(),
                    "nullable": f.field.nullable,
                    "class": f.field.classification(),
                    "sealed": f.sealed,
                })
            })
            .collect()
    };
    let checked = serde_json::json!({
        "file": file.display().to_string(),
        "valid": true,
        "service": def.id,
        "version": def.version,
        "grade": def.grade,
        "sharing": def.sharing,
        "request": if matches!(c, SchemaCmd::Show { .. }) { serde_json::Value::Array(fields(Direction::Request)) } else { def.request.len().into() },
        "response": if matches!(c, SchemaCmd::Show { .. }) { serde_json::Value::Array(fields(Direction::Response)) } else { def.response.len().into() },
        "max_request_bytes": def.max_request_bytes,
        "max_response_bytes": def.max_response_bytes,
        "timeout_ms": def.timeout_ms,
        "digest": def.digest.to_hex(),
    });
    render::value(json, &checked)?;
    Ok(0)
}

/// `pdx gateway enable`.
pub fn gateway_enable(home: &std::path::Path, listen: &str, json: bool) -> Result<u8> {
    let home = pdx_node::config::Home::new(home);
    let (listen, token_file) =
        pdx_node::service::calls::gateway::enable(&home, listen).map_err(crate::node_error)?;
    render::value(
        json,
        &serde_json::json!({
            "gateway": listen,
            "token_file": token_file,
            "note": "takes effect at the next `pdx serve`; send Authorization: Bearer <token file contents>",
        }),
    )?;
    Ok(0)
}

/// `pdx gateway route|relay`: edits `[services]` of `pdx.toml`.
pub fn services_config(
    home: &std::path::Path,
    json: bool,
    edit: impl FnOnce(&mut pdx_node::config::ServiceSettings),
) -> Result<u8> {
    let home = pdx_node::config::Home::new(home);
    let mut cfg = pdx_node::config::Config::load(&home).map_err(crate::node_error)?;
    edit(&mut cfg.services);
    cfg.save(&home).map_err(crate::node_error)?;
    render::value(
        json,
        &serde_json::json!({
            "routes": cfg.services.routes,
            "relay": cfg.services.relay,
            "note": "takes effect at the next `pdx serve`",
        }),
    )?;
    Ok(0)
}

/// `pdx init`.
pub fn init(a: &InitArgs, json: bool) -> Result<u8> {
    let pass = read_passphrase(a.passphrase_file.as_deref(), a.passphrase_prompt)?;
    if pass.is_none() {
        eprintln!(
            "pdx: warning: no passphrase: the node's keys in {}/keys are stored unencrypted (only file permissions 0600 protect them); give --passphrase-file FILE or --passphrase-prompt to encrypt them",
            a.home.display()
        );
    }
    let out = Node::init(
        &Home::new(&a.home),
        &a.cert_dir,
        &a.listen,
        pass.as_deref().map(|p| p.as_slice()),
    )
    .map_err(node_error)?;
    render::init(json, &out)?;
    Ok(0)
}
