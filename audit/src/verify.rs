//! The offline verifier: everything a regulator needs to decide, from a bundle,
//! its peers' bundles and any trusted checkpoints, whether a log is intact.
//!
//! One streaming pass over the entries checks every chained element (not only
//! the ends of a segment), rebuilds the RFC 9162 tree, records roots at every
//! size some checkpoint speaks about, and follows audit-key rotations. Then every
//! checkpoint (own, cosigned by peers, held by witnesses, trusted) is checked
//! under the key valid at its size and against the rebuilt roots.

use crate::bundle::{BundleHeader, BundleReader, PeerItem};
use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::entry::{EntryView, LogId, rotation_message};
use crate::error::AuditError;
use crate::merkle::{self, Frontier, Hash};
use pdx_crypto::{Signature, SignatureDomain, Suite, VerifyingKey};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

/// Validates node certificates against the CA the regulator trusts.
pub trait CertificateCheck {
    /// Returns what the certificate vouches for, or why it cannot be trusted.
    fn check(&self, certificate_der: &[u8]) -> Result<CertIdentity, String>;

    /// The same, judging validity at `at_ms` (when the certificate was used to
    /// sign), so evidence outlives the certificate. The default ignores time.
    fn check_at(&self, certificate_der: &[u8], at_ms: u64) -> Result<CertIdentity, String> {
        let _ = at_ms;
        self.check(certificate_der)
    }
}

/// What a trusted certificate vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    /// The department.
    pub dept: String,
    /// Its Ed25519 identity key.
    pub identity: VerifyingKey,
    /// The department's one audit log (`dept:genesis key id`), if the
    /// certificate binds one (`urn:pdx:log:` SAN URI).
    pub log_id: Option<String>,
}

/// What a finding is about. Each tampering the verifier can tell apart has its own case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Case {
    /// An entry's content differs from what was chained or checkpointed.
    AlteredEntry,
    /// Sequence numbers are missing.
    DeletedEntries,
    /// An entry that was never part of the log was inserted.
    InsertedEntry,
    /// Entries appear out of order.
    ReorderedEntries,
    /// The log ends before a checkpoint it signed (held by a witness or trusted).
    TruncatedTail,
    /// Two signed checkpoints of the log cannot both be true.
    Fork,
    /// An entry appears twice.
    ReplayedEntry,
    /// A signature by a key that was not the log's key at that point (or never was).
    WrongKey,
    /// A signature by a key that only became valid later.
    NotYetValidKey,
    /// An entry or checkpoint of another log.
    ForeignEntry,
    /// Bytes that are not a canonical entry.
    MalformedEntry,
    /// A signature that does not verify under the key it names.
    BadSignature,
    /// Key material or certificates needed for a check are missing or untrusted.
    MissingKey,
    /// Data needed for a check is missing.
    MissingData,
    /// The bundle's framing is broken: magic, lengths, entry count, end
    /// marker, trailing bytes, or a header that does not decode.
    BrokenFraming,
    /// The bundle is in a format this verifier does not read.
    UnknownFormat,
    /// Time goes backwards between consecutive entries.
    DecreasingTime,
    /// Entries peers had witnessed were lost in a restore from a backup, and
    /// an operator acknowledged it in a `discontinuity` entry (§11): the
    /// lost entries cannot be checked, and the peers' checkpoints of them
    /// are not a fork.
    Discontinuity,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Could not be checked (key or data missing); not evidence of tampering.
    Unverifiable,
    /// Evidence of tampering.
    Tampered,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Case.
    pub case: Case,
    /// Severity.
    pub severity: Severity,
    /// Entry position or checkpoint size concerned, if any.
    pub at: Option<u64>,
    /// Human-readable explanation.
    pub detail: String,
}

/// Where the trusted CA came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaTrust {
    /// The regulator's own copy (`--ca`).
    Pinned,
    /// The CA certificate inside the bundle (not pinned).
    Bundle,
    /// No CA: certificates were not checked.
    #[default]
    None,
}

/// Overall result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every check passed.
    Valid,
    /// Evidence of tampering was found.
    Tampered,
    /// No tampering found, but something could not be checked.
    Unverifiable,
}

impl Verdict {
    /// Process exit code: 0 valid, 2 tampered, 3 unverifiable (1 is left for usage/IO errors).
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Tampered => 2,
            Verdict::Unverifiable => 3,
        }
    }
}

