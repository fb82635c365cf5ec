//! Every fault class: build a good log, tamper with it in exactly one way, and check that the
//! verifier names that fault (and that the untampered log verifies).

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "test indices are small"
)]

use super::*;
use crate::bundle::encode_bundle;
use crate::checkpoint::CheckpointSigner;
use crate::entry::Disposition;
use crate::layout::checkpoint_key;
use crate::log::RecordLog;
use crate::note::NoteSigner;

const ORIGIN: &str = "mailvault.io/police/chief";
const T0: i64 = 1_795_836_120; // 2026-11-28T03:22:00Z
const YEAR: i64 = 365 * 86_400;

/// A log with its store, built the way the pipeline builds one.
struct Fixture {
    log: RecordLog,
    signer: CheckpointSigner,
    objects: BTreeMap<String, Vec<u8>>,
    inventory: Inventory,
    clock: i64,
}

fn key_of(id: &str) -> String {
    format!("records/{id}")
}

impl Fixture {
    fn new() -> Self {
        let signer =
            CheckpointSigner::new(ORIGIN, NoteSigner::new(ORIGIN, &[42; 32]).unwrap(), None);
        Self {
            log: RecordLog::new(),
            signer,
            objects: BTreeMap::new(),
            inventory: Inventory::new(),
            clock: T0,
        }
    }

    fn tick(&mut self) -> UnixTime {
        self.clock += 60;
        UnixTime(self.clock)
    }

    fn append(&mut self, id: &str, body: EntryBody) {
        let t = self.tick();
        self.log
            .append(t, RecordId::new(id).unwrap(), body)
            .unwrap();
    }

    fn ingest(&mut self, id: &str, retain_until: RetainUntil) {
        let bytes = format!("stored bytes of {id}");
        let sha = Hash::of(bytes.as_bytes());
        let version = format!("v-{id}");
        self.append(
            id,
            EntryBody::Ingest {
                series: "MO-GS-003".into(),
                retain_until,
                lock_mode: LockMode::Compliance,
                object_key: key_of(id),
                object_version: version.clone(),
                stored_sha256: sha,
                stored_size: bytes.len() as u64,
                original_commitment: Hash::of(b"c"),
                dictionary: None,
                header_index: None,
            },
        );
        let lock_until = match retain_until {
            RetainUntil::Until(t) => t,
            RetainUntil::Permanent => UnixTime(T0 + 100 * YEAR),
        };
        self.inventory.insert(
            key_of(id),
            vec![StoredVersion {
                version_id: version,
                delete_marker: false,
                sha256: Some(sha),
                lock_mode: Some(LockMode::Compliance),
                retain_until: Some(lock_until),
                legal_hold: false,
                opened: None,
            }],
        );
    }

    fn hold(&mut self, id: &str, hold: &str) {
        self.append(id, EntryBody::HoldPlaced { hold: hold.into() });
        for v in self.inventory.get_mut(&key_of(id)).unwrap() {
            v.legal_hold = true;
        }
    }

    fn release(&mut self, id: &str, hold: &str) {
        self.append(id, EntryBody::HoldReleased { hold: hold.into() });
        for v in self.inventory.get_mut(&key_of(id)).unwrap() {
            v.legal_hold = false;
        }
    }

    /// Authorizes, deletes every version, and logs the tombstone.
    fn destroy(&mut self, id: &str) {
        self.append(
            id,
            EntryBody::DestroyAuthorized {
                retain_until: RetainUntil::Until(UnixTime(self.clock)),
                disposition: Disposition::Destroy,
            },
        );
        let versions = self.inventory.remove(&key_of(id)).unwrap();
        self.append(
            id,
            EntryBody::Destroyed {
                object_key: key_of(id),
                object_versions: versions.into_iter().map(|v| v.version_id).collect(),
            },
        );
    }

    /// Writes the pending bundles and a signed checkpoint, as the pipeline does after a batch.
    fn checkpoint(&mut self) {
        for b in self.log.take_bundles() {
            assert!(
                self.objects.insert(b.key, b.bytes).is_none(),
                "an object was rewritten"
            );
        }
        let last = self.signer.last_signed().map_or(0, |h| h.size);
        let proof = if last == 0 {
            vec![]
        } else {
            self.log
                .tree()
                .consistency_proof(last, self.log.size())
                .unwrap()
        };
        let note = self
            .signer
            .sign(self.log.size(), self.log.root(), &proof)
            .unwrap();
        self.objects
            .insert(checkpoint_key(self.log.size()), note.into_bytes());
    }

    fn trust(&self) -> Trust {
        Trust {
            keys: vec![NoteVerifier::parse(&self.signer.verifier_key()).unwrap()],
            origin: Some(ORIGIN.into()),
            trusted_checkpoint: None,
            now: UnixTime(self.clock),
        }
    }

    fn verify(&self) -> Audit {
        run(self.trust(), &self.objects, &self.inventory)
    }

    /// Entries of the log as stored, in order (bytes).
    fn entries(&self) -> Vec<Vec<u8>> {
        let listing = LogListing::from_keys(self.objects.keys().map(String::as_str));
        let mut out = Vec::new();
        for keys in listing.bundles.values() {
            let key = keys
                .full
                .clone()
                .unwrap_or_else(|| keys.partials.last().unwrap().1.clone());
            out.extend(
                decode_bundle(&self.objects[&key])
                    .unwrap()
                    .into_iter()
                    .map(<[u8]>::to_vec),
            );
        }
        out
    }

    /// Replaces every bundle object with the given entries (re-bundled, full and one partial).
    fn restore_entries(&mut self, entries: &[Vec<u8>]) {
        self.objects.retain(|k, _| !k.starts_with("log/"));
        for (i, chunk) in entries.chunks(256).enumerate() {
            let key = crate::layout::bundle_key(i as u64, chunk.len() as u64);
            self.objects
                .insert(key, encode_bundle(chunk.iter().map(Vec::as_slice)));
        }
    }
}

/// Ten records in two batches, one held, one destroyed after retention, some permanent.
fn good() -> Fixture {
    let mut f = Fixture::new();
    for i in 0..6 {
        f.ingest(
            &format!("r{i}"),
            RetainUntil::Until(UnixTime(T0 + 3 * YEAR)),
        );
    }
    f.ingest("perm", RetainUntil::Permanent);
    f.ingest("short", RetainUntil::Until(UnixTime(T0 + 300)));
    f.checkpoint();
    f.hold("r1", "police/case-17");
    f.ingest("r6", RetainUntil::Until(UnixTime(T0 + 3 * YEAR)));
    f.clock = T0 + 3600;
    f.destroy("short");
    f.checkpoint();
    f
}

/// A report and every verdict the sink saw.
struct Audit {
    report: Report,
    verdicts: Vec<RecordVerdict>,
}

impl std::ops::Deref for Audit {
    type Target = Report;
    fn deref(&self) -> &Report {
        &self.report
    }
}

fn run(trust: Trust, objects: &BTreeMap<String, Vec<u8>>, inventory: &Inventory) -> Audit {
    let mut verdicts = Vec::new();
    let plain = verify_objects(trust.clone(), objects, inventory);
    let report = verify_objects_with(trust, objects, inventory, &mut |v| verdicts.push(v.clone()));
    assert_eq!(
        plain, report,
        "the plain and the streaming entry points disagree"
    );
    Audit { report, verdicts }
}

fn faults(r: &Report) -> Vec<LogFaultKind> {
    r.log_faults.iter().map(|f| f.kind).collect()
}

fn status(a: &Audit, id: &str) -> RecordStatus {
    let mut found = a.verdicts.iter().filter(|v| v.record == id);
    let v = found
        .next()
        .unwrap_or_else(|| panic!("no verdict for {id}"));
    assert!(found.next().is_none(), "two verdicts for {id}");
    if !v.status.is_ok() {
        assert!(
            a.problems.contains(v),
            "{id} is not among the report's problems"
        );
    }
    v.status
}

#[test]
fn a_good_log_verifies() {
    let f = good();
    let r = f.verify();
    assert!(r.verified(), "{}", r.to_text());
    assert_eq!(faults(&r), vec![]);
    assert_eq!(r.counts[&RecordStatus::PresentOk], 8);
    assert_eq!(r.counts[&RecordStatus::DestroyedOk], 1);
    assert_eq!(status(&r, "short"), RecordStatus::DestroyedOk);
    assert_eq!(r.checkpoint.as_ref().unwrap().0, f.log.size());
    assert_eq!(r.checkpoints_verified, 2);
}

#[test]
fn the_report_is_deterministic() {
    let a = good().verify();
    let b = good().verify();
    assert_eq!(
        serde_json::to_string(&a.report).unwrap(),
        serde_json::to_string(&b.report).unwrap()
    );
    assert_eq!(a.verdicts, b.verdicts);
    assert_eq!(a.to_text(), b.to_text());
}

