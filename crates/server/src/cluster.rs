//! Cluster mode: `zvm serve` nodes that share an S3 store and a NATS cluster, any of which
//! accepts any request, and that run a job's members across the cluster next to their data.
//!
//! # A guided tour
//!
//! * **Joining** ([`Node::start`]): the node listens for pipes ([`zvm_cluster::DataPlane`]),
//!   connects through [`zvm_cluster::Cluster`] (the JetStream key-value buckets, other
//!   nodes' heartbeats), subscribes to its assignment subject `zvm.node.<id>.assign` and to
//!   `zvm.job.abort`, and only then announces itself (heartbeats with its load): a node
//!   others hear of can always be assigned work.
//! * **Submitting** (`POST /v1/jobs`, `submit`): the receiving node checks and resolves the
//!   job as a single node would (`jobs::prepare`: every path an object, the tenant's
//!   rights), records it in the `zvm-jobs` bucket under a new id (`cj-...`) with itself as
//!   coordinator, and coordinates it: now, answering when it ends, or in the background with
//!   `defer=true` (202).
//! * **Placing** (`place`): each member goes to the node next to the volume server that holds
//!   its first input object (asked of the store: [`zvm_cluster::locate`]), else to the least
//!   loaded live node; a member with `replicas = N` also goes to N-1 other nodes.
//! * **An attempt**: the coordinator writes the attempt number and placement to the job's
//!   record (compare-and-set on its revision: the fence against a coordinator that lost its
//!   job), then asks each node to run its part (a NATS request). Each node resolves the job
//!   itself from the same text, checks that it reads the very objects (etags) the
//!   coordinator saw, runs its members ([`zvm_job::part`]) with pipes to other nodes over
//!   the data plane, stages its members' outputs in the store under the attempt's prefix
//!   (`cluster/jobs/<id>/a<n>/<node>/...`), writes its result (`... /<node>.json`) and says
//!   so in the bucket (`<id>.a<n>.<node>`).
//! * **Lost nodes**: a node the coordinator stops hearing from (killed, its link cut) loses
//!   the attempt: the coordinator calls it off (`zvm.job.abort`: every node stops its part
//!   and its pipes) and runs a new attempt without that node, up to the job's `retries`.
//!   Members are deterministic, so the new attempt's outputs are byte-identical.
//! * **Voting**: a replicated member's results (its state, stdout digest and every output's
//!   etag) must agree on every node that ran it, or the job fails.
//! * **Committing**, all or nothing: the answer is stored (`cluster/results/<id>`), the record
//!   moves to `committing` (compare-and-set), one PUT writes the commit record
//!   (`cluster/jobs/<id>/commit`, listing staged object → final key): **the commit point**;
//!   then the staged objects are copied to their keys, the record moves to `ok`, and the
//!   attempt prefixes are deleted. See the store's "Job commits across processes".
//! * **Takeover**: every node looks for jobs whose coordinator is dead. One node wins the
//!   record (compare-and-set) and finishes the job: a job past its commit point is rolled
//!   forward (the copies are idempotent); any other runs a new attempt. A client whose
//!   coordinator died asks any node for `GET /v1/jobs/{id}`: the job finished, or failed
//!   cleanly, never with some outputs landed and others not.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zvm_cluster::{Cluster, ClusterConfig, DataPlane, NodeInfo};
use zvm_manifest::{AccessMode, ChannelSource, Job};
use zvm_store::StagedPut;

use crate::Shared;
use crate::activity::now_ms;
use crate::config::ClusterSettings;
use crate::error::ApiError;
use crate::exec::ObjectRef;
use crate::jobs::{Prepared, Programs};
use crate::tenants::Caller;

/// How often the coordinator looks at an attempt's progress.
const POLL: Duration = Duration::from_millis(200);
/// How long a node has to accept an assignment.
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after an attempt that lost a node, times the attempt's number (up to 4).
const LOST_BACKOFF: Duration = Duration::from_millis(500);
/// How often a node looks for jobs whose coordinator died.
const ORPHAN_SCAN: Duration = Duration::from_secs(1);
/// How long a node keeps retrying JetStream while it recovers (a server died).
const NATS_RETRY: Duration = Duration::from_secs(30);
/// How long the coordinator keeps retrying a store operation of a commit.
const STORE_RETRY: Duration = Duration::from_secs(180);
/// Extra time an attempt may take beyond its slowest member's timeout (preparing, staging).
const ATTEMPT_GRACE: Duration = Duration::from_secs(120);
/// Test hook: a node started with this variable set to `1` corrupts the first byte of every
/// output it stages, as a faulty host would; replicated voting must catch it.
pub const CORRUPT_VAR: &str = "ZVM_TEST_CORRUPT_OUTPUTS";
/// The header a forwarded run carries: the node that forwarded it (never forwarded again).
pub const FORWARDED_BY: &str = "x-zvm-forwarded-by";

/// Where a cluster job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Running,
    Committing,
    Ok,
    Failed,
}

/// A cluster job's record in the `zvm-jobs` bucket: what any node needs to report on it or
/// to take it over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobState {
    pub id: String,
    pub tenant: String,
    pub coordinator: String,
    /// The coordinator's process ([`Cluster::incarnation`]): a coordinator restarted under
    /// the same id is another process, which knows nothing of the job.
    #[serde(default)]
    pub incarnation: u64,
    pub phase: Phase,
    /// The attempt running (0 before the first).
    pub attempt: u32,
    pub text: String,
    pub origin: String,
    /// Every object the job reads and its etag at submission.
    pub reads: BTreeMap<String, String>,
    /// The node(s) of each member of the current attempt (first: the primary).
    pub placement: Vec<Vec<String>>,
    pub members: Vec<String>,
    /// Nodes lost during the job, in order.
    pub lost: Vec<String>,
    /// Parts that failed on a node (not by their members' own failure), in order.
    #[serde(default)]
    pub faults: Vec<String>,
    /// Coordinators so far (the first is the node that accepted the job).
    pub coordinators: Vec<String>,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub outcome: Option<String>,
}

/// What a node is asked to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Assignment {
    job: String,
    attempt: u32,
    tenant: String,
    text: String,
    origin: String,
    reads: BTreeMap<String, String>,
    placement: Vec<Vec<String>>,
    /// Data-plane address of every node of the attempt.
    data: BTreeMap<String, String>,
}

/// One member's result from one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireMember {
    index: usize,
    report: Option<zvm_vm::Report>,
    error: Option<String>,
    stdout: Option<Vec<u8>>,
    stderr: Option<Vec<u8>>,
    /// Output object (`bucket/key`) → etag.
    outputs: BTreeMap<String, String>,
}

/// An output staged by a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StagedOutput {
    member: usize,
    bucket: String,
    key: String,
    staged: String,
    etag: String,
    size: u64,
}

/// What a node reports for its part of an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartResult {
    node: String,
    /// The part could not run at all (the message says why).
    error: Option<String>,
    members: Vec<WireMember>,
    staged: Vec<StagedOutput>,
}

/// The answer of a finished job, kept in the store for `GET /v1/jobs/{id}/result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    ok: bool,
    report: Value,
}

