//! Batches: several puts and deletes that land all or nothing, even across a crash; this is
//! how the outputs of a VM land whole or not at all.
//!
//! A batch stages its puts as complete object files in `batches/<id>/`, and commits by
//! writing a commit record there (a redo log); [`recover`], run by `ObjectStore::open`,
//! finishes committed batches and discards the others. The crate documentation describes
//! the protocol step by step.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crash::crash_point;
use crate::disk;
use crate::error::{Error, IoContext, Result};
use crate::names::{self, validate_bucket, validate_key};
use crate::object::{self, ObjectInfo, PutMeta, StagedFile};
use crate::{BATCHES_DIR, BUCKETS_DIR, ObjectStore};

/// The commit record's name in a batch directory; its presence is the commit point.
const COMMIT_FILE: &str = "commit";
/// Where the commit record is written before the rename that commits.
const COMMIT_TEMP_FILE: &str = "commit.tmp";
/// The commit record's format number.
const RECORD_FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitRecord {
    format: u32,
    changes: Vec<Change>,
}

/// One change of a committed batch, at most one per (bucket, key).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Change {
    /// Rename the batch's file `staged` to the key's object file.
    Put {
        bucket: String,
        key: String,
        staged: String,
    },
    /// Remove the key's object file.
    Delete { bucket: String, key: String },
}

/// A staged change.
#[derive(Debug)]
enum Staged {
    Put { file: StagedFile, info: ObjectInfo },
    Delete,
}

/// Puts and deletes, possibly across buckets, applied together by [`Batch::commit`]: after
/// a crash at any point, either all of them are visible or none is. Until then none of them
/// is. Dropping a batch without committing it discards it.
///
/// A later change of a key in the same batch replaces an earlier one.
#[derive(Debug)]
pub struct Batch<'s> {
    store: &'s ObjectStore,
    /// `batches/<id>/`, created with the first staged put (or at commit).
    dir: Option<PathBuf>,
    changes: BTreeMap<(String, String), Staged>,
    next_file: u64,
    /// Past the commit point: the directory belongs to recovery if applying fails.
    committed: bool,
}

impl<'s> Batch<'s> {
    pub(crate) fn new(store: &'s ObjectStore) -> Self {
        Batch {
            store,
            dir: None,
            changes: BTreeMap::new(),
            next_file: 0,
            committed: false,
        }
    }

    /// How many keys the batch changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    fn dir(&mut self) -> Result<PathBuf> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        let batches = self.store.root.join(BATCHES_DIR);
        let dir = batches.join(self.store.unique());
        fs::create_dir(&dir).op("create batch directory", &dir)?;
        self.dir = Some(dir.clone());
        // The batch directory's own name must survive a crash once the batch commits.
        disk::sync_dir(&batches)?;
        Ok(dir)
    }

    /// Stages `data` as object `key`: written and fsynced now, visible at commit. Returns the
    /// metadata the object will have.
    pub fn put(
        &mut self,
        bucket: &str,
        key: &str,
        data: impl Read,
        meta: PutMeta,
    ) -> Result<ObjectInfo> {
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        object::validate_meta(bucket, key, &meta)?;
        self.store.require_bucket(bucket)?;
        let path = self.dir()?.join(self.next_file.to_string());
        self.next_file += 1;
        let (file, info) = object::write_object(path, bucket, key, data, meta)?;
        crash_point("batch object staged");
        let staged = Staged::Put {
            file,
            info: info.clone(),
        };
        // A replaced staged put drops its file here.
        self.changes
            .insert((bucket.to_owned(), key.to_owned()), staged);
        Ok(info)
    }

    /// Stages the deletion of object `key`; deleting a key that does not exist at commit is
    /// not an error.
    pub fn delete(&mut self, bucket: &str, key: &str) -> Result<()> {
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        self.store.require_bucket(bucket)?;
        self.changes
            .insert((bucket.to_owned(), key.to_owned()), Staged::Delete);
        Ok(())
    }

    /// Applies every staged change, all or nothing. An error before the commit point means
    /// nothing changed; [`Error::BatchIncomplete`] means the batch committed and the next
    /// `ObjectStore::open` finishes applying it.
    pub fn commit(mut self) -> Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let dir = self.dir()?;
        let store = self.store;
        let mut index = store.lock();
        for (bucket, _) in self.changes.keys() {
            index.bucket(bucket)?;
        }
        let mut record = CommitRecord {
            format: RECORD_FORMAT,
            changes: Vec::with_capacity(self.changes.len()),
        };
        // From here on the staged files are removed with the whole directory, if at all.
        let mut applied = Vec::with_capacity(self.changes.len());
        for ((bucket, key), staged) in std::mem::take(&mut self.changes) {
            match staged {
                Staged::Put { file, info } => {
                    let path = file.path.clone();
                    file.keep();
                    let staged = file_name(&path);
                    record.changes.push(Change::Put {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        staged,
                    });
                    applied.push((bucket, key, Some((path, info))));
                }
                Staged::Delete => {
                    record.changes.push(Change::Delete {
                        bucket: bucket.clone(),
                        key: key.clone(),
                    });
                    applied.push((bucket, key, None));
                }
            }
        }
        let json = serde_json::to_vec(&record).expect("a commit record always serialises");
        let temp = dir.join(COMMIT_TEMP_FILE);
        disk::write_synced(&temp, &json)?;
        let commit = dir.join(COMMIT_FILE);
        fs::rename(&temp, &commit).op("rename commit record", &commit)?;
        // This fsync makes the record's name, and the staged files' names, durable: the
        // commit point.
        disk::sync_dir(&dir)?;
        self.committed = true;
        crash_point("batch committed");

        let incomplete = |e| Error::BatchIncomplete {
            source: Box::new(e),
        };
        let mut dirs = BTreeSet::new();
        for (bucket, key, put) in applied {
            let dest = store.object_path(&bucket, &key);
            let objects = &mut index.bucket_mut(&bucket).map_err(incomplete)?.objects;
            match put {
                Some((path, info)) => {
                    fs::rename(&path, &dest)
                        .op("rename object into place", &dest)
                        .map_err(incomplete)?;
                    objects.insert(key, info);
                }
                None => {
                    disk::remove_file(&dest).map_err(incomplete)?;
                    objects.remove(&key);
                }
            }
            crash_point("batch change applied");
            dirs.insert(store.bucket_dir(&bucket));
        }
        for bucket_dir in &dirs {
            disk::sync_dir(bucket_dir).map_err(incomplete)?;
        }
        crash_point("batch applied");
        // Removing the record durably before anyone else may change these keys: see the
        // crate documentation on concurrency.
        disk::remove_file(&commit).map_err(incomplete)?;
        disk::sync_dir(&dir).map_err(incomplete)?;
        crash_point("batch record removed");
        drop(index);
        self.committed = false;
        // What is left is an empty directory: removing it now or at the next open is the same.
        Ok(())
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if !self.committed
            && let Some(dir) = &self.dir
        {
            // Drop the staged files' handles first (they would remove their own files).
            self.changes.clear();
            let _ = disk::remove_any(dir);
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("staged files have decimal names")
        .to_owned()
}

