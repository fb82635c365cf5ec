//! Message facts and the retention matchers on any bytes: no panic, bounded work, and a rule
//! set using every kind of matcher classifies every message (header regexes included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault_core::UnixTime;
use mailvault_core::facts::{self, Envelope};
use mailvault_core::retention::Period;
use mailvault_core::rules::{
    AddressPattern, Disposition, HeaderEquals, Matcher, Outcome, RetentionSchedule, RetentionStart,
    Rule, subject_regex,
};
use std::sync::OnceLock;

fn schedule() -> &'static RetentionSchedule {
    static SCHEDULE: OnceLock<RetentionSchedule> = OnceLock::new();
    SCHEDULE.get_or_init(|| {
        let outcome = |series: &str| {
            Outcome::new(
                series,
                "P1Y".parse::<Period>().expect("period"),
                RetentionStart::EndOfCalendarYear,
                Disposition::Destroy,
            )
            .expect("outcome")
        };
        let rules = vec![
            Rule::new(
                "addresses",
                Matcher {
                    folders: vec!["Archive/*".into(), "INBOX".into()],
                    from: vec![AddressPattern::parse("@city.gov").expect("domain")],
                    to: vec![AddressPattern::parse("chief@city.gov").expect("address")],
                    ..Matcher::default()
                },
                outcome("A"),
            )
            .expect("rule"),
            Rule::new(
                "subject",
                Matcher {
                    subject: Some(
                        subject_regex(r"(?i)^(re|fwd?):\s*(case|incident)\s+#?\d+").expect("regex"),
                    ),
                    has_attachment: Some(true),
                    ..Matcher::default()
                },
                outcome("B"),
            )
            .expect("rule"),
            Rule::new(
                "header",
                Matcher {
                    header: Some(HeaderEquals::new("X-Records-Series", "GS-05").expect("header")),
                    min_size: Some(10),
                    max_size: Some(1 << 30),
                    ..Matcher::default()
                },
                outcome("C"),
            )
            .expect("rule"),
        ];
        RetentionSchedule::new(rules, outcome("default")).expect("schedule")
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a folder spelling (IMAP modified UTF-7 or not), the rest is the message.
    let (folder, message) = match data.split_first() {
        Some((b, rest)) if b % 2 == 0 => ("Archive/&AOk-t&AOk-", rest),
        Some((_, rest)) => ("INBOX", rest),
        None => ("INBOX", data),
    };
    let envelope = Envelope {
        folder,
        size: message.len() as u64,
        internal_date: Some(UnixTime(1_700_000_000)),
    };
    let facts = facts::extract(message, envelope);
    let _ = schedule().classify(&facts, UnixTime(1_800_000_000));
    if let Ok(name) = std::str::from_utf8(message) {
        let _ = facts::decode_folder_name(name);
    }
});
