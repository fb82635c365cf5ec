//! `mailvault export`: a record's original bytes, exactly as archived, checked against the log.

use super::{StoreArgs, open_log, read_public_key};
use clap::Args;
use mailvault::spool::Spool;
use mailvault::{Error, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `mailvault export`.
#[derive(Args)]
pub struct ExportArgs {
    /// Store: file:DIR or s3://bucket/prefix.
    store_location: String,
    /// Record id.
    #[arg(long)]
    record: String,
    /// The archive's public verifier key.
    #[arg(long)]
    public_key: PathBuf,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `mailvault export`.
pub async fn run(args: ExportArgs) -> Result<ExitCode> {
    let key = read_public_key(&args.public_key)?;
    let store = args.store.open(&args.store_location)?;
    let log = open_log(&store, &key).await?;
    // Written only once the record has passed both checks, in blocks.
    let exported =
        mailvault::reader::export(&store, &log, &args.record, &Spool::from_env()).await?;
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
