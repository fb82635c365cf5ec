//! Eligibility branch by branch, the plan, the two-phase protocol crashed at every step, and
//! the certificate's exact bytes.

use super::certificate::*;
use super::*;
use crate::entry::{Entry, LockMode};
use crate::log::RecordLog;
use crate::note::{NoteError, NoteSigner, NoteVerifier};

const T0: i64 = 1_795_836_120; // 2026-11-28T03:22:00Z
const DAY: i64 = 86_400;

fn t(s: i64) -> UnixTime {
    UnixTime(T0 + s)
}

fn ingest(series: &str, retain_until: RetainUntil, size: u64, id: &str) -> EntryBody {
    EntryBody::Ingest {
        series: series.into(),
        retain_until,
        lock_mode: LockMode::Compliance,
        object_key: format!("records/{id}"),
        object_version: format!("v-{id}"),
        stored_sha256: Hash::of(id.as_bytes()),
        stored_size: size,
        original_commitment: Hash::of(b"c"),
        dictionary: None,
        header_index: None,
    }
}

/// A log as a list of entries (what was persisted), with a clock.
#[derive(Default)]
struct Log {
    writer: RecordLog,
    entries: Vec<Entry>,
    clock: i64,
}

impl Log {
    fn append(&mut self, id: &str, body: EntryBody) {
        self.clock += 60;
        let e = self
            .writer
            .append(t(self.clock), RecordId::new(id).unwrap(), body)
            .unwrap();
        self.entries.push(e);
    }

    fn ingest(&mut self, id: &str, series: &str, retain_until: RetainUntil) {
        self.append(id, ingest(series, retain_until, 100, id));
    }

    fn replay(&self) -> Replay {
        let mut r = Replay::new();
        for e in &self.entries {
            r.apply(e.clone()).unwrap();
        }
        r
    }
}

