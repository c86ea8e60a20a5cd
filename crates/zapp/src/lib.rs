//! Zapps: a zvm application in one file, as ZeroVM's were. A `.zapp` is a gzip tar holding
//! `zapp.toml` (the app's name, version, description, help for its arguments and its entry
//! point), the entry point itself (a VM manifest or a job file) and the programs and tar
//! images the entry point names. This crate is the format: what a zapp must be and how it is
//! read, shared by the `zvm` binary (`zvm pack`, `zvm inspect`, `zvm run app.zapp`, which also
//! unpacks into the user's cache) and by `zvm serve` (zapps stored as objects, posted as
//! request bodies, or deployed as endpoints).
//!
//! A guided tour:
//! - [`ZappToml`] is `zapp.toml`, parsed (serde, unknown keys refused, `version = 1` first)
//!   and checked; errors point at `file:line:column`.
//! - [`references`] finds the files an entry point needs from the zapp: the programs and
//!   images of a VM manifest or of every group of a job. Everything else a manifest names
//!   (channels, directories, exports, a job's wildcards) belongs to the caller, who resolves
//!   it: the CLI against its working directory, the server against objects.
//! - [`read`] (a file) and [`read_from`] (any reader) read a zapp with every check a hostile
//!   file needs (paths that stay inside, regular files only, bounded counts and sizes, a gzip
//!   stream that ends where it should), optionally unpacking it; `zvm inspect` reads without
//!   unpacking.
//!
//! Errors are `anyhow` errors with context, as they were when this code lived in the CLI:
//! every message is shown to a person as it is, and neither caller branches on the kind.
//! The format is documented for users in `docs/zapps.md`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use toml::Spanned;
use zvm_manifest::{Manifest, MountSource};

/// The format version of `zapp.toml` this zvm reads and writes.
pub const FORMAT_VERSION: i64 = 1;

/// The name of the description inside every zapp, and the first entry of its tar.
pub const ZAPP_TOML: &str = "zapp.toml";

/// Longest app name or version: both end up in file names (`<name>-<version>.zapp`), and
/// nothing that identifies an app needs more.
pub const MAX_NAME_LEN: usize = 64;

/// Largest `zapp.toml` or entry point (both are read into memory and parsed): a thousand
/// times what a long manifest or job takes.
pub const MAX_TEXT_FILE: u64 = 1 << 20;

/// Most files in one zapp: a zapp carries a program and its files, not a file system; the
/// bound keeps a hostile tar from making millions of files in the cache.
pub const MAX_FILES: usize = 100_000;

/// Most bytes a zapp may unpack to: a gzip stream can expand a thousandfold, and this bound
/// stops such a bomb. 4 GiB is more than a wasm32 guest can address, so no honest zapp of
/// programs and images needs more.
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;

/// `zapp.toml`, parsed and checked.
#[derive(Debug, Clone)]
pub struct ZappToml {
    pub app: App,
    pub entry: Entry,
    /// Extra files to pack: glob patterns relative to the project directory.
    pub files: Vec<String>,
    /// Help for the arguments given after `zvm run app.zapp --`, in order.
    pub args: Vec<ArgHelp>,
}

/// What identifies an app.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub version: String,
    pub description: String,
}

/// Help for one argument.
#[derive(Debug, Clone)]
pub struct ArgHelp {
    pub name: String,
    pub help: String,
}

/// The entry point: the file inside the zapp that `zvm run` starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// A path inside the zapp.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A VM manifest (TOML, or a legacy ZeroVM manifest), run as `zvm run` runs one.
    Manifest,
    /// A job file (TOML, JSON, or a ZeroCloud system map), run as `zvm job` runs one.
    Job,
}

impl EntryKind {
    /// The key of `zapp.toml` that names the entry point, and its kind in `zvm inspect`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Manifest => "manifest",
            EntryKind::Job => "job",
        }
    }
}

