//! A job spread over several worker processes, with identical results.
//!
//! # A guided tour
//!
//! * The coordinator ([`run_distributed`]) starts `processes` workers (`zvm worker`), listens
//!   on a private control socket, and gives each worker its share of the members (member `i`
//!   goes to worker `i mod processes`). Each worker resolves the same job file itself; a
//!   fingerprint of the resolved job, checked by the coordinator, guarantees they agree.
//! * Every worker listens on a data socket (Unix-domain, or TCP on the loopback with
//!   `tcp`). A pipe whose two ends are in one worker stays in memory; a pipe between two
//!   workers is a connection from the writer's worker to the reader's, carrying the framed
//!   stream of [`crate::remote`] (with its end-of-stream digest). Guests see no difference.
//! * Workers stage their members' outputs in their own journalled transactions and report
//!   back: each member's report and the staged files. When every member of every worker
//!   succeeded, the coordinator adopts all staged files into its transaction, tells the
//!   workers to let go of them, and commits: the job lands all-or-nothing, as in one process.
//! * A worker lost to a host fault (killed, crashed) fails the attempt; every member is
//!   deterministic, so the coordinator runs the attempt again (the members that were lost and
//!   every member connected to them — in a pipe graph that is, in general, the whole job),
//!   up to the job's `retries`, and the results are identical.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use zvm_channel::{Endpoint, PipeMonitor};
use zvm_manifest::Job;
use zvm_vm::{Report, Runtime};

use crate::report::{JobOutcome, JobReport, MemberReport};
use crate::{Error, JobOptions, Share};

/// How long a worker waits, after its members ended, for its outgoing pipes to deliver their
/// last bytes.
const SEND_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the coordinator waits for a worker to start and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// A fingerprint of a resolved job: every member's canonical manifest and every pipe.
pub fn fingerprint(job: &Job) -> String {
    let mut h = blake3::Hasher::new();
    for m in &job.members {
        h.update(m.name.as_bytes());
        h.update(b"\0");
        h.update(zvm_manifest::canonical_toml(&m.manifest).as_bytes());
    }
    for p in &job.pipes {
        h.update(format!("{} {} {} {}\n", p.from, p.to, p.writer, p.reader).as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// What a worker needs to know to start (its command-line arguments).
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// The coordinator's control socket.
    pub control: PathBuf,
    pub index: usize,
    /// 1 for the first attempt of the job.
    pub attempt: u32,
    /// Listen for pipes on TCP (loopback) rather than a Unix-domain socket.
    pub tcp: bool,
}

/// Messages between coordinator and workers: one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
enum Msg {
    Hello {
        index: usize,
        data: String,
        fingerprint: String,
    },
    Start {
        processes: usize,
        data: Vec<String>,
    },
    Done {
        members: Vec<WireMember>,
        staged: Vec<(PathBuf, PathBuf)>,
    },
    Release,
    Abort,
    Bye,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireMember {
    index: usize,
    report: Option<Report>,
    error: Option<String>,
    stdout: Option<Vec<u8>>,
    stderr: Option<Vec<u8>>,
}

fn owner(member: usize, processes: usize) -> usize {
    member % processes
}

async fn send_msg<W: AsyncWriteExt + Unpin>(w: &mut W, msg: &Msg) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

async fn recv_msg<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Msg> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the other side is gone",
        ));
    }
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

/// A connected data socket, Unix-domain or TCP.
enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn connect(addr: &str) -> std::io::Result<Stream> {
    match addr.split_once(':') {
        Some(("unix", path)) => Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?)),
        Some(("tcp", hostport)) => {
            let s = tokio::net::TcpStream::connect(hostport).await?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
        _ => Err(std::io::Error::other(format!("bad address `{addr}`"))),
    }
}

enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Listener::Unix(l) => Stream::Unix(l.accept().await?.0),
            Listener::Tcp(l) => {
                let s = l.accept().await?.0;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
        })
    }
}

