//! IMAP servers that lie, played by a scripted server (`tests/support/imap_script.rs`) in
//! front of `mailvault archive` into a `file:` store: UIDs backwards, UIDVALIDITY changing
//! within a run, literal sizes that do not match, a message that never ends, UIDs nobody
//! announced, pieces of another message, a message over the size limit. Each time mailvault
//! notices, says why in words a platform engineer can act on, claims nothing it cannot prove,
//! and loses nothing it already archived: `verify` passes afterwards and every record exports
//! to bytes the server really sent.

use mailvault_tests::imap_script::{Script, ScriptedArchive as Case};
use mailvault_tests::output_text as text;

fn message(n: u32) -> Vec<u8> {
    format!("From: a@city.example\r\nSubject: message {n}\r\n\r\nbody {n}\r\n").into_bytes()
}

/// A message of `len` bytes (larger than a 4 MiB piece when `len` is).
fn large(len: usize, n: u8) -> Vec<u8> {
    let mut m = format!("Subject: large {n}\r\n\r\n").into_bytes();
    while m.len() < len {
        m.extend_from_slice(&[b'a' + (m.len() % 26) as u8; 76]);
        m.extend_from_slice(b"\r\n");
    }
    m.truncate(len);
    m
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// UIDNEXT going back under the same UIDVALIDITY (a server that reuses UIDs): without a
/// check, the cursor would skip the reused UID's new message forever. The folder is re-read
/// in full, the new message archived, nothing stored twice. FETCH answers in descending UID
/// order on the way: order does not matter.
#[tokio::test(flavor = "multi_thread")]
async fn uids_going_backwards_are_noticed_and_nothing_is_missed() {
    let case = Case::new(
        "backwards",
        Script {
            uid_validity: 7,
            uid_next: 5,
            messages: (1..=4).rev().map(|u| (u, message(u))).collect(),
            ..Script::default()
        },
    )
    .await;
    let first = case.archive(&[]).await;
    assert!(first.status.success(), "{}", text(&first));
    assert!(String::from_utf8_lossy(&first.stdout).contains("archived 4 new records"));
    assert_eq!(case.cursor_uid_next(), Some(5));

    // The server now says UIDNEXT 3 and holds a new message under UID 2.
    case.server.script(|s| {
        s.uid_next = 3;
        s.messages = vec![(1, message(1)), (2, message(99))];
    });
    let second = case.archive(&[]).await;
    assert!(second.status.success(), "{}", text(&second));
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(out.contains("archived 1 new records"), "{}", text(&second));
    assert!(
        out.contains("UIDNEXT went back from 5 to 3 with UIDVALIDITY unchanged"),
        "{out}"
    );
    let mut expected: Vec<Vec<u8>> = (1..=4).map(message).collect();
    expected.push(message(99));
    assert_eq!(case.verified_records(), sorted(expected));
}

/// UIDVALIDITY changes between the folder's EXAMINE and the check after its FETCH: the UIDs of
/// the run mean nothing any more. Every message is kept; the cursor does not claim the folder
/// was read; the next run re-reads it and stores nothing twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_uidvalidity_change_within_a_run_keeps_messages_and_not_the_cursor() {
    let case = Case::new(
        "validity",
        Script {
            uid_validity: 7,
            uid_next: 4,
            messages: (1..=3).map(|u| (u, message(u))).collect(),
            uid_validity_on_second_examine: Some(8),
            ..Script::default()
        },
    )
    .await;
    let first = case.archive(&[]).await;
    assert!(first.status.success(), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(out.contains("archived 3 new records"), "{out}");
    assert!(
        out.contains("UIDVALIDITY changed from 7 to 8 during the run"),
        "{out}"
    );
    assert_eq!(case.cursor_uid_next(), None, "the cursor claims the folder");

    case.server.script(|s| {
        s.uid_validity = 8;
        s.uid_validity_on_second_examine = None;
    });
    let second = case.archive(&[]).await;
    assert!(second.status.success(), "{}", text(&second));
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        out.contains("archived 0 new records (3 already archived"),
        "{out}"
    );
    assert_eq!(case.cursor_uid_next(), Some(4));
    assert_eq!(
        case.verified_records(),
        sorted((1..=3).map(message).collect())
    );
}

