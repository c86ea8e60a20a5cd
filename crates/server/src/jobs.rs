//! Jobs over HTTP: `POST /v1/jobs` runs a job file (TOML or JSON, the format of
//! `docs/jobs.md`) whose programs, images and channels name objects, with the `zvm-job`
//! runner in this process: members as VMs connected by pipes, outputs landing as objects,
//! all of them together only if every member ended `ok`.
//!
//! # A guided tour
//!
//! * **How a job names objects.** On the server every path of a job is an object,
//!   `bucket/key`: `program = "bin/map.wasm"`, `image = "bin/lib.tar"`, a read channel
//!   `path = "texts/*.txt"` (a wildcard in the key matches objects, in key order), a write
//!   channel `path = "results/*.counts"`. A path that could only be a host path (absolute,
//!   with a `..` part or a scheme such as `file://`), a host directory mount and an export
//!   are refused with the spot named: no host path is reachable from the server. A zapp's job
//!   ([`Programs::Zapp`]) takes its programs and images from the zapp instead.
//! * **Preparing** (`prepare`): the objects the job reads are copied into a private scratch
//!   directory laid out as `<bucket>/<key>`, so that the job parser resolves the job (matching
//!   wildcards, making members) exactly as `zvm job` would, in that directory. What the
//!   members read is the version of each object at submission.
//! * **Running**: all members at once, on [`JobRuntime`], holding `min(members, max_vms)`
//!   VM permits (granted together) and as many threads; outputs staged by the runner's transaction inside the
//!   scratch directory; when every member ended `ok`, every output file is put in one store
//!   batch, so the job's objects appear together or not at all. The scratch directory is
//!   removed afterwards, whatever happened.
//! * **Tenants**: every member runs within the caller's `max_fuel` and `max_memory` quotas
//!   (a member asking for more gets the quota), and the outputs count against the
//!   `max_stored` quota of their buckets' owners: over it, none lands and the answer is 403.
//! * **The answer**: the members' standard outputs, concatenated in member order (the order
//!   of `docs/jobs.md`: groups as declared, members by index), 200 if the job succeeded and
//!   500 if not, with `x-zvm-*` headers (`x-zvm-state` `ok` or `failed`,
//!   `x-zvm-failed-member`, `x-zvm-members`, `x-zvm-pipe-bytes`, `x-zvm-fuel-used`,
//!   `x-zvm-committed`); with `report=json`, the job report of `docs/jobs.md` (200). The
//!   request body is the job file, so members' stdin is empty.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use zvm_manifest::{AccessMode, ChannelSource, Job, MountSource};

use crate::Shared;
use crate::activity::{JobMember, JobPipe, JobRecord, now_ms};
use crate::error::ApiError;
use crate::exec::{Completed, ObjectRef};
use crate::objects::{check_length, read_body};
use crate::tenants::Caller;

/// Members of one job shown one by one on the status page (as VMs and runs).
const MEMBERS_SHOWN: usize = 64;

/// Largest job file: a job is text that names objects, a thousand times a long one.
pub const MAX_JOB_TEXT: u64 = 1 << 20;

/// Most objects a job may read (programs, images and inputs together): far more than
/// members a server runs at once, few enough that a wildcard cannot copy a whole bucket.
pub const MAX_JOB_OBJECTS: usize = 1000;

/// The VM runtime jobs run on, made on the first job. Not the server's: that one's pooling
/// allocator has one slot per `max_vms`, and a job's members all live at once (most of them
/// waiting on pipes), so a job of more members than `max_vms` could never start there. This
/// one allocates on demand; the admission still bounds a job to `max_vms` permits, and its
/// members share as many threads, so it computes on no more cores than a run would.
#[derive(Debug, Default)]
pub struct JobRuntime(std::sync::OnceLock<zvm_vm::Runtime>);

impl JobRuntime {
    pub(crate) fn get(&self, s: &Shared) -> Result<&zvm_vm::Runtime, ApiError> {
        if let Some(r) = self.0.get() {
            return Ok(r);
        }
        let runtime = zvm_vm::Runtime::new(zvm_vm::RuntimeConfig {
            cache_dir: Some(s.config.data_dir.join("cache")),
            allocator: zvm_vm::Allocator::OnDemand,
            journal: None,
        })?;
        // Another job may have made one meanwhile; either serves.
        let _ = self.0.set(runtime);
        Ok(self.0.get().expect("set above"))
    }
}

