//! `zvm run` on single programs: output, arguments, environment, exit codes, traps, reports,
//! validation, the compile cache and determinism. Also holds the helpers the other modules of
//! this area share (`run_json`, `etag`, `path`).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, c_guest, channel, run, stderr, stdout, wat_guest};

/// Runs `zvm run ARGS` with `--report-file` given *before* `ARGS`, so that guest arguments
/// after the program stay the guest's; returns the output and the parsed report.
pub(crate) fn run_json(args: &[&str], stdin: &[u8]) -> (Output, Value) {
    run_json_with(support::zvm(), args, stdin)
}

/// [`run_json`] with a prepared `zvm` command (a private cache, another working directory).
pub(crate) fn run_json_with(mut cmd: Command, args: &[&str], stdin: &[u8]) -> (Output, Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    cmd.arg("run").arg("--report-file").arg(&report).args(args);
    let out = support::run_cmd(&mut cmd, stdin);
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); exit {:?}; stderr: {}",
            out.status.code(),
            stderr(&out)
        )
    });
    let report =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad report JSON ({e}): {text}"));
    (out, report)
}

/// The etag zvm gives a channel that carried `bytes`: BLAKE3, lowercase hex.
pub(crate) fn etag(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A path as a command-line argument.
pub(crate) fn path(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The exit code of a finished `zvm`.
pub(crate) fn code(out: &Output) -> i32 {
    out.status
        .code()
        .expect("zvm exited, not killed by a signal")
}

/// Deterministic pseudo-random bytes (xorshift64*), so that failures are reproducible.
pub(crate) fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        v.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// `(module ...)` that writes `text` to stdout with one `fd_write` and returns from `_start`.
fn wat_hello(text: &str) -> String {
    let escaped: String = text.bytes().map(|b| format!("\\{b:02x}")).collect();
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{escaped}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {len}))
    (if (i32.ne (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 0))
      (then unreachable))))"#,
        len = text.len()
    )
}

