//! Simulated hosts: one network namespace each, joined by a bridge in the root namespace.
//!
//! ```text
//!   root namespace                          host i (namespace zvm<pid>h<i>)
//!   bridge zvm<pid>br 10.a.b.254/24 ── zvm<pid>v<i> ═veth═ eth0 10.a.b.<i+1>/24, lo
//!                                                           default via 10.a.b.254
//! ```
//!
//! The bridge lets the root namespace reach every host and the hosts reach each other; the
//! servers the hosts share (NATS, the SeaweedFS master and filer) run in the root namespace
//! on the bridge's address. [`Hosts::cut`] downs the bridge's end of a host's veth: the host
//! keeps its address and its processes, but reaches nobody and nobody reaches it, as when a
//! machine's cable is pulled.
//!
//! Names carry this process's id, so that concurrent test processes do not collide and the
//! leftovers of a killed one can be told apart ([`Hosts::cleanup_stale`]); within a process,
//! one `Hosts` exists at a time (a second [`Hosts::create`] waits for the first to be
//! dropped), which also keeps the cluster tests of one test binary from running their
//! clusters side by side on a small machine.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::SKIP_VAR;

/// The most hosts: their addresses are `.1` to `.MAX_HOSTS` of the /24, below the bridge's
/// `.254`.
const MAX_HOSTS: usize = 200;
/// How long the connectivity check at creation waits for one connection; the network is
/// one bridge on one machine, so anything slower is a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `Drop` waits for the processes it killed in a namespace to be gone, so that
/// deleting the namespace frees its links at once.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The bridge netfilter switch that, when `1` and a firewall drops forwarded packets, keeps
/// the hosts from talking to each other across the bridge.
const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// One `Hosts` per process at a time (names are per process).
static TURN: Mutex<()> = Mutex::new(());

/// N simulated hosts as network namespaces on one bridge; everything is deleted on drop.
#[derive(Debug)]
pub struct Hosts {
    /// `zvm<pid>`: the start of every name this value creates.
    tag: String,
    /// The second and third bytes of the hosts' `10.x.y.0/24`.
    net: [u8; 2],
    /// The namespaces made so far (all of them once [`Hosts::create`] returns).
    namespaces: Vec<String>,
    /// The bridge, once made.
    bridge: Option<String>,
    _turn: MutexGuard<'static, ()>,
}

impl Hosts {
    /// Creates `n` hosts (see the module doc). `Err` says why namespaces are not possible
    /// here (not root, no `ip`, `ip netns add` refused, no free /24, no connectivity), after
    /// undoing whatever was made. Removes the leftovers of dead test processes first.
    pub fn create(n: usize) -> Result<Hosts, String> {
        if n == 0 || n > MAX_HOSTS {
            return Err(format!("{n} hosts asked: 1 to {MAX_HOSTS} are possible"));
        }
        let uid = rustix::process::geteuid();
        if !uid.is_root() {
            return Err(format!(
                "network namespaces need root (this process runs as uid {})",
                uid.as_raw()
            ));
        }
        if let Err(e) = Command::new("ip").arg("-V").output() {
            return Err(format!("`ip` (iproute2) cannot be run: {e}"));
        }
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for removed in Hosts::cleanup_stale() {
            eprintln!("zvm test hosts: removed {removed}, left by a dead test process");
        }
        let pid = std::process::id();
        let routes = ip(&["-4", "route", "show", "table", "all"])?;
        let net = pick_net(pid, &routes)
            .ok_or_else(|| "no free 10.x.y.0/24 for the test hosts in `ip -4 route`".to_string())?;
        let mut hosts = Hosts {
            tag: format!("zvm{pid}"),
            net,
            namespaces: Vec::new(),
            bridge: None,
            _turn: turn,
        };
        hosts.build(n)?;
        hosts.verify()?;
        Ok(hosts)
    }

