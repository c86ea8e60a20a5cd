//! Tenant isolation beyond buckets: endpoints, handlers and deferred executions are private
//! to their tenant (an admin sees all), and zapps and jobs run within the caller's quotas.

use std::time::{Duration, Instant};

use reqwest::Method;
use zvm_server::ServerConfig;
use zvm_server::tenants::{TenantFile, resolve};

use crate::guests::zapp;
use crate::support::{TestServer, echo, header, json, spin, transform};

const ALICE: &str = "alice-token-1";
const BOB: &str = "bob-token-22";
const ROOT: &str = "root-token-333";

/// Alice's fuel quota.
const ALICE_FUEL: u64 = 20_000_000;

fn tenant(name: &str, token: &str) -> TenantFile {
    TenantFile {
        name: name.into(),
        token: Some(token.into()),
        ..TenantFile::default()
    }
}

fn with_tenants(c: &mut ServerConfig) {
    c.tenants = resolve(&[
        TenantFile {
            max_fuel: Some(ALICE_FUEL),
            max_stored: Some("4 KiB".into()),
            ..tenant("alice", ALICE)
        },
        tenant("bob", BOB),
        TenantFile {
            admin: true,
            ..tenant("root", ROOT)
        },
    ])
    .unwrap();
}

fn req(s: &TestServer, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    s.client.request(method, s.url(path)).bearer_auth(token)
}

async fn send(r: reqwest::RequestBuilder) -> reqwest::Response {
    r.send().await.unwrap()
}

async fn status(r: reqwest::RequestBuilder) -> u16 {
    send(r).await.status().as_u16()
}

fn echo_zapp() -> Vec<u8> {
    zapp(
        "echo",
        "manifest = \"echo.toml\"",
        &[
            ("echo.toml", b"version = 1\nprogram = \"echo.wasm\"\n"),
            ("echo.wasm", &echo()),
        ],
    )
}

