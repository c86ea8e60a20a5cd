//! `zvm pack`: a project directory with a `zapp.toml` becomes a `.zapp`.
//!
//! What goes in is decided, never guessed: `zapp.toml`, its entry point, the programs and
//! images the entry point names, and the files its `files` globs match; nothing else. The
//! pack is reproducible: the same files give the same bytes whatever their times, owners
//! or permissions and whoever packs them, so a zapp's BLAKE3 hash identifies its content.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::exit;
use crate::zapp::{self, MAX_FILES, MAX_TEXT_FILE, MAX_UNPACKED_BYTES, ZAPP_TOML, ZappToml};

/// Pack a project directory into a zapp: a gzip tar of `zapp.toml`, its entry point (a VM
/// manifest or a job) and the programs, images and files they need (see docs/zapps.md).
///
/// The same files always give the same bytes.
///
/// Examples:
///
///   zvm pack . -o wc.zapp
///
///   zvm pack examples/wordcount        # writes NAME-VERSION.zapp here
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PackArgs {
    /// The project directory, holding `zapp.toml`.
    #[arg(value_name = "DIR")]
    dir: PathBuf,

    /// The zapp to write (default: `<name>-<version>.zapp` in the current directory).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn main(args: PackArgs) -> i32 {
    match pack(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("zvm: {e:#}");
            exit::CANNOT_START
        }
    }
}

/// Gzip's "operating system" byte for "unknown": written whatever the host, so that packs
/// from different hosts agree.
const GZIP_OS_UNKNOWN: u8 = 255;

/// The mode of every file in a zapp: readable, not executable (a wasm program is not run by
/// the host), whatever the mode in the project.
const FILE_MODE: u32 = 0o644;

fn pack(args: &PackArgs) -> Result<()> {
    let dir = &args.dir;
    let toml_path = dir.join(ZAPP_TOML);
    let toml_text = read_text(&toml_path)?;
    let zapp = ZappToml::parse(&toml_text, &toml_path.display().to_string())?;

    // Every file to pack, by its path inside the zapp, with why it is there.
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let entry = &zapp.entry;
    let entry_file = dir.join(&entry.path);
    let entry_text = read_text(&entry_file)
        .with_context(|| format!("the entry point `{}` named by `{ZAPP_TOML}`", entry.path))?;
    files.insert(
        entry.path.clone(),
        format!("the entry point ({})", entry.kind.as_str()),
    );
    for r in zapp::references(entry, &entry_text)? {
        if !dir.join(&r.path).is_file() {
            bail!(
                "the entry point `{}` names the {} `{}`, which is not a file in `{}`",
                entry.path,
                r.what,
                r.path,
                dir.display()
            );
        }
        files.entry(r.path).or_insert(r.what);
    }
    if !zapp.files.is_empty() {
        let output = args
            .output
            .as_deref()
            .and_then(|o| std::fs::canonicalize(o).ok());
        let all = walk(dir)?;
        for pattern in &zapp.files {
            let mut matched = 0;
            for f in all.iter().filter(|f| glob_match(pattern, f)) {
                // A previous pack into the project itself is not part of the next one.
                if output.is_some() && std::fs::canonicalize(dir.join(f)).ok() == output {
                    continue;
                }
                matched += 1;
                files
                    .entry(f.clone())
                    .or_insert_with(|| format!("`files` `{pattern}`"));
            }
            if matched == 0 {
                bail!(
                    "{}: `files` pattern `{pattern}` matches no file in `{}`",
                    toml_path.display(),
                    dir.display()
                );
            }
        }
    }
    files.remove(ZAPP_TOML);
    if files.len() + 1 > MAX_FILES {
        bail!(
            "{} files to pack, more than a zapp may hold ({MAX_FILES})",
            files.len() + 1
        );
    }

    let output = match &args.output {
        Some(o) => o.clone(),
        None => PathBuf::from(format!("{}-{}.zapp", zapp.app.name, zapp.app.version)),
    };
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Written beside the output and renamed over it: the output is whole or absent.
    let tmp = tempfile::Builder::new()
        .prefix(".zvm-pack-")
        .tempfile_in(&parent)
        .with_context(|| format!("creating a file in `{}`", parent.display()))?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(
            std::io::BufWriter::new(tmp.as_file()),
            flate2::Compression::best(),
        );
    let mut tar = tar::Builder::new(gz);
    let mut total = 0u64;
    // `zapp.toml` first, so that a reader knows what the zapp is before anything else.
    let order = std::iter::once(ZAPP_TOML.to_string()).chain(files.keys().cloned());
    let mut count = 0;
    for path in order {
        let bytes = std::fs::read(dir.join(&path))
            .with_context(|| format!("reading `{}`", dir.join(&path).display()))?;
        total += bytes.len() as u64;
        if total > MAX_UNPACKED_BYTES {
            bail!("the files to pack exceed {MAX_UNPACKED_BYTES} bytes, the most a zapp may hold");
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(FILE_MODE);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, &path, bytes.as_slice())
            .with_context(|| format!("packing `{path}`"))?;
        count += 1;
    }
    let gz = tar.into_inner().context("writing the zapp")?;
    let mut buffered = gz.finish().context("writing the zapp")?;
    buffered.flush().context("writing the zapp")?;
    drop(buffered);
    {
        use std::os::unix::fs::PermissionsExt;
        // The temporary file is private; a zapp is meant to be shared.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .context("writing the zapp")?;
    }
    tmp.as_file().sync_all().context("writing the zapp")?;
    tmp.persist(&output)
        .with_context(|| format!("writing `{}`", output.display()))?;
    let hash = zapp::hash_file(&output)?;
    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: {} {}, {count} files ({total} bytes), {size} bytes, blake3:{}",
        output.display(),
        zapp.app.name,
        zapp.app.version,
        hash.to_hex()
    );
    Ok(())
}

