//! Streaming CSV import: decode (UTF-8 or GB18030), map columns to fields,
//! validate every value, hand good rows to the caller.

use crate::schema::Schema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;

/// How the CSV is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// UTF-8 (a BOM is skipped).
    #[serde(rename = "utf-8")]
    Utf8,
    /// GB18030 (GBK-compatible), common in Chinese government systems.
    #[serde(rename = "gb18030")]
    Gb18030,
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "gb18030" | "gbk" => Ok(Encoding::Gb18030),
            other => Err(format!("--encoding {other:?}: use utf-8 or gb18030")),
        }
    }
}

/// The encoding the start of a file looks like: `Utf8` (a UTF-8 BOM, or
/// valid UTF-8 with non-ASCII text), `Gb18030` (not UTF-8, but decodes
/// cleanly as GB18030), or `None` (plain ASCII: either fits).
pub fn sniff_encoding(sample: &[u8]) -> Option<Encoding> {
    if sample.starts_with(&[0xef, 0xbb, 0xbf]) {
        return Some(Encoding::Utf8);
    }
    if sample.is_ascii() {
        return None;
    }
    match std::str::from_utf8(sample) {
        Ok(_) => Some(Encoding::Utf8),
        // A sample cut inside a character is still UTF-8.
        Err(e) if e.error_len().is_none() => Some(Encoding::Utf8),
        Err(_) => {
            let (_, _, had_errors) = encoding_rs::GB18030.decode(sample);
            (!had_errors).then_some(Encoding::Gb18030)
        }
    }
}

/// What to do with bad rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Import nothing if any row is bad (the caller must discard what it staged).
    Reject,
    /// Import the good rows; hand bad ones to the reject callback.
    Skip,
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reject" => Ok(OnError::Reject),
            "skip" => Ok(OnError::Skip),
            other => Err(format!("--on-error {other:?}: use reject or skip")),
        }
    }
}

/// How many problems are listed.
pub const MAX_LISTED_PROBLEMS: usize = 20;

/// One bad value (or row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowProblem {
    /// 1-based line in the file.
    pub line: u64,
    /// 1-based column (0 when the whole row is wrong).
    pub column: usize,
    /// Field name (empty when the whole row is wrong).
    pub field: String,
    /// The offending value: shortened, and masked for personal and
    /// sensitive personal fields ([`shown_value`]).
    pub value: String,
    /// Why it is wrong.
    pub reason: String,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column == 0 {
            write!(f, "line {}: {}", self.line, self.reason)
        } else {
            write!(
                f,
                "line {}, column {} ({}): value {:?}: {}",
                self.line, self.column, self.field, self.value, self.reason
            )
        }
    }
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// File.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The header does not match the schema.
    #[error("{file}: line 1 (header): {message}")]
    Header {
        /// File.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// Bad rows under `--on-error reject`: nothing was imported.
    #[error(
        "{file}: {bad_rows} bad row(s); nothing was imported (use --on-error skip --rejects FILE to import the good rows). First problems:\n{}",
        .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
    )]
    Rejected {
        /// File.
        file: String,
        /// Number of bad rows.
        bad_rows: u64,
        /// The first problems.
        problems: Vec<RowProblem>,
    },
    /// The caller's row or reject handler failed.
    #[error("{file}: line {line}: {message}")]
    Sink {
        /// File.
        file: String,
        /// Line.
        line: u64,
        /// What failed.
        message: String,
    },
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Data rows read.
    pub rows_read: u64,
    /// Rows accepted.
    pub rows_imported: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// Rows left out by a dataset rule (`cross_region`: not cross-province).
    pub rows_excluded: u64,
    /// The first problems found.
    pub problems: Vec<RowProblem>,
}

/// A value as error messages may show it: in full (shortened) for fields
/// that are not personal information, masked for personal and sensitive
/// personal ones (`4500**********7800`, `王*`), so terminals, CI logs and
/// summaries never carry a resident ID number or a name.
pub fn shown_value(v: &str, pi: crate::schema::PiClass) -> String {
    if pi == crate::schema::PiClass::None {
        return shorten(v);
    }
    mask(v)
}

