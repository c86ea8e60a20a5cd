//! Job descriptions: snapshot tests of every error (each `tests/job_snapshots/<case>.toml`,
//! `.json` or `.map` must fail with exactly `<case>.err`; `ok-*` cases must parse), and the
//! resolved form of good jobs in TOML, JSON and ZeroCloud's system maps.
//! `ZVM_BLESS=1 cargo test` rewrites the `.err` files; review the diff before committing it.
//!
//! The origin passed to the parser is the fixed relative path `job_snapshots/<case>`, so
//! messages do not depend on where the repository is checked out; the base directory is the
//! real one, since wildcards are matched against `job_snapshots/data/`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use zvm_manifest::{
    AccessMode, ChannelSource, Job, MAX_MEMBERS, MAX_PIPES, MountSource, StdStream, canonical_toml,
    parse_job_file, parse_job_json, parse_job_toml, parse_toml,
};

/// Fewer cases than this means the directory was emptied or renamed by mistake.
const MIN_ERROR_CASES: usize = 60;

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/job_snapshots")
}

fn parse_case(file: &Path) -> Result<Job, zvm_manifest::Error> {
    let text = fs::read_to_string(file).unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let origin = Path::new("job_snapshots").join(name);
    let base = snapshot_dir();
    match file.extension().and_then(|e| e.to_str()) {
        Some("toml") => parse_job_toml(&text, &origin, &base),
        _ => parse_job_json(&text, &origin, &base),
    }
}

