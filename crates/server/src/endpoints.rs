//! Deployed endpoints: `PUT /v1/endpoints/{name}` deploys a zapp under a name, and every
//! request to `/v1/apps/{name}` or `/v1/apps/{name}/{path}`, whatever its method, runs in a
//! fresh VM of that zapp with a CGI environment (RFC 3875): the request body as stdin, the
//! guest's stdout as the response.
//!
//! # A guided tour
//!
//! * **Deploying** ([`deploy`]): the zapp (the body, or `?zapp=bucket/key`) is read and
//!   checked as for a run, then copied into the system bucket with the endpoint's record
//!   (`endpoints/<name>.zapp` and `endpoints/<name>.json`, one store batch), so the endpoint
//!   keeps the version it was deployed with, whatever happens to the source object, and
//!   survives a restart. Redeploying replaces both.
//! * **The hot path** ([`app`]): the endpoint's zapp, compiled program and prepared manifest
//!   are kept in memory ([`Endpoints`]); a request clones the manifest, adds the CGI
//!   variables and runs. No store access and no write happens per request (after a restart,
//!   the first request of an endpoint reads it back from the store).
//! * **CGI variables**: `GATEWAY_INTERFACE=CGI/1.1`, `SERVER_PROTOCOL`, `SERVER_SOFTWARE`,
//!   `REQUEST_METHOD`, `SCRIPT_NAME` (`/v1/apps/<name>`), `PATH_INFO` (the rest of the path,
//!   `""` or starting with `/`), `QUERY_STRING` (as sent, still percent-encoded),
//!   `REQUEST_URI`, `CONTENT_TYPE` and `CONTENT_LENGTH` when there is a body, `SERVER_NAME` and
//!   `SERVER_PORT` from `Host`, and `HTTP_<NAME>` for every other request header (upper case,
//!   `-` as `_`; `Authorization` is left out, as RFC 3875 advises, so tokens do not reach
//!   guests).
//! * **CGI headers**: an endpoint deployed with `cgi_headers=true` writes headers first
//!   (`Status: 404 Not Found`, `Content-Type: text/html`, `Location: ...`, any other header),
//!   then a blank line, then the body, as a CGI script does. Output that does not parse so is
//!   answered 502 with a message saying what is wrong, and so is a guest that failed (its
//!   output is not a response). Without `cgi_headers`, stdout is the body as is (with the
//!   endpoint's `content_type`), and a failed guest gives 500, as `POST /v1/run` does.
//! * **Tenants**: an endpoint belongs to the tenant that deployed it (`owner` in its record;
//!   a record from before tenants has none, and only an admin may use it). Endpoints are
//!   private to their tenant in this version: showing, redeploying, deleting and *calling*
//!   (`/v1/apps/{name}`) another tenant's endpoint is 403 (as another's bucket is), and
//!   `GET /v1/endpoints` lists only the caller's own (an admin's lists all). An admin may
//!   redeploy anyone's; the endpoint keeps its owner. Each request runs within the *caller's*
//!   `max_fuel` and `max_memory` quotas.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use zvm_manifest::Manifest;
use zvm_vm::Program;

use crate::Shared;
use crate::activity::now_ms;
use crate::error::ApiError;
use crate::exec::{Completed, ObjectRef, Tracked};
use crate::objects::{check_length, read_body};
use crate::registry::SYSTEM_BUCKET;
use crate::tenants::Caller;
use crate::zapps::{LoadedZapp, ZappEntry};

/// Key prefix of endpoint records and zapps in the system bucket.
const PREFIX: &str = "endpoints/";

/// Longest endpoint name: it is a URL segment and part of a key.
pub const MAX_NAME_LEN: usize = 64;

/// Most bytes of CGI headers read before the blank line: far more than real headers take,
/// and a bound on what a guest that never writes the blank line makes the server scan.
pub const MAX_CGI_HEADERS: usize = 64 << 10;

/// An endpoint's record as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRecord {
    pub name: String,
    /// Where the zapp came from: `bucket/key`, or `request body`.
    pub source: String,
    /// BLAKE3 of the deployed zapp: its version.
    pub etag: String,
    /// `name@version` of the zapp.
    pub app: String,
    /// Whether the guest writes CGI headers before its body.
    pub cgi_headers: bool,
    /// `Content-Type` of answers without CGI headers.
    pub content_type: String,
    pub deployed_ms: u64,
    /// The tenant that deployed it; `""` on an open server or for a record from before
    /// tenants.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

