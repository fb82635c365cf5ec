//! What the log knows of a record's bytes without holding them: hashes and the salted
//! commitment.
//!
//! `original bytes -> digest = SHA-256(bytes) -> commitment = SHA-256(salt || digest)`. The salt is
//! random per record, stored with the record and destroyed with it; afterwards the commitment in
//! the (permanent) log reveals nothing about the destroyed message, not even whether it equalled
//! a guessed text. Committing to the digest rather than the bytes lets one pass over a message
//! serve both its content identity and its commitment.

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

#[cfg(test)]
mod tests {
    use super::*;

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
