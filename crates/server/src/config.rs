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
        Ok(ServerConfig {
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
        })
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
