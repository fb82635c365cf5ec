//! Log entries and their canonical byte encoding.
//!
//! `[ entry i-1 ] <-prev- [ entry i ]`: each entry names the SHA-256 of the previous entry's
//! bytes (the chain) and its own position (`index`), so a removed, inserted or reordered entry
//! breaks a link even before the Merkle root is compared.
//!
//! The encoding is line-oriented text an auditor can read (`key value\n`), with one spelling per
//! value: fields appear in a fixed order, numbers have no leading zeros, hashes are lowercase hex,
//! times are `YYYY-MM-DDTHH:MM:SSZ`. [`Entry::decode`] accepts only that spelling, so decoding and
//! re-encoding gives back the same bytes, which is what the hashes are over.
//!
//! An entry never holds message content, addresses, subjects or folder names.

use crate::hash::Hash;
use crate::time::UnixTime;
use std::fmt;

/// First line of every entry that uses only version 1 of the format (no dictionary).
pub const ENTRY_MAGIC: &str = "mailvault-log-entry/1";
/// First line of an entry whose newest feature is version 2: a `dictionary` entry, or an
/// `ingest` naming the dictionary its record was compressed with and no header index. Every
/// version-1 entry keeps its version-1 bytes (docs/log-format.md, "Versions"), so old logs
/// verify unchanged.
pub const ENTRY_MAGIC_V2: &str = "mailvault-log-entry/2";
/// First line of an entry that uses a version-3 feature: an `ingest` that commits to its
/// record's header index (`header-index`). It may name a dictionary too.
pub const ENTRY_MAGIC_V3: &str = "mailvault-log-entry/3";
/// Longest encoded entry accepted (bundles store lengths in 16 bits).
pub const MAX_ENTRY_LEN: usize = 16 * 1024;
/// Longest free-text value (record series, object key, version id, hold id).
pub const MAX_VALUE_LEN: usize = 1024;

/// Why bytes are not a canonical entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The bytes break the encoding; the message says where.
    #[error("malformed log entry: {0}")]
    Malformed(String),
}

fn malformed<T>(msg: impl Into<String>) -> Result<T, EntryError> {
    Err(EntryError::Malformed(msg.into()))
}

/// A record's identifier: 1–128 of `[A-Za-z0-9._-]`, not starting with `.`.
///
/// Chosen by the pipeline; the log treats it as opaque. It is also the last segment of the
/// record's object key, hence the conservative alphabet.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RecordId(String);

impl RecordId {
    /// Validates and wraps a record id.
    pub fn new(id: impl Into<String>) -> Result<Self, EntryError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 128
            && !id.starts_with('.')
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(id))
        } else {
            malformed(format!(
                "record id {:?} is not 1-128 characters of [A-Za-z0-9._-]",
                id.chars().take(140).collect::<String>()
            ))
        }
    }

    /// A record id made of the first 32 hex digits of a hash (always valid).
    pub fn from_hash(hash: &Hash) -> Self {
        Self(hash.to_hex()[..32].to_owned())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Until when a record must be kept.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RetainUntil {
    /// Kept until this instant; destruction is allowed from then on.
    Until(UnixTime),
    /// Kept forever (a permanent record); never eligible for destruction.
    Permanent,
}

impl RetainUntil {
    /// True when a record under this retention may be destroyed at `now`.
    pub fn has_ended(self, now: UnixTime) -> bool {
        match self {
            Self::Until(t) => now >= t,
            Self::Permanent => false,
        }
    }
}

impl fmt::Display for RetainUntil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Until(t) => t.fmt(f),
            Self::Permanent => f.write_str("permanent"),
        }
    }
}

/// The S3 Object Lock mode a record was stored under.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub enum LockMode {
    /// Nobody, not even the root account, can shorten the lock or delete the version early.
    Compliance,
    /// Privileged users can bypass the lock.
    Governance,
    /// No lock: a store that cannot lock (a local directory).
    None,
}

impl LockMode {
    /// The spelling used in the log (S3's own header values, and `NONE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compliance => "COMPLIANCE",
            Self::Governance => "GOVERNANCE",
            Self::None => "NONE",
        }
    }

    fn parse(s: &str) -> Result<Self, EntryError> {
        match s {
            "COMPLIANCE" => Ok(Self::Compliance),
            "GOVERNANCE" => Ok(Self::Governance),
            "NONE" => Ok(Self::None),
            _ => malformed(format!("unknown lock mode {s:?}")),
        }
    }

    /// Strength order: a version whose lock is weaker than the logged one has been weakened.
    pub fn strength(self) -> u8 {
        match self {
            Self::Compliance => 2,
            Self::Governance => 1,
            Self::None => 0,
        }
    }
}

