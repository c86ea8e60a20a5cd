//! Snapshot tests of manifest error messages: every `tests/snapshots/<case>.toml` (or
//! `.legacy`) is parsed, and the error must equal `<case>.err` byte for byte. Cases named
//! `ok-*` must parse and have no `.err`. `ZVM_BLESS=1 cargo test` rewrites the `.err` files;
//! review the diff before committing it.
//!
//! The origin passed to the parser is the fixed relative path `snapshots/<case>`, so messages
//! do not depend on where the repository is checked out.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zvm_manifest::{
    AccessMode, ChannelSource, CommitPolicy, ContentHash, Export, Manifest, MountSource, Quota,
    StdStream, canonical_toml, parse_file, parse_legacy, parse_toml,
};

/// Fewer cases than this means the directory was emptied or renamed by mistake.
const MIN_ERROR_CASES: usize = 25;

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// Parses one case file the way its extension says, with the fixed origin.
fn parse_case(file: &Path) -> Result<Manifest, zvm_manifest::Error> {
    let text = fs::read_to_string(file).unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let origin = Path::new("snapshots").join(name);
    match file.extension().and_then(|e| e.to_str()) {
        Some("legacy") => parse_legacy(&text, &origin),
        _ => parse_toml(&text, &origin),
    }
}

