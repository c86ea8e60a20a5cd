//! Same input, same output, beyond examples: a property test over modules wasm-smith
//! generates. Each module runs three times under one manifest: twice in this process, through
//! the library (a pooled [`Runtime`], so the second run reuses a VM slot), and once more in a
//! `zvm run` process of its own, which compiles the module itself (`--no-cache`: neither the
//! compile cache nor the result cache) with the on-demand allocator the CLI uses. The three
//! reports must agree on everything but the wall time and how caches took part (state, exit
//! code, fuel, peak memory, every channel's counters and etag, the final memory's etag, the
//! trap backtrace), and the three runs must write the same bytes to stdout.
//!
//! The modules are nearly those of the cargo-fuzz target
//! `fuzz/fuzz_targets/same_input_same_output.rs` ([`smith_config`] says where they differ):
//! they may import any of zvm's WASI functions, export `_start` and `memory`, and use the
//! features the engine accepts, floats, NaN bits and SIMD (relaxed SIMD included) among them,
//! since making those deterministic is the engine profile's job. The fuzz target runs for as
//! long as one likes; this test runs a bounded number of cases in every `cargo test`.
//! `ZVM_DETERMINISM_CASES=N` runs N cases instead, `ZVM_DETERMINISM_SEED=S` draws other
//! modules (`random` for a new draw each time), and `ZVM_DETERMINISM_VERBOSE=1` prints each
//! case's outcome; run with `--nocapture` to see the counts.
//!
//! A failure shows the differences field by field and writes the smallest failing module
//! proptest found to `target/zvm-test/determinism/` as `.wasm` and `.wat`, with a manifest
//! that runs it as the test did.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed, TestError, TestRunner};
use serde_json::Value;
use zvm_channel::SharedBuffer;
use zvm_manifest::Manifest;
use zvm_vm::{
    Allocator, CacheStatus, PoolConfig, Program, Report, RunIo, Runtime, RuntimeConfig, State,
    Validation,
};

use crate::support;

/// Cases in a plain `cargo test`: each compiles one module twice (here and in the `zvm`
/// process) and runs it three times, about 25 ms in a debug build on an idle machine, so the
/// test takes a few seconds even on a busy one.
const DEFAULT_CASES: u32 = 64;
/// Environment variable that sets the number of cases, for long runs.
const CASES_VAR: &str = "ZVM_DETERMINISM_CASES";
/// Environment variable that sets proptest's seed: a number, or `random`.
const SEED_VAR: &str = "ZVM_DETERMINISM_SEED";
/// Environment variable that makes each case print its outcome.
const VERBOSE_VAR: &str = "ZVM_DETERMINISM_VERBOSE";
/// The default draw: fixed, so that CI runs the same modules every time and a failure there
/// is reproduced by running the test again.
const DEFAULT_SEED: u64 = 0x2e5e_ed00_0000_0004;

/// Most input bytes wasm-smith reads per module; with the limits of [`smith_config`] it
/// seldom uses more.
const MAX_INPUT: usize = 4096;
/// Shrinking steps after a failure: each step costs a compile, three runs and a process, and
/// shortening wasm-smith's input changes the whole module, so long shrinks gain little.
const MAX_SHRINK_ITERS: u32 = 64;

/// Fuel per run: enough for loops to do something, small enough for many runs a second.
const FUEL: u64 = 10_000_000;
/// Largest linear memory, and the most wasm-smith declares.
const MEMORY: u64 = 16 << 20;
/// Far beyond what the fuel takes, so that fuel, not the clock, ends every run.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The guest's random seed: fixed, and not the default, so that a run that ignored it would
/// show.
const GUEST_SEED: u64 = 20_261_124;
/// Bytes written to stdout or stderr before a quota stops the guest: a loop of `fd_write`s
/// could otherwise write gigabytes within the fuel, all of which this test would hold.
const STDIO_WRITE_BYTES: &str = "1 MiB";
/// The least share of cases that must get as far as the comparison, in percent. With
/// [`smith_config`] all of them do; fewer than half would mean the test has quietly stopped
/// comparing much (a wasm-smith or engine change that gets modules refused).
const MIN_COMPARED_PERCENT: u32 = 50;

