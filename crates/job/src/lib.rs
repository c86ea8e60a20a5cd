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

pub mod cluster;
pub mod part;
pub mod remote;
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
    #[error("worker: {0}")]
    Worker(String),
}

/// How to run a job.
#[derive(Clone)]
pub struct JobOptions {
    /// Threads running members (at most this many members compute at once).
    pub threads: usize,
    /// Called about every 100 ms with the job's progress.
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

/// The members one process runs, and the pipe ends they hold, by member index.
pub(crate) struct Share {
    pub members: Vec<usize>,
    pub endpoints: HashMap<usize, Vec<(String, Endpoint)>>,
}

/// Runs `job`: every member at once in this process, pipes between them, outputs committed
/// only if every member succeeds. Members' standard output and error (when not bound to
/// files) are returned in the report, in member order.
pub fn run(runtime: &Runtime, job: &Job, options: &JobOptions) -> Result<JobReport, Error> {
    let started = Instant::now();
    let all: Vec<usize> = (0..job.members.len()).collect();
    let programs = load_programs(runtime, job, &all)?;
    let txn = Arc::new(runtime.transaction());
    let monitor = Arc::new(PipeMonitor::default());
    let mut endpoints: HashMap<usize, Vec<(String, Endpoint)>> = HashMap::new();
    for p in &job.pipes {
        let (w, r) = zvm_channel::pipe::pipe_monitored(monitor.clone());
        endpoints
            .entry(p.from)
            .or_default()
            .push((p.writer.to_string(), Endpoint::PipeWriter(w)));
        endpoints
            .entry(p.to)
            .or_default()
            .push((p.reader.to_string(), Endpoint::PipeReader(r)));
    }
    let share = Share {
        members: all,
        endpoints,
    };
    let rt = threads(options)?;
    let members = rt.block_on(run_share(
        job, &programs, share, &txn, &monitor, options, true, None,
    ));
    drop(rt);
    let members: Vec<MemberReport> = members.into_iter().map(|(_, m)| m).collect();
    let outcome = if members.iter().all(MemberReport::is_ok) {
        txn.commit()?;
        JobOutcome::Ok
    } else {
        txn.abort();
        report::failure(&members)
    };
    Ok(JobReport::new(
        job,
        outcome,
        members,
        monitor.transferred(),
        started.elapsed(),
    ))
}

/// The tokio runtime members run on: `options.threads` threads.
pub(crate) fn threads(options: &JobOptions) -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .thread_name("zvm-job")
        .enable_all()
        .build()
        .map_err(Error::Threads)
}

/// Runs the members of `share` (staging their outputs in `txn`) until all have ended, or
/// one fails (the others are then cancelled, as they are when `cancel` is set); returns their
/// reports in member order.
#[expect(
    clippy::too_many_arguments,
    reason = "the three callers (one process, a worker, a cluster part) differ in these"
)]
pub(crate) async fn run_share(
    job: &Job,
    programs: &HashMap<usize, Arc<Program>>,
    mut share: Share,
    txn: &Arc<zvm_vm::Transaction>,
    monitor: &PipeMonitor,
    options: &JobOptions,
    detect_deadlocks: bool,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Vec<(usize, MemberReport)> {
    let mut captured = Vec::with_capacity(share.members.len());
    let mut ios = Vec::with_capacity(share.members.len());
    for &i in &share.members {
        let member = &job.members[i];
        let mut io = RunIo::default().in_transaction(txn.clone());
        for (name, endpoint) in share.endpoints.remove(&i).unwrap_or_default() {
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
        ios.push((i, io));
    }
    let mut outcomes = drive(
        job,
        programs,
        ios,
        monitor,
        options,
        detect_deadlocks,
        cancel,
    )
    .await;
    let mut out = Vec::with_capacity(share.members.len());
    for (k, &i) in share.members.iter().enumerate() {
        let member = &job.members[i];
        let cap = &captured[k];
        let (report, error) = match outcomes.remove(&i) {
            Some(Outcome::Finished(Ok(report))) => (Some(report), None),
            Some(Outcome::Finished(Err(e))) => (None, Some(e.to_string())),
            Some(Outcome::TimedOut) => (None, Some("timed out waiting on a pipe".into())),
            Some(Outcome::Cancelled(why)) => (None, Some(why)),
            None => (None, Some("cancelled".into())),
        };
        out.push((
            i,
            MemberReport {
                name: member.name.clone(),
                group: member.group.clone(),
                report,
                error,
                stdout: cap.stdout.as_ref().map(SharedBuffer::contents),
                stderr: cap.stderr.as_ref().map(SharedBuffer::contents),
            },
        ));
    }
    out
}

/// Loads each distinct program of these members once.
pub(crate) fn load_programs(
    runtime: &Runtime,
    job: &Job,
    members: &[usize],
) -> Result<HashMap<usize, Arc<Program>>, Error> {
    let mut by_path: HashMap<PathBuf, Arc<Program>> = HashMap::new();
    let mut out = HashMap::with_capacity(members.len());
    for &i in members {
        let m = &job.members[i];
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
        out.insert(i, program);
    }
    Ok(out)
}

/// How one member's run ended.
#[expect(
    clippy::large_enum_variant,
    reason = "one per member, moved once; boxing would only add noise"
)]
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
    programs: &HashMap<usize, Arc<Program>>,
    ios: Vec<(usize, RunIo)>,
    monitor: &PipeMonitor,
    options: &JobOptions,
    detect_deadlocks: bool,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> HashMap<usize, Outcome> {
    let mut set = tokio::task::JoinSet::new();
    let mut tasks = HashMap::new();
    let total = ios.len();
    for (i, io) in ios {
        let program = programs[&i].clone();
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
    let mut outcomes: HashMap<usize, Outcome> = HashMap::new();
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
                outcomes.insert(i, outcome);
                done += 1;
            }
            _ = ticker.tick() => {
                let moved = monitor.transferred();
                if let Some(f) = &options.progress {
                    f(&Progress { members: total, done, pipe_bytes: moved });
                }
                if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
                    stop = Some("cancelled: the job's attempt was called off".into());
                    continue;
                }
                let live = total - done;
                if detect_deadlocks && live > 0 && monitor.waiting() >= live {
                    match quiet_since {
                        Some((since, bytes)) if bytes == moved => {
                            if since.elapsed() >= DEADLOCK_AFTER {
                                let mut waiting: Vec<usize> = tasks
                                    .values()
                                    .copied()
                                    .filter(|i| !outcomes.contains_key(i))
                                    .collect();
                                waiting.sort_unstable();
                                let waiting: Vec<String> = waiting
                                    .into_iter()
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
    for i in tasks.into_values() {
        outcomes
            .entry(i)
            .or_insert_with(|| Outcome::Cancelled(why.clone()));
    }
    outcomes
}
