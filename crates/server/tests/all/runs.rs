//! Runs: stdin to stdout, code to data with outputs that land only on success, reports on the
//! wire, hostile guests, overload and graceful shutdown.

use std::time::{Duration, Instant};

use crate::support::{TestServer, echo, etag, header, json, memory_bomb, spin, transform, wasm};

#[tokio::test]
async fn a_stored_program_turns_the_body_into_the_response() {
    let s = TestServer::start(|_| {}).await;
    s.put_object("bin", "echo.wasm", echo()).await;
    let input = "hello through a fresh VM\n".repeat(1000);
    let r = s.post("/v1/run?program=bin/echo.wasm", input.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    assert_eq!(header(&r, "x-zvm-exit-code"), "0");
    assert!(header(&r, "x-zvm-fuel-used").parse::<u64>().unwrap() > 0);
    assert_eq!(header(&r, "x-zvm-etag-stdin"), etag(input.as_bytes()));
    assert_eq!(header(&r, "x-zvm-etag-stdout"), etag(input.as_bytes()));
    assert_eq!(header(&r, "x-zvm-etag-stderr"), etag(b""));
    assert_eq!(r.text().await.unwrap(), input);

    // The full report instead of stdout.
    let r = s
        .post("/v1/run?program=bin/echo.wasm&report=json", "abc")
        .await;
    assert_eq!(r.status(), 200);
    let report = json(r).await;
    assert_eq!(report["state"]["kind"], "ok");
    assert_eq!(report["program"], "bin/echo.wasm");
    let stdout = report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "stdout")
        .unwrap();
    assert_eq!(stdout["write_bytes"], 3);
    assert_eq!(stdout["etag"], etag(b"abc"));

    // A program sent as the body (with empty stdin).
    let r = s.post("/v1/run", echo()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    assert!(r.bytes().await.unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn bad_runs_are_refused_with_the_field_at_fault() {
    let s = TestServer::start(|_| {}).await;
    s.put_object("bin", "junk.wasm", "not wasm at all").await;
    s.put_object("bin", "echo.wasm", echo()).await;
    let r = s.post("/v1/run?program=bin/missing.wasm", "").await;
    assert_eq!(r.status(), 404);
    let r = s
        .post("/v1/run?program=bin/echo.wasm&input=nobucket/x", "")
        .await;
    assert_eq!(r.status(), 404);
    let r = s
        .post("/v1/run?program=bin/echo.wasm&output=nobucket/x", "")
        .await;
    assert_eq!(r.status(), 404);
    let r = s.post("/v1/run?program=bin/junk.wasm", "").await;
    assert_eq!(r.status(), 422);
    assert!(json(r).await["error"].as_str().unwrap().contains("refused"));
    let r = s.post("/v1/run?program=bin/echo.wasm&colour=red", "").await;
    assert_eq!(r.status(), 400);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .starts_with("`colour`")
    );
    let r = s
        .post(
            &format!("/v1/run?program=bin/echo.wasm&fuel={}", u64::MAX),
            "",
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = s.post("/v1/run", "").await;
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn code_goes_to_the_data_and_outputs_land_only_on_success() {
    let s = TestServer::start(|_| {}).await;
    s.put_object("bin", "transform.wasm", transform()).await;
    let data = "a large input object\n".repeat(10_000);
    s.put_object("data", "in.txt", data.clone()).await;
    s.put("/v1/buckets/results", "").await;

    let r = s
        .post(
            "/v1/run?program=bin/transform.wasm&input=data/in.txt&output=results/out.txt",
            "",
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    assert_eq!(header(&r, "x-zvm-etag-input"), etag(data.as_bytes()));
    assert_eq!(header(&r, "x-zvm-etag-output"), etag(data.as_bytes()));
    assert_eq!(r.text().await.unwrap(), "done");
    let r = s.get("/v1/objects/results/out.txt").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), format!("\"{}\"", etag(data.as_bytes())));
    assert_eq!(r.text().await.unwrap(), data);

    // The guest writes its whole output, then fails: nothing lands.
    let r = s
        .post(
            "/v1/run?program=bin/transform.wasm&input=data/in.txt&output=results/failed.txt",
            "f",
        )
        .await;
    assert_eq!(r.status(), 500);
    assert_eq!(header(&r, "x-zvm-state"), "exited");
    assert_eq!(header(&r, "x-zvm-exit-code"), "1");
    assert_eq!(header(&r, "x-zvm-committed"), "false");
    assert_eq!(header(&r, "x-zvm-etag-output"), etag(data.as_bytes()));
    assert_eq!(s.get("/v1/objects/results/failed.txt").await.status(), 404);
    // ...and an existing object is not replaced by a failed run's output.
    let r = s
        .post(
            "/v1/run?program=bin/transform.wasm&input=data/in.txt&output=results/out.txt",
            "f",
        )
        .await;
    assert_eq!(r.status(), 500);
    let listing = json(s.get("/v1/objects/results").await).await;
    assert_eq!(listing["objects"].as_array().unwrap().len(), 1);

    // A named channel: the guest reads `/dev/input`, so binding the object elsewhere leaves
    // its input empty.
    let r = s
        .post("/v1/run?program=bin/transform.wasm&input=other:data/in.txt&output=results/empty.txt&report=json", "")
        .await;
    let report = json(r).await;
    assert_eq!(report["state"]["kind"], "ok");
    let names: Vec<_> = report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"other".to_owned()), "{names:?}");
    assert_eq!(
        s.get("/v1/objects/results/empty.txt")
            .await
            .bytes()
            .await
            .unwrap()
            .len(),
        0
    );
    s.stop().await;
}

#[tokio::test]
async fn hostile_guests_end_as_reports_while_others_are_served() {
    let s = TestServer::start(|c| c.max_vms = 2).await;
    s.put_object("bin", "spin.wasm", spin()).await;
    s.put_object("bin", "bomb.wasm", memory_bomb()).await;
    s.put_object("bin", "echo.wasm", echo()).await;

    let looping = {
        let (client, url) = (
            s.client.clone(),
            s.url("/v1/run?program=bin/spin.wasm&fuel=2000000000"),
        );
        tokio::spawn(async move { client.post(url).send().await.unwrap() })
    };
    // While one VM spins, the other serves requests.
    let started = Instant::now();
    let mut served = 0;
    while !looping.is_finished() || served < 5 {
        let r = s.post("/v1/run?program=bin/echo.wasm", "still here").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "still here");
        served += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the loop never ended"
        );
    }
    let r = looping.await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(header(&r, "x-zvm-state"), "out_of_fuel");
    assert_eq!(header(&r, "x-zvm-fuel-used"), "2000000000");

    let r = s
        .post("/v1/run?program=bin/bomb.wasm&memory=16MiB", "")
        .await;
    assert_eq!(r.status(), 500);
    assert_eq!(header(&r, "x-zvm-state"), "memory_limit");
    assert!(header(&r, "x-zvm-peak-memory").parse::<u64>().unwrap() <= 16 << 20);

    // A wall-clock limit for a guest with fuel to spare.
    drop(s);
    let s = TestServer::start(|c| c.request_timeout = Duration::from_millis(300)).await;
    s.put_object("bin", "spin.wasm", spin()).await;
    let r = s.post("/v1/run?program=bin/spin.wasm", "").await;
    assert_eq!(header(&r, "x-zvm-state"), "timed_out");
    let text = s.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("zvm_vm_runs_total{state=\"timed_out\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn beyond_the_queue_the_answer_is_503_with_retry_after() {
    let s = TestServer::start(|c| {
        c.max_vms = 1;
        c.queue = 0;
    })
    .await;
    s.put_object("bin", "spin.wasm", spin()).await;
    s.put_object("bin", "echo.wasm", echo()).await;
    let looping = {
        let (client, url) = (
            s.client.clone(),
            s.url("/v1/run?program=bin/spin.wasm&fuel=3000000000"),
        );
        tokio::spawn(async move { client.post(url).send().await.unwrap() })
    };
    wait_for_metric(&s, "zvm_vms_in_flight 1").await;
    let r = s.post("/v1/run?program=bin/echo.wasm", "x").await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), "1");
    assert!(json(r).await["error"].as_str().unwrap().contains("busy"));
    // Objects are still served.
    assert_eq!(s.get("/v1/objects/bin/echo.wasm").await.status(), 200);
    assert_eq!(
        header(&looping.await.unwrap(), "x-zvm-state"),
        "out_of_fuel"
    );
    let r = s.post("/v1/run?program=bin/echo.wasm", "x").await;
    assert_eq!(r.status(), 200);
    let text = s.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("zvm_vm_rejected_total 1"), "{text}");

    // With a queue, a request waits for the VM rather than being refused.
    drop(s);
    let s = TestServer::start(|c| {
        c.max_vms = 1;
        c.queue = 4;
    })
    .await;
    s.put_object("bin", "spin.wasm", spin()).await;
    s.put_object("bin", "echo.wasm", echo()).await;
    let looping = {
        let (client, url) = (
            s.client.clone(),
            s.url("/v1/run?program=bin/spin.wasm&fuel=1000000000"),
        );
        tokio::spawn(async move { client.post(url).send().await.unwrap() })
    };
    wait_for_metric(&s, "zvm_vms_in_flight 1").await;
    let r = s.post("/v1/run?program=bin/echo.wasm", "queued").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "queued");
    assert!(looping.is_finished());
}

