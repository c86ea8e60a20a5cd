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
