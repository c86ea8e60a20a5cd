//! Zapps: `zvm pack`, `zvm inspect`, `zvm run app.zapp` end to end for a VM-manifest zapp
//! and a job zapp; reproducible packs; damaged and hostile zapps refused before anything
//! runs; racing unpacks; and the projects of `zvm new` passing their own tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{self, c_guest, stderr, stdout};

/// `zvm` run in `cwd`, with the shared caches of the other tests.
fn zvm_in(cwd: &Path) -> Command {
    let mut c = support::zvm();
    c.current_dir(cwd);
    c
}

fn run_in(cwd: &Path, args: &[&str]) -> Output {
    support::run_cmd(zvm_in(cwd).args(args), b"")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn blake3_hex(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

const WC_TOML: &str = r#"version = 1
program = "bin/wc.wasm"

[[channel]]
name = "input"
path = "input.txt"
mode = "read"

[[channel]]
name = "output"
path = "counts.txt"
mode = "write"
"#;

const WC_ZAPP: &str = r#"version = 1
manifest = "wc.toml"
files = ["README.md", "docs/**/*.md"]

[app]
name = "wc"
version = "1.2.0"
description = "Count the lines, words and bytes of input.txt into counts.txt."

[[arg]]
name = "INPUT"
help = "the file to count, as the guest sees it"
"#;

/// A project directory for a `wc` zapp: the manifest, the program under `bin/`, files the
/// patterns match and files nothing names.
fn wc_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("bin")).unwrap();
    std::fs::create_dir_all(p.join("docs/deep")).unwrap();
    std::fs::copy(c_guest("wc"), p.join("bin/wc.wasm")).unwrap();
    std::fs::write(p.join("wc.toml"), WC_TOML).unwrap();
    std::fs::write(p.join("zapp.toml"), WC_ZAPP).unwrap();
    std::fs::write(p.join("README.md"), "# wc\n").unwrap();
    std::fs::write(p.join("docs/deep/usage.md"), "run it\n").unwrap();
    // Not named by anything: must stay out.
    std::fs::write(p.join("notes.txt"), "private\n").unwrap();
    std::fs::write(p.join("input.txt"), "not packed either\n").unwrap();
    std::fs::write(p.join("docs/.draft.md"), "hidden\n").unwrap();
    dir
}

fn pack(project: &Path, out: &Path) -> Output {
    let o = run_in(project, &["pack", s(project), "-o", s(out)]);
    assert!(o.status.success(), "pack failed: {}", stderr(&o));
    o
}

/// The entries of a zapp as (path, mode, mtime, uid, gid, bytes), in tar order.
type TarEntry = (String, u32, u64, u64, u64, Vec<u8>);

fn entries(zapp: &Path) -> Vec<TarEntry> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(zapp).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut v = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        v.push((
            e.path().unwrap().to_string_lossy().into_owned(),
            h.mode().unwrap(),
            h.mtime().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            bytes,
        ));
    }
    v
}

