//! Files the CLI writes that hold a key, a salt or a message are readable by their owner only
//! (0600), whatever the umask: the signing key (`keygen`), a proof bundle (`prove`: the
//! message and its salt), an exported record (`export --out`, also over a file that existed
//! with a wider mode), and every object and sidecar of a `file:` store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mailvault(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_mailvault"))
        .args(args)
        .output()
        .expect("running mailvault");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn keys_salts_and_messages_are_written_owner_only() {
    let d = std::env::temp_dir().join(format!("mailvault-cli-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let p = |n: &str| d.join(n).display().to_string();
    let examples = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../examples/mail");
    let keygen = mailvault(&[
        "keygen",
        "--name",
        "mailvault.io/test/modes",
        "--out",
        &p("key"),
    ]);
    std::fs::write(p("key.pub"), &keygen.stdout).unwrap();
    let store = format!("file:{}", p("store"));
    mailvault(&[
        "archive",
        "--from",
        &format!("eml:{}", examples.display()),
        "--to",
        &store,
        "--key",
        &p("key"),
    ]);
    let ls = mailvault(&["ls", &store, "--public-key", &p("key.pub")]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    let id = ls
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    mailvault(&[
        "prove",
        &store,
        "--record",
        id,
        "--out",
        &p("proof.json"),
        "--public-key",
        &p("key.pub"),
    ]);
    // An export over a file that was readable by everyone.
    std::fs::write(p("message.eml"), b"old").unwrap();
    std::fs::set_permissions(p("message.eml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    mailvault(&[
        "export",
        &store,
        "--record",
        id,
        "--public-key",
        &p("key.pub"),
        "--out",
        &p("message.eml"),
    ]);
    let mut files = vec![d.join("key"), d.join("proof.json"), d.join("message.eml")];
    files_under(&d.join("store"), &mut files);
    assert!(files.len() > 5);
    for f in files {
        assert_eq!(mode(&f), 0o600, "{} is readable by others", f.display());
    }
    let _ = std::fs::remove_dir_all(&d);
}
