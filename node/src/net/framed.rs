//! Frames over one QUIC bidirectional stream: messages out, messages in with
//! a per-frame read timeout. Receive buffers grow only with bytes that
//! arrive (the decoder checks each frame's declared length against its type's
//! cap before keeping more than its 6-byte header), never from a declared
//! length.

use super::budget::{Budget, Lease};
use crate::proto::frame::{FrameDecoder, FrameError};
use crate::proto::msg::{ErrorCode, Message, MessageError};
use std::sync::Arc;
use std::time::Duration;

/// Most bytes read from the stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Why no message could be received.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecvError {
    /// No complete frame within the read timeout (or the deadline).
    Timeout(Duration),
    /// The bytes are not a valid frame (too large, unknown type, truncated).
    Frame(FrameError),
    /// The frame's payload does not decode as its message type.
    Payload(MessageError),
    /// The peer finished the stream between frames.
    Ended,
    /// The stream or connection failed (reset, closed, lost).
    Stream(String),
}

impl RecvError {
    /// The error code the protocol answers this with (`docs/protocol.md` §7),
    /// or `None` when nothing can be answered (the stream is gone).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RecvError::Timeout(_) => Some(ErrorCode::Timeout),
            RecvError::Frame(FrameError::TooLarge { .. }) => Some(ErrorCode::TooLarge),
            RecvError::Frame(_) | RecvError::Payload(_) => Some(ErrorCode::BadRequest),
            RecvError::Ended | RecvError::Stream(_) => None,
        }
    }
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Timeout(d) => write!(f, "no complete message within {d:?}"),
            RecvError::Frame(e) => e.fmt(f),
            RecvError::Payload(e) => e.fmt(f),
            RecvError::Ended => f.write_str("the stream ended"),
            RecvError::Stream(e) => write!(f, "stream failed: {e}"),
        }
    }
}

impl std::error::Error for RecvError {}

/// A message stream with framing and a read timeout.
pub struct Framed {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    dec: FrameDecoder,
    lease: Lease,
    /// Peer department (for errors).
    pub peer: String,
    /// Per-frame read timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for Framed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framed").field("peer", &self.peer).finish()
    }
}

impl Framed {
    /// A stream whose incomplete frames are charged to `pools` (the
    /// connection's budget, then the node's).
    pub(crate) fn new(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        peer: &str,
        timeout: Duration,
        pools: Vec<Arc<Budget>>,
    ) -> Self {
        Framed {
            send,
            recv,
            dec: FrameDecoder::new(),
            lease: Lease::new(pools),
            peer: peer.to_string(),
            timeout,
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, m: &Message) -> crate::Result<()> {
        let bytes = m.encode().map_err(|e| {
            crate::NodeError::Invalid(format!("cannot encode {:?}: {e}", m.msg_type()))
        })?;
        self.send
            .write_all(&bytes)
            .await
            .map_err(|e| crate::NodeError::Peer {
                peer: self.peer.clone(),
                message: format!("stream closed while sending: {e}"),
            })
    }

    /// Receives one message within the read timeout.
    pub async fn recv(&mut self) -> Result<Message, RecvError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.recv_until(deadline).await
    }

    /// Receives one message before `deadline`. Cancel-safe: bytes already
    /// read stay buffered for the next call.
    pub async fn recv_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Message, RecvError> {
        let result = self.recv_inner(deadline).await;
        self.lease.shrink_to(self.dec.buffered());
        result
    }

    async fn recv_inner(&mut self, deadline: tokio::time::Instant) -> Result<Message, RecvError> {
        loop {
            match self.dec.next_frame() {
                Ok(Some(f)) => {
                    return Message::decode(f.msg_type, &f.payload).map_err(RecvError::Payload);
                }
                Ok(None) => {}
                Err(e) => return Err(RecvError::Frame(e)),
            }
            // Memory first: a spent budget stops reading (back-pressure) until
            // other frames complete or the deadline passes.
            if !self.lease.grow(READ_CHUNK, deadline).await {
                return Err(RecvError::Timeout(self.timeout));
            }
            let read =
                tokio::time::timeout_at(deadline, self.recv.read_chunk(READ_CHUNK, true)).await;
            match read {
                Err(_) => return Err(RecvError::Timeout(self.timeout)),
                Ok(Ok(Some(chunk))) => self.dec.push(&chunk.bytes),
                Ok(Ok(None)) => {
                    self.dec.finish().map_err(RecvError::Frame)?;
                    return Err(RecvError::Ended);
                }
                Ok(Err(e)) => return Err(RecvError::Stream(e.to_string())),
            }
            self.lease.shrink_to(self.dec.buffered());
        }
    }

    /// Sends an error and finishes the stream (best effort).
    pub async fn refuse(&mut self, code: ErrorCode, message: &str) {
        let _ = self.send(&Message::error(code, message)).await;
        self.finish().await;
    }

    /// Finishes our side of the stream and waits briefly for the peer to read it.
    pub async fn finish(&mut self) {
        let _ = self.send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.send.stopped()).await;
    }
}
