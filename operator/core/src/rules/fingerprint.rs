//! A schedule's fingerprint: SHA-256 over a canonical text of every rule and the default, so
//! that a run can tell whether the policy it classifies by is the one last re-applied to the
//! archive's records (the CLI's `--policy FILE`, `--series/--retain` and the operator's
//! `RetentionPolicy` all become a [`RetentionSchedule`] first, so they compare alike).
//!
//! `RetentionSchedule -> canonical text (length-prefixed fields) -> SHA-256`

use super::{AddressPattern, Matcher, Outcome, RetentionSchedule, RetentionStart};
use crate::hash::Hash;
use std::fmt::Write as _;

/// Appends `name len:value\n` (length-prefixed, so no value can fake another field).
fn field(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "{name} {}:{value}", value.len());
}

fn addresses(out: &mut String, name: &str, list: &[AddressPattern]) {
    for a in list {
        match a {
            AddressPattern::Address(x) => field(out, name, x),
            AddressPattern::Domain(d) => field(out, name, &format!("@{d}")),
        }
    }
}

fn matcher(out: &mut String, m: &Matcher) {
    for g in &m.folders {
        field(out, "folder", g);
    }
    addresses(out, "from", &m.from);
    addresses(out, "to", &m.to);
    addresses(out, "cc", &m.cc);
    if let Some(re) = &m.subject {
        field(out, "subject", re.as_str());
    }
    if let Some(h) = &m.header {
        field(out, "header-name", &h.name.to_ascii_lowercase());
        field(out, "header-value", &h.value);
    }
    if let Some(n) = m.min_size {
        field(out, "min-size", &n.to_string());
    }
    if let Some(n) = m.max_size {
        field(out, "max-size", &n.to_string());
    }
    if let Some(b) = m.has_attachment {
        field(out, "has-attachment", if b { "true" } else { "false" });
    }
}

fn outcome(out: &mut String, o: &Outcome) {
    field(out, "series", &o.series);
    field(out, "retain", &o.period.to_string());
    let from = match o.from {
        RetentionStart::MessageDate => "MessageDate",
        RetentionStart::ArchivedAt => "ArchivedAt",
        RetentionStart::EndOfCalendarYear => "EndOfCalendarYear",
    };
    field(out, "from", from);
    field(out, "disposition", o.disposition.as_str());
}

impl RetentionSchedule {
    /// The canonical text the fingerprint is taken over.
    pub fn canonical_text(&self) -> String {
        let mut out = String::from("mailvault-retention-schedule/1\n");
        for r in &self.rules {
            field(&mut out, "rule", &r.name);
            matcher(&mut out, &r.matcher);
            outcome(&mut out, &r.outcome);
        }
        field(&mut out, "rule", super::DEFAULT_RULE);
        outcome(&mut out, &self.default);
        out
    }

    /// SHA-256 of [`Self::canonical_text`]: equal for two schedules that classify every record
    /// alike by the same rules (a renamed rule, a reordered list or any changed field gives
    /// another fingerprint).
    pub fn fingerprint(&self) -> Hash {
        Hash::of(self.canonical_text().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::Period;
    use crate::rules::{Disposition, Rule};

    fn schedule(series: &str, retain: &str, subject: Option<&str>) -> RetentionSchedule {
        let period: Period = retain.parse().unwrap();
        let disposition = if period == Period::Permanent {
            Disposition::Permanent
        } else {
            Disposition::Destroy
        };
        let rule = Rule::new(
            "chief",
            Matcher {
                from: vec![AddressPattern::parse("chief@city.gov").unwrap()],
                subject: subject.map(|s| crate::rules::subject_regex(s).unwrap()),
                ..Matcher::default()
            },
            Outcome::new(series, period, RetentionStart::ArchivedAt, disposition).unwrap(),
        )
        .unwrap();
        let default = Outcome::new(
            "GS 1",
            "P3Y".parse().unwrap(),
            RetentionStart::EndOfCalendarYear,
            Disposition::Destroy,
        )
        .unwrap();
        RetentionSchedule::new(vec![rule], default).unwrap()
    }

    #[test]
    fn every_field_changes_the_fingerprint_and_nothing_else_does() {
        let a = schedule("GS 1-07", "Permanent", None);
        assert_eq!(
            a.fingerprint(),
            schedule("GS 1-07", "Permanent", None).fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            schedule("GS 1-08", "Permanent", None).fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            schedule("GS 1-07", "P5Y", None).fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            schedule("GS 1-07", "Permanent", Some("x")).fingerprint()
        );
        // A value cannot pass for two fields: lengths are part of the text.
        assert!(a.canonical_text().contains("series 7:GS 1-07\n"));
        let single = RetentionSchedule::single("S", "P1Y".parse().unwrap()).unwrap();
        assert_ne!(
            single.fingerprint(),
            RetentionSchedule::single("S", "P2Y".parse().unwrap())
                .unwrap()
                .fingerprint()
        );
    }
}
