//! TOML manifests, phase two: meaning. A [`RawManifest`] becomes a [`Manifest`]: units are
//! read, defaults filled in, paths joined to the manifest's directory, and every combination
//! the runtime could not honour is refused with the span of the key at fault.
//!
//! Checks run in a fixed order (top level, `[limits]`, `[clock]`, channels, mounts, exports,
//! each table's keys in their documented order) and the first failure is reported. Exports
//! come last because their tar files are checked against the channels' output files.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::document::{
    IntOrStr, RawChannel, RawClock, RawExport, RawLimits, RawManifest, RawMount, RawProgram,
};
use crate::error::{Error, TomlText};
use crate::model::{
    AccessMode, Channel, ChannelName, ChannelSource, Clock, CommitPolicy, ContentHash, Export,
    Limits, Manifest, Mount, MountSource, Program, Quota, StdStream,
};
use crate::rules;
use crate::units::{self, NANOS_PER_SEC};

/// The word that lifts a quota entirely; `canonical_toml` writes it for `u64::MAX`.
pub(crate) const UNLIMITED: &str = "unlimited";

struct Resolver<'a> {
    t: TomlText<'a>,
    /// The manifest's directory, which relative host paths are joined to.
    base: &'a Path,
}

/// `` `memory` in `[limits]` ``, or `` `seed` `` at the top level.
fn key(table: &str, key: &str) -> String {
    if table.is_empty() {
        format!("`{key}`")
    } else {
        format!("`{key}` in `[{table}]`")
    }
}

