//! `mailvault hold`: places (or, with `released: true`, releases) a legal hold on an archive's
//! records from a `LegalHold` document, as the operator does for the resource.
//!
//! `LegalHold YAML -> lifecycle::apply_to_archive (flags, hold-placed/-released, checkpoint,
//!  state/holds.json) -> summary`

use super::{StoreArgs, read_file};
use clap::Args;
use mailvault::lifecycle::apply::apply_to_archive;
use mailvault::lifecycle::holds::hold_from_yaml;
use mailvault::{Error, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `mailvault hold`.
#[derive(Args)]
pub struct HoldArgs {
    /// Store: file:DIR or s3://bucket/prefix.
    store_location: String,
    /// A LegalHold YAML document (the resource the operator reads); its id in the log is
    /// `namespace/name` from its metadata. `released: true` releases it.
    #[arg(long)]
    hold: PathBuf,
    /// Signing key written by `mailvault keygen`; its name is the log's origin.
    #[arg(long)]
    key: PathBuf,
    /// A RetentionPolicy YAML document: re-applied to every record first if it changed since
    /// it was last applied to this archive (as `archive --policy` does).
    #[arg(long)]
    policy: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `mailvault hold`.
pub async fn run(args: HoldArgs) -> Result<ExitCode> {
    let text = String::from_utf8(read_file(&args.hold)?)
        .map_err(|_| Error::Usage(format!("{} is not UTF-8", args.hold.display())))?;
    let given = hold_from_yaml(&text)?;
    let schedule = match &args.policy {
        Some(p) => {
            let text = String::from_utf8(read_file(p)?)
                .map_err(|_| Error::Usage(format!("{} is not UTF-8", p.display())))?;
            Some(mailvault::lifecycle::policy_from_yaml(&text)?)
        }
        None => None,
    };
    let signer = mailvault::signing_key::read_signer_key(&args.key)?;
    let store = args.store.open(&args.store_location)?;
    let (outcome, log, summary) = Box::pin(apply_to_archive(
        &store,
        signer,
        schedule.as_ref(),
        std::slice::from_ref(&given),
    ))
    .await?;
    let held = outcome.holds.held.get(&given.id).copied().unwrap_or(0);
    let verb = if given.spec.released {
        "released"
    } else {
        "placed"
    };
    println!(
        "hold {} {verb}: it holds {held} records of this archive ({} hold-placed, {} hold-released logged; log size {})",
        given.id, outcome.holds.placed, outcome.holds.released, log.size
    );
    for line in outcome.summary() {
        println!("{line}");
    }
    if let Some(w) = summary.unauthenticated_warning() {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}