/// Runs `job` over `processes` worker processes started by `spawn` (which must run
/// [`worker`] with the given arguments, e.g. `zvm worker ...`).
pub fn run_distributed(
    runtime: &Runtime,
    job: &Job,
    processes: usize,
    tcp: bool,
    options: &JobOptions,
    spawn: &dyn Fn(&WorkerArgs) -> std::io::Result<Child>,
) -> Result<JobReport, Error> {
    let started = Instant::now();
    let processes = processes.max(1);
    let rt = crate::threads(options)?;
    let mut attempt = 1;
    loop {
        let result = rt.block_on(attempt_once(job, processes, tcp, attempt, spawn));
        if result.is_err()
            && let Some(journal) = runtime.journal()
        {
            // The lost attempt's workers are gone; their staged files go with them now,
            // not at the next zvm start.
            if let Err(e) = journal.recover() {
                tracing::warn!("recovering the lost attempt's transactions: {e}");
            }
        }
        match result {
            Ok(AttemptResult {
                members,
                staged,
                mut controls,
                pipe_bytes,
            }) => {
                let txn = runtime.transaction();
                let all_ok = members.iter().all(MemberReport::is_ok);
                let outcome = if all_ok {
                    for (dest, temp) in &staged {
                        txn.adopt(dest, temp)?;
                    }
                    rt.block_on(finish_workers(&mut controls, Msg::Release));
                    txn.commit()?;
                    JobOutcome::Ok
                } else {
                    rt.block_on(finish_workers(&mut controls, Msg::Abort));
                    crate::report::failure(&members)
                };
                let mut report =
                    JobReport::new(job, outcome, members, pipe_bytes, started.elapsed());
                report.attempts = attempt;
                report.processes = processes;
                return Ok(report);
            }
            Err(lost) if attempt <= job.retries => {
                tracing::warn!("attempt {attempt}: {lost}; running the job's members again");
                eprintln!(
                    "zvm: attempt {attempt} of job `{}`: {lost}; running its members again",
                    job.name
                );
                attempt += 1;
            }
            Err(lost) => {
                let members = job
                    .members
                    .iter()
                    .map(|m| MemberReport {
                        name: m.name.clone(),
                        group: m.group.clone(),
                        report: None,
                        error: Some(format!("lost: {lost}")),
                        stdout: None,
                        stderr: None,
                    })
                    .collect::<Vec<_>>();
                let outcome = JobOutcome::Failed {
                    member: job
                        .members
                        .first()
                        .map(|m| m.name.clone())
                        .unwrap_or_default(),
                    reason: format!("{lost} (after {attempt} attempts)"),
                };
                let mut report = JobReport::new(job, outcome, members, 0, started.elapsed());
                report.attempts = attempt;
                report.processes = processes;
                return Ok(report);
            }
        }
    }
}

struct AttemptResult {
    members: Vec<MemberReport>,
    staged: Vec<(PathBuf, PathBuf)>,
    controls: Vec<Control>,
    pipe_bytes: u64,
}

struct Control {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    child: Child,
}

/// Tells every worker how the job ended for it (keep or drop its staged files) and waits for
/// it to exit.
async fn finish_workers(controls: &mut [Control], msg: Msg) {
    let release = matches!(msg, Msg::Release);
    for c in controls.iter_mut() {
        let m = if release { Msg::Release } else { Msg::Abort };
        let _ = send_msg(&mut c.writer, &m).await;
    }
    for c in controls.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(30), recv_msg(&mut c.reader)).await;
        let _ = c.child.wait();
    }
}

