//! Job commits across processes: the outputs of a distributed job, staged by whichever
//! processes ran its members, land together through one commit record that any process may
//! apply. The protocol, and who calls what when, is described in the S3 backend's module
//! documentation ("Job commits across processes"); this file holds its mechanics: raw
//! objects under a path the caller chooses, zvm objects staged there, the record, its
//! idempotent apply, and where an object lives (for placing work next to its data).
//!
//! Unlike a batch's staging and records, which live in one writer's namespace, everything
//! here is addressed by a path relative to the store's prefix, shared by every process: the
//! caller makes the path unique to the job (`jobs/<job id>/...`), and only the store's own
//! top-level names ([`RESERVED`]) are refused, so that a raw object can never pose as a zvm
//! object or as a batch's state.

use std::collections::BTreeSet;
use std::io::Read;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore as _, PutPayload};
use serde::{Deserialize, Serialize};

use super::{MAX_S3_KEY_BYTES, S3Store};
use crate::error::{Error, Result};
use crate::names::{validate_bucket, validate_key};
use crate::object::{self, ObjectInfo, PutMeta};

/// The job commit record's format number.
const RECORD_FORMAT: u32 = 1;
/// Server-side copies of one apply in flight at once: a job's outputs land in
/// `outputs / 16` round trips, without opening a connection per output.
const COPIES_IN_FLIGHT: usize = 16;
/// First segments a raw path may not have: the store's own layout (zvm buckets and objects,
/// a batch's staging and records, the writers' namespaces).
pub const RESERVED: [&str; 5] = ["buckets", "objects", "staging", "commits", "writers"];

/// One output of a job commit: the object staged at `staged` (by [`S3Store::stage_object`])
/// lands as object `key` of zvm bucket `bucket` when the record is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedPut {
    /// The zvm bucket the object lands in.
    pub bucket: String,
    /// The object's key there.
    pub key: String,
    /// Where it was staged: a path relative to the store's prefix, as given to
    /// [`S3Store::stage_object`].
    pub staged: String,
}

/// A job commit record: what [`S3Store::write_commit_record`] writes in one PUT.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRecord {
    format: u32,
    puts: Vec<StagedPut>,
}

/// Why `rel` is not a raw path: non-empty segments, none `.` or `..`, no control character,
/// no leading or trailing `/`, not under a [`RESERVED`] name.
fn check_rel(rel: &str) -> std::result::Result<(), String> {
    if rel.is_empty() {
        return Err("the path is empty".into());
    }
    if rel.starts_with('/') {
        return Err(
            "the path must not start with `/`: it is relative to the store's prefix".into(),
        );
    }
    for segment in rel.split('/') {
        match segment {
            "" => return Err("the path has an empty segment (`//`, or a trailing `/`)".into()),
            "." | ".." => return Err(format!("the path has a `{segment}` segment")),
            _ => {}
        }
    }
    if let Some(c) = rel.chars().find(char::is_ascii_control) {
        return Err(format!("the path holds the control character {c:?}"));
    }
    let first = rel.split('/').next().unwrap_or_default();
    if RESERVED.contains(&first) {
        return Err(format!(
            "`{first}/` is the store's own (reserved: {})",
            RESERVED.join(", ")
        ));
    }
    Ok(())
}

impl S3Store {
    /// The S3 key of the raw path `rel` (relative to the store's prefix), checked.
    fn rel_path(&self, rel: &str) -> Result<Path> {
        let full = format!("{}{rel}", self.root);
        let refuse = |reason: String| Error::Backend {
            op: "check the store path",
            what: format!("s3://{}/{full}", self.bucket),
            cause: reason.into(),
        };
        check_rel(rel).map_err(refuse)?;
        if full.len() > MAX_S3_KEY_BYTES {
            return Err(refuse(format!(
                "{} bytes under the prefix, S3 allows {MAX_S3_KEY_BYTES}",
                full.len()
            )));
        }
        Path::parse(&full).map_err(|e| refuse(e.to_string()))
    }

