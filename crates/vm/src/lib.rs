//! One disposable VM: the engine profile, module policy, compile cache, WASI host, limits,
//! accounting and the report.
//!
//! # A guided tour
//!
//! * A [`Runtime`] is long-lived: it holds the wasmtime engine (configured for determinism:
//!   fuel, canonical NaNs, deterministic relaxed SIMD, no threads), the linker with zvm's own
//!   WASI preview1 host ([`wasi`]), the on-disk compile cache and the epoch ticker that
//!   enforces wall-clock timeouts.
//! * [`Runtime::load`] turns program bytes into a [`Program`]: validated, checked against
//!   zvm's policy ([`policy`]), compiled (or loaded from the cache) and pre-linked
//!   (`InstancePre`), ready to be instantiated many times.
//! * [`Program::run`] is one VM: it opens the manifest's channels, builds the guest's world
//!   ([`zvm_fs::Fs`]), instantiates, runs `_start` under fuel, memory and time limits, decides
//!   whether the outputs commit, and returns the [`Report`]. A guest can make a run fail in
//!   any way it likes; it cannot make `run` panic or return an error: guest failures are
//!   states in the report. `run` errs only when the VM cannot be set up (a missing input file,
//!   a bad mount), which is the manifest's or host's fault, not the guest's.
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//! use zvm_manifest::Manifest;
//! use zvm_vm::{Runtime, RuntimeConfig, RunIo, State};
//!
//! let wat = r#"(module
//!     (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
//!     (memory (export "memory") 1)
//!     (func (export "_start") (call $exit (i32.const 3))))"#;
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let program = runtime.load(Path::new("exit3.wat"), wat.as_bytes(), None)?;
//! let report = program.run(&Manifest::for_program("exit3.wat"), RunIo::default())?;
//! assert_eq!(report.state, State::Exited { code: 3 });
//! # Ok::<(), zvm_vm::Error>(())
//! ```

pub mod cache;
pub mod memo;
pub mod policy;
pub mod report;
pub mod snapshot;
pub mod wasi;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, InstancePre, Linker, Memory, Module, Store};
use zvm_channel::{ChannelHandle, Endpoint};
use zvm_fs::{Fs, WorldConfig};
use zvm_manifest::{ContentHash, Manifest, MountSource};
pub use zvm_txn::{Journal, Transaction};

pub use report::{
    CacheStatus, ChannelReport, ExportReport, InputReport, ReplayInfo, Report, SnapshotUse, State,
    Validation,
};

/// How often the engine's epoch advances; the wall-clock timeout is counted in these ticks,
/// so a timeout is enforced to within about this much.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest program accepted, so that a hostile upload cannot make the compiler use
/// unbounded memory and time. Real programs (CPython is ~25 MiB) fit well within it.
pub const MAX_PROGRAM_BYTES: u64 = 64 << 20;

/// Largest table a guest may grow, in elements: generous for C function-pointer tables.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Largest wasm call stack, in bytes (wasmtime's own default). Wasm frames live on the stack
/// of the thread that calls [`Program::run`], so that thread needs this much plus room for the
/// host: [`MIN_THREAD_STACK`]. C and Rust keep their large frames in linear memory, so this is
/// deep enough for recursive programs, and runaway recursion traps cleanly.
pub const MAX_WASM_STACK: usize = 512 << 10;

/// Smallest stack a thread calling [`Program::run`] should have: the wasm stack plus a
/// generous allowance for zvm's and wasmtime's host frames. Rust's default for spawned
/// threads (2 MiB) and the main thread's (8 MiB) both exceed it.
pub const MIN_THREAD_STACK: usize = MAX_WASM_STACK + (512 << 10);

/// Fuel between two yields of a VM run as a future ([`Program::run_async`]): about ten
/// milliseconds of computation, so that a busy VM lets the others on its thread move.
pub const ASYNC_YIELD_FUEL: u64 = 10_000_000;

/// Frames kept in a trap's backtrace: enough to see where a program failed without
/// letting deep recursion produce megabytes of report.
pub const MAX_BACKTRACE_FRAMES: usize = 64;