/// The choices of the `same_input_same_output` fuzz target but two, both because this test
/// draws its input uniformly at random, where libFuzzer's coverage guidance steers around
/// modules that do nothing:
///
/// * no reference types: wasm-smith would draw `externref` for about one value type in seven,
///   and wasmtime without its GC feature refuses any module that has one; nearly nine
///   modules in ten were refused. (`funcref` tables and `call_indirect` remain.)
/// * no memories besides the exported one (`max_memories: 0`; wasm-smith adds the one
///   `exports` asks for to those it draws): a second memory makes zvm's pool refuse the
///   module and zvm's limiter end an on-demand run before it starts, about one in three.
fn smith_config() -> &'static wasm_smith::Config {
    static CONFIG: OnceLock<wasm_smith::Config> = OnceLock::new();
    CONFIG.get_or_init(|| wasm_smith::Config {
        available_imports: Some(wat_to_wasm(&all_imports_wat())),
        exports: Some(wat_to_wasm(
            r#"(module (func (export "_start")) (memory (export "memory") 1))"#,
        )),
        threads_enabled: false,
        shared_everything_threads_enabled: false,
        // wasmtime is built without its GC feature, so GC types and exceptions (which need
        // it) are refused at load; generating them would only waste cases.
        gc_enabled: false,
        exceptions_enabled: false,
        custom_descriptors_enabled: false,
        custom_page_sizes_enabled: false,
        wide_arithmetic_enabled: false,
        memory64_enabled: false,
        max_memories: 0,
        max_tables: 1,
        max_table_elements: 1_000,
        max_memory32_bytes: MEMORY,
        max_funcs: 20,
        max_instructions: 200,
        canonicalize_nans: false,
        reference_types_enabled: false,
        ..wasm_smith::Config::default()
    })
}

fn wat_to_wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("valid wat")
}

/// zvm's WASI functions and their parameter types (`i` i32, `I` i64); each returns an errno
/// but `proc_exit`. [`all_imports_wat`] checks the names against the host's source and the
/// runtime checks the signatures when it links a module importing them all.
const WASI_FUNCTIONS: &[(&str, &str)] = &[
    ("args_get", "ii"),
    ("args_sizes_get", "ii"),
    ("environ_get", "ii"),
    ("environ_sizes_get", "ii"),
    ("clock_res_get", "ii"),
    ("clock_time_get", "iIi"),
    ("fd_advise", "iIIi"),
    ("fd_allocate", "iII"),
    ("fd_close", "i"),
    ("fd_datasync", "i"),
    ("fd_sync", "i"),
    ("fd_fdstat_get", "ii"),
    ("fd_fdstat_set_flags", "ii"),
    ("fd_fdstat_set_rights", "iII"),
    ("fd_filestat_get", "ii"),
    ("fd_filestat_set_size", "iI"),
    ("fd_filestat_set_times", "iIIi"),
    ("fd_pread", "iiiIi"),
    ("fd_prestat_get", "ii"),
    ("fd_prestat_dir_name", "iii"),
    ("fd_pwrite", "iiiIi"),
    ("fd_read", "iiii"),
    ("fd_readdir", "iiiIi"),
    ("fd_renumber", "ii"),
    ("fd_seek", "iIii"),
    ("fd_tell", "ii"),
    ("fd_write", "iiii"),
    ("path_create_directory", "iii"),
    ("path_filestat_get", "iiiii"),
    ("path_filestat_set_times", "iiiiIIi"),
    ("path_link", "iiiiiii"),
    ("path_open", "iiiiiIIii"),
    ("path_readlink", "iiiiii"),
    ("path_remove_directory", "iii"),
    ("path_rename", "iiiiii"),
    ("path_symlink", "iiiii"),
    ("path_unlink_file", "iii"),
    ("poll_oneoff", "iiii"),
    ("proc_exit", "i"),
    ("proc_raise", "i"),
    ("sched_yield", ""),
    ("random_get", "ii"),
    ("sock_accept", "iii"),
    ("sock_recv", "iiiiii"),
    ("sock_send", "iiiii"),
    ("sock_shutdown", "ii"),
];

