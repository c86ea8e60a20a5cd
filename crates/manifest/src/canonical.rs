//! The canonical TOML rendering of a resolved manifest: one byte sequence per meaning, so that
//! hashing it identifies a run's configuration for replay and caching.
//!
//! Every value is explicit (defaults included), paths are as resolved, keys are sorted within
//! each table after the leading `version`, and strings are always basic strings with one fixed
//! escaping. It is written by hand rather than by a TOML serialiser so that the bytes cannot
//! change under us when a dependency changes its formatting choices.
//!
//! Tables follow the top-level keys in a fixed order: `[clock]` and `[limits]`, then the
//! arrays of tables `[[channel]]`, `[[export]]` and `[[mount]]`, each in the manifest's
//! resolved order (exports, like mounts, in declaration order).
//!
//! `commit` is always written, even at its default `on-success`, like every other key that
//! has a value: a manifest that spells the default and one that leaves it out mean the same
//! and so give the same bytes, and the policy is part of what is hashed, since a dry run
//! (`never`) and a run that commits are different configurations. Optional values that have
//! no default to spell are written only when present: the program's `hash`, a channel's
//! `etag` (as 64 lowercase hex digits without the `blake3:` prefix, however it was written),
//! and exports (an export's `path` is already normalised, so `out/` and `/out` give the same
//! bytes).

use std::fmt::Write as _;
use std::path::Path;

use crate::document::FORMAT_VERSION;
use crate::model::{ChannelSource, Manifest, MountSource};
use crate::resolve::UNLIMITED;
use crate::units;

/// Renders `m` canonically; see [`crate::canonical_toml`].
pub(crate) fn render(m: &Manifest) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the `let _` keeps that out of every line below.
    let w = &mut out;
    let _ = writeln!(w, "version = {FORMAT_VERSION}");
    let _ = writeln!(
        w,
        "args = [{}]",
        m.args
            .iter()
            .map(|a| string(a))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(w, "argv0 = {}", string(&m.argv0));
    let _ = writeln!(w, "commit = {}", string(m.commit.as_str()));
    let env: Vec<String> = m
        .env
        .iter()
        .map(|(k, v)| format!("{} = {}", key(k), string(v)))
        .collect();
    if env.is_empty() {
        let _ = writeln!(w, "env = {{}}");
    } else {
        let _ = writeln!(w, "env = {{ {} }}", env.join(", "));
    }
    let _ = writeln!(w, "memory_etag = {}", m.memory_etag);
    match &m.program.hash {
        Some(h) => {
            let _ = writeln!(
                w,
                "program = {{ hash = {}, path = {} }}",
                string(&h.to_string()),
                path(&m.program.path)
            );
        }
        None => {
            let _ = writeln!(w, "program = {{ path = {} }}", path(&m.program.path));
        }
    }
    let _ = writeln!(w, "seed = {}", m.seed);

    let _ = writeln!(w, "\n[clock]");
    let _ = writeln!(w, "start = {}", units::format_unix_nanos(m.clock.start_ns));
    let _ = writeln!(w, "step = {}", m.clock.step_ns);

    let l = &m.limits;
    let _ = writeln!(w, "\n[limits]");
    let _ = writeln!(w, "fuel = {}", l.fuel);
    let _ = writeln!(w, "memory = {}", l.memory);
    let _ = writeln!(w, "open_files = {}", l.open_files);
    let _ = writeln!(w, "scratch = {}", l.scratch);
    let _ = writeln!(
        w,
        "timeout = {}",
        string(&units::format_duration(l.timeout))
    );

    for c in &m.channels {
        let _ = writeln!(w, "\n[[channel]]");
        if let Some(etag) = &c.etag {
            let _ = writeln!(w, "etag = {}", string(&etag.hex()));
        }
        let _ = writeln!(w, "mode = {}", string(c.mode.as_str()));
        let _ = writeln!(w, "name = {}", string(c.name.as_str()));
        if let ChannelSource::Null = c.source {
            let _ = writeln!(w, "null = true");
        }
        if let ChannelSource::File(p) = &c.source {
            let _ = writeln!(w, "path = {}", path(p));
        }
        // Only job members have pipes; their canonical form names the pipe by its index.
        if let ChannelSource::Pipe(i) = c.source {
            let _ = writeln!(w, "pipe = {i}");
        }
        // Quotas of a direction the mode lacks never apply, and the TOML format refuses them;
        // leaving them out also gives such manifests the same bytes.
        if c.mode.can_read() {
            let _ = writeln!(w, "read_bytes = {}", quota(c.quota.read_bytes));
            let _ = writeln!(w, "reads = {}", quota(c.quota.reads));
        }
        if let ChannelSource::Stdio(s) = c.source {
            let _ = writeln!(w, "stdio = {}", string(s.name()));
        }
        if c.mode.can_write() {
            let _ = writeln!(w, "write_bytes = {}", quota(c.quota.write_bytes));
            let _ = writeln!(w, "writes = {}", quota(c.quota.writes));
        }
    }

    for e in &m.exports {
        let _ = writeln!(w, "\n[[export]]");
        let _ = writeln!(w, "path = {}", string(&e.guest));
        let _ = writeln!(w, "tar = {}", path(&e.path));
    }

    for mount in &m.mounts {
        let _ = writeln!(w, "\n[[mount]]");
        match &mount.source {
            MountSource::Image(p) => {
                let _ = writeln!(w, "image = {}", path(p));
                let _ = writeln!(w, "path = {}", string(&mount.guest));
            }
            MountSource::Dir { path: p, writable } => {
                let _ = writeln!(w, "dir = {}", path(p));
                let _ = writeln!(w, "path = {}", string(&mount.guest));
                let _ = writeln!(w, "writable = {writable}");
            }
        }
    }
    out
}

