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

use super::{FOLDERS_PER_CONNECTION, Fetched, FolderState, ImapSource, ListedFolder, Rest};
use crate::source::SourceMessage;
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

/// Largest cursor read: a few hundred bytes a folder, for a hundred thousand folders.
const MAX_CURSOR_LEN: u64 = 64 * 1024 * 1024;

impl Cursor {
    /// Reads the cursor. A missing one is empty (everything is re-read, nothing duplicated);
    /// so is one without the writer's MAC (an edited cursor could skip messages): the second
    /// value is then `true`, for the run to report it.
    pub async fn load<S: Store>(store: &S, mac: &MacKey) -> Result<(Self, bool)> {
        let Some(object) = crate::store::get_state(store, CURSOR_KEY, MAX_CURSOR_LEN).await? else {
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
    /// UIDs below UIDNEXT that held no message when the folder was first read (no cursor for
    /// it yet): mail expunged before archiving began. Not capture gaps —
    /// nothing mailvault could have kept — but a fact about the mailbox a records officer may
    /// be asked about.
    pub gone_before_first_read: u64,
    /// Whether UIDVALIDITY changed since the last run (the folder was re-read in full).
    pub uid_validity_reset: bool,
    /// Whether the folder was unchanged and skipped without fetching.
    pub unchanged: bool,
    /// Messages not archived because they are larger than the size limit (UID, at least this
    /// many bytes); also counted in `capture_gaps`.
    pub refused: Vec<(u32, u64)>,
    /// What the server said that cannot be true (UIDNEXT going back, UIDVALIDITY changing
    /// within the run, one UID for two messages), in words; the run kept every message it was
    /// sent and claimed nothing it could not prove.
    pub server_faults: Vec<String>,
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
///
/// Folders are read over up to [`ImapSource::max_connections`] sessions at once (one more for
/// every [`FOLDERS_PER_CONNECTION`] selected folders; `imap` is the first), each message handed
/// to the one writer as it arrives. A folder's cursor moves once its last message is logged
/// and checkpointed, whichever session read it.
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
    let unmatched_includes = glob::unmatched(&filter.include, &displayed)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let jobs: std::collections::VecDeque<FolderJob> = listed
        .into_iter()
        .filter(|f| glob::selected(&filter.include, &filter.exclude, &f.display))
        .enumerate()
        .map(|(position, listed)| FolderJob {
            position,
            previous: cursor.folders.get(&listed.name).cloned(),
            listed,
        })
        .collect();
    let sessions = sessions_for(jobs.len(), imap.max_connections());
    let spool = writer.spool().clone();
    let shared = Shared {
        jobs: std::sync::Mutex::new(jobs),
        assembling: tokio::sync::Mutex::new(()),
        waiting: std::sync::Mutex::new(0),
        handed: std::sync::Arc::new(tokio::sync::Semaphore::new(handed_budget_kib(&spool))),
        spool,
        max_bytes: imap.max_message_bytes(),
    };
    let (to_writer, from_readers) = tokio::sync::mpsc::channel::<Fetch>(2 * sessions);
    let readers = read_folders(imap, sessions, &shared, to_writer);
    let writing = write_fetched(
        writer,
        store,
        &mac,
        &mut cursor,
        from_readers,
        &now,
        progress,
    );
    // The writer goes on until every reader has stopped (what was fetched is logged); a
    // failed writer drops its receiver, which stops the readers.
    let (written, read) = futures::future::join(writing, readers).await;
    let mut done = written?;
    read?;
    done.sort_by_key(|(position, _)| *position);
    Ok(SyncReport {
        folders: done.into_iter().map(|(_, report)| report).collect(),
        unmatched_includes,
    })
}

/// Writes what the sessions hand over, in the order it arrives, until every session has
/// stopped: each message, and for each folder read to its end a checkpoint and then its cursor
/// (so the cursor never runs ahead of the log). The receiver is owned here: a writer that fails
/// drops it, which stops the sessions (their sends fail) instead of leaving them waiting on a
/// full channel. Returns each finished folder's report and its place among the selected ones.
async fn write_fetched<S: Store>(
    writer: &mut RecordWriter<'_, S>,
    store: &S,
    mac: &MacKey,
    cursor: &mut Cursor,
    mut from_readers: tokio::sync::mpsc::Receiver<Fetch>,
    now: &impl Fn() -> UnixTime,
    progress: Progress<'_>,
) -> Result<Vec<(usize, FolderReport)>> {
    let mut done: Vec<(usize, FolderReport)> = Vec::new();
    while let Some(fetch) = from_readers.recv().await {
        match fetch {
            Fetch::Message {
                folder,
                fetched,
                exists,
                msg,
                taken,
                room,
            } => {
                writer.write(msg, now()).await?;
                // Counted by the writer now; the room it took in the hand-over is free.
                drop(room);
                // The reader waits for this before it puts the next large message
                // together; it may have stopped meanwhile.
                if let Some(taken) = taken {
                    let _ = taken.send(());
                }
                progress(&folder, fetched, exists);
            }
            Fetch::FolderDone {
                position,
                listed,
                state,
                report,
                uid_next,
            } => {
                writer.checkpoint().await?;
                match uid_next {
                    Some(uid_next) => {
                        cursor.folders.insert(
                            listed.name.clone(),
                            FolderCursor {
                                uid_validity: state.uid_validity,
                                uid_next,
                                highest_modseq: state.highest_modseq,
                            },
                        );
                    }
                    // The server's UIDs cannot be trusted for this folder: the next run
                    // re-reads it in full (content identities keep it from storing
                    // anything twice).
                    None => {
                        cursor.folders.remove(&listed.name);
                    }
                }
                // After the checkpoint, so the cursor never runs ahead of the log.
                cursor.save(store, mac).await?;
                let mut report = report;
                report.folder = listed.display;
                done.push((position, report));
            }
        }
    }
    Ok(done)
}

/// Sessions a run reads `folders` selected folders over: one, and one more for every
/// [`FOLDERS_PER_CONNECTION`] past the first few, at most `max`.
fn sessions_for(folders: usize, max: usize) -> usize {
    (1 + folders.saturating_sub(1) / FOLDERS_PER_CONNECTION).clamp(1, max.max(1))
}

/// Memory the messages handed from the sessions to the writer may take while they wait for it
/// (in KiB, a semaphore's permits): two whole messages of the largest kept in memory, whatever
/// the number of sessions. A message is counted by the writer once it takes it.
fn handed_budget_kib(spool: &Spool) -> usize {
    2 * spool.memory_limit().div_ceil(1024).max(1)
}

/// A selected folder waiting for a session.
struct FolderJob {
    /// Its place among the selected folders (reports keep the listing's order).
    position: usize,
    listed: ListedFolder,
    /// Its cursor from the last run.
    previous: Option<FolderCursor>,
}

/// What the sessions reading folders share.
struct Shared {
    /// Folders no session has taken yet.
    jobs: std::sync::Mutex<std::collections::VecDeque<FolderJob>>,
    /// Held while a session puts large messages together from pieces: the spool holds one
    /// at a time (see [`Spool::max_bytes`]).
    assembling: tokio::sync::Mutex<()>,
    /// Spool bytes of first pieces waiting in all sessions ([`WaitingPieces`]).
    waiting: std::sync::Mutex<u64>,
    /// Room for messages handed to the writer and not yet taken ([`handed_budget_kib`]).
    handed: std::sync::Arc<tokio::sync::Semaphore>,
    spool: Spool,
    max_bytes: u64,
}

impl Shared {
    /// Whether no folder is left for a session to take.
    fn is_done(&self) -> bool {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    fn next_job(&self) -> Option<FolderJob> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
    }
}

/// What a session hands the writer.
enum Fetch {
    /// A message to write; `fetched` of the folder's `exists` so far (for progress). `taken`:
    /// answered once the writer has taken it (a spooled message: the session waits, so the
    /// spool holds no more than the writer accounts for).
    Message {
        folder: String,
        fetched: u64,
        exists: u32,
        msg: SourceMessage,
        taken: Option<tokio::sync::oneshot::Sender<()>>,
        /// Its room in the hand-over, given back once the writer has taken it.
        room: tokio::sync::OwnedSemaphorePermit,
    },
    /// A folder read to its end: its report and where its cursor goes (`None`: its UIDs
    /// cannot be trusted).
    FolderDone {
        position: usize,
        listed: ListedFolder,
        state: FolderState,
        report: FolderReport,
        uid_next: Option<u32>,
    },
}

/// A session's way to the writer.
struct ToWriter<'a> {
    sender: tokio::sync::mpsc::Sender<Fetch>,
    shared: &'a Shared,
}

impl ToWriter<'_> {
    /// Hands `msg` to the writer; a spooled one is waited for until the writer has taken it.
    async fn write(&self, msg: SourceMessage, state: &FolderState, fetched: u64) -> Result<()> {
        let budget = u32::try_from(handed_budget_kib(&self.shared.spool)).unwrap_or(u32::MAX);
        let kib = u32::try_from(msg.body.memory_cost().div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, budget);
        let room = self
            .shared
            .handed
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| writer_stopped())?;
        let (taken, wait) = if msg.body.spool_cost() > 0 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.sender
            .send(Fetch::Message {
                folder: state.name.clone(),
                fetched,
                exists: state.exists,
                msg,
                taken,
                room,
            })
            .await
            .map_err(|_| writer_stopped())?;
        if let Some(wait) = wait {
            wait.await.map_err(|_| writer_stopped())?;
        }
        Ok(())
    }
}