/// `zapp.toml` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZapp {
    version: Spanned<i64>,
    manifest: Option<Spanned<String>>,
    job: Option<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    app: RawApp,
    #[serde(default)]
    arg: Vec<RawArg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: Spanned<String>,
    version: Spanned<String>,
    description: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArg {
    name: Spanned<String>,
    help: String,
}

impl ZappToml {
    /// Parses and checks the text of a `zapp.toml`; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<ZappToml> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let err = |span: Option<std::ops::Range<usize>>, msg: &str| match span {
            Some(span) => {
                let (line, col) = position(text, span.start);
                anyhow::anyhow!("{origin}:{line}:{col}: {msg}")
            }
            None => anyhow::anyhow!("{origin}: {msg}"),
        };
        // The version comes first, so that a reader of any version can tell which it is.
        let first = text
            .lines()
            .map(str::trim)
            .enumerate()
            .find(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        match first {
            Some((_, l))
                if l.strip_prefix("version")
                    .is_some_and(|r| r.trim_start().starts_with('=')) => {}
            Some((i, _)) => bail!(
                "{origin}:{}:1: `version = {FORMAT_VERSION}` must be the first key",
                i + 1
            ),
            None => bail!("{origin}: empty, expected `version = {FORMAT_VERSION}` and an `[app]`"),
        }
        let raw: RawZapp =
            toml::from_str(text).map_err(|e| err(e.span(), e.message().trim_end()))?;
        if *raw.version.get_ref() != FORMAT_VERSION {
            return Err(err(
                Some(raw.version.span()),
                &format!(
                    "`version` is {}, this zvm reads version {FORMAT_VERSION}",
                    raw.version.get_ref()
                ),
            ));
        }
        let entry = match (raw.manifest, raw.job) {
            (Some(m), None) => (EntryKind::Manifest, m),
            (None, Some(j)) => (EntryKind::Job, j),
            (Some(_), Some(j)) => {
                return Err(err(
                    Some(j.span()),
                    "both `manifest` and `job` given, expected exactly one entry point",
                ));
            }
            (None, None) => {
                return Err(err(
                    None,
                    "no entry point: expected `manifest = \"<file>\"` (a VM manifest) or \
                     `job = \"<file>\"` (a job file)",
                ));
            }
        };
        let (kind, path) = entry;
        check_zapp_path(path.get_ref())
            .and_then(|()| {
                if path.get_ref() == ZAPP_TOML {
                    Err(format!("is `{ZAPP_TOML}` itself"))
                } else {
                    Ok(())
                }
            })
            .map_err(|m| {
                err(
                    Some(path.span()),
                    &format!("`{}` `{}` {m}", kind.as_str(), path.get_ref()),
                )
            })?;
        for (key, value, extra) in [
            ("name", &raw.app.name, ""),
            ("version", &raw.app.version, ".+"),
        ] {
            check_name(value.get_ref(), key == "name", extra).map_err(|m| {
                err(
                    Some(value.span()),
                    &format!("`app.{key}` `{}` {m}", value.get_ref().escape_debug()),
                )
            })?;
        }
        if raw.app.description.get_ref().trim().is_empty() {
            return Err(err(
                Some(raw.app.description.span()),
                "`app.description` is empty, expected a sentence saying what the app does",
            ));
        }
        let mut files = Vec::new();
        for f in raw.files {
            check_pattern(f.get_ref()).map_err(|m| {
                err(
                    Some(f.span()),
                    &format!("`files` pattern `{}` {m}", f.get_ref()),
                )
            })?;
            files.push(f.into_inner());
        }
        let mut args = Vec::new();
        for a in raw.arg {
            if a.name.get_ref().trim().is_empty() {
                return Err(err(Some(a.name.span()), "`arg.name` is empty"));
            }
            args.push(ArgHelp {
                name: a.name.into_inner(),
                help: a.help,
            });
        }
        Ok(ZappToml {
            app: App {
                name: raw.app.name.into_inner(),
                version: raw.app.version.into_inner(),
                description: raw.app.description.into_inner(),
            },
            entry: Entry {
                kind,
                path: path.into_inner(),
            },
            files,
            args,
        })
    }
}

