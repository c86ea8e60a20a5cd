//! Operations: health, metrics, request ids, unknown routes.

use crate::support::{TestServer, echo, header, json};

#[tokio::test]
async fn health_request_ids_and_unknown_routes() {
    let s = TestServer::start(|_| {}).await;
    let r = s.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let made_up = header(&r, "x-request-id");
    assert!(made_up.starts_with("zvm-"), "{made_up}");
    let r = s
        .client
        .get(s.url("/healthz"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), "trace-42");
    let r = s.get("/v2/nothing").await;
    assert_eq!(r.status(), 404);
    assert!(!header(&r, "x-request-id").is_empty());
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("no route")
    );
    s.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_runs_and_gauges() {
    let s = TestServer::start(|_| {}).await;
    s.put_object("bin", "echo.wasm", echo()).await;
    for _ in 0..3 {
        let r = s.post("/v1/run?program=bin/echo.wasm", "hi").await;
        assert_eq!(r.status(), 200);
    }
    s.get("/v1/objects/bin/missing").await;
    let r = s.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    for line in [
        "zvm_http_requests_total{route=\"/v1/run\",method=\"POST\",status=\"200\"} 3",
        "zvm_http_requests_total{route=\"/v1/objects/{bucket}/{*key}\",method=\"GET\",status=\"404\"} 1",
        "zvm_vm_runs_total{state=\"ok\"} 3",
        "zvm_vm_run_seconds_count 3",
        "zvm_vms_in_flight 0",
        "zvm_queue_depth 0",
        "zvm_programs_cached 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    s.stop().await;
}
