//! `zvm replay`: runs a recorded run again and says whether it reproduced.
//!
//! A report of `zvm run` carries what a replay needs (`replay` in the JSON): the canonical
//! manifest and its hash, the seed and start time, and the etag of every file input. Replay
//! checks the program and the inputs against the record first (naming the first that
//! differs), then runs the VM with its outputs staged and thrown away (a replay never changes
//! the host), and compares state, exit code, fuel and every channel's and export's etag.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use zvm_manifest::ContentHash;
use zvm_vm::Report;
use zvm_vm::memo::fingerprint;

use crate::{exit, memo};

/// Re-run a recorded run and check that it reproduces.
///
/// Examples:
///
///   zvm run job.toml --report-file run.json && zvm replay run.json
///
/// Exit code 0 when the replay reproduced the record, 123 when it did not (the first
/// difference is named), 125 when it could not run.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReplayArgs {
    /// A JSON report written by `zvm run --report-file` (or `--report json`).
    #[arg(value_name = "REPORT")]
    report: PathBuf,

    /// Standard input to give the guest, when the recorded run read its standard input.
    #[arg(long, value_name = "PATH")]
    stdin: Option<PathBuf>,

    /// Print the replay's own report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    report_file: Option<PathBuf>,

    /// Do not use the compile cache.
    #[arg(long)]
    no_cache: bool,
}

pub fn main(args: ReplayArgs) -> i32 {
    match replay(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zvm: {e:#}");
            exit::CANNOT_START
        }
    }
}

fn not_reproduced(what: String) -> i32 {
    println!("not reproduced: {what}");
    exit::NOT_REPRODUCED
}

fn replay(args: ReplayArgs) -> Result<i32> {
    let text = std::fs::read_to_string(&args.report)
        .with_context(|| format!("cannot read report `{}`", args.report.display()))?;
    let recorded = Report::from_json(&text)
        .with_context(|| format!("`{}` is not a zvm report", args.report.display()))?;
    let Some(info) = &recorded.replay else {
        bail!(
            "report `{}` carries no replay information (`replay`); write reports with `zvm run --report-file`",
            args.report.display()
        );
    };
    if ContentHash::of(info.manifest.as_bytes()).to_string() != info.manifest_hash {
        bail!(
            "report `{}`: the recorded manifest does not match its hash; the report is damaged",
            args.report.display()
        );
    }
    let manifest = zvm_manifest::parse_toml(&info.manifest, &args.report)
        .context("the recorded manifest no longer parses")?;
    let runtime = crate::run::runtime(args.no_cache)?;
    let program = match crate::run::load(&runtime, &manifest)? {
        Ok(p) => p,
        Err(report) => {
            return Ok(not_reproduced(format!(
                "the program was refused: {}",
                report.state_text
            )));
        }
    };
    if program.hash().to_string() != recorded.program_hash {
        return Ok(not_reproduced(format!(
            "program `{}` changed: recorded {}, now {}",
            manifest.program.path.display(),
            recorded.program_hash,
            program.hash()
        )));
    }
    let now = fingerprint(&manifest, &program.hash());
    for input in &info.inputs {
        match now.replay.inputs.iter().find(|i| i.name == input.name) {
            None => {
                return Ok(not_reproduced(format!(
                    "input `{}` (`{}`) can no longer be read",
                    input.name, input.path
                )));
            }
            Some(i) if i.etag != input.etag => {
                return Ok(not_reproduced(format!(
                    "input `{}` (`{}`) differs: recorded etag {}, now {}",
                    input.name, input.path, input.etag, i.etag
                )));
            }
            Some(_) => {}
        }
    }
    let stdin = match &args.stdin {
        Some(p) => Some(Arc::new(
            std::fs::read(p).with_context(|| format!("cannot read `{}`", p.display()))?,
        )),
        None => Some(Arc::new(Vec::new())),
    };
    let run = memo::run_captured(&runtime, &program, &manifest, stdin)?;
    run.txn.abort();
    let report = run.report;
    if let Some(path) = &args.report_file {
        std::fs::write(path, report.to_json() + "\n")
            .with_context(|| format!("writing the report to `{}`", path.display()))?;
    }
    if let Some(difference) = memo::difference(&recorded, &report) {
        return Ok(not_reproduced(difference));
    }
    println!(
        "reproduced: {}, fuel {}, {} channel(s) and {} export(s) with identical etags",
        report.state_text,
        report.fuel_used,
        report.channels.len(),
        report.exports.len()
    );
    Ok(0)
}
