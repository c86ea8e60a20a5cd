//! The hostile-guest corpus: the safety suite's index. One test per attack, named
//! `hostile_<item>`, whether the attack comes from the guest's code or from the files it is
//! handed (tar images, programs, argument lists).
//!
//! Several of these attacks are also tested, from another angle, in `limits`, `run`,
//! `channels`, `filesystem` and `mounts`; here every case asserts the same four things, so
//! that this file alone says what a hostile guest can and cannot do:
//!
//! 1. the exact report state (and the guest's exit code, when it has one);
//! 2. that `zvm` itself survived: it exited (no signal) with the code `docs/exit-codes.md`
//!    gives for that state, and printed no panic;
//! 3. that nothing on the host changed outside the declared outputs: each run happens in a
//!    [`Sandbox`], a fresh directory that holds the program, manifest, inputs, outputs and
//!    mounted trees and is also the run's working directory and `TMPDIR`; it is snapshotted
//!    (every path, its type, permissions and content hash) before and after the run;
//! 4. that a failed run committed no output, in whole or in part, and left no staged
//!    temporary file (both would show in the snapshot).
//!
//! Not repeated here: a guest reading another VM's data through a reused pooled slot (memory
//! and scratch files) is `a_reused_slot_shows_nothing_of_the_previous_vm` in
//! `crates/vm/tests/pool.rs`; `zvm run` itself runs one VM per process and reuses no slots.
//! A thousand hostile VMs at once, next to a well-behaved one, are `crates/vm/tests/crowd.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tar::{Builder, EntryType, Header};

use crate::run::etag;
use crate::support::{c_guest, run_cmd, zvm};

/// `zvm run`'s exit code when a limit stopped the guest.
const LIMIT: i32 = 124;
/// `zvm run`'s exit code when the guest could not start.
const CANNOT_START: i32 = 125;
/// `zvm run`'s exit code when the guest trapped.
const TRAP: i32 = 134;

// ----- the sandbox --------------------------------------------------------------------------------

/// Everything below a directory: relative path -> `dir MODE`, `file MODE LEN BLAKE3` or
/// `symlink -> TARGET` (not followed).
type Snapshot = BTreeMap<String, String>;

fn snapshot(dir: &Path) -> Snapshot {
    fn walk(base: &Path, dir: &Path, out: &mut Snapshot) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.file_type().is_symlink() {
                format!(
                    "symlink -> {}",
                    std::fs::read_link(&path).unwrap().display()
                )
            } else if meta.is_dir() {
                walk(base, &path, out);
                format!("dir {mode:o}")
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                format!("file {mode:o} {} {}", bytes.len(), etag(&bytes))
            } else {
                format!("other {:?}", meta.file_type())
            };
            out.insert(rel, what);
        }
    }
    let mut out = Snapshot::new();
    walk(dir, dir, &mut out);
    out
}

/// How a run's report is asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReportTo {
    /// `--report-file` in a directory outside the sandbox (the report is JSON).
    File,
    /// `--report json`, to stderr after zvm's own messages.
    Stderr,
}

/// A fresh host directory for one hostile run; see the module documentation.
struct Sandbox {
    dir: tempfile::TempDir,
    /// Holds the report file, outside the sandbox so that it is not a change in it.
    reports: tempfile::TempDir,
}

