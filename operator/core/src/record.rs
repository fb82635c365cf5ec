//! What the log knows of a record's bytes without holding them: hashes and the salted
//! commitment.
//!
//! `original bytes -> digest = SHA-256(bytes) -> commitment = SHA-256(salt || digest)`. The salt is
//! random per record, stored with the record and destroyed with it; afterwards the commitment in
//! the (permanent) log reveals nothing about the destroyed message, not even whether it equalled
//! a guessed text. Committing to the digest rather than the bytes lets one pass over a message
//! serve both its content identity and its commitment.

use crate::entry::RecordId;
use crate::hash::Hash;
use sha2::{Digest, Sha256};

/// Length of a commitment salt.
pub const SALT_LEN: usize = 32;

/// The commitment to a message whose SHA-256 is `digest`: `SHA-256(salt || digest)`.
pub fn commitment_from_digest(salt: &[u8; SALT_LEN], digest: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(digest.0);
    Hash(h.finalize().into())
}

/// The commitment to `original`: `SHA-256(salt || SHA-256(original))`.
pub fn commitment(salt: &[u8; SALT_LEN], original: &[u8]) -> Hash {
    commitment_from_digest(salt, &Hash::of(original))
}

/// A record's id: the first 32 hex digits (lowercase) of
/// `SHA-256(UTF-8(origin) || 0x00 || UTF-8(identity))`, where `identity` is the message's
/// content identity as its source defines it (and as the sidecar's `mailvault-identity` holds
/// it). The same message archived twice gets the same id, so it is logged once.
pub fn record_id(origin: &str, identity: &str) -> RecordId {
    let mut bytes = origin.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(identity.as_bytes());
    RecordId::from_hash(&Hash::of(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of docs/log-format.md ("Record ids", "Commitments"): change both
    /// together.
    #[test]
    fn record_id_and_commitment_worked_example() {
        let origin = "mailvault.io/acme/mail";
        let original = b"Subject: hello\r\n\r\nhi\r\n";
        let identity = format!("INBOX\u{0}{}", Hash::of(original).to_hex());
        let mut pre = origin.as_bytes().to_vec();
        pre.push(0);
        pre.extend_from_slice(identity.as_bytes());
        let id = record_id(origin, &identity);
        assert_eq!(id.as_str(), &Hash::of(&pre).to_hex()[..32]);
        let salt = [0x11u8; SALT_LEN];
        println!("sha256(original) = {}", Hash::of(original));
        println!("record id = {id}");
        println!("commitment = {}", commitment(&salt, original));
        assert_eq!(Hash::of(original).to_hex(), ORIGINAL_SHA256_EXAMPLE);
        assert_eq!(id.as_str(), RECORD_ID_EXAMPLE);
        assert_eq!(commitment(&salt, original).to_hex(), COMMITMENT_EXAMPLE);
    }
    const ORIGINAL_SHA256_EXAMPLE: &str =
        "d45128822c0495d62ab327ec3b5a56b594489269b7d8a01efd527f9b246bba2d";
    const RECORD_ID_EXAMPLE: &str = "6e786c8035bc0eff441c9b7fae6bc340";
    const COMMITMENT_EXAMPLE: &str =
        "86d3129d8a855b9c29fdecd75676524b32408a5731cf271b963fbbb25fad0e49";

    #[test]
    fn salt_changes_the_commitment() {
        let msg = b"Subject: x\r\n\r\nbody\r\n";
        assert_ne!(commitment(&[0; 32], msg), commitment(&[1; 32], msg));
        assert_ne!(
            commitment(&[0; 32], msg),
            commitment(&[0; 32], b"Subject: y\r\n\r\n")
        );
        assert_eq!(
            commitment(&[5; 32], msg),
            commitment_from_digest(&[5; 32], &Hash::of(msg))
        );
        // Known answer, so the definition cannot drift unnoticed.
        assert_eq!(commitment(&[0; 32], b"").to_hex(), {
            let mut pre = vec![0u8; 32];
            pre.extend_from_slice(&Hash::of(b"").0);
            Hash::of(&pre).to_hex()
        });
    }
}
