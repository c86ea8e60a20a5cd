//! `zvm run` on manifests: TOML (version 1) and legacy ZeroVM ones, flags over manifests,
//! manifest errors, program hash pins, and `zvm run --help`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::run::{code, etag, path, run_json_with};
use crate::support::{self, c_guest, channel, listing, run, stderr, stdout};

/// A job directory: `bin/<guest>.wasm` copied in, `in.txt` holding `INPUT`.
fn job_dir(guest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::fs::copy(c_guest(guest), dir.path().join(format!("bin/{guest}.wasm"))).unwrap();
    std::fs::write(dir.path().join("in.txt"), INPUT).unwrap();
    dir
}

const INPUT: &str = "the quick brown fox\njumps over\nthe lazy dog\n";
/// What wc.wasm makes of [`INPUT`].
const COUNTS: &str = "3 9 44\n";

const WC_TOML: &str = r#"# wc over in.txt into counts.txt
version = 1
program = "bin/wc.wasm"
args = ["/dev/input", "/dev/output"]

[limits]
memory = "16 MiB"
fuel = 100_000_000
timeout = "10s"

[[channel]]
name = "input"
path = "in.txt"
mode = "read"

[[channel]]
name = "output"
path = "counts.txt"
mode = "write"
write_bytes = "1 KiB"
"#;

/// A `zvm` command working in a directory of its own, so that paths in manifests can only
/// resolve against the manifest's directory.
fn elsewhere() -> (std::process::Command, tempfile::TempDir) {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = support::zvm();
    cmd.current_dir(cwd.path());
    (cmd, cwd)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn toml_manifest_runs_wc_end_to_end() {
    assert_eq!(INPUT.len(), 44);
    let dir = job_dir("wc");
    let manifest = write(dir.path(), "wc.toml", WC_TOML);
    let (cmd, cwd) = elsewhere();
    let (out, report) = run_json_with(cmd, &[path(&manifest)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("counts.txt")).unwrap(),
        COUNTS
    );
    assert_eq!(report["state"]["kind"], "ok");
    assert_eq!(report["fuel_limit"], 100_000_000);
    assert!(report["peak_memory"].as_u64().unwrap() <= 16 << 20);
    let program = dir.path().join("bin/wc.wasm");
    assert_eq!(
        report["program_hash"],
        format!("blake3:{}", etag(&std::fs::read(&program).unwrap()))
    );
    assert_eq!(channel(&report, "input")["etag"], etag(INPUT.as_bytes()));
    assert_eq!(channel(&report, "output")["etag"], etag(COUNTS.as_bytes()));
    assert_eq!(channel(&report, "output")["committed"], true);
    assert_eq!(
        listing(dir.path()),
        ["bin", "counts.txt", "in.txt", "wc.toml"]
    );
    assert!(
        listing(cwd.path()).is_empty(),
        "nothing lands in the working directory"
    );
}

#[test]
fn manifest_quota_applies() {
    // The same job with a 3-byte output quota: wc's one write is cut short, then refused.
    let dir = job_dir("wc");
    let manifest = write(dir.path(), "wc.toml", &WC_TOML.replace("\"1 KiB\"", "3"));
    let (cmd, _cwd) = elsewhere();
    let (out, report) = run_json_with(cmd, &[path(&manifest)], b"");
    assert_eq!(code(&out), 124, "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("wc: cannot write /dev/output"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        report["state"],
        json!({"kind": "quota_exceeded", "channel": "output", "quota": "write_bytes"})
    );
    assert_eq!(report["exit_code"], 2);
    assert_eq!(
        channel(&report, "output")["etag"],
        etag(&COUNTS.as_bytes()[..3])
    );
    assert!(!dir.path().join("counts.txt").exists());
}

#[test]
fn flags_override_the_manifest() {
    let dir = job_dir("wc");
    let manifest = write(dir.path(), "wc.toml", WC_TOML);
    let (cmd, _cwd) = elsewhere();
    let (out, report) = run_json_with(cmd, &["--fuel", "1000", path(&manifest)], b"");
    assert_eq!(code(&out), 124, "stderr: {}", stderr(&out));
    assert_eq!(report["state"]["kind"], "out_of_fuel");
    assert_eq!(report["fuel_limit"], 1000);
    assert!(!dir.path().join("counts.txt").exists(), "not committed");

    // Channel flags replace the manifest's binding, guest arguments replace `args`.
    let other = dir.path().join("other.txt");
    let o = format!("result={}", path(&other));
    let (cmd, _cwd) = elsewhere();
    let (out, report) = run_json_with(
        cmd,
        &["--output", &o, path(&manifest), "/dev/input", "/dev/result"],
        b"",
    );
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&other).unwrap(), COUNTS);
    assert_eq!(report["fuel_limit"], 100_000_000, "the manifest's own fuel");
    assert_eq!(channel(&report, "output")["writes"], 0);
    assert_eq!(
        channel(&report, "output")["committed"],
        true,
        "an unused output commits empty"
    );
    assert_eq!(std::fs::read(dir.path().join("counts.txt")).unwrap(), b"");
}

