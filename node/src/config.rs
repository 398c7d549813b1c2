//! The node home: layout, `pdx.toml`, and secret-file handling.
//!
//! ```text
//! HOME/pdx.toml          configuration
//! HOME/keys/*.key        secret keys (0600; pdx key-file format)
//! HOME/tls/node.crt      node certificate (Ed25519 identity key, dept SAN URI)
//! HOME/tls/ca.crt        network CA certificate
//! HOME/tls/crl.pem       current CRL
//! HOME/db/               RocksDB store (datasets, releases, grants, audit log)
//! HOME/admin.sock        local control socket of a running `pdx serve` (0600)
//! ```

use crate::error::{NodeError, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Paths inside a node home.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home at `root` (not checked).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `pdx.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("pdx.toml")
    }
    /// Key directory.
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }
    /// A key file.
    pub fn key(&self, name: &str) -> PathBuf {
        self.keys().join(format!("{name}.key"))
    }
    /// TLS directory.
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }
    /// Node certificate.
    pub fn node_cert(&self) -> PathBuf {
        self.tls().join("node.crt")
    }
    /// CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.tls().join("ca.crt")
    }
    /// Current CRL.
    pub fn crl(&self) -> PathBuf {
        self.tls().join("crl.pem")
    }
    /// RocksDB directory.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    /// Admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }
    /// The marker a restore leaves until the peers were asked
    /// (docs/backup-format.md).
    pub fn restored_marker(&self) -> PathBuf {
        self.root.join(RESTORED_MARKER)
    }
    /// Log file of `pdx serve` when started by the testnet.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("node.log")
    }
}

/// File name of the restore marker in a home.
pub const RESTORED_MARKER: &str = "restored.json";

/// Seconds a peer has, from its QUIC connection on, to complete the pdx
/// handshake (bounded further by the read timeout).
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;

/// Audit settings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Sign a checkpoint every N entries.
    pub checkpoint_every: u64,
    /// ... or every T milliseconds.
    pub checkpoint_interval_ms: u64,
}

/// Transfer settings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSettings {
    /// Records per chunk (at most).
    pub chunk_records: u32,
    /// Bytes per chunk (at most, before the last record).
    pub chunk_bytes: u32,
    /// Chunks in flight before an acknowledgement is needed.
    pub window: u32,
    /// Sending rate limit in chunks per second (0 = unlimited).
    pub rate_limit_chunks_per_sec: u32,
    /// Seconds without any frame from the peer before a transfer is abandoned.
    pub read_timeout_secs: u32,
}

/// `pdx.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's department code (must match its certificate).
    pub dept: String,
    /// Display name.
    pub name: String,
    /// Network name (part of peers' DNS names).
    pub network: String,
    /// QUIC listen address.
    pub listen: String,
    /// Whether the secret keys are passphrase-protected.
    #[serde(default)]
    pub passphrase_protected: bool,
    /// Audit settings.
    pub audit: AuditSettings,
    /// Transfer settings.
    pub transfer: TransferSettings,
    /// Online services: gateway, routes, relay policy, limits.
    #[serde(default)]
    pub services: ServiceSettings,
    /// Operations: the metrics endpoint.
    #[serde(default)]
    pub operations: OperationsSettings,
}

/// `[operations]` in `pdx.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperationsSettings {
    /// Address of the Prometheus endpoint (`127.0.0.1:9464`); off when absent.
    pub metrics: Option<String>,
    /// Allow a metrics address that is not loopback (the metrics name peers
    /// and volumes; put a firewall or a reverse proxy with TLS in front).
    pub metrics_allow_remote: bool,
    /// Seconds `pdx serve` lets in-flight transfers and calls finish after
    /// SIGTERM before closing the endpoint.
    pub shutdown_grace_secs: u32,
    /// MiB of the store's filesystem kept free: writes that would use it are
    /// refused (`docs/operations.md` "Disk full").
    pub disk_reserve_mib: u64,
}

impl Default for OperationsSettings {
    fn default() -> Self {
        OperationsSettings {
            metrics: None,
            metrics_allow_remote: false,
            shutdown_grace_secs: 20,
            disk_reserve_mib: crate::store::space::DEFAULT_RESERVE_MIB,
        }
    }
}

/// Default address of the metrics endpoint.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// Where calls to departments matching `to` go: through hub `via`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Department pattern: a code, a prefix ending in `*`, or `*`.
    pub to: String,
    /// Hub department that relays them.
    pub via: String,
}

/// A hub lets departments matching `from` call departments matching `to`
/// through it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayRule {
    /// Calling department pattern.
    pub from: String,
    /// Providing department pattern.
    pub to: String,
}

