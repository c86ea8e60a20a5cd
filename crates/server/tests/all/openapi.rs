//! `docs/openapi.json` against the server: every route of the router is documented and every
//! documented operation exists; and a scenario that calls every operation checks each answer's
//! status is one the document lists for it and each JSON body matches the documented schema.
//!
//! The schema check is a small validator for the subset of JSON Schema the document uses
//! (`$ref`, `type`, `properties`, `required`, `items`, `enum`, `additionalProperties`,
//! `nullable`, `oneOf`): a full JSON Schema crate would bring a large dependency tree for the
//! few keywords an API description needs.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::*;

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `(method, path)` of every route in the router's table (crates/server/src/http.rs), with
/// axum's `{*rest}` written `{rest}` as OpenAPI does.
fn router_routes() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http.rs");
    let source = std::fs::read_to_string(path).unwrap();
    let mut routes = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let open = rest.find('"').unwrap();
        let close = open + 1 + rest[open + 1..].find('"').unwrap();
        let route = rest[open + 1..close].replace("{*", "{");
        // The handlers: up to the matching `)` of `.route(`.
        let mut depth = 1;
        let mut end = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let handlers = &rest[close..end];
        for method in ["get", "put", "post", "delete", "head", "patch", "any"] {
            // `get(handler)` or `.delete(handler)`, not `objects::get(` or `budget(`.
            let call = format!("{method}(");
            let found = handlers.match_indices(&call).any(|(at, _)| {
                at == 0 || {
                    let before = handlers.as_bytes()[at - 1];
                    !(before.is_ascii_alphanumeric() || before == b'_' || before == b':')
                }
            });
            if found {
                routes.insert((method.to_owned(), route.clone()));
            }
        }
    }
    routes
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            routes.insert((method.clone(), path.clone()));
        }
    }
    routes
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let doc = document();
    let mut router = router_routes();
    assert!(router.len() > 10, "found too few routes: {router:?}");
    let documented = documented_routes(&doc);
    // `any` routes are documented per method; HEAD of a GET route is axum's own.
    let anys: Vec<_> = router.iter().filter(|(m, _)| m == "any").cloned().collect();
    for (_, path) in anys {
        router.remove(&("any".to_owned(), path.clone()));
        for (m, p) in &documented {
            if *p == path {
                router.insert((m.clone(), p.clone()));
            }
        }
        assert!(
            documented.iter().any(|(_, p)| *p == path),
            "`{path}` (any method) is not documented"
        );
    }
    let missing: Vec<_> = router.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes not in docs/openapi.json: {missing:?}"
    );
    let extra: Vec<_> = documented
        .difference(&router)
        .filter(|(m, p)| !(m == "head" && router.contains(&("get".to_owned(), p.clone()))))
        .collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

/// Resolves `{"$ref": "#/components/schemas/X"}`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut at = doc;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            assert!(!at.is_null(), "dangling $ref {r}");
            resolve(doc, at)
        }
        None => schema,
    }
}

/// Checks `value` against `schema`; the error names the JSON path.
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let ok = options
            .iter()
            .filter(|o| validate(doc, o, value, at).is_ok())
            .count();
        return if ok >= 1 {
            Ok(())
        } else {
            Err(format!("{at}: matches none of oneOf: {value}"))
        };
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => return Err(format!("{at}: unknown type `{other}` in the schema")),
    };
    if !type_ok {
        return Err(format!("{at}: expected {}, got {value}", ty.unwrap()));
    }
    if let Some(obj) = value.as_object() {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required {
                let r = r.as_str().unwrap();
                if !obj.contains_key(r) {
                    return Err(format!("{at}: missing required `{r}` in {value}"));
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, v, &format!("{at}.{k}"))?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{at}: property `{k}` is not documented"));
                    }
                    Some(s @ Value::Object(_)) => validate(doc, s, v, &format!("{at}.{k}"))?,
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Checks one answer against the document: its status is listed for `method path`, and a
/// JSON body matches that status's schema. Returns the body.
pub async fn check(doc: &Value, method: &str, path: &str, r: reqwest::Response) -> (u16, Vec<u8>) {
    let status = r.status().as_u16();
    let content_type = header(&r, "content-type");
    let body = r.bytes().await.unwrap().to_vec();
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let responses = &op["responses"];
    let response = responses
        .get(status.to_string())
        .or_else(|| responses.get("default"))
        .unwrap_or_else(|| {
            panic!(
                "{method} {path} answered {status}, which the document does not list: {}",
                String::from_utf8_lossy(&body)
            )
        });
    let response = resolve(doc, response);
    if content_type.starts_with("application/json") {
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            !schema.is_null(),
            "{method} {path} {status} answered JSON, but no JSON schema is documented"
        );
        let value: Value = serde_json::from_slice(&body).unwrap();
        if let Err(e) = validate(doc, schema, &value, "$") {
            panic!("{method} {path} {status}: {e}");
        }
    }
    (status, body)
}

