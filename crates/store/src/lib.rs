//! The object store: S3-like buckets of objects for the `zvm serve` gateway and for the
//! outputs of VMs, which must land whole or not at all. Objects live in the embedded store
//! ([`ObjectStore`], a directory on local disk) by default, or in an S3-compatible service
//! ([`S3Store`], for clusters whose nodes share their objects); [`Store`] is either, opened
//! from a [`StoreConfig`], with one API: the same operations, errors, name rules and etags
//! (the BLAKE3 hash of the content) whichever the backend. The S3 backend, its layout and how
//! it commits a batch on a service without transactions, is described in [`s3`]; the rest of
//! this page is the embedded store.
//!
//! # A guided tour
//!
//! ## On-disk layout
//!
//! ```text
//! <root>/
//!   format              "zvm-store 1": the layout's version
//!   lock                flock()ed by the one process that has the store open
//!   tmp/                puts being written, buckets being created or deleted; emptied by open
//!   batches/<id>/       one batch: its staged object files `0`, `1`, ... and, from its commit
//!                       point until it is fully applied, its commit record `commit`
//!   buckets/<bucket>/   one bucket: `bucket.json` (its creation time) and one file per object
//!       <blake3(key)>   an object: its content, then a JSON trailer with the key and
//!                       metadata, the trailer's length (u64, little-endian), "zvm-obj1"
//! ```
//!
//! A bucket's directory is its name (the S3 naming rules make every valid name a safe file
//! name). An object's file is named by the BLAKE3 hash of its key in hex, whatever the key:
//! keys are arbitrary UTF-8 up to 1024 bytes, with `/`, `..` and the like, and so can never
//! become paths of their own; hex or percent-encoding would exceed the 255-byte limit on file
//! names for long keys. The key itself is stored in the object's trailer, and an in-memory
//! index of every bucket's objects, sorted by key, serves listings and `head`. A reader finds
//! the trailer from the end of the file and checks that its recorded size matches the file's
//! length, so a file cut short is never taken for an object.
//!
//! ## One object, one file, one rename
//!
//! Content and metadata are one file, so a reader can never see new data with old metadata.
//! A put streams the body into `tmp/<id>` while hashing it (the etag is its BLAKE3 hash),
//! appends the trailer, fsyncs the file, then renames it over `buckets/<bucket>/<hash>` and
//! fsyncs that directory before it returns. The rename is atomic, so after a crash the key
//! names either the old file or the new one; an interrupted put leaves at most a file in
//! `tmp/`, which the next [`ObjectStore::open`] removes. A delete is one `unlink`, then an
//! fsync of the directory. A reader opens the object's file once and reads content and
//! metadata from that open file, so a concurrent put or delete of the same key does not
//! affect what it reads.
//!
//! ## Batches: several changes, all or nothing
//!
//! A [`Batch`] stages puts as complete, fsynced object files in its own directory
//! `batches/<id>/`, and records deletes in memory. [`Batch::commit`] writes the commit
//! record (every put with its staged file, every delete) to `commit.tmp`, fsyncs it, renames
//! it to `commit` and fsyncs the batch directory: that is the commit point. It then applies
//! the record (renames staged files into their buckets, unlinks deleted objects), fsyncs the
//! bucket directories, and removes the record durably. [`ObjectStore::open`] finds batch
//! directories left by a crash: one without a commit record never committed and is deleted
//! (roll back); one with a record is applied again (roll forward). Applying is idempotent: a
//! staged file that is gone was renamed already, and a batch holds at most one change per
//! key (a later change to a key in the same batch replaces the earlier one), so replaying a
//! delete cannot undo a put of the same batch.
//!
//! ## Concurrency
//!
//! [`ObjectStore`] is `Send + Sync`, and all its methods take `&self`. One mutex guards the
//! index; it is held across each rename or unlink and the matching index update, so the
//! index and the directory change in the same order, and of two concurrent puts of a key the
//! later rename wins on disk and in the index. Bodies are streamed and files fsynced outside
//! the mutex, so puts of large objects proceed in parallel. A batch commit holds the mutex
//! from just before its commit point until its record is durably removed (a handful of
//! fsyncs): were another put to land in between, replaying the batch's deletes after a crash
//! could remove that newer object. Only one process may have a store open: `open` takes an
//! exclusive `flock` on `lock`, which is what makes it safe for `open` to delete leftovers in
//! `tmp/` and `batches/`.
//!
//! ## Testing the protocol
//!
//! Every step of the protocols above is followed by a crash point: with
//! `ZVM_STORE_CRASH_AT=<n>` ([`CRASH_AT_VAR`]) the process kills itself with SIGKILL at the
//! n-th. The crash tests stop a writer at each point in turn, and at random moments, and
//! check what `open` recovers.
//!
//! ## Not (yet) here
//!
//! Listing has no delimiter (no common prefixes); there are no multipart uploads and no
//! versioning. Opening reads every object's trailer to build the index, so it costs one
//! small read per object, and the index keeps every object's metadata in memory.