/// An endpoint ready to serve.
#[derive(Debug)]
pub struct Deployed {
    pub record: EndpointRecord,
    pub zapp: Arc<LoadedZapp>,
    program: Arc<Program>,
    /// The zapp's manifest with the server's limits; each request adds its CGI variables.
    manifest: Manifest,
}

/// Endpoints in memory by name (see the module doc).
#[derive(Debug, Default)]
pub struct Endpoints {
    deployed: RwLock<HashMap<String, Arc<Deployed>>>,
}

impl Endpoints {
    fn get(&self, name: &str) -> Option<Arc<Deployed>> {
        self.deployed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn set(&self, name: &str, d: Option<Arc<Deployed>>) {
        let mut map = self.deployed.write().unwrap_or_else(|p| p.into_inner());
        match d {
            Some(d) => map.insert(name.to_owned(), d),
            None => map.remove(name),
        };
    }

    pub fn len(&self) -> usize {
        self.deployed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(ApiError::bad(
            "name",
            format!(
                "`{name}` is not an endpoint name: 1 to {MAX_NAME_LEN} lowercase letters, \
                 digits, `-` and `_`, starting with a letter or digit"
            ),
        ));
    }
    Ok(())
}

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound(format!("no endpoint `{name}`"))
}

/// Whether `caller` may use the endpoint of `record`: its owner, or an admin.
fn owns(caller: &Caller, record: &EndpointRecord) -> bool {
    caller.is_admin() || record.owner == caller.name()
}

/// Refuses a caller that does not own the endpoint (403, as for another's bucket).
fn check_owner(caller: &Caller, record: &EndpointRecord) -> Result<(), ApiError> {
    if owns(caller, record) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "endpoint `{}` belongs to another tenant (or to none)",
        record.name
    )))
}

/// The record of the endpoint `name`, from memory or the store, or None.
fn record_of(s: &Shared, name: &str) -> Result<Option<EndpointRecord>, ApiError> {
    if let Some(d) = s.endpoints.get(name) {
        return Ok(Some(d.record.clone()));
    }
    crate::registry::get::<EndpointRecord>(s, &format!("{PREFIX}{name}.json"))
}

/// Makes an endpoint servable from its zapp: a manifest entry whose channels need no host
/// file (a request binds no object), under the server's limits.
fn ready(s: &Shared, record: EndpointRecord, zapp: Arc<LoadedZapp>) -> Result<Deployed, ApiError> {
    let ZappEntry::Manifest { manifest, program } = &zapp.entry else {
        return Err(ApiError::bad(
            "zapp",
            "its entry point is a job; an endpoint runs one VM per request (a VM manifest)",
        ));
    };
    let manifest = crate::zapps::manifest_for(s, manifest, &[], None, None, &[], &[])
        .map_err(|e| ApiError::bad("zapp", format!("as an endpoint: {e}")))?;
    Ok(Deployed {
        record,
        program: program.clone(),
        manifest,
        zapp,
    })
}

/// The endpoint `name` from the store, or None.
fn load(s: &Shared, name: &str) -> Result<Option<Deployed>, ApiError> {
    let Some(record) = crate::registry::get::<EndpointRecord>(s, &format!("{PREFIX}{name}.json"))?
    else {
        return Ok(None);
    };
    let zapp = s.zapps.load_object(
        s,
        &ObjectRef {
            bucket: SYSTEM_BUCKET.into(),
            key: format!("{PREFIX}{name}.zapp"),
        },
    )?;
    Ok(Some(ready(s, record, zapp)?))
}

