//! Signing keys for checkpoints: generation and the files they live in.

use crate::{Error, Result};
use mailvault_core::note::NoteSigner;
use std::io::Write as _;
use std::path::Path;

/// Generates a new Ed25519 checkpoint signing key named `name` (the log's origin).
pub fn generate(name: &str) -> Result<NoteSigner> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(Error::Random)?;
    Ok(NoteSigner::new(name, &seed)?)
}

/// Writes the secret signer key to `path`, readable by its owner only, refusing to overwrite.
pub fn write_signer_key(path: &Path, signer: &NoteSigner) -> Result<()> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    writeln!(file, "{}", signer.to_key_string()).map_err(io)
}

/// Reads a signer key written by [`write_signer_key`].
pub fn read_signer_key(path: &Path) -> Result<NoteSigner> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(NoteSigner::from_key_string(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ_and_survive_a_file() {
        let dir = std::env::temp_dir().join(format!("mailvault-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        let _ = std::fs::remove_file(&path);
        let a = generate("mailvault.io/t").unwrap();
        let b = generate("mailvault.io/t").unwrap();
        assert_ne!(a.verifier_key(), b.verifier_key());
        write_signer_key(&path, &a).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "the secret key must be readable by its owner only"
            );
        }
        assert!(
            write_signer_key(&path, &b).is_err(),
            "must not overwrite a key"
        );
        assert_eq!(
            read_signer_key(&path).unwrap().verifier_key(),
            a.verifier_key()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
