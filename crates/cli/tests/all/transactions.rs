//! Transactions: outputs land whole or not at all, together, even when zvm is killed at any
//! point of a commit; failed runs leave nothing; pinned inputs; `--verify`, `zvm replay`;
//! the result cache.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::{self, c_guest, channel, listing, stderr, stdout};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A directory with everything a run of `versions` can change, each holding an "old"
/// version: output files (some absent, which is their old version too), a writable
/// directory, an export target.
struct Scene {
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
    outputs: usize,
    bytes: usize,
    mount: bool,
    export: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Old,
    New,
}

impl Scene {
    fn new(outputs: usize, bytes: usize, mount: bool, export: bool) -> Scene {
        let scene = Scene {
            dir: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
            outputs,
            bytes,
            mount,
            export,
        };
        // Every other output exists beforehand; the others' old version is "absent".
        for i in (1..=outputs).step_by(2) {
            std::fs::write(scene.out(i), scene.content("old", i)).unwrap();
        }
        if mount {
            let data = scene.data();
            std::fs::create_dir_all(data.join("sub")).unwrap();
            std::fs::write(data.join("a"), "old a").unwrap();
            std::fs::write(data.join("b"), "old b").unwrap();
            std::fs::write(data.join("sub/d"), "old d").unwrap();
        }
        if export {
            std::fs::write(scene.tar(), "old tar").unwrap();
        }
        scene
    }

    fn out(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("out{i}.txt"))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tar(&self) -> PathBuf {
        self.dir.path().join("out.tar")
    }

    fn content(&self, tag: &str, i: usize) -> Vec<u8> {
        let mut v = format!("{tag} {i}\n").into_bytes();
        v.extend(std::iter::repeat_n(tag.as_bytes()[0], self.bytes));
        v
    }

    /// `zvm run versions ...` writing version `tag` of everything, with `extra` flags.
    fn command(&self, tag: &str, extra: &[&str]) -> Command {
        let mut cmd = support::zvm();
        cmd.env("ZVM_STATE_DIR", self.state.path());
        cmd.arg("run").arg("--no-result-cache").args(extra);
        for i in 1..=self.outputs {
            cmd.arg("--output")
                .arg(format!("out{i}={}", s(&self.out(i))));
        }
        if self.mount {
            cmd.arg("--dir").arg(format!("{}::/data", s(&self.data())));
        }
        if self.export {
            cmd.arg("--export").arg(format!("/out={}", s(&self.tar())));
        }
        cmd.arg(c_guest("versions"))
            .arg("--")
            .arg(tag)
            .arg(self.outputs.to_string())
            .arg(self.bytes.to_string());
        cmd.stdin(Stdio::null());
        cmd
    }

    fn recover(&self, crash_at: Option<u32>) -> Output {
        let mut cmd = support::zvm();
        cmd.env("ZVM_STATE_DIR", self.state.path()).arg("recover");
        if let Some(k) = crash_at {
            cmd.env("ZVM_CRASH_AT", k.to_string());
        }
        cmd.output().unwrap()
    }