/// Where a job's programs and images come from.
#[derive(Debug, Clone)]
pub enum Programs {
    /// Objects, like everything else the job names.
    Objects,
    /// Files of an unpacked zapp, relative to the entry point `entry` inside `dir`.
    Zapp { dir: PathBuf, entry: String },
}

/// A job read, its inputs copied, ready to run.
pub(crate) struct Prepared {
    pub(crate) job: Job,
    /// Removed when dropped.
    pub(crate) scratch: tempfile::TempDir,
    /// Each output file and the object it becomes.
    pub(crate) outputs: Vec<(PathBuf, ObjectRef)>,
    /// Every object the job reads (`bucket/key`) and its etag at the time it was copied: a
    /// cluster's nodes check that they all read the same versions.
    pub(crate) reads: std::collections::BTreeMap<String, String>,
}

/// `POST /v1/jobs`.
pub async fn post(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut report_json = false;
    let mut defer = crate::deferred::prefers_async(&headers);
    let mut json = None;
    for (name, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "report" => {
                report_json = match value.as_ref() {
                    "json" => true,
                    "headers" => false,
                    other => {
                        return Err(ApiError::bad(
                            "report",
                            format!("`{other}` is not `json` or `headers`"),
                        ));
                    }
                }
            }
            "defer" => defer = crate::deferred::parse_defer(&value)?,
            "format" => {
                json = Some(match value.as_ref() {
                    "json" => true,
                    "toml" => false,
                    other => {
                        return Err(ApiError::bad(
                            "format",
                            format!("`{other}` is not `toml` or `json`"),
                        ));
                    }
                })
            }
            other => return Err(ApiError::bad(other, "unknown query parameter")),
        }
    }
    check_length(&headers, MAX_JOB_TEXT)?;
    let body = read_body(body, MAX_JOB_TEXT).await?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad("body", "the job file is not UTF-8 text"))?;
    let json = json.unwrap_or_else(|| {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        content_type.contains("json") || text.trim_start().starts_with('{')
    });
    let origin = if json { "job.json" } else { "job.toml" };
    if let Some(node) = s.cluster.get() {
        return crate::cluster::submit(&s, node, &caller, &text, origin, report_json, defer).await;
    }
    submit(
        &s,
        &caller,
        &text,
        origin,
        Programs::Objects,
        report_json,
        defer,
        "job".into(),
    )
    .await
}

/// Prepares the job `text` (named `origin`: `*.toml` or `*.json`) and runs it now, or later
/// with `defer`.
#[expect(clippy::too_many_arguments, reason = "one call site per kind of job")]
pub(crate) async fn submit(
    s: &Arc<Shared>,
    caller: &Caller,
    text: &str,
    origin: &str,
    programs: Programs,
    report_json: bool,
    defer: bool,
    label: String,
) -> Result<Response, ApiError> {
    let shared = s.clone();
    let text = text.to_owned();
    let origin = origin.to_owned();
    let checker = caller.clone();
    let prepared =
        tokio::task::spawn_blocking(move || prepare(&shared, &checker, &text, &origin, &programs))
            .await
            .map_err(|e| ApiError::Internal(format!("preparing the job: {e}")))??;
    let vms = prepared.job.members.len().min(s.config.max_vms);
    let tenant = caller.name().to_owned();
    let work = move |s: &Shared| run_prepared(s, prepared, report_json, &tenant);
    crate::deferred::dispatch(s, caller, "job", label, vms, defer, Box::new(work)).await
}

/// The job document as a JSON value, whichever its syntax.
fn document(text: &str, origin: &str) -> Result<Value, ApiError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: Value = if origin.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| ApiError::bad("job", format!("{origin}: {e}")))?
    } else {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| ApiError::bad("job", format!("{origin}: {}", e.message().trim_end())))?;
        serde_json::to_value(table).map_err(|e| ApiError::Internal(e.to_string()))?
    };
    if doc.is_array() {
        return Err(ApiError::bad(
            "job",
            "ZeroCloud system maps name host files; the server takes jobs in the native TOML \
             or JSON format of docs/jobs.md",
        ));
    }
    Ok(doc)
}

