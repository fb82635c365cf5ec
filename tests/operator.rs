//! `mailvault operator` against the real apiserver (with RBAC), Dovecot and versitygw, running
//! as its own process under the chart's ServiceAccount and RBAC, never as admin.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use mailvault::crd::{MailboxArchive, RetentionPolicy};
use mailvault_tests::cluster::{
    Cluster, assert_no_secret_in, assert_verifies, condition, present, ready, records, refused,
    wait_for,
};
use mailvault_tests::operator::OperatorProcess;
use mailvault_tests::{S3Flavour, unique_name};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn an_archive_becomes_ready_matches_the_mailbox_verifies_and_resumes_after_recreation() {
    let c = Cluster::new("op-ready").await;
    c.seed("INBOX", 3, "first");
    c.seed("Archive", 2, "first");
    let op = c.operator("solo");
    c.create_archive("chief", &json!({})).await;

    // Ready within one schedule period (the first run starts at once), counts equal the mailbox.
    let a = wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(90),
        "Ready with 5 records and its next run scheduled",
        // On a slow machine the next minute's slot may already be due when a run ends: then
        // nextSync is set once that run is done.
        |a| ready(a) && records(a) == 5 && a.status.as_ref().is_some_and(|s| s.next_sync.is_some()),
    )
    .await;
    let status = a.status.clone().unwrap();
    assert_eq!(status.observed_generation, a.metadata.generation);
    assert!(
        status
            .folders
            .iter()
            .any(|f| f.name == "INBOX" && f.last_uid == 3),
        "{:?}",
        status.folders
    );
    assert!(
        status.folders.iter().any(|f| f.name.contains("Archive")),
        "{:?}",
        status.folders
    );
    let log = status.log.clone().unwrap();
    assert!(log.size >= 5 && log.checkpoint.is_some() && log.root_hash.is_some());
    let public_key = status.public_key.clone().unwrap();
    assert!(public_key.starts_with(&format!("mailvault.io/{}/chief+", c.ns)));

    // The auditor's verify passes with the published key alone.
    let (code, report) = c.verify("chief", &public_key);
    assert_eq!(code, Some(0), "{report}");

    // The generated signing key is kept in a Secret with no owner (the archive's deletion
    // must not take the key that continues its log).
    let key_secret = Api::<Secret>::namespaced(c.admin.clone(), &c.ns)
        .get("chief-signing-key")
        .await
        .unwrap();
    assert!(key_secret.metadata.owner_references.is_none());

    // Events for the run.
    let reasons: Vec<String> = c
        .events_of("chief")
        .await
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(reasons.iter().any(|r| r == "SyncStarted"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Synced"), "{reasons:?}");

    // New mail is picked up by the next run.
    c.seed("INBOX", 2, "second");
    let a = wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(100),
        "at 7 records",
        |a| ready(a) && records(a) == 7,
    )
    .await;
    assert_eq!(a.status.unwrap().last_sync.unwrap().messages, 2);

    // The operational surface.
    assert_eq!(op.get("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(op.get("/readyz").await.map(|r| r.0), Some(200));
    assert!(op.is_leader().await);
    assert!(
        op.metric("mailvault_runs_total{result=\"succeeded\"}")
            .await
            >= Some(2.0)
    );
    assert!(op.metric("mailvault_records_archived_total").await >= Some(7.0));

    // Delete and re-create: resumes from the bucket, archives nothing twice.
    c.archives()
        .delete("chief", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.archives().get_opt("chief").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the archive was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.create_archive("chief", &json!({})).await;
    let a = wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(90),
        "Ready again",
        |a| ready(a) && a.status.as_ref().is_some_and(|s| s.last_sync.is_some()),
    )
    .await;
    let status = a.status.unwrap();
    assert_eq!(records(&c.archives().get("chief").await.unwrap()), 7);
    assert_eq!(
        status.last_sync.unwrap().messages,
        0,
        "re-creation archived something twice"
    );
    assert_eq!(status.public_key.as_deref(), Some(public_key.as_str()));
    let (code, report) = c.verify("chief", &public_key);
    assert_eq!(code, Some(0), "{report}");
    assert!(present(&report, 7), "{report}");
    assert_no_secret_in(&op.log_text(), &c);
}

/// A status is written to the archive it was decided on and no other. CI once saw a
/// re-created archive start with the deleted one's last sync (so no run of its own): a
/// reconcile of the old object wrote its status by name after the new one existed.
#[tokio::test]
async fn a_status_decided_on_a_deleted_archive_never_reaches_one_created_again_under_its_name() {
    use mailvault::controller::FIELD_MANAGER;
    use mailvault::controller::status::{DecidedOn, apply_status_as};
    use mailvault::crd::MailboxArchiveStatus;

    let c = Cluster::new("op-status-uid").await;
    let api = c.archives();
    c.create_archive("chief", &json!({})).await;
    let old = api.get("chief").await.unwrap();
    let failures = |a: &MailboxArchive| a.status.as_ref().map(|s| s.consecutive_failures);
    let status = |n| MailboxArchiveStatus {
        consecutive_failures: n,
        ..MailboxArchiveStatus::default()
    };

    // Changed since it was read, still the same archive: written on the current version.
    api.patch(
        "chief",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "records"}}})),
    )
    .await
    .unwrap();
    let decided_on = DecidedOn::of(&old);
    let written = apply_status_as(&api, &decided_on, FIELD_MANAGER, &status(3)).await;
    assert!(matches!(written, Ok(true)), "{written:?}");
    assert_eq!(failures(&api.get("chief").await.unwrap()), Some(3));

    // Deleted and created again under the same name: the new archive keeps its own status.
    api.delete("chief", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get_opt("chief").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the archive was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let written = apply_status_as(&api, &decided_on, FIELD_MANAGER, &status(4)).await;
    assert!(matches!(written, Ok(false)), "deleted: {written:?}");
    c.create_archive("chief", &json!({})).await;
    let written = apply_status_as(&api, &decided_on, FIELD_MANAGER, &status(5)).await;
    assert!(matches!(written, Ok(false)), "created again: {written:?}");
    let new = api.get("chief").await.unwrap();
    assert_ne!(new.metadata.uid, old.metadata.uid);
    assert_eq!(failures(&new).unwrap_or_default(), 0, "{:?}", new.status);

    // The new archive's own status is written.
    let written = apply_status_as(&api, &DecidedOn::of(&new), FIELD_MANAGER, &status(6)).await;
    assert!(matches!(written, Ok(true)), "{written:?}");
    assert_eq!(failures(&api.get("chief").await.unwrap()), Some(6));
}

