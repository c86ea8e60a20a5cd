//! The objects API: buckets, put/get/head/delete, metadata, listings, ranges, body caps.

use crate::support::{TestServer, etag, header, json};

#[tokio::test]
async fn buckets_are_created_once_listed_and_deleted_when_empty() {
    let s = TestServer::start(|_| {}).await;
    let r = s.put("/v1/buckets/photos", "").await;
    assert_eq!(r.status(), 201);
    assert_eq!(json(r).await["name"], "photos");
    let r = s.put("/v1/buckets/photos", "").await;
    assert_eq!(r.status(), 409);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    let r = s.put("/v1/buckets/No_Such", "").await;
    assert_eq!(r.status(), 400);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("invalid bucket name")
    );
    let listing = json(s.get("/v1/buckets").await).await;
    assert_eq!(listing["buckets"][0]["name"], "photos");

    s.put("/v1/objects/photos/a.jpg", "x").await;
    let r = s
        .client
        .delete(s.url("/v1/buckets/photos"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    s.client
        .delete(s.url("/v1/objects/photos/a.jpg"))
        .send()
        .await
        .unwrap();
    let r = s
        .client
        .delete(s.url("/v1/buckets/photos"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s.get("/v1/objects/photos").await;
    assert_eq!(r.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn an_object_round_trips_with_its_type_metadata_and_etag() {
    let s = TestServer::start(|_| {}).await;
    s.put("/v1/buckets/docs", "").await;
    let body = "hello, objects";
    let r = s
        .client
        .put(s.url("/v1/objects/docs/a/b/hello.txt"))
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-zvm-meta-colour", "blue")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), format!("\"{}\"", etag(body.as_bytes())));
    let info = json(r).await;
    assert_eq!(info["size"], body.len());
    assert_eq!(info["user"]["colour"], "blue");

    let r = s.get("/v1/objects/docs/a/b/hello.txt").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&r, "x-zvm-meta-colour"), "blue");
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(header(&r, "etag"), format!("\"{}\"", etag(body.as_bytes())));
    assert_eq!(r.text().await.unwrap(), body);

    let r = s
        .client
        .head(s.url("/v1/objects/docs/a/b/hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), body.len().to_string());
    assert_eq!(header(&r, "x-zvm-meta-colour"), "blue");
    assert!(r.bytes().await.unwrap().is_empty());

    // A key with characters that need escaping in a URL.
    let r = s.put("/v1/objects/docs/sp%20ace%3F", "q").await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["key"], "sp ace?");
    assert_eq!(
        s.get("/v1/objects/docs/sp%20ace%3F")
            .await
            .text()
            .await
            .unwrap(),
        "q"
    );

    let r = s
        .client
        .delete(s.url("/v1/objects/docs/a/b/hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s.get("/v1/objects/docs/a/b/hello.txt").await;
    assert_eq!(r.status(), 404);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("no such key")
    );
    let r = s
        .client
        .head(s.url("/v1/objects/docs/a/b/hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s.get("/v1/objects/nobucket/x").await;
    assert_eq!(r.status(), 404);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("no such bucket")
    );
    let r = s.put("/v1/objects/nobucket/x", "x").await;
    assert_eq!(r.status(), 404);
    let r = s
        .client
        .put(s.url("/v1/objects/docs/m"))
        .header("x-zvm-meta-big", "v".repeat(3000))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn listings_page_by_prefix_and_start_after() {
    let s = TestServer::start(|_| {}).await;
    s.put("/v1/buckets/logs", "").await;
    for key in ["2024/01", "2024/02", "2024/03", "2025/01", "other"] {
        s.put(&format!("/v1/objects/logs/{key}"), key).await;
    }
    let page = json(s.get("/v1/objects/logs?prefix=2024/&limit=2").await).await;
    let keys: Vec<_> = page["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].clone())
        .collect();
    assert_eq!(keys, ["2024/01", "2024/02"]);
    assert_eq!(page["truncated"], true);
    assert_eq!(page["next_start_after"], "2024/02");
    let page = json(
        s.get("/v1/objects/logs?prefix=2024/&start_after=2024/02")
            .await,
    )
    .await;
    assert_eq!(page["objects"][0]["key"], "2024/03");
    assert_eq!(page["objects"].as_array().unwrap().len(), 1);
    assert_eq!(page["truncated"], false);
    // A limit over the cap is cut to it, not refused.
    let page = json(s.get("/v1/objects/logs?limit=5000").await).await;
    assert_eq!(page["objects"].as_array().unwrap().len(), 5);
    let r = s.get("/v1/objects/logs?limit=many").await;
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn ranges_answer_206_and_416() {
    let s = TestServer::start(|_| {}).await;
    s.put_object("rng", "digits", "0123456789").await;
    let get = |range: &'static str| {
        s.client
            .get(s.url("/v1/objects/rng/digits"))
            .header("range", range)
            .send()
    };
    let r = get("bytes=2-5").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 2-5/10");
    assert_eq!(header(&r, "etag"), format!("\"{}\"", etag(b"0123456789")));
    assert_eq!(r.text().await.unwrap(), "2345");
    let r = get("bytes=-3").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.unwrap(), "789");
    let r = get("bytes=7-").await.unwrap();
    assert_eq!(header(&r, "content-range"), "bytes 7-9/10");
    assert_eq!(r.text().await.unwrap(), "789");
    let r = get("bytes=10-").await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), "bytes */10");
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("not satisfiable")
    );
    // Not a range this server reads: the whole object, as HTTP allows.
    let r = get("bytes=0-1,4-5").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "0123456789");

    // A large object streams, whole or in part.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    s.put("/v1/objects/rng/big", big.clone()).await;
    let r = s.get("/v1/objects/rng/big").await;
    assert_eq!(header(&r, "content-length"), "1000000");
    assert_eq!(r.bytes().await.unwrap(), big);
    let r = s
        .client
        .get(s.url("/v1/objects/rng/big"))
        .header("range", "bytes=100000-899999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), big[100_000..900_000]);
    s.stop().await;
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused_and_stores_nothing() {
    let s = TestServer::start(|c| c.max_body = 1024).await;
    s.put("/v1/buckets/small", "").await;
    let r = s.put("/v1/objects/small/k", vec![7u8; 2048]).await;
    assert_eq!(r.status(), 413);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("1024 bytes")
    );
    assert_eq!(s.get("/v1/objects/small/k").await.status(), 404);

    // Without a declared length (chunked), the cap is found while streaming.
    let body = reqwest::Body::from(vec![7u8; 4096]);
    let addr = s.base.trim_start_matches("http://").to_owned();
    let status = chunked_put(&addr, "/v1/objects/small/k", body.as_bytes().unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(s.get("/v1/objects/small/k").await.status(), 404);
    let status = chunked_put(&addr, "/v1/objects/small/k", &[1u8; 1000]).await;
    assert_eq!(status, 200);
    assert_eq!(
        s.get("/v1/objects/small/k")
            .await
            .bytes()
            .await
            .unwrap()
            .len(),
        1000
    );
    let r = s.post("/v1/run", vec![0u8; 2048]).await;
    assert_eq!(r.status(), 413);
    s.stop().await;
}

/// A PUT with `Transfer-Encoding: chunked` over a raw connection; the response's status.
async fn chunked_put(addr: &str, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(512) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it has read everything.
    let _ = c.write_all(&req).await;
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{text}"))
}
