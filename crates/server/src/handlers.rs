//! Content-type handlers: a program registered for a media type (`PUT
//! /v1/handlers/{type}/{subtype}`) views any object of that type: `GET
//! /v1/view/{bucket}/{key}` runs it in a fresh VM with the object as `/dev/input` and as
//! stdin, and answers with its stdout (a markdown renderer for `text/markdown`, a thumbnailer
//! for `image/png`...).
//!
//! Registrations are records in the system bucket (`handlers/<type>/<subtype>`, see
//! [`crate::registry`]), read at each view: one small store read, and a registration made or
//! removed is seen by the next request and survives a restart. A handler for `type/*`
//! serves every subtype that has none of its own. The program is compiled once per version
//! of its object (the program cache of [`crate::exec`]).
//!
//! Registrations belong to a tenant: a tenant's are kept under `handlers/~<tenant>/<type>/
//! <subtype>` (an open server's under `handlers/<type>/<subtype>`, as before tenants), a
//! view runs only a handler the caller registered, and `GET /v1/handlers` lists only the
//! caller's own (an admin's lists everyone's, each with its `tenant`). Handlers run within
//! the caller's `max_fuel` and `max_memory` quotas.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use zvm_manifest::Manifest;

use crate::Shared;
use crate::error::ApiError;
use crate::exec::{ObjectRef, Tracked};
use crate::tenants::Caller;

/// Key prefix of handler records in the system bucket.
const PREFIX: &str = "handlers/";

/// Longest type or subtype: RFC 6838 allows 127 characters for each.
pub const MAX_TYPE_LEN: usize = 127;

/// A registration as sent and stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handler {
    /// The program object, `bucket/key`.
    pub program: String,
    /// Arguments given to the program.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The content type of what the program writes (default `application/octet-stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_type: Option<String>,
}