fn history(id: &'static str) -> RecordHistory<'static> {
    RecordHistory {
        record: id,
        series: "GS 1-01",
        ingest_index: 0,
        ingested_at: t(0),
        object_key: Cow::Owned(format!("records/{id}")),
        object_version: "v1",
        stored_size: 10,
        dictionary: None,
        retain_until: RetainUntil::Until(t(0)),
        holds: vec![],
        authorized: None,
        destroyed: None,
    }
}

fn approval(series: &str, earliest: i64, latest: i64) -> Approval {
    Approval {
        review: "police/gs-1-01-2026-11".into(),
        decided_by: "J. Smith, Custodian of Records".into(),
        reference: "OD-2026-17".into(),
        series: series.into(),
        earliest: t(earliest),
        latest: t(latest),
        ingested_before: u64::MAX,
    }
}

#[test]
fn replay_follows_a_record_through_its_life() {
    let mut log = Log::default();
    log.ingest("a", "GS 1-01", RetainUntil::Until(t(DAY)));
    log.append(
        "a",
        EntryBody::HoldPlaced {
            hold: "ns/h1".into(),
        },
    );
    log.append(
        "a",
        EntryBody::RetentionExtended {
            retain_until: RetainUntil::Until(t(2 * DAY)),
        },
    );
    log.append(
        "a",
        EntryBody::HoldReleased {
            hold: "ns/h1".into(),
        },
    );
    log.append(
        "a",
        EntryBody::HoldPlaced {
            hold: "ns/h2".into(),
        },
    );
    let r = log.replay();
    let h = r.get("a").unwrap();
    assert_eq!(h.series, "GS 1-01");
    assert_eq!(h.retain_until, RetainUntil::Until(t(2 * DAY)));
    assert_eq!(h.holds, vec!["ns/h2"]);
    assert_eq!(h.object_key, "records/a");
    assert_eq!(h.object_version, "v-a");
    assert_eq!(h.stored_size, 100);
    assert!(h.authorized.is_none() && h.destroyed.is_none());

    log.append(
        "a",
        EntryBody::HoldReleased {
            hold: "ns/h2".into(),
        },
    );
    log.append(
        "a",
        EntryBody::DestroyAuthorized {
            retain_until: RetainUntil::Until(t(2 * DAY)),
            disposition: Disposition::Destroy,
        },
    );
    log.append(
        "a",
        EntryBody::Destroyed {
            object_key: "records/a".into(),
            object_versions: vec!["v-a".into()],
        },
    );
    let r = log.replay();
    let h = r.get("a").unwrap();
    assert_eq!(h.authorized.unwrap().index, 6);
    assert_eq!(h.destroyed.unwrap().index, 7);
    assert_eq!((r.size(), r.len()), (8, 1));

    // What the verifier reports as faults comes back as anomalies.
    let mut r = Replay::new();
    let e = |index, record: &str, body| Entry {
        index,
        prev: Hash::default(),
        logged_at: t(0),
        record: RecordId::new(record).unwrap(),
        body,
    };
    r.apply(e(0, "x", ingest("S", RetainUntil::Until(t(9)), 1, "x")))
        .unwrap();
    assert_eq!(
        r.apply(e(1, "x", ingest("S", RetainUntil::Until(t(9)), 1, "x"))),
        Err(Anomaly::DuplicateIngest)
    );
    assert_eq!(
        r.apply(e(2, "y", EntryBody::HoldPlaced { hold: "h".into() })),
        Err(Anomaly::UnknownRecord)
    );
    assert_eq!(
        r.apply(e(
            3,
            "x",
            EntryBody::RetentionExtended {
                retain_until: RetainUntil::Until(t(1))
            }
        )),
        Err(Anomaly::RetentionShortened {
            kept: RetainUntil::Until(t(9))
        })
    );
}

// ---- eligibility, one test per branch ----------------------------------------------------

#[test]
fn eligible_when_retention_ended_and_disposition_destroy() {
    let h = history("a");
    for now in [t(0), t(1)] {
        assert_eq!(
            destruction_eligibility(&h, now, RuleDisposition::Destroy, &[]),
            Eligibility::Eligible {
                retain_until: t(0),
                disposition: Disposition::Destroy,
                approval: None
            }
        );
    }
}

#[test]
fn retained_until_retain_until() {
    let h = history("a");
    let e = destruction_eligibility(&h, t(-1), RuleDisposition::Destroy, &[]);
    assert_eq!(e, Eligibility::Retained(t(0)));
    assert_eq!(e.blocked(), Some(Blocked::Retained));
    assert_eq!(e.to_string(), "still retained until 2026-11-28T03:22:00Z");
}

#[test]
fn permanent_never() {
    let mut h = history("a");
    assert_eq!(
        destruction_eligibility(&h, t(100 * 365 * DAY), RuleDisposition::Permanent, &[]),
        Eligibility::Permanent
    );
    h.retain_until = RetainUntil::Permanent;
    assert_eq!(
        destruction_eligibility(&h, t(100 * 365 * DAY), RuleDisposition::Destroy, &[]),
        Eligibility::Permanent
    );
}

#[test]
fn held_records_are_not_destroyed() {
    let mut h = history("a");
    h.holds = vec!["ns/case-17"];
    let e = destruction_eligibility(&h, t(DAY), RuleDisposition::Destroy, &[]);
    assert_eq!(e, Eligibility::Held(vec!["ns/case-17".into()]));
    assert_eq!(e.to_string(), "held by ns/case-17");
    // Held wins over still retained: the hold is what will keep it.
    assert_eq!(
        destruction_eligibility(&h, t(-DAY), RuleDisposition::Destroy, &[]).blocked(),
        Some(Blocked::Held)
    );
}

#[test]
fn review_needs_a_covering_approval() {
    let h = history("a");
    assert_eq!(
        destruction_eligibility(&h, t(DAY), RuleDisposition::Review, &[]),
        Eligibility::AwaitingReview
    );
    // Another series, or a range that misses the record: still waiting.
    for other in [approval("GS 1-07", -DAY, DAY), approval("GS 1-01", 1, DAY)] {
        assert_eq!(
            destruction_eligibility(&h, t(DAY), RuleDisposition::Review, &[other]),
            Eligibility::AwaitingReview
        );
    }
    let a = approval("GS 1-01", -DAY, 0);
    let e = destruction_eligibility(
        &h,
        t(DAY),
        RuleDisposition::Review,
        std::slice::from_ref(&a),
    );
    assert_eq!(
        e,
        Eligibility::Eligible {
            retain_until: t(0),
            disposition: Disposition::ReviewApproved,
            approval: Some(a)
        }
    );
    assert!(e.to_string().contains("approved by J. Smith"));
    // A record ingested after the batch was computed is not in it, whatever its date.
    let late = Approval {
        ingested_before: h.ingest_index,
        ..approval("GS 1-01", -DAY, 0)
    };
    assert_eq!(
        destruction_eligibility(&h, t(DAY), RuleDisposition::Review, &[late]),
        Eligibility::AwaitingReview
    );
    // An approval does not shorten retention.
    assert_eq!(
        destruction_eligibility(
            &h,
            t(-1),
            RuleDisposition::Review,
            &[approval("GS 1-01", -DAY, 0)]
        ),
        Eligibility::Retained(t(0))
    );
}

#[test]
fn authorized_and_destroyed_records_are_not_decided_again() {
    let mut h = history("a");
    h.authorized = Some(Authorization {
        index: 3,
        at: t(5),
        retain_until: RetainUntil::Until(t(0)),
        disposition: Disposition::Destroy,
    });
    // Even if a hold arrived since: the authorization is logged, the run finishes it.
    h.holds = vec!["ns/late"];
    assert_eq!(
        destruction_eligibility(&h, t(DAY), RuleDisposition::Destroy, &[]),
        Eligibility::InProgress
    );
    h.destroyed = Some(Destruction { index: 4, at: t(6) });
    assert_eq!(
        destruction_eligibility(&h, t(DAY), RuleDisposition::Destroy, &[]),
        Eligibility::Destroyed
    );
}

// ---- the plan ----------------------------------------------------------------------------

fn mixed_log() -> Log {
    let mut log = Log::default();
    log.ingest("gc-2", "GS 1-01", RetainUntil::Until(t(-2 * DAY)));
    log.ingest("gc-1", "GS 1-01", RetainUntil::Until(t(-DAY)));
    log.ingest("gc-late", "GS 1-01", RetainUntil::Until(t(DAY)));
    log.ingest("chief", "GS 1-07", RetainUntil::Permanent);
    log.ingest("held", "GS 1-01", RetainUntil::Until(t(-DAY)));
    log.append(
        "held",
        EntryBody::HoldPlaced {
            hold: "police/prr-114".into(),
        },
    );
    log.ingest("inv-1", "GS 2-03", RetainUntil::Until(t(-3 * DAY)));
    log.ingest("inv-2", "GS 2-03", RetainUntil::Until(t(-DAY)));
    log.ingest("inv-held", "GS 2-03", RetainUntil::Until(t(-DAY)));
    log.append(
        "inv-held",
        EntryBody::HoldPlaced {
            hold: "police/prr-115".into(),
        },
    );
    log.ingest("ab", "AA 0-00", RetainUntil::Until(t(-5 * DAY)));
    log
}

fn rule_of(h: &RecordHistory<'_>) -> RuleDisposition {
    match h.series {
        "GS 1-07" => RuleDisposition::Permanent,
        "GS 2-03" => RuleDisposition::Review,
        _ => RuleDisposition::Destroy,
    }
}

#[test]
fn the_plan_groups_by_series_and_counts_what_is_blocked() {
    let log = mixed_log();
    let r = log.replay();
    let now = log.entries.last().unwrap().logged_at;
    let plan = DestructionPlan::new(r.histories(), &rule_of, &[], now);
    let series: Vec<&str> = plan.destroy.iter().map(|b| b.series.as_str()).collect();
    assert_eq!(series, ["AA 0-00", "GS 1-01"]);
    let gs = &plan.destroy[1];
    let ids: Vec<&str> = gs.records.iter().map(|r| r.record.as_str()).collect();
    assert_eq!(ids, ["gc-1", "gc-2"]);
    assert_eq!((gs.count(), gs.bytes), (2, 200));
    assert_eq!((gs.earliest, gs.latest), (t(-2 * DAY), t(-DAY)));
    assert_eq!(plan.count(), 3);
    assert_eq!(
        plan.blocked,
        BTreeMap::from([
            (Blocked::Retained, 1),
            (Blocked::Permanent, 1),
            (Blocked::Held, 2),
            (Blocked::AwaitingReview, 2),
        ])
    );
    assert_eq!(plan.review.len(), 1);
    assert_eq!(plan.review[0].series, "GS 2-03");
    assert_eq!(
        plan.review[0].digest(),
        records_digest(["inv-2", "inv-1", "inv-held"])
    );
    assert_eq!(
        (plan.review[0].earliest, plan.review[0].latest),
        (t(-3 * DAY), t(-DAY))
    );

    // Deterministic whatever order the histories come in.
    let mut reversed: Vec<RecordHistory<'_>> = r.histories().collect();
    reversed.reverse();
    assert_eq!(DestructionPlan::new(reversed, &rule_of, &[], now), plan);

    // Phase one: one destroy-authorized per planned record, in plan order.
    let auth = plan.authorizations();
    let ids: Vec<&str> = auth.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["ab", "gc-1", "gc-2"]);
    assert_eq!(
        auth[1].1,
        EntryBody::DestroyAuthorized {
            retain_until: RetainUntil::Until(t(-DAY)),
            disposition: Disposition::Destroy
        }
    );

    // An approval of the review batch makes it eligible.
    let b = &plan.review[0];
    let a = Approval {
        review: "police/gs-2-03".into(),
        decided_by: "J. Smith".into(),
        reference: "OD-1".into(),
        series: b.series.clone(),
        earliest: b.earliest,
        latest: b.latest,
        ingested_before: r.size(),
    };
    let approved = DestructionPlan::new(r.histories(), &rule_of, &[a], now);
    assert_eq!(approved.count(), 5);
    assert!(approved.review.is_empty());
    assert!(
        approved.destroy[2]
            .records
            .iter()
            .all(|r| r.disposition == Disposition::ReviewApproved && r.approval.is_some())
    );
}

