//! The S3-compatible backend: zvm buckets and objects kept in one bucket of an S3 service
//! (AWS, SeaweedFS, MinIO, ...), through the `object_store` crate, with the same API and the
//! same guarantees as the embedded store where S3 allows them.
//!
//! # A guided tour
//!
//! ## Layout: one S3 bucket, zvm buckets as key prefixes
//!
//! ```text
//! s3://<bucket>/<prefix>/
//!   buckets/<zvm-bucket>            an empty marker object: the zvm bucket exists; its S3
//!                                   last-modified time is the bucket's creation time
//!   objects/<zvm-bucket>/<enc(key)> an object: its content, with the zvm metadata in the
//!                                   S3 user metadata `x-amz-meta-zvm` (below)
//!   staging/<batch>/<n>             the puts of a batch, uploaded before it commits
//!   commits/<batch>                 a batch's commit record, from its commit point until
//!                                   it is fully applied
//!   writers/<w>/staging/<batch>/<n> the same two, for the process whose writer id
//!   writers/<w>/commits/<batch>     (`S3Config::writer`) is `w`
//!   <anything else>                 raw objects of the callers: job commits (below)
//! ```
//!
//! All zvm buckets share one S3 bucket, named in the configuration, rather than each being
//! an S3 bucket of its own: creating S3 buckets needs rights that an operator rarely hands to
//! a service, S3 bucket names are global (on AWS) so a zvm name could be taken by a stranger,
//! and a batch spanning zvm buckets then stays within one S3 bucket (the copies that apply it
//! are cheap server-side copies). The marker object makes an empty zvm bucket exist. The key
//! is encoded as one path segment (the `keys` module): the `object_store` crate refuses some
//! keys zvm allows (`a//b`, `..`, control characters), and the encoding keeps the byte order
//! and the prefixes of keys, so an S3 listing from a `start-after` is exactly a zvm listing.
//!
//! ## Metadata and etags
//!
//! The etag zvm shows is the BLAKE3 hash of the content (what a VM's hash channels report),
//! not S3's MD5-or-multipart etag. A put hashes the body while reading it; S3 user metadata
//! can only be given when an upload starts, so a body larger than [`SINGLE_PUT_BYTES`] is
//! first spooled to an unnamed temporary file (hashing as it goes), then sent as a multipart
//! upload of [`PART_BYTES`] parts: memory stays bounded by a few parts whatever the object's
//! size. Hash, size, write time, content type and user metadata travel as one JSON document
//! in the user metadata `x-amz-meta-zvm` (percent-encoded, since header values are ASCII):
//! one header, so S3's lowercasing of metadata names cannot change the case of zvm's, and a
//! HEAD or GET returns the metadata with the content it belongs to. The content type is also
//! the object's S3 `Content-Type`, for other S3 clients.
//!
//! ## Atomicity
//!
//! One S3 PUT (or the completion of a multipart upload) is atomic: a reader sees the old
//! object or the new one, never a part. So single puts and deletes need nothing more. A
//! [`S3Batch`] (the outputs of a run) needs several objects to land together, and S3 has no
//! multi-object transaction; the batch is a redo log, as in the embedded store:
//!
//! 1. each put is uploaded, complete with its metadata, to `staging/<batch>/<n>`;
//! 2. the commit record `commits/<batch>`, listing every put (with its staged key) and every
//!    delete, is written with one PUT: **the commit point**;
//! 3. each put is copied (a server-side S3 copy, metadata included) to its key, each delete
//!    is done;
//! 4. the staged objects are deleted, then the record.
//!
//! [`S3Store::open`] rolls forward every commit record it finds (step 3 and 4 again: a copy
//! whose staged object is gone was done before step 4 began), then deletes every staged
//! object left without a record (a batch that never reached its commit point). A batch that
//! fails or is dropped before its commit point deletes its staged objects at once.
//!
//! What is **not** atomic on S3, and is on the embedded store: while step 3 runs (and during
//! a roll-forward), a reader may see some of a batch's outputs and not yet others, and
//! listings may show the batch half-applied. No reader ever sees a partial object, and once
//! a batch has committed all its outputs land, even across a crash, at the next open.
//!
//! ## Concurrency and what the backend assumes
//!
//! [`S3Store`] is `Send + Sync`. What `open` recovers (deleting staged objects, replaying
//! records) is safe only if no other process is writing a batch in the same place at the
//! time, and S3 offers no lock to make sure: like the embedded store's lock file, one writer
//! per namespace is assumed. Without a writer id the namespace is the prefix's root, so one
//! process per prefix. Several processes may share a prefix, and so its buckets and objects
//! (a cluster's nodes do), when each has a writer id of its own ([`S3Config::writer`]): a
//! writer's batches stage and commit under `writers/<id>/`, and its `open` recovers that
//! namespace only, so a node that restarts neither deletes another's uncommitted staging nor
//! replays another's record while that node is applying it. Two processes with one writer id
//! are one writer twice: the deployment must not do that (a node id unique in the cluster is
//! a good writer id). The objects themselves are shared: a single put racing a batch of
//! another writer on the same key ends with whichever lands last (last writer wins), as two
//! puts from two S3 clients do.
//!
//! Within the process, a lock keeps single puts and deletes out of a batch from its commit
//! point until its record is gone, for the reason the embedded store gives: a replay after a
//! crash must not overwrite a newer put. Checks that span requests are not atomic: a bucket
//! deleted while a put to it is in flight may leave that object behind (it reappears if the
//! bucket is created again), and two processes creating one bucket at once both succeed.
//!
//! ## Job commits across processes
//!
//! A batch belongs to one process. A distributed job's outputs are written by the processes
//! that ran its members, and one of them (or, if it dies, another) commits them; so the same
//! redo log is offered in parts, addressed by paths relative to the prefix
//! (`<prefix>/<rel>`) that any process can reach. The store's own top-level names
//! ([`RESERVED`]) are refused as the first segment of such a path.
//!
//! 1. Every output is staged under a prefix unique to the job, say `jobs/<job>/`, with
//!    [`S3Store::stage_object`]: uploaded complete with its zvm metadata, invisible as an
//!    object. Each process stages what it produced and reports the path (a [`StagedPut`]).
//! 2. The coordinator writes the record naming every staged output,
//!    [`S3Store::write_commit_record`] (`jobs/<job>/commit`): one PUT, **the commit point**.
//!    Before it nothing is visible; after it the outputs land whatever dies.
//! 3. [`S3Store::apply_commit_record`] copies each staged object to its key (server-side,
//!    with its metadata). It is idempotent: run it again after a crash, or from another
//!    process that finds the job committed but not marked done; a staged object already
//!    gone is skipped (its copy was made before cleanup began). It deletes nothing.
//! 4. Once the job is marked done elsewhere (the cluster's job state), the job's prefix is
//!    removed with [`S3Store::delete_raw_prefix`]: staged objects and record. A job that
//!    never reached its commit point is cleaned up the same way.
//!
//! What this assumes: the job's state, kept outside the store, says who may apply and when
//! the prefix may go; an apply that runs after the job is marked done and a newer put of one
//! of its keys has landed would put the older output back, so an apply must happen only
//! while the job is not marked done. As with a batch, readers may see some outputs and not
//! yet others while the copies run.
//!
//! ## Blocking API over an async client
//!
//! The store's API is blocking, like the embedded store's; the S3 client is async. The
//! backend owns a small tokio runtime ([`RUNTIME_THREADS`] workers) for its connections and
//! runs each request with [`tokio::runtime::Handle::block_on`] inside
//! [`tokio::task::block_in_place`], so it may be called from any thread: a plain thread,
//! tokio's blocking pool (where the server calls it), or a multi-thread runtime's worker
//! (which it stalls for the round trip, so handlers should not). Under a current-thread
//! runtime, where `block_in_place` panics, it waits on a scoped thread of its own. Object bodies stream both ways: a GET's body is read from the
//! response as the caller reads ([`ObjectBody`]).
//!
//! ## Costs
//!
//! A listing needs one HEAD per object listed, in parallel ([`HEADS_IN_FLIGHT`]): an S3
//! listing has no user metadata, and a zvm listing shows etags. A `get` with a range that S3
//! refuses, a `delete` (which reports whether the key existed) and every check that a bucket
//! exists cost one more request.

