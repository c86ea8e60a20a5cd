//! Batches on S3: staged uploads, a commit record written in one PUT as the commit point,
//! then server-side copies; and the recovery that rolls committed batches forward when the
//! backend opens. The protocol, and what it does not make atomic, is described in the
//! module documentation of the S3 backend.

use std::collections::BTreeMap;
use std::io::Read;

use futures_util::stream::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore as _, PutPayload};
use serde::{Deserialize, Serialize};

use super::S3Store;
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::names::{validate_bucket, validate_key};
use crate::object::{self, ObjectInfo, PutMeta};

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
    /// Copy the staged object `staged` (its number in the batch) to the key.
    Put {
        bucket: String,
        key: String,
        staged: u64,
    },
    /// Delete the key.
    Delete { bucket: String, key: String },
}

#[derive(Debug)]
enum Staged {
    Put { n: u64 },
    Delete,
}

/// Puts and deletes, possibly across buckets, that land together: none is visible before
/// [`S3Batch::commit`], and once it has passed its commit point all of them land, even if
/// the process dies (the next [`S3Store::open`] finishes the batch). Dropping a batch without
/// committing it deletes what it staged. A later change of a key replaces an earlier one.
#[derive(Debug)]
pub struct S3Batch<'s> {
    store: &'s S3Store,
    id: String,
    changes: BTreeMap<(String, String), Staged>,
    /// Staged objects not (or no longer) named by a change: deleted with the batch.
    unused: Vec<u64>,
    next: u64,
    /// Past the commit point: the staged objects belong to the record.
    committed: bool,
}

impl<'s> S3Batch<'s> {
    pub(crate) fn new(store: &'s S3Store) -> Self {
        S3Batch {
            store,
            id: store.unique(),
            changes: BTreeMap::new(),
            unused: Vec::new(),
            next: 0,
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

    fn staged_path(&self, n: u64) -> Path {
        staged_path(self.store, &self.id, n)
    }

    /// Stages `data` as object `key`: uploaded now, visible at commit. Returns the metadata
    /// the object will have.
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
        self.store.object_path(bucket, key)?;
        self.store.require_bucket(bucket)?;
        let n = self.next;
        self.next += 1;
        // Counted before the upload, so that a failed upload's leftovers are deleted too.
        self.unused.push(n);
        let info = self
            .store
            .upload(&self.staged_path(n), bucket, key, data, meta, false)?;
        self.unused.retain(|&u| u != n);
        crash_point("s3 batch object staged");
        let replaced = self
            .changes
            .insert((bucket.to_owned(), key.to_owned()), Staged::Put { n });
        if let Some(Staged::Put { n }) = replaced {
            self.unused.push(n);
        }
        Ok(info)
    }

    /// Stages the deletion of object `key`; deleting a key that does not exist at commit is
    /// not an error.
    pub fn delete(&mut self, bucket: &str, key: &str) -> Result<()> {
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        self.store.object_path(bucket, key)?;
        self.store.require_bucket(bucket)?;
        let replaced = self
            .changes
            .insert((bucket.to_owned(), key.to_owned()), Staged::Delete);
        if let Some(Staged::Put { n }) = replaced {
            self.unused.push(n);
        }
        Ok(())
    }

    /// Applies every staged change, all or nothing. An error before the commit point means
    /// nothing changed; [`Error::BatchIncomplete`] means the batch committed and the next
    /// [`S3Store::open`] finishes applying it.
    pub fn commit(self) -> Result<()> {
        self.commit_to(Stop::Never)
    }

    /// Test hook: commits, then stops right after the commit record is written, as if the
    /// process had died there; the batch is left for [`S3Store::open`] to roll forward.
    #[doc(hidden)]
    pub fn commit_stopping_after_record(self) -> Result<()> {
        self.commit_to(Stop::AfterRecord)
    }

    fn commit_to(mut self, stop: Stop) -> Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let store = self.store;
        let record = CommitRecord {
            format: RECORD_FORMAT,
            changes: self
                .changes
                .iter()
                .map(|((bucket, key), staged)| match staged {
                    Staged::Put { n } => Change::Put {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        staged: *n,
                    },
                    Staged::Delete => Change::Delete {
                        bucket: bucket.clone(),
                        key: key.clone(),
                    },
                })
                .collect(),
        };
        let json = serde_json::to_vec(&record).expect("a commit record always serialises");
        let record_path = record_path(store, &self.id);
        let id = self.id.clone();
        let buckets: Vec<String> = self.changes.keys().map(|(b, _)| b.clone()).collect();
        let unused: Vec<Path> = std::mem::take(&mut self.unused)
            .into_iter()
            .map(|n| self.staged_path(n))
            .collect();
        let outcome = store.block_on(async {
            // Replaced puts are in no record: what is left of them the next open deletes.
            for path in &unused {
                let _ = store.s3.delete(path).await;
            }
            for bucket in &buckets {
                store
                    .require_bucket_async(bucket)
                    .await
                    .map_err(Outcome::NotCommitted)?;
            }
            // Held from the commit point until the record is gone: see the module docs.
            let _landing = store.landing.write().await;
            if let Err(e) = store.s3.put(&record_path, PutPayload::from(json)).await {
                // A PUT that failed on the way back may have landed: only S3 knows whether
                // the batch passed its commit point.
                match store.exists(&record_path).await {
                    Ok(false) => {
                        return Err(Outcome::NotCommitted(store.backend(
                            "put commit record",
                            &record_path,
                            e,
                        )));
                    }
                    Ok(true) => {}
                    // Unknown: the next open lands the batch if the record is there, and
                    // deletes its staged objects if not.
                    Err(_) => {
                        return Err(Outcome::Incomplete(store.backend(
                            "put commit record",
                            &record_path,
                            e,
                        )));
                    }
                }
            }
            crash_point("s3 batch committed");
            if stop == Stop::AfterRecord {
                return Ok(());
            }
            apply(store, &id, &record_path, &record)
                .await
                .map_err(Outcome::Incomplete)
        });
        match outcome {
            Ok(()) => {}
            Err(Outcome::NotCommitted(e)) => return Err(e),
            Err(Outcome::Incomplete(e)) => {
                self.committed = true;
                return Err(Error::BatchIncomplete {
                    source: Box::new(e),
                });
            }
        }
        self.committed = true;
        self.changes.clear();
        Ok(())
    }
}

