//! Limits: channel quotas, memory, fuel, wall-clock timeout, the defaults, the call stack,
//! open files and the scratch filesystem. Every limit is hit and reported.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::run::{code, path, run_json};
use crate::support::{c_guest, channel, listing, run, stderr, stdout, wat_guest};

/// The exit code of a run a limit stopped.
const LIMIT: i32 = 124;

/// Writes a manifest running `quota.wasm SCENARIO 7` with one channel carrying `quota`, and
/// returns its path. Writing scenarios get `/dev/output` = `dir/out.txt` (mode `write`),
/// reading ones `/dev/input` = `dir/in.txt` (mode `read`), which holds 1000 bytes.
fn quota_manifest(dir: &Path, scenario: &str, quota: &str) -> PathBuf {
    let prog = c_guest("quota");
    let channel = if scenario.starts_with("write") {
        "name = \"output\"\npath = \"out.txt\"\nmode = \"write\"".to_string()
    } else {
        std::fs::write(dir.join("in.txt"), vec![b'i'; 1000]).unwrap();
        "name = \"input\"\npath = \"in.txt\"\nmode = \"read\"".to_string()
    };
    let manifest = dir.join("quota.toml");
    let text = format!(
        "version = 1\nprogram = {:?}\nargs = [{scenario:?}, \"7\"]\n\n[[channel]]\n{channel}\n{quota}\n",
        path(&prog)
    );
    std::fs::write(&manifest, text).unwrap();
    manifest
}

/// Runs a quota scenario and checks what every quota run shares: the guest saw `EDQUOT`
/// and printed `expected`, zvm exits 124, the state names the channel and the quota, and
/// nothing was committed. Returns the report.
fn quota_run(
    scenario: &str,
    quota_line: &str,
    expected: &str,
    channel_name: &str,
    quota: &str,
) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let manifest = quota_manifest(dir.path(), scenario, quota_line);
    let (out, report) = run_json(&[path(&manifest)], b"");
    assert_eq!(stdout(&out), expected, "stderr: {}", stderr(&out));
    assert_eq!(code(&out), LIMIT);
    assert_eq!(
        report["state"],
        json!({ "kind": "quota_exceeded", "channel": channel_name, "quota": quota })
    );
    assert_eq!(
        report["state_text"],
        format!("quota exceeded on `{channel_name}`: {quota}")
    );
    assert_eq!(report["exit_code"], 0, "the guest itself exited normally");
    assert_eq!(report["committed"], false);
    let ch = channel(&report, channel_name);
    assert_eq!(ch["quota_hit"], quota);
    assert_eq!(ch["committed"], false);
    assert_eq!(channel(&report, "stdout")["quota_hit"], Value::Null);
    assert!(
        !dir.path().join("out.txt").exists(),
        "output must not be committed"
    );
    let mut files = listing(dir.path());
    files.retain(|f| f != "in.txt");
    assert_eq!(files, ["quota.toml"], "no stray files");
    report
}

fn rw(report: &Value, name: &str) -> [u64; 4] {
    let c = channel(report, name);
    ["reads", "read_bytes", "writes", "write_bytes"].map(|k| c[k].as_u64().unwrap())
}

#[test]
fn write_bytes_quota() {
    let r = quota_run(
        "write-bytes",
        "write_bytes = 100",
        "written=100 errno=EDQUOT\n",
        "output",
        "write_bytes",
    );
    // 14 writes of 7 bytes, one short write of 2; the refused call is not counted.
    assert_eq!(rw(&r, "output"), [0, 0, 15, 100]);
    assert_eq!(
        channel(&r, "output")["etag"],
        crate::run::etag(&[b'x'; 100])
    );
}

#[test]
fn writes_quota() {
    let r = quota_run(
        "write-calls",
        "writes = 5",
        "calls=5 errno=EDQUOT\n",
        "output",
        "writes",
    );
    assert_eq!(rw(&r, "output"), [0, 0, 5, 35]);
}

#[test]
fn read_bytes_quota() {
    let r = quota_run(
        "read-bytes",
        "read_bytes = 100",
        "read=100 errno=EDQUOT\n",
        "input",
        "read_bytes",
    );
    assert_eq!(rw(&r, "input"), [15, 100, 0, 0]);
    assert_eq!(channel(&r, "input")["etag"], crate::run::etag(&[b'i'; 100]));
}

#[test]
fn reads_quota() {
    let r = quota_run(
        "read-calls",
        "reads = 5",
        "calls=5 errno=EDQUOT\n",
        "input",
        "reads",
    );
    assert_eq!(rw(&r, "input"), [5, 35, 0, 0]);
}

#[test]
fn zero_writes_quota_refuses_the_first_write() {
    let r = quota_run(
        "write-calls",
        "writes = 0",
        "calls=0 errno=EDQUOT\n",
        "output",
        "writes",
    );
    assert_eq!(rw(&r, "output"), [0, 0, 0, 0]);
}

#[test]
fn read_bytes_quota_equal_to_the_input_lets_the_guest_see_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = quota_manifest(dir.path(), "read-bytes", "read_bytes = 1000");
    let (out, report) = run_json(&[path(&manifest)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "read=1000 errno=0\n");
    assert_eq!(report["state"]["kind"], "ok");
    assert_eq!(channel(&report, "input")["quota_hit"], Value::Null);
}

