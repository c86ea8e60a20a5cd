//! The meaning rules both manifest formats share: allowed limit ranges, which channel modes fit
//! which sources, quotas against directions, mount paths, and how host paths are resolved.
//!
//! Each rule returns a bare reason and leaves the position to the caller, so the TOML resolver
//! can point at a key and column and the legacy reader at a line while saying the same thing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{
    AccessMode, Channel, ChannelName, ChannelSource, ContentHash, MAX_MEMORY, MAX_OPEN_FILES,
    MIN_OPEN_FILES, Mount, StdStream,
};

/// `memory`: at least one byte, at most what wasm32 can address.
pub(crate) fn check_memory(bytes: u64) -> Result<(), String> {
    if bytes == 0 || bytes > MAX_MEMORY {
        return Err(format!(
            "must be from 1 byte to 4 GiB ({MAX_MEMORY} bytes, all a wasm32 memory can address), found {bytes}"
        ));
    }
    Ok(())
}

/// `fuel`: zero would stop the guest before its first instruction.
pub(crate) fn check_fuel(fuel: u64) -> Result<(), String> {
    if fuel == 0 {
        return Err("must be greater than 0, the guest could not run a single instruction".into());
    }
    Ok(())
}

/// `timeout`: zero would stop the guest before it starts.
pub(crate) fn check_timeout(timeout: Duration) -> Result<(), String> {
    if timeout.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(())
}

/// `open_files`: room for stdio, and a bounded table.
pub(crate) fn check_open_files(n: u64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(n) if (MIN_OPEN_FILES..=MAX_OPEN_FILES).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be from {MIN_OPEN_FILES} (the standard streams) to {MAX_OPEN_FILES}, found {n}"
        )),
    }
}

/// A host path as written in a manifest, joined to the manifest's directory when relative.
/// Neither canonicalised nor checked for existence: the runtime opens it and reports a
/// missing file with its own context.
pub(crate) fn host_path(base: &Path, written: &str) -> Result<PathBuf, String> {
    if written.is_empty() {
        return Err("is empty, expected a host path".into());
    }
    if written.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    Ok(base.join(written))
}

/// Why a host stream cannot serve a channel's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdioMisfit {
    /// The mode writes, but stdin can only be read.
    WritesInput,
    /// The mode reads, but stdout and stderr can only be written.
    ReadsOutput,
    /// The mode seeks, but no stream can.
    Seeks,
}

/// Whether a host stream can serve `mode`: stdin only reads, stdout and stderr only write, and
/// no stream can seek. Direction is checked first, as the more basic mistake.
pub(crate) fn stdio_misfit(stream: StdStream, mode: AccessMode) -> Option<StdioMisfit> {
    match stream {
        StdStream::Stdin if mode.can_write() => Some(StdioMisfit::WritesInput),
        StdStream::Stdout | StdStream::Stderr if mode.can_read() => Some(StdioMisfit::ReadsOutput),
        _ if mode.can_seek() => Some(StdioMisfit::Seeks),
        _ => None,
    }
}

/// The TOML format's message for a [`StdioMisfit`], naming the mode that fits.
pub(crate) fn stdio_misfit_message(
    name: &ChannelName,
    stream: StdStream,
    mode: AccessMode,
    misfit: StdioMisfit,
) -> String {
    let s = stream.name();
    let m = mode.as_str();
    match misfit {
        StdioMisfit::WritesInput => format!(
            "channel `{name}`: `{s}` can only be read, but mode `{m}` writes; use mode `read`"
        ),
        StdioMisfit::ReadsOutput => format!(
            "channel `{name}`: `{s}` can only be written, but mode `{m}` reads; use mode `write` or `append`"
        ),
        StdioMisfit::Seeks => {
            let fit = if stream == StdStream::Stdin {
                "read"
            } else {
                "write"
            };
            format!(
                "channel `{name}`: `{s}` is a stream and cannot seek, but mode `{m}` seeks; use mode `{fit}`"
            )
        }
    }
}