#[tokio::test]
async fn shutdown_finishes_runs_in_flight_and_lands_their_outputs() {
    let mut s = TestServer::start(|_| {}).await;
    // Spins for a while, then copies its input to its output.
    let slow = wasm(
        r#"(module
        (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 120) "dev/output")
        (func (export "_start") (local $i i64)
            (loop $l
                (local.set $i (i64.add (local.get $i) (i64.const 1)))
                (br_if $l (i64.lt_u (local.get $i) (i64.const 200000000))))
            (drop (call $open (i32.const 3) (i32.const 0) (i32.const 120) (i32.const 10)
                (i32.const 0) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 204)))
            (i32.store (i32.const 0) (i32.const 140))
            (i32.store (i32.const 4) (i32.const 10))
            (drop (call $write (i32.load (i32.const 204)) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    );
    s.put_object("bin", "slow.wasm", slow).await;
    s.put("/v1/buckets/out", "").await;
    let run = {
        let (client, url) = (
            s.client.clone(),
            s.url("/v1/run?program=bin/slow.wasm&output=out/result"),
        );
        tokio::spawn(async move { client.post(url).send().await.unwrap() })
    };
    wait_for_metric(&s, "zvm_vms_in_flight 1").await;
    let stopping = s.begin_stop();
    let r = run.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    stopping.await.unwrap().unwrap();
    // The server is gone; its output is in the store.
    assert!(s.client.get(s.url("/healthz")).send().await.is_err());
    let store = zvm_store::ObjectStore::open(s.dir.path().join("data/store")).unwrap();
    assert_eq!(store.head("out", "result").unwrap().size, 10);
}

/// Polls `/metrics` until it has `line`.
async fn wait_for_metric(s: &TestServer, line: &str) {
    let started = Instant::now();
    loop {
        let text = s.get("/metrics").await.text().await.unwrap();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never saw `{line}`"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