#[test]
fn removed_entry() {
    let mut f = good();
    let mut e = f.entries();
    e.remove(3);
    f.restore_entries(&e);
    let r = f.verify();
    assert!(!r.verified());
    let k = faults(&r);
    assert!(k.contains(&LogFaultKind::EntryOutOfPlace), "{k:?}");
    assert!(k.contains(&LogFaultKind::BrokenChain), "{k:?}");
    assert!(k.contains(&LogFaultKind::CheckpointBeyondLog), "{k:?}");
    // The record whose ingest vanished has an object no entry names.
    assert_eq!(status(&r, "records/r3"), RecordStatus::UnloggedObject);
}

#[test]
fn inserted_entry() {
    let mut f = good();
    let mut e = f.entries();
    let forged = e[2].clone();
    e.insert(2, forged);
    f.restore_entries(&e);
    let r = f.verify();
    let k = faults(&r);
    assert!(k.contains(&LogFaultKind::EntryOutOfPlace), "{k:?}");
    assert!(k.contains(&LogFaultKind::DuplicateIngest), "{k:?}");
    assert!(k.contains(&LogFaultKind::ForkedCheckpoint), "{k:?}");
}

#[test]
fn reordered_entries() {
    let mut f = good();
    let mut e = f.entries();
    e.swap(1, 2);
    f.restore_entries(&e);
    let r = f.verify();
    let out_of_place: Vec<&LogFault> = r
        .log_faults
        .iter()
        .filter(|x| x.kind == LogFaultKind::EntryOutOfPlace)
        .collect();
    assert_eq!(out_of_place.len(), 2, "{}", r.to_text());
    assert!(
        out_of_place[0]
            .detail
            .starts_with("position 1 holds entry 2")
    );
    assert!(faults(&r).contains(&LogFaultKind::ForkedCheckpoint));
}

#[test]
fn broken_chain_link() {
    let mut f = good();
    let mut e = f.entries();
    let mut entry = Entry::decode(&e[4]).unwrap();
    entry.prev = Hash::of(b"not the previous entry");
    e[4] = entry.encode();
    f.restore_entries(&e);
    let r = f.verify();
    let k = faults(&r);
    assert!(k.contains(&LogFaultKind::BrokenChain), "{k:?}");
    assert!(!k.contains(&LogFaultKind::EntryOutOfPlace), "{k:?}");
}

#[test]
fn a_consistent_rewrite_is_caught_by_the_signed_checkpoints() {
    // An attacker who rebuilds the whole log without record r3 (indices and chain redone)
    // leaves no local inconsistency: only the signatures over the old roots betray it.
    let f = good();
    let mut rewritten = RecordLog::new();
    for bytes in f.entries() {
        let e = Entry::decode(&bytes).unwrap();
        if e.record.as_str() != "r3" {
            rewritten.append(e.logged_at, e.record, e.body).unwrap();
        }
    }
    let mut g = good();
    g.objects.retain(|k, _| !k.starts_with("log/"));
    for b in rewritten.take_bundles() {
        g.objects.insert(b.key, b.bytes);
    }
    g.inventory.remove("records/r3");
    let r = g.verify();
    let k = faults(&r);
    assert!(!k.contains(&LogFaultKind::BrokenChain) && !k.contains(&LogFaultKind::EntryOutOfPlace));
    assert!(
        k.contains(&LogFaultKind::ForkedCheckpoint)
            || k.contains(&LogFaultKind::CheckpointBeyondLog),
        "{k:?}"
    );
    assert!(!r.verified());
}

#[test]
fn forked_checkpoint() {
    let mut f = good();
    // Our own key signs a head for a different history of the same size (a signer without
    // the consistency guard, or a stolen key).
    let mut other =
        CheckpointSigner::new(ORIGIN, NoteSigner::new(ORIGIN, &[42; 32]).unwrap(), None);
    let note = other
        .sign(f.log.size(), Hash::of(b"another history"), &[])
        .unwrap();
    f.objects
        .insert(checkpoint_key(f.log.size()), note.into_bytes());
    let r = f.verify();
    assert!(
        faults(&r).contains(&LogFaultKind::ForkedCheckpoint),
        "{}",
        r.to_text()
    );
    assert!(!r.verified());
}

#[test]
fn unsigned_checkpoint() {
    let mut f = good();
    let size = f.log.size();
    let mut stranger = CheckpointSigner::new(
        ORIGIN,
        NoteSigner::new("someone-else", &[7; 32]).unwrap(),
        None,
    );
    let note = stranger.sign(size, f.log.root(), &[]).unwrap();
    f.objects.insert(checkpoint_key(size), note.into_bytes());
    let r = f.verify();
    let k = faults(&r);
    assert!(k.contains(&LogFaultKind::UnsignedCheckpoint), "{k:?}");
    // The newest valid checkpoint is now the older one: later entries are uncovered.
    assert!(k.contains(&LogFaultKind::UncheckpointedEntries), "{k:?}");
}

#[test]
fn bad_signature() {
    let mut f = good();
    let key = checkpoint_key(f.log.size());
    let text = String::from_utf8(f.objects[&key].clone()).unwrap();
    // Same signature line, edited body: the trusted key's signature no longer verifies.
    let edited = text.replacen(
        &format!("\n{}\n", f.log.size()),
        &format!("\n{}\n", f.log.size() + 1),
        1,
    );
    f.objects.insert(key, edited.into_bytes());
    let r = f.verify();
    assert!(
        faults(&r).contains(&LogFaultKind::BadSignature),
        "{}",
        r.to_text()
    );
}

#[test]
fn malformed_checkpoint_and_unknown_objects() {
    let mut f = good();
    f.objects.insert(checkpoint_key(3), b"not a note".to_vec());
    f.objects.insert("log/notes.txt".into(), b"hello".to_vec());
    let r = f.verify();
    let k = faults(&r);
    assert!(k.contains(&LogFaultKind::MalformedCheckpoint), "{k:?}");
    assert!(k.contains(&LogFaultKind::UnknownLogObject), "{k:?}");
}

#[test]
fn no_checkpoint_at_all() {
    let mut f = good();
    f.objects.retain(|k, _| !k.starts_with("checkpoints/"));
    let r = f.verify();
    assert_eq!(faults(&r), vec![LogFaultKind::NoCheckpoint]);
    assert!(!r.verified());
}

/// A forged tail with a valid chain (what someone with bucket write access but no key can add)
/// looks exactly like a crash between bundles and checkpoint: either way nothing vouches for it.
#[test]
fn uncheckpointed_entries_fail_and_their_records_are_unsigned() {
    let mut f = good();
    f.ingest("late", RetainUntil::Until(UnixTime(T0 + YEAR)));
    for b in f.log.take_bundles() {
        f.objects.insert(b.key, b.bytes);
    }
    let r = f.verify();
    assert_eq!(faults(&r), vec![LogFaultKind::UncheckpointedEntries]);
    assert!(!r.verified(), "{}", r.to_text());
    assert_eq!(status(&r, "late"), RecordStatus::Unsigned);
    assert_eq!(status(&r, "r0"), RecordStatus::PresentOk);
    assert_eq!(r.unsigned_entries(), Some(1));
    assert!(
        r.to_text()
            .contains("only the first 12 entries are vouched for by a signed checkpoint"),
        "{}",
        r.to_text()
    );
}

#[test]
fn retention_may_only_be_extended() {
    for (from, to) in [
        (
            RetainUntil::Until(UnixTime(T0 + 3 * YEAR)),
            RetainUntil::Until(UnixTime(T0 + YEAR)),
        ),
        (
            RetainUntil::Permanent,
            RetainUntil::Until(UnixTime(T0 + 50 * YEAR)),
        ),
    ] {
        let mut f = good();
        f.ingest("x", from);
        f.append("x", EntryBody::RetentionExtended { retain_until: to });
        f.checkpoint();
        let r = f.verify();
        assert_eq!(
            faults(&r),
            vec![LogFaultKind::RetentionShortened],
            "{}",
            r.to_text()
        );
        assert!(!r.verified());
    }
    // Extending is fine, and so is dated -> permanent.
    for to in [
        RetainUntil::Until(UnixTime(T0 + 9 * YEAR)),
        RetainUntil::Permanent,
    ] {
        let mut f = good();
        f.ingest("x", RetainUntil::Until(UnixTime(T0 + 3 * YEAR)));
        f.append("x", EntryBody::RetentionExtended { retain_until: to });
        // ... with the lock extended to match, as the writer does.
        f.inventory.get_mut("records/x").unwrap()[0].retain_until = Some(UnixTime(T0 + 100 * YEAR));
        f.checkpoint();
        let r = f.verify();
        assert!(r.verified(), "{}", r.to_text());
    }
}

#[test]
fn a_shortened_retention_does_not_excuse_an_early_destruction() {
    let mut f = good();
    f.ingest("x", RetainUntil::Until(UnixTime(T0 + 3 * YEAR)));
    f.append(
        "x",
        EntryBody::RetentionExtended {
            retain_until: RetainUntil::Until(UnixTime(T0)),
        },
    );
    f.destroy("x");
    f.checkpoint();
    let r = f.verify();
    assert_eq!(status(&r, "x"), RecordStatus::PrematureDestruction);
}