#[test]
fn c_hello_prints_on_stdout() {
    let hello = c_guest("hello");
    let out = run(&["run", path(&hello)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "hello, world\n");
    assert_eq!(stderr(&out), "");
}

#[test]
fn wat_hello_calls_fd_write() {
    let dir = tempfile::tempdir().unwrap();
    let prog = wat_guest(dir.path(), "hello", &wat_hello("hello from wat\n"));
    let (out, report) = run_json(&[path(&prog)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "hello from wat\n");
    let so = channel(&report, "stdout");
    assert_eq!(so["writes"], 1);
    assert_eq!(so["write_bytes"], 15);
    assert_eq!(so["etag"], etag(b"hello from wat\n"));
}

#[test]
fn start_returning_normally_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let prog = wat_guest(
        dir.path(),
        "returns",
        r#"(module (memory (export "memory") 1) (func (export "_start") (nop)))"#,
    );
    let (out, report) = run_json(&[path(&prog)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(report["state"], serde_json::json!({ "kind": "ok" }));
    assert_eq!(report["state_text"], "ok");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["backtrace"], serde_json::json!([]));
    assert_eq!(report["committed"], true);
    assert_eq!(stdout(&out), "");
}

#[test]
fn cat_copies_a_mebibyte_of_stdin_byte_exact() {
    let cat = c_guest("cat");
    let input = noise(1 << 20, 0x1234_5678_9abc_def0);
    let (out, report) = run_json(&[path(&cat)], &input);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(
        out.stdout == input,
        "stdout differs from stdin ({} bytes out)",
        out.stdout.len()
    );
    let (si, so) = (channel(&report, "stdin"), channel(&report, "stdout"));
    assert_eq!(si["read_bytes"], 1 << 20);
    assert_eq!(so["write_bytes"], 1 << 20);
    assert_eq!(si["etag"], etag(&input));
    assert_eq!(so["etag"], etag(&input));
    // A pipe may deliver short reads, but every non-empty read is written once, whole.
    assert_eq!(
        si["reads"].as_u64().unwrap(),
        so["writes"].as_u64().unwrap() + 1
    );
}

#[test]
fn cat_from_a_stdin_file_to_a_stdout_file_has_exact_counters() {
    let cat = c_guest("cat");
    let dir = tempfile::tempdir().unwrap();
    let (inp, outp) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
    let input = noise(1 << 20, 99);
    std::fs::write(&inp, &input).unwrap();
    let stdin_spec = format!("stdin={}", path(&inp));
    let stdout_spec = format!("stdout={}", path(&outp));
    let (out, report) = run_json(
        &["--input", &stdin_spec, "--output", &stdout_spec, path(&cat)],
        b"",
    );
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(
        out.stdout.is_empty(),
        "stdout went to the file, not the host"
    );
    assert!(
        std::fs::read(&outp).unwrap() == input,
        "output file differs from input"
    );
    let (si, so) = (channel(&report, "stdin"), channel(&report, "stdout"));
    // 16 full 64 KiB reads and the read that sees end of file; 16 writes.
    assert_eq!(
        (si["reads"].as_u64(), si["read_bytes"].as_u64()),
        (Some(17), Some(1 << 20))
    );
    assert_eq!(
        (so["writes"].as_u64(), so["write_bytes"].as_u64()),
        (Some(16), Some(1 << 20))
    );
    assert_eq!(si["etag"], etag(&input));
    assert_eq!(so["etag"], etag(&input));
    assert_eq!(so["committed"], true);
    assert_eq!(support::listing(dir.path()), ["in.bin", "out.bin"]);
}

#[test]
fn args_after_double_dash_reach_the_guest() {
    let prog = c_guest("args_env");
    let out = run(&["run", path(&prog), "--", "a", "b"], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "argc=3\nargv[0]=args_env.wasm\nargv[1]=a\nargv[2]=b\n"
    );
}

#[test]
fn args_without_double_dash_reach_the_guest() {
    let prog = c_guest("args_env");
    // Everything after the first guest argument is the guest's, even if it looks like a flag.
    let out = run(&["run", path(&prog), "a", "b", "--fuel", "-x"], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "argc=5\nargv[0]=args_env.wasm\nargv[1]=a\nargv[2]=b\nargv[3]=--fuel\nargv[4]=-x\n"
    );
}

#[test]
fn env_flags_set_the_guest_environment_and_nothing_else_leaks() {
    let prog = c_guest("args_env");
    let mut cmd = support::zvm();
    cmd.env("ZVM_TEST_HOST_ONLY", "secret")
        .env("ZVM_TEST_COPIED", "copied value");
    cmd.args([
        "run",
        "--env",
        "K=V",
        "--env",
        "EMPTY=",
        "--env",
        "EQ=a=b",
        "--env",
        "ZVM_TEST_COPIED",
        path(&prog),
        "x",
    ]);
    let out = support::run_cmd(&mut cmd, b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    // The environment is sorted by name; the host's own variables are not passed.
    assert_eq!(
        stdout(&out),
        "argc=2\nargv[0]=args_env.wasm\nargv[1]=x\n\
         env=EMPTY=\nenv=EQ=a=b\nenv=K=V\nenv=ZVM_TEST_COPIED=copied value\n"
    );
}

#[test]
fn env_flag_naming_an_unset_host_variable_cannot_start() {
    let prog = c_guest("args_env");
    let mut cmd = support::zvm();
    cmd.env_remove("ZVM_TEST_SURELY_UNSET").args([
        "run",
        "--env",
        "ZVM_TEST_SURELY_UNSET",
        path(&prog),
    ]);
    let out = support::run_cmd(&mut cmd, b"");
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("ZVM_TEST_SURELY_UNSET"),
        "stderr: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn proc_exit_codes_become_zvm_exit_codes() {
    let prog = c_guest("exit_code");
    for n in [0u32, 3, 42, 255] {
        let arg = n.to_string();
        let (out, report) = run_json(&[path(&prog), &arg], b"");
        assert_eq!(
            code(&out),
            n as i32,
            "exit_code {n}; stderr: {}",
            stderr(&out)
        );
        assert_eq!(report["exit_code"], n, "exit_code {n}");
        if n == 0 {
            assert_eq!(report["state"], serde_json::json!({ "kind": "ok" }));
            assert_eq!(report["committed"], true);
        } else {
            assert_eq!(
                report["state"],
                serde_json::json!({ "kind": "exited", "code": n })
            );
            assert_eq!(report["state_text"], format!("exited with {n}"));
            assert_eq!(report["committed"], false);
        }
        assert_eq!(report["backtrace"], serde_json::json!([]));
    }
}

#[test]
fn trap_reports_a_backtrace_innermost_first() {
    let prog = c_guest("trap");
    let (out, report) = run_json(&[path(&prog)], b"");
    assert_eq!(code(&out), 134, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "before trap\n");
    assert_eq!(report["state"]["kind"], "trap");
    let message = report["state"]["message"].as_str().unwrap();
    assert!(message.contains("unreachable"), "message: {message}");
    assert_eq!(report["state_text"], format!("trap: {message}"));
    assert_eq!(report["exit_code"], Value::Null);
    assert_eq!(report["committed"], false);
    let frames: Vec<&str> = report["backtrace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let at = |name: &str| {
        frames
            .iter()
            .position(|f| f.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no frame `{name}` in {frames:?}"))
    };
    assert_eq!(
        at("level_three"),
        0,
        "the trapping function is innermost: {frames:?}"
    );
    assert!(
        at("level_three") < at("level_two") && at("level_two") < at("level_one"),
        "{frames:?}"
    );
}

#[test]
fn report_text_goes_to_stderr() {
    let prog = c_guest("trap");
    let out = run(&["run", "--report", "text", path(&prog)], b"");
    assert_eq!(code(&out), 134);
    assert_eq!(
        stdout(&out),
        "before trap\n",
        "the report must not go to stdout"
    );
    let text = stderr(&out);
    let state = text
        .lines()
        .find(|l| l.starts_with("state "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        state.contains("trap: ") && state.contains("unreachable"),
        "{state}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("program ") && l.contains("trap.wasm")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("at ") && l.contains("level_three")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("committed ") && l.ends_with("no")),
        "{text}"
    );
    assert!(text.contains("/dev/stdout"), "{text}");
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "text, not JSON: {text}"
    );
}

#[test]
fn report_json_goes_to_stderr_and_parses() {
    let prog = c_guest("hello");
    let out = run(&["run", "--report", "json", path(&prog)], b"");
    assert_eq!(code(&out), 0);
    assert_eq!(
        stdout(&out),
        "hello, world\n",
        "the report must not go to stdout"
    );
    let report: Value =
        serde_json::from_str(&stderr(&out)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert_eq!(report["version"], 2);
    assert_eq!(report["state"]["kind"], "ok");
    assert_eq!(report["exit_code"], 0);
    let bytes = std::fs::read(&prog).unwrap();
    assert_eq!(report["program_hash"], format!("blake3:{}", etag(&bytes)));
    assert_eq!(report["fuel_limit"], 10_000_000_000u64);
    let names: Vec<&str> = report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["stdin", "stdout", "stderr"]);
    assert_eq!(channel(&report, "stdout")["etag"], etag(b"hello, world\n"));
    assert_eq!(channel(&report, "stdout")["write_bytes"], 13);
    assert_eq!(channel(&report, "stdin")["etag"], etag(b""));
    assert_eq!(channel(&report, "stderr")["etag"], etag(b""));
}

#[test]
fn validate_accepts_a_good_program() {
    let prog = c_guest("hello");
    let out = run(&["validate", path(&prog)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let hash = format!("blake3:{}", etag(&std::fs::read(&prog).unwrap()));
    assert!(
        stdout(&out).contains(": ok (") && stdout(&out).contains(&hash),
        "{}",
        stdout(&out)
    );
    assert_eq!(stderr(&out), "");
}

/// Validates `wat` with `zvm validate` and with `zvm run --report json`: both refuse it
/// with exit 125. Returns validate's stderr and run's report.
fn refused(name: &str, wat: &str) -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let prog = wat_guest(dir.path(), name, wat);
    let out = run(&["validate", path(&prog)], b"");
    assert_eq!(code(&out), 125, "validate: stdout {}", stdout(&out));
    assert_eq!(stdout(&out), "");
    let message = stderr(&out);
    let (out, report) = run_json(&[path(&prog)], b"");
    assert_eq!(code(&out), 125, "run: stderr {}", stderr(&out));
    assert_eq!(report["state"]["kind"], "validation_failed");
    assert_eq!(report["validation"], "failed");
    assert_eq!(report["exit_code"], Value::Null);
    assert_eq!(report["fuel_used"], 0);
    (message, report)
}

#[test]
fn validate_names_an_import_zvm_does_not_provide() {
    let (message, report) = refused(
        "env_foo",
        r#"(module (import "env" "foo" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
    );
    assert!(message.contains("env::foo"), "{message}");
    assert!(
        report["state"]["reason"]
            .as_str()
            .unwrap()
            .contains("env::foo"),
        "{report}"
    );
}

#[test]
fn validate_names_a_wasi_import_with_the_wrong_signature() {
    let (message, report) = refused(
        "bad_sig",
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "_start")))"#,
    );
    for text in [
        message.as_str(),
        report["state"]["reason"].as_str().unwrap(),
    ] {
        assert!(text.contains("wasi_snapshot_preview1::fd_write"), "{text}");
        // The module's (wrong) type and the one zvm provides.
        assert!(text.contains("(func (param i32) (result i32))"), "{text}");
        assert!(
            text.contains("(func (param i32 i32 i32 i32) (result i32))"),
            "{text}"
        );
    }
}

#[test]
fn validate_refuses_a_module_without_start() {
    let (message, report) = refused(
        "no_start",
        r#"(module (memory (export "memory") 1) (func (export "main")))"#,
    );
    assert!(message.contains("`_start`"), "{message}");
    assert!(
        report["state"]["reason"]
            .as_str()
            .unwrap()
            .contains("`_start`"),
        "{report}"
    );
}

#[test]
fn malformed_wasm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("bad.wasm");
    std::fs::write(&prog, b"\0asm\x01\0\0\0 this is not a wasm section").unwrap();
    let out = run(&["validate", path(&prog)], b"");
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("bad.wasm"), "{}", stderr(&out));

    let out = run(&["run", path(&prog)], b"");
    assert_eq!(code(&out), 125);
    assert_eq!(stdout(&out), "");

    let out = run(&["run", "--report", "json", path(&prog)], b"");
    assert_eq!(code(&out), 125);
    // stderr holds the one-line message, then the JSON report.
    let err = stderr(&out);
    let json = &err[err
        .find("\n{")
        .unwrap_or_else(|| panic!("no report: {err}"))
        + 1..];
    let report: Value = serde_json::from_str(json).unwrap();
    assert_eq!(report["state"]["kind"], "validation_failed");
    assert_eq!(report["validation"], "failed");
    let hash = format!("blake3:{}", etag(&std::fs::read(&prog).unwrap()));
    assert_eq!(report["program_hash"], hash);
    assert_eq!(report["committed"], false);
}