mod commit;
mod job;
mod keys;
pub mod testing;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{RwLock, RwLockReadGuard};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, GetRange, GetResult, GetResultPayload,
    ObjectStore as _, PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};
use serde::{Deserialize, Serialize};

pub use self::commit::S3Batch;
pub use self::job::{RESERVED, StagedPut};
use crate::error::{Error, Result};
use crate::names::{validate_bucket, validate_key};
use crate::object::{self, ObjectBody, ObjectInfo, PutMeta};
use crate::range::ByteRange;
use crate::{BucketInfo, GetObject};

/// Bodies up to this size go up in one PUT from memory; larger ones are spooled to a
/// temporary file and sent as a multipart upload. 8 MiB keeps a few concurrent puts well
/// within memory and is above S3's 5 MiB minimum part size.
pub const SINGLE_PUT_BYTES: usize = 8 << 20;
/// Part size of a multipart upload: S3 allows 10,000 parts, so objects up to 80 GiB.
pub const PART_BYTES: usize = 8 << 20;
/// Parts of one upload in flight at once: enough to keep a link busy, each one buffered.
const PARTS_IN_FLIGHT: usize = 2;
/// Objects a listing heads at once: a page of 1000 takes 1000 / 16 round trips.
pub const HEADS_IN_FLIGHT: usize = 16;
/// Worker threads of the backend's own runtime: they only drive sockets.
pub const RUNTIME_THREADS: usize = 2;
/// Retries of a failed request (with backoff from 100 ms): rides out a service restart or a
/// dropped connection, without the client's default of 10 retries over 3 minutes, which would
/// hold a VM's request far past its timeout when the service is down.
const MAX_RETRIES: usize = 3;
/// Longest a request keeps retrying.
const RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// The user metadata entry (`x-amz-meta-zvm`) that holds zvm's metadata of an object.
const META_NAME: &str = "zvm";
/// The format of that metadata document.
const META_FORMAT: u32 = 1;
/// The longest S3 key: S3 refuses longer ones.
const MAX_S3_KEY_BYTES: usize = 1024;

