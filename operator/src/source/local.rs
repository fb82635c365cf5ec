//! Local sources: `mbox:FILE`, `maildir:DIR` and `eml:DIR`.

use super::{SourceMessage, content_identity};
use crate::spool::{Body, BodyFile, Spool};
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

/// A local source opened for reading, one message at a time.
pub struct LocalSource {
    /// The messages, read lazily (each `next` reads one message: blocking file I/O).
    pub messages: Box<dyn Iterator<Item = Result<SourceMessage>> + Send>,
    /// How many there are, when known without reading them (not for an mbox).
    pub total: Option<usize>,
}

/// Opens `mbox:FILE`, `maildir:DIR` or `eml:DIR`. Messages larger than the spool's limit are
/// not held in memory: a Maildir or .eml file is read in place, an mbox message is spooled.
pub fn open(from: &str, spool: &Spool) -> Result<LocalSource> {
    if let Some(p) = from.strip_prefix("mbox:") {
        Ok(LocalSource {
            messages: Box::new(read_mbox(Path::new(p), spool)?),
            total: None,
        })
    } else if let Some(p) = from.strip_prefix("maildir:") {
        let files = read_maildir(Path::new(p), spool)?;
        Ok(LocalSource {
            total: Some(files.len()),
            messages: Box::new(files),
        })
    } else if let Some(p) = from.strip_prefix("eml:") {
        let files = read_eml_dir(Path::new(p), spool)?;
        Ok(LocalSource {
            total: Some(files.len()),
            messages: Box::new(files),
        })
    } else {
        Err(Error::Usage(format!(
            "{from:?} is not a source: use imap://USER@HOST:PORT, mbox:FILE, maildir:DIR or eml:DIR"
        )))
    }
}

fn local_message(
    folder: &str,
    location: String,
    (body, content_sha256): (Body, Hash),
    internal_date: Option<UnixTime>,
    flags: Vec<String>,
) -> SourceMessage {
    SourceMessage {
        folder: folder.to_owned(),
        identity: content_identity(folder, &content_sha256),
        body,
        content_sha256,
        internal_date,
        flags,
        location,
    }
}

/// The messages of an mbox file (mboxrd: `>From ` quoting is undone), read one at a time.
/// Messages are separated by lines starting with `From ` that follow an empty line (or start
/// the file); the empty line before a separator (and at the end of the file) belongs to the
/// mbox, not the message.
pub struct MboxMessages {
    path: PathBuf,
    reader: std::io::BufReader<std::fs::File>,
    spool: Spool,
    line: Vec<u8>,
    number: usize,
    at_end: bool,
}

/// Opens an mbox file; refuses a file that does not start with a `From ` line.
pub fn read_mbox(path: &Path, spool: &Spool) -> Result<MboxMessages> {
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut messages = MboxMessages {
        path: path.to_path_buf(),
        reader: std::io::BufReader::with_capacity(256 * 1024, file),
        spool: spool.clone(),
        line: Vec::new(),
        number: 0,
        at_end: false,
    };
    // The first separator.
    if messages.read_line()? == 0 {
        messages.at_end = true;
    } else if !messages.line.starts_with(b"From ") {
        return Err(Error::Source(format!(
            "{}: not an mbox file (it does not start with a \"From \" line)",
            path.display()
        )));
    }
    Ok(messages)
}

impl MboxMessages {
    fn read_line(&mut self) -> Result<usize> {
        use std::io::BufRead as _;
        self.line.clear();
        self.reader
            .read_until(b'\n', &mut self.line)
            .map_err(|e| io(&self.path, e))
    }

    /// Reads the message after the separator just read, up to and including the next
    /// separator (or the end of the file).
    fn read_message(&mut self) -> Result<SourceMessage> {
        let mut writer = self.spool.writer();
        // A blank line is written only once the next line shows it is not the mbox's own.
        let mut held_blank: Option<Vec<u8>> = None;
        loop {
            if self.read_line()? == 0 {
                // A blank line held at the end is the one every mbox writer adds after each
                // message, the last one too.
                self.at_end = true;
                break;
            }
            if held_blank.is_some() && self.line.starts_with(b"From ") {
                break;
            }
            if let Some(blank) = held_blank.take() {
                writer.write(&blank)?;
            }
            if self.line == b"\n" || self.line == b"\r\n" {
                held_blank = Some(self.line.clone());
                continue;
            }
            // mboxrd: a line of one or more '>' then "From " lost one '>' when it was written.
            let quoted = self
                .line
                .iter()
                .position(|&b| b != b'>')
                .is_some_and(|i| i > 0 && self.line[i..].starts_with(b"From "));
            writer.write(if quoted { &self.line[1..] } else { &self.line })?;
        }
        self.number += 1;
        Ok(local_message(
            "INBOX",
            format!("mbox:{}#{}", self.path.display(), self.number),
            writer.finish()?,
            None,
            Vec::new(),
        ))
    }
}

impl Iterator for MboxMessages {
    type Item = Result<SourceMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at_end {
            return None;
        }
        let message = self.read_message();
        if message.is_err() {
            self.at_end = true;
        }
        Some(message)
    }
}

/// One message file of a Maildir or an .eml directory, not read yet.
struct MessageFile {
    folder: String,
    path: PathBuf,
    location: String,
    flags: Vec<String>,
}

/// The message files of a Maildir or an .eml directory (listed up front, read one at a time).
pub struct FileMessages {
    files: std::vec::IntoIter<MessageFile>,
    spool: Spool,
}

