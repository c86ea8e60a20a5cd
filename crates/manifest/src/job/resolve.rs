//! Jobs, phase two: meaning. A [`RawJob`] becomes a [`Job`]: every group is resolved into a
//! template VM manifest by the manifest's own resolver, the connect graph is checked, groups
//! are expanded into members (over the files a wildcard matches, or `count` copies), and
//! `connect` edges become pipes, declared as channels on both of their ends.
//!
//! A guided tour, in the order of the checks (the first failure is reported):
//! 1. the job's `name` and `retries`, and that there is a group at all;
//! 2. each group in declaration order: its name (valid, unique), `program`, `count`,
//!    `replicas`, then the job-only rules on its raw channels, mounts and exports (reserved
//!    pipe names, where a `*` may appear and what it means there, no writable mounts), then
//!    its VM manifest keys, resolved by `crate::resolve` into the group's template manifest;
//! 3. the connect graph: known groups, no self edges, no repeats, no cycles; then no pipes
//!    in or out of a replicated group (`replicas` above 1);
//! 4. expansion, in group order: wildcards are matched against the host directory (the only
//!    step that reads the file system), members named and checked for clashes, and the
//!    member limit enforced;
//! 5. pipes (their number limited), then outputs: no two members may write one host file;
//! 6. every member's manifest passes [`Manifest::check`].
//!
//! A `*` in a group means one of two things. In the path of a read-only channel it is a
//! *wildcard*: one member per matching host file. In the path of a write-only channel or an
//! export's `tar` it is a *placeholder*, replaced in each member by the part the wildcard
//! matched, or else by the member's index.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::document::{IntOrStr, RawManifest, RawProgram, Syntax};
use crate::error::{Error, TomlText};
use crate::job::document::{RawGroup, RawJob};
use crate::model::{
    AccessMode, Channel, ChannelName, ChannelSource, Job, Manifest, Member, Mount, Pipe, Quota,
};
use crate::rules;

/// Most members a job may have. Each member is a VM with its own slot, report and staged
/// outputs, and all of them commit in one transaction; ten thousand is far more than one
/// host runs at once, and keeps a resolved job (and its commit) a bounded size.
pub const MAX_MEMBERS: usize = 10_000;

/// Most pipes a job may have. Every pipe is a buffer in the runner and a channel at each of
/// its ends; a hundred thousand allows an all-to-all shuffle from 300 members to 300 others
/// while keeping a resolved job in the tens of megabytes.
pub const MAX_PIPES: usize = 100_000;

/// How many times a member lost to a host fault is re-run unless the job says otherwise:
/// enough to ride out a transient fault, few enough that a broken host is noticed.
pub const DEFAULT_RETRIES: u32 = 2;

/// Most re-runs a job may ask for: a member that keeps being lost after ten tries points at a
/// host problem that more tries will not fix.
pub const MAX_RETRIES: u32 = 10;

/// Most nodes a group's `replicas` may ask to run each member on. Each replica is a whole run
/// on a node of its own, so `n` replicas cost `n` times the work; two already catch a node
/// that computes a wrong result, and beyond three more runs add cost, not confidence.
pub const MAX_REPLICAS: u32 = 3;

/// Longest job or group name, in bytes: ample for a name, and it keeps `out/<group>-10000`
/// well within a channel name's 255 bytes.
pub const MAX_JOB_NAME_LEN: usize = 128;

/// What the resolver needs besides the raw job.
#[derive(Clone, Copy)]
pub(crate) struct Context<'a> {
    pub t: TomlText<'a>,
    /// The job file's directory: relative host paths are joined to it, and wildcards are
    /// matched in it.
    pub base: &'a Path,
    pub syntax: Syntax,
    /// What a group is called in messages: `group`, or `node` in a ZeroCloud system map.
    pub noun: &'static str,
}

/// A `*` in an output path (a write-only channel or an export's tar), to be replaced per member.
struct Placeholder {
    target: Target,
    written: String,
    span: Range<usize>,
}

enum Target {
    Channel(ChannelName),
    /// An export, by its normalised guest path.
    Export(String),
}

/// The read-only channel whose `*` makes one member per matching file.
struct Wildcard {
    channel: ChannelName,
    written: String,
    span: Range<usize>,
}

/// A group after step 2.
struct Group {
    name: String,
    name_span: Range<usize>,
    header: Range<usize>,
    count: Option<(usize, Range<usize>)>,
    /// `replicas`, with where it was written (none when left out, and then 1).
    replicas: (u32, Option<Range<usize>>),
    connect: Vec<Spanned<String>>,
    wildcard: Option<Wildcard>,
    placeholders: Vec<Placeholder>,
    /// Where each channel's `path` and each export's `tar` were written, to point at outputs.
    /// Keyed `channel:<name>` or `export:<guest path>`; the value names it for messages.
    output_spans: BTreeMap<String, (String, Range<usize>)>,
    /// ZeroCloud's rule: without `exec.name`, `argv[0]` is the member's name.
    argv0_is_member: bool,
    template: Manifest,
}

