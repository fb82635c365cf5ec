//! Entry bundles and entries: any bytes, no panic; an accepted entry re-encodes byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault_core::bundle::decode_bundle;
use mailvault_core::entry::Entry;
use mailvault_core::log::RecordLog;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = decode_bundle(data) {
        for bytes in entries {
            if let Ok(e) = Entry::decode(bytes) {
                assert_eq!(e.encode(), bytes);
            }
        }
    }
    if let Ok(e) = Entry::decode(data) {
        assert_eq!(e.encode(), data);
    }
    let _ = RecordLog::resume([data]);
});