/// The verifier's report on one bundle.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Which CA the certificates were checked against: `pinned` (given by
    /// the regulator), or `bundle` (the CA certificate inside the bundle,
    /// so a bundle forged under its own CA would pass: pin the CA).
    pub ca: CaTrust,
    /// The caveat when the CA was not pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_note: Option<String>,
    /// Bundle name.
    pub bundle: String,
    /// Log id.
    pub log_id: String,
    /// Department.
    pub dept: String,
    /// Entries read.
    pub entries: u64,
    /// Root of the rebuilt tree (hex).
    pub root: String,
    /// Own checkpoints whose signature and root both verified.
    pub checkpoints_verified: usize,
    /// Own checkpoints in the bundle.
    pub checkpoints_total: usize,
    /// Peer cosignatures on this log that verified and match.
    pub cosignatures_verified: usize,
    /// Checkpoints of this log held by witnesses or trusted, checked against it.
    pub external_checkpoints_checked: usize,
    /// Audit keys followed (genesis plus rotations).
    pub keys: Vec<String>,
    /// Acknowledged losses the log states (`discontinuity` entries).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub discontinuities: Vec<DiscontinuityReport>,
    /// Checkpoints held by witnesses that a discontinuity explains (of lost
    /// entries, signed before the acknowledgement).
    #[serde(skip_serializing_if = "is_zero")]
    pub external_checkpoints_lost: usize,
    /// Findings.
    pub findings: Vec<Finding>,
    /// Verdict.
    pub verdict: Verdict,
}

/// A `discontinuity` entry, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiscontinuityReport {
    /// Its sequence number.
    pub seq: u64,
    /// When it was written (ms).
    pub time_ms: u64,
    /// Entries the restored log kept.
    pub restored_size: u64,
    /// Entries `restored_size..lost_to` are lost.
    pub lost_to: u64,
    /// What each peer held: `dept:size`.
    pub witnessed: Vec<String>,
    /// The operator's acknowledgement (the entry's detail).
    pub detail: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

struct KeyInfo {
    from_seq: u64,
    key: VerifyingKey,
}

/// Inputs besides the bundle.
#[derive(Default)]
pub struct VerifyInputs<'a> {
    /// Headers of peers' bundles (their `witnessed` and `evidence` lists are used).
    pub witnesses: Vec<(String, BundleHeader)>,
    /// Checkpoints of this log obtained out of band.
    pub trusted: Vec<(String, SignedCheckpoint)>,
    /// Certificate validation against the regulator's CA.
    pub certificates: Option<&'a dyn CertificateCheck>,
    /// Where that CA came from (reported).
    pub ca: CaTrust,
}

impl std::fmt::Debug for VerifyInputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyInputs")
            .field("witnesses", &self.witnesses.len())
            .field("trusted", &self.trusted.len())
            .finish()
    }
}

struct Checker {
    findings: Vec<Finding>,
}

impl Checker {
    fn tampered(&mut self, case: Case, at: Option<u64>, detail: String) {
        self.findings.push(Finding {
            case,
            severity: Severity::Tampered,
            at,
            detail,
        });
    }
    fn unverifiable(&mut self, case: Case, at: Option<u64>, detail: String) {
        self.findings.push(Finding {
            case,
            severity: Severity::Unverifiable,
            at,
            detail,
        });
    }
}

/// What the stream pass learned.
struct Stream {
    entries: u64,
    last_seq: Option<u64>,
    roots: HashMap<u64, Hash>,
    final_root: Hash,
    keys: Vec<KeyInfo>,
    discontinuities: Vec<DiscontinuityReport>,
}

/// The report on a bundle that could not even be opened: broken framing
/// (magic, header length or encoding) is evidence (`tampered`), an unknown
/// format is `unverifiable`. `None` for errors that say nothing about the
/// bundle (the file cannot be read).
pub fn unreadable(name: &str, error: &AuditError) -> Option<Report> {
    let (case, severity) = match error {
        AuditError::Bundle { .. } => (Case::BrokenFraming, Severity::Tampered),
        AuditError::UnknownFormat { .. } => (Case::UnknownFormat, Severity::Unverifiable),
        _ => return None,
    };
    let verdict = match severity {
        Severity::Tampered => Verdict::Tampered,
        Severity::Unverifiable => Verdict::Unverifiable,
    };
    Some(Report {
        ca: CaTrust::None,
        ca_note: None,
        bundle: name.to_string(),
        log_id: String::new(),
        dept: String::new(),
        entries: 0,
        root: String::new(),
        checkpoints_verified: 0,
        checkpoints_total: 0,
        cosignatures_verified: 0,
        external_checkpoints_checked: 0,
        keys: Vec::new(),
        discontinuities: Vec::new(),
        external_checkpoints_lost: 0,
        findings: vec![Finding {
            case,
            severity,
            at: None,
            detail: error.to_string(),
        }],
        verdict,
    })
}

