//! `mailvault prove`: a self-contained proof bundle for one record, for disclosure.

use super::{StoreArgs, open_log, read_public_key, write_file};
use clap::Args;
use mailvault::Result;
use mailvault::spool::Spool;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `mailvault prove`.
#[derive(Args)]
pub struct ProveArgs {
    /// Store: file:DIR or s3://bucket/prefix.
    store_location: String,
    /// Record id.
    #[arg(long)]
    record: String,
    /// File to write the proof bundle to.
    #[arg(long)]
    out: PathBuf,
    /// The archive's public verifier key (to check what is read).
    #[arg(long)]
    public_key: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `mailvault prove`.
pub async fn run(args: ProveArgs) -> Result<ExitCode> {
    let key = read_public_key(&args.public_key)?;
    let store = args.store.open(&args.store_location)?;
    let log = open_log(&store, &key).await?;
    let bundle = mailvault::reader::prove(&store, &log, &args.record, &Spool::from_env()).await?;
    write_file(&args.out, bundle.to_json().as_bytes())?;
    println!(
        "proof for record {} written to {}",
        args.record,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
