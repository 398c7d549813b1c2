//! Argument definitions (clap). Names and flags are a contract for users
//! and scripts: extend, never rename. `dispatch` maps them to requests.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// pdx: a privacy-preserving data exchange node.
#[derive(Parser, Debug)]
#[command(name = "pdx", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Operator name recorded in audit entries (default: $USER).
    #[arg(long, global = true, env = "PDX_OPERATOR")]
    pub operator: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log lines on stderr as text or as JSON objects, one per line (level
    /// from PDX_LOG, default warn; `PDX_LOG=info pdx serve` logs each request).
    #[arg(long, global = true, env = "PDX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// `pdx backup`.
#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Write a sealed archive of the home: a consistent store snapshot,
    /// configuration, certificates and key files (audited).
    Create {
        #[command(flatten)]
        home: HomeArgs,
        /// Archive to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// File holding the backup passphrase (0600; its first line).
        #[arg(long, env = "PDX_BACKUP_PASSPHRASE_FILE")]
        backup_passphrase_file: PathBuf,
    },
    /// Check an archive without restoring it: every frame opens, every file
    /// matches the manifest, nothing a home needs is missing.
    Verify {
        /// Archive.
        file: PathBuf,
        /// File holding the backup passphrase.
        #[arg(long, env = "PDX_BACKUP_PASSPHRASE_FILE")]
        backup_passphrase_file: PathBuf,
    },
}

/// `pdx restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Archive to restore (into a new, empty --home).
    #[arg(
        long,
        required_unless_present = "acknowledge_loss",
        conflicts_with = "acknowledge_loss"
    )]
    pub from: Option<PathBuf>,
    /// Node home: the new one (with --from), or the restored one.
    #[arg(long, env = "PDX_HOME")]
    pub home: PathBuf,
    /// File holding the backup passphrase (with --from).
    #[arg(
        long,
        env = "PDX_BACKUP_PASSPHRASE_FILE",
        required_unless_present = "acknowledge_loss"
    )]
    pub backup_passphrase_file: Option<PathBuf>,
    /// Accept the loss `pdx serve` found (peers witnessed entries the backup
    /// lacks): writes a `discontinuity` entry and resumes signing.
    #[arg(long, requires = "reason")]
    pub acknowledge_loss: bool,
    /// Why the loss is accepted (audited; the regulator reads it).
    #[arg(long)]
    pub reason: Option<String>,
    /// File holding the node key passphrase (when the keys are protected).
    #[arg(long, env = "PDX_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// `pdx generate`.
