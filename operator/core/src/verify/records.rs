//! Replayed record states, kept compact: a verifier of a million-record archive holds one of
//! these per record, so strings live in one arena and the rare parts (holds, tombstones) are
//! boxed. About 150 bytes a record.

use crate::entry::{LockMode, RetainUntil};
use crate::hash::Hash;
use crate::time::UnixTime;
use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};

// The writer puts a record's object at `layout::record_key(id)`; records logged under another
// key are looked up through a side table.

/// A string in the arena.
#[derive(Clone, Copy, Debug)]
pub(super) struct StrRef {
    start: u32,
    len: u32,
}

/// Capacity of the arena was exceeded (more than 4 GiB of ids and version ids).
#[derive(Debug)]
pub(super) struct ArenaFull;

/// What the log says of one ingested record.
#[derive(Debug)]
pub(super) struct RecordState {
    pub id: StrRef,
    pub object_version: StrRef,
    /// The object key when it is not `records/<id>`.
    pub unusual_key: Option<StrRef>,
    pub stored_sha256: Hash,
    pub retain_until: RetainUntil,
    pub lock_mode: LockMode,
    pub authorized: bool,
    /// Set once the store's listing named this record's object.
    pub listed: bool,
    pub extra: Option<Box<Extra>>,
}

/// The rarely present parts of a record's history.
#[derive(Debug, Default)]
pub(super) struct Extra {
    pub holds: BTreeSet<String>,
    pub destroyed: Option<Tombstone>,
}

/// A logged destruction.
#[derive(Debug)]
pub(super) struct Tombstone {
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

    pub fn tombstone(&self) -> Option<&Tombstone> {
        self.extra.as_ref().and_then(|e| e.destroyed.as_ref())
    }
}

/// Every ingested record, by id and by object key.
#[derive(Debug, Default)]
pub(super) struct RecordTable {
    arena: String,
    /// Hash of the id to its record; ids whose hash is taken by another id go to `collisions`.
    by_hash: HashMap<u64, u32>,
    collisions: HashMap<Box<str>, u32>,
    /// Object keys other than `records/<id>`.
    unusual_keys: HashMap<Box<str>, u32>,
    pub states: Vec<RecordState>,
}

fn id_hash(id: &str) -> u64 {
    // DefaultHasher::new() has fixed keys: deterministic across runs, which the report needs.
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

impl RecordTable {
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

    /// The object key of record `i`.
    pub fn object_key(&self, i: usize) -> String {
        let s = &self.states[i];
        s.unusual_key.map_or_else(
            || crate::layout::record_key(self.get(s.id)),
            |k| self.get(k).to_owned(),
        )
    }
}