#[test]
fn memory_limit_makes_malloc_fail() {
    let prog = c_guest("memory_bomb");
    let (out, report) = run_json(&["--memory", "16MiB", path(&prog)], b"");
    assert_eq!(code(&out), LIMIT, "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let mib: u64 = text
        .strip_prefix("allocated=")
        .and_then(|s| s.strip_suffix(" MiB\n"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("stdout: {text:?}"));
    assert!(
        (8..16).contains(&mib),
        "allocated {mib} MiB under a 16 MiB limit"
    );
    assert_eq!(report["state"], json!({ "kind": "memory_limit" }));
    assert_eq!(report["state_text"], "memory limit");
    assert_eq!(
        report["exit_code"], 3,
        "the guest saw malloc fail and exited by itself"
    );
    let peak = report["peak_memory"].as_u64().unwrap();
    assert!(peak <= 16 << 20, "peak {peak}");
    assert!(
        peak >= mib << 20,
        "peak {peak} holds the {mib} MiB allocated"
    );
    assert_eq!(report["committed"], false);
}

#[test]
fn memory_grow_beyond_the_limit_returns_minus_one() {
    let dir = tempfile::tempdir().unwrap();
    let prog = wat_guest(
        dir.path(),
        "grow",
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; 1 + 10 pages fits in 1 MiB: the old size comes back.
    (if (i32.ne (memory.grow (i32.const 10)) (i32.const 1)) (then (call $exit (i32.const 1))))
    ;; 11 + 16 pages does not: -1, and the size is unchanged.
    (if (i32.ne (memory.grow (i32.const 16)) (i32.const -1)) (then (call $exit (i32.const 2))))
    (if (i32.ne (memory.size) (i32.const 11)) (then (call $exit (i32.const 3))))
    (call $exit (i32.const 7))))"#,
    );
    let (out, report) = run_json(&["--memory", "1MiB", path(&prog)], b"");
    assert_eq!(
        report["exit_code"],
        7,
        "the guest saw -1 and carried on; stderr: {}",
        stderr(&out)
    );
    assert_eq!(report["state"]["kind"], "memory_limit");
    assert_eq!(code(&out), LIMIT);
    assert_eq!(report["peak_memory"], 11 * 65536);
}

#[test]
fn memory_grow_within_the_limit_is_not_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let prog = wat_guest(
        dir.path(),
        "grow_ok",
        r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.ne (memory.grow (i32.const 15)) (i32.const 1)) (then unreachable))))"#,
    );
    let (out, report) = run_json(&["--memory", "1MiB", path(&prog)], b"");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(report["state"]["kind"], "ok");
    assert_eq!(report["peak_memory"], 1 << 20);
}

#[test]
fn initial_memory_beyond_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 512 pages = 32 MiB.
    let prog = wat_guest(
        dir.path(),
        "big",
        r#"(module (memory (export "memory") 512) (func (export "_start")))"#,
    );
    let (out, report) = run_json(&["--memory", "16MiB", path(&prog)], b"");
    assert_eq!(code(&out), LIMIT, "stderr: {}", stderr(&out));
    assert_eq!(report["state"]["kind"], "memory_limit");
    assert_eq!(report["exit_code"], Value::Null);
    assert_eq!(report["committed"], false);

    let (out, report) = run_json(&["--memory", "32MiB", path(&prog)], b"");
    assert_eq!(
        code(&out),
        0,
        "exactly at the limit is fine; stderr: {}",
        stderr(&out)
    );
    assert_eq!(report["peak_memory"], 32 << 20);
}

#[test]
fn fuel_limit() {
    let prog = c_guest("loop");
    let (out, report) = run_json(&["--fuel", "10000000", path(&prog)], b"");
    assert_eq!(code(&out), LIMIT, "stderr: {}", stderr(&out));
    assert_eq!(report["state"], json!({ "kind": "out_of_fuel" }));
    assert_eq!(report["state_text"], "out of fuel");
    assert_eq!(report["fuel_limit"], 10_000_000);
    assert!(
        report["fuel_used"].as_u64().unwrap() >= 10_000_000,
        "{}",
        report["fuel_used"]
    );
    assert_eq!(report["exit_code"], Value::Null);
    assert_eq!(report["committed"], false);
}

#[test]
fn fuel_is_counted_deterministically() {
    let prog = c_guest("hello");
    let (_, a) = run_json(&[path(&prog)], b"");
    let (_, b) = run_json(&["--fuel", "1000000", path(&prog)], b"");
    let used = a["fuel_used"].as_u64().unwrap();
    assert!(used > 0);
    assert_eq!(
        b["fuel_used"], used,
        "the same work costs the same fuel whatever the limit"
    );
    // The fuel it needs is enough; half of it is not.
    let (out, c) = run_json(&["--fuel", &used.to_string(), path(&prog)], b"");
    assert_eq!(code(&out), 0, "{c}");
    assert_eq!(c["fuel_used"], used);
    let (out, d) = run_json(&["--fuel", &(used / 2).to_string(), path(&prog)], b"");
    assert_eq!(code(&out), LIMIT);
    assert_eq!(d["state"]["kind"], "out_of_fuel");
    assert_eq!(stdout(&out), "", "stopped before printing");
}

