//! `zvm bench`: zvm measured side by side, in one run, against what a user would otherwise
//! pick: bare wasmtime, a native process, the `wasmtime` CLI, native code.
//!
//! Every figure is measured here and now, on this machine; each row prints the ratio to its
//! baseline and whether the goal of `docs/benchmarks.md` is met. `--write FILE` writes the
//! table as Markdown with the machine and the command that reproduces it. The guests are C
//! programs embedded in this binary and built with clang (wasm32-wasi) and gcc (native) at the
//! start of the run.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use zvm_channel::{Endpoint, SharedBuffer};
use zvm_manifest::Manifest;
use zvm_vm::{Allocator, PoolConfig, Program, RunIo, Runtime, RuntimeConfig, State};

use crate::exit;

const TRIVIAL_C: &str = include_str!("trivial.c");
const COMPUTE_C: &str = include_str!("compute.c");
const OUTPUTS_C: &str = include_str!("outputs.c");
const PIPE_C: &str = include_str!("pipe.c");
const WORDCOUNT_NATIVE_C: &str = include_str!("wordcount_native.c");
/// The wordcount example's members (examples/wordcount), measured as they ship.
const WORDCOUNT_SOURCES: [(&str, &str); 5] = [
    (
        "mapper.c",
        include_str!("../../../../examples/wordcount/mapper.c"),
    ),
    (
        "reducer.c",
        include_str!("../../../../examples/wordcount/reducer.c"),
    ),
    (
        "merge.c",
        include_str!("../../../../examples/wordcount/merge.c"),
    ),
    (
        "topology.h",
        include_str!("../../../../examples/common/topology.h"),
    ),
    (
        "wordtable.h",
        include_str!("../../../../examples/wordcount/wordtable.h"),
    ),
];

/// The trivial guest of the lifecycle row: no imports, returns at once.
const TRIVIAL_WAT: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// Reads one byte of stdin and exits: keeps a VM alive for the memory row.
const READ_ONE_WAT: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 1))
        (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Measure zvm against bare wasmtime, native processes, the wasmtime CLI and native code.
///
/// Prints one table of figures and ratios, measured side by side in this run. Needs clang
/// (wasm32-wasi) and gcc; the `cli` row also needs a `wasmtime` 48 binary (see --wasmtime).
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// `full` gives the documented figures (a few minutes); `quick` proves every scenario
    /// works in seconds, with figures too noisy to quote.
    #[arg(long, value_enum, default_value = "full")]
    scale: Scale,
    /// Only these scenarios (repeatable); all by default.
    #[arg(long, value_enum)]
    only: Vec<Scenario>,
    /// Also write the table as Markdown to this file (e.g. docs/benchmarks.md).
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
    /// The `wasmtime` CLI for the cold-start row; default: `$ZVM_BENCH_WASMTIME`, then
    /// `~/.cache/zvm-bench/wasmtime-48/bin/wasmtime`, then `wasmtime` on PATH.
    #[arg(long, value_name = "PATH")]
    wasmtime: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scale {
    Full,
    Quick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Lifecycle,
    Process,
    Throughput,
    Cli,
    Compute,
    Memory,
    Transactions,
    Jobs,
    Wordcount,
    Interpreters,
}

/// One line of the table.
struct Row {
    scenario: &'static str,
    what: String,
    zvm: String,
    baseline: String,
    ratio: String,
    goal: &'static str,
    met: Option<bool>,
}

impl Row {
    fn skipped(scenario: &'static str, what: &str, goal: &'static str, why: String) -> Row {
        Row {
            scenario,
            what: what.to_string(),
            zvm: "-".into(),
            baseline: "-".into(),
            ratio: why,
            goal,
            met: None,
        }
    }
}

pub fn main(args: BenchArgs) -> i32 {
    match bench(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("zvm bench: {e:#}");
            exit::CANNOT_START
        }
    }
}

struct Guests {
    dir: tempfile::TempDir,
    trivial_wasm: PathBuf,
    trivial_native: PathBuf,
    compute_wasm: PathBuf,
    compute_native: PathBuf,
    /// The same, by the compiler that builds the wasm, to separate compiler from runtime.
    compute_native_clang: PathBuf,
    outputs_wasm: PathBuf,
    pipe_wasm: PathBuf,
    pipe_native: PathBuf,
}

fn build_guests() -> Result<Guests> {
    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let p = dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    let trivial_c = write("trivial.c", TRIVIAL_C)?;
    let compute_c = write("compute.c", COMPUTE_C)?;
    let outputs_c = write("outputs.c", OUTPUTS_C)?;
    let pipe_c = write("pipe.c", PIPE_C)?;
    let build = |compiler: &str, args: &[&str], src: &Path, out: &str| -> Result<PathBuf> {
        let out = dir.path().join(out);
        let status = Command::new(compiler)
            .args(args)
            .arg("-O2")
            .arg("-o")
            .arg(&out)
            .arg(src)
            .status()
            .with_context(|| format!("running `{compiler}` (see scripts/install-deps)"))?;
        if !status.success() {
            bail!("`{compiler}` failed to build `{}`", src.display());
        }
        Ok(out)
    };
    let wasm = ["--target=wasm32-wasi"];
    Ok(Guests {
        trivial_wasm: build("clang", &wasm, &trivial_c, "trivial.wasm")?,
        trivial_native: build("gcc", &[], &trivial_c, "trivial")?,
        compute_wasm: build("clang", &wasm, &compute_c, "compute.wasm")?,
        compute_native: build("gcc", &[], &compute_c, "compute")?,
        compute_native_clang: build("clang", &[], &compute_c, "compute-clang")?,
        outputs_wasm: build("clang", &wasm, &outputs_c, "outputs.wasm")?,
        pipe_wasm: build("clang", &wasm, &pipe_c, "pipe.wasm")?,
        pipe_native: build("gcc", &[], &pipe_c, "pipe")?,
        dir,
    })
}