fn ok_case(name: &str) -> Job {
    parse_case(&snapshot_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
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
        if !matches!(ext, "toml" | "json" | "map") {
            continue;
        }
        inputs.insert(path.with_extension(""));
        let stem = path.file_name().unwrap().to_str().unwrap().to_string();
        let err_file = path.with_extension("err");
        let result = parse_case(&path);
        if stem.starts_with("ok-") {
            if let Err(e) = result {
                failures.push(format!("{stem}: expected to parse, got: {e}"));
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
    // A .err file whose input was deleted or renamed would otherwise rot unnoticed; two
    // inputs with one stem would share one.
    let mut stems = BTreeSet::new();
    for entry in fs::read_dir(snapshot_dir()).unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("err") if !inputs.contains(&path.with_extension("")) => {
                failures.push(format!("{}: .err without an input", path.display()));
            }
            Some("toml" | "json" | "map") if !stems.insert(path.with_extension("")) => {
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                if !stem.starts_with("ok-") {
                    failures.push(format!("{}: two inputs share one .err", path.display()));
                }
            }
            _ => {}
        }
    }
    assert!(
        error_cases >= MIN_ERROR_CASES,
        "only {error_cases} error cases in {}",
        snapshot_dir().display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The word count of `docs/jobs.md` in the three syntaxes resolves to one and the same job.
#[test]
fn toml_json_and_zerocloud_give_the_same_job() {
    let toml = ok_case("ok-wordcount.toml");
    let json = ok_case("ok-wordcount.json");
    let map = ok_case("ok-wordcount.map");
    assert_eq!(toml, json);
    assert_eq!(toml, map);

    let base = snapshot_dir();
    assert_eq!(toml.name, "ok-wordcount");
    assert_eq!(toml.retries, zvm_manifest::DEFAULT_RETRIES);
    // No group says `replicas` (and a system map cannot): every member runs once.
    assert_eq!(toml.replicas, [1; 5]);
    let names: Vec<&str> = toml.members.iter().map(|m| m.name.as_str()).collect();
    // data/ holds a.txt, b.txt, c.txt, .hidden.txt (hidden), notes.md and dir.txt/ (a
    // directory): three mappers, in the byte order of what the `*` matched.
    assert_eq!(names, ["map-1", "map-2", "map-3", "reduce-1", "reduce-2"]);
    for (m, part) in toml.members[..3].iter().zip(["a", "b", "c"]) {
        assert_eq!(m.group, "map");
        let man = &m.manifest;
        assert_eq!(man.argv0, "mapper.wasm");
        assert_eq!(man.args, ["-v"]);
        assert_eq!(man.env.get("LANG").map(String::as_str), Some("C"));
        assert_eq!(
            man.channel("stdin").unwrap().source,
            ChannelSource::File(base.join(format!("data/{part}.txt")))
        );
        assert_eq!(
            man.channel("stdout").unwrap().source,
            ChannelSource::File(base.join(format!("out/{part}.counts")))
        );
        assert_eq!(
            man.channel("stderr").unwrap().source,
            ChannelSource::Stdio(StdStream::Stderr)
        );
    }
    for (m, i) in toml.members[3..].iter().zip(1..) {
        let out = m.manifest.channel("output").unwrap();
        assert_eq!(
            out.source,
            ChannelSource::File(base.join(format!("out/total-{i}.txt")))
        );
        assert_eq!(out.mode, AccessMode::RandomWrite);
        assert_eq!(m.manifest.argv0, "reducer.wasm");
    }
    assert_eq!(toml.pipes.len(), 6);
}

/// `replicas` is per group and lands per member, in member order, in both syntaxes; a group
/// that runs once may still have pipes.
#[test]
fn replicas_reach_every_member() {
    let toml = ok_case("ok-replicas.toml");
    let json = ok_case("ok-replicas.json");
    assert_eq!(toml, json);
    let names: Vec<&str> = toml.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["sort-1", "sort-2", "split", "count"]);
    assert_eq!(toml.replicas, [3, 3, 1, 1]);
    assert_eq!(toml.pipes.len(), 1);
    // The key is the job's, not the members' manifests'.
    let once = parse_job_toml(
        &fs::read_to_string(snapshot_dir().join("ok-replicas.toml"))
            .unwrap()
            .replace("replicas = 3", "replicas = 1"),
        Path::new("job_snapshots/ok-replicas.toml"),
        &snapshot_dir(),
    )
    .unwrap();
    assert_eq!(once.replicas, [1; 4]);
    assert_eq!(once.members, toml.members);
    for n in 1..=zvm_manifest::MAX_REPLICAS {
        let job = parse_job_json(
            &format!(
                r#"{{"version": 1, "group": [{{"name": "g", "program": "g.wasm", "replicas": {n}}}]}}"#
            ),
            Path::new("r.json"),
            &snapshot_dir(),
        )
        .unwrap();
        assert_eq!(job.replicas, [n]);
    }
    // A job built in code runs each member once.
    let built =
        Job::from_members("b", toml.members.clone(), &[(0, 2)], Default::default()).unwrap();
    assert_eq!(built.replicas, [1; 4]);
}

#[test]
fn all_to_all_connect() {
    let dir = tempfile::tempdir().unwrap();
    let job = parse_job_toml(
        "version = 1\n\
         [[group]]\nname = \"map\"\nprogram = \"m.wasm\"\ncount = 3\nconnect = [\"reduce\"]\n\
         [[group]]\nname = \"reduce\"\nprogram = \"r.wasm\"\ncount = 2\n",
        Path::new("mr.toml"),
        dir.path(),
    )
    .unwrap();
    // 3 mappers × 2 reducers, ordered by writer, then reader.
    let pairs: Vec<(usize, usize)> = job.pipes.iter().map(|p| (p.from, p.to)).collect();
    assert_eq!(pairs, [(0, 3), (0, 4), (1, 3), (1, 4), (2, 3), (2, 4)]);
    for (i, p) in job.pipes.iter().enumerate() {
        assert_eq!(p.writer.as_str(), format!("out/{}", job.members[p.to].name));
        assert_eq!(
            p.reader.as_str(),
            format!("in/{}", job.members[p.from].name)
        );
        // Both ends are channels naming this pipe, with the right direction.
        let w = job.members[p.from]
            .manifest
            .channel(p.writer.as_str())
            .unwrap();
        assert_eq!(w.source, ChannelSource::Pipe(i as u32));
        assert_eq!(w.mode, AccessMode::SequentialWrite);
        let r = job.members[p.to]
            .manifest
            .channel(p.reader.as_str())
            .unwrap();
        assert_eq!(r.source, ChannelSource::Pipe(i as u32));
        assert_eq!(r.mode, AccessMode::SequentialRead);
    }
    let channels = |m: usize| -> Vec<String> {
        job.members[m].manifest.channels[3..]
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    };
    for m in 0..3 {
        assert_eq!(channels(m), ["out/reduce-1", "out/reduce-2"]);
    }
    for m in 3..5 {
        assert_eq!(channels(m), ["in/map-1", "in/map-2", "in/map-3"]);
    }
    for m in &job.members {
        assert_eq!(m.manifest.check(), Ok(()));
    }
}

#[test]
fn chains_and_fan_in_keep_the_graph_order() {
    let dir = tempfile::tempdir().unwrap();
    // a → b, a → c, b → c: a diamond without a cycle.
    let job = parse_job_toml(
        "version = 1\n\
         [[group]]\nname = \"a\"\nprogram = \"a.wasm\"\nconnect = [\"c\", \"b\"]\n\
         [[group]]\nname = \"b\"\nprogram = \"b.wasm\"\nconnect = [\"c\"]\n\
         [[group]]\nname = \"c\"\nprogram = \"c.wasm\"\n",
        Path::new("d.toml"),
        dir.path(),
    )
    .unwrap();
    let names: Vec<&str> = job.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let pairs: Vec<(usize, usize)> = job.pipes.iter().map(|p| (p.from, p.to)).collect();
    assert_eq!(pairs, [(0, 1), (0, 2), (1, 2)]);
    let c: Vec<&str> = job.members[2].manifest.channels[3..]
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(c, ["in/a", "in/b"]);
}

#[test]
fn zerocloud_defaults() {
    let job = ok_case("ok-zerocloud-defaults.map");
    let base = snapshot_dir();
    let names: Vec<&str> = job.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["sort-1", "sort-2"]);
    for m in &job.members {
        let man = &m.manifest;
        // Without `exec.name`, argv[0] is the member's name, as in ZeroCloud.
        assert_eq!(man.argv0, m.name);
        assert_eq!(man.args, ["-n", "-r"]);
        let input = man.channel("input").unwrap();
        assert_eq!(input.mode, AccessMode::RandomRead);
        assert_eq!(input.source, ChannelSource::File(base.join("data/a.txt")));
        let output = man.channel("output").unwrap();
        assert_eq!(output.source, ChannelSource::Stdio(StdStream::Stdout));
        assert_eq!(output.mode, AccessMode::SequentialWrite);
        assert_eq!(man.channel("script").unwrap().mode, AccessMode::RandomRead);
        assert_eq!(man.mounts.len(), 1);
        assert_eq!(man.mounts[0].guest, "/");
        assert_eq!(
            man.mounts[0].source,
            MountSource::Image(base.join("lib.tar"))
        );
        // Undeclared standard streams stay the host's.
        assert_eq!(
            man.channel("stdin").unwrap().source,
            ChannelSource::Stdio(StdStream::Stdin)
        );
    }
}

#[test]
fn minimal_job_is_one_default_vm() {
    let job = ok_case("ok-minimal.toml");
    assert_eq!(job.name, "ok-minimal");
    assert_eq!(job.members.len(), 1);
    assert!(job.pipes.is_empty());
    let m = &job.members[0];
    assert_eq!((m.name.as_str(), m.group.as_str()), ("hello", "hello"));
    let mut expected = zvm_manifest::Manifest::for_program(snapshot_dir().join("hello.wasm"));
    expected.argv0 = "hello.wasm".into();
    for (k, v) in [
        ("ZVM_JOB_MEMBER", "hello"),
        ("ZVM_JOB_GROUP", "hello"),
        ("ZVM_JOB_INDEX", "1"),
        ("ZVM_JOB_COUNT", "1"),
    ] {
        expected.env.insert(k.into(), v.into());
    }
    assert_eq!(m.manifest, expected);
}

#[test]
fn every_group_key_reaches_the_members() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("in")).unwrap();
    for f in ["x.csv", "y.csv"] {
        fs::write(dir.path().join("in").join(f), f).unwrap();
    }
    let job = parse_job_toml(
        r#"version = 1
name = "all.keys"
retries = 0

[[group]]
name = "g"
program = { path = "g.wasm", hash = "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" }
replicas = 2
args = ["a"]
env = { K = "v" }
seed = 7
memory_etag = true

[group.limits]
memory = "64MiB"
fuel = 1000

[group.clock]
start = 2024-01-01T00:00:00Z
step = "1ms"

[[group.channel]]
name = "rows"
path = "in/*.csv"
mode = "random-read"
reads = 10

[[group.channel]]
name = "log"
path = "logs/*.log"
mode = "append"

[[group.mount]]
path = "/lib"
image = "lib.tar"

[[group.export]]
path = "/out"
tar = "out/*.tar"
"#,
        Path::new("keys.toml"),
        dir.path(),
    )
    .unwrap();
    assert_eq!(job.name, "all.keys");
    assert_eq!(job.retries, 0);
    assert_eq!(job.members.len(), 2);
    assert_eq!(job.replicas, [2, 2]);
    for (m, part) in job.members.iter().zip(["x", "y"]) {
        let man = &m.manifest;
        assert!(man.program.hash.is_some());
        assert_eq!(man.args, ["a"]);
        assert_eq!(man.seed, 7);
        assert!(man.memory_etag);
        assert_eq!(man.limits.memory, 64 << 20);
        assert_eq!(man.limits.fuel, 1000);
        assert_eq!(man.clock.step_ns, 1_000_000);
        let rows = man.channel("rows").unwrap();
        assert_eq!(rows.quota.reads, 10);
        assert_eq!(
            rows.source,
            ChannelSource::File(dir.path().join(format!("in/{part}.csv")))
        );
        assert_eq!(
            man.channel("log").unwrap().source,
            ChannelSource::File(dir.path().join(format!("logs/{part}.log")))
        );
        assert_eq!(
            man.exports[0].path,
            dir.path().join(format!("out/{part}.tar"))
        );
        assert_eq!(
            man.mounts[0].source,
            MountSource::Image(dir.path().join("lib.tar"))
        );
    }
}