/// A group's members, after step 4: their index range in `Job::members`, and what each `*`
/// stands for in each.
struct Expansion {
    first: usize,
    parts: Vec<String>,
}

pub(crate) fn resolve(cx: Context<'_>, raw: RawJob, default_name: &str) -> Result<Job, Error> {
    let name = match &raw.name {
        None => default_name.to_string(),
        Some(n) => {
            check_name(n.get_ref(), true).map_err(|m| cx.err(n.span(), format!("job {m}")))?;
            n.get_ref().clone()
        }
    };
    let retries = match &raw.retries {
        None => DEFAULT_RETRIES,
        Some(r) => u32::try_from(*r.get_ref())
            .ok()
            .filter(|r| *r <= MAX_RETRIES)
            .ok_or_else(|| {
                cx.err(
                    r.span(),
                    format!(
                        "`retries` must be from 0 to {MAX_RETRIES}, found {}",
                        r.get_ref()
                    ),
                )
            })?,
    };
    if raw.group.is_empty() {
        let message = match (cx.syntax, cx.noun) {
            (_, "node") => "a system map needs at least one node, found an empty array",
            (Syntax::Toml, _) => {
                "a job needs at least one group, found none; add a `[[group]]` table"
            }
            (Syntax::Json, _) => "a job needs at least one group, found none; add one to `group`",
        };
        return Err(cx.err(0..0, message));
    }

    let mut groups: Vec<Group> = Vec::new();
    for (i, g) in raw.group.into_iter().enumerate() {
        let group = cx.group(i, g, &groups)?;
        groups.push(group);
    }
    let edges = cx.graph(&groups)?;
    cx.unpiped_replicas(&groups, &edges)?;

    let mut members = Vec::new();
    let mut replicas = Vec::new();
    let mut expansions = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (gi, g) in groups.iter().enumerate() {
        let expansion = cx.expand(g, members.len())?;
        let single = g.wildcard.is_none() && expansion.parts.len() == 1;
        for (k, part) in expansion.parts.iter().enumerate() {
            let member = if single {
                g.name.clone()
            } else {
                format!("{}-{}", g.name, k + 1)
            };
            if let Some(&other) = names.get(&member) {
                let size = expansions
                    .get(other)
                    .map_or(0, |e: &Expansion| e.parts.len());
                return Err(cx.clash(&groups[other], size, g, &member));
            }
            names.insert(member.clone(), gi);
            let mut manifest = cx.instantiate(g, part)?;
            if g.argv0_is_member {
                manifest.argv0 = member.clone();
            }
            // Members of a group run the same program with the same arguments; this is how
            // each learns which one it is (and how many there are). Set by zvm, so a group's
            // own `env` cannot give them other values.
            for (key, value) in [
                ("ZVM_JOB_MEMBER", member.clone()),
                ("ZVM_JOB_GROUP", g.name.clone()),
                ("ZVM_JOB_INDEX", (k + 1).to_string()),
                ("ZVM_JOB_COUNT", expansion.parts.len().to_string()),
            ] {
                manifest.env.insert(key.to_string(), value);
            }
            members.push(Member {
                name: member,
                group: g.name.clone(),
                manifest,
            });
            replicas.push(g.replicas.0);
        }
        expansions.push(expansion);
    }

    let pipes = cx.pipes(&groups, &expansions, &edges, &mut members)?;
    cx.check_outputs(&groups, &members)?;
    for m in &members {
        if let Err(problem) = m.manifest.check() {
            let g = &groups[names[&m.name]];
            return Err(cx.err(
                g.header.clone(),
                format!("{} `{}`, member `{}`: {problem}", cx.noun, g.name, m.name),
            ));
        }
    }
    Ok(Job {
        name,
        members,
        pipes,
        retries,
        replicas,
    })
}

