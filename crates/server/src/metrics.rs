//! Counters for `GET /metrics`, rendered in the Prometheus text exposition format (version
//! 0.0.4). A handful of labelled counters behind one mutex: a request updates them once, so
//! the lock is never contended for long, and no metrics library is needed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// What the server counts.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Requests by (route, method, status).
    requests: BTreeMap<(String, String, u16), u64>,
    /// Finished runs by their state's kind (`ok`, `out_of_fuel`, ...).
    runs: BTreeMap<String, u64>,
    run_seconds_sum: f64,
    run_count: u64,
    /// Requests refused with 503 because every VM was busy and the queue full.
    rejected: u64,
}

/// The gauges, read from the admission control when rendering.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    pub vms_in_flight: usize,
    pub max_vms: usize,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub programs_cached: usize,
}

/// The cluster's gauges: nodes by liveness, each node's VMs from its last heartbeat.
pub fn render_cluster(cluster: &zvm_cluster::Cluster) -> String {
    use std::fmt::Write;
    let nodes = cluster.nodes();
    let alive = nodes.iter().filter(|n| n.alive).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP zvm_cluster_connected Whether this node is connected to NATS.\n\
         # TYPE zvm_cluster_connected gauge\nzvm_cluster_connected {}",
        u8::from(cluster.connected())
    );
    let _ = writeln!(
        out,
        "# HELP zvm_cluster_nodes Nodes this node has heard of, by liveness.\n\
         # TYPE zvm_cluster_nodes gauge\n\
         zvm_cluster_nodes{{state=\"alive\"}} {alive}\n\
         zvm_cluster_nodes{{state=\"lost\"}} {}",
        nodes.len() - alive
    );
    let _ = writeln!(
        out,
        "# HELP zvm_cluster_node_vms VMs running or waiting on each node (its last heartbeat).\n\
         # TYPE zvm_cluster_node_vms gauge"
    );
    for n in &nodes {
        let _ = writeln!(
            out,
            "zvm_cluster_node_vms{{node=\"{}\"}} {}",
            escape(&n.info.id),
            n.info.running
        );
    }
    let _ = writeln!(
        out,
        "# HELP zvm_cluster_node_max_vms VMs each node runs at once.\n\
         # TYPE zvm_cluster_node_max_vms gauge"
    );
    for n in &nodes {
        let _ = writeln!(
            out,
            "zvm_cluster_node_max_vms{{node=\"{}\"}} {}",
            escape(&n.info.id),
            n.info.max_vms
        );
    }
    out
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, route: &str, method: &str, status: u16) {
        *self
            .lock()
            .requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
    }

    pub fn run(&self, state_kind: &str, took: Duration) {
        let mut c = self.lock();
        *c.runs.entry(state_kind.to_owned()).or_default() += 1;
        c.run_seconds_sum += took.as_secs_f64();
        c.run_count += 1;
    }

    pub fn rejected(&self) {
        self.lock().rejected += 1;
    }

    /// The Prometheus text format.
    pub fn render(&self, g: Gauges) -> String {
        let c = self.lock();
        let mut out = String::new();
        family(
            &mut out,
            "zvm_http_requests_total",
            "counter",
            "HTTP requests answered, by route, method and status.",
        );
        for ((route, method, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "zvm_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        family(
            &mut out,
            "zvm_vm_runs_total",
            "counter",
            "VM runs finished, by the state they ended in.",
        );
        for (state, n) in &c.runs {
            let _ = writeln!(out, "zvm_vm_runs_total{{state=\"{}\"}} {n}", escape(state));
        }
        family(
            &mut out,
            "zvm_vm_run_seconds",
            "summary",
            "Wall time of VM runs (load, run, commit), in seconds.",
        );
        let _ = writeln!(out, "zvm_vm_run_seconds_sum {}", c.run_seconds_sum);
        let _ = writeln!(out, "zvm_vm_run_seconds_count {}", c.run_count);
        for (name, kind, help, value) in [
            (
                "zvm_vm_rejected_total",
                "counter",
                "Runs refused with 503 because every VM was busy and the queue was full.",
                c.rejected as usize,
            ),
            (
                "zvm_vms_in_flight",
                "gauge",
                "VMs running now.",
                g.vms_in_flight,
            ),
            (
                "zvm_vms_max",
                "gauge",
                "VMs that may run at once (max_vms).",
                g.max_vms,
            ),
            (
                "zvm_queue_depth",
                "gauge",
                "Runs waiting for a VM now.",
                g.queue_depth,
            ),
            (
                "zvm_queue_capacity",
                "gauge",
                "Runs that may wait for a VM (queue).",
                g.queue_capacity,
            ),
            (
                "zvm_programs_cached",
                "gauge",
                "Compiled programs held in memory.",
                g.programs_cached,
            ),
        ] {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::default();
        m.request("/v1/run", "POST", 200);
        m.request("/v1/run", "POST", 200);
        m.run("out_of_fuel", Duration::from_millis(500));
        let text = m.render(Gauges {
            vms_in_flight: 1,
            max_vms: 2,
            queue_depth: 0,
            queue_capacity: 4,
            programs_cached: 3,
        });
        assert!(text.contains(
            "zvm_http_requests_total{route=\"/v1/run\",method=\"POST\",status=\"200\"} 2"
        ));
        assert!(text.contains("zvm_vm_runs_total{state=\"out_of_fuel\"} 1"));
        assert!(text.contains("zvm_vm_run_seconds_sum 0.5"));
        assert!(text.contains("zvm_vms_in_flight 1"));
        assert!(text.contains("# TYPE zvm_queue_depth gauge"));
    }
}
