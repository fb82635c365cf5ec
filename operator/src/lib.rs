//! mailvault: the e-mail records archive, as a library behind the `mailvault` binary.
//!
//! `source -> record -> store -> log -> checkpoint`; the pure record log lives in
//! [`mailvault_core`] (its store keys in [`mailvault_core::layout`]). Here: message sources
//! (`source`, IMAP sync under `source::imap`), stores (`store`), the record writer
//! (`writer`), one archive run from a mailbox (`run`), reading an archive back (`reader`), the
//! reconcilers (`controller`) and the operator process around them (`operator`).
//! docs/architecture.md draws the whole path.

#![forbid(unsafe_code)]

pub mod controller;
pub mod crd;
pub mod dictionary;
mod error;
pub mod lifecycle;
pub mod metrics;
pub mod operator;
pub mod reader;
pub mod reason;
pub mod run;
pub mod sidecar;
pub mod signing_key;
pub mod source;
pub mod spool;
pub mod store;
pub mod writer;

pub use error::{BoxError, Error, Result, Retry};
pub use mailvault_core as core;
pub use reason::Reason;

/// The current time, whole seconds since the Unix epoch.
pub fn unix_now() -> mailvault_core::UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    mailvault_core::UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// This process's peak resident memory (`VmHWM`), where the system reports it (Linux).
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Installs the process-wide rustls crypto provider (aws-lc-rs). Call once at start-up:
/// several rustls users share the process and rustls refuses to guess.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
