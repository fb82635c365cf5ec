//! One archive run: configuration in, outcome out. The CLI (`mailvault archive`) and the
//! `MailboxArchive` reconciler both call [`archive_mailbox`]; neither assembles a run itself.
//!
//! `MailboxRun -> RecordWriter::open (store first) -> ImapSource::connect -> sync -> finish -> RunOutcome`
//!
//! The store is opened before the mailbox is touched, so a bucket without Object Lock is
//! refused first. Whatever was stored before a failure is logged and checkpointed by the same
//! run (the failure carries that partial summary), and the run marker says the run ended.

use crate::lifecycle::apply::LifecycleOutcome;
use crate::source::imap::sync::{Cursor, FolderFilter, FolderReport, sync_mailbox};
use crate::source::imap::{CaBundle, Credentials, ImapConfig, ImapSource, TlsMode};
use crate::source::local::{self, LocalSource};
use crate::spool::Spool;
use crate::store::{Store, StoreInfo};
use crate::writer::{LogHead, RecordWriter, RunSummary};
use crate::{Error, Result};
use mailvault_core::note::NoteSigner;
use mailvault_core::rules::RetentionSchedule;
use std::time::Duration;

/// A mailbox location as users write it: `imap://USER@HOST[:PORT]`. Parsed with the `url`
/// crate, so IPv6 literals (`imap://chief@[::1]:143`) and percent-encoded user names
/// (`imap://chief%40city.example@mail`) mean what they say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapLocation {
    /// Login name, percent-decoded.
    pub username: String,
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// Port, when the location names one.
    pub port: Option<u16>,
}

