//! The `zvm` binary: parses the command line and hands each subcommand to its module.
//!
//! Exit codes are decided in one place, [`exit`], and documented in `docs/exit-codes.md`.

mod bench;
mod compile;
mod exit;
mod inspect;
mod interpreters;
mod job;
mod memo;
mod new;
mod pack;
mod recover;
mod replay;
mod run;
mod validate;
mod zapp;

use clap::{Parser, Subcommand};

/// zvm: run WebAssembly programs in disposable, deterministic sandboxes that see only the
/// channels their manifest declares.
#[derive(Debug, Parser)]
#[command(name = "zvm", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log verbosity (error, warn, info, debug, trace); also read from `ZVM_LOG`.
    #[arg(long, global = true, value_name = "LEVEL")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only add noise"
)]
enum Command {
    Run(run::RunArgs),
    Job(job::JobArgs),
    #[command(hide = true)]
    Worker(job::WorkerCliArgs),
    Replay(replay::ReplayArgs),
    Interpreters(interpreters::InterpretersArgs),
    Recover(recover::RecoverArgs),
    Validate(validate::ValidateArgs),
    Compile(compile::CompileArgs),
    Bench(bench::BenchArgs),
    Pack(pack::PackArgs),
    Inspect(inspect::InspectArgs),
    New(new::NewArgs),
}

fn main() {
    let cli = Cli::parse();
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("ZVM_LOG").ok())
        .unwrap_or_else(|| "warn".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let code = match cli.command {
        Command::Run(args) => run::main(args),
        Command::Job(args) => job::main(args),
        Command::Worker(args) => job::worker_main(args),
        Command::Replay(args) => replay::main(args),
        Command::Interpreters(args) => interpreters::main(args),
        Command::Recover(args) => recover::main(args),
        Command::Validate(args) => validate::main(args),
        Command::Compile(args) => compile::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Pack(args) => pack::main(args),
        Command::Inspect(args) => inspect::main(args),
        Command::New(args) => new::main(args),
    };
    std::process::exit(code);
}