/// Where the S3 backend keeps its objects, and how it signs in.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct S3Config {
    /// The service's URL (`http://127.0.0.1:8333`); `None` for AWS itself, by region.
    pub endpoint: Option<String>,
    /// The region requests are signed for (SeaweedFS and MinIO accept any, by default
    /// `us-east-1`).
    pub region: String,
    /// The one S3 bucket that holds every zvm bucket; it must exist.
    pub bucket: String,
    /// Key prefix under which this store lives (no leading or trailing `/`); empty for the
    /// bucket's root.
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allows an `http://` endpoint (a test server, a service on loopback).
    pub allow_http: bool,
    /// This process's writer id, when several processes share the prefix: its batches then
    /// stage and commit under `writers/<writer>/`, and [`S3Store::open`] recovers only that
    /// namespace. Lowercase letters, digits and `-`, 1 to [`MAX_WRITER_ID`] bytes. `None`:
    /// the one writer of the prefix, at its root.
    pub writer: Option<String>,
}

/// The longest writer id: room for a host name or a node id, well within S3's key length.
pub const MAX_WRITER_ID: usize = 64;

/// Checks a writer id (see [`S3Config::writer`]); the reason it is refused.
fn check_writer(writer: &str) -> std::result::Result<(), String> {
    if writer.is_empty() || writer.len() > MAX_WRITER_ID {
        return Err(format!(
            "writer id `{writer}` must be 1 to {MAX_WRITER_ID} bytes long"
        ));
    }
    if let Some(c) = writer
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "writer id `{writer}` may hold only lowercase letters, digits and `-`, not {c:?}"
        ));
    }
    Ok(())
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("writer", &self.writer)
            .finish()
    }
}