/// The standard stream whose role a channel named `stdin`, `stdout` or `stderr` cannot play
/// with `mode`: fd 0 must be readable, fds 1 and 2 writable, whatever backs them.
pub(crate) fn std_role_misfit(name: &ChannelName, mode: AccessMode) -> Option<StdStream> {
    match name.std_stream()? {
        StdStream::Stdin if !mode.can_read() => Some(StdStream::Stdin),
        s @ (StdStream::Stdout | StdStream::Stderr) if !mode.can_write() => Some(s),
        _ => None,
    }
}

/// The start of a message for a [`std_role_misfit`]; the caller says how to fix it.
pub(crate) fn std_role_message(role: StdStream) -> String {
    match role {
        StdStream::Stdin => {
            "channel `stdin` is the guest's standard input and must be readable".to_string()
        }
        s => format!(
            "channel `{}` is one of the guest's standard outputs and must be writable",
            s.name()
        ),
    }
}

/// A quota key given for a direction the mode does not have; it would never apply, so it is
/// most likely a mistake about the mode.
pub(crate) fn quota_problem(name: &ChannelName, key: &str, mode: AccessMode) -> Option<String> {
    let m = mode.as_str();
    let reading = key.starts_with("read");
    if reading && !mode.can_read() {
        Some(format!(
            "channel `{name}`: `{key}` given but mode `{m}` cannot read"
        ))
    } else if !reading && !mode.can_write() {
        Some(format!(
            "channel `{name}`: `{key}` given but mode `{m}` cannot write"
        ))
    } else {
        None
    }
}

/// A guest mount path: not empty, no `..` (it could not name anything inside the guest's
/// tree), and not over `/dev`, where the channels live.
pub(crate) fn check_mount_guest(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err(
            "mount path is empty, expected a guest directory such as `/data` (or `/` for the root)"
                .into(),
        );
    }
    check_guest_dir("mount", path)?;
    if is_under_dev(path) {
        return Err(format!(
            "mount path `{path}` is under `/dev`, where the guest sees its channels; mount elsewhere"
        ));
    }
    Ok(())
}

/// Whether a mount may have the same guest path as the mounts declared before it there
/// (`earlier_all_images`: all of them are images). Only images may, as the layers of one
/// read-only image, later ones on top; a host directory cannot be merged with anything.
pub(crate) fn may_share_mount_path(earlier_all_images: bool, image: bool) -> bool {
    earlier_all_images && image
}

/// An export's guest path: a directory of the scratch filesystem, named like a mount path
/// (no `..`, not `/dev` or below), and not `/` itself, whose tar would hold every mount too.
pub(crate) fn check_export_guest(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("export path is empty, expected a guest directory such as `/out`".into());
    }
    check_guest_dir("export", path)?;
    if Mount::normalise_guest(path) == "/" {
        return Err(format!(
            "export path `{path}` is the guest's whole tree, expected a directory below `/` such as `/out`"
        ));
    }
    if is_under_dev(path) {
        return Err(format!(
            "export path `{path}` is under `/dev`, where the guest sees its channels; export a scratch directory elsewhere"
        ));
    }
    Ok(())
}

/// What mount and export paths share: no NUL, and no `..`, which could not name anything
/// inside the guest's tree. `what` starts the message.
fn check_guest_dir(what: &str, path: &str) -> Result<(), String> {
    if path.contains('\0') {
        return Err(format!(
            "{what} path `{}` contains a NUL byte",
            path.escape_debug()
        ));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!(
            "{what} path `{path}` contains `..`, expected a path inside the guest's tree"
        ));
    }
    Ok(())
}

fn is_under_dev(path: &str) -> bool {
    let abs = Mount::normalise_guest(path);
    abs == "/dev" || abs.starts_with("/dev/")
}

/// A channel's `etag` pin as written: 64 hex digits in either case, optionally after the
/// `blake3:` prefix that `program.hash` requires, so a hash copied from a report (bare) or
/// from a program pin (prefixed) both work.
pub(crate) fn parse_etag(written: &str) -> Option<ContentHash> {
    ContentHash::from_hex(written.strip_prefix("blake3:").unwrap_or(written))
}