#[test]
fn records_digest_is_over_sorted_ids() {
    assert_eq!(records_digest(["b", "a"]), Hash::of(b"a\nb\n"));
    assert_eq!(records_digest(["a", "b", "a"]), Hash::of(b"a\nb\n"));
}

// ---- the two-phase protocol, crashed at every step ---------------------------------------

/// A store of object versions and a log whose appends are lost unless persisted: the
/// executor as the operator will run it, with a step counter that can stop it anywhere.
struct World {
    log: Log,
    /// Entries appended but not yet written (lost on a crash).
    unpersisted: Vec<(String, EntryBody)>,
    store: BTreeMap<String, Vec<HeldVersion>>,
    certificates: Vec<Certificate>,
    steps: usize,
    crash_at: usize,
}

struct Crashed;

impl World {
    fn new() -> Self {
        let mut log = mixed_log();
        let mut store = BTreeMap::new();
        for e in &log.entries {
            if let EntryBody::Ingest {
                object_key,
                object_version,
                ..
            } = &e.body
            {
                let sidecar = format!("sidecars/{}", e.record);
                store.insert(
                    object_key.clone(),
                    vec![HeldVersion {
                        key: object_key.clone(),
                        version_id: object_version.clone(),
                        delete_marker: false,
                    }],
                );
                store.insert(
                    sidecar.clone(),
                    vec![HeldVersion {
                        key: sidecar,
                        version_id: format!("s-{}", e.record),
                        delete_marker: false,
                    }],
                );
            }
        }
        // Someone put a delete marker over one record: it must go too.
        store.get_mut("records/gc-1").unwrap().push(HeldVersion {
            key: "records/gc-1".into(),
            version_id: "marker".into(),
            delete_marker: true,
        });
        log.clock += 3600;
        Self {
            log,
            unpersisted: Vec::new(),
            store,
            certificates: Vec::new(),
            steps: 0,
            crash_at: usize::MAX,
        }
    }