fn bench(args: BenchArgs) -> Result<()> {
    let quick = args.scale == Scale::Quick;
    let wants = |s: Scenario| args.only.is_empty() || args.only.contains(&s);
    eprintln!("zvm bench: building guests with clang and gcc");
    let guests = build_guests()?;
    let mut rows = Vec::new();
    if wants(Scenario::Lifecycle) {
        eprintln!("zvm bench: VM lifecycle vs bare wasmtime");
        rows.extend(lifecycle(quick)?);
    }
    if wants(Scenario::Process) {
        eprintln!("zvm bench: VM per request vs fork+exec+wait");
        rows.push(process(&guests, quick)?);
    }
    if wants(Scenario::Throughput) {
        eprintln!("zvm bench: throughput on 1 and 2 threads");
        rows.extend(throughput(&guests, quick)?);
    }
    if wants(Scenario::Cli) {
        eprintln!("zvm bench: cold `zvm run` vs `wasmtime run`");
        rows.push(cold_cli(&guests, args.wasmtime.clone(), quick)?);
    }
    if wants(Scenario::Compute) {
        eprintln!("zvm bench: compute vs native -O2");
        rows.extend(compute(&guests, quick)?);
    }
    if wants(Scenario::Memory) {
        eprintln!("zvm bench: resident memory");
        rows.extend(memory(quick)?);
    }
    if wants(Scenario::Jobs) {
        eprintln!("zvm bench: jobs: pipes and start-up");
        rows.extend(jobs(&guests, quick)?);
    }
    if wants(Scenario::Wordcount) {
        eprintln!("zvm bench: word count job vs a native single process");
        rows.push(wordcount(quick)?);
    }
    if wants(Scenario::Interpreters) {
        eprintln!("zvm bench: Python and QuickJS per request");
        rows.extend(interpreters(quick)?);
    }
    if wants(Scenario::Transactions) {
        eprintln!("zvm bench: transactions and the result cache");
        rows.extend(transactions(&guests, quick)?);
    }
    let table = table(&rows);
    println!("{table}");
    if let Some(path) = &args.write {
        write_section(path, &markdown(&rows, quick))?;
        eprintln!("zvm bench: wrote {}", path.display());
    }
    drop(guests.dir);
    Ok(())
}

// ----- measurements ---------------------------------------------------------------------------

fn pooled_runtime() -> Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator: Allocator::Pooling(PoolConfig::default()),
    })?)
}

/// Median and 99th percentile of per-iteration times.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// One run with empty standard input and standard output captured: the report, the output,
/// and how long `run` took.
fn timed_run(
    program: &Program,
    manifest: &Manifest,
) -> Result<(zvm_vm::Report, Vec<u8>, Duration)> {
    let out = SharedBuffer::new();
    let io = RunIo::default()
        .bind("stdin", Endpoint::Reader(Box::new(std::io::empty())))
        .bind("stdout", out.endpoint());
    let t = Instant::now();
    let report = program.run(manifest, io)?;
    let took = t.elapsed();
    Ok((report, out.contents(), took))
}

/// A sink for guest output that costs nothing.
fn quiet_io() -> RunIo {
    RunIo::default()
        .bind("stdin", Endpoint::Reader(Box::new(std::io::empty())))
        .bind("stdout", Endpoint::Writer(Box::new(std::io::sink())))
        .bind("stderr", Endpoint::Writer(Box::new(std::io::sink())))
}

fn run_ok(program: &Program, manifest: &Manifest) -> Result<()> {
    let report = program.run(manifest, quiet_io())?;
    if report.state != State::Ok {
        bail!("benchmark guest ended with `{}`", report.state);
    }
    Ok(())
}