/// Errors of the runtime: everything that stops a VM from being set up or started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read program `{path}`: {error}")]
    ReadProgram {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("program `{path}` is {size} bytes, more than the {max}-byte limit")]
    ProgramTooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("program `{path}` has hash {actual}, but the manifest pins {expected}")]
    HashMismatch {
        path: PathBuf,
        expected: ContentHash,
        actual: ContentHash,
    },
    /// The module is not valid wasm, or zvm's policy refuses it.
    #[error("program `{path}` refused: {reason}")]
    Refused {
        path: PathBuf,
        hash: ContentHash,
        reason: String,
    },
    #[error(transparent)]
    Setup(#[from] zvm_fs::SetupError),
    #[error(transparent)]
    Channel(#[from] zvm_channel::SetupError),
    /// Staging a writable directory, or committing the run's outputs, failed.
    #[error(transparent)]
    Transaction(#[from] zvm_txn::Error),
    /// A scratch directory the manifest exports could not be written out.
    #[error("export `{guest}` to `{path}`: {message}")]
    Export {
        guest: String,
        path: PathBuf,
        message: String,
    },
    /// Every pooled slot is in use: a host capacity limit, not the guest's fault.
    #[error("all {slots} VM slots of the pool are in use; try again later or configure more")]
    PoolExhausted { slots: u32 },
    #[error("the manifest's memory limit of {asked} bytes exceeds the pool's {max}-byte slots")]
    MemoryOverPool { asked: u64, max: u64 },
    #[error("engine: {0}")]
    Engine(String),
    /// A snapshot could not be made or read (see [`snapshot`]).
    #[error("snapshot: {reason}")]
    Snapshot { reason: String },
    /// A run from a snapshot found its world answering a recorded host call differently
    /// from the snapshot's own run: nothing was read or written; run the program plainly.
    #[error("the snapshot does not fit this run: host call {call} (`{name}`): {detail}")]
    SnapshotDiverged {
        call: usize,
        name: String,
        detail: String,
    },
    /// A bug in zvm itself, caught before it could end the process.
    #[error("internal error in zvm (please report it): {0}")]
    Internal(String),
}

impl Error {
    fn engine(e: impl std::fmt::Display) -> Error {
        Error::Engine(e.to_string())
    }
}

/// Default number of VMs a pooled runtime holds at once: enough for a thousand concurrent
/// guests, while each slot only reserves address space until it is used (a 64-bit process
/// has 128 TiB of it; a slot takes about 4 GiB plus guards).
pub const DEFAULT_POOL_SLOTS: u32 = 1024;

/// Default bytes of each pooled memory kept resident and zeroed with `memset` on reuse
/// instead of being handed back to the kernel: small guests then reuse warm pages.
pub const DEFAULT_KEEP_RESIDENT: usize = 1 << 20;

/// Tables a module may have in a pooled slot; C and Rust programs have one.
pub const MAX_TABLES_PER_MODULE: u32 = 2;

/// Settings of a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where compiled programs are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// How VM instances and memories are allocated.
    pub allocator: Allocator,
    /// Where transactions are journalled for crash recovery; `None` still stages and
    /// commits outputs together but cannot finish a commit a crash interrupted.
    pub journal: Option<Journal>,
}

/// How VM instances and memories are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Map fresh memory for every VM: nothing is reserved up front, which suits a process
    /// that runs one VM (`zvm run`).
    OnDemand,
    /// Reuse pre-reserved slots with copy-on-write memory images: the fast path for a
    /// process that runs many VMs.
    Pooling(PoolConfig),
}

impl Default for Allocator {
    fn default() -> Allocator {
        Allocator::Pooling(PoolConfig::default())
    }
}

/// Sizing of the pooling allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// VMs that can exist at once; one more fails with [`Error::PoolExhausted`].
    pub slots: u32,
    /// Largest linear memory of a pooled VM, in bytes; a manifest may not ask for more.
    pub max_memory: u64,
    /// Bytes of each memory kept resident between uses (see [`DEFAULT_KEEP_RESIDENT`]).
    pub keep_resident: usize,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            slots: DEFAULT_POOL_SLOTS,
            max_memory: zvm_manifest::MAX_MEMORY,
            keep_resident: DEFAULT_KEEP_RESIDENT,
        }
    }
}

/// What each VM's store holds: the guest's world plus per-run bookkeeping.
pub struct VmState {
    pub(crate) fs: Fs,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) memory: Option<Memory>,
    limiter: Limiter,
    /// Set while a snapshot is being made: host calls are recorded.
    pub(crate) snapshot: Option<Box<snapshot::Recorder>>,
    /// Set while a run from a snapshot rewinds to its snapshot point.
    pub(crate) rewind: Option<snapshot::Rewind>,
}

