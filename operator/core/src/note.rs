//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys.
//!
//! `text \n \n — name base64(key-id || signature) \n ...`: the text is signed as is; the key id
//! is the first four bytes of `SHA-256(name || 0x0A || 0x01 || public key)`. A reader trusts a
//! set of verifier keys; signatures by other keys are ignored, a signature that claims a trusted
//! key but does not verify is an error.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

/// Algorithm byte of Ed25519 keys in signed notes.
const ALG_ED25519: u8 = 0x01;
/// Largest note accepted; checkpoints are a few hundred bytes.
pub const MAX_NOTE_LEN: usize = 64 * 1024;
/// Most signature lines read from one note.
const MAX_SIGNATURES: usize = 100;
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a note or key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note is not in signed-note form.
    #[error("malformed signed note: {0}")]
    Malformed(String),
    /// A verifier key string is not `name+keyid+base64key`.
    #[error("malformed verifier key: {0}")]
    MalformedKey(String),
    /// A signature names a trusted key but does not verify.
    #[error("bad signature by trusted key {0:?}")]
    BadSignature(String),
    /// No signature by any trusted key.
    #[error("no signature by a trusted key (signed by: {0})")]
    NoTrustedSignature(String),
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let d: [u8; 32] = h.finalize().into();
    [d[0], d[1], d[2], d[3]]
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::MalformedKey(format!(
            "key name {name:?} must be non-empty, without spaces or '+'"
        )));
    }
    Ok(())
}

/// Signs notes with one Ed25519 key under one name.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl std::fmt::Debug for NoteSigner {
    // Never print the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 secret key.
    pub fn new(name: &str, secret: &[u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(secret);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_owned(),
            key,
            id,
        })
    }

    /// Parses a signer key in the Go `note` package's form,
    /// `PRIVATE+KEY+name+keyid+base64(0x01 || 32-byte seed)`.
    pub fn from_key_string(skey: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::MalformedKey(format!("signer key: {m}"));
        let rest = skey
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("does not start with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected PRIVATE+KEY+name+keyid+base64key"));
        };
        let raw = BASE64
            .decode(key_b64)
            .map_err(|_| bad("key is not base64"))?;
        let seed: [u8; 32] = match raw.split_first() {
            Some((&ALG_ED25519, seed)) => {
                seed.try_into().map_err(|_| bad("seed is not 32 bytes"))?
            }
            _ => return Err(bad("algorithm is not Ed25519")),
        };
        let signer = Self::new(name, &seed)?;
        if hex::encode(signer.id) != id_hex {
            return Err(bad("key id does not match the name and key"));
        }
        Ok(signer)
    }

    /// The signer key in the Go `note` package's form (secret: store it like a password).
    pub fn to_key_string(&self) -> String {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.id),
            BASE64.encode(k)
        )
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key that authenticates the writer's own objects, derived from this signing key
    /// (see [`crate::mac`]): whoever can sign checkpoints can also vouch for what the writer
    /// left in the store, and nobody else can.
    pub fn mac_key(&self) -> crate::mac::MacKey {
        crate::mac::MacKey::derive(self.key.as_bytes())
    }

    /// The public verifier key, `name+keyid+base64(0x01 || public key)`.
    pub fn verifier_key(&self) -> String {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            BASE64.encode(k)
        )
    }

    /// Signs `text` (which must end with a newline) and returns the whole note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(blob)
        ))
    }
}

/// A trusted public key for reading notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key string `name+keyid+base64(0x01 || public key)`.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let vkey = vkey.trim();
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::MalformedKey(
                "expected name+keyid+base64key".into(),
            ));
        };
        check_key_name(name)?;
        let id_bytes = hex::decode(id_hex)
            .ok()
            .filter(|b| b.len() == 4 && id_hex.len() == 8)
            .ok_or_else(|| NoteError::MalformedKey("key id is not 8 hex digits".into()))?;
        let raw = BASE64
            .decode(key_b64)
            .map_err(|e| NoteError::MalformedKey(format!("key is not base64: {e}")))?;
        let (Some(&alg), Some(public)) = (raw.first(), raw.get(1..)) else {
            return Err(NoteError::MalformedKey("empty key".into()));
        };
        if alg != ALG_ED25519 {
            return Err(NoteError::MalformedKey(format!(
                "algorithm {alg:#04x} is not Ed25519 (0x01)"
            )));
        }
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| NoteError::MalformedKey("Ed25519 key is not 32 bytes".into()))?;
        if key_id(name, &public) != id_bytes.as_slice() {
            return Err(NoteError::MalformedKey(
                "key id does not match the name and key".into(),
            ));
        }
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|e| NoteError::MalformedKey(format!("not an Ed25519 point: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            id: [id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]],
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A note whose signatures were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    /// The signed text, ending with a newline.
    pub text: String,
    /// Names of the trusted keys whose signatures verified.
    pub verified_by: Vec<String>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::Malformed(
            "text must be non-empty and end with a newline".into(),
        ));
    }
    if text.chars().any(|c| c.is_ascii_control() && c != '\n') {
        return Err(NoteError::Malformed(
            "text contains a control character".into(),
        ));
    }
    if text.contains("\n\n") || text.starts_with('\n') {
        return Err(NoteError::Malformed("text contains an empty line".into()));
    }
    Ok(())
}

/// Splits a note into text and signature lines, checks form, and verifies the signatures of
/// trusted keys. Succeeds only if at least one trusted key signed and none failed.
pub fn open(note: &[u8], trusted: &[NoteVerifier]) -> Result<VerifiedNote, NoteError> {
    open_with_limit(note, trusted, MAX_NOTE_LEN)
}