fn lifecycle(quick: bool) -> Result<Vec<Row>> {
    let iterations = if quick { 2_000 } else { 50_000 };
    let runtime = pooled_runtime()?;
    let program = runtime.load(Path::new("trivial.wat"), TRIVIAL_WAT.as_bytes(), None)?;
    let manifest = Manifest::for_program("trivial.wat");

    // The baseline: the same module, engine profile and pool, instantiated and called with
    // wasmtime alone.
    let engine = wasmtime::Engine::new(&zvm_vm::engine_config_for(Allocator::Pooling(
        PoolConfig::default(),
    )))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let module = wasmtime::Module::new(&engine, wat::parse_str(TRIVIAL_WAT)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let linker = wasmtime::Linker::<()>::new(&engine);
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bare = || -> Result<()> {
        let mut store = wasmtime::Store::new(&engine, ());
        store
            .set_fuel(u64::MAX)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        start
            .call(&mut store, ())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    };

    let mut zvm_samples = Vec::with_capacity(iterations);
    let mut bare_samples = Vec::with_capacity(iterations);
    for _ in 0..iterations / 10 {
        run_ok(&program, &manifest)?;
        bare()?;
    }
    // Interleaved, so that both see the same machine state.
    for _ in 0..iterations {
        let t = Instant::now();
        run_ok(&program, &manifest)?;
        zvm_samples.push(t.elapsed());
        let t = Instant::now();
        bare()?;
        bare_samples.push(t.elapsed());
    }
    let (zvm_median, zvm_p99) = percentiles(zvm_samples);
    let (bare_median, bare_p99) = percentiles(bare_samples);
    let ratio = zvm_median.as_secs_f64() / bare_median.as_secs_f64();
    Ok(vec![Row {
        scenario: "lifecycle",
        what: format!(
            "create, run trivial guest, destroy, report (median of {iterations}; p99 {} vs {})",
            us(zvm_p99),
            us(bare_p99)
        ),
        zvm: us(zvm_median),
        baseline: format!("{} bare wasmtime", us(bare_median)),
        ratio: format!("{ratio:.2}x"),
        goal: "<= 2x bare, median < 10 µs",
        met: Some(ratio <= 2.0 && zvm_median < Duration::from_micros(10)),
    }])
}

fn process(guests: &Guests, quick: bool) -> Result<Row> {
    let iterations = if quick { 200 } else { 2_000 };
    let runtime = pooled_runtime()?;
    let program = runtime.load_file(&guests.trivial_wasm, None)?;
    let manifest = Manifest::for_program(&guests.trivial_wasm);
    // Measured in two blocks rather than interleaved: a process start trashes the caches the
    // next VM would find warm, and the other way round.
    let mut zvm_samples = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        let t = Instant::now();
        run_ok(&program, &manifest)?;
        if i >= iterations / 10 {
            zvm_samples.push(t.elapsed());
        }
    }
    let mut proc_samples = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        let t = Instant::now();
        let status = Command::new(&guests.trivial_native)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("the native trivial program failed");
        }
        if i >= iterations / 10 {
            proc_samples.push(t.elapsed());
        }
    }
    let (z, _) = percentiles(zvm_samples);
    let (p, _) = percentiles(proc_samples);
    let ratio = p.as_secs_f64() / z.as_secs_f64();
    Ok(Row {
        scenario: "process",
        what: format!("trivial C program per request (median of {iterations})"),
        zvm: us(z),
        baseline: format!("{} fork+exec+wait (gcc -O2)", us(p)),
        ratio: format!("{ratio:.0}x faster"),
        goal: ">= 50x faster",
        met: Some(ratio >= 50.0),
    })
}

fn throughput(guests: &Guests, quick: bool) -> Result<Vec<Row>> {
    let total: usize = if quick { 5_000 } else { 100_000 };
    let runtime = Arc::new(pooled_runtime()?);
    let program = Arc::new(runtime.load_file(&guests.trivial_wasm, None)?);
    let manifest = Arc::new(Manifest::for_program(&guests.trivial_wasm));
    let mut rates = Vec::new();
    for threads in [1usize, 2] {
        let t = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (program, manifest) = (program.clone(), manifest.clone());
                let share = total / threads + usize::from(i < total % threads);
                std::thread::spawn(move || -> Result<()> {
                    for _ in 0..share {
                        run_ok(&program, &manifest)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))??;
        }
        rates.push(total as f64 / t.elapsed().as_secs_f64());
    }
    let scaling = rates[1] / rates[0];
    Ok(vec![Row {
        scenario: "throughput",
        what: format!("{total} trivial C VMs, 1 thread → 2 threads"),
        zvm: format!("{:.0} VMs/s on 2 threads", rates[1]),
        baseline: format!("{:.0} VMs/s on 1 thread", rates[0]),
        ratio: format!("{scaling:.2}x scaling"),
        goal: "report",
        met: None,
    }])
}

fn find_wasmtime(given: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p);
    }
    if let Some(p) = std::env::var_os("ZVM_BENCH_WASMTIME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home).join(".cache/zvm-bench/wasmtime-48/bin/wasmtime");
        if p.exists() {
            return Some(p);
        }
    }
    let on_path = Command::new("wasmtime").arg("--version").output().ok()?;
    on_path.status.success().then(|| PathBuf::from("wasmtime"))
}

fn time_command(cmd: &mut Command, runs: usize) -> Result<Duration> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs + 3 {
        let t = Instant::now();
        let out = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        let d = t.elapsed();
        if !out.status.success() {
            bail!("`{cmd:?}` failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if i >= 3 {
            samples.push(d);
        }
    }
    Ok(percentiles(samples).0)
}

/// A job built in code: members running `program` with `args`, pipes by member index.
fn bench_job(
    program: &Path,
    members: &[(String, Vec<String>)],
    edges: &[(usize, usize)],
) -> zvm_manifest::Job {
    let members = members
        .iter()
        .map(|(name, args)| {
            let mut m = Manifest::for_program(program);
            m.args = args.clone();
            m.limits.fuel = u64::MAX / 4;
            m.limits.timeout = Duration::from_secs(600);
            zvm_manifest::Member {
                name: name.clone(),
                group: name.clone(),
                manifest: m,
            }
        })
        .collect();
    let quota = zvm_manifest::Quota {
        write_bytes: u64::MAX,
        ..zvm_manifest::Quota::default()
    };
    zvm_manifest::Job::from_members("bench", members, edges, quota).expect("a valid job")
}

