//! Zapps in the `zvm` binary: the format (reading, checking, `zapp.toml`) is the `zvm-zapp`
//! crate, shared with `zvm serve`; this module is what only the CLI does with one: unpack it
//! once into zvm's cache, under its BLAKE3 hash, atomically (into a temporary directory, then
//! renamed, so two racing processes both end up with one whole copy), and resolve its entry
//! point into a [`Manifest`] or a [`Job`] whose paths are the zapp's own files (programs,
//! images) or the caller's (everything else, against the working directory): [`open`].
//!
//! The format is documented for users in `docs/zapps.md`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use zvm_manifest::{ChannelSource, Job, Manifest, MountSource};

pub use zvm_zapp::*;

/// The directory zapps are unpacked in: `zapps/` in zvm's cache directory.
pub fn cache_dir() -> Result<PathBuf> {
    let base = zvm_vm::Runtime::default_cache_dir().context(
        "no cache directory to unpack the zapp in: set ZVM_CACHE_DIR, XDG_CACHE_HOME or HOME",
    )?;
    Ok(base.join("zapps"))
}

/// Unpacks the zapp at `path` into the cache, unless it is there already, and returns its
/// directory and description. The directory is named after the zapp's BLAKE3 hash and
/// appears whole or not at all: the zapp is unpacked and checked in a temporary directory
/// beside it, then renamed; of two processes racing, one rename wins and the other process
/// uses the winner's copy.
pub fn unpack(path: &Path) -> Result<(PathBuf, ZappToml)> {
    let hash = hash_file(path)?;
    let cache = cache_dir()?;
    {
        use std::os::unix::fs::DirBuilderExt;
        // Private: the cache holds what users ran.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cache)
            .with_context(|| format!("creating `{}`", cache.display()))?;
    }
    let root = cache.join(hash.to_hex().as_str());
    if !root.join(ZAPP_TOML).is_file() {
        let tmp = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&cache)
            .with_context(|| format!("creating a directory in `{}`", cache.display()))?;
        let contents = read(path, Some(tmp.path()))?;
        if contents.hash != hash {
            bail!(
                "`{}` changed while it was being read; nothing was run",
                path.display()
            );
        }
        std::fs::File::open(tmp.path())
            .and_then(|d| d.sync_all())
            .context("syncing the unpacked zapp")?;
        match std::fs::rename(tmp.path(), &root) {
            // Renamed: the temporary directory is gone, nothing is left to clean up.
            Ok(()) => {
                let _ = tmp.keep();
            }
            // Another process renamed its copy first; ours is removed when `tmp` drops.
            Err(_) if root.join(ZAPP_TOML).is_file() => {}
            Err(e) => {
                return Err(e).with_context(|| format!("moving the zapp to `{}`", root.display()));
            }
        }
    }
    let toml_path = root.join(ZAPP_TOML);
    let text = std::fs::read_to_string(&toml_path)
        .with_context(|| format!("reading `{}`", toml_path.display()))?;
    let zapp = ZappToml::parse(&text, &toml_path.display().to_string())?;
    Ok((root, zapp))
}

/// A zapp's entry point, resolved and ready to run.
#[derive(Debug)]
pub enum Target {
    /// A VM manifest: `zvm run` adjusts it with its flags (arguments included) and runs it.
    Manifest(Box<Manifest>),
    /// A job: run as `zvm job` runs one.
    Job(Job),
}

/// Unpacks the zapp at `path` (see [`unpack`]) and resolves its entry point: programs and
/// images are the zapp's own files; every other relative path (channels, directories,
/// exports, a job's wildcards) is taken from the current directory, the caller's.
pub fn open(path: &Path) -> Result<Target> {
    let (root, zapp) = unpack(path)?;
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let entry = &zapp.entry;
    let file = root.join(&entry.path);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading the entry point `{}`", entry.path))?;
    let dir = dir_of(&entry.path);
    match entry.kind {
        EntryKind::Manifest => {
            let mut m = parse_manifest(&entry.path, &text)?;
            place(&mut m, &root, dir, &cwd, "")?;
            Ok(Target::Manifest(Box::new(m)))
        }
        EntryKind::Job => {
            let origin = Path::new(entry.path.rsplit('/').next().unwrap_or(&entry.path));
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            // An empty base: relative paths stay as written, and wildcards are matched in
            // the current directory.
            let mut job = if job_is_json(&entry.path, text) {
                zvm_manifest::parse_job_json(text, origin, Path::new(""))
            } else {
                zvm_manifest::parse_job_toml(text, origin, Path::new(""))
            }
            .with_context(|| format!("entry point `{}`", entry.path))?;
            for member in &mut job.members {
                let of = format!(" of member `{}`", member.name);
                place(&mut member.manifest, &root, dir, &cwd, &of)?;
            }
            Ok(Target::Job(job))
        }
    }
}

/// A zapp's manifest with the arguments given after `zvm run app.zapp --`, which replace the
/// manifest's own, as for a manifest file.
pub fn with_args(mut m: Manifest, args: &[String]) -> Manifest {
    if !args.is_empty() {
        m.args = args.to_vec();
    }
    m
}

/// Runs a zapp's job as `zvm job` runs one. `zvm run`'s flags that adjust one VM (limits,
/// channels, mounts, `--verify`...) and arguments have no meaning for a job and are refused,
/// rather than ignored.
pub fn run_job(
    job: &Job,
    run_args: &crate::run::RunArgs,
    args: &[String],
    (verify, report, report_file, no_cache): (
        bool,
        Option<crate::run::ReportFormat>,
        Option<PathBuf>,
        bool,
    ),
) -> Result<i32> {
    if !args.is_empty() {
        bail!(
            "the zapp's entry point is a job, which takes no arguments (its groups' are in \
             the job file)"
        );
    }
    // Any flag that adjusts a manifest changes this one.
    let plain = Manifest::for_program("job");
    if verify || crate::run::apply_flags(plain.clone(), run_args)? != plain {
        bail!(
            "the zapp's entry point is a job: of `zvm run`'s flags, only --report, \
             --report-file and --no-cache apply to it"
        );
    }
    crate::job::run_resolved(job, report, report_file, no_cache)
}

/// Makes a zapp's manifest runnable from anywhere: its program and images are taken from the
/// zapp (`root`, the entry point being in `dir`), the rest from `cwd`.
fn place(m: &mut Manifest, root: &Path, dir: &str, cwd: &Path, of: &str) -> Result<()> {
    let own = |p: &Path, what: &str| -> Result<PathBuf> {
        let written = path_text(p)?;
        let zpath =
            inside(dir, &written).map_err(|msg| anyhow::anyhow!("{what}{of} `{written}` {msg}"))?;
        let file = root.join(&zpath);
        if !file.is_file() {
            bail!("{what}{of} `{written}` is not in the zapp");
        }
        Ok(file)
    };
    m.program.path = own(&m.program.path, "program")?;
    for mount in &mut m.mounts {
        match &mut mount.source {
            MountSource::Image(p) => *p = own(p, "image")?,
            MountSource::Dir { path, .. } => *path = cwd.join(&*path),
        }
    }
    for c in &mut m.channels {
        if let ChannelSource::File(p) = &mut c.source {
            *p = cwd.join(&*p);
        }
    }
    for e in &mut m.exports {
        e.path = cwd.join(&e.path);
    }
    Ok(())
}