/// How a commit that did not finish ended.
enum Outcome {
    /// Before the commit point: nothing changed (the staged objects go with the batch).
    NotCommitted(Error),
    /// Past it, or maybe past it: the next open finishes the batch.
    Incomplete(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Never,
    AfterRecord,
}

impl Drop for S3Batch<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let mut doomed: Vec<u64> = std::mem::take(&mut self.unused);
        doomed.extend(self.changes.values().filter_map(|s| match s {
            Staged::Put { n } => Some(*n),
            Staged::Delete => None,
        }));
        if doomed.is_empty() {
            return;
        }
        let store = self.store;
        let paths: Vec<Path> = doomed.iter().map(|&n| self.staged_path(n)).collect();
        // Best effort: what is left here the next open deletes.
        store.block_on(async {
            for path in &paths {
                let _ = store.s3.delete(path).await;
            }
        });
    }
}

fn staged_path(store: &S3Store, batch: &str, n: u64) -> Path {
    store.own_path(&format!("staging/{batch}/{n}"))
}

fn record_path(store: &S3Store, batch: &str) -> Path {
    store.own_path(&format!("commits/{batch}"))
}

/// Carries out a committed batch's record (again): copies, deletes, then removes the staged
/// objects and the record. Every step may have happened already.
async fn apply(
    store: &S3Store,
    batch: &str,
    record_path: &Path,
    record: &CommitRecord,
) -> Result<()> {
    let corrupt = |reason: String| Error::Corrupt {
        path: store.url(record_path).into(),
        reason,
    };
    if record.format != RECORD_FORMAT {
        return Err(corrupt(format!("commit record format {}", record.format)));
    }
    for change in &record.changes {
        let (bucket, key) = match change {
            Change::Put { bucket, key, .. } | Change::Delete { bucket, key } => (bucket, key),
        };
        // The names become S3 keys: a damaged record must not reach outside the store.
        validate_bucket(bucket).map_err(|e| corrupt(e.to_string()))?;
        validate_key(bucket, key).map_err(|e| corrupt(e.to_string()))?;
        let dest = store
            .object_path(bucket, key)
            .map_err(|e| corrupt(e.to_string()))?;
        match change {
            Change::Put { staged, .. } => {
                let source = staged_path(store, batch, *staged);
                match store.s3.copy(&source, &dest).await {
                    Ok(()) => {}
                    // Staged objects are deleted only once every copy is done.
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store.backend("copy into place", &dest, e)),
                }
            }
            Change::Delete { .. } => store
                .s3
                .delete(&dest)
                .await
                .map_err(|e| store.backend("delete", &dest, e))?,
        }
        crash_point("s3 batch change applied");
    }
    for change in &record.changes {
        if let Change::Put { staged, .. } = change {
            let source = staged_path(store, batch, *staged);
            store
                .s3
                .delete(&source)
                .await
                .map_err(|e| store.backend("delete staged object", &source, e))?;
        }
    }
    crash_point("s3 batch staged objects deleted");
    store
        .s3
        .delete(record_path)
        .await
        .map_err(|e| store.backend("delete commit record", record_path, e))?;
    crash_point("s3 batch record removed");
    Ok(())
}

/// Rolls forward every committed batch (in the order they were made) and deletes every
/// staged object left by a batch that never committed: this writer's own, the only ones it
/// may judge (another writer's batch may be in flight).
pub(crate) fn recover(store: &S3Store) -> Result<()> {
    let commits = store.own_path("commits");
    let staging = store.own_path("staging");
    store.block_on(async {
        let mut records: Vec<Path> = store
            .s3
            .list(Some(&commits))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| store.backend("list", &commits, e))?;
        records.sort();
        for record_path in records {
            let batch = record_path.filename().unwrap_or_default().to_owned();
            let bytes = store
                .s3
                .get(&record_path)
                .await
                .map_err(|e| store.backend("get", &record_path, e))?
                .bytes()
                .await
                .map_err(|e| store.backend("read", &record_path, e))?;
            let record: CommitRecord =
                serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                    path: store.url(&record_path).into(),
                    reason: e.to_string(),
                })?;
            apply(store, &batch, &record_path, &record).await?;
        }
        // No record is left: every staged object belongs to a batch that never committed.
        let leftovers: Vec<Path> = store
            .s3
            .list(Some(&staging))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| store.backend("list", &staging, e))?;
        for path in leftovers {
            store
                .s3
                .delete(&path)
                .await
                .map_err(|e| store.backend("delete staged object", &path, e))?;
        }
        Ok(())
    })
}
