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

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// zvm: run WebAssembly programs in disposable, deterministic sandboxes that see only the
/// channels their manifest declares.
#[derive(Debug, Parser)]
#[command(name = "zvm", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log verbosity (error, warn, info, debug, trace); also read from `ZVM_LOG`.
    #[arg(long, global = true, value_name = "LEVEL")]
    log: Option<String>,
    /// Log lines as `text` or as `json` (one object per line, with the request id of
    /// `zvm serve`'s request spans); also read from `ZVM_LOG_FORMAT`.
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
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
    Serve(ServeArgs),
}

/// Serve the HTTP API: an embedded object store, and a fresh VM per request that runs a
/// stored program with the request body as stdin and answers with its stdout.
///
/// Settings come from `--config` (a TOML file with `version = 1` and the keys named after
/// these flags, with `_` for `-`), and flags override them. The server stops gracefully on
/// SIGTERM or ctrl-c: it stops accepting connections, answers the requests in flight and
/// lands their outputs. The API is described in `docs/server.md`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address and port to listen on; port 0 picks a free one [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory of the object store, the compile cache and staged outputs [default:
    /// zvm-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// VMs running at once [default: one per core].
    #[arg(long, value_name = "N")]
    max_vms: Option<usize>,
    /// Runs that may wait for a VM; beyond them the answer is 503 [default: 64].
    #[arg(long, value_name = "N")]
    queue: Option<usize>,
    /// Largest request body, e.g. `64MiB` [default: 64 MiB].
    #[arg(long, value_name = "SIZE")]
    max_body: Option<String>,
    /// Largest stdout and largest output object of a run [default: 64 MiB].
    #[arg(long, value_name = "SIZE")]
    max_output: Option<String>,
    /// Longest a run may wait for a VM and run, e.g. `30s` [default: 60s].
    #[arg(long, value_name = "DURATION")]
    request_timeout: Option<String>,
    /// Fuel of a run, and the most a request may ask for with `?fuel=` [default:
    /// 10000000000].
    #[arg(long, value_name = "N")]
    max_fuel: Option<u64>,
    /// Linear memory of a run, and the most a request may ask for with `?memory=`
    /// [default: 256 MiB].
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// The object store's backend (boxed: a rarely used group of flags).
    #[command(flatten)]
    store: Box<StoreArgs>,
    /// Cluster mode (boxed, as the store's flags).
    #[command(flatten)]
    cluster: Box<ClusterArgs>,
}

/// The cluster flags of `zvm serve` (`[cluster]` in the configuration file); see
/// `docs/cluster.md`.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// Join a cluster through these NATS servers (comma-separated `nats://host:port`); needs
    /// `--store-backend s3`, a store every node shares.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    cluster: Option<Vec<String>>,
    /// This node's id: lowercase letters, digits and `-` [default: the host name].
    #[arg(long, value_name = "ID")]
    node: Option<String>,
    /// The HTTP URL other nodes use to reach this one [default: http:// and the listen
    /// address].
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// Where pipes from other nodes connect [default: the listen host, any free port].
    #[arg(long, value_name = "ADDR")]
    data_listen: Option<String>,
    /// The SeaweedFS volume server on this host, `host:port` as its master names it: members
    /// whose input it holds run here.
    #[arg(long, value_name = "ADDR")]
    volume: Option<String>,
    /// SeaweedFS master URL, to find which volume server holds an object.
    #[arg(long, value_name = "URL")]
    seaweed_master: Option<String>,
    /// SeaweedFS filer URL (its HTTP port), with `--seaweed-master`.
    #[arg(long, value_name = "URL")]
    seaweed_filer: Option<String>,
    /// Time between heartbeats [default: 1s].
    #[arg(long, value_name = "DURATION")]
    heartbeat: Option<String>,
    /// A node not heard from for this long is lost and its work placed elsewhere
    /// [default: 3s].
    #[arg(long, value_name = "DURATION")]
    node_timeout: Option<String>,
}