/// Runs the backend's futures to completion on its own runtime, from blocking code.
pub(crate) struct Bridge {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Bridge {
    fn new() -> Result<Bridge> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("zvm-store-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Backend {
                op: "start the runtime of",
                what: "the S3 client".into(),
                cause: Box::new(e),
            })?;
        let handle = runtime.handle().clone();
        Ok(Bridge {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Runs `f` on this bridge's runtime and waits for it; see the module documentation for
    /// the threads this may be called from.
    pub(crate) fn block_on<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            // `block_in_place` panics under a current-thread runtime (a `#[tokio::test]`, or
            // one of its blocking threads, which look the same from here): wait on a thread of
            // our own instead, which costs a thread start.
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::CurrentThread => {
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| self.handle.block_on(f))
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
            }
            _ => tokio::task::block_in_place(|| self.handle.block_on(f)),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // A runtime dropped in an async context panics; this one may well be (the server's
        // state is dropped by its last task), and it has nothing left worth waiting for.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// zvm's metadata of an object, as kept in its S3 user metadata.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaDoc {
    format: u32,
    size: u64,
    etag: String,
    modified: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    user: BTreeMap<String, String>,
}

/// An object store in an S3 bucket; see the module documentation.
pub struct S3Store {
    s3: Arc<AmazonS3>,
    bridge: Arc<Bridge>,
    /// The S3 bucket, for messages.
    bucket: String,
    /// `<prefix>/`, or empty.
    root: String,
    /// Where this process's batches stage and commit, under `root`: `writers/<writer>/`, or
    /// empty for the prefix's one writer.
    own: String,
    /// Held shared by single puts and deletes at the moment they land, and exclusively by a
    /// batch from its commit point until its record is gone (see the module documentation).
    landing: RwLock<()>,
    /// Makes batch ids unique within this process.
    next_id: AtomicU64,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("root", &self.root)
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Connects to the S3 bucket of `config`, checks that it answers, and recovers from a
    /// crash: rolls forward committed batches and deletes the staged objects of the others
    /// (of this writer only, with [`S3Config::writer`]).
    pub fn open(config: &S3Config) -> Result<S3Store> {
        let invalid = |reason: String| Error::Backend {
            op: "configure",
            what: format!("s3://{}/{}", config.bucket, config.prefix),
            cause: reason.into(),
        };
        if config.bucket.is_empty() {
            return Err(invalid("no S3 bucket given".into()));
        }
        let prefix = config.prefix.as_str();
        if !prefix.is_empty() {
            let parsed = Path::parse(prefix).map_err(|e| invalid(format!("prefix: {e}")))?;
            if parsed.as_ref() != prefix {
                return Err(invalid(format!(
                    "prefix `{prefix}` must not start or end with `/`"
                )));
            }
        }
        if let Some(writer) = &config.writer {
            check_writer(writer).map_err(invalid)?;
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_retry(object_store::RetryConfig {
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
                ..object_store::RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let s3 = builder.build().map_err(|e| Error::Backend {
            op: "configure",
            what: format!("s3://{}", config.bucket),
            cause: Box::new(e),
        })?;
        let store = S3Store {
            s3: Arc::new(s3),
            bridge: Arc::new(Bridge::new()?),
            bucket: config.bucket.clone(),
            root: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            own: match &config.writer {
                Some(writer) => format!("writers/{writer}/"),
                None => String::new(),
            },
            landing: RwLock::new(()),
            next_id: AtomicU64::new(0),
        };
        commit::recover(&store)?;
        Ok(store)
    }

    fn block_on<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        self.bridge.block_on(f)
    }

    /// Shared hold on landing an object (see `landing`).
    async fn landing(&self) -> RwLockReadGuard<'_, ()> {
        self.landing.read().await
    }

    /// The S3 key of `rest`, under the store's prefix.
    fn path(&self, rest: &str) -> Path {
        Path::parse(format!("{}{rest}", self.root)).expect("keys are encoded to valid paths")
    }

    /// The S3 key of `rest` in this writer's own namespace (its staging and commits).
    fn own_path(&self, rest: &str) -> Path {
        self.path(&format!("{}{rest}", self.own))
    }

    /// This store's writer id ([`S3Config::writer`]).
    pub fn writer(&self) -> Option<&str> {
        self.own
            .strip_prefix("writers/")
            .and_then(|w| w.strip_suffix('/'))
    }

    fn marker_path(&self, bucket: &str) -> Path {
        self.path(&format!("buckets/{bucket}"))
    }

    fn objects_dir(&self, bucket: &str) -> Path {
        self.path(&format!("objects/{bucket}"))
    }

    /// The S3 key of an object; its length is checked against S3's limit.
    fn object_path(&self, bucket: &str, key: &str) -> Result<Path> {
        let path = self.path(&format!("objects/{bucket}/{}", keys::encode(key)));
        if path.as_ref().len() > MAX_S3_KEY_BYTES {
            return Err(Error::InvalidKey {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                reason: "longer than S3's 1024-byte limit once encoded under the store's prefix",
            });
        }
        Ok(path)
    }

    /// `s3://bucket/key`, for messages.
    fn url(&self, path: &Path) -> String {
        format!("s3://{}/{path}", self.bucket)
    }

    fn backend(&self, op: &'static str, path: &Path, e: object_store::Error) -> Error {
        Error::Backend {
            op,
            what: self.url(path),
            cause: Box::new(e),
        }
    }

    /// A fresh batch id: time first, so that records replay in the order they were made.
    fn unique(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let nonce = blake3::hash(
            format!(
                "{:?}{}{n}",
                std::time::SystemTime::now(),
                std::process::id()
            )
            .as_bytes(),
        );
        format!("{:013}-{}-{n}", object::now_ms(), &nonce.to_hex()[..12])
    }

    /// Whether `path` exists (a HEAD).
    async fn exists(&self, path: &Path) -> Result<bool> {
        match self.s3.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend("head", path, e)),
        }
    }