/// `PUT /v1/endpoints/{name}`: the body is the zapp, or `zapp=bucket/key` names it;
/// `cgi_headers=true` and `content_type=` as described in the module doc.
pub async fn deploy(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let mut source: Option<ObjectRef> = None;
    let mut cgi_headers = false;
    let mut content_type = "application/octet-stream".to_owned();
    for (field, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match field.as_ref() {
            "zapp" => source = Some(ObjectRef::parse("zapp", &value)?),
            "cgi_headers" => {
                cgi_headers = crate::deferred::parse_defer(&value)
                    .map_err(|_| ApiError::bad("cgi_headers", "expected `true` or `false`"))?
            }
            "content_type" => {
                HeaderValue::from_str(&value).map_err(|_| {
                    ApiError::bad("content_type", format!("`{value}` is not a header value"))
                })?;
                content_type = value.into_owned();
            }
            other => return Err(ApiError::bad(other, "unknown query parameter")),
        }
    }
    if let Some(o) = &source {
        s.tenants.check_bucket(&caller, &o.bucket)?;
    }
    check_length(&headers, s.config.max_body)?;
    let body = read_body(body, s.config.max_body).await?;
    if source.is_none() && body.is_empty() {
        return Err(ApiError::bad(
            "zapp",
            "missing: send the zapp as the body or name it with `zapp=bucket/key`",
        ));
    }
    let shared = s.clone();
    let deployed = tokio::task::spawn_blocking(move || {
        let s = &*shared;
        let owner = match record_of(s, &name)? {
            Some(old) => {
                check_owner(&caller, &old)?;
                old.owner
            }
            None => caller.name().to_owned(),
        };
        let (zapp, bytes): (Arc<LoadedZapp>, Bytes) = match &source {
            Some(o) => {
                let zapp = s.zapps.load_object(s, o)?;
                let mut got = s.store.get(&o.bucket, &o.key, None)?;
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut got.body, &mut bytes)
                    .map_err(|e| ApiError::Internal(format!("reading `{o}`: {e}")))?;
                (zapp, Bytes::from(bytes))
            }
            None => (s.zapps.load_bytes(s, &body, "request-body.zapp")?, body),
        };
        let record = EndpointRecord {
            name: name.clone(),
            source: source.map_or_else(|| "request body".into(), |o| o.to_string()),
            etag: zapp.hash.clone(),
            app: zapp.label(),
            cgi_headers,
            content_type,
            deployed_ms: now_ms(),
            owner,
        };
        let deployed = ready(s, record, zapp)?;
        crate::registry::ensure_bucket(s)?;
        let json = serde_json::to_vec_pretty(&deployed.record)
            .map_err(|e| ApiError::Internal(format!("endpoint `{name}`: {e}")))?;
        let mut batch = s.store.batch();
        batch.put(
            SYSTEM_BUCKET,
            &format!("{PREFIX}{name}.zapp"),
            bytes.as_ref(),
            zvm_store::PutMeta {
                content_type: Some(crate::zapps::ZAPP_CONTENT_TYPE.into()),
                ..Default::default()
            },
        )?;
        batch.put(
            SYSTEM_BUCKET,
            &format!("{PREFIX}{name}.json"),
            json.as_slice(),
            zvm_store::PutMeta {
                content_type: Some("application/json".into()),
                ..Default::default()
            },
        )?;
        batch.commit()?;
        let deployed = Arc::new(deployed);
        s.endpoints.set(&name, Some(deployed.clone()));
        Ok::<_, ApiError>(deployed)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("deploying the endpoint: {e}")))??;
    Ok((StatusCode::OK, Json(deployed.record.clone())).into_response())
}

/// The endpoint `name`, from memory or, after a restart, from the store.
async fn find(s: &Arc<Shared>, name: &str) -> Result<Arc<Deployed>, ApiError> {
    if let Some(d) = s.endpoints.get(name) {
        return Ok(d);
    }
    check_name(name).map_err(|_| unknown(name))?;
    let shared = s.clone();
    let owned = name.to_owned();
    let loaded = tokio::task::spawn_blocking(move || load(&shared, &owned))
        .await
        .map_err(|e| ApiError::Internal(format!("reading endpoint `{name}`: {e}")))??
        .ok_or_else(|| unknown(name))?;
    let loaded = Arc::new(loaded);
    s.endpoints.set(name, Some(loaded.clone()));
    Ok(loaded)
}

/// `GET /v1/endpoints/{name}`: the record.
pub async fn show(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let d = find(&s, &name).await?;
    check_owner(&caller, &d.record)?;
    Ok(Json(d.record.clone()).into_response())
}

/// `GET /v1/endpoints`: every record the caller owns (an admin: every record), by name.
pub async fn list(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let shared = s.clone();
    let all: Vec<(String, EndpointRecord)> =
        tokio::task::spawn_blocking(move || crate::registry::list(&shared, PREFIX, ".json"))
            .await
            .map_err(|e| ApiError::Internal(format!("listing endpoints: {e}")))??;
    let endpoints: Vec<EndpointRecord> = all
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| owns(&caller, r))
        .collect();
    Ok(Json(serde_json::json!({ "endpoints": endpoints })).into_response())
}

