//! `zvm serve`: an HTTP gateway with an embedded object store that runs a fresh VM for every
//! request: code goes to the data.
//!
//! # A guided tour
//!
//! * [`config`]: the TOML file and flags, resolved into a checked [`ServerConfig`].
//! * [`Server::bind`] opens the object store ([`zvm_store::Store`]: `<data_dir>/store`, or an
//!   S3 bucket as `[store]` says), builds one long-lived [`zvm_vm::Runtime`] with a pooling
//!   allocator sized to `max_vms` and a compile cache (`<data_dir>/cache`), and binds the
//!   listener.
//! * [`http`] is the router and the middleware every request passes: a request id
//!   (`x-request-id`, taken from the client or made up, and echoed), a tracing span that
//!   carries it, and the request counters of [`metrics`].
//! * [`objects`] is the objects API; [`exec`] runs programs (admission control, the program
//!   cache, staging and committing outputs). Both turn every failure into an
//!   [`error::ApiError`], whose [`status`](error::ApiError::status) is the one mapping from
//!   errors to HTTP statuses.
//! * [`Server::run`] serves until its shutdown future completes (SIGTERM or ctrl-c in
//!   `zvm serve`), then stops accepting connections, lets requests in flight finish, and
//!   waits for every VM to end. Outputs land through store batches, so a run cut short by
//!   a crash or a kill leaves no partial object.
//!
//! The API is described in the crate's `README.md`.

pub mod activity;
pub mod cluster;
pub mod config;
pub mod deferred;
pub mod endpoints;
pub mod error;
pub mod exec;
pub mod handlers;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod objects;
pub mod registry;
pub mod status;
pub mod tenants;
pub mod zapps;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use zvm_store::{Store, StoreConfig};
use zvm_vm::{Allocator, PoolConfig, Runtime, RuntimeConfig};

pub use crate::config::{ConfigError, ConfigFile, ServerConfig};
pub use crate::error::ApiError;

/// What every handler shares.
#[derive(Debug)]
pub struct Shared {
    pub config: ServerConfig,
    pub store: Store,
    pub runtime: Runtime,
    pub programs: exec::ProgramCache,
    pub admission: exec::Admission,
    pub metrics: metrics::Metrics,
    /// Recent runs, jobs and VMs for the status page.
    pub activity: activity::Activity,
    /// Deferred executions by id (`?defer=true`, `/v1/jobs/{id}`).
    pub deferred: deferred::Deferred,
    /// Zapps unpacked and resolved, by hash.
    pub zapps: zapps::ZappCache,
    /// Deployed endpoints ready to serve, by name.
    pub endpoints: endpoints::Endpoints,
    /// The VM runtime of jobs (made on the first job).
    pub job_runtime: jobs::JobRuntime,
    /// API tokens, bucket owners and quotas.
    pub tenants: tenants::Tenants,
    /// Where runs stage their output objects (unnamed files, gone when closed).
    pub runs_dir: PathBuf,
    /// Numbers the request ids this server makes up.
    pub(crate) next_request: std::sync::atomic::AtomicU64,
    /// This server as a node of a cluster (cluster mode only; set once it has joined).
    pub cluster: std::sync::OnceLock<Arc<cluster::Node>>,
}

/// A bound server, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Opens the data directory and binds the listen address.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Server> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data)
            .with_context(|| format!("creating data directory `{}`", data.display()))?;
        let store = match &config.store {
            config::StoreBackend::Local => Store::open(&StoreConfig::Local {
                dir: data.join("store"),
            })
            .with_context(|| format!("opening the object store in `{}`", data.display()))?,
            config::StoreBackend::S3(s3) => Store::open(&StoreConfig::S3(s3.clone()))
                .with_context(|| {
                    format!(
                        "opening the S3 object store `s3://{}/{}`",
                        s3.bucket, s3.prefix
                    )
                })?,
        };
        let runs_dir = data.join("runs");
        std::fs::create_dir_all(&runs_dir)
            .with_context(|| format!("creating `{}`", runs_dir.display()))?;
        let slots = u32::try_from(config.max_vms).context("max_vms")?;
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(data.join("cache")),
            allocator: Allocator::Pooling(PoolConfig {
                slots,
                max_memory: config.max_memory,
                ..PoolConfig::default()
            }),
            journal: None,
        })
        .context("starting the VM runtime")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on `{}`", config.listen))?;
        let config_tenants = config.tenants.clone();
        let shared = Arc::new(Shared {
            admission: exec::Admission::new(config.max_vms, config.queue),
            config,
            store,
            runtime,
            programs: exec::ProgramCache::default(),
            metrics: metrics::Metrics::default(),
            activity: activity::Activity::default(),
            deferred: deferred::Deferred::default(),
            zapps: zapps::ZappCache::default(),
            endpoints: endpoints::Endpoints::default(),
            job_runtime: jobs::JobRuntime::default(),
            runs_dir,
            next_request: Default::default(),
            tenants: tenants::Tenants::new(&config_tenants),
            cluster: std::sync::OnceLock::new(),
        });
        // On the blocking pool, as every store call (the S3 backend blocks on its runtime).
        let reading = shared.clone();
        tokio::task::spawn_blocking(move || reading.tenants.read_owners(&reading))
            .await
            .context("reading the bucket owners")?
            .map_err(|e| anyhow::anyhow!("reading the bucket owners: {e}"))?;
        if let Some(settings) = shared.config.cluster.clone() {
            let node = cluster::Node::start(&shared, &settings, listener.local_addr()?)
                .await
                .context("joining the cluster")?;
            let _ = shared.cluster.set(node);
        }
        Ok(Server { shared, listener })
    }

    /// The address the server listens on (with the port picked, for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes gracefully: no new connections, the
    /// requests in flight answered, every VM ended.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = http::router(self.shared.clone());
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")?;
        tracing::info!("no more connections; waiting for VMs in flight");
        self.shared.admission.drain().await;
        if let Some(node) = self.shared.cluster.get() {
            node.cluster.leave().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on SIGTERM or ctrl-c (SIGINT): the shutdown signal of `zvm serve`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}
