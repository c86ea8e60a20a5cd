//! Pre-initialised snapshots (docs/snapshots.md): a run started from a snapshot gives the
//! same outputs and etags as a plain start, the snapshot itself is deterministic, and a
//! snapshot that does not fit a run is not used.

use std::path::Path;

use crate::support::{self, channel, stderr, stdout};

/// `zvm run` of the snapinit guest with `script`, `--snapshot when`, writing `output`.
fn run_snapinit(
    script: &Path,
    output: &Path,
    when: &str,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let guest = support::c_guest("snapinit");
    let script_arg = format!("script={}", script.display());
    let output_arg = format!("output={}", output.display());
    let mut args = vec![
        "--no-result-cache",
        "--snapshot",
        when,
        "--input",
        &script_arg,
        "--output",
        &output_arg,
    ];
    args.extend_from_slice(extra);
    args.push(guest.to_str().unwrap());
    support::run_report(&args, b"")
}

fn etags(report: &serde_json::Value) -> Vec<(String, String)> {
    report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["etag"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// wasm-opt (binaryen) makes snapshots; `scripts/install-deps` installs it, CI must have it.
fn require_wasm_opt() {
    let ok = std::process::Command::new("wasm-opt")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "wasm-opt is missing: run scripts/install-deps (binaryen)"
    );
}

#[test]
fn a_run_from_a_snapshot_equals_a_plain_start() {
    require_wasm_opt();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&script, "first line\nsecond line\n").unwrap();
    let greeting = ["--env", "GREETING=hello"];

    let (plain_out, plain) = run_snapinit(&script, &output, "never", &greeting);
    assert!(plain_out.status.success(), "{}", stderr(&plain_out));
    assert!(plain.get("snapshot").is_none(), "{plain}");
    let plain_file = std::fs::read(&output).unwrap();
    std::fs::remove_file(&output).unwrap();

    let (made_out, made) = run_snapinit(&script, &output, "make", &greeting);
    assert!(made_out.status.success(), "{}", stderr(&made_out));
    let hash = made["snapshot"]["hash"]
        .as_str()
        .expect("started from a snapshot");
    assert!(made["snapshot"]["init_fuel"].as_u64().unwrap() > 10_000_000);
    assert_eq!(stdout(&made_out), stdout(&plain_out));
    assert_eq!(std::fs::read(&output).unwrap(), plain_file);
    assert_eq!(etags(&made), etags(&plain));
    // The report names the program it ran, not the snapshot's module.
    assert_eq!(made["program_hash"], plain["program_hash"]);
    // Fuel is charged for the initialisation too: the same order as a plain start.
    let (p, s) = (
        plain["fuel_used"].as_u64().unwrap(),
        made["fuel_used"].as_u64().unwrap(),
    );
    assert!(s >= p && s < p + p / 5, "plain {p}, snapshot {s}");

    // Another script: `auto` finds the same snapshot, and still matches a plain start
    // (the clock and random reads after the script depend on everything before).
    std::fs::write(&script, "a different script\nof three\nlines\n").unwrap();
    std::fs::remove_file(&output).unwrap();
    let (plain_out, plain) = run_snapinit(&script, &output, "never", &greeting);
    let plain_file = std::fs::read(&output).unwrap();
    std::fs::remove_file(&output).unwrap();
    let (auto_out, auto) = run_snapinit(&script, &output, "auto", &greeting);
    assert!(auto_out.status.success(), "{}", stderr(&auto_out));
    assert_eq!(auto["snapshot"]["hash"], hash);
    assert_eq!(stdout(&auto_out), stdout(&plain_out));
    assert!(
        stdout(&auto_out).contains("lines=3"),
        "{}",
        stdout(&auto_out)
    );
    assert_eq!(std::fs::read(&output).unwrap(), plain_file);
    assert_eq!(etags(&auto), etags(&plain));

    // Other settings are another snapshot: `auto` does not make one, so this starts plainly.
    std::fs::remove_file(&output).unwrap();
    let (other_out, other) = run_snapinit(&script, &output, "auto", &["--env", "GREETING=bonjour"]);
    assert!(other_out.status.success(), "{}", stderr(&other_out));
    assert!(other.get("snapshot").is_none(), "{other}");
    assert!(stdout(&other_out).contains("greeting=bonjour"));
}

