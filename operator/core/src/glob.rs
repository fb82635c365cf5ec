//! Folder-name globs, as the CRD and the CLI document them: `*` matches within one level of the
//! hierarchy, `**` across levels, `?` one character of a level; everything else matches itself.
//! Patterns are written with `/` between levels whatever the server's delimiter, and against
//! the folder's decoded name (modified UTF-7 undone), so `Réunions` and `Archive/*` mean the
//! same on every server. Case-sensitive, except that `INBOX` is matched case-insensitively as
//! IMAP defines it.
//!
//! `raw IMAP name + server delimiter -> display name (UTF-8, '/' between levels) -> glob match`
//!
//! The raw name stays the folder's identity (EXAMINE, the cursor, record identities); the
//! display name is only for matching and for people.

/// The level separator of patterns and display names.
pub const LEVEL: char = '/';

/// A folder's name for matching and display: modified UTF-7 decoded (RFC 3501 5.1.3; a name
/// that is not valid modified UTF-7 is shown as it is) and the server's delimiter shown as `/`.
pub fn display_name(raw: &str, delimiter: Option<char>) -> String {
    let decoded = decode_modified_utf7(raw).unwrap_or_else(|| raw.to_owned());
    match delimiter {
        Some(d) if d != LEVEL => decoded.replace(d, "/"),
        _ => decoded,
    }
}

/// Decodes IMAP's modified UTF-7 (RFC 3501 5.1.3): `&` … `-` holds UTF-16BE in base64 with `,`
/// for `/`; `&-` is `&`. `None` if the name is not valid modified UTF-7.
///
/// Written here rather than taken from a crate: the crates that do this (`utf7-imap`,
/// `imap-utf7`) are unmaintained single-author crates with I/O-free code this short, and this
/// core admits no dependency it does not need.
pub fn decode_modified_utf7(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find('-')?;
        let encoded = &after[..end];
        if encoded.is_empty() {
            out.push('&');
        } else {
            let units = base64_utf16(encoded)?;
            out.push_str(&String::from_utf16(&units).ok()?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The UTF-16 code units of a modified-base64 run (no padding, `,` for `/`).
fn base64_utf16(encoded: &str) -> Option<Vec<u16>> {
    let mut bits: u32 = 0;
    let mut nbits = 0u32;
    let mut bytes = Vec::new();
    for c in encoded.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b',' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push(u8::try_from((bits >> nbits) & 0xff).ok()?);
        }
    }
    // Leftover bits are padding (fewer than one base64 character's worth) and must be zero;
    // the bytes are whole code units.
    if nbits >= 6 || bits & ((1 << nbits) - 1) != 0 || bytes.len() % 2 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `**`: any run of characters, across levels.
    AnyDeep,
    /// `*`: any run of characters within a level.
    Any,
    /// `?`: one character other than `/`.
    One,
    /// Itself.
    Char(char),
}

fn tokens(pattern: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                Token::AnyDeep
            }
            '*' => Token::Any,
            '?' => Token::One,
            c => Token::Char(c),
        });
    }
    out
}

/// `INBOX` in any case is `INBOX` (RFC 3501), as a whole name or as the first level.
fn canonical(s: &str) -> String {
    let (first, rest) = s.split_once(LEVEL).map_or((s, None), |(f, r)| (f, Some(r)));
    if first.eq_ignore_ascii_case("INBOX") {
        rest.map_or_else(|| "INBOX".to_owned(), |r| format!("INBOX{LEVEL}{r}"))
    } else {
        s.to_owned()
    }
}

/// Whether the display name `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p = tokens(&canonical(pattern));
    let n: Vec<char> = canonical(name).chars().collect();
    // row[j]: the pattern so far matches n[..j]. O(len(p) * len(n)) time, O(len(n)) memory,
    // no recursion: a hostile pattern cannot blow the stack.
    let mut row = vec![false; n.len() + 1];
    row[0] = true;
    for t in p {
        let mut next = vec![false; n.len() + 1];
        match t {
            Token::AnyDeep | Token::Any => {
                let mut reach = false;
                for j in 0..=n.len() {
                    if j > 0 && t == Token::Any && n[j - 1] == LEVEL {
                        reach = false;
                    }
                    reach |= row[j];
                    next[j] = reach;
                }
            }
            Token::One | Token::Char(_) => {
                for j in 1..=n.len() {
                    let c = n[j - 1];
                    let ok = match t {
                        Token::One => c != LEVEL,
                        Token::Char(want) => c == want,
                        Token::Any | Token::AnyDeep => false,
                    };
                    next[j] = row[j - 1] && ok;
                }
            }
        }
        row = next;
    }
    row[n.len()]
}