/// Why a record was authorised for destruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Disposition {
    /// The matched rule says destroy when retention ends.
    Destroy,
    /// The matched rule says review, and a reviewer approved destruction.
    ReviewApproved,
}

impl Disposition {
    fn as_str(self) -> &'static str {
        match self {
            Self::Destroy => "Destroy",
            Self::ReviewApproved => "ReviewApproved",
        }
    }

    fn parse(s: &str) -> Result<Self, EntryError> {
        match s {
            "Destroy" => Ok(Self::Destroy),
            "ReviewApproved" => Ok(Self::ReviewApproved),
            _ => malformed(format!("unknown disposition {s:?}")),
        }
    }
}

/// What an entry says happened to its record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum EntryBody {
    /// The record was stored: where, under which lock, with which hashes.
    Ingest {
        /// Citation of the retention schedule item the record falls under.
        series: String,
        /// Until when it must be kept.
        retain_until: RetainUntil,
        /// Object Lock mode it was stored under.
        lock_mode: LockMode,
        /// Object key relative to the archive's root (`records/<id>`).
        object_key: String,
        /// Version id the store returned for the PUT.
        object_version: String,
        /// SHA-256 of the stored (compressed) bytes.
        stored_sha256: Hash,
        /// Length of the stored bytes.
        stored_size: u64,
        /// `SHA-256(salt || original bytes)`; the salt lives with the record and dies with it.
        original_commitment: Hash,
        /// SHA-256 of the zstd dictionary the record was compressed with (logged earlier by a
        /// `dictionary` entry); `None`: plain zstd.
        dictionary: Option<Hash>,
        /// SHA-256 of the record's header index object (`index/<id>`, which carries a random
        /// salt of its own, so the hash says nothing about the message): a search can tell an
        /// index edited behind the writer's back. `None`: written before version 3, or none.
        header_index: Option<Hash>,
    },
    /// A zstd dictionary was stored, for records compressed after it to name. Its `record`
    /// is the dictionary's id ([`RecordId::from_hash`] of its SHA-256), not a record's.
    Dictionary {
        /// Object Lock mode it was stored under.
        lock_mode: LockMode,
        /// The Object Lock date it was stored with.
        lock_until: UnixTime,
        /// Object key (`dictionaries/<sha256>`).
        object_key: String,
        /// Version id the store returned for the PUT.
        object_version: String,
        /// SHA-256 of the dictionary's bytes: what ingest entries name.
        stored_sha256: Hash,
        /// Length of the dictionary.
        stored_size: u64,
    },
    /// A legal hold now covers the record.
    HoldPlaced {
        /// The hold's identifier (`namespace/name` of the `LegalHold`).
        hold: String,
    },
    /// A legal hold no longer covers the record.
    HoldReleased {
        /// The hold's identifier.
        hold: String,
    },
    /// The record's retention was lengthened (never shortened).
    RetentionExtended {
        /// The new retain-until.
        retain_until: RetainUntil,
    },
    /// The record is due and approved for destruction.
    DestroyAuthorized {
        /// The retain-until that had ended.
        retain_until: RetainUntil,
        /// Why it may go.
        disposition: Disposition,
    },
    /// The record's every version was deleted: a tombstone.
    Destroyed {
        /// Object key that was deleted.
        object_key: String,
        /// Version ids deleted (data versions and delete markers), in deletion order.
        object_versions: Vec<String>,
    },
}

impl EntryBody {
    /// The entry type as spelled in the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ingest { .. } => "ingest",
            Self::HoldPlaced { .. } => "hold-placed",
            Self::HoldReleased { .. } => "hold-released",
            Self::RetentionExtended { .. } => "retention-extended",
            Self::DestroyAuthorized { .. } => "destroy-authorized",
            Self::Destroyed { .. } => "destroyed",
            Self::Dictionary { .. } => "dictionary",
        }
    }

    /// The format version the entry needs: 3 for an ingest committing to its header index, 2
    /// for a dictionary (an entry, or an ingest naming one), 1 for everything else. Each entry
    /// is written with exactly this version, so an old entry keeps its old bytes.
    pub fn version(&self) -> u8 {
        match self {
            Self::Ingest {
                header_index: Some(_),
                ..
            } => 3,
            Self::Dictionary { .. }
            | Self::Ingest {
                dictionary: Some(_),
                ..
            } => 2,
            _ => 1,
        }
    }
}