/// `DELETE /v1/endpoints/{name}`: 204, 403 for another tenant's, or 404.
pub async fn remove(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_name(&name).map_err(|_| unknown(&name))?;
    let shared = s.clone();
    let owned = name.clone();
    let existed = tokio::task::spawn_blocking(move || {
        let record = format!("{PREFIX}{owned}.json");
        if shared.store.head(SYSTEM_BUCKET, &record).is_err() {
            return Ok(false);
        }
        if let Some(old) = record_of(&shared, &owned)? {
            check_owner(&caller, &old)?;
        }
        let mut batch = shared.store.batch();
        batch.delete(SYSTEM_BUCKET, &record)?;
        batch.delete(SYSTEM_BUCKET, &format!("{PREFIX}{owned}.zapp"))?;
        batch.commit()?;
        Ok::<_, ApiError>(true)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("removing endpoint `{name}`: {e}")))??;
    s.endpoints.set(&name, None);
    if !existed {
        return Err(unknown(&name));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The CGI variables of a request (see the module doc).
fn cgi_env(
    env: &mut std::collections::BTreeMap<String, String>,
    name: &str,
    path: &str,
    request: &axum::http::request::Parts,
    body_len: usize,
) {
    let mut set = |k: &str, v: String| {
        if !v.contains('\0') {
            env.insert(k.to_owned(), v);
        }
    };
    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set(
        "SERVER_SOFTWARE",
        format!("zvm/{}", env!("CARGO_PKG_VERSION")),
    );
    set("SERVER_PROTOCOL", format!("{:?}", request.version));
    set("REQUEST_METHOD", request.method.to_string());
    set("SCRIPT_NAME", format!("/v1/apps/{name}"));
    set(
        "PATH_INFO",
        if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        },
    );
    set("QUERY_STRING", request.uri.query().unwrap_or("").to_owned());
    set(
        "REQUEST_URI",
        request
            .uri
            .path_and_query()
            .map_or_else(|| request.uri.path().to_owned(), |p| p.to_string()),
    );
    let h = &request.headers;
    if let Some(t) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        set("CONTENT_TYPE", t.to_owned());
    }
    if body_len > 0 || h.contains_key(header::CONTENT_LENGTH) {
        set("CONTENT_LENGTH", body_len.to_string());
    }
    if let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) {
        let (server, port) = match host.rsplit_once(':') {
            Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (n, p),
            _ => (host, "80"),
        };
        set("SERVER_NAME", server.to_owned());
        set("SERVER_PORT", port.to_owned());
    }
    let mut joined: std::collections::BTreeMap<String, String> = Default::default();
    for (k, v) in h {
        if k == header::CONTENT_TYPE || k == header::CONTENT_LENGTH || k == header::AUTHORIZATION {
            continue;
        }
        let var = format!("HTTP_{}", k.as_str().to_ascii_uppercase().replace('-', "_"));
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        joined
            .entry(var)
            .and_modify(|old| {
                old.push_str(", ");
                old.push_str(&v);
            })
            .or_insert(v);
    }
    for (k, v) in joined {
        set(&k, v);
    }
}