/// Masks a personal value: an identifier-like value (10 or more ASCII
/// letters and digits: resident ID, person number) keeps its first and last
/// 4 characters (`4501**********7800`), enough to find the row; anything
/// else (names, free text, amounts) keeps only its first character (`王*`),
/// since a longer head of free text can be the whole name.
pub fn mask(v: &str) -> String {
    let chars: Vec<char> = v.chars().collect();
    let n = chars.len();
    let keep = |head: usize, tail: usize| {
        let mut out: String = chars[..head].iter().collect();
        out.extend(std::iter::repeat_n('*', n - head - tail));
        out.extend(&chars[n - tail..]);
        out
    };
    if n >= 10 && chars.iter().all(char::is_ascii_alphanumeric) {
        keep(4, 4)
    } else if n == 0 {
        String::new()
    } else {
        keep(1, 0)
    }
}

fn shorten(v: &str) -> String {
    if v.chars().count() > 40 {
        let s: String = v.chars().take(40).collect();
        format!("{s}…")
    } else {
        v.to_string()
    }
}

/// Offsets of the line feeds read so far but not yet passed by a record, and
/// how many were passed: a record starting at byte `p` (of the decoded text)
/// is on physical line 1 + (line feeds before `p`), for LF and CRLF files and
/// quoted fields with line breaks alike. (The csv crate's own count is one
/// short for CRLF.) Only the read-ahead's line feeds are held.
#[derive(Clone, Default)]
struct LineIndex(std::rc::Rc<std::cell::RefCell<(std::collections::VecDeque<u64>, u64)>>);

impl LineIndex {
    fn line_at(&self, byte: u64) -> u64 {
        let mut s = self.0.borrow_mut();
        // With CRLF the csv reader places a record's start on the `\n` that
        // ends the previous line; that line feed belongs before the record.
        while s.0.front().is_some_and(|&o| o <= byte) {
            s.0.pop_front();
            s.1 += 1;
        }
        s.1 + 1
    }
}

/// A reader that records where its line feeds are.
struct CountLines<R> {
    inner: R,
    offset: u64,
    index: LineIndex,
}

impl<R: Read> Read for CountLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = buf.get(..n).unwrap_or_default();
        let mut s = self.index.0.borrow_mut();
        s.0.extend(memchr::memchr_iter(b'\n', data).map(|i| self.offset + i as u64));
        self.offset += n as u64;
        Ok(n)
    }
}

/// Who imports: the department, for the schema's dataset-level rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportContext<'a> {
    /// The importing department's code (`treatment_region` compares the
    /// records' province with it).
    pub dept: Option<&'a str>,
}

/// The province (`XX0000`) of a 6-digit region code.
pub fn province_of(region: &str) -> Option<String> {
    let b = region.as_bytes();
    (b.len() == 6 && b.iter().all(u8::is_ascii_digit)).then(|| format!("{}0000", &region[..2]))
}