/// One log entry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    /// Position in the log, from 0.
    pub index: u64,
    /// SHA-256 of the previous entry's bytes; all zeros for the first entry.
    pub prev: Hash,
    /// When the writer logged it.
    pub logged_at: UnixTime,
    /// The record it is about.
    pub record: RecordId,
    /// What happened.
    pub body: EntryBody,
}

/// Appends `key value\n`.
fn line(out: &mut String, key: &str, value: impl fmt::Display) {
    use fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key} {value}");
}

impl Entry {
    /// The canonical bytes (what the chain and the Merkle leaf hash).
    ///
    /// Panics never; free-text values are validated by [`Entry::validate`] when decoding, and a
    /// writer should call it before logging (the log writer does).
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::with_capacity(512);
        s.push_str(match self.body.version() {
            3 => ENTRY_MAGIC_V3,
            2 => ENTRY_MAGIC_V2,
            _ => ENTRY_MAGIC,
        });
        s.push('\n');
        line(&mut s, "index", self.index);
        line(&mut s, "prev", self.prev);
        line(&mut s, "logged-at", self.logged_at);
        line(&mut s, "type", self.body.kind());
        line(&mut s, "record", &self.record);
        match &self.body {
            EntryBody::Ingest {
                series,
                retain_until,
                lock_mode,
                object_key,
                object_version,
                stored_sha256,
                stored_size,
                original_commitment,
                dictionary,
                header_index,
            } => {
                line(&mut s, "series", series);
                line(&mut s, "retain-until", retain_until);
                line(&mut s, "lock-mode", lock_mode.as_str());
                line(&mut s, "object-key", object_key);
                line(&mut s, "object-version", object_version);
                line(&mut s, "stored-sha256", stored_sha256);
                line(&mut s, "stored-size", stored_size);
                line(&mut s, "original-commitment", original_commitment);
                if let Some(d) = dictionary {
                    line(&mut s, "dictionary", d);
                }
                if let Some(h) = header_index {
                    line(&mut s, "header-index", h);
                }
            }
            EntryBody::Dictionary {
                lock_mode,
                lock_until,
                object_key,
                object_version,
                stored_sha256,
                stored_size,
            } => {
                line(&mut s, "lock-mode", lock_mode.as_str());
                line(&mut s, "lock-until", lock_until);
                line(&mut s, "object-key", object_key);
                line(&mut s, "object-version", object_version);
                line(&mut s, "stored-sha256", stored_sha256);
                line(&mut s, "stored-size", stored_size);
            }
            EntryBody::HoldPlaced { hold } | EntryBody::HoldReleased { hold } => {
                line(&mut s, "hold", hold);
            }
            EntryBody::RetentionExtended { retain_until } => {
                line(&mut s, "retain-until", retain_until);
            }
            EntryBody::DestroyAuthorized {
                retain_until,
                disposition,
            } => {
                line(&mut s, "retain-until", retain_until);
                line(&mut s, "disposition", disposition.as_str());
            }
            EntryBody::Destroyed {
                object_key,
                object_versions,
            } => {
                line(&mut s, "object-key", object_key);
                for v in object_versions {
                    line(&mut s, "object-version", v);
                }
            }
        }
        s.into_bytes()
    }

    /// SHA-256 of the canonical bytes: what the next entry's `prev` names.
    pub fn hash(&self) -> Hash {
        Hash::of(&self.encode())
    }

    /// Checks that every free-text value can be encoded canonically.
    pub fn validate(&self) -> Result<(), EntryError> {
        let texts: Vec<&str> = match &self.body {
            EntryBody::Ingest {
                series,
                object_key,
                object_version,
                ..
            } => vec![series, object_key, object_version],
            EntryBody::Dictionary {
                object_key,
                object_version,
                stored_sha256,
                ..
            } => {
                check_dictionary_names(&self.record, object_key, stored_sha256)?;
                vec![object_key, object_version]
            }
            EntryBody::HoldPlaced { hold } | EntryBody::HoldReleased { hold } => vec![hold],
            EntryBody::RetentionExtended { .. } | EntryBody::DestroyAuthorized { .. } => vec![],
            EntryBody::Destroyed {
                object_key,
                object_versions,
            } => {
                if object_versions.is_empty() {
                    return malformed("a destroyed entry names at least one deleted version");
                }
                std::iter::once(object_key.as_str())
                    .chain(object_versions.iter().map(String::as_str))
                    .collect()
            }
        };
        for t in texts {
            check_text(t)?;
        }
        if self.encode().len() > MAX_ENTRY_LEN {
            return malformed(format!("entry longer than {MAX_ENTRY_LEN} bytes"));
        }
        Ok(())
    }

    /// Parses canonical bytes; anything else is rejected with the reason.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_LEN {
            return malformed(format!("entry longer than {MAX_ENTRY_LEN} bytes"));
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return malformed("not UTF-8");
        };
        let Some(body) = text.strip_suffix('\n') else {
            return malformed("does not end with a newline");
        };
        let mut lines = body.split('\n');
        let version = match lines.next() {
            Some(ENTRY_MAGIC) => 1,
            Some(ENTRY_MAGIC_V2) => 2,
            Some(ENTRY_MAGIC_V3) => 3,
            _ => {
                return malformed(format!(
                    "first line is not {ENTRY_MAGIC:?}, {ENTRY_MAGIC_V2:?} or {ENTRY_MAGIC_V3:?}"
                ));
            }
        };
        let mut r = Fields { lines };
        let index = parse_u64(r.take("index")?)?;
        let prev = parse_hash(r.take("prev")?)?;
        let logged_at = parse_time(r.take("logged-at")?)?;
        let kind = r.take("type")?;
        let record = RecordId::new(r.take("record")?)?;
        let body = match kind {
            "ingest" => EntryBody::Ingest {
                series: text_value(r.take("series")?)?,
                retain_until: parse_retain_until(r.take("retain-until")?)?,
                lock_mode: LockMode::parse(r.take("lock-mode")?)?,
                object_key: text_value(r.take("object-key")?)?,
                object_version: text_value(r.take("object-version")?)?,
                stored_sha256: parse_hash(r.take("stored-sha256")?)?,
                stored_size: parse_u64(r.take("stored-size")?)?,
                original_commitment: parse_hash(r.take("original-commitment")?)?,
                dictionary: r.take_optional("dictionary")?.map(parse_hash).transpose()?,
                header_index: r
                    .take_optional("header-index")?
                    .map(parse_hash)
                    .transpose()?,
            },
            "dictionary" => decode_dictionary(&mut r, &record)?,
            "hold-placed" => EntryBody::HoldPlaced {
                hold: text_value(r.take("hold")?)?,
            },
            "hold-released" => EntryBody::HoldReleased {
                hold: text_value(r.take("hold")?)?,
            },
            "retention-extended" => EntryBody::RetentionExtended {
                retain_until: parse_retain_until(r.take("retain-until")?)?,
            },
            "destroy-authorized" => EntryBody::DestroyAuthorized {
                retain_until: parse_retain_until(r.take("retain-until")?)?,
                disposition: Disposition::parse(r.take("disposition")?)?,
            },
            "destroyed" => {
                let object_key = text_value(r.take("object-key")?)?;
                let mut object_versions = vec![text_value(r.take("object-version")?)?];
                while let Some(v) = r.take_optional("object-version")? {
                    object_versions.push(text_value(v)?);
                }
                EntryBody::Destroyed {
                    object_key,
                    object_versions,
                }
            }
            other => return malformed(format!("unknown entry type {other:?}")),
        };
        // One spelling per entry: the newest version whose features it uses, no other.
        if body.version() != version {
            return malformed(format!(
                "version {version} on an entry whose fields are those of version {}",
                body.version()
            ));
        }
        if let Some(extra) = r.lines.next() {
            return malformed(format!(
                "unexpected line {:?}",
                extra.chars().take(60).collect::<String>()
            ));
        }
        Ok(Self {
            index,
            prev,
            logged_at,
            record,
            body,
        })
    }
}

