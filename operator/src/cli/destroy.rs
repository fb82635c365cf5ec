//! `mailvault destroy`: one destruction run over an archive, as the operator's scheduled run
//! does it ([`mailvault::lifecycle::destroy`]).

use super::StoreArgs;
use clap::Args;
use mailvault::core::rules::RetentionSchedule;
use mailvault::lifecycle::destroy::{self, Decisions, DestructionRun};
use mailvault::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Flags of `mailvault destroy`.
#[derive(Args)]
pub struct DestroyArgs {
    /// Store: file:DIR or s3://bucket/prefix.
    store_location: String,
    /// Signing key written by `mailvault keygen`; its name is the log's origin.
    #[arg(long)]
    key: PathBuf,
    /// The RetentionPolicy YAML document in force: each record's disposition comes from the
    /// rule of its record series.
    #[arg(long)]
    policy: PathBuf,
    /// Print what would be destroyed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// DispositionReview YAML documents (separated by ---); the Approved ones authorize
    /// destroying the Review records they cover, the Extended ones extend their retention.
    #[arg(long)]
    approvals: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Crash tests only: abort the process after this many steps of the run.
    #[arg(long, hide = true)]
    abort_after_step: Option<u64>,
    #[command(flatten)]
    store: StoreArgs,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a RetentionPolicy YAML document.
pub fn read_policy(path: &Path) -> Result<RetentionSchedule> {
    mailvault::lifecycle::policy_from_yaml(&read_text(path)?)
}

/// Reads the decided (Approved, Extended) reviews of an `--approvals` file.
pub fn read_approvals(path: Option<&Path>) -> Result<Decisions> {
    path.map_or_else(
        || Ok(Decisions::default()),
        |p| destroy::decisions_from_yaml(&read_text(p)?),
    )
}

/// Runs `mailvault destroy`: 0 done, 1 some records could not be deleted yet (their lock is
/// still in force; the next run finishes them).
pub async fn run(args: DestroyArgs) -> Result<ExitCode> {
    let store = args.store.open(&args.store_location)?;
    let schedule = read_policy(&args.policy)?;
    let approvals = read_approvals(args.approvals.as_deref())?;
    let signer = mailvault::signing_key::read_signer_key(&args.key)?;
    let origin = signer.name().to_owned();
    // Boxed: a destruction run's future holds the writer's state machines.
    let report = Box::pin(destroy::run(
        &store,
        signer,
        &DestructionRun {
            origin: &origin,
            schedule: &schedule,
            approvals: &approvals.approvals,
            extensions: &approvals.extensions,
            now: mailvault::unix_now(),
            dry_run: args.dry_run,
            abort_after_step: args.abort_after_step,
        },
    ))
    .await?;
    if args.json {
        let text = serde_json::to_string_pretty(&report.to_json())
            .map_err(|e| Error::encoding("report as JSON", e))?;
        println!("{text}");
    } else {
        print!("{}", super::plan::table(&report));
        println!("{}", report.summary());
        for r in &report.refused {
            println!("  {r}");
        }
        super::plan::print_log_warnings(&report);
    }
    Ok(if report.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
