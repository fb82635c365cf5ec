use super::*;
use proptest::prelude::*;

fn t(s: &str) -> UnixTime {
    UnixTime::parse(s).unwrap()
}

/// An independent calendar: jiff's instant of an RFC 3339 timestamp (any offset).
fn oracle_instant(s: &str) -> UnixTime {
    UnixTime(s.parse::<jiff::Timestamp>().unwrap().as_second())
}

/// jiff's `start + period` in UTC.
fn oracle_add(start: UnixTime, years: u32, months: u32, days: u32, seconds: u64) -> UnixTime {
    let zoned = jiff::Timestamp::from_second(start.0)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC);
    let span = jiff::Span::new()
        .years(i64::from(years))
        .months(i64::from(months))
        .days(i64::from(days))
        .seconds(i64::try_from(seconds).unwrap());
    UnixTime(zoned.checked_add(span).unwrap().timestamp().as_second())
}

const ARCHIVED: &str = "2026-12-01T12:00:00Z";

fn outcome(series: &str, retain: &str, from: RetentionStart) -> Outcome {
    let period: Period = retain.parse().unwrap();
    let disposition = if period == Period::Permanent {
        Disposition::Permanent
    } else {
        Disposition::Destroy
    };
    Outcome::new(series, period, from, disposition).unwrap()
}

fn rule(name: &str, matcher: Matcher) -> Rule {
    Rule::new(
        name,
        matcher,
        outcome(&format!("S-{name}"), "P1Y", RetentionStart::ArchivedAt),
    )
    .unwrap()
}

fn schedule(rules: Vec<Rule>) -> RetentionSchedule {
    RetentionSchedule::new(
        rules,
        outcome("S-default", "P3Y", RetentionStart::ArchivedAt),
    )
    .unwrap()
}

fn facts() -> MessageFacts {
    MessageFacts {
        folder: "INBOX".into(),
        from: vec!["Clerk@City.gov".into()],
        to: vec!["records@city.gov".into()],
        cc: vec!["press@news.example".into()],
        subject: "Budget hearing IA-2026-17".into(),
        headers: vec![("X-Records-Series".into(), "GS 1-07".into())],
        size: 2_000,
        has_attachment: false,
        date: Some(t("2026-05-04T10:00:00Z")),
        internal_date: Some(t("2026-05-04T10:00:05Z")),
        unparseable: false,
    }
}

fn addresses(list: &[&str]) -> Vec<AddressPattern> {
    list.iter()
        .map(|a| AddressPattern::parse(a).unwrap())
        .collect()
}

#[allow(clippy::needless_pass_by_value)] // tests build a matcher inline and hand it over
fn matches(m: Matcher, f: &MessageFacts) -> bool {
    m.matches(f)
}

#[test]
fn an_empty_matcher_matches_everything() {
    assert!(matches(Matcher::default(), &facts()));
    assert!(matches(Matcher::default(), &MessageFacts::default()));
}

#[test]
fn folders_are_globs_on_the_decoded_name() {
    let m = |g: &[&str]| Matcher {
        folders: g.iter().map(|s| (*s).to_owned()).collect(),
        ..Matcher::default()
    };
    let mut f = facts();
    assert!(matches(m(&["inbox"]), &f), "INBOX in any case");
    f.folder = "Newsletters/2026/May".into();
    assert!(matches(m(&["Newsletters/**"]), &f));
    assert!(
        !matches(m(&["Junk", "Newsletters/*"]), &f),
        "* stays within a level"
    );
    assert!(!matches(m(&["Junk"]), &f));
    f.folder = "Newsletters/2026".into();
    assert!(matches(m(&["Junk", "Newsletters/*"]), &f));
    f.folder = "Entwürfe".into();
    assert!(matches(m(&["Entw?rfe"]), &f));
    assert!(matches(m(&["Entwürfe"]), &f));
}

