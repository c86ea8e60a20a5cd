//! Every request ends: a client trickling a body in is cut off, and nothing half-received is
//! stored.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test]
async fn a_request_slower_than_the_limit_is_cut_off_and_stores_nothing() {
    let s = TestServer::start(|c| c.request_timeout = Duration::from_secs(1)).await;
    assert_eq!(s.put("/v1/buckets/slow", "").await.status(), 201);
    // One chunk, then nothing for longer than twice the timeout plus the grace.
    let limit = Duration::from_secs(2) + zvm_server::http::REQUEST_GRACE;
    let chunks = futures_util::stream::unfold(0, move |n| async move {
        match n {
            0 => Some((Ok::<_, std::io::Error>(vec![b'x'; 1000]), 1)),
            1 => {
                tokio::time::sleep(limit + Duration::from_secs(3)).await;
                Some((Ok(vec![b'y'; 1000]), 2))
            }
            _ => None,
        }
    });
    let started = Instant::now();
    let r = s
        .client
        .put(s.url("/v1/objects/slow/trickle"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    assert!(started.elapsed() < limit + Duration::from_secs(2));
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("longer than")
    );
    assert_eq!(s.get("/v1/objects/slow/trickle").await.status(), 404);
    // The server is fine.
    assert_eq!(s.put("/v1/objects/slow/quick", "q").await.status(), 200);
}