    fn step(&mut self) -> Result<(), Crashed> {
        self.steps += 1;
        if self.steps > self.crash_at {
            self.unpersisted.clear();
            return Err(Crashed);
        }
        Ok(())
    }

    /// Bundles, then the checkpoint: one step, after which the appends survive.
    fn persist(&mut self) -> Result<(), Crashed> {
        self.step()?;
        for (id, body) in std::mem::take(&mut self.unpersisted) {
            self.log.append(&id, body);
        }
        Ok(())
    }

    fn held(&self, h: &RecordHistory<'_>) -> Vec<HeldVersion> {
        let sidecar = format!("sidecars/{}", h.record);
        [h.object_key.as_ref(), sidecar.as_str()]
            .iter()
            .flat_map(|k| self.store.get(*k).cloned().unwrap_or_default())
            .collect()
    }

    fn delete(&mut self, v: &HeldVersion) -> Result<(), Crashed> {
        self.step()?;
        if let Some(vs) = self.store.get_mut(&v.key) {
            vs.retain(|x| x != v);
            if vs.is_empty() {
                self.store.remove(&v.key);
            }
        }
        Ok(())
    }

    /// Phase two for every authorized record: delete what is left, then the tombstone.
    fn finish(&mut self, replay: &Replay) -> Result<(), Crashed> {
        for h in pending(replay) {
            let mut deleted = Vec::new();
            loop {
                match next_step(&h, &self.held(&h), &deleted) {
                    NextStep::Delete(vs) => {
                        for v in vs {
                            self.delete(&v)?;
                            deleted.push(v);
                        }
                    }
                    NextStep::Tombstone(id, body) => {
                        self.unpersisted.push((id.as_str().to_owned(), *body));
                        break;
                    }
                    NextStep::Done | NextStep::NotAuthorized => break,
                }
            }
        }
        self.persist()
    }

