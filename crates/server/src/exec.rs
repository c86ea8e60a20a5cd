//! `POST /v1/run`: a fresh VM per request, for a program stored as an object (or sent as the
//! body), with the request body as stdin and stdout as the response.
//!
//! # A guided tour
//!
//! * **The request** ([`RunRequest::parse`]): `program=bucket/key` names the program object;
//!   `input=[name:]bucket/key` binds an object as the read channel `/dev/<name>` (default
//!   `input`): code goes to the data; `output=[name:]bucket/key` makes `/dev/<name>` (default
//!   `output`) a write channel whose content becomes that object if the run succeeds;
//!   `arg=` adds to `argv`; `fuel=` and `memory=` ask for limits up to the server's;
//!   `report=json` returns the report rather than stdout.
//! * **Admission** ([`Admission`]): a semaphore of `max_vms` permits, and up to `queue`
//!   requests waiting for one; beyond that the answer is 503 with `Retry-After` at once,
//!   so an overloaded server sheds load instead of piling up requests.
//! * **The run**, on tokio's blocking pool: the program is taken from the [`ProgramCache`]
//!   (compiled programs keyed by the object's etag, so a new version of an object is a new
//!   program) or loaded; inputs are opened as store reads (what the guest reads is the
//!   version open at the start, whatever puts follow); outputs are written to unnamed
//!   temporary files. The VM runs under the manifest defaults and the request's limits, so
//!   a loop or a memory bomb ends as a state in the report.
//! * **The commit**: only a run that ended `ok` lands its outputs, all of them in one store
//!   batch, so several outputs appear together or not at all, and a failed or interrupted
//!   run leaves no object behind.
//! * **The answer**: the report in headers (`x-zvm-state`, `x-zvm-exit-code`,
//!   `x-zvm-fuel-used`, `x-zvm-etag-<channel>`, ...) and stdout as the body; 200 when the
//!   run ended `ok`, 500 when the guest failed (the body is still its stdout). With
//!   `report=json` the body is the JSON report and the status 200 either way.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zvm_channel::{Endpoint, SharedBuffer};
use zvm_manifest::{AccessMode, Channel, ChannelName, ChannelSource, Manifest, Quota};
use zvm_store::{PutMeta, Store};
use zvm_vm::{Program, Report, RunIo, Runtime};

use crate::Shared;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::objects::{check_length, read_body};
use crate::tenants::Caller;

/// Compiled programs kept in memory: enough for the handful of programs a server serves most,
/// while each holds its machine code (up to tens of MiB for an interpreter).
pub const PROGRAM_CACHE_ENTRIES: usize = 64;

/// Most object channels (inputs plus outputs) one run may bind: far more than a program
/// uses, few enough that a query cannot make a run open thousands of files.
pub const MAX_OBJECT_CHANNELS: usize = 16;

/// Most `arg=` values of one run.
pub const MAX_ARGS: usize = 256;

/// Bytes of stderr kept for the JSON report; the rest is counted and hashed, not kept.
pub const MAX_STDERR_KEPT: usize = 64 * 1024;

/// Bounds the VMs running at once and the requests waiting for one.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    max_vms: usize,
    queue: usize,
    waiting: AtomicUsize,
}

