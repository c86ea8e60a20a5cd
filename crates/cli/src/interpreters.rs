//! Interpreters as guests: `zvm run script.py` runs the script with CPython built for WASI,
//! `zvm run script.js` with QuickJS.
//!
//! `scripts/install-interpreters` (part of `scripts/install-deps`) fetches them from their
//! package, checks their hashes and registers them in `interpreters.toml` in zvm's data
//! directory; this module reads that registry. A script runs as an ordinary VM: the
//! interpreter is the program, the script is a read-only channel `/dev/script` (so the
//! script, like every input, is hashed into the report and the result cache's key), and the
//! guest's arguments follow it. `zvm interpreters` lists what is installed and checks it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use zvm_manifest::{AccessMode, Channel, ChannelName, ChannelSource, Manifest, Quota};

/// The registry file, as `scripts/install-interpreters` writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registry {
    version: u32,
    #[serde(default)]
    interpreter: Vec<Interpreter>,
}

/// One installed interpreter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interpreter {
    pub name: String,
    /// The `.wasm` file, relative to the registry's directory.
    pub program: PathBuf,
    /// SHA-256 of the program, as checked when it was installed.
    pub sha256: String,
    /// File extensions of the scripts it runs (without the dot).
    pub extensions: Vec<String>,
    /// `argv[0]` the guest sees.
    pub argv0: String,
    /// Arguments the interpreter always gets first (QuickJS's `--std`, say).
    #[serde(default)]
    pub args: Vec<String>,
    /// Where it came from.
    pub source: String,
}

/// The directory of installed interpreters: `$ZVM_DATA_DIR/interpreters`, else
/// `$XDG_DATA_HOME/zvm/interpreters`, else `~/.local/share/zvm/interpreters`.
pub fn dir() -> Option<PathBuf> {
    let data = if let Some(d) = std::env::var_os("ZVM_DATA_DIR") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        PathBuf::from(d).join("zvm")
    } else {
        PathBuf::from(std::env::var_os("HOME")?).join(".local/share/zvm")
    };
    Some(data.join("interpreters"))
}

const NOT_INSTALLED: &str =
    "install them with scripts/install-interpreters (part of scripts/install-deps)";

/// The installed interpreters (none when nothing is installed).
fn installed() -> Result<(PathBuf, Vec<Interpreter>)> {
    let Some(dir) = dir() else {
        return Ok((PathBuf::new(), Vec::new()));
    };
    let file = dir.join("interpreters.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((dir, Vec::new())),
        Err(e) => return Err(e).with_context(|| format!("reading `{}`", file.display())),
    };
    let registry: Registry =
        toml::from_str(&text).with_context(|| format!("`{}` is damaged", file.display()))?;
    if registry.version != 1 {
        bail!(
            "`{}` has version {}, this zvm reads version 1",
            file.display(),
            registry.version
        );
    }
    Ok((dir, registry.interpreter))
}

/// Extensions of script languages zvm knows: a script with one of these needs its
/// interpreter installed, rather than being taken for a manifest.
const SCRIPT_EXTENSIONS: [&str; 3] = ["py", "js", "mjs"];

/// The interpreter for a script at `path`, by its extension; `None` when the extension is
/// not one of a script language (the target is then a program or a manifest).
pub fn for_script(path: &Path) -> Result<Option<(PathBuf, Interpreter)>> {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return Ok(None);
    };
    if matches!(ext, "wasm" | "wat" | "toml" | "json") {
        return Ok(None);
    }
    let (dir, list) = installed()?;
    match list
        .into_iter()
        .find(|i| i.extensions.iter().any(|e| e == ext))
    {
        Some(i) => Ok(Some((dir, i))),
        None if SCRIPT_EXTENSIONS.contains(&ext) => bail!(
            "no interpreter for `.{ext}` scripts is installed ({}); {NOT_INSTALLED}",
            path.display()
        ),
        None => Ok(None),
    }
}

/// The interpreter called `name`.
pub fn named(name: &str) -> Result<(PathBuf, Interpreter)> {
    let (dir, list) = installed()?;
    let names: Vec<String> = list.iter().map(|i| format!("`{}`", i.name)).collect();
    match list.into_iter().find(|i| i.name == name) {
        Some(i) => Ok((dir, i)),
        None if names.is_empty() => bail!("no interpreter is installed; {NOT_INSTALLED}"),
        None => bail!(
            "no interpreter `{name}` is installed (installed: {})",
            names.join(", ")
        ),
    }
}

/// The manifest that runs `script` (if any) with interpreter `i` from `dir`: the program,
/// its `argv[0]`, and the script as channel `/dev/script`, which the interpreter is given
/// as its first argument.
pub fn manifest(dir: &Path, i: &Interpreter, script: Option<&Path>) -> Result<Manifest> {
    let program = dir.join(&i.program);
    if !program.is_file() {
        bail!(
            "interpreter `{}` is registered but `{}` is missing; {NOT_INSTALLED}",
            i.name,
            program.display()
        );
    }
    let mut m = Manifest::for_program(&program);
    m.argv0 = i.argv0.clone();
    m.args = i.args.clone();
    if let Some(script) = script {
        m.channels.push(Channel {
            name: ChannelName::new("script").map_err(anyhow::Error::msg)?,
            source: ChannelSource::File(script.to_path_buf()),
            // Interpreters seek in their scripts (Python reads the encoding line first).
            mode: AccessMode::RandomRead,
            quota: Quota::default(),
            etag: None,
        });
        m.args.push("/dev/script".to_string());
    }
    Ok(m)
}

/// List the interpreters `zvm run` runs scripts with, and check their hashes.
#[derive(Debug, Args)]
pub struct InterpretersArgs {}

pub fn main(_args: InterpretersArgs) -> i32 {
    match list() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zvm: {e:#}");
            crate::exit::CANNOT_START
        }
    }
}

fn list() -> Result<i32> {
    let (dir, list) = installed()?;
    if list.is_empty() {
        println!("no interpreters installed; {NOT_INSTALLED}");
        return Ok(0);
    }
    let mut bad = 0;
    for i in &list {
        let path = dir.join(&i.program);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                use sha2::Digest;
                let got = sha2::Sha256::digest(&bytes);
                let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
                if hex == i.sha256 {
                    "ok".to_string()
                } else {
                    bad += 1;
                    format!("DAMAGED: SHA-256 {hex}, installed as {}", i.sha256)
                }
            }
            Err(e) => {
                bad += 1;
                format!("MISSING: {e}")
            }
        };
        println!(
            "{:<8} .{:<10} {} ({}) {}",
            i.name,
            i.extensions.join(" ."),
            path.display(),
            i.source,
            state
        );
    }
    Ok(if bad == 0 {
        0
    } else {
        crate::exit::CANNOT_START
    })
}
