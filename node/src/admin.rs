//! The admin socket `HOME/admin.sock` of a running node: the CLI sends one
//! [`AdminCall`] and reads [`AdminEvent`]s (progress, then a result or an error).
//! The socket is created 0600 inside the 0700 home, and connections from other
//! users are refused, so only the node's owner can drive it.
//!
//! Frames: `u32 BE length || CBOR`, at most [`MAX_ADMIN_FRAME`] bytes.

use crate::api::{Outcome, Request, execute};
use crate::error::{NodeError, Result};
use crate::progress::{Progress, Unit};
use crate::service::Services;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Largest admin frame.
pub const MAX_ADMIN_FRAME: usize = 16 * 1024 * 1024;

/// A command sent to a running node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminCall {
    /// Local operator (recorded in audit entries).
    pub operator: String,
    /// The command.
    pub request: Request,
}

/// Error categories (the CLI maps them to exit codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Anything else.
    Failed,
    /// Refused by a rule, a grant or a peer.
    Refused,
    /// Something named does not exist.
    NotFound,
    /// Network or peer failure.
    Network,
    /// Invalid input.
    Invalid,
}

/// The category of an error.
pub fn error_kind(e: &NodeError) -> ErrorKind {
    match e {
        NodeError::Refused(_) | NodeError::Rule(_) => ErrorKind::Refused,
        NodeError::NotFound(_) => ErrorKind::NotFound,
        NodeError::Network(_) | NodeError::Peer { .. } => ErrorKind::Network,
        NodeError::Invalid(_)
        | NodeError::Schema(_)
        | NodeError::Import(_)
        | NodeError::Config { .. }
        | NodeError::StoreInUse { .. }
        | NodeError::StoreFormatNewer { .. }
        | NodeError::Permissions { .. } => ErrorKind::Invalid,
        _ => ErrorKind::Failed,
    }
}

/// What the node tells the CLI.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AdminEvent {
    /// A progress stage starts.
    Stage {
        /// Label.
        label: String,
        /// Total.
        total: Option<u64>,
        /// Unit.
        unit: Unit,
    },
    /// Progress position.
    Set(u64),
    /// Stage done.
    Done,
    /// The result.
    Ok(Box<Outcome>),
    /// The command failed.
    Err {
        /// Category.
        kind: ErrorKind,
        /// Message.
        message: String,
    },
}

async fn write_frame<T: Serialize>(s: &mut UnixStream, v: &T) -> std::io::Result<()> {
    let body = pdx_crypto::wire::to_cbor(v).map_err(std::io::Error::other)?;
    if body.len() > MAX_ADMIN_FRAME {
        return Err(std::io::Error::other("admin frame too large"));
    }
    s.write_all(&(body.len() as u32).to_be_bytes()).await?;
    s.write_all(&body).await
}

async fn read_frame<T: serde::de::DeserializeOwned>(
    s: &mut UnixStream,
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_ADMIN_FRAME {
        return Err(std::io::Error::other(format!(
            "admin frame of {len} bytes exceeds the cap"
        )));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    pdx_crypto::wire::from_cbor(&buf, "admin frame")
        .map(Some)
        .map_err(std::io::Error::other)
}

struct SocketProgress {
    tx: tokio::sync::mpsc::UnboundedSender<AdminEvent>,
    last: Mutex<std::time::Instant>,
}

impl Progress for SocketProgress {
    fn stage(&self, label: &str, total: Option<u64>, unit: Unit) {
        let _ = self.tx.send(AdminEvent::Stage {
            label: label.to_string(),
            total,
            unit,
        });
    }
    fn set(&self, done: u64) {
        // At most ten updates a second.
        if let Ok(mut last) = self.last.lock()
            && last.elapsed() >= std::time::Duration::from_millis(100)
        {
            *last = std::time::Instant::now();
            let _ = self.tx.send(AdminEvent::Set(done));
        }
    }
    fn done(&self) {
        let _ = self.tx.send(AdminEvent::Done);
    }
}

/// Serves the admin socket until the listener fails.
pub async fn serve(svc: Arc<Services>, path: std::path::PathBuf) -> Result<()> {
    let path = path.as_path();
    if path.exists() {
        std::fs::remove_file(path).map_err(NodeError::io(path))?;
    }
    let listener = UnixListener::bind(path).map_err(NodeError::io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(NodeError::io(path))?;
    let owner = std::fs::metadata(svc.node.home.root())
        .map_err(NodeError::io(svc.node.home.root()))?
        .uid();
    loop {
        let (mut stream, _) = listener.accept().await.map_err(NodeError::io(path))?;
        let svc = svc.clone();
        tokio::spawn(async move {
            let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
            if uid != owner && uid != 0 {
                let _ = write_frame(
                    &mut stream,
                    &AdminEvent::Err {
                        kind: ErrorKind::Refused,
                        message: format!("user {uid} does not own this node"),
                    },
                )
                .await;
                return;
            }
            let call: AdminCall = match read_frame(&mut stream).await {
                Ok(Some(c)) => c,
                _ => return,
            };
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let progress: Arc<dyn Progress> = Arc::new(SocketProgress {
                tx: tx.clone(),
                last: Mutex::new(std::time::Instant::now()),
            });
            let operator = format!("{} (uid {uid})", call.operator);
            let task = tokio::spawn(async move {
                let ev = match execute(&svc, call.request, &operator, progress).await {
                    Ok(v) => AdminEvent::Ok(Box::new(v)),
                    Err(e) => AdminEvent::Err {
                        kind: error_kind(&e),
                        message: e.to_string(),
                    },
                };
                let _ = tx.send(ev);
            });
            while let Some(ev) = rx.recv().await {
                let last = matches!(ev, AdminEvent::Ok(_) | AdminEvent::Err { .. });
                if write_frame(&mut stream, &ev).await.is_err() || last {
                    break;
                }
            }
            let _ = task.await;
        });
    }
}

/// Sends `call` to the node at `path`. `Ok(None)` means no node is running there.
pub async fn call(
    path: &Path,
    call: &AdminCall,
    progress: &dyn Progress,
) -> Result<Option<std::result::Result<Outcome, (ErrorKind, String)>>> {
    let mut stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(NodeError::io(path)(e)),
    };
    write_frame(&mut stream, call)
        .await
        .map_err(NodeError::io(path))?;
    loop {
        match read_frame::<AdminEvent>(&mut stream)
            .await
            .map_err(NodeError::io(path))?
        {
            None => {
                return Err(NodeError::Network(format!(
                    "{}: the node closed the admin connection (did it stop?)",
                    path.display()
                )));
            }
            Some(AdminEvent::Stage { label, total, unit }) => progress.stage(&label, total, unit),
            Some(AdminEvent::Set(n)) => progress.set(n),
            Some(AdminEvent::Done) => progress.done(),
            Some(AdminEvent::Ok(outcome)) => return Ok(Some(Ok(*outcome))),
            Some(AdminEvent::Err { kind, message }) => return Ok(Some(Err((kind, message)))),
        }
    }
}
