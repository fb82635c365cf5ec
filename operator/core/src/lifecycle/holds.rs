//! Legal holds on records: which holds must be placed on, or released from, each record, and
//! what the record's S3 legal-hold flag must be.
//!
//! `holds (as written now) x RecordHistory (holds the log has in force) x facts --HoldPlan-->
//!  per record: flag on/off, then hold-placed / hold-released entries`
//!
//! S3 keeps one legal-hold flag per object version, while several holds may hold one record: the
//! flag is on while any hold the log has in force holds the record. A hold covers a record when
//! it is not released and every criterion it gives holds: the record id is listed (if ids are
//! given), the matcher matches the message (the same [`Matcher`] as retention rules), and the
//! message date ([`crate::rules::message_date`]) lies in the date range. A hold that no longer
//! covers a record it held (released, or edited narrower) is released from it. Holds the caller
//! does not name are left as the log has them. A record whose destruction is authorized or done
//! is never changed.

use crate::entry::{EntryBody, RecordId};
use crate::lifecycle::RecordHistory;
use crate::rules::{Matcher, MessageFacts, message_date};
use crate::time::UnixTime;
use std::collections::{BTreeMap, BTreeSet};

/// An inclusive range of message dates; an open end is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateRange {
    /// First instant (inclusive).
    pub from: Option<UnixTime>,
    /// Last instant (inclusive).
    pub to: Option<UnixTime>,
}

impl DateRange {
    /// Whether `t` lies in the range.
    pub fn contains(&self, t: UnixTime) -> bool {
        self.from.is_none_or(|f| f <= t) && self.to.is_none_or(|e| t <= e)
    }
}

/// A legal hold as written now.
#[derive(Debug, Clone, Default)]
pub struct Hold {
    /// Its id in the log (`namespace/name` of the `LegalHold`).
    pub id: String,
    /// Which messages; `None`: every message.
    pub matcher: Option<Matcher>,
    /// Which message dates; `None`: any.
    pub dates: Option<DateRange>,
    /// Which record ids; empty: any.
    pub record_ids: BTreeSet<String>,
    /// Released: it holds nothing any more.
    pub released: bool,
    /// Only records ingested at this log position or later are judged (the executor's
    /// incremental runs: a hold unchanged since it was applied through position `n` needs
    /// judging only on records ingested since); earlier records keep what the log says.
    pub from_index: u64,
}

/// What a hold and a policy look at: the message's facts and when it was archived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFacts {
    /// The matcher facts, read from the stored record.
    pub facts: MessageFacts,
    /// When it was archived (its ingest entry's `logged-at`).
    pub archived_at: UnixTime,
}

impl Hold {
    /// Whether judging a record needs its facts (a matcher or a date range).
    pub fn needs_facts(&self) -> bool {
        !self.released && (self.matcher.is_some() || self.dates.is_some())
    }

    /// Whether the hold's record ids admit `record`.
    pub fn admits(&self, record: &str) -> bool {
        self.record_ids.is_empty() || self.record_ids.contains(record)
    }

    /// Whether the hold covers `record`; `None` when that needs facts that are missing.
    pub fn covers(&self, record: &str, facts: Option<&RecordFacts>) -> Option<bool> {
        if self.released || !self.admits(record) {
            return Some(false);
        }
        if !self.needs_facts() {
            return Some(true);
        }
        let f = facts?;
        let matched = self.matcher.as_ref().is_none_or(|m| m.matches(&f.facts));
        let dated = self
            .dates
            .is_none_or(|d| d.contains(message_date(&f.facts, f.archived_at).0));
        Some(matched && dated)
    }

    /// Whether the executor must read `history`'s record to judge it.
    pub fn wants_facts_of(&self, history: &RecordHistory<'_>) -> bool {
        self.needs_facts() && history.ingest_index >= self.from_index && self.admits(history.record)
    }
}

/// What changes on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldChange {
    /// The record.
    pub record: RecordId,
    /// Its object key.
    pub object_key: String,
    /// The version its ingest logged (the one the flag is set on).
    pub object_version: String,
    /// The legal-hold flag to set before logging: `Some(true)` on, `Some(false)` off (no hold
    /// is left in force), `None` unchanged (another hold still holds it).
    pub flag: Option<bool>,
    /// `hold-placed` and `hold-released` entries to log after the flag is set.
    pub entries: Vec<EntryBody>,
}

/// What applying the holds changes, and what they hold afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldPlan {
    /// Records that change, in the order given.
    pub changes: Vec<HoldChange>,
    /// Per hold named by the caller: records it holds once the plan is carried out.
    pub held: BTreeMap<String, u64>,
    /// Records held by any hold (named or not) once the plan is carried out.
    pub held_records: u64,
    /// Records a hold needed facts of that could not be read: left as they are.
    pub unreadable: u64,
    /// Records a hold covers whose destruction is already authorized or done: not held.
    pub past_holding: u64,
    /// Per hold in force in the log that the caller did not name: records it still holds.
    /// Such a hold keeps what it holds but judges no new record (another tool's hold, or one
    /// whose state was lost).
    pub unknown: BTreeMap<String, u64>,
}

