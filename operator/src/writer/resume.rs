//! How the writer opens an archive without reading its whole log, and how it knows which
//! records the log already holds.
//!
//! `state/resume.json (edge at E, filter over ids < E) + log bundles from E on + newest checkpoint
//!  -> RecordLog (root checked) + KnownIds`
//!
//! A run reads the listing of `log/` and `checkpoints/`, the newest checkpoint, the resume
//! state and the bundles from its edge on: the bundle holding the newest entry, and any unsigned
//! tail. Everything before the edge is read only when a message's id is perhaps in it (the
//! filter says so: a message archived before, or about one in 10,000 new ones), and then once
//! per run. A missing, unauthenticated or inconsistent state is never trusted: the writer reads
//! the whole log instead, as it always did.

use super::trust;
use crate::reader::StoredLog;
use crate::reader::log::{LogObjectFinding, LogObjects, TailCheck, damaged, newest_checkpoint};
use crate::store::Store;
use crate::{Error, Result};
use futures::StreamExt as _;
use mailvault_core::bundle::BUNDLE_WIDTH;
use mailvault_core::entry::{EntryBody, RecordId};
use mailvault_core::layout::RESUME_KEY;
use mailvault_core::log::RecordLog;
use mailvault_core::mac::{MacKey, MacKind};
use mailvault_core::merkle::CompactRange;
use mailvault_core::note::NoteVerifier;
use mailvault_core::resume::{IdFilter, IdKey, ResumeState};
use std::collections::HashSet;

/// Bundles read at once.
const READ_AHEAD: usize = 8;

/// The record ids the log holds, as far as the writer needs to know them.
#[derive(Debug)]
pub(crate) struct KnownIds {
    /// The resume state the run started from: the edge and a filter over the ingests before it.
    state: ResumeState,
    /// Ingests logged from the edge on: their positions and filter keys (16 bytes each, so a
    /// whole log read after a crash holds 24 bytes a record here).
    since_edge: Vec<(u64, IdKey)>,
    /// Ids certainly in the log or being stored by this run: the ingests from the edge on,
    /// every id stored this run, and every id before the edge once [`Self::load_all`] ran.
    exact: HashSet<RecordId>,
    /// Whether `exact` holds every ingest before the edge too.
    complete: bool,
    /// Dictionaries logged (by hash): from the edge on, and before it once
    /// [`Self::load_all`] ran.
    pub(crate) dictionaries: HashSet<mailvault_core::Hash>,
}

impl KnownIds {
    /// Ingests in the log, this run's included.
    pub(crate) fn count(&self) -> u64 {
        self.state.ingested + self.since_edge.len() as u64
    }

    /// Whether the log holds `id` (or this run is storing it). Reads every entry before the
    /// edge, once, if the filter cannot rule the id out.
    pub(crate) async fn contains<S: Store>(&mut self, store: &S, id: &RecordId) -> Result<bool> {
        if self.exact.contains(id) {
            return Ok(true);
        }
        if self.complete || !self.state.filter.may_contain(id.as_str()) {
            return Ok(false);
        }
        self.load_all(store).await?;
        Ok(self.exact.contains(id))
    }

    /// Notes an id this run is storing (not logged yet).
    pub(crate) fn claim(&mut self, id: RecordId) {
        self.exact.insert(id);
    }

    /// Notes an ingest logged at `index`.
    pub(crate) fn logged(&mut self, index: u64, id: &RecordId) {
        self.since_edge.push((index, IdKey::of(id.as_str())));
        self.exact.insert(id.clone());
    }