/// `[services]` in `pdx.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSettings {
    /// Address of the local HTTP gateway (`127.0.0.1:8080`); off when absent.
    pub gateway: Option<String>,
    /// Bearer-token file of the gateway (0600), relative to the home.
    pub gateway_token_file: String,
    /// Routes: the first matching one is used; no match means direct.
    pub routes: Vec<Route>,
    /// Relay policy of a hub: nothing is relayed unless a rule allows it.
    pub relay: Vec<RelayRule>,
    /// Calls per second accepted from one calling department (provider and
    /// hub); beyond it, `rate-limited`.
    pub calls_per_second: u32,
    /// Burst above the rate.
    pub call_burst: u32,
    /// Calls one department may have in flight here at once.
    pub max_calls_in_flight: u32,
    /// Days signed call messages are kept.
    pub retention_days: u32,
    /// Days an idempotency key's stored outcome is kept (the replay window).
    pub idempotency_days: u32,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            gateway: None,
            gateway_token_file: "gateway.token".into(),
            routes: Vec::new(),
            relay: Vec::new(),
            calls_per_second: 5_000,
            call_burst: 1_000,
            max_calls_in_flight: 256,
            retention_days: 180,
            idempotency_days: 7,
        }
    }
}

/// Whether department `dept` matches `pattern` (a code, `prefix*`, or `*`).
pub fn dept_matches(pattern: &str, dept: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => dept.starts_with(prefix),
        None => pattern == dept,
    }
}

impl ServiceSettings {
    /// The hub to reach `dept` through, if a route says so.
    pub fn route(&self, dept: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|r| dept_matches(&r.to, dept) && r.via != dept)
            .map(|r| r.via.as_str())
    }

    /// Whether this hub relays calls from `from` to `to`.
    pub fn relays(&self, from: &str, to: &str) -> bool {
        self.relay
            .iter()
            .any(|r| dept_matches(&r.from, from) && dept_matches(&r.to, to))
    }
}

impl Config {
    /// Defaults for a new node.
    pub fn new(dept: String, name: String, network: String, listen: String) -> Self {
        Config {
            dept,
            name,
            network,
            listen,
            passphrase_protected: false,
            audit: AuditSettings {
                checkpoint_every: 1024,
                checkpoint_interval_ms: 5_000,
            },
            transfer: TransferSettings {
                chunk_records: 4096,
                chunk_bytes: 1 << 20,
                window: 16,
                rate_limit_chunks_per_sec: 0,
                read_timeout_secs: 120,
            },
            services: ServiceSettings::default(),
            operations: OperationsSettings::default(),
        }
    }

    /// Loads `HOME/pdx.toml`.
    pub fn load(home: &Home) -> Result<Self> {
        let path = home.config();
        let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NodeError::Config {
                path: path.display().to_string(),
                message: "not found: is this a pdx home? create one with `pdx init`".into(),
            },
            _ => NodeError::io(&path)(e),
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|e| NodeError::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if cfg.transfer.window == 0
            || cfg.transfer.chunk_records == 0
            || cfg.transfer.chunk_bytes < 1024
        {
            return Err(NodeError::Config {
                path: path.display().to_string(),
                message: "transfer.window and transfer.chunk_records must be positive, chunk_bytes at least 1024".into(),
            });
        }
        if u64::from(cfg.transfer.chunk_bytes) > crate::proto::frame::MAX_CHUNK_RECORDS_BYTES as u64
        {
            return Err(NodeError::Config {
                path: path.display().to_string(),
                message: format!(
                    "transfer.chunk_bytes exceeds the protocol's chunk cap of {} bytes",
                    crate::proto::frame::MAX_CHUNK_RECORDS_BYTES
                ),
            });
        }
        let s = &cfg.services;
        if s.calls_per_second == 0 || s.max_calls_in_flight == 0 || s.idempotency_days == 0 {
            return Err(NodeError::Config {
                path: path.display().to_string(),
                message: "services.calls_per_second, max_calls_in_flight and idempotency_days must be positive".into(),
            });
        }
        if s.retention_days < s.idempotency_days {
            return Err(NodeError::Config {
                path: path.display().to_string(),
                message: "services.retention_days must be at least idempotency_days (a replayed response must still be kept)".into(),
            });
        }
        Ok(cfg)
    }

    /// Writes `HOME/pdx.toml`.
    pub fn save(&self, home: &Home) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| NodeError::Config {
            path: home.config().display().to_string(),
            message: e.to_string(),
        })?;
        write_atomic(&home.config(), text.as_bytes(), 0o644)
    }
}

/// Writes `bytes` to `path` via a temporary file and rename, with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(NodeError::io(&tmp))?;
        // mode() only applies on creation; enforce it for an existing temp file too.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(NodeError::io(&tmp))?;
        f.write_all(bytes).map_err(NodeError::io(&tmp))?;
        f.sync_all().map_err(NodeError::io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(NodeError::io(path))?;
    Ok(())
}

/// Makes the renames done in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(NodeError::io(dir))
}

/// Writes a secret file with 0600 permissions.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// Reads a secret file, refusing it if group or others can access it.
pub fn read_secret(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let meta = fs::metadata(path).map_err(NodeError::io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NodeError::Permissions {
            path: path.display().to_string(),
            mode,
        });
    }
    fs::read(path)
        .map(zeroize::Zeroizing::new)
        .map_err(NodeError::io(path))
}

/// Creates a directory (and parents) with `mode`.
pub fn create_dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).map_err(NodeError::io(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(NodeError::io(path))
}
