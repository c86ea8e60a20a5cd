//! zvm's VM manifests: what the user wrote, parsed and checked, and nothing else.
//!
//! Two phases: parse (TOML syntax, or the legacy ZeroVM key = value format) and resolve
//! (meaning: defaults, paths, impossible combinations) into [`Manifest`], the fully checked
//! form the runtime consumes. This crate knows nothing of wasmtime.
//!
//! A guided tour, in the order text flows through it:
//! - `document`: TOML text to a raw mirror of the file with spans (syntax, version, shape);
//! - `resolve`: the raw mirror to a [`Manifest`] (units, defaults, paths, combinations);
//! - `legacy`: ZeroVM's `Key = value` manifests straight to a [`Manifest`];
//! - `rules` and `units`: what both formats share, so they cannot drift apart;
//! - `canonical`: a [`Manifest`] back to one canonical TOML text, for hashing;
//! - `job`: job descriptions (TOML, JSON, ZeroCloud system maps) resolved into a [`Job`] of
//!   VM manifests and pipes, reusing the manifest's phases for each group;
//! - `model`: the resolved form itself, which the CLI can also build directly.
//!
//! The formats are documented for users in `docs/manifest.md` and `docs/jobs.md`.

mod canonical;
mod document;
mod error;
mod job;
mod legacy;
mod model;
mod resolve;
mod rules;
mod units;

use std::path::Path;

pub use error::Error;
pub use job::{
    DEFAULT_RETRIES, MAX_JOB_NAME_LEN, MAX_MEMBERS, MAX_PIPES, MAX_REPLICAS, MAX_RETRIES,
};
pub use model::*;
pub use units::{parse_duration, parse_size};

/// The TOML manifest format version this zvm reads (`version = 1`).
pub const FORMAT_VERSION: i64 = document::FORMAT_VERSION;

/// The legacy ZeroVM manifest format version this zvm reads (`Version = 20130611`).
pub const LEGACY_VERSION: u64 = legacy::LEGACY_VERSION;

/// Reads and resolves the manifest at `path`, in either format: legacy if its first line that
/// is neither blank nor a `#` comment is `Version = <number>`, TOML otherwise.
///
/// Messages name `path` as given; relative paths inside the manifest are joined to the
/// manifest's directory made absolute, so the result does not depend on the directory the
/// runtime later works in.
pub fn parse_file(path: &Path) -> Result<Manifest, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Some editors start UTF-8 files with a byte order mark; it carries no meaning, and
    // dropping it keeps format detection and column numbers right.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| base_dir(path).to_path_buf());
    if legacy::looks_legacy(text) {
        legacy::parse(path, text, &base)
    } else {
        toml_manifest(text, path, &base)
    }
}

/// Parses and resolves a TOML manifest. `origin` is the manifest's path: it names the file in
/// messages, and relative paths inside are joined to its directory (as given, not made
/// absolute).
pub fn parse_toml(text: &str, origin: &Path) -> Result<Manifest, Error> {
    toml_manifest(text, origin, base_dir(origin))
}

/// Parses and translates a legacy ZeroVM manifest (format version 20130611). `origin` is
/// used as in [`parse_toml`].
pub fn parse_legacy(text: &str, origin: &Path) -> Result<Manifest, Error> {
    legacy::parse(origin, text, base_dir(origin))
}

/// The canonical TOML text of a resolved manifest: the leading `version`, then every key
/// explicit (defaults included, `commit` too) and sorted within its table, channels, exports
/// and mounts in their order, quotas only for the directions a channel's mode has,
/// `u64::MAX` quotas as `"unlimited"`, etag pins as bare lowercase hex. Equal manifests give
/// equal bytes, and [`parse_toml`] gives the manifest back (with absolute paths, as
/// [`parse_file`] produces, whatever the origin).
pub fn canonical_toml(m: &Manifest) -> String {
    canonical::render(m)
}