/// The wordcount example (a mapper per file, 2 reducers, a merge) over generated text, against
/// a native single-process C program with the same word rules and table, on the same cores.
fn wordcount(quick: bool) -> Result<Row> {
    let dir = tempfile::tempdir()?;
    for (name, text) in WORDCOUNT_SOURCES {
        std::fs::write(dir.path().join(name), text)?;
    }
    std::fs::write(dir.path().join("native.c"), WORDCOUNT_NATIVE_C)?;
    let cc = |compiler: &str, args: &[&str], src: &str, out: &str| -> Result<()> {
        let status = Command::new(compiler)
            .args(args)
            .args(["-O2", "-I"])
            .arg(dir.path())
            .arg("-o")
            .arg(dir.path().join(out))
            .arg(dir.path().join(src))
            .status()
            .with_context(|| format!("running `{compiler}`"))?;
        if !status.success() {
            bail!("`{compiler}` failed to build `{src}`");
        }
        Ok(())
    };
    for m in ["mapper", "reducer", "merge"] {
        cc(
            "clang",
            &["--target=wasm32-wasi"],
            &format!("{m}.c"),
            &format!("{m}.wasm"),
        )?;
    }
    cc("gcc", &[], "native.c", "native")?;
    // Text: lines of words drawn (xorshift) from a 20,000-word vocabulary, in 8 files.
    let files = 8;
    let per_file: usize = if quick { 4 << 20 } else { 128 << 20 };
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    std::fs::create_dir(dir.path().join("out"))?;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let vocab: Vec<String> = (0..20_000)
        .map(|_| {
            let len = 2 + (next() % 9) as usize;
            (0..len)
                .map(|_| (b'a' + (next() % 26) as u8) as char)
                .collect()
        })
        .collect();
    let mut paths = Vec::new();
    for f in 0..files {
        let mut text = String::with_capacity(per_file + 64);
        while text.len() < per_file {
            for k in 0..12 {
                if k > 0 {
                    text.push(' ');
                }
                // Skewed towards the first words, as natural text is.
                let r = next() % 20_000;
                let i = (r * r / 20_000) as usize;
                text.push_str(&vocab[i]);
            }
            text.push('\n');
        }
        let p = data.join(format!("part-{f}.txt"));
        std::fs::write(&p, text)?;
        paths.push(p);
    }
    let total = (per_file * files) as u64;
    std::fs::write(
        dir.path().join("job.toml"),
        r#"version = 1
name = "wordcount"
[[group]]
name = "map"
program = "mapper.wasm"
connect = ["reduce"]
[group.limits]
memory = "64MiB"
fuel = 1000000000000
timeout = "10m"
[[group.channel]]
name = "input"
path = "data/*.txt"
mode = "read"
[[group]]
name = "reduce"
program = "reducer.wasm"
count = 2
connect = ["merge"]
[group.limits]
memory = "64MiB"
fuel = 1000000000000
timeout = "10m"
[[group]]
name = "merge"
program = "merge.wasm"
[group.limits]
memory = "64MiB"
fuel = 1000000000000
timeout = "10m"
[[group.channel]]
name = "output"
path = "out/counts.txt"
mode = "write"
"#,
    )?;
    let job = zvm_manifest::parse_job_file(&dir.path().join("job.toml"))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator: Allocator::OnDemand,
    })?;
    let options = zvm_job::JobOptions {
        threads: 2,
        progress: None,
    };
    // The text was just written: let it reach the disk first, so that neither side pays for
    // the write-back, then time the native program and the job on the same cached files.
    let _ = Command::new("sync").status();
    let t = Instant::now();
    let native = Command::new(dir.path().join("native"))
        .args(&paths)
        .output()?;
    let n = t.elapsed();
    let t = Instant::now();
    let report = zvm_job::run(&runtime, &job, &options)?;
    let z = t.elapsed();
    if !report.committed {
        bail!("wordcount job failed: {}", report.outcome_text);
    }
    if std::fs::read(dir.path().join("out/counts.txt"))? != native.stdout {
        bail!("the wordcount job and the native program disagree");
    }
    let ratio = z.as_secs_f64() / n.as_secs_f64();
    let gib = total as f64 / (1u64 << 30) as f64;
    Ok(Row {
        scenario: "jobs",
        what: format!(
            "word count of {gib:.2} GiB of text: job of 8 mappers, 2 reducers, a merge, on 2 threads (compile included)"
        ),
        zvm: format!("{:.2} s", z.as_secs_f64()),
        baseline: format!("{:.2} s (native C, one process)", n.as_secs_f64()),
        ratio: format!("{ratio:.2}x"),
        goal: "within 2x of native",
        met: Some(ratio <= 2.0),
    })
}