impl FileMessages {
    /// Messages not read yet.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether every message was read.
    pub fn is_empty(&self) -> bool {
        self.files.len() == 0
    }

    fn read(&self, file: MessageFile) -> Result<SourceMessage> {
        let len = std::fs::metadata(&file.path)
            .map_err(|e| io(&file.path, e))?
            .len();
        let body = if usize::try_from(len).is_ok_and(|l| l <= self.spool.memory_limit()) {
            let bytes = std::fs::read(&file.path).map_err(|e| io(&file.path, e))?;
            let sha256 = Hash::of(&bytes);
            (Body::Memory(bytes), sha256)
        } else {
            // Read in place: hashed now, compressed later from the same file (which checks
            // that it did not change in between).
            let (len, sha256) = crate::spool::hash_file(&file.path)?;
            (
                Body::File(BodyFile::borrowed(file.path.clone(), len)),
                sha256,
            )
        };
        Ok(local_message(
            &file.folder,
            file.location,
            body,
            mtime(&file.path),
            file.flags,
        ))
    }
}

impl Iterator for FileMessages {
    type Item = Result<SourceMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        let file = self.files.next()?;
        Some(self.read(file))
    }
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

/// Lists a Maildir++ tree: the top is `INBOX`, each `.Name` subdirectory a folder (`.A.B` is
/// `A/B`). Messages in `cur/` and `new/`; `tmp/` is a delivery in progress and is skipped.
pub fn read_maildir(root: &Path, spool: &Spool) -> Result<FileMessages> {
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
    let mut files = Vec::new();
    for (folder, dir) in folders {
        for sub in ["cur", "new"] {
            for path in files_in(&dir.join(sub))? {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                files.push(MessageFile {
                    folder: folder.clone(),
                    location: format!("maildir:{}", path.display()),
                    flags: maildir_flags(&name),
                    path,
                });
            }
        }
    }
    Ok(FileMessages {
        files: files.into_iter(),
        spool: spool.clone(),
    })
}

/// Lists every `*.eml` file under a directory; the subdirectory is the folder (`INBOX` at the
/// top).
pub fn read_eml_dir(root: &Path, spool: &Spool) -> Result<FileMessages> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<MessageFile>) -> Result<()> {
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
                out.push(MessageFile {
                    folder,
                    location: format!("eml:{}", p.display()),
                    flags: Vec::new(),
                    path: p,
                });
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, root, &mut files)?;
    Ok(FileMessages {
        files: files.into_iter(),
        spool: spool.clone(),
    })
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

    fn bodies(messages: impl Iterator<Item = Result<SourceMessage>>) -> Vec<Vec<u8>> {
        messages
            .map(|m| {
                let m = m.unwrap();
                let bytes = m.body.to_vec().unwrap();
                assert_eq!(m.content_sha256, Hash::of(&bytes));
                bytes
            })
            .collect()
    }

    #[test]
    fn mbox_split_and_unquote() {
        let d = tmp("mbox");
        let f = d.join("box");
        std::fs::write(
            &f,
            b"From a@b Sat Nov 28 03:00:00 2026\nSubject: one\n\n>From the start\n>>From deeper\n\nFrom b@c Sat Nov 28 03:01:00 2026\nSubject: two\n\nbody\n\n",
        )
        .unwrap();
        // The same messages whether they stay in memory or spill to spool files on the way.
        for limit in [usize::MAX, 8] {
            let spool = Spool::new(d.join("spool")).with_memory_limit(limit);
            let m = bodies(read_mbox(&f, &spool).unwrap());
            assert_eq!(
                m,
                [
                    &b"Subject: one\n\nFrom the start\n>From deeper\n"[..],
                    b"Subject: two\n\nbody\n"
                ]
            );
        }
        std::fs::write(&f, b"Subject: not mbox\n").unwrap();
        assert!(read_mbox(&f, &Spool::default()).is_err());
        std::fs::write(&f, b"").unwrap();
        assert_eq!(read_mbox(&f, &Spool::default()).unwrap().count(), 0);
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
        let m: Vec<SourceMessage> = read_maildir(&d, &Spool::default())
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
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
        assert!(read_maildir(&d.join("cur"), &Spool::default()).is_err());
    }

    #[test]
    fn eml_tree() {
        let d = tmp("eml");
        std::fs::create_dir_all(d.join("Sent")).unwrap();
        std::fs::write(d.join("a.eml"), b"Subject: a\r\n\r\n").unwrap();
        std::fs::write(d.join("Sent/b.EML"), b"Subject: b\r\n\r\n").unwrap();
        std::fs::write(d.join("notes.txt"), b"ignored").unwrap();
        let m: Vec<SourceMessage> = read_eml_dir(&d, &Spool::default())
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        let folders: Vec<&str> = m.iter().map(|m| m.folder.as_str()).collect();
        assert_eq!(folders, ["Sent", "INBOX"]);
        assert!(m.iter().all(|m| matches!(m.body, Body::Memory(_))));

        // Above the memory limit a file is read in place: never copied, never deleted.
        let spool = Spool::new(d.join("spool")).with_memory_limit(4);
        let large: Vec<SourceMessage> = read_eml_dir(&d, &spool)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert!(large.iter().all(|m| matches!(
            &m.body,
            Body::File(f) if !f.is_temporary() && f.path().starts_with(&d)
        )));
        assert_eq!(large[1].body.to_vec().unwrap(), b"Subject: a\r\n\r\n");
        assert_eq!(large[1].content_sha256, m[1].content_sha256);
        drop(large);
        assert!(d.join("a.eml").exists());
    }
}
