//! `zvm recover`, and the recovery every `zvm` start performs: transactions whose process
//! died are finished (if they had committed) or rolled back (if not), so that each output of
//! an interrupted run is entirely old or entirely new, and all of a run's outputs agree.
//! See `docs/transactions.md`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use zvm_txn::{Journal, Outcome, Recovery};

/// Finish or roll back transactions interrupted by a crash.
///
/// Every `zvm run` does this at start-up; this command does it on demand and says what it
/// did. Transactions of zvm processes still running are left alone.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The journal directory (default: `$ZVM_STATE_DIR/journal`, else
    /// `$XDG_STATE_HOME/zvm/journal`, else `~/.local/state/zvm/journal`).
    #[arg(long, value_name = "DIR")]
    journal: Option<PathBuf>,
}

pub fn main(args: RecoverArgs) -> i32 {
    match recover(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("zvm: {e:#}");
            crate::exit::CANNOT_START
        }
    }
}

fn recover(args: RecoverArgs) -> Result<()> {
    let dir = match args.journal {
        Some(d) => d,
        None => Journal::default_dir().context("no state directory: set ZVM_STATE_DIR or HOME")?,
    };
    let journal = Journal::open(dir)?;
    let done = journal.recover()?;
    if done.is_empty() {
        println!("nothing to recover in `{}`", journal.dir().display());
    }
    for r in &done {
        println!("{}", describe(r));
    }
    Ok(())
}

fn describe(r: &Recovery) -> String {
    let paths: Vec<String> = r
        .paths
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect();
    match r.outcome {
        Outcome::RolledForward => format!(
            "finished an interrupted commit: {} now hold the new content",
            paths.join(", ")
        ),
        Outcome::RolledBack => format!(
            "rolled back an uncommitted run: removed {} staged output(s), destinations untouched",
            paths.len()
        ),
    }
}

/// The default journal, after recovering what it holds; `None` (with a warning) when there
/// is no usable state directory: runs then still commit their outputs together, but a crash
/// in the middle of a commit cannot be finished later.
pub fn journal_recovered() -> Option<Journal> {
    let dir = Journal::default_dir()?;
    let journal = match Journal::open(&dir) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!("no transaction journal: {e}");
            return None;
        }
    };
    match journal.recover() {
        Ok(done) => {
            for r in &done {
                if r.outcome == Outcome::RolledForward {
                    eprintln!("zvm: {}", describe(r));
                } else {
                    tracing::info!("{}", describe(r));
                }
            }
        }
        Err(e) => eprintln!("zvm: recovering interrupted transactions: {e}"),
    }
    Some(journal)
}
