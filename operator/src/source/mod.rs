//! Where messages come from: local files for migrations (mbox, Maildir, a directory of .eml).
//!
//! `source -> SourceMessage { folder, identity, body, ... } -> pipeline`
//!
//! A source never changes what it reads. Each message carries an identity that is stable across
//! runs, so the pipeline can tell a message it already archived from a new one.

pub mod imap;
pub mod local;

use crate::spool::Body;
use mailvault_core::{Hash, UnixTime};

/// The identity of a message by folder and content: the same bytes in the same folder are the
/// same record, however they were read (a renamed file, a UIDVALIDITY reset, a re-run).
pub fn content_identity(folder: &str, content_sha256: &Hash) -> String {
    format!("{folder}\u{0}{}", content_sha256.to_hex())
}

/// One message as a source delivers it.
#[derive(Debug)]
pub struct SourceMessage {
    /// Folder (mailbox) name as the source names it; `INBOX` for the top of a Maildir or an mbox.
    pub folder: String,
    /// Identity within the source, stable across runs (for local sources: folder and a hash
    /// of the bytes, so a renamed file is not archived twice).
    pub identity: String,
    /// The exact RFC 5322 bytes, in memory or (a large message) in a file.
    pub body: Body,
    /// SHA-256 of the body, computed once by the source (identity and commitment both use it).
    pub content_sha256: Hash,
    /// When the source received the message, if it says.
    pub internal_date: Option<UnixTime>,
    /// Flags at capture (IMAP flags, or Maildir info letters).
    pub flags: Vec<String>,
    /// Where exactly it was read (`imap:INBOX;UIDVALIDITY=7;UID=42`, `maildir:Sent/cur/...`),
    /// kept in the record's sidecar for tracing, never in the log.
    pub location: String,
}
