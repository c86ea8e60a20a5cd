//! A SeaweedFS cluster: one `weed master`, one `weed volume` per host and one `weed filer`
//! with its S3 gateway, as separate processes, the way a cluster of machines runs it (the
//! store's own tests use the all-in-one `weed mini`).
//!
//! * The master (`-peers=none`: one master, no Raft quorum to wait for) and the filer run in
//!   the root namespace on the address given (the hosts' gateway); each volume server runs
//!   where it is told, inside its host's namespace, bound to the host's address, so that the
//!   master names it by that address (`ip:port`, the `url` of `/dir/lookup`).
//! * Every server's gRPC port is its HTTP port + 10000 ([`super::free_ports`]), SeaweedFS's
//!   own default: some of its clients derive the gRPC port that way whatever they are told.
//! * Small volumes (`-volumeSizeLimitMB`) and few of them per server (`-max`): volume files
//!   are sparse and grow as written, so three servers fit on a small disk. At start the
//!   master grows [`VOLUMES_AT_START`] writable volumes of the bucket's collection on every
//!   volume server (`/vol/grow?dataNode=`); the filer then spreads writes over all of them
//!   (it picks a writable volume at random per write), rather than over whichever servers
//!   a first automatic growth happened to choose.
//! * The S3 gateway takes static credentials from an `-s3.config` file (one admin identity,
//!   [`ACCESS_KEY_ID`]/[`SECRET_ACCESS_KEY`]); the bucket [`BUCKET`] is made with `weed shell`
//!   (`s3.bucket.create`), and the cluster is ready when `zvm_store::S3Store::open` works.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zvm_store::S3Config;

use super::{INSTALL_WEED, Process, START_TIMEOUT, free_ports, get_json, require_program};

/// The S3 bucket the cluster serves, made at start.
pub const BUCKET: &str = "zvm-test";
/// The S3 access key of the gateway's one identity.
pub const ACCESS_KEY_ID: &str = "zvmtest";
/// Its secret key.
pub const SECRET_ACCESS_KEY: &str = "zvmtest-secret";
/// The size at which the master stops writing to a volume: small, so that a test that
/// writes much fills volumes and grows new ones instead of one large file per server.
const VOLUME_SIZE_LIMIT_MB: u32 = 64;
/// The most volumes a volume server holds (the default, 8, is also what it preallocates
/// room for in its index; it costs nothing on disk until written).
const MAX_VOLUMES: u32 = 8;
/// The free disk space below which a volume server turns its volumes read-only and takes no
/// new ones. Its default, 1% of the disk, is gigabytes on a large disk that builds have
/// nearly filled; the tests write megabytes.
const MIN_FREE_SPACE: &str = "128MiB";
/// Writable volumes of [`BUCKET`]'s collection grown on each volume server at start.
pub const VOLUMES_AT_START: u32 = 2;
/// The gRPC port of a SeaweedFS server whose HTTP port is `port`.
const GRPC_OFFSET: u16 = 10_000;

