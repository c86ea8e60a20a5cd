//! Deferred execution: `?defer=true` (or `Prefer: respond-async`) on a run, a zapp or a job
//! answers `202 Accepted` at once with an id, and the work runs when VMs are free;
//! `GET /v1/jobs/{id}` tells how far it got, `GET /v1/jobs/{id}/result` gives the answer the
//! synchronous request would have given, and `DELETE /v1/jobs/{id}` cancels or forgets it.
//!
//! # A guided tour
//!
//! * `dispatch` is where every kind of execution ends up, with its work as a closure
//!   (`Work`) that runs on the blocking pool and returns a [`Completed`]. Synchronously,
//!   it takes a VM permit (503 when the queue is full) and sends the answer; deferred, it
//!   hands the work to `Deferred::submit`.
//! * [`Deferred`] holds every deferred execution by id. A submitted one waits for its VMs
//!   without the queue's bound or timeout (at most [`MAX_PENDING`] wait or run at once,
//!   beyond which the answer is 503), then runs, then keeps its answer.
//! * Finished answers are kept in memory, bounded: at most [`MAX_FINISHED`] of them and
//!   [`MAX_FINISHED_BYTES`] of bodies; beyond either, the oldest finished one is forgotten
//!   (its id then answers 404). Nothing here survives a restart: the outputs a deferred run
//!   committed are objects, and they stay.
//! * Cancelling: a queued execution is dropped before it starts (its work never runs, no
//!   output lands). A running one cannot be stopped from outside its VM; it ends by its
//!   limits (`request_timeout`, fuel), so `DELETE` answers 409 while it runs.
//! * Tenants: every entry keeps the tenant that submitted it. `GET /v1/jobs` lists only the
//!   caller's own (an admin's lists all), and another tenant's id answers 404 to status,
//!   result and `DELETE`, as an unknown id does, so that ids are not revealed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Shared;
use crate::activity::now_ms;
use crate::error::ApiError;
use crate::exec::Completed;
use crate::tenants::Caller;

/// Deferred executions waiting or running at once: each holds its request body (up to
/// `max_body`) in memory until it runs, so this bounds that memory too.
pub const MAX_PENDING: usize = 1024;

/// Finished answers kept: enough for clients that poll every few seconds on a busy server.
pub const MAX_FINISHED: usize = 1000;

/// Bytes of finished answers kept (bodies and reports): a quarter of a small machine's
/// memory would be too much, 256 MiB is four default-sized outputs.
pub const MAX_FINISHED_BYTES: u64 = 256 << 20;

/// The work of one execution: runs on the blocking pool with its VM permits held.
pub(crate) type Work = Box<dyn FnOnce(&Shared) -> Result<Completed, ApiError> + Send>;

/// `defer=` as a query parameter: `true`/`1` or `false`/`0`.
pub fn parse_defer(value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ApiError::bad(
            "defer",
            format!("`{other}` is not `true` or `false`"),
        )),
    }
}