/// Jobs: bytes through a pipe between two VMs against a Unix pipe between two native
/// processes, and the start-up cost of a job of 1,000 trivial members against starting
/// 1,000 native processes.
fn jobs(guests: &Guests, quick: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator: Allocator::OnDemand,
    })?;
    let options = zvm_job::JobOptions {
        threads: 2,
        progress: None,
    };
    let bytes: u64 = if quick { 64 << 20 } else { 4 << 30 };
    let job = bench_job(
        &guests.pipe_wasm,
        &[
            (
                "a".into(),
                vec!["write".into(), "/dev/out/b".into(), bytes.to_string()],
            ),
            ("b".into(), vec!["read".into(), "/dev/in/a".into()]),
        ],
        &[(0, 1)],
    );
    // Warm the compile cache-less runtime's code once, then measure.
    zvm_job::run(
        &runtime,
        &bench_job(
            &guests.pipe_wasm,
            &[("a".into(), vec!["read".into(), "/dev/null".into()])],
            &[],
        ),
        &options,
    )?;
    let runs = if quick { 1 } else { 3 };
    let mut z = Vec::new();
    let mut native = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = zvm_job::run(&runtime, &job, &options)?;
        z.push(t.elapsed());
        if !r.committed || r.totals.pipe_bytes != bytes {
            bail!("pipe job failed: {}", r.outcome_text);
        }
        let t = Instant::now();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{0} write /dev/stdout {bytes} | {0} read /dev/stdin",
                guests.pipe_native.display()
            ))
            .output()?;
        native.push(t.elapsed());
        if String::from_utf8_lossy(&out.stdout).trim() != bytes.to_string() {
            bail!("native pipe moved the wrong byte count");
        }
    }
    let (z, native) = (percentiles(z).0, percentiles(native).0);
    let gbps = |d: Duration| bytes as f64 / d.as_secs_f64() / (1u64 << 30) as f64;
    rows.push(Row {
        scenario: "jobs",
        what: format!(
            "pipe throughput, {} GiB between two VMs of a job (start-up included)",
            bytes as f64 / (1u64 << 30) as f64
        ),
        zvm: format!("{:.2} GiB/s", gbps(z)),
        baseline: format!("{:.2} GiB/s (Unix pipe, 2 native processes)", gbps(native)),
        ratio: format!("{:.2}x", gbps(z) / gbps(native)),
        goal: "at least as fast as a Unix pipe",
        met: Some(gbps(z) >= gbps(native)),
    });

    let n = if quick { 200 } else { 1000 };
    let trivial: Vec<(String, Vec<String>)> =
        (1..=n).map(|i| (format!("m-{i}"), Vec::new())).collect();
    let job = bench_job(&guests.trivial_wasm, &trivial, &[]);
    let t = Instant::now();
    let r = zvm_job::run(&runtime, &job, &options)?;
    let z = t.elapsed();
    if !r.committed {
        bail!("trivial job failed: {}", r.outcome_text);
    }
    // The alternative: start as many native processes, two at a time.
    let t = Instant::now();
    let per_thread = n / 2;
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let exe = guests.trivial_native.clone();
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    let _ = Command::new(&exe).status();
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let native = t.elapsed();
    rows.push(Row {
        scenario: "jobs",
        what: format!("job of {n} trivial members: start-up and teardown per member"),
        zvm: format!("{:.1} µs", z.as_secs_f64() * 1e6 / n as f64),
        baseline: format!(
            "{:.1} µs (a native process each, 2 at a time)",
            native.as_secs_f64() * 1e6 / n as f64
        ),
        ratio: format!("{:.3}x", z.as_secs_f64() / native.as_secs_f64()),
        goal: "(informative)",
        met: None,
    });
    Ok(rows)
}