/// Line and column (both from 1) of byte `at` in `text`.
fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Checks an app name (the rule of `app.name`).
pub fn check_app_name(name: &str) -> Result<(), String> {
    check_name(name, true, "")
}

/// An app name (letters, digits, `_` and `-`, starting with a letter: it becomes a file name
/// and, in the Rust template, a crate name) or version (the same, plus `extra`, starting
/// with a letter or digit).
fn check_name(s: &str, name: bool, extra: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} bytes long"));
    }
    let first_ok = if name {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
    } else {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
    };
    let ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(c));
    if !first_ok || !ok {
        return Err(format!(
            "must be letters, digits, `_`, `-`{}, starting with a letter{}",
            extra
                .chars()
                .map(|c| format!(", `{c}`"))
                .collect::<String>(),
            if name { "" } else { " or digit" }
        ));
    }
    Ok(())
}

/// Checks a path inside a zapp as written in `zapp.toml`: relative, `/`-separated, without
/// empty, `.` or `..` parts.
pub fn check_zapp_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("is empty, expected a path inside the zapp".into());
    }
    if p.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if p.starts_with('/') {
        return Err("is absolute, expected a path relative to the zapp's top".into());
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("has an empty, `.` or `..` part, expected a plain relative path".into());
    }
    Ok(())
}

/// Checks a `files` glob pattern: a zapp path whose parts may hold `*` and `?`, or be `**`.
fn check_pattern(p: &str) -> Result<(), String> {
    check_zapp_path(p)?;
    if p.split('/').any(|c| c.contains("**") && c != "**") {
        return Err("has `**` inside a name; `**` must be a whole part (`a/**/b`)".into());
    }
    Ok(())
}

/// `written` (a path from the entry point, relative to its directory `dir` inside the zapp)
/// as a path from the zapp's top, `..` resolved; an error if it is absolute or leaves the
/// zapp.
pub fn inside(dir: &str, written: &str) -> Result<String, String> {
    if written.starts_with('/') {
        return Err("is absolute, but a zapp's programs and images must be inside it".into());
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in written.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("leads out of the zapp".into());
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("names the zapp's top directory, not a file".into());
    }
    Ok(parts.join("/"))
}

/// The directory part of a zapp path (`` for a file at the top).
pub fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// What an entry point needs from its zapp.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// The path from the zapp's top.
    pub path: String,
    /// What it is, for messages: "program", "image", "program of group `map`"...
    pub what: String,
}

/// The programs and images the entry point (whose text is `text`) names, as paths inside the
/// zapp. A VM manifest is parsed in full, so its errors show here; a job file only as far as
/// finding its groups' programs and images, since resolving it matches its wildcards in the
/// directory it will run in.
pub fn references(entry: &Entry, text: &str) -> Result<Vec<Reference>> {
    let dir = dir_of(&entry.path);
    let written = match entry.kind {
        EntryKind::Manifest => {
            let m = parse_manifest(&entry.path, text)?;
            let mut v = vec![(path_text(&m.program.path)?, "program".to_string())];
            for mount in &m.mounts {
                if let MountSource::Image(p) = &mount.source {
                    v.push((path_text(p)?, format!("image mounted at `{}`", mount.guest)));
                }
            }
            v
        }
        EntryKind::Job => job_references(&entry.path, text)?,
    };
    let mut refs = Vec::new();
    for (w, what) in written {
        let path = inside(dir, &w)
            .map_err(|m| anyhow::anyhow!("entry point `{}`: {what} `{w}` {m}", entry.path))?;
        refs.push(Reference { path, what });
    }
    refs.sort();
    refs.dedup_by(|a, b| a.path == b.path);
    Ok(refs)
}

pub fn path_text(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_string)
        .with_context(|| format!("`{}` is not UTF-8", p.display()))
}