#[test]
fn parse_job_file_detects_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        fs::write(&p, text).unwrap();
        p
    };
    let toml = write(
        "job",
        "version = 1\n[[group]]\nname = \"g\"\nprogram = \"g.wasm\"\n",
    );
    let json = write(
        "job.json",
        "{\"version\": 1, \"group\": [{\"name\": \"g\", \"program\": \"g.wasm\"}]}",
    );
    let map = write(
        "system.map",
        "\u{feff}[{\"name\": \"g\", \"exec\": {\"path\": \"g.wasm\", \"name\": \"g.wasm\"}}]",
    );
    let a = parse_job_file(&toml).unwrap();
    let b = parse_job_file(&json).unwrap();
    let c = parse_job_file(&map).unwrap();
    assert_eq!(a.name, "job");
    assert_eq!(c.name, "system");
    assert_eq!(a.members, b.members);
    assert_eq!(a.members, c.members);
    assert_eq!(
        a.members[0].manifest.program.path,
        dir.path().join("g.wasm")
    );

    // JSON errors are `Error::Json`, TOML ones `Error::Toml`.
    let bad = write("bad.json", "{\"version\": 1, \"group\": []}");
    assert!(matches!(
        parse_job_file(&bad),
        Err(zvm_manifest::Error::Json { line: 1, .. })
    ));
    let missing = dir.path().join("nope.toml");
    let e = parse_job_file(&missing).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot read job `{}`", missing.display())
    );
}

