//! The objects API over the embedded store: buckets, and objects with their content type,
//! user metadata (`x-zvm-meta-*`), etags and byte ranges.
//!
//! The store is blocking (files and fsyncs), so every call into it runs on tokio's blocking
//! pool. Bodies stream both ways: a `PUT` reads the request body through a bridge into the
//! store's `Read` (never holding the whole object in memory, and stopping at the body cap),
//! and a `GET` of a large object is read in chunks by a blocking task feeding the response.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use zvm_store::{ByteRange, ObjectInfo, PutMeta};

use crate::Shared;
use crate::error::ApiError;
use crate::tenants::Caller;

/// Prefix of the headers that carry user metadata, both ways.
pub const META_PREFIX: &str = "x-zvm-meta-";

/// Most objects one listing returns, as in S3: a page stays a small response, and a client
/// pages on with `start_after`.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Size of the chunks a large object is streamed in: large enough for disk speed, small
/// enough that many concurrent downloads hold little memory.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks read ahead of a slow client per download.
const CHUNKS_AHEAD: usize = 4;

/// Marks a body that went past the cap, so that the store's body error becomes 413.
#[derive(Debug)]
struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body over the limit")
    }
}

impl std::error::Error for BodyTooLarge {}

/// A reader that fails once more than `limit` bytes come through.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| io::Error::other(BodyTooLarge))?;
        Ok(n)
    }
}

/// The body length a request declares in `Content-Length`, if it does.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Refuses a body whose declared length is over `limit` before reading any of it.
pub(crate) fn check_length(headers: &HeaderMap, limit: u64) -> Result<(), ApiError> {
    match declared_length(headers) {
        Some(n) if n > limit => Err(ApiError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

/// A blocking reader of `body`, failing past `limit` bytes. Must be made on a runtime
/// thread and read on a blocking one.
fn body_reader(body: Body, limit: u64) -> impl Read + Send + 'static {
    let stream = body.into_data_stream().map_err(io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    Capped {
        inner: tokio_util::io::SyncIoBridge::new(reader),
        left: limit,
    }
}

/// Reads a whole body into memory, failing past `limit` bytes (413).
pub(crate) async fn read_body(body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match axum::body::to_bytes(body, limit_usize).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::BodyTooLarge { limit })
            } else {
                Err(ApiError::Body(e.to_string()))
            }
        }
    }
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}

/// A bucket name and an object key from the path.
#[derive(Debug, Deserialize)]
pub struct ObjectPath {
    bucket: String,
    key: String,
}