/// What a session reports when the writer is gone (the writer's own error is the run's).
fn writer_stopped() -> Error {
    Error::Conflict("the record writer stopped; the folders being read were left".into())
}

/// Reads the folders of `shared` over `first` and `sessions - 1` more sessions until none is
/// left; the first error stops every session (what they fetched is still written).
async fn read_folders(
    first: &mut ImapSource,
    sessions: usize,
    shared: &Shared,
    to_writer: tokio::sync::mpsc::Sender<Fetch>,
) -> Result<()> {
    type Reader<'r> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'r>>;
    fn abortable<'r>(
        reader: Reader<'r>,
        aborts: &mut Vec<futures::future::AbortHandle>,
    ) -> futures::future::Abortable<Reader<'r>> {
        let (handle, registration) = futures::future::AbortHandle::new_pair();
        aborts.push(handle);
        futures::future::Abortable::new(reader, registration)
    }
    let another = first.another();
    let mut aborts = Vec::new();
    let mut readers = futures::stream::FuturesUnordered::new();
    let first_reader: Reader<'_> = Box::pin(read_some(
        first,
        ToWriter {
            sender: to_writer.clone(),
            shared,
        },
    ));
    readers.push(abortable(first_reader, &mut aborts));
    for _ in 1..sessions {
        let another = another.clone();
        let to = ToWriter {
            sender: to_writer.clone(),
            shared,
        };
        let reader: Reader<'_> = Box::pin(async move {
            // The other sessions may have taken every folder meanwhile.
            if to.shared.is_done() {
                return Ok(());
            }
            // A server that refuses one more session (a limit on connections per user), or is
            // slow to open it, leaves the folders to the sessions it accepted.
            let mut session = match another.connect().await {
                Ok(session) => session,
                Err(e) => {
                    tracing::warn!(error = %e, "another IMAP session could not be opened; the folders are read over fewer");
                    return Ok(());
                }
            };
            let read = read_some(&mut session, to).await;
            if read.is_ok() {
                let limit = another.deadline().step_limit();
                let _ = tokio::time::timeout(limit, session.logout()).await;
            }
            read
        });
        readers.push(abortable(reader, &mut aborts));
    }
    drop(to_writer);
    let mut first_error = None;
    while let Some(read) = futures::StreamExt::next(&mut readers).await {
        let Ok(Err(e)) = read else { continue };
        if first_error.is_none() {
            for handle in &aborts {
                handle.abort();
            }
            first_error = Some(e);
        } else {
            // The run reports the first; the others are for the log.
            tracing::warn!(error = %e, "another IMAP session failed too");
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Takes folders from `to.shared` and reads each to its end over `imap`, until none is left.
async fn read_some(imap: &mut ImapSource, to: ToWriter<'_>) -> Result<()> {
    while let Some(job) = to.shared.next_job() {
        imap.check_deadline()?;
        let state = imap.examine(&job.listed.name).await?;
        let (report, uid_next) = sync_folder(imap, &to, &state, job.previous.as_ref()).await?;
        to.sender
            .send(Fetch::FolderDone {
                position: job.position,
                listed: job.listed,
                state,
                report,
                uid_next,
            })
            .await
            .map_err(|_| writer_stopped())?;
    }
    Ok(())
}

/// Returns the report and where the folder's cursor goes: UIDNEXT as EXAMINE announced it
/// (never past it on the strength of a UID the server sent but did not announce), or `None`
/// when the server's UIDs for the folder cannot be trusted.
async fn sync_folder(
    imap: &mut ImapSource,
    to: &ToWriter<'_>,
    state: &FolderState,
    previous: Option<&FolderCursor>,
) -> Result<(FolderReport, Option<u32>)> {
    let mut report = FolderReport {
        folder: state.name.clone(),
        fetched: 0,
        capture_gaps: 0,
        gone_before_first_read: 0,
        uid_validity_reset: false,
        unchanged: false,
        refused: Vec::new(),
        server_faults: Vec::new(),
    };
    let max_bytes = to.shared.max_bytes;
    let Some(from) = first_uid(previous, state, &mut report) else {
        report.unchanged = true;
        return Ok((report, Some(state.uid_next)));
    };
    let mut seen_below_next = 0u64;
    let mut next = from;
    // UIDs delivered in this folder's FETCH: a second message under one UID is a server fault.
    let mut delivered = std::collections::HashSet::new();
    let mut duplicated = std::collections::BTreeSet::new();
    let spool = &to.shared.spool;
    let piece = spool.memory_limit();
    // Large messages: their first piece, spooled to a file, while the folder's FETCH runs on.
    let mut large = Vec::new();
    let mut waiting = WaitingPieces::new(&to.shared.waiting, spool, max_bytes);
    if state.exists > 0 {
        let t = imap.timeout();
        let deadline = imap.deadline();
        let stream = imap.fetch_from(state, from, piece).await?;
        let mut stream = std::pin::pin!(stream);
        loop {
            deadline.check()?;
            let Ok(item) = tokio::time::timeout(deadline.step_limit(), stream.next()).await else {
                deadline.check()?;
                return Err(Error::imap(
                    format!(
                        "IMAP UID FETCH in {}: no data within {}s",
                        state.name,
                        t.as_secs()
                    ),
                    Retry::Transient,
                ));
            };
            let Some(item) = item else { break };
            let item = item?;
            let uid = match &item {
                Fetched::Whole(uid, _) => *uid,
                Fetched::Partial(meta, _) => meta.uid,
            };
            // Every message is kept (two messages under one UID are two records, told apart
            // by content), but the UID is counted once and reported.
            if !delivered.insert(uid) {
                duplicated.insert(uid);
            } else if uid < state.uid_next {
                seen_below_next += 1;
            }
            next = next.max(uid.saturating_add(1));
            match item {
                Fetched::Whole(uid, msg) => {
                    if msg.body.len() > max_bytes {
                        report.refused.push((uid, msg.body.len()));
                        continue;
                    }
                    report.fetched += 1;
                    to.write(msg, state, report.fetched).await?;
                }
                Fetched::Partial(meta, first) => {
                    if first.len() as u64 > max_bytes {
                        report.refused.push((meta.uid, first.len() as u64));
                        continue;
                    }
                    large.push((meta, waiting.keep(spool, first).await?));
                }
            }
        }
    }
    let expunged = assemble_large(imap, to, state, large, &mut report).await?;
    seen_below_next = seen_below_next.saturating_sub(expunged);
    drop(waiting);
    let counted = Counted {
        from,
        next,
        seen_below_next,
        duplicated,
        first_run: previous.is_none(),
    };
    close_folder(imap, state, counted, report).await
}

/// Fetches the rest of each large message of a folder (their first pieces in `large`) and hands
/// them to the writer. One session at a time does this (the spool's room for it is one).
/// Order within a folder does not matter: the cursor moves only after the whole folder.
/// Returns how many of them below the folder's UIDNEXT were expunged between their pieces.
async fn assemble_large(
    imap: &mut ImapSource,
    to: &ToWriter<'_>,
    state: &FolderState,
    large: Vec<(super::MessageMeta, BodyWriter)>,
    report: &mut FolderReport,
) -> Result<u64> {
    if large.is_empty() {
        return Ok(0);
    }
    let _assembling = to.shared.assembling.lock().await;
    let piece = to.shared.spool.memory_limit();
    let mut expunged = 0;
    for (meta, body) in large {
        imap.check_deadline()?;
        let uid = meta.uid;
        match imap.fetch_rest(state, meta, body, piece).await? {
            Rest::Whole(msg) => {
                report.fetched += 1;
                to.write(msg, state, report.fetched).await?;
            }
            Rest::TooLarge(at_least) => report.refused.push((uid, at_least)),
            // Expunged between its first piece and the rest: a capture gap.
            Rest::Expunged => {
                if uid < state.uid_next {
                    expunged += 1;
                }
            }
        }
    }
    Ok(expunged)
}

/// The first UID to fetch in a folder (`None`: nothing new since the last run), noting a
/// UIDVALIDITY reset or a UIDNEXT that went back in the report.
fn first_uid(
    previous: Option<&FolderCursor>,
    state: &FolderState,
    report: &mut FolderReport,
) -> Option<u32> {
    match previous {
        Some(p) if p.uid_validity == state.uid_validity => {
            // No new UID since the last run: nothing to archive, whatever HIGHESTMODSEQ says
            // (flag changes do not make new records). No FETCH either: `UID FETCH n:*` with
            // n past the last UID would return the folder's last message.
            if p.uid_next == state.uid_next {
                return None;
            }
            if state.uid_next < p.uid_next {
                // UIDs never go back under one UIDVALIDITY (RFC 3501 2.3.1.1): the server is
                // wrong about one of the two. Re-read the folder in full, as after a reset.
                report.server_faults.push(format!(
                    "UIDNEXT went back from {} to {} with UIDVALIDITY unchanged ({}); the \
                     folder was re-read in full and nothing was stored twice",
                    p.uid_next, state.uid_next, state.uid_validity
                ));
                report.uid_validity_reset = true;
                Some(1)
            } else {
                Some(p.uid_next)
            }
        }
        Some(_) => {
            report.uid_validity_reset = true;
            Some(1)
        }
        None => Some(1),
    }
}

/// First pieces of large messages waiting in the spool until a folder's FETCH ends: within
/// half the spool's cap less one largest message (the one put together from pieces after the
/// FETCH; see [`Spool::max_bytes`]), counted over every session reading at once. A first piece
/// past that is dropped and the message fetched again from byte 0: one more piece on the wire,
/// never more disk. What a folder kept is given back when it is dropped (its messages are then
/// with the writer, which accounts for them).
struct WaitingPieces<'a> {
    /// Held by every session's waiting pieces.
    all: &'a std::sync::Mutex<u64>,
    /// Held by this folder's.
    held: u64,
    budget: u64,
}

impl<'a> WaitingPieces<'a> {
    fn new(all: &'a std::sync::Mutex<u64>, spool: &Spool, max_message_bytes: u64) -> Self {
        Self {
            all,
            held: 0,
            budget: (spool.max_bytes() / 2).saturating_sub(max_message_bytes),
        }
    }

    /// The writer a message's rest is fetched into: holding its first piece, spooled, if that
    /// fits; else empty, so the whole message is fetched again from byte 0.
    async fn keep(&mut self, spool: &Spool, first: Vec<u8>) -> Result<BodyWriter> {
        let len = first.len() as u64;
        {
            let mut all = self
                .all
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *all + len > self.budget {
                return Ok(spool.writer());
            }
            *all += len;
        }
        self.held += len;
        spill(spool, first).await
    }
}

impl Drop for WaitingPieces<'_> {
    fn drop(&mut self) {
        let mut all = self
            .all
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *all = all.saturating_sub(self.held);
    }
}

