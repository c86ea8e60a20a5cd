//! Interpreters as guests: a Python script and a JavaScript one-liner reading a channel and
//! writing an output, run by the interpreters `scripts/install-interpreters` installs (CI
//! installs them through `scripts/install-deps`).

use crate::support::{self, listing, stderr, stdout};

/// Fails with the way to install them when the interpreters are missing: CI must have them.
fn require_interpreters() {
    let out = support::run(&["interpreters"], b"");
    assert!(
        out.status.success() && stdout(&out).contains("python") && stdout(&out).contains("quickjs"),
        "the interpreters are not installed (run scripts/install-interpreters): {}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn a_python_script_reads_a_channel_and_writes_an_output() {
    require_interpreters();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("count.py");
    std::fs::write(
        &script,
        r#"import collections, json, sys
words = open("/dev/input").read().split()
top = collections.Counter(words).most_common(2)
with open("/dev/output", "w") as out:
    json.dump({"words": len(words), "top": top, "args": sys.argv[1:]}, out)
print("counted", len(words))
"#,
    )
    .unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "the cat and the dog and the bird\n").unwrap();
    let output = dir.path().join("out.json");
    let run = |extra: &[&str]| {
        let (out, report) = support::run_report(
            &[
                &["--input", &format!("input={}", input.display())],
                &["--output", &format!("output={}", output.display())][..],
                extra,
                &[script.to_str().unwrap(), "--", "x", "y"][..],
            ]
            .concat(),
            b"",
        );
        (out, report)
    };
    let (out, report) = run(&["--no-result-cache"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "counted 8\n");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    assert_eq!(
        result,
        serde_json::json!({"words": 8, "top": [["the", 3], ["and", 2]], "args": ["x", "y"]})
    );
    // The script is an input of the run: its content's etag is recorded for a replay (and
    // keys the result cache).
    let script_input = report["replay"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "script")
        .unwrap()
        .clone();
    assert_eq!(
        script_input["etag"],
        blake3::hash(&std::fs::read(&script).unwrap())
            .to_hex()
            .as_str()
    );
    assert_eq!(report["channels"][3]["name"], "script");
    // Deterministic: a second run gives the same etags and fuel.
    std::fs::remove_file(&output).unwrap();
    let (_, again) = run(&["--no-result-cache"]);
    assert_eq!(report["fuel_used"], again["fuel_used"]);
    assert_eq!(
        support::channel(&report, "output")["etag"],
        support::channel(&again, "output")["etag"]
    );
    assert_eq!(listing(dir.path()), ["count.py", "in.txt", "out.json"]);
}

#[test]
fn a_javascript_one_liner_reads_a_channel_and_writes_an_output() {
    require_interpreters();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "3 4 5\n").unwrap();
    let output = dir.path().join("sum.txt");
    let code = r#"const n = std.loadFile("/dev/input").trim().split(" ").map(Number); const f = std.open("/dev/output", "w"); f.puts(String(n.reduce((a, b) => a + b, 0))); f.close(); console.log("done")"#;
    let (out, report) = support::run_report(
        &[
            "--no-result-cache",
            "--input",
            &format!("input={}", input.display()),
            "--output",
            &format!("output={}", output.display()),
            "--interpreter",
            "quickjs",
            "--eval",
            code,
        ],
        b"",
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "done\n");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "12");
    assert_eq!(report["state"]["kind"], "ok");
}

#[test]
fn a_script_of_an_uninstalled_language_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("x.py");
    std::fs::write(&script, "print(1)").unwrap();
    let mut cmd = support::zvm();
    cmd.env("ZVM_DATA_DIR", dir.path()).arg("run").arg(&script);
    let out = support::run_cmd(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no interpreter for `.py` scripts is installed")
            && stderr(&out).contains("scripts/install-interpreters"),
        "{}",
        stderr(&out)
    );
}

/// Runs `script` (reading /dev/input, writing /dev/output) with `--snapshot when`; returns
/// stdout, the output file and the report.
fn run_script(
    dir: &std::path::Path,
    script: &std::path::Path,
    when: &str,
) -> (String, String, serde_json::Value) {
    let input = dir.join("in.txt");
    let output = dir.join(format!("out-{when}.txt"));
    let (out, report) = support::run_report(
        &[
            "--no-result-cache",
            "--snapshot",
            when,
            "--input",
            &format!("input={}", input.display()),
            "--output",
            &format!("output={}", output.display()),
            script.to_str().unwrap(),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{when}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let written = std::fs::read_to_string(&output).unwrap();
    (stdout(&out), written, report)
}

/// The issue's proof: Python and JavaScript started from a pre-initialised snapshot give the
/// same outputs and etags as a plain start of the same interpreter.
#[test]
fn scripts_from_snapshots_match_plain_starts() {
    require_interpreters();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "3 4 5\nsix seven\n").unwrap();
    let py = dir.path().join("sum.py");
    std::fs::write(
        &py,
        "import json, random, time\n\
         words = open('/dev/input').read().split()\n\
         nums = [int(w) for w in words if w.isdigit()]\n\
         with open('/dev/output', 'w') as f:\n    json.dump({'sum': sum(nums), 'words': len(words), 'r': random.random(), 't': time.time()}, f)\n\
         print('python', sum(nums), hash('zvm') == hash('zvm'))\n",
    )
    .unwrap();
    let js = dir.path().join("sum.js");
    std::fs::write(
        &js,
        "const w = std.loadFile('/dev/input').trim().split(/\\s+/);\n\
         const n = w.map(Number).filter(x => !isNaN(x));\n\
         const f = std.open('/dev/output', 'w'); f.puts(JSON.stringify({sum: n.reduce((a, b) => a + b, 0), words: w.length, r: Math.random(), t: Date.now()})); f.close();\n\
         console.log('quickjs', n.length);\n",
    )
    .unwrap();
    // The snapshot is made with another script (of another size: CPython stats its script
    // before opening it), then used for this one.
    let warm_py = dir.path().join("warm.py");
    std::fs::write(&warm_py, "print('warming up')\n").unwrap();
    let warm_js = dir.path().join("warm.js");
    std::fs::write(&warm_js, "console.log('warming up');\n").unwrap();
    for (script, warm, expect) in [
        (&js, &warm_js, "quickjs 3\n"),
        (&py, &warm_py, "python 12 True\n"),
    ] {
        let (plain_out, plain_file, plain) = run_script(dir.path(), script, "never");
        assert_eq!(plain_out, expect);
        assert!(plain.get("snapshot").is_none());
        let (warm_out, _, made) = run_script(dir.path(), warm, "make");
        assert_eq!(warm_out, "warming up\n");
        let hash = made["snapshot"]["hash"].as_str().expect("made a snapshot");
        let (snap_out, snap_file, snap) = run_script(dir.path(), script, "auto");
        assert_eq!(snap["snapshot"]["hash"], hash, "{snap}");
        assert_eq!(snap_out, plain_out);
        assert_eq!(snap_file, plain_file);
        for name in ["stdout", "stderr", "output", "script"] {
            assert_eq!(
                support::channel(&snap, name)["etag"],
                support::channel(&plain, name)["etag"],
                "{}: channel {name}",
                script.display()
            );
        }
    }
}