/// Why a channel cannot carry an `etag` pin: the runtime checks a pin by hashing a host file
/// before the run, so the channel needs one (`path`), and the guest must not be able to
/// change it, since a pin on content the run rewrites would be checked against the wrong
/// bytes the next time.
pub(crate) fn etag_problem(
    name: &ChannelName,
    source: &ChannelSource,
    mode: AccessMode,
) -> Option<String> {
    let fix = "pin only channels with a `path`";
    match source {
        ChannelSource::Stdio(s) => Some(format!(
            "channel `{name}`: `etag` pins a host file's content, but the channel is `stdio = \"{}\"`; {fix}",
            s.name()
        )),
        ChannelSource::Null => Some(format!(
            "channel `{name}`: `etag` pins a host file's content, but the channel is `null = true`; {fix}"
        )),
        ChannelSource::Pipe(_) => Some(format!(
            "channel `{name}`: `etag` pins a host file's content, but the channel is a pipe; {fix}"
        )),
        ChannelSource::File(_) if mode.can_write() => Some(format!(
            "channel `{name}`: `etag` pins an input, but mode `{}` writes; use mode `read` or `random-read`",
            mode.as_str()
        )),
        ChannelSource::File(_) => None,
    }
}

/// Whether two resolved host paths name the same file as far as their text tells: equal once
/// `.` components are dropped (`Path`'s own comparison keeps a leading one). `..` and
/// symbolic links are left alone, as everywhere in this crate; the runtime opens the files.
pub(crate) fn same_host_file(a: &Path, b: &Path) -> bool {
    let plain = |p| Path::components(p).filter(|c| *c != std::path::Component::CurDir);
    plain(a).eq(plain(b))
}

/// The message for an export whose `tar` names the same host file as `other` (another
/// export's tar, or an output channel's file).
pub(crate) fn tar_clash(guest: &str, other: &str) -> String {
    format!("export `{guest}`: `tar` names the same host file as {other}")
}

/// The host files the guest writes through channels, with the channel's name: an export's
/// tar may not be one of them, since both would replace the same file on commit.
pub(crate) fn output_files(channels: &[Channel]) -> Vec<(&Path, &ChannelName)> {
    channels
        .iter()
        .filter(|c| c.mode.can_write())
        .filter_map(|c| match &c.source {
            ChannelSource::File(p) => Some((p.as_path(), &c.name)),
            _ => None,
        })
        .collect()
}

/// The default `argv[0]`: the program's file name, as [`crate::Manifest::for_program`] does.
pub(crate) fn default_argv0(program: &Path) -> String {
    program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "main.wasm".to_string())
}

/// Puts the standard channels first, in descriptor order, adding any the manifest did not
/// declare (bound to the host's streams); the other channels keep their declaration order.
/// Fixed places make two manifests that differ only in where they declare `stdin` resolve
/// (and hash) the same, and a manifest declaring none looks like
/// [`crate::Manifest::for_program`].
pub(crate) fn complete_std_channels(channels: &mut Vec<Channel>) {
    let mut ordered = Vec::with_capacity(channels.len() + 3);
    for stream in [StdStream::Stdin, StdStream::Stdout, StdStream::Stderr] {
        match channels
            .iter()
            .position(|c| c.name.as_str() == stream.name())
        {
            Some(i) => ordered.push(channels.remove(i)),
            None => ordered.push(Channel::stdio(stream)),
        }
    }
    ordered.append(channels);
    *channels = ordered;
}

