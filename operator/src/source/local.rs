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

/// Messages read per blocking call ([`read_ahead`]), and the most bytes of bodies in memory a
/// batch holds: a hand-off to the blocking pool per message cost more than reading a short
/// one (threads waking each other were a quarter of the CPU on short mail; perf).
const READ_AHEAD_MESSAGES: usize = 64;
const READ_AHEAD_MEMORY: u64 = 4 * 1024 * 1024;

/// Reads the next messages of a local source (blocking file I/O): up to
/// [`READ_AHEAD_MESSAGES`], fewer once their bodies in memory reach [`READ_AHEAD_MEMORY`],
/// after a body in a file, or when a read fails (the error is the batch's last item). Empty at
/// the end of the source.
pub fn read_ahead(
    messages: &mut (dyn Iterator<Item = Result<SourceMessage>> + Send),
) -> Vec<Result<SourceMessage>> {
    let mut batch = Vec::new();
    let mut memory = 0u64;
    while batch.len() < READ_AHEAD_MESSAGES && memory < READ_AHEAD_MEMORY {
        let Some(next) = messages.next() else { break };
        // A body in a file ends the batch: a spooled one counts against the spool's cap only
        // once the writer takes it, so no more are read ahead of it.
        let ends_batch = match &next {
            Ok(msg) => {
                memory += msg.body.memory_cost();
                !matches!(msg.body, Body::Memory(_))
            }
            Err(_) => true,
        };
        batch.push(next);
        if ends_batch {
            break;
        }
    }
    batch
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

/// The most of one line an mbox reader holds at once: a longer line (a hostile 1 GB header
/// line, a file with no line ends at all) is read and written on in pieces of this size, so
/// memory does not grow with line length. Only a line's first piece is looked at (for a
/// separator, a blank line or `>From ` quoting), so a quoted `From ` behind more than this many
/// `>` stays quoted.
pub const MBOX_LINE_PIECE: usize = 64 * 1024;

/// The messages of an mbox file (mboxrd: `>From ` quoting is undone), read one at a time.
/// Messages are separated by lines starting with `From ` that follow an empty line (or start
/// the file); the empty line before a separator (and at the end of the file) belongs to the
/// mbox, not the message. Lines are read in pieces of at most [`MBOX_LINE_PIECE`] bytes.
pub struct MboxMessages {
    path: PathBuf,
    reader: std::io::BufReader<std::fs::File>,
    spool: Spool,
    /// The piece of a line just read (a whole line when it is short).
    line: Vec<u8>,
    /// Whether `line` starts a line (else it continues a long one).
    line_start: bool,
    /// Whether the piece before `line` ended its line.
    next_starts_line: bool,
    line_piece: usize,
    number: usize,
    at_end: bool,
}

/// Opens an mbox file; refuses a file that does not start with a `From ` line.
pub fn read_mbox(path: &Path, spool: &Spool) -> Result<MboxMessages> {
    read_mbox_in_pieces(path, spool, MBOX_LINE_PIECE)
}

fn read_mbox_in_pieces(path: &Path, spool: &Spool, line_piece: usize) -> Result<MboxMessages> {
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut messages = MboxMessages {
        path: path.to_path_buf(),
        reader: std::io::BufReader::with_capacity(256 * 1024, file),
        spool: spool.clone(),
        line: Vec::new(),
        line_start: true,
        next_starts_line: true,
        line_piece: line_piece.max(8),
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
    } else {
        messages.skip_rest_of_line()?;
    }
    Ok(messages)
}

impl MboxMessages {
    /// Reads the next piece of a line: up to and including its `\n`, or at most
    /// `line_piece` bytes. Returns the bytes read (0 at the end of the file).
    fn read_line(&mut self) -> Result<usize> {
        use std::io::BufRead as _;
        self.line.clear();
        self.line_start = self.next_starts_line;
        loop {
            let buf = self.reader.fill_buf().map_err(|e| io(&self.path, e))?;
            if buf.is_empty() {
                break;
            }
            let room = self.line_piece - self.line.len();
            let window = &buf[..buf.len().min(room)];
            let (take, line_end) = match window.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (window.len(), false),
            };
            self.line.extend_from_slice(&window[..take]);
            self.reader.consume(take);
            if line_end || self.line.len() >= self.line_piece {
                break;
            }
        }
        self.next_starts_line = self.line.is_empty() || self.line.ends_with(b"\n");
        Ok(self.line.len())
    }

    /// Reads past the rest of the line whose first piece was just read (a separator line).
    fn skip_rest_of_line(&mut self) -> Result<()> {
        while !self.next_starts_line {
            if self.read_line()? == 0 {
                break;
            }
        }
        Ok(())
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
            if !self.line_start {
                // The rest of a long line: written on as it is.
                writer.write(&self.line)?;
                continue;
            }
            if held_blank.is_some() && self.line.starts_with(b"From ") {
                self.skip_rest_of_line()?;
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

/// A symbolic link to a directory inside a source is not followed (it could lead out of the
/// source, or round in a loop): the run stops and says so, rather than silently leave out
/// what is behind it.
fn symlinked_folder(path: &Path) -> Error {
    Error::Source(format!(
        "{} is a symbolic link to a directory; mailvault does not follow symbolic links to \
         folders (one could loop or lead outside the source): archive its target as its own \
         source, or replace the link with the directory",
        path.display()
    ))
}

/// What a directory entry is, without following a symbolic link to a directory; a symbolic
/// link to a file counts as a file.
enum EntryKind {
    File,
    Dir,
    Other,
}

fn entry_kind(entry: &std::fs::DirEntry) -> Result<EntryKind> {
    let path = entry.path();
    let kind = entry.file_type().map_err(|e| io(&path, e))?;
    if kind.is_dir() {
        return Ok(EntryKind::Dir);
    }
    if kind.is_file() {
        return Ok(EntryKind::File);
    }
    if kind.is_symlink() {
        // Where it points (a dangling link is neither).
        return match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Err(symlinked_folder(&path)),
            Ok(m) if m.is_file() => Ok(EntryKind::File),
            _ => Ok(EntryKind::Other),
        };
    }
    Ok(EntryKind::Other)
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e.map_err(|e| io(dir, e))?;
                if matches!(entry_kind(&e)?, EntryKind::File) {
                    out.push(e.path());
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
        let e = e.map_err(|e| io(root, e))?;
        let p = e.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.len() > 1 && name.starts_with('.') && matches!(entry_kind(&e)?, EntryKind::Dir) {
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
    // Depth first, in name order, with a stack of its own (no recursion: a deep tree cannot
    // exhaust the thread's stack) and no symbolic link to a folder followed.
    fn sorted_entries(dir: &Path) -> Result<std::vec::IntoIter<(PathBuf, EntryKind)>> {
        let mut entries = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let e = e.map_err(|e| io(dir, e))?;
            entries.push((e.path(), entry_kind(&e)?));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries.into_iter())
    }
    fn walk(root: &Path, out: &mut Vec<MessageFile>) -> Result<()> {
        let mut stack = vec![sorted_entries(root)?];
        while let Some(top) = stack.last_mut() {
            let Some((p, kind)) = top.next() else {
                stack.pop();
                continue;
            };
            if matches!(kind, EntryKind::Dir) {
                stack.push(sorted_entries(&p)?);
            } else if matches!(kind, EntryKind::File)
                && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("eml"))
            {
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
    walk(root, &mut files)?;
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

    fn message(body: Body) -> SourceMessage {
        let content_sha256 = Hash::of(b"");
        local_message(
            "INBOX",
            "test".to_owned(),
            (body, content_sha256),
            None,
            Vec::new(),
        )
    }

    fn lengths(batch: &[Result<SourceMessage>]) -> Vec<Option<u64>> {
        batch
            .iter()
            .map(|m| m.as_ref().ok().map(|m| m.body.len()))
            .collect()
    }

    #[test]
    fn read_ahead_stops_at_its_count_its_memory_a_body_in_a_file_and_an_error() {
        // Short messages: batches of READ_AHEAD_MESSAGES, then the rest, then nothing.
        let mut short =
            (0..READ_AHEAD_MESSAGES + 3).map(|_| Ok(message(Body::Memory(vec![b'x'; 10]))));
        assert_eq!(read_ahead(&mut short).len(), READ_AHEAD_MESSAGES);
        assert_eq!(read_ahead(&mut short).len(), 3);
        assert!(read_ahead(&mut short).is_empty());
        // Bodies in memory: the batch ends once they reach READ_AHEAD_MEMORY.
        let quarter = usize::try_from(READ_AHEAD_MEMORY / 4).unwrap();
        let mut large = (0..10).map(|_| Ok(message(Body::Memory(vec![b'x'; quarter]))));
        assert_eq!(read_ahead(&mut large).len(), 4);
        // A body in a file ends the batch (it may have been spooled); an error ends it too.
        let d = tmp("read-ahead");
        let file = || Body::File(BodyFile::borrowed(d.join("m"), 7));
        let mut mixed = vec![
            Ok(message(Body::Memory(vec![b'x'; 1]))),
            Ok(message(file())),
            Ok(message(Body::Memory(vec![b'x'; 2]))),
            Err(Error::Source("unreadable".to_owned())),
            Ok(message(Body::Memory(vec![b'x'; 3]))),
        ]
        .into_iter();
        assert_eq!(lengths(&read_ahead(&mut mixed)), [Some(1), Some(7)]);
        assert_eq!(lengths(&read_ahead(&mut mixed)), [Some(2), None]);
        assert_eq!(lengths(&read_ahead(&mut mixed)), [Some(3)]);
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
    #[test]
    fn mbox_lines_longer_than_a_piece_are_read_in_pieces() {
        let d = tmp("mbox-long");
        let f = d.join("box");
        let long_header = format!("Subject: {}\n", "a".repeat(1000));
        let no_line_end = "z".repeat(500);
        let mut text = format!("From {} Sat Nov 28 03:00:00 2026\n", "s".repeat(300));
        text.push_str(&long_header);
        text.push_str("\n>From quoted\nbody\n\n");
        text.push_str("From ");
        text.push_str(&"t".repeat(300));
        text.push_str(" second\nSubject: two\n\n");
        text.push_str(&no_line_end);
        std::fs::write(&f, &text).unwrap();
        for piece in [8, 16, 100, MBOX_LINE_PIECE] {
            let m = bodies(read_mbox_in_pieces(&f, &Spool::default(), piece).unwrap());
            assert_eq!(
                m,
                [
                    format!("{long_header}\nFrom quoted\nbody\n").into_bytes(),
                    format!("Subject: two\n\n{no_line_end}").into_bytes()
                ],
                "piece {piece}"
            );
        }
    }

    #[test]
    fn symlinked_folders_are_refused_not_followed() {
        let d = tmp("symlinks");
        // An .eml tree with a loop: a/loop -> the tree's root.
        let eml = d.join("eml");
        std::fs::create_dir_all(eml.join("a")).unwrap();
        std::fs::write(eml.join("a/m.eml"), b"Subject: a\r\n\r\n").unwrap();
        std::os::unix::fs::symlink(&eml, eml.join("a/loop")).unwrap();
        let Err(e) = read_eml_dir(&eml, &Spool::default()) else {
            panic!("a symlink loop was followed")
        };
        assert!(
            e.to_string()
                .contains("a/loop is a symbolic link to a directory"),
            "{e}"
        );
        // A symlink to a message file is read; a dangling one is not a message.
        std::fs::remove_file(eml.join("a/loop")).unwrap();
        std::os::unix::fs::symlink(eml.join("a/m.eml"), eml.join("link.eml")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), eml.join("dangling.eml")).unwrap();
        assert_eq!(read_eml_dir(&eml, &Spool::default()).unwrap().len(), 2);

        // A Maildir++ folder that is a symlink (here to the Maildir itself).
        let md = d.join("maildir");
        std::fs::create_dir_all(md.join("cur")).unwrap();
        std::os::unix::fs::symlink(&md, md.join(".Loop")).unwrap();
        let Err(e) = read_maildir(&md, &Spool::default()) else {
            panic!("a symlinked Maildir folder was followed")
        };
        assert!(e.to_string().contains(".Loop is a symbolic link"), "{e}");
        std::fs::remove_file(md.join(".Loop")).unwrap();
        std::os::unix::fs::symlink(d.join("eml/a"), md.join("cur/x")).unwrap();
        assert!(read_maildir(&md, &Spool::default()).is_err());
    }

    #[test]
    fn a_deep_eml_tree_does_not_exhaust_the_stack() {
        let d = tmp("deep");
        let mut dir = d.clone();
        for _ in 0..300 {
            dir = dir.join("d");
        }
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.eml"), b"Subject: deep\r\n\r\n").unwrap();
        // A thread with a small stack: the walk must not recurse per level.
        let files = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || read_eml_dir(&d, &Spool::default()).map(|f| f.len()))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(files, 1);
    }
}