/// Enforces the memory and table limits and records what the guest asked for.
struct Limiter {
    memory_limit: usize,
    peak_memory: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.hit = true;
            return Ok(false);
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        // Tables are bounded by their element count; several small ones are harmless.
        16
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the runtime is dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: &Engine) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("zvm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Ticker { stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A long-lived runtime: engine, linker, cache. Cheap to share across threads.
pub struct Runtime {
    engine: Engine,
    linker: Linker<VmState>,
    /// The host for VMs run as futures ([`Program::run_async`]), built on first use: a
    /// process that runs one VM synchronously (`zvm run`) never pays for it.
    linker_async: Arc<std::sync::OnceLock<Linker<VmState>>>,
    cache: Option<cache::ModuleCache>,
    /// The compile cache's directory; snapshots are kept under it.
    cache_dir: Option<PathBuf>,
    allocator: Allocator,
    journal: Option<Journal>,
    _ticker: Ticker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

/// The engine profile: everything that makes a run deterministic and bounded.
pub fn engine_config() -> Config {
    let mut c = Config::new();
    c.consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        // Wasm threads are refused by construction: wasmtime's `threads` feature is not compiled
        // in, so the validator rejects shared memories and atomics.
        .shared_memory(false)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(MAX_BACKTRACE_FRAMES))
        .max_wasm_stack(MAX_WASM_STACK);
    c
}

/// The engine profile with `allocator`'s instance allocation strategy; benchmarks build
/// their bare-wasmtime baseline from the same settings.
pub fn engine_config_for(allocator: Allocator) -> Config {
    let mut config = engine_config();
    if let Allocator::Pooling(p) = allocator {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_core_instances(p.slots)
            .total_memories(p.slots)
            .total_tables(p.slots)
            .total_stacks(p.slots)
            .max_memory_size(usize::try_from(p.max_memory).unwrap_or(usize::MAX))
            .max_tables_per_module(MAX_TABLES_PER_MODULE)
            .table_elements(MAX_TABLE_ELEMENTS)
            .linear_memory_keep_resident(p.keep_resident)
            .table_keep_resident(p.keep_resident);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime, Error> {
        let engine_config = engine_config_for(config.allocator);
        let engine = Engine::new(&engine_config).map_err(Error::engine)?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(Error::engine)?;
        let cache_dir = config.cache_dir.clone();
        let cache = config
            .cache_dir
            .map(|dir| cache::ModuleCache::new(dir, &engine));
        Ok(Runtime {
            _ticker: Ticker::start(&engine),
            engine,
            linker,
            linker_async: Arc::default(),
            cache,
            cache_dir,
            allocator: config.allocator,
            journal: config.journal,
        })
    }

    /// The default cache directory: `$ZVM_CACHE_DIR`, else `$XDG_CACHE_HOME/zvm`, else
    /// `$HOME/.cache/zvm`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("ZVM_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("zvm"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("zvm"))
    }

    /// The journal transactions of this runtime are recorded in, if any.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// A new transaction journalled like this runtime's runs: for callers that commit several
    /// runs together ([`RunIo::in_transaction`]).
    pub fn transaction(&self) -> Transaction {
        Transaction::new(self.journal.clone())
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads, checks and prepares the program at `path`.
    pub fn load_file(&self, path: &Path, pin: Option<ContentHash>) -> Result<Program, Error> {
        let read_err = |error| Error::ReadProgram {
            path: path.to_path_buf(),
            error,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_PROGRAM_BYTES {
            return Err(Error::ProgramTooLarge {
                path: path.to_path_buf(),
                size,
                max: MAX_PROGRAM_BYTES,
            });
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        self.load(path, &bytes, pin)
    }

    /// Checks and prepares a program from its bytes (wasm binary, or wat text).
    pub fn load(
        &self,
        path: &Path,
        bytes: &[u8],
        pin: Option<ContentHash>,
    ) -> Result<Program, Error> {
        let hash = ContentHash::of(bytes);
        if let Some(expected) = pin
            && expected != hash
        {
            return Err(Error::HashMismatch {
                path: path.to_path_buf(),
                expected,
                actual: hash,
            });
        }
        let refused = |reason: String| Error::Refused {
            path: path.to_path_buf(),
            hash,
            reason,
        };
        if bytes.is_empty() {
            return Err(refused("the file is empty, not a wasm module".into()));
        }
        if bytes.len() as u64 > MAX_PROGRAM_BYTES {
            return Err(refused(format!(
                "larger than the {MAX_PROGRAM_BYTES}-byte limit"
            )));
        }
        let cached = self.cache.as_ref().and_then(|c| c.get(&self.engine, &hash));
        let (module, validation) = match cached {
            Some(module) => (module, Validation::Cached),
            None => {
                let binary = if bytes.starts_with(b"\0asm") {
                    std::borrow::Cow::Borrowed(bytes)
                } else {
                    // Text format, for hand-written programs; wasm validation follows.
                    let text = std::str::from_utf8(bytes).map_err(|_| {
                        refused("not a wasm module (no `\\0asm` header, and not wat text)".into())
                    })?;
                    std::borrow::Cow::Owned(
                        wat::parse_str(text)
                            .map_err(|e| refused(format!("not a wasm module: {e}")))?,
                    )
                };
                policy::check_binary(&binary).map_err(refused)?;
                let module = Module::from_binary(&self.engine, &binary)
                    .map_err(|e| refused(format!("{e:#}")))?;
                (module, Validation::Compiled)
            }
        };
        policy::check_module(&module).map_err(refused)?;
        if validation == Validation::Compiled
            && let Some(cache) = &self.cache
        {
            // A cache that cannot be written only costs speed next time.
            if let Err(e) = cache.put(&hash, &module) {
                tracing::debug!("compile cache: {e}");
            }
        }
        self.program(path, hash, module, validation)
    }

    /// A compiled module that passed zvm's policy, linked and ready to run.
    fn program(
        &self,
        path: &Path,
        hash: ContentHash,
        module: Module,
        validation: Validation,
    ) -> Result<Program, Error> {
        let refused = |reason: String| Error::Refused {
            path: path.to_path_buf(),
            hash,
            reason,
        };
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| refused(format!("{e:#}")))?;
        // Resolved once here so that each run finds its exports without a name lookup.
        let start = module
            .get_export_index("_start")
            .ok_or_else(|| refused("no `_start` export".into()))?;
        let memory = module.get_export_index("memory");
        Ok(Program {
            path_text: path.display().to_string(),
            hash_text: hash.to_string(),
            path: path.to_path_buf(),
            hash,
            validation,
            pre,
            pre_async: std::sync::OnceLock::new(),
            linker_async: self.linker_async.clone(),
            start,
            memory,
            pool: match self.allocator {
                Allocator::Pooling(p) => Some(p),
                Allocator::OnDemand => None,
            },
            journal: self.journal.clone(),
        })
    }
}

/// A validated, compiled and pre-linked program, ready to run many times.
pub struct Program {
    path: PathBuf,
    hash: ContentHash,
    validation: Validation,
    pre: InstancePre<VmState>,
    /// The program linked against the async host, made on the first [`Program::run_async`].
    pre_async: std::sync::OnceLock<InstancePre<VmState>>,
    linker_async: Arc<std::sync::OnceLock<Linker<VmState>>>,
    pool: Option<PoolConfig>,
    start: wasmtime::ModuleExport,
    memory: Option<wasmtime::ModuleExport>,
    /// The path and hash as the report shows them, formatted once.
    path_text: String,
    hash_text: String,
    journal: Option<Journal>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("path", &self.path)
            .field("hash", &self.hash)
            .field("validation", &self.validation)
            .finish_non_exhaustive()
    }
}

/// Host-side endpoints that replace channels' manifest sources for one run (embedding:
/// feed stdin from memory, capture stdout).
///
/// ```
/// use std::path::Path;
/// use zvm_channel::{Endpoint, SharedBuffer};
/// use zvm_manifest::Manifest;
/// use zvm_vm::{Allocator, PoolConfig, RunIo, Runtime, RuntimeConfig};
///
/// // An echo program: copies up to 64 bytes of stdin to stdout.
/// let wat = r#"(module
///     (import "wasi_snapshot_preview1" "fd_read" (func $r (param i32 i32 i32 i32) (result i32)))
///     (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
///     (memory (export "memory") 1)
///     (func (export "_start")
///         (i32.store (i32.const 0) (i32.const 64))
///         (i32.store (i32.const 4) (i32.const 64))
///         (drop (call $r (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
///         (i32.store (i32.const 4) (i32.load (i32.const 8)))
///         (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
///
/// // One runtime (engine, pool, cache) for the process; one program prepared once.
/// let runtime = Runtime::new(RuntimeConfig {
///     cache_dir: None,
///     journal: None,
///     allocator: Allocator::Pooling(PoolConfig { slots: 16, ..PoolConfig::default() }),
/// })?;
/// let program = runtime.load(Path::new("echo.wat"), wat.as_bytes(), None)?;
/// let manifest = Manifest::for_program("echo.wat");
///
/// // Then a fresh VM per request: cheap, and shareable across threads.
/// for request in ["one", "two"] {
///     let out = SharedBuffer::new();
///     let io = RunIo::default()
///         .bind("stdin", Endpoint::Reader(Box::new(std::io::Cursor::new(request))))
///         .bind("stdout", out.endpoint());
///     let report = program.run(&manifest, io)?;
///     assert!(report.state.is_ok());
///     assert_eq!(out.contents(), request.as_bytes());
/// }
/// # Ok::<(), zvm_vm::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct RunIo {
    pub endpoints: Vec<(String, Endpoint)>,
    /// A transaction owned by the caller: the run stages its outputs there and leaves the
    /// commit to the caller (several runs landing together). Without one, the run commits
    /// its own outputs under the manifest's commit policy.
    pub txn: Option<Arc<Transaction>>,
}

impl RunIo {
    /// Binds channel `name` to `endpoint` for this run.
    pub fn bind(mut self, name: &str, endpoint: Endpoint) -> RunIo {
        self.endpoints.push((name.to_string(), endpoint));
        self
    }

    /// Stages this run's outputs in `txn`, which the caller commits or aborts.
    pub fn in_transaction(mut self, txn: Arc<Transaction>) -> RunIo {
        self.txn = Some(txn);
        self
    }
}

impl Program {
    /// The program's path as it was loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn hash(&self) -> ContentHash {
        self.hash
    }

    pub fn validation(&self) -> Validation {
        self.validation
    }

    /// Runs one VM on this thread. See the crate documentation for what is an error and
    /// what is a state.
    pub fn run(&self, manifest: &Manifest, io: RunIo) -> Result<Report, Error> {
        let (mut store, run) = self.prepare(manifest, io, false)?;
        let outcome = match self.pre.instantiate(&mut store) {
            // A bug in zvm's host must not take the embedding process down with the guest:
            // a panic becomes an error of this run (its staged outputs are dropped unseen).
            Ok(instance) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.start(&mut store, instance)
            }))
            .map_err(|panic| Error::Internal(panic_text(&*panic)))?,
            Err(e) => Err(self.instantiate_error(e)?),
        };
        self.conclude(manifest, store, run, outcome)
    }

    /// Runs one VM as a future: a guest blocked on a pipe yields its thread to other VMs
    /// (see [`zvm_channel::pipe`]), and a long computation yields every
    /// [`ASYNC_YIELD_FUEL`] units of fuel, so that thousands of VMs share a few threads.
    /// Otherwise the same as [`Program::run`].
    pub async fn run_async(&self, manifest: &Manifest, io: RunIo) -> Result<Report, Error> {
        let (mut store, run) = self.prepare(manifest, io, true)?;
        store
            .fuel_async_yield_interval(Some(ASYNC_YIELD_FUEL))
            .map_err(Error::engine)?;
        let outcome = match self.pre_async()?.instantiate_async(&mut store).await {
            Ok(instance) => self.start_async(&mut store, instance).await,
            Err(e) => Err(self.instantiate_error(e)?),
        };
        self.conclude(manifest, store, run, outcome)
    }

    /// The program linked against the async WASI host (and that host), made once.
    fn pre_async(&self) -> Result<&InstancePre<VmState>, Error> {
        if let Some(pre) = self.pre_async.get() {
            return Ok(pre);
        }
        let engine = self.pre.module().engine();
        let linker = match self.linker_async.get() {
            Some(l) => l,
            None => {
                let mut l = Linker::new(engine);
                wasi::add_to_linker_async(&mut l).map_err(Error::engine)?;
                // Another thread may have won the race; either linker is the same.
                let _ = self.linker_async.set(l);
                self.linker_async.get().expect("set above")
            }
        };
        let pre = linker
            .instantiate_pre(self.pre.module())
            .map_err(Error::engine)?;
        let _ = self.pre_async.set(pre);
        Ok(self.pre_async.get().expect("set above"))
    }

    /// A failed instantiation: a host capacity limit is an error of the caller's; anything
    /// else is the guest's failure (a trap in a start function, a data segment out of
    /// bounds...), reported as its state.
    fn instantiate_error(&self, e: wasmtime::Error) -> Result<wasmtime::Error, Error> {
        if e.is::<wasmtime::PoolConcurrencyLimitError>() {
            return Err(Error::PoolExhausted {
                slots: self.pool.map(|p| p.slots).unwrap_or(0),
            });
        }
        Ok(e)
    }

    /// Everything before the guest starts: the transaction, staged writable directories,
    /// channels, the guest's world and the store with its limits.
    fn prepare(
        &self,
        manifest: &Manifest,
        mut io: RunIo,
        nonblocking: bool,
    ) -> Result<(Store<VmState>, RunState), Error> {
        let started = Instant::now();
        if let Some(pool) = self.pool
            && manifest.limits.memory > pool.max_memory
        {
            return Err(Error::MemoryOverPool {
                asked: manifest.limits.memory,
                max: pool.max_memory,
            });
        }
        let own_txn = io.txn.is_none();
        let txn = io
            .txn
            .take()
            .unwrap_or_else(|| Arc::new(Transaction::new(self.journal.clone())));
        // Writable host directories are staged: the guest works in a replica that replaces
        // the directory only when the run commits.
        let mut mounts = std::borrow::Cow::Borrowed(&manifest.mounts);
        let mut shared_inodes = Vec::new();
        for (i, m) in manifest.mounts.iter().enumerate() {
            if let MountSource::Dir {
                path,
                writable: true,
            } = &m.source
            {
                let staged = txn.stage_dir(path).map_err(|e| zvm_fs::SetupError::Mount {
                    guest: m.guest.clone(),
                    message: match e {
                        zvm_txn::Error::StageDir { reason, .. } => reason,
                        other => other.to_string(),
                    },
                })?;
                mounts.to_mut()[i].source = MountSource::Dir {
                    path: staged.path,
                    writable: true,
                };
                shared_inodes.resize(i + 1, None);
                shared_inodes[i] = Some(Arc::new(staged.shared));
            }
        }
        let mut channels = Vec::with_capacity(manifest.channels.len());
        for ch in &manifest.channels {
            let custom = io
                .endpoints
                .iter()
                .position(|(n, _)| n == ch.name.as_str())
                .map(|i| io.endpoints.swap_remove(i).1);
            channels.push(match custom {
                Some(endpoint) => ChannelHandle::with_endpoint(ch, endpoint),
                None => ChannelHandle::open(ch, &txn)?,
            });
        }
        let mut fs = Fs::new(WorldConfig {
            channels,
            mounts: &mounts,
            shared_inodes,
            limits: manifest.limits,
            clock: manifest.clock,
            seed: manifest.seed,
        })?;
        if nonblocking {
            fs.set_nonblocking();
        }
        let mut args = Vec::with_capacity(manifest.args.len() + 1);
        args.push(manifest.argv0.clone());
        args.extend(manifest.args.iter().cloned());
        let env = manifest
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let limits = manifest.limits;
        let mut store = Store::new(
            self.pre.module().engine(),
            VmState {
                fs,
                args,
                env,
                memory: None,
                snapshot: None,
                rewind: None,
                limiter: Limiter {
                    memory_limit: usize::try_from(limits.memory).unwrap_or(usize::MAX),
                    peak_memory: 0,
                    hit: false,
                },
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(limits.fuel).map_err(Error::engine)?;
        let ticks = (limits.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);
        Ok((
            store,
            RunState {
                started,
                own_txn,
                txn,
            },
        ))
    }

    /// Everything after the guest ends: the state, the commit, the report.
    fn conclude(
        &self,
        manifest: &Manifest,
        store: Store<VmState>,
        run: RunState,
        outcome: wasmtime::Result<()>,
    ) -> Result<Report, Error> {
        let RunState {
            started,
            own_txn,
            txn,
        } = run;
        let limits = manifest.limits;

        let fuel_left = store.get_fuel().unwrap_or(0);
        let memory_etag = if manifest.memory_etag {
            store
                .data()
                .memory
                .map(|m| blake3::hash(m.data(&store)).to_hex().to_string())
        } else {
            None
        };
        let state_data = store.into_data();
        let quota_hit = state_data
            .fs
            .channels()
            .iter()
            .find_map(|c| c.quota_hit().map(|q| (c.name().to_string(), q.to_string())));
        let (mut state, exit_code, backtrace) =
            classify(outcome, state_data.limiter.hit, quota_hit);
        let mut commit = manifest.commit.commits(state.is_ok());
        let mut exports = Vec::new();
        if commit {
            for e in &manifest.exports {
                exports.push(export(&state_data.fs, &txn, e)?);
            }
        }
        let failure = (!state.is_ok()).then(|| state.to_string());
        let summaries = state_data.fs.finish(failure.as_deref());
        if let Some(changed) = summaries.iter().find(|s| s.input_changed) {
            // Whatever the policy: outputs computed from a torn input are not results.
            state = State::InputChanged {
                channel: changed.name.clone(),
            };
            commit = false;
            exports.clear();
        }
        if own_txn {
            if commit {
                txn.commit()?;
            } else {
                txn.abort();
            }
        }
        // With the caller's transaction, `committed` says the run wants its outputs to land.
        let channels = summaries
            .into_iter()
            .map(|s| ChannelReport {
                name: s.name,
                mode: s.mode.as_str().to_string(),
                etag: s.etag,
                reads: s.counters.reads,
                read_bytes: s.counters.read_bytes,
                writes: s.counters.writes,
                write_bytes: s.counters.write_bytes,
                quota_hit: s.quota_hit.map(|q| q.to_string()),
                committed: commit && s.output.is_some(),
            })
            .collect();
        Ok(Report {
            version: report::REPORT_VERSION,
            program: self.path_text.clone(),
            program_hash: self.hash_text.clone(),
            validation: self.validation,
            state_text: state.to_string(),
            state,
            exit_code,
            backtrace,
            channels,
            fuel_used: limits.fuel.saturating_sub(fuel_left),
            fuel_limit: limits.fuel,
            wall_time_us: started.elapsed().as_micros() as u64,
            peak_memory: state_data.limiter.peak_memory as u64,
            committed: commit,
            memory_etag,
            exports,
            replay: None,
            cache: CacheStatus::Off,
            snapshot: None,
        })
    }

    async fn start_async(
        &self,
        store: &mut Store<VmState>,
        instance: wasmtime::Instance,
    ) -> wasmtime::Result<()> {
        let start = self.entry(store, instance)?;
        start
            .typed::<(), ()>(&*store)?
            .call_async(&mut *store, ())
            .await
    }

    /// Binds the instance's memory for the host and finds `_start`.
    fn entry(
        &self,
        store: &mut Store<VmState>,
        instance: wasmtime::Instance,
    ) -> wasmtime::Result<wasmtime::Func> {
        let memory = self
            .memory
            .as_ref()
            .and_then(|m| instance.get_module_export(&mut *store, m))
            .and_then(wasmtime::Extern::into_memory);
        store.data_mut().memory = memory;
        instance
            .get_module_export(&mut *store, &self.start)
            .and_then(wasmtime::Extern::into_func)
            .ok_or_else(|| wasmtime::Error::msg("`_start` is not a function"))
    }

    fn start(
        &self,
        store: &mut Store<VmState>,
        instance: wasmtime::Instance,
    ) -> wasmtime::Result<()> {
        let start = self.entry(store, instance)?;
        start.typed::<(), ()>(&*store)?.call(&mut *store, ())
    }
}

/// What [`Program::prepare`] hands to [`Program::conclude`].
struct RunState {
    started: Instant,
    own_txn: bool,
    txn: Arc<Transaction>,
}

/// The message of a panic payload.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Writes one export into a file staged in `txn`, hashing it on the way.
fn export(fs: &Fs, txn: &Transaction, e: &zvm_manifest::Export) -> Result<ExportReport, Error> {
    let fail = |message: String| Error::Export {
        guest: e.guest.clone(),
        path: e.path.clone(),
        message,
    };
    let staged = txn.stage_file(&e.path, false)?;
    let mut out = HashingWriter {
        inner: std::io::BufWriter::new(&staged.file),
        hasher: blake3::Hasher::new(),
        size: 0,
    };
    fs.export_tar(&e.guest, &mut out).map_err(fail)?;
    std::io::Write::flush(&mut out.inner).map_err(|e| fail(e.to_string()))?;
    Ok(ExportReport {
        guest: e.guest.clone(),
        path: e.path.display().to_string(),
        etag: out.hasher.finalize().to_hex().to_string(),
        size: out.size,
    })
}

/// A writer that hashes and counts what passes through.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    size: u64,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Turns the outcome of `_start` into the report's state, exit code and backtrace.
fn classify(
    outcome: wasmtime::Result<()>,
    memory_hit: bool,
    quota_hit: Option<(String, String)>,
) -> (State, Option<u32>, Vec<String>) {
    let (mut exit, mut trap, mut backtrace) = (None, None, Vec::new());
    match &outcome {
        Ok(()) => exit = Some(0),
        Err(e) => {
            if let Some(wasi::Exit(code)) = e.downcast_ref::<wasi::Exit>() {
                exit = Some(*code);
            } else {
                trap = Some(e.downcast_ref::<wasmtime::Trap>().copied());
                if let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
                    backtrace = bt
                        .frames()
                        .iter()
                        .map(|f| {
                            let name = f.func_name().unwrap_or("<unnamed>");
                            match f.module_offset() {
                                Some(off) => {
                                    format!("{name} (func {}, offset {off:#x})", f.func_index())
                                }
                                None => format!("{name} (func {})", f.func_index()),
                            }
                        })
                        .collect();
                }
            }
        }
    }
    let state = match (trap, exit) {
        (Some(Some(wasmtime::Trap::OutOfFuel)), _) => State::OutOfFuel,
        (Some(Some(wasmtime::Trap::Interrupt)), _) => State::TimedOut,
        _ if memory_hit => State::MemoryLimit,
        _ if quota_hit.is_some() => {
            let (channel, quota) = quota_hit.expect("checked above");
            State::QuotaExceeded { channel, quota }
        }
        (Some(_), _) => State::Trap {
            message: trap_message(outcome.as_ref().expect_err("a trap is an error")),
        },
        (None, Some(0)) => State::Ok,
        (None, Some(code)) => State::Exited { code },
        (None, None) => unreachable!("an outcome is an exit or a trap"),
    };
    (state, exit, backtrace)
}

