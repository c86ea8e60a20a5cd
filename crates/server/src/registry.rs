//! The server's own records (content-type handlers, deployed endpoints) as small JSON objects
//! in the system bucket ([`SYSTEM_BUCKET`]): kept by the store like any object, so they
//! survive a restart, land atomically and follow the store to whichever backend it uses.

use std::io::Read;

use serde::Serialize;
use serde::de::DeserializeOwned;
use zvm_store::PutMeta;

use crate::Shared;
use crate::error::ApiError;
pub use crate::tenants::SYSTEM_BUCKET;

/// Largest record read back: records are a few hundred bytes; a bigger object under a
/// record's key was not written by this server.
pub const MAX_RECORD: u64 = 64 << 10;

/// Creates the system bucket if it is not there yet.
pub fn ensure_bucket(s: &Shared) -> Result<(), ApiError> {
    match s.store.create_bucket(SYSTEM_BUCKET) {
        Ok(_) | Err(zvm_store::Error::BucketAlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `value` as the record `key`.
pub fn put<T: Serialize>(s: &Shared, key: &str, value: &T) -> Result<(), ApiError> {
    ensure_bucket(s)?;
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| ApiError::Internal(format!("record `{key}`: {e}")))?;
    s.store.put(
        SYSTEM_BUCKET,
        key,
        bytes.as_slice(),
        PutMeta {
            content_type: Some("application/json".into()),
            ..PutMeta::default()
        },
    )?;
    Ok(())
}

/// The record `key`, or None if there is none.
pub fn get<T: DeserializeOwned>(s: &Shared, key: &str) -> Result<Option<T>, ApiError> {
    let mut got = match s.store.get(SYSTEM_BUCKET, key, None) {
        Ok(got) => got,
        Err(zvm_store::Error::NoSuchKey { .. } | zvm_store::Error::NoSuchBucket { .. }) => {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    (&mut got.body)
        .take(MAX_RECORD)
        .read_to_end(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("reading record `{key}`: {e}")))?;
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::Internal(format!("record `{SYSTEM_BUCKET}/{key}` is damaged: {e}"))
    })?;
    Ok(Some(value))
}

/// Every record whose key starts with `prefix` and ends with `suffix`, in key order.
pub fn list<T: DeserializeOwned>(
    s: &Shared,
    prefix: &str,
    suffix: &str,
) -> Result<Vec<(String, T)>, ApiError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, truncated) = match s.store.list(SYSTEM_BUCKET, prefix, after.as_deref(), 1000) {
            Ok(p) => p,
            Err(zvm_store::Error::NoSuchBucket { .. }) => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for info in page.iter().filter(|i| i.key.ends_with(suffix)) {
            if let Some(v) = get(s, &info.key)? {
                out.push((info.key.clone(), v));
            }
        }
        after = page.last().map(|i| i.key.clone());
        if !truncated || after.is_none() {
            return Ok(out);
        }
    }
}
