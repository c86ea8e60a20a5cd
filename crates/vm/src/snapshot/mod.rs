//! Pre-initialised snapshots: start a program from the moment it opens its script, with its
//! initialisation (an interpreter importing its standard library, say) already done.
//!
//! CPython and QuickJS built for WASI export only `_start`: there is no initialisation
//! function that returns, so wasmtime-wizer cannot snapshot them. zvm snapshots a running
//! `_start` instead, with binaryen's asyncify (`wasm-opt --asyncify`) to unwind and later
//! rewind the guest's call stack:
//!
//! 1. **Trace.** The program runs in an ordinary VM until the first host call that names the
//!    *snapshot point* (the script's guest path, `/dev/script`): a `path_open`, or a
//!    `path_filestat_get` or `path_readlink` before it (CPython stats its script first, and
//!    the answer holds the script's size). The wasm frames on the stack there are noted and
//!    the run stops.
//! 2. **Asyncify.** Every function is named and every global exported ([`module::prepare`]),
//!    then `wasm-opt --asyncify` instruments only the functions of those frames (so the rest
//!    of the program runs exactly as compiled), with that call's import as the one that
//!    unwinds.
//! 3. **Capture.** The instrumented program runs again to the same point, where the host
//!    unwinds it: the call stack lands in a buffer, and memory and globals hold the state of
//!    an initialised program. Every host call made on the way is recorded: its arguments,
//!    the guest memory the host read, what it wrote and returned.
//! 4. **Emit.** The instrumented module with that memory as its data and those values as its
//!    globals' initial values ([`module::finish`]): wasmtime maps its memory copy-on-write,
//!    so a VM starts from it as fast as from any program.
//!
//! Each run from the snapshot then (a) makes a world from its own manifest, (b) *replays*
//! the recorded host calls against it — with the recorded memory inputs, checking that every
//! result and every byte written is what the capture saw — so that the world's clocks,
//! randomness, descriptors and counters are exactly where a plain start would have them,
//! (c) rewinds the stack, and (d) resumes inside that host call, which now looks at this
//! run's script. A replay that differs (another environment, a changed mount) is
//! [`Error::SnapshotDiverged`], raised before the guest has run or read anything; the caller
//! runs the program from its plain start instead. Everything before the snapshot point is
//! a deterministic function of the program and the recorded calls, so the snapshot is
//! itself deterministic: the same program, manifest and wasm-opt make the same bytes.
//!
//! A snapshot is cached by a content hash of its inputs (program, manifest without host paths
//! and limits, snapshot point, wasm-opt flags) under the compile cache's directory.

pub mod module;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmtime::{Caller, Engine, ExternType, Func, Linker, Module, Store, Val, ValType};
use zvm_manifest::{ChannelSource, ContentHash, Manifest, MountSource};

use crate::report::{Report, SnapshotUse};
use crate::{Error, Program, RunIo, Runtime, VmState, wasi};

pub use module::GlobalValue;

/// Version of the snapshot format (the files in the cache and what they mean).
pub const FORMAT: u32 = 2;

/// The imports that can be the snapshot point (the first one naming it is), with the index of
/// their path pointer argument (the length follows it). Their host functions finish a rewind.
const POINT_IMPORTS: &[(&str, usize)] = &[
    ("path_open", 2),
    ("path_filestat_get", 2),
    ("path_readlink", 1),
];

/// wasm-opt flags before `--asyncify`: optimisation level 2 makes asyncify tidy up the
/// functions it instruments (it halves their overhead on CPython), without running the
/// optimiser over the rest of the program. Part of the cache key.
const ASYNCIFY_FLAGS: &[&str] = &["--optimize-level=2"];

/// Largest buffer for the unwound call stack (it lives at the top of the guest's memory
/// while the host unwinds or rewinds, and that memory is restored afterwards).
const STACK_BUFFER: usize = 1 << 20;

/// The guest memory the host read or wrote in one call, while recording.
#[derive(Debug, Default)]
pub(crate) struct MemLog {
    reads: Vec<(u32, Vec<u8>)>,
    writes: Vec<(u32, u32)>,
}

impl MemLog {
    pub(crate) fn read(&mut self, at: u32, bytes: &[u8]) {
        self.reads.push((at, bytes.to_vec()));
    }

    pub(crate) fn wrote(&mut self, at: u32, len: u32) {
        self.writes.push((at, len));
    }
}

/// Guest memory at an address, as a host call saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub at: u32,
    #[serde(with = "hex")]
    pub bytes: Vec<u8>,
}

