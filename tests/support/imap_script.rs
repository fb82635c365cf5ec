//! A small scripted IMAP server for the tests of servers that lie: a tokio TCP listener on
//! loopback speaking just enough IMAP4rev1 for mailvault (CAPABILITY, LOGIN, LIST,
//! EXAMINE/SELECT, UID FETCH, UID SEARCH, NOOP, LOGOUT) over one folder, `INBOX`, and telling
//! the lies its [`Script`] asks for. Plaintext: mailvault allows that to a loopback host.
//!
//! The script is shared and may be changed between runs ([`ScriptedImap::script`]).
//! [`ScriptedArchive`] runs `mailvault archive` from such a server into a `file:` store.

use crate::{mailvault_binary, output_text, unique_name};
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

/// What the server holds and which lies it tells.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// UIDVALIDITY announced by EXAMINE.
    pub uid_validity: u32,
    /// UIDNEXT announced by EXAMINE.
    pub uid_next: u32,
    /// The folder's messages by UID, in the order FETCH sends them.
    pub messages: Vec<(u32, Vec<u8>)>,
    /// From the second EXAMINE of a connection on: this UIDVALIDITY instead.
    pub uid_validity_on_second_examine: Option<u32>,
    /// For this UID, announce a literal this many bytes longer (positive) or shorter
    /// (negative) than the bytes sent.
    pub literal_size_lie: Option<(u32, i64)>,
    /// For this UID, announce the literal, send a few bytes, and then nothing, ever.
    pub stall_on: Option<u32>,
    /// Answer a request for a later piece of a message with another UID's bytes.
    pub pieces_from_another_uid: bool,
    /// Answer a request for a later piece with this many bytes more than asked.
    pub oversized_pieces: Option<usize>,
    /// Raw bytes sent among EXAMINE's untagged answers (a response line, CRLF included).
    pub extra_examine_line: Option<Vec<u8>>,
    /// What CAPABILITY lists after `IMAP4rev1` (e.g. `AUTH=PLAIN`, `LOGINDISABLED`).
    pub capabilities: Vec<&'static str>,
    /// Commands (by verb) answered with this tagged status and text instead of OK, e.g.
    /// `("STARTTLS", "BAD unknown command")`. AUTHENTICATE first takes the client's response
    /// line (recorded like a command), as a server that judges the credentials does.
    pub refusals: Vec<(&'static str, &'static str)>,
}

/// A running scripted server.
pub struct ScriptedImap {
    /// The port on 127.0.0.1.
    pub port: u16,
    script: Arc<Mutex<Script>>,
    /// Every command line received, in order.
    pub commands: Arc<Mutex<Vec<String>>>,
}

impl ScriptedImap {
    /// Starts a server on the current tokio runtime.
    pub async fn start(script: Script) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Mutex::new(script));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (script.clone(), commands.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, c) = (s.clone(), c.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &s, &c).await;
                });
            }
        });
        Self {
            port,
            script,
            commands,
        }
    }

    /// Changes the script for the connections that follow.
    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.script.lock().unwrap());
    }
}

/// The password every [`ScriptedArchive`] run sends (the scripted server accepts any).
pub const SCRIPTED_PASSWORD: &str = "not-a-real-password";

/// A scripted server, a signing key and a `file:` store in a scratch directory (removed on
/// drop): `mailvault archive` from the server into the store, and what `verify` says of it.
pub struct ScriptedArchive {
    /// The scratch directory: `key`, `key.pub`, `store/`, `spool/`.
    pub dir: PathBuf,
    /// The server the runs read.
    pub server: ScriptedImap,
}

