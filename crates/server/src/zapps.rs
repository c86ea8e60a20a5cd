//! Zapps over HTTP: `POST /v1/run?zapp=bucket/key` runs a zapp stored as an object, and
//! `POST /v1/run` with `Content-Type: application/x-zvm-zapp` one sent as the body. Deployed
//! endpoints ([`crate::endpoints`]) run zapps through this module too.
//!
//! # A guided tour
//!
//! * **Reading** (`ZappCache::load`): a zapp is read with every check of the `zvm-zapp`
//!   crate (the one `zvm run app.zapp` uses) and unpacked once into
//!   `<data_dir>/zapps/<blake3>/` (into a temporary directory, then renamed, so a directory
//!   there is always whole); its entry point is resolved and its program compiled once, and
//!   the result is kept in memory by the zapp's hash. A stored zapp's etag is that hash, so
//!   a new version of the object is a new zapp.
//! * **Where paths lead**: on a server the zapp is the only file system. Its program and
//!   images are its own files; a channel the manifest reads or writes from a host file must
//!   be bound to an object by the request (`input=name:bucket/key`, `output=name:bucket/key`),
//!   or the request is refused with the channel's name; host directories (`[[mount]] dir`)
//!   and exports are refused. The standard streams are the request's, as for any run.
//! * **Limits**: the zapp's manifest decides, capped by the server's (`max_fuel`,
//!   `max_memory`, `request_timeout`, `max_output`) and by `fuel=` and `memory=` in the query.
//!   With tenants, also by the caller's `max_fuel` and `max_memory` quotas (asking for more
//!   is 403), and outputs count against their buckets' owners' `max_stored`, as a run's do.
//! * A zapp whose entry point is a job runs as a job ([`crate::jobs`]): its programs and
//!   images from the zapp, its channels naming objects.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use zvm_manifest::{AccessMode, ChannelSource, Manifest, MountSource};
use zvm_vm::Program;
use zvm_zapp::{EntryKind, ZappToml};

use crate::Shared;
use crate::error::ApiError;
use crate::exec::{ObjectRef, RunRequest, Tracked};
use crate::tenants::Caller;

/// The media type of a zapp sent as a request body.
pub const ZAPP_CONTENT_TYPE: &str = "application/x-zvm-zapp";

/// Zapps kept resolved in memory: as many as the program cache holds programs, since each
/// holds one (or a job's text).
pub const ZAPP_CACHE_ENTRIES: usize = crate::exec::PROGRAM_CACHE_ENTRIES;

/// Whether the body is a zapp by its content type.
pub fn is_zapp_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(ZAPP_CONTENT_TYPE))
}

/// A zapp unpacked on the server, its entry point resolved.
#[derive(Debug)]
pub struct LoadedZapp {
    /// BLAKE3 of the zapp, hex.
    pub hash: String,
    /// `<data_dir>/zapps/<hash>`.
    pub dir: PathBuf,
    pub toml: ZappToml,
    pub entry: ZappEntry,
}

impl LoadedZapp {
    /// `name@version`, as logs and the status page show the zapp.
    pub fn label(&self) -> String {
        format!("{}@{}", self.toml.app.name, self.toml.app.version)
    }
}

/// What a zapp runs.
#[derive(Debug)]
pub enum ZappEntry {
    /// A VM manifest with its program and images placed in the zapp's directory, and the
    /// program compiled.
    Manifest {
        manifest: Box<Manifest>,
        program: Arc<Program>,
    },
    /// A job file: its text and its path inside the zapp.
    Job { text: String, path: String },
}

/// Resolved zapps by hash.
#[derive(Debug, Default)]
pub struct ZappCache {
    zapps: Mutex<HashMap<String, Arc<LoadedZapp>>>,
}

impl ZappCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LoadedZapp>>> {
        self.zapps.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The zapp stored as `object`.
    pub fn load_object(&self, s: &Shared, object: &ObjectRef) -> Result<Arc<LoadedZapp>, ApiError> {
        let info = s.store.head(&object.bucket, &object.key)?;
        if let Some(z) = self.lock().get(&info.etag).cloned() {
            return Ok(z);
        }
        let got = s.store.get(&object.bucket, &object.key, None)?;
        let etag = got.info.etag.clone();
        self.load(s, &etag, got.body, &object.to_string())
    }

