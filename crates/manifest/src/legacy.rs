//! Legacy ZeroVM manifests (format version 20130611), read so that existing ones keep working.
//!
//! The format is `Key = value` lines with `#` comment lines. It is translated straight into a
//! [`Manifest`] with the same meaning rules as the TOML format (see `rules`), and everything
//! zvm cannot honour the ZeroVM way — cluster keys, network URIs, replicated channels — is
//! refused with the line and what to use instead. ZeroVM itself ignored unknown and repeated
//! keys or failed with a bare errno; here both are errors that name the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::model::{
    AccessMode, Channel, ChannelName, ChannelSource, Limits, Manifest, Program, Quota, StdStream,
};
use crate::rules::{self, StdioMisfit};

/// The only ZeroVM manifest format version there is to read.
pub(crate) const LEGACY_VERSION: u64 = 20130611;

/// The keys a single-VM manifest may use.
const KEYS: [&str; 5] = ["Version", "Program", "Timeout", "Memory", "Channel"];

/// ZeroVM keys that only make sense in a cluster of VMs.
const CLUSTER_KEYS: [&str; 3] = ["Node", "NameServer", "Job"];

/// URI schemes of ZeroVM's network channels.
const NETWORK_SCHEMES: [&str; 3] = ["tcp:", "udp:", "ipc:"];

/// The fields of a `Channel` line, in order.
const CHANNEL_FIELDS: [&str; 8] = [
    "uri", "alias", "type", "etag", "gets", "get_size", "puts", "put_size",
];

/// Whether `text` looks like a legacy manifest: its first line that is neither blank nor a
/// comment is `Version = <number>`. TOML manifests start with a lowercase `version`.
pub(crate) fn looks_legacy(text: &str) -> bool {
    let Some(first) = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
    else {
        return false;
    };
    first
        .strip_prefix("Version")
        .and_then(|r| r.trim_start().strip_prefix('='))
        .is_some_and(|r| r.trim_start().starts_with(|c: char| c.is_ascii_digit()))
}

struct Reader<'a> {
    file: &'a Path,
    base: &'a Path,
}

/// Lines of the keys that may appear only once, to name the first one in a duplicate error.
#[derive(Default)]
struct Seen {
    version: Option<usize>,
    program: Option<usize>,
    timeout: Option<usize>,
    memory: Option<usize>,
}

pub(crate) fn parse(file: &Path, text: &str, base: &Path) -> Result<Manifest, Error> {
    Reader { file, base }.manifest(text)
}