/// Checks one half of a media type: RFC 6838's restricted name characters, lowercase (types
/// are case-insensitive; the registry keeps one spelling), or `*` for a subtype.
fn check_part(field: &str, part: &str, wildcard: bool) -> Result<(), ApiError> {
    if wildcard && part == "*" {
        return Ok(());
    }
    let ok = !part.is_empty()
        && part.len() <= MAX_TYPE_LEN
        && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$&-^_.+".contains(&b));
    if !ok {
        return Err(ApiError::bad(
            field,
            format!(
                "`{part}` is not a media type name: 1 to {MAX_TYPE_LEN} lowercase letters, digits \
                 and `!#$&-^_.+`{}",
                if wildcard { ", or `*`" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// The caller's own prefix of registrations: `handlers/~<tenant>/`, or `handlers/` for an
/// open server's caller (media types start with a letter or digit, never `~`).
fn prefix_of(caller: &Caller) -> String {
    match caller.name() {
        "" => PREFIX.to_owned(),
        name => format!("{PREFIX}~{name}/"),
    }
}

fn key_of(caller: &Caller, ty: &str, sub: &str) -> String {
    format!("{}{ty}/{sub}", prefix_of(caller))
}

fn unknown(ty: &str, sub: &str) -> ApiError {
    ApiError::NotFound(format!("no handler for `{ty}/{sub}`"))
}

/// `PUT /v1/handlers/{type}/{subtype}` with `{"program": "bucket/key", "args": [...],
/// "output_type": "text/html"}`.
pub async fn put(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((ty, sub)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_part("type", &ty, false)?;
    check_part("subtype", &sub, true)?;
    let handler: Handler = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(
            "body",
            format!("{e}; expected {{\"program\": \"bucket/key\"}}"),
        )
    })?;
    let program = ObjectRef::parse("program", &handler.program)?;
    s.tenants.check_bucket(&caller, &program.bucket)?;
    if let Some(t) = &handler.output_type {
        HeaderValue::from_str(t)
            .map_err(|_| ApiError::bad("output_type", format!("`{t}` is not a header value")))?;
    }
    let shared = s.clone();
    let record = handler.clone();
    tokio::task::spawn_blocking(move || {
        shared.store.head(&program.bucket, &program.key)?;
        crate::registry::put(&shared, &key_of(&caller, &ty, &sub), &record)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("registering the handler: {e}")))??;
    Ok(Json(handler).into_response())
}

/// `GET /v1/handlers/{type}/{subtype}`.
pub async fn get(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((ty, sub)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_part("type", &ty, false).map_err(|_| unknown(&ty, &sub))?;
    check_part("subtype", &sub, true).map_err(|_| unknown(&ty, &sub))?;
    let key = key_of(&caller, &ty, &sub);
    let shared = s.clone();
    let found: Option<Handler> =
        tokio::task::spawn_blocking(move || crate::registry::get(&shared, &key))
            .await
            .map_err(|e| ApiError::Internal(format!("reading the handler: {e}")))??;
    Ok(Json(found.ok_or_else(|| unknown(&ty, &sub))?).into_response())
}

/// `DELETE /v1/handlers/{type}/{subtype}`: 204, or 404 if none was registered.
pub async fn delete(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((ty, sub)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_part("type", &ty, false).map_err(|_| unknown(&ty, &sub))?;
    check_part("subtype", &sub, true).map_err(|_| unknown(&ty, &sub))?;
    let key = key_of(&caller, &ty, &sub);
    let shared = s.clone();
    let existed = tokio::task::spawn_blocking(move || {
        match shared.store.delete(crate::registry::SYSTEM_BUCKET, &key) {
            Ok(existed) => Ok(existed),
            Err(zvm_store::Error::NoSuchBucket { .. }) => Ok(false),
            Err(e) => Err(ApiError::from(e)),
        }
    })
    .await
    .map_err(|e| ApiError::Internal(format!("removing the handler: {e}")))??;
    if !existed {
        return Err(unknown(&ty, &sub));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/handlers`: `{"handlers": [{"type": "text/markdown", "program": ...}, ...]}`.
/// An admin's lists every tenant's, each with its `tenant`; anybody else's only its own.
pub async fn list(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let shared = s.clone();
    let prefix = if caller.is_admin() {
        PREFIX.to_owned()
    } else {
        prefix_of(&caller)
    };
    let all: Vec<(String, Handler)> =
        tokio::task::spawn_blocking(move || crate::registry::list(&shared, &prefix, ""))
            .await
            .map_err(|e| ApiError::Internal(format!("listing handlers: {e}")))??;
    let handlers: Vec<serde_json::Value> = all
        .into_iter()
        .filter_map(|(key, h)| {
            let mut v = serde_json::to_value(&h).unwrap_or_default();
            let rest = key.strip_prefix(PREFIX)?;
            match rest.strip_prefix('~').and_then(|r| r.split_once('/')) {
                Some((tenant, ty)) => {
                    v["type"] = ty.into();
                    v["tenant"] = tenant.into();
                }
                // An open server's registration (only an admin's prefix reaches it).
                None => v["type"] = rest.into(),
            }
            Some(v)
        })
        .collect();
    Ok(Json(serde_json::json!({ "handlers": handlers })).into_response())
}

/// `GET /v1/view/{bucket}/{key}`: the object through the handler of its content type;
/// `report=json` for the report, `defer=true` to run it later.
pub async fn view(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((bucket, key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let mut report_json = false;
    let mut defer = crate::deferred::prefers_async(&headers);
    let params: HashMap<String, String> =
        form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    for (name, value) in &params {
        match name.as_str() {
            "report" => report_json = value == "json",
            "defer" => defer = crate::deferred::parse_defer(value)?,
            other => return Err(ApiError::bad(other, "unknown query parameter")),
        }
    }
    s.tenants.check_bucket(&caller, &bucket)?;
    let object = ObjectRef::parse("key", &format!("{bucket}/{key}"))?;
    let shared = s.clone();
    let target = object.clone();
    let who = caller.clone();
    let (info, handler, media) = tokio::task::spawn_blocking(move || {
        let info = shared.store.head(&target.bucket, &target.key)?;
        let media = info
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let (ty, sub) = media.split_once('/').unwrap_or((media.as_str(), ""));
        let mut handler: Option<Handler> = None;
        if check_part("type", ty, false).is_ok() && check_part("subtype", sub, false).is_ok() {
            handler = crate::registry::get(&shared, &key_of(&who, ty, sub))?;
            if handler.is_none() {
                handler = crate::registry::get(&shared, &key_of(&who, ty, "*"))?;
            }
        }
        Ok::<_, ApiError>((info, handler, media))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("finding the handler: {e}")))??;
    let handler = handler.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no handler for `{media}`, the content type of `{object}`; register one with \
             `PUT /v1/handlers/{media}`"
        ))
    })?;
    let program = ObjectRef::parse("program", &handler.program)?;
    let fuel = caller.fuel(None, s.config.max_fuel)?;
    let memory = caller.memory(None, s.config.max_memory)?;
    let tenant = caller.name().to_owned();
    let label = format!("{} for {object}", handler.program);
    let work = move |s: &Shared| {
        let loaded = s.programs.load(&s.runtime, &s.store, &program)?;
        let mut manifest = Manifest::for_program(program.to_string());
        manifest.args = handler.args.clone();
        manifest.limits.fuel = fuel;
        manifest.limits.memory = memory;
        manifest.limits.timeout = s.config.request_timeout;
        manifest.env.insert("ZVM_OBJECT".into(), object.to_string());
        manifest.env.insert("CONTENT_TYPE".into(), media);
        manifest
            .env
            .insert("CONTENT_LENGTH".into(), info.size.to_string());
        let stdin = s.store.get(&object.bucket, &object.key, None)?;
        let tracked = Tracked::start(s, "handler", label, tenant);
        let outcome = crate::exec::execute(
            s,
            &loaded,
            manifest,
            Box::new(stdin.body),
            &[("input".to_owned(), object)],
            &[],
        );
        let mut done = tracked.finish(s, outcome?, report_json)?;
        if done.ok
            && !report_json
            && let Some(t) = handler.output_type.as_deref()
            && let Ok(v) = HeaderValue::from_str(t)
        {
            done.headers.insert(header::CONTENT_TYPE, v);
        }
        Ok(done)
    };
    let label = format!("view {bucket}/{key}");
    crate::deferred::dispatch(&s, &caller, "handler", label, 1, defer, Box::new(work)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_names_are_checked() {
        assert!(check_part("type", "text", false).is_ok());
        assert!(check_part("subtype", "vnd.zvm+json", true).is_ok());
        assert!(check_part("subtype", "*", true).is_ok());
        assert!(check_part("type", "*", false).is_err());
        assert!(check_part("type", "Text", false).is_err());
        assert!(check_part("type", "te/xt", false).is_err());
        assert!(check_part("type", "", false).is_err());
    }
}
