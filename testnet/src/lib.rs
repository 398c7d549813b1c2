//! Test networks of real `pdx serve` processes on 127.0.0.1: the harness behind
//! `pdx-testnet`, `make demo` and every multi-process integration test.
#![forbid(unsafe_code)]

pub mod backend;
pub mod callbench;
pub mod generate;
pub mod leaks;
pub mod realtime;
pub mod scenario;
pub mod settlement;

use anyhow::{Context, Result, anyhow, bail};
use rustix::process::Pid;
pub use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `pdx` binary: `$PDX_BIN`, or next to the running executable (cargo puts
/// test binaries in `target/<profile>/deps`, binaries in `target/<profile>`).
pub fn pdx_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PDX_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the current executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for _ in 0..2 {
        let candidate = dir.join("pdx");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    bail!(
        "cannot find the pdx binary next to {}; build it (cargo build --release -p pdx-node) or set PDX_BIN",
        exe.display()
    )
}

/// A free UDP port on 127.0.0.1 for a node to listen on, drawn below the
/// kernel's ephemeral range: the port stays unbound until the node starts,
/// and every dial-only endpoint (a CLI command, a restored node asking its
/// peers) binds an ephemeral port, which then can never be this one.
pub fn free_port() -> Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    const FIRST: u16 = 10_000;
    if low > FIRST + 1000 {
        for _ in 0..256 {
            let port = FIRST + rand::random_range(0..low - FIRST);
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// One node of a test network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Department code.
    pub dept: String,
    /// Display name.
    pub name: String,
    /// Home directory.
    pub home: PathBuf,
    /// Certificate directory.
    pub certs: PathBuf,
    /// Listen address.
    pub addr: String,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Certificate serial.
    pub serial: String,
}

/// A test network: a CA and nodes under one directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct Testnet {
    /// Root directory.
    pub dir: PathBuf,
    /// Network name.
    pub network: String,
    /// The network's suite (`pdx ca init --suite`).
    #[serde(default)]
    pub suite: pdx_crypto::Suite,
    /// Nodes.
    pub nodes: Vec<NodeInfo>,
    #[serde(skip)]
    children: Vec<(String, Child)>,
    #[serde(skip)]
    pdx: PathBuf,
    /// Environment `pdx serve` gets besides the inherited one (log level and
    /// format, for tests of the logs).
    #[serde(skip)]
    serve_env: Vec<(String, String)>,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("testnet.json")
}

impl Testnet {
    /// Creates an intl network CA in `dir`.
    pub fn create(dir: &Path, network: &str) -> Result<Testnet> {
        Self::create_in(pdx_crypto::Suite::Intl, dir, network)
    }

    /// Creates a network CA of `suite` in `dir`.
    pub fn create_in(suite: pdx_crypto::Suite, dir: &Path, network: &str) -> Result<Testnet> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let net = Testnet {
            dir: dir.to_path_buf(),
            network: network.to_string(),
            suite,
            nodes: Vec::new(),
            children: Vec::new(),
            pdx: pdx_bin()?,
            serve_env: Vec::new(),
        };
        net.pdx_ok(&[
            "ca",
            "init",
            "--dir",
            &net.ca_dir().display().to_string(),
            "--network",
            network,
            "--suite",
            suite.name(),
        ])?;
        net.save()?;
        Ok(net)
    }

    /// Loads a network created earlier (for `status` and `down`).
    pub fn load(dir: &Path) -> Result<Testnet> {
        let text = std::fs::read_to_string(state_path(dir))
            .with_context(|| format!("{}: no testnet here", dir.display()))?;
        let mut net: Testnet = serde_json::from_str(&text)?;
        net.pdx = pdx_bin()?;
        Ok(net)
    }

    /// Writes `testnet.json`.
    pub fn save(&self) -> Result<()> {
        std::fs::write(state_path(&self.dir), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// The CA directory.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// The `pdx` binary used.
    pub fn pdx_path(&self) -> &Path {
        &self.pdx
    }

    /// Runs pdx with `args` and returns its output.
    ///
    /// A failing command must not print personal data (values are masked
    /// in every message): its output is scanned for identities of the
    /// generated kinds, and printing one is an error of its own.
    pub fn pdx(&self, args: &[&str]) -> Result<Output> {
        let out = Command::new(&self.pdx)
            .args(args)
            .env("PDX_OPERATOR", "testnet")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running pdx {}", args.join(" ")))?;
        if !out.status.success() {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let found = leaks::personal_data_in(&text);
            if !found.is_empty() {
                bail!(
                    "pdx {} failed ({}) and printed personal data (masked here): {}",
                    args.join(" "),
                    out.status,
                    found.join(", ")
                );
            }
        }
        Ok(out)
    }

    /// Runs pdx and fails unless it exits 0; returns stdout.
    pub fn pdx_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.pdx(args)?;
        if !out.status.success() {
            bail!(
                "pdx {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs pdx with `--json` and parses stdout.
    pub fn pdx_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.pdx_ok(&a)?;
        serde_json::from_str(&text)
            .with_context(|| format!("pdx {} printed no JSON: {text}", args.join(" ")))
    }

    /// A node by department.
    pub fn node(&self, dept: &str) -> Result<&NodeInfo> {
        self.nodes
            .iter()
            .find(|n| n.dept == dept)
            .ok_or_else(|| anyhow!("no node {dept} in the testnet"))
    }

    /// Home of a node, as a string argument.
    pub fn home(&self, dept: &str) -> Result<String> {
        Ok(self.node(dept)?.home.display().to_string())
    }

    /// Issues a certificate and creates a node home (not started).
    pub fn add_node(&mut self, dept: &str, name: &str) -> Result<()> {
        let certs = self.dir.join("certs").join(dept);
        let home = self.dir.join("nodes").join(dept);
        let issued = self.pdx_json(&[
            "ca",
            "issue",
            "--dir",
            &self.ca_dir().display().to_string(),
            "--dept",
            dept,
            "--name",
            name,
            "--out",
            &certs.display().to_string(),
        ])?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        self.pdx_ok(&[
            "init",
            "--home",
            &home.display().to_string(),
            "--cert-dir",
            &certs.display().to_string(),
            "--listen",
            &addr,
        ])?;
        self.nodes.push(NodeInfo {
            dept: dept.to_string(),
            name: name.to_string(),
            home,
            certs,
            addr,
            pid: None,
            serial: issued["serial"].as_str().unwrap_or_default().to_string(),
        });
        self.save()
    }

    /// Adds every other node as a peer of every node (one command per node).
    pub fn connect_all(&self) -> Result<()> {
        // One command per node, two at a time (the machines have 2 cores).
        settlement::parallel(&self.nodes, 2, |a| {
            let home = a.home.display().to_string();
            let mut args: Vec<&str> = vec!["peer", "add", "--home", &home];
            for b in self.nodes.iter().filter(|b| b.dept != a.dept) {
                args.extend(["--dept", &b.dept, "--addr", &b.addr]);
            }
            if args.len() > 4 {
                self.pdx_ok(&args)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Sets `key=value` in the environment of every `pdx serve` started from now on.
    pub fn set_serve_env(&mut self, key: &str, value: &str) {
        self.serve_env.retain(|(k, _)| k != key);
        self.serve_env.push((key.to_string(), value.to_string()));
    }

    /// Starts `pdx serve` for a node and waits until it listens.
    pub fn start(&mut self, dept: &str) -> Result<()> {
        let starting = self.spawn_serve(dept)?;
        self.await_listening(starting)
    }

    /// Starts every node: all processes are spawned first, then each is
    /// waited for (they open their stores together).
    pub fn start_all(&mut self) -> Result<()> {
        let depts: Vec<String> = self.nodes.iter().map(|n| n.dept.clone()).collect();
        let mut starting = Vec::new();
        for d in depts {
            starting.push(self.spawn_serve(&d)?);
        }
        for s in starting {
            self.await_listening(s)?;
        }
        Ok(())
    }

    /// Spawns `pdx serve` for a node; the child is held (and stopped with
    /// the testnet) from here on.
    fn spawn_serve(&mut self, dept: &str) -> Result<Starting> {
        let (home, idx) = {
            let i = self
                .nodes
                .iter()
                .position(|n| n.dept == dept)
                .ok_or_else(|| anyhow!("no node {dept}"))?;
            (self.nodes[i].home.clone(), i)
        };
        let log_path = home.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let offset = log.metadata()?.len();
        let child = Command::new(&self.pdx)
            .args(["serve", "--home", &home.display().to_string()])
            .env("PDX_OPERATOR", "testnet")
            .envs(self.serve_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting pdx serve for {dept}"))?;
        self.nodes[idx].pid = Some(child.id());
        self.children.push((dept.to_string(), child));
        Ok(Starting {
            dept: dept.to_string(),
            log_path,
            offset,
            deadline: Instant::now() + Duration::from_secs(30),
        })
    }

    /// Waits until a spawned node prints its listening line (stdout goes to
    /// node.log so the node outlives this process without a broken pipe).
    fn await_listening(&mut self, s: Starting) -> Result<()> {
        let dept = s.dept.clone();
        let waited = self.wait_listening(s);
        if waited.is_err() {
            // As before it was spawned: not held, no pid.
            if let Some(mut child) = self.take_child(&dept) {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(n) = self.nodes.iter_mut().find(|n| n.dept == dept) {
                n.pid = None;
            }
        }
        waited?;
        self.save()
    }

    fn wait_listening(&mut self, s: Starting) -> Result<()> {
        let Starting {
            dept,
            log_path,
            offset,
            deadline,
        } = s;
        loop {
            let text = std::fs::read(&log_path).unwrap_or_default();
            let new = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default())
                .into_owned();
            if new
                .lines()
                .any(|l| l.starts_with("pdx serve:") && l.contains("listening"))
            {
                break;
            }
            let child = self
                .children
                .iter_mut()
                .find(|(d, _)| *d == dept)
                .map(|(_, c)| c)
                .ok_or_else(|| anyhow!("pdx serve for {dept} is not held"))?;
            if let Some(status) = child.try_wait()? {
                bail!("pdx serve for {dept} exited ({status}):\n{new}");
            }
            if Instant::now() > deadline {
                bail!(
                    "pdx serve for {dept} did not start within 30 s; see {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn take_child(&mut self, dept: &str) -> Option<Child> {
        let i = self.children.iter().position(|(d, _)| d == dept)?;
        Some(self.children.remove(i).1)
    }

    /// Graceful stop (SIGTERM), forced after `grace`.
    pub fn stop(&mut self, dept: &str, grace: Duration) -> Result<()> {
        let pid = self.node(dept)?.pid;
        if let Some(mut child) = self.take_child(dept) {
            signal(child.id(), Signal::TERM);
            reap(&mut child, Instant::now() + grace)?;
        } else if let Some(pid) = pid {
            stop_pid(pid, grace);
        }
        self.mark_stopped(dept)
    }

    /// Kills a node with SIGKILL (crash).
    pub fn kill(&mut self, dept: &str) -> Result<()> {
        if let Some(mut child) = self.take_child(dept) {
            let _ = child.kill();
            let _ = child.wait();
        } else if let Some(pid) = self.node(dept)?.pid {
            signal(pid, Signal::KILL);
        }
        self.mark_stopped(dept)
    }

    fn mark_stopped(&mut self, dept: &str) -> Result<()> {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.dept == dept) {
            n.pid = None;
        }
        let sock = self.node(dept)?.home.join("admin.sock");
        let _ = std::fs::remove_file(sock);
        self.save()
    }

    /// Leaves the node processes running after this value is dropped (for
    /// `pdx-testnet up`; `pdx-testnet down` stops them by pid).
    pub fn detach(&mut self) {
        self.children.clear();
    }

    /// Stops every node: all are signalled first, so they shut down
    /// together (one grace period in all, not one per node).
    pub fn stop_all(&mut self, grace: Duration) -> Result<()> {
        let depts: Vec<String> = self.nodes.iter().map(|n| n.dept.clone()).collect();
        let mut stopping = Vec::new();
        for d in &depts {
            if let Some(child) = self.take_child(d) {
                signal(child.id(), Signal::TERM);
                stopping.push((d.clone(), child));
            }
        }
        let deadline = Instant::now() + grace;
        for (d, mut child) in stopping {
            reap(&mut child, deadline)?;
            self.mark_stopped(&d)?;
        }
        // Nodes started by an earlier process (pid only).
        for d in depts {
            if self.node(&d)?.pid.is_some() {
                self.stop(&d, grace)?;
            }
        }
        Ok(())
    }

    /// Peak resident memory of a running node (VmHWM, KiB).
    pub fn peak_rss_kib(&self, dept: &str) -> Option<u64> {
        let pid = self.node(dept).ok()?.pid?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Whether a node's process is alive.
    pub fn is_running(&self, dept: &str) -> bool {
        self.node(dept)
            .ok()
            .and_then(|n| n.pid)
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Lifts a (stopped) node's per-department call limits, so a benchmark's
    /// load is carried, not shaped, by the defaults (5,000/s, burst 1,000,
    /// 256 in flight).
    pub fn lift_call_limits(&self, dept: &str) -> Result<()> {
        let path = self.node(dept)?.home.join("pdx.toml");
        let text = std::fs::read_to_string(&path)?
            .replace("calls_per_second = 5000", "calls_per_second = 1000000")
            .replace("call_burst = 1000", "call_burst = 1000000")
            .replace("max_calls_in_flight = 256", "max_calls_in_flight = 100000");
        std::fs::write(&path, text)?;
        Ok(())
    }

    /// Revokes a node's certificate and installs the new CRL on every node.
    pub fn revoke(&self, dept: &str) -> Result<()> {
        let serial = self.node(dept)?.serial.clone();
        let ca = self.ca_dir().display().to_string();
        self.pdx_ok(&["ca", "revoke", "--dir", &ca, "--serial", &serial])?;
        let crl = self.ca_dir().join("crl.pem").display().to_string();
        for n in &self.nodes {
            if n.dept != dept {
                self.pdx_ok(&[
                    "crl",
                    "update",
                    "--home",
                    &n.home.display().to_string(),
                    "--crl",
                    &crl,
                ])?;
            }
        }
        Ok(())
    }
}

/// Sends `sig` to a process (best effort: it may have exited already).
pub fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Waits for a signalled child until `deadline`, then kills it.
fn reap(child: &mut Child, deadline: Instant) -> Result<()> {
    while Instant::now() < deadline && child.try_wait()?.is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait()?.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    Ok(())
}

/// A node whose `pdx serve` was spawned and is not listening yet.
struct Starting {
    dept: String,
    log_path: PathBuf,
    offset: u64,
    deadline: Instant,
}

fn stop_pid(pid: u32, grace: Duration) {
    signal(pid, Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        signal(pid, Signal::KILL);
    }
}