/// A module importing every function of [`WASI_FUNCTIONS`], for wasm-smith's
/// `available_imports`. Panics if the table and the host disagree on a name or a signature.
fn all_imports_wat() -> String {
    let mut imports = String::new();
    for (name, params) in WASI_FUNCTIONS {
        let params: Vec<&str> = params
            .chars()
            .map(|c| if c == 'I' { "i64" } else { "i32" })
            .collect();
        let result = if *name == "proc_exit" {
            ""
        } else {
            " (result i32)"
        };
        let _ = writeln!(
            imports,
            "  (import \"wasi_snapshot_preview1\" \"{name}\" (func (param {}){result}))",
            params.join(" ")
        );
    }

    // Every function the host's `add_to_linker` defines (`MODULE, "name"`), and no other.
    let source = include_str!("../../../vm/src/wasi.rs");
    let in_source: BTreeSet<&str> = source
        .split("MODULE,")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .collect();
    let in_table: BTreeSet<&str> = WASI_FUNCTIONS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        in_table, in_source,
        "WASI_FUNCTIONS and crates/vm/src/wasi.rs's add_to_linker differ"
    );
    // The linker refuses an import whose signature differs from the host function's.
    let command = format!(
        "(module\n{imports}  (memory (export \"memory\") 1)\n  (func (export \"_start\")))"
    );
    if let Err(e) = runtime().load(Path::new("imports.wat"), command.as_bytes(), None) {
        panic!("a signature in WASI_FUNCTIONS differs from the host's: {e}");
    }
    format!("(module\n{imports})\n")
}

/// The runtime of the in-process runs: pooled, like a server embedding zvm, so that the
/// second run of a module lands in a slot a VM used before (with memory kept resident).
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: None,
            journal: None,
            allocator: Allocator::Pooling(PoolConfig {
                slots: 2,
                max_memory: MEMORY,
                ..PoolConfig::default()
            }),
        })
        .expect("a runtime")
    })
}

/// The manifest every run uses, with the program beside it: small limits, a fixed seed, the
/// memory etag, stdin and a random-access input from files, stdout and stderr to the host's
/// streams (captured) with a quota, and a null output with a quota.
fn manifest_toml(program: &str) -> String {
    format!(
        r#"version = 1
program = "{program}"
args = ["an argument"]
seed = {GUEST_SEED}
memory_etag = true

[env]
LANG = "C"

[limits]
memory = {MEMORY}
fuel = {FUEL}
timeout = "{timeout}s"
scratch = "1 MiB"
open_files = 16

[clock]
start = 2026-01-01T00:00:00Z

[[channel]]
name = "stdin"
path = "stdin.txt"
mode = "read"

[[channel]]
name = "stdout"
stdio = "stdout"
write_bytes = "{STDIO_WRITE_BYTES}"

[[channel]]
name = "stderr"
stdio = "stderr"
write_bytes = "{STDIO_WRITE_BYTES}"

[[channel]]
name = "input"
path = "input.bin"
mode = "random-read"
reads = 4

[[channel]]
name = "output"
null = true
mode = "write"
write_bytes = 1000
"#,
        timeout = TIMEOUT.as_secs()
    )
}

/// What one run produced: its report and the bytes the guest wrote to stdout.
#[derive(Debug, Clone)]
struct Outcome {
    report: Report,
    stdout: Vec<u8>,
}