/// A FETCH answer for a UID the server never announced (far past UIDNEXT): the message is
/// kept, but the cursor stays at the announced UIDNEXT, so the UIDs the server really uses
/// next are still fetched.
#[tokio::test(flavor = "multi_thread")]
async fn an_unannounced_uid_does_not_move_the_cursor_past_real_mail() {
    let case = Case::new(
        "unannounced",
        Script {
            uid_validity: 7,
            uid_next: 3,
            messages: vec![
                (1, message(1)),
                (2, message(2)),
                (4_000_000_000, message(4)),
            ],
            ..Script::default()
        },
    )
    .await;
    let first = case.archive(&[]).await;
    assert!(first.status.success(), "{}", text(&first));
    assert!(String::from_utf8_lossy(&first.stdout).contains("archived 3 new records"));
    assert_eq!(case.cursor_uid_next(), Some(3));

    case.server.script(|s| {
        s.uid_next = 4;
        s.messages = vec![(1, message(1)), (2, message(2)), (3, message(3))];
    });
    let second = case.archive(&[]).await;
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("archived 1 new records"),
        "{}",
        text(&second)
    );
    assert_eq!(
        case.verified_records(),
        sorted((1..=4).map(message).collect())
    );
}

/// Literal sizes that do not match the bytes sent, longer or shorter: the answer cannot be
/// read, the run fails naming the step, and nothing with the wrong bytes is archived. A
/// message that never ends: the per-step time-out fires. In each case what was archived
/// before stays archived and verifiable.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_literal_sizes_and_a_message_that_never_ends_fail_clearly() {
    for (name, lie) in [
        (
            "shorter",
            Script {
                literal_size_lie: Some((3, -2)),
                ..Script::default()
            },
        ),
        (
            "longer",
            Script {
                literal_size_lie: Some((3, 40)),
                ..Script::default()
            },
        ),
        (
            "stall",
            Script {
                stall_on: Some(3),
                ..Script::default()
            },
        ),
    ] {
        let case = Case::new(
            name,
            Script {
                uid_validity: 7,
                uid_next: 3,
                messages: (1..=2).map(|u| (u, message(u))).collect(),
                ..Script::default()
            },
        )
        .await;
        let first = case.archive(&[]).await;
        assert!(first.status.success(), "{name}: {}", text(&first));
        case.server.script(|s| {
            *s = Script {
                uid_validity: 7,
                uid_next: 5,
                messages: (1..=4).map(|u| (u, message(u))).collect(),
                ..lie
            };
        });
        let started = std::time::Instant::now();
        let lied = case.archive(&["--imap-timeout", "3"]).await;
        assert_ne!(lied.status.code(), Some(0), "{name}: {}", text(&lied));
        let err = String::from_utf8_lossy(&lied.stderr);
        assert!(err.contains("IMAP UID FETCH in INBOX"), "{name}: {err}");
        if name == "stall" {
            assert!(err.contains("no data within 3s"), "{name}: {err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(60));
        }
        // Nothing but messages the server really holds, each whole; the first run's two
        // certainly.
        let records = case.verified_records();
        let real: Vec<Vec<u8>> = (1..=4).map(message).collect();
        assert!(
            records.iter().all(|r| real.contains(r)),
            "{name}: a record with wrong bytes"
        );
        assert!(records.contains(&message(1)) && records.contains(&message(2)));
        // Once the server tells the truth, the rest comes.
        case.server.script(|s| {
            s.literal_size_lie = None;
            s.stall_on = None;
        });
        let honest = case.archive(&[]).await;
        assert!(honest.status.success(), "{name}: {}", text(&honest));
        assert_eq!(case.verified_records(), sorted(real), "{name}");
    }
}

