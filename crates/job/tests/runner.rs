//! The job runner on hand-built jobs: pipes with backpressure, all-or-nothing commits,
//! failures, deadlocks, and a thousand members on two threads.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use zvm_job::{JobOptions, JobOutcome, run};
use zvm_manifest::{AccessMode, Channel, ChannelName, ChannelSource, Job, Manifest, Member, Quota};
use zvm_vm::{Allocator, Runtime, RuntimeConfig};

/// tests/guests/c/pipes.c built with clang for wasm32-wasi.
fn guest() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = root.join("target/zvm-test/guests/pipes-job.wasm");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let status = std::process::Command::new("clang")
            .args(["--target=wasm32-wasi", "-O2", "-o"])
            .arg(&tmp)
            .arg(root.join("tests/guests/c/pipes.c"))
            .status()
            .expect("clang (see scripts/install-deps)");
        assert!(status.success());
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}

/// A job of members running `pipes` with `args`, and pipes `(from, to)` by member index.
fn job(members: &[(&str, Vec<String>)], edges: &[(usize, usize)]) -> Job {
    let members = members
        .iter()
        .map(|(name, args)| {
            let mut m = Manifest::for_program(guest());
            m.args = args.clone();
            Member {
                name: name.to_string(),
                group: name.split('-').next().unwrap().to_string(),
                manifest: m,
            }
        })
        .collect();
    Job::from_members("test", members, edges, Quota::default()).unwrap()
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator: Allocator::OnDemand,
    })
    .unwrap()
}

fn two_threads() -> JobOptions {
    JobOptions {
        threads: 2,
        progress: None,
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn stdout(r: &zvm_job::JobReport, member: usize) -> String {
    String::from_utf8(r.members[member].stdout.clone().unwrap()).unwrap()
}

#[test]
fn bytes_flow_through_a_pipe_with_backpressure_and_etags_agree() {
    let j = job(
        &[
            ("a", args(&["w:out/b:3000000"])),
            ("b", args(&["ls", "r:in/a"])),
        ],
        &[(0, 1)],
    );
    let r = run(&runtime(), &j, &two_threads()).unwrap();
    assert_eq!(r.outcome, JobOutcome::Ok, "{}", r.to_text());
    assert!(r.committed);
    assert_eq!(r.totals.pipe_bytes, 3_000_000);
    let out = stdout(&r, 1);
    assert!(
        out.starts_with("in/a\n/dev/out: none\nin/a 3000000 "),
        "{out}"
    );
    // The writer's and the reader's etags of the pipe are the same bytes.
    let etag = |m: usize, ch: &str| {
        let rep = r.members[m].report.as_ref().unwrap();
        rep.channels
            .iter()
            .find(|c| c.name == ch)
            .unwrap()
            .etag
            .clone()
    };
    assert_eq!(etag(0, "out/b"), etag(1, "in/a"));
}

#[test]
fn a_failing_member_fails_the_job_and_nothing_lands() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.txt");
    let mut j = job(
        &[
            ("a", args(&["w:out/b:100000", "x:7"])),
            ("b", args(&["r:in/a", "w:result:10"])),
        ],
        &[(0, 1)],
    );
    j.members[1].manifest.channels.push(Channel {
        name: ChannelName::new("result").unwrap(),
        source: ChannelSource::File(out.clone()),
        mode: AccessMode::SequentialWrite,
        quota: Quota::default(),
        etag: None,
    });
    let r = run(&runtime(), &j, &two_threads()).unwrap();
    match &r.outcome {
        JobOutcome::Failed { member, reason } => {
            assert_eq!(member, "a");
            assert_eq!(reason, "exited with 7");
        }
        other => panic!("{other:?}"),
    }
    assert!(!r.committed);
    assert!(!out.exists());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no stray files"
    );

    // The same job with a succeeding writer lands the reader's output.
    j.members[0].manifest.args = args(&["w:out/b:100000"]);
    let r = run(&runtime(), &j, &two_threads()).unwrap();
    assert_eq!(r.outcome, JobOutcome::Ok, "{}", r.to_text());
    assert_eq!(std::fs::read(&out).unwrap().len(), 10);
}

#[test]
fn a_reader_learns_that_its_writer_failed() {
    // The writer traps after a few bytes: the reader's read fails (EIO) rather than ending.
    let j = job(
        &[
            ("a", args(&["w:out/b:1000", "x:1"])),
            ("b", args(&["r:in/a"])),
        ],
        &[(0, 1)],
    );
    let r = run(&runtime(), &j, &two_threads()).unwrap();
    assert!(!r.committed);
    // `b` either saw the failure (exit 3) or was cancelled when `a` failed first.
    let b = &r.members[1];
    let state = b.state_text();
    assert!(
        state == "exited with 3" || state.starts_with("cancelled"),
        "{state}"
    );
}

#[test]
fn a_deadlock_is_detected_instead_of_hanging() {
    // a writes 3 MB (more than a pipe holds) to c before anything to b; c reads b first; b reads a first:
    // a waits on c, c on b, b on a.
    let j = job(
        &[
            ("a", args(&["w:out/c:3000000", "w:out/b:10"])),
            ("b", args(&["r:in/a", "w:out/c:10"])),
            ("c", args(&["r:in/b", "r:in/a"])),
        ],
        &[(0, 1), (0, 2), (1, 2)],
    );
    let t = std::time::Instant::now();
    let r = run(&runtime(), &j, &two_threads()).unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    assert!(!r.committed);
    let text = r.to_text();
    assert!(text.contains("deadlock"), "{text}");
}

#[test]
fn a_thousand_members_run_on_two_threads() {
    // 999 writers into one reader that reads them in order: all but one wait at any time.
    let n = 999;
    let mut members = vec![(
        "sink",
        (1..=n).map(|i| format!("r:in/src-{i}")).collect::<Vec<_>>(),
    )];
    let names: Vec<String> = (1..=n).map(|i| format!("src-{i}")).collect();
    for name in &names {
        members.push((name.as_str(), args(&["w:out/sink:100000"])));
    }
    let edges: Vec<(usize, usize)> = (1..=n).map(|i| (i, 0)).collect();
    let j = job(&members, &edges);
    let r = run(&runtime(), &j, &two_threads()).unwrap();
    assert_eq!(r.outcome, JobOutcome::Ok, "{}", r.outcome_text);
    assert_eq!(r.totals.members, 1000);
    assert_eq!(r.totals.pipe_bytes, 100_000 * n as u64);
    assert_eq!(stdout(&r, 0).lines().count(), n);
}
