//! Content-type handlers: registered per media type (or `type/*`), run with the object as
//! `/dev/input` and stdin, persisted across a restart.

use crate::guests::c_guest;
use crate::support::{TestServer, header, json};

#[tokio::test]
async fn objects_are_viewed_through_the_handler_of_their_type_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let s = TestServer::start(|c| c.data_dir = dir.clone()).await;
    s.put_object("bin", "view.wasm", c_guest("view")).await;
    let r = s
        .client
        .put(s.url("/v1/objects/docs/note.md"))
        .header("content-type", "text/markdown; charset=utf-8")
        .body("hello, handler")
        .send()
        .await;
    assert_eq!(r.unwrap().status(), 404, "no bucket yet");
    s.put("/v1/buckets/docs", "").await;
    let r = s
        .client
        .put(s.url("/v1/objects/docs/note.md"))
        .header("content-type", "text/markdown; charset=utf-8")
        .body("hello, handler")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // No handler yet.
    let r = s.get("/v1/view/docs/note.md").await;
    assert_eq!(r.status(), 404);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("text/markdown")
    );

    let r = s
        .put(
            "/v1/handlers/text/markdown",
            r#"{"program": "bin/view.wasm", "args": ["md"], "output_type": "text/html"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .put(
            "/v1/handlers/text/markdown",
            r#"{"program": "bin/none.wasm"}"#,
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = s
        .put(
            "/v1/handlers/text/markdown",
            r#"{"programme": "bin/view.wasm"}"#,
        )
        .await;
    assert_eq!(r.status(), 400);

    let r = s.get("/v1/view/docs/note.md").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/html");
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    assert_eq!(
        r.text().await.unwrap(),
        "md text/markdown docs/note.md\nHELLO, HANDLER\nstdin 14\n"
    );
    s.stop().await;

    // After a restart: still registered; a `text/*` handler serves other text types.
    let s = TestServer::start(|c| c.data_dir = dir.clone()).await;
    let r = s.get("/v1/view/docs/note.md").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("md text/markdown"));
    s.client
        .put(s.url("/v1/objects/docs/a.txt"))
        .header("content-type", "text/plain")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(s.get("/v1/view/docs/a.txt").await.status(), 404);
    let r = s
        .put("/v1/handlers/text/*", r#"{"program": "bin/view.wasm"}"#)
        .await;
    assert_eq!(r.status(), 200);
    let r = s.get("/v1/view/docs/a.txt").await;
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert_eq!(
        r.text().await.unwrap(),
        "- text/plain docs/a.txt\nABC\nstdin 3\n"
    );

    let listed = json(s.get("/v1/handlers").await).await;
    let types: Vec<&str> = listed["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["text/*", "text/markdown"]);
    let r = s
        .client
        .delete(s.url("/v1/handlers/text/markdown"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Now the wildcard serves markdown too.
    let r = s.get("/v1/view/docs/note.md").await;
    assert!(r.text().await.unwrap().starts_with("- text/markdown"));
    let r = s
        .client
        .delete(s.url("/v1/handlers/text/markdown"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await;
}
