//! A policy edit re-applied to records already archived: each record is classified again under
//! the edited policy (first match wins, the same [`RetentionSchedule::classify`] as at ingest,
//! facts read from the stored record, counted from its archiving time) and its retain-until
//! compared with the log's.
//!
//! `RecordHistory x facts x edited schedule --policy_diff--> per rule: extend | shorten | same;
//!  extend -> lock extended, retention-extended logged`
//!
//! Longer retention is applied (the lock is extended, `retention-extended` logged). Shorter
//! retention cannot be: a COMPLIANCE lock cannot be shortened, and the log's retain-until stays
//! what destruction goes by, so such a record stays until its logged retain-until (which its
//! lock covers) and becomes destroyable then; nothing is logged, the record is counted. The
//! log holds the series as ingested: a record the edited policy puts in another series is
//! counted (`series_changed`), not rewritten.

use crate::entry::{EntryBody, RecordId, RetainUntil};
use crate::lifecycle::RecordHistory;
use crate::lifecycle::holds::RecordFacts;
use crate::lifecycle::table::extends;
use crate::rules::RetentionSchedule;
use std::collections::BTreeMap;
use std::fmt;

/// How a record's retention compares under the edited policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionChange {
    /// Longer: extend to this.
    Extend(RetainUntil),
    /// Shorter (this is what the edit would give): the logged retention stays.
    Shorten(RetainUntil),
    /// The same.
    Same,
}

/// Compares the logged retain-until with the one the edited policy gives.
pub fn retention_change(logged: RetainUntil, edited: RetainUntil) -> RetentionChange {
    if logged == edited {
        RetentionChange::Same
    } else if extends(logged, edited) {
        RetentionChange::Extend(edited)
    } else {
        RetentionChange::Shorten(edited)
    }
}

/// One rule's records under the edited policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleDiff {
    /// The rule's series.
    pub series: String,
    /// Records the rule now takes.
    pub records: u64,
    /// Whose retention the edit lengthens.
    pub extend: u64,
    /// Whose retention the edit would shorten (kept as logged; destroyable when it ends).
    pub shorten: u64,
    /// Unchanged.
    pub same: u64,
    /// Logged under another series than the rule's.
    pub series_changed: u64,
}

/// One record whose retention the edit lengthens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The record.
    pub record: RecordId,
    /// Its object key.
    pub object_key: String,
    /// The version its ingest logged (whose lock is extended).
    pub object_version: String,
    /// The retain-until to log.
    pub retain_until: RetainUntil,
}

impl Extension {
    /// The entry to log once the lock is extended.
    pub fn entry(&self) -> EntryBody {
        EntryBody::RetentionExtended {
            retain_until: self.retain_until,
        }
    }
}

/// What re-applying an edited policy does, per rule (by rule name; `default` for the default
/// rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    /// Per rule.
    pub rules: BTreeMap<String, RuleDiff>,
    /// Records to extend, in the order given.
    pub extensions: Vec<Extension>,
    /// Records whose facts could not be read: left as they are.
    pub unreadable: u64,
    /// Records whose destruction is authorized or done: left as they are.
    pub skipped: u64,
}

impl PolicyDiff {
    /// Records extended.
    pub fn extended(&self) -> u64 {
        self.rules.values().map(|r| r.extend).sum()
    }

    /// Records the edit would shorten.
    pub fn shortened(&self) -> u64 {
        self.rules.values().map(|r| r.shorten).sum()
    }

    /// Records unchanged.
    pub fn same(&self) -> u64 {
        self.rules.values().map(|r| r.same).sum()
    }
}

impl fmt::Display for PolicyDiff {
    /// One line for a run summary or a status message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records extended, {} shortened by the edit (destroyable when their lock ends), {} unchanged",
            self.extended(),
            self.shortened(),
            self.same()
        )?;
        if self.unreadable > 0 {
            write!(f, ", {} unreadable (left as they are)", self.unreadable)?;
        }
        Ok(())
    }
}

