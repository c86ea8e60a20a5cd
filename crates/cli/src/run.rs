//! `zvm run`: one program in one disposable VM.
//!
//! The target is either a program (`.wasm`, or `.wat` text) or a manifest (TOML, or a legacy
//! ZeroVM manifest). Flags then adjust the manifest; without a manifest they build one, with
//! the host's standard streams as the guest's, so that `zvm run prog.wasm -- args` works like
//! `wasmtime run prog.wasm args`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use zvm_manifest::{
    AccessMode, Channel, ChannelName, ChannelSource, CommitPolicy, Export, Manifest, Mount,
    MountSource, Quota,
};
use zvm_vm::{Allocator, Program, Report, Runtime, RuntimeConfig};

use crate::{exit, memo};

/// Run a WebAssembly program (or a manifest) in a fresh, deterministic VM.
///
/// Examples:
///
///   zvm run hello.wasm
///
///   zvm run wc.wasm --input input=words.txt --output output=counts.txt --report text
///
///   zvm run job.toml --report json --report-file report.json
///
///   zvm run prog.wasm --dir data::/data --env LANG=C --fuel 1000000000 -- -v input.txt
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// The program (`.wasm` or `.wat`), a manifest (`.toml`, or a legacy ZeroVM manifest), a
    /// zapp (`.zapp`, see `zvm pack`), or a script (`.py`, `.js`: run by its installed
    /// interpreter).
    #[arg(
        value_name = "PROGRAM|MANIFEST|SCRIPT",
        required_unless_present = "eval"
    )]
    target: Option<PathBuf>,

    /// Run the script (or, with --eval, the code) with this installed interpreter (`python`,
    /// `quickjs`; `zvm interpreters` lists them) rather than by the script's extension.
    #[arg(long, value_name = "NAME")]
    interpreter: Option<String>,

    /// Code for the interpreter to run instead of a script (Python's `-c`, QuickJS's `-e`);
    /// needs --interpreter.
    #[arg(long, value_name = "CODE", requires = "interpreter")]
    eval: Option<String>,

    /// Arguments for the guest (after the program, or after `--`); they replace the
    /// manifest's `args`.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,

    /// Mount a host directory read-write at GUEST (default: the same path), like wasmtime's
    /// `--dir`. The guest works on a staged replica; its changes land, all at once and
    /// together with the other outputs, only when the run commits.
    #[arg(long, value_name = "HOST[::GUEST]")]
    dir: Vec<String>,

    /// Mount a host directory read-only at GUEST (default: the same path).
    #[arg(long, value_name = "HOST[::GUEST]")]
    ro_dir: Vec<String>,

    /// Mount a tar image (plain or gzip) read-only at GUEST; several at one GUEST stack as
    /// layers, later ones on top.
    #[arg(long, value_name = "TAR::GUEST")]
    image: Vec<String>,

    /// Set an environment variable of the guest; `NAME` alone copies the host's value.
    #[arg(long, value_name = "NAME[=VALUE]")]
    env: Vec<String>,

    /// Bind a read channel /dev/NAME to a host file (NAME `stdin` replaces standard input).
    #[arg(long, value_name = "NAME=PATH")]
    input: Vec<String>,

    /// Bind a write channel /dev/NAME to a host file, committed only if the run succeeds
    /// (NAME `stdout` or `stderr` redirects those).
    #[arg(long, value_name = "NAME=PATH")]
    output: Vec<String>,

    /// Bind a channel with any access mode: read, random-read, write, random-write, append,
    /// read-write.
    #[arg(long, value_name = "NAME=PATH:MODE")]
    channel: Vec<String>,

    /// CPU budget in fuel units (about one per wasm instruction).
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,

    /// Memory limit, e.g. `64MiB`.
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,

    /// Wall-clock timeout, e.g. `10s`, `500ms`.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,

    /// Size limit of the in-memory scratch filesystem, e.g. `16MiB`.
    #[arg(long, value_name = "SIZE")]
    scratch: Option<String>,

    /// Most file descriptors the guest may hold open.
    #[arg(long, value_name = "N")]
    open_files: Option<u32>,

    /// Seed of the guest's random stream.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Start of the guest's realtime clock, in seconds since the Unix epoch.
    #[arg(long, value_name = "SECONDS")]
    start_time: Option<u64>,

    /// Also hash the guest's final memory into the report.
    #[arg(long)]
    memory_etag: bool,

    /// When outputs land: `on-success` (exit code 0 within every limit; the default),
    /// `always`, or `never` (a dry run).
    #[arg(long, value_name = "POLICY", value_parser = parse_commit)]
    commit: Option<CommitPolicy>,

    /// Write the guest's scratch directory GUEST as a tar file when the run commits.
    #[arg(long, value_name = "GUEST=TAR")]
    export: Vec<String>,

    /// Run twice and compare etags, exit state and fuel; outputs land only if both runs
    /// agree (exit code 123 if they do not). Standard input is read once and given to both.
    #[arg(long)]
    verify: bool,

    /// Print the report: `text` or `json` (to stderr, or to --report-file).
    #[arg(long, value_enum, value_name = "FORMAT")]
    report: Option<ReportFormat>,

    /// Write the report to this file instead of stderr (JSON unless --report text).
    #[arg(long, value_name = "PATH")]
    report_file: Option<PathBuf>,

    /// Start a script's interpreter from a pre-initialised snapshot (docs/snapshots.md):
    /// `auto` uses one made earlier for the same interpreter and settings, `make` also makes
    /// it when there is none (once: it takes a minute for Python, and needs binaryen's
    /// wasm-opt), `never` starts the interpreter plainly. Outputs are the same either way.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    snapshot: SnapshotWhen,

    /// Use neither the compile cache nor the result cache.
    #[arg(long)]
    no_cache: bool,

    /// Always execute: do not serve this run from the result cache, nor store it there.
    #[arg(long)]
    no_result_cache: bool,

    /// Size bound of the result cache (least recently used results are evicted).
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    result_cache_size: String,
}