/// Parses a VM manifest of a zapp with its relative paths left as written: the caller
/// decides what they are relative to.
pub fn parse_manifest(entry: &str, text: &str) -> Result<Manifest> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // The file name alone as the origin: messages name the file, and relative paths stay
    // relative (the manifest crate joins them to the origin's directory, here none).
    let origin = Path::new(entry.rsplit('/').next().unwrap_or(entry));
    let m = if looks_legacy(text) {
        zvm_manifest::parse_legacy(text, origin)
    } else {
        zvm_manifest::parse_toml(text, origin)
    };
    m.with_context(|| format!("entry point `{entry}`"))
}

/// Whether a manifest is a legacy ZeroVM one: its first line that is neither blank nor a
/// comment is `Version = <number>` (the rule `zvm_manifest::parse_file` follows).
fn looks_legacy(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.strip_prefix("Version"))
        .and_then(|r| r.trim_start().strip_prefix('='))
        .is_some_and(|r| r.trim_start().starts_with(|c: char| c.is_ascii_digit()))
}

/// Whether a job file is JSON (a native JSON job or a ZeroCloud system map) rather than
/// TOML, by the rule `zvm_manifest::parse_job_file` follows.
pub fn job_is_json(path: &str, text: &str) -> bool {
    if path.ends_with(".toml") {
        return false;
    }
    if path.ends_with(".json") {
        return true;
    }
    let rest = text.trim_start();
    rest.starts_with('{')
        || rest
            .strip_prefix('[')
            .is_some_and(|r| r.trim_start().starts_with(['{', ']']))
}

/// The programs and images a job file names, as written, without resolving the job.
fn job_references(entry: &str, text: &str) -> Result<Vec<(String, String)>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: serde_json::Value = if job_is_json(entry, text) {
        serde_json::from_str(text).with_context(|| format!("entry point `{entry}`"))?
    } else {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| position(text, s.start));
            match at {
                Some((l, c)) => anyhow::anyhow!("{entry}:{l}:{c}: {}", e.message().trim_end()),
                None => anyhow::anyhow!("{entry}: {}", e.message().trim_end()),
            }
        })?;
        serde_json::to_value(table).context("reading the job")?
    };
    let mut v = Vec::new();
    let name_of = |g: &serde_json::Value, i: usize| {
        g.get("name")
            .and_then(|n| n.as_str())
            .map_or_else(|| format!("#{}", i + 1), str::to_string)
    };
    let file_url = |s: &str| s.strip_prefix("file://").unwrap_or(s).to_string();
    match &doc {
        // A ZeroCloud system map: nodes with `exec.path` and devices.
        serde_json::Value::Array(nodes) => {
            for (i, node) in nodes.iter().enumerate() {
                let name = name_of(node, i);
                if let Some(p) = node.pointer("/exec/path").and_then(|p| p.as_str()) {
                    v.push((file_url(p), format!("program of node `{name}`")));
                }
                let devices = node.get("devices").or_else(|| node.get("file_list"));
                for d in devices.and_then(|d| d.as_array()).into_iter().flatten() {
                    let dev = d
                        .get("name")
                        .or_else(|| d.get("device"))
                        .and_then(|n| n.as_str())
                        .unwrap_or("");
                    if dev.strip_prefix("/dev/").unwrap_or(dev) == "image"
                        && let Some(p) = d.get("path").and_then(|p| p.as_str())
                    {
                        v.push((file_url(p), format!("image of node `{name}`")));
                    }
                }
            }
        }
        // The native format: `[[group]]` tables, each a VM manifest's keys.
        doc => {
            let groups = doc.get("group").and_then(|g| g.as_array());
            for (i, g) in groups.into_iter().flatten().enumerate() {
                let name = name_of(g, i);
                let program = g.get("program").and_then(|p| {
                    p.as_str()
                        .or_else(|| p.get("path").and_then(|p| p.as_str()))
                });
                if let Some(p) = program {
                    v.push((p.to_string(), format!("program of group `{name}`")));
                }
                let mounts = g.get("mount").and_then(|m| m.as_array());
                for m in mounts.into_iter().flatten() {
                    if let Some(p) = m.get("image").and_then(|p| p.as_str()) {
                        v.push((p.to_string(), format!("image of group `{name}`")));
                    }
                }
            }
        }
    }
    Ok(v)
}