#[test]
fn a_limit_hit_from_a_snapshot_is_the_same_limit() {
    require_wasm_opt();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&script, "x\n").unwrap();
    let (out, made) = run_snapinit(&script, &output, "make", &["--seed", "77"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let init = made["snapshot"]["init_fuel"].as_u64().unwrap();
    // Less fuel than the initialisation took: out of fuel, from the snapshot as plainly,
    // and nothing lands.
    std::fs::remove_file(&output).unwrap();
    let fuel = (init / 2).to_string();
    for when in ["auto", "never"] {
        let (out, report) =
            run_snapinit(&script, &output, when, &["--seed", "77", "--fuel", &fuel]);
        assert_eq!(report["state"]["kind"], "out_of_fuel", "{when}: {report}");
        assert_eq!(out.status.code(), Some(124));
        assert!(!output.exists());
    }
}

#[test]
fn snapshots_are_deterministic() {
    require_wasm_opt();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.txt");
    std::fs::write(&script, "deterministic\n").unwrap();
    let guest = support::c_guest("snapinit");
    let mut hashes = Vec::new();
    let mut modules = Vec::new();
    for n in 0..2 {
        let cache = dir.path().join(format!("cache{n}"));
        let report = dir.path().join(format!("report{n}.json"));
        let out = support::run_cmd(
            support::zvm().env("ZVM_CACHE_DIR", &cache).args([
                "run",
                "--no-result-cache",
                "--snapshot",
                "make",
                "--report-file",
                report.to_str().unwrap(),
                "--input",
                &format!("script={}", script.display()),
                "--env",
                "RUN=deterministic-snapshot",
                guest.to_str().unwrap(),
            ]),
            b"",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        hashes.push(report["snapshot"]["hash"].as_str().unwrap().to_string());
        let snaps = std::fs::read_dir(cache.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("module.wasm").exists())
            .unwrap();
        modules.push(std::fs::read(snaps.join("module.wasm")).unwrap());
    }
    assert_eq!(hashes[0], hashes[1]);
    assert!(
        modules[0] == modules[1],
        "the two snapshots' modules differ"
    );
}

#[test]
fn a_snapshot_that_does_not_fit_the_run_is_not_used() {
    require_wasm_opt();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.txt");
    let config = dir.path().join("config");
    let output = dir.path().join("out.txt");
    std::fs::write(&script, "one\n").unwrap();
    std::fs::write(&config, "short").unwrap();
    let config_arg = format!("config={}", config.display());
    let extra = ["--input", &config_arg];
    let (out, made) = run_snapinit(&script, &output, "make", &extra);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("config=5"), "{}", stdout(&out));
    assert!(made.get("snapshot").is_some());
    // The guest looked at /dev/config's size before its snapshot point; another size is
    // another world, found when the run replays the snapshot's host calls.
    std::fs::write(&config, "a longer config").unwrap();
    std::fs::remove_file(&output).unwrap();
    let (out, report) = run_snapinit(&script, &output, "auto", &extra);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not fit"), "{}", stderr(&out));
    assert!(stdout(&out).contains("config=15"), "{}", stdout(&out));
    assert!(report.get("snapshot").is_none(), "{report}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "1: one\n");
    let (_, plain) = run_snapinit(&script, &output, "never", &extra);
    assert_eq!(
        channel(&report, "output")["etag"],
        channel(&plain, "output")["etag"]
    );
}

#[test]
fn a_program_without_its_snapshot_point_gets_a_clear_error() {
    require_wasm_opt();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.txt");
    std::fs::write(&script, "x").unwrap();
    // `hello` never opens /dev/script.
    let guest = support::c_guest("hello");
    let out = support::run(
        &[
            "run",
            "--no-result-cache",
            "--snapshot",
            "make",
            "--input",
            &format!("script={}", script.display()),
            guest.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("without opening `/dev/script`"),
        "{}",
        stderr(&out)
    );
}