/// One attempt: start the workers, hand out the members, collect their results. An error is
/// a lost worker (a host fault); the workers of the attempt are gone when it returns.
async fn attempt_once(
    job: &Job,
    processes: usize,
    tcp: bool,
    attempt: u32,
    spawn: &dyn Fn(&WorkerArgs) -> std::io::Result<Child>,
) -> Result<AttemptResult, String> {
    let dir = tempfile::Builder::new()
        .prefix("zvm-job-")
        .tempdir()
        .map_err(|e| format!("cannot create a socket directory: {e}"))?;
    let control_path = dir.path().join("control.sock");
    let listener = tokio::net::UnixListener::bind(&control_path)
        .map_err(|e| format!("cannot listen on `{}`: {e}", control_path.display()))?;
    let mut children = Vec::new();
    for index in 0..processes {
        let child = spawn(&WorkerArgs {
            control: control_path.clone(),
            index,
            attempt,
            tcp,
        })
        .map_err(|e| format!("cannot start worker {index}: {e}"))?;
        children.push(child);
    }
    let kill_all = |children: &mut Vec<Child>| {
        for c in children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    let mut slots: Vec<Option<(BufReader<_>, _, String)>> = (0..processes).map(|_| None).collect();
    let expected = fingerprint(job);
    for _ in 0..processes {
        let accepted = tokio::time::timeout(HELLO_TIMEOUT, listener.accept()).await;
        let stream = match accepted {
            Ok(Ok((s, _))) => s,
            _ => {
                kill_all(&mut children);
                return Err("a worker did not start".into());
            }
        };
        let (r, w) = stream.into_split();
        let mut r = BufReader::new(r);
        match recv_msg(&mut r).await {
            Ok(Msg::Hello {
                index,
                data,
                fingerprint,
            }) if index < processes => {
                if fingerprint != expected {
                    kill_all(&mut children);
                    return Err(format!(
                        "worker {index} resolved the job differently (did its files change?)"
                    ));
                }
                slots[index] = Some((r, w, data));
            }
            _ => {
                kill_all(&mut children);
                return Err("a worker did not say hello".into());
            }
        }
    }
    let data: Vec<String> = slots
        .iter()
        .map(|s| s.as_ref().map(|s| s.2.clone()).unwrap_or_default())
        .collect();
    let mut controls: Vec<Control> = Vec::with_capacity(processes);
    for (slot, child) in slots.into_iter().zip(children) {
        let (reader, writer, _) = slot.expect("every worker said hello");
        controls.push(Control {
            reader,
            writer,
            child,
        });
    }
    for c in &mut controls {
        let start = Msg::Start {
            processes,
            data: data.clone(),
        };
        if send_msg(&mut c.writer, &start).await.is_err() {
            let mut children: Vec<Child> = controls.into_iter().map(|c| c.child).collect();
            kill_all(&mut children);
            return Err("a worker was lost before the start".into());
        }
    }
    let mut members: Vec<Option<MemberReport>> = (0..job.members.len()).map(|_| None).collect();
    let mut staged = Vec::new();
    let mut lost = None;
    // Results come from all workers at once; a worker that dies closes its control socket.
    let mut pending: Vec<_> = controls
        .iter_mut()
        .enumerate()
        .map(|(k, c)| Box::pin(async move { (k, recv_msg(&mut c.reader).await) }))
        .collect();
    while !pending.is_empty() {
        let ((k, msg), _, rest) = futures_select_all(pending).await;
        pending = rest;
        match msg {
            Ok(Msg::Done {
                members: done,
                staged: s,
            }) => {
                for m in done {
                    let member = &job.members[m.index];
                    members[m.index] = Some(MemberReport {
                        name: member.name.clone(),
                        group: member.group.clone(),
                        report: m.report,
                        error: m.error,
                        stdout: m.stdout,
                        stderr: m.stderr,
                    });
                }
                staged.extend(s);
            }
            _ => {
                lost = Some(format!("worker process {k} was lost"));
                break;
            }
        }
    }
    drop(pending);
    if let Some(lost) = lost {
        for c in &mut controls {
            let _ = send_msg(&mut c.writer, &Msg::Abort).await;
        }
        let mut children: Vec<Child> = controls.into_iter().map(|c| c.child).collect();
        kill_all(&mut children);
        return Err(lost);
    }
    let pipe_bytes = members
        .iter()
        .flatten()
        .filter_map(|m| m.report.as_ref())
        .flat_map(|r| r.channels.iter())
        .filter(|c| c.name.starts_with("out/"))
        .map(|c| c.write_bytes)
        .sum();
    let members = members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.unwrap_or_else(|| MemberReport {
                name: job.members[i].name.clone(),
                group: job.members[i].group.clone(),
                report: None,
                error: Some("no worker reported it".into()),
                stdout: None,
                stderr: None,
            })
        })
        .collect();
    drop(dir);
    Ok(AttemptResult {
        members,
        staged,
        controls,
        pipe_bytes,
    })
}