/// Verifies a bundle read from `reader`.
pub fn verify<R: Read + Send>(
    mut reader: BundleReader<R>,
    name: &str,
    inputs: &VerifyInputs<'_>,
) -> Result<Report, AuditError> {
    let header = reader.header().clone();
    let mut c = Checker {
        findings: Vec::new(),
    };
    let log_id = LogId::parse(&header.log_id).ok_or_else(|| AuditError::Bundle {
        path: name.to_string(),
        reason: format!("header names an invalid log id {:?}", header.log_id),
    })?;
    if log_id.suite != header.suite {
        return Err(AuditError::Bundle {
            path: name.to_string(),
            reason: format!(
                "header states suite {} but its log id {} is of suite {}",
                header.suite, header.log_id, log_id.suite
            ),
        });
    }
    if log_id.dept != header.dept {
        c.tampered(
            Case::ForeignEntry,
            None,
            format!(
                "header department {} differs from the log id's {}",
                header.dept, log_id.dept
            ),
        );
    }

    // Keys: the genesis key must be endorsed by the department's certified identity.
    let endorsed = check_endorsements(&header, &log_id, inputs, &mut c);
    let genesis = endorsed.get(&0).copied();
    if genesis.is_none() {
        c.unverifiable(
            Case::MissingKey,
            None,
            "no valid endorsement of the genesis audit key: checkpoint signatures cannot be tied to the department".into(),
        );
    }

    // Sizes at which some checkpoint needs the rebuilt root.
    let mut sizes = BTreeSet::new();
    let own: Vec<(SignedCheckpoint, Option<Checkpoint>)> = header
        .checkpoints
        .iter()
        .map(|s| (s.clone(), s.peek().ok()))
        .collect();
    let mut external: Vec<(String, SignedCheckpoint)> = inputs.trusted.clone();
    for (i, w) in header.witnessed.iter().enumerate() {
        if let PeerItem::Malformed(why) = w {
            c.tampered(
                Case::MalformedEntry,
                None,
                format!("witnessed item {i} of the header (peers' data) does not decode: {why}"),
            );
        }
    }
    for (i, ev) in header.evidence.iter().enumerate() {
        if let PeerItem::Malformed(why) = ev {
            c.tampered(
                Case::MalformedEntry,
                None,
                format!("evidence item {i} of the header (peers' data) does not decode: {why}"),
            );
        }
    }
    for (wname, wh) in &inputs.witnesses {
        for (i, item) in wh.witnessed.iter().enumerate() {
            let Some(w) = item.ok() else {
                c.unverifiable(
                    Case::MissingData,
                    None,
                    format!(
                        "witness {wname}: witnessed item {i} does not decode and cannot be checked"
                    ),
                );
                continue;
            };
            if w.log_id == header.log_id {
                external.push((
                    format!("witness {wname} ({})", wh.dept),
                    w.checkpoint.clone(),
                ));
            }
        }
        for ev in wh.evidence.iter().filter_map(PeerItem::ok) {
            if ev.log_id == header.log_id {
                external.push((format!("fork evidence held by {wname}"), ev.earlier.clone()));
                external.push((format!("fork evidence held by {wname}"), ev.later.clone()));
            }
        }
    }
    for s in own.iter().filter_map(|(_, p)| p.as_ref()).map(|p| p.size) {
        sizes.insert(s);
    }
    for (_, s) in &external {
        if let Ok(p) = s.peek() {
            sizes.insert(p.size);
        }
    }
    let mut cosigs = Vec::new();
    for sc in &header.cosignatures {
        match sc
            .signed
            .dangerous_decode_unverified::<crate::checkpoint::Cosignature>("cosignature")
        {
            Ok(cs) => {
                sizes.insert(cs.size);
                cosigs.push((sc, cs));
            }
            Err(e) => c.tampered(
                Case::MalformedEntry,
                None,
                format!("unreadable cosignature: {e}"),
            ),
        }
    }

    let stream = stream_entries(&mut reader, &log_id, genesis, &endorsed, &sizes, &mut c)?;

    // Own checkpoints.
    let mut verified = 0;
    let mut by_size: BTreeMap<u64, Hash> = BTreeMap::new();
    for (signed, peeked) in &own {
        let Some(cp) = peeked else {
            c.tampered(
                Case::MalformedEntry,
                None,
                "a checkpoint in the header does not decode".into(),
            );
            continue;
        };
        if check_checkpoint(
            &header.log_id,
            signed,
            cp,
            &stream,
            &mut c,
            "the bundle's own checkpoint",
        ) {
            verified += 1;
            if let Some(prev) = by_size.insert(cp.size, cp.root)
                && prev != cp.root
            {
                c.tampered(
                    Case::Fork,
                    Some(cp.size),
                    format!("two checkpoints of size {} with different roots", cp.size),
                );
            }
        }
    }
    let last_covered = own
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .map(|p| p.size)
        .max()
        .unwrap_or(0);
    if stream.entries > last_covered {
        c.tampered(
            Case::InsertedEntry,
            Some(last_covered),
            format!(
                "entries {}..{} are covered by no signed checkpoint (an export always signs one over its last entry)",
                last_covered, stream.entries
            ),
        );
    }

    // Cosignatures peers made on this log.
    let mut cosignatures_verified = 0;
    for (sc, cs) in &cosigs {
        if cs.log_id != header.log_id {
            c.tampered(
                Case::ForeignEntry,
                None,
                format!("cosignature for another log {}", cs.log_id),
            );
            continue;
        }
        let Some(certs) = inputs.certificates else {
            c.unverifiable(
                Case::MissingKey,
                Some(cs.size),
                "no CA to check the witness's certificate".into(),
            );
            continue;
        };
        let witness = match certs.check_at(&sc.witness_endorsement.certificate, cs.time_ms) {
            Ok(w) => w,
            Err(e) => {
                c.unverifiable(
                    Case::MissingKey,
                    Some(cs.size),
                    format!("witness {} certificate: {e}", cs.witness),
                );
                continue;
            }
        };
        let ok = sc
            .witness_endorsement
            .verify(&witness.identity)
            .ok()
            .and_then(|en| sc.verify(&en.audit_key).ok().map(|v| (en, v)));
        let Some((en, _)) = ok else {
            c.tampered(
                Case::BadSignature,
                Some(cs.size),
                format!("cosignature by {} does not verify", cs.witness),
            );
            continue;
        };
        if !en.log_id.starts_with(&format!("{}:", witness.dept)) {
            c.tampered(
                Case::WrongKey,
                Some(cs.size),
                format!(
                    "cosignature key endorsed for {} by {}",
                    en.log_id, witness.dept
                ),
            );
            continue;
        }
        match compare_root(cs.size, &cs.root, &stream) {
            RootCheck::Match => cosignatures_verified += 1,
            RootCheck::Beyond => c.tampered(
                Case::TruncatedTail,
                Some(cs.size),
                format!(
                    "{} cosigned a checkpoint of size {} but the bundle has {} entries",
                    cs.witness, cs.size, stream.entries
                ),
            ),
            RootCheck::Differs => c.tampered(
                Case::Fork,
                Some(cs.size),
                format!(
                    "{} cosigned a different root at size {}",
                    cs.witness, cs.size
                ),
            ),
        }
    }

    // Checkpoints of this log held elsewhere. One of entries a restore
    // lost, signed before the loss was acknowledged, is explained by the
    // discontinuity (its signature must still verify).
    let mut external_checked = 0;
    let mut external_lost = 0;
    for (source, signed) in &external {
        let Ok(cp) = signed.peek() else {
            c.unverifiable(
                Case::MalformedEntry,
                None,
                format!("{source}: checkpoint does not decode"),
            );
            continue;
        };
        let mut scratch = Checker {
            findings: Vec::new(),
        };
        if check_checkpoint(&header.log_id, signed, &cp, &stream, &mut scratch, source) {
            external_checked += 1;
            continue;
        }
        let lost = stream
            .discontinuities
            .iter()
            .any(|d| cp.size > d.restored_size && cp.size <= d.lost_to && cp.time_ms <= d.time_ms);
        let only_root = scratch.findings.iter().all(|f| {
            matches!(
                f.case,
                Case::Fork | Case::TruncatedTail | Case::DeletedEntries | Case::AlteredEntry
            )
        });
        if lost && only_root {
            external_lost += 1;
        } else {
            c.findings.extend(scratch.findings);
        }
    }
    for d in &stream.discontinuities {
        c.unverifiable(
            Case::Discontinuity,
            Some(d.restored_size),
            format!(
                "entries {}..{} were lost in a restore from a backup (peers had witnessed them: {}); acknowledged at seq {}: {}",
                d.restored_size,
                d.lost_to,
                d.witnessed.join(", "),
                d.seq,
                d.detail
            ),
        );
    }

    let verdict = if c.findings.iter().any(|f| f.severity == Severity::Tampered) {
        Verdict::Tampered
    } else if c.findings.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Unverifiable
    };
    let ca = if inputs.certificates.is_some() {
        inputs.ca
    } else {
        CaTrust::None
    };
    Ok(Report {
        ca,
        ca_note: (ca == CaTrust::Bundle)
            .then(|| "CA not pinned: trusted the CA certificate inside the bundle".to_string()),
        bundle: name.to_string(),
        log_id: header.log_id.clone(),
        dept: header.dept.clone(),
        entries: stream.entries,
        root: hex::encode(stream.final_root),
        checkpoints_verified: verified,
        checkpoints_total: own.len(),
        cosignatures_verified,
        external_checkpoints_checked: external_checked,
        discontinuities: stream.discontinuities.clone(),
        external_checkpoints_lost: external_lost,
        keys: stream
            .keys
            .iter()
            .map(|k| format!("{} from seq {}", k.key.key_id(), k.from_seq))
            .collect(),
        findings: c.findings,
        verdict,
    })
}

