//! Trained zstd dictionaries for small mail: when to train one, how it is stored and found
//! again, and how a record compressed with one is read back.
//!
//! `small messages -> sample -> zstd::dict::from_samples -> dictionaries/<sha256> (locked)
//!  -> dictionary entry in the log -> later ingests name it -> readers load it by the log's hash`
//!
//! Short messages share most of their bytes (headers, signatures, quoting) with each other but
//! not with themselves, so per-message zstd stores them at about 0.4 of their size; a dictionary
//! trained on the archive's own mail brings that down. The dictionary is part of the record
//! format (docs/log-format.md, "Dictionaries"): a record that names one cannot be read without
//! it, so it is stored under the same lock as the log and never destroyed.

use crate::spool::Body;
use crate::store::{RecordPut, Store};
use crate::writer::trust;
use crate::{Error, Result};
use mailvault_core::layout::{DICTIONARY_STATE_KEY, dictionary_key};
use mailvault_core::mac::{MacKey, MacKind};
use mailvault_core::{Hash, UnixTime};
use std::collections::HashMap;
use std::sync::Arc;
use zstd::bulk::Compressor;

/// Messages at most this long are "small": sampled for training and compressed with the
/// dictionary. Longer ones gain little from a dictionary and are compressed as before.
pub const SMALL_MESSAGE_MAX: usize = 16 * 1024;
/// Small messages a run samples before it trains a dictionary (when the archive has none).
pub const TRAIN_AFTER: usize = 256;
/// Sample bytes needed as well: a dictionary trained on less than a few times its own size of
/// mail is noise (so a mailbox of tiny test messages never gets one).
pub const TRAIN_MIN_BYTES: usize = 128 * 1024;
/// Most sample bytes kept.
const SAMPLE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Size of a trained dictionary.
const DICTIONARY_SIZE: usize = 32 * 1024;
/// Largest dictionary object read: what training makes is at most [`DICTIONARY_SIZE`].
pub const MAX_DICTIONARY_LEN: u64 = 1024 * 1024;
/// A trained dictionary is used only if it stores its own sample at most this fraction of
/// what plain zstd stores.
const MUST_SAVE: f64 = 0.9;
/// Small messages compressed with a dictionary, in one run, before its ratio is judged.
pub const JUDGE_AFTER: u64 = 2_000;
/// A dictionary stops paying when the run's small mail compresses with it to more than this
/// many times the ratio it had on its training sample: a new one is trained.
pub const RETRAIN_FACTOR: f64 = 1.25;
/// zstd level, as for records without a dictionary (3, zstd's default).
pub const LEVEL: i32 = 3;

/// A dictionary the writer compresses with.
#[derive(Clone)]
pub struct Dictionary {
    /// SHA-256 of its bytes: what ingest entries name and its key says.
    pub sha256: Hash,
    /// Its bytes.
    pub bytes: Arc<Vec<u8>>,
    /// stored/original of its training sample compressed with it.
    pub sample_ratio: f64,
}

/// Trains a dictionary on `samples`; `None` when zstd cannot train one or it does not save
/// enough on its own sample to be worth a format dependency.
pub fn train(samples: &[Vec<u8>]) -> Option<Dictionary> {
    let bytes = zstd::dict::from_samples(samples, DICTIONARY_SIZE).ok()?;
    let original: usize = samples.iter().map(Vec::len).sum();
    let mut plain = zstd::bulk::Compressor::new(LEVEL).ok()?;
    let mut with = zstd::bulk::Compressor::with_dictionary(LEVEL, &bytes).ok()?;
    let (mut plain_size, mut with_size) = (0usize, 0usize);
    for s in samples {
        plain_size += plain.compress(s).ok()?.len();
        with_size += with.compress(s).ok()?.len();
    }
    #[allow(clippy::cast_precision_loss, reason = "a ratio")]
    let (with_f, plain_f, original_f) = (with_size as f64, plain_size as f64, original as f64);
    if original == 0 || with_f > MUST_SAVE * plain_f {
        return None;
    }
    Some(Dictionary {
        sha256: Hash::of(&bytes),
        bytes: Arc::new(bytes),
        sample_ratio: with_f / original_f,
    })
}

/// Small messages kept for training.
#[derive(Default)]
pub struct Sampler {
    samples: Vec<Vec<u8>>,
    bytes: usize,
}

impl Sampler {
    /// Keeps a copy of a small message; true once enough are kept to train.
    pub fn add(&mut self, message: &[u8]) -> bool {
        if message.len() <= SMALL_MESSAGE_MAX && self.bytes + message.len() <= SAMPLE_BYTES_MAX {
            self.bytes += message.len();
            self.samples.push(message.to_vec());
        }
        self.samples.len() >= TRAIN_AFTER && self.bytes >= TRAIN_MIN_BYTES
    }

    /// The samples, leaving the sampler empty.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        self.bytes = 0;
        std::mem::take(&mut self.samples)
    }
}

