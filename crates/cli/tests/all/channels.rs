//! Channels: `--input`, `--output` and `--channel NAME=PATH:MODE`, every access mode, exact
//! counters and etags, and the commit rule (outputs appear only when the run succeeds).

use std::path::Path;

use serde_json::{Value, json};

use crate::run::{code, etag, path, run_json};
use crate::support::{c_guest, channel, listing, stderr, stdout};

/// Asserts a channel's counters: `(reads, read_bytes, writes, write_bytes)`.
fn counters(report: &Value, name: &str) -> (u64, u64, u64, u64) {
    let c = channel(report, name);
    let n = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("`{k}` of `{name}`: {c}"))
    };
    (n("reads"), n("read_bytes"), n("writes"), n("write_bytes"))
}

/// `--channel` spec `NAME=PATH:MODE`.
fn spec(name: &str, file: &Path, mode: &str) -> String {
    format!("{name}={}:{mode}", path(file))
}

#[test]
fn wc_reads_its_input_and_writes_its_output() {
    let wc = c_guest("wc");
    let dir = tempfile::tempdir().unwrap();
    let (inp, outp) = (dir.path().join("words.txt"), dir.path().join("counts.txt"));
    let text = "one two  three\nfour\tfive\n\n  six\n";
    std::fs::write(&inp, text).unwrap();
    let (i, o) = (
        format!("input={}", path(&inp)),
        format!("output={}", path(&outp)),
    );
    let (out, report) = run_json(&["--input", &i, "--output", &o, path(&wc)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "");
    let counts = format!("4 6 {}\n", text.len());
    assert_eq!(std::fs::read_to_string(&outp).unwrap(), counts);
    assert_eq!(
        std::fs::read_to_string(&inp).unwrap(),
        text,
        "the input is left as it was"
    );

    assert_eq!(report["state"]["kind"], "ok");
    assert_eq!(report["committed"], true);
    let input = channel(&report, "input");
    assert_eq!(input["mode"], "read");
    assert_eq!(input["etag"], etag(text.as_bytes()));
    // One read with the whole text, one that sees end of file.
    assert_eq!(counters(&report, "input"), (2, text.len() as u64, 0, 0));
    assert_eq!(input["committed"], false);
    let output = channel(&report, "output");
    assert_eq!(output["mode"], "write");
    assert_eq!(output["etag"], etag(counts.as_bytes()));
    assert_eq!(counters(&report, "output"), (0, 0, 1, counts.len() as u64));
    assert_eq!(output["committed"], true);
    assert_eq!(output["quota_hit"], Value::Null);
    for std in ["stdin", "stdout", "stderr"] {
        assert_eq!(counters(&report, std), (0, 0, 0, 0), "{std}");
        assert_eq!(channel(&report, std)["etag"], etag(b""), "{std}");
    }
    assert_eq!(
        listing(dir.path()),
        ["counts.txt", "words.txt"],
        "no stray files"
    );
}

#[test]
fn stdout_etag_is_the_hash_of_what_the_guest_printed() {
    let prog = c_guest("args_env");
    let (out, report) = run_json(&["--env", "A=1", path(&prog), "x y"], b"");
    assert_eq!(code(&out), 0);
    let expected = "argc=2\nargv[0]=args_env.wasm\nargv[1]=x y\nenv=A=1\n";
    assert_eq!(stdout(&out), expected);
    let so = channel(&report, "stdout");
    assert_eq!(so["etag"], etag(expected.as_bytes()));
    assert_eq!(so["write_bytes"], expected.len());
    assert_eq!(
        so["committed"], false,
        "a host stream is not a committed file"
    );
}

#[test]
fn seq_read_mode() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("in.txt");
    let content = "sequential content\n";
    std::fs::write(&inp, content).unwrap();
    let s = spec("input", &inp, "read");
    let (out, report) = run_json(&["--channel", &s, path(&prog), "seq-read", content], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
    let input = channel(&report, "input");
    assert_eq!(input["mode"], "read");
    assert_eq!(input["etag"], etag(content.as_bytes()));
    // The content, end of file, end of file again; the failed seeks are not reads.
    assert_eq!(counters(&report, "input"), (3, content.len() as u64, 0, 0));
}

#[test]
fn random_read_mode() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("in.txt");
    let content = "0123456789abcdef";
    std::fs::write(&inp, content).unwrap();
    let s = spec("input", &inp, "random-read");
    let (out, report) = run_json(&["--channel", &s, path(&prog), "random-read", content], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
    let input = channel(&report, "input");
    assert_eq!(input["mode"], "random-read");
    // pread at 5, pread at 0, read at the end (0 bytes), read from the start, end of file.
    let through = format!("{}{content}{content}", &content[5..]);
    assert_eq!(input["etag"], etag(through.as_bytes()));
    assert_eq!(counters(&report, "input"), (5, through.len() as u64, 0, 0));
}

#[test]
fn sequential_read_channel_refuses_positioned_reads() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("in.txt");
    std::fs::write(&inp, "0123456789").unwrap();
    let s = spec("input", &inp, "read");
    let (out, report) = run_json(
        &["--channel", &s, path(&prog), "random-read", "0123456789"],
        b"",
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("FAIL") && stderr(&out).contains("Invalid seek"),
        "{}",
        stderr(&out)
    );
    assert_eq!(report["state"], json!({ "kind": "exited", "code": 1 }));
    assert_eq!(counters(&report, "input"), (0, 0, 0, 0));
}