/// A large message fetched in pieces: a server answering a later piece with another UID's
/// bytes, or with more bytes than asked, is refused (it cannot be placed in the message), and
/// the message is not archived in pieces from two messages.
#[tokio::test(flavor = "multi_thread")]
async fn pieces_of_another_message_or_longer_than_asked_are_refused() {
    let big = large(9 * 1024 * 1024, 1);
    for (name, lie) in [
        (
            "another-uid",
            Script {
                pieces_from_another_uid: true,
                ..Script::default()
            },
        ),
        (
            "oversized",
            Script {
                oversized_pieces: Some(10),
                ..Script::default()
            },
        ),
    ] {
        let case = Case::new(
            name,
            Script {
                uid_validity: 7,
                uid_next: 3,
                messages: vec![(1, big.clone()), (2, message(2))],
                ..lie
            },
        )
        .await;
        let lied = case.archive(&[]).await;
        assert_eq!(lied.status.code(), Some(2), "{name}: {}", text(&lied));
        let err = String::from_utf8_lossy(&lied.stderr);
        let expected = if name == "another-uid" {
            "answered with the bytes of another message (UID 2) and none for UID 1"
        } else {
            "bytes for a piece of at most 4194304"
        };
        assert!(err.contains(expected), "{name}: {err}");
        // The small message was stored and logged before the failure; the large one not.
        assert_eq!(case.verified_records(), vec![message(2)], "{name}");
    }
}

/// A message over `--max-message-size` is not archived, not read past the limit, named by
/// folder and UID, and counted as a capture gap; the rest of the folder is archived and the
/// cursor moves on (a documented decision: docs/pipeline.md).
#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_the_size_limit_is_refused_named_and_counted() {
    let case = Case::new(
        "too-large",
        Script {
            uid_validity: 7,
            uid_next: 5,
            messages: vec![
                (1, message(1)),
                (2, large(9 * 1024 * 1024, 2)),
                (3, large(3 * 1024 * 1024, 3)),
                (4, message(4)),
            ],
            ..Script::default()
        },
    )
    .await;
    let run = case.archive(&["--max-message-size", "2MiB"]).await;
    assert!(run.status.success(), "{}", text(&run));
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("archived 2 new records"), "{out}");
    assert!(
        out.contains("2 message(s) over --max-message-size not archived (capture gaps)"),
        "{out}"
    );
    assert!(
        out.contains("warning: INBOX UID 2 not archived: at least"),
        "{out}"
    );
    assert!(
        out.contains("warning: INBOX UID 3 not archived: at least 3145728 bytes"),
        "{out}"
    );
    // The 9 MiB message was read no further than its first 4 MiB piece.
    let pieces = case
        .server
        .commands
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.contains("UID FETCH 2 "))
        .count();
    assert_eq!(pieces, 0, "a refused message was fetched on");
    assert_eq!(case.cursor_uid_next(), Some(5));
    assert_eq!(case.verified_records(), vec![message(1), message(4)]);
    assert_eq!(
        std::fs::read_dir(case.dir.join("spool")).map_or(0, Iterator::count),
        0,
        "spool files left behind"
    );
}