#[test]
fn error_messages_match_snapshots() {
    let bless = std::env::var_os("ZVM_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut error_cases = 0;
    let mut inputs = BTreeSet::new();
    for entry in fs::read_dir(snapshot_dir()).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext != "toml" && ext != "legacy" {
            continue;
        }
        inputs.insert(path.with_extension(""));
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let err_file = path.with_extension("err");
        let result = parse_case(&path);
        if stem.starts_with("ok-") {
            if let Err(e) = result {
                failures.push(format!("{stem}: expected to parse, got: {e}"));
            }
            if err_file.exists() {
                failures.push(format!("{stem}: an ok case must not have a .err file"));
            }
            continue;
        }
        error_cases += 1;
        let actual = match result {
            Ok(_) => {
                failures.push(format!("{stem}: parsed, but an error was expected"));
                continue;
            }
            Err(e) => format!("{e}\n"),
        };
        if bless {
            fs::write(&err_file, &actual).unwrap();
            continue;
        }
        match fs::read_to_string(&err_file) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{stem}:\n  expected: {}\n  actual:   {}",
                expected.trim_end(),
                actual.trim_end()
            )),
            Err(_) => failures.push(format!(
                "{stem}: no .err file; run with ZVM_BLESS=1 to create it. actual: {}",
                actual.trim_end()
            )),
        }
    }
    // A .err file whose input was deleted or renamed would otherwise rot unnoticed.
    for entry in fs::read_dir(snapshot_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "err")
            && !inputs.contains(&path.with_extension(""))
        {
            failures.push(format!("{}: .err without an input", path.display()));
        }
    }
    assert!(
        error_cases >= MIN_ERROR_CASES,
        "only {error_cases} error cases in {}",
        snapshot_dir().display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn ok_case(name: &str) -> Manifest {
    parse_case(&snapshot_dir().join(name)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn minimal_manifest_is_all_defaults() {
    let m = ok_case("ok-minimal.toml");
    assert_eq!(m, Manifest::for_program("snapshots/hello.wasm"));
    assert_eq!(m.argv0, "hello.wasm");
}

#[test]
fn full_manifest_resolves_every_key() {
    let m = ok_case("ok-full.toml");
    assert_eq!(m.program.path, Path::new("snapshots/bin/app.wasm"));
    assert_eq!(
        m.program.hash,
        ContentHash::parse(
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        )
    );
    assert_eq!(m.argv0, "app");
    assert_eq!(m.args, ["--verbose", "/dev/input"]);
    assert_eq!(m.env.get("LANG").map(String::as_str), Some("C"));
    assert_eq!(m.env.len(), 2);
    assert_eq!(m.seed, 42);
    assert!(m.memory_etag);
    assert_eq!(m.commit, CommitPolicy::Always);

    assert_eq!(m.limits.memory, 64 << 20);
    assert_eq!(m.limits.fuel, 1_000_000_000);
    assert_eq!(m.limits.timeout, Duration::from_millis(1500));
    assert_eq!(m.limits.scratch, 16 << 20);
    assert_eq!(m.limits.open_files, 64);
    assert_eq!(m.clock.start_ns, 1_704_067_200_000_000_000);
    assert_eq!(m.clock.step_ns, 1_000_000);

    let names: Vec<&str> = m.channels.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "stdin",
            "stdout",
            "stderr",
            "input",
            "output",
            "log",
            "out/reduce-1"
        ]
    );
    let stdin = m.channel("stdin").unwrap();
    assert_eq!(stdin.source, ChannelSource::Null);
    assert_eq!(stdin.quota.reads, 0);
    assert_eq!(
        m.channel("stdout").unwrap().source,
        ChannelSource::Stdio(StdStream::Stdout)
    );

    let input = m.channel("input").unwrap();
    assert_eq!(
        input.source,
        ChannelSource::File("snapshots/data/in.txt".into())
    );
    assert_eq!(input.mode, AccessMode::RandomRead);
    assert_eq!(input.etag, m.program.hash);
    assert_eq!(
        input.quota,
        Quota {
            reads: 1000,
            read_bytes: 10_000_000,
            ..Quota::default()
        }
    );
    let output = m.channel("output").unwrap();
    assert_eq!(
        output.source,
        ChannelSource::File("/var/out/result.bin".into())
    );
    assert_eq!(output.mode, AccessMode::RandomWrite);
    assert_eq!(output.quota.writes, 100);
    assert_eq!(output.quota.write_bytes, u64::MAX);
    let log = m.channel("log").unwrap();
    assert_eq!(log.source, ChannelSource::Stdio(StdStream::Stderr));
    assert_eq!(log.mode, AccessMode::Append);
    assert!(
        m.channels
            .iter()
            .all(|c| c.name.as_str() == "input" || c.etag.is_none())
    );
    assert_eq!(
        m.channel("out/reduce-1").unwrap().mode,
        AccessMode::ReadWrite
    );

    assert_eq!(m.mounts.len(), 3);
    assert_eq!(m.mounts[0].guest, "/lib");
    assert_eq!(
        m.mounts[0].source,
        MountSource::Image("snapshots/python-lib.tar".into())
    );
    assert_eq!(m.mounts[1].guest, "work");
    assert_eq!(m.mounts[1].guest_abs(), "/work");
    assert_eq!(
        m.mounts[1].source,
        MountSource::Dir {
            path: "/tmp/work".into(),
            writable: true
        }
    );
    assert_eq!(
        m.mounts[2].source,
        MountSource::Dir {
            path: "snapshots/root".into(),
            writable: false
        }
    );

    assert_eq!(
        m.exports,
        [
            Export {
                guest: "/out".into(),
                path: "snapshots/out.tar".into()
            },
            Export {
                guest: "/var/log".into(),
                path: "/var/out/logs.tar".into()
            }
        ]
    );
}

#[test]
fn defaults_of_the_new_keys() {
    let m = ok_case("ok-wc.toml");
    assert_eq!(m.commit, CommitPolicy::OnSuccess);
    assert!(m.exports.is_empty());
    assert!(m.channels.iter().all(|c| c.etag.is_none()));
    let legacy = ok_case("ok-zerovm.legacy");
    assert_eq!(legacy.commit, CommitPolicy::OnSuccess);
    assert!(legacy.exports.is_empty());
    assert!(legacy.channels.iter().all(|c| c.etag.is_none()));
}

#[test]
fn dry_run_with_pins_and_nested_exports() {
    let m = ok_case("ok-commit-never.toml");
    assert_eq!(m.commit, CommitPolicy::Never);
    assert!(!m.commit.commits(true));
    assert_eq!(
        m.channel("input").unwrap().etag.map(|h| h.hex()).as_deref(),
        Some("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
    );
    let guests: Vec<&str> = m.exports.iter().map(|e| e.guest.as_str()).collect();
    assert_eq!(guests, ["/results", "/results/logs"]);
    assert_eq!(m.exports[0].path, Path::new("snapshots/results.tar"));
}

#[test]
fn documented_example_resolves() {
    let m = ok_case("ok-wc.toml");
    assert_eq!(m.argv0, "wc.wasm");
    assert_eq!(m.args, ["/dev/input"]);
    assert_eq!(m.limits.memory, 16 << 20);
    assert_eq!(m.limits.timeout, Duration::from_secs(5));
    let input = m.channel("input").unwrap();
    assert_eq!(input.mode, AccessMode::SequentialRead);
    assert_eq!(
        input.source,
        ChannelSource::File("snapshots/input.txt".into())
    );
    let output = m.channel("output").unwrap();
    assert_eq!(output.mode, AccessMode::SequentialWrite);
    assert_eq!(output.quota.write_bytes, 1 << 20);
    assert_eq!(m.channels.len(), 5);
}

#[test]
fn zerovm_manifest_translates() {
    let m = ok_case("ok-zerovm.legacy");
    assert_eq!(m.program.path, Path::new("/opt/zerovm/hello.nexe"));
    assert_eq!(m.argv0, "hello.nexe");
    assert_eq!(m.limits.memory, 4 << 30);
    assert_eq!(m.limits.timeout, Duration::from_secs(50));
    assert!(!m.memory_etag);
    let input = m.channel("input").unwrap();
    assert_eq!(input.mode, AccessMode::RandomRead);
    assert_eq!(input.quota.reads, 100);
    assert_eq!(input.quota.read_bytes, 4096);
    assert_eq!(
        m.channel("stdout").unwrap().source,
        ChannelSource::File("/tmp/hello.stdout.log".into())
    );
}

/// Every complete example in the user documentation (a ```toml block starting with
/// `version = 1`) must parse, so the reference cannot drift from the parser.
#[test]
fn documentation_examples_parse() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/manifest.md");
    let text = fs::read_to_string(&doc).unwrap();
    let mut examples = 0;
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + "```toml\n".len()..];
        let end = body.find("```").expect("unclosed code block");
        let block = &body[..end];
        rest = &body[end + 3..];
        let first = block
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'));
        if first.is_some_and(|l| l.starts_with("version = 1")) {
            examples += 1;
            if let Err(e) = parse_toml(block, Path::new("docs/example.toml")) {
                panic!("example {examples} of docs/manifest.md does not parse: {e}\n{block}");
            }
        }
    }
    assert!(examples >= 2, "found only {examples} complete examples");
}