    /// [`Hosts::create`] for tests: `None`, after saying why on stderr, when namespaces are
    /// not possible and [`SKIP_VAR`] is `1`; a panic with the reason otherwise.
    pub fn create_or_skip(n: usize) -> Option<Hosts> {
        match Hosts::create(n) {
            Ok(hosts) => Some(hosts),
            Err(why) if super::skipping() => {
                eprintln!(
                    "{SKIP_VAR}=1 and network namespaces are not possible ({why}): skipping a cluster test"
                );
                None
            }
            Err(why) => panic!(
                "the cluster tests need network namespaces (root and a working `ip netns`): \
                 {why}; set {SKIP_VAR}=1 to skip them where that is not possible"
            ),
        }
    }

    /// The bridge, the veth pairs and the namespaces, each added to `self` as soon as it
    /// exists so that `Drop` undoes a half-built set.
    fn build(&mut self, n: usize) -> Result<(), String> {
        let bridge = format!("{}br", self.tag);
        ip(&["link", "add", "name", &bridge, "type", "bridge"])?;
        self.bridge = Some(bridge.clone());
        let gateway = format!("{}/24", self.gateway());
        ip(&["addr", "add", &gateway, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = format!("{}h{i}", self.tag);
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let veth = self.veth(i);
            // The host's end is made inside its namespace, named as a machine's NIC would be.
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            let address = format!("{}/24", self.ip(i));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let gateway = self.gateway().to_string();
            ip(&["-n", &ns, "route", "add", "default", "via", &gateway])?;
        }
        Ok(())
    }

    /// Checks that the root namespace reaches every host, every host the root namespace and
    /// each host the next one, with real TCP connections.
    fn verify(&self) -> Result<(), String> {
        let hint = || match std::fs::read_to_string(BRIDGE_NF) {
            Ok(v) if v.trim() == "1" => format!(
                " ({BRIDGE_NF} is 1: if a firewall drops forwarded packets, \
                 `sysctl net.bridge.bridge-nf-call-iptables=0` lets bridged traffic through)"
            ),
            _ => String::new(),
        };
        let root = TcpListener::bind((self.gateway(), 0))
            .map_err(|e| format!("listening on the bridge address {}: {e}", self.gateway()))?;
        let root_addr = root.local_addr().map_err(|e| e.to_string())?;
        for i in 0..self.len() {
            self.connect(i, root_addr, CONNECT_TIMEOUT)
                .map_err(|e| format!("host {i} cannot reach {root_addr}: {e}{}", hint()))?;
            let ip = self.ip(i);
            let listener = self
                .run_in(i, || TcpListener::bind((ip, 0)))
                .and_then(|bound| bound)
                .map_err(|e| format!("listening in host {i}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| {
                format!(
                    "the root namespace cannot reach host {i} at {addr}: {e}{}",
                    hint()
                )
            })?;
            let j = (i + 1) % self.len();
            if j != i {
                self.connect(j, addr, CONNECT_TIMEOUT).map_err(|e| {
                    format!("host {j} cannot reach host {i} at {addr}: {e}{}", hint())
                })?;
            }
        }
        Ok(())
    }

    /// How many hosts there are.
    pub fn len(&self) -> usize {
        self.namespaces.len()
    }

    /// Whether there are none (never, once created).
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// Host `i`'s address, `10.x.y.<i+1>`.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        let last = u8::try_from(i + 1).expect("at most MAX_HOSTS hosts");
        Ipv4Addr::new(10, self.net[0], self.net[1], last)
    }