    /// A zapp sent as bytes.
    pub fn load_bytes(
        &self,
        s: &Shared,
        bytes: &[u8],
        shown: &str,
    ) -> Result<Arc<LoadedZapp>, ApiError> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        if let Some(z) = self.lock().get(&hash).cloned() {
            return Ok(z);
        }
        self.load(s, &hash, bytes, shown)
    }

    fn load(
        &self,
        s: &Shared,
        hash: &str,
        zapp: impl Read,
        shown: &str,
    ) -> Result<Arc<LoadedZapp>, ApiError> {
        let refused = |reason: String| ApiError::ProgramRefused {
            program: shown.to_owned(),
            reason,
        };
        let dir = unpack(s, hash, zapp, shown)?;
        let text = std::fs::read_to_string(dir.join(zvm_zapp::ZAPP_TOML))
            .map_err(|e| ApiError::Internal(format!("reading zapp `{shown}`: {e}")))?;
        let toml =
            ZappToml::parse(&text, zvm_zapp::ZAPP_TOML).map_err(|e| refused(format!("{e:#}")))?;
        let entry_text = std::fs::read_to_string(dir.join(&toml.entry.path))
            .map_err(|e| ApiError::Internal(format!("reading zapp `{shown}`: {e}")))?;
        let entry = match toml.entry.kind {
            EntryKind::Job => ZappEntry::Job {
                text: entry_text,
                path: toml.entry.path.clone(),
            },
            EntryKind::Manifest => {
                let mut manifest = zvm_zapp::parse_manifest(&toml.entry.path, &entry_text)
                    .map_err(|e| refused(format!("{e:#}")))?;
                let base = zvm_zapp::dir_of(&toml.entry.path).to_owned();
                let own = |p: &Path, what: &str| -> Result<PathBuf, ApiError> {
                    let written = p.to_string_lossy();
                    let inside = zvm_zapp::inside(&base, &written)
                        .map_err(|m| refused(format!("{what} `{written}` {m}")))?;
                    Ok(dir.join(inside))
                };
                let program_file = own(&manifest.program.path, "program")?;
                for mount in &mut manifest.mounts {
                    match &mut mount.source {
                        MountSource::Image(p) => *p = own(p, "image")?,
                        MountSource::Dir { path, .. } => {
                            return Err(refused(format!(
                                "mount `{}` is the host directory `{}`; a server has no host \
                                 files to give (pack the files as an image)",
                                mount.guest,
                                path.display()
                            )));
                        }
                    }
                }
                if let Some(e) = manifest.exports.first() {
                    return Err(refused(format!(
                        "export `{}` writes the host file `{}`; a server has no host files \
                         (write to a channel bound to an object instead)",
                        e.guest,
                        e.path.display()
                    )));
                }
                let bytes = std::fs::read(&program_file)
                    .map_err(|e| ApiError::Internal(format!("reading zapp `{shown}`: {e}")))?;
                let name = format!(
                    "{}@{}:{}",
                    toml.app.name,
                    toml.app.version,
                    manifest.program.path.display()
                );
                let program = Arc::new(s.runtime.load(
                    Path::new(&name),
                    &bytes,
                    manifest.program.hash,
                )?);
                manifest.program.path = PathBuf::from(name);
                ZappEntry::Manifest {
                    manifest: Box::new(manifest),
                    program,
                }
            }
        };
        let loaded = Arc::new(LoadedZapp {
            hash: hash.to_owned(),
            dir,
            toml,
            entry,
        });
        let mut zapps = self.lock();
        if zapps.len() >= ZAPP_CACHE_ENTRIES
            && let Some(victim) = zapps.keys().next().cloned()
        {
            // Any entry: one evicted early is only resolved again from its directory.
            zapps.remove(&victim);
        }
        zapps.insert(hash.to_owned(), loaded.clone());
        Ok(loaded)
    }
}

/// Unpacks a zapp into `<data_dir>/zapps/<hash>` unless it is there, and returns that
/// directory. Unpacked into a temporary directory beside it and renamed, so a directory
/// named after a hash is always a whole, checked zapp.
fn unpack(s: &Shared, hash: &str, zapp: impl Read, shown: &str) -> Result<PathBuf, ApiError> {
    let zapps = s.config.data_dir.join("zapps");
    let root = zapps.join(hash);
    if root.join(zvm_zapp::ZAPP_TOML).is_file() {
        return Ok(root);
    }
    let internal = |e: std::io::Error| ApiError::Internal(format!("unpacking zapp `{shown}`: {e}"));
    std::fs::create_dir_all(&zapps).map_err(internal)?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(&zapps)
        .map_err(internal)?;
    let contents = zvm_zapp::read_from(zapp, shown, Some(tmp.path())).map_err(|e| {
        ApiError::ProgramRefused {
            program: shown.to_owned(),
            reason: format!("{e:#}"),
        }
    })?;
    if contents.hash.to_hex().as_str() != hash {
        return Err(ApiError::Internal(format!(
            "zapp `{shown}` changed while it was read"
        )));
    }
    match std::fs::rename(tmp.path(), &root) {
        Ok(()) => {
            let _ = tmp.keep();
        }
        // Another request unpacked the same zapp first; ours goes when `tmp` drops.
        Err(_) if root.join(zvm_zapp::ZAPP_TOML).is_file() => {}
        Err(e) => return Err(internal(e)),
    }
    Ok(root)
}

