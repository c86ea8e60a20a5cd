//! What every integration test needs: guests compiled on demand, and a way to run `zvm`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Where compiled guests and the shared compile cache live.
fn build_dir() -> PathBuf {
    let dir = repo().join("target/zvm-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The compiled form of C guest `tests/guests/c/<name>.c`, built with clang on first use
/// (and again when the source is newer than the binary).
pub fn c_guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let src = repo().join(format!("tests/guests/c/{name}.c"));
    // `c/`: built by the recipe below (compile with -O2, link without), apart from guests an
    // earlier recipe left in `guests/`.
    let out = build_dir().join(format!("guests/c/{name}.wasm"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let stale = match (std::fs::metadata(&src), std::fs::metadata(&out)) {
        (Ok(s), Ok(o)) => {
            s.modified().unwrap() > o.modified().unwrap()
                || std::fs::metadata(repo().join("tests/guests/c/check.h"))
                    .unwrap()
                    .modified()
                    .unwrap()
                    > o.modified().unwrap()
        }
        (Ok(_), Err(_)) => true,
        (Err(e), _) => panic!("no guest source `{}`: {e}", src.display()),
    };
    if stale {
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let obj = out.with_extension(format!("o{}", std::process::id()));
        let clang = || {
            let mut c = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()));
            c.arg("--target=wasm32-wasi");
            c
        };
        let fail = |e: std::io::Error| -> std::process::ExitStatus {
            panic!(
                "cannot run clang ({e}); install clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (see .ci/run)"
            )
        };
        // Compiled with -O2 and linked without it: clang runs binaryen's wasm-opt on an
        // optimised link when wasm-opt is on the PATH (zvm's snapshots install it), and
        // wasm-opt drops the name section that backtraces show.
        let status = clang()
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-c", "-o"])
            .arg(&obj)
            .arg(&src)
            .status()
            .unwrap_or_else(fail);
        assert!(status.success(), "clang failed to compile guest `{name}`");
        let status = clang()
            .arg("-o")
            .arg(&tmp)
            .arg(&obj)
            .status()
            .unwrap_or_else(fail);
        let _ = std::fs::remove_file(&obj);
        assert!(status.success(), "clang failed to link guest `{name}`");
        std::fs::rename(&tmp, &out).unwrap();
    }
    built.insert(name.to_string(), out.clone());
    out
}

/// The compiled form of Rust guest `tests/guests/rust/<name>.rs`, built on first use with
/// Debian's rustc (`/usr/bin/rustc`, package `libstd-rust-dev-wasm32` brings its wasm32-wasi
/// standard library; rustup toolchains here cannot add wasm targets).
pub fn rust_guest(name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap();
    let src = repo().join(format!("tests/guests/rust/{name}.rs"));
    let out = build_dir().join(format!("guests/{name}.rs.wasm"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let fresh = matches!((std::fs::metadata(&src), std::fs::metadata(&out)),
        (Ok(s), Ok(o)) if s.modified().unwrap() <= o.modified().unwrap());
    if !fresh {
        let rustc = std::env::var("WASM_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let status = Command::new(&rustc)
            .args(["--target", "wasm32-wasi", "-O", "--edition", "2021", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run `{rustc}` ({e}); install rustc and libstd-rust-dev-wasm32 (see scripts/install-deps)"));
        assert!(status.success(), "rustc failed to build guest `{name}`");
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

/// Writes `wat` text to a fresh `.wat` file in `dir` and returns its path.
pub fn wat_guest(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wat"));
    std::fs::write(&path, wat).unwrap();
    path
}

/// A `zvm` command with a shared compile (and result) cache and state directory.
pub fn zvm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zvm"));
    c.env("ZVM_CACHE_DIR", build_dir().join("cache"));
    c.env("ZVM_STATE_DIR", build_dir().join("state"));
    c.stdin(Stdio::null());
    c
}

/// Runs `zvm` with `args` and the given stdin; returns the output.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_cmd(zvm().args(args), stdin)
}

pub fn run_cmd(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning zvm");
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Runs `zvm run` with `--report json --report-file` and returns (output, report).
pub fn run_report(args: &[&str], stdin: &[u8]) -> (Output, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut cmd = zvm();
    // Before `args`, which may end with `-- guest args`.
    cmd.arg("run").arg("--report-file").arg(&report).args(args);
    let out = run_cmd(&mut cmd, stdin);
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, serde_json::from_str(&text).unwrap())
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The report's channel entry named `name`.
pub fn channel<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no channel `{name}` in report"))
}

/// Names of the entries of `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