    /// The bridge's address in the root namespace, `10.x.y.254`: every host's default route,
    /// and where the servers the hosts share listen.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net[0], self.net[1], 254)
    }

    /// Host `i`'s network namespace (`zvm<pid>h<i>`).
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// The command prefix that runs a program inside host `i`: `ip netns exec <namespace>`.
    pub fn prefix(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec", self.namespace(i)]
            .map(String::from)
            .to_vec()
    }

    /// A command running `program` inside host `i` (`ip netns exec <namespace> <program>`;
    /// `ip` execs the program, so the child's pid is the program's).
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.namespace(i)])
            .arg(program);
        command
    }

    /// Runs `f` on a thread that has entered host `i`'s network namespace: sockets it creates
    /// belong to the host (and stay there when handed back).
    pub fn run_in<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
        let path = format!("/run/netns/{}", self.namespace(i));
        let ns = File::open(&path)?;
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                Ok(f())
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A TCP connection to `addr` from inside host `i`.
    pub fn connect(
        &self,
        i: usize,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<TcpStream> {
        self.run_in(i, || TcpStream::connect_timeout(&addr, timeout))?
    }

    /// Cuts host `i` off: the bridge's end of its link goes down, so the host loses every
    /// connection (to the root namespace and to every other host) while its processes run on.
    /// Panics if `ip` fails.
    pub fn cut(&self, i: usize) {
        let veth = self.veth(i);
        ip(&["link", "set", &veth, "down"]).unwrap_or_else(|e| panic!("cutting host {i}: {e}"));
    }

    /// Undoes [`Hosts::cut`]. Panics if `ip` fails.
    pub fn restore(&self, i: usize) {
        let veth = self.veth(i);
        ip(&["link", "set", &veth, "up"]).unwrap_or_else(|e| panic!("restoring host {i}: {e}"));
    }

    /// The bridge's end of host `i`'s veth pair.
    fn veth(&self, i: usize) -> String {
        format!("{}v{i}", self.tag)
    }

    /// Removes the namespaces and links that test processes no longer running left behind
    /// (a test killed by a timeout does not drop its `Hosts`), killing what still runs in
    /// those namespaces, and the servers they started elsewhere ([`super::kill_orphans`]).
    /// Returns what was removed.
    pub fn cleanup_stale() -> Vec<String> {
        let mut removed = super::kill_orphans();
        let dead = |name: &str| owner_pid(name).is_some_and(|pid| !super::process_alive(pid));
        if let Ok(list) = ip(&["netns", "list"]) {
            for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
                if dead(name) {
                    delete_namespace(name);
                    removed.push(format!("namespace `{name}`"));
                }
            }
        }
        if let Ok(list) = ip(&["-o", "link", "show"]) {
            for name in list.lines().filter_map(link_name) {
                if dead(name) && ip(&["link", "del", name]).is_ok() {
                    removed.push(format!("link `{name}`"));
                }
            }
        }
        removed
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            delete_namespace(ns);
        }
        // Deleting a namespace destroys its end of the veth and so the pair, unless a process
        // survived the kill and keeps the namespace alive: then the pair goes here.
        for i in 0..self.namespaces.len() {
            let _ = ip(&["link", "del", &self.veth(i)]);
        }
        if let Some(bridge) = &self.bridge {
            let _ = ip(&["link", "del", bridge]);
        }
    }
}

/// Kills every process in namespace `ns`, waits until they are gone, and deletes it.
fn delete_namespace(ns: &str) {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let pids: Vec<i32> = ip(&["netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ip(&["netns", "del", ns]);
}

/// Runs `ip <args>`; its stdout, or what went wrong with its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    if !output.status.success() {
        return Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The pid in a name this module makes (`zvm<pid>br`, `zvm<pid>h<i>`, `zvm<pid>v<i>`);
/// `None` for any other name.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("zvm")?;
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let (pid, kind) = rest.split_at(digits);
    let index_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let ours = kind == "br"
        || kind.strip_prefix('h').is_some_and(index_ok)
        || kind.strip_prefix('v').is_some_and(index_ok);
    if ours { pid.parse().ok() } else { None }
}

/// The interface name in a line of `ip -o link show` (`7: zvm12v0@if2: <...> ...`).
fn link_name(line: &str) -> Option<&str> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next().unwrap_or(name))
}

