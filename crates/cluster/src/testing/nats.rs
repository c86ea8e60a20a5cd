//! A NATS cluster with JetStream: one `nats-server -js` per address given, routed to each
//! other, each with its own store directory and client, route and monitoring ports.
//!
//! Ready means: every running server has JetStream enabled (`/healthz?js-enabled-only=true`)
//! and is healthy (`/healthz`, which in 2.15 also checks that the server is current with the
//! JetStream meta group), and every running server names the same meta leader (`/jsz`'s
//! `meta_cluster.leader`), one of the running servers. That is when a client can create a
//! replicated stream or key-value bucket, which is what the cluster needs first.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::{
    INSTALL_NATS, Process, START_TIMEOUT, free_ports, get_json, http_get, require_program,
};

/// A running NATS cluster; every server is killed, and its store removed, when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<Server>,
    // Last: dropped after the servers are killed.
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Server {
    /// `nats-<i>`, its `-n` server name (what `/jsz` names the meta leader by).
    name: String,
    bind: Ipv4Addr,
    client: u16,
    monitor: u16,
    process: Process,
}

impl NatsCluster {
    /// Starts one server per address of `binds` (three for a cluster that survives losing
    /// one; a single one runs without routes) and waits until the cluster is ready (module
    /// doc). `None` when `nats-server` is missing and [`super::SKIP_VAR`] is `1`; panics,
    /// saying how to install it, when it is missing otherwise, and with the servers' logs
    /// when they do not become ready.
    pub fn start(binds: &[Ipv4Addr]) -> Option<NatsCluster> {
        assert!(
            !binds.is_empty(),
            "a NATS cluster needs at least one address"
        );
        if !require_program("nats-server", "--version", INSTALL_NATS) {
            return None;
        }
        super::kill_orphans_noisily();
        let dir = tempfile::tempdir().expect("a temporary directory for NATS");
        // Client, route and monitoring port of each server.
        let ports = free_ports(binds.len() * 3, 0);
        let route = |i: usize| format!("nats://{}:{}", binds[i], ports[3 * i + 1]);
        let servers = binds
            .iter()
            .enumerate()
            .map(|(i, &bind)| {
                let name = format!("nats-{i}");
                let (client, cluster, monitor) = (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]);
                let store = dir.path().join(&name);
                let mut argv: Vec<String> = vec![
                    "nats-server".into(),
                    "-n".into(),
                    name.clone(),
                    "-js".into(),
                    "-sd".into(),
                    store.display().to_string(),
                    "-a".into(),
                    bind.to_string(),
                    "-p".into(),
                    client.to_string(),
                    // The monitoring port listens on the client address.
                    "-m".into(),
                    monitor.to_string(),
                ];
                if binds.len() > 1 {
                    let routes: Vec<String> =
                        (0..binds.len()).filter(|&j| j != i).map(route).collect();
                    argv.extend([
                        "--cluster_name".into(),
                        "zvm".into(),
                        "--cluster".into(),
                        format!("nats://{bind}:{cluster}"),
                        "--routes".into(),
                        routes.join(","),
                    ]);
                }
                let log = dir.path().join(format!("{name}.log"));
                let process =
                    Process::start(format!("nats-server {name}"), &[], argv, dir.path(), log);
                Server {
                    name,
                    bind,
                    client,
                    monitor,
                    process,
                }
            })
            .collect();
        let mut cluster = NatsCluster { servers, dir };
        cluster.wait_ready();
        Some(cluster)
    }

    /// How many servers there are (running or killed).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there are none (never).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Every server's client URL, `nats://<ip>:<port>`, killed ones included (a client given
    /// them all finds whichever are up).
    pub fn urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// Server `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        let s = &self.servers[i];
        format!("nats://{}:{}", s.bind, s.client)
    }

    /// Server `i`'s monitoring URL, `http://<ip>:<port>` (`/healthz`, `/jsz`, `/routez`).
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://{}", self.monitor_addr(i))
    }

    fn monitor_addr(&self, i: usize) -> SocketAddr {
        let s = &self.servers[i];
        SocketAddr::from((s.bind, s.monitor))
    }

    /// Server `i`'s name (`nats-<i>`), as `/jsz` and clients name it.
    pub fn name(&self, i: usize) -> &str {
        &self.servers[i].name
    }

    /// Kills server `i` (SIGKILL, as when its machine dies); its store stays for
    /// [`NatsCluster::start_again`].
    pub fn kill(&mut self, i: usize) {
        self.servers[i].process.kill();
    }

    /// Starts server `i` again, on the same ports and store, and waits until the cluster is
    /// ready again with it.
    pub fn start_again(&mut self, i: usize) {
        assert!(
            !self.servers[i].process.is_running(),
            "NATS server {i} is still running"
        );
        self.servers[i].process.spawn();
        self.wait_ready();
    }

    /// Whether server `i`'s `/healthz` answers `ok`; `Err` with its answer or why there is
    /// none.
    pub fn healthz(&self, i: usize) -> Result<(), String> {
        check_healthz(self.monitor_addr(i), "/healthz")
    }

    /// The JetStream meta leader server `i` knows of (`None`: no leader right now), from its
    /// `/jsz`.
    pub fn meta_leader(&self, i: usize) -> Result<Option<String>, String> {
        let jsz = get_json(self.monitor_addr(i), "/jsz")?;
        let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or("");
        Ok((!leader.is_empty()).then(|| leader.to_string()))
    }

    /// Waits until the running servers are ready (module doc): after a start, a restart, or
    /// a kill (the survivors elect a new meta leader if the dead one led). Panics with every
    /// log when that does not happen within the start timeout.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("never checked");
        while Instant::now() < deadline {
            match self.ready() {
                Ok(()) => return,
                Err(why) => last = why,
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "the NATS cluster was not ready within {START_TIMEOUT:?} ({last}); logs:\n{}",
            self.logs()
        );
    }

    /// Ready or why not; panics at once if a server that should run has exited.
    fn ready(&mut self) -> Result<(), String> {
        let single = self.len() == 1;
        let mut running = Vec::new();
        for i in 0..self.len() {
            let process = &mut self.servers[i].process;
            if process.child.is_none() {
                continue; // killed on purpose
            }
            if let Err(why) = process.check_running() {
                panic!("{why}; logs:\n{}", self.logs());
            }
            running.push(i);
        }
        let mut leaders = Vec::new();
        for &i in &running {
            let addr = self.monitor_addr(i);
            check_healthz(addr, "/healthz?js-enabled-only=true")?;
            check_healthz(addr, "/healthz")?;
            if !single {
                let leader = self
                    .meta_leader(i)?
                    .ok_or_else(|| format!("{} knows no JetStream meta leader", self.name(i)))?;
                leaders.push(leader);
            }
        }
        if single {
            return Ok(());
        }
        let Some(first) = leaders.first() else {
            return Err("no NATS server is running".into());
        };
        if leaders.iter().any(|l| l != first) {
            return Err(format!(
                "the servers name different meta leaders: {leaders:?}"
            ));
        }
        if !running.iter().any(|&i| self.name(i) == first) {
            return Err(format!("the meta leader `{first}` is not running"));
        }
        Ok(())
    }

    /// Server `i`'s whole log.
    pub fn log(&self, i: usize) -> String {
        self.servers[i].process.log()
    }

    /// The end of every server's log, for a failure message.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.process.log_tail())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The directory holding the servers' stores and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// `GET <path>` on a monitoring port answers 200 `{"status":"ok"}`.
fn check_healthz(addr: SocketAddr, path: &str) -> Result<(), String> {
    let (status, body) = http_get(addr, path)?;
    let ok = serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["status"] == "ok");
    if status == 200 && ok {
        Ok(())
    } else {
        Err(format!("GET http://{addr}{path}: {status} {}", body.trim()))
    }
}