/// One host call made before the snapshot point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCall {
    pub name: String,
    /// Arguments (every preview1 argument is an i32 or an i64).
    pub params: Vec<i64>,
    pub results: Vec<i64>,
    /// Guest memory the host read, in order.
    pub reads: Vec<Region>,
    /// Guest memory the host wrote, as it was when the call returned.
    pub writes: Vec<Region>,
}

/// What a snapshot holds besides its module.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    /// The cache key it was made for.
    pub key: String,
    /// Hash of the program it was made from.
    pub program: String,
    /// Hash of the snapshot's module.
    pub module: String,
    /// The guest path whose first mention is the snapshot point.
    pub point: String,
    /// The import that mentioned it first (where runs resume).
    pub point_import: String,
    /// `wasm-opt --version`.
    pub wasm_opt: String,
    /// Where the unwound stack goes while rewinding, and its bytes (asyncify's two-word
    /// header first).
    pub stack_at: u32,
    #[serde(with = "hex")]
    pub stack: Vec<u8>,
    /// Fuel the program used to reach the snapshot point; runs from the snapshot are
    /// charged it, so that fuel limits mean what they mean for a plain start.
    pub init_fuel: u64,
    /// Host calls before the snapshot point, replayed by every run.
    pub calls: Vec<HostCall>,
}

/// A program started from a snapshot.
pub struct Snapshot {
    program: Program,
    meta: Arc<Meta>,
    /// The snapshot's identity: BLAKE3 of its module and its metadata.
    hash: String,
    /// Looks up host functions to replay calls with.
    linker: Arc<Linker<VmState>>,
    original_path: String,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("hash", &self.hash)
            .field("point", &self.meta.point)
            .field("calls", &self.meta.calls.len())
            .finish_non_exhaustive()
    }
}

/// Is a snapshot made when none is cached?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Make one (and cache it).
    IfMissing,
    /// Only use a cached one.
    Never,
}

