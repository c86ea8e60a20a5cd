//! `zvm inspect`: what is inside a zapp, without unpacking or running it.
//!
//! The zapp is read with every check `zvm run` makes, so a zapp that inspects cleanly is one
//! that `zvm run` will unpack.

use std::path::PathBuf;

use clap::Args;

use crate::exit;
use crate::zapp::{self, Contents};

/// Show what a zapp holds: its name, version, description, arguments, entry point, and every
/// file with its size and BLAKE3 hash, and the zapp's own hash.
///
/// Examples:
///
///   zvm inspect wc.zapp
///
///   zvm inspect wc.zapp --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct InspectArgs {
    /// The zapp.
    #[arg(value_name = "ZAPP")]
    zapp: PathBuf,

    /// Print JSON (described in docs/zapps.md) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn main(args: InspectArgs) -> i32 {
    match zapp::read(&args.zapp, None) {
        Ok(contents) => {
            let text = if args.json {
                to_json(&contents) + "\n"
            } else {
                to_text(&contents)
            };
            // A closed pipe (`zvm inspect app.zapp | head`) is not an error of the zapp's.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
            0
        }
        Err(e) => {
            eprintln!("zvm: {e:#}");
            exit::CANNOT_START
        }
    }
}

/// The JSON form: `zapp.toml`'s content, the zapp's hash and size, and its files.
fn to_json(c: &Contents) -> String {
    let z = &c.zapp;
    let value = serde_json::json!({
        "version": 1,
        "hash": format!("blake3:{}", c.hash.to_hex()),
        "size": c.size,
        "app": {
            "name": z.app.name,
            "version": z.app.version,
            "description": z.app.description,
        },
        "entry": {"kind": z.entry.kind.as_str(), "path": z.entry.path},
        "args": z.args.iter().map(|a| serde_json::json!({"name": a.name, "help": a.help})).collect::<Vec<_>>(),
        "files": c.files.iter().map(|f| serde_json::json!({
            "path": f.path,
            "size": f.size,
            "hash": format!("blake3:{}", f.hash.to_hex()),
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn to_text(c: &Contents) -> String {
    use std::fmt::Write;
    let z = &c.zapp;
    let mut s = String::new();
    let _ = writeln!(s, "{} {}", z.app.name, z.app.version);
    for line in z.app.description.trim_end().lines() {
        let _ = writeln!(s, "  {line}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "hash:   blake3:{}", c.hash.to_hex());
    let _ = writeln!(s, "size:   {} bytes", c.size);
    let _ = writeln!(s, "entry:  {} `{}`", z.entry.kind.as_str(), z.entry.path);
    if z.args.is_empty() {
        let _ = writeln!(s, "args:   none described");
    } else {
        let _ = writeln!(s, "args:   zvm run ZAPP -- {}", names(z));
        let width = z.args.iter().map(|a| a.name.len()).max().unwrap_or(0);
        for a in &z.args {
            let _ = writeln!(s, "  {:width$}  {}", a.name, a.help);
        }
    }
    let total: u64 = c.files.iter().map(|f| f.size).sum();
    let _ = writeln!(s, "files:  {}, {total} bytes", c.files.len());
    let width = c
        .files
        .iter()
        .map(|f| f.size.to_string().len())
        .max()
        .unwrap_or(0);
    for f in &c.files {
        let _ = writeln!(
            s,
            "  {:>width$}  blake3:{}  {}",
            f.size,
            f.hash.to_hex(),
            f.path
        );
    }
    s
}

fn names(z: &zapp::ZappToml) -> String {
    z.args
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}
