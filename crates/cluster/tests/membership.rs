//! Membership and the data plane against a real NATS server: nodes hear each other, a node
//! that stops beating is lost after the timeout, a node that leaves is gone at once; a pipe
//! crosses two data planes whole (in either order of connection and registration), and a
//! cancelled attempt fails its waiting pipe rather than leaving its reader hanging; a node
//! heard of but not yet listening is asked again until it listens or is no longer heard of;
//! a job-record write whose answer was lost is found done, and one beaten is not.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zvm_channel::{EndOfStream, PipeError};
use zvm_cluster::testing::NatsCluster;
use zvm_cluster::{Cluster, ClusterConfig, DataPlane};

fn config(nats: &NatsCluster, node: &str) -> ClusterConfig {
    ClusterConfig {
        nats: nats.urls(),
        node: node.into(),
        http: format!("http://{node}.invalid:8080"),
        data: format!("{node}.invalid:7000"),
        volume: Some(format!("{node}.invalid:8081")),
        max_vms: 4,
        heartbeat: Duration::from_millis(200),
        node_timeout: Duration::from_millis(800),
        replicas: 1,
    }
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_hear_each_other_and_lose_the_silent_ones() {
    let Some(nats) = NatsCluster::start(&[Ipv4Addr::LOCALHOST]) else {
        return;
    };
    let load_a: zvm_cluster::membership::LoadFn = Arc::new(|| 3);
    let a = Cluster::join(config(&nats, "a"), load_a)
        .await
        .expect("a joins");
    let b = Cluster::join(config(&nats, "b"), Arc::new(|| 0))
        .await
        .expect("b joins");
    let c = Cluster::join(config(&nats, "c"), Arc::new(|| 1))
        .await
        .expect("c joins");
    until("b hears a and c", || b.alive().len() == 3).await;
    let seen = b.node("a").expect("a heard of");
    assert_eq!(seen.running, 3, "the load travels in the heartbeat");
    assert_eq!(seen.volume.as_deref(), Some("a.invalid:8081"));
    assert_eq!(b.nodes()[0].info.id, "b", "this node comes first");

    // A node that leaves says so: gone at once, not after the timeout.
    c.leave().await;
    until("b forgets c", || b.node("c").is_none()).await;

    // A node that stops beating (its process gone) is lost after the timeout.
    drop(a);
    let t = Instant::now();
    until("b loses a", || !b.is_alive("a")).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(b.nodes().iter().any(|n| n.info.id == "a" && !n.alive));

    // Bad ids are refused before connecting.
    let e = Cluster::join(config(&nats, "Bad_Id"), Arc::new(|| 0))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("Bad_Id"), "{e}");
}