/// Counts a request as waiting for as long as it exists, so that a client that gives up
/// while waiting leaves the queue.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(max_vms: usize, queue: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(max_vms)),
            max_vms,
            queue,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A permit to run one VM: at once if one is free, else after waiting in the queue at
    /// most `wait`; `Busy` when the queue is full or the wait runs out.
    pub async fn admit(&self, wait: Duration) -> Result<OwnedSemaphorePermit, ApiError> {
        self.admit_many(1, wait).await
    }

    /// Permits for `n` VMs at once (a job's members run together), as [`admit`] gives one;
    /// `n` beyond `max_vms` could never be granted and is refused.
    ///
    /// [`admit`]: Admission::admit
    pub async fn admit_many(
        &self,
        n: usize,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, ApiError> {
        let n = self.check_many(n)?;
        match self.permits.clone().try_acquire_many_owned(n) {
            Ok(p) => return Ok(p),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(ApiError::ShuttingDown),
            Err(tokio::sync::TryAcquireError::NoPermits) => {}
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Busy);
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(wait, self.permits.clone().acquire_many_owned(n)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(ApiError::ShuttingDown),
            Err(_) => Err(ApiError::Busy),
        }
    }

    /// Permits for `n` VMs for a deferred execution: it waits as long as it takes, outside
    /// the queue (deferred work is bounded by [`crate::deferred::MAX_PENDING`] instead).
    pub async fn admit_deferred(&self, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let n = self.check_many(n)?;
        self.permits
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| ApiError::ShuttingDown)
    }

    fn check_many(&self, n: usize) -> Result<u32, ApiError> {
        if n == 0 || n > self.max_vms {
            return Err(ApiError::bad(
                "job",
                format!(
                    "{n} VMs must run at once, and the server runs at most {} (`max_vms`)",
                    self.max_vms
                ),
            ));
        }
        Ok(n as u32)
    }

    pub fn in_flight(&self) -> usize {
        self.max_vms - self.permits.available_permits().min(self.max_vms)
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn max_vms(&self) -> usize {
        self.max_vms
    }

    pub fn queue(&self) -> usize {
        self.queue
    }

    /// Waits until no VM runs, then refuses new ones: the end of a graceful shutdown.
    pub async fn drain(&self) {
        let all = u32::try_from(self.max_vms).unwrap_or(u32::MAX);
        if let Ok(permits) = self.permits.acquire_many(all).await {
            permits.forget();
        }
        self.permits.close();
    }
}

/// Compiled programs by the etag of their object.
#[derive(Debug, Default)]
pub struct ProgramCache {
    programs: Mutex<HashMap<String, Arc<Program>>>,
}

impl ProgramCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Program>>> {
        self.programs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn get(&self, etag: &str) -> Option<Arc<Program>> {
        self.lock().get(etag).cloned()
    }

    pub(crate) fn insert(&self, etag: String, program: Arc<Program>) {
        let mut programs = self.lock();
        if programs.len() >= PROGRAM_CACHE_ENTRIES {
            // Any entry: a program evicted too early is only compiled (or read from the
            // compile cache) again.
            if let Some(victim) = programs.keys().next().cloned() {
                programs.remove(&victim);
            }
        }
        programs.insert(etag, program);
    }

    /// The program stored as `bucket/key`, compiled once per version of the object.
    pub(crate) fn load(
        &self,
        runtime: &Runtime,
        store: &Store,
        object: &ObjectRef,
    ) -> Result<Arc<Program>, ApiError> {
        let info = store.head(&object.bucket, &object.key)?;
        if let Some(p) = self.get(&info.etag) {
            return Ok(p);
        }
        let mut got = store.get(&object.bucket, &object.key, None)?;
        if got.info.size > zvm_vm::MAX_PROGRAM_BYTES {
            return Err(ApiError::ProgramRefused {
                program: object.to_string(),
                reason: format!(
                    "{} bytes, more than the {}-byte limit",
                    got.info.size,
                    zvm_vm::MAX_PROGRAM_BYTES
                ),
            });
        }
        let mut bytes = Vec::with_capacity(got.info.size as usize);
        got.body
            .read_to_end(&mut bytes)
            .map_err(|e| ApiError::Internal(format!("reading program `{object}`: {e}")))?;
        let program = Arc::new(runtime.load(Path::new(&object.to_string()), &bytes, None)?);
        self.insert(got.info.etag, program.clone());
        Ok(program)
    }

    /// A program sent as the request body, cached under its hash.
    pub(crate) fn load_bytes(
        &self,
        runtime: &Runtime,
        bytes: &[u8],
    ) -> Result<Arc<Program>, ApiError> {
        let etag = blake3::hash(bytes).to_hex().to_string();
        if let Some(p) = self.get(&etag) {
            return Ok(p);
        }
        let program = Arc::new(runtime.load(Path::new("request-body.wasm"), bytes, None)?);
        self.insert(etag, program.clone());
        Ok(program)
    }
}