/// The cache key of a snapshot of `program` run with `manifest`, opening `point`. The
/// wasm-opt that makes it is not part of the key (any version makes a valid snapshot; the
/// metadata records which one did), so that finding a snapshot runs no other program.
pub fn key(program: &ContentHash, manifest: &Manifest, point: &str) -> String {
    let mut keyed = manifest.clone();
    keyed.program.path = PathBuf::from("program");
    keyed.program.hash = None;
    // Limits only decide whether a run fits; the snapshot's fuel is charged to every run.
    keyed.limits = Default::default();
    // Host paths are left out: what the guest saw of its files before the snapshot point is
    // checked call by call when a run replays the recorded host calls, so the same snapshot
    // serves runs whose inputs and outputs live elsewhere.
    for ch in &mut keyed.channels {
        ch.etag = None;
        if let ChannelSource::File(_) = ch.source {
            ch.source = ChannelSource::File(PathBuf::from(format!("/channel/{}", ch.name)));
        }
    }
    for (i, m) in keyed.mounts.iter_mut().enumerate() {
        m.source = match &m.source {
            MountSource::Image(_) => MountSource::Image(PathBuf::from(format!("/image/{i}"))),
            MountSource::Dir { writable, .. } => MountSource::Dir {
                path: PathBuf::from(format!("/dir/{i}")),
                writable: *writable,
            },
        };
    }
    for e in &mut keyed.exports {
        e.path = PathBuf::from("/export");
    }
    let mut h = blake3::Hasher::new();
    let format = format!("zvm-snapshot-v{FORMAT}");
    for part in [
        format.as_str(),
        env!("CARGO_PKG_VERSION"),
        &program.to_string(),
        point,
        &ASYNCIFY_FLAGS.join(" "),
        &zvm_manifest::canonical_toml(&keyed),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The wasm-opt zvm runs: `$ZVM_WASM_OPT`, else `wasm-opt` on the `PATH`.
fn wasm_opt() -> PathBuf {
    std::env::var_os("ZVM_WASM_OPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("wasm-opt"))
}

/// `wasm-opt --version`, or why it cannot be run.
pub fn wasm_opt_version() -> Result<String, Error> {
    let out = Command::new(wasm_opt())
        .arg("--version")
        .output()
        .map_err(|e| {
            snapshot_error(format!(
                "cannot run `{}` ({e}); snapshots need binaryen's wasm-opt (Debian: apt-get install binaryen)",
                wasm_opt().display()
            ))
        })?;
    if !out.status.success() {
        return Err(snapshot_error(format!(
            "`{} --version` failed: {}",
            wasm_opt().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn snapshot_error(reason: impl Into<String>) -> Error {
    Error::Snapshot {
        reason: reason.into(),
    }
}

impl Runtime {
    /// The snapshot of `program` for runs like `manifest` (which differ only in the content
    /// of the channel at `point`), from the cache or, with [`Create::IfMissing`], made now
    /// (`progress` hears about the slow steps). `Ok(None)`: none cached and none made.
    pub fn snapshot(
        &self,
        program: &Program,
        manifest: &Manifest,
        point: &str,
        create: Create,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Option<Snapshot>, Error> {
        let key = key(&program.hash, manifest, point);
        let dir = self.snapshot_dir();
        if let Some(dir) = &dir
            && let Some(s) = self.open_snapshot(&dir.join(&key), program)?
        {
            return Ok(Some(s));
        }
        if create == Create::Never {
            return Ok(None);
        }
        let version = wasm_opt_version()?;
        let work = tempfile::tempdir().map_err(|e| snapshot_error(format!("temp dir: {e}")))?;
        let (module, meta) = self.make_snapshot(
            program,
            manifest,
            point,
            &key,
            &version,
            work.path(),
            progress,
        )?;
        let target = match &dir {
            Some(dir) => dir.join(&key),
            None => work.path().join("snapshot"),
        };
        store_snapshot(&target, &module, &meta)?;
        self.open_snapshot(&target, program)?
            .map(Some)
            .ok_or_else(|| snapshot_error("the snapshot just made cannot be read back"))
    }

    fn snapshot_dir(&self) -> Option<PathBuf> {
        self.cache_dir.as_ref().map(|d| d.join("snapshots"))
    }

    /// A stored snapshot, if `dir` holds a complete one made from `program`.
    fn open_snapshot(&self, dir: &Path, program: &Program) -> Result<Option<Snapshot>, Error> {
        let meta_path = dir.join("meta.json");
        let text = match std::fs::read(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(snapshot_error(format!(
                    "reading `{}`: {e}",
                    meta_path.display()
                )));
            }
        };
        let meta: Meta = match serde_json::from_slice(&text) {
            Ok(m) => m,
            // Damaged or from another format: made again.
            Err(_) => return Ok(None),
        };
        if meta.format != FORMAT || meta.program != program.hash.to_string() {
            return Ok(None);
        }
        let Some(module_hash) = ContentHash::parse(&meta.module) else {
            return Ok(None);
        };
        let module_path = dir.join("module.wasm");
        let snap = self.load_trusted(&module_path, module_hash)?;
        let mut h = blake3::Hasher::new();
        h.update(meta.module.as_bytes());
        h.update(&text);
        Ok(Some(Snapshot {
            program: snap,
            meta: Arc::new(meta),
            hash: h.finalize().to_hex().to_string(),
            linker: Arc::new(self.linker.clone()),
            original_path: program.path_text.clone(),
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn make_snapshot(
        &self,
        program: &Program,
        manifest: &Manifest,
        point: &str,
        key: &str,
        version: &str,
        work: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(Vec<u8>, Meta), Error> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            snapshot_error(format!("program `{}`: {what}: {e}", program.path.display()))
        };
        let original = std::fs::read(&program.path).map_err(|e| fail("reading it", &e))?;
        if ContentHash::of(&original) != program.hash {
            return Err(fail("reading it", &"the file changed since it was loaded"));
        }
        progress("tracing the program to its snapshot point");
        let (frames, import) =
            match self.record(program.pre.module(), program, manifest, point, Phase::Trace)? {
                Recorded::Frames(f, import) => (f, import),
                Recorded::Unwound { .. } => unreachable!("a trace never unwinds"),
            };
        let prepared = module::prepare(&original).map_err(|e| fail("cannot snapshot it", &e))?;
        progress(&format!(
            "instrumenting {} functions with wasm-opt --asyncify",
            frames.len()
        ));
        let asyncified = asyncify(&prepared, &frames, &import, work)?;
        progress("compiling the instrumented program");
        let module = Module::new(&self.engine, &asyncified)
            .map_err(|e| fail("compiling it after asyncify", &e))?;
        progress("running it to its snapshot point");
        let Recorded::Unwound {
            memory,
            globals,
            stack_at,
            stack,
            init_fuel,
            calls,
        } = self.record(&module, program, manifest, point, Phase::Capture)?
        else {
            unreachable!("a capture unwinds or fails");
        };
        progress("writing the snapshot");
        let out = module::finish(&asyncified, &memory, &globals)
            .map_err(|e| fail("emitting the snapshot", &e))?;
        let meta = Meta {
            format: FORMAT,
            key: key.to_string(),
            program: program.hash.to_string(),
            module: ContentHash::of(&out).to_string(),
            point: point.to_string(),
            point_import: import,
            wasm_opt: version.to_string(),
            stack_at,
            stack,
            init_fuel,
            calls,
        };
        Ok((out, meta))
    }

    /// Runs `module` (the program, or its instrumented form) with `manifest` up to its
    /// opening of `point`, recording host calls.
    fn record(
        &self,
        module: &Module,
        program: &Program,
        manifest: &Manifest,
        point: &str,
        phase: Phase,
    ) -> Result<Recorded, Error> {
        let fail = |e: String| snapshot_error(format!("program `{}`: {e}", program.path.display()));
        let linker = recording_linker(&self.engine, module)?;
        let (mut store, run) = program.prepare(manifest, RunIo::default(), false)?;
        let mut real = HashMap::new();
        for import in module.imports() {
            if let Some(f) = self
                .linker
                .get(&mut store, import.module(), import.name())
                .ok()
                .and_then(wasmtime::Extern::into_func)
            {
                real.insert(import.name().to_string(), f);
            }
        }
        store.data_mut().snapshot = Some(Box::new(Recorder {
            point: point.trim_start_matches('/').to_string(),
            phase,
            calls: Vec::new(),
            real,
            unwind: None,
            fired: None,
        }));
        let result = (|| -> Result<Recorded, String> {
            let instance = linker
                .instantiate(&mut store, module)
                .map_err(|e| format!("cannot instantiate it: {e:#}"))?;
            let memory = instance
                .get_memory(&mut store, "memory")
                .ok_or("it exports no memory")?;
            store.data_mut().memory = Some(memory);
            if phase == Phase::Capture {
                let unwind = instance.get_func(&mut store, "asyncify_start_unwind");
                store
                    .data_mut()
                    .snapshot
                    .as_mut()
                    .expect("recording")
                    .unwind = unwind;
            }
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(|e| e.to_string())?;
            let outcome = start.call(&mut store, ());
            let rec = store.data_mut().snapshot.take().expect("recording");
            let Some(fired) = rec.fired else {
                return Err(match outcome {
                    Ok(()) => format!(
                        "it finished without opening `{point}`, so it has no snapshot point"
                    ),
                    Err(e) => match e.downcast_ref::<wasi::Exit>() {
                        Some(exit) => {
                            format!("it exited (code {}) before opening `{point}`", exit.0)
                        }
                        None => format!("it failed before opening `{point}`: {e:#}"),
                    },
                });
            };
            match (phase, fired) {
                (Phase::Trace, Fired::Frames(frames, import)) => {
                    Ok(Recorded::Frames(frames, import))
                }
                (Phase::Capture, Fired::Unwinding { at, saved }) => {
                    if let Err(e) = outcome {
                        return Err(format!("it did not unwind at `{point}`: {e:#}"));
                    }
                    let call = |name: &str, store: &mut Store<VmState>, args: &[Val]| {
                        let f = instance
                            .get_func(&mut *store, name)
                            .ok_or_else(|| format!("asyncify export `{name}` missing"))?;
                        let mut results = vec![Val::I32(0); f.ty(&*store).results().len()];
                        f.call(&mut *store, args, &mut results)
                            .map_err(|e| format!("{name}: {e:#}"))?;
                        Ok::<_, String>(results)
                    };
                    call("asyncify_stop_unwind", &mut store, &[])?;
                    let data = memory.data_mut(&mut store);
                    let end = u32::from_le_bytes(data[at..at + 4].try_into().expect("4")) as usize;
                    if end < at + 8 || end > data.len() {
                        return Err("asyncify left its stack pointer out of its buffer".into());
                    }
                    let stack = data[at..end].to_vec();
                    data[at..at + saved.len()].copy_from_slice(&saved);
                    let memory_bytes = data.to_vec();
                    let mut globals = HashMap::new();
                    for export in module.exports() {
                        let name = export.name();
                        if !name.starts_with(module::GLOBAL_EXPORT) {
                            continue;
                        }
                        let g = instance
                            .get_global(&mut store, name)
                            .ok_or_else(|| format!("global export `{name}` missing"))?;
                        let v = match g.get(&mut store) {
                            Val::I32(v) => GlobalValue::I32(v),
                            Val::I64(v) => GlobalValue::I64(v),
                            Val::F32(v) => GlobalValue::F32(v),
                            Val::F64(v) => GlobalValue::F64(v),
                            other => {
                                return Err(format!(
                                    "global `{name}` holds {other:?}, which a snapshot cannot hold"
                                ));
                            }
                        };
                        globals.insert(name.to_string(), v);
                    }
                    let init_fuel = manifest
                        .limits
                        .fuel
                        .saturating_sub(store.get_fuel().unwrap_or(0));
                    Ok(Recorded::Unwound {
                        memory: memory_bytes,
                        globals,
                        stack_at: at as u32,
                        stack,
                        init_fuel,
                        calls: rec.calls,
                    })
                }
                _ => Err("the snapshot point fired in the wrong phase".into()),
            }
        })();
        // Nothing of a recording run lands.
        let state = store.into_data();
        state.fs.finish(Some("snapshot recording"));
        run.txn.abort();
        result.map_err(fail)
    }

    /// Loads a module zvm made itself (a snapshot), by its known hash: from the compile
    /// cache without reading it when it is there.
    fn load_trusted(&self, path: &Path, hash: ContentHash) -> Result<Program, Error> {
        if let Some(module) = self.cache.as_ref().and_then(|c| c.get(&self.engine, &hash)) {
            return self.program(path, hash, module, crate::report::Validation::Cached);
        }
        let bytes = std::fs::read(path).map_err(|error| Error::ReadProgram {
            path: path.to_path_buf(),
            error,
        })?;
        if ContentHash::of(&bytes) != hash {
            return Err(snapshot_error(format!("`{}` is damaged", path.display())));
        }
        let module = Module::new(&self.engine, &bytes).map_err(|e| Error::Refused {
            path: path.to_path_buf(),
            hash,
            reason: format!("{e:#}"),
        })?;
        if let Some(cache) = &self.cache
            && let Err(e) = cache.put(&hash, &module)
        {
            tracing::debug!("compile cache: {e}");
        }
        self.program(path, hash, module, crate::report::Validation::Compiled)
    }
}

/// Writes a snapshot's two files into `dir` atomically (a complete directory appears, or
/// none).
fn store_snapshot(dir: &Path, module: &[u8], meta: &Meta) -> Result<(), Error> {
    let parent = dir.parent().expect("snapshot dirs have a parent");
    let fail =
        |e: std::io::Error| snapshot_error(format!("storing it in `{}`: {e}", parent.display()));
    std::fs::create_dir_all(parent).map_err(fail)?;
    let tmp = tempfile::Builder::new()
        .prefix(".snapshot-")
        .tempdir_in(parent)
        .map_err(fail)?;
    std::fs::write(tmp.path().join("module.wasm"), module).map_err(fail)?;
    let json = serde_json::to_vec_pretty(meta).expect("meta serializes");
    std::fs::write(tmp.path().join("meta.json"), json).map_err(fail)?;
    let tmp = tmp.keep();
    let current = |dir: &Path| {
        std::fs::read(dir.join("meta.json"))
            .ok()
            .and_then(|t| serde_json::from_slice::<Meta>(&t).ok())
            .is_some_and(|m| m.format == FORMAT && m.module == meta.module)
    };
    if dir.exists() && !current(dir) {
        // A damaged or outdated snapshot under this key: replaced.
        let _ = std::fs::remove_dir_all(dir);
    }
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Another process stored the same snapshot first: same key, same bytes.
        Err(_) if current(dir) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(fail(e))
        }
    }
}

/// Runs `wasm-opt --asyncify`, instrumenting only the functions of `frames`.
fn asyncify(prepared: &[u8], frames: &[u32], import: &str, work: &Path) -> Result<Vec<u8>, Error> {
    let input = work.join("prepared.wasm");
    let output = work.join("asyncified.wasm");
    std::fs::write(&input, prepared).map_err(|e| snapshot_error(format!("temp file: {e}")))?;
    let mut names: Vec<u32> = frames.to_vec();
    names.sort_unstable();
    names.dedup();
    let list: Vec<String> = names.iter().map(|f| format!("f{f}")).collect();
    let out = Command::new(wasm_opt())
        .arg(&input)
        .args(ASYNCIFY_FLAGS)
        .arg("--asyncify")
        .arg(format!(
            "--pass-arg=asyncify-imports@{}.{import}",
            wasi::MODULE
        ))
        .arg(format!("--pass-arg=asyncify-onlylist@{}", list.join(",")))
        .arg("-o")
        .arg(&output)
        .output()
        .map_err(|e| snapshot_error(format!("cannot run `{}`: {e}", wasm_opt().display())))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("non-existing function") {
        return Err(snapshot_error(format!(
            "wasm-opt --asyncify failed: {}",
            stderr.trim()
        )));
    }
    std::fs::read(&output).map_err(|e| snapshot_error(format!("reading wasm-opt's output: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Trace,
    Capture,
}

enum Fired {
    Frames(Vec<u32>, String),
    Unwinding { at: usize, saved: Vec<u8> },
}

enum Recorded {
    Frames(Vec<u32>, String),
    Unwound {
        memory: Vec<u8>,
        globals: HashMap<String, GlobalValue>,
        stack_at: u32,
        stack: Vec<u8>,
        init_fuel: u64,
        calls: Vec<HostCall>,
    },
}

/// A recording store's bookkeeping.
pub(crate) struct Recorder {
    /// The snapshot point, without its leading `/`.
    point: String,
    phase: Phase,
    calls: Vec<HostCall>,
    /// zvm's host functions in this store, by name.
    real: HashMap<String, Func>,
    unwind: Option<Func>,
    fired: Option<Fired>,
}

impl Recorder {
    /// Notes what the host function read and wrote (called by the WASI host).
    pub(crate) fn note(&mut self, log: MemLog, memory: &[u8]) {
        let Some(call) = self.calls.last_mut() else {
            return;
        };
        call.reads.extend(
            log.reads
                .into_iter()
                .map(|(at, bytes)| Region { at, bytes }),
        );
        for (at, len) in log.writes {
            let r = at as usize..at as usize + len as usize;
            call.writes.push(Region {
                at,
                bytes: memory[r].to_vec(),
            });
        }
    }
}

/// The signal that stops a trace at the snapshot point.
#[derive(Debug, thiserror::Error)]
#[error("snapshot point reached")]
struct Reached;

/// A linker whose every WASI import records the call and forwards it to zvm's host.
fn recording_linker(engine: &Engine, module: &Module) -> Result<Linker<VmState>, Error> {
    let mut linker = Linker::new(engine);
    for import in module.imports() {
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let name = import.name().to_string();
        linker
            .func_new(
                import.module(),
                import.name(),
                ty,
                move |mut c, params, results| record_call(&mut c, &name, params, results),
            )
            .map_err(Error::engine)?;
    }
    Ok(linker)
}

fn record_call(
    c: &mut Caller<'_, VmState>,
    name: &str,
    params: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    if c.data()
        .snapshot
        .as_ref()
        .expect("a recording store")
        .fired
        .is_some()
    {
        wasmtime::bail!("it called `{name}` after the snapshot point: its stack was not unwound");
    }
    if let Some((_, at)) = POINT_IMPORTS.iter().find(|(n, _)| *n == name)
        && names_point(c, params, *at)
    {
        return fire(c, name, results);
    }
    let rec = c.data().snapshot.as_ref().expect("a recording store");
    let real = *rec
        .real
        .get(name)
        .ok_or_else(|| wasmtime::Error::msg(format!("zvm provides no `{name}`")))?;
    let raw = |vals: &[Val]| -> wasmtime::Result<Vec<i64>> {
        vals.iter()
            .map(|v| match v {
                Val::I32(x) => Ok(*x as i64),
                Val::I64(x) => Ok(*x),
                other => Err(wasmtime::Error::msg(format!(
                    "`{name}` passed {other:?}, which zvm cannot record"
                ))),
            })
            .collect()
    };
    let call = HostCall {
        name: name.to_string(),
        params: raw(params)?,
        results: Vec::new(),
        reads: Vec::new(),
        writes: Vec::new(),
    };
    c.data_mut()
        .snapshot
        .as_mut()
        .expect("recording")
        .calls
        .push(call);
    real.call(&mut *c, params, results)?;
    let results = raw(results)?;
    let rec = c.data_mut().snapshot.as_mut().expect("recording");
    rec.calls.last_mut().expect("pushed above").results = results;
    Ok(())
}

/// Whether this call's path (its pointer at `at`, its length next) is the snapshot point.
fn names_point(c: &mut Caller<'_, VmState>, params: &[Val], at: usize) -> bool {
    let (Some(Val::I32(dirfd)), Some(Val::I32(ptr)), Some(Val::I32(len))) =
        (params.first(), params.get(at), params.get(at + 1))
    else {
        return false;
    };
    let Some(memory) = c.data().memory else {
        return false;
    };
    let data = memory.data(&*c);
    let (start, len) = (*ptr as u32 as usize, *len as u32 as usize);
    let Some(bytes) = data.get(start..start.saturating_add(len)) else {
        return false;
    };
    let Ok(path) = std::str::from_utf8(bytes) else {
        return false;
    };
    let Ok(dir) = c.data().fs.prestat(*dirfd as u32) else {
        return false;
    };
    let joined = format!(
        "{}/{}",
        dir.trim_matches('/'),
        path.trim_start_matches("./")
    );
    joined.trim_start_matches('/') == c.data().snapshot.as_ref().expect("recording").point
}

fn fire(c: &mut Caller<'_, VmState>, import: &str, results: &mut [Val]) -> wasmtime::Result<()> {
    let phase = c.data().snapshot.as_ref().expect("recording").phase;
    match phase {
        Phase::Trace => {
            let trace = wasmtime::WasmBacktrace::force_capture(&*c);
            let frames = trace.frames().iter().map(|f| f.func_index()).collect();
            c.data_mut().snapshot.as_mut().expect("recording").fired =
                Some(Fired::Frames(frames, import.to_string()));
            Err(Reached.into())
        }
        Phase::Capture => {
            let memory = c.data().memory.expect("bound before _start");
            let size = memory.data_size(&*c);
            let len = STACK_BUFFER.min(size / 4) & !7;
            let at = size - len;
            let data = memory.data_mut(&mut *c);
            let saved = data[at..].to_vec();
            data[at..at + 4].copy_from_slice(&((at + 8) as u32).to_le_bytes());
            data[at + 4..at + 8].copy_from_slice(&(size as u32).to_le_bytes());
            let unwind = c
                .data()
                .snapshot
                .as_ref()
                .expect("recording")
                .unwind
                .ok_or_else(|| wasmtime::Error::msg("no asyncify_start_unwind export"))?;
            unwind.call(&mut *c, &[Val::I32(at as i32)], &mut [])?;
            c.data_mut().snapshot.as_mut().expect("recording").fired =
                Some(Fired::Unwinding { at, saved });
            if let Some(r) = results.first_mut() {
                *r = Val::I32(0);
            }
            Ok(())
        }
    }
}

/// A run that resumes inside its snapshot point's host call: where the unwound stack was put, what that memory
/// held, and the export that ends the rewind.
pub(crate) struct Rewind {
    at: usize,
    saved: Vec<u8>,
    stop: Func,
}

/// Ends the rewind of a run started from a snapshot (called by the host functions of
/// [`POINT_IMPORTS`]): the guest is
/// back where it was unwound, and the memory that held its stack gets its content back.
pub(crate) fn finish_rewind(c: &mut Caller<'_, VmState>) -> wasmtime::Result<()> {
    let Some(rewind) = c.data_mut().rewind.take() else {
        return Ok(());
    };
    rewind.stop.call(&mut *c, &[], &mut [])?;
    let memory = c.data().memory.expect("bound before _start");
    memory.data_mut(&mut *c)[rewind.at..rewind.at + rewind.saved.len()]
        .copy_from_slice(&rewind.saved);
    Ok(())
}

impl Snapshot {
    /// The snapshot's identity (BLAKE3 of its module and metadata).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Runs one VM from the snapshot: like [`Program::run`] of the original program, with
    /// the same outputs. [`Error::SnapshotDiverged`] when this run's world does not answer
    /// the recorded host calls as the capture's did (nothing was read or written; run the
    /// program plainly instead).
    pub fn run(&self, manifest: &Manifest, io: RunIo) -> Result<Report, Error> {
        let program = &self.program;
        let (mut store, run) = program.prepare(manifest, io, false)?;
        let fuel = manifest.limits.fuel.saturating_sub(self.meta.init_fuel);
        store.set_fuel(fuel).map_err(Error::engine)?;
        let outcome = match program.pre.instantiate(&mut store) {
            Ok(instance) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.resume(&mut store, instance)
            }))
            .map_err(|panic| Error::Internal(crate::panic_text(&*panic)))?,
            Err(e) => Err(program.instantiate_error(e)?),
        };
        let outcome = match outcome {
            Err(e) if e.is::<Diverged>() => {
                let diverged = e.downcast::<Diverged>().expect("checked");
                let state = store.into_data();
                state.fs.finish(Some("snapshot diverged"));
                run.txn.abort();
                return Err(Error::SnapshotDiverged {
                    call: diverged.index,
                    name: diverged.name,
                    detail: diverged.detail,
                });
            }
            other => other,
        };
        if store.data().rewind.is_some() && outcome.is_ok() {
            // The guest ended well without coming back to its snapshot point: a bug in zvm (a
            // guest that ran out of fuel while rewinding is a state, like any other).
            let state = store.into_data();
            state.fs.finish(Some("snapshot did not rewind"));
            run.txn.abort();
            return Err(Error::Internal(
                "a run from a snapshot ended without resuming at its snapshot point".into(),
            ));
        }
        let mut report = program.conclude(manifest, store, run, outcome)?;
        report.program = self.original_path.clone();
        report.program_hash = self.meta.program.clone();
        report.snapshot = Some(SnapshotUse {
            hash: self.hash.clone(),
            init_fuel: self.meta.init_fuel,
        });
        Ok(report)
    }

    fn resume(
        &self,
        store: &mut Store<VmState>,
        instance: wasmtime::Instance,
    ) -> wasmtime::Result<()> {
        let start = self.program.entry(store, instance)?;
        self.replay(store)?;
        let memory = store.data().memory.expect("bound by entry");
        let at = self.meta.stack_at as usize;
        let stack = &self.meta.stack;
        let data = memory.data_mut(&mut *store);
        let Some(region) = data.get_mut(at..at + stack.len()) else {
            wasmtime::bail!("the snapshot's stack buffer lies outside its memory");
        };
        let saved = region.to_vec();
        region.copy_from_slice(stack);
        let get = |store: &mut Store<VmState>, name: &str| {
            instance
                .get_func(&mut *store, name)
                .ok_or_else(|| wasmtime::Error::msg(format!("snapshot module lacks `{name}`")))
        };
        let stop = get(store, "asyncify_stop_rewind")?;
        let begin = get(store, "asyncify_start_rewind")?;
        store.data_mut().rewind = Some(Rewind { at, saved, stop });
        begin.call(&mut *store, &[Val::I32(at as i32)], &mut [])?;
        start.typed::<(), ()>(&*store)?.call(&mut *store, ())
    }

    /// Replays the recorded host calls against this run's world.
    fn replay(&self, store: &mut Store<VmState>) -> wasmtime::Result<()> {
        let memory = store.data().memory.expect("bound by entry");
        for (index, call) in self.meta.calls.iter().enumerate() {
            let diverged = |detail: String| Diverged {
                index,
                name: call.name.clone(),
                detail,
            };
            let func = self
                .linker
                .get(&mut *store, wasi::MODULE, &call.name)
                .ok()
                .and_then(wasmtime::Extern::into_func)
                .ok_or_else(|| diverged("zvm no longer provides it".into()))?;
            let ty = func.ty(&*store);
            let params: Vec<Val> = ty
                .params()
                .zip(&call.params)
                .map(|(t, v)| match t {
                    ValType::I64 => Val::I64(*v),
                    _ => Val::I32(*v as i32),
                })
                .collect();
            let data = memory.data_mut(&mut *store);
            let mut saved = Vec::new();
            for r in call.reads.iter().chain(&call.writes) {
                let range = r.at as usize..r.at as usize + r.bytes.len();
                let bytes = data
                    .get(range)
                    .ok_or_else(|| diverged("its memory lies outside the guest's".into()))?;
                saved.push((r.at as usize, bytes.to_vec()));
            }
            for r in &call.reads {
                data[r.at as usize..r.at as usize + r.bytes.len()].copy_from_slice(&r.bytes);
            }
            let mut results = vec![Val::I32(0); ty.results().len()];
            func.call(&mut *store, &params, &mut results)
                .map_err(|e| diverged(format!("it failed: {e:#}")))?;
            let got: Vec<i64> = results
                .iter()
                .map(|v| match v {
                    Val::I64(x) => *x,
                    Val::I32(x) => *x as i64,
                    _ => i64::MIN,
                })
                .collect();
            if got != call.results {
                return Err(diverged(format!(
                    "it returned {got:?}, the snapshot's run saw {:?}",
                    call.results
                ))
                .into());
            }
            let data = memory.data_mut(&mut *store);
            for w in &call.writes {
                if data[w.at as usize..w.at as usize + w.bytes.len()] != w.bytes[..] {
                    return Err(diverged(format!(
                        "it wrote other bytes at {:#x} than the snapshot's run saw",
                        w.at
                    ))
                    .into());
                }
            }
            for (at, bytes) in saved.into_iter().rev() {
                data[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        }
        Ok(())
    }
}

/// A replayed host call answered differently.
#[derive(Debug, thiserror::Error)]
#[error("snapshot diverged at host call {index} ({name}): {detail}")]
struct Diverged {
    index: usize,
    name: String,
    detail: String,
}

/// Byte strings as lowercase hex in the metadata file.
mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom("not hex digits"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(serde::de::Error::custom))
            .collect()
    }
}
