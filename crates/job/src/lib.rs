//! Jobs: graphs of VMs connected by pipes, run together and committed all-or-nothing.
//!
//! # A guided tour
//!
//! * The job arrives resolved ([`zvm_manifest::Job`]): members with complete manifests, and
//!   pipes declared as channels on both ends (`/dev/out/<reader>`, `/dev/in/<writer>`).
//! * [`run`] loads each distinct program once, creates one in-memory pipe per edge
//!   ([`zvm_channel::pipe`]), and runs every member as a future ([`Program::run_async`]) on a
//!   multi-threaded tokio runtime with a bounded number of threads. A member blocked on a
//!   pipe is suspended and gives its thread to another member, so a job of a thousand members
//!   runs on two cores.
//! * All members stage their outputs in one [`zvm_vm::Transaction`]. When every member ends `ok`, the
//!   transaction commits and all of the job's outputs land together; when one fails, the
//!   others are cancelled and nothing lands. The report names the member that failed, and why.
//! * A watchdog follows the pipes ([`PipeMonitor`]): when every live member is waiting on a
//!   pipe and no byte has moved for a while, the job is deadlocked and fails at once rather
//!   than waiting for timeouts. A member whose wall-clock timeout passes while it waits on a
//!   pipe is stopped too (wasm's own timeout only interrupts running code).

pub mod report;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zvm_channel::{ChannelSource, Endpoint, PipeMonitor, SharedBuffer, StdStream};
use zvm_manifest::Job;
use zvm_vm::{Program, RunIo, Runtime, State};

pub use report::{JobOutcome, JobReport, MemberReport, Totals};

/// How often the watchdog looks at the job (progress and deadlocks).
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// How long every live member must have been waiting on a pipe, with no byte moving, before
/// the job counts as deadlocked: a few watch intervals, so that a member just woken has time
/// to run.
const DEADLOCK_AFTER: Duration = Duration::from_millis(500);

/// Errors that stop a job before its members run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("member `{member}`: {error}")]
    Program {
        member: String,
        error: Box<zvm_vm::Error>,
    },
    #[error("cannot start the job's threads: {0}")]
    Threads(std::io::Error),
    #[error(transparent)]
    Commit(#[from] zvm_txn::Error),
}

/// How to run a job.
#[derive(Clone)]
pub struct JobOptions {
    /// Threads running members (at most this many members compute at once).
    pub threads: usize,
    /// Called about every [`WATCH_INTERVAL`] with the job's progress.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for JobOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobOptions")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl Default for JobOptions {
    fn default() -> JobOptions {
        JobOptions {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            progress: None,
        }
    }
}

/// A callback that shows a job's progress.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Progress of a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub members: usize,
    pub done: usize,
    pub pipe_bytes: u64,
}

/// The standard streams of a member that are the host's: captured while the job runs (a
/// thousand members cannot share a terminal), shown afterwards in member order.
struct Captured {
    stdout: Option<SharedBuffer>,
    stderr: Option<SharedBuffer>,
}