/// One file of a zapp, as `zvm inspect` shows it.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    pub hash: blake3::Hash,
}

/// What [`read`] found in a zapp.
#[derive(Debug)]
pub struct Contents {
    /// BLAKE3 of the whole `.zapp` file: the zapp's identity.
    pub hash: blake3::Hash,
    /// Size of the `.zapp` file.
    pub size: u64,
    pub zapp: ZappToml,
    /// Every file, in the tar's order (`zapp.toml` first).
    pub files: Vec<FileInfo>,
}

/// A reader that hashes every byte it passes on.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The BLAKE3 hash of the file at `path`.
pub fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(file)
        .with_context(|| format!("reading `{}`", path.display()))?;
    Ok(h.finalize())
}

/// Reads the zapp at `path`, checking everything, and unpacks it into `unpack_into` (an
/// empty directory) when given. Nothing is written for an entry before its path is checked;
/// the caller discards `unpack_into` if this fails.
pub fn read(path: &Path, unpack_into: Option<&Path>) -> Result<Contents> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("cannot open `{shown}`"))?;
    read_from(file, &shown, unpack_into)
}

/// [`read`] for a zapp that is not a file (an object, a request body); `shown` names it in
/// messages.
pub fn read_from(zapp: impl Read, shown: &str, unpack_into: Option<&Path>) -> Result<Contents> {
    read_inner(zapp, unpack_into).with_context(|| format!("`{shown}` is not a valid zapp"))
}