    /// Writes `data` as the raw object `<prefix>/<rel>` (no zvm metadata: job state, commit
    /// records and the like), replacing any object there atomically.
    pub fn put_raw(&self, rel: &str, data: Vec<u8>) -> Result<()> {
        let path = self.rel_path(rel)?;
        self.block_on(async {
            self.s3
                .put(&path, PutPayload::from(data))
                .await
                .map_err(|e| self.backend("put", &path, e))?;
            Ok(())
        })
    }

    /// The content of the raw object `<prefix>/<rel>`, or `None` if there is none.
    pub fn get_raw(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let path = self.rel_path(rel)?;
        self.block_on(self.get_raw_async(&path))
    }

    async fn get_raw_async(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match self.s3.get(path).await {
            Ok(got) => {
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| self.backend("read", path, e))?;
                Ok(Some(bytes.to_vec()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend("get", path, e)),
        }
    }

    /// Deletes every object under `<prefix>/<rel>/` (a job's staged outputs and record, once
    /// the job is over) and returns how many it deleted. Objects that appear under it while
    /// it runs may be left.
    pub fn delete_raw_prefix(&self, rel: &str) -> Result<u64> {
        let dir = self.rel_path(rel)?;
        self.block_on(async {
            let listed: Vec<Path> = self
                .s3
                .list(Some(&dir))
                .map_ok(|meta| meta.location)
                .try_collect()
                .await
                .map_err(|e| self.backend("list", &dir, e))?;
            let deleted = self
                .s3
                .delete_stream(stream::iter(listed.into_iter().map(Ok)).boxed())
                .map_err(|e| self.backend("delete under", &dir, e))
                .try_fold(0u64, |n, _| async move { Ok(n + 1) })
                .await?;
            Ok(deleted)
        })
    }

    /// Stages `data` as the future object `key` of `bucket`, at the raw path
    /// `<prefix>/<rel>`: uploaded now with its zvm metadata, exactly as a batch stages a put
    /// (a multipart upload for a large body), and visible as the object only once a commit
    /// record naming it is applied. Returns the metadata the object will have.
    pub fn stage_object(
        &self,
        rel: &str,
        bucket: &str,
        key: &str,
        data: impl Read,
        meta: PutMeta,
    ) -> Result<ObjectInfo> {
        let path = self.rel_path(rel)?;
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        object::validate_meta(bucket, key, &meta)?;
        self.object_path(bucket, key)?;
        self.require_bucket(bucket)?;
        self.upload(&path, bucket, key, data, meta, false)
    }

    /// Writes the job commit record `<prefix>/<rel>` naming `puts`, in one PUT: **the commit
    /// point** of a job's outputs. Each object must have been staged, each bucket must exist,
    /// and a key may be named once. `Ok` means the record is there (a PUT whose answer was
    /// lost but which landed counts); an error means it is not, or that S3 could not say:
    /// [`S3Store::get_raw`] tells.
    pub fn write_commit_record(&self, rel: &str, puts: &[StagedPut]) -> Result<()> {
        let path = self.rel_path(rel)?;
        let mut keys = BTreeSet::new();
        for put in puts {
            validate_bucket(&put.bucket)?;
            validate_key(&put.bucket, &put.key)?;
            self.object_path(&put.bucket, &put.key)?;
            self.rel_path(&put.staged)?;
            if !keys.insert((put.bucket.as_str(), put.key.as_str())) {
                return Err(Error::InvalidKey {
                    bucket: put.bucket.clone(),
                    key: put.key.clone(),
                    reason: "named twice in one commit record",
                });
            }
        }
        let buckets: BTreeSet<&str> = keys.iter().map(|(bucket, _)| *bucket).collect();
        let record = JobRecord {
            format: RECORD_FORMAT,
            puts: puts.to_vec(),
        };
        let json = serde_json::to_vec(&record).expect("a commit record always serialises");
        self.block_on(async {
            for bucket in buckets {
                self.require_bucket_async(bucket).await?;
            }
            if let Err(e) = self.s3.put(&path, PutPayload::from(json)).await {
                // A PUT that failed on the way back may have landed.
                return match self.exists(&path).await {
                    Ok(true) => Ok(()),
                    Ok(false) | Err(_) => Err(self.backend("put commit record", &path, e)),
                };
            }
            Ok(())
        })
    }

    /// Applies the job commit record `<prefix>/<rel>`: copies each staged object to its key
    /// (a server-side copy, metadata included), skipping one that no longer exists (its copy
    /// was done before the cleanup began). `false` when there is no record. Idempotent: it may
    /// run again, or in several processes at once; it deletes nothing. Holds the lock a batch
    /// holds while it lands, so that this process's single puts and deletes wait for it.
    pub fn apply_commit_record(&self, rel: &str) -> Result<bool> {
        let path = self.rel_path(rel)?;
        self.block_on(async {
            let Some(bytes) = self.get_raw_async(&path).await? else {
                return Ok(false);
            };
            let corrupt = |reason: String| Error::Corrupt {
                path: self.url(&path).into(),
                reason,
            };
            let record: JobRecord =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
            if record.format != RECORD_FORMAT {
                return Err(corrupt(format!("commit record format {}", record.format)));
            }
            // The names become S3 keys: a damaged record must not reach outside the store,
            // nor name a key twice (the copies run in no particular order).
            let mut copies = Vec::with_capacity(record.puts.len());
            let mut keys = BTreeSet::new();
            for put in &record.puts {
                validate_bucket(&put.bucket).map_err(|e| corrupt(e.to_string()))?;
                validate_key(&put.bucket, &put.key).map_err(|e| corrupt(e.to_string()))?;
                let dest = self
                    .object_path(&put.bucket, &put.key)
                    .map_err(|e| corrupt(e.to_string()))?;
                let source = self
                    .rel_path(&put.staged)
                    .map_err(|e| corrupt(e.to_string()))?;
                if !keys.insert((put.bucket.as_str(), put.key.as_str())) {
                    return Err(corrupt(format!(
                        "object `{}` in bucket `{}` named twice",
                        put.key, put.bucket
                    )));
                }
                copies.push((source, dest));
            }
            let _landing = self.landing.write().await;
            stream::iter(copies)
                .map(|(source, dest)| async move {
                    match self.s3.copy(&source, &dest).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(self.backend("copy into place", &dest, e)),
                    }
                })
                .buffer_unordered(COPIES_IN_FLIGHT)
                .try_collect::<()>()
                .await?;
            Ok(true)
        })
    }