#[test]
fn logged_at_may_not_go_backwards_or_lie_in_the_future() {
    // The audit happens now; the writer's clock jumps back before its next entry.
    let back = |by: i64| {
        let mut f = good();
        let mut trust = f.trust();
        trust.now = UnixTime(f.clock);
        f.clock -= by;
        f.ingest("back", RetainUntil::Until(UnixTime(T0 + YEAR)));
        f.checkpoint();
        run(trust, &f.objects, &f.inventory)
    };
    let r = back(LOGGED_AT_TOLERANCE_SECS + 3600);
    assert_eq!(
        faults(&r),
        vec![LogFaultKind::LoggedAtBackwards],
        "{}",
        r.to_text()
    );
    // Within the tolerance: fine (two writers' clocks a few minutes apart).
    let r = back(LOGGED_AT_TOLERANCE_SECS - 120);
    assert!(r.verified(), "{}", r.to_text());

    let f = good();
    let mut trust = f.trust();
    trust.now = UnixTime(T0 - 2 * LOGGED_AT_TOLERANCE_SECS);
    let r = run(trust, &f.objects, &f.inventory);
    assert!(
        faults(&r).contains(&LogFaultKind::LoggedAtInFuture),
        "{}",
        r.to_text()
    );
}

#[test]
fn a_permanent_records_lock_must_not_lapse() {
    let mut f = good();
    f.inventory.get_mut("records/perm").unwrap()[0].retain_until = Some(UnixTime(T0 + 60));
    let r = f.verify();
    assert_eq!(
        status(&r, "perm"),
        RecordStatus::LockWeakened,
        "{}",
        r.to_text()
    );
    f.inventory.get_mut("records/perm").unwrap()[0].retain_until = None;
    assert_eq!(status(&f.verify(), "perm"), RecordStatus::LockWeakened);
}

#[test]
fn a_delete_marker_over_a_logged_record_is_reported() {
    let mut f = good();
    f.inventory
        .get_mut("records/r4")
        .unwrap()
        .push(StoredVersion {
            version_id: "marker-1".into(),
            delete_marker: true,
            ..StoredVersion::default()
        });
    let r = f.verify();
    assert_eq!(status(&r, "r4"), RecordStatus::Hidden, "{}", r.to_text());
    assert!(!r.verified());
}

#[test]
fn trusted_checkpoint_from_an_earlier_audit() {
    let f = good();
    let first = f.objects[&checkpoint_key(8)].clone();
    let mut trust = f.trust();
    trust.trusted_checkpoint = Some(first.clone());
    assert!(verify_objects(trust.clone(), &f.objects, &f.inventory).verified());

    // The whole log replaced by a different one, with fresh checkpoints signed by the same key
    // (a stolen key): only the auditor's saved checkpoint shows it.
    let mut g = Fixture::new();
    for i in 0..9 {
        g.ingest(&format!("x{i}"), RetainUntil::Until(UnixTime(T0 + YEAR)));
    }
    g.checkpoint();
    let r = verify_objects(trust, &g.objects, &g.inventory);
    assert!(
        faults(&r).contains(&LogFaultKind::TrustedCheckpointInconsistent),
        "{}",
        r.to_text()
    );
}

#[test]
fn rewritten_partial_bundle() {
    let mut f = good();
    let key = crate::layout::bundle_key(0, 8);
    let mut entries: Vec<Vec<u8>> = decode_bundle(&f.objects[&key])
        .unwrap()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    entries[5] = b"rewritten".to_vec();
    f.objects
        .insert(key, encode_bundle(entries.iter().map(Vec::as_slice)));
    let r = f.verify();
    assert_eq!(
        faults(&r),
        vec![LogFaultKind::RewrittenBundle],
        "{}",
        r.to_text()
    );
}

#[test]
fn missing_and_malformed_bundles() {
    let mut f = good();
    // Grow past one full bundle so there are two indices.
    for i in 0..300 {
        f.ingest(&format!("bulk{i}"), RetainUntil::Until(UnixTime(T0 + YEAR)));
    }
    f.checkpoint();
    assert!(f.verify().verified());

    let mut missing = f.objects.clone();
    missing.retain(|k, _| !k.starts_with("log/tile/entries/000"));
    let r = verify_objects(f.trust(), &missing, &f.inventory);
    assert!(
        faults(&r).contains(&LogFaultKind::MissingBundle),
        "{:?}",
        faults(&r)
    );

    let mut truncated = f.objects.clone();
    let full = truncated.get_mut("log/tile/entries/000").unwrap();
    full.truncate(full.len() - 3);
    let r = verify_objects(f.trust(), &truncated, &f.inventory);
    assert!(
        faults(&r).contains(&LogFaultKind::MalformedBundle),
        "{:?}",
        faults(&r)
    );
}

#[test]
fn a_flood_of_faults_is_capped() {
    let mut f = good();
    for i in 0..300 {
        f.ingest(&format!("bulk{i}"), RetainUntil::Until(UnixTime(T0 + YEAR)));
    }
    f.checkpoint();
    let mut e = f.entries();
    e.remove(0);
    f.restore_entries(&e);
    let r = f.verify();
    let listed = r
        .log_faults
        .iter()
        .filter(|x| x.kind == LogFaultKind::EntryOutOfPlace)
        .count();
    assert_eq!(listed, MAX_FAULTS_PER_KIND);
    assert!(r.log_faults_omitted[&LogFaultKind::EntryOutOfPlace] > 200);
    assert!(!r.verified());
}

// ---- record classification --------------------------------------------------------------

#[test]
fn missing_record() {
    let mut f = good();
    f.inventory.remove("records/r2");
    let r = f.verify();
    assert_eq!(status(&r, "r2"), RecordStatus::Missing);
    assert!(!r.verified());
}

#[test]
fn tampered_record() {
    let mut f = good();
    f.inventory.get_mut("records/r2").unwrap()[0].sha256 = Some(Hash::of(b"swapped"));
    let r = f.verify();
    assert_eq!(status(&r, "r2"), RecordStatus::Tampered);
}

#[test]
fn weakened_locks() {
    let mut f = good();
    f.inventory.get_mut("records/r2").unwrap()[0].retain_until = Some(UnixTime(T0 + YEAR));
    f.inventory.get_mut("records/r3").unwrap()[0].lock_mode = Some(LockMode::Governance);
    f.inventory.get_mut("records/r1").unwrap()[0].legal_hold = false; // r1 is held
    f.inventory.get_mut("records/perm").unwrap()[0].lock_mode = None;
    let r = f.verify();
    for id in ["r1", "r2", "r3", "perm"] {
        assert_eq!(
            status(&r, id),
            RecordStatus::LockWeakened,
            "{id}: {}",
            r.to_text()
        );
    }
    assert_eq!(status(&r, "r4"), RecordStatus::PresentOk);
}

#[test]
fn unlogged_objects_and_versions() {
    let mut f = good();
    f.inventory.insert(
        "records/intruder".into(),
        vec![StoredVersion {
            version_id: "x".into(),
            ..Default::default()
        }],
    );
    f.inventory
        .get_mut("records/r4")
        .unwrap()
        .push(StoredVersion {
            version_id: "overwrite".into(),
            ..Default::default()
        });
    let r = f.verify();
    assert_eq!(status(&r, "records/intruder"), RecordStatus::UnloggedObject);
    assert_eq!(status(&r, "records/r4"), RecordStatus::UnloggedObject);
    assert_eq!(status(&r, "r4"), RecordStatus::PresentOk);
    assert!(!r.verified());
}

#[test]
fn premature_destruction() {
    let mut f = good();
    f.destroy("r5"); // retained for three years, destroyed now
    f.checkpoint();
    let r = f.verify();
    assert_eq!(status(&r, "r5"), RecordStatus::PrematureDestruction);
    assert_eq!(status(&r, "perm"), RecordStatus::PresentOk);
    f.destroy("perm");
    f.checkpoint();
    assert_eq!(
        status(&f.verify(), "perm"),
        RecordStatus::PrematureDestruction
    );
}

#[test]
fn held_but_destroyed() {
    let mut f = good();
    f.clock = T0 + 4 * YEAR; // retention over, but r1 is still held
    f.destroy("r1");
    f.checkpoint();
    let r = f.verify();
    assert_eq!(status(&r, "r1"), RecordStatus::HeldButDestroyed);
    // Released first, then destroyed: fine.
    let mut g = good();
    g.clock = T0 + 4 * YEAR;
    g.release("r1", "police/case-17");
    g.destroy("r1");
    g.checkpoint();
    assert_eq!(status(&g.verify(), "r1"), RecordStatus::DestroyedOk);
}

