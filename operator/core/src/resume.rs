//! What a writer keeps so that a run resumes in O(log n): the Merkle tree's right edge at a
//! bundle boundary, and a filter over the ids of every record ingested before it.
//!
//! `log (entries 0..E) -> ResumeState { E, peaks, ingested, IdFilter } --state/resume--> next run:
//!  edge + bundles from E on -> RecordLog; root checked against the newest signed checkpoint`
//!
//! Nothing here is trusted on its own: the peaks are checked by recomputing a signed
//! checkpoint's root from them and the entries after them (a wrong peak gives another root),
//! and the object carries the writer's MAC (the count and the filter are not covered by any
//! root). A state that fails either check is ignored and the writer reads the whole log, as a
//! run without one does.
//!
//! The filter answers "certainly never ingested" or "perhaps ingested" for a record id, with
//! no false "never": a message whose id it has never seen is stored without reading the log;
//! one it may have seen makes the writer read every id once (exact) before deciding. With
//! [`BITS_PER_ID`] bits an id the false-positive rate is about 1 in 10,000.

use crate::Hash;
use crate::merkle::CompactRange;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Filter bits per id of capacity: 20 bits and [`HASHES`] hashes give ~1e-4 false positives.
pub const BITS_PER_ID: u64 = 20;
/// Bit positions set per id.
pub const HASHES: u32 = 14;
/// Capacity of a new filter; it doubles when it fills.
pub const INITIAL_CAPACITY: u64 = 4096;
/// Largest filter accepted when read back (a 100-million-id archive's): every size read from
/// the store has a cap.
pub const MAX_FILTER_BYTES: u64 = 256 * 1024 * 1024;

/// A Bloom filter over record ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdFilter {
    capacity: u64,
    count: u64,
    bits: Vec<u8>,
}

impl IdFilter {
    /// An empty filter for at least `capacity` ids.
    pub fn with_capacity(capacity: u64) -> Self {
        let capacity = capacity.max(INITIAL_CAPACITY).next_power_of_two();
        let bytes = usize::try_from(capacity * BITS_PER_ID / 8).unwrap_or(usize::MAX);
        Self {
            capacity,
            count: 0,
            bits: vec![0; bytes],
        }
    }

    /// Ids it was sized for.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Ids added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether it holds more ids than it was sized for (its false-positive rate is rising).
    pub fn is_full(&self) -> bool {
        self.count > self.capacity
    }

    fn positions(&self, key: IdKey) -> impl Iterator<Item = u64> {
        let IdKey(h1, h2) = key;
        let m = self.bits.len() as u64 * 8;
        (0..u64::from(HASHES)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m.max(1))
    }

    /// Adds an id.
    pub fn insert(&mut self, id: &str) {
        self.insert_key(IdKey::of(id));
    }

    /// Adds an id by its key.
    pub fn insert_key(&mut self, key: IdKey) {
        if self.bits.is_empty() {
            return;
        }
        let positions: Vec<u64> = self.positions(key).collect();
        for p in positions {
            if let Some(byte) = self
                .bits
                .get_mut(usize::try_from(p / 8).unwrap_or(usize::MAX))
            {
                *byte |= 1 << (p % 8);
            }
        }
        self.count += 1;
    }

    /// False if the id was certainly never added; true if it may have been.
    pub fn may_contain(&self, id: &str) -> bool {
        if self.bits.is_empty() {
            return true;
        }
        self.positions(IdKey::of(id)).all(|p| {
            self.bits
                .get(usize::try_from(p / 8).unwrap_or(usize::MAX))
                .is_some_and(|byte| byte & (1 << (p % 8)) != 0)
        })
    }
}

/// What the filter keeps of an id (16 bytes, however long the id): two 64-bit hashes for
/// double hashing, from SHA-256 of the id. Ids are hashes already, but not all are mailvault's
/// (any valid id can be logged), so they are hashed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdKey(u64, u64);

impl IdKey {
    /// The key of an id.
    pub fn of(id: &str) -> Self {
        let b = Hash::of(id.as_bytes()).0;
        let h1 = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let h2 = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]) | 1;
        Self(h1, h2)
    }
}

/// Why a stored resume state was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resume state: {0}")]
pub struct ResumeError(String);

/// The writer's resume state for the entries before `edge_size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeState {
    /// The tree's right edge at a bundle boundary.
    pub edge: CompactRange,
    /// Ingest entries before the edge.
    pub ingested: u64,
    /// The ids of those ingests.
    pub filter: IdFilter,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    format: String,
    edge_size: u64,
    peaks: Vec<String>,
    ingested: u64,
    filter_capacity: u64,
    filter_count: u64,
    filter: String,
}