/// The value of a `key value` line that must be field `key` (one reader for entries and
/// destruction certificates, which share the line format).
pub(crate) fn field<'a>(line: Option<&'a str>, key: &str) -> Result<&'a str, EntryError> {
    match line {
        Some(l) => match l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')) {
            Some(v) => Ok(v),
            None => malformed(format!(
                "expected field {key:?}, found {:?}",
                l.chars().take(60).collect::<String>()
            )),
        },
        None => malformed(format!("missing field {key:?}")),
    }
}

/// The remaining `key value` lines of an entry being decoded.
struct Fields<'a> {
    lines: std::str::Split<'a, char>,
}

impl<'a> Fields<'a> {
    fn take(&mut self, key: &str) -> Result<&'a str, EntryError> {
        field(self.lines.next(), key)
    }

    /// Takes the next line if it is `key`; used for the repeated trailing field.
    fn take_optional(&mut self, key: &str) -> Result<Option<&'a str>, EntryError> {
        let mut peek = self.lines.clone();
        match peek.next() {
            Some(l) if l.split(' ').next() == Some(key) => self.take(key).map(Some),
            _ => Ok(None),
        }
    }
}

/// The fields of a `dictionary` entry (version 2).
fn decode_dictionary(r: &mut Fields<'_>, record: &RecordId) -> Result<EntryBody, EntryError> {
    let object_key;
    let stored_sha256;
    let body = EntryBody::Dictionary {
        lock_mode: LockMode::parse(r.take("lock-mode")?)?,
        lock_until: parse_time(r.take("lock-until")?)?,
        object_key: {
            object_key = text_value(r.take("object-key")?)?;
            object_key.clone()
        },
        object_version: text_value(r.take("object-version")?)?,
        stored_sha256: {
            stored_sha256 = parse_hash(r.take("stored-sha256")?)?;
            stored_sha256
        },
        stored_size: parse_u64(r.take("stored-size")?)?,
    };
    check_dictionary_names(record, &object_key, &stored_sha256)?;
    Ok(body)
}