fn trap_message(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        let text = trap.to_string();
        return text
            .strip_prefix("wasm trap: ")
            .unwrap_or(&text)
            .to_string();
    }
    // Instantiation failures and host errors: the outermost message is the most specific.
    let text = format!("{e}");
    text.lines().next().unwrap_or("unknown failure").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zvm_channel::{Endpoint, SharedBuffer};

    fn run_wat(wat: &str, manifest: Manifest) -> (Report, Vec<u8>) {
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let program = rt
            .load(Path::new("test.wat"), wat.as_bytes(), None)
            .unwrap();
        let out = SharedBuffer::new();
        let io = RunIo::default()
            .bind("stdin", Endpoint::Reader(Box::new(std::io::empty())))
            .bind("stdout", out.endpoint());
        let report = program.run(&manifest, io).unwrap();
        (report, out.contents())
    }

    fn refusal(wat: &str) -> String {
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        match rt.load(Path::new("test.wat"), wat.as_bytes(), None) {
            Err(Error::Refused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    const HELLO: &str = r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 16) "hi\n")
        (func (export "_start")
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 3))
            (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

    #[test]
    fn embedded_run_captures_stdout_and_counts_it() {
        let (report, out) = run_wat(HELLO, Manifest::for_program("test.wat"));
        assert_eq!(out, b"hi\n");
        assert_eq!(report.state, State::Ok);
        let stdout = &report.channels[1];
        assert_eq!(
            (stdout.name.as_str(), stdout.writes, stdout.write_bytes),
            ("stdout", 1, 3)
        );
        assert_eq!(stdout.etag, blake3::hash(b"hi\n").to_hex().to_string());
        assert!(report.fuel_used > 0 && report.fuel_used < 100);
    }

    #[test]
    fn bad_pointers_are_efault_not_host_faults() {
        let wat = r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 65530))
                (i32.store (i32.const 4) (i32.const 100))
                (call $exit (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
        let (report, out) = run_wat(wat, Manifest::for_program("test.wat"));
        assert!(out.is_empty());
        assert_eq!(report.exit_code, Some(zvm_fs::Errno::Fault.raw() as u32));
    }

    #[test]
    fn pointers_at_the_end_of_the_address_space_are_efault() {
        // iovs near u32::MAX, argv pointers near u32::MAX, prestat out near u32::MAX: each
        // must answer EFAULT (21), never overflow in the host.
        let wat = r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_prestat_get" (func $pre (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (if (i32.ne (call $w (i32.const 1) (i32.const -2) (i32.const 3) (i32.const 8)) (i32.const 21))
                    (then (call $exit (i32.const 1))))
                (if (i32.ne (call $args (i32.const -4) (i32.const 100)) (i32.const 21))
                    (then (call $exit (i32.const 2))))
                (if (i32.ne (call $args (i32.const 100) (i32.const -3)) (i32.const 21))
                    (then (call $exit (i32.const 3))))
                (if (i32.ne (call $pre (i32.const 3) (i32.const -2)) (i32.const 21))
                    (then (call $exit (i32.const 4))))))"#;
        let mut m = Manifest::for_program("test.wat");
        m.args = vec!["an argument".into()];
        let (report, _) = run_wat(wat, m);
        assert_eq!(report.state, State::Ok, "{report:?}");
    }

    #[test]
    fn memory_growth_past_the_limit_fails_and_is_reported() {
        let wat = r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (if (i32.ne (memory.grow (i32.const 100)) (i32.const -1)) (then unreachable))
                (call $exit (i32.const 7))))"#;
        let mut m = Manifest::for_program("test.wat");
        m.limits.memory = 1 << 20;
        let (report, _) = run_wat(wat, m);
        assert_eq!(report.state, State::MemoryLimit);
        assert_eq!(report.exit_code, Some(7));
        assert_eq!(report.peak_memory, 65536);
    }

    #[test]
    fn fuel_is_deterministic_and_bounded() {
        let wat = r#"(module (func (export "_start") (loop (br 0))))"#;
        let mut m = Manifest::for_program("test.wat");
        m.limits.fuel = 10_000;
        let (a, _) = run_wat(wat, m.clone());
        assert_eq!(a.state, State::OutOfFuel);
        assert_eq!(a.fuel_used, 10_000);
    }

    #[test]
    fn policy_names_what_it_refuses() {
        let r = refusal(
            r#"(module (import "env" "f" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
        );
        assert!(r.contains("`env::f`"), "{r}");
        let r = refusal(r#"(module (memory (export "memory") 1))"#);
        assert!(r.contains("`_start`"), "{r}");
        let r = refusal(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32))) (memory (export "memory") 1) (func (export "_start")))"#,
        );
        assert!(r.contains("fd_write"), "{r}");
        let r =
            refusal(r#"(module (memory (export "memory") 1 1 shared) (func (export "_start")))"#);
        assert!(r.contains("shared memory"), "{r}");
    }
}