mod backend;
mod batch;
mod crash;
mod disk;
mod error;
mod names;
mod object;
mod range;
pub mod s3;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use crate::backend::{Store, StoreBatch, StoreConfig};
pub use crate::batch::Batch;
pub use crate::crash::CRASH_AT_VAR;
pub use crate::error::{Error, Result};
pub use crate::names::{
    MAX_BUCKET_NAME, MAX_KEY_BYTES, MIN_BUCKET_NAME, validate_bucket, validate_key,
};
pub use crate::object::{
    MAX_CONTENT_TYPE_BYTES, MAX_USER_METADATA_BYTES, ObjectBody, ObjectInfo, PutMeta,
};
pub use crate::range::ByteRange;
pub use crate::s3::{S3Batch, S3Config, S3Store, StagedPut};

use crate::crash::crash_point;
use crate::error::IoContext;

/// The layout version, the content of `<root>/format`.
pub const FORMAT: &str = "zvm-store 1";
const FORMAT_FILE: &str = "format";
const LOCK_FILE: &str = "lock";
const TMP_DIR: &str = "tmp";
const BATCHES_DIR: &str = "batches";
const BUCKETS_DIR: &str = "buckets";
/// A bucket's own metadata, beside its objects (whose names are 64 hex digits).
const BUCKET_FILE: &str = "bucket.json";

/// A bucket, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    /// When the bucket was created, in milliseconds since the Unix epoch.
    pub created: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketFile {
    created: u64,
}

/// The result of [`ObjectStore::get`].
#[derive(Debug)]
pub struct GetObject {
    /// The whole object's metadata (its `size` and `etag` are those of the whole content).
    pub info: ObjectInfo,
    /// With a range: the half-open byte offsets `body` holds, for `Content-Range`.
    pub range: Option<std::ops::Range<u64>>,
    pub body: ObjectBody,
}

/// What the store holds, in memory: buckets and their objects sorted by key (Rust orders
/// strings by their UTF-8 bytes, which is the order S3 lists in).
#[derive(Debug, Default)]
struct Index {
    buckets: BTreeMap<String, BucketIndex>,
}

#[derive(Debug)]
struct BucketIndex {
    created: u64,
    objects: BTreeMap<String, ObjectInfo>,
}

impl Index {
    fn bucket(&self, bucket: &str) -> Result<&BucketIndex> {
        self.buckets.get(bucket).ok_or_else(|| Error::NoSuchBucket {
            bucket: bucket.to_owned(),
        })
    }

    fn bucket_mut(&mut self, bucket: &str) -> Result<&mut BucketIndex> {
        self.buckets
            .get_mut(bucket)
            .ok_or_else(|| Error::NoSuchBucket {
                bucket: bucket.to_owned(),
            })
    }
}