/// Parses a CGI response: headers, a blank line, the body. The error says what is wrong.
fn parse_cgi(out: &Bytes) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let window = &out[..out.len().min(MAX_CGI_HEADERS)];
    let end = window
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
        .into_iter()
        .chain(
            window
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| (i, i + 4)),
        )
        .min_by_key(|(i, _)| *i);
    let Some((head_end, body_start)) = end else {
        return Err(format!(
            "no blank line ending the CGI headers in the first {} bytes of its output",
            window.len()
        ));
    };
    let head = std::str::from_utf8(&out[..head_end])
        .map_err(|_| "its CGI headers are not UTF-8 text".to_string())?;
    let mut status: Option<StatusCode> = None;
    let mut headers = HeaderMap::new();
    for (i, line) in head.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "CGI header line {} `{}` is not `Name: value`",
                i + 1,
                line.escape_debug()
                    .to_string()
                    .chars()
                    .take(80)
                    .collect::<String>()
            ));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or("");
            let code = code
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| {
                    format!("`Status: {value}` does not start with a status code 100 to 599")
                })?;
            status = Some(code);
            continue;
        }
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            format!(
                "CGI header name `{}` is not a valid header name",
                name.escape_debug()
            )
        })?;
        // Framing is the server's: the body's length is known.
        if n == header::CONTENT_LENGTH || n == header::TRANSFER_ENCODING || n == header::CONNECTION
        {
            continue;
        }
        let v = HeaderValue::from_str(value).map_err(|_| {
            format!("CGI header `{name}` has a value that is not a valid header value")
        })?;
        headers.append(n, v);
    }
    let status = status.unwrap_or(if headers.contains_key(header::LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    if !headers.contains_key(header::CONTENT_TYPE)
        && !headers.contains_key(header::LOCATION)
        && status == StatusCode::OK
    {
        return Err("its CGI headers have neither `Content-Type`, `Location` nor `Status`".into());
    }
    Ok((status, headers, out.slice(body_start..)))
}

/// Any method on `/v1/apps/{name}` and `/v1/apps/{name}/{*path}`.
pub async fn app(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let name = params.get("name").cloned().unwrap_or_default();
    let path = params.get("path").cloned().unwrap_or_default();
    let d = find(&s, &name).await?;
    check_owner(&caller, &d.record)?;
    let fuel = caller.fuel(None, s.config.max_fuel)?;
    let memory = caller.memory(None, s.config.max_memory)?;
    let (parts, body) = request.into_parts();
    check_length(&parts.headers, s.config.max_body)?;
    let body = read_body(body, s.config.max_body).await?;
    let report_json = parts
        .headers
        .get("x-zvm-report")
        .is_some_and(|v| v.as_bytes() == b"json");
    let mut manifest = d.manifest.clone();
    manifest.limits.fuel = manifest.limits.fuel.min(fuel);
    manifest.limits.memory = manifest.limits.memory.min(memory);
    cgi_env(&mut manifest.env, &name, &path, &parts, body.len());
    let tenant = caller.name().to_owned();
    let endpoint = d.clone();
    let work = move |s: &Shared| {
        let tracked = Tracked::start(s, "endpoint", endpoint.record.name.clone(), tenant);
        let outcome = crate::exec::execute(
            s,
            &endpoint.program,
            manifest,
            Box::new(std::io::Cursor::new(body)),
            &[],
            &[],
        );
        let done = tracked.finish(s, outcome?, report_json)?;
        if report_json {
            return Ok(done);
        }
        respond(&endpoint.record, done)
    };
    crate::deferred::dispatch(&s, &caller, "endpoint", name, 1, false, Box::new(work)).await
}

/// The endpoint's answer from a run's: CGI headers parsed, or the body typed.
fn respond(record: &EndpointRecord, mut done: Completed) -> Result<Completed, ApiError> {
    if !record.cgi_headers {
        if let Ok(v) = HeaderValue::from_str(&record.content_type) {
            done.headers.insert(header::CONTENT_TYPE, v);
        }
        return Ok(done);
    }
    let bad = |why: String| ApiError::BadGateway(format!("endpoint `{}`: {why}", record.name));
    if !done.ok {
        let state = done
            .headers
            .get("x-zvm-state-text")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("failed")
            .to_owned();
        return Err(bad(format!(
            "the guest failed ({state}), so its output is no response"
        )));
    }
    let (status, headers, body) = parse_cgi(&done.body).map_err(bad)?;
    done.status = status;
    done.headers.remove(header::CONTENT_TYPE);
    for (k, v) in &headers {
        done.headers.append(k, v.clone());
    }
    done.body = body;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        parse_cgi(&Bytes::from(s.to_owned()))
    }

    #[test]
    fn cgi_headers_parse() {
        let (status, h, body) =
            parse("Status: 404 Not Found\r\nContent-Type: text/html\r\nX-A: 1\r\n\r\n<p>gone</p>")
                .unwrap();
        assert_eq!(status, 404);
        assert_eq!(h["content-type"], "text/html");
        assert_eq!(h["x-a"], "1");
        assert_eq!(body, "<p>gone</p>");
        let (status, h, _) = parse("Location: /elsewhere\n\n").unwrap();
        assert_eq!(status, 302);
        assert_eq!(h["location"], "/elsewhere");
        let (status, _, body) = parse("Content-Type: text/plain\n\nhi\n\nthere").unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "hi\n\nthere");
    }

    #[test]
    fn malformed_cgi_headers_say_why() {
        assert!(parse("just a body").unwrap_err().contains("no blank line"));
        assert!(
            parse("Content-Type text/plain\n\n")
                .unwrap_err()
                .contains("`Name: value`")
        );
        assert!(
            parse("Status: abc\n\n")
                .unwrap_err()
                .contains("status code")
        );
        assert!(
            parse("Status: 999 Huh\n\n")
                .unwrap_err()
                .contains("status code")
        );
        assert!(parse("X-A: 1\n\n").unwrap_err().contains("neither"));
        assert!(
            parse("Bad Name: 1\nContent-Type: a/b\n\n")
                .unwrap_err()
                .contains("header name")
        );
    }

    #[test]
    fn endpoint_names_are_checked() {
        assert!(check_name("hello-1").is_ok());
        assert!(check_name("Hello").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
    }
}
