//! Destruction certificates: what one destruction run destroyed, under whose authority, and
//! the signed checkpoint whose log holds every tombstone.
//!
//! `tombstones + checkpoint --Certificate::new--> text --C2SP signed note--> certificates/<run>`
//!
//! Like a log entry the text is line-oriented `key value`, fields in a fixed order, one spelling
//! per value; [`Certificate::parse`] accepts only that spelling. It lists every record id, so a
//! records officer can check a given record against it; `records-sha256` names the same set
//! the way a `DispositionReview` does ([`super::records_digest`]).

use super::records_digest;
use crate::entry::{EntryError, RecordId, check_text, field, parse_hash, parse_time, parse_u64};
use crate::hash::Hash;
use crate::note::{self, NoteError, NoteSigner, NoteVerifier};
use crate::time::UnixTime;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

/// First line of every certificate: the format and its version.
pub const CERTIFICATE_MAGIC: &str = "mailvault-destruction-certificate/1";
pub use crate::layout::{CERTIFICATES_PREFIX, certificate_key, parse_certificate_key};
/// Longest signed certificate accepted (a run takes at most
/// [`super::MAX_RECORDS_PER_RUN`] records of at most 128 bytes each).
pub const MAX_CERTIFICATE_LEN: usize = 16 * 1024 * 1024;
/// The method of destruction on an S3 store with Object Lock.
pub const METHOD_S3_COMPLIANCE: &str = "deleted every object version and delete marker from S3 under Object Lock COMPLIANCE after retention ended";

/// Why a certificate could not be built, parsed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The text breaks the format; the message says where.
    #[error("malformed destruction certificate: {0}")]
    Malformed(String),
    /// The signed note is malformed, unsigned or badly signed.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The certificate belongs to another log.
    #[error("certificate origin {got:?} is not this log's origin {want:?}")]
    WrongOrigin {
        /// Origin found.
        got: String,
        /// Origin expected.
        want: String,
    },
}

impl From<EntryError> for CertificateError {
    fn from(e: EntryError) -> Self {
        let EntryError::Malformed(m) = e;
        Self::Malformed(m)
    }
}

fn malformed<T>(msg: impl Into<String>) -> Result<T, CertificateError> {
    Err(CertificateError::Malformed(msg.into()))
}

/// Who or what authorized destruction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertifiedAuthorization {
    /// A retention rule whose disposition is `Destroy`.
    Rule {
        /// The rule's name.
        name: String,
    },
    /// An approved disposition review.
    Review {
        /// `namespace/name` of the `DispositionReview`.
        review: String,
        /// Who approved.
        decided_by: String,
        /// The order of destruction or other reference.
        reference: String,
    },
}

/// One record destroyed, as the executor hands it to [`Certificate::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertifiedRecord {
    /// The record.
    pub record: RecordId,
    /// Its series.
    pub series: String,
    /// The retain-until that ended.
    pub retain_until: UnixTime,
    /// Under whose authority.
    pub authorization: CertifiedAuthorization,
}

/// The records of one series in a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesSection {
    /// The record series (the schedule's citation).
    pub series: String,
    /// The series in words.
    pub description: String,
    /// Earliest retain-until among the records: the inclusive dates of a certificate are the
    /// range of retain-until that ended, the dates the log holds (it holds no message dates).
    pub earliest_retain_until: UnixTime,
    /// Latest retain-until among the records.
    pub latest_retain_until: UnixTime,
    /// Every authorization that applies, sorted.
    pub authorizations: Vec<CertifiedAuthorization>,
    /// The records, sorted by id.
    pub records: Vec<RecordId>,
}

/// A destruction certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The log's origin.
    pub origin: String,
    /// The run's id (also the last segment of its key).
    pub run: String,
    /// When the run completed (the last tombstone was logged and checkpointed).
    pub completed_at: UnixTime,
    /// Size of the covering checkpoint: every tombstone is before it.
    pub checkpoint_size: u64,
    /// Root of the covering checkpoint.
    pub checkpoint_root: Hash,
    /// How the records were destroyed.
    pub method: String,
    /// The records, by series (series sorted).
    pub series: Vec<SeriesSection>,
}

/// A run id for a run that started at `start`: `YYYYMMDDTHHMMSSZ`.
pub fn run_id(start: UnixTime) -> String {
    let (y, mo, d, h, mi, s) = start.to_civil();
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

fn line(out: &mut String, key: &str, value: impl fmt::Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key} {value}");
}

