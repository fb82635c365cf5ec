//! mailvault's pure core: the record log, its verification, the retention rules and the records
//! lifecycle.
//!
//! `[ entry ] -chain-> [ entry ] ... -> Merkle tree -> signed checkpoint`
//!
//! Nothing here does I/O, reads a clock, or knows Kubernetes, S3 or IMAP: callers pass bytes
//! and "now" in, and get decisions and bytes out. That is what lets an auditor run the same
//! verifier with nothing but read-only credentials and a public key.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod checkpoint;
pub mod entry;
pub mod facts;
pub mod glob;
pub mod hash;
pub mod layout;
pub mod lifecycle;
pub mod log;
pub mod mac;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod record;
pub mod records_request;
pub mod resume;
pub mod retention;
pub mod rules;
pub mod time;
pub mod verify;

pub use hash::Hash;
pub use time::UnixTime;
