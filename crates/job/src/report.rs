//! The report of a job: its outcome, every member's own report, and totals. As JSON it is
//! documented in `docs/jobs.md`.

use std::time::Duration;

use serde::Serialize;
use zvm_manifest::Job;
use zvm_vm::Report;

/// Version of the job report's JSON schema.
pub const JOB_REPORT_VERSION: u32 = 1;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobOutcome {
    /// Every member ended `ok`; the outputs landed.
    Ok,
    /// A member failed (the first in member order); nothing landed.
    Failed { member: String, reason: String },
}

impl std::fmt::Display for JobOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobOutcome::Ok => f.write_str("ok"),
            JobOutcome::Failed { member, reason } => {
                write!(f, "failed: member `{member}`: {reason}")
            }
        }
    }
}

/// One member's part of the job report.
#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    pub name: String,
    pub group: String,
    /// Its VM report, when it ran to an end.
    pub report: Option<Report>,
    /// Why it has no report (it could not start, was cancelled, or hung on a pipe).
    pub error: Option<String>,
    /// Its standard output and error, when they were not bound to files.
    #[serde(skip)]
    pub stdout: Option<Vec<u8>>,
    #[serde(skip)]
    pub stderr: Option<Vec<u8>>,
}

impl MemberReport {
    /// Whether it ran to an end in state `ok`.
    pub fn is_ok(&self) -> bool {
        self.report.as_ref().is_some_and(|r| r.state.is_ok())
    }

    /// The member's state as one line.
    pub fn state_text(&self) -> String {
        match (&self.report, &self.error) {
            (Some(r), _) => r.state_text.clone(),
            (None, Some(e)) => e.clone(),
            (None, None) => "unknown".into(),
        }
    }
}

/// Sums over the job.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub members: usize,
    pub ok: usize,
    pub fuel_used: u64,
    /// Bytes that went through the job's pipes.
    pub pipe_bytes: u64,
    pub wall_time_us: u64,
}

/// The report of a job.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub version: u32,
    pub job: String,
    pub outcome: JobOutcome,
    pub outcome_text: String,
    /// Whether the job's outputs landed.
    pub committed: bool,
    /// Worker processes the members ran in (1: all in this process).
    pub processes: usize,
    /// Attempts it took (more than 1 when a worker was lost and the members ran again).
    pub attempts: u32,
    pub totals: Totals,
    pub members: Vec<MemberReport>,
}

impl JobReport {
    /// A report of `members` (in member order) with totals, for one attempt in one process.
    pub fn new(
        job: &Job,
        outcome: JobOutcome,
        members: Vec<MemberReport>,
        pipe_bytes: u64,
        wall: Duration,
    ) -> JobReport {
        let totals = Totals {
            members: members.len(),
            ok: members
                .iter()
                .filter(|m| m.report.as_ref().is_some_and(|r| r.state.is_ok()))
                .count(),
            fuel_used: members
                .iter()
                .filter_map(|m| m.report.as_ref().map(|r| r.fuel_used))
                .sum(),
            pipe_bytes,
            wall_time_us: wall.as_micros() as u64,
        };
        JobReport {
            version: JOB_REPORT_VERSION,
            job: job.name.clone(),
            committed: outcome == JobOutcome::Ok,
            processes: 1,
            attempts: 1,
            outcome_text: outcome.to_string(),
            outcome,
            totals,
            members,
        }
    }

    /// The member that made the job fail, if one did.
    pub fn failed_member(&self) -> Option<&MemberReport> {
        match &self.outcome {
            JobOutcome::Ok => None,
            JobOutcome::Failed { member, .. } => self.members.iter().find(|m| &m.name == member),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a job report always serialises")
    }

    /// The report as text: the outcome, totals, one line per member.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "job         {}", self.job);
        let _ = writeln!(s, "outcome     {}", self.outcome_text);
        let _ = writeln!(
            s,
            "committed   {}",
            if self.committed { "yes" } else { "no" }
        );
        let _ = writeln!(
            s,
            "processes   {} (attempts: {})",
            self.processes, self.attempts
        );
        let t = &self.totals;
        let _ = writeln!(
            s,
            "members     {} ok of {}; fuel {}; {} bytes through pipes; {:.3} ms",
            t.ok,
            t.members,
            t.fuel_used,
            t.pipe_bytes,
            t.wall_time_us as f64 / 1000.0
        );
        for m in &self.members {
            let _ = writeln!(
                s,
                "member      {} ({}): {}",
                m.name,
                m.group,
                m.state_text()
            );
        }
        s
    }
}

/// The outcome of a job some of whose members did not end `ok`: the first member in member
/// order that failed by itself; members cancelled because of it come second.
pub fn failure(members: &[MemberReport]) -> JobOutcome {
    let failed = |m: &&MemberReport| !m.report.as_ref().is_some_and(|r| r.state.is_ok());
    let own = members
        .iter()
        .filter(failed)
        .find(|m| m.report.is_some() || !m.error.as_deref().unwrap_or("").starts_with("cancelled"))
        .or_else(|| members.iter().find(failed));
    match own {
        Some(m) => JobOutcome::Failed {
            member: m.name.clone(),
            reason: m.state_text(),
        },
        None => JobOutcome::Ok,
    }
}