/// What docs/pipeline.md says about spool space, measured: every new message over 4 MiB keeps
/// its first 4 MiB piece spooled until the folder's FETCH ends, so ten 9 MiB messages hold at
/// least 36 MiB of spool at once with the default cap; with `--max-spool-size 40MiB` (and 10 MiB
/// the largest message) the run stays within 40 MiB, fetching dropped first pieces again, and
/// every message is archived byte for byte. A cap under four times the largest message is
/// refused before anything is read.
#[tokio::test(flavor = "multi_thread")]
async fn spool_use_is_what_docs_say_and_the_cap_holds() {
    const MIB: u64 = 1024 * 1024;
    let messages: Vec<(u32, Vec<u8>)> = (1..=10u8)
        .map(|u| (u32::from(u), large(9 * 1024 * 1024, u)))
        .collect();
    for (name, extra, peak_at_least, peak_at_most) in [
        ("spool", &[][..], Some(36 * MIB), None),
        (
            "spool-cap",
            &["--max-spool-size", "40MiB", "--max-message-size", "10MiB"][..],
            None,
            Some(40 * MIB),
        ),
    ] {
        let case = Case::new(
            name,
            Script {
                uid_validity: 7,
                uid_next: 11,
                messages: messages.clone(),
                ..Script::default()
            },
        )
        .await;
        let spool = case.dir.join("spool");
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (spool, done) = (spool.clone(), done.clone());
            tokio::spawn(async move {
                let mut peak = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let used: u64 = std::fs::read_dir(&spool)
                        .map(|d| {
                            d.filter_map(|e| e.ok()?.metadata().ok())
                                .map(|m| m.len())
                                .sum()
                        })
                        .unwrap_or(0);
                    peak = peak.max(used);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                peak
            })
        };
        let run = case.archive(extra).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = watcher.await.unwrap();
        assert!(run.status.success(), "{name}: {}", text(&run));
        eprintln!(
            "{name}: peak spool use {} MiB for ten 9 MiB messages",
            peak / MIB
        );
        if let Some(least) = peak_at_least {
            assert!(
                peak >= least,
                "first pieces are no longer held until the FETCH ends ({} MiB): update docs/pipeline.md",
                peak / MIB
            );
        }
        if let Some(most) = peak_at_most {
            assert!(peak <= most, "{name}: {} MiB over the cap", peak / MIB);
            // Dropped first pieces were fetched again from byte 0 after the FETCH.
            let commands = case.server.commands.lock().unwrap().clone();
            assert!(
                commands.iter().any(|c| c.contains("BODY.PEEK[]<0.")
                    && !c.contains("1:*")
                    && !c.contains(":*")),
                "{name}: no first piece fetched again: {commands:?}"
            );
        }
        assert_eq!(
            case.verified_records(),
            sorted(messages.iter().map(|(_, m)| m.clone()).collect()),
            "{name}"
        );
    }
    // A cap that cannot hold the largest message's store is refused before anything is read.
    let case = Case::new("spool-refused", Script::default()).await;
    let refused = case
        .archive(&["--max-spool-size", "30MiB", "--max-message-size", "10MiB"])
        .await;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("at least four times the largest message"),
        "{}",
        text(&refused)
    );
    assert!(case.server.commands.lock().unwrap().is_empty());
}

/// A response line mailvault's IMAP parser (imap-proto) panics on — a response code followed
/// by a byte that is not UTF-8, found by `make fuzz` — fails the run with a clear IMAP error
/// instead of taking the process down: no panic exit, what was archived before stays
/// verifiable, and once the server answers sanely the rest comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_response_the_imap_parser_chokes_on_fails_the_run_not_the_process() {
    let case = Case::new(
        "parser-panic",
        Script {
            uid_validity: 7,
            uid_next: 3,
            messages: (1..=2).map(|u| (u, message(u))).collect(),
            ..Script::default()
        },
    )
    .await;
    let first = case.archive(&[]).await;
    assert!(first.status.success(), "{}", text(&first));
    case.server.script(|s| {
        s.uid_next = 5;
        s.messages = (1..=4).map(|u| (u, message(u))).collect();
        s.extra_examine_line = Some(b"* OK [UNSEEN 1]\xac\xac unseen\r\n".to_vec());
    });
    let choked = case.archive(&[]).await;
    // 101 is Rust's exit code for a panic that ended the process.
    assert_eq!(choked.status.code(), Some(2), "{}", text(&choked));
    let err = String::from_utf8_lossy(&choked.stderr);
    assert!(
        err.contains("the IMAP server sent a response mailvault's IMAP parser could not handle"),
        "{err}"
    );
    // The parser's panic message is printed (it quotes the server's bytes), and no secret
    // is in it or anywhere else in the output.
    assert!(err.contains("panicked"), "{err}");
    assert!(
        !text(&choked).contains(mailvault_tests::imap_script::SCRIPTED_PASSWORD),
        "{}",
        text(&choked)
    );
    assert_eq!(
        case.verified_records(),
        sorted((1..=2).map(message).collect())
    );
    case.server.script(|s| s.extra_examine_line = None);
    let honest = case.archive(&[]).await;
    assert!(honest.status.success(), "{}", text(&honest));
    assert_eq!(
        case.verified_records(),
        sorted((1..=4).map(message).collect())
    );
}