#[test]
fn flag_rebinds_a_manifest_channel() {
    let dir = job_dir("wc");
    let manifest = write(dir.path(), "wc.toml", WC_TOML);
    let other_in = write(dir.path(), "other-in.txt", "a b\n");
    let i = format!("input={}", path(&other_in));
    let (cmd, _cwd) = elsewhere();
    let (out, _) = run_json_with(cmd, &["--input", &i, path(&manifest)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("counts.txt")).unwrap(),
        "1 2 4\n"
    );
}

#[test]
fn legacy_manifest_runs_wc() {
    let dir = job_dir("wc");
    let manifest = write(
        dir.path(),
        "wc.manifest",
        "# a ZeroVM manifest\n\
         Version = 20130611\n\
         Program = bin/wc.wasm\n\
         Timeout = 50\n\
         Memory = 33554432, 0\n\
         Channel = /dev/stdin, /dev/stdin, 0, 0, 999999, 999999, 0, 0\n\
         Channel = stdout.log, /dev/stdout, 0, 0, 0, 0, 999999, 999999\n\
         Channel = /dev/stderr, /dev/stderr, 0, 0, 0, 0, 999999, 999999\n\
         Channel = in.txt, /dev/input, 0, 0, 100, 4194304, 0, 0\n\
         Channel = counts.txt, /dev/output, 0, 0, 0, 0, 100, 4096\n",
    );
    let (cmd, cwd) = elsewhere();
    let (out, report) = run_json_with(cmd, &[path(&manifest)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("counts.txt")).unwrap(),
        COUNTS
    );
    assert_eq!(
        std::fs::read(dir.path().join("stdout.log")).unwrap(),
        b"",
        "stdout bound to a file"
    );
    assert_eq!(report["state"]["kind"], "ok");
    assert_eq!(report["fuel_limit"], 10_000_000_000u64, "the default fuel");
    let modes: Vec<(&str, &str)> = report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["mode"].as_str().unwrap()))
        .collect();
    assert_eq!(
        modes,
        [
            ("stdin", "read"),
            ("stdout", "write"),
            ("stderr", "write"),
            ("input", "read"),
            ("output", "write")
        ]
    );
    assert_eq!(channel(&report, "input")["etag"], etag(INPUT.as_bytes()));
    assert!(listing(cwd.path()).is_empty());
}

#[test]
fn legacy_manifest_runs_cat_from_stdin_file_to_stdout_file() {
    let dir = job_dir("cat");
    let manifest = write(
        dir.path(),
        "cat.manifest",
        "Version = 20130611\n\
         Program = bin/cat.wasm\n\
         Channel = in.txt, /dev/stdin, 0, 0, 999999, 999999, 0, 0\n\
         Channel = out.txt, /dev/stdout, 0, 0, 0, 0, 999999, 999999\n",
    );
    let (cmd, _cwd) = elsewhere();
    let (out, report) = run_json_with(cmd, &[path(&manifest)], b"ignored host stdin");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        INPUT
    );
    assert_eq!(channel(&report, "stdout")["etag"], etag(INPUT.as_bytes()));
    assert_eq!(channel(&report, "stdout")["committed"], true);
}