#[test]
fn count_without_wildcard_numbers_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let job = parse_job_toml(
        "version = 1\n[[group]]\nname = \"w\"\nprogram = \"w.wasm\"\ncount = 3\n\
         [[group.channel]]\nname = \"stdout\"\npath = \"out/part-*.txt\"\nmode = \"write\"\n",
        Path::new("w.toml"),
        dir.path(),
    )
    .unwrap();
    let outs: Vec<PathBuf> = job
        .members
        .iter()
        .map(|m| match &m.manifest.channel("stdout").unwrap().source {
            ChannelSource::File(p) => p.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("out/part-{i}.txt")))
        .collect();
    assert_eq!(outs, expected);
}

#[test]
fn limits_are_enforced_at_their_edges() {
    let dir = tempfile::tempdir().unwrap();
    let job = |text: &str| parse_job_toml(text, Path::new("l.toml"), dir.path());
    let exactly = format!(
        "version = 1\n[[group]]\nname = \"g\"\nprogram = \"g.wasm\"\ncount = {MAX_MEMBERS}\n"
    );
    assert_eq!(job(&exactly).unwrap().members.len(), MAX_MEMBERS);
    // 250 × 400 = MAX_PIPES exactly.
    assert_eq!(MAX_PIPES, 250 * 400);
    let pipes = job(
        "version = 1\n[[group]]\nname = \"a\"\nprogram = \"a.wasm\"\ncount = 250\nconnect = [\"b\"]\n\
         [[group]]\nname = \"b\"\nprogram = \"b.wasm\"\ncount = 400\n",
    )
    .unwrap();
    assert_eq!(pipes.pipes.len(), MAX_PIPES);
}