/// A job's path as an object, or why it cannot be one.
fn object_path(path: &str, at: &str) -> Result<ObjectRef, ApiError> {
    let host = path.starts_with('/')
        || path.contains("://")
        || path.starts_with('~')
        || path.split('/').any(|p| p == ".." || p == ".");
    if host {
        return Err(ApiError::bad(
            "job",
            format!(
                "{at}: `{path}` is a host path, and no host path is reachable from the server; \
                 name an object as `bucket/key`"
            ),
        ));
    }
    ObjectRef::parse("job", path).map_err(|e| ApiError::bad("job", format!("{at}: {e}")))
}

/// Whether `key` matches `pattern`, where `*` matches any run of characters but `/`.
fn glob(pattern: &str, key: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == key,
        Some((head, rest)) => {
            let Some(tail) = key.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .take_while(|&i| i == 0 || !tail[..i].contains('/'))
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// Copies object `o` to `<scratch>/<bucket>/<key>`.
fn fetch(
    s: &Shared,
    scratch: &Path,
    o: &ObjectRef,
    reads: &std::cell::RefCell<std::collections::BTreeMap<String, String>>,
) -> Result<(), ApiError> {
    let dest = scratch.join(&o.bucket).join(&o.key);
    if dest.exists() {
        return Ok(());
    }
    let mut got = s.store.get(&o.bucket, &o.key, None)?;
    reads
        .borrow_mut()
        .insert(o.to_string(), got.info.etag.clone());
    let io = |e: std::io::Error| ApiError::Internal(format!("copying `{o}` for the job: {e}"));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut file = std::fs::File::create(&dest).map_err(io)?;
    std::io::copy(&mut got.body, &mut file).map_err(io)?;
    Ok(())
}

/// Reads the job, checks every path it names, copies its inputs (and programs) into a
/// scratch directory and resolves it there.
pub(crate) fn prepare(
    s: &Shared,
    caller: &Caller,
    text: &str,
    origin: &str,
    programs: &Programs,
) -> Result<Prepared, ApiError> {
    let doc = document(text, origin)?;
    let scratch = tempfile::Builder::new()
        .prefix("job-")
        .tempdir_in(&s.runs_dir)
        .map_err(|e| ApiError::Internal(format!("creating the job's directory: {e}")))?;
    let root = scratch.path();
    let reads = std::cell::RefCell::new(std::collections::BTreeMap::new());
    let mut fetched = 0usize;
    let mut count = |n: usize| -> Result<(), ApiError> {
        fetched += n;
        if fetched > MAX_JOB_OBJECTS {
            return Err(ApiError::bad(
                "job",
                format!("the job reads more than {MAX_JOB_OBJECTS} objects"),
            ));
        }
        Ok(())
    };
    let groups = doc
        .get("group")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, g) in groups.iter().enumerate() {
        let name = g.get("name").and_then(Value::as_str).unwrap_or("?");
        let at = |what: &str| format!("group `{name}` (`group[{i}]`) {what}");
        let program = g
            .get("program")
            .and_then(|p| p.as_str().or_else(|| p.get("path").and_then(Value::as_str)));
        let mut own: Vec<(String, String)> = Vec::new();
        if let Some(p) = program {
            own.push((p.to_owned(), at("`program`")));
        }
        for m in g
            .get("mount")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(p) = m.get("image").and_then(Value::as_str) {
                own.push((p.to_owned(), at("`mount.image`")));
            }
            if let Some(p) = m.get("dir").and_then(Value::as_str) {
                return Err(ApiError::bad(
                    "job",
                    format!(
                        "{}: `{p}` is a host directory, and no host path is reachable from \
                         the server; pack the files as an image object",
                        at("`mount.dir`")
                    ),
                ));
            }
        }
        if g.get("export").is_some() {
            return Err(ApiError::bad(
                "job",
                format!(
                    "{}: exports write host files; write to a channel naming an object instead",
                    at("`export`")
                ),
            ));
        }
        if let Programs::Objects = programs {
            for (p, at) in &own {
                let o = object_path(p, at)?;
                s.tenants.check_bucket(caller, &o.bucket)?;
                count(1)?;
                fetch(s, root, &o, &reads)?;
            }
        }
        for (k, c) in g
            .get("channel")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(path) = c.get("path").and_then(Value::as_str) else {
                continue;
            };
            let at = at(&format!("`channel[{k}].path`"));
            let o = object_path(path, &at)?;
            s.tenants.check_bucket(caller, &o.bucket)?;
            let mode = c.get("mode").and_then(Value::as_str).unwrap_or("read");
            match mode {
                "read" | "random-read" => {
                    if o.key.contains('*') {
                        let prefix = &o.key[..o.key.find('*').unwrap_or(0)];
                        let mut after: Option<String> = None;
                        loop {
                            let (page, truncated) =
                                s.store.list(&o.bucket, prefix, after.as_deref(), 1000)?;
                            for info in &page {
                                if glob(&o.key, &info.key) {
                                    count(1)?;
                                    fetch(
                                        s,
                                        root,
                                        &ObjectRef {
                                            bucket: o.bucket.clone(),
                                            key: info.key.clone(),
                                        },
                                        &reads,
                                    )?;
                                }
                            }
                            after = page.last().map(|i| i.key.clone());
                            if !truncated || after.is_none() {
                                break;
                            }
                        }
                        std::fs::create_dir_all(root.join(&o.bucket)).map_err(|e| {
                            ApiError::Internal(format!("preparing `{}`: {e}", o.bucket))
                        })?;
                    } else {
                        count(1)?;
                        fetch(s, root, &o, &reads)?;
                    }
                }
                "write" | "random-write" => {
                    s.store.list(&o.bucket, "", None, 0)?;
                    let dir = root.join(&o.bucket).join(&o.key);
                    if let Some(parent) = dir.parent() {
                        let parent = parent.to_string_lossy().replace('*', "");
                        std::fs::create_dir_all(parent).map_err(|e| {
                            ApiError::Internal(format!("preparing `{}`: {e}", o.bucket))
                        })?;
                    }
                }
                other => {
                    return Err(ApiError::bad(
                        "job",
                        format!(
                            "{at}: mode `{other}` reads and writes one file in place; a job on \
                             the server reads objects (`read`, `random-read`) and writes new \
                             ones (`write`, `random-write`)"
                        ),
                    ));
                }
            }
        }
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parsed = if origin.ends_with(".json") {
        zvm_manifest::parse_job_json(text, Path::new(origin), root)
    } else {
        zvm_manifest::parse_job_toml(text, Path::new(origin), root)
    };
    let mut job = parsed.map_err(|e| {
        // Messages name the scratch directory where they name a path; the client knows
        // the path as it wrote it.
        let message = e.to_string().replace(&format!("{}/", root.display()), "");
        ApiError::bad("job", message)
    })?;
    let mut outputs = Vec::new();
    for member in &mut job.members {
        let m = &mut member.manifest;
        if let Programs::Zapp { dir, entry } = programs {
            let base = zvm_zapp::dir_of(entry);
            let place = |p: &Path, what: &str| -> Result<PathBuf, ApiError> {
                let rel = p
                    .strip_prefix(root)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .into_owned();
                let inside = zvm_zapp::inside(base, &rel).map_err(|msg| {
                    ApiError::bad(
                        "zapp",
                        format!("{what} of member `{}` `{rel}` {msg}", member.name),
                    )
                })?;
                let file = dir.join(inside);
                if !file.is_file() {
                    return Err(ApiError::bad(
                        "zapp",
                        format!(
                            "{what} of member `{}` `{rel}` is not in the zapp",
                            member.name
                        ),
                    ));
                }
                Ok(file)
            };
            m.program.path = place(&m.program.path, "program")?;
            for mount in &mut m.mounts {
                if let MountSource::Image(p) = &mut mount.source {
                    *p = place(p, "image")?;
                }
            }
        }
        if let Some(mount) = m
            .mounts
            .iter()
            .find(|x| matches!(x.source, MountSource::Dir { .. }))
        {
            return Err(ApiError::bad(
                "job",
                format!(
                    "member `{}`: mount `{}` is a host directory",
                    member.name, mount.guest
                ),
            ));
        }
        if !m.exports.is_empty() {
            return Err(ApiError::bad(
                "job",
                format!("member `{}`: exports write host files", member.name),
            ));
        }
        // Every member within the caller's quotas (and so the server's limits).
        m.limits.fuel = m.limits.fuel.min(caller.fuel(None, s.config.max_fuel)?);
        m.limits.memory = m
            .limits
            .memory
            .min(caller.memory(None, s.config.max_memory)?);
        m.limits.timeout = m.limits.timeout.min(s.config.request_timeout);
        for c in &mut m.channels {
            c.quota.write_bytes = c.quota.write_bytes.min(s.config.max_output);
            let ChannelSource::File(path) = &c.source else {
                continue;
            };
            let Ok(rel) = path.strip_prefix(root) else {
                return Err(ApiError::bad(
                    "job",
                    format!(
                        "member `{}`: channel `{}` names the host path `{}`",
                        member.name,
                        c.name,
                        path.display()
                    ),
                ));
            };
            if matches!(
                c.mode,
                AccessMode::SequentialWrite | AccessMode::RandomWrite
            ) {
                let rel = rel.to_string_lossy();
                let object = ObjectRef::parse("job", &rel)?;
                outputs.push((path.clone(), object));
            }
        }
    }
    Ok(Prepared {
        job,
        scratch,
        outputs,
        reads: reads.into_inner(),
    })
}

