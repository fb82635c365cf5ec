//! Records requests (Sunshine law): the per-record header index a search reads, the query it
//! matches, and the signed manifest of an export.
//!
//! `MessageFacts -> HeaderIndex (index/<id>, beside the record, dies with it) -> RecordQuery ->
//!  matched ids -> ExportManifest (signed note: query, checkpoint, id + SHA-256 per message)`
//!
//! The index is a hint for finding records, never evidence: an exported message is re-read
//! from its record, checked against the log and matched again on its own headers; what the
//! requester trusts is each message's proof bundle (archive key) and the manifest's signature
//! (export key). The log holds only each index's SHA-256 (salted, so it says nothing about the
//! message), so a search can tell an index edited in the bucket; never message content.

use crate::lifecycle::holds::{DateRange, RecordFacts};
use crate::note::{NoteError, NoteSigner, NoteVerifier};
use crate::rules::{AddressPattern, Matcher, MessageFacts, RuleError, message_date, subject_regex};
use crate::{Hash, UnixTime};
use serde::{Deserialize, Serialize};

/// `format` of a header index object written before its ingest entry committed to it: no
/// salt, and nothing in the log to check it against.
pub const INDEX_FORMAT_V1: &str = "mailvault-header-index/1";
/// `format` of a header index object with a `salt`, whose SHA-256 its ingest entry holds
/// (`header-index`, docs/log-format.md §14.1).
pub const INDEX_FORMAT: &str = "mailvault-header-index/2";
/// Bytes of a header index's salt.
pub const INDEX_SALT_LEN: usize = 16;

/// What an ingest entry's `header-index` holds for a record stored without a header index,
/// because its index would be larger than [`MAX_INDEX_LEN`] (a message with a thousand long
/// addresses): SHA-256 of no bytes. Only an empty object hashes to it, and that is not an
/// index, so a search reads such a record itself, and an index found for it was put there by
/// someone else.
pub fn no_index_sha256() -> Hash {
    Hash::of(&[])
}
/// Largest header index object read (1,000 addresses in each of From, To and Cc fit).
pub const MAX_INDEX_LEN: usize = 512 * 1024;
/// First line of an export manifest: names what the note is, so no other signed note
/// (a checkpoint, a certificate) can pass for one.
pub const MANIFEST_HEADER: &str = "mailvault records-request export v1";
/// Largest manifest read (about 100 bytes a message: a million messages fit).
pub const MAX_MANIFEST_LEN: usize = 128 * 1024 * 1024;

/// What a search looks at for one record: the matcher facts a records officer searches by,
/// and nothing else (no body, no other header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderIndex {
    /// [`INDEX_FORMAT`], or [`INDEX_FORMAT_V1`] for an index written before the salt.
    pub format: String,
    /// Random hex (16 bytes), present exactly in [`INDEX_FORMAT`]: the log holds the index's
    /// SHA-256, and the salt keeps that hash from confirming a guess at the message's headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// The Date header (Unix seconds, UTC), if it parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<i64>,
    /// The source's internal date (Unix seconds), if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_date: Option<i64>,
    /// When the record was archived (Unix seconds): the message date of last resort.
    pub archived_at: i64,
    /// Folder, as a person reads it.
    pub folder: String,
    /// From addresses, lowercase.
    pub from: Vec<String>,
    /// To addresses, lowercase.
    pub to: Vec<String>,
    /// Cc addresses, lowercase.
    pub cc: Vec<String>,
    /// Subject (bounded as the matchers bound it).
    pub subject: String,
    /// Size of the message in bytes.
    pub size: u64,
    /// Whether a MIME part is an attachment.
    pub has_attachment: bool,
    /// The headers could not be parsed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unparseable: bool,
}

impl HeaderIndex {
    /// The index of a message with `facts`, archived at `archived_at`, salted with `salt`
    /// (random, one per record).
    pub fn new(facts: &MessageFacts, archived_at: UnixTime, salt: &[u8; INDEX_SALT_LEN]) -> Self {
        Self {
            format: INDEX_FORMAT.to_owned(),
            salt: Some(hex::encode(salt)),
            date: facts.date.map(|t| t.0),
            internal_date: facts.internal_date.map(|t| t.0),
            archived_at: archived_at.0,
            folder: facts.folder.clone(),
            from: facts.from.clone(),
            to: facts.to.clone(),
            cc: facts.cc.clone(),
            subject: facts.subject.clone(),
            size: facts.size,
            has_attachment: facts.has_attachment,
            unparseable: facts.unparseable,
        }
    }

