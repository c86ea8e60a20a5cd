//! The server's configuration: a TOML file (`zvm serve --config server.toml`) whose every key
//! a command-line flag can override, resolved into one checked [`ServerConfig`].
//!
//! ```toml
//! version = 1
//! listen = "127.0.0.1:8080"
//! data_dir = "/var/lib/zvm"
//! max_vms = 2
//! queue = 64
//! max_body = "64 MiB"
//! max_output = "64 MiB"
//! request_timeout = "60s"
//! max_fuel = 10000000000
//! max_memory = "256 MiB"
//! ```
//!
//! Parsing has two phases, as for manifests: the file is read into [`ConfigFile`] (syntax,
//! unknown keys refused), flags are laid over it ([`ConfigFile::merge`]), and
//! [`ConfigFile::resolve`] checks the values and fills in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The only configuration format version so far.
pub const CONFIG_VERSION: u32 = 1;

/// Default listen address: loopback, so that a server started without thinking about it is
/// not reachable from the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "zvm-data";

/// Default VMs running at once when the machine's parallelism is unknown; otherwise one VM
/// per core, since a VM is CPU-bound and more would only share the cores.
pub const FALLBACK_MAX_VMS: usize = 2;

/// Most VMs a server may run at once: each holds a pooled memory slot (address space for
/// its largest memory plus guards) and a blocking thread.
pub const MAX_MAX_VMS: usize = 1024;

/// Default requests that may wait for a VM beyond those running: enough to ride out a burst
/// of a few seconds on a small machine, few enough that a waiting request is answered
/// within its timeout.
pub const DEFAULT_QUEUE: usize = 64;

/// Default largest request body (an uploaded object, a run's stdin): 64 MiB keeps a burst of
/// buffered stdins within memory while fitting real programs (the VM takes up to 64 MiB).
pub const DEFAULT_MAX_BODY: u64 = 64 << 20;

/// Default largest output of a run: per output channel, and for stdout, which is held in
/// memory until the run ends.
pub const DEFAULT_MAX_OUTPUT: u64 = 64 << 20;

/// Default time a run may take, including its wait for a VM: a guest that loops forever is
/// stopped by its fuel long before this on a default budget.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Fuel and memory a run gets when it does not ask: the manifest defaults.
pub const DEFAULT_RUN_FUEL: u64 = zvm_manifest::DEFAULT_FUEL;
pub const DEFAULT_RUN_MEMORY: u64 = zvm_manifest::DEFAULT_MEMORY;

/// The configuration file as written, every key optional but `version`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub version: Option<u32>,
    /// `host:port` to listen on; port 0 picks a free one.
    pub listen: Option<String>,
    /// Where the object store, the compile cache and staged outputs live.
    pub data_dir: Option<PathBuf>,
    /// VMs running at once.
    pub max_vms: Option<usize>,
    /// Requests waiting for a VM beyond those running; more are answered 503.
    pub queue: Option<usize>,
    /// Largest request body, as a size (`"64 MiB"`).
    pub max_body: Option<String>,
    /// Largest stdout and largest output object of a run, as a size.
    pub max_output: Option<String>,
    /// Longest a run may wait and run, as a duration (`"60s"`).
    pub request_timeout: Option<String>,
    /// Most fuel a request may ask for (`?fuel=`); also the default.
    pub max_fuel: Option<u64>,
    /// Most linear memory a request may ask for (`?memory=`), as a size; also the default.
    pub max_memory: Option<String>,
    /// `[[tenant]]` entries: API tokens and quotas ([`crate::tenants`]). None: an open server.
    #[serde(default)]
    pub tenant: Vec<crate::tenants::TenantFile>,
    /// `[store]`: where objects live; the embedded store in `data_dir` when absent.
    pub store: Option<StoreFile>,
    /// `[cluster]`: join a cluster of nodes ([`crate::cluster`]); a single node when absent.
    pub cluster: Option<ClusterFile>,
}

