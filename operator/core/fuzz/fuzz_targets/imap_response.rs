//! What an IMAP server sends, through the parser mailvault's IMAP client uses (imap-proto, the
//! version in the main Cargo.lock): any bytes, no panic but the known one, and a parse always
//! consumes input.
//!
//! Known: imap-proto 0.17.0 panics on a response code followed by a byte that is not UTF-8
//! (`Outcome::parse` slices inside a character; rfc3501/mod.rs). mailvault turns that panic
//! into an error of the run (operator/src/run.rs, `without_parser_panics`; test
//! `a_response_the_imap_parser_chokes_on_fails_the_run_not_the_process`), so it is skipped
//! here by where it happens; any other panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicBool, Ordering};

static KNOWN_PANIC: AtomicBool = AtomicBool::new(false);

fn is_known(location: Option<&std::panic::Location<'_>>) -> bool {
    location.is_some_and(|l| {
        l.file().contains("imap-proto-0.17.0") && l.file().ends_with("rfc3501/mod.rs")
    })
}

fuzz_target!(
    init: {
        // libfuzzer-sys's hook aborts on every panic; this one lets the known one unwind to
        // the catch below and aborts on any other (libFuzzer reports that as a crash).
        std::panic::set_hook(Box::new(|info| {
            if is_known(info.location()) {
                KNOWN_PANIC.store(true, Ordering::Relaxed);
            } else {
                eprintln!("{info}");
                std::process::abort();
            }
        }));
    },
    |data: &[u8]| {
        let parsed = std::panic::catch_unwind(|| {
            let mut rest = data;
            // A server's stream is many responses back to back; bounded by the input's length.
            while !rest.is_empty() {
                match imap_proto::Response::parse(rest) {
                    Ok((next, _)) => {
                        assert!(next.len() < rest.len(), "a response consumed nothing");
                        rest = next;
                    }
                    Err(_) => break,
                }
            }
        });
        if parsed.is_err() {
            assert!(KNOWN_PANIC.swap(false, Ordering::Relaxed));
        }
        if let Ok(name) = std::str::from_utf8(data) {
            let _ = mailvault_core::glob::decode_modified_utf7(name);
        }
    }
);
