//! Folder-name globs: `*` matches any run of characters (including the hierarchy separator),
//! `?` one character (a Unicode scalar value, so `Entw?rfe` matches `Entwürfe`); everything
//! else matches itself. Case-sensitive, except that `INBOX` is
//! matched case-insensitively as IMAP defines it.

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = canonical(pattern).chars().collect();
    let n: Vec<char> = canonical(name).chars().collect();
    wild(&p, &n)
}

fn canonical(s: &str) -> &str {
    if s.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        s
    }
}

/// Iterative wildcard match with single-star backtracking: O(len(p) * len(n)) at worst, no
/// recursion, so a hostile pattern cannot blow the stack.
fn wild(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether a folder is selected: it matches an include pattern (or there are none) and no
/// exclude pattern.
pub fn selected(include: &[String], exclude: &[String], folder: &str) -> bool {
    (include.is_empty() || include.iter().any(|p| matches(p, folder)))
        && !exclude.iter().any(|p| matches(p, folder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("*", "Archive/2026"));
        assert!(matches("Archive/*", "Archive/2026"));
        assert!(!matches("Archive/*", "Archived"));
        assert!(matches("Jun?", "Junk"));
        assert!(matches("inbox", "INBOX"));
        assert!(!matches("Inbox/x", "INBOX"));
        assert!(matches("*a*b*c", "xxaxxbxxc"));
        assert!(!matches("*a*b*c", "xxaxxbxx"));
        assert!(matches("", ""));
        assert!(matches("Entw?rfe", "Entwürfe"));
        assert!(!matches("Entw??rfe", "Entwürfe"));
        assert!(!matches("", "x"));
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
    }

    #[test]
    fn a_hostile_pattern_is_fast() {
        let p = "*a".repeat(200);
        let n = "a".repeat(5000) + "b";
        assert!(!matches(&p, &n));
    }
}