/// An object store in a directory; see the crate documentation for the layout and protocol.
#[derive(Debug)]
pub struct ObjectStore {
    root: PathBuf,
    index: Mutex<Index>,
    next_id: AtomicU64,
    /// Holds the exclusive `flock` for as long as the store is open.
    _lock: File,
}

impl ObjectStore {
    /// Opens the store in `dir`, creating it if needed, and recovers from a crash: finishes
    /// committed batches, discards uncommitted ones and removes half-written files.
    pub fn open(dir: impl AsRef<Path>) -> Result<ObjectStore> {
        let root = dir.as_ref().to_path_buf();
        fs::create_dir_all(&root).op("create store directory", &root)?;
        let lock_path = root.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .op("open lock file", &lock_path)?;
        lock_exclusive(&lock, &root, &lock_path)?;
        check_format(&root)?;
        let mut created = false;
        for sub in [TMP_DIR, BATCHES_DIR, BUCKETS_DIR] {
            created |= disk::ensure_dir(&root.join(sub))?;
        }
        if created {
            disk::sync_dir(&root)?;
        }
        batch::recover(&root)?;
        let tmp = root.join(TMP_DIR);
        for entry in fs::read_dir(&tmp).op("read directory", &tmp)? {
            disk::remove_any(&entry.op("read directory", &tmp)?.path())?;
        }
        let index = load_index(&root.join(BUCKETS_DIR))?;
        Ok(ObjectStore {
            root,
            index: Mutex::new(index),
            next_id: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Each index update follows its disk change whole, so a panic elsewhere while the
        // lock was held leaves the index as consistent as the disk.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A name unique within this store: the store is open in one process only.
    fn unique(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", std::process::id())
    }

    fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(BUCKETS_DIR).join(bucket)
    }

    fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.bucket_dir(bucket).join(names::object_file_name(key))
    }

    fn require_bucket(&self, bucket: &str) -> Result<()> {
        self.lock().bucket(bucket).map(|_| ())
    }

    /// The error for a key that is not there: its bucket may be missing too.
    fn missing(&self, bucket: &str, key: &str) -> Error {
        match self.require_bucket(bucket) {
            Err(e) => e,
            Ok(()) => Error::NoSuchKey {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            },
        }
    }

    /// Creates an empty bucket.
    pub fn create_bucket(&self, name: &str) -> Result<BucketInfo> {
        validate_bucket(name)?;
        let mut index = self.lock();
        if index.buckets.contains_key(name) {
            return Err(Error::BucketAlreadyExists {
                bucket: name.to_owned(),
            });
        }
        // Built complete in tmp/ and renamed into place, so a crash never leaves a bucket
        // without its `bucket.json`.
        let stage = self.root.join(TMP_DIR).join(self.unique());
        let created = object::now_ms();
        let result = (|| {
            fs::create_dir(&stage).op("create directory", &stage)?;
            let json = serde_json::to_vec(&BucketFile { created }).expect("serialisable");
            disk::write_synced(&stage.join(BUCKET_FILE), &json)?;
            disk::sync_dir(&stage)?;
            crash_point("bucket staged");
            let dest = self.bucket_dir(name);
            fs::rename(&stage, &dest).op("rename bucket into place", &dest)?;
            disk::sync_dir(&self.root.join(BUCKETS_DIR))
        })();
        if let Err(e) = result {
            let _ = disk::remove_any(&stage);
            return Err(e);
        }
        index.buckets.insert(
            name.to_owned(),
            BucketIndex {
                created,
                objects: BTreeMap::new(),
            },
        );
        Ok(BucketInfo {
            name: name.to_owned(),
            created,
        })
    }

    /// Deletes a bucket, which must be empty.
    pub fn delete_bucket(&self, name: &str) -> Result<()> {
        validate_bucket(name)?;
        let mut index = self.lock();
        if !index.bucket(name)?.objects.is_empty() {
            return Err(Error::BucketNotEmpty {
                bucket: name.to_owned(),
            });
        }
        // One rename takes the bucket away; its remains in tmp/ go now or at the next open.
        let dir = self.bucket_dir(name);
        let trash = self.root.join(TMP_DIR).join(self.unique());
        fs::rename(&dir, &trash).op("move bucket to the trash", &dir)?;
        index.buckets.remove(name);
        disk::sync_dir(&self.root.join(BUCKETS_DIR))?;
        crash_point("bucket deleted");
        drop(index);
        let _ = disk::remove_any(&trash);
        Ok(())
    }

    /// Every bucket, sorted by name.
    pub fn list_buckets(&self) -> Vec<BucketInfo> {
        self.lock()
            .buckets
            .iter()
            .map(|(name, b)| BucketInfo {
                name: name.clone(),
                created: b.created,
            })
            .collect()
    }

    /// Stores `data` as object `key`, replacing any object of that key atomically, and
    /// returns its metadata once it is durable.
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
        // Fail early rather than after streaming a large body; checked again at the rename.
        self.require_bucket(bucket)?;
        let temp = self.root.join(TMP_DIR).join(self.unique());
        let (staged, info) = object::write_object(temp, bucket, key, data, meta)?;
        crash_point("object staged");
        let dest = self.object_path(bucket, key);
        {
            let mut index = self.lock();
            let objects = &mut index.bucket_mut(bucket)?.objects;
            fs::rename(&staged.path, &dest).op("rename object into place", &dest)?;
            staged.keep();
            objects.insert(key.to_owned(), info.clone());
        }
        crash_point("object renamed");
        disk::sync_dir_if_exists(&self.bucket_dir(bucket))?;
        Ok(info)
    }