/// The report as it must be identical across runs: the fields that say how the host did
/// its work rather than what the guest did are set to one value.
fn comparable(report: &Report) -> Value {
    let mut r = report.clone();
    // The host's speed and load.
    r.wall_time_us = 0;
    // Whether the module came from the compile cache or the compiler.
    r.validation = Validation::Compiled;
    // `zvm run` fingerprints its inputs and says how the result cache took part; an
    // embedding that calls `Program::run` does neither.
    r.replay = None;
    r.cache = CacheStatus::Off;
    serde_json::to_value(&r).expect("a report serialises")
}

/// Every difference between two outcomes, one `field: a vs b` line each; empty when they
/// are the same.
fn differences(a: &Outcome, b: &Outcome) -> Vec<String> {
    let mut found = Vec::new();
    json_differences(
        "report",
        &comparable(&a.report),
        &comparable(&b.report),
        &mut found,
    );
    if a.stdout != b.stdout {
        let at = a
            .stdout
            .iter()
            .zip(&b.stdout)
            .position(|(x, y)| x != y)
            .unwrap_or(a.stdout.len().min(b.stdout.len()));
        found.push(format!(
            "stdout bytes: {} vs {} bytes, first difference at byte {at}",
            a.stdout.len(),
            b.stdout.len()
        ));
    }
    found
}

fn json_differences(at: &str, a: &Value, b: &Value, found: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let null = Value::Null;
                json_differences(
                    &format!("{at}.{key}"),
                    x.get(key).unwrap_or(&null),
                    y.get(key).unwrap_or(&null),
                    found,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                json_differences(&format!("{at}[{i}]"), p, q, found);
            }
        }
        _ if a != b => found.push(format!("{at}: {a} vs {b}")),
        _ => {}
    }
}

/// Checks what holds within one outcome: the stdout bytes are those the report's etag names.
fn check_outcome(outcome: &Outcome, which: &str) -> Result<(), String> {
    let stdout = outcome
        .report
        .channels
        .iter()
        .find(|c| c.name == "stdout")
        .ok_or_else(|| format!("{which}: no `stdout` in the report"))?;
    let etag = blake3::hash(&outcome.stdout).to_hex().to_string();
    if stdout.etag != etag {
        return Err(format!(
            "{which}: captured stdout ({} bytes, etag {etag}) is not what the report's etag {} names",
            outcome.stdout.len(),
            stdout.etag
        ));
    }
    Ok(())
}

/// One run through the library, with stdout and stderr captured.
fn run_here(program: &Program, manifest: &Manifest) -> Result<Outcome, String> {
    let stdout = SharedBuffer::new();
    let stderr = SharedBuffer::new();
    let io = RunIo::default()
        .bind("stdout", stdout.endpoint())
        .bind("stderr", stderr.endpoint());
    // The setup of a run cannot fail for reasons of the guest; an error is a bug.
    let report = program
        .run(manifest, io)
        .map_err(|e| format!("a run in this process failed: {e}"))?;
    Ok(Outcome {
        report,
        stdout: stdout.contents(),
    })
}

