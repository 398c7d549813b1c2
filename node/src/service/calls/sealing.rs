//! Sealing and opening the fields of call messages (`docs/crypto.md`
//! "Calls"): one field envelope per message, for its one recipient.

use crate::error::{NodeError, Result};
use crate::node::Node;
use pdx_crypto::envelope::{Opener, Recipient, ReleaseContext, Sealer, WrappedKey};
use pdx_schemas::service::{Direction, ServiceDef, Values};
use std::collections::BTreeMap;

/// Clear fields, sealed fields and the wrapped key of one message.
pub type SealedValues = (
    BTreeMap<String, String>,
    BTreeMap<String, serde_bytes::ByteBuf>,
    Option<WrappedKey>,
);

/// The sealing context of one message of a call: the field envelope's
/// dataset id is `call:SERVICE:request|response`, its release id the call id.
pub fn context(service: &str, dir: Direction, call_id: &[u8]) -> Result<ReleaseContext> {
    Ok(ReleaseContext {
        dataset_id: format!("call:{service}:{}", dir.label()),
        release_id: call_id
            .try_into()
            .map_err(|_| NodeError::Invalid("call id is not 16 bytes".into()))?,
    })
}

/// Seals `values`' sealed fields for `recipient` with the network's `suite`;
/// returns (clear, sealed, key).
pub fn seal_values(
    suite: pdx_crypto::Suite,
    def: &ServiceDef,
    dir: Direction,
    call_id: &[u8],
    values: &Values,
    recipient: Option<Recipient>,
) -> Result<SealedValues> {
    let mut clear = BTreeMap::new();
    let mut sealed = BTreeMap::new();
    let needs_seal = def.fields(dir).iter().any(|f| {
        f.sealed
            && values
                .get(&f.field.name)
                .is_some_and(|v| v.as_deref().is_some_and(|s| !s.is_empty()))
    });
    let mut key = None;
    let sealer = if needs_seal {
        let r =
            recipient.ok_or_else(|| NodeError::Invalid("no recipient key to seal for".into()))?;
        let (sealer, mut wrapped) = Sealer::new(suite, &context(&def.id, dir, call_id)?, &[r])?;
        key = wrapped.pop();
        Some(sealer)
    } else {
        None
    };
    for (i, f) in def.fields(dir).iter().enumerate() {
        let Some(v) = values
            .get(&f.field.name)
            .and_then(|v| v.as_deref())
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        match (&sealer, f.sealed) {
            (Some(s), true) => {
                let mut out = Vec::with_capacity(v.len() + 16);
                let index =
                    u32::try_from(i).map_err(|_| NodeError::Invalid("too many fields".into()))?;
                s.seal_field(0, 0, index, &f.field.name, v.as_bytes(), &mut out)?;
                sealed.insert(f.field.name.clone(), serde_bytes::ByteBuf::from(out));
            }
            _ => {
                clear.insert(f.field.name.clone(), v.to_string());
            }
        }
    }
    Ok((clear, sealed, key))
}

/// Opens a message's sealed fields addressed to this node; returns all values.
pub fn open_values(
    node: &Node,
    def: &ServiceDef,
    dir: Direction,
    call_id: &[u8],
    clear: &BTreeMap<String, String>,
    sealed: &BTreeMap<String, serde_bytes::ByteBuf>,
    key: Option<&pdx_crypto::envelope::WrappedKey>,
) -> Result<Values> {
    let mut values: Values = clear
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let fields = def.fields(dir);
    for name in clear.keys() {
        if fields.iter().any(|f| &f.field.name == name && f.sealed) {
            return Err(NodeError::Invalid(format!(
                "{} field {name} must travel sealed but came in clear",
                dir.label()
            )));
        }
    }
    if sealed.is_empty() {
        return Ok(values);
    }
    let wrapped: Vec<_> = key.cloned().into_iter().collect();
    let opener = {
        let keys = node.keys()?;
        Opener::new(
            node.suite,
            &context(&def.id, dir, call_id)?,
            &wrapped,
            &node.config.dept,
            |kid| keys.encryption_key(kid),
        )?
    };
    for (name, ct) in sealed {
        let (i, f) = fields
            .iter()
            .enumerate()
            .find(|(_, f)| &f.field.name == name)
            .ok_or_else(|| {
                NodeError::Invalid(format!(
                    "sealed {} field {name:?} is not in the definition",
                    dir.label()
                ))
            })?;
        if !f.sealed {
            return Err(NodeError::Invalid(format!(
                "{} field {name} is not declared sealed",
                dir.label()
            )));
        }
        let index = u32::try_from(i).map_err(|_| NodeError::Invalid("too many fields".into()))?;
        let plain = opener.open_field(0, 0, index, name, ct)?;
        let text = String::from_utf8(plain).map_err(|_| {
            NodeError::Invalid(format!("sealed {} field {name} is not UTF-8", dir.label()))
        })?;
        values.insert(name.clone(), Some(text));
    }
    Ok(values)
}
