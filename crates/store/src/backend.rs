//! [`Store`]: the object store a server opens, whichever backend its configuration names,
//! with one API. The embedded [`ObjectStore`] is the default; the S3-compatible [`S3Store`]
//! is for clusters, whose nodes share their objects. An enum rather than a trait object:
//! the set of backends is closed, `put` takes a generic reader, and a batch borrows its
//! store, none of which a `dyn` trait makes simple.
//!
//! What only the S3 backend can do (job commits shared by several processes, an object's
//! location in the storage service) is forwarded too, and is an error on the embedded store,
//! which belongs to one process and lives on one disk.

use std::io::{self, Read};
use std::path::PathBuf;

use crate::s3::{S3Batch, S3Config, S3Store, StagedPut};
use crate::{
    Batch, BucketInfo, ByteRange, Error, GetObject, ObjectInfo, ObjectStore, PutMeta, Result,
};

/// Which backend to open, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded store in this directory.
    Local { dir: PathBuf },
    /// An S3-compatible service.
    S3(S3Config),
}

/// An open object store. Every method blocks; see the S3 backend's documentation for the
/// threads it may be called from.
#[derive(Debug)]
pub enum Store {
    Local(ObjectStore),
    S3(S3Store),
}

/// A batch of the store's backend: see [`Batch`] and [`S3Batch`].
#[derive(Debug)]
pub enum StoreBatch<'s> {
    Local(Batch<'s>),
    S3(S3Batch<'s>),
}

impl Store {
    /// Opens the store `config` names, recovering from a crash as its backend does.
    pub fn open(config: &StoreConfig) -> Result<Store> {
        Ok(match config {
            StoreConfig::Local { dir } => Store::Local(ObjectStore::open(dir)?),
            StoreConfig::S3(s3) => Store::S3(S3Store::open(s3)?),
        })
    }

    /// `"local"` or `"s3"`, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Local(_) => "local",
            Store::S3(_) => "s3",
        }
    }

    /// Creates an empty bucket.
    pub fn create_bucket(&self, name: &str) -> Result<BucketInfo> {
        match self {
            Store::Local(s) => s.create_bucket(name),
            Store::S3(s) => s.create_bucket(name),
        }
    }

    /// Deletes a bucket, which must be empty.
    pub fn delete_bucket(&self, name: &str) -> Result<()> {
        match self {
            Store::Local(s) => s.delete_bucket(name),
            Store::S3(s) => s.delete_bucket(name),
        }
    }

    /// Every bucket, sorted by name.
    pub fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        match self {
            Store::Local(s) => Ok(s.list_buckets()),
            Store::S3(s) => s.list_buckets(),
        }
    }

    /// Stores `data` as object `key`, replacing any object of that key atomically.
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        data: impl Read,
        meta: PutMeta,
    ) -> Result<ObjectInfo> {
        match self {
            Store::Local(s) => s.put(bucket, key, data, meta),
            Store::S3(s) => s.put(bucket, key, data, meta),
        }
    }

    /// Reads object `key`, or the `range` of it.
    pub fn get(&self, bucket: &str, key: &str, range: Option<ByteRange>) -> Result<GetObject> {
        match self {
            Store::Local(s) => s.get(bucket, key, range),
            Store::S3(s) => s.get(bucket, key, range),
        }
    }

    /// The metadata of object `key`.
    pub fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        match self {
            Store::Local(s) => s.head(bucket, key),
            Store::S3(s) => s.head(bucket, key),
        }
    }

    /// Deletes object `key`; whether it existed.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        match self {
            Store::Local(s) => s.delete(bucket, key),
            Store::S3(s) => s.delete(bucket, key),
        }
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
        match self {
            Store::Local(s) => s.list(bucket, prefix, start_after, limit),
            Store::S3(s) => s.list(bucket, prefix, start_after, limit),
        }
    }

    /// A batch of puts and deletes that [`StoreBatch::commit`] applies all or nothing.
    pub fn batch(&self) -> StoreBatch<'_> {
        match self {
            Store::Local(s) => StoreBatch::Local(s.batch()),
            Store::S3(s) => StoreBatch::S3(s.batch()),
        }
    }

    /// The S3 backend, if this is it.
    pub fn s3(&self) -> Option<&S3Store> {
        match self {
            Store::Local(_) => None,
            Store::S3(s) => Some(s),
        }
    }

    /// The S3 backend, or the error for an operation (`op`) that only it has.
    fn need_s3(&self, op: &'static str) -> Result<&S3Store> {
        match self {
            Store::S3(s) => Ok(s),
            // Not a variant of its own: an `Io` error of kind `Unsupported` says it as well,
            // and callers already map every variant.
            Store::Local(s) => Err(Error::Io {
                op,
                path: s.root().to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this needs the S3 backend (`--store-backend s3`): job commits and object \
                     locations exist only there, and this is the embedded store",
                ),
            }),
        }
    }

    /// [`S3Store::put_raw`]; an error on the embedded store.
    pub fn put_raw(&self, rel: &str, data: Vec<u8>) -> Result<()> {
        self.need_s3("put a raw object in")?.put_raw(rel, data)
    }

    /// [`S3Store::get_raw`]; an error on the embedded store.
    pub fn get_raw(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        self.need_s3("get a raw object from")?.get_raw(rel)
    }

    /// [`S3Store::delete_raw_prefix`]; an error on the embedded store.
    pub fn delete_raw_prefix(&self, rel: &str) -> Result<u64> {
        self.need_s3("delete raw objects from")?
            .delete_raw_prefix(rel)
    }

    /// [`S3Store::stage_object`]; an error on the embedded store.
    pub fn stage_object(
        &self,
        rel: &str,
        bucket: &str,
        key: &str,
        data: impl Read,
        meta: PutMeta,
    ) -> Result<ObjectInfo> {
        self.need_s3("stage a job's object in")?
            .stage_object(rel, bucket, key, data, meta)
    }

    /// [`S3Store::write_commit_record`]; an error on the embedded store.
    pub fn write_commit_record(&self, rel: &str, puts: &[StagedPut]) -> Result<()> {
        self.need_s3("write a job commit record in")?
            .write_commit_record(rel, puts)
    }

    /// [`S3Store::apply_commit_record`]; an error on the embedded store.
    pub fn apply_commit_record(&self, rel: &str) -> Result<bool> {
        self.need_s3("apply a job commit record in")?
            .apply_commit_record(rel)
    }

    /// [`S3Store::object_location`]; an error on the embedded store.
    pub fn object_location(&self, bucket: &str, key: &str) -> Result<(String, String)> {
        self.need_s3("locate an object in")?
            .object_location(bucket, key)
    }
}

impl StoreBatch<'_> {
    /// How many keys the batch changes.
    pub fn len(&self) -> usize {
        match self {
            StoreBatch::Local(b) => b.len(),
            StoreBatch::S3(b) => b.len(),
        }
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stages `data` as object `key`, visible at commit.
    pub fn put(
        &mut self,
        bucket: &str,
        key: &str,
        data: impl Read,
        meta: PutMeta,
    ) -> Result<ObjectInfo> {
        match self {
            StoreBatch::Local(b) => b.put(bucket, key, data, meta),
            StoreBatch::S3(b) => b.put(bucket, key, data, meta),
        }
    }

    /// Stages the deletion of object `key`.
    pub fn delete(&mut self, bucket: &str, key: &str) -> Result<()> {
        match self {
            StoreBatch::Local(b) => b.delete(bucket, key),
            StoreBatch::S3(b) => b.delete(bucket, key),
        }
    }

    /// Applies every staged change, all or nothing (see each backend for what a reader may
    /// see while it does).
    pub fn commit(self) -> Result<()> {
        match self {
            StoreBatch::Local(b) => b.commit(),
            StoreBatch::S3(b) => b.commit(),
        }
    }
}
