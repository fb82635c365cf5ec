//! Replayed record states, kept compact: a verifier of a million-record archive holds one of
//! these per record, so strings live in one arena and the rare parts (holds, authorization,
//! tombstones) are boxed. About 160 bytes a record.
//!
//! `entry --apply--> RecordTable`: the one place where a log entry changes what the log says
//! about a record. The verifier and the destruction planner both replay through
//! [`RecordTable::apply`].

use crate::entry::{Disposition, Entry, EntryBody, LockMode, RetainUntil};
use crate::hash::Hash;
use crate::time::UnixTime;
use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};

/// A string in the arena.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StrRef {
    start: u32,
    len: u32,
}

/// Capacity of the arena was exceeded (more than 4 GiB of ids and version ids).
#[derive(Debug)]
pub(crate) struct ArenaFull;

/// What the log says of one ingested record.
#[derive(Debug)]
pub(crate) struct RecordState {
    pub id: StrRef,
    /// Position of the record's ingest entry.
    pub ingest_index: u64,
    /// When the ingest entry was logged.
    pub ingested_at: UnixTime,
    pub object_version: StrRef,
    /// The object key when it is not `records/<id>`.
    pub unusual_key: Option<StrRef>,
    pub stored_sha256: Hash,
    pub stored_size: u64,
    /// The ingest entry's `original-commitment` (the verifier opens it with the sidecar's salt).
    pub commitment: Hash,
    /// Index into the table's series names.
    pub series: u32,
    pub retain_until: RetainUntil,
    pub lock_mode: LockMode,
    pub authorized: bool,
    /// Set once the store's listing named this record's object.
    pub listed: bool,
    /// Index into the table's dictionaries of the one the ingest entry names.
    pub dictionary: Option<u32>,
    pub extra: Option<Box<Extra>>,
}

/// What the log says of one stored zstd dictionary (its `dictionary` entry).
#[derive(Debug, Clone)]
pub(crate) struct DictionaryState {
    pub sha256: Hash,
    /// Position of its `dictionary` entry.
    pub entry_index: u64,
    pub object_version: String,
    pub lock_mode: LockMode,
    pub lock_until: UnixTime,
    /// Set once the store's listing named its object.
    pub listed: bool,
}

/// The rarely present parts of a record's history.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    pub holds: BTreeSet<String>,
    /// The first `destroy-authorized` entry.
    pub authorization: Option<Authorized>,
    pub destroyed: Option<Tombstone>,
    /// Set by the verifier once a destruction certificate lists the record.
    pub certified: bool,
    /// The ingest entry's retain-until, kept once a `retention-extended` entry changed it
    /// (the sidecar keeps the ingest value).
    pub ingest_retain_until: Option<RetainUntil>,
}

/// A logged `destroy-authorized`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authorized {
    pub index: u64,
    pub at: UnixTime,
    pub retain_until: RetainUntil,
    pub disposition: Disposition,
}

/// A logged destruction.
#[derive(Debug)]
pub(crate) struct Tombstone {
    /// Position of the `destroyed` entry.
    pub index: u64,
    pub at: UnixTime,
    pub holds_at_destruction: Vec<String>,
    pub retain_until_at_destruction: RetainUntil,
}

impl RecordState {
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    pub fn holds(&self) -> Option<&BTreeSet<String>> {
        self.extra
            .as_ref()
            .map(|e| &e.holds)
            .filter(|h| !h.is_empty())
    }

    /// Applies a `retention-extended` entry: retention may only grow (a later date, or
    /// permanent). A shortening is refused, with the retention that stays.
    pub fn extend_retention(&mut self, to: RetainUntil) -> Result<(), RetainUntil> {
        if extends(self.retain_until, to) {
            if to != self.retain_until {
                let ingested = self.retain_until;
                self.extra_mut().ingest_retain_until.get_or_insert(ingested);
            }
            self.retain_until = to;
            Ok(())
        } else {
            Err(self.retain_until)
        }
    }

    /// The retain-until of the record's ingest entry.
    pub fn ingest_retain_until(&self) -> RetainUntil {
        self.extra
            .as_ref()
            .and_then(|e| e.ingest_retain_until)
            .unwrap_or(self.retain_until)
    }

    pub fn authorization(&self) -> Option<&Authorized> {
        self.extra.as_ref().and_then(|e| e.authorization.as_ref())
    }

    pub fn tombstone(&self) -> Option<&Tombstone> {
        self.extra.as_ref().and_then(|e| e.destroyed.as_ref())
    }
}

/// Whether retention `to` is at least as long as `from`: a later date, or permanent.
pub fn extends(from: RetainUntil, to: RetainUntil) -> bool {
    match (from, to) {
        (_, RetainUntil::Permanent) => true,
        (RetainUntil::Permanent, RetainUntil::Until(_)) => false,
        (RetainUntil::Until(old), RetainUntil::Until(new)) => new >= old,
    }
}