fn check_endorsements(
    header: &BundleHeader,
    log_id: &LogId,
    inputs: &VerifyInputs<'_>,
    c: &mut Checker,
) -> BTreeMap<u64, VerifyingKey> {
    let mut out = BTreeMap::new();
    let Some(certs) = inputs.certificates else {
        c.unverifiable(
            Case::MissingKey,
            None,
            "no CA given: endorsements cannot be checked".into(),
        );
        return out;
    };
    for e in &header.endorsements {
        // Validity is judged when the endorsement was made, so evidence
        // outlives the certificate (its time is read before the signature
        // is checked, and the signature then covers it).
        let at = e
            .signed
            .dangerous_decode_unverified::<crate::checkpoint::KeyEndorsement>("endorsement")
            .map(|en| en.time_ms)
            .unwrap_or(0);
        let CertIdentity {
            dept,
            identity,
            log_id: bound,
        } = match certs.check_at(&e.certificate, at) {
            Ok(x) => x,
            Err(why) => {
                c.unverifiable(
                    Case::MissingKey,
                    None,
                    format!("endorsement certificate not trusted: {why}"),
                );
                continue;
            }
        };
        if dept != log_id.dept {
            c.tampered(
                Case::WrongKey,
                None,
                format!(
                    "an audit key of log {} is endorsed by the certificate of {dept}",
                    log_id
                ),
            );
            continue;
        }
        // One log per department: the certificate names it.
        match &bound {
            Some(b) if *b == header.log_id => {}
            Some(b) => {
                c.tampered(
                    Case::ForeignEntry,
                    None,
                    format!(
                        "the certificate of {dept} binds its audit log {b}; this bundle is a second log {}",
                        header.log_id
                    ),
                );
                continue;
            }
            None => {
                c.unverifiable(
                    Case::MissingKey,
                    None,
                    format!("the certificate of {dept} binds no audit log (urn:pdx:log:)"),
                );
                continue;
            }
        }
        match e.verify(&identity) {
            Ok(en) if en.log_id == header.log_id => {
                if en.audit_key.suite() != log_id.suite {
                    c.tampered(
                        Case::WrongKey,
                        None,
                        format!(
                            "an audit key of the {} log {} is a {} key",
                            log_id.suite,
                            log_id,
                            en.audit_key.suite()
                        ),
                    );
                    continue;
                }
                if en.from_seq == 0 && en.audit_key.key_id() != log_id.genesis_key {
                    c.tampered(
                        Case::WrongKey,
                        None,
                        format!(
                            "genesis endorsement names key {} but the log id names {}",
                            en.audit_key.key_id(),
                            log_id.genesis_key
                        ),
                    );
                    continue;
                }
                // Renewals add endorsements of the same key (audit-format.md
                // §3); two keys for one from_seq cannot both hold.
                if let Some(other) = out.get(&en.from_seq)
                    && *other != en.audit_key
                {
                    c.tampered(
                        Case::WrongKey,
                        None,
                        format!(
                            "two audit keys endorsed from seq {}: {} and {}",
                            en.from_seq,
                            other.key_id(),
                            en.audit_key.key_id()
                        ),
                    );
                    continue;
                }
                out.insert(en.from_seq, en.audit_key);
            }
            Ok(en) => c.tampered(
                Case::ForeignEntry,
                None,
                format!("endorsement for another log {}", en.log_id),
            ),
            Err(_) => c.tampered(
                Case::BadSignature,
                None,
                "an audit key endorsement does not verify".into(),
            ),
        }
    }
    out
}

