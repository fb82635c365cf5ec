//! Authentication of the writer's own objects: `signing key -> MAC key -> tag(kind, bytes)`.
//!
//! Anyone who can write to the bucket can leave objects that look like the writer's (a record
//! with a sidecar, a log bundle past the newest checkpoint, a run marker, a cursor). The writer
//! must never sign or adopt those, so every object it will later trust carries a tag under a
//! key derived from the signing key, and anything without a valid tag is refused.
//!
//! Tags are HMAC-SHA256 ([RFC 2104]) under `HMAC-SHA256(seed, "mailvault/mac-key/v1")`, over
//! `kind || 0x00 || bytes`: the kind (`sidecar`, `bundle`, `state`) keeps a tag made for one kind
//! of object from being replayed as another. Auditors cannot check tags (they hold no secret)
//! and do not need to: the verifier judges everything against signed checkpoints.
//!
//! [RFC 2104]: https://www.rfc-editor.org/rfc/rfc2104

use crate::hash::Hash;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Label of the key derivation; a new version of the scheme gets a new label.
const KEY_LABEL: &[u8] = b"mailvault/mac-key/v1";

/// What a tag authenticates; part of the MAC input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacKind {
    /// A record's sidecar (the canonical sidecar text, see the writer).
    Sidecar,
    /// A log bundle object's bytes.
    Bundle,
    /// A state object (run marker, cursor, head).
    State,
}

impl MacKind {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Sidecar => b"sidecar",
            Self::Bundle => b"bundle",
            Self::State => b"state",
        }
    }
}

/// The writer's MAC key. Never printed.
#[derive(Clone)]
pub struct MacKey([u8; 32]);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl MacKey {
    /// Derives the MAC key from a 32-byte Ed25519 seed.
    pub fn derive(seed: &[u8; 32]) -> Self {
        let mut mac = hmac_sha256(seed);
        mac.update(KEY_LABEL);
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self, kind: MacKind, bytes: &[u8]) -> HmacSha256 {
        let mut mac = hmac_sha256(&self.0);
        mac.update(kind.label());
        mac.update(&[0]);
        mac.update(bytes);
        mac
    }

    /// The tag of `bytes` as an object of `kind`.
    pub fn tag(&self, kind: MacKind, bytes: &[u8]) -> Hash {
        Hash(self.mac(kind, bytes).finalize().into_bytes().into())
    }

    /// Whether `tag` is the tag of `bytes` as an object of `kind` (compared in constant time).
    pub fn check(&self, kind: MacKind, bytes: &[u8], tag: &Hash) -> bool {
        self.mac(kind, bytes).verify_slice(&tag.0).is_ok()
    }
}

/// HMAC-SHA256 keyed with a 32-byte key. HMAC pads a key shorter than the hash's 64-byte block
/// with zeros, so passing it padded is the same MAC, without a fallible length check.
fn hmac_sha256(key: &[u8; 32]) -> HmacSha256 {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    HmacSha256::new(&block.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::NoteSigner;

    #[test]
    fn tags_depend_on_the_key_the_kind_and_the_bytes() {
        let a = NoteSigner::new("mailvault.io/ns/a", &[1; 32])
            .unwrap()
            .mac_key();
        let b = NoteSigner::new("mailvault.io/ns/a", &[2; 32])
            .unwrap()
            .mac_key();
        let tag = a.tag(MacKind::Sidecar, b"x");
        assert!(a.check(MacKind::Sidecar, b"x", &tag));
        assert!(!a.check(MacKind::Sidecar, b"y", &tag));
        assert!(!a.check(MacKind::Bundle, b"x", &tag));
        assert!(!b.check(MacKind::Sidecar, b"x", &tag));
        // The MAC key is neither the seed nor printed.
        assert_eq!(format!("{a:?}"), "MacKey(..)");
    }

    /// RFC 4231 test case 2 pins the HMAC construction itself.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(b"Jefe").unwrap();
        // ... and the padded form used above is the same MAC.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mut padded = hmac_sha256(&key);
        padded.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(padded.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