fn quota(n: u64) -> String {
    if n == u64::MAX {
        string(UNLIMITED)
    } else {
        n.to_string()
    }
}

/// A path as a TOML string. Manifests are UTF-8, so a path that is not (only possible in one
/// built by other means than parsing) is rendered lossily.
fn path(p: &Path) -> String {
    string(&p.to_string_lossy())
}

/// A bare key when TOML allows one, else a quoted key.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        string(k)
    }
}

/// A TOML basic string with the escapes TOML requires and nothing else.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn parse(text: &str) -> Manifest {
        crate::parse_toml(text, Path::new("/srv/jobs/m.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    const FULL: &str = r#"
version = 1
program = { path = "bin/hello.wasm", hash = "blake3:AF1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" }
argv0 = "hel\"lo"
args = ["a b", "\u0001", "ü"]
env = { LANG = "C", "WEIRD KEY" = "x=y", "" = "" }
seed = 18446744073709551615
memory_etag = true
commit = "never"

[limits]
memory = "4 GiB"
fuel = 18446744073709551615
timeout = "1500ms"
scratch = 18446744073709551614
open_files = 3

[clock]
start = 2024-02-29T12:34:56.789+02:00
step = "3us"

[[channel]]
name = "/dev/input"
path = "in.txt"
mode = "random-read"
etag = "blake3:AF1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
reads = 10
read_bytes = "1 KiB"

[[channel]]
name = "out/map-1"
null = true
mode = "read-write"
writes = "unlimited"

[[channel]]
name = "stdout"
stdio = "stderr"
mode = "append"
write_bytes = 0

[[export]]
path = "./results/"
tar = "results.tar"

[[export]]
path = "/a"
tar = "/abs/a.tar"

[[mount]]
path = "data"
image = "/images/data.tar"

[[mount]]
path = "."
dir = "scratch"
writable = true
"#;

    #[test]
    fn round_trip() {
        // The empty env name is refused by the parser, so drop it for this test.
        let full = FULL.replace(", \"\" = \"\"", "");
        let m = parse(&full);
        assert_eq!(m.limits.timeout, Duration::from_millis(1500));
        assert_eq!(m.seed, u64::MAX);
        assert_eq!(m.commit, CommitPolicy::Never);
        assert_eq!(m.exports.len(), 2);
        let text = render(&m);
        // The pin is written one way, whatever the case and prefix it was given with.
        assert!(
            text.contains(
                "\n[[channel]]\netag = \"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\"\nmode = \"random-read\"\nname = \"input\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\n[[export]]\npath = \"/results\"\ntar = \"/srv/jobs/results.tar\"\n\n[[export]]\npath = \"/a\"\ntar = \"/abs/a.tar\"\n\n[[mount]]\n"
            ),
            "{text}"
        );
        let again = parse(&text);
        assert_eq!(again, m, "{text}");
        assert_eq!(render(&again), text);
    }

    #[test]
    fn round_trip_of_defaults_and_of_a_built_manifest() {
        let m = parse("version = 1\nprogram = \"p.wasm\"\n");
        assert_eq!(parse(&render(&m)), m);

        let mut built = Manifest::for_program("/abs/prog.wasm");
        built.limits.timeout = Duration::new(3, 7);
        built.clock.start_ns = u64::MAX;
        built.env.insert("a.b".into(), "tab\there".into());
        built.mounts.push(Mount {
            guest: "/".into(),
            source: MountSource::Dir {
                path: PathBuf::from("/host"),
                writable: false,
            },
        });
        built.commit = CommitPolicy::Always;
        built.exports.push(Export {
            guest: "/out".into(),
            path: PathBuf::from("/host/out.tar"),
        });
        let mut input = Channel::stdio(StdStream::Stdin);
        input.name = ChannelName::new("input").unwrap();
        input.source = ChannelSource::File("/in.txt".into());
        input.etag = Some(ContentHash::of(b"pinned"));
        built.channels.push(input);
        assert_eq!(built.check(), Ok(()));
        assert_eq!(parse(&render(&built)), built);
    }

    #[test]
    fn layout_is_sorted_and_stable() {
        let m = parse("version = 1\nprogram = \"p.wasm\"\n");
        let expected = format!(
            "version = 1
args = []
argv0 = \"p.wasm\"
commit = \"on-success\"
env = {{}}
memory_etag = false
program = {{ path = \"/srv/jobs/p.wasm\" }}
seed = 0

[clock]
start = 1970-01-01T00:00:00Z
step = 1000

[limits]
fuel = {DEFAULT_FUEL}
memory = {DEFAULT_MEMORY}
open_files = {DEFAULT_OPEN_FILES}
scratch = {DEFAULT_SCRATCH}
timeout = \"60s\"

[[channel]]
mode = \"read\"
name = \"stdin\"
read_bytes = \"unlimited\"
reads = \"unlimited\"
stdio = \"stdin\"

[[channel]]
mode = \"write\"
name = \"stdout\"
stdio = \"stdout\"
write_bytes = {DEFAULT_WRITE_BYTES}
writes = \"unlimited\"

[[channel]]
mode = \"write\"
name = \"stderr\"
stdio = \"stderr\"
write_bytes = {DEFAULT_WRITE_BYTES}
writes = \"unlimited\"
"
        );
        assert_eq!(render(&m), expected);
    }

    #[test]
    fn equal_meaning_gives_equal_bytes() {
        let a = parse("version = 1\nprogram = \"p.wasm\"\n[limits]\nmemory = \"256 MiB\"\n");
        let b = parse(
            r#"
version = 1
program = { path = "p.wasm" }
argv0 = "p.wasm"
env = {}
seed = 0
commit = "on-success"
[limits]
memory = 268435456
timeout = "60000ms"
[clock]
start = "1970-01-01T00:00:00Z"
step = "1us"
[[channel]]
name = "/dev/stdin"
stdio = "stdin"
mode = "read"
reads = "unlimited"
[[channel]]
name = "stdout"
stdio = "stdout"
write_bytes = "1 GiB"
"#,
        );
        assert_eq!(render(&a), render(&b));
        // Pins and exports are equal however they are spelled.
        let pin = |etag: &str, export: &str| {
            parse(&format!(
                "version = 1\nprogram = \"p.wasm\"\n[[channel]]\nname = \"in\"\npath = \"in\"\n\
                 mode = \"read\"\netag = \"{etag}\"\n[[export]]\npath = \"{export}\"\ntar = \"o.tar\"\n"
            ))
        };
        let hex = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        let upper = format!("blake3:{}", hex.to_uppercase());
        assert_eq!(render(&pin(hex, "/out")), render(&pin(&upper, "./out/")));
        assert_ne!(render(&pin(hex, "/out")), render(&pin(hex, "/out/sub")));
        // The commit policy is part of the configuration.
        let never = parse("version = 1\nprogram = \"p.wasm\"\ncommit = \"never\"\n");
        assert_ne!(render(&a), render(&never));
        // Paths are not normalised (the runtime resolves them), so these differ.
        let c = parse("version = 1\nprogram = \"./p.wasm\"\nargv0 = \"p.wasm\"\n");
        assert_ne!(render(&a), render(&c));
    }

    #[test]
    fn strings_escape() {
        assert_eq!(string("a\"b\\c\n\u{7f}é"), "\"a\\\"b\\\\c\\n\\u007Fé\"");
        assert_eq!(key("LANG_x-1"), "LANG_x-1");
        assert_eq!(key("a.b"), "\"a.b\"");
    }
}