/// An entry that does not fit the story mailvault writes; the replay goes on without it (or,
/// for a tombstone without authorization, with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// The record was ingested before; the second ingest is ignored.
    DuplicateIngest,
    /// The entry names a record that was never ingested; ignored.
    UnknownRecord,
    /// A `retention-extended` entry shortens retention; ignored, the longer one stays.
    RetentionShortened {
        /// The retention that stays.
        kept: RetainUntil,
    },
    /// A tombstone without a `destroy-authorized` before it (the tombstone is kept).
    DestroyedWithoutAuthorization,
    /// The replay ran out of room for strings (more than 4 GiB of ids); the ingest is ignored.
    ArenaFull,
    /// An ingest names a dictionary no earlier `dictionary` entry logged; the record is
    /// ingested without one (and will not decompress).
    UnknownDictionary,
    /// A second `dictionary` entry for the same bytes; ignored.
    DuplicateDictionary,
}

/// Every ingested record, by id and by object key.
#[derive(Debug, Default)]
pub(crate) struct RecordTable {
    arena: String,
    /// Record series names (few distinct values), and their index.
    series_names: Vec<String>,
    series_index: HashMap<String, u32>,
    /// Hash of the id to its record; ids whose hash is taken by another id go to `collisions`.
    by_hash: HashMap<u64, u32>,
    collisions: HashMap<Box<str>, u32>,
    /// Object keys other than `records/<id>`.
    unusual_keys: HashMap<Box<str>, u32>,
    pub states: Vec<RecordState>,
    /// Logged dictionaries, in log order, and their index by hash.
    pub dictionaries: Vec<DictionaryState>,
    dictionary_index: HashMap<Hash, u32>,
}