/// Reads and resolves the job description at `path`: TOML, JSON, or a ZeroCloud system map
/// (a JSON array of nodes). A `.toml` or `.json` extension decides the syntax; otherwise the
/// content does (`{` starts JSON, `[` followed by `{` or `]` a system map, anything else is
/// TOML).
///
/// Messages name `path` as given; relative paths inside are joined to the job file's
/// directory made absolute, and wildcards are matched there. A job without a `name` is named
/// after the file's stem.
pub fn parse_job_file(path: &Path) -> Result<Job, Error> {
    job::parse_file(path)
}

/// Parses and resolves a TOML job. `origin` names the file in messages and gives the job's
/// default name (its stem); relative host paths are joined to `base`, and wildcards are
/// matched in it, so this reads the file system when a group has a wildcard input.
pub fn parse_job_toml(text: &str, origin: &Path, base: &Path) -> Result<Job, Error> {
    job::parse_toml(text, origin, base)
}

/// Parses and resolves a JSON job: an object (the native format, as in TOML) or an array (a
/// ZeroCloud system map, translated). `origin` and `base` are used as in [`parse_job_toml`].
pub fn parse_job_json(text: &str, origin: &Path, base: &Path) -> Result<Job, Error> {
    job::parse_json(text, origin, base)
}

fn toml_manifest(text: &str, origin: &Path, base: &Path) -> Result<Manifest, Error> {
    let t = error::TomlText { file: origin, text };
    let raw = document::parse(t)?;
    resolve::resolve(t, base, raw)
}

