//! What the server did lately, in memory, for the status page (`GET /` and `GET /v1/status`):
//! the last runs with their reports, the last jobs with their graphs, and the VMs in flight
//! and lately ended for the timeline.
//!
//! Everything is bounded so that a server that runs for months holds the same few hundred
//! kilobytes: rings of the last [`MAX_RUNS`] runs, [`MAX_JOBS`] jobs and [`MAX_SPANS`] VM
//! spans, and every stored report cut down by [`bounded`] (long strings and arrays are
//! truncated). Nothing here is durable: the page shows live status, the store and the logs
//! are the record.
//!
//! # How callers use it
//!
//! * Around a VM: `let vm = activity.vm_started(kind, label, tenant)`; the VM counts as in
//!   flight (with a lane on the timeline) until the guard drops. The guard's
//!   [`id`](VmGuard::id) is the id to give the run's [`RunRecord`], which is how the timeline
//!   colours an ended VM by the state its run ended in.
//! * After it: [`Activity::record_run`] with the VM's JSON report.
//! * Jobs: [`Activity::record_job`] whenever a job changes (it replaces the record with the
//!   same id), so the page sees members start and end and pipes fill.
//!
//! One mutex guards it all: each call holds it for a few pushes, and the status snapshot,
//! taken at most every second or so per open page, copies a few hundred small records.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

/// Runs kept: a few minutes of a busy server, and as many rows as a page can usefully show.
pub const MAX_RUNS: usize = 200;

/// Jobs kept: each carries its graph, so fewer than runs.
pub const MAX_JOBS: usize = 50;

/// Ended VM spans kept for the timeline, as many as runs.
pub const MAX_SPANS: usize = 200;

/// Longest string kept in a stored report (stderr, a trap message, a replay manifest), in
/// bytes: enough to read what went wrong, small enough that [`MAX_RUNS`] reports stay
/// under a few megabytes.
pub const MAX_TEXT: usize = 4096;

/// Most items kept of an array in a stored report (a backtrace, channels).
pub const MAX_ITEMS: usize = 64;

/// Most runs `status` returns unless asked for more; a page polling every second should not
/// move every stored report each time.
pub const DEFAULT_STATUS_RUNS: usize = 50;

/// Milliseconds since the UNIX epoch, the clock of every record here (the page compares them
/// with `now_ms` of the same snapshot, so the browser's clock does not matter).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One VM run, of any kind.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// The id of the run's [`VmGuard`], so that the timeline finds the run's state.
    pub id: String,
    /// `""` when the server has no tenants.
    pub tenant: String,
    /// `run`, `zapp`, `endpoint`, `handler` or `job-member`.
    pub kind: &'static str,
    /// The program or endpoint name.
    pub label: String,
    /// The job of a job member.
    pub job: Option<String>,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// The VM's JSON report (see `docs/report.md`), stored cut down by [`bounded`].
    pub report: Value,
}

/// One job: its members, the pipes between them, and how far it got.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub tenant: String,
    /// `queued`, `running`, `ok` or `failed`.
    pub state: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub members: Vec<JobMember>,
    pub pipes: Vec<JobPipe>,
}

/// A member (one VM) of a job.
#[derive(Debug, Clone, Serialize)]
pub struct JobMember {
    pub name: String,
    /// `queued`, `running`, or the state kind its run ended in (`ok`, `trap`, ...).
    pub state: String,
    /// None while the member waits for a VM.
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub fuel: u64,
}

/// A pipe from one member's output to another's input.
#[derive(Debug, Clone, Serialize)]
pub struct JobPipe {
    pub from: String,
    pub to: String,
    /// Bytes moved through it so far.
    pub bytes: u64,
}

/// A VM on the timeline: in flight (`ended_ms` None) or ended.
#[derive(Debug, Clone, Serialize)]
struct VmSpan {
    id: String,
    tenant: String,
    kind: &'static str,
    label: String,
    /// The row of the timeline: the lowest lane free when the VM started, so that at most
    /// `max_vms` lanes are used by the runs of the server.
    lane: usize,
    started_ms: u64,
    ended_ms: Option<u64>,
}