/// Finishes the batches a crash interrupted, in the store at `root`: applies every batch
/// with a commit record again and removes every batch directory.
pub(crate) fn recover(root: &Path) -> Result<()> {
    let batches = root.join(BATCHES_DIR);
    for entry in fs::read_dir(&batches).op("read directory", &batches)? {
        let dir = entry.op("read directory", &batches)?.path();
        let commit = dir.join(COMMIT_FILE);
        match fs::read(&commit) {
            Ok(json) => {
                let record: CommitRecord =
                    serde_json::from_slice(&json).map_err(|e| Error::Corrupt {
                        path: commit.clone(),
                        reason: e.to_string(),
                    })?;
                redo(root, &dir, &record).map_err(|e| match e {
                    Error::InvalidBucketName { .. } | Error::InvalidKey { .. } => Error::Corrupt {
                        path: commit.clone(),
                        reason: e.to_string(),
                    },
                    e => e,
                })?;
                disk::remove_file(&commit)?;
                disk::sync_dir(&dir)?;
                crash_point("recovery removed a commit record");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).op("read commit record", &commit),
        }
        // Without a record: never committed, roll back. With one: applied above.
        disk::remove_any(&dir)?;
    }
    Ok(())
}

/// Applies a commit record again; every step may have happened already.
fn redo(root: &Path, dir: &Path, record: &CommitRecord) -> Result<()> {
    if record.format != RECORD_FORMAT {
        return Err(Error::Corrupt {
            path: dir.join(COMMIT_FILE),
            reason: format!("commit record format {}", record.format),
        });
    }
    let mut dirs = BTreeSet::new();
    for change in &record.changes {
        let (bucket, key) = match change {
            Change::Put { bucket, key, .. } | Change::Delete { bucket, key } => (bucket, key),
        };
        // The names become paths: a damaged record must not reach outside the store.
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        let bucket_dir = root.join(BUCKETS_DIR).join(bucket);
        if !bucket_dir.is_dir() {
            // Buckets cannot be deleted while a batch applies (the index lock); should one be
            // missing anyway, its objects went with it.
            continue;
        }
        let dest = bucket_dir.join(names::object_file_name(key));
        match change {
            Change::Put { staged, .. } => {
                if staged.is_empty() || !staged.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Error::Corrupt {
                        path: dir.join(COMMIT_FILE),
                        reason: format!("staged file name {staged:?}"),
                    });
                }
                let source = dir.join(staged);
                match fs::rename(&source, &dest) {
                    Ok(()) => {}
                    // Renamed before the crash.
                    Err(e) if e.kind() == io::ErrorKind::NotFound && !source.exists() => {}
                    Err(e) => return Err(e).op("rename object into place", &dest),
                }
            }
            Change::Delete { .. } => {
                disk::remove_file(&dest)?;
            }
        }
        crash_point("recovery redid a change");
        dirs.insert(bucket_dir);
    }
    for bucket_dir in &dirs {
        disk::sync_dir(bucket_dir)?;
    }
    Ok(())
}