/// [`open`] for notes that may be longer than [`MAX_NOTE_LEN`] (a destruction certificate
/// lists every record it covers), up to `max_len` bytes.
pub fn open_with_limit(
    note: &[u8],
    trusted: &[NoteVerifier],
    max_len: usize,
) -> Result<VerifiedNote, NoteError> {
    if note.len() > max_len {
        return Err(NoteError::Malformed(format!("longer than {max_len} bytes")));
    }
    let note = std::str::from_utf8(note).map_err(|_| NoteError::Malformed("not UTF-8".into()))?;
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| NoteError::Malformed("no empty line before the signatures".into()))?;
    let (text, sigs) = (&note[..=split], &note[split + 2..]);
    check_text(text)?;
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(NoteError::Malformed(
            "signatures must end with a newline".into(),
        ));
    };
    let mut verified_by = Vec::new();
    let mut seen = Vec::new();
    for (n, line) in sigs.split('\n').enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(NoteError::Malformed(format!(
                "more than {MAX_SIGNATURES} signatures"
            )));
        }
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| {
            NoteError::Malformed("signature line does not start with an em dash".into())
        })?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| NoteError::Malformed("signature line has no signature".into()))?;
        check_key_name(name).map_err(|_| NoteError::Malformed(format!("bad key name {name:?}")))?;
        let blob = BASE64
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not base64".into()))?;
        if blob.len() < 5 {
            return Err(NoteError::Malformed("signature too short".into()));
        }
        seen.push(name.to_owned());
        let Some(v) = trusted.iter().find(|v| v.name == name && v.id == blob[..4]) else {
            continue; // a key we do not know: ignored, as the spec says
        };
        let sig = Signature::from_slice(&blob[4..])
            .map_err(|_| NoteError::BadSignature(name.to_owned()))?;
        v.key
            .verify(text.as_bytes(), &sig)
            .map_err(|_| NoteError::BadSignature(name.to_owned()))?;
        if !verified_by.iter().any(|n| n == name) {
            verified_by.push(name.to_owned());
        }
    }
    if verified_by.is_empty() {
        let who = if seen.is_empty() {
            "nobody".to_owned()
        } else {
            seen.join(", ")
        };
        return Err(NoteError::NoTrustedSignature(who));
    }
    Ok(VerifiedNote {
        text: text.to_owned(),
        verified_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const C2SP_KEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const C2SP_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn c2sp_example_verifies() {
        let v = NoteVerifier::parse(C2SP_KEY).unwrap();
        let note = open(C2SP_NOTE.as_bytes(), &[v]).unwrap();
        assert_eq!(note.text, "This is an example message.\n");
        assert_eq!(note.verified_by, vec!["example.com/foo"]);
    }

    #[test]
    fn c2sp_example_with_a_changed_text_fails() {
        let v = NoteVerifier::parse(C2SP_KEY).unwrap();
        let forged = C2SP_NOTE.replace("example message", "exemple message");
        assert_eq!(
            open(forged.as_bytes(), &[v]),
            Err(NoteError::BadSignature("example.com/foo".into()))
        );
    }

    #[test]
    fn sign_then_open_and_unknown_keys_are_ignored() {
        let a = NoteSigner::new("mailvault.io/a", &[7; 32]).unwrap();
        let b = NoteSigner::new("mailvault.io/b", &[8; 32]).unwrap();
        let note = a.sign("hello\nworld\n").unwrap();
        // Add a second signature by a key the reader does not trust.
        let extra = b.sign("hello\nworld\n").unwrap();
        let extra_line = extra.rsplit_once("\n\n").unwrap().1;
        let both = format!("{note}{extra_line}");
        let va = NoteVerifier::parse(&a.verifier_key()).unwrap();
        let vb = NoteVerifier::parse(&b.verifier_key()).unwrap();
        assert_eq!(
            open(both.as_bytes(), std::slice::from_ref(&va))
                .unwrap()
                .verified_by,
            vec!["mailvault.io/a"]
        );
        assert!(matches!(
            open(note.as_bytes(), &[vb]),
            Err(NoteError::NoTrustedSignature(who)) if who == "mailvault.io/a"
        ));
        assert!(open(note.as_bytes(), &[va]).is_ok());
    }

    #[test]
    fn signer_key_string_round_trips() {
        let a = NoteSigner::new("mailvault.io/ns/a", &[9; 32]).unwrap();
        let b = NoteSigner::from_key_string(&a.to_key_string()).unwrap();
        assert_eq!(a.verifier_key(), b.verifier_key());
        assert!(NoteSigner::from_key_string(&a.verifier_key()).is_err());
        assert!(!format!("{a:?}").contains(&a.to_key_string()));
    }

    #[test]
    fn malformed_notes_say_why() {
        let v = NoteVerifier::parse(C2SP_KEY).unwrap();
        let cases: &[&[u8]] = &[
            b"",
            b"no signatures\n",
            b"text\n\n",
            b"text\n\n- example.com/foo AAAA\n",
            b"text\n\n\xe2\x80\x94 example.com/foo !!!\n",
            b"te\x01xt\n\n\xe2\x80\x94 example.com/foo AAAAAAAA\n",
            b"\xff\n\n",
        ];
        for c in cases {
            assert!(
                matches!(
                    open(c, std::slice::from_ref(&v)),
                    Err(NoteError::Malformed(_))
                ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn bad_verifier_keys_are_rejected() {
        for k in [
            "",
            "name+530d903a",
            "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
            "example.com/foo+530d903a+AqkyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
            "exa mple+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        ] {
            assert!(NoteVerifier::parse(k).is_err(), "{k}");
        }
    }
}