/// A Job's pod for an archive that was deleted and created again under its name (the garbage
/// collector had not removed the Job yet) runs nothing: the Job names the archive's uid.
#[tokio::test]
async fn a_job_made_for_a_deleted_archive_runs_nothing_for_the_one_created_again() {
    let c = Cluster::new("op-job-uid").await;
    c.seed("INBOX", 2, "kept");
    c.create_archive("chief", &json!({"runner": "Job"})).await;
    let uid = c.archives().get("chief").await.unwrap().metadata.uid;
    let run = |archive_uid: &str| {
        std::process::Command::new(mailvault_tests::mailvault_binary())
            .args([
                "run",
                "--namespace",
                &c.ns,
                "--archive",
                "chief",
                "--job",
                "chief-old",
            ])
            .args([
                "--slot",
                "2026-12-01T00:00:00Z",
                "--archive-uid",
                archive_uid,
            ])
            .env("KUBECONFIG", c.env.var("KUBECONFIG"))
            .env("MAILVAULT_SPOOL_DIR", &c.dir)
            .output()
            .unwrap()
    };
    let out = run("a-deleted-archive");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        mailvault_tests::output_text(&out)
    );
    assert!(
        mailvault_tests::output_text(&out).contains("was deleted; nothing to run"),
        "{}",
        mailvault_tests::output_text(&out)
    );
    assert!(c.archives().get("chief").await.unwrap().status.is_none());
    let objects = c
        .env
        .s3_client(S3Flavour::Versitygw)
        .list_objects_v2()
        .bucket(&c.bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(objects.key_count(), Some(0), "{objects:?}");

    // The Job made for this archive runs it.
    let out = run(uid.as_deref().unwrap());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        mailvault_tests::output_text(&out)
    );
    let status = c.archives().get("chief").await.unwrap().status.unwrap();
    assert_eq!(status.last_job.as_deref(), Some("chief-old"));
    assert_eq!(status.last_sync.unwrap().messages, 2);
}

