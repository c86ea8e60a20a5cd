//! The resolved, fully checked form of a VM manifest: what the runtime consumes.
//!
//! Everything here has already passed both phases (syntax, then meaning). Values are concrete:
//! defaults are filled in, paths are resolved against the manifest's directory, and the three
//! standard channels are always present. The CLI also builds this form directly from flags,
//! so every field is public and every type has a plain constructor.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default guest memory cap: enough for interpreters and ordinary C programs, small enough
/// that hundreds of VMs fit in this machine's 24 GiB.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Default CPU budget in fuel units (roughly one per wasm instruction): a few seconds of
/// compute, so that an infinite loop ends by itself.
pub const DEFAULT_FUEL: u64 = 10_000_000_000;
/// Default wall-clock safety net; fuel is the deterministic limit, this catches the rest.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default size of the in-memory scratch filesystem at `/`.
pub const DEFAULT_SCRATCH: u64 = 64 << 20;
/// Default number of file descriptors a guest may hold open at once (stdio and preopens
/// included), like a conservative `ulimit -n`.
pub const DEFAULT_OPEN_FILES: u32 = 256;
/// Default cap on bytes written through one channel, so an output flood stops by itself.
pub const DEFAULT_WRITE_BYTES: u64 = 1 << 30;
/// Default virtual clock step: ZeroVM advanced its clock by one microsecond per call.
pub const DEFAULT_CLOCK_STEP_NS: u64 = 1_000;

/// Largest accepted memory limit: 65536 pages of 64 KiB, all a wasm32 memory can address.
pub const MAX_MEMORY: u64 = 4 << 30;
/// Smallest accepted open-file limit: the three standard streams are always open.
pub const MIN_OPEN_FILES: u32 = 3;
/// Largest accepted open-file limit: far beyond what a guest needs, and small enough that the
/// runtime's descriptor table stays a bounded allocation.
pub const MAX_OPEN_FILES: u32 = 65_536;

/// A resolved VM manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The program to run.
    pub program: Program,
    /// `argv[0]` as the guest sees it; defaults to the program's file name.
    pub argv0: String,
    /// `argv[1..]`.
    pub args: Vec<String>,
    /// The guest's environment, sorted by name.
    pub env: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: Limits,
    /// Channels: always `stdin`, `stdout` and `stderr` first, in that order (defaulted to the
    /// host's standard streams when not declared), then the others in declaration order.
    pub channels: Vec<Channel>,
    /// Mounts, in declaration order.
    pub mounts: Vec<Mount>,
    /// Seed of the guest's random stream (`random_get`, `/dev/random`, `/dev/urandom`).
    pub seed: u64,
    /// The virtual clock.
    pub clock: Clock,
    /// Whether the report should carry an etag of the guest's final linear memory.
    pub memory_etag: bool,
    /// When the run's outputs become visible on the host.
    pub commit: CommitPolicy,
    /// Scratch directories written out as tar files when the run commits.
    pub exports: Vec<Export>,
}