/// Classifies every record in `histories` whose facts are in `facts` under `schedule` and
/// compares it with the log. Records without facts count as unreadable; destroyed records and
/// records whose destruction is authorized are skipped.
pub fn policy_diff<'a>(
    histories: impl IntoIterator<Item = RecordHistory<'a>>,
    schedule: &RetentionSchedule,
    facts: &BTreeMap<String, RecordFacts>,
) -> PolicyDiff {
    let mut diff = PolicyDiff::default();
    for h in histories {
        if h.authorized.is_some() || h.destroyed.is_some() {
            diff.skipped += 1;
            continue;
        }
        let Some(f) = facts.get(h.record) else {
            diff.unreadable += 1;
            continue;
        };
        let c = schedule.classify(&f.facts, f.archived_at);
        let rule = diff
            .rules
            .entry(c.rule.clone())
            .or_insert_with(|| RuleDiff {
                series: c.series.clone(),
                ..RuleDiff::default()
            });
        rule.records += 1;
        rule.series_changed += u64::from(c.series != h.series);
        match retention_change(h.retain_until, c.retain_until) {
            RetentionChange::Same => rule.same += 1,
            RetentionChange::Shorten(_) => rule.shorten += 1,
            RetentionChange::Extend(to) => {
                rule.extend += 1;
                diff.extensions.push(Extension {
                    record: super::record_id(h.record),
                    object_key: h.object_key.clone().into_owned(),
                    object_version: h.object_version.to_owned(),
                    retain_until: to,
                });
            }
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, LockMode};
    use crate::hash::Hash;
    use crate::lifecycle::Replay;
    use crate::rules::{
        AddressPattern, Disposition, Matcher, MessageFacts, Outcome, RetentionStart, Rule,
    };
    use crate::time::UnixTime;

    const ARCHIVED: UnixTime = UnixTime(1_780_000_000);

    fn schedule(chief: &str, default: &str) -> RetentionSchedule {
        let outcome = |series: &str, retain: &str| {
            let p: crate::retention::Period = retain.parse().unwrap();
            let d = if p == crate::retention::Period::Permanent {
                Disposition::Permanent
            } else {
                Disposition::Destroy
            };
            Outcome::new(series, p, RetentionStart::ArchivedAt, d).unwrap()
        };
        RetentionSchedule::new(
            vec![
                Rule::new(
                    "chief",
                    Matcher {
                        from: vec![AddressPattern::parse("chief@city.gov").unwrap()],
                        ..Matcher::default()
                    },
                    outcome("GS 1-07", chief),
                )
                .unwrap(),
            ],
            outcome("GS 1-03", default),
        )
        .unwrap()
    }

    fn ingest(r: &mut Replay, index: u64, id: &str, series: &str, until: RetainUntil) {
        r.apply(Entry {
            index,
            prev: Hash::default(),
            logged_at: ARCHIVED,
            record: RecordId::new(id).unwrap(),
            body: EntryBody::Ingest {
                series: series.into(),
                retain_until: until,
                lock_mode: LockMode::Compliance,
                object_key: format!("records/{id}"),
                object_version: "v".into(),
                stored_sha256: Hash::default(),
                stored_size: 1,
                original_commitment: Hash::default(),
                dictionary: None,
                header_index: None,
            },
        })
        .unwrap();
    }

    fn facts(from: &str) -> RecordFacts {
        RecordFacts {
            facts: MessageFacts {
                from: vec![from.into()],
                ..MessageFacts::default()
            },
            archived_at: ARCHIVED,
        }
    }

    #[test]
    fn the_chiefs_mail_archived_under_the_default_rule_is_extended_to_permanent() {
        let old = schedule("P3Y", "P3Y");
        let three_years = old.classify(&facts("x@y.z").facts, ARCHIVED).retain_until;
        let mut r = Replay::new();
        ingest(&mut r, 0, "chief", "GS 1-03", three_years);
        ingest(&mut r, 1, "clerk", "GS 1-03", three_years);
        ingest(&mut r, 2, "unread", "GS 1-03", three_years);
        let mut known = BTreeMap::new();
        known.insert("chief".to_owned(), facts("chief@city.gov"));
        known.insert("clerk".to_owned(), facts("clerk@city.gov"));
        let diff = policy_diff(r.histories(), &schedule("Permanent", "P3Y"), &known);
        assert_eq!(diff.extensions.len(), 1);
        assert_eq!(diff.extensions[0].record.as_str(), "chief");
        assert_eq!(
            diff.extensions[0].entry(),
            EntryBody::RetentionExtended {
                retain_until: RetainUntil::Permanent
            }
        );
        assert_eq!(diff.rules["chief"].extend, 1);
        assert_eq!(diff.rules["chief"].series_changed, 1);
        assert_eq!(diff.rules["default"].same, 1);
        assert_eq!(diff.unreadable, 1);
        assert_eq!(
            diff.to_string(),
            "1 records extended, 0 shortened by the edit (destroyable when their lock ends), 1 unchanged, 1 unreadable (left as they are)"
        );
    }

    #[test]
    fn a_shorter_policy_logs_nothing_and_counts_the_records() {
        let long = schedule("P10Y", "P10Y");
        let ten = long.classify(&facts("x@y.z").facts, ARCHIVED).retain_until;
        let mut r = Replay::new();
        ingest(&mut r, 0, "a", "GS 1-03", ten);
        let mut known = BTreeMap::new();
        known.insert("a".to_owned(), facts("a@city.gov"));
        let diff = policy_diff(r.histories(), &schedule("P1Y", "P1Y"), &known);
        assert!(diff.extensions.is_empty());
        assert_eq!((diff.extended(), diff.shortened(), diff.same()), (0, 1, 0));
        assert_eq!(
            retention_change(RetainUntil::Permanent, ten),
            RetentionChange::Shorten(ten)
        );
        assert_eq!(
            retention_change(ten, RetainUntil::Permanent),
            RetentionChange::Extend(RetainUntil::Permanent)
        );
    }
}
