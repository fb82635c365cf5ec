//! What the writer trusts of what it finds in the store: only objects carrying its own MAC.
//!
//! `MAC key (from the signing key) -> mailvault-mac on sidecars, bundles, state objects`
//!
//! Anyone with write access to the bucket can leave objects that look like the writer's. The
//! writer signs or adopts only what it can authenticate as its own: every object it will later
//! trust carries user metadata `mailvault-mac`, the hex of a tag ([`MacKey::tag`]) over
//! `object key || "\n" || bytes`, where the bytes are
//! - a log bundle: the bundle object's bytes ([`MacKind::Bundle`]);
//! - a state object (run marker, cursor): the object's bytes ([`MacKind::State`]);
//! - a record: its canonical sidecar text ([`MacKind::Sidecar`]), every other `mailvault-*`
//!   metadata pair sorted by key as `key=value\n` lines (values exactly as stored), which
//!   includes `mailvault-stored-sha256` and `mailvault-stored-size` of the stored bytes.

use crate::store::{ObjectDigest, ObjectMetadata, StoredObject};
use mailvault_core::Hash;
use mailvault_core::mac::{MacKey, MacKind};

/// The metadata field holding the writer's MAC.
pub const MAC_FIELD: &str = "mailvault-mac";
/// Sidecar field: SHA-256 (hex) of the stored (compressed) bytes.
pub const STORED_SHA256_FIELD: &str = "mailvault-stored-sha256";
/// Sidecar field: length of the stored bytes.
pub const STORED_SIZE_FIELD: &str = "mailvault-stored-size";
/// Most unauthenticated keys a run lists by name (the count is always exact).
pub const REPORTED_KEYS: usize = 20;