impl Certificate {
    /// Builds the certificate of a run. `description` gives each series in words (the rule's
    /// description, or the series itself).
    pub fn new(
        origin: &str,
        run: &str,
        completed_at: UnixTime,
        checkpoint: (u64, Hash),
        method: &str,
        records: Vec<CertifiedRecord>,
        description: &dyn Fn(&str) -> String,
    ) -> Result<Self, CertificateError> {
        if records.is_empty() {
            return malformed("a certificate lists at least one record");
        }
        let mut by_series: BTreeMap<String, Vec<CertifiedRecord>> = BTreeMap::new();
        for r in records {
            by_series.entry(r.series.clone()).or_default().push(r);
        }
        let series = by_series
            .into_iter()
            .map(|(series, rs)| {
                let authorizations: BTreeSet<CertifiedAuthorization> =
                    rs.iter().map(|r| r.authorization.clone()).collect();
                let mut ids: Vec<RecordId> = rs.iter().map(|r| r.record.clone()).collect();
                ids.sort();
                SeriesSection {
                    description: description(&series),
                    earliest_retain_until: rs
                        .iter()
                        .map(|r| r.retain_until)
                        .min()
                        .unwrap_or_default(),
                    latest_retain_until: rs
                        .iter()
                        .map(|r| r.retain_until)
                        .max()
                        .unwrap_or_default(),
                    series,
                    authorizations: authorizations.into_iter().collect(),
                    records: ids,
                }
            })
            .collect();
        let cert = Self {
            origin: origin.to_owned(),
            run: run.to_owned(),
            completed_at,
            checkpoint_size: checkpoint.0,
            checkpoint_root: checkpoint.1,
            method: method.to_owned(),
            series,
        };
        // One check for built and parsed certificates alike.
        Self::parse(&cert.to_text())?;
        Ok(cert)
    }

    /// Every record listed, in certificate order.
    pub fn records(&self) -> impl Iterator<Item = &RecordId> {
        self.series.iter().flat_map(|s| &s.records)
    }

    /// Number of records listed.
    pub fn quantity(&self) -> usize {
        self.series.iter().map(|s| s.records.len()).sum()
    }

    /// [`records_digest`] of every record listed.
    pub fn records_digest(&self) -> Hash {
        records_digest(self.records().map(RecordId::as_str))
    }

    /// The canonical text (what is signed).
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(1024 + self.quantity() * 40);
        s.push_str(CERTIFICATE_MAGIC);
        s.push('\n');
        line(&mut s, "origin", &self.origin);
        line(&mut s, "run", &self.run);
        line(&mut s, "completed-at", self.completed_at);
        line(&mut s, "checkpoint-size", self.checkpoint_size);
        line(&mut s, "checkpoint-root", self.checkpoint_root);
        line(&mut s, "method", &self.method);
        line(&mut s, "records", self.quantity());
        line(&mut s, "records-sha256", self.records_digest());
        for sec in &self.series {
            line(&mut s, "series", &sec.series);
            line(&mut s, "description", &sec.description);
            line(&mut s, "quantity", sec.records.len());
            line(&mut s, "earliest-retain-until", sec.earliest_retain_until);
            line(&mut s, "latest-retain-until", sec.latest_retain_until);
            for a in &sec.authorizations {
                match a {
                    CertifiedAuthorization::Rule { name } => {
                        line(&mut s, "authorization", format_args!("rule {name}"));
                    }
                    CertifiedAuthorization::Review {
                        review,
                        decided_by,
                        reference,
                    } => {
                        line(&mut s, "authorization", format_args!("review {review}"));
                        line(&mut s, "decided-by", decided_by);
                        line(&mut s, "reference", reference);
                    }
                }
            }
            for r in &sec.records {
                line(&mut s, "record", r);
            }
        }
        s
    }

    /// Parses canonical text; anything else is rejected with the reason.
    pub fn parse(text: &str) -> Result<Self, CertificateError> {
        let Some(body) = text.strip_suffix('\n') else {
            return malformed("does not end with a newline");
        };
        let mut lines = body.split('\n').peekable();
        if lines.next() != Some(CERTIFICATE_MAGIC) {
            return malformed(format!("first line is not {CERTIFICATE_MAGIC:?}"));
        }
        let mut take =
            |key: &str| -> Result<&str, CertificateError> { Ok(field(lines.next(), key)?) };
        let origin = text_value(take("origin")?)?;
        let run = take("run")?.to_owned();
        RecordId::new(run.as_str())
            .map_err(|_| CertificateError::Malformed(format!("run id {run:?} is not valid")))?;
        let completed_at = parse_time(take("completed-at")?)?;
        let checkpoint_size = parse_u64(take("checkpoint-size")?)?;
        let checkpoint_root = parse_hash(take("checkpoint-root")?)?;
        let method = text_value(take("method")?)?;
        let records = parse_u64(take("records")?)?;
        let digest = parse_hash(take("records-sha256")?)?;
        let mut series: Vec<SeriesSection> = Vec::new();
        while lines.peek().is_some() {
            series.push(parse_section(&mut lines)?);
        }
        let cert = Self {
            origin,
            run,
            completed_at,
            checkpoint_size,
            checkpoint_root,
            method,
            series,
        };
        cert.check(records, digest)?;
        Ok(cert)
    }

    /// What the text must say of itself: sorted, unique, counted and digested right.
    fn check(&self, records: u64, digest: Hash) -> Result<(), CertificateError> {
        if self.series.is_empty() {
            return malformed("a certificate lists at least one record");
        }
        if !self.series.windows(2).all(|w| w[0].series < w[1].series) {
            return malformed("series are not in byte order, or a series appears twice");
        }
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for r in self.records() {
            if !seen.insert(r.as_str()) {
                return malformed(format!("record {r} is listed twice"));
            }
        }
        if self.quantity() as u64 != records {
            return malformed(format!(
                "says {records} records but lists {}",
                self.quantity()
            ));
        }
        if self.records_digest() != digest {
            return malformed("records-sha256 is not the digest of the records listed");
        }
        Ok(())
    }

    /// The certificate signed as a C2SP note with the archive's key.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CertificateError> {
        Ok(signer.sign(&self.to_text())?)
    }

    /// Opens a signed certificate: signed by a trusted key, for `origin` when given.
    pub fn open(
        bytes: &[u8],
        trusted: &[NoteVerifier],
        origin: Option<&str>,
    ) -> Result<Self, CertificateError> {
        let note = note::open_with_limit(bytes, trusted, MAX_CERTIFICATE_LEN)?;
        let cert = Self::parse(&note.text)?;
        if let Some(want) = origin
            && cert.origin != want
        {
            return Err(CertificateError::WrongOrigin {
                got: cert.origin,
                want: want.to_owned(),
            });
        }
        Ok(cert)
    }
}