#[tokio::test]
async fn bad_specs_missing_secrets_and_wrong_passwords_are_reported_and_recover_once_fixed() {
    let c = Cluster::new("op-faults").await;
    c.seed("INBOX", 2, "m");
    let op = c.operator("solo");
    // A cron the schema lets through (five fields) but that names a 61st minute.
    c.create_archive("badcron", &json!({"schedule": "61 * * * *"}))
        .await;
    let (a, message) = refused(&c, &op, "badcron", Duration::from_secs(30), "InvalidSpec").await;
    assert!(
        message.contains("schedule") && message.contains("61 * * * *"),
        "{message}"
    );
    assert_eq!(
        condition(&a, "Ready").unwrap().observed_generation,
        a.metadata.generation
    );
    let events = c.events_of("badcron").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("InvalidSpec")
                && e.type_.as_deref() == Some("Warning")),
        "{events:?}"
    );
    // Fixing it is picked up at once.
    c.archives()
        .patch(
            "badcron",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedule": "*/5 * * * *"}})),
        )
        .await
        .unwrap();
    wait_for(
        &c,
        &[&op],
        "badcron",
        Duration::from_secs(60),
        "Ready after the fix",
        ready,
    )
    .await;

    // A RetentionPolicy that does not exist yet.
    c.create_archive(
        "nopolicy",
        &json!({"retentionPolicyRef": {"name": "later"}}),
    )
    .await;
    let (_, message) = refused(
        &c,
        &op,
        "nopolicy",
        Duration::from_secs(30),
        "RetentionPolicyNotFound",
    )
    .await;
    assert!(message.contains("later"), "{message}");
    c.create_policy("later").await;
    wait_for(
        &c,
        &[&op],
        "nopolicy",
        Duration::from_secs(60),
        "Ready once the policy exists",
        ready,
    )
    .await;

    // A password Secret that does not exist, then holds the wrong password, then the right one.
    c.create_archive(
        "nosecret",
        &json!({"imap": {"passwordSecretRef": {"name": "imap-later", "key": "password"}}}),
    )
    .await;
    let (_, message) = refused(
        &c,
        &op,
        "nosecret",
        Duration::from_secs(30),
        "SecretNotUsable",
    )
    .await;
    assert!(
        message.contains("imap-later") && message.contains("does not exist"),
        "{message}"
    );
    c.secret("imap-later", &[("password", b"not-the-password")])
        .await;
    let (a, message) = refused(
        &c,
        &op,
        "nosecret",
        Duration::from_secs(60),
        "AuthenticationFailed",
    )
    .await;
    assert!(!message.contains("not-the-password"), "{message}");
    assert!(a.status.as_ref().unwrap().consecutive_failures >= 2);
    c.secret("imap-later", &[("password", c.user.password.as_bytes())])
        .await;
    let a = wait_for(
        &c,
        &[&op],
        "nosecret",
        Duration::from_secs(90),
        "Ready once the password is right",
        |a| ready(a) && records(a) == 2,
    )
    .await;
    assert_eq!(a.status.unwrap().consecutive_failures, 0);

    // A bucket without Object Lock is refused before anything is written.
    let unlocked = unique_name("nolock");
    c.env
        .create_bucket(S3Flavour::Versitygw, &unlocked, false)
        .await;
    c.create_archive("nolock", &json!({"storage": {"bucket": unlocked}}))
        .await;
    let (_, message) = refused(&c, &op, "nolock", Duration::from_secs(30), "StoreError").await;
    assert!(message.contains("Object Lock"), "{message}");
    let events = c.events_of("nolock").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("StoreError")),
        "{events:?}"
    );
    assert!(
        op.metric("mailvault_errors_total{reason=\"StoreError\"}")
            .await
            >= Some(1.0)
    );

    // S3 credentials whose secret key is wrong: refused, and the key is never repeated.
    let wrong_s3_secret = format!("wrong-s3-secret-{}", unique_name("k"));
    c.secret(
        "s3-wrong",
        &[
            (
                "AWS_ACCESS_KEY_ID",
                c.env.var("VERSITYGW_ACCESS_KEY").as_bytes(),
            ),
            ("AWS_SECRET_ACCESS_KEY", wrong_s3_secret.as_bytes()),
        ],
    )
    .await;
    c.create_archive(
        "wrongs3",
        &json!({"storage": {"credentialsSecretRef": {"name": "s3-wrong"}}}),
    )
    .await;
    let (_, message) = refused(&c, &op, "wrongs3", Duration::from_secs(60), "StoreError").await;
    assert!(!message.contains(&wrong_s3_secret), "{message}");

    // Every output an operator run leaves, not only its log: Events, every archive's status
    // (conditions, messages), the metrics. None holds a secret value, right or wrong.
    let events = Api::<Event>::namespaced(c.admin.clone(), &c.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let statuses: Vec<_> = c
        .archives()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.status)
        .collect();
    let (_, metrics) = op.get("/metrics").await.unwrap();
    // Not a grep over nothing: the refusals above are all in there.
    assert!(
        events.len() >= 5 && statuses.len() == 5,
        "{events:?} {statuses:?}"
    );
    assert!(metrics.contains("mailvault_errors_total"), "{metrics}");
    let outputs = [
        op.log_text(),
        serde_json::to_string(&events).unwrap(),
        serde_json::to_string(&statuses).unwrap(),
        metrics,
    ];
    for text in &outputs {
        assert_no_secret_in(text, &c);
        for wrong in ["not-the-password", wrong_s3_secret.as_str()] {
            assert!(!text.contains(wrong), "a secret value leaked into: {text}");
        }
    }
}