fn key_at(keys: &[KeyInfo], size: u64) -> Option<&KeyInfo> {
    keys.iter().rev().find(|k| k.from_seq < size)
}

enum RootCheck {
    Match,
    Differs,
    Beyond,
}

fn compare_root(size: u64, root: &Hash, stream: &Stream) -> RootCheck {
    if size > stream.entries {
        return RootCheck::Beyond;
    }
    match stream.roots.get(&size) {
        Some(r) if r == root => RootCheck::Match,
        _ => RootCheck::Differs,
    }
}

/// Checks one signed checkpoint of the log; returns whether it fully verified.
fn check_checkpoint(
    log_text: &str,
    signed: &SignedCheckpoint,
    cp: &Checkpoint,
    stream: &Stream,
    c: &mut Checker,
    source: &str,
) -> bool {
    if cp.origin != log_text {
        c.tampered(
            Case::ForeignEntry,
            Some(cp.size),
            format!("{source}: checkpoint of another log {}", cp.origin),
        );
        return false;
    }
    if cp.size == 0 {
        c.tampered(
            Case::MalformedEntry,
            Some(0),
            format!("{source}: checkpoint of the empty tree"),
        );
        return false;
    }
    let id = signed.key_id();
    let Some(valid) = key_at(&stream.keys, cp.size) else {
        c.unverifiable(
            Case::MissingKey,
            Some(cp.size),
            format!("{source}: no audit key known for size {}", cp.size),
        );
        return false;
    };
    if valid.key.key_id() != id {
        match stream.keys.iter().find(|k| k.key.key_id() == id) {
            Some(k) if k.from_seq >= cp.size => c.tampered(
                Case::NotYetValidKey,
                Some(cp.size),
                format!(
                    "{source}: checkpoint of size {} signed by key {id}, valid only from seq {}",
                    cp.size, k.from_seq
                ),
            ),
            Some(_) => c.tampered(
                Case::WrongKey,
                Some(cp.size),
                format!(
                    "{source}: checkpoint of size {} signed by rotated-out key {id} (valid: {})",
                    cp.size,
                    valid.key.key_id()
                ),
            ),
            None => c.tampered(
                Case::WrongKey,
                Some(cp.size),
                format!(
                    "{source}: checkpoint of size {} signed by key {id}, which this log never used",
                    cp.size
                ),
            ),
        }
        return false;
    }
    if signed.verify(&valid.key).is_err() {
        c.tampered(
            Case::BadSignature,
            Some(cp.size),
            format!(
                "{source}: checkpoint signature of size {} does not verify",
                cp.size
            ),
        );
        return false;
    }
    match compare_root(cp.size, &cp.root, stream) {
        RootCheck::Match => true,
        RootCheck::Beyond => {
            let claimed = stream.last_seq.map(|s| s + 1).unwrap_or(0);
            if claimed >= cp.size {
                c.tampered(
                    Case::DeletedEntries,
                    Some(cp.size),
                    format!(
                        "{source}: checkpoint of size {} but only {} entries are present (entries deleted)",
                        cp.size, stream.entries
                    ),
                );
            } else {
                c.tampered(
                    Case::TruncatedTail,
                    Some(cp.size),
                    format!(
                        "{source}: the log signed a checkpoint of size {} but the bundle ends after {} entries",
                        cp.size, stream.entries
                    ),
                );
            }
            false
        }
        RootCheck::Differs => {
            let case = if source.starts_with("the bundle") {
                Case::AlteredEntry
            } else {
                Case::Fork
            };
            c.tampered(
                case,
                Some(cp.size),
                format!("{source}: signed root at size {} differs from the root of the entries in the bundle", cp.size),
            );
            false
        }
    }
}

