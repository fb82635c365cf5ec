use super::*;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

fn facts_of(bytes: &[u8]) -> MessageFacts {
    extract(
        bytes,
        Envelope {
            folder: "INBOX",
            size: bytes.len() as u64,
            internal_date: Some(UnixTime(1_780_000_000)),
        },
    )
}

/// Extracts, and fails if a debug build took more than two seconds.
fn quickly(bytes: &[u8]) -> MessageFacts {
    let start = Instant::now();
    let facts = facts_of(bytes);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    facts
}

const PLAIN: &str = "From: =?UTF-8?Q?Chief_J=C3=BCrgen?= <Chief@Police.City.Example>\r\n\
To: Records Team: a@city.example, B@City.Example;, \"Press\" <press@news.example>\r\n\
Cc: =?ISO-8859-1?Q?Andr=E9?= <andre@city.example>\r\n\
Subject: =?UTF-8?B?w5xiZXJwcsO8ZnVuZw==?= IA-2026-17\r\n\
Date: Thu, 31 Dec 2026 23:30:00 -0600\r\n\
X-Records-Series: GS\r\n 1-07\r\n\
Message-ID: <1@city.example>\r\n\
\r\n\
Hello.\r\n";

#[test]
fn addresses_subjects_dates_and_headers() {
    let f = facts_of(PLAIN.as_bytes());
    assert!(!f.unparseable);
    assert_eq!(f.from, ["chief@police.city.example"]);
    assert_eq!(
        f.to,
        ["a@city.example", "b@city.example", "press@news.example"],
        "group members and plain addresses"
    );
    assert_eq!(f.cc, ["andre@city.example"]);
    assert_eq!(f.subject, "Überprüfung IA-2026-17");
    assert_eq!(
        f.date,
        Some(UnixTime::parse("2027-01-01T05:30:00Z").unwrap()),
        "the date in UTC"
    );
    assert!(
        f.headers
            .iter()
            .any(|(n, v)| n == "X-Records-Series" && v == "GS 1-07"),
        "{:?}",
        f.headers
    );
    assert!(!f.has_attachment);
    assert_eq!(f.size, PLAIN.len() as u64);
    assert_eq!(f.internal_date, Some(UnixTime(1_780_000_000)));
}

fn multipart(parts: &str) -> String {
    format!(
        "From: a@b.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
         preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nbody\r\n{parts}--XX--\r\n"
    )
}

#[test]
fn attachments_from_the_mime_structure() {
    let disposition = multipart(
        "--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n",
    );
    assert!(facts_of(disposition.as_bytes()).has_attachment);
    let named = multipart("--XX\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\n\r\nx\r\n");
    assert!(facts_of(named.as_bytes()).has_attachment);
    let forwarded = multipart(
        "--XX\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y.example\r\nSubject: fwd\r\n\r\nhi\r\n",
    );
    assert!(facts_of(forwarded.as_bytes()).has_attachment);
    let inline_image =
        multipart("--XX\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\n\r\nx\r\n");
    assert!(!facts_of(inline_image.as_bytes()).has_attachment);
    let alternative = "From: a@b.example\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n\
        --A\r\nContent-Type: text/plain\r\n\r\nx\r\n--A\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--A--\r\n";
    assert!(!facts_of(alternative.as_bytes()).has_attachment);
    let whole = "From: a@b.example\r\nContent-Type: application/pdf\r\n\
        Content-Disposition: attachment; filename=\"r.pdf\"\r\n\r\nx";
    assert!(facts_of(whole.as_bytes()).has_attachment);
}

#[test]
fn no_headers_is_unparseable() {
    for bytes in [
        &b""[..],
        b"\r\nJust a body\r\n",
        b"\n\n",
        b"no colon anywhere",
    ] {
        let f = quickly(bytes);
        assert!(f.unparseable, "{bytes:?}: {f:?}");
        assert!(f.from.is_empty() && f.subject.is_empty());
        assert_eq!(f.folder, "INBOX");
    }
}

#[test]
fn headers_without_a_body_are_read() {
    let f = quickly(b"From: a@b.example\r\nSubject: only headers");
    assert!(!f.unparseable);
    assert_eq!(f.from, ["a@b.example"]);
}

#[test]
fn nul_bytes_and_bare_cr_lf_mixes() {
    let f = quickly(
        b"From: a\0b@c.example\r\nSubject: x\0y\rz\n\rTo: d@e.example\n\r\n\0\0\0body\r\r\n",
    );
    assert!(!f.unparseable);
    assert!(f.subject.starts_with('x'), "{f:?}");
    let f = quickly(b"\r\r\r\n\n\r\n\rFrom: a@b.example\r\r\r\n\r\n");
    let _ = f; // whatever it makes of it, it returns
    let mixed: Vec<u8> = (0..20_000u32)
        .flat_map(|i| match i % 4 {
            0 => b"X-A: 1\r".to_vec(),
            1 => b"\n".to_vec(),
            2 => b"\r\r".to_vec(),
            _ => b"X-B:\0\n".to_vec(),
        })
        .collect();
    quickly(&mixed);
}