#[test]
fn parse_file_detects_the_format_and_resolves_paths() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("job.toml");
    fs::write(&toml, "version = 1\nprogram = \"p.wasm\"\n").unwrap();
    let m = parse_file(&toml).unwrap();
    assert_eq!(m.program.path, dir.path().join("p.wasm"));

    let legacy = dir.path().join("job.manifest");
    fs::write(&legacy, "# old\nVersion = 20130611\nProgram = p.nexe\n").unwrap();
    let m = parse_file(&legacy).unwrap();
    assert_eq!(m.program.path, dir.path().join("p.nexe"));

    // A byte order mark does not hide the format.
    let bom = dir.path().join("bom.manifest");
    fs::write(&bom, "\u{feff}Version = 20130611\nProgram = p.nexe\n").unwrap();
    assert_eq!(parse_file(&bom).unwrap().argv0, "p.nexe");

    // A capitalised `Version = 1` reads as legacy, and the error says what was meant.
    let capital = dir.path().join("capital.toml");
    fs::write(&capital, "Version = 1\nprogram = \"p.wasm\"\n").unwrap();
    let e = parse_file(&capital).unwrap_err().to_string();
    assert!(
        e.ends_with("a TOML manifest starts with a lowercase `version = 1`"),
        "{e}"
    );

    // A TOML file whose key happens to be capitalised is still TOML, and says so.
    let odd = dir.path().join("odd.toml");
    fs::write(&odd, "Version = \"x\"\n").unwrap();
    let e = parse_file(&odd).unwrap_err().to_string();
    assert!(
        e.ends_with("odd.toml:1:1: missing `version`, expected `version = 1` as the first key"),
        "{e}"
    );
}

#[test]
fn parse_file_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = parse_file(&missing).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot read manifest `{}`", missing.display())
    );
    let source = std::error::Error::source(&e).expect("the io error is the source");
    assert!(source.to_string().contains("No such file"), "{source}");
}

#[test]
fn canonical_form_of_every_ok_case_round_trips() {
    for name in [
        "ok-minimal.toml",
        "ok-full.toml",
        "ok-wc.toml",
        "ok-commit-never.toml",
        "ok-zerovm.legacy",
    ] {
        let m = ok_case(name);
        let text = canonical_toml(&m);
        // The cases resolve to relative paths; an origin in the root directory leaves them as
        // they are.
        let again = parse_toml(&text, Path::new("canonical.toml"))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(again, m, "{name}:\n{text}");
        assert_eq!(canonical_toml(&again), text, "{name}");
    }
}

#[test]
fn image_mounts_at_one_path_are_layers_in_declaration_order() {
    let m = ok_case("ok-image-layers.toml");
    let lib: Vec<(&str, &MountSource)> = m
        .mounts
        .iter()
        .filter(|mount| mount.guest_abs() == "/lib")
        .map(|mount| (mount.guest.as_str(), &mount.source))
        .collect();
    let image = |p: &str| MountSource::Image(Path::new("snapshots").join(p));
    assert_eq!(
        lib,
        [
            ("/lib", &image("base.tar")),
            ("lib/", &image("update.tar.gz")),
            ("./lib", &image("patch.tgz")),
        ]
    );
    assert_eq!(m.check(), Ok(()));
    let text = canonical_toml(&m);
    let again = parse_toml(&text, Path::new("canonical.toml")).unwrap();
    assert_eq!(again, m, "the layers keep their order:\n{text}");
}