#[derive(Subcommand, Debug)]
pub enum GenerateCmd {
    /// One roff man page per command (`pdx.1`, `pdx-import.1`, ...) into DIR.
    Man {
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
    },
    /// A completion script for SHELL into DIR (`pdx.bash`, `_pdx`, `pdx.fish`).
    Completions {
        /// Shell.
        #[arg(long, value_enum)]
        shell: clap_complete::Shell,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
    },
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `LEVEL span{id=..}: message`, for people.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`,
    /// `span` with the operation id), for log collectors.
    Json,
}

/// Home and passphrase options shared by node commands.
#[derive(Args, Debug, Clone)]
pub struct HomeArgs {
    /// Node home directory.
    #[arg(long, env = "PDX_HOME")]
    pub home: PathBuf,
    /// File holding the key passphrase (when the keys are protected).
    #[arg(long, env = "PDX_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// `pdx releases`.
#[derive(Args, Debug)]
pub struct ReleasesArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Print only the release ids, one per line (for scripts:
    /// `RELEASE_ID=$(pdx releases --home nat --ids --dataset D)`).
    #[arg(long)]
    pub ids: bool,
    /// Only releases of this dataset.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Only releases received from (`in`) or made for (`out`) this department.
    #[arg(long)]
    pub peer: Option<String>,
    /// Only releases received here.
    #[arg(long, conflicts_with = "produced")]
    pub received: bool,
    /// Only releases produced here.
    #[arg(long)]
    pub produced: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Network PKI: CA, node certificates, revocation.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Create a node home from a certificate directory.
    Init(InitArgs),
    /// Run the node (QUIC endpoint, admin socket).
    Serve(ServeArgs),
    /// Peers.
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Import a CSV file as a dataset.
    Import(ImportArgs),
    /// List datasets.
    Datasets(HomeArgs),
    /// Grant a department access to a dataset profile (or list/revoke grants).
    Grant(GrantArgs),
    /// Ask a peer which datasets it grants us.
    Catalog(CatalogArgs),
    /// Fetch a release from a peer (resumes interrupted transfers).
    Fetch(FetchArgs),
    /// Forward a received release to the department its fields are sealed for.
    Forward(ForwardArgs),
    /// List releases produced and received.
    Releases(ReleasesArgs),
    /// Export a received release to CSV (decrypts the fields sealed for this node).
    Export(ExportArgs),
    /// Release tools.
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// Node status: peers, last contact, pending transfers.
    Status(HomeArgs),
    /// Backups of a node home: create one (while the node serves), verify one.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Restore a node home from a backup (`--from`), or acknowledge what the
    /// restore lost (`--acknowledge-loss`) once `pdx serve` has asked the peers.
    Restore(RestoreArgs),
    /// Write man pages or shell completions generated from these definitions
    /// (packaging: `make deb` runs it).
    #[command(subcommand)]
    Generate(GenerateCmd),
    /// Check a node's health: permissions, certificate and CRL, disk, store,
    /// peers and their clocks, witnessing (exit 0 ok, 1 warnings, 2 errors).
    Doctor(HomeArgs),
    /// Certificate revocation list.
    #[command(subcommand)]
    Crl(CrlCmd),
    /// This node's certificate.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Key rotation and retirement.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Encryption key documents of other departments.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Schema tools.
    #[command(subcommand)]
    Schema(SchemaCmd),
    /// Audit log: export, verify, reconcile, proofs.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Homomorphic aggregates: encrypted per-category sums only a key holder opens.
    #[command(subcommand)]
    He(HeCmd),
    /// Cross-province settlement: confirmations and the clearing matrix.
    #[command(subcommand)]
    Settle(SettleCmd),
    /// Online services: publish one (provider), add one to call (consumer), list.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Call another department's service (signed, sealed, audited).
    Call(CallArgs),
    /// Calls this node made, relayed or answered: list, show, export for a dispute.
    #[command(subcommand)]
    Calls(CallsCmd),
    /// The local HTTP gateway for the department's own systems.
    #[command(subcommand)]
    Gateway(GatewayCmd),
    /// Accept a submission written in file mode (`--out` of he contribute/aggregate,
    /// settle confirm), or send it to a peer with --to.
    Submit {
        #[command(flatten)]
        home: HomeArgs,
        /// Submission file.
        #[arg(long)]
        file: PathBuf,
        /// Send the submission to this peer instead of accepting it here.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum HeCmd {
    /// Key holder: create a key pair and the signed query document; with
    /// --committee, propose a committee query (then: he key-share on each
    /// member, he key-finish here).
    Keygen {
        #[command(flatten)]
        home: HomeArgs,
        /// Query id.
        #[arg(long)]
        query: String,
        /// Schema file (TOML) of the datasets summed.
        #[arg(long)]
        schema: PathBuf,
        /// Value field to sum (repeat or comma-separate for several).
        #[arg(long = "value", value_delimiter = ',', required = true)]
        values: Vec<String>,
        /// Group-by field as FIELD[:TRANSFORM] (value, province, prefecture,
        /// icd10-category, month, quarter, year); repeat for several.
        #[arg(long = "group-by", value_delimiter = ',', required = true)]
        group_by: Vec<String>,
        /// Category list: one category per line, parts separated by '|'.
        #[arg(long)]
        categories: PathBuf,
        /// Minimum distinct contributors before decryption.
        #[arg(long, default_value_t = 3)]
        k: u32,
        /// Allowed contributor (repeat or comma-separate).
        #[arg(long = "contributor", value_delimiter = ',', required = true)]
        contributors: Vec<String>,
        /// Aggregator department.
        #[arg(long)]
        aggregator: String,
        /// Deadline: YYYY-MM-DD, RFC 3339, or +N[smhd].
        #[arg(long, default_value = "+30d")]
        deadline: String,
        /// Where to write the signed query document (default QUERY.query in the current directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Decryption committee, this node among them (repeat or comma-separate;
        /// 2 to 7 members): no member ever holds the whole key.
        #[arg(long = "committee", value_delimiter = ',')]
        committee: Vec<String>,
        /// Committee members whose partial decryptions suffice (default: all).
        #[arg(long, requires = "committee")]
        threshold: Option<u8>,
        /// Digest of the installed CRS (`pdx he crs install`) every
        /// contribution must carry proofs against: the aggregator refuses a
        /// contribution that is not a well-formed encryption of in-range limbs.
        #[arg(long, requires = "committee")]
        crs: Option<String>,
    },
    /// Proof CRS files (made by the network CA with `pdx ca zk-crs`).
    #[command(subcommand)]
    Crs(HeCrsCmd),
    /// Committee member: deal this member's sub-shares of a proposed query and
    /// send them (public parts; secrets sealed for their other holders) to the coordinator.
    KeyShare {
        #[command(flatten)]
        home: HomeArgs,
        /// Query id.
        #[arg(long)]
        query: String,
    },
    /// Coordinator: once every member's key share arrived, make the committee's
    /// public key, sign the query and send every member the transcript.
    KeyFinish {
        #[command(flatten)]
        home: HomeArgs,
        /// Query id.
        #[arg(long)]
        query: String,
        /// Where to write the signed query document (default QUERY.query in the current directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Committee member: partially decrypt the aggregate and send it to the coordinator.
    Partial {
        #[command(flatten)]
        home: HomeArgs,
        /// Query id.
        #[arg(long)]
        query: String,
    },
    /// Coordinator: combine the members' partial decryptions (at least the
    /// threshold) and decode the sum; once per query.
    Combine {
        #[command(flatten)]
        home: HomeArgs,
        /// Query id.
        #[arg(long)]
        query: String,
    },
    /// Contributor: sum a dataset per category, encrypt, sign, send to the aggregator.
    Contribute {
        #[command(flatten)]
        home: HomeArgs,
        /// The key holder's query document.
        #[arg(long)]
        query: PathBuf,
        /// Dataset to sum.
        #[arg(long)]
        dataset: String,
        /// Aggregator department (must be the query's).
        #[arg(long)]
        to: String,
        /// Write the submission to this file instead of sending it (then: pdx submit --file).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Aggregator: check and add the contributions, send the sum to the key holder.
    Aggregate {
        #[command(flatten)]
        home: HomeArgs,
        /// Query id.
        #[arg(long)]
        query: String,
        /// Key holder department (must be the query's).
        #[arg(long)]
        to: String,
        /// Write the submission to this file instead of sending it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Key holder: decrypt the sum (refused below k distinct contributors).
    Decrypt {
        #[command(flatten)]
        home: HomeArgs,
        /// Query id.
        #[arg(long)]
        query: String,
    },
    /// Recompute the aggregate from the contributions (on the aggregator, or
    /// offline from `pdx he export` with --bundle and --ca). Exit 2 on mismatch.
    VerifySum {
        /// Node home holding the contributions.
        #[arg(long, env = "PDX_HOME", required_unless_present = "bundle")]
        home: Option<PathBuf>,
        /// File holding the key passphrase.
        #[arg(long, env = "PDX_PASSPHRASE_FILE")]
        passphrase_file: Option<PathBuf>,
        /// Query id (with --home).
        #[arg(long, required_unless_present = "bundle")]
        query: Option<String>,
        /// Bundle written by `pdx he export` (offline).
        #[arg(long, conflicts_with = "home")]
        bundle: Option<PathBuf>,
        /// Network CA certificate (PEM), with --bundle.
        #[arg(long, requires = "bundle")]
        ca: Option<PathBuf>,
        /// With --bundle: the CRS file the query names (its contributions'
        /// proofs are verified against it; needed when the query names one).
        #[arg(long, requires = "bundle")]
        crs: Option<PathBuf>,
    },
    /// Write the query, aggregate and encrypted contributions held here to a file.
    Export {
        #[command(flatten)]
        home: HomeArgs,
        /// Query id.
        #[arg(long)]
        query: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Queries held on this node.
    List(HomeArgs),
}

#[derive(Subcommand, Debug)]
pub enum SettleCmd {
    /// Insured province: open the identities relayed to it, check them against
    /// the insured registry, send a signed confirmation to the clearing node.
    Confirm {
        #[command(flatten)]
        home: HomeArgs,
        /// Received release id (hex); repeat for several.
        #[arg(long, required_unless_present = "all")]
        release: Vec<String>,
        /// Confirm every relayed `clearing` release not confirmed yet.
        #[arg(long)]
        all: bool,
        /// Insured registry CSV (psn_no and optionally certno columns).
        #[arg(long)]
        registry: PathBuf,
        /// Amount field confirmed.
        #[arg(long, default_value = "fund_pay_sumamt")]
        amount_field: String,
        /// Clearing node department.
        #[arg(long)]
        to: String,
        /// Write the submission to this file instead of sending it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The month cleared (YYYY-MM): records dated outside it are disputed.
        #[arg(long)]
        month: Option<String>,
        /// Field the month is read from.
        #[arg(long, default_value = "setl_time")]
        date_field: String,
    },
    /// Clearing node: every record an insured province disputes, with its
    /// reason and evidence digests.
    Disputes {
        #[command(flatten)]
        home: HomeArgs,
    },
    /// Clearing node: the matrix of what each insured province owes each
    /// treatment province, confirmations and net positions.
    Clearing {
        #[command(flatten)]
        home: HomeArgs,
        /// Profile of the clearing releases.
        #[arg(long, default_value = "clearing")]
        profile: String,
        /// Amount field cleared.
        #[arg(long, default_value = "fund_pay_sumamt")]
        amount_field: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Create a network CA and choose the network's suite, once: intl
    /// (ECDSA P-256 CA, Ed25519, X25519, AES-256-GCM, BLAKE3) or gm (SM2 CA
    /// and keys, SM3, SM4-GCM; the 国密 suite for the 密评 assessment).
    Init {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Network name (lower-case letters, digits, '-').
        #[arg(long)]
        network: String,
        /// The network's cryptographic suite: intl or gm.
        #[arg(long, default_value = "intl", value_parser = parse_suite)]
        suite: pdx_crypto::Suite,
    },
    /// Issue a node certificate and key; with --renew, a new certificate
    /// for a department that has one (same audit log, same or new key).
    Issue {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Department code (letters, digits, '-', '.'), e.g. 440000. With
        /// --renew: taken from --cert (must match when given).
        #[arg(long, required_unless_present = "renew")]
        dept: Option<String>,
        /// Display name. With --renew: the current certificate's unless given.
        #[arg(long, required_unless_present = "renew")]
        name: Option<String>,
        /// Output directory for node.crt, node.key, ca.crt, crl.pem (and
        /// audit.key for a new department).
        #[arg(long)]
        out: PathBuf,
        /// Renew the certificate given with --cert: the new one binds the
        /// same audit log; install it with `pdx cert install`.
        #[arg(long, requires = "cert")]
        renew: bool,
        /// With --renew: the department's current certificate (its
        /// HOME/tls/node.crt), expired or not.
        #[arg(long, requires = "renew")]
        cert: Option<PathBuf>,
        /// With --renew: certify a new identity key (written to OUT/node.key)
        /// instead of the current one.
        #[arg(long, requires = "renew")]
        new_key: bool,
    },
    /// Revoke a certificate by serial (re-signs crl.pem).
    Revoke {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Certificate serial (hex).
        #[arg(long)]
        serial: String,
    },
    /// Re-sign the CRL (fresh validity period).
    Crl {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// List issued certificates.
    List {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Make the common reference string of contribution proofs (committee
    /// layout; about 30 s) and print its digest to publish. Its randomness
    /// is dropped: nobody, the CA included, keeps what could forge proofs.
    ZkCrs {
        /// CA directory (its suite's hash names the file).
        #[arg(long)]
        dir: PathBuf,
        /// Output file (public; give it to every node).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum HeCrsCmd {
    /// Check a CRS file (size, tfhe conformance to the committee layout)
    /// and keep it under HOME/he-crs/DIGEST.crs.
    Install {
        #[command(flatten)]
        home: HomeArgs,
        /// The CRS file.
        #[arg(long)]
        file: PathBuf,
        /// The digest the CA published; another file is refused.
        #[arg(long)]
        digest: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Node home to create.
    #[arg(long)]
    pub home: PathBuf,
    /// Directory made by `pdx ca issue`.
    #[arg(long)]
    pub cert_dir: PathBuf,
    /// QUIC listen address (HOST:PORT).
    #[arg(long)]
    pub listen: String,
    /// Protect the keys with the passphrase in this file.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Protect the keys with a passphrase asked on the terminal.
    #[arg(long, conflicts_with = "passphrase_file")]
    pub passphrase_prompt: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Node home.
    #[arg(long, env = "PDX_HOME")]
    pub home: PathBuf,
    /// File holding the key passphrase.
    #[arg(long, env = "PDX_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Run in the background: return once the node answers on its admin
    /// socket (output to HOME/serve.log; stop it with
    /// `kill $(cat HOME/serve.pid)`).
    #[arg(long)]
    pub detach: bool,
    /// Serve Prometheus metrics on this address (default 127.0.0.1:9464 when
    /// given without one; overrides `[operations] metrics`).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = pdx_node::config::DEFAULT_METRICS_ADDR)]
    pub metrics: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PeerCmd {
    /// Record where a peer listens.
    Add {
        #[command(flatten)]
        home: HomeArgs,
        /// Peer department (repeat, paired in order with --addr, to add several).
        #[arg(long, required = true)]
        dept: Vec<String>,
        /// Peer address HOST:PORT.
        #[arg(long, required = true)]
        addr: Vec<String>,
    },
    /// List peers.
    List(HomeArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Schema file (TOML).
    #[arg(long)]
    pub schema: PathBuf,
    /// CSV file.
    #[arg(long)]
    pub csv: PathBuf,
    /// Dataset id.
    #[arg(long)]
    pub dataset: String,
    /// CSV encoding: utf-8 or gb18030.
    #[arg(long, default_value = "utf-8")]
    pub encoding: String,
    /// reject (nothing imported if any row is bad) or skip.
    #[arg(long, default_value = "reject")]
    pub on_error: String,
    /// Where rejected rows go with --on-error skip.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Replace an existing dataset of this id (audited, naming the old and
    /// new digests); without it an existing id is refused.
    #[arg(long, conflicts_with = "append")]
    pub replace: bool,
    /// Add the file's rows to an existing dataset of this id (same schema;
    /// audited, naming the old and new digests).
    #[arg(long)]
    pub append: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct GrantArgs {
    #[command(subcommand)]
    pub sub: Option<GrantCmd>,
    /// Node home.
    #[arg(long, env = "PDX_HOME")]
    pub home: Option<PathBuf>,
    /// File holding the key passphrase.
    #[arg(long, env = "PDX_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Dataset.
    #[arg(long, required_unless_present = "service", conflicts_with = "service")]
    pub dataset: Option<String>,
    /// A published service instead of a dataset: the recipient may call it.
    #[arg(long)]
    pub service: Option<String>,
    /// Recipient department.
    #[arg(long, required = true)]
    pub to: Option<String>,
    /// Release profile.
    #[arg(long, required_unless_present = "service", conflicts_with = "service")]
    pub profile: Option<String>,
    /// Purpose of use.
    #[arg(long, required = true)]
    pub purpose: Option<String>,
    /// Data-sharing agreement id.
    #[arg(long)]
    pub agreement: Option<String>,
    /// Expiry: YYYY-MM-DD, RFC 3339, or +N[s|m|h|d].
    #[arg(long)]
    pub expires: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum GrantCmd {
    /// List grants.
    List(HomeArgs),
    /// Revoke a grant.
    Revoke {
        #[command(flatten)]
        home: HomeArgs,
        /// Grant id.
        #[arg(long)]
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct CatalogArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Peer department.
    #[arg(long)]
    pub peer: String,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Peer department.
    #[arg(long)]
    pub peer: String,
    /// Dataset.
    #[arg(long)]
    pub dataset: String,
    /// Profile.
    #[arg(long)]
    pub profile: String,
    /// Agreement (default: the one the peer's grant names).
    #[arg(long)]
    pub agreement: Option<String>,
    /// Purpose (default: the one the peer's grant names).
    #[arg(long)]
    pub purpose: Option<String>,
    /// Retries after a lost connection (each resumes from the last stored chunk).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Only the rows added since the newest release of this dataset, profile
    /// and purpose held here (one daily upload); refused for profiles with
    /// a privacy model (k, l).
    #[arg(long)]
    pub incremental: bool,
}

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Release id.
    #[arg(long, required_unless_present = "all_releases")]
    pub release: Option<String>,
    /// Forward every complete received release with chunks sealed for
    /// `--to`, over one connection, several transfers at a time.
    #[arg(long, conflicts_with_all = ["release", "all_recipients"], requires = "to")]
    pub all_releases: bool,
    /// Recipient department.
    #[arg(long, required_unless_present = "all_recipients")]
    pub to: Option<String>,
    /// Forward to every department the sender sealed chunks for.
    #[arg(long, conflicts_with = "to")]
    pub all_recipients: bool,
    /// Retries after a lost connection.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Release id.
    #[arg(long)]
    pub release: String,
    /// Output CSV.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum ReleaseCmd {
    /// Write the de-identified release locally for inspection.
    Preview {
        #[command(flatten)]
        home: HomeArgs,
        /// Dataset.
        #[arg(long)]
        dataset: String,
        /// Profile.
        #[arg(long)]
        profile: String,
        /// Agreement (pseudonym keys derive from it).
        #[arg(long)]
        agreement: Option<String>,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
        /// Report JSON.
        #[arg(long)]
        report: PathBuf,
        /// What-if: also report the k, l and risk the release would have with
        /// these released columns treated as quasi-identifiers (comma-separated).
        #[arg(long = "assume-qi", value_delimiter = ',')]
        assume_qi: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Install a renewed certificate (`pdx ca issue --renew`), with its new
    /// identity key when the directory holds node.key: takes effect at once
    /// in a running node (new handshakes use it; audited; the audit key is
    /// re-endorsed and key documents re-signed under it).
    Install {
        #[command(flatten)]
        home: HomeArgs,
        /// Directory made by `pdx ca issue --renew` (node.crt, and node.key
        /// for a new key).
        #[arg(long)]
        cert_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum CrlCmd {
    /// Install a new CRL (takes effect at once in a running node).
    Update {
        #[command(flatten)]
        home: HomeArgs,
        /// CRL file (PEM).
        #[arg(long)]
        crl: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Rotate a key (old keys are kept until retired).
    Rotate {
        #[command(flatten)]
        home: HomeArgs,
        /// encryption, signing (the audit signing key) or pseudonym.
        #[arg(long)]
        kind: String,
    },
    /// Retire an old encryption key.
    Retire {
        #[command(flatten)]
        home: HomeArgs,
        /// Key id.
        #[arg(long)]
        key_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Fetch key documents from a peer (its own, or its directory).
    Fetch {
        #[command(flatten)]
        home: HomeArgs,
        /// Peer to ask.
        #[arg(long)]
        peer: String,
        /// Only keys of these departments.
        #[arg(long)]
        of: Vec<String>,
    },
    /// List key documents held.
    List(HomeArgs),
}

#[derive(Subcommand, Debug)]
pub enum SchemaCmd {
    /// Validate a schema.
    Check {
        /// Schema file.
        file: PathBuf,
        /// The suite whose hash the reported digest uses (a gm network names
        /// schemas by SM3).
        #[arg(long, default_value = "intl", value_parser = parse_suite)]
        suite: pdx_crypto::Suite,
    },
    /// Print a schema.
    Show {
        /// Schema file.
        file: PathBuf,
        /// The suite whose hash the reported digest uses.
        #[arg(long, default_value = "intl", value_parser = parse_suite)]
        suite: pdx_crypto::Suite,
    },
}

/// Parses `intl` or `gm`.
pub fn parse_suite(s: &str) -> Result<pdx_crypto::Suite, String> {
    pdx_crypto::Suite::parse(s).ok_or_else(|| format!("unknown suite {s:?}: use intl or gm"))
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Export a self-contained audit bundle.
    Export {
        #[command(flatten)]
        home: HomeArgs,
        /// Bundle file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle offline (exit 0 valid, 2 tampered, 3 unverifiable).
    Verify {
        /// Bundle file (or use --home to export and verify a node's log).
        bundle: Option<PathBuf>,
        /// Node home to verify (exported to a temporary bundle).
        #[arg(long)]
        home: Option<PathBuf>,
        /// Peer bundles whose witnessed checkpoints are checked against this log.
        #[arg(long)]
        witness: Vec<PathBuf>,
        /// Trusted checkpoint files (from `pdx audit checkpoint --out`).
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// Network CA certificate to trust (default: the one in the bundle).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Match every send with the recipient's receive across bundles.
    Reconcile {
        /// Bundles.
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
        /// Network CA certificate to trust.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Inclusion proof of an entry against the latest checkpoint.
    Prove {
        #[command(flatten)]
        home: HomeArgs,
        /// Entry sequence number.
        #[arg(long)]
        seq: u64,
    },
    /// Consistency proof between tree sizes.
    Consistency {
        #[command(flatten)]
        home: HomeArgs,
        /// Older size.
        #[arg(long)]
        from: u64,
        /// Newer size (default: the latest checkpoint).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Show entries, filtered.
    Show {
        #[command(flatten)]
        home: HomeArgs,
        /// Only this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// Only this counterparty.
        #[arg(long)]
        counterparty: Option<String>,
        /// Only this event kind.
        #[arg(long)]
        kind: Option<String>,
        /// From (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Until (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        until: Option<String>,
        /// Only the last N matches.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Sign a checkpoint now and optionally write it (a trusted checkpoint for verify).
    Checkpoint {
        #[command(flatten)]
        home: HomeArgs,
        /// Output file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Provider: bind a service to the department's own HTTP+JSON backend.
    Publish {
        #[command(flatten)]
        home: HomeArgs,
        /// Service definition (TOML).
        #[arg(long)]
        schema: PathBuf,
        /// Service id the file defines.
        #[arg(long)]
        service: String,
        /// Backend URL (http://HOST:PORT/PATH).
        #[arg(long)]
        backend: String,
        /// Backend timeout in ms (default: the definition's).
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// Consumer: add a service definition to call it.
    Add {
        #[command(flatten)]
        home: HomeArgs,
        /// Service definition (TOML).
        #[arg(long)]
        schema: PathBuf,
        /// Service id the file defines.
        #[arg(long)]
        service: String,
    },
    /// List the services this node knows.
    List(HomeArgs),
    /// Consumer: append each ok call of a service to a dataset (one row per
    /// settlement), columns mapped from the request, the response and the call.
    Record {
        #[command(flatten)]
        home: HomeArgs,
        /// Service id (added with `pdx service add`).
        #[arg(long, required_unless_present = "flush")]
        service: Option<String>,
        /// Dataset the rows go to (created on the first append).
        #[arg(long, required_unless_present = "flush")]
        dataset: Option<String>,
        /// Schema of the dataset (TOML); default: the schema of the existing
        /// dataset.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Map file: [columns] COLUMN = "request.F" | "response.F" | "call.time" | "call.id" | "call.provider" | { value = "TEXT" }.
        #[arg(long, required_unless_present = "flush")]
        map: Option<PathBuf>,
        /// Append the outcomes queued so far now (`pdx serve` does every minute
        /// and before each release of the dataset).
        #[arg(long)]
        flush: bool,
    },
}

#[derive(Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Providing department.
    #[arg(long)]
    pub to: String,
    /// Service id.
    #[arg(long)]
    pub service: String,
    /// Request: a JSON file of fields (- for standard input).
    #[arg(long)]
    pub body: PathBuf,
    /// Through this hub (default: the route table, else direct).
    #[arg(long)]
    pub via: Option<String>,
    /// Idempotency key (e.g. the settlement id); random when not given.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CallsCmd {
    /// List calls recorded here (oldest first).
    List {
        #[command(flatten)]
        home: HomeArgs,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Only calls with this department.
        #[arg(long)]
        peer: Option<String>,
        /// Only this outcome (ok, backend-error, not-granted, ...).
        #[arg(long)]
        outcome: Option<String>,
        /// Only since: YYYY-MM-DD or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// At most the last N.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one call as recorded here.
    Show {
        #[command(flatten)]
        home: HomeArgs,
        /// Call id.
        #[arg(long)]
        id: String,
    },
    /// Check an evidence file offline: certificates (against the CA), signatures,
    /// and each response's binding to its request (exit 2 if any fails).
    Verify {
        /// Evidence file (`pdx calls export`).
        #[arg(long)]
        file: PathBuf,
        /// The network CA certificate.
        #[arg(long)]
        ca: PathBuf,
    },
    /// Write the signed messages of calls to an evidence file (for a dispute).
    Export {
        #[command(flatten)]
        home: HomeArgs,
        /// Call id (repeat for several).
        #[arg(long = "id", required = true)]
        ids: Vec<String>,
        /// Evidence file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum GatewayCmd {
    /// Turn the gateway on at the next `pdx serve` (writes a 0600 token file if none).
    Enable {
        /// Node home directory.
        #[arg(long, env = "PDX_HOME")]
        home: PathBuf,
        /// Address to listen on (loopback recommended): IP:PORT.
        #[arg(long)]
        listen: String,
    },
    /// Route calls to departments matching --to through hub --via (next `pdx serve`).
    Route {
        /// Node home directory.
        #[arg(long, env = "PDX_HOME")]
        home: PathBuf,
        /// Department pattern: a code, a prefix ending in *, or *.
        #[arg(long)]
        to: String,
        /// Hub department.
        #[arg(long)]
        via: String,
    },
    /// Hub: relay calls from departments matching --from to departments matching --to.
    Relay {
        /// Node home directory.
        #[arg(long, env = "PDX_HOME")]
        home: PathBuf,
        /// Calling department pattern.
        #[arg(long)]
        from: String,
        /// Providing department pattern.
        #[arg(long)]
        to: String,
    },
}