#[test]
fn seq_write_mode() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let outp = dir.path().join("out.txt");
    std::fs::write(&outp, "old content that write mode discards").unwrap();
    let s = spec("output", &outp, "write");
    let (out, report) = run_json(&["--channel", &s, path(&prog), "seq-write"], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
    assert_eq!(std::fs::read_to_string(&outp).unwrap(), "abcdef");
    let output = channel(&report, "output");
    assert_eq!(output["mode"], "write");
    assert_eq!(output["etag"], etag(b"abcdef"));
    assert_eq!(counters(&report, "output"), (0, 0, 2, 6));
    assert_eq!(output["committed"], true);
    assert_eq!(listing(dir.path()), ["out.txt"]);
}

#[test]
fn random_write_mode() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let outp = dir.path().join("out.bin");
    let s = spec("output", &outp, "random-write");
    let (out, report) = run_json(&["--channel", &s, path(&prog), "random-write"], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
    assert_eq!(std::fs::read_to_string(&outp).unwrap(), "hello World");
    let output = channel(&report, "output");
    assert_eq!(output["mode"], "random-write");
    assert_eq!(output["etag"], etag(b"hello worldW"));
    assert_eq!(counters(&report, "output"), (0, 0, 2, 12));
    assert_eq!(output["committed"], true);
    assert_eq!(listing(dir.path()), ["out.bin"]);
}

#[test]
fn append_mode_keeps_existing_content() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let outp = dir.path().join("log.txt");
    std::fs::write(&outp, "line one\nline two\n").unwrap();
    let s = spec("output", &outp, "append");
    let (out, report) = run_json(&["--channel", &s, path(&prog), "append"], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
    assert_eq!(
        std::fs::read_to_string(&outp).unwrap(),
        "line one\nline two\ntail\n"
    );
    let output = channel(&report, "output");
    assert_eq!(output["mode"], "append");
    // The etag covers the bytes through the channel, not the file's old content.
    assert_eq!(output["etag"], etag(b"tail\n"));
    assert_eq!(counters(&report, "output"), (0, 0, 1, 5));
    assert_eq!(listing(dir.path()), ["log.txt"]);
}

#[test]
fn append_mode_creates_a_missing_file() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let outp = dir.path().join("new.txt");
    let s = spec("output", &outp, "append");
    let (out, _) = run_json(&["--channel", &s, path(&prog), "append"], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&outp).unwrap(), "tail\n");
}