#[tokio::test]
async fn two_replicas_one_writer_and_failover_within_the_lease_time() {
    let c = Cluster::new("op-failover").await;
    c.seed("INBOX", 4, "a");
    let first = c.operator("replica-a");
    let second = c.operator("replica-b");
    let leases: Api<Lease> = Api::namespaced(c.admin.clone(), &c.ns);

    // Exactly one leads.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut leader, standby) = loop {
        match (first.is_leader().await, second.is_leader().await) {
            (true, false) => break (first, second),
            (false, true) => break (second, first),
            (true, true) => panic!("two leaders at once"),
            (false, false) => {
                assert!(Instant::now() < deadline, "no leader within 30 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    c.create_archive("chief", &json!({})).await;
    wait_for(
        &c,
        &[&leader, &standby],
        "chief",
        Duration::from_secs(90),
        "Ready with 4 records",
        |a| ready(a) && records(a) == 4,
    )
    .await;
    assert!(!standby.is_leader().await);
    // The standby never held the lease, not even for a moment (its log says when it does).
    assert!(
        !standby.log_text().contains("lease acquired"),
        "{}",
        standby.log_text()
    );
    assert_eq!(leader.log_text().matches("lease acquired").count(), 1);
    // Only the leader ran anything.
    assert_eq!(
        standby
            .metric("mailvault_runs_total{result=\"succeeded\"}")
            .await,
        None
    );
    assert_eq!(standby.get("/readyz").await.map(|r| r.0), Some(200));

    // Kill the leader outright: the standby takes over within the lease time (10 s) plus
    // one renewal interval.
    leader.kill9();
    let killed = Instant::now();
    while !standby.is_leader().await {
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "no takeover within 25 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let takeover = killed.elapsed();
    eprintln!("takeover after {takeover:?}");
    let lease = leases.get("mailvault-operator").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(standby.identity.as_str())
    );

    // The new leader carries on: new mail arrives in the archive, nothing twice.
    c.seed("INBOX", 3, "b");
    let a = wait_for(
        &c,
        &[&standby],
        "chief",
        Duration::from_secs(100),
        "at 7 records",
        |a| ready(a) && records(a) == 7,
    )
    .await;
    assert_verifies(&c, &a, 7);

    // SIGTERM: a clean exit that hands the lease back at once.
    let mut standby = standby;
    assert_eq!(
        standby.terminate(Duration::from_secs(40)),
        Some(0),
        "{}",
        standby.log_text()
    );
    let lease = leases.get("mailvault-operator").await.unwrap();
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert!(
        holder.as_deref() != Some(standby.identity.as_str()),
        "lease still held by {holder:?}"
    );
}

#[tokio::test]
async fn the_operator_identity_cannot_do_more_than_the_chart_grants() {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    let c = Cluster::new("op-rbac").await;
    let kubeconfig = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
    let can = |group: &str, resource: &str, verb: &str, sub: &str| {
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {"namespace": c.ns, "group": group,
                     "resource": resource, "verb": verb, "subresource": sub}}
        }))
        .unwrap();
        let reviews = reviews.clone();
        async move {
            reviews
                .create(&PostParams::default(), &review)
                .await
                .unwrap()
                .status
                .unwrap()
                .allowed
        }
    };
    // What it needs.
    assert!(can("mailvault.io", "mailboxarchives", "watch", "").await);
    assert!(can("mailvault.io", "mailboxarchives", "patch", "status").await);
    assert!(can("", "secrets", "get", "").await);
    assert!(can("events.k8s.io", "events", "create", "").await);
    assert!(can("coordination.k8s.io", "leases", "patch", "").await);
    assert!(can("mailvault.io", "dispositionreviews", "create", "").await);
    assert!(can("mailvault.io", "dispositionreviews", "list", "").await);
    assert!(can("mailvault.io", "dispositionreviews", "patch", "status").await);
    // What it must not do.
    for (group, resource, verb, sub) in [
        ("mailvault.io", "mailboxarchives", "delete", ""),
        ("mailvault.io", "mailboxarchives", "patch", ""),
        ("mailvault.io", "retentionpolicies", "update", ""),
        // A review's decision is the records officer's.
        ("mailvault.io", "dispositionreviews", "patch", ""),
        ("mailvault.io", "dispositionreviews", "delete", ""),
        ("", "secrets", "list", ""),
        ("", "secrets", "delete", ""),
        ("", "secrets", "update", ""),
        ("", "pods", "create", ""),
        ("rbac.authorization.k8s.io", "clusterroles", "create", ""),
    ] {
        assert!(
            !can(group, resource, verb, sub).await,
            "may {verb} {group}/{resource}"
        );
    }
}