/// The checked configuration the server runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_vms: usize,
    pub queue: usize,
    pub max_body: u64,
    pub max_output: u64,
    pub request_timeout: Duration,
    pub max_fuel: u64,
    pub max_memory: u64,
    /// The tenants; empty for an open server.
    pub tenants: Vec<crate::tenants::TenantConfig>,
    /// The object store's backend.
    pub store: StoreBackend,
    /// Cluster mode, when configured.
    pub cluster: Option<ClusterSettings>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ConfigFile::default()
            .resolve()
            .expect("the defaults are valid")
    }
}

/// A configuration that cannot be used; the message names the file and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration `{}`: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("configuration key `{key}`: {message}")]
    Value { key: &'static str, message: String },
}

impl ConfigFile {
    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ConfigFile::from_toml(&text, path)
    }

    /// Parses configuration text; `origin` names it in errors (with line and column).
    pub fn from_toml(text: &str, origin: &Path) -> Result<ConfigFile, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        match file.version {
            Some(CONFIG_VERSION) => Ok(file),
            Some(v) => Err(ConfigError::Parse {
                path: origin.to_path_buf(),
                message: format!("`version` is {v}, this zvm reads version {CONFIG_VERSION}"),
            }),
            None => Err(ConfigError::Parse {
                path: origin.to_path_buf(),
                message: format!("`version` is missing, expected `version = {CONFIG_VERSION}`"),
            }),
        }
    }

    /// `over`'s keys where set, else this file's: flags over the file.
    pub fn merge(self, over: ConfigFile) -> ConfigFile {
        ConfigFile {
            version: over.version.or(self.version),
            listen: over.listen.or(self.listen),
            data_dir: over.data_dir.or(self.data_dir),
            max_vms: over.max_vms.or(self.max_vms),
            queue: over.queue.or(self.queue),
            max_body: over.max_body.or(self.max_body),
            max_output: over.max_output.or(self.max_output),
            request_timeout: over.request_timeout.or(self.request_timeout),
            max_fuel: over.max_fuel.or(self.max_fuel),
            max_memory: over.max_memory.or(self.max_memory),
            // Tenants come from the file only (no flags), so `over` has them only when it is
            // itself a file.
            tenant: if over.tenant.is_empty() {
                self.tenant
            } else {
                over.tenant
            },
            store: match (self.store, over.store) {
                (Some(file), Some(flags)) => Some(file.merge(flags)),
                (file, flags) => flags.or(file),
            },
            cluster: match (self.cluster, over.cluster) {
                (Some(file), Some(flags)) => Some(file.merge(flags)),
                (file, flags) => flags.or(file),
            },
        }
    }

    /// Checks every value and fills in the defaults.
    pub fn resolve(self) -> Result<ServerConfig, ConfigError> {
        let value = |key, message: String| ConfigError::Value { key, message };
        let listen = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen.parse().map_err(|_| {
            value(
                "listen",
                format!("`{listen}` is not an address and port like `127.0.0.1:8080`"),
            )
        })?;
        let size = |key, text: Option<&str>, default: u64| match text {
            None => Ok(default),
            Some(t) => zvm_manifest::parse_size(t).map_err(|m| value(key, m)),
        };
        let max_vms = self.max_vms.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(FALLBACK_MAX_VMS, |n| n.get())
        });
        if max_vms == 0 || max_vms > MAX_MAX_VMS {
            return Err(value(
                "max_vms",
                format!("{max_vms} is outside 1 to {MAX_MAX_VMS}"),
            ));
        }
        let request_timeout = match &self.request_timeout {
            None => DEFAULT_REQUEST_TIMEOUT,
            Some(t) => zvm_manifest::parse_duration(t).map_err(|m| value("request_timeout", m))?,
        };
        if request_timeout.is_zero() {
            return Err(value("request_timeout", "must be greater than 0".into()));
        }
        let max_fuel = self.max_fuel.unwrap_or(DEFAULT_RUN_FUEL);
        if max_fuel == 0 {
            return Err(value("max_fuel", "must be greater than 0".into()));
        }
        let max_memory = size("max_memory", self.max_memory.as_deref(), DEFAULT_RUN_MEMORY)?;
        if max_memory == 0 || max_memory > zvm_manifest::MAX_MEMORY {
            return Err(value(
                "max_memory",
                format!(
                    "{max_memory} bytes is outside 1 to {} bytes",
                    zvm_manifest::MAX_MEMORY
                ),
            ));
        }
        ServerConfig {
            listen,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            max_vms,
            queue: self.queue.unwrap_or(DEFAULT_QUEUE),
            max_body: size("max_body", self.max_body.as_deref(), DEFAULT_MAX_BODY)?,
            max_output: size("max_output", self.max_output.as_deref(), DEFAULT_MAX_OUTPUT)?,
            request_timeout,
            max_fuel,
            max_memory,
            tenants: crate::tenants::resolve(&self.tenant)?,
            cluster: match self.cluster {
                Some(c) if c.nats.as_ref().is_some_and(|n| !n.is_empty()) => Some(c.resolve()?),
                Some(c) if c != ClusterFile::default() => {
                    return Err(value(
                        "cluster.nats",
                        "cluster keys are set but no NATS server is: give `--cluster URL`".into(),
                    ));
                }
                _ => None,
            },
            store: resolve_store(self.store.unwrap_or_default(), |name| {
                std::env::var(name).ok()
            })?,
        }
        .check_cluster()
    }
}

