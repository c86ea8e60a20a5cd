//! A zvm cluster on one machine (issue 9): three hosts as network namespaces, each running a
//! `zvm serve` node and a SeaweedFS volume server, with a three-server NATS JetStream cluster
//! and SeaweedFS's master and S3 gateway on the hosts' bridge
//! ([`zvm_cluster::testing`]). The examples run across the cluster and their outputs are
//! compared, etag for etag, with `zvm job` runs on one machine; then nodes are killed, a
//! link is cut, a coordinator dies and a NATS server dies, and every job still ends with the
//! single-node etags, or fails with nothing landed. Replicated members are voted on.
//!
//! Needs root (namespaces), `nats-server` and `weed` (`scripts/install-deps`); with
//! `ZVM_SKIP_CLUSTER=1` a missing prerequisite skips the test, saying so.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use zvm_cluster::testing::{
    ACCESS_KEY_ID, BUCKET, Hosts, NatsCluster, SECRET_ACCESS_KEY, SeaweedCluster,
};

use crate::examples::{job_ok, scene};
use crate::support;

/// The port every node listens on, in its own host.
const PORT: u16 = 8080;
/// Node liveness timeout of the test cluster.
const NODE_TIMEOUT: &str = "3s";
/// How long a job of the test may take, failures and re-runs included.
const JOB_WAIT: Duration = Duration::from_secs(420);
/// Millions of steps of each `grind` member: a few seconds, so that a node can be lost
/// while it runs.
const GRIND: &str = "1500";

/// The job that loses nodes: three members that compute for a while, each writing one
/// object (under `{out}`), spread over the three nodes by load.
fn grind_job(out: &str, replicas: u32, count: u32) -> String {
    format!(
        r#"version = 1
name = "grind"
retries = 5

[[group]]
name = "grind"
program = "bin/grind.wasm"
args = ["{GRIND}"]
count = {count}
replicas = {replicas}
[[group.channel]]
name = "output"
path = "out/{out}-*.txt"
mode = "write"
[group.limits]
fuel = 100000000000
"#
    )
}

const WORDCOUNT_JOB: &str = r#"version = 1
name = "wordcount"

[[group]]
name = "map"
program = "bin/mapper.wasm"
connect = ["reduce"]
[group.limits]
memory = "32 MiB"
[[group.channel]]
name = "input"
path = "texts/*.txt"
mode = "read"

[[group]]
name = "reduce"
program = "bin/reducer.wasm"
count = 2
connect = ["merge"]
[group.limits]
memory = "32 MiB"

[[group]]
name = "merge"
program = "bin/merge.wasm"
[group.limits]
memory = "32 MiB"
[[group.channel]]
name = "output"
path = "out/counts-OUT.txt"
mode = "write"
"#;

/// One HTTP/1.1 request on its own connection: (status, lowercase head, body).
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(body).unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("an incomplete response from {addr}: {answer:?}"));
    let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, answer[split + 4..].to_vec())
}

