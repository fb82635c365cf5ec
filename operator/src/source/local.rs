//! Local sources: `mbox:FILE`, `maildir:DIR` and `eml:DIR`.

use super::{SourceMessage, content_identity};
use crate::{Error, Result};
use mailvault_core::{Hash, UnixTime};
use std::path::{Path, PathBuf};

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn mtime(path: &Path) -> Option<UnixTime> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let secs = modified
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    i64::try_from(secs).ok().map(UnixTime)
}

fn local_message(
    folder: &str,
    location: String,
    bytes: Vec<u8>,
    internal_date: Option<UnixTime>,
    flags: Vec<String>,
) -> SourceMessage {
    let content_sha256 = Hash::of(&bytes);
    SourceMessage {
        folder: folder.to_owned(),
        identity: content_identity(folder, &content_sha256),
        bytes,
        content_sha256,
        internal_date,
        flags,
        location,
    }
}

/// Reads an mbox file (mboxrd: `>From ` quoting is undone). Messages are separated by lines
/// starting with `From ` that follow an empty line (or start the file).
pub fn read_mbox(path: &Path) -> Result<Vec<SourceMessage>> {
    let data = std::fs::read(path).map_err(|e| io(path, e))?;
    if !data.is_empty() && !data.starts_with(b"From ") {
        return Err(Error::Source(format!(
            "{}: not an mbox file (it does not start with a \"From \" line)",
            path.display()
        )));
    }
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut previous_blank = true;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if previous_blank && line.starts_with(b"From ") {
            if let Some(mut m) = current.take() {
                // The empty line before a separator belongs to the mbox, not the message.
                if m.ends_with(b"\r\n\r\n") {
                    m.truncate(m.len() - 2);
                } else if m.ends_with(b"\n\n") {
                    m.truncate(m.len() - 1);
                }
                messages.push(m);
            }
            current = Some(Vec::new());
            previous_blank = false;
            continue;
        }
        previous_blank = line == b"\n" || line == b"\r\n";
        if let Some(m) = current.as_mut() {
            // mboxrd: a line of one or more '>' then "From " lost one '>' when it was written.
            let quoted = line
                .iter()
                .position(|&b| b != b'>')
                .is_some_and(|i| i > 0 && line[i..].starts_with(b"From "));
            m.extend_from_slice(if quoted { &line[1..] } else { line });
        }
    }
    if let Some(m) = current {
        messages.push(m);
    }
    Ok(messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            local_message(
                "INBOX",
                format!("mbox:{}#{}", path.display(), i + 1),
                m,
                None,
                Vec::new(),
            )
        })
        .collect())
}

/// Maildir info flags (`:2,FRS`) as IMAP flag names.
fn maildir_flags(name: &str) -> Vec<String> {
    let Some((_, info)) = name.rsplit_once(":2,") else {
        return Vec::new();
    };
    info.chars()
        .filter_map(|c| match c {
            'D' => Some("\\Draft"),
            'F' => Some("\\Flagged"),
            'R' => Some("\\Answered"),
            'S' => Some("\\Seen"),
            'T' => Some("\\Deleted"),
            _ => None,
        })
        .map(str::to_owned)
        .collect()
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let p = e.map_err(|e| io(dir, e))?.path();
                if p.is_file() {
                    out.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dir, e)),
    }
    out.sort();
    Ok(out)
}

/// Reads a Maildir++ tree: the top is `INBOX`, each `.Name` subdirectory a folder (`.A.B` is
/// `A/B`). Messages in `cur/` and `new/`; `tmp/` is a delivery in progress and is skipped.
pub fn read_maildir(root: &Path) -> Result<Vec<SourceMessage>> {
    if !root.join("cur").is_dir() && !root.join("new").is_dir() {
        return Err(Error::Source(format!(
            "{}: not a Maildir (no cur/ or new/ directory)",
            root.display()
        )));
    }
    let mut folders = vec![("INBOX".to_owned(), root.to_path_buf())];
    for e in std::fs::read_dir(root).map_err(|e| io(root, e))? {
        let p = e.map_err(|e| io(root, e))?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_dir() && name.len() > 1 && name.starts_with('.') {
            folders.push((name[1..].replace('.', "/"), p));
        }
    }
    folders.sort();
    let mut out = Vec::new();
    for (folder, dir) in folders {
        for sub in ["cur", "new"] {
            for file in files_in(&dir.join(sub))? {
                let bytes = std::fs::read(&file).map_err(|e| io(&file, e))?;
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let location = format!("maildir:{}", file.display());
                out.push(local_message(
                    &folder,
                    location,
                    bytes,
                    mtime(&file),
                    maildir_flags(&name),
                ));
            }
        }
    }
    Ok(out)
}