    fn run(&mut self) -> Result<(), Crashed> {
        let now = t(self.log.clock);
        // Whatever an earlier run left authorized is finished first.
        let replay = self.log.replay();
        self.finish(&replay)?;
        let replay = self.log.replay();
        let plan = DestructionPlan::new(replay.histories(), &rule_of, &[], now);
        if plan.count() > 0 {
            for (id, body) in plan.authorizations() {
                self.unpersisted.push((id.as_str().to_owned(), body));
            }
            self.persist()?;
            let replay = self.log.replay();
            self.finish(&replay)?;
        }
        // Certify every tombstone no certificate lists yet.
        let replay = self.log.replay();
        let certified: BTreeSet<&str> = self
            .certificates
            .iter()
            .flat_map(Certificate::records)
            .map(RecordId::as_str)
            .collect();
        let todo = uncertified(&replay, &certified);
        if !todo.is_empty() {
            let records = todo
                .iter()
                .map(|h| CertifiedRecord {
                    record: RecordId::new(h.record).unwrap(),
                    series: h.series.to_owned(),
                    retain_until: match h.retain_until {
                        RetainUntil::Until(t) => t,
                        RetainUntil::Permanent => unreachable!(),
                    },
                    authorization: CertifiedAuthorization::Rule {
                        name: "default".into(),
                    },
                })
                .collect();
            let cert = Certificate::new(
                "o",
                &format!("run-{}", self.steps),
                now,
                (self.log.writer.size(), self.log.writer.root()),
                METHOD_S3_COMPLIANCE,
                records,
                &|s| s.to_owned(),
            )
            .unwrap();
            self.step()?;
            self.certificates.push(cert);
        }
        Ok(())
    }
}