#[tokio::test]
async fn endpoints_are_private_to_their_tenant() {
    let s = TestServer::start(with_tenants).await;
    let r = send(req(&s, Method::PUT, "/v1/endpoints/hello", ALICE).body(echo_zapp())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["owner"], "alice");

    let names = |token: &'static str| {
        let r = req(&s, Method::GET, "/v1/endpoints", token);
        async move {
            json(send(r).await).await["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names(ALICE).await, ["hello"]);
    assert!(names(BOB).await.is_empty());
    assert_eq!(names(ROOT).await, ["hello"]);

    // Bob can neither see, replace, delete nor call it.
    assert_eq!(
        status(req(&s, Method::GET, "/v1/endpoints/hello", BOB)).await,
        403
    );
    assert_eq!(
        status(req(&s, Method::PUT, "/v1/endpoints/hello", BOB).body(echo_zapp())).await,
        403
    );
    assert_eq!(
        status(req(&s, Method::DELETE, "/v1/endpoints/hello", BOB)).await,
        403
    );
    let r = send(req(&s, Method::POST, "/v1/apps/hello", BOB).body("from bob")).await;
    assert_eq!(r.status(), 403);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("endpoint `hello`")
    );
    let r = send(req(&s, Method::GET, "/v1/endpoints/hello", ALICE)).await;
    assert_eq!(json(r).await["owner"], "alice", "still Alice's");

    // Alice and the admin can call it.
    for token in [ALICE, ROOT] {
        let r = send(req(&s, Method::POST, "/v1/apps/hello", token).body("hi")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "hi");
    }
    // An admin's redeploy keeps the owner; Alice deletes her own.
    let r = send(req(&s, Method::PUT, "/v1/endpoints/hello", ROOT).body(echo_zapp())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["owner"], "alice");
    assert_eq!(
        status(req(&s, Method::DELETE, "/v1/endpoints/hello", ALICE)).await,
        204
    );
    assert!(names(ROOT).await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn handlers_belong_to_their_tenant() {
    let s = TestServer::start(with_tenants).await;
    for (bucket, token) in [("alice-bin", ALICE), ("bob-docs", BOB)] {
        let path = format!("/v1/buckets/{bucket}");
        assert_eq!(status(req(&s, Method::PUT, &path, token)).await, 201);
    }
    let put = req(&s, Method::PUT, "/v1/objects/alice-bin/echo.wasm", ALICE).body(echo());
    assert_eq!(status(put).await, 200);
    let put = req(&s, Method::PUT, "/v1/objects/alice-bin/note.txt", ALICE)
        .header("content-type", "text/plain")
        .body("alice's note");
    assert_eq!(status(put).await, 200);
    let put = req(&s, Method::PUT, "/v1/objects/bob-docs/note.txt", BOB)
        .header("content-type", "text/plain")
        .body("bob's note");
    assert_eq!(status(put).await, 200);

    let r = req(&s, Method::PUT, "/v1/handlers/text/plain", ALICE)
        .body(r#"{"program": "alice-bin/echo.wasm"}"#);
    assert_eq!(status(r).await, 200);
    let r = send(req(&s, Method::GET, "/v1/view/alice-bin/note.txt", ALICE)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "alice's note");

    // Bob's view does not use Alice's handler.
    let r = send(req(&s, Method::GET, "/v1/view/bob-docs/note.txt", BOB)).await;
    assert_eq!(r.status(), 404);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("no handler")
    );
    assert_eq!(
        status(req(&s, Method::GET, "/v1/handlers/text/plain", BOB)).await,
        404
    );
    assert_eq!(
        status(req(&s, Method::DELETE, "/v1/handlers/text/plain", BOB)).await,
        404
    );

    let listed = |token: &'static str| {
        let r = req(&s, Method::GET, "/v1/handlers", token);
        async move { json(send(r).await).await["handlers"].clone() }
    };
    let alice = listed(ALICE).await;
    assert_eq!(alice.as_array().unwrap().len(), 1, "{alice}");
    assert_eq!(alice[0]["type"], "text/plain");
    assert_eq!(listed(BOB).await.as_array().unwrap().len(), 0);
    let all = listed(ROOT).await;
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["type"], "text/plain");
    assert_eq!(all[0]["tenant"], "alice");

    // Still Alice's after Bob's attempts.
    assert_eq!(
        status(req(&s, Method::GET, "/v1/handlers/text/plain", ALICE)).await,
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn deferred_ids_of_another_tenant_are_unknown() {
    let s = TestServer::start(with_tenants).await;
    let r = send(req(&s, Method::POST, "/v1/run?defer=true", ALICE).body(echo())).await;
    assert_eq!(r.status(), 202);
    let id = json(r).await["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    loop {
        let r = send(req(&s, Method::GET, &format!("/v1/jobs/{id}"), ALICE)).await;
        assert_eq!(r.status(), 200);
        let st = json(r).await;
        if !["queued", "running"].contains(&st["state"].as_str().unwrap()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/result")] {
        assert_eq!(
            status(req(&s, Method::GET, &path, BOB)).await,
            404,
            "{path}"
        );
    }
    let path = format!("/v1/jobs/{id}");
    assert_eq!(status(req(&s, Method::DELETE, &path, BOB)).await, 404);

    let ids = |token: &'static str| {
        let r = req(&s, Method::GET, "/v1/jobs", token);
        async move {
            json(send(r).await).await["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert!(ids(BOB).await.is_empty());
    assert_eq!(ids(ALICE).await, std::slice::from_ref(&id));
    assert_eq!(ids(ROOT).await, std::slice::from_ref(&id));

    // Still there for Alice: the result, then her delete.
    let path = format!("/v1/jobs/{id}/result");
    assert_eq!(status(req(&s, Method::GET, &path, ALICE)).await, 200);
    let path = format!("/v1/jobs/{id}");
    assert_eq!(status(req(&s, Method::DELETE, &path, ALICE)).await, 204);
    s.stop().await;
}

const SPIN_JOB: &str = r#"version = 1
name = "spin"

[[group]]
name = "spin"
program = "alice-bin/spin.wasm"

[group.limits]
fuel = 1_000_000_000
"#;

const COPY_JOB: &str = r#"version = 1
name = "copy"

[[group]]
name = "copy"
program = "alice-bin/transform.wasm"

[[group.channel]]
name = "input"
path = "alice-bin/big.txt"
mode = "read"

[[group.channel]]
name = "output"
path = "alice-bin/big.out"
mode = "write"
"#;

#[tokio::test]
async fn zapps_and_jobs_run_within_the_callers_quotas() {
    let s = TestServer::start(with_tenants).await;
    assert_eq!(
        status(req(&s, Method::PUT, "/v1/buckets/alice-bin", ALICE)).await,
        201
    );
    let spinning = zapp(
        "spin",
        "manifest = \"spin.toml\"",
        &[
            (
                "spin.toml",
                b"version = 1\nprogram = \"spin.wasm\"\n[limits]\nfuel = 1_000_000_000\n",
            ),
            ("spin.wasm", &spin()),
        ],
    );
    for (key, body) in [("spin.zapp", spinning), ("spin.wasm", spin())] {
        let path = format!("/v1/objects/alice-bin/{key}");
        assert_eq!(
            status(req(&s, Method::PUT, &path, ALICE).body(body)).await,
            200
        );
    }

    // A zapp asking for more fuel than Alice's quota gets the quota.
    let r = send(req(
        &s,
        Method::POST,
        "/v1/run?zapp=alice-bin/spin.zapp",
        ALICE,
    ))
    .await;
    assert_eq!(header(&r, "x-zvm-state"), "out_of_fuel");
    let used: u64 = header(&r, "x-zvm-fuel-used").parse().unwrap();
    assert!(used <= ALICE_FUEL, "{used}");
    let path = format!("/v1/run?zapp=alice-bin/spin.zapp&fuel={}", ALICE_FUEL + 1);
    assert_eq!(status(req(&s, Method::POST, &path, ALICE)).await, 403);

    // So does every member of a job.
    let r = send(req(&s, Method::POST, "/v1/jobs?report=json", ALICE).body(SPIN_JOB)).await;
    assert_eq!(r.status(), 200);
    let report = json(r).await;
    let used = report["totals"]["fuel_used"].as_u64().unwrap();
    assert!(used > 0 && used <= ALICE_FUEL, "{report}");

    // A job's outputs count against the stored-bytes quota: 2500 bytes stored (and the
    // programs), 2500 more is over 4 KiB, so nothing lands.
    let big = "x".repeat(2500);
    let put = req(&s, Method::PUT, "/v1/objects/alice-bin/big.txt", ALICE).body(big);
    assert_eq!(status(put).await, 200);
    let put = req(
        &s,
        Method::PUT,
        "/v1/objects/alice-bin/transform.wasm",
        ROOT,
    )
    .body(transform());
    assert_eq!(status(put).await, 200);
    let r = send(req(&s, Method::POST, "/v1/jobs", ALICE).body(COPY_JOB)).await;
    assert_eq!(r.status(), 403);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("max_stored")
    );
    assert_eq!(
        status(req(&s, Method::GET, "/v1/objects/alice-bin/big.out", ALICE)).await,
        404
    );
    s.stop().await;
}