/// A running SeaweedFS cluster; every server is killed, and every file removed, when dropped.
#[derive(Debug)]
pub struct SeaweedCluster {
    /// The S3 gateway, `http://<ip>:<port>`.
    pub s3_endpoint: String,
    /// The master, `http://<ip>:<port>` (`/dir/lookup`, `/dir/status`, `/vol/status`).
    pub master_url: String,
    /// The filer's HTTP port, `http://<ip>:<port>`.
    pub filer_url: String,
    master_addr: SocketAddr,
    /// `-master=` for the volume servers and `weed shell`: `ip:port.grpcport`.
    master_flag: String,
    filer_flag: String,
    volumes: Vec<Volume>,
    filer: Option<Process>,
    master: Process,
    // Last: dropped after the servers are killed.
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Volume {
    ip: Ipv4Addr,
    port: u16,
    /// How the master names it (`ip:port`).
    url: String,
    process: Process,
}

impl SeaweedCluster {
    /// Starts a master and a filer with the S3 gateway on `master_ip`, and one volume server
    /// per entry of `volume_hosts`: bound to its address, run with its command prefix (a
    /// host's [`super::Hosts::prefix`]) or in this namespace when `None`. Waits until S3
    /// requests on [`BUCKET`] work. `None` when `weed` is missing and [`super::SKIP_VAR`] is
    /// `1`; panics, saying how to install it, when it is missing otherwise, and with every
    /// log when the cluster does not come up.
    pub fn start(
        master_ip: Ipv4Addr,
        volume_hosts: Vec<(Ipv4Addr, Option<Vec<String>>)>,
    ) -> Option<SeaweedCluster> {
        assert!(
            !volume_hosts.is_empty(),
            "a SeaweedFS cluster needs a volume server"
        );
        if !require_program("weed", "version", INSTALL_WEED) {
            return None;
        }
        super::kill_orphans_noisily();
        let dir = tempfile::tempdir().expect("a temporary directory for SeaweedFS");
        let root = dir.path().to_path_buf();
        let path = |name: &str| root.join(name).display().to_string();
        let ports = free_ports(3 + volume_hosts.len(), GRPC_OFFSET);
        let (master_port, filer_port, s3_port) = (ports[0], ports[1], ports[2]);
        let master_flag = format!("{master_ip}:{master_port}.{}", master_port + GRPC_OFFSET);
        let filer_flag = format!("{master_ip}:{filer_port}.{}", filer_port + GRPC_OFFSET);
        let log = |name: &str| root.join(format!("{name}.log"));

        std::fs::create_dir_all(path("master")).expect("the master's directory");
        let master = Process::start(
            "weed master".into(),
            &[],
            [
                "weed".into(),
                "master".into(),
                format!("-ip={master_ip}"),
                format!("-ip.bind={master_ip}"),
                format!("-port={master_port}"),
                format!("-port.grpc={}", master_port + GRPC_OFFSET),
                format!("-mdir={}", path("master")),
                "-peers=none".into(),
                format!("-volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}"),
                "-defaultReplication=000".into(),
                "-telemetry=false".into(),
            ]
            .into(),
            &root,
            log("master"),
        );
        let mut cluster = SeaweedCluster {
            s3_endpoint: format!("http://{master_ip}:{s3_port}"),
            master_url: format!("http://{master_ip}:{master_port}"),
            filer_url: format!("http://{master_ip}:{filer_port}"),
            master_addr: SocketAddr::from((master_ip, master_port)),
            master_flag,
            filer_flag,
            volumes: Vec::new(),
            // Started once the volume servers are up.
            filer: None,
            master,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        cluster.wait("the master to lead", deadline, |c| {
            let status = get_json(c.master_addr, "/cluster/status")?;
            match status["IsLeader"].as_bool() {
                Some(true) => Ok(()),
                _ => Err(format!("/cluster/status: {status}")),
            }
        });

        for (i, (ip, prefix)) in volume_hosts.into_iter().enumerate() {
            let port = ports[3 + i];
            let volume_dir = cluster.dir.path().join(format!("volume-{i}"));
            std::fs::create_dir_all(&volume_dir).expect("a volume server's directory");
            let process = Process::start(
                format!("weed volume {i}"),
                prefix.as_deref().unwrap_or(&[]),
                vec![
                    "weed".into(),
                    "volume".into(),
                    format!("-ip={ip}"),
                    format!("-ip.bind={ip}"),
                    format!("-port={port}"),
                    format!("-port.grpc={}", port + GRPC_OFFSET),
                    format!("-dir={}", volume_dir.display()),
                    format!("-max={MAX_VOLUMES}"),
                    format!("-minFreeSpace={MIN_FREE_SPACE}"),
                    format!("-master={}", cluster.master_flag),
                ],
                cluster.dir.path(),
                log(&format!("volume-{i}")),
            );
            cluster.volumes.push(Volume {
                ip,
                port,
                url: format!("{ip}:{port}"),
                process,
            });
        }
        cluster.wait("every volume server to join the master", deadline, |c| {
            let listed = c.listed_volume_servers()?;
            for v in &c.volumes {
                if !listed.contains(&v.url) {
                    return Err(format!("{} is not in /dir/status ({listed:?})", v.url));
                }
            }
            Ok(())
        });
        for i in 0..cluster.volumes.len() {
            let url = cluster.volumes[i].url.clone();
            let path = format!(
                "/vol/grow?collection={BUCKET}&replication=000&count={VOLUMES_AT_START}&dataNode={url}"
            );
            cluster.wait("volumes to grow", deadline, |c| {
                let answer = get_json(c.master_addr, &path)?;
                match answer["count"].as_u64() {
                    Some(n) if n == u64::from(VOLUMES_AT_START) => Ok(()),
                    _ => Err(format!("{path}: {answer}")),
                }
            });
        }

        std::fs::write(path("s3.json"), s3_identities()).expect("writing the S3 identities");
        std::fs::create_dir_all(path("filer")).expect("the filer's directory");
        cluster.filer = Some(Process::start(
            "weed filer".into(),
            &[],
            vec![
                "weed".into(),
                "filer".into(),
                format!("-ip={master_ip}"),
                format!("-ip.bind={master_ip}"),
                format!("-port={filer_port}"),
                format!("-port.grpc={}", filer_port + GRPC_OFFSET),
                format!("-master={}", cluster.master_flag),
                format!("-defaultStoreDir={}", path("filer")),
                // Its own sockets, not /tmp/seaweedfs-*-<port>.sock that any other weed
                // using the same port number (in another namespace) would share.
                format!("-localSocket={}", path("filer.sock")),
                "-s3".into(),
                format!("-s3.port={s3_port}"),
                format!("-s3.port.grpc={}", s3_port + GRPC_OFFSET),
                format!("-s3.config={}", path("s3.json")),
                format!("-s3.localSocket={}", path("s3.sock")),
                // Services with fixed default ports that the cluster does not use.
                "-s3.port.iceberg=0".into(),
                "-s3.port.lance=0".into(),
            ],
            cluster.dir.path(),
            log("filer"),
        ));
        let s3 = SocketAddr::from((master_ip, s3_port));
        cluster.wait("the S3 gateway to listen", deadline, |_| {
            TcpStream::connect_timeout(&s3, Duration::from_millis(200))
                .map(drop)
                .map_err(|e| format!("{s3}: {e}"))
        });
        cluster.wait("the bucket to be made", deadline, |c| c.create_bucket());
        cluster.wait("S3 requests to work", deadline, |c| {
            zvm_store::S3Store::open(&c.s3_config("ready-check"))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        Some(cluster)
    }

    /// The store configuration for this cluster's S3 gateway, with its keys under `prefix`.
    pub fn s3_config(&self, prefix: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.s3_endpoint.clone()),
            region: "us-east-1".into(),
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            access_key_id: Some(ACCESS_KEY_ID.into()),
            secret_access_key: Some(SECRET_ACCESS_KEY.into()),
            allow_http: true,
            writer: None,
        }
    }

    /// How many volume servers there are (running or killed).
    pub fn volume_count(&self) -> usize {
        self.volumes.len()
    }

    /// How the master names volume server `i` (`ip:port`): the `url` of its `/dir/lookup`
    /// answers, and of `/dir/status`'s data nodes.
    pub fn volume_url(&self, i: usize) -> &str {
        &self.volumes[i].url
    }

    /// Kills volume server `i` (SIGKILL); its data stays for
    /// [`SeaweedCluster::start_volume_again`].
    pub fn kill_volume(&mut self, i: usize) {
        self.volumes[i].process.kill();
    }

    /// Starts volume server `i` again, on its address, port and data, and waits until the
    /// master lists it again.
    pub fn start_volume_again(&mut self, i: usize) {
        assert!(
            !self.volumes[i].process.is_running(),
            "volume server {i} is still running"
        );
        self.volumes[i].process.spawn();
        let url = self.volumes[i].url.clone();
        self.wait(
            "the volume server to rejoin",
            Instant::now() + START_TIMEOUT,
            |c| match c.listed_volume_servers()?.contains(&url) {
                true => Ok(()),
                false => Err(format!("{url} is not in /dir/status")),
            },
        );
    }

    /// The number of files (needles) each volume server holds, in volume server order, from
    /// the master's `/vol/status`. Volume servers report to the master by heartbeat, so a
    /// write shows here a few seconds later.
    pub fn file_counts(&self) -> Result<Vec<u64>, String> {
        let status = get_json(self.master_addr, "/vol/status")?;
        let mut counts = vec![0; self.volumes.len()];
        let centers = status["Volumes"]["DataCenters"].as_object();
        for rack in centers.into_iter().flat_map(|c| c.values()) {
            for nodes in rack.as_object().into_iter().flat_map(|r| r.values()) {
                for (url, volumes) in nodes.as_object().into_iter().flatten() {
                    let Some(i) = self.volumes.iter().position(|v| &v.url == url) else {
                        continue;
                    };
                    for volume in volumes.as_array().into_iter().flatten() {
                        counts[i] += volume["FileCount"].as_u64().unwrap_or(0);
                    }
                }
            }
        }
        Ok(counts)
    }

    /// The volume servers the master lists now (`/dir/status`'s data nodes' `Url`).
    fn listed_volume_servers(&self) -> Result<Vec<String>, String> {
        let status = get_json(self.master_addr, "/dir/status")?;
        let mut urls = Vec::new();
        let centers = status["Topology"]["DataCenters"].as_array();
        for center in centers.into_iter().flatten() {
            for rack in center["Racks"].as_array().into_iter().flatten() {
                for node in rack["DataNodes"].as_array().into_iter().flatten() {
                    if let Some(url) = node["Url"].as_str() {
                        urls.push(url.to_string());
                    }
                }
            }
        }
        Ok(urls)
    }

    /// Makes [`BUCKET`] with `weed shell` (`s3.bucket.create`); `Ok` also when it exists.
    fn create_bucket(&self) -> Result<(), String> {
        let mut shell = Command::new("weed")
            .arg("shell")
            .arg(format!("-master={}", self.master_flag))
            .arg(format!("-filer={}", self.filer_flag))
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting `weed shell`: {e}"))?;
        let mut stdin = shell.stdin.take().expect("a piped stdin");
        let _ = writeln!(stdin, "s3.bucket.create -name {BUCKET}");
        drop(stdin); // end of input: the shell exits after the command
        let output = wait_output(shell, Duration::from_secs(30))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if text.contains(&format!("created bucket {BUCKET}")) || text.contains("already exist") {
            Ok(())
        } else {
            Err(format!("`weed shell` s3.bucket.create: {}", text.trim()))
        }
    }

    /// Calls `check` until it is `Ok`; panics with `what`, the last error and every log at
    /// `deadline` or as soon as a server has exited.
    fn wait(
        &mut self,
        what: &str,
        deadline: Instant,
        mut check: impl FnMut(&Self) -> Result<(), String>,
    ) {
        loop {
            let exited = self.processes_mut().find_map(|p| {
                // Killed on purpose (or not started yet): not a failure.
                p.child.as_ref()?;
                p.check_running().err()
            });
            if let Some(why) = exited {
                panic!(
                    "SeaweedFS: {why} while waiting for {what}; logs:\n{}",
                    self.logs()
                );
            }
            let last = match check(self) {
                Ok(()) => return,
                Err(e) => e,
            };
            if Instant::now() > deadline {
                panic!(
                    "SeaweedFS: waited {START_TIMEOUT:?} for {what} ({last}); logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn processes_mut(&mut self) -> impl Iterator<Item = &mut Process> {
        std::iter::once(&mut self.master)
            .chain(self.filer.as_mut())
            .chain(self.volumes.iter_mut().map(|v| &mut v.process))
    }

    /// The end of every server's log, for a failure message.
    pub fn logs(&self) -> String {
        std::iter::once(&self.master)
            .chain(self.filer.as_ref())
            .chain(self.volumes.iter().map(|v| &v.process))
            .map(Process::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The directory holding the servers' data and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Volume server `i`'s address and HTTP port.
    pub fn volume_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.volumes[i].ip, self.volumes[i].port))
    }
}

/// The gateway's identities (`-s3.config`): one admin with the test keys.
fn s3_identities() -> String {
    serde_json::json!({
        "identities": [{
            "name": "zvmtest",
            "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]
    })
    .to_string()
}

/// Waits for a child's output (read on a thread, so that a full pipe cannot stall it),
/// killing the child after `timeout`.
fn wait_output(
    child: std::process::Child,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    let pid = rustix::process::Pid::from_child(&child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(timeout) {
        Ok(output) => output.map_err(|e| e.to_string()),
        Err(_) => {
            // Not reaped yet (the thread still waits for it), so the pid is still the child's.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            Err(format!("no answer within {timeout:?}"))
        }
    }
}