/// How a dictionary does on this run's small mail.
#[derive(Default)]
pub struct Yield {
    original: u64,
    stored: u64,
    messages: u64,
}

impl Yield {
    /// Counts one small message compressed with the dictionary.
    pub fn add(&mut self, original: u64, stored: u64) {
        self.original += original;
        self.stored += stored;
        self.messages += 1;
    }

    /// Whether the dictionary has stopped paying: judged after [`JUDGE_AFTER`] messages, its
    /// ratio more than [`RETRAIN_FACTOR`] times its training ratio.
    pub fn stopped_paying(&self, dictionary: &Dictionary) -> bool {
        #[allow(clippy::cast_precision_loss, reason = "a ratio")]
        let ratio = self.stored as f64 / self.original.max(1) as f64;
        self.messages >= JUDGE_AFTER && ratio > RETRAIN_FACTOR * dictionary.sample_ratio
    }
}

/// The writer's pointer to the dictionary it compresses with (`state/dictionary.json`, with
/// its MAC), written once the dictionary's entry is signed: the log holds the entry whether or
/// not the run that reads the pointer reads that far back.
#[derive(serde::Serialize, serde::Deserialize)]
struct Current {
    origin: String,
    /// Hex.
    sha256: String,
    version: String,
    sample_ratio: f64,
}

/// Stores a trained dictionary under a COMPLIANCE lock until `lock_until`; returns its version.
pub async fn put<S: Store>(
    store: &S,
    mac: &MacKey,
    dictionary: &Dictionary,
    lock_until: UnixTime,
) -> Result<String> {
    let key = dictionary_key(&dictionary.sha256);
    let mut metadata = trust::tagged(
        mac,
        MacKind::State,
        &mac_name(&key, lock_until),
        &dictionary.bytes,
    );
    metadata.insert(LOCK_UNTIL_FIELD.into(), lock_until.to_string());
    store
        .put_record(RecordPut {
            key: &key,
            body: Body::Memory(dictionary.bytes.to_vec()),
            sha256: dictionary.sha256,
            retain_until: lock_until,
            sidecar: &metadata,
            companion: None,
        })
        .await
}

/// Metadata field of a dictionary object: the lock date it was PUT with (under the MAC), so a
/// dictionary stored by a run that stopped before logging it can be logged by the next.
const LOCK_UNTIL_FIELD: &str = "mailvault-lock-until";

/// What the MAC of a dictionary object is keyed by: its key and its lock date.
fn mac_name(key: &str, lock_until: UnixTime) -> String {
    format!("{key}\nlock-until {lock_until}")
}

/// A dictionary object the writer stored (its MAC checks, its bytes are the ones its key
/// names): its version and lock date. `None` for anything else.
pub fn authentic(
    mac: &MacKey,
    key: &str,
    object: &crate::store::StoredObject,
) -> Option<(Hash, UnixTime)> {
    let sha256 = mailvault_core::layout::parse_dictionary_key(key)?;
    let lock_until = UnixTime::parse(object.sidecar.get(LOCK_UNTIL_FIELD)?).ok()?;
    (Hash::of(&object.bytes) == sha256
        && trust::authentic(mac, MacKind::State, &mac_name(key, lock_until), object))
    .then_some((sha256, lock_until))
}

/// Points the writer's next runs at `dictionary` (stored as `version`, its entry signed).
pub async fn save_current<S: Store>(
    store: &S,
    mac: &MacKey,
    origin: &str,
    dictionary: &Dictionary,
    version: &str,
) -> Result<()> {
    let current = Current {
        origin: origin.to_owned(),
        sha256: dictionary.sha256.to_hex(),
        version: version.to_owned(),
        sample_ratio: dictionary.sample_ratio,
    };
    let bytes = serde_json::to_vec_pretty(&current)
        .map_err(|e| Error::encoding(DICTIONARY_STATE_KEY, e))?;
    let metadata = trust::tagged(mac, MacKind::State, DICTIONARY_STATE_KEY, &bytes);
    store
        .put_mutable(DICTIONARY_STATE_KEY, bytes, &metadata)
        .await
}

