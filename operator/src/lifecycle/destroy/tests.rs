use super::*;
use crate::source::{SourceMessage, content_identity};
use crate::spool::Body;
use crate::store::fs::FsStore;
use mailvault_core::entry::EntryBody;
use mailvault_core::verify::{RecordStatus, Trust};

const ORIGIN: &str = "mailvault.io/test/destroy";

const POLICY: &str = r#"
apiVersion: mailvault.io/v1alpha1
kind: RetentionPolicy
metadata: {name: p}
spec:
  rules:
    - name: reviewed
      recordSeries: GS-2
      match: {subjectRegex: "^review"}
      retain: PT1S
      disposition: Review
  defaultRule: {recordSeries: GS-1, retain: PT1S, disposition: Destroy}
"#;

fn key() -> NoteSigner {
    NoteSigner::new(ORIGIN, &[7; 32]).unwrap()
}

fn message(subject: &str) -> SourceMessage {
    let bytes = format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n").into_bytes();
    let content_sha256 = Hash::of(&bytes);
    SourceMessage {
        folder: "INBOX".into(),
        identity: content_identity("INBOX", &content_sha256),
        body: Body::Memory(bytes),
        content_sha256,
        internal_date: None,
        flags: vec![],
        location: format!("test:{subject}"),
    }
}

/// A `file:` store holding `subjects`, archived under [`POLICY`] 100 s ago.
async fn archived(name: &str, subjects: &[&str]) -> (FsStore, std::path::PathBuf, UnixTime) {
    let dir = std::env::temp_dir().join(format!("mailvault-destroy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = FsStore::new(&dir);
    let then = UnixTime(crate::unix_now().0 - 100);
    let schedule = crate::lifecycle::policy_from_yaml(POLICY).unwrap();
    let mut writer = RecordWriter::open(&store, ORIGIN, key(), schedule, then)
        .await
        .unwrap();
    for s in subjects {
        writer.write(message(s), then).await.unwrap();
    }
    writer.finish().await.unwrap();
    (store, dir, then)
}

fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    fn walk(d: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

async fn run_with(
    store: &FsStore,
    approvals: &[ReviewApproval],
    dry_run: bool,
) -> Result<DestructionReport> {
    let schedule = crate::lifecycle::policy_from_yaml(POLICY).unwrap();
    run(
        store,
        key(),
        &DestructionRun {
            origin: ORIGIN,
            schedule: &schedule,
            approvals,
            extensions: &[],
            now: crate::unix_now(),
            dry_run,
            abort_after_step: None,
        },
    )
    .await
}

async fn verify(store: &FsStore) -> mailvault_core::verify::Report {
    let trust = Trust {
        keys: vec![NoteVerifier::parse(&key().verifier_key()).unwrap()],
        origin: Some(ORIGIN.into()),
        trusted_checkpoint: None,
        now: crate::unix_now(),
    };
    crate::reader::verify(
        store,
        trust,
        &crate::reader::VerifyOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_the_run_does_what_it_planned() {
    let (store, dir, _) = archived("run", &["a", "b", "review c"]).await;
    let before = files(&dir);
    let dry = run_with(&store, &[], true).await.unwrap();
    assert_eq!(dry.plan.count(), 2);
    assert_eq!(dry.awaiting_review(), 1);
    assert_eq!(files(&dir), before, "a dry run wrote something");

    let done = run_with(&store, &[], false).await.unwrap();
    assert_eq!(done.destroyed, dry.plan.count() as u64);
    assert_eq!(done.certificates.len(), 1);
    let report = verify(&store).await;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.counts.get(&RecordStatus::DestroyedOk), Some(&2));
    assert_eq!(report.counts.get(&RecordStatus::PresentOk), Some(&1));

    // The review batch, approved with its digest: destroyed; with another digest: stale.
    let batch = &done.plan.review[0];
    let approval = |digest: Hash| ReviewApproval {
        approval: Approval {
            review: "records/gs-2".into(),
            decided_by: "J. Smith".into(),
            reference: "OD-1".into(),
            series: batch.series.clone(),
            earliest: batch.earliest,
            latest: batch.latest,
            ingested_before: done.log_size,
        },
        records_digest: digest,
    };
    let stale = run_with(&store, &[approval(Hash::of(b"other"))], false)
        .await
        .unwrap();
    assert_eq!(stale.destroyed, 0);
    assert_eq!(stale.stale_approvals, ["records/gs-2"]);
    let approved = run_with(&store, &[approval(batch.digest())], false)
        .await
        .unwrap();
    assert_eq!(approved.destroyed, 1);
    let report = verify(&store).await;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.counts.get(&RecordStatus::DestroyedOk), Some(&3));
}

#[tokio::test]
async fn nothing_is_destroyed_from_a_log_with_an_anomaly() {
    let (store, dir, then) = archived("anomaly", &["a"]).await;
    // A tombstone with no authorization: a story mailvault never writes.
    let schedule = crate::lifecycle::policy_from_yaml(POLICY).unwrap();
    let mut writer = RecordWriter::open(&store, ORIGIN, key(), schedule, then)
        .await
        .unwrap();
    let unknown = RecordId::new("00000000000000000000000000000000").unwrap();
    writer
        .append(
            unknown,
            EntryBody::Destroyed {
                object_key: "records/00000000000000000000000000000000".into(),
                object_versions: vec!["0".into()],
            },
            then,
        )
        .await
        .unwrap();
    writer.finish().await.unwrap();
    let before = files(&dir);
    let refused = run_with(&store, &[], false).await;
    assert!(
        matches!(&refused, Err(Error::Conflict(m)) if m.contains("anomaly")),
        "{refused:?}"
    );
    // Refused before anything was deleted or logged (the writer's run marker aside).
    let records = |f: &[(String, Vec<u8>)]| {
        f.iter()
            .filter(|(p, _)| p.contains("/records/") || p.contains("/log/"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(records(&files(&dir)), records(&before));
}
