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
use axum::routing::{get, post, put};
use tracing::Instrument;

use crate::error::ApiError;
use crate::metrics::Gauges;
use crate::{Shared, exec, objects, status};

/// The header that carries a request's id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest request id taken from a client; a longer one is replaced by the server's own so
/// that logs stay readable.
pub const MAX_REQUEST_ID: usize = 128;

/// Every route.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(status::index))
        .route("/ui/{file}", get(status::asset))
        .route("/v1/status", get(status::status))
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
        .fallback(no_route)
        // Body caps are enforced by the handlers, which know the limit and answer 413.
        .layer(axum::extract::DefaultBodyLimit::disable())
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
async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let text = s.metrics.render(Gauges {
        vms_in_flight: s.admission.in_flight(),
        max_vms: s.admission.max_vms(),
        queue_depth: s.admission.waiting(),
        queue_capacity: s.admission.queue(),
        programs_cached: s.programs.len(),
    });
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
        id = %id.to_str().unwrap_or("?"),
        method = %method,
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
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
    response
}