fn read_inner(file: impl Read, unpack_into: Option<&Path>) -> Result<Contents> {
    let mut raw = BufReader::new(Hashing {
        inner: file,
        hasher: blake3::Hasher::new(),
        bytes: 0,
    });
    let mut zapp: Option<ZappToml> = None;
    let mut entry_text: Option<String> = None;
    let mut files: Vec<FileInfo> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    {
        if !raw
            .fill_buf()
            .context("reading")?
            .starts_with(&[0x1f, 0x8b])
        {
            bail!("it is not a gzip stream (`zvm pack` makes zapps)");
        }
        let mut gz = flate2::bufread::GzDecoder::new(&mut raw);
        let mut archive = tar::Archive::new(&mut gz);
        let entries = archive.entries().context("reading its tar")?;
        for entry in entries {
            let mut entry = entry.context("reading its tar")?;
            let raw_name = entry.path_bytes().into_owned();
            let name = String::from_utf8(raw_name)
                .map_err(|e| anyhow::anyhow!("a file name is not UTF-8: {:?}", e.as_bytes()))?;
            let kind = entry.header().entry_type();
            let zpath = tar_path(&name).map_err(|m| anyhow::anyhow!("entry `{name}` {m}"))?;
            if kind.is_dir() {
                continue;
            }
            if !(kind.is_file() || kind.is_contiguous()) {
                bail!(
                    "entry `{name}` is {}; a zapp holds only regular files",
                    kind_name(kind)
                );
            }
            if zapp.is_none() && zpath != ZAPP_TOML {
                bail!(
                    "its first file is `{zpath}`, expected `{ZAPP_TOML}` (pack zapps with \
                     `zvm pack`)"
                );
            }
            if files.len() == MAX_FILES {
                bail!("it holds more than {MAX_FILES} files");
            }
            if !seen.insert(zpath.clone()) {
                bail!("`{zpath}` appears twice");
            }
            let size = entry.size();
            total = total.saturating_add(size);
            if total > MAX_UNPACKED_BYTES {
                bail!("it unpacks to more than {MAX_UNPACKED_BYTES} bytes");
            }
            let wants_text = zapp.is_none() || zapp.as_ref().is_some_and(|z| z.entry.path == zpath);
            if wants_text && size > MAX_TEXT_FILE {
                bail!("`{zpath}` is {size} bytes, more than the {MAX_TEXT_FILE} allowed");
            }
            let mut out = match unpack_into {
                Some(root) => Some(create_file(root, &zpath)?),
                None => None,
            };
            let mut hasher = blake3::Hasher::new();
            let mut text = Vec::new();
            let mut got = 0u64;
            loop {
                let n = entry
                    .read(&mut buf)
                    .with_context(|| format!("reading `{zpath}`"))?;
                if n == 0 {
                    break;
                }
                got += n as u64;
                hasher.update(&buf[..n]);
                if wants_text {
                    text.extend_from_slice(&buf[..n]);
                }
                if let Some(f) = &mut out {
                    f.write_all(&buf[..n])
                        .with_context(|| format!("unpacking `{zpath}`"))?;
                }
            }
            if got != size {
                bail!("`{zpath}` is cut short: {got} of {size} bytes");
            }
            if let Some(f) = out {
                f.sync_all()
                    .with_context(|| format!("unpacking `{zpath}`"))?;
            }
            files.push(FileInfo {
                path: zpath.clone(),
                size,
                hash: hasher.finalize(),
            });
            if wants_text {
                let text = String::from_utf8(text)
                    .map_err(|_| anyhow::anyhow!("`{zpath}` is not UTF-8 text"))?;
                if zapp.is_none() {
                    zapp = Some(ZappToml::parse(&text, ZAPP_TOML)?);
                } else {
                    entry_text = Some(text);
                }
            }
        }
        // The rest of the stream (the tar's end blocks) must decode, and the gzip trailer's
        // CRC and length must match: a truncated or altered zapp fails here if not before.
        std::io::copy(&mut gz, &mut std::io::sink()).context("reading its gzip stream")?;
    }
    if !raw.fill_buf().context("reading")?.is_empty() {
        bail!("it has data after the end of its gzip stream");
    }
    let Some(zapp) = zapp else {
        bail!("it holds no `{ZAPP_TOML}`");
    };
    let Some(text) = entry_text else {
        bail!(
            "its entry point `{}` ({ZAPP_TOML}: `{}`) is not in it",
            zapp.entry.path,
            zapp.entry.kind.as_str()
        );
    };
    for r in references(&zapp.entry, &text)? {
        if !seen.contains(&r.path) {
            bail!(
                "its entry point `{}` names the {} `{}`, which is not in it",
                zapp.entry.path,
                r.what,
                r.path
            );
        }
    }
    let hashing = raw.into_inner();
    Ok(Contents {
        hash: hashing.hasher.finalize(),
        size: hashing.bytes,
        zapp,
        files,
    })
}

/// A tar entry's path as a zapp path: `./` parts and a trailing `/` dropped; absolute paths
/// and `..` refused, since unpacking them would write outside the zapp's directory.
fn tar_path(name: &str) -> Result<String, String> {
    if name.starts_with('/') {
        return Err("has an absolute path".into());
    }
    if name.contains('\0') {
        return Err("has a NUL byte in its path".into());
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("has a `..` in its path".into()),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::Fifo => "a FIFO",
        _ => "not a regular file",
    }
}

/// Creates the file for zapp path `zpath` under `root`, with its directories. The path was
/// checked by [`tar_path`]; `create_new` refuses a name met before (as a file or directory).
fn create_file(root: &Path, zpath: &str) -> Result<std::fs::File> {
    if zpath.is_empty() {
        bail!("a file has an empty path");
    }
    let dest = root.join(zpath);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("unpacking `{zpath}`: creating its directory"))?;
    }
    std::fs::File::create_new(&dest).with_context(|| format!("unpacking `{zpath}`"))
}

/// Whether `path` names a zapp rather than a program or a manifest: by its `.zapp`
/// extension, or by the gzip magic number no program or manifest starts with.
pub fn is_zapp(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "zapp") {
        return true;
    }
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == [0x1f, 0x8b])
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"# an app
version = 1
manifest = "wc.toml"
files = ["data/*.txt", "docs/**"]

