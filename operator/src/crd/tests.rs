use super::*;

#[test]
fn committed_crds_match_the_rust_types() {
    // CI fails here when a type changes and crds/ was not regenerated with
    // `cargo run -p mailvault -- crd > crds/mailvault.yaml`.
    let committed = include_str!("../../../crds/mailvault.yaml");
    let generated = all_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/mailvault.yaml is stale: run `cargo run -p mailvault -- crd > crds/mailvault.yaml`"
    );
}

#[test]
fn crds_carry_names_columns_and_status() {
    for crd in all() {
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources.as_ref().unwrap().status.is_some(),
            "{}",
            crd.spec.names.kind
        );
        assert!(
            v.additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3)
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        );
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
    }
}

#[test]
fn schemas_carry_the_admission_rules() {
    let text = all_yaml().unwrap();
    for needle in [
        CRON_PATTERN,
        RETAIN_PATTERN,
        "tls: Disabled sends the password in clear",
        "give either archives.names or archives.selector",
        "x-kubernetes-list-map-keys",
        "retain: Permanent and disposition: Permanent go together",
        "maximum: 65535",
    ] {
        let escaped = serde_norway::to_string(needle).unwrap();
        assert!(
            text.contains(needle) || text.contains(escaped.trim()),
            "{needle:?} missing from the CRDs"
        );
    }
}

#[test]
fn cron_expressions_are_checked_field_by_field() {
    assert!(parse_cron("*/5 * * * *").is_ok());
    assert!(parse_cron("0 2 * * MON-FRI").is_ok());
    assert!(parse_cron("@hourly").is_ok());
    let e = parse_cron("61 * * * *").unwrap_err();
    assert!(e.contains("not a valid cron expression"), "{e}");
    let e = parse_cron("0 0 * * * *").unwrap_err();
    assert!(e.contains("has 6 fields"), "{e}");
    assert!(parse_cron("* * 32 * *").is_err());
}

#[test]
fn time_zones_are_iana_names() {
    assert!(parse_time_zone("UTC").is_ok());
    assert!(parse_time_zone("America/Chicago").is_ok());
    let e = parse_time_zone("Mars/Olympus").unwrap_err();
    assert!(e.contains("IANA"), "{e}");
}

fn archive_spec(schedule: &str, time_zone: &str) -> MailboxArchiveSpec {
    serde_json::from_value(serde_json::json!({
        "imap": {"host": "imap.city.gov", "username": "chief",
                 "passwordSecretRef": {"name": "imap", "key": "password"}},
        "storage": {"bucket": "records", "region": "us-east-1",
                    "credentialsSecretRef": {"name": "s3"}},
        "schedule": schedule,
        "timeZone": time_zone,
        "retentionPolicyRef": {"name": "city"}
    }))
    .unwrap()
}

#[test]
fn archive_spec_defaults_and_validation() {
    let spec = archive_spec("*/15 * * * *", "America/Chicago");
    assert_eq!(spec.imap.tls, TlsMode::Required);
    assert_eq!(spec.imap.effective_port(), 993);
    assert_eq!(
        spec.storage
            .credentials_secret_ref
            .as_ref()
            .unwrap()
            .access_key_id_key,
        "AWS_ACCESS_KEY_ID"
    );
    assert!(!spec.suspend);
    assert!(spec.validate().is_ok());
    let problems = archive_spec("0 25 * * *", "Nowhere/Land")
        .validate()
        .unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("schedule: "));
    assert!(problems[1].starts_with("timeZone: "));
}

#[test]
fn policy_validation_names_the_rule() {
    let spec: RetentionPolicySpec = serde_json::from_value(serde_json::json!({
        "rules": [{"name": "chief", "recordSeries": "GS 1-07", "retain": "P5Y",
                   "disposition": "Destroy",
                   "match": {"subjectRegex": "(unclosed"}}],
        "defaultRule": {"recordSeries": "GS 1-01", "retain": "P3Y", "disposition": "Destroy"},
        "destruction": {"schedule": "0 3 * * *", "timeZone": "Bad/Zone"}
    }))
    .unwrap();
    let problems = spec.validate().unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("rule chief: subjectRegex"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("destruction.timeZone"),
        "{problems:?}"
    );
    assert_eq!(spec.rules[0].outcome.from, RetentionStart::ArchivedAt);
}

#[test]
fn the_example_resources_parse_and_validate() {
    let policy: RetentionPolicy = serde_norway::from_str(include_str!(
        "../../../examples/resources/retentionpolicy-missouri.yaml"
    ))
    .unwrap();
    assert_eq!(policy.spec.validate(), Ok(()));
    let archive: MailboxArchive = serde_norway::from_str(include_str!(
        "../../../examples/resources/mailboxarchive.yaml"
    ))
    .unwrap();
    assert_eq!(archive.spec.validate(), Ok(()));
    assert_eq!(
        archive.spec.retention_policy_ref.name,
        policy.metadata.name.unwrap()
    );
    let hold: LegalHold =
        serde_norway::from_str(include_str!("../../../examples/resources/legalhold.yaml")).unwrap();
    assert_eq!(hold.spec.validate(), Ok(()));
}
