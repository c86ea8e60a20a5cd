//! Deployed endpoints: a CGI environment per request, CGI headers (status, content type),
//! malformed CGI output as 502, plain endpoints, and endpoints surviving a restart.

use crate::guests::{c_guest, zapp};
use crate::support::{TestServer, echo, header, json};

fn cgi_zapp() -> Vec<u8> {
    zapp(
        "cgi",
        "manifest = \"cgi.toml\"",
        &[
            ("cgi.toml", b"version = 1\nprogram = \"cgi.wasm\"\n"),
            ("cgi.wasm", &c_guest("cgi")),
        ],
    )
}

#[tokio::test]
async fn requests_run_with_a_cgi_environment_and_answer_with_cgi_headers() {
    let s = TestServer::start(|_| {}).await;
    let r = s
        .put("/v1/endpoints/hello?cgi_headers=true", cgi_zapp())
        .await;
    assert_eq!(r.status(), 200);
    let record = json(r).await;
    assert_eq!(record["app"], "cgi@1.0.0");
    assert_eq!(record["cgi_headers"], true);

    let r = s
        .client
        .post(s.url("/v1/apps/hello/some/path?x=1&y=%20"))
        .header("x-test", "yes")
        .header("authorization", "Bearer secret")
        .header("content-type", "text/plain")
        .body("the body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "content-type"), "text/x-cgi");
    assert_eq!(header(&r, "x-guest"), "zvm");
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    let body = r.text().await.unwrap();
    for line in [
        "GATEWAY_INTERFACE=CGI/1.1",
        "SERVER_PROTOCOL=HTTP/1.1",
        "REQUEST_METHOD=POST",
        "SCRIPT_NAME=/v1/apps/hello",
        "PATH_INFO=/some/path",
        "QUERY_STRING=x=1&y=%20",
        "CONTENT_TYPE=text/plain",
        "CONTENT_LENGTH=8",
        "HTTP_X_TEST=yes",
        "HTTP_AUTHORIZATION=(unset)",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} not in:\n{body}");
    }
    assert!(body.ends_with("the body"), "{body}");

    // Any method, and the bare name.
    let r = s.get("/v1/apps/hello").await;
    assert_eq!(r.status(), 201);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("REQUEST_METHOD=GET\n") && body.contains("PATH_INFO=\n"),
        "{body}"
    );

    // Output that is not a CGI response, and a guest that fails: 502 saying why.
    let r = s.get("/v1/apps/hello?mode=bad").await;
    assert_eq!(r.status(), 502);
    let e = json(r).await["error"].as_str().unwrap().to_owned();
    assert!(
        e.contains("endpoint `hello`") && e.contains("blank line"),
        "{e}"
    );
    let r = s.get("/v1/apps/hello?mode=fail").await;
    assert_eq!(r.status(), 502);
    assert!(json(r).await["error"].as_str().unwrap().contains("failed"));

    // The report on request.
    let r = s
        .client
        .get(s.url("/v1/apps/hello"))
        .header("x-zvm-report", "json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["state"]["kind"], "ok");

    assert_eq!(s.get("/v1/apps/nothing").await.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn a_plain_endpoint_answers_with_stdout_and_its_content_type() {
    let s = TestServer::start(|_| {}).await;
    let app = zapp(
        "echo",
        "manifest = \"m.toml\"",
        &[
            ("m.toml", b"version = 1\nprogram = \"echo.wasm\"\n"),
            ("echo.wasm", &echo()),
        ],
    );
    s.put_object("apps", "echo.zapp", app).await;
    let r = s
        .put(
            "/v1/endpoints/echo?zapp=apps/echo.zapp&content_type=text/plain",
            "",
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = s.post("/v1/apps/echo", "hello, endpoint").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/plain");
    assert_eq!(r.text().await.unwrap(), "hello, endpoint");
    // Deployed as it was: replacing the source object does not change the endpoint.
    s.put_object("apps", "echo.zapp", "gone").await;
    let r = s.post("/v1/apps/echo", "still").await;
    assert_eq!(r.text().await.unwrap(), "still");
    // A zapp whose channel names a host file cannot be an endpoint.
    let bad = zapp(
        "bad",
        "manifest = \"m.toml\"",
        &[
            (
                "m.toml",
                b"version = 1\nprogram = \"echo.wasm\"\n[[channel]]\nname = \"input\"\npath = \"in.txt\"\nmode = \"read\"\n",
            ),
            ("echo.wasm", &echo()),
        ],
    );
    let r = s.put("/v1/endpoints/bad", bad).await;
    assert_eq!(r.status(), 400);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("host file")
    );
    assert_eq!(s.put("/v1/endpoints/Bad%20Name", "").await.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn endpoints_survive_a_restart_and_go_when_deleted() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let s = TestServer::start(|c| c.data_dir = dir.clone()).await;
    let r = s
        .put("/v1/endpoints/hello?cgi_headers=true", cgi_zapp())
        .await;
    assert_eq!(r.status(), 200);
    s.stop().await;

    let s = TestServer::start(|c| c.data_dir = dir.clone()).await;
    let listed = json(s.get("/v1/endpoints").await).await;
    assert_eq!(listed["endpoints"][0]["name"], "hello", "{listed}");
    let r = s.get("/v1/apps/hello/after/restart").await;
    assert_eq!(r.status(), 201);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("PATH_INFO=/after/restart\n")
    );
    let r = s
        .client
        .delete(s.url("/v1/endpoints/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.get("/v1/apps/hello").await.status(), 404);
    assert_eq!(s.get("/v1/endpoints/hello").await.status(), 404);
    s.stop().await;

    let s = TestServer::start(|c| c.data_dir = dir.clone()).await;
    assert_eq!(s.get("/v1/apps/hello").await.status(), 404);
    s.stop().await;
}
