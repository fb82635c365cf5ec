//! `mailvault run`: one archive run as a Kubernetes Job's pod (`runner: Job`); the operator
//! creates the Job, this records the outcome in the archive's status.

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
    /// The Job this run is (recorded as status.lastJob).
    #[arg(long)]
    job: String,
    /// The schedule slot the run stands for (RFC 3339).
    #[arg(long)]
    slot: String,
    /// Directory for messages larger than 4 MiB (an emptyDir).
    #[arg(long, env = "MAILVAULT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
}

/// Runs once and records the outcome. Exit 0 when the outcome (success or failure) is in the
/// status; 2 when it is not, so that the Job controller starts another pod.
pub async fn run(args: RunArgs) -> Result<ExitCode> {
    super::operator::init_logging("json");
    let client = kube::Client::try_default().await?;
    mailvault::controller::jobs::run_as_job(
        client,
        &args.namespace,
        &args.archive,
        &args.job,
        &args.slot,
        args.spool_dir.unwrap_or_else(std::env::temp_dir),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
