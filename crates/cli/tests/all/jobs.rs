//! `zvm job`: wildcards, all-to-all pipes, all-or-nothing commits, worker processes (Unix and
//! TCP) with identical results, a lost worker re-run, a thousand members on two threads, and
//! errors for invalid jobs.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{self, c_guest, listing, stderr, stdout};

/// A job directory: `pipes.wasm`, `data/*.txt` inputs, and `job.toml` written by the test.
struct JobDir {
    dir: tempfile::TempDir,
}

impl JobDir {
    fn new(inputs: &[(&str, usize)]) -> JobDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(c_guest("pipes"), dir.path().join("pipes.wasm")).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        for (name, size) in inputs {
            let bytes: Vec<u8> = (0..*size).map(|i| (i * 13 % 256) as u8).collect();
            std::fs::write(dir.path().join("data").join(name), bytes).unwrap();
        }
        JobDir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, toml: &str) -> PathBuf {
        let p = self.path().join("job.toml");
        std::fs::write(&p, toml).unwrap();
        p
    }

    /// `zvm job` with `extra` flags; returns the output and the JSON job report.
    fn run(&self, extra: &[&str]) -> (Output, serde_json::Value) {
        let report = self.path().join("report.json");
        let _ = std::fs::remove_file(&report);
        let mut cmd = support::zvm();
        cmd.arg("job")
            .arg(self.path().join("job.toml"))
            .arg("--report-file")
            .arg(&report)
            .args(extra);
        let out = support::run_cmd(&mut cmd, b"");
        let text = std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("no job report ({e}): {}", stderr(&out)));
        (out, serde_json::from_str(&text).unwrap())
    }
}

/// Every member's channel etags, by member and channel name: what must not depend on where
/// the members ran.
fn etags(report: &serde_json::Value) -> Vec<(String, String, String, u64)> {
    let mut v = Vec::new();
    for m in report["members"].as_array().unwrap() {
        let r = &m["report"];
        for c in r["channels"].as_array().unwrap() {
            v.push((
                m["name"].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
                c["etag"].as_str().unwrap().to_string(),
                r["fuel_used"].as_u64().unwrap(),
            ));
        }
    }
    v
}

/// Mappers (one per input file, copying it to every reducer and to an output of their own)
/// and reducers (listing their pipes, reading each, writing a summary file).
const MAP_REDUCE: &str = r#"version = 1
name = "mr"

[[group]]
name = "map"
program = "pipes.wasm"
args = ["c:input:out/reduce-1", "ls"]
connect = ["reduce"]
[[group.channel]]
name = "input"
path = "data/*.txt"
mode = "read"
[[group.channel]]
name = "copy"
path = "out/*.copy"
mode = "write"

[[group]]
name = "reduce"
program = "pipes.wasm"
count = 2
args = ["ls", "r:in/map-1", "r:in/map-2", "r:in/map-3", "w:summary:1000"]
[[group.channel]]
name = "summary"
path = "out/summary-*.txt"
mode = "write"
"#;

#[test]
fn wildcards_fan_out_and_all_to_all_pipes_connect_every_pair() {
    let j = JobDir::new(&[("a.txt", 1000), ("b.txt", 200_000), ("c.txt", 5)]);
    // The mappers copy their input only to reduce-1 (and close out/reduce-2 empty), so each
    // reducer sees 3 pipes, reduce-2's all empty.
    j.write(&MAP_REDUCE.replace("\"ls\"]", "\"w:out/reduce-2:0\", \"w:copy:3\", \"ls\"]"));
    let (out, report) = j.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["outcome"]["kind"], "ok");
    assert_eq!(report["committed"], true);
    let names: Vec<&str> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["map-1", "map-2", "map-3", "reduce-1", "reduce-2"]);
    // 3 mappers × 2 reducers.
    assert_eq!(report["totals"]["pipe_bytes"], 201_005);
    let text = stdout(&out);
    // Each mapper lists its 2 outputs; each reducer its 3 inputs and the sizes it read.
    assert_eq!(
        text.matches("out/reduce-1\nout/reduce-2\n").count(),
        3,
        "{text}"
    );
    assert!(text.contains("in/map-1\nin/map-2\nin/map-3\n"), "{text}");
    assert!(text.contains("in/map-2 200000 "), "{text}");
    assert!(text.contains("in/map-3 0 0"), "{text}");
    // `*` in outputs: the matched part for mappers, the member number for reducers.
    assert_eq!(
        listing(&j.path().join("out")),
        [
            "a.copy",
            "b.copy",
            "c.copy",
            "summary-1.txt",
            "summary-2.txt"
        ]
    );
}