#[test]
fn a_crash_at_any_step_completes_on_the_next_run_and_logs_each_tombstone_once() {
    let mut clean = World::new();
    assert!(clean.run().is_ok());
    let total = clean.steps;
    assert!(total > 10, "{total} steps");
    let destroyed = ["ab", "gc-1", "gc-2"];
    for crash_at in 0..=total {
        let mut w = World::new();
        w.crash_at = crash_at;
        let first = w.run();
        assert_eq!(first.is_err(), crash_at < total, "crash at {crash_at}");
        w.crash_at = usize::MAX;
        assert!(w.run().is_ok());
        // And once more: nothing left to do, nothing logged twice.
        let size = w.log.entries.len();
        assert!(w.run().is_ok());
        assert_eq!(w.log.entries.len(), size, "crash at {crash_at}");
        for id in destroyed {
            let count = |kind: &str| {
                w.log
                    .entries
                    .iter()
                    .filter(|e| e.record.as_str() == id && e.body.kind() == kind)
                    .count()
            };
            assert_eq!(count("destroy-authorized"), 1, "{id}, crash at {crash_at}");
            assert_eq!(count("destroyed"), 1, "{id}, crash at {crash_at}");
            assert!(!w.store.contains_key(&format!("records/{id}")), "{id}");
            assert!(!w.store.contains_key(&format!("sidecars/{id}")), "{id}");
            let listed = w
                .certificates
                .iter()
                .flat_map(Certificate::records)
                .filter(|r| r.as_str() == id)
                .count();
            assert_eq!(listed, 1, "{id} certified once, crash at {crash_at}");
        }
        // Nothing else was touched.
        for id in ["gc-late", "chief", "held", "inv-1", "inv-2", "inv-held"] {
            assert!(w.store.contains_key(&format!("records/{id}")), "{id}");
        }
        // Every tombstone names the logged version.
        for e in &w.log.entries {
            if let EntryBody::Destroyed {
                object_versions, ..
            } = &e.body
            {
                assert!(object_versions.contains(&format!("v-{}", e.record)));
            }
        }
    }
}

#[test]
fn deletion_order_and_tombstone_versions() {
    let mut h = history("a");
    h.object_version = "v1";
    h.authorized = Some(Authorization {
        index: 1,
        at: t(0),
        retain_until: RetainUntil::Until(t(0)),
        disposition: Disposition::Destroy,
    });
    let v = |key: &str, id: &str, marker| HeldVersion {
        key: key.into(),
        version_id: id.into(),
        delete_marker: marker,
    };
    let held = vec![
        v("records/a", "m1", true),
        v("records/a", "v1", false),
        v("sidecars/a", "s1", false),
    ];
    let NextStep::Delete(order) = next_step(&h, &held, &[]) else {
        panic!("expected deletions")
    };
    assert_eq!(order[0], held[1], "data versions before delete markers");
    assert_eq!(order[1], held[0]);
    // All deleted this run: the tombstone names the record's versions in deletion order.
    assert_eq!(
        next_step(&h, &[], &order),
        NextStep::Tombstone(
            RecordId::new("a").unwrap(),
            Box::new(EntryBody::Destroyed {
                object_key: "records/a".into(),
                object_versions: vec!["v1".into(), "m1".into()],
            })
        )
    );
    // Deleted by a run that crashed: the logged version, first.
    assert_eq!(
        tombstone(&h, &[v("records/a", "m1", true)]),
        EntryBody::Destroyed {
            object_key: "records/a".into(),
            object_versions: vec!["v1".into(), "m1".into()],
        }
    );
    h.authorized = None;
    assert_eq!(next_step(&h, &held, &[]), NextStep::NotAuthorized);
}

// ---- certificates ------------------------------------------------------------------------

