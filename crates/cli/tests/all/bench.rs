//! `zvm bench` still works: every scenario at its smallest scale (the figures of a debug build
//! under a test runner mean nothing; docs/benchmarks.md has the real ones).

use crate::support::*;

#[test]
fn bench_runs_every_scenario_and_writes_its_section() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("benchmarks.md");
    std::fs::write(
        &doc,
        "# prose before\n<!-- zvm bench: start -->\nold table\n<!-- zvm bench: end -->\nprose after\n",
    )
    .unwrap();
    let out = run_cmd(
        zvm()
            .args([
                "bench",
                "--scale",
                "quick",
                "--wasmtime",
                "/nonexistent/wasmtime",
                "--write",
            ])
            .arg(&doc),
        b"",
    );
    // The named wasmtime does not exist: the cli row fails to run it, which is an error.
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/wasmtime"),
        "{}",
        stderr(&out)
    );

    let out = run_cmd(
        zvm()
            .env("ZVM_BENCH_WASMTIME", "")
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("ZVM_DATA_DIR", dir.path())
            .args(["bench", "--scale", "quick", "--write"])
            .arg(&doc),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    for scenario in [
        "lifecycle",
        "process",
        "throughput",
        "cli",
        "compute",
        "memory",
        "jobs",
        "interpreters",
        "transactions",
    ] {
        assert!(table.contains(scenario), "no `{scenario}` row:\n{table}");
    }
    assert!(table.contains("skipped: no wasmtime 48 CLI"), "{table}");
    // The data directory is a fresh one: no interpreter is installed there, and the rows say
    // so.
    assert!(
        table.contains("skipped: no interpreter is installed"),
        "{table}"
    );
    assert!(table.contains("word count of"), "{table}");
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(
        text.starts_with("# prose before\n<!-- zvm bench: start -->\n| scenario |"),
        "{text}"
    );
    assert!(
        text.ends_with("<!-- zvm bench: end -->\nprose after\n"),
        "{text}"
    );
    assert!(!text.contains("old table"));
}