    /// Reads the ids of every ingest before the edge (the whole log's bundles up to it).
    pub(crate) async fn load_all<S: Store>(&mut self, store: &S) -> Result<()> {
        if self.complete {
            return Ok(());
        }
        let edge = self.state.edge.size();
        tracing::info!(
            entries = edge,
            "reading the log's record ids before the resume edge (a message may be archived already)"
        );
        // The versions, not the current keys: a delete marker must not hide an id (the run
        // would store and log the message again).
        let objects = LogObjects::list(store).await?.for_writer();
        let objects = &objects;
        let before_edge: Vec<Vec<String>> = objects
            .bundles()
            .iter()
            .filter(|(index, _)| index * BUNDLE_WIDTH < edge)
            .map(|(_, candidates)| candidates.clone())
            .collect();
        let mut bundles = objects.read_ahead(store, before_edge, READ_AHEAD);
        let mut findings = Vec::new();
        // Chain-checked from the first entry and matched against the edge the resume state
        // signs (its MAC): an id planted in a second version of an old bundle must not make
        // the run skip a message as archived.
        let mut records = RecordLog::new();
        while let Some((candidates, first)) = bundles.next().await {
            // The edge is vouched for by the writer's MAC on the resume state.
            let Some((_, _, entries)) = objects
                .push_bundle(store, &mut records, &candidates, first, edge, &mut findings)
                .await
                .map_err(|e| {
                    Error::Conflict(format!(
                        "reading the entries before the log's resume edge at {edge}: {e}"
                    ))
                })?
            else {
                // Short of the edge: the check below says so.
                break;
            };
            for entry in entries {
                match entry.body {
                    EntryBody::Ingest { .. } => {
                        self.exact.insert(entry.record);
                    }
                    EntryBody::Dictionary { stored_sha256, .. } => {
                        self.dictionaries.insert(stored_sha256);
                    }
                    _ => {}
                }
            }
        }
        if records.size() != edge || records.root() != self.state.edge.root() {
            return Err(damaged(&format!(
                "the log's {} entries before its resume edge at {edge} are not the ones the resume state was made from",
                records.size()
            )));
        }
        self.complete = true;
        Ok(())
    }

    /// The resume state at `edge` (a bundle boundary at or before the log's signed size): the
    /// old filter plus the ingests logged between the old edge and the new one, in a larger
    /// filter (built from every id) when the old one is full.
    pub(crate) async fn state_at<S: Store>(
        &mut self,
        store: &S,
        edge: CompactRange,
    ) -> Result<ResumeState> {
        let new: Vec<IdKey> = self
            .since_edge
            .iter()
            .filter(|(i, _)| *i < edge.size())
            .map(|&(_, key)| key)
            .collect();
        let ingested = self.state.ingested + new.len() as u64;
        let mut filter = self.state.filter.clone();
        if filter.count() + new.len() as u64 > filter.capacity() {
            self.load_all(store).await?;
            // Every known id, those past the new edge included: an id in the filter that the
            // next run also reads exactly costs nothing but a bit.
            filter = IdFilter::with_capacity(self.exact.len() as u64 * 2);
            for id in &self.exact {
                filter.insert(id.as_str());
            }
        } else {
            for key in new {
                filter.insert_key(key);
            }
        }
        Ok(ResumeState {
            edge,
            ingested,
            filter,
        })
    }
}

/// The log as the writer opens it.
pub(crate) struct Opened {
    pub log: StoredLog,
    pub known: KnownIds,
    /// The bundle object versions the entries from the edge on were read from: the writer
    /// checks its MAC on exactly these for entries it has not signed yet.
    pub bundles_read: Vec<BundleRead>,
    /// Versions of bundle keys not read (too large, unreadable, too many).
    pub findings: Vec<LogObjectFinding>,
}

/// One bundle object version a log was read from.
pub(crate) struct BundleRead {
    pub key: String,
    pub version: String,
    /// The log's size after its entries.
    pub end: u64,
}