/// `asker` asks `node` on `test.<node>` (10 s at most, again every 0.1 s): the answer, and
/// how long it took.
async fn ask(asker: &Cluster, node: &str) -> (Result<async_nats::Message, String>, Duration) {
    let t = Instant::now();
    let answer = asker
        .ask(
            node,
            format!("test.{node}"),
            "?".into(),
            Duration::from_secs(10),
            Duration::from_millis(100),
        )
        .await;
    (answer, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_heard_of_but_not_yet_listening_is_asked_again() {
    let Some(nats) = NatsCluster::start(&[Ipv4Addr::LOCALHOST]) else {
        return;
    };
    let asker = Cluster::join(config(&nats, "asker"), Arc::new(|| 0))
        .await
        .expect("asker joins");
    // "late" is heard of (it beats) but subscribes only after a second, as a node restarted
    // under its id is heard of by its predecessor's heartbeats before it listens.
    let late = Cluster::join(config(&nats, "late"), Arc::new(|| 0))
        .await
        .expect("late joins");
    until("asker hears late", || asker.is_alive("late")).await;
    let listener = late.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut sub = listener.client().subscribe("test.late").await.unwrap();
        listener.client().flush().await.unwrap();
        while let Some(m) = futures_util::StreamExt::next(&mut sub).await {
            let reply = m.reply.expect("a request");
            listener
                .client()
                .publish(reply, "yes".into())
                .await
                .unwrap();
        }
    });
    let (answer, took) = ask(&asker, "late").await;
    assert_eq!(&answer.expect("asked until it listens").payload[..], b"yes");
    assert!(took >= Duration::from_millis(900), "{took:?}");

    // A node that never listens is given up on once it is no longer heard of, well before
    // the time is up.
    let silent = Cluster::join(config(&nats, "silent"), Arc::new(|| 0))
        .await
        .expect("silent joins");
    until("asker hears silent", || asker.is_alive("silent")).await;
    drop(silent);
    let (answer, took) = ask(&asker, "silent").await;
    let e = answer.unwrap_err();
    assert!(e.contains("not listening"), "{e}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Nobody of that name at all: no waiting.
    let (answer, took) = ask(&asker, "nobody").await;
    let e = answer.unwrap_err();
    assert!(e.contains("not listening"), "{e}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_write_whose_answer_was_lost_is_found_done() {
    let Some(nats) = NatsCluster::start(&[Ipv4Addr::LOCALHOST]) else {
        return;
    };
    let a = Cluster::join(config(&nats, "a"), Arc::new(|| 0))
        .await
        .expect("a joins");
    let jobs = a.jobs();
    // A create whose answer was lost: tried again, the key exists; it holds these bytes.
    let first = jobs.create("cj-1", "mine".into()).await.unwrap();
    let again = jobs.create("cj-1", "mine".into()).await.unwrap_err();
    assert_eq!(
        again.kind(),
        async_nats::jetstream::kv::CreateErrorKind::AlreadyExists
    );
    assert_eq!(a.record_written("cj-1", b"mine").await, Some(first));
    // Someone else's record is not taken for this one.
    assert_eq!(a.record_written("cj-1", b"yours").await, None);
    assert_eq!(a.record_written("cj-2", b"mine").await, None);
    // A compare-and-set whose answer was lost: tried again, the revision moved on.
    let second = jobs.update("cj-1", "mine, 2".into(), first).await.unwrap();
    assert!(jobs.update("cj-1", "mine, 2".into(), first).await.is_err());
    assert_eq!(a.record_written("cj-1", b"mine, 2").await, Some(second));
    // One beaten by another writer is not done.
    jobs.update("cj-1", "theirs".into(), second).await.unwrap();
    assert_eq!(a.record_written("cj-1", b"mine, 2").await, None);
    // A deleted record holds nothing.
    jobs.delete("cj-1").await.unwrap();
    assert_eq!(a.record_written("cj-1", b"theirs").await, None);
}

/// Reads everything from a pipe reader (waiting as needed), and how it ended.
async fn drain(r: zvm_channel::PipeReader) -> (Vec<u8>, Result<(), String>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match r.try_read(&mut buf) {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(PipeError::WouldBlock(w)) => w.await,
            Err(PipeError::WriterFailed(why)) => return (out, Err(why)),
            Err(PipeError::Broken) => return (out, Err("broken".into())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_cross_data_planes_whole_and_cancelled_ones_fail() {
    let a = DataPlane::bind("127.0.0.1:0", None).await.unwrap();
    let b = DataPlane::bind("127.0.0.1:0", None).await.unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();

    // Registered first, connected second.
    let (w_remote, r_local) = zvm_channel::pipe::pipe();
    b.expect("job.a1", 0, w_remote);
    let (w, r) = zvm_channel::pipe::pipe();
    a.send("job.a1", 0, b.addr(), r);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = w.write_blocking(rest).unwrap();
                rest = &rest[n..];
            }
            w.finish(EndOfStream::Clean);
        })
    };
    let (got, end) = drain(r_local).await;
    writer.join().unwrap();
    assert_eq!(end, Ok(()));
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes differ");

    // Connected first, registered second.
    let (w, r) = zvm_channel::pipe::pipe();
    a.send("job.a1", 1, b.addr(), r);
    w.write_blocking(b"late registration").unwrap();
    w.finish(EndOfStream::Clean);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (w_remote, r_local) = zvm_channel::pipe::pipe();
    b.expect("job.a1", 1, w_remote);
    assert_eq!(
        drain(r_local).await,
        (b"late registration".to_vec(), Ok(()))
    );

    // A writer that fails is a failed stream at the reader.
    let (w_remote, r_local) = zvm_channel::pipe::pipe();
    b.expect("job.a1", 2, w_remote);
    let (w, r) = zvm_channel::pipe::pipe();
    a.send("job.a1", 2, b.addr(), r);
    w.write_blocking(b"half").unwrap();
    w.finish(EndOfStream::Failed("member trapped".into()));
    let (got, end) = drain(r_local).await;
    assert_eq!(got, b"half");
    assert!(end.unwrap_err().contains("member trapped"));

    // A pipe whose writer never connects fails when its attempt is called off.
    let (w_remote, r_local) = zvm_channel::pipe::pipe();
    b.expect("job.a2", 0, w_remote);
    let reader = tokio::spawn(drain(r_local));
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.cancel("job.a2");
    let (got, end) = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the reader was released")
        .unwrap();
    assert!(got.is_empty());
    assert!(end.unwrap_err().contains("called off"));
}