impl ServerConfig {
    /// Cluster mode needs a store every node shares, and each node writes its batches under
    /// its own id there.
    fn check_cluster(mut self) -> Result<ServerConfig, ConfigError> {
        if let Some(c) = &self.cluster {
            match &mut self.store {
                StoreBackend::S3(s3) => s3.writer = Some(c.node.clone()),
                StoreBackend::Local => {
                    return Err(ConfigError::Value {
                        key: "store.backend",
                        message: "cluster mode needs a store every node shares: \
                                  `--store-backend s3` (and its endpoint and bucket)"
                            .into(),
                    });
                }
            }
        }
        Ok(self)
    }
}

/// The `[cluster]` section as written (every key also a flag of `zvm serve`):
///
/// ```toml
/// [cluster]
/// nats = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]   # turns cluster mode on
/// node = "node-1"                          # default: the host name
/// advertise = "http://10.0.0.1:8080"       # how other nodes reach this one
/// data_listen = "10.0.0.1:7000"            # pipes from other nodes; default <listen host>:0
/// volume = "10.0.0.1:8080"                 # this host's SeaweedFS volume server
/// seaweed_master = "http://10.0.0.9:9333"  # to find which volume server holds an object
/// seaweed_filer = "http://10.0.0.9:8888"
/// heartbeat = "1s"
/// node_timeout = "3s"                      # a node not heard for this long is lost
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub nats: Option<Vec<String>>,
    pub node: Option<String>,
    pub advertise: Option<String>,
    pub data_listen: Option<String>,
    pub volume: Option<String>,
    pub seaweed_master: Option<String>,
    pub seaweed_filer: Option<String>,
    pub heartbeat: Option<String>,
    pub node_timeout: Option<String>,
}

/// Default time between heartbeats.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Default time after which a silent node is lost: three heartbeats.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// The checked `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub nats: Vec<String>,
    pub node: String,
    pub advertise: Option<String>,
    pub data_listen: Option<String>,
    pub volume: Option<String>,
    pub seaweed_master: Option<String>,
    pub seaweed_filer: Option<String>,
    pub heartbeat: Duration,
    pub node_timeout: Duration,
}

impl ClusterFile {
    /// `over`'s keys where set, else this section's.
    pub fn merge(self, over: ClusterFile) -> ClusterFile {
        ClusterFile {
            nats: over.nats.or(self.nats),
            node: over.node.or(self.node),
            advertise: over.advertise.or(self.advertise),
            data_listen: over.data_listen.or(self.data_listen),
            volume: over.volume.or(self.volume),
            seaweed_master: over.seaweed_master.or(self.seaweed_master),
            seaweed_filer: over.seaweed_filer.or(self.seaweed_filer),
            heartbeat: over.heartbeat.or(self.heartbeat),
            node_timeout: over.node_timeout.or(self.node_timeout),
        }
    }