/// Opens the log of `origin`: from the resume state when it is the writer's own and agrees
/// with the newest signed checkpoint, else from the first entry. Problems with the state are
/// reported through `unauthenticated` and cost only the full read.
pub(crate) async fn open_log<S: Store>(
    store: &S,
    origin: &str,
    key: &NoteVerifier,
    mac: &MacKey,
    unauthenticated: &mut (dyn FnMut(&str) + Send),
) -> Result<Opened> {
    // The versions, not the current keys: a delete marker over the newest checkpoint or
    // bundles must not rewind the writer (it would log again what is logged, on a fork).
    let own = mac.clone();
    let objects = LogObjects::list(store)
        .await?
        .for_writer()
        .with_tail_check(TailCheck(std::sync::Arc::new(move |key, object| {
            trust::authentic(&own, MacKind::Bundle, key, object)
        })));
    for finding in &objects.findings {
        unauthenticated(&finding.short());
    }
    let (head, skipped) = newest_checkpoint(store, &objects, origin, key).await?;
    for finding in &skipped {
        unauthenticated(&finding.short());
    }
    let signed = head.as_ref().map_or(0, |(h, _)| h.size);
    // The filter's bytes in base64 and the tree's peaks.
    let max_len = mailvault_core::resume::MAX_FILTER_BYTES * 2;
    let state = match crate::store::get_state(store, RESUME_KEY, max_len).await? {
        None => None,
        Some(object) if !trust::authentic(mac, MacKind::State, RESUME_KEY, &object) => {
            unauthenticated(RESUME_KEY);
            None
        }
        Some(object) => match ResumeState::decode(&object.bytes) {
            Ok(s) if s.edge.size() <= signed && s.edge.size().is_multiple_of(BUNDLE_WIDTH) => {
                Some(s)
            }
            Ok(_) | Err(_) => {
                unauthenticated(&format!("{RESUME_KEY} (inconsistent with the log)"));
                None
            }
        },
    };
    if let Some(state) = state {
        match read_from(store, &objects, origin, head.clone(), state).await {
            Ok(opened) => {
                for finding in &opened.findings {
                    unauthenticated(&finding.short());
                }
                return Ok(opened);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the resume state does not fit the log; reading the whole log");
                unauthenticated(&format!("{RESUME_KEY} (does not match the signed log)"));
            }
        }
    }
    let mut opened = read_from(store, &objects, origin, head, ResumeState::new()).await?;
    opened.known.complete = true;
    for finding in &opened.findings {
        unauthenticated(&finding.short());
    }
    Ok(opened)
}

/// Reads the bundles from the state's edge on and checks them, with the edge, against the
/// newest checkpoint.
async fn read_from<S: Store>(
    store: &S,
    objects: &LogObjects,
    origin: &str,
    head: Option<(mailvault_core::checkpoint::SignedHead, String)>,
    state: ResumeState,
) -> Result<Opened> {
    let edge = state.edge.size();
    if edge > 0
        && objects
            .bundles()
            .iter()
            .find(|(index, _)| index * BUNDLE_WIDTH >= edge)
            .is_none_or(|(index, _)| *index != edge / BUNDLE_WIDTH)
    {
        return Err(damaged(&format!("no log bundle starts at entry {edge}")));
    }
    let mut records = RecordLog::from_edge(&state.edge).map_err(|e| damaged(&e))?;
    let mut known = KnownIds {
        state,
        since_edge: Vec::new(),
        exact: HashSet::new(),
        complete: false,
        dictionaries: HashSet::new(),
    };
    // One bundle at a time (a few read ahead): a whole log read this way holds its tree and
    // its ids, not its bytes.
    let mut bundles = objects.read_ahead(
        store,
        objects.bundle_candidates(edge / BUNDLE_WIDTH),
        READ_AHEAD,
    );
    let mut findings = Vec::new();
    let mut bundles_read = Vec::new();
    // Vouched for: the newest checkpoint, and the edge (the writer's MAC on its resume state).
    let trusted = head.as_ref().map_or(0, |(h, _)| h.size).max(edge);
    while let Some((candidates, first)) = bundles.next().await {
        let start = records.size();
        let Some((key, version, entries)) = objects
            .push_bundle(
                store,
                &mut records,
                &candidates,
                first,
                trusted,
                &mut findings,
            )
            .await?
        else {
            break;
        };
        bundles_read.push(BundleRead {
            key,
            version,
            end: start + entries.len() as u64,
        });
        for entry in entries {
            match &entry.body {
                EntryBody::Ingest { .. } => known.logged(entry.index, &entry.record),
                EntryBody::Dictionary { stored_sha256, .. } => {
                    known.dictionaries.insert(*stored_sha256);
                }
                _ => {}
            }
        }
    }
    if let Some((h, _)) = &head
        && records.root_at(h.size) != Some(h.root)
    {
        return Err(damaged(&format!(
            "checkpoint {} does not match the stored entries",
            h.size
        )));
    }
    Ok(Opened {
        log: StoredLog::from_records(origin, records, head),
        known,
        bundles_read,
        findings,
    })
}