/// The recent activity of a server (see the module doc).
#[derive(Debug)]
pub struct Activity {
    inner: Arc<Mutex<Inner>>,
    next_vm: Arc<AtomicU64>,
    started: Instant,
    started_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    runs: VecDeque<RunRecord>,
    jobs: VecDeque<JobRecord>,
    in_flight: BTreeMap<u64, VmSpan>,
    ended: VecDeque<VmSpan>,
    /// Runs since the server started by (tenant, state kind): the totals, which outlive the
    /// ring.
    totals: BTreeMap<(String, String), u64>,
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, max: usize) {
    if ring.len() >= max {
        ring.pop_front();
    }
    ring.push_back(item);
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            inner: Arc::default(),
            next_vm: Arc::default(),
            started: Instant::now(),
            started_ms: now_ms(),
        }
    }
}

impl Activity {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// When the server started, in ms since the epoch.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Seconds since the server started.
    pub fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Marks a VM as in flight until the guard drops.
    pub fn vm_started(
        &self,
        kind: &'static str,
        label: impl Into<String>,
        tenant: impl Into<String>,
    ) -> VmGuard {
        let n = self.next_vm.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let used: std::collections::BTreeSet<usize> =
            inner.in_flight.values().map(|v| v.lane).collect();
        let lane = (0..).find(|l| !used.contains(l)).unwrap_or(0);
        let span = VmSpan {
            id: format!("vm-{n}"),
            tenant: tenant.into(),
            kind,
            label: label.into(),
            lane,
            started_ms: now_ms(),
            ended_ms: None,
        };
        let id = span.id.clone();
        inner.in_flight.insert(n, span);
        VmGuard {
            inner: self.inner.clone(),
            n,
            id,
        }
    }

    /// Keeps a finished run (the oldest goes beyond [`MAX_RUNS`]) and counts it in the totals.
    pub fn record_run(&self, mut r: RunRecord) {
        r.report = bounded(r.report);
        let state = state_kind(&r.report);
        let mut inner = self.lock();
        *inner.totals.entry((r.tenant.clone(), state)).or_default() += 1;
        push_bounded(&mut inner.runs, r, MAX_RUNS);
    }

    /// Keeps a job, replacing the record with the same id (which keeps its place, so a
    /// running job does not jump ahead of newer ones).
    pub fn record_job(&self, j: JobRecord) {
        let mut inner = self.lock();
        match inner.jobs.iter_mut().find(|old| old.id == j.id) {
            Some(old) => *old = j,
            None => push_bounded(&mut inner.jobs, j, MAX_JOBS),
        }
    }

    /// [`status_with`](Activity::status_with) every run kept.
    pub fn status(&self, tenant: Option<&str>) -> Value {
        self.status_with(tenant, MAX_RUNS)
    }

