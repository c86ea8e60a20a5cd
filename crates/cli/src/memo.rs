//! Runs of `zvm run` and `zvm replay` beyond a single plain execution: the result cache,
//! the second run of `--verify`, the comparison of two runs.
//!
//! Every path here stages the run's outputs in a transaction the caller owns, so that
//! something can happen between "the run finished" and "its outputs land": storing them in
//! the result cache, comparing with a second run, or throwing them away (replay).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use zvm_channel::{Endpoint, SharedBuffer};
use zvm_manifest::{ChannelSource, Manifest, StdStream};
use zvm_results::{OutputSource, ResultCache, Stored};
use zvm_vm::memo::{Fingerprint, fingerprint};
use zvm_vm::snapshot::Snapshot;
use zvm_vm::{CacheStatus, Program, Report, RunIo, Runtime, State, Transaction};

/// Largest standard output (and, separately, standard error) kept for the result cache; a
/// run that prints more still runs and prints, but is not stored.
const MAX_CAPTURED_STREAM: usize = 16 << 20;

/// Opens the result cache in the default cache directory, bounded to `size`.
pub fn open_cache(size: &str) -> Result<Option<ResultCache>> {
    let max = zvm_manifest::parse_size(size)
        .map_err(|e| anyhow::anyhow!("--result-cache-size `{size}`: {e}"))?;
    let Some(dir) = Runtime::default_cache_dir() else {
        return Ok(None);
    };
    let dir = dir.join("results");
    match ResultCache::open(&dir, max) {
        Ok(cache) => Ok(Some(cache)),
        Err(e) => {
            // A cache is an optimisation: without one, the run still runs.
            tracing::warn!("result cache `{}` unavailable: {e}", dir.display());
            Ok(None)
        }
    }
}

/// Output names in a cache entry.
fn channel_key(name: &str) -> String {
    format!("channel:{name}")
}
fn export_key(guest: &str) -> String {
    format!("export:{guest}")
}
fn stream_key(stream: StdStream) -> String {
    format!("stream:{}", stream.name())
}

/// What a [`Tee`] kept: `None` once it outgrew [`MAX_CAPTURED_STREAM`].
type Kept = Arc<Mutex<Option<Vec<u8>>>>;