    /// As stored (compact JSON).
    pub fn encode(&self) -> Vec<u8> {
        // Strings, numbers and booleans only: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored index; `None` for anything that is not one (a search then reads the
    /// record itself).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_INDEX_LEN {
            return None;
        }
        serde_json::from_slice::<Self>(bytes)
            .ok()
            .filter(|i| match (i.format.as_str(), &i.salt) {
                (INDEX_FORMAT_V1, None) => true,
                (INDEX_FORMAT, Some(salt)) => {
                    salt.len() == 2 * INDEX_SALT_LEN
                        && salt.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                }
                _ => false,
            })
    }

    /// The facts a query matches on (no header fields: a query does not match on them).
    pub fn record_facts(&self) -> RecordFacts {
        RecordFacts {
            facts: MessageFacts {
                folder: self.folder.clone(),
                from: self.from.clone(),
                to: self.to.clone(),
                cc: self.cc.clone(),
                subject: self.subject.clone(),
                headers: Vec::new(),
                size: self.size,
                has_attachment: self.has_attachment,
                date: self.date.map(UnixTime),
                internal_date: self.internal_date.map(UnixTime),
                unparseable: self.unparseable,
            },
            archived_at: UnixTime(self.archived_at),
        }
    }
}

/// A records request: the same [`Matcher`] as retention rules and legal holds (every criterion
/// given must hold; within one criterion any value may match) and a range of message dates
/// ([`message_date`]: the Date header, else the internal date, else when it was archived).
#[derive(Debug, Clone)]
pub struct RecordQuery {
    matcher: Matcher,
    dates: DateRange,
    /// The query as the manifest states it: one `criterion value` per line, in a fixed order.
    lines: Vec<String>,
}

/// The criteria of a records request as given (flags).
#[derive(Debug, Clone, Default)]
pub struct QueryCriteria {
    /// From addresses or domains (`chief@city.gov`, `@city.gov`).
    pub from: Vec<String>,
    /// To addresses or domains.
    pub to: Vec<String>,
    /// Cc addresses or domains.
    pub cc: Vec<String>,
    /// Subject regex (searched, not anchored).
    pub subject: Option<String>,
    /// Folder globs.
    pub folders: Vec<String>,
    /// First message date (inclusive).
    pub since: Option<UnixTime>,
    /// Last message date (inclusive).
    pub until: Option<UnixTime>,
}

impl QueryCriteria {
    /// Whether no criterion is given.
    pub fn is_empty(&self) -> bool {
        self.from.is_empty()
            && self.to.is_empty()
            && self.cc.is_empty()
            && self.subject.is_none()
            && self.folders.is_empty()
            && self.since.is_none()
            && self.until.is_none()
    }
}

impl RecordQuery {
    /// Compiles the criteria; refuses a malformed address, a regex that does not compile, or
    /// a date range that ends before it starts.
    pub fn new(c: &QueryCriteria) -> Result<Self, RuleError> {
        let addresses = |list: &[String]| {
            list.iter()
                .map(|a| AddressPattern::parse(a))
                .collect::<Result<Vec<_>, _>>()
        };
        if let (Some(s), Some(u)) = (c.since, c.until)
            && s > u
        {
            return Err(RuleError(format!("--since {s} is after --until {u}")));
        }
        let matcher = Matcher {
            folders: c.folders.clone(),
            from: addresses(&c.from)?,
            to: addresses(&c.to)?,
            cc: addresses(&c.cc)?,
            subject: c.subject.as_deref().map(subject_regex).transpose()?,
            ..Matcher::default()
        };
        let mut lines = Vec::new();
        let mut add = |name: &str, values: &[String]| {
            for v in values {
                lines.push(format!("{name} {}", one_line(v)));
            }
        };
        add("from", &c.from);
        add("to", &c.to);
        add("cc", &c.cc);
        add("subject", c.subject.as_slice());
        add("folder", &c.folders);
        add(
            "since",
            &c.since
                .map(|t| t.to_string())
                .into_iter()
                .collect::<Vec<_>>(),
        );
        add(
            "until",
            &c.until
                .map(|t| t.to_string())
                .into_iter()
                .collect::<Vec<_>>(),
        );
        Ok(Self {
            matcher,
            dates: DateRange {
                from: c.since,
                to: c.until,
            },
            lines,
        })
    }

    /// Whether a record matches.
    pub fn matches(&self, r: &RecordFacts) -> bool {
        self.matcher.matches(&r.facts)
            && self.dates.contains(message_date(&r.facts, r.archived_at).0)
    }

