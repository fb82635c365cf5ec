//! `mailvault operator`: logging set up, identity and lease chosen, then
//! [`mailvault::operator::run`].

use clap::Args;
use mailvault::Result;
use std::io::IsTerminal as _;
use std::path::PathBuf;

/// Flags of `mailvault operator`.
#[derive(Args)]
pub struct OperatorArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "MAILVAULT_NAMESPACE")]
    namespace: Option<String>,
    /// Directory where messages larger than 4 MiB are spooled during a run (default: the
    /// system's temporary directory; in a pod, an emptyDir).
    #[arg(long, env = "MAILVAULT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Spool space one run keeps itself within (suffixes KiB, MiB, GiB): the chart passes the
    /// spool volume's size divided by --concurrent-runs. Half is for first pieces of large
    /// messages waiting while a folder is fetched (past it they are fetched again later), half
    /// for records being stored, where a message takes about twice its size: at least four
    /// times the largest message an archive allows (spec.imap.maxMessageBytes).
    #[arg(long, value_parser = crate::cli::archive::parse_size, default_value = "4GiB")]
    max_spool_size: u64,
    /// Archive runs at once; further due runs wait (mailvault_runs_waiting).
    #[arg(long, default_value_t = 4)]
    concurrent_runs: usize,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Name of the coordination Lease replicas compete for.
    #[arg(long, default_value = "mailvault-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: --namespace, else $POD_NAMESPACE, else default).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Seconds a lease lasts without renewal: a killed leader is replaced after at most this.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// This replica's identity in the Lease and in Events (default: $POD_NAME, else
    /// hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a shutdown waits for runs in flight before abandoning them.
    #[arg(long, default_value_t = 25)]
    shutdown_grace: u64,
    /// Where runs of archives that name no spec.runner execute: InProcess or Job.
    #[arg(long, env = "MAILVAULT_DEFAULT_RUNNER", default_value = "InProcess")]
    default_runner: mailvault::crd::Runner,
    /// How run Jobs are built, as JSON: image, imagePullPolicy, resources, nodeSelector,
    /// tolerations, spoolSizeMiB, ttlSecondsAfterFinished, backoffLimit, maxInFlight,
    /// podSecurityContext, securityContext, logLevel (the chart renders it from its values).
    #[arg(long, env = "MAILVAULT_JOB_CONFIG")]
    job_config: Option<String>,
}

/// Runs `mailvault operator` until SIGTERM or SIGINT.
pub async fn run(args: OperatorArgs) -> Result<()> {
    init_logging(&args.log_format);
    let instance = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "mailvault".into(), |h| h.trim().to_owned());
        format!("{host}-{}", std::process::id())
    });
    let lease_namespace = args
        .lease_namespace
        .or_else(|| args.namespace.clone())
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let jobs = match &args.job_config {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            mailvault::Error::Usage(format!("--job-config is not a job configuration: {e}"))
        })?,
        None => mailvault::controller::jobs::JobSettings::default(),
    };
    mailvault::operator::run(mailvault::operator::OperatorConfig {
        settings: mailvault::controller::Settings {
            namespace: args.namespace,
            concurrent_runs: args.concurrent_runs,
            instance,
            spool_dir: args.spool_dir.unwrap_or_else(std::env::temp_dir),
            max_spool_bytes: args.max_spool_size,
            default_runner: args.default_runner,
            jobs,
        },
        lease_name: args.lease_name,
        lease_namespace,
        lease_duration: args.lease_duration.max(3),
        listen: args.listen,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
    })
    .await
}

/// Logs to stderr, filtered by `RUST_LOG`, as `text` or `json`.
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,aws=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = installed {
        eprintln!("mailvault: logging not set up: {e}");
    }
}
