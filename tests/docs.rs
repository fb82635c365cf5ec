//! Docs that cannot rot: every `sh` block of README.md and docs/guide-*.md is run against the
//! local stack, in order, one bash session per file (`set -euo pipefail`), from a scratch
//! directory that sees the repository's files (so what the commands write stays out of the
//! checkout). `text` and `console` blocks are not run. A block made only of `make` targets is
//! not run here: `make test` and `make demo` are what CI and the demo run.
//!
//! The commands see kubectl and helm of the environment and the `mailvault` of this build on
//! `PATH`, the admin kubeconfig, and the variables the guides ask a reader to set
//! (`IMAP_PASSWORD`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `IMAP_CA_FILE`).

use mailvault_tests::{TestEnv, mailvault_binary, repo_root, unique_name};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fenced block: its info string's first word, the line it starts on, its text.
#[derive(Debug)]
struct Block {
    lang: String,
    line: usize,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            match open.take() {
                None => {
                    let lang = info.split_whitespace().next().unwrap_or("").to_owned();
                    open = Some((lang, i + 1, String::new()));
                }
                Some((lang, line, text)) => out.push(Block { lang, line, text }),
            }
            continue;
        }
        if let Some((_, _, text)) = open.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    assert!(open.is_none(), "an unclosed code fence");
    out
}

/// Whether a block is only `make` targets (comments and blank lines aside).
fn only_make(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .all(|l| l.starts_with("make "))
}

/// The documents whose `sh` blocks are run: README.md, then docs/guide-*.md by name.
fn documents() -> Vec<PathBuf> {
    let root = repo_root();
    let mut guides: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("guide-") && n.ends_with(".md"))
        })
        .collect();
    guides.sort();
    let mut docs = vec![root.join("README.md")];
    docs.extend(guides);
    docs
}

/// A scratch directory with a symlink to every top-level entry of the repository except
/// `target`: relative paths in the docs work, and files the commands write land here.
fn scratch_checkout(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(repo_root()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), dir.join(&name)).unwrap();
    }
}

#[test]
fn the_block_rules() {
    let md = "text\n```sh\nmake test\n# a comment\nmake demo\n```\n```sh\nkubectl get ns\n```\n```text\nnot run\n```\n";
    let b = blocks(md);
    assert_eq!(b.len(), 3);
    assert_eq!((b[0].lang.as_str(), b[0].line), ("sh", 2));
    assert!(only_make(&b[0].text));
    assert!(!only_make(&b[1].text));
    assert_eq!(b[2].lang, "text");
}

#[test]
fn every_shell_command_in_the_readme_and_the_guides_runs() {
    let env = TestEnv::load();
    let work = std::env::temp_dir().join(unique_name("mv-docs"));
    scratch_checkout(&work);
    let bin = work.join(".docs-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, target) in [
        ("kubectl", PathBuf::from(env.var("KUBECTL"))),
        ("helm", PathBuf::from(env.var("HELM"))),
        ("mailvault", mailvault_binary()),
    ] {
        std::os::unix::fs::symlink(target, bin.join(name)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    let mut failures = Vec::new();
    for doc in documents() {
        let name = doc.strip_prefix(repo_root()).unwrap().display().to_string();
        let markdown = std::fs::read_to_string(&doc).unwrap();
        let runnable: Vec<Block> = blocks(&markdown)
            .into_iter()
            .filter(|b| b.lang == "sh" && !only_make(&b.text))
            .collect();
        if runnable.is_empty() {
            continue;
        }
        // One script per document, each block announced, so a failure names its block.
        let mut script = String::from("set -euo pipefail\n");
        for b in &runnable {
            script.push_str(&format!(
                "echo '>>> {name}:{line}' >&2\n{text}",
                line = b.line,
                text = b.text
            ));
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&work)
            .env("PATH", &path)
            .env("KUBECONFIG", env.var("KUBECONFIG"))
            .env("IMAP_PASSWORD", "docs-test-password")
            .env("AWS_ACCESS_KEY_ID", env.var("VERSITYGW_ACCESS_KEY"))
            .env("AWS_SECRET_ACCESS_KEY", env.var("VERSITYGW_SECRET_KEY"))
            .env("IMAP_CA_FILE", env.ca_path())
            .output()
            .unwrap();
        ran += runnable.len();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let block = stderr
                .lines()
                .rev()
                .find(|l| l.starts_with(">>> "))
                .unwrap_or("(before the first block)")
                .to_owned();
            let tail: Vec<&str> = stderr.lines().rev().take(25).collect();
            failures.push(format!(
                "{name}: the block at {} failed ({}):\n{}\n{}",
                block.trim_start_matches(">>> "),
                out.status,
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n"),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        ran >= 5,
        "only {ran} blocks ran: did the fence convention change?"
    );
    let _ = std::fs::remove_dir_all(&work);
}