    /// The version of every output, or a description of an output that is neither.
    fn versions(&self) -> Result<Vec<Version>, String> {
        let mut v = Vec::new();
        for i in 1..=self.outputs {
            let path = self.out(i);
            let had_old = i % 2 == 1;
            v.push(match std::fs::read(&path) {
                Ok(b) if b == self.content("new", i) => Version::New,
                Ok(b) if had_old && b == self.content("old", i) => Version::Old,
                Err(_) if !had_old => Version::Old,
                Ok(b) => return Err(format!("out{i} is torn: {} bytes", b.len())),
                Err(e) => return Err(format!("out{i}: {e}")),
            });
        }
        if self.mount {
            let data = self.data();
            let read = |n: &str| std::fs::read_to_string(data.join(n)).ok();
            let files = (read("a"), read("b"), read("c"), read("sub/d"));
            let names = listing(&data);
            v.push(match files {
                (Some(a), Some(b), None, Some(d))
                    if (a.as_str(), b.as_str(), d.as_str()) == ("old a", "old b", "old d")
                        && names == ["a", "b", "sub"] =>
                {
                    Version::Old
                }
                (Some(a), None, Some(c), Some(d))
                    if (a.as_str(), c.as_str(), d.as_str()) == ("new a", "new c", "new d")
                        && names == ["a", "c", "sub"] =>
                {
                    Version::New
                }
                other => return Err(format!("data directory is mixed: {other:?} {names:?}")),
            });
        }
        if self.export {
            let bytes = std::fs::read(self.tar()).map_err(|e| format!("tar: {e}"))?;
            v.push(if bytes == b"old tar" {
                Version::Old
            } else {
                let mut archive = tar::Archive::new(bytes.as_slice());
                let mut found = None;
                for entry in archive.entries().map_err(|e| e.to_string())? {
                    let mut entry = entry.map_err(|e| format!("torn tar: {e}"))?;
                    if entry.path().unwrap().as_os_str() == "x" {
                        let mut text = String::new();
                        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                        found = Some(text);
                    }
                }
                match found.as_deref() {
                    Some("new x") => Version::New,
                    other => return Err(format!("tar holds {other:?}")),
                }
            });
        }
        Ok(v)
    }

    /// All outputs agree on one version, and nothing but the outputs is in the directory.
    fn check_consistent(&self, context: &str) -> Version {
        let versions = self.versions().unwrap_or_else(|e| panic!("{context}: {e}"));
        let first = versions[0];
        assert!(
            versions.iter().all(|v| *v == first),
            "{context}: outputs disagree: {versions:?}"
        );
        let strays: Vec<String> = listing(self.dir.path())
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(strays.is_empty(), "{context}: stray files {strays:?}");
        assert!(
            listing(self.state.path()).iter().all(|n| n == "journal")
                && listing(&self.state.path().join("journal")).is_empty(),
            "{context}: journal left behind: {:?}",
            listing(&self.state.path().join("journal"))
        );
        first
    }
}

fn killed(out: &Output) -> bool {
    out.status.signal() == Some(9)
}

/// Kills zvm at every crash point of the commit protocol in turn (staging, fsyncs, the commit
/// record, each rename and exchange), for runs of 1 to 5 outputs with and without a writable
/// directory and an export; after `zvm recover` (itself killed once mid-way where it has work
/// to do), every output is entirely old or entirely new, and all of a run's outputs agree.
#[test]
fn a_crash_at_any_point_of_a_commit_leaves_all_old_or_all_new() {
    let mut crashes = 0;
    let mut seen = [0usize; 2];
    for (outputs, mount, export) in [
        (1, false, false),
        (2, false, false),
        (3, true, false),
        (2, false, true),
        (5, true, true),
        (4, true, true),
    ] {
        for k in 1.. {
            let scene = Scene::new(outputs, 64, mount, export);
            let out = scene
                .command("new", &[])
                .env("ZVM_CRASH_AT", k.to_string())
                .output()
                .unwrap();
            let context = format!("{outputs} outputs, mount {mount}, export {export}, crash {k}");
            if !killed(&out) {
                assert_eq!(out.status.code(), Some(0), "{context}: {}", stderr(&out));
                assert_eq!(scene.check_consistent(&context), Version::New);
                assert!(k > outputs, "{context}: too few crash points");
                break;
            }
            crashes += 1;
            assert!(
                stderr(&out).contains(&format!("crash point {k}:")),
                "{context}: {}",
                stderr(&out)
            );
            // Recovery itself may be killed; a second recovery finishes its work.
            let first = scene.recover(Some(1));
            if killed(&first) {
                crashes += 1;
            }
            let second = scene.recover(None);
            assert!(second.status.success(), "{context}: {}", stderr(&second));
            let version = scene.check_consistent(&context);
            seen[version as usize] += 1;
        }
    }
    assert!(crashes >= 100, "only {crashes} crashes injected");
    assert!(seen[0] > 0 && seen[1] > 0, "both outcomes occur: {seen:?}");
    eprintln!(
        "{crashes} crashes injected; recovered to old {} times, to new {} times",
        seen[0], seen[1]
    );
}

