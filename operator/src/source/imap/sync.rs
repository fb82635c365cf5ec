//! One incremental sync of an IMAP mailbox into a record writer.
//!
//! `cursor (in the store) -> per folder: EXAMINE -> unchanged? skip : UID FETCH new -> pipeline
//!  -> checkpoint -> cursor`
//!
//! The cursor (per folder: UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) is a small mutable object in
//! the store, written after each folder's checkpoint with the writer's MAC; one without a valid
//! MAC is not trusted (every folder is re-read) and is reported. It only saves work: record identities are
//! content-based, so a lost cursor or a UIDVALIDITY reset re-reads a folder without storing
//! anything twice.

use super::{Fetched, FolderState, ImapSource};
use crate::spool::{BodyWriter, Spool};
use crate::store::Store;
use crate::writer::{RecordWriter, trust};
use crate::{Error, Result, Retry};
use futures::StreamExt as _;
use mailvault_core::UnixTime;
use mailvault_core::glob;
use mailvault_core::layout::CURSOR_KEY;
use mailvault_core::mac::{MacKey, MacKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where each folder was left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Folder name to its state.
    pub folders: BTreeMap<String, FolderCursor>,
}

/// A folder's state after its last complete run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderCursor {
    /// UIDVALIDITY seen.
    pub uid_validity: u32,
    /// Every UID below this was examined.
    pub uid_next: u32,
    /// HIGHESTMODSEQ seen, when the server has CONDSTORE.
    pub highest_modseq: Option<u64>,
}

impl Cursor {
    /// Reads the cursor. A missing one is empty (everything is re-read, nothing duplicated);
    /// so is one without the writer's MAC (an edited cursor could skip messages): the second
    /// value is then `true`, for the run to report it.
    pub async fn load<S: Store>(store: &S, mac: &MacKey) -> Result<(Self, bool)> {
        let Some(object) = store.get(CURSOR_KEY, None).await? else {
            return Ok((Self::default(), false));
        };
        if !trust::authentic(mac, MacKind::State, CURSOR_KEY, &object) {
            return Ok((Self::default(), true));
        }
        serde_json::from_slice(&object.bytes)
            .map(|c| (c, false))
            .map_err(|e| {
                Error::Conflict(format!(
                    "{CURSOR_KEY} is corrupt ({e}); delete it and the next run re-reads every folder without duplicating"
                ))
            })
    }

    /// Writes the cursor, with the writer's MAC.
    pub async fn save<S: Store>(&self, store: &S, mac: &MacKey) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::encoding(CURSOR_KEY, e))?;
        let metadata = trust::tagged(mac, MacKind::State, CURSOR_KEY, &bytes);
        store.put_mutable(CURSOR_KEY, bytes, &metadata).await
    }
}

/// Which folders to archive.
#[derive(Debug, Clone, Default)]
pub struct FolderFilter {
    /// Include globs (empty: every folder, Trash and Junk too).
    pub include: Vec<String>,
    /// Exclude globs.
    pub exclude: Vec<String>,
}

/// What one folder's run found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderReport {
    /// Folder, by its display name (decoded, `/` between levels).
    pub folder: String,
    /// Message bodies fetched.
    pub fetched: u64,
    /// UIDs assigned since the last run whose messages were gone before capture (a message
    /// that arrived and was expunged in between): records that were never kept.
    pub capture_gaps: u64,
    /// Whether UIDVALIDITY changed since the last run (the folder was re-read in full).
    pub uid_validity_reset: bool,
    /// Whether the folder was unchanged and skipped without fetching.
    pub unchanged: bool,
}

/// Progress of a run, for a progress display: folder, messages fetched so far, messages the
/// folder holds.
pub type Progress<'a> = &'a mut (dyn FnMut(&str, u64, u32) + Send);

/// What a sync of a mailbox found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// One report per folder synced.
    pub folders: Vec<FolderReport>,
    /// Include globs that matched no folder of the mailbox (a typo, or a folder that is gone):
    /// a warning in the run summary, the Event and the status.
    pub unmatched_includes: Vec<String>,
}