    fn resolve(self) -> Result<ClusterSettings, ConfigError> {
        let value = |key, message: String| ConfigError::Value { key, message };
        let nats = self.nats.unwrap_or_default();
        for url in &nats {
            if !url.starts_with("nats://") && !url.starts_with("tls://") {
                return Err(value(
                    "cluster.nats",
                    format!("`{url}` is not a NATS URL like `nats://10.0.0.1:4222`"),
                ));
            }
        }
        let node = match self.node {
            Some(n) => n,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_ascii_lowercase())
                .unwrap_or_else(|_| "node".into()),
        };
        zvm_cluster::validate_node_id(&node).map_err(|m| value("cluster.node", m))?;
        let duration = |key, text: Option<&str>, default: Duration| match text {
            None => Ok(default),
            Some(t) => zvm_manifest::parse_duration(t).map_err(|m| value(key, m)),
        };
        let heartbeat = duration(
            "cluster.heartbeat",
            self.heartbeat.as_deref(),
            DEFAULT_HEARTBEAT,
        )?;
        let node_timeout = duration(
            "cluster.node_timeout",
            self.node_timeout.as_deref(),
            DEFAULT_NODE_TIMEOUT,
        )?;
        if heartbeat.is_zero() || node_timeout < heartbeat * 2 {
            return Err(value(
                "cluster.node_timeout",
                format!("{node_timeout:?} must be at least two heartbeats ({heartbeat:?} each)"),
            ));
        }
        if self.seaweed_master.is_some() != self.seaweed_filer.is_some() {
            return Err(value(
                "cluster.seaweed_master",
                "give both `seaweed_master` and `seaweed_filer`, or neither".into(),
            ));
        }
        Ok(ClusterSettings {
            nats,
            node,
            advertise: self.advertise,
            data_listen: self.data_listen,
            volume: self.volume,
            seaweed_master: self.seaweed_master,
            seaweed_filer: self.seaweed_filer,
            heartbeat,
            node_timeout,
        })
    }
}

/// The `[store]` section as written:
///
/// ```toml
/// [store]
/// backend = "s3"                      # or "local", the default: the embedded store
/// endpoint = "http://127.0.0.1:8333"  # absent: AWS S3 itself, by region
/// region = "us-east-1"                # the default
/// bucket = "zvm"                      # the one S3 bucket; it must exist
/// prefix = "node-1"                   # keys live under it; default none
/// access_key_id = "..."               # default: $AWS_ACCESS_KEY_ID
/// secret_access_key = "..."           # default: $AWS_SECRET_ACCESS_KEY
/// allow_http = true                   # needed for an http:// endpoint
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub backend: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: Option<bool>,
}

impl StoreFile {
    /// `over`'s keys where set, else this section's.
    pub fn merge(self, over: StoreFile) -> StoreFile {
        StoreFile {
            backend: over.backend.or(self.backend),
            endpoint: over.endpoint.or(self.endpoint),
            region: over.region.or(self.region),
            bucket: over.bucket.or(self.bucket),
            prefix: over.prefix.or(self.prefix),
            access_key_id: over.access_key_id.or(self.access_key_id),
            secret_access_key: over.secret_access_key.or(self.secret_access_key),
            allow_http: over.allow_http.or(self.allow_http),
        }
    }
}

/// The object store's backend, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreBackend {
    /// The embedded store in `<data_dir>/store`.
    #[default]
    Local,
    /// An S3-compatible service.
    S3(zvm_store::S3Config),
}