[app]
name = "wc"
version = "1.0.0"
description = "Count lines, words and bytes."

[[arg]]
name = "FILE"
help = "the file to count"
"#;

    #[test]
    fn parses_a_complete_zapp_toml() {
        let z = ZappToml::parse(GOOD, "zapp.toml").unwrap();
        assert_eq!(z.app.name, "wc");
        assert_eq!(z.app.version, "1.0.0");
        assert_eq!(
            z.entry,
            Entry {
                kind: EntryKind::Manifest,
                path: "wc.toml".into()
            }
        );
        assert_eq!(z.files, ["data/*.txt", "docs/**"]);
        assert_eq!(z.args[0].name, "FILE");
    }

    fn error(text: &str) -> String {
        format!("{:#}", ZappToml::parse(text, "zapp.toml").unwrap_err())
    }

    #[test]
    fn errors_point_at_the_spot() {
        assert_eq!(
            error(&GOOD.replace("help =", "hepl =")),
            "zapp.toml:13:1: unknown field `hepl`, expected `name` or `help`"
        );
        assert_eq!(
            error(&GOOD.replace("version = 1\n", "version = 2\n")),
            "zapp.toml:2:11: `version` is 2, this zvm reads version 1"
        );
        assert_eq!(
            error(&GOOD.replace("# an app\nversion = 1\n", "manifest2 = 1\nversion = 1\n")),
            "zapp.toml:1:1: `version = 1` must be the first key"
        );
        assert_eq!(
            error(&GOOD.replace("\"wc.toml\"", "\"../wc.toml\"")),
            "zapp.toml:3:12: `manifest` `../wc.toml` has an empty, `.` or `..` part, \
             expected a plain relative path"
        );
        assert_eq!(
            error(&GOOD.replace("name = \"wc\"", "name = \"w c\"")),
            "zapp.toml:7:8: `app.name` `w c` must be letters, digits, `_`, `-`, starting with \
             a letter"
        );
        assert!(
            error(
                &GOOD
                    .replace("manifest =", "job =")
                    .replace("files", "job = \"j.toml\"\nfiles")
            )
            .contains("duplicate key")
        );
        assert!(error(&GOOD.replace("manifest = \"wc.toml\"\n", "")).contains("no entry point"));
        assert!(error(&GOOD.replace("[app]", "[ap]")).contains("unknown field `ap`"));
    }

    #[test]
    fn paths_stay_inside() {
        assert_eq!(inside("", "a/./b.wasm").unwrap(), "a/b.wasm");
        assert_eq!(inside("sub", "../bin/p.wasm").unwrap(), "bin/p.wasm");
        assert!(inside("sub", "../../p.wasm").is_err());
        assert!(inside("", "/p.wasm").is_err());
        assert_eq!(tar_path("./a//b/").unwrap(), "a/b");
        assert!(tar_path("../x").is_err());
        assert!(tar_path("a/../../x").is_err());
        assert!(tar_path("/etc/passwd").is_err());
    }

    #[test]
    fn job_references_in_every_syntax() {
        let toml = r#"version = 1
[[group]]
name = "map"
program = "bin/map.wasm"
[[group.mount]]
image = "lib.tar"
path = "/lib"
[[group]]
name = "reduce"
program = { path = "bin/reduce.wasm" }
"#;
        let refs = job_references("job.toml", toml).unwrap();
        let paths: Vec<&str> = refs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["bin/map.wasm", "lib.tar", "bin/reduce.wasm"]);
        let map = r#"[{"name": "a", "exec": {"path": "file://a.wasm"},
                      "devices": [{"name": "image", "path": "img.tar"}, {"name": "stdout"}]}]"#;
        let refs = job_references("job.json", map).unwrap();
        let paths: Vec<&str> = refs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["a.wasm", "img.tar"]);
    }
}
