//! `zvm new`: a starter project for a guest in C, Rust or Python, with a build, a manifest,
//! a `zapp.toml` and a `test.sh` that builds it, runs it with zvm and checks the output.
//!
//! The templates live in `templates/<name>/` in the source tree and are compiled into the
//! binary, so that an installed `zvm` needs nothing beside it. `{{name}}` in them becomes the
//! project's name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::exit;

/// Create a starter project: a guest in C, Rust or Python with its build, a manifest, a
/// `zapp.toml` and a test (`./test.sh` builds, runs with zvm and checks the output).
///
/// Examples:
///
///   zvm new c hello && hello/test.sh
///
///   zvm new rust tools/upper --name upper
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct NewArgs {
    /// The template: the guest's language.
    #[arg(value_enum, value_name = "TEMPLATE")]
    template: Template,

    /// The directory to create (it may exist if it is empty).
    #[arg(value_name = "DIR")]
    dir: PathBuf,

    /// The project's name (default: the directory's name): letters, digits, `_` and `-`,
    /// starting with a letter.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Template {
    /// C, built with clang for wasm32-wasi.
    C,
    /// Rust, built with cargo (wasm32-wasip1) or Debian's rustc (wasm32-wasi).
    Rust,
    /// Python, run by zvm's CPython for WASI.
    Python,
}

/// One file of a template.
struct TemplateFile {
    /// The path in the project.
    path: &'static str,
    text: &'static str,
    executable: bool,
}

macro_rules! template_file {
    ($template:literal, $path:literal) => {
        template_file!($template, $path, false)
    };
    ($template:literal, $path:literal, $executable:expr) => {
        TemplateFile {
            path: $path,
            text: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../templates/",
                $template,
                "/",
                $path
            )),
            executable: $executable,
        }
    };
}

const C: &[TemplateFile] = &[
    template_file!("c", ".gitignore"),
    template_file!("c", "build.sh", true),
    template_file!("c", "input.txt"),
    template_file!("c", "main.c"),
    template_file!("c", "manifest.toml"),
    template_file!("c", "test.sh", true),
    template_file!("c", "zapp.toml"),
];

const RUST: &[TemplateFile] = &[
    template_file!("rust", ".gitignore"),
    template_file!("rust", "Cargo.toml"),
    template_file!("rust", "build.sh", true),
    template_file!("rust", "input.txt"),
    template_file!("rust", "manifest.toml"),
    template_file!("rust", "src/main.rs"),
    template_file!("rust", "test.sh", true),
    template_file!("rust", "zapp.toml"),
];

const PYTHON: &[TemplateFile] = &[
    template_file!("python", ".gitignore"),
    template_file!("python", "build.sh", true),
    template_file!("python", "input.txt"),
    template_file!("python", "main.py"),
    template_file!("python", "manifest.toml"),
    template_file!("python", "test.sh", true),
    template_file!("python", "zapp.toml"),
];

impl Template {
    fn files(self) -> &'static [TemplateFile] {
        match self {
            Template::C => C,
            Template::Rust => RUST,
            Template::Python => PYTHON,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Template::C => "c",
            Template::Rust => "rust",
            Template::Python => "python",
        }
    }
}

pub fn main(args: NewArgs) -> i32 {
    match new(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("zvm: {e:#}");
            exit::CANNOT_START
        }
    }
}

fn new(args: &NewArgs) -> Result<()> {
    let dir = &args.dir;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => std::path::absolute(dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .with_context(|| {
                format!(
                    "`{}` has no name to give the project; use --name",
                    dir.display()
                )
            })?,
    };
    check_name(&name)?;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "`{}` exists and is not empty; zvm new does not overwrite anything",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot use `{}`", dir.display())),
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    for f in args.template.files() {
        write(dir, f, &name)?;
    }
    println!(
        "created `{}`, a {} project named `{name}`; try: {}/test.sh",
        dir.display(),
        args.template.as_str(),
        dir.display()
    );
    Ok(())
}

/// The rule of `zapp.toml`'s `app.name`: the name becomes a file name, a zapp name and (for
/// Rust) a crate name.
fn check_name(name: &str) -> Result<()> {
    crate::zapp::check_app_name(name)
        .map_err(|m| anyhow::anyhow!("`{name}` cannot name a project: it {m} (--name NAME)"))
}

fn write(dir: &Path, f: &TemplateFile, name: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(f.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating `{}`", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if f.executable { 0o755 } else { 0o644 })
        .open(&path)
        .with_context(|| format!("creating `{}`", path.display()))?;
    std::io::Write::write_all(&mut file, f.text.replace("{{name}}", name).as_bytes())
        .with_context(|| format!("writing `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_has_a_build_a_manifest_a_zapp_and_a_test() {
        for t in [Template::C, Template::Rust, Template::Python] {
            let paths: Vec<&str> = t.files().iter().map(|f| f.path).collect();
            for needed in ["build.sh", "manifest.toml", "zapp.toml", "test.sh"] {
                assert!(paths.contains(&needed), "{t:?} has no {needed}");
            }
            let zapp = t.files().iter().find(|f| f.path == "zapp.toml").unwrap();
            crate::zapp::ZappToml::parse(&zapp.text.replace("{{name}}", "x"), "zapp.toml").unwrap();
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("hello-world_2").is_ok());
        assert!(check_name("2hello").is_err());
        assert!(check_name("a.b").is_err());
        assert!(check_name("").is_err());
    }
}