impl Manifest {
    /// A manifest for `program` with every default and the host's stdio as the standard
    /// channels: what `zvm run prog.wasm` starts from before applying flags.
    pub fn for_program(path: impl Into<PathBuf>) -> Manifest {
        let path = path.into();
        let argv0 = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "main.wasm".to_string());
        Manifest {
            program: Program { path, hash: None },
            argv0,
            args: Vec::new(),
            env: BTreeMap::new(),
            limits: Limits::default(),
            channels: vec![
                Channel::stdio(StdStream::Stdin),
                Channel::stdio(StdStream::Stdout),
                Channel::stdio(StdStream::Stderr),
            ],
            mounts: Vec::new(),
            seed: 0,
            clock: Clock::default(),
            memory_etag: false,
            commit: CommitPolicy::default(),
            exports: Vec::new(),
        }
    }

    /// The channel with this name, if declared.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name.as_str() == name)
    }

    /// Checks a manifest built by other means than parsing (the CLI's flags, say) against the
    /// rules the parsers enforce: limit ranges, the standard channels and their directions,
    /// modes that fit host streams, etag pins only on read-only file channels, unique channel
    /// names, unique mount paths (but for images, which stack as layers), export paths
    /// (normalised, unique, not `/`, not under `/dev`)
    /// and their tar files (unique, none an output channel's file), and strings the guest can
    /// receive. Parsed manifests always pass. The error names the field at fault.
    pub fn check(&self) -> Result<(), String> {
        use crate::rules;
        if self.program.path.as_os_str().is_empty() {
            return Err("`program` is empty, expected a host path".into());
        }
        rules::check_c_string(&self.argv0).map_err(|m| format!("`argv0` {m}"))?;
        for (i, a) in self.args.iter().enumerate() {
            rules::check_c_string(a).map_err(|m| format!("`args` item {} {m}", i + 1))?;
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains('=') {
                return Err(format!(
                    "environment variable name `{name}` must be non-empty and without `=`"
                ));
            }
            rules::check_c_string(name)
                .and_then(|()| rules::check_c_string(value))
                .map_err(|m| format!("environment variable `{}` {m}", name.escape_debug()))?;
        }
        let l = &self.limits;
        rules::check_memory(l.memory).map_err(|m| format!("`memory` {m}"))?;
        rules::check_fuel(l.fuel).map_err(|m| format!("`fuel` {m}"))?;
        rules::check_timeout(l.timeout).map_err(|m| format!("`timeout` {m}"))?;
        rules::check_open_files(u64::from(l.open_files))
            .map_err(|m| format!("`open_files` {m}"))?;

        for stream in [StdStream::Stdin, StdStream::Stdout, StdStream::Stderr] {
            if self.channel(stream.name()).is_none() {
                return Err(format!("channel `{}` is missing", stream.name()));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for c in &self.channels {
            if !names.insert(&c.name) {
                return Err(format!("duplicate channel `{}`", c.name));
            }
            if let ChannelSource::Stdio(stream) = c.source
                && let Some(misfit) = rules::stdio_misfit(stream, c.mode)
            {
                return Err(rules::stdio_misfit_message(&c.name, stream, c.mode, misfit));
            }
            if let Some(role) = rules::std_role_misfit(&c.name, c.mode) {
                return Err(format!(
                    "{}, but mode `{}` does not allow it",
                    rules::std_role_message(role),
                    c.mode.as_str()
                ));
            }
            if c.etag.is_some()
                && let Some(m) = rules::etag_problem(&c.name, &c.source, c.mode)
            {
                return Err(m);
            }
        }
        // Each guest path, and whether every mount at it so far is an image.
        let mut guests = std::collections::BTreeMap::new();
        for m in &self.mounts {
            rules::check_mount_guest(&m.guest)?;
            let image = matches!(m.source, MountSource::Image(_));
            if let Some(all_images) = guests.insert(m.guest_abs(), image)
                && !rules::may_share_mount_path(all_images, image)
            {
                return Err(format!("duplicate mount `{}`", m.guest));
            }
        }
        let outputs = rules::output_files(&self.channels);
        for (i, e) in self.exports.iter().enumerate() {
            rules::check_export_guest(&e.guest)?;
            let abs = Mount::normalise_guest(&e.guest);
            if e.guest != abs {
                // The canonical form writes the field as it is, and the parser would read it
                // back normalised: a different manifest.
                return Err(format!(
                    "export path `{}` is not normalised, expected `{abs}`",
                    e.guest
                ));
            }
            let earlier = &self.exports[..i];
            if earlier.iter().any(|o| o.guest == e.guest) {
                return Err(format!("duplicate export `{}`", e.guest));
            }
            if e.path.as_os_str().is_empty() {
                return Err(format!(
                    "export `{}`: `tar` is empty, expected a host path",
                    e.guest
                ));
            }
            if let Some(o) = earlier
                .iter()
                .find(|o| rules::same_host_file(&o.path, &e.path))
            {
                let other = format!("the `tar` of export `{}`", o.guest);
                return Err(rules::tar_clash(&e.guest, &other));
            }
            if let Some((_, name)) = outputs
                .iter()
                .find(|(p, _)| rules::same_host_file(p, &e.path))
            {
                let other = format!("channel `{name}`, which the guest writes");
                return Err(rules::tar_clash(&e.guest, &other));
            }
        }
        Ok(())
    }
}

/// The program of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Path to the `.wasm` (or `.wat`) file, resolved against the manifest's directory.
    pub path: PathBuf,
    /// Optional pin: the run is refused if the program's content hash differs.
    pub hash: Option<ContentHash>,
}