    /// A snapshot for the status page: `runs` (newest first, at most `max_runs`), `jobs`
    /// (newest first), `vms` (in flight, then ended, for the timeline) and `totals` (runs by
    /// state since the start). `tenant` None is everything; `Some(t)` only what `t` ran.
    pub fn status_with(&self, tenant: Option<&str>, max_runs: usize) -> Value {
        let mine = |t: &str| tenant.is_none_or(|want| want == t);
        let inner = self.lock();
        let runs: Vec<Value> = inner
            .runs
            .iter()
            .rev()
            .filter(|r| mine(&r.tenant))
            .take(max_runs)
            .map(|r| {
                let mut v = json!({
                    "id": r.id,
                    "tenant": r.tenant,
                    "kind": r.kind,
                    "label": r.label,
                    "job": r.job,
                    "started_ms": r.started_ms,
                    "ended_ms": r.ended_ms,
                });
                v["summary"] = summary(&r.report);
                v["report"] = r.report.clone();
                v
            })
            .collect();
        let jobs: Vec<&JobRecord> = inner
            .jobs
            .iter()
            .rev()
            .filter(|j| mine(&j.tenant))
            .collect();
        let state_of = |id: &str| {
            inner
                .runs
                .iter()
                .rev()
                .find(|r| r.id == id)
                .map(|r| state_kind(&r.report))
        };
        let vms: Vec<Value> = inner
            .in_flight
            .values()
            .chain(inner.ended.iter().rev())
            .filter(|v| mine(&v.tenant))
            .map(|v| {
                let state = match v.ended_ms {
                    None => "running".to_owned(),
                    Some(_) => state_of(&v.id).unwrap_or_else(|| "ended".to_owned()),
                };
                let mut j = json!(v);
                j["state"] = state.into();
                j
            })
            .collect();
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for ((t, state), n) in &inner.totals {
            if mine(t) {
                *totals.entry(state).or_default() += n;
            }
        }
        json!({
            "now_ms": now_ms(),
            "runs": runs,
            "jobs": jobs,
            "vms": vms,
            "vms_in_flight": inner.in_flight.values().filter(|v| mine(&v.tenant)).count(),
            "totals": {
                "runs": totals.values().sum::<u64>(),
                "by_state": totals,
            },
        })
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// A VM in flight, from [`Activity::vm_started`]; dropping it ends the VM's span.
#[derive(Debug)]
pub struct VmGuard {
    inner: Arc<Mutex<Inner>>,
    n: u64,
    id: String,
}

impl VmGuard {
    /// The VM's id (`vm-<n>`), to give its [`RunRecord`].
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        let mut inner = lock(&self.inner);
        if let Some(mut span) = inner.in_flight.remove(&self.n) {
            span.ended_ms = Some(now_ms());
            push_bounded(&mut inner.ended, span, MAX_SPANS);
        }
    }
}

/// The state kind of a JSON report (`ok`, `trap`, ...), `unknown` without one.
fn state_kind(report: &Value) -> String {
    report["state"]["kind"]
        .as_str()
        .unwrap_or("unknown")
        .to_owned()
}

/// What the runs table shows of a report without opening it.
fn summary(report: &Value) -> Value {
    let channels: Vec<Value> = report["channels"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({
                        "name": c["name"],
                        "etag": c["etag"],
                        "read_bytes": c["read_bytes"],
                        "write_bytes": c["write_bytes"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "state": state_kind(report),
        "state_text": report["state_text"],
        "exit_code": report["exit_code"],
        "fuel_used": report["fuel_used"],
        "fuel_limit": report["fuel_limit"],
        "wall_time_us": report["wall_time_us"],
        "peak_memory": report["peak_memory"],
        "committed": report["committed"],
        "channels": channels,
    })
}

/// A report cut down to a bounded size: strings to [`MAX_TEXT`] bytes (on a character
/// boundary, with a note of what was cut), arrays to [`MAX_ITEMS`] items.
pub fn bounded(v: Value) -> Value {
    match v {
        Value::String(s) if s.len() > MAX_TEXT => {
            let mut end = MAX_TEXT;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(format!(
                "{}… ({} more bytes not kept)",
                &s[..end],
                s.len() - end
            ))
        }
        Value::Array(items) => {
            let more = items.len().saturating_sub(MAX_ITEMS);
            let mut kept: Vec<Value> = items.into_iter().take(MAX_ITEMS).map(bounded).collect();
            if more > 0 {
                kept.push(Value::String(format!("… ({more} more items not kept)")));
            }
            Value::Array(kept)
        }
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, bounded(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, tenant: &str, state: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            tenant: tenant.into(),
            kind: "run",
            label: "bin/p.wasm".into(),
            job: None,
            started_ms: 1,
            ended_ms: 2,
            report: json!({"state": {"kind": state}, "fuel_used": 7, "channels": [
                {"name": "stdout", "etag": "ab", "read_bytes": 0, "write_bytes": 3}
            ]}),
        }
    }

    #[test]
    fn rings_keep_the_newest_and_totals_count_everything() {
        let a = Activity::default();
        for i in 0..MAX_RUNS + 5 {
            a.record_run(run(
                &format!("r{i}"),
                "",
                if i % 2 == 0 { "ok" } else { "trap" },
            ));
        }
        let s = a.status(None);
        let runs = s["runs"].as_array().unwrap();
        assert_eq!(runs.len(), MAX_RUNS);
        assert_eq!(runs[0]["id"], format!("r{}", MAX_RUNS + 4));
        assert_eq!(runs[0]["summary"]["fuel_used"], 7);
        assert_eq!(runs[0]["summary"]["channels"][0]["etag"], "ab");
        assert_eq!(s["totals"]["runs"], (MAX_RUNS + 5) as u64);
        assert_eq!(s["totals"]["by_state"]["ok"], 103);
        assert_eq!(a.status_with(None, 3)["runs"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn tenants_see_only_their_own() {
        let a = Activity::default();
        a.record_run(run("a1", "alice", "ok"));
        a.record_run(run("b1", "bob", "ok"));
        let _vm = a.vm_started("run", "p", "bob");
        let s = a.status(Some("alice"));
        assert_eq!(s["runs"].as_array().unwrap().len(), 1);
        assert_eq!(s["runs"][0]["id"], "a1");
        assert_eq!(s["vms"].as_array().unwrap().len(), 0);
        assert_eq!(s["totals"]["runs"], 1);
        assert_eq!(a.status(None)["vms_in_flight"], 1);
    }

    #[test]
    fn vms_take_the_lowest_free_lane_and_end_with_their_run_state() {
        let a = Activity::default();
        let first = a.vm_started("run", "p", "");
        let second = a.vm_started("run", "q", "");
        let first_id = first.id().to_owned();
        drop(first);
        let third = a.vm_started("run", "r", "");
        a.record_run(run(&first_id, "", "out_of_fuel"));
        let s = a.status(None);
        let vms = s["vms"].as_array().unwrap();
        let lane = |label: &str| vms.iter().find(|v| v["label"] == label).unwrap()["lane"].clone();
        assert_eq!(lane("q"), 1);
        assert_eq!(lane("r"), 0, "the lane of the ended VM is free again");
        let p = vms.iter().find(|v| v["label"] == "p").unwrap();
        assert_eq!(p["state"], "out_of_fuel");
        assert!(p["ended_ms"].is_u64());
        assert_eq!(s["vms_in_flight"], 2);
        drop((second, third));
        assert_eq!(a.status(None)["vms_in_flight"], 0);
    }

    #[test]
    fn jobs_are_replaced_by_id() {
        let a = Activity::default();
        let job = |state: &str| JobRecord {
            id: "j1".into(),
            tenant: String::new(),
            state: state.into(),
            started_ms: 1,
            ended_ms: None,
            members: vec![],
            pipes: vec![JobPipe {
                from: "a".into(),
                to: "b".into(),
                bytes: 9,
            }],
        };
        a.record_job(job("running"));
        a.record_job(job("ok"));
        let s = a.status(None);
        assert_eq!(s["jobs"].as_array().unwrap().len(), 1);
        assert_eq!(s["jobs"][0]["state"], "ok");
        assert_eq!(s["jobs"][0]["pipes"][0]["bytes"], 9);
    }

    #[test]
    fn stored_reports_are_bounded() {
        let big = "é".repeat(MAX_TEXT);
        let v = bounded(json!({"stderr": big, "backtrace": vec!["f"; MAX_ITEMS + 3]}));
        let s = v["stderr"].as_str().unwrap();
        assert!(s.len() < MAX_TEXT + 64);
        assert!(s.ends_with(&format!("({MAX_TEXT} more bytes not kept)")));
        let bt = v["backtrace"].as_array().unwrap();
        assert_eq!(bt.len(), MAX_ITEMS + 1);
        assert_eq!(bt[MAX_ITEMS], "… (3 more items not kept)");
    }
}