impl ImapLocation {
    /// Parses `imap://USER@HOST[:PORT]` (a trailing `/` is allowed, nothing else after it).
    pub fn parse(location: &str) -> Result<Self> {
        let usage = |why: &str| {
            Error::Usage(format!(
                "{location:?} is not imap://USER@HOST[:PORT] ({why})"
            ))
        };
        let url = url::Url::parse(location).map_err(|e| usage(&e.to_string()))?;
        if url.scheme() != "imap" {
            return Err(usage("the scheme must be imap"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(usage("no path, query or fragment"));
        }
        if url.password().is_some() {
            return Err(usage(
                "a password never goes in the location: use --password-file",
            ));
        }
        let username = percent_encoding::percent_decode_str(url.username())
            .decode_utf8()
            .map_err(|_| usage("the user name is not UTF-8"))?
            .into_owned();
        if username.is_empty() {
            return Err(usage("no user name"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(usage("no host")),
        };
        Ok(Self {
            username,
            host,
            port: url.port(),
        })
    }
}

/// Where to connect: host, port and TLS mode, with the one default-port rule
/// ([`TlsMode::default_port`]) applied. The CLI and the CRD both resolve through [`Self::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapServer {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
}

impl ImapServer {
    /// `port` or the TLS mode's default port.
    pub fn new(host: impl Into<String>, port: Option<u16>, tls: TlsMode) -> Self {
        Self {
            host: host.into(),
            port: port.unwrap_or(tls.default_port()),
            tls,
        }
    }

    /// A connection configuration for this server.
    pub fn config(
        self,
        username: String,
        credentials: Credentials,
        ca: Option<CaBundle>,
        insecure_plaintext: bool,
        timeout: Duration,
    ) -> ImapConfig {
        ImapConfig {
            host: self.host,
            port: self.port,
            tls: self.tls,
            ca,
            insecure_plaintext,
            username,
            credentials,
            timeout,
            max_message_bytes: crate::source::imap::DEFAULT_MAX_MESSAGE_BYTES,
            connections: crate::source::imap::DEFAULT_CONNECTIONS,
        }
    }
}

/// Everything one run from a mailbox needs besides the store.
#[derive(Debug)]
pub struct MailboxRun {
    /// The mailbox and how to reach it.
    pub imap: ImapConfig,
    /// Which folders.
    pub folders: FolderFilter,
    /// The checkpoint signing key; its name is the log's origin.
    pub signer: NoteSigner,
    /// The retention rules each record of the run is classified by.
    pub retention: RetentionSchedule,
    /// Where large messages go while they are fetched and compressed.
    pub spool: Spool,
    /// Legal holds in force for the archive besides those in its store (the operator's
    /// `LegalHold`s); applied after ingest, to the new records and wherever a hold changed.
    pub holds: Vec<crate::lifecycle::holds::GivenHold>,
    /// The longest the run may read mail, from its start (`None`: no cap). At the cap it
    /// stops between two messages (or a step's wait is cut short): what it stored is logged,
    /// the cursor moves only past folders read to the end, and it fails with
    /// [`Error::RunDurationExceeded`].
    pub max_duration: Option<std::time::Duration>,
}

/// What a run reports while it goes, for a progress display.
#[derive(Debug, Clone, Copy)]
pub enum RunEvent<'a> {
    /// The store passed its preflight and the log was read back.
    Opened {
        /// What the store guarantees.
        store: &'a StoreInfo,
    },
    /// A message of `folder` was fetched.
    Fetched {
        /// Folder.
        folder: &'a str,
        /// Messages fetched from it so far.
        fetched: u64,
        /// Messages it holds.
        exists: u32,
    },
}

/// Receives [`RunEvent`]s.
pub type RunEvents<'a> = &'a mut (dyn FnMut(RunEvent<'_>) + Send);

/// What a finished run found.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Records archived, skipped, adopted; bytes.
    pub summary: RunSummary,
    /// One report per folder run.
    pub reports: Vec<FolderReport>,
    /// Include globs that matched no folder: a warning for the run summary, the Event and the
    /// status.
    pub unmatched_includes: Vec<String>,
    /// The cursor as the run left it.
    pub cursor: Cursor,
    /// The log as of the run's last checkpoint.
    pub log: LogHead,
    /// An edited policy re-applied to earlier records, and the legal holds applied.
    pub lifecycle: LifecycleOutcome,
}

/// A failed run, with what it archived before it failed (kept, logged and checkpointed).
#[derive(Debug)]
pub struct RunFailure {
    /// Why it failed.
    pub error: Error,
    /// What it archived before.
    pub partial: RunSummary,
}

impl From<Error> for RunFailure {
    fn from(error: Error) -> Self {
        Self {
            error,
            partial: RunSummary::default(),
        }
    }
}

/// Runs a mailbox into `store` once: every new message of every selected folder is stored,
/// logged and checkpointed.
pub async fn archive_mailbox<S: Store>(
    store: &S,
    run: MailboxRun,
    events: RunEvents<'_>,
) -> std::result::Result<RunOutcome, RunFailure> {
    let MailboxRun {
        imap,
        folders,
        signer,
        retention,
        spool,
        holds,
        max_duration,
    } = run;
    let deadline = max_duration.map(|cap| (tokio::time::Instant::now() + cap, cap));
    let verifier =
        mailvault_core::note::NoteVerifier::parse(&signer.verifier_key()).map_err(Error::from)?;
    let schedule = retention.clone();
    // The store first: a bucket without Object Lock is refused before the mailbox is touched.
    let mut writer = open_writer(store, signer, retention, spool, events).await?;
    let before = writer.log_head().size;
    let synced = without_parser_panics(async {
        let mut source = ImapSource::connect(&imap).await?;
        if let Some((at, cap)) = deadline {
            source.set_deadline(at, cap);
        }
        let reports = sync_mailbox(
            &mut source,
            &mut writer,
            store,
            &folders,
            crate::unix_now,
            &mut |folder, fetched, exists| {
                events(RunEvent::Fetched {
                    folder,
                    fetched,
                    exists,
                });
            },
        )
        .await?;
        Ok((source, reports))
    })
    .await;
    // Then the records already in the log: an edited policy, legal holds (the new records too).
    let synced = match synced {
        // Boxed: the lifecycle's future is large and rare.
        Ok(done) => Box::pin(crate::lifecycle::apply::apply(
            store,
            &mut writer,
            &verifier,
            Some(&schedule),
            &holds,
            before,
        ))
        .await
        .map(|lifecycle| (done, lifecycle)),
        Err(e) => Err(e),
    };
    // Whatever was stored before a failure is logged and checkpointed now (not adopted by a
    // later run), and the run marker says the run ended, unless a store itself failed: its
    // record may be in the store all the same, and the next run adopts it.
    let finished = writer.finish().await;
    let partial = writer.summary().clone();
    let ((source, synced), lifecycle) = synced.map_err(|error| RunFailure {
        error,
        partial: partial.clone(),
    })?;
    finished.map_err(|error| RunFailure { error, partial })?;
    // The run is complete; a failed LOGOUT changes nothing in the archive.
    if let Err(e) = source.logout().await {
        tracing::debug!(user = %imap.username, error = %e, "IMAP logout failed after a complete run");
    }
    Ok(RunOutcome {
        summary: writer.summary().clone(),
        reports: synced.folders,
        unmatched_includes: synced.unmatched_includes,
        cursor: Cursor::load(store, writer.mac()).await?.0,
        log: writer.log_head(),
        lifecycle,
    })
}

/// Opens the archive signed by `signer` (its name is the log's origin) for writing, and says
/// so.
async fn open_writer<'s, S: Store>(
    store: &'s S,
    signer: NoteSigner,
    retention: RetentionSchedule,
    spool: Spool,
    events: RunEvents<'_>,
) -> Result<RecordWriter<'s, S>> {
    let origin = signer.name().to_owned();
    let writer = RecordWriter::open(store, &origin, signer, retention, crate::unix_now())
        .await?
        .with_spool(spool);
    events(RunEvent::Opened {
        store: writer.store_info(),
    });
    Ok(writer)
}

/// Runs a local source (`mbox:FILE`, `maildir:DIR`, `eml:DIR`) into `store` once, one message
/// at a time. `progress` sees the count so far and the total when the source knows it.
pub async fn archive_local<S: Store>(
    store: &S,
    from: &str,
    signer: NoteSigner,
    retention: RetentionSchedule,
    spool: Spool,
    events: RunEvents<'_>,
    progress: &mut (dyn FnMut(usize, Option<usize>) + Send),
) -> Result<(RunSummary, LifecycleOutcome)> {
    let verifier = mailvault_core::note::NoteVerifier::parse(&signer.verifier_key())?;
    let schedule = retention.clone();
    let LocalSource {
        mut messages,
        total,
    } = local::open(from, &spool)?;
    let mut writer = open_writer(store, signer, retention, spool, events).await?;
    let before = writer.log_head().size;
    let mut n = 0usize;
    loop {
        // Reading messages is blocking file I/O: a batch per hand-off to the blocking pool.
        let (rest, batch) = tokio::task::spawn_blocking(move || {
            let batch = local::read_ahead(&mut messages);
            (messages, batch)
        })
        .await
        .map_err(|e| Error::Source(format!("reading {from}: {e}")))?;
        messages = rest;
        if batch.is_empty() {
            break;
        }
        for msg in batch {
            writer.write(msg?, crate::unix_now()).await?;
            n += 1;
            progress(n, total);
        }
    }
    // The holds in the store's state hold the new records too; an edited policy is re-applied.
    let lifecycle =
        crate::lifecycle::apply::apply(store, &mut writer, &verifier, Some(&schedule), &[], before)
            .await;
    writer.finish().await?;
    Ok((writer.summary().clone(), lifecycle?))
}

/// Runs the IMAP part of a run, turning a panic into an error of the run.
///
/// The IMAP response parser (imap-proto 0.17, under async-imap) panics on some bytes a server
/// can send — `* OK [UNSEEN 1]` followed by a non-UTF-8 byte slices a string inside a
/// character (found by `make fuzz`, target `imap_response`). A server must not be able to take
/// the process down, or, in the operator, every other archive with it. The writer is not
/// touched by the code that panics (the parser runs inside the IMAP stream's poll), so the run
/// ends as after any IMAP error: what was stored is logged and checkpointed, the cursor does
/// not move past it.
async fn without_parser_panics<T>(
    imap_part: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(imap_part).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(Error::imap(
                format!(
                    "the IMAP server sent a response mailvault's IMAP parser could not handle \
                     (it failed with: {}); the run stopped, nothing after it was archived",
                    what.chars().take(200).collect::<String>()
                ),
                crate::error::Retry::Transient,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ImapSpec;

    fn loc(s: &str) -> ImapLocation {
        ImapLocation::parse(s).unwrap()
    }

    #[test]
    fn locations_parse_with_ipv6_and_percent_encoding() {
        assert_eq!(
            loc("imap://chief@[::1]:143"),
            ImapLocation {
                username: "chief".into(),
                host: "::1".into(),
                port: Some(143),
            }
        );
        assert_eq!(
            loc("imap://chief%40city.example@mail.city.example/"),
            ImapLocation {
                username: "chief@city.example".into(),
                host: "mail.city.example".into(),
                port: None,
            }
        );
        assert_eq!(
            loc("imap://r%C3%A9ception@127.0.0.1:1143").username,
            "réception"
        );
        assert_eq!(loc("imap://u@127.0.0.1:1143").host, "127.0.0.1");
        for bad in [
            "imap://mail.example:993",
            "imap://u@:993",
            "imap://u@host:99999",
            "imaps://u@host",
            "imap://u:secret@host",
            "imap://u@host/INBOX",
            "u@host:993",
        ] {
            assert!(ImapLocation::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_port_follows_the_tls_mode() {
        assert_eq!(ImapServer::new("h", None, TlsMode::Required).port, 993);
        assert_eq!(ImapServer::new("h", None, TlsMode::StartTls).port, 143);
        assert_eq!(ImapServer::new("h", None, TlsMode::Disabled).port, 143);
        assert_eq!(
            ImapServer::new("h", Some(1143), TlsMode::Required).port,
            1143
        );
        assert_eq!(TlsMode::default(), TlsMode::Required);
    }

    /// `mailvault archive --from imap://… --imap-tls X` and a `MailboxArchive` with the same
    /// host, port and `tls: X` connect to the same place in the same way.
    #[test]
    fn the_cli_and_the_crd_give_the_same_answer() {
        use clap::ValueEnum as _;
        for (cli_tls, crd_tls) in [
            (None, None),
            (Some("required"), Some("Required")),
            (Some("starttls"), Some("StartTLS")),
            (Some("disabled"), Some("Disabled")),
        ] {
            for port in [None, Some(1143u16)] {
                let url = match port {
                    Some(p) => format!("imap://chief@[::1]:{p}"),
                    None => "imap://chief@[::1]".to_owned(),
                };
                let location = loc(&url);
                let tls = cli_tls
                    .map(|t| TlsMode::from_str(t, false).unwrap())
                    .unwrap_or_default();
                let from_cli = ImapServer::new(location.host, location.port, tls);

                let mut spec = serde_json::json!({
                    "host": "::1",
                    "username": "chief",
                    "passwordSecretRef": {"name": "imap", "key": "password"},
                });
                if let Some(t) = crd_tls {
                    spec["tls"] = t.into();
                }
                if let Some(p) = port {
                    spec["port"] = p.into();
                }
                let spec: ImapSpec = serde_json::from_value(spec).unwrap();
                let from_crd = ImapServer::new(spec.host.clone(), spec.port, spec.tls);
                assert_eq!(from_cli, from_crd, "{url} {cli_tls:?}");
                assert_eq!(spec.effective_port(), from_crd.port);
            }
        }
    }
}
