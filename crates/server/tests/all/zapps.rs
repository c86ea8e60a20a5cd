//! Zapps over HTTP: stored or posted, the request body as stdin, the zapp's channels bound to
//! objects, outputs landing only on success, limits and the wall-clock timeout.

use std::time::{Duration, Instant};

use crate::guests::zapp;
use crate::support::{TestServer, echo, header, json, spin, transform};

const ECHO_MANIFEST: &str = "version = 1\nprogram = \"bin/echo.wasm\"\n";

#[tokio::test]
async fn a_stored_zapp_and_a_posted_one_run_with_the_body_as_stdin() {
    let s = TestServer::start(|_| {}).await;
    let app = zapp(
        "echo",
        "manifest = \"app/echo.toml\"",
        &[
            (
                "app/echo.toml",
                ECHO_MANIFEST.replace("bin/", "../bin/").as_bytes(),
            ),
            ("bin/echo.wasm", &echo()),
        ],
    );
    s.put_object("apps", "echo.zapp", app.clone()).await;
    let r = s
        .post("/v1/run?zapp=apps/echo.zapp", "through a zapp")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    assert!(header(&r, "x-zvm-fuel-used").parse::<u64>().unwrap() > 0);
    assert_eq!(r.text().await.unwrap(), "through a zapp");

    // The report names the app and its program.
    let r = s.post("/v1/run?zapp=apps/echo.zapp&report=json", "x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["program"], "echo@1.0.0:../bin/echo.wasm");

    // Sent as the body: stdin is empty.
    let r = s
        .client
        .post(s.url("/v1/run"))
        .header("content-type", "application/x-zvm-zapp")
        .body(app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    assert!(r.bytes().await.unwrap().is_empty());

    // Not a zapp; a program and a zapp at once.
    s.put_object("apps", "junk.zapp", "not a zapp").await;
    let r = s.post("/v1/run?zapp=apps/junk.zapp", "").await;
    assert_eq!(r.status(), 422);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("not a valid zapp")
    );
    let r = s
        .post("/v1/run?zapp=apps/echo.zapp&program=apps/x", "")
        .await;
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn a_zapps_host_file_channels_must_be_bound_to_objects() {
    let s = TestServer::start(|_| {}).await;
    let manifest = r#"version = 1
program = "transform.wasm"
[[channel]]
name = "input"
path = "in.txt"
mode = "read"
[[channel]]
name = "output"
path = "out.txt"
mode = "write"
"#;
    let app = zapp(
        "transform",
        "manifest = \"main.toml\"",
        &[
            ("main.toml", manifest.as_bytes()),
            ("transform.wasm", &transform()),
        ],
    );
    s.put_object("apps", "t.zapp", app).await;
    s.put_object("data", "in.txt", "the data").await;
    s.put("/v1/buckets/results", "").await;

    let r = s.post("/v1/run?zapp=apps/t.zapp", "").await;
    assert_eq!(r.status(), 400);
    let e = json(r).await["error"].as_str().unwrap().to_owned();
    assert!(
        e.starts_with("`input`") && e.contains("host file `in.txt`"),
        "{e}"
    );
    let r = s
        .post(
            "/v1/run?zapp=apps/t.zapp&input=data/in.txt&output=input:results/x",
            "",
        )
        .await;
    assert_eq!(r.status(), 400);

    // A failing run lands nothing.
    let q = "/v1/run?zapp=apps/t.zapp&input=data/in.txt&output=results/out.txt";
    let r = s.post(q, "fail").await;
    assert_eq!(r.status(), 500);
    assert_eq!(header(&r, "x-zvm-committed"), "false");
    assert_eq!(s.get("/v1/objects/results/out.txt").await.status(), 404);

    let r = s.post(q, "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-zvm-committed"), "true");
    assert_eq!(r.text().await.unwrap(), "done");
    let got = s.get("/v1/objects/results/out.txt").await;
    assert_eq!(got.text().await.unwrap(), "the data");
    s.stop().await;
}

#[tokio::test]
async fn a_zapp_that_never_ends_is_stopped_by_the_request_timeout() {
    let s = TestServer::start(|c| {
        c.request_timeout = Duration::from_secs(1);
        c.max_fuel = u64::MAX / 4;
    })
    .await;
    let manifest = "version = 1\nprogram = \"spin.wasm\"\n[limits]\nfuel = 1000000000000000\n";
    let app = zapp(
        "spin",
        "manifest = \"m.toml\"",
        &[("m.toml", manifest.as_bytes()), ("spin.wasm", &spin())],
    );
    s.put_object("apps", "spin.zapp", app).await;
    let started = Instant::now();
    let r = s.post("/v1/run?zapp=apps/spin.zapp", "").await;
    assert_eq!(r.status(), 500);
    assert_eq!(header(&r, "x-zvm-state"), "timed_out");
    assert!(started.elapsed() < Duration::from_secs(15));
    s.stop().await;
}

#[tokio::test]
async fn a_zapp_whose_entry_point_is_a_job_runs_as_a_job_on_objects() {
    let s = TestServer::start(|_| {}).await;
    let job = r#"version = 1
[[group]]
name = "copy"
program = "../bin/transform.wasm"
[[group.channel]]
name = "input"
path = "texts/*.txt"
mode = "read"
[[group.channel]]
name = "output"
path = "results/*.out"
mode = "write"
"#;
    let app = zapp(
        "copier",
        "job = \"jobs/copy.toml\"",
        &[
            ("jobs/copy.toml", job.as_bytes()),
            ("bin/transform.wasm", &transform()),
        ],
    );
    s.put_object("apps", "copier.zapp", app).await;
    s.put_object("texts", "a.txt", "one").await;
    s.put_object("texts", "b.txt", "two").await;
    s.put("/v1/buckets/results", "").await;
    let r = s.post("/v1/run?zapp=apps/copier.zapp", "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-zvm-members"), "2");
    assert_eq!(r.text().await.unwrap(), "donedone");
    let got = s.get("/v1/objects/results/b.out").await;
    assert_eq!(got.text().await.unwrap(), "two");
    s.stop().await;
}
