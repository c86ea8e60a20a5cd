//! Guests and zapps for the tests of zapps, jobs, endpoints and handlers: C guests built with
//! clang (`tests/guests/*.c`) and zapps packed in memory as `zvm pack` packs them.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::support::wasm;

/// The C guest `tests/guests/<name>.c`, compiled with `clang --target=wasm32-wasi` once per
/// test process.
pub fn c_guest(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = built.get(name) {
        return std::fs::read(p).unwrap();
    }
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/guests/{name}.c"));
    let out = dir.path().join(format!("{name}.wasm"));
    let status = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
        .args([
            "--target=wasm32-wasi",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run clang ({e}); install clang, lld and wasi-libc"));
    assert!(status.success(), "clang failed to build guest `{name}`");
    built.insert(name.to_owned(), out.clone());
    std::fs::read(out).unwrap()
}

/// Traps at once.
pub fn fail() -> Vec<u8> {
    wasm(r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#)
}

/// A zapp holding `files` (after a `zapp.toml` for app `name` with entry point `entry`,
/// a `manifest = ...` or `job = ...` line), packed as `zvm pack` packs one.
pub fn zapp(name: &str, entry: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let toml = format!(
        "version = 1\n{entry}\n\n[app]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"A test app.\"\n"
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("zapp.toml", toml.as_bytes());
    for (path, data) in files {
        add(path, data);
    }
    let bytes = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes).unwrap();
    gz.finish().unwrap()
}