/// A one-line script per request with the installed interpreters, inside a running zvm (the
/// interpreter compiled and prepared once, a fresh VM per request): started from a
/// pre-initialised snapshot (made once, or found in the cache) against a plain start of the
/// same interpreter with the same script; and both again as fresh `zvm run` processes.
fn interpreters(quick: bool) -> Result<Vec<Row>> {
    let goal = "< 5 ms per request inside a running zvm";
    let mut rows = Vec::new();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Runtime::default_cache_dir(),
        journal: None,
        allocator: Allocator::Pooling(PoolConfig::default()),
    })?;
    let work = tempfile::tempdir()?;
    for (name, file, code, expect) in [
        ("python", "one.py", "print(1+1)\n", "2\n"),
        ("quickjs", "one.js", "console.log(1+1)\n", "2\n"),
    ] {
        let what = format!("`{name}`: `{}` per request, from a snapshot", code.trim());
        let (dir, interp) = match crate::interpreters::named(name) {
            Ok(found) => found,
            Err(e) => {
                rows.push(Row::skipped(
                    "interpreters",
                    &what,
                    goal,
                    format!("skipped: {e}"),
                ));
                continue;
            }
        };
        let script = work.path().join(file);
        std::fs::write(&script, code)?;
        let manifest = crate::interpreters::manifest(&dir, &interp, Some(&script))?;
        let program = runtime.load_file(&manifest.program.path, None)?;
        let made = Instant::now();
        let mut steps = 0;
        let snapshot = runtime
            .snapshot(
                &program,
                &manifest,
                crate::run::SNAPSHOT_POINT,
                zvm_vm::snapshot::Create::IfMissing,
                &mut |step| {
                    steps += 1;
                    eprintln!("  {name} snapshot: {step}");
                },
            )?
            .context("no snapshot was made")?;
        let made = if steps > 0 {
            format!("made in {:.1} s", made.elapsed().as_secs_f64())
        } else {
            "cached".to_string()
        };
        let runs = if quick { 3 } else { 30 };
        let mut plain = Vec::new();
        let mut snap = Vec::new();
        for _ in 0..runs {
            let (report, out, took) = timed_run(&program, &manifest)?;
            plain.push(took);
            if report.state != State::Ok || out != expect.as_bytes() {
                bail!("{name} plain start ended with `{}`", report.state);
            }
            let out_buf = SharedBuffer::new();
            let io = RunIo::default()
                .bind("stdin", Endpoint::Reader(Box::new(std::io::empty())))
                .bind("stdout", out_buf.endpoint());
            let t = Instant::now();
            let report = snapshot.run(&manifest, io)?;
            snap.push(t.elapsed());
            if report.state != State::Ok || out_buf.contents() != expect.as_bytes() {
                bail!("{name} snapshot start ended with `{}`", report.state);
            }
        }
        let (plain, snap) = (percentiles(plain).0, percentiles(snap).0);
        rows.push(Row {
            scenario: "interpreters",
            what,
            zvm: ms(snap),
            baseline: format!(
                "{} plain start in the same runtime (snapshot {made})",
                ms(plain)
            ),
            ratio: format!("{:.1}x faster", plain.as_secs_f64() / snap.as_secs_f64()),
            goal,
            met: Some(snap < Duration::from_millis(5)),
        });
        let exe = std::env::current_exe()?;
        let fresh = |when: &str| -> Result<Duration> {
            let mut cmd = Command::new(&exe);
            cmd.args(["run", "--no-result-cache", "--snapshot", when])
                .arg(&script)
                .stdout(std::process::Stdio::null());
            time_command(&mut cmd, if quick { 3 } else { 20 })
        };
        let (fresh_snap, fresh_plain) = (fresh("auto")?, fresh("never")?);
        rows.push(Row {
            scenario: "interpreters",
            what: format!("`{name}`: the same as a fresh `zvm run` process"),
            zvm: ms(fresh_snap),
            baseline: format!("{} with --snapshot never", ms(fresh_plain)),
            ratio: format!(
                "{:.1}x faster",
                fresh_plain.as_secs_f64() / fresh_snap.as_secs_f64()
            ),
            goal: "(informative)",
            met: None,
        });
    }
    Ok(rows)
}

/// The price of transactions, and what the result cache saves, all through `zvm run` as a
/// fresh process: committing 4 outputs together (journal, fsyncs, renames) against the same
/// run as a dry run; staging a writable directory of 1,000 files against mounting it
/// read-only; and a result served from the cache against executing the same run.
fn transactions(guests: &Guests, quick: bool) -> Result<Vec<Row>> {
    let runs = if quick { 5 } else { 50 };
    let work = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let zvm = |args: &[&std::ffi::OsStr]| {
        let mut c = Command::new(&exe);
        c.env("ZVM_CACHE_DIR", work.path().join("cache"))
            .env("ZVM_STATE_DIR", work.path().join("state"))
            .arg("run")
            .args(args);
        c
    };
    let mut rows = Vec::new();

    let mut outputs: Vec<std::ffi::OsString> = vec!["--no-result-cache".into()];
    for i in 1..=4 {
        outputs.push("--output".into());
        outputs.push(format!("out{i}={}", work.path().join(format!("out{i}")).display()).into());
    }
    let with = |extra: &[&str]| {
        let mut v: Vec<&std::ffi::OsStr> = outputs.iter().map(|s| s.as_os_str()).collect();
        v.extend(extra.iter().map(std::ffi::OsStr::new));
        v.push(guests.outputs_wasm.as_os_str());
        v.extend(["--", "4", "65536"].map(std::ffi::OsStr::new));
        zvm(&v)
    };
    let committed = time_command(&mut with(&[]), runs)?;
    let dry = time_command(&mut with(&["--commit", "never"]), runs)?;
    rows.push(Row {
        scenario: "transactions",
        what: "commit of 4 outputs of 64 KiB together, vs the same run as a dry run (median)"
            .into(),
        zvm: ms(committed),
        baseline: ms(dry),
        ratio: format!(
            "+{:.2} ms",
            (committed.as_secs_f64() - dry.as_secs_f64()) * 1e3
        ),
        goal: "(informative)",
        met: None,
    });

    let tree = work.path().join("tree");
    for d in 0..10 {
        let sub = tree.join(format!("d{d}"));
        std::fs::create_dir_all(&sub)?;
        for f in 0..100 {
            std::fs::write(sub.join(format!("f{f}")), b"content")?;
        }
    }
    let mount = |flag: &str| {
        zvm(&[
            std::ffi::OsStr::new("--no-result-cache"),
            std::ffi::OsStr::new(flag),
            std::ffi::OsString::from(format!("{}::/data", tree.display())).as_os_str(),
            guests.trivial_wasm.as_os_str(),
        ])
    };
    let staged = time_command(&mut mount("--dir"), runs)?;
    let read_only = time_command(&mut mount("--ro-dir"), runs)?;
    rows.push(Row {
        scenario: "transactions",
        what: "writable directory of 1,000 files staged and committed, vs mounted read-only".into(),
        zvm: ms(staged),
        baseline: ms(read_only),
        ratio: format!(
            "+{:.1} µs per file",
            (staged.as_secs_f64() - read_only.as_secs_f64()) * 1e6 / 1000.0
        ),
        goal: "(informative)",
        met: None,
    });

    let n = if quick { "200000" } else { "2000000" };
    let sort = |extra: &[&str]| {
        let mut v: Vec<&std::ffi::OsStr> = extra.iter().map(std::ffi::OsStr::new).collect();
        v.push(guests.compute_wasm.as_os_str());
        v.extend(["--", "sort", n].map(std::ffi::OsStr::new));
        zvm(&v)
    };
    let executed = time_command(&mut sort(&["--no-result-cache"]), runs.min(20))?;
    // The first run stores the result (time_command's warm-up runs include it).
    let served = time_command(&mut sort(&[]), runs)?;
    let ratio = served.as_secs_f64() / executed.as_secs_f64();
    rows.push(Row {
        scenario: "transactions",
        what: format!("result cache hit vs executing (sort of {n} integers, median)"),
        zvm: ms(served),
        baseline: ms(executed),
        ratio: format!("{ratio:.3}x"),
        goal: "a hit costs less than executing",
        met: Some(ratio < 1.0),
    });
    Ok(rows)
}