/// The first of several futures to finish, and the others (a tiny `select_all`, to avoid a
/// dependency for one call).
async fn futures_select_all<F: std::future::Future + Unpin>(
    mut futures: Vec<F>,
) -> (F::Output, usize, Vec<F>) {
    std::future::poll_fn(move |cx| {
        for i in 0..futures.len() {
            if let std::task::Poll::Ready(out) = std::pin::Pin::new(&mut futures[i]).poll(cx) {
                futures.swap_remove(i);
                let rest = std::mem::take(&mut futures);
                return std::task::Poll::Ready((out, i, rest));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The body of `zvm worker`: runs this worker's share of `job` for the coordinator at
/// `args.control`.
pub fn worker(
    runtime: &Runtime,
    job: &Job,
    args: &WorkerArgs,
    options: &JobOptions,
) -> Result<(), Error> {
    let rt = crate::threads(options)?;
    rt.block_on(worker_async(runtime, job, args, options))
        .map_err(|e| Error::Worker(e.to_string()))
}

async fn worker_async(
    runtime: &Runtime,
    job: &Job,
    args: &WorkerArgs,
    options: &JobOptions,
) -> std::io::Result<()> {
    let dir = tempfile::Builder::new().prefix("zvm-worker-").tempdir()?;
    let (listener, data) = if args.tcp {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        (Listener::Tcp(l), format!("tcp:{addr}"))
    } else {
        let path = dir.path().join("data.sock");
        let l = tokio::net::UnixListener::bind(&path)?;
        (Listener::Unix(l), format!("unix:{}", path.display()))
    };
    let control = tokio::net::UnixStream::connect(&args.control).await?;
    let (r, mut w) = control.into_split();
    let mut r = BufReader::new(r);
    send_msg(
        &mut w,
        &Msg::Hello {
            index: args.index,
            data,
            fingerprint: fingerprint(job),
        },
    )
    .await?;
    let Msg::Start { processes, data } = recv_msg(&mut r).await? else {
        return Err(std::io::Error::other("expected the start"));
    };
    let me = args.index;
    let mine: Vec<usize> = (0..job.members.len())
        .filter(|&i| owner(i, processes) == me)
        .collect();
    let monitor = Arc::new(PipeMonitor::default());
    let mut endpoints: HashMap<usize, Vec<(String, Endpoint)>> = HashMap::new();
    let mut incoming: HashMap<u32, zvm_channel::PipeWriter> = HashMap::new();
    // Pumps sending local writers' streams to other workers, and the loop receiving theirs.
    let mut senders = tokio::task::JoinSet::new();
    let mut receivers = tokio::task::JoinSet::new();
    for (pi, p) in job.pipes.iter().enumerate() {
        let (wo, ro) = (owner(p.from, processes), owner(p.to, processes));
        if wo != me && ro != me {
            continue;
        }
        let (w, r) = zvm_channel::pipe::pipe_monitored(monitor.clone());
        if wo == me {
            endpoints
                .entry(p.from)
                .or_default()
                .push((p.writer.to_string(), Endpoint::PipeWriter(w)));
            if ro == me {
                endpoints
                    .entry(p.to)
                    .or_default()
                    .push((p.reader.to_string(), Endpoint::PipeReader(r)));
            } else {
                // The writer is here, the reader there: pump this pipe to its worker.
                let addr = data[ro].clone();
                senders.spawn(async move {
                    let Ok(stream) = connect(&addr).await else {
                        return;
                    };
                    let _ = match stream {
                        Stream::Unix(mut s) => {
                            let _ = s.write_u32_le(pi as u32).await;
                            crate::remote::send(r, s).await
                        }
                        Stream::Tcp(mut s) => {
                            let _ = s.write_u32_le(pi as u32).await;
                            crate::remote::send(r, s).await
                        }
                    };
                });
            }
        } else {
            endpoints
                .entry(p.to)
                .or_default()
                .push((p.reader.to_string(), Endpoint::PipeReader(r)));
            incoming.insert(pi as u32, w);
        }
    }
    // Pipes from other workers arrive as connections naming their pipe.
    let expected = incoming.len();
    let incoming = Arc::new(std::sync::Mutex::new(incoming));
    {
        let incoming = incoming.clone();
        receivers.spawn(async move {
            let mut receivers = tokio::task::JoinSet::new();
            for _ in 0..expected {
                let Ok(stream) = listener.accept().await else {
                    return;
                };
                let incoming = incoming.clone();
                receivers.spawn(async move {
                    match stream {
                        Stream::Unix(mut s) => {
                            let Ok(pi) = s.read_u32_le().await else {
                                return;
                            };
                            let w = incoming.lock().ok().and_then(|mut m| m.remove(&pi));
                            if let Some(w) = w {
                                crate::remote::receive(w, s).await;
                            }
                        }
                        Stream::Tcp(mut s) => {
                            let Ok(pi) = s.read_u32_le().await else {
                                return;
                            };
                            let w = incoming.lock().ok().and_then(|mut m| m.remove(&pi));
                            if let Some(w) = w {
                                crate::remote::receive(w, s).await;
                            }
                        }
                    }
                });
            }
            while receivers.join_next().await.is_some() {}
        });
    }
    crash_hook(args, &monitor);
    let programs = crate::load_programs(runtime, job, &mine)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let txn = Arc::new(runtime.transaction());
    let share = Share {
        members: mine,
        endpoints,
    };
    // Deadlock detection needs the whole graph; across processes, member timeouts apply.
    let done = crate::run_share(job, &programs, share, &txn, &monitor, options, false, None).await;
    // Writers are done, but their last bytes may still be on the way: let the senders finish
    // (a sender whose reader is gone ends on its own, with an error). Pipes from other
    // workers that never connected are of no use any more.
    let drained = tokio::time::timeout(SEND_DRAIN_TIMEOUT, async {
        while senders.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        senders.abort_all();
    }
    receivers.abort_all();
    let members = done
        .into_iter()
        .map(|(index, m)| WireMember {
            index,
            report: m.report,
            error: m.error,
            stdout: m.stdout,
            stderr: m.stderr,
        })
        .collect();
    send_msg(
        &mut w,
        &Msg::Done {
            members,
            staged: txn.staged_files(),
        },
    )
    .await?;
    match recv_msg(&mut r).await {
        Ok(Msg::Release) => txn.detach(),
        _ => txn.abort(),
    }
    let _ = send_msg(&mut w, &Msg::Bye).await;
    Ok(())
}

/// Test hook: with `ZVM_WORKER_CRASH=<index>:<bytes>`, worker `index` kills itself (SIGKILL)
/// in the first attempt once `bytes` have gone through its pipes, to test recovery from a
/// lost worker.
fn crash_hook(args: &WorkerArgs, monitor: &Arc<PipeMonitor>) {
    let Ok(spec) = std::env::var("ZVM_WORKER_CRASH") else {
        return;
    };
    let Some((index, bytes)) = spec.split_once(':') else {
        return;
    };
    if index.parse() != Ok(args.index) || args.attempt != 1 {
        return;
    }
    monitor.crash_after(bytes.parse().unwrap_or(0));
}