/// An object named in a query: `bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.bucket, self.key)
    }
}

impl ObjectRef {
    pub(crate) fn parse(field: &str, value: &str) -> Result<ObjectRef, ApiError> {
        let (bucket, key) = value
            .split_once('/')
            .ok_or_else(|| ApiError::bad(field, format!("`{value}` is not `bucket/key`")))?;
        zvm_store::validate_bucket(bucket).map_err(|e| ApiError::bad(field, e.to_string()))?;
        zvm_store::validate_key(bucket, key).map_err(|e| ApiError::bad(field, e.to_string()))?;
        Ok(ObjectRef {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// `[channel:]bucket/key`; the channel defaults to `default`. Bucket names have no `:`,
    /// so a `:` before the first `/` names the channel.
    pub(crate) fn parse_bound(
        field: &str,
        value: &str,
        default: &str,
    ) -> Result<(String, Self), ApiError> {
        let slash = value.find('/').unwrap_or(value.len());
        let (channel, object) = match value[..slash].split_once(':') {
            Some((channel, _)) => (channel, &value[channel.len() + 1..]),
            None => (default, value),
        };
        let header_safe = channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if channel.is_empty() || !header_safe {
            return Err(ApiError::bad(
                field,
                format!("channel name `{channel}` must be letters, digits, `-` and `_`"),
            ));
        }
        if ["stdin", "stdout", "stderr"].contains(&channel) {
            return Err(ApiError::bad(
                field,
                format!("`{channel}` is the request's own; bind objects to other channels"),
            ));
        }
        Ok((channel.to_owned(), ObjectRef::parse(field, object)?))
    }
}

/// A parsed `POST /v1/run` query.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunRequest {
    pub program: Option<ObjectRef>,
    /// `zapp=bucket/key`: a zapp stored as an object ([`crate::zapps`]).
    pub zapp: Option<ObjectRef>,
    /// `defer=true`: answer 202 at once and run later ([`crate::deferred`]).
    pub defer: bool,
    pub inputs: Vec<(String, ObjectRef)>,
    pub outputs: Vec<(String, ObjectRef)>,
    pub args: Vec<String>,
    pub fuel: Option<u64>,
    pub memory: Option<u64>,
    pub report_json: bool,
}

impl RunRequest {
    /// Parses the query; parameters may repeat (`input`, `output`, `arg`).
    pub fn parse(query: &str, config: &ServerConfig) -> Result<RunRequest, ApiError> {
        let mut r = RunRequest::default();
        let mut channels = std::collections::BTreeSet::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let field = name.as_ref();
            match field {
                "program" => r.program = Some(ObjectRef::parse(field, &value)?),
                "zapp" => r.zapp = Some(ObjectRef::parse(field, &value)?),
                "defer" => r.defer = crate::deferred::parse_defer(&value)?,
                "input" | "output" => {
                    let (channel, object) = ObjectRef::parse_bound(field, &value, field)?;
                    if !channels.insert(channel.clone()) {
                        return Err(ApiError::bad(
                            field,
                            format!("channel `{channel}` is bound twice"),
                        ));
                    }
                    let list = if field == "input" {
                        &mut r.inputs
                    } else {
                        &mut r.outputs
                    };
                    list.push((channel, object));
                }
                "arg" => r.args.push(value.into_owned()),
                "fuel" => {
                    let fuel: u64 = value.parse().map_err(|_| {
                        ApiError::bad(field, format!("`{value}` is not a whole number"))
                    })?;
                    if fuel == 0 || fuel > config.max_fuel {
                        return Err(ApiError::bad(
                            field,
                            format!("{fuel} is outside 1 to the server's {}", config.max_fuel),
                        ));
                    }
                    r.fuel = Some(fuel);
                }
                "memory" => {
                    let memory =
                        zvm_manifest::parse_size(&value).map_err(|m| ApiError::bad(field, m))?;
                    if memory == 0 || memory > config.max_memory {
                        return Err(ApiError::bad(
                            field,
                            format!(
                                "{memory} bytes is outside 1 to the server's {} bytes",
                                config.max_memory
                            ),
                        ));
                    }
                    r.memory = Some(memory);
                }
                "report" => match value.as_ref() {
                    "json" => r.report_json = true,
                    "headers" => r.report_json = false,
                    other => {
                        return Err(ApiError::bad(
                            field,
                            format!("`{other}` is not `json` or `headers`"),
                        ));
                    }
                },
                other => {
                    return Err(ApiError::bad(other, "unknown query parameter"));
                }
            }
        }
        if channels.len() > MAX_OBJECT_CHANNELS {
            return Err(ApiError::bad(
                "input",
                format!("more than {MAX_OBJECT_CHANNELS} object channels"),
            ));
        }
        if r.args.len() > MAX_ARGS {
            return Err(ApiError::bad(
                "arg",
                format!("more than {MAX_ARGS} arguments"),
            ));
        }
        Ok(r)
    }
}

/// What a run hands back to the handler.
pub(crate) struct RunOutcome {
    pub report: Report,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A writer that keeps the first `keep` bytes and drops the rest.
#[derive(Clone, Default)]
struct Head {
    buf: SharedBuffer,
    kept: usize,
    keep: usize,
}

impl Write for Head {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let take = data.len().min(self.keep - self.kept);
        if take > 0 {
            self.buf.write_all(&data[..take])?;
            self.kept += take;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `POST /v1/run`.
pub async fn run(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut request = RunRequest::parse(query.as_deref().unwrap_or(""), &s.config)?;
    authorize(&s, &caller, &mut request)?;
    check_length(&headers, s.config.max_body)?;
    let body = read_body(body, s.config.max_body).await?;
    let defer = request.defer || crate::deferred::prefers_async(&headers);
    if request.zapp.is_some() || crate::zapps::is_zapp_body(&headers) {
        return crate::zapps::run(s, caller, request, body, defer).await;
    }
    if !defer
        && let Some(node) = s.cluster.get()
        && let Some(peer) = node.peer_for_run(&s, &headers)
    {
        return node
            .forward_run(&peer, query.as_deref().unwrap_or(""), &headers, body)
            .await;
    }
    // Missing objects and buckets are found before a VM is taken.
    check_objects_exist(&s, &request).await?;
    let label = request
        .program
        .as_ref()
        .map_or_else(|| "request-body.wasm".to_string(), ObjectRef::to_string);
    let tenant = caller.name().to_owned();
    let work_label = label.clone();
    let work = move |s: &Shared| {
        let report_json = request.report_json;
        let tracked = Tracked::start(s, "run", work_label, tenant);
        let outcome = run_blocking(s, request, body);
        tracked.finish(s, outcome?, report_json)
    };
    crate::deferred::dispatch(&s, &caller, "run", label, 1, defer, Box::new(work)).await
}

/// One VM's run as the server watches it: in flight on the status page from [`start`] to
/// [`finish`], which counts it in the metrics, logs it, records it in the activity and turns
/// its outcome into the answer. Every kind of execution (runs, zapps, endpoints, handlers)
/// goes through it, so they all look the same on the wire and on the page.
///
/// [`start`]: Tracked::start
/// [`finish`]: Tracked::finish
pub(crate) struct Tracked {
    kind: &'static str,
    label: String,
    tenant: String,
    vm: crate::activity::VmGuard,
    started_ms: u64,
    started: Instant,
}

impl Tracked {
    pub(crate) fn start(s: &Shared, kind: &'static str, label: String, tenant: String) -> Tracked {
        Tracked {
            vm: s.activity.vm_started(kind, label.clone(), tenant.clone()),
            kind,
            label,
            tenant,
            started_ms: crate::activity::now_ms(),
            started: Instant::now(),
        }
    }

    /// The answer to a run: stdout (200 if it ended `ok`, else 500) with the report in
    /// headers, or the JSON report (200) with `report_json`.
    pub(crate) fn finish(
        self,
        s: &Shared,
        outcome: RunOutcome,
        report_json: bool,
    ) -> Result<Completed, ApiError> {
        let vm_id = self.vm.id().to_owned();
        drop(self.vm);
        let kind = state_kind(&outcome.report);
        s.metrics.run(&kind, self.started.elapsed());
        tracing::info!(
            kind = self.kind,
            program = %outcome.report.program,
            state = %kind,
            fuel_used = outcome.report.fuel_used,
            wall_us = outcome.report.wall_time_us,
            "run finished"
        );
        let mut json = serde_json::to_value(&outcome.report)
            .map_err(|e| ApiError::Internal(format!("serialising the report: {e}")))?;
        json["stderr"] = String::from_utf8_lossy(&outcome.stderr).into();
        s.activity.record_run(crate::activity::RunRecord {
            id: vm_id,
            tenant: self.tenant,
            kind: self.kind,
            label: self.label,
            job: None,
            started_ms: self.started_ms,
            ended_ms: crate::activity::now_ms(),
            // Cut down to a bounded size by `record_run`.
            report: json.clone(),
        });
        let ok = outcome.report.state.is_ok();
        let mut headers = HeaderMap::new();
        report_headers(&mut headers, &outcome.report, &kind);
        let (status, body) = if report_json {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (StatusCode::OK, Bytes::from(json.to_string()))
        } else {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (status, Bytes::from(outcome.stdout))
        };
        Ok(Completed {
            status,
            headers,
            body,
            ok,
            report: json,
        })
    }
}

/// An execution's answer, whichever kind it was: sent at once, or kept for
/// `GET /v1/jobs/{id}/result` when it was deferred.
#[derive(Debug, Clone)]
pub struct Completed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Whether it ended `ok` (every member, for a job).
    pub ok: bool,
    /// The JSON report, for `GET /v1/jobs/{id}`.
    pub report: serde_json::Value,
}

impl IntoResponse for Completed {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.body).into_response();
        r.headers_mut().extend(self.headers);
        r
    }
}

/// Refuses a request naming an input or program object that does not exist, or an output
/// in a bucket that does not: found before a VM is taken. On the blocking pool, as every
/// store call (an S3 backend makes a round trip).
pub(crate) async fn check_objects_exist(
    s: &Arc<Shared>,
    request: &RunRequest,
) -> Result<(), ApiError> {
    let reads: Vec<ObjectRef> = request
        .inputs
        .iter()
        .map(|(_, o)| o.clone())
        .chain(request.program.clone())
        .collect();
    let outputs: Vec<String> = request
        .outputs
        .iter()
        .map(|(_, o)| o.bucket.clone())
        .collect();
    let s = s.clone();
    crate::objects::blocking(move || {
        for object in &reads {
            s.store.head(&object.bucket, &object.key)?;
        }
        for bucket in &outputs {
            s.store.list(bucket, "", None, 0)?;
        }
        Ok(())
    })
    .await
}

/// Checks that `caller` may use every bucket `request` names, and sets its fuel and memory
/// to what the caller's quotas allow.
pub fn authorize(s: &Shared, caller: &Caller, request: &mut RunRequest) -> Result<(), ApiError> {
    let objects = request
        .program
        .iter()
        .chain(request.inputs.iter().map(|(_, o)| o))
        .chain(request.outputs.iter().map(|(_, o)| o));
    for object in objects {
        s.tenants.check_bucket(caller, &object.bucket)?;
    }
    request.fuel = Some(caller.fuel(request.fuel, s.config.max_fuel)?);
    request.memory = Some(caller.memory(request.memory, s.config.max_memory)?);
    Ok(())
}

/// The state's kind as the JSON report spells it (`ok`, `out_of_fuel`, ...).
pub(crate) fn state_kind(report: &Report) -> String {
    serde_json::to_value(&report.state)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// `text` as a header value: printable ASCII (anything else as `?`), at most 512 characters.
pub(crate) fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .take(512)
        .collect()
}

/// The report in response headers.
pub(crate) fn report_headers(h: &mut HeaderMap, report: &Report, kind: &str) {
    let mut set = |name: String, value: String| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            h.insert(n, v);
        }
    };
    set("x-zvm-state".into(), kind.to_owned());
    set("x-zvm-state-text".into(), header_text(&report.state_text));
    if let Some(code) = report.exit_code {
        set("x-zvm-exit-code".into(), code.to_string());
    }
    set("x-zvm-fuel-used".into(), report.fuel_used.to_string());
    set("x-zvm-wall-time-us".into(), report.wall_time_us.to_string());
    set("x-zvm-peak-memory".into(), report.peak_memory.to_string());
    set("x-zvm-program-hash".into(), report.program_hash.clone());
    set("x-zvm-committed".into(), report.committed.to_string());
    for c in &report.channels {
        set(format!("x-zvm-etag-{}", c.name), c.etag.clone());
    }
}

