//! Entry bundles after C2SP tlog-tiles: how entries are packed into the log's objects (their
//! keys are in [`crate::layout`]).
//!
//! `entries -> u16 length || bytes, ... -> one bundle object (at most 256 entries)`
//!
//! Every object is written once and never rewritten: a growing bundle gets a new partial object
//! per width, then its full object. A reader takes, for each bundle index, the full object or
//! else the widest partial, and checks that every narrower partial is a prefix of it.
//!
//! A bundle is the concatenation of `u16 big-endian length || entry bytes`, as in tlog-tiles.

use crate::entry::MAX_ENTRY_LEN;

/// Entries per full bundle.
pub const BUNDLE_WIDTH: u64 = 256;
/// Largest bundle object: a full bundle of entries of the largest size, each with its
/// two-byte length. A reader reads no more of an object under `log/`.
pub const MAX_BUNDLE_LEN: u64 = max_bundle_len(BUNDLE_WIDTH);

/// Largest bundle object of `width` entries (each a 2-byte length and at most
/// [`crate::entry::MAX_ENTRY_LEN`] bytes): what a reader reads of a key of that width at most.
#[allow(clippy::cast_possible_truncation)] // 16,386 fits in any u64.
pub const fn max_bundle_len(width: u64) -> u64 {
    width.saturating_mul(2 + MAX_ENTRY_LEN as u64)
}
/// Why a bundle could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The bytes are not a sequence of length-prefixed entries.
    #[error("malformed entry bundle: {0}")]
    Malformed(String),
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
        fn bundles_round_trip(entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..20)) {
            let b = encode_bundle(entries.iter().map(Vec::as_slice));
            let back: Vec<Vec<u8>> = decode_bundle(&b).unwrap().into_iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(back, entries);
        }
    }
}
