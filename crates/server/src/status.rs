//! The live status page: `GET /` (one self-contained page, its script and its style under
//! `/ui/`, all embedded in the binary, since a server may sit where there is no network to
//! fetch a library from) and `GET /v1/status`, the JSON the page polls.
//!
//! The page draws what [`crate::activity`] records: recent runs with their reports, each job
//! as a graph of members and pipes, and a timeline of VMs. It computes its layouts itself, in
//! plain JavaScript, so that the server only hands out data.

use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Shared;
use crate::activity::{DEFAULT_STATUS_RUNS, MAX_RUNS};
use crate::error::ApiError;
use crate::tenants::Caller;

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// The page's files by their name under `/ui/`, with their content type.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", APP_JS),
    ("style.css", "text/css; charset=utf-8", STYLE_CSS),
];

/// Only the server's own files and connections: the page loads nothing from elsewhere, and a
/// report's text (stderr, say) can never become a script.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

fn page_file(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary; revalidating is cheap on a local server.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /`: the status page.
pub async fn index() -> Response {
    page_file("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/{file}`: the page's script and style.
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, body)| page_file(content_type, body))
        .ok_or_else(|| ApiError::NoRoute {
            method: "GET".into(),
            path: format!("/ui/{file}"),
        })
}

/// The `runs=` of `GET /v1/status`: how many recent runs to return, 1 to [`MAX_RUNS`].
fn runs_wanted(query: Option<&str>) -> Result<usize, ApiError> {
    let mut runs = DEFAULT_STATUS_RUNS;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "runs" => {
                runs = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_RUNS).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad(
                            "runs",
                            format!("`{value}` is not a number from 1 to {MAX_RUNS}"),
                        )
                    })?;
            }
            other => return Err(ApiError::bad(other, "unknown query parameter")),
        }
    }
    Ok(runs)
}

/// `GET /v1/status?runs=N`: the server's gauges and the recent activity, as documented in the
/// crate's README. A tenant sees only its own runs, jobs and VMs; an admin (or the caller of
/// a server without tenants) sees everything.
pub async fn status(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let runs = runs_wanted(query.as_deref())?;
    let mut body = s.activity.status_with(caller.scope(), runs);
    body["server"] = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_ms": s.activity.started_ms(),
        "uptime_secs": s.activity.uptime_secs(),
        "vms_in_flight": s.admission.in_flight(),
        "max_vms": s.admission.max_vms(),
        "queue_depth": s.admission.waiting(),
        "queue_capacity": s.admission.queue(),
        "programs_cached": s.programs.len(),
    });
    // Cluster mode: the members and their load, as `GET /v1/cluster` shows them.
    if let Some(node) = s.cluster.get() {
        body["cluster"] = node.status_json();
    }
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_parameter_is_checked() {
        assert_eq!(runs_wanted(None).unwrap(), DEFAULT_STATUS_RUNS);
        assert_eq!(runs_wanted(Some("runs=7")).unwrap(), 7);
        assert!(
            runs_wanted(Some("runs=0"))
                .unwrap_err()
                .to_string()
                .starts_with("`runs`")
        );
        assert!(runs_wanted(Some("runs=999")).is_err());
        assert!(
            runs_wanted(Some("colour=blue"))
                .unwrap_err()
                .to_string()
                .starts_with("`colour`")
        );
    }

    #[test]
    fn the_page_names_only_its_own_files() {
        for (name, _, _) in ASSETS {
            assert!(INDEX_HTML.contains(&format!("/ui/{name}")), "{name}");
        }
        // Nothing from elsewhere: the only URL is the SVG namespace, which is a name.
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("//cdn") && !text.contains("@import"));
        }
    }
}