/// Whether the request says `Prefer: respond-async` (RFC 7240).
pub fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// Runs `work` (needing `vms` VMs at once) now and answers with what it returns, or, with
/// `defer`, queues it and answers 202 with its id.
pub(crate) async fn dispatch(
    s: &Arc<Shared>,
    caller: &Caller,
    kind: &'static str,
    label: String,
    vms: usize,
    defer: bool,
    work: Work,
) -> Result<Response, ApiError> {
    if defer {
        let id = s
            .deferred
            .submit(s, caller.clone(), kind, label, vms, work)?;
        let location = format!("/v1/jobs/{id}");
        let mut r = (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "state": "queued", "location": location })),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(r);
    }
    let tenant_permit = caller.vm_permit()?;
    let permit = match s.admission.admit_many(vms, s.config.request_timeout).await {
        Ok(p) => p,
        Err(e) => {
            s.metrics.rejected();
            return Err(e);
        }
    };
    let shared = s.clone();
    let done = tokio::task::spawn_blocking(move || {
        let _permits = (permit, tenant_permit);
        work(&shared)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the {kind}'s task failed: {e}")))??;
    Ok(done.into_response())
}

/// Where a deferred execution is.
#[derive(Debug)]
enum Phase {
    Queued,
    Running,
    /// Ran; the answer is kept.
    Done(Completed),
    /// Could not run (a program refused, the server shutting down...): the error's status
    /// and message.
    Failed(StatusCode, String),
    /// Cancelled before it started.
    Cancelled,
}

#[derive(Debug)]
struct Entry {
    kind: &'static str,
    label: String,
    tenant: String,
    phase: Phase,
    created_ms: u64,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
    /// Bytes this entry counts against [`MAX_FINISHED_BYTES`] once finished.
    bytes: u64,
    task: Option<tokio::task::AbortHandle>,
}

impl Entry {
    fn state(&self) -> &'static str {
        match &self.phase {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Done(c) if c.ok => "ok",
            Phase::Done(_) | Phase::Failed(..) => "failed",
            Phase::Cancelled => "cancelled",
        }
    }

    fn finished(&self) -> bool {
        !matches!(self.phase, Phase::Queued | Phase::Running)
    }

    fn status_json(&self, id: &str) -> Value {
        let mut v = json!({
            "id": id,
            "kind": self.kind,
            "label": self.label,
            "state": self.state(),
            "created_ms": self.created_ms,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
        });
        if !self.tenant.is_empty() {
            v["tenant"] = self.tenant.clone().into();
        }
        match &self.phase {
            Phase::Done(c) => {
                v["status"] = c.status.as_u16().into();
                v["report"] = c.report.clone();
            }
            Phase::Failed(status, message) => {
                v["status"] = status.as_u16().into();
                v["error"] = message.clone().into();
            }
            _ => {}
        }
        v
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Ids of finished entries, oldest first.
    finished: VecDeque<String>,
    finished_bytes: u64,
    pending: usize,
}

/// Every deferred execution the server knows (see the module doc).
#[derive(Debug, Default)]
pub struct Deferred {
    inner: Mutex<Inner>,
    next: AtomicU64,
}

impl Deferred {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An id nobody can guess from another: a hash of a counter, the time and the process.
    fn new_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let seed = format!("{n}/{}/{}", now_ms(), std::process::id());
        blake3::hash(seed.as_bytes()).to_hex()[..20].to_string()
    }

    /// Queues `work` and returns its id; 503 when [`MAX_PENDING`] are waiting or running.
    fn submit(
        &self,
        s: &Arc<Shared>,
        caller: Caller,
        kind: &'static str,
        label: String,
        vms: usize,
        work: Work,
    ) -> Result<String, ApiError> {
        let id = self.new_id();
        {
            let mut inner = self.lock();
            if inner.pending >= MAX_PENDING {
                return Err(ApiError::Busy);
            }
            inner.pending += 1;
            inner.entries.insert(
                id.clone(),
                Entry {
                    kind,
                    label,
                    tenant: caller.name().to_owned(),
                    phase: Phase::Queued,
                    created_ms: now_ms(),
                    started_ms: None,
                    finished_ms: None,
                    bytes: 0,
                    task: None,
                },
            );
        }
        let shared = s.clone();
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            let s = shared;
            let permits = async {
                let permit = s.admission.admit_deferred(vms).await?;
                Ok((permit, caller.vm_permit()?))
            }
            .await;
            let result = match permits {
                Err(e) => Err(e),
                // Cancelled while it waited: it never runs, and `delete` has counted it.
                Ok(_) if !s.deferred.started(&task_id) => return,
                Ok(permits) => {
                    let shared = s.clone();
                    tokio::task::spawn_blocking(move || {
                        let _permits = permits;
                        work(&shared)
                    })
                    .await
                    .map_err(|e| ApiError::Internal(format!("the {kind}'s task failed: {e}")))
                    .and_then(|r| r)
                }
            };
            s.deferred.finish(&task_id, result);
        });
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get_mut(&id)
            && !e.finished()
        {
            e.task = Some(task.abort_handle());
        }
        Ok(id)
    }

    /// Marks a queued execution as running; false if it was cancelled meanwhile (the lock
    /// orders this against `delete`, so a cancelled one never runs).
    fn started(&self, id: &str) -> bool {
        match self.lock().entries.get_mut(id) {
            Some(e) if matches!(e.phase, Phase::Queued) => {
                e.phase = Phase::Running;
                e.started_ms = Some(now_ms());
                true
            }
            _ => false,
        }
    }

    fn finish(&self, id: &str, result: Result<Completed, ApiError>) {
        let mut inner = self.lock();
        let Some(e) = inner.entries.get_mut(id) else {
            return;
        };
        if matches!(e.phase, Phase::Cancelled) {
            // `delete` finished it already.
            return;
        }
        e.phase = match result {
            Ok(c) => {
                e.bytes = c.body.len() as u64 + c.report.to_string().len() as u64;
                Phase::Done(c)
            }
            Err(err) => Phase::Failed(err.status(), err.to_string()),
        };
        e.finished_ms = Some(now_ms());
        e.task = None;
        let bytes = e.bytes;
        inner.pending -= 1;
        inner.finished_bytes += bytes;
        inner.finished.push_back(id.to_owned());
        Self::bound(&mut inner);
    }

    /// Forgets the oldest finished entries beyond the bounds.
    fn bound(inner: &mut Inner) {
        while inner.finished.len() > MAX_FINISHED || inner.finished_bytes > MAX_FINISHED_BYTES {
            let Some(old) = inner.finished.pop_front() else {
                break;
            };
            if let Some(e) = inner.entries.remove(&old) {
                inner.finished_bytes -= e.bytes;
            }
        }
    }

    /// How many are queued or running.
    pub fn pending(&self) -> usize {
        self.lock().pending
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no job `{id}`: never submitted, or finished and forgotten"
    ))
}

/// Whether `caller` may see `e`: its own, or everything for an admin.
fn visible(caller: &Caller, e: &Entry) -> bool {
    caller.is_admin() || e.tenant == caller.name()
}