/// One finished run in a [`Sandbox`].
struct Run {
    out: Output,
    /// The parsed report; `Null` when zvm wrote none.
    report: Value,
    /// What stderr held before the JSON report, with `ReportTo::Stderr`; all of it otherwise.
    message: String,
    before: Snapshot,
    after: Snapshot,
    elapsed: Duration,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
            reports: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` to `name` in the sandbox (creating parent directories).
    fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes a `.wat` program.
    fn wat(&self, name: &str, text: &str) -> PathBuf {
        self.file(&format!("{name}.wat"), text)
    }

    /// `--output` value that sends the guest's stdout to `out.txt` in the sandbox: a declared
    /// output, which a failed run must not commit (not even empty).
    fn stdout_file(&self) -> String {
        format!("stdout={}", p(&self.path().join("out.txt")))
    }

    /// `zvm run --report-file R ARGS`.
    fn run(&self, args: &[&str]) -> Run {
        self.run_with(ReportTo::File, args, b"")
    }

    fn run_with(&self, report_to: ReportTo, args: &[&str], stdin: &[u8]) -> Run {
        let report_file = self.reports.path().join("report.json");
        let _ = std::fs::remove_file(&report_file);
        let mut cmd = zvm();
        cmd.current_dir(self.path())
            .env("TMPDIR", self.path())
            .arg("run");
        match report_to {
            ReportTo::File => cmd.arg("--report-file").arg(&report_file),
            ReportTo::Stderr => cmd.args(["--report", "json"]),
        };
        cmd.args(args);
        let before = snapshot(self.path());
        let started = Instant::now();
        let out = run_cmd(&mut cmd, stdin);
        let elapsed = started.elapsed();
        let after = snapshot(self.path());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let (report, message) = match report_to {
            ReportTo::File => match std::fs::read_to_string(&report_file) {
                Ok(text) => (
                    serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("bad report JSON ({e}): {text}")),
                    stderr,
                ),
                Err(_) => (Value::Null, stderr),
            },
            ReportTo::Stderr => {
                // zvm's messages, then the report: the first line that opens a JSON object.
                let at = if stderr.starts_with('{') {
                    Some(0)
                } else {
                    stderr.find("\n{").map(|i| i + 1)
                };
                match at {
                    Some(at) => (
                        serde_json::from_str(&stderr[at..])
                            .unwrap_or_else(|e| panic!("bad report JSON ({e}): {stderr}")),
                        stderr[..at].to_string(),
                    ),
                    None => (Value::Null, stderr),
                }
            }
        };
        Run {
            out,
            report,
            message,
            before,
            after,
            elapsed,
        }
    }
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// zvm exited by itself with `code`, and did not panic.
    #[track_caller]
    fn exited(&self, code: i32) -> &Run {
        assert_eq!(
            self.out.status.code(),
            Some(code),
            "zvm's exit status ({:?}); stderr: {}",
            self.out.status,
            self.stderr()
        );
        for sign in ["panicked", "internal error in zvm", "RUST_BACKTRACE"] {
            assert!(
                !self.stderr().contains(sign),
                "zvm panicked: {}",
                self.stderr()
            );
        }
        self
    }

    /// The report's state is exactly `state`; a run that did not end `ok` committed nothing.
    #[track_caller]
    fn state(&self, state: Value) -> &Run {
        assert_eq!(
            self.report["state"],
            state,
            "report: {}; stderr: {}",
            self.report,
            self.stderr()
        );
        let ok = state["kind"] == "ok";
        assert_eq!(self.report["committed"], ok, "{}", self.report);
        if !ok {
            for ch in self.report["channels"].as_array().unwrap() {
                assert_eq!(ch["committed"], false, "{ch}");
            }
        }
        self
    }

    /// The guest's own exit code in the report (`null` after a trap or a stopping limit).
    #[track_caller]
    fn exit_code(&self, code: Value) -> &Run {
        assert_eq!(self.report["exit_code"], code, "{}", self.report);
        self
    }

    /// Nothing in the sandbox changed: no output was committed, in whole or in part, no
    /// staged temporary file was left, no input or mounted tree was touched.
    #[track_caller]
    fn host_unchanged(&self) -> &Run {
        assert_eq!(self.after, self.before, "the host directory changed");
        self
    }
}

/// A path as a command-line argument.
fn p(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A channel entry of the report.
fn chan<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no channel `{name}` in {report}"))
}

/// A channel's `(reads, read_bytes, writes, write_bytes)`.
fn counters(report: &Value, name: &str) -> [u64; 4] {
    let c = chan(report, name);
    ["reads", "read_bytes", "writes", "write_bytes"].map(|k| c[k].as_u64().unwrap())
}

// ----- CPU: endless loops -------------------------------------------------------------------------

#[test]
fn hostile_infinite_loop_default_limits() {
    let sb = Sandbox::new();
    let r = sb.run(&["--output", &sb.stdout_file(), p(&c_guest("loop"))]);
    r.exited(LIMIT)
        .state(json!({ "kind": "out_of_fuel" }))
        .exit_code(Value::Null)
        .host_unchanged();
    // Every limit has a finite default: 10^10 fuel, used up to the unit.
    assert_eq!(r.report["fuel_limit"], 10_000_000_000u64);
    assert_eq!(r.report["fuel_used"], 10_000_000_000u64);
}

#[test]
fn hostile_infinite_loop_with_timeout_and_endless_fuel() {
    let sb = Sandbox::new();
    let fuel = u64::MAX.to_string();
    let r = sb.run(&[
        "--output",
        &sb.stdout_file(),
        "--timeout",
        "300ms",
        "--fuel",
        &fuel,
        p(&c_guest("loop")),
    ]);
    r.exited(LIMIT)
        .state(json!({ "kind": "timed_out" }))
        .exit_code(Value::Null)
        .host_unchanged();
    assert_eq!(r.report["fuel_limit"], u64::MAX);
    let wall = r.report["wall_time_us"].as_u64().unwrap();
    assert!(
        wall >= 300_000,
        "stopped after {wall} us, before the timeout"
    );
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}", r.elapsed);
}

// ----- the call stack -----------------------------------------------------------------------------

#[test]
fn hostile_deep_recursion_wat() {
    let sb = Sandbox::new();
    let prog = sb.wat(
        "recurse",
        r#"(module
  (memory (export "memory") 1)
  (func $r (param i32) (result i32)
    (i32.add (call $r (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "_start") (drop (call $r (i32.const 0)))))"#,
    );
    let r = sb.run(&[p(&prog)]);
    r.exited(TRAP)
        .state(json!({ "kind": "trap", "message": "call stack exhausted" }))
        .exit_code(Value::Null)
        .host_unchanged();
    assert_eq!(r.report["state_text"], "trap: call stack exhausted");
    // The backtrace is cut at 64 frames (MAX_BACKTRACE_FRAMES), all of them `$r`.
    let frames = r.report["backtrace"].as_array().unwrap();
    assert_eq!(frames.len(), 64, "{frames:?}");
    for f in frames {
        assert!(f.as_str().unwrap().starts_with("r (func 0"), "{f}");
    }
}

#[test]
fn hostile_stack_overflow_c() {
    // The shadow stack (in linear memory) runs out first and wraps below address 0; the
    // `native` variant only grows the engine's call stack.
    for (variant, message) in [
        (None, "out of bounds memory access"),
        (Some("native"), "call stack exhausted"),
    ] {
        let sb = Sandbox::new();
        let prog = c_guest("stack_overflow");
        let out = sb.stdout_file();
        let mut args = vec!["--output", &out, p(&prog)];
        args.extend(variant);
        let r = sb.run(&args);
        r.exited(TRAP)
            .state(json!({ "kind": "trap", "message": message }))
            .exit_code(Value::Null)
            .host_unchanged();
        // What it printed before the trap went through the channel, and was dropped.
        assert_eq!(chan(&r.report, "stdout")["etag"], etag(b"start\n"));
        assert_eq!(r.stdout(), "");
        let frames = r.report["backtrace"].as_array().unwrap().len();
        assert!((1..=64).contains(&frames), "{variant:?}: {frames} frames");
    }
}

// ----- memory and tables --------------------------------------------------------------------------

/// Asks for 65536 more pages (4 GiB, all a wasm32 memory can address, on top of the page it
/// has): `memory.grow` must answer -1 and leave the memory usable; the guest then exits 7.
const GROW_TO_THE_MAXIMUM: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.ne (memory.grow (i32.const 65536)) (i32.const -1)) (then (call $exit (i32.const 1))))
    (if (i32.ne (memory.size) (i32.const 1)) (then (call $exit (i32.const 2))))
    (i32.store (i32.const 65532) (i32.const 42))
    (if (i32.ne (i32.load (i32.const 65532)) (i32.const 42)) (then (call $exit (i32.const 3))))
    (call $exit (i32.const 7))))"#;

#[test]
fn hostile_memory_grow_to_the_maximum() {
    // With the default limit (256 MiB) and with the largest a manifest may set (4 GiB).
    for memory in [None, Some("4GiB")] {
        let sb = Sandbox::new();
        let prog = sb.wat("grow", GROW_TO_THE_MAXIMUM);
        let out = sb.stdout_file();
        let mut args = vec!["--output", &out];
        if let Some(m) = memory {
            args.extend(["--memory", m]);
        }
        args.push(p(&prog));
        let r = sb.run(&args);
        r.exited(LIMIT)
            .state(json!({ "kind": "memory_limit" }))
            .exit_code(json!(7))
            .host_unchanged();
        assert_eq!(r.report["peak_memory"], 65536, "{memory:?}");
    }
}

#[test]
fn hostile_huge_table_grow() {
    // table.grow by ten million elements (MAX_TABLE_ELEMENTS is 100,000): -1, the table keeps
    // its size, the guest carries on and exits 7, and the run is marked failed.
    let sb = Sandbox::new();
    let prog = sb.wat(
        "table_grow",
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "_start")
    (if (i32.ne (table.grow $t (ref.null func) (i32.const 10000000)) (i32.const -1))
      (then (call $exit (i32.const 1))))
    (if (i32.ne (table.size $t) (i32.const 1)) (then (call $exit (i32.const 2))))
    ;; Growth within the limit still works.
    (if (i32.ne (table.grow $t (ref.null func) (i32.const 99999)) (i32.const 1))
      (then (call $exit (i32.const 3))))
    (call $exit (i32.const 7))))"#,
    );
    let r = sb.run(&[p(&prog)]);
    r.exited(LIMIT)
        .state(json!({ "kind": "memory_limit" }))
        .exit_code(json!(7))
        .host_unchanged();
}

#[test]
fn hostile_huge_initial_table() {
    // A table declared with 200,000 initial elements (MAX_TABLE_ELEMENTS is 100,000): the
    // module is valid, so zvm accepts it and the VM fails at instantiation, before `_start`.
    let sb = Sandbox::new();
    let prog = sb.wat(
        "big_table",
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (table 200000 funcref)
  (func (export "_start") (call $exit (i32.const 9))))"#,
    );
    let r = sb.run(&[p(&prog)]);
    r.exited(LIMIT)
        .state(json!({ "kind": "memory_limit" }))
        .exit_code(Value::Null)
        .host_unchanged();
    assert_eq!(r.report["fuel_used"], 0, "`_start` never ran");
    // 100,000 elements is exactly the limit, and fine.
    let prog = sb.wat(
        "limit_table",
        r#"(module (memory (export "memory") 1) (table 100000 funcref) (func (export "_start")))"#,
    );
    sb.run(&[p(&prog)])
        .exited(0)
        .state(json!({ "kind": "ok" }))
        .host_unchanged();
}

/// 300 pages (18.75 MiB) of initial memory with a data segment in its last bytes.
const DATA_AT_THE_END: &str = r#"(module
  (memory (export "memory") 300)
  (data (i32.const 19660787) "end of memory")
  (func (export "_start")
    (if (i32.ne (i32.load8_u (i32.const 19660799)) (i32.const 121)) (then unreachable))))"#;

#[test]
fn hostile_data_segment_beyond_the_memory_limit() {
    let sb = Sandbox::new();
    let prog = sb.wat("data_end", DATA_AT_THE_END);
    let r = sb.run(&["--output", &sb.stdout_file(), "--memory", "16MiB", p(&prog)]);
    r.exited(LIMIT)
        .state(json!({ "kind": "memory_limit" }))
        .exit_code(Value::Null)
        .host_unchanged();
    assert_eq!(r.report["peak_memory"], 0, "the memory was never created");
    assert_eq!(r.report["fuel_used"], 0);
    // The control: with room for it, the module runs and finds its data.
    sb.run(&["--memory", "19200KiB", p(&prog)])
        .exited(0)
        .state(json!({ "kind": "ok" }))
        .host_unchanged();
}

// ----- channel quotas -----------------------------------------------------------------------------

/// Runs `quota.wasm SCENARIO CHUNK` from a manifest in a fresh sandbox, with stdout sent to
/// the file `stdout.txt` and one channel (`output` to `out.txt`, or `input` from `in.txt`
/// holding 1 MiB + 1 bytes) carrying `quota`. Asserts what every quota run shares: exit
/// 124, the exact state, the guest exited 0 by itself after seeing EDQUOT (its line,
/// `printed`, reached the stdout channel), and neither output was committed.
fn quota_run(scenario: &str, chunk: usize, quota: &str, channel: &str, which: &str) -> Value {
    let sb = Sandbox::new();
    let channel_toml = if channel == "output" {
        "name = \"output\"\npath = \"out.txt\"\nmode = \"write\"".to_string()
    } else {
        sb.file("in.txt", vec![b'i'; (1 << 20) + 1]);
        "name = \"input\"\npath = \"in.txt\"\nmode = \"read\"".to_string()
    };
    let manifest = sb.file(
        "quota.toml",
        format!(
            "version = 1\nprogram = {:?}\nargs = [{scenario:?}, \"{chunk}\"]\n\n\
             [[channel]]\nname = \"stdout\"\npath = \"stdout.txt\"\nmode = \"write\"\n\n\
             [[channel]]\n{channel_toml}\n{quota}\n",
            p(&c_guest("quota"))
        ),
    );
    let r = sb.run(&[p(&manifest)]);
    r.exited(LIMIT)
        .state(json!({ "kind": "quota_exceeded", "channel": channel, "quota": which }))
        .exit_code(json!(0))
        .host_unchanged();
    assert_eq!(chan(&r.report, channel)["quota_hit"], which);
    assert_eq!(chan(&r.report, "stdout")["quota_hit"], Value::Null);
    assert_eq!(r.stdout(), "", "stdout went to its channel");
    r.report
}

#[test]
fn hostile_output_flood_until_the_write_bytes_quota() {
    let report = quota_run(
        "write-bytes",
        4096,
        "write_bytes = \"1 MiB\"",
        "output",
        "write_bytes",
    );
    // 256 writes of 4 KiB fill the quota exactly; the 257th is refused and not counted.
    assert_eq!(counters(&report, "output"), [0, 0, 256, 1 << 20]);
    assert_eq!(chan(&report, "output")["etag"], etag(&vec![b'x'; 1 << 20]));
    assert_eq!(
        chan(&report, "stdout")["etag"],
        etag(b"written=1048576 errno=EDQUOT\n")
    );
}

#[test]
fn hostile_one_byte_writes_past_the_writes_quota() {
    let report = quota_run("write-calls", 1, "writes = 1000", "output", "writes");
    assert_eq!(counters(&report, "output"), [0, 0, 1000, 1000]);
    assert_eq!(
        chan(&report, "stdout")["etag"],
        etag(b"calls=1000 errno=EDQUOT\n")
    );
}

#[test]
fn hostile_reading_past_the_read_bytes_quota() {
    let report = quota_run(
        "read-bytes",
        4096,
        "read_bytes = \"1 MiB\"",
        "input",
        "read_bytes",
    );
    assert_eq!(counters(&report, "input"), [256, 1 << 20, 0, 0]);
    assert_eq!(chan(&report, "input")["etag"], etag(&vec![b'i'; 1 << 20]));
    assert_eq!(
        chan(&report, "stdout")["etag"],
        etag(b"read=1048576 errno=EDQUOT\n")
    );
}

#[test]
fn hostile_reading_past_the_reads_quota() {
    let report = quota_run("read-calls", 1, "reads = 1000", "input", "reads");
    assert_eq!(counters(&report, "input"), [1000, 1000, 0, 0]);
    assert_eq!(
        chan(&report, "stdout")["etag"],
        etag(b"calls=1000 errno=EDQUOT\n")
    );
}

// ----- escaping the guest tree --------------------------------------------------------------------

const SECRET: &str = "HOSTILE-SECRET-4b1d";

#[test]
fn hostile_dotdot_and_absolute_paths() {
    let sb = Sandbox::new();
    let secret = sb.file("secret.txt", SECRET);
    std::fs::create_dir(sb.path().join("mnt")).unwrap();
    sb.file("mnt/inside.txt", "inside");
    let mount = format!("{}::/data", p(&sb.path().join("mnt")));
    // escape.c: `..` above the root, absolute host paths, /proc, symlinks climbing out of the
    // scratch tree and out of a writable host mount (it removes what it creates).
    let r = sb.run(&["--dir", &mount, p(&c_guest("escape")), p(&secret), "/data"]);
    r.exited(0)
        .state(json!({ "kind": "ok" }))
        .exit_code(json!(0))
        .host_unchanged();
    assert_eq!(r.stdout(), "ok\n");
    assert!(!r.stderr().contains(SECRET), "{}", r.stderr());
    assert!(r.stderr().contains("open(\"/../etc/passwd\") -> ENOENT"));

    // path_ops: the secret by `..` from the mount, by its host path, and through the mount's
    // host parent; each answer is exact.
    let via_dotdot = "/data/../../../secret.txt".to_string();
    let r = sb.run(&[
        "--dir",
        &mount,
        p(&c_guest("path_ops")),
        "read",
        &via_dotdot,
        "read",
        p(&secret),
        "read",
        "../secret.txt",
        "ls",
        "/data/..",
        "read",
        "/data/inside.txt",
    ]);
    r.exited(0).state(json!({ "kind": "ok" })).host_unchanged();
    let want = format!(
        "read {via_dotdot}: ENOENT\nread {}: ENOENT\nread ../secret.txt: ENOENT\n\
         ls /data/..: data/,dev/\nread /data/inside.txt: inside\n",
        p(&secret)
    );
    assert_eq!(r.stdout(), want);
    assert!(!r.stdout().contains(SECRET));
}

// ----- tar images ---------------------------------------------------------------------------------

fn header(ty: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(if ty == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_700_000_000);
    h
}

/// Writes a tar at `path` with `build`.
fn make_tar(path: &Path, build: impl FnOnce(&mut Builder<File>)) {
    let mut b = Builder::new(File::create(path).unwrap());
    build(&mut b);
    b.finish().unwrap();
}

fn add_file(b: &mut Builder<File>, path: &str, data: &[u8]) {
    let mut h = header(EntryType::Regular, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

fn add_symlink(b: &mut Builder<File>, path: &str, target: &str) {
    let mut h = header(EntryType::Symlink, 0);
    b.append_link(&mut h, path, target).unwrap();
}

/// An entry named exactly `name` in its header, bypassing the tar crate's checks (which
/// refuse `..`), as a hostile tar would.
fn add_raw_file(b: &mut Builder<File>, name: &[u8], data: &[u8]) {
    let mut h = header(EntryType::Regular, data.len() as u64);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// Runs hello.wasm with `tar` mounted at /img and asserts that zvm refuses to start with
/// exactly `zvm: mount `/img`: image `TAR`: WHY`, runs nothing and changes nothing.
#[track_caller]
fn assert_image_refused(sb: &Sandbox, tar: &Path, why: &str) {
    let image = format!("{}::/img", p(tar));
    let r = sb.run(&["--image", &image, p(&c_guest("hello"))]);
    r.exited(CANNOT_START).host_unchanged();
    assert_eq!(r.stdout(), "");
    assert_eq!(
        r.stderr(),
        format!("zvm: mount `/img`: image `{}`: {why}\n", p(tar))
    );
}

#[test]
fn hostile_tar_symlinks_pointing_out() {
    let sb = Sandbox::new();
    let secret = sb.file("secret.txt", SECRET);
    let tar = sb.path().join("links.tar");
    let host_secret = p(&secret).to_string();
    make_tar(&tar, |b| {
        add_symlink(b, "rel", "../../../../secret.txt");
        add_symlink(b, "abs", &host_secret);
        add_symlink(b, "passwd", "/etc/passwd");
        add_symlink(b, "up", "../../../../../..");
        add_file(b, "plain.txt", b"plain");
    });
    let image = format!("{}::/img", p(&tar));
    let via_up = format!("/img/up{host_secret}");
    let r = sb.run(&[
        "--image",
        &image,
        p(&c_guest("path_ops")),
        "readlink",
        "/img/abs",
        "read",
        "/img/rel",
        "read",
        "/img/abs",
        "read",
        "/img/passwd",
        "ls",
        "/img/up",
        "read",
        &via_up,
        "read",
        "/img/plain.txt",
    ]);
    r.exited(0).state(json!({ "kind": "ok" })).host_unchanged();
    let want = format!(
        "readlink /img/abs: {host_secret}\nread /img/rel: ENOENT\nread /img/abs: ENOENT\n\
         read /img/passwd: ENOENT\nls /img/up: dev/,img/\nread {via_up}: ENOENT\n\
         read /img/plain.txt: plain\n"
    );
    assert_eq!(r.stdout(), want);
}

#[test]
fn hostile_tar_entry_with_dotdot() {
    let sb = Sandbox::new();
    let tar = sb.path().join("evil.tar");
    make_tar(&tar, |b| {
        add_file(b, "fine.txt", b"fine");
        add_raw_file(b, b"../x", b"escaped");
    });
    assert_image_refused(
        &sb,
        &tar,
        "entry `../x` leaves the image (it has a `..` component)",
    );
    assert!(!sb.path().join("x").exists());
}

#[test]
fn hostile_tar_with_a_huge_declared_size() {
    // A header claiming 1 TiB, i64::MAX and 2^64 - 1 bytes, then one block of data. The last
    // cannot even be added to its offset in 64 bits; the tar crate refuses it itself.
    let max_i64 = format!(
        "entry `huge` claims {} bytes but the image ends at offset 2048",
        i64::MAX
    );
    let one_tib = "entry `huge` claims 1099511627776 bytes but the image ends at offset 2048";
    let overflow = "malformed tar archive after entry `fine.txt`: size overflow";
    for (size, why) in [
        (1u64 << 40, one_tib),
        (i64::MAX as u64, max_i64.as_str()),
        (u64::MAX, overflow),
    ] {
        let sb = Sandbox::new();
        let tar = sb.path().join("huge.tar");
        make_tar(&tar, |b| add_file(b, "fine.txt", b"ok"));
        // Replace the end-of-archive blocks by the huge entry.
        let mut bytes = std::fs::read(&tar).unwrap();
        bytes.truncate(1024);
        let mut h = header(EntryType::Regular, 0);
        h.as_old_mut().name[..4].copy_from_slice(b"huge");
        // Base-256, the GNU extension for sizes of 8 GiB and more: a flag byte, then the size
        // in big-endian order.
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[4..].copy_from_slice(&size.to_be_bytes());
        h.as_old_mut().size = field;
        h.set_cksum();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(&[7; 512]);
        std::fs::write(&tar, &bytes).unwrap();
        assert_image_refused(&sb, &tar, why);
    }
}

/// image.rs's `MAX_ENTRIES`, the most entries a mounted image may hold (the CLI's tests cannot
/// name the constant: zvm-fs is not among their dependencies).
const IMAGE_MAX_ENTRIES: usize = 200_000;

/// Writes a GNU tar holding `records` entries (the image root included) to `path`, in about
/// 2.5 KB per 1,000: directory entries whose 4094-byte paths are 2046 one-byte components
/// each, so that every entry brings 2046 directories (the implied parents count as entries).
/// A tar of that many 512-byte headers would be 200 times larger.
fn deep_tar(path: &Path, records: usize) {
    const COMPONENTS: usize = 2046;
    let mut left = records - 1; // the root is already there
    make_tar(path, |b| {
        let mut i = 0;
        while left > 0 {
            // A distinct first component (which counts as one), then one-byte ones.
            let mut name = format!("{i:03}");
            let n = left.min(COMPONENTS);
            for _ in 1..n {
                name.push_str("/a");
            }
            let mut h = header(EntryType::Directory, 0);
            b.append_data(&mut h, &name, std::io::empty()).unwrap();
            left -= n;
            i += 1;
        }
    });
}

#[test]
fn hostile_tar_over_the_entry_limit() {
    // Exactly MAX_ENTRIES entries mount, one more is refused. (The crates/fs unit tests check
    // the same limit with `max_entries: 10`.)
    let sb = Sandbox::new();
    let at_limit = sb.path().join("at_limit.tar");
    deep_tar(&at_limit, IMAGE_MAX_ENTRIES);
    let image = format!("{}::/img", p(&at_limit));
    let r = sb.run(&["--image", &image, p(&c_guest("hello"))]);
    r.exited(0).state(json!({ "kind": "ok" })).host_unchanged();
    assert_eq!(r.stdout(), "hello, world\n");

    let over = sb.path().join("over.tar");
    deep_tar(&over, IMAGE_MAX_ENTRIES + 1);
    assert!(std::fs::metadata(&over).unwrap().len() < 1 << 20);
    assert_image_refused(
        &sb,
        &over,
        &format!("more than {IMAGE_MAX_ENTRIES} entries"),
    );
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in bytes; `None` once it is
/// gone.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

#[test]
fn hostile_tar_index_memory_stays_within_its_documented_bound() {
    // image.rs: "each entry costs about 400 bytes besides its name [...], so this holds a
    // hostile image's index to around 80 MiB plus MAX_INDEX_BYTES" (64 MiB). With a generous
    // 40 MiB for the rest of the process, zvm must stay under 184 MiB while it indexes the
    // largest image it accepts, made of the costliest entries (a directory each, one child
    // each). The peak is sampled from /proc while the guest (an endless loop, stopped by its
    // fuel) runs after the mount: the kernel's high-water mark, read after the index was
    // built, so nothing is missed. (With a million entries allowed it reached 409 MiB.)
    let sb = Sandbox::new();
    let tar = sb.path().join("at_limit.tar");
    deep_tar(&tar, IMAGE_MAX_ENTRIES);
    let image = format!("{}::/img", p(&tar));
    let mut child = zvm()
        .current_dir(sb.path())
        .env("TMPDIR", sb.path())
        .args(["run", "--fuel", "2000000000", "--image", &image])
        .arg(c_guest("loop"))
        .spawn()
        .unwrap();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Some(rss) = peak_rss(child.id()) {
            peak = peak.max(rss);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(child.wait().unwrap().code(), Some(LIMIT), "out of fuel");
    assert!(peak > 0, "zvm ran too briefly to be measured");
    let bound = (80 << 20) + (64 << 20) + (40 << 20);
    assert!(
        peak <= bound,
        "zvm's resident memory reached {} MiB (bound {} MiB) for a {}-byte image",
        peak >> 20,
        bound >> 20,
        std::fs::metadata(&tar).unwrap().len()
    );
    eprintln!("image index: peak RSS {} MiB", peak >> 20);
}

// ----- descriptors, arguments, environment --------------------------------------------------------

#[test]
fn hostile_opening_thousands_of_files() {
    // The default open_files limit is 256; stdin, stdout, stderr and the `/` preopen hold 4.
    let sb = Sandbox::new();
    let r = sb.run(&[p(&c_guest("many_files"))]);
    r.exited(0)
        .state(json!({ "kind": "ok" }))
        .exit_code(json!(0))
        .host_unchanged();
    assert_eq!(r.stdout(), "opened=252 errno=EMFILE\n");
}

#[test]
fn hostile_huge_argv_and_env() {
    // 1 MiB of arguments (1024 of 1 KiB) and 10,000 environment variables, from a manifest:
    // zvm passes them all, byte for byte.
    let sb = Sandbox::new();
    let args: Vec<String> = (0..1024)
        .map(|i| {
            let mut a = format!("{i:04}-");
            while a.len() < 1024 {
                a.push(char::from(b'a' + (a.len() % 26) as u8));
            }
            a
        })
        .collect();
    let env: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("V{i:05}"), format!("value {i} =x")))
        .collect();
    let mut toml = format!(
        "version = 1\nprogram = {:?}\nargv0 = \"hostile\"\nargs = [\n",
        p(&c_guest("args_env"))
    );
    for a in &args {
        writeln!(toml, "  {a:?},").unwrap();
    }
    toml.push_str("]\n\n[env]\n");
    for (k, v) in &env {
        writeln!(toml, "{k} = {v:?}").unwrap();
    }
    let manifest = sb.file("big.toml", toml);
    let r = sb.run(&[p(&manifest)]);
    r.exited(0)
        .state(json!({ "kind": "ok" }))
        .exit_code(json!(0))
        .host_unchanged();
    let mut want = format!("argc={}\nargv[0]=hostile\n", args.len() + 1);
    for (i, a) in args.iter().enumerate() {
        writeln!(want, "argv[{}]={a}", i + 1).unwrap();
    }
    for (k, v) in &env {
        writeln!(want, "env={k}={v}").unwrap();
    }
    assert!(
        r.stdout() == want,
        "stdout differs ({} bytes)",
        r.out.stdout.len()
    );
    assert_eq!(chan(&r.report, "stdout")["etag"], etag(want.as_bytes()));
}

// ----- time ---------------------------------------------------------------------------------------

/// A guest that reads clock `clock`, polls one clock subscription on it with a timeout of
/// u64::MAX ns (`flags` 1: absolute), reads the clock again, and writes 56 bytes to stdout:
/// the event (32), the event count (4), poll_oneoff's errno (4), the clock before (8) and
/// after (8).
fn poll_forever(clock: u32, flags: u32) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $time (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $time (i32.const {clock}) (i64.const 1) (i32.const 104)))
    (i64.store (i32.const 0) (i64.const 42))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const {clock}))
    (i64.store (i32.const 24) (i64.const -1))
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const {flags}))
    (i32.store (i32.const 100)
      (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 96)))
    (drop (call $time (i32.const {clock}) (i64.const 1) (i32.const 112)))
    (i32.store (i32.const 200) (i32.const 64))
    (i32.store (i32.const 204) (i32.const 56))
    (drop (call $write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 208)))))"#
    )
}

/// The 56 bytes [`poll_forever`] prints when the poll succeeds at once.
fn poll_output(before: u64, after: u64) -> Vec<u8> {
    let mut v = vec![0u8; 56];
    v[0] = 42; // the event's userdata; error 0, type 0 (clock)
    v[32] = 1; // one event
    v[40..48].copy_from_slice(&before.to_le_bytes());
    v[48..56].copy_from_slice(&after.to_le_bytes());
    v
}

#[test]
fn hostile_poll_oneoff_for_u64_max_ns_relative() {
    // Sleep u64::MAX ns on the monotonic clock: virtual time saturates at u64::MAX at once.
    let sb = Sandbox::new();
    let prog = sb.wat("poll_rel", &poll_forever(1, 0));
    let r = sb.run(&[p(&prog)]);
    r.exited(0)
        .state(json!({ "kind": "ok" }))
        .exit_code(json!(0))
        .host_unchanged();
    assert_eq!(r.out.stdout, poll_output(0, u64::MAX));
    assert!(r.report["wall_time_us"].as_u64().unwrap() < 1_000_000);
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}", r.elapsed);
}

#[test]
fn hostile_poll_oneoff_until_u64_max_ns_absolute() {
    // Sleep until realtime u64::MAX (the year 2554), starting in 2023.
    let sb = Sandbox::new();
    let prog = sb.wat("poll_abs", &poll_forever(0, 1));
    let r = sb.run(&["--start-time", "1700000000", p(&prog)]);
    r.exited(0)
        .state(json!({ "kind": "ok" }))
        .exit_code(json!(0))
        .host_unchanged();
    assert_eq!(
        r.out.stdout,
        poll_output(1_700_000_000_000_000_000, u64::MAX)
    );
    assert!(r.report["wall_time_us"].as_u64().unwrap() < 1_000_000);
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}", r.elapsed);
}

// ----- exits and traps ----------------------------------------------------------------------------

#[test]
fn hostile_proc_exit_with_extreme_codes() {
    // docs/exit-codes.md: the guest's code, capped at 255; the report keeps it whole.
    for code in [0xFFFF_FFFFu32, 0x8000_0000, 256, 255] {
        let sb = Sandbox::new();
        let prog = sb.wat(
            "exit",
            &format!(
                r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const {code}))))"#,
                code = code as i32
            ),
        );
        let r = sb.run(&["--output", &sb.stdout_file(), p(&prog)]);
        r.exited(255)
            .state(json!({ "kind": "exited", "code": code }))
            .exit_code(json!(code))
            .host_unchanged();
        assert_eq!(r.report["state_text"], format!("exited with {code}"));
    }
}

#[test]
fn hostile_trap_in_the_start_function() {
    // The wasm `start` function runs during instantiation, before `_start`.
    let sb = Sandbox::new();
    let prog = sb.wat(
        "start_trap",
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "_start ran\n")
  (func $f unreachable)
  (start $f)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 11))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    );
    let r = sb.run(&["--output", &sb.stdout_file(), p(&prog)]);
    r.exited(TRAP)
        .state(json!({ "kind": "trap", "message": "wasm `unreachable` instruction executed" }))
        .exit_code(Value::Null)
        .host_unchanged();
    assert_eq!(
        counters(&r.report, "stdout"),
        [0, 0, 0, 0],
        "`_start` never ran"
    );
    let frames = r.report["backtrace"].as_array().unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(
        frames[0].as_str().unwrap().starts_with("f (func 1, "),
        "{frames:?}"
    );
}

// ----- programs zvm refuses -----------------------------------------------------------------------

/// Runs `prog` with `--report json` and asserts that zvm refused it: exit 125, nothing run,
/// the report's state `validation_failed` with a reason holding every one of `names`, which
/// zvm's message on stderr repeats.
#[track_caller]
fn assert_refused(sb: &Sandbox, prog: &Path, names: &[&str]) -> Run {
    let r = sb.run_with(ReportTo::Stderr, &[p(prog)], b"");
    r.exited(CANNOT_START).host_unchanged();
    assert_eq!(r.stdout(), "");
    assert_eq!(
        r.report["state"]["kind"],
        "validation_failed",
        "{}",
        r.stderr()
    );
    assert_eq!(r.report["validation"], "failed");
    assert_eq!(r.report["exit_code"], Value::Null);
    assert_eq!(r.report["fuel_used"], 0);
    assert_eq!(r.report["committed"], false);
    let bytes = std::fs::read(prog).unwrap();
    assert_eq!(r.report["program_hash"], format!("blake3:{}", etag(&bytes)));
    let reason = r.report["state"]["reason"].as_str().unwrap();
    assert_eq!(
        r.message,
        format!("zvm: program `{}` refused: {reason}\n", p(prog))
    );
    for name in names {
        assert!(reason.contains(name), "`{name}` not in: {reason}");
    }
    r
}

#[test]
fn hostile_unknown_imports() {
    for (import, names) in [
        (
            r#"(import "env" "system" (func (param i32) (result i32)))"#,
            &["`env::system` is not provided"][..],
        ),
        (
            r#"(import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))"#,
            &["unknown import", "`wasi_snapshot_preview1::sock_open`"][..],
        ),
        (
            r#"(import "wasi_snapshot_preview1" "environ" (global i32))"#,
            &["`wasi_snapshot_preview1::environ` is not a function"][..],
        ),
    ] {
        let sb = Sandbox::new();
        let prog = sb.wat(
            "import",
            &format!(r#"(module {import} (memory (export "memory") 1) (func (export "_start")))"#),
        );
        assert_refused(&sb, &prog, names);
    }
}

#[test]
fn hostile_imports_with_the_wrong_signature() {
    for (import, module_type, zvm_type) in [
        (
            "fd_write",
            "(func (param i64))",
            "(func (param i32 i32 i32 i32) (result i32))",
        ),
        (
            "proc_exit",
            "(func (param i32) (result i32))",
            "(func (param i32))",
        ),
    ] {
        let sb = Sandbox::new();
        let prog = sb.wat(
            "bad_sig",
            &format!(
                r#"(module (import "wasi_snapshot_preview1" "{import}" {module_type})
                    (memory (export "memory") 1) (func (export "_start")))"#
            ),
        );
        let name = format!("`wasi_snapshot_preview1::{import}`");
        assert_refused(&sb, &prog, &[&name, module_type, zvm_type]);
    }
}

#[test]
fn hostile_threads() {
    let shared = "(wasm threads), which zvm refuses: threads make runs non-deterministic";
    let atomics = "threads support is not enabled";
    for (name, wat, why) in [
        (
            "shared_memory",
            r#"(module (memory (export "memory") 1 1 shared) (func (export "_start")))"#,
            shared,
        ),
        (
            "imported_shared_memory",
            r#"(module (import "env" "memory" (memory 1 1 shared)) (func (export "_start")))"#,
            shared,
        ),
        (
            "atomic_load",
            r#"(module (memory (export "memory") 1)
                 (func (export "_start") (drop (i32.atomic.load (i32.const 0)))))"#,
            atomics,
        ),
        (
            "atomic_wait",
            r#"(module (memory (export "memory") 1)
                 (func (export "_start")
                   (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))))"#,
            atomics,
        ),
        (
            "atomic_fence",
            r#"(module (memory (export "memory") 1) (func (export "_start") (atomic.fence)))"#,
            atomics,
        ),
    ] {
        let sb = Sandbox::new();
        let prog = sb.wat(name, wat);
        assert_refused(&sb, &prog, &[why]);
    }
}

#[test]
fn hostile_malformed_and_truncated_wasm() {
    let hello = std::fs::read(c_guest("hello")).unwrap();
    let len = hello.len();
    let mut cases: Vec<(String, Vec<u8>, &str)> = vec![
        ("empty".into(), vec![], "not a wasm module"),
        (
            "magic_only".into(),
            b"\0asm".to_vec(),
            "unexpected end-of-file",
        ),
        (
            "garbage_after_magic".into(),
            b"\0asmgarbage garbage garbage".to_vec(),
            "unknown binary version",
        ),
        (
            "not_utf8".into(),
            vec![0xff, 0xfe, 0x00, 0x01],
            "not a wasm module (no `\\0asm` header, and not wat text)",
        ),
        // Magic and version alone are a valid, empty module: no `_start`.
        (
            "header_only".into(),
            hello[..8].to_vec(),
            "the module exports no `_start`",
        ),
    ];
    for cut in [9, 10, 11, 20, 100, len / 3, len / 2, len - 100, len - 1] {
        cases.push((
            format!("cut_at_{cut}"),
            hello[..cut].to_vec(),
            "failed to parse WebAssembly module: unexpected end-of-file",
        ));
    }
    for (name, bytes, why) in &cases {
        let sb = Sandbox::new();
        let prog = sb.file(&format!("{name}.wasm"), bytes);
        let r = assert_refused(&sb, &prog, &[why]);
        assert!(
            r.message.lines().count() <= 5,
            "{name}: a clear message, not a dump: {}",
            r.message
        );
    }
}

#[test]
fn hostile_100_mb_module() {
    // A valid header, then zeros to 100 MiB, written as a sparse file: zvm must look at the
    // size before reading a byte, and refuse the program like any other it will not run.
    let sb = Sandbox::new();
    let prog = sb.file("huge.wasm", b"\0asm\x01\0\0\0");
    File::options()
        .write(true)
        .open(&prog)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let r = sb.run(&[p(&prog)]);
    let why = format!(
        "program `{}` is 104857600 bytes, more than the 67108864-byte limit",
        p(&prog)
    );
    r.exited(CANNOT_START)
        .state(json!({ "kind": "validation_failed", "reason": why }))
        .exit_code(Value::Null)
        .host_unchanged();
    assert_eq!(r.report["validation"], "failed");
    assert_eq!(r.report["fuel_used"], 0);
    assert_eq!(r.stdout(), "");
    assert_eq!(r.stderr(), format!("zvm: {why}\n"));
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}", r.elapsed);
}