fn parse_commit(s: &str) -> Result<CommitPolicy, String> {
    CommitPolicy::parse(s).ok_or_else(|| {
        let all: Vec<String> = CommitPolicy::ALL
            .iter()
            .map(|(_, n)| format!("`{n}`"))
            .collect();
        format!("expected one of {}", all.join(", "))
    })
}

/// `--snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotWhen {
    Auto,
    Make,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

pub fn main(args: RunArgs) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zvm: {e:#}");
            exit::CANNOT_START
        }
    }
}

fn run(args: RunArgs) -> Result<i32> {
    let manifest = match args.target.as_deref().filter(|t| crate::zapp::is_zapp(t)) {
        // A zapp (docs/zapps.md): a job runs as `zvm job` runs one; a manifest takes the
        // arguments and flags as a manifest file does.
        Some(zapp) => match crate::zapp::open(zapp)? {
            crate::zapp::Target::Job(job) => {
                let file = args.report_file.clone();
                let flags = (args.verify, args.report, file, args.no_cache);
                return crate::zapp::run_job(&job, &args, &args.args, flags);
            }
            crate::zapp::Target::Manifest(m) => {
                apply_flags(crate::zapp::with_args(*m, &args.args), &args)?
            }
        },
        None => build_manifest(&args)?,
    };
    let runtime = runtime(args.no_cache)?;
    let program = match load(&runtime, &manifest)? {
        Ok(program) => program,
        Err(report) => {
            emit_report(&args, &report)?;
            return Ok(exit::for_report(&report));
        }
    };
    if args.verify {
        return verify(&args, &runtime, &program, &manifest);
    }
    let cache = if args.no_cache || args.no_result_cache {
        None
    } else {
        memo::open_cache(&args.result_cache_size)?
    };
    let snapshot = pick_snapshot(&args, &runtime, &program, &manifest)?;
    let report = memo::run_memoized(
        &runtime,
        &program,
        snapshot.as_ref(),
        &manifest,
        cache.as_ref(),
    )?;
    emit_report(&args, &report)?;
    Ok(exit::for_report(&report))
}