/// The `--store-*` flags of `zvm serve`.
#[derive(Debug, Args)]
struct StoreArgs {
    /// Where objects live: `local`, the embedded store in the data directory, or `s3`, an
    /// S3-compatible service (`[store]` in the configuration file; credentials from there or
    /// from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY) [default: local].
    #[arg(long, value_name = "BACKEND")]
    store_backend: Option<String>,
    /// S3 endpoint, e.g. `http://127.0.0.1:8333` [default: AWS, by region].
    #[arg(long, value_name = "URL")]
    store_endpoint: Option<String>,
    /// S3 region requests are signed for [default: us-east-1].
    #[arg(long, value_name = "REGION")]
    store_region: Option<String>,
    /// The S3 bucket that holds every zvm bucket.
    #[arg(long, value_name = "BUCKET")]
    store_bucket: Option<String>,
    /// Key prefix in the S3 bucket under which the store lives [default: none].
    #[arg(long, value_name = "PREFIX")]
    store_prefix: Option<String>,
    /// Allow a plain-HTTP S3 endpoint.
    #[arg(long)]
    store_allow_http: bool,
}

fn serve_main(args: ServeArgs) -> i32 {
    match serve(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("zvm serve: {e:#}");
            exit::CANNOT_START
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    use zvm_server::{ConfigFile, Server};
    let file = match &args.config {
        Some(path) => ConfigFile::from_file(path)?,
        None => ConfigFile::default(),
    };
    let store = *args.store;
    let cluster = *args.cluster;
    let cluster = zvm_server::config::ClusterFile {
        nats: cluster.cluster,
        node: cluster.node,
        advertise: cluster.advertise,
        data_listen: cluster.data_listen,
        volume: cluster.volume,
        seaweed_master: cluster.seaweed_master,
        seaweed_filer: cluster.seaweed_filer,
        heartbeat: cluster.heartbeat,
        node_timeout: cluster.node_timeout,
    };
    let flags = ConfigFile {
        version: None,
        listen: args.listen,
        data_dir: args.data_dir,
        max_vms: args.max_vms,
        queue: args.queue,
        max_body: args.max_body,
        max_output: args.max_output,
        request_timeout: args.request_timeout,
        max_fuel: args.max_fuel,
        max_memory: args.max_memory,
        // Credentials only from the file or the environment: flags show in `ps`.
        store: Some(zvm_server::config::StoreFile {
            backend: store.store_backend,
            endpoint: store.store_endpoint,
            region: store.store_region,
            bucket: store.store_bucket,
            prefix: store.store_prefix,
            allow_http: store.store_allow_http.then_some(true),
            ..zvm_server::config::StoreFile::default()
        }),
        cluster: (cluster != zvm_server::config::ClusterFile::default()).then_some(cluster),
        // Tenants come from the file.
        ..ConfigFile::default()
    };
    let config = file.merge(flags).resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("zvm-serve")
        .build()?;
    runtime.block_on(async {
        let server = Server::bind(config.clone()).await?;
        // The one line a script waits for: where the server listens.
        eprintln!(
            "zvm serve: listening on http://{} (data in `{}`, {} VMs, queue {})",
            server.local_addr()?,
            config.data_dir.display(),
            config.max_vms,
            config.queue
        );
        server.run(zvm_server::shutdown_signal()).await
    })
}

fn main() {
    let cli = Cli::parse();
    // A server logs each request (with its id) and stamps its lines with the time.
    let serving = matches!(cli.command, Command::Serve(_));
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("ZVM_LOG").ok())
        .unwrap_or_else(|| if serving { "info" } else { "warn" }.to_string());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let json = cli
        .log_format
        .clone()
        .or_else(|| std::env::var("ZVM_LOG_FORMAT").ok())
        .is_some_and(|f| f == "json");
    match (json, serving) {
        (true, _) => logs.json().with_current_span(true).init(),
        (false, true) => logs.init(),
        (false, false) => logs.without_time().init(),
    }
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
        Command::Serve(args) => serve_main(args),
    };
    std::process::exit(code);
}
