//! Tenants: tokens (401), bucket ownership (403), reserved names, quotas (403, 429), and
//! ownership surviving a restart.

use std::time::Duration;

use zvm_server::ServerConfig;
use zvm_server::tenants::{TenantFile, resolve};

use crate::support::*;

const ALICE: &str = "alice-token-1";
const BOB: &str = "bob-token-22";
const ROOT: &str = "root-token-333";
const CAROL: &str = "carol-token-4444";

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
            max_fuel: Some(50_000_000),
            max_memory: Some("2 MiB".into()),
            max_stored: Some("1000".into()),
            ..tenant("alice", ALICE)
        },
        tenant("bob", BOB),
        TenantFile {
            admin: true,
            ..tenant("root", ROOT)
        },
        TenantFile {
            max_vms: Some(1),
            ..tenant("carol", CAROL)
        },
    ])
    .unwrap();
}

/// A request as `token`.
fn req(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> reqwest::RequestBuilder {
    s.client.request(method, s.url(path)).bearer_auth(token)
}

async fn status(r: reqwest::RequestBuilder) -> u16 {
    r.send().await.unwrap().status().as_u16()
}

use reqwest::Method;

#[tokio::test]
async fn api_requests_need_a_known_token() {
    let s = TestServer::start(with_tenants).await;
    let r = s.get("/v1/buckets").await;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "www-authenticate"), "Bearer realm=\"zvm\"");
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("Authorization")
    );
    let r = req(&s, Method::GET, "/v1/buckets", "not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("unknown token")
    );
    let r = s
        .client
        .get(s.url("/v1/buckets"))
        .header("authorization", format!("Basic {ALICE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(s.post("/v1/run", echo()).await.status(), 401);
    // Liveness and metrics stay open.
    assert_eq!(s.get("/healthz").await.status(), 200);
    assert_eq!(s.get("/metrics").await.status(), 200);
    assert_eq!(
        status(req(&s, Method::GET, "/v1/buckets", ALICE)).await,
        200
    );
}

#[tokio::test]
async fn a_tenant_sees_and_uses_only_its_own_buckets() {
    let s = TestServer::start(with_tenants).await;
    assert_eq!(
        status(req(&s, Method::PUT, "/v1/buckets/alice-data", ALICE)).await,
        201
    );
    assert_eq!(
        status(req(&s, Method::PUT, "/v1/buckets/bob-data", BOB)).await,
        201
    );
    let put = req(&s, Method::PUT, "/v1/objects/alice-data/in.txt", ALICE).body("secret");
    assert_eq!(status(put).await, 200);
    assert_eq!(
        status(req(&s, Method::PUT, "/v1/objects/bob-data/prog.wasm", BOB).body(transform())).await,
        200
    );

    let names = |v: serde_json::Value| -> Vec<String> {
        v["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = |token: &'static str| {
        let r = req(&s, Method::GET, "/v1/buckets", token);
        async move { names(json(r.send().await.unwrap()).await) }
    };
    assert_eq!(listed(ALICE).await, ["alice-data"]);
    assert_eq!(listed(BOB).await, ["bob-data"]);
    // The admin sees both, and never the server's own bucket.
    assert_eq!(listed(ROOT).await, ["alice-data", "bob-data"]);

    // Bob cannot read, write, list, delete or run against Alice's bucket.
    for (method, path) in [
        (Method::GET, "/v1/objects/alice-data/in.txt"),
        (Method::HEAD, "/v1/objects/alice-data/in.txt"),
        (Method::PUT, "/v1/objects/alice-data/x"),
        (Method::DELETE, "/v1/objects/alice-data/in.txt"),
        (Method::GET, "/v1/objects/alice-data"),
        (Method::DELETE, "/v1/buckets/alice-data"),
        (
            Method::POST,
            "/v1/run?program=bob-data/prog.wasm&input=alice-data/in.txt&output=bob-data/out",
        ),
        (
            Method::POST,
            "/v1/run?program=bob-data/prog.wasm&input=bob-data/prog.wasm&output=alice-data/out",
        ),
    ] {
        let r = req(&s, method.clone(), path, BOB).send().await.unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
        if method != Method::HEAD {
            let e = json(r).await["error"].as_str().unwrap().to_owned();
            assert!(e.contains("alice-data"), "{e}");
        }
    }
    // Nothing Bob tried changed Alice's object, and his run wrote nothing.
    let r = req(&s, Method::GET, "/v1/objects/alice-data/in.txt", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "secret");
    assert_eq!(
        status(req(&s, Method::GET, "/v1/objects/bob-data/out", BOB)).await,
        404
    );
    // Alice's run against her own data works; so does the admin's read of it.
    let r = req(
        &s,
        Method::POST,
        "/v1/run?input=alice-data/in.txt&output=alice-data/out.txt",
        ALICE,
    )
    .body(transform())
    .send()
    .await
    .unwrap();
    // The program came as the body, so stdin is empty: `done` and the copy.
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = req(&s, Method::GET, "/v1/objects/alice-data/out.txt", ROOT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "secret");

    // Reserved names: nobody, admin included, creates or touches them.
    for token in [ALICE, ROOT] {
        assert_eq!(
            status(req(&s, Method::PUT, "/v1/buckets/zvm-mine", token)).await,
            403
        );
        assert_eq!(
            status(req(&s, Method::GET, "/v1/objects/zvm-system", token)).await,
            403
        );
    }

    // Ownership survives a restart.
    let data = s.dir.path().join("data");
    let dir = {
        let mut s = s;
        s.begin_stop().await.unwrap().unwrap();
        std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap())
    };
    let s = TestServer::start(|c| {
        with_tenants(c);
        c.data_dir = data.clone();
    })
    .await;
    assert_eq!(
        status(req(&s, Method::GET, "/v1/objects/alice-data/in.txt", BOB)).await,
        403
    );
    assert_eq!(
        status(req(&s, Method::GET, "/v1/objects/alice-data/in.txt", ALICE)).await,
        200
    );
    // A deleted bucket's name is free again, for anyone.
    assert_eq!(
        status(req(
            &s,
            Method::DELETE,
            "/v1/objects/bob-data/prog.wasm",
            BOB
        ))
        .await,
        204
    );
    assert_eq!(
        status(req(&s, Method::DELETE, "/v1/buckets/bob-data", BOB)).await,
        204
    );
    assert_eq!(
        status(req(&s, Method::PUT, "/v1/buckets/bob-data", ALICE)).await,
        201
    );
    assert_eq!(
        status(req(&s, Method::GET, "/v1/objects/bob-data", BOB)).await,
        403
    );
    drop(dir);
}

#[tokio::test]
async fn quotas_bound_fuel_memory_and_stored_bytes() {
    let s = TestServer::start(with_tenants).await;
    let run = |query: &str, body: Vec<u8>| {
        req(&s, Method::POST, &format!("/v1/run{query}"), ALICE)
            .body(body)
            .send()
    };
    // Asking for more fuel or memory than the quota is 403; the default is the quota.
    let r = run("?fuel=50000001", echo()).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(json(r).await["error"].as_str().unwrap().contains("quota"));
    let r = run("?memory=3MiB", echo()).await.unwrap();
    assert_eq!(r.status(), 403);
    let r = run("", spin()).await.unwrap();
    assert_eq!(header(&r, "x-zvm-state"), "out_of_fuel");
    let used: u64 = header(&r, "x-zvm-fuel-used").parse().unwrap();
    assert!(used <= 50_000_000, "{used}");
    let r = run("", memory_bomb()).await.unwrap();
    assert_ne!(header(&r, "x-zvm-state"), "ok");
    let peak: u64 = header(&r, "x-zvm-peak-memory").parse().unwrap();
    assert!(peak <= 2 << 20, "{peak}");

    // Stored bytes: 1000 in all.
    assert_eq!(
        status(req(&s, Method::PUT, "/v1/buckets/alice-q", ALICE)).await,
        201
    );
    let put = |key: &str, n: usize| {
        req(
            &s,
            Method::PUT,
            &format!("/v1/objects/alice-q/{key}"),
            ALICE,
        )
        .body(vec![b'a'; n])
        .send()
    };
    assert_eq!(put("a", 600).await.unwrap().status(), 200);
    let r = put("b", 600).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("max_stored")
    );
    assert_eq!(
        status(req(&s, Method::GET, "/v1/objects/alice-q/b", ALICE)).await,
        404
    );
    // Replacing an object frees its bytes first.
    assert_eq!(put("a", 900).await.unwrap().status(), 200);
    // A chunked body (no Content-Length) is stopped at the quota too.
    let chunks =
        futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'c'; 100])));
    let r = req(&s, Method::PUT, "/v1/objects/alice-q/c", ALICE)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        status(req(&s, Method::GET, "/v1/objects/alice-q/c", ALICE)).await,
        404
    );
    // A run's outputs count too: over the quota they do not land.
    assert_eq!(
        status(req(&s, Method::DELETE, "/v1/objects/alice-q/a", ALICE)).await,
        204
    );
    assert_eq!(put("in", 700).await.unwrap().status(), 200);
    let r = run("?input=alice-q/in&output=alice-q/out", transform())
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("max_stored")
    );
    assert_eq!(
        status(req(&s, Method::GET, "/v1/objects/alice-q/out", ALICE)).await,
        404
    );
    // An output that replaces an object frees that object's bytes: with 300 bytes in and
    // 300 out (600 of 1000), the same run lands again and again.
    assert_eq!(put("in", 300).await.unwrap().status(), 200);
    for _ in 0..3 {
        let r = run("?input=alice-q/in&output=alice-q/out", transform())
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    // And the count is right: 400 more fit, 401 do not.
    assert_eq!(put("more", 401).await.unwrap().status(), 403);
    assert_eq!(put("more", 400).await.unwrap().status(), 200);
    // Bob has no quota and is not slowed by Alice's.
    assert_eq!(
        status(req(&s, Method::PUT, "/v1/buckets/bob-q", BOB)).await,
        201
    );
    let big = req(&s, Method::PUT, "/v1/objects/bob-q/big", BOB).body(vec![0u8; 100_000]);
    assert_eq!(status(big).await, 200);
}

#[tokio::test]
async fn a_tenant_at_its_vm_quota_gets_429_while_others_run() {
    let s = TestServer::start(|c| {
        with_tenants(c);
        c.max_vms = 4;
    })
    .await;
    // Carol may run one VM at a time: a long one holds it.
    let slow = req(&s, Method::POST, "/v1/run?fuel=3000000000", CAROL)
        .body(spin())
        .send();
    let slow = tokio::spawn(slow);
    let mut refused = None;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = req(&s, Method::POST, "/v1/run", CAROL)
            .body(echo())
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a second run of carol's while her first runs is 429");
    assert_eq!(header(&r, "retry-after"), "1");
    assert!(json(r).await["error"].as_str().unwrap().contains("carol"));
    // Meanwhile another tenant's runs go through.
    let r = req(&s, Method::POST, "/v1/run", BOB)
        .body(echo())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done = slow.await.unwrap().unwrap();
    assert_eq!(header(&done, "x-zvm-state"), "out_of_fuel");
    // Her VM is free again.
    let r = req(&s, Method::POST, "/v1/run", CAROL)
        .body(echo())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