#[test]
fn read_write_mode() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.txt");
    std::fs::write(&file, "content").unwrap();
    let s = spec("output", &file, "read-write");
    let (out, report) = run_json(
        &["--channel", &s, path(&prog), "read-write", "content"],
        b"",
    );
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "Xontent");
    let output = channel(&report, "output");
    assert_eq!(output["mode"], "read-write");
    // read "content", read at end of file, pwrite "X", pread "X".
    assert_eq!(output["etag"], etag(b"contentXX"));
    assert_eq!(counters(&report, "output"), (3, 8, 1, 1));
    assert_eq!(output["committed"], true);
    assert_eq!(listing(dir.path()), ["data.txt"]);
}

#[test]
fn unknown_mode_is_refused() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.txt");
    let s = spec("output", &file, "sideways");
    let out = crate::support::run(&["run", "--channel", &s, path(&prog), "append"], b"");
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("unknown mode `sideways`"),
        "{}",
        stderr(&out)
    );
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn outputs_are_not_created_when_the_guest_fails() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let outp = dir.path().join("out.txt");
    // The scenario writes "hello world", then its pwrite fails on a sequential channel: exit 1.
    let s = spec("output", &outp, "write");
    let (out, report) = run_json(&["--channel", &s, path(&prog), "random-write"], b"");
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("FAIL"), "{}", stderr(&out));
    assert_eq!(report["state"], json!({ "kind": "exited", "code": 1 }));
    assert_eq!(report["committed"], false);
    let output = channel(&report, "output");
    assert_eq!(output["committed"], false);
    assert_eq!(
        counters(&report, "output"),
        (0, 0, 1, 11),
        "the write happened, then was dropped"
    );
    assert_eq!(output["etag"], etag(b"hello world"));
    assert!(!outp.exists(), "the output must not be created");
    assert!(
        listing(dir.path()).is_empty(),
        "no temporary files left: {:?}",
        listing(dir.path())
    );
}

#[test]
fn an_existing_output_is_untouched_when_the_guest_fails() {
    let prog = c_guest("channel_modes");
    let dir = tempfile::tempdir().unwrap();
    let outp = dir.path().join("out.txt");
    std::fs::write(&outp, "precious\n").unwrap();
    let s = spec("output", &outp, "write");
    let (out, _) = run_json(&["--channel", &s, path(&prog), "random-write"], b"");
    assert_eq!(code(&out), 1);
    assert_eq!(std::fs::read_to_string(&outp).unwrap(), "precious\n");
    assert_eq!(listing(dir.path()), ["out.txt"]);
}

#[test]
fn outputs_are_not_committed_after_a_trap() {
    let prog = c_guest("trap");
    let dir = tempfile::tempdir().unwrap();
    let outp = dir.path().join("stdout.txt");
    let o = format!("stdout={}", path(&outp));
    let (out, report) = run_json(&["--output", &o, path(&prog)], b"");
    assert_eq!(code(&out), 134);
    assert_eq!(report["state"]["kind"], "trap");
    assert_eq!(channel(&report, "stdout")["etag"], etag(b"before trap\n"));
    assert_eq!(channel(&report, "stdout")["committed"], false);
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[test]
fn missing_input_file_cannot_start() {
    let wc = c_guest("wc");
    let dir = tempfile::tempdir().unwrap();
    let (inp, outp) = (dir.path().join("absent.txt"), dir.path().join("counts.txt"));
    let (i, o) = (
        format!("input={}", path(&inp)),
        format!("output={}", path(&outp)),
    );
    let out = crate::support::run(
        &[
            "run",
            "--report",
            "json",
            "--input",
            &i,
            "--output",
            &o,
            path(&wc),
        ],
        b"",
    );
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert!(err.contains("channel `input`"), "{err}");
    assert!(err.contains(path(&inp)), "{err}");
    assert_eq!(stdout(&out), "");
    assert!(
        listing(dir.path()).is_empty(),
        "nothing written: {:?}",
        listing(dir.path())
    );
}

#[test]
fn missing_input_file_message_states_the_reason_once() {
    let wc = c_guest("wc");
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("absent.txt");
    let i = format!("input={}", path(&inp));
    let out = crate::support::run(&["run", "--input", &i, path(&wc)], b"");
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
