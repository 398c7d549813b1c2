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
        CaCmd::Init { dir, network } => {
            render::value(json, &pki::ca_init(dir, network).map_err(node_error)?)?
        }
        CaCmd::Issue {
            dir,
            dept,
            name,
            out,
        } => render::value(
            json,
            &pki::ca_issue(dir, dept, name, out).map_err(node_error)?,
        )?,
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
    let file = match c {
        SchemaCmd::Check { file } | SchemaCmd::Show { file } => file,
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        anyhow!(Exit {
            code: 1,
            message: format!("{}: {e}", file.display()),
        })
    })?;
    let schema = pdx_schemas::Schema::parse(&text, &file.display().to_string()).map_err(|e| {
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