/// Writes the resume state (with the writer's MAC) for the log as it stands, all of it
/// signed: the edge at the start of the bundle holding the newest entry.
pub(crate) async fn save<S: Store>(
    store: &S,
    mac: &MacKey,
    records: &RecordLog,
    known: &mut KnownIds,
) -> Result<()> {
    let Some(edge) = records.resume_edge() else {
        return Ok(());
    };
    let state = known.state_at(store, edge).await?;
    let bytes = state.encode();
    let metadata = trust::tagged(mac, MacKind::State, RESUME_KEY, &bytes);
    store.put_mutable(RESUME_KEY, bytes, &metadata).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;
    use crate::writer::tests::{message, retention};
    use crate::writer::{Outcome, RecordWriter};
    use mailvault_core::note::NoteSigner;
    use mailvault_core::{Hash, UnixTime};

    const ORIGIN: &str = "mailvault.io/test/resume";
    const NOW: UnixTime = UnixTime(1_795_836_120);

    fn key() -> NoteSigner {
        NoteSigner::new(ORIGIN, &[5; 32]).unwrap()
    }

    async fn run(
        store: &FsStore,
        messages: impl IntoIterator<Item = u32>,
    ) -> RecordWriter<'_, FsStore> {
        let mut w = RecordWriter::open(store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        for n in messages {
            w.write(message(n), NOW).await.unwrap();
        }
        w.finish().await.unwrap();
        w
    }

    /// Overwrites every log bundle before `edge` with bytes that are no bundle (they stay
    /// listed): a run that reads one fails. Returns what to put back.
    fn spoil_bundles_before(
        dir: &std::path::Path,
        edge: u64,
    ) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut spoiled = Vec::new();
        for index in 0..edge / BUNDLE_WIDTH {
            let key = mailvault_core::layout::bundle_key(index, BUNDLE_WIDTH);
            let path = dir.join("objects").join(&key);
            spoiled.push((path.clone(), std::fs::read(&path).unwrap()));
            std::fs::write(&path, b"not a bundle").unwrap();
        }
        spoiled
    }

    #[tokio::test]
    async fn a_resumed_run_reads_only_from_its_edge_unless_a_message_may_be_archived_already() {
        let dir = std::env::temp_dir().join(format!("mailvault-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FsStore::new(&dir);
        // 700 records: bundles 0 and 1 are full, 2 holds the newest entries.
        run(&store, 0..700).await;
        let spoiled = spoil_bundles_before(&dir, 512);

        // No new mail: the run opens, signs nothing new and finishes without bundles 0 and 1.
        let quiet = run(&store, []).await;
        assert_eq!(quiet.log_head().records, 700);
        assert_eq!(quiet.log_head().size, 700);
        assert_eq!(quiet.summary().unauthenticated_total, 0);
        drop(quiet);

        // New mail: stored and signed without them too.
        let mut fresh = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        assert_eq!(
            fresh.write(message(5000), NOW).await.unwrap(),
            Outcome::Stored
        );
        assert_eq!(fresh.checkpoint().await.unwrap(), Some(701));
        // A message of the newest bundle is known without them.
        assert!(matches!(
            fresh.write(message(650), NOW).await.unwrap(),
            Outcome::AlreadyArchived(_)
        ));
        // One archived long ago may be in the filter: the run reads the ids before the edge,
        // and here they are gone.
        let err = fresh.write(message(3), NOW).await.unwrap_err().to_string();
        assert!(err.contains("resume edge at 512"), "{err}");
        drop(fresh);

        for (path, bytes) in spoiled {
            std::fs::write(path, bytes).unwrap();
        }
        let mut again = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        assert!(matches!(
            again.write(message(3), NOW).await.unwrap(),
            Outcome::AlreadyArchived(_)
        ));
        assert_eq!(
            again.write(message(5001), NOW).await.unwrap(),
            Outcome::Stored
        );
        again.finish().await.unwrap();
        assert_eq!(again.log_head().records, 702);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_resume_state_that_is_not_the_writers_or_does_not_fit_the_log_is_not_used() {
        let dir = std::env::temp_dir().join(format!("mailvault-resume-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FsStore::new(&dir);
        run(&store, 0..300).await;
        let good = store
            .get(RESUME_KEY, None, u64::MAX)
            .await
            .unwrap()
            .unwrap();
        let state = ResumeState::decode(&good.bytes).unwrap();
        assert_eq!(state.edge.size(), 256);
        assert_eq!(state.ingested, 256);

        // Without the MAC: reported, and the whole log is read instead.
        store
            .put_mutable(
                RESUME_KEY,
                good.bytes.clone(),
                &crate::store::ObjectMetadata::new(),
            )
            .await
            .unwrap();
        let w = run(&store, []).await;
        assert_eq!(w.summary().unauthenticated, [RESUME_KEY]);
        assert_eq!(w.log_head().records, 300);
        drop(w);

        // With the MAC but wrong peaks (as a writer bug would leave it): the signed root does
        // not come out, so it is not used either.
        let mut wrong = state.clone();
        let mut other = CompactRange::new();
        for i in 0..256u32 {
            other.push(Hash::of(&i.to_le_bytes()));
        }
        wrong.edge = other;
        let bytes = wrong.encode();
        let metadata = trust::tagged(&key().mac_key(), MacKind::State, RESUME_KEY, &bytes);
        store
            .put_mutable(RESUME_KEY, bytes, &metadata)
            .await
            .unwrap();
        let mut w = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        assert!(
            w.summary().unauthenticated[0].contains("does not match the signed log"),
            "{:?}",
            w.summary()
        );
        assert!(matches!(
            w.write(message(7), NOW).await.unwrap(),
            Outcome::AlreadyArchived(_)
        ));
        w.finish().await.unwrap();
        // The run wrote a good state again.
        let w = run(&store, []).await;
        assert_eq!(w.summary().unauthenticated_total, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_filter_grows_with_the_archive_and_keeps_every_id() {
        let dir =
            std::env::temp_dir().join(format!("mailvault-resume-grow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FsStore::new(&dir);
        run(&store, 0..3000).await;
        run(&store, 3000..6000).await;
        let state = ResumeState::decode(
            &store
                .get(RESUME_KEY, None, u64::MAX)
                .await
                .unwrap()
                .unwrap()
                .bytes,
        )
        .unwrap();
        assert_eq!(state.edge.size(), 5888);
        assert_eq!(state.ingested, 5888);
        assert!(
            state.filter.capacity() >= 8192,
            "{}",
            state.filter.capacity()
        );
        assert!((0..6000).all(|n| {
            let id = mailvault_core::record::record_id(ORIGIN, &message(n).identity);
            state.filter.may_contain(id.as_str())
        }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