impl Reader<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> Error {
        Error::Legacy {
            file: self.file.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    fn once(&self, slot: &mut Option<usize>, key: &str, line: usize) -> Result<(), Error> {
        if let Some(first) = slot {
            return Err(self.err(
                line,
                format!("duplicate `{key}` (first given at line {first})"),
            ));
        }
        *slot = Some(line);
        Ok(())
    }

    fn manifest(&self, text: &str) -> Result<Manifest, Error> {
        let mut seen = Seen::default();
        let mut program: Option<PathBuf> = None;
        let mut limits = Limits::default();
        let mut memory_etag = false;
        let mut channels = Vec::new();
        let mut names = BTreeMap::new();

        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let Some((key, value)) = l.split_once('=') else {
                return Err(self.err(line, format!("expected `Key = value`, found `{l}`")));
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.version.is_none() && key != "Version" {
                return Err(self.err(
                    line,
                    format!("expected `Version = {LEGACY_VERSION}` first, found `{key}`"),
                ));
            }
            match key {
                "Version" => {
                    self.once(&mut seen.version, key, line)?;
                    if value.parse::<u64>().ok() != Some(LEGACY_VERSION) {
                        // `Version = 1` is most likely a TOML manifest with a capital letter.
                        let hint = if value == "1" {
                            "; a TOML manifest starts with a lowercase `version = 1`"
                        } else {
                            ""
                        };
                        return Err(self.err(
                            line,
                            format!(
                                "unsupported ZeroVM manifest version `{value}`, zvm reads version {LEGACY_VERSION}{hint}"
                            ),
                        ));
                    }
                }
                "Program" => {
                    self.once(&mut seen.program, key, line)?;
                    program = Some(
                        rules::host_path(self.base, value)
                            .map_err(|m| self.err(line, format!("`Program` {m}")))?,
                    );
                }
                "Timeout" => {
                    self.once(&mut seen.timeout, key, line)?;
                    limits.timeout = value
                        .parse::<u64>()
                        .ok()
                        .filter(|s| *s > 0)
                        .map(Duration::from_secs)
                        .ok_or_else(|| {
                            self.err(
                                line,
                                format!(
                                    "`Timeout` must be a whole number of seconds greater than 0, found `{value}`"
                                ),
                            )
                        })?;
                }
                "Memory" => {
                    self.once(&mut seen.memory, key, line)?;
                    (limits.memory, memory_etag) = self.memory(line, value)?;
                }
                "Channel" => {
                    let c = self.channel(line, value)?;
                    if let Some(first) = names.insert(c.name.clone(), line) {
                        return Err(self.err(
                            line,
                            format!(
                                "duplicate channel `{}` (first declared at line {first})",
                                c.name
                            ),
                        ));
                    }
                    channels.push(c);
                }
                k if CLUSTER_KEYS.contains(&k) => {
                    return Err(self.err(
                        line,
                        format!(
                            "`{k}` is a cluster setting; zvm runs networks of VMs with `zvm job`"
                        ),
                    ));
                }
                k => {
                    let list = KEYS.map(|k| format!("`{k}`")).join(", ");
                    let hint = KEYS
                        .iter()
                        .find(|known| known.eq_ignore_ascii_case(k))
                        .map(|known| format!(" (keys are capitalised: `{known}`)"))
                        .unwrap_or_default();
                    return Err(self.err(
                        line,
                        format!("unknown key `{k}`, expected one of {list}{hint}"),
                    ));
                }
            }
        }

        if seen.version.is_none() {
            return Err(self.err(1, format!("missing `Version = {LEGACY_VERSION}`")));
        }
        let Some(path) = program else {
            return Err(self.err(
                1,
                "missing `Program`, expected a line such as `Program = hello.wasm`",
            ));
        };
        rules::complete_std_channels(&mut channels);
        Ok(Manifest {
            argv0: rules::default_argv0(&path),
            program: Program { path, hash: None },
            args: Vec::new(),
            env: BTreeMap::new(),
            limits,
            channels,
            mounts: Vec::new(),
            seed: 0,
            clock: Default::default(),
            memory_etag,
            commit: Default::default(),
            exports: Vec::new(),
        })
    }

    /// `Memory = <bytes>[, <etag 0|1>]`.
    fn memory(&self, line: usize, value: &str) -> Result<(u64, bool), Error> {
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        let (bytes, etag) = match parts.as_slice() {
            [b] => (*b, "0"),
            [b, e] => (*b, *e),
            _ => {
                return Err(self.err(
                    line,
                    format!(
                        "`Memory` must be `<bytes>` or `<bytes>, <etag 0 or 1>`, found `{value}`"
                    ),
                ));
            }
        };
        let bytes = bytes.parse::<u64>().map_err(|_| {
            self.err(
                line,
                format!("`Memory` must be a whole number of bytes, found `{bytes}`"),
            )
        })?;
        rules::check_memory(bytes).map_err(|m| self.err(line, format!("`Memory` {m}")))?;
        let etag = match etag {
            "0" => false,
            "1" => true,
            other => {
                return Err(self.err(
                    line,
                    format!("the etag flag of `Memory` must be 0 or 1, found `{other}`"),
                ));
            }
        };
        Ok((bytes, etag))
    }

    /// `Channel = uri, alias, type, etag, gets, get_size, puts, put_size`.
    fn channel(&self, line: usize, value: &str) -> Result<Channel, Error> {
        let fields: Vec<&str> = value.split(',').map(str::trim).collect();
        let [uri, alias, kind, etag, gets, get_size, puts, put_size] = fields[..] else {
            return Err(self.err(
                line,
                format!(
                    "`Channel` needs 8 comma-separated fields ({}), found {}",
                    CHANNEL_FIELDS.join(", "),
                    fields.len()
                ),
            ));
        };

        let Some(short) = alias.strip_prefix("/dev/") else {
            return Err(self.err(
                line,
                format!("channel alias `{alias}` must start with `/dev/`, like `/dev/input`"),
            ));
        };
        let name = ChannelName::new(short).map_err(|m| self.err(line, m))?;

        if uri.contains(';') {
            return Err(self.err(
                line,
                format!(
                    "channel `{name}`: replicated channels are not supported yet (`{uri}` lists {} sources); give one source",
                    uri.split(';').count()
                ),
            ));
        }
        let source = match uri {
            "/dev/stdin" => ChannelSource::Stdio(StdStream::Stdin),
            "/dev/stdout" => ChannelSource::Stdio(StdStream::Stdout),
            "/dev/stderr" => ChannelSource::Stdio(StdStream::Stderr),
            "/dev/null" => ChannelSource::Null,
            u if NETWORK_SCHEMES.iter().any(|s| u.starts_with(s)) => {
                return Err(self.err(
                    line,
                    format!(
                        "channel `{name}`: network channel `{u}` connects VMs; zvm runs networks of VMs with `zvm job`"
                    ),
                ));
            }
            u => ChannelSource::File(
                rules::host_path(self.base, u)
                    .map_err(|m| self.err(line, format!("channel `{name}`: uri {m}")))?,
            ),
        };

        let kind = match kind {
            "0" => 0,
            "1" => 1,
            "2" => 2,
            "3" => 3,
            other => {
                return Err(self.err(
                    line,
                    format!("channel `{name}`: type must be 0, 1, 2 or 3, found `{other}`"),
                ));
            }
        };
        if etag != "0" && etag != "1" {
            return Err(self.err(
                line,
                format!("channel `{name}`: etag must be 0 or 1, found `{etag}`"),
            ));
        }
        let number = |field: &str, v: &str| {
            v.parse::<u64>().map_err(|_| {
                self.err(
                    line,
                    format!("channel `{name}`: `{field}` must be a whole number, found `{v}`"),
                )
            })
        };
        let (gets, get_size) = (number("gets", gets)?, number("get_size", get_size)?);
        let (puts, put_size) = (number("puts", puts)?, number("put_size", put_size)?);
        let readable = gets > 0 && get_size > 0;
        let writable = puts > 0 && put_size > 0;
        let Some(mode) = legacy_mode(kind, readable, writable) else {
            return Err(self.err(
                line,
                format!(
                    "channel `{name}` can neither read nor write; give non-zero `gets` and `get_size` to read, or `puts` and `put_size` to write"
                ),
            ));
        };

        if let ChannelSource::Stdio(stream) = source
            && let Some(misfit) = rules::stdio_misfit(stream, mode)
        {
            let s = stream.name();
            let m = match misfit {
                StdioMisfit::WritesInput => format!(
                    "channel `{name}`: `{s}` can only be read, but non-zero `puts` and `put_size` make the channel writable"
                ),
                StdioMisfit::ReadsOutput => format!(
                    "channel `{name}`: `{s}` can only be written, but non-zero `gets` and `get_size` make the channel readable"
                ),
                StdioMisfit::Seeks => format!(
                    "channel `{name}`: `{s}` is a stream and cannot seek, but type {kind} has random access; use type 0"
                ),
            };
            return Err(self.err(line, m));
        }
        if let Some(role) = rules::std_role_misfit(&name, mode) {
            let fix = if role == StdStream::Stdin {
                "give it non-zero `gets` and `get_size`"
            } else {
                "give it non-zero `puts` and `put_size`"
            };
            return Err(self.err(line, format!("{}; {fix}", rules::std_role_message(role))));
        }

        let mut quota = Quota::default();
        if readable {
            quota.reads = gets;
            quota.read_bytes = get_size;
        }
        if writable {
            quota.writes = puts;
            quota.write_bytes = put_size;
        }
        Ok(Channel {
            name,
            source,
            mode,
            quota,
            etag: None,
        })
    }
}

/// ZeroVM's channel `type` (bit 0: random reads, bit 1: random writes) and the directions its
/// quotas allow, as one zvm mode. Type 1's writes were append-only ("CDR").
fn legacy_mode(kind: u8, readable: bool, writable: bool) -> Option<AccessMode> {
    Some(match (readable, writable) {
        (true, true) => AccessMode::ReadWrite,
        (true, false) if kind & 1 == 0 => AccessMode::SequentialRead,
        (true, false) => AccessMode::RandomRead,
        (false, true) => match kind {
            0 => AccessMode::SequentialWrite,
            1 => AccessMode::Append,
            _ => AccessMode::RandomWrite,
        },
        (false, false) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZEROVM: &str = "\
# ZeroVM manifest of a word count mapper
Version = 20130611
Program = bin/wordcount.nexe
Timeout = 50
Memory = 4294967296, 1

Channel = /dev/stdin, /dev/stdin, 0, 0, 999999, 999999, 0, 0
Channel = /tmp/wordcount.stdout.log, /dev/stdout, 0, 0, 0, 0, 999999, 999999
Channel = /dev/null, /dev/stderr, 0, 0, 0, 0, 999999, 999999
Channel = data/input.txt, /dev/input, 1, 0, 4294967296, 4294967296, 0, 0
Channel = data/output.db, /dev/output, 3, 1, 100, 1048576, 200, 2097152
Channel = data/log.cdr, /dev/log, 1, 0, 0, 0, 1000, 65536
Channel = data/table.bin, /dev/table, 2, 0, 0, 0, 10, 4096
";

    fn chan<'a>(m: &'a Manifest, name: &str) -> &'a Channel {
        m.channel(name)
            .unwrap_or_else(|| panic!("no channel {name}"))
    }

    #[test]
    fn translates_a_zerovm_manifest() {
        assert!(looks_legacy(ZEROVM));
        let m = parse(Path::new("/jobs/wc.manifest"), ZEROVM, Path::new("/jobs")).unwrap();
        assert_eq!(m.program.path, Path::new("/jobs/bin/wordcount.nexe"));
        assert_eq!(m.program.hash, None);
        assert_eq!(m.argv0, "wordcount.nexe");
        assert!(m.args.is_empty());
        assert_eq!(m.limits.timeout, Duration::from_secs(50));
        assert_eq!(m.limits.memory, 4 << 30);
        assert!(m.memory_etag);
        let defaults = Limits::default();
        assert_eq!(m.limits.fuel, defaults.fuel);

        let stdin = chan(&m, "stdin");
        assert_eq!(stdin.source, ChannelSource::Stdio(StdStream::Stdin));
        assert_eq!(stdin.mode, AccessMode::SequentialRead);
        assert_eq!(stdin.quota.reads, 999999);
        assert_eq!(stdin.quota.write_bytes, Quota::default().write_bytes);

        let stdout = chan(&m, "stdout");
        assert_eq!(
            stdout.source,
            ChannelSource::File("/tmp/wordcount.stdout.log".into())
        );
        assert_eq!(stdout.mode, AccessMode::SequentialWrite);
        assert_eq!(stdout.quota.writes, 999999);
        assert_eq!(stdout.quota.reads, u64::MAX);

        assert_eq!(chan(&m, "stderr").source, ChannelSource::Null);

        let input = chan(&m, "input");
        assert_eq!(
            input.source,
            ChannelSource::File("/jobs/data/input.txt".into())
        );
        assert_eq!(input.mode, AccessMode::RandomRead);
        assert_eq!(input.quota.read_bytes, 4294967296);

        let output = chan(&m, "output");
        assert_eq!(output.mode, AccessMode::ReadWrite);
        assert_eq!(
            output.quota,
            Quota {
                reads: 100,
                read_bytes: 1048576,
                writes: 200,
                write_bytes: 2097152
            }
        );
        assert_eq!(chan(&m, "log").mode, AccessMode::Append);
        assert_eq!(chan(&m, "table").mode, AccessMode::RandomWrite);
        // Standard channels first, then the others in the manifest's order.
        let names: Vec<&str> = m.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "stdin", "stdout", "stderr", "input", "output", "log", "table"
            ]
        );
    }

    #[test]
    fn modes_follow_type_and_direction() {
        use AccessMode::*;
        let table = [
            (0, SequentialRead, SequentialWrite),
            (1, RandomRead, Append),
            (2, SequentialRead, RandomWrite),
            (3, RandomRead, RandomWrite),
        ];
        for (kind, read, write) in table {
            assert_eq!(legacy_mode(kind, true, false), Some(read));
            assert_eq!(legacy_mode(kind, false, true), Some(write));
            assert_eq!(legacy_mode(kind, true, true), Some(ReadWrite));
            assert_eq!(legacy_mode(kind, false, false), None);
        }
    }

    #[test]
    fn detection() {
        assert!(looks_legacy("\n# c\n  Version=20130611\n"));
        assert!(!looks_legacy("version = 1\n"));
        assert!(!looks_legacy("Version = \"1\"\n"));
        assert!(!looks_legacy("# Version = 20130611\nversion = 1\n"));
        assert!(!looks_legacy(""));
    }

    #[test]
    fn minimal_gets_standard_channels() {
        let m = parse(
            Path::new("m"),
            "Version = 20130611\nProgram = /a/b.wasm\n",
            Path::new("."),
        )
        .unwrap();
        let expected = Manifest::for_program("/a/b.wasm");
        assert_eq!(m, expected);
    }
}
