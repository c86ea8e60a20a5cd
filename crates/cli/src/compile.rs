//! `zvm compile`: validate and precompile programs into the compile cache.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::{exit, run};

/// Validate and compile programs into the compile cache, so that later runs start at once.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Programs (`.wasm` or `.wat`) to compile.
    #[arg(value_name = "PROGRAM", required = true)]
    programs: Vec<PathBuf>,
}

pub fn main(args: CompileArgs) -> i32 {
    match compile(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("zvm: {e:#}");
            exit::CANNOT_START
        }
    }
}

fn compile(args: &CompileArgs) -> Result<()> {
    let runtime = run::runtime(false)?;
    if zvm_vm::Runtime::default_cache_dir().is_none() {
        bail!("no cache directory: set ZVM_CACHE_DIR or HOME");
    }
    for path in &args.programs {
        let program = runtime.load_file(path, None)?;
        println!(
            "{}: {} ({})",
            path.display(),
            program.hash(),
            program.validation()
        );
    }
    Ok(())
}