#[test]
fn legacy_manifest_quotas_apply() {
    let dir = job_dir("cat");
    let manifest = write(
        dir.path(),
        "cat.manifest",
        "Version = 20130611\n\
         Program = bin/cat.wasm\n\
         Channel = in.txt, /dev/stdin, 0, 0, 999999, 10, 0, 0\n\
         Channel = out.txt, /dev/stdout, 0, 0, 0, 0, 999999, 999999\n",
    );
    let (cmd, _cwd) = elsewhere();
    let (out, report) = run_json_with(cmd, &[path(&manifest)], b"");
    assert_eq!(code(&out), 124, "stderr: {}", stderr(&out));
    assert_eq!(
        report["state"],
        json!({"kind": "quota_exceeded", "channel": "stdin", "quota": "read_bytes"})
    );
    assert_eq!(channel(&report, "stdin")["read_bytes"], 10);
    assert!(!dir.path().join("out.txt").exists());
}

#[test]
fn bad_toml_manifest_names_file_line_and_column() {
    let dir = job_dir("wc");
    let manifest = write(
        dir.path(),
        "bad.toml",
        "version = 1\nprogram = \"bin/wc.wasm\"\n\n[limits]\nmemry = \"16 MiB\"\n",
    );
    let out = run(&["run", "--report", "json", path(&manifest)], b"");
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:5:1:", path(&manifest))), "{err}");
    assert!(err.contains("`memry`"), "{err}");
    assert_eq!(stdout(&out), "");
    assert!(
        !err.contains('{'),
        "no report for a run that never started: {err}"
    );
}

#[test]
fn bad_toml_value_names_its_column() {
    let dir = job_dir("wc");
    let manifest = write(
        dir.path(),
        "bad.toml",
        "version = 1\nprogram = \"bin/wc.wasm\"\nseed = \"x\"\n",
    );
    let out = run(&["run", path(&manifest)], b"");
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:3:8:", path(&manifest))), "{err}");
}

#[test]
fn bad_legacy_manifest_names_file_and_line() {
    let dir = job_dir("wc");
    let manifest = write(
        dir.path(),
        "bad.manifest",
        "Version = 20130611\nProgram = bin/wc.wasm\nBogus = 1\n",
    );
    let out = run(&["run", path(&manifest)], b"");
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:3:", path(&manifest))), "{err}");
    assert!(err.contains("`Bogus`"), "{err}");
}

#[test]
fn missing_manifest_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("nope.toml");
    let out = run(&["run", path(&manifest)], b"");
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains(path(&manifest)), "{}", stderr(&out));
}

fn pinned(hash: &str) -> String {
    format!(
        "version = 1\nprogram = {{ path = \"bin/wc.wasm\", hash = \"{hash}\" }}\n\n\
         [[channel]]\nname = \"input\"\npath = \"in.txt\"\nmode = \"read\"\n\n\
         [[channel]]\nname = \"output\"\npath = \"counts.txt\"\nmode = \"write\"\n"
    )
}

#[test]
fn program_hash_pin_mismatch_is_refused() {
    let dir = job_dir("wc");
    let actual = format!(
        "blake3:{}",
        etag(&std::fs::read(dir.path().join("bin/wc.wasm")).unwrap())
    );
    let wrong = format!("blake3:{}", "0123456789abcdef".repeat(4));
    let manifest = write(dir.path(), "pinned.toml", &pinned(&wrong));
    let out = run(&["run", path(&manifest)], b"");
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert!(err.contains(&actual), "names the program's hash: {err}");
    assert!(err.contains(&wrong), "names the pinned hash: {err}");
    assert!(!dir.path().join("counts.txt").exists());
}

#[test]
fn program_hash_pin_match_runs() {
    let dir = job_dir("wc");
    let actual = format!(
        "blake3:{}",
        etag(&std::fs::read(dir.path().join("bin/wc.wasm")).unwrap())
    );
    let manifest = write(
        dir.path(),
        "pinned.toml",
        &pinned(&actual.to_uppercase().replace("BLAKE3:", "blake3:")),
    );
    let (cmd, _cwd) = elsewhere();
    let (out, report) = run_json_with(cmd, &[path(&manifest)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(report["program_hash"], Value::String(actual));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("counts.txt")).unwrap(),
        COUNTS
    );
}

#[test]
fn run_help_lists_the_main_flags() {
    let out = run(&["run", "--help"], b"");
    assert_eq!(code(&out), 0);
    let help = stdout(&out);
    for flag in [
        "--dir", "--env", "--fuel", "--input", "--output", "--report",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{flag} "))),
            "`{flag}` missing from:\n{help}"
        );
    }
}