#[test]
fn garbage_after_the_magic_number_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("garbage.wasm");
    std::fs::write(&prog, b"\0asmgarbage garbage").unwrap();
    let (out, report) = run_json(&[path(&prog)], b"");
    assert_eq!(code(&out), 125);
    assert_eq!(report["state"]["kind"], "validation_failed");
}

#[test]
fn compile_fills_the_cache_that_run_then_uses() {
    let cache = tempfile::tempdir().unwrap();
    let prog = c_guest("hello");
    let zvm = || {
        let mut c = support::zvm();
        c.env("ZVM_CACHE_DIR", cache.path());
        c
    };
    let mut cmd = zvm();
    let out = support::run_cmd(cmd.args(["compile", path(&prog)]), b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("compiled now"), "{}", stdout(&out));
    assert_eq!(
        support::listing(cache.path()).len(),
        1,
        "one compiled module in the cache"
    );

    let (out, report) = run_json_with(zvm(), &[path(&prog)], b"");
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "hello, world\n");
    assert_eq!(report["validation"], "cached");

    let (out, report) = run_json_with(zvm(), &["--no-cache", path(&prog)], b"");
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "hello, world\n");
    assert_eq!(report["validation"], "compiled");
}

#[test]
fn no_cache_neither_reads_nor_writes_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let prog = c_guest("exit_code");
    let mut cmd = support::zvm();
    cmd.env("ZVM_CACHE_DIR", cache.path());
    let (out, report) = run_json_with(cmd, &["--no-cache", path(&prog)], b"");
    assert_eq!(code(&out), 0);
    assert_eq!(report["validation"], "compiled");
    assert!(support::listing(cache.path()).is_empty());

    // A first run compiles and stores; a second one loads.
    for expected in ["compiled", "cached"] {
        let mut cmd = support::zvm();
        cmd.env("ZVM_CACHE_DIR", cache.path());
        let (out, report) = run_json_with(cmd, &[path(&prog)], b"");
        assert_eq!(code(&out), 0);
        assert_eq!(report["validation"], expected);
    }
}

