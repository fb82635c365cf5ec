//! The sidecar: what travels with each record's object and dies with it (source folder,
//! UIDVALIDITY/UID, internal date, flags at capture, the salt that opens the logged commitment).
//!
//! `Sidecar <-> ObjectMetadata (ASCII pairs: S3 user metadata, or a JSON file)`

use crate::store::ObjectMetadata;
use mailvault_core::entry::RetainUntil;
use mailvault_core::record::SALT_LEN;
use mailvault_core::{Hash, UnixTime};

/// The sidecar mailvault writes with each record (S3 user metadata, or a JSON file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// Record series.
    pub series: String,
    /// Retain-until as logged.
    pub retain_until: RetainUntil,
    /// The salted commitment.
    pub commitment: Hash,
    /// The salt (dies with the record).
    pub salt: [u8; SALT_LEN],
    /// Source folder.
    pub folder: String,
    /// Source identity.
    pub identity: String,
    /// Where the source read it.
    pub location: String,
    /// Source's internal date.
    pub internal_date: Option<UnixTime>,
    /// Flags at capture.
    pub flags: Vec<String>,
    /// Length of the original message.
    pub original_size: u64,
}

/// Percent-encodes bytes outside printable ASCII (S3 metadata values must be ASCII).
fn meta_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push_str(&hex::encode_upper([b]));
        }
    }
    out
}

fn meta_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = char::from(it.next()?).to_digit(16)?;
            let lo = char::from(it.next()?).to_digit(16)?;
            bytes.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

impl Sidecar {
    /// As metadata pairs (keys are S3-safe, values ASCII).
    pub fn to_map(&self) -> ObjectMetadata {
        let mut m = ObjectMetadata::new();
        m.insert("mailvault-series".into(), meta_encode(&self.series));
        m.insert(
            "mailvault-retain-until".into(),
            self.retain_until.to_string(),
        );
        m.insert("mailvault-commitment".into(), self.commitment.to_hex());
        m.insert("mailvault-salt".into(), hex::encode(self.salt));
        m.insert("mailvault-folder".into(), meta_encode(&self.folder));
        m.insert("mailvault-identity".into(), meta_encode(&self.identity));
        m.insert("mailvault-location".into(), meta_encode(&self.location));
        if let Some(t) = self.internal_date {
            m.insert("mailvault-internal-date".into(), t.to_string());
        }
        m.insert("mailvault-flags".into(), meta_encode(&self.flags.join(" ")));
        m.insert(
            "mailvault-original-size".into(),
            self.original_size.to_string(),
        );
        m
    }

    /// Reads the metadata pairs back.
    pub fn from_map(m: &ObjectMetadata) -> std::result::Result<Self, String> {
        let get = |k: &str| m.get(k).ok_or_else(|| format!("no {k}"));
        let text = |k: &str| get(k).and_then(|v| meta_decode(v).ok_or_else(|| format!("bad {k}")));
        let retain_until = match get("mailvault-retain-until")?.as_str() {
            "permanent" => RetainUntil::Permanent,
            t => RetainUntil::Until(UnixTime::parse(t).map_err(|e| e.to_string())?),
        };
        let mut salt = [0u8; SALT_LEN];
        hex::decode_to_slice(get("mailvault-salt")?, &mut salt).map_err(|e| e.to_string())?;
        let flags = text("mailvault-flags")?;
        Ok(Self {
            series: text("mailvault-series")?,
            retain_until,
            commitment: Hash::from_hex(get("mailvault-commitment")?).map_err(|e| e.to_string())?,
            salt,
            folder: text("mailvault-folder")?,
            identity: text("mailvault-identity")?,
            location: text("mailvault-location")?,
            internal_date: m
                .get("mailvault-internal-date")
                .map(|t| UnixTime::parse(t))
                .transpose()
                .map_err(|e| e.to_string())?,
            flags: flags
                .split(' ')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect(),
            original_size: get("mailvault-original-size")?
                .parse()
                .map_err(|_| "bad mailvault-original-size".to_owned())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_round_trips_through_ascii_metadata() {
        let s = Sidecar {
            series: "MO-GS-003 Correspondence".into(),
            retain_until: RetainUntil::Until(UnixTime(1_900_000_000)),
            commitment: Hash::of(b"c"),
            salt: [7; SALT_LEN],
            folder: "Archiv/Ü 100%".into(),
            identity: "Archiv/Ü\u{0}abc".into(),
            location: "imap:Archiv/Ü;UIDVALIDITY=1;UID=2".into(),
            internal_date: Some(UnixTime(1_800_000_000)),
            flags: vec!["\\Seen".into(), "$Label1".into()],
            original_size: 42,
        };
        let m = s.to_map();
        assert!(
            m.values()
                .all(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
        );
        assert_eq!(Sidecar::from_map(&m).unwrap(), s);
    }
}