#[test]
fn a_manifest_zapp_packs_inspects_and_runs_on_the_callers_files() {
    let project = wc_project();
    let work = tempfile::tempdir().unwrap();
    let zapp = work.path().join("wc.zapp");
    let out = pack(project.path(), &zapp);
    let bytes = std::fs::read(&zapp).unwrap();
    let hash = blake3_hex(&bytes);
    assert!(stdout(&out).contains(&hash), "{}", stdout(&out));

    // Exactly what was named, `zapp.toml` first and the rest sorted.
    let names: Vec<String> = entries(&zapp).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "zapp.toml",
            "README.md",
            "bin/wc.wasm",
            "docs/deep/usage.md",
            "wc.toml"
        ]
    );

    // inspect --json: the description, and every file's size and hash from the project.
    let o = run_in(work.path(), &["inspect", "wc.zapp", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["hash"], hash.as_str());
    assert_eq!(j["size"], bytes.len() as u64);
    assert_eq!(j["app"]["name"], "wc");
    assert_eq!(j["app"]["version"], "1.2.0");
    assert_eq!(j["entry"]["kind"], "manifest");
    assert_eq!(j["entry"]["path"], "wc.toml");
    assert_eq!(j["args"][0]["name"], "INPUT");
    let files = j["files"].as_array().unwrap();
    assert_eq!(files.len(), 5);
    for f in files {
        let path = f["path"].as_str().unwrap();
        let content = std::fs::read(project.path().join(path)).unwrap();
        assert_eq!(f["size"], content.len() as u64, "{path}");
        assert_eq!(f["hash"], blake3_hex(&content).as_str(), "{path}");
    }
    // The text form says the same for people.
    let o = run_in(work.path(), &["inspect", "wc.zapp"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needed in [
        "wc 1.2.0",
        "Count the lines",
        &hash,
        "manifest `wc.toml`",
        "INPUT",
        "bin/wc.wasm",
    ] {
        assert!(text.contains(needed), "no `{needed}` in:\n{text}");
    }

    // Run where the caller's input is; the output lands there too.
    std::fs::write(work.path().join("input.txt"), "one two\nthree\n").unwrap();
    let o = run_in(work.path(), &["run", "wc.zapp", "--report", "text"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(work.path().join("counts.txt")).unwrap(),
        "2 3 14\n"
    );
    // Unpacked once, under its hash.
    let cache = support::repo().join("target/zvm-test/cache/zapps");
    let unpacked = cache.join(&hash["blake3:".len()..]);
    assert!(unpacked.join("bin/wc.wasm").is_file());
    assert!(!unpacked.join("notes.txt").exists());

    // Flags bind on top, relative to the caller; arguments replace the manifest's.
    std::fs::write(work.path().join("other.txt"), "a b c d\n").unwrap();
    let o = run_in(
        work.path(),
        &[
            "run",
            "wc.zapp",
            "--input",
            "data=other.txt",
            "--output",
            "output=other.counts",
            "--",
            "/dev/data",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(work.path().join("other.counts")).unwrap(),
        "1 4 8\n"
    );
}

#[test]
fn a_zapp_s_images_come_from_the_zapp_and_its_channels_from_the_caller() {
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::create_dir_all(p.join("app")).unwrap();
    std::fs::copy(c_guest("cat"), p.join("cat.wasm")).unwrap();
    {
        let mut b = tar::Builder::new(std::fs::File::create(p.join("app/data.tar")).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(21);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &b"hello from the image\n"[..])
            .unwrap();
        b.finish().unwrap();
    }
    // The manifest is in a subdirectory: the program is found from there (`../cat.wasm`).
    std::fs::write(
        p.join("app/main.toml"),
        r#"version = 1
program = "../cat.wasm"
args = ["/img/hello.txt", "/dev/extra"]

[[mount]]
path = "/img"
image = "data.tar"

[[channel]]
name = "extra"
path = "extra.txt"
mode = "read"
"#,
    )
    .unwrap();
    std::fs::write(
        p.join("zapp.toml"),
        "version = 1\nmanifest = \"app/main.toml\"\n\n[app]\nname = \"cat\"\nversion = \"1\"\n\
         description = \"Prints a file of its image, then extra.txt.\"\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let zapp = work.path().join("cat.zapp");
    pack(p, &zapp);
    let names: Vec<String> = entries(&zapp).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        ["zapp.toml", "app/data.tar", "app/main.toml", "cat.wasm"]
    );
    std::fs::write(work.path().join("extra.txt"), "and from the caller\n").unwrap();
    let o = run_in(work.path(), &["run", "cat.zapp"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from the image\nand from the caller\n");
    // Without the caller's file, the run fails for want of it: it is not looked for in the
    // zapp.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = run_in(elsewhere.path(), &["run", s(&zapp)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("extra.txt"), "{}", stderr(&o));
}

const JOB_TOML: &str = r#"version = 1
name = "copies"

[[group]]
name = "map"
program = "pipes.wasm"
args = ["c:input:copy", "w:out/sum:100"]
connect = ["sum"]
[[group.channel]]
name = "input"
path = "data/*.txt"
mode = "read"
[[group.channel]]
name = "copy"
path = "out/*.copy"
mode = "write"

[[group]]
name = "sum"
program = "pipes.wasm"
args = ["r:in/map-1", "r:in/map-2"]
"#;

/// A job project: two mappers (one per `data/*.txt` of the caller) copying their input to an
/// output each and writing 100 bytes to a summing member.
fn job_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::copy(c_guest("pipes"), p.join("pipes.wasm")).unwrap();
    std::fs::write(p.join("job.toml"), JOB_TOML).unwrap();
    std::fs::write(
        p.join("zapp.toml"),
        "version = 1\njob = \"job.toml\"\n\n[app]\nname = \"copies\"\nversion = \"0.1\"\n\
         description = \"Copies data/*.txt to out/*.copy through a pipe.\"\n",
    )
    .unwrap();
    dir
}

fn job_inputs(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("data/a.txt"), vec![b'a'; 5000]).unwrap();
    std::fs::write(dir.join("data/b.txt"), b"bb\n").unwrap();
}

#[test]
fn a_job_zapp_runs_like_zvm_job_on_the_callers_files() {
    let project = job_project();
    let work = tempfile::tempdir().unwrap();
    let zapp = work.path().join("copies.zapp");
    pack(project.path(), &zapp);
    let names: Vec<String> = entries(&zapp).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["zapp.toml", "job.toml", "pipes.wasm"]);
    let o = run_in(work.path(), &["inspect", "copies.zapp", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["entry"]["kind"], "job");

    job_inputs(work.path());
    let o = run_in(
        work.path(),
        &["run", "copies.zapp", "--report-file", "report.json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["outcome"]["kind"], "ok");
    assert_eq!(report["committed"], true);
    assert_eq!(report["members"].as_array().unwrap().len(), 3);
    let copy = |name: &str| std::fs::read(work.path().join("out").join(name)).unwrap();
    assert!(copy("a.copy") == vec![b'a'; 5000], "out/a.copy differs");
    assert!(copy("b.copy") == b"bb\n", "out/b.copy differs");
    // The summing member's stdout: what came through each pipe.
    let sums = stdout(&o);
    assert!(sums.contains("in/map-1 100 "), "{sums}");
    assert!(sums.contains("in/map-2 100 "), "{sums}");

    // The same job run by `zvm job` in the project gives the same etags.
    job_inputs(project.path());
    let o = run_in(
        project.path(),
        &["job", "job.toml", "--report-file", "report.json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let direct: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.path().join("report.json")).unwrap())
            .unwrap();
    let etags = |r: &serde_json::Value| -> Vec<String> {
        r["members"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["report"]["channels"].as_array().unwrap().clone())
            .map(|c| c["etag"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(etags(&report), etags(&direct));

    // A job takes no arguments, and flags for one VM are refused, not ignored.
    let o = run_in(work.path(), &["run", "copies.zapp", "--", "x"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("takes no arguments"), "{}", stderr(&o));
    let o = run_in(work.path(), &["run", "copies.zapp", "--fuel", "1000"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("only --report"), "{}", stderr(&o));
}

/// Sets a file's modification time `secs` seconds after the epoch.
fn set_mtime(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn packs_are_reproducible() {
    let project = wc_project();
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("1.zapp");
    let second = work.path().join("2.zapp");
    pack(project.path(), &first);
    pack(project.path(), &second);
    let bytes = std::fs::read(&first).unwrap();
    assert_eq!(bytes, std::fs::read(&second).unwrap());

    // Other times and modes, and a copy of the tree elsewhere: the same bytes.
    use std::os::unix::fs::PermissionsExt;
    for (i, f) in ["zapp.toml", "wc.toml", "bin/wc.wasm", "README.md"]
        .iter()
        .enumerate()
    {
        let path = project.path().join(f);
        set_mtime(&path, 1_000_000 + i as u64 * 7919);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let third = work.path().join("3.zapp");
    pack(project.path(), &third);
    assert_eq!(bytes, std::fs::read(&third).unwrap());
    let copy = tempfile::tempdir().unwrap();
    for f in [
        "zapp.toml",
        "wc.toml",
        "bin/wc.wasm",
        "README.md",
        "docs/deep/usage.md",
    ] {
        std::fs::create_dir_all(copy.path().join(f).parent().unwrap()).unwrap();
        std::fs::copy(project.path().join(f), copy.path().join(f)).unwrap();
    }
    let fourth = work.path().join("4.zapp");
    pack(copy.path(), &fourth);
    assert_eq!(bytes, std::fs::read(&fourth).unwrap());

    // The gzip header: no modification time, no file name, "unknown" operating system.
    assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8]);
    assert_eq!(bytes[3], 0, "no FNAME or other flags");
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "mtime 0");
    assert_eq!(bytes[9], 255, "OS unknown");
    // The tar headers: fixed mode, times and owners.
    for (path, mode, mtime, uid, gid, _) in entries(&third) {
        assert_eq!((mode, mtime, uid, gid), (0o644, 0, 0, 0), "{path}");
    }
    // A changed byte in a packed file changes the zapp.
    std::fs::write(project.path().join("README.md"), "# wc!\n").unwrap();
    let fifth = work.path().join("5.zapp");
    pack(project.path(), &fifth);
    assert_ne!(bytes, std::fs::read(&fifth).unwrap());
}

/// A gzip tar built entry by entry with no checks, the way an attacker would: `(path,
/// content, kind)`; a symlink's content is its target.
fn raw_zapp(entries: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content, kind) in entries {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_gnu_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_mode(0o644);
        h.set_entry_type(*kind);
        if *kind == tar::EntryType::Symlink {
            h.set_size(0);
            h.as_gnu_mut().unwrap().linkname[..content.len()].copy_from_slice(content);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        } else {
            h.set_size(content.len() as u64);
            h.set_cksum();
            b.append(&h, *content).unwrap();
        }
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

const MINI_ZAPP: &[u8] = b"version = 1\nmanifest = \"wc.toml\"\n\n[app]\nname = \"wc\"\n\
    version = \"1\"\ndescription = \"wc\"\n";

#[test]
fn damaged_or_hostile_zapps_are_refused_and_nothing_runs() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(c_guest("wc")).unwrap();
    let manifest = WC_TOML.replace("bin/wc.wasm", "wc.wasm");
    let f = tar::EntryType::Regular;
    let good = raw_zapp(&[
        ("zapp.toml", MINI_ZAPP, f),
        ("wc.toml", manifest.as_bytes(), f),
        ("wc.wasm", &wasm, f),
    ]);
    std::fs::write(work.path().join("input.txt"), "x y\n").unwrap();
    let escape = format!("{}/escaped.txt", work.path().display());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "is not a valid zapp",
        ),
        // Everything but gzip's trailer (CRC and length): the tar itself is whole.
        (
            "no-trailer",
            good[..good.len() - 4].to_vec(),
            "reading its gzip stream",
        ),
        (
            "trailing",
            [&good[..], b"junk"].concat(),
            "data after the end",
        ),
        (
            "not-gzip",
            b"version = 1\n".to_vec(),
            "it is not a gzip stream",
        ),
        (
            "no-zapp-toml",
            raw_zapp(&[("wc.toml", manifest.as_bytes(), f), ("wc.wasm", &wasm, f)]),
            "its first file is `wc.toml`, expected `zapp.toml`",
        ),
        ("empty", raw_zapp(&[]), "holds no `zapp.toml`"),
        (
            "no-entry",
            raw_zapp(&[("zapp.toml", MINI_ZAPP, f), ("wc.wasm", &wasm, f)]),
            "its entry point `wc.toml` (zapp.toml: `manifest`) is not in it",
        ),
        (
            "no-program",
            raw_zapp(&[
                ("zapp.toml", MINI_ZAPP, f),
                ("wc.toml", manifest.as_bytes(), f),
            ]),
            "names the program `wc.wasm`, which is not in it",
        ),
        (
            "dotdot",
            raw_zapp(&[
                ("zapp.toml", MINI_ZAPP, f),
                ("../escaped.txt", b"x", f),
                ("wc.toml", manifest.as_bytes(), f),
                ("wc.wasm", &wasm, f),
            ]),
            "entry `../escaped.txt` has a `..` in its path",
        ),
        (
            "absolute",
            raw_zapp(&[
                ("zapp.toml", MINI_ZAPP, f),
                (&escape, b"x", f),
                ("wc.toml", manifest.as_bytes(), f),
                ("wc.wasm", &wasm, f),
            ]),
            "has an absolute path",
        ),
        (
            "symlink",
            raw_zapp(&[
                ("zapp.toml", MINI_ZAPP, f),
                ("wc.toml", manifest.as_bytes(), f),
                ("wc.wasm", b"/etc/passwd", tar::EntryType::Symlink),
            ]),
            "entry `wc.wasm` is a symbolic link",
        ),
        (
            "duplicate",
            raw_zapp(&[
                ("zapp.toml", MINI_ZAPP, f),
                ("wc.toml", manifest.as_bytes(), f),
                ("wc.wasm", &wasm, f),
                ("./wc.wasm", b"evil", f),
            ]),
            "`wc.wasm` appears twice",
        ),
        (
            "program-outside",
            raw_zapp(&[
                ("zapp.toml", MINI_ZAPP, f),
                (
                    "wc.toml",
                    manifest
                        .replace("\"wc.wasm\"", "\"/bin/wc.wasm\"")
                        .as_bytes(),
                    f,
                ),
                ("wc.wasm", &wasm, f),
            ]),
            "program `/bin/wc.wasm` is absolute",
        ),
        (
            "bad-zapp-toml",
            raw_zapp(&[
                (
                    "zapp.toml",
                    b"version = 1\nmanifest = \"wc.toml\"\nicon = 1\n",
                    f,
                ),
                ("wc.toml", manifest.as_bytes(), f),
                ("wc.wasm", &wasm, f),
            ]),
            "zapp.toml:3:1: unknown field `icon`",
        ),
    ];
    // A damaged copy of a good zapp: one byte of the compressed stream flipped.
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    let mut cases = cases;
    cases.push(("flipped", flipped, "is not a valid zapp"));

    // The good one runs, so every failure below is the damage's.
    std::fs::write(work.path().join("good.zapp"), &good).unwrap();
    let o = support::run_cmd(
        zvm_in(work.path())
            .env("ZVM_CACHE_DIR", cache.path())
            .args(["run", "good.zapp"]),
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(work.path().join("counts.txt")).unwrap();
    let cached_before = support::listing(&cache.path().join("zapps"));

    for (name, bytes, expected) in &cases {
        let file = work.path().join(format!("{name}.zapp"));
        std::fs::write(&file, bytes).unwrap();
        for command in ["run", "inspect"] {
            let o = support::run_cmd(
                zvm_in(work.path())
                    .env("ZVM_CACHE_DIR", cache.path())
                    .args([command, s(&file)]),
                b"",
            );
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(125), "{name} {command}: {err}");
            assert!(err.contains(expected), "{name} {command}: {err}");
            assert!(o.stdout.is_empty(), "{name} {command}: {}", stdout(&o));
        }
        assert!(
            !work.path().join("counts.txt").exists(),
            "{name}: the guest ran"
        );
        assert!(
            !work.path().join("escaped.txt").exists()
                && !work.path().parent().unwrap().join("escaped.txt").exists(),
            "{name}: a file escaped"
        );
        // Nothing of it stays in the cache, not even a temporary directory.
        assert_eq!(
            support::listing(&cache.path().join("zapps")),
            cached_before,
            "{name}"
        );
    }
}

#[test]
fn pack_refuses_what_it_cannot_pack_and_says_where() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("x.zapp");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            WC_ZAPP.replace("help =", "hepl ="),
            "zapp.toml:12:1: unknown field `hepl`, expected `name` or `help`",
        ),
        (
            "pattern matching nothing",
            WC_ZAPP.replace("README.md", "LICENSE"),
            "`files` pattern `LICENSE` matches no file",
        ),
        (
            "entry outside",
            WC_ZAPP.replace("\"wc.toml\"", "\"../wc.toml\""),
            "zapp.toml:2:12: `manifest` `../wc.toml` has an empty, `.` or `..` part",
        ),
        (
            "missing entry",
            WC_ZAPP.replace("\"wc.toml\"", "\"nope.toml\""),
            "the entry point `nope.toml`",
        ),
        (
            "bad name",
            WC_ZAPP.replace("name = \"wc\"", "name = \"w c\""),
            "zapp.toml:6:8: `app.name` `w c` must be letters",
        ),
    ];
    for (what, text, expected) in cases {
        let project = wc_project();
        std::fs::write(project.path().join("zapp.toml"), text).unwrap();
        let o = run_in(project.path(), &["pack", ".", "-o", s(&out)]);
        assert_eq!(o.status.code(), Some(125), "{what}");
        assert!(stderr(&o).contains(expected), "{what}: {}", stderr(&o));
        assert!(!out.exists(), "{what}: a zapp was written");
    }
    for (what, program, expected) in [
        (
            "leaving",
            "../wc.wasm",
            "program `../wc.wasm` leads out of the zapp",
        ),
        (
            "absolute",
            "/bin/wc.wasm",
            "program `/bin/wc.wasm` is absolute",
        ),
        (
            "missing",
            "bin/nope.wasm",
            "names the program `bin/nope.wasm`, which is not a file",
        ),
    ] {
        let project = wc_project();
        std::fs::write(
            project.path().join("wc.toml"),
            WC_TOML.replace("bin/wc.wasm", program),
        )
        .unwrap();
        let o = run_in(project.path(), &["pack", ".", "-o", s(&out)]);
        assert_eq!(o.status.code(), Some(125), "{what}");
        assert!(stderr(&o).contains(expected), "{what}: {}", stderr(&o));
        assert!(!out.exists(), "{what}: a zapp was written");
    }
    // Without -o: `<name>-<version>.zapp` in the current directory.
    let project = wc_project();
    let o = run_in(work.path(), &["pack", s(project.path())]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(work.path().join("wc-1.2.0.zapp").is_file());
}

#[test]
fn racing_runs_unpack_once() {
    let project = wc_project();
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    pack(project.path(), &work.path().join("wc.zapp"));
    std::fs::write(work.path().join("input.txt"), "a\n").unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            zvm_in(work.path())
                .env("ZVM_CACHE_DIR", cache.path())
                .args([
                    "run",
                    "wc.zapp",
                    "--no-result-cache",
                    "--output",
                    &format!("output=out-{i}.txt"),
                ])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{i}: {}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(work.path().join(format!("out-{i}.txt"))).unwrap(),
            "1 1 2\n"
        );
    }
    let entries = support::listing(&cache.path().join("zapps"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].len(), 64, "{entries:?}");
}

/// `zvm new TEMPLATE` in a fresh directory, then its `test.sh` with the built zvm.
fn new_project(template: &str) -> (tempfile::TempDir, PathBuf, Output) {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join(format!("my-{template}"));
    let o = run_in(base.path(), &["new", template, s(&dir)]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["build.sh", "manifest.toml", "zapp.toml", "test.sh"] {
        assert!(dir.join(f).is_file(), "{template}: no {f}");
    }
    let zapp = std::fs::read_to_string(dir.join("zapp.toml")).unwrap();
    assert!(
        zapp.contains("name = \"my-") && !zapp.contains("{{"),
        "{zapp}"
    );
    let mut cmd = Command::new(dir.join("test.sh"));
    cmd.env("ZVM", env!("CARGO_BIN_EXE_zvm"))
        .env(
            "ZVM_CACHE_DIR",
            support::repo().join("target/zvm-test/cache"),
        )
        .env(
            "ZVM_STATE_DIR",
            support::repo().join("target/zvm-test/state"),
        );
    let out = support::run_cmd(&mut cmd, b"");
    (base, dir, out)
}

#[test]
fn zvm_new_c_makes_a_project_whose_test_passes() {
    let (base, dir, o) = new_project("c");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("test.sh: my-c ok"), "{}", stdout(&o));
    // It never overwrites: not the project, nor any non-empty directory.
    let again = run_in(base.path(), &["new", "c", s(&dir)]);
    assert_eq!(again.status.code(), Some(125));
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
    // An empty directory is fine; a name that cannot be an app's is not.
    std::fs::create_dir(base.path().join("empty")).unwrap();
    let o = run_in(base.path(), &["new", "c", "empty"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_in(base.path(), &["new", "c", "1bad"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("cannot name a project"),
        "{}",
        stderr(&o)
    );
    assert!(!base.path().join("1bad").exists());
}

#[test]
fn zvm_new_rust_makes_a_project_whose_test_passes() {
    let (_base, _dir, o) = new_project("rust");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("test.sh: my-rust ok"), "{}", stdout(&o));
}

#[test]
fn zvm_new_python_makes_a_project_whose_test_passes_or_skips() {
    let (_base, dir, o) = new_project("python");
    assert!(dir.join("main.py").is_file());
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    if out.contains("SKIPPED") {
        eprintln!("python template: {out}");
    } else {
        assert!(out.contains("test.sh: my-python ok"), "{out}");
    }
}