/// A BLAKE3 content hash, written `blake3:<64 hex digits>` in manifests and reports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hash of `bytes`.
    pub fn of(bytes: &[u8]) -> ContentHash {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    /// Parses `blake3:<64 hex digits>` (the prefix is required; digits in either case).
    pub fn parse(s: &str) -> Option<ContentHash> {
        ContentHash::from_hex(s.strip_prefix("blake3:")?)
    }

    /// Parses 64 hex digits without a prefix, in either case: the way a channel's `etag` pin
    /// and the report's channel etags are written.
    pub fn from_hex(hex: &str) -> Option<ContentHash> {
        // `from_str_radix` alone would also take a `+` sign, so check the digits first.
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(ContentHash(out))
    }

    /// Lowercase hex digits without the prefix.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", self.hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Resource limits of one VM. Every field has a finite default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory in bytes (growth beyond it fails like an allocator failure).
    pub memory: u64,
    /// Deterministic CPU budget in fuel units.
    pub fuel: u64,
    /// Wall-clock safety net.
    pub timeout: Duration,
    /// Maximum bytes held by the in-memory scratch filesystem.
    pub scratch: u64,
    /// Maximum open file descriptors.
    pub open_files: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: DEFAULT_MEMORY,
            fuel: DEFAULT_FUEL,
            timeout: DEFAULT_TIMEOUT,
            scratch: DEFAULT_SCRATCH,
            open_files: DEFAULT_OPEN_FILES,
        }
    }
}

/// A channel's name: what follows `/dev/` in the guest. One or more `/`-separated
/// components of `[A-Za-z0-9._-]`, none of them `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    /// Longest accepted name, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates `name`; the error says what is wrong with it.
    pub fn new(name: &str) -> Result<ChannelName, String> {
        let name = name.strip_prefix("/dev/").unwrap_or(name);
        if name.is_empty() {
            return Err("channel name is empty".into());
        }
        if name.len() > Self::MAX_LEN {
            return Err(format!(
                "channel name is longer than {} bytes",
                Self::MAX_LEN
            ));
        }
        for comp in name.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." {
                return Err(format!(
                    "channel name `{name}` has an empty, `.` or `..` component"
                ));
            }
            if let Some(c) = comp
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(format!(
                    "channel name `{name}` contains `{c}`; use letters, digits, `.`, `_`, `-` and `/`"
                ));
            }
        }
        Ok(ChannelName(name.to_string()))
    }

    /// The name without the `/dev/` prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path the guest opens: `/dev/<name>`.
    pub fn guest_path(&self) -> String {
        format!("/dev/{}", self.0)
    }

    /// Which standard stream this name is, if any.
    pub fn std_stream(&self) -> Option<StdStream> {
        match self.0.as_str() {
            "stdin" => Some(StdStream::Stdin),
            "stdout" => Some(StdStream::Stdout),
            "stderr" => Some(StdStream::Stderr),
            _ => None,
        }
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StdStream {
    Stdin,
    Stdout,
    Stderr,
}

impl StdStream {
    /// `stdin`, `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            StdStream::Stdin => "stdin",
            StdStream::Stdout => "stdout",
            StdStream::Stderr => "stderr",
        }
    }

    /// The guest file descriptor this stream has (0, 1 or 2).
    pub fn fd(self) -> u32 {
        match self {
            StdStream::Stdin => 0,
            StdStream::Stdout => 1,
            StdStream::Stderr => 2,
        }
    }
}

/// One declared I/O channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: ChannelName,
    pub source: ChannelSource,
    pub mode: AccessMode,
    pub quota: Quota,
    /// Input pinning: the run is refused before it starts unless the file's content has this
    /// BLAKE3 hash (read channels bound to files only).
    pub etag: Option<ContentHash>,
}

impl Channel {
    /// A standard channel bound to the host's stream of the same name, default quotas.
    pub fn stdio(stream: StdStream) -> Channel {
        Channel {
            name: ChannelName(stream.name().to_string()),
            source: ChannelSource::Stdio(stream),
            mode: match stream {
                StdStream::Stdin => AccessMode::SequentialRead,
                _ => AccessMode::SequentialWrite,
            },
            quota: Quota::default(),
            etag: None,
        }
    }
}

/// Where a channel's bytes come from or go to on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSource {
    /// A host file, resolved against the manifest's directory.
    File(PathBuf),
    /// One of the host's standard streams.
    Stdio(StdStream),
    /// Nothing: reads see end of file, writes are discarded (still counted and hashed).
    Null,
    /// One end of a pipe of a job (the index into [`Job::pipes`]); the job runner binds it.
    Pipe(u32),
}

