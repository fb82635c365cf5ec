//! Proof bundles: any bytes, no panic, and nothing verifies without the trusted key's signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault_core::note::{NoteSigner, NoteVerifier};
use mailvault_core::proof::ProofBundle;

fuzz_target!(|data: &[u8]| {
    let key = NoteVerifier::parse(
        &NoteSigner::new("fuzz.example/log", &[1; 32])
            .expect("valid key name")
            .verifier_key(),
    )
    .expect("own key parses");
    if let Ok(bundle) = ProofBundle::parse(data) {
        let _ = bundle.verify(&[key]);
    }
});