impl HoldPlan {
    /// `hold-placed` entries in the plan.
    pub fn placed(&self) -> usize {
        self.count(|b| matches!(b, EntryBody::HoldPlaced { .. }))
    }

    /// `hold-released` entries in the plan.
    pub fn released(&self) -> usize {
        self.count(|b| matches!(b, EntryBody::HoldReleased { .. }))
    }

    fn count(&self, f: impl Fn(&EntryBody) -> bool) -> usize {
        self.changes
            .iter()
            .flat_map(|c| &c.entries)
            .filter(|b| f(b))
            .count()
    }
}

/// The changes that make the log and the records' flags say what `holds` say now. `facts`
/// holds what was read of the records [`Hold::wants_facts_of`] names.
pub fn hold_plan<'a>(
    histories: impl IntoIterator<Item = RecordHistory<'a>>,
    holds: &[Hold],
    facts: &BTreeMap<String, RecordFacts>,
) -> HoldPlan {
    let mut plan = HoldPlan::default();
    for h in holds {
        plan.held.insert(h.id.clone(), 0);
    }
    for history in histories {
        let mut in_force: BTreeSet<&str> = history.holds.iter().copied().collect();
        let finished = history.authorized.is_some() || history.destroyed.is_some();
        let mut entries = Vec::new();
        let mut unreadable = false;
        let mut past = false;
        if finished {
            past = holds.iter().any(|h| {
                history.ingest_index >= h.from_index
                    && !history.holds.contains(&h.id.as_str())
                    && h.covers(history.record, facts.get(history.record)) == Some(true)
            });
        } else {
            for hold in holds {
                if history.ingest_index < hold.from_index {
                    continue;
                }
                let Some(covers) = hold.covers(history.record, facts.get(history.record)) else {
                    unreadable = true;
                    continue;
                };
                let held = in_force.contains(hold.id.as_str());
                if covers && !held {
                    in_force.insert(&hold.id);
                    entries.push(EntryBody::HoldPlaced {
                        hold: hold.id.clone(),
                    });
                } else if !covers && held {
                    in_force.remove(hold.id.as_str());
                    entries.push(EntryBody::HoldReleased {
                        hold: hold.id.clone(),
                    });
                }
            }
        }
        plan.unreadable += u64::from(unreadable);
        plan.past_holding += u64::from(past);
        for id in &in_force {
            if let Some(n) = plan.held.get_mut(*id) {
                *n += 1;
            } else {
                *plan.unknown.entry((*id).to_owned()).or_default() += 1;
            }
        }
        plan.held_records += u64::from(!in_force.is_empty());
        if entries.is_empty() {
            continue;
        }
        let placing = entries
            .iter()
            .any(|e| matches!(e, EntryBody::HoldPlaced { .. }));
        let flag = if in_force.is_empty() {
            Some(false)
        } else if placing || history.holds.is_empty() {
            Some(true)
        } else {
            None
        };
        plan.changes.push(HoldChange {
            record: super::record_id(history.record),
            object_key: history.object_key.clone().into_owned(),
            object_version: history.object_version.to_owned(),
            flag,
            entries,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, LockMode, RetainUntil};
    use crate::hash::Hash;
    use crate::lifecycle::Replay;
    use crate::rules::AddressPattern;

    fn replay(records: &[&str], extra: &[(&str, EntryBody)]) -> Replay {
        let mut r = Replay::new();
        let mut index = 0;
        for id in records {
            r.apply(Entry {
                index,
                prev: Hash::default(),
                logged_at: UnixTime(1_000),
                record: RecordId::new(*id).unwrap(),
                body: EntryBody::Ingest {
                    series: "S".into(),
                    retain_until: RetainUntil::Until(UnixTime(9_000)),
                    lock_mode: LockMode::Compliance,
                    object_key: format!("records/{id}"),
                    object_version: format!("v-{id}"),
                    stored_sha256: Hash::default(),
                    stored_size: 1,
                    original_commitment: Hash::default(),
                    dictionary: None,
                    header_index: None,
                },
            })
            .unwrap();
            index += 1;
        }
        for (id, body) in extra {
            r.apply(Entry {
                index,
                prev: Hash::default(),
                logged_at: UnixTime(1_000),
                record: RecordId::new(*id).unwrap(),
                body: body.clone(),
            })
            .unwrap();
            index += 1;
        }
        r
    }

    fn placed(h: &str) -> EntryBody {
        EntryBody::HoldPlaced { hold: h.into() }
    }
    fn released(h: &str) -> EntryBody {
        EntryBody::HoldReleased { hold: h.into() }
    }

    fn by_ids(id: &str, ids: &[&str]) -> Hold {
        Hold {
            id: id.into(),
            record_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            ..Hold::default()
        }
    }

    fn facts(from: &str, date: i64) -> RecordFacts {
        RecordFacts {
            facts: MessageFacts {
                from: vec![from.into()],
                date: Some(UnixTime(date)),
                ..MessageFacts::default()
            },
            archived_at: UnixTime(10_000),
        }
    }

    #[test]
    fn a_hold_by_ids_places_and_sets_the_flag_then_holds_nothing_more() {
        let r = replay(&["a", "b"], &[]);
        let plan = hold_plan(r.histories(), &[by_ids("ns/h", &["a"])], &BTreeMap::new());
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(plan.changes[0].record.as_str(), "a");
        assert_eq!(plan.changes[0].flag, Some(true));
        assert_eq!(plan.changes[0].object_version, "v-a");
        assert_eq!(plan.changes[0].entries, vec![placed("ns/h")]);
        assert_eq!(plan.held["ns/h"], 1);
        // Once logged, applying it again changes nothing.
        let r = replay(&["a", "b"], &[("a", placed("ns/h"))]);
        let plan = hold_plan(r.histories(), &[by_ids("ns/h", &["a"])], &BTreeMap::new());
        assert!(plan.changes.is_empty());
        assert_eq!((plan.held["ns/h"], plan.held_records), (1, 1));
    }

    #[test]
    fn release_clears_the_flag_only_when_no_other_hold_is_in_force() {
        let r = replay(&["a"], &[("a", placed("ns/one")), ("a", placed("ns/two"))]);
        let mut one = by_ids("ns/one", &["a"]);
        one.released = true;
        let plan = hold_plan(r.histories(), std::slice::from_ref(&one), &BTreeMap::new());
        assert_eq!(plan.changes[0].entries, vec![released("ns/one")]);
        assert_eq!(plan.changes[0].flag, None, "ns/two still holds it");
        assert_eq!(plan.held["ns/one"], 0);
        assert_eq!(plan.held_records, 1);
        let r = replay(
            &["a"],
            &[
                ("a", placed("ns/one")),
                ("a", placed("ns/two")),
                ("a", released("ns/one")),
            ],
        );
        let mut two = by_ids("ns/two", &[]);
        two.released = true;
        let plan = hold_plan(r.histories(), &[one, two], &BTreeMap::new());
        assert_eq!(plan.changes[0].entries, vec![released("ns/two")]);
        assert_eq!(plan.changes[0].flag, Some(false));
        assert_eq!(plan.held_records, 0);
    }

    #[test]
    fn matcher_and_date_range_need_facts_and_an_unreadable_record_is_left_alone() {
        let r = replay(&["a", "b", "c", "d"], &[]);
        let hold = Hold {
            id: "ns/m".into(),
            matcher: Some(Matcher {
                from: vec![AddressPattern::parse("chief@city.gov").unwrap()],
                ..Matcher::default()
            }),
            dates: Some(DateRange {
                from: Some(UnixTime(100)),
                to: Some(UnixTime(200)),
            }),
            ..Hold::default()
        };
        assert!(r.histories().all(|h| hold.wants_facts_of(&h)));
        let mut known = BTreeMap::new();
        known.insert("a".into(), facts("Chief@City.gov", 150));
        known.insert("b".into(), facts("chief@city.gov", 250)); // outside the range
        known.insert("c".into(), facts("clerk@city.gov", 150));
        let plan = hold_plan(r.histories(), &[hold], &known);
        let changed: Vec<&str> = plan.changes.iter().map(|c| c.record.as_str()).collect();
        assert_eq!(changed, ["a"]);
        assert_eq!(plan.unreadable, 1, "d could not be read");
    }

    #[test]
    fn an_edited_narrower_hold_releases_what_it_no_longer_covers_and_others_are_untouched() {
        let r = replay(
            &["a", "b"],
            &[
                ("a", placed("ns/h")),
                ("b", placed("ns/h")),
                ("b", placed("cli/other")),
            ],
        );
        let plan = hold_plan(r.histories(), &[by_ids("ns/h", &["a"])], &BTreeMap::new());
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(plan.changes[0].entries, vec![released("ns/h")]);
        assert_eq!(plan.changes[0].flag, None, "cli/other still holds b");
        // A hold in force that the caller did not name is counted apart, never released.
        assert_eq!(plan.unknown, BTreeMap::from([("cli/other".to_owned(), 1)]));
        assert_eq!(plan.held, BTreeMap::from([("ns/h".to_owned(), 1)]));
    }

    #[test]
    fn incremental_judging_and_records_past_holding() {
        let r = replay(
            &["old", "new", "gone"],
            &[(
                "gone",
                EntryBody::DestroyAuthorized {
                    retain_until: RetainUntil::Until(UnixTime(9_000)),
                    disposition: crate::entry::Disposition::Destroy,
                },
            )],
        );
        let mut every = by_ids("ns/all", &[]);
        every.from_index = 1;
        let plan = hold_plan(r.histories(), &[every], &BTreeMap::new());
        let held: Vec<&str> = plan.changes.iter().map(|c| c.record.as_str()).collect();
        assert_eq!(
            held,
            ["new"],
            "old is before from_index, gone is being destroyed"
        );
        assert_eq!(plan.past_holding, 1);
        assert_eq!((plan.placed(), plan.released()), (1, 0));
    }
}