/// A member's canonical form names its pipes, and that text is not a VM manifest.
#[test]
fn canonical_form_of_members_with_pipes() {
    let job = ok_case("ok-wordcount.toml");
    let text = canonical_toml(&job.members[0].manifest);
    assert!(
        text.contains("\n[[channel]]\nmode = \"write\"\nname = \"out/reduce-1\"\npipe = 0\n"),
        "{text}"
    );
    let e = parse_toml(&text, Path::new("member.toml")).unwrap_err();
    assert!(
        e.to_string().ends_with(
            "`pipe` in `[[channel]]`: pipes are declared by jobs (`connect`), not by VM manifests"
        ),
        "{e}"
    );
    // Members without pipes are ordinary manifests and round-trip.
    let job = ok_case("ok-zerocloud-defaults.map");
    let m = &job.members[0].manifest;
    assert_eq!(
        parse_toml(&canonical_toml(m), Path::new("c.toml")).unwrap(),
        *m
    );
}

/// Every complete example in docs/jobs.md (a ```toml or ```json block starting with
/// `version = 1` or `{`, or a system map starting with `[`) must resolve, against a directory
/// holding the files its wildcards expect.
#[test]
fn documentation_examples_parse() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/jobs.md");
    let text = fs::read_to_string(&doc).unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("data")).unwrap();
    for f in ["a.txt", "b.txt", "c.txt"] {
        fs::write(dir.path().join("data").join(f), f).unwrap();
    }
    let mut examples = 0;
    let mut jobs = Vec::new();
    for (lang, block) in code_blocks(&text) {
        let first = block
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .unwrap_or("");
        let result = match lang.as_str() {
            "toml" if first.starts_with("version = 1") => {
                parse_job_toml(&block, Path::new("docs/example.toml"), dir.path())
            }
            "json" if first.starts_with('{') || first.starts_with('[') => {
                parse_job_json(&block, Path::new("docs/example.json"), dir.path())
            }
            _ => continue,
        };
        examples += 1;
        match result {
            Ok(job) => jobs.push(job),
            Err(e) => panic!("example {examples} of docs/jobs.md does not parse: {e}\n{block}"),
        }
    }
    assert!(examples >= 3, "found only {examples} complete examples");
    // The page says its TOML and JSON examples are the same job.
    assert_eq!(jobs[0], jobs[1]);
    assert_eq!(jobs[0].members.len(), 5);
    assert_eq!(jobs[2].pipes, jobs[0].pipes);
}

fn code_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let Some(nl) = after.find('\n') else { break };
        let lang = after[..nl].trim().to_string();
        let body = &after[nl + 1..];
        let end = body.find("```").expect("unclosed code block");
        out.push((lang, body[..end].to_string()));
        rest = &body[end + 3..];
    }
    out
}

/// Job text comes from users and, through the gateway, from anyone: the three parsers must
/// never panic, whatever the bytes, and every error must name the file. The seeds are the
/// snapshot cases, mutated by byte edits and by splicing in pieces of the three syntaxes.
mod never_panic {
    use super::*;
    use proptest::prelude::*;

