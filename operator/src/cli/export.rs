//! `mailvault export`: one record's original bytes (`--record`), or a records request — every
//! record a query matches, each with its proof bundle, under a manifest signed by an export key
//! (`--from/--to/--cc/--subject/--folder/--since/--until --out DIR --signing-key`).

use super::{StoreArgs, open_log, read_public_key};
use clap::Args;
use mailvault::core::UnixTime;
use mailvault::core::records_request::{QueryCriteria, RecordQuery};
use mailvault::reader::records_request::{ExportOutcome, Found, search, write_export};
use mailvault::spool::Spool;
use mailvault::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Flags of `mailvault export`.
#[derive(Args)]
pub struct ExportArgs {
    /// Store: file:DIR or s3://bucket/prefix.
    store_location: String,
    /// Record id (one record; without it, the query flags select records).
    #[arg(long, conflicts_with_all = ["from", "to", "cc", "subject", "folder", "since", "until", "signing_key", "verify_search"])]
    record: Option<String>,
    /// The archive's public verifier key.
    #[arg(long)]
    public_key: PathBuf,
    /// Output: a file for --record (default: standard output); a new or empty directory for
    /// a records request.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Records request: From address or domain (chief@city.gov, @city.gov); repeat for any of
    /// several.
    #[arg(long)]
    from: Vec<String>,
    /// Records request: To address or domain; repeat for any of several.
    #[arg(long)]
    to: Vec<String>,
    /// Records request: Cc address or domain; repeat for any of several.
    #[arg(long)]
    cc: Vec<String>,
    /// Records request: subject regex (searched, not anchored; (?i) for any case).
    #[arg(long)]
    subject: Option<String>,
    /// Records request: folder glob; repeat for any of several.
    #[arg(long)]
    folder: Vec<String>,
    /// Records request: first message date, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (inclusive).
    #[arg(long)]
    since: Option<String>,
    /// Records request: last message date, YYYY-MM-DD (the whole day) or
    /// YYYY-MM-DDTHH:MM:SSZ (inclusive).
    #[arg(long)]
    until: Option<String>,
    /// Records request: the export key that signs the manifest (`mailvault keygen`), not the
    /// archive's signing key.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Records request: ignore the header index and read every record (slow). Needed only
    /// for records logged before their entries committed to their index (log entries of
    /// version 1 or 2), whose edited index could otherwise hide them.
    #[arg(long)]
    verify_search: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `mailvault export`.
pub async fn run(args: ExportArgs) -> Result<ExitCode> {
    match args.record.clone() {
        Some(record) => export_record(args, &record).await,
        None => records_request(args).await,
    }
}

async fn export_record(args: ExportArgs, record: &str) -> Result<ExitCode> {
    let key = read_public_key(&args.public_key)?;
    let store = args.store.open(&args.store_location)?;
    let log = open_log(&store, &key).await?;
    // Written only once the record has passed both checks, in blocks.
    let exported = mailvault::reader::export(&store, &log, record, &Spool::from_env()).await?;
    let written = match &args.out {
        Some(path) => super::create_private(path)
            .and_then(|mut f| exported.original.copy_to(&mut f).and_then(|_| f.sync_all())),
        None => exported
            .original
            .copy_to(&mut std::io::stdout().lock())
            .map(|_| ()),
    };
    written.map_err(|source| Error::Io {
        path: args
            .out
            .map_or_else(|| "standard output".into(), |p| p.display().to_string()),
        source,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A date flag: a day (its first or last second, UTC) or an instant.
fn date_flag(flag: &str, value: &str, end_of_day: bool) -> Result<UnixTime> {
    let text = if value.len() == 10 {
        format!(
            "{value}T{}Z",
            if end_of_day { "23:59:59" } else { "00:00:00" }
        )
    } else {
        value.to_owned()
    };
    UnixTime::parse(&text).map_err(|_| {
        Error::Usage(format!(
            "--{flag} {value:?} is neither YYYY-MM-DD nor YYYY-MM-DDTHH:MM:SSZ"
        ))
    })
}

async fn records_request(args: ExportArgs) -> Result<ExitCode> {
    let criteria = QueryCriteria {
        from: args.from.clone(),
        to: args.to.clone(),
        cc: args.cc.clone(),
        subject: args.subject.clone(),
        folders: args.folder.clone(),
        since: args
            .since
            .as_deref()
            .map(|v| date_flag("since", v, false))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|v| date_flag("until", v, true))
            .transpose()?,
    };
    if criteria.is_empty() {
        return Err(Error::Usage(
            "export needs --record ID, or at least one of --from --to --cc --subject --folder --since --until".into(),
        ));
    }
    let (Some(out), Some(signing_key)) = (&args.out, &args.signing_key) else {
        return Err(Error::Usage(
            "a records request needs --out DIR and --signing-key (an export key from `mailvault keygen`)".into(),
        ));
    };
    let query = RecordQuery::new(&criteria).map_err(|e| Error::Usage(e.0))?;
    let key = read_public_key(&args.public_key)?;
    let signer = mailvault::signing_key::read_signer_key(signing_key)?;
    // The archive's key always bears the archive's origin as its name.
    if signer.name() == key.name() {
        return Err(Error::Usage(
            "--signing-key is (or is named like) the archive's own key: sign exports with a separate export key (docs/guide-records-officer.md)".into(),
        ));
    }
    let store = args.store.open(&args.store_location)?;
    let found = search(&store, key.name(), &key, &query, args.verify_search).await?;
    let outcome = write_export(
        &store,
        &found,
        &query,
        out,
        &signer,
        &Spool::from_env(),
        &mut |path, bytes| super::write_file(path, bytes),
    )
    .await?;
    Ok(if report(&found, &outcome, out) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints what a records request searched and wrote, and a `warning:` line for every record
/// that needs a person's attention; true when there is none.
fn report(found: &Found, outcome: &ExportOutcome, out: &Path) -> bool {
    let c = found.counts;
    println!(
        "searched {} records ({} by header index, {} read in full); {} match",
        c.records,
        c.by_index,
        c.by_record,
        found.matched.len()
    );
    if c.destroyed > 0 {
        println!(
            "{} records were destroyed under the schedule (their headers went with them: whether they matched cannot be said; `mailvault certificates` lists them)",
            c.destroyed
        );
    }
    if c.index_missing > 0 {
        println!(
            "{} records whose log entry commits to a header index had none in the store and were read in full (a run that failed between a record and its index leaves one; many mean someone deleted them)",
            c.index_missing
        );
    }
    println!(
        "exported {} messages with proofs against checkpoint {} to {}",
        outcome.exported,
        outcome.checkpoint_size,
        out.display()
    );
    let mut complete = true;
    for (ids, why) in [
        (
            &outcome.index_disagreed,
            "its header index matched but its own headers do not (left out; the index is stale or was edited)",
        ),
        (
            &outcome.not_checkpointed,
            "logged after the newest checkpoint (left out; archive again to checkpoint it, then export again)",
        ),
        (
            &found.unreadable,
            "no usable header index, and the record itself could not be read (left out; run `mailvault verify`)",
        ),
        (
            &found.index_edited,
            "its header index is not the one its log entry commits to (edited or replaced in the bucket by someone other than mailvault); the record was read instead",
        ),
        (
            &found.tombstone_unsigned,
            "it matches and is still in the store, but a tombstone logged after the newest signed checkpoint says it was destroyed; a destruction run deletes a record before it logs that, so nothing vouches for the tombstone: exported (run `mailvault verify`)",
        ),
    ] {
        for id in ids {
            complete = false;
            println!("warning: record {id}: {why}");
        }
    }
    // The search read beneath these; someone with write access to the bucket made them.
    for warning in &found.log_warnings {
        complete = false;
        println!("warning: {warning} (run `mailvault verify`)");
    }
    for (id, words) in &found.index_refused {
        complete = false;
        println!(
            "warning: record {id}: its header index could not be read ({words}); the record was read instead"
        );
    }
    complete
}