#[test]
fn destruction_incomplete() {
    // Tombstone logged, a version left behind.
    let mut f = good();
    f.inventory.insert(
        "records/short".into(),
        vec![StoredVersion {
            version_id: "v-short".into(),
            ..Default::default()
        }],
    );
    assert_eq!(
        status(&f.verify(), "short"),
        RecordStatus::DestructionIncomplete
    );

    // Authorized and deleted, tombstone never logged (a crash between the two).
    let mut g = good();
    g.clock = T0 + 4 * YEAR;
    g.append(
        "r0",
        EntryBody::DestroyAuthorized {
            retain_until: RetainUntil::Until(UnixTime(T0 + 3 * YEAR)),
            disposition: Disposition::Destroy,
        },
    );
    g.inventory.remove("records/r0");
    g.checkpoint();
    assert_eq!(
        status(&g.verify(), "r0"),
        RecordStatus::DestructionIncomplete
    );
}

#[test]
fn destroyed_without_authorization_and_unknown_records() {
    let mut f = good();
    f.clock = T0 + 4 * YEAR;
    f.append(
        "r0",
        EntryBody::Destroyed {
            object_key: key_of("r0"),
            object_versions: vec!["v-r0".into()],
        },
    );
    f.inventory.remove("records/r0");
    f.append(
        "ghost",
        EntryBody::HoldPlaced {
            hold: "police/case-1".into(),
        },
    );
    f.checkpoint();
    let k = faults(&f.verify());
    assert!(
        k.contains(&LogFaultKind::DestroyedWithoutAuthorization),
        "{k:?}"
    );
    assert!(k.contains(&LogFaultKind::UnknownRecord), "{k:?}");
}

// ---- destruction certificates --------------------------------------------------------------

mod certificates {
    use super::*;
    use crate::lifecycle::Replay;
    use crate::lifecycle::certificate::{
        Certificate, CertifiedAuthorization, CertifiedRecord, METHOD_S3_COMPLIANCE, certificate_key,
    };

    /// The certificate a run would write for `ids`, covering the log as it is now.
    fn certificate(f: &Fixture, run: &str, ids: &[&str]) -> Certificate {
        let mut replay = Replay::new();
        for bytes in f.entries() {
            let _ = replay.apply(Entry::decode(&bytes).unwrap());
        }
        let records = ids
            .iter()
            .map(|id| {
                let h = replay.get(id).unwrap();
                CertifiedRecord {
                    record: RecordId::new(*id).unwrap(),
                    series: h.series.to_owned(),
                    retain_until: match h.retain_until {
                        RetainUntil::Until(t) => t,
                        RetainUntil::Permanent => UnixTime(0),
                    },
                    authorization: CertifiedAuthorization::Rule {
                        name: "default".into(),
                    },
                }
            })
            .collect();
        Certificate::new(
            ORIGIN,
            run,
            UnixTime(f.clock),
            (f.log.size(), f.log.root()),
            METHOD_S3_COMPLIANCE,
            records,
            &|s| s.to_owned(),
        )
        .unwrap()
    }

    fn store(f: &mut Fixture, c: &Certificate) {
        let signer = NoteSigner::new(ORIGIN, &[42; 32]).unwrap();
        f.objects.insert(
            certificate_key(&c.run),
            c.sign(&signer).unwrap().into_bytes(),
        );
    }

    /// `good()` with its destroyed record certified.
    fn certified() -> Fixture {
        let mut f = good();
        let c = certificate(&f, "run-1", &["short"]);
        store(&mut f, &c);
        f
    }

    #[test]
    fn a_certified_destruction_verifies() {
        let r = certified().verify();
        assert!(r.verified(), "{}", r.to_text());
        assert_eq!(r.certificates_verified, 1);
        assert!(r.to_text().contains("destruction certificates verified: 1"));
    }

    #[test]
    fn certificate_with_a_bad_signature() {
        let mut f = certified();
        let key = certificate_key("run-1");
        let text = String::from_utf8(f.objects[&key].clone()).unwrap();
        f.objects
            .insert(key, text.replace("quantity 1", "quantity 1 ").into_bytes());
        let r = f.verify();
        assert_eq!(
            faults(&r),
            vec![LogFaultKind::BadSignature],
            "{}",
            r.to_text()
        );
        assert_eq!(r.certificates_verified, 0);
    }

    #[test]
    fn certificate_signed_by_another_key() {
        let mut f = good();
        let c = certificate(&f, "run-1", &["short"]);
        let stranger = NoteSigner::new("someone-else", &[7; 32]).unwrap();
        f.objects.insert(
            certificate_key("run-1"),
            c.sign(&stranger).unwrap().into_bytes(),
        );
        assert_eq!(faults(&f.verify()), vec![LogFaultKind::UnsignedCertificate]);
    }

    #[test]
    fn certificate_listing_a_record_not_destroyed() {
        let mut f = good();
        let mut c = certificate(&f, "run-1", &["short", "r0"]);
        store(&mut f, &c);
        let r = f.verify();
        assert_eq!(
            faults(&r),
            vec![LogFaultKind::CertifiedButNotDestroyed],
            "{}",
            r.to_text()
        );
        // A record destroyed only after the covering checkpoint is not destroyed "by" it.
        let mut g = good();
        g.clock = T0 + 4 * YEAR;
        c = certificate(&g, "run-1", &["short", "r0"]);
        g.destroy("r0");
        g.checkpoint();
        store(&mut g, &c);
        assert!(
            faults(&g.verify()).contains(&LogFaultKind::CertifiedButNotDestroyed),
            "{}",
            g.verify().to_text()
        );
    }

    #[test]
    fn certificate_beyond_the_log_or_off_it() {
        let mut f = good();
        let mut c = certificate(&f, "run-1", &["short"]);
        c.checkpoint_size += 5;
        store(&mut f, &c);
        assert_eq!(
            faults(&f.verify()),
            vec![LogFaultKind::CertificateBeyondLog]
        );

        let mut g = good();
        let mut c = certificate(&g, "run-1", &["short"]);
        c.checkpoint_root = Hash::of(b"another history");
        store(&mut g, &c);
        assert_eq!(faults(&g.verify()), vec![LogFaultKind::ForkedCertificate]);
    }

    #[test]
    fn a_tombstone_a_later_run_left_uncertified() {
        let mut f = good();
        f.clock = T0 + 4 * YEAR;
        f.destroy("r0");
        f.checkpoint();
        // The next run certifies only its own record; "short" and r0 were left out.
        f.destroy("r2");
        f.checkpoint();
        let c = certificate(&f, "run-2", &["r2"]);
        store(&mut f, &c);
        let r = f.verify();
        let uncertified: Vec<&LogFault> = r
            .log_faults
            .iter()
            .filter(|x| x.kind == LogFaultKind::UncertifiedDestruction)
            .collect();
        assert_eq!(uncertified.len(), 2, "{}", r.to_text());
        assert!(uncertified[0].detail.starts_with("record short "));
        assert!(uncertified[1].detail.starts_with("record r0 "));

        // Tombstones after the newest certificate's checkpoint are simply not certified yet
        // (a run that crashed before writing its certificate): not a fault.
        let mut g = certified();
        g.clock = T0 + 4 * YEAR;
        g.destroy("r0");
        g.checkpoint();
        let r = g.verify();
        assert!(r.verified(), "{}", r.to_text());
    }

    #[test]
    fn certificate_that_disagrees_with_the_log() {
        let mut f = good();
        let mut c = certificate(&f, "run-1", &["short"]);
        c.series[0].series = "MO-GS-999".into();
        store(&mut f, &c);
        assert_eq!(faults(&f.verify()), vec![LogFaultKind::CertificateMismatch]);

        let mut g = good();
        let mut c = certificate(&g, "run-1", &["short"]);
        c.series[0].earliest_retain_until = UnixTime(T0);
        store(&mut g, &c);
        assert_eq!(faults(&g.verify()), vec![LogFaultKind::CertificateMismatch]);

        // The same record in two certificates.
        let mut twice = certified();
        let again = certificate(&twice, "run-2", &["short"]);
        store(&mut twice, &again);
        assert_eq!(
            faults(&twice.verify()),
            vec![LogFaultKind::CertificateMismatch]
        );

        // A review-approved destruction certified as a rule's.
        let mut review = good();
        review.clock = T0 + 4 * YEAR;
        review.append(
            "r0",
            EntryBody::DestroyAuthorized {
                retain_until: RetainUntil::Until(UnixTime(T0 + 3 * YEAR)),
                disposition: Disposition::ReviewApproved,
            },
        );
        let versions = review.inventory.remove("records/r0").unwrap();
        review.append(
            "r0",
            EntryBody::Destroyed {
                object_key: key_of("r0"),
                object_versions: versions.into_iter().map(|v| v.version_id).collect(),
            },
        );
        review.checkpoint();
        let c = certificate(&review, "run-1", &["short", "r0"]);
        store(&mut review, &c);
        let r = review.verify();
        assert_eq!(
            faults(&r),
            vec![LogFaultKind::CertificateMismatch],
            "{}",
            r.to_text()
        );
    }