/// The manifest a zapp's VM runs with: the zapp's, with `args` (if any) replacing its
/// arguments, limits capped by the server's and the request's, and every channel that names
/// a host file bound to one of the request's objects (or refused).
pub fn manifest_for(
    s: &Shared,
    base: &Manifest,
    args: &[String],
    fuel: Option<u64>,
    memory: Option<u64>,
    inputs: &[(String, ObjectRef)],
    outputs: &[(String, ObjectRef)],
) -> Result<Manifest, ApiError> {
    let mut m = base.clone();
    if !args.is_empty() {
        m.args = args.to_vec();
    }
    m.limits.fuel = m
        .limits
        .fuel
        .min(fuel.unwrap_or(s.config.max_fuel))
        .min(s.config.max_fuel);
    m.limits.memory = m
        .limits
        .memory
        .min(memory.unwrap_or(s.config.max_memory))
        .min(s.config.max_memory);
    m.limits.timeout = m.limits.timeout.min(s.config.request_timeout);
    for c in &mut m.channels {
        let name = c.name.as_str();
        if ["stdin", "stdout", "stderr"].contains(&name) {
            // The request's own streams, bound by every run.
            c.source = ChannelSource::Null;
            continue;
        }
        let reads = matches!(c.mode, AccessMode::SequentialRead | AccessMode::RandomRead);
        let input = inputs.iter().any(|(n, _)| n == name);
        let output = outputs.iter().any(|(n, _)| n == name);
        if input && !reads {
            return Err(ApiError::bad(
                "input",
                format!(
                    "the zapp's channel `{name}` is written (mode `{}`); bind it with `output=`",
                    c.mode.as_str()
                ),
            ));
        }
        if output && reads {
            return Err(ApiError::bad(
                "output",
                format!("the zapp's channel `{name}` is read; bind it with `input=`"),
            ));
        }
        if let ChannelSource::File(path) = &c.source
            && !input
            && !output
        {
            let (field, what) = if reads {
                ("input", "reads")
            } else {
                ("output", "writes")
            };
            return Err(ApiError::bad(
                field,
                format!(
                    "the zapp's channel `{name}` {what} the host file `{}`, and a server has \
                     no host files; bind it to an object with `{field}={name}:bucket/key`",
                    path.display()
                ),
            ));
        }
    }
    Ok(m)
}

/// `POST /v1/run` with `zapp=` or a zapp as the body.
pub async fn run(
    s: Arc<Shared>,
    caller: Caller,
    request: RunRequest,
    body: Bytes,
    defer: bool,
) -> Result<Response, ApiError> {
    // `exec::run` has checked the caller's buckets and set fuel and memory within its
    // quotas (`exec::authorize`).
    if request.program.is_some() {
        return Err(ApiError::bad(
            "program",
            "a run is a program or a zapp, not both",
        ));
    }
    if let Some(zapp) = &request.zapp {
        s.tenants.check_bucket(&caller, &zapp.bucket)?;
    }
    // Missing input objects and output buckets are found before a VM is taken.
    crate::exec::check_objects_exist(&s, &request).await?;
    // Reading, unpacking and compiling block; a bad zapp is refused before any VM is taken.
    let shared = s.clone();
    let source = request.zapp.clone();
    let (zapp, stdin) = tokio::task::spawn_blocking(move || match &source {
        Some(object) => Ok::<_, ApiError>((shared.zapps.load_object(&shared, object)?, body)),
        None => Ok((
            shared
                .zapps
                .load_bytes(&shared, &body, "request-body.zapp")?,
            Bytes::new(),
        )),
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reading the zapp: {e}")))??;
    let label = request
        .zapp
        .as_ref()
        .map_or_else(|| zapp.label(), |o| format!("{o} ({})", zapp.label()));
    match &zapp.entry {
        ZappEntry::Job { text, path } => {
            if !request.args.is_empty() {
                return Err(ApiError::bad(
                    "arg",
                    "the zapp's entry point is a job, which takes no arguments",
                ));
            }
            let source = crate::jobs::Programs::Zapp {
                dir: zapp.dir.clone(),
                entry: path.clone(),
            };
            crate::jobs::submit(
                &s,
                &caller,
                text,
                path,
                source,
                request.report_json,
                defer,
                label,
            )
            .await
        }
        ZappEntry::Manifest { manifest, program } => {
            let manifest = manifest_for(
                &s,
                manifest,
                &request.args,
                request.fuel,
                request.memory,
                &request.inputs,
                &request.outputs,
            )?;
            let tenant = caller.name().to_owned();
            let program = program.clone();
            let work_label = label.clone();
            let work = move |s: &Shared| {
                let tracked = Tracked::start(s, "zapp", work_label, tenant);
                let outcome = crate::exec::execute(
                    s,
                    &program,
                    manifest,
                    Box::new(std::io::Cursor::new(stdin)),
                    &request.inputs,
                    &request.outputs,
                );
                tracked.finish(s, outcome?, request.report_json)
            };
            crate::deferred::dispatch(&s, &caller, "zapp", label, 1, defer, Box::new(work)).await
        }
    }
}