fn base_dir(origin: &Path) -> &Path {
    origin.parent().unwrap_or(Path::new(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn check_refuses_what_the_parser_refuses() {
        let ok = Manifest::for_program("/p.wasm");
        assert_eq!(ok.check(), Ok(()));
        let full = parse_toml(
            "version = 1\nprogram = \"p.wasm\"\n[[channel]]\nname = \"log\"\nstdio = \"stderr\"\n\
             [[mount]]\npath = \".\"\ndir = \"d\"\n",
            Path::new("/m.toml"),
        )
        .unwrap();
        assert_eq!(full.check(), Ok(()));

        let mut m = ok.clone();
        m.limits.memory = MAX_MEMORY + 1;
        assert!(m.check().unwrap_err().starts_with("`memory` must be"));
        let mut m = ok.clone();
        m.limits.timeout = Duration::ZERO;
        assert!(m.check().unwrap_err().starts_with("`timeout` must be"));
        let mut m = ok.clone();
        m.channels.remove(2);
        assert_eq!(m.check().unwrap_err(), "channel `stderr` is missing");
        let mut m = ok.clone();
        m.channels.push(Channel::stdio(StdStream::Stdin));
        assert_eq!(m.check().unwrap_err(), "duplicate channel `stdin`");
        let mut m = ok.clone();
        m.channels[0].mode = AccessMode::RandomRead;
        assert!(m.check().unwrap_err().contains("cannot seek"));
        let mut m = ok.clone();
        m.channels[1].source = ChannelSource::Null;
        m.channels[1].mode = AccessMode::SequentialRead;
        assert!(m.check().unwrap_err().contains("must be writable"));
        let mut m = ok.clone();
        m.env.insert("A=B".into(), "x".into());
        assert!(m.check().unwrap_err().contains("without `=`"));
        let mut m = ok;
        // Images at one path are layers of one image; anything else there is a duplicate.
        for guest in ["/data", "data/"] {
            m.mounts.push(Mount {
                guest: guest.into(),
                source: MountSource::Image("/i.tar".into()),
            });
        }
        assert_eq!(m.check(), Ok(()));
        let dir = MountSource::Dir {
            path: "/d".into(),
            writable: false,
        };
        let mut with_dir = m.clone();
        with_dir.mounts.push(Mount {
            guest: "./data".into(),
            source: dir.clone(),
        });
        assert_eq!(with_dir.check().unwrap_err(), "duplicate mount `./data`");
        m.mounts.insert(
            0,
            Mount {
                guest: "/data".into(),
                source: dir,
            },
        );
        assert_eq!(m.check().unwrap_err(), "duplicate mount `/data`");
    }

    #[test]
    fn check_refuses_bad_pins_as_the_parser_does() {
        let pinned = |source: ChannelSource, mode: AccessMode| {
            let mut m = Manifest::for_program("/p.wasm");
            let mut c = Channel::stdio(StdStream::Stdin);
            c.name = ChannelName::new("input").unwrap();
            c.source = source;
            c.mode = mode;
            c.etag = Some(ContentHash::of(b"x"));
            m.channels.push(c);
            m.check()
        };
        let file = || ChannelSource::File("/in.txt".into());
        assert_eq!(pinned(file(), AccessMode::SequentialRead), Ok(()));
        assert_eq!(pinned(file(), AccessMode::RandomRead), Ok(()));
        assert_eq!(
            pinned(file(), AccessMode::ReadWrite).unwrap_err(),
            "channel `input`: `etag` pins an input, but mode `read-write` writes; use mode \
             `read` or `random-read`"
        );
        assert!(
            pinned(ChannelSource::Null, AccessMode::SequentialRead)
                .unwrap_err()
                .contains("`null = true`")
        );
        let mut m = Manifest::for_program("/p.wasm");
        m.channels[0].etag = Some(ContentHash::of(b"x"));
        assert!(
            m.check()
                .unwrap_err()
                .starts_with("channel `stdin`: `etag` pins")
        );

        // Each refusal of the checker is one the parser makes too, with the same words.
        let parsed = |extra: &str| {
            parse_toml(
                &format!("version = 1\nprogram = \"p.wasm\"\n{extra}"),
                Path::new("/m.toml"),
            )
            .unwrap_err()
            .to_string()
        };
        let e = parsed(
            "[[channel]]\nname = \"input\"\npath = \"in\"\nmode = \"read-write\"\netag = \"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\"\n",
        );
        assert!(
            e.ends_with(": channel `input`: `etag` pins an input, but mode `read-write` writes; use mode `read` or `random-read`"),
            "{e}"
        );
    }

    #[test]
    fn check_refuses_what_the_parser_refuses_of_exports() {
        let export = |guest: &str, tar: &str| Export {
            guest: guest.into(),
            path: tar.into(),
        };
        let with = |exports: Vec<Export>| {
            let mut m = Manifest::for_program("/p.wasm");
            let mut out = Channel::stdio(StdStream::Stdout);
            out.name = ChannelName::new("output").unwrap();
            out.source = ChannelSource::File("/o/out.txt".into());
            m.channels.push(out);
            m.exports = exports;
            m.check()
        };
        assert_eq!(
            with(vec![export("/a", "/o/a.tar"), export("/a/b", "/o/b.tar")]),
            Ok(())
        );
        assert_eq!(
            with(vec![export("/", "/o/a.tar")]).unwrap_err(),
            "export path `/` is the guest's whole tree, expected a directory below `/` such as `/out`"
        );
        assert!(
            with(vec![export("/dev/x", "/o/a.tar")])
                .unwrap_err()
                .contains("is under `/dev`")
        );
        assert!(
            with(vec![export("/a/../b", "/o/a.tar")])
                .unwrap_err()
                .contains("contains `..`")
        );
        assert_eq!(
            with(vec![export("a/", "/o/a.tar")]).unwrap_err(),
            "export path `a/` is not normalised, expected `/a`"
        );
        assert_eq!(
            with(vec![export("/a", "/o/a.tar"), export("/a", "/o/b.tar")]).unwrap_err(),
            "duplicate export `/a`"
        );
        assert_eq!(
            with(vec![export("/a", "")]).unwrap_err(),
            "export `/a`: `tar` is empty, expected a host path"
        );
        assert_eq!(
            with(vec![export("/a", "/o/a.tar"), export("/b", "/o/./a.tar")]).unwrap_err(),
            "export `/b`: `tar` names the same host file as the `tar` of export `/a`"
        );
        assert_eq!(
            with(vec![export("/a", "/o/out.txt")]).unwrap_err(),
            "export `/a`: `tar` names the same host file as channel `output`, which the guest writes"
        );
    }
}
