//! Signed notes and checkpoint bodies: any bytes, no panic; what opens re-parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault_core::checkpoint::Checkpoint;
use mailvault_core::note::{self, NoteSigner, NoteVerifier};

fuzz_target!(|data: &[u8]| {
    let signer = NoteSigner::new("fuzz.example/log", &[1; 32]).expect("valid key name");
    let key = NoteVerifier::parse(&signer.verifier_key()).expect("own key parses");
    let _ = note::open(data, std::slice::from_ref(&key));
    let _ = Checkpoint::open(data, std::slice::from_ref(&key), Some("fuzz.example/log"));
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cp) = Checkpoint::parse(text) {
            // A parsed checkpoint re-encodes to a body that parses to the same checkpoint.
            assert_eq!(Checkpoint::parse(&cp.to_text()).expect("re-parse"), cp);
        }
        let _ = NoteVerifier::parse(text);
        let _ = NoteSigner::from_key_string(text);
    }
});
