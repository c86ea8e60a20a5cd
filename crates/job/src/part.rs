//! A part of a job: the members one node of a cluster runs, with the pipes that cross to
//! other nodes handed to the caller to carry.
//!
//! [`crate::cluster`] spreads a job over worker processes it starts and talks to itself; a
//! cluster of `zvm serve` nodes places members itself and carries pipes over its own
//! connections. This module is what both need from the runner: given which place (node)
//! runs each member, [`plan`] makes the in-memory pipes of this place's members and returns
//! the ends that belong on the network — a reader to pump out for each pipe whose reader
//! is elsewhere, a writer to feed for each pipe whose writer is elsewhere (with
//! [`crate::remote`]'s framing, whose end-of-stream digest makes a cut stream a failed
//! one) — and [`run`] runs the members, staging outputs in the caller's transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use zvm_channel::{Endpoint, PipeMonitor, PipeReader, PipeWriter};
use zvm_manifest::Job;
use zvm_vm::{Runtime, Transaction};

use crate::report::MemberReport;
use crate::{Error, JobOptions, Share};

/// The members one place runs and the pipe ends it holds.
pub struct Part {
    share: Share,
    monitor: Arc<PipeMonitor>,
    /// Pipes written here and read elsewhere: (pipe index, reading place, reader to pump).
    pub outgoing: Vec<(usize, usize, PipeReader)>,
    /// Pipes written elsewhere and read here: (pipe index, writer to feed).
    pub incoming: Vec<(usize, PipeWriter)>,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("members", &self.share.members)
            .field("outgoing", &self.outgoing.len())
            .field("incoming", &self.incoming.len())
            .finish()
    }
}

impl Part {
    /// The members of the part, in member order.
    pub fn members(&self) -> &[usize] {
        &self.share.members
    }

    /// Bytes that went through the part's pipes so far.
    pub fn monitor(&self) -> Arc<PipeMonitor> {
        self.monitor.clone()
    }
}

/// Plans the part of `job` that place `me` runs: `mine` are its members (in any order, e.g.
/// those placed here plus replicas of others), `place` gives the place of every member (for
/// the pipes). A pipe with both ends here stays in memory.
pub fn plan(job: &Job, mine: &[usize], place: &[usize], me: usize) -> Part {
    let mut members = mine.to_vec();
    members.sort_unstable();
    members.dedup();
    let here = |m: usize| members.binary_search(&m).is_ok();
    let monitor = Arc::new(PipeMonitor::default());
    let mut endpoints: HashMap<usize, Vec<(String, Endpoint)>> = HashMap::new();
    let mut outgoing = Vec::new();
    let mut incoming = Vec::new();
    for (pi, p) in job.pipes.iter().enumerate() {
        let (w_here, r_here) = (here(p.from), here(p.to));
        if !w_here && !r_here {
            continue;
        }
        let (w, r) = zvm_channel::pipe::pipe_monitored(monitor.clone());
        if w_here {
            endpoints
                .entry(p.from)
                .or_default()
                .push((p.writer.to_string(), Endpoint::PipeWriter(w)));
            if r_here {
                endpoints
                    .entry(p.to)
                    .or_default()
                    .push((p.reader.to_string(), Endpoint::PipeReader(r)));
            } else {
                outgoing.push((pi, place.get(p.to).copied().unwrap_or(me), r));
            }
        } else {
            endpoints
                .entry(p.to)
                .or_default()
                .push((p.reader.to_string(), Endpoint::PipeReader(r)));
            incoming.push((pi, w));
        }
    }
    Part {
        share: Share { members, endpoints },
        monitor,
        outgoing,
        incoming,
    }
}

/// Runs the part's members on `options.threads` threads of a runtime of its own (blocking
/// until they end), staging their outputs in `txn`; returns their reports in member order.
/// Setting `cancel` stops the members still running (within about 100 ms): they end
/// `cancelled`. Deadlocks cannot be seen from one part; member timeouts apply.
pub fn run(
    runtime: &Runtime,
    job: &Job,
    part: Part,
    txn: &Arc<Transaction>,
    options: &JobOptions,
    cancel: &AtomicBool,
) -> Result<Vec<(usize, MemberReport)>, Error> {
    let programs = crate::load_programs(runtime, job, &part.share.members)?;
    let rt = crate::threads(options)?;
    let monitor = part.monitor.clone();
    Ok(rt.block_on(crate::run_share(
        job,
        &programs,
        part.share,
        txn,
        &monitor,
        options,
        false,
        Some(cancel),
    )))
}