/// Starts `zvm run` on the manifest in a process of its own, compiling the module itself.
fn start_zvm(manifest: &Path, report: &Path) -> Child {
    let _ = std::fs::remove_file(report);
    let mut cmd: Command = support::zvm();
    cmd.arg("run")
        .arg("--no-cache")
        .arg("--report-file")
        .arg(report)
        .arg(manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawning zvm")
}

/// Waits for [`start_zvm`]'s process and reads its outcome.
fn finish_zvm(child: Child, report: &Path) -> Result<Outcome, String> {
    let out = child.wait_with_output().expect("waiting for zvm");
    let text = std::fs::read_to_string(report).map_err(|e| {
        format!(
            "the zvm process wrote no report ({e}); exit {:?}; stderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let report = Report::from_json(&text).map_err(|e| format!("bad report JSON ({e}): {text}"))?;
    if report.cache == CacheStatus::Hit {
        return Err("the zvm process served the run from the result cache".into());
    }
    Ok(Outcome {
        report,
        stdout: out.stdout,
    })
}

/// What the cases did, for the summary and the check that enough of them compared anything.
#[derive(Debug, Default)]
struct Counts {
    cases: u32,
    /// wasm-smith could not make a module of the input.
    not_generated: u32,
    /// Refused at load, the same way here and in the process, by the reason's first line.
    refused: BTreeMap<String, u32>,
    /// Some run hit the wall-clock timeout.
    timed_out: u32,
    /// Compared, by the state the runs ended in.
    compared: BTreeMap<String, u32>,
}

impl Counts {
    fn compared(&self) -> u32 {
        self.compared.values().sum()
    }

    fn refused(&self) -> u32 {
        self.refused.values().sum()
    }
}

/// The state's kind as the report's JSON names it (`ok`, `trap`, `out_of_fuel`...).
fn state_kind(state: &State) -> String {
    let value = serde_json::to_value(state).expect("a state serialises");
    value["kind"].as_str().unwrap_or("?").to_string()
}

/// Writes the manifest `<name>.toml` for the program `<name>.wasm` into `dir`, with the
/// input files it names; returns the manifest's path.
fn write_manifest(dir: &Path, name: &str) -> PathBuf {
    std::fs::write(dir.join("stdin.txt"), b"standard input\n").unwrap();
    let input: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    std::fs::write(dir.join("input.bin"), input).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, manifest_toml(&format!("{name}.wasm"))).unwrap();
    path
}

/// The files every case shares: the manifest, its inputs, and the program it rewrites.
struct Workdir {
    dir: tempfile::TempDir,
    manifest_path: PathBuf,
    manifest: Manifest,
}

impl Workdir {
    fn new() -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        let manifest_path = write_manifest(dir.path(), "smith");
        let manifest = zvm_manifest::parse_file(&manifest_path)
            .unwrap_or_else(|e| panic!("the test's manifest: {e}"));
        Workdir {
            dir,
            manifest_path,
            manifest,
        }
    }

    fn report_path(&self) -> PathBuf {
        self.dir.path().join("report.json")
    }
}

/// One case: wasm-smith's module from `input`, run twice here and once in a `zvm` process.
fn check_case(work: &Workdir, input: &[u8], counts: &mut Counts) -> Result<(), String> {
    counts.cases += 1;
    let Ok(module) = wasm_smith::Module::new(smith_config().clone(), &mut Unstructured::new(input))
    else {
        counts.not_generated += 1;
        return Ok(());
    };
    let wasm = module.to_bytes();
    std::fs::write(&work.manifest.program.path, &wasm).unwrap();
    // The process starts first, so that it compiles while this one does.
    let child = start_zvm(&work.manifest_path, &work.report_path());
    let program = match runtime().load_file(&work.manifest.program.path, None) {
        Ok(program) => program,
        // A feature the engine refuses: nothing ran, and the process must refuse the module
        // for the same reason.
        Err(zvm_vm::Error::Refused { reason, .. }) => {
            let there = finish_zvm(child, &work.report_path())?;
            let expected = State::ValidationFailed {
                reason: reason.clone(),
            };
            if there.report.state != expected {
                return Err(format!(
                    "refused here ({reason}), but the zvm process ended in state `{}`",
                    there.report.state_text
                ));
            }
            let first_line = reason.lines().next().unwrap_or_default();
            *counts.refused.entry(first_line.to_string()).or_default() += 1;
            return Ok(());
        }
        Err(e) => return Err(format!("loading the module failed: {e}")),
    };

    let first = run_here(&program, &work.manifest)?;
    let second = run_here(&program, &work.manifest)?;
    let third = finish_zvm(child, &work.report_path())?;
    let outcomes = [
        ("the first run in this process", &first),
        ("the second run in this process", &second),
        ("the run in a zvm process", &third),
    ];
    // The timeout is wall-clock time: whether a run reaches it depends on the machine and
    // its load, not on the module, so a run it stopped may rightly differ from the others.
    if outcomes
        .iter()
        .any(|(_, o)| o.report.state == State::TimedOut)
    {
        counts.timed_out += 1;
        return Ok(());
    }
    for (which, outcome) in outcomes {
        check_outcome(outcome, which)?;
    }
    for (which, other) in &outcomes[1..] {
        let found = differences(&first, other);
        if !found.is_empty() {
            return Err(format!(
                "the first run in this process and {which} differ:\n  {}",
                found.join("\n  ")
            ));
        }
    }
    if std::env::var_os(VERBOSE_VAR).is_some() {
        eprintln!(
            "case {}: {} bytes, {}: fuel {}, peak memory {}, stdout {} bytes (zvm process: {}, cache {})",
            counts.cases,
            wasm.len(),
            first.report.state_text,
            first.report.fuel_used,
            first.report.peak_memory,
            first.stdout.len(),
            third.report.validation,
            third.report.cache,
        );
    }
    *counts
        .compared
        .entry(state_kind(&first.report.state))
        .or_default() += 1;
    Ok(())
}

/// The number of cases and proptest's seed, from the environment or the defaults.
fn cases_and_seed() -> (u32, RngSeed) {
    let cases = match std::env::var(CASES_VAR) {
        Ok(n) => n
            .parse()
            .unwrap_or_else(|_| panic!("{CASES_VAR}=`{n}`: expected a number of cases")),
        Err(_) => DEFAULT_CASES,
    };
    let seed = match std::env::var(SEED_VAR) {
        Ok(s) if s == "random" => RngSeed::Random,
        Ok(s) => RngSeed::Fixed(
            s.parse()
                .unwrap_or_else(|_| panic!("{SEED_VAR}=`{s}`: expected a number or `random`")),
        ),
        Err(_) => RngSeed::Fixed(DEFAULT_SEED),
    };
    (cases, seed)
}

#[test]
fn generated_modules_give_the_same_outcome_in_every_run_and_process() {
    let started = Instant::now();
    let (cases, seed) = cases_and_seed();
    let work = Workdir::new();
    let counts = RefCell::new(Counts::default());
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        rng_seed: seed,
        max_shrink_iters: MAX_SHRINK_ITERS,
        // A failure is reported with its module, written out below; a regression becomes a
        // named test rather than a seed file.
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(
        &proptest::collection::vec(any::<u8>(), 0..=MAX_INPUT),
        |input| check_case(&work, &input, &mut counts.borrow_mut()).map_err(TestCaseError::fail),
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => {
            panic!("{reason}\n{}", show_failing_module(&input))
        }
        Err(e) => panic!("{e}"),
    }

    let counts = counts.into_inner();
    let compared: Vec<String> = counts
        .compared
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    let refused: Vec<String> = counts
        .refused
        .iter()
        .map(|(reason, n)| format!("{n}× {reason}"))
        .collect();
    eprintln!(
        "determinism: {} cases (seed {seed}) in {:.1?}: {} compared ({}), {} refused at load \
         (identically here and there), {} timed out, {} not generated\n  refusals: {}",
        counts.cases,
        started.elapsed(),
        counts.compared(),
        compared.join(", "),
        counts.refused(),
        counts.timed_out,
        counts.not_generated,
        if refused.is_empty() {
            "none".into()
        } else {
            refused.join("; ")
        }
    );
    assert!(
        counts.compared() * 100 >= counts.cases * MIN_COMPARED_PERCENT,
        "only {} of {} cases got as far as a comparison: {counts:?}",
        counts.compared(),
        counts.cases
    );
}

/// Writes the module of a failing input to `target/zvm-test/determinism/`, as `.wasm` and
/// `.wat` and with the test's manifest, and returns where, and the start of its wat text.
fn show_failing_module(input: &[u8]) -> String {
    let Ok(module) = wasm_smith::Module::new(smith_config().clone(), &mut Unstructured::new(input))
    else {
        return "(wasm-smith made no module of the failing input)".into();
    };
    let wasm = module.to_bytes();
    let dir = support::repo().join("target/zvm-test/determinism");
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("failing-{}", &blake3::hash(&wasm).to_hex()[..16]);
    std::fs::write(dir.join(format!("{name}.wasm")), &wasm).unwrap();
    let manifest = write_manifest(&dir, &name);
    let wat = wasmprinter::print_bytes(&wasm).unwrap_or_else(|e| format!("(no wat: {e})"));
    let wat_path = dir.join(format!("{name}.wat"));
    std::fs::write(&wat_path, &wat).unwrap();
    const SHOWN_LINES: usize = 200;
    let lines = wat.lines().count();
    let shown: Vec<&str> = wat.lines().take(SHOWN_LINES).collect();
    format!(
        "the module: {} (run it as the test did: `zvm run --no-cache --report text {}`)\n{}{}",
        wat_path.display(),
        manifest.display(),
        shown.join("\n"),
        if lines > SHOWN_LINES {
            format!("\n... {} more lines in the .wat file", lines - SHOWN_LINES)
        } else {
            String::new()
        }
    )
}

/// The comparison the property relies on notices each kind of difference it exists to catch,
/// and ignores only the host's own fields.
#[test]
fn the_comparison_notices_every_kind_of_difference() {
    let work = Workdir::new();
    let wat = r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (data (i32.const 16) "same bytes\n")
        (data (i32.const 0) "\10\00\00\00\0b\00\00\00")
        (func (export "_start")
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
            (call $exit (i32.const 3))))"#;
    std::fs::write(&work.manifest.program.path, wat_to_wasm(wat)).unwrap();
    let program = runtime()
        .load_file(&work.manifest.program.path, None)
        .expect("the module loads");
    let child = start_zvm(&work.manifest_path, &work.report_path());
    let here = run_here(&program, &work.manifest).unwrap();
    let there = finish_zvm(child, &work.report_path()).unwrap();
    assert_eq!(here.stdout, b"same bytes\n");
    assert_eq!(here.report.state, State::Exited { code: 3 });
    assert!(
        here.report.memory_etag.is_some(),
        "the manifest asks for it"
    );
    check_outcome(&here, "here").unwrap();
    check_outcome(&there, "there").unwrap();
    assert_eq!(differences(&here, &there), Vec::<String>::new());
    let mut unhashed = here.clone();
    unhashed.stdout.push(b'!');
    assert!(check_outcome(&unhashed, "unhashed").is_err());

    let names: Vec<&str> = there.report.channels.iter().map(|c| &*c.name).collect();
    assert_eq!(names, ["stdin", "stdout", "stderr", "input", "output"]);
    type Mutation = fn(&mut Outcome);
    let mutations: [(&str, Mutation); 8] = [
        ("report.state", |o| o.report.state = State::OutOfFuel),
        ("report.exit_code", |o| o.report.exit_code = Some(4)),
        ("report.fuel_used", |o| o.report.fuel_used += 1),
        ("report.peak_memory", |o| o.report.peak_memory += 65536),
        ("report.memory_etag", |o| {
            o.report.memory_etag = Some("0".repeat(64))
        }),
        ("report.channels[1].etag", |o| {
            o.report.channels[1].etag = "0".repeat(64)
        }),
        ("report.channels[4].write_bytes", |o| {
            o.report.channels[4].write_bytes += 1
        }),
        ("stdout bytes", |o| o.stdout.push(b'!')),
    ];
    for (field, mutate) in mutations {
        let mut changed = there.clone();
        mutate(&mut changed);
        let found = differences(&here, &changed);
        assert!(
            !found.is_empty() && found.iter().all(|f| f.starts_with(field)),
            "changing {field} should be found, and nothing else: {found:?}"
        );
    }
    // What only says how the host worked is not a difference.
    let mut changed = there.clone();
    changed.report.wall_time_us += 1000;
    changed.report.validation = Validation::Cached;
    changed.report.cache = CacheStatus::Miss { stored: true };
    assert_eq!(differences(&here, &changed), Vec::<String>::new());
}