fn sample_certificate() -> Certificate {
    let rec = |id: &str, series: &str, until: i64, authorization| CertifiedRecord {
        record: RecordId::new(id).unwrap(),
        series: series.into(),
        retain_until: t(until),
        authorization,
    };
    let rule = CertifiedAuthorization::Rule {
        name: "general-correspondence".into(),
    };
    let review = CertifiedAuthorization::Review {
        review: "police/gs-2-03-2026-11".into(),
        decided_by: "J. Smith, Custodian of Records".into(),
        reference: "MO-OD-2026-17".into(),
    };
    Certificate::new(
        "mailvault.io/police/chief",
        &run_id(t(DAY)),
        t(DAY + 300),
        (42, Hash::of(b"root")),
        METHOD_S3_COMPLIANCE,
        vec![
            rec("r2", "GS 1-01", -DAY, rule.clone()),
            rec("r1", "GS 1-01", -2 * DAY, rule),
            rec("r9", "GS 2-03", -3 * DAY, review),
        ],
        &|s| match s {
            "GS 1-01" => "General correspondence".into(),
            other => other.into(),
        },
    )
    .unwrap()
}

#[test]
fn certificate_bytes_are_canonical() {
    let c = sample_certificate();
    let text = c.to_text();
    let want = format!(
        "mailvault-destruction-certificate/1
origin mailvault.io/police/chief
run 20261129T032200Z
completed-at 2026-11-29T03:27:00Z
checkpoint-size 42
checkpoint-root {}
method deleted every object version and delete marker from S3 under Object Lock COMPLIANCE after retention ended
records 3
records-sha256 {}
series GS 1-01
description General correspondence
quantity 2
earliest-retain-until 2026-11-26T03:22:00Z
latest-retain-until 2026-11-27T03:22:00Z
authorization rule general-correspondence
record r1
record r2
series GS 2-03
description GS 2-03
quantity 1
earliest-retain-until 2026-11-25T03:22:00Z
latest-retain-until 2026-11-25T03:22:00Z
authorization review police/gs-2-03-2026-11
decided-by J. Smith, Custodian of Records
reference MO-OD-2026-17
record r9
",
        Hash::of(b"root"),
        Hash::of(b"r1\nr2\nr9\n")
    );
    assert_eq!(text, want);
    assert_eq!(Certificate::parse(&text).unwrap(), c);
    assert_eq!(Certificate::parse(&text).unwrap().to_text(), text);
    assert_eq!(certificate_key(&c.run), "certificates/20261129T032200Z");
    assert_eq!(
        parse_certificate_key("certificates/20261129T032200Z"),
        Some("20261129T032200Z")
    );
    assert_eq!(parse_certificate_key("certificates/a/b"), None);
}

#[test]
fn certificates_are_signed_notes() {
    let c = sample_certificate();
    let signer = NoteSigner::new("mailvault.io/police/chief", &[42; 32]).unwrap();
    let note = c.sign(&signer).unwrap();
    let v = NoteVerifier::parse(&signer.verifier_key()).unwrap();
    let trusted = std::slice::from_ref(&v);
    assert_eq!(
        Certificate::open(note.as_bytes(), trusted, Some("mailvault.io/police/chief")).unwrap(),
        c
    );
    assert!(matches!(
        Certificate::open(note.as_bytes(), trusted, Some("mailvault.io/police/other")),
        Err(CertificateError::WrongOrigin { .. })
    ));
    let forged = note.replace("record r9", "record r8");
    assert!(matches!(
        Certificate::open(forged.as_bytes(), trusted, None),
        Err(CertificateError::Note(NoteError::BadSignature(_)))
    ));
    let stranger = NoteSigner::new("someone", &[1; 32]).unwrap();
    assert!(matches!(
        Certificate::open(c.sign(&stranger).unwrap().as_bytes(), trusted, None),
        Err(CertificateError::Note(NoteError::NoTrustedSignature(_)))
    ));
}