#[test]
fn the_validator_rejects_what_it_should() {
    let doc = serde_json::json!({"components": {"schemas": {"E": {
        "type": "object", "required": ["error"], "additionalProperties": false,
        "properties": {"error": {"type": "string"}}}}}});
    let e = serde_json::json!({"$ref": "#/components/schemas/E"});
    assert!(validate(&doc, &e, &serde_json::json!({"error": "x"}), "$").is_ok());
    assert!(validate(&doc, &e, &serde_json::json!({}), "$").is_err());
    assert!(validate(&doc, &e, &serde_json::json!({"error": 1}), "$").is_err());
    assert!(validate(&doc, &e, &serde_json::json!({"error": "x", "more": 1}), "$").is_err());
    let list = serde_json::json!({"type": "array", "items": {"type": "integer", "enum": [1, 2]}});
    assert!(validate(&doc, &list, &serde_json::json!([1, 2]), "$").is_ok());
    assert!(validate(&doc, &list, &serde_json::json!([3]), "$").is_err());
}

/// An echo zapp: its manifest runs the echo guest.
fn echo_zapp() -> Vec<u8> {
    crate::guests::zapp(
        "echo",
        "manifest = \"echo.toml\"",
        &[
            ("echo.toml", b"version = 1\nprogram = \"echo.wasm\"\n"),
            ("echo.wasm", &echo()),
        ],
    )
}

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