const FORMAT: &str = "mailvault-resume/1";

impl ResumeState {
    /// The state of an empty log.
    pub fn new() -> Self {
        Self {
            edge: CompactRange::new(),
            ingested: 0,
            filter: IdFilter::with_capacity(INITIAL_CAPACITY),
        }
    }

    /// The object's bytes (JSON; the filter in base64).
    pub fn encode(&self) -> Vec<u8> {
        let stored = Stored {
            format: FORMAT.into(),
            edge_size: self.edge.size(),
            peaks: self.edge.peaks().map(|h| h.to_hex()).collect(),
            ingested: self.ingested,
            filter_capacity: self.filter.capacity,
            filter_count: self.filter.count,
            filter: base64::engine::general_purpose::STANDARD.encode(&self.filter.bits),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Reads the object back; refuses anything inconsistent (its MAC is the caller's check).
    pub fn decode(bytes: &[u8]) -> Result<Self, ResumeError> {
        let err = |m: &str| ResumeError(m.to_owned());
        let s: Stored = serde_json::from_slice(bytes).map_err(|e| ResumeError(e.to_string()))?;
        if s.format != FORMAT {
            return Err(ResumeError(format!("unknown format {:?}", s.format)));
        }
        let peaks = s
            .peaks
            .iter()
            .map(|p| Hash::from_hex(p).map_err(|_| err("a peak is not a hash")))
            .collect::<Result<Vec<_>, _>>()?;
        let edge = CompactRange::from_peaks(s.edge_size, &peaks)
            .ok_or_else(|| err("the peaks do not fit the edge's size"))?;
        let bytes = s.filter_capacity.checked_mul(BITS_PER_ID).map(|b| b / 8);
        if !s.filter_capacity.is_power_of_two()
            || s.filter_capacity < INITIAL_CAPACITY
            || bytes.is_none_or(|b| b > MAX_FILTER_BYTES)
        {
            return Err(err("the filter's capacity is out of range"));
        }
        let bits = base64::engine::general_purpose::STANDARD
            .decode(&s.filter)
            .map_err(|_| err("the filter is not base64"))?;
        if Some(bits.len() as u64) != bytes || s.ingested > s.edge_size {
            return Err(err("the filter's size or the ingest count is inconsistent"));
        }
        Ok(Self {
            edge,
            ingested: s.ingested,
            filter: IdFilter {
                capacity: s.filter_capacity,
                count: s.filter_count,
                bits,
            },
        })
    }
}

impl Default for ResumeState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_never_says_never_for_an_id_it_holds_and_rarely_says_perhaps_otherwise() {
        let mut f = IdFilter::with_capacity(10_000);
        for i in 0..10_000 {
            f.insert(&format!("{i:032x}"));
        }
        assert!((0..10_000).all(|i| f.may_contain(&format!("{i:032x}"))));
        let false_positives = (10_000..110_000)
            .filter(|i| f.may_contain(&format!("{i:032x}")))
            .count();
        // ~1e-4 expected at capacity (16,384 here, so fewer): 100,000 trials.
        assert!(false_positives < 60, "{false_positives}");
        assert!(!f.is_full());
    }

    #[test]
    fn a_state_reads_back_and_a_damaged_one_is_refused() {
        let mut edge = CompactRange::new();
        for i in 0..512u32 {
            edge.push(Hash::of(&i.to_le_bytes()));
        }
        let mut state = ResumeState {
            edge,
            ingested: 500,
            filter: IdFilter::with_capacity(1),
        };
        state.filter.insert("abc");
        let bytes = state.encode();
        assert_eq!(ResumeState::decode(&bytes).unwrap(), state);
        let text = String::from_utf8(bytes).unwrap();
        for (from, to) in [
            ("\"edge_size\":512", "\"edge_size\":513"),
            ("\"ingested\":500", "\"ingested\":600"),
            ("\"filter_capacity\":4096", "\"filter_capacity\":8192"),
            ("mailvault-resume/1", "mailvault-resume/2"),
        ] {
            let damaged = text.replace(from, to);
            assert_ne!(damaged, text, "{from}");
            assert!(ResumeState::decode(damaged.as_bytes()).is_err(), "{from}");
        }
        assert!(ResumeState::decode(b"{}").is_err());
    }
}