/// A dictionary entry's record id and object key are both derived from its hash, so that
/// neither can name another dictionary's bytes.
fn check_dictionary_names(
    record: &RecordId,
    object_key: &str,
    stored_sha256: &Hash,
) -> Result<(), EntryError> {
    if *record != RecordId::from_hash(stored_sha256) {
        return malformed("a dictionary entry's record is not the first 32 hex of its hash");
    }
    if object_key != crate::layout::dictionary_key(stored_sha256) {
        return malformed("a dictionary entry's object key is not dictionaries/<its hash>");
    }
    Ok(())
}

/// Free text: printable ASCII, no leading or trailing space, `1..=MAX_VALUE_LEN` bytes.
pub(crate) fn check_text(s: &str) -> Result<(), EntryError> {
    if s.is_empty() || s.len() > MAX_VALUE_LEN {
        return malformed(format!("a value must be 1-{MAX_VALUE_LEN} bytes"));
    }
    if s.starts_with(' ') || s.ends_with(' ') || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return malformed(format!(
            "value {:?} is not printable ASCII without surrounding spaces",
            s.chars().take(60).collect::<String>()
        ));
    }
    Ok(())
}

fn text_value(s: &str) -> Result<String, EntryError> {
    check_text(s)?;
    Ok(s.to_owned())
}

pub(crate) fn parse_u64(s: &str) -> Result<u64, EntryError> {
    let canonical = s == "0" || (!s.starts_with('0') && !s.is_empty() && s.len() <= 20);
    match s.parse::<u64>() {
        Ok(n) if canonical && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => malformed(format!(
            "{:?} is not a canonical decimal number",
            s.chars().take(30).collect::<String>()
        )),
    }
}

pub(crate) fn parse_hash(s: &str) -> Result<Hash, EntryError> {
    Hash::from_hex(s).map_err(|e| EntryError::Malformed(e.to_string()))
}

pub(crate) fn parse_time(s: &str) -> Result<UnixTime, EntryError> {
    UnixTime::parse(s).map_err(|e| EntryError::Malformed(e.to_string()))
}

fn parse_retain_until(s: &str) -> Result<RetainUntil, EntryError> {
    if s == "permanent" {
        Ok(RetainUntil::Permanent)
    } else {
        parse_time(s).map(RetainUntil::Until)
    }
}

#[cfg(test)]
mod tests;