    #[test]
    fn malformed_certificates_and_keys() {
        let mut f = good();
        let c = certificate(&f, "run-1", &["short"]);
        let signer = NoteSigner::new(ORIGIN, &[42; 32]).unwrap();
        // Stored under another run's key.
        f.objects.insert(
            certificate_key("run-9"),
            c.sign(&signer).unwrap().into_bytes(),
        );
        f.objects
            .insert("certificates/not/a/run".into(), b"x".to_vec());
        f.objects
            .insert(certificate_key("run-3"), b"not a note".to_vec());
        let k = faults(&f.verify());
        assert_eq!(
            k.iter()
                .filter(|x| **x == LogFaultKind::MalformedCertificate)
                .count(),
            2,
            "{k:?}"
        );
        assert!(k.contains(&LogFaultKind::UnknownLogObject), "{k:?}");
    }
}

mod properties {
    use super::*;
    use crate::merkle::verify_inclusion;
    use crate::proof::ProofBundle;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// VERIFIED means provable: with every record's sidecar and bytes as written, the
        /// archive verifies; one change to one record's sidecar, salt, identity or decompressed
        /// bytes makes exactly that record UNPROVABLE.
        #[test]
        fn one_sidecar_change_makes_exactly_that_record_unprovable(n in 1usize..12, pick in any::<usize>(), what in 0u8..7) {
            let mut f = Fixture::new();
            let ids: Vec<String> = (0..n)
                .map(|i| ingest_provable(&mut f, "INBOX", format!("Subject: {i}\r\n\r\n").as_bytes(), i as u8))
                .collect();
            f.checkpoint();
            prop_assert!(f.verify().verified());
            let victim = &ids[pick % n];
            match what {
                0 => sidecar_mut(&mut f, victim).salt[pick % SALT_LEN] ^= 0x80,
                1 => sidecar_mut(&mut f, victim).series.push('x'),
                2 => sidecar_mut(&mut f, victim).identity.insert(0, 'x'),
                3 => sidecar_mut(&mut f, victim).commitment = Hash::of(b"x"),
                4 => sidecar_mut(&mut f, victim).retain_until = RetainUntil::Until(UnixTime(T0)),
                5 => opened_mut(&mut f, victim).sidecar = Err("gone".into()),
                _ => opened_mut(&mut f, victim).original_sha256 = Ok(Hash::of(b"other")),
            }
            let audit = f.verify();
            prop_assert!(!audit.verified());
            for id in &ids {
                let want = if id == victim { RecordStatus::Unprovable } else { RecordStatus::PresentOk };
                prop_assert_eq!(status(&audit, id), want);
            }
        }

        /// Any sequence of batches appended and checkpointed verifies; any entry's proof bundle
        /// verifies offline against the newest checkpoint; one flipped byte in any bundle fails.
        #[test]
        fn append_prove_verify(batches in prop::collection::vec(1usize..300, 1..5), pick in any::<u64>(), flip in any::<u64>()) {
            let mut f = Fixture::new();
            let mut n = 0;
            for batch in &batches {
                for _ in 0..*batch {
                    f.ingest(&format!("p{n}"), RetainUntil::Until(UnixTime(T0 + YEAR)));
                    n += 1;
                }
                f.checkpoint();
            }
            let audit = f.verify();
            prop_assert!(audit.verified(), "{}", audit.to_text());
            prop_assert_eq!(audit.counts[&RecordStatus::PresentOk], n as u64);

            let size = f.log.size();
            let index = pick % size;
            let entries = f.entries();
            let proof = f.log.tree().inclusion_proof(index, size).unwrap();
            prop_assert!(verify_inclusion(index, size, &leaf_hash(&entries[index as usize]), &proof, &f.log.root()).is_ok());
            let note = String::from_utf8(f.objects[&checkpoint_key(size)].clone()).unwrap();
            let bundle = ProofBundle::new(&entries[index as usize], index, size, &proof, &note, None);
            let proven = ProofBundle::parse(bundle.to_json().as_bytes()).unwrap().verify(&f.trust().keys).unwrap();
            prop_assert_eq!(proven.record, format!("p{index}"));

            // Flip one byte of one bundle object: verification must fail.
            let keys: Vec<String> = f.objects.keys().filter(|k| k.starts_with("log/")).cloned().collect();
            let key = &keys[(flip as usize) % keys.len()];
            let obj = f.objects.get_mut(key).unwrap();
            let at = (flip as usize / 7) % obj.len();
            obj[at] ^= 0x20;
            prop_assert!(!f.verify().verified());
        }

        /// Retention changes: the archive verifies exactly when no change shortens; a tail after
        /// the newest checkpoint never verifies and each record only it speaks for is UNSIGNED.
        #[test]
        fn retention_changes_and_unsigned_tails(changes in prop::collection::vec(-3i64..6, 0..8), tail in 0usize..20) {
            let mut f = Fixture::new();
            let mut until = T0 + 3 * YEAR;
            f.ingest("x", RetainUntil::Until(UnixTime(until)));
            let mut shortened = false;
            for years in &changes {
                let next = until + years * YEAR;
                shortened |= next < until;
                f.append("x", EntryBody::RetentionExtended { retain_until: RetainUntil::Until(UnixTime(next)) });
                until = until.max(next);
            }
            f.inventory.get_mut("records/x").unwrap()[0].retain_until = Some(UnixTime(until));
            f.checkpoint();
            for i in 0..tail {
                f.ingest(&format!("t{i}"), RetainUntil::Until(UnixTime(T0 + YEAR)));
            }
            for b in f.log.take_bundles() {
                f.objects.insert(b.key, b.bytes);
            }
            let audit = f.verify();
            prop_assert_eq!(audit.verified(), !shortened && tail == 0, "{}", audit.to_text());
            prop_assert_eq!(faults(&audit).contains(&LogFaultKind::RetentionShortened), shortened);
            prop_assert_eq!(audit.counts.get(&RecordStatus::Unsigned).copied().unwrap_or(0), tail as u64);
            prop_assert_eq!(status(&audit, "x"), RecordStatus::PresentOk);
        }
    }
}

// ---- VERIFIED means exportable and provable (sidecar, salt, record id) ----

/// Ingests a record the way the writer does (id from the origin and the identity, a salted
/// commitment), stores it, and opens it as the reader does. Returns its id.
fn ingest_provable(f: &mut Fixture, folder: &str, message: &[u8], salt: u8) -> String {
    let digest = Hash::of(message);
    let identity = format!("{folder}\u{0}{}", digest.to_hex());
    let id = record_id(ORIGIN, &identity).to_string();
    let salt = [salt; SALT_LEN];
    let commitment = commitment_from_digest(&salt, &digest);
    let retain_until = RetainUntil::Until(UnixTime(T0 + 3 * YEAR));
    let stored = format!("stored bytes of {id}");
    let stored_sha256 = Hash::of(stored.as_bytes());
    f.append(
        &id,
        EntryBody::Ingest {
            series: "MO-GS-003".into(),
            retain_until,
            lock_mode: LockMode::Compliance,
            object_key: key_of(&id),
            object_version: "v1".into(),
            stored_sha256,
            stored_size: stored.len() as u64,
            original_commitment: commitment,
            dictionary: None,
            header_index: None,
        },
    );
    f.inventory.insert(
        key_of(&id),
        vec![StoredVersion {
            version_id: "v1".into(),
            sha256: Some(stored_sha256),
            lock_mode: Some(LockMode::Compliance),
            retain_until: Some(UnixTime(T0 + 3 * YEAR)),
            opened: Some(Box::new(Opened {
                sidecar: Ok(SidecarFields {
                    series: "MO-GS-003".into(),
                    retain_until,
                    commitment,
                    salt,
                    identity,
                    stored_sha256: Some(stored_sha256),
                    stored_size: Some(stored.len() as u64),
                }),
                original_sha256: Ok(digest),
            })),
            ..StoredVersion::default()
        }],
    );
    id
}

/// Two provable records, checkpointed.
fn provable() -> (Fixture, String, String) {
    let mut f = Fixture::new();
    let a = ingest_provable(&mut f, "INBOX", b"Subject: a\r\n\r\na\r\n", 1);
    let b = ingest_provable(&mut f, "Sent", b"Subject: b\r\n\r\nb\r\n", 2);
    f.checkpoint();
    (f, a, b)
}

fn opened_mut<'a>(f: &'a mut Fixture, id: &str) -> &'a mut Opened {
    f.inventory.get_mut(&key_of(id)).unwrap()[0]
        .opened
        .as_mut()
        .unwrap()
}

fn sidecar_mut<'a>(f: &'a mut Fixture, id: &str) -> &'a mut SidecarFields {
    opened_mut(f, id).sidecar.as_mut().unwrap()
}

