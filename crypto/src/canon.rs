//! Deterministic CBOR (RFC 8949 section 4.2.1) for audit entries and release chunks:
//! definite lengths, shortest argument encoding, map keys as small unsigned
//! integers in ascending order. Encoding goes through `ciborium-ll`; decoding
//! uses the strict reader below, which refuses anything a canonical encoder would
//! not produce, and callers additionally re-encode and compare bytes.

use ciborium_ll::{Encoder, Header};

/// Why bytes are not canonical CBOR of the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonError(pub String);

impl std::fmt::Display for CanonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, CanonError> {
    Err(CanonError(msg.into()))
}

/// Encoder for canonical items into a byte vector.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer with an empty buffer of `capacity`.
    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    fn push(&mut self, h: Header) {
        // Writing into a Vec cannot fail.
        let _ = Encoder::from(&mut self.buf).push(h);
    }

    /// Unsigned integer.
    pub fn uint(&mut self, v: u64) {
        self.push(Header::Positive(v));
    }

    /// Text string.
    pub fn text(&mut self, s: &str) {
        self.push(Header::Text(Some(s.len())));
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// Byte string.
    pub fn bytes(&mut self, b: &[u8]) {
        self.push(Header::Bytes(Some(b.len())));
        self.buf.extend_from_slice(b);
    }

    /// Array header of `len` items.
    pub fn array(&mut self, len: usize) {
        self.push(Header::Array(Some(len)));
    }

    /// Map header of `len` pairs.
    pub fn map(&mut self, len: usize) {
        self.push(Header::Map(Some(len)));
    }

    /// The simple value null.
    pub fn null(&mut self) {
        self.buf.push(0xf6);
    }

    /// Appends items another `Writer` encoded (its [`Writer::finish`] bytes or
    /// a slice of whole items of them).
    pub fn append_encoded(&mut self, items: &[u8]) {
        self.buf.extend_from_slice(items);
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Strict reader over canonical CBOR.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether every byte was consumed.
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Current offset.
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CanonError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => err(format!("truncated at byte {}", self.pos)),
        }
    }

    /// Consumes a null if one is next.
    pub fn take_null(&mut self) -> bool {
        if self.buf.get(self.pos) == Some(&0xf6) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Major type of the next item without consuming it.
    pub fn peek_major(&self) -> Option<u8> {
        self.buf.get(self.pos).map(|b| b >> 5)
    }

    /// Next header: (major type, argument), refusing indefinite lengths and
    /// non-shortest arguments.
    pub fn header(&mut self) -> Result<(u8, u64), CanonError> {
        let at = self.pos;
        let first = self.take(1)?[0];
        let major = first >> 5;
        let minor = first & 31;
        let arg = match minor {
            0..=23 => u64::from(minor),
            24 => {
                let v = u64::from(self.take(1)?[0]);
                if v < 24 {
                    return err(format!("non-shortest integer at byte {at}"));
                }
                v
            }
            25 => {
                let b = self.take(2)?;
                let v = u64::from(u16::from_be_bytes([b[0], b[1]]));
                if v <= 0xff {
                    return err(format!("non-shortest integer at byte {at}"));
                }
                v
            }
            26 => {
                let b = self.take(4)?;
                let v = u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if v <= 0xffff {
                    return err(format!("non-shortest integer at byte {at}"));
                }
                v
            }
            27 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let v = u64::from_be_bytes(a);
                if v <= 0xffff_ffff {
                    return err(format!("non-shortest integer at byte {at}"));
                }
                v
            }
            _ => return err(format!("indefinite length or reserved value at byte {at}")),
        };
        Ok((major, arg))
    }

    fn expect(&mut self, want: u8, what: &str) -> Result<u64, CanonError> {
        let at = self.pos;
        let (major, arg) = self.header()?;
        if major != want {
            return err(format!(
                "expected {what} at byte {at}, found major type {major}"
            ));
        }
        Ok(arg)
    }

    fn len(&mut self, arg: u64) -> Result<usize, CanonError> {
        let n = usize::try_from(arg).map_err(|_| CanonError("length too large".into()))?;
        if n > self.buf.len() - self.pos {
            return err(format!("length {n} at byte {} runs past the end", self.pos));
        }
        Ok(n)
    }

    /// Unsigned integer.
    pub fn uint(&mut self) -> Result<u64, CanonError> {
        self.expect(0, "an unsigned integer")
    }

    /// Text string (valid UTF-8).
    pub fn text(&mut self) -> Result<&'a str, CanonError> {
        let arg = self.expect(3, "a text string")?;
        let n = self.len(arg)?;
        let at = self.pos;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| CanonError(format!("invalid UTF-8 in text at byte {at}")))
    }

    /// Byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CanonError> {
        let arg = self.expect(2, "a byte string")?;
        let n = self.len(arg)?;
        self.take(n)
    }

    /// Fixed-size byte string.
    pub fn bytes_n<const N: usize>(&mut self) -> Result<[u8; N], CanonError> {
        let at = self.pos;
        let b = self.bytes()?;
        <[u8; N]>::try_from(b).map_err(|_| {
            CanonError(format!(
                "expected {N} bytes at byte {at}, found {}",
                b.len()
            ))
        })
    }

    /// Array header; returns the item count.
    pub fn array(&mut self) -> Result<u64, CanonError> {
        let arg = self.expect(4, "an array")?;
        // Every item takes at least one byte.
        self.len(arg).map(|n| n as u64)
    }

    /// Map header; returns the pair count.
    pub fn map(&mut self) -> Result<u64, CanonError> {
        let arg = self.expect(5, "a map")?;
        self.len(arg).map(|n| n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_output_reads_back_and_is_shortest() {
        let mut w = Writer::with_capacity(16);
        w.map(1);
        w.uint(1);
        w.uint(500);
        let bytes = w.finish();
        assert_eq!(bytes, vec![0xa1, 0x01, 0x19, 0x01, 0xf4]);
        let mut r = Reader::new(&bytes);
        assert_eq!(r.map(), Ok(1));
        assert_eq!(r.uint(), Ok(1));
        assert_eq!(r.uint(), Ok(500));
        assert!(r.at_end());
    }

    #[test]
    fn reader_refuses_non_canonical_forms() {
        assert!(Reader::new(&[0x18, 0x05]).uint().is_err(), "5 in two bytes");
        assert!(
            Reader::new(&[0x19, 0x00, 0x05]).uint().is_err(),
            "5 in three bytes"
        );
        assert!(Reader::new(&[0x9f]).array().is_err(), "indefinite array");
        assert!(
            Reader::new(&[0x62, 0xff, 0xfe]).text().is_err(),
            "invalid UTF-8"
        );
        assert!(
            Reader::new(&[0x45, 0x01]).bytes().is_err(),
            "length past end"
        );
    }
}
