//! Membership: which nodes are in the cluster, how to reach them and how loaded they are.
//!
//! Every node publishes a heartbeat ([`NodeInfo`], JSON) on the core NATS subject
//! `zvm.heartbeat.<node>` every [`ClusterConfig::heartbeat`], and keeps its record in the
//! JetStream key-value bucket [`NODES_BUCKET`] (so that a node that just joined, or an
//! operator with the `nats` tool, can see the members without waiting). Every node listens
//! to all heartbeats and judges liveness by its own clock: a node is alive while its last
//! heartbeat arrived less than [`ClusterConfig::node_timeout`] ago. Judging by arrival, not
//! by timestamps in the message, makes clock skew between hosts irrelevant. A node whose
//! link is cut stops being heard and is dead to the others after the timeout; a node that
//! stops cleanly deletes its record and says goodbye at once.
//!
//! Core subscriptions survive a NATS server's death: the client reconnects to another
//! server of the cluster and subscribes again, and the key-value bucket is replicated
//! ([`ClusterConfig::replicas`]), so one of three servers dying stops neither.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The key-value bucket of node records.
pub const NODES_BUCKET: &str = "zvm-nodes";
/// The key-value bucket of job state.
pub const JOBS_BUCKET: &str = "zvm-jobs";

/// How a node joins.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`); the client tries them in turn.
    pub nats: Vec<String>,
    /// This node's id.
    pub node: String,
    /// The HTTP URL other nodes use to reach this node.
    pub http: String,
    /// Where pipes from other nodes connect (`host:port`).
    pub data: String,
    /// The object store's volume server on this host, as the store's master names it.
    pub volume: Option<String>,
    /// VMs this node runs at once.
    pub max_vms: usize,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// A node not heard from for this long is dead.
    pub node_timeout: Duration,
    /// Replicas of the key-value buckets (1 to 5; 3 survives one NATS server down).
    pub replicas: usize,
}

/// What a node says about itself in every heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub http: String,
    pub data: String,
    pub volume: Option<String>,
    /// VMs running now (single runs and job members).
    pub running: usize,
    pub max_vms: usize,
    /// Heartbeats sent so far (tells a restarted node from a late message).
    pub beat: u64,
    /// A random number per process: a node restarted under the same id is another process.
    pub incarnation: u64,
}

/// A member as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub info: NodeInfo,
    pub alive: bool,
    /// Milliseconds since its last heartbeat arrived here.
    pub last_heard_ms: u64,
}

/// A function that tells how many VMs this node runs now.
pub type LoadFn = Arc<dyn Fn() -> usize + Send + Sync>;

/// This node's membership of the cluster: its NATS connection, the buckets, and the
/// members it hears.
pub struct Cluster {
    config: ClusterConfig,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    jobs: kv::Store,
    nodes: kv::Store,
    heard: Mutex<HashMap<String, (NodeInfo, Instant)>>,
    load: LoadFn,
    incarnation: u64,
    stopping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.config.node)
            .finish_non_exhaustive()
    }
}

/// Checks a node id: 1 to 64 of lowercase letters, digits and `-` (it is a NATS subject
/// token and part of S3 keys).
pub fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("node id `{id}` must have 1 to 64 characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "node id `{id}` has `{c}`: use lowercase letters, digits and `-`"
        ));
    }
    Ok(())
}

impl Cluster {
    /// Connects, then announces this node at once: [`Cluster::connect`] and
    /// [`Cluster::announce`].
    pub async fn join(config: ClusterConfig, load: LoadFn) -> Result<Arc<Cluster>, Error> {
        let cluster = Cluster::connect(config, load).await?;
        cluster.announce().await;
        Ok(cluster)
    }