/// A text file that `zvm` parses (`zapp.toml`, the entry point), bounded in size.
fn read_text(path: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    if meta.len() > MAX_TEXT_FILE {
        bail!(
            "`{}` is {} bytes, more than the {MAX_TEXT_FILE} allowed",
            path.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))
}

/// Every regular file under `dir` (links to files included, linked directories not
/// entered, so that a link cannot make a loop), as `/`-separated paths relative to `dir`.
/// Names that are not UTF-8 are skipped: no pattern could name them.
fn walk(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((host, rel)) = stack.pop() {
        let entries =
            std::fs::read_dir(&host).with_context(|| format!("listing `{}`", host.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("listing `{}`", host.display()))?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = e.file_type()?;
            if kind.is_dir() {
                stack.push((e.path(), path));
            } else if std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `path` matches the glob `pattern`: both `/`-separated; `*` matches any run of
/// characters within a part, `?` one character, a whole part `**` any number of parts. No
/// wildcard matches a name starting with `.`: name such files explicitly (`.config/*`).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    parts_match(&p, &s)
}

fn parts_match(p: &[&str], s: &[&str]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((&"**", rest)) => {
            // Zero parts, or one more (not hidden) and try again.
            parts_match(rest, s)
                || s.split_first()
                    .is_some_and(|(first, tail)| !first.starts_with('.') && parts_match(p, tail))
        }
        Some((first, rest)) => s
            .split_first()
            .is_some_and(|(name, tail)| name_match(first, name) && parts_match(rest, tail)),
    }
}

fn name_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative wildcard matching with backtracking to the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("data/*.txt", "data/a.txt"));
        assert!(!glob_match("data/*.txt", "data/sub/a.txt"));
        assert!(!glob_match("data/*.txt", "data/.a.txt"));
        assert!(glob_match("data/.*", "data/.a.txt"));
        assert!(glob_match("README.md", "README.md"));
        assert!(!glob_match("README.md", "README.mdx"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("**", "x/y/z"));
        assert!(glob_match("docs/**", "docs/a/b.md"));
        assert!(glob_match("docs/**/*.md", "docs/b.md"));
        assert!(glob_match("docs/**/*.md", "docs/a/b/c.md"));
        assert!(!glob_match("docs/**/*.md", "docs/.git/c.md"));
        assert!(!glob_match("**", ".git/config"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b", "xxaxxbxxc"));
    }
}