/// This server as a node of a cluster.
pub struct Node {
    pub cluster: Arc<Cluster>,
    pub plane: Arc<DataPlane>,
    pub locator: Option<zvm_cluster::locate::SeaweedLocator>,
    /// Parts running here, by attempt key, with their cancel flags.
    parts: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Jobs coordinated here now.
    coordinating: Mutex<HashSet<String>>,
    started: Instant,
    next_id: AtomicU64,
    corrupt: bool,
    /// For forwarding single requests to other nodes.
    pub(crate) http: reqwest::Client,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.cluster.id())
            .finish_non_exhaustive()
    }
}

fn attempt_key(job: &str, attempt: u32) -> String {
    format!("{job}.a{attempt}")
}

fn part_key(job: &str, attempt: u32, node: &str) -> String {
    format!("{job}.a{attempt}.{node}")
}

fn attempt_prefix(job: &str, attempt: u32) -> String {
    format!("cluster/jobs/{job}/a{attempt}")
}

impl Node {
    /// Joins the cluster and starts serving assignments, aborts and takeovers.
    pub async fn start(
        shared: &Arc<Shared>,
        settings: &ClusterSettings,
        http_addr: std::net::SocketAddr,
    ) -> anyhow::Result<Arc<Node>> {
        let advertise = match &settings.advertise {
            Some(a) => a.clone(),
            None if http_addr.ip().is_unspecified() => anyhow::bail!(
                "cluster: the server listens on `{http_addr}`, which other nodes cannot \
                 connect to; give the address they should use with `--advertise`"
            ),
            None => format!("http://{http_addr}"),
        };
        let data_listen = settings
            .data_listen
            .clone()
            .unwrap_or_else(|| format!("{}:0", http_addr.ip()));
        let advertise_host = if data_listen.starts_with("0.0.0.0") {
            Some(
                advertise
                    .split("://")
                    .nth(1)
                    .and_then(|h| h.rsplit_once(':').map(|(h, _)| h.to_string()))
                    .unwrap_or_default(),
            )
        } else {
            None
        };
        let plane = DataPlane::bind(&data_listen, advertise_host.as_deref()).await?;
        let weak = Arc::downgrade(shared);
        let load: zvm_cluster::membership::LoadFn = Arc::new(move || {
            weak.upgrade()
                .map_or(0, |s| s.admission.in_flight() + s.admission.waiting())
        });
        // Connected but not yet announced: other nodes hear of this one only once it listens
        // for their assignments (below).
        let cluster = Cluster::connect(
            ClusterConfig {
                nats: settings.nats.clone(),
                node: settings.node.clone(),
                http: advertise,
                data: plane.addr().to_string(),
                volume: settings.volume.clone(),
                max_vms: shared.config.max_vms,
                heartbeat: settings.heartbeat,
                node_timeout: settings.node_timeout,
                replicas: settings.nats.len().clamp(1, 3),
            },
            load,
        )
        .await?;
        let locator = match (&settings.seaweed_filer, &settings.seaweed_master) {
            (Some(filer), Some(master)) => {
                Some(zvm_cluster::locate::SeaweedLocator::new(filer, master)?)
            }
            _ => None,
        };
        let node = Arc::new(Node {
            cluster,
            plane,
            locator,
            parts: Mutex::new(HashMap::new()),
            coordinating: Mutex::new(HashSet::new()),
            started: Instant::now(),
            next_id: AtomicU64::new(0),
            corrupt: std::env::var(CORRUPT_VAR).is_ok_and(|v| v == "1"),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
        });
        if node.corrupt {
            tracing::warn!("{CORRUPT_VAR}=1: this node corrupts the outputs it stages (a test)");
        }
        // Assignments.
        let mut assigns = node
            .cluster
            .client()
            .subscribe(format!("zvm.node.{}.assign", node.cluster.id()))
            .await?;
        let (n, s) = (node.clone(), shared.clone());
        tokio::spawn(async move {
            while let Some(msg) = assigns.next().await {
                let Ok(a) = serde_json::from_slice::<Assignment>(&msg.payload) else {
                    continue;
                };
                if let Some(reply) = msg.reply {
                    let _ = n.cluster.client().publish(reply, "accepted".into()).await;
                }
                tokio::spawn(n.clone().run_assignment(s.clone(), a));
            }
        });
        // Aborts.
        let mut aborts = node.cluster.client().subscribe("zvm.job.abort").await?;
        let n = node.clone();
        tokio::spawn(async move {
            while let Some(msg) = aborts.next().await {
                let key = String::from_utf8_lossy(&msg.payload).to_string();
                if let Some(flag) = n.parts.lock().expect("parts").get(&key) {
                    flag.store(true, Ordering::Relaxed);
                }
                n.plane.cancel(&key);
            }
        });
        node.cluster.announce().await;
        // Takeovers.
        let (n, s) = (Arc::downgrade(&node), Arc::downgrade(shared));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ORPHAN_SCAN).await;
                let (Some(n), Some(s)) = (n.upgrade(), s.upgrade()) else {
                    return;
                };
                n.adopt_orphans(&s).await;
            }
        });
        tracing::info!(
            node = node.cluster.id(),
            data = node.plane.addr(),
            "joined the cluster"
        );
        Ok(node)
    }

    /// The node a single run should go to instead of this one: only when every VM here is
    /// busy, to the least loaded live node with a VM free (by its last heartbeat), and never
    /// for a request another node forwarded already.
    pub(crate) fn peer_for_run(&self, s: &Shared, headers: &HeaderMap) -> Option<NodeInfo> {
        if headers.contains_key(FORWARDED_BY) || s.admission.in_flight() < s.admission.max_vms() {
            return None;
        }
        self.cluster
            .alive()
            .into_iter()
            .filter(|n| n.id != self.cluster.id() && n.running < n.max_vms)
            .min_by(|a, b| {
                let load = |n: &NodeInfo| n.running as f64 / n.max_vms.max(1) as f64;
                load(a).total_cmp(&load(b)).then(a.id.cmp(&b.id))
            })
    }

    /// Sends a single run to `peer` and relays its answer, with `x-zvm-node` naming it.
    pub(crate) async fn forward_run(
        &self,
        peer: &NodeInfo,
        query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let url = if query.is_empty() {
            format!("{}/v1/run", peer.http)
        } else {
            format!("{}/v1/run?{query}", peer.http)
        };
        let mut request = self
            .http
            .post(&url)
            .header(FORWARDED_BY, self.cluster.id())
            .body(body);
        for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(v) = headers.get(&name) {
                request = request.header(name, v.clone());
            }
        }
        if let Some(v) = headers.get("x-request-id") {
            request = request.header("x-request-id", v.clone());
        }
        let answer = request.send().await.map_err(|e| {
            ApiError::Unavailable(format!("forwarding the run to node `{}`: {e}", peer.id))
        })?;
        let status = answer.status();
        let mut out_headers = HeaderMap::new();
        for (k, v) in answer.headers() {
            if k != header::TRANSFER_ENCODING && k != header::CONNECTION {
                out_headers.append(k.clone(), v.clone());
            }
        }
        let bytes = answer.bytes().await.map_err(|e| {
            ApiError::Unavailable(format!("reading node `{}`'s answer: {e}", peer.id))
        })?;
        let mut r = (status, bytes).into_response();
        r.headers_mut().extend(out_headers);
        Ok(r)
    }

    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let seed = format!(
            "{} {} {:?} {n}",
            self.cluster.id(),
            std::process::id(),
            std::time::SystemTime::now()
        );
        format!("cj-{}", &blake3::hash(seed.as_bytes()).to_hex()[..16])
    }

    /// `GET /v1/cluster`: the nodes this one hears.
    pub fn status_json(&self) -> Value {
        json!({
            "node": self.cluster.id(),
            "connected": self.cluster.connected(),
            "nodes": self.cluster.nodes(),
        })
    }

    /// The job's record and its revision.
    async fn load(&self, id: &str) -> Result<Option<(JobState, u64)>, ApiError> {
        let entry = self
            .cluster
            .jobs()
            .entry(id)
            .await
            .map_err(|e| ApiError::Internal(format!("reading job `{id}` from NATS: {e}")))?;
        match entry {
            Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => {
                let st = serde_json::from_slice(&e.value).map_err(|e| {
                    ApiError::Internal(format!("job `{id}`'s record is damaged: {e}"))
                })?;
                Ok(Some((st, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// [`Node::load`], again on errors for up to [`NATS_RETRY`] (a stream leader moving).
    async fn load_retrying(&self, id: &str) -> Result<Option<(JobState, u64)>, ApiError> {
        let deadline = Instant::now() + NATS_RETRY;
        loop {
            match self.load(id).await {
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("{e}; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    /// Writes the record if it is still at `revision`; the new revision, or `None` when
    /// another node changed it (this node no longer coordinates the job).
    async fn save(&self, st: &JobState, revision: u64) -> Option<u64> {
        let value: Bytes = serde_json::to_vec(st).expect("plain JSON").into();
        for _ in 0..50 {
            match self
                .cluster
                .jobs()
                .update(&st.id, value.clone(), revision)
                .await
            {
                Ok(r) => return Some(r),
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision =>
                {
                    // Perhaps an earlier try of this very write, whose answer was lost.
                    return self.cluster.record_written(&st.id, &value).await;
                }
                Err(e) => {
                    tracing::debug!("saving job `{}`: {e}; retrying", st.id);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        None
    }

    /// Picks the nodes of every member (see the module documentation).
    async fn place(
        &self,
        s: &Arc<Shared>,
        job: &Job,
        firsts: &[Option<ObjectRef>],
    ) -> Result<Vec<Vec<String>>, String> {
        let alive = self.cluster.alive();
        if alive.is_empty() {
            return Err("no node is alive".into());
        }
        let mut load: HashMap<String, f64> = alive
            .iter()
            .map(|n| (n.id.clone(), n.running as f64 / n.max_vms.max(1) as f64))
            .collect();
        let capacity: HashMap<String, f64> = alive
            .iter()
            .map(|n| (n.id.clone(), n.max_vms.max(1) as f64))
            .collect();
        let by_volume: HashMap<String, String> = alive
            .iter()
            .filter_map(|n| n.volume.clone().map(|v| (v, n.id.clone())))
            .collect();
        let mut out = Vec::with_capacity(job.members.len());
        for (i, _) in job.members.iter().enumerate() {
            let replicas = job.replicas.get(i).copied().unwrap_or(1) as usize;
            if replicas > alive.len() {
                return Err(format!(
                    "member `{}` asks for {replicas} replicas and only {} nodes are alive",
                    job.members[i].name,
                    alive.len()
                ));
            }
            let mut chosen: Vec<String> = Vec::new();
            if let Some(first) = &firsts[i]
                && let Some(near) = self.near(s, first, &by_volume).await
            {
                chosen.push(near);
            }
            while chosen.len() < replicas {
                let next = load
                    .iter()
                    .filter(|(id, _)| !chosen.contains(id))
                    .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(b.0)))
                    .map(|(id, _)| id.clone())
                    .expect("enough nodes, checked above");
                chosen.push(next);
            }
            for c in &chosen {
                *load.get_mut(c).expect("alive") += 1.0 / capacity[c];
            }
            out.push(chosen);
        }
        Ok(out)
    }

    /// The live node next to the volume server holding `object`, if the store says.
    async fn near(
        &self,
        s: &Arc<Shared>,
        object: &ObjectRef,
        by_volume: &HashMap<String, String>,
    ) -> Option<String> {
        let locator = self.locator.as_ref()?;
        let s3 = s.store.s3()?;
        let (bucket, key) = s3.object_location(&object.bucket, &object.key).ok()?;
        match locator.volume_servers(&bucket, &key).await {
            Ok(urls) => urls.iter().find_map(|u| by_volume.get(u).cloned()),
            Err(e) => {
                tracing::debug!("locating `{object}`: {e}");
                None
            }
        }
    }

    /// Adopts jobs whose coordinator is dead (see the module documentation).
    async fn adopt_orphans(self: &Arc<Self>, s: &Arc<Shared>) {
        // A node that just started has not heard everyone yet.
        if self.started.elapsed() < self.cluster.config().node_timeout * 2
            || !self.cluster.connected()
        {
            return;
        }
        let Ok(mut keys) = self.cluster.jobs().keys().await else {
            return;
        };
        let mut ids = Vec::new();
        while let Some(Ok(k)) = keys.next().await {
            if !k.contains('.') {
                ids.push(k);
            }
        }
        for id in ids {
            if self
                .coordinating
                .lock()
                .expect("coordinating")
                .contains(&id)
            {
                continue;
            }
            let Ok(Some((mut st, rev))) = self.load(&id).await else {
                continue;
            };
            // The coordinator is gone when it is not heard, or heard as another process (it
            // restarted within the timeout); this node's own earlier process included.
            let gone = if st.coordinator == self.cluster.id() {
                st.incarnation != self.cluster.incarnation()
            } else {
                !self.cluster.is_alive(&st.coordinator)
                    || self
                        .cluster
                        .node(&st.coordinator)
                        .is_some_and(|n| st.incarnation != 0 && n.incarnation != st.incarnation)
            };
            if matches!(st.phase, Phase::Ok | Phase::Failed) || !gone {
                continue;
            }
            let old = std::mem::replace(&mut st.coordinator, self.cluster.id().to_string());
            st.incarnation = self.cluster.incarnation();
            st.coordinators.push(self.cluster.id().to_string());
            if !st.lost.contains(&old) {
                st.lost.push(old.clone());
            }
            let Some(rev) = self.save(&st, rev).await else {
                continue; // another node took it
            };
            tracing::warn!(job = %id, dead = %old, "taking over a job whose coordinator is lost");
            // The lost coordinator's attempt is called off: its parts stop and stage nothing.
            if st.attempt > 0 {
                self.abort(&id, st.attempt).await;
            }
            let (n, s) = (self.clone(), s.clone());
            tokio::spawn(async move {
                let _ = n.coordinate(&s, st, rev).await;
            });
        }
    }

    /// Runs `st` to its end as its coordinator; the answer, or an error when this node
    /// lost the job (another node coordinates it now) or could not run it (then the job is
    /// recorded as failed with that error, so that it does not stay `running` forever).
    async fn coordinate(
        self: &Arc<Self>,
        s: &Arc<Shared>,
        st: JobState,
        rev: u64,
    ) -> Result<StoredAnswer, ApiError> {
        let id = st.id.clone();
        let result = self.coordinate_inner(s, st, rev).await;
        if let Err(e) = &result
            && !matches!(e, ApiError::Unavailable(_))
            && let Ok(Some((mut st, rev))) = self.load(&id).await
            && st.coordinator == self.cluster.id()
            && matches!(st.phase, Phase::Running)
        {
            st.phase = Phase::Failed;
            st.finished_ms = Some(now_ms());
            st.outcome = Some(format!("failed: {e}"));
            self.save(&st, rev).await;
            self.cleanup(s, &id).await;
        }
        result
    }

    async fn coordinate_inner(
        self: &Arc<Self>,
        s: &Arc<Shared>,
        mut st: JobState,
        mut rev: u64,
    ) -> Result<StoredAnswer, ApiError> {
        let id = st.id.clone();
        self.coordinating
            .lock()
            .expect("coordinating")
            .insert(id.clone());
        let _guard = Forget(self.clone(), id.clone());
        let started = Instant::now();
        // A job past its commit point is finished, whatever happened since.
        if st.phase == Phase::Committing {
            let record = format!("cluster/jobs/{id}/commit");
            let applied = store_retry(s, "rolling the job's commit forward", move |s3| {
                s3.apply_commit_record(&record)
            })
            .await?;
            if applied {
                st.phase = Phase::Ok;
                st.finished_ms = Some(now_ms());
                st.outcome.get_or_insert_with(|| "ok".into());
                self.save(&st, rev).await;
                self.cleanup(s, &id).await;
                return self.answer(s, &id).await;
            }
            st.phase = Phase::Running;
        }
        // Resolve the job here, as every node does, from the same text.
        let prepared = self.prepare(s, &st).await?;
        let firsts = first_inputs(&prepared);
        let job = prepared.job.clone();
        drop(prepared);
        let retries = job.retries;
        let deadline_per_attempt = job
            .members
            .iter()
            .map(|m| m.manifest.limits.timeout)
            .max()
            .unwrap_or(Duration::from_secs(60))
            + ATTEMPT_GRACE;
        loop {
            if st.attempt > retries + st.lost.len() as u32 + 1 && st.attempt > retries + 1 {
                return self
                    .fail(
                        s,
                        st,
                        rev,
                        &job,
                        "the job lost a node on every attempt".into(),
                        started,
                    )
                    .await;
            }
            st.attempt += 1;
            let placement = match self.place(s, &job, &firsts).await {
                Ok(p) => p,
                Err(why) => return self.fail(s, st, rev, &job, why, started).await,
            };
            st.placement = placement.clone();
            st.phase = Phase::Running;
            rev = self.save(&st, rev).await.ok_or_else(|| lost_job(&id))?;
            let attempt = st.attempt;
            let nodes: Vec<String> = distinct(&placement);
            let mut data = BTreeMap::new();
            for n in &nodes {
                if let Some(info) = self.cluster.node(n) {
                    data.insert(n.clone(), info.data);
                }
            }
            let assignment = Assignment {
                job: id.clone(),
                attempt,
                tenant: st.tenant.clone(),
                text: st.text.clone(),
                origin: st.origin.clone(),
                reads: st.reads.clone(),
                placement: placement.clone(),
                data,
            };
            let payload: Bytes = serde_json::to_vec(&assignment).expect("JSON").into();
            let mut lost: Vec<String> = Vec::new();
            for n in &nodes {
                // A node restarting under its id may not listen yet: asked again (`ask`).
                let ask = self.cluster.ask(
                    n,
                    format!("zvm.node.{n}.assign"),
                    payload.clone(),
                    ASSIGN_TIMEOUT,
                    POLL,
                );
                if let Err(why) = ask.await {
                    tracing::warn!(job = %id, node = %n, attempt, "assigning: {why}");
                    lost.push(n.clone());
                    break;
                }
            }
            let mut results: BTreeMap<String, PartResult> = BTreeMap::new();
            // Parts that could not run or report (a node's store requests failing, say): the
            // attempt runs again on the same nodes.
            let mut faults: Vec<String> = Vec::new();
            let until = Instant::now() + deadline_per_attempt;
            while lost.is_empty() && faults.is_empty() && results.len() < nodes.len() {
                if Instant::now() > until {
                    self.abort(&id, attempt).await;
                    return self
                        .fail(
                            s,
                            st,
                            rev,
                            &job,
                            "the attempt took longer than its members' timeouts allow".into(),
                            started,
                        )
                        .await;
                }
                if !self.cluster.connected() {
                    // Cut off from the cluster: another node will take the job over.
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                for n in &nodes {
                    if results.contains_key(n) {
                        continue;
                    }
                    if let Ok(Some(v)) = self.cluster.jobs().get(part_key(&id, attempt, n)).await {
                        let rel = String::from_utf8_lossy(&v).to_string();
                        if let Some(why) = rel.strip_prefix("error:") {
                            faults.push(format!("node `{n}`: {why}"));
                            continue;
                        }
                        let s2 = s.clone();
                        let got = crate::objects::blocking(move || {
                            Ok(s2.store.s3().expect("s3").get_raw(&rel)?)
                        })
                        .await;
                        match got {
                            // The store is slow or failing: read it again at the next look.
                            Err(e) => tracing::warn!(job = %id, "reading node `{n}`'s result: {e}"),
                            Ok(bytes) => match bytes
                                .and_then(|b| serde_json::from_slice::<PartResult>(&b).ok())
                            {
                                Some(PartResult { error: Some(e), .. }) => {
                                    faults.push(format!("node `{n}`: {e}"));
                                }
                                Some(r) => {
                                    results.insert(n.clone(), r);
                                }
                                None => faults
                                    .push(format!("node `{n}`: its result is missing or damaged")),
                            },
                        }
                    } else if !self.cluster.is_alive(n) {
                        lost.push(n.clone());
                    }
                }
                if lost.is_empty() && faults.is_empty() && results.len() < nodes.len() {
                    tokio::time::sleep(POLL).await;
                }
            }
            // The coordinator may have been replaced meanwhile.
            match self.load_retrying(&id).await {
                Ok(Some((cur, r))) if cur.coordinator == self.cluster.id() && r == rev => {}
                _ => return Err(lost_job(&id)),
            }
            if !faults.is_empty() && lost.is_empty() {
                self.abort(&id, attempt).await;
                for f in &faults {
                    tracing::warn!(job = %id, attempt, "{f}; running the attempt again");
                }
                st.faults.extend(faults);
                if st.attempt > retries {
                    let why = format!(
                        "parts failed on {} attempts (retries = {retries}): {}",
                        st.attempt,
                        st.faults.last().cloned().unwrap_or_default()
                    );
                    return self.fail(s, st, rev, &job, why, started).await;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            if !lost.is_empty() {
                self.abort(&id, attempt).await;
                for n in lost {
                    tracing::warn!(job = %id, node = %n, attempt, "lost a node; running the attempt again");
                    st.lost.push(n);
                }
                if st.attempt > retries {
                    let why = format!(
                        "nodes were lost on {} attempts (retries = {retries})",
                        st.attempt
                    );
                    return self.fail(s, st, rev, &job, why, started).await;
                }
                // A node restarting, or a network settling: give it a moment, longer each
                // time, rather than spending every retry at once.
                tokio::time::sleep(LOST_BACKOFF * st.attempt.min(4)).await;
                continue;
            }
            return self.conclude(s, st, rev, &job, results, started).await;
        }
    }

    async fn prepare(&self, s: &Arc<Shared>, st: &JobState) -> Result<Prepared, ApiError> {
        let caller = Caller::named(&s.tenants, &st.tenant).ok_or_else(|| {
            ApiError::Internal(format!(
                "tenant `{}` is not configured on node `{}`",
                st.tenant,
                self.cluster.id()
            ))
        })?;
        let (s2, text, origin, reads) = (
            s.clone(),
            st.text.clone(),
            st.origin.clone(),
            st.reads.clone(),
        );
        let prepared = tokio::task::spawn_blocking(move || {
            crate::jobs::prepare(&s2, &caller, &text, &origin, &Programs::Objects)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("preparing the job: {e}")))??;
        if !reads.is_empty() && prepared.reads != reads {
            let changed: Vec<&String> = reads
                .iter()
                .filter(|(k, v)| prepared.reads.get(*k) != Some(v))
                .map(|(k, _)| k)
                .collect();
            return Err(ApiError::Conflict(format!(
                "objects the job reads changed since it was submitted: {}",
                changed
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(prepared)
    }

    async fn abort(&self, id: &str, attempt: u32) {
        let key = attempt_key(id, attempt);
        let _ = self
            .cluster
            .client()
            .publish("zvm.job.abort", key.clone().into())
            .await;
        let _ = self.cluster.client().flush().await;
    }

    /// Every part reported: vote, then commit or fail.
    async fn conclude(
        self: &Arc<Self>,
        s: &Arc<Shared>,
        mut st: JobState,
        rev: u64,
        job: &Job,
        results: BTreeMap<String, PartResult>,
        started: Instant,
    ) -> Result<StoredAnswer, ApiError> {
        let id = st.id.clone();
        if let Some((n, e)) = results
            .iter()
            .find_map(|(n, r)| r.error.as_ref().map(|e| (n, e)))
        {
            let why = format!("node `{n}` could not run its part: {e}");
            return self.fail(s, st, rev, job, why, started).await;
        }
        // Each member's result on each node that ran it.
        let mut by_member: Vec<Vec<(&String, &WireMember)>> = vec![Vec::new(); job.members.len()];
        for (n, r) in &results {
            for m in &r.members {
                if m.index < by_member.len() {
                    by_member[m.index].push((n, m));
                }
            }
        }
        let mut members = Vec::with_capacity(job.members.len());
        let mut disagreement = None;
        for (i, runs) in by_member.iter().enumerate() {
            let primary = st.placement[i].first().cloned().unwrap_or_default();
            let chosen = runs
                .iter()
                .find(|(n, _)| **n == primary)
                .or_else(|| runs.first())
                .map(|(_, m)| (*m).clone());
            if runs.len() > 1 && disagreement.is_none() {
                let votes: Vec<String> = runs
                    .iter()
                    .map(|(n, m)| format!("{n}: {}", vote(m)))
                    .collect();
                let first = vote(runs[0].1);
                if runs.iter().any(|(_, m)| vote(m) != first) {
                    disagreement = Some(format!(
                        "replicas disagree: member `{}`: {}",
                        job.members[i].name,
                        votes.join("; ")
                    ));
                }
            }
            members.push(match chosen {
                Some(m) => zvm_job::MemberReport {
                    name: job.members[i].name.clone(),
                    group: job.members[i].group.clone(),
                    report: m.report,
                    error: m.error,
                    stdout: m.stdout,
                    stderr: m.stderr,
                },
                None => zvm_job::MemberReport {
                    name: job.members[i].name.clone(),
                    group: job.members[i].group.clone(),
                    report: None,
                    error: Some("no node reported it".into()),
                    stdout: None,
                    stderr: None,
                },
            });
        }
        let pipe_bytes = job
            .pipes
            .iter()
            .filter_map(|p| {
                members[p.from]
                    .report
                    .as_ref()?
                    .channels
                    .iter()
                    .find(|c| c.name == p.writer.as_str())
                    .map(|c| c.write_bytes)
            })
            .sum();
        let all_ok = members.iter().all(zvm_job::MemberReport::is_ok);
        let outcome = match (&disagreement, all_ok) {
            (Some(why), _) => zvm_job::JobOutcome::Failed {
                member: why.split('`').nth(1).unwrap_or_default().to_string(),
                reason: why.clone(),
            },
            (None, true) => zvm_job::JobOutcome::Ok,
            (None, false) => zvm_job::report::failure(&members),
        };
        let mut report =
            zvm_job::JobReport::new(job, outcome.clone(), members, pipe_bytes, started.elapsed());
        report.attempts = st.attempt;
        report.processes = distinct(&st.placement).len();
        if outcome != zvm_job::JobOutcome::Ok {
            report.committed = false;
            let answer = self.store_answer(s, &st, &report, false).await?;
            st.phase = Phase::Failed;
            st.finished_ms = Some(now_ms());
            st.outcome = Some(report.outcome_text.clone());
            self.save(&st, rev).await.ok_or_else(|| lost_job(&id))?;
            self.cleanup(s, &id).await;
            return Ok(answer);
        }
        // The primary's staged outputs.
        let mut puts = Vec::new();
        let mut sizes = Vec::new();
        for (n, r) in &results {
            for o in &r.staged {
                if st.placement[o.member].first() == Some(n) {
                    sizes.push((o.bucket.clone(), o.key.clone(), o.size));
                    puts.push(StagedPut {
                        bucket: o.bucket.clone(),
                        key: o.key.clone(),
                        staged: o.staged.clone(),
                    });
                }
            }
        }
        let s2 = s.clone();
        let sizes2 = sizes.clone();
        let deltas = crate::objects::blocking(move || {
            let refs: Vec<(&str, &str, u64)> = sizes2
                .iter()
                .map(|(b, k, n)| (b.as_str(), k.as_str(), *n))
                .collect();
            s2.tenants.check_outputs(&s2, &refs)
        })
        .await;
        let deltas = match deltas {
            Ok(d) => d,
            Err(e) => {
                report.committed = false;
                let _ = self.store_answer(s, &st, &report, false).await;
                st.phase = Phase::Failed;
                st.finished_ms = Some(now_ms());
                st.outcome = Some(e.to_string());
                self.save(&st, rev).await;
                self.cleanup(s, &id).await;
                return Err(e);
            }
        };
        report.committed = true;
        let answer = self.store_answer(s, &st, &report, true).await?;
        st.phase = Phase::Committing;
        st.outcome = Some(report.outcome_text.clone());
        let rev = self.save(&st, rev).await.ok_or_else(|| lost_job(&id))?;
        let record = format!("cluster/jobs/{id}/commit");
        let at = record.clone();
        store_retry(s, "writing the job's commit record", move |s3| {
            s3.write_commit_record(&at, &puts)
        })
        .await?;
        store_retry(s, "applying the job's commit", move |s3| {
            s3.apply_commit_record(&record)
        })
        .await?;
        for (bucket, delta) in deltas {
            s.tenants.account(&bucket, delta);
        }
        st.phase = Phase::Ok;
        st.finished_ms = Some(now_ms());
        self.save(&st, rev).await;
        self.cleanup(s, &id).await;
        Ok(answer)
    }

    async fn fail(
        &self,
        s: &Arc<Shared>,
        mut st: JobState,
        rev: u64,
        job: &Job,
        why: String,
        started: Instant,
    ) -> Result<StoredAnswer, ApiError> {
        let members = job
            .members
            .iter()
            .map(|m| zvm_job::MemberReport {
                name: m.name.clone(),
                group: m.group.clone(),
                report: None,
                error: Some(format!("cancelled: {why}")),
                stdout: None,
                stderr: None,
            })
            .collect();
        let outcome = zvm_job::JobOutcome::Failed {
            member: job
                .members
                .first()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            reason: why.clone(),
        };
        let mut report = zvm_job::JobReport::new(job, outcome, members, 0, started.elapsed());
        report.attempts = st.attempt;
        let answer = self.store_answer(s, &st, &report, false).await?;
        st.phase = Phase::Failed;
        st.finished_ms = Some(now_ms());
        st.outcome = Some(report.outcome_text.clone());
        self.save(&st, rev).await.ok_or_else(|| lost_job(&st.id))?;
        self.cleanup(s, &st.id).await;
        Ok(answer)
    }

    /// Keeps the job's answer (body and report) in the store, before the commit point.
    async fn store_answer(
        &self,
        s: &Arc<Shared>,
        st: &JobState,
        report: &zvm_job::JobReport,
        ok: bool,
    ) -> Result<StoredAnswer, ApiError> {
        let mut body = Vec::new();
        for m in &report.members {
            body.extend_from_slice(m.stdout.as_deref().unwrap_or_default());
        }
        let mut json = serde_json::to_value(report)
            .map_err(|e| ApiError::Internal(format!("serialising the job report: {e}")))?;
        json["cluster"] = json!({
            "id": st.id,
            "placement": st.placement,
            "lost": st.lost,
            "coordinators": st.coordinators,
        });
        let mut headers = vec![
            (
                "x-zvm-state".to_string(),
                if ok { "ok" } else { "failed" }.to_string(),
            ),
            (
                "x-zvm-state-text".into(),
                crate::exec::header_text(&report.outcome_text),
            ),
            ("x-zvm-members".into(), report.totals.members.to_string()),
            (
                "x-zvm-fuel-used".into(),
                report.totals.fuel_used.to_string(),
            ),
            (
                "x-zvm-pipe-bytes".into(),
                report.totals.pipe_bytes.to_string(),
            ),
            (
                "x-zvm-wall-time-us".into(),
                report.totals.wall_time_us.to_string(),
            ),
            ("x-zvm-committed".into(), ok.to_string()),
            ("x-zvm-job-id".into(), st.id.clone()),
            ("x-zvm-attempts".into(), st.attempt.to_string()),
            (
                "x-zvm-nodes".into(),
                st.placement
                    .iter()
                    .map(|p| p.join("+"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ];
        if let Some(m) = report.failed_member() {
            headers.push(("x-zvm-failed-member".into(), m.name.clone()));
        }
        let answer = StoredAnswer {
            status: if ok { 200 } else { 500 },
            headers,
            ok,
            report: json,
        };
        let meta = serde_json::to_vec(&answer).expect("JSON");
        let id = st.id.clone();
        store_retry(s, "storing the job's answer", move |s3| {
            s3.put_raw(&format!("cluster/results/{id}.json"), meta.clone())?;
            s3.put_raw(&format!("cluster/results/{id}.body"), body.clone())
        })
        .await?;
        Ok(answer)
    }

    /// The stored answer of job `id`.
    async fn answer(&self, s: &Arc<Shared>, id: &str) -> Result<StoredAnswer, ApiError> {
        let meta = read_raw(s, format!("cluster/results/{id}.json"))
            .await?
            .ok_or_else(|| ApiError::Conflict(format!("job `{id}` has no result yet")))?;
        serde_json::from_slice(&meta)
            .map_err(|e| ApiError::Internal(format!("job `{id}`'s stored result is damaged: {e}")))
    }

    async fn cleanup(&self, s: &Arc<Shared>, id: &str) {
        let (s2, prefix) = (s.clone(), format!("cluster/jobs/{id}"));
        let _ = crate::objects::blocking(move || {
            Ok(s2.store.s3().expect("s3").delete_raw_prefix(&prefix)?)
        })
        .await;
        // The job's record stays (any node answers for it); its parts' keys go.
        if let Ok(mut keys) = self.cluster.jobs().keys().await {
            let prefix = format!("{id}.");
            let mut doomed = Vec::new();
            while let Some(Ok(k)) = keys.next().await {
                if k.starts_with(&prefix) {
                    doomed.push(k);
                }
            }
            for k in doomed {
                let _ = self.cluster.jobs().purge(&k).await;
            }
        }
    }

    /// Runs this node's part of an attempt and reports it.
    async fn run_assignment(self: Arc<Self>, s: Arc<Shared>, a: Assignment) {
        let key = attempt_key(&a.job, a.attempt);
        let cancel = Arc::new(AtomicBool::new(false));
        self.parts
            .lock()
            .expect("parts")
            .insert(key.clone(), cancel.clone());
        let handle = tokio::runtime::Handle::current();
        let (n, s2, a2, c2) = (self.clone(), s.clone(), a.clone(), cancel.clone());
        let outcome = tokio::task::spawn_blocking(move || n.run_part(&s2, &a2, &c2, &handle))
            .await
            .unwrap_or_else(|e| Err(format!("the part's task failed: {e}")));
        self.parts.lock().expect("parts").remove(&key);
        self.plane.finish(&key);
        let result = match outcome {
            Ok(r) => r,
            Err(e) => PartResult {
                node: self.cluster.id().to_string(),
                error: Some(e),
                members: Vec::new(),
                staged: Vec::new(),
            },
        };
        if cancel.load(Ordering::Relaxed) {
            return; // called off: nobody waits for it
        }
        let rel = format!(
            "{}/{}.json",
            attempt_prefix(&a.job, a.attempt),
            self.cluster.id()
        );
        let body = serde_json::to_vec(&result).expect("JSON");
        let (s2, rel2) = (s.clone(), rel.clone());
        let put = crate::objects::blocking(move || {
            Ok(s2.store.s3().expect("s3").put_raw(&rel2, body)?)
        })
        .await;
        // The bucket says where the result is, or why there is none.
        let said = match put {
            Ok(()) => rel,
            Err(e) => {
                tracing::warn!(job = %a.job, "storing the part's result: {e}");
                format!("error:storing the part's result: {e}")
            }
        };
        let k = part_key(&a.job, a.attempt, self.cluster.id());
        for _ in 0..50 {
            match self.cluster.jobs().put(&k, said.clone().into()).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!("reporting the part: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// The blocking body of [`Node::run_assignment`].
    fn run_part(
        &self,
        s: &Arc<Shared>,
        a: &Assignment,
        cancel: &Arc<AtomicBool>,
        handle: &tokio::runtime::Handle,
    ) -> Result<PartResult, String> {
        let me = self.cluster.id().to_string();
        let key = attempt_key(&a.job, a.attempt);
        let caller = Caller::named(&s.tenants, &a.tenant)
            .ok_or_else(|| format!("tenant `{}` is not configured on node `{me}`", a.tenant))?;
        let prepared = crate::jobs::prepare(s, &caller, &a.text, &a.origin, &Programs::Objects)
            .map_err(|e| e.to_string())?;
        if prepared.reads != a.reads {
            return Err("the objects the job reads changed since it was submitted".into());
        }
        let job = &prepared.job;
        if job.members.len() != a.placement.len() {
            return Err(format!(
                "the job resolved to {} members here and {} at its coordinator",
                job.members.len(),
                a.placement.len()
            ));
        }
        let nodes = distinct(&a.placement);
        let place: Vec<usize> = a
            .placement
            .iter()
            .map(|p| nodes.iter().position(|n| Some(n) == p.first()).unwrap_or(0))
            .collect();
        let me_index = nodes.iter().position(|n| *n == me).unwrap_or(usize::MAX);
        let mine: Vec<usize> = (0..job.members.len())
            .filter(|&i| a.placement[i].contains(&me))
            .collect();
        let mut part = zvm_job::part::plan(job, &mine, &place, me_index);
        {
            let _enter = handle.enter();
            for (pi, to, reader) in std::mem::take(&mut part.outgoing) {
                let Some(addr) = a.data.get(&nodes[to]) else {
                    return Err(format!("no data address for node `{}`", nodes[to]));
                };
                self.plane.send(&key, pi as u32, addr, reader);
            }
            for (pi, writer) in std::mem::take(&mut part.incoming) {
                self.plane.expect(&key, pi as u32, writer);
            }
        }
        let n = mine.len().clamp(1, s.config.max_vms.max(1));
        let permit = handle
            .block_on(s.admission.admit_deferred(n))
            .map_err(|e| e.to_string())?;
        let vms: Vec<_> = mine
            .iter()
            .take(64)
            .map(|&i| {
                s.activity
                    .vm_started("job-member", job.members[i].name.clone(), &a.tenant)
            })
            .collect();
        let runtime = s.job_runtime.get(s).map_err(|e| e.to_string())?;
        let txn = Arc::new(runtime.transaction());
        let options = zvm_job::JobOptions {
            threads: n,
            progress: None,
        };
        let done = zvm_job::part::run(runtime, job, part, &txn, &options, cancel)
            .map_err(|e| e.to_string())?;
        drop(vms);
        drop(permit);
        let all_ok = done.iter().all(|(_, m)| m.is_ok());
        if all_ok {
            txn.commit()
                .map_err(|e| format!("landing the outputs here: {e}"))?;
        } else {
            txn.abort();
        }
        let mut members = Vec::new();
        let mut staged = Vec::new();
        let prefix = format!("{}/{me}", attempt_prefix(&a.job, a.attempt));
        // A node cut off while its part ran finds, once it is back, that the job moved on:
        // staging then would only leave objects nobody deletes.
        if all_ok {
            let current = handle.block_on(self.load_retrying(&a.job));
            if !matches!(&current, Ok(Some((st, _))) if st.attempt == a.attempt && st.phase == Phase::Running)
            {
                return Err(format!(
                    "attempt {} of job `{}` was superseded while it ran here",
                    a.attempt, a.job
                ));
            }
        }
        for (i, m) in done {
            let mut outputs = BTreeMap::new();
            if all_ok && !cancel.load(Ordering::Relaxed) {
                for path in output_paths(job, i) {
                    let Some((_, object)) = prepared.outputs.iter().find(|(p, _)| *p == path)
                    else {
                        continue;
                    };
                    if !path.is_file() {
                        continue;
                    }
                    if self.corrupt {
                        corrupt(&path);
                    }
                    let file = std::fs::File::open(&path)
                        .map_err(|e| format!("reading the output `{object}`: {e}"))?;
                    let rel = format!("{prefix}/{}", staged.len());
                    let info = s
                        .store
                        .s3()
                        .ok_or("the cluster needs the S3 store")?
                        .stage_object(&rel, &object.bucket, &object.key, file, Default::default())
                        .map_err(|e| format!("staging the output `{object}`: {e}"))?;
                    outputs.insert(object.to_string(), info.etag.clone());
                    staged.push(StagedOutput {
                        member: i,
                        bucket: object.bucket.clone(),
                        key: object.key.clone(),
                        staged: rel,
                        etag: info.etag,
                        size: info.size,
                    });
                }
            }
            members.push(WireMember {
                index: i,
                report: m.report,
                error: m.error,
                stdout: m.stdout,
                stderr: m.stderr,
                outputs,
            });
        }
        Ok(PartResult {
            node: me,
            error: None,
            members,
            staged,
        })
    }
}

/// Runs a store operation of the coordinator on the blocking pool, again on failure for up
/// to [`STORE_RETRY`]: a store that lost a volume server (a host killed or cut off) stalls
/// and fails requests until its master notices, and the job's commit must outlast that
/// rather than leave the job undecided.
async fn store_retry<T: Send + 'static>(
    s: &Arc<Shared>,
    what: &str,
    f: impl Fn(&zvm_store::S3Store) -> Result<T, zvm_store::Error> + Send + Sync + 'static,
) -> Result<T, ApiError> {
    let f = Arc::new(f);
    let deadline = Instant::now() + STORE_RETRY;
    loop {
        let (s2, f2) = (s.clone(), f.clone());
        let r = crate::objects::blocking(move || {
            let s3 = s2
                .store
                .s3()
                .ok_or_else(|| ApiError::Internal("the cluster needs the S3 store".into()))?;
            Ok(f2(s3)?)
        })
        .await;
        match r {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(e) => {
                tracing::warn!("{what}: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// The raw object `rel` of the shared store (a stored answer, a part's result), read on the
/// blocking pool.
async fn read_raw(s: &Arc<Shared>, rel: String) -> Result<Option<Vec<u8>>, ApiError> {
    let s = s.clone();
    crate::objects::blocking(move || {
        let s3 = s
            .store
            .s3()
            .ok_or_else(|| ApiError::Internal("the cluster needs the S3 store".into()))?;
        Ok(s3.get_raw(&rel)?)
    })
    .await
}

/// Removes the job from the set coordinated here when its coordination ends.
struct Forget(Arc<Node>, String);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0
            .coordinating
            .lock()
            .expect("coordinating")
            .remove(&self.1);
    }
}

fn lost_job(id: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "this node lost contact with the cluster while coordinating job `{id}`; another node \
         finishes it: ask any node for `GET /v1/jobs/{id}`"
    ))
}

/// What replicas of a member must agree on.
fn vote(m: &WireMember) -> String {
    let state = m.report.as_ref().map_or_else(
        || m.error.clone().unwrap_or_default(),
        |r| r.state_text.clone(),
    );
    let stdout = blake3::hash(m.stdout.as_deref().unwrap_or_default()).to_hex();
    let outputs: Vec<String> = m
        .outputs
        .iter()
        .map(|(k, v)| format!("{k}={}", &v[..12.min(v.len())]))
        .collect();
    format!(
        "{state}, stdout {}, outputs [{}]",
        &stdout[..12],
        outputs.join(" ")
    )
}

/// Nodes in order of first appearance.
fn distinct(placement: &[Vec<String>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in placement.iter().flatten() {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

/// Output files of member `i`.
fn output_paths(job: &Job, i: usize) -> Vec<std::path::PathBuf> {
    job.members[i]
        .manifest
        .channels
        .iter()
        .filter(|c| {
            matches!(
                c.mode,
                AccessMode::SequentialWrite | AccessMode::RandomWrite
            )
        })
        .filter_map(|c| match &c.source {
            ChannelSource::File(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Each member's first input object, for placement.
fn first_inputs(prepared: &Prepared) -> Vec<Option<ObjectRef>> {
    let root = prepared.scratch.path();
    prepared
        .job
        .members
        .iter()
        .map(|m| {
            m.manifest
                .channels
                .iter()
                .filter(|c| matches!(c.mode, AccessMode::SequentialRead | AccessMode::RandomRead))
                .find_map(|c| match &c.source {
                    ChannelSource::File(p) => {
                        let rel = p.strip_prefix(root).ok()?.to_str()?;
                        let (bucket, key) = rel.split_once('/')?;
                        Some(ObjectRef {
                            bucket: bucket.to_string(),
                            key: key.to_string(),
                        })
                    }
                    _ => None,
                })
        })
        .collect()
}

fn corrupt(path: &std::path::Path) {
    if let Ok(mut bytes) = std::fs::read(path) {
        if let Some(b) = bytes.first_mut() {
            *b ^= 0x01;
        } else {
            bytes.push(0);
        }
        let _ = std::fs::write(path, bytes);
    }
}

/// `POST /v1/jobs` on a cluster node.
pub(crate) async fn submit(
    s: &Arc<Shared>,
    node: &Arc<Node>,
    caller: &Caller,
    text: &str,
    origin: &str,
    report_json: bool,
    defer: bool,
) -> Result<Response, ApiError> {
    let st = JobState {
        id: node.new_id(),
        tenant: caller.name().to_string(),
        coordinator: node.cluster.id().to_string(),
        incarnation: node.cluster.incarnation(),
        phase: Phase::Running,
        attempt: 0,
        text: text.to_string(),
        origin: origin.to_string(),
        reads: BTreeMap::new(),
        placement: Vec::new(),
        members: Vec::new(),
        lost: Vec::new(),
        faults: Vec::new(),
        coordinators: vec![node.cluster.id().to_string()],
        created_ms: now_ms(),
        finished_ms: None,
        outcome: None,
    };
    // Checked and resolved here first: a bad job is a 400 now, not a failed job later.
    let prepared = node.prepare(s, &st).await?;
    let mut st = st;
    st.reads = prepared.reads.clone();
    st.members = prepared
        .job
        .members
        .iter()
        .map(|m| m.name.clone())
        .collect();
    drop(prepared);
    let value: Bytes = serde_json::to_vec(&st).expect("JSON").into();
    // JetStream answers errors for a few seconds while a stream's leader moves (a NATS
    // server died): ride that out rather than refuse the job.
    let deadline = Instant::now() + NATS_RETRY;
    let rev = loop {
        match node.cluster.jobs().create(&st.id, value.clone()).await {
            Ok(rev) => break rev,
            Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                // The id is new, so the record is this request's, from a try whose answer
                // was lost; or someone else's record, which is refused below.
                match node.cluster.record_written(&st.id, &value).await {
                    Some(rev) => break rev,
                    None => {
                        return Err(ApiError::Internal(format!(
                            "recording the job in NATS: job `{}` exists already",
                            st.id
                        )));
                    }
                }
            }
            Err(e) if Instant::now() > deadline => {
                return Err(ApiError::Unavailable(format!(
                    "recording the job in NATS: {e}"
                )));
            }
            Err(e) => {
                tracing::debug!("recording the job in NATS: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let id = st.id.clone();
    if defer {
        let (n, s2, id2) = (node.clone(), s.clone(), id.clone());
        tokio::spawn(async move {
            if let Err(e) = n.coordinate(&s2, st, rev).await {
                tracing::warn!(job = %id2, "{e}");
            }
        });
        let location = format!("/v1/jobs/{id}");
        let mut r = (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "state": "queued", "location": location })),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(r);
    }
    let answer = node.coordinate(s, st, rev).await?;
    answer_response(s, &id, answer, report_json).await
}

/// The HTTP answer of a finished job.
async fn answer_response(
    s: &Arc<Shared>,
    id: &str,
    answer: StoredAnswer,
    report_json: bool,
) -> Result<Response, ApiError> {
    let mut headers = HeaderMap::new();
    for (k, v) in &answer.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    let (status, body, content_type) = if report_json {
        (
            StatusCode::OK,
            Bytes::from(answer.report.to_string()),
            "application/json",
        )
    } else {
        let body = read_raw(s, format!("cluster/results/{id}.body"))
            .await?
            .unwrap_or_default();
        (
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Bytes::from(body),
            "application/octet-stream",
        )
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut r = (status, body).into_response();
    r.headers_mut().extend(headers);
    Ok(r)
}

/// `GET /v1/jobs/{id}` for a cluster job, on any node.
pub(crate) async fn status(
    node: &Arc<Node>,
    caller: &Caller,
    id: &str,
) -> Result<Response, ApiError> {
    let (st, _) = node
        .load_retrying(id)
        .await?
        .filter(|(st, _)| caller.is_admin() || st.tenant == caller.name())
        .ok_or_else(|| ApiError::NotFound(format!("no job `{id}`")))?;
    let state = match st.phase {
        Phase::Running if st.attempt == 0 => "queued",
        Phase::Running | Phase::Committing => "running",
        Phase::Ok => "ok",
        Phase::Failed => "failed",
    };
    let mut v = json!({
        "id": st.id,
        "kind": "job",
        "label": "job",
        "state": state,
        "created_ms": st.created_ms,
        "started_ms": st.created_ms,
        "finished_ms": st.finished_ms,
        "cluster": {
            "coordinator": st.coordinator,
            "coordinators": st.coordinators,
            "phase": st.phase,
            "attempt": st.attempt,
            "placement": st.placement,
            "members": st.members,
            "lost": st.lost,
            "faults": st.faults,
            "outcome": st.outcome,
        },
    });
    if !st.tenant.is_empty() {
        v["tenant"] = st.tenant.clone().into();
    }
    Ok(Json(v).into_response())
}

/// `GET /v1/jobs/{id}/result` for a cluster job, on any node.
pub(crate) async fn result(
    s: &Arc<Shared>,
    node: &Arc<Node>,
    caller: &Caller,
    id: &str,
) -> Result<Response, ApiError> {
    let (st, _) = node
        .load_retrying(id)
        .await?
        .filter(|(st, _)| caller.is_admin() || st.tenant == caller.name())
        .ok_or_else(|| ApiError::NotFound(format!("no job `{id}`")))?;
    if !matches!(st.phase, Phase::Ok | Phase::Failed) {
        return Err(ApiError::Conflict(format!(
            "job `{id}` is running; its result is there once `GET /v1/jobs/{id}` says it finished"
        )));
    }
    let answer = node.answer(s, id).await?;
    answer_response(s, id, answer, false).await
}
