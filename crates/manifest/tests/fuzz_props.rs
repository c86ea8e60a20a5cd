//! Bounded property tests of the two manifest parsers against hostile text: arbitrary
//! strings, structured near-manifests, and mutations of every snapshot case.
//!
//! Manifests come from users and, through the gateway, from anyone, so `parse_toml` and
//! `parse_legacy` must never panic, whatever the bytes, and an error must always point at the
//! file it is about. A manifest that does parse must survive `canonical_toml` unchanged, since
//! the canonical text is what gets hashed and replayed. The case counts keep the whole file to
//! a few seconds in a debug build; the `manifest_toml` and `manifest_legacy` cargo-fuzz
//! targets in `fuzz/` run the same checks for as long as one likes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use zvm_manifest::{Manifest, canonical_toml, parse_legacy, parse_toml};

/// Cases per property: enough to reach most error paths of the parsers, few enough that the
/// file runs in a few seconds in a debug build.
const CASES: u32 = 500;

/// Origins the parsers are given: relative, nested, absolute, and odd but legal names.
const ORIGINS: [&str; 5] = [
    "m.toml",
    "dir/sub/m.toml",
    "/abs/m.manifest",
    "weird name é.toml",
    "",
];

/// Pieces that mean something to one of the two formats, spliced into text so that mutations
/// reach past the first syntax error.
const TOKENS: &[&str] = &[
    // TOML keys, tables and values.
    "version = 1\n",
    "version = 2\n",
    "program = \"p.wasm\"\n",
    "program = { path = \"p.wasm\" }\n",
    "hash = \"blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\"\n",
    "argv0 = \"a\"\n",
    "args = [\"x\", \"\\u0000\"]\n",
    "env = { A = \"b\", \"=\" = \"c\" }\n",
    "seed = 18446744073709551615\n",
    "memory_etag = true\n",
    "commit = \"never\"\n",
    "commit = \"sometimes\"\n",
    "[limits]\n",
    "memory = \"4 GiB\"\n",
    "memory = \"5 GiB\"\n",
    "fuel = 0\n",
    "timeout = \"0s\"\n",
    "timeout = 9223372036854775807\n",
    "scratch = \"unlimited\"\n",
    "open_files = 2\n",
    "open_files = 65537\n",
    "[clock]\n",
    "start = 1969-12-31T23:59:59Z\n",
    "start = 9999-12-31T23:59:59.999999999Z\n",
    "start = \"2024-01-01T00:00:00Z\"\n",
    "step = \"1ns\"\n",
    "step = 18446744073709551615\n",
    "[[channel]]\n",
    "name = \"stdin\"\n",
    "name = \"/dev/a/b\"\n",
    "name = \"..\"\n",
    "path = \"out.txt\"\n",
    "stdio = \"stderr\"\n",
    "null = true\n",
    "mode = \"read-write\"\n",
    "mode = \"append\"\n",
    "reads = 0\n",
    "read_bytes = \"10 MB\"\n",
    "writes = \"unlimited\"\n",
    "write_bytes = \"1 KiB\"\n",
    "[[mount]]\n",
    "path = \"/\"\n",
    "path = \"/dev\"\n",
    "path = \"a/../b\"\n",
    "image = \"i.tar\"\n",
    "dir = \"d\"\n",
    "writable = true\n",
    "etag = \"AF1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\"\n",
    "etag = \"blake3:af13\"\n",
    "[[export]]\n",
    "path = \"out\"\n",
    "tar = \"out.tar\"\n",
    "tar = \"out.txt\"\n",
    // TOML syntax.
    "\"",
    "'''",
    "\"\"\"",
    "[",
    "]",
    "[[",
    "{",
    "}",
    "=",
    ",",
    ".",
    "#",
    "\\",
    "\\u",
    "\\U0010FFFF",
    "\r\n",
    "\n",
    "\t",
    "\u{feff}",
    "\u{0}",
    "é",
    "💥",
    // Numbers and units.
    "0",
    "-1",
    "1e400",
    "nan",
    "inf",
    "0x10",
    "1_000",
    "18446744073709551616",
    "9223372036854775808",
    " KiB",
    " TB",
    "ms",
    "h",
    // Legacy keys and values.
    "Version = 20130611\n",
    "Version = 1\n",
    "Program = p.nexe\n",
    "Timeout = 50\n",
    "Memory = 4294967296, 0\n",
    "Memory = 1, 1\n",
    "Channel = /dev/stdin, /dev/stdin, 0, 0, 1, 1, 0, 0\n",
    "Channel = in.txt, /dev/input, 3, 0, 9, 9, 9, 9\n",
    "Channel = tcp:1:2, /dev/net, 0, 0, 1, 1, 0, 0\n",
    "Channel = /dev/null, /dev/stdout, 0, 0, 0, 0, 1, 1\n",
    "Node = 1\n",
    "NameServer = udp:1.2.3.4:5\n",
    "Job = /tmp/job\n",
];

