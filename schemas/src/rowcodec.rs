//! The row encoding shared by storage and digests: for each field a LEB128
//! varint `n` — 0 for null, else `len + 1` — followed by `len` UTF-8 bytes.
//! Rows are concatenated into blocks; the schema gives the field count.

/// Appends one row.
pub fn encode_row<S: AsRef<str>>(row: &[Option<S>], out: &mut Vec<u8>) {
    for v in row {
        match v {
            None => out.push(0),
            Some(s) => {
                let s = s.as_ref();
                push_varint(out, s.len() as u64 + 1);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// The byte range of the value at `*pos` (`None` for null); moves past it.
fn next_value<E>(
    block: &[u8],
    pos: &mut usize,
    err: &impl Fn(String) -> E,
) -> Result<Option<(usize, usize)>, E> {
    let at = *pos;
    let n = read_varint(block, pos).ok_or_else(|| err(format!("bad length at byte {at}")))?;
    if n == 0 {
        return Ok(None);
    }
    let len = usize::try_from(n - 1).map_err(|_| err(format!("length too large at byte {at}")))?;
    let start = *pos;
    let end = start
        .checked_add(len)
        .filter(|&e| e <= block.len())
        .ok_or_else(|| err(format!("value past the end at byte {at}")))?;
    *pos = end;
    Ok(Some((start, end)))
}

/// Decodes every row of `block` (each of `fields` values) and calls `f` with it.
/// Returns the number of rows, or an error naming the byte offset.
pub fn decode_rows<'b, E>(
    block: &'b [u8],
    fields: usize,
    mut f: impl FnMut(&[Option<&'b str>]) -> Result<(), E>,
    err: impl Fn(String) -> E,
) -> Result<u64, E> {
    let mut pos = 0;
    let mut rows = 0;
    let mut row: Vec<Option<&'b str>> = Vec::with_capacity(fields);
    while pos < block.len() {
        row.clear();
        for _ in 0..fields {
            let value = match next_value(block, &mut pos, &err)? {
                None => None,
                Some((start, end)) => Some(
                    std::str::from_utf8(&block[start..end])
                        .map_err(|_| err(format!("invalid UTF-8 at byte {start}")))?,
                ),
            };
            row.push(value);
        }
        f(&row)?;
        rows += 1;
    }
    Ok(rows)
}

/// The number of rows in `block`, checking only the lengths (so a block can
/// be split among workers before it is decoded with [`decode_rows`]).
pub fn count_rows<E>(block: &[u8], fields: usize, err: impl Fn(String) -> E) -> Result<u64, E> {
    let mut pos = 0;
    let mut rows = 0u64;
    while pos < block.len() {
        for _ in 0..fields {
            next_value(block, &mut pos, &err)?;
        }
        rows += 1;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_including_nulls_and_long_values() {
        let long = "长".repeat(100);
        let rows: Vec<Vec<Option<&str>>> = vec![
            vec![Some("a"), None, Some("")],
            vec![Some(&long), Some("x"), None],
        ];
        let mut block = Vec::new();
        for r in &rows {
            encode_row(r, &mut block);
        }
        let mut back = Vec::new();
        let n = decode_rows(
            &block,
            3,
            |r| -> Result<(), String> {
                back.push(r.to_vec());
                Ok(())
            },
            |e| e,
        );
        assert_eq!(n, Ok(2));
        assert_eq!(back, rows);
        assert_eq!(count_rows(&block, 3, |e| e), Ok(2));
    }

    #[test]
    fn truncated_blocks_are_errors() {
        let mut block = Vec::new();
        encode_row(&[Some("hello")], &mut block);
        block.pop();
        assert!(decode_rows(&block, 1, |_| -> Result<(), String> { Ok(()) }, |e| e).is_err());
        assert!(count_rows(&block, 1, |e| e).is_err());
    }
}