/// What a folder's FETCH counted, for [`close_folder`].
struct Counted {
    /// The first UID asked for.
    from: u32,
    /// The UID after the highest one delivered.
    next: u32,
    /// Distinct UIDs below the announced UIDNEXT that were delivered and not expunged.
    seen_below_next: u64,
    /// UIDs under which more than one message was delivered.
    duplicated: std::collections::BTreeSet<u32>,
    /// No cursor for the folder before this run.
    first_run: bool,
}

/// A folder's capture gaps and server faults, and where its cursor goes (see
/// [`sync_folder`]).
async fn close_folder(
    imap: &mut ImapSource,
    state: &FolderState,
    counted: Counted,
    mut report: FolderReport,
) -> Result<(FolderReport, Option<u32>)> {
    let Counted {
        from,
        next,
        seen_below_next,
        duplicated,
        first_run,
    } = counted;
    // Refused messages were never kept: capture gaps, wherever their UID is. UIDs announced
    // since the last run that the FETCH did not deliver (or that were expunged between
    // pieces) are gaps too: expunged before capture.
    let refused_below_next = report
        .refused
        .iter()
        .filter(|(uid, _)| *uid < state.uid_next)
        .count() as u64;
    report.capture_gaps = report.refused.len() as u64;
    let announced = u64::from(state.uid_next.saturating_sub(from));
    if !first_run && !report.uid_validity_reset {
        let archived_below_next = seen_below_next.saturating_sub(refused_below_next);
        report.capture_gaps += announced
            .saturating_sub(archived_below_next)
            .saturating_sub(refused_below_next);
    } else if first_run {
        // Read from UID 1 for the first time: a UID below UIDNEXT without a message was
        // expunged before mailvault first looked (servers assign UIDs in order, never twice).
        // After a UIDVALIDITY reset neither count is given: a missing UID there may as well be
        // mail archived under the old numbering and expunged since.
        report.gone_before_first_read = announced.saturating_sub(seen_below_next);
    }
    if !duplicated.is_empty() {
        report.server_faults.push(format!(
            "the server sent two or more different messages under UID {}; each was kept as its \
             own record",
            duplicated
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // The folder must still be the one the UIDs were read from.
    let mut announced_after = None;
    if report.fetched > 0 || !report.refused.is_empty() {
        let after = imap.examine(&state.name).await?;
        if after.uid_validity != state.uid_validity {
            report.server_faults.push(format!(
                "UIDVALIDITY changed from {} to {} during the run: every message fetched is \
                 kept, and the folder is re-read in full next run (nothing is stored twice)",
                state.uid_validity, after.uid_validity
            ));
            return Ok((report, None));
        }
        announced_after = Some(after.uid_next);
    }
    // The cursor moves past the highest UID fetched, but never past a UIDNEXT the server
    // announced (at the start, or when examined again after the FETCH): mail that arrived during
    // the run and was fetched is not fetched again, and a UID the server invented cannot make
    // the cursor skip UIDs it will really use. A server that announces no UIDNEXT: the UID
    // after the highest one fetched.
    let announced = announced_after
        .unwrap_or(state.uid_next)
        .max(state.uid_next);
    let uid_next = if announced > 0 {
        next.clamp(state.uid_next, announced)
    } else {
        next
    };
    Ok((report, Some(uid_next)))
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

#[cfg(test)]
mod tests {
    use super::sessions_for;

    #[test]
    fn one_more_session_for_every_four_folders_past_the_first_four() {
        for (folders, max, sessions) in [
            (0, 4, 1),
            (1, 4, 1),
            (4, 4, 1),
            (5, 4, 2),
            (8, 4, 2),
            (9, 4, 3),
            (13, 4, 4),
            (1000, 4, 4),
            (1000, 16, 16),
            (11, 3, 3),
            (11, 1, 1),
            (11, 0, 1),
        ] {
            assert_eq!(
                sessions_for(folders, max),
                sessions,
                "{folders} folders, max {max}"
            );
        }
    }
}