/// `PUT /v1/buckets/{bucket}`: 201 with the bucket, 409 if it exists.
pub async fn create_bucket(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(bucket): Path<String>,
) -> Result<Response, ApiError> {
    s.tenants.check_new_bucket(&bucket)?;
    let info = blocking(move || {
        let info = s.store.create_bucket(&bucket)?;
        if let Err(e) = s.tenants.record_owner(&s, &caller, &bucket) {
            // A bucket nobody owns is an admin's only: take it back rather than leave it.
            let _ = s.store.delete_bucket(&bucket);
            return Err(e);
        }
        Ok(info)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// `DELETE /v1/buckets/{bucket}`: 204; 409 unless it is empty.
pub async fn delete_bucket(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(bucket): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.tenants.check_bucket(&caller, &bucket)?;
    blocking(move || {
        s.store.delete_bucket(&bucket)?;
        s.tenants.forget_owner(&s, &bucket)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/buckets`: every bucket.
pub async fn list_buckets(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let listing = s.clone();
    let buckets: Vec<_> = blocking(move || Ok(listing.store.list_buckets()?))
        .await?
        .into_iter()
        .filter(|b| s.tenants.visible(&caller, &b.name))
        .collect();
    Ok(Json(serde_json::json!({ "buckets": buckets })).into_response())
}

/// `PUT /v1/objects/{bucket}/{*key}`: stores the body; 200 with the object's metadata.
pub async fn put_object(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(ObjectPath { bucket, key }): Path<ObjectPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    s.tenants.check_bucket(&caller, &bucket)?;
    let limit = s.config.max_body;
    check_length(&headers, limit)?;
    let meta = put_meta(&headers)?;
    // With tenants, the object this put replaces frees its bytes; with a `max_stored`
    // quota, the body may take at most what is then left (going past it is 403, not 413).
    let replaced = if s.tenants.enabled() {
        let (shared, b, k) = (s.clone(), bucket.clone(), key.clone());
        blocking(move || stored_size(&shared, &b, &k)).await?
    } else {
        0
    };
    let mut quota = None;
    if let Some((_, room)) = s.tenants.room(&bucket) {
        let declared = declared_length(&headers).unwrap_or(0);
        s.tenants
            .check_room(&bucket, declared.saturating_sub(replaced))?;
        quota = Some(room + replaced).filter(|&room| room < limit);
    }
    let reader = body_reader(body, quota.unwrap_or(limit));
    let shared = s.clone();
    let account = bucket.clone();
    let result = blocking(move || Ok(shared.store.put(&bucket, &key, reader, meta)?)).await;
    let info = match result {
        Err(ApiError::Store(zvm_store::Error::Body { source, .. }))
            if source.get_ref().is_some_and(|e| e.is::<BodyTooLarge>()) =>
        {
            return Err(match quota {
                Some(room) => ApiError::Forbidden(format!(
                    "the body goes over the tenant's `max_stored` quota ({room} bytes left)"
                )),
                None => ApiError::BodyTooLarge { limit },
            });
        }
        other => other?,
    };
    s.tenants
        .account(&account, info.size as i64 - replaced as i64);
    let mut response = Json(&info).into_response();
    set_etag(response.headers_mut(), &info.etag);
    Ok(response)
}

/// The size of the object stored as `bucket/key`, 0 if there is none: what a put or an
/// output replacing it frees. Blocking.
pub(crate) fn stored_size(s: &Shared, bucket: &str, key: &str) -> Result<u64, ApiError> {
    match s.store.head(bucket, key) {
        Ok(info) => Ok(info.size),
        Err(zvm_store::Error::NoSuchKey { .. }) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// The content type and `x-zvm-meta-*` headers of a put.
fn put_meta(headers: &HeaderMap) -> Result<PutMeta, ApiError> {
    let text = |name: &str, v: &HeaderValue| {
        std::str::from_utf8(v.as_bytes())
            .map(str::to_owned)
            .map_err(|_| ApiError::bad(name, "the header's value is not UTF-8"))
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| text("content-type", v))
        .transpose()?;
    let mut user = BTreeMap::new();
    for (name, value) in headers {
        if let Some(meta) = name.as_str().strip_prefix(META_PREFIX) {
            user.insert(meta.to_owned(), text(name.as_str(), value)?);
        }
    }
    Ok(PutMeta { content_type, user })
}

fn set_etag(headers: &mut HeaderMap, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        headers.insert(header::ETAG, v);
    }
}

/// The headers that describe an object, for `GET` and `HEAD`.
fn object_headers(headers: &mut HeaderMap, info: &ObjectInfo) {
    set_etag(headers, &info.etag);
    let content_type = info
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    if let Ok(v) = HeaderValue::from_bytes(content_type.as_bytes()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        HeaderName::from_static("x-zvm-modified-ms"),
        HeaderValue::from(info.modified),
    );
    for (name, value) in &info.user {
        let name = HeaderName::from_bytes(format!("{META_PREFIX}{name}").as_bytes());
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_bytes(value.as_bytes())) {
            headers.insert(name, value);
        }
    }
}

/// `GET /v1/objects/{bucket}/{*key}`: the object, or with `Range` the part of it (206, or
/// 416 with `Content-Range: bytes */size`). A `Range` that does not parse is ignored, as
/// HTTP allows.
pub async fn get_object(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(ObjectPath { bucket, key }): Path<ObjectPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.tenants.check_bucket(&caller, &bucket)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| ByteRange::parse_header(v).ok());
    let (object, small) = blocking(move || {
        let mut object = s.store.get(&bucket, &key, range)?;
        // A small object is read here at once rather than by a task of its own.
        let small = if object.body.remaining() <= CHUNK_BYTES as u64 {
            let mut data = Vec::with_capacity(object.body.remaining() as usize);
            object
                .body
                .read_to_end(&mut data)
                .map_err(|e| ApiError::Internal(format!("reading object `{key}`: {e}")))?;
            Some(data)
        } else {
            None
        };
        Ok((object, small))
    })
    .await?;
    let length = object
        .range
        .as_ref()
        .map_or(object.info.size, |r| r.end - r.start);
    let mut response = match small {
        Some(data) => Body::from(data).into_response(),
        None => Body::from_stream(stream(object.body)).into_response(),
    };
    let h = response.headers_mut();
    object_headers(h, &object.info);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(r) = object.range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!(
            "bytes {}-{}/{}",
            r.start,
            r.end.saturating_sub(1),
            object.info.size
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// A stream of `reader`'s bytes in chunks, read by a blocking task.
fn stream(
    mut reader: impl Read + Send + 'static,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = vec![0; CHUNK_BYTES];
            let item = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            // The client went away: stop reading.
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// `HEAD /v1/objects/{bucket}/{*key}`: the headers of `GET`, without the body.
pub async fn head_object(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(ObjectPath { bucket, key }): Path<ObjectPath>,
) -> Result<Response, ApiError> {
    s.tenants.check_bucket(&caller, &bucket)?;
    let info = blocking(move || Ok(s.store.head(&bucket, &key)?)).await?;
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    object_headers(h, &info);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    Ok(response)
}

/// `DELETE /v1/objects/{bucket}/{*key}`: 204 whether or not it existed (as in S3); 404 for
/// a missing bucket.
pub async fn delete_object(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(ObjectPath { bucket, key }): Path<ObjectPath>,
) -> Result<StatusCode, ApiError> {
    s.tenants.check_bucket(&caller, &bucket)?;
    let freed = if s.tenants.enabled() {
        let (shared, b, k) = (s.clone(), bucket.clone(), key.clone());
        blocking(move || stored_size(&shared, &b, &k)).await?
    } else {
        0
    };
    let account = bucket.clone();
    let shared = s.clone();
    blocking(move || Ok(shared.store.delete(&bucket, &key)?)).await?;
    s.tenants.account(&account, -(freed as i64));
    Ok(StatusCode::NO_CONTENT)
}

/// The query of a listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    start_after: Option<String>,
    limit: Option<usize>,
}

/// A page of a listing.
#[derive(Debug, Serialize)]
struct Listing {
    bucket: String,
    prefix: String,
    objects: Vec<ObjectInfo>,
    /// Whether more objects follow; ask again with `start_after=next_start_after`.
    truncated: bool,
    next_start_after: Option<String>,
}

/// `GET /v1/objects/{bucket}?prefix=&start_after=&limit=`: keys in order, at most
/// [`MAX_LIST_LIMIT`] per page.
pub async fn list_objects(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(bucket): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    s.tenants.check_bucket(&caller, &bucket)?;
    let Query(q) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(MAX_LIST_LIMIT).min(MAX_LIST_LIMIT);
    let (prefix, start_after) = (q.prefix.clone(), q.start_after.clone());
    let listed = bucket.clone();
    let (objects, truncated) = blocking(move || {
        Ok(s.store
            .list(&listed, &prefix, start_after.as_deref(), limit)?)
    })
    .await?;
    let next_start_after = truncated
        .then(|| objects.last().map(|o| o.key.clone()))
        .flatten();
    Ok(Json(Listing {
        bucket,
        prefix: q.prefix,
        objects,
        truncated,
        next_start_after,
    })
    .into_response())
}