/// Whether `GET /healthz` at `addr` answers 200 (false on any failure, without waiting long).
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = Vec::new();
    write!(
        c,
        "GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .is_ok()
        && c.read_to_end(&mut answer).is_ok()
        && answer.starts_with(b"HTTP/1.1 200")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

/// The cluster: hosts, NATS, SeaweedFS, and a zvm node per host.
struct Rig {
    nodes: Vec<Option<Child>>,
    dir: tempfile::TempDir,
    weed: SeaweedCluster,
    nats: NatsCluster,
    hosts: Hosts,
}

impl Rig {
    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.hosts.ip(i), PORT))
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{i}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let log = self.log(i);
                let mut from = log.len().saturating_sub(6000);
                while !log.is_char_boundary(from) {
                    from += 1;
                }
                let tail = &log[from..];
                format!("--- node n{i} ---\n{tail}\n")
            })
            .collect()
    }

    /// Starts node `i` in host `i` (with `env` set), and waits until it answers.
    fn start_node(&mut self, i: usize, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{i}.log")))
            .unwrap();
        let ip = self.hosts.ip(i);
        let mut cmd = self.hosts.command(i, env!("CARGO_BIN_EXE_zvm"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("{ip}:{PORT}"))
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("node-{i}")))
            .args(["--max-vms", "2", "--max-fuel", "100000000000"])
            .args(["--store-backend", "s3", "--store-allow-http"])
            .arg("--store-endpoint")
            .arg(&self.weed.s3_endpoint)
            .args(["--store-bucket", BUCKET, "--store-prefix", "cluster"])
            .arg("--cluster")
            .arg(self.nats.urls().join(","))
            .arg("--node")
            .arg(format!("n{i}"))
            .arg("--volume")
            .arg(self.weed.volume_url(i))
            .arg("--seaweed-master")
            .arg(&self.weed.master_url)
            .arg("--seaweed-filer")
            .arg(&self.weed.filer_url)
            .args(["--heartbeat", "500ms", "--node-timeout", NODE_TIMEOUT])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.nodes[i] = Some(cmd.spawn().expect("starting zvm serve in a host"));
        // Up means answering HTTP: the listening socket exists (and accepts connections)
        // before the node has joined the cluster, HTTP is served only after.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !healthy(self.addr(i)) {
            if let Some(Ok(Some(status))) = self.nodes[i].as_mut().map(Child::try_wait) {
                panic!("node n{i} exited ({status}):\n{}", self.log(i));
            }
            assert!(
                Instant::now() < deadline,
                "node n{i} did not start:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until node `via` sees exactly the nodes `alive` alive.
    fn wait_members(&self, via: usize, alive: &[usize]) {
        let want: Vec<String> = alive.iter().map(|i| format!("n{i}")).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let (status, _, body) = request(self.addr(via), "GET", "/v1/cluster", b"");
            if status == 200 {
                last = serde_json::from_slice(&body).unwrap();
                let mut seen: Vec<String> = last["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|n| n["alive"] == true)
                    .map(|n| n["id"].as_str().unwrap().to_string())
                    .collect();
                seen.sort();
                if seen == want {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "node n{via} never saw {want:?} alive; last: {last:#}\n{}",
            self.logs()
        );
    }

    /// Waits until every node says (in its heartbeat) that it runs nothing: placement by load
    /// then spreads a job's members over all of them.
    fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, _, body) = request(self.addr(0), "GET", "/v1/cluster", b"");
            let v: Value = serde_json::from_slice(&body).unwrap();
            let nodes = v["nodes"].as_array().unwrap();
            if nodes.len() == 3
                && nodes
                    .iter()
                    .all(|n| n["running"] == 0 && n["alive"] == true)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never went idle: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until node `i` runs VMs, as node 0 hears it (heartbeats carry the load).
    fn wait_running(&self, i: usize) {
        let deadline = Instant::now() + JOB_WAIT;
        loop {
            let (_, _, body) = request(self.addr(0), "GET", "/v1/cluster", b"");
            let v: Value = serde_json::from_slice(&body).unwrap();
            let running = v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["id"] == format!("n{i}") && n["running"].as_u64() > Some(0));
            if running {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node n{i} never ran anything: {v:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn put(&self, via: usize, path: &str, body: &[u8]) {
        let (status, head, b) = request(self.addr(via), "PUT", path, body);
        assert!(
            status == 200 || status == 201,
            "PUT {path}: {status} {head} {}",
            String::from_utf8_lossy(&b)
        );
    }

    /// The etag of object `bucket/key`, or `None` when it does not exist.
    fn etag(&self, via: usize, object: &str) -> Option<String> {
        let (status, head, _) = request(
            self.addr(via),
            "HEAD",
            &format!("/v1/objects/{object}"),
            b"",
        );
        match status {
            200 => Some(header(&head, "etag").unwrap().trim_matches('"').to_string()),
            404 => None,
            other => panic!("HEAD {object}: {other} {head}"),
        }
    }

    /// Submits `job` through node `via`, deferred; returns its id.
    fn submit(&self, via: usize, job: &str) -> String {
        let (status, head, body) = request(
            self.addr(via),
            "POST",
            "/v1/jobs?defer=true",
            job.as_bytes(),
        );
        assert_eq!(
            status,
            202,
            "{head} {}\n{}",
            String::from_utf8_lossy(&body),
            self.logs()
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    fn status(&self, via: usize, id: &str) -> Value {
        let (status, head, body) = request(self.addr(via), "GET", &format!("/v1/jobs/{id}"), b"");
        assert_eq!(status, 200, "{head} {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Waits until job `id` has an attempt placed, and returns its status.
    fn wait_placed(&self, via: usize, id: &str) -> Value {
        let deadline = Instant::now() + JOB_WAIT;
        loop {
            let v = self.status(via, id);
            if v["cluster"]["attempt"].as_u64().unwrap_or(0) >= 1
                && v["cluster"]["placement"]
                    .as_array()
                    .is_some_and(|p| !p.is_empty())
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} was never placed: {v:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until job `id` ends (asking node `via`); returns its status.
    fn wait_end(&self, via: usize, id: &str) -> Value {
        let deadline = Instant::now() + JOB_WAIT;
        loop {
            let v = self.status(via, id);
            if v["state"] == "ok" || v["state"] == "failed" {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never ended: {v:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The job report of finished job `id`, through `/result` with the report in JSON.
    fn run_sync(&self, via: usize, job: &str) -> (u16, String, Value) {
        let (status, head, body) = request(
            self.addr(via),
            "POST",
            "/v1/jobs?report=json",
            job.as_bytes(),
        );
        let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!(
                "{status} {head} {}\n{}",
                String::from_utf8_lossy(&body),
                self.logs()
            )
        });
        (status, head, v)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

/// Nodes of each member in a job status or report (`cluster.placement`).
fn placement(v: &Value) -> Vec<Vec<String>> {
    serde_json::from_value(v["placement"].clone()).unwrap()
}

/// BLAKE3 of every file in `dir` whose name starts with `prefix`, by file name.
fn etags_of(dir: &Path, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with(prefix) {
            out.insert(
                name,
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string(),
            );
        }
    }
    out
}

/// The grind job run by `zvm job` on this machine: the etags a cluster must reproduce.
fn grind_reference(grind: &Path) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(grind, dir.path().join("grind.wasm")).unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let job = grind_job("ref", 1, 3)
        .replace("bin/grind.wasm", "grind.wasm")
        .replace("replicas = 1\n", "");
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    job_ok(dir.path(), "job.toml", &["grind-1", "grind-2", "grind-3"]);
    etags_of(&dir.path().join("out"), "ref-")
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("ref-").to_string(), v))
        .collect()
}

/// Checks that the grind outputs under `out/<prefix>-*` are the reference's, all three.
fn check_grind(rig: &Rig, via: usize, prefix: &str, reference: &BTreeMap<String, String>) {
    for (name, etag) in reference {
        let object = format!("out/{prefix}-{name}");
        assert_eq!(
            rig.etag(via, &object).as_deref(),
            Some(etag.as_str()),
            "{object} differs from the single-node run\n{}",
            rig.logs()
        );
    }
}

/// The status page of a node, rendered by headless Chromium, lists the three nodes alive.
fn status_page_shows_the_cluster(addr: SocketAddr) {
    if std::env::var_os("ZVM_SKIP_BROWSER").is_some_and(|v| v == "1") {
        eprintln!("ZVM_SKIP_BROWSER=1: the status page is not rendered");
        return;
    }
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://{addr}/"))
        .stdin(Stdio::null())
        .output()
        .expect("running chromium (apt-get install chromium, or ZVM_SKIP_BROWSER=1)");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("this node: n0 · 3 of 3 alive"), "{dom}");
    for id in ["<td>n0 (this)</td>", "<td>n1</td>", "<td>n2</td>"] {
        assert!(dom.contains(id), "{id} is not on the page: {dom}");
    }
}

#[test]
fn a_three_host_cluster_runs_jobs_like_one_machine_and_survives_failures() {
    let Some(hosts) = Hosts::create_or_skip(3) else {
        return;
    };
    let gateway = hosts.gateway();
    let Some(nats) = NatsCluster::start(&[gateway; 3]) else {
        return;
    };
    let volume_hosts = (0..hosts.len())
        .map(|i| (hosts.ip(i), Some(hosts.prefix(i))))
        .collect();
    let Some(weed) = SeaweedCluster::start(gateway, volume_hosts) else {
        return;
    };
    let mut rig = Rig {
        nodes: vec![None, None, None],
        dir: tempfile::tempdir().unwrap(),
        weed,
        nats,
        hosts,
    };
    for i in 0..3 {
        rig.start_node(i, &[]);
    }
    for i in 0..3 {
        rig.wait_members(i, &[0, 1, 2]);
    }
    let (_, _, metrics) = request(rig.addr(0), "GET", "/metrics", b"");
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    assert!(
        metrics.contains("zvm_cluster_nodes{state=\"alive\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("zvm_cluster_node_vms{node=\"n2\"}"),
        "{metrics}"
    );

    status_page_shows_the_cluster(rig.addr(0));
    // Programs and data, through any node: the store is shared.
    for b in ["bin", "texts", "out"] {
        rig.put(0, &format!("/v1/buckets/{b}"), b"");
    }
    let wordcount = scene("wordcount", &["mapper", "reducer", "merge"]);
    let sort = scene("sort", &["sample", "part", "sort"]);
    for m in ["mapper", "reducer", "merge"] {
        let wasm = std::fs::read(wordcount.path().join(format!("{m}.wasm"))).unwrap();
        rig.put(1, &format!("/v1/objects/bin/{m}.wasm"), &wasm);
    }
    for m in ["sample", "part", "sort"] {
        let wasm = std::fs::read(sort.path().join(format!("{m}.wasm"))).unwrap();
        rig.put(2, &format!("/v1/objects/bin/{m}.wasm"), &wasm);
    }
    let grind = support::c_guest("grind");
    rig.put(
        0,
        "/v1/objects/bin/grind.wasm",
        &std::fs::read(&grind).unwrap(),
    );
    // The texts, and more of them, so that they spread over the volume servers.
    let mut texts = Vec::new();
    for e in std::fs::read_dir(wordcount.path().join("data")).unwrap() {
        texts.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    let local_data = wordcount.path().join("data");
    for k in 0..8 {
        let body = texts[k % texts.len()].repeat(k + 1);
        std::fs::write(local_data.join(format!("t{k}.txt")), &body).unwrap();
        rig.put(k % 3, &format!("/v1/objects/texts/t{k}.txt"), &body);
    }
    for e in std::fs::read_dir(&local_data).unwrap() {
        let p = e.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().starts_with('t') {
            std::fs::remove_file(p).unwrap();
        }
    }

    // Single-node references, with `zvm job`.
    job_ok(
        wordcount.path(),
        "job.toml",
        &[
            "map-1", "map-2", "map-3", "map-4", "map-5", "map-6", "map-7", "map-8", "reduce-1",
            "reduce-2", "merge",
        ],
    );
    let counts_ref = blake3::hash(&std::fs::read(wordcount.path().join("out/counts.txt")).unwrap())
        .to_hex()
        .to_string();
    let mut sort_members = vec!["sample".to_string()];
    sort_members.extend((1..=4).map(|j| format!("part-{j}")));
    sort_members.extend((1..=8).map(|j| format!("sort-{j}")));
    let names: Vec<&str> = sort_members.iter().map(String::as_str).collect();
    job_ok(sort.path(), "job-small.toml", &names);
    let sort_ref = etags_of(&sort.path().join("out"), "part-");
    let grind_ref = grind_reference(&grind);

    // Word count across the cluster: every mapper runs next to its text.
    let (status, head, report) = rig.run_sync(1, &WORDCOUNT_JOB.replace("OUT", "a"));
    assert_eq!(status, 200, "{head} {report:#}\n{}", rig.logs());
    assert_eq!(report["committed"], true, "{report:#}");
    assert_eq!(
        rig.etag(2, "out/counts-a.txt").as_deref(),
        Some(counts_ref.as_str())
    );
    let places = placement(&report["cluster"]);
    let store = zvm_store::S3Store::open(&rig.weed.s3_config("cluster")).expect("the shared store");
    let locator =
        zvm_cluster::locate::SeaweedLocator::new(&rig.weed.filer_url, &rig.weed.master_url)
            .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut used = std::collections::BTreeSet::new();
    for (k, place) in places.iter().enumerate().take(8) {
        let (bucket, key) = store
            .object_location("texts", &format!("t{k}.txt"))
            .unwrap();
        let volumes = rt.block_on(locator.volume_servers(&bucket, &key)).unwrap();
        let near: Vec<String> = (0..3)
            .filter(|&i| volumes.iter().any(|v| v == rig.weed.volume_url(i)))
            .map(|i| format!("n{i}"))
            .collect();
        assert!(
            near.contains(&place[0]),
            "map-{} ran on {place:?}, its text is on {volumes:?} ({near:?})",
            k + 1,
        );
        used.insert(place[0].clone());
    }
    assert!(used.len() >= 2, "all mappers on one node: {places:?}");

    // Sort across the cluster: all-to-all pipes between nodes.
    let sort_job = std::fs::read_to_string(sort.path().join("job-small.toml"))
        .unwrap()
        .replace("\"sample.wasm\"", "\"bin/sample.wasm\"")
        .replace("\"part.wasm\"", "\"bin/part.wasm\"")
        .replace("\"sort.wasm\"", "\"bin/sort.wasm\"")
        .replace("out/part-*.dat", "out/sorted-*.dat");
    let (status, head, report) = rig.run_sync(2, &sort_job);
    assert_eq!(status, 200, "{head} {report:#}\n{}", rig.logs());
    let nodes: std::collections::BTreeSet<String> = placement(&report["cluster"])
        .into_iter()
        .flatten()
        .collect();
    assert!(nodes.len() >= 2, "the sort ran on one node: {report:#}");
    assert!(report["totals"]["pipe_bytes"].as_u64().unwrap() > 1_000_000);
    for (name, etag) in &sort_ref {
        let object = format!("out/{}", name.replace("part-", "sorted-"));
        assert_eq!(
            rig.etag(0, &object).as_deref(),
            Some(etag.as_str()),
            "{object}"
        );
    }

    // Replicated members: three nodes each, the same etags, accepted.
    let (status, head, report) = rig.run_sync(0, &grind_job("voted", 3, 2).replace(GRIND, "20"));
    assert_eq!(status, 200, "{head} {report:#}\n{}", rig.logs());
    let places = placement(&report["cluster"]);
    assert_eq!(places[0].len(), 3, "{places:?}");
    assert!(rig.etag(0, "out/voted-1.txt").is_some());

    // A node killed while its member runs: the attempt runs again without it.
    rig.wait_idle();
    let id = rig.submit(0, &grind_job("kill", 1, 3));
    let v = rig.wait_placed(0, id.as_str());
    let on: Vec<String> = placement(&v["cluster"]).into_iter().flatten().collect();
    let (_, _, members) = request(rig.addr(0), "GET", "/v1/cluster", b"");
    assert!(
        on.contains(&"n2".to_string()),
        "nothing placed on n2: {v:#}\nmembers: {}",
        String::from_utf8_lossy(&members)
    );
    rig.wait_running(2);
    rig.kill_node(2);
    let v = rig.wait_end(1, &id);
    assert_eq!(v["state"], "ok", "{v:#}\n{}", rig.logs());
    assert!(v["cluster"]["attempt"].as_u64().unwrap() >= 2, "{v:#}");
    assert!(
        v["cluster"]["lost"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "n2"),
        "{v:#}"
    );
    check_grind(&rig, 1, "kill", &grind_ref);
    rig.start_node(2, &[]);
    rig.wait_members(0, &[0, 1, 2]);

    // A link cut: a host is partitioned while its member runs. The store keeps one copy of
    // each object (the harness's SeaweedFS has no replication), so the host cut is one that
    // holds no copy of the job's program: its outputs can still be written elsewhere once
    // the store's master gives up on the cut volume server.
    let (bucket, key) = store.object_location("bin", "grind.wasm").unwrap();
    let holders = rt.block_on(locator.volume_servers(&bucket, &key)).unwrap();
    let cut = if holders.iter().any(|v| v == rig.weed.volume_url(1)) {
        2
    } else {
        1
    };
    rig.wait_idle();
    let id = rig.submit(0, &grind_job("cut", 1, 3));
    let v = rig.wait_placed(0, &id);
    let on: Vec<String> = placement(&v["cluster"]).into_iter().flatten().collect();
    assert!(
        on.contains(&format!("n{cut}")),
        "nothing placed on n{cut}: {v:#}"
    );
    rig.wait_running(cut);
    rig.hosts.cut(cut);
    let v = rig.wait_end(0, &id);
    assert_eq!(v["state"], "ok", "{v:#}\n{}", rig.logs());
    assert!(
        v["cluster"]["lost"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| *n == format!("n{cut}")),
        "{v:#}"
    );
    check_grind(&rig, 0, "cut", &grind_ref);
    rig.hosts.restore(cut);
    rig.wait_members(0, &[0, 1, 2]);

    // The coordinator dies: another node finishes the job (or fails it), never half-landed.
    rig.wait_idle();
    let id = rig.submit(1, &grind_job("coord", 1, 3));
    rig.wait_placed(0, &id);
    std::thread::sleep(Duration::from_millis(1500));
    rig.kill_node(1);
    // Back at once, within the liveness timeout: the others still hear "n1", but it is a new
    // process that knows nothing of the job; its incarnation tells them.
    rig.start_node(1, &[]);
    let v = rig.wait_end(2, &id);
    let landed: Vec<Option<String>> = grind_ref
        .keys()
        .map(|name| rig.etag(0, &format!("out/coord-{name}")))
        .collect();
    if v["state"] == "ok" {
        check_grind(&rig, 0, "coord", &grind_ref);
        let coordinators = v["cluster"]["coordinators"].as_array().unwrap();
        assert!(coordinators.len() >= 2, "not taken over: {v:#}");
    } else {
        assert!(
            landed.iter().all(Option::is_none),
            "a failed job landed outputs: {landed:?}"
        );
    }
    let (status, _, body) = request(rig.addr(2), "GET", &format!("/v1/jobs/{id}/result"), b"");
    assert!(
        status == 200 || status == 500,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );

    // One of three NATS servers dies: the cluster keeps working.
    rig.nats.kill(0);
    rig.wait_members(2, &[0, 1, 2]);
    let (status, head, report) = rig.run_sync(2, &WORDCOUNT_JOB.replace("OUT", "b"));
    assert_eq!(status, 200, "{head} {report:#}\n{}", rig.logs());
    assert_eq!(
        rig.etag(0, "out/counts-b.txt").as_deref(),
        Some(counts_ref.as_str())
    );

    // Node 1 comes back faulty, corrupting what it stages: replicas on it disagree, and
    // nothing lands.
    rig.kill_node(1);
    rig.start_node(1, &[(zvm_server::cluster::CORRUPT_VAR, "1")]);
    rig.wait_members(0, &[0, 1, 2]);
    let (status, head, report) = rig.run_sync(0, &grind_job("corrupt", 3, 2).replace(GRIND, "20"));
    assert_eq!(status, 200, "{head}\n{}", rig.logs());
    assert_eq!(report["committed"], false, "{report:#}\n{}", rig.logs());
    assert!(
        report["outcome_text"]
            .as_str()
            .unwrap()
            .contains("replicas disagree"),
        "{report:#}\n{}",
        rig.logs()
    );
    assert_eq!(rig.etag(0, "out/corrupt-1.txt"), None);

    // A single run on a busy node goes to another one.
    for _ in 0..2 {
        let (status, head, _) = request(
            rig.addr(0),
            "POST",
            "/v1/run?program=bin/grind.wasm&arg=3000&defer=true",
            b"",
        );
        assert_eq!(status, 202, "{head}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (status, head, body) = request(
        rig.addr(0),
        "POST",
        "/v1/run?program=bin/grind.wasm&arg=1",
        b"",
    );
    assert_eq!(status, 200, "{head} {}", String::from_utf8_lossy(&body));
    let ran_on = header(&head, "x-zvm-node").unwrap_or_default().to_string();
    assert_ne!(ran_on, "n0", "a busy node ran the request itself: {head}");
}