/// `kill -9` at random moments of runs writing 3 outputs of 2 MiB, a directory and an export:
/// after recovery, all old or all new.
#[test]
fn kill_9_at_random_moments_leaves_all_old_or_all_new() {
    // A fixed seed keeps failures reproducible; the moments still vary with the machine.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // How long a run takes here, to spread the kills over it.
    let probe = Scene::new(3, 2 << 20, true, true);
    let t = std::time::Instant::now();
    assert!(probe.command("new", &[]).status().unwrap().success());
    let span = t.elapsed().as_micros() as u64 + 1;
    let mut seen = [0usize; 2];
    for round in 0..150 {
        let scene = Scene::new(3, 2 << 20, true, true);
        let mut child = scene
            .command("new", &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(next() % span));
        let _ = child.kill();
        let _ = child.wait();
        let rec = scene.recover(None);
        assert!(rec.status.success(), "round {round}: {}", stderr(&rec));
        let v = scene.check_consistent(&format!("round {round}"));
        seen[v as usize] += 1;
    }
    eprintln!(
        "after kill -9: old {} times, new {} times",
        seen[0], seen[1]
    );
}

#[test]
fn failed_runs_leave_no_output_and_no_stray_files() {
    for code in ["1", "7"] {
        let scene = Scene::new(3, 100, true, true);
        let out = scene.command("new", &[]).arg(code).output().unwrap();
        assert_eq!(out.status.code(), Some(code.parse().unwrap()));
        assert_eq!(scene.check_consistent("failed run"), Version::Old);
    }
    // A limit, too: fuel runs out after the outputs are written.
    let scene = Scene::new(2, 1 << 20, true, true);
    let out = scene
        .command("new", &["--fuel", "200000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert_eq!(scene.check_consistent("out of fuel"), Version::Old);
}

#[test]
fn commit_policy_always_and_never() {
    let scene = Scene::new(2, 10, true, true);
    let out = scene
        .command("new", &["--commit", "never"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(scene.check_consistent("never"), Version::Old);
    let out = scene
        .command("new", &["--commit", "always"])
        .arg("3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(scene.check_consistent("always"), Version::New);
}

#[test]
fn exports_are_deterministic_tar_files() {
    let scene = Scene::new(0, 0, false, true);
    assert!(scene.command("new", &[]).status().unwrap().success());
    let first = std::fs::read(scene.tar()).unwrap();
    std::fs::write(scene.tar(), "old tar").unwrap();
    assert!(scene.command("new", &[]).status().unwrap().success());
    assert_eq!(
        std::fs::read(scene.tar()).unwrap(),
        first,
        "same run, same bytes"
    );
    assert_eq!(scene.check_consistent("export"), Version::New);
    // Exporting something that is not a scratch directory is an error naming the export,
    // and nothing lands.
    let scene = Scene::new(1, 0, false, false);
    let out = scene
        .command("new", &["--export", "/nothing=x.tar"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("export `/nothing`") && stderr(&out).contains("did not create"),
        "{}",
        stderr(&out)
    );
    assert_eq!(scene.check_consistent("bad export"), Version::Old);
}

#[test]
fn a_writable_directory_changes_only_on_commit_and_keeps_the_users_links() {
    let scene = Scene::new(0, 0, true, false);
    let data = scene.data();
    // A second name for `a` outside the mount: the guest's change must not reach it through
    // the shared inode before (or instead of) the commit.
    let outside = scene.dir.path().join("a-link");
    std::fs::hard_link(data.join("a"), &outside).unwrap();
    let out = scene.command("new", &[]).arg("1").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "old a");
    assert_eq!(std::fs::read_to_string(data.join("a")).unwrap(), "old a");
    assert!(scene.command("new", &[]).status().unwrap().success());
    assert_eq!(std::fs::read_to_string(data.join("a")).unwrap(), "new a");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "old a");
    assert_eq!(listing(&data), ["a", "c", "sub"]);
}

/// A manifest with an input channel pinned to `etag`, copying it to an output.
fn pinned_manifest(dir: &Path, input: &Path, etag: &str) -> PathBuf {
    let m = dir.join("pinned.toml");
    std::fs::write(
        &m,
        format!(
            r#"version = 1
program = "{}"
[[channel]]
name = "stdin"
path = "{}"
mode = "read"
etag = "{etag}"
[[channel]]
name = "stdout"
path = "{}"
mode = "write"
"#,
            s(&c_guest("cat")),
            s(input),
            s(&dir.join("copy.txt"))
        ),
    )
    .unwrap();
    m
}

#[test]
fn pinned_inputs_are_refused_when_they_differ() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "pinned content\n").unwrap();
    let good = blake3::hash(b"pinned content\n").to_hex().to_string();
    let m = pinned_manifest(dir.path(), &input, &good);
    let out = support::run(&["run", "--no-result-cache", s(&m)], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(dir.path().join("copy.txt")).unwrap(),
        b"pinned content\n"
    );
    std::fs::remove_file(dir.path().join("copy.txt")).unwrap();
    std::fs::write(&input, "changed content\n").unwrap();
    let now = blake3::hash(b"changed content\n").to_hex().to_string();
    let out = support::run(&["run", "--no-result-cache", s(&m)], b"");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains(&good) && err.contains(&now) && err.contains("channel `stdin`"),
        "{err}"
    );
    assert_eq!(listing(dir.path()), ["in.txt", "pinned.toml"]);
}

/// A guest copying 16 bytes of `/dev/input` to `/dev/output`.
fn copy16(dir: &Path) -> PathBuf {
    support::wat_guest(
        dir,
        "copy16",
        r#"(module
        (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 100) "dev/input")
        (data (i32.const 120) "dev/output")
        (func (export "_start") (local $in i32) (local $out i32)
            ;; fd 3 is the root preopen.
            ;; Rights: fd_read (2) for the input, fd_write (64) for the output.
            (drop (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 9) (i32.const 0)
                (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))
            (local.set $in (i32.load (i32.const 200)))
            (drop (call $open (i32.const 3) (i32.const 0) (i32.const 120) (i32.const 10) (i32.const 0)
                (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 204)))
            (local.set $out (i32.load (i32.const 204)))
            (i32.store (i32.const 0) (i32.const 300))
            (i32.store (i32.const 4) (i32.const 16))
            (drop (call $read (local.get $in) (i32.const 0) (i32.const 1) (i32.const 8)))
            (i32.store (i32.const 4) (i32.load (i32.const 8)))
            (drop (call $write (local.get $out) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
}

#[test]
fn verify_accepts_a_deterministic_run_and_catches_a_changing_input() {
    let dir = tempfile::tempdir().unwrap();
    let prog = copy16(dir.path());
    let input = dir.path().join("in");
    std::fs::write(&input, "0123456789abcdefXYZ").unwrap();
    let output = dir.path().join("out");
    let out = support::run(
        &[
            "run",
            "--verify",
            "--input",
            &format!("input={}", s(&input)),
            "--output",
            &format!("output={}", s(&output)),
            s(&prog),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&output).unwrap(), b"0123456789abcdef");
    std::fs::remove_file(&output).unwrap();

    // A channel bound to a file that changes between runs: the kernel's random device.
    let out = support::run(
        &[
            "run",
            "--verify",
            "--input",
            "input=/dev/urandom",
            "--output",
            &format!("output={}", s(&output)),
            s(&prog),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(123), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the two runs differ: channel `input` etag"),
        "{}",
        stderr(&out)
    );
    assert!(!output.exists(), "nothing commits when the runs differ");
    assert_eq!(listing(dir.path()), ["copy16.wat", "in"]);
}

#[test]
fn replay_reproduces_and_names_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let prog = copy16(dir.path());
    let input = dir.path().join("in");
    std::fs::write(&input, "0123456789abcdefXYZ").unwrap();
    let output = dir.path().join("out");
    let report = dir.path().join("report.json");
    let run = |input: &str| {
        support::run(
            &[
                "run",
                "--no-result-cache",
                "--report-file",
                s(&report),
                "--input",
                &format!("input={input}"),
                "--output",
                &format!("output={}", s(&output)),
                s(&prog),
            ],
            b"",
        )
    };
    assert!(run(s(&input)).status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let replay = &json["replay"];
    assert_eq!(
        replay["inputs"][0]["etag"],
        blake3::hash(b"0123456789abcdefXYZ").to_hex().as_str()
    );
    assert!(
        replay["manifest"]
            .as_str()
            .unwrap()
            .contains("name = \"input\"")
    );
    assert!(
        replay["manifest_hash"]
            .as_str()
            .unwrap()
            .starts_with("blake3:")
    );
    assert_eq!(replay["seed"], 0);
    let before = std::fs::read(&output).unwrap();

    let out = support::run(&["replay", s(&report)], b"");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("reproduced: ok"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read(&output).unwrap(),
        before,
        "replay writes nothing"
    );

    // The input changes: replay says which, and with both etags.
    std::fs::write(&input, "something else entirely").unwrap();
    let out = support::run(&["replay", s(&report)], b"");
    assert_eq!(out.status.code(), Some(123));
    assert!(
        stdout(&out).contains("input `input`")
            && stdout(&out).contains(
                &blake3::hash(b"something else entirely")
                    .to_hex()
                    .to_string()
            ),
        "{}",
        stdout(&out)
    );

    // A run whose input is not a file (no etag recorded) that reads differently each time:
    // the output's channel is named.
    assert!(run("/dev/urandom").status.success());
    let out = support::run(&["replay", s(&report)], b"");
    assert_eq!(out.status.code(), Some(123));
    assert!(
        stdout(&out).contains("channel `input` etag"),
        "{}",
        stdout(&out)
    );

    // Not a report: a clear error.
    let out = support::run(&["replay", s(&input)], b"");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("is not a zvm report"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_result_cache_serves_identical_outputs_and_misses_when_an_input_changes() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("words.txt");
    std::fs::write(&input, "the cat the dog\n").unwrap();
    let prog = c_guest("cat");
    let report = dir.path().join("r.json");
    let run = |output: &Path, extra: &[&str]| {
        let mut cmd = support::zvm();
        let (flags, guest_args) = match extra.iter().position(|a| *a == "--") {
            Some(i) => extra.split_at(i),
            None => (extra, &[][..]),
        };
        cmd.env("ZVM_CACHE_DIR", cache.path())
            .arg("run")
            .arg("--report-file")
            .arg(&report)
            .args(flags)
            .arg("--input")
            .arg(format!("stdin={}", s(&input)))
            .arg("--output")
            .arg(format!("stdout={}", s(output)))
            .arg(&prog)
            .args(guest_args);
        let out = support::run_cmd(&mut cmd, b"");
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        (json["cache"]["status"].as_str().unwrap().to_string(), json)
    };
    let first = dir.path().join("first.txt");
    let (status, a) = run(&first, &[]);
    assert_eq!(status, "miss");
    assert_eq!(a["cache"]["stored"], true);
    // Another destination, same content and program: served without executing.
    let second = dir.path().join("second.txt");
    let (status, b) = run(&second, &[]);
    assert_eq!(status, "hit");
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap()
    );
    assert_eq!(channel(&a, "stdout")["etag"], channel(&b, "stdout")["etag"]);
    assert_eq!(a["fuel_used"], b["fuel_used"]);
    assert_eq!(b["committed"], true);
    // The flag bypasses it.
    let (status, _) = run(&second, &["--no-result-cache"]);
    assert_eq!(status, "off");
    // Any change of the input: executed again.
    std::fs::write(&input, "the cat the cow\n").unwrap();
    let third = dir.path().join("third.txt");
    let (status, c) = run(&third, &[]);
    assert_eq!(status, "miss");
    assert_ne!(channel(&a, "stdout")["etag"], channel(&c, "stdout")["etag"]);
    assert_ne!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&third).unwrap()
    );
    // So is a change of the arguments (`-` is standard input again: same output).
    let (status, _) = run(&third, &["--", "-"]);
    assert_eq!(status, "miss");
    assert_eq!(
        listing(dir.path()),
        [
            "first.txt",
            "r.json",
            "second.txt",
            "third.txt",
            "words.txt"
        ]
    );
}

#[test]
fn uncacheable_runs_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = support::run_report(
        &[
            "--ro-dir",
            &format!("{}::/data", s(dir.path())),
            s(&c_guest("hello")),
        ],
        b"",
    );
    assert!(out.status.success());
    assert_eq!(report["cache"]["status"], "bypassed");
    assert!(
        report["cache"]["reason"]
            .as_str()
            .unwrap()
            .contains("host directory"),
        "{}",
        report["cache"]
    );
}

#[test]
fn an_input_changed_during_the_run_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, "first version").unwrap();
    let output = dir.path().join("out");
    // The guest reads, then computes for a long while (fuel, not time).
    let prog = support::wat_guest(
        dir.path(),
        "slow",
        r#"(module
        (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start") (local $i i64)
            (i32.store (i32.const 0) (i32.const 100))
            (i32.store (i32.const 4) (i32.const 8))
            (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
            (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1)))
                (br_if $l (i64.lt_u (local.get $i) (i64.const 2000000000))))
            (i32.store (i32.const 4) (i32.const 5))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    );
    let mut cmd = support::zvm();
    cmd.arg("run")
        .args(["--fuel", "100000000000"])
        .arg("--report-file")
        .arg(dir.path().join("r.json"))
        .arg("--input")
        .arg(format!("stdin={}", s(&input)))
        .arg("--output")
        .arg(format!("stdout={}", s(&output)))
        .arg(&prog)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::write(&input, "second version, longer").unwrap();
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(report["state"]["kind"], "input_changed", "{report}");
    assert_eq!(report["state"]["channel"], "stdin");
    assert_eq!(out.status.code(), Some(125));
    assert!(!output.exists());
}