/// The activity record of a job: members with their states, pipes with bytes moved.
fn record(
    id: &str,
    tenant: &str,
    job: &Job,
    report: Option<&zvm_job::JobReport>,
    started_ms: u64,
) -> JobRecord {
    let members = job
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let r = report.and_then(|r| r.members.get(i));
            let vm = r.and_then(|r| r.report.as_ref());
            JobMember {
                name: m.name.clone(),
                state: match (report, vm) {
                    (None, _) => "running".into(),
                    (Some(_), Some(vm)) => crate::exec::state_kind(vm),
                    (Some(_), None) => "cancelled".into(),
                },
                started_ms: Some(started_ms),
                ended_ms: report.map(|_| now_ms()),
                fuel: vm.map_or(0, |v| v.fuel_used),
            }
        })
        .collect();
    let pipes = job
        .pipes
        .iter()
        .map(|p| {
            let bytes = report
                .and_then(|r| r.members.get(p.from))
                .and_then(|m| m.report.as_ref())
                .and_then(|vm| vm.channels.iter().find(|c| c.name == p.writer.as_str()))
                .map_or(0, |c| c.write_bytes);
            JobPipe {
                from: job.members[p.from].name.clone(),
                to: job.members[p.to].name.clone(),
                bytes,
            }
        })
        .collect();
    JobRecord {
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        state: match report {
            None => "running".into(),
            Some(r) if r.committed => "ok".into(),
            Some(_) => "failed".into(),
        },
        started_ms,
        ended_ms: report.map(|_| now_ms()),
        members,
        pipes,
    }
}