/// Entries read and leaf-hashed ahead of the checks.
struct Batch {
    data: Vec<u8>,
    ends: Vec<usize>,
    leaves: Vec<Hash>,
}

impl Batch {
    const ENTRIES: usize = 4096;

    /// Hashes the leaves of every entry, split over up to `workers` threads
    /// (leaf hashing is most of a verifier's work, and scales with cores).
    fn hash_leaves(&mut self, suite: Suite, workers: usize) {
        let starts: Vec<usize> = std::iter::once(0)
            .chain(self.ends.iter().copied())
            .take(self.ends.len())
            .collect();
        let spans: Vec<(usize, usize)> =
            starts.into_iter().zip(self.ends.iter().copied()).collect();
        let data = &self.data;
        let hash = |part: &[(usize, usize)]| -> Vec<Hash> {
            part.iter()
                .map(|&(a, b)| merkle::leaf_in(suite, &data[a..b]))
                .collect()
        };
        let per = spans.len().div_ceil(workers.max(1)).max(1);
        if workers <= 1 || spans.len() < 2 * per.min(256) {
            self.leaves = hash(&spans);
            return;
        }
        self.leaves = std::thread::scope(|scope| {
            let mut parts = spans.chunks(per);
            let first = parts.next().unwrap_or(&[]);
            let handles: Vec<_> = parts.map(|p| (p, scope.spawn(move || hash(p)))).collect();
            let mut leaves = hash(first);
            for (part, h) in handles {
                // A hashing thread that failed is redone here: every entry
                // gets its leaf, whatever happened to a helper.
                match h.join() {
                    Ok(more) => leaves.extend(more),
                    Err(_) => leaves.extend(hash(part)),
                }
            }
            leaves
        });
    }

    fn entries(&self) -> impl Iterator<Item = (&[u8], Hash)> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .zip(self.leaves.iter().copied())
            .map(|((a, b), leaf)| (&self.data[a..b], leaf))
    }
}

