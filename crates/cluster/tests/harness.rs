//! The test harness itself, tested: three hosts as network namespaces, a NATS cluster on
//! their gateway, SeaweedFS with a volume server inside each host. What the cluster's tests
//! rely on is checked here for real: hosts reach the shared servers, objects spread over the
//! volume servers, the NATS cluster survives losing a server, and a cut host reaches nobody
//! until it is restored.
//!
//! Needs root, `ip netns`, `nats-server` and `weed`; with `ZVM_SKIP_CLUSTER=1` a missing one
//! skips the test (saying so), otherwise it fails with the reason.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use zvm_cluster::testing::{Hosts, NatsCluster, SeaweedCluster};

/// Objects written through S3: enough that a volume server left without any would mean
/// writes do not spread (with two writable volumes per server, each write picks one of six).
const OBJECTS: usize = 48;
/// How long the master may take to learn of new files: volume servers report by heartbeat.
const HEARTBEAT_WAIT: Duration = Duration::from_secs(30);
/// How long a connection attempt may take on the test bridge.
const CONNECT: Duration = Duration::from_secs(2);

#[test]
fn three_hosts_with_nats_and_seaweedfs() {
    let Some(hosts) = Hosts::create_or_skip(3) else {
        return;
    };
    let gateway = hosts.gateway();
    let Some(mut nats) = NatsCluster::start(&[gateway; 3]) else {
        return;
    };
    let volume_hosts = (0..hosts.len())
        .map(|i| (hosts.ip(i), Some(hosts.prefix(i))))
        .collect();
    let Some(weed) = SeaweedCluster::start(gateway, volume_hosts) else {
        return;
    };

    // The master names each volume server by its host's address.
    for i in 0..hosts.len() {
        let url = weed.volume_url(i);
        assert_eq!(url, weed.volume_addr(i).to_string());
        assert!(url.starts_with(&format!("{}:", hosts.ip(i))), "{url}");
    }

    // A program run in host 1 sees the host's network only.
    let out = hosts
        .command(1, "ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("running `ip` in host 1");
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(addrs.contains(&format!("{}/24", hosts.ip(1))), "{addrs}");
    assert!(!addrs.contains(&gateway.to_string()), "{addrs}");

    // From inside host 1: the S3 gateway answers HTTP, and NATS speaks its protocol.
    let s3 = endpoint_addr(&weed.s3_endpoint);
    let answer = http_head_line(hosts.connect(1, s3, CONNECT).expect("host 1 to S3"));
    assert!(
        answer.starts_with("HTTP/1."),
        "S3 answered host 1 with {answer:?}"
    );
    let mut conn = hosts
        .connect(1, endpoint_addr(&nats.url(2)), CONNECT)
        .expect("host 1 to NATS");
    conn.set_read_timeout(Some(CONNECT)).unwrap();
    let mut greeting = [0u8; 4];
    conn.read_exact(&mut greeting).expect("NATS's INFO line");
    assert_eq!(&greeting, b"INFO");

    // Objects written through the S3 gateway land on every volume server.
    let store = zvm_store::S3Store::open(&weed.s3_config("harness")).expect("opening the store");
    store.create_bucket("data").expect("a zvm bucket");
    for i in 0..OBJECTS {
        let body = vec![i as u8; 16 * 1024];
        store
            .put(
                "data",
                &format!("object-{i:03}"),
                &body[..],
                Default::default(),
            )
            .expect("putting an object");
    }
    let mut read = Vec::new();
    store
        .get("data", "object-007", None)
        .expect("getting an object")
        .body
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, vec![7u8; 16 * 1024]);
    let deadline = Instant::now() + HEARTBEAT_WAIT;
    let counts = loop {
        let counts = weed.file_counts().expect("the master's /vol/status");
        let total: u64 = counts.iter().sum();
        if (counts.iter().all(|&c| c > 0) && total >= OBJECTS as u64) || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        counts.iter().all(|&c| c > 0),
        "files per volume server {counts:?}: writes did not spread; logs:\n{}",
        weed.logs()
    );

    // One NATS server dies: the other two stay healthy and agree on a meta leader.
    nats.kill(0);
    for i in 1..3 {
        nats.healthz(i)
            .unwrap_or_else(|e| panic!("NATS server {i} after a kill: {e}"));
    }
    nats.wait_ready();
    let leader = nats.meta_leader(1).unwrap().expect("a meta leader");
    assert_ne!(leader, nats.name(0), "the dead server still leads");
    nats.start_again(0);
    nats.healthz(0).expect("the restarted NATS server");

    // Host 2 is cut off: it reaches neither the gateway nor another host, and nobody reaches
    // it; restored, it reaches them again.
    hosts.cut(2);
    assert!(
        hosts.connect(2, s3, CONNECT).is_err(),
        "a cut host reached S3"
    );
    assert!(
        TcpStream::connect_timeout(&weed.volume_addr(2), CONNECT).is_err(),
        "the cut host's volume server was reached"
    );
    assert!(
        hosts.connect(0, weed.volume_addr(2), CONNECT).is_err(),
        "host 0 reached host 2"
    );
    assert!(
        hosts.connect(1, s3, CONNECT).is_ok(),
        "host 1 lost S3 when host 2 was cut"
    );
    hosts.restore(2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match hosts.connect(2, s3, CONNECT) {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("restored host 2 cannot reach S3: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    TcpStream::connect_timeout(&weed.volume_addr(2), CONNECT).expect("host 2's volume server");
}

/// The address of `scheme://ip:port`.
fn endpoint_addr(url: &str) -> SocketAddr {
    let (_, rest) = url.split_once("://").expect("a URL");
    rest.trim_end_matches('/').parse().expect("ip:port")
}

/// Sends `GET /` and returns the first line of the answer.
fn http_head_line(mut stream: TcpStream) -> String {
    stream.set_read_timeout(Some(CONNECT)).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or("").to_string()
}