    async fn require_bucket_async(&self, bucket: &str) -> Result<()> {
        if self.exists(&self.marker_path(bucket)).await? {
            Ok(())
        } else {
            Err(Error::NoSuchBucket {
                bucket: bucket.to_owned(),
            })
        }
    }

    pub(crate) fn require_bucket(&self, bucket: &str) -> Result<()> {
        self.block_on(self.require_bucket_async(bucket))
    }

    /// The error for a key that is not there: its bucket may be missing too.
    async fn missing(&self, bucket: &str, key: &str) -> Error {
        match self.require_bucket_async(bucket).await {
            Err(e) => e,
            Ok(()) => Error::NoSuchKey {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            },
        }
    }

    /// Creates an empty bucket (its marker object).
    pub fn create_bucket(&self, name: &str) -> Result<BucketInfo> {
        validate_bucket(name)?;
        let marker = self.marker_path(name);
        self.block_on(async {
            if self.exists(&marker).await? {
                return Err(Error::BucketAlreadyExists {
                    bucket: name.to_owned(),
                });
            }
            let put = self
                .s3
                .put(&marker, PutPayload::new())
                .await
                .map_err(|e| self.backend("put", &marker, e))?;
            let _ = put;
            let meta = self
                .s3
                .head(&marker)
                .await
                .map_err(|e| self.backend("head", &marker, e))?;
            Ok(BucketInfo {
                name: name.to_owned(),
                created: millis(meta.last_modified),
            })
        })
    }

    /// Deletes a bucket, which must be empty.
    pub fn delete_bucket(&self, name: &str) -> Result<()> {
        validate_bucket(name)?;
        let marker = self.marker_path(name);
        let dir = self.objects_dir(name);
        self.block_on(async {
            self.require_bucket_async(name).await?;
            let first = self.s3.list(Some(&dir)).next().await;
            match first {
                None => {}
                Some(Ok(_)) => {
                    return Err(Error::BucketNotEmpty {
                        bucket: name.to_owned(),
                    });
                }
                Some(Err(e)) => return Err(self.backend("list", &dir, e)),
            }
            self.s3
                .delete(&marker)
                .await
                .map_err(|e| self.backend("delete", &marker, e))
        })
    }

