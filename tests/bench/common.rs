//! What the benchmarks share: the seeded mailboxes (the same messages every run) and timing a
//! command with GNU time.

#![allow(dead_code)]

use mailvault_tests::unique_name;
use std::process::Command;

/// A tiny deterministic generator, so every run seeds the same mailbox.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() as usize) % (hi - lo)
    }
}

pub const WORDS: &[&str] = &[
    "the",
    "department",
    "records",
    "officer",
    "retention",
    "schedule",
    "request",
    "please",
    "incident",
    "report",
    "attached",
    "meeting",
    "patrol",
    "shift",
    "budget",
    "training",
    "policy",
    "council",
    "city",
    "public",
    "law",
    "review",
    "case",
    "evidence",
    "court",
    "disclosure",
    "email",
    "thank",
    "you",
    "regards",
    "sergeant",
    "chief",
    "dispatch",
];

pub fn text(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 80);
    let mut line = 0;
    while s.len() < bytes {
        let w = WORDS[rng.range(0, WORDS.len())];
        s.push_str(w);
        line += w.len() + 1;
        if line > 70 {
            s.push_str("\r\n");
            line = 0;
        } else {
            s.push(' ');
        }
    }
    s.push_str("\r\n");
    s
}

pub fn base64_noise(rng: &mut Rng, bytes: usize) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes + bytes / 76 * 2);
    let mut col = 0;
    for _ in 0..bytes {
        s.push(char::from(T[(rng.next() % 64) as usize]));
        col += 1;
        if col == 76 {
            s.push_str("\r\n");
            col = 0;
        }
    }
    s.push_str("\r\n");
    s
}

pub fn message(rng: &mut Rng, i: usize, body: usize, attachment: usize) -> Vec<u8> {
    let mut m = format!(
        "Received: from mx1.city.example by mail.city.example; Mon, 2 Nov 2026 09:{:02}:00 -0600\r\n\
         From: Officer {i} <officer{i}@police.city.example>\r\nTo: Records <records@city.example>\r\n\
         Subject: Report {i} {}\r\nDate: Mon, 2 Nov 2026 09:{:02}:00 -0600\r\nMessage-ID: <{i}.{}@police.city.example>\r\n\
         MIME-Version: 1.0\r\n",
        i % 60,
        WORDS[i % WORDS.len()],
        i % 60,
        rng.next()
    );
    if attachment == 0 {
        m.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
        m.push_str(&text(rng, body));
    } else {
        m.push_str("Content-Type: multipart/mixed; boundary=\"bnd\"\r\n\r\n--bnd\r\nContent-Type: text/plain\r\n\r\n");
        m.push_str(&text(rng, body));
        m.push_str("--bnd\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        m.push_str(&base64_noise(rng, attachment));
        m.push_str("--bnd--\r\n");
    }
    m.into_bytes()
}

/// The messages of a seeded mailbox, `small` or `mixed`, in order: `(index, folder, bytes)`.
pub fn for_each_message(kind: &str, mut each: impl FnMut(usize, &str, Vec<u8>)) {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let n = if kind == "mixed" { 10_000 } else { 50_000 };
    for i in 0..n {
        let folder = match i % 10 {
            0..=5 => "INBOX",
            6 | 7 => "Sent",
            8 => "Archive/2026",
            _ => "Trash",
        };
        let m = if kind == "small" {
            message(&mut rng, i, 1_200, 0)
        } else if i % 500 == 7 {
            let size = rng.range(1_000_000, 10_000_000);
            message(&mut rng, i, 2_000, size)
        } else if i % 4 == 1 {
            let size = rng.range(50_000, 500_000);
            message(&mut rng, i, 3_000, size)
        } else {
            let size = rng.range(2_000, 20_000);
            message(&mut rng, i, size, 0)
        };
        each(i, folder, m);
    }
}

/// What GNU time measured.
pub struct Measured {
    pub wall: f64,
    pub cpu: f64,
    pub rss_mb: f64,
    pub stdout: String,
}

pub fn timed(cmd: Command) -> Measured {
    let out_file = std::env::temp_dir().join(unique_name("time"));
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let envs: Vec<_> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    let mut t = Command::new("/usr/bin/time");
    t.arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&out_file)
        .arg(program)
        .args(args);
    for (k, v) in envs {
        t.env(k, v);
    }
    let out = t.output().expect("GNU time (Debian package `time`)");
    assert!(
        out.status.success(),
        "benchmark command failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = std::fs::read_to_string(&out_file).unwrap();
    let f: Vec<f64> = line
        .split_whitespace()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|x| x.parse().unwrap())
        .collect();
    let _ = std::fs::remove_file(out_file);
    Measured {
        wall: f[0],
        cpu: f[1] + f[2],
        rss_mb: f[3] / 1024.0,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}