/// Runs a prepared job and lands its outputs if every member succeeded.
fn run_prepared(
    s: &Shared,
    prepared: Prepared,
    report_json: bool,
    tenant: &str,
) -> Result<Completed, ApiError> {
    let Prepared {
        job,
        scratch,
        outputs,
        ..
    } = prepared;
    let id = format!(
        "job-{}",
        &blake3::hash(scratch.path().to_string_lossy().as_bytes()).to_hex()[..12]
    );
    let started_ms = now_ms();
    let started = std::time::Instant::now();
    s.activity
        .record_job(record(&id, tenant, &job, None, started_ms));
    let options = zvm_job::JobOptions {
        threads: job.members.len().clamp(1, s.config.max_vms.max(1)),
        progress: None,
    };
    let runtime = s.job_runtime.get(s)?;
    // Each member is a VM on the status page's timeline and in its runs (the first
    // `MEMBERS_SHOWN` of a large job, so one job cannot flood the page).
    let vms: Vec<_> = job
        .members
        .iter()
        .take(MEMBERS_SHOWN)
        .map(|m| s.activity.vm_started("job-member", m.name.clone(), tenant))
        .collect();
    let report = zvm_job::run(runtime, &job, &options);
    for (i, vm) in vms.iter().enumerate() {
        let member = report
            .as_ref()
            .ok()
            .and_then(|r| r.members.get(i))
            .and_then(|m| m.report.as_ref());
        if let Some(vm_report) = member
            && let Ok(json) = serde_json::to_value(vm_report)
        {
            s.activity.record_run(crate::activity::RunRecord {
                id: vm.id().to_owned(),
                tenant: tenant.to_owned(),
                kind: "job-member",
                label: job.members[i].name.clone(),
                job: Some(id.clone()),
                started_ms,
                ended_ms: now_ms(),
                report: json,
            });
        }
    }
    drop(vms);
    let mut report = report.map_err(|e| match e {
        zvm_job::Error::Program { error, .. } => ApiError::from(*error),
        other => ApiError::Internal(format!("job `{}`: {other}", job.name)),
    })?;
    if report.committed {
        // The outputs count against their buckets' owners' `max_stored` quotas, as a run's
        // do: over it, none of them lands (and the answer is 403).
        let mut sizes = Vec::new();
        for (path, object) in &outputs {
            if let Ok(meta) = std::fs::metadata(path)
                && meta.is_file()
            {
                sizes.push((object.bucket.as_str(), object.key.as_str(), meta.len()));
            }
        }
        let deltas = match s.tenants.check_outputs(s, &sizes) {
            Ok(d) => d,
            Err(e) => {
                report.committed = false;
                return Err(e);
            }
        };
        let mut batch = s.store.batch();
        for (path, object) in &outputs {
            if !path.is_file() {
                continue;
            }
            let file = std::fs::File::open(path)
                .map_err(|e| ApiError::Internal(format!("reading the output `{object}`: {e}")))?;
            batch.put(
                &object.bucket,
                &object.key,
                file,
                zvm_store::PutMeta::default(),
            )?;
        }
        if let Err(e) = batch.commit() {
            report.committed = false;
            return Err(e.into());
        }
        for (bucket, delta) in deltas {
            s.tenants.account(&bucket, delta);
        }
    }
    s.activity
        .record_job(record(&id, tenant, &job, Some(&report), started_ms));
    let took = started.elapsed();
    for m in &report.members {
        let kind = m
            .report
            .as_ref()
            .map_or_else(|| "cancelled".to_string(), crate::exec::state_kind);
        s.metrics.run(&kind, took);
    }
    drop(scratch);
    let ok = report.committed;
    let json = serde_json::to_value(&report)
        .map_err(|e| ApiError::Internal(format!("serialising the job report: {e}")))?;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-zvm-state", if ok { "ok" } else { "failed" }.into());
    set(
        "x-zvm-state-text",
        crate::exec::header_text(&report.outcome_text),
    );
    if let Some(m) = report.failed_member() {
        set("x-zvm-failed-member", m.name.clone());
    }
    set("x-zvm-members", report.totals.members.to_string());
    set("x-zvm-fuel-used", report.totals.fuel_used.to_string());
    set("x-zvm-pipe-bytes", report.totals.pipe_bytes.to_string());
    set("x-zvm-wall-time-us", report.totals.wall_time_us.to_string());
    set("x-zvm-committed", ok.to_string());
    let (status, body, content_type) = if report_json {
        (
            StatusCode::OK,
            Bytes::from(json.to_string()),
            "application/json",
        )
    } else {
        let mut out = Vec::new();
        for m in &report.members {
            out.extend_from_slice(m.stdout.as_deref().unwrap_or_default());
        }
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (status, Bytes::from(out), "application/octet-stream")
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(Completed {
        status,
        headers,
        body,
        ok,
        report: json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_name() {
        assert!(glob("in/*.txt", "in/a.txt"));
        assert!(glob("in/*.txt", "in/.txt"));
        assert!(!glob("in/*.txt", "in/sub/a.txt"));
        assert!(!glob("in/*.txt", "in/a.csv"));
        assert!(glob("a*b*c", "aXXbYc"));
        assert!(glob("plain", "plain"));
    }

    #[test]
    fn host_paths_are_refused() {
        for p in [
            "/etc/passwd",
            "file:///etc/passwd",
            "../x/y",
            "bin/../x",
            "~/x",
        ] {
            let e = object_path(p, "here").unwrap_err().to_string();
            assert!(e.contains("host path"), "{p}: {e}");
        }
        assert_eq!(object_path("bin/a.wasm", "here").unwrap().key, "a.wasm");
        assert!(object_path("nobucketkey", "here").is_err());
    }
}