#[test]
fn addresses_and_domains_case_insensitively() {
    let f = facts();
    let from = |l: &[&str]| Matcher {
        from: addresses(l),
        ..Matcher::default()
    };
    assert!(matches(from(&["clerk@city.gov"]), &f));
    assert!(matches(from(&["CLERK@CITY.GOV"]), &f));
    assert!(matches(from(&["@city.gov"]), &f));
    assert!(matches(from(&["@City.Gov", "nobody@x.example"]), &f));
    assert!(!matches(from(&["@gov"]), &f), "a domain is exact");
    assert!(!matches(from(&["@sub.city.gov"]), &f));
    assert!(!matches(from(&["chief@city.gov"]), &f));
    let mut sub = facts();
    sub.from = vec!["clerk@police.city.gov".into()];
    assert!(!matches(from(&["@city.gov"]), &sub), "no subdomains");
    let to = Matcher {
        to: addresses(&["@city.gov"]),
        ..Matcher::default()
    };
    assert!(matches(to, &f));
    let cc = Matcher {
        cc: addresses(&["press@news.example"]),
        ..Matcher::default()
    };
    assert!(matches(cc, &f));
    let cc_miss = Matcher {
        cc: addresses(&["@city.gov"]),
        ..Matcher::default()
    };
    assert!(!matches(cc_miss, &f), "to and cc are separate lists");
    for bad in ["city.gov", "chief", "", "a@", "a b@c.d", "@"] {
        assert!(AddressPattern::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn subject_regex_is_searched_and_bounded() {
    let m = |p: &str| Matcher {
        subject: Some(subject_regex(p).unwrap()),
        ..Matcher::default()
    };
    let mut f = facts();
    assert!(matches(m(r"(?i)\bia[- ]?[0-9]{4}-[0-9]+\b"), &f));
    assert!(!matches(m(r"^IA"), &f));
    f.subject = "Überprüfung".into();
    assert!(matches(m("^Über"), &f), "Unicode subjects");
    // Only the first SUBJECT_MATCH_BYTES are seen, cut on a character boundary.
    f.subject = "é".repeat(SUBJECT_MATCH_BYTES) + "needle";
    assert!(!matches(m("needle"), &f));
    assert!(matches(m("^é+$"), &f));
    // A pattern whose compiled program is too large is refused when the policy loads.
    let e = subject_regex(r"\w{1000}{1000}").unwrap_err().to_string();
    assert!(e.contains("does not compile"), "{e}");
    assert!(subject_regex("(unclosed").is_err());
}

#[test]
fn header_equals_after_unfolding() {
    let m = |n: &str, v: &str| Matcher {
        header: Some(HeaderEquals::new(n, v).unwrap()),
        ..Matcher::default()
    };
    let mut f = facts();
    assert!(matches(m("x-records-series", "GS 1-07"), &f));
    assert!(matches(m("X-RECORDS-SERIES", " GS 1-07 "), &f));
    assert!(
        !matches(m("X-Records-Series", "gs 1-07"), &f),
        "values exact"
    );
    assert!(!matches(m("X-Other", "GS 1-07"), &f));
    f.headers
        .push(("X-Tag".into(), unfold(" first\r\n second ")));
    assert!(matches(m("x-tag", "first second"), &f));
    assert!(HeaderEquals::new("Bad Name", "x").is_err());
    assert!(HeaderEquals::new("Bad:Name", "x").is_err());
}

#[test]
fn size_bounds_are_inclusive() {
    let m = |min: Option<u64>, max: Option<u64>| Matcher {
        min_size: min,
        max_size: max,
        ..Matcher::default()
    };
    let f = facts();
    assert!(matches(m(Some(2_000), None), &f));
    assert!(!matches(m(Some(2_001), None), &f));
    assert!(matches(m(None, Some(2_000)), &f));
    assert!(!matches(m(None, Some(1_999)), &f));
    assert!(matches(m(Some(1), Some(10_000)), &f));
    assert!(
        Rule::new(
            "r",
            m(Some(10), Some(1)),
            outcome("s", "P1Y", RetentionStart::ArchivedAt)
        )
        .is_err()
    );
}

#[test]
fn has_attachment_both_ways() {
    let m = |want: bool| Matcher {
        has_attachment: Some(want),
        ..Matcher::default()
    };
    let mut f = facts();
    assert!(matches(m(false), &f));
    assert!(!matches(m(true), &f));
    f.has_attachment = true;
    assert!(matches(m(true), &f));
}

#[test]
fn criteria_are_anded() {
    let m = Matcher {
        from: addresses(&["@city.gov"]),
        subject: Some(subject_regex("Budget").unwrap()),
        has_attachment: Some(true),
        ..Matcher::default()
    };
    let mut f = facts();
    assert!(!matches(m.clone(), &f), "no attachment");
    f.has_attachment = true;
    assert!(matches(m, &f));
}

#[test]
fn first_match_wins_and_the_default_takes_the_rest() {
    let s = schedule(vec![
        rule(
            "chief",
            Matcher {
                from: addresses(&["chief@city.gov"]),
                ..Matcher::default()
            },
        ),
        rule(
            "city",
            Matcher {
                from: addresses(&["@city.gov"]),
                ..Matcher::default()
            },
        ),
        rule("everything", Matcher::default()),
    ]);
    let archived = t(ARCHIVED);
    let mut f = facts();
    assert_eq!(s.classify(&f, archived).rule, "city");
    f.from = vec!["chief@city.gov".into(), "clerk@city.gov".into()];
    let c = s.classify(&f, archived);
    assert_eq!((c.rule.as_str(), c.series.as_str()), ("chief", "S-chief"));
    f.from = vec!["someone@else.example".into()];
    assert_eq!(s.classify(&f, archived).rule, "everything");
    let only_chief = schedule(vec![rule(
        "chief",
        Matcher {
            from: addresses(&["chief@city.gov"]),
            ..Matcher::default()
        },
    )]);
    let c = only_chief.classify(&f, archived);
    assert_eq!(c.rule, DEFAULT_RULE);
    assert_eq!(c.series, "S-default");
    assert_eq!(
        c.retain_until,
        RetainUntil::Until(t("2029-12-01T12:00:00Z"))
    );
    assert_eq!(c.date_source, DateSource::ArchivedAt);
}

#[test]
fn unparseable_mail_takes_the_default_rule() {
    let s = schedule(vec![rule("everything", Matcher::default())]);
    let f = MessageFacts {
        unparseable: true,
        size: 10,
        ..MessageFacts::default()
    };
    let c = s.classify(&f, t(ARCHIVED));
    assert_eq!(c.rule, DEFAULT_RULE);
}

#[test]
fn schedules_refuse_what_would_be_ambiguous() {
    let r = || rule("a", Matcher::default());
    assert!(
        RetentionSchedule::new(
            vec![r(), r()],
            outcome("s", "P1Y", RetentionStart::ArchivedAt)
        )
        .is_err()
    );
    assert!(
        Rule::new(
            "default",
            Matcher::default(),
            outcome("s", "P1Y", RetentionStart::ArchivedAt)
        )
        .is_err()
    );
    let mismatched = Outcome::new(
        "s",
        Period::Permanent,
        RetentionStart::ArchivedAt,
        Disposition::Destroy,
    );
    assert!(mismatched.is_err());
    let mismatched = Outcome::new(
        "s",
        "P1Y".parse().unwrap(),
        RetentionStart::ArchivedAt,
        Disposition::Permanent,
    );
    assert!(mismatched.is_err());
    assert!(
        Outcome::new(
            " ",
            "P1Y".parse().unwrap(),
            RetentionStart::ArchivedAt,
            Disposition::Destroy
        )
        .is_err()
    );
}

fn classify_from(from: RetentionStart, retain: &str, f: &MessageFacts) -> Classification {
    RetentionSchedule::new(vec![], outcome("s", retain, from))
        .unwrap()
        .classify(f, t(ARCHIVED))
}

#[test]
fn message_date_falls_back_to_internal_date_then_archiving() {
    let mut f = facts();
    let c = classify_from(RetentionStart::MessageDate, "P1Y", &f);
    assert_eq!(
        c.retain_until,
        RetainUntil::Until(t("2027-05-04T10:00:00Z"))
    );
    assert_eq!(c.date_source, DateSource::DateHeader);
    f.date = None;
    let c = classify_from(RetentionStart::MessageDate, "P1Y", &f);
    assert_eq!(
        c.retain_until,
        RetainUntil::Until(t("2027-05-04T10:00:05Z"))
    );
    assert_eq!(c.date_source, DateSource::InternalDate);
    f.internal_date = None;
    let c = classify_from(RetentionStart::MessageDate, "P1Y", &f);
    assert_eq!(
        c.retain_until,
        RetainUntil::Until(t("2027-12-01T12:00:00Z"))
    );
    assert_eq!(c.date_source, DateSource::ArchivedAt);
    // A Date header from the future (beyond a day of skew) or before 1970 is not believed.
    let mut f = facts();
    f.date = Some(t("2099-01-01T00:00:00Z"));
    assert_eq!(
        classify_from(RetentionStart::MessageDate, "P1Y", &f).date_source,
        DateSource::InternalDate
    );
    f.date = Some(UnixTime(-1));
    assert_eq!(
        classify_from(RetentionStart::MessageDate, "P1Y", &f).date_source,
        DateSource::InternalDate
    );
    f.date = Some(t("2026-12-02T11:00:00Z"));
    assert_eq!(
        classify_from(RetentionStart::MessageDate, "P1Y", &f).date_source,
        DateSource::DateHeader,
        "within a day of skew"
    );
}

#[test]
fn archived_at_ignores_the_message_date() {
    let c = classify_from(RetentionStart::ArchivedAt, "P1Y", &facts());
    assert_eq!(
        c.retain_until,
        RetainUntil::Until(t("2027-12-01T12:00:00Z"))
    );
    assert_eq!(c.date_source, DateSource::ArchivedAt);
}

#[test]
fn end_of_calendar_year_counts_from_the_next_first_of_january_utc() {
    let mut f = facts();
    let c = classify_from(RetentionStart::EndOfCalendarYear, "P3Y", &f);
    assert_eq!(
        c.retain_until,
        RetainUntil::Until(t("2030-01-01T00:00:00Z"))
    );
    assert_eq!(c.date_source, DateSource::DateHeader);
    // 31 December 23:30 in UTC-06:00 is already 1 January 05:30 UTC: next year's record.
    f.date = Some(oracle_instant("2026-12-31T23:30:00-06:00"));
    assert_eq!(f.date, Some(t("2027-01-01T05:30:00Z")));
    f.date = Some(oracle_instant("2025-12-31T23:30:00-06:00"));
    let c = classify_from(RetentionStart::EndOfCalendarYear, "P3Y", &f);
    assert_eq!(
        c.retain_until,
        RetainUntil::Until(t("2030-01-01T00:00:00Z"))
    );
    // The same local moment east of UTC stays in its year.
    f.date = Some(oracle_instant("2025-12-31T23:30:00+01:00"));
    let c = classify_from(RetentionStart::EndOfCalendarYear, "P3Y", &f);
    assert_eq!(
        c.retain_until,
        RetainUntil::Until(t("2029-01-01T00:00:00Z"))
    );
    // The last second of a year and the first of the next.
    assert_eq!(
        end_of_calendar_year(t("2025-12-31T23:59:59Z")),
        t("2026-01-01T00:00:00Z")
    );
    assert_eq!(
        end_of_calendar_year(t("2026-01-01T00:00:00Z")),
        t("2027-01-01T00:00:00Z")
    );
    // Permanent stays permanent, whatever the start.
    let c = classify_from(RetentionStart::EndOfCalendarYear, "Permanent", &f);
    assert_eq!(c.retain_until, RetainUntil::Permanent);
    assert_eq!(c.disposition, Disposition::Permanent);
}

#[test]
fn calendar_edges_agree_with_jiff() {
    for (start, period) in [
        ("2028-02-29T00:00:00Z", "P1Y"),
        ("2028-02-29T23:59:59Z", "P4Y"),
        ("2028-02-29T12:00:00Z", "P1Y1M"),
        ("2028-02-29T12:00:00Z", "P12M"),
        ("2026-01-31T00:00:00Z", "P1M"),
        ("2028-01-31T00:00:00Z", "P1M"),
        ("2026-03-31T08:00:00Z", "P1M"),
        ("2026-05-31T08:00:00Z", "P1M"),
        ("2026-08-31T08:00:00Z", "P6M"),
        ("2026-12-31T23:59:59Z", "P1M1D"),
        ("2026-01-31T00:00:00Z", "P1M30D"),
        ("2027-12-31T00:00:00Z", "P2W"),
        ("1999-12-31T23:59:59Z", "P1D"),
        ("2099-02-28T00:00:00Z", "P1Y"),
        ("2100-02-28T00:00:00Z", "P1D"),
        ("2028-02-28T23:59:55Z", "PT5S"),
        ("2028-02-29T23:59:59Z", "P1YT1S"),
        ("2026-01-31T23:00:00Z", "P1MT2H"),
        ("2026-12-31T23:59:59Z", "PT36H"),
    ] {
        let Period::Span {
            years,
            months,
            days,
            seconds,
        } = period.parse().unwrap()
        else {
            unreachable!()
        };
        let from = t(start);
        assert_eq!(
            period.parse::<Period>().unwrap().retain_until(from),
            RetainUntil::Until(oracle_add(from, years, months, days, seconds)),
            "{start} + {period}"
        );
    }
}

proptest! {
    #[test]
    fn retain_until_agrees_with_jiff(
        start in 0i64..7_258_118_400, // 1970 to 2200
        years in 0u32..=1000,
        months in 0u32..=12_000,
        days in 0u32..=400_000,
        seconds in prop_oneof![Just(0u64), 0u64..=200_000, 0u64..=34_560_000_000],
    ) {
        let period = Period::Span { years, months, days, seconds };
        let from = UnixTime(start);
        prop_assert_eq!(
            period.retain_until(from),
            RetainUntil::Until(oracle_add(from, years, months, days, seconds))
        );
    }

    #[test]
    fn end_of_calendar_year_agrees_with_jiff(start in 0i64..7_258_118_400, offset_min in -720i32..=840) {
        // A message written at some offset: its year is taken in UTC.
        let instant = jiff::Timestamp::from_second(start).unwrap();
        let offset = jiff::tz::Offset::from_seconds(offset_min * 60).unwrap();
        let local = instant.to_zoned(jiff::tz::TimeZone::fixed(offset));
        let utc_year = local.with_time_zone(jiff::tz::TimeZone::UTC).year();
        let expected = jiff::civil::date(utc_year + 1, 1, 1)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_second();
        prop_assert_eq!(end_of_calendar_year(UnixTime(local.timestamp().as_second())), UnixTime(expected));
    }
}
