//! What the lifecycle reads back of a stored record: the facts its retention rule and legal
//! holds match on, from the record itself (the log holds no message content).
//!
//! `records/<id> (the logged version) -> zstd, first PREFIX_BYTES kept -> facts::extract
//!  (folder, size, internal date from the sidecar) -> RecordFacts`
//!
//! Memory is bounded: the object is read in pieces and at most [`facts::PREFIX_BYTES`] of the
//! message are decompressed and kept; the rest of the object is read and dropped (the store
//! trait has no ranged read), so a large record costs its transfer, not its size in memory.

use super::facts::{self, Envelope};
use crate::sidecar::Sidecar;
use crate::store::Store;
use crate::{Error, Result};
use futures::StreamExt as _;
use mailvault_core::UnixTime;
use mailvault_core::lifecycle::RecordHistory;
use mailvault_core::lifecycle::holds::RecordFacts;
use std::collections::BTreeMap;

/// Records read at once.
const READS_IN_FLIGHT: usize = 8;

/// Keeps the first [`facts::PREFIX_BYTES`] written to it and drops the rest.
struct Prefix(Vec<u8>);

impl std::io::Write for Prefix {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = facts::PREFIX_BYTES.saturating_sub(self.0.len());
        self.0.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The facts of one record (its logged version), or `None` when it is gone or its bytes or
/// sidecar cannot be read as a record (the caller counts it unreadable and changes nothing).
pub async fn record_facts<S: Store>(
    store: &S,
    object_key: &str,
    object_version: &str,
    archived_at: UnixTime,
    dictionary: Option<&[u8]>,
) -> Result<Option<RecordFacts>> {
    use std::io::Write as _;
    let mut decoder = match dictionary {
        Some(d) => zstd::stream::write::Decoder::with_dictionary(Prefix(Vec::new()), d),
        None => zstd::stream::write::Decoder::new(Prefix(Vec::new())),
    }
    .map_err(|e| Error::Source(format!("zstd decoder: {e}")))?;
    let mut broken = false;
    let mut sink = |piece: &[u8]| -> Result<()> {
        // Once the prefix is full, the rest is not decompressed.
        if !broken && decoder.get_ref().0.len() < facts::PREFIX_BYTES {
            broken = decoder.write_all(piece).is_err();
        }
        Ok(())
    };
    let Some(digest) = store
        .read_streaming(object_key, Some(object_version), &mut sink)
        .await?
    else {
        return Ok(None);
    };
    if broken || decoder.flush().is_err() {
        return Ok(None);
    }
    let prefix = decoder.into_inner().0;
    let Ok(sidecar) = Sidecar::from_map(&digest.sidecar) else {
        return Ok(None);
    };
    // When it was captured, as its sidecar says; the log's time is later for a record adopted
    // after a crash (records written before the field existed have only that).
    let archived_at = digest
        .sidecar
        .get(super::ARCHIVED_AT_FIELD)
        .and_then(|t| t.parse().ok())
        .map_or(archived_at, UnixTime);
    let facts = tokio::task::spawn_blocking(move || {
        facts::extract(
            &prefix,
            Envelope {
                folder: &sidecar.folder,
                size: sidecar.original_size,
                internal_date: sidecar.internal_date,
            },
        )
    })
    .await
    .map_err(|e| Error::Source(format!("reading a record's headers failed: {e}")))?;
    Ok(Some(RecordFacts { facts, archived_at }))
}

/// [`record_facts`] of several records, a few at a time, by record id. Records that cannot be
/// read are left out; a store failure ends the read.
pub async fn facts_of<S: Store>(
    store: &S,
    records: Vec<RecordHistory<'_>>,
) -> Result<BTreeMap<String, RecordFacts>> {
    // The dictionaries the records need, each read once (few: one per training).
    let mut dictionaries = crate::dictionary::Loaded::new();
    for h in &records {
        if let Some((sha256, version)) = h.dictionary
            && !dictionaries.contains_key(&sha256)
        {
            let loaded = crate::dictionary::load(store, &sha256, version).await?;
            dictionaries.insert(sha256, loaded);
        }
    }
    let jobs: Vec<_> = records
        .into_iter()
        .map(|h| {
            // A record whose dictionary is gone cannot be read (None: left out as unreadable).
            let dictionary = h
                .dictionary
                .map(|(sha256, _)| dictionaries.get(&sha256).cloned().flatten());
            (
                h.record.to_owned(),
                h.object_key.into_owned(),
                h.object_version.to_owned(),
                h.ingested_at,
                dictionary,
            )
        })
        .collect();
    let mut reads = futures::stream::iter(jobs)
        .map(|(id, key, version, at, dictionary)| async move {
            let facts = match &dictionary {
                Some(None) => None,
                Some(Some(d)) => {
                    record_facts(store, &key, &version, at, Some(d.as_slice())).await?
                }
                None => record_facts(store, &key, &version, at, None).await?,
            };
            Ok::<_, Error>((id, facts))
        })
        .buffered(READS_IN_FLIGHT);
    let mut out = BTreeMap::new();
    while let Some(read) = reads.next().await {
        if let (id, Some(f)) = read? {
            out.insert(id, f);
        }
    }
    Ok(out)
}
