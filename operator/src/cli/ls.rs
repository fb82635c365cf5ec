//! `mailvault ls`: the records of an archive, from its log.

use super::{StoreArgs, read_public_key};
use clap::Args;
use mailvault::reader::{replay_log, write_listing};
use mailvault::{Error, Result};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `mailvault ls`.
#[derive(Args)]
pub struct LsArgs {
    /// Store: file:DIR or s3://bucket/prefix.
    store_location: String,
    /// The archive's public verifier key.
    #[arg(long)]
    public_key: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `mailvault ls`. A reader that stops early (`| head`) ends the listing quietly.
pub async fn run(args: LsArgs) -> Result<ExitCode> {
    let key = read_public_key(&args.public_key)?;
    // The log is replayed as it is read: memory grows by the replay's compact state per
    // record, not by the entries (docs/benchmarks.md, "Records requests on a large archive").
    // Anomalies are verify's to report; the listing shows the story the log tells.
    let read = replay_log(&args.store.open(&args.store_location)?, key.name(), &key).await?;
    // On standard error: standard output is the listing, for scripts.
    for w in &read.log.warnings {
        eprintln!("warning: {w} (run `mailvault verify`)");
    }
    let replay = read.replay;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match write_listing(&replay, &mut out).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(source) => Err(Error::Io {
            path: "standard output".into(),
            source,
        }),
    }
}