fn cold_cli(guests: &Guests, wasmtime: Option<PathBuf>, quick: bool) -> Result<Row> {
    let runs = if quick { 10 } else { 100 };
    let goal = "no slower than `wasmtime run`";
    let what = "`run` of a cached trivial C program as a fresh process (median)";
    let Some(wasmtime) = find_wasmtime(wasmtime) else {
        return Ok(Row::skipped(
            "cli",
            what,
            goal,
            "skipped: no wasmtime 48 CLI (cargo install wasmtime-cli@48.0.8 --root ~/.cache/zvm-bench/wasmtime-48)".into(),
        ));
    };
    let version = Command::new(&wasmtime)
        .arg("--version")
        .output()
        .with_context(|| format!("running `{}`", wasmtime.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let cache = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut zvm = Command::new(&exe);
    // The result cache would serve every run after the first without executing it.
    zvm.env("ZVM_CACHE_DIR", cache.path())
        .arg("run")
        .arg("--no-result-cache")
        .arg(&guests.trivial_wasm);
    let z = time_command(&mut zvm, runs)?;
    let mut wt = Command::new(&wasmtime);
    wt.arg("run").arg(&guests.trivial_wasm);
    let w = time_command(&mut wt, runs)?;
    let ratio = z.as_secs_f64() / w.as_secs_f64();
    Ok(Row {
        scenario: "cli",
        what: what.to_string(),
        zvm: ms(z),
        baseline: format!("{} {version}", ms(w)),
        ratio: format!("{ratio:.2}x"),
        goal,
        met: Some(ratio <= 1.0),
    })
}

fn compute(guests: &Guests, quick: bool) -> Result<Vec<Row>> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator: Allocator::OnDemand,
    })?;
    let program = runtime.load_file(&guests.compute_wasm, None)?;
    let cases: [(&str, &str, String); 2] = if quick {
        [
            ("sha256", "SHA-256", "4".into()),
            ("sort", "sort", "500000".into()),
        ]
    } else {
        [
            ("sha256", "SHA-256 of 64 MiB", "64".into()),
            ("sort", "sort of 10 M integers", "10000000".into()),
        ]
    };
    let mut rows = Vec::new();
    for (task, what, n) in cases {
        let mut manifest = Manifest::for_program(&guests.compute_wasm);
        manifest.args = vec![task.to_string(), n.clone()];
        manifest.limits.fuel = u64::MAX / 2;
        manifest.limits.memory = 1 << 30;
        manifest.limits.timeout = Duration::from_secs(600);
        let runs = if quick { 1 } else { 5 };
        let mut z = Vec::new();
        let mut native = Vec::new();
        let mut native_clang = Vec::new();
        let mut outputs = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (report, out, took) = timed_run(&program, &manifest)?;
            z.push(took);
            if report.state != State::Ok {
                bail!("compute guest ended with `{}`", report.state);
            }
            outputs.0 = out;
            let t = Instant::now();
            let o = Command::new(&guests.compute_native)
                .args([task, n.as_str()])
                .output()?;
            native.push(t.elapsed());
            outputs.1 = o.stdout;
            let t = Instant::now();
            Command::new(&guests.compute_native_clang)
                .args([task, n.as_str()])
                .output()?;
            native_clang.push(t.elapsed());
        }
        if outputs.0 != outputs.1 {
            bail!(
                "wasm and native `{task}` disagree: {:?} vs {:?}",
                String::from_utf8_lossy(&outputs.0),
                String::from_utf8_lossy(&outputs.1)
            );
        }
        let (zm, _) = percentiles(z);
        let (nm, _) = percentiles(native);
        let (cm, _) = percentiles(native_clang);
        let ratio = zm.as_secs_f64() / nm.as_secs_f64();
        let clang_ratio = zm.as_secs_f64() / cm.as_secs_f64();
        rows.push(Row {
            scenario: "compute",
            what: format!("{what} (median of {runs}, same output)"),
            zvm: ms(zm),
            baseline: format!("{} native gcc -O2 ({} clang -O2)", ms(nm), ms(cm)),
            ratio: format!("{ratio:.2}x ({clang_ratio:.2}x)"),
            goal: "<= 1.3x native",
            met: Some(ratio <= 1.3),
        });
    }
    Ok(rows)
}