#[test]
fn ten_thousand_header_lines() {
    let mut m = String::from("From: a@b.example\r\n");
    for i in 0..10_000 {
        let _ = write!(m, "X-Line-{i}: value {i}\r\n");
    }
    m.push_str("Subject: last\r\n\r\nbody\r\n");
    let f = quickly(m.as_bytes());
    assert!(!f.unparseable);
    assert_eq!(f.subject, "last");
    assert!(f.headers.len() >= 10_000);
}

#[test]
fn a_one_megabyte_header_line() {
    let long = "a".repeat(1_000_000);
    let m = format!("From: a@b.example\r\nX-Long: {long}\r\nSubject: {long}\r\n\r\nbody\r\n");
    let f = quickly(m.as_bytes());
    // The header block is longer than HEADER_BYTES: unparseable, default rule.
    assert!(f.unparseable);
    let m = format!(
        "From: a@b.example\r\nX-Long: {}\r\nSubject: s\r\n\r\nbody\r\n",
        &long[..900_000]
    );
    let f = quickly(m.as_bytes());
    assert!(!f.unparseable);
    assert_eq!(f.subject, "s");
    let m = format!("From: a@b.example\r\nSubject: {long}\r\n\r\n");
    let f = quickly(m.as_bytes());
    assert!(!f.unparseable);
    assert_eq!(
        f.subject.len(),
        SUBJECT_MATCH_BYTES,
        "the subject kept is bounded"
    );
}

#[test]
fn a_thousand_deep_multipart_nesting() {
    let mut m = String::from("From: a@b.example\r\nSubject: deep\r\n");
    for i in 0..1000 {
        let _ = write!(
            m,
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        );
    }
    m.push_str("Content-Type: application/octet-stream; name=\"deep.bin\"\r\n\r\nx\r\n");
    for i in (0..1000).rev() {
        let _ = write!(m, "--b{i}--\r\n");
    }
    let f = quickly(m.as_bytes());
    assert!(!f.unparseable);
    assert_eq!(f.subject, "deep");
    // The named part is beyond MAX_PARTS: not seen, and that is the bound working.
    let _ = f.has_attachment;
}

#[test]
fn invalid_encodings() {
    let f = quickly(
        b"From: =?utf-8?B?!!!?= <a@b.example>\r\n\
          Subject: =?x-unknown?Q?caf=E9?= =?utf-8?B?////?= \xff\xfe raw\r\n\
          Date: Someday, 99 Foo 20260 25:61:61 +9999\r\n\
          Content-Type: multipart/mixed; boundary=\r\n\
          Content-Transfer-Encoding: base64\r\n\r\n\xc3\x28 ***not base64***\r\n",
    );
    assert!(!f.unparseable);
    assert_eq!(f.from, ["a@b.example"]);
    assert_eq!(f.date, None, "a nonsense Date is no date");
    assert!(f.subject.contains("raw"), "{:?}", f.subject);
}

#[test]
fn a_message_longer_than_the_prefix() {
    let mut m = b"From: a@b.example\r\nSubject: big\r\n\r\n".to_vec();
    m.resize(3 * PREFIX_BYTES, b'x');
    let f = extract(
        &m[..PREFIX_BYTES],
        Envelope {
            folder: "INBOX",
            size: m.len() as u64,
            internal_date: None,
        },
    );
    assert!(!f.unparseable);
    assert_eq!(f.size, m.len() as u64);
    // Headers that never end within the window of a longer message: unparseable.
    let headers_only = "X-A: b\r\n".repeat(HEADER_BYTES / 8 + 10);
    let f = extract(
        headers_only.as_bytes(),
        Envelope {
            folder: "INBOX",
            size: 10 * HEADER_BYTES as u64,
            internal_date: None,
        },
    );
    assert!(f.unparseable);
}

#[test]
fn folder_names_are_decoded_from_modified_utf7() {
    assert_eq!(decode_folder_name("Entw&APw-rfe"), "Entwürfe");
    assert_eq!(decode_folder_name("Tom &- Jerry"), "Tom & Jerry");
    assert_eq!(decode_folder_name("&ZeVnLIqe-"), "日本語");
    assert_eq!(decode_folder_name("INBOX/Sent"), "INBOX/Sent");
    // Not modified UTF-7: kept as it is.
    for raw in ["&AP-", "&unterminated", "&!!-", "Entwürfe"] {
        assert_eq!(decode_folder_name(raw), raw);
    }
}