/// Applies `change` to record `a`'s store view and checks that exactly `a` turns UNPROVABLE
/// (with a finding containing `says`) and the other stays `PRESENT_OK`.
fn unprovable_after(change: impl FnOnce(&mut Fixture, &str), says: &str) {
    let (mut f, a, b) = provable();
    change(&mut f, &a);
    let audit = f.verify();
    assert!(!audit.verified(), "{}", audit.to_text());
    assert_eq!(status(&audit, &a), RecordStatus::Unprovable);
    assert_eq!(status(&audit, &b), RecordStatus::PresentOk);
    let finding = audit.problems.iter().find(|p| p.record == a).unwrap();
    assert!(
        finding.findings.iter().any(|x| x.contains(says)),
        "{finding:?} should say {says:?}"
    );
    assert!(audit.to_text().contains("UNPROVABLE"));
}

#[test]
fn provable_records_verify() {
    let (f, a, b) = provable();
    let audit = f.verify();
    assert!(audit.verified(), "{}", audit.to_text());
    assert_eq!(status(&audit, &a), RecordStatus::PresentOk);
    assert_eq!(status(&audit, &b), RecordStatus::PresentOk);
}

#[test]
fn a_missing_sidecar_is_unprovable() {
    unprovable_after(
        |f, a| opened_mut(f, a).sidecar = Err("no sidecar".into()),
        "no sidecar",
    );
}

#[test]
fn a_corrupted_salt_is_unprovable() {
    unprovable_after(|f, a| sidecar_mut(f, a).salt[0] ^= 1, "do not open");
}

#[test]
fn a_sidecar_disagreeing_with_its_entry_is_unprovable() {
    unprovable_after(|f, a| sidecar_mut(f, a).series = "other".into(), "series");
    unprovable_after(
        |f, a| sidecar_mut(f, a).retain_until = RetainUntil::Permanent,
        "retain-until",
    );
    unprovable_after(
        |f, a| sidecar_mut(f, a).commitment = Hash::of(b"x"),
        "commitment",
    );
    unprovable_after(
        |f, a| sidecar_mut(f, a).stored_sha256 = Some(Hash::of(b"x")),
        "stored-sha256",
    );
    unprovable_after(
        |f, a| sidecar_mut(f, a).stored_size = Some(1),
        "stored-size",
    );
}

#[test]
fn a_record_id_that_does_not_recompute_is_unprovable() {
    unprovable_after(
        |f, a| sidecar_mut(f, a).identity.push('x'),
        "gives record id",
    );
}

#[test]
fn bytes_that_do_not_decompress_are_unprovable() {
    unprovable_after(
        |f, a| opened_mut(f, a).original_sha256 = Err("unknown frame descriptor".into()),
        "do not decompress",
    );
    // Decompressing to another message: the commitment does not open.
    unprovable_after(
        |f, a| opened_mut(f, a).original_sha256 = Ok(Hash::of(b"another message")),
        "do not open",
    );
}

#[test]
fn tampered_bytes_stay_tampered() {
    let (mut f, a, _) = provable();
    let v = &mut f.inventory.get_mut(&key_of(&a)).unwrap()[0];
    v.sha256 = Some(Hash::of(b"other bytes"));
    v.opened.as_mut().unwrap().original_sha256 = Ok(Hash::of(b"other message"));
    let audit = f.verify();
    assert_eq!(status(&audit, &a), RecordStatus::Tampered);
}

#[test]
fn an_extended_retention_keeps_the_sidecars_ingest_value() {
    let (mut f, a, _) = provable();
    f.append(
        &a,
        EntryBody::RetentionExtended {
            retain_until: RetainUntil::Until(UnixTime(T0 + 5 * YEAR)),
        },
    );
    f.inventory.get_mut(&key_of(&a)).unwrap()[0].retain_until = Some(UnixTime(T0 + 5 * YEAR));
    f.checkpoint();
    let audit = f.verify();
    assert!(audit.verified(), "{}", audit.to_text());
    // A sidecar rewritten to the extended value is not the one written at ingest.
    sidecar_mut(&mut f, &a).retain_until = RetainUntil::Until(UnixTime(T0 + 5 * YEAR));
    assert_eq!(status(&f.verify(), &a), RecordStatus::Unprovable);
}

#[test]
fn without_an_origin_no_record_id_recomputes() {
    let (f, a, _) = provable();
    let mut trust = f.trust();
    trust.origin = None;
    trust.keys = vec![];
    let audit = run(trust, &f.objects, &f.inventory);
    assert!(!audit.verified());
    assert_eq!(status(&audit, &a), RecordStatus::Unprovable);
}

#[test]
fn hidden_and_foreign_log_versions_fail() {
    let f = good();
    let mut v = Verifier::new(f.trust());
    v.add_hidden_log_object("checkpoints/8", &["dm1"]);
    v.add_foreign_log_versions("log/tile/entries/000.p/8", "v1", &["v2"]);
    let listing = LogListing::from_keys(f.objects.keys().map(String::as_str));
    for k in &listing.checkpoints {
        v.add_checkpoint(k, &f.objects[k]);
    }
    for (index, keys) in &listing.bundles {
        let partials: Vec<(u64, &[u8])> = keys
            .partials
            .iter()
            .map(|(w, k)| (*w, f.objects[k].as_slice()))
            .collect();
        v.add_bundle(
            *index,
            keys.full.as_deref().map(|k| f.objects[k].as_slice()),
            &partials,
        );
    }
    let report = v.finish(&f.inventory);
    assert!(!report.verified());
    assert_eq!(
        faults(&report),
        vec![
            LogFaultKind::HiddenLogObject,
            LogFaultKind::ForeignLogVersion
        ]
    );
    assert!(report.to_text().contains("HIDDEN_LOG_OBJECT checkpoints/8"));
    assert!(report.to_text().contains("FOREIGN_LOG_VERSION"));
}

/// The worked example of docs/log-format.md ("Key fingerprints").
#[test]
fn key_fingerprint_worked_example() {
    let signer = NoteSigner::new("mailvault.io/acme/mail", &[7; 32]).unwrap();
    let vkey = signer.verifier_key();
    let fp = key_fingerprint(&format!("{vkey}\n")).unwrap();
    println!("verifier key = {vkey}\nfingerprint = {fp}");
    assert_eq!(
        fp,
        format!(
            "{} sha256:{}",
            vkey.rsplit_once('+').unwrap().0,
            Hash::of(vkey.as_bytes())
        )
    );
    assert_eq!(vkey, VKEY_EXAMPLE);
    assert_eq!(fp, FINGERPRINT_EXAMPLE);
    assert!(key_fingerprint("not a key").is_err());
}
const VKEY_EXAMPLE: &str =
    "mailvault.io/acme/mail+b8e1e6eb+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs";
const FINGERPRINT_EXAMPLE: &str = "mailvault.io/acme/mail+b8e1e6eb sha256:237852a6c3447b13cb54e67d2f53d1dca2ba911487b2e1ac524a9311f25f84ca";

/// The worked example of docs/log-format.md ("Entries", "Bundles"): an ingest entry's exact
/// bytes, its entry hash (the next entry's `prev`) and its Merkle leaf hash.
#[test]
fn entry_worked_example() {
    let entry = Entry {
        index: 0,
        prev: Hash::default(),
        logged_at: UnixTime(T0),
        record: RecordId::new("6e786c8035bc0eff441c9b7fae6bc340").unwrap(),
        body: EntryBody::Ingest {
            series: "MO-GS-003".into(),
            retain_until: RetainUntil::Until(UnixTime(T0 + 3 * YEAR)),
            lock_mode: LockMode::Compliance,
            object_key: "records/6e786c8035bc0eff441c9b7fae6bc340".into(),
            object_version: "0".into(),
            stored_sha256: Hash::of(b"stored"),
            stored_size: 33,
            original_commitment: Hash::from_hex(
                "86d3129d8a855b9c29fdecd75676524b32408a5731cf271b963fbbb25fad0e49",
            )
            .unwrap(),
            dictionary: None,
            header_index: None,
        },
    };
    let bytes = entry.encode();
    println!("entry bytes:\n{}", String::from_utf8_lossy(&bytes));
    println!("entry hash = {}", Hash::of(&bytes));
    println!("leaf hash = {}", leaf_hash(&bytes));
    let bundle = encode_bundle([bytes.as_slice()]);
    println!("bundle hex = {}", hex::encode(&bundle));
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), ENTRY_EXAMPLE);
    assert_eq!(leaf_hash(&bytes).to_hex(), LEAF_EXAMPLE);
    assert_eq!(
        Hash::of(&bytes).to_hex(),
        "74f1edab183d100c8d1732f85b717e1294419ee857d3de3de5b7e2213416c903"
    );
    assert_eq!(
        &bundle[..3],
        &[0x01, 0xf7, b'm'][..],
        "bundle: 2-byte big-endian length"
    );
    assert_eq!(Entry::decode(&bytes).unwrap(), entry);
}
const ENTRY_EXAMPLE: &str = "mailvault-log-entry/1\n\
index 0\n\
prev 0000000000000000000000000000000000000000000000000000000000000000\n\
logged-at 2026-11-28T03:22:00Z\n\
type ingest\n\
record 6e786c8035bc0eff441c9b7fae6bc340\n\
series MO-GS-003\n\
retain-until 2029-11-27T03:22:00Z\n\
lock-mode COMPLIANCE\n\
object-key records/6e786c8035bc0eff441c9b7fae6bc340\n\
object-version 0\n\
stored-sha256 87b04e58961f9a99d853d4046a0b5b793e7c3e4bbd21f5aca8fb17c20cdb1d8b\n\
stored-size 33\n\
original-commitment 86d3129d8a855b9c29fdecd75676524b32408a5731cf271b963fbbb25fad0e49\n\
";
const LEAF_EXAMPLE: &str = "23ff84e0fb09201be3fed85b88f53b0f0f4f4498471c8c8bd271aec61842b8d6";