/// The dictionary the writer compressed with last, if the pointer is its own (MAC), for this
/// archive, and the dictionary's bytes are still the ones it names. Anything else: none (the
/// run trains a new one), with the key reported when it is not the writer's.
pub async fn load_current<S: Store>(
    store: &S,
    mac: &MacKey,
    origin: &str,
    unauthenticated: &mut (dyn FnMut(&str) + Send),
) -> Result<Option<Dictionary>> {
    let Some(object) = crate::store::get_state(
        store,
        DICTIONARY_STATE_KEY,
        crate::store::MAX_SMALL_STATE_LEN,
    )
    .await?
    else {
        return Ok(None);
    };
    if !trust::authentic(mac, MacKind::State, DICTIONARY_STATE_KEY, &object) {
        unauthenticated(DICTIONARY_STATE_KEY);
        return Ok(None);
    }
    let Ok(current) = serde_json::from_slice::<Current>(&object.bytes) else {
        unauthenticated(DICTIONARY_STATE_KEY);
        return Ok(None);
    };
    let Ok(sha256) = Hash::from_hex(&current.sha256) else {
        unauthenticated(DICTIONARY_STATE_KEY);
        return Ok(None);
    };
    if current.origin != origin {
        unauthenticated(DICTIONARY_STATE_KEY);
        return Ok(None);
    }
    Ok(load(store, &sha256, &current.version)
        .await?
        .map(|bytes| Dictionary {
            sha256,
            bytes,
            sample_ratio: current.sample_ratio,
        }))
}

/// A pooled zstd context for one dictionary (or none).
pub fn compressor(dictionary: Option<&Dictionary>) -> std::io::Result<Compressor<'static>> {
    match dictionary {
        Some(d) => Compressor::with_dictionary(LEVEL, &d.bytes),
        None => Compressor::new(LEVEL),
    }
}

/// Reads the logged version of the dictionary `sha256`; `None` when it is gone or its bytes are
/// not the ones the log names (a record that needs it then does not decompress).
pub async fn load<S: Store>(
    store: &S,
    sha256: &Hash,
    version: &str,
) -> Result<Option<Arc<Vec<u8>>>> {
    let object = match store
        .get(&dictionary_key(sha256), Some(version), MAX_DICTIONARY_LEN)
        .await
    {
        Ok(Some(object)) => object,
        // Not the bytes the log names (it names at most a trained dictionary's size).
        Ok(None) | Err(Error::TooLarge { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok((Hash::of(&object.bytes) == *sha256).then(|| Arc::new(object.bytes)))
}

/// Dictionaries read so far, by hash (`None`: missing or not the logged bytes).
pub type Loaded = HashMap<Hash, Option<Arc<Vec<u8>>>>;

/// Why a record that names a dictionary cannot be read.
pub fn unavailable(sha256: &Hash) -> String {
    format!(
        "it was compressed with dictionary {sha256}, which is missing or not the bytes the log names"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_mail(i: usize) -> Vec<u8> {
        format!(
            "Return-Path: <clerk{a}@town.example>\r\nReceived: from mx.town.example by \
             imap.town.example; Tue, 1 Dec 2026 10:{m:02}:00 +0000\r\nFrom: Clerk {a} \
             <clerk{a}@town.example>\r\nTo: council@town.example\r\nSubject: Minutes item {i}\r\n\
             Message-ID: <{i}.{a}@town.example>\r\nDate: Tue, 1 Dec 2026 10:{m:02}:00 +0000\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease find \
             item {i} on the agenda for the next meeting.\r\n-- \r\nTown Clerk's Office\r\n",
            a = i % 7,
            m = i % 60
        )
        .into_bytes()
    }

    #[test]
    fn a_dictionary_trained_on_short_mail_pays_and_round_trips() {
        let mut sampler = Sampler::default();
        let mut i = 0;
        while !sampler.add(&short_mail(i)) {
            i += 1;
        }
        assert!(i + 1 >= TRAIN_AFTER);
        let d = train(&sampler.take()).expect("short mail trains a dictionary that pays");
        assert!(d.sample_ratio < 0.3, "ratio {}", d.sample_ratio);
        let msg = short_mail(10_001);
        let stored = compressor(Some(&d)).unwrap().compress(&msg).unwrap();
        assert!(stored.len() < zstd::bulk::compress(&msg, LEVEL).unwrap().len());
        // Without the dictionary the frame does not decompress; with it, to the message.
        assert!(zstd::stream::decode_all(stored.as_slice()).is_err());
        let mut dec =
            zstd::stream::read::Decoder::with_dictionary(stored.as_slice(), &d.bytes).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut dec, &mut out).unwrap();
        assert_eq!(out, msg);
    }

    #[test]
    fn a_dictionary_that_stops_paying_is_retrained() {
        let d = Dictionary {
            sha256: Hash::of(b"d"),
            bytes: Arc::new(Vec::new()),
            sample_ratio: 0.2,
        };
        let mut y = Yield::default();
        for _ in 0..JUDGE_AFTER - 1 {
            y.add(100, 40);
        }
        assert!(!y.stopped_paying(&d), "judged too early");
        y.add(100, 40);
        assert!(y.stopped_paying(&d));
        let mut fine = Yield::default();
        for _ in 0..JUDGE_AFTER {
            fine.add(100, 24);
        }
        assert!(!fine.stopped_paying(&d));
    }

    #[test]
    fn large_messages_are_not_sampled() {
        let mut sampler = Sampler::default();
        assert!(!sampler.add(&vec![b'x'; SMALL_MESSAGE_MAX + 1]));
        assert!(sampler.take().is_empty());
    }
}
