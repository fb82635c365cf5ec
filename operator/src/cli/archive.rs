//! `mailvault archive`: flags in, [`mailvault::run`] called, a summary printed.

use super::StoreArgs;
use clap::Args;
use mailvault::core::note::NoteSigner;
use mailvault::core::retention::Period;
use mailvault::core::rules::RetentionSchedule;
use mailvault::run::{
    ImapLocation, ImapServer, MailboxRun, RunEvent, RunFailure, archive_local, archive_mailbox,
};
use mailvault::source::imap::sync::FolderFilter;
use mailvault::source::imap::{CaBundle, Credentials, ImapConfig, TlsMode};
use mailvault::spool::Spool;
use mailvault::store::AnyStore;
use mailvault::writer::RunSummary;
use mailvault::{Error, Result};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Flags of `mailvault archive`.
#[derive(Args)]
pub struct ArchiveArgs {
    /// Source: imap://USER@HOST[:PORT], mbox:FILE, maildir:DIR or eml:DIR.
    #[arg(long)]
    from: String,
    /// Store: file:DIR or s3://bucket/prefix.
    #[arg(long)]
    to: String,
    /// Signing key written by `mailvault keygen`; its name is the log's origin.
    #[arg(long)]
    key: PathBuf,
    /// Record series of the archived messages (a citation of the retention schedule item),
    /// when there is no --policy.
    #[arg(long, default_value = "unclassified")]
    series: String,
    /// Retention period, ISO 8601 (P3Y, P18M, P30D) or Permanent, counted from archiving,
    /// when there is no --policy.
    #[arg(long, default_value = "Permanent")]
    retain: String,
    /// A RetentionPolicy YAML document (the resource the operator reads): each message
    /// takes the first rule that matches it, else the default rule.
    #[arg(long, conflicts_with_all = ["series", "retain"])]
    policy: Option<PathBuf>,
    /// Directory where messages larger than 4 MiB are spooled while they are fetched and
    /// compressed (default: the system's temporary directory).
    #[arg(long, env = "MAILVAULT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Spool space the run keeps itself within (suffixes KiB, MiB, GiB). Half is for the first
    /// 4 MiB pieces of large messages waiting while a folder is fetched (past it a first piece
    /// is fetched again later), half for records being compressed and stored, where a message
    /// takes about twice its size (itself and its compressed copy): so at least four times
    /// --max-message-size.
    #[arg(long, value_parser = parse_size, default_value = "4GiB")]
    max_spool_size: u64,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    imap: ImapArgs,
}

/// How to read an IMAP source.
#[derive(Args, Clone, Default)]
pub struct ImapArgs {
    /// IMAP: file holding the password (default: $MAILVAULT_IMAP_PASSWORD). Never a flag
    /// value, which would show in `ps`.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// IMAP: file holding an OAuth2 bearer token, for AUTHENTICATE XOAUTH2.
    #[arg(long)]
    oauth2_token_file: Option<PathBuf>,
    /// IMAP: CA bundle (PEM) to trust instead of the public web roots.
    #[arg(long)]
    imap_ca: Option<PathBuf>,
    /// IMAP: TLS from the first byte (default; port 993 unless the URL names one), STARTTLS,
    /// or none (loopback only, unless --insecure-plaintext; port 143 unless named). The same
    /// rule as a MailboxArchive's spec.imap.tls and port.
    #[arg(long, value_enum)]
    imap_tls: Option<TlsMode>,
    /// IMAP: allow a connection without TLS to a host that is not loopback.
    #[arg(long)]
    insecure_plaintext: bool,
    /// Folders to archive (globs, repeatable; default: every folder, Trash and Junk too).
    #[arg(long)]
    include: Vec<String>,
    /// Folders to leave out (globs, repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// IMAP: the largest message archived, in bytes (suffixes KiB, MiB, GiB). A larger one is
    /// not archived: the run names it by folder and UID and counts it as a capture gap.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    max_message_size: u64,
    /// IMAP: seconds to wait for each network step (connect, login, each answer) before the
    /// run fails.
    #[arg(long, default_value_t = 60)]
    imap_timeout: u64,
    /// IMAP: the most sessions a run reads folders over at once (1 to 16). A run opens one
    /// more for every 4 selected folders past the first 4; a server that refuses one leaves
    /// the folders to the others.
    #[arg(long, default_value_t = mailvault::source::imap::DEFAULT_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16))]
    imap_connections: usize,
    /// IMAP: the longest a run may read mail, in seconds (default: no cap). At the cap the
    /// run stops: what it stored is logged, the cursor moves only past folders read to the
    /// end, and it exits 2 saying so; the next run goes on from there.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_run_duration: Option<u64>,
}