/// A job or group name: `[A-Za-z0-9_-]` (and `.` for jobs, but not `.` or `..`), at most
/// [`MAX_JOB_NAME_LEN`] bytes. The error starts with `name`, for the caller to say whose.
fn check_name(name: &str, job: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > MAX_JOB_NAME_LEN {
        return Err(format!(
            "name `{name}` is longer than {MAX_JOB_NAME_LEN} bytes"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (job && c == '.');
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        let dot = if job { ", `.`" } else { "" };
        return Err(format!(
            "name `{}` contains `{}`; use letters, digits{dot}, `_` and `-`",
            name.escape_debug(),
            c.escape_debug()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("name `{name}` is not a name"));
    }
    Ok(())
}

/// The channel names `/dev/in` and `/dev/out` and everything under them: the job's pipes.
fn reserved(name: &str) -> bool {
    let name = name.strip_prefix("/dev/").unwrap_or(name);
    name == "in" || name == "out" || name.starts_with("in/") || name.starts_with("out/")
}

/// What a `*` in `written` may not be, as a wildcard input: more than one, or in a directory.
fn wildcard_problem(written: &str) -> Option<String> {
    if written.matches('*').count() > 1 {
        return Some(format!(
            "the wildcard `{written}` has more than one `*`; a wildcard input has one"
        ));
    }
    let dir = written.rfind('/').map_or("", |i| &written[..i]);
    if dir.contains('*') {
        return Some(format!(
            "the `*` of the wildcard `{written}` is in a directory name; it may only stand in \
             the file name, the last part of the path"
        ));
    }
    None
}

impl Context<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        self.t.error(span, message)
    }

    /// Step 2: one group, checked against the groups before it.
    fn group(
        &self,
        index: usize,
        raw: Spanned<RawGroup>,
        before: &[Group],
    ) -> Result<Group, Error> {
        let header = raw.span();
        let raw = raw.into_inner();
        let noun = self.noun;
        let Some(name_raw) = &raw.name else {
            return Err(self.err(
                header,
                format!(
                    "{noun} {} has no `name`; every {noun} needs one, such as {}",
                    index + 1,
                    self.example("name", "\"map\"")
                ),
            ));
        };
        let name = name_raw.get_ref().clone();
        let name_span = name_raw.span();
        check_name(&name, false).map_err(|m| self.err(name_span.clone(), format!("{noun} {m}")))?;
        if let Some(first) = before.iter().find(|g| g.name == name) {
            return Err(self.err(
                name_span,
                format!(
                    "duplicate {noun} `{name}` (first declared at line {})",
                    self.t.line(first.name_span.start)
                ),
            ));
        }
        let at = format!("{noun} `{name}`: ");
        let err = |span: Range<usize>, m: String| self.err(span, format!("{at}{m}"));

        let Some(program) = &raw.program else {
            return Err(err(
                header,
                format!(
                    "missing `program`, expected the program's path, such as {}",
                    self.example("program", "\"map.wasm\"")
                ),
            ));
        };
        let (program_path, program_span) = match program.get_ref() {
            RawProgram::Path(p) => (p.as_str(), program.span()),
            RawProgram::Table(t) => (t.path.get_ref().as_str(), t.path.span()),
        };
        if program_path.contains('*') {
            return Err(err(program_span, self.star_elsewhere("`program`")));
        }

        let count = match &raw.count {
            None => None,
            Some(c) => Some((self.count(&at, c)?, c.span())),
        };
        let replicas = match &raw.replicas {
            None => (1, None),
            Some(r) => (self.replicas(&at, r)?, Some(r.span())),
        };

        // The job-only rules on channels: reserved names, and what each `*` means.
        let mut wildcard: Option<Wildcard> = None;
        let mut placeholders = Vec::new();
        let mut output_spans = BTreeMap::new();
        for c in &raw.channel {
            let c = c.get_ref();
            let written_name = c.name.get_ref();
            if reserved(written_name) {
                return Err(err(
                    c.name.span(),
                    format!(
                        "channel name `{written_name}` is reserved: `/dev/in` and `/dev/out` \
                         hold the job's pipes, which `connect` declares"
                    ),
                ));
            }
            // A name or mode the manifest's resolver will refuse is left to it.
            let Ok(channel) = ChannelName::new(written_name) else {
                continue;
            };
            let Some(path) = &c.path else { continue };
            let mode = c.mode.as_ref().and_then(|m| AccessMode::parse(m.get_ref()));
            output_spans.insert(
                format!("channel:{channel}"),
                (format!("channel `{channel}`"), path.span()),
            );
            if !path.get_ref().contains('*') {
                continue;
            }
            let Some(mode) = mode else { continue };
            let written = path.get_ref().clone();
            if mode.can_read() && mode.can_write() {
                return Err(err(
                    path.span(),
                    format!(
                        "channel `{channel}`: a `*` in the path of a channel with mode `{}`; \
                         a `*` is a wildcard in a channel that only reads (`read`, \
                         `random-read`) and a placeholder in one that only writes (`write`, \
                         `random-write`, `append`), and this one does both",
                        mode.as_str()
                    ),
                ));
            }
            if mode.can_write() {
                placeholders.push(Placeholder {
                    target: Target::Channel(channel),
                    written,
                    span: path.span(),
                });
                continue;
            }
            if let Some(first) = &wildcard {
                return Err(err(
                    path.span(),
                    format!(
                        "a second wildcard input, channel `{channel}` after channel `{}` \
                         (line {}); a {noun} expands over one wildcard only",
                        first.channel,
                        self.t.line(first.span.start)
                    ),
                ));
            }
            if let Some(m) = wildcard_problem(&written) {
                return Err(err(path.span(), format!("channel `{channel}`: {m}")));
            }
            if let Some(etag) = &c.etag {
                return Err(err(
                    etag.span(),
                    format!(
                        "channel `{channel}`: `etag` pins the content of one file, but the \
                         channel's path is the wildcard `{written}`"
                    ),
                ));
            }
            wildcard = Some(Wildcard {
                channel,
                written,
                span: path.span(),
            });
        }
        for m in &raw.mount {
            let m = m.get_ref();
            if let Some(w) = &m.writable
                && *w.get_ref()
            {
                return Err(err(
                    w.span(),
                    format!(
                        "mount `{}`: {} is not allowed in a job: a job's outputs are the \
                         files of its channels and the tars of its exports, which land together \
                         when the whole job commits, and changes made in place to a host \
                         directory could not be held back until then; export a scratch \
                         directory instead",
                        m.path.get_ref(),
                        self.example("writable", "true")
                    ),
                ));
            }
            for (key, v) in [("image", &m.image), ("dir", &m.dir)] {
                if let Some(v) = v
                    && v.get_ref().contains('*')
                {
                    return Err(err(
                        v.span(),
                        self.star_elsewhere(&format!("the `{key}` of a mount")),
                    ));
                }
            }
        }
        for e in &raw.export {
            let e = e.get_ref();
            let Some(tar) = &e.tar else { continue };
            let guest = Mount::normalise_guest(e.path.get_ref());
            output_spans.insert(
                format!("export:{guest}"),
                (format!("export `{guest}`"), tar.span()),
            );
            if tar.get_ref().contains('*') {
                placeholders.push(Placeholder {
                    target: Target::Export(guest),
                    written: tar.get_ref().clone(),
                    span: tar.span(),
                });
            }
        }

        let connect = raw.connect.clone().unwrap_or_default();
        let argv0_is_member = raw.argv0_is_member;
        let manifest = RawManifest {
            _version: serde::de::IgnoredAny,
            program: raw.program,
            argv0: raw.argv0,
            args: raw.args,
            env: raw.env,
            seed: raw.seed,
            memory_etag: raw.memory_etag,
            commit: None,
            limits: raw.limits,
            clock: raw.clock,
            channel: raw.channel,
            mount: raw.mount,
            export: raw.export,
        };
        let template = crate::resolve::resolve(self.t, self.base, manifest)
            .map_err(|e| self.relabel(e, index).prefixed(&at))?;

        // With neither a wildcard nor several members, a placeholder has nothing to stand for.
        if wildcard.is_none()
            && count.as_ref().is_none_or(|(n, _)| *n == 1)
            && let Some(p) = placeholders.first()
        {
            return Err(err(
                p.span.clone(),
                format!(
                    "the `*` in `{}` has nothing to stand for: the {noun} has no wildcard \
                     input and one member; give it a wildcard input or a `count` above 1, or \
                     drop the `*`",
                    p.written
                ),
            ));
        }

        Ok(Group {
            name,
            name_span,
            header,
            count,
            replicas,
            connect,
            wildcard,
            placeholders,
            output_spans,
            argv0_is_member,
            template,
        })
    }

    /// `` `key = value` `` in TOML, `` `"key": value` `` in JSON.
    fn example(&self, key: &str, value: &str) -> String {
        match self.syntax {
            Syntax::Toml => format!("`{key} = {value}`"),
            Syntax::Json => format!("`\"{key}\": {value}`"),
        }
    }

    /// The manifest resolver names its tables as a VM manifest has them (`` `[limits]` ``);
    /// in a job they are the group's.
    fn relabel(&self, e: Error, index: usize) -> Error {
        let Error::Toml {
            file,
            line,
            column,
            mut message,
        } = e
        else {
            return e;
        };
        for table in ["limits", "clock", "program"] {
            let group = match self.syntax {
                Syntax::Toml => format!("`[group.{table}]`"),
                Syntax::Json => format!("`group[{index}].{table}`"),
            };
            message = message.replace(&format!("`[{table}]`"), &group);
        }
        Error::Toml {
            file,
            line,
            column,
            message,
        }
    }

    fn star_elsewhere(&self, what: &str) -> String {
        format!(
            "a `*` in {what}; in a job, a `*` is a wildcard in a read-only channel's path, or a \
             placeholder in a write-only channel's path or an export's `tar`, and nowhere else"
        )
    }

    /// `count`: a whole number from 1 to [`MAX_MEMBERS`].
    fn count(&self, at: &str, c: &Spanned<IntOrStr>) -> Result<usize, Error> {
        let n = match c.get_ref() {
            IntOrStr::Int(n) => *n,
            IntOrStr::Negative(n) => {
                return Err(self.err(
                    c.span(),
                    format!("{at}`count` must be at least 1, found {n}"),
                ));
            }
            IntOrStr::Str(s) => {
                return Err(self.err(
                    c.span(),
                    format!("{at}`count` must be a whole number of members, found \"{s}\""),
                ));
            }
        };
        if n == 0 {
            return Err(self.err(
                c.span(),
                format!(
                    "{at}`count` must be at least 1, found 0; leave the {} out of the job instead",
                    self.noun
                ),
            ));
        }
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_MEMBERS)
            .ok_or_else(|| {
                self.err(
                    c.span(),
                    format!("{at}`count` is {n}, more than a job's {MAX_MEMBERS} members"),
                )
            })
    }

    /// `replicas`: a whole number from 1 to [`MAX_REPLICAS`].
    fn replicas(&self, at: &str, r: &Spanned<IntOrStr>) -> Result<u32, Error> {
        let found = match r.get_ref() {
            IntOrStr::Int(n) => match u32::try_from(*n) {
                Ok(n) if (1..=MAX_REPLICAS).contains(&n) => return Ok(n),
                _ => n.to_string(),
            },
            IntOrStr::Negative(n) => n.to_string(),
            IntOrStr::Str(s) => format!("\"{s}\""),
        };
        Err(self.err(
            r.span(),
            format!(
                "{at}`replicas` must be a whole number from 1 to {MAX_REPLICAS} (the cluster \
                 nodes that run each member), found {found}"
            ),
        ))
    }

    /// End of step 3: a replicated group (`replicas` above 1) has no pipes, in or out. Each
    /// replica runs on its own node, and a pipe's stream is read once, by one reader, from
    /// one writer; objects, which every replica can read and whose etags can be compared,
    /// carry a replicated member's inputs and outputs instead. Groups are checked in
    /// declaration order, each one's own `connect` before the groups connecting to it.
    fn unpiped_replicas(&self, groups: &[Group], edges: &[(usize, usize)]) -> Result<(), Error> {
        const WHY: &str = "replicated members cannot have pipes: their replicas would each \
                           need the stream; use objects for their inputs and outputs";
        let noun = self.noun;
        for (i, g) in groups.iter().enumerate() {
            let (n, Some(span)) = &g.replicas else {
                continue;
            };
            if *n == 1 {
                continue;
            }
            let at = format!("{noun} `{}`: `replicas` is {n}, but ", g.name);
            if let Some((_, b)) = edges.iter().find(|(a, _)| *a == i) {
                return Err(self.err(
                    span.clone(),
                    format!(
                        "{at}its `connect` gives its members pipes to {noun} `{}`; {WHY}",
                        groups[*b].name
                    ),
                ));
            }
            if let Some((a, _)) = edges.iter().find(|(_, b)| *b == i) {
                let from = &groups[*a];
                let line = from
                    .connect
                    .iter()
                    .find(|c| c.get_ref() == &g.name)
                    .map_or(from.name_span.start, |c| c.span().start);
                return Err(self.err(
                    span.clone(),
                    format!(
                        "{at}{noun} `{}` connects to it (line {}), which gives its members \
                         pipes; {WHY}",
                        from.name,
                        self.t.line(line)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Step 3: `connect` names groups, not itself, each once, and the graph has no cycle.
    /// Returns the edges as group indices, in group order and then `connect` order.
    fn graph(&self, groups: &[Group]) -> Result<Vec<(usize, usize)>, Error> {
        let noun = self.noun;
        let index: BTreeMap<&str, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.as_str(), i))
            .collect();
        let mut out: Vec<Vec<(usize, Range<usize>)>> = vec![Vec::new(); groups.len()];
        for (a, g) in groups.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for target in &g.connect {
                let t = target.get_ref().as_str();
                let at = format!("{noun} `{}`: ", g.name);
                let Some(&b) = index.get(t) else {
                    let known: Vec<String> =
                        groups.iter().map(|g| format!("`{}`", g.name)).collect();
                    return Err(self.err(
                        target.span(),
                        format!(
                            "{at}`connect` names `{t}`, which is not a {noun} of this job; \
                             the {noun}s are {}",
                            known.join(", ")
                        ),
                    ));
                };
                if a == b {
                    return Err(self.err(
                        target.span(),
                        format!(
                            "{at}`connect` names the {noun} itself; pipes may not form a \
                             cycle, since its members could each wait for another to write \
                             and never finish"
                        ),
                    ));
                }
                if !seen.insert(b) {
                    return Err(self.err(target.span(), format!("{at}`connect` names `{t}` twice")));
                }
                out[a].push((b, target.span()));
            }
        }

        // Depth-first search in declaration order; an edge back to a group on the current
        // path closes a cycle, reported from that group round to itself.
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            New,
            OnPath,
            Done,
        }
        let mut state = vec![State::New; groups.len()];
        let mut path: Vec<usize> = Vec::new();
        // Explicit stack of (group, next edge to follow), so depth is not limited by recursion.
        for root in 0..groups.len() {
            if state[root] != State::New {
                continue;
            }
            let mut stack = vec![(root, 0usize)];
            state[root] = State::OnPath;
            path.push(root);
            while let Some(&mut (g, ref mut next)) = stack.last_mut() {
                if let Some((b, span)) = out[g].get(*next) {
                    *next += 1;
                    match state[*b] {
                        State::New => {
                            state[*b] = State::OnPath;
                            path.push(*b);
                            stack.push((*b, 0));
                        }
                        State::OnPath => {
                            let from = path.iter().position(|p| p == b).unwrap_or(0);
                            let mut cycle: Vec<String> = path[from..]
                                .iter()
                                .map(|i| format!("`{}`", groups[*i].name))
                                .collect();
                            cycle.push(format!("`{}`", groups[*b].name));
                            return Err(self.err(
                                span.clone(),
                                format!(
                                    "{noun} `{}`: `connect` to `{}` closes a cycle, {}; \
                                     pipes may not form a cycle, since its members could each \
                                     wait for another to write and never finish",
                                    groups[g].name,
                                    groups[*b].name,
                                    cycle.join(" → ")
                                ),
                            ));
                        }
                        State::Done => {}
                    }
                } else {
                    state[g] = State::Done;
                    path.pop();
                    stack.pop();
                }
            }
        }
        Ok(out
            .iter()
            .enumerate()
            .flat_map(|(a, bs)| bs.iter().map(move |(b, _)| (a, *b)))
            .collect())
    }

    /// Step 4 for one group: what each member's `*` stands for (the matched part, or the
    /// member's index), with the running total of members checked.
    fn expand(&self, g: &Group, first: usize) -> Result<Expansion, Error> {
        let at = format!("{} `{}`: ", self.noun, g.name);
        let parts = match &g.wildcard {
            Some(w) => {
                let parts = wildcard_matches(self.base, &w.written)
                    .map_err(|m| self.err(w.span.clone(), format!("{at}{m}")))?;
                if parts.is_empty() {
                    return Err(self.err(
                        w.span.clone(),
                        format!(
                            "{at}the wildcard `{}` of channel `{}` matches no file",
                            w.written, w.channel
                        ),
                    ));
                }
                if let Some((n, span)) = &g.count
                    && *n != parts.len()
                {
                    let files = if parts.len() == 1 { "file" } else { "files" };
                    return Err(self.err(
                        span.clone(),
                        format!(
                            "{at}`count` is {n}, but the wildcard `{}` matches {} {files}; \
                             leave `count` out to have one member per file",
                            w.written,
                            parts.len()
                        ),
                    ));
                }
                parts
            }
            None => {
                let n = g.count.as_ref().map_or(1, |(n, _)| *n);
                (1..=n).map(|i| i.to_string()).collect()
            }
        };
        if first + parts.len() > MAX_MEMBERS {
            return Err(self.err(
                g.header.clone(),
                format!(
                    "{at}its {} members bring the job to {}, more than a job's {MAX_MEMBERS}",
                    parts.len(),
                    first + parts.len()
                ),
            ));
        }
        Ok(Expansion { first, parts })
    }

    /// One member's manifest: the group's template with every `*` replaced by `part`.
    fn instantiate(&self, g: &Group, part: &str) -> Result<Manifest, Error> {
        let mut m = g.template.clone();
        let path = |written: &str, span: &Range<usize>| {
            rules::host_path(self.base, &written.replace('*', part))
                .map_err(|e| self.err(span.clone(), format!("{} `{}`: {e}", self.noun, g.name)))
        };
        if let Some(w) = &g.wildcard
            && let Some(c) = m.channels.iter_mut().find(|c| c.name == w.channel)
        {
            c.source = ChannelSource::File(path(&w.written, &w.span)?);
        }
        for p in &g.placeholders {
            let host = path(&p.written, &p.span)?;
            match &p.target {
                Target::Channel(name) => {
                    if let Some(c) = m.channels.iter_mut().find(|c| &c.name == name) {
                        c.source = ChannelSource::File(host);
                    }
                }
                Target::Export(guest) => {
                    if let Some(e) = m.exports.iter_mut().find(|e| &e.guest == guest) {
                        e.path = host;
                    }
                }
            }
        }
        Ok(m)
    }

    /// A member name made twice: reported at the name of the later of the two groups.
    /// `earlier_size` is how many members the earlier group has.
    fn clash(&self, earlier: &Group, earlier_size: usize, later: &Group, member: &str) -> Error {
        let noun = self.noun;
        let line = self.t.line(earlier.name_span.start);
        let other = if earlier.name == member {
            format!("the only member of {noun} `{member}` (line {line})")
        } else {
            format!(
                "a member of {noun} `{0}` (line {line}), whose members are `{0}-1` to `{0}-{earlier_size}`",
                earlier.name
            )
        };
        self.err(
            later.name_span.clone(),
            format!(
                "{noun} `{}`: its member `{member}` has the same name as {other}; rename one \
                 of the {noun}s",
                later.name
            ),
        )
    }

    /// Step 5: every edge between groups becomes a pipe between every member of one and
    /// every member of the other, declared as channels at both ends.
    fn pipes(
        &self,
        groups: &[Group],
        expansions: &[Expansion],
        edges: &[(usize, usize)],
        members: &mut [Member],
    ) -> Result<Vec<Pipe>, Error> {
        let total: usize = edges
            .iter()
            .map(|(a, b)| expansions[*a].parts.len() * expansions[*b].parts.len())
            .sum();
        if total > MAX_PIPES {
            // Point at the edge that crosses the limit.
            let mut running = 0;
            for (a, b) in edges {
                running += expansions[*a].parts.len() * expansions[*b].parts.len();
                if running > MAX_PIPES {
                    let g = &groups[*a];
                    let span = g
                        .connect
                        .iter()
                        .find(|c| c.get_ref() == &groups[*b].name)
                        .map_or(g.header.clone(), Spanned::span);
                    return Err(self.err(
                        span,
                        format!(
                            "{} `{}`: `connect` makes the job's pipes {total}, more than a \
                             job's {MAX_PIPES}; every member of `{}` gets a pipe to every \
                             member of `{}`",
                            self.noun, g.name, g.name, groups[*b].name
                        ),
                    ));
                }
            }
        }
        let mut pairs: Vec<(usize, usize)> = Vec::with_capacity(total);
        for (a, b) in edges {
            let (ea, eb) = (&expansions[*a], &expansions[*b]);
            for from in ea.first..ea.first + ea.parts.len() {
                for to in eb.first..eb.first + eb.parts.len() {
                    pairs.push((from, to));
                }
            }
        }
        pairs.sort_unstable();
        let mut pipes = Vec::with_capacity(pairs.len());
        let mut ins: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
        let mut outs: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
        for (i, (from, to)) in pairs.into_iter().enumerate() {
            let pipe_name = |dir: &str, member: &Member| {
                // Member names are group names (checked) with `-<n>`, always valid.
                ChannelName::new(&format!("{dir}/{}", member.name)).map_err(|m| self.err(0..0, m))
            };
            pipes.push(Pipe {
                from,
                to,
                writer: pipe_name("out", &members[to])?,
                reader: pipe_name("in", &members[from])?,
            });
            outs[from].push(i);
            ins[to].push(i);
        }
        // Readers' pipes arrive in writer order already; `pipes` is sorted by writer.
        for (m, member) in members.iter_mut().enumerate() {
            for &i in &ins[m] {
                member.manifest.channels.push(pipe_end(
                    pipes[i].reader.clone(),
                    i,
                    AccessMode::SequentialRead,
                ));
            }
            for &i in &outs[m] {
                member.manifest.channels.push(pipe_end(
                    pipes[i].writer.clone(),
                    i,
                    AccessMode::SequentialWrite,
                ));
            }
        }
        Ok(pipes)
    }

    /// No two members may write one host file (through a channel or an export's tar): the
    /// job's outputs land together, and one would silently replace the other.
    fn check_outputs(&self, groups: &[Group], members: &[Member]) -> Result<(), Error> {
        let group = |name: &str| groups.iter().find(|g| g.name == name);
        let mut writers: BTreeMap<PathBuf, (usize, String)> = BTreeMap::new();
        for (mi, m) in members.iter().enumerate() {
            let outputs = rules::output_files(&m.manifest.channels)
                .into_iter()
                .map(|(p, n)| (p.to_path_buf(), format!("channel:{n}")))
                .chain(
                    m.manifest
                        .exports
                        .iter()
                        .map(|e| (e.path.clone(), format!("export:{}", e.guest))),
                );
            for (path, key) in outputs {
                let plain: PathBuf = path
                    .components()
                    .filter(|c| *c != std::path::Component::CurDir)
                    .collect();
                let Some((first, first_key)) = writers.get(&plain) else {
                    writers.insert(plain, (mi, key));
                    continue;
                };
                let other = &members[*first];
                let Some(g) = group(&m.group) else { continue };
                let (what, span) = g
                    .output_spans
                    .get(&key)
                    .cloned()
                    .unwrap_or((key.clone(), g.header.clone()));
                let other_what = group(&other.group)
                    .and_then(|og| og.output_spans.get(first_key))
                    .map_or(first_key.clone(), |(w, _)| w.clone());
                let shown = path.strip_prefix(self.base).unwrap_or(&path).display();
                let hint = if other.group == m.group {
                    "; put a `*` in the path, which each member replaces with its own part"
                } else {
                    ""
                };
                return Err(self.err(
                    span,
                    format!(
                        "{} `{}`: members `{}` ({other_what}) and `{}` ({what}) both write \
                         `{shown}`; the outputs of a job land together when it commits, so \
                         each host file may have one writer{hint}",
                        self.noun, m.group, other.name, m.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn pipe_end(name: ChannelName, pipe: usize, mode: AccessMode) -> Channel {
    Channel {
        name,
        // `pipes` is at most MAX_PIPES long, far below u32::MAX.
        source: ChannelSource::Pipe(u32::try_from(pipe).unwrap_or(u32::MAX)),
        mode,
        quota: Quota::default(),
        etag: None,
    }
}

/// The files the wildcard `written` (one `*`, in the last part) matches in `base`, as the
/// parts the `*` stood for, sorted by their bytes. Files only (links followed); a `*` at the
/// start of the name does not match a leading `.`, as in a shell.
pub(crate) fn wildcard_matches(base: &Path, written: &str) -> Result<Vec<String>, String> {
    matches_at_most(base, written, MAX_MEMBERS)
}

/// [`wildcard_matches`], refusing more than `limit` matches.
fn matches_at_most(base: &Path, written: &str, limit: usize) -> Result<Vec<String>, String> {
    let (dir, pattern) = match written.rfind('/') {
        Some(i) => (&written[..=i], &written[i + 1..]),
        None => ("", written),
    };
    let (prefix, suffix) = pattern.split_once('*').unwrap_or((pattern, ""));
    let host_dir = if dir.is_empty() {
        base.to_path_buf()
    } else {
        base.join(dir)
    };
    let host_dir = if host_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        host_dir
    };
    let shown = if dir.is_empty() { "." } else { dir };
    let entries = std::fs::read_dir(&host_dir).map_err(|e| {
        format!("cannot list the directory `{shown}` of the wildcard `{written}`: {e}")
    })?;
    let mut parts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            format!("cannot list the directory `{shown}` of the wildcard `{written}`: {e}")
        })?;
        let file_name = entry.file_name();
        let lossy = file_name.to_string_lossy();
        let fits = |name: &str| {
            name.len() >= prefix.len() + suffix.len()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
                && !(prefix.is_empty() && name.starts_with('.'))
        };
        if !fits(&lossy) {
            continue;
        }
        if !std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let Some(name) = file_name.to_str() else {
            return Err(format!(
                "the wildcard `{written}` matches `{lossy}`, whose name is not UTF-8"
            ));
        };
        if parts.len() == limit {
            return Err(format!(
                "the wildcard `{written}` matches more than {limit} files, the most members a \
                 job may have"
            ));
        }
        parts.push(name[prefix.len()..name.len() - suffix.len()].to_string());
    }
    parts.sort();
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f.as_bytes()).unwrap();
        }
        dir
    }

    #[test]
    fn wildcards_match_files_in_one_directory_in_byte_order() {
        let dir = tree(&[
            "in/b.txt",
            "in/a.txt",
            "in/B.txt",
            "in/a.txt.bak",
            "in/.hidden.txt",
            "in/sub/c.txt",
            "in/dir.txt/x",
            "top.txt",
        ]);
        let m = |w: &str| wildcard_matches(dir.path(), w).unwrap();
        // Upper case sorts before lower case; directories and deeper files do not match, nor
        // does a hidden file under a leading `*`.
        assert_eq!(m("in/*.txt"), ["B", "a", "b"]);
        assert_eq!(m("in/a*"), [".txt", ".txt.bak"]);
        assert_eq!(m("in/.*"), ["hidden.txt"]);
        assert_eq!(m("*.txt"), ["top"]);
        assert_eq!(m("./in/*.bak"), ["a.txt"]);
        assert!(m("in/*.csv").is_empty());
        // The fixed parts may not overlap: `a*a` needs at least two characters.
        let one = tree(&["a", "aa", "aba"]);
        assert_eq!(wildcard_matches(one.path(), "a*a").unwrap(), ["", "b"]);
    }

    #[cfg(unix)]
    #[test]
    fn wildcards_follow_links_to_files_only() {
        let dir = tree(&["d/real.txt", "elsewhere/target.txt"]);
        let d = dir.path().join("d");
        std::os::unix::fs::symlink(dir.path().join("elsewhere/target.txt"), d.join("link.txt"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path().join("missing"), d.join("dangling.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), d.join("dirlink.txt")).unwrap();
        assert_eq!(
            wildcard_matches(dir.path(), "d/*.txt").unwrap(),
            ["link", "real"]
        );
    }

    #[test]
    fn wildcard_errors() {
        let dir = tree(&["f"]);
        let e = wildcard_matches(dir.path(), "none/*.txt").unwrap_err();
        assert!(
            e.starts_with("cannot list the directory `none/` of the wildcard `none/*.txt`: "),
            "{e}"
        );
        // A file where the directory should be.
        let e = wildcard_matches(dir.path(), "f/*").unwrap_err();
        assert!(e.starts_with("cannot list the directory `f/`"), "{e}");
        assert_eq!(wildcard_problem("a/*.txt"), None);
        assert_eq!(wildcard_problem("*"), None);
        assert!(wildcard_problem("*/x").unwrap().contains("directory name"));
        assert!(wildcard_problem("a/*b*").unwrap().contains("more than one"));
    }

    #[test]
    fn wildcards_stop_at_the_member_limit() {
        let dir = tree(&["1.in", "2.in", "3.in"]);
        assert_eq!(matches_at_most(dir.path(), "*.in", 3).unwrap().len(), 3);
        let e = matches_at_most(dir.path(), "*.in", 2).unwrap_err();
        assert!(e.contains("matches more than 2 files"), "{e}");
    }

    #[test]
    fn names() {
        assert_eq!(check_name("map-1_x", false), Ok(()));
        assert_eq!(check_name("word.count", true), Ok(()));
        assert!(check_name("word.count", false).is_err());
        assert!(check_name("", false).is_err());
        assert!(check_name("..", true).is_err());
        assert!(check_name(&"x".repeat(MAX_JOB_NAME_LEN + 1), false).is_err());
        assert_eq!(check_name(&"x".repeat(MAX_JOB_NAME_LEN), false), Ok(()));
        // The longest member's pipe channel is still a valid channel name.
        let longest = format!("out/{}-{MAX_MEMBERS}", "x".repeat(MAX_JOB_NAME_LEN));
        assert!(ChannelName::new(&longest).is_ok());
    }

    #[test]
    fn reserved_names() {
        for r in ["in", "out", "in/x", "out/a/b", "/dev/out", "/dev/in/x"] {
            assert!(reserved(r), "{r}");
        }
        for ok in ["input", "output", "inx/y", "stdin", "dev/in"] {
            assert!(!reserved(ok), "{ok}");
        }
    }
}
