//! The records of a chunk (byte format in `docs/protocol.md`):
//!
//! ```text
//! chunk records = array(n) of record
//! record        = array(1 + fields): [record index (uint), value...]
//! value         = null | text | [recipient index (uint), ciphertext (bytes)]
//! ```
//! Encoded with the deterministic writer, decoded with the strict reader.

use pdx_crypto::canon::{CanonError, Reader, Writer};
use pdx_schemas::engine::{OutValue, RecordSink};

/// Builds one chunk's records.
#[derive(Debug)]
pub struct ChunkBuilder {
    body: Writer,
    count: u64,
}

impl Default for ChunkBuilder {
    fn default() -> Self {
        ChunkBuilder {
            body: Writer::with_capacity(1 << 16),
            count: 0,
        }
    }
}

/// Appends one record's encoding to `w`.
fn encode_record(w: &mut Writer, index: u64, values: &[OutValue<'_>]) {
    w.array(values.len() + 1);
    w.uint(index);
    for v in values {
        match v {
            OutValue::Null => w.null(),
            OutValue::Text(t) => w.text(t),
            OutValue::Sealed {
                recipient,
                ciphertext,
            } => {
                w.array(2);
                w.uint(*recipient as u64);
                w.bytes(ciphertext);
            }
        }
    }
}

impl ChunkBuilder {
    /// Appends a record.
    pub fn push(&mut self, index: u64, values: &[OutValue<'_>]) {
        encode_record(&mut self.body, index, values);
        self.count += 1;
    }

    /// Appends a record encoded by [`EncodedRecords`].
    pub fn push_encoded(&mut self, record: &[u8]) {
        self.body.append_encoded(record);
        self.count += 1;
    }

    /// Records so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished records bytes (array header + records).
    pub fn finish(self) -> Vec<u8> {
        let mut head = Writer::with_capacity(9);
        head.array(self.count as usize);
        let mut out = head.finish();
        out.extend_from_slice(&self.body.finish());
        out
    }
}

/// Records encoded as [`ChunkBuilder::push`] would, each with the part
/// (recipient of its first sealed value) it belongs to: one block's records,
/// encoded on a worker thread and then placed into chunks in order.
#[derive(Debug)]
pub struct EncodedRecords {
    body: Writer,
    /// Per record: its part and where its bytes end.
    ends: Vec<(Option<usize>, usize)>,
}

impl Default for EncodedRecords {
    fn default() -> Self {
        EncodedRecords {
            body: Writer::with_capacity(1 << 18),
            ends: Vec::new(),
        }
    }
}

impl EncodedRecords {
    /// The part a record belongs to: the recipient of its first sealed value.
    pub fn part_of(values: &[OutValue<'_>]) -> Option<usize> {
        values.iter().find_map(|v| match v {
            OutValue::Sealed { recipient, .. } => Some(*recipient),
            _ => None,
        })
    }

    /// Appends a record.
    pub fn push(&mut self, index: u64, values: &[OutValue<'_>]) {
        encode_record(&mut self.body, index, values);
        self.ends.push((Self::part_of(values), self.body.len()));
    }

    /// Each record's part and bytes, in order.
    pub fn records(&self) -> impl Iterator<Item = (Option<usize>, &[u8])> + '_ {
        let bytes = self.body.as_slice();
        let mut start = 0;
        self.ends.iter().map(move |&(part, end)| {
            let record = &bytes[start..end];
            start = end;
            (part, record)
        })
    }
}

impl RecordSink for EncodedRecords {
    fn record(&mut self, index: u64, values: &[OutValue<'_>]) -> Result<(), String> {
        self.push(index, values);
        Ok(())
    }
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// Null.
    Null,
    /// Text.
    Text(&'a str),
    /// Sealed for a recipient.
    Sealed {
        /// Recipient index.
        recipient: usize,
        /// Ciphertext.
        ciphertext: &'a [u8],
    },
}

/// Decodes every record of `bytes` (each with `fields` values), calling `f` with
/// the record index and values.
pub fn decode(
    bytes: &[u8],
    fields: usize,
    mut f: impl FnMut(u64, &[Value<'_>]) -> Result<(), String>,
) -> Result<u64, String> {
    let mut r = Reader::new(bytes);
    let n = r.array().map_err(|e| e.0)?;
    let mut values = Vec::with_capacity(fields);
    for _ in 0..n {
        let len = r.array().map_err(|e| e.0)?;
        if len != fields as u64 + 1 {
            return Err(format!(
                "record has {} values, the manifest lists {fields} fields",
                len.saturating_sub(1)
            ));
        }
        let index = r.uint().map_err(|e| e.0)?;
        values.clear();
        for _ in 0..fields {
            if r.take_null() {
                values.push(Value::Null);
                continue;
            }
            match r.peek_major() {
                Some(3) => values.push(Value::Text(r.text().map_err(|e: CanonError| e.0)?)),
                Some(4) => {
                    if r.array().map_err(|e| e.0)? != 2 {
                        return Err("sealed value must be [recipient, ciphertext]".into());
                    }
                    let recipient = usize::try_from(r.uint().map_err(|e| e.0)?)
                        .map_err(|_| "recipient index too large")?;
                    values.push(Value::Sealed {
                        recipient,
                        ciphertext: r.bytes().map_err(|e| e.0)?,
                    });
                }
                _ => return Err(format!("unexpected item at byte {}", r.offset())),
            }
        }
        f(index, &values)?;
    }
    if !r.at_end() {
        return Err("trailing bytes after the records".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() -> Result<(), String> {
        let mut b = ChunkBuilder::default();
        b.push(
            0,
            &[
                OutValue::Text("a"),
                OutValue::Null,
                OutValue::Sealed {
                    recipient: 2,
                    ciphertext: &[1, 2, 3],
                },
            ],
        );
        b.push(
            7,
            &[OutValue::Text("长"), OutValue::Text(""), OutValue::Null],
        );
        let bytes = b.finish();
        let mut seen = Vec::new();
        let n = decode(&bytes, 3, |i, v| {
            seen.push((i, format!("{v:?}")));
            Ok(())
        })?;
        assert_eq!(n, 2);
        assert_eq!(seen[0].0, 0);
        assert!(seen[0].1.contains("Sealed { recipient: 2"));
        assert_eq!(seen[1].0, 7);
        assert!(
            decode(&bytes, 2, |_, _| Ok(())).is_err(),
            "wrong field count"
        );
        assert!(
            decode(&bytes[..bytes.len() - 1], 3, |_, _| Ok(())).is_err(),
            "truncated"
        );
        Ok(())
    }
}