/// The sample a `--since` audit states: exact hypergeometric odds, never overstated.
#[test]
fn the_sample_size_and_its_confidence_are_exact() {
    // 990,000 older records, 1% bad: the textbook 299 draws for 95%.
    let n = sample_size_for(990_000, 0.01, 0.95);
    assert_eq!(n, 299);
    let p = catch_probability(990_000, n, 0.01);
    assert!((0.95..0.951).contains(&p), "{p}");
    assert!(catch_probability(990_000, n - 1, 0.01) < 0.95);
    // A small population: one bad record among 30 needs 29 draws for 95%.
    assert_eq!(sample_size_for(30, 0.01, 0.95), 29);
    assert!((catch_probability(30, 1, 0.01) - 1.0 / 30.0).abs() < 1e-12);
    // Reading everything catches it for certain; reading nothing never does.
    assert!((catch_probability(30, 30, 0.01) - 1.0).abs() < f64::EPSILON);
    assert!(catch_probability(30, 0, 0.01).abs() < f64::EPSILON);
    assert_eq!(sample_size_for(0, 0.01, 0.95), 0);
    // Printed rounded down: 95.09% is "95.0", not "95.1".
    assert_eq!(floor_percent(0.950_99), "95.0");
}

/// The good log, then a dictionary logged and stored.
fn with_dictionary() -> (Fixture, Hash) {
    let mut f = good();
    let dict_bytes = b"a trained zstd dictionary".to_vec();
    let sha = Hash::of(&dict_bytes);
    let key = crate::layout::dictionary_key(&sha);
    let lock_until = UnixTime(T0 + 100 * YEAR);
    f.append(
        RecordId::from_hash(&sha).as_str(),
        EntryBody::Dictionary {
            lock_mode: LockMode::Compliance,
            lock_until,
            object_key: key.clone(),
            object_version: "v-dict".into(),
            stored_sha256: sha,
            stored_size: dict_bytes.len() as u64,
        },
    );
    f.inventory.insert(
        key,
        vec![StoredVersion {
            version_id: "v-dict".into(),
            sha256: Some(sha),
            lock_mode: Some(LockMode::Compliance),
            retain_until: Some(lock_until),
            ..StoredVersion::default()
        }],
    );
    (f, sha)
}

/// Appends an ingest naming `dictionary` (the fixture's `ingest` logs plain records).
fn ingest_with(f: &mut Fixture, id: &str, retain_until: RetainUntil, dictionary: Hash) {
    let bytes = format!("stored bytes of {id}");
    let sha = Hash::of(bytes.as_bytes());
    f.append(
        id,
        EntryBody::Ingest {
            series: "MO-GS-003".into(),
            retain_until,
            lock_mode: LockMode::Compliance,
            object_key: key_of(id),
            object_version: format!("v-{id}"),
            stored_sha256: sha,
            stored_size: bytes.len() as u64,
            original_commitment: Hash::of(b"c"),
            dictionary: Some(dictionary),
            header_index: None,
        },
    );
    f.inventory.insert(
        key_of(id),
        vec![StoredVersion {
            version_id: format!("v-{id}"),
            sha256: Some(sha),
            lock_mode: Some(LockMode::Compliance),
            retain_until: Some(match retain_until {
                RetainUntil::Until(t) => t,
                RetainUntil::Permanent => UnixTime(T0 + 100 * YEAR),
            }),
            ..StoredVersion::default()
        }],
    );
}

fn dictionary_log() -> (Fixture, Hash, String) {
    let (mut f, sha) = with_dictionary();
    ingest_with(
        &mut f,
        "z1",
        RetainUntil::Until(UnixTime(T0 + 3 * YEAR)),
        sha,
    );
    ingest_with(&mut f, "z2", RetainUntil::Permanent, sha);
    f.checkpoint();
    (f, sha, crate::layout::dictionary_key(&sha))
}

#[test]
fn a_log_with_a_dictionary_verifies_and_the_dictionary_gets_a_verdict() {
    let (f, sha, key) = dictionary_log();
    let a = f.verify();
    assert!(a.verified(), "{}", a.to_text());
    assert_eq!(status(&a, &key), RecordStatus::PresentOk);
    assert_eq!(status(&a, "z1"), RecordStatus::PresentOk);
    // The dictionary is counted apart: the record count is the number of records.
    assert_eq!(a.dictionary_counts[&RecordStatus::PresentOk], 1);
    assert_eq!(
        a.counts[&RecordStatus::PresentOk],
        good().verify().counts[&RecordStatus::PresentOk] + 2
    );
    assert!(
        a.to_text().contains("dictionaries:\n  PRESENT_OK"),
        "{}",
        a.to_text()
    );
    // The adapter learns which dictionary each record needs from the log.
    let mut v = Verifier::new(f.trust());
    let listing = LogListing::from_keys(f.objects.keys().map(String::as_str));
    for (index, group) in &listing.bundles {
        let full = group.full.as_ref().map(|k| f.objects[k].as_slice());
        let partials: Vec<(u64, &[u8])> = group
            .partials
            .iter()
            .map(|(w, k)| (*w, f.objects[k].as_slice()))
            .collect();
        v.add_bundle(*index, full, &partials);
    }
    assert_eq!(v.dictionary_of(&key_of("z1")), Some(sha));
    assert_eq!(v.dictionary_of(&key_of("r1")), None);
    assert_eq!(v.logged_dictionaries(), vec![(sha, "v-dict".to_owned())]);
}

#[test]
fn a_missing_swapped_hidden_or_unlocked_dictionary_is_named() {
    let (_, _, key) = dictionary_log();
    let mut gone = dictionary_log().0;
    gone.inventory.remove(&key);
    assert_eq!(status(&gone.verify(), &key), RecordStatus::Missing);

    let mut swapped = dictionary_log().0;
    swapped.inventory.get_mut(&key).unwrap()[0].sha256 = Some(Hash::of(b"other dictionary"));
    let a = swapped.verify();
    assert!(!a.verified());
    assert_eq!(status(&a, &key), RecordStatus::Tampered);

    let mut extra = dictionary_log().0;
    extra.inventory.get_mut(&key).unwrap().push(StoredVersion {
        version_id: "v-attacker".into(),
        sha256: Some(Hash::of(b"other dictionary")),
        ..StoredVersion::default()
    });
    let a = extra.verify();
    assert!(!a.verified());
    assert!(
        a.problems
            .iter()
            .any(|p| p.record == key && p.status == RecordStatus::UnloggedObject)
    );

    let mut hidden = dictionary_log().0;
    hidden.inventory.get_mut(&key).unwrap().push(StoredVersion {
        version_id: "marker".into(),
        delete_marker: true,
        ..StoredVersion::default()
    });
    assert_eq!(status(&hidden.verify(), &key), RecordStatus::Hidden);

    // A lock that ends before a record compressed with it may be destroyed.
    let mut short = dictionary_log().0;
    short.inventory.get_mut(&key).unwrap()[0].retain_until = Some(UnixTime(T0 + YEAR));
    assert_eq!(status(&short.verify(), &key), RecordStatus::LockWeakened);
    let mut unlocked = dictionary_log().0;
    unlocked.inventory.get_mut(&key).unwrap()[0].lock_mode = Some(LockMode::Governance);
    assert_eq!(status(&unlocked.verify(), &key), RecordStatus::LockWeakened);

    // An object under dictionaries/ that the log never named.
    let mut foreign = dictionary_log().0;
    let other = crate::layout::dictionary_key(&Hash::of(b"x"));
    foreign.inventory.insert(
        other.clone(),
        vec![StoredVersion {
            version_id: "v".into(),
            ..StoredVersion::default()
        }],
    );
    assert_eq!(
        status(&foreign.verify(), &other),
        RecordStatus::UnloggedObject
    );
}

#[test]
fn a_dictionary_lock_must_cover_a_permanent_record() {
    let (mut f, _, key) = dictionary_log();
    // The audit a century later: the dictionary's lock has ended, a permanent record needs it.
    f.inventory.get_mut(&key).unwrap()[0].retain_until = Some(UnixTime(T0 + 2 * YEAR));
    f.clock = T0 + 2 * YEAR + 1;
    let mut t = f.trust();
    t.now = UnixTime(T0 + 2 * YEAR + 1);
    let a = run(t, &f.objects, &f.inventory);
    assert_eq!(status(&a, &key), RecordStatus::LockWeakened);
}

