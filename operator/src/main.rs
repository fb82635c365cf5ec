//! The `mailvault` command line: clap definitions and dispatch only; each command is a file
//! under `cli/`.

// Doc comments here are clap's help text, read in a terminal, not rustdoc.
#![allow(clippy::doc_markdown)]

mod cli;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mailvault: an e-mail records archive with a verifiable, signed record log.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 checkpoint signing key.
    ///
    /// Writes the secret key to --out (mode 0600, never overwritten), prints the public
    /// verifier key that auditors use on stdout and its fingerprint on stderr.
    Keygen {
        /// Key name: the origin of the log it signs, e.g. mailvault.io/<namespace>/<archive>.
        #[arg(long)]
        name: String,
        /// File for the secret key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Archive a mailbox (imap://USER@HOST[:PORT]) or local mail (mbox:FILE, maildir:DIR,
    /// eml:DIR) into a store.
    ///
    /// Each message is stored zstd-compressed (under Object Lock on S3) and logged; a message
    /// already in the archive is skipped, so running it again archives only what is new. IMAP
    /// is read-only: EXAMINE and BODY.PEEK, no flag ever changes.
    Archive(cli::archive::ArchiveArgs),
    /// Verify an archive: the log, its signed checkpoints, and every record in the store.
    ///
    /// Exit status: 0 verified, 1 verification failed, 2 usage or I/O error.
    Verify(cli::verify::VerifyArgs),
    /// Write a self-contained proof bundle for one record (message, salt, inclusion proof and
    /// signed checkpoint), for disclosure.
    Prove(cli::prove::ProveArgs),
    /// Check a proof bundle offline, with the archive's public key alone.
    VerifyProof(cli::verify::VerifyProofArgs),
    /// Write a record's original RFC 5322 bytes, exactly as archived (checked against the log),
    /// or answer a records request: every record a query matches, as .eml files, each with
    /// its proof bundle, under a manifest signed by an export key.
    ///
    /// Exit status (records request): 0 complete, 1 written but some matching record was left
    /// out (each named), 2 usage or I/O error.
    Export(cli::export::ExportArgs),
    /// Check a records-request export offline: the manifest's signature (export key) and every
    /// message's proof (the archive's public key).
    ///
    /// Exit status: 0 verified, 1 verification failed, 2 usage or I/O error.
    VerifyExport(cli::verify::VerifyExportArgs),
    /// Run the Kubernetes operator: reconcile MailboxArchive, RetentionPolicy and LegalHold.
    ///
    /// Every replica serves /metrics, /healthz and /readyz and competes for a coordination
    /// Lease; only the holder runs archives and writes status. Reads the cluster from
    /// $KUBECONFIG or the in-cluster service account.
    Operator(cli::operator::OperatorArgs),
    /// Print the CustomResourceDefinitions (YAML) of MailboxArchive, RetentionPolicy and
    /// LegalHold, as committed under crds/.
    Crd,
    /// List the records of an archive, from its log.
    Ls(cli::ls::LsArgs),
    /// Place a legal hold on an archive's records from a LegalHold YAML document (the
    /// resource the operator reads), or release it (`released: true`).
    ///
    /// The S3 legal hold is set on every matching record and hold-placed logged; records
    /// archived later that match are held by the next `archive` run. Release clears the flag
    /// where no other hold remains and logs hold-released.
    Hold(cli::hold::HoldArgs),
    /// Run destruction: destroy every record whose retention ended and whose rule says
    /// Destroy (or an approved review covers it), unless a legal hold applies.
    ///
    /// Logs destroy-authorized, deletes every version, logs tombstones, and stores a signed,
    /// locked destruction certificate; a crash anywhere completes on the next run.
    Destroy(cli::destroy::DestroyArgs),
    /// Show what the next destruction run would do, per record series (changes nothing).
    Plan(cli::plan::PlanArgs),
    /// List an archive's destruction certificates, each checked against the log.
    Certificates(cli::certificates::CertificatesArgs),
    /// Run one archive run as a Kubernetes Job's pod (the operator creates the Job for an
    /// archive with runner: Job) and record its outcome in the archive's status.
    Run(cli::run::RunArgs),
}

async fn run(command: Command) -> mailvault::Result<ExitCode> {
    match command {
        Command::Keygen { name, out } => {
            let signer = mailvault::signing_key::generate(&name)?;
            mailvault::signing_key::write_signer_key(&out, &signer)?;
            let public = signer.verifier_key();
            println!("{public}");
            // stdout is the public key file; the fingerprint, to pin and compare, goes to stderr.
            eprintln!(
                "fingerprint: {}",
                mailvault::core::verify::key_fingerprint(&public)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Archive(args) => cli::archive::run(args).await,
        Command::Verify(args) => cli::verify::run(args).await,
        Command::Prove(args) => cli::prove::run(args).await,
        Command::VerifyProof(args) => cli::verify::run_proof(&args),
        Command::Export(args) => cli::export::run(args).await,
        Command::VerifyExport(args) => cli::verify::run_export(&args),
        Command::Operator(args) => {
            cli::operator::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd => {
            print!("{}", mailvault::crd::all_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls(args) => cli::ls::run(args).await,
        Command::Hold(args) => Box::pin(cli::hold::run(args)).await,
        Command::Destroy(args) => cli::destroy::run(args).await,
        Command::Plan(args) => cli::plan::run(args).await,
        Command::Certificates(args) => cli::certificates::run(args).await,
        Command::Run(args) => cli::run::run(args).await,
    }
}

/// How many threads tokio's blocking pool may start: two per core, at least four.
///
/// The pool runs what must not hold an async thread: compression, classification, spool files,
/// the `file:` store's reads and writes, name lookups. That work is mostly CPU and short file
/// I/O, so more threads than this only queue on the cores, and each thread costs memory: glibc
/// gives threads arenas of their own and keeps what they free. With tokio's default (512) an
/// archive of the mixed benchmark mailbox started about 70 and peaked at 113–126 MB RSS on a
/// 23 MB heap; with four (this 2-core machine) 68–74 MB, and no slower (docs/benchmarks.md,
/// "Memory on the mixed mailbox"). No blocking task waits for another, so a bound cannot
/// deadlock; `available_parallelism` follows a container's CPU limit.
fn blocking_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |cores| cores.get() * 2)
        .max(4)
}

fn main() -> ExitCode {
    mailvault::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking_threads())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailvault: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailvault: {e}");
            ExitCode::from(2)
        }
    }
}