#[tokio::test]
async fn suspend_policy_edits_and_legal_holds_reach_the_archives_they_touch() {
    use mailvault::crd::LegalHold;
    let c = Cluster::new("op-links").await;
    c.seed("INBOX", 1, "m");
    let op = c.operator("solo");
    let holds: Api<LegalHold> = Api::namespaced(c.admin.clone(), &c.ns);

    // Suspended: no run starts.
    c.create_archive("chief", &json!({"suspend": true})).await;
    let a = wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(30),
        "Suspended",
        |a| condition(a, "Suspended").is_some_and(|c| c.status == "True"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a = c.archives().get("chief").await.map_or(a, |x| x);
    let status = a.status.unwrap();
    assert!(
        status.last_sync.is_none() && status.next_sync.is_none(),
        "{status:?}"
    );

    // The policy lists the archives that use it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = c.policies().get("city").await.unwrap();
        let s = p.status.unwrap_or_default();
        if s.archives == ["chief"]
            && s.rule_count == 1
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        {
            break;
        }
        assert!(Instant::now() < deadline, "policy status: {s:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Resume: it runs.
    c.archives()
        .patch(
            "chief",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    let a = wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(30),
        "Ready after resuming",
        |a| ready(a) && records(a) == 1,
    )
    .await;
    assert!(
        condition(&a, "Suspended").is_some_and(|c| c.status == "False"),
        "{:?}",
        a.status
    );

    // A policy edit reaches the archive at once (a watch, not the one-minute retry): a regex
    // the schema lets through but that does not compile makes the policy invalid...
    c.policies()
        .patch(
            "city",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rules": [{"name": "broken", "recordSeries": "X",
                "retain": "P1Y", "disposition": "Destroy", "match": {"subjectRegex": "(unclosed"}}]}})),
        )
        .await
        .unwrap();
    let a = wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(15),
        "RetentionPolicyInvalid",
        |a| condition(a, "Ready").is_some_and(|c| c.reason == "RetentionPolicyInvalid"),
    )
    .await;
    assert!(
        condition(&a, "Ready")
            .unwrap()
            .message
            .contains("subjectRegex")
    );
    // ...and fixing it makes the archive Ready again, as quickly.
    c.policies()
        .patch(
            "city",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"rules": [{"name": "fixed", "recordSeries": "X",
                "retain": "P1Y", "disposition": "Destroy", "match": {"subjectRegex": "closed"}}]}}),
            ),
        )
        .await
        .unwrap();
    wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(15),
        "Ready after the policy fix",
        ready,
    )
    .await;

    // A hold naming an archive that does not exist says so; naming only real ones, it is placed.
    let hold: LegalHold = serde_json::from_value(json!({
        "apiVersion": "mailvault.io/v1alpha1", "kind": "LegalHold",
        "metadata": {"name": "prr"},
        "spec": {"reason": "records request", "caseReference": "PRR-1",
                 "archives": {"names": ["chief", "ghost"]}}
    }))
    .unwrap();
    holds.create(&PostParams::default(), &hold).await.unwrap();
    let hold_ready = |reason: &'static str| {
        let holds = holds.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let h = holds.get("prr").await.unwrap();
                let s = h.status.clone().unwrap_or_default();
                if let Some(cond) = s
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready" && c.reason == reason)
                {
                    return (cond.clone(), s.archives);
                }
                assert!(Instant::now() < deadline, "hold status: {s:?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let (cond, _) = hold_ready("ArchiveNotFound").await;
    assert!(
        cond.status == "False" && cond.message.contains("ghost"),
        "{cond:?}"
    );
    // Creating the missing archive resolves the hold (the hold watches archives).
    c.create_archive("ghost", &json!({"suspend": true})).await;
    let (cond, archives) = hold_ready("Placed").await;
    assert_eq!(cond.status, "True");
    assert_eq!(archives, ["chief", "ghost"]);

    // By selector.
    c.archives()
        .patch(
            "chief",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"unit": "ia"}}})),
        )
        .await
        .unwrap();
    holds
        .patch("prr", &PatchParams::default(), &Patch::Merge(json!({"spec": {"archives": {"names": null, "selector": {"matchLabels": {"unit": "ia"}}}}})))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = holds.get("prr").await.unwrap().status.unwrap_or_default();
        if s.archives == ["chief"] {
            break;
        }
        assert!(Instant::now() < deadline, "hold status: {s:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The operator logs JSON lines (--log-format json), one object each.
    let log = op.log_text();
    assert!(!log.is_empty());
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
}