    /// Reads object `key`, or the `range` of it.
    pub fn get(&self, bucket: &str, key: &str, range: Option<ByteRange>) -> Result<GetObject> {
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        let path = self.object_path(bucket, key);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.missing(bucket, key)),
            Err(e) => return Err(e).op("open object", &path),
        };
        let info = object::read_info(&mut file, &path)?;
        if info.key != key {
            return Err(Error::Corrupt {
                path,
                reason: format!("holds key {:?}, not {key:?}", info.key),
            });
        }
        let offsets = match range {
            None => 0..info.size,
            Some(r) => r.resolve(info.size).ok_or_else(|| Error::InvalidRange {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                range: r,
                size: info.size,
            })?,
        };
        let body = ObjectBody::new(file, &path, offsets.clone())?;
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
        self.lock()
            .bucket(bucket)?
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NoSuchKey {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            })
    }

    /// Deletes object `key` atomically; whether it existed (deleting a missing key is not an
    /// error, as in S3).
    pub fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        let path = self.object_path(bucket, key);
        {
            let mut index = self.lock();
            let objects = &mut index.bucket_mut(bucket)?.objects;
            if !objects.contains_key(key) {
                return Ok(false);
            }
            disk::remove_file(&path)?;
            objects.remove(key);
        }
        crash_point("object deleted");
        disk::sync_dir_if_exists(&self.bucket_dir(bucket))?;
        Ok(true)
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
        let index = self.lock();
        let objects = &index.bucket(bucket)?.objects;
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut matching = objects
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, info)| info);
        let page: Vec<ObjectInfo> = matching.by_ref().take(limit).cloned().collect();
        let truncated = matching.next().is_some();
        Ok((page, truncated))
    }

    /// A batch of puts and deletes that [`Batch::commit`] applies all or nothing.
    pub fn batch(&self) -> Batch<'_> {
        Batch::new(self)
    }
}

/// How long `open` waits for the lock before reporting the store in use. A lock is held by
/// an open file description, and a child that another thread of the process which had the
/// store open forks holds a copy of it until it execs; this outlasts that window even on a
/// loaded machine.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// How often `open` tries the lock while it waits.
const LOCK_POLL: Duration = Duration::from_millis(10);

