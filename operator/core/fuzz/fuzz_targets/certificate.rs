//! Destruction certificates, retention periods and timestamps as text: any input, no panic;
//! a certificate that parses re-renders to the same text (the text is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault_core::UnixTime;
use mailvault_core::lifecycle::certificate::Certificate;
use mailvault_core::retention::Period;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cert) = Certificate::parse(text) {
        assert_eq!(cert.to_text(), text);
    }
    let _ = text.parse::<Period>();
    let _ = UnixTime::parse(text);
});