/// Resident set size of this process, in bytes.
fn rss() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("reading /proc/self/statm")?
        .parse()?;
    Ok(pages * rustix::param::page_size() as u64)
}

/// A `Read` that blocks until its sender is dropped (then EOF), announcing the first read.
struct Hold(mpsc::Receiver<()>, Option<mpsc::Sender<()>>);

impl Read for Hold {
    fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(tx) = self.1.take() {
            let _ = tx.send(());
        }
        let _ = self.0.recv();
        Ok(0)
    }
}

fn memory(quick: bool) -> Result<Vec<Row>> {
    let slots: u32 = 1024;
    let vms: usize = if quick { 20 } else { 200 };
    let before = rss()?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator: Allocator::Pooling(PoolConfig {
            slots,
            ..PoolConfig::default()
        }),
    })?);
    let program =
        Arc::new(runtime.load(Path::new("read_one.wat"), READ_ONE_WAT.as_bytes(), None)?);
    let manifest = Arc::new(Manifest::for_program("read_one.wat"));
    // Warm the program once so that compiled code is not counted against the VMs.
    run_ok(&program, &manifest)?;
    let idle = rss()?.saturating_sub(before);

    // Threads blocked the same way, without VMs, to subtract what threads themselves cost.
    let hold = |with_vm: bool| -> Result<u64> {
        let start = rss()?;
        let (release, _keep) = mpsc::channel::<()>();
        let mut releases = Vec::new();
        let mut handles = Vec::new();
        let (ready_tx, ready) = mpsc::channel();
        for _ in 0..vms {
            let (tx, rx) = mpsc::channel::<()>();
            releases.push(tx);
            let (program, manifest, ready_tx) =
                (program.clone(), manifest.clone(), ready_tx.clone());
            handles.push(std::thread::spawn(move || -> Result<()> {
                let hold = Hold(rx, Some(ready_tx));
                if with_vm {
                    let io = RunIo::default()
                        .bind("stdin", Endpoint::Reader(Box::new(hold)))
                        .bind("stdout", Endpoint::Writer(Box::new(std::io::sink())));
                    program.run(&manifest, io)?;
                } else {
                    let mut hold = hold;
                    let _eof = hold.read(&mut [0u8; 1])?;
                }
                Ok(())
            }));
        }
        for _ in 0..vms {
            ready.recv()?;
        }
        let held = rss()?.saturating_sub(start);
        drop(releases);
        drop(release);
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))??;
        }
        Ok(held)
    };
    let threads_only = hold(false)?;
    let with_vms = hold(true)?;
    let per_vm = with_vms.saturating_sub(threads_only) as f64 / vms as f64;
    Ok(vec![
        Row {
            scenario: "memory",
            what: format!("resident memory of a {slots}-slot pool with no VM running, per slot"),
            zvm: format!("{:.0} bytes", idle as f64 / slots as f64),
            baseline: "Cloudflare isolate ~3 MB, Firecracker < 5 MiB (published)".into(),
            ratio: format!(
                "{:.1} MiB for the whole pool",
                idle as f64 / (1 << 20) as f64
            ),
            goal: "report",
            met: None,
        },
        Row {
            scenario: "memory",
            what: format!(
                "resident memory per running trivial VM ({vms} held at once, thread stacks subtracted)"
            ),
            zvm: format!("{:.1} KiB", per_vm / 1024.0),
            baseline: "Faasm ~90 KB (published)".into(),
            ratio: "-".into(),
            goal: "report",
            met: None,
        },
    ])
}

// ----- output ---------------------------------------------------------------------------------

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "-",
    }
}

fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    for r in rows {
        let _ = writeln!(
            s,
            "{:<10} {:>16}  vs {:<40} {:<14} goal: {} ({})\n           {}",
            r.scenario,
            r.zvm,
            r.baseline,
            r.ratio,
            r.goal,
            met_text(r.met),
            r.what
        );
    }
    s
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    format!(
        "{cpu}, {cores} cores, {:.0} GiB memory",
        mem as f64 / (1 << 20) as f64
    )
}

const SECTION_START: &str = "<!-- zvm bench: start -->";
const SECTION_END: &str = "<!-- zvm bench: end -->";

/// Replaces the generated section of `path` (between the markers), keeping the prose around
/// it; a file without markers gets the section alone.
fn write_section(path: &Path, table: &str) -> Result<()> {
    let section = format!("{SECTION_START}\n{table}{SECTION_END}\n");
    let text = match std::fs::read_to_string(path) {
        Ok(old) => match (old.find(SECTION_START), old.find(SECTION_END)) {
            (Some(a), Some(b)) if a < b => {
                format!(
                    "{}{section}{}",
                    &old[..a],
                    old[b + SECTION_END.len()..].trim_start_matches('\n')
                )
            }
            _ => section,
        },
        Err(_) => section,
    };
    std::fs::write(path, text).with_context(|| format!("writing `{}`", path.display()))
}

fn markdown(rows: &[Row], quick: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| scenario | what | zvm | baseline | ratio | goal | |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.what,
            r.zvm,
            r.baseline,
            r.ratio,
            r.goal,
            met_text(r.met)
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Measured on {} with `zvm bench{}` ({} build).",
        machine(),
        if quick { " --scale quick" } else { "" },
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    s
}
