//! The gateway's one error type and its one mapping to HTTP: every failure a handler can
//! meet becomes an [`ApiError`], and [`ApiError::status`] is the only place that decides its
//! status. The body is always `{"error": "<message>"}`.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// How long a client told "busy" should wait before trying again: about one short run on a
/// loaded server.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Store(#[from] zvm_store::Error),
    /// A request parameter or header that is wrong; `field` names it.
    #[error("`{field}`: {message}")]
    BadRequest { field: String, message: String },
    /// The request body is larger than the server accepts.
    #[error("the request body is larger than the server's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The request body could not be read (the client went away, say).
    #[error("reading the request body: {0}")]
    Body(String),
    /// Every VM is busy and the queue is full, or the wait outlasted the request's timeout.
    #[error("the server is busy: every VM is in use and the queue is full; try again later")]
    Busy,
    /// The server is shutting down and starts no new runs.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The program object is not a wasm module zvm accepts.
    #[error("program `{program}` refused: {reason}")]
    ProgramRefused { program: String, reason: String },
    /// The VM could not be set up.
    #[error(transparent)]
    Vm(zvm_vm::Error),
    /// The request took longer than the server allows for any request.
    #[error("the request took longer than {}s, the server's limit", limit.as_secs())]
    Timeout { limit: Duration },
    /// No token, or one the server does not know.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The tenant may not do this: another tenant's bucket, a reserved name, over a quota.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The tenant already runs as many VMs as its quota allows.
    #[error("tenant `{tenant}` already runs its {max_vms} VMs at once; try again later")]
    TenantBusy { tenant: String, max_vms: usize },
    /// A job id, endpoint or handler the server does not know; the message names it.
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the state of what it names (a result asked before it is
    /// there, a running job asked to stop).
    #[error("{0}")]
    Conflict(String),
    /// A deployed endpoint answered with something that is not a valid CGI response.
    #[error("{0}")]
    BadGateway(String),
    /// The cluster cannot be reached, or this node lost a job to another (cluster mode).
    #[error("{0}")]
    Unavailable(String),
    /// No route for this method and path.
    #[error("no route for {method} `{path}`")]
    NoRoute { method: String, path: String },
    /// A bug or a host failure: the message goes to the client and to the log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status of this error: the one place that decides it.
    pub fn status(&self) -> StatusCode {
        use zvm_store::Error as S;
        match self {
            ApiError::Store(e) => match e {
                S::InvalidBucketName { .. }
                | S::InvalidKey { .. }
                | S::InvalidMetadata { .. }
                | S::MalformedRange { .. }
                | S::Body { .. } => StatusCode::BAD_REQUEST,
                S::NoSuchBucket { .. } | S::NoSuchKey { .. } => StatusCode::NOT_FOUND,
                S::BucketAlreadyExists { .. } | S::BucketNotEmpty { .. } => StatusCode::CONFLICT,
                S::InvalidRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
                S::Locked { .. }
                | S::UnsupportedFormat { .. }
                | S::Corrupt { .. }
                | S::BatchIncomplete { .. }
                | S::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                // The S3 service failed or could not be reached: the gateway's upstream.
                S::Backend { .. } => StatusCode::BAD_GATEWAY,
            },
            ApiError::BadRequest { .. } | ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ProgramRefused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Vm(e) => match e {
                zvm_vm::Error::PoolExhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
                zvm_vm::Error::MemoryOverPool { .. } => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TenantBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoRoute { .. } | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<zvm_vm::Error> for ApiError {
    fn from(e: zvm_vm::Error) -> ApiError {
        match e {
            zvm_vm::Error::Refused { path, reason, .. } => ApiError::ProgramRefused {
                program: path.display().to_string(),
                reason,
            },
            other => ApiError::Vm(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && !matches!(self, ApiError::Busy | ApiError::ShuttingDown) {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Busy | ApiError::ShuttingDown | ApiError::Vm(_)
                if status == StatusCode::SERVICE_UNAVAILABLE =>
            {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER.as_secs()),
                );
            }
            ApiError::TenantBusy { .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER.as_secs()),
                );
            }
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"zvm\""),
                );
            }
            ApiError::Store(zvm_store::Error::InvalidRange { size, .. }) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        response
    }
}