fn input(key: &str, bytes: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(key.len() + 1 + bytes.len());
    input.extend_from_slice(key.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(bytes);
    input
}

/// The metadata that authenticates `bytes` stored under `key` as an object of `kind`.
pub fn tagged(mac: &MacKey, kind: MacKind, key: &str, bytes: &[u8]) -> ObjectMetadata {
    let mut m = ObjectMetadata::new();
    m.insert(MAC_FIELD.into(), mac.tag(kind, &input(key, bytes)).to_hex());
    m
}

/// Whether `object`, read from `key`, carries a valid MAC of `kind` over its bytes.
pub fn authentic(mac: &MacKey, kind: MacKind, key: &str, object: &StoredObject) -> bool {
    object
        .sidecar
        .get(MAC_FIELD)
        .and_then(|t| Hash::from_hex(t).ok())
        .is_some_and(|tag| mac.check(kind, &input(key, &object.bytes), &tag))
}

/// The canonical text of a sidecar: every `mailvault-*` pair but the MAC, sorted by key, as
/// `key=value\n` lines.
fn canonical_sidecar(sidecar: &ObjectMetadata) -> Vec<u8> {
    let mut text = Vec::new();
    // A BTreeMap iterates sorted by key.
    for (k, v) in sidecar {
        if k.starts_with("mailvault-") && k != MAC_FIELD {
            text.extend_from_slice(k.as_bytes());
            text.push(b'=');
            text.extend_from_slice(v.as_bytes());
            text.push(b'\n');
        }
    }
    text
}

/// Adds the stored bytes' hash and length and the MAC to a record's sidecar, as PUT under `key`.
pub fn seal_sidecar(
    mac: &MacKey,
    key: &str,
    sidecar: &mut ObjectMetadata,
    stored_sha256: &Hash,
    stored_size: u64,
) {
    sidecar.insert(STORED_SHA256_FIELD.into(), stored_sha256.to_hex());
    sidecar.insert(STORED_SIZE_FIELD.into(), stored_size.to_string());
    sidecar.remove(MAC_FIELD);
    let tag = mac.tag(MacKind::Sidecar, &input(key, &canonical_sidecar(sidecar)));
    sidecar.insert(MAC_FIELD.into(), tag.to_hex());
}

/// Whether a record read from `key` (streamed: its hash, length and sidecar) is the writer's
/// own: its sidecar's MAC is valid and its bytes are the ones the sidecar names.
pub fn authentic_record(mac: &MacKey, key: &str, object: &ObjectDigest) -> bool {
    let sidecar = &object.sidecar;
    let mac_ok = sidecar
        .get(MAC_FIELD)
        .and_then(|t| Hash::from_hex(t).ok())
        .is_some_and(|tag| {
            mac.check(
                MacKind::Sidecar,
                &input(key, &canonical_sidecar(sidecar)),
                &tag,
            )
        });
    mac_ok
        && sidecar.get(STORED_SHA256_FIELD).map(String::as_str)
            == Some(object.sha256.to_hex().as_str())
        && sidecar.get(STORED_SIZE_FIELD).map(String::as_str)
            == Some(object.len.to_string().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> MacKey {
        MacKey::derive(&[7; 32])
    }

    fn object(bytes: &[u8], sidecar: ObjectMetadata) -> StoredObject {
        StoredObject {
            bytes: bytes.to_vec(),
            sidecar,
            version_id: "v".into(),
        }
    }

    fn digest(bytes: &[u8], sidecar: ObjectMetadata) -> ObjectDigest {
        ObjectDigest {
            sha256: Hash::of(bytes),
            len: bytes.len() as u64,
            sidecar,
            version_id: "v".into(),
            lock: None,
        }
    }

    #[test]
    fn a_tag_binds_key_kind_and_bytes() {
        let m = tagged(&mac(), MacKind::State, "state/run.json", b"{}");
        assert!(authentic(
            &mac(),
            MacKind::State,
            "state/run.json",
            &object(b"{}", m.clone())
        ));
        assert!(!authentic(
            &mac(),
            MacKind::State,
            "state/cursor.json",
            &object(b"{}", m.clone())
        ));
        assert!(!authentic(
            &mac(),
            MacKind::Bundle,
            "state/run.json",
            &object(b"{}", m.clone())
        ));
        assert!(!authentic(
            &mac(),
            MacKind::State,
            "state/run.json",
            &object(b"{ }", m)
        ));
        assert!(!authentic(
            &mac(),
            MacKind::State,
            "state/run.json",
            &object(b"{}", ObjectMetadata::new())
        ));
        let other = MacKey::derive(&[8; 32]);
        let forged = tagged(&other, MacKind::State, "state/run.json", b"{}");
        assert!(!authentic(
            &mac(),
            MacKind::State,
            "state/run.json",
            &object(b"{}", forged)
        ));
    }

    #[test]
    fn a_sealed_sidecar_binds_every_field_and_the_stored_bytes() {
        let bytes = b"stored bytes";
        let mut sidecar = ObjectMetadata::new();
        sidecar.insert("mailvault-series".into(), "MO-GS-003".into());
        sidecar.insert("mailvault-retain-until".into(), "1800000000".into());
        seal_sidecar(
            &mac(),
            "records/a",
            &mut sidecar,
            &Hash::of(bytes),
            bytes.len() as u64,
        );
        assert!(authentic_record(
            &mac(),
            "records/a",
            &digest(bytes, sidecar.clone())
        ));
        assert!(!authentic_record(
            &mac(),
            "records/b",
            &digest(bytes, sidecar.clone())
        ));
        assert!(!authentic_record(
            &mac(),
            "records/a",
            &digest(b"other bytes!", sidecar.clone())
        ));
        let mut longer = sidecar.clone();
        longer.insert("mailvault-retain-until".into(), "1900000000".into());
        assert!(!authentic_record(
            &mac(),
            "records/a",
            &digest(bytes, longer)
        ));
        let mut added = sidecar;
        added.insert("mailvault-rule".into(), "x".into());
        assert!(!authentic_record(
            &mac(),
            "records/a",
            &digest(bytes, added)
        ));
    }
}
