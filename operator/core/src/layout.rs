//! Every key of an archive's store, in one place: the writer, the reader, the verifier and
//! (later) destruction all name objects through this module.
//!
//! `<archive root>/ records/<id> · index/<id> · log/tile/entries/… · checkpoints/<size> · certificates/<run> · state/{cursor,run,resume}.json`
//!
//! Keys are relative to the archive root (`<prefix>/<namespace>/<name>/` in a bucket, or a
//! local directory). docs/record-log.md specifies them for auditors; changing one is a format
//! change.

use crate::bundle::BUNDLE_WIDTH;

/// Prefix of record objects: `records/<record-id>`, one per message, with its sidecar.
pub const RECORDS_PREFIX: &str = "records/";
/// Prefix of header index objects: `index/<record-id>`, one small object per record (the
/// headers a records request searches by), written beside the record, its hash in the record's
/// ingest entry (never its content), deleted with the record by the destruction run.
pub const INDEX_PREFIX: &str = "index/";
/// Prefix of every log object (entry bundles and, with tlog-tiles, tiles).
pub const LOG_PREFIX: &str = "log/";
/// Prefix of entry bundles: `log/tile/entries/x001/x234/067` holds entries `1234067 * 256 ..`;
/// a bundle that is not full yet is written as `<path>.p/<width>`.
pub const ENTRIES_PREFIX: &str = "log/tile/entries/";
/// Prefix of signed checkpoints: `checkpoints/<tree size>`.
pub const CHECKPOINTS_PREFIX: &str = "checkpoints/";
/// Prefix of zstd dictionaries: `dictionaries/<hex SHA-256 of the dictionary>`, each logged
/// by a `dictionary` entry and named by the ingest entries of the records compressed with it.
pub const DICTIONARIES_PREFIX: &str = "dictionaries/";
/// Prefix of destruction certificates: `certificates/<run>`.
pub const CERTIFICATES_PREFIX: &str = "certificates/";
/// The resume cursor (per folder: UIDVALIDITY, next UID, HIGHESTMODSEQ), a small mutable
/// object written after each checkpoint.
pub const CURSOR_KEY: &str = "state/cursor.json";
/// The run marker: says whether a run may have stored records it has not logged yet.
pub const RUN_MARKER_KEY: &str = "state/run.json";
/// The writer's resume state (the tree's right edge and a filter over ingested ids, see
/// [`crate::resume`]), written at the end of each run.
pub const RESUME_KEY: &str = "state/resume.json";
/// The legal holds in force and how far each was applied (log position), MAC'd like the
/// cursor: what a run holds newly archived records by.
pub const HOLDS_STATE_KEY: &str = "state/holds.json";
/// The dictionary the writer compresses small mail with (hash, version, training ratio),
/// MAC'd like the cursor, written once the dictionary's entry is signed.
pub const DICTIONARY_STATE_KEY: &str = "state/dictionary.json";
/// The fingerprint of the retention policy last re-applied to every record, MAC'd like the
/// cursor: a run re-applies its policy only when it differs.
pub const POLICY_STATE_KEY: &str = "state/policy.json";

/// Key of a record's object.
pub fn record_key(id: &str) -> String {
    format!("{RECORDS_PREFIX}{id}")
}

/// Key of a record's header index object.
pub fn index_key(id: &str) -> String {
    format!("{INDEX_PREFIX}{id}")
}

/// The record id a record key names; `None` for a key outside `records/`.
pub fn record_id_of(key: &str) -> Option<&str> {
    key.strip_prefix(RECORDS_PREFIX)
}

/// Key of the dictionary whose bytes hash to `sha256`.
pub fn dictionary_key(sha256: &crate::Hash) -> String {
    format!("{DICTIONARIES_PREFIX}{sha256}")
}

/// The hash a dictionary key names; `None` if it is not one we write (lowercase hex only).
pub fn parse_dictionary_key(key: &str) -> Option<crate::Hash> {
    let hash = crate::Hash::from_hex(key.strip_prefix(DICTIONARIES_PREFIX)?).ok()?;
    (dictionary_key(&hash) == key).then_some(hash)
}

/// Key of the destruction certificate of run `run`.
pub fn certificate_key(run: &str) -> String {
    format!("{CERTIFICATES_PREFIX}{run}")
}

