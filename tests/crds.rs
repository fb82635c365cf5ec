//! The committed CRDs on the real apiserver: accepted as structural schemas, Established, and
//! rejecting at admission every invalid spec the schema can describe.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use mailvault::crd::{DispositionReview, LegalHold, MailboxArchive, RetentionPolicy};
use mailvault_tests::{TestEnv, apply_crds, json_merge, new_namespace};
use serde_json::{Value, json};

fn archive(name: &str, spec_patch: &Value) -> Value {
    let mut spec = json!({
        "imap": {"host": "imap.city.gov", "username": "chief",
                 "passwordSecretRef": {"name": "imap", "key": "password"}},
        "storage": {"bucket": "records", "region": "us-east-1",
                    "credentialsSecretRef": {"name": "s3"}},
        "schedule": "*/15 * * * *",
        "retentionPolicyRef": {"name": "city"}
    });
    json_merge(&mut spec, spec_patch);
    json!({"apiVersion": "mailvault.io/v1alpha1", "kind": "MailboxArchive",
           "metadata": {"name": name}, "spec": spec})
}

fn policy(name: &str, spec_patch: &Value) -> Value {
    let mut spec = json!({
        "rules": [{"name": "chief", "recordSeries": "GS 1-07", "retain": "P5Y",
                   "disposition": "Destroy", "match": {"from": ["chief@city.gov"]}}],
        "defaultRule": {"recordSeries": "GS 1-01", "retain": "P3Y", "disposition": "Destroy"}
    });
    json_merge(&mut spec, spec_patch);
    json!({"apiVersion": "mailvault.io/v1alpha1", "kind": "RetentionPolicy",
           "metadata": {"name": name}, "spec": spec})
}

fn hold(name: &str, spec_patch: &Value) -> Value {
    let mut spec = json!({
        "reason": "public records request 2026-114", "caseReference": "PRR-2026-114",
        "archives": {"names": ["chief"]}
    });
    json_merge(&mut spec, spec_patch);
    json!({"apiVersion": "mailvault.io/v1alpha1", "kind": "LegalHold",
           "metadata": {"name": name}, "spec": spec})
}

fn review(name: &str, spec_patch: &Value) -> Value {
    let mut spec = json!({
        "archive": "chief", "policy": "city", "rule": "investigations",
        "recordSeries": "GS 2-03", "count": 2,
        "earliestRetainUntil": "2026-11-25T03:22:00Z",
        "latestRetainUntil": "2026-11-27T03:22:00Z", "logSize": 41,
        "recordsDigest": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    });
    json_merge(&mut spec, spec_patch);
    json!({"apiVersion": "mailvault.io/v1alpha1", "kind": "DispositionReview",
           "metadata": {"name": name}, "spec": spec})
}

async fn create(api: &Api<DynamicObject>, obj: &Value) -> Result<DynamicObject, kube::Error> {
    api.create(
        &PostParams::default(),
        &serde_json::from_value(obj.clone()).unwrap(),
    )
    .await
}

/// Asserts admission refuses `obj` with 422 and a message containing `words`.
async fn assert_rejected(api: &Api<DynamicObject>, case: &str, obj: &Value, words: &str) {
    match create(api, obj).await {
        Err(kube::Error::Api(s)) if s.code == 422 => assert!(
            s.message.contains(words),
            "{case}: rejected, but the message does not say {words:?}: {}",
            s.message
        ),
        Err(e) => panic!("{case}: expected 422 Invalid, got {e}"),
        Ok(_) => panic!("{case}: the apiserver accepted an invalid spec"),
    }
}

#[tokio::test]
async fn the_example_resources_pass_admission() {
    use k8s_openapi::api::core::v1::Namespace;
    let env = TestEnv::load();
    let client = env.kube_admin().await;
    apply_crds(&client).await;
    // The examples live in namespace `records`; a server-side dry run checks them against the
    // schema and CEL rules without keeping anything.
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "records"}})).unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt("records").await.unwrap().is_none() {
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let dir = mailvault_tests::repo_root().join("examples/resources");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let obj: DynamicObject = serde::Deserialize::deserialize(doc).unwrap();
            let types = obj.types.clone().unwrap();
            let (group, version) = types
                .api_version
                .split_once('/')
                .unwrap_or(("", &types.api_version));
            let plural = match types.kind.as_str() {
                "MailboxArchive" => "mailboxarchives",
                "RetentionPolicy" => "retentionpolicies",
                "LegalHold" => "legalholds",
                "Secret" => "secrets",
                other => panic!("{}: unexpected kind {other}", path.display()),
            };
            let resource = ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk(group, version, &types.kind),
                plural,
            );
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), "records", &resource);
            // Server-side apply, so the dry run passes whether or not the object exists (the
            // README's commands, run by tests/docs.rs, apply these examples for real).
            let name = obj.metadata.name.clone().unwrap();
            api.patch(
                &name,
                &PatchParams::apply("mailvault-tests").dry_run(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {} refused: {e}", path.display(), types.kind));
            checked += 1;
        }
    }
    assert_eq!(checked, 5, "two Secrets, an archive, a policy and a hold");
}