    /// Where object `key` of `bucket` lives: the S3 bucket and the full S3 key (for asking
    /// the storage service which server holds it). The object need not exist.
    pub fn object_location(&self, bucket: &str, key: &str) -> Result<(String, String)> {
        validate_bucket(bucket)?;
        validate_key(bucket, key)?;
        let path = self.object_path(bucket, key)?;
        Ok((self.bucket.clone(), path.as_ref().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_paths_are_relative_plain_and_outside_the_stores_own_names() {
        for good in [
            "jobs/j1/record",
            "x",
            "jobs/a b/ë~%",
            "bucketsx/y",
            "jobs/objects",
        ] {
            assert_eq!(check_rel(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("/jobs/x", "start with `/`"),
            ("jobs//x", "empty segment"),
            ("jobs/x/", "empty segment"),
            ("jobs/../objects/b", "`..`"),
            ("./x", "`.`"),
            ("jobs/a\nb", "control"),
            ("objects/bkt/k", "reserved"),
            ("writers/w/commits/1", "reserved"),
            ("commits", "reserved"),
        ] {
            let err = check_rel(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_staged_put_round_trips_through_json_and_refuses_unknown_fields() {
        let put = StagedPut {
            bucket: "bkt".into(),
            key: "out/a".into(),
            staged: "jobs/j/0".into(),
        };
        let json = serde_json::to_string(&put).unwrap();
        assert_eq!(
            json,
            r#"{"bucket":"bkt","key":"out/a","staged":"jobs/j/0"}"#
        );
        assert_eq!(serde_json::from_str::<StagedPut>(&json).unwrap(), put);
        assert!(
            serde_json::from_str::<StagedPut>(r#"{"bucket":"b","key":"k","staged":"s","extra":1}"#)
                .is_err()
        );
    }
}