/// Archives every selected folder of an IMAP session. Folders are selected by their display
/// names (decoded, `/` between levels); the raw name stays their identity in the cursor.
pub async fn sync_mailbox<S: Store>(
    imap: &mut ImapSource,
    writer: &mut RecordWriter<'_, S>,
    store: &S,
    filter: &FolderFilter,
    now: impl Fn() -> UnixTime,
    progress: Progress<'_>,
) -> Result<SyncReport> {
    let mac = writer.mac().clone();
    let (mut cursor, forged) = Cursor::load(store, &mac).await?;
    if forged {
        writer.report_unauthenticated(CURSOR_KEY);
    }
    let listed = imap.folders().await?;
    // Folders that no longer exist leave the cursor (it would only grow otherwise).
    let before = cursor.folders.len();
    cursor
        .folders
        .retain(|name, _| listed.iter().any(|f| &f.name == name));
    if cursor.folders.len() != before {
        cursor.save(store, &mac).await?;
    }
    let displayed: Vec<String> = listed.iter().map(|f| f.display.clone()).collect();
    let mut report = SyncReport {
        folders: Vec::new(),
        unmatched_includes: glob::unmatched(&filter.include, &displayed)
            .into_iter()
            .map(str::to_owned)
            .collect(),
    };
    for listed in listed {
        if !glob::selected(&filter.include, &filter.exclude, &listed.display) {
            continue;
        }
        let folder = listed.name;
        let state = imap.examine(&folder).await?;
        let previous = cursor.folders.get(&folder).cloned();
        let folder_report = sync_folder(
            imap,
            writer,
            &state,
            previous.as_ref(),
            &now,
            &mut *progress,
        )
        .await?;
        writer.checkpoint().await?;
        cursor.folders.insert(
            folder.clone(),
            FolderCursor {
                uid_validity: state.uid_validity,
                uid_next: folder_report.1.max(state.uid_next),
                highest_modseq: state.highest_modseq,
            },
        );
        // After the checkpoint, so the cursor never runs ahead of the log.
        cursor.save(store, &mac).await?;
        let mut folder_report = folder_report.0;
        folder_report.folder = listed.display;
        report.folders.push(folder_report);
    }
    Ok(report)
}

/// Returns the report and the UID after the highest one fetched.
async fn sync_folder<S: Store>(
    imap: &mut ImapSource,
    writer: &mut RecordWriter<'_, S>,
    state: &FolderState,
    previous: Option<&FolderCursor>,
    now: &impl Fn() -> UnixTime,
    progress: Progress<'_>,
) -> Result<(FolderReport, u32)> {
    let mut report = FolderReport {
        folder: state.name.clone(),
        fetched: 0,
        capture_gaps: 0,
        uid_validity_reset: false,
        unchanged: false,
    };
    let from = match previous {
        Some(p) if p.uid_validity == state.uid_validity => {
            // No new UID since the last run: nothing to archive, whatever HIGHESTMODSEQ says
            // (flag changes do not make new records). No FETCH either: `UID FETCH n:*` with
            // n past the last UID would return the folder's last message.
            if p.uid_next == state.uid_next {
                report.unchanged = true;
                return Ok((report, state.uid_next));
            }
            p.uid_next
        }
        Some(_) => {
            report.uid_validity_reset = true;
            1
        }
        None => 1,
    };
    let mut seen_below_next = 0u64;
    let mut next = from;
    let spool = writer.spool().clone();
    let piece = spool.memory_limit();
    // Large messages: their first piece, spooled to a file, while the folder's FETCH runs on.
    let mut large = Vec::new();
    if state.exists > 0 {
        let t = imap.timeout();
        let stream = imap.fetch_from(state, from, piece).await?;
        let mut stream = std::pin::pin!(stream);
        loop {
            let item = tokio::time::timeout(t, stream.next()).await.map_err(|_| {
                Error::imap(
                    format!(
                        "IMAP UID FETCH in {}: no data within {}s",
                        state.name,
                        t.as_secs()
                    ),
                    Retry::Transient,
                )
            })?;
            let Some(item) = item else { break };
            match item? {
                Fetched::Whole(uid, msg) => {
                    if uid < state.uid_next {
                        seen_below_next += 1;
                    }
                    next = next.max(uid.saturating_add(1));
                    writer.write(msg, now()).await?;
                    report.fetched += 1;
                    progress(&state.name, report.fetched, state.exists);
                }
                Fetched::Partial(meta, first) => {
                    next = next.max(meta.uid.saturating_add(1));
                    large.push((meta, spill(&spool, first).await?));
                }
            }
        }
    }
    // Order within a folder does not matter: the cursor moves only after the whole folder.
    for (meta, body) in large {
        let uid = meta.uid;
        // None: expunged between its first piece and the rest, a capture gap (counted below).
        if let Some(msg) = imap.fetch_rest(state, meta, body, piece).await? {
            if uid < state.uid_next {
                seen_below_next += 1;
            }
            writer.write(msg, now()).await?;
            report.fetched += 1;
            progress(&state.name, report.fetched, state.exists);
        }
    }
    if previous.is_some() && !report.uid_validity_reset {
        report.capture_gaps =
            u64::from(state.uid_next.saturating_sub(from)).saturating_sub(seen_below_next);
    }
    Ok((report, next))
}

/// Starts a large message's body in a spool file (file I/O: off the async threads).
async fn spill(spool: &Spool, first: Vec<u8>) -> Result<BodyWriter> {
    let mut writer = spool.writer();
    tokio::task::spawn_blocking(move || {
        writer.write(&first)?;
        writer.spill()?;
        Ok(writer)
    })
    .await
    .map_err(|e| Error::task("spool task", e))?
}