/// A writer to a host stream that also keeps what passes, up to a bound.
struct Tee {
    stream: StdStream,
    kept: Kept,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.stream {
            StdStream::Stderr => std::io::stderr().lock().write_all(buf)?,
            _ => std::io::stdout().lock().write_all(buf)?,
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = kept.as_mut() {
            if v.len() + buf.len() > MAX_CAPTURED_STREAM {
                *kept = None;
            } else {
                v.extend_from_slice(buf);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.stream {
            StdStream::Stderr => std::io::stderr().flush(),
            _ => std::io::stdout().flush(),
        }
    }
}

/// The host streams a manifest's standard output channels go to.
fn host_streams(manifest: &Manifest) -> Vec<(String, StdStream)> {
    manifest
        .channels
        .iter()
        .filter_map(|c| match c.source {
            ChannelSource::Stdio(s @ (StdStream::Stdout | StdStream::Stderr)) => {
                Some((c.name.to_string(), s))
            }
            _ => None,
        })
        .collect()
}

/// One execution through the result cache: served from it when an earlier successful run had
/// the same fingerprint, else executed and (if it succeeds and can be) stored.
pub fn run_memoized(
    runtime: &Runtime,
    program: &Program,
    snapshot: Option<&Snapshot>,
    manifest: &Manifest,
    cache: Option<&ResultCache>,
) -> Result<Report> {
    let started = Instant::now();
    let fp = fingerprint(manifest, &program.hash());
    let cache = match (cache, &fp.uncacheable) {
        (None, _) => None,
        (Some(_), Some(reason)) => {
            let report = execute(runtime, program, snapshot, manifest, &fp, None)?;
            return Ok(with_cache(
                report,
                &fp,
                CacheStatus::Bypassed {
                    reason: reason.clone(),
                },
            ));
        }
        (Some(c), None) => Some(c),
    };
    if let Some(c) = cache {
        match serve(c, runtime, program, manifest, &fp) {
            Ok(Some(mut report)) => {
                report.wall_time_us = started.elapsed().as_micros() as u64;
                return Ok(with_cache(report, &fp, CacheStatus::Hit));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("result cache: {e:#}"),
        }
    }
    let report = execute(runtime, program, snapshot, manifest, &fp, cache)?;
    Ok(report)
}

fn with_cache(mut report: Report, fp: &Fingerprint, status: CacheStatus) -> Report {
    report.replay = Some(fp.replay.clone());
    report.cache = status;
    report
}

/// Runs `program` for real, its outputs staged until the end; stores the result in `cache`
/// when given (the run is cacheable) and it succeeded.
fn execute(
    runtime: &Runtime,
    program: &Program,
    snapshot: Option<&Snapshot>,
    manifest: &Manifest,
    fp: &Fingerprint,
    cache: Option<&ResultCache>,
) -> Result<Report> {
    let attempt = || {
        let txn = Arc::new(runtime.transaction());
        let mut io = RunIo::default().in_transaction(txn.clone());
        let mut kept = Vec::new();
        if cache.is_some() {
            for (name, stream) in host_streams(manifest) {
                let buffer: Kept = Arc::new(Mutex::new(Some(Vec::new())));
                io = io.bind(
                    &name,
                    Endpoint::Writer(Box::new(Tee {
                        stream,
                        kept: buffer.clone(),
                    })),
                );
                kept.push((stream, buffer));
            }
        }
        (txn, io, kept)
    };
    let (mut txn, io, mut kept) = attempt();
    let mut report = match snapshot {
        Some(s) => match s.run(manifest, io) {
            // The snapshot's world differs from this run's before the guest read or wrote
            // anything: start the program plainly instead.
            Err(e @ zvm_vm::Error::SnapshotDiverged { .. }) => {
                eprintln!("zvm: note: {e}; starting the program without it");
                txn.abort();
                let io;
                (txn, io, kept) = attempt();
                program.run(manifest, io)?
            }
            other => other?,
        },
        None => program.run(manifest, io)?,
    };
    if let Some(name) = fp.changed_input() {
        mark_not_committed(
            &mut report,
            State::InputChanged {
                channel: name.to_string(),
            },
        );
    }
    let mut status = if cache.is_some() {
        CacheStatus::Miss { stored: false }
    } else {
        CacheStatus::Off
    };
    if report.committed {
        if let Some(cache) = cache
            && report.state.is_ok()
        {
            match store(cache, manifest, fp, &report, &txn, &kept) {
                Ok(stored) => status = CacheStatus::Miss { stored },
                Err(e) => tracing::warn!("result cache: {e:#}"),
            }
        }
        txn.commit()?;
    } else {
        txn.abort();
    }
    Ok(with_cache(report, fp, status))
}

/// Makes `report` say that the run ended in `state` and nothing landed.
fn mark_not_committed(report: &mut Report, state: State) {
    report.state_text = state.to_string();
    report.state = state;
    report.committed = false;
    for c in &mut report.channels {
        c.committed = false;
    }
    report.exports.clear();
}

/// Stores a successful run's outputs (still staged in `txn`) under its key.
fn store(
    cache: &ResultCache,
    manifest: &Manifest,
    fp: &Fingerprint,
    report: &Report,
    txn: &Transaction,
    kept: &[(StdStream, Kept)],
) -> Result<bool> {
    // Standard input is not part of the key: a run that read it cannot be replayed from it.
    if report
        .channels
        .iter()
        .any(|c| c.name == "stdin" && c.reads > 0)
        && matches!(
            manifest.channel("stdin").map(|c| &c.source),
            Some(ChannelSource::Stdio(_))
        )
    {
        return Ok(false);
    }
    let staged = txn.staged_files();
    let staged_for = |dest: &std::path::Path| {
        staged
            .iter()
            .find(|(d, _)| d == dest)
            .map(|(_, temp)| temp.clone())
    };
    let mut files = Vec::new();
    for c in &manifest.channels {
        if let ChannelSource::File(path) = &c.source
            && c.mode.can_write()
        {
            let temp = staged_for(path).context("an output was not staged")?;
            files.push((channel_key(c.name.as_str()), temp));
        }
    }
    for e in &manifest.exports {
        let temp = staged_for(&e.path).context("an export was not staged")?;
        files.push((export_key(&e.guest), temp));
    }
    let mut streams = Vec::new();
    for (stream, buffer) in kept {
        let kept = buffer.lock().unwrap_or_else(|p| p.into_inner());
        match kept.as_ref() {
            Some(bytes) => streams.push((stream_key(*stream), bytes.clone())),
            None => return Ok(false),
        }
    }
    let mut outputs: Vec<(String, OutputSource<'_>)> = files
        .iter()
        .map(|(k, p)| (k.clone(), OutputSource::Path(p)))
        .collect();
    outputs.extend(
        streams
            .iter()
            .map(|(k, b)| (k.clone(), OutputSource::Bytes(b))),
    );
    let mut record = report.clone();
    record.replay = None;
    record.cache = CacheStatus::Off;
    let stored = cache.put(&fp.key, record.to_json().as_bytes(), &outputs)?;
    Ok(matches!(stored, Stored::Written { .. }))
}

/// Serves a run from the cache, if it holds the result: the stored outputs land through a
/// transaction like a run's own, and the stored streams are written to the host's.
fn serve(
    cache: &ResultCache,
    runtime: &Runtime,
    program: &Program,
    manifest: &Manifest,
    fp: &Fingerprint,
) -> Result<Option<Report>> {
    let Some(hit) = cache.get(&fp.key)? else {
        return Ok(None);
    };
    let Ok(mut report) = serde_json::from_slice::<Report>(&hit.record) else {
        return Ok(None);
    };
    let find = |name: &str| hit.outputs.iter().find(|o| o.name == name);
    let mut landing = Vec::new();
    for c in &manifest.channels {
        if let ChannelSource::File(path) = &c.source
            && c.mode.can_write()
        {
            let Some(o) = find(&channel_key(c.name.as_str())) else {
                return Ok(None);
            };
            landing.push((path.clone(), o));
        }
    }
    for e in &manifest.exports {
        let Some(o) = find(&export_key(&e.guest)) else {
            return Ok(None);
        };
        landing.push((e.path.clone(), o));
    }
    let mut streams = Vec::new();
    for (_, stream) in host_streams(manifest) {
        let Some(o) = find(&stream_key(stream)) else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(o.size as usize);
        (&o.file).read_to_end(&mut bytes)?;
        streams.push((stream, bytes));
    }
    let txn = runtime.transaction();
    for (dest, o) in landing {
        let staged = txn.stage_file(&dest, false)?;
        std::io::copy(&mut &o.file, &mut &staged.file)
            .with_context(|| format!("copying a cached output to `{}`", dest.display()))?;
    }
    txn.commit()?;
    for (stream, bytes) in streams {
        let _ = match stream {
            StdStream::Stderr => std::io::stderr().write_all(&bytes),
            _ => std::io::stdout().write_all(&bytes),
        };
    }
    report.program = program.path().display().to_string();
    report.validation = program.validation();
    Ok(Some(report))
}

/// Standard input for runs that must see the same bytes twice: read once, in full (empty
/// when it is a terminal, which cannot be read twice or to its end).
pub fn stdin_once(manifest: &Manifest) -> Result<Option<Arc<Vec<u8>>>> {
    if !matches!(
        manifest.channel("stdin").map(|c| &c.source),
        Some(ChannelSource::Stdio(StdStream::Stdin))
    ) {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
    }
    Ok(Some(Arc::new(bytes)))
}

/// A run whose outputs are staged and whose host streams are captured, not yet shown.
pub struct Captured {
    pub report: Report,
    pub txn: Arc<Transaction>,
    streams: Vec<(StdStream, SharedBuffer)>,
}

impl Captured {
    /// Lands the run: commits its outputs (under its commit policy) and shows its streams.
    pub fn land(self) -> Result<Report> {
        if self.report.committed {
            self.txn.commit()?;
        } else {
            self.txn.abort();
        }
        for (stream, buffer) in &self.streams {
            let _ = match stream {
                StdStream::Stderr => std::io::stderr().write_all(&buffer.contents()),
                _ => std::io::stdout().write_all(&buffer.contents()),
            };
        }
        Ok(self.report)
    }
}

/// Runs with outputs staged in a new transaction, host streams captured, and standard input
/// (when it is the host's) replaced by `stdin`.
pub fn run_captured(
    runtime: &Runtime,
    program: &Program,
    manifest: &Manifest,
    stdin: Option<Arc<Vec<u8>>>,
) -> Result<Captured> {
    let fp = fingerprint(manifest, &program.hash());
    let txn = Arc::new(runtime.transaction());
    let mut io = RunIo::default().in_transaction(txn.clone());
    if let Some(bytes) = stdin {
        io = io.bind(
            "stdin",
            Endpoint::Reader(Box::new(std::io::Cursor::new(ArcBytes(bytes)))),
        );
    }
    let mut streams = Vec::new();
    for (name, stream) in host_streams(manifest) {
        let buffer = SharedBuffer::new();
        io = io.bind(&name, buffer.endpoint());
        streams.push((stream, buffer));
    }
    let mut report = program.run(manifest, io)?;
    if let Some(name) = fp.changed_input() {
        mark_not_committed(
            &mut report,
            State::InputChanged {
                channel: name.to_string(),
            },
        );
    }
    report.replay = Some(fp.replay);
    Ok(Captured {
        report,
        txn,
        streams,
    })
}

/// Shared bytes as a slice, for a cursor.
struct ArcBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn short(etag: &str) -> &str {
    &etag[..etag.len().min(16)]
}

/// The first way two runs of the same VM differ, if they differ: state, exit code, fuel,
/// a channel's etag, an export's etag, the memory etag.
pub fn difference(a: &Report, b: &Report) -> Option<String> {
    if a.state != b.state {
        return Some(format!("state `{}` vs `{}`", a.state_text, b.state_text));
    }
    if a.exit_code != b.exit_code {
        return Some(format!("exit code {:?} vs {:?}", a.exit_code, b.exit_code));
    }
    if a.fuel_used != b.fuel_used {
        return Some(format!("fuel used {} vs {}", a.fuel_used, b.fuel_used));
    }
    for ca in &a.channels {
        match b.channels.iter().find(|cb| cb.name == ca.name) {
            None => return Some(format!("channel `{}` is missing", ca.name)),
            Some(cb) if cb.etag != ca.etag => {
                return Some(format!(
                    "channel `{}` etag {}… vs {}…",
                    ca.name,
                    short(&ca.etag),
                    short(&cb.etag)
                ));
            }
            Some(_) => {}
        }
    }
    for ea in &a.exports {
        match b.exports.iter().find(|eb| eb.guest == ea.guest) {
            None => return Some(format!("export `{}` is missing", ea.guest)),
            Some(eb) if eb.etag != ea.etag => {
                return Some(format!(
                    "export `{}` etag {}… vs {}…",
                    ea.guest,
                    short(&ea.etag),
                    short(&eb.etag)
                ));
            }
            Some(_) => {}
        }
    }
    if a.memory_etag != b.memory_etag {
        return Some("memory etag differs".into());
    }
    None
}