/// The snapshot cases, valid and not: the seeds of the mutation properties.
fn seeds() -> &'static [(PathBuf, String)] {
    static SEEDS: std::sync::OnceLock<Vec<(PathBuf, String)>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
        let mut seeds: Vec<(PathBuf, String)> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml" || e == "legacy"))
            .map(|p| {
                let text = fs::read_to_string(&p).unwrap();
                (p, text)
            })
            .collect();
        // Directory order is the file system's; sort so that a failing seed reproduces.
        seeds.sort();
        assert!(
            seeds
                .iter()
                .filter(|(p, _)| p.file_name().unwrap().to_string_lossy().starts_with("ok-"))
                .count()
                >= 5,
            "the ok-* snapshot cases are missing from {}",
            dir.display()
        );
        seeds
    })
}

/// One edit of a manifest's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replaces the byte at (index modulo length) with this one.
    Flip(usize, u8),
    /// Inserts a dictionary token at (index modulo length + 1).
    Token(usize, usize),
    /// Inserts arbitrary bytes.
    Insert(usize, Vec<u8>),
    /// Removes up to this many bytes.
    Delete(usize, usize),
    /// Cuts the text short.
    Truncate(usize),
    /// Repeats the line that holds this index.
    DuplicateLine(usize),
    /// Swaps two lines.
    SwapLines(usize, usize),
    /// Replaces the run of digits that holds or follows this index with a token.
    Number(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ix = any::<usize>();
    prop_oneof![
        3 => (ix, any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        3 => (ix, 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Token(i, t)),
        1 => (ix, proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (ix, 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => ix.prop_map(Mutation::Truncate),
        1 => ix.prop_map(Mutation::DuplicateLine),
        1 => (ix, ix).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        2 => (ix, 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Number(i, t)),
    ]
}

/// The start of the line holding byte `at`, and the start of the next one.
fn line_around(bytes: &[u8], at: usize) -> (usize, usize) {
    let start = bytes[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let end = bytes[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| at + i + 1);
    (start, end)
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    // Every index is taken modulo the current length, so shrinking a case keeps it valid.
    let at = |i: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Flip(i, b) => {
            if len > 0 {
                bytes[at(*i)] = *b;
            }
        }
        Mutation::Token(i, t) => {
            let pos = i % (len + 1);
            bytes.splice(pos..pos, TOKENS[*t].bytes());
        }
        Mutation::Insert(i, b) => {
            let pos = i % (len + 1);
            bytes.splice(pos..pos, b.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let start = at(*i);
            let end = (start + n).min(len);
            bytes.drain(start..end);
        }
        Mutation::Truncate(i) => bytes.truncate(at(*i)),
        Mutation::DuplicateLine(i) => {
            if len > 0 {
                let (s, e) = line_around(bytes, at(*i));
                let line = bytes[s..e].to_vec();
                bytes.splice(e..e, line);
            }
        }
        Mutation::SwapLines(a, b) => {
            if len > 0 {
                let mut lines: Vec<&[u8]> = bytes.split_inclusive(|&c| c == b'\n').collect();
                let n = lines.len();
                lines.swap(a % n, b % n);
                *bytes = lines.concat();
            }
        }
        Mutation::Number(i, t) => {
            let mut s = at(*i);
            while s < len && !bytes[s].is_ascii_digit() {
                s += 1;
            }
            let mut e = s;
            while e < len && (bytes[e].is_ascii_digit() || bytes[e] == b'_') {
                e += 1;
            }
            bytes.splice(s..e, TOKENS[*t].trim_end().bytes());
        }
    }
}

/// A seed (by index) with mutations applied, as text: invalid UTF-8 from a flip becomes U+FFFD,
/// as it would when a caller decodes a file lossily.
fn mutated() -> impl Strategy<Value = (String, String)> {
    let ok: Vec<usize> = (0..seeds().len())
        .filter(|&i| {
            seeds()[i]
                .0
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ok-")
        })
        .collect();
    // Half the cases start from a manifest that parses, so that a few mutations still leave
    // something that does.
    let seed = prop_oneof![(0..ok.len()).prop_map(move |i| ok[i]), 0..seeds().len(),];
    (seed, proptest::collection::vec(mutation(), 0..4)).prop_map(|(seed, mutations)| {
        let (path, text) = &seeds()[seed];
        let mut bytes = text.clone().into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        (name, String::from_utf8_lossy(&bytes).into_owned())
    })
}

/// A TOML manifest built key by key from pools of values, most of them valid, so that many
/// cases parse and reach resolution and the canonical round trip.
fn toml_like() -> impl Strategy<Value = String> {
    fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
        any::<usize>().prop_map(move |v| value(pool, v))
    }
    /// One of `values`: those marked `!` (invalid ones) only one time in eight, so that most
    /// manifests get through to resolution.
    fn value(values: &[&'static str], v: usize) -> &'static str {
        let valid: Vec<&str> = values
            .iter()
            .copied()
            .filter(|x| !x.starts_with('!'))
            .collect();
        let chosen = if v.is_multiple_of(8) || valid.is_empty() {
            values[(v / 8) % values.len()]
        } else {
            valid[(v / 8) % valid.len()]
        };
        chosen.strip_prefix('!').unwrap_or(chosen)
    }
    fn keys(pool: &'static [(&'static str, &'static [&'static str])]) -> BoxedStrategy<String> {
        proptest::collection::vec((0..pool.len(), any::<usize>()), 0..pool.len() + 1)
            .prop_map(move |chosen| {
                let mut seen = BTreeSet::new();
                let mut out = String::new();
                for (k, v) in chosen {
                    // Repeating a key is a plain syntax error; let the pools find harder ones.
                    if seen.insert(k) {
                        let (key, values) = pool[k];
                        out += &format!("{key} = {}\n", value(values, v));
                    }
                }
                out
            })
            .boxed()
    }
    const TOP: &[(&str, &[&str])] = &[
        ("argv0", &["\"app\"", "\"\"", "!\"a\\u0000\""]),
        (
            "args",
            &["[]", "[\"-v\", \"/dev/input\"]", "![1]", "[\"\\n\\t\\\"\"]"],
        ),
        (
            "env",
            &[
                "{}",
                "{ LANG = \"C\" }",
                "!{ \"A=B\" = \"x\" }",
                "!{ \"\" = \"x\" }",
                "{ A = \"\\u00e9\" }",
            ],
        ),
        ("seed", &["0", "42", "18446744073709551615", "!-1"]),
        ("memory_etag", &["true", "false", "!1"]),
        (
            "commit",
            &[
                "\"on-success\"",
                "\"always\"",
                "\"never\"",
                "!\"sometimes\"",
            ],
        ),
    ];
    const LIMITS: &[(&str, &[&str])] = &[
        (
            "memory",
            &[
                "\"64 MiB\"",
                "65536",
                "\"4 GiB\"",
                "\"4 GB\"",
                "!0",
                "\"1 KiB\"",
                "!\"unlimited\"",
            ],
        ),
        (
            "fuel",
            &[
                "1",
                "1_000_000",
                "!\"unlimited\"",
                "!0",
                "9223372036854775807",
            ],
        ),
        (
            "timeout",
            &[
                "\"1500ms\"",
                "\"5s\"",
                "\"1h\"",
                "1",
                "9223372036854775807",
                "\"0.5s\"",
                "\"1ns\"",
            ],
        ),
        (
            "scratch",
            &["\"16 MiB\"", "0", "18446744073709551615", "!\"unlimited\""],
        ),
        ("open_files", &["3", "64", "65536", "!2", "!65537"]),
    ];
    const CLOCK: &[(&str, &[&str])] = &[
        (
            "start",
            &[
                "2024-01-01T00:00:00Z",
                "1970-01-01T00:00:00Z",
                "2024-01-01T00:00:00.123456789+05:30",
                "!2024-01-01",
                "2554-07-21T23:34:33Z",
                "!0",
                "\"2024-01-01T00:00:00Z\"",
            ],
        ),
        (
            "step",
            &[
                "\"1ms\"",
                "0",
                "\"0s\"",
                "1000",
                "18446744073709551615",
                "\"1us\"",
            ],
        ),
    ];
    const NAMES: &[&str] = &[
        "\"input\"",
        "\"/dev/output\"",
        "\"stdin\"",
        "\"stdout\"",
        "\"stderr\"",
        "\"out/reduce-1\"",
        "\"a.b_c-d\"",
        "!\"bad name\"",
    ];
    const SOURCES: &[&str] = &[
        "path = \"in.txt\"",
        "path = \"/abs/out.bin\"",
        "stdio = \"stdin\"",
        "stdio = \"stdout\"",
        "stdio = \"stderr\"",
        "null = true",
        "!path = \"\"",
    ];
    const MODES: &[&str] = &[
        "\"read\"",
        "\"random-read\"",
        "\"write\"",
        "\"random-write\"",
        "\"append\"",
        "\"read-write\"",
    ];
    const QUOTAS: &[(&str, &[&str])] = &[
        ("reads", &["0", "1000", "\"unlimited\""]),
        ("read_bytes", &["\"10 MB\"", "1", "\"unlimited\""]),
        ("writes", &["100", "\"unlimited\""]),
        ("write_bytes", &["\"1 MiB\"", "\"unlimited\"", "0"]),
    ];
    const MOUNT_PATHS: &[&str] = &[
        "\"/lib\"",
        "\"work\"",
        "\"/\"",
        "\".\"",
        "\"/a/b\"",
        "!\"/dev\"",
        "\"x/\"",
    ];
    const MOUNT_SOURCES: &[&str] = &[
        "image = \"i.tar\"",
        "dir = \"/tmp/work\"\nwritable = true",
        "dir = \"root\"",
        "dir = \"d\"\nwritable = false",
    ];
    const ETAGS: &[&str] = &[
        "\"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\"",
        "\"blake3:AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262\"",
        "!\"blake3:af13\"",
        "!\"sha256:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\"",
    ];
    const EXPORT_PATHS: &[&str] = &[
        "\"/out\"",
        "\"out/\"",
        "\"./a/b\"",
        "!\"/\"",
        "!\"/dev/x\"",
        "!\"a/../b\"",
    ];
    const EXPORT_TARS: &[&str] = &[
        "\"out.tar\"",
        "\"/abs/b.tar\"",
        "\"./c.tar\"",
        "!\"/abs/out.bin\"",
        "!\"\"",
    ];
    const PROGRAMS: &[&str] = &[
        "program = \"p.wasm\"",
        "program = \"/abs/p.wasm\"",
        "program = { path = \"bin/app.wasm\", hash = \"blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\" }",
        "program = { path = \"x y/é.wasm\" }",
    ];
    let channel = (
        pick(NAMES),
        pick(SOURCES),
        pick(MODES),
        keys(QUOTAS),
        proptest::option::weighted(0.25, pick(ETAGS)),
    )
        .prop_map(|(n, s, m, q, e)| {
            let etag = e.map(|e| format!("etag = {e}\n")).unwrap_or_default();
            format!("\n[[channel]]\nname = {n}\n{s}\nmode = {m}\n{q}{etag}")
        });
    let export = (pick(EXPORT_PATHS), pick(EXPORT_TARS))
        .prop_map(|(p, t)| format!("\n[[export]]\npath = {p}\ntar = {t}\n"));
    let mount = (pick(MOUNT_PATHS), pick(MOUNT_SOURCES))
        .prop_map(|(p, s)| format!("\n[[mount]]\npath = {p}\n{s}\n"));
    (
        pick(PROGRAMS),
        keys(TOP),
        proptest::option::of(keys(LIMITS)),
        proptest::option::of(keys(CLOCK)),
        proptest::collection::vec(channel, 0..4),
        proptest::collection::vec(mount, 0..3),
        proptest::collection::vec(export, 0..3),
    )
        .prop_map(|(program, top, limits, clock, channels, mounts, exports)| {
            let mut out = format!("version = 1\n{program}\n{top}");
            if let Some(l) = limits {
                out += &format!("\n[limits]\n{l}");
            }
            if let Some(c) = clock {
                out += &format!("\n[clock]\n{c}");
            }
            out + &channels.concat() + &mounts.concat() + &exports.concat()
        })
}

/// A legacy manifest built line by line from pools of values, most of them valid.
fn legacy_like() -> impl Strategy<Value = String> {
    const LINES: &[&str] = &[
        "Program = p.nexe",
        "Program = /opt/zerovm/hello.nexe",
        "Timeout = 50",
        "Timeout = 0",
        "Timeout = 18446744073709551615",
        "Memory = 4294967296, 0",
        "Memory = 65536, 1",
        "Memory = 0, 0",
        "Channel = /dev/stdin, /dev/stdin, 0, 0, 999999, 999999, 0, 0",
        "Channel = /tmp/o.log, /dev/stdout, 0, 0, 0, 0, 999999, 999999",
        "Channel = /dev/null, /dev/stderr, 0, 0, 0, 0, 1, 1",
        "Channel = input.txt, /dev/input, 1, 0, 100, 4096, 0, 0",
        "Channel = out.txt, /dev/output, 2, 0, 0, 0, 100, 4096",
        "Channel = both.txt, /dev/both, 3, 1, 9, 9, 9, 9",
        "Channel = /dev/null, /dev/nothing, 0, 0, 0, 0, 0, 0",
        "Channel = tcp:127.0.0.1:1, /dev/net, 0, 0, 1, 1, 0, 0",
        "Channel = a, /dev/a, 4, 0, 1, 1, 1, 1",
        "Channel = a, /dev/a",
        "# a comment",
        "",
        "Node = 1",
        "Unknown = 1",
    ];
    (
        proptest::collection::vec(0..LINES.len(), 0..8),
        prop_oneof![Just("\n"), Just("\r\n")],
    )
        .prop_map(|(lines, eol)| {
            let mut out = format!("Version = 20130611{eol}");
            for l in lines {
                out += LINES[l];
                out += eol;
            }
            out
        })
}

/// What every parse must satisfy, whatever the text: no panic (the test runner catches one),
/// an error that names `origin` first, and a manifest whose canonical form reads back equal.
fn check(text: &str, origin: &str) -> Result<(), TestCaseError> {
    let origin = Path::new(origin);
    for (format, result) in [
        ("toml", parse_toml(text, origin)),
        ("legacy", parse_legacy(text, origin)),
    ] {
        match result {
            Ok(m) => check_canonical(&m, format)?,
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(!shown.is_empty(), "{format}: empty error message");
                prop_assert!(
                    shown.starts_with(&origin.display().to_string()),
                    "{format}: error does not start with the origin `{}`: {shown}",
                    origin.display()
                );
                prop_assert!(
                    shown.len() > origin.as_os_str().len(),
                    "{format}: the error is only the origin: {shown}"
                );
            }
        }
    }
    Ok(())
}

fn check_canonical(m: &Manifest, format: &str) -> Result<(), TestCaseError> {
    let text = canonical_toml(m);
    // An origin without a directory leaves the (already resolved) paths as they are.
    match parse_toml(&text, Path::new("canonical.toml")) {
        Ok(again) => {
            prop_assert_eq!(
                &again,
                m,
                "{}: canonical text reads back different:\n{}",
                format,
                text
            );
            prop_assert_eq!(
                canonical_toml(&again),
                text,
                "{}: canonical text is not stable",
                format
            );
        }
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "{format}: canonical text does not parse: {e}\n{text}"
            )));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        // Failures are reported with their minimal case; a regression becomes a named test
        // in this file rather than a seed file beside it.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>(), origin in 0..ORIGINS.len()) {
        check(&text, ORIGINS[origin])?;
    }

    #[test]
    fn printable_noise_never_panics(text in "[ -~\n\t\r]{0,200}", origin in 0..ORIGINS.len()) {
        check(&text, ORIGINS[origin])?;
    }

    #[test]
    fn toml_like_text_never_panics(text in toml_like(), origin in 0..ORIGINS.len()) {
        check(&text, ORIGINS[origin])?;
    }

    #[test]
    fn legacy_like_text_never_panics(text in legacy_like(), origin in 0..ORIGINS.len()) {
        check(&text, ORIGINS[origin])?;
    }

    #[test]
    fn mutated_snapshots_never_panic((_seed, text) in mutated(), origin in 0..ORIGINS.len()) {
        check(&text, ORIGINS[origin])?;
    }
}

/// The mutation properties would be hollow if the seeds did not parse to begin with; this
/// also runs the canonical check on every ok case with every origin.
#[test]
fn every_ok_seed_parses_and_round_trips() {
    let mut ok = 0;
    for (path, text) in seeds() {
        let name = path.file_name().unwrap().to_string_lossy();
        if !name.starts_with("ok-") {
            continue;
        }
        for origin in ORIGINS {
            let parsed = if name.ends_with(".legacy") {
                parse_legacy(text, Path::new(origin))
            } else {
                parse_toml(text, Path::new(origin))
            };
            let m = parsed.unwrap_or_else(|e| panic!("{name} from `{origin}`: {e}"));
            check_canonical(&m, &name).unwrap_or_else(|e| panic!("{name} from `{origin}`: {e}"));
            ok += 1;
        }
    }
    assert!(ok >= 5 * ORIGINS.len(), "only {ok} ok parses");
}
