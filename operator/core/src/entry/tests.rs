use super::*;
use proptest::prelude::*;

pub(crate) fn sample_ingest(index: u64, prev: Hash, record: &str) -> Entry {
    Entry {
        index,
        prev,
        logged_at: UnixTime(1_795_836_120),
        record: RecordId::new(record).unwrap(),
        body: EntryBody::Ingest {
            series: "MO GS 003 Correspondence".into(),
            retain_until: RetainUntil::Until(UnixTime(1_900_000_000)),
            lock_mode: LockMode::Compliance,
            object_key: format!("records/{record}"),
            object_version: "v1".into(),
            stored_sha256: Hash::of(b"stored"),
            stored_size: 123,
            original_commitment: Hash::of(b"commitment"),
        },
    }
}

#[test]
fn encoding_is_readable_text_and_round_trips() {
    let e = sample_ingest(7, Hash::of(b"prev"), "r-1");
    let bytes = e.encode();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.starts_with("mailvault-log-entry/1\nindex 7\nprev "));
    assert!(text.contains("\ntype ingest\nrecord r-1\nseries MO GS 003 Correspondence\n"));
    assert_eq!(Entry::decode(&bytes).unwrap(), e);
    e.validate().unwrap();
}

#[test]
fn non_canonical_spellings_are_rejected() {
    let good = String::from_utf8(sample_ingest(7, Hash::of(b"p"), "r-1").encode()).unwrap();
    let cases = [
        good.replace("index 7\n", "index 07\n"),
        good.replace("index 7\n", "index +7\n"),
        good.replace("\ntype ingest\n", "\ntype  ingest\n"),
        good.replace("lock-mode COMPLIANCE", "lock-mode compliance"),
        good.replace("Z\nlock-mode", "+00:00\nlock-mode"),
        good.trim_end().to_owned(),
        format!("{good}extra 1\n"),
        good.replace("record r-1", "record ../etc"),
        good.replace("series MO GS", "series  MO GS"),
        good.replacen("\nprev ", "\nprev 0", 1),
        good.replace("mailvault-log-entry/1", "mailvault-log-entry/2"),
        good.replace('\n', "\r\n"),
    ];
    for (i, bad) in cases.iter().enumerate() {
        assert!(
            Entry::decode(bad.as_bytes()).is_err(),
            "case {i} accepted:\n{bad}"
        );
    }
}

#[test]
fn destroyed_needs_a_version_and_keeps_their_order() {
    let mut e = sample_ingest(1, Hash::default(), "r-2");
    e.body = EntryBody::Destroyed {
        object_key: "records/r-2".into(),
        object_versions: vec!["b".into(), "a".into()],
    };
    assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    e.body = EntryBody::Destroyed {
        object_key: "records/r-2".into(),
        object_versions: vec![],
    };
    assert!(e.validate().is_err());
    assert!(Entry::decode(&e.encode()).is_err());
}

fn text() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,40}[!-~])?"
}

fn retain() -> impl Strategy<Value = RetainUntil> {
    prop_oneof![
        Just(RetainUntil::Permanent),
        (0i64..253_402_300_799).prop_map(|t| RetainUntil::Until(UnixTime(t))),
    ]
}

fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

pub(crate) fn arb_entry() -> impl Strategy<Value = Entry> {
    let body = prop_oneof![
        (
            text(),
            retain(),
            prop_oneof![
                Just(LockMode::Compliance),
                Just(LockMode::Governance),
                Just(LockMode::None)
            ],
            text(),
            text(),
            hash(),
            any::<u64>(),
            hash()
        )
            .prop_map(
                |(series, retain_until, lock_mode, object_key, object_version, s, n, c)| {
                    EntryBody::Ingest {
                        series,
                        retain_until,
                        lock_mode,
                        object_key,
                        object_version,
                        stored_sha256: s,
                        stored_size: n,
                        original_commitment: c,
                    }
                }
            ),
        text().prop_map(|hold| EntryBody::HoldPlaced { hold }),
        text().prop_map(|hold| EntryBody::HoldReleased { hold }),
        retain().prop_map(|retain_until| EntryBody::RetentionExtended { retain_until }),
        (retain(), any::<bool>()).prop_map(|(retain_until, d)| EntryBody::DestroyAuthorized {
            retain_until,
            disposition: if d {
                Disposition::Destroy
            } else {
                Disposition::ReviewApproved
            },
        }),
        (text(), prop::collection::vec(text(), 1..4)).prop_map(|(object_key, object_versions)| {
            EntryBody::Destroyed {
                object_key,
                object_versions,
            }
        }),
    ];
    (
        any::<u64>(),
        hash(),
        0i64..253_402_300_799,
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,40}",
        body,
    )
        .prop_map(|(index, prev, t, record, body)| Entry {
            index,
            prev,
            logged_at: UnixTime(t),
            record: RecordId::new(record).unwrap(),
            body,
        })
}

proptest! {
    #[test]
    fn decode_inverts_encode(e in arb_entry()) {
        prop_assert!(e.validate().is_ok());
        let bytes = e.encode();
        let back = Entry::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &e);
        prop_assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn decode_never_panics_and_accepts_only_canonical(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(e) = Entry::decode(&bytes) {
            prop_assert_eq!(e.encode(), bytes);
        }
    }
}