/// The lines of `text` whose label (before `=`) is one of `labels`.
fn lines_labelled<'a>(text: &'a str, labels: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| labels.contains(&l.split('=').next().unwrap()))
        .collect()
}

const TIME_LABELS: &[&str] = &["realtime", "monotonic", "time", "sleep", "slept"];
const RANDOM_LABELS: &[&str] = &["getentropy", "urandom", "random"];

#[test]
fn time_and_randomness_are_deterministic() {
    let prog = c_guest("time_random");
    let (a, ra) = run_json(&[path(&prog)], b"");
    let (b, rb) = run_json(&[path(&prog)], b"");
    assert_eq!(code(&a), 0, "stderr: {}", stderr(&a));
    assert_eq!(code(&b), 0, "stderr: {}", stderr(&b));
    assert_eq!(stdout(&a), stdout(&b));
    assert_eq!(ra["fuel_used"], rb["fuel_used"]);
    assert!(ra["fuel_used"].as_u64().unwrap() > 0);
    assert_eq!(ra["channels"], rb["channels"], "etags and counters");
    assert_eq!(channel(&ra, "stdout")["etag"], etag(&a.stdout));
    let text = stdout(&a);
    // The virtual clock: starts at 0, advances 1 us per read; the sleep adds 1.5 s.
    assert_eq!(
        lines_labelled(&text, TIME_LABELS),
        [
            "realtime=0.000000000",
            "realtime=0.000001000",
            "realtime=0.000002000",
            "monotonic=0.000003000",
            "monotonic=0.000004000",
            "monotonic=0.000005000",
            "time=0",
            "sleep=0",
            "monotonic=1.500008000",
            "slept=1.500001000",
        ]
    );
    let random = lines_labelled(&text, RANDOM_LABELS);
    assert_eq!(random.len(), 3);
    let values: std::collections::BTreeSet<&str> = random
        .iter()
        .map(|l| l.split_once('=').unwrap().1)
        .collect();
    assert_eq!(
        values.len(),
        3,
        "three sources give three different values: {random:?}"
    );
}