    /// Every bucket, sorted by name.
    pub fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        let dir = self.path("buckets");
        self.block_on(async {
            let mut buckets: Vec<BucketInfo> = self
                .s3
                .list(Some(&dir))
                .map_err(|e| self.backend("list", &dir, e))
                .try_filter_map(|meta| async move {
                    let name = meta.location.filename().unwrap_or_default().to_owned();
                    // Anything else under `buckets/` is not this store's.
                    Ok(validate_bucket(&name).is_ok().then(|| BucketInfo {
                        name,
                        created: millis(meta.last_modified),
                    }))
                })
                .try_collect()
                .await?;
            buckets.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(buckets)
        })
    }

    /// Stores `data` as object `key`, replacing any object of that key atomically, and
    /// returns its metadata once S3 has it.
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        data: impl Read,
        meta: PutMeta,
    ) -> Result<ObjectInfo> {
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        object::validate_meta(bucket, key, &meta)?;
        let path = self.object_path(bucket, key)?;
        // Fail early rather than after streaming a large body.
        self.require_bucket(bucket)?;
        self.upload(&path, bucket, key, data, meta, true)
    }

    /// Uploads `data` to `path` with zvm's metadata of object `key`: hashing as it reads, in
    /// one PUT if it is small, else spooled to a temporary file and sent in parts. `land`:
    /// take the landing lock for the moment the object becomes visible (not for staging).
    pub(crate) fn upload(
        &self,
        path: &Path,
        bucket: &str,
        key: &str,
        mut data: impl Read,
        meta: PutMeta,
        land: bool,
    ) -> Result<ObjectInfo> {
        let body_error = |source| Error::Body {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source,
        };
        let mut hasher = blake3::Hasher::new();
        let mut head = Vec::new();
        let read = (&mut data)
            .take(SINGLE_PUT_BYTES as u64 + 1)
            .read_to_end(&mut head)
            .map_err(body_error)?;
        hasher.update(&head);
        let spool = if read > SINGLE_PUT_BYTES {
            let mut file =
                tempfile::tempfile().map_err(|e| self.local_error("create a spool file", e))?;
            file.write_all(&head)
                .map_err(|e| self.local_error("write the spool file", e))?;
            drop(head);
            head = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match data.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(body_error(e)),
                };
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n])
                    .map_err(|e| self.local_error("write the spool file", e))?;
            }
            Some(file)
        } else {
            None
        };
        let size = match &spool {
            Some(file) => file
                .metadata()
                .map_err(|e| self.local_error("stat the spool file", e))?
                .len(),
            None => head.len() as u64,
        };
        let info = ObjectInfo {
            key: key.to_owned(),
            size,
            etag: hasher.finalize().to_hex().to_string(),
            content_type: meta.content_type,
            user: meta.user,
            modified: object::now_ms(),
        };
        let attributes = attributes_of(&info);
        self.block_on(async {
            match spool {
                None => {
                    let _landing = if land {
                        Some(self.landing().await)
                    } else {
                        None
                    };
                    let opts = PutOptions {
                        attributes,
                        ..PutOptions::default()
                    };
                    self.s3
                        .put_opts(path, PutPayload::from(Bytes::from(head)), opts)
                        .await
                        .map_err(|e| self.backend("put", path, e))?;
                }
                Some(mut file) => {
                    file.seek(SeekFrom::Start(0))
                        .map_err(|e| self.local_error("rewind the spool file", e))?;
                    let opts = PutMultipartOptions {
                        attributes,
                        ..PutMultipartOptions::default()
                    };
                    let upload = self
                        .s3
                        .put_multipart_opts(path, opts)
                        .await
                        .map_err(|e| self.backend("start a multipart upload to", path, e))?;
                    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                    let sent = async {
                        let mut buf = vec![0u8; 1 << 20];
                        loop {
                            let n = file
                                .read(&mut buf)
                                .map_err(|e| self.local_error("read the spool file", e))?;
                            if n == 0 {
                                break;
                            }
                            writer
                                .wait_for_capacity(PARTS_IN_FLIGHT)
                                .await
                                .map_err(|e| self.backend("upload a part to", path, e))?;
                            writer.write(&buf[..n]);
                        }
                        Ok(())
                    }
                    .await;
                    if let Err(e) = sent {
                        let _ = writer.abort().await;
                        return Err(e);
                    }
                    let _landing = if land {
                        Some(self.landing().await)
                    } else {
                        None
                    };
                    writer
                        .finish()
                        .await
                        .map_err(|e| self.backend("complete the multipart upload to", path, e))?;
                }
            }
            Ok(())
        })?;
        Ok(info)
    }

    fn local_error(&self, op: &'static str, e: io::Error) -> Error {
        Error::Io {
            op,
            path: std::env::temp_dir(),
            source: e,
        }
    }

    /// zvm's metadata of `path` from the attributes and size S3 returned with it.
    fn info_of(
        &self,
        path: &Path,
        key: &str,
        size: u64,
        attributes: &Attributes,
    ) -> Result<ObjectInfo> {
        let corrupt = |reason: String| Error::Corrupt {
            path: self.url(path).into(),
            reason,
        };
        let raw = attributes
            .get(&Attribute::Metadata(META_NAME.into()))
            .ok_or_else(|| corrupt("no `x-amz-meta-zvm` metadata: not written by zvm".into()))?;
        let json = percent_decode(raw.as_ref())
            .ok_or_else(|| corrupt("`x-amz-meta-zvm` is not percent-encoded UTF-8".into()))?;
        let doc: MetaDoc =
            serde_json::from_str(&json).map_err(|e| corrupt(format!("`x-amz-meta-zvm`: {e}")))?;
        if doc.format != META_FORMAT {
            return Err(corrupt(format!("metadata format {}", doc.format)));
        }
        if doc.size != size {
            return Err(corrupt(format!(
                "metadata says {} bytes, S3 holds {size}",
                doc.size
            )));
        }
        Ok(ObjectInfo {
            key: key.to_owned(),
            size,
            etag: doc.etag,
            content_type: doc.content_type,
            user: doc.user,
            modified: doc.modified,
        })
    }

    /// HEADs `path` (object `key`): its metadata, or `None` if it is not there.
    async fn head_async(&self, path: &Path, key: &str) -> Result<Option<ObjectInfo>> {
        let opts = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        match self.s3.get_opts(path, opts).await {
            Ok(got) => self
                .info_of(path, key, got.meta.size, &got.attributes)
                .map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend("head", path, e)),
        }
    }

    /// Reads object `key`, or the `range` of it.
    pub fn get(&self, bucket: &str, key: &str, range: Option<ByteRange>) -> Result<GetObject> {
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        let path = self.object_path(bucket, key)?;
        let invalid = |size| Error::InvalidRange {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            range: range.expect("only ranges are invalid"),
            size,
        };
        let got: GetResult = self.block_on(async {
            let opts = GetOptions {
                range: range.map(get_range),
                ..GetOptions::default()
            };
            match self.s3.get_opts(&path, opts).await {
                Ok(got) => Ok(got),
                Err(object_store::Error::NotFound { .. }) => Err(self.missing(bucket, key).await),
                // S3 answers 416 to a range past the end: tell that apart from a failure.
                Err(e) if range.is_some() => match self.head_async(&path, key).await? {
                    None => Err(self.missing(bucket, key).await),
                    Some(info) if range.and_then(|r| r.resolve(info.size)).is_none() => {
                        Err(invalid(info.size))
                    }
                    Some(_) => Err(self.backend("get", &path, e)),
                },
                Err(e) => Err(self.backend("get", &path, e)),
            }
        })?;
        let info = self.info_of(&path, key, got.meta.size, &got.attributes)?;
        let offsets = match range {
            None => 0..info.size,
            Some(r) => {
                let Some(offsets) = r.resolve(info.size) else {
                    // Some services answer a range of an empty object with the whole of it.
                    return Err(invalid(info.size));
                };
                if got.range != offsets {
                    return Err(Error::Backend {
                        op: "get",
                        what: self.url(&path),
                        cause: format!(
                            "asked for bytes {offsets:?} (range `{r}`), S3 sent {:?}",
                            got.range
                        )
                        .into(),
                    });
                }
                offsets
            }
        };
        let stream = match got.payload {
            GetResultPayload::Stream(s) => s,
            #[allow(
                unreachable_patterns,
                reason = "`File` exists only with the `fs` feature"
            )]
            _ => unreachable!("the S3 client only streams"),
        };
        let reader = StreamRead {
            stream,
            chunk: Bytes::new(),
            bridge: self.bridge.clone(),
        };
        let body = ObjectBody::remote(Box::new(reader), offsets.end - offsets.start);
        Ok(GetObject {
            info,
            range: range.map(|_| offsets),
            body,
        })
    }

    /// The metadata of object `key`.
    pub fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        let path = self.object_path(bucket, key)?;
        self.block_on(async {
            match self.head_async(&path, key).await? {
                Some(info) => Ok(info),
                None => Err(self.missing(bucket, key).await),
            }
        })
    }

    /// Deletes object `key`; whether it existed (deleting a missing key is not an error, as
    /// in S3).
    pub fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        let path = self.object_path(bucket, key)?;
        self.block_on(async {
            self.require_bucket_async(bucket).await?;
            if !self.exists(&path).await? {
                return Ok(false);
            }
            let _landing = self.landing().await;
            self.s3
                .delete(&path)
                .await
                .map_err(|e| self.backend("delete", &path, e))?;
            Ok(true)
        })
    }

    /// Up to `limit` objects whose keys start with `prefix` and sort after `start_after`, in
    /// key order, and whether more follow.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ObjectInfo>, bool)> {
        validate_bucket(bucket)?;
        let dir = self.objects_dir(bucket);
        let dir_slash = format!("{dir}/");
        let encoded_prefix = keys::encode(prefix);
        self.block_on(async {
            self.require_bucket_async(bucket).await?;
            // S3's `start-after` excludes its key: the key equal to the prefix, if any, is
            // looked up by itself (it sorts first of all keys with that prefix).
            let mut first = None;
            let offset = match start_after {
                Some(after) if after >= prefix => {
                    Some(format!("{dir_slash}{}", keys::encode(after)))
                }
                _ if prefix.is_empty() => None,
                _ => {
                    first = Some(prefix.to_owned());
                    Some(format!("{dir_slash}{encoded_prefix}"))
                }
            };
            let listing = match &offset {
                None => self.s3.list(Some(&dir)),
                Some(offset) => self
                    .s3
                    .list_with_offset(Some(&dir), &Path::parse(offset).expect("encoded")),
            };
            let listed = listing
                .map_err(|e| self.backend("list", &dir, e))
                .try_take_while(|meta| {
                    let matches = meta
                        .location
                        .as_ref()
                        .strip_prefix(&dir_slash)
                        .is_some_and(|rest| rest.starts_with(&encoded_prefix));
                    async move { Ok(matches) }
                })
                .take(limit + 1)
                .try_collect::<Vec<_>>()
                .await?;
            let mut keys: Vec<String> = first.into_iter().collect();
            for meta in &listed {
                let rest = &meta.location.as_ref()[dir_slash.len()..];
                let key = keys::decode(rest).ok_or_else(|| Error::Corrupt {
                    path: self.url(&meta.location).into(),
                    reason: "not a key this store encoded".into(),
                })?;
                keys.push(key);
            }
            let heads = futures_util::stream::iter(keys)
                .map(|key| async move {
                    let path = self.object_path(bucket, &key)?;
                    self.head_async(&path, &key).await
                })
                .buffered(HEADS_IN_FLIGHT)
                // Deleted since it was listed (or, for the prefix itself, not there).
                .try_filter_map(|info| async move { Ok(info) });
            let mut objects: Vec<ObjectInfo> = heads.take(limit + 1).try_collect().await?;
            let truncated = objects.len() > limit;
            objects.truncate(limit);
            Ok((objects, truncated))
        })
    }

    /// A batch of puts and deletes that [`S3Batch::commit`] applies all or nothing, as far
    /// as S3 allows (see the module documentation).
    pub fn batch(&self) -> S3Batch<'_> {
        S3Batch::new(self)
    }
}

