//! The router (every route of the API in one table) and the middleware every request passes:
//! a request id, a tracing span carrying it, a log line per request and the request counters.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use tracing::Instrument;

use crate::error::ApiError;
use crate::metrics::Gauges;
use crate::{Shared, deferred, endpoints, exec, handlers, jobs, objects, status};

/// The header that carries a request's id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest request id taken from a client; a longer one is replaced by the server's own so
/// that logs stay readable.
pub const MAX_REQUEST_ID: usize = 128;

/// The header naming the cluster node that answered (cluster mode).
pub const NODE_HEADER: &str = "x-zvm-node";

/// Time a request may take beyond twice `request_timeout` (a run's wait for a VM, then its
/// run) before the server gives up on it: committing outputs and sending headers.
pub const REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Every route.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(status::index))
        .route("/ui/{file}", get(status::asset))
        .route("/v1/status", get(status::status))
        .route("/v1/cluster", get(cluster_status))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/buckets", get(objects::list_buckets))
        .route(
            "/v1/buckets/{bucket}",
            put(objects::create_bucket).delete(objects::delete_bucket),
        )
        .route("/v1/objects/{bucket}", get(objects::list_objects))
        .route(
            "/v1/objects/{bucket}/{*key}",
            get(objects::get_object)
                .head(objects::head_object)
                .put(objects::put_object)
                .delete(objects::delete_object),
        )
        .route("/v1/run", post(exec::run))
        .route("/v1/jobs", post(jobs::post).get(deferred::list))
        .route(
            "/v1/jobs/{id}",
            get(deferred::status).delete(deferred::delete),
        )
        .route("/v1/jobs/{id}/result", get(deferred::result))
        .route("/v1/handlers", get(handlers::list))
        .route(
            "/v1/handlers/{type}/{subtype}",
            get(handlers::get)
                .put(handlers::put)
                .delete(handlers::delete),
        )
        .route("/v1/view/{bucket}/{*key}", get(handlers::view))
        .route("/v1/endpoints", get(endpoints::list))
        .route(
            "/v1/endpoints/{name}",
            get(endpoints::show)
                .put(endpoints::deploy)
                .delete(endpoints::remove),
        )
        .route("/v1/apps/{name}", any(endpoints::app))
        .route("/v1/apps/{name}/{*path}", any(endpoints::app))
        .fallback(no_route)
        // Body caps are enforced by the handlers, which know the limit and answer 413.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

async fn no_route(request: Request) -> ApiError {
    ApiError::NoRoute {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

/// `GET /healthz`: 200 while the server serves.
/// `GET /v1/cluster`: this node and the nodes it hears (404 on a single server).
async fn cluster_status(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let node = s
        .cluster
        .get()
        .ok_or_else(|| ApiError::NotFound("this server is not in a cluster".into()))?;
    Ok(axum::Json(node.status_json()).into_response())
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut text = s.metrics.render(Gauges {
        vms_in_flight: s.admission.in_flight(),
        max_vms: s.admission.max_vms(),
        queue_depth: s.admission.waiting(),
        queue_capacity: s.admission.queue(),
        programs_cached: s.programs.len(),
    });
    if let Some(node) = s.cluster.get() {
        text.push_str(&crate::metrics::render_cluster(&node.cluster));
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Paths anybody may fetch, tenants or not: liveness, metrics (aggregates only) and the status
/// page's own files (the page asks for a token before it shows anything).
fn is_open_path(path: &str) -> bool {
    matches!(path, "/" | "/healthz" | "/metrics" | "/favicon.ico") || path.starts_with("/ui/")
}

/// The middleware that finds the caller ([`crate::tenants`]): every request of an API route
/// carries a [`Caller`](crate::tenants::Caller) extension, or is answered 401 here.
async fn authenticate(State(s): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match s.tenants.authenticate(authorization) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
        }
        Err(e) if !is_open_path(request.uri().path()) => return e.into_response(),
        Err(_) => {}
    }
    next.run(request).await
}

/// The middleware: request id, span, log line, counters.
async fn observe(State(s): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| v.len() <= MAX_REQUEST_ID && v.to_str().is_ok())
        .cloned()
        .unwrap_or_else(|| {
            let n = s.next_request.fetch_add(1, Ordering::Relaxed);
            HeaderValue::from_str(&format!("zvm-{:x}-{n}", std::process::id())).expect("ascii")
        });
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = request.method().to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %id.to_str().unwrap_or("?"),
        method = %method,
        path = %request.uri().path(),
    );
    let started = Instant::now();
    // Every request ends: a run is bounded by its wait for a VM plus its own wall-clock
    // limit (both `request_timeout`); anything slower (a client trickling a body in, say) is
    // cut off here, and dropping the handler drops its body, so a half-received object is
    // never stored.
    let limit = s.config.request_timeout * 2 + REQUEST_GRACE;
    let mut response =
        match tokio::time::timeout(limit, next.run(request).instrument(span.clone())).await {
            Ok(response) => response,
            Err(_) => ApiError::Timeout { limit }.into_response(),
        };
    let status = response.status().as_u16();
    s.metrics.request(&route, &method, status);
    span.in_scope(|| {
        tracing::info!(
            status,
            route = %route,
            elapsed_us = started.elapsed().as_micros() as u64,
            "request done"
        );
    });
    response.headers_mut().insert(REQUEST_ID, id);
    // On a cluster, which node answered (a forwarded run keeps the node that ran it).
    if let Some(node) = s.cluster.get()
        && !response.headers().contains_key(NODE_HEADER)
        && let Ok(v) = axum::http::HeaderValue::from_str(node.cluster.id())
    {
        response.headers_mut().insert(NODE_HEADER, v);
    }
    response
}