/// The guest path whose opening is a script interpreter's snapshot point.
pub const SNAPSHOT_POINT: &str = "/dev/script";

/// The snapshot to start from (`--snapshot`), for runs that give the guest a script channel.
fn pick_snapshot(
    args: &RunArgs,
    runtime: &Runtime,
    program: &Program,
    manifest: &Manifest,
) -> Result<Option<zvm_vm::snapshot::Snapshot>> {
    use zvm_vm::snapshot::Create;
    if args.snapshot == SnapshotWhen::Never || manifest.channel("script").is_none() {
        return Ok(None);
    }
    let create = match args.snapshot {
        SnapshotWhen::Make => Create::IfMissing,
        _ => Create::Never,
    };
    let mut progress = |step: &str| eprintln!("zvm: snapshot: {step}");
    match runtime.snapshot(program, manifest, SNAPSHOT_POINT, create, &mut progress) {
        Ok(found) => Ok(found),
        // `auto` only looks: a snapshot it cannot read is one it does not use.
        Err(e) if create == Create::Never => {
            tracing::debug!("snapshot: {e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Loads the manifest's program; a program refused before it ran still gets a report.
pub fn load(runtime: &Runtime, manifest: &Manifest) -> Result<Result<Program, Report>> {
    let report = match runtime.load_file(&manifest.program.path, manifest.program.hash) {
        Ok(program) => return Ok(Ok(program)),
        Err(zvm_vm::Error::Refused { path, hash, reason }) => {
            eprintln!("zvm: program `{}` refused: {reason}", path.display());
            Report::refused(&path.display().to_string(), Some(hash.to_string()), reason)
        }
        Err(e @ (zvm_vm::Error::HashMismatch { .. } | zvm_vm::Error::ProgramTooLarge { .. })) => {
            eprintln!("zvm: {e}");
            let (path, hash) = match &e {
                zvm_vm::Error::HashMismatch { path, actual, .. } => {
                    (path, Some(actual.to_string()))
                }
                zvm_vm::Error::ProgramTooLarge { path, .. } => (path, None),
                _ => unreachable!("matched above"),
            };
            Report::refused(&path.display().to_string(), hash, e.to_string())
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Err(report))
}

/// `--verify`: two runs in separate transactions; the second lands only if both agree.
fn verify(
    args: &RunArgs,
    runtime: &Runtime,
    program: &Program,
    manifest: &Manifest,
) -> Result<i32> {
    let stdin = memo::stdin_once(manifest)?;
    let first = memo::run_captured(runtime, program, manifest, stdin.clone())?;
    let second = memo::run_captured(runtime, program, manifest, stdin)?;
    first.txn.abort();
    if let Some(difference) = memo::difference(&first.report, &second.report) {
        second.txn.abort();
        eprintln!("zvm: --verify: the two runs differ: {difference}; nothing was committed");
        let mut report = second.report;
        report.committed = false;
        for c in &mut report.channels {
            c.committed = false;
        }
        report.exports.clear();
        emit_report(args, &report)?;
        return Ok(exit::NOT_REPRODUCED);
    }
    let report = second.land()?;
    emit_report(args, &report)?;
    Ok(exit::for_report(&report))
}

/// The runtime of a `zvm` process: compile cache, and the journal, whose abandoned
/// transactions are recovered first.
pub fn runtime(no_cache: bool) -> Result<Runtime> {
    let cache_dir = if no_cache {
        None
    } else {
        Runtime::default_cache_dir()
    };
    let journal = crate::recover::journal_recovered();
    Runtime::new(RuntimeConfig {
        cache_dir,
        // One VM per process: reserving a pool of slots would only slow the start.
        allocator: Allocator::OnDemand,
        journal,
    })
    .context("starting the runtime")
}

pub fn emit_report(args: &RunArgs, report: &Report) -> Result<()> {
    write_report(
        args.report,
        args.report_file.as_deref(),
        || report.to_json(),
        || report.to_text(),
    )
}

/// Writes a report as `--report FORMAT` and `--report-file PATH` ask: to the file (JSON
/// unless the format says text), or to stderr; nothing when neither is given.
pub fn write_report(
    format: Option<ReportFormat>,
    file: Option<&Path>,
    json: impl FnOnce() -> String,
    text: impl FnOnce() -> String,
) -> Result<()> {
    let format = match (format, file) {
        (Some(f), _) => f,
        (None, Some(_)) => ReportFormat::Json,
        (None, None) => return Ok(()),
    };
    let text = match format {
        ReportFormat::Json => json() + "\n",
        ReportFormat::Text => text(),
    };
    match file {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("writing the report to `{}`", path.display()))?,
        None => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
    Ok(())
}

/// Whether `path` is a program rather than a manifest: wasm binaries by their magic number,
/// wat text by its extension.
pub fn is_program(path: &Path) -> Result<bool> {
    if path.extension().is_some_and(|e| e == "wasm" || e == "wat") {
        return Ok(true);
    }
    let mut magic = [0u8; 4];
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let n = std::io::Read::read(&mut f, &mut magic).unwrap_or(0);
    Ok(n == 4 && &magic == b"\0asm")
}

/// The manifest for this run: the target's (or a default one), adjusted by the flags.
pub fn build_manifest(args: &RunArgs) -> Result<Manifest> {
    let interpreter = match (&args.interpreter, &args.target) {
        (Some(name), _) => Some(crate::interpreters::named(name)?),
        (None, Some(target)) => crate::interpreters::for_script(target)?,
        (None, None) => None,
    };
    let m = match (&interpreter, &args.target) {
        (Some((dir, i)), target) => {
            // With --eval there is no script: what clap took for one is the guest's first
            // argument.
            let (script, first_arg) = match &args.eval {
                Some(_) => (None, target.as_ref().map(|t| t.display().to_string())),
                None => (target.as_deref(), None),
            };
            let mut m = crate::interpreters::manifest(dir, i, script)?;
            if let Some(code) = &args.eval {
                // Python and QuickJS both take code after a flag of their own.
                let flag = if i.name == "python" { "-c" } else { "-e" };
                m.args.extend([flag.to_string(), code.clone()]);
            }
            m.args.extend(first_arg);
            m.args.extend(args.args.iter().cloned());
            m
        }
        (None, Some(target)) => {
            let mut m = if is_program(target)? {
                Manifest::for_program(target)
            } else {
                zvm_manifest::parse_file(target)?
            };
            if !args.args.is_empty() {
                m.args = args.args.clone();
            }
            m
        }
        (None, None) => bail!("--eval needs --interpreter"),
    };
    apply_flags(m, args)
}

/// The flags applied to a manifest: a file's, a program's default, or a zapp's.
pub fn apply_flags(mut m: Manifest, args: &RunArgs) -> Result<Manifest> {
    for spec in &args.env {
        let (name, value) = match spec.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (
                spec.clone(),
                std::env::var(spec)
                    .with_context(|| format!("--env `{spec}`: not set on the host"))?,
            ),
        };
        if name.is_empty() {
            bail!("--env `{spec}`: empty name");
        }
        m.env.insert(name, value);
    }
    for spec in &args.dir {
        m.mounts.push(dir_mount(spec, true)?);
    }
    for spec in &args.ro_dir {
        m.mounts.push(dir_mount(spec, false)?);
    }
    for spec in &args.image {
        let (tar, guest) = spec
            .split_once("::")
            .with_context(|| format!("--image `{spec}`: expected TAR::GUEST"))?;
        m.mounts.push(Mount {
            guest: guest.to_string(),
            source: MountSource::Image(PathBuf::from(tar)),
        });
    }
    for spec in &args.input {
        set_channel(&mut m, spec, Some(AccessMode::SequentialRead), "--input")?;
    }
    for spec in &args.output {
        set_channel(&mut m, spec, Some(AccessMode::SequentialWrite), "--output")?;
    }
    for spec in &args.channel {
        set_channel(&mut m, spec, None, "--channel")?;
    }
    if let Some(fuel) = args.fuel {
        m.limits.fuel = fuel;
    }
    if let Some(s) = &args.memory {
        m.limits.memory =
            zvm_manifest::parse_size(s).map_err(|e| anyhow::anyhow!("--memory `{s}`: {e}"))?;
    }
    if let Some(s) = &args.timeout {
        m.limits.timeout =
            zvm_manifest::parse_duration(s).map_err(|e| anyhow::anyhow!("--timeout `{s}`: {e}"))?;
    }
    if let Some(s) = &args.scratch {
        m.limits.scratch =
            zvm_manifest::parse_size(s).map_err(|e| anyhow::anyhow!("--scratch `{s}`: {e}"))?;
    }
    if let Some(n) = args.open_files {
        m.limits.open_files = n;
    }
    if let Some(seed) = args.seed {
        m.seed = seed;
    }
    if let Some(t) = args.start_time {
        m.clock.start_ns = t.saturating_mul(1_000_000_000);
    }
    m.memory_etag |= args.memory_etag;
    if let Some(policy) = args.commit {
        m.commit = policy;
    }
    for spec in &args.export {
        let (guest, tar) = spec
            .split_once('=')
            .with_context(|| format!("--export `{spec}`: expected GUEST=TAR"))?;
        if tar.is_empty() {
            bail!("--export `{spec}`: empty tar path");
        }
        m.exports.push(Export {
            guest: Mount::normalise_guest(guest),
            path: PathBuf::from(tar),
        });
    }
    // The flags may have produced what a manifest file could not say: apply the same rules.
    m.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(m)
}

fn dir_mount(spec: &str, writable: bool) -> Result<Mount> {
    let (host, guest) = match spec.split_once("::") {
        Some((h, g)) => (h, g),
        None => (spec, spec),
    };
    if host.is_empty() || guest.is_empty() {
        bail!("--dir `{spec}`: expected HOST[::GUEST]");
    }
    Ok(Mount {
        guest: guest.to_string(),
        source: MountSource::Dir {
            path: PathBuf::from(host),
            writable,
        },
    })
}

fn set_channel(m: &mut Manifest, spec: &str, mode: Option<AccessMode>, flag: &str) -> Result<()> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("{flag} `{spec}`: expected NAME=PATH"))?;
    let (path, mode) = match mode {
        Some(mode) => (rest, mode),
        None => {
            let (path, mode) = rest
                .rsplit_once(':')
                .with_context(|| format!("{flag} `{spec}`: expected NAME=PATH:MODE"))?;
            let mode = AccessMode::parse(mode).with_context(|| {
                format!(
                    "{flag} `{spec}`: unknown mode `{mode}`, expected one of {}",
                    AccessMode::ALL
                        .iter()
                        .map(|(_, s)| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            (path, mode)
        }
    };
    let name = ChannelName::new(name).map_err(|e| anyhow::anyhow!("{flag} `{spec}`: {e}"))?;
    if path.is_empty() {
        bail!("{flag} `{spec}`: empty path");
    }
    let channel = Channel {
        name,
        source: ChannelSource::File(PathBuf::from(path)),
        mode,
        quota: Quota::default(),
        etag: None,
    };
    match m.channels.iter_mut().find(|c| c.name == channel.name) {
        Some(existing) => {
            existing.source = channel.source;
            existing.mode = channel.mode;
        }
        None => m.channels.push(channel),
    }
    Ok(())
}
