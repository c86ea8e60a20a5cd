//! `zvm job` (a graph of VMs connected by pipes) and `zvm worker` (one process of a job
//! spread over several).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use zvm_job::cluster::WorkerArgs;
use zvm_job::{JobOptions, JobReport, Progress};
use zvm_vm::{Allocator, Runtime, RuntimeConfig};

use crate::exit;
use crate::run::ReportFormat;

/// Run a job: groups of VMs connected by pipes (map-reduce and friends).
///
/// The job file (TOML, JSON, or a ZeroCloud system map) is described in docs/jobs.md. All
/// members run at once; their outputs land together only if every member succeeds.
///
/// Examples:
///
///   zvm job examples/wordcount/job.toml
///
///   zvm job job.toml --processes 2 --report json --report-file job-report.json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct JobArgs {
    /// The job file.
    #[arg(value_name = "JOB")]
    job: PathBuf,

    /// Threads running members (default: the machine's cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Spread the members over N worker processes connected by sockets (default: 1, all
    /// in this process with in-memory pipes). Results are identical either way.
    #[arg(long, value_name = "N", default_value_t = 1)]
    processes: usize,

    /// With --processes: connect workers over TCP on the loopback instead of Unix sockets.
    #[arg(long)]
    tcp: bool,

    /// Print the job report: `text` or `json` (to stderr, or to --report-file).
    #[arg(long, value_enum, value_name = "FORMAT")]
    report: Option<ReportFormat>,

    /// Write the job report to this file (JSON unless --report text).
    #[arg(long, value_name = "PATH")]
    report_file: Option<PathBuf>,

    /// Do not read or write the compile cache.
    #[arg(long)]
    no_cache: bool,
}

/// One process of a job run with `zvm job --processes N` (started by it; not for users).
#[derive(Debug, Args)]
pub struct WorkerCliArgs {
    /// The job file, resolved again here (a fingerprint checks it resolves the same).
    #[arg(long, value_name = "JOB")]
    job: PathBuf,
    /// The coordinator's control socket.
    #[arg(long, value_name = "PATH")]
    control: PathBuf,
    #[arg(long)]
    index: usize,
    #[arg(long, default_value_t = 1)]
    attempt: u32,
    #[arg(long)]
    tcp: bool,
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[arg(long)]
    no_cache: bool,
}

pub fn main(args: JobArgs) -> i32 {
    match job(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zvm: {e:#}");
            exit::CANNOT_START
        }
    }
}

pub fn worker_main(args: WorkerCliArgs) -> i32 {
    let result = (|| -> Result<()> {
        let job = zvm_manifest::parse_job_file(&args.job)?;
        let runtime = job_runtime(args.no_cache)?;
        let options = options(args.threads, false);
        zvm_job::cluster::worker(
            &runtime,
            &job,
            &WorkerArgs {
                control: args.control.clone(),
                index: args.index,
                attempt: args.attempt,
                tcp: args.tcp,
            },
            &options,
        )?;
        Ok(())
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("zvm worker {}: {e:#}", args.index);
            exit::CANNOT_START
        }
    }
}

/// A runtime for many VMs at once: memory mapped per VM rather than from a pool, so that a
/// job's size is bounded by memory, not by slots.
fn job_runtime(no_cache: bool) -> Result<Runtime> {
    let cache_dir = if no_cache {
        None
    } else {
        Runtime::default_cache_dir()
    };
    Runtime::new(RuntimeConfig {
        cache_dir,
        allocator: Allocator::OnDemand,
        journal: crate::recover::journal_recovered(),
    })
    .context("starting the runtime")
}