#[test]
fn an_ingest_naming_an_unlogged_dictionary_is_a_fault() {
    let mut f = good();
    ingest_with(
        &mut f,
        "z1",
        RetainUntil::Permanent,
        Hash::of(b"never logged"),
    );
    f.checkpoint();
    let a = f.verify();
    assert!(
        faults(&a).contains(&LogFaultKind::UnknownDictionary),
        "{}",
        a.to_text()
    );
    assert!(!a.verified());
}

#[test]
fn a_dictionary_logged_twice_is_a_fault() {
    let (mut f, sha, key) = dictionary_log();
    f.append(
        RecordId::from_hash(&sha).as_str(),
        EntryBody::Dictionary {
            lock_mode: LockMode::Compliance,
            lock_until: UnixTime(T0),
            object_key: key,
            object_version: "v-other".into(),
            stored_sha256: sha,
            stored_size: 1,
        },
    );
    f.checkpoint();
    assert!(faults(&f.verify()).contains(&LogFaultKind::DuplicateIngest));
}

/// docs/log-format.md §12, version 3: the same record with its header index committed.
#[test]
fn entry_v3_worked_example() {
    use crate::records_request::HeaderIndex;
    use crate::rules::MessageFacts;
    let facts = MessageFacts {
        folder: "INBOX".into(),
        subject: "hello".into(),
        size: 22,
        ..MessageFacts::default()
    };
    let index = HeaderIndex::new(&facts, UnixTime(T0), &[0x22; 16]).encode();
    let index_sha256 = Hash::of(&index);
    println!("index bytes: {}", String::from_utf8_lossy(&index));
    println!("index sha256 = {index_sha256}");
    let mut entry = Entry::decode(ENTRY_EXAMPLE.as_bytes()).unwrap();
    if let EntryBody::Ingest { header_index, .. } = &mut entry.body {
        *header_index = Some(index_sha256);
    }
    let bytes = entry.encode();
    println!("entry bytes:\n{}", String::from_utf8_lossy(&bytes));
    println!("entry hash = {}", Hash::of(&bytes));
    println!("leaf hash = {}", leaf_hash(&bytes));
    assert_eq!(String::from_utf8(index).unwrap(), INDEX_V3_EXAMPLE);
    assert_eq!(index_sha256.to_hex(), INDEX_V3_SHA256);
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        format!(
            "{}header-index {INDEX_V3_SHA256}\n",
            ENTRY_EXAMPLE.replacen("log-entry/1", "log-entry/3", 1)
        )
    );
    assert_eq!(Hash::of(&bytes).to_hex(), ENTRY_V3_HASH);
    assert_eq!(
        leaf_hash(&bytes).to_hex(),
        "183da172b861dad6600ee14394e1888ad41810a6037489bd05fd347bf0c844c7"
    );
    assert_eq!(Entry::decode(&bytes).unwrap(), entry);
}

const INDEX_V3_EXAMPLE: &str = r#"{"format":"mailvault-header-index/2","salt":"22222222222222222222222222222222","archived_at":1795836120,"folder":"INBOX","from":[],"to":[],"cc":[],"subject":"hello","size":22,"has_attachment":false}"#;
const INDEX_V3_SHA256: &str = "90357067f0851e3979a211803f78d6ee236605e6b8db3e8006bbb27566e07f12";
const ENTRY_V3_HASH: &str = "19d4ca1c8bf8fd3b98af471e6f045f4e8c3e239305bdd19adccd6bc5b17f8607";

/// Asserts that `r`'s log faults are exactly `kinds`, in order.
fn assert_only(r: &Audit, kinds: &[LogFaultKind]) {
    assert_eq!(faults(r), kinds, "{}", r.to_text());
}

/// `good()`'s entries with entry `changed` moved one second (when given) and one more entry
/// chained after them, bundled under the next wider partial key of the last index.
fn plant_wider(f: &mut Fixture, changed: Option<usize>) -> String {
    use crate::entry::Entry;
    let mut entries = f.entries();
    if let Some(i) = changed {
        let mut e = Entry::decode(&entries[i]).unwrap();
        e.logged_at.0 += 1;
        entries[i] = e.encode();
        // Re-chain what follows, as someone without the key can.
        for j in i + 1..entries.len() {
            let mut next = Entry::decode(&entries[j]).unwrap();
            next.prev = Hash::of(&entries[j - 1]);
            entries[j] = next.encode();
        }
    }
    let mut tail = Entry::decode(entries.last().unwrap()).unwrap();
    tail.index += 1;
    tail.prev = Hash::of(entries.last().unwrap());
    entries.push(tail.encode());
    let key = crate::layout::bundle_key(0, entries.len() as u64);
    f.objects.insert(
        key.clone(),
        encode_bundle(entries.iter().map(Vec::as_slice)),
    );
    key
}

#[test]
fn a_chaining_copy_under_a_wider_key_is_reported_not_replayed() {
    let mut f = good();
    let planted = plant_wider(&mut f, Some(10));
    let r = f.verify();
    // Before, the widest partial was replayed: the genuine one was called rewritten and the
    // newest checkpoint forked, and records were judged from the planted entries.
    assert_only(&r, &[LogFaultKind::RewrittenBundle]);
    let text = r.to_text();
    assert!(
        text.contains("the 13-entry object does not extend the 12-entry partial the newest checkpoint (size 12) names"),
        "{planted}: {text}"
    );
}

#[test]
fn an_extension_under_a_wider_key_is_replayed_as_the_unsigned_tail() {
    let mut f = good();
    plant_wider(&mut f, None);
    let r = f.verify();
    assert_only(&r, &[LogFaultKind::UncheckpointedEntries]);
}

#[test]
fn a_named_partial_that_is_not_a_bundle_stops_reading_instead_of_replaying_a_wider_copy() {
    // Junk planted under the 12-entry key before the writer wrote it is that key's first
    // version (what verify reads); a chaining copy with a changed entry sits under 13.
    let mut f = good();
    plant_wider(&mut f, Some(10));
    f.objects
        .insert(crate::layout::bundle_key(0, 12), b"junk".to_vec());
    let r = f.verify();
    let text = r.to_text();
    let kinds = faults(&r);
    assert!(
        text.contains(
            "bundle 0: the 12-entry partial the checkpoint of size 12 names (its first written \
             version) is not a bundle of 12 entries"
        ),
        "{text}"
    );
    // Before, the planted copy was replayed: the genuine partials were called rewritten and
    // the checkpoints forked.
    for not in [
        LogFaultKind::ForkedCheckpoint,
        LogFaultKind::RewrittenBundle,
    ] {
        assert!(!kinds.contains(&not), "{not:?}: {text}");
    }
}

#[test]
fn the_trusted_checkpoint_names_the_bundle_when_the_stores_checkpoints_are_gone() {
    let mut f = good();
    let trusted = f.objects[&checkpoint_key(12)].clone();
    f.objects.retain(|k, _| !k.starts_with("checkpoints/"));
    plant_wider(&mut f, Some(10));
    let mut trust = f.trust();
    trust.trusted_checkpoint = Some(trusted);
    let r = run(trust, &f.objects, &f.inventory);
    let text = r.to_text();
    let kinds = faults(&r);
    assert!(
        text.contains("the 13-entry object does not extend the 12-entry partial"),
        "{text}"
    );
    assert!(
        !kinds.contains(&LogFaultKind::TrustedCheckpointInconsistent),
        "{text}"
    );
}

#[test]
fn a_missing_named_partial_is_reported_and_what_is_there_judged() {
    let mut f = good();
    f.objects.remove(&crate::layout::bundle_key(0, 12));
    let r = f.verify();
    let text = r.to_text();
    assert!(
        text.contains("bundle 0: the 12-entry partial the checkpoint of size 12 names is missing"),
        "{text}"
    );
    // The 8-entry partial is replayed: checkpoint 12 lies beyond it, checkpoint 8 holds.
    assert!(
        faults(&r).contains(&LogFaultKind::CheckpointBeyondLog),
        "{text}"
    );
    assert!(
        !faults(&r).contains(&LogFaultKind::ForkedCheckpoint),
        "{text}"
    );
}

#[test]
fn a_wider_copy_that_starts_right_but_does_not_chain_on_is_reported_not_replayed() {
    use crate::entry::Entry;
    let mut f = good();
    let mut entries = f.entries();
    let mut tail = Entry::decode(entries.last().unwrap()).unwrap();
    tail.index += 1;
    tail.prev = Hash::default();
    entries.push(tail.encode());
    f.objects.insert(
        crate::layout::bundle_key(0, 13),
        encode_bundle(entries.iter().map(Vec::as_slice)),
    );
    let r = f.verify();
    // Readers skip it (it does not follow); verify replayed it and blamed the log's chain.
    assert_only(&r, &[LogFaultKind::RewrittenBundle]);
}