#[test]
fn recover_reports_when_there_is_nothing_to_do() {
    let scene = Scene::new(1, 1, false, false);
    let out = scene.recover(None);
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with("nothing to recover"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn replay_checks_every_layer_of_a_layered_image() {
    let dir = tempfile::tempdir().unwrap();
    let tar_with = |name: &str, file: &str, body: &[u8]| {
        let path = dir.path().join(name);
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, file, body).unwrap();
        b.finish().unwrap();
        path
    };
    let lower = tar_with("lower.tar", "a.txt", b"lower");
    let upper = tar_with("upper.tar", "b.txt", b"upper");
    let report = dir.path().join("r.json");
    let out = support::run(
        &[
            "run",
            "--no-result-cache",
            "--report-file",
            s(&report),
            "--image",
            &format!("{}::/img", s(&lower)),
            "--image",
            &format!("{}::/img", s(&upper)),
            s(&c_guest("hello")),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = support::run(&["replay", s(&report)], b"");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // Changing the upper layer is named as that layer.
    tar_with("upper.tar", "b.txt", b"UPPER");
    let out = support::run(&["replay", s(&report)], b"");
    assert_eq!(out.status.code(), Some(123));
    assert!(
        stdout(&out).contains("input `image /img (mount 2)`"),
        "{}",
        stdout(&out)
    );
}