/// `1073741824`, `512KiB`, `100MiB`, `1GiB`.
pub(crate) fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let factor: u64 = match unit {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: a size is bytes, or a number with KiB, MiB or GiB"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?}: a size is bytes, or a number with KiB, MiB or GiB"))
}

/// The schedule of an archive run: a RetentionPolicy file, or one rule made of
/// `--series/--retain` counted from archiving.
fn retention_schedule(
    policy: Option<&Path>,
    series: &str,
    retain: &str,
) -> Result<RetentionSchedule> {
    if let Some(path) = policy {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        return mailvault::lifecycle::policy_from_yaml(&text);
    }
    let period: Period = retain
        .parse()
        .map_err(|e: mailvault::core::retention::PeriodParseError| Error::Usage(e.to_string()))?;
    RetentionSchedule::single(series.to_owned(), period)
        .map_err(|e| Error::Usage(format!("--series: {e}")))
}

/// Runs `mailvault archive`.
pub async fn run(args: ArchiveArgs) -> Result<ExitCode> {
    let spool = Spool::new(args.spool_dir.clone().unwrap_or_else(std::env::temp_dir))
        .with_max_bytes(args.max_spool_size);
    if args.from.starts_with("imap://")
        && args.imap.max_message_size.saturating_mul(4) > args.max_spool_size
    {
        return Err(Error::Usage(format!(
            "--max-spool-size {} cannot hold a message of --max-message-size {}: half the spool \
             is for messages being stored, and a message takes about twice its size there \
             (itself and its compressed copy), so the spool must be at least four times the \
             largest message; raise --max-spool-size or lower --max-message-size",
            args.max_spool_size, args.imap.max_message_size
        )));
    }
    let store = args.store.open(&args.to)?;
    let retention = retention_schedule(args.policy.as_deref(), &args.series, &args.retain)?;
    let signer = mailvault::signing_key::read_signer_key(&args.key)?;
    let terminal = std::io::stderr().is_terminal();
    if args.from.starts_with("imap://") {
        return Box::pin(archive_imap(&args, &store, signer, retention, spool)).await;
    }
    let from = args.from.clone();
    let mut events = |event: RunEvent<'_>| {
        if let RunEvent::Opened { store } = event {
            eprintln!("archiving {from} into {}", store.description);
        }
    };
    let mut progress = |n: usize, total: Option<usize>| {
        if terminal && (n % 50 == 1 || Some(n) == total) {
            match total {
                Some(total) => eprint!("\r{n}/{total}"),
                None => eprint!("\r{n}"),
            }
            let _ = std::io::stderr().flush();
        }
    };
    let (summary, lifecycle) = Box::pin(archive_local(
        &store,
        &args.from,
        signer,
        retention,
        spool,
        &mut events,
        &mut progress,
    ))
    .await?;
    if terminal {
        eprintln!();
    }
    print_summary(&summary);
    for line in lifecycle.summary() {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `mailvault archive --from imap://…`: one run of [`archive_mailbox`], its folders and summary
/// printed.
async fn archive_imap(
    args: &ArchiveArgs,
    store: &AnyStore,
    signer: NoteSigner,
    retention: RetentionSchedule,
    spool: Spool,
) -> Result<ExitCode> {
    let terminal = std::io::stderr().is_terminal();
    let imap = imap_config(&args.from, &args.imap)?;
    let who = format!("{}@{}", imap.username, imap.host);
    let run = MailboxRun {
        imap,
        folders: FolderFilter {
            include: args.imap.include.clone(),
            exclude: args.imap.exclude.clone(),
        },
        signer,
        retention,
        spool,
        // The holds `mailvault hold` placed are in the store; they hold the new records too.
        holds: Vec::new(),
        max_duration: args
            .imap
            .max_run_duration
            .map(std::time::Duration::from_secs),
    };
    let mut events = |event: RunEvent<'_>| match event {
        RunEvent::Opened { store } => {
            eprintln!("archiving {who} into {}", store.description);
        }
        RunEvent::Fetched {
            folder,
            fetched,
            exists,
        } => {
            if terminal && (fetched.is_multiple_of(50) || fetched == u64::from(exists)) {
                eprint!("\r{folder}: {fetched}/{exists}   ");
                let _ = std::io::stderr().flush();
            }
        }
    };
    let outcome = Box::pin(archive_mailbox(store, run, &mut events)).await;
    if terminal {
        eprintln!();
    }
    let outcome = outcome.map_err(|RunFailure { error, partial }| {
        if partial.archived + partial.adopted > 0 {
            eprintln!(
                "mailvault: {} records archived before the failure are kept and logged",
                partial.archived + partial.adopted
            );
        }
        error
    })?;
    for r in &outcome.reports {
        let mut notes = Vec::new();
        if r.unchanged {
            notes.push("unchanged".to_owned());
        }
        if r.uid_validity_reset {
            notes.push("UIDVALIDITY changed: re-read in full".to_owned());
        }
        let expunged = r.capture_gaps - r.refused.len() as u64;
        if expunged > 0 {
            notes.push(format!(
                "{expunged} message(s) expunged before they could be captured"
            ));
        }
        if r.gone_before_first_read > 0 {
            notes.push(format!(
                "{} UID(s) below UIDNEXT already empty when first read (expunged before archiving began; not capture gaps)",
                r.gone_before_first_read
            ));
        }
        if !r.refused.is_empty() {
            notes.push(format!(
                "{} message(s) over --max-message-size not archived (capture gaps)",
                r.refused.len()
            ));
        }
        println!(
            "  {:<30} {:>7} fetched  {}",
            r.folder,
            r.fetched,
            notes.join("; ")
        );
    }
    print_summary(&outcome.summary);
    for line in outcome.lifecycle.summary() {
        println!("{line}");
    }
    for r in &outcome.reports {
        for (uid, bytes) in &r.refused {
            println!(
                "warning: {} UID {uid} not archived: at least {bytes} bytes, over --max-message-size {} (a capture gap; raise the limit and delete state/cursor.json to re-read the folder)",
                r.folder, args.imap.max_message_size
            );
        }
        for fault in &r.server_faults {
            println!("warning: IMAP server fault in {}: {fault}", r.folder);
        }
    }
    for glob in &outcome.unmatched_includes {
        println!("warning: --include {glob:?} matched no folder of the mailbox");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &RunSummary) {
    println!(
        "archived {} new records ({} already archived, {} recovered from an interrupted run); {} bytes of mail stored as {} bytes",
        s.archived, s.skipped, s.adopted, s.original_bytes, s.stored_bytes
    );
    println!(
        "{} archived with unparseable headers (stored byte for byte under the default rule)",
        s.unparseable
    );
    if let Some(warning) = s.unauthenticated_warning() {
        println!("warning: {warning}");
    }
    // Says whether the store is far away: the stores in flight follow its round trip.
    if let Some(fastest) = s.fastest_store {
        println!(
            "stores in flight: at most {} (limit up to {}; fastest record store {:.1} ms)",
            s.stores_in_flight_peak,
            s.stores_in_flight_limit,
            fastest.as_secs_f64() * 1e3
        );
    }
    // For sizing a pod's memory: what this run needed at its peak.
    if let Some(peak) = mailvault::peak_memory_bytes() {
        println!("peak memory (RSS): {} MiB", peak.div_ceil(1024 * 1024));
    }
}

/// An `imap://` location and the IMAP flags as a connection configuration.
fn imap_config(location: &str, args: &ImapArgs) -> Result<ImapConfig> {
    let location = ImapLocation::parse(location)?;
    let read_secret = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|source| Error::Io {
                path: p.display().to_string(),
                source,
            })
    };
    let credentials = match (&args.oauth2_token_file, &args.password_file) {
        (Some(t), _) => Credentials::OAuth2Token(read_secret(t)?),
        (None, Some(p)) => Credentials::Password(read_secret(p)?),
        (None, None) => {
            Credentials::Password(std::env::var("MAILVAULT_IMAP_PASSWORD").map_err(|_| {
                Error::Usage(
                    "IMAP password: pass --password-file or set MAILVAULT_IMAP_PASSWORD".into(),
                )
            })?)
        }
    };
    let ca = args
        .imap_ca
        .as_deref()
        .map(CaBundle::from_file)
        .transpose()?;
    let mut config = ImapServer::new(
        location.host,
        location.port,
        args.imap_tls.unwrap_or_default(),
    )
    .config(
        location.username,
        credentials,
        ca,
        args.insecure_plaintext,
        std::time::Duration::from_secs(args.imap_timeout.max(1)),
    );
    config.max_message_bytes = args.max_message_size;
    config.connections = args.imap_connections;
    Ok(config)
}