/// Everything of a run that blocks: loading, running, committing.
fn run_blocking(s: &Shared, request: RunRequest, body: Bytes) -> Result<RunOutcome, ApiError> {
    let (program, stdin) = match &request.program {
        Some(object) => (s.programs.load(&s.runtime, &s.store, object)?, body),
        None if body.is_empty() => {
            return Err(ApiError::bad(
                "program",
                "missing: name a stored program (`program=bucket/key`) or send one as the body",
            ));
        }
        None => (s.programs.load_bytes(&s.runtime, &body)?, Bytes::new()),
    };
    let program_name = request
        .program
        .as_ref()
        .map_or_else(|| "request-body.wasm".to_string(), ObjectRef::to_string);
    let mut manifest = Manifest::for_program(PathBuf::from(&program_name));
    manifest.args = request.args;
    manifest.limits.fuel = request.fuel.unwrap_or(s.config.max_fuel);
    manifest.limits.memory = request.memory.unwrap_or(s.config.max_memory);
    manifest.limits.timeout = s.config.request_timeout;
    execute(
        s,
        &program,
        manifest,
        Box::new(std::io::Cursor::new(stdin)),
        &request.inputs,
        &request.outputs,
    )
}

/// Runs `program` under `manifest` (whose limits the caller has set within the server's):
/// `stdin` as stdin, stdout and stderr captured, each of `inputs` bound as a read channel and
/// each of `outputs` as a write channel staged in a temporary file, all of them committed in
/// one store batch if the run ends `ok`. A channel the manifest declares (a zapp's) keeps
/// its mode and is bound to the object instead of its own source; any other is added.
pub(crate) fn execute(
    s: &Shared,
    program: &Program,
    mut manifest: Manifest,
    stdin: Box<dyn Read + Send>,
    inputs: &[(String, ObjectRef)],
    outputs: &[(String, ObjectRef)],
) -> Result<RunOutcome, ApiError> {
    let output_quota = Quota {
        write_bytes: s.config.max_output,
        ..Quota::default()
    };
    for ch in &mut manifest.channels {
        if ch.name.as_str() == "stdout" {
            ch.quota.write_bytes = ch.quota.write_bytes.min(s.config.max_output);
        }
    }
    let stdout = SharedBuffer::new();
    let stderr = Head {
        keep: MAX_STDERR_KEPT,
        ..Head::default()
    };
    let stderr_buf = stderr.buf.clone();
    let mut io = RunIo::default()
        .bind("stdin", Endpoint::Reader(stdin))
        .bind("stdout", stdout.endpoint())
        .bind("stderr", Endpoint::Writer(Box::new(stderr)));
    let mut channel = |name: &str, mode, quota: Quota| -> Result<(), ApiError> {
        if let Some(c) = manifest
            .channels
            .iter_mut()
            .find(|c| c.name.as_str() == name)
        {
            c.source = ChannelSource::Null;
            c.etag = None;
            c.quota.write_bytes = c.quota.write_bytes.min(quota.write_bytes);
            return Ok(());
        }
        manifest.channels.push(Channel {
            name: ChannelName::new(name).map_err(|m| ApiError::bad("channel", m))?,
            source: ChannelSource::Null,
            mode,
            quota,
            etag: None,
        });
        Ok(())
    };
    for (name, object) in inputs {
        let got = s.store.get(&object.bucket, &object.key, None)?;
        channel(name, AccessMode::SequentialRead, Quota::default())?;
        io = io.bind(name, Endpoint::Reader(Box::new(got.body)));
    }
    let mut staged = Vec::new();
    for (name, object) in outputs {
        let file = tempfile::tempfile_in(&s.runs_dir)
            .map_err(|e| ApiError::Internal(format!("staging output `{name}`: {e}")))?;
        let writer = file
            .try_clone()
            .map_err(|e| ApiError::Internal(format!("staging output `{name}`: {e}")))?;
        channel(name, AccessMode::SequentialWrite, output_quota)?;
        io = io.bind(name, Endpoint::Writer(Box::new(writer)));
        staged.push((object, file));
    }
    manifest
        .check()
        .map_err(|m| ApiError::Internal(format!("the run's manifest: {m}")))?;
    let mut report = program.run(&manifest, io)?;
    if report.state.is_ok() && !staged.is_empty() {
        // The outputs count against their buckets' owners' `max_stored` quotas; over it, the
        // run's outputs do not land (and the answer is 403).
        let mut sizes = Vec::new();
        for (object, file) in &staged {
            let size = file
                .metadata()
                .map_err(|e| ApiError::Internal(format!("staged `{object}`: {e}")))?
                .len();
            sizes.push((object.bucket.as_str(), object.key.as_str(), size));
        }
        let deltas = s.tenants.check_outputs(s, &sizes)?;
        let mut batch = s.store.batch();
        for (object, mut file) in staged {
            file.seek(SeekFrom::Start(0))
                .map_err(|e| ApiError::Internal(format!("reading staged `{object}`: {e}")))?;
            batch.put(&object.bucket, &object.key, file, PutMeta::default())?;
        }
        batch.commit()?;
        for (bucket, delta) in deltas {
            s.tenants.account(&bucket, delta);
        }
        for c in &mut report.channels {
            if outputs.iter().any(|(name, _)| *name == c.name) {
                c.committed = true;
            }
        }
    }
    Ok(RunOutcome {
        report,
        stdout: stdout.contents(),
        stderr: stderr_buf.contents(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_with_bound_channels() {
        let config = ServerConfig::default();
        let r = RunRequest::parse(
            "program=bin/wc.wasm&input=data/in.txt&output=counts:out/a%2Fb.txt&arg=-l&fuel=1000&report=json",
            &config,
        )
        .unwrap();
        assert_eq!(r.program.unwrap().to_string(), "bin/wc.wasm");
        assert_eq!(r.inputs[0].0, "input");
        assert_eq!(r.outputs[0].0, "counts");
        assert_eq!(r.outputs[0].1.key, "a/b.txt");
        assert_eq!(r.args, ["-l"]);
        assert_eq!(r.fuel, Some(1000));
        assert!(r.report_json);
    }

    #[test]
    fn bad_queries_name_the_field() {
        let config = ServerConfig::default();
        let err = |q: &str| RunRequest::parse(q, &config).unwrap_err().to_string();
        assert!(err("program=nobucket").starts_with("`program`"));
        assert!(err("fuel=0").starts_with("`fuel`"));
        assert!(err(&format!("fuel={}", u64::MAX)).starts_with("`fuel`"));
        assert!(err("memory=99GiB").starts_with("`memory`"));
        assert!(err("input=aaa/b&output=input:ccc/d").contains("bound twice"));
        assert!(err("output=stdout:abc/d").starts_with("`output`"));
        assert!(err("colour=blue").starts_with("`colour`"));
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let a = Arc::new(Admission::new(1, 1));
        let first = a.admit(Duration::from_secs(5)).await.unwrap();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.admit(Duration::from_secs(5)).await.map(drop) })
        };
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            a.admit(Duration::from_secs(5)).await,
            Err(ApiError::Busy)
        ));
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(a.waiting(), 0);
        assert_eq!(a.in_flight(), 0);
    }
}