/// How the guest may use a channel; covers ZeroVM's four channel types and both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessMode {
    /// `read`: sequential reads only (ZeroVM type 0/2, readable).
    SequentialRead,
    /// `random-read`: reads at any offset (ZeroVM type 1/3, readable).
    RandomRead,
    /// `write`: sequential writes only; the output starts empty (ZeroVM type 0/1, writable).
    SequentialWrite,
    /// `random-write`: writes at any offset; the output starts empty (ZeroVM type 2/3).
    RandomWrite,
    /// `append`: writes go to the end of the existing content.
    Append,
    /// `read-write`: reads and writes at any offset over the existing content.
    ReadWrite,
}

impl AccessMode {
    /// All modes with their manifest spelling.
    pub const ALL: [(AccessMode, &'static str); 6] = [
        (AccessMode::SequentialRead, "read"),
        (AccessMode::RandomRead, "random-read"),
        (AccessMode::SequentialWrite, "write"),
        (AccessMode::RandomWrite, "random-write"),
        (AccessMode::Append, "append"),
        (AccessMode::ReadWrite, "read-write"),
    ];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(m, _)| *m == self)
            .map(|(_, s)| *s)
            .unwrap_or("?")
    }

    /// Parses the manifest spelling.
    pub fn parse(s: &str) -> Option<AccessMode> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(m, _)| *m)
    }

    pub fn can_read(self) -> bool {
        matches!(
            self,
            AccessMode::SequentialRead | AccessMode::RandomRead | AccessMode::ReadWrite
        )
    }

    pub fn can_write(self) -> bool {
        !matches!(self, AccessMode::SequentialRead | AccessMode::RandomRead)
    }

    /// Whether the guest may seek or use positioned reads/writes.
    pub fn can_seek(self) -> bool {
        matches!(
            self,
            AccessMode::RandomRead | AccessMode::RandomWrite | AccessMode::ReadWrite
        )
    }

    /// Whether the output starts from the existing content of its file (else it starts empty).
    pub fn keeps_content(self) -> bool {
        matches!(self, AccessMode::Append | AccessMode::ReadWrite)
    }
}

/// ZeroVM's four channel quotas. `u64::MAX` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Read calls.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Write calls.
    pub writes: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            reads: u64::MAX,
            read_bytes: u64::MAX,
            writes: u64::MAX,
            write_bytes: DEFAULT_WRITE_BYTES,
        }
    }
}

/// Something mounted into the guest's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The guest path as the user wrote it (`/data`, `data`, `.`, `/`); the guest sees it as a
    /// preopened directory of this name.
    pub guest: String,
    pub source: MountSource,
}

impl Mount {
    /// The normalised absolute guest path: `.` and `` become `/`, relative paths are taken
    /// from `/`, `.` components and trailing slashes removed. `..` is refused at parse time.
    pub fn guest_abs(&self) -> String {
        Mount::normalise_guest(&self.guest)
    }

    /// [`Mount::guest_abs`] of a guest path before a `Mount` exists (to check it).
    pub fn normalise_guest(guest: &str) -> String {
        let parts: Vec<&str> = guest
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        format!("/{}", parts.join("/"))
    }
}

/// What a mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A read-only tar image, plain or gzip-compressed. Several image mounts at one guest
    /// path are the layers of one image, later ones on top.
    Image(PathBuf),
    /// A host directory, read-only unless `writable`.
    Dir { path: PathBuf, writable: bool },
}

/// The virtual clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Realtime clock at the start of the run, in nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// How far every clock read advances the clocks, in nanoseconds.
    pub step_ns: u64,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            start_ns: 0,
            step_ns: DEFAULT_CLOCK_STEP_NS,
        }
    }
}

/// When a run's outputs (output files, exports, changes in writable host directories) become
/// visible on the host. They always land together, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitPolicy {
    /// `on-success`: commit when the guest exits with code 0 within every limit.
    #[default]
    OnSuccess,
    /// `always`: commit whatever the outcome (a trap, a limit, a non-zero exit).
    Always,
    /// `never`: a dry run; nothing is ever written.
    Never,
}