    /// Cases per property: enough to reach past the first syntax error in most seeds, few
    /// enough for a few seconds in a debug build.
    const CASES: u32 = 300;

    const TOKENS: &[&str] = &[
        "[[group]]\n",
        "[[group.channel]]\n",
        "[[group.mount]]\n",
        "[[group.export]]\n",
        "[group.limits]\n",
        "name = \"g\"\n",
        "name = \"map-1\"\n",
        "program = \"p.wasm\"\n",
        "count = 0\n",
        "count = 10000\n",
        "count = 18446744073709551615\n",
        "connect = [\"map\"]\n",
        "connect = [\"a\", \"b\"]\n",
        "path = \"data/*.txt\"\n",
        "path = \"data/*\"\n",
        "path = \"*\"\n",
        "path = \"out/*.txt\"\n",
        "tar = \"*.tar\"\n",
        "mode = \"read\"\n",
        "mode = \"write\"\n",
        "mode = \"read-write\"\n",
        "writable = true\n",
        "pipe = 1\n",
        "commit = \"never\"\n",
        "retries = 99\n",
        "replicas = 3\n",
        "replicas = 0\n",
        "\"replicas\": 2",
        "\"group\": [",
        "\"connect\": [\"map\"]",
        "\"count\": 3",
        "\"path\": \"data/*.txt\"",
        "{\"name\": \"stdin\", \"path\": \"data/*.txt\"}",
        "{\"device\": \"image\", \"path\": \"x.tar\"}",
        "\"exec\": {\"path\": \"swift://a/b\"}",
        "\"file_list\": []",
        "null",
        "\\ud800",
        "\\u00e9",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "*",
        "é",
        "\n",
    ];

    fn seeds() -> Vec<(PathBuf, String)> {
        let mut seeds: Vec<(PathBuf, String)> = fs::read_dir(snapshot_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "toml" || e == "json" || e == "map")
            })
            .map(|p| {
                let text = fs::read_to_string(&p).unwrap();
                (p, text)
            })
            .collect();
        seeds.sort();
        seeds
    }

    #[derive(Debug, Clone)]
    enum Edit {
        Flip(usize, u8),
        Token(usize, usize),
        Delete(usize, usize),
        Truncate(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let ix = any::<usize>();
        prop_oneof![
            1 => (ix, any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
            3 => (ix, 0..TOKENS.len()).prop_map(|(i, t)| Edit::Token(i, t)),
            1 => (ix, 1usize..12).prop_map(|(i, n)| Edit::Delete(i, n)),
            1 => ix.prop_map(Edit::Truncate),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, e: &Edit) {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = *b;
            }
            Edit::Flip(..) => {}
            Edit::Token(i, t) => {
                let i = at(*i, bytes.len());
                bytes.splice(i..i, TOKENS[*t].bytes());
            }
            Edit::Delete(i, n) => {
                let i = at(*i, bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Edit::Truncate(i) => {
                let i = at(*i, bytes.len());
                bytes.truncate(i);
            }
        }
    }

    fn check(text: &str, ext: &str) -> Result<(), TestCaseError> {
        let origin = PathBuf::from(format!("fuzz/job.{ext}"));
        let base = snapshot_dir();
        for result in [
            parse_job_toml(text, &origin, &base),
            parse_job_json(text, &origin, &base),
        ] {
            match result {
                Ok(job) => {
                    prop_assert!(!job.members.is_empty());
                    for m in &job.members {
                        prop_assert_eq!(m.manifest.check(), Ok(()));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    prop_assert!(message.starts_with("fuzz/job."), "{}", message);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_strings(text in any::<String>()) {
            check(&text, "toml")?;
        }

        #[test]
        fn mutated_cases(seed in 0usize..1000, edits in proptest::collection::vec(edit(), 1..6)) {
            let seeds = seeds();
            let (path, text) = &seeds[seed % seeds.len()];
            let mut bytes = text.clone().into_bytes();
            for e in &edits {
                apply(&mut bytes, e);
            }
            let text = String::from_utf8_lossy(&bytes);
            let ext = path.extension().unwrap().to_str().unwrap();
            check(&text, ext)?;
        }
    }
}
