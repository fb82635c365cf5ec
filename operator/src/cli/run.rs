//! `mailvault run`: one archive run (or, with `--destruction`, one destruction run) as a
//! Kubernetes Job's pod (`runner: Job`); the operator creates the Job, this records the outcome
//! in the archive's status.

use clap::Args;
use mailvault::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `mailvault run` (the operator writes them into the Job).
#[derive(Args)]
pub struct RunArgs {
    /// The archive's namespace.
    #[arg(long)]
    namespace: String,
    /// The MailboxArchive.
    #[arg(long)]
    archive: String,
    /// The uid of the archive the Job was made for: an archive created again under the name
    /// is not run.
    #[arg(long)]
    archive_uid: Option<String>,
    /// The Job this run is (recorded as status.lastJob).
    #[arg(long)]
    job: String,
    /// The schedule slot the run stands for (RFC 3339).
    #[arg(long)]
    slot: String,
    /// Run the archive's scheduled destruction instead of an archive run.
    #[arg(long)]
    destruction: bool,
    /// Directory for messages larger than 4 MiB (an emptyDir).
    #[arg(long, env = "MAILVAULT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Spool space the run keeps itself within (the operator passes the spool emptyDir's
    /// size; see `mailvault operator --max-spool-size`).
    #[arg(long, value_parser = crate::cli::archive::parse_size, default_value = "4GiB")]
    max_spool_size: u64,
}

/// Runs once and records the outcome. Exit 0 when the outcome (success or failure) is in the
/// status; 2 when it is not, so that the Job controller starts another pod.
pub async fn run(args: RunArgs) -> Result<ExitCode> {
    super::operator::init_logging("json");
    let client = kube::Client::try_default().await?;
    let kind = if args.destruction {
        mailvault::controller::jobs::RunKind::Destruction
    } else {
        mailvault::controller::jobs::RunKind::Archive
    };
    let run = mailvault::controller::jobs::JobRun {
        kind,
        namespace: &args.namespace,
        archive: &args.archive,
        archive_uid: args.archive_uid.as_deref(),
        job: &args.job,
        slot: &args.slot,
        spool_dir: args.spool_dir.unwrap_or_else(std::env::temp_dir),
        max_spool_bytes: args.max_spool_size,
    };
    mailvault::controller::jobs::run_as_job(client, &run).await?;
    Ok(ExitCode::SUCCESS)
}