#[tokio::test]
async fn replicas_racing_for_a_free_lease_elect_exactly_one() {
    let c = Cluster::new("op-race").await;
    // Four replicas start together against a Lease nobody holds yet: the moment where two
    // could both believe they won.
    let replicas: Vec<OperatorProcess> =
        (0..4).map(|i| c.operator(&format!("racer-{i}"))).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = 0;
        for r in &replicas {
            leaders += usize::from(r.is_leader().await);
        }
        if leaders == 1 {
            break;
        }
        assert!(
            leaders == 0 && Instant::now() < deadline,
            "{leaders} leaders"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let every replica go through a few renewal rounds, then count who ever held it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let acquired: Vec<&str> = replicas
        .iter()
        .filter(|r| r.log_text().contains("lease acquired"))
        .map(|r| r.identity.as_str())
        .collect();
    assert_eq!(
        acquired.len(),
        1,
        "more than one replica held the lease: {acquired:?}"
    );
}

#[tokio::test]
async fn sigterm_during_a_run_abandons_it_safely_and_the_next_leader_completes_it() {
    let c = Cluster::new("op-sigterm").await;
    // Enough mail that the first run takes a few seconds.
    seed_bulk(&c);
    let mut first = OperatorProcess::start_with_grace(
        &c.kubeconfig,
        &c.ns,
        "mailvault-operator",
        "short-grace",
        &c.dir,
        0,
    );
    c.create_archive("chief", &json!({})).await;
    wait_for_a_run(&first).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // With no grace, the run in flight is abandoned: the process still exits cleanly.
    assert_eq!(
        first.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        first.log_text()
    );
    assert!(
        first.log_text().contains("abandoned"),
        "the run ended before the signal; make the mailbox larger: {}",
        first.log_text()
    );
    // The next operator resumes from the bucket: every message once, the log verifies.
    let second = c.operator("successor");
    let a = wait_for(
        &c,
        &[&second],
        "chief",
        Duration::from_secs(120),
        "Ready with 3000 records",
        |a| ready(a) && records(a) == 3000,
    )
    .await;
    assert_verifies(&c, &a, 3000);
}

/// Destroyed and pending numbers of an archive's last destruction run.
fn destruction(a: &MailboxArchive) -> Option<&mailvault::crd::DestructionStatus> {
    a.status.as_ref()?.destruction.as_ref()
}

#[tokio::test]
async fn scheduled_destruction_destroys_records_kept_seconds_asks_for_review_and_says_so() {
    let c = Cluster::new("op-destroy").await;
    for (name, dry_run) in [("seconds", false), ("seconds-dry", true)] {
        let policy: RetentionPolicy = serde_json::from_value(json!({
            "apiVersion": "mailvault.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": name},
            "spec": {
                "rules": [{"name": "reviewed", "recordSeries": "GS 9-01 Reviewed",
                           "match": {"subjectRegex": "^review"}, "retain": "PT5S",
                           "disposition": "Review"}],
                "defaultRule": {"recordSeries": "GS 1-01 Seconds", "retain": "PT5S",
                                "disposition": "Destroy"},
                "destruction": {"schedule": "* * * * *", "dryRun": dry_run}
            }
        }))
        .unwrap();
        c.policies()
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
    }
    c.seed("INBOX", 3, "note");
    c.seed("INBOX", 1, "review");
    let op = c.operator("solo");
    // Archived at once, then not again this year: what changes is destruction alone.
    c.create_archive(
        "chief",
        &json!({"schedule": "0 0 1 1 *", "retentionPolicyRef": {"name": "seconds"}}),
    )
    .await;
    c.create_archive(
        "clerk",
        &json!({"schedule": "0 0 1 1 *", "retentionPolicyRef": {"name": "seconds-dry"}}),
    )
    .await;

    // Destruction runs every minute; the records fall due 5 s after archiving.
    let a = wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(180),
        "with 3 records destroyed",
        |a| {
            destruction(a)
                .and_then(|d| d.plan.as_ref())
                .is_some_and(|p| p.destroyed == 3)
        },
    )
    .await;
    let d = destruction(&a).unwrap();
    let plan = d.plan.as_ref().unwrap();
    assert_eq!(plan.awaiting_review, 1, "{d:?}");
    assert_eq!(plan.due_now, 0, "{d:?}");
    assert!(d.next_run.is_some(), "{d:?}");
    let events = c.events_of("chief").await;
    let destroyed: Vec<&str> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("RecordsDestroyed"))
        .filter_map(|e| e.note.as_deref())
        .collect();
    assert!(
        destroyed
            .iter()
            .any(|n| n.contains("records destroyed, certificate certificates/")),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e
            .note
            .as_deref()
            .is_some_and(|n| n.contains("1 records await review: DispositionReview "))),
        "{events:#?}"
    );
    // The review batch, as a records officer finds it.
    let reviews = Api::<mailvault::crd::DispositionReview>::namespaced(c.admin.clone(), &c.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let review = reviews
        .iter()
        .find(|r| r.spec.archive == "chief")
        .unwrap_or_else(|| panic!("no review: {reviews:#?}"));
    assert_eq!(review.spec.record_series, "GS 9-01 Reviewed");
    assert_eq!(review.spec.count, 1);
    assert_eq!(review.spec.rule, "reviewed");
    assert_eq!(review.spec.policy, "seconds");
    // The policy's status carries the plan's numbers.
    let policy = c.policies().get("seconds").await.unwrap();
    let numbers = policy.status.unwrap().destruction;
    let chief = numbers.iter().find(|n| n.archive == "chief").unwrap();
    assert_eq!((chief.plan.destroyed, chief.plan.awaiting_review), (3, 1));
    // The auditor's view.
    let key = a.status.as_ref().unwrap().public_key.clone().unwrap();
    let (code, report) = c.verify("chief", &key);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("DESTROYED_OK             3"), "{report}");
    assert!(present(&report, 1), "{report}");
    assert!(
        report.contains("destruction certificates verified: "),
        "{report}"
    );

    // A records officer approves the batch; the next run destroys it and says so in the
    // review's status.
    let reviews_api = Api::<mailvault::crd::DispositionReview>::namespaced(c.admin.clone(), &c.ns);
    let review_name = review.metadata.name.clone().unwrap();
    reviews_api
        .patch(
            &review_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"decision": "Approved",
                "decidedBy": "J. Smith, Custodian of Records", "reference": "MO-OD-2026-17"}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        let r = reviews_api.get(&review_name).await.unwrap();
        let done = r.status.as_ref().is_some_and(|s| {
            s.destroyed == Some(1)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if done {
            break r.status.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the approved review's status never said it was carried out: {r:#?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(status.certificates.len(), 1, "{status:#?}");
    assert!(
        status.certificates[0].starts_with("certificates/"),
        "{status:#?}"
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "DecisionCarriedOut");
    assert!(
        ready
            .message
            .contains("1 records of the batch destroyed under this approval"),
        "{}",
        ready.message
    );
    let stale = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stale")
        .unwrap();
    assert_eq!(stale.status, "False");

    // dryRun: reports, destroys nothing.
    let clerk = wait_for(
        &c,
        &[&op],
        "clerk",
        Duration::from_secs(120),
        "a dry run with 3 records due",
        |a| {
            destruction(a).is_some_and(|d| {
                d.last_run.as_ref().is_some_and(|r| r.result == "DryRun")
                    && d.plan.as_ref().is_some_and(|p| p.due_now == 3)
            })
        },
    )
    .await;
    assert_eq!(
        destruction(&clerk)
            .unwrap()
            .last_run
            .as_ref()
            .unwrap()
            .destroyed,
        0
    );
    let key = clerk.status.as_ref().unwrap().public_key.clone().unwrap();
    let (code, report) = c.verify("clerk", &key);
    assert_eq!(code, Some(0), "{report}");
    assert!(present(&report, 4), "{report}");
    assert!(!report.contains("DESTROYED_OK"), "{report}");
}

/// The lease taken away from a running leader (here by writing another holder into the Lease,
/// as a partition or a slow renewal would leave it): the operator stops its controllers and
/// abandons the run in flight without exiting, stands by while the other holder's lease is
/// valid, takes the lease back once it expires, and completes the run: every message once.
#[tokio::test]
async fn losing_the_lease_without_dying_abandons_the_run_and_the_next_leadership_completes_it() {
    let c = Cluster::new("op-lease-lost").await;
    seed_bulk(&c);
    let mut op = c.operator("holder");
    c.create_archive("chief", &json!({})).await;
    wait_for_a_run(&op).await;
    // Another holder, freshly renewed, for 20 s; it never renews again.
    let leases: Api<Lease> = Api::namespaced(c.admin.clone(), &c.ns);
    // A MicroTime: exactly six fractional digits.
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    leases
        .patch(
            "mailvault-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "someone-else",
                "leaseDurationSeconds": 20, "acquireTime": now, "renewTime": now}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !op.log_text().contains("lease lost") {
        assert!(
            Instant::now() < deadline,
            "the operator did not notice the lease was taken: {}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(op.is_running(), "losing the lease ended the process");
    assert_eq!(op.metric("mailvault_leader").await, Some(0.0));
    assert_eq!(
        op.metric("mailvault_runs_in_progress").await,
        Some(0.0),
        "the run in flight was not abandoned: {}",
        op.log_text()
    );
    // Once the other holder's lease has expired, the same process leads again and the run
    // resumes from the bucket.
    let a = wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(180),
        "Ready with 3000 records",
        |a| ready(a) && records(a) == 3000,
    )
    .await;
    assert!(op.is_running());
    let holder = leases
        .get("mailvault-operator")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("holder"));
    assert_verifies(&c, &a, 3000);
}

/// An archive deleted while its run is in flight: the run ends (it finishes, or its next
/// status write fails), the operator carries on, nothing in the bucket is left inconsistent,
/// and the archive created again under the same name resumes from the bucket (the signing-key
/// Secret outlives the resource on purpose): every message once.
#[tokio::test]
async fn an_archive_deleted_mid_run_leaves_a_consistent_bucket_and_resumes_when_created_again() {
    let c = Cluster::new("op-deleted").await;
    seed_bulk(&c);
    let mut op = c.operator("solo");
    c.create_archive("chief", &json!({})).await;
    wait_for_a_run(&op).await;
    c.archives()
        .delete("chief", &DeleteParams::default())
        .await
        .unwrap();
    // No finalizer: the resource is gone at once, whatever the run does.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.archives().get_opt("chief").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the archive was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while op.metric("mailvault_runs_in_progress").await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the run of a deleted archive never ended: {}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(op.is_running(), "{}", op.log_text());
    assert!(op.is_leader().await, "{}", op.log_text());
    // Created again: the same key, the same bucket prefix; the run resumes, nothing twice.
    c.create_archive("chief", &json!({})).await;
    let a = wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(180),
        "Ready with 3000 records",
        |a| ready(a) && records(a) == 3000,
    )
    .await;
    assert_verifies(&c, &a, 3000);
}

/// 3,000 messages of 4 KB: a first run that takes a few seconds.
fn seed_bulk(c: &Cluster) {
    let filler = "x".repeat(4000);
    for i in 0..3000 {
        let msg = format!("From: a@city.gov\r\nSubject: bulk {i}\r\n\r\n{i} {filler}\r\n");
        c.env.seed_message(&c.user, "INBOX", msg.as_bytes(), "");
    }
}

/// Waits (at most a minute) until `op` has a run in progress.
async fn wait_for_a_run(op: &OperatorProcess) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while op.metric("mailvault_runs_in_progress").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "no run started: {}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