#[test]
fn zero_fuel_is_refused() {
    let prog = c_guest("hello");
    let out = run(&["run", "--fuel", "0", path(&prog)], b"");
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("fuel") && stderr(&out).contains("greater than 0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn timeout() {
    let prog = c_guest("loop");
    let started = Instant::now();
    let (out, report) = run_json(
        &[
            "--fuel",
            "100000000000000",
            "--timeout",
            "300ms",
            path(&prog),
        ],
        b"",
    );
    let elapsed = started.elapsed();
    assert_eq!(code(&out), LIMIT, "stderr: {}", stderr(&out));
    assert_eq!(report["state"], json!({ "kind": "timed_out" }));
    assert_eq!(report["state_text"], "timed out");
    let wall = report["wall_time_us"].as_u64().unwrap();
    assert!(
        wall >= 300_000,
        "stopped after {wall} us, before the timeout"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert_eq!(report["committed"], false);
}

/// wasmtime keeps a loop's fuel count in a register and writes it back at calls, so after a
/// timeout (an epoch interrupt) the fuel of a call-free tight loop is not visible; a loop
/// that calls shows what it burned. `docs/report.md` says so.
#[test]
fn timeout_reports_the_fuel_used_up_to_the_last_call() {
    let dir = tempfile::tempdir().unwrap();
    let prog = wat_guest(
        dir.path(),
        "spin",
        r#"(module (memory (export "memory") 1)
            (func $f (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
            (func (export "_start") (local i32)
                (loop $l (local.set 0 (call $f (local.get 0))) (br $l))))"#,
    );
    let (_, report) = run_json(
        &[
            "--fuel",
            "100000000000000",
            "--timeout",
            "300ms",
            path(&prog),
        ],
        b"",
    );
    assert_eq!(report["state"]["kind"], "timed_out");
    // 300 ms of looping is far more than a million instructions on any host.
    let used = report["fuel_used"].as_u64().unwrap();
    assert!(used > 1_000_000, "fuel_used {used}");
}

#[test]
fn default_limits_stop_an_endless_loop() {
    let prog = c_guest("loop");
    let (out, report) = run_json(&[path(&prog)], b"");
    assert_eq!(code(&out), LIMIT, "stderr: {}", stderr(&out));
    assert_eq!(report["state"]["kind"], "out_of_fuel");
    assert_eq!(report["fuel_limit"], 10_000_000_000u64);
    assert!(report["fuel_used"].as_u64().unwrap() >= 10_000_000_000);
}

#[test]
fn stack_overflow_traps_cleanly() {
    let prog = c_guest("stack_overflow");
    for variant in [None, Some("native")] {
        let mut args = vec![path(&prog)];
        args.extend(variant);
        let (out, report) = run_json(&args, b"");
        assert_eq!(code(&out), 134, "{variant:?}: stderr: {}", stderr(&out));
        assert_eq!(stdout(&out), "start\n", "{variant:?}");
        assert_eq!(report["state"]["kind"], "trap", "{variant:?}");
        assert_eq!(report["exit_code"], Value::Null);
        let frames = report["backtrace"].as_array().unwrap();
        assert!(
            !frames.is_empty() && frames.len() <= 64,
            "{variant:?}: {} frames",
            frames.len()
        );
    }
}

#[test]
fn open_files_limit() {
    let prog = c_guest("many_files");
    // stdin, stdout, stderr and the `/` preopen are already open.
    let a = run(&["run", "--open-files", "32", path(&prog)], b"");
    let b = run(&["run", "--open-files", "32", path(&prog)], b"");
    assert_eq!(code(&a), 0, "stderr: {}", stderr(&a));
    assert_eq!(stdout(&a), "opened=28 errno=EMFILE\n");
    assert_eq!(stdout(&a), stdout(&b), "stable");
    // The limit moves the count one for one.
    let c = run(&["run", "--open-files", "40", path(&prog)], b"");
    assert_eq!(stdout(&c), "opened=36 errno=EMFILE\n");
}

#[test]
fn scratch_limit() {
    let prog = c_guest("scratch");
    let written = |limit: &str| -> u64 {
        let (out, report) = run_json(&["--scratch", limit, path(&prog), "fill"], b"");
        assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
        assert_eq!(stdout(&out), "errno=ENOSPC\n", "--scratch {limit}");
        assert_eq!(report["state"]["kind"], "ok");
        let err = stderr(&out);
        err.trim()
            .strip_prefix("wrote ")
            .and_then(|s| s.strip_suffix(" bytes"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("stderr: {err:?}"))
    };
    let one = written("1MiB");
    let two = written("2MiB");
    assert!(
        (512 << 10..=1 << 20).contains(&one),
        "wrote {one} under 1 MiB"
    );
    assert!(two <= 2 << 20 && two > 1 << 20, "wrote {two} under 2 MiB");
}