fn options(threads: Option<usize>, progress: bool) -> JobOptions {
    let mut o = JobOptions::default();
    if let Some(t) = threads {
        o.threads = t.max(1);
    }
    if progress {
        o.progress = Some(Arc::new(|p: &Progress| {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[2Kzvm job: {}/{} members done, {} through pipes",
                p.done,
                p.members,
                human_bytes(p.pipe_bytes)
            );
            let _ = err.flush();
        }));
    }
    o
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn job(args: JobArgs) -> Result<i32> {
    let job = zvm_manifest::parse_job_file(&args.job)?;
    let runtime = job_runtime(args.no_cache)?;
    let terminal = std::io::stderr().is_terminal();
    let options = options(args.threads, terminal);
    let report = if args.processes > 1 {
        let exe = std::env::current_exe().context("finding the zvm executable")?;
        let job_path = args.job.clone();
        let threads = options.threads;
        let no_cache = args.no_cache;
        let spawn = move |w: &WorkerArgs| {
            let mut c = std::process::Command::new(&exe);
            c.arg("worker")
                .arg("--job")
                .arg(&job_path)
                .arg("--control")
                .arg(&w.control)
                .arg("--index")
                .arg(w.index.to_string())
                .arg("--attempt")
                .arg(w.attempt.to_string())
                .arg("--threads")
                .arg(threads.to_string());
            if w.tcp {
                c.arg("--tcp");
            }
            if no_cache {
                c.arg("--no-cache");
            }
            c.stdin(std::process::Stdio::null()).spawn()
        };
        zvm_job::cluster::run_distributed(
            &runtime,
            &job,
            args.processes,
            args.tcp,
            &options,
            &spawn,
        )?
    } else {
        zvm_job::run(&runtime, &job, &options)?
    };
    if terminal {
        eprintln!();
    }
    show_streams(&report);
    emit(&args, &report)?;
    Ok(exit_code(&report))
}

/// Members' standard output and error, in member order.
fn show_streams(report: &JobReport) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for m in &report.members {
        if let Some(b) = &m.stdout {
            let _ = out.write_all(b);
        }
        if let Some(b) = &m.stderr {
            let _ = err.write_all(b);
        }
    }
}

fn emit(args: &JobArgs, report: &JobReport) -> Result<()> {
    if args.report.is_none() && args.report_file.is_none() {
        // Without a report asked for, one line: the outcome and the totals.
        let t = &report.totals;
        eprintln!(
            "zvm: job `{}` {}: {} of {} members ok, {} through pipes, {:.3} s{}",
            report.job,
            report.outcome_text,
            t.ok,
            t.members,
            human_bytes(t.pipe_bytes),
            t.wall_time_us as f64 / 1e6,
            if report.committed {
                ", outputs committed"
            } else {
                ", nothing committed"
            }
        );
    }
    crate::run::write_report(
        args.report,
        args.report_file.as_deref(),
        || report.to_json(),
        || report.to_text(),
    )
}

/// 0 when the job succeeded; else the exit code `zvm run` would give the failed member.
fn exit_code(report: &JobReport) -> i32 {
    match report.failed_member() {
        None => 0,
        Some(m) => match &m.report {
            Some(r) => match exit::for_report(r) {
                0 => exit::CANNOT_START,
                code => code,
            },
            None => exit::CANNOT_START,
        },
    }
}

/// Runs a job already resolved (the entry point of a zapp, for `zvm run app.zapp`) in this
/// process, as `zvm job` does: progress, members' streams, the report or a summary line,
/// and `zvm job`'s exit code.
pub fn run_resolved(
    job: &zvm_manifest::Job,
    report: Option<ReportFormat>,
    report_file: Option<PathBuf>,
    no_cache: bool,
) -> Result<i32> {
    let args = JobArgs {
        job: PathBuf::new(),
        threads: None,
        processes: 1,
        tcp: false,
        report,
        report_file,
        no_cache,
    };
    let runtime = job_runtime(no_cache)?;
    let terminal = std::io::stderr().is_terminal();
    let job_report = zvm_job::run(&runtime, job, &options(None, terminal))?;
    if terminal {
        eprintln!();
    }
    show_streams(&job_report);
    emit(&args, &job_report)?;
    Ok(exit_code(&job_report))
}