impl CommitPolicy {
    /// All policies with their manifest spelling.
    pub const ALL: [(CommitPolicy, &'static str); 3] = [
        (CommitPolicy::OnSuccess, "on-success"),
        (CommitPolicy::Always, "always"),
        (CommitPolicy::Never, "never"),
    ];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, s)| *s)
            .unwrap_or("?")
    }

    /// Parses the manifest spelling.
    pub fn parse(s: &str) -> Option<CommitPolicy> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(p, _)| *p)
    }

    /// Whether a run that ended `ok` (or not) commits under this policy.
    pub fn commits(self, ok: bool) -> bool {
        match self {
            CommitPolicy::OnSuccess => ok,
            CommitPolicy::Always => true,
            CommitPolicy::Never => false,
        }
    }
}

/// A directory of the guest's scratch filesystem written out as a tar file on commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The guest directory (absolute, normalised like a mount path).
    pub guest: String,
    /// The host tar file, resolved against the manifest's directory.
    pub path: PathBuf,
}

/// A resolved job: a graph of VMs ("members") connected by one-way pipes. Groups with a
/// wildcard input or a count have already been expanded into members, every member has a
/// complete VM manifest, and every pipe is declared as a channel on both of its ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The job's name (from the file, else the file's stem).
    pub name: String,
    /// Members in a stable order: groups in declaration order, members in index order.
    pub members: Vec<Member>,
    /// Pipes, in a stable order: by writer member, then by reader member.
    pub pipes: Vec<Pipe>,
    /// How many times a member lost to a host fault (not to its own failure) is re-run.
    pub retries: u32,
    /// How many cluster nodes run each member, one entry per member in the order of
    /// [`Job::members`]: its group's `replicas`, from 1 to [`crate::MAX_REPLICAS`] (1 by
    /// default). On a cluster a member with `n > 1` runs on `n` distinct nodes and is
    /// accepted only if their results agree; elsewhere it runs once. A replicated member
    /// never has pipes (the resolver refuses them).
    pub replicas: Vec<u32>,
}

impl Job {
    /// A job built in code rather than read from a file: `members` as they are, and one pipe
    /// per `(writer, reader)` edge (member indices), declared on both ends as a job file's
    /// `connect` would (`out/<reader>`, `in/<writer>`), with `quota` on both. No retries, and
    /// every member runs once (`replicas` all 1). The caller answers for unique member names
    /// and an acyclic graph.
    pub fn from_members(
        name: impl Into<String>,
        mut members: Vec<Member>,
        edges: &[(usize, usize)],
        quota: Quota,
    ) -> Result<Job, String> {
        let mut pipes = Vec::with_capacity(edges.len());
        for (i, &(from, to)) in edges.iter().enumerate() {
            let (Some(w), Some(r)) = (members.get(from), members.get(to)) else {
                return Err(format!("pipe {i} names a member that does not exist"));
            };
            let writer = ChannelName::new(&format!("out/{}", r.name))?;
            let reader = ChannelName::new(&format!("in/{}", w.name))?;
            for (at, name, mode) in [
                (from, writer.clone(), AccessMode::SequentialWrite),
                (to, reader.clone(), AccessMode::SequentialRead),
            ] {
                members[at].manifest.channels.push(Channel {
                    name,
                    source: ChannelSource::Pipe(i as u32),
                    mode,
                    quota,
                    etag: None,
                });
            }
            pipes.push(Pipe {
                from,
                to,
                writer,
                reader,
            });
        }
        Ok(Job {
            name: name.into(),
            replicas: vec![1; members.len()],
            members,
            pipes,
            retries: 0,
        })
    }
}

/// One VM of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `group` when the group has one member and no wildcard, else `group-<i>` (from 1).
    pub name: String,
    /// The group it comes from.
    pub group: String,
    /// Its VM manifest: the group's program, args, env, limits and channels, with wildcards
    /// resolved, plus one [`ChannelSource::Pipe`] channel per pipe end: `out/<reader member>`
    /// (mode `write`) for each pipe it writes, `in/<writer member>` (mode `read`) for each
    /// pipe it reads.
    pub manifest: Manifest,
}

/// A one-way pipe between two members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipe {
    /// Index of the writing member in [`Job::members`].
    pub from: usize,
    /// Index of the reading member.
    pub to: usize,
    /// The writer's channel: `out/<reader member name>`.
    pub writer: ChannelName,
    /// The reader's channel: `in/<writer member name>`.
    pub reader: ChannelName,
}
