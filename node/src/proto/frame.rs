//! Framing: `u32 BE length || body`, where the body is the CBOR array
//! `[type, payload]` and `type` is a one-byte unsigned integer (< 24), so the
//! body always starts `0x82, type`. The decoder learns the type from the first
//! two body bytes and applies that type's size cap *before* buffering the rest:
//! an oversized frame is rejected, never clamped or read.

use std::fmt;

macro_rules! msg_types {
    ($($name:ident = $n:literal, cap $cap:expr;)*) => {
        /// Message type byte.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum MsgType { $(#[allow(missing_docs)] $name = $n,)* }

        impl MsgType {
            /// Parses a type byte.
            pub fn from_u8(b: u8) -> Option<Self> {
                match b { $($n => Some(MsgType::$name),)* _ => None }
            }
            /// The largest frame (length field value) accepted for this type.
            pub fn cap(self) -> usize {
                match self { $(MsgType::$name => $cap,)* }
            }
        }
    };
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

msg_types! {
    Hello = 1, cap MIB;
    HelloReply = 2, cap MIB;
    Witness1 = 3, cap 64 * KIB;
    Witness2 = 4, cap 64 * KIB;
    Witness3 = 5, cap 64 * KIB;
    CatalogRequest = 6, cap 4 * KIB;
    CatalogResponse = 7, cap 4 * MIB;
    KeyDirRequest = 8, cap KIB;
    KeyDirResponse = 9, cap 16 * MIB;
    ReleaseRequest = 10, cap 16 * KIB;
    Resume = 11, cap KIB;
    Progress = 12, cap KIB;
    Manifest = 13, cap 32 * MIB;
    Chunk = 14, cap 16 * MIB;
    Ack = 15, cap 256;
    Receipt = 16, cap 64 * KIB;
    ReceiptAck = 17, cap 256;
    AlreadyHave = 18, cap KIB;
    Offer = 19, cap 32 * MIB;
    OfferAccept = 20, cap KIB;
    Submit = 21, cap 16 * MIB;
    Accepted = 22, cap 64 * KIB;
    Error = 23, cap 64 * KIB;
    Call = 24, cap 2 * MIB + 64 * KIB;
    CallResponse = 25, cap 2 * MIB + 64 * KIB;
}

/// The largest frame of any type.
pub const MAX_FRAME: usize = 32 * 1024 * 1024;
/// Buffer capacity an idle decoder keeps.
const RETAINED_CAPACITY: usize = 4 << 20;
/// Bound on the records of one chunk (config may only lower it).
pub const MAX_CHUNK_RECORDS_BYTES: usize = 16 * 1024 * 1024 - 4096;

/// Why bytes from a peer were rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared length exceeds the cap for the message type.
    TooLarge {
        /// Message type (or 0 when unknown yet).
        msg_type: u8,
        /// Declared length.
        len: usize,
        /// Cap.
        cap: usize,
    },
    /// The body does not start with `0x82, type`.
    BadHeader,
    /// Unknown message type.
    UnknownType(u8),
    /// The body is shorter than its header.
    TooShort,
    /// The stream ended inside a frame.
    Truncated {
        /// Bytes buffered of the incomplete frame.
        have: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { msg_type, len, cap } => {
                write!(
                    f,
                    "frame of {len} bytes for message type {msg_type} exceeds its cap of {cap} bytes"
                )
            }
            FrameError::BadHeader => f.write_str("frame body is not a [type, payload] CBOR array"),
            FrameError::UnknownType(t) => write!(f, "unknown message type {t}"),
            FrameError::TooShort => f.write_str("frame body shorter than its header"),
            FrameError::Truncated { have } => {
                write!(f, "stream ended inside a frame ({have} bytes buffered)")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A complete frame: its type and the CBOR payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message type.
    pub msg_type: MsgType,
    /// CBOR payload (after `0x82, type`).
    pub payload: Vec<u8>,
}

/// Incremental frame decoder (sans-IO): push bytes, pull frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How many more bytes the next frame needs (0 if one is complete); lets a
    /// driver read exactly what it may buffer.
    pub fn wanted(&self) -> usize {
        let avail = self.buffered();
        if avail < 6 {
            return 6 - avail;
        }
        let b = &self.buf[self.pos..];
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        (4 + len).saturating_sub(avail)
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or an error
    /// as soon as the header shows the frame is unacceptable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len < 2 {
            return Err(FrameError::TooShort);
        }
        // The type decides the cap, so it is read (2 or 3 more bytes) before
        // any length is judged: every oversize report names its message type.
        if avail.len() < 6 {
            return Ok(None);
        }
        if avail[4] != 0x82 {
            return Err(FrameError::BadHeader);
        }
        // The type is a CBOR unsigned integer: 0..=23 in the initial byte,
        // 24..=255 as 0x18 followed by one byte (canonical: never below 24).
        let (t, header) = match avail[5] {
            t @ 0..=23 => (t, 6),
            0x18 => {
                if avail.len() < 7 {
                    return Ok(None);
                }
                match avail[6] {
                    t @ 24..=255 => (t, 7),
                    _ => return Err(FrameError::BadHeader),
                }
            }
            _ => return Err(FrameError::BadHeader),
        };
        if len < header - 4 {
            return Err(FrameError::TooShort);
        }
        let msg_type = MsgType::from_u8(t).ok_or(FrameError::UnknownType(t))?;
        let cap = msg_type.cap();
        if len > cap {
            return Err(FrameError::TooLarge {
                msg_type: t,
                len,
                cap,
            });
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let payload = avail[header..4 + len].to_vec();
        self.pos += 4 + len;
        if self.pos == self.buf.len() {
            // Emptied: a buffer grown for one large frame is not kept.
            if self.buf.capacity() > RETAINED_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.pos = 0;
        } else if self.pos > (1 << 20) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(Some(Frame { msg_type, payload }))
    }

    /// Call at end of stream: an error if a partial frame is buffered.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffered() == 0 {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                have: self.buffered(),
            })
        }
    }
}

/// Encodes a frame around an already-encoded CBOR payload; refuses to build a
/// frame the peer would reject.
pub fn encode_frame(msg_type: MsgType, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let t = msg_type as u8;
    let header: &[u8] = if t < 24 { &[0x82, t] } else { &[0x82, 0x18, t] };
    let len = payload.len() + header.len();
    if len > msg_type.cap() {
        return Err(FrameError::TooLarge {
            msg_type: msg_type as u8,
            len,
            cap: msg_type.cap(),
        });
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    Ok(out)
}