#[tokio::test]
async fn crds_are_structural_established_and_enforce_admission_rules() {
    let env = TestEnv::load();
    let client = env.kube_admin().await;
    apply_crds(&client).await;

    // Structural: no NonStructuralSchema condition on any of them.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for name in [
        "mailboxarchives.mailvault.io",
        "retentionpolicies.mailvault.io",
        "legalholds.mailvault.io",
        "dispositionreviews.mailvault.io",
    ] {
        let crd = crds.get(name).await.unwrap();
        let conditions = crd.status.unwrap().conditions.unwrap_or_default();
        assert!(
            conditions
                .iter()
                .all(|c| c.type_ != "NonStructuralSchema" || c.status != "True"),
            "{name}: {conditions:?}"
        );
    }

    let ns = new_namespace(&client, "crds").await;
    let archives: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<MailboxArchive>(&()),
    );
    let policies: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<RetentionPolicy>(&()),
    );
    let holds: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<LegalHold>(&()));

    // Valid objects are accepted, with defaults filled in by the apiserver.
    let created = create(&archives, &archive("chief", &json!({})))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["timeZone"], "UTC");
    assert_eq!(created.data["spec"]["imap"]["tls"], "Required");
    assert_eq!(created.data["spec"]["suspend"], false);
    create(
        &archives,
        &archive(
            "loopback",
            &json!({"imap": {"host": "127.0.0.1", "tls": "Disabled"}}),
        ),
    )
    .await
    .unwrap();
    let p = create(&policies, &policy("city", &json!({})))
        .await
        .unwrap();
    assert_eq!(p.data["spec"]["rules"][0]["from"], "ArchivedAt");
    create(&holds, &hold("prr", &json!({}))).await.unwrap();

    // MailboxArchive.
    for (case, patch, words) in [
        (
            "cron with six fields? no: words",
            json!({"schedule": "every hour"}),
            "spec.schedule",
        ),
        (
            "cron with four fields",
            json!({"schedule": "0 * * *"}),
            "spec.schedule",
        ),
        ("port 0", json!({"imap": {"port": 0}}), "spec.imap.port"),
        (
            "port 70000",
            json!({"imap": {"port": 70000}}),
            "spec.imap.port",
        ),
        (
            "unknown TLS mode",
            json!({"imap": {"tls": "Maybe"}}),
            "spec.imap.tls",
        ),
        (
            "plaintext to a remote host",
            json!({"imap": {"tls": "Disabled"}}),
            "tls: Disabled sends the password in clear",
        ),
        (
            "bucket name with capitals",
            json!({"storage": {"bucket": "Records"}}),
            "spec.storage.bucket",
        ),
        (
            "endpoint without scheme",
            json!({"storage": {"endpoint": "s3.local:9000"}}),
            "spec.storage.endpoint",
        ),
        (
            "no password secret",
            json!({"imap": {"passwordSecretRef": null}}),
            "passwordSecretRef",
        ),
        (
            "no retention policy",
            json!({"retentionPolicyRef": null}),
            "retentionPolicyRef",
        ),
        (
            "time zone with spaces",
            json!({"timeZone": "Central Time"}),
            "spec.timeZone",
        ),
        (
            "plain-http S3 endpoint to a remote host",
            json!({"storage": {"endpoint": "http://s3.city.gov:9000"}}),
            "a plain-http endpoint sends records and the log unprotected",
        ),
        (
            "no S3 credentials at all",
            json!({"storage": {"credentialsSecretRef": null}}),
            "exactly one of credentialsSecretRef",
        ),
        (
            "both S3 credentials",
            json!({"storage": {"webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/records"}}}),
            "exactly one of credentialsSecretRef",
        ),
        (
            "a role ARN that is not one",
            json!({"storage": {"credentialsSecretRef": null, "webIdentity": {"roleArn": "records"}}}),
            "spec.storage.webIdentity.roleArn",
        ),
    ] {
        assert_rejected(&archives, case, &archive("bad", &patch), words).await;
    }
    // Plain http is fine to loopback, or when asked for; a role instead of keys is fine.
    for (name, patch) in [
        (
            "loopback-http",
            json!({"storage": {"endpoint": "http://127.0.0.1:27070"}}),
        ),
        (
            "asked-http",
            json!({"storage": {"endpoint": "http://s3.city.gov", "insecureHttp": true}}),
        ),
        (
            "by-role",
            json!({"storage": {"credentialsSecretRef": null,
            "webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/records-police"}}}),
        ),
    ] {
        create(&archives, &archive(name, &patch))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // RetentionPolicy.
    for (case, patch, words) in [
        (
            "retain in words",
            json!({"defaultRule": {"retain": "3 years"}}),
            "spec.defaultRule.retain",
        ),
        (
            "retain P alone",
            json!({"defaultRule": {"retain": "P"}}),
            "retain needs a period",
        ),
        (
            "Permanent retention but Destroy",
            json!({"defaultRule": {"retain": "Permanent", "disposition": "Destroy"}}),
            "retain: Permanent and disposition: Permanent go together",
        ),
        (
            "unknown disposition",
            json!({"defaultRule": {"disposition": "Shred"}}),
            "disposition",
        ),
        (
            "no default rule",
            json!({"defaultRule": null}),
            "defaultRule",
        ),
        (
            "duplicate rule names",
            json!({"rules": [
                {"name": "a", "recordSeries": "X", "retain": "P1Y", "disposition": "Destroy"},
                {"name": "a", "recordSeries": "Y", "retain": "P2Y", "disposition": "Destroy"}]}),
            "Duplicate value",
        ),
        (
            "minSize above maxSize",
            json!({"rules": [{"name": "big", "recordSeries": "X", "retain": "P1Y",
                              "disposition": "Destroy", "match": {"minSize": 10, "maxSize": 5}}]}),
            "minSize must not exceed maxSize",
        ),
        (
            "destruction cron",
            json!({"destruction": {"schedule": "nightly"}}),
            "spec.destruction.schedule",
        ),
    ] {
        assert_rejected(&policies, case, &policy("bad", &patch), words).await;
    }

    // LegalHold.
    for (case, patch, words) in [
        (
            "names and selector",
            json!({"archives": {"names": ["chief"], "selector": {"matchLabels": {"a": "b"}}}}),
            "give either archives.names or archives.selector",
        ),
        (
            "neither names nor selector",
            json!({"archives": {"names": null}}),
            "give either",
        ),
        ("empty reason", json!({"reason": ""}), "spec.reason"),
        (
            "date range backwards",
            json!({"dateRange": {"from": "2026-02-01", "to": "2026-01-01"}}),
            "dateRange.from must not be after dateRange.to",
        ),
    ] {
        assert_rejected(&holds, case, &hold("bad", &patch), words).await;
    }

    // A released hold cannot be un-released (a transition rule).
    holds
        .patch(
            "prr",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"released": true}})),
        )
        .await
        .unwrap();
    let err = holds
        .patch(
            "prr",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"released": false}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("a released hold stays released")),
        "{err}"
    );

    // DispositionReview.
    let reviews: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<DispositionReview>(&()),
    );
    let created = create(&reviews, &review("gs-2-03", &json!({})))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["decision"], "Pending");
    for (case, patch, words) in [
        (
            "approved without a reference",
            json!({"decision": "Approved", "decidedBy": "J. Smith"}),
            "decision: Approved requires decidedBy and reference",
        ),
        (
            "approved by nobody",
            json!({"decision": "Approved", "reference": "OD-2026-17"}),
            "decision: Approved requires decidedBy and reference",
        ),
        (
            "extended without a date",
            json!({"decision": "Extended", "decidedBy": "J. Smith"}),
            "decision: Extended requires decidedBy and extendUntil",
        ),
        (
            "extended to before the batch is due",
            json!({"decision": "Extended", "decidedBy": "J. Smith",
                   "extendUntil": "2026-01-01T00:00:00Z"}),
            "extendUntil must be after latestRetainUntil",
        ),
        (
            "unknown decision",
            json!({"decision": "Shred"}),
            "spec.decision",
        ),
        (
            "digest not hex",
            json!({"recordsDigest": "not-a-digest"}),
            "spec.recordsDigest",
        ),
        ("empty batch", json!({"count": 0}), "spec.count"),
        (
            "retain-until not in the log's spelling",
            json!({"latestRetainUntil": "2026-11-27"}),
            "spec.latestRetainUntil",
        ),
    ] {
        assert_rejected(&reviews, case, &review("bad", &patch), words).await;
    }
    // What the operator wrote cannot change; a records officer only decides.
    for (field, value, words) in [
        ("archive", json!("other"), "archive is set by the operator"),
        ("count", json!(3), "count is set by the operator"),
        (
            "recordsDigest",
            json!("1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            "recordsDigest is set by the operator",
        ),
    ] {
        let err = reviews
            .patch(
                "gs-2-03",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {field: value}})),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains(words)),
            "{field}: {err}"
        );
    }
    let approved = reviews
        .patch(
            "gs-2-03",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"decision": "Approved",
                "decidedBy": "J. Smith, Custodian of Records", "reference": "MO-OD-2026-17"}})),
        )
        .await
        .unwrap();
    assert_eq!(approved.data["spec"]["decision"], "Approved");
    // A decided review is final.
    let err = reviews
        .patch(
            "gs-2-03",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"decision": "Pending"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("a decided review is final")),
        "{err}"
    );
}
