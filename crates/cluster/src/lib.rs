//! zvm's cluster layer: nodes of `zvm serve` that find each other through NATS, keep job
//! state in JetStream's key-value store, and carry pipes between job members on different
//! hosts over their own TCP connections.
//!
//! # A guided tour
//!
//! * [`membership`]: joining, heartbeats on core NATS, liveness judged by each node's own
//!   clock, the key-value buckets.
//! * [`dataplane`]: one TCP listener per node for pipes from other nodes, with
//!   [`zvm_job::remote`]'s framing and end-of-stream digest.
//! * [`locate`]: which SeaweedFS volume server holds an object, so that a member can run on
//!   the node next to its data.
//! * [`testing`]: real NATS and SeaweedFS clusters and network-namespace hosts for tests.
//!
//! What a job does across the cluster (placement, attempts, commits, takeover) is in the
//! server (`zvm-server`'s `cluster` module), which owns the store and the VMs.

pub mod dataplane;
pub mod locate;
pub mod membership;
pub mod testing;

pub use dataplane::DataPlane;
pub use membership::{Cluster, ClusterConfig, NodeInfo, NodeView, validate_node_id};

/// Errors of the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cluster configuration: {0}")]
    Config(String),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0}")]
    Io(String),
}