/// A `10.x.y.0/24` derived from `pid` that overlaps no route of `routes` (`ip -4 route show
/// table all`); the next ones when it does.
fn pick_net(pid: u32, routes: &str) -> Option<[u8; 2]> {
    let taken: Vec<(u32, u32)> = routes.lines().filter_map(route_prefix).collect();
    (0..4096u32).find_map(|k| {
        let c = pid.wrapping_add(k);
        // 10.64.0.0 to 10.191.255.0: away from the 10.0.x.y nets that are most often in use.
        let net = [64 + ((c >> 8) % 128) as u8, (c & 0xff) as u8];
        let ours = u32::from(Ipv4Addr::new(10, net[0], net[1], 0));
        let free = taken.iter().all(|&(addr, len)| {
            let len = len.min(24);
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            ours & mask != addr & mask
        });
        free.then_some(net)
    })
}

/// The destination of a line of `ip -4 route` as (address, prefix length); `None` for the
/// default route (it overlaps everything and is no address in use) and for what is not a
/// route.
fn route_prefix(line: &str) -> Option<(u32, u32)> {
    const TYPES: [&str; 10] = [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "throw",
        "unreachable",
        "prohibit",
        "blackhole",
        "nat",
        "anycast",
    ];
    let mut words = line.split_whitespace();
    let mut dst = words.next()?;
    if TYPES.contains(&dst) {
        dst = words.next()?;
    }
    let (addr, len) = match dst.split_once('/') {
        Some((addr, len)) => (addr, len.parse().ok()?),
        None => (dst, 32),
    };
    let addr: Ipv4Addr = addr.parse().ok()?;
    (len > 0 && len <= 32).then_some((u32::from(addr), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_our_names() {
        assert_eq!(owner_pid("zvm123br"), Some(123));
        assert_eq!(owner_pid("zvm123h0"), Some(123));
        assert_eq!(owner_pid("zvm4194304v17"), Some(4194304));
        for other in [
            "zvm123", "zvm123h", "zvm123x0", "zvmbr", "eth0", "zvm12h3b", "xzvm1br",
        ] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }

    #[test]
    fn link_names_from_ip_o_link() {
        assert_eq!(
            link_name("7: zvm12v0@if2: <BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue"),
            Some("zvm12v0")
        );
        assert_eq!(
            link_name("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536"),
            Some("lo")
        );
        assert_eq!(link_name("garbage"), None);
    }

    #[test]
    fn route_prefixes() {
        let p = |s: &str| route_prefix(s).map(|(a, l)| (Ipv4Addr::from(a), l));
        assert_eq!(p("default via 192.0.2.1 dev eth0"), None);
        assert_eq!(
            p("10.64.1.0/24 dev br0 proto kernel scope link src 10.64.1.254"),
            Some((Ipv4Addr::new(10, 64, 1, 0), 24))
        );
        assert_eq!(
            p("local 10.64.1.254 dev br0 table local proto kernel scope host"),
            Some((Ipv4Addr::new(10, 64, 1, 254), 32))
        );
        assert_eq!(
            p("unreachable 10.0.0.0/8"),
            Some((Ipv4Addr::new(10, 0, 0, 0), 8))
        );
        assert_eq!(p(""), None);
    }

    #[test]
    fn the_net_avoids_routes_in_use() {
        // pid 0x0105: 10.65.5.0/24 first.
        assert_eq!(pick_net(0x0105, ""), Some([65, 5]));
        assert_eq!(pick_net(0x0105, "10.65.5.0/24 dev x"), Some([65, 6]));
        assert_eq!(
            pick_net(0x0105, "local 10.65.5.7 dev x\n10.65.6.0/23 dev y"),
            Some([65, 8])
        );
        // A /8 over all of 10/8 leaves nothing.
        assert_eq!(pick_net(0x0105, "10.0.0.0/8 dev x"), None);
    }
}