fn id_hash(id: &str) -> u64 {
    // DefaultHasher::new() has fixed keys: deterministic across runs, which the report needs.
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

impl RecordTable {
    /// Applies one entry to the record it names.
    pub fn apply(&mut self, entry: Entry) -> Result<(), Anomaly> {
        let Entry {
            index,
            logged_at,
            record,
            body,
            ..
        } = entry;
        if let EntryBody::Dictionary {
            lock_mode,
            lock_until,
            object_version,
            stored_sha256,
            ..
        } = body
        {
            return self.add_dictionary(DictionaryState {
                sha256: stored_sha256,
                entry_index: index,
                object_version,
                lock_mode,
                lock_until,
                listed: false,
            });
        }
        let found = self.find(record.as_str());
        if let EntryBody::Ingest { .. } = body {
            if found.is_some() {
                return Err(Anomaly::DuplicateIngest);
            }
            return self.apply_ingest(index, logged_at, record.as_str(), body);
        }
        let Some(i) = found else {
            return Err(Anomaly::UnknownRecord);
        };
        let state = &mut self.states[i];
        match body {
            EntryBody::Ingest { .. } | EntryBody::Dictionary { .. } => {}
            EntryBody::HoldPlaced { hold } => {
                state.extra_mut().holds.insert(hold);
            }
            EntryBody::HoldReleased { hold } => {
                state.extra_mut().holds.remove(&hold);
            }
            EntryBody::RetentionExtended { retain_until } => {
                state
                    .extend_retention(retain_until)
                    .map_err(|kept| Anomaly::RetentionShortened { kept })?;
            }
            EntryBody::DestroyAuthorized {
                retain_until,
                disposition,
            } => {
                state.authorized = true;
                let extra = state.extra_mut();
                if extra.authorization.is_none() {
                    extra.authorization = Some(Authorized {
                        index,
                        at: logged_at,
                        retain_until,
                        disposition,
                    });
                }
            }
            EntryBody::Destroyed { .. } => {
                let authorized = state.authorized;
                let retain_until = state.retain_until;
                let extra = state.extra_mut();
                extra.destroyed = Some(Tombstone {
                    index,
                    at: logged_at,
                    holds_at_destruction: extra.holds.iter().cloned().collect(),
                    retain_until_at_destruction: retain_until,
                });
                if !authorized {
                    return Err(Anomaly::DestroyedWithoutAuthorization);
                }
            }
        }
        Ok(())
    }

    /// Applies the ingest entry of a new record.
    fn apply_ingest(
        &mut self,
        index: u64,
        logged_at: UnixTime,
        record: &str,
        body: EntryBody,
    ) -> Result<(), Anomaly> {
        let EntryBody::Ingest {
            series,
            retain_until,
            lock_mode,
            object_key,
            object_version,
            stored_sha256,
            stored_size,
            original_commitment,
            dictionary,
            header_index: _,
        } = body
        else {
            return Ok(());
        };
        // `Some(None)`: the ingest names a dictionary the log has not logged.
        let dictionary_index = dictionary.map(|d| self.dictionary_index.get(&d).copied());
        self.ingest(
            record,
            &object_key,
            &object_version,
            &series,
            |id, v, k, s| RecordState {
                id,
                ingest_index: index,
                ingested_at: logged_at,
                object_version: v,
                unusual_key: k,
                stored_sha256,
                stored_size,
                commitment: original_commitment,
                series: s,
                retain_until,
                lock_mode,
                authorized: false,
                listed: false,
                dictionary: dictionary_index.flatten(),
                extra: None,
            },
        )
        .map_err(|ArenaFull| Anomaly::ArenaFull)?;
        match dictionary_index {
            Some(None) => Err(Anomaly::UnknownDictionary),
            _ => Ok(()),
        }
    }

    /// Applies a `dictionary` entry: dictionaries are kept by hash, apart from records.
    fn add_dictionary(&mut self, state: DictionaryState) -> Result<(), Anomaly> {
        if self.dictionary_index.contains_key(&state.sha256) {
            return Err(Anomaly::DuplicateDictionary);
        }
        let i = u32::try_from(self.dictionaries.len()).map_err(|_| Anomaly::ArenaFull)?;
        self.dictionary_index.insert(state.sha256, i);
        self.dictionaries.push(state);
        Ok(())
    }

    fn ingest(
        &mut self,
        record: &str,
        object_key: &str,
        object_version: &str,
        series: &str,
        make: impl FnOnce(StrRef, StrRef, Option<StrRef>, u32) -> RecordState,
    ) -> Result<(), ArenaFull> {
        let id = self.intern(record)?;
        let version = self.intern(object_version)?;
        let unusual = if Self::is_usual_key(object_key, record) {
            None
        } else {
            Some(self.intern(object_key)?)
        };
        let series = self.series_id(series)?;
        self.insert(make(id, version, unusual, series), object_key)
    }

    fn series_id(&mut self, series: &str) -> Result<u32, ArenaFull> {
        if let Some(&i) = self.series_index.get(series) {
            return Ok(i);
        }
        let i = u32::try_from(self.series_names.len()).map_err(|_| ArenaFull)?;
        self.series_names.push(series.to_owned());
        self.series_index.insert(series.to_owned(), i);
        Ok(i)
    }

    /// The record series of record `i`.
    pub fn series(&self, i: usize) -> &str {
        self.series_names
            .get(self.states[i].series as usize)
            .map_or("", String::as_str)
    }

    pub fn intern(&mut self, s: &str) -> Result<StrRef, ArenaFull> {
        let start = u32::try_from(self.arena.len()).map_err(|_| ArenaFull)?;
        let len = u32::try_from(s.len()).map_err(|_| ArenaFull)?;
        start.checked_add(len).ok_or(ArenaFull)?;
        self.arena.push_str(s);
        Ok(StrRef { start, len })
    }

    pub fn get(&self, r: StrRef) -> &str {
        let start = r.start as usize;
        self.arena
            .get(start..start + r.len as usize)
            .unwrap_or_default()
    }

    /// The record with this id.
    pub fn find(&self, id: &str) -> Option<usize> {
        if let Some(&i) = self.collisions.get(id) {
            return Some(i as usize);
        }
        let &i = self.by_hash.get(&id_hash(id))?;
        let i = i as usize;
        (self.get(self.states[i].id) == id).then_some(i)
    }

    /// Adds a record; the caller has checked that its id is new.
    pub fn insert(&mut self, state: RecordState, object_key: &str) -> Result<(), ArenaFull> {
        let index = u32::try_from(self.states.len()).map_err(|_| ArenaFull)?;
        let id = self.get(state.id).to_owned();
        let h = id_hash(&id);
        match self.by_hash.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.insert(id.into(), index);
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
        if state.unusual_key.is_some() {
            self.unusual_keys.insert(object_key.into(), index);
        }
        self.states.push(state);
        Ok(())
    }

    /// Whether `object_key` is the usual key for record `id`.
    pub fn is_usual_key(object_key: &str, id: &str) -> bool {
        crate::layout::record_id_of(object_key) == Some(id)
    }

    /// The record whose object is at `key`.
    pub fn find_by_key(&self, key: &str) -> Option<usize> {
        if let Some(&i) = self.unusual_keys.get(key) {
            return Some(i as usize);
        }
        let i = self.find(crate::layout::record_id_of(key)?)?;
        self.states[i].unusual_key.is_none().then_some(i)
    }

    /// The dictionary logged with this hash.
    pub fn find_dictionary(&self, sha256: &Hash) -> Option<usize> {
        self.dictionary_index.get(sha256).map(|&i| i as usize)
    }

    /// The object key of record `i`.
    pub fn object_key(&self, i: usize) -> String {
        let s = &self.states[i];
        s.unusual_key.map_or_else(
            || crate::layout::record_key(self.get(s.id)),
            |k| self.get(k).to_owned(),
        )
    }
}