/// Reads every `*.eml` file under a directory; the subdirectory is the folder (`INBOX` at the top).
pub fn read_eml_dir(root: &Path) -> Result<Vec<SourceMessage>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<SourceMessage>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .map(|e| e.map(|e| e.path()).map_err(|e| io(dir, e)))
            .collect::<Result<_>>()?;
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(root, &p, out)?;
            } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("eml")) {
                let folder = p
                    .parent()
                    .and_then(|d| d.strip_prefix(root).ok())
                    .map(|d| {
                        d.components()
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join("/")
                    })
                    .filter(|f| !f.is_empty())
                    .unwrap_or_else(|| "INBOX".to_owned());
                let bytes = std::fs::read(&p).map_err(|e| io(&p, e))?;
                out.push(local_message(
                    &folder,
                    format!("eml:{}", p.display()),
                    bytes,
                    mtime(&p),
                    Vec::new(),
                ));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mailvault-src-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn mbox_split_and_unquote() {
        let d = tmp("mbox");
        let f = d.join("box");
        std::fs::write(
            &f,
            b"From a@b Sat Nov 28 03:00:00 2026\nSubject: one\n\n>From the start\n>>From deeper\n\nFrom b@c Sat Nov 28 03:01:00 2026\nSubject: two\n\nbody\n",
        )
        .unwrap();
        let m = read_mbox(&f).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].bytes,
            b"Subject: one\n\nFrom the start\n>From deeper\n"
        );
        assert_eq!(m[1].bytes, b"Subject: two\n\nbody\n");
        std::fs::write(&f, b"Subject: not mbox\n").unwrap();
        assert!(read_mbox(&f).is_err());
    }

    #[test]
    fn maildir_folders_and_flags() {
        let d = tmp("maildir");
        for sub in ["cur", "new", "tmp", ".Sent/cur", ".Archive.2026/new"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("cur/1.a:2,RS"), b"Subject: a\r\n\r\nx\r\n").unwrap();
        std::fs::write(d.join("new/2.b"), b"Subject: b\r\n\r\ny\r\n").unwrap();
        std::fs::write(d.join("tmp/3.c"), b"half").unwrap();
        std::fs::write(d.join(".Sent/cur/4.d:2,S"), b"Subject: d\r\n\r\n").unwrap();
        std::fs::write(d.join(".Archive.2026/new/5.e"), b"Subject: e\r\n\r\n").unwrap();
        let m = read_maildir(&d).unwrap();
        let got: Vec<(&str, Vec<String>)> = m
            .iter()
            .map(|m| (m.folder.as_str(), m.flags.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Archive/2026", vec![]),
                ("INBOX", vec!["\\Answered".to_owned(), "\\Seen".to_owned()]),
                ("INBOX", vec![]),
                ("Sent", vec!["\\Seen".to_owned()]),
            ]
        );
        assert!(read_maildir(&d.join("cur")).is_err());
    }

    #[test]
    fn eml_tree() {
        let d = tmp("eml");
        std::fs::create_dir_all(d.join("Sent")).unwrap();
        std::fs::write(d.join("a.eml"), b"Subject: a\r\n\r\n").unwrap();
        std::fs::write(d.join("Sent/b.EML"), b"Subject: b\r\n\r\n").unwrap();
        std::fs::write(d.join("notes.txt"), b"ignored").unwrap();
        let m = read_eml_dir(&d).unwrap();
        let folders: Vec<&str> = m.iter().map(|m| m.folder.as_str()).collect();
        assert_eq!(folders, ["Sent", "INBOX"]);
    }
}