impl ScriptedArchive {
    /// A new key and an empty store; `name` goes into the scratch directory's name.
    pub async fn new(name: &str, script: Script) -> Self {
        let dir = std::env::temp_dir().join(unique_name(&format!("mv-scripted-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let keygen = std::process::Command::new(mailvault_binary())
            .args(["keygen", "--name", "mailvault.io/test/scripted", "--out"])
            .arg(dir.join("key"))
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{}", output_text(&keygen));
        std::fs::write(dir.join("key.pub"), &keygen.stdout).unwrap();
        Self {
            dir,
            server: ScriptedImap::start(script).await,
        }
    }

    /// The `file:` store.
    pub fn store(&self) -> String {
        format!("file:{}", self.dir.join("store").display())
    }

    /// `mailvault archive` over plaintext to the server on 127.0.0.1 (allowed to loopback).
    pub async fn archive(&self, extra: &[&str]) -> Output {
        let from = format!("imap://clerk@127.0.0.1:{}", self.server.port);
        self.archive_from(&from, "disabled", extra).await
    }

    /// `mailvault archive --from FROM --imap-tls TLS`, on a blocking thread so that the server
    /// on this runtime keeps answering.
    pub async fn archive_from(&self, from: &str, tls: &str, extra: &[&str]) -> Output {
        let mut command = std::process::Command::new(mailvault_binary());
        command
            .args(["archive", "--from", from, "--imap-tls", tls])
            .args(["--to", &self.store(), "--key"])
            .arg(self.dir.join("key"))
            .args(["--spool-dir"])
            .arg(self.dir.join("spool"))
            .args(extra)
            .env("MAILVAULT_IMAP_PASSWORD", SCRIPTED_PASSWORD);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// Verifies the store (exit 0 required) and returns every record's bytes, sorted.
    pub fn verified_records(&self) -> Vec<Vec<u8>> {
        let public = self.dir.join("key.pub").display().to_string();
        let run = |args: &[&str]| {
            std::process::Command::new(mailvault_binary())
                .args(args)
                .output()
                .unwrap()
        };
        let o = run(&["verify", &self.store(), "--public-key", &public, "--json"]);
        assert_eq!(o.status.code(), Some(0), "verify: {}", output_text(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut out = Vec::new();
        for r in report["records"].as_array().unwrap() {
            let id = r["record"].as_str().unwrap();
            let o = run(&[
                "export",
                &self.store(),
                "--record",
                id,
                "--public-key",
                &public,
            ]);
            assert!(o.status.success(), "{}", output_text(&o));
            out.push(o.stdout);
        }
        out.sort();
        out
    }

    /// The cursor's UIDNEXT for INBOX, when the cursor has one.
    pub fn cursor_uid_next(&self) -> Option<u64> {
        let path = self.dir.join("store/objects/state/cursor.json");
        let cursor: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).unwrap();
        cursor["folders"]["INBOX"]["uid_next"].as_u64()
    }
}

impl Drop for ScriptedArchive {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The UIDs of a sequence set over the folder (`n`, `a:b`, `a:*`, commas), RFC 3501 style:
/// `*` is the highest UID, and `a:*` with `a` past it still names the highest one.
fn uids_of(set: &str, messages: &[(u32, Vec<u8>)]) -> Vec<u32> {
    let highest = messages.iter().map(|(u, _)| *u).max().unwrap_or(0);
    let value = |v: &str| {
        if v == "*" {
            highest
        } else {
            v.parse().unwrap_or(0)
        }
    };
    let mut out = Vec::new();
    for part in set.split(',') {
        let (lo, hi) = match part.split_once(':') {
            Some((a, b)) => {
                let (a, b) = (value(a), value(b));
                (a.min(b), a.max(b))
            }
            None => (value(part), value(part)),
        };
        out.extend(
            messages
                .iter()
                .map(|(u, _)| *u)
                .filter(|u| (lo..=hi).contains(u)),
        );
    }
    out
}

async fn serve(
    stream: tokio::net::TcpStream,
    script: &Mutex<Script>,
    commands: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read);
    write.write_all(b"* OK scripted IMAP ready\r\n").await?;
    let mut examined = 0u32;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        commands.lock().unwrap().push(command.clone());
        let mut words = command.splitn(3, ' ');
        let tag = words.next().unwrap_or("*").to_owned();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let rest = words.next().unwrap_or("").to_owned();
        let s = script.lock().unwrap().clone();
        let mut out: Vec<u8> = Vec::new();
        if verb == "AUTHENTICATE" {
            write.write_all(b"+ \r\n").await?;
            line.clear();
            lines.read_line(&mut line).await?;
            commands.lock().unwrap().push(line.trim_end().to_owned());
        }
        if let Some((_, answer)) = s
            .refusals
            .iter()
            .find(|(v, _)| v.eq_ignore_ascii_case(&verb))
        {
            write
                .write_all(format!("{tag} {answer}\r\n").as_bytes())
                .await?;
            continue;
        }
        match verb.as_str() {
            "CAPABILITY" => out.extend_from_slice(
                format!(
                    "* CAPABILITY {}\r\n",
                    ["IMAP4rev1"]
                        .iter()
                        .chain(&s.capabilities)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" ")
                )
                .as_bytes(),
            ),
            "LOGIN" | "NOOP" => {}
            "LIST" => out.extend_from_slice(b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n"),
            "EXAMINE" | "SELECT" => {
                examined += 1;
                let validity = match s.uid_validity_on_second_examine {
                    Some(v) if examined > 1 => v,
                    _ => s.uid_validity,
                };
                out.extend_from_slice(
                    format!(
                        "* {} EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen)\r\n* OK [UIDVALIDITY {validity}] UIDs valid\r\n* OK [UIDNEXT {}] next\r\n",
                        s.messages.len(),
                        s.uid_next
                    )
                    .as_bytes(),
                );
                if let Some(line) = &s.extra_examine_line {
                    out.extend_from_slice(line);
                }
                out.extend_from_slice(format!("{tag} OK [READ-ONLY] done\r\n").as_bytes());
                write.write_all(&out).await?;
                continue;
            }
            "LOGOUT" => {
                write
                    .write_all(format!("* BYE\r\n{tag} OK bye\r\n").as_bytes())
                    .await?;
                return Ok(());
            }
            "UID" => {
                let mut parts = rest.splitn(3, ' ');
                let sub = parts.next().unwrap_or("").to_ascii_uppercase();
                let set = parts.next().unwrap_or("");
                let items = parts.next().unwrap_or("");
                if sub == "SEARCH" {
                    // "UID SEARCH UID a:*"
                    let set = items.rsplit(' ').next().unwrap_or(set);
                    let uids: Vec<String> = uids_of(set, &s.messages)
                        .iter()
                        .map(u32::to_string)
                        .collect();
                    out.extend_from_slice(format!("* SEARCH {}\r\n", uids.join(" ")).as_bytes());
                } else if sub == "FETCH" {
                    // BODY.PEEK[]<origin.length>
                    let (origin, length) = items
                        .split_once("BODY.PEEK[]<")
                        .and_then(|(_, r)| r.split_once('>'))
                        .and_then(|(p, _)| p.split_once('.'))
                        .map_or((0, usize::MAX), |(o, l)| {
                            (o.parse().unwrap_or(0), l.parse().unwrap_or(usize::MAX))
                        });
                    let later_piece = origin > 0;
                    for uid in uids_of(set, &s.messages) {
                        let seq = s.messages.iter().position(|(u, _)| *u == uid).unwrap() + 1;
                        let (mut answer_uid, mut bytes) = (uid, &s.messages[seq - 1].1);
                        if later_piece
                            && s.pieces_from_another_uid
                            && let Some((u, b)) = s.messages.iter().find(|(u, _)| *u != uid)
                        {
                            (answer_uid, bytes) = (*u, b);
                        }
                        let start = origin.min(bytes.len());
                        let mut end = start.saturating_add(length).min(bytes.len());
                        if later_piece && let Some(extra) = s.oversized_pieces {
                            end = (end + extra).min(bytes.len());
                        }
                        let data = &bytes[start..end];
                        let announced = match s.literal_size_lie {
                            Some((u, delta)) if u == uid => {
                                usize::try_from(data.len() as i64 + delta).unwrap_or(0)
                            }
                            _ => data.len(),
                        };
                        out.extend_from_slice(
                            format!(
                                "* {seq} FETCH (UID {answer_uid} FLAGS () INTERNALDATE \"01-Jan-2026 00:00:00 +0000\" BODY[]<{origin}> {{{announced}}}\r\n"
                            )
                            .as_bytes(),
                        );
                        if s.stall_on == Some(uid) {
                            out.extend_from_slice(&data[..data.len().min(10)]);
                            write.write_all(&out).await?;
                            // A message that never ends: hold the connection open, send nothing.
                            std::future::pending::<()>().await;
                        }
                        out.extend_from_slice(data);
                        out.extend_from_slice(b")\r\n");
                    }
                }
            }
            _ => {}
        }
        out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
        write.write_all(&out).await?;
    }
}
