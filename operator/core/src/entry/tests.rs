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
            dictionary: None,
            header_index: None,
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
            hash(),
            // Versions 1, 2 and 3: no dictionary or one, no index commitment or one.
            proptest::option::of(hash()),
            proptest::option::of(hash()),
        )
            .prop_map(
                |(series, retain_until, lock_mode, object_key, object_version, s, n, c, d, i)| {
                    EntryBody::Ingest {
                        series,
                        retain_until,
                        lock_mode,
                        object_key,
                        object_version,
                        stored_sha256: s,
                        stored_size: n,
                        original_commitment: c,
                        dictionary: d,
                        header_index: i,
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

/// One edit of an encoded entry: the kinds of change that leave most of an entry intact, so
/// that a decoder is pushed past its first line (random bytes almost never are).
#[derive(Debug, Clone)]
enum Edit {
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index, usize),
    SwapLines(prop::sample::Index, prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    DropLine(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Bytes a canonical encoding uses, and some it must refuse.
    let byte = prop::sample::select(b"0123456789abcdefABCDEF +-:.Z/_x\n\r\t\x00\xff".to_vec());
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<prop::sample::Index>(), 1usize..8).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Edit::SwapLines(a, b)),
        any::<prop::sample::Index>().prop_map(Edit::DuplicateLine),
        any::<prop::sample::Index>().prop_map(Edit::DropLine),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let mut lines: Vec<Vec<u8>> = bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    match edit {
        Edit::Replace(i, b) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            bytes[at] = *b;
            return;
        }
        Edit::Insert(i, b) => {
            let at = i.index(bytes.len() + 1);
            bytes.insert(at, *b);
            return;
        }
        Edit::Delete(i, n) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
            return;
        }
        Edit::SwapLines(a, b) if !lines.is_empty() => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
        }
        Edit::DuplicateLine(i) if !lines.is_empty() => {
            let at = i.index(lines.len());
            lines.insert(at, lines[at].clone());
        }
        Edit::DropLine(i) if !lines.is_empty() => {
            lines.remove(i.index(lines.len()));
        }
        _ => return,
    }
    *bytes = lines.concat();
}