/// An S3 range for a zvm range (whose `FromTo` end is inclusive).
fn get_range(range: ByteRange) -> GetRange {
    match range {
        ByteRange::FromTo { start, end } => GetRange::Bounded(start..end.saturating_add(1)),
        ByteRange::From { start } => GetRange::Offset(start),
        ByteRange::Suffix { len } => GetRange::Suffix(len),
    }
}

/// The S3 attributes of an object: zvm's metadata document and the content type.
fn attributes_of(info: &ObjectInfo) -> Attributes {
    let doc = MetaDoc {
        format: META_FORMAT,
        size: info.size,
        etag: info.etag.clone(),
        modified: info.modified,
        content_type: info.content_type.clone(),
        user: info.user.clone(),
    };
    let json = serde_json::to_string(&doc).expect("metadata always serialises");
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata(META_NAME.into()),
        AttributeValue::from(percent_encode(&json)),
    );
    if let Some(ct) = &info.content_type {
        attributes.insert(Attribute::ContentType, AttributeValue::from(ct.clone()));
    }
    attributes
}

/// Escapes what may not appear in a header value (and `%`) as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn millis(t: chrono::DateTime<chrono::Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// A blocking reader of a GET response's body stream.
struct StreamRead {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    /// Keeps the runtime that drives the connection alive as long as the body is read.
    bridge: Arc<Bridge>,
}

impl Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.bridge.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_percent_encoding() {
        for text in ["", "plain", "50% \"off\"", "Zoë\tand co\n", "%%%"] {
            let e = percent_encode(text);
            assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)), "{e}");
            assert_eq!(percent_decode(&e).as_deref(), Some(text));
        }
        assert_eq!(percent_decode("%G0"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        let config = S3Config {
            secret_access_key: Some("hunter2".into()),
            ..S3Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
