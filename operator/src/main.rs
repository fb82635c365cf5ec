//! The `mailvault` command line.

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
    /// Writes the secret key to --out (mode 0600, never overwritten) and prints the public
    /// verifier key that auditors use.
    Keygen {
        /// Key name: the origin of the log it signs, e.g. mailvault.io/<namespace>/<archive>.
        #[arg(long)]
        name: String,
        /// File for the secret key.
        #[arg(long)]
        out: PathBuf,
    },
}

fn run(cli: Cli) -> mailvault::Result<()> {
    match cli.command {
        Command::Keygen { name, out } => {
            let signer = mailvault::keys::generate(&name)?;
            mailvault::keys::write_signer_key(&out, &signer)?;
            println!("{}", signer.verifier_key());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailvault: {e}");
            ExitCode::from(2)
        }
    }
}