#[test]
fn a_failing_member_aborts_the_whole_job_and_nothing_lands() {
    let j = JobDir::new(&[("a.txt", 10), ("b.txt", 10), ("c.txt", 10)]);
    // Every other member succeeds and stages its outputs; one member of its own group exits
    // with 9.
    let ok = MAP_REDUCE.replace("\"ls\"]", "\"w:out/reduce-2:0\", \"w:copy:3\"]");
    j.write(&ok.replace(
        "[[group]]\nname = \"reduce\"",
        "[[group]]\nname = \"judge\"\nprogram = \"pipes.wasm\"\nargs = [\"x:9\"]\n\n[[group]]\nname = \"reduce\"",
    ));
    let (out, report) = j.run(&[]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert_eq!(report["outcome"]["kind"], "failed");
    assert_eq!(report["outcome"]["member"], "judge");
    assert_eq!(report["outcome"]["reason"], "exited with 9");
    assert_eq!(report["committed"], false);
    assert!(listing(&j.path().join("out")).is_empty(), "nothing lands");
    assert!(
        !listing(j.path()).iter().any(|n| n.starts_with('.')),
        "no stray files: {:?}",
        listing(j.path())
    );
}

#[test]
fn workers_over_unix_and_tcp_sockets_give_identical_results() {
    let j = JobDir::new(&[("a.txt", 70_000), ("b.txt", 300_000), ("c.txt", 1)]);
    j.write(&MAP_REDUCE.replace("\"ls\"]", "\"w:out/reduce-2:100000\", \"w:copy:3\"]"));
    let (out, one) = j.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = |j: &JobDir| {
        listing(&j.path().join("out"))
            .into_iter()
            .map(|n| {
                (
                    n.clone(),
                    std::fs::read(j.path().join("out").join(&n)).unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let first = files(&j);
    for flags in [
        &["--processes", "2"][..],
        &["--processes", "3", "--tcp"][..],
    ] {
        for f in listing(&j.path().join("out")) {
            std::fs::remove_file(j.path().join("out").join(f)).unwrap();
        }
        let (out, many) = j.run(flags);
        assert!(out.status.success(), "{flags:?}: {}", stderr(&out));
        assert_eq!(many["processes"], flags[1].parse::<u64>().unwrap());
        assert_eq!(etags(&many), etags(&one), "{flags:?}");
        assert_eq!(many["totals"]["pipe_bytes"], one["totals"]["pipe_bytes"]);
        assert_eq!(files(&j), first, "{flags:?}");
        assert_eq!(
            stdout(&out),
            stdout(&support::run_cmd(
                support::zvm()
                    .arg("job")
                    .arg(j.path().join("job.toml"))
                    .args(flags),
                b""
            ))
        );
    }
}

#[test]
fn a_lost_worker_is_recovered_by_running_again_with_identical_etags() {
    let j = JobDir::new(&[("a.txt", 400_000), ("b.txt", 400_000), ("c.txt", 400_000)]);
    j.write(&MAP_REDUCE.replace("\"ls\"]", "\"w:out/reduce-2:100000\", \"w:copy:3\"]"));
    let (out, one) = j.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Worker 1 kills itself (SIGKILL) in the middle of the first attempt.
    let mut cmd = support::zvm();
    let report = j.path().join("lost.json");
    cmd.env("ZVM_WORKER_CRASH", "1:300000")
        .arg("job")
        .arg(j.path().join("job.toml"))
        .args(["--processes", "2", "--report-file"])
        .arg(&report);
    let out = support::run_cmd(&mut cmd, b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("worker process 1 was lost"),
        "{}",
        stderr(&out)
    );
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(again["attempts"], 2);
    assert_eq!(etags(&again), etags(&one));
    assert!(
        !listing(j.path().join("out").as_path())
            .iter()
            .any(|n| n.starts_with('.')),
        "no staged files of the lost attempt remain"
    );
    // Without retries the job fails, cleanly.
    let toml = std::fs::read_to_string(j.path().join("job.toml")).unwrap();
    j.write(&toml.replace("name = \"mr\"\n", "name = \"mr\"\nretries = 0\n"));
    for f in listing(&j.path().join("out")) {
        std::fs::remove_file(j.path().join("out").join(f)).unwrap();
    }
    let mut cmd = support::zvm();
    cmd.env("ZVM_WORKER_CRASH", "1:300000")
        .arg("job")
        .arg(j.path().join("job.toml"))
        .args(["--processes", "2"]);
    let out = support::run_cmd(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("lost"), "{}", stderr(&out));
    assert!(listing(&j.path().join("out")).is_empty());
}

#[test]
fn a_thousand_members_run_on_two_threads() {
    let j = JobDir::new(&[]);
    j.write(
        r#"version = 1
[[group]]
name = "src"
program = "pipes.wasm"
count = 999
args = ["w:out/sink:20000"]
connect = ["sink"]
[[group]]
name = "sink"
program = "pipes.wasm"
args = ["ls"]
"#,
    );
    // The sink only lists its pipes and exits: every writer then gets EPIPE... so read them.
    let mut toml = std::fs::read_to_string(j.path().join("job.toml")).unwrap();
    let reads: Vec<String> = (1..=999).map(|i| format!("\"r:in/src-{i}\"")).collect();
    toml = toml.replace("args = [\"ls\"]", &format!("args = [{}]", reads.join(", ")));
    j.write(&toml);
    let (out, report) = j.run(&["--threads", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["totals"]["members"], 1000);
    assert_eq!(report["totals"]["ok"], 1000);
    assert_eq!(report["totals"]["pipe_bytes"], 999 * 20_000);
    assert_eq!(stdout(&out).lines().count(), 999);
}

#[test]
fn invalid_jobs_are_refused_with_the_group_named() {
    let j = JobDir::new(&[]);
    for (toml, want) in [
        (
            "version = 1\n[[group]]\nname = \"a\"\nprogram = \"pipes.wasm\"\nconnect = [\"b\"]\n[[group]]\nname = \"b\"\nprogram = \"pipes.wasm\"\nconnect = [\"a\"]\n",
            "cycle",
        ),
        (
            "version = 1\n[[group]]\nname = \"a\"\nprogram = \"pipes.wasm\"\nconnect = [\"nowhere\"]\n",
            "`nowhere`",
        ),
        (
            "version = 1\n[[group]]\nname = \"a\"\nprogram = \"pipes.wasm\"\n[[group]]\nname = \"a\"\nprogram = \"pipes.wasm\"\n",
            "duplicate",
        ),
        (
            "version = 1\n[[group]]\nname = \"a\"\nprogram = \"pipes.wasm\"\n[[group.channel]]\nname = \"input\"\npath = \"data/*.none\"\nmode = \"read\"\n",
            "matches no file",
        ),
    ] {
        j.write(toml);
        let out = support::run(&["job", j.path().join("job.toml").to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(125), "{toml}");
        let err = stderr(&out);
        assert!(err.contains("job.toml:"), "{err}");
        assert!(err.contains(want), "want `{want}` in: {err}");
    }
}