    /// The query as the manifest states it.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}

/// A value on one manifest line: control characters (a newline would end the line) escaped.
fn one_line(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One exported message as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    /// Record id (also the file names: `messages/<id>.eml`, `proofs/<id>.json`).
    pub record: String,
    /// SHA-256 of the message bytes as exported.
    pub sha256: Hash,
}

/// What an export says it is: the archive, the checkpoint every proof is against, the query,
/// and each message. Signed as a C2SP note by the export key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportManifest {
    /// The archive's log origin.
    pub origin: String,
    /// Size of the checkpoint every proof bundle is against.
    pub checkpoint_size: u64,
    /// Its root.
    pub checkpoint_root: Hash,
    /// When the export was made.
    pub exported_at: UnixTime,
    /// The query, one `criterion value` per line.
    pub query: Vec<String>,
    /// The messages, in log order.
    pub records: Vec<ManifestRecord>,
}

/// Why a manifest is refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The signature does not verify with the export key (or the note is malformed).
    #[error("manifest signature: {0}")]
    Signature(#[from] NoteError),
    /// The signed text is not a manifest.
    #[error("not an export manifest: {0}")]
    Malformed(String),
}

impl ExportManifest {
    /// The text that is signed.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut t = format!(
            "{MANIFEST_HEADER}\norigin {}\ncheckpoint {} {}\nexported-at {}\n",
            self.origin,
            self.checkpoint_size,
            self.checkpoint_root.to_base64(),
            self.exported_at
        );
        for q in &self.query {
            let _ = writeln!(t, "query {q}");
        }
        let _ = writeln!(t, "records {}", self.records.len());
        for r in &self.records {
            let _ = writeln!(t, "record {} {}", r.record, r.sha256.to_hex());
        }
        t
    }

    /// The signed note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, NoteError> {
        signer.sign(&self.to_text())
    }

    /// Opens a signed manifest with the export key and parses it.
    pub fn open(note: &[u8], export_key: &NoteVerifier) -> Result<Self, ManifestError> {
        let verified =
            crate::note::open_with_limit(note, std::slice::from_ref(export_key), MAX_MANIFEST_LEN)?;
        Self::parse(&verified.text)
    }

    fn parse(text: &str) -> Result<Self, ManifestError> {
        let bad = |m: &str| ManifestError::Malformed(m.to_owned());
        let mut lines = text.lines();
        if lines.next() != Some(MANIFEST_HEADER) {
            return Err(bad("the first line is not the manifest header"));
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("no {name} line")))
        };
        let origin = field("origin")?;
        let checkpoint = field("checkpoint")?;
        let exported_at = field("exported-at")?;
        let (size, root) = checkpoint
            .split_once(' ')
            .ok_or_else(|| bad("checkpoint line"))?;
        let checkpoint_size = size.parse().map_err(|_| bad("checkpoint size"))?;
        let checkpoint_root = Hash::from_base64(root).map_err(|_| bad("checkpoint root"))?;
        let exported_at = UnixTime::parse(&exported_at).map_err(|_| bad("exported-at"))?;
        let mut query = Vec::new();
        let mut records = Vec::new();
        let mut count = None;
        for line in text.lines().skip(4) {
            if let Some(q) = line.strip_prefix("query ") {
                if count.is_some() {
                    return Err(bad("query line after the records line"));
                }
                query.push(q.to_owned());
            } else if let Some(n) = line.strip_prefix("records ") {
                if count.is_some() {
                    return Err(bad("two records lines"));
                }
                count = Some(n.parse::<usize>().map_err(|_| bad("records count"))?);
            } else if let Some(r) = line.strip_prefix("record ") {
                let (id, sha) = r.split_once(' ').ok_or_else(|| bad("record line"))?;
                crate::entry::RecordId::new(id).map_err(|_| bad("record id"))?;
                if count.is_none() {
                    return Err(bad("record line before the records line"));
                }
                records.push(ManifestRecord {
                    record: id.to_owned(),
                    sha256: Hash::from_hex(sha).map_err(|_| bad("record hash"))?,
                });
            } else {
                return Err(bad(&format!("unexpected line {line:?}")));
            }
        }
        if count != Some(records.len()) {
            return Err(bad("the records count does not match the record lines"));
        }
        Ok(Self {
            origin,
            checkpoint_size,
            checkpoint_root,
            exported_at,
            query,
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(from: &str, subject: &str, date: i64) -> MessageFacts {
        MessageFacts {
            folder: "INBOX".into(),
            from: vec![from.into()],
            to: vec!["clerk@city.gov".into()],
            subject: subject.into(),
            size: 100,
            date: Some(UnixTime(date)),
            ..MessageFacts::default()
        }
    }

    #[test]
    fn the_index_round_trips_and_matches_like_the_message() {
        let f = facts("chief@police.city.gov", "Budget 2026", 1_780_000_000);
        let index = HeaderIndex::new(&f, UnixTime(1_790_000_000), &[7; INDEX_SALT_LEN]);
        let back = HeaderIndex::decode(&index.encode()).unwrap();
        assert_eq!(back, index);
        assert_eq!(back.record_facts().facts.from, f.from);
        let q = RecordQuery::new(&QueryCriteria {
            from: vec!["@police.city.gov".into()],
            subject: Some("(?i)budget".into()),
            since: Some(UnixTime(1_779_000_000)),
            until: Some(UnixTime(1_781_000_000)),
            ..QueryCriteria::default()
        })
        .unwrap();
        assert!(q.matches(&back.record_facts()));
        let later = HeaderIndex::new(
            &facts("chief@police.city.gov", "Budget", 1_782_000_000),
            UnixTime(1_790_000_000),
            &[8; INDEX_SALT_LEN],
        );
        assert!(!q.matches(&later.record_facts()));
        assert_eq!(HeaderIndex::decode(b"{\"format\":\"other\"}"), None);
        assert_eq!(HeaderIndex::decode(b"not json"), None);
    }

    #[test]
    fn a_salt_comes_with_version_2_of_the_index_and_only_with_it() {
        let f = facts("chief@police.city.gov", "Budget 2026", 1_780_000_000);
        let salted = HeaderIndex::new(&f, UnixTime(1_790_000_000), &[7; INDEX_SALT_LEN]);
        let json = |i: &HeaderIndex| serde_json::to_value(i).unwrap();
        let with = |format: &str, salt: Option<&str>| {
            let mut v = json(&salted);
            v["format"] = format.into();
            match salt {
                Some(s) => v["salt"] = s.into(),
                None => {
                    v.as_object_mut().unwrap().remove("salt");
                }
            }
            HeaderIndex::decode(&serde_json::to_vec(&v).unwrap())
        };
        assert!(with(INDEX_FORMAT, Some(&"07".repeat(16))).is_some());
        assert!(
            with(INDEX_FORMAT_V1, None).is_some(),
            "indexes written before the salt"
        );
        assert!(with(INDEX_FORMAT, None).is_none());
        assert!(with(INDEX_FORMAT_V1, Some(&"07".repeat(16))).is_none());
        assert!(with(INDEX_FORMAT, Some("07")).is_none());
        assert!(with(INDEX_FORMAT, Some(&"0G".repeat(16))).is_none());
        // Two indexes of the same message differ by their salt: their hashes in the log say
        // nothing about the message.
        let other = HeaderIndex::new(&f, UnixTime(1_790_000_000), &[8; INDEX_SALT_LEN]);
        assert_ne!(Hash::of(&salted.encode()), Hash::of(&other.encode()));
    }

    #[test]
    fn bad_criteria_are_refused() {
        for c in [
            QueryCriteria {
                from: vec!["not an address".into()],
                ..QueryCriteria::default()
            },
            QueryCriteria {
                subject: Some("(".into()),
                ..QueryCriteria::default()
            },
            QueryCriteria {
                since: Some(UnixTime(2)),
                until: Some(UnixTime(1)),
                ..QueryCriteria::default()
            },
        ] {
            assert!(RecordQuery::new(&c).is_err());
        }
    }

    #[test]
    fn a_manifest_round_trips_and_refuses_another_key_and_an_edit() {
        let signer = NoteSigner::new("records.city.gov/export", &[7; 32]).unwrap();
        let verifier = NoteVerifier::parse(&signer.verifier_key()).unwrap();
        let q = RecordQuery::new(&QueryCriteria {
            subject: Some("line\nbreak".into()),
            ..QueryCriteria::default()
        })
        .unwrap();
        let m = ExportManifest {
            origin: "mailvault.io/records/chief".into(),
            checkpoint_size: 42,
            checkpoint_root: Hash::of(b"root"),
            exported_at: UnixTime(1_790_000_000),
            query: q.lines().to_vec(),
            records: vec![ManifestRecord {
                record: "20261128-abc".into(),
                sha256: Hash::of(b"m"),
            }],
        };
        let note = m.sign(&signer).unwrap();
        assert_eq!(ExportManifest::open(note.as_bytes(), &verifier).unwrap(), m);
        let edited = note.replace("records 1", "records 2");
        assert!(ExportManifest::open(edited.as_bytes(), &verifier).is_err());
        let other = NoteSigner::new("records.city.gov/export", &[8; 32]).unwrap();
        let other = NoteVerifier::parse(&other.verifier_key()).unwrap();
        assert!(ExportManifest::open(note.as_bytes(), &other).is_err());
        // A checkpoint signed by the same key is not a manifest.
        let not_manifest = signer
            .sign("mailvault.io/records/chief\n1\nAAAA\n")
            .unwrap();
        assert!(matches!(
            ExportManifest::open(not_manifest.as_bytes(), &verifier),
            Err(ManifestError::Malformed(_))
        ));
    }
}
