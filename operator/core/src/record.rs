//! What the log knows of a record's bytes without holding them: hashes and the salted
//! commitment.
//!
//! `original bytes -> commitment = SHA-256(salt || bytes)`. The salt is random per record, stored
//! with the record and destroyed with it; afterwards the commitment in the (permanent) log
//! reveals nothing about the destroyed message, not even whether it equalled a guessed text.

use crate::hash::Hash;
use sha2::{Digest, Sha256};

/// Length of a commitment salt.
pub const SALT_LEN: usize = 32;

/// Incremental commitment over a message that arrives in pieces (bounded memory).
#[derive(Clone)]
pub struct CommitmentHasher(Sha256);

impl CommitmentHasher {
    /// Starts a commitment with `salt`.
    pub fn new(salt: &[u8; SALT_LEN]) -> Self {
        let mut h = Sha256::new();
        h.update(salt);
        Self(h)
    }

    /// Feeds the next piece of the original bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The commitment.
    pub fn finish(self) -> Hash {
        Hash(self.0.finalize().into())
    }
}

/// `SHA-256(salt || original)` in one call.
pub fn commitment(salt: &[u8; SALT_LEN], original: &[u8]) -> Hash {
    let mut h = CommitmentHasher::new(salt);
    h.update(original);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_changes_the_commitment_and_pieces_do_not() {
        let msg = b"Subject: x\r\n\r\nbody\r\n";
        assert_ne!(commitment(&[0; 32], msg), commitment(&[1; 32], msg));
        let mut h = CommitmentHasher::new(&[5; 32]);
        h.update(&msg[..7]);
        h.update(&msg[7..]);
        assert_eq!(h.finish(), commitment(&[5; 32], msg));
    }
}