/// Calls every documented operation (most of them in several outcomes) and checks each
/// answer against the document; also checks the status the scenario expects, so that a
/// route answering an undocumented-but-listed error by mistake still fails.
#[tokio::test]
async fn every_operation_answers_as_documented() {
    use reqwest::Method;
    let doc = document();
    let s = TestServer::start(|_| {}).await;
    let mut seen = BTreeSet::new();
    macro_rules! call {
        ($method:expr, $template:expr, $path:expr, $expect:expr) => {
            call!(
                $method,
                $template,
                $path,
                $expect,
                |r: reqwest::RequestBuilder| r
            )
        };
        ($method:expr, $template:expr, $path:expr, $expect:expr, $edit:expr) => {{
            let method: Method = $method;
            let r = ($edit)(s.client.request(method.clone(), s.url(&$path)))
                .send()
                .await
                .unwrap();
            let m = method.as_str().to_lowercase();
            let (status, body) = check(&doc, &m, $template, r).await;
            assert_eq!(
                status,
                $expect,
                "{m} {}: {}",
                $path,
                String::from_utf8_lossy(&body)
            );
            seen.insert((m, $template.to_owned()));
            body
        }};
    }
    call!(Method::GET, "/healthz", "/healthz", 200);
    call!(Method::GET, "/metrics", "/metrics", 200);
    call!(Method::GET, "/", "/", 200);
    call!(Method::GET, "/ui/{file}", "/ui/app.js", 200);
    call!(Method::GET, "/ui/{file}", "/ui/nothing.js", 404);

    // Buckets and objects.
    call!(
        Method::PUT,
        "/v1/buckets/{bucket}",
        "/v1/buckets/texts",
        201
    );
    call!(
        Method::PUT,
        "/v1/buckets/{bucket}",
        "/v1/buckets/texts",
        409
    );
    call!(
        Method::PUT,
        "/v1/buckets/{bucket}",
        "/v1/buckets/Bad_Name",
        400
    );
    call!(
        Method::PUT,
        "/v1/buckets/{bucket}",
        "/v1/buckets/zvm-mine",
        403
    );
    call!(Method::GET, "/v1/buckets", "/v1/buckets", 200);
    let put_text = |r: reqwest::RequestBuilder| {
        r.header("content-type", "text/plain")
            .header("x-zvm-meta-lang", "en")
            .body("hello objects")
    };
    call!(
        Method::PUT,
        "/v1/objects/{bucket}/{key}",
        "/v1/objects/texts/a.txt",
        200,
        put_text
    );
    call!(
        Method::PUT,
        "/v1/objects/{bucket}/{key}",
        "/v1/objects/nowhere/a.txt",
        404,
        put_text
    );
    call!(
        Method::GET,
        "/v1/objects/{bucket}/{key}",
        "/v1/objects/texts/a.txt",
        200
    );
    let range = |r: reqwest::RequestBuilder| r.header("range", "bytes=0-4");
    let body = call!(
        Method::GET,
        "/v1/objects/{bucket}/{key}",
        "/v1/objects/texts/a.txt",
        206,
        range
    );
    assert_eq!(body, b"hello");
    let beyond = |r: reqwest::RequestBuilder| r.header("range", "bytes=100-");
    call!(
        Method::GET,
        "/v1/objects/{bucket}/{key}",
        "/v1/objects/texts/a.txt",
        416,
        beyond
    );
    call!(
        Method::GET,
        "/v1/objects/{bucket}/{key}",
        "/v1/objects/texts/missing",
        404
    );
    call!(
        Method::HEAD,
        "/v1/objects/{bucket}/{key}",
        "/v1/objects/texts/a.txt",
        200
    );
    call!(
        Method::GET,
        "/v1/objects/{bucket}",
        "/v1/objects/texts?prefix=a&limit=10",
        200
    );
    call!(
        Method::GET,
        "/v1/objects/{bucket}",
        "/v1/objects/texts?colour=blue",
        400
    );
    call!(
        Method::GET,
        "/v1/objects/{bucket}",
        "/v1/objects/nowhere",
        404
    );

    // Programs.
    s.put_object("bin", "echo.wasm", echo()).await;
    s.put_object("bin", "transform.wasm", transform()).await;
    s.put_object("bin", "fail.wasm", crate::guests::fail())
        .await;
    let stdin = |r: reqwest::RequestBuilder| r.body("to stdout");
    let body = call!(
        Method::POST,
        "/v1/run",
        "/v1/run?program=bin/echo.wasm",
        200,
        stdin
    );
    assert_eq!(body, b"to stdout");
    call!(
        Method::POST,
        "/v1/run",
        "/v1/run?program=bin/echo.wasm&report=json",
        200,
        stdin
    );
    call!(
        Method::POST,
        "/v1/run",
        "/v1/run?program=bin/fail.wasm",
        500
    );
    call!(
        Method::POST,
        "/v1/run",
        "/v1/run?program=bin/fail.wasm&report=json",
        200
    );
    call!(
        Method::POST,
        "/v1/run",
        "/v1/run?program=bin/nothing.wasm",
        404
    );
    call!(Method::POST, "/v1/run", "/v1/run?colour=blue", 400);
    let not_wasm = |r: reqwest::RequestBuilder| r.body("not a module");
    call!(Method::POST, "/v1/run", "/v1/run", 422, not_wasm);
    let zapp_body = |r: reqwest::RequestBuilder| {
        r.header("content-type", "application/x-zvm-zapp")
            .body(echo_zapp())
    };
    call!(Method::POST, "/v1/run", "/v1/run", 200, zapp_body);

    // Deferred.
    let body = call!(
        Method::POST,
        "/v1/run",
        "/v1/run?program=bin/echo.wasm&defer=true",
        202,
        stdin
    );
    let id = serde_json::from_slice::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = std::time::Instant::now();
    loop {
        let r = s.get(&format!("/v1/jobs/{id}")).await;
        let st = json(r).await;
        if !["queued", "running"].contains(&st["state"].as_str().unwrap()) {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    call!(Method::GET, "/v1/jobs/{id}", format!("/v1/jobs/{id}"), 200);
    call!(Method::GET, "/v1/jobs", "/v1/jobs", 200);
    let body = call!(
        Method::GET,
        "/v1/jobs/{id}/result",
        format!("/v1/jobs/{id}/result"),
        200
    );
    assert_eq!(body, b"to stdout");
    call!(
        Method::DELETE,
        "/v1/jobs/{id}",
        format!("/v1/jobs/{id}"),
        204
    );
    call!(Method::GET, "/v1/jobs/{id}", format!("/v1/jobs/{id}"), 404);
    call!(
        Method::GET,
        "/v1/jobs/{id}/result",
        format!("/v1/jobs/{id}/result"),
        404
    );
    call!(
        Method::DELETE,
        "/v1/jobs/{id}",
        format!("/v1/jobs/{id}"),
        404
    );

    // Jobs.
    s.put_object("texts", "b.txt", "beta").await;
    assert_eq!(s.put("/v1/buckets/results", "").await.status(), 201);
    let job = |r: reqwest::RequestBuilder| r.body(JOB);
    call!(Method::POST, "/v1/jobs", "/v1/jobs", 200, job);
    call!(Method::POST, "/v1/jobs", "/v1/jobs?report=json", 200, job);
    let host = |r: reqwest::RequestBuilder| r.body(JOB.replace("texts/*.txt", "/etc/passwd"));
    call!(Method::POST, "/v1/jobs", "/v1/jobs", 400, host);
    call!(Method::POST, "/v1/jobs", "/v1/jobs?defer=true", 202, job);

    // Handlers.
    let handler = |r: reqwest::RequestBuilder| {
        r.header("content-type", "application/json")
            .body(r#"{"program": "bin/echo.wasm", "output_type": "text/plain"}"#)
    };
    let t = "/v1/handlers/{type}/{subtype}";
    call!(Method::PUT, t, "/v1/handlers/text/plain", 200, handler);
    let missing = |r: reqwest::RequestBuilder| r.body(r#"{"program": "bin/none.wasm"}"#);
    call!(Method::PUT, t, "/v1/handlers/text/html", 404, missing);
    call!(Method::GET, t, "/v1/handlers/text/plain", 200);
    call!(Method::GET, t, "/v1/handlers/image/png", 404);
    call!(Method::GET, "/v1/handlers", "/v1/handlers", 200);
    let body = call!(
        Method::GET,
        "/v1/view/{bucket}/{key}",
        "/v1/view/texts/a.txt",
        200
    );
    assert_eq!(body, b"hello objects");
    call!(
        Method::GET,
        "/v1/view/{bucket}/{key}",
        "/v1/view/texts/missing",
        404
    );
    call!(Method::DELETE, t, "/v1/handlers/text/plain", 204);
    call!(Method::DELETE, t, "/v1/handlers/text/plain", 404);
    call!(
        Method::GET,
        "/v1/view/{bucket}/{key}",
        "/v1/view/texts/a.txt",
        404
    );

    // Endpoints.
    let e = "/v1/endpoints/{name}";
    let zapp = |r: reqwest::RequestBuilder| r.body(echo_zapp());
    call!(Method::PUT, e, "/v1/endpoints/echo", 200, zapp);
    call!(Method::PUT, e, "/v1/endpoints/echo?zapp=bin/none.zapp", 404);
    call!(Method::GET, e, "/v1/endpoints/echo", 200);
    call!(Method::GET, e, "/v1/endpoints/none", 404);
    call!(Method::GET, "/v1/endpoints", "/v1/endpoints", 200);
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ] {
        let body = call!(
            method.clone(),
            "/v1/apps/{name}",
            "/v1/apps/echo",
            200,
            stdin
        );
        assert_eq!(body, b"to stdout");
        call!(
            method,
            "/v1/apps/{name}/{path}",
            "/v1/apps/echo/a/b?c=d",
            200,
            stdin
        );
    }
    call!(Method::GET, "/v1/apps/{name}", "/v1/apps/none", 404);
    call!(Method::DELETE, e, "/v1/endpoints/echo", 204);
    call!(Method::DELETE, e, "/v1/endpoints/echo", 404);

    call!(Method::GET, "/v1/status", "/v1/status", 200);
    // Cluster mode only (the cluster test calls it on nodes); a single server answers 404.
    call!(Method::GET, "/v1/cluster", "/v1/cluster", 404);

    // Buckets go.
    call!(
        Method::DELETE,
        "/v1/buckets/{bucket}",
        "/v1/buckets/texts",
        409
    );
    call!(
        Method::DELETE,
        "/v1/objects/{bucket}/{key}",
        "/v1/objects/texts/a.txt",
        204
    );
    call!(
        Method::DELETE,
        "/v1/objects/{bucket}/{key}",
        "/v1/objects/texts/b.txt",
        204
    );
    call!(
        Method::DELETE,
        "/v1/buckets/{bucket}",
        "/v1/buckets/texts",
        204
    );
    call!(
        Method::DELETE,
        "/v1/buckets/{bucket}",
        "/v1/buckets/texts",
        404
    );

    // Every documented operation was called.
    let all = documented_routes(&doc);
    let missed: Vec<_> = all.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "operations the scenario did not call: {missed:?}"
    );
}

/// 401 and 403 as documented, on a server with tenants.
#[tokio::test]
async fn auth_failures_answer_as_documented() {
    use zvm_server::tenants::{TenantFile, resolve};
    let doc = document();
    let s = TestServer::start(|c| {
        c.tenants = resolve(&[
            TenantFile {
                name: "alice".into(),
                token: Some("alice-token".into()),
                ..TenantFile::default()
            },
            TenantFile {
                name: "bob".into(),
                token: Some("bob-token-2".into()),
                ..TenantFile::default()
            },
        ])
        .unwrap();
    })
    .await;
    let r = s.get("/v1/buckets").await;
    assert_eq!(check(&doc, "get", "/v1/buckets", r).await.0, 401);
    let r = s
        .client
        .put(s.url("/v1/buckets/alices"))
        .bearer_auth("alice-token")
        .send()
        .await
        .unwrap();
    assert_eq!(check(&doc, "put", "/v1/buckets/{bucket}", r).await.0, 201);
    let r = s
        .client
        .get(s.url("/v1/objects/alices"))
        .bearer_auth("bob-token-2")
        .send()
        .await
        .unwrap();
    assert_eq!(check(&doc, "get", "/v1/objects/{bucket}", r).await.0, 403);
    let r = s
        .client
        .post(s.url("/v1/run?program=alices/x.wasm"))
        .bearer_auth("bob-token-2")
        .send()
        .await
        .unwrap();
    assert_eq!(check(&doc, "post", "/v1/run", r).await.0, 403);
}