/// The region requests are signed for when none is given: AWS's default, which SeaweedFS
/// and MinIO accept.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// Checks the `[store]` section; `env` supplies the AWS credential variables.
fn resolve_store(
    file: StoreFile,
    env: impl Fn(&str) -> Option<String>,
) -> Result<StoreBackend, ConfigError> {
    let value = |key, message: String| ConfigError::Value { key, message };
    match file.backend.as_deref().unwrap_or("local") {
        "local" => {
            let s3_keys = [
                ("store.endpoint", file.endpoint.is_some()),
                ("store.region", file.region.is_some()),
                ("store.bucket", file.bucket.is_some()),
                ("store.prefix", file.prefix.is_some()),
                ("store.access_key_id", file.access_key_id.is_some()),
                ("store.secret_access_key", file.secret_access_key.is_some()),
                ("store.allow_http", file.allow_http.is_some()),
            ];
            match s3_keys.iter().find(|(_, set)| *set) {
                Some((key, _)) => Err(value(
                    key,
                    "is an S3 setting, and `store.backend` is `local` (set it to `s3`)".into(),
                )),
                None => Ok(StoreBackend::Local),
            }
        }
        "s3" => {
            let bucket = file
                .bucket
                .filter(|b| !b.is_empty())
                .ok_or_else(|| value("store.bucket", "missing: the S3 bucket to use".into()))?;
            let prefix = file.prefix.unwrap_or_default();
            if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
                return Err(value(
                    "store.prefix",
                    format!("`{prefix}` must not start or end with `/`, nor hold `//`"),
                ));
            }
            let allow_http = file.allow_http.unwrap_or(false);
            if let Some(endpoint) = &file.endpoint {
                if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                    return Err(value(
                        "store.endpoint",
                        format!("`{endpoint}` is not an http:// or https:// URL"),
                    ));
                }
                if endpoint.starts_with("http://") && !allow_http {
                    return Err(value(
                        "store.endpoint",
                        format!(
                            "`{endpoint}` is plain HTTP: set `store.allow_http = true` to allow it"
                        ),
                    ));
                }
            }
            let access_key_id = file.access_key_id.or_else(|| env("AWS_ACCESS_KEY_ID"));
            let secret_access_key = file
                .secret_access_key
                .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
            if access_key_id.is_some() != secret_access_key.is_some() {
                return Err(value(
                    "store.secret_access_key",
                    "`access_key_id` and `secret_access_key` (or $AWS_ACCESS_KEY_ID and \
                     $AWS_SECRET_ACCESS_KEY) go together: one is missing"
                        .into(),
                ));
            }
            Ok(StoreBackend::S3(zvm_store::S3Config {
                endpoint: file.endpoint,
                region: file.region.unwrap_or_else(|| DEFAULT_S3_REGION.into()),
                bucket,
                prefix,
                access_key_id,
                secret_access_key,
                allow_http,
                writer: None,
            }))
        }
        other => Err(value(
            "store.backend",
            format!("`{other}` is not a backend: `local` or `s3`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_flags_over_it_resolves() {
        let file = ConfigFile::from_toml(
            "version = 1\nlisten = \"127.0.0.1:9000\"\nmax_body = \"1 MiB\"\nqueue = 3\n",
            Path::new("s.toml"),
        )
        .unwrap();
        let flags = ConfigFile {
            queue: Some(7),
            request_timeout: Some("5s".into()),
            ..ConfigFile::default()
        };
        let c = file.merge(flags).resolve().unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.max_body, 1 << 20);
        assert_eq!(c.queue, 7);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.max_fuel, DEFAULT_RUN_FUEL);
    }

    #[test]
    fn the_store_section_resolves_with_credentials_from_the_environment() {
        let file = ConfigFile::from_toml(
            "version = 1\n[store]\nbackend = \"s3\"\nendpoint = \"http://127.0.0.1:8333\"\n\
             bucket = \"zvm\"\nprefix = \"node-1\"\nallow_http = true\n",
            Path::new("s.toml"),
        )
        .unwrap();
        let flags = ConfigFile {
            store: Some(StoreFile {
                prefix: Some("node-2".into()),
                ..StoreFile::default()
            }),
            ..ConfigFile::default()
        };
        let merged = file.merge(flags).store.unwrap();
        let env = |name: &str| Some(format!("env-{name}"));
        let StoreBackend::S3(s3) = resolve_store(merged, env).unwrap() else {
            panic!("not s3");
        };
        assert_eq!(s3.prefix, "node-2");
        assert_eq!(s3.bucket, "zvm");
        assert_eq!(s3.region, DEFAULT_S3_REGION);
        assert_eq!(s3.access_key_id.as_deref(), Some("env-AWS_ACCESS_KEY_ID"));
        assert_eq!(
            s3.secret_access_key.as_deref(),
            Some("env-AWS_SECRET_ACCESS_KEY")
        );
        assert_eq!(
            ConfigFile::default().resolve().unwrap().store,
            StoreBackend::Local
        );
    }

    #[test]
    fn bad_store_sections_name_the_key() {
        let bad = |toml: &str| {
            let text = format!("version = 1\n[store]\n{toml}");
            match ConfigFile::from_toml(&text, Path::new("s.toml")) {
                Err(e) => e.to_string(),
                Ok(f) => resolve_store(f.store.unwrap(), |_| None)
                    .unwrap_err()
                    .to_string(),
            }
        };
        assert!(bad("backend = \"ftp\"\n").contains("`store.backend`"));
        assert!(bad("backend = \"s3\"\n").contains("`store.bucket`"));
        assert!(bad("bucket = \"b\"\n").contains("`store.bucket`: is an S3 setting"));
        let e = bad("backend = \"s3\"\nbucket = \"b\"\nendpoint = \"http://h:1\"\n");
        assert!(e.contains("allow_http"), "{e}");
        let e = bad("backend = \"s3\"\nbucket = \"b\"\nprefix = \"/p\"\n");
        assert!(e.contains("`store.prefix`"), "{e}");
        let e = bad("backend = \"s3\"\nbucket = \"b\"\naccess_key_id = \"k\"\n");
        assert!(e.contains("go together"), "{e}");
        let e = bad("backend = \"s3\"\nbuckets = \"b\"\n");
        assert!(e.contains("buckets") && e.contains("line 4"), "{e}");
    }

    #[test]
    fn the_cluster_section_resolves_and_bad_ones_name_the_key() {
        let s3 = "[store]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"http://h:1\"\n\
                  allow_http = true\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n";
        let resolve = |cluster: &str, store: &str| {
            let text = format!("version = 1\n{store}[cluster]\n{cluster}");
            ConfigFile::from_toml(&text, Path::new("c.toml"))
                .and_then(ConfigFile::resolve)
                .map_err(|e| e.to_string())
        };
        let good = resolve(
            "nats = [\"nats://10.0.0.1:4222\"]\nnode = \"n-1\"\nheartbeat = \"500ms\"\n",
            s3,
        )
        .unwrap();
        let c = good.cluster.as_ref().unwrap();
        assert_eq!(c.node, "n-1");
        assert_eq!(c.heartbeat, Duration::from_millis(500));
        assert_eq!(c.node_timeout, DEFAULT_NODE_TIMEOUT);
        // Each node writes its batches under its own id in the shared store.
        match &good.store {
            StoreBackend::S3(s3) => assert_eq!(s3.writer.as_deref(), Some("n-1")),
            other => panic!("{other:?}"),
        }
        let nats = "nats = [\"nats://10.0.0.1:4222\"]\nnode = \"n1\"\n";
        let e = resolve(nats, "").unwrap_err();
        assert!(e.contains("`store.backend`") && e.contains("s3"), "{e}");
        let e = resolve("nats = [\"http://x:1\"]\n", s3).unwrap_err();
        assert!(e.contains("`cluster.nats`"), "{e}");
        let e = resolve("nats = [\"nats://x:1\"]\nnode = \"Node_1\"\n", s3).unwrap_err();
        assert!(e.contains("`cluster.node`"), "{e}");
        let e = resolve(&format!("{nats}node_timeout = \"1s\"\n"), s3).unwrap_err();
        assert!(e.contains("two heartbeats"), "{e}");
        let e = resolve(&format!("{nats}seaweed_master = \"http://m:1\"\n"), s3).unwrap_err();
        assert!(e.contains("seaweed_filer"), "{e}");
        let e = resolve("node = \"n1\"\n", s3).unwrap_err();
        assert!(e.contains("no NATS server"), "{e}");
        let e = resolve(&format!("{nats}nodes = 3\n"), s3).unwrap_err();
        assert!(e.contains("nodes"), "{e}");
    }

    #[test]
    fn errors_name_the_spot() {
        let e = ConfigFile::from_toml("version = 1\nlisen = \"x\"\n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.toml") && e.contains("line 2") && e.contains("lisen"),
            "{e}"
        );
        let e = ConfigFile::from_toml("listen = \"x\"\n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`version` is missing"), "{e}");
        let e = ConfigFile {
            max_body: Some("12 parsecs".into()),
            ..ConfigFile::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("configuration key `max_body`"), "{e}");
        let e = ConfigFile {
            max_vms: Some(0),
            ..ConfigFile::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("`max_vms`"), "{e}");
    }
}
