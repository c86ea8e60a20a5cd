//! The server on the S3 backend, against a real S3 server (SeaweedFS's `weed mini`, started
//! by the test): the objects API, and a run that reads an input object and lands its output
//! object, or lands nothing when it fails.
//!
//! Without `weed` installed this fails and says how to install it, unless `ZVM_SKIP_S3=1`.

use std::sync::Arc;

use zvm_server::config::StoreBackend;
use zvm_store::s3::testing::SeaweedFs;
use zvm_store::{S3Store, Store};

use crate::support::{TestServer, etag, header, json, transform};

/// Starts `weed mini` off the async threads (it waits for the server by polling).
async fn seaweedfs() -> Option<Arc<SeaweedFs>> {
    tokio::task::spawn_blocking(|| SeaweedFs::start().map(Arc::new))
        .await
        .unwrap()
}

#[tokio::test]
async fn runs_read_and_land_objects_on_s3_all_or_nothing() {
    let Some(weed) = seaweedfs().await else {
        return;
    };
    let config = weed.config(&format!("server-{}", std::process::id()));
    let backend = StoreBackend::S3(config.clone());
    let s = TestServer::start(move |c| c.store = backend).await;

    // The objects API on S3.
    s.put_object("bin", "transform.wasm", transform()).await;
    let data = "an input object on S3\n".repeat(20_000);
    s.put_object("data", "in.txt", data.clone()).await;
    assert_eq!(s.put("/v1/buckets/results", "").await.status(), 201);
    let buckets = json(s.get("/v1/buckets").await).await;
    let names: Vec<&str> = buckets["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bin", "data", "results"]);
    let r = s
        .client
        .get(s.url("/v1/objects/data/in.txt"))
        .header("range", "bytes=3-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "etag"), format!("\"{}\"", etag(data.as_bytes())));
    assert_eq!(r.text().await.unwrap(), &data[3..8]);

    // A run: its input read from S3, its output landed there with its BLAKE3 etag.
    let r = s
        .post(
            "/v1/run?program=bin/transform.wasm&input=data/in.txt&output=results/out.txt",
            "",
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    assert_eq!(header(&r, "x-zvm-etag-output"), etag(data.as_bytes()));
    let r = s.get("/v1/objects/results/out.txt").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), format!("\"{}\"", etag(data.as_bytes())));
    assert_eq!(r.text().await.unwrap(), data);

    // A run that writes its output and then fails lands nothing.
    let r = s
        .post(
            "/v1/run?program=bin/transform.wasm&input=data/in.txt&output=results/failed.txt",
            "f",
        )
        .await;
    assert_eq!(r.status(), 500);
    assert_eq!(header(&r, "x-zvm-committed"), "false");
    assert_eq!(s.get("/v1/objects/results/failed.txt").await.status(), 404);
    s.stop().await;

    // What S3 holds, seen by a store of its own: the one output, and nothing staged.
    let (objects, leftovers) = tokio::task::spawn_blocking(move || {
        let store = Store::S3(S3Store::open(&config).unwrap());
        let (objects, _) = store.list("results", "", None, 100).unwrap();
        let leftovers = store.batch().len();
        (objects, leftovers)
    })
    .await
    .unwrap();
    let keys: Vec<(&str, &str)> = objects
        .iter()
        .map(|o| (o.key.as_str(), o.etag.as_str()))
        .collect();
    let want = etag(data.as_bytes());
    assert_eq!(keys, [("out.txt", want.as_str())]);
    assert_eq!(leftovers, 0);
    drop(weed);
}

#[tokio::test]
async fn an_unreachable_s3_service_stops_the_server_from_starting() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = zvm_store::S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        bucket: "zvm".into(),
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        allow_http: true,
        ..zvm_store::S3Config::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let server_config = zvm_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        store: StoreBackend::S3(config),
        ..zvm_server::ServerConfig::default()
    };
    let err = zvm_server::Server::bind(server_config).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("opening the S3 object store `s3://zvm/`")
            && message.contains("s3 backend"),
        "{message}"
    );
}
