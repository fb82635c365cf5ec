//! The writer's resume state (`state/resume.json`, mutable, MAC'd): any bytes, no panic, no
//! allocation beyond its caps; what decodes re-encodes to bytes that decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault_core::resume::ResumeState;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = ResumeState::decode(data) {
        let again = ResumeState::decode(&state.encode()).expect("own encoding decodes");
        assert_eq!(again.encode(), state.encode());
    }
});