#[test]
fn seed_changes_randomness_but_not_time() {
    let prog = c_guest("time_random");
    let a = run(&["run", path(&prog)], b"");
    let b = run(&["run", "--seed", "7", path(&prog)], b"");
    let c = run(&["run", "--seed", "7", path(&prog)], b"");
    for o in [&a, &b, &c] {
        assert_eq!(code(o), 0, "stderr: {}", stderr(o));
    }
    let (a, b, c) = (stdout(&a), stdout(&b), stdout(&c));
    assert_eq!(b, c, "the same seed gives the same bytes");
    assert_eq!(
        lines_labelled(&a, TIME_LABELS),
        lines_labelled(&b, TIME_LABELS)
    );
    let (ra, rb) = (
        lines_labelled(&a, RANDOM_LABELS),
        lines_labelled(&b, RANDOM_LABELS),
    );
    assert_eq!(ra.len(), 3);
    for (x, y) in ra.iter().zip(&rb) {
        assert_ne!(x, y, "another seed gives other random bytes");
    }
}

#[test]
fn start_time_sets_realtime_only() {
    let prog = c_guest("time_random");
    let a = run(&["run", path(&prog)], b"");
    let b = run(&["run", "--start-time", "1700000000", path(&prog)], b"");
    assert_eq!(code(&b), 0, "stderr: {}", stderr(&b));
    let (a, b) = (stdout(&a), stdout(&b));
    assert_eq!(
        lines_labelled(&b, &["realtime", "time"]),
        [
            "realtime=1700000000.000000000",
            "realtime=1700000000.000001000",
            "realtime=1700000000.000002000",
            "time=1700000000",
        ]
    );
    assert_eq!(
        lines_labelled(&a, &["monotonic", "slept"]),
        lines_labelled(&b, &["monotonic", "slept"])
    );
    assert_eq!(
        lines_labelled(&a, RANDOM_LABELS),
        lines_labelled(&b, RANDOM_LABELS)
    );
}

#[test]
fn sleep_is_virtual() {
    let prog = c_guest("time_random");
    // Warm the compile cache so that only the run itself is timed.
    assert_eq!(code(&run(&["validate", path(&prog)], b"")), 0);
    let started = Instant::now();
    let (out, report) = run_json(&[path(&prog)], b"");
    let elapsed = started.elapsed();
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("slept=1.5"), "{}", stdout(&out));
    // The guest slept 1.5 s of virtual time; the host must not have.
    assert!(elapsed < Duration::from_millis(1400), "took {elapsed:?}");
    assert!(
        report["wall_time_us"].as_u64().unwrap() < 1_400_000,
        "{report}"
    );
}