/// A valid encoding with one to four edits.
fn edited_entry() -> impl Strategy<Value = Vec<u8>> {
    (arb_entry(), prop::collection::vec(edit(), 1..4)).prop_map(|(e, edits)| {
        let mut bytes = e.encode();
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever an edit does to a valid entry, the decoder either refuses the bytes or
    /// accepts exactly the canonical encoding of what it returns.
    #[test]
    fn an_edited_entry_decodes_only_if_canonical(bytes in edited_entry()) {
        if let Ok(e) = Entry::decode(&bytes) {
            prop_assert_eq!(e.encode(), bytes);
        }
    }
}

/// The property above is worth something only if edited entries get deep into the decoder:
/// many must decode (an edit inside a hash or a number often stays canonical), and the
/// refused ones must be refused past the first line, not at it.
#[test]
fn edited_entries_reach_past_the_first_line() {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = edited_entry();
    let (mut decoded, mut refused_later) = (0, 0);
    for _ in 0..2000 {
        let bytes = strategy.new_tree(&mut runner).unwrap().current();
        match Entry::decode(&bytes) {
            Ok(e) => {
                assert_eq!(e.encode(), bytes);
                decoded += 1;
            }
            Err(_) if bytes.starts_with(b"mailvault-log-entry/1\n") => refused_later += 1,
            Err(_) => {}
        }
    }
    assert!(
        decoded >= 50,
        "only {decoded} of 2000 edited entries decoded"
    );
    assert!(
        refused_later >= 1000,
        "only {refused_later} refused past the first line"
    );
    eprintln!(
        "edited entries: {decoded} decoded canonically, {refused_later} refused past the first line"
    );
}

#[test]
fn version_2_entries_round_trip_and_version_1_bytes_are_unchanged() {
    let dict = Hash::of(b"dictionary bytes");
    let plain = sample_ingest(7, Hash::of(b"prev"), "r-1");
    let v1 = plain.encode();
    assert!(v1.starts_with(b"mailvault-log-entry/1\n"));
    let mut named = plain.clone();
    if let EntryBody::Ingest { dictionary, .. } = &mut named.body {
        *dictionary = Some(dict);
    }
    let v2 = named.encode();
    assert!(v2.starts_with(b"mailvault-log-entry/2\n"));
    assert!(v2.ends_with(format!("dictionary {dict}\n").as_bytes()));
    assert_eq!(Entry::decode(&v2).unwrap(), named);
    // The same fields under the other version line are not canonical.
    let relabelled = |bytes: &[u8], from: &str, to: &str| {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .replacen(from, to, 1)
            .into_bytes()
    };
    assert!(Entry::decode(&relabelled(&v1, "log-entry/1", "log-entry/2")).is_err());
    assert!(Entry::decode(&relabelled(&v2, "log-entry/2", "log-entry/1")).is_err());

    let d = Entry {
        index: 3,
        prev: Hash::of(b"p"),
        logged_at: UnixTime(1_795_836_120),
        record: RecordId::from_hash(&dict),
        body: EntryBody::Dictionary {
            lock_mode: LockMode::Compliance,
            lock_until: UnixTime(4_951_596_120),
            object_key: crate::layout::dictionary_key(&dict),
            object_version: "v1".into(),
            stored_sha256: dict,
            stored_size: 16_384,
        },
    };
    d.validate().unwrap();
    let bytes = d.encode();
    assert!(bytes.starts_with(b"mailvault-log-entry/2\n"));
    assert_eq!(Entry::decode(&bytes).unwrap(), d);
    assert_eq!(Entry::decode(&bytes).unwrap().encode(), bytes);
    // Its record id and object key are its hash's: another dictionary's names are refused.
    let other = Hash::of(b"other");
    let mut wrong_key = d.clone();
    if let EntryBody::Dictionary { object_key, .. } = &mut wrong_key.body {
        *object_key = crate::layout::dictionary_key(&other);
    }
    assert!(wrong_key.validate().is_err());
    assert!(Entry::decode(&wrong_key.encode()).is_err());
    let mut wrong_id = d;
    wrong_id.record = RecordId::from_hash(&other);
    assert!(Entry::decode(&wrong_id.encode()).is_err());
}

#[test]
fn version_3_ingests_commit_to_their_header_index_and_older_bytes_are_unchanged() {
    let index = Hash::of(b"header index bytes");
    let dict = Hash::of(b"dictionary bytes");
    let relabelled = |bytes: &[u8], from: &str, to: &str| {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .replacen(from, to, 1)
            .into_bytes()
    };
    let plain = sample_ingest(7, Hash::of(b"prev"), "r-1");
    for with_dictionary in [false, true] {
        let mut e = plain.clone();
        if let EntryBody::Ingest {
            dictionary,
            header_index,
            ..
        } = &mut e.body
        {
            *dictionary = with_dictionary.then_some(dict);
            *header_index = Some(index);
        }
        e.validate().unwrap();
        let v3 = e.encode();
        assert!(v3.starts_with(b"mailvault-log-entry/3\n"));
        // The commitment is the last line, after the dictionary when there is one.
        assert!(v3.ends_with(format!("header-index {index}\n").as_bytes()));
        assert_eq!(
            String::from_utf8_lossy(&v3).contains(&format!("\ndictionary {dict}\nheader-index ")),
            with_dictionary
        );
        assert_eq!(Entry::decode(&v3).unwrap(), e);
        assert_eq!(Entry::decode(&v3).unwrap().encode(), v3);
        // One spelling: a version-3 field under an older line, or the version-3 line on an
        // entry without it, is refused.
        for older in ["log-entry/1", "log-entry/2"] {
            assert!(Entry::decode(&relabelled(&v3, "log-entry/3", older)).is_err());
        }
    }
    let v1 = plain.encode();
    assert!(v1.starts_with(b"mailvault-log-entry/1\n"));
    assert!(Entry::decode(&relabelled(&v1, "log-entry/1", "log-entry/3")).is_err());
    // The commitment before the dictionary is not the canonical order.
    let mut both = plain;
    if let EntryBody::Ingest {
        dictionary,
        header_index,
        ..
    } = &mut both.body
    {
        *dictionary = Some(dict);
        *header_index = Some(index);
    }
    let swapped = String::from_utf8(both.encode())
        .unwrap()
        .replace(
            &format!("dictionary {dict}\nheader-index {index}\n"),
            &format!("header-index {index}\ndictionary {dict}\n"),
        )
        .into_bytes();
    assert!(Entry::decode(&swapped).is_err());
}
