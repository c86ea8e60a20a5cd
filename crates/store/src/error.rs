//! The store's one error type: every variant names the bucket, key or path at fault, so that
//! the gateway can map it to an HTTP status in one place and a log line says where it
//! happened.

use std::io;
use std::path::PathBuf;

use crate::range::ByteRange;

/// Everything that can go wrong in the object store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bucket name outside the S3 rules (HTTP 400 `InvalidBucketName`).
    #[error("invalid bucket name `{name}`: {reason}")]
    InvalidBucketName { name: String, reason: &'static str },
    /// An object key that is empty, too long or contains NUL (HTTP 400).
    #[error("bucket `{bucket}`: invalid key {key:?}: {reason}")]
    InvalidKey {
        bucket: String,
        key: String,
        reason: &'static str,
    },
    /// A content type or user metadata entry the store refuses (HTTP 400).
    #[error("object `{key}` in bucket `{bucket}`: invalid metadata: {reason}")]
    InvalidMetadata {
        bucket: String,
        key: String,
        reason: String,
    },
    /// HTTP 404 `NoSuchBucket`.
    #[error("no such bucket `{bucket}`")]
    NoSuchBucket { bucket: String },
    /// HTTP 409 `BucketAlreadyOwnedByYou`.
    #[error("bucket `{bucket}` already exists")]
    BucketAlreadyExists { bucket: String },
    /// HTTP 409 `BucketNotEmpty`.
    #[error("bucket `{bucket}` is not empty")]
    BucketNotEmpty { bucket: String },
    /// HTTP 404 `NoSuchKey`.
    #[error("no such key `{key}` in bucket `{bucket}`")]
    NoSuchKey { bucket: String, key: String },
    /// A well-formed range that selects no byte of the object (HTTP 416, with
    /// `Content-Range: bytes */{size}`).
    #[error("object `{key}` in bucket `{bucket}`: range `{range}` not satisfiable for size {size}")]
    InvalidRange {
        bucket: String,
        key: String,
        range: ByteRange,
        size: u64,
    },
    /// A `Range` value that does not parse; HTTP says to ignore such a header and answer
    /// with the whole object, so the gateway may do that rather than fail.
    #[error("malformed range `{input}`: {reason}")]
    MalformedRange { input: String, reason: &'static str },
    /// Reading the body the caller supplied failed; nothing was stored.
    #[error("object `{key}` in bucket `{bucket}`: reading the body: {source}")]
    Body {
        bucket: String,
        key: String,
        source: io::Error,
    },
    /// Another process (or another `ObjectStore` in this one) has the store open.
    #[error("store `{path}` is in use by another process (its lock file is held)")]
    Locked { path: PathBuf },
    /// The store directory was written by an incompatible version of zvm.
    #[error("store `{path}` has format `{found}`, this zvm reads `{expected}`")]
    UnsupportedFormat {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    /// A file in the store that the store itself cannot have written completely.
    #[error("corrupt store file `{path}`: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A batch passed its commit point but could not be applied completely; the commit
    /// record stays, and the next [`ObjectStore::open`](crate::ObjectStore::open) finishes it.
    #[error("batch committed but not fully applied ({source}); reopening the store completes it")]
    BatchIncomplete {
        #[source]
        source: Box<Error>,
    },
    /// A request to the S3-compatible backend failed: the network, the service, or an
    /// answer that is not what the backend wrote (HTTP 502, the gateway's upstream failed).
    #[error("s3 backend: {op} `{what}`: {cause}")]
    Backend {
        op: &'static str,
        /// The S3 object or bucket (`s3://bucket/key`), or the endpoint.
        what: String,
        /// Not a `source`: the S3 client's errors already carry their whole chain in their
        /// message, and printing the chain again would repeat it.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file system operation failed.
    #[error("{op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the operation and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn op(self, op: &'static str, path: impl AsRef<std::path::Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn op(self, op: &'static str, path: impl AsRef<std::path::Path>) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}