/// Takes the store's exclusive lock, waiting up to [`LOCK_WAIT`] for it.
fn lock_exclusive(lock: &File, root: &Path, lock_path: &Path) -> Result<()> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(LOCK_POLL);
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::Locked {
                    path: root.to_owned(),
                });
            }
            Err(e) => return Err(io::Error::from(e)).op("lock", lock_path),
        }
    }
}

/// Checks `<root>/format`, writing it in a new store.
fn check_format(root: &Path) -> Result<()> {
    let path = root.join(FORMAT_FILE);
    match fs::read_to_string(&path) {
        Ok(found) if found.trim_end() == FORMAT => Ok(()),
        Ok(found) => Err(Error::UnsupportedFormat {
            path,
            found: found.trim_end().to_owned(),
            expected: FORMAT,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let temp = root.join(format!("{FORMAT_FILE}.tmp"));
            disk::write_synced(&temp, format!("{FORMAT}\n").as_bytes())?;
            fs::rename(&temp, &path).op("rename", &path)?;
            disk::sync_dir(root)
        }
        Err(e) => Err(e).op("read", &path),
    }
}

/// Reads every bucket and every object's trailer.
fn load_index(buckets: &Path) -> Result<Index> {
    let mut index = Index::default();
    for entry in fs::read_dir(buckets).op("read directory", buckets)? {
        let dir = entry.op("read directory", buckets)?.path();
        let corrupt = |reason: String| Error::Corrupt {
            path: dir.clone(),
            reason,
        };
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| corrupt("not a bucket name".into()))?
            .to_owned();
        validate_bucket(&name).map_err(|e| corrupt(e.to_string()))?;
        let bucket_file = dir.join(BUCKET_FILE);
        let json = fs::read(&bucket_file).op("read", &bucket_file)?;
        let BucketFile { created } = serde_json::from_slice(&json).map_err(|e| Error::Corrupt {
            path: bucket_file.clone(),
            reason: e.to_string(),
        })?;
        let mut objects = BTreeMap::new();
        for entry in fs::read_dir(&dir).op("read directory", &dir)? {
            let path = entry.op("read directory", &dir)?.path();
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if file_name == BUCKET_FILE {
                continue;
            }
            if !names::is_object_file_name(file_name) {
                return Err(Error::Corrupt {
                    path,
                    reason: "not an object file name".into(),
                });
            }
            let mut file = File::open(&path).op("open object", &path)?;
            let info = object::read_info(&mut file, &path)?;
            if names::object_file_name(&info.key) != file_name {
                return Err(Error::Corrupt {
                    path,
                    reason: format!("holds key {:?}, whose file has another name", info.key),
                });
            }
            objects.insert(info.key.clone(), info);
        }
        index.buckets.insert(name, BucketIndex { created, objects });
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ObjectStore>();
        assert_send_sync::<Batch<'_>>();
    }

    #[test]
    fn a_store_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(ObjectStore::open(dir.path()).unwrap());
        fs::write(dir.path().join(FORMAT_FILE), "zvm-store 99\n").unwrap();
        let err = ObjectStore::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("`zvm-store 99`") && err.contains("`zvm-store 1`"),
            "{err}"
        );
    }

    #[test]
    fn a_stray_file_in_a_bucket_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        store.create_bucket("bkt").unwrap();
        drop(store);
        let stray = dir.path().join(BUCKETS_DIR).join("bkt").join("notes.txt");
        fs::write(&stray, "hi").unwrap();
        let err = ObjectStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { path, .. } if *path == stray),
            "{err}"
        );
    }

    #[test]
    fn an_object_under_the_wrong_name_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        store.create_bucket("bkt").unwrap();
        store
            .put("bkt", "a", &b"A"[..], PutMeta::default())
            .unwrap();
        let a = store.object_path("bkt", "a");
        let b = store.object_path("bkt", "b");
        fs::copy(&a, &b).unwrap();
        let err = store.get("bkt", "b", None).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        drop(store);
        let err = ObjectStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
