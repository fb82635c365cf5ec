use super::*;
use mailvault_core::entry::RetainUntil;
use mailvault_core::rules::{DEFAULT_RULE, DateSource, Disposition};

const MISSOURI: &str = include_str!("../../../examples/resources/retentionpolicy-missouri.yaml");

fn t(s: &str) -> UnixTime {
    UnixTime::parse(s).unwrap()
}

fn classify_in(folder: &str, message: &str) -> Classified {
    let schedule = policy_from_yaml(MISSOURI).unwrap();
    classify(
        &schedule,
        message.as_bytes(),
        Envelope {
            folder,
            size: message.len() as u64,
            internal_date: Some(t("2026-06-01T08:00:00Z")),
        },
        t("2026-12-01T12:00:00Z"),
    )
}

#[test]
fn the_example_policy_classifies_as_written() {
    let chief = classify_in(
        "INBOX",
        "From: \"Chief\" <chief@police.city.example>\r\nSubject: Staffing\r\n\
         Date: Mon, 4 May 2026 10:00:00 +0000\r\n\r\nx\r\n",
    );
    assert_eq!(chief.classification.rule, "chief-correspondence");
    assert_eq!(chief.classification.retain_until, RetainUntil::Permanent);
    assert_eq!(chief.classification.disposition, Disposition::Permanent);

    let ia = classify_in(
        "INBOX",
        "From: sgt@police.city.example\r\nSubject: =?UTF-8?Q?Re:_ia_2026-4_f=C3=BCr_review?=\r\n\
         Date: Mon, 4 May 2026 10:00:00 +0000\r\n\r\nx\r\n",
    );
    assert_eq!(ia.classification.rule, "internal-affairs");
    assert_eq!(
        ia.classification.retain_until,
        RetainUntil::Until(t("2037-01-01T00:00:00Z")),
        "P10Y after the end of 2026"
    );
    assert_eq!(ia.classification.date_source, DateSource::DateHeader);

    let junk = classify_in(
        "Newsletters/2026",
        "From: list@news.example\r\nSubject: Weekly\r\n\r\nx\r\n",
    );
    assert_eq!(junk.classification.rule, "transitory");
    assert_eq!(
        junk.classification.retain_until,
        RetainUntil::Until(t("2027-03-01T12:00:00Z")),
        "P90D from archiving"
    );
    assert_eq!(junk.classification.date_source, DateSource::ArchivedAt);

    // No Date header: the internal date's year (2026) ends the count; default rule P3Y.
    let general = classify_in(
        "INBOX",
        "From: clerk@city.example\r\nSubject: Budget\r\n\r\nx\r\n",
    );
    assert_eq!(general.classification.rule, DEFAULT_RULE);
    assert_eq!(
        general.classification.series,
        "GS 1-03 Correspondence, general (illustrative)"
    );
    assert_eq!(
        general.classification.retain_until,
        RetainUntil::Until(t("2030-01-01T00:00:00Z"))
    );
    assert_eq!(general.classification.date_source, DateSource::InternalDate);
    assert!(!general.unparseable);

    let broken = classify_in("Junk", "\r\nno headers at all");
    assert!(broken.unparseable);
    assert_eq!(broken.classification.rule, DEFAULT_RULE, "even in Junk");
}

#[test]
fn policy_documents_are_checked_like_the_resource() {
    let e = policy_from_yaml("kind: MailboxArchive\napiVersion: mailvault.io/v1alpha1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("kind: RetentionPolicy"), "{e}");
    let bad = MISSOURI.replace("chief@police.city.example", "chief");
    let e = policy_from_yaml(&bad).unwrap_err().to_string();
    assert!(e.contains("rule chief-correspondence: from:"), "{e}");
    let bad = MISSOURI.replace("retain: Permanent", "retain: P1Y");
    let e = policy_from_yaml(&bad).unwrap_err().to_string();
    assert!(e.contains("go together"), "{e}");
    let bad = MISSOURI.replace("name: transitory", "name: Transitory_Mail");
    let e = policy_from_yaml(&bad).unwrap_err().to_string();
    assert!(e.contains("lowercase"), "{e}");
    let bad = MISSOURI.replace("name: transitory", "name: default");
    let e = policy_from_yaml(&bad).unwrap_err().to_string();
    assert!(e.contains("reserved"), "{e}");
    let bad = MISSOURI.replace("schedule: \"0 3 * * SUN\"", "schedule: \"0 25 * * *\"");
    assert!(
        policy_from_yaml(&bad).is_err(),
        "the destruction schedule too"
    );
    assert!(policy_from_yaml("{").is_err());
    let typo = MISSOURI.replace("      match:\n        from:", "      mtach:\n        from:");
    assert_ne!(typo, MISSOURI);
    let e = policy_from_yaml(&typo).unwrap_err().to_string();
    assert!(e.contains("spec.rules[0].mtach: unknown field"), "{e}");
    let typo = MISSOURI.replace("subjectRegex:", "subjectRegx:");
    let e = policy_from_yaml(&typo).unwrap_err().to_string();
    assert!(e.contains("spec.rules[1].match.subjectRegx"), "{e}");
}

#[tokio::test]
async fn bodies_in_files_are_read_up_to_the_prefix() {
    let schedule = Arc::new(policy_from_yaml(MISSOURI).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.eml");
    let mut bytes = b"From: chief@police.city.example\r\nSubject: big\r\n\r\n".to_vec();
    bytes.resize(facts::PREFIX_BYTES + 1000, b'x');
    std::fs::write(&path, &bytes).unwrap();
    let body = Body::File(crate::spool::BodyFile::borrowed(path, bytes.len() as u64));
    let c = classify_body(
        schedule.clone(),
        &body,
        "INBOX",
        None,
        t("2026-12-01T12:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(c.classification.rule, "chief-correspondence");
    let memory = Body::Memory(bytes);
    let m = classify_body(schedule, &memory, "INBOX", None, t("2026-12-01T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(m, c);
}
