//! `zvm validate`: check a program or manifest without running anything.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{exit, run};

/// Check a program or manifest without running it: the manifest is parsed and resolved, the
/// program is validated against wasm and zvm's policy (and compiled into the cache).
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The program (`.wasm` or `.wat`) or manifest to check.
    #[arg(value_name = "PROGRAM|MANIFEST")]
    target: PathBuf,

    /// Do not read or write the compile cache.
    #[arg(long)]
    no_cache: bool,
}

pub fn main(args: ValidateArgs) -> i32 {
    match validate(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("zvm: {e:#}");
            exit::CANNOT_START
        }
    }
}

fn validate(args: &ValidateArgs) -> Result<()> {
    let manifest = if run::is_program(&args.target)? {
        zvm_manifest::Manifest::for_program(&args.target)
    } else {
        zvm_manifest::parse_file(&args.target)?
    };
    let runtime = run::runtime(args.no_cache)?;
    let program = runtime.load_file(&manifest.program.path, manifest.program.hash)?;
    println!(
        "{}: ok ({}, validation {})",
        manifest.program.path.display(),
        program.hash(),
        program.validation()
    );
    Ok(())
}