/// Whether a folder (by its display name) is selected: it matches an include pattern (or there
/// are none) and no exclude pattern.
pub fn selected(include: &[String], exclude: &[String], folder: &str) -> bool {
    (include.is_empty() || include.iter().any(|p| matches(p, folder)))
        && !exclude.iter().any(|p| matches(p, folder))
}

/// The include patterns that match none of `folders` (display names): a typo, or a folder
/// that is gone. Worth a warning: the run archives nothing for them and says so.
pub fn unmatched<'a>(include: &'a [String], folders: &[String]) -> Vec<&'a str> {
    include
        .iter()
        .filter(|p| !folders.iter().any(|f| matches(p, f)))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("**", "Archive/2026"));
        assert!(!matches("*", "Archive/2026"), "* stays within a level");
        assert!(matches("*", "Archive"));
        assert!(matches("Archive/*", "Archive/2026"));
        assert!(!matches("Archive/*", "Archive/2026/Q1"));
        assert!(matches("Archive/**", "Archive/2026/Q1"));
        assert!(matches("**/Q1", "Archive/2026/Q1"));
        assert!(!matches("Archive/*", "Archived"));
        assert!(matches("Jun?", "Junk"));
        assert!(
            !matches("Archive?2026", "Archive/2026"),
            "? stays within a level"
        );
        assert!(matches("inbox", "INBOX"));
        assert!(matches("inbox/*", "INBOX/Receipts"));
        assert!(!matches("Inbox/x", "INBOX"));
        assert!(matches("*a*b*c", "xxaxxbxxc"));
        assert!(!matches("*a*b*c", "xxaxxbxx"));
        assert!(matches("", ""));
        assert!(!matches("", "x"));
        assert!(
            matches("R?unions", "Réunions"),
            "? is one character, not one byte"
        );
    }

    #[test]
    fn include_exclude() {
        let none: Vec<String> = vec![];
        assert!(
            selected(&none, &none, "Trash"),
            "default: every folder, Trash too"
        );
        assert!(!selected(&none, &["Junk".into()], "Junk"));
        assert!(selected(
            &["INBOX".into(), "Sent*".into()],
            &none,
            "Sent Items"
        ));
        assert!(!selected(&["INBOX".into()], &none, "Drafts"));
        assert_eq!(
            unmatched(
                &["INBOX".into(), "Réunions".into(), "Archive/*".into()],
                &["INBOX".into(), "Archive/2026".into()]
            ),
            ["Réunions"]
        );
    }

    #[test]
    fn names_are_decoded_and_levels_are_slashes() {
        assert_eq!(decode_modified_utf7("R&AOk-unions").unwrap(), "Réunions");
        assert_eq!(decode_modified_utf7("Tom &- Jerry").unwrap(), "Tom & Jerry");
        // RFC 3501's example: ~peter/mail/台北/日本語
        assert_eq!(
            decode_modified_utf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(decode_modified_utf7("Plain"), Some("Plain".into()));
        assert_eq!(decode_modified_utf7("&Jjo"), None, "unterminated");
        assert_eq!(decode_modified_utf7("&A-"), None, "not whole code units");
        assert_eq!(display_name("R&AOk-unions", Some('.')), "Réunions");
        assert_eq!(display_name("Archive.2026", Some('.')), "Archive/2026");
        assert_eq!(display_name("Archive/2026", Some('/')), "Archive/2026");
        assert_eq!(display_name("&bad", None), "&bad", "shown as it is");
        assert!(matches(
            "Archive/*",
            &display_name("Archive.2026", Some('.'))
        ));
        assert!(matches(
            "Réunions",
            &display_name("R&AOk-unions", Some('/'))
        ));
    }

    #[test]
    fn a_hostile_pattern_is_fast() {
        let p = "*a".repeat(200);
        let n = "a".repeat(5000) + "b";
        assert!(!matches(&p, &n));
    }
}
