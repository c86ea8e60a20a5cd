//! Jobs over HTTP, and deferred execution: objects as programs, inputs and outputs, all
//! outputs landing only if every member succeeds, host paths refused, the 202 / status /
//! result / delete lifecycle.

use std::time::{Duration, Instant};

use crate::guests::fail;
use crate::support::{TestServer, header, json, spin, transform};

const JOB: &str = r#"version = 1
name = "copy"

[[group]]
name = "copy"
program = "bin/transform.wasm"

[[group.channel]]
name = "input"
path = "texts/*.txt"
mode = "read"

[[group.channel]]
name = "output"
path = "results/*.out"
mode = "write"
"#;

const FAILING: &str = r#"
[[group]]
name = "bad"
program = "bin/fail.wasm"
"#;

async fn setup(s: &TestServer) {
    s.put_object("bin", "transform.wasm", transform()).await;
    s.put_object("bin", "fail.wasm", fail()).await;
    s.put_object("texts", "a.txt", "alpha").await;
    s.put_object("texts", "b.txt", "beta").await;
    s.put_object("texts", "c.csv", "not matched").await;
    let r = s.put("/v1/buckets/results", "").await;
    assert_eq!(r.status(), 201);
}

/// Polls a deferred job until it has finished, and returns its status.
async fn wait(s: &TestServer, id: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let st = json(s.get(&format!("/v1/jobs/{id}")).await).await;
        if !["queued", "running"].contains(&st["state"].as_str().unwrap()) {
            return st;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_job_of_objects_lands_its_outputs_together_or_not_at_all() {
    let s = TestServer::start(|_| {}).await;
    setup(&s).await;
    let r = s.post("/v1/jobs", JOB).await;
    assert_eq!(r.status(), 200, "{:?}", r.headers());
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    assert_eq!(header(&r, "x-zvm-members"), "2");
    assert_eq!(header(&r, "x-zvm-committed"), "true");
    assert_eq!(r.text().await.unwrap(), "donedone");
    for (key, want) in [("a.out", "alpha"), ("b.out", "beta")] {
        let got = s.get(&format!("/v1/objects/results/{key}")).await;
        assert_eq!(got.text().await.unwrap(), want);
    }

    // The same with a member that fails: nothing lands, the failure is named.
    let job = JOB.replace("results/*.out", "results/second-*.out") + FAILING;
    let r = s.post("/v1/jobs?report=json", job.clone()).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let report = json(r).await;
    assert_eq!(report["committed"], false);
    assert_eq!(report["outcome"]["member"], "bad");
    let r = s.post("/v1/jobs", job).await;
    assert_eq!(r.status(), 500);
    assert_eq!(header(&r, "x-zvm-state"), "failed");
    assert_eq!(header(&r, "x-zvm-failed-member"), "bad");
    let listed = json(s.get("/v1/objects/results?prefix=second").await).await;
    assert_eq!(listed["objects"].as_array().unwrap().len(), 0, "{listed}");

    // JSON works too.
    let as_json = r#"{"version": 1, "group": [{"name": "one", "program": "bin/transform.wasm",
        "channel": [{"name": "input", "path": "texts/a.txt", "mode": "read"},
                    {"name": "output", "path": "results/json.out", "mode": "write"}]}]}"#;
    let r = s.post("/v1/jobs", as_json).await;
    assert_eq!(r.status(), 200);
    let got = s.get("/v1/objects/results/json.out").await;
    assert_eq!(got.text().await.unwrap(), "alpha");
    s.stop().await;
}

#[tokio::test]
async fn host_paths_are_refused_in_jobs() {
    let s = TestServer::start(|_| {}).await;
    setup(&s).await;
    for (from, to) in [
        ("bin/transform.wasm", "/usr/lib/transform.wasm"),
        ("texts/*.txt", "../../etc/*.txt"),
        ("texts/*.txt", "file:///etc/passwd"),
        ("results/*.out", "/tmp/*.out"),
    ] {
        let r = s.post("/v1/jobs", JOB.replace(from, to)).await;
        assert_eq!(r.status(), 400, "{to}");
        let e = json(r).await["error"].as_str().unwrap().to_owned();
        assert!(e.contains("host path"), "{to}: {e}");
    }
    let mount = JOB.to_string() + "[[group.mount]]\ndir = \"/etc\"\npath = \"/etc\"\n";
    let r = s.post("/v1/jobs", mount).await;
    assert_eq!(r.status(), 400);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("host directory")
    );
    // A missing program object is a 404 before anything runs.
    let r = s
        .post("/v1/jobs", JOB.replace("transform.wasm", "missing.wasm"))
        .await;
    assert_eq!(r.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn deferred_jobs_and_runs_answer_202_then_status_then_result() {
    let s = TestServer::start(|c| {
        c.max_vms = 2;
        c.request_timeout = Duration::from_secs(2);
        c.max_fuel = u64::MAX / 4;
    })
    .await;
    setup(&s).await;
    let r = s.post("/v1/jobs?defer=true", JOB).await;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location");
    let id = json(r).await["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    let st = wait(&s, &id).await;
    assert_eq!(st["state"], "ok", "{st}");
    assert_eq!(st["kind"], "job");
    assert_eq!(st["report"]["totals"]["members"], 2);
    let r = s.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    assert_eq!(r.text().await.unwrap(), "donedone");
    let r = s
        .client
        .delete(s.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.get(&format!("/v1/jobs/{id}")).await.status(), 404);

    // A run that loops: running (its result is 409 until it ends), then ended by the timeout.
    s.put_object("bin", "spin.wasm", spin()).await;
    let r = s
        .client
        .post(s.url("/v1/run?program=bin/spin.wasm"))
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let spinning = json(r).await["id"].as_str().unwrap().to_owned();
    let r = s.get(&format!("/v1/jobs/{spinning}/result")).await;
    assert_eq!(r.status(), 409);
    // Both VMs busy: a third deferred run stays queued, and can be cancelled.
    let r = s.post("/v1/run?program=bin/spin.wasm&defer=true", "").await;
    let second = json(r).await["id"].as_str().unwrap().to_owned();
    let r = s.post("/v1/run?program=bin/spin.wasm&defer=true", "").await;
    let queued = json(r).await["id"].as_str().unwrap().to_owned();
    let st = json(s.get(&format!("/v1/jobs/{queued}")).await).await;
    assert_eq!(st["state"], "queued", "{st}");
    let r = s
        .client
        .delete(s.url(&format!("/v1/jobs/{queued}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let st = json(s.get(&format!("/v1/jobs/{queued}")).await).await;
    assert_eq!(st["state"], "cancelled");
    assert_eq!(
        s.get(&format!("/v1/jobs/{queued}/result")).await.status(),
        409
    );

    for id in [spinning, second] {
        let st = wait(&s, &id).await;
        assert_eq!(st["state"], "failed", "{st}");
        assert_eq!(st["report"]["state"]["kind"], "timed_out", "{st}");
        let r = s.get(&format!("/v1/jobs/{id}/result")).await;
        assert_eq!(r.status(), 500);
        assert_eq!(header(&r, "x-zvm-state"), "timed_out");
    }
    assert_eq!(s.get("/v1/jobs/nosuchjob").await.status(), 404);
    s.stop().await;
}