fn mode_list() -> String {
    AccessMode::ALL
        .iter()
        .map(|(_, s)| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `` `on-success`, `always` or `never` ``.
fn commit_list() -> String {
    let names: Vec<String> = CommitPolicy::ALL
        .iter()
        .map(|(_, s)| format!("`{s}`"))
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// An export already resolved, as later exports' checks need it.
struct SeenExport {
    /// The guest path as written, for messages.
    written: String,
    line: usize,
    tar: PathBuf,
}

pub(crate) fn resolve(t: TomlText<'_>, base: &Path, raw: RawManifest) -> Result<Manifest, Error> {
    Resolver { t, base }.manifest(raw)
}

impl Resolver<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        self.t.error(span, message)
    }

    fn manifest(&self, raw: RawManifest) -> Result<Manifest, Error> {
        let program = self.program(raw.program)?;
        let argv0 = match raw.argv0 {
            Some(a) => {
                rules::check_c_string(a.get_ref())
                    .map_err(|m| self.err(a.span(), format!("`argv0` {m}")))?;
                a.into_inner()
            }
            None => rules::default_argv0(&program.path),
        };
        let mut args = Vec::new();
        for (i, a) in raw.args.unwrap_or_default().into_iter().enumerate() {
            rules::check_c_string(a.get_ref())
                .map_err(|m| self.err(a.span(), format!("`args` item {} {m}", i + 1)))?;
            args.push(a.into_inner());
        }
        let env = self.env(raw.env.unwrap_or_default())?;
        let commit = match &raw.commit {
            None => CommitPolicy::default(),
            Some(c) => CommitPolicy::parse(c.get_ref()).ok_or_else(|| {
                self.err(
                    c.span(),
                    format!(
                        "`commit` must be {}, found `{}`",
                        commit_list(),
                        c.get_ref()
                    ),
                )
            })?,
        };
        let limits = self.limits(raw.limits)?;
        let clock = self.clock(raw.clock)?;
        let mut channels = Vec::new();
        let mut channel_lines = BTreeMap::new();
        for c in raw.channel {
            channels.push(self.channel(c, &mut channel_lines)?);
        }
        rules::complete_std_channels(&mut channels);
        let mut mounts = Vec::new();
        let mut seen = BTreeMap::new();
        for m in raw.mount {
            mounts.push(self.mount(m, &mut seen)?);
        }
        let outputs: Vec<(&Path, &ChannelName, usize)> = rules::output_files(&channels)
            .into_iter()
            // Every output file channel was declared, so it has a line.
            .map(|(p, n)| (p, n, channel_lines.get(n).copied().unwrap_or(0)))
            .collect();
        let mut exports = Vec::new();
        let mut seen = BTreeMap::new();
        for e in raw.export {
            exports.push(self.export(e, &mut seen, &outputs)?);
        }
        Ok(Manifest {
            program,
            argv0,
            args,
            env,
            limits,
            channels,
            mounts,
            seed: raw.seed.unwrap_or(0),
            clock,
            memory_etag: raw.memory_etag.unwrap_or(false),
            commit,
            exports,
        })
    }

    fn program(&self, raw: Option<Spanned<RawProgram>>) -> Result<Program, Error> {
        let Some(raw) = raw else {
            return Err(self.err(
                0..0,
                "missing `program`, expected the program's path, such as `program = \"hello.wasm\"`",
            ));
        };
        let span = raw.span();
        let (path, path_span, hash) = match raw.into_inner() {
            RawProgram::Path(p) => (p, span, None),
            RawProgram::Table(t) => (t.path.get_ref().clone(), t.path.span(), t.hash),
        };
        let path = rules::host_path(self.base, &path)
            .map_err(|m| self.err(path_span, format!("`program` {m}")))?;
        let hash = match hash {
            None => None,
            Some(h) => Some(ContentHash::parse(h.get_ref()).ok_or_else(|| {
                self.err(
                    h.span(),
                    format!(
                        "`hash` in `[program]` must be `blake3:` followed by 64 hex digits, found `{}`",
                        h.get_ref()
                    ),
                )
            })?),
        };
        Ok(Program { path, hash })
    }

    fn env(
        &self,
        raw: BTreeMap<Spanned<String>, Spanned<String>>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let mut env = BTreeMap::new();
        for (name, value) in raw {
            let n = name.get_ref();
            let problem = if n.is_empty() {
                Some("environment variable name is empty".to_string())
            } else if n.contains('=') {
                Some(format!(
                    "environment variable name `{n}` contains `=`, which would split it"
                ))
            } else {
                rules::check_c_string(n)
                    .err()
                    .map(|m| format!("environment variable name `{}` {m}", n.escape_debug()))
            };
            if let Some(m) = problem {
                return Err(self.err(name.span(), m));
            }
            rules::check_c_string(value.get_ref())
                .map_err(|m| self.err(value.span(), format!("environment variable `{n}` {m}")))?;
            env.insert(name.into_inner(), value.into_inner());
        }
        Ok(env)
    }

    /// A size in bytes: an integer or a string with a unit; quotas may also be `"unlimited"`.
    /// `what` names the key in messages.
    fn size(&self, what: &str, v: &Spanned<IntOrStr>, quota: bool) -> Result<u64, Error> {
        match v.get_ref() {
            IntOrStr::Int(n) => Ok(*n),
            IntOrStr::Negative(n) => {
                Err(self.err(v.span(), format!("{what} must not be negative, found {n}")))
            }
            IntOrStr::Str(s) if quota && s == UNLIMITED => Ok(u64::MAX),
            IntOrStr::Str(s) => {
                units::parse_size(s).map_err(|m| self.err(v.span(), format!("{what}: {m}")))
            }
        }
    }

    /// A count of calls: an integer or `"unlimited"`.
    fn count(&self, what: &str, v: &Spanned<IntOrStr>) -> Result<u64, Error> {
        match v.get_ref() {
            IntOrStr::Int(n) => Ok(*n),
            IntOrStr::Str(s) if s == UNLIMITED => Ok(u64::MAX),
            IntOrStr::Negative(n) => {
                Err(self.err(v.span(), format!("{what} must not be negative, found {n}")))
            }
            IntOrStr::Str(s) => Err(self.err(
                v.span(),
                format!("{what} must be a number of calls or \"{UNLIMITED}\", found \"{s}\""),
            )),
        }
    }

    /// A duration: an integer of `int_unit`, or a string with a unit.
    fn duration(
        &self,
        table: &str,
        name: &str,
        v: &Spanned<IntOrStr>,
        int_unit: fn(u64) -> Duration,
    ) -> Result<Duration, Error> {
        let k = key(table, name);
        match v.get_ref() {
            IntOrStr::Int(n) => Ok(int_unit(*n)),
            IntOrStr::Negative(n) => {
                Err(self.err(v.span(), format!("{k} must not be negative, found {n}")))
            }
            IntOrStr::Str(s) => {
                units::parse_duration(s).map_err(|m| self.err(v.span(), format!("{k}: {m}")))
            }
        }
    }

    fn limits(&self, raw: Option<RawLimits>) -> Result<Limits, Error> {
        let mut limits = Limits::default();
        let Some(raw) = raw else {
            return Ok(limits);
        };
        let range = |span: Range<usize>, name: &str, r: Result<(), String>| {
            r.map_err(|m| self.err(span, format!("{} {m}", key("limits", name))))
        };
        if let Some(v) = &raw.memory {
            limits.memory = self.size(&key("limits", "memory"), v, false)?;
            range(v.span(), "memory", rules::check_memory(limits.memory))?;
        }
        if let Some(v) = &raw.fuel {
            limits.fuel = *v.get_ref();
            range(v.span(), "fuel", rules::check_fuel(limits.fuel))?;
        }
        if let Some(v) = &raw.timeout {
            limits.timeout = self.duration("limits", "timeout", v, Duration::from_secs)?;
            range(v.span(), "timeout", rules::check_timeout(limits.timeout))?;
        }
        if let Some(v) = &raw.scratch {
            limits.scratch = self.size(&key("limits", "scratch"), v, false)?;
        }
        if let Some(v) = &raw.open_files {
            limits.open_files = rules::check_open_files(*v.get_ref())
                .map_err(|m| self.err(v.span(), format!("{} {m}", key("limits", "open_files"))))?;
        }
        Ok(limits)
    }

    fn clock(&self, raw: Option<RawClock>) -> Result<Clock, Error> {
        let mut clock = Clock::default();
        let Some(raw) = raw else {
            return Ok(clock);
        };
        if let Some(v) = &raw.start {
            let k = key("clock", "start");
            let ns = match v.get_ref() {
                toml::Value::Integer(secs) => u64::try_from(*secs)
                    .ok()
                    .and_then(|s| s.checked_mul(NANOS_PER_SEC))
                    .ok_or_else(|| {
                        format!(
                            "{k}: {secs} is out of range, expected seconds from 0 to {}",
                            u64::MAX / NANOS_PER_SEC
                        )
                    }),
                toml::Value::Datetime(dt) => {
                    units::datetime_to_unix_nanos(dt).map_err(|m| format!("{k}: {m}"))
                }
                toml::Value::String(s) => units::parse_instant(s).map_err(|m| format!("{k}: {m}")),
                other => Err(format!(
                    "{k}: expected integer seconds since the Unix epoch or a time such as \
                     2024-01-01T00:00:00Z, found {}",
                    crate::document::a_type(other.type_str())
                )),
            };
            clock.start_ns = ns.map_err(|m| self.err(v.span(), m))?;
        }
        if let Some(v) = &raw.step {
            let step = self.duration("clock", "step", v, Duration::from_nanos)?;
            clock.step_ns = u64::try_from(step.as_nanos()).map_err(|_| {
                self.err(
                    v.span(),
                    format!(
                        "{} is too large, expected at most {} ns",
                        key("clock", "step"),
                        u64::MAX
                    ),
                )
            })?;
        }
        Ok(clock)
    }

    fn channel(
        &self,
        raw: Spanned<RawChannel>,
        seen: &mut BTreeMap<ChannelName, usize>,
    ) -> Result<Channel, Error> {
        let header = raw.span();
        let raw = raw.into_inner();
        let name =
            ChannelName::new(raw.name.get_ref()).map_err(|m| self.err(raw.name.span(), m))?;
        let line = self.t.line(raw.name.span().start);
        if let Some(first) = seen.insert(name.clone(), line) {
            return Err(self.err(
                raw.name.span(),
                format!("duplicate channel `{name}` (first declared at line {first})"),
            ));
        }

        // Exactly one source.
        let mut given: Vec<(&str, Range<usize>)> = Vec::new();
        if let Some(p) = &raw.path {
            given.push(("path", p.span()));
        }
        if let Some(s) = &raw.stdio {
            given.push(("stdio", s.span()));
        }
        if let Some(n) = &raw.null {
            if !n.get_ref() {
                return Err(self.err(
                    n.span(),
                    format!("channel `{name}`: `null` can only be `true`; for a real source give `path` or `stdio`"),
                ));
            }
            given.push(("null", n.span()));
        }
        given.sort_by_key(|(_, s)| s.start);
        let one_of = "expected exactly one of `path`, `stdio` or `null = true`";
        let source = match given.as_slice() {
            [] => return Err(self.err(header, format!("channel `{name}`: no source, {one_of}"))),
            [_] => {
                if let Some(p) = &raw.path {
                    ChannelSource::File(
                        rules::host_path(self.base, p.get_ref()).map_err(|m| {
                            self.err(p.span(), format!("channel `{name}`: `path` {m}"))
                        })?,
                    )
                } else if let Some(s) = &raw.stdio {
                    ChannelSource::Stdio(match s.get_ref().as_str() {
                        "stdin" => StdStream::Stdin,
                        "stdout" => StdStream::Stdout,
                        "stderr" => StdStream::Stderr,
                        other => {
                            return Err(self.err(
                                s.span(),
                                format!(
                                    "channel `{name}`: unknown stdio stream `{other}`, expected `stdin`, `stdout` or `stderr`"
                                ),
                            ));
                        }
                    })
                } else {
                    ChannelSource::Null
                }
            }
            [(a, _), (b, span), ..] => {
                return Err(self.err(
                    span.clone(),
                    format!("channel `{name}`: both `{a}` and `{b}` given, {one_of}"),
                ));
            }
        };

        let mode = match (&raw.mode, &source) {
            (Some(m), _) => AccessMode::parse(m.get_ref()).ok_or_else(|| {
                self.err(
                    m.span(),
                    format!(
                        "channel `{name}`: unknown mode `{}`, expected one of {}",
                        m.get_ref(),
                        mode_list()
                    ),
                )
            })?,
            (None, ChannelSource::Stdio(StdStream::Stdin)) => AccessMode::SequentialRead,
            (None, ChannelSource::Stdio(_)) => AccessMode::SequentialWrite,
            (None, _) => {
                return Err(self.err(
                    header,
                    format!(
                        "channel `{name}`: missing `mode`, expected one of {}",
                        mode_list()
                    ),
                ));
            }
        };
        // Without `mode`, the mode came from `stdio`, so point there.
        let mode_span = match (&raw.mode, &raw.stdio) {
            (Some(m), _) => m.span(),
            (None, Some(s)) => s.span(),
            (None, None) => header.clone(),
        };
        if let ChannelSource::Stdio(stream) = source
            && let Some(misfit) = rules::stdio_misfit(stream, mode)
        {
            let m = rules::stdio_misfit_message(&name, stream, mode, misfit);
            return Err(self.err(mode_span, m));
        }
        if let Some(role) = rules::std_role_misfit(&name, mode) {
            let verb = if role == StdStream::Stdin {
                "read"
            } else {
                "write"
            };
            // When the mode was not written, say where it came from.
            let origin = match (&raw.mode, &raw.stdio) {
                (None, Some(s)) => format!(" (the default for `stdio = \"{}\"`)", s.get_ref()),
                _ => String::new(),
            };
            return Err(self.err(
                mode_span,
                format!(
                    "{}, but mode `{}`{origin} cannot {verb}",
                    rules::std_role_message(role),
                    mode.as_str()
                ),
            ));
        }

        let mut quota = Quota::default();
        for (k, v, field) in [
            ("reads", &raw.reads, &mut quota.reads),
            ("read_bytes", &raw.read_bytes, &mut quota.read_bytes),
            ("writes", &raw.writes, &mut quota.writes),
            ("write_bytes", &raw.write_bytes, &mut quota.write_bytes),
        ] {
            let Some(v) = v else { continue };
            if let Some(m) = rules::quota_problem(&name, k, mode) {
                return Err(self.err(v.span(), m));
            }
            let what = format!("`{k}` of channel `{name}`");
            *field = if k.ends_with("_bytes") {
                self.size(&what, v, true)?
            } else {
                self.count(&what, v)?
            };
        }
        let etag = match &raw.etag {
            None => None,
            Some(e) => {
                if let Some(m) = rules::etag_problem(&name, &source, mode) {
                    return Err(self.err(e.span(), m));
                }
                Some(rules::parse_etag(e.get_ref()).ok_or_else(|| {
                    self.err(
                        e.span(),
                        format!(
                            "channel `{name}`: `etag` must be 64 hex digits, optionally after `blake3:`, found `{}`",
                            e.get_ref()
                        ),
                    )
                })?)
            }
        };
        Ok(Channel {
            name,
            source,
            mode,
            quota,
            etag,
        })
    }

    /// One `[[mount]]`; `seen` holds, for each guest path (absolute) mounted so far, the
    /// path as first written, its line, and whether every mount there is an image.
    fn mount(
        &self,
        raw: Spanned<RawMount>,
        seen: &mut BTreeMap<String, (String, usize, bool)>,
    ) -> Result<Mount, Error> {
        let header = raw.span();
        let raw = raw.into_inner();
        let guest = raw.path.get_ref().clone();
        rules::check_mount_guest(&guest).map_err(|m| self.err(raw.path.span(), m))?;
        let abs = Mount::normalise_guest(&guest);
        let line = self.t.line(raw.path.span().start);
        let image = raw.image.is_some() && raw.dir.is_none();
        if let Some((first, first_line, all_images)) = seen.get(&abs) {
            if !rules::may_share_mount_path(*all_images, image) {
                let same = if *first == guest && guest == abs {
                    String::new()
                } else {
                    format!("the same directory as `{first}`, ")
                };
                return Err(self.err(
                    raw.path.span(),
                    format!(
                        "duplicate mount `{guest}` ({same}first declared at line {first_line})"
                    ),
                ));
            }
        } else {
            seen.insert(abs, (guest.clone(), line, image));
        }

        let one_of = "expected exactly one of `image` or `dir`";
        let host = |p: &Spanned<String>, k: &str| {
            rules::host_path(self.base, p.get_ref())
                .map_err(|m| self.err(p.span(), format!("mount `{guest}`: `{k}` {m}")))
        };
        let source = match (&raw.image, &raw.dir) {
            (Some(image), None) => {
                if let Some(w) = &raw.writable {
                    return Err(self.err(
                        w.span(),
                        format!("mount `{guest}`: `writable` applies to `dir` mounts; tar images are read-only"),
                    ));
                }
                MountSource::Image(host(image, "image")?)
            }
            (None, Some(dir)) => MountSource::Dir {
                path: host(dir, "dir")?,
                writable: raw.writable.as_ref().is_some_and(|w| *w.get_ref()),
            },
            (None, None) => {
                return Err(self.err(header, format!("mount `{guest}`: no source, {one_of}")));
            }
            (Some(image), Some(dir)) => {
                let later = if image.span().start > dir.span().start {
                    image.span()
                } else {
                    dir.span()
                };
                return Err(self.err(
                    later,
                    format!("mount `{guest}`: both `image` and `dir` given, {one_of}"),
                ));
            }
        };
        Ok(Mount { guest, source })
    }

    fn export(
        &self,
        raw: Spanned<RawExport>,
        seen: &mut BTreeMap<String, SeenExport>,
        outputs: &[(&Path, &ChannelName, usize)],
    ) -> Result<Export, Error> {
        let header = raw.span();
        let raw = raw.into_inner();
        let written = raw.path.get_ref().clone();
        rules::check_export_guest(&written).map_err(|m| self.err(raw.path.span(), m))?;
        let guest = Mount::normalise_guest(&written);
        let line = self.t.line(raw.path.span().start);
        if let Some(first) = seen.get(&guest) {
            let same = if first.written == written && written == guest {
                String::new()
            } else {
                format!("the same directory as `{}`, ", first.written)
            };
            return Err(self.err(
                raw.path.span(),
                format!(
                    "duplicate export `{written}` ({same}first declared at line {})",
                    first.line
                ),
            ));
        }

        let Some(raw_tar) = &raw.tar else {
            return Err(self.err(
                header,
                format!(
                    "export `{written}`: missing `tar`, expected the host file to write the \
                     directory to, such as `tar = \"out.tar\"`"
                ),
            ));
        };
        let tar = rules::host_path(self.base, raw_tar.get_ref())
            .map_err(|m| self.err(raw_tar.span(), format!("export `{written}`: `tar` {m}")))?;
        // Two writers of one file on commit: whichever renamed last would win.
        if let Some(other) = seen.values().find(|e| rules::same_host_file(&e.tar, &tar)) {
            return Err(self.err(
                raw_tar.span(),
                rules::tar_clash(
                    &written,
                    &format!(
                        "the `tar` of export `{}` (line {})",
                        other.written, other.line
                    ),
                ),
            ));
        }
        if let Some((_, name, line)) = outputs
            .iter()
            .find(|(p, _, _)| rules::same_host_file(p, &tar))
        {
            return Err(self.err(
                raw_tar.span(),
                rules::tar_clash(
                    &written,
                    &format!("channel `{name}` (line {line}), which the guest writes"),
                ),
            ));
        }
        seen.insert(
            guest.clone(),
            SeenExport {
                written,
                line,
                tar: tar.clone(),
            },
        );
        Ok(Export { guest, path: tar })
    }
}