#[test]
fn malformed_certificates_say_why() {
    let text = sample_certificate().to_text();
    for (case, from, to) in [
        ("count", "records 3\n", "records 4\n"),
        ("digest", "records-sha256 ", "records-sha256 00"),
        ("quantity", "quantity 2\n", "quantity 3\n"),
        (
            "unsorted records",
            "record r1\nrecord r2\n",
            "record r2\nrecord r1\n",
        ),
        ("duplicate record", "record r9\n", "record r1\n"),
        ("field order", "run ", "rum "),
        (
            "no authorization",
            "authorization rule general-correspondence\n",
            "",
        ),
        (
            "review without its reference",
            "reference MO-OD-2026-17\n",
            "",
        ),
        (
            "unknown authorization",
            "authorization rule",
            "authorization judge",
        ),
        ("trailing junk", "record r9\n", "record r9\nhello world\n"),
        (
            "dates backwards",
            "latest-retain-until 2026-11-27T03:22:00Z",
            "latest-retain-until 2026-11-25T03:22:00Z",
        ),
    ] {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "{case}");
        assert!(
            matches!(
                Certificate::parse(&bad),
                Err(CertificateError::Malformed(_))
            ),
            "{case} accepted"
        );
    }
    assert!(
        Certificate::new("o", "r", t(0), (1, Hash::default()), "m", vec![], &|s| s
            .into())
        .is_err()
    );
}

#[test]
fn an_extended_review_extends_its_current_batch_once_and_refuses_a_shorter_date() {
    use super::review_extension::{ExtensionDecision, ExtensionOrder, extension_decision};
    let mut log = Log::default();
    log.ingest("a", "GS 1-01", RetainUntil::Until(t(DAY)));
    log.ingest("b", "GS 1-01", RetainUntil::Until(t(2 * DAY)));
    log.ingest("c", "GS 1-01", RetainUntil::Until(t(5 * DAY))); // falls due later: not in it
    log.ingest("d", "GS 9", RetainUntil::Until(t(DAY))); // another series
    let order = |digest: Hash, until: i64| ExtensionOrder {
        batch: approval("GS 1-01", DAY, 2 * DAY),
        records_digest: digest,
        extend_until: t(until),
    };
    let digest = records_digest(["a", "b"]);
    let ids = |d: &ExtensionDecision| match d {
        ExtensionDecision::Extend { records, already } => (
            records
                .iter()
                .map(|e| e.record.as_str().to_owned())
                .collect::<Vec<_>>(),
            *already,
        ),
        other => panic!("{other:?}"),
    };
    let d = extension_decision(&log.replay(), &order(digest, 30 * DAY));
    assert_eq!(ids(&d), (vec!["a".to_owned(), "b".to_owned()], 0));
    if let ExtensionDecision::Extend { records, .. } = &d {
        assert_eq!(records[0].retain_until, RetainUntil::Until(t(30 * DAY)));
        assert_eq!(records[0].object_version, "v-a");
    }

    // Not after the batch's latest retain-until: refused, in words.
    match extension_decision(&log.replay(), &order(digest, 2 * DAY)) {
        ExtensionDecision::Refused(m) => assert!(m.contains("not after"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A digest the batch no longer has: stale.
    assert_eq!(
        extension_decision(&log.replay(), &order(records_digest(["a"]), 30 * DAY)),
        ExtensionDecision::Stale
    );

    // Half done (a crash after "a"): the batch is the same, only "b" is left.
    log.append(
        "a",
        EntryBody::RetentionExtended {
            retain_until: RetainUntil::Until(t(30 * DAY)),
        },
    );
    let d = extension_decision(&log.replay(), &order(digest, 30 * DAY));
    assert_eq!(ids(&d), (vec!["b".to_owned()], 1));
    log.append(
        "b",
        EntryBody::RetentionExtended {
            retain_until: RetainUntil::Until(t(30 * DAY)),
        },
    );
    let d = extension_decision(&log.replay(), &order(digest, 30 * DAY));
    assert_eq!(ids(&d), (Vec::new(), 2));

    // Extended records are retained until then, and fall due (for a new review) after.
    let r = log.replay();
    let a = r.get("a").unwrap();
    assert_eq!(
        destruction_eligibility(&a, t(29 * DAY), RuleDisposition::Review, &[]),
        Eligibility::Retained(t(30 * DAY))
    );
    assert_eq!(
        destruction_eligibility(&a, t(31 * DAY), RuleDisposition::Review, &[]),
        Eligibility::AwaitingReview
    );
}