/// `GET /v1/jobs`: every deferred execution kept, newest first.
pub async fn list(State(s): State<Arc<Shared>>, Extension(caller): Extension<Caller>) -> Response {
    let inner = s.deferred.lock();
    let mut all: Vec<(&String, &Entry)> = inner
        .entries
        .iter()
        .filter(|(_, e)| visible(&caller, e))
        .collect();
    all.sort_by(|a, b| b.1.created_ms.cmp(&a.1.created_ms).then(a.0.cmp(b.0)));
    let jobs: Vec<Value> = all
        .into_iter()
        .map(|(id, e)| {
            let mut v = json!({
                "id": id, "kind": e.kind, "label": e.label, "state": e.state(),
                "created_ms": e.created_ms, "finished_ms": e.finished_ms,
            });
            if !e.tenant.is_empty() {
                v["tenant"] = e.tenant.clone().into();
            }
            v
        })
        .collect();
    Json(json!({ "jobs": jobs })).into_response()
}

/// The cluster node, when `id` names a cluster job (`cj-...`), kept in NATS rather than here.
fn cluster_job<'s>(s: &'s Shared, id: &str) -> Option<&'s Arc<crate::cluster::Node>> {
    s.cluster.get().filter(|_| id.starts_with("cj-"))
}

/// `GET /v1/jobs/{id}`: the status, with the report once finished.
pub async fn status(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(node) = cluster_job(&s, &id) {
        return crate::cluster::status(node, &caller, &id).await;
    }
    let inner = s.deferred.lock();
    let e = inner
        .entries
        .get(&id)
        .filter(|e| visible(&caller, e))
        .ok_or_else(|| unknown(&id))?;
    Ok(Json(e.status_json(&id)).into_response())
}

/// `GET /v1/jobs/{id}/result`: the answer the request would have had without `defer`; 409
/// while it is queued or running (poll the status), or when it was cancelled.
pub async fn result(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(node) = cluster_job(&s, &id) {
        return crate::cluster::result(&s, node, &caller, &id).await;
    }
    let inner = s.deferred.lock();
    let e = inner
        .entries
        .get(&id)
        .filter(|e| visible(&caller, e))
        .ok_or_else(|| unknown(&id))?;
    match &e.phase {
        Phase::Done(c) => Ok(c.clone().into_response()),
        Phase::Failed(status, message) => {
            Ok((*status, Json(json!({ "error": message }))).into_response())
        }
        Phase::Queued | Phase::Running => Err(ApiError::Conflict(format!(
            "job `{id}` is {}; its result is there once `GET /v1/jobs/{id}` says it finished",
            e.state()
        ))),
        Phase::Cancelled => Err(ApiError::Conflict(format!(
            "job `{id}` was cancelled before it ran; it has no result"
        ))),
    }
}

/// `DELETE /v1/jobs/{id}`: cancels a queued execution (204), forgets a finished one (204);
/// 409 for a running one, which ends by its limits.
pub async fn delete(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut inner = s.deferred.lock();
    let e = inner
        .entries
        .get_mut(&id)
        .filter(|e| visible(&caller, e))
        .ok_or_else(|| unknown(&id))?;
    match e.phase {
        Phase::Queued => {
            if let Some(task) = e.task.take() {
                task.abort();
            }
            e.phase = Phase::Cancelled;
            e.finished_ms = Some(now_ms());
            inner.pending -= 1;
            inner.finished.push_back(id.clone());
            Deferred::bound(&mut inner);
        }
        Phase::Running => {
            return Err(ApiError::Conflict(format!(
                "job `{id}` is running and cannot be stopped from outside its VM; it ends by \
                 its limits (`request_timeout`, fuel)"
            )));
        }
        _ => {
            let bytes = e.bytes;
            inner.entries.remove(&id);
            inner.finished.retain(|f| *f != id);
            inner.finished_bytes -= bytes;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_and_defer_parse() {
        let mut h = HeaderMap::new();
        assert!(!prefers_async(&h));
        h.insert("prefer", HeaderValue::from_static("wait=10, respond-async"));
        assert!(prefers_async(&h));
        assert!(parse_defer("true").unwrap());
        assert!(!parse_defer("0").unwrap());
        assert!(
            parse_defer("maybe")
                .unwrap_err()
                .to_string()
                .starts_with("`defer`")
        );
    }

    #[test]
    fn the_oldest_finished_go_first() {
        let mut inner = Inner::default();
        for i in 0..MAX_FINISHED + 2 {
            let id = format!("j{i}");
            inner.entries.insert(
                id.clone(),
                Entry {
                    kind: "run",
                    label: String::new(),
                    tenant: String::new(),
                    phase: Phase::Cancelled,
                    created_ms: 0,
                    started_ms: None,
                    finished_ms: None,
                    bytes: 1,
                    task: None,
                },
            );
            inner.finished.push_back(id);
            inner.finished_bytes += 1;
            Deferred::bound(&mut inner);
        }
        assert_eq!(inner.entries.len(), MAX_FINISHED);
        assert!(!inner.entries.contains_key("j0") && !inner.entries.contains_key("j1"));
        assert!(inner.entries.contains_key("j2"));
        assert_eq!(inner.finished_bytes, MAX_FINISHED as u64);
    }
}