/// Runs `job`: every member at once, pipes between them, outputs committed only if every
/// member succeeds. Members' standard output and error (when not bound to files) are
/// returned in the report, in member order.
pub fn run(runtime: &Runtime, job: &Job, options: &JobOptions) -> Result<JobReport, Error> {
    let started = Instant::now();
    let programs = load_programs(runtime, job)?;
    let txn = Arc::new(runtime.transaction());
    let monitor = Arc::new(PipeMonitor::default());

    let mut endpoints: Vec<Vec<(String, Endpoint)>> =
        (0..job.members.len()).map(|_| Vec::new()).collect();
    for p in &job.pipes {
        let (w, r) = zvm_channel::pipe::pipe_monitored(monitor.clone());
        endpoints[p.from].push((p.writer.to_string(), Endpoint::PipeWriter(w)));
        endpoints[p.to].push((p.reader.to_string(), Endpoint::PipeReader(r)));
    }
    let mut captured = Vec::with_capacity(job.members.len());
    let mut ios = Vec::with_capacity(job.members.len());
    for (member, pipes) in job.members.iter().zip(endpoints) {
        let mut io = RunIo::default().in_transaction(txn.clone());
        for (name, endpoint) in pipes {
            io = io.bind(&name, endpoint);
        }
        let mut cap = Captured {
            stdout: None,
            stderr: None,
        };
        for c in &member.manifest.channels {
            match c.source {
                ChannelSource::Stdio(StdStream::Stdin) => {
                    io = io.bind(
                        c.name.as_str(),
                        Endpoint::Reader(Box::new(std::io::empty())),
                    );
                }
                ChannelSource::Stdio(StdStream::Stdout) => {
                    let b = SharedBuffer::new();
                    io = io.bind(c.name.as_str(), b.endpoint());
                    cap.stdout = Some(b);
                }
                ChannelSource::Stdio(StdStream::Stderr) => {
                    let b = SharedBuffer::new();
                    io = io.bind(c.name.as_str(), b.endpoint());
                    cap.stderr = Some(b);
                }
                _ => {}
            }
        }
        captured.push(cap);
        ios.push(io);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .thread_name("zvm-job")
        .enable_time()
        .build()
        .map_err(Error::Threads)?;
    let outcomes = rt.block_on(drive(job, &programs, ios, &monitor, options));
    drop(rt);

    let mut members = Vec::with_capacity(job.members.len());
    let mut failure = None;
    for (i, (member, outcome)) in job.members.iter().zip(outcomes).enumerate() {
        let cap = &captured[i];
        let (report, error) = match outcome {
            Outcome::Finished(Ok(report)) => (Some(report), None),
            Outcome::Finished(Err(e)) => (None, Some(e.to_string())),
            Outcome::TimedOut => (None, Some("timed out waiting on a pipe".into())),
            Outcome::Cancelled(why) => (None, Some(why)),
        };
        let ok = report.as_ref().is_some_and(|r| r.state.is_ok());
        members.push(MemberReport {
            name: member.name.clone(),
            group: member.group.clone(),
            report,
            error,
            stdout: cap.stdout.as_ref().map(SharedBuffer::contents),
            stderr: cap.stderr.as_ref().map(SharedBuffer::contents),
        });
        if !ok && failure.is_none() {
            failure = Some(i);
        }
    }
    let outcome = match failure {
        None => {
            txn.commit()?;
            JobOutcome::Ok
        }
        Some(_) => {
            txn.abort();
            report::failure(&members)
        }
    };
    Ok(JobReport::new(
        job,
        outcome,
        members,
        monitor.transferred(),
        started.elapsed(),
    ))
}

/// Loads each distinct program of the job once.
fn load_programs(runtime: &Runtime, job: &Job) -> Result<Vec<Arc<Program>>, Error> {
    let mut by_path: HashMap<PathBuf, Arc<Program>> = HashMap::new();
    let mut out = Vec::with_capacity(job.members.len());
    for m in &job.members {
        let p = &m.manifest.program;
        let program = match by_path.get(&p.path) {
            Some(program) => program.clone(),
            None => {
                let program = Arc::new(runtime.load_file(&p.path, p.hash).map_err(|error| {
                    Error::Program {
                        member: m.name.clone(),
                        error: Box::new(error),
                    }
                })?);
                by_path.insert(p.path.clone(), program.clone());
                program
            }
        };
        out.push(program);
    }
    Ok(out)
}

/// How one member's run ended.
enum Outcome {
    Finished(Result<zvm_vm::Report, zvm_vm::Error>),
    /// Its wall-clock timeout passed while it was suspended on a pipe.
    TimedOut,
    /// Stopped because another member failed, or the job deadlocked.
    Cancelled(String),
}

/// Runs every member to its end, or until one fails (then the others are cancelled).
async fn drive(
    job: &Job,
    programs: &[Arc<Program>],
    ios: Vec<RunIo>,
    monitor: &PipeMonitor,
    options: &JobOptions,
) -> Vec<Outcome> {
    let mut set = tokio::task::JoinSet::new();
    let mut tasks = HashMap::new();
    for (i, io) in ios.into_iter().enumerate() {
        let program = programs[i].clone();
        let manifest = job.members[i].manifest.clone();
        // Wasm's own timeout interrupts running code; this one also ends a member
        // suspended on a pipe. A little later, so that the former wins when both apply.
        let limit = manifest.limits.timeout + Duration::from_secs(1);
        let handle = set.spawn(async move {
            match tokio::time::timeout(limit, program.run_async(&manifest, io)).await {
                Ok(r) => (i, Outcome::Finished(r)),
                Err(_) => (i, Outcome::TimedOut),
            }
        });
        tasks.insert(handle.id(), i);
    }
    let total = job.members.len();
    let mut outcomes: Vec<Option<Outcome>> = (0..total).map(|_| None).collect();
    let mut done = 0;
    let mut stop: Option<String> = None;
    let mut quiet_since: Option<(Instant, u64)> = None;
    let mut ticker = tokio::time::interval(WATCH_INTERVAL);
    while done < total && stop.is_none() {
        tokio::select! {
            joined = set.join_next_with_id() => {
                let Some(joined) = joined else { break };
                let (i, outcome) = match joined {
                    Ok((_, r)) => r,
                    Err(e) => {
                        let i = tasks[&e.id()];
                        let why = if e.is_panic() {
                            "zvm failed while running it (a panic; please report it)".to_string()
                        } else {
                            "cancelled".to_string()
                        };
                        (i, Outcome::Finished(Err(zvm_vm::Error::Internal(why))))
                    }
                };
                let ok = matches!(&outcome, Outcome::Finished(Ok(r)) if r.state == State::Ok);
                if !ok {
                    stop = Some(format!("cancelled: member `{}` failed", job.members[i].name));
                }
                outcomes[i] = Some(outcome);
                done += 1;
            }
            _ = ticker.tick() => {
                let moved = monitor.transferred();
                if let Some(f) = &options.progress {
                    f(&Progress { members: total, done, pipe_bytes: moved });
                }
                let live = total - done;
                if live > 0 && monitor.waiting() >= live {
                    match quiet_since {
                        Some((since, bytes)) if bytes == moved => {
                            if since.elapsed() >= DEADLOCK_AFTER {
                                let waiting: Vec<String> = (0..total)
                                    .filter(|i| outcomes[*i].is_none())
                                    .map(|i| format!("`{}`", job.members[i].name))
                                    .collect();
                                stop = Some(format!(
                                    "deadlock: every remaining member waits on a pipe ({})",
                                    waiting.join(", ")
                                ));
                            }
                        }
                        _ => quiet_since = Some((Instant::now(), moved)),
                    }
                } else {
                    quiet_since = None;
                }
            }
        }
    }
    // Whatever is still running stops now: dropping a VM's future unwinds it cleanly.
    set.abort_all();
    while set.join_next().await.is_some() {}
    let why = stop.unwrap_or_else(|| "cancelled".into());
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Cancelled(why.clone())))
        .collect()
}