/// Arguments and environment strings reach the guest as C strings, which end at the first NUL.
pub(crate) fn check_c_string(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err("contains a NUL byte, which a C string cannot hold".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    #[test]
    fn stdio_modes() {
        use AccessMode::*;
        use StdioMisfit::*;
        assert_eq!(stdio_misfit(StdStream::Stdin, SequentialRead), None);
        assert_eq!(stdio_misfit(StdStream::Stdout, Append), None);
        assert_eq!(stdio_misfit(StdStream::Stdin, Append), Some(WritesInput));
        assert_eq!(
            stdio_misfit(StdStream::Stderr, ReadWrite),
            Some(ReadsOutput)
        );
        assert_eq!(stdio_misfit(StdStream::Stdin, RandomRead), Some(Seeks));
        assert_eq!(stdio_misfit(StdStream::Stdout, RandomWrite), Some(Seeks));
    }

    #[test]
    fn std_roles() {
        use AccessMode::*;
        assert_eq!(std_role_misfit(&name("stdin"), ReadWrite), None);
        assert_eq!(
            std_role_misfit(&name("stdin"), SequentialWrite),
            Some(StdStream::Stdin)
        );
        assert_eq!(
            std_role_misfit(&name("stderr"), RandomRead),
            Some(StdStream::Stderr)
        );
        assert_eq!(std_role_misfit(&name("input"), SequentialWrite), None);
    }

    #[test]
    fn mount_paths() {
        for ok in ["/", ".", "/data", "data/x", "./a/./b/", "/devices"] {
            assert!(check_mount_guest(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "/a/../b", "/dev", "dev/x", "/./dev/"] {
            assert!(check_mount_guest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn export_paths() {
        for ok in ["/out", "out", "./a/./b/", "/devices", "/a/b"] {
            assert!(check_export_guest(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/", ".", "./", "//", "/a/../b", "..", "/dev", "dev/x", "/./dev/",
        ] {
            assert!(check_export_guest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn etags() {
        let hex = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        let pin = ContentHash::parse(&format!("blake3:{hex}"));
        assert!(pin.is_some());
        assert_eq!(parse_etag(hex), pin);
        assert_eq!(parse_etag(&hex.to_uppercase()), pin);
        assert_eq!(parse_etag(&format!("blake3:{}", hex.to_uppercase())), pin);
        for bad in [
            "",
            "blake3:",
            &hex[1..],
            &format!("{hex}0"),
            &format!("sha256:{hex}"),
        ] {
            assert_eq!(parse_etag(bad), None, "{bad}");
        }
        assert_eq!(parse_etag(&format!("+{}", &hex[1..])), None);

        use AccessMode::*;
        let file = ChannelSource::File("in.txt".into());
        let n = name("input");
        assert_eq!(etag_problem(&n, &file, SequentialRead), None);
        assert_eq!(etag_problem(&n, &file, RandomRead), None);
        for mode in [SequentialWrite, RandomWrite, Append, ReadWrite] {
            let m = etag_problem(&n, &file, mode).unwrap();
            assert!(m.contains("writes"), "{m}");
        }
        let m = etag_problem(&n, &ChannelSource::Null, SequentialRead).unwrap();
        assert!(m.contains("`null = true`"), "{m}");
        let m = etag_problem(&n, &ChannelSource::Stdio(StdStream::Stdin), SequentialRead);
        assert!(m.unwrap().contains("`stdio = \"stdin\"`"));
    }

    #[test]
    fn same_host_files() {
        let same = |a: &str, b: &str| same_host_file(Path::new(a), Path::new(b));
        assert!(same("out.tar", "./out.tar"));
        assert!(same("/srv/./a//b.tar", "/srv/a/b.tar"));
        assert!(!same("a/../b.tar", "b.tar"));
        assert!(!same("/out.tar", "out.tar"));
    }

    #[test]
    fn output_files_are_the_written_ones() {
        let mut chans = vec![Channel::stdio(StdStream::Stdout); 3];
        chans[0].source = ChannelSource::File("in.txt".into());
        chans[0].mode = AccessMode::RandomRead;
        chans[0].name = name("in");
        chans[1].source = ChannelSource::File("out.txt".into());
        chans[1].mode = AccessMode::Append;
        chans[1].name = name("out");
        let outputs = output_files(&chans);
        assert_eq!(outputs, [(Path::new("out.txt"), &name("out"))]);
    }

    #[test]
    fn std_channels_go_first() {
        let mut chans = vec![
            Channel::stdio(StdStream::Stdout),
            Channel::stdio(StdStream::Stdout),
        ];
        chans[0].name = name("out");
        chans[1].source = ChannelSource::Null;
        chans.push(Channel::stdio(StdStream::Stdout));
        chans[2].name = name("log");
        complete_std_channels(&mut chans);
        let names: Vec<&str> = chans.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["stdin", "stdout", "stderr", "out", "log"]);
        // The declared `stdout` moved; it was not replaced by a default one.
        assert_eq!(chans[1].source, ChannelSource::Null);
    }
}