/// Producer side of [`stream_entries`]: stops at the end, on an error (sent
/// on), or when the consumer hangs up.
fn read_batches<R: Read>(
    reader: &mut BundleReader<R>,
    suite: Suite,
    tx: &std::sync::mpsc::SyncSender<Result<Batch, AuditError>>,
) {
    let mut buf = Vec::with_capacity(512);
    // Leaf hashing is most of the work (SM3 more than BLAKE3): each batch is
    // hashed by one thread per core while the consumer checks the previous one.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get().max(1))
        .unwrap_or(1);
    loop {
        let mut batch = Batch {
            data: Vec::with_capacity(Batch::ENTRIES * 400),
            ends: Vec::with_capacity(Batch::ENTRIES),
            leaves: Vec::with_capacity(Batch::ENTRIES),
        };
        while batch.ends.len() < Batch::ENTRIES {
            match reader.next_entry(&mut buf) {
                Ok(true) => {
                    batch.data.extend_from_slice(&buf);
                    batch.ends.push(batch.data.len());
                }
                Ok(false) => break,
                Err(e) => {
                    if !batch.ends.is_empty() {
                        batch.hash_leaves(suite, workers);
                        let _ = tx.send(Ok(batch));
                    }
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        let last = batch.ends.len() < Batch::ENTRIES;
        batch.hash_leaves(suite, workers);
        if (!batch.ends.is_empty() && tx.send(Ok(batch)).is_err()) || last {
            return;
        }
    }
}

fn stream_entries<R: Read + Send>(
    reader: &mut BundleReader<R>,
    log_id: &LogId,
    genesis: Option<VerifyingKey>,
    endorsed: &BTreeMap<u64, VerifyingKey>,
    sizes: &BTreeSet<u64>,
    c: &mut Checker,
) -> Result<Stream, AuditError> {
    let log_text = log_id.to_text();
    let mut keys: Vec<KeyInfo> = genesis
        .map(|key| KeyInfo { from_seq: 0, key })
        .into_iter()
        .collect();
    let mut frontier = Frontier::new();
    let mut roots = HashMap::new();
    let mut prev_leaf: Option<Hash> = None;
    let mut prev_seq: Option<u64> = None;
    let mut prev_time = 0u64;
    // Truncated leaf hash by sequence number, to tell replays from insertions.
    let mut seen: Vec<u64> = Vec::new();
    let mut gaps: BTreeSet<u64> = BTreeSet::new();
    let mut max_seq: Option<u64> = None;
    let mut pos = 0u64;
    let mut discontinuities = Vec::new();
    // Reading and leaf hashing run on other threads, one batch ahead of the
    // checks here.
    std::thread::scope(|scope| -> Result<(), AuditError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch, AuditError>>(4);
        let suite = log_id.suite;
        scope.spawn(move || read_batches(reader, suite, &tx));
        for batch in rx {
            let batch = match batch {
                Ok(b) => b,
                // Broken framing is evidence about the bundle: reported, and
                // what was read before it still verified.
                Err(AuditError::Bundle { reason, .. }) => {
                    c.tampered(Case::BrokenFraming, Some(pos), reason);
                    break;
                }
                Err(e) => return Err(e),
            };
            for (buf, leaf) in batch.entries() {
                let prefix = prefix_of(&leaf).max(1);
                match EntryView::parse(buf) {
                    Err(e) => c.tampered(
                        Case::MalformedEntry,
                        Some(pos),
                        format!("entry at position {pos} is not canonical: {e}"),
                    ),
                    Ok(v) => {
                        let mut explained = false;
                        if v.log_id != log_text {
                            c.tampered(
                                Case::ForeignEntry,
                                Some(pos),
                                format!("entry at position {pos} belongs to log {}", v.log_id),
                            );
                            explained = true;
                        }
                        let seq = v.seq;
                        let expected = max_seq.map(|m| m + 1).unwrap_or(0);
                        let slot = usize::try_from(seq)
                            .ok()
                            .filter(|&s| s <= seen.len() + (1 << 20));
                        if seq != expected && !explained {
                            explained = true;
                            let earlier =
                                slot.and_then(|s| seen.get(s).copied()).filter(|&h| h != 0);
                            if seq > expected {
                                for missing in expected..seq.min(expected.saturating_add(1 << 20)) {
                                    gaps.insert(missing);
                                }
                            } else if let Some(h) = earlier {
                                if h == prefix {
                                    c.tampered(
                                        Case::ReplayedEntry,
                                        Some(pos),
                                        format!("entry seq {seq} appears again at position {pos}"),
                                    );
                                } else {
                                    c.tampered(
                                        Case::InsertedEntry,
                                        Some(pos),
                                        format!(
                                            "a second, different entry claims seq {seq} (position {pos})"
                                        ),
                                    );
                                }
                            } else if gaps.remove(&seq) {
                                c.tampered(
                                    Case::ReorderedEntries,
                                    Some(pos),
                                    format!(
                                        "entry seq {seq} appears out of order at position {pos}"
                                    ),
                                );
                            } else {
                                c.tampered(
                                    Case::InsertedEntry,
                                    Some(pos),
                                    format!("unexpected seq {seq} at position {pos}"),
                                );
                            }
                        }
                        // Every link is checked: against the previous entry when it is
                        // adjacent, else against the remembered hash of seq - 1.
                        let link_ok = if seq == 0 {
                            Some(v.prev_hash == [0; 32])
                        } else if prev_seq == Some(seq - 1) {
                            prev_leaf.map(|p| p == v.prev_hash)
                        } else {
                            usize::try_from(seq - 1)
                                .ok()
                                .and_then(|s| seen.get(s).copied())
                                .filter(|&h| h != 0)
                                .map(|h| h == prefix_of(&v.prev_hash).max(1))
                        };
                        let replay_or_insert = seq < expected;
                        if link_ok == Some(false) && !replay_or_insert && v.log_id == log_text {
                            c.tampered(
                                Case::AlteredEntry,
                                Some(seq.saturating_sub(1)),
                                format!(
                                    "chain broken between seq {} and {seq}: an entry was altered",
                                    seq.saturating_sub(1)
                                ),
                            );
                        }
                        if v.time_ms < prev_time && !explained {
                            c.tampered(
                                Case::DecreasingTime,
                                Some(seq),
                                format!("timestamp of seq {seq} goes backwards"),
                            );
                        }
                        if let Some(s) = slot {
                            if seen.len() <= s {
                                seen.resize(s + 1, 0);
                            }
                            if seen[s] == 0 {
                                seen[s] = prefix;
                            }
                        }
                        if let Some((new_key, sig)) = v.key_rotation {
                            follow_rotation(log_id, seq, new_key, sig, endorsed, &mut keys, c);
                        }
                        if let Some(d) = &v.discontinuity
                            && v.kind == crate::entry::EventKind::Discontinuity
                            && d.restored_size <= seq
                        {
                            discontinuities.push(DiscontinuityReport {
                                seq,
                                time_ms: v.time_ms,
                                restored_size: d.restored_size,
                                lost_to: d.lost_to,
                                witnessed: d
                                    .witnessed
                                    .iter()
                                    .map(|w| format!("{}:{}", w.dept, w.size))
                                    .collect(),
                                detail: v.detail.unwrap_or_default().to_string(),
                            });
                        }
                        max_seq = Some(max_seq.map_or(seq, |m| m.max(seq)));
                        prev_seq = Some(seq);
                        prev_time = prev_time.max(v.time_ms);
                    }
                }
                prev_leaf = Some(leaf);
                frontier.push_in(log_id.suite, leaf, |_, _, _| {});
                pos += 1;
                if sizes.contains(&pos) {
                    roots.insert(pos, frontier.root_in(log_id.suite));
                }
            }
        }
        Ok(())
    })?;
    if !gaps.is_empty() {
        let first = gaps.iter().next().copied().unwrap_or(0);
        c.tampered(
            Case::DeletedEntries,
            Some(first),
            format!("{} sequence numbers missing, first {first}", gaps.len()),
        );
    }
    Ok(Stream {
        entries: pos,
        last_seq: max_seq,
        roots,
        final_root: frontier.root_in(log_id.suite),
        keys,
        discontinuities,
    })
}

fn prefix_of(h: &Hash) -> u64 {
    u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

fn follow_rotation(
    log_id: &LogId,
    seq: u64,
    new_key: &[u8],
    sig: [u8; 64],
    endorsed: &BTreeMap<u64, VerifyingKey>,
    keys: &mut Vec<KeyInfo>,
    c: &mut Checker,
) {
    let Some(current) = key_at(keys, seq + 1) else {
        c.unverifiable(
            Case::MissingKey,
            Some(seq),
            "key rotation cannot be checked: no current key".into(),
        );
        return;
    };
    let ok = current
        .key
        .verify(
            SignatureDomain::AuditKeyRotation,
            &rotation_message(log_id, seq, new_key),
            &Signature(sig),
        )
        .is_ok();
    if !ok {
        c.tampered(
            Case::BadSignature,
            Some(seq),
            format!("key rotation at seq {seq} is not signed by the outgoing key"),
        );
        return;
    }
    let key = match VerifyingKey::from_slice(new_key) {
        Ok(k) if k.suite() == log_id.suite => k,
        _ => {
            c.tampered(
                Case::WrongKey,
                Some(seq),
                format!(
                    "rotation at seq {seq} names a key that is not a {} key of this log",
                    log_id.suite
                ),
            );
            return;
        }
    };
    if let Some(e) = endorsed.get(&seq)
        && *e != key
    {
        c.tampered(
            Case::WrongKey,
            Some(seq),
            format!(
                "rotation at seq {seq} names key {} but the endorsement names {}",
                key.key_id(),
                e.key_id()
            ),
        );
    }
    keys.push(KeyInfo { from_seq: seq, key });
}