/// Reads CSV from `input` under `schema`. Good rows go to `accept` (in schema
/// field order); under [`OnError::Skip`] bad rows go to `reject` with their
/// first problem; `progress` gets the bytes consumed so far.
#[allow(clippy::too_many_arguments)] // the callbacks are the seam to storage; a struct would only rename them
pub fn read_csv<R: Read>(
    schema: &Schema,
    input: R,
    file: &str,
    context: ImportContext<'_>,
    encoding: Encoding,
    on_error: OnError,
    mut accept: impl FnMut(&[Option<&str>]) -> Result<(), String>,
    mut reject: impl FnMut(&RowProblem, &csv::ByteRecord) -> Result<(), String>,
    mut progress: impl FnMut(u64),
) -> Result<ImportSummary, ImportError> {
    let lines = LineIndex::default();
    let decoded: Box<dyn Read> = match encoding {
        Encoding::Utf8 => Box::new(
            encoding_rs_io::DecodeReaderBytesBuilder::new()
                .bom_sniffing(true)
                .utf8_passthru(true)
                .strip_bom(true)
                .build(input),
        ),
        Encoding::Gb18030 => Box::new(
            encoding_rs_io::DecodeReaderBytesBuilder::new()
                .encoding(Some(encoding_rs::GB18030))
                .build(input),
        ),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(CountLines {
            inner: decoded,
            offset: 0,
            index: lines.clone(),
        });
    let io = |e: csv::Error| match e.into_kind() {
        csv::ErrorKind::Io(source) => ImportError::Io {
            file: file.to_string(),
            source,
        },
        other => ImportError::Header {
            file: file.to_string(),
            message: format!("{other:?}"),
        },
    };
    let header = rdr.byte_headers().map_err(io)?.clone();
    let mut mapping: Vec<usize> = Vec::with_capacity(header.len()); // column -> field
    let mut seen = vec![false; schema.fields.len()];
    let mut unknown = Vec::new();
    for col in header.iter() {
        let name = std::str::from_utf8(col).unwrap_or("").trim();
        match schema.field_index(name) {
            Some(i) if !seen[i] => {
                seen[i] = true;
                mapping.push(i);
            }
            Some(_) => {
                return Err(ImportError::Header {
                    file: file.to_string(),
                    message: format!("column {name:?} appears twice"),
                });
            }
            None => unknown.push(format!("{name:?}")),
        }
    }
    let missing: Vec<&str> = schema
        .fields
        .iter()
        .zip(&seen)
        .filter(|(_, s)| !**s)
        .map(|(f, _)| f.name.as_str())
        .collect();
    if !unknown.is_empty() || !missing.is_empty() {
        let mut msg = Vec::new();
        if !unknown.is_empty() {
            msg.push(format!(
                "columns not in schema {}: {}",
                schema.dataset.id,
                unknown.join(", ")
            ));
        }
        if !missing.is_empty() {
            msg.push(format!(
                "schema fields missing from the file: {}",
                missing.join(", ")
            ));
        }
        return Err(ImportError::Header {
            file: file.to_string(),
            message: msg.join("; "),
        });
    }

    let mut summary = ImportSummary::default();
    let mut record = csv::ByteRecord::new();
    let mut staging_open = true;
    loop {
        let more = match rdr.read_byte_record(&mut record) {
            Ok(m) => m,
            Err(e) => return Err(io(e)),
        };
        if !more {
            break;
        }
        summary.rows_read += 1;
        let line = match record.position() {
            Some(p) => lines.line_at(p.byte()),
            None => summary.rows_read + 1,
        };
        if summary.rows_read % 4096 == 0 {
            progress(record.position().map(|p| p.byte()).unwrap_or(0));
        }
        let mut row: Vec<Option<&str>> = vec![None; schema.fields.len()];
        let mut problem = check_row(schema, &record, &mapping, line, encoding, &mut row);
        if problem.is_none() {
            match dataset_rules(schema, context, &row, line, &mapping) {
                RowRule::Keep => {}
                RowRule::Exclude => {
                    summary.rows_excluded += 1;
                    continue;
                }
                RowRule::Reject(p) => problem = Some(p),
            }
        }
        match problem {
            None => {
                if staging_open {
                    accept(&row).map_err(|message| ImportError::Sink {
                        file: file.to_string(),
                        line,
                        message,
                    })?;
                    summary.rows_imported += 1;
                }
            }
            Some(p) => {
                summary.rows_rejected += 1;
                if on_error == OnError::Reject {
                    staging_open = false;
                } else {
                    reject(&p, &record).map_err(|message| ImportError::Sink {
                        file: file.to_string(),
                        line,
                        message,
                    })?;
                }
                if summary.problems.len() < MAX_LISTED_PROBLEMS {
                    summary.problems.push(p);
                }
            }
        }
    }
    progress(rdr.position().byte());
    if on_error == OnError::Reject && summary.rows_rejected > 0 {
        return Err(ImportError::Rejected {
            file: file.to_string(),
            bad_rows: summary.rows_rejected,
            problems: summary.problems,
        });
    }
    Ok(summary)
}

/// Validates one record, filling `row` in schema order; returns its first problem.
enum RowRule {
    Keep,
    Exclude,
    Reject(RowProblem),
}

/// The schema's dataset-level rules on a valid row.
fn dataset_rules(
    schema: &Schema,
    context: ImportContext<'_>,
    row: &[Option<&str>],
    line: u64,
    mapping: &[usize],
) -> RowRule {
    let province = |i: usize| row.get(i).copied().flatten().and_then(province_of);
    let column = |i: usize| mapping.iter().position(|&m| m == i).map_or(0, |c| c + 1);
    if let Some(t) = schema.dataset.treatment_region {
        let own = context.dept.and_then(province_of);
        let here = province(t);
        if own.is_none() || here != own {
            let field = &schema.fields[t];
            return RowRule::Reject(RowProblem {
                line,
                column: column(t),
                field: field.name.clone(),
                value: shown_value(row[t].unwrap_or_default(), field.pi),
                reason: match own {
                    None => format!(
                        "treatment_region: the importing department {:?} is not a region code, so it cannot own records treated anywhere",
                        context.dept.unwrap_or("?")
                    ),
                    Some(own) => format!(
                        "treatment_region: treated in province {}, but this extract belongs to {own} (a province imports only what it treated)",
                        here.unwrap_or_else(|| "?".into())
                    ),
                },
            });
        }
    }
    if let Some((a, b)) = schema.dataset.cross_region
        && province(a).is_some()
        && province(a) == province(b)
    {
        return RowRule::Exclude;
    }
    RowRule::Keep
}

fn check_row<'r>(
    schema: &Schema,
    record: &'r csv::ByteRecord,
    mapping: &[usize],
    line: u64,
    encoding: Encoding,
    row: &mut [Option<&'r str>],
) -> Option<RowProblem> {
    if record.len() != mapping.len() {
        return Some(RowProblem {
            line,
            column: 0,
            field: String::new(),
            value: String::new(),
            reason: format!(
                "row has {} fields, the header has {}",
                record.len(),
                mapping.len()
            ),
        });
    }
    for (col, (raw, &fi)) in record.iter().zip(mapping).enumerate() {
        let field = &schema.fields[fi];
        let problem = |value: String, reason: String| RowProblem {
            line,
            column: col + 1,
            field: field.name.clone(),
            value,
            reason,
        };
        let Ok(v) = std::str::from_utf8(raw) else {
            let reason = match encoding {
                Encoding::Utf8 => "invalid UTF-8 (is the file GB18030? use --encoding gb18030)",
                Encoding::Gb18030 => "invalid text after GB18030 decoding",
            };
            return Some(problem(
                shown_value(&String::from_utf8_lossy(raw), field.pi),
                reason.into(),
            ));
        };
        if v.contains('\u{FFFD}') {
            let reason = match encoding {
                Encoding::Utf8 => {
                    "contains U+FFFD (a replacement character from an earlier broken conversion)"
                }
                Encoding::Gb18030 => "invalid GB18030 byte sequence",
            };
            return Some(problem(shown_value(v, field.pi), reason.into()));
        }
        if v.is_empty() {
            if !field.nullable {
                return Some(problem(
                    String::new(),
                    "empty value in a field that is not nullable".into(),
                ));
            }
            row[fi] = None;
            continue;
        }
        if let Err(reason) = field.ty.validate(v) {
            return Some(problem(
                shown_value(v, field.pi),
                format!("{reason} (type {})", field.ty.name()),
            ));
        }
        row[fi] = Some(v);
    }
    None
}