fn text_value(s: &str) -> Result<String, CertificateError> {
    check_text(s)?;
    Ok(s.to_owned())
}

fn parse_section<'a>(
    lines: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
) -> Result<SeriesSection, CertificateError> {
    let mut next =
        |key: &str| -> Result<&'a str, CertificateError> { Ok(field(lines.next(), key)?) };
    let series = text_value(next("series")?)?;
    let description = text_value(next("description")?)?;
    let quantity = parse_u64(next("quantity")?)?;
    let earliest_retain_until = parse_time(next("earliest-retain-until")?)?;
    let latest_retain_until = parse_time(next("latest-retain-until")?)?;
    if earliest_retain_until > latest_retain_until {
        return malformed(format!(
            "series {series}: earliest-retain-until is after latest-retain-until"
        ));
    }
    let authorizations = parse_authorizations(lines)?;
    if authorizations.is_empty() {
        return malformed(format!("series {series}: no authorization"));
    }
    if !authorizations.windows(2).all(|w| w[0] < w[1]) {
        return malformed(format!(
            "series {series}: authorizations are not sorted, or one appears twice"
        ));
    }
    let mut records: Vec<RecordId> = Vec::new();
    while let Some(l) = lines.peek().copied() {
        let Some(v) = l.strip_prefix("record ") else {
            break;
        };
        lines.next();
        records.push(RecordId::new(v)?);
    }
    if records.is_empty() || records.len() as u64 != quantity {
        return malformed(format!(
            "series {series}: quantity {quantity} but {} records listed",
            records.len()
        ));
    }
    if !records.windows(2).all(|w| w[0] < w[1]) {
        return malformed(format!(
            "series {series}: records are not sorted by id, or one appears twice"
        ));
    }
    if let Some(l) = lines.peek()
        && !l.starts_with("series ")
    {
        return malformed(format!(
            "unexpected line {:?}",
            l.chars().take(60).collect::<String>()
        ));
    }
    Ok(SeriesSection {
        series,
        description,
        earliest_retain_until,
        latest_retain_until,
        authorizations,
        records,
    })
}

/// The `authorization` lines of a section (each review followed by `decided-by` and
/// `reference`).
fn parse_authorizations<'a>(
    lines: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
) -> Result<Vec<CertifiedAuthorization>, CertificateError> {
    let mut authorizations = Vec::new();
    while let Some(l) = lines.peek().copied() {
        let Some(v) = l.strip_prefix("authorization ") else {
            break;
        };
        lines.next();
        let a = match v.split_once(' ') {
            Some(("rule", name)) => CertifiedAuthorization::Rule {
                name: text_value(name)?,
            },
            Some(("review", review)) => {
                let review = text_value(review)?;
                let mut next = |key: &str| -> Result<String, CertificateError> {
                    match lines
                        .next()
                        .and_then(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
                    {
                        Some(v) => text_value(v),
                        None => {
                            malformed(format!("authorization review {review}: missing {key:?}"))
                        }
                    }
                };
                CertifiedAuthorization::Review {
                    decided_by: next("decided-by")?,
                    reference: next("reference")?,
                    review,
                }
            }
            _ => {
                return malformed(format!(
                    "authorization {:?} is neither `rule NAME` nor `review NAMESPACE/NAME`",
                    v.chars().take(60).collect::<String>()
                ));
            }
        };
        authorizations.push(a);
    }
    Ok(authorizations)
}
