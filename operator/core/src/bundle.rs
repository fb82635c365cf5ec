//! How the log lies in an object store: entry bundles after C2SP tlog-tiles.
//!
//! `log/tile/entries/x001/x234/067` holds entries `1234067 * 256 ..` (256 of them); a bundle
//! that is not full yet is written as `<path>.p/<width>`. Every object is written once and never
//! rewritten: a growing bundle gets a new partial object per width, then its full object. A
//! reader takes, for each bundle index, the full object or else the widest partial, and checks
//! that every narrower partial is a prefix of it.
//!
//! A bundle is the concatenation of `u16 big-endian length || entry bytes`, as in tlog-tiles.

use crate::entry::MAX_ENTRY_LEN;

/// Entries per full bundle.
pub const BUNDLE_WIDTH: u64 = 256;
/// Object-key prefix of entry bundles, relative to the archive root.
pub const ENTRIES_PREFIX: &str = "log/tile/entries/";
/// Object-key prefix of signed checkpoints, relative to the archive root.
pub const CHECKPOINTS_PREFIX: &str = "checkpoints/";

/// Why a bundle could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The bytes are not a sequence of length-prefixed entries.
    #[error("malformed entry bundle: {0}")]
    Malformed(String),
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

/// Encodes entries into a bundle.
pub fn encode_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        // Entries are validated to at most MAX_ENTRY_LEN (< 65536) before they are appended.
        let len = u16::try_from(e.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// Splits a bundle into its entries' bytes (not yet decoded).
pub fn decode_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, BundleError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if out.len() as u64 >= BUNDLE_WIDTH {
            return Err(BundleError::Malformed(format!(
                "more than {BUNDLE_WIDTH} entries"
            )));
        }
        let [hi, lo, tail @ ..] = rest else {
            return Err(BundleError::Malformed("truncated length prefix".into()));
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if len == 0 || len > MAX_ENTRY_LEN {
            return Err(BundleError::Malformed(format!(
                "entry length {len} out of range"
            )));
        }
        if tail.len() < len {
            return Err(BundleError::Malformed(format!(
                "entry {} truncated: {} of {len} bytes",
                out.len(),
                tail.len()
            )));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    Ok(out)
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
    fn truncated_bundles_are_rejected() {
        let b = encode_bundle([b"abc".as_slice(), b"de".as_slice()]);
        assert_eq!(
            decode_bundle(&b).unwrap(),
            vec![b"abc".as_slice(), b"de".as_slice()]
        );
        for cut in 1..b.len() {
            assert!(
                decode_bundle(&b[..cut]).is_err() || cut == 5,
                "cut at {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn keys_round_trip(index in any::<u64>(), width in 1u64..=256) {
            prop_assert_eq!(parse_bundle_key(&bundle_key(index, width)), Some((index, width)));
        }

        #[test]
        fn bundles_round_trip(entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..20)) {
            let b = encode_bundle(entries.iter().map(Vec::as_slice));
            let back: Vec<Vec<u8>> = decode_bundle(&b).unwrap().into_iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(back, entries);
        }
    }
}