/// The run id of a certificate key; `None` if it is not one we write (a run id is spelled like
/// a record id: `[A-Za-z0-9._-]`, no `/`).
pub fn parse_certificate_key(key: &str) -> Option<&str> {
    let run = key.strip_prefix(CERTIFICATES_PREFIX)?;
    crate::entry::RecordId::new(run).is_ok().then_some(run)
}

/// The `N` path segment of tlog-tiles: groups of three digits, all but the last prefixed `x`.
fn index_path(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// Key of bundle `index` holding `width` entries (1..=256; 256 is the full bundle).
pub fn bundle_key(index: u64, width: u64) -> String {
    if width >= BUNDLE_WIDTH {
        format!("{ENTRIES_PREFIX}{}", index_path(index))
    } else {
        format!("{ENTRIES_PREFIX}{}.p/{width}", index_path(index))
    }
}

/// Parses a bundle key back into `(index, width)`; `None` if it is not one we write.
pub fn parse_bundle_key(key: &str) -> Option<(u64, u64)> {
    let rest = key.strip_prefix(ENTRIES_PREFIX)?;
    let (path, width) = match rest.split_once(".p/") {
        Some((p, w)) => {
            let width: u64 = w.parse().ok()?;
            if !(1..BUNDLE_WIDTH).contains(&width) || w != width.to_string() {
                return None;
            }
            (p, width)
        }
        None => (rest, BUNDLE_WIDTH),
    };
    let mut index = 0u64;
    let groups: Vec<&str> = path.split('/').collect();
    for (i, g) in groups.iter().enumerate() {
        let digits = if i + 1 == groups.len() {
            *g
        } else {
            g.strip_prefix('x')?
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
    }
    // Reject non-canonical spellings such as a leading "x000/".
    (bundle_key(index, width) == key).then_some((index, width))
}

/// Key of the checkpoint for a tree of `size` entries.
pub fn checkpoint_key(size: u64) -> String {
    format!("{CHECKPOINTS_PREFIX}{size}")
}

/// Parses a checkpoint key back into its size.
pub fn parse_checkpoint_key(key: &str) -> Option<u64> {
    let s = key.strip_prefix(CHECKPOINTS_PREFIX)?;
    let size: u64 = s.parse().ok()?;
    (size.to_string() == s).then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tlog_tiles_paths() {
        assert_eq!(bundle_key(0, 256), "log/tile/entries/000");
        assert_eq!(bundle_key(1_234_067, 256), "log/tile/entries/x001/x234/067");
        assert_eq!(bundle_key(5, 3), "log/tile/entries/005.p/3");
        assert_eq!(
            parse_bundle_key("log/tile/entries/x001/x234/067"),
            Some((1_234_067, 256))
        );
        assert_eq!(parse_bundle_key("log/tile/entries/005.p/3"), Some((5, 3)));
        for bad in [
            "log/tile/entries/5",
            "log/tile/entries/x000/005",
            "log/tile/entries/005.p/0",
            "log/tile/entries/005.p/256",
            "log/tile/entries/005.p/03",
            "log/tile/entries/001/002",
            "records/005",
        ] {
            assert_eq!(parse_bundle_key(bad), None, "{bad}");
        }
        assert_eq!(parse_checkpoint_key(&checkpoint_key(42)), Some(42));
        assert_eq!(parse_checkpoint_key("checkpoints/042"), None);
    }

    #[test]
    fn every_key_of_the_store() {
        assert_eq!(record_key("20261128-abc"), "records/20261128-abc");
        assert_eq!(record_id_of("records/20261128-abc"), Some("20261128-abc"));
        assert_eq!(record_id_of("log/tile/entries/000"), None);
        assert_eq!(index_key("20261128-abc"), "index/20261128-abc");
        assert_eq!(certificate_key("2026-12-01"), "certificates/2026-12-01");
        assert!(ENTRIES_PREFIX.starts_with(LOG_PREFIX));
        assert_eq!(CURSOR_KEY, "state/cursor.json");
        assert_eq!(RUN_MARKER_KEY, "state/run.json");
    }

    proptest! {
        #[test]
        fn keys_round_trip(index in any::<u64>(), width in 1u64..=256) {
            prop_assert_eq!(parse_bundle_key(&bundle_key(index, width)), Some((index, width)));
        }
    }
}