    /// Connects to NATS, makes sure the buckets exist, and starts listening to other nodes'
    /// heartbeats (a task on the current tokio runtime), without announcing this node: the
    /// caller first subscribes to what other nodes will ask of it, then calls
    /// [`Cluster::announce`], so that a node others hear of can always be asked.
    pub async fn connect(config: ClusterConfig, load: LoadFn) -> Result<Arc<Cluster>, Error> {
        validate_node_id(&config.node).map_err(Error::Config)?;
        if config.nats.is_empty() {
            return Err(Error::Config("no NATS server URL given".into()));
        }
        let client = async_nats::ConnectOptions::new()
            .name(format!("zvm-{}", config.node))
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(config.nats.as_slice())
            .await
            .map_err(|e| Error::Nats(format!("connecting to {}: {e}", config.nats.join(", "))))?;
        // The initial connection retries in the background: wait for it, boundedly.
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.connection_state() != async_nats::connection::State::Connected {
            if Instant::now() > deadline {
                return Err(Error::Nats(format!(
                    "no NATS server answered at {} within 30 s",
                    config.nats.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let jetstream = jetstream::new(client.clone());
        let replicas = config.replicas.clamp(1, 5);
        let bucket = |name: &str, history: i64| kv::Config {
            bucket: name.to_string(),
            history,
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        // JetStream may still be electing its leaders right after the servers start.
        let nodes = retry("creating the node bucket", || {
            jetstream.create_or_update_key_value(bucket(NODES_BUCKET, 1))
        })
        .await?;
        let jobs = retry("creating the job bucket", || {
            jetstream.create_or_update_key_value(bucket(JOBS_BUCKET, 1))
        })
        .await?;
        let cluster = Arc::new(Cluster {
            incarnation: u64::from_le_bytes(
                blake3::hash(format!("{:?}{}", Instant::now(), std::process::id()).as_bytes())
                    .as_bytes()[..8]
                    .try_into()
                    .expect("8 bytes"),
            ),
            config,
            client,
            jetstream,
            jobs,
            nodes,
            heard: Mutex::new(HashMap::new()),
            load,
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        let mut heartbeats = cluster
            .client
            .subscribe("zvm.heartbeat.*")
            .await
            .map_err(|e| Error::Nats(format!("subscribing to heartbeats: {e}")))?;
        let listener = Arc::downgrade(&cluster);
        tokio::spawn(async move {
            while let Some(msg) = heartbeats.next().await {
                let Some(cluster) = listener.upgrade() else {
                    return;
                };
                if msg.payload.is_empty() {
                    // A goodbye: the node stopped cleanly.
                    if let Some(id) = msg.subject.as_str().strip_prefix("zvm.heartbeat.") {
                        cluster.heard.lock().expect("heard").remove(id);
                    }
                    continue;
                }
                if let Ok(info) = serde_json::from_slice::<NodeInfo>(&msg.payload) {
                    cluster
                        .heard
                        .lock()
                        .expect("heard")
                        .insert(info.id.clone(), (info, Instant::now()));
                }
            }
        });
        // Records of nodes that are up now, before their next heartbeat: seen as alive for
        // one timeout, then judged by heartbeats like the others.
        if let Ok(mut keys) = cluster.nodes.keys().await {
            while let Some(Ok(key)) = keys.next().await {
                if let Ok(Some(value)) = cluster.nodes.get(&key).await
                    && let Ok(info) = serde_json::from_slice::<NodeInfo>(&value)
                {
                    cluster
                        .heard
                        .lock()
                        .expect("heard")
                        .entry(info.id.clone())
                        .or_insert((info, Instant::now()));
                }
            }
        }
        Ok(cluster)
    }

    /// Starts this node's heartbeat (a task on the current tokio runtime), after making sure
    /// the NATS server has every subscription made so far.
    pub async fn announce(self: &Arc<Self>) {
        if let Err(e) = self.client.flush().await {
            tracing::debug!("flushing before the first heartbeat: {e}");
        }
        self.beat(0).await;
        let beater = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut n = 1u64;
            loop {
                let period = match beater.upgrade() {
                    Some(c) if !c.stopping.load(std::sync::atomic::Ordering::Relaxed) => {
                        c.beat(n).await;
                        c.config.heartbeat
                    }
                    _ => return,
                };
                n += 1;
                tokio::time::sleep(period).await;
            }
        });
    }

    fn info(&self, beat: u64) -> NodeInfo {
        NodeInfo {
            id: self.config.node.clone(),
            http: self.config.http.clone(),
            data: self.config.data.clone(),
            volume: self.config.volume.clone(),
            running: (self.load)(),
            max_vms: self.config.max_vms,
            beat,
            incarnation: self.incarnation,
        }
    }

    async fn beat(&self, n: u64) {
        let info = self.info(n);
        let payload: bytes::Bytes = serde_json::to_vec(&info).expect("plain JSON").into();
        let subject = format!("zvm.heartbeat.{}", self.config.node);
        if let Err(e) = self.client.publish(subject, payload.clone()).await {
            tracing::debug!("heartbeat not sent: {e}");
        }
        // The record is for newcomers and operators: refreshed every few heartbeats.
        if n.is_multiple_of(5)
            && let Err(e) = self.nodes.put(&self.config.node, payload).await
        {
            tracing::debug!("node record not written: {e}");
        }
    }

    /// Leaves the cluster: stops the heartbeat, deletes the record, says goodbye.
    pub async fn leave(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.nodes.delete(&self.config.node).await;
        let _ = self
            .client
            .publish(
                format!("zvm.heartbeat.{}", self.config.node),
                bytes::Bytes::new(),
            )
            .await;
        let _ = self.client.flush().await;
    }

    /// This process's incarnation: a random number, different for a node restarted under
    /// the same id.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.config.node
    }

    /// The configuration this node joined with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The key-value bucket of job state.
    pub fn jobs(&self) -> &kv::Store {
        &self.jobs
    }

    /// The revision of job record `key` if it holds exactly `value`. A create or a
    /// compare-and-set whose answer was lost (the connection to NATS dropped after the
    /// server stored the write) is refused when tried again: the key exists, or the
    /// revision moved on. This tells such a write, done, from one that someone else's beat.
    /// Sound as long as no two writers write the same bytes: zvm's job records name their
    /// coordinator, its incarnation and the attempt.
    pub async fn record_written(&self, key: &str, value: &[u8]) -> Option<u64> {
        match self.jobs.entry(key).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put && e.value.as_ref() == value => {
                Some(e.revision)
            }
            _ => None,
        }
    }

    /// Whether this node is connected to a NATS server now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Every node heard of (this one included, first), alive or not, by id.
    pub fn nodes(&self) -> Vec<NodeView> {
        let timeout = self.config.node_timeout;
        let heard = self.heard.lock().expect("heard");
        let mut out: Vec<NodeView> = heard
            .values()
            .filter(|(info, _)| info.id != self.config.node)
            .map(|(info, at)| NodeView {
                info: info.clone(),
                alive: at.elapsed() < timeout,
                last_heard_ms: at.elapsed().as_millis() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        out.insert(
            0,
            NodeView {
                info: self.info(0),
                alive: self.connected(),
                last_heard_ms: 0,
            },
        );
        out
    }

    /// The nodes alive now.
    pub fn alive(&self) -> Vec<NodeInfo> {
        self.nodes()
            .into_iter()
            .filter(|n| n.alive)
            .map(|n| n.info)
            .collect()
    }

    /// Whether node `id` is alive now (this node: whether it is connected).
    pub fn is_alive(&self, id: &str) -> bool {
        if id == self.config.node {
            return self.connected();
        }
        self.heard
            .lock()
            .expect("heard")
            .get(id)
            .is_some_and(|(_, at)| at.elapsed() < self.config.node_timeout)
    }

    /// Asks node `node` (a NATS request to `subject`, which that node answers) and returns
    /// its answer, within `timeout`. NATS answering "no responders" while the node is still
    /// heard of means it is not listening yet: a node restarted under the same id, whose
    /// predecessor's last heartbeat still counts and whose subscription may still be on its
    /// way through the NATS cluster. It is asked again every `retry` until it answers,
    /// stops being heard of, or the time is up.
    pub async fn ask(
        &self,
        node: &str,
        subject: String,
        payload: bytes::Bytes,
        timeout: Duration,
        retry: Duration,
    ) -> Result<async_nats::Message, String> {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let request = self.client.request(subject.clone(), payload.clone());
            match tokio::time::timeout(left, request).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e))
                    if e.kind() == async_nats::RequestErrorKind::NoResponders
                        && self.is_alive(node)
                        && Instant::now() + retry < until =>
                {
                    tokio::time::sleep(retry).await;
                }
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    return Err(format!("node `{node}` is not listening on `{subject}`"));
                }
                Ok(Err(e)) => return Err(format!("asking node `{node}` on `{subject}`: {e}")),
                Err(_) => return Err(format!("node `{node}` did not answer within {timeout:?}")),
            }
        }
    }

    /// Node `id`'s last heartbeat, if heard of.
    pub fn node(&self, id: &str) -> Option<NodeInfo> {
        if id == self.config.node {
            return Some(self.info(0));
        }
        self.heard
            .lock()
            .expect("heard")
            .get(id)
            .map(|(info, _)| info.clone())
    }
}

/// Retries a JetStream call for up to 30 s: right after servers start, or while one of them
/// is down, JetStream may answer "no leader" for a while.
pub(crate) async fn retry<T, E: std::fmt::Display, F, Fut>(what: &str, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(Error::Nats(format!("{what}: {e}")));
            }
            Err(e) => {
                tracing::debug!("{what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}
